"""Gaussian (multiplicative) dropout.

Srivastava et al. 2014 (JMLR 15), section 10; Wang & Manning 2013, "Fast dropout training".
"""

from __future__ import annotations

import math

import torch

from ._validation import check_input, check_p


def gaussian_noise(
    shape: tuple[int, ...],
    p: float,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Multiplicative noise :math:`\varepsilon \sim \mathcal N(1, p / (1 - p))` of ``shape``."""
    std = math.sqrt(p / (1.0 - p))
    noise = torch.randn(shape, dtype=dtype, device=device, generator=generator)
    return noise.mul_(std).add_(1.0)


def gaussian_dropout(
    x: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    *,
    inplace: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Gaussian dropout: train :math:`y = x \odot \varepsilon`,
    :math:`\varepsilon \sim \mathcal N(1, \sigma^2)`, :math:`\sigma^2 = p / (1 - p)` (the
    moments of the inverted Bernoulli mask); eval :math:`y = x`. ``p = 1`` is rejected (infinite
    variance).

    Shape: any; output the same.
    """
    check_input(x, "gaussian_dropout", inplace=inplace)
    p = check_p(p, "gaussian_dropout", allow_one=False)
    if not training:
        return x
    noise = gaussian_noise(tuple(x.shape), p, dtype=x.dtype, device=x.device, generator=generator)
    return x.mul_(noise) if inplace else x * noise
