"""World-size-invariant dropout for data-parallel training (DDP, FSDP2).

In plain data parallelism each of W ranks draws its own masks for its B/W rows, so the run
depends on W. In dropkit's data-parallel mode every rank uses the *same* key per call (a
:class:`dropkit.rng.Stream` with the same seed on every rank) and rank ``r`` takes the
mask positions of its rows in the global batch: a call whose local mask has ``n`` positions
over ``b_r`` local rows starts at

    offset + (b_0 + ... + b_{r-1}) * (n / b_r)

(``rank * n`` when all local batches are equal). The global batch is the ranks' batches
concatenated in rank order, and the batch must be dim 0 of every dropout input (and of the
mask: elementwise dropout, ``Dropout1d/2d/3d``, ``DropPath``; not time-major RNN inputs).
Masks shared by the whole batch (DropConnect, WeightDrop, EmbeddingDropout,
``DropPath(mode="batch")``, ``Dropout`` sharing dim 0) are the same on every rank, when the
mode is given the ``model`` (which tells which module issues each call). So W
ranks on B/W rows each draw exactly the masks one process draws on the B rows, and with
DDP's gradient averaging (equal local batches) the parameters follow the single-process run.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from dropkit.rng.stream import Stream


def _comm_device(group: Any) -> torch.device:
    """Where the collectives of ``group`` take their tensors (CUDA for NCCL, else CPU)."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _gather_ints(value: int, group: Any) -> list[int]:
    """``value`` of every rank of ``group``, in rank order (one all-gather of an int64)."""
    device = _comm_device(group)
    mine = torch.tensor([value], dtype=torch.int64, device=device)
    out = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(out, mine, group=group)
    return [int(t.item()) for t in out]


def agreed_seed(seed: int | None, group: Any = None) -> int:
    """One stream seed for every rank of ``group``: ``seed`` (checked to be the same on every
    rank), or, if None, a draw from rank 0's torch generator broadcast to all."""
    if seed is None:
        draw = torch.randint(0, 2**63 - 1, (1,), dtype=torch.int64)
        draw = draw.to(_comm_device(group))
        dist.broadcast(draw, src=dist.get_global_rank(group, 0) if group else 0, group=group)
        return int(draw.item())
    seeds = _gather_ints(seed, group)
    if len(set(seeds)) != 1:
        raise ValueError(
            f"data_parallel: the ranks passed different seeds {seeds}; pass the same seed on "
            "every rank (or seed=None to broadcast rank 0's)"
        )
    return seed


def shares_batch_mask(module: nn.Module, ndim: int | None) -> bool:
    """Whether ``module`` draws one mask for its whole batch (dim 0), given its input's dims:
    ``DropConnectLinear``, ``WeightDrop``, ``EmbeddingDropout``, ``DropPath`` /
    ``StochasticDepth`` with ``mode="batch"``, ``Dropout`` sharing dim 0. Every rank then uses
    the same (unshifted) mask, as one process would for the whole batch."""
    from dropkit import nn as dkn

    if isinstance(module, dkn.DropConnectLinear | dkn.WeightDrop | dkn.EmbeddingDropout):
        return True
    if isinstance(module, dkn.DropPath | dkn.StochasticDepth):
        return getattr(module, "mode", "row") == "batch"
    if isinstance(module, dkn.Dropout) and ndim:
        return any(d % ndim == 0 for d in module.broadcast_dims)
    return False


class RowShard:
    """The stream position of a rank's first mask element: ``rows_before * (n / rows)``.

    Until :meth:`set_rows` reports the local batch sizes, every rank is assumed to hold the
    same number of rows (``rank * n``). A call from a module whose mask is shared by the whole
    batch (:func:`shares_batch_mask`; known only when the stream watches the model) is not
    shifted.
    """

    def __init__(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = rank, world_size
        self.rows: int | None = None
        self.rows_before = 0

    def set_rows(self, sizes: list[int]) -> None:
        """The local batch sizes of all ranks (rank order) for the coming forward."""
        self.rows, self.rows_before = sizes[self.rank], sum(sizes[: self.rank])

    def __call__(self, n: int, caller: tuple | None = None) -> int:
        if caller is not None and shares_batch_mask(*caller):
            return 0
        if self.rows is None:
            return self.rank * n
        if self.rows == 0:
            return 0
        if n % self.rows:
            raise RuntimeError(
                f"data_parallel: a dropout mask of {n} positions does not split into the "
                f"{self.rows} local rows; the batch must be dim 0 of every dropout input"
            )
        return self.rows_before * (n // self.rows)


def _first_batch_dim(args: tuple, kwargs: dict) -> int | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    return None


def data_parallel(
    process_group: Any = None,
    *,
    seed: int | None = None,
    model: nn.Module | None = None,
    allow_uneven: bool = False,
) -> Stream:
    """Data-parallel mode: the masks of W ranks on B/W rows each equal one process's on B rows.

    Returns a :class:`dropkit.rng.Stream` keyed alike on every rank and sharded by rows (see
    the module docstring); enter it around the training loop (``with dp:``) on every rank.
    Every rank of ``process_group`` (default: the world) must call this together (it runs a
    collective). The single-process run that it reproduces is
    ``with dropkit.rng.stream(seed, model):`` on the concatenated batches.

    Args:
        process_group: the data-parallel group (``torch.distributed``), default the world.
        seed: the stream seed, the same on every rank (checked); None broadcasts a draw from
            rank 0's torch generator.
        model: the (unwrapped) model. Gives each call site its own key (its name in
            ``model.named_modules()``, see :func:`dropkit.rng.stream`), and gathers the local
            batch sizes (dim 0 of the first tensor argument) at each forward: unequal sizes
            raise ``ValueError`` on every rank, or, with ``allow_uneven``, take the rows
            ``b_0 + ... + b_{r-1}`` on. Without ``model``, the local batches are assumed equal
            and not checked.
        allow_uneven: accept unequal local batches (the masks still match the single process;
            DDP's unweighted gradient average then does not).

    Example (on every rank, after ``init_process_group``)::

        model = DDP(net)
        with dropkit.distributed.data_parallel(seed=0, model=net):
            for x, y in loader:  # each rank its B/W rows of the global batch
                loss_fn(model(x), y).backward()
                ...
    """
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "data_parallel needs an initialised torch.distributed process group "
            "(torch.distributed.init_process_group)"
        )
    rank = dist.get_rank(process_group)
    world = dist.get_world_size(process_group)
    stream = Stream(agreed_seed(seed, process_group), model)
    shard = RowShard(rank, world)
    stream.shard = shard
    if model is not None:

        def check_rows(module: nn.Module, args: tuple, kwargs: dict) -> None:
            rows = _first_batch_dim(args, kwargs)
            if rows is None:
                raise ValueError(
                    "data_parallel: the model's forward got no tensor argument with a batch dim"
                )
            sizes = _gather_ints(rows, process_group)
            if len(set(sizes)) != 1 and not allow_uneven:
                raise ValueError(
                    f"data_parallel: the ranks got local batches of {sizes} rows; equal local "
                    "batches are needed for the run to match one process on their concatenation "
                    "(use drop_last=True, or a global batch size divisible by the world size), "
                    "or pass allow_uneven=True"
                )
            shard.set_rows(sizes)

        stream._hooks.append(model.register_forward_pre_hook(check_rows, with_kwargs=True))
    return stream
