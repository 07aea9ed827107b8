"""The NumPy twins of the numba CPU kernels, and the background load that uses them.

Twins: each function of :mod:`dropkit.rng.cpu_numpy` must write the same bits as the numba
kernel of the same name, on random data salted with NaN, infinities, signed zeros, subnormals,
overflowing products and exact half-precision rounding ties, over sizes 1..5000, offsets 0..7
(and one past 2^34, so the counter's high word moves), streams 0 and 3, and thresholds from
"keep all" to "drop almost all"; the Gaussian kernels over noise scales up to one whose noise
overflows to infinity, the half ones on every bit pattern. Loader: checked in fresh interpreters
(the state under test is the first call of a process): small calls during the load (dropout and
Gaussian dropout) are answered by the twins with numba's bits, large calls wait for numba, a fork
during the load gives a working child, a broken numba raises on the next call, and
``DROPKIT_EAGER_KERNELS=1`` loads synchronously.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from dropkit.rng import cpu, cpu_numpy, philox

pytestmark = pytest.mark.skipif(not cpu.AVAILABLE, reason="needs numba")

SIZES = (1, 2, 3, 4, 5, 7, 63, 1023, 1025, 4095, 4096, 4097, 5000)
OFFSETS = (*range(8), (1 << 34) + 5)
STREAMS = (0, 3)
THRESHOLDS = (0, 1, 1 << 31, 0xB3333333, 0xFFFFFFFF)
SEEDS = (0, 42, 0x1E3779B97F4A7C15, 2**63 - 1)  # int64: the seeds the call sites pass


def _cases():
    """(size, offset, stream, seed, threshold): every size x offset x stream, with the seed and
    threshold cycled so each value meets many sizes and offsets."""
    k = 0
    for n in SIZES:
        for offset in OFFSETS:
            for stream in STREAMS:
                yield n, offset, stream, SEEDS[k % len(SEEDS)], THRESHOLDS[k % len(THRESHOLDS)]
                k += 1


def _floats(rng: np.random.Generator, n: int, dtype) -> np.ndarray:
    """Normal values with every kind of special value mixed in at random places."""
    info = np.finfo(dtype)
    x = rng.standard_normal(n).astype(dtype) * dtype(rng.choice([1e-3, 1.0, 1e3]))
    specials = np.array(
        [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, info.max, -info.max, info.tiny,
         info.smallest_subnormal, -info.smallest_subnormal, info.tiny / 3, info.max / 1.5],
        dtype=dtype,
    )  # fmt: skip
    where = rng.random(n) < 0.2
    x[where] = rng.choice(specials, where.sum())
    return x


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.tobytes() == b.tobytes()


def _both(name: str, *args, out_index: int, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run the numba kernel and its twin on fresh copies of ``out`` (pre-filled with junk, so an
    unwritten element shows); return both outputs."""
    outs = []
    for module in (cpu, cpu_numpy):
        o = out.copy()
        call = list(args)
        call.insert(out_index, o)
        getattr(module, name)(*call)
        outs.append(o)
    return outs[0], outs[1]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_masked_scale_twin(dtype):
    rng = np.random.default_rng(1)
    for n, offset, stream, seed, thr in _cases():
        x = _floats(rng, n, dtype)
        junk = rng.standard_normal(n).astype(dtype)
        for scale in (2.0, 1 / 0.7, 1e30):  # 1e30: overflow to inf in float32
            a, b = _both("masked_scale_kernel", x, seed, offset, stream, thr, scale,
                         out_index=1, out=junk)  # fmt: skip
            assert _same_bits(a, b), (n, offset, stream, scale)
        # In place (out is x), as an inplace dropout calls it.
        xa, xb = x.copy(), x.copy()
        cpu.masked_scale_kernel(xa, xa, seed, offset, stream, thr, 1.25)
        cpu_numpy.masked_scale_kernel(xb, xb, seed, offset, stream, thr, 1.25)
        assert _same_bits(xa, xb), (n, offset, stream)


#: Scales for the half kernel: ordinary rates, products exactly halfway between two bfloat16
#: (1 + 2^-8) or float16 (1 + 2^-11) neighbours of an odd significand (ties to even), a shrink
#: into the float16 subnormals and zero, and a growth past the largest finite half.
HALF_SCALES = (1 / 0.9, 1 / 0.7, 1 + 2**-8, 1 + 2**-11, 2**-10, 2**-20, 2**10, 3.0)


