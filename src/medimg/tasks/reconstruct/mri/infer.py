"""Reconstruct undersampled multi-coil k-space with any method: classical or a trained network.

:func:`reconstruct` is the one entry point used by ``predict``, ``evaluate``, the demo and the
benches. It checks the inputs once (one-line :class:`~medimg.errors.InputError` for real or
non-finite k-space, a mask that does not fit, no ACS lines when coil maps must be estimated),
runs slice batches under ``torch.no_grad`` and returns float32 magnitudes ``(S, H, W)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from medimg.engine import resolve_device
from medimg.errors import InputError
from medimg.physics.coils import espirit_maps
from medimg.tasks.reconstruct.mri.baselines import cg_sense, cs_tv, cs_wavelet, zero_filled
from medimg.tasks.reconstruct.mri.models import check_inputs
from medimg.tasks.reconstruct.mri.train import load_model, physics_for

__all__ = ["CLASSICAL", "Reconstructor", "SliceCheck", "as_kspace", "mask_from_kspace"]
__all__ += ["reconstruct"]

#: classical methods by name; each maps (kspace (B, N, H, W), mask, maps) -> complex/real image
CLASSICAL: dict[str, Callable[..., torch.Tensor]] = {
    "zero_filled": lambda y, m, s: zero_filled(y),
    "cg_sense": lambda y, m, s: cg_sense(y, m, s),
    "cs_wavelet": lambda y, m, s: cs_wavelet(y, m, s),
    "cs_tv": lambda y, m, s: cs_tv(y, m, s),
}


def as_kspace(kspace: np.ndarray | torch.Tensor, name: str = "kspace") -> torch.Tensor:
    """Multi-coil k-space as complex64 ``(S, N, H, W)``; a single slice ``(N, H, W)`` gets S=1.

    Real arrays (magnitudes, or real/imaginary stacked in a last axis of 2) are refused with the
    fix, because treating them as k-space silently gives a wrong image.
    """
    k = torch.as_tensor(np.asarray(kspace)) if not isinstance(kspace, torch.Tensor) else kspace
    if not k.is_complex():
        hint = " (last axis of 2: use torch.view_as_complex)" if k.shape[-1:] == (2,) else ""
        raise InputError(f"{name} must be complex k-space, got {k.dtype}{hint}")
    k = k[None] if k.ndim == 3 else k
    if k.ndim != 4:
        raise InputError(f"{name} must be multi-coil (S, N, H, W), got shape {tuple(k.shape)}")
    return k.to(torch.complex64)


def mask_from_kspace(kspace: torch.Tensor) -> torch.Tensor:
    """The sampled phase-encode columns ``(W,)``: those non-zero in any slice, coil or row."""
    return (kspace.abs().sum(dim=(0, 1, 2)) > 0).float()


@dataclasses.dataclass
class SliceCheck:
    """The safeguard's verdict on one volume (:mod:`~medimg.tasks.reconstruct.mri.safeguard`):
    per-slice ``scores``, the ``thresholds`` applied, which slices are ``flagged``, and the
    classical (CG-SENSE) magnitudes ``(S, H, W)`` to fall back on."""

    scores: dict[str, np.ndarray]
    thresholds: dict[str, float]
    acceleration: float
    flagged: np.ndarray
    classical: np.ndarray


def _batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


class Reconstructor:
    """One method, ready to run on many volumes.

    ``method`` is a classical name (:data:`CLASSICAL`) or ``"net"``, with ``model`` a run/model
    folder (``None``: the shipped default) or an ``nn.Module``. ``safeguard``: check each slice
    of a network's result against the thresholds stored with the model (or these
    :class:`~medimg.tasks.reconstruct.mri.safeguard.SafeguardThresholds`); the verdict of the
    last call is in :attr:`last_check` (``None`` when nothing was checked).
    """

    def __init__(
        self,
        method: str = "net",
        model: str | Path | nn.Module | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 4,
        safeguard: bool | object = False,
    ) -> None:
        if method not in (*CLASSICAL, "net"):
            raise InputError(
                f"method must be one of {', '.join([*CLASSICAL, 'net'])}, got {method!r}"
            )
        self.method, self.device, self.batch_size = method, resolve_device(device), batch_size
        self.net: nn.Module | None = None
        if method == "net":
            self.net = model if isinstance(model, nn.Module) else load_model(model)[0]
            self.net = self.net.to(self.device).eval()
        self.thresholds = None
        if safeguard is not False and self.net is not None:
            from medimg.tasks.reconstruct.mri.safeguard import load_thresholds

            own = None if isinstance(model, nn.Module) else load_thresholds(model)
            self.thresholds = own if safeguard is True else safeguard
        self.last_check: SliceCheck | None = None

    @property
    def needs_maps(self) -> bool:
        """Whether coil maps must be given or estimated (everything except RSS and the VarNet)."""
        if self.method == "zero_filled":
            return False
        return self.method != "net" or bool(getattr(self.net, "needs_maps", True))

    def __call__(
        self,
        kspace: np.ndarray | torch.Tensor,
        mask: np.ndarray | torch.Tensor | None = None,
        maps: torch.Tensor | None = None,
        progress: bool = False,
    ) -> np.ndarray:
        """Magnitude images ``(S, H, W)`` float32 of k-space ``(S, N, H, W)``.

        ``mask``: ``(W,)``, ``(H, W)`` or ``(S, H, W)``; ``None`` takes the non-zero columns.
        ``maps``: coil maps ``(N, H, W)`` or ``(S, N, H, W)``; ``None`` estimates them by ESPIRiT
        where the method needs them.
        """
        y = as_kspace(kspace)
        m = mask_from_kspace(y) if mask is None else torch.as_tensor(np.asarray(mask)).float()
        check_inputs(y, m, need_acs=self.needs_maps and maps is None)
        out, scores, classical = [], [], []
        for sl in tqdm(list(_batches(y.shape[0], self.batch_size)), disable=not progress,
                       desc=self.method, leave=False):  # fmt: skip
            yb = y[sl].to(self.device)
            mb = m[sl] if m.ndim == 3 and m.shape[0] == y.shape[0] else m
            mb = mb.to(self.device)
            sb = None
            if maps is not None:
                sb = torch.as_tensor(maps)
                sb = (sb[sl] if sb.ndim == 4 else sb).to(self.device)
            elif self.needs_maps:
                sb = espirit_maps(yb, mb)
            with torch.no_grad():
                x = self._run(yb, mb, sb)
                out.append(x.abs().float().cpu())
                if self.thresholds is not None:
                    from medimg.tasks.reconstruct.mri.safeguard import check_slices

                    sc, c = check_slices(self.net, yb, mb, x, sb)  # type: ignore[arg-type]
                    scores.append(sc)
                    classical.append(c.abs().float().cpu())
        self.last_check = None
        if self.thresholds is not None:
            from medimg.physics.masks import acceleration_of
            from medimg.tasks.reconstruct.mri.safeguard import flagged

            accel = acceleration_of(m[0] if m.ndim == 3 else m, tuple(y.shape[-2:]))
            merged = {k: np.concatenate([s[k] for s in scores]) for k in scores[0]}
            self.last_check = SliceCheck(merged, self.thresholds.at(accel), accel,
                                         flagged(merged, self.thresholds, accel),
                                         torch.cat(classical).numpy())  # fmt: skip
        return torch.cat(out).numpy()

    def _run(self, y: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor | None) -> torch.Tensor:
        if self.net is None:
            return CLASSICAL[self.method](y, mask, maps)
        if mask.ndim == 1:
            mask = mask.expand(y.shape[-2], -1)
        return self.net(y, physics_for(self.net, mask, maps))


def reconstruct(
    kspace: np.ndarray | torch.Tensor,
    mask: np.ndarray | torch.Tensor | None = None,
    method: str = "net",
    *,
    model: str | Path | nn.Module | None = None,
    maps: torch.Tensor | None = None,
    device: str = "cpu",
) -> np.ndarray:
    """Reconstruct multi-coil k-space ``(S, N, H, W)`` with ``method``; see :class:`Reconstructor`.

    Examples
    --------
    >>> import torch
    >>> from medimg.physics.masks import equispaced_mask
    >>> y = torch.randn(2, 4, 32, 32, dtype=torch.complex64)
    >>> mask = equispaced_mask((32, 32), 4, 0.16)
    >>> reconstruct(y * mask, mask, "zero_filled").shape
    (2, 32, 32)
    """
    return Reconstructor(method, model, device)(kspace, mask, maps)
