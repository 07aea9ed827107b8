"""Embedding dropout: drop whole rows (word types) of an embedding matrix.

Gal & Ghahramani 2016 (arXiv:1512.05287, section 4.1) and Merity et al. 2018, AWD-LSTM
(arXiv:1708.02182): every occurrence of a dropped word in the batch gets a zero vector, which
regularises rare and frequent words alike.
"""

from __future__ import annotations

from .base import RngLike
from .dropout import Dropout


class EmbeddingDropout(Dropout):
    r"""Row dropout on an embedding matrix ``W`` of shape ``(V, D)``; mask ``(V, 1)``.

    Train :math:`\tilde W_{v} = m_v W_{v} / q`, :math:`m_v \sim \mathrm{Bernoulli}(1-p)`; eval
    :math:`\tilde W = W`; backward :math:`dW_v = m_v\,d\tilde W_v / q`. The lookup
    :math:`\tilde W[\text{ids}]` then gives the same zero vector for every occurrence of a
    dropped word; :class:`dropkit.reference.Embedding` does both steps.
    """

    def __init__(self, p: float = 0.5, *, rng: RngLike = None) -> None:
        super().__init__(p, inverted=True, rng=rng)

    def _shared_dims(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(shape) != 2:
            raise ValueError(
                "EmbeddingDropout expects the embedding matrix, shape (num_embeddings, "
                f"embedding_dim) (2 dims), got {len(shape)} dims with shape {tuple(shape)}"
            )
        return (1,)
