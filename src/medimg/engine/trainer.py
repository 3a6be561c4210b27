"""The one training loop every task calls.

A task supplies a model, a map-style dataset, a ``step(model, batch) -> loss`` function and
optionally ``validate(model) -> {name: value}``; :class:`Trainer` does the rest (optimizer,
schedule, AMP on CUDA, clipping, validation and best model, early stopping, checkpoints and exact
resume, ``metrics.jsonl``, DDP under torchrun). See ``medimg.engine`` for an example.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate

from medimg.engine import distributed as dd
from medimg.engine.checkpoint import find_checkpoint, save_checkpoint
from medimg.engine.config import TrainConfig, to_dict
from medimg.engine.data import SeededSamples, StepBatchSampler, steps_per_epoch
from medimg.engine.optim import build_optimizer, build_scheduler
from medimg.engine.runlog import MetricsLog, progress_bar
from medimg.engine.runtime import derive_seed, resolve_device, seed_globals, to_device
from medimg.engine.state import RunState, prepare_run, training_state
from medimg.engine.steps import (
    StepContext,
    check_finite,
    nonfinite_error,
    split_output,
    takes_context,
)
from medimg.errors import InputError

__all__ = ["TrainResult", "Trainer"]

_STEP_STREAM = 3


@dataclass(frozen=True)
class TrainResult:
    """What :meth:`Trainer.fit` produced. ``best_*`` are ``None`` without ``validate``."""

    run_dir: Path
    last_step: int
    best_metric: float | None
    best_step: int | None
    stopped_early: bool
    last_checkpoint: Path
    best_checkpoint: Path | None
    metrics_path: Path
    config_path: Path


StepFn = Callable[..., Any]
ValidateFn = Callable[[nn.Module], Mapping[str, float]]


class Trainer:
    """Train ``model`` on ``train_data`` with ``step``, writing ``run_dir``.

    Parameters
    ----------
    model
        Built (and seeded, :func:`seed_everything`) by the task; moved to the device here.
    train_data
        Map-style dataset; a sample's augmentation is seeded from ``(seed, step, index)``.
    step
        ``step(model, batch)`` or ``step(model, batch, ctx: StepContext)`` returning a scalar
        loss tensor, or a dict with ``"loss"`` and other scalars to log. ``batch`` is already on
        the device; ``model`` may be DDP-wrapped, so call it (use :func:`unwrap_model` for
        attributes). It runs under autocast when AMP is on.
    config
        The :class:`TrainConfig`.
    run_dir
        ``runs/<task>/<name>/``; gets ``config.yaml``, ``metrics.jsonl``, ``last/``, ``best/``.
    validate
        ``validate(model) -> {name: value}``, run on rank 0 only, with the unwrapped model in
        eval mode under ``torch.no_grad``; must contain ``config.val_metric``.
    run_config
        The task's whole config dataclass (which nests ``config``), written to ``config.yaml``
        and compared on resume. Defaults to ``config``.
    collate_fn
        Batches samples; defaults to torch's ``default_collate``.
    """

    def __init__(
        self,
        model: nn.Module,
        train_data: Dataset,
        step: StepFn,
        config: TrainConfig,
        run_dir: str | Path,
        *,
        validate: ValidateFn | None = None,
        run_config: Any = None,
        collate_fn: Callable[[list[Any]], Any] | None = None,
    ) -> None:
        if not isinstance(config, TrainConfig):
            raise InputError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.model, self.data, self.step_fn, self.cfg = model, train_data, step, config
        self.validate, self.collate_fn = validate, collate_fn or default_collate
        self.run_dir = Path(run_dir)
        self.run_config = to_dict(config if run_config is None else run_config)
        self._step_takes_ctx = takes_context(step)

    def fit(
        self,
        resume: bool | Literal["auto"] = False,
        *,
        allow_config_change: bool = False,
        overwrite: bool = False,
    ) -> TrainResult:
        """Train to ``max_steps`` (or an early stop) and return where everything is.

        ``resume=True`` continues from ``run_dir/last`` and raises :class:`CheckpointError` when
        there is none; ``resume="auto"`` continues if there is one and starts fresh otherwise
        (for preemptible jobs that are always relaunched the same way). A config that differs
        from the resumed run's (apart from progress, log_every, checkpoint_every, num_workers,
        device, which do not change the numbers) raises :class:`InputError` unless
        ``allow_config_change``. Starting fresh in a folder that holds anything of an earlier
        run (``config.yaml``, ``metrics.jsonl``, ``last/``, ``best/``) needs ``overwrite=True``;
        a refusal changes nothing there (see :func:`~medimg.engine.state.check_run_dir`).
        """
        device = resolve_device(self.cfg.device)
        created = dd.init_distributed(device.type)
        info = dd.dist_info()
        if device.type == "cuda" and info.distributed:
            device = torch.device("cuda", info.local_rank)
        try:
            return self._fit(device, info, resume, allow_config_change, overwrite)
        finally:
            if created:
                torch.distributed.destroy_process_group()

    def _fit(
        self, device: torch.device, info: dd.DistInfo, resume: Any, allow_change: bool, over: bool
    ) -> TrainResult:
        cfg, model = self.cfg, self.model.to(device)
        n = len(self.data)  # type: ignore[arg-type]
        per_epoch = steps_per_epoch(n, cfg.batch_size)
        self._device, self._info = device, info
        self._opt = build_optimizer(model.parameters(), cfg)
        self._sched = build_scheduler(self._opt, cfg)
        self._amp = cfg.amp and device.type == "cuda"
        self._scaler = torch.amp.GradScaler("cuda", enabled=self._amp)
        self._log = log = MetricsLog(self.run_dir / "metrics.jsonl", enabled=info.is_main)
        rs = prepare_run(
            self.run_dir,
            model,
            self._opt,
            self._sched,
            self._scaler,
            self.run_config,
            log,
            resume=resume,
            allow_change=allow_change,
            overwrite=over,
            is_main=info.is_main,
        )
        net: nn.Module = model
        if info.distributed:
            ids = [device.index] if device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        sampler = StepBatchSampler(
            n, cfg.batch_size, cfg.seed, rs.step, cfg.max_steps, info.rank, info.world_size
        )
        loader = DataLoader(
            SeededSamples(self.data, cfg.seed),
            batch_sampler=sampler,
            num_workers=cfg.num_workers,
            collate_fn=self.collate_fn,
            pin_memory=device.type == "cuda",
        )
        bar = progress_bar(cfg.max_steps, rs.step, cfg.progress and info.is_main)
        window: dict[str, list[float]] = {}
        net.train()
        try:
            for batch in () if rs.stopped_early else loader:
                epoch = rs.step // per_epoch
                values, lr = self._train_step(net, model, batch, rs.step, epoch)
                rs.step += 1
                for key, value in values.items():
                    window.setdefault(key, []).append(value)
                if rs.step % cfg.log_every == 0 or rs.step == cfg.max_steps:
                    means = {k: sum(v) / len(v) for k, v in window.items()}
                    log.write("train", rs.step, epoch=epoch, lr=lr, **means)
                    bar.set_postfix(loss=f"{means['loss']:.4g}", refresh=False)
                    window.clear()
                bar.update(1)
                at_end = rs.step == cfg.max_steps
                if self.validate is not None and (rs.step % cfg.val_every == 0 or at_end):
                    self._validate(model, rs)
                if rs.stopped_early or rs.step % cfg.checkpoint_every == 0 or at_end:
                    self._save_last(model, rs)
                if rs.stopped_early:
                    log.write("event", rs.step, event="early_stop", best_step=rs.best_step)
                    break
        finally:
            bar.close()
        best = find_checkpoint(self.run_dir / "best") if self.validate is not None else None
        return TrainResult(
            run_dir=self.run_dir,
            last_step=rs.step,
            best_metric=rs.best_metric,
            best_step=rs.best_step,
            stopped_early=rs.stopped_early,
            last_checkpoint=self.run_dir / "last",
            best_checkpoint=best,
            metrics_path=log.path,
            config_path=self.run_dir / "config.yaml",
        )

    def _train_step(
        self, net: nn.Module, model: nn.Module, batch: Any, step: int, epoch: int
    ) -> tuple[dict[str, float], float]:
        """One optimizer update; returns the rank-averaged loss/extras and the lr it used."""
        info, device = self._info, self._device
        seed_globals(derive_seed(self.cfg.seed, _STEP_STREAM, step, info.rank))
        batch = to_device(batch, device, non_blocking=device.type == "cuda")
        with torch.autocast(device.type, enabled=self._amp):
            if self._step_takes_ctx:
                gen = torch.Generator().manual_seed(derive_seed(self.cfg.seed, _STEP_STREAM, step))
                ctx = StepContext(step, epoch, gen, device, info.rank, info.world_size)
                out = self.step_fn(net, batch, ctx)
            else:
                out = self.step_fn(net, batch)
        loss, extras = split_output(out, device)
        stats = torch.stack([loss.detach().float(), *extras.values()])
        values = dict(zip(["loss", *extras], dd.all_reduce_mean(stats).tolist()))
        lr = self._opt.param_groups[0]["lr"]
        if not math.isfinite(values["loss"]):  # every rank sees the same mean, so all stop
            self._log.write("event", step + 1, event="nonfinite_loss", loss=values["loss"])
            raise nonfinite_error(f"loss is {values['loss']}", step + 1, lr, self.run_dir)
        self._opt.zero_grad(set_to_none=True)
        self._scaler.scale(loss).backward()
        if self.cfg.grad_clip is not None:
            self._scaler.unscale_(self._opt)
            norm = nn.utils.clip_grad_norm_(model.parameters(), self.cfg.grad_clip)
            values["grad_norm"] = float(norm)  # identical on all ranks after DDP's all-reduce
        self._scaler.step(self._opt)
        self._scaler.update()
        self._sched.step()
        return values, lr

    def _validate(self, model: nn.Module, rs: RunState) -> None:
        """Run ``validate`` on rank 0, share its metrics, update best/early-stop on all ranks."""
        info, name = self._info, self.cfg.val_metric
        payload: dict[str, Any] = {}
        if info.is_main:  # other ranks wait in the broadcast
            model.eval()
            try:
                with torch.no_grad():
                    metrics = self.validate(model)  # type: ignore[misc]
                payload["metrics"] = {k: float(v) for k, v in metrics.items()}
            except Exception as exc:
                if not info.distributed:
                    raise
                payload["error"] = f"{type(exc).__name__}: {exc}"
            finally:
                model.train()
        payload = dd.broadcast_object(payload)
        if "error" in payload:
            raise RuntimeError(f"validate() failed on rank 0 at step {rs.step}: {payload['error']}")
        metrics = payload["metrics"]
        if name not in metrics:
            raise InputError(
                f"validate() returned no {name!r} (it returned {', '.join(metrics) or 'nothing'}); "
                "set val_metric to one of them"
            )
        value, best = metrics[name], rs.best_metric
        better = math.isfinite(value) and (
            best is None or (value < best if self.cfg.val_mode == "min" else value > best)
        )
        if better:
            rs.best_metric, rs.best_step, rs.bad_rounds = value, rs.step, 0
            check_finite(model, rs.step, self.cfg.lr, self.run_dir)
            if info.is_main:
                meta = {"step": str(rs.step), "metric": name, "value": repr(value)}
                save_checkpoint(self.run_dir / "best", model, None, metadata=meta)
        else:
            rs.bad_rounds += 1
            patience = self.cfg.early_stop_patience
            rs.stopped_early = patience is not None and rs.bad_rounds >= patience
        self._log.write("val", rs.step, **metrics, best=better, best_metric=rs.best_metric)

    def _save_last(self, model: nn.Module, rs: RunState) -> None:
        check_finite(model, rs.step, self.cfg.lr, self.run_dir)
        if self._info.is_main:
            state = training_state(self._opt, self._sched, self._scaler, rs, self.run_config)
            save_checkpoint(self.run_dir / "last", model, state, metadata={"step": str(rs.step)})
