r"""Sparse variational dropout: per-weight learned Gaussian noise that prunes irrelevant weights.

Molchanov, Ashukha & Vetrov 2017, "Variational Dropout Sparsifies Deep Neural Networks" (ICML,
arXiv:1701.05369). Each weight has the posterior :math:`\mathcal N(\theta, \sigma^2)` with
parameters :math:`\theta` (``weight``) and :math:`\log\sigma^2` (``log_sigma2``);
:math:`\log\alpha = \mathrm{clip}(\log\sigma^2 - \log(\theta^2 + 10^{-8}), -10, 10)`. The
approximate KL to the log-uniform prior is

.. math::
    \mathrm{KL} \approx k_1 - k_1\,\sigma(k_2 + k_3 \log\alpha) + \tfrac12 \log(1 + \alpha^{-1}),
    \qquad k_1 = 0.63576,\ k_2 = 1.87320,\ k_3 = 1.48695

(the paper's :math:`-\mathrm{KL}` with its sign flipped: the value added to the loss). Weights
with :math:`\log\alpha \ge` ``threshold`` are pruned at evaluation.

These are the NumPy twins of ``dropkit.nn.learned.sparse_vd``, with the same constants, the
same clip and the same eps, so that the two agree to rounding in float64.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .base import (
    Layer,
    RngLike,
    as_float_array,
    check_conv2d_args,
    check_positive_int,
    check_threshold,
    make_rng,
)
from .concrete import sigmoid

__all__ = ["SparseVDConv2d", "SparseVDLinear", "sparse_vd_kl"]

K1, K2, K3 = 0.63576, 1.87320, 1.48695
LOG_ALPHA_RANGE = (-10.0, 10.0)
#: Inside log(θ² + eps) and sqrt(s² + eps): finite values and gradients at θ = 0 and s = 0.
EPS = 1e-8
#: torch's softplus returns x itself above this; copied so that both agree to the last bit.
SOFTPLUS_THRESHOLD = 20.0
#: log σ² at initialisation: almost no noise, so training starts as the plain layer.
LOG_SIGMA2_INIT = -10.0


def _softplus(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log(1 + e^x) and its derivative σ(x), both as torch computes them (x above the threshold)."""
    above = x > SOFTPLUS_THRESHOLD
    # The minimum keeps exp from overflowing where the branch is discarded anyway.
    value = np.where(above, x, np.log1p(np.exp(np.minimum(x, SOFTPLUS_THRESHOLD))))
    return value, np.where(above, 1.0, sigmoid(x))


def sparse_vd_kl(log_alpha) -> tuple[np.ndarray, np.ndarray]:
    r"""Elementwise approximate KL (Molchanov et al. 2017, eq. 14) and its derivative.

    :math:`\mathrm{KL}(l) = k_1 - k_1 s + \tfrac12\,\mathrm{softplus}(-l)`,
    :math:`s = \sigma(k_2 + k_3 l)`, and
    :math:`d\mathrm{KL}/dl = -k_1 k_3\, s(1 - s) - \tfrac12\,\sigma(-l)`, for
    :math:`l = \log\alpha` as given (no clip here: the layers clip before calling this).
    KL tends to 0 as :math:`\alpha \to \infty` and to :math:`k_1 - l/2` as :math:`\alpha \to 0`.

    Shape: ``log_alpha`` any shape; both results have its shape (float64).
    """
    log_a = np.asarray(log_alpha, dtype=np.float64)
    s = sigmoid(K2 + K3 * log_a)
    soft, d_soft = _softplus(-log_a)
    kl = K1 - K1 * s + 0.5 * soft
    grad = -K1 * K3 * s * (1.0 - s) - 0.5 * d_soft
    return kl, grad


