"""Locked (variational) dropout for sequences: one mask per sequence, shared over time.

Gal & Ghahramani 2016, "A Theoretically Grounded Application of Dropout in Recurrent Neural
Networks" (arXiv:1512.05287). The ``N * H`` mask values come from the Philox stream and the
output is one broadcast multiply, as in the AWD-LSTM formula ``x * mask``.
"""

from __future__ import annotations

import torch

from ._validation import check_input, check_p, check_rank
from .mask import keep_scale, shared_mask_dropout


def locked_dropout(
    input: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    batch_first: bool = False,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    backend: str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Dropout whose mask is constant along the time axis.

    Time-major ``(T, N, H)`` uses a mask ``(1, N, H)``; ``batch_first`` input ``(N, T, H)`` a
    mask ``(N, 1, H)``; mask element ``n * H + h`` takes Philox position ``offset + n * H + h``
    either way, so both layouts of one batch get the same mask. Train
    :math:`y_t = m \odot x_t / q` for every step, :math:`m \sim \mathrm{Bernoulli}(1 - p)`;
    eval (or ``p = 0``) returns ``input`` itself.

    Shape: ``(T, N, H)`` or ``(N, T, H)``; output the same, with the input's strides.

    Example:
        >>> import torch
        >>> y = locked_dropout(torch.ones(5, 2, 3), 0.5, seed=3)
        >>> bool((y == y[:1]).all())
        True
    """
    check_input(input, "locked_dropout")
    layout = "(N, T, H)" if batch_first else "(T, N, H)"
    check_rank(input, 3, layout, "locked_dropout")
    p = check_p(p, "locked_dropout")
    if not training or p == 0.0:  # torch returns the input itself here
        return input
    check_input(input, "locked_dropout", inplace=inplace)
    time_dim = 1 if batch_first else 0
    return shared_mask_dropout(
        input, p, (time_dim,), scale=keep_scale(p), inplace=inplace, seed=seed, offset=offset,
        backend=backend, generator=generator,
    )  # fmt: skip
