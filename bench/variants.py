"""Every dropout variant against the torch code it replaces, in one run.

Baselines: torch's own module where torch has one (Dropout, Dropout1d/2d/3d, AlphaDropout,
FeatureAlphaDropout); timm's formulas for DropPath (``(N, 1, ...)`` mask by ``bernoulli_``, then
``x * mask``) and DropBlock (the "fast" form: full-size ``bernoulli_``, ``max_pool2d``, a global
renormalisation); the obvious torch code for the rest (LockedDropout, GaussianDropout,
DropConnect, EmbeddingDropout, WeightDrop, ConcreteDropout), written out in ``BASELINES`` below.

For each variant, realistic shapes from 2^8 to about 2^21 elements (tiny, small, medium; with
``--large`` also about 2^22-2^24) (ViT tokens, CNN feature maps, RNN sequences, MLP activations,
weight matrices), fp32 and bf16, forward and
forward+backward: the minimum over interleaved repeats (dropkit, baseline, dropkit, ...) of the
wall time, and the peak memory the call allocates beyond its inputs (the CPU profiler's
allocation events; CUDA's peak-memory counter on a GPU). The targets are dropkit's time ≤ 1.0×
the baseline's and its peak memory ≤ the baseline's, at every size, in both passes.

Usage: ``.venv/bin/python bench/variants.py [--quick | --large] [--dtypes fp32,bf16]
[--only NAMES] [--device cpu|cuda] [--write]``; ``--write`` replaces the ``variants`` section of
BENCHMARKS.md and writes the plot to ``docs/bench/variants.png``. The default run (three sizes,
two dtypes, 5/5/3 repeats) takes about 5 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# Steady-state timings: load the numba kernels before the first timed call (the NumPy
# twins that answer while they load in the background are timed by bench/startup.py).
os.environ.setdefault("DROPKIT_EAGER_KERNELS", "1")

import torch
import torch.nn.functional as tF
from _harness import (
    DTYPES,
    REPO,
    command_line,
    environment,
    fmt_ms,
    markdown_table,
    render_section,
    write_section,
)
from torch import nn

import dropkit.nn as dkn
from dropkit.nn.learned.concrete import ConcreteDropout

P = 0.1
PLOTS = {
    "cpu": REPO / "docs" / "bench" / "variants.png",
    "cuda": REPO / "docs" / "bench" / "variants_cuda.png",
}
SIZES = ("tiny", "small", "medium", "large")


# ---------------------------------------------------------------- baselines (the torch code)


def timm_drop_path(x: torch.Tensor, p: float) -> torch.Tensor:
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


def timm_drop_block_fast(x: torch.Tensor, p: float, block: int = 7) -> torch.Tensor:
    _, _, h, w = x.shape
    size = min(block, h, w)
    gamma = p * h * w / size**2 / ((w - block + 1) * (h - block + 1))
    mask = torch.empty_like(x).bernoulli_(gamma)
    mask = tF.max_pool2d(mask, kernel_size=size, stride=1, padding=size // 2)
    if size % 2 == 0:
        mask = mask[:, :, :-1, :-1]
    mask = 1 - mask
    scale = mask.numel() / (1e-7 + mask.sum(dtype=torch.float32))
    return x * mask * scale.to(x.dtype)


def locked_baseline(x: torch.Tensor, p: float) -> torch.Tensor:  # (T, N, F), AWD-LSTM
    mask = x.new_empty((1, x.shape[1], x.shape[2])).bernoulli_(1 - p)
    return x * mask.div_(1 - p)


def gaussian_baseline(x: torch.Tensor, p: float) -> torch.Tensor:
    return x * (1 + math.sqrt(p / (1 - p)) * torch.randn_like(x))


def concrete_baseline(x: torch.Tensor, p_logit: torch.Tensor, t: float = 0.1) -> torch.Tensor:
    eps = 1e-7
    p = torch.sigmoid(p_logit)
    u = torch.rand_like(x)
    z = torch.log(p + eps) - torch.log(1 - p + eps) + torch.log(u + eps) - torch.log(1 - u + eps)
    return x * (1 - torch.sigmoid(z / t)) / (1 - p)


def embedding_baseline(words: torch.Tensor, weight: torch.Tensor, p: float) -> torch.Tensor:
    mask = weight.new_empty((weight.shape[0], 1)).bernoulli_(1 - p) / (1 - p)
    return tF.embedding(words, mask * weight)


class Case:
    """One variant at one shape: ``ours()`` and ``base()`` run a forward (closures over the
    inputs), ``grads`` are the tensors whose gradients forward+backward asks for."""

    def __init__(self, ours, base, out_like, grads):
        self.ours, self.base, self.out_like, self.grads = ours, base, out_like, grads


def _x(shape, dtype, device):
    return torch.randn(shape, device=device).to(dtype).requires_grad_(True)


def _module_case(ours: nn.Module, base: Callable, shape, dtype, device) -> Case:
    x = _x(shape, dtype, device)
    ours.train()
    return Case(lambda: ours(x), lambda: base(x), x, [x])


def _simple(make_ours, make_base):
    def build(shape, dtype, device):
        return _module_case(make_ours(), make_base(), shape, dtype, device)

    return build


def _dropconnect(shape, dtype, device):
    (out_f, in_f), batch = shape, 32
    ours = dkn.DropConnectLinear(in_f, out_f, P).to(device, dtype).train()
    weight, bias = ours.weight, ours.bias
    x = _x((batch, in_f), dtype, device)
    return Case(
        lambda: ours(x),
        lambda: tF.linear(x, tF.dropout(weight, P), bias),
        x,
        [x, weight],
    )


def _embedding(shape, dtype, device):
    vocab, dim = shape
    emb = nn.Embedding(vocab, dim).to(device, dtype)
    ours = dkn.EmbeddingDropout(P, emb).train()
    words = torch.randint(0, vocab, (35, 20), device=device)
    return Case(
        lambda: ours(words),
        lambda: embedding_baseline(words, emb.weight, P),
        emb.weight,
        [emb.weight],
    )


def _weight_drop(shape, dtype, device):
    hidden = shape[1]
    lstm = nn.LSTM(hidden, hidden).to(device, dtype)
    ours = dkn.WeightDrop(lstm, "weight_hh_l0", P).train()
    raw = ours.module.weight_hh_l0_raw if hasattr(ours.module, "weight_hh_l0_raw") else None
    x = _x((4, 2, hidden), dtype, device)
    params = dict(ours.module.named_parameters())
    name = next(n for n in params if n.startswith("weight_hh_l0"))
    weight = raw if raw is not None else params[name]

    def base():
        return torch.func.functional_call(lstm, {"weight_hh_l0": tF.dropout(weight, P)}, (x,))[0]

    return Case(lambda: ours(x)[0], base, x, [x, weight])


def _concrete(shape, dtype, device):
    ours = ConcreteDropout(None, input_dim=shape[-1]).to(device, dtype).train()
    x = _x(shape, dtype, device)
    return Case(
        lambda: ours(x),
        lambda: concrete_baseline(x, ours.p_logit),
        x,
        [x, ours.p_logit],
    )


@dataclass(frozen=True)
class Variant:
    name: str
    baseline: str
    layout: str
    shapes: tuple[tuple[int, ...], ...]  # tiny, small, medium, large
    build: Callable


VIT = ((1, 4, 64), (8, 16, 64), (32, 197, 192), (128, 197, 768))
MLP = ((4, 64), (64, 128), (256, 1024), (4096, 4096))
MAPS = ((1, 4, 8, 8), (8, 16, 8, 8), (16, 64, 28, 28), (32, 128, 64, 64))
VARIANTS = [
    Variant("Dropout", "torch.nn.Dropout", "(B, L, D)", VIT,
            _simple(lambda: dkn.Dropout(P), lambda: nn.Dropout(P))),
    Variant("Dropout1d", "torch.nn.Dropout1d", "(N, C, L)",
            ((1, 4, 64), (8, 16, 64), (16, 256, 256), (64, 256, 1024)),
            _simple(lambda: dkn.Dropout1d(P), lambda: nn.Dropout1d(P))),
    Variant("Dropout2d", "torch.nn.Dropout2d", "(N, C, H, W)", MAPS,
            _simple(lambda: dkn.Dropout2d(P), lambda: nn.Dropout2d(P))),
    Variant("Dropout3d", "torch.nn.Dropout3d", "(N, C, D, H, W)",
            ((1, 4, 4, 4, 4), (4, 16, 4, 8, 8), (8, 32, 8, 32, 32), (8, 32, 16, 64, 64)),
            _simple(lambda: dkn.Dropout3d(P), lambda: nn.Dropout3d(P))),
    Variant("AlphaDropout", "torch.nn.AlphaDropout", "(B, F)", MLP,
            _simple(lambda: dkn.AlphaDropout(P), lambda: nn.AlphaDropout(P))),
    Variant("FeatureAlphaDropout", "torch.nn.FeatureAlphaDropout", "(N, C, H, W)", MAPS,
            _simple(lambda: dkn.FeatureAlphaDropout(P), lambda: nn.FeatureAlphaDropout(P))),
    Variant("DropPath", "timm drop_path", "(B, L, D)", VIT,
            _simple(lambda: dkn.DropPath(P), lambda: lambda x: timm_drop_path(x, P))),
    Variant("DropBlock2d", "timm drop_block_fast_2d", "(N, C, H, W)",
            ((1, 4, 8, 8), (8, 16, 8, 8), (16, 64, 28, 28), (32, 128, 32, 32)),
            _simple(lambda: dkn.DropBlock2d(P, 7), lambda: lambda x: timm_drop_block_fast(x, P))),
    Variant("LockedDropout", "x * bernoulli_((1, N, F))", "(T, N, F)",
            ((4, 1, 64), (35, 8, 64), (70, 32, 400), (256, 64, 1024)),
            _simple(lambda: dkn.LockedDropout(P), lambda: lambda x: locked_baseline(x, P))),
    Variant("GaussianDropout", "x * (1 + σ randn_like(x))", "(B, F)", MLP,
            _simple(lambda: dkn.GaussianDropout(P), lambda: lambda x: gaussian_baseline(x, P))),
    Variant("ConcreteDropout", "Gal's concrete formula", "(B, F)", MLP, _concrete),
    Variant("DropConnectLinear", "linear(x, dropout(W))", "W (out, in), batch 32",
            ((16, 16), (64, 128), (1024, 1024), (4096, 4096)), _dropconnect),
    Variant("EmbeddingDropout", "AWD-LSTM embedded_dropout", "W (V, D), words (35, 20)",
            ((16, 16), (128, 64), (10000, 100), (33278, 400)), _embedding),
    Variant("WeightDrop", "functional_call(lstm, dropout(W_hh))", "LSTM W_hh (4H, H), x (4, 2, H)",
            ((32, 8), (256, 64), (2048, 512), (8192, 2048)), _weight_drop),
]  # fmt: skip


# ---------------------------------------------------------------- measuring


def _fwd_bwd(fn: Callable, case: Case, grad_out: list) -> Callable:
    def run():
        y = fn()
        if not grad_out:
            grad_out.append(torch.randn_like(y))
        return torch.autograd.grad(y, case.grads, grad_out[0])

    return run


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def interleaved(a: Callable, b: Callable, repeats: int, device: str) -> tuple[float, float]:
    """Minimum milliseconds per call of ``a`` and ``b``, timed alternately; each sample is a
    loop of enough calls to last about 2 ms, so small calls are not lost in the clock."""
    for fn in (a, b, a, b):
        fn()
    _sync(device)
    start = time.perf_counter()
    a()
    _sync(device)
    loops = max(1, min(200, int(2e-3 / max(time.perf_counter() - start, 1e-6))))
    best = [math.inf, math.inf]
    for _ in range(repeats):
        for i, fn in enumerate((a, b)):
            _sync(device)
            start = time.perf_counter()
            for _ in range(loops):
                out = fn()
            _sync(device)
            best[i] = min(best[i], (time.perf_counter() - start) / loops * 1e3)
            del out
    return best[0], best[1]


def peak_bytes(fn: Callable, device: str) -> int:
    """Peak bytes allocated by one call beyond what was allocated before it."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        out = fn()
        torch.cuda.synchronize()
        del out
        return torch.cuda.max_memory_allocated() - before
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
        del out
    # Each allocation is an op's own (self) memory, each free outside an op a "[memory]"
    # event: their running sum in time order is the allocated level. (NumPy buffers are not
    # seen; dropkit allocates its full-size buffers as torch tensors.)
    events = sorted(
        (e.time_range.start, e.self_cpu_memory_usage)
        for e in prof.events()
        if e.self_cpu_memory_usage
    )
    level = peak = 0
    for _, delta in events:
        level += delta
        peak = max(peak, level)
    return peak


