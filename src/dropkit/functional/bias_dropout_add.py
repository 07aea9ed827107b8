"""Fused ``residual + dropout(x + bias)``, the tail of every transformer sub-block.

The Megatron-LM / apex pattern: one pass forward (read x, bias, residual; write out) and one
pass backward (the mask is regenerated from the seed, never stored), instead of three
elementwise ops and a saved mask.
"""

from __future__ import annotations

import torch

from dropkit.rng.backend import resolve
from dropkit.rng.ops import bias_dropout_add as _bias_dropout_add_op

from ._validation import check_input, check_p
from .mask import keep_scale, resolve_seed


def bias_dropout_add(
    x: torch.Tensor,
    bias: torch.Tensor,
    residual: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    *,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    backend: str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""``residual + dropout(x + bias)`` with a counter-based mask, fused.

    Train :math:`y = r + m \odot (x + b) / q`, :math:`m` the Philox keep mask of stream
    positions ``offset + i`` (the same mask :func:`dropout` would draw for ``x`` with this seed);
    eval :math:`y = r + x + b`. Backward: :math:`dx = m \odot dy / q` (mask regenerated),
    :math:`db = \sum dx` over all leading dims, :math:`dr = dy`.

    Shape: x and residual ``(*, H)`` (same shape), bias ``(H,)``; output ``(*, H)``.
    """
    check_input(x, "bias_dropout_add")
    check_input(residual, "bias_dropout_add")
    check_input(bias, "bias_dropout_add")
    p = check_p(p, "bias_dropout_add")
    if residual.shape != x.shape:
        raise ValueError(
            f"bias_dropout_add: residual must have x's shape {tuple(x.shape)}, got "
            f"{tuple(residual.shape)}"
        )
    if x.dim() < 1 or bias.shape != x.shape[-1:]:
        raise ValueError(
            f"bias_dropout_add: bias must have shape (H,) = {tuple(x.shape[-1:])} (the last dim "
            f"of x), got {tuple(bias.shape)}"
        )
    if not (x.dtype == bias.dtype == residual.dtype):
        raise TypeError(
            f"bias_dropout_add: x, bias and residual must share a dtype, got {x.dtype}, "
            f"{bias.dtype}, {residual.dtype}"
        )
    if not training:
        return residual + (x + bias)
    seed_t, offset = resolve_seed(seed, offset, generator, x.numel())
    scale = keep_scale(p)
    return _bias_dropout_add_op(
        x, bias, residual, seed_t, offset, p, scale, resolve(x.device, backend)
    )
