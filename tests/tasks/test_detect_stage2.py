"""The second training stage of the default detector: hard negatives drawn per kind, more
patches on small nodules, and ``train_preset`` chaining the stages (stage 2 starts from stage
1's best weights); plus the detection SEG storing only the slices that hold a finding."""

from __future__ import annotations

import numpy as np
import pytest

from medimg.engine import seed_everything
from medimg.tasks.detect.data import PatchDataset, Prepared

UIDS = ["1.2.3.1", "1.2.3.2"]


def _write(path, header: str, rows: list[str]) -> None:
    path.write_text("\n".join([header, *rows]) + "\n")


def test_hard_weights_bring_the_weighted_look_alike_into_view():
    vol = np.zeros((120, 40, 40), np.float32)
    vol[20, 20, 20] = 1.0  # look-alike A
    vol[100, 20, 20] = 0.5  # look-alike B
    prep = Prepared(vol, np.eye(4), 2.0)
    hard = [np.array([[20.0, 20.0, 20.0, 4.0], [100.0, 20.0, 20.0, 4.0]])]

    def share_of_b(weights) -> float:
        seed_everything(0)
        ds = PatchDataset([prep], [np.zeros((0, 4))], patch=16, samples_per_epoch=60,
                          pos_fraction=0.0, hard_negatives=hard, hard_fraction=1.0,
                          hard_weights=weights)  # fmt: skip
        return float(np.mean([0.4 < float(ds[i]["image"].max()) < 0.6 for i in range(60)]))

    assert share_of_b([np.array([1.0, 9.0])]) > 0.7 > 0.3 > share_of_b([np.array([9.0, 1.0])])
    with pytest.raises(Exception, match="one weight per hard negative"):
        PatchDataset([prep], [np.zeros((0, 4))], hard_negatives=hard, hard_fraction=0.5,
                     hard_weights=[np.array([1.0])])  # fmt: skip


def test_each_kind_of_hard_negative_gets_an_equal_share(tmp_path):
    from medimg.tasks.detect.simulate import read_hard_negative_kinds
    from medimg.tasks.detect.train import _hard_kind_weights

    rows = [f"{UIDS[0]},1,2,3,4,branch_point"] * 6 + [f"{UIDS[0]},1,2,3,4,vessel_stub"]
    rows += [f"{UIDS[1]},1,2,3,4,branch_point"] * 2 + [f"{UIDS[1]},1,2,3,4,pleural_plaque"]
    _write(tmp_path / "hard_negatives.csv", "seriesuid,coordX,coordY,coordZ,diameter_mm,kind",
           rows)  # fmt: skip
    kinds = read_hard_negative_kinds(tmp_path)
    assert kinds[UIDS[1]] == ["branch_point", "branch_point", "pleural_plaque"]
    w = _hard_kind_weights(tmp_path, UIDS, [7, 3])
    flat, names = np.concatenate(w), [k for u in UIDS for k in kinds[u]]
    share = {k: flat[[n == k for n in names]].sum() / flat.sum() for k in set(names)}
    assert share == pytest.approx({"branch_point": 1 / 3, "vessel_stub": 1 / 3,
                                   "pleural_plaque": 1 / 3})  # fmt: skip


def test_small_nodules_get_more_patches(tmp_path):
    from medimg.tasks.detect.train import DetectConfig, _nodule_weights

    _write(tmp_path / "annotations.csv",
           "seriesuid,coordX,coordY,coordZ,diameter_mm,nodule_type,margin",
           [f"{UIDS[0]},0,0,0,4.0,solid,smooth", f"{UIDS[0]},0,0,0,12.0,ground_glass,smooth",
            f"{UIDS[1]},0,0,0,5.9,ground_glass,smooth"])  # fmt: skip
    nod = [np.array([[0, 0, 0, 4.0], [0, 0, 0, 12.0]]), np.array([[0, 0, 0, 5.9]])]
    cfg = DetectConfig(type_weights={"ground_glass": 2.0}, small_weight=3.0)
    w = _nodule_weights(tmp_path, UIDS, nod, cfg)
    np.testing.assert_allclose(np.concatenate(w), [3.0, 2.0, 6.0])
    assert _nodule_weights(tmp_path, UIDS, nod, DetectConfig()) is None
    with pytest.raises(Exception, match="small_weight"):
        _nodule_weights(tmp_path, UIDS, nod, DetectConfig(small_weight=-1.0))


def test_preset_trains_stage_2_from_stage_1s_best_weights(tmp_path, monkeypatch):
    """A finished stage 1 is not trained again; stage 2 starts from its best checkpoint with
    the stage-2 recipe, and that recipe survives config.yaml."""
    import medimg.tasks.detect.train as tr
    from medimg.engine.config import from_yaml, to_yaml

    work = tmp_path / "run"
    (work / "data").mkdir(parents=True)
    (work / "data" / "annotations.csv").write_text("seriesuid\n")
    best = work / "model" / "best"
    best.mkdir(parents=True)
    (best / "model.safetensors").write_bytes(b"")
    calls = []
    monkeypatch.setattr(tr, "train_detector", lambda data, out, cfg, **kw: calls.append((out, cfg)))
    tr.train_preset(work, stages=2, progress=False)
    assert [out.name for out, _ in calls] == ["model", "model2"]  # stage 1 not finished yet
    (work / "model" / "train_time_s.txt").write_text("1\n")
    calls.clear()
    tr.train_preset(work, stages=1, progress=False)  # one stage: stage 1's run (resumed)
    assert [out.name for out, _ in calls] == ["model"]
    calls.clear()
    tr.train_preset(work, stages=2, progress=False)
    ((out, cfg),) = calls
    assert out == work / "model2" and cfg.init_weights == str(best / "model.safetensors")
    assert cfg.hard_per_kind and cfg.small_weight > 1
    assert cfg.type_weights["perifissural"] > tr.DEFAULT_PRESET["type_weights"]["perifissural"]
    assert cfg.train.max_steps == tr.STAGE2_PRESET["max_steps"]
    back = from_yaml(tr.DetectConfig, to_yaml(cfg, tmp_path / "c.yaml"))
    assert back.hard_per_kind and back.small_weight == cfg.small_weight
    assert tr.preset_config(1).small_weight == 1.0 and not tr.preset_config(1).hard_per_kind
    with pytest.raises(Exception, match="1 or 2 stages"):
        tr.train_preset(work, stages=3)


def test_detection_seg_stores_only_the_slices_with_a_finding(tmp_path, monkeypatch):
    import pydicom

    from medimg.io.api import save
    from medimg.io.image import Image
    from medimg.tasks.detect import predict as pr
    from medimg.tasks.detect.infer import Candidate

    hu = np.full((1, 24, 20, 30), -800.0, np.float32)
    hu[:, :, :3] = 40.0
    ct = Image(hu, np.diag([-2.0, -2.0, 3.0, 1.0]), modality="CT")
    save(ct, tmp_path / "series")
    monkeypatch.setattr(pr.Detector, "detect",
                        lambda self, image: [Candidate((-20.0, -16.0, 45.0), 8.0, 0.9)])  # fmt: skip
    written = pr.predict_path(tmp_path / "series", tmp_path / "out", figures=False,
                              seg_threshold=0.5)  # fmt: skip
    seg = pydicom.dcmread(next(p for p in written if p.name.endswith("_seg.dcm")))
    # an 8 mm sphere on 3 mm slices spans 2-3 of the 30 slices
    assert 1 <= int(seg.NumberOfFrames) <= 3
