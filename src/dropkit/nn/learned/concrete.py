"""Concrete dropout: a dropout rate learned by gradient descent through a relaxed Bernoulli mask.

Gal, Hron & Kendall 2017, "Concrete Dropout" (NeurIPS, arXiv:1705.07832). The noise comes from
torch's global generator (``torch.rand``), so ``torch.manual_seed`` reproduces it; these layers
are not on dropkit's counter-based (Philox) mask path.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from dropkit.reference.base import check_positive_int

from .base import LearnedDropout

__all__ = ["ConcreteDropout", "SpatialConcreteDropout", "concrete_dropout", "concrete_regularizers"]

#: Floor of every logarithm and of the keep probability in the rescale (the paper's code's eps):
#: it keeps log 0 and 1/0 out of the graph when p saturates at 0 or 1.
EPS = 1e-7


def _check_real(
    value: object,
    name: str,
    owner: str,
    *,
    low: float,
    high: float = math.inf,
    low_closed: bool = False,
) -> float:
    """``value`` as a float in (low, high) (``[low, high)`` with ``low_closed``), else a
    ValueError naming the argument, the allowed range and the value."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: {name} must be a real number, got {type(value).__name__}")
    value = float(value)
    above = value >= low if low_closed else value > low
    if not (above and value < high):  # written so that NaN fails too
        allowed = f"{'[' if low_closed else '('}{low:g}, {high:g})"
        raise ValueError(f"{owner}: {name} must be in {allowed}, got {name}={value}")
    return value


def concrete_regularizers(lengthscale: float, tau: float, n: int) -> tuple[float, float]:
    r"""The paper's ``(weight_regularizer, dropout_regularizer)`` for a prior length-scale
    :math:`l`, a model precision :math:`\tau` and :math:`N` training examples:
    :math:`w_r = l^2 / (\tau N)`, :math:`d_r = 2 / (\tau N)` (Gal et al. 2017, section 3; the
    factor 2 is for a Gaussian likelihood with the loss written as a mean squared error).

    Example:
        >>> concrete_regularizers(lengthscale=0.5, tau=2.0, n=100)
        (0.00125, 0.01)
    """
    owner = "concrete_regularizers"
    lengthscale = _check_real(lengthscale, "lengthscale", owner, low=0.0)
    tau = _check_real(tau, "tau", owner, low=0.0)
    n = check_positive_int(n, "n", owner)
    return lengthscale**2 / (tau * n), 2.0 / (tau * n)


def concrete_dropout(
    x: torch.Tensor, p_logit: torch.Tensor, u: torch.Tensor, temperature: float
) -> torch.Tensor:
    r""":math:`y = x \odot (1 - z) / (1 - p)` with the relaxed drop mask
    :math:`z = \sigma((\log p - \log(1-p) + \log u - \log(1-u)) / t)`, :math:`p = \sigma(\ell)`.

    ``u`` (uniform in [0, 1), broadcastable to ``x``) is the noise that makes ``z`` a relaxed
    Bernoulli(p); without it ``z`` would be a constant. Logs are of values floored at
    :data:`EPS`, and so is ``1 - p`` in the rescale (both are exact for eps <= p <= 1 - eps).
    """
    p, q = torch.sigmoid(p_logit), torch.sigmoid(-p_logit)  # q: 1 - p without cancellation
    drop_logit = torch.log(p.clamp_min(EPS)) - torch.log(q.clamp_min(EPS))
    noise = torch.log(u.clamp_min(EPS)) - torch.log((1.0 - u).clamp_min(EPS))
    keep = torch.sigmoid(-(drop_logit + noise) / temperature)  # 1 - z, precise when z ~ 1
    return x * keep / q.clamp_min(EPS)


