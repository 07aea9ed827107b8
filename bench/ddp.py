"""DDP train step: dropkit's data-parallel mode against torch's own dropout, in the same run.

W processes (``torch.multiprocessing.spawn``; gloo on the CPU, or ``--device cuda`` with NCCL,
one GPU per rank) train the same MLP (``--layers`` blocks of Linear(H, H), ReLU, Dropout(p))
wrapped in ``DistributedDataParallel``: once with ``torch.nn.Dropout`` (each rank its own
masks) and once with ``dropkit.nn.Dropout`` inside ``dropkit.distributed.data_parallel``
(world-size-invariant masks, per-forward batch-size check included). A timed block is
``--steps`` SGD steps between two barriers; the two variants alternate for ``--repeats``
blocks, and the ratio is dropkit / torch on the minimum (median beside it). Target: <= 1.05x.

    python bench/ddp.py                      # 2 CPU ranks, gloo
    python bench/ddp.py --world 4 --write    # and write the BENCHMARKS.md section
    python bench/ddp.py --device cuda --world 8   # NCCL, one GPU per rank
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import command_line, environment, markdown_table, render_section, write_section


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlp(hidden: int, layers: int, p: float, dropout: type[nn.Module]) -> nn.Sequential:
    blocks: list[nn.Module] = []
    for _ in range(layers):
        blocks += [nn.Linear(hidden, hidden), nn.ReLU(), dropout(p)]
    return nn.Sequential(*blocks, nn.Linear(hidden, 1))


def worker(rank: int, world: int, port: int, args: argparse.Namespace, out: str) -> None:
    from torch.nn.parallel import DistributedDataParallel

    import dropkit.nn as dkn
    from dropkit.distributed import data_parallel

    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.set_device(rank)
    else:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    dist.init_process_group(
        "nccl" if cuda else "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
    )
    rows = args.batch // world
    gen = torch.Generator().manual_seed(rank)
    x = torch.randn(rows, args.hidden, generator=gen).to(device)
    y = torch.randn(rows, 1, generator=gen).to(device)
    variants = {}
    for name, layer in (("torch", nn.Dropout), ("dropkit", dkn.Dropout)):
        torch.manual_seed(0)
        net = mlp(args.hidden, args.layers, args.p, layer).to(device)
        model = DistributedDataParallel(net, device_ids=[rank] if cuda else None)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        ctx = data_parallel(seed=0, model=net) if name == "dropkit" else None
        variants[name] = (model, opt, ctx)

    def block(name: str) -> float:
        model, opt, ctx = variants[name]
        if ctx is not None:
            ctx.__enter__()
        try:
            if cuda:
                torch.cuda.synchronize()
            dist.barrier()
            start = time.perf_counter()
            for _ in range(args.steps):
                loss = nn.functional.mse_loss(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if cuda:
                torch.cuda.synchronize()
            dist.barrier()
            return (time.perf_counter() - start) * 1e3 / args.steps
        finally:
            if ctx is not None:
                ctx.__exit__(None, None, None)

    for name in variants:  # warm-up: kernels, DDP buckets, allocator
        block(name)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name in variants:
            times[name].append(block(name))
    if rank == 0:
        Path(out).write_text(json.dumps(times))
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=int, default=2, help="ranks (processes)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batch", type=int, default=256, help="global batch B (B/W per rank)")
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--p", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=10, help="SGD steps per timed block")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per CPU rank")
    parser.add_argument("--write", action="store_true", help="write the BENCHMARKS.md section")
    args = parser.parse_args()
    if args.batch % args.world:
        parser.error(f"--batch {args.batch} must be divisible by --world {args.world}")
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "times.json")
        mp.spawn(worker, args=(args.world, free_port(), args, out), nprocs=args.world, join=True)
        times = json.loads(Path(out).read_text())
    best = {k: min(v) for k, v in times.items()}
    ratio = best["dropkit"] / best["torch"]
    rows = [[name, f"{best[name]:.2f}", f"{statistics.median(v):.2f}"] for name, v in times.items()]
    table = markdown_table(["dropout", "step ms (min)", "step ms (median)"], rows)
    verdict = "PASS" if ratio <= 1.05 else "MISS"
    summary = f"dropkit data-parallel / torch: **{ratio:.3f}x** (target <= 1.05x: {verdict})"
    print(table, "", summary, sep="\n")
    if args.write:
        title = (
            f"DDP step, dropkit data-parallel vs torch dropout ({args.device}, W = {args.world}, "
            f"B = {args.batch}, MLP {args.layers} x {args.hidden}, p = {args.p})"
        )
        notes = [
            f"{args.steps} SGD steps per timed block between barriers, {args.repeats} "
            f"alternating blocks per variant; {args.threads} torch thread(s) per CPU rank.",
            "dropkit's mode adds one all-gather of the local batch size per forward (the "
            "uneven-batch check) and a key derivation per dropout call.",
            f"Load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
            "(shared machine: differences under ~10 % are noise).",
        ]
        env = environment(args.device)
        body = render_section(title, env, command_line(), [table, summary], notes)
        write_section(f"ddp_{args.device}", body)


if __name__ == "__main__":
    main()
