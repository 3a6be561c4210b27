"""The output layer: nothing replaced unasked, nothing written onto an input, folders swapped in
whole, interrupts leave the old output or the complete new one, umask respected."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from medimg import demo
from medimg.errors import InputError, MedimgError, OutputExistsError
from medimg.io.api import load, save
from medimg.io.image import Image
from medimg.io.output import (
    atomic_dir,
    atomic_path,
    check_outputs,
    is_owned,
)


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_check_outputs_refuses_empty_path_without_writing(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="output path is empty"):
        check_outputs([""])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["same", "inside", "holds"])
def test_output_on_inside_or_around_an_input_is_refused(tmp_path, where) -> None:
    scan = tmp_path / "scans" / "ct.nii.gz"
    scan.parent.mkdir()
    scan.write_bytes(b"x")
    out = {
        "same": scan,
        "inside": scan.parent / "labels",
        "holds": tmp_path / "scans",
    }[where]
    with pytest.raises(InputError, match="input"):
        check_outputs([out], inputs=[scan.parent if where == "inside" else scan], overwrite=True)
    assert scan.read_bytes() == b"x"


def test_check_outputs_refuses_duplicates_and_existing(tmp_path) -> None:
    a = tmp_path / "a.nii.gz"
    with pytest.raises(InputError, match="named twice"):
        check_outputs([a, tmp_path / "." / "a.nii.gz"])
    a.write_bytes(b"old")
    with pytest.raises(OutputExistsError):
        check_outputs([a])
    assert check_outputs([a], overwrite=True) == [a]
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(InputError, match="is a file"):
        check_outputs([tmp_path / "f" / "out.nii.gz"])


def test_atomic_path_gives_umask_permissions(tmp_path) -> None:
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "x.json") as tmp:
            tmp.write_text("{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o644


def test_atomic_dir_swaps_a_folder_in_whole(tmp_path) -> None:
    target = tmp_path / "out"
    with atomic_dir(target) as d:
        (d / "a.txt").write_text("1")
    assert is_owned(target) and (target / "a.txt").read_text() == "1"
    assert stat.S_IMODE(target.stat().st_mode) == 0o777 & ~_umask()
    with pytest.raises(OutputExistsError):
        with atomic_dir(target):
            pass
    with atomic_dir(target, overwrite=True) as d:
        (d / "b.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir() if p.name != ".medimg-output") == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left


@pytest.mark.parametrize("failure", [RuntimeError, KeyboardInterrupt])
def test_atomic_dir_failure_inside_leaves_the_old_folder(tmp_path, failure) -> None:
    target = tmp_path / "out"
    with atomic_dir(target) as d:
        (d / "a.txt").write_text("old")
    before = _tree(target)
    with pytest.raises(failure):
        with atomic_dir(target, overwrite=True) as d:
            (d / "a.txt").write_text("new, half written")
            raise failure()
    assert _tree(target) == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_dir_never_replaces_a_folder_it_did_not_make(tmp_path) -> None:
    mine = tmp_path / "results"
    mine.mkdir()
    (mine / "thesis.docx").write_text("precious")
    with pytest.raises(InputError, match="did not write"):
        with atomic_dir(mine, overwrite=True):
            pass
    assert (mine / "thesis.docx").read_text() == "precious"


def test_demo_refuses_to_replace_a_stage_folder_it_did_not_write(tmp_path) -> None:
    (tmp_path / "io").mkdir()
    (tmp_path / "io" / "notes.txt").write_text("mine")
    with pytest.raises(MedimgError, match="did not write"):
        demo.run_demo(tmp_path)
    assert (tmp_path / "io" / "notes.txt").read_text() == "mine"


def test_demo_replaces_its_own_stage_folder(tmp_path, monkeypatch, capsys) -> None:
    def stage(out: Path) -> list[dict]:
        (out / "result.txt").write_text(str(len(calls)))
        calls.append(out)
        return [{"stage": "x", "status": "ok"}]

    calls: list[Path] = []
    monkeypatch.setattr(demo, "STAGES", [("x", stage)])
    assert demo.run_demo(tmp_path) == 0 and demo.run_demo(tmp_path) == 0
    assert (tmp_path / "x" / "result.txt").read_text() == "1"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _volume(value: float, slices: int) -> Image:
    arr = np.full((1, 64, 64, slices), value, np.float32)
    arr[0, :, :, 0] = 0.0  # a distinct slice so the stack has a range
    return Image(arr, np.diag([0.8, 0.8, 2.0, 1.0]), modality="CT")


def test_dicom_series_overwrite_interrupted_keeps_the_old_series(tmp_path, monkeypatch) -> None:
    folder = tmp_path / "series"
    save(_volume(100.0, 12), folder)
    before = _tree(folder)
    import pydicom.dataset

    real = pydicom.dataset.Dataset.save_as
    written: list[int] = []

    def interrupted(self, *a, **k):
        written.append(1)
        if len(written) == 5:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(pydicom.dataset.Dataset, "save_as", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save(_volume(500.0, 20), folder, overwrite=True)
    assert _tree(folder) == before
    assert [p.name for p in tmp_path.iterdir()] == ["series"]


def test_sigint_during_convert_leaves_old_or_complete_new_series(tmp_path) -> None:
    """Ctrl-C at several moments of `convert --overwrite` over an existing series: the folder
    reads back as the old series or the complete new one, never a mix or a shorter stack."""
    src = tmp_path / "new.nii.gz"
    save(_volume(500.0, 120), src)
    out = tmp_path / "series"
    save(_volume(100.0, 60), out)
    cmd = [sys.executable, "-m", "medimg.cli", "convert", str(src), str(out), "--overwrite"]
    for delay in (0.3, 1.0, 1.6, 2.2, 3.0):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        # a Ctrl-C while Python itself starts up (before main) may print Python's own
        # traceback; once main runs, an interrupt is one "error: interrupted" line
        assert b"Traceback" not in err or b"in main" not in err
        back = load(out)
        n = back.spatial_shape[2]
        assert n in (60, 120)
        assert float(back.array.max()) == pytest.approx(100.0 if n == 60 else 500.0, abs=1)
        if n == 120:  # the new one is in: put the old one back for the next offset
            save(_volume(100.0, 60), out, overwrite=True)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_full_disk_error_names_the_output(tmp_path) -> None:
    import errno

    with pytest.raises(OSError) as info:
        with atomic_path(tmp_path / "big.nii.gz"):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert info.value.filename == str(tmp_path / "big.nii.gz")


def test_atomic_dir_failure_leaves_no_parent_folders_it_made(tmp_path) -> None:
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "a" / "b" / "out") as d:
            (d / "x").write_text("partial")
            raise RuntimeError("the verb failed")
    assert list(tmp_path.iterdir()) == []


def test_check_output_dir_refuses_what_atomic_dir_would_without_writing(tmp_path) -> None:
    from medimg.io.output import check_output_dir

    foreign = tmp_path / "results"
    foreign.mkdir()
    (foreign / "a.txt").write_text("mine")
    with pytest.raises(InputError, match="did not write"):
        check_output_dir(foreign, overwrite=True)
    assert check_output_dir(foreign, overwrite=True, owned=True) == foreign
    assert check_output_dir(tmp_path / "new" / "out") == tmp_path / "new" / "out"
    assert not (tmp_path / "new").exists()


def test_a_folder_holding_only_a_verbs_own_files_counts_as_medimgs(tmp_path) -> None:
    from medimg.io.output import is_owned

    old = tmp_path / "report"  # written before the mark existed: only the verb's file names
    old.mkdir()
    (old / "metrics.csv").write_text("case,dice\n")
    assert not is_owned(old) and is_owned(old, ("metrics.csv", "summary.md"))
    (old / "notes.txt").write_text("mine")
    assert not is_owned(old, ("metrics.csv", "summary.md"))
    assert not is_owned(tmp_path / "missing", ("metrics.csv",))


def test_copy_files_checks_every_destination_before_copying_any(tmp_path) -> None:
    from medimg.io.output import copy_files

    src_a, src_b = tmp_path / "a.yaml", tmp_path / "b.bin"
    src_a.write_text("config")
    src_b.write_bytes(b"weights")
    out = tmp_path / "model"
    out.mkdir()
    (out / "b.bin").write_bytes(b"shipped")
    pairs = [(src_a, out / "a.yaml"), (src_b, out / "b.bin")]
    with pytest.raises(OutputExistsError):
        copy_files(pairs)
    assert sorted(p.name for p in out.iterdir()) == ["b.bin"]  # a.yaml not copied either
    with pytest.raises(InputError, match="is the input"):
        copy_files([(src_a, src_a)], overwrite=True)
    assert copy_files(pairs, overwrite=True) == [out / "a.yaml", out / "b.bin"]
    assert (out / "b.bin").read_bytes() == b"weights" and (out / "a.yaml").read_text() == "config"
