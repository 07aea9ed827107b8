"""Skip-compute stochastic depth vs ordinary DropPath: ViT train-step time and memory.

A stack of timm-style pre-norm blocks (dropkit's example ViT blocks), depth-linear rates up to
each max rate. Per rate, the same model runs a train step (forward + backward + AdamW) with
ordinary ``DropPath`` and with :class:`dropkit.nn.StochasticDepth` (row mode), interleaved;
the minimum over repeats of each is compared. Memory, in the same run:

* activation memory: the bytes autograd saves for backward in one forward (distinct storages
  packed through ``saved_tensors_hooks``, parameters left out; deterministic for a given
  mask), averaged over the same seeds for both variants;
* peak RSS (CPU, Linux): one train step in a fresh process per variant, the high-water mark
  (``VmHWM``, reset just before the step) minus the resident size before it;
* peak allocated (CUDA): ``torch.cuda.max_memory_allocated`` during a step, minus before it.

Targets (issue 16): skip-compute time <= (1 - mean rate * branch share of the step) + 5 % of
the ordinary time, activation memory <= 1 - mean rate * branch share of the saved bytes (+ 0.01
for the sampling of the masks). The shares are measured here: the step with every branch
skipped (rate 1) against rate 0.
``--write`` rewrites the BENCHMARKS.md section and the speed-up plot; ``--plot`` writes the
plot only (the section is printed either way).

    python bench/droppath.py [--device cpu|cuda] [--repeats 5] [--write | --plot]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from _harness import REPO, write_section

from dropkit import nn as dkn
from dropkit.experiments.vit import Block
from dropkit.schedules import drop_path_rates

PLOT = REPO / "docs" / "bench" / "droppath_speedup.png"
SIZES = {"cpu": (192, 3, 12, 65, 64), "cuda": (384, 6, 12, 65, 256)}  # dim heads depth L N


def stack(dim: int, heads: int, depth: int, rates: list[float]) -> torch.nn.Sequential:
    return torch.nn.Sequential(*(Block(dim, heads, 4.0, r) for r in rates))


def models(device: str, max_rate: float | None, *, all_rates: float | None = None):
    """(ordinary, skip-compute) stacks with the same weights; depth-linear up to ``max_rate``
    or ``all_rates`` in every block."""
    dim, heads, depth, _, _ = SIZES[device]
    rates = drop_path_rates(depth, max_rate) if all_rates is None else [all_rates] * depth
    torch.manual_seed(0)
    ordinary = stack(dim, heads, depth, rates).to(device)
    return ordinary, dkn.apply_stochastic_depth(copy.deepcopy(ordinary))


def batch(device: str) -> torch.Tensor:
    dim, _, _, tokens, n = SIZES[device]
    return torch.randn(
        n, tokens, dim, device=device, generator=torch.Generator(device).manual_seed(1)
    )


class Stepper:
    """One train step (forward, backward, AdamW) of a model with its own optimizer."""

    def __init__(self, model: torch.nn.Module, x: torch.Tensor) -> None:
        self.model, self.x = model, x
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def __call__(self) -> None:
        self.model(self.x).square().mean().backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


def step_ms(step: Stepper, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    step()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e3


def time_pair(a: torch.nn.Module, b: torch.nn.Module, x, device: str, repeats: int):
    """Interleaved train-step times (ms) of ``a`` and ``b`` under the same seeds; the first
    round warms up."""
    steps, times = (Stepper(a, x), Stepper(b, x)), ([], [])
    for i in range(repeats + 1):
        for step, out in zip(steps, times, strict=True):
            torch.manual_seed(i)
            t = step_ms(step, device)
            if i:
                out.append(t)
    return times


def activation_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes autograd saves for backward in one forward of ``model``, parameters left out
    (a linear layer saves its weight, which is resident anyway): each distinct storage packed
    through ``saved_tensors_hooks`` counted once, whole (a saved view keeps its base)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = max(
                storages.get(storage.data_ptr(), 0), storage.nbytes()
            )
        # Detached: packing a node's own output with its grad_fn makes a reference cycle
        # autograd never frees (hundreds of MiB per forward here). The storage stays alive
        # until the graph goes, so a freed pointer is not reused within the forward.
        return t.detach()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x).square().mean()
    del out
    return sum(storages.values())


def mean_saved(model: torch.nn.Module, x: torch.Tensor, seeds: range) -> float:
    """Mean of :func:`activation_bytes` over ``seeds`` (torch's generator)."""
    total = 0
    for seed in seeds:
        torch.manual_seed(seed)
        total += activation_bytes(model, x)
    return total / len(seeds)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def rss_child(max_rate: float, variant: str) -> None:
    """In a fresh process: the peak resident-size growth (bytes) of one train step, as JSON.

    The high-water mark ``VmHWM`` is reset (``/proc/self/clear_refs``) after the model, input
    and optimizer exist, so it measures the step alone; ``ru_maxrss`` cannot be reset (and
    may carry the parent's peak over ``fork``)."""
    ordinary, skip = models("cpu", max_rate)
    step = Stepper(ordinary if variant == "ordinary" else skip, batch("cpu"))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kib("VmRSS")
    torch.manual_seed(0)
    step()
    print(json.dumps({"delta": (_status_kib("VmHWM") - before) * 1024}))


def peak_rss_delta(max_rate: float, variant: str) -> float | None:
    """:func:`rss_child`'s result (bytes), or None where it cannot be measured (not Linux)."""
    if not Path("/proc/self/clear_refs").exists():
        return None
    cmd = [sys.executable, __file__, "--rss-child", str(max_rate), variant]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    return float(json.loads(out.strip().splitlines()[-1])["delta"])


def cuda_peak(model: torch.nn.Module, x: torch.Tensor) -> float:
    step = Stepper(model, x)
    step()  # optimizer state and allocator warm
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(0)
    step()
    torch.cuda.synchronize()
    return float(torch.cuda.max_memory_allocated() - before)


def branch_shares(device: str, x: torch.Tensor, repeats: int) -> tuple[float, float]:
    """(share of step time, share of saved bytes) spent in the residual branches: 1 - the
    step with every branch skipped (rate 1) over the step at rate 0."""
    full, _ = models(device, 0.0)
    _, none = models(device, None, all_rates=1.0)
    t_full, t_none = time_pair(full, none, x, device, repeats)
    memory = 1 - mean_saved(none, x, range(1)) / mean_saved(full, x, range(1))
    return 1 - min(t_none) / min(t_full), memory


def mib(nbytes: float | None) -> str:
    return "n/a" if nbytes is None else f"{nbytes / 2**20:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rates", default="0.1,0.2,0.4")
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS processes")
    parser.add_argument("--write", action="store_true", help="BENCHMARKS.md section and plot")
    parser.add_argument("--plot", action="store_true", help="the plot only")
    parser.add_argument("--rss-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(float(args.rss_child[0]), args.rss_child[1])
        return
    device = args.device
    dim, heads, depth, tokens, n = SIZES[device]
    x = batch(device)
    time_share, memory_share = branch_shares(device, x, max(2, args.repeats // 2))
    print(f"branch share: {time_share:.3f} of step time, {memory_share:.3f} of saved bytes",
          flush=True)  # fmt: skip
    base_peak = None  # the stack without DropPath (rate 0), for context
    if device == "cuda":
        base_peak = cuda_peak(models(device, 0.0)[0], x)
    elif not args.no_rss:
        base_peak = peak_rss_delta(0.0, "ordinary")
    rows = []
    for rate in [float(r) for r in args.rates.split(",")]:
        ordinary, skip = models(device, rate)
        t_o, t_s = time_pair(ordinary, skip, x, device, args.repeats)
        saved_o, saved_s = (mean_saved(m, x, range(args.repeats)) for m in (ordinary, skip))
        if device == "cuda":
            peak_o, peak_s = cuda_peak(ordinary, x), cuda_peak(skip, x)
        elif args.no_rss:
            peak_o = peak_s = None
        else:
            peak_o, peak_s = peak_rss_delta(rate, "ordinary"), peak_rss_delta(rate, "skip")
        mean_rate = sum(drop_path_rates(depth, rate)) / depth
        row = dict(rate=rate, mean_rate=mean_rate, t_o=min(t_o), t_s=min(t_s),
                   med_o=statistics.median(t_o), med_s=statistics.median(t_s),
                   saved_o=saved_o, saved_s=saved_s, peak_o=peak_o, peak_s=peak_s,
                   time_target=1 - mean_rate * time_share + 0.05,
                   memory_target=1 - mean_rate * memory_share)  # fmt: skip
        rows.append(row)
        peak = "" if peak_o is None else f", peak {mib(peak_o)} -> {mib(peak_s)} MiB " \
            f"({peak_s / peak_o:.3f}x)"  # fmt: skip
        print(f"max rate {rate} (mean {mean_rate:.3f}): step {row['t_o']:.1f} -> "
              f"{row['t_s']:.1f} ms ({row['t_s'] / row['t_o']:.3f}x, target <= "
              f"{row['time_target']:.3f}x); saved {mib(saved_o)} -> {mib(saved_s)} MiB "
              f"({saved_s / saved_o:.3f}x, target <= {row['memory_target']:.3f}x){peak}",
              flush=True)  # fmt: skip
    peak_name = "peak allocated" if device == "cuda" else "peak RSS growth"
    body = [f"## DropPath skip-compute ({device}, ViT dim {dim}, depth {depth}, {heads} heads, "
            f"{tokens} tokens, batch {n})", "",
            "Train step (forward + backward + AdamW), ordinary `DropPath` vs skip-compute "
            "`StochasticDepth` (row mode) on the same weights, interleaved, minimum (median) "
            "over the repeats; rates depth-linear up to the max rate. Saved = bytes autograd "
            "keeps for backward in one forward, parameters left out (mean over the same seeds "
            "for both); "
            f"{peak_name} = one step's high-water mark over the memory before it"
            + (" (a fresh process per variant)" if device == "cpu" else "")
            + ". `python bench/droppath.py --write`.", "",
            f"Measured branch share (every branch skipped vs rate 0): {time_share:.2f} of the "
            f"step time, {memory_share:.3f} of the saved bytes. Targets: time ratio <= "
            "1 - mean rate x time share + 0.05; saved ratio <= 1 - mean rate x memory share "
            f"(+ 0.01 for the sampling of the masks). {peak_name} of the same stack at rate 0 "
            f"(no DropPath): {mib(base_peak)} MiB.",
            "",
            "| max rate | mean rate | ordinary ms | skip ms | time ratio (target) | "
            f"saved MiB ordinary / skip | saved ratio (target) | {peak_name} MiB | peak ratio |",
            "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        tr, sr = r["t_s"] / r["t_o"], r["saved_s"] / r["saved_o"]
        peak_ratio = "n/a" if r["peak_o"] is None else f"{r['peak_s'] / r['peak_o']:.3f}"
        body.append(
            f"| {r['rate']} | {r['mean_rate']:.3f} | {r['t_o']:.0f} ({r['med_o']:.0f}) | "
            f"{r['t_s']:.0f} ({r['med_s']:.0f}) | {tr:.3f} (<= {r['time_target']:.3f}) "
            f"{'PASS' if tr <= r['time_target'] else 'MISS'} | {mib(r['saved_o'])} / "
            f"{mib(r['saved_s'])} | {sr:.3f} (<= {r['memory_target']:.3f}) "
            f"{'PASS' if sr <= r['memory_target'] + 0.01 else 'MISS'} | {mib(r['peak_o'])} / "
            f"{mib(r['peak_s'])} | {peak_ratio} |"
        )
    body += ["", "![speed-up and memory vs max rate](docs/bench/droppath_speedup.png)"]
    print("\n".join(body))
    if args.write:
        write_section(f"droppath_{device}", "\n".join(body))
    if args.write or args.plot:
        plot(rows)


def plot(rows: list[dict]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5, 3.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    rates = [r["rate"] for r in rows]
    ax.plot(rates, [r["t_o"] / r["t_s"] for r in rows], "o-", label="step speed-up")
    ax.plot(rates, [r["saved_o"] / r["saved_s"] for r in rows], "s--",
            label="saved-for-backward reduction")  # fmt: skip
    if all(r["peak_o"] is not None for r in rows):
        ax.plot(rates, [r["peak_o"] / r["peak_s"] for r in rows], "^:", label="peak reduction")
    ax.plot(rates, [1 / (1 - r["mean_rate"]) for r in rows], "k", lw=0.8,
            label="1 / (1 - mean rate)")  # fmt: skip
    ax.set_xlabel("max drop-path rate (depth-linear)")
    ax.set_ylabel("ordinary / skip-compute")
    ax.legend(fontsize=7)
    fig.tight_layout()
    Path(PLOT).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT, dpi=100)


if __name__ == "__main__":
    main()
