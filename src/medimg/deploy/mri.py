"""Export of the unrolled MRI model (MoDL with its CG data consistency) and its ONNX Runtime
side for ``recon mri predict --backend onnxruntime``.

ONNX has no complex tensors as graph inputs, so the graph takes the k-space and the coil maps
split into real and imaginary parts: ``(kspace_re, kspace_im, mask, sens_re, sens_im)`` ->
``image`` ``(B, H, W, 2)`` (real, imaginary), shapes ``(B, N, H, W)`` for k-space and maps and
``(B, H, W)`` for the mask. Inside, the network is the torch model's own code path: the same
peak scaling, ``fft2c``/``ifft2c`` (``torch.fft``, exported to ONNX ``DFT``, opset 18), the
same :func:`~medimg.physics.solvers.conjugate_gradient` with its fixed number of steps and the
same denoiser. Two steps stay in Python around the graph (:class:`OrtMRINetwork`), because they
read the mask's fully sampled centre (a data-dependent box, :func:`~medimg.physics.masks.
acs_region`) which a graph cannot size: the maps' phase alignment
(:func:`~medimg.tasks.reconstruct.mri.models.lowres_phase`) and, for ``maps="acs"`` models,
the ACS maps. The graph therefore takes phase-aligned maps and returns the image in their
convention; :class:`OrtMRINetwork` puts the phase back, as the torch model does.

The VarNet (maps learned from the ACS block inside the network) is not exported: its map
network crops that data-dependent box.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medimg.deploy.targets import ExportTarget
from medimg.errors import InputError

__all__ = ["INPUTS", "MoDLGraph", "OrtMRINetwork", "mri_inputs", "mri_metric", "mri_target",
           "open_mri"]  # fmt: skip

INPUTS = ("kspace_re", "kspace_im", "mask", "sens_re", "sens_im")


def _dft(n: int, inverse: bool, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Real and imaginary parts of the centred orthonormal DFT matrix of size ``n``:
    ``exp(-+2 pi i (k - c)(j - c) / n) / sqrt(n)``, ``c = n // 2`` (what ``ifftshift``, the FFT
    and ``fftshift`` do together), built from ``n`` so that sizes stay dynamic."""
    k = torch.arange(n, device=like.device) - n // 2
    size = k.new_ones(()) * n  # a tensor: the exporter has no remainder by a symbolic int
    phase = torch.remainder(k[:, None] * k[None, :], size).to(like.dtype) * (2 * torch.pi / n)
    norm = torch.rsqrt(torch.ones((), dtype=like.dtype, device=like.device) * n)
    sign = 1.0 if inverse else -1.0
    return torch.cos(phase) * norm, torch.sin(phase) * (sign * norm)


