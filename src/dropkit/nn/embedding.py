"""Embedding dropout module (Gal & Ghahramani 2016; Merity et al. 2018, AWD-LSTM)."""

from __future__ import annotations

import torch
from torch import nn

from dropkit import functional as F

from .base import DropoutModule


class EmbeddingDropout(DropoutModule):
    r"""Drop whole rows (word types) of an embedding matrix, mask ``(V, 1)``, scale ``1/q``.

    Two forms:

    * ``EmbeddingDropout(p)``: ``forward(weight)`` returns the row-dropped matrix
      :math:`\tilde W_v = m_v W_v / q`, :math:`m_v \sim \mathrm{Bernoulli}(1 - p)`.
    * ``EmbeddingDropout(p, embedding)`` wraps an ``nn.Embedding`` (AWD-LSTM's
      ``embedded_dropout``): ``forward(ids)`` returns :math:`\tilde W[\text{ids}]`, so every
      occurrence of a dropped word gets the same zero vector. ``padding_idx``,
      ``scale_grad_by_freq``, ``sparse`` and ``max_norm`` behave as in the wrapped embedding
      (``max_norm`` renormalises the looked-up rows of the original weight in place, under
      ``no_grad``, as ``nn.Embedding`` does); the parameter is never modified otherwise, and
      the ``state_dict`` key is ``embedding.weight``.

    Eval returns the weight (first form) or ``embedding(ids)`` (second form) unchanged.
    Gal & Ghahramani 2016 (arXiv:1512.05287, section 4.1); Merity et al. 2018
    (arXiv:1708.02182).

    Shape: weight ``(V, D)`` → ``(V, D)``; or ids ``(*)`` → ``(*, D)``.

    Example:
        >>> import torch
        >>> layer = EmbeddingDropout(0.1, torch.nn.Embedding(10, 4))
        >>> layer(torch.tensor([[1, 2, 2]])).shape
        torch.Size([1, 3, 4])
    """

    def __init__(self, p: float = 0.5, embedding: nn.Embedding | None = None) -> None:
        super().__init__(p, inplace=False)
        if embedding is not None and not isinstance(embedding, nn.Embedding):
            raise TypeError(
                "EmbeddingDropout: embedding must be a torch.nn.Embedding or None, got "
                f"{type(embedding).__name__}"
            )
        self.embedding = embedding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        emb = self.embedding
        if emb is None:
            return F.embedding_dropout(x, self.p, self.training)
        return F.embedded_dropout(
            x,
            emb.weight,
            self.p,
            self.training,
            padding_idx=emb.padding_idx,
            max_norm=emb.max_norm,
            norm_type=emb.norm_type,
            scale_grad_by_freq=emb.scale_grad_by_freq,
            sparse=emb.sparse,
        )

    def extra_repr(self) -> str:
        return f"p={self.p}"
