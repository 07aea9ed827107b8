"""Variational (Gaussian) dropout with a learned noise variance alpha.

Kingma, Salimans & Welling 2015, "Variational Dropout and the Local Reparameterization Trick"
(NeurIPS, arXiv:1506.02557): multiplicative Gaussian noise N(1, alpha) whose variance is a
variational parameter, trained with a KL term to a log-uniform prior (fitted polynomial, valid
for alpha <= 1, so log alpha is clipped at 0).
"""

from __future__ import annotations

import math

import numpy as np

from .base import Layer, RngLike, as_float_array, make_rng
from .layers import Linear

__all__ = ["VariationalDropout", "VariationalDropoutLinear", "variational_dropout_kl"]

#: Kingma et al.'s fit: -KL ~ const + 0.5 log a + C1 a + C2 a^2 + C3 a^3.
C1, C2, C3 = 1.16145124, -1.50204118, 0.58629921
#: Added to the local-reparameterisation variance before the square root.
VAR_EPS = 1e-8


def variational_dropout_kl(log_alpha) -> tuple[np.ndarray, np.ndarray]:
    r"""Elementwise KL (zero at :math:`\alpha = 1`) and its derivative in :math:`\log\alpha`.

    With :math:`l = \min(\log\alpha, 0)`, :math:`\alpha = e^l`:
    :math:`\mathrm{KL} = (1 - \alpha)(c_1 + c_2(1 + \alpha) + c_3(1 + \alpha + \alpha^2)) -
    l/2` (that is :math:`c_1 + c_2 + c_3 - (l/2 + c_1\alpha + c_2\alpha^2 + c_3\alpha^3)`), and
    :math:`d\mathrm{KL}/d\log\alpha = -(1/2 + c_1\alpha + 2c_2\alpha^2 + 3c_3\alpha^3)\,
    [\log\alpha \le 0]`.
    """
    raw = np.asarray(log_alpha, dtype=np.float64)
    log_a = np.minimum(raw, 0.0)
    a = np.exp(log_a)
    kl = (1.0 - a) * (C1 + C2 * (1.0 + a) + C3 * (1.0 + a * (1.0 + a))) - 0.5 * log_a
    grad = -(0.5 + a * (C1 + a * (2.0 * C2 + a * 3.0 * C3))) * (raw <= 0.0)
    return kl, grad


def _log_alpha_init(p_init: float, owner: str) -> float:
    if not 0.0 < p_init <= 0.5:
        raise ValueError(f"{owner}: p_init must be in (0, 0.5], got p_init={p_init}")
    return math.log(p_init) - math.log1p(-p_init)


