"""The Trainer in one process: learning, run folder, best/early stop, errors, resume rules."""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from engine_toy import ToyData, make_model, make_validate, step
from torch import nn

from medimg.engine import (
    TrainConfig,
    Trainer,
    TrainResult,
    from_yaml,
    load_training_state,
    load_weights,
    read_metrics,
)
from medimg.engine.runlog import ProgressLines, progress_bar
from medimg.errors import CheckpointError, InputError, OutputExistsError

VAL = ToyData(n=32, seed=7)
FAST = {"progress": False, "log_every": 1, "val_metric": "mse", "lr": 0.01}


def _cfg(**kwargs: Any) -> TrainConfig:
    return TrainConfig(**{**FAST, **kwargs})


def _fit(run_dir: Path, cfg: TrainConfig, model: nn.Module | None = None, **kw: Any) -> TrainResult:
    fit_kw = {k: kw.pop(k) for k in ("resume", "allow_config_change", "overwrite") if k in kw}
    kw.setdefault("validate", make_validate(VAL))
    data = kw.pop("data", None) or ToyData()
    trainer = Trainer(model or make_model(cfg.seed), data, kw.pop("step", step), cfg, run_dir, **kw)
    return trainer.fit(**fit_kw)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_weights(make_model(), path).state_dict()


def test_learns_much_better_than_predicting_the_mean(tmp_path: Path) -> None:
    train, val = ToyData(n=256), ToyData(n=128, seed=7)
    cfg = _cfg(max_steps=300, batch_size=32, lr=0.02, lr_schedule="cosine", warmup_steps=20)
    cfg.val_every = cfg.checkpoint_every = cfg.log_every = 100
    model = make_model(hidden=32)
    result = _fit(tmp_path, cfg, model, data=train, validate=make_validate(val))
    baseline = float(((val.y - train.y.mean()) ** 2).mean())
    model.eval()
    with torch.no_grad():
        mse = float(((model(val.x) - val.y) ** 2).mean())
    assert mse < 0.2 * baseline, (mse, baseline)
    assert result.best_metric is not None and result.best_metric <= mse + 1e-6


def test_run_folder_holds_config_metrics_and_checkpoints(tmp_path: Path) -> None:
    cfg = _cfg(max_steps=12, val_every=4, checkpoint_every=5)
    result = _fit(tmp_path / "run", cfg)
    assert from_yaml(TrainConfig, result.config_path) == cfg
    records = read_metrics(result.metrics_path)
    train = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val"]
    assert [r["step"] for r in train] == list(range(1, 13))
    assert {"loss", "lr", "epoch", "pred_mean"} <= train[0].keys()
    assert [r["step"] for r in val] == [4, 8, 12]
    best = min(val, key=lambda r: r["mse"])
    assert (result.best_step, result.best_metric) == (best["step"], best["mse"])
    assert load_training_state(result.last_checkpoint)["step"] == 12 == result.last_step
    assert result.best_checkpoint == tmp_path / "run" / "best"


