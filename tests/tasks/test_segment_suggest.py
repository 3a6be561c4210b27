"""``medimg segment suggest``: uncertainty scores, the diversity ranking and the review folder."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from medimg.cli import main
from medimg.io.api import load
from medimg.tasks.segment.suggest import diverse_ranking

TINY = {"shape": (32, 32, 8), "spacing": (12.0, 12.0, 15.0)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model (a few steps) and three unlabelled images; returns (images, model)."""
    from medimg.phantoms.segmentation import write_msd_dataset

    tmp = tmp_path_factory.mktemp("suggest")
    torch.set_num_threads(1)
    data = write_msd_dataset(tmp / "data", "ct", n_train=2, n_test=3, seed=0, **TINY)
    assert main(["segment", "plan", str(data), "--memory-mb", "32", "--base-features", "4"]) == 0
    model = tmp / "model"
    argv = ["segment", "train", str(data), "--fold", "-1", "--plan", str(data / "plan.yaml"),
            "--max-steps", "3", "--out", str(model), "--quiet", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    return data / "imagesTs", model


def test_diverse_ranking_skips_a_near_duplicate() -> None:
    scores = np.array([1.0, 0.99, 0.5])
    emb = np.array([[0.0, 0.0], [0.0, 0.01], [5.0, 5.0]])  # case 1 is a copy of case 0
    assert diverse_ranking(scores, emb, 0.0) == [0, 1, 2]  # uncertainty alone
    assert diverse_ranking(scores, emb, 0.5) == [0, 2, 1]  # the distinct case comes second


def test_suggest_writes_queue_maps_and_review_folder(trained, tmp_path, capsys) -> None:
    images, model = trained
    out = tmp_path / "review"
    argv = ["segment", "suggest", str(images), "--model", str(model), "--k", "2",
            "--out", str(out), "--device", "cpu", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    queue = json.loads((out / "queue.json").read_text())["queue"]
    assert [r["rank"] for r in queue] == [1, 2, 3]
    assert sorted(r["case"] for r in queue) == ["ct_002", "ct_003", "ct_004"]
    assert [r["selected"] for r in queue] == [True, True, False]
    top = max(queue, key=lambda r: r["score"])
    assert queue[0]["case"] == top["case"]  # the most uncertain case leads
    for r in queue:
        assert 0 <= r["entropy"] <= 1 and 0 <= r["disagreement"] <= r["entropy"] + 1e-6
    rows = list(csv.DictReader(open(out / "queue.csv")))
    assert [r["case"] for r in rows] == [r["case"] for r in queue]
    for r in queue:  # one entropy map per case, on the case's own grid
        emap = load(out / r["uncertainty"])
        src = load(images / f"{r['case']}_0000.nii.gz")
        assert emap.spatial_shape == src.spatial_shape and np.allclose(emap.affine, src.affine)
        assert 0 <= emap.array.min() and emap.array.max() <= 1 and emap.array.max() > 0
    for r in queue[:2]:  # the chosen cases: their images and the model's proposal
        assert (out / r["images"][0]).is_file()
        prop = load(out / r["proposal"], is_label=True)
        assert prop.array.dtype == np.uint8 and prop.spatial_shape == src.spatial_shape
        assert (out / "proposals" / f"{r['case']}.tsv").is_file()
    assert not (out / "proposals" / f"{queue[2]['case']}.nii.gz").exists()
    assert "medimg review" in capsys.readouterr().out
    assert main(argv) == 2  # an existing queue is kept without --overwrite
    assert "--overwrite" in capsys.readouterr().err


def test_suggest_refuses_bad_arguments(trained, tmp_path, capsys) -> None:
    images, model = trained
    argv = ["segment", "suggest", str(tmp_path / "missing"), "--model", str(model), "--out",
            str(tmp_path / "q"), "--device", "cpu"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1
    argv[2] = str(images.parent)  # a dataset root: its images are one folder down
    assert main(argv) == 2
    assert "imagesTs/" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["segment", "suggest", str(images), "--out", str(tmp_path / "q"), "--k", "0"])


def test_the_review_page_opens_the_suggest_folder(trained, tmp_path) -> None:
    pytest.importorskip("fastapi")
    from medimg.review.cli import _missing_proposals
    from medimg.review.folder import ReviewFolder

    images, model = trained
    out = tmp_path / "review"
    argv = ["segment", "suggest", str(images), "--model", str(model), "--k", "2",
            "--out", str(out), "--device", "cpu", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    queue = json.loads((out / "queue.json").read_text())["queue"]
    folder = ReviewFolder(out)
    assert list(folder.cases) == [r["case"] for r in queue[:2]]  # the chosen ones, in order
    first = folder.info(queue[0]["case"])
    assert first["has_proposal"] and first["has_uncertainty"] and first["queue"]["rank"] == 1
    assert first["labels"][1]["name"] == "liver"
    # review --model: cases put under images/ without a proposal get one from the model
    (out / "images" / "extra_0000.nii.gz").write_bytes((images / "ct_004_0000.nii.gz").read_bytes())
    assert _missing_proposals(out, str(model), "cpu") == ["extra"]
    assert load(out / "proposals" / "extra.nii.gz", is_label=True).array.dtype == np.uint8
    assert ReviewFolder(out).cases["extra"].proposal is not None
