"""``medimg detect`` end to end on a tiny LUNA16-layout set: train -> predict -> evaluate."""

import json

import pytest

from medimg.cli import main
from medimg.datasets.luna16 import write_luna16


def test_train_predict_evaluate(tmp_path, capsys):
    data = write_luna16(tmp_path / "luna", 2, progress=False, shape=(64, 64, 20),
                        spacing=(5.5, 5.5, 7.0), n_nodules=(2, 2))  # fmt: skip
    run = tmp_path / "run"
    # a coarse 5.5 mm grid and 16^3 patches keep it a few CPU seconds
    args = ["detect", "train", str(data), "--max-steps", "2", "--out", str(run), "--quiet",
            "--spacing", "5.5", "--patch", "16", "--threads", "1"]  # fmt: skip
    assert main(args) == 0
    assert (run / "config.yaml").is_file() and (run / "last" / "model.safetensors").is_file()
    assert "spacing: 5.5" in (run / "config.yaml").read_text()
    assert main(["detect", "predict", str(data), str(tmp_path / "pred"), "--model", str(run)]) == 0
    header = (tmp_path / "pred" / "candidates.csv").read_text().splitlines()[0]
    assert header == "seriesuid,coordX,coordY,coordZ,probability,diameter_mm"
    assert len(list((tmp_path / "pred" / "figures").glob("*.png"))) == 2
    doc = json.loads((tmp_path / "pred" / "candidates.json").read_text())
    assert len(doc["series"]) == 2
    capsys.readouterr()
    ev = ["detect", "evaluate", str(tmp_path / "pred" / "candidates.csv"),
          str(data / "annotations.csv"), "--excluded", str(data / "annotations_excluded.csv"),
          "--scans", str(data / "seriesuids.csv"), "--bootstrap", "50"]  # fmt: skip
    assert main(ev) == 0
    out = capsys.readouterr().out
    assert "CPM" in out and "over 2 scans, 4 nodules" in out
    assert (tmp_path / "pred" / "evaluation" / "froc.png").is_file()
    # bad input: one line, exit code 2, inputs untouched
    assert main(["detect", "predict", str(data), str(tmp_path / "pred"), "--model", str(run)]) == 2
    assert "already exists" in capsys.readouterr().err
    (tmp_path / "empty.csv").write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n")
    assert main([*ev[:3], str(tmp_path / "empty.csv")]) == 2
    assert "no annotations" in capsys.readouterr().err


@pytest.mark.parametrize("verb", ["simulate", "train", "predict", "evaluate"])
def test_help(verb, capsys):
    with pytest.raises(SystemExit):
        main(["detect", verb, "--help"])
    assert "example:" in capsys.readouterr().out