def fft2c(
    xr: torch.Tensor, xi: torch.Tensor, inverse: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`medimg.physics.mri.fft2c` (``ifft2c`` when ``inverse``) of ``xr + i xi`` over the
    last two axes as two products by DFT matrices, in real arithmetic: torch's ONNX exporter
    has no complex ``roll`` (fftshift by a size-dependent shift) nor complex ``zeros_like``
    (both tried), and matrix products keep every size dynamic. Equal to float32 rounding; more
    work than an FFT, but small next to the denoiser at MRI matrix sizes."""
    hr, hi = _dft(xr.shape[-2], inverse, xr)
    wr, wi = _dft(xr.shape[-1], inverse, xr)
    ar, ai = hr @ xr - hi @ xi, hr @ xi + hi @ xr  # along rows (the matrices are symmetric)
    return ar @ wr - ai @ wi, ar @ wi + ai @ wr


def _cdot(ar: torch.Tensor, ai: torch.Tensor, br: torch.Tensor, bi: torch.Tensor) -> torch.Tensor:
    """``Re <a, b>`` per batch item (CG's inner products are real for Hermitian operators)."""
    return (ar * br + ai * bi).flatten(1).sum(1)


Pair = tuple[torch.Tensor, torch.Tensor]


def _cg(normal: Callable[[torch.Tensor, torch.Tensor], Pair], br: torch.Tensor,
        bi: torch.Tensor, x0: Pair | None, steps: int) -> Pair:  # fmt: skip
    """:func:`medimg.physics.solvers.conjugate_gradient` with ``tol = 0`` (the unrolled
    networks' setting) on ``(real, imaginary)`` pairs: step for step the same formulas."""
    if x0 is None:
        xr, xi, rr, ri = br * 0, bi * 0, br, bi
    else:
        xr, xi = x0
        nr, ni = normal(xr, xi)
        rr, ri = br - nr, bi - ni
    pr, pi = rr, ri
    rs = _cdot(rr, ri, rr, ri)
    for _ in range(steps):
        ar, ai = normal(pr, pi)
        pap = _cdot(pr, pi, ar, ai)
        alpha = (rs / pap.clamp_min(1e-30) * (pap > 0)).view(-1, 1, 1)
        xr, xi = xr + alpha * pr, xi + alpha * pi
        rr, ri = rr - alpha * ar, ri - alpha * ai
        rs_new = _cdot(rr, ri, rr, ri)
        beta = (rs_new / rs.clamp_min(1e-30) * (rs > 0)).view(-1, 1, 1)
        pr, pi = rr + beta * pr, ri + beta * pi
        rs = rs_new
    return xr, xi


def _denoise(unet: nn.Module, xr: torch.Tensor, xi: torch.Tensor) -> Pair:
    """:class:`~medimg.tasks.reconstruct.mri.models.ResidualComplexUnet` on ``xr + i xi``
    ``(B, H, W)``, its padding to a multiple of ``pad_factor`` written with sizes the exporter
    keeps symbolic (MONAI's ``divisible_pad_t`` takes a bitwise or of them)."""
    from monai.apps.reconstruction.networks.nets.utils import complex_normalize

    x = torch.stack([xr, xi], 1)  # (B, 2, H, W): MONAI's complex-to-channel layout
    x, _mean, std = complex_normalize(x)
    h, w = x.shape[-2:]
    k = unet.pad_factor
    ph, pw = (k - h % k) % k, (k - w % k) % k
    top, left = ph // 2, pw // 2
    x = nn.functional.pad(x, (left, pw - left, top, ph - top))
    x = unet.unet(x)[..., top : top + h, left : left + w] * std
    return x[:, 0], x[:, 1]


class MoDLGraph(nn.Module):
    """A :class:`~medimg.tasks.reconstruct.mri.models.MoDL` on real inputs (see the module doc):
    ``(kspace_re, kspace_im, mask, sens_re, sens_im)`` -> ``(B, H, W, 2)``, maps already
    phase-aligned. Its steps are ``MoDL._reconstruct``'s in real arithmetic."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(
        self,
        kspace_re: torch.Tensor,
        kspace_im: torch.Tensor,
        mask: torch.Tensor,
        sens_re: torch.Tensor,
        sens_im: torch.Tensor,
    ) -> torch.Tensor:
        net = self.net
        m, m2 = mask[:, None], (mask * mask)[:, None]
        zr, zi = fft2c(kspace_re, kspace_im, inverse=True)
        scale = (zr**2 + zi**2).sum(1).sqrt().flatten(1).amax(1)  # zero-filled RSS peak
        scale = scale.clamp_min(1e-12).view(-1, 1, 1)
        yr, yi = kspace_re / scale[..., None], kspace_im / scale[..., None]

        def adjoint(kr: torch.Tensor, ki: torch.Tensor) -> Pair:  # sum_c conj(S_c) F^H k_c
            cr, ci = fft2c(kr, ki, inverse=True)
            return (sens_re * cr + sens_im * ci).sum(1), (sens_re * ci - sens_im * cr).sum(1)

        def normal(xr: torch.Tensor, xi: torch.Tensor) -> Pair:  # A^H A x
            sr = sens_re * xr[:, None] - sens_im * xi[:, None]
            si = sens_re * xi[:, None] + sens_im * xr[:, None]
            kr, ki = fft2c(sr, si)
            return adjoint(kr * m2, ki * m2)

        lam = nn.functional.softplus(net.lam_raw)

        def regularised(vr: torch.Tensor, vi: torch.Tensor) -> Pair:  # A^H A + lam I
            nr, ni = normal(vr, vi)
            return nr + lam * vr, ni + lam * vi

        ar, ai = adjoint(yr * m, yi * m)
        xr, xi = ar, ai
        if net.init_iter:
            xr, xi = _cg(normal, ar, ai, None, net.init_iter)
        for _ in range(net.iterations):
            dr, di = _denoise(net.denoiser, xr, xi)
            zr, zi = xr + net.gain * dr, xi + net.gain * di
            xr, xi = _cg(regularised, ar + lam * zr, ai + lam * zi, (zr, zi), net.cg_iter)
        return torch.stack([xr * scale, xi * scale], -1)


def _check_modl(net: nn.Module) -> None:
    from medimg.tasks.reconstruct.mri.models import MoDL

    if not isinstance(net, MoDL):
        raise InputError(
            f"export of the {type(net).__name__} MRI model is not supported (MoDL models, the "
            "shipped default, are): its coil-map network crops the mask's fully sampled centre, "
            "a data-dependent box an ONNX graph cannot size"
        )


def mri_inputs(n: int, seed: int, shape: tuple[int, int] = (64, 64), coils: int = 4,
               acceleration: float = 4.0) -> list[dict[str, Any]]:  # fmt: skip
    """``n`` generated brain slices: undersampled k-space ``(1, N, H, W)``, mask ``(H, W)``,
    true coil maps ``(N, H, W)`` and the RSS target ``(H, W)`` (30 dB noise, equispaced)."""
    from medimg.phantoms.mri import brain_phantom
    from medimg.tasks.reconstruct.mri.data import make_mask, simulate_slice

    out = []
    for i in range(n):
        img = brain_phantom(shape, contrast=("t1", "t2", "pd")[i % 3], seed=seed + i).image
        mask = make_mask("equispaced", shape, acceleration, 0.08, seed + i)
        s = simulate_slice(img, coils, mask, snr_db=30.0, seed=seed + i)
        out.append({"kspace": s["kspace"][None], "mask": s["mask"], "maps": s["maps"],
                    "target": s["target"].numpy()})  # fmt: skip
    return out


def graph_inputs(
    y: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """The graph's five real inputs from complex k-space ``(B, N, H, W)``, a mask and
    phase-aligned maps ``(B or 1, N, H, W)`` (broadcast to the batch)."""
    b, _, h, w = y.shape
    m = torch.as_tensor(mask).float().to(y.device)
    m = (m[None] if m.ndim == 1 else m).expand(b, h, w)  # (W,), (H, W), (1 or B, H, W)
    s = maps.expand(b, *maps.shape[-3:]).to(torch.complex64)
    y = y.to(torch.complex64)
    return tuple(t.contiguous().float() for t in (y.real, y.imag, m, s.real, s.imag))


def _aligned(y: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor | None,
             acs: bool) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(phase-aligned maps, phase) as the torch MoDL computes them."""
    from medimg.tasks.reconstruct.mri.models import acs_maps, lowres_phase

    m = mask.expand(y.shape[-2], -1) if mask.ndim == 1 else mask
    maps = acs_maps(y, m) if acs or maps is None else maps.to(y.device)
    maps = maps.expand(y.shape[0], *maps.shape[-3:])
    phase = lowres_phase(y, m, maps)
    return maps * phase[:, None], phase


def mri_target(folder: str | Path | None) -> ExportTarget:
    """The shipped MRI model (``None``) or an MRI model/run folder as an export target."""
    from medimg.engine.config import to_dict
    from medimg.engine.provenance import model_tag, weights_digest
    from medimg.tasks.reconstruct.mri.safeguard import FILE_NAME
    from medimg.tasks.reconstruct.mri.train import load_model, model_dir

    net, cfg = load_model(folder)
    _check_modl(net)
    guard = model_dir(folder) / FILE_NAME  # the safeguard's thresholds travel with the file
    graph = MoDLGraph(net).eval()

    def sample(n: int, seed: int) -> list[tuple[np.ndarray, ...]]:
        out = []
        for c in mri_inputs(n, seed):
            maps, _ = _aligned(c["kspace"], c["mask"], c["maps"][None], cfg.model.maps == "acs")
            out.append(tuple(t.numpy() for t in graph_inputs(c["kspace"], c["mask"], maps)))
        return out

    example = tuple(torch.from_numpy(a) for a in sample(1, 0)[0])
    name = "default" if folder is None else model_dir(folder).name
    return ExportTarget(
        task="recon-mri", name=name, network=graph, example=example,  # type: ignore[arg-type]
        multiple_of=[1, 1], min_size=16,
        layout="kspace_re, kspace_im (B, N, H, W); mask (B, H, W); sens_re, sens_im (B, N, H, W) "
        "float32: the undersampled k-space, its sampling mask and the coil maps after phase "
        "alignment (medimg.tasks.reconstruct.mri.models.align_phase)",
        output="complex image (B, H, W, 2) (real, imaginary); its magnitude is the reconstruction",
        tag=model_tag("recon-mri", name, [net]), digest=weights_digest([net]),
        settings={"model": to_dict(cfg.model)}, sample=sample, input_names=INPUTS,
        dynamic=_mri_dynamic(), extra_files={FILE_NAME: guard} if guard.is_file() else {},
    )  # fmt: skip


def _mri_dynamic() -> tuple[dict[int, Any], ...]:
    Dim = torch.export.Dim
    b, n = Dim("batch", min=1, max=4096), Dim("coils", min=1, max=256)
    h, w = Dim("height", min=16, max=4096), Dim("width", min=16, max=4096)
    four = {0: b, 1: n, 2: h, 3: w}
    return (four, four, {0: b, 1: h, 2: w}, four, four)


class OrtMRINetwork(nn.Module):
    """An exported MoDL behind the torch model's call ``net(y, physics)`` (complex k-space
    ``(B, N, H, W)``, a :class:`~medimg.physics.mri.MultiCoilMRI` or, for ``maps="acs"``
    models, the mask), so :class:`~medimg.tasks.reconstruct.mri.infer.Reconstructor` and the
    safeguard run unchanged around it. The phase alignment is done here (module doc)."""

    def __init__(self, session: Any, sidecar: dict[str, Any]) -> None:
        super().__init__()
        self.session, self.sidecar = session, sidecar
        self.tag = str(sidecar.get("model_tag", "onnx model"))
        self.acs = sidecar.get("model", {}).get("maps") == "acs"
        self.needs_maps = not self.acs

    def forward(self, y: torch.Tensor, physics: Any) -> torch.Tensor:
        from medimg.physics.mri import MultiCoilMRI
        from medimg.tasks.reconstruct.mri.models import check_inputs

        if isinstance(physics, MultiCoilMRI):
            mask, maps = physics.mask, physics.coil_maps
        elif isinstance(physics, torch.Tensor) and self.acs:
            mask, maps = physics, None
        else:
            raise InputError("this MRI model needs physics=MultiCoilMRI(coil_maps, mask)")
        check_inputs(y, mask, need_acs=maps is None)
        mask = mask.to(y.device).float()
        aligned, phase = _aligned(y, mask, maps, self.acs)
        feeds = dict(zip(INPUTS, (t.cpu().numpy() for t in graph_inputs(y, mask, aligned))))
        out = torch.from_numpy(self.session.run(None, feeds)[0]).to(y.device)
        return torch.view_as_complex(out.contiguous()) * phase


def mri_metric(target: ExportTarget, nets: dict[str, nn.Module], n: int) -> dict[str, float]:
    """Mean PSNR (dB, the target's peak as data range) of each backend's magnitude against the
    fully sampled RSS on ``n`` generated slices, through the same
    :class:`~medimg.tasks.reconstruct.mri.infer.Reconstructor` (true coil maps given)."""
    from medimg.metrics.image_quality import psnr_slicewise
    from medimg.tasks.reconstruct.mri.infer import Reconstructor

    from .parity import CHECK_SEED

    cases = mri_inputs(n, CHECK_SEED)
    torch_net = target.network.net  # type: ignore[union-attr]
    out = {}
    for k, net in nets.items():
        model = torch_net if k == "torch fp32" else _as_mri_network(net, target)
        rec = Reconstructor("net", model)
        vals = [float(psnr_slicewise(c["target"][None], rec(c["kspace"], c["mask"], c["maps"]),
                                     data_range=float(c["target"].max()))[0])
                for c in cases]  # fmt: skip
        out[k] = round(float(np.mean(vals)), 3)
    return out


def _as_mri_network(net: nn.Module, target: ExportTarget) -> nn.Module:
    """A parity backend (an ``OrtNetwork`` on the file) as a network ``Reconstructor`` calls."""
    return OrtMRINetwork(net.session, {"model": target.settings["model"]})  # type: ignore[attr-defined]


def open_mri(model: str | Path | None, device: str = "cpu") -> tuple[OrtMRINetwork, str, Any]:
    """``(network, model tag, safeguard thresholds or None)`` for ``recon mri predict
    --backend onnxruntime``: ``model`` an exported ``.onnx`` (its sidecar and thresholds
    beside it), or a model name / folder as ``--model`` takes it (exported in memory now)."""
    from medimg.deploy.runtime import open_onnx
    from medimg.tasks.reconstruct.mri.safeguard import FILE_NAME, load_thresholds
    from medimg.tasks.reconstruct.mri.train import model_dir

    path = Path(str(model)) if model is not None else None
    is_file = path is not None and path.suffix.lower() == ".onnx"
    folder = path if is_file else model_dir(model)  # type: ignore[arg-type]
    net, side = open_onnx(folder, "recon-mri", device=device)
    if is_file:
        beside = folder.with_name(f"{folder.name}.{FILE_NAME}")
        thresholds = None
        if beside.is_file():
            import shutil
            import tempfile

            with tempfile.TemporaryDirectory(prefix="medimg-safeguard-") as tmp:
                shutil.copyfile(beside, Path(tmp) / FILE_NAME)
                thresholds = load_thresholds(tmp)
    else:
        thresholds = load_thresholds(folder)
    return OrtMRINetwork(net.session, side), str(side["model_tag"]), thresholds
