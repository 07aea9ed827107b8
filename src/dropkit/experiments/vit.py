"""A small Vision Transformer with timm-style pre-norm blocks and depth-linear DropPath.

Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words" (arXiv:2010.11929); the block is
timm's ``x + drop_path1(attn(norm1(x)))``, ``x + drop_path2(mlp(norm2(x)))`` with stochastic
depth (Huang et al. 2016, arXiv:1603.09382) at rates from
:func:`dropkit.schedules.drop_path_rates`. ``skip_compute=True`` turns every block into
:class:`dropkit.nn.StochasticDepth` branches (:func:`dropkit.nn.apply_stochastic_depth`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from dropkit import nn as dkn
from dropkit.schedules import drop_path_rates

__all__ = ["Attention", "Block", "Mlp", "ViT", "build_vit"]


class Attention(nn.Module):
    """Multi-head self-attention ``(N, L, D) -> (N, L, D)`` with one fused qkv projection."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"Attention: dim ({dim}) must be divisible by heads ({heads})")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, dim = x.shape
        qkv = self.qkv(x).reshape(n, length, 3, self.heads, dim // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (N, H, L, D / H)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(n, length, dim))


class Mlp(nn.Sequential):
    """``fc2(gelu(fc1(x)))`` with hidden width ``mlp_ratio * dim``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)


class Block(nn.Module):
    """timm-style pre-norm block: ``x + drop_path1(attn(norm1(x)))`` then the MLP branch."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, drop_path: float) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim, int(dim * mlp_ratio))
        self.drop_path1, self.drop_path2 = dkn.DropPath(drop_path), dkn.DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class ViT(nn.Module):
    """Patch embedding + class token + learned positions, ``depth`` blocks, a linear head.

    Shape: images ``(N, C, H, W)`` -> logits ``(N, num_classes)``; ``H`` and ``W`` divisible by
    ``patch_size``; the blocks see ``(N, 1 + HW / patch_size^2, dim)``.
    """

    def __init__(self, image_size: int, patch_size: int, in_chans: int, num_classes: int,
                 dim: int, depth: int, heads: int, mlp_ratio: float = 4.0,
                 drop_path_rate: float = 0.0) -> None:  # fmt: skip
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"ViT: image_size ({image_size}) must be divisible by patch_size")
        tokens = 1 + (image_size // patch_size) ** 2
        self.patch = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        rates = drop_path_rates(depth, drop_path_rate)
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp_ratio, r) for r in rates))
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch(images).flatten(2).transpose(1, 2)  # (N, L - 1, dim)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        return self.head(self.norm(self.blocks(x))[:, 0])


def build_vit(
    image_size: int = 8, patch_size: int = 2, in_chans: int = 1, num_classes: int = 10, *,
    dim: int = 64, depth: int = 6, heads: int = 4, mlp_ratio: float = 4.0,
    drop_path_rate: float = 0.0, skip_compute: bool = False, mode: str = "row",
) -> ViT:  # fmt: skip
    """A :class:`ViT` with depth-linear DropPath up to ``drop_path_rate``; with
    ``skip_compute`` its blocks compute each branch on the kept samples only (``mode``:
    ``"row"``, ``"fixed"`` or ``"batch"``, see :class:`dropkit.nn.StochasticDepth`)."""
    model = ViT(image_size, patch_size, in_chans, num_classes, dim, depth, heads, mlp_ratio,
                drop_path_rate)  # fmt: skip
    if skip_compute:
        dkn.apply_stochastic_depth(model, mode=mode)
    return model
