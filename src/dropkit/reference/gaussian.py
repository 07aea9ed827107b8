"""Gaussian (multiplicative) dropout.

Srivastava et al. 2014 (JMLR 15), section 10, "Multiplicative Gaussian Noise"; Wang & Manning
2013, "Fast dropout training" (ICML). The noise has the same mean and variance as the inverted
Bernoulli mask m/q, so it is a drop-in replacement with the same rate ``p``.
"""

from __future__ import annotations

import numpy as np

from .base import DropRate, Layer, RngLike, as_float_array, make_rng


class GaussianDropout(Layer):
    r"""Multiply by Gaussian noise with the moments of inverted dropout.

    Train :math:`y = x \odot \varepsilon`, :math:`\varepsilon \sim \mathcal N(1, \sigma^2)`,
    :math:`\sigma^2 = p / (1 - p)`; eval :math:`y = x`. Backward :math:`dx = \varepsilon \odot dy`.
    ``p = 1`` is rejected: its variance is infinite.

    Shape: x any shape; output and ``mask`` (the noise :math:`\varepsilon`) have the same shape.

    Args:
        p: drop probability in [0, 1).
        rng: ``numpy.random.Generator``, int seed or None.
    """

    p = DropRate(allow_one=False)

    def __init__(self, p: float = 0.5, *, rng: RngLike = None) -> None:
        super().__init__()
        self.p = p
        self.rng = make_rng(rng)
        self.mask: np.ndarray | None = None

    @property
    def std(self) -> float:
        """Noise standard deviation sqrt(p / (1 - p))."""
        return float(np.sqrt(self.p / (1.0 - self.p)))

    def forward(
        self, x: np.ndarray, training: bool = True, *, mask: np.ndarray | None = None
    ) -> np.ndarray:
        """Apply the noise; ``mask`` (optional) is the noise array to use instead of a draw."""
        x = as_float_array(x, "GaussianDropout")
        if not training:
            self._save(x.shape, noise=None)
            return x
        if mask is None:
            noise = (1.0 + self.std * self.rng.standard_normal(x.shape)).astype(x.dtype)
        else:
            noise = as_float_array(mask, "GaussianDropout", "mask")
            if noise.shape != x.shape:
                raise ValueError(
                    f"GaussianDropout: mask has shape {noise.shape}, expected {x.shape}"
                )
        self.mask = noise
        self._save(x.shape, noise=noise)
        return x * noise

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """dx = noise * dout (dout itself in eval)."""
        cache, dout = self._saved(dout)
        return dout if cache["noise"] is None else dout * cache["noise"]

    def extra_repr(self) -> str:
        return f"p={self.p}"
