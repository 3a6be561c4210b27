"""``medimg superres`` verbs end to end on tiny generated volumes, and their one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

from medimg.cli import main
from medimg.io.api import load, save
from medimg.io.image import Image
from medimg.tasks.superres.degrade import degrade, thick_affine
from medimg.tasks.superres.synthetic import ellipsoids


@pytest.fixture(scope="module")
def thick_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sr")
    ref = ellipsoids((24, 24, 24), seed=1)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    save(Image(ref[None], affine, modality="MR"), folder / "ref.nii.gz")
    thick = Image(degrade(ref, 2, 4)[None], thick_affine(affine, 2, 4), modality="MR")
    return save(thick, folder / "thick.nii.gz")


@pytest.mark.parametrize("verb", ["train", "predict", "evaluate"])
def test_every_verb_has_help_with_example(verb, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["superres", verb, "--help"])
    assert exc.value.code == 0
    assert "example:\n  medimg superres " + verb in capsys.readouterr().out


def test_predict_writes_the_thin_volume_and_never_overwrites(thick_file, tmp_path, capsys) -> None:
    out = tmp_path / "thin.nii.gz"
    assert main(["superres", "predict", str(thick_file), str(out), "--method", "sinc"]) == 0
    thin = load(out)
    assert thin.spatial_shape == (24, 24, 24)
    np.testing.assert_allclose(thin.affine, np.eye(4), atol=1e-6)  # the 1 mm grid it came from
    assert main(["superres", "predict", str(thick_file), str(out), "--method", "cubic"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_evaluate_writes_a_report_where_methods_beat_repeated_slices(thick_file, tmp_path,
                                                                    capsys) -> None:  # fmt: skip
    ref, out = thick_file.parent / "ref.nii.gz", tmp_path / "report"
    argv = ["superres", "evaluate", str(ref), "--out", str(out), "--methods", "cubic", "sinc"]
    assert main(argv) == 0
    assert {p.name for p in out.iterdir()} >= {"metrics.csv", "summary.md", "panel.png"}
    lines = (out / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("method,psnr_db,ssim,psnr_mask_db,ssim_mask")
    assert all(float(line.split(",")[1]) > 25 for line in lines[1:])


def _one_line_error(argv, capsys, code=2) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_2d_input_is_a_one_line_error(tmp_path, capsys) -> None:
    flat = save(Image(np.ones((1, 16, 16), np.float32)), tmp_path / "slice.nii.gz")
    err = _one_line_error(["superres", "predict", str(flat), str(tmp_path / "o.nii.gz")], capsys)
    assert "3D" in err


def test_isotropic_input_without_an_axis_is_a_one_line_error(thick_file, tmp_path, capsys) -> None:
    ref = thick_file.parent / "ref.nii.gz"
    err = _one_line_error(["superres", "predict", str(ref), str(tmp_path / "o.nii.gz")], capsys)
    assert "--axis" in err


@pytest.mark.parametrize("factor", ["1", "9", "2.5"])
def test_wrong_factor_is_refused_in_one_line(thick_file, tmp_path, factor, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["superres", "predict", str(thick_file), str(tmp_path / "o.nii.gz"),
              "--factor", factor])  # fmt: skip
    assert exc.value.code == 2
    assert "--factor" in capsys.readouterr().err.strip().splitlines()[-1]


def test_a_factor_the_model_was_not_trained_for_is_one_line(thick_file, tmp_path, capsys) -> None:
    from medimg.tasks.superres.predict import DEFAULT_MODEL

    if not (DEFAULT_MODEL / "config.yaml").is_file():
        pytest.skip("no shipped model")
    argv = ["superres", "predict", str(thick_file), str(tmp_path / "o.nii.gz"), "--factor", "3"]
    assert "restores 4x" in _one_line_error(argv, capsys)


def test_predict_reads_a_dicom_series_and_keeps_its_world_extent(thick_file, tmp_path) -> None:
    thick = load(thick_file)
    thick.modality = "CT"
    thick.array = thick.array * 1000 - 1000  # HU-like values
    save(thick, tmp_path / "series")  # a DICOM series folder
    series = load(tmp_path / "series")
    out = tmp_path / "thin.nii.gz"
    assert (
        main(["superres", "predict", str(tmp_path / "series"), str(out), "--method", "cubic"]) == 0
    )
    thin = load(out)
    n_in, n_out = np.asarray(series.spatial_shape), np.asarray(thin.spatial_shape)
    assert n_out[2] == 4 * n_in[2] and np.isclose(thin.spacing[2], series.spacing[2] / 4)
    for corner_in, corner_out in (([-0.5] * 3, [-0.5] * 3), (n_in - 0.5, n_out - 0.5)):
        np.testing.assert_allclose(thin.voxel_to_world(corner_out),
                                   series.voxel_to_world(corner_in), atol=1e-3)  # fmt: skip
    assert thin.array.min() < -900  # HU kept: air stays air
