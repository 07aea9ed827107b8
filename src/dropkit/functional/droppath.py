"""DropPath (stochastic depth): drop a whole residual branch per sample or per batch.

Huang et al. 2016, "Deep Networks with Stochastic Depth" (arXiv:1603.09382); the name is from
FractalNet, Larsson et al. 2017 (arXiv:1605.07648). Use on the branch: ``x + drop_path(f(x))``.
"""

from __future__ import annotations

import torch

from ._validation import check_input, check_p
from .mask import shared_mask_dropout

_MODES = ("row", "batch")


def drop_path(
    input: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    mode: str = "row",
    scale_by_keep: bool = True,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    backend: str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Keep or drop all of each sample (``mode="row"``) or of the whole batch (``"batch"``).

    Mask :math:`b \sim \mathrm{Bernoulli}(q)`, :math:`q = 1 - p`, of shape ``(N, 1, ..., 1)``
    (row) or ``(1, ..., 1)`` (batch). Train :math:`y = b\,x / q` (``scale_by_keep=True``) or
    :math:`y = b\,x`; eval (or ``p = 0``) returns ``input`` itself (timm's ``drop_path`` and
    torchvision's ``stochastic_depth`` rule).

    The row mask for a batch of ``N`` is exactly
    ``bernoulli_mask((N, 1, ..., 1), p, seed=seed, offset=offset)``: sample ``n`` is kept iff
    the Philox word of stream position ``offset + n`` is at least ``round(p * 2^32)``. Any
    other implementation of stochastic depth (e.g. one that skips the dropped samples' compute)
    reproduces these decisions from the same ``seed`` and ``offset``. The output is one
    broadcast multiply ``input * (b / q)``, as timm's.

    Shape: input ``(N, *)``; output the same, with the input's strides.

    Example:
        >>> import torch
        >>> y = drop_path(torch.ones(4, 3), 0.5, seed=0)
        >>> bool(((y == 0) | (y == 2)).all() and (y == y[:, :1]).all())
        True
    """
    check_input(input, "drop_path")
    if mode not in _MODES:
        raise ValueError(f"drop_path: mode must be 'row' or 'batch', got {mode!r}")
    if input.dim() < 1:
        raise ValueError("drop_path expects input of shape (N, *) (at least 1 dim), got a scalar")
    p = check_p(p, "drop_path")
    if not training or p == 0.0:  # timm returns the input itself here
        return input
    check_input(input, "drop_path", inplace=inplace)
    first = 1 if mode == "row" else 0
    scale = (1.0 / (1.0 - p) if p < 1.0 else 0.0) if scale_by_keep else 1.0
    return shared_mask_dropout(
        input, p, tuple(range(first, input.dim())), scale=scale, inplace=inplace, seed=seed,
        offset=offset, backend=backend, generator=generator,
    )  # fmt: skip
