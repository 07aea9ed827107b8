r"""A small character-level decoder-only transformer (GPT) with dropkit dropout at every site.

The architecture follows GPT-2 (Radford et al. 2019) as written in nanoGPT: token plus learned
position embeddings, pre-LayerNorm blocks of causal multi-head self-attention and a GELU MLP
with 4x hidden units, a final LayerNorm, and a linear head tied to the token embedding. Dropout
sits where the Transformer (Vaswani et al. 2017, section 5.4) and GPT-2 put it: after the
embedding sum, on the attention probabilities, and on the two residual branches (attention
output projection, MLP output). ``variant="standout"`` replaces the MLP's first linear layer and
activation by :class:`dropkit.nn.learned.Standout` (adaptive dropout of the hidden units, Ba &
Frey 2013).

Attention is written out rather than calling ``scaled_dot_product_attention``: its dropout would
be a function argument, invisible to :mod:`dropkit.mc` and to dropout schedulers, whereas here it
is a :class:`dropkit.nn.Dropout` module.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn
from torch.nn import functional as F

from dropkit.nn import Dropout
from dropkit.nn.learned import Standout
from dropkit.reference.base import check_positive_int

__all__ = [
    "MLP",
    "VARIANTS",
    "Block",
    "CausalSelfAttention",
    "CharGPT",
    "configure_optimizer",
    "param_groups",
]

#: ``"standard"``: Dropout(p) at every site; ``"standout"``: Standout on the MLP hidden units.
VARIANTS = ("standard", "standout")


def _check_rate(value: object, name: str, owner: str) -> float:
    """A drop rate in [0, 1): p = 1 would drop everything and leave nothing to learn from."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and 0.0 <= value < 1.0
    if not ok:
        raise ValueError(f"{owner}: {name} must be a real number in [0, 1), got {name}={value!r}")
    return float(value)


def _check_finite(value: object, name: str, owner: str) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok:
        raise ValueError(f"{owner}: {name} must be a finite real number, got {name}={value!r}")
    return float(value)


class CausalSelfAttention(nn.Module):
    r"""Multi-head causal self-attention with dropout on the probabilities and the output.

    For ``x`` ``(B, T, C)``, heads ``h = 1..H`` of size ``d = C / H``:

    .. math::
        A_h = D_\text{attn}\!\left(\mathrm{softmax}\!\left(
            \frac{Q_h K_h^\top}{\sqrt d} + M\right)\right), \quad
        y = D_\text{resid}\big([A_1 V_1, \dots, A_H V_H]\, W_O + b_O\big),

    with :math:`M_{ij} = -\infty` for :math:`j > i` (a position never sees later ones) and both
    :math:`D` :class:`dropkit.nn.Dropout` of rate ``p`` (Vaswani et al. 2017).

    Shape: ``(B, T, C)`` → ``(B, T, C)``, ``T <= block_size``.
    """

    def __init__(self, n_embd: int, n_head: int, block_size: int, p: float) -> None:
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.attn_drop = Dropout(p)
        self.resid_drop = Dropout(p)
        causal = torch.tril(torch.ones(block_size, block_size, dtype=torch.bool))
        # Not persistent: derived from block_size, so it need not be saved in checkpoints.
        self.register_buffer("causal", causal.view(1, 1, block_size, block_size), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, H, T, d): one attention pattern per head.
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))
        scores = scores.masked_fill(~self.causal[:, :, :T, :T], float("-inf"))
        att = self.attn_drop(F.softmax(scores, dim=-1))
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        return self.resid_drop(self.c_proj(y))


