"""The multilayer perceptrons of the classification recipes, and the max-norm constraint."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from dropkit import nn as dkn

__all__ = ["build_mlp", "max_norm_"]


def build_mlp(sizes: Sequence[int], p: float, input_p: float = 0.0) -> nn.Sequential:
    """``[Dropout(input_p)] Linear ReLU Dropout(p) ... Linear`` with the given layer sizes.

    ``sizes = (d, h_1, ..., h_L, K)``: input ``(N, d)`` (any trailing shape is flattened),
    logits ``(N, K)``. Dropout (Srivastava et al. 2014, inverted, :class:`dropkit.nn.Dropout`)
    follows every hidden ReLU with rate ``p``; ``input_p > 0`` also drops input features.
    """
    if len(sizes) < 2:
        raise ValueError(f"sizes must list at least the input and output sizes, got {sizes}")
    layers: list[nn.Module] = [nn.Flatten()]
    if input_p > 0:
        layers.append(dkn.Dropout(input_p))
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers += [nn.ReLU(), dkn.Dropout(p)]
    return nn.Sequential(*layers)


@torch.no_grad()
def max_norm_(model: nn.Module, c: float) -> None:
    r"""Max-norm constraint (Srivastava et al. 2014, section 5.1), in place, on every Linear.

    Each unit's incoming weight vector :math:`w_j` (row ``j`` of ``weight``) is projected onto
    the ball :math:`\lVert w_j \rVert_2 \le c` after each update:
    :math:`w_j \leftarrow w_j \cdot \min(1, c / \lVert w_j \rVert_2)`.
    """
    for module in model.modules():
        if isinstance(module, nn.Linear):
            norms = module.weight.norm(dim=1, keepdim=True)
            module.weight.mul_(torch.clamp(c / norms.clamp_min(1e-12), max=1.0))
