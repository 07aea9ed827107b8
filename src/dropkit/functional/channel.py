"""Channel ("spatial") dropout: one Bernoulli draw per (sample, channel).

Tompson et al. 2015, "Efficient Object Localization Using Convolutional Networks"
(arXiv:1411.4280). Inputs are channels-first and batched; the rank is checked strictly (unlike
``torch.nn.functional.dropout2d``, a 3-D input is never reinterpreted as 1-D dropout).
"""

from __future__ import annotations

import torch

from ._validation import check_input, check_rank
from .dropout import dropout

_LAYOUTS = {1: "(N, C, L)", 2: "(N, C, H, W)", 3: "(N, C, D, H, W)"}


def _channel_dropout(
    x: torch.Tensor, p: float, training: bool, inplace: bool, rng: dict, spatial: int
) -> torch.Tensor:
    owner = f"dropout{spatial}d"
    check_input(x, owner, inplace=inplace)
    check_rank(x, 2 + spatial, _LAYOUTS[spatial], owner)
    dims = tuple(range(2, 2 + spatial))
    return dropout(x, p, training, inplace=inplace, broadcast_dims=dims, **rng)


def dropout1d(
    x: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    *,
    inplace: bool = False,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    backend: str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Channel dropout for sequences ``(N, C, L)``: train :math:`y = m_{nc}\,x / q` with
    :math:`m` of shape ``(N, C, 1)``; eval :math:`y = x` (Tompson et al. 2015)."""
    return _channel_dropout(
        x,
        p,
        training,
        inplace,
        dict(seed=seed, offset=offset, backend=backend, generator=generator),
        1,
    )


def dropout2d(
    x: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    *,
    inplace: bool = False,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    backend: str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Channel dropout for images ``(N, C, H, W)``: train :math:`y = m_{nc}\,x / q` with
    :math:`m` of shape ``(N, C, 1, 1)``; eval :math:`y = x` (Tompson et al. 2015)."""
    return _channel_dropout(
        x,
        p,
        training,
        inplace,
        dict(seed=seed, offset=offset, backend=backend, generator=generator),
        2,
    )


def dropout3d(
    x: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    *,
    inplace: bool = False,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    backend: str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Channel dropout for volumes ``(N, C, D, H, W)``: train :math:`y = m_{nc}\,x / q` with
    :math:`m` of shape ``(N, C, 1, 1, 1)``; eval :math:`y = x` (Tompson et al. 2015)."""
    return _channel_dropout(
        x,
        p,
        training,
        inplace,
        dict(seed=seed, offset=offset, backend=backend, generator=generator),
        3,
    )
