"""The engine's one rule for an existing run folder (:func:`check_run_dir`), as the tasks whose
run folder is their model folder (segment, register) use it."""

from __future__ import annotations

from pathlib import Path

import pytest

from medimg.engine import check_run_dir
from medimg.errors import CheckpointError, InputError, OutputExistsError
from medimg.io.output import OWNER_MARK


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_model_folder_counts_anything_in_it_as_an_earlier_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / OWNER_MARK).touch()
    assert check_run_dir(run, resume=False, overwrite=False, whole_folder=True) is False
    (run / "plan.yaml").write_text("old plan\n")
    assert check_run_dir(run, resume=False, overwrite=False) is False  # not a run's own name
    with pytest.raises(OutputExistsError, match=r"earlier run \(plan\.yaml\).*--resume"):
        check_run_dir(run, resume=False, overwrite=False, whole_folder=True)
    assert check_run_dir(run, resume=False, overwrite=True, whole_folder=True) is False


def test_overwrite_starts_over_only_a_model_folder_medimg_wrote(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("keep me")
    with pytest.raises(InputError, match="did not write"):
        check_run_dir(mine, resume=False, overwrite=True, whole_folder=True)
    with pytest.raises(OutputExistsError):  # not a run: "auto" never restarts it
        check_run_dir(mine, resume="auto", overwrite=False, whole_folder=True,
                      restart_unstarted=True)  # fmt: skip
    assert _tree(mine) == {"thesis.tex": b"keep me"}
    (mine / "config.yaml").write_text("a run's config\n")  # a run writes it first
    assert check_run_dir(mine, resume=False, overwrite=True, whole_folder=True) is False


def test_auto_may_restart_an_unstarted_run_only_when_the_task_asks(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / OWNER_MARK).touch()
    (run / "reg.yaml").write_text("settings\n")
    with pytest.raises(OutputExistsError):
        check_run_dir(run, resume="auto", overwrite=False, whole_folder=True)
    kw = {"resume": "auto", "overwrite": False, "whole_folder": True, "restart_unstarted": True}
    assert check_run_dir(run, **kw) is False
    (run / "best").mkdir()  # weights: no longer unstarted
    with pytest.raises(OutputExistsError):
        check_run_dir(run, **kw)


def test_a_run_folder_never_lands_on_an_input(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "case.nii.gz").write_bytes(b"image")
    with pytest.raises(InputError, match="holds the input"):
        check_run_dir(tmp_path, resume=False, overwrite=True, inputs=[data / "case.nii.gz"])
    with pytest.raises(InputError, match="lies inside the input"):
        check_run_dir(data / "run", resume=False, overwrite=True, inputs=[data])
    with pytest.raises(CheckpointError, match="no checkpoint to resume"):
        check_run_dir(tmp_path / "new", resume=True, overwrite=False)
