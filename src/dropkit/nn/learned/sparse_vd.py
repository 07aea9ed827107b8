r"""Sparse variational dropout: per-weight learned Gaussian noise that prunes irrelevant weights.

Molchanov, Ashukha & Vetrov 2017, "Variational Dropout Sparsifies Deep Neural Networks" (ICML,
arXiv:1701.05369). Each weight has the posterior :math:`\mathcal N(\theta, \sigma^2)`, written
additively, :math:`w = \theta + \sigma \odot \varepsilon` with parameters :math:`\theta` and
:math:`\log\sigma^2`, which keeps the gradient of :math:`\theta` low-variance even for large
:math:`\alpha = \sigma^2/\theta^2`; :math:`\log\alpha` is clipped to :math:`[-10, 10]` (the
authors' PyTorch notebook). With the log-uniform prior the KL term is approximated by

.. math::
    -\mathrm{KL} \approx k_1\,\sigma(k_2 + k_3 \log\alpha) - \tfrac12 \log(1 + \alpha^{-1}) - k_1,
    \qquad k_1 = 0.63576,\ k_2 = 1.87320,\ k_3 = 1.48695,

whose constant :math:`-k_1` makes the KL vanish as :math:`\alpha \to \infty`. Weights with
:math:`\log\alpha \ge` ``threshold`` (3: drop rate :math:`\alpha/(1 + \alpha) > 0.95`) are
pruned at evaluation. Train with the SGVLB :math:`N \cdot \text{mean NLL} + \sum \mathrm{KL}`
(``dropkit.regularization(model)`` collects the KL), annealing the KL weight from 0 to 1 if needed.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from dropkit.reference.base import check_conv2d_args, check_positive_int, check_threshold

from .base import LearnedDropout

__all__ = ["SparseVDConv2d", "SparseVDLinear", "compression", "sparse_vd_kl", "sparsity_report"]

K1, K2, K3 = 0.63576, 1.87320, 1.48695
LOG_ALPHA_RANGE = (-10.0, 10.0)
EPS = 1e-8  # inside log(θ² + eps) and sqrt(s² + eps): finite values and gradients at θ = 0, s = 0


def sparse_vd_kl(log_alpha: torch.Tensor) -> torch.Tensor:
    r"""Elementwise :math:`\mathrm{KL} \approx k_1 - k_1\sigma(k_2 + k_3\log\alpha)
    + \tfrac12\log(1 + e^{-\log\alpha})` (Molchanov et al. 2017), computed with softplus
    so that no :math:`e^{-\log\alpha}` overflows. Tends to 0 as :math:`\alpha \to \infty` and to
    :math:`k_1 - \tfrac12\log\alpha` as :math:`\alpha \to 0`."""
    return K1 - K1 * torch.sigmoid(K2 + K3 * log_alpha) + 0.5 * F.softplus(-log_alpha)


class _SparseVD(LearnedDropout):
    """Shared by the linear and conv layers (params, log α, KL, pruning); subclasses define
    ``_op(x, weight, bias)``, the layer's affine map (``F.linear`` or ``F.conv2d``)."""

    def _init_parameters(self, shape: tuple[int, ...], bias: bool, factory: dict) -> None:
        self.weight = nn.Parameter(torch.empty(shape, **factory))  # θ
        self.log_sigma2 = nn.Parameter(torch.empty(shape, **factory))
        self.bias = nn.Parameter(torch.empty(shape[0], **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """θ and the bias as ``nn.Linear`` / ``nn.Conv2d`` draw them; log σ² = −10 (the
        reference code's start: almost no noise, so training begins as the plain layer)."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        nn.init.constant_(self.log_sigma2, -10.0)
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.weight[0].numel())
            nn.init.uniform_(self.bias, -bound, bound)

    @property
    def threshold(self) -> float:
        """Prune weights whose log α is at or above this (validated on assignment)."""
        return self._threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self._threshold = check_threshold(value, type(self).__name__)

    @property
    def log_alpha(self) -> torch.Tensor:
        """:math:`\\mathrm{clip}(\\log\\sigma^2 - \\log(\\theta^2 + 10^{-8}), -10, 10)`, the
        weight's shape (read-only: derived from ``weight`` and ``log_sigma2``, differentiable)."""
        log_alpha = self.log_sigma2 - torch.log(self.weight.square() + EPS)
        return torch.clamp(log_alpha, *LOG_ALPHA_RANGE)

    def keep_mask(self) -> torch.Tensor:
        """Boolean mask of the weights kept at evaluation (log α < threshold)."""
        return self.log_alpha < self.threshold

    def sparsity(self) -> float:
        """Fraction of weights pruned at evaluation (log α at or above ``threshold``)."""
        with torch.no_grad():
            return 1.0 - self.keep_mask().double().mean().item()

    def regularization(self) -> torch.Tensor:
        """Sum over the weights of the approximate KL (:func:`sparse_vd_kl`), a 0-d tensor."""
        return sparse_vd_kl(self.log_alpha).sum()

    def rates(self) -> dict[str, torch.Tensor]:
        return {"log_alpha": self.log_alpha}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self._op(x, self.weight * self.keep_mask(), self.bias)
        # Local reparameterisation: sample the pre-activation, not the weights. Every example gets
        # independent noise (lower-variance gradients than one weight sample shared by the batch)
        # for the cost of a second matmul, not of a weight sample per example.
        mean = self._op(x, self.weight, self.bias)
        var = self._op(x.square(), self.log_sigma2.exp(), None)
        return mean + torch.sqrt(var + EPS) * torch.randn_like(mean)


class SparseVDLinear(_SparseVD):
    r"""Linear layer with sparse variational dropout on every weight (see the module docstring).

    Train (local reparameterisation): :math:`y = \mu + \sqrt{s^2 + 10^{-8}} \odot \varepsilon`,
    :math:`\mu = x\theta^\top + b`, :math:`s^2 = x^2 (\sigma^2)^\top`,
    :math:`\varepsilon \sim \mathcal N(0, 1)` (torch's global generator). Eval:
    :math:`y = x(\theta \odot [\log\alpha < \text{threshold}])^\top + b`. ``regularization()``
    is the summed KL, ``rates()`` is ``{"log_alpha": log α}``, ``sparsity()`` the pruned fraction.

    Shape: input ``(*, in_features)``; output ``(*, out_features)``; ``weight`` (θ) and
    ``log_sigma2`` ``(out_features, in_features)``.

    Example:
        >>> import torch
        >>> layer = SparseVDLinear(4, 3)
        >>> layer(torch.ones(2, 4)).shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        threshold: float = 3.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = check_positive_int(in_features, "in_features", "SparseVDLinear")
        self.out_features = check_positive_int(out_features, "out_features", "SparseVDLinear")
        self.threshold = threshold
        factory = {"device": device, "dtype": dtype}
        self._init_parameters((self.out_features, self.in_features), bias, factory)

    def _op(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return F.linear(x, weight, bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, threshold={self.threshold}"
        )


class SparseVDConv2d(_SparseVD):
    r"""2-d convolution with sparse variational dropout on every kernel weight.

    Train: :math:`y = \mu + \sqrt{s^2 + 10^{-8}} \odot \varepsilon` with
    :math:`\mu = \theta \star x + b` and :math:`s^2 = \sigma^2 \star x^2` (the same convolution,
    applied to the squared input with the variances: each output is a sum of independent
    Gaussian terms ``x · w``). Eval: :math:`y = (\theta \odot [\log\alpha < \text{threshold}])
    \star x + b`. Arguments as ``torch.nn.Conv2d`` (integer padding only, zeros padding mode).

    Shape: input ``(N, C_in, H, W)`` or unbatched ``(C_in, H, W)``; output as ``nn.Conv2d``'s;
    ``weight`` and ``log_sigma2`` ``(C_out, C_in / groups, kH, kW)``.

    Example:
        >>> import torch
        >>> layer = SparseVDConv2d(2, 4, 3, padding=1)
        >>> layer(torch.ones(1, 2, 5, 5)).shape
        torch.Size([1, 4, 5, 5])
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
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
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
        shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        self._init_parameters(shape, bias, {"device": device, "dtype": dtype})

    def _op(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"groups={self.groups}, bias={self.bias is not None}, threshold={self.threshold}"
        )


def sparsity_report(model: nn.Module) -> dict[str, float]:
    """``{module path: fraction of pruned weights}`` for every sparse VD layer of ``model``."""
    return {name: m.sparsity() for name, m in model.named_modules() if isinstance(m, _SparseVD)}


def compression(model: nn.Module) -> float:
    """Compression ratio of the sparse VD layers: total weights / weights kept at evaluation
    (``inf`` when all are pruned). Biases and other layers are not counted."""
    layers = [m for m in model.modules() if isinstance(m, _SparseVD)]
    if not layers:
        name = type(model).__name__
        raise ValueError(f"compression: model ({name}) has no SparseVDLinear/SparseVDConv2d layer")
    with torch.no_grad():
        total = sum(m.weight.numel() for m in layers)
        kept = sum(int(m.keep_mask().sum()) for m in layers)
    return total / kept if kept else math.inf
