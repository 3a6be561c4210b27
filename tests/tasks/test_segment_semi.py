"""Semi-supervised segmentation (``train --semi uamt|cps|fixmatch``) on tiny 16^3 balls: each
method's unlabelled term goes down when optimised, a short run with two labelled and six
unlabelled images beats the all-background baseline and loads in ``Segmenter``, the network
pair is checkpointed (an interrupted run resumes to the same weights) and bad input is refused
in one line."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from medimg.cli import main
from medimg.datasets.msd import check_dataset, open_dataset
from medimg.engine import StepContext, load_weights, read_metadata
from medimg.errors import InputError
from medimg.io.api import load
from medimg.tasks.segment import semi
from medimg.tasks.segment.fingerprint import fingerprint_from_cases
from medimg.tasks.segment.models import build_network
from medimg.tasks.segment.plan import make_plan
from medimg.tasks.segment.predict import Segmenter
from medimg.tasks.segment.semi_data import open_partly_labelled, unlabelled_files
from medimg.tasks.segment.train import dice_per_class, train_segmentation

SHAPE = (16, 16, 16)


def ball_case(rng: np.random.Generator, shape=SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """A bright ball (label 1) of random centre and radius in Gaussian noise."""
    g = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"))
    c, r = rng.uniform(5, 11, 3), rng.uniform(3, 5)
    lab = (((g - c[:, None, None, None]) ** 2).sum(0) < r * r).astype(np.uint8)
    return (lab + rng.normal(0, 0.4, shape)).astype(np.float32), lab


def _save(array: np.ndarray, path: Path) -> None:
    nib.save(nib.Nifti1Image(array, np.eye(4)), path)


def ball_set(root: Path, n_labelled: int = 2, n_unlabelled: int = 6, seed: int = 0) -> Path:
    """An MSD set: ``imagesTr``/``labelsTr``, ``imagesUnlabelled`` and one ``imagesTs`` case."""
    rng = np.random.default_rng(seed)
    for d in ("imagesTr", "labelsTr", "imagesUnlabelled", "imagesTs", "labelsTs"):
        (root / d).mkdir(parents=True, exist_ok=True)
    meta = {"name": "balls", "labels": {"0": "background", "1": "ball"},
            "channel_names": {"0": "MR"}, "file_ending": ".nii.gz"}  # fmt: skip
    (root / "dataset.json").write_text(json.dumps(meta))
    for i in range(n_labelled + n_unlabelled + 1):
        img, lab = ball_case(rng)
        if i < n_labelled:
            _save(img, root / "imagesTr" / f"b_{i:03d}_0000.nii.gz")
            _save(lab, root / "labelsTr" / f"b_{i:03d}.nii.gz")
        elif i < n_labelled + n_unlabelled:
            _save(img, root / "imagesUnlabelled" / f"u_{i:03d}_0000.nii.gz")
        else:
            _save(img, root / "imagesTs" / "t_000_0000.nii.gz")
            _save(lab, root / "labelsTs" / "t_000.nii.gz")
    return root


def tiny_plan(root: Path, max_steps: int = 24):
    ds = open_dataset(root)
    plan = make_plan(fingerprint_from_cases(ds, check_dataset(ds)), memory_budget_mb=16,
                     base_features=4, max_steps=max_steps)  # fmt: skip
    plan.augment, plan.train.lr = False, 1e-2
    return plan


@pytest.fixture(scope="module")
def balls(tmp_path_factory) -> Path:
    return ball_set(tmp_path_factory.mktemp("semi") / "balls")


def _ctx(step: int) -> StepContext:
    return StepContext(step, 0, torch.Generator().manual_seed(step), torch.device("cpu"), 0, 1)


@pytest.mark.parametrize("method", ["uamt", "cps"])
def test_unlabelled_term_goes_down_when_optimised(balls, method):
    """The consistency (UA-MT) / cross pseudo-label (CPS) term alone, on a fixed batch."""
    plan = tiny_plan(balls, max_steps=2)  # ramp-up done after one step
    torch.manual_seed(0)
    net = build_network(plan)
    model, *_ = semi.build_semi(method, net, _patches(balls, plan), [[_unlabelled(balls)]],
                                "MR", plan, weight=1.0,
                                sup_loss=lambda out, y: out.sum() * 0.0)  # fmt: skip
    step = semi.make_semi_step(method, lambda out, y: out.sum() * 0.0, plan, 1.0)
    rng = np.random.default_rng(1)
    u = torch.from_numpy(np.stack([ball_case(rng)[0][None] for _ in range(2)]))
    batch = {"image": u, "label": torch.zeros(2, 1, *SHAPE, dtype=torch.long), "u_image": u}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    terms = []
    for i in range(8):
        out = step(model, batch, _ctx(i + 1))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        terms.append(float(out["unsup"]))
    assert terms[-1] < 0.7 * terms[0], terms


def test_fixmatch_term_goes_down_and_counts_only_confident_voxels():
    torch.manual_seed(0)
    logits = torch.zeros(2, 2, 8, 8, 8, requires_grad=True)
    target = torch.zeros(2, 2, 8, 8, 8)
    target[:, 1, :4], target[:, 0, 4:] = 0.95, 0.95
    target[:, 0, :4], target[:, 1, 4:] = 0.05, 0.05
    target[:, :, :, :2] = 0.5  # unsure voxels: no pseudo-label
    opt = torch.optim.Adam([logits], lr=0.5)
    terms = []
    for _ in range(10):
        loss, frac = semi.fixmatch_loss(logits, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        terms.append(float(loss.detach()))
    assert abs(float(frac) - 0.75) < 1e-6 and terms[-1] < 0.5 * terms[0], terms
    assert float(semi.fixmatch_loss(logits.detach(), torch.full_like(target, 0.5))[0]) == 0.0


def _patches(root: Path, plan):
    from medimg.tasks.segment.data import PatchDataset

    img = np.zeros((1, *SHAPE), np.float32)
    return PatchDataset([img], [np.zeros(SHAPE, np.uint8)], plan, samples_per_epoch=2)


def _unlabelled(root: Path) -> Path:
    return sorted((root / "imagesUnlabelled").iterdir())[0]


def _test_dice(root: Path, model: Path) -> float:
    image = load(root / "imagesTs" / "t_000_0000.nii.gz", modality="MR")
    gt = load(root / "labelsTs" / "t_000.nii.gz", is_label=True).array[0]
    pred = Segmenter(model, device="cpu").segment(image, mirror=False).array[0]
    return dice_per_class(pred, gt, 2)[0]


@pytest.mark.parametrize("method", ["uamt", "cps", "fixmatch"])
def test_short_run_beats_background_and_ships_one_network(balls, tmp_path, method):
    out = tmp_path / method
    res = train_segmentation(balls, out, fold=-1, plan=tiny_plan(balls, max_steps=16), progress=False,
                             device="cpu", samples_per_epoch=8, semi=method)  # fmt: skip
    assert res.last_step == 16
    log = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("unsup" in r for r in log if r["kind"] == "train")
    # all background scores Dice 0 on the ball; two labelled cases and 16 steps reach > 0.5
    assert _test_dice(balls, out) > 0.5  # 0.72-0.79 seen
    shipped = load_file(str(out / "model.safetensors")) if method != "fixmatch" else {}
    ckpt = load_file(str(out / "last" / "model.safetensors"))
    if method == "fixmatch":  # one network: the checkpoint is the model
        assert not (out / "model.safetensors").exists()
        assert not any(k.startswith("other.") for k in ckpt)
    else:  # the checkpoint holds the teacher / second network; the model folder the first
        assert any(k.startswith("other.") for k in ckpt) and any(k.startswith("net.") for k in ckpt)
        assert not any(k.startswith(("net.", "other.")) for k in shipped)
        load_weights(build_network(tiny_plan(balls)), out / "model.safetensors")


def test_interrupted_mean_teacher_resumes_to_the_same_weights(balls, tmp_path, monkeypatch):
    plan = tiny_plan(balls, max_steps=8)
    plan.train.checkpoint_every = 4
    kw = {"fold": -1, "plan": plan, "progress": False, "device": "cpu", "samples_per_epoch": 8,
          "semi": "uamt"}  # fmt: skip
    train_segmentation(balls, tmp_path / "whole", **kw)
    real = semi.rampup

    def crash(step: int, length: int) -> float:
        if step == 6:
            raise KeyboardInterrupt
        return real(step, length)

    monkeypatch.setattr(semi, "rampup", crash)
    with pytest.raises(KeyboardInterrupt):
        train_segmentation(balls, tmp_path / "cut", **kw)
    monkeypatch.setattr(semi, "rampup", real)
    assert read_metadata(tmp_path / "cut" / "last")["step"] == "4"  # interrupted after 4
    res = train_segmentation(balls, tmp_path / "cut", resume=True, **kw)
    assert res.last_step == 8
    a = load_file(str(tmp_path / "whole" / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "last" / "model.safetensors"))
    teacher = [k for k in a if k.startswith("other.")]
    assert teacher and all(torch.equal(a[k], b[k]) for k in a)


def test_unlabelled_sources_and_partly_labelled_msd(balls, tmp_path):
    import shutil

    root = tmp_path / "part"
    shutil.copytree(balls, root)
    shutil.rmtree(root / "imagesUnlabelled")
    shutil.copy(_unlabelled(balls), root / "imagesTr" / "x_009_0000.nii.gz")  # no label
    ds, extra = open_partly_labelled(root)
    assert sorted(ds.case_ids) == ["b_000", "b_001"] and [p.name for g in extra for p in g] == [
        "x_009_0000.nii.gz"]  # fmt: skip
    assert len(unlabelled_files(root, None, extra)) == 1
    assert len(unlabelled_files(root, balls / "imagesUnlabelled", extra)) == 6
    with pytest.raises(InputError, match="--semi needs unlabelled images"):
        unlabelled_files(root, None, [])
    numbered = tmp_path / "numbered"  # scan_0001, scan_0002: two scans, not two channels
    numbered.mkdir()
    for name in ("scan_0001.nii.gz", "scan_0002.nii.gz"):
        shutil.copy(_unlabelled(balls), numbered / name)
    assert [len(g) for g in unlabelled_files(root, numbered, [])] == [1, 1]


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own refusals
        return int(exc.code)


def test_cli_one_line_errors(balls, tmp_path, capsys):
    import shutil

    bare = tmp_path / "bare"  # labelled cases only
    shutil.copytree(balls, bare)
    shutil.rmtree(bare / "imagesUnlabelled")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("not an image")
    two = tmp_path / "two"  # two-channel images for a one-channel plan
    two.mkdir()
    img = ball_case(np.random.default_rng(3))[0]
    _save(img, two / "c_000_0000.nii.gz")
    _save(img, two / "c_000_0001.nii.gz")
    cases = [
        ([str(bare), "--semi", "uamt"], "--semi needs unlabelled images"),
        ([str(balls), "--semi", "cps", "--unlabelled", str(tmp_path / "junk")],
         "no readable image"),
        ([str(balls), "--semi", "fixmatch", "--unlabelled", str(two)], "channel"),
        ([str(balls), "--unlabelled", str(two)], "add --semi"),
        ([str(balls), "--few-shot"], "add --init"),
        ([str(balls), "--add-labels", "kidney"], "add --init"),
        (["--preset", "default", "--semi", "uamt"], "drop --preset"),
    ]  # fmt: skip
    for argv, text in cases:
        code = _run(["segment", "train", *argv, "--out", str(tmp_path / "o"), "--quiet",
                     "--max-steps", "2", "--device", "cpu"])  # fmt: skip
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("error:"), (argv, err)
        assert text in err[0], (argv, err)
    assert not (tmp_path / "o").exists()