def _assert_same_half_bits(x: np.ndarray, a: np.ndarray, b: np.ndarray, context) -> None:
    """``a`` and ``b`` (uint16 bits) equal everywhere; else name the first inputs that differ."""
    bad = np.flatnonzero(a != b)
    assert bad.size == 0, (context, [(hex(x[i]), hex(a[i]), hex(b[i])) for i in bad[:5]])


@pytest.mark.parametrize("is_bf16", [True, False], ids=["bfloat16", "float16"])
def test_masked_scale_half_twin_every_bit_pattern(is_bf16):
    x = np.arange(2**16, dtype=np.uint32).astype(np.uint16)  # all 65536 values, NaNs included
    junk = np.full(x.size, 0x1234, np.uint16)
    for scale in HALF_SCALES:
        for thr in (0, 1 << 31):
            a, b = _both("masked_scale_half_kernel", x, 77, 5, 3, thr, scale, is_bf16,
                         out_index=1, out=junk)  # fmt: skip
            _assert_same_half_bits(x, a, b, (scale, thr))


@pytest.mark.parametrize("is_bf16", [True, False], ids=["bfloat16", "float16"])
def test_masked_scale_half_twin(is_bf16):
    rng = np.random.default_rng(2)
    for k, (n, offset, stream, seed, thr) in enumerate(_cases()):
        x = rng.integers(0, 2**16, n, dtype=np.uint16)
        junk = rng.integers(0, 2**16, n, dtype=np.uint16)
        scale = HALF_SCALES[k % len(HALF_SCALES)]
        a, b = _both("masked_scale_half_kernel", x, seed, offset, stream, thr, scale, is_bf16,
                     out_index=1, out=junk)  # fmt: skip
        assert _same_bits(a, b), (n, offset, stream, scale)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_alpha_affine_twin(dtype):
    from dropkit.functional.alpha import ALPHA_PRIME, alpha_dropout_affine

    rng = np.random.default_rng(3)
    for k, (n, offset, stream, seed, thr) in enumerate(_cases()):
        x = _floats(rng, n, dtype)
        junk = rng.standard_normal(n).astype(dtype)
        if k % 2:
            a_, b_ = alpha_dropout_affine([0.1, 0.5, 0.9][k % 3])
            fill = ALPHA_PRIME
        else:  # arbitrary values, so that both roundings (product, then sum) matter
            a_, b_, fill = (float(v) for v in rng.standard_normal(3) * 3)
        a, b = _both("alpha_affine_kernel", x, seed, offset, stream, thr, fill, a_, b_,
                     out_index=1, out=junk)  # fmt: skip
        assert _same_bits(a, b), (n, offset, stream)


@pytest.mark.parametrize("is_bf16", [True, False], ids=["bfloat16", "float16"])
def test_alpha_affine_half_every_bit_pattern_equals_torch(is_bf16):
    """Both kernels give the bits of torch's where(keep, x, alpha').mul_(a).add_(b) on a
    bfloat16/float16 tensor, for every one of the 65536 values (infinities and subnormals
    included; a NaN gives a NaN, its payload left open as by IEEE), at several rates."""
    import torch

    from dropkit.functional.alpha import ALPHA_PRIME, alpha_dropout_affine
    from dropkit.rng.philox import keep_threshold, random_words

    dtype = torch.bfloat16 if is_bf16 else torch.float16
    bits = torch.arange(2**16, dtype=torch.int32).to(torch.int16)
    x = bits.view(dtype)
    fill_t = torch.tensor(ALPHA_PRIME, dtype=dtype)
    fill = int(fill_t.view(torch.int16).item()) & 0xFFFF
    junk = np.full(x.numel(), 0x1234, np.uint16)
    for p in (0.1, 0.5, 0.9):
        a, b = alpha_dropout_affine(p)
        keep = torch.from_numpy(random_words(77, 5, x.numel()) >= keep_threshold(p))
        expected = torch.where(keep, x, fill_t).mul_(a).add_(b)
        nan = expected.isnan().numpy()
        b_half = float(torch.tensor(b, dtype=dtype))
        got, twin = _both(
            "alpha_affine_half_kernel", bits.numpy().view(np.uint16), 77, 5, 0,
            keep_threshold(p), fill, a, b_half, is_bf16, out_index=1, out=junk,
        )  # fmt: skip
        for out in (got, twin):
            values = torch.from_numpy(out.view(np.int16)).view(dtype)
            assert np.array_equal(values.isnan().numpy(), nan), p
            same = out.view(np.int16) == expected.view(torch.int16).numpy()
            assert bool(same[~nan].all()), p


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16, np.int64])
def test_scaled_keep_twin(dtype):
    values = {np.float32: 1 / 0.7, np.float64: 1 / 0.7, np.uint16: 0x3FB7, np.int64: 3}
    for n, offset, stream, seed, thr in _cases():
        junk = np.full(n, 9, dtype)
        value = values[dtype]
        if dtype in (np.float32, np.float64):
            value = float(dtype(value))  # the call sites pass the value already in the dtype
        a, b = _both("scaled_keep_kernel", seed, offset, stream, thr, value,
                     out_index=0, out=junk)  # fmt: skip
        assert _same_bits(a, b), (n, offset, stream)


