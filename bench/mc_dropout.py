"""Monte Carlo dropout: dropkit.mc.predict's strategies against the naive loop and baal.

Two models, fp32, T samples (default 100), classification, ``consistent=False``:

* (a) MLP 784-1024-1024-10 with ``nn.Dropout(0.5)`` after each hidden layer, batch 256;
* (b) a CNN backbone without dropout (4 blocks Conv3x3-BatchNorm-ReLU-MaxPool, 32-64-128-256
  channels, on 3x32x32 images) and a head Dropout(0.5)-Linear(1024, 512)-ReLU-Dropout(0.5)-
  Linear(512, 10), batch 64 on the CPU and 256 on CUDA.

Cases, timed in one run on one device: the naive loop (the users' recipe and the baseline: the
model in MC mode, ``dropkit.mc.mc_mode``, and a Python loop of T forwards under
``torch.no_grad()``, softmax per pass, stacked and averaged); ``dropkit.mc.predict`` with
``strategy="loop"``, ``"batched"``, ``"prefix"`` and ``"auto"`` on the model after
``dropkit.convert`` (torch dropout modules become ``dropkit.nn`` ones), and ``"auto"`` on the
unconverted torch model (information); baal, when installed: ``MCDropoutModule`` with
``ModelWrapper.predict_on_batch(x, iterations=T)`` replicating the batch in memory (its default),
the same with ``replicate_in_memory=False`` (a loop) and ``MCCachingModule`` with that loop.
Before timing, ``consistent=True`` with a fixed seed must give the same samples by loop,
batched and prefix (``torch.allclose``; the largest difference is printed).

``--real``: five models nobody here wrote (Hugging Face BERT, GPT-2 and ViT from tiny configs,
an ``nn.TransformerEncoder`` model and an ``nn.LSTM(dropout=0.3)`` model), batch 16, T = 50,
dropkit ``auto`` against baal's default with a z-test of the means (``bench/_mc_real.py``).

Targets (GPU): ``auto`` ≥ 8× faster than the naive loop on (b) and ≥ 5× on (a); ≥ 1.5× faster
than baal's ``predict_on_batch`` on (b). On the CPU they are printed as information. Usage:
``.venv/bin/python bench/mc_dropout.py [--device cpu|cuda] [--samples T] [--repeats R]
[--write]``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib
import importlib.metadata
import re
import sys
from collections.abc import Callable

import torch
from _harness import (
    Row,
    RowGroup,
    Target,
    Timing,
    command_line,
    environment,
    markdown_table,
    noise_note,
    render_section,
    summary,
    time_cpu,
    time_cuda,
    timing_table,
    write_section,
)
from torch import nn

import dropkit
from dropkit import mc
from dropkit.mc.result import summarize

SEED = 20240601
CHECK_SAMPLES = 16
BASELINE = "naive loop"
SUMMARIES = "dropkit summaries alone, summarize() on (T, N, C) (info)"
BAAL_REPLICATE = "baal predict_on_batch, replicate_in_memory=True (baal's default)"


@dataclasses.dataclass(frozen=True)
class FasterThanBaseline(Target):
    """A target on a row's speed-up over its group's baseline: baseline time / row time ≥
    ``value``. ``Row.result`` passes it the row's ratio (row time / baseline time)."""

    def met(self, measured: float) -> bool:
        return measured > 0 and 1.0 / measured >= self.value

    def text(self, baseline: str) -> str:
        return f"≥ {self.value:g}× faster than {baseline}"


@dataclasses.dataclass(frozen=True)
class GpuTargetRow(Row):
    """A row of a CPU run: its target is stated for the GPU, so the result is information."""

    @property
    def result(self) -> str:
        measured = super().result
        if measured in ("PASS", "MISS"):
            return f"target is for GPU (here: {'met' if measured == 'PASS' else 'not met'})"
        return measured


#: (model, case) -> target; the case names are those of measure().
TARGETS = {
    ("(a) MLP", "dropkit predict, strategy='auto'"): FasterThanBaseline("ratio", ">=", 5.0),
    ("(b) CNN", "dropkit predict, strategy='auto'"): FasterThanBaseline("ratio", ">=", 8.0),
    ("(b) CNN", BAAL_REPLICATE): Target("speedup", ">=", 1.5),
}


# ---------------------------------------------------------------- models


def mlp() -> nn.Module:
    """(a): 784-1024-1024-10, Dropout(0.5) after each hidden layer."""
    return nn.Sequential(
        nn.Linear(784, 1024),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(1024, 1024),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(1024, 10),
    )


