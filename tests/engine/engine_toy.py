"""A tiny regression task for the engine tests, importable and runnable as a script.

As a script it trains one run (optionally under torchrun, optionally pausing at a step so a test
can SIGKILL it) and prints the result as JSON on rank 0::

    python engine_toy.py RUN_DIR --config '{"max_steps": 20}' [--resume] [--pause-at 13 MARKER]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from medimg.engine import StepContext, TrainConfig, Trainer, is_main_process, seed_everything

N_FEATURES = 4


def target_fn(x: torch.Tensor) -> torch.Tensor:
    """A smooth nonlinear target an MLP can learn and a constant cannot."""
    return (torch.sin(2.0 * x[:, :1]) + 0.5 * x[:, 1:2] * x[:, 2:3] - 0.3 * x[:, 3:4]).float()


class ToyData(Dataset):
    """``n`` fixed points; with ``aug`` > 0 each read adds noise from the *global* torch RNG.

    Drawing from the global RNG on purpose: the engine must seed it per (seed, step, index)
    for resume and DDP to be exact.
    """

    def __init__(self, n: int = 48, aug: float = 0.0, seed: int = 123) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, N_FEATURES, generator=gen)
        self.y = target_fn(self.x)
        self.aug = aug

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x = self.x[i]
        if self.aug:
            x = x + self.aug * torch.randn(N_FEATURES)
        return {"x": x, "y": self.y[i]}


def make_model(seed: int = 0, dropout: float = 0.0, hidden: int = 16) -> nn.Module:
    seed_everything(seed)
    return nn.Sequential(
        nn.Linear(N_FEATURES, hidden),
        nn.Tanh(),
        nn.Dropout(dropout),
        nn.Linear(hidden, 1),
    )


def step(model: nn.Module, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, Any]:
    """MSE plus a tiny target jitter drawn from the step generator (exercises ctx seeding)."""
    jitter = 1e-3 * ctx.randn(*batch["y"].shape)
    pred = model(batch["x"])
    loss = nn.functional.mse_loss(pred, batch["y"] + jitter)
    return {"loss": loss, "pred_mean": pred.detach().mean()}


def make_validate(val: ToyData) -> Any:
    def validate(model: nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        mse = nn.functional.mse_loss(model(val.x.to(device)), val.y.to(device))
        return {"mse": float(mse), "plateau": 1.0}  # "plateau" never improves after round 1

    return validate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--config", default="{}", help="TrainConfig fields as JSON")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--aug", type=float, default=0.0)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--pause-at", nargs=2, metavar=("STEP", "MARKER"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = TrainConfig(**{"progress": False, **json.loads(args.config)})
    model = make_model(cfg.seed, args.dropout)

    def step_maybe_pausing(model: nn.Module, batch: Any, ctx: StepContext) -> Any:
        if args.pause_at and ctx.step == int(args.pause_at[0]):
            Path(args.pause_at[1]).write_text(str(ctx.step))
            time.sleep(600)  # the test SIGKILLs us here, mid-epoch, after a checkpoint
        return step(model, batch, ctx)

    trainer = Trainer(
        model,
        ToyData(aug=args.aug),
        step_maybe_pausing,
        cfg,
        args.run_dir,
        validate=make_validate(ToyData(n=32, seed=7)),
    )
    result = trainer.fit(resume=args.resume)
    if is_main_process():
        best = result.best_metric
        out = {"last_step": result.last_step, "best_step": result.best_step}
        out["stopped_early"] = result.stopped_early
        out["best_metric"] = None if best is None or not math.isfinite(best) else best
        print(json.dumps(out))


if __name__ == "__main__":
    main()
