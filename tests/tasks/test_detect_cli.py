"""``medimg detect`` end to end on a tiny LUNA16-layout set: train -> predict -> evaluate."""

import json

import pytest

from medimg.cli import main
from medimg.datasets.luna16 import write_luna16


def test_train_predict_evaluate(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # evaluate's default report folder is under ./runs
    data = write_luna16(tmp_path / "luna", 2, progress=False, shape=(64, 64, 20),
                        spacing=(5.5, 5.5, 7.0), n_nodules=(2, 2))  # fmt: skip
    run = tmp_path / "run"
    # a coarse 5.5 mm grid and 16^3 patches keep it a few CPU seconds
    args = ["detect", "train", str(data), "--max-steps", "2", "--out", str(run), "--quiet",
            "--spacing", "5.5", "--patch", "16", "--threads", "1"]  # fmt: skip
    assert main(args) == 0
    assert (run / "config.yaml").is_file() and (run / "last" / "model.safetensors").is_file()
    assert "spacing: 5.5" in (run / "config.yaml").read_text()
    tuned = tmp_path / "tuned"  # --init: fine-tune the run just trained
    assert main([*args[:6], str(tuned), *args[7:], "--init", str(run), "--max-steps", "1"]) == 0
    assert f"init_weights: {run}" in (tuned / "config.yaml").read_text()
    assert main(["detect", "predict", str(data), str(tmp_path / "pred"), "--model", str(run)]) == 0
    header = (tmp_path / "pred" / "candidates.csv").read_text().splitlines()[0]
    assert header == "seriesuid,coordX,coordY,coordZ,probability,diameter_mm"
    assert len(list((tmp_path / "pred" / "figures").glob("*.png"))) == 2
    doc = json.loads((tmp_path / "pred" / "candidates.json").read_text())
    assert len(doc["series"]) == 2
    assert f"detect {run.name} sha1:" in doc["model"]  # which model found them
    capsys.readouterr()
    ev = ["detect", "evaluate", str(tmp_path / "pred" / "candidates.csv"),
          str(data / "annotations.csv"), "--excluded", str(data / "annotations_excluded.csv"),
          "--scans", str(data / "seriesuids.csv"), "--bootstrap", "50"]  # fmt: skip
    assert main(ev) == 0
    out = capsys.readouterr().out
    assert "CPM" in out and "over 2 scans, 4 nodules" in out
    assert (tmp_path / "runs" / "detect" / "evaluation" / "pred" / "froc.png").is_file()
    assert not (tmp_path / "pred" / "evaluation").exists()  # nothing inside the input folder
    # bad input: one line, exit code 2, inputs untouched
    assert main(["detect", "predict", str(data), str(tmp_path / "pred"), "--model", str(run)]) == 2
    assert "already exists" in capsys.readouterr().err
    (tmp_path / "empty.csv").write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n")
    assert main([*ev[:3], str(tmp_path / "empty.csv"), "--overwrite"]) == 2
    assert "no annotations" in capsys.readouterr().err


@pytest.mark.parametrize("verb", ["simulate", "train", "predict", "evaluate"])
def test_help(verb, capsys):
    with pytest.raises(SystemExit):
        main(["detect", verb, "--help"])
    assert "example:" in capsys.readouterr().out


def test_findings_become_a_dicom_seg_over_the_source_series(tmp_path, monkeypatch):
    """``--seg``: findings above the score as spheres, one segment each, best first, in a DICOM
    SEG on the source series' grid (read back at the planted world position)."""
    import numpy as np

    from medimg.io.api import save
    from medimg.io.dicom.seg import read_dicom_seg
    from medimg.io.image import Image
    from medimg.tasks.detect import predict as pr
    from medimg.tasks.detect.infer import Candidate

    affine = np.diag([-2.0, -2.0, 3.0, 1.0])
    hu = np.full((1, 24, 20, 10), -800.0, np.float32)
    hu[:, :, :3] = 40.0  # some soft tissue: the input check wants CT numbers
    ct = Image(hu, affine, modality="CT")
    series = tmp_path / "series"
    save(ct, series)
    cands = [Candidate((-20.0, -16.0, 12.0), 8.0, 0.9), Candidate((-30.0, -10.0, 21.0), 6.0, 0.7),
             Candidate((-10.0, -10.0, 6.0), 6.0, 0.1)]  # fmt: skip
    labels, names = pr.findings_label_map(ct, cands, 0.5)
    assert sorted(names) == [1, 2] and names[1].startswith("finding 1: score 0.90")
    assert labels.array[0, 10, 8, 4] == 1 and labels.array[0, 15, 5, 7] == 2
    assert (labels.array == 1).sum() == pytest.approx(4 / 3 * np.pi * 4**3 / 12, rel=0.35)
    monkeypatch.setattr(pr.Detector, "detect", lambda self, image: cands)
    written = pr.predict_path(series, tmp_path / "out", figures=False, seg_threshold=0.5)
    seg = read_dicom_seg(next(p for p in written if p.name.endswith("_seg.dcm")))
    centre = np.argwhere(seg.array[0] == 1).mean(0)
    world = seg.affine[:3, :3] @ centre + seg.affine[:3, 3]
    np.testing.assert_allclose(world, (-20.0, -16.0, 12.0), atol=1.6)
    # a DICOM folder's rows carry its SeriesInstanceUID, not the folder name
    from medimg.io.api import load

    uid = str(load(series).meta["series_uid"])
    rows = (tmp_path / "out" / "candidates.csv").read_text().splitlines()[1:]
    assert len(rows) == 3 and all(r.split(",")[0] == uid for r in rows) and uid != "series"
    from medimg.errors import InputError

    # --seg on a non-DICOM input: refused from the paths, before a model is even loaded
    def no_model(*a, **k):
        raise AssertionError("the detector ran before the refusal")

    monkeypatch.setattr(pr, "Detector", no_model)
    nifti = save(ct, tmp_path / "ct.nii.gz")
    with pytest.raises(InputError, match="needs a DICOM series folder"):
        pr.predict_path(nifti, tmp_path / "o2", figures=False, seg_threshold=0.5)
    assert not (tmp_path / "o2").exists()
