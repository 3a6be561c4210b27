"""Synthetic pairs, tiny training in the three modes (one beats the identity), CLI end to end,
and the bad-input errors of the issue."""

import json

import numpy as np
import pytest
import torch

from medimg.cli import main
from medimg.errors import InputError
from medimg.io.api import load, save
from medimg.io.image import Image
from medimg.phantoms.registration import make_pair, write_pair_dataset
from medimg.tasks.register.data import load_pair, normalise, read_pairs
from medimg.tasks.register.models import ModelConfig
from medimg.tasks.register.train import RegConfig, load_config, train_registration
from medimg.tasks.register.transform import compose, to_voxels, warp

SHAPE, SPACING = (32, 32), 6.0


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("regdata")
    return write_pair_dataset(root, "mr", n_train=8, n_test=2, seed=0, shape=SHAPE, spacing=SPACING)


def _tiny(lr=3e-3):
    cfg = RegConfig(model=ModelConfig(channels=(8, 16, 16, 16), final_channels=(16,)))
    cfg.train.lr = lr
    cfg.train.log_every = 5
    return cfg


def test_phantom_field_maps_moving_labels_onto_fixed():
    p = make_pair("mr-ct", seed=3, shape=(40, 36), spacing=4.0)
    assert p.fixed.modality == "MR" and p.moving.modality == "CT"
    u = to_voxels(p.field.array, p.fixed.affine)
    moved = warp(
        torch.from_numpy(p.moving_labels.array.astype(np.float32))[None], u, mode="nearest"
    )
    agree = float((moved[0].numpy() == p.fixed_labels.array).mean())
    before = float((p.moving_labels.array == p.fixed_labels.array).mean())
    assert agree > 0.99 > before
    again = make_pair("mr-ct", seed=3, shape=(40, 36), spacing=4.0)
    assert np.array_equal(again.fixed.array, p.fixed.array)


def test_unsupervised_training_beats_identity(dataset, tmp_path):
    cfg = _tiny()
    cfg.loss.similarity = "mse"
    res = train_registration(dataset, tmp_path / "unsup", cfg, mode="unsupervised", max_steps=120,
                             progress=False)  # fmt: skip
    vals = [json.loads(x) for x in res.metrics_path.read_text().splitlines() if '"val"' in x]
    from medimg.tasks.register.data import RegDataset

    val_pairs = [load_pair(s) for s in read_pairs(dataset)][-2:]
    identity = np.mean([float(((it["moving"] - it["fixed"]) ** 2).mean())
                        for it in RegDataset(val_pairs, flip=False).items])  # fmt: skip
    assert min(v["mse"] for v in vals) < 0.85 * identity
    assert all(v["folding_pct"] < 0.5 for v in vals)


@pytest.mark.parametrize("mode", ["weak", "supervised"])
def test_weak_and_supervised_modes_train_and_resume(dataset, tmp_path, mode):
    out = tmp_path / mode
    res = train_registration(dataset, out, _tiny(), mode=mode, max_steps=6, progress=False)
    assert res.last_step == 6 and (out / "reg.yaml").is_file()
    again = train_registration(dataset, out, _tiny(), mode=mode, max_steps=6, progress=False)
    assert again.last_step == 6  # resumed, nothing left to do


