"""The CLI's contract: --version, --help with examples, one-line errors, reserved task groups."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from medimg import __version__
from medimg.cli import TASK_GROUPS, main
from medimg.io import Image
from medimg.io.api import save


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out


@pytest.mark.parametrize("verb", ["info", "convert", "demo"])
def test_every_verb_has_help_with_example(verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([verb, "--help"])
    out = capsys.readouterr().out
    assert "example:" in out and f"medimg {verb}" in out


def test_missing_file_is_one_line_error(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["info", str(tmp_path / "nope.nii.gz")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error:") and "nope.nii.gz" in err and "\n" not in err


def test_unknown_extension_is_one_line_error(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "scan.xyz"
    bad.write_bytes(b"not an image")
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown image format" in err and ".nii" in err and "\n" not in err


def test_convert_refuses_to_overwrite(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.nii.gz"
    save(Image(np.ones((1, 4, 5, 3), np.float32)), src)
    dst = tmp_path / "out.nrrd"
    dst.write_bytes(b"precious")
    assert main(["convert", str(src), str(dst)]) == 2
    assert dst.read_bytes() == b"precious"
    assert "--overwrite" in capsys.readouterr().err
    assert main(["convert", str(src), str(dst), "--overwrite"]) == 0
    assert dst.read_bytes() != b"precious"


@pytest.mark.parametrize("group", sorted(TASK_GROUPS))
def test_task_groups_are_reserved(group: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([group, "--help"])
    assert exc.value.code == 0
    assert group in capsys.readouterr().out


def test_console_script_runs_without_traceback(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "medimg.cli", "info", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def test_models_lists_every_shipped_model_with_its_card(capsys) -> None:
    from medimg.model_cards import _COMMANDS, _TASKS, shipped_models

    weights = {p.parent for p in _TASKS.rglob("model.safetensors")}
    folders = {m.folder for m in shipped_models()}
    # every shipped weight file sits in (or under) a folder that has a card
    assert all(any(w == f or f in w.parents for f in folders) for w in weights)
    assert {f.relative_to(_TASKS).as_posix() for f in folders} == set(_COMMANDS)
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert all(str(m.card) in out and m.command in out for m in shipped_models())
