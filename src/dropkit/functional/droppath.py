"""DropPath (stochastic depth): drop a whole residual branch per sample or per batch.

Huang et al. 2016, "Deep Networks with Stochastic Depth" (arXiv:1603.09382); the name is from
FractalNet, Larsson et al. 2017 (arXiv:1605.07648). Use on the branch: ``x + drop_path(f(x))``.
"""

from __future__ import annotations

import torch

from ._validation import check_input, check_p
from .dropout import dropout

_MODES = ("row", "batch")


def drop_path(
    x: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    *,
    mode: str = "row",
    scale_by_keep: bool = True,
    inplace: bool = False,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    backend: str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Keep or drop all of each sample (``mode="row"``) or of the whole batch (``"batch"``).

    Mask :math:`b \sim \mathrm{Bernoulli}(q)` of shape ``(N, 1, ..., 1)`` (row) or
    ``(1, ..., 1)`` (batch). Train :math:`y = b\,x / q` (``scale_by_keep=True``) or
    :math:`y = b\,x`; eval :math:`y = x` either way (timm's ``drop_path`` and torchvision's
    ``stochastic_depth`` rule).

    Shape: x ``(N, *)``; output the same.
    """
    check_input(x, "drop_path", inplace=inplace)
    if mode not in _MODES:
        raise ValueError(f"drop_path: mode must be 'row' or 'batch', got {mode!r}")
    if x.dim() < 1:
        raise ValueError("drop_path expects input of shape (N, *) (at least 1 dim), got a scalar")
    check_p(p, "drop_path")
    if not training:
        return x
    first = 1 if mode == "row" else 0
    dims = tuple(range(first, x.dim()))
    return dropout(
        x,
        p,
        True,
        inplace=inplace,
        inverted=scale_by_keep,
        broadcast_dims=dims,
        seed=seed,
        offset=offset,
        backend=backend,
        generator=generator,
    )
