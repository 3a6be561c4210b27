"""Distillation of an MRI reconstruction network into a small student (``--distill-from``)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from medimg.cli import main
from medimg.tasks.reconstruct.mri import train as train_mod
from medimg.tasks.reconstruct.mri.distill import count_parameters, distill_mri, student_config
from medimg.tasks.reconstruct.mri.models import build_model
from medimg.tasks.reconstruct.mri.train import load_model, preset, train_mri, validation_set


def _agreement(net: torch.nn.Module, teacher: torch.nn.Module, cases: list[dict]) -> float:
    """Mean PSNR of ``net``'s reconstructions against the teacher's (dB)."""
    with torch.no_grad():
        vals = [train_mod._psnr(net(s["kspace"][None], s["mask"]).abs(),
                                teacher(s["kspace"][None], s["mask"]).abs()) for s in cases]  # fmt: skip
    return float(torch.stack(vals).mean())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny VarNet teacher (the ``tiny`` preset, 60 steps) and a 40-step student of it."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("mri_distill")
    train_mri(preset("tiny"), tmp / "teacher")
    distill_mri(tmp / "teacher", tmp / "student", max_steps=40, alpha=1.0, progress=False)
    return tmp / "teacher", tmp / "student"


def test_student_is_4x_smaller_learns_and_agrees_with_its_teacher(runs) -> None:
    teacher_dir, student_dir = runs
    teacher, tcfg = load_model(teacher_dir)
    student, scfg = load_model(student_dir)  # an ordinary run folder for predict --model
    n_t, n_s = count_parameters(teacher), count_parameters(student)
    assert n_t >= 4 * n_s and json.loads((student_dir / "distill.json").read_text())["ratio"] >= 4
    assert scfg.model.cascades == tcfg.model.cascades and scfg.data == tcfg.data
    log = [json.loads(s) for s in (student_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if r.get("kind") == "train"]
    assert losses[-1] < losses[0], losses
    val = validation_set(tcfg)  # held-out phantoms
    torch.manual_seed(0)
    untrained = _agreement(build_model(scfg.model).eval(), teacher, val)
    trained = _agreement(student, teacher, val)
    assert trained > untrained + 1.0, (trained, untrained)


def test_student_schedule_follows_max_steps() -> None:
    cfg = student_config(preset("default"), max_steps=300)
    assert cfg.train.max_steps == 300 and cfg.train.val_every <= 100
    assert cfg.train.warmup_steps <= 30 and cfg.realistic == preset("default").realistic
    assert cfg.model.name == "modl" and cfg.model.cascades == 5
    teacher = dataclasses.replace(preset("default").model)
    assert count_parameters(build_model(teacher)) >= 4 * count_parameters(build_model(cfg.model))


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own refusals
        return int(exc.code)


def test_cli_one_line_errors(runs, tmp_path, capsys) -> None:
    teacher_dir, _ = runs
    cases = [
        (["--arch", "small"], "add --distill-from"),
        (["--distill-from", str(tmp_path)], "config.yaml"),
        (["--distill-from", str(teacher_dir), "--preset", "tiny"], "drop --preset"),
    ]
    for argv, text in cases:
        assert _run(["recon", "mri", "train", *argv, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and text in err, err
    assert not (tmp_path / "o").exists()
