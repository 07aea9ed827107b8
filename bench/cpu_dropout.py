"""CPU dropout: dropkit (numba backend) against a copy and against ``torch.nn.functional.dropout``.

Measures, for each dtype (fp32 by default), on N elements:

* forward: ``x.clone()`` (the copy every dropout must at least do: read x, allocate and write
  y), ``out.copy_(x)`` into a preallocated buffer (info), dropkit ``dropout`` (numba, fixed
  seed), torch ``F.dropout`` and, with ``--with-reference``, dropkit's NumPy reference backend;
* forward+backward (``y.backward(g)`` with ``x.requires_grad``): two clones (x and g), dropkit,
  torch;
* fused ``bias_dropout_add`` on ``(N / H, H)``: its bytes-moved limit ``x + residual`` (reads
  two tensors and allocates and writes one, exactly the traffic of the fused forward; the bias,
  H elements, is negligible), dropkit fused, and torch's unfused ``residual + F.dropout(x +
  bias)``; and forward+backward against ``x + residual`` plus ``g.clone()`` (the backward's
  least traffic: read dout, write dx);
* bytes saved for backward (``saved_tensors_hooks``): dropkit 0 per element beyond its 8-byte
  seed, torch CPU one full-precision noise tensor (4 B/elem in fp32).

Targets (fp32, N = 2^24): dropkit forward ≤ 2.5× clone and ≥ 5× faster than torch's. Usage:
``.venv/bin/python bench/cpu_dropout.py [--numel N] [--repeats R] [--write]``.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

# Steady-state timings: load the numba kernels before the first timed call (the NumPy
# twins that answer while they load in the background are timed by bench/startup.py).
os.environ.setdefault("DROPKIT_EAGER_KERNELS", "1")

import torch
import torch.nn.functional as F
from _harness import (
    DTYPES,
    Row,
    RowGroup,
    SavedRow,
    Target,
    bandwidth_note,
    command_line,
    environment,
    noise_note,
    render_section,
    saved_bytes,
    saved_table,
    summary,
    time_cpu,
    timing_table,
    write_section,
)

from dropkit.functional import bias_dropout_add, dropout

SEED = 20240601
#: (dtype, target) pairs: the issue's CPU targets are stated for fp32.
FWD_VS_CLONE = {"fp32": Target("ratio", "<=", 2.5)}
FWD_SPEEDUP = {"fp32": Target("speedup", ">=", 5.0)}
#: "forward+backward likewise against two copies": the same bounds for the pair of passes.
BOTH_VS_CLONES = {"fp32": Target("ratio", "<=", 2.5)}
BOTH_SPEEDUP = {"fp32": Target("speedup", ">=", 5.0)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--numel", type=int, default=2**24, help="elements (default 2^24)")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats (default 7)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first (default 2)")
    parser.add_argument("--p", type=float, default=0.5, help="drop probability (default 0.5)")
    parser.add_argument(
        "--dtypes", default="fp32", help=f"comma-separated, of {', '.join(DTYPES)} (default fp32)"
    )
    parser.add_argument("--hidden", type=int, default=4096, help="H for bias_dropout_add")
    parser.add_argument("--threads", type=int, help="torch and numba threads (default: all)")
    parser.add_argument(
        "--with-reference", action="store_true", help="also time the slow NumPy reference"
    )
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    parser.add_argument(
        "--sweep", action="store_true", help="size sweep 2^4..2^26 (fp32, bf16, fp16) vs torch"
    )
    parser.add_argument(
        "--contention", action="store_true", help="sweep again with two busy processes"
    )
    parser.add_argument("--max-log2", type=int, default=26, help="largest N = 2^k of the sweep")
    args = parser.parse_args(argv)
    args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    for d in args.dtypes:
        if d not in DTYPES:
            parser.error(f"--dtypes: unknown dtype {d!r}; choose from {', '.join(DTYPES)}")
    if args.numel % args.hidden:
        parser.error(f"--numel ({args.numel}) must be a multiple of --hidden ({args.hidden})")
    if not 0.0 < args.p < 1.0:
        parser.error("--p must be in (0, 1)")
    return args


def measure_dropout(args, name: str) -> tuple[list[Row], list[SavedRow]]:
    dtype, n, p = DTYPES[name], args.numel, args.p
    time_it = functools.partial(time_cpu, warmup=args.warmup, repeats=args.repeats)
    x = torch.randn(n, dtype=dtype)
    g = torch.randn(n, dtype=dtype)
    buf = torch.empty_like(x)

    def dk(t):
        return dropout(t, p, True, seed=SEED, backend="numba")

    def th(t):
        return F.dropout(t, p, True)

    fwd = RowGroup("forward", name, "x.clone() (baseline)", time_it(lambda: x.clone()), "clone")
    fwd.add("out.copy_(x), preallocated (info)", time_it(lambda: buf.copy_(x)))
    fwd.add("dropkit dropout (numba)", time_it(lambda: dk(x)), FWD_VS_CLONE.get(name), dropkit=True)
    fwd.add("torch F.dropout", time_it(lambda: th(x)), FWD_SPEEDUP.get(name), peer=True)
    if args.with_reference:
        ref = functools.partial(time_cpu, warmup=1, repeats=min(args.repeats, 3))
        fwd.add(
            "dropkit dropout (reference, NumPy)",
            ref(lambda: dropout(x, p, True, seed=SEED, backend="reference")),
        )

    xg = x.detach().clone().requires_grad_()

    def fwd_bwd(f):
        def run():
            xg.grad = None
            f(xg).backward(g)
            return xg.grad

        return run

    two = time_it(lambda: (x.clone(), g.clone()))
    both = RowGroup("fwd+bwd", name, "x.clone() + g.clone() (baseline)", two, "2 clones")
    both.add(
        "dropkit dropout (numba)", time_it(fwd_bwd(dk)), BOTH_VS_CLONES.get(name), dropkit=True
    )
    both.add("torch F.dropout", time_it(fwd_bwd(th)), BOTH_SPEEDUP.get(name), peer=True)
    saved = [
        SavedRow("dropout", "dropkit (numba)", name, saved_bytes(lambda: dk(xg)), n, 8),
        SavedRow(
            "dropout", "torch F.dropout", name, saved_bytes(lambda: th(xg)), n, None, e_size(x)
        ),
    ]
    return fwd.rows + both.rows, saved


def e_size(t: torch.Tensor) -> float:
    """torch's CPU dropout saves its noise tensor in the input's dtype: e bytes per element."""
    return float(t.element_size())


def measure_bias_dropout_add(args, name: str) -> tuple[list[Row], list[SavedRow]]:
    dtype, n, p, h = DTYPES[name], args.numel, args.p, args.hidden
    time_it = functools.partial(time_cpu, warmup=args.warmup, repeats=args.repeats)
    x = torch.randn(n // h, h, dtype=dtype)
    r = torch.randn(n // h, h, dtype=dtype)
    b = torch.randn(h, dtype=dtype)
    g = torch.randn(n // h, h, dtype=dtype)

    def dk(x, b, r):
        return bias_dropout_add(x, b, r, p, True, seed=SEED, backend="numba")

    def th(x, b, r):
        return r + F.dropout(x + b, p, True)

    limit = time_it(lambda: x + r)
    fwd = RowGroup("bias_dropout_add fwd", name, "x + residual (bytes limit)", limit, "limit")
    fwd.add("dropkit fused (numba)", time_it(lambda: dk(x, b, r)), dropkit=True)
    fwd.add("torch residual + F.dropout(x + bias)", time_it(lambda: th(x, b, r)), peer=True)

    leaves = [t.detach().clone().requires_grad_() for t in (x, b, r)]

    def fwd_bwd(f):
        # autograd.grad, not backward(): accumulating into .grad would copy d(residual) = g.
        return lambda: torch.autograd.grad(f(*leaves), leaves, g)

    limit = time_it(lambda: (x + r, g.clone()))
    both = RowGroup(
        "bias_dropout_add fwd+bwd", name, "x + residual, g.clone() (bytes limit)", limit, "limit"
    )
    both.add("dropkit fused (numba)", time_it(fwd_bwd(dk)), dropkit=True)
    both.add("torch residual + F.dropout(x + bias)", time_it(fwd_bwd(th)), peer=True)
    op = "bias_dropout_add"
    saved = [
        SavedRow(op, "dropkit", name, saved_bytes(lambda: dk(*leaves)), n, 8),
        SavedRow(
            op, "torch composition", name, saved_bytes(lambda: th(*leaves)), n, None, e_size(x)
        ),
    ]
    return fwd.rows + both.rows, saved


def preallocated_note(rows: list[Row]) -> str:
    """dropkit's forward against the copy into a preallocated buffer, per dtype: clone (like
    dropkit, which allocates its output) also pays for the page faults of a fresh allocation,
    which glibc hands out for every tensor of 32 MiB or more (and for smaller ones only
    sometimes), so on the CPU the two copies can differ several-fold."""
    parts = []
    for name in dict.fromkeys(r.dtype for r in rows):
        fwd = {r.case: r.timing for r in rows if r.group == "forward" and r.dtype == name}
        copy_into = fwd["out.copy_(x), preallocated (info)"]
        ratio = fwd["dropkit dropout (numba)"].min_ms / copy_into.min_ms
        clone = fwd["x.clone() (baseline)"].min_ms / copy_into.min_ms
        parts.append(f"{name}: dropkit forward {ratio:.2f}×, clone {clone:.2f}×")
    return (
        "Against `out.copy_(x)` into a preallocated buffer (no allocation, no page faults): "
        + "; ".join(parts)
        + ". clone is the baseline of the targets because dropkit allocates its output too."
    )


def run_sweep(args: argparse.Namespace) -> int:
    """The size sweep (see ``bench/_sweep.py``); ``--write`` updates BENCHMARKS.md and the plot."""
    from _sweep import plot, sweep, table

    dtypes = args.dtypes if args.dtypes != ["fp32"] else ["fp32", "bf16", "fp16"]
    rows = sweep(dtypes, args.repeats, False, args.max_log2)
    if args.contention:
        rows += sweep(dtypes, args.repeats, True, args.max_log2)
    body = "## CPU dropout at every size\n\n" + table(rows)
    body += "\n\n![time ratio vs size](docs/bench/cpu_dropout_sizes.png)\n"
    print(table(rows))
    if args.write:
        plot(rows)
        write_section("cpu_dropout_sizes", body + f"\n`{command_line()}`")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.sweep:
        return run_sweep(args)
    if args.threads:
        import numba

        torch.set_num_threads(args.threads)
        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    rows: list[Row] = []
    saved: list[SavedRow] = []
    for name in args.dtypes:
        for measure in (measure_dropout, measure_bias_dropout_add):
            r, s = measure(args, name)
            rows += r
            saved += s
    n = args.numel
    size = f"2^{n.bit_length() - 1}" if n & (n - 1) == 0 else f"{n:,}"
    notes = [
        f"N = {n:,} elements, p = {args.p}, bias_dropout_add on ({n // args.hidden}, "
        f"{args.hidden}); {args.warmup} warm-up calls, {args.repeats} timed repeats "
        "(time.perf_counter); ratios use the minimum times.",
        "ratio × = the case's time / its baseline's, measured in this run. dropkit speed-up × = "
        "the peer's time / dropkit's in the same group.",
        "Baselines: clone allocates and writes its output like dropout does; fwd+bwd = clone of "
        "x and of g; bias_dropout_add limit = `x + residual` (two reads, one allocated write: "
        "the fused forward's traffic), plus `g.clone()` for its backward.",
        "Targets are stated for fp32 at N = 2^24: dropkit forward ≤ 2.5× clone and ≥ 5× faster "
        "than torch F.dropout, forward+backward likewise against two clones and torch's "
        "forward+backward; dropkit saves only its 8-byte seed. Rows without a target are "
        "information.",
        bandwidth_note(rows, "x.clone() (baseline)", n),
        preallocated_note(rows),
        f"Result: {summary(rows, saved)}.",
    ]
    if (noise := noise_note(rows)) is not None:
        notes.append(noise)
    if n != 2**24:
        notes.append(f"This run used N = {size}, not 2^24: compare against the targets loosely.")
    text = render_section(
        f"CPU dropout ({', '.join(args.dtypes)}, N = {size})",
        environment("cpu"),
        command_line(),
        [timing_table(rows), "Bytes saved for backward:", saved_table(saved)],
        notes,
    )
    print(text)
    if args.write:
        write_section("cpu_dropout", text)
        print("updated BENCHMARKS.md section cpu_dropout")
    return 0


if __name__ == "__main__":
    sys.exit(main())
