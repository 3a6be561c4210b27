"""Low-dose CT networks: a tiny RED-CNN training run beats low-dose FBP; resume; GAN pieces."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from medimg.engine import read_metrics
from medimg.errors import InputError, MedimgError
from medimg.metrics.ct import windowed_psnr
from medimg.tasks.reconstruct.ct import data as D
from medimg.tasks.reconstruct.ct.losses import GANPair, gradient_penalty, wgan_losses
from medimg.tasks.reconstruct.ct.models import REDCNN, LearnedPrimalDual, build_model
from medimg.tasks.reconstruct.ct.predict import denoise_slices, load_model
from medimg.tasks.reconstruct.ct.train import HELD_OUT_SEED, preset_config, train_ct


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    cfg = preset_config("redcnn", "tiny")
    out = tmp_path_factory.mktemp("ct") / "redcnn"
    return cfg, out, train_ct(cfg, out)


def test_tiny_redcnn_beats_low_dose_fbp_on_held_out_slices(tiny_run) -> None:
    cfg, out, _res = tiny_run
    net, loaded = load_model(out)
    assert loaded == cfg
    held = D.simulate_slices(range(HELD_OUT_SEED, HELD_OUT_SEED + 2), cfg.sim)
    den = denoise_slices(net, np.stack([p.low for p in held]))
    gain = [windowed_psnr(p.full, d).value - windowed_psnr(p.full, p.low).value
            for p, d in zip(held, den)]  # fmt: skip
    assert min(gain) > 0.3 and np.mean(gain) > 1.0, gain  # soft-tissue window, ref. full dose


def test_resume_of_a_finished_run_keeps_its_weights(tiny_run) -> None:
    cfg, out, res = tiny_run
    before = {k: v.clone() for k, v in load_model(out)[0].state_dict().items()}
    again = train_ct(cfg, out, resume=True)
    assert again.last_step == res.last_step == cfg.train.max_steps
    after = load_model(out)[0].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert sum(r["kind"] == "val" for r in read_metrics(out / "metrics.jsonl")) == 1
    with pytest.raises(MedimgError):  # a different recipe does not silently continue the run
        train_ct(dataclasses.replace(cfg, features=8), out, resume=True)


def test_redcnn_starts_near_identity_and_keeps_shape() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 1, 21, 19) * 0.1
    assert REDCNN(features=4, kernel=3)(x).shape == x.shape
    with pytest.raises(InputError, match="odd"):
        REDCNN(kernel=4)
    with pytest.raises(InputError, match="model must be one of"):
        build_model("unet")


def test_gradient_penalty_is_zero_for_a_unit_gradient_critic() -> None:
    w = torch.randn(1, 1, 6, 6)
    w = w / w.norm()

    def critic(x):
        return (x * w).sum(dim=(1, 2, 3))

    real, fake = torch.randn(4, 1, 6, 6), torch.randn(4, 1, 6, 6)
    assert float(gradient_penalty(critic, real, fake)) < 1e-10
    assert float(gradient_penalty(lambda x: 3 * critic(x), real, fake)) == pytest.approx(4.0)


def test_wgan_step_updates_generator_and_critic_with_their_own_losses() -> None:
    torch.manual_seed(0)
    pair = GANPair(features=4, critic_features=4, ae_features=4, kernel=3)
    x, y = torch.randn(2, 1, 24, 24) * 0.1, torch.randn(2, 1, 24, 24) * 0.1
    out = wgan_losses(pair, x, y, lambda_perc=0.0, lambda_mse=0.0, lambda_adv=1.0, lambda_gp=0.0)
    out["loss"].backward()
    crit_grad = [p.grad.clone() for p in pair.critic.parameters()]
    # the critic's gradient is that of its own loss alone (the fake enters it detached) ...
    pair.zero_grad()
    fake = pair.generator(x).detach()
    (pair.critic(fake).mean() - pair.critic(y).mean()).backward()
    assert all(
        torch.allclose(a, p.grad, atol=1e-6) for a, p in zip(crit_grad, pair.critic.parameters())
    )
    # ... and the extractor stays frozen
    assert all(p.grad is None for p in pair.extractor.parameters())


def test_learned_primal_dual_needs_calibration_and_keeps_shape() -> None:
    from medimg.physics.ct import CTProjector, ParallelBeamGeometry

    op = CTProjector(ParallelBeamGeometry(image_shape=(16, 16), n_views=12))
    net = LearnedPrimalDual(n_iter=1, features=4)
    y, x0 = torch.zeros(1, 1, *op.geometry.sinogram_shape), torch.zeros(1, 1, 16, 16)
    with pytest.raises(InputError, match="calibrate"):
        net(y, op, x0)
    assert net.calibrate(op, (16, 16)) > 0
    assert net(y, op, x0).shape == x0.shape


def test_noiseless_scan_target_and_tissue_focused_patches() -> None:
    sim = preset_config("redcnn", "tiny").sim
    (p,) = D.simulate_slices([3], sim)
    body = p.phantom > -500
    noise_full, noise_low = np.std((p.full - p.clean)[body]), np.std((p.low - p.clean)[body])
    assert noise_full > 5 and noise_low > 1.6 * noise_full  # 25 % dose: >= twice the std
    err = {k: np.std((getattr(p, k) - p.phantom)[body]) for k in ("clean", "full")}
    assert err["clean"] < err["full"]  # the noiseless scan: only the FBP's blur
    ds = D.PatchDataset([p], 16, 8, target="clean", tissue_focus=True)
    assert torch.equal(ds.full[0], D.to_net(p.clean)) and torch.equal(ds.low[0], D.to_net(p.low))

    def in_window(dataset: D.PatchDataset) -> float:  # share of crops centred in soft tissue
        np.random.seed(0)  # noqa: NPY002 (the dataset reads the global RNG, as the engine seeds it)
        t = [dataset[i]["target"][0, 7:9, 7:9] for i in range(64)]  # rot/flip: centre 2 x 2
        return float(np.mean([bool(((c > -0.16) & (c < 0.24)).any()) for c in t]))

    focused, plain = in_window(ds), in_window(D.PatchDataset([p], 16, 8, target="clean"))
    assert focused > 0.95 and focused > plain + 0.05, (focused, plain)
    with pytest.raises(InputError, match="target must be one of"):
        D.PatchDataset([p], 16, 8, target="phantom")
    with pytest.raises(InputError, match="target must be one of"):
        dataclasses.replace(preset_config("redcnn", "tiny"), target="noisy")


def test_redcnn_fine_tunes_from_init_weights(tiny_run, tmp_path) -> None:
    cfg, out, _res = tiny_run
    start = load_model(out)[0].state_dict()
    tune = dataclasses.replace(cfg, init=str(out))
    tune.train = dataclasses.replace(cfg.train, max_steps=1, lr=1e-9, val_every=1,
                                     checkpoint_every=1)  # fmt: skip
    res = train_ct(tune, tmp_path / "tuned")
    tuned = load_model(tmp_path / "tuned")[0].state_dict()
    assert all(torch.allclose(start[k], tuned[k], atol=1e-6) for k in start)
    # the trained start already beats its input: the first validation shows it
    scratch = dataclasses.replace(tune, init="")
    cold = train_ct(scratch, tmp_path / "cold")
    assert res.best_metric > cold.best_metric + 0.3, (res.best_metric, cold.best_metric)
    with pytest.raises(InputError, match="does not match"):
        train_ct(dataclasses.replace(tune, features=8), tmp_path / "bad")
    with pytest.raises(InputError, match="lpd has no init"):
        dataclasses.replace(tune, model="lpd")


def test_mixed_patches_draw_the_focus_share() -> None:
    def bank(low_hu: float) -> dict:
        img = np.zeros((1, 24, 24), np.float16)
        return {"low": img + low_hu, "clean": img, "clean_index": np.array([0])}

    main, focus = D.PatchDataset.from_bank(bank(0.0), 16, 400), D.PatchDataset.from_bank(bank(100.0), 16, 400)  # fmt: skip
    mixed = D.MixedPatches(main, focus, 0.3)
    np.random.seed(0)  # noqa: NPY002 (the dataset reads the global RNG, as the engine seeds it)
    share = np.mean([float(mixed[i]["input"].mean()) > 0.05 for i in range(400)])
    assert len(mixed) == len(main) and 0.22 < share < 0.38, share
    np.random.seed(0)  # noqa: NPY002
    assert all(float(D.MixedPatches(main, focus, 0.0)[i]["input"].mean()) == 0 for i in range(20))
    with pytest.raises(InputError, match="focus fraction"):
        D.MixedPatches(main, focus, 1.5)
    with pytest.raises(InputError, match="focus_fraction"):
        dataclasses.replace(preset_config("redcnn", "tiny"), focus_fraction=-0.1)
