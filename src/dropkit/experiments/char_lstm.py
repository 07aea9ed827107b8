r"""A character-level LSTM language model with the recurrent dropout placements of the literature.

Gal & Ghahramani 2016, "A theoretically grounded application of dropout in recurrent neural
networks" (NeurIPS, arXiv:1512.05287): dropout on the inputs and outputs of every LSTM layer with
one mask per sequence shared by every time step (variational / locked dropout), plus dropout of
whole word (here: character) embeddings. Merity, Keskar & Socher 2018, "Regularizing and
Optimizing LSTM Language Models" (AWD-LSTM, arXiv:1708.02182): the same locked dropout between
layers, embedding dropout, and DropConnect on the hidden-to-hidden matrices (``WeightDrop``).

Every dropout is a :mod:`dropkit.nn` module, so :mod:`dropkit.mc` samples it and
:class:`dropkit.schedules.DropoutScheduler` drives its rate.
"""

from __future__ import annotations

import numbers

import torch
from torch import nn

from dropkit.nn import Dropout, EmbeddingDropout, LockedDropout, WeightDrop
from dropkit.reference.base import check_positive_int

__all__ = ["VARIANTS", "CharLSTM", "LSTMState"]

#: ``"locked"``: one mask per sequence (variational RNN dropout); ``"standard"``: a fresh mask
#: per time step (the naive baseline Gal & Ghahramani compare against).
VARIANTS = ("locked", "standard")

#: One ``(h, c)`` pair per layer, each ``(1, B, hidden_size)`` (``nn.LSTM``'s layout).
LSTMState = list[tuple[torch.Tensor, torch.Tensor]]