@dataclass
class Result:
    variant: Variant
    size: str
    shape: tuple[int, ...]
    dtype: str
    mode: str
    ours_ms: float
    base_ms: float
    ours_peak: int
    base_peak: int

    @property
    def ratio(self) -> float:
        return self.ours_ms / self.base_ms

    @property
    def memory_ok(self) -> bool:
        return self.ours_peak <= self.base_peak

    @property
    def result(self) -> str:
        return "PASS" if self.ratio <= 1.0 and self.memory_ok else "MISS"


def measure(args: argparse.Namespace) -> list[Result]:
    results = []
    sizes = ("small", "medium") if args.quick else SIZES if args.large else SIZES[:3]
    # Few repeats: the default run (tiny, small, medium; fp32 and bf16) must finish in about
    # 5 minutes on a 2-core machine; every sample is already a loop lasting about 2 ms.
    repeats = {"tiny": 5, "small": 5, "medium": 3, "large": 2}
    for variant in VARIANTS:
        if args.only and variant.name not in args.only:
            continue
        for size in sizes:
            shape = variant.shapes[SIZES.index(size)]
            for dtype in args.dtypes:
                torch.manual_seed(0)
                try:
                    case = variant.build(shape, DTYPES[dtype], args.device)
                    pairs = {
                        "forward": (case.ours, case.base),
                        "fwd+bwd": (
                            _fwd_bwd(case.ours, case, []),
                            _fwd_bwd(case.base, case, []),
                        ),
                    }
                    for mode, (ours, base) in pairs.items():
                        ours_ms, base_ms = interleaved(ours, base, repeats[size], args.device)
                        peaks = peak_bytes(ours, args.device), peak_bytes(base, args.device)
                        results.append(
                            Result(variant, size, shape, dtype, mode, ours_ms, base_ms, *peaks)
                        )
                        print(
                            f"{variant.name:20s} {size:6s} {dtype} {mode:8s}",
                            f"{results[-1].ratio:6.3f}x",
                            f"peak {peaks[0] >> 10} / {peaks[1] >> 10} KiB",
                            file=sys.stderr,
                        )
                except (RuntimeError, NotImplementedError) as err:  # e.g. a bf16 kernel missing
                    print(f"{variant.name} {size} {dtype}: skipped ({err})", file=sys.stderr)
    return results


