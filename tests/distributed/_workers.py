"""Process bodies for the distributed tests (gloo on 127.0.0.1, CPU, float64).

Each worker initialises a process group at a rendezvous file chosen by the parent, runs its checks,
and writes its results with ``torch.save`` to ``out/<name>_<rank>.pt`` for the parent to
compare with a single-process run. The models and data here are shared by both sides.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from dropkit import nn as dkn
from tests.helpers import rendezvous, spawn_ranks

STEPS = 20
BATCH = 8  # global batch: W = 1, 2, 4 ranks take 8, 4, 2 rows
WORLD = 4
SEED = 123
LR = 0.05


def spawn(fn, world: int, out: Path, *args) -> None:
    """Run ``fn(rank, world, init_method, out, *args)`` on ``world`` fresh processes and wait."""
    spawn_ranks(fn, world, (world, rendezvous(), str(out), *args))


def init(rank: int, world: int, init_method: str) -> None:
    torch.set_num_threads(1)
    os.environ["GLOO_SOCKET_IFNAME"] = os.environ.get("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world)


class Residual(nn.Module):
    """``x + DropPath(conv(x))``: a residual branch dropped per sample."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.drop_path = dkn.DropPath(0.4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(torch.relu(self.conv(x)))


def make_model(kind: str) -> nn.Module:
    """The float64 MLP (Dropout) or small CNN (Dropout2d, DropPath), initialised from seed 0."""
    torch.manual_seed(0)
    if kind == "mlp":
        net = nn.Sequential(
            nn.Linear(6, 16), nn.ReLU(), dkn.Dropout(0.3),
            nn.Linear(16, 16), nn.ReLU(), dkn.Dropout(0.5), nn.Linear(16, 1),
        )  # fmt: skip
    else:
        net = nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), dkn.Dropout2d(0.3), Residual(4),
            nn.Flatten(), dkn.Dropout(0.2), nn.Linear(4 * 5 * 5, 1),
        )  # fmt: skip
    return net.double()


def make_data(kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``(STEPS, BATCH, ...)`` and targets ``(STEPS, BATCH, 1)``, the same everywhere."""
    gen = torch.Generator().manual_seed(1)
    shape = (6,) if kind == "mlp" else (2, 5, 5)
    x = torch.randn(STEPS, BATCH, *shape, generator=gen, dtype=torch.float64)
    y = torch.randn(STEPS, BATCH, 1, generator=gen, dtype=torch.float64)
    return x, y


def train(model: nn.Module, step_model: nn.Module, kind: str, rank: int, world: int) -> None:
    """``STEPS`` SGD steps of ``step_model`` (the model or its DDP/FSDP wrapper) on this
    rank's rows ``rank * B/W .. (rank + 1) * B/W - 1`` of each global batch."""
    x, y = make_data(kind)
    rows = BATCH // world
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    for s in range(STEPS):
        xb, yb = (t[s, rank * rows : (rank + 1) * rows] for t in (x, y))
        loss = nn.functional.mse_loss(step_model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()


def params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


WORLDS = (4, 2, 1)


def worker(rank: int, world: int, init_method: str, out: str) -> None:
    """On ``world`` (4) ranks: DDP in data-parallel mode (MLP and CNN) on the world and on
    subgroups of ranks ``0..1`` and ``0``, so W = 4, 2, 1 in one start-up; then on the world
    the controls (plain streams give every rank the masks of positions 0.., uneven batches and
    unequal seeds raise), FSDP2, tensor parallel and sharded MC."""
    from torch.nn.parallel import DistributedDataParallel

    from dropkit.distributed import data_parallel
    from dropkit.rng import stream

    init(rank, world, init_method)
    result: dict[str, object] = {}
    try:
        groups = {w: dist.new_group(list(range(w))) for w in WORLDS if w != world}
        for w in WORLDS:
            if rank >= w:
                continue
            group = groups.get(w)
            for kind in ("mlp", "cnn"):
                net = make_model(kind)
                with data_parallel(group, seed=SEED, model=net) as dp:
                    train(net, DistributedDataParallel(net, process_group=group), kind, rank, w)
                result[f"{kind}_{w}"] = params(net)
                result[f"{kind}_{w}_state"] = dp.state_dict()
        net = make_model("mlp")  # control: one stream, no row shard
        with stream(SEED, model=net):
            train(net, DistributedDataParallel(net), "mlp", rank, world)
        result["mlp_unsharded"] = params(net)
        net = make_model("mlp")
        try:
            with data_parallel(seed=SEED, model=net):
                net(torch.zeros(3 + rank, 6, dtype=torch.float64))
        except ValueError as err:
            result["uneven_error"] = str(err)
        try:
            with data_parallel(seed=SEED + rank):
                pass
        except ValueError as err:
            result["seed_error"] = str(err)
        result["fsdp"] = _fsdp(rank, world)
        _tensor_parallel_and_mc(world, result)
    finally:
        torch.save(result, Path(out) / f"rank_{rank}.pt")
        dist.destroy_process_group()


def _fsdp(rank: int, world: int) -> object:
    """FSDP2 (``fully_shard``) on a CPU mesh: the full parameters after training, or the
    error that stopped it (as a string)."""
    from dropkit.distributed import data_parallel

    try:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        net = make_model("mlp")
        mesh = init_device_mesh("cpu", (world,))
        with data_parallel(seed=SEED, model=net):
            for layer in net:
                if isinstance(layer, nn.Linear):
                    fully_shard(layer, mesh=mesh)
            fully_shard(net, mesh=mesh)
            train(net, net, "mlp", rank, world)
        return {k: v.full_tensor().clone() for k, v in net.state_dict().items()}
    except Exception as err:  # reported to the parent, which fails or documents it
        return f"{type(err).__name__}: {err}"


def _tensor_parallel_and_mc(world: int, result: dict) -> None:
    """Tensor parallel (DTensor Shard(-1)/Shard(1)/Replicate) and sharded MC scoring."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    from dropkit import functional as F
    from dropkit.distributed import dtensor_dropout, sharded_predict
    from dropkit.rng import stream

    mesh = init_device_mesh("cpu", (world,))
    whole = torch.randn(3, 4, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for name, placement in (("hidden", Shard(-1)), ("seq", Shard(1)), ("rep", Replicate())):
        x = distribute_tensor(whole, mesh, [placement]).requires_grad_()
        y = dtensor_dropout(x, 0.5, seed=11)
        y.sum().backward()
        result[name] = y.full_tensor()
        result[name + "_grad"] = x.grad.full_tensor()
        result[name + "_local"] = y.to_local()
        with stream(11):  # a dropkit module on a DTensor, keyed by a stream on every rank
            result[name + "_module"] = dkn.Dropout(0.5)(x).full_tensor()
        shared = F.dropout(x.detach(), 0.5, broadcast_dims=(2,), seed=11)  # mask (3, 4, 1)
        result[name + "_shared"] = shared.full_tensor()
    for shard in ("rows", "batches"):
        result[f"mc_{shard}"] = sharded_predict(
            mc_model(), mc_pool(), 8, batch_size=2, seed=5, target=1, strategy="loop", shard=shard
        )


def mc_model() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(5, 16), nn.ReLU(), dkn.Dropout(0.5), nn.Linear(16, 3)).double()


def mc_pool() -> torch.utils.data.TensorDataset:
    """11 pool points (the DistributedSampler pads the last share of 4) with dummy labels."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(11, 5, generator=gen, dtype=torch.float64)
    return torch.utils.data.TensorDataset(x, torch.zeros(11, dtype=torch.int64))
