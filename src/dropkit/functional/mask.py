"""Mask geometry, counter-based keep masks and the masked rescale shared by every variant.

A keep mask has the input's shape with the *shared* dims set to 1 (Keras' ``noise_shape``,
flax's ``broadcast_dims``); the output is ``where(keep, x * scale, 0)``. Masks come from the
Philox stream of :mod:`dropkit.rng`: mask element ``i`` (row-major over the *mask* tensor) takes
stream position ``offset + i``, so a mask is a pure function of ``(seed, offset, shape, p)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from dropkit.rng import backend as rng_backend
from dropkit.rng.ops import philox_words, threshold


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


def resolve_seed(
    seed: int | torch.Tensor | None, offset: int, generator: torch.Generator | None
) -> tuple[torch.Tensor, int]:
    """The call's seed as a 0-d int64 tensor: ``seed`` if given, else one fresh draw from
    ``generator`` (default: torch's global generator)."""
    seed_t, offset = rng_backend.check_seed(seed, offset)
    return (rng_backend.draw_seed(generator) if seed_t is None else seed_t), offset


def random_words(
    n: int,
    *,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    backend: str | None = None,
) -> torch.Tensor:
    """The Philox words (int64 in [0, 2^32)) of stream positions ``offset .. offset + n - 1``."""
    device = torch.device("cpu" if device is None else device)
    seed_t, offset = resolve_seed(seed, offset, generator)
    return philox_words(seed_t, offset, n, device, rng_backend.resolve(device, backend))


def bernoulli_mask(
    shape: Sequence[int],
    p: float,
    *,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    backend: str | None = None,
) -> torch.Tensor:
    """Keep mask (bool, True = kept with probability ``1 - p``) of ``shape``.

    Element ``i`` is kept iff the Philox word of position ``offset + i`` is at least
    ``round(p * 2^32)`` (unsigned; nothing is kept at ``p = 1``). Without ``seed``, the seed is
    drawn from ``generator`` or torch's global generator, so ``torch.manual_seed`` reproduces the
    mask and activation checkpointing replays it. Bit-identical to
    :func:`dropkit.rng.keep_mask` on every backend but ``"torch"``.
    """
    shape = tuple(int(n) for n in shape)
    if p >= 1.0:  # nothing kept; the seed is still drawn so later draws do not shift
        resolve_seed(seed, offset, generator)
        return torch.zeros(shape, dtype=torch.bool, device=device)
    words = random_words(
        math.prod(shape), device=device, generator=generator, seed=seed, offset=offset,
        backend=backend,
    )  # fmt: skip
    return (words >= threshold(p)).view(shape)


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