def cnn(widths: tuple[int, ...] = (32, 64, 128, 256)) -> nn.Module:
    """(b): a backbone without dropout (Conv3x3-BN-ReLU-MaxPool blocks, 32x32 -> 2x2) and a
    head Dropout(0.5)-Linear-ReLU-Dropout(0.5)-Linear. ReLUs are not in place (baal's cache
    keeps a reference to each cached output)."""
    layers: list[nn.Module] = []
    c = 3
    for w in widths:
        layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2)]
        c = w
    side = 32 >> len(widths)
    head = [
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(c * side * side, 512),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(512, 10),
    ]
    return nn.Sequential(*layers, *head)


def _randomise_batchnorm(model: nn.Module, generator: torch.Generator) -> None:
    """Non-trivial running statistics and affine parameters, as after training."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=generator) * 0.1)


def build(name: str, device: str, cnn_batch: int) -> tuple[nn.Module, torch.Tensor]:
    """The model (eval mode, on ``device``) and its input batch, from a fixed seed."""
    g = torch.Generator().manual_seed(SEED)
    torch.manual_seed(SEED)
    if name == "mlp":
        model, x = mlp(), torch.randn(256, 784, generator=g)
    else:
        model, x = cnn(), torch.randn(cnn_batch, 3, 32, 32, generator=g)
        _randomise_batchnorm(model, g)
    return model.eval().to(device), x.to(device)


# ---------------------------------------------------------------- cases


def naive_loop(model: nn.Module, x: torch.Tensor, samples: int) -> tuple:
    """The users' recipe: only dropout in train mode, T forwards, softmax, stack, mean."""
    with mc.mc_mode(model), torch.no_grad():
        probs = torch.stack([model(x).softmax(-1) for _ in range(samples)])
    return probs.mean(0), probs


def dropkit_case(model, x, samples, strategy, chunk_size, ran: dict) -> Callable[[], object]:
    def run():
        result = mc.predict(
            model,
            x,
            samples,
            task="classification",
            strategy=strategy,
            consistent=False,
            chunk_size=chunk_size,
        )
        ran[strategy] = result.strategy
        return result

    return run


def baal_version() -> str | None:
    """baal's version when the modules this script uses import, else None."""
    try:
        for module in ("baal.bayesian.caching_utils", "baal.bayesian.dropout", "baal.modelwrapper"):
            importlib.import_module(module)
    except ImportError:
        return None
    try:
        return importlib.metadata.version("baal")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def baal_cases(model: nn.Module, x: torch.Tensor, samples: int, device: str) -> dict:
    """baal's MC wrapper on a copy of ``model`` (its patching is in place): name -> callable."""
    from baal.bayesian.caching_utils import LRUCacheModule, MCCachingModule
    from baal.bayesian.dropout import MCDropoutModule
    from baal.modelwrapper import ModelWrapper, TrainingArgs

    use_cuda = device == "cuda"
    mc_model = MCDropoutModule(copy.deepcopy(model)).eval()
    replicate = ModelWrapper(mc_model, TrainingArgs(use_cuda=use_cuda, replicate_in_memory=True))
    looped = ModelWrapper(mc_model, TrainingArgs(use_cuda=use_cuda, replicate_in_memory=False))
    cached_model = MCCachingModule(MCDropoutModule(copy.deepcopy(model))).eval()
    cached = ModelWrapper(cached_model, TrainingArgs(use_cuda=use_cuda, replicate_in_memory=False))
    caches = [m for m in cached_model.modules() if isinstance(m, LRUCacheModule)]

    def run_cached():
        # A fresh batch for every call: the cache of the previous call must not be hit.
        for m in caches:
            m._memory_input = m._memory_output = None
        return cached.predict_on_batch(x, iterations=samples)

    return {
        BAAL_REPLICATE: lambda: replicate.predict_on_batch(x, iterations=samples),
        "baal predict_on_batch, replicate_in_memory=False (loop)": lambda: looped.predict_on_batch(
            x, iterations=samples
        ),
        "baal MCCachingModule + loop (caches Linear/Conv2d outputs)": run_cached,
    }


# ---------------------------------------------------------------- checks


@dataclasses.dataclass
class CheckResult:
    model: str
    samples: int
    max_diff: dict[str, float]
    ran: dict[str, str]


