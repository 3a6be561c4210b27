"""Tiny diagnosis trainings on tiny synthetic tasks: each supervision mode beats chance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medimg.engine import TrainConfig
from medimg.errors import InputError
from medimg.metrics.classification import roc_auc
from medimg.tasks.diagnose.calibration import fit_temperature, probabilities
from medimg.tasks.diagnose.data import CaseArrays
from medimg.tasks.diagnose.train import DiagnoseConfig, predict_logits, train_diagnosis


def _blobs(n: int, seed: int, size: int = 20, modalities: int = 1) -> CaseArrays:
    """Noise images; positives hold a bright 4x4 square (in every modality, at half contrast
    each when there are two, so both are needed for a clear call)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.3, 0.1, (n, modalities, size, size)).astype(np.float32)
    y = (np.arange(n) % 2).astype(np.float32)
    for i in np.nonzero(y)[0]:
        a, b = rng.integers(2, size - 6, 2)
        x[i, :, a : a + 4, b : b + 4] += 0.6 / modalities
    return CaseArrays(x, y, np.ones((n, modalities), bool), [f"c{i}" for i in range(n)])


def _cfg(**kw) -> DiagnoseConfig:
    steps = kw.pop("steps", 40)
    tcfg = TrainConfig(max_steps=steps, batch_size=16, lr=3e-3, val_every=steps,
                       checkpoint_every=steps, progress=False, device="cpu")  # fmt: skip
    kw.setdefault("input_size", [20, 20])
    return DiagnoseConfig(width=8, augment=0.0, train=tcfg, **kw)


def test_full_supervision_beats_chance_and_calibrates(tmp_path):
    train, val, test = _blobs(96, 0), _blobs(32, 1), _blobs(64, 2)
    res, summary = train_diagnosis(_cfg(), train, val, tmp_path / "run")
    assert (tmp_path / "run" / "model.yaml").is_file() and res.best_step is not None
    from medimg.tasks.diagnose.predict import Diagnoser

    model = Diagnoser(tmp_path / "run", device="cpu").model
    p = probabilities(predict_logits(model, test), "binary")
    assert roc_auc(test.y, p) > 0.95  # chance is 0.5; this run reaches 1.0
    assert summary["val_nll_calibrated"] <= summary["val_nll"] + 1e-9


def test_late_fusion_predicts_with_a_modality_missing(tmp_path):
    train, val = _blobs(96, 0, modalities=2), _blobs(32, 1, modalities=2)
    cfg = _cfg(modalities=["CT", "PT"], windows=[None, None], fusion="late")
    train_diagnosis(cfg, train, val, tmp_path / "run")
    from medimg.tasks.diagnose.predict import Diagnoser

    dx = Diagnoser(tmp_path / "run", device="cpu")
    test = _blobs(32, 3, modalities=2)
    test.present[:, 1] = False  # PET missing for every case
    p = probabilities(predict_logits(dx.model, test), "binary")
    assert np.isfinite(p).all() and roc_auc(test.y, p) > 0.75  # one modality at half contrast: 0.87


def test_mil_learns_from_case_labels_only(tmp_path):
    def bags(n, seed):
        rng = np.random.default_rng(seed)
        x = rng.normal(0.3, 0.1, (n, 1, 16, 16, 6)).astype(np.float32)
        y = (np.arange(n) % 2).astype(np.float32)
        inst = np.zeros((n, 6), int)
        for i in np.nonzero(y)[0]:
            k, a, b = rng.integers(0, 6), *rng.integers(2, 10, 2)
            x[i, 0, a : a + 4, b : b + 4, k] += 0.6
            inst[i, k] = 1
        return CaseArrays(x, y, np.ones((n, 1), bool), [f"b{i}" for i in range(n)],
                          instance_labels=inst)  # fmt: skip

    cfg = _cfg(
        supervision="mil", modalities=["CT"], windows=[None], input_size=[16, 16, 6], steps=50
    )
    cfg.train.batch_size = 8
    train_diagnosis(cfg, bags(64, 0), bags(16, 1), tmp_path / "run")
    from medimg.tasks.diagnose.predict import Diagnoser

    dx = Diagnoser(tmp_path / "run", device="cpu")
    test = bags(32, 2)
    p = probabilities(predict_logits(dx.model, test), "binary")
    assert roc_auc(test.y, p) > 0.9  # reaches 1.0
    with torch.no_grad():
        att = dx.model.attention(torch.from_numpy(test.x)).numpy()
    pos = test.y == 1
    hits = test.instance_labels[pos][np.arange(pos.sum()), att[pos].argmax(1)]
    assert hits.mean() > 1 / 6 + 0.2  # attention finds the lesion slice far above chance


