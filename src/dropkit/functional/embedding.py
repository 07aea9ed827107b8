"""Embedding dropout: drop whole rows (word types) of an embedding matrix.

Gal & Ghahramani 2016 (arXiv:1512.05287, section 4.1) and Merity et al. 2018, AWD-LSTM
(arXiv:1708.02182): every occurrence of a dropped word in the batch gets a zero vector.
"""

from __future__ import annotations

import torch
import torch.nn.functional as TF

from ._validation import check_input, check_p
from .dropout import dropout
from .mask import bernoulli_mask, keep_scale, masked_scale


def _check_table(weight: object, owner: str) -> torch.Tensor:
    check_input(weight, owner)
    if weight.dim() != 2:
        raise ValueError(
            f"{owner} expects the embedding matrix, shape (num_embeddings, embedding_dim) "
            f"(2 dims), got {weight.dim()} dims with shape {tuple(weight.shape)}"
        )
    return weight


def embedding_dropout(
    weight: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    *,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    backend: str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Row dropout on an embedding matrix: train :math:`\tilde W_v = m_v W_v / q`,
    :math:`m_v \sim \mathrm{Bernoulli}(1 - p)` (mask ``(V, 1)``, shared along the embedding
    dim); eval :math:`\tilde W = W` (``weight`` itself). Look up ids in the result to give every
    occurrence of a dropped word the same zero vector (Gal & Ghahramani 2016; Merity et al.
    2018, arXiv:1708.02182).

    Shape: weight ``(V, D)`` (strict); output the same.

    Example:
        >>> import torch
        >>> w = embedding_dropout(torch.ones(5, 3), p=0.5)
        >>> bool((w == w[:, :1]).all())  # whole rows are kept (2) or dropped (0)
        True
    """
    _check_table(weight, "embedding_dropout")
    return dropout(
        weight,
        p,
        training,
        broadcast_dims=(1,),
        seed=seed,
        offset=offset,
        backend=backend,
        generator=generator,
    )


def embedded_dropout(
    ids: torch.Tensor,
    weight: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    *,
    padding_idx: int | None = None,
    max_norm: float | None = None,
    norm_type: float = 2.0,
    scale_grad_by_freq: bool = False,
    sparse: bool = False,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    backend: str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Look ``ids`` up in the row-dropped table: :math:`y = \tilde W[\text{ids}]`, with
    :math:`\tilde W` = :func:`embedding_dropout` of ``weight`` (the same mask draw), as
    AWD-LSTM's ``embedded_dropout``.

    Computed as :math:`y = m[\text{ids}] \odot W[\text{ids}] / q`: the same values, without a
    ``(V, D)`` copy, and the lookup's own gradient (``sparse``, ``padding_idx``,
    ``scale_grad_by_freq``) reaches ``weight`` unchanged. The keyword arguments are those of
    ``torch.nn.functional.embedding``; ``max_norm`` renormalises the looked-up rows of the
    original ``weight`` in place first, exactly as there. Eval is ``F.embedding`` itself.
    Merity et al. 2018 (arXiv:1708.02182); Gal & Ghahramani 2016 (arXiv:1512.05287).

    Shape: ids ``(*)`` integers in ``[0, V)``; weight ``(V, D)``; output ``(*, D)``.
    """
    _check_table(weight, "embedded_dropout")
    p = check_p(p, "embedded_dropout")
    rows = TF.embedding(ids, weight, padding_idx, max_norm, norm_type, scale_grad_by_freq, sparse)
    if not training:
        return rows
    keep = bernoulli_mask(
        (weight.shape[0], 1),
        p,
        device=weight.device,
        seed=seed,
        offset=offset,
        backend=backend,
        generator=generator,
    )
    return masked_scale(rows, keep[ids], keep_scale(p))
