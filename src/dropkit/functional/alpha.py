"""Alpha dropout and feature alpha dropout for self-normalising (SELU) networks.

Klambauer et al. 2017, "Self-Normalizing Neural Networks" (arXiv:1706.02515), section 3.
"""

from __future__ import annotations

import torch

from dropkit.reference.alpha import ALPHA_PRIME, alpha_dropout_affine

from ._validation import check_input, check_p
from .mask import bernoulli_mask, mask_shape


def _alpha(
    x: torch.Tensor, p: float, training: bool, inplace: bool, rng: dict, dims
) -> torch.Tensor:
    if not training:
        return x
    keep = bernoulli_mask(mask_shape(x.shape, dims), p, device=x.device, **rng)
    a, b = alpha_dropout_affine(p)
    if a == 0.0:  # p = 1: everything dropped; zeros with zero gradient, as torch
        nothing = torch.zeros((), dtype=torch.bool, device=x.device)
        return x.masked_fill_(~nothing, 0) if inplace else torch.where(nothing, x, 0.0)
    if inplace:
        return x.masked_fill_(~keep, ALPHA_PRIME).mul_(a).add_(b)
    return torch.where(keep, x, ALPHA_PRIME) * a + b


def alpha_dropout(
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
    r"""SELU-preserving dropout: train :math:`y = a (x \odot m + \alpha' (1 - m)) + b`.

    :math:`m \sim \mathrm{Bernoulli}(q)` elementwise, :math:`\alpha' = -\lambda\alpha \approx
    -1.7581`, :math:`a = (q (1 + p \alpha'^2))^{-1/2}`, :math:`b = -a p \alpha'`; eval
    :math:`y = x`. Keeps mean 0 and variance 1 of standardised inputs. ``p = 1`` gives zeros.
    Note ``training`` defaults to True here (torch's ``F.alpha_dropout`` defaults to False).

    Shape: any; output the same.
    """
    check_input(x, "alpha_dropout", inplace=inplace)
    p = check_p(p, "alpha_dropout")
    return _alpha(
        x,
        p,
        training,
        inplace,
        dict(seed=seed, offset=offset, backend=backend, generator=generator),
        (),
    )


def feature_alpha_dropout(
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
    r"""Alpha dropout with one mask value per (sample, channel): :math:`m` of shape
    ``(N, C, 1, ..., 1)``, otherwise as :func:`alpha_dropout`. Input ``(N, C, *)``, at least
    2 dims."""
    check_input(x, "feature_alpha_dropout", inplace=inplace)
    p = check_p(p, "feature_alpha_dropout")
    if x.dim() < 2:
        raise ValueError(
            "feature_alpha_dropout expects input of shape (N, C, *) (at least 2 dims), got "
            f"{x.dim()} dims with shape {tuple(x.shape)}"
        )
    dims = tuple(range(2, x.dim()))
    return _alpha(
        x,
        p,
        training,
        inplace,
        dict(seed=seed, offset=offset, backend=backend, generator=generator),
        dims,
    )
