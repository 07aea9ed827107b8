"""Stochastic depth that skips compute: run a residual branch on the kept samples only.

``x + drop_path(f(x))`` computes ``f`` for every sample and multiplies the dropped ones by 0;
here ``f`` runs on the kept rows and its scaled output is ``index_add``-ed into ``x``, so a
rate ``p`` saves about a fraction ``p`` of the branch's FLOPs and activation memory. Huang et
al. 2016, "Deep Networks with Stochastic Depth" (arXiv:1603.09382); the subset form is DINOv2's
``drop_add_residual_stochastic_depth`` (Oquab et al. 2023, arXiv:2304.07193).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ._validation import check_input, check_p
from .mask import bernoulli_mask, keep_scale, random_words, resolve_seed

MODES = ("row", "fixed", "batch")


def kept_rows(
    n: int,
    p: float,
    mode: str,
    *,
    device: torch.device | str | None = None,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    backend: str | None = None,
    generator: torch.Generator | None = None,
    ndim: int = 1,
) -> tuple[torch.Tensor, float]:
    """Sorted indices (int64) of the rows kept out of ``n``, and the ``scale_by_keep`` factor.

    ``"row"``/``"batch"`` draw exactly the mask of :func:`dropkit.functional.drop_path` (shape
    ``(n, 1, ...)`` or ``(1, ...)`` with ``ndim`` dims, stream position ``offset + i``), scale
    ``1/q``. ``"fixed"`` keeps the ``k = max(1, round(n q))`` rows whose Philox words at
    positions ``offset .. offset + n - 1`` are smallest (a uniform k-subset), scale ``n/k``.
    """
    rng = dict(device=device, seed=seed, offset=offset, backend=backend, generator=generator)
    if mode == "fixed":
        k = max(1, round(n * (1.0 - p)))
        if k >= n:  # nothing dropped; the seed is still drawn so later draws do not shift
            resolve_seed(seed, offset, generator)
            return torch.arange(n, device=device), 1.0
        words = random_words(n, **rng)
        return torch.topk(words, k, largest=False, sorted=False).indices.sort().values, n / k
    shape = (n,) + (1,) * (ndim - 1) if mode == "row" else (1,) * ndim
    keep = bernoulli_mask(shape, p, **rng).reshape(-1)
    if mode == "batch":
        rows = n if bool(keep[0]) else 0
        return torch.arange(rows, device=device), keep_scale(p)
    return keep.nonzero().reshape(-1), keep_scale(p)


def _scaled(out: torch.Tensor, scale: float) -> torch.Tensor:
    # the scale in the branch output's dtype, as drop_path's mask holds it (bf16 rounds it)
    return out * torch.full((), scale, dtype=out.dtype, device=out.device)


def _take(value: Any, rows: torch.Tensor, n: int, name: str) -> Any:
    if not isinstance(value, torch.Tensor):
        return value
    if value.dim() == 0 or value.shape[0] != n:
        raise ValueError(
            f"drop_path_residual: branch argument {name} has shape {tuple(value.shape)}, but "
            f"every tensor argument is sliced along dim 0 with x, so it needs {n} rows in dim 0; "
            "pass arguments shared by the batch (e.g. an (S, S) attention mask) in shared="
        )
    return value.index_select(0, rows)


def drop_path_residual(
    x: torch.Tensor,
    branch: Callable[..., torch.Tensor],
    p: float = 0.5,
    training: bool = True,
    *,
    mode: str = "row",
    scale_by_keep: bool = True,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    shared: Mapping[str, Any] | None = None,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    backend: str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Residual with stochastic depth that computes ``branch`` only on the kept samples.

    With kept rows :math:`K` and scale :math:`s`, :math:`y_n = x_n + s\,f(x_K)_n` for
    :math:`n \in K` and :math:`y_n = x_n` otherwise; eval :math:`y = x + f(x)`.

    * ``"row"``: each sample kept with probability :math:`q = 1 - p`, :math:`s = 1/q` (the
      DropPath distribution). The mask is the one :func:`dropkit.functional.drop_path` draws,
      so with the same ``seed``/``offset`` (or the same ``torch.manual_seed``: one seed is drawn
      from ``generator`` / torch's generator, as ``drop_path`` does) the output equals
      ``x + drop_path(branch(x), p, seed=...)`` for a per-sample branch.
    * ``"fixed"``: exactly :math:`k = \max(1, \mathrm{round}(Nq))` samples, :math:`s = N/k`
      (static shapes for ``torch.compile`` and CUDA graphs; DINOv2's rule).
    * ``"batch"``: the whole branch skipped with probability ``p``, :math:`s = 1/q`.

    ``scale_by_keep=False`` gives :math:`s = 1`. At ``p = 0`` nothing is drawn (as in
    ``drop_path``) and the output is ``x + f(x)``. When no row is kept, ``branch`` still runs on
    an empty batch, so its parameters get zero gradients (as with ``drop_path``) and DDP sees
    them used. ``branch`` must treat samples independently (no BatchNorm in training):
    :class:`dropkit.nn.StochasticDepth` checks that for modules.

    Shape: x ``(N, *)``; ``branch(x)`` the same shape; output the same.

    Args:
        x: floating-point input (the residual stream), batch in dim 0.
        branch: the residual branch ``f``.
        p: drop probability in [0, 1].
        training: drop (True) or the evaluation rule ``x + f(x)`` (False).
        mode: ``"row"``, ``"fixed"`` or ``"batch"``.
        scale_by_keep: scale the kept outputs by ``s`` (True) or by 1.
        args, kwargs: extra branch arguments; tensors are sliced along dim 0 with ``x`` (they
            need ``N`` rows, e.g. a key padding mask), anything else is passed as is.
        shared: keyword arguments passed to ``branch`` unsliced (e.g. an ``(S, S)`` mask).
        seed, offset, backend, generator: the counter-based stream, as in
            :func:`dropkit.functional.dropout`.

    Example:
        >>> import torch
        >>> from dropkit.functional import drop_path
        >>> x = torch.randn(6, 3)
        >>> y = drop_path_residual(x, torch.sin, 0.5, seed=1)
        >>> ref = x + drop_path(torch.sin(x), 0.5, seed=1)
        >>> torch.equal(y, ref)
        True
    """
    check_input(x, "drop_path_residual")
    if mode not in MODES:
        raise ValueError(f"drop_path_residual: mode must be one of {MODES}, got {mode!r}")
    if x.dim() < 1:
        raise ValueError("drop_path_residual expects x of shape (N, *) (at least 1 dim)")
    check_p(p, "drop_path_residual")
    kwargs = dict(kwargs or {})
    common = dict(shared or {})
    if not training or p == 0.0:  # no draw at p = 0, as drop_path
        return x + branch(x, *args, **kwargs, **common)
    n = x.shape[0]
    rows, scale = kept_rows(
        n, p, mode, device=x.device, seed=seed, offset=offset, backend=backend,
        generator=generator, ndim=x.dim(),
    )  # fmt: skip
    if rows.numel() == n:  # all kept: no gather
        out = branch(x, *args, **kwargs, **common)
        return x + (_scaled(out, scale) if scale_by_keep else out)
    sub_args = [_take(a, rows, n, f"args[{i}]") for i, a in enumerate(args)]
    sub_kwargs = {k: _take(v, rows, n, f"kwargs[{k!r}]") for k, v in kwargs.items()}
    out = branch(x.index_select(0, rows), *sub_args, **sub_kwargs, **common)
    if out.shape[1:] != x.shape[1:] or out.shape[0] != rows.numel():
        raise ValueError(
            f"drop_path_residual: branch must keep the shape of its input, got "
            f"{tuple(out.shape)} for an input of {(rows.numel(), *x.shape[1:])}"
        )
    if scale_by_keep:
        out = _scaled(out, scale)
    # index_add's backward keeps its source (the branch output) alive; an accumulating
    # index_put adds the same values but saves only the indices.
    return x.index_put((rows,), out.to(x.dtype), accumulate=True)


__all__ = ["MODES", "drop_path_residual", "kept_rows"]
