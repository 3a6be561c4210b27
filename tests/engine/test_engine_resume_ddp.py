"""Exactness across processes: SIGKILL + resume, and 2-process DDP (gloo) vs 1 process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch
from engine_toy import ToyData, make_model, make_validate, step

from medimg.engine import TrainConfig, Trainer, load_training_state, load_weights, read_metrics

SCRIPT = Path(__file__).with_name("engine_toy.py")


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def _reference(run_dir: Path, config: dict, aug: float, dropout: float) -> dict[str, torch.Tensor]:
    """The same run, uninterrupted and in this process."""
    cfg = TrainConfig(**{"progress": False, **config})
    model = make_model(cfg.seed, dropout)
    validate = make_validate(ToyData(n=32, seed=7))
    Trainer(model, ToyData(aug=aug), step, cfg, run_dir, validate=validate).fit()
    return model.state_dict()


def _final(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_weights(make_model(), run_dir / "last").state_dict()


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=0, atol=atol), (
            key,
            (a[key] - b[key]).abs().max(),
        )


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    # 48 samples / batch 8 = 6 steps per epoch; checkpoints at 5 and 10 (mid-epoch);
    # killed inside step 14 (0-based 13, epoch 2); resumes from step 10.
    config = {"max_steps": 24, "checkpoint_every": 5, "val_every": 4, "log_every": 1}
    config.update(val_metric="mse", lr=0.01, lr_schedule="cosine", warmup_steps=3)
    run, marker = tmp_path / "run", tmp_path / "paused"
    args = [sys.executable, str(SCRIPT), str(run), "--config", json.dumps(config)]
    args += ["--aug", "0.2", "--dropout", "0.2"]
    proc = subprocess.Popen([*args, "--pause-at", "13", str(marker)], env=_env())
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, "training exited before reaching the pause step"
            assert time.monotonic() < deadline, "training never reached the pause step"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        proc.kill()
    assert load_training_state(run / "last")["step"] == 10
    logged = [r["step"] for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "train"]
    assert logged == list(range(1, 14))  # steps 11-13 were done but not checkpointed

    done = subprocess.run([*args, "--resume"], env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["last_step"] == 24

    expected = _reference(tmp_path / "ref", config, aug=0.2, dropout=0.2)
    _assert_close(_final(run), expected, atol=1e-6)
    records = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, 25))
    ref = read_metrics(tmp_path / "ref" / "metrics.jsonl")
    assert [r["mse"] for r in records if r["kind"] == "val"] == [
        r["mse"] for r in ref if r["kind"] == "val"
    ]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_gloo_processes_match_one_process(tmp_path: Path) -> None:
    # global batch 8 = 2 x 4; augmentation on; early stop must be agreed by both ranks
    config = {"max_steps": 40, "val_every": 3, "checkpoint_every": 5, "log_every": 1}
    config.update(val_metric="plateau", early_stop_patience=2, lr=0.01, device="cpu")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    cmd += ["--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
    cmd += [str(SCRIPT), str(tmp_path / "ddp"), "--config", json.dumps(config), "--aug", "0.2"]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1 and printed[0]["last_step"] == 9 and printed[0]["stopped_early"]

    expected = _reference(tmp_path / "one", config, aug=0.2, dropout=0.0)
    _assert_close(_final(tmp_path / "ddp"), expected, atol=1e-5)
    ddp_log = read_metrics(tmp_path / "ddp" / "metrics.jsonl")
    one_log = read_metrics(tmp_path / "one" / "metrics.jsonl")
    assert [(r["kind"], r["step"]) for r in ddp_log] == [(r["kind"], r["step"]) for r in one_log]
    ddp_loss = [r["loss"] for r in ddp_log if r["kind"] == "train"]
    one_loss = [r["loss"] for r in one_log if r["kind"] == "train"]
    assert torch.allclose(torch.tensor(ddp_loss), torch.tensor(one_loss), atol=1e-5)