class MLP(nn.Module):
    r"""Position-wise feed-forward block :math:`y = D(W_2\, f(W_1 x + b_1) + b_2)`, hidden
    ``4 * n_embd``, :math:`f` = GELU, :math:`D` = :class:`dropkit.nn.Dropout` of rate ``p``.

    ``standout=True``: :math:`f(W_1 x + b_1)` is :class:`dropkit.nn.learned.Standout`, which
    keeps hidden unit j with probability :math:`\sigma(\alpha a_j + \beta)`, :math:`a = W_1 x +
    b_1` (Ba & Frey 2013), and multiplies by that probability in evaluation.

    Shape: ``(B, T, n_embd)`` → ``(B, T, n_embd)``.
    """

    def __init__(
        self, n_embd: int, p: float, standout: bool = False, alpha: float = 1.0, beta: float = 0.0
    ) -> None:
        super().__init__()
        hidden = 4 * n_embd
        if standout:
            self.c_fc: nn.Module = Standout(n_embd, hidden, alpha, beta, activation=nn.GELU())
            # Standout applies the activation itself (its keep probabilities need the
            # pre-activation), so nothing is left to do here.
            self.act: nn.Module = nn.Identity()
        else:
            self.c_fc = nn.Linear(n_embd, hidden)
            self.act = nn.GELU()
        self.c_proj = nn.Linear(hidden, n_embd)
        self.drop = Dropout(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.c_proj(self.act(self.c_fc(x))))