class _SparseVD(Layer):
    r"""Parameters, log α, pruning, KL and the local-reparameterisation forward/backward shared
    by :class:`SparseVDLinear` and :class:`SparseVDConv2d`.

    A subclass supplies the affine map :math:`A(x; W, b)` as four steps: ``_columns`` (x to the
    matrix the weights multiply: x itself, or its im2col patches), ``_apply`` (columns, W, b to
    the output), ``_apply_backward`` (d output to d columns, dW, db) and ``_columns_backward``
    (d columns to dx).
    """

    def _init_parameters(
        self, shape: tuple[int, ...], bias: bool, rng: np.random.Generator, dtype: type
    ) -> None:
        # torch's nn.Linear / nn.Conv2d draws: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for θ and b.
        bound = 1.0 / math.sqrt(math.prod(shape[1:]))
        self.params["weight"] = rng.uniform(-bound, bound, shape).astype(dtype)
        self.params["log_sigma2"] = np.full(shape, LOG_SIGMA2_INIT, dtype=dtype)
        if bias:
            self.params["bias"] = rng.uniform(-bound, bound, shape[0]).astype(dtype)
        self._weight_shape = tuple(shape)

    # -- hyper-parameters and derived quantities ----------------------------------------------
    @property
    def threshold(self) -> float:
        """Prune weights whose log α is at or above this (validated on assignment)."""
        return self._threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self._threshold = check_threshold(value, type(self).__name__)

    def _raw_log_alpha(self) -> np.ndarray:
        theta = self.params["weight"]
        return self.params["log_sigma2"] - np.log(theta * theta + EPS)

    @property
    def log_alpha(self) -> np.ndarray:
        r""":math:`\mathrm{clip}(\log\sigma^2 - \log(\theta^2 + 10^{-8}), -10, 10)`, the weight's
        shape (read-only: derived from ``weight`` and ``log_sigma2``)."""
        return np.clip(self._raw_log_alpha(), *LOG_ALPHA_RANGE)

    def keep_mask(self) -> np.ndarray:
        """Boolean mask of the weights kept at evaluation (log α < threshold), the weight's
        shape."""
        return self.log_alpha < self.threshold

    def sparsity(self) -> float:
        """Fraction of weights pruned at evaluation (log α at or above ``threshold``)."""
        return 1.0 - float(self.keep_mask().mean())

    def rates(self) -> dict[str, np.ndarray]:
        """``{"log_alpha": log α}``, as the torch layer reports its rates."""
        return {"log_alpha": self.log_alpha}

    # -- the KL term ------------------------------------------------------------------------
    def regularization(self) -> float:
        r""":math:`\sum_{ij} \mathrm{KL}(\log\alpha_{ij})` (:func:`sparse_vd_kl`), the value the
        torch layer's ``regularization()`` adds to the loss."""
        return float(sparse_vd_kl(self.log_alpha)[0].sum())

    def regularization_backward(self, scale: float = 1.0) -> None:
        r"""Add ``scale`` times the gradient of :meth:`regularization` to ``self.grads``.

        With :math:`r` the unclipped log α, :math:`o = [-10 \le r \le 10]` (torch's clamp passes
        the gradient at the bounds themselves) and :math:`k = d\mathrm{KL}/d\log\alpha`:
        :math:`d\log\sigma^2 \mathrel{+}= \text{scale}\cdot k\,o` and
        :math:`d\theta \mathrel{+}= -\text{scale}\cdot k\,o\; 2\theta / (\theta^2 + 10^{-8})`.
        Call it after :meth:`backward` (which overwrites ``grads``); before any backward the
        missing entries start from zeros.
        """
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
            raise TypeError(f"{type(self).__name__}: scale must be a real number")
        if not math.isfinite(scale):
            raise ValueError(f"{type(self).__name__}: scale must be finite, got scale={scale!r}")
        theta = self.params["weight"]
        raw = self._raw_log_alpha()
        low, high = LOG_ALPHA_RANGE
        open_ = (raw >= low) & (raw <= high)
        d_log_alpha = scale * sparse_vd_kl(np.clip(raw, low, high))[1] * open_
        for name, grad in (
            ("log_sigma2", d_log_alpha),
            ("weight", -d_log_alpha * 2.0 * theta / (theta * theta + EPS)),
        ):
            self.grads[name] = self.grads.get(name, np.zeros_like(theta)) + grad

    # -- forward and backward -----------------------------------------------------------------
    def _check_params(self) -> None:
        """Parameters replaced by hand must keep their shapes (a silent broadcast would not)."""
        shapes = {"weight": self._weight_shape, "log_sigma2": self._weight_shape}
        if "bias" in self.params:
            shapes["bias"] = self._weight_shape[:1]
        for name, shape in shapes.items():
            got = np.shape(self.params[name])
            if got != shape:
                raise ValueError(
                    f"{type(self).__name__}: params['{name}'] has shape {got}, expected {shape}"
                )

    def forward(self, x, training: bool = True, *, noise=None) -> np.ndarray:
        r"""Train: :math:`y = \mu + \sqrt{s^2 + 10^{-8}} \odot \varepsilon`,
        :math:`\mu = A(x; \theta, b)`, :math:`s^2 = A(x^2; \sigma^2, 0)`; eval:
        :math:`y = A(x; \theta \odot [\log\alpha < \text{threshold}], b)`.

        ``noise`` (training only, optional) is the standard normal :math:`\varepsilon` to use,
        of the output's shape; by default it is drawn from ``self.rng``.
        """
        name = type(self).__name__
        x = as_float_array(x, name)
        self._check_params()
        cols, geom = self._columns(x)
        theta, bias = self.params["weight"], self.params.get("bias")
        if not training:
            keep = self.keep_mask()
            weight = theta * keep
            out = self._apply(cols, weight, bias, geom)
            self._save(out.shape, cols=cols, geom=geom, eps=None, keep=keep, weight=weight)
            return out
        mean = self._apply(cols, theta, bias, geom)
        # Local reparameterisation: each output is a sum of independent Gaussians x·w, so it is
        # sampled directly: one draw per output element instead of a weight sample per example.
        sigma2 = np.exp(self.params["log_sigma2"])
        var = self._apply(cols * cols, sigma2, None, geom)
        if noise is None:
            eps = self.rng.standard_normal(mean.shape)
        else:
            eps = as_float_array(noise, name, "noise")
            if eps.shape != mean.shape:
                raise ValueError(f"{name}: noise has shape {eps.shape}, expected {mean.shape}")
        std = np.sqrt(var + EPS)
        self.noise = eps
        self._save(mean.shape, cols=cols, geom=geom, eps=eps, std=std, sigma2=sigma2)
        return mean + std * eps

    def backward(self, dout) -> np.ndarray:
        r"""dx and ``grads`` for ``weight``, ``log_sigma2`` and ``bias``.

        Train, with :math:`g = dy \odot \varepsilon / (2\sqrt{s^2 + 10^{-8}})` (= dL/ds²):
        :math:`dx = A_x^*(dy; \theta) + 2x \odot A_x^*(g; \sigma^2)`,
        :math:`d\theta = A_W^*(dy; x)`, :math:`d\log\sigma^2 = \sigma^2 \odot A_W^*(g; x^2)`,
        :math:`db = \sum dy` (:math:`A^*`: the adjoint of the affine map in x or in W). Eval,
        with :math:`m = [\log\alpha < \text{threshold}]`: :math:`dx = A_x^*(dy; \theta\odot m)`,
        :math:`d\theta = A_W^*(dy; x) \odot m`, :math:`d\log\sigma^2 = 0` (the mask is a step
        function: no gradient, as in torch).
        """
        cache, dout = self._saved(dout)
        cols, geom = cache["cols"], cache["geom"]
        if cache["eps"] is None:
            dcols, d_weight, d_bias = self._apply_backward(cols, cache["weight"], dout, geom)
            self.grads["weight"] = d_weight * cache["keep"]
            self.grads["log_sigma2"] = np.zeros_like(self.params["log_sigma2"])
        else:
            theta = self.params["weight"]
            dcols, self.grads["weight"], d_bias = self._apply_backward(cols, theta, dout, geom)
            g = dout * cache["eps"] / (2.0 * cache["std"])
            d_cols_sq, d_sigma2, _ = self._apply_backward(cols * cols, cache["sigma2"], g, geom)
            dcols = dcols + 2.0 * cols * d_cols_sq
            self.grads["log_sigma2"] = cache["sigma2"] * d_sigma2
        if "bias" in self.params:
            self.grads["bias"] = d_bias
        return self._columns_backward(dcols, geom)

    # -- the affine map (subclasses) ----------------------------------------------------------
    def _columns(self, x: np.ndarray):  # pragma: no cover - interface
        raise NotImplementedError

    def _apply(self, cols, weight, bias, geom) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def _apply_backward(self, cols, weight, dout, geom):  # pragma: no cover - interface
        raise NotImplementedError

    def _columns_backward(self, dcols, geom) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError


