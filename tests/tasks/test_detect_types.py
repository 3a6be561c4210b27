"""Typed nodules through the detection workflow: ``simulate --varied`` writes types and hard
negatives, ``evaluate`` reports sensitivity per type and size at the operating point (with
bootstrap intervals), and training patches can be centred on hard negatives."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from medimg.cli import main
from medimg.datasets.luna16 import open_luna16, read_annotations
from medimg.engine import seed_everything
from medimg.tasks.detect.data import PatchDataset, Prepared
from medimg.tasks.detect.evaluate import evaluate_candidates
from medimg.tasks.detect.simulate import read_hard_negatives, write_thorax_luna16
from medimg.tasks.detect.strata import size_groups

COARSE = dict(scale=0.5, in_plane_mm=3.0, slice_mm=4.0, n_nodules=(4, 4), full_lungs=0.0)


def test_varied_set_carries_types_and_hard_negatives(tmp_path):
    from medimg.phantoms.thorax import thorax_ct_case

    root = write_thorax_luna16(tmp_path / "set", 1, seed=7, n_subsets=1, progress=False, **COARSE)
    ds = open_luna16(root)  # a valid LUNA16 folder for every reader of ours
    (uid,) = ds.uids()
    _, nod, _ = ds.load(uid)
    case = thorax_ct_case(7, **COARSE)
    want = np.array([[*f.center_ras, f.diameter_mm] for f in case.nodules])
    np.testing.assert_allclose(nod, want, atol=2e-3)
    header = (root / "annotations.csv").read_text().splitlines()[0]
    assert header.endswith("nodule_type,margin")
    types = [line.split(",")[5] for line in (root / "annotations.csv").read_text().splitlines()[1:]]
    assert types == [f.kind for f in case.nodules]
    hard = read_hard_negatives(root)[uid]
    assert len(hard) == len(case.hard_negatives) > 5
    np.testing.assert_allclose(hard[:, :3], [h.center_ras for h in case.hard_negatives], atol=2e-3)
    assert read_hard_negatives(tmp_path) == {}  # plain LUNA16: no file, no hard negatives


def _annotated(tmp_path):
    """3 scans, each with a solid nodule (found) and a juxtapleural one (missed), 1 FP each."""
    ann = ["seriesuid,coordX,coordY,coordZ,diameter_mm,nodule_type,margin"]
    cand = ["seriesuid,coordX,coordY,coordZ,probability"]
    for i in range(3):
        ann += [
            f"s{i},10,10,10,{4 + 8 * i},solid,smooth",
            f"s{i},-40,0,0,{25 - 5 * i},juxtapleural,smooth",
        ]
        cand += [f"s{i},10.5,10,10,0.9", f"s{i},80,80,80,0.5", f"s{i},-80,0,0,0.2"]
    (tmp_path / "annotations.csv").write_text("\n".join(ann) + "\n")
    (tmp_path / "cand.csv").write_text("\n".join(cand) + "\n")
    (tmp_path / "uids.csv").write_text("s0\ns1\ns2\n")


def test_evaluate_reports_sensitivity_per_type_and_size(tmp_path, capsys):
    _annotated(tmp_path)
    s = evaluate_candidates(tmp_path / "cand.csv", tmp_path / "annotations.csv", tmp_path / "ev",
                            scans=tmp_path / "uids.csv", n_resamples=200)  # fmt: skip
    assert s["operating_point"]["fp_per_scan"] <= 1.0
    by_type = s["by_type"]
    assert by_type["solid"]["n"] == 3 and by_type["solid"]["sensitivity"]["value"] == 1.0
    assert by_type["juxtapleural"]["sensitivity"]["value"] == 0.0
    assert by_type["juxtapleural"]["sensitivity"]["high"] == 0.0  # missed in every scan
    assert sum(g["n"] for g in s["by_size"].values()) == 6
    assert list(s["by_size"]) == ["3-6 mm", "10-20 mm", "20-30 mm"]  # in size order
    assert s["by_size"]["3-6 mm"]["sensitivity"]["value"] == 1.0  # the 4 mm solid one
    md = (tmp_path / "ev" / "summary.md").read_text()
    assert "| juxtapleural | 3 | 0 [0, 0] |" in md
    assert json.loads((tmp_path / "ev" / "summary.json").read_text())["by_type"]["solid"]["n"] == 3
    # the CLI prints them; a plain LUNA16 file (no nodule_type) gives sizes only
    argv = ["detect", "evaluate", str(tmp_path / "cand.csv"), str(tmp_path / "annotations.csv"),
            "--scans", str(tmp_path / "uids.csv"), "--out", str(tmp_path / "ev2"), "--bootstrap", "50"]  # fmt: skip
    assert main(argv) == 0
    assert "juxtapleural (  3 nodules): 0.000" in capsys.readouterr().out
    plain = tmp_path / "plain.csv"
    plain.write_text("\n".join(r.rsplit(",", 2)[0] for r in
                               (tmp_path / "annotations.csv").read_text().splitlines()) + "\n")  # fmt: skip
    s2 = evaluate_candidates(tmp_path / "cand.csv", plain, tmp_path / "ev3",
                             scans=tmp_path / "uids.csv", n_resamples=50)  # fmt: skip
    assert "by_type" not in s2 and "by_size" in s2
    assert len(read_annotations(plain)["s0"]) == 2


def test_size_groups():
    assert size_groups([3.0, 5.9, 6.0, 12, 29.9, 35]) == [
        "3-6 mm", "3-6 mm", "6-10 mm", "10-20 mm", "20-30 mm", "20-30 mm"]  # fmt: skip


def test_patches_centre_on_hard_negatives_when_asked():
    vol = np.zeros((80, 80, 80), np.float32)
    vol[60, 20, 40] = 1.0  # a look-alike the sampler should bring into view
    prep = Prepared(vol, np.eye(4), 2.0)
    hard = [np.array([[60.0, 20.0, 40.0, 4.0]])]
    nodules = [np.array([[15.0, 60.0, 20.0, 5.0]])]

    def share_with_marker(hard_fraction: float) -> float:
        seed_everything(0)
        ds = PatchDataset([prep], nodules, patch=24, samples_per_epoch=40, pos_fraction=0.3,
                          hard_negatives=hard, hard_fraction=hard_fraction)  # fmt: skip
        items = [ds[i] for i in range(40)]
        return float(np.mean([float(it["image"].max()) > 0.9 for it in items]))

    assert share_with_marker(0.7) > 0.6 > 0.2 > share_with_marker(0.0)
    with pytest.raises(Exception, match="hard_fraction"):
        PatchDataset([prep], nodules, pos_fraction=0.6, hard_negatives=hard, hard_fraction=0.6)


def test_without_hard_negatives_sampling_is_unchanged():
    """Adding the hook must not change the patches of earlier runs (same seed, same draws)."""
    vol = np.random.default_rng(0).random((60, 60, 60)).astype(np.float32)
    prep, nod = Prepared(vol, np.eye(4), 2.0), [np.array([[30.0, 30.0, 30.0, 5.0]])]
    seed_everything(1)
    a = [PatchDataset([prep], nod, patch=16)[i]["image"] for i in range(6)]
    seed_everything(1)
    b = [PatchDataset([prep], nod, patch=16, hard_negatives=[np.zeros((0, 4))],
                      hard_fraction=0.3)[i]["image"] for i in range(6)]  # fmt: skip
    assert all(bool((x == y).all()) for x, y in zip(a, b))


def test_simulate_varied_cli_writes_the_varied_set(tmp_path, monkeypatch, capsys):
    import medimg.tasks.detect.simulate as sim

    calls = []

    def fake(root, n, **kw):
        calls.append((root, n, kw))
        return root

    monkeypatch.setattr(sim, "write_thorax_luna16", fake)
    assert main(["detect", "simulate", str(tmp_path / "t"), "--cases", "3", "--varied"]) == 0
    assert calls and calls[0][1] == 3 and calls[0][2]["seed"] == 0
    assert "varied thorax CTs with typed nodules" in capsys.readouterr().out


def test_nodule_weights_give_the_weighted_type_more_patches():
    """A positive patch picks nodules in proportion to their weights (the preset's larger share
    for the hard types); bad weights are refused."""
    vol = np.zeros((120, 40, 40), np.float32)
    vol[20, 20, 20] = 1.0  # nodule A's marker
    vol[100, 20, 20] = 0.5  # nodule B's marker
    prep = Prepared(vol, np.eye(4), 2.0)
    nodules = [np.array([[20.0, 20.0, 20.0, 4.0], [100.0, 20.0, 20.0, 4.0]])]

    def share_of_b(weights) -> float:
        seed_everything(0)
        ds = PatchDataset([prep], nodules, patch=16, samples_per_epoch=60, pos_fraction=1.0,
                          nodule_weights=weights)  # fmt: skip
        return float(np.mean([0.4 < float(ds[i]["image"].max()) < 0.6 for i in range(60)]))

    assert share_of_b([np.array([1.0, 4.0])]) > 0.65 > 0.3 > share_of_b([np.array([4.0, 1.0])])
    with pytest.raises(Exception, match="one weight per nodule"):
        PatchDataset([prep], nodules, nodule_weights=[np.array([1.0])])
    with pytest.raises(Exception, match="weights"):
        PatchDataset([prep], nodules, nodule_weights=[np.array([-1.0, 1.0])])


def test_type_weights_follow_the_annotations_types(tmp_path):
    """Training reads each nodule's type from annotations.csv and weighs it as configured."""
    from medimg.engine.config import from_yaml, to_yaml
    from medimg.tasks.detect.train import DetectConfig, _type_weights, preset_config

    root = write_thorax_luna16(tmp_path / "t", 2, seed=3, n_subsets=1, progress=False, **COARSE)
    ds = open_luna16(root)
    uids = ds.uids()
    with open(root / "annotations.csv", newline="") as f:
        types = [r["nodule_type"] for r in csv.DictReader(f)]
    counts = [len(read_annotations(root / "annotations.csv").get(u, [])) for u in uids]
    w = _type_weights(root, uids, counts, {types[0]: 5.0})
    assert [len(a) for a in w] == counts and 5.0 in np.concatenate(w)
    assert sorted(np.concatenate(w)) == sorted(5.0 if t == types[0] else 1.0 for t in types)
    assert _type_weights(root, uids, counts, {}) is None
    with pytest.raises(Exception, match="nodule types for"):
        _type_weights(root, uids, [c + 1 for c in counts], {"solid": 2.0})
    # the preset's weights survive the run's config.yaml (resume and model folders read it)
    cfg = preset_config()
    assert cfg.type_weights["juxtapleural"] > 1 and cfg.hard_fraction > 0
    back = from_yaml(DetectConfig, to_yaml(cfg, tmp_path / "c.yaml"))
    assert back.type_weights == cfg.type_weights


