"""Low-dose CT networks: RED-CNN, a WGAN critic, a CT feature autoencoder, learned primal-dual.

- :class:`REDCNN` (Chen et al., IEEE TMI 2017): five unpadded convolutions, five transposed
  convolutions, shortcuts from input, 2nd and 4th layer to the mirrored decoder layers; it
  predicts the noise to subtract, so an untrained net is close to the identity. At inference
  an optional parameter-free output step, :func:`restore_local_mean`, gives uniform tissue back
  the local mean of the input (HU kept).
- :class:`Critic`: the WGAN-GP critic (strided convolutions, no batch norm, which would break
  the per-sample gradient penalty). The GAN generator is a :class:`REDCNN`.
- :class:`PatchAutoencoder`: a small convolutional autoencoder trained *here* on full-dose CT
  patches; its encoder's activations are the perceptual-loss features. No pretrained VGG can be
  downloaded (and torchvision is not installed), so the feature extractor is our own.
- :class:`LearnedPrimalDual` (Adler & Oktem, IEEE TMI 2018): unrolled primal-dual iterations
  whose updates are small CNNs fed with ``A f`` and ``A^T h`` from the projector it is given.

All image-domain nets take and return ``(B, 1, H, W)`` in ``HU / 1000``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medimg.errors import InputError
from medimg.physics.base import LinearOperator
from medimg.physics.ct_dose import MU_WATER

__all__ = ["MODELS", "REDCNN", "Critic", "LearnedPrimalDual", "PatchAutoencoder", "build_model",
           "restore_local_mean"]  # fmt: skip


def _check(name: str, value: int, low: int, rule: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InputError(f"{name} must be an integer >= {low}{rule}, got {value!r}")
    return value


def restore_local_mean(
    y: torch.Tensor, x: torch.Tensor, sigma: float, lo: float = -0.16, hi: float = 0.24
) -> torch.Tensor:
    """``y`` minus the Gaussian (``sigma`` pixels) local mean of ``y - x`` taken over soft tissue
    only (``y`` in [``lo``, ``hi``], HU / 1000; normalised convolution), there.

    Photon noise is zero-mean, so the local mean of a low-dose FBP ``x`` is unbiased; a denoiser
    trained for MSE shifts it by a few HU under heavy noise (its prior pulls towards typical
    tissue). Smoothing keeps local means, so this undoes the shift and little else (a few HU of
    the lowest-frequency noise come back); bone and air, outside the window, are left alone.

    >>> x = torch.zeros(1, 1, 32, 32)
    >>> round(float(restore_local_mean(x - 0.007, x, 4.0).mean()), 6)  # a -7 HU shift undone
    0.0
    """
    r = max(1, int(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=y.dtype, device=y.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()

    def blur(a: torch.Tensor) -> torch.Tensor:
        a = F.conv2d(a, k.view(1, 1, -1, 1), padding=(r, 0))
        return F.conv2d(a, k.view(1, 1, 1, -1), padding=(0, r))

    w = ((y > lo) & (y < hi)).to(y.dtype)
    return y - w * blur((y - x) * w) / blur(w).clamp_min(1e-3)


class REDCNN(nn.Module):
    """Residual encoder-decoder CNN; ``features`` channels, ``kernel`` x ``kernel`` (odd).

    ``mean_restore_px`` > 0: in eval mode the output passes through :func:`restore_local_mean`
    with that sigma (pixels); training sees the raw output. No weights: the same checkpoint
    loads with or without it.

    >>> REDCNN(features=8)(torch.zeros(2, 1, 37, 31)).shape
    torch.Size([2, 1, 37, 31])
    """

    def __init__(
        self, features: int = 32, kernel: int = 5, layers: int = 5, mean_restore_px: float = 0.0
    ) -> None:
        super().__init__()
        if not mean_restore_px >= 0:
            raise InputError(f"mean_restore_px must be >= 0 pixels, got {mean_restore_px}")
        self.mean_restore_px = float(mean_restore_px)
        f, k = _check("features", features, 1), _check("kernel", kernel, 1)
        if k % 2 == 0:
            raise InputError(f"kernel must be odd, got {kernel}")
        n = _check("layers", layers, 3, " (RED-CNN has >= 3 encoder layers)")
        self.enc = nn.ModuleList([nn.Conv2d(1 if i == 0 else f, f, k) for i in range(n)])
        self.dec = nn.ModuleList(
            [nn.ConvTranspose2d(f, 1 if i == n - 1 else f, k) for i in range(n)]
        )
        self.act = nn.ReLU()
        #: smallest image side the unpadded convolutions accept (each takes kernel - 1 pixels)
        self.min_size = n * (k - 1) + 1
        # shortcuts: the input of encoder layer j joins the output of decoder layer n-1-j
        self.skips = {n - 1 - j for j in range(0, n, 2)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        saved, h = [], x
        for j, conv in enumerate(self.enc):
            if j % 2 == 0:
                saved.append(h)
            h = self.act(conv(h))
        for i, deconv in enumerate(self.dec):
            h = deconv(h)
            if i in self.skips:
                h = h + saved.pop()
            if i < len(self.dec) - 1:
                h = self.act(h)
        # the last shortcut is the input itself: output = x + learned correction
        if self.mean_restore_px > 0 and not self.training:
            h = restore_local_mean(h, x, self.mean_restore_px)
        return h


class Critic(nn.Module):
    """WGAN critic: strided 3x3 convolutions + LeakyReLU, global average, one score per image."""

    def __init__(self, features: int = 32, depth: int = 4) -> None:
        super().__init__()
        f, d = _check("features", features, 1), _check("depth", depth, 1)
        layers: list[nn.Module] = []
        ch = 1
        for i in range(d):
            out = f * 2 ** min(i, 2)
            layers += [
                nn.Conv2d(ch, out, 3, stride=2 if i % 2 else 1, padding=1),
                nn.LeakyReLU(0.2),
            ]
            ch = out
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean(dim=(-2, -1)))[:, 0]


class PatchAutoencoder(nn.Module):
    """Conv autoencoder on CT patches; :meth:`features` are the perceptual-loss activations.

    Three encoder stages (the last two downsample by 2), mirrored decoder, reconstruction in the
    input's units; the input is windowed by ``tanh`` so lung/bone do not dominate.
    """

    def __init__(self, features: int = 16) -> None:
        super().__init__()
        f = _check("features", features, 1)
        act = nn.LeakyReLU(0.2)
        self.stages = nn.ModuleList([
            nn.Sequential(nn.Conv2d(1, f, 3, padding=1), act, nn.Conv2d(f, f, 3, padding=1), act),
            nn.Sequential(nn.Conv2d(f, 2 * f, 3, stride=2, padding=1), act),
            nn.Sequential(nn.Conv2d(2 * f, 4 * f, 3, stride=2, padding=1), act),
        ])  # fmt: skip
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(4 * f, 2 * f, 4, stride=2, padding=1), act,
            nn.ConvTranspose2d(2 * f, f, 4, stride=2, padding=1), act, nn.Conv2d(f, 1, 3, padding=1),
        )  # fmt: skip

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, out = torch.tanh(2.0 * x), []  # soft window: +-500 HU nearly linear
        for stage in self.stages:
            h = stage(h)
            out.append(h)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.features(x)[-1])


def _block(c_in: int, c_out: int, f: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, f, 3, padding=1), nn.PReLU(f),
                         nn.Conv2d(f, f, 3, padding=1), nn.PReLU(f),
                         nn.Conv2d(f, c_out, 3, padding=1))  # fmt: skip


class LearnedPrimalDual(nn.Module):
    """Learned primal-dual reconstruction from low-dose line integrals.

    ``forward(y, physics, x0)``: ``y`` ``(B, 1, V, D)`` line integrals, ``physics`` a
    :class:`~medimg.physics.base.LinearOperator` (the ``CTProjector`` of the scan), ``x0`` an
    FBP start ``(B, 1, H, W)`` in ``HU / 1000``. The iterations run on ``u = mu / mu_water``
    with the operator scaled to unit norm (``op_norm``, from :meth:`calibrate`), so one set of
    weights serves any flux; the result is returned in ``HU / 1000``.
    """

    def __init__(
        self, n_iter: int = 5, features: int = 32, n_primal: int = 5, n_dual: int = 5
    ) -> None:
        super().__init__()
        self.n_iter = _check("n_iter", n_iter, 1)
        f = _check("features", features, 1)
        self.n_primal, self.n_dual = _check("n_primal", n_primal, 1), _check("n_dual", n_dual, 1)
        self.dual = nn.ModuleList([_block(n_dual + 2, n_dual, f) for _ in range(n_iter)])
        self.primal = nn.ModuleList([_block(n_primal + 1, n_primal, f) for _ in range(n_iter)])
        self.register_buffer("op_norm", torch.tensor(0.0))

    @torch.no_grad()
    def calibrate(self, physics: LinearOperator, shape: tuple[int, int]) -> float:
        """Store ``||A||`` (power iteration) of ``physics`` for images of ``shape``."""
        self.op_norm.fill_(physics.operator_norm(torch.zeros(1, 1, *shape), iterations=30))
        return float(self.op_norm)

    def forward(self, y: torch.Tensor, physics: LinearOperator, x0: torch.Tensor) -> torch.Tensor:
        if not float(self.op_norm) > 0:
            raise InputError("LearnedPrimalDual.op_norm is unset; call calibrate(physics, shape)")
        s = self.op_norm
        y = y / (MU_WATER * s)  # A (mu / mu_water) / ||A|| = y / (mu_water ||A||)
        f = (1.0 + x0).expand(-1, self.n_primal, -1, -1)  # u = mu / mu_water = 1 + HU / 1000
        h = torch.zeros(y.shape[0], self.n_dual, *y.shape[-2:], dtype=y.dtype, device=y.device)
        for dual, primal in zip(self.dual, self.primal):
            h = h + dual(torch.cat([h, physics.A(f[:, 1:2]) / s, y], dim=1))
            f = f + primal(torch.cat([f, physics.A_adjoint(h[:, :1]) / s], dim=1))
        return f[:, :1] - 1.0


#: Model names of the CLI and the configs.
MODELS = ("redcnn", "wgan", "lpd")


def build_model(name: str, **kwargs: float) -> nn.Module:
    """``redcnn`` / ``wgan`` (its generator, a RED-CNN) / ``lpd`` with their keyword arguments."""
    if name in ("redcnn", "wgan"):
        return REDCNN(**kwargs)
    if name == "lpd":
        return LearnedPrimalDual(**kwargs)
    raise InputError(f"model must be one of {', '.join(MODELS)}, got {name!r}")
