"""The one training engine every medimg task calls.

A task builds its model and datasets, writes a ``step`` (batch -> loss) and a ``validate``
(model -> metrics), and hands them to :class:`Trainer` with a :class:`TrainConfig`::

    import torch.nn.functional as F
    from medimg.engine import TrainConfig, Trainer, load_weights, seed_everything

    cfg = TrainConfig(max_steps=2000, batch_size=8, lr=3e-4, lr_schedule="cosine",
                      val_every=200, val_metric="psnr", val_mode="max", early_stop_patience=5)
    seed_everything(cfg.seed)
    model = build_model()

    def step(model, batch):  # batch is already on the device
        return F.l1_loss(model(batch["input"]), batch["target"])

    trainer = Trainer(model, train_ds, step, cfg, "runs/ct/denoise",
                      validate=lambda m: {"psnr": evaluate(m, val_ds)})
    result = trainer.fit(resume="auto")  # result.best_checkpoint -> load_weights(model, ...)

The same script runs on N processes with ``torchrun --nproc-per-node N``; cohort inference
splits its case list with :func:`shard` and collects with :func:`gather_objects`.
"""

from medimg.engine.checkpoint import (
    export_run_weights,
    find_checkpoint,
    load_training_state,
    load_weights,
    read_metadata,
    save_checkpoint,
    unwrap_model,
)
from medimg.engine.config import (
    TrainConfig,
    config_diff,
    from_yaml,
    to_dict,
    to_yaml,
    validation_interval,
)
from medimg.engine.data import SeededSamples, StepBatchSampler, batch_indices, steps_per_epoch
from medimg.engine.distributed import (
    DistInfo,
    all_reduce_mean,
    barrier,
    broadcast_object,
    dist_info,
    gather_objects,
    init_distributed,
    is_main_process,
    shard,
)
from medimg.engine.inference import fast_precision, has_native_bf16, predict_in_batches
from medimg.engine.optim import build_optimizer, build_scheduler, lr_factor
from medimg.engine.runlog import MetricsLog, read_metrics
from medimg.engine.runtime import (
    derive_seed,
    get_rng_state,
    resolve_device,
    seed_everything,
    seed_globals,
    set_rng_state,
    to_device,
)
from medimg.engine.state import check_run_dir
from medimg.engine.steps import StepContext
from medimg.engine.trainer import Trainer, TrainResult

__all__ = [
    "DistInfo",
    "MetricsLog",
    "SeededSamples",
    "StepBatchSampler",
    "StepContext",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "all_reduce_mean",
    "barrier",
    "batch_indices",
    "broadcast_object",
    "build_optimizer",
    "build_scheduler",
    "check_run_dir",
    "config_diff",
    "derive_seed",
    "dist_info",
    "export_run_weights",
    "fast_precision",
    "find_checkpoint",
    "from_yaml",
    "gather_objects",
    "get_rng_state",
    "has_native_bf16",
    "init_distributed",
    "is_main_process",
    "load_training_state",
    "load_weights",
    "lr_factor",
    "predict_in_batches",
    "read_metadata",
    "read_metrics",
    "resolve_device",
    "save_checkpoint",
    "seed_everything",
    "seed_globals",
    "set_rng_state",
    "shard",
    "steps_per_epoch",
    "to_device",
    "to_dict",
    "to_yaml",
    "unwrap_model",
    "validation_interval",
]
