"""Bernoulli dropout with a configurable mask geometry: the op under every preset.

Hinton et al. 2012 (arXiv:1207.0580); Srivastava et al. 2014 (JMLR 15). Mask sharing along
``broadcast_dims`` is Keras' ``noise_shape`` / flax's ``broadcast_dims``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._validation import check_input, check_p
from .mask import bernoulli_mask, keep_scale, mask_shape, masked_scale, shared_dims


def scale_all(x: torch.Tensor, scale: float, *, inplace: bool = False) -> torch.Tensor:
    """``x * scale`` (in place with ``inplace``); exact zeros, never NaN, when ``scale == 0``."""
    if scale == 0.0:
        nothing_kept = torch.zeros((), dtype=torch.bool, device=x.device)
        return masked_scale(x, nothing_kept, 0.0, inplace=inplace)
    return x.mul_(scale) if inplace else x * scale


def dropout(
    x: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    *,
    inplace: bool = False,
    inverted: bool = True,
    broadcast_dims: Sequence[int] = (),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Dropout: zero elements with probability ``p``, sharing the mask along ``broadcast_dims``.

    With :math:`q = 1 - p` and :math:`m \sim \mathrm{Bernoulli}(q)` of the input's shape with
    ``broadcast_dims`` set to 1:

    * inverted (default): train :math:`y = m \odot x / q`, eval :math:`y = x` (``x`` itself);
    * standard (``inverted=False``): train :math:`y = m \odot x`, eval :math:`y = q\,x`.

    ``p = 1`` gives zeros with zero gradient (never NaN, even for ``inf`` inputs). ``training``
    defaults to True for every dropkit functional, as in ``torch.nn.functional.dropout``.

    Shape: x any shape ``(*)``; output the same shape, dtype and device.

    Args:
        x: floating-point tensor.
        p: drop probability in [0, 1].
        training: apply dropout (True) or the evaluation rule (False).
        inplace: write the result into ``x`` (not allowed on a leaf that requires grad).
        inverted: scale by 1/q in training (True) or by q in evaluation (False).
        broadcast_dims: dims along which one mask value is shared (negative allowed).
        generator: ``torch.Generator`` for the mask; default torch's global generator.

    Example:
        >>> import torch
        >>> y = dropout(torch.ones(2, 3), p=0.5, broadcast_dims=(1,))
        >>> bool(((y == 0) | (y == 2)).all() and (y == y[:, :1]).all())
        True
    """
    x = check_input(x, "dropout", inplace=inplace)
    p = check_p(p, "dropout")
    dims = shared_dims(x.shape, broadcast_dims, "dropout")
    if not training:
        return x if inverted else scale_all(x, 1.0 - p, inplace=inplace)
    keep = bernoulli_mask(mask_shape(x.shape, dims), p, device=x.device, generator=generator)
    return masked_scale(x, keep, keep_scale(p) if inverted else 1.0, inplace=inplace)