class ConcreteDropout(LearnedDropout):
    r"""Dropout whose rate :math:`p = \sigma(\ell)` is learned (Gal, Hron & Kendall 2017).

    Train: :math:`y = f(\tilde x)`, :math:`\tilde x = x \odot (1 - z) / (1 - p)`, with a fresh
    relaxed-Bernoulli drop mask :math:`z = \sigma((\log p - \log(1-p) + \log u - \log(1-u)) /
    t)`, :math:`u \sim U(0, 1)`, one per input element (:class:`SpatialConcreteDropout`: one per
    sample and channel); ``f`` is the wrapped ``layer`` or the identity. As :math:`t \to 0`,
    :math:`z` becomes a hard Bernoulli(p) mask and :math:`\mathbb E[\tilde x] \to x` (inverted
    dropout). Eval: :math:`y = f(x)`, no noise (the identity form returns ``x`` itself); Monte
    Carlo dropout samples by setting ``training = True`` on this module alone, as
    :func:`dropkit.mc.mc_mode` does for dropout modules.

    ``regularization()`` is the paper's per-layer term
    :math:`w_r \lVert W\rVert^2 / (1 - p) + d_r K (p \log p + (1-p)\log(1-p))`, where
    :math:`W` are the wrapped layer's weights (every parameter whose name does not start with
    ``bias``: the prior is on the weights only) and :math:`K` is the input dimension: the
    wrapped layer's ``in_features`` / ``in_channels``, else ``input_dim``, else the size of the
    masked dim (features; channels for the spatial form) of the first input. The second term
    is :math:`-d_r K` times the Bernoulli entropy, so it pulls :math:`p` towards 0.5. Without a
    wrapped layer there are no weights and the term is the entropy part alone (wrap the layer
    the dropout feeds, as the paper does, to get the weight part). Use
    :func:`concrete_regularizers` to derive :math:`w_r, d_r` from :math:`(l, \tau, N)`.

    Shape:
        x: ``(*, K)`` (``(N, C, *)`` for the spatial form); y: the layer's output (x's shape
        when there is no layer). ``p``: a 0-d tensor.

    Args:
        layer: the module the dropout is applied *in front of* (its input is dropped), or None.
        p_init: initial drop rate, in (0, 1).
        temperature: relaxation temperature t > 0 (paper: 0.1; 2/3 for the spatial form).
        weight_regularizer, dropout_regularizer: :math:`w_r, d_r \ge 0`.
        input_dim: K when there is no wrapped layer (otherwise read from the first input).

    Example:
        >>> import torch
        >>> layer = ConcreteDropout(torch.nn.Linear(4, 2), p_init=0.2)
        >>> round(layer.p.item(), 6), layer(torch.ones(3, 4)).shape
        (0.2, torch.Size([3, 2]))
        >>> layer.regularization().shape
        torch.Size([])
    """

    default_temperature = 0.1

    def __init__(
        self,
        layer: nn.Module | None = None,
        *,
        p_init: float = 0.1,
        temperature: float | None = None,
        weight_regularizer: float = 1e-6,
        dropout_regularizer: float = 1e-5,
        input_dim: int | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if layer is not None and not isinstance(layer, nn.Module):
            raise TypeError(
                f"{name}: layer must be an nn.Module or None, got {type(layer).__name__}; "
                f"pass the rate by keyword, e.g. {name}(p_init={layer!r})"
            )
        p_init = _check_real(p_init, "p_init", name, low=0.0, high=1.0)
        t = self.default_temperature if temperature is None else temperature
        self.temperature = _check_real(t, "temperature", name, low=0.0)
        self.weight_regularizer = _check_real(
            weight_regularizer, "weight_regularizer", name, low=0.0, low_closed=True
        )
        self.dropout_regularizer = _check_real(
            dropout_regularizer, "dropout_regularizer", name, low=0.0, low_closed=True
        )
        self.layer = layer
        self.p_logit = nn.Parameter(torch.tensor(math.log(p_init) - math.log1p(-p_init)))
        # K: what the wrapped layer declares, else what the caller says, else the first input.
        declared = getattr(layer, "in_features", getattr(layer, "in_channels", None))
        if input_dim is not None:
            input_dim = check_positive_int(input_dim, "input_dim", name)
            if declared is not None and declared != input_dim:
                raise ValueError(
                    f"{name}: input_dim={input_dim} contradicts the wrapped layer's input "
                    f"dimension {declared}; leave input_dim out when wrapping a layer"
                )
        self.input_dim: int | None = declared if declared is not None else input_dim

    @property
    def p(self) -> torch.Tensor:
        r"""The current drop rate :math:`\sigma(\ell)` (a 0-d tensor that carries gradient)."""
        return torch.sigmoid(self.p_logit)

    def _mask_shape(self, x: torch.Tensor) -> tuple[tuple[int, ...], int]:
        """(shape of u, K): one noise value per element; K = the feature (last) dim."""
        if x.dim() < 1:
            raise ValueError(f"{type(self).__name__} expects input (*, K), got a 0-d tensor")
        return tuple(x.shape), x.shape[-1]

    def forward(self, x: torch.Tensor, *args, **kwargs):
        """Drop ``x`` (training only), then apply the wrapped layer (with ``args``/``kwargs``)."""
        shape, k = self._mask_shape(x)
        if self.input_dim is None:
            self.input_dim = int(k)
        elif k != self.input_dim:
            raise ValueError(
                f"{type(self).__name__}: the input has {k} features (K) in the masked dim, but "
                f"input_dim={self.input_dim}; got input shape {tuple(x.shape)}"
            )
        if self.training:  # the attribute, not self.train(), which would switch modes
            u = torch.rand(shape, dtype=x.dtype, device=x.device)
            x = concrete_dropout(x, self.p_logit, u, self.temperature)
        return x if self.layer is None else self.layer(x, *args, **kwargs)

    def regularization(self) -> torch.Tensor:
        if self.input_dim is None:
            raise RuntimeError(
                f"{type(self).__name__}.regularization(): the input dimension K is not known "
                "yet; pass input_dim= to the constructor, wrap a layer with in_features / "
                "in_channels, or run one forward pass first"
            )
        p, q = torch.sigmoid(self.p_logit), torch.sigmoid(-self.p_logit)
        neg_entropy = p * torch.log(p.clamp_min(EPS)) + q * torch.log(q.clamp_min(EPS))
        reg = self.dropout_regularizer * self.input_dim * neg_entropy
        if self.layer is not None:
            weights = [
                w for n, w in self.layer.named_parameters()
                if not n.rsplit(".", 1)[-1].startswith("bias")
            ]  # fmt: skip
            if weights:
                square = torch.stack([w.square().sum() for w in weights]).sum()
                reg = reg + self.weight_regularizer * square / q.clamp_min(EPS)
        return reg

    def rates(self) -> dict[str, torch.Tensor]:
        return {"p": self.p}

    def extra_repr(self) -> str:
        return (
            f"p={self.p.item():.4g}, temperature={self.temperature:g}, "
            f"weight_regularizer={self.weight_regularizer:g}, "
            f"dropout_regularizer={self.dropout_regularizer:g}, input_dim={self.input_dim}"
        )


class SpatialConcreteDropout(ConcreteDropout):
    r"""Concrete dropout of whole channels: one relaxed mask value per (sample, channel),
    shared over the spatial dims (Tompson et al. 2015's spatial dropout made learnable), with
    :math:`K` = the number of channels and a default temperature of 2/3 (the paper's code).
    Everything else is :class:`ConcreteDropout`.

    Shape: x ``(N, C, *spatial)`` with at least one spatial dim; u ``(N, C, 1, ..., 1)``.

    Example:
        >>> import torch
        >>> layer = SpatialConcreteDropout(torch.nn.Conv2d(3, 4, 1), p_init=0.3)
        >>> layer(torch.ones(2, 3, 5, 5)).shape, layer.temperature == 2 / 3
        (torch.Size([2, 4, 5, 5]), True)
    """

    default_temperature = 2.0 / 3.0

    def _mask_shape(self, x: torch.Tensor) -> tuple[tuple[int, ...], int]:
        if x.dim() < 3:
            raise ValueError(
                f"{type(self).__name__} expects input (N, C, *spatial) with at least 3 dims, "
                f"got shape {tuple(x.shape)}"
            )
        return (x.shape[0], x.shape[1]) + (1,) * (x.dim() - 2), x.shape[1]
