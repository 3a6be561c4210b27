"""SSDU adaptation of an MRI network on undersampled k-space only (``recon mri adapt``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from medimg.engine import TrainConfig, to_yaml
from medimg.physics.masks import acs_region, equispaced_mask, random_mask
from medimg.tasks.reconstruct.mri.adapt import AdaptConfig, adapt, ssdu_split
from medimg.tasks.reconstruct.mri.models import build_model
from medimg.tasks.reconstruct.mri.simulate import SimulateSpec, write_simulated_set
from medimg.tasks.reconstruct.mri.train import preset


@pytest.mark.parametrize(
    "mask", [equispaced_mask((48, 40), 4, 0.16), random_mask((40, 48), 6, 0.1, seed=3)]
)
def test_split_is_disjoint_and_covers_the_acquired_mask(mask: torch.Tensor) -> None:
    inp, loss = ssdu_split(mask, rho=0.4, seed=7)
    acquired = mask != 0
    assert not bool(((inp != 0) & (loss != 0)).any())
    assert bool((((inp != 0) | (loss != 0)) == acquired).all())
    rows, cols = acs_region(mask)
    assert bool((inp[rows, cols] != 0).all())  # the ACS feeds the coil maps
    outside = acquired.clone()
    outside[rows, cols] = False
    assert abs(float(loss.sum()) / float(outside.sum()) - 0.4) < 0.01
    other, _ = ssdu_split(mask, rho=0.4, seed=8)
    assert not torch.equal(other, inp)  # a fresh split per draw


def _poor_model(folder: Path, model: str = "varnet") -> Path:
    """A tiny VarNet (or MoDL on ESPIRiT maps, as the shipped default) made deliberately poor:
    random regularisers switched fully on."""
    cfg = preset("tiny", model)
    if model == "modl":
        cfg.model = dataclasses.replace(cfg.model, maps="espirit")
    torch.manual_seed(0)
    net = build_model(cfg.model)
    with torch.no_grad():
        if model == "varnet":
            net.gain.fill_(0.5)
            net.eta.fill_(0.3)
        else:  # the denoiser's last layer starts at zero: switch it on at random
            torch.nn.init.normal_(net.denoiser.unet.final_conv.weight, std=1.0)
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    to_yaml(cfg, folder / "config.yaml")
    save_file(
        {k: v.contiguous() for k, v in net.state_dict().items()}, folder / "model.safetensors"
    )
    return folder


def _data(folder: Path, width: int = 32) -> list[Path]:
    spec = SimulateSpec(kind="brain", shape=(32, width), slices=4, coils=4, acceleration=4.0,
                        center_fraction=0.16, snr_db=40.0)  # fmt: skip
    return write_simulated_set(folder, spec, n=2, seed=500, progress=False)


def _error(model: Path, files: list[Path]) -> float:
    from medimg.datasets.fastmri import read_fastmri
    from medimg.tasks.reconstruct.mri.infer import reconstruct

    errs = []
    for f in files:
        vol = read_fastmri(f)
        rec = reconstruct(vol.kspace, vol.mask, model=model)
        t = vol.reconstruction
        errs.append(float(np.sqrt(((rec - t) ** 2).mean() / (t**2).mean())))
    return float(np.mean(errs))


def _cfg(init: Path, steps: int) -> AdaptConfig:
    train = TrainConfig(max_steps=steps, batch_size=2, lr=1e-2, optimizer="adam",
                        grad_clip=1.0, checkpoint_every=20, log_every=10, progress=False)  # fmt: skip
    return AdaptConfig(init=str(init), train=train)


@pytest.mark.parametrize("model", ["varnet", "modl"])
def test_adapt_lowers_the_error_against_the_hidden_reference(tmp_path: Path, model: str) -> None:
    init = _poor_model(tmp_path / "poor", model)
    files = _data(tmp_path / "data", 32 if model == "varnet" else 48)  # ESPIRiT: >= 7 ACS lines
    before = _error(init, files)
    res, n = adapt(tmp_path / "data", tmp_path / "adapted", _cfg(init, 60))
    assert n == 8 and res.last_step == 60
    after = _error(tmp_path / "adapted", files)
    assert after < 0.8 * before, (before, after)


def test_adapt_resumes_and_refuses_to_restart_silently(tmp_path: Path) -> None:
    import json

    from medimg.errors import MedimgError

    init = _poor_model(tmp_path / "poor")
    _data(tmp_path / "data")
    res, _ = adapt(tmp_path / "data", tmp_path / "m", _cfg(init, 20))
    assert res.last_step == 20
    with pytest.raises(MedimgError):  # an earlier run: neither resumed nor overwritten
        adapt(tmp_path / "data", tmp_path / "m", _cfg(init, 20))
    longer = _cfg(init, 30)
    with pytest.raises(MedimgError):  # changed settings are refused on resume unless allowed
        adapt(tmp_path / "data", tmp_path / "m", longer, resume=True)
    with pytest.warns(UserWarning, match="changed config"):
        res, _ = adapt(
            tmp_path / "data", tmp_path / "m", longer, resume=True, allow_config_change=True
        )
    assert res.last_step == 30
    log = tmp_path / "m" / "adapt_run" / "metrics.jsonl"
    steps = [r["step"] for r in map(json.loads, log.read_text().splitlines()) if "loss" in r]
    assert steps == [10, 20, 30]  # continued from step 20, not started again
    res, _ = adapt(tmp_path / "data", tmp_path / "m", _cfg(init, 10), overwrite=True)
    assert res.last_step == 10


def test_cli_adapt_writes_a_model_predict_loads(tmp_path: Path) -> None:
    from medimg.cli import main
    from medimg.tasks.reconstruct.mri.train import load_model

    init = _poor_model(tmp_path / "poor")
    files = _data(tmp_path / "data")
    out = tmp_path / "adapted"
    assert main(["recon", "mri", "adapt", str(tmp_path / "data"), "--out", str(out), "--init",
                 str(init), "--max-steps", "4", "--quiet"]) == 0  # fmt: skip
    net, _ = load_model(out)
    assert net.__class__.__name__ == "VarNet"
    assert main(["recon", "mri", "predict", str(files[0]), str(tmp_path / "pred"), "--model",
                 str(out), "--format", "nifti", "--quiet"]) == 0  # fmt: skip
    assert (tmp_path / "pred" / f"{files[0].stem}.nii.gz").is_file()


def test_fully_sampled_data_is_refused(tmp_path: Path) -> None:
    from medimg.errors import InputError

    spec = SimulateSpec(kind="brain", shape=(32, 32), slices=1, coils=2, full=True)
    write_simulated_set(tmp_path / "full", spec, n=1, progress=False)
    with pytest.raises(InputError, match="fully sampled"):
        adapt(tmp_path / "full", tmp_path / "m")
    assert not (tmp_path / "m" / "model.safetensors").exists()


def test_adaptation_lr_follows_the_architecture() -> None:
    """The shipped MoDL adapts at a tenth of the VarNet's rate (3e-4 cost it 6.7 dB)."""
    from medimg.tasks.reconstruct.mri.adapt import adapt_lr

    assert adapt_lr("default") == pytest.approx(3e-5)
    assert adapt_lr("phantom-varnet") == pytest.approx(3e-4)
