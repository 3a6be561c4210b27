"""Networks: a 2D U-Net generator (MONAI), a PatchGAN discriminator, and the two trainable
wholes the engine sees: :class:`PairedModel` (U-Net, optionally pix2pix's adversarial term)
and :class:`CycleModel` (two generators, two discriminators; CycleGAN).

The engine owns one optimizer, so the adversarial games use the trick of the CT denoiser's
WGAN (:mod:`medimg.tasks.reconstruct.ct.losses`): generator terms see the discriminators
through detached weights (:func:`torch.func.functional_call`), discriminator terms see detached
fakes, and one backward pass of their sum updates both players. Losses are least-squares GAN
(LSGAN, as CycleGAN's authors use).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.nets import BasicUNet
from torch import nn
from torch.func import functional_call

__all__ = ["CycleModel", "PairedModel", "PatchDiscriminator", "build_model", "generator"]


def generator(channels: tuple[int, ...]) -> nn.Module:
    """A 2D U-Net, 1 channel in and out: MONAI's ``BasicUNet`` (four poolings, so sizes are
    multiples of 16; ``channels``: its six feature counts) with affine instance norm. MONAI's
    residual ``UNet`` learnt this mapping several times slower on CPU budgets (a batch it had
    to fit went from 0.69 to 0.46 L1 in 60 steps where this went from 0.11 to 0.065)."""
    return BasicUNet(spatial_dims=2, in_channels=1, out_channels=1, features=tuple(channels),
                     norm=("instance", {"affine": True}))  # fmt: skip


class PatchDiscriminator(nn.Module):
    """pix2pix's PatchGAN with three stride-2 layers (a 22-pixel receptive field): one score
    per patch. Written here because MONAI's ``PatchDiscriminator`` returns every layer's
    features (for feature matching), more than these losses need."""

    def __init__(self, in_channels: int = 1, features: int = 32):
        super().__init__()
        f = features
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, f, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(f, 2 * f, 4, 2, 1), nn.InstanceNorm2d(2 * f), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * f, 2 * f, 4, 2, 1), nn.InstanceNorm2d(2 * f), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * f, 1, 3, 1, 1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _frozen(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``net(x)`` with its weights detached: gradients reach ``x`` only."""
    return functional_call(net, {k: v.detach() for k, v in net.named_parameters()}, (x,))


def _lsgan_d(disc: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((disc(real) - 1).pow(2).mean() + disc(fake.detach()).pow(2).mean())


class PairedModel(nn.Module):
    """U-Net ``generator``; with ``adversarial > 0`` also a conditional PatchGAN (pix2pix:
    the discriminator sees source and output side by side)."""

    def __init__(self, channels: tuple[int, ...], adversarial: float = 0.0):
        super().__init__()
        self.generator = generator(channels)
        self.adversarial = float(adversarial)
        self.discriminator = PatchDiscriminator(2) if adversarial > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.generator(x)

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        fake = self.generator(x)
        l1 = F.l1_loss(fake, y)
        out = {"loss": l1, "l1": l1}
        if self.discriminator is not None:
            d = self.discriminator
            g_adv = (_frozen(d, torch.cat([x, fake], 1)) - 1).pow(2).mean()
            d_loss = _lsgan_d(d, torch.cat([x, y], 1), torch.cat([x, fake], 1))
            out.update(loss=l1 + self.adversarial * g_adv + d_loss, g_adv=g_adv, d=d_loss)
        return out


class CycleModel(nn.Module):
    """CycleGAN: ``generator`` (source -> target, the one ``predict`` uses), ``inverse``
    (target -> source) and a PatchGAN per domain; trained on unpaired images with the LSGAN
    and cycle-consistency (L1, weight ``cycle``) losses."""

    def __init__(self, channels: tuple[int, ...], cycle: float = 10.0):
        super().__init__()
        self.generator, self.inverse = generator(channels), generator(channels)
        self.disc_target, self.disc_source = PatchDiscriminator(1), PatchDiscriminator(1)
        self.cycle = float(cycle)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.generator(x)

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        fake_y, fake_x = self.generator(x), self.inverse(y)
        adv = (_frozen(self.disc_target, fake_y) - 1).pow(2).mean()
        adv = adv + (_frozen(self.disc_source, fake_x) - 1).pow(2).mean()
        cyc = F.l1_loss(self.inverse(fake_y), x) + F.l1_loss(self.generator(fake_x), y)
        d_loss = _lsgan_d(self.disc_target, y, fake_y) + _lsgan_d(self.disc_source, x, fake_x)
        return {"loss": adv + self.cycle * cyc + d_loss, "cycle": cyc, "g_adv": adv, "d": d_loss}


def build_model(channels: tuple[int, ...], *, unpaired: bool = False, adversarial: float = 0.0,
                cycle: float = 10.0) -> nn.Module:  # fmt: skip
    """The trainable whole for a config: :class:`CycleModel` or :class:`PairedModel`."""
    if unpaired:
        return CycleModel(channels, cycle)
    return PairedModel(channels, adversarial)
