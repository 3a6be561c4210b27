"""Diagnosis figures of issue 8 on held-out phantoms, at a size set on the command line.

Parts (``--only``, default all):

- ``xray``: supervised AUC, ECE before/after temperature scaling, peak-in-box rate over true
  positives (X-ray nodules, 24-40 mm) of Grad-CAM and Grad-CAM++ (``cam_layer``, layer2) and
  of LayerCAM (``layercam_layer``, layer1).
- ``semi``: FixMatch (or mean teacher, ``--semi-method``) with 10% labels vs the same
  network on the labelled 10% only (same steps, lr, validation-picked best step). With 80
  labels a single run moves by several hundredths of AUC with ``--seed`` (sample order and
  augmentation), so compare several seeds.
- ``fusion``: CT-only / PET-only vs early, late and intermediate fusion (CT+PET slices whose
  classes each modality alone separates only partly).
- ``mil``: attention MIL on case labels vs an instance-supervised slice classifier (case
  score = max slice probability) and the attention hit rate on the lesion slices.

Every model is trained from scratch on one CPU thread; the figures and the process CPU time
of each part are printed as JSON.

    .venv/bin/python bench/bench_diagnose.py            # all parts, ~23 min CPU
    .venv/bin/python bench/bench_diagnose.py --only mil --mil-steps 1000
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

PARTS = ("xray", "semi", "fusion", "mil")


def _fit(cfg, train, val, name, unlabelled=None):
    _res, summary = train_diagnosis(cfg, train, val, f"runs/bench_diagnose/{name}",
                                   unlabelled=unlabelled, overwrite=True, resume=False)  # fmt: skip
    from medimg.tasks.diagnose.predict import Diagnoser

    return Diagnoser(f"runs/bench_diagnose/{name}", device="cpu"), summary


def _cfg(args, steps=None, batch=None, lr=None, **kw) -> DiagnoseConfig:
    steps = steps or args.steps
    t = TrainConfig(max_steps=steps, batch_size=batch or args.batch, lr=lr or args.lr,
                    lr_schedule="cosine", val_every=max(steps // 10, 1), checkpoint_every=steps,
                    progress=False, device="cpu", seed=args.seed)  # fmt: skip
    return DiagnoseConfig(width=args.width, pool=args.pool, train=t, **kw)


def _auc(dx, data: CaseArrays) -> tuple[float, np.ndarray, np.ndarray]:
    logits = predict_logits(dx.model, data)
    return roc_auc(data.y, probabilities(logits, "binary")), logits, data.y


def _sets(kind: str, n_train: int, n_val: int, n_test: int, seeds=(11, 12, 13), **params) -> list:
    return [from_phantoms(make_cases(kind, n, seed=s, **params))
            for n, s in ((n_train, seeds[0]), (n_val, seeds[1]), (n_test, seeds[2]))]  # fmt: skip


def part_xray(args, out: dict) -> None:
    if args.model:  # score a trained model (e.g. the shipped one) on the same test set
        from medimg.tasks.diagnose.predict import Diagnoser

        te = from_phantoms(make_cases("xray", args.n_test, seed=13))  # the test set of _sets
        dx = Diagnoser(None if args.model == "default" else args.model, device="cpu")
        out["model"] = str(dx.folder)
    else:
        tr, va, te = _sets("xray", args.n_train, args.n_val, args.n_test)
        size = list(tr.x.shape[2:])
        dx, _ = _fit(_cfg(args, modalities=["DX"], windows=[None], input_size=size), tr, va,
                     "full")  # fmt: skip
    auc, logits, y = _auc(dx, te)
    out["xray_full_auc"] = auc
    out["temperature"] = dx.cfg.temperature
    out["ece_raw"] = expected_calibration_error(probabilities(logits, "binary"), y)
    out["ece_temperature"] = expected_calibration_error(
        probabilities(logits, "binary", dx.cfg.temperature), y
    )
    from medimg.explain import saliency_map

    tp = np.nonzero((probabilities(logits, "binary") >= 0.5) & (y == 1))[0]
    cams = {"gradcam": ("gradcam", dx.cfg.cam_layer),  # the figure's method, on layer2
            "gradcampp": ("gradcam++", dx.cfg.cam_layer),
            "layercam": ("layercam", dx.cfg.layercam_layer)}  # predict's default, on layer1  # fmt: skip
    for key, (method, layer) in cams.items():
        hits = []
        for i in tp:
            heat = saliency_map(dx.model, torch.from_numpy(te.x[i : i + 1]), method=method,
                                target_layer=layer)[0]  # fmt: skip
            pi, pj = np.unravel_index(np.argmax(heat), heat.shape)
            b = te.boxes[i][0]
            hits.append(b[0] <= pi < b[2] and b[1] <= pj < b[3])
        out[f"{key}_in_box_rate"] = float(np.mean(hits)) if hits else float("nan")
    out["cam_true_positives"] = len(tp)


def part_semi(args, out: dict) -> None:
    n = args.semi_n_train
    radius = {} if args.semi_radius_mm is None else {"radius_mm": tuple(args.semi_radius_mm)}
    tr, va, te = _sets("xray", n, args.n_val, args.n_test, seeds=(31, 32, 33), **radius)
    size = list(tr.x.shape[2:])
    rng = np.random.default_rng(0)
    lab = np.concatenate(
        [rng.permutation(np.nonzero(tr.y == c)[0])[: max(1, n // 20)] for c in (0, 1)]
    )  # fmt: skip  10% labelled, stratified
    unl = np.setdiff1d(np.arange(n), lab)
    out["semi_labelled"], out["semi_unlabelled"] = len(lab), len(unl)
    steps = args.semi_steps or args.steps
    base = _cfg(args, steps=steps, modalities=["DX"], windows=[None], input_size=size)
    dx, _ = _fit(base, tr.subset(lab), va, "labelled_only")
    out["semi_labelled_only_auc"] = _auc(dx, te)[0]
    rampup = None if args.semi_rampup is None else int(steps * args.semi_rampup)
    semi = _cfg(args, steps=steps, supervision="semi", modalities=["DX"], windows=[None],
                input_size=size, semi_method=args.semi_method, unlabelled_ratio=args.semi_ratio,
                consistency_rampup=rampup, consistency_weight=args.semi_consistency,
                pseudo_threshold=args.semi_pseudo)  # fmt: skip
    dx, _ = _fit(semi, tr.subset(lab), va, f"semi_{args.semi_method}", unlabelled=tr.subset(unl))
    out[f"semi_{args.semi_method}_auc"] = _auc(dx, te)[0]
    out["semi_gain"] = out[f"semi_{args.semi_method}_auc"] - out["semi_labelled_only_auc"]


def part_fusion(args, out: dict) -> None:
    tr, va, te = _sets("ctpet", args.fusion_n_train, args.n_val, args.n_test)
    size = list(tr.x.shape[2:])
    steps = args.fusion_steps or args.steps
    for m, name in ((0, "CT"), (1, "PT")):
        cfg = _cfg(args, steps=steps, modalities=[name], windows=[None], input_size=size)
        sel = [d.select_modalities([m]) for d in (tr, va, te)]
        dx, _ = _fit(cfg, sel[0], sel[1], f"only_{name}")
        out[f"fusion_{name}_only_auc"] = _auc(dx, sel[2])[0]
    for fusion in ("early", "late", "intermediate"):
        cfg = _cfg(args, steps=steps, modalities=["CT", "PT"], windows=[None, None],
                   input_size=size, fusion=fusion)  # fmt: skip
        dx, _ = _fit(cfg, tr, va, f"fusion_{fusion}")
        out[f"fusion_{fusion}_auc"] = _auc(dx, te)[0]


def part_mil(args, out: dict) -> None:
    n = args.mil_n_train
    mil = _sets("ct3d", n, max(args.n_val // 2, 2), args.n_test // 2, seeds=(21, 22, 23))
    shape = list(mil[0].x.shape[2:])
    steps = args.mil_steps or args.steps
    cfg = _cfg(args, steps=steps, batch=8, supervision="mil", modalities=["CT"], windows=[None],
               input_size=shape)  # fmt: skip
    dx, _ = _fit(cfg, mil[0], mil[1], "mil")
    out["mil_auc"] = _auc(dx, mil[2])[0]
    with torch.no_grad():
        att = dx.model.attention(torch.from_numpy(mil[2].x)).numpy()
    pos = mil[2].y == 1
    out["mil_attention_hit_rate"] = float(
        mil[2].instance_labels[pos][np.arange(pos.sum()), att[pos].argmax(1)].mean()
    )
    out["mil_lesion_slice_fraction"] = float(mil[2].instance_labels[pos].mean())  # chance

    def slices(d: CaseArrays) -> CaseArrays:
        x = d.x.transpose(0, 4, 1, 2, 3).reshape(-1, *d.x.shape[1:4])
        k = x.shape[0]
        return CaseArrays(x, d.instance_labels.reshape(-1).astype(np.float32),
                          np.ones((k, 1), bool), [str(i) for i in range(k)])  # fmt: skip

    # same images seen per step: a batch of 8 bags is 8 x Z slices
    cfg = _cfg(args, steps=steps, batch=8 * shape[2], modalities=["CT"], windows=[None],
               input_size=shape[:2])  # fmt: skip
    dx, _ = _fit(cfg, slices(mil[0]), slices(mil[1]), "instance")
    p = probabilities(predict_logits(dx.model, slices(mil[2])), "binary").reshape(len(mil[2]), -1)
    out["instance_supervised_auc"] = roc_auc(mil[2].y, p.max(axis=1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    ap.add_argument("--n-train", type=int, default=2400, help="X-ray training cases")
    ap.add_argument("--model", help="xray: score this model folder ('default': the shipped one)"
                    " instead of training one")  # fmt: skip
    ap.add_argument("--n-val", type=int, default=150)
    ap.add_argument("--n-test", type=int, default=400)
    ap.add_argument("--semi-n-train", type=int, default=800, help="10%% of them labelled")
    ap.add_argument("--fusion-n-train", type=int, default=2400)
    ap.add_argument("--mil-n-train", type=int, default=600)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--semi-steps", type=int)
    ap.add_argument("--fusion-steps", type=int)
    ap.add_argument("--semi-method", choices=("fixmatch", "mean_teacher"), default="fixmatch")
    ap.add_argument("--semi-ratio", type=int, default=2, help="unlabelled per labelled image")
    ap.add_argument("--semi-radius-mm", type=float, nargs=2,
                    help="semi: nodule radius range (default: the phantom's, 12 20)")  # fmt: skip
    ap.add_argument("--semi-consistency", type=float,
                    help="unlabelled loss weight (default: the method's, 1 / 10)")  # fmt: skip
    ap.add_argument("--semi-rampup", type=float,
                    help="share of steps to full weight (default: the method's, 0 / 200 steps)")  # fmt: skip
    ap.add_argument("--semi-pseudo", type=float,
                    help="confidence for hard pseudo-labels (default: fixmatch 0.95, mt 0 = off)")  # fmt: skip
    ap.add_argument(
        "--mil-steps", type=int, default=2000, help="MIL learns late: ~700 steps at chance"
    )
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--pool", choices=("max", "avg"), default="max")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out: dict[str, float] = {}
    for part in args.only:
        t0 = time.process_time()
        globals()[f"part_{part}"](args, out)
        out[f"{part}_cpu_s"] = time.process_time() - t0
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                          for k, v in out.items()}, indent=1), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