def test_words_twin():
    for n, offset, stream, seed, _ in _cases():
        junk = np.full(n, 7, np.uint32)
        a, b = _both("words_kernel", seed, offset, stream, out_index=0, out=junk)
        assert _same_bits(a, b), (n, offset, stream)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bias_dropout_add_twin(dtype):
    """Same bits, except which NaN an add returns when both of its operands are NaN: IEEE 754
    leaves that open, and the compiled kernel's vector loop and scalar loop answer differently
    (LLVM commutes the add in one of them), so no twin can follow it from the formula. There
    the twin gives a NaN too; everywhere else, and for every mask decision, the bits agree."""
    rng = np.random.default_rng(5)
    seen_two_nans = 0
    for k, (n, offset, stream, seed, thr) in enumerate(_cases()):
        h = (1, 3, 8, n)[k % 4]
        x, res = _floats(rng, n, dtype), _floats(rng, n, dtype)
        bias = _floats(rng, h, dtype)
        junk = rng.standard_normal(n).astype(dtype)
        scale = (1 / 0.7, 2.0, 1e300)[k % 3]
        a, b = _both("bias_dropout_add_kernel", x, bias, res, seed, offset, stream, thr, scale,
                     out_index=3, out=junk)  # fmt: skip
        tiled = bias[np.arange(n) % h]
        with np.errstate(all="ignore"):
            inner = (x + tiled) * dtype(scale)
        keep = philox.random_words(seed, offset, n, stream=stream) >= thr
        two_nans = keep & ((np.isnan(x) & np.isnan(tiled)) | (np.isnan(res) & np.isnan(inner)))
        assert np.isnan(a[two_nans]).all()
        assert np.isnan(b[two_nans]).all()
        a[two_nans] = b[two_nans] = 0
        assert _same_bits(a, b), (n, h, offset, stream)
        seen_two_nans += int(two_nans.sum())
    assert seen_two_nans  # the exception above is exercised, not vacuous


#: Noise scales sqrt(p / (1 - p)) for the Gaussian kernels: ordinary rates, a rate near 1, and
#: one whose noise overflows float32 and the half types to infinity (x * inf: inf, or NaN at 0).
SIGMAS = (1 / 3, 1.0, 3.0, 1e3, 1e40)


def test_normal_twin():
    for n, offset, stream, seed, _ in _cases():
        a, b = _both("normal_kernel", seed, offset, stream, out_index=0, out=np.full(n, 7.0))
        assert _same_bits(a, b), (n, offset, stream)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gaussian_twin(dtype):
    rng = np.random.default_rng(6)
    for k, (n, offset, stream, seed, _) in enumerate(_cases()):
        x = _floats(rng, n, dtype)
        junk = rng.standard_normal(n).astype(dtype)
        sigma = SIGMAS[k % len(SIGMAS)]
        a, b = _both("gaussian_kernel", x, seed, offset, stream, sigma, out_index=1, out=junk)
        assert _same_bits(a, b), (n, offset, stream, sigma)
        xa, xb = x.copy(), x.copy()  # in place (out is x)
        cpu.gaussian_kernel(xa, xa, seed, offset, stream, sigma)
        cpu_numpy.gaussian_kernel(xb, xb, seed, offset, stream, sigma)
        assert _same_bits(xa, xb), (n, offset, stream, sigma)


@pytest.mark.parametrize("is_bf16", [True, False], ids=["bfloat16", "float16"])
def test_gaussian_half_twin_every_bit_pattern(is_bf16):
    x = np.arange(2**16, dtype=np.uint32).astype(np.uint16)  # all 65536 values, NaNs included
    junk = np.full(x.size, 0x1234, np.uint16)
    for sigma in SIGMAS:
        for offset in (0, 3):
            a, b = _both("gaussian_half_kernel", x, 77, offset, 3, sigma, is_bf16,
                         out_index=1, out=junk)  # fmt: skip
            _assert_same_half_bits(x, a, b, (sigma, offset))


