"""Variational (Gaussian) dropout with a learned noise variance alpha.

Kingma, Salimans & Welling 2015, "Variational Dropout and the Local Reparameterization Trick"
(NeurIPS, arXiv:1506.02557). The noise comes from torch's global generator (``torch.randn``),
so ``torch.manual_seed`` reproduces it; these layers are not on the Philox mask path.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .base import LearnedDropout

__all__ = [
    "VariationalDropout",
    "VariationalDropoutLinear",
    "variational_dropout",
    "variational_dropout_kl",
    "variational_linear",
]

#: Kingma et al.'s polynomial fit of -KL for the log-uniform prior (their eq. 7 / appendix C).
C1, C2, C3 = 1.16145124, -1.50204118, 0.58629921
#: log(alpha) is clipped at log(1) = 0: the fit is valid for alpha <= 1 only (clipping log(alpha)
#: at alpha_max rather than log(alpha_max) is a known bug in ports, peers.md (d)16).
MAX_LOG_ALPHA = 0.0
#: Added to the LRT variance before the square root: keeps d sqrt finite where x = 0.
VAR_EPS = 1e-8


def variational_dropout_kl(log_alpha: torch.Tensor) -> torch.Tensor:
    r"""Elementwise :math:`\mathrm{KL}(\mathcal N(\theta, \alpha\theta^2) \,\Vert\, p(w) \propto
    1/|w|) \approx -(\tfrac12 \log\alpha + c_1\alpha + c_2\alpha^2 + c_3\alpha^3) + (c_1 + c_2 +
    c_3)`, with :math:`\log\alpha` clipped at 0 (:math:`\alpha \le 1`).

    The KL to the improper log-uniform prior is defined up to a constant; this one is chosen so
    that the KL is 0 at the clip :math:`\alpha = 1` and positive below (the fit is monotone on
    (0, 1]). Kingma et al.'s fit is within ~0.004 of the exact value (up to the constant) for
    :math:`0.1 \le \alpha \le 1`; for smaller :math:`\alpha` its error grows to ~0.04, small
    beside the :math:`-\tfrac12\log\alpha` that dominates there.

    Example:
        >>> bool((variational_dropout_kl(torch.tensor([0.0, 5.0])) == 0).all())  # 5: clipped
        True
        >>> variational_dropout_kl(torch.tensor([-1.0, -5.0]))  # smaller alpha: a larger KL
        tensor([0.4925, 2.7380])
    """
    log_alpha = log_alpha.clamp(max=MAX_LOG_ALPHA)
    alpha = log_alpha.exp()
    # The constant folded in as c_k (1 - alpha^k) = c_k (1 - alpha)(1 + ... + alpha^(k-1)): the
    # KL is then exactly 0 at alpha = 1, with no cancellation of c_1 + c_2 + c_3 against the fit.
    poly = C1 + C2 * (1.0 + alpha) + C3 * (1.0 + alpha * (1.0 + alpha))
    return (1.0 - alpha) * poly - 0.5 * log_alpha


def variational_dropout(x: torch.Tensor, log_alpha: torch.Tensor, eps: torch.Tensor):
    r""":math:`y = x \odot (1 + \sqrt\alpha\,\varepsilon)`, :math:`\log\alpha` clipped at 0;
    ``eps`` is standard normal with x's shape."""
    return x * (1.0 + torch.exp(0.5 * log_alpha.clamp(max=MAX_LOG_ALPHA)) * eps)


def variational_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    log_alpha: torch.Tensor,
    eps: torch.Tensor,
) -> torch.Tensor:
    r"""Local reparameterisation of :math:`w_{ij} \sim \mathcal N(\theta_{ij},
    \alpha_{ij}\theta_{ij}^2)`: :math:`y = x\theta^\top + b + \sqrt{x^2 (\alpha\theta^2)^\top +
    10^{-8}} \odot \varepsilon`, ``eps`` standard normal with y's shape."""
    alpha = log_alpha.clamp(max=MAX_LOG_ALPHA).exp()
    var = F.linear(x.square(), alpha * weight.square())
    return F.linear(x, weight, bias) + torch.sqrt(var + VAR_EPS) * eps


def _alpha_init(p_init: object, owner: str) -> float:
    """log alpha of the Gaussian dropout that matches Bernoulli dropout at rate p_init."""
    if isinstance(p_init, bool) or not isinstance(p_init, numbers.Real):
        raise TypeError(f"{owner}: p_init must be a real number, got {type(p_init).__name__}")
    if not 0.0 < p_init <= 0.5:
        raise ValueError(
            f"{owner}: p_init must be in (0, 0.5] (alpha = p/(1-p) <= 1, the range of the KL "
            f"approximation), got p_init={p_init}"
        )
    return math.log(p_init) - math.log1p(-p_init)


class _Rates:
    """``rates()``, ``p_equivalent`` and ``regularization()`` from a ``log_alpha`` parameter."""

    log_alpha: nn.Parameter

    @property
    def p_equivalent(self) -> torch.Tensor:
        r"""The Bernoulli rate with the same noise variance, :math:`\alpha / (1 + \alpha)`."""
        return torch.sigmoid(self.log_alpha.clamp(max=MAX_LOG_ALPHA))

    def rates(self) -> dict[str, torch.Tensor]:
        """``log_alpha`` (clipped, as used) and ``p_equivalent`` (for information)."""
        clipped = self.log_alpha.clamp(max=MAX_LOG_ALPHA)
        return {"log_alpha": clipped, "p_equivalent": self.p_equivalent}

    def regularization(self) -> torch.Tensor:
        """Sum of :func:`variational_dropout_kl` over every alpha: the KL of the whole data set's
        ELBO. Divide it by the training-set size N when the data term is a per-example mean
        (``dropkit.regularization(model, scale=1 / N)``), or multiply the likelihood by N."""
        return variational_dropout_kl(self.log_alpha).sum()


