"""The fused classification fold of ``Accumulator`` against the plain torch formulas.

Reference (float64, from the same logits): softmax over the class dim, entropy by
``torch.special.entr``, votes by ``torch.max``'s first-index arg-max, mean and variance over
all samples. Tolerances: float32 probabilities within ``rtol=1e-5, atol=1e-7`` of the float64
softmax (the kernel's exp is <= 2 ulp, its sums are float32 over V terms); variances
``atol=1e-7``; summed entropies ``rtol=1e-5, atol=1e-4`` (a sum of T terms of size log V in
float32); votes exact.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from dropkit.mc import summary, summary_kernel
from dropkit.mc.summary import Accumulator

needs_numba = pytest.mark.skipif(not summary_kernel.AVAILABLE, reason="numba missing")


def reference(logits: torch.Tensor, d: int) -> dict:
    """The old computation, in float64: ``logits`` ``(T, N, *out)``, classes in dim ``d``."""
    x = logits.double()
    p = x.softmax(d)
    winners = logits.float().max(d).indices
    votes = torch.nn.functional.one_hot(winners, logits.shape[d]).sum(0)
    votes = votes.movedim(-1, d - 1).to(torch.int32)
    return {
        "p": p,
        "mean": p.mean(0),
        "var": p.var(0, unbiased=False),
        "entropy": torch.special.entr(p).sum(d).sum(0),
        "votes": votes,
    }


def fold(logits, class_dim, keep, pieces=1, owned=False, total=True):
    """Feed ``logits`` to an Accumulator in ``pieces`` chunks over the samples."""
    t = logits.shape[0]
    acc = Accumulator("classification", class_dim, keep, total=t if total else None)
    for chunk in logits.tensor_split(pieces):
        acc.add(chunk if owned else chunk.clone(), owned=owned)
    return acc


def check(acc: Accumulator, ref: dict, keep: bool) -> None:
    kw = {"equal_nan": True}
    torch.testing.assert_close(acc.mean.double(), ref["mean"], rtol=1e-5, atol=1e-7, **kw)
    torch.testing.assert_close(acc.variance().double(), ref["var"], rtol=1e-4, atol=1e-7, **kw)
    torch.testing.assert_close(acc.entropy.double(), ref["entropy"], rtol=1e-5, atol=1e-4, **kw)
    assert torch.equal(acc.votes, ref["votes"])
    if keep:
        torch.testing.assert_close(acc.samples().double(), ref["p"], rtol=1e-5, atol=1e-7, **kw)
    else:
        assert acc.samples() is None


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts the kernel's calls, so a test knows which path it checked; the small chunks
    here go to the kernel (its size floor set to 0)."""
    monkeypatch.setattr(summary, "KERNEL_MIN", 0)
    calls = []
    inner = summary_kernel.fold

    def counted(*args):
        calls.append(args[0].shape)
        return inner(*args)

    monkeypatch.setattr(summary_kernel, "fold", counted)
    return calls


SHAPES = [((6, 3, 50), 1), ((5, 2, 4, 37), 2), ((7, 4, 2, 3, 100), 3), ((3, 1, 1), 1)]


@needs_numba
@pytest.mark.parametrize("keep", [True, False])
@pytest.mark.parametrize(("shape", "class_dim"), SHAPES)
def test_fast_path_matches_reference(shape, class_dim, keep, kernel_calls) -> None:
    g = torch.Generator().manual_seed(len(shape) + 10 * keep)
    logits = 4 * torch.randn(shape, generator=g)
    check(fold(logits, class_dim, keep), reference(logits, class_dim + 1), keep)
    assert len(kernel_calls) == 1


@pytest.mark.parametrize("keep", [True, False])
@pytest.mark.parametrize(("shape", "class_dim"), [((6, 3, 5, 4), 1), ((5, 2, 7, 3, 3), 2)])
def test_class_dim_not_last_matches_reference(shape, class_dim, keep, kernel_calls) -> None:
    g = torch.Generator().manual_seed(3)
    logits = 3 * torch.randn(shape, generator=g)
    check(fold(logits, class_dim, keep), reference(logits, class_dim + 1), keep)
    assert kernel_calls == []


@needs_numba
@pytest.mark.parametrize("keep", [True, False])
@pytest.mark.parametrize("pieces", [2, 3, 7])
@pytest.mark.parametrize("total", [True, False])
def test_chunks_in_pieces_merge_like_one(pieces, keep, total, kernel_calls) -> None:
    g = torch.Generator().manual_seed(pieces)
    logits = 5 * torch.randn(7, 4, 6, 64, generator=g)
    check(fold(logits, 2, keep, pieces, total=total), reference(logits, 3), keep)
    assert len(kernel_calls) == pieces


@needs_numba
def test_owned_chunk_takes_its_probabilities_in_place(kernel_calls) -> None:
    g = torch.Generator().manual_seed(4)
    logits = 3 * torch.randn(5, 3, 40, generator=g)
    ref = reference(logits, 2)
    mine = logits.clone()
    acc = Accumulator("classification", 1, True, total=5)
    acc.add(mine, owned=True)
    assert acc.samples().data_ptr() == mine.data_ptr()
    check(acc, ref, True)
    assert len(kernel_calls) == 1


