"""Torch-level behaviour of counter-based dropout: no stored mask, seeds, autograd, compile."""

from __future__ import annotations

import pytest
import torch
from functorch.compile import make_boxed_func
from torch._dynamo.backends.common import aot_autograd
from torch.utils.checkpoint import checkpoint

import dropkit.functional as F
from dropkit.rng import draw_seed, keep_mask
from tests.stats import assert_binomial


def mask_of(seed, offset, shape, p):
    return torch.from_numpy(keep_mask(seed, offset, tuple(shape), p))


def saved_bytes(fn):
    """Bytes of every tensor autograd saves while ``fn()`` runs, and fn's result."""
    sizes = []

    def pack(t):
        sizes.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(sizes), out


def test_no_mask_is_stored():
    """dropout saves only the 8-byte seed for backward; torch's dropout saves >= numel bytes."""
    x = torch.randn(2**16, requires_grad=True)
    ours, y = saved_bytes(lambda: F.dropout(x, 0.5))
    theirs, _ = saved_bytes(lambda: torch.nn.functional.dropout(x, 0.5))
    assert ours == 8
    assert theirs >= x.numel()
    y.sum().backward()  # the saved seed is enough to run backward


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("offset", [0, 3, 2**33 + 1])
def test_gradient_is_regenerated_mask(p, offset):
    """x.grad == dout * mask / (1 - p), the mask being dropkit.rng.keep_mask of the same seed."""
    x = torch.randn(37, 11, requires_grad=True)
    dout = torch.randn(37, 11)
    F.dropout(x, p, seed=9, offset=offset).backward(dout)
    keep = mask_of(9, offset, x.shape, p)
    assert torch.equal(x.grad, torch.where(keep, dout * (1 / (1 - p)), 0.0))


def test_drawn_seed_is_the_keep_mask_seed():
    """Without seed, the mask is keep_mask of the seed draw_seed takes from torch's generator."""
    x = torch.ones(4096)
    torch.manual_seed(21)
    y = F.dropout(x, 0.4)
    torch.manual_seed(21)
    seed = int(draw_seed())
    assert torch.equal(y != 0, mask_of(seed, 0, x.shape, 0.4))


def test_manual_seed_reproduces_and_distinct_seeds_differ():
    """torch.manual_seed(k) makes two calls identical; different k give independent masks."""
    x = torch.ones(2**14)
    runs = {}
    for k in (1, 1, 2):
        torch.manual_seed(k)
        runs.setdefault(k, []).append(F.dropout(x, 0.5))
    assert torch.equal(runs[1][0], runs[1][1])
    assert_binomial(int((runs[1][0] != runs[2][0]).sum()), x.numel(), 0.5, "differences")


def test_explicit_seed_ignores_global_rng():
    """With seed given the output does not depend on, nor consume, the global generator."""
    x = torch.randn(1000)
    torch.manual_seed(1)
    a = F.dropout(x, 0.5, seed=123)
    state = torch.get_rng_state()
    torch.manual_seed(2)
    b = F.dropout(x, 0.5, seed=torch.tensor(123))  # another tensor with the same value
    assert torch.equal(a, b)
    torch.set_rng_state(state)
    F.dropout(x, 0.5, seed=5)
    assert torch.equal(torch.get_rng_state(), state)


def test_one_seed_draw_per_call_whatever_p():
    """Each training call draws one seed, also at p = 1, so later masks do not shift."""
    x = torch.ones(512)
    torch.manual_seed(8)
    F.dropout(x, 1.0)
    a = F.dropout(x, 0.5)
    torch.manual_seed(8)
    F.dropout(x, 0.2)
    b = F.dropout(x, 0.5)
    assert torch.equal(a, b)


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(8, 32), torch.nn.Linear(32, 4)

    def forward(self, x):
        h = F.dropout(torch.relu(self.a(x)), 0.5)
        return self.b(F.dropout(h, 0.3))


def test_checkpoint_replays_the_masks():
    """checkpoint(use_reentrant=False) gives the uncheckpointed input and parameter gradients."""
    torch.manual_seed(0)
    block, x0 = Block(), torch.randn(16, 8)
    grads = []
    for use_checkpoint in (False, True):
        x = x0.clone().requires_grad_()
        block.zero_grad()
        torch.manual_seed(5)
        out = checkpoint(block, x, use_reentrant=False) if use_checkpoint else block(x)
        torch.manual_seed(99)  # the recompute must not depend on the generator's state now
        out.square().sum().backward()
        grads.append([x.grad, *(q.grad for q in block.parameters())])
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))
    assert (grads[0][0] != 0).any()


@pytest.mark.parametrize(("a", "b"), [(0, 3), (2, 5), (5, 9), (4, 4)])
def test_sharding_invariance_dropout(a, b):
    """dropout(x[a:b], seed, offset=a*row) == dropout(x, seed)[a:b], row = elements per row."""
    x = torch.randn(9, 5, 7)
    row = 5 * 7
    whole = F.dropout(x, 0.4, seed=3)
    assert torch.equal(F.dropout(x[a:b], 0.4, seed=3, offset=a * row), whole[a:b])


