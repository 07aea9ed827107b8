"""DropConnect linear layer (Wan et al. 2013, ICML)."""

from __future__ import annotations

import torch
from torch import nn

from dropkit import functional as F
from dropkit.reference.base import DropRate


class DropConnectLinear(nn.Linear):
    r"""``torch.nn.Linear`` with a Bernoulli mask on its weight matrix in training.

    Train :math:`y = x (W \odot M)^\top / q + b`, :math:`M_{ij} \sim \mathrm{Bernoulli}(1 - p)`
    drawn once per forward and shared by the batch; eval :math:`y = x W^\top + b`, exactly
    ``nn.Linear``. Same parameters, initialisation and ``state_dict`` as ``nn.Linear``, so a
    trained ``nn.Linear``'s weights load unchanged. ``p = 1`` leaves only the bias. Wan et al.
    2013, "Regularization of Neural Networks using DropConnect" (ICML).

    Shape: input ``(*, in_features)``; output ``(*, out_features)``.

    Example:
        >>> import torch
        >>> layer = DropConnectLinear(4, 3, p=0.25)
        >>> layer(torch.ones(2, 4)).shape
        torch.Size([2, 3])
    """

    # Validated on every assignment, so a schedule cannot set a bad rate.
    p = DropRate()

    def __init__(
        self,
        in_features: int,
        out_features: int,
        p: float = 0.5,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias, device, dtype)
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropconnect_linear(x, self.weight, self.bias, self.p, self.training)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p}"