def check_consistent(label: str, model: nn.Module, x: torch.Tensor, samples: int) -> CheckResult:
    """consistent=True with a fixed seed: loop, batched, prefix and auto give the same samples
    (true fp32: TF32 is switched off while checking). Also checks that prefix really ran as
    prefix and auto as prefix (both models have a deterministic part before the first
    dropout)."""
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        results = {
            s: mc.predict(model, x, samples, strategy=s, seed=SEED, consistent=True)
            for s in ("loop", "batched", "prefix", "auto")
        }
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
    ran = {s: r.strategy for s, r in results.items()}
    for s in ("loop", "batched", "prefix"):
        if ran[s] != s:
            raise AssertionError(f"{label}: strategy={s!r} ran as {ran[s]!r}")
    if ran["auto"] != "prefix":
        raise AssertionError(f"{label}: strategy='auto' ran as {ran['auto']!r}, not prefix")
    ref = results["loop"].samples
    if not bool((ref.std(0) > 0).any()):
        raise AssertionError(f"{label}: the loop's samples do not vary: dropout is not sampled")
    diffs = {}
    for s in ("batched", "prefix", "auto"):
        other = results[s].samples
        diffs[s] = (other - ref).abs().max().item()
        if not torch.allclose(other, ref, rtol=1e-4, atol=1e-6):
            raise AssertionError(
                f"{label}: consistent=True samples differ between loop and {s}: "
                f"max |difference| = {diffs[s]:.3g}"
            )
    return CheckResult(label, samples, diffs, ran)


def check_varies(label: str, case: str, out: object) -> None:
    """The case's T outputs must differ (dropout on): probs (T, N, C) or baal's (N, C, T)."""
    if isinstance(out, mc.MCResult):
        stacked, dim = out.samples, 0
    elif isinstance(out, tuple):  # naive loop: (mean, probs)
        stacked, dim = out[1], 0
    else:  # baal: logits (N, C, T)
        stacked, dim = out, -1
    if not bool((stacked.std(dim) > 0).any()):
        raise AssertionError(f"{label} / {case}: the {stacked.shape} samples do not vary")


# ---------------------------------------------------------------- measuring


def make_timer(args) -> Callable[[Callable[[], object]], Timing]:
    if args.device == "cuda" and args.timer == "events":
        return lambda fn: time_cuda(fn, warmup=args.warmup, repeats=args.repeats)
    if args.device == "cuda":

        def synced(fn):
            def run():
                out = fn()
                torch.cuda.synchronize()
                return out

            return run

        def wall(fn):
            torch.cuda.synchronize()
            return time_cpu(synced(fn), warmup=args.warmup, repeats=args.repeats)

        return wall
    return lambda fn: time_cpu(fn, warmup=args.warmup, repeats=args.repeats)


def measure(args, name: str, time_it, baal: bool) -> tuple[list[Row], CheckResult, dict]:
    """Check, then time every case of one model. Returns the rows, the check, and notes."""
    label = "(a) MLP" if name == "mlp" else "(b) CNN"
    model, x = build(name, args.device, args.cnn_batch)
    converted, report = dropkit.convert(model, inplace=False)
    t = args.samples
    check = check_consistent(label, converted, x, min(t, CHECK_SAMPLES))
    print(
        f"{label}: consistent=True, seed {SEED}, T = {check.samples}: max |loop - s| "
        + ", ".join(f"{s} {d:.3g}" for s, d in check.max_diff.items())
        + " (torch.allclose: OK)",
        file=sys.stderr,
    )

    def timed(case: str, fn: Callable[[], object]) -> Timing:
        check_varies(label, case, fn())
        print(f"{label}: timing {case} ...", file=sys.stderr, flush=True)
        timing = time_it(fn)
        if args.device == "cuda":
            torch.cuda.empty_cache()
        return timing

    def target(case: str) -> Target | None:
        return TARGETS.get((label, case))

    group = RowGroup(
        label, "fp32", BASELINE, timed(BASELINE, lambda: naive_loop(model, x, t)), BASELINE
    )
    ran: dict[str, str] = {}
    for strategy in ("loop", "batched", "prefix", "auto"):
        case = f"dropkit predict, strategy={strategy!r}"
        fn = dropkit_case(converted, x, t, strategy, args.chunk_size, ran)
        group.add(case, timed(case, fn), target(case), dropkit=strategy == "auto")
    unconverted: dict[str, str] = {}
    case = "dropkit predict, strategy='auto', torch model not converted (info)"
    fn = dropkit_case(model, x, t, "auto", args.chunk_size, unconverted)
    group.add(case, timed(case, fn))
    if baal:
        for case, fn in baal_cases(model, x, t, args.device).items():
            group.add(case, timed(case, fn), target(case), peer=True)
    # What predict's summaries cost (softmax, mean, variance, entropies, MI, variation ratio):
    # dropkit's rows include them, the naive loop only softmax and mean, baal none.
    logits = mc.predict(converted, x, t, strategy="auto").samples.log()
    case = SUMMARIES
    group.add(case, time_it(lambda: summarize(logits, "classification", "auto")))
    info = {
        "ran": ran,
        "ran_unconverted": unconverted.get("auto", "?"),
        "converted": sum(report.counts.values()),
        "batch": x.shape[0],
    }
    return group.rows, check, info