# ---------------------------------------------------------------- reporting


def _mib(n: int) -> str:
    return f"{n / 2**20:.3f}" if n < 2**20 else f"{n / 2**20:.1f}"


def table(results: list[Result]) -> str:
    header = [
        "variant", "baseline", "size", "shape", "numel", "dtype", "pass", "dropkit ms",
        "baseline ms", "time ×", "dropkit peak MiB", "baseline peak MiB", "result",
    ]  # fmt: skip
    rows = []
    for r in results:
        rows.append([
            r.variant.name, r.variant.baseline, r.size, "×".join(map(str, r.shape)),
            f"2^{math.log2(math.prod(r.shape)):.1f}", r.dtype, r.mode, fmt_ms(r.ours_ms),
            fmt_ms(r.base_ms), f"{r.ratio:.2f}", _mib(r.ours_peak), _mib(r.base_peak), r.result,
        ])  # fmt: skip
    return markdown_table(header, rows)


def plot(results: list[Result], path: Path) -> None:
    from matplotlib.figure import Figure

    dtypes = sorted({r.dtype for r in results})
    fig = Figure(figsize=(6 * len(dtypes), 9))
    axes = fig.subplots(2, len(dtypes), squeeze=False)
    for col, dtype in enumerate(dtypes):
        for row, mode in enumerate(("forward", "fwd+bwd")):
            ax = axes[row][col]
            for variant in VARIANTS:
                pts = [
                    (math.prod(r.shape), r.ratio)
                    for r in results
                    if r.variant is variant and r.dtype == dtype and r.mode == mode
                ]
                if pts:
                    ax.plot(*zip(*pts, strict=True), marker="o", label=variant.name)
            ax.axhline(1.0, color="black", linewidth=1)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{dtype}, {mode}")
            ax.set_xlabel("elements")
            ax.set_ylabel("dropkit time / baseline time")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def report(results: list[Result], args: argparse.Namespace) -> str:
    passed = sum(r.result == "PASS" for r in results)
    misses = [r for r in results if r.result == "MISS"]
    notes = [
        f"{passed} PASS, {len(misses)} MISS of {len(results)} rows (time ≤ 1.0× and peak memory "
        "≤ the baseline's)",
        f"p = {P}; minimum over interleaved repeats; peak = bytes allocated during one call "
        "beyond its inputs (fwd+bwd: forward, then `torch.autograd.grad`).",
        "The input requires grad in both passes, so 'forward' records the autograd graph (a "
        "dropkit layer is a Python autograd node, torch's a C++ one): without a graph plain "
        "dropout is faster than torch's at every size (see 'CPU dropout at every size').",
        "Small-size ratios, bound by Python per call on both sides, move by tens of percent "
        "between runs on a 2-core machine, and single medium rows can be hit by a "
        "descheduled thread.",
    ]
    if misses:
        notes.append(
            "Misses: "
            + "; ".join(
                f"{r.variant.name} {r.size} {r.dtype} {r.mode} {r.ratio:.2f}×"
                + ("" if r.memory_ok else " (memory)")
                for r in misses
            )
        )
    image = PLOTS[args.device].relative_to(REPO)
    blocks = [table(results), f"![dropkit time / baseline time]({image})"]
    return render_section(
        f"Every variant against the torch code it replaces ({args.device.upper()})",
        environment(args.device),
        command_line(),
        blocks,
        notes,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small and medium sizes only")
    parser.add_argument(
        "--large", action="store_true", help="add the large shapes (about 2^22-2^24 elements)"
    )
    parser.add_argument("--dtypes", default="fp32,bf16", help="comma-separated, e.g. fp32")
    parser.add_argument("--only", default="", help="comma-separated variant names")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md and the plot")
    args = parser.parse_args(argv)
    args.dtypes = [d for d in args.dtypes.split(",") if d]
    args.only = {n for n in args.only.split(",") if n}
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    results = measure(args)
    body = report(results, args)
    print(body)
    print(f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    if args.write:
        plot(results, PLOTS[args.device])
        write_section("variants" if args.device == "cpu" else "variants_cuda", body)


if __name__ == "__main__":
    main()