class VariationalDropout(_Rates, LearnedDropout):
    r"""Gaussian dropout with a learned variance per unit (Kingma, Salimans & Welling 2015).

    Train :math:`y = x \odot (1 + \sqrt{\alpha}\,\varepsilon)`, :math:`\varepsilon \sim
    \mathcal N(0, 1)` per element; eval :math:`y = x` (``x`` itself). :math:`\log\alpha` has the
    shape ``features`` (broadcast against the trailing dims of x) and is clipped at 0, so
    :math:`\alpha \le 1` (equivalent Bernoulli rate :math:`p = \alpha/(1+\alpha) \le 0.5`); the
    parameter keeps its value above 0 but gets no gradient there. The KL term
    (:meth:`regularization`, see :func:`variational_dropout_kl`) is what stops :math:`\alpha` from
    collapsing to 0: the likelihood alone always prefers less noise. It is the KL of the whole
    data set (sum over units); scale it by 1/N next to a per-example mean loss.

    Shape: x ``(*, *features)``; y same. ``log_alpha``: ``features``.

    Args:
        features: size (int) or shape (tuple) of the per-unit ``log_alpha``.
        p_init: initial equivalent rate in (0, 0.5]; :math:`\log\alpha = \log(p/(1-p))`.

    Example:
        >>> layer = VariationalDropout(3, p_init=0.2)
        >>> layer.rates()["p_equivalent"]
        tensor([0.2000, 0.2000, 0.2000], grad_fn=<SigmoidBackward0>)
        >>> layer.eval()(torch.ones(2, 3))
        tensor([[1., 1., 1.],
                [1., 1., 1.]])
    """

    def __init__(self, features: int | Sequence[int], p_init: float = 0.5) -> None:
        super().__init__()
        name = type(self).__name__
        shape = (features,) if isinstance(features, numbers.Integral) else tuple(features)
        if not shape or any(
            isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1 for n in shape
        ):
            raise ValueError(f"{name}: features must be an int >= 1 or a tuple of them, got "
                             f"features={features!r}")  # fmt: skip
        self.features = tuple(int(n) for n in shape)
        self.log_alpha = nn.Parameter(torch.full(self.features, _alpha_init(p_init, name)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = len(self.features)
        if x.dim() < k or tuple(x.shape[x.dim() - k :]) != self.features:
            dims = ", ".join(map(str, self.features))
            raise ValueError(f"{type(self).__name__} expects input (*, {dims}), "
                             f"got shape {tuple(x.shape)}")  # fmt: skip
        if not self.training:
            return x
        eps = torch.randn(x.shape, dtype=x.dtype, device=x.device)
        return variational_dropout(x, self.log_alpha, eps)

    def extra_repr(self) -> str:
        return f"features={self.features}"


class VariationalDropoutLinear(_Rates, nn.Linear, LearnedDropout):
    r"""Linear layer with Gaussian weights :math:`w_{ij} \sim \mathcal N(\theta_{ij},
    \alpha_{ij}\theta_{ij}^2)` and a learned :math:`\alpha` per weight, sampled through the
    local reparameterisation trick (Kingma et al. 2015, section 3): train
    :math:`y = x\theta^\top + b + \sqrt{x^2 (\alpha\theta^2)^\top + 10^{-8}} \odot \varepsilon`,
    :math:`\varepsilon \sim \mathcal N(0, 1)` per output element (so every example has its own
    weight sample, at the cost of one extra matmul); eval :math:`y = x\theta^\top + b`, exactly
    ``nn.Linear``. :math:`\log\alpha` is clipped at 0 as in :class:`VariationalDropout`.
    ``weight`` is :math:`\theta`; the bias is not noisy. ``regularization()`` sums
    :func:`variational_dropout_kl` over the weights (the data set's KL: scale it by 1/N next to a
    per-example mean loss). Same ``weight``/``bias`` initialisation and ``state_dict`` keys as
    ``nn.Linear``, plus ``log_alpha``.

    Shape: x ``(*, in_features)``; y ``(*, out_features)``; ``log_alpha``
    ``(out_features, in_features)``.

    Example:
        >>> layer = VariationalDropoutLinear(4, 2, p_init=0.1)
        >>> layer(torch.ones(3, 4)).shape, layer.log_alpha.shape
        (torch.Size([3, 2]), torch.Size([2, 4]))
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        p_init: float = 0.5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias, device, dtype)
        self.p_init = p_init
        log_alpha = _alpha_init(p_init, type(self).__name__)
        self.log_alpha = nn.Parameter(torch.full_like(self.weight, log_alpha))

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if hasattr(self, "log_alpha"):  # nn.Linear.__init__ calls this before log_alpha exists
            with torch.no_grad():
                self.log_alpha.fill_(_alpha_init(self.p_init, type(self).__name__))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return F.linear(x, self.weight, self.bias)
        shape = (*x.shape[:-1], self.out_features)
        eps = torch.randn(shape, dtype=x.dtype, device=x.device)
        return variational_linear(x, self.weight, self.bias, self.log_alpha, eps)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p_init={self.p_init}"