def _check_rate(value: object, name: str, owner: str) -> float:
    """A drop rate in [0, 1): p = 1 would drop everything and leave nothing to learn from."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and 0.0 <= value < 1.0
    if not ok:
        raise ValueError(f"{owner}: {name} must be a real number in [0, 1), got {name}={value!r}")
    return float(value)


class CharLSTM(nn.Module):
    r"""Character-level LSTM language model with variational (locked) or standard dropout.

    Structure, for ids :math:`x \in \{0..V-1\}^{B \times T}` and layers :math:`l = 1..L`:

    .. math::
        e = D_\text{in}(E[x]), \quad h^{(1)} = \mathrm{LSTM}_1(e), \quad
        h^{(l)} = \mathrm{LSTM}_l(D_l(h^{(l-1)})), \quad
        \text{logits} = W_\text{dec}\, D_\text{out}(h^{(L)}) + b_\text{dec}.

    * :math:`D_\text{in}`, :math:`D_l` (between layers), :math:`D_\text{out}` (before the
      decoder) all have rate ``p``: :class:`dropkit.nn.LockedDropout` (mask ``(B, 1, H)``, the
      same for every step, Gal & Ghahramani 2016) for ``variant="locked"``, or
      :class:`dropkit.nn.Dropout` (mask ``(B, T, H)``, fresh per step) for
      ``variant="standard"``. They always exist (``p = 0`` is the identity), so schedulers and
      :mod:`dropkit.mc` find them.
    * ``p_embed > 0``: the embedding :math:`E` is wrapped in
      :class:`dropkit.nn.EmbeddingDropout` (whole rows dropped, one mask per forward, so every
      occurrence of a dropped character maps to zeros; Gal & Ghahramani 2016, section 4.1).
    * ``p_weight > 0``: each layer's ``weight_hh_l0`` is dropped by
      :class:`dropkit.nn.WeightDrop` (DropConnect on the recurrent matrix, AWD-LSTM). Each layer
      is its own single-layer ``nn.LSTM`` so that each can be wrapped.
    * ``tie_weights``: :math:`W_\text{dec} = E` (Press & Wolf 2017; Inan et al. 2017), allowed
      when ``embed_dim == hidden_size``.

    Embedding and decoder weights start uniform in [-0.1, 0.1], the decoder bias at 0
    (Zaremba et al. 2014; AWD-LSTM); the LSTMs keep torch's initialisation.

    Shape: ids ``(B, T)`` int64 → logits ``(B, T, vocab_size)``; ``state`` (in and out) a list
    of ``num_layers`` pairs ``(h, c)``, each ``(1, B, hidden_size)``. The returned state is
    attached to the graph: detach it between chunks for truncated backpropagation through time.

    Args:
        vocab_size: number of characters V.
        embed_dim: embedding size.
        hidden_size: LSTM hidden size of every layer.
        num_layers: number of stacked LSTM layers L.
        p: rate of the input, between-layer and output dropout, in [0, 1).
        variant: ``"locked"`` or ``"standard"``.
        p_embed: embedding (row) dropout rate in [0, 1); 0 means no ``EmbeddingDropout``.
        p_weight: DropConnect rate on ``weight_hh_l0`` in [0, 1); 0 means no ``WeightDrop``.
        tie_weights: share the decoder weight with the embedding.

    Example:
        >>> import torch
        >>> model = CharLSTM(10, embed_dim=8, hidden_size=8, num_layers=2, p=0.25)
        >>> logits, state = model(torch.randint(0, 10, (3, 5)))
        >>> logits.shape, len(state), state[0][0].shape
        (torch.Size([3, 5, 10]), 2, torch.Size([1, 3, 8]))
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 128,
        hidden_size: int = 256,
        num_layers: int = 2,
        p: float = 0.0,
        variant: str = "locked",
        p_embed: float = 0.0,
        p_weight: float = 0.0,
        tie_weights: bool = False,
    ) -> None:
        super().__init__()
        owner = "CharLSTM"
        self.vocab_size = check_positive_int(vocab_size, "vocab_size", owner)
        self.embed_dim = check_positive_int(embed_dim, "embed_dim", owner)
        self.hidden_size = check_positive_int(hidden_size, "hidden_size", owner)
        self.num_layers = check_positive_int(num_layers, "num_layers", owner)
        if variant not in VARIANTS:
            raise ValueError(f"{owner}: variant must be one of {VARIANTS}, got variant={variant!r}")
        self.variant = variant
        p = _check_rate(p, "p", owner)
        p_embed = _check_rate(p_embed, "p_embed", owner)
        p_weight = _check_rate(p_weight, "p_weight", owner)
        self.tie_weights = bool(tie_weights)
        if self.tie_weights and self.embed_dim != self.hidden_size:
            raise ValueError(
                f"{owner}: tie_weights needs embed_dim == hidden_size, got "
                f"embed_dim={self.embed_dim}, hidden_size={self.hidden_size}"
            )

        embedding = nn.Embedding(self.vocab_size, self.embed_dim)
        # One attribute either way: the wrapper registers the embedding as its child, so
        # registering it here as well would store the same weight under two state_dict keys.
        self.encoder: nn.Embedding | EmbeddingDropout = (
            EmbeddingDropout(p_embed, embedding) if p_embed > 0 else embedding
        )
        self.drop_in = self._make_dropout(p)
        self.drop_between = nn.ModuleList(self._make_dropout(p) for _ in range(num_layers - 1))
        self.drop_out = self._make_dropout(p)
        rnns: list[nn.Module] = []
        for layer in range(self.num_layers):
            size_in = self.embed_dim if layer == 0 else self.hidden_size
            lstm = nn.LSTM(size_in, self.hidden_size, batch_first=True)
            rnns.append(WeightDrop(lstm, ["weight_hh_l0"], p_weight) if p_weight > 0 else lstm)
        self.rnns = nn.ModuleList(rnns)
        self.decoder = nn.Linear(self.hidden_size, self.vocab_size)
        self.reset_parameters()
        if self.tie_weights:
            self.decoder.weight = self.embedding.weight

    def _make_dropout(self, p: float) -> nn.Module:
        if self.variant == "locked":
            return LockedDropout(p, batch_first=True)
        return Dropout(p)

    @property
    def embedding(self) -> nn.Embedding:
        """The ``nn.Embedding`` (inside the ``EmbeddingDropout`` wrapper when there is one)."""
        encoder = self.encoder
        return encoder.embedding if isinstance(encoder, EmbeddingDropout) else encoder

    def reset_parameters(self) -> None:
        """Embedding and decoder weight uniform in [-0.1, 0.1], decoder bias 0."""
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    def forward(
        self, ids: torch.Tensor, state: LSTMState | None = None
    ) -> tuple[torch.Tensor, LSTMState]:
        """Logits ``(B, T, vocab_size)`` and the new state; ``state=None`` starts from zeros."""
        if ids.dim() != 2:
            raise ValueError(f"CharLSTM: ids must be (B, T), got shape {tuple(ids.shape)}")
        if state is not None and len(state) != self.num_layers:
            raise ValueError(
                f"CharLSTM: state must hold num_layers={self.num_layers} (h, c) pairs, "
                f"got {len(state)}"
            )
        x = self.drop_in(self.encoder(ids))
        new_state: LSTMState = []
        for layer, rnn in enumerate(self.rnns):
            if layer > 0:
                x = self.drop_between[layer - 1](x)
            x, (h, c) = rnn(x, None if state is None else state[layer])
            new_state.append((h, c))
        return self.decoder(self.drop_out(x)), new_state

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}, tie_weights={self.tie_weights}"