@pytest.mark.parametrize("is_bf16", [True, False], ids=["bfloat16", "float16"])
def test_gaussian_half_twin(is_bf16):
    rng = np.random.default_rng(7)
    for k, (n, offset, stream, seed, _) in enumerate(_cases()):
        x = rng.integers(0, 2**16, n, dtype=np.uint16)
        junk = rng.integers(0, 2**16, n, dtype=np.uint16)
        sigma = SIGMAS[k % len(SIGMAS)]
        a, b = _both("gaussian_half_kernel", x, seed, offset, stream, sigma, is_bf16,
                     out_index=1, out=junk)  # fmt: skip
        assert _same_bits(a, b), (n, offset, stream, sigma)


def test_twins_write_nothing_for_empty_arrays():
    e = np.empty(0, np.float32)
    cpu_numpy.masked_scale_kernel(e, e, 1, 0, 0, 1 << 31, 2.0)
    cpu_numpy.words_kernel(np.empty(0, np.uint32), 1, 0, 0)
    cpu_numpy.bias_dropout_add_kernel(e, e, e, e, 1, 0, 0, 1 << 31, 2.0)
    cpu_numpy.normal_kernel(np.empty(0), 1, 3, 0)
    cpu_numpy.gaussian_kernel(e, e, 1, 3, 0, 0.5)
    h = np.empty(0, np.uint16)
    cpu_numpy.gaussian_half_kernel(h, h, 1, 3, 0, 0.5, True)
    assert e.size == 0


# ----------------------------------------------------------------------------- the loader


def _run(body: str, prelude: str = "", **env: str) -> str:
    """Run ``script`` in a fresh interpreter (the background load starts at its first dropout
    call); return stdout, failing the test with stderr if it exits non-zero."""
    environ = {k: v for k, v in os.environ.items() if k != "DROPKIT_EAGER_KERNELS"}
    environ.update(env)
    done = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(body)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


#: Records which implementation answered each kernel call, by wrapping the twins' module.
PRELUDE = """
import os, sys
import numpy as np
import torch
import dropkit.functional as F
from dropkit.rng import cpu_numpy, kernels, philox

twin_calls = []
_twin = cpu_numpy.masked_scale_kernel
def _recording(x, *args):
    twin_calls.append(x.size)
    return _twin(x, *args)
cpu_numpy.masked_scale_kernel = _recording

def reference(x, seed, p=0.5):
    keep = philox.random_words(seed, 0, x.numel()) >= philox.keep_threshold(p)
    return torch.where(torch.from_numpy(keep), x * (1 / (1 - p)), 0.0)
"""


def test_first_call_is_answered_by_the_twin_with_numbas_bits():
    out = _run(
        """
        assert "numba" not in sys.modules
        x = torch.randn(1024)
        first = F.dropout(x, 0.5, seed=11)
        assert twin_calls == [1024], twin_calls      # answered by NumPy while numba loads
        assert kernels._loader.is_alive()
        kernels._loader.join()
        assert "numba" in sys.modules and kernels.cpu_kernels() is sys.modules["dropkit.rng.cpu"]
        again = F.dropout(x, 0.5, seed=11)           # now numba, in the same process
        assert twin_calls == [1024], twin_calls
        assert torch.equal(first.view(torch.int32), again.view(torch.int32))
        assert torch.equal(first, reference(x, 11))
        print("ok")
        """,
        PRELUDE,
    )
    assert out.strip().endswith("ok")


def test_first_gaussian_call_is_answered_by_the_twin_with_numbas_bits():
    out = _run(
        """
        calls = []
        _gauss = cpu_numpy.gaussian_kernel
        def _recording_gauss(x, *args):
            calls.append(x.size)
            return _gauss(x, *args)
        cpu_numpy.gaussian_kernel = _recording_gauss
        x = torch.randn(1000)
        first = F.gaussian_dropout(x, 0.3, seed=11, offset=1)
        assert calls == [1000], calls               # answered by NumPy while numba loads
        kernels._loader.join()
        again = F.gaussian_dropout(x, 0.3, seed=11, offset=1)
        assert calls == [1000], calls               # now numba
        assert torch.equal(first.view(torch.int32), again.view(torch.int32))
        print("ok")
        """,
        PRELUDE,
    )
    assert out.strip().endswith("ok")


