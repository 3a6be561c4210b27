"""Self-supervised pre-training (``segment pretrain``) and fine-tuning from it (``--init``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from medimg.engine import TrainConfig
from medimg.errors import InputError
from medimg.io.api import save
from medimg.io.image import Image
from medimg.tasks.segment import train as train_module
from medimg.tasks.segment.models import build_network, is_output_layer
from medimg.tasks.segment.plan import Normalization, SegPlan, load_plan
from medimg.tasks.segment.pretrain import corrupt, pretrain_encoder

#: the tiny set's structures: (name, HU)
BLOBS = {"a": 200.0, "b": -90.0}
SIZE = 16


def blob_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A 16^3 "CT" (air corners, a 40 HU body, noise) with a bright cube ``a`` in the left half
    and a dark ball ``b`` in the right half; labels 1 = a, 2 = b."""
    rng = np.random.default_rng(seed)
    g = np.indices((SIZE,) * 3).astype(np.float32)
    body = ((g - (SIZE - 1) / 2) ** 2).sum(0) < (SIZE / 2 + 1) ** 2
    lab = np.zeros((SIZE,) * 3, np.uint8)
    x, y, z = rng.integers(1, 3), rng.integers(3, 7), rng.integers(3, 7)
    s = int(rng.integers(4, 6))
    lab[x : x + s, y : y + s, z : z + s] = 1
    c = np.array([rng.integers(11, 13), rng.integers(6, 10), rng.integers(6, 10)], np.float32)
    lab[((g - c[:, None, None, None]) ** 2).sum(0) <= rng.uniform(2.0, 3.2) ** 2] = 2
    img = np.where(body, 40.0, -1000.0) + rng.normal(0, 15, lab.shape)
    for k, hu in enumerate(BLOBS.values(), start=1):
        img[lab == k] = hu + rng.normal(0, 15, int((lab == k).sum()))
    return img.astype(np.float32), lab


def write_blob_set(root: Path, seeds: range, names: list[str] | None, *, test: range = range(0),
                   unlabelled: range = range(0)) -> Path:  # fmt: skip
    """An MSD set of :func:`blob_case`: ``imagesTr`` (labelled for ``names`` only, renumbered
    1..; ``None``: no labels at all), ``imagesTs``/``labelsTs`` (every structure), and
    ``imagesUnlabelled``."""
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    groups = [("Tr", seeds), ("Ts", test), ("Unlabelled", unlabelled)]
    for split, group in groups:
        for seed in group:
            img, lab = blob_case(seed)
            (root / f"images{split}").mkdir(parents=True, exist_ok=True)
            save(
                Image(img[None], affine, modality="CT"),
                root / f"images{split}/c{seed:03d}_0000.nii.gz",
            )
            keep = list(BLOBS) if split == "Ts" else (names or [])
            if split == "Unlabelled" or (split == "Tr" and names is None):
                continue
            lut = np.zeros(len(BLOBS) + 1, np.uint8)
            for i, n in enumerate(keep, start=1):
                lut[list(BLOBS).index(n) + 1] = i
            (root / f"labels{split}").mkdir(exist_ok=True)
            save(Image(lut[lab][None], affine, modality="SEG", is_label=True),
                 root / f"labels{split}/c{seed:03d}.nii.gz")  # fmt: skip
    labels = {"background": 0, **{n: i for i, n in enumerate(names or list(BLOBS), start=1)}}
    meta = {"name": "Blobs", "channel_names": {"0": "CT"}, "labels": labels,
            "file_ending": ".nii.gz"}  # fmt: skip
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def tiny_plan(labels: list[str], steps: int = 30) -> SegPlan:
    """A 16^3 DynUNet of widths 4-8-16 without augmentation: a fast plan for the blob sets."""
    train = TrainConfig(max_steps=steps, batch_size=2, lr=1e-2, optimizer="adamw",
                        lr_schedule="poly", val_every=steps, checkpoint_every=steps,
                        val_metric="dice", val_mode="max", grad_clip=12.0, log_every=5)  # fmt: skip
    return SegPlan(dataset="Blobs", label_names=["background", *labels], patch_size=[SIZE] * 3,
                   median_shape=[SIZE] * 3, pool_strides=[[2, 2, 2], [2, 2, 2]],
                   conv_kernels=[[3, 3, 3]] * 3, filters=[4, 8, 16], deep_supervision_heads=1,
                   normalization=[Normalization("ct", -200.0, 400.0, 40.0, 100.0)],
                   augment=False, folds=2, train=train)  # fmt: skip


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pretrain")
    data = write_blob_set(tmp / "unlab", range(0, 4), None, test=range(4, 6),
                          unlabelled=range(6, 10))  # fmt: skip
    torch.manual_seed(0)
    res = pretrain_encoder(data, tmp / "enc", max_steps=30, device="cpu", progress=False,
                           samples_per_epoch=8, plan=tiny_plan(["x"]))  # fmt: skip
    return tmp, res


def _log(folder: Path) -> list[dict]:
    return [json.loads(s) for s in (folder / "metrics.jsonl").read_text().splitlines()]