# ---------------------------------------------------------------- report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument(
        "--device", choices=("cuda", "cpu"), default=default_device, help="default: cuda if any"
    )
    parser.add_argument("--samples", type=int, default=100, help="T, MC samples (default 100)")
    parser.add_argument("--repeats", type=int, help="timed repeats (default 5 on CPU, 30 CUDA)")
    parser.add_argument("--warmup", type=int, help="untimed calls first (default 1 CPU, 5 CUDA)")
    parser.add_argument(
        "--models", default="mlp,cnn", help="comma-separated, of mlp (a) and cnn (b)"
    )
    parser.add_argument("--cnn-batch", type=int, help="batch of (b) (default 64 CPU, 256 CUDA)")
    parser.add_argument(
        "--chunk-size", type=int, help="predict's chunk_size for batched/prefix (default: all T)"
    )
    parser.add_argument(
        "--timer",
        choices=("wall", "events"),
        default="wall",
        help="CUDA only: wall = perf_counter around each call ending in a synchronize "
        "(default; host overhead counts), events = the harness's time_cuda (device time)",
    )
    parser.add_argument("--threads", type=int, help="torch and numba threads (default: all)")
    parser.add_argument("--no-baal", action="store_true", help="skip baal even if installed")
    parser.add_argument(
        "--real",
        action="store_true",
        help="instead: BERT, GPT-2, ViT, TransformerEncoder and LSTM models side by side with "
        "baal (batch 16, T = 50, CPU; see bench/_mc_real.py)",
    )
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    parser.add_argument(
        "--section", help="BENCHMARKS.md key (default mc_dropout_cpu / mc_dropout_<GPU name>)"
    )
    args = parser.parse_args(argv)
    cuda = args.device == "cuda"
    args.repeats = args.repeats or (30 if cuda else 5)
    args.warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    args.cnn_batch = args.cnn_batch or (256 if cuda else 64)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in args.models:
        if m not in ("mlp", "cnn"):
            parser.error(f"--models: unknown model {m!r}; choose from mlp, cnn")
    if args.samples < 2:
        parser.error("--samples must be >= 2")
    if args.repeats < 1 or args.warmup < 0 or args.cnn_batch < 1:
        parser.error("--repeats and --cnn-batch must be >= 1, --warmup >= 0")
    if args.chunk_size is not None and args.chunk_size < 1:
        parser.error("--chunk-size must be >= 1")
    return args


def speedup_note(rows: list[Row]) -> str:
    parts = []
    for label in dict.fromkeys(r.group for r in rows):
        group = [r for r in rows if r.group == label and r.ratio and SUMMARIES not in r.case]
        cases = ", ".join(f"{short(r.case)} {1 / r.ratio:.2f}×" for r in group[1:])
        parts.append(f"{label}: {cases}")
    return "Speed-up over the naive loop (its min time / the case's): " + "; ".join(parts) + "."


def short(case: str) -> str:
    case = re.sub(r"dropkit predict, strategy='(\w+)'", r"\1", case).replace(" (info)", "")
    case = case.replace(", torch model not converted", " unconverted")
    case = re.sub(r"^baal predict_on_batch, replicate_in_memory=True.*", "baal replicate", case)
    case = re.sub(r"^baal predict_on_batch, replicate_in_memory=False.*", "baal loop", case)
    return re.sub(r"^baal MCCachingModule.*", "baal cache + loop", case)


