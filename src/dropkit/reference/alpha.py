"""Alpha dropout: dropout that keeps the self-normalising property of SELU networks.

Klambauer et al. 2017, "Self-Normalizing Neural Networks" (arXiv:1706.02515), section 3.
Dropped units are set to SELU's negative saturation value instead of 0, and an affine map
restores zero mean and unit variance for standardised inputs.
"""

from __future__ import annotations

import numpy as np

from .base import RngLike, as_float_array
from .dropout import Dropout

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
#: The value dropped units take, alpha' = -lambda * alpha (SELU's limit as x -> -inf).
ALPHA_PRIME = -SELU_SCALE * SELU_ALPHA


def alpha_dropout_affine(p: float) -> tuple[float, float]:
    r"""The affine correction ``(a, b)`` of alpha dropout for drop probability ``p``.

    :math:`a = (q (1 + p \alpha'^2))^{-1/2}`, :math:`b = -a p \alpha'` with :math:`q = 1 - p`,
    chosen so that :math:`a (x m + \alpha' (1 - m)) + b` has mean 0 and variance 1 when x does.
    At p = 1 (everything dropped) ``a`` is infinite; the layer returns zeros there instead.
    """
    q = 1.0 - p
    if q == 0.0:
        return 0.0, 0.0
    a = (q * (1.0 + p * ALPHA_PRIME**2)) ** -0.5
    return a, -a * p * ALPHA_PRIME


class AlphaDropout(Dropout):
    r"""SELU-preserving dropout (Klambauer et al. 2017).

    Train :math:`y = a (x \odot m + \alpha' (1 - m)) + b` with
    :math:`m \sim \mathrm{Bernoulli}(q)`, :math:`\alpha' = -\lambda\alpha \approx -1.7581`, and
    ``(a, b)`` from :func:`alpha_dropout_affine`; eval :math:`y = x`. Backward
    :math:`dx = a\,m \odot dy`. ``p = 1`` returns zeros with zero gradient (as torch does).

    Shape: x any shape; output and ``mask`` the same shape.
    """

    def __init__(self, p: float = 0.5, *, rng: RngLike = None) -> None:
        super().__init__(p, inverted=True, rng=rng)

    def forward(
        self, x: np.ndarray, training: bool = True, *, mask: np.ndarray | None = None
    ) -> np.ndarray:
        """Apply alpha dropout; ``mask`` (optional bool keep mask) replaces the random draw."""
        x = as_float_array(x, "AlphaDropout")
        if not training:
            return self._masked_forward(x, None, x.dtype.type(1))
        keep = self.sample_mask(x.shape) if mask is None else self._given_mask(mask, x.shape)
        a, b = alpha_dropout_affine(self.p)
        dtype = x.dtype.type
        if a == 0.0:
            out = np.zeros_like(x)
        else:
            out = dtype(a) * np.where(keep, x, dtype(ALPHA_PRIME)) + dtype(b)
        self.mask = keep
        self._save(out.shape, keep=keep, scale=dtype(a))
        return out.astype(x.dtype, copy=False)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class FeatureAlphaDropout(AlphaDropout):
    r"""Alpha dropout with one mask value per (sample, channel), shared over the trailing dims.

    Same formula as :class:`AlphaDropout` with :math:`m` of shape ``(N, C, 1, ..., 1)``; input
    ``(N, C, *)`` with at least 2 dims.
    """

    def _shared_dims(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(shape) < 2:
            raise ValueError(
                "FeatureAlphaDropout expects input of shape (N, C, *) (at least 2 dims), "
                f"got {len(shape)} dims with shape {tuple(shape)}"
            )
        return tuple(range(2, len(shape)))
