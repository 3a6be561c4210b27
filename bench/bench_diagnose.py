"""Diagnosis figures of issue 8 on held-out phantoms, at a size set on the command line.

Prints: supervised AUC, ECE before/after temperature scaling, Grad-CAM peak-in-box rate over
true positives (X-ray nodules); semi-supervised (10% labels, mean teacher) vs labelled-only;
CT-only / PET-only vs early and late fusion; attention MIL vs an instance-supervised slice
classifier (case score = max slice probability) and the attention hit rate.

    .venv/bin/python bench/bench_diagnose.py --n-train 400 --steps 150 --width 8
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from medimg.engine import TrainConfig
from medimg.metrics.classification import expected_calibration_error, roc_auc
from medimg.phantoms.diagnosis import make_cases
from medimg.tasks.diagnose.calibration import probabilities
from medimg.tasks.diagnose.data import CaseArrays, from_phantoms
from medimg.tasks.diagnose.train import DiagnoseConfig, predict_logits, train_diagnosis


def _fit(cfg, train, val, name, unlabelled=None):
    _res, summary = train_diagnosis(cfg, train, val, f"runs/bench_diagnose/{name}",
                                   unlabelled=unlabelled, overwrite=True, resume=False)  # fmt: skip
    from medimg.tasks.diagnose.predict import Diagnoser

    return Diagnoser(f"runs/bench_diagnose/{name}", device="cpu"), summary


def _cfg(args, **kw) -> DiagnoseConfig:
    t = TrainConfig(max_steps=args.steps, batch_size=args.batch, lr=2e-3, lr_schedule="cosine",
                    val_every=max(args.steps // 5, 1), checkpoint_every=args.steps, progress=False,
                    device="cpu")  # fmt: skip
    return DiagnoseConfig(width=args.width, train=t, **kw)


def _auc(dx, data: CaseArrays) -> tuple[float, np.ndarray, np.ndarray]:
    logits = predict_logits(dx.model, data)
    return roc_auc(data.y, probabilities(logits, "binary")), logits, data.y


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-train", type=int, default=400)
    ap.add_argument("--n-test", type=int, default=300)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--width", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    sets = {k: [from_phantoms(make_cases(k, n, seed=s)) for n, s in
                ((args.n_train, 11), (args.n_test // 2, 12), (args.n_test, 13))]
            for k in ("xray", "ctpet")}  # fmt: skip
    tr, va, te = sets["xray"]
    size = list(tr.x.shape[2:])
    dx, _ = _fit(_cfg(args, modalities=["DX"], windows=[None], input_size=size), tr, va, "full")
    auc, logits, y = _auc(dx, te)
    out["xray_full_auc"] = auc
    out["ece_raw"] = expected_calibration_error(probabilities(logits, "binary"), y)
    out["ece_temperature"] = expected_calibration_error(
        probabilities(logits, "binary", dx.cfg.temperature), y
    )
    from medimg.explain import saliency_map

    logit_pos = (probabilities(logits, "binary") >= 0.5) & (y == 1)
    idx = np.nonzero(logit_pos)[0]
    cases = make_cases("xray", args.n_test, seed=13)
    hits = []
    for i in idx:
        heat = saliency_map(dx.model, torch.from_numpy(te.x[i : i + 1]), method="gradcam",
                            target_layer=dx.cfg.cam_layer)[0]  # fmt: skip
        pi, pj = np.unravel_index(np.argmax(heat), heat.shape)
        b = cases[i].boxes[0]
        hits.append(b[0] <= pi < b[2] and b[1] <= pj < b[3])
    out["gradcam_in_box_rate"] = float(np.mean(hits)) if hits else float("nan")
    out["gradcam_true_positives"] = len(hits)

    rng = np.random.default_rng(0)
    lab = np.concatenate([rng.permutation(np.nonzero(tr.y == c)[0])[: max(1, len(tr) // 20)]
                          for c in (0, 1)])  # fmt: skip
    unl = np.setdiff1d(np.arange(len(tr)), lab)
    base = _cfg(args, modalities=["DX"], windows=[None], input_size=size)
    dx, _ = _fit(base, tr.subset(lab), va, "labelled_only")
    out["semi_labelled_only_auc"] = _auc(dx, te)[0]
    semi = _cfg(args, supervision="semi", modalities=["DX"], windows=[None], input_size=size)
    dx, _ = _fit(semi, tr.subset(lab), va, "mean_teacher", unlabelled=tr.subset(unl))
    out["semi_mean_teacher_auc"] = _auc(dx, te)[0]

    tr, va, te = sets["ctpet"]
    for m, name in ((0, "CT"), (1, "PT")):
        cfg = _cfg(args, modalities=[name], windows=[None], input_size=size)
        sel = [d.select_modalities([m]) for d in (tr, va, te)]
        dx, _ = _fit(cfg, sel[0], sel[1], f"only_{name}")
        out[f"fusion_{name}_only_auc"] = _auc(dx, sel[2])[0]
    for fusion in ("early", "late"):
        cfg = _cfg(
            args, modalities=["CT", "PT"], windows=[None, None], input_size=size, fusion=fusion
        )
        dx, _ = _fit(cfg, tr, va, f"fusion_{fusion}")
        out[f"fusion_{fusion}_auc"] = _auc(dx, te)[0]

    mil = [from_phantoms(make_cases("ct3d", n, seed=s)) for n, s in
           ((args.n_train // 2, 21), (args.n_test // 4, 22), (args.n_test // 2, 23))]  # fmt: skip
    shape = list(mil[0].x.shape[2:])
    cfg = _cfg(args, supervision="mil", modalities=["CT"], windows=[None], input_size=shape)
    cfg.train.batch_size = 8
    dx, _ = _fit(cfg, mil[0], mil[1], "mil")
    out["mil_auc"] = _auc(dx, mil[2])[0]
    with torch.no_grad():
        att = dx.model.attention(torch.from_numpy(mil[2].x)).numpy()
    pos = mil[2].y == 1
    out["mil_attention_hit_rate"] = float(
        mil[2].instance_labels[pos][np.arange(pos.sum()), att[pos].argmax(1)].mean()
    )

    def slices(d: CaseArrays) -> CaseArrays:
        x = d.x.transpose(0, 4, 1, 2, 3).reshape(-1, *d.x.shape[1:4])
        n = x.shape[0]
        return CaseArrays(x, d.instance_labels.reshape(-1).astype(np.float32),
                          np.ones((n, 1), bool), [str(i) for i in range(n)])  # fmt: skip

    cfg = _cfg(args, modalities=["CT"], windows=[None], input_size=shape[:2])
    dx, _ = _fit(cfg, slices(mil[0]), slices(mil[1]), "instance")
    p = probabilities(predict_logits(dx.model, slices(mil[2])), "binary").reshape(len(mil[2]), -1)
    out["instance_supervised_auc"] = roc_auc(mil[2].y, p.max(axis=1))
    out["seconds"] = time.perf_counter() - t0
    print(
        json.dumps(
            {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}, indent=1
        )
    )


if __name__ == "__main__":
    main()
