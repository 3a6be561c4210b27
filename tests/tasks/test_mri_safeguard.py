"""The MRI prediction safeguard: flags slices where the network strays from its training data
(shown on the phantom VarNet, whose training data a phantom slice is)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medimg.datasets.fastmri import write_fastmri
from medimg.tasks.reconstruct.mri.baselines import cg_sense
from medimg.tasks.reconstruct.mri.data import make_mask, simulate_slice
from medimg.tasks.reconstruct.mri.safeguard import CG_ITER, load_thresholds
from medimg.tasks.reconstruct.mri.train import load_model


def _textured_head(size: int = 128) -> torch.Tensor:
    """Not the training anatomy: a head without scalp filled with fine random texture."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    head = ((xx / 0.8) ** 2 + (yy / 0.9) ** 2 < 1).float()
    return head * (0.4 + 0.6 * torch.rand(size, size, generator=g))


def _phantom(size: int = 128) -> torch.Tensor:
    from medimg.phantoms.mri import brain_phantom

    return brain_phantom((size, size), contrast="t2", seed=123_456).image.abs()


def _write(path: Path, slices: list[torch.Tensor]) -> Path:
    """Slices as 8-coil, 4x equispaced k-space (30 dB SNR, as the model was trained)."""
    mask = make_mask("equispaced", tuple(slices[0].shape), 4.0, 0.08, 1)
    ks, ts = [], []
    for i, img in enumerate(slices):
        s = simulate_slice((img / img.max()).to(torch.complex64), 8, mask, 30.0, seed=i)
        ks.append(s["kspace"])
        ts.append(s["target"])
    write_fastmri(path, torch.stack(ks).numpy(), reconstruction=torch.stack(ts).numpy(),
                  mask=mask[0].numpy())  # fmt: skip
    return path


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Slice 0: an in-distribution phantom; slice 1: an out-of-distribution textured head."""
    return _write(tmp_path_factory.mktemp("sg") / "mixed.h5", [_phantom(), _textured_head()])


@pytest.mark.parametrize("name", [None, "phantom-varnet"])
def test_the_shipped_models_have_calibrated_thresholds(name: str | None) -> None:
    th = load_thresholds(name)
    assert th is not None and {"4", "8"} <= set(th.thresholds)
    assert all(0 < v < 1 for t in th.thresholds.values() for v in t.values())


def test_out_of_distribution_slice_warns_and_phantom_does_not(
    mixed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from medimg.cli import main

    out = tmp_path / "out"
    assert main(["recon", "mri", "predict", str(mixed), str(out), "--format", "nifti",
                 "--model", "phantom-varnet", "--quiet"]) == 0  # fmt: skip
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "mixed.h5" in warnings[0] and "slice(s) 1 of 2" in warnings[0]
    side = json.loads((out / "mixed.json").read_text())["safeguard"]
    assert side["flagged_slices"] == [1] and side["fallback"] is None
    assert len(side["scores"]["dc"]) == 2


def test_fallback_returns_the_classical_image_on_flagged_slices(
    mixed: Path, tmp_path: Path
) -> None:
    from medimg.cli import main
    from medimg.datasets.fastmri import read_fastmri
    from medimg.tasks.reconstruct.mri.infer import reconstruct

    out = tmp_path / "fb"
    assert main(["recon", "mri", "predict", str(mixed), str(out), "--format", "nifti",
                 "--model", "phantom-varnet", "--fallback", "--quiet"]) == 0  # fmt: skip
    got = np.asarray(nib.load(out / "mixed.nii.gz").dataobj)[..., :].transpose(2, 1, 0)  # (S, H, W)
    vol = read_fastmri(mixed)
    y = torch.from_numpy(vol.kspace)
    mask = torch.from_numpy(vol.mask).float().expand(y.shape[-2], -1)
    net, _ = load_model("phantom-varnet")
    with torch.no_grad():
        maps = net.sens(y[1:], mask)
        classical = cg_sense(y[1:], mask, maps, max_iter=CG_ITER).abs()[0].numpy()
    np.testing.assert_allclose(got[1], classical, rtol=1e-3, atol=1e-4 * classical.max())
    network = reconstruct(vol.kspace[:1], vol.mask, model="phantom-varnet")[
        0
    ]  # the unflagged slice stays the network's
    np.testing.assert_allclose(got[0], network, rtol=1e-3, atol=1e-4 * network.max())
    assert json.loads((out / "mixed.json").read_text())["safeguard"]["fallback"] == "cg_sense"


def test_calibrate_writes_thresholds_beside_the_weights(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from medimg.cli import main
    from medimg.engine import to_yaml
    from medimg.tasks.reconstruct.mri.models import build_model
    from medimg.tasks.reconstruct.mri.train import preset

    cfg = preset("tiny")
    net = build_model(cfg.model)
    to_yaml(cfg, tmp_path / "config.yaml")
    save_file(
        {k: v.contiguous() for k, v in net.state_dict().items()}, tmp_path / "model.safetensors"
    )
    assert load_thresholds(tmp_path) is None  # uncalibrated: predict checks nothing
    assert main(["recon", "mri", "calibrate", str(tmp_path), "--slices", "3",
                 "--accelerations", "4", "6"]) == 0  # fmt: skip
    th = load_thresholds(tmp_path)
    assert th is not None and set(th.thresholds) == {"4", "6"} and th.slices == 3
    assert th.at(5.5) == th.thresholds["6"] and th.at(3.0) == th.thresholds["4"]
