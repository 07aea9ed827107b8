"""Size sweep for ``bench/cpu_dropout.py --sweep``: dropkit vs torch eager, N = 2^4 .. 2^26.

For each N (x4 steps) and dtype: forward and forward+backward, min of interleaved repeats
(dropkit and torch alternate, so load drifts hit both), optionally with two busy background
processes started and stopped here (``--contention``). Prints torch/dropkit time ratios
(> 1: dropkit faster); ``--write`` puts the table in BENCHMARKS.md and a plot in
docs/bench/cpu_dropout_sizes.png.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import torch
import torch.nn.functional as TF

from dropkit.functional import dropout

DT = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PLOT = Path(__file__).resolve().parents[1] / "docs" / "bench" / "cpu_dropout_sizes.png"


def _busy() -> None:
    while True:
        pass


def _min_time(fn, budget_s: float) -> float:
    fn()
    reps = 1
    start = time.perf_counter()
    fn()
    once = time.perf_counter() - start
    reps = max(1, min(200, int(budget_s / max(once, 1e-7))))
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def _pair(n: int, dtype: torch.dtype, backward: bool, rounds: int) -> tuple[float, float]:
    x = torch.randn(n).to(dtype).requires_grad_(backward)
    g = torch.randn(n).to(dtype)

    def ours():
        y = dropout(x, 0.5)
        if backward:
            y.backward(g)

    def theirs():
        y = TF.dropout(x, 0.5)
        if backward:
            y.backward(g)

    a = b = float("inf")
    budget = 0.02 if n < 2**20 else 0.0
    for _ in range(rounds):  # interleaved: each round times both
        a = min(a, _min_time(ours, budget))
        b = min(b, _min_time(theirs, budget))
    return a, b


def sweep(dtypes: list[str], rounds: int, contention: bool, max_log2: int = 26) -> list[tuple]:
    """Rows ``(contention, dtype, pass, N, dropkit s, torch s)``."""
    procs = [mp.Process(target=_busy, daemon=True) for _ in range(2 if contention else 0)]
    for proc in procs:
        proc.start()
    rows = []
    try:
        for name in dtypes:
            for log2 in range(4, max_log2 + 1, 2):
                for backward in (False, True):
                    ours, theirs = _pair(2**log2, DT[name], backward, rounds)
                    rows.append(
                        (contention, name, "fwd+bwd" if backward else "fwd", log2, ours, theirs)
                    )
                    print(
                        f"{'busy' if contention else 'idle'} {name} {rows[-1][2]:7s} 2^{log2:<2d} "
                        f"dropkit {ours * 1e3:9.3f} ms  torch {theirs * 1e3:9.3f} ms  "
                        f"speedup {theirs / ours:6.2f}x",
                        flush=True,
                    )
    finally:
        for proc in procs:
            proc.terminate()
            proc.join()
    return rows


def table(rows: list[tuple]) -> str:
    lines = [
        "| load | dtype | pass | N | dropkit ms | torch ms | torch / dropkit |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for busy, name, kind, log2, ours, theirs in rows:
        lines.append(
            f"| {'2 busy' if busy else 'idle'} | {name} | {kind} | 2^{log2} | "
            f"{ours * 1e3:.4f} | {theirs * 1e3:.4f} | {theirs / ours:.2f}x |"
        )
    return "\n".join(lines)


def plot(rows: list[tuple], path: Path = PLOT) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    keys = sorted({(r[0], r[1], r[2]) for r in rows})
    for busy, name, kind in keys:
        sel = [r for r in rows if (r[0], r[1], r[2]) == (busy, name, kind)]
        label = f"{name} {kind}{' (busy)' if busy else ''}"
        ax.plot([2 ** r[3] for r in sel], [r[5] / r[4] for r in sel], marker="o", label=label)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="elements N", ylabel="torch time / dropkit time")
    ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