def _sum_to(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum a broadcast gradient back to the parameter's trailing ``shape``."""
    return grad.reshape(-1, *shape).sum(axis=0)


class VariationalDropout(Layer):
    r"""Train :math:`y = x \odot (1 + \sqrt\alpha\,\varepsilon)`, :math:`\varepsilon \sim
    \mathcal N(0, 1)`, :math:`\log\alpha` (shape ``features``, broadcast over the leading dims)
    clipped at 0; eval :math:`y = x`.

    Backward: :math:`dx = dy \odot (1 + \sqrt\alpha\,\varepsilon)`, :math:`d\log\alpha =
    \sum_{\text{leading}} dy \odot x \odot \varepsilon\,\sqrt\alpha / 2 \cdot [\log\alpha \le 0]`.

    Shape: x ``(*, *features)``; ``noise`` (:math:`\varepsilon`) x's shape.
    """

    def __init__(self, features, p_init: float = 0.5, *, rng: RngLike = None) -> None:
        super().__init__()
        self.features = (features,) if np.ndim(features) == 0 else tuple(features)
        value = _log_alpha_init(p_init, type(self).__name__)
        self.params["log_alpha"] = np.full(self.features, value)
        self.rng = make_rng(rng)
        self.mask: np.ndarray | None = None

    def forward(self, x, training: bool = True, *, noise=None) -> np.ndarray:
        """Apply the noise; ``noise`` (optional) is the standard normal to use."""
        x = as_float_array(x, type(self).__name__)
        if not training:
            self._save(x.shape, factor=None)
            return x
        eps = self.rng.standard_normal(x.shape) if noise is None else np.asarray(noise)
        if eps.shape != x.shape:
            raise ValueError(f"VariationalDropout: noise has shape {eps.shape}, not {x.shape}")
        std = np.exp(0.5 * np.minimum(self.params["log_alpha"], 0.0))
        factor = 1.0 + std * eps
        self.mask = factor
        self._save(x.shape, x=x, eps=eps, std=std, factor=factor)
        return x * factor

    def backward(self, dout) -> np.ndarray:
        cache, dout = self._saved(dout)
        if cache["factor"] is None:
            self.grads["log_alpha"] = np.zeros(self.features)
            return dout
        open_ = self.params["log_alpha"] <= 0.0
        d_std = _sum_to(dout * cache["x"] * cache["eps"], self.features)
        self.grads["log_alpha"] = d_std * 0.5 * cache["std"] * open_
        return dout * cache["factor"]

    def extra_repr(self) -> str:
        return f"features={self.features}"


class VariationalDropoutLinear(Linear):
    r"""Linear layer with :math:`w_{ij} \sim \mathcal N(\theta_{ij}, \alpha_{ij}\theta_{ij}^2)`
    by local reparameterisation: train :math:`y = x\theta^\top + b + s \odot \varepsilon`,
    :math:`s = \sqrt{v + 10^{-8}}`, :math:`v = x^2 A^\top`, :math:`A = \alpha\theta^2`;
    eval :math:`y = x\theta^\top + b`.

    Backward, with :math:`g = dy \odot \varepsilon / (2s)` (= dL/dv):
    :math:`dx = dy\,\theta + 2x \odot (g A)`, :math:`dA = g^\top x^2`,
    :math:`d\theta = dy^\top x + 2\alpha\theta \odot dA`,
    :math:`d\log\alpha = A \odot dA \cdot [\log\alpha \le 0]`, :math:`db = \sum dy`.

    Shape: x ``(*, in)``; y and ``noise`` ``(*, out)``; ``log_alpha`` ``(out, in)``.
    """

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, p_init: float = 0.5,
        *, rng: RngLike = None, dtype: type = np.float64,
    ) -> None:  # fmt: skip
        self.rng = make_rng(rng)
        super().__init__(in_features, out_features, bias, rng=self.rng, dtype=dtype)
        value = _log_alpha_init(p_init, type(self).__name__)
        self.params["log_alpha"] = np.full_like(self.params["weight"], value)

    def forward(self, x, training: bool = True, *, noise=None) -> np.ndarray:
        """LRT sample; ``noise`` (optional) is the standard normal of the output's shape."""
        x = as_float_array(x, type(self).__name__)
        self._check_features(x)
        mean = self._affine(x, self.params["weight"])
        if not training:
            self._save(mean.shape, x=x, eps=None)
            return mean
        eps = self.rng.standard_normal(mean.shape) if noise is None else np.asarray(noise)
        if eps.shape != mean.shape:
            raise ValueError(f"{type(self).__name__}: noise has shape {eps.shape}, "
                             f"expected {mean.shape}")  # fmt: skip
        alpha = np.exp(np.minimum(self.params["log_alpha"], 0.0))
        var_w = alpha * self.params["weight"] ** 2  # A, (out, in)
        s = np.sqrt((x * x) @ var_w.T + VAR_EPS)  # (*, out)
        self._save(mean.shape, x=x, eps=eps, alpha=alpha, var_w=var_w, s=s)
        return mean + s * eps

    def backward(self, dout) -> np.ndarray:
        cache, dout = self._saved(dout)
        x, theta = cache["x"], self.params["weight"]
        dx, self.grads["weight"] = self._affine_backward(x, theta, dout)
        if cache["eps"] is None:
            self.grads["log_alpha"] = np.zeros_like(theta)
            return dx
        g = dout * cache["eps"] / (2.0 * cache["s"])  # dL/dv, (*, out)
        x2 = (x * x).reshape(-1, x.shape[-1])
        d_var_w = g.reshape(-1, g.shape[-1]).T @ x2  # dA, (out, in)
        dx = dx + 2.0 * x * (g @ cache["var_w"])
        self.grads["weight"] = self.grads["weight"] + 2.0 * cache["alpha"] * theta * d_var_w
        open_ = self.params["log_alpha"] <= 0.0
        self.grads["log_alpha"] = cache["var_w"] * d_var_w * open_
        return dx
