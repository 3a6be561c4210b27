"""``medimg detect train2d|predict2d`` end to end on a tiny DeepLesion root and a NIfTI volume."""

import json

import numpy as np

from medimg.cli import main
from medimg.datasets.deeplesion import write_deeplesion
from medimg.io.api import save
from medimg.io.image import Image


def _root(tmp_path):
    rng = np.random.default_rng(0)
    series, lesions = {}, []
    for s in range(4):
        hu = (30 + 20 * rng.standard_normal((48, 40, 5))).astype(np.float32)
        hu[10:20, 12:22, 2] += 250
        name = f"{s + 1:06d}_01_01"
        series[name] = (hu, (1.5, 1.5, 5.0))
        lesions.append(
            {
                "series": name,
                "key_slice": 3,
                "box": (10, 12, 20, 22),
                "split": 1 + (s == 3) + (s == 2) * 2,
            }
        )
    return write_deeplesion(tmp_path / "dl", series, lesions)


def test_train2d_then_predict2d_on_deeplesion_and_a_volume(tmp_path, capsys):
    root = _root(tmp_path)
    run = tmp_path / "run"
    assert main(["detect", "train2d", str(root), "--out", str(run), "--max-steps", "4",
                 "--threads", "1", "--quiet", "--export", str(tmp_path / "model")]) == 0  # fmt: skip
    assert (tmp_path / "model" / "model.safetensors").is_file()
    # --init: fine-tune the exported model; one with other input channels is a one-line error
    tuned = ["detect", "train2d", str(root), "--max-steps", "1", "--threads", "1", "--quiet",
             "--init", str(tmp_path / "model")]  # fmt: skip
    assert main([*tuned, "--out", str(tmp_path / "tuned")]) == 0
    capsys.readouterr()
    assert main([*tuned, "--out", str(tmp_path / "t2"), "--neighbours", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "shape mismatch" in err and "\n" not in err
    out = tmp_path / "pred"
    assert main(["detect", "predict2d", str(root), str(out), "--split", "test",
                 "--model", str(tmp_path / "model")]) == 0  # fmt: skip
    summary = json.loads((out / "froc.json").read_text())
    assert (
        summary["n_images"] == 1
        and summary["n_lesions"] == 1
        and len(summary["sensitivities"]) == 6
    )
    assert (out / "detections.csv").read_text().splitlines()[0].startswith("slice,x1,y1,x2,y2")
    assert (out / "figures" / "000003_01_01_003.png").is_file()
    # a volume: the key slice and its neighbours, world centres in the CSV
    vol = save(Image(np.zeros((1, 40, 32, 9), np.float32), np.diag([0.8, 0.8, 2.0, 1.0]),
                     modality="CT"), tmp_path / "ct.nii.gz")  # fmt: skip
    assert main(["detect", "predict2d", str(vol), str(tmp_path / "v"), "--slice", "4",
                 "--model", str(run), "--no-figures"]) == 0  # fmt: skip
    assert (tmp_path / "v" / "detections.json").is_file()
    capsys.readouterr()
    assert main(["detect", "predict2d", str(vol), str(tmp_path / "w"), "--slice", "12",
                 "--model", str(run)]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert "outside the volume's 9 slices" in err and "\n" not in err
    # the shipped default model works without --model
    assert main(["detect", "predict2d", str(vol), str(tmp_path / "d"), "--no-figures"]) == 0
    assert (tmp_path / "d" / "detections.csv").is_file()
    # outputs are never overwritten
    assert main(["detect", "predict2d", str(root), str(out), "--model", str(run)]) == 2
    assert "already exists" in capsys.readouterr().err