def check_table(checks: list[CheckResult]) -> str:
    header = ["model", "T", "ran as (loop, batched, prefix, auto)", "max abs diff: batched"]
    header += ["prefix", "auto (each against loop)", "torch.allclose"]
    body = [
        [
            c.model,
            str(c.samples),
            ", ".join(c.ran[s] for s in ("loop", "batched", "prefix", "auto")),
            *(f"{c.max_diff[s]:.3g}" for s in ("batched", "prefix", "auto")),
            "OK (rtol 1e-4, atol 1e-6)",
        ]
        for c in checks
    ]
    return markdown_table(header, body)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"skipped: CUDA is not available (torch {torch.__version__})")
        return 0
    if args.threads:
        import numba

        torch.set_num_threads(args.threads)
        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    if args.real:
        import _mc_real

        return _mc_real.main(args)
    version = None if args.no_baal else baal_version()
    if version is None:
        why = "--no-baal" if args.no_baal else "baal not installed"
        print(f"{why}: skipped", file=sys.stderr)
    time_it = make_timer(args)
    rows: list[Row] = []
    checks: list[CheckResult] = []
    infos: dict[str, dict] = {}
    for name in args.models:
        r, c, info = measure(args, name, time_it, version is not None)
        rows += r
        checks.append(c)
        infos[c.model] = info

    cuda = args.device == "cuda"
    env = environment(args.device)
    env["versions"] += f", baal {version or 'not installed'}"
    if not cuda:
        rows = [
            GpuTargetRow(**{f.name: getattr(r, f.name) for f in dataclasses.fields(r)})
            for r in rows
        ]
    timer_text = (
        "perf_counter around each call, which ends in torch.cuda.synchronize (host time counts)"
        if cuda and args.timer == "wall"
        else "the harness's time_cuda (CUDA events after a flush and a 2 ms spin: device time; "
        "host time hidden behind the spin is not counted)"
        if cuda
        else "time.perf_counter"
    )
    sizes = "; ".join(
        f"{label} batch {info['batch']}, {info['converted']} dropout modules converted, "
        f"dropkit ran as {', '.join(f'{k}→{v}' for k, v in info['ran'].items())}, "
        f"unconverted auto→{info['ran_unconverted']}"
        for label, info in infos.items()
    )
    notes = [
        f"T = {args.samples}, fp32, classification, consistent=False, chunk_size "
        f"{args.chunk_size or 'None (all T)'}; {args.warmup} warm-up calls, {args.repeats} timed "
        f"repeats; {timer_text}; ratios use the minimum times.",
        f"{sizes}.",
        "ratio × = the case's time / the naive loop's, measured in this run. dropkit speed-up × "
        "= the baal case's time / dropkit auto's.",
        "The naive loop puts only dropout in train mode (dropkit.mc.mc_mode; model.train() would "
        "cost the same, but on (b) it would also normalise with batch statistics and update "
        "BatchNorm's running ones) and returns the stacked softmax and its mean. dropkit's rows "
        "return an MCResult with every summary (the summaries-alone row says what they cost); "
        "baal's return the raw logits (N, C, T). dropkit's rows run the model after "
        "dropkit.convert (dropkit.nn.Dropout); the unconverted row runs torch's nn.Dropout.",
        speedup_note(rows),
    ]
    if version is None:
        notes.append("baal not installed: skipped (its rows and the target on it are missing).")
    if cuda:
        notes.append(
            "Targets (GPU): dropkit auto ≥ 8× faster than the naive loop on (b), ≥ 5× on (a), "
            f"≥ 1.5× faster than baal's predict_on_batch on (b). Result: {summary(rows, [])}."
        )
    else:
        notes.append(
            "Targets (auto ≥ 8× the naive loop on (b), ≥ 5× on (a), ≥ 1.5× baal on (b)) are "
            "stated for the GPU, where the loop is launch-bound; on the CPU the forwards are "
            "compute-bound, so only the deterministic part that prefix skips is saved, and the "
            "result column is information."
        )
    if (noise := noise_note(rows)) is not None:
        notes.append(noise)
    if args.samples != 100:
        notes.append(f"This run used T = {args.samples}, not 100.")
    where = env["device"].split(" (")[0] if cuda else "CPU"
    text = render_section(
        f"MC dropout, {where} (T = {args.samples}, fp32)",
        env,
        command_line(),
        [
            timing_table(rows),
            "Consistency check before timing (consistent=True, seed "
            f"{SEED}, converted models, TF32 off):",
            check_table(checks),
        ],
        notes,
    )
    print(text)
    if args.write:
        key = args.section or "mc_dropout_" + re.sub(r"[^a-z0-9]+", "_", where.lower()).strip("_")
        write_section(key, text)
        print(f"updated BENCHMARKS.md section {key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