def test_masked_image_modelling_learns(pretrained):
    tmp, _ = pretrained
    enc = tmp / "enc"
    assert {"plan.yaml", "model.safetensors", "PRETRAINED.md"} <= {p.name for p in enc.iterdir()}
    assert "not a segmenter" in (enc / "PRETRAINED.md").read_text()
    config = (enc / "config.yaml").read_text()
    assert "images: 10" in config  # imagesTr + imagesTs + imagesUnlabelled
    log = _log(enc)
    train = [r["loss"] for r in log if r.get("kind") == "train"]
    val = [r for r in log if "restore_l1" in r][-1]
    assert train[-1] < 0.7 * train[0], train
    assert val["restore_l1"] < 0.8 * val["identity_l1"], val  # beats copying the input
    plan = load_plan(enc)  # a valid supervised plan: dummy labels, Dice validation to inherit
    assert plan.num_classes == 2 and plan.train.val_metric == "dice"


def test_corruption_masks_and_shuffles_blocks():
    x = torch.arange(2 * 16 * 16 * 16, dtype=torch.float32).reshape(2, 1, 16, 16, 16)
    gen = torch.Generator().manual_seed(0)
    y, mask = corrupt(x, lambda *s: torch.rand(s, generator=gen))
    frac = float(mask.mean())
    assert 0.15 < frac < 0.7, frac  # about MASK_RATIO of the blocks
    changed = (y != x).float()
    assert float((changed * mask).sum() / mask.sum()) > 0.9  # corrupted blocks differ
    # outside the blocks only the monotonic intensity curve acts: the order of voxels is kept
    out = mask[0, 0] == 0
    a, b = x[0, 0][out], y[0, 0][out]
    assert torch.all(b[a.argsort()].diff() >= -1e-3)


def test_pretrained_weights_load_into_segmenter(pretrained, tmp_path, monkeypatch):
    tmp, _ = pretrained
    enc = tmp / "enc"
    data = write_blob_set(tmp_path / "lab", range(0, 3), ["a"])
    seen = {}
    real = train_module.fit_model_folder

    def spy(model, *args, **kwargs):  # the weights the supervised training starts from
        seen.update({k: v.clone() for k, v in model.state_dict().items()})
        seen["_plan"] = args[2]
        return real(model, *args, **kwargs)

    monkeypatch.setattr(train_module, "fit_model_folder", spy)
    train_module.train_segmentation(data, tmp_path / "ft", fold=-1, init=enc, max_steps=2,
                                    progress=False, device="cpu", samples_per_epoch=2)  # fmt: skip
    weights = load_file(str(enc / "model.safetensors"))
    body = [k for k in weights if not is_output_layer(k)]
    assert len(body) > 10
    for k in body:
        assert torch.equal(seen[k], weights[k]), k
    head = [k for k in weights if is_output_layer(k) and k.endswith("weight")]
    assert head and all(seen[k].shape[0] == 2 and weights[k].shape[0] == 1 for k in head)
    assert seen["_plan"].patch_size == load_plan(enc).patch_size
    assert (tmp_path / "ft" / "plan.yaml").is_file()
    build_network(load_plan(tmp_path / "ft"))  # the fine-tuned folder is a 2-class segmenter


def test_refusals(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no NIfTI/NRRD/MHA images"):
        pretrain_encoder(tmp_path / "empty", tmp_path / "o1", max_steps=1)
    labels_only = write_blob_set(tmp_path / "msd", range(0, 2), ["a"])
    for p in (labels_only / "imagesTr").iterdir():
        p.unlink()
    with pytest.raises(InputError, match=r"labels only \(labelsTr/\)"):
        pretrain_encoder(labels_only, tmp_path / "o2", max_steps=1)
    maps = tmp_path / "maps"  # a plain folder of label maps
    maps.mkdir()
    for p in (labels_only / "labelsTr").iterdir():
        (maps / p.name).write_bytes(p.read_bytes())
    with pytest.raises(InputError, match="label maps only") as err:
        pretrain_encoder(maps, tmp_path / "o3", max_steps=1)
    assert "\n" not in str(err.value)
    assert not any((tmp_path / o).exists() for o in ("o1", "o2", "o3"))


def test_finished_run_resumes_and_plain_folders_work(pretrained, tmp_path):
    tmp, _ = pretrained
    data = tmp / "unlab"
    res = pretrain_encoder(data, tmp / "enc", max_steps=30, device="cpu", progress=False,
                           samples_per_epoch=8, plan=tiny_plan(["x"]))  # fmt: skip
    assert res.last_step == 30  # continued (nothing left), not started over
    plain = tmp_path / "plain"  # a plain folder of images: a CT by its air
    plain.mkdir()
    for p in sorted((data / "imagesUnlabelled").iterdir())[:2]:
        (plain / p.name.replace("_0000", "")).write_bytes(p.read_bytes())
    pretrain_encoder(plain, tmp_path / "enc", max_steps=2, device="cpu", progress=False,
                     samples_per_epoch=2)  # fmt: skip
    plan = load_plan(tmp_path / "enc")  # planned from the images: CT, clipped to the body window
    assert plan.normalization[0].scheme == "ct" and plan.normalization[0].clip_low <= -200
    assert "images: 2" in (tmp_path / "enc" / "config.yaml").read_text()
