"""Skip-compute stochastic depth vs ordinary DropPath: ViT train-step time and peak memory.

A stack of timm-style pre-norm blocks (dropkit's example ViT blocks), depth-linear rates up to
each max rate. Per rate, the same model runs a train step (forward + backward + AdamW) with
ordinary ``DropPath`` and with :class:`dropkit.nn.StochasticDepth` (row mode), interleaved;
the minimum over repeats of each is compared. ``--write`` rewrites the BENCHMARKS.md section
and the speed-up plot.

    python bench/droppath.py [--device cpu|cuda] [--repeats 5] [--write]
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
from _harness import REPO, write_section

from dropkit import nn as dkn
from dropkit.experiments.vit import Block
from dropkit.schedules import drop_path_rates

PLOT = REPO / "docs" / "bench" / "droppath_speedup.png"


def stack(dim: int, heads: int, depth: int, max_rate: float) -> torch.nn.Sequential:
    rates = drop_path_rates(depth, max_rate)
    return torch.nn.Sequential(*(Block(dim, heads, 4.0, r) for r in rates))


def step_time(model, x, device: str) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    model(x).square().mean().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rates", default="0.1,0.2,0.4")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    dim, heads, depth, tokens, batch = (192, 3, 12, 65, 64)
    if args.device == "cuda":
        dim, heads, batch = 384, 6, 256
    rows = []
    for rate in [float(r) for r in args.rates.split(",")]:
        torch.manual_seed(0)
        ordinary = stack(dim, heads, depth, rate).to(args.device)
        skip = dkn.apply_stochastic_depth(copy.deepcopy(ordinary))
        x = torch.randn(batch, tokens, dim, device=args.device)
        times = {"ordinary": [], "skip": []}
        for i in range(args.repeats + 1):
            for name, model in (("ordinary", ordinary), ("skip", skip)):
                torch.manual_seed(i)
                t = step_time(model, x, args.device)
                if i:  # the first round warms up
                    times[name].append(t)
        o, s = min(times["ordinary"]), min(times["skip"])
        mean_rate = sum(drop_path_rates(depth, rate)) / depth
        rows.append((rate, mean_rate, o, s, o / s))
        print(f"max rate {rate}: ordinary {o:.1f} ms, skip {s:.1f} ms, speed-up {o / s:.2f}x "
              f"(mean rate {mean_rate:.3f})", flush=True)  # fmt: skip
    if args.write:
        body = [f"## DropPath skip-compute ({args.device}, ViT dim {dim}, depth {depth}, "
                f"{tokens} tokens, batch {batch})", "",
                "Train step (forward + backward + AdamW), min over interleaved repeats; rates "
                "depth-linear up to the max rate. `python bench/droppath.py --write`.", "",
                "| max rate | mean rate | ordinary DropPath ms | skip-compute ms | speed-up |",
                "|---|---|---|---|---|"]  # fmt: skip
        body += [f"| {r} | {m:.3f} | {o:.1f} | {s:.1f} | {v:.2f}x |" for r, m, o, s, v in rows]
        write_section(f"droppath_{args.device}", "\n".join(body))
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(4, 3))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.plot([r[0] for r in rows], [r[4] for r in rows], "o-")
        ax.set_xlabel("max drop-path rate (depth-linear)")
        ax.set_ylabel("speed-up vs ordinary DropPath")
        fig.tight_layout()
        Path(PLOT).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(PLOT, dpi=100)


if __name__ == "__main__":
    main()
