"""Concrete dropout: a relaxed Bernoulli mask whose rate is a learned parameter.

Gal, Hron & Kendall 2017, "Concrete Dropout" (NeurIPS, arXiv:1705.07832). The mask is the
Concrete (Gumbel-softmax) relaxation of Bernoulli(p), so the output is differentiable in the
drop-rate logit; the rate is learned from the data term plus the paper's regulariser.
"""

from __future__ import annotations

import math

import numpy as np

from .base import Layer, RngLike, as_float_array, make_rng

__all__ = ["ConcreteDropout", "SpatialConcreteDropout"]

#: Floor of every logarithm and of the keep probability in the rescale (as the torch layer).
EPS = 1e-7


def sigmoid(x):
    """Logistic function, evaluated without overflow for large |x|."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


class ConcreteDropout(Layer):
    r"""Concrete dropout of every element, with a learned logit :math:`\ell`, :math:`p =
    \sigma(\ell)`.

    Forward (train), with :math:`\lfloor v\rfloor = \max(v, \epsilon)`, :math:`\epsilon = 10^{-7}`:

    * :math:`a = \log\lfloor p\rfloor - \log\lfloor 1-p\rfloor` (the drop log-odds, :math:`=\ell`
      for :math:`\epsilon \le p \le 1-\epsilon`);
    * :math:`s = \log\lfloor u\rfloor - \log\lfloor 1-u\rfloor`, :math:`u \sim U[0, 1)`
      (standard logistic noise);
    * :math:`k = 1 - z = \sigma(-(a + s)/t)` (z: the relaxed drop mask);
    * :math:`y = x \odot k / \lfloor 1-p\rfloor`.

    Eval: :math:`y = x`. Backward: :math:`dx = dy \odot k / \lfloor q\rfloor`, and with
    :math:`da/d\ell = q[p \ge \epsilon] + p[q \ge \epsilon]` and
    :math:`d\log(1/\lfloor q\rfloor)/d\ell = p[q \ge \epsilon]`,
    :math:`d\ell = \sum dy \odot x \odot (k / \lfloor q\rfloor)\,(-(1-k)\,da/d\ell\,/\,t +
    p[q \ge \epsilon])`.

    Shape: x any shape; ``noise`` (u) x's shape (:class:`SpatialConcreteDropout`:
    ``(N, C, 1, ..., 1)``); ``mask`` (k after a training forward) the noise shape.

    Args:
        p_init: initial drop rate in (0, 1).
        temperature: t > 0.
        rng: generator, seed or None, for u.
    """

    def __init__(self, p_init: float = 0.1, temperature: float = 0.1, *, rng: RngLike = None):
        super().__init__()
        name = type(self).__name__
        if not 0.0 < p_init < 1.0:
            raise ValueError(f"{name}: p_init must be in (0, 1), got p_init={p_init}")
        if not temperature > 0.0:
            raise ValueError(f"{name}: temperature must be > 0, got temperature={temperature}")
        self.temperature = float(temperature)
        self.params["p_logit"] = np.array(math.log(p_init) - math.log1p(-p_init))
        self.rng = make_rng(rng)
        self.mask: np.ndarray | None = None

    def noise_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """One uniform per element."""
        return tuple(shape)

    def forward(self, x, training: bool = True, *, noise=None) -> np.ndarray:
        """Apply the relaxed mask; ``noise`` (optional) is the uniform u to use."""
        x = as_float_array(x, type(self).__name__)
        if not training:
            self._save(x.shape, x=None)
            return x
        shape = self.noise_shape(x.shape)
        u = self.rng.random(shape) if noise is None else np.asarray(noise, dtype=np.float64)
        if u.shape != shape:
            raise ValueError(f"{type(self).__name__}: noise has shape {u.shape}, expected {shape}")
        logit = self.params["p_logit"]
        p, q = sigmoid(logit), sigmoid(-logit)  # q: 1 - p without cancellation
        drop_logit = np.log(np.maximum(p, EPS)) - np.log(np.maximum(q, EPS))
        s = np.log(np.maximum(u, EPS)) - np.log(np.maximum(1.0 - u, EPS))
        keep = sigmoid(-(drop_logit + s) / self.temperature)  # 1 - z
        scale = 1.0 / np.maximum(q, EPS)
        self.mask = keep
        self._save(x.shape, x=x, keep=keep, p=p, q=q, scale=scale)
        return x * keep * scale

    def backward(self, dout) -> np.ndarray:
        """dx and ``grads["p_logit"]`` (0 in eval)."""
        cache, dout = self._saved(dout)
        if cache["x"] is None:
            self.grads["p_logit"] = np.zeros(())
            return dout
        x, keep, p, q, scale = (cache[k] for k in ("x", "keep", "p", "q", "scale"))
        # The floors pass no gradient where they bind (as torch's clamp_min).
        d_drop_logit = q * (p >= EPS) + p * (q >= EPS)
        d_log_scale = p * (q >= EPS)
        d_keep = -keep * (1.0 - keep) * d_drop_logit / self.temperature
        self.grads["p_logit"] = np.sum(dout * x * scale * (d_keep + keep * d_log_scale))
        return dout * keep * scale

    def regularization(
        self, input_dim: int, weight_square: float = 0.0, *, weight_regularizer: float = 1e-6,
        dropout_regularizer: float = 1e-5,
    ) -> tuple[float, float, float]:  # fmt: skip
        r"""The paper's term :math:`w_r S / \lfloor q\rfloor + d_r K (p \log\lfloor p\rfloor +
        q \log\lfloor q\rfloor)` for :math:`S = \lVert W\rVert^2` = ``weight_square`` and
        :math:`K` = ``input_dim``; returns ``(value, d/d logit, d/dS)``
        (:math:`dW = 2W \cdot d/dS`)."""
        logit = self.params["p_logit"]
        p, q = sigmoid(logit), sigmoid(-logit)
        fp, fq = np.maximum(p, EPS), np.maximum(q, EPS)
        entropy_term = dropout_regularizer * input_dim * (p * np.log(fp) + q * np.log(fq))
        value = weight_regularizer * weight_square / fq + entropy_term
        # d/dl [p log fp + q log fq] with dp/dl = pq = -dq/dl; the floor passes no gradient.
        d_neg_entropy = p * q * (np.log(fp) + (p >= EPS) - np.log(fq) - (q >= EPS))
        d_logit = weight_regularizer * weight_square * p * q * (q >= EPS) / fq**2
        d_logit = d_logit + dropout_regularizer * input_dim * d_neg_entropy
        return float(value), float(d_logit), float(weight_regularizer / fq)

    def extra_repr(self) -> str:
        return f"p={float(sigmoid(self.params['p_logit'])):.4g}, temperature={self.temperature:g}"


class SpatialConcreteDropout(ConcreteDropout):
    """:class:`ConcreteDropout` with one mask value per (sample, channel), shared over the
    spatial dims of an ``(N, C, *spatial)`` input."""

    def noise_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(shape) < 3:
            raise ValueError(
                f"{type(self).__name__} expects input (N, C, *spatial) with at least 3 dims, "
                f"got shape {tuple(shape)}"
            )
        return (shape[0], shape[1]) + (1,) * (len(shape) - 2)
