"""Put skip-compute stochastic depth into the transformer blocks of an existing model.

:func:`apply_stochastic_depth` replaces torch's ``nn.TransformerEncoderLayer`` (``batch_first``,
pre- or post-norm) and timm-style blocks (``x + drop_path1(ls1(attn(norm1(x))))`` then the same
with ``norm2``/``mlp``/``drop_path2``; timm's ``Block`` and dropkit's example ViT) by blocks
whose two residual branches are :class:`StochasticDepth`. The new blocks hold the same
parameter objects, so an optimizer built before keeps working.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import nn

from .stochastic_depth import StochasticDepth

_TIMM_PARTS = ("norm1", "attn", "norm2", "mlp", "drop_path1", "drop_path2")


class _AttentionBranch(nn.Module):
    """Self-attention branch of a ``TransformerEncoderLayer``: ``dropout1(sa(norm1(x)))``."""

    def __init__(self, layer: nn.TransformerEncoderLayer) -> None:
        super().__init__()
        self.norm = layer.norm1 if layer.norm_first else nn.Identity()
        self.self_attn, self.dropout = layer.self_attn, layer.dropout1

    def forward(self, x, key_padding_mask=None, attn_mask=None, is_causal=False):
        x = self.norm(x)
        out = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                             need_weights=False, is_causal=is_causal)[0]  # fmt: skip
        return self.dropout(out)


class _FeedForwardBranch(nn.Module):
    """Feed-forward branch: ``dropout2(linear2(dropout(act(linear1(norm2(x))))))``."""

    def __init__(self, layer: nn.TransformerEncoderLayer) -> None:
        super().__init__()
        self.norm = layer.norm2 if layer.norm_first else nn.Identity()
        self.linear1, self.dropout, self.linear2 = layer.linear1, layer.dropout, layer.linear2
        self.dropout2, self.activation = layer.dropout2, layer.activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear1(self.norm(x))
        return self.dropout2(self.linear2(self.dropout(self.activation(x))))


class SkipEncoderLayer(nn.Module):
    """A ``TransformerEncoderLayer`` (``batch_first=True``) with skip-compute stochastic depth
    on both branches; same ``forward(src, src_mask, src_key_padding_mask, is_causal)``."""

    def __init__(self, layer: nn.TransformerEncoderLayer, p: float, **options) -> None:
        super().__init__()
        if not layer.self_attn.batch_first:
            raise ValueError(
                "apply_stochastic_depth: TransformerEncoderLayer needs batch_first=True (the "
                "rows dropped are those of dim 0); build the layer with batch_first=True"
            )
        self.norm_first = layer.norm_first
        self.attn = StochasticDepth(_AttentionBranch(layer), p, **options)
        self.ff = StochasticDepth(_FeedForwardBranch(layer), p, **options)
        self.norm1, self.norm2 = (nn.Identity(), nn.Identity()) if self.norm_first else (
            layer.norm1, layer.norm2)  # fmt: skip

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        if src_mask is not None and src_mask.dim() == 3:
            raise ValueError(
                "SkipEncoderLayer: a 3-D src_mask (N * heads, S, S) is not supported; pass an "
                "(S, S) mask and per-sample padding as src_key_padding_mask (N, S)"
            )
        shared = {"attn_mask": src_mask, "is_causal": is_causal}
        x = self.norm1(self.attn(src, src_key_padding_mask, shared=shared))
        return self.norm2(self.ff(x))


class SkipBlock(nn.Module):
    """A timm-style pre-norm block with skip-compute stochastic depth on both branches."""

    def __init__(self, block: nn.Module, rates: tuple[float, float], **options) -> None:
        super().__init__()
        ls1, ls2 = getattr(block, "ls1", nn.Identity()), getattr(block, "ls2", nn.Identity())
        self.attn = StochasticDepth(
            nn.Sequential(block.norm1, block.attn, ls1), rates[0], **options
        )
        self.mlp = StochasticDepth(nn.Sequential(block.norm2, block.mlp, ls2), rates[1], **options)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.attn(x))


def _own_rate(module: nn.Module) -> float:
    """A drop-path module's rate (``p``, timm's ``drop_prob``); 0 for ``nn.Identity``."""
    for name in ("p", "drop_prob"):
        value = getattr(module, name, None)
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
    if isinstance(module, nn.Identity):
        return 0.0
    raise ValueError(f"apply_stochastic_depth: cannot read the rate of {type(module).__name__}")


def is_timm_style_block(module: nn.Module) -> bool:
    """Has ``norm1``, ``attn``, ``norm2``, ``mlp``, ``drop_path1`` and ``drop_path2``."""
    return all(hasattr(module, part) for part in _TIMM_PARTS)


def apply_stochastic_depth(
    model: nn.Module,
    rates: float | Sequence[float] | None = None,
    *,
    mode: str = "row",
    scale_by_keep: bool = True,
) -> nn.Module:
    """Replace the transformer blocks of ``model`` by skip-compute stochastic-depth blocks.

    Blocks are found in ``named_modules()`` order. ``rates``: None keeps each timm-style
    block's own ``drop_path1``/``drop_path2`` rates (TransformerEncoderLayers need rates);
    a float gives every block that rate; a sequence gives one rate per block, e.g.
    :func:`dropkit.schedules.drop_path_rates` ``(depth, max_rate)``. ``model`` is changed in
    place and returned (the replacement when ``model`` itself is a block).

    Example:
        >>> from torch import nn
        >>> layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True, norm_first=True)
        >>> type(apply_stochastic_depth(nn.Sequential(layer), [0.1])[0]).__name__
        'SkipEncoderLayer'
    """
    found = []
    for name, module in model.named_modules():
        if any(name.startswith(f"{done}.") for done in found if done):
            continue
        if isinstance(module, nn.TransformerEncoderLayer) or is_timm_style_block(module):
            found.append(name)
    if not found:
        raise ValueError(
            "apply_stochastic_depth: no TransformerEncoderLayer or timm-style block "
            f"(attributes {', '.join(_TIMM_PARTS)}) in {type(model).__name__}"
        )
    if rates is not None and not isinstance(rates, numbers.Real):
        rates = [float(r) for r in rates]
        if len(rates) != len(found):
            raise ValueError(
                f"apply_stochastic_depth: rates has {len(rates)} entries but the model has "
                f"{len(found)} blocks ({', '.join(found)})"
            )
    options = {"mode": mode, "scale_by_keep": scale_by_keep}
    for i, name in enumerate(found):
        block = model.get_submodule(name)
        rate = rates if rates is None or isinstance(rates, numbers.Real) else rates[i]
        if isinstance(block, nn.TransformerEncoderLayer):
            if rate is None:
                raise ValueError(
                    "apply_stochastic_depth: TransformerEncoderLayer has no drop-path rate of "
                    "its own; pass rates= (a float, or one per block)"
                )
            new = SkipEncoderLayer(block, float(rate), **options)
        else:
            own = (_own_rate(block.drop_path1), _own_rate(block.drop_path2))
            new = SkipBlock(block, own if rate is None else (float(rate),) * 2, **options)
        if not name:
            return new
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent), leaf, new)
    return model
