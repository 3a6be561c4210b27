"""Starting or resuming a run: the run folder's state and the training-state dict.

Kept apart from the loop so the rules are in one place: what a resume restores, which config
changes are tolerated, and when an existing run folder may be reused.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from medimg.engine import distributed as dd
from medimg.engine.checkpoint import find_checkpoint, load_training_state, load_weights
from medimg.engine.config import config_diff
from medimg.engine.runlog import MetricsLog
from medimg.engine.runtime import get_rng_state, set_rng_state
from medimg.errors import CheckpointError, InputError, OutputExistsError
from medimg.io.output import OWNER_MARK, check_outputs, is_owned
from medimg.typing import PathType

__all__ = [
    "HARMLESS_KEYS",
    "RUN_FILES",
    "RunState",
    "check_run_dir",
    "prepare_run",
    "training_state",
]

STATE_FORMAT = 1
# settings that do not change the numbers, so they may differ on resume
HARMLESS_KEYS = frozenset({"progress", "log_every", "checkpoint_every", "num_workers", "device"})
#: what a run leaves in its folder: any of them means an earlier run is there
RUN_FILES = ("config.yaml", "metrics.jsonl", "last", "last.old", "last.tmp", "best", "best.old",
             "best.tmp")  # fmt: skip


@dataclass
class RunState:
    """Counters that a checkpoint carries besides weights and optimizer."""

    step: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    bad_rounds: int = 0  # validation rounds since the last improvement
    stopped_early: bool = False


def training_state(
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    rs: RunState,
    run_config: dict[str, Any],
) -> dict[str, Any]:
    """Everything besides the weights needed to continue exactly; ``weights_only``-loadable."""
    return {
        "format": STATE_FORMAT,
        "step": rs.step,
        "best_metric": rs.best_metric,
        "best_step": rs.best_step,
        "bad_rounds": rs.bad_rounds,
        "stopped_early": rs.stopped_early,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": get_rng_state(),
        "config": run_config,
    }


def prepare_run(
    run_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    run_config: dict[str, Any],
    log: MetricsLog,
    *,
    resume: bool | str,
    allow_change: bool,
    overwrite: bool,
    is_main: bool,
) -> RunState:
    """Start fresh (writing ``config.yaml``) or restore everything from ``run_dir/last``."""
    resuming = check_run_dir(run_dir, resume=resume, overwrite=overwrite, run_config=run_config)
    found = find_checkpoint(run_dir / "last")
    dd.barrier()  # every rank has looked before rank 0 changes anything
    if not resuming:
        if is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            for name in ("last", "last.old", "last.tmp", "best", "best.old", "best.tmp"):
                shutil.rmtree(run_dir / name, ignore_errors=True)
            log.path.unlink(missing_ok=True)
            _write_config(run_dir, run_config)
            log.write("event", 0, event="start")
        return RunState()

    assert found is not None  # check_run_dir resumes only a complete checkpoint
    state = load_training_state(found)
    load_weights(model, found)
    changes = [
        c
        for c in config_diff(state["config"], run_config)
        if c.split(":")[0].split(".")[-1] not in HARMLESS_KEYS
    ]
    if changes and not allow_change:
        raise InputError(
            f"the config differs from the run being resumed ({'; '.join(changes)}); resume with "
            "the saved config.yaml or allow the change explicitly",
            path=run_dir,
        )
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler.is_enabled() and state["scaler"]:
            scaler.load_state_dict(state["scaler"])
    except (ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"optimizer state does not fit this model ({exc})", found) from None
    set_rng_state(state["rng"])
    rs = RunState(
        state["step"], state["best_metric"], state["best_step"], state["bad_rounds"],
        state["stopped_early"],
    )  # fmt: skip
    if is_main:
        log.truncate_after(rs.step)  # steps after the checkpoint are redone and logged again
        if changes:
            warnings.warn(f"resuming with a changed config: {'; '.join(changes)}", stacklevel=3)
            log.write("event", rs.step, event="config_changed", changes=changes)
        _write_config(run_dir, run_config)
        log.write("event", rs.step, event="resume", checkpoint=str(found))
    return rs


def check_run_dir(
    run_dir: str | Path,
    *,
    resume: bool | str,
    overwrite: bool,
    run_config: dict[str, Any] | None = None,
    extra: tuple[str, ...] = (),
    inputs: Iterable[PathType] = (),
    whole_folder: bool = False,
    restart_unstarted: bool = False,
) -> bool:
    """Whether ``fit`` would resume ``run_dir``; raise (one line, touching nothing) when it
    would have to replace an earlier run it was not told to replace.

    The folder may not be, lie inside or hold one of ``inputs``. An earlier run is anything of
    :data:`RUN_FILES` (plus a task's ``extra`` names) in the folder; with ``whole_folder`` (the
    run folder is the task's model folder, whose other files it writes too) anything in it but
    :data:`~medimg.io.output.OWNER_MARK`. It is continued with ``resume`` (``True``: ``last/``
    must hold a complete checkpoint; ``"auto"``: continued when it does) and replaced only with
    ``overwrite``; a ``whole_folder`` only if medimg wrote it (owner mark or ``config.yaml``),
    since starting over writes onto whatever it holds. ``"auto"`` also restarts a run that died before
    its first checkpoint when its ``config.yaml`` equals ``run_config`` (nothing of it would be
    lost), or, with ``restart_unstarted`` (tasks that know their config only after preparing the
    data), any run of medimg's with no weights yet (no ``best/`` or ``last/``). Tasks call this
    before costly preparation so a refusal comes first.
    """
    if resume not in (True, False, "auto"):
        raise InputError(f"resume must be True, False or 'auto', got {resume!r}")
    run_dir = Path(run_dir)
    check_outputs([run_dir], inputs=inputs, overwrite=True)  # on/around an input, under a file
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError("is a file, not a run folder; choose a folder for the run", run_dir)
    found = find_checkpoint(run_dir / "last")
    if resume is True and found is None:
        raise CheckpointError(
            "nothing to resume: there is no checkpoint to resume in last/; start without resume "
            "(--resume), or pass overwrite (--overwrite) to start over",
            path=run_dir,
        )
    if resume and found is not None:
        return True
    earlier = _earlier_run(run_dir, extra, whole_folder)
    if not earlier:
        return False
    ours = not whole_folder or _written_by_medimg(run_dir)
    if overwrite or (resume == "auto" and restart_unstarted and ours and _unstarted(run_dir)):
        if not ours:
            raise InputError(
                "holds files medimg did not write; --overwrite only starts over an earlier run, "
                "choose a new or empty folder",
                run_dir,
            )
        return False
    if resume == "auto" and run_config is not None and _restartable(run_dir, earlier, run_config):
        return False
    what = ", ".join(n + "/" if (run_dir / n).is_dir() else n for n in earlier[:6])
    what += ", ..." if len(earlier) > 6 else ""
    if found is None:
        raise OutputExistsError(
            f"run folder holds an earlier run ({what}) with no checkpoint in last/ for resume "
            "(--resume) to continue; pass overwrite (--overwrite) to start over, or choose "
            "another run folder",
            path=run_dir,
        )
    raise OutputExistsError(
        f"run folder already holds a checkpoint of an earlier run ({what}); resume it "
        "(--resume), pass overwrite (--overwrite) to start over, or choose another run folder",
        path=run_dir,
    )


def _written_by_medimg(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` is a run folder medimg wrote: it carries the owner mark or the
    ``config.yaml`` every run writes first."""
    return is_owned(run_dir) or (Path(run_dir) / "config.yaml").is_file()


def _earlier_run(run_dir: Path, extra: tuple[str, ...], whole_folder: bool) -> list[str]:
    """The names in ``run_dir`` that make it an earlier run, the run's own names first."""
    names = [n for n in (*RUN_FILES, *extra) if (run_dir / n).exists()]
    if whole_folder and run_dir.is_dir():
        names += sorted(p.name for p in run_dir.iterdir() if p.name not in {*names, OWNER_MARK})
    return names


def _unstarted(run_dir: Path) -> bool:
    """No weights yet: the run never reached a checkpoint or a best model."""
    return not (run_dir / "best").exists() and not (run_dir / "last").exists()


def _restartable(run_dir: Path, earlier: list[str], run_config: dict[str, Any]) -> bool:
    """A run killed before its first checkpoint, relaunched with the same config."""
    if set(earlier) - {"config.yaml", "metrics.jsonl", "last.tmp", "best.tmp"}:
        return False
    try:
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return False
    return saved == yaml.safe_load(yaml.safe_dump(run_config, sort_keys=False))


def _write_config(run_dir: Path, run_config: dict[str, Any]) -> None:
    path = run_dir / "config.yaml"
    tmp = path.with_name(".config.yaml.tmp")
    tmp.write_text(yaml.safe_dump(run_config, sort_keys=False))
    tmp.replace(path)
