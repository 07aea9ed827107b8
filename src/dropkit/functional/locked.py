"""Locked (variational) dropout for sequences: one mask per sequence, shared over time.

Gal & Ghahramani 2016, "A Theoretically Grounded Application of Dropout in Recurrent Neural
Networks" (arXiv:1512.05287).
"""

from __future__ import annotations

import torch

from ._validation import check_input, check_rank
from .dropout import dropout


def locked_dropout(
    x: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    *,
    batch_first: bool = False,
    inplace: bool = False,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    backend: str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Dropout whose mask is constant along the time axis.

    Time-major ``(T, N, H)`` uses a mask ``(1, N, H)``; ``batch_first`` input ``(N, T, H)`` a
    mask ``(N, 1, H)``. Train :math:`y_t = m \odot x_t / q` for every step; eval :math:`y = x`.
    """
    check_input(x, "locked_dropout", inplace=inplace)
    layout = "(N, T, H)" if batch_first else "(T, N, H)"
    check_rank(x, 3, layout, "locked_dropout")
    time_dim = 1 if batch_first else 0
    return dropout(
        x,
        p,
        training,
        inplace=inplace,
        broadcast_dims=(time_dim,),
        seed=seed,
        offset=offset,
        backend=backend,
        generator=generator,
    )