def test_large_call_during_load_waits_for_numba():
    out = _run(
        """
        F.dropout(torch.ones(16), 0.5, seed=1)      # starts the load
        assert kernels._loader.is_alive()
        x = torch.randn(1 << 17)
        y = F.dropout(x, 0.5, seed=12)
        assert twin_calls == [16], twin_calls        # the large call did not use the twin
        assert kernels._cpu is not None and not kernels._loader.is_alive()
        assert torch.equal(y, reference(x, 12))
        print("ok")
        """,
        PRELUDE,
    )
    assert out.strip().endswith("ok")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_during_load_gives_a_working_child():
    out = _run(
        """
        x = torch.randn(1 << 17)
        F.dropout(x[:8], 0.5, seed=1)                # starts the load
        loading = kernels._loader.is_alive()
        pid = os.fork()
        if pid == 0:
            ok = kernels._cpu is not None            # the hook joined the loader first
            ok = ok and torch.equal(F.dropout(x, 0.5, seed=13), reference(x, 13))
            ok = ok and torch.equal(F.dropout(x[:100], 0.5, seed=14), reference(x[:100], 14))
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        print("loading at fork:", loading, "child status:", status)
        """,
        PRELUDE,
    )
    assert "loading at fork: True child status: 0" in out


def test_eager_environment_variable_loads_synchronously():
    script = """
        assert "numba" not in sys.modules
        x = torch.randn(1024)
        y = F.dropout(x, 0.5, seed=15)
        print("numba loaded:", "numba" in sys.modules, "loader:", kernels._loader is not None,
              "twin calls:", len(twin_calls), "equal:", torch.equal(y, reference(x, 15)))
        """
    eager = _run(script, PRELUDE, DROPKIT_EAGER_KERNELS="1")
    assert "numba loaded: True loader: False twin calls: 0 equal: True" in eager
    # The contrast: without the variable the same call leaves numba to the loader thread.
    assert "loader: True twin calls: 1 equal: True" in _run(script, PRELUDE)


def test_loader_never_compiles_so_the_callers_warning_filters_stay(tmp_path):
    """With an empty kernel cache (a fresh install) the loader thread loads nothing and enters
    no ``warnings.catch_warnings`` (numba's compiler enters it thousands of times per kernel,
    swapping the process-wide filters under the caller's thread); the kernels compile on their
    first call, in the caller, and give the reference bits. A second process loads them from
    the cache on the loader thread; numba's target set-up then imports SciPy (where installed),
    whose import enters the context once, against thousands for a compile."""
    body = """
        import threading, warnings
        entered = []
        _enter = warnings.catch_warnings.__enter__
        def _counting(self):
            entered.append(threading.current_thread().name)
            return _enter(self)
        warnings.catch_warnings.__enter__ = _counting
        F.dropout(torch.ones(16), 0.5, seed=1)      # starts the load
        kernels._loader.join()
        from dropkit.rng import cpu
        loaded = sum(len(d.overloads) for d in (cpu.masked_scale_f32_at, cpu._masked_scale_serial))
        in_loader = entered.count("dropkit-numba-load")
        x = torch.randn(1000)
        y = F.dropout(x, 0.5, seed=12)
        print("loaded:", loaded, "loader entered:", in_loader, "equal:",
              torch.equal(y, reference(x, 12)), "scipy:", "scipy" in sys.modules)
        """
    cold = _run(body, PRELUDE, NUMBA_CACHE_DIR=str(tmp_path))
    assert "loaded: 0 loader entered: 0 equal: True" in cold, cold
    assert any(tmp_path.rglob("*.nbi"))  # the caller's compile filled the cache
    warm = _run(body, PRELUDE, NUMBA_CACHE_DIR=str(tmp_path))
    loaded, entered = (int(warm.split(key)[1].split()[0]) for key in ("loaded:", "entered:"))
    assert loaded == 2, warm
    assert entered <= ("scipy: True" in warm), warm
    assert "equal: True" in warm, warm


BROKEN = """
import sys, torch
import dropkit.functional as F
from dropkit.rng import kernels
x = torch.ones(64)
try:
    F.dropout(x, 0.5, seed=1)      # may be answered by the twin or already see the failure
except RuntimeError:
    pass
if kernels._loader is not None:
    kernels._loader.join()
for _ in range(2):                  # reported on the next call, and again by the retry after it
    try:
        F.dropout(x, 0.5, seed=1)
    except Exception as exc:
        print("raised:", type(exc).__name__, exc)
    else:
        print("no error")
"""


@pytest.mark.parametrize("eager", ["0", "1"])
def test_broken_numba_raises_the_import_error_on_the_next_call(tmp_path, eager):
    fake = tmp_path / "numba"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise RuntimeError('numba is broken here')\n")
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    out = _run(BROKEN, PYTHONPATH=path, DROPKIT_EAGER_KERNELS=eager)
    assert out.splitlines() == ["raised: RuntimeError numba is broken here"] * 2, out