@pytest.mark.parametrize(("a", "b"), [(0, 2), (1, 3), (3, 4)])
def test_sharding_invariance_dropout2d_counts_mask_elements(a, b):
    """For dropout2d the offset counts *mask* elements: rows a:b need offset a*C, not a*C*H*W."""
    n, c, h, w = 4, 64, 3, 2
    x = torch.randn(n, c, h, w)
    whole = F.dropout2d(x, 0.5, seed=4)
    assert torch.equal(F.dropout2d(x[a:b], 0.5, seed=4, offset=a * c), whole[a:b])
    if a:
        by_elements = F.dropout2d(x[a:b], 0.5, seed=4, offset=a * c * h * w)
        assert not torch.equal(by_elements, whole[a:b])


@pytest.mark.parametrize("backend", ["numba", "reference"])
def test_p0_is_exact_identity(backend):
    """p = 0 returns x exactly (inf included) and passes the gradient through unchanged."""
    x = torch.tensor([1.5, -0.0, float("inf"), -float("inf"), 3e-39, 65504.0], requires_grad=True)
    y = F.dropout(x, 0.0, seed=1, backend=backend)
    assert torch.equal(y, x)
    dout = torch.randn(6)
    y.backward(dout)
    assert torch.equal(x.grad, dout)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("backend", ["numba", "reference"])
def test_p1_zeros_zero_grad_no_nan(backend, dtype):
    """p = 1 gives zeros and a zero gradient, never NaN, even for infinite inputs and gradients."""
    x = torch.tensor([1.0, float("inf"), -float("inf"), 0.0], dtype=dtype, requires_grad=True)
    y = F.dropout(x, 1.0, seed=2, backend=backend)
    assert torch.equal(y, torch.zeros(4, dtype=dtype))
    y.backward(torch.tensor([1.0, float("inf"), 2.0, float("nan")], dtype=dtype))
    assert torch.equal(x.grad, torch.zeros(4, dtype=dtype))


def test_dropped_inf_is_zero_not_nan():
    """At 0 < p < 1 a dropped inf gives 0 and a kept one inf: no NaN."""
    y = F.dropout(torch.full((4096,), float("inf")), 0.5, seed=6)
    assert not y.isnan().any()
    assert torch.equal(y == 0, ~mask_of(6, 0, (4096,), 0.5))


@pytest.mark.parametrize("p", [1e-3, 0.1, 0.5, 0.9, 0.999])
def test_keep_fraction_and_scale(p):
    """The number of kept elements is Binomial(n, 1 - p) and kept values are exactly 1/(1-p)."""
    n = 2**18
    y = F.dropout(torch.ones(n, dtype=torch.float64), p, seed=77, offset=2**36)
    kept = y[y != 0]
    assert_binomial(kept.numel(), n, 1 - p, f"kept at p={p}")
    assert torch.equal(kept, torch.full_like(kept, 1 / (1 - p)))


def test_inplace_on_non_leaf():
    """inplace=True on a non-leaf writes into x and keeps gradients correct."""
    leaf = torch.randn(13, 7, requires_grad=True)
    x = leaf * 2
    expected = F.dropout(x.detach(), 0.3, seed=5)
    y = F.dropout(x, 0.3, seed=5, inplace=True)
    assert y.data_ptr() == x.data_ptr()
    assert torch.equal(x, expected)
    dout = torch.randn(13, 7)
    y.backward(dout)
    keep = mask_of(5, 0, x.shape, 0.3)
    assert torch.equal(leaf.grad, torch.where(keep, dout * (1 / 0.7), 0.0) * 2)
    with pytest.raises(ValueError, match="inplace"):
        F.dropout(leaf, 0.3, seed=5, inplace=True)


@pytest.mark.parametrize("backend", ["numba", "reference"])
def test_non_contiguous_input(backend):
    """A transposed input gives the same output and gradient as its .contiguous() copy."""
    base = torch.randn(6, 10)
    xt = base.t().requires_grad_()
    xc = base.t().contiguous().requires_grad_()
    yt, yc = (F.dropout(x, 0.5, seed=8, offset=1, backend=backend) for x in (xt, xc))
    assert torch.equal(yt, yc)
    dout = torch.randn(10, 6)
    yt.backward(dout)
    yc.backward(dout)
    assert torch.equal(xt.grad, xc.grad)


def _compiled_saves():
    saved = {}

    def bw(gm, example_inputs):
        ph = [n for n in gm.graph.nodes if n.op == "placeholder"]
        vals = [n.meta["val"] for n in ph if not n.name.startswith("tangents")]
        saved["bytes"] = sum(v.numel() * v.element_size() for v in vals)
        return make_boxed_func(gm)

    return aot_autograd(fw_compiler=lambda gm, _: make_boxed_func(gm), bw_compiler=bw), saved


@pytest.mark.parametrize("seed", [None, 31])
def test_torch_compile(seed):
    """Compiled (aot_eager, fullgraph) output and gradient equal eager's; only the seed is saved."""

    def fn(x):
        return F.dropout(x * 2, 0.3, seed=seed, offset=5).sin()

    x0 = torch.randn(64, 3)
    results = []
    for compiled in (False, True):
        f = torch.compile(fn, backend="aot_eager", fullgraph=True) if compiled else fn
        x = x0.clone().requires_grad_()
        torch.manual_seed(3)
        y = f(x)
        y.sum().backward()
        results.append((y, x.grad))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])
    backend, saved = _compiled_saves()
    x = x0.clone().requires_grad_()
    f = torch.compile(lambda x: F.dropout(x, 0.3, seed=seed), backend=backend, fullgraph=True)
    f(x).sum().backward()  # the backward graph is compiled on first use
    assert saved["bytes"] == 8  # the int64 seed; no mask
