"""Where dropkit's CPU kernel should stop running serially: serial twin vs parallel twin vs torch.

For each size N (fp32, p = 0.5) the script times, interleaved and repeated (minimum over the
repeats, each repeat a batch of calls long enough for the clock):

* ``serial`` - the serial numba twin of the masked rescale (``cpu._masked_scale_serial``);
* ``parallel`` - its parallel twin on torch's thread count (``cpu._masked_scale_parallel``);
* ``dropkit`` - ``dropkit.functional.dropout`` (the whole call: checks, seed draw, dispatch);
* ``torch`` - ``torch.nn.functional.dropout``.

and prints the times with the ratios parallel/serial (the serial/parallel switch belongs where it
crosses 1) and dropkit/torch. ``--busy K`` runs K spinning processes during the measurement, to
see the parallel launch under CPU contention (a descheduled worker stalls the whole region).

Command: ``.venv/bin/python bench/cpu_threads.py [--busy 2] [--repeats 15]``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import numpy as np
import torch

import dropkit.functional as dkf
from dropkit.rng import cpu, threads


def _spin(stop) -> None:  # pragma: no cover - runs in a helper process
    while not stop.is_set():
        pass


def _batch(n: int) -> int:
    # Enough calls per timing that one repeat lasts ~1 ms even for the smallest sizes.
    return max(1, (1 << 16) // n)


def measure(sizes: list[int], repeats: int) -> list[dict[str, float]]:
    rows = []
    thr = 1 << 31
    for n in sizes:
        x = torch.randn(n)
        out = torch.empty_like(x)
        xa, oa = x.numpy(), out.numpy()
        k = _batch(n)
        cases = {
            "serial": lambda xa=xa, oa=oa: cpu._masked_scale_serial(xa, oa, 7, 0, 0, thr, 2.0),
            "parallel": lambda xa=xa, oa=oa: cpu._masked_scale_parallel(xa, oa, 7, 0, 0, thr, 2.0),
            "dropkit": lambda x=x: dkf.dropout(x, 0.5, training=True),
            "torch": lambda x=x: torch.nn.functional.dropout(x, 0.5, training=True),
        }
        best = dict.fromkeys(cases, float("inf"))
        for fn in cases.values():  # warm-up (compiles or loads the kernels)
            fn()
        for _ in range(repeats):
            for name, fn in cases.items():
                t0 = time.perf_counter()
                for _ in range(k):
                    fn()
                best[name] = min(best[name], (time.perf_counter() - t0) / k)
        rows.append({"n": n, **best})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-log2", type=int, default=8)
    parser.add_argument("--max-log2", type=int, default=22)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--busy", type=int, default=0, help="spinning processes during the run")
    args = parser.parse_args()
    sizes = [1 << e for e in range(args.min_log2, args.max_log2 + 1, 2)]
    stop = mp.Event()
    spinners = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(args.busy)]
    for s in spinners:
        s.start()
    try:
        rows = measure(sizes, args.repeats)
    finally:
        stop.set()
        for s in spinners:
            s.join()
    print(
        f"torch threads {torch.get_num_threads()}, SERIAL_MAX {threads.SERIAL_MAX}, "
        f"busy processes {args.busy}, repeats {args.repeats} (minimum)\n"
    )
    print(
        "| N | serial µs | parallel µs | parallel/serial | dropkit µs | torch µs | dropkit/torch |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        us = {k: v * 1e6 for k, v in r.items() if k != "n"}
        print(
            f"| 2^{int(np.log2(r['n']))} | {us['serial']:.1f} | {us['parallel']:.1f} | "
            f"{us['parallel'] / us['serial']:.2f} | {us['dropkit']:.1f} | {us['torch']:.1f} | "
            f"{us['dropkit'] / us['torch']:.2f} |"
        )


if __name__ == "__main__":
    main()
