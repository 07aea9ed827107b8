r"""Standout: adaptive dropout whose keep probabilities come from the current input.

Ba & Frey 2013, "Adaptive dropout for training deep neural networks" (NIPS). A belief network
assigns every hidden unit its own keep probability from the same input the layer sees; with the
belief network's weights tied to the layer's (the paper's :math:`\pi = \sigma(\alpha W x +
\beta)` form, which it found to work as well as learning them separately),

.. math::
    a = W x + b, \qquad \pi = \sigma(\alpha a + \beta), \qquad
    y_\text{train} = m \odot f(a),\ m \sim \mathrm{Bernoulli}(\pi), \qquad
    y_\text{eval} = \pi \odot f(a) = \mathbb E_m[y_\text{train}].

The keep probabilities are a function of the input only, never of gradients: "adaptive dropout"
ports that read ``x.grad`` in ``forward`` use a stale gradient from another step (or None).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from dropkit.reference.base import check_positive_int
from dropkit.reference.standout import check_gain  # the same alpha/beta check as the twin

from .base import LearnedDropout

__all__ = ["Standout"]


class Standout(LearnedDropout):
    r"""A linear layer and activation whose units are dropped with input-dependent probability.

    :math:`a = x W^\top + b`, keep probability :math:`\pi = \sigma(\alpha a + \beta)` (the
    belief network shares ``weight`` and ``bias``), training output :math:`y = m \odot f(a)` with
    :math:`m \sim \mathrm{Bernoulli}(\pi)` drawn from torch's global generator, evaluation output
    :math:`y = \pi \odot f(a)` (the expectation, as in the paper). No rescaling by :math:`1/\pi`:
    the paper's eval rule multiplies by :math:`\pi` instead.

    Gradients: in training the mask is a sample, treated as a constant (no gradient flows
    through the Bernoulli draw into :math:`\pi`), so :math:`\partial y / \partial a = m \odot
    f'(a)`. Because the belief network is tied to the layer's weights, it needs no gradient of
    its own. In evaluation :math:`y = \pi \odot f(a)` is differentiated through both factors.
    ``regularization()`` is 0: Standout adds no term to the loss. ``rates()`` is
    ``{"keep_probability": mean π}`` over the last forward pass (NaN before the first), and
    ``p`` is the matching drop rate :math:`1 - \bar\pi`.

    Args:
        in_features, out_features: sizes.
        alpha, beta: scale and shift of the belief network's pre-activation (finite reals).
        bias: learn an additive bias (shared by the belief network).
        activation: :math:`f`, any callable on tensors; ``torch.nn.ReLU()`` by default.
        device, dtype: of the parameters, initialised as ``torch.nn.Linear``'s.

    Shape: input ``(*, in_features)``; output and ``mask`` ``(*, out_features)``.

    Example:
        >>> import torch
        >>> layer = Standout(4, 3, alpha=1.0, beta=0.5)
        >>> layer(torch.ones(2, 4)).shape, layer.rates()["keep_probability"].shape
        (torch.Size([2, 3]), torch.Size([]))
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        alpha: float = 1.0,
        beta: float = 0.0,
        bias: bool = True,
        *,
        activation: Callable[[torch.Tensor], torch.Tensor] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = check_positive_int(in_features, "in_features", "Standout")
        self.out_features = check_positive_int(out_features, "out_features", "Standout")
        self.alpha = alpha
        self.beta = beta
        activation = nn.ReLU() if activation is None else activation
        if not callable(activation):
            raise TypeError(f"Standout: activation must be callable, got {activation!r}")
        self.activation = activation
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(self.out_features, self.in_features, **factory))
        self.bias = nn.Parameter(torch.empty(self.out_features, **factory)) if bias else None
        # A plain attribute, not a buffer: a statistic of the last batch, not model state.
        self._keep_probability = torch.tensor(math.nan)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The same draws as ``torch.nn.Linear``'s initialisation."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    @property
    def alpha(self) -> float:
        """Scale of the belief network's pre-activation (validated on assignment)."""
        return self._alpha

    @alpha.setter
    def alpha(self, value: float) -> None:
        self._alpha = check_gain(value, "alpha")

    @property
    def beta(self) -> float:
        """Shift of the belief network's pre-activation (validated on assignment)."""
        return self._beta

    @beta.setter
    def beta(self, value: float) -> None:
        self._beta = check_gain(value, "beta")

    @property
    def p(self) -> float:
        """Mean drop rate :math:`1 - \\bar\\pi` of the last forward pass (NaN before the first)."""
        return 1.0 - float(self._keep_probability)

    def rates(self) -> dict[str, torch.Tensor]:
        return {"keep_probability": self._keep_probability}

    def regularization(self) -> torch.Tensor:
        return self.weight.new_zeros(())

    def forward(self, x: torch.Tensor, *, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask`` (bool or 0/1, the output's shape; training only) replaces the random draw."""
        pre = F.linear(x, self.weight, self.bias)
        hidden = self.activation(pre)
        if not self.training:
            if mask is not None:
                raise ValueError("Standout: mask is only used in training; call train() first")
            keep_prob = torch.sigmoid(self.alpha * pre + self.beta)
            self._keep_probability = keep_prob.detach().mean()
            return keep_prob * hidden
        # The mask is a sample: the Bernoulli draw is not differentiated, so π needs no graph.
        keep_prob = torch.sigmoid(self.alpha * pre.detach() + self.beta)
        self._keep_probability = keep_prob.mean()
        if mask is None:
            keep = torch.bernoulli(keep_prob).bool()
        elif mask.shape != pre.shape:
            raise ValueError(
                f"Standout: mask has shape {tuple(mask.shape)}, expected the output shape "
                f"{tuple(pre.shape)}"
            )
        elif mask.dtype != torch.bool and not ((mask == 0) | (mask == 1)).all():
            raise ValueError("Standout: mask must hold only 0/1 or True/False")
        else:
            keep = mask.bool()
        # where, not a product, so that inf activations at dropped units give 0, not NaN.
        return torch.where(keep, hidden, hidden.new_zeros(()))

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"alpha={self.alpha}, beta={self.beta}, bias={self.bias is not None}"
        )