class SparseVDLinear(_SparseVD):
    r"""Linear layer with sparse variational dropout on every weight (Molchanov et al. 2017).

    Train (local reparameterisation): :math:`y = \mu + \sqrt{s^2 + 10^{-8}} \odot \varepsilon`,
    :math:`\mu = x\theta^\top + b`, :math:`s^2 = x^2 (\sigma^2)^\top`,
    :math:`\varepsilon \sim \mathcal N(0, 1)`. Eval:
    :math:`y = x(\theta \odot [\log\alpha < \text{threshold}])^\top + b`.

    Backward (train), :math:`g = dy \odot \varepsilon / (2\sqrt{s^2 + 10^{-8}})`:
    :math:`dx = dy\,\theta + 2x \odot (g\,\sigma^2)`, :math:`d\theta = dy^\top x`,
    :math:`d\log\sigma^2 = \sigma^2 \odot (g^\top x^2)`, :math:`db = \sum dy`; eval:
    :math:`dx = dy\,(\theta \odot m)`, :math:`d\theta = (dy^\top x) \odot m`,
    :math:`d\log\sigma^2 = 0`. ``regularization()`` is the summed KL and
    ``regularization_backward(scale)`` adds its gradient to ``grads``.

    Shape: x ``(*, in_features)``; y and ``noise`` ``(*, out_features)``; ``weight`` (θ) and
    ``log_sigma2`` ``(out_features, in_features)``; ``bias`` ``(out_features,)``.

    Args:
        in_features, out_features: sizes.
        bias: learn an additive bias.
        threshold: log α at or above which a weight is pruned at evaluation.
        rng: generator, seed or None, for the initialisation (as ``nn.Linear``'s; log σ² = −10)
            and the noise.
        dtype: parameter dtype.

    Example:
        >>> import numpy as np
        >>> layer = SparseVDLinear(4, 3, rng=0)
        >>> layer.forward(np.ones((2, 4))).shape
        (2, 3)
        >>> layer.sparsity()
        0.0
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        threshold: float = 3.0,
        rng: RngLike = None,
        dtype: type = np.float64,
    ) -> None:
        super().__init__()
        self.in_features = check_positive_int(in_features, "in_features", "SparseVDLinear")
        self.out_features = check_positive_int(out_features, "out_features", "SparseVDLinear")
        self.threshold = threshold
        self.rng = make_rng(rng)
        #: The last ε drawn or given in training; None before the first.
        self.noise: np.ndarray | None = None
        self._init_parameters((self.out_features, self.in_features), bias, self.rng, dtype)

    def _columns(self, x: np.ndarray) -> tuple[np.ndarray, None]:
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"SparseVDLinear expects input of shape (*, {self.in_features}), "
                f"got shape {x.shape}"
            )
        return x, None

    def _apply(self, cols, weight, bias, geom) -> np.ndarray:
        out = cols @ weight.T
        return out if bias is None else out + bias

    def _apply_backward(self, cols, weight, dout, geom):
        x2 = cols.reshape(-1, cols.shape[-1])
        d2 = dout.reshape(-1, dout.shape[-1])
        return dout @ weight, d2.T @ x2, d2.sum(axis=0)

    def _columns_backward(self, dcols, geom) -> np.ndarray:
        return dcols

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={'bias' in self.params}, threshold={self.threshold}"
        )


class SparseVDConv2d(_SparseVD):
    r"""2-d convolution with sparse variational dropout on every kernel weight (Molchanov et al.
    2017), computed as im2col followed by one matrix product per group.

    Train: :math:`y = \mu + \sqrt{s^2 + 10^{-8}} \odot \varepsilon` with
    :math:`\mu = \theta \star x + b`, :math:`s^2 = \sigma^2 \star x^2` (cross-correlation, as
    ``torch.nn.functional.conv2d``). Eval: :math:`y = (\theta \odot [\log\alpha <
    \text{threshold}]) \star x + b`. With :math:`P` the im2col patch matrix of x (one column per
    output position, zero padding) the map is :math:`\mu = \theta P + b` per group, so the
    backward is :class:`SparseVDLinear`'s on :math:`P` followed by col2im (scatter-add of
    :math:`dP` back to the input positions).

    Shape: x ``(N, C_in, H, W)`` or unbatched ``(C_in, H, W)``; y and ``noise``
    ``(N, C_out, H_out, W_out)`` (unbatched without N), :math:`H_\text{out} = \lfloor(H + 2p -
    d(k - 1) - 1)/s\rfloor + 1` (likewise W); ``weight`` and ``log_sigma2``
    ``(C_out, C_in / groups, kH, kW)``; ``bias`` ``(C_out,)``.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias: as
            ``torch.nn.Conv2d`` (integer padding, zeros padding mode).
        threshold, rng, dtype: as :class:`SparseVDLinear`.

    Example:
        >>> import numpy as np
        >>> layer = SparseVDConv2d(2, 4, 3, padding=1, rng=0)
        >>> layer.forward(np.ones((1, 2, 5, 5))).shape
        (1, 4, 5, 5)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        *,
        threshold: float = 3.0,
        rng: RngLike = None,
        dtype: type = np.float64,
    ) -> None:
        super().__init__()
        (
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
        ) = check_conv2d_args(
            "SparseVDConv2d", in_channels, out_channels, kernel_size, stride, padding, dilation,
            groups,
        )  # fmt: skip
        self.threshold = threshold
        self.rng = make_rng(rng)
        #: The last ε drawn or given in training; None before the first.
        self.noise: np.ndarray | None = None
        shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        self._init_parameters(shape, bias, self.rng, dtype)

    def _geometry(self, h: int, w: int) -> tuple[int, int, list[tuple[int, int, slice, slice]]]:
        """Output size and, per kernel tap (i, j), the strided slice of the padded input that
        the tap multiplies (one element per output position)."""
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        (ph, pw) = self.padding
        h_out = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        w_out = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        windows = [
            (i, j, slice(i * dh, i * dh + sh * (h_out - 1) + 1, sh),
             slice(j * dw, j * dw + sw * (w_out - 1) + 1, sw))
            for i in range(kh) for j in range(kw)
        ]  # fmt: skip
        return h_out, w_out, windows

    def _columns(self, x: np.ndarray) -> tuple[np.ndarray, tuple]:
        if x.ndim not in (3, 4) or x.shape[-3] != self.in_channels:
            raise ValueError(
                f"SparseVDConv2d expects input of shape (N, {self.in_channels}, H, W) or "
                f"({self.in_channels}, H, W), got shape {x.shape}"
            )
        unbatched = x.ndim == 3
        xb = x[None] if unbatched else x
        n, c, h, w = xb.shape
        (kh, kw), (ph, pw), (dh, dw) = self.kernel_size, self.padding, self.dilation
        if h + 2 * ph < dh * (kh - 1) + 1 or w + 2 * pw < dw * (kw - 1) + 1:
            raise ValueError(
                f"SparseVDConv2d: padded input of size ({h + 2 * ph}, {w + 2 * pw}) is smaller "
                f"than the dilated kernel ({dh * (kh - 1) + 1}, {dw * (kw - 1) + 1})"
            )
        padded = np.pad(xb, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        h_out, w_out, windows = self._geometry(h, w)
        cols = np.empty((n, c, kh, kw, h_out, w_out), dtype=padded.dtype)
        for i, j, rows, columns in windows:
            cols[:, :, i, j] = padded[:, :, rows, columns]
        return cols, (unbatched, xb.shape, h_out, w_out)

    def _grouped(self, cols: np.ndarray, weight: np.ndarray):
        """Patches as (N, G, C_in/G·kH·kW, H_out·W_out) and weights as (G, C_out/G, same)."""
        g = self.groups
        n = cols.shape[0]
        p = cols.shape[-2] * cols.shape[-1]
        return cols.reshape(n, g, -1, p), weight.reshape(g, self.out_channels // g, -1)

    def _apply(self, cols, weight, bias, geom) -> np.ndarray:
        unbatched, _, h_out, w_out = geom
        patches, w = self._grouped(cols, weight)
        out = (w @ patches).reshape(cols.shape[0], self.out_channels, h_out, w_out)
        if bias is not None:
            out = out + bias[:, None, None]
        return out[0] if unbatched else out

    def _apply_backward(self, cols, weight, dout, geom):
        unbatched = geom[0]
        dout = dout[None] if unbatched else dout
        patches, w = self._grouped(cols, weight)
        d = dout.reshape(dout.shape[0], self.groups, self.out_channels // self.groups, -1)
        d_weight = (d @ patches.swapaxes(-1, -2)).sum(axis=0).reshape(weight.shape)
        dcols = (w.swapaxes(-1, -2) @ d).reshape(cols.shape)
        return dcols, d_weight, dout.sum(axis=(0, 2, 3))

    def _columns_backward(self, dcols, geom) -> np.ndarray:
        # col2im: every patch entry came from one input position (or the zero padding), so its
        # gradient is added back there; taps overlap when the stride is below the kernel size.
        unbatched, (n, c, h, w), _, _ = geom
        ph, pw = self.padding
        padded = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=dcols.dtype)
        for i, j, rows, columns in self._geometry(h, w)[2]:
            padded[:, :, rows, columns] += dcols[:, :, i, j]
        dx = padded[:, :, ph : ph + h, pw : pw + w]
        return dx[0] if unbatched else dx

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"groups={self.groups}, bias={'bias' in self.params}, threshold={self.threshold}"
        )
