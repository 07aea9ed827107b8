"""DropConnect: Bernoulli dropout on the weights of a linear layer instead of its outputs.

Wan et al. 2013, "Regularization of Neural Networks using DropConnect" (ICML). The paper draws a
mask per example and uses a moment-matching Gaussian at inference; like common practice (AWD-LSTM's
WeightDrop, baal) this layer draws one weight mask per forward pass, rescales by 1/q and uses the
plain weights in evaluation.
"""

from __future__ import annotations

import numpy as np

from .base import DropRate, RngLike, as_float_array, given_mask, keep_scale, make_rng, masked_scale
from .layers import Linear


class DropConnectLinear(Linear):
    r"""Linear layer with a Bernoulli mask on its weight matrix.

    Train :math:`y = x (W \odot M)^\top / q + b`, :math:`M_{ij} \sim \mathrm{Bernoulli}(q)`;
    eval :math:`y = x W^\top + b`. Backward with :math:`\tilde W = W \odot M / q`:
    :math:`dx = dy\,\tilde W`, :math:`dW = (dy^\top x) \odot M / q`, :math:`db = \sum_n dy_n`.
    ``p = 1`` leaves only the bias (zero dx and dW).

    Shape: x ``(*, in_features)``; y ``(*, out_features)``; ``mask`` ``(out_features,
    in_features)`` bool.

    Args:
        in_features, out_features: sizes.
        p: drop probability of each weight, in [0, 1].
        bias: learn an additive bias (never dropped).
        init_std, dtype: as :class:`Linear`.
        rng: generator, seed or None, for the initialisation and the masks.
    """

    p = DropRate()

    def __init__(
        self,
        in_features: int,
        out_features: int,
        p: float = 0.5,
        bias: bool = True,
        *,
        init_std: float | None = None,
        rng: RngLike = None,
        dtype: type = np.float64,
    ) -> None:
        self.rng = make_rng(rng)
        super().__init__(
            in_features, out_features, bias, init_std=init_std, rng=self.rng, dtype=dtype
        )
        self.p = p
        self.mask: np.ndarray | None = None

    def forward(
        self, x: np.ndarray, training: bool = True, *, mask: np.ndarray | None = None
    ) -> np.ndarray:
        """Affine map with masked weights; ``mask`` (optional) replaces the random draw."""
        x = as_float_array(x, "DropConnectLinear")
        self._check_features(x)
        weight = self.params["weight"]
        if not training:
            keep, scale, effective = None, None, weight
        else:
            if mask is None:
                keep = self.rng.random(weight.shape) >= self.p
            else:
                keep = given_mask(mask, weight.shape, "DropConnectLinear")
            scale = keep_scale(1.0 - self.p, weight.dtype)
            effective = masked_scale(weight, keep, scale)
            self.mask = keep
        out = self._affine(x, effective)
        self._save(out.shape, x=x, keep=keep, scale=scale, effective=effective)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        cache, dout = self._saved(dout)
        dx, d_effective = self._affine_backward(cache["x"], cache["effective"], dout)
        if cache["keep"] is not None:
            d_effective = masked_scale(d_effective, cache["keep"], cache["scale"])
        self.grads["weight"] = d_effective.astype(self.params["weight"].dtype, copy=False)
        return dx

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p}"
