"""Mask geometry and the masked rescale shared by every Bernoulli variant.

A keep mask has the input's shape with the *shared* dims set to 1 (Keras' ``noise_shape``,
flax's ``broadcast_dims``); the output is ``where(keep, x * scale, 0)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def shared_dims(shape: Sequence[int], broadcast_dims: Sequence[int], owner: str) -> tuple[int, ...]:
    """Normalise ``broadcast_dims`` (negative allowed) against a rank, sorted and unique."""
    ndim = len(shape)
    out = set()
    for d in broadcast_dims:
        if isinstance(d, bool) or not isinstance(d, int):
            raise TypeError(f"{owner}: broadcast_dims must be ints, got {tuple(broadcast_dims)!r}")
        if not -ndim <= d < ndim:
            raise ValueError(
                f"{owner}: broadcast dim {d} is out of range for an input with {ndim} dims "
                f"(shape {tuple(shape)}); allowed dims are -{ndim}..{ndim - 1}"
            )
        out.add(d % ndim)
    return tuple(sorted(out))


def mask_shape(shape: Sequence[int], dims: Sequence[int]) -> tuple[int, ...]:
    """``shape`` with the (normalised) shared ``dims`` set to 1."""
    return tuple(1 if i in dims else n for i, n in enumerate(shape))


def bernoulli_mask(
    shape: Sequence[int],
    p: float,
    *,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Keep mask (bool, True = kept with probability ``1 - p``): ``U >= p``, ``U ~ U[0, 1)``.

    Drawn from ``generator`` or torch's default generator for ``device``, so
    ``torch.manual_seed`` makes it reproducible and activation checkpointing replays it.
    """
    return torch.rand(tuple(shape), device=device, generator=generator) >= p


def keep_scale(p: float) -> float:
    """Inverted-dropout scale ``1 / (1 - p)``, defined as 0 at ``p = 1`` (zeros, never NaN)."""
    return 1.0 / (1.0 - p) if p < 1.0 else 0.0


def masked_scale(
    x: torch.Tensor, keep: torch.Tensor, scale: float | torch.Tensor, *, inplace: bool = False
) -> torch.Tensor:
    """``where(keep, x * scale, 0)``; ``inplace`` writes the result into ``x``.

    ``where`` (rather than ``x * keep * scale``) means a dropped ``inf`` gives 0, not NaN, and
    the gradient is ``where(keep, dy * scale, 0)``.
    """
    if inplace:
        return x.mul_(scale).masked_fill_(~keep, 0)
    return torch.where(keep, x * scale, torch.zeros((), dtype=x.dtype, device=x.device))
