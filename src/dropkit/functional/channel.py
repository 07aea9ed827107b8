"""Channel ("spatial") dropout: one Bernoulli draw per (sample, channel).

Tompson et al. 2015, "Efficient Object Localization Using Convolutional Networks"
(arXiv:1411.4280). Inputs are channels-first; the rank is checked strictly. As in torch, an
unbatched ``(C, L)`` / ``(C, D, H, W)`` is one sample for ``dropout1d`` / ``dropout3d``; unlike
``torch.nn.functional.dropout2d``, a 3-D input to ``dropout2d`` is an error, never silently
reinterpreted as 1-D dropout.

The mask has ``N * C`` values drawn from the Philox stream (mask element ``n * C + c`` takes
position ``offset + n * C + c``) and the output is one broadcast multiply ``x * m``, so the
per-element work runs at ``torch.mul``'s speed and autograd keeps only the ``(N, C, 1, ...)``
mask. Outputs keep the input's memory format (``channels_last``, ``channels_last_3d``).
"""

from __future__ import annotations

import torch

from ._validation import check_input, check_p, check_rank
from .mask import keep_scale, shared_mask_dropout

_LAYOUTS = {1: "(N, C, L)", 2: "(N, C, H, W)", 3: "(N, C, D, H, W)"}
_DIMS = {1: (2,), 2: (2, 3), 3: (2, 3, 4)}


def _channel_dropout(
    x: torch.Tensor, p: float, training: bool, inplace: bool, rng: dict, spatial: int
) -> torch.Tensor:
    owner = f"dropout{spatial}d"
    check_input(x, owner)
    # torch documents an unbatched (C, L) for dropout1d and (C, D, H, W) for dropout3d; a 3-D
    # input to dropout2d is ambiguous (torch itself warns), so it stays an error here
    unbatched = spatial != 2 and x.dim() == 1 + spatial
    if not unbatched:
        check_rank(x, 2 + spatial, _LAYOUTS[spatial], owner)
    p = check_p(p, owner)
    if not training or p == 0.0:  # torch returns the input itself here
        return x
    check_input(x, owner, inplace=inplace)
    batched = x.unsqueeze(0) if unbatched else x  # a view: in place writes reach x
    out = shared_mask_dropout(
        batched, p, _DIMS[spatial], scale=keep_scale(p), inplace=inplace, **rng
    )
    if not unbatched:
        return out
    return x if inplace else out.squeeze(0)


def dropout1d(
    input: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    backend: str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Channel dropout for sequences ``(N, C, L)`` (or one unbatched ``(C, L)``): train
    :math:`y = m_{nc}\,x / q` with :math:`m \sim \mathrm{Bernoulli}(q)` of shape ``(N, C, 1)``,
    :math:`q = 1 - p`; eval (or ``p = 0``) returns ``input`` itself (Tompson et al. 2015).

    Same positional form as ``torch.nn.functional.dropout1d`` plus dropkit's keyword-only
    ``seed``, ``offset``, ``backend`` and ``generator`` (see :func:`dropkit.functional.dropout`).

    Example:
        >>> import torch
        >>> y = dropout1d(torch.ones(2, 3, 5), p=0.5, seed=0)
        >>> bool((y == y[..., :1]).all())
        True
    """
    rng = dict(seed=seed, offset=offset, backend=backend, generator=generator)
    return _channel_dropout(input, p, training, inplace, rng, 1)


def dropout2d(
    input: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    backend: str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Channel dropout for images ``(N, C, H, W)``: train :math:`y = m_{nc}\,x / q` with
    :math:`m` of shape ``(N, C, 1, 1)``; eval (or ``p = 0``) returns ``input`` itself
    (Tompson et al. 2015). Torch's positional form plus dropkit's keyword-only RNG arguments.

    Example:
        >>> import torch
        >>> y = dropout2d(torch.ones(2, 3, 4, 4), p=0.5, training=True, inplace=False, seed=1)
        >>> sorted(set(y.flatten().tolist())) in ([0.0, 2.0], [0.0], [2.0])
        True
    """
    rng = dict(seed=seed, offset=offset, backend=backend, generator=generator)
    return _channel_dropout(input, p, training, inplace, rng, 2)


def dropout3d(
    input: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    backend: str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Channel dropout for volumes ``(N, C, D, H, W)`` (or one unbatched ``(C, D, H, W)``):
    train :math:`y = m_{nc}\,x / q` with :math:`m` of shape ``(N, C, 1, 1, 1)``; eval (or
    ``p = 0``) returns ``input`` itself (Tompson et al. 2015). Torch's positional form plus
    dropkit's keyword-only RNG arguments."""
    rng = dict(seed=seed, offset=offset, backend=backend, generator=generator)
    return _channel_dropout(input, p, training, inplace, rng, 3)