def test_refinement_stage_composes_with_its_coarse_model(dataset, tmp_path):
    from medimg.tasks.register.predict import Registrator
    from medimg.tasks.register.train import export_model

    train_registration(dataset, tmp_path / "coarse", _tiny(), mode="weak", max_steps=20,
                       progress=False)  # fmt: skip
    fine_cfg = _tiny()
    fine_cfg.crop = (24, 24)
    res = train_registration(dataset, tmp_path / "fine", fine_cfg, mode="weak", max_steps=4,
                             progress=False, coarse_model=tmp_path / "coarse")  # fmt: skip
    folder = export_model(res.run_dir, tmp_path / "exported")
    assert (folder / "coarse" / "model.safetensors").is_file()
    pair = make_pair("mr", seed=50, shape=SHAPE, spacing=SPACING)
    coarse, fine = Registrator(tmp_path / "coarse"), Registrator(folder)
    assert coarse.net.fast_precision and fine.coarse.net.fast_precision  # inference settings
    a = coarse.register(pair.fixed, pair.moving)
    b = fine.register(pair.fixed, pair.moving)
    assert len(b.info["stages"]) == 2 and not np.allclose(a.field.array, b.field.array)
    last = [m for m in fine.net.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)  # a zero correction: the cascade is the coarse field
    np.testing.assert_allclose(fine.register(pair.fixed, pair.moving).field.array,
                               a.field.array, atol=1e-4)  # fmt: skip
    coarser = Image(pair.fixed.array[:, ::2, ::2], np.diag([2 * SPACING] * 2 + [1.0, 1.0]))
    assert "skipped" in fine.register(coarser, coarser).info["stages"][-1]
    # hybrid supervision of a refinement: its true field is what remains after the coarse one
    from medimg.tasks.register.train import _prewarped

    raw = load_pair(read_pairs(dataset, "train")[0])
    [pre] = _prewarped([raw], tmp_path / "coarse")
    f = torch.from_numpy(normalise(raw.fixed.array))[None]
    m = torch.from_numpy(normalise(raw.moving.array))[None]
    with torch.no_grad():
        u_c = coarse.network_field(f, m, raw.fixed)
    rebuilt = compose(u_c, to_voxels(pre.field, raw.fixed.affine))
    true = to_voxels(raw.field, raw.fixed.affine)
    inner = (..., slice(4, -4), slice(4, -4))
    assert float((rebuilt - true)[inner].abs().max()) < 0.05
    hybrid = _tiny()
    hybrid.loss.aux_field_weight = 1.0
    res = train_registration(dataset, tmp_path / "hybrid", hybrid, mode="weak", max_steps=2,
                             progress=False, coarse_model=tmp_path / "coarse")  # fmt: skip
    assert load_config(res.run_dir / "reg.yaml").loss.aux_field_weight == 1.0
    full = train_registration(dataset, tmp_path / "full", _tiny(), mode="full", max_steps=2,
                              progress=False, coarse_model=tmp_path / "coarse")  # fmt: skip
    assert load_config(full.run_dir / "reg.yaml").coarse == "coarse"