@pytest.mark.parametrize(("mode", "best_step"), [("min", 4), ("max", 8)])
def test_best_checkpoint_follows_val_mode(tmp_path: Path, mode: str, best_step: int) -> None:
    scores, snapshots = iter([3.0, 1.0, 2.0, 5.0]), {}

    def validate(model: nn.Module) -> dict[str, float]:
        snapshots[len(snapshots) + 1] = {k: v.clone() for k, v in model.state_dict().items()}
        return {"score": next(scores)}

    cfg = _cfg(max_steps=8, val_every=2, val_metric="score", val_mode=mode)
    result = _fit(tmp_path, cfg, validate=validate)
    assert result.best_step == best_step
    saved, expected = _weights(result.best_checkpoint), snapshots[best_step // 2]
    assert all(torch.equal(saved[k], expected[k]) for k in expected)


def test_early_stopping_after_patience_rounds(tmp_path: Path) -> None:
    cfg = _cfg(max_steps=40, val_every=3, val_metric="plateau", early_stop_patience=2)
    result = _fit(tmp_path, cfg)
    assert (result.stopped_early, result.last_step, result.best_step) == (True, 9, 3)
    assert load_training_state(result.last_checkpoint)["stopped_early"] is True
    assert read_metrics(result.metrics_path)[-1]["event"] == "early_stop"
    again = _fit(tmp_path, cfg, resume=True)  # a finished run stays finished
    assert again.last_step == 9 and again.stopped_early


def test_nan_loss_stops_with_one_line_error_and_keeps_good_checkpoint(tmp_path: Path) -> None:
    def exploding(model: nn.Module, batch: Any, ctx: Any) -> Any:
        loss = step(model, batch, ctx)["loss"]
        return loss * float("nan") if ctx.step == 6 else loss

    with pytest.raises(InputError) as exc:
        _fit(tmp_path, _cfg(max_steps=20, checkpoint_every=5), step=exploding)
    msg = str(exc.value)
    assert "loss is nan at step 7" in msg and "lower lr" in msg and "grad_clip" in msg
    assert "\n" not in msg and str(tmp_path / "last") in msg
    assert load_training_state(tmp_path / "last")["step"] == 5
    assert all(torch.isfinite(w).all() for w in _weights(tmp_path / "last").values())
    assert read_metrics(tmp_path / "metrics.jsonl")[-1]["event"] == "nonfinite_loss"


def test_grad_clip_bounds_the_update(tmp_path: Path) -> None:
    def update_norm(clip: float | None, run: str) -> float:
        model = make_model()
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        cfg = _cfg(max_steps=1, optimizer="sgd", momentum=0.0, lr=1.0, grad_clip=clip)
        _fit(tmp_path / run, cfg, model, validate=None)
        after = torch.cat([p.detach().flatten() for p in model.parameters()])
        return float((after - before).norm())

    assert update_norm(None, "free") > 0.05
    assert update_norm(1e-3, "clipped") == pytest.approx(1e-3, rel=1e-4)
    assert "grad_norm" in read_metrics(tmp_path / "clipped" / "metrics.jsonl")[1]


def test_same_seed_same_weights_with_workers_and_augmentation(tmp_path: Path) -> None:
    def final(run: str, seed: int, workers: int) -> dict[str, torch.Tensor]:
        cfg = _cfg(max_steps=8, seed=seed, num_workers=workers, val_every=100)
        model = make_model(seed, dropout=0.2)
        _fit(tmp_path / run, cfg, model, data=ToyData(aug=0.2), validate=None)
        return model.state_dict()

    a, b, c = final("a", 0, 0), final("b", 0, 2), final("c", 1, 0)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_resume_needs_a_checkpoint_unless_auto(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="nothing to resume"):
        _fit(tmp_path / "a", _cfg(max_steps=3), resume=True)
    result = _fit(tmp_path / "a", _cfg(max_steps=3), resume="auto")
    assert result.last_step == 3


def test_existing_run_needs_resume_or_overwrite(tmp_path: Path) -> None:
    _fit(tmp_path, _cfg(max_steps=3))
    with pytest.raises(OutputExistsError, match="already holds a checkpoint"):
        _fit(tmp_path, _cfg(max_steps=3))
    _fit(tmp_path, _cfg(max_steps=2), overwrite=True)
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_earlier_run_without_last_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    _fit(tmp_path, _cfg(max_steps=3))
    shutil.rmtree(tmp_path / "last")  # best/, config.yaml and metrics.jsonl remain
    before = _snapshot(tmp_path)
    for resume in (False, "auto"):
        with pytest.raises(OutputExistsError, match=r"earlier run \(config\.yaml.*best/"):
            _fit(tmp_path, _cfg(max_steps=5, lr=0.1), resume=resume)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        _fit(tmp_path, _cfg(max_steps=5), resume=True)
    assert _snapshot(tmp_path) == before
    assert _fit(tmp_path, _cfg(max_steps=2), overwrite=True).last_step == 2


def test_auto_restarts_a_run_killed_before_its_first_checkpoint_only_if_unchanged(
    tmp_path: Path,
) -> None:
    cfg = _cfg(max_steps=4, checkpoint_every=4)
    _fit(tmp_path, cfg)
    for name in ("last", "best"):  # as if killed during the first steps
        shutil.rmtree(tmp_path / name)
    with pytest.raises(OutputExistsError, match="no checkpoint in last/"):
        _fit(tmp_path, _cfg(max_steps=4, checkpoint_every=4, lr=0.5), resume="auto")
    assert _fit(tmp_path, cfg, resume="auto").last_step == 4  # same config: nothing is lost


def test_interrupt_between_checkpoint_renames_resumes_from_the_complete_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _cfg(max_steps=6, checkpoint_every=3, val_every=3)
    straight = _fit(tmp_path / "straight", cfg)
    real, calls = os.replace, []

    def interrupted(src: Any, dst: Any) -> None:
        calls.append(Path(dst).name)
        if calls[-2:] == ["last.old", "last"] and len(calls) > 3:  # step 6: old aside, new not in
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr("medimg.engine.checkpoint.os.replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "run", cfg)
    monkeypatch.undo()
    assert not (tmp_path / "run" / "last").exists()
    assert load_training_state(tmp_path / "run" / "last.old")["step"] == 3
    done = _fit(tmp_path / "run", cfg, resume=True)
    assert done.last_step == 6 and not (tmp_path / "run" / "last.old").exists()
    a, b = _weights(straight.last_checkpoint), _weights(done.last_checkpoint)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_changed_config_on_resume_is_reported(tmp_path: Path) -> None:
    _fit(tmp_path, _cfg(max_steps=6, checkpoint_every=3))
    with pytest.raises(InputError, match=r"lr: 0\.01 -> 0\.1.*allow the change"):
        _fit(tmp_path, _cfg(max_steps=6, lr=0.1), resume=True)
    done = _fit(tmp_path, _cfg(max_steps=6, log_every=2), resume=True)  # harmless change
    assert done.last_step == 6
    with pytest.warns(UserWarning, match="max_steps: 6 -> 9"):
        longer = _fit(tmp_path, _cfg(max_steps=9), resume=True, allow_config_change=True)
    assert longer.last_step == 9
    events = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "event"]
    assert any(e["event"] == "config_changed" for e in events)
    assert from_yaml(TrainConfig, tmp_path / "config.yaml").max_steps == 9


@pytest.mark.parametrize(
    ("out", "message"),
    [({"mse": torch.tensor(1.0)}, "without 'loss'"), (torch.ones(3), "scalar loss")],
)
def test_bad_step_output(tmp_path: Path, out: Any, message: str) -> None:
    with pytest.raises(InputError, match=message):
        _fit(tmp_path, _cfg(max_steps=2), step=lambda model, batch: out)


def test_missing_val_metric_lists_what_validate_returned(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"returned no 'dice' .*mse, plateau"):
        _fit(tmp_path, _cfg(max_steps=2, val_every=1, val_metric="dice"))


def test_dataset_smaller_than_batch(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="4 samples, fewer than batch_size 8"):
        _fit(tmp_path, _cfg(max_steps=2), data=ToyData(n=4))


def test_step_without_context_and_plain_tensor_loss(tmp_path: Path) -> None:
    def plain(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return nn.functional.l1_loss(model(batch["x"]), batch["y"])

    result = _fit(tmp_path, _cfg(max_steps=3), step=plain, validate=None)
    assert result.best_metric is None and result.best_checkpoint is None
    losses = [r["loss"] for r in read_metrics(result.metrics_path) if r["kind"] == "train"]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)


@dataclasses.dataclass
class DenoiseConfig:
    """A task config nesting TrainConfig, as tasks will define them."""

    noise_hu: float = 20.0
    train: TrainConfig = dataclasses.field(default_factory=lambda: _cfg(max_steps=2))


def test_task_config_is_written_and_compared_on_resume(tmp_path: Path) -> None:
    task = DenoiseConfig()
    _fit(tmp_path, task.train, run_config=task)
    assert from_yaml(DenoiseConfig, tmp_path / "config.yaml") == task
    changed = dataclasses.replace(task, noise_hu=30.0)
    with pytest.raises(InputError, match=r"noise_hu: 20\.0 -> 30\.0"):
        _fit(tmp_path, task.train, run_config=changed, resume=True)


def test_progress_bar_on_a_terminal_and_log_lines_elsewhere() -> None:
    assert progress_bar(10, 0, enabled=False).disable
    bar = progress_bar(10, 0, enabled=True)
    if sys.stderr.isatty():
        assert not isinstance(bar, ProgressLines) and not bar.disable
    else:
        assert isinstance(bar, ProgressLines)