class Block(nn.Module):
    r"""Pre-LayerNorm transformer block (GPT-2):
    :math:`x \leftarrow x + \mathrm{Attn}(\mathrm{LN}_1(x))`, then
    :math:`x \leftarrow x + \mathrm{MLP}(\mathrm{LN}_2(x))`.

    Shape: ``(B, T, n_embd)`` → ``(B, T, n_embd)``.
    """

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        block_size: int,
        p: float,
        standout: bool = False,
        alpha: float = 1.0,
        beta: float = 0.0,
    ) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, block_size, p)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = MLP(n_embd, p, standout, alpha, beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class CharGPT(nn.Module):
    r"""A nanoGPT-style decoder-only transformer for characters, with dropkit dropout.

    Structure, for ids ``(B, T)``:

    .. math::
        x_0 = D_\text{emb}(W_\text{te}[\text{ids}] + W_\text{pe}[0..T-1]), \quad
        x_l = \mathrm{Block}_l(x_{l-1}),\ l = 1..L, \quad
        \text{logits} = \mathrm{LN}_f(x_L)\, W_\text{te}^\top.

    Dropout sites, each :class:`dropkit.nn.Dropout` of rate ``p``: ``drop`` (after the embedding
    sum), ``blocks[l].attn.attn_drop`` (attention probabilities), ``blocks[l].attn.resid_drop``
    (attention output projection, before the residual add), ``blocks[l].mlp.drop`` (MLP output,
    before the residual add). With ``variant="standout"`` each ``blocks[l].mlp.c_fc`` is a
    :class:`dropkit.nn.learned.Standout` layer (``n_embd → 4 n_embd``, GELU, keep probability
    :math:`\sigma(\alpha a + \beta)`, Ba & Frey 2013). ``p = 0`` with ``"standard"`` is the
    no-dropout baseline.

    Initialisation as GPT-2: every linear and embedding weight :math:`\mathcal N(0, 0.02^2)`,
    biases 0, and the residual projections (``c_proj``) :math:`\mathcal N(0, (0.02 /
    \sqrt{2L})^2)`, so the residual stream's variance does not grow with depth. The head has no
    bias and shares the token embedding's weight (Press & Wolf 2017).

    Shape: ids ``(B, T)`` int64 with ``T <= block_size`` → logits ``(B, T, vocab_size)``.

    Args:
        vocab_size: number of characters V.
        block_size: longest context T.
        n_layer: number of blocks L.
        n_head: attention heads; must divide ``n_embd``.
        n_embd: model width C.
        p: dropout rate of every site, in [0, 1).
        variant: ``"standard"`` or ``"standout"``.
        standout_alpha, standout_beta: Standout's :math:`\alpha, \beta` (finite reals).

    Example:
        >>> import torch
        >>> model = CharGPT(10, block_size=8, n_layer=1, n_head=2, n_embd=8, p=0.1)
        >>> model(torch.randint(0, 10, (3, 8))).shape
        torch.Size([3, 8, 10])
    """

    def __init__(
        self,
        vocab_size: int,
        block_size: int = 128,
        n_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 128,
        p: float = 0.0,
        variant: str = "standard",
        standout_alpha: float = 1.0,
        standout_beta: float = 0.0,
    ) -> None:
        super().__init__()
        owner = "CharGPT"
        self.vocab_size = check_positive_int(vocab_size, "vocab_size", owner)
        self.block_size = check_positive_int(block_size, "block_size", owner)
        self.n_layer = check_positive_int(n_layer, "n_layer", owner)
        self.n_head = check_positive_int(n_head, "n_head", owner)
        self.n_embd = check_positive_int(n_embd, "n_embd", owner)
        if self.n_embd % self.n_head:
            raise ValueError(
                f"{owner}: n_embd must be divisible by n_head, got n_embd={self.n_embd}, "
                f"n_head={self.n_head}"
            )
        p = _check_rate(p, "p", owner)
        if variant not in VARIANTS:
            raise ValueError(f"{owner}: variant must be one of {VARIANTS}, got variant={variant!r}")
        self.variant = variant
        alpha = _check_finite(standout_alpha, "standout_alpha", owner)
        beta = _check_finite(standout_beta, "standout_beta", owner)
        standout = variant == "standout"

        self.wte = nn.Embedding(self.vocab_size, self.n_embd)
        self.wpe = nn.Embedding(self.block_size, self.n_embd)
        self.drop = Dropout(p)
        self.blocks = nn.ModuleList(
            Block(self.n_embd, self.n_head, self.block_size, p, standout, alpha, beta)
            for _ in range(self.n_layer)
        )
        self.ln_f = nn.LayerNorm(self.n_embd)
        self.head = nn.Linear(self.n_embd, self.vocab_size, bias=False)
        self.head.weight = self.wte.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 initialisation (see the class docstring); LayerNorms to weight 1, bias 0."""
        std_resid = 0.02 / math.sqrt(2 * self.n_layer)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear | Standout):
                std = std_resid if name.endswith("c_proj") else 0.02
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            elif isinstance(module, nn.LayerNorm):
                module.reset_parameters()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, T, vocab_size)`` of the next character at every position."""
        if ids.dim() != 2:
            raise ValueError(f"CharGPT: ids must be (B, T), got shape {tuple(ids.shape)}")
        length = ids.size(1)
        if length > self.block_size:
            raise ValueError(
                f"CharGPT: sequence length T={length} exceeds block_size={self.block_size}"
            )
        pos = torch.arange(length, device=ids.device)
        x = self.drop(self.wte(ids) + self.wpe(pos))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}"


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two optimiser groups, nanoGPT's rule: decay every parameter with ``dim >= 2`` (linear and
    embedding matrices), none of the rest (biases, LayerNorm gains). Tied parameters appear once.

    Example:
        >>> groups = param_groups(CharGPT(5, block_size=4, n_layer=1, n_head=1, n_embd=4), 0.1)
        >>> [g["weight_decay"] for g in groups], all(p.dim() < 2 for p in groups[1]["params"])
        ([0.1, 0.0], True)
    """
    wd = float(weight_decay)
    if not (math.isfinite(wd) and wd >= 0):
        raise ValueError(f"param_groups: weight_decay must be a finite number >= 0, got {wd}")
    # parameters() yields a shared (tied) tensor once, so AdamW never sees it twice.
    params = [q for q in model.parameters() if q.requires_grad]
    return [
        {"params": [q for q in params if q.dim() >= 2], "weight_decay": wd},
        {"params": [q for q in params if q.dim() < 2], "weight_decay": 0.0},
    ]


def configure_optimizer(
    model: nn.Module,
    lr: float = 1e-3,
    weight_decay: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.95),
) -> torch.optim.AdamW:
    """AdamW (Loshchilov & Hutter 2019) over :func:`param_groups` (decay on ``dim >= 2`` only),
    with GPT-2/nanoGPT's ``betas=(0.9, 0.95)`` by default."""
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas)