def test_training_starts_from_init_weights(tmp_path, monkeypatch):
    """``init_weights`` (the preset's plain-phantom model) is what training starts from."""
    import medimg.tasks.detect.train as tr
    from medimg.datasets.luna16 import write_luna16
    from medimg.engine.checkpoint import save_checkpoint
    from medimg.tasks.detect.models import build_detector

    root = write_luna16(tmp_path / "t", 2, seed=4, n_subsets=2, progress=False,
                        shape=(48, 48, 12), n_nodules=(1, 2))  # fmt: skip
    start = build_detector((4, 8, 16))
    with torch.no_grad():
        for p in start.parameters():
            p.fill_(0.0123)
    save_checkpoint(tmp_path / "init", start)
    seen = {}

    class Stop(Exception):
        pass

    def fake_trainer(model, *a, **k):
        seen["w"] = [p.detach().clone() for p in model.parameters()]
        raise Stop

    monkeypatch.setattr(tr, "Trainer", fake_trainer)
    cfg = tr.DetectConfig(model=tr.ModelConfig(channels=(4, 8, 16)), patch=16,
                          init_weights=str(tmp_path / "init"))  # fmt: skip
    with pytest.raises(Stop):
        tr.train_detector(root, tmp_path / "run", cfg, progress=False)
    assert all(bool(torch.all(w == 0.0123)) for w in seen["w"])  # random init would differ
