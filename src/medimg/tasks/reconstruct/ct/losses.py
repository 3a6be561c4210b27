"""Losses of the CT denoisers: MSE, perceptual (own autoencoder features), WGAN-GP.

The GAN is trained through the one engine, which owns one optimizer: :class:`GANPair` holds
generator, critic and the frozen feature extractor, and :func:`wgan_losses` returns a sum whose
gradient w.r.t. the generator is the generator loss and w.r.t. the critic is the critic loss
(the generator term sees the critic through detached weights, the critic term sees a detached
fake), so one backward pass updates both players, as alternating updates with ``n_critic = 1``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from medimg.tasks.reconstruct.ct.models import REDCNN, Critic, PatchAutoencoder

__all__ = ["GANPair", "gradient_penalty", "local_mean_loss", "perceptual_loss", "wgan_losses"]


def perceptual_loss(
    extractor: PatchAutoencoder, pred: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """Mean over stages of the MSE between extractor features of ``pred`` and ``target``."""
    fp, ft = extractor.features(pred), extractor.features(target)
    return sum(F.mse_loss(a, b.detach()) for a, b in zip(fp, ft)) / len(fp)


def local_mean_loss(pred: torch.Tensor, target: torch.Tensor, size: int = 9) -> torch.Tensor:
    """Mean-preserving term: mean square of the ``size`` x ``size`` local means of
    ``pred - target``, both clipped to the soft-tissue window [-160, 240] HU (``HU / 1000``).

    Pixel-wise MSE barely notices a uniform shift of a few HU under noise of tens of HU; a box
    mean of ``size**2`` pixels averages the residual noise away and leaves the shift, so this
    term keeps the HU of uniform regions (bone and air edges, clipped, do not dominate it)."""
    lo, hi = -0.16, 0.24
    diff = pred.clamp(lo, hi) - target.clamp(lo, hi)
    return F.avg_pool2d(diff, size, stride=max(1, size // 3)).pow(2).mean()


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """``E[(||grad D(x_hat)||_2 - 1)^2]`` on random interpolates (Gulrajani et al. 2017)."""
    eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


class GANPair(nn.Module):
    """Generator (a :class:`REDCNN`), critic and frozen feature extractor, saved together."""

    def __init__(
        self, features: int = 32, critic_features: int = 32, ae_features: int = 16, kernel: int = 5,
        mean_restore_px: float = 0.0,
    ) -> None:  # fmt: skip
        super().__init__()
        self.generator = REDCNN(features=features, kernel=kernel, mean_restore_px=mean_restore_px)
        self.critic = Critic(features=critic_features)
        self.extractor = PatchAutoencoder(features=ae_features)
        self.extractor.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.generator(x)


def wgan_losses(
    pair: GANPair,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    lambda_perc: float = 0.1,
    lambda_adv: float = 1e-3,
    lambda_gp: float = 10.0,
    lambda_mse: float = 1.0,
    lambda_mean: float = 0.0,
) -> dict[str, torch.Tensor]:
    """Generator loss ``mse + lambda_perc perc - lambda_adv D(G(x)) + lambda_mean mean`` (the
    mean-preserving :func:`local_mean_loss`) plus critic loss ``D(G(x)) - D(y) + lambda_gp GP``,
    combined as explained in the module text."""
    fake = pair.generator(x)
    frozen = {k: v.detach() for k, v in pair.critic.named_parameters()}
    adv = -functional_call(pair.critic, frozen, (fake,)).mean()
    mse = F.mse_loss(fake, target)
    perc = perceptual_loss(pair.extractor, fake, target)
    g_loss = lambda_mse * mse + lambda_perc * perc + lambda_adv * adv
    if lambda_mean > 0:
        g_loss = g_loss + lambda_mean * local_mean_loss(fake, target)
    fake_d = fake.detach()
    wdist = pair.critic(target).mean() - pair.critic(fake_d).mean()
    gp = gradient_penalty(pair.critic, target, fake_d)
    d_loss = -wdist + lambda_gp * gp
    return {"loss": g_loss + d_loss, "mse": mse, "perc": perc, "wdist": wdist, "gp": gp}
