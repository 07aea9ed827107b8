"""GPU dropout: dropkit (Triton backend) against a copy, torch eager and torch.compile.

Measures, for fp32 and bf16 on N elements (default 2^27), device time from CUDA events:

* forward: ``x.clone()`` (baseline), dropkit ``dropout`` (triton, fixed seed), torch eager
  ``F.dropout``, ``torch.compile`` of ``F.dropout`` (default mode);
* forward+backward (``y.backward(g)`` with ``x.requires_grad``): ``x.clone()`` plus
  ``g.clone()`` (baseline), dropkit, torch eager, torch.compile;
* fused ``bias_dropout_add`` on ``(N / H, H)``: its bytes-moved limit ``x + residual`` (reads two
  tensors, writes one: the fused forward's traffic; the H-element bias is negligible), dropkit
  fused, torch's ``residual + F.dropout(x + bias)`` eager and compiled; forward+backward against
  ``x + residual`` plus ``g.clone()`` (the backward's least traffic: read dout, write dx);
* bytes saved for backward (``saved_tensors_hooks``): dropkit 0 per element beyond its 8-byte
  seed, torch (eager and compiled) a 1-byte bool mask per element.

Targets (H100/H200, fp32 and bf16, N = 2^27): dropkit forward ≤ 1.05× clone, forward+backward
≤ 1.05× two clones, both faster than torch eager and torch.compile; bias_dropout_add forward
≤ 1.10× its bytes limit. Without CUDA or Triton it prints ``skipped: ...`` and exits 0.
``--device cpu`` runs the same code on the CPU (numba backend, wall-clock timer) to check the
script itself; those numbers mean nothing against the GPU targets and cannot be written.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys

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
    timer,
    timing_table,
    write_section,
)

from dropkit.functional import bias_dropout_add, dropout

SEED = 20240601
COPY_TARGET = Target("ratio", "<=", 1.05)
BDA_TARGET = Target("ratio", "<=", 1.10)
FASTER = Target("speedup", ">", 1.0)
TARGET_DTYPES = ("fp32", "bf16")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--numel", type=int, default=2**27, help="elements (default 2^27)")
    parser.add_argument("--repeats", type=int, default=30, help="timed repeats (default 30)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls first (default 5)")
    parser.add_argument("--p", type=float, default=0.5, help="drop probability (default 0.5)")
    parser.add_argument(
        "--dtypes", default="fp32,bf16", help=f"comma-separated, of {', '.join(DTYPES)}"
    )
    parser.add_argument("--hidden", type=int, default=4096, help="H for bias_dropout_add")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile cases")
    parser.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default="cuda",
        help="cpu: check this script on a machine without a GPU (no --write)",
    )
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    parser.add_argument(
        "--section", help="BENCHMARKS.md section key (default gpu_dropout_<GPU name>)"
    )
    args = parser.parse_args(argv)
    args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    for d in args.dtypes:
        if d not in DTYPES:
            parser.error(f"--dtypes: unknown dtype {d!r}; choose from {', '.join(DTYPES)}")
    if args.numel % args.hidden:
        parser.error(f"--numel ({args.numel}) must be a multiple of --hidden ({args.hidden})")
    if not 0.0 < args.p < 1.0:
        parser.error("--p must be in (0, 1)")
    if args.write and args.device != "cuda":
        parser.error("--write records GPU results only; --device cpu is a check of the script")
    return args


def skip_reason() -> str | None:
    """Why this machine cannot run the GPU benchmark, or None."""
    if not torch.cuda.is_available():
        built = torch.version.cuda or "no CUDA"
        return f"CUDA is not available (torch {torch.__version__}, built with {built})"
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install triton), so dropkit has no GPU kernel"
    from dropkit.rng import gpu

    if not gpu.AVAILABLE:
        return "dropkit.rng.gpu could not import triton"
    return None


def torch_dropout(p: float):
    def f(t):
        return F.dropout(t, p, True)

    return f


def torch_bias_dropout_add(p: float):
    def f(x, b, r):
        return r + F.dropout(x + b, p, True)

    return f


def try_time(time_it, fn, label: str):
    """A peer's timing, or None (with a warning) when it fails, e.g. torch.compile on a setup
    it does not support: the other cases still run."""
    try:
        return time_it(fn)
    except Exception as exc:  # report, do not abort the other measurements
        print(f"warning: {label} failed, its row is left out: {exc!r}", file=sys.stderr)
        return None


def safe_saved_bytes(fn) -> int | None:
    try:
        return saved_bytes(fn)
    except Exception as exc:  # report, do not abort the other measurements
        print(f"warning: saved-bytes measurement failed: {exc!r}", file=sys.stderr)
        return None


def measure_dropout(args, name: str, peers: dict, backend: str):
    dtype, n, dev = DTYPES[name], args.numel, args.device
    time_it = timer(dev, warmup=args.warmup, repeats=args.repeats)
    copy_target, faster = (COPY_TARGET, FASTER) if name in TARGET_DTYPES else (None, None)
    x = torch.randn(n, dtype=dtype, device=dev)
    g = torch.randn(n, dtype=dtype, device=dev)

    def dk(t):
        return dropout(t, args.p, True, seed=SEED, backend=backend)

    fwd = RowGroup("forward", name, "x.clone() (baseline)", time_it(lambda: x.clone()), "clone")
    fwd.add(f"dropkit dropout ({backend})", time_it(lambda: dk(x)), copy_target, dropkit=True)
    for label, fn in peers.items():
        if (t := try_time(time_it, lambda fn=fn: fn(x), label)) is not None:
            fwd.add(f"{label} F.dropout", t, faster, peer=True)

    xg = x.detach().clone().requires_grad_()

    def fwd_bwd(f):
        def run():
            xg.grad = None
            f(xg).backward(g)
            return xg.grad

        return run

    two = time_it(lambda: (x.clone(), g.clone()))
    both = RowGroup("fwd+bwd", name, "x.clone() + g.clone() (baseline)", two, "2 clones")
    both.add(f"dropkit dropout ({backend})", time_it(fwd_bwd(dk)), copy_target, dropkit=True)
    for label, fn in peers.items():
        if (t := try_time(time_it, fwd_bwd(fn), label)) is not None:
            both.add(f"{label} F.dropout", t, faster, peer=True)

    expected = 1.0 if dev == "cuda" else None  # torch's CUDA bool mask
    saved = [SavedRow("dropout", "dropkit", name, safe_saved_bytes(lambda: dk(xg)), n, 8)]
    for label, fn in peers.items():
        nbytes = safe_saved_bytes(lambda fn=fn: fn(xg))
        saved.append(SavedRow("dropout", label, name, nbytes, n, None, expected))
    return fwd.rows + both.rows, saved


def measure_bias_dropout_add(args, name: str, peers: dict, backend: str):
    dtype, n, h, dev = DTYPES[name], args.numel, args.hidden, args.device
    time_it = timer(dev, warmup=args.warmup, repeats=args.repeats)
    x = torch.randn(n // h, h, dtype=dtype, device=dev)
    r = torch.randn(n // h, h, dtype=dtype, device=dev)
    b = torch.randn(h, dtype=dtype, device=dev)
    g = torch.randn(n // h, h, dtype=dtype, device=dev)

    def dk(x, b, r):
        return bias_dropout_add(x, b, r, args.p, True, seed=SEED, backend=backend)

    limit = time_it(lambda: x + r)
    fwd = RowGroup("bias_dropout_add fwd", name, "x + residual (bytes limit)", limit, "limit")
    target = BDA_TARGET if name in TARGET_DTYPES else None
    fwd.add(f"dropkit fused ({backend})", time_it(lambda: dk(x, b, r)), target, dropkit=True)
    for label, fn in peers.items():
        if (t := try_time(time_it, lambda fn=fn: fn(x, b, r), label)) is not None:
            fwd.add(f"{label} r + F.dropout(x + b)", t, peer=True)

    leaves = [t.detach().clone().requires_grad_() for t in (x, b, r)]

    def fwd_bwd(f):
        # autograd.grad, not backward(): accumulating into .grad would copy d(residual) = g.
        return lambda: torch.autograd.grad(f(*leaves), leaves, g)

    limit = time_it(lambda: (x + r, g.clone()))
    both = RowGroup(
        "bias_dropout_add fwd+bwd", name, "x + residual, g.clone() (bytes limit)", limit, "limit"
    )
    both.add(f"dropkit fused ({backend})", time_it(fwd_bwd(dk)), dropkit=True)
    for label, fn in peers.items():
        if (t := try_time(time_it, fwd_bwd(fn), label)) is not None:
            both.add(f"{label} r + F.dropout(x + b)", t, peer=True)

    op, expected = "bias_dropout_add", (1.0 if dev == "cuda" else None)
    saved = [SavedRow(op, "dropkit", name, safe_saved_bytes(lambda: dk(*leaves)), n, 8)]
    for label, fn in peers.items():
        nbytes = safe_saved_bytes(lambda fn=fn: fn(*leaves))
        saved.append(SavedRow(op, label, name, nbytes, n, None, expected))
    return fwd.rows + both.rows, saved


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda":
        reason = skip_reason()
        if reason is not None:
            print(f"skipped: {reason}")
            return 0
    backend = "triton" if args.device == "cuda" else "numba"
    drop_peers = {"torch eager": torch_dropout(args.p)}
    bda = {"torch eager": torch_bias_dropout_add(args.p)}
    if not args.no_compile:
        drop_peers["torch.compile"] = torch.compile(torch_dropout(args.p))
        bda["torch.compile"] = torch.compile(torch_bias_dropout_add(args.p))
    rows: list[Row] = []
    saved: list[SavedRow] = []
    for name in args.dtypes:
        for measure, peers in [(measure_dropout, drop_peers), (measure_bias_dropout_add, bda)]:
            r, s = measure(args, name, peers, backend)
            rows += r
            saved += s
            if args.device == "cuda":
                torch.cuda.empty_cache()

    env = environment(args.device)
    n = args.numel
    size = f"2^{n.bit_length() - 1}" if n & (n - 1) == 0 else f"{n:,}"
    timer_text = (
        "CUDA events around each call, after an L2-evicting 256 MiB fill and a 2 ms GPU spin "
        "that let the Python dispatch queue ahead (device time, as triton.testing.do_bench)"
        if args.device == "cuda"
        else "time.perf_counter (CPU check run: not comparable with the GPU targets)"
    )
    notes = [
        f"N = {n:,} elements, p = {args.p}, bias_dropout_add on ({n // args.hidden}, "
        f"{args.hidden}); {args.warmup} warm-up calls (they include torch.compile's "
        f"compilation), {args.repeats} timed repeats; {timer_text}; ratios use the minimum times.",
        "ratio × = the case's time / its baseline's, measured in this run. dropkit speed-up × = "
        "the peer's time / dropkit's in the same group.",
        "Baselines: fwd+bwd = clone of x and of g; bias_dropout_add limit = `x + residual` (two "
        "reads, one write: the fused forward's traffic), plus `g.clone()` for its backward "
        "(dropkit's backward also re-reads dx to reduce d(bias)).",
        "Targets (fp32 and bf16 at N = 2^27): dropkit forward ≤ 1.05× clone, fwd+bwd ≤ 1.05× "
        "two clones, both faster than torch eager and torch.compile; bias_dropout_add forward "
        "≤ 1.10× its limit; dropkit saves only its 8-byte seed. Rows without a target are "
        "information.",
        bandwidth_note(rows, "x.clone() (baseline)", n),
        f"Result: {summary(rows, saved)}.",
    ]
    if (noise := noise_note(rows)) is not None:
        notes.append(noise)
    if n != 2**27:
        notes.append(f"This run used N = {size}, not 2^27: compare against the targets loosely.")
    where = env["device"].split(" (")[0] if args.device == "cuda" else "CPU check"
    text = render_section(
        f"GPU dropout, {where} ({', '.join(args.dtypes)}, N = {size})",
        env,
        command_line(),
        [timing_table(rows), "Bytes saved for backward:", saved_table(saved)],
        notes,
    )
    print(text)
    if args.write:
        key = args.section or "gpu_dropout_" + re.sub(r"[^a-z0-9]+", "_", where.lower()).strip("_")
        write_section(key, text)
        print(f"updated BENCHMARKS.md section {key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
