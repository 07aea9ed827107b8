r"""Standout: a linear + ReLU layer whose units are kept with an input-dependent probability.

Ba & Frey 2013, "Adaptive dropout for training deep neural networks" (NIPS), with the belief
network tied to the layer's weights: :math:`\pi = \sigma(\alpha (x W^\top + b) + \beta)`. The
keep probabilities come from the current input, never from a gradient.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .base import RngLike, as_float_array, given_mask, make_rng
from .layers import Linear


def check_gain(value: object, name: str) -> float:
    """Standout's alpha or beta: a finite real number (TypeError or ValueError naming it)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"Standout: {name} must be a finite real number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"Standout: {name} must be a finite real number, got {value!r}")
    return float(value)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """:math:`1 / (1 + e^{-z})`; the overflow of :math:`e^{-z}` for very negative z gives 0."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-z))


class Standout(Linear):
    r"""Linear layer, ReLU, and a Bernoulli mask with keep probability from the same input.

    Forward: :math:`a = x W^\top + b`, :math:`\pi = \sigma(\alpha a + \beta)`,
    :math:`h = \max(a, 0)`; train :math:`y = m \odot h`, :math:`m \sim \mathrm{Bernoulli}(\pi)`;
    eval :math:`y = \pi \odot h`.

    Backward, into :math:`da` and then through the affine map (:class:`Linear`):

    * train (the mask is a sample, not differentiated): :math:`da = dy \odot m \odot [a > 0]`;
    * eval: :math:`da = dy \odot (\pi\,[a > 0] + h\,\alpha\,\pi (1 - \pi))`.

    Shape: x ``(*, in_features)``; y and ``mask`` ``(*, out_features)``.

    Args:
        in_features, out_features: sizes.
        alpha, beta: scale and shift of the belief network (finite reals).
        bias, init_std, dtype: as :class:`Linear`.
        rng: generator, seed or None, for the initialisation and the masks.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        alpha: float = 1.0,
        beta: float = 0.0,
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
        self.alpha = check_gain(alpha, "alpha")
        self.beta = check_gain(beta, "beta")
        #: The last keep mask drawn in training (True = kept); None before the first.
        self.mask: np.ndarray | None = None

    def forward(
        self, x: np.ndarray, training: bool = True, *, mask: np.ndarray | None = None
    ) -> np.ndarray:
        """Standout forward; ``mask`` (optional, training) replaces the random draw."""
        x = as_float_array(x, "Standout")
        self._check_features(x)
        pre = self._affine(x, self.params["weight"])  # a, (*, out_features)
        keep_prob = sigmoid(self.alpha * pre + self.beta)  # π
        positive = pre > 0
        hidden = np.where(positive, pre, pre.dtype.type(0))  # h = ReLU(a)
        if training:
            if mask is None:
                keep = self.rng.random(pre.shape) < keep_prob
            else:
                keep = given_mask(mask, pre.shape, "Standout")
            self.mask = keep
            out = np.where(keep, hidden, hidden.dtype.type(0))
        else:
            keep = None
            out = keep_prob * hidden
        self._save(out.shape, x=x, keep=keep, keep_prob=keep_prob, positive=positive, hidden=hidden)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        cache, dout = self._saved(dout)
        if cache["keep"] is not None:
            dpre = np.where(cache["keep"] & cache["positive"], dout, dout.dtype.type(0))
        else:
            prob = cache["keep_prob"]
            slope = prob * cache["positive"] + cache["hidden"] * self.alpha * prob * (1.0 - prob)
            dpre = dout * slope
        dx, self.grads["weight"] = self._affine_backward(cache["x"], self.params["weight"], dpre)
        return dx

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, alpha={self.alpha}, beta={self.beta}"
