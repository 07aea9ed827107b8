"""Embedding dropout: drop whole rows (word types) of an embedding matrix.

Gal & Ghahramani 2016 (arXiv:1512.05287, section 4.1) and Merity et al. 2018, AWD-LSTM
(arXiv:1708.02182): every occurrence of a dropped word in the batch gets a zero vector.
"""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as _fwd_ad
import torch.nn.functional as TF

from dropkit.rng.kernels import numba_available

from ._validation import check_input, check_p, plain_call
from .dropout import dropout
from .mask import bernoulli_mask, eager_keep_mask, eager_seed, keep_scale, masked_scale

_NUMBA = numba_available()
_is_compiling = torch.compiler.is_compiling
_functorch_active = torch._C._are_functorch_transforms_active
#: Plain tensors and parameters (subclasses such as DTensor take the general path).
_PLAIN = (torch.Tensor, torch.nn.Parameter)


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
    ``scale_grad_by_freq``) reaches ``weight`` unchanged. (In eager CPU code a table with no
    more rows than there are ids is dropped first and then looked up: the same values, and
    the same gradient bits, each occurrence scaled before the sum.) The keyword arguments are
    those of ``torch.nn.functional.embedding``; ``max_norm`` renormalises the looked-up rows of
    the original ``weight`` in place first, exactly as there. Eval is ``F.embedding`` itself.
    Merity et al. 2018 (arXiv:1708.02182); Gal & Ghahramani 2016 (arXiv:1512.05287).

    Shape: ids ``(*)`` integers in ``[0, V)``; weight ``(V, D)``; output ``(*, D)``.
    """
    if (
        plain_call(training, p, seed, offset, backend, generator)
        and type(weight) in _PLAIN
        and weight.is_cpu
        and weight.is_floating_point()
        and weight.dim() == 2
        and _NUMBA
        and not _functorch_active()
        and not _is_compiling()
    ):
        vocab = weight.shape[0]
        if (
            max_norm is None
            and type(ids) is torch.Tensor
            and vocab <= ids.numel()
            and _fwd_ad._current_level < 0
        ):  # no larger than the lookup: drop the table's rows, then look them up
            padding = _padding(padding_idx, vocab)
            drop = eager_keep_mask((vocab, 1), *eager_seed(vocab), p, dropped=True)
            args = (1.0 / (1.0 - p), padding, scale_grad_by_freq, sparse)
            if weight.requires_grad and torch.is_grad_enabled():
                return _table_apply(weight, ids, drop, *args)
            return _table_lookup(weight, ids, drop, *args)
        # Otherwise the (V, 1) mask filled by numba, and the looked-up rows scaled and cleared
        # in place (where(keep, rows * s, 0)'s values and gradient, with no second and third
        # (*, D) buffer).
        rows = TF.embedding(
            ids, weight, padding_idx, max_norm, norm_type, scale_grad_by_freq, sparse
        )
        drop = eager_keep_mask((vocab, 1), *eager_seed(vocab), p, dropped=True)
        return rows.mul_(1.0 / (1.0 - p)).masked_fill_(drop[ids], 0)
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


def _padding(padding_idx: int | None, vocab: int) -> int:
    """``padding_idx`` as ``torch.embedding`` takes it (-1 for none), checked as
    ``torch.nn.functional.embedding`` checks it (same errors)."""
    if padding_idx is None:
        return -1
    if padding_idx > 0:
        if padding_idx >= vocab:
            raise AssertionError("Padding_idx must be within num_embeddings")
    elif padding_idx < 0:
        if padding_idx < -vocab:
            raise AssertionError("Padding_idx must be within num_embeddings")
        padding_idx = vocab + padding_idx
    return padding_idx


def _table_lookup(weight, ids, drop, scale, padding, scale_grad_by_freq, sparse):
    """``where(keep, W * s, 0)[ids]``: the dropped rows of the ``(V, D)`` table looked up; the
    values of :func:`embedded_dropout` (the lookup only copies rows)."""
    table = weight.mul(scale).masked_fill_(drop, 0)
    return torch.embedding(table, ids, padding, scale_grad_by_freq, sparse)


class _TableEmbedding(torch.autograd.Function):
    """:func:`_table_lookup` with the gradient of the looked-up form: ``dW`` is torch's
    embedding backward of ``where(keep[ids], dy * s, 0)`` (each occurrence scaled before the
    sum), the roundings of ``where(keep[ids], W[ids] * s, 0)``'s own autograd graph, which
    scaling the summed gradient once would not give. For a dense gradient the rows of dropped
    words are cleared after the sum instead (each row sums its own occurrences, so the kept
    rows' bits are the same, and the dropped rows are +0 either way), one ``(V, D)`` pass
    instead of an ``(*ids, D)`` one. Plain eager reverse mode only (classic ``forward(ctx,
    ...)`` form, no jvp or vmap rule); a backward with ``create_graph`` records its ops."""

    @staticmethod
    def forward(ctx, weight, ids, drop, scale, padding, scale_grad_by_freq, sparse):
        ctx.save_for_backward(ids, drop)
        ctx.args = (weight.shape[0], scale, padding, scale_grad_by_freq, sparse)
        return _table_lookup(weight, ids, drop, scale, padding, scale_grad_by_freq, sparse)

    @staticmethod
    def backward(ctx, grad):
        ids, drop = ctx.saved_tensors
        vocab, scale, padding, scale_grad_by_freq, sparse = ctx.args
        if sparse:  # one row per occurrence: the dropped ones must be zeros themselves
            rows = grad.mul(scale).masked_fill_(drop[ids], 0)
            dw = _embedding_backward(rows, ids, vocab, padding, scale_grad_by_freq, True)
        else:
            dw = _embedding_dense_backward(grad.mul(scale), ids, vocab, padding, scale_grad_by_freq)
            dw = dw.masked_fill_(drop, 0)
        return dw, None, None, None, None, None, None


# What EmbeddingBackward0 calls (the dense one is what embedding_backward calls when not sparse).
_embedding_backward = torch.ops.aten.embedding_backward.default
_embedding_dense_backward = torch.ops.aten.embedding_dense_backward.default


# The C++ apply underneath ``Function.apply``: enough for a plain eager call (see
# dropkit.rng.function).
_table_apply = super(torch.autograd.function._SingleLevelFunction, _TableEmbedding).apply