@needs_numba
@pytest.mark.parametrize("keep", [True, False])
def test_ties_vote_for_the_first_index(keep, kernel_calls) -> None:
    g = torch.Generator().manual_seed(5)
    logits = torch.randint(0, 3, (9, 4, 5, 30), generator=g).float()  # many exact ties
    logits[0, 0, 0] = 2.0  # a row that is all ties
    logits[1, 0, 1, 7] = -0.0  # -0.0 == +0.0 ties too
    logits[1, 0, 1, 9] = 0.0
    logits[1, 0, 1, :7] = -1.0
    logits[1, 0, 1, 8] = -1.0
    logits[1, 0, 1, 10:] = -1.0
    check(fold(logits, 2, keep), reference(logits, 3), keep)
    assert len(kernel_calls) == 1


@needs_numba
@pytest.mark.parametrize("keep", [True, False])
def test_minus_infinity_logits(keep, kernel_calls) -> None:
    g = torch.Generator().manual_seed(6)
    logits = 2 * torch.randn(6, 5, 3, 20, generator=g)
    logits[..., :4] = -torch.inf  # masked classes
    logits[2, 1, 0, 5:] = -torch.inf  # one finite class left: p = 1 there, H = 0
    logits[3, 2, 2, 6] = -3e38  # exp underflows, x - max stays finite
    check(fold(logits, 2, keep), reference(logits, 3), keep)
    assert len(kernel_calls) == 1


@needs_numba
@pytest.mark.parametrize("keep", [True, False])
def test_rows_the_kernel_leaves_follow_the_torch_path(keep, kernel_calls) -> None:
    """NaN, +inf and all -inf rows are folded by the torch formulas; the other rows of the
    same chunk by the kernel, and every row agrees with the reference (NaN where it is)."""
    g = torch.Generator().manual_seed(7)
    logits = 2 * torch.randn(5, 6, 25, generator=g)
    logits[1, 0, 3] = torch.nan
    logits[0, 2, 4] = torch.inf
    logits[4, 3] = -torch.inf
    logits[2, 5, 0] = -torch.nan  # a NaN with the sign bit set
    ref = reference(logits, 2)
    acc = fold(logits, 1, keep, owned=True)
    check(acc, ref, keep)
    assert len(kernel_calls) == 1
    assert torch.isfinite(acc.mean[[1, 4]]).all()
    assert torch.isnan(acc.mean[[0, 2, 3, 5]]).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("keep", [True, False])
def test_other_dtypes_match_reference(dtype, keep, kernel_calls) -> None:
    g = torch.Generator().manual_seed(8)
    logits = (3 * torch.randn(6, 3, 4, 33, generator=g)).to(dtype)
    acc = fold(logits, 2, keep, pieces=2)
    check(acc, reference(logits, 3), keep)
    # half precision is computed in float32, which the kernel folds
    assert len(kernel_calls) == (0 if dtype == torch.float64 else 2)


@needs_numba
def test_non_contiguous_chunk_matches_reference(kernel_calls) -> None:
    g = torch.Generator().manual_seed(9)
    logits = 3 * torch.randn(6, 40, 5, generator=g).transpose(1, 2)  # classes last, strided
    check(fold(logits, 1, True, owned=True), reference(logits, 2), True)
    assert kernel_calls == []


@needs_numba
def test_kernel_exp_is_within_two_ulp() -> None:
    """``_exp`` against float64 exp on [-87.3, 0]: <= 2 ulp (2^-22 relative); exactly 1 at
    0; 0 at and below -87.3 and at -inf."""
    import numba

    @numba.njit
    def apply(y, out):
        for i in range(y.size):
            out[i] = summary_kernel._exp(y[i])

    y = np.concatenate(
        [
            -np.geomspace(1e-30, 87.29, 400_000).astype(np.float32),
            np.linspace(-87.29, 0, 400_000, dtype=np.float32),
        ]
    )
    out = np.empty_like(y)
    apply(y, out)
    exact = np.exp(y.astype(np.float64))
    rel = np.abs(out - exact) / exact
    assert rel.max() <= 2.0**-22
    special = np.array([0.0, -87.3, -90.0, -1e30, -np.inf], np.float32)
    got = np.empty_like(special)
    apply(special, got)
    assert got.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]


@needs_numba
def test_small_chunks_stay_on_torch_and_large_ones_take_the_kernel(monkeypatch) -> None:
    calls = []
    inner = summary_kernel.fold
    monkeypatch.setattr(summary_kernel, "fold", lambda *a: calls.append(1) or inner(*a))
    g = torch.Generator().manual_seed(10)
    small = torch.randn(4, 2, summary.KERNEL_MIN // 8 - 1, generator=g)
    large = torch.randn(4, 2, summary.KERNEL_MIN // 8, generator=g)
    for logits, expected in ((small, []), (large, [1])):
        calls.clear()
        check(fold(logits, 1, True), reference(logits, 2), True)
        assert calls == expected


def test_small_workloads_do_not_import_numba() -> None:
    code = (
        "import sys, torch\n"
        "from dropkit.mc.summary import Accumulator\n"
        "acc = Accumulator('classification', 1, True)\n"
        "acc.add(torch.randn(3, 4, 10))\n"
        "assert 'numba' not in sys.modules, 'numba imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
