"""DropPath / stochastic depth module (Huang et al. 2016; Larsson et al. 2017)."""

from __future__ import annotations

import torch

from dropkit import functional as F
from dropkit.functional.mask import eager_cpu, eager_shared_mask

from .base import DropoutModule


class DropPath(DropoutModule):
    r"""Drop a residual branch per sample (``mode="row"``) or per batch (``"batch"``).

    Train :math:`y = b\,x / q` (``scale_by_keep=True``) or :math:`y = b\,x`, with
    :math:`b \sim \mathrm{Bernoulli}(q)` of shape ``(N, 1, ..., 1)`` (row) or ``(1, ..., 1)``
    (batch); eval :math:`y = x`. Replaces timm's ``DropPath(drop_prob, scale_by_keep)`` and
    torchvision's ``StochasticDepth(p, mode)``. Use as ``x + drop_path(f(x))``.

    Shape: ``(N, *)``; output the same.
    """

    def __init__(
        self, p: float = 0.5, mode: str = "row", scale_by_keep: bool = True, inplace: bool = False
    ) -> None:
        super().__init__(p, inplace)
        if mode not in ("row", "batch"):
            raise ValueError(f"DropPath: mode must be 'row' or 'batch', got {mode!r}")
        self.mode = mode
        self.scale_by_keep = bool(scale_by_keep)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p
        if self.training and 0.0 < p < 1.0 and not self.inplace and x.dim() >= 1 and eager_cpu(x):
            lead = x.shape[0] if self.mode == "row" else 1  # one draw per sample, or one in all
            scale = 1.0 / (1.0 - p) if self.scale_by_keep else 1.0
            return x * eager_shared_mask(x, (lead,) + (1,) * (x.dim() - 1), p, scale)
        return F.drop_path(
            x, p, self.training, self.inplace, mode=self.mode, scale_by_keep=self.scale_by_keep
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mode={self.mode!r}, scale_by_keep={self.scale_by_keep}"
