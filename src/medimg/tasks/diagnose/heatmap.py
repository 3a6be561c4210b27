"""A nodule detector that is trained to *point*: a light U-Net predicts a nodule heat map
(supervised by each inserted nodule's projected disc), and the image score is a smooth
maximum of that map.

Why not a classifier: a 10 mm nodule covers ~30 of 65 536 pixels of a 256^2 film and, at its
real density, changes it by about half the local spread of ribs, vessels and noise (contrast
to local-background ratio median 0.6 on generated films and on the real CR film with inserted
nodules alike; a Laplacian-of-Gaussian at the nodule's scale, told where to look, separates
them with AUC ~0.63). A whole-image label leaves the network to find those 30 pixels by
itself, and image classifiers stayed at chance; the disc tells it every step.

- :class:`HeatmapNet`: encoder stages ``encoder.layer1..4`` (1, 1/2, 1/4, 1/8 of the input;
  the out-of-distribution safeguard reads them like a ResNet's), a decoder with skips to a
  logit map at 1/2 of the input, and the image logit ``scale * smooth_max(map) + shift``.
  Written here, not taken from MONAI: the safeguard needs named encoder stages and the image
  score needs the map, which MONAI's U-Nets do not expose.
- :func:`smooth_max`: mean of the ``k`` largest map logits, for any input size.
- :func:`disc_targets`: the 0/1 disc of each nodule on the map's grid.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medimg.errors import InputError

__all__ = ["TOP_K", "HeatmapNet", "disc_targets", "heatmap_loss", "local_contrast", "smooth_max"]

#: Map pixels averaged into the image score: about the disc of the smallest nodule that
#: matters (10 mm at 1/2 of a 256 px, 420 mm film is ~3 map pixels across).
TOP_K = 4


def smooth_max(logit_map: torch.Tensor, k: int = TOP_K) -> torch.Tensor:
    """``(B, ...) -> (B,)``: the mean of the ``k`` largest values of each map (``k`` clipped
    to the map's size), so the score of a film does not depend on its size."""
    flat = logit_map.flatten(1)
    return flat.topk(min(int(k), flat.shape[1]), dim=1).values.mean(1)


def _gauss(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, C, H, W)`` (replicate edges)."""
    r = int(3 * sigma)
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype, device=x.device) / sigma) ** 2)
    k = (k / k.sum()).repeat(x.shape[1], 1, 1)
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k[:, :, :, None], groups=c)
    return F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k[:, :, None, :], groups=c)


def local_contrast(x: torch.Tensor, sigma: float = 8.0) -> torch.Tensor:
    """``x`` minus its blur at ``sigma`` px, divided by the local spread at ``2 sigma``: a
    nodule is a local bump of a few % of the film's range over large smooth anatomy, and a
    network fed the raw film spends its first hundreds of steps learning to remove that."""
    hp = x - _gauss(x, sigma)
    return hp / torch.sqrt(_gauss(hp * hp, 2 * sigma) + 1e-4)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True),
    )  # fmt: skip


class _Encoder(nn.Module):
    """Four stages; ``forward`` returns the deepest map and keeps the others in ``skips``."""

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        w = width
        self.layer1 = _block(channels, w)
        self.layer2 = nn.Sequential(nn.MaxPool2d(2), _block(w, 2 * w))
        self.layer3 = nn.Sequential(nn.MaxPool2d(2), _block(2 * w, 4 * w))
        self.layer4 = nn.Sequential(nn.MaxPool2d(2), _block(4 * w, 8 * w))
        self.skips: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = self.layer1(x)
        s2 = self.layer2(s1)
        s3 = self.layer3(s2)
        self.skips = [s2, s3]
        return self.layer4(s3)


class HeatmapNet(nn.Module):
    """``forward(x) -> (B, 1)`` image logits; :meth:`logit_map` the map at 1/2 of the input;
    :meth:`heatmap` the nodule probability on the input grid. Inputs need sides divisible
    by 8 for the skips to line up; other sizes are padded."""

    def __init__(self, channels: int = 1, width: int = 12, k: int = TOP_K) -> None:
        super().__init__()
        w = width
        self.encoder = _Encoder(2 * channels, w)  # the film and its local contrast
        self.up3 = _block(8 * w + 4 * w, 4 * w)
        self.up2 = _block(4 * w + 2 * w, 2 * w)
        self.out = nn.Conv2d(2 * w, 1, 1)
        self.k = k
        # image logit = scale * smooth max + shift: the map's pixel logits are trained for
        # pixels, the image's for images (a film has thousands of pixels' chances to fire)
        self.scale = nn.Parameter(torch.ones(1))
        self.shift = nn.Parameter(torch.zeros(1))

    def logit_map(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % 8, (-w) % 8
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        d = self.encoder(torch.cat([x, local_contrast(x)], 1))
        s2, s3 = self.encoder.skips
        d = self.up3(torch.cat([F.interpolate(d, size=s3.shape[-2:]), s3], 1))
        d = self.up2(torch.cat([F.interpolate(d, size=s2.shape[-2:]), s2], 1))
        z = self.out(d)
        return z[..., : (h + 1) // 2, : (w + 1) // 2]

    def score(self, logit_map: torch.Tensor) -> torch.Tensor:
        return (self.scale * smooth_max(logit_map, self.k) + self.shift)[:, None]

    def forward(self, x: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
        return self.score(self.logit_map(x))

    @torch.no_grad()
    def heatmap(self, x: torch.Tensor) -> torch.Tensor:
        """Nodule probability per input pixel ``(B, H, W)`` (the map, upsampled)."""
        z = F.interpolate(self.logit_map(x), size=x.shape[-2:], mode="bilinear",
                          align_corners=False)  # fmt: skip
        return torch.sigmoid(z)[:, 0]


def disc_targets(
    nodules: list[tuple[float, float, float] | None], shape: tuple[int, int], stride: int = 2,
    min_radius: float = 1.5,
) -> np.ndarray:  # fmt: skip
    """``(N, 1, ceil(H/stride), ceil(W/stride))`` 0/1 maps: 1 where a map pixel's centre lies
    in its film's nodule disc ``(u, v, radius)`` (input pixels; radius at least
    ``min_radius``); all 0 for ``None``."""
    h, w = (int(np.ceil(s / stride)) for s in shape)
    uu, vv = np.meshgrid((np.arange(h) + 0.5) * stride - 0.5, (np.arange(w) + 0.5) * stride - 0.5,
                         indexing="ij")  # fmt: skip
    out = np.zeros((len(nodules), 1, h, w), np.float32)
    for i, nod in enumerate(nodules):
        if nod is None:
            continue
        u, v, r = nod
        out[i, 0] = (uu - u) ** 2 + (vv - v) ** 2 <= max(r, min_radius) ** 2
    return out


def heatmap_loss(
    net: HeatmapNet, x: torch.Tensor, target: torch.Tensor, pos_weight: float = 20.0
) -> dict[str, torch.Tensor]:  # fmt: skip
    """Pixel BCE (discs weighted ``pos_weight``: they are < 1 % of the pixels) + soft Dice on
    the maps that hold a nodule + image BCE of the smooth-max score."""
    if target.shape[-2:] != ((x.shape[-2] + 1) // 2, (x.shape[-1] + 1) // 2):
        raise InputError(f"targets {tuple(target.shape)} are not at 1/2 of inputs {tuple(x.shape)}")
    z = net.logit_map(x)
    pix = F.binary_cross_entropy_with_logits(
        z, target, pos_weight=torch.tensor(pos_weight, device=z.device)
    )
    y = (target.flatten(1).amax(1) > 0).float()
    img = F.binary_cross_entropy_with_logits(net.score(z)[:, 0], y)
    loss = pix + img
    out = {"pixel": pix, "image": img}
    if y.any():
        p = torch.sigmoid(z[y > 0]).flatten(1)
        t = target[y > 0].flatten(1)
        dice = 1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)
        out["dice"] = dice.mean()
        loss = loss + out["dice"]
    return {"loss": loss, **out}