def test_semi_supervised_runs_and_keeps_the_teacher(tmp_path):
    train, val = _blobs(16, 0), _blobs(32, 1)
    unl = _blobs(80, 4)
    _res, _ = train_diagnosis(_cfg(supervision="semi", steps=30), train, val, tmp_path / "run",
                             unlabelled=unl)  # fmt: skip
    from medimg.tasks.diagnose.predict import Diagnoser

    p = probabilities(
        predict_logits(Diagnoser(tmp_path / "run", device="cpu").model, val), "binary"
    )
    assert roc_auc(val.y, p) > 0.85  # 16 labels + 80 unlabelled: reaches 1.0
    with pytest.raises(InputError, match="needs unlabelled images"):
        train_diagnosis(_cfg(supervision="semi"), train, val, tmp_path / "x")


def test_semi_with_pseudo_labels_uses_confident_unlabelled_images(tmp_path):
    import json

    train, val, unl = _blobs(16, 0), _blobs(32, 1), _blobs(80, 4)
    cfg = _cfg(supervision="semi", steps=30, pseudo_threshold=0.8, consistency_rampup=10)
    train_diagnosis(cfg, train, val, tmp_path / "run", unlabelled=unl)
    from medimg.tasks.diagnose.predict import Diagnoser

    dx = Diagnoser(tmp_path / "run", device="cpu")
    assert dx.cfg.pseudo_threshold == 0.8
    p = probabilities(predict_logits(dx.model, val), "binary")
    assert roc_auc(val.y, p) > 0.85
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    kept = [r["pseudo_kept"] for r in rows if "pseudo_kept" in r]
    assert kept and max(kept) > 0  # the teacher became confident on some unlabelled images


def test_semi_mean_teacher_variant_runs(tmp_path):
    import json

    train, val, unl = _blobs(16, 0), _blobs(32, 1), _blobs(80, 4)
    cfg = _cfg(supervision="semi", semi_method="mean_teacher", steps=30)
    assert (cfg.consistency_weight, cfg.consistency_rampup, cfg.pseudo_threshold) == (10, 200, 0)
    train_diagnosis(cfg, train, val, tmp_path / "run", unlabelled=unl)
    from medimg.tasks.diagnose.predict import Diagnoser

    p = probabilities(predict_logits(Diagnoser(tmp_path / "run").model, val), "binary")
    assert roc_auc(val.y, p) > 0.85
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("cons" in r for r in rows) and not any("pseudo" in r for r in rows)


def test_semi_batches_hold_every_label_and_a_larger_unlabelled_batch():
    from medimg.engine.data import SeededSamples, batch_indices
    from medimg.tasks.diagnose.data import PairedSemiDataset

    lab, unl = _blobs(8, 0, size=10), _blobs(40, 1, size=10)
    lab.x[:] = np.arange(8, dtype=np.float32)[:, None, None, None]  # image value = its index
    ds = SeededSamples(PairedSemiDataset(lab, unl, augment=0.0, ratio=3, strong=True), 0)
    seen = []
    for step in range(10):  # the engine's epoch permutation over max(U, L) = 40 items
        items = [ds[(step, i)] for i in batch_indices(40, 4, 0, step)]
        assert all(
            it["xu_teacher"].shape == it["xu_student"].shape == (3, 1, 10, 10) for it in items
        )
        seen += [int(it["x"][0, 0, 0]) for it in items]
    assert sorted(seen) == sorted(list(range(8)) * 5)  # each label equally often, no repeats
    weak, strong = items[0]["xu_teacher"], items[0]["xu_student"]
    assert not torch.allclose(weak, strong)  # fixmatch: the student's view is perturbed
    with pytest.raises(InputError, match="unlabelled_ratio"):
        PairedSemiDataset(lab, unl, ratio=0)


def test_temperature_fixes_overconfidence():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    z = rng.normal(0, 1, 2000) + (2 * y - 1)  # N(+-1, 1): true log-odds 2z
    t = fit_temperature(4.0 * z[:, None], y, "binary")  # logits 2x too confident
    assert 1.7 < t < 2.3


def test_config_without_pool_loads_as_average_pooling(tmp_path):
    from medimg.engine.config import to_yaml
    from medimg.tasks.diagnose.models import build_classifier
    from medimg.tasks.diagnose.train import load_config

    to_yaml(_cfg(), tmp_path / "model.yaml")
    assert load_config(tmp_path / "model.yaml").pool == "max"  # the default now
    text = (tmp_path / "model.yaml").read_text()
    old = "".join(line for line in text.splitlines(True) if not line.startswith("pool:"))
    assert old != text
    (tmp_path / "old.yaml").write_text(old)
    assert load_config(tmp_path / "old.yaml").pool == "avg"  # trained before the option
    net = build_classifier(
        arch="resnet", spatial_dims=2, channels=1, modalities=1, num_outputs=1, width=8
    )
    assert isinstance(net.encoder.avgpool, torch.nn.AdaptiveMaxPool2d)
    with pytest.raises(InputError, match="pool must be one of"):
        build_classifier(
            arch="resnet", spatial_dims=2, channels=1, modalities=1, num_outputs=1, pool="mean"
        )
