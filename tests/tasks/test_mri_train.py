"""Learned MRI reconstruction: a tiny VarNet learns to beat zero-filling; exact resume; models."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from medimg.engine import load_weights
from medimg.errors import InputError
from medimg.physics.coils import birdcage_maps
from medimg.physics.masks import equispaced_mask
from medimg.physics.mri import MultiCoilMRI
from medimg.tasks.reconstruct.mri import train as train_mod
from medimg.tasks.reconstruct.mri.baselines import zero_filled
from medimg.tasks.reconstruct.mri.losses import ssim_l1_loss, ssim_map
from medimg.tasks.reconstruct.mri.models import build_model, check_inputs
from medimg.tasks.reconstruct.mri.train import load_model, preset, train_mri, validation_set


def _mean_psnr(net: torch.nn.Module, cases: list[dict[str, torch.Tensor]]) -> float:
    with torch.no_grad():
        vals = [train_mod._psnr(net(s["kspace"][None], s["mask"]).abs(), s["target"][None])
                for s in cases]  # fmt: skip
    return float(torch.stack(vals).mean())


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The ``tiny`` preset (60 steps, 32x32, 4 coils, 4x) trained once for the module."""
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("mri") / "tiny"
    result = train_mri(preset("tiny"), run)
    return run, result


def test_tiny_varnet_beats_zero_filled_and_its_untrained_self(tiny_run) -> None:
    run, result = tiny_run
    cfg = preset("tiny")
    val = validation_set(cfg)  # held-out phantom seeds, fixed masks and noise
    zf = float(np.mean([float(train_mod._psnr(zero_filled(s["kspace"][None]), s["target"][None]))
                        for s in val]))  # fmt: skip
    torch.manual_seed(cfg.train.seed)
    untrained = _mean_psnr(build_model(cfg.model).eval(), val)
    net, loaded_cfg = load_model(run)
    trained = _mean_psnr(net, val)
    assert loaded_cfg == cfg
    assert trained == pytest.approx(result.best_metric, abs=1e-3)
    assert trained > zf + 1.0, (trained, zf)
    assert trained > untrained + 0.5, (trained, untrained)


def test_interrupted_training_resumes_to_the_same_weights(tmp_path, monkeypatch) -> None:
    cfg = preset("tiny")
    cfg.train = dataclasses.replace(cfg.train, max_steps=4, val_every=4, checkpoint_every=2)
    straight = train_mri(cfg, tmp_path / "straight")

    calls = {"n": 0}

    def failing_loss(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # dies during step 3, after the step-2 checkpoint
            raise KeyboardInterrupt
        return ssim_l1_loss(*args, **kwargs)

    monkeypatch.setattr(train_mod, "ssim_l1_loss", failing_loss)
    with pytest.raises(KeyboardInterrupt):
        train_mri(cfg, tmp_path / "resumed")
    monkeypatch.setattr(train_mod, "ssim_l1_loss", ssim_l1_loss)
    resumed = train_mri(cfg, tmp_path / "resumed", resume="auto")
    assert resumed.last_step == 4
    a, b = build_model(cfg.model), build_model(cfg.model)
    load_weights(a, straight.last_checkpoint)
    load_weights(b, resumed.last_checkpoint)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(pa, pb, msg=name)


def test_ssim_map_matches_scikit_image() -> None:
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    x = rng.random((1, 24, 20)).astype(np.float32)
    y = (x + 0.1 * rng.random((1, 24, 20))).astype(np.float32)
    ours = ssim_map(torch.from_numpy(x), torch.from_numpy(y), torch.tensor([1.0])).mean()
    _, full = structural_similarity(y[0], x[0], data_range=1.0, win_size=7, full=True)
    ref = full[3:-3, 3:-3].mean()  # skimage crops (win - 1) / 2 before averaging
    assert float(ours) == pytest.approx(ref, abs=1e-4)


@pytest.mark.parametrize("name", ["varnet", "modl", "unet"])
def test_every_network_reconstructs_and_is_scale_equivariant(name) -> None:
    torch.manual_seed(0)
    net = build_model(name, cascades=2, features=(4, 4, 8, 8, 16, 4), cg_iter=2).eval()
    maps, mask = birdcage_maps(4, (32, 32)), equispaced_mask((32, 32), 4, 0.25)
    y = MultiCoilMRI(maps, mask).A(torch.randn(2, 32, 32, dtype=torch.complex64))
    phys = train_mod.physics_for(net, mask, maps)
    with torch.no_grad():
        out, out_scaled = net(y, phys), net(1000 * y, phys)
    assert out.shape == (2, 32, 32) and out.is_complex()
    torch.testing.assert_close(out_scaled, 1000 * out, rtol=1e-3, atol=1e-3)


def test_bad_inputs_are_one_line_input_errors() -> None:
    y = torch.randn(1, 4, 32, 32, dtype=torch.complex64)
    mask = equispaced_mask((32, 32), 4, 0.25)
    cases = {
        "does not match": (y, mask[:, :30], False),
        "must be complex": (y.real, mask, False),
        "NaN": (torch.where(torch.arange(32) == 3, torch.nan, y), mask, False),
        "ACS": (y, equispaced_mask((32, 32), 4, 0.0), True),
    }
    for words, (k, m, acs) in cases.items():
        with pytest.raises(InputError, match=words) as err:
            check_inputs(k, m, need_acs=acs)
        assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="needs physics=MultiCoilMRI"):
        build_model("unet")(y, mask)


def test_shipped_models_beat_zero_filled_on_a_held_out_phantom() -> None:
    from medimg.tasks.reconstruct.mri.data import PhantomSlices, SimConfig
    from medimg.tasks.reconstruct.mri.infer import Reconstructor

    held = SimConfig(kind="brain", shape=(128, 128), coils=8, seed_base=300_000, num_phantoms=1)
    case = PhantomSlices(held, 1).sample(0, seed=0)
    zf = float(train_mod._psnr(zero_filled(case["kspace"][None]), case["target"][None]))
    # the default: a MoDL trained on realistic slices, run as predict runs it (ESPIRiT maps)
    net, cfg = load_model()  # src/medimg/tasks/reconstruct/mri/default
    assert cfg.model.name == "modl" and cfg.realistic is not None
    pred = torch.from_numpy(Reconstructor("net", net)(case["kspace"][None], case["mask"]))
    assert float(train_mod._psnr(pred, case["target"][None])) > zf + 4.0
    varnet, vcfg = load_model("phantom-varnet")  # the previous default, kept by name
    assert vcfg.model.name == "varnet" and vcfg.realistic is None
    assert _mean_psnr(varnet, [case]) > zf + 4.0


def test_finetune_preset_continues_the_default_architecture_at_4x_only() -> None:
    stage1, stage2 = preset("phantom-varnet"), preset("finetune-4x")
    shipped = load_model("phantom-varnet")[1]  # the phantom VarNet's config is stage 2's
    assert stage2.model == stage1.model == shipped.model
    assert stage2.data.accelerations == shipped.data.accelerations == (4.0,)
    assert 4.0 in stage1.data.accelerations and 8.0 in stage1.data.accelerations
    assert stage2.train.max_steps == shipped.train.max_steps < stage1.train.max_steps
    with pytest.raises(InputError, match="finetune-4x"):
        preset("huge")