def test_fine_tuning_starts_from_the_init_models_weights_and_settings(dataset, tmp_path):
    from safetensors.torch import load_file

    train_registration(dataset, tmp_path / "a", _tiny(), mode="weak", max_steps=20,
                       progress=False)  # fmt: skip
    other = RegConfig()  # another network: --init's settings must replace it
    other.train.lr = 1e-12  # one step that cannot move the weights measurably
    res = train_registration(dataset, tmp_path / "b", other, mode="weak", max_steps=1,
                             progress=False, init=tmp_path / "a")  # fmt: skip
    a = load_file(str(tmp_path / "a" / "best" / "model.safetensors"))
    b = load_file(str(res.run_dir / "last" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    fresh = train_registration(dataset, tmp_path / "c", other, mode="weak", max_steps=1,
                               progress=False, init=None)  # fmt: skip
    assert a.keys() != load_file(str(fresh.run_dir / "last" / "model.safetensors")).keys()
    with pytest.raises(InputError, match="--init needs a registration model"):
        train_registration(dataset, tmp_path / "d", _tiny(), mode="weak", max_steps=1,
                           progress=False, init=tmp_path)  # fmt: skip
    flat = write_pair_dataset(tmp_path / "3d", "mr", n_train=2, n_test=0, seed=0,
                              shape=(16, 16, 16), spacing=12.0)  # fmt: skip
    with pytest.raises(InputError, match="--init model is 2D but these pairs are 3D"):
        train_registration(flat, tmp_path / "e", _tiny(), mode="weak", max_steps=1,
                           progress=False, init=tmp_path / "a")  # fmt: skip


def test_weak_supervision_without_labels_is_a_clear_error(dataset, tmp_path):
    rows = json.loads((dataset / "dataset.json").read_text())["training_paired_images"]
    plain = [
        {"fixed": str(dataset / r["fixed"]), "moving": str(dataset / r["moving"])} for r in rows
    ]
    (tmp_path / "pairs.json").write_text(json.dumps(plain))
    with pytest.raises(InputError, match="weak supervision needs fixed_label"):
        train_registration(
            tmp_path / "pairs.json", tmp_path / "w", _tiny(), mode="weak", max_steps=2
        )
    with pytest.raises(InputError, match="full supervision needs the true 'field'"):
        train_registration(
            tmp_path / "pairs.json", tmp_path / "s", _tiny(), mode="full", max_steps=2
        )


def test_cli_train_predict_evaluate_and_errors(dataset, tmp_path, capsys):
    model = tmp_path / "model"
    assert main(["register", "train", str(dataset), "--supervision", "full", "--max-steps", "4",
                 "--out", str(model), "--quiet"]) == 0  # fmt: skip
    meta = json.loads((dataset / "dataset.json").read_text())["registration_test"][0]
    fixed, moving = dataset / meta["fixed"], dataset / meta["moving"]
    out = tmp_path / "out"
    assert main(["register", "predict", str(fixed), str(moving), str(out), "--model", str(model),
                 "--moving-labels", str(dataset / meta["moving_label"]),
                 "--fixed-labels", str(dataset / meta["fixed_label"]), "--instance-opt", "3",
                 "--outputs", "all"]) == 0  # fmt: skip
    for name in ("warped.nii.gz", "warped_labels.nii.gz", "field.nii.gz", "transform.h5",
                 "jacobian.nii.gz", "summary.json", "overview.png"):  # fmt: skip
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["instance_steps"] == 3 and summary["dice"].keys() == summary["hd95_mm"].keys()
    import nibabel as nib

    descrip = nib.load(out / "warped.nii.gz").header["descrip"].tobytes().decode("ascii", "ignore")
    assert f"register {model.name} sha1:" in descrip and summary["model"] in descrip
    import SimpleITK as sitk

    tx = sitk.ReadTransform(str(out / "transform.h5"))
    src = load(moving).to_sitk()
    theirs = Image.from_sitk(sitk.Resample(src, src, tx, sitk.sitkLinear, 0.0)).array[0]
    ours = load(out / "warped.nii.gz").array[0]
    assert np.abs(theirs - ours)[3:-3, 3:-3].max() < 1e-2 * np.abs(ours).max()
    assert (
        main(["register", "predict", str(fixed), str(moving), str(out), "--model", str(model)]) == 2
    )
    assert "already exists" in capsys.readouterr().err
    assert main(["register", "pair", str(fixed), str(moving), str(tmp_path / "demons"),
                 "--method", "sitk-demons"]) == 0  # fmt: skip
    assert main(["register", "evaluate", str(dataset), "--methods", "identity,model,sitk-demons",
                 "--model", str(model), "--out", str(tmp_path / "ev"), "--quiet"]) == 0  # fmt: skip
    assert "sitk-demons" in (tmp_path / "ev" / "summary.md").read_text()
    assert main(["register", "train", str(dataset), "--supervision", "full", "--max-steps", "2",
                 "--init", str(model), "--out", str(tmp_path / "tuned"), "--quiet"]) == 0  # fmt: skip
    assert (
        load_config(tmp_path / "tuned" / "reg.yaml").model == load_config(model / "reg.yaml").model
    )
    capsys.readouterr()
    assert main(["register", "train", str(dataset), "--init", str(tmp_path), "--out",
                 str(tmp_path / "z"), "--quiet"]) == 2  # fmt: skip
    assert "--init needs a registration model" in capsys.readouterr().err
    # bad input: 3D moving against a 2D fixed image; no overlap in world coordinates
    vol = Image(np.ones((1, 8, 8, 8), np.float32))
    save(vol, tmp_path / "vol.nii.gz")
    capsys.readouterr()
    assert main(["register", "predict", str(fixed), str(tmp_path / "vol.nii.gz"), str(tmp_path / "x"),
                 "--model", str(model)]) == 2  # fmt: skip
    assert "same dimensionality" in capsys.readouterr().err
    far = load(moving)
    far.affine[:3, 3] += 1000.0
    save(far, tmp_path / "far.nii.gz")
    assert main(["register", "predict", str(fixed), str(tmp_path / "far.nii.gz"), str(tmp_path / "y"),
                 "--model", str(model)]) == 2  # fmt: skip
    assert "do not overlap" in capsys.readouterr().err
