"""Gaussian (multiplicative) dropout.

Srivastava et al. 2014 (JMLR 15), section 10; Wang & Manning 2013, "Fast dropout training".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from dropkit.rng.backend import resolve

from ._validation import check_input, check_p
from .mask import batch_first, random_words, resolve_seed


def standard_normal(
    shape: Sequence[int],
    *,
    device: torch.device | str | None = None,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    backend: str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Standard normals (float64) by Box-Muller on the Philox stream.

    Positions ``2k`` and ``2k + 1`` share the words :math:`(w_{2k}, w_{2k+1})`:
    :math:`u_1 = (w_{2k} + 1)\,2^{-32} \in (0, 1]`, :math:`u_2 = w_{2k+1} 2^{-32}`,
    :math:`z_{2k} = \sqrt{-2 \ln u_1} \cos 2\pi u_2`, :math:`z_{2k+1} = \sqrt{-2 \ln u_1} \sin
    2\pi u_2` (Box & Muller 1958); element ``i`` takes position ``offset + i``, as
    :func:`dropkit.rng.normal`.
    """
    shape = tuple(int(n) for n in shape)
    n = math.prod(shape)
    start = offset - offset % 2  # pairs begin at even positions
    count = (offset + n + 1) // 2 * 2 - start
    words = random_words(
        count, device=device, seed=seed, offset=start, backend=backend, generator=generator
    ).to(torch.float64)
    radius = torch.sqrt(-2.0 * torch.log((words[0::2] + 1.0) / 2.0**32))
    angle = (2.0 * math.pi / 2.0**32) * words[1::2]
    z = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=-1).view(-1)
    return z[offset - start : offset - start + n].view(shape)


def gaussian_noise(
    shape: Sequence[int],
    p: float,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    backend: str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Multiplicative noise :math:`\varepsilon = 1 + \sqrt{p / (1 - p)}\,z` of ``shape``, with
    ``z`` from :func:`standard_normal` (computed in float64, then rounded to ``dtype``)."""
    z = standard_normal(
        shape, device=device, seed=seed, offset=offset, backend=backend, generator=generator
    )
    return (1.0 + math.sqrt(p / (1.0 - p)) * z).to(dtype)


@torch.library.custom_op("dropkit::gaussian_dropout", mutates_args=())
def _gaussian_op(
    x: torch.Tensor, seed: torch.Tensor, offset: int, p: float, backend: str
) -> torch.Tensor:
    """``x * noise`` with the noise from the Philox stream (see :func:`standard_normal`)."""
    return x * _noise(seed, tuple(x.shape), p, x.dtype, x.device, offset, backend)


@_gaussian_op.register_fake
def _(x, seed, offset, p, backend):
    return torch.empty_like(x)


def _gaussian_setup(ctx, inputs, output) -> None:
    x, seed, offset, p, backend = inputs
    ctx.save_for_backward(seed)  # 8 bytes instead of a full-size noise tensor
    ctx.args = (tuple(x.shape), p, x.dtype, x.device, offset, backend)


def _gaussian_backward(ctx, grad):
    (seed,) = ctx.saved_tensors
    return grad * _noise(seed, *ctx.args), None, None, None, None


_gaussian_op.register_autograd(_gaussian_backward, setup_context=_gaussian_setup)


def _noise(seed, shape, p, dtype, device, offset, backend) -> torch.Tensor:
    if torch.device(device).type == "meta":
        return torch.empty(shape, dtype=dtype, device=device)
    return gaussian_noise(
        shape, p, dtype=dtype, device=device, seed=seed, offset=offset, backend=backend
    )


class _GaussianDropout(torch.autograd.Function):
    """``x * noise``, linear in ``x``: backward and jvp apply the same regenerated noise to the
    gradient / tangent (only the 0-d seed is saved). Under ``vmap``, ``randomness="different"``
    numbers the batched tensor as one (entry ``b`` takes positions ``offset + b * numel + i``),
    ``"same"`` uses one noise tensor for every entry, ``"error"`` raises."""

    @staticmethod
    def forward(x, seed, offset, p, backend):
        return x * _noise(seed, tuple(x.shape), p, x.dtype, x.device, offset, backend)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        _, seed, offset, p, backend = inputs
        ctx.save_for_backward(seed)  # 8 bytes instead of a full-size noise tensor
        ctx.save_for_forward(seed)
        ctx.args = (offset, p, backend)

    @staticmethod
    def backward(ctx, grad):
        (seed,) = ctx.saved_tensors
        return _GaussianDropout.apply(grad, seed, *ctx.args), None, None, None, None

    @staticmethod
    def jvp(ctx, x_t, *_):
        (seed,) = ctx.saved_tensors
        return _GaussianDropout.apply(x_t, seed, *ctx.args)

    @staticmethod
    def vmap(info, in_dims, x, seed, offset, p, backend):
        x, seed = batch_first(info, in_dims, x, seed)
        if info.randomness == "different":
            return _GaussianDropout.apply(x, seed, offset, p, backend), 0
        return x * _noise(seed, tuple(x.shape[1:]), p, x.dtype, x.device, offset, backend), 0


def gaussian_dropout(
    input: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    backend: str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Gaussian dropout: train :math:`y = x \odot \varepsilon`,
    :math:`\varepsilon \sim \mathcal N(1, \sigma^2)`, :math:`\sigma^2 = p / (1 - p)` (the
    moments of the inverted Bernoulli mask); eval :math:`y = x`. ``p = 1`` is rejected (infinite
    variance). The noise is regenerated from the seed in backward, never stored.

    Shape: any; output the same.
    """
    x = input
    check_input(x, "gaussian_dropout")
    p = check_p(p, "gaussian_dropout", allow_one=False)
    if not training or p == 0.0:  # no noise: the input itself, as the other variants
        return x
    check_input(x, "gaussian_dropout", inplace=inplace)
    seed_t, offset = resolve_seed(seed, offset, generator, x.numel())
    if inplace:
        return x.mul_(_noise(seed_t, tuple(x.shape), p, x.dtype, x.device, offset, backend))
    if torch.compiler.is_compiling():  # opaque to the compiler, which does not trace a jvp
        return _gaussian_op(x, seed_t, offset, p, resolve(x.device, backend))
    return _GaussianDropout.apply(x, seed_t, offset, p, resolve(x.device, backend))
