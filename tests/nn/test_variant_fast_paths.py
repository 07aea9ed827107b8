"""The shared-mask variants' eager fast path (numba words straight into a small mask, then one
broadcast multiply) equals the operator path (the ``dropkit::scaled_keep_mask`` op, here fed
by the NumPy Philox reference) bit for bit, forward and backward, in every layout and dtype;
and both equal the closed form ``x * (keep_mask * scale)`` with the NumPy reference mask."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import dropkit.functional as F
from dropkit.functional.mask import mask_shape
from dropkit.rng import keep_mask

SEED, OFFSET, P = 2**40 + 17, 5, 0.3


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    fmt = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
    return x.contiguous(memory_format=fmt)


# name -> (op(x, **rng), input shape, shared dims, scale)
OPS = {
    "dropout1d": (lambda x, **k: F.dropout1d(x, P, **k), (3, 4, 7), (2,), 1 / (1 - P)),
    "dropout2d": (lambda x, **k: F.dropout2d(x, P, **k), (3, 4, 5, 6), (2, 3), 1 / (1 - P)),
    "dropout3d": (lambda x, **k: F.dropout3d(x, P, **k), (2, 3, 4, 5, 3), (2, 3, 4), 1 / (1 - P)),
    "drop_path": (lambda x, **k: F.drop_path(x, P, **k), (6, 5, 8), (1, 2), 1 / (1 - P)),
    "drop_path-batch": (
        lambda x, **k: F.drop_path(x, P, mode="batch", **k),
        (6, 5, 8),
        (0, 1, 2),
        1 / (1 - P),
    ),
    "drop_path-noscale": (
        lambda x, **k: F.drop_path(x, P, scale_by_keep=False, **k),
        (6, 5, 8),
        (1, 2),
        1.0,
    ),
    "locked": (lambda x, **k: F.locked_dropout(x, P, **k), (7, 3, 5), (0,), 1 / (1 - P)),
    "locked-batch-first": (
        lambda x, **k: F.locked_dropout(x, P, batch_first=True, **k),
        (3, 7, 5),
        (1,),
        1 / (1 - P),
    ),
}
LAYOUTS = {
    "contiguous": lambda x: x,
    "transposed": lambda x: x.transpose(0, -1).contiguous().transpose(0, -1),
    "sliced": lambda x: torch.cat([x, x], dim=-1)[..., ::2],
    "channels_last": _channels_last,
}
DTYPES = [torch.float64, torch.float32, torch.bfloat16]


def _cases():
    for name, (_, shape, _, _) in OPS.items():
        for layout in LAYOUTS:
            if layout == "channels_last" and len(shape) not in (4, 5):
                continue
            yield name, layout


def _input(name: str, layout: str, dtype: torch.dtype) -> torch.Tensor:
    shape = OPS[name][1]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    return LAYOUTS[layout](x)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("name", "layout"), list(_cases()))
def test_fast_path_equals_operator_path(name, layout, dtype):
    """Eager numba fast path vs the custom-op path (NumPy reference words): same values, same
    gradient, same strides, bit for bit."""
    op = OPS[name][0]
    x = _input(name, layout, dtype).requires_grad_(True)
    x_ref = x.detach().clone(memory_format=torch.preserve_format).requires_grad_(True)
    y = op(x, seed=SEED, offset=OFFSET)
    y_ref = op(x_ref, seed=SEED, offset=OFFSET, backend="reference")
    assert y.dtype == dtype
    # torch's preserve_format rule: a dense input's strides are kept, others become contiguous
    assert y.stride() == torch.empty_like(x).stride() == y_ref.stride()
    assert torch.equal(y, y_ref)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(2)).to(dtype)
    (g,) = torch.autograd.grad(y, x, dy)
    (g_ref,) = torch.autograd.grad(y_ref, x_ref, dy)
    assert torch.equal(g, g_ref)


@pytest.mark.parametrize(("name", "layout"), list(_cases()))
def test_closed_form_with_numpy_reference_mask(name, layout):
    """y = x * (keep * scale) and dx = dy * (keep * scale), keep from dropkit.rng.keep_mask
    (NumPy) at positions offset + (row-major mask index), in float64 exactly."""
    op, _, dims, scale = OPS[name]
    x = _input(name, layout, torch.float64).requires_grad_(True)
    keep = keep_mask(SEED, OFFSET, mask_shape(x.shape, dims), P)
    m = torch.from_numpy(keep.astype(np.float64) * scale)
    y = op(x, seed=SEED, offset=OFFSET)
    assert torch.equal(y, x.detach() * m)
    dy = torch.randn(y.shape, dtype=torch.float64)
    (g,) = torch.autograd.grad(y, x, dy)
    assert torch.equal(g, dy * m)
    assert 0 < keep.sum() < keep.size or keep.size < 4  # the mask is not degenerate


def test_drop_path_row_mask_is_the_documented_bernoulli_mask():
    """Sample n's decision is Bernoulli-mask position offset + n (the contract other
    stochastic-depth implementations reproduce)."""
    x = torch.ones(64, 3, 4)
    y = F.drop_path(x, 0.4, seed=9, offset=123)
    keep = F.bernoulli_mask((64, 1, 1), 0.4, seed=9, offset=123)
    assert torch.equal(y != 0, keep.expand_as(y))
    assert torch.equal(y[keep.expand_as(y)], torch.full((int(keep.sum()) * 12,), 1 / 0.6))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "transposed"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_feature_alpha_fast_path_equals_operator_path_and_formula(layout, dtype):
    """feature_alpha_dropout: fast == operator path (bitwise, values and gradient); in float64
    both equal a * where(keep, x, alpha') + b with the NumPy reference mask."""
    from dropkit.reference.alpha import ALPHA_PRIME, alpha_dropout_affine

    x = LAYOUTS[layout](torch.randn(3, 4, 5, 6, dtype=torch.float64).to(dtype))
    x.requires_grad_(True)
    x_ref = x.detach().clone(memory_format=torch.preserve_format).requires_grad_(True)
    y = F.feature_alpha_dropout(x, P, True, seed=SEED, offset=OFFSET)
    y_ref = F.feature_alpha_dropout(x_ref, P, True, seed=SEED, offset=OFFSET, backend="reference")
    assert torch.equal(y, y_ref)
    assert y.stride() == x.stride()
    dy = torch.randn(y.shape, dtype=torch.float64).to(dtype)
    assert torch.equal(*(torch.autograd.grad(o, i, dy)[0] for o, i in ((y, x), (y_ref, x_ref))))
    if dtype == torch.float64:
        keep = torch.from_numpy(keep_mask(SEED, OFFSET, (3, 4, 1, 1), P))
        a, b = alpha_dropout_affine(P)
        assert torch.equal(y, torch.where(keep, x.detach(), ALPHA_PRIME) * a + b)


@pytest.mark.parametrize("name", list(OPS))
def test_autograd_saves_only_the_small_mask(name):
    """The forward keeps the (N, C, 1, ...)-sized mask for backward, never a full-size one."""
    op, shape, dims, _ = OPS[name]
    x = torch.randn(shape, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: saved.append(t.numel()) or t, lambda t: t
    ):
        op(x * 1.0, seed=1)
    assert saved
    assert max(saved) == int(np.prod(mask_shape(shape, dims)))


# ---------------------------------------------------------------- per-call fast paths
# The common call (default RNG, training, 0 < p < 1, not in place, plain eager CPU) skips the
# argument checks and the operator route. Each is compared bit for bit with the general path
# fed by the NumPy Philox reference (``backend="reference"``), whose seed is drawn from a
# generator in the state the global one had, so both calls draw the same seed.

import dropkit.functional.alpha as alpha_mod  # noqa: E402
import dropkit.functional.dropblock as dropblock_mod  # noqa: E402
import dropkit.functional.dropconnect as dropconnect_mod  # noqa: E402
import dropkit.functional.embedding as embedding_mod  # noqa: E402
import dropkit.nn as dkn  # noqa: E402

FAST_DTYPES = [torch.float32, torch.bfloat16, torch.float64, torch.float16]
_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bits of ``t`` (so that -0 != +0 and NaN payloads count)."""
    return t.detach().contiguous().view(_INT[t.element_size()])


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype
    assert a.shape == b.shape
    assert torch.equal(_bits(a), _bits(b))


def _fast_and_full(op, inputs, grads, *, seed=1234, dy_seed=5):
    """Run ``op(*inputs)`` on the fast path (global generator at ``seed``) and
    ``op(*inputs, generator=..., backend="reference")`` on the general path; return both
    outputs and the gradients of ``grads`` (indices into ``inputs``) for one random ``dy``."""
    results = []
    for full in (False, True):
        args = [t.detach().clone(memory_format=torch.preserve_format) if t.is_floating_point()
                else t for t in inputs]  # fmt: skip
        for i in grads:
            args[i].requires_grad_(True)
        torch.manual_seed(seed)
        extra = dict(generator=torch.Generator().manual_seed(seed), backend="reference")
        y = op(*args, **(extra if full else {}))
        gen = torch.Generator().manual_seed(dy_seed)
        dy = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(y.dtype)
        gs = torch.autograd.grad(y, [args[i] for i in grads], dy) if grads else ()
        results.append((y, gs))
    return results


def _assert_fast_equals_full(op, inputs, grads=(0,), **kw):
    (y, gs), (y_ref, gs_ref) = _fast_and_full(op, inputs, grads, **kw)
    _same_bits(y, y_ref)
    for g, g_ref in zip(gs, gs_ref, strict=True):
        _same_bits(g, g_ref)
    return y, y_ref


def _layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "channels_last":
        return _channels_last(x)
    return LAYOUTS[layout](x)


def _rand(shape, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)


@pytest.fixture
def no_full_path(monkeypatch):
    """Make the general paths' argument checks raise: a call that still passes takes the fast
    path."""

    def refuse(*args, **kwargs):
        raise AssertionError("the general path ran")

    for mod in (alpha_mod, dropblock_mod, dropconnect_mod):
        monkeypatch.setattr(mod, "check_input", refuse)
    monkeypatch.setattr(embedding_mod, "_check_table", refuse)


def test_the_common_calls_take_the_fast_paths(no_full_path):
    x4 = torch.randn(2, 3, 8, 8, requires_grad=True)
    w = torch.randn(5, 4, requires_grad=True)
    ids = torch.tensor([[0, 1, 2, 3, 4, 1]])
    assert F.alpha_dropout(x4, 0.2, True).shape == x4.shape
    assert F.alpha_dropout(x4.bfloat16(), 0.2, True).dtype == torch.bfloat16
    assert F.feature_alpha_dropout(x4, 0.2, True).shape == x4.shape
    assert F.dropconnect_linear(torch.randn(3, 4), w, None, 0.2).shape == (3, 5)
    assert F.embedded_dropout(ids, w, 0.2).shape == (1, 6, 4)  # table route (5 <= 6 ids)
    assert F.embedded_dropout(ids[:, :2], w, 0.2).shape == (1, 2, 4)  # gather route
    assert F.drop_block2d(x4, 0.2, block_size=3).shape == x4.shape
    assert dkn.DropBlock2d(0.2, 7)(x4).shape == x4.shape
    with pytest.raises(AssertionError, match="general path"):  # the control: a seeded call
        F.alpha_dropout(x4, 0.2, True, seed=1)


# ---------------------------------------------------------------- alpha dropout


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "sliced", "channels_last"])
@pytest.mark.parametrize("dtype", FAST_DTYPES, ids=str)
def test_alpha_fast_path_equals_full_path(dtype, layout):
    x = _layout(_rand((3, 4, 5, 6), dtype), layout)
    y, y_ref = _assert_fast_equals_full(lambda t, **k: F.alpha_dropout(t, 0.3, True, **k), [x])
    assert y.stride() == y_ref.stride()
    assert (y != y[0, 0, 0, 0]).any()
    assert not torch.isnan(y).any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_alpha_module_double_backward_equals_full_path(dtype):
    """create_graph: the fast path's backward records the regenerated-mask op, whose gradient
    (and the gradient of a function of the input gradient) equals the general path's."""
    x = _rand((6, 7), dtype)
    out = []
    for full in (False, True):
        t = x.clone().requires_grad_(True)
        torch.manual_seed(3)
        kw = dict(generator=torch.Generator().manual_seed(3), backend="reference") if full else {}
        y = F.alpha_dropout(t, 0.4, True, **kw)
        (g,) = torch.autograd.grad((y * y).sum(), t, create_graph=True)
        (gg,) = torch.autograd.grad((g * g).sum(), t)
        out.append((g.detach(), gg))
    _same_bits(out[0][0], out[1][0])
    _same_bits(out[0][1], out[1][1])


# ---------------------------------------------------------------- feature alpha dropout


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "sliced", "channels_last"])
@pytest.mark.parametrize("dtype", FAST_DTYPES, ids=str)
def test_feature_alpha_fast_path_equals_full_path(dtype, layout):
    x = _layout(_rand((4, 6, 5, 3), dtype), layout)
    y, y_ref = _assert_fast_equals_full(
        lambda t, **k: F.feature_alpha_dropout(t, 0.35, True, **k), [x]
    )
    assert y.stride() == y_ref.stride() == torch.empty_like(x).stride()


@pytest.mark.parametrize("p", [0.05, 0.1, 0.3, 0.5, 0.9, 0.999])
@pytest.mark.parametrize("dtype", FAST_DTYPES, ids=str)
def test_feature_alpha_constants_at_many_rates(dtype, p):
    """The looked-up gain and shift are the general path's values at every rate (each drawn
    channel is 0 or the kept affine), also for 3-D and 5-D inputs."""
    for shape in ((5, 7, 4), (2, 3, 2, 2, 3)):
        _assert_fast_equals_full(
            lambda t, **k: F.feature_alpha_dropout(t, p, True, **k), [_rand(shape, dtype)]
        )


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_feature_alpha_forward_ad_equals_full_path():
    """The fast path is plain torch ops: forward-mode AD gives the general path's tangent."""
    import torch.autograd.forward_ad as fwAD

    x, t = _rand((3, 4, 5), torch.float64), _rand((3, 4, 5), torch.float64, seed=1)
    out = []
    for full in (False, True):
        torch.manual_seed(8)
        kw = dict(generator=torch.Generator().manual_seed(8), backend="reference") if full else {}
        with fwAD.dual_level():
            y = F.feature_alpha_dropout(fwAD.make_dual(x, t), 0.5, True, **kw)
            out.append([u.clone() for u in fwAD.unpack_dual(y)[:2]])
    _same_bits(out[0][0], out[1][0])
    _same_bits(out[0][1], out[1][1])


def test_feature_alpha_keeps_only_the_small_gain_for_backward():
    x = torch.randn(4, 6, 9, 9, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: saved.append(t.numel()) or t, lambda t: t
    ):
        F.feature_alpha_dropout(x * 1.0, 0.3, True)
    assert saved
    assert max(saved) == 4 * 6


# ---------------------------------------------------------------- DropConnect


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", FAST_DTYPES, ids=str)
def test_dropconnect_fast_path_equals_full_path(dtype, bias):
    w, x = _rand((7, 9), dtype), _rand((2, 5, 9), dtype, seed=1)
    b = _rand((7,), dtype, seed=2) if bias else None

    def op(w, x, b=b, **k):
        return F.dropconnect_linear(x, w, b, 0.3, **k)

    _assert_fast_equals_full(op, [w, x], grads=(0, 1))


def test_dropconnect_module_saves_no_mask():
    """The dropped weight comes from the fused kernel: autograd keeps x, the dropped weight
    (both needed by linear's backward) and the 8-byte seed, no bool mask."""
    layer = dkn.DropConnectLinear(6, 5, p=0.25)
    x = torch.randn(3, 6, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: saved.append((t.dtype, t.numel())) or t, lambda t: t
    ):
        layer(x)
    assert (torch.int64, 1) in saved
    assert all(dtype != torch.bool for dtype, _ in saved)


# ---------------------------------------------------------------- embedding dropout


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("padding_idx", [None, 2, -1])
@pytest.mark.parametrize("n_ids", [40, 6])  # table route (V = 10 <= ids), gather route
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
def test_embedded_dropout_fast_path_equals_full_path(dtype, n_ids, padding_idx, sparse):
    w = _rand((10, 4), dtype)
    ids = torch.randint(0, 10, (n_ids // 2, 2), generator=torch.Generator().manual_seed(4))
    ids[0, 0] = 2  # the padding row occurs

    def op(w, ids, **k):
        return F.embedded_dropout(ids, w, 0.4, padding_idx=padding_idx, sparse=sparse, **k)

    (y, (g,)), (y_ref, (g_ref,)) = _fast_and_full(op, [w, ids], (0,))
    _same_bits(y, y_ref)
    if sparse:
        g, g_ref = g.coalesce(), g_ref.coalesce()
        assert torch.equal(g.indices(), g_ref.indices())
        g, g_ref = g.values(), g_ref.values()
    _same_bits(g, g_ref)


@pytest.mark.parametrize("n_ids", [40, 6])
def test_embedded_dropout_scale_grad_by_freq_and_double_backward(n_ids):
    w = _rand((10, 3), torch.float32)
    ids = torch.randint(0, 10, (n_ids,), generator=torch.Generator().manual_seed(2))
    out = []
    for full in (False, True):
        t = w.clone().requires_grad_(True)
        torch.manual_seed(6)
        kw = dict(generator=torch.Generator().manual_seed(6), backend="reference") if full else {}
        y = F.embedded_dropout(ids, t, 0.3, scale_grad_by_freq=True, **kw)
        dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), requires_grad=True)
        (g,) = torch.autograd.grad(y, t, dy, create_graph=True)
        (gg,) = torch.autograd.grad((g * g).sum(), dy)  # d/d(dy) of a function of dW
        out.append((y.detach(), g.detach(), gg))
    for a, b in zip(*out, strict=True):
        _same_bits(a, b)


def test_embedded_dropout_without_grad_and_the_module():
    w = torch.randn(8, 3)
    ids = torch.randint(0, 8, (4, 5))
    for fast in (True, False):
        torch.manual_seed(2)
        kw = {} if fast else dict(generator=torch.Generator().manual_seed(2), backend="reference")
        out = F.embedded_dropout(ids, w, 0.5, **kw)
        if fast:
            y = out
    _same_bits(y, out)
    emb = torch.nn.Embedding(8, 3)
    layer = dkn.EmbeddingDropout(0.5, emb)
    torch.manual_seed(9)
    z = layer(ids)
    torch.manual_seed(9)
    _same_bits(z, F.embedded_dropout(ids, emb.weight, 0.5, backend="reference"))


# ---------------------------------------------------------------- DropBlock


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "transposed", "sliced"])
@pytest.mark.parametrize("dtype", FAST_DTYPES, ids=str)
@pytest.mark.parametrize(
    ("shape", "block", "shared", "by_matrix"),
    [
        ((2, 3, 8, 8), 7, False, True),  # one matrix product (small map)
        ((3, 2, 9, 7), 3, True, True),
        ((2, 3, 24, 20), 5, False, False),  # separable ORs (the matrix would be large)
        ((2, 2, 20, 24), 4, True, False),
    ],
)
def test_drop_block2d_fast_path_equals_full_path(shape, block, shared, by_matrix, dtype, layout):
    x = _layout(_rand(shape, dtype), layout)
    _, valid, _ = dropblock_mod._geometry(0.3, block, shape[2:])
    assert (math.prod(valid) * math.prod(shape[2:]) <= dropblock_mod._MATRIX_MAX) == by_matrix

    def op(t, **k):
        return F.drop_block2d(t, 0.3, block_size=block, shared_channels=shared, **k)

    y, y_ref = _assert_fast_equals_full(op, [x])
    assert y.stride() == y_ref.stride() == torch.empty_like(x).stride()
    assert (y == 0).any()
    assert (y != 0).any()


@pytest.mark.parametrize(("shape", "block"), [((2, 3, 4, 5, 6), 2), ((1, 2, 9, 10, 11), 3)])
def test_drop_block3d_fast_path_equals_full_path(shape, block):
    def op(t, **k):
        return F.drop_block3d(t, 0.3, block_size=block, **k)

    _assert_fast_equals_full(op, [_rand(shape, torch.float32)])


@pytest.mark.parametrize(
    ("spatial", "block"), [((8, 8), 7), ((6, 9), 4), ((24, 20), 5), ((4, 6, 5), 3), ((3, 8), 10)]
)
def test_both_dilations_equal_the_reference_dilation(spatial, block):
    """Matrix product and separable ORs against reference.dilate, on one seed grid."""
    from dropkit.reference.dropblock import dilate

    extent, valid, gamma = dropblock_mod._geometry(0.4, block, spatial)
    grid = (3, 2, *valid)
    seeds = dropblock_mod.eager_keep_mask(grid, 77, 9, gamma, dropped=True)
    expected = dilate(seeds.numpy(), extent)
    assert seeds.any()
    assert np.array_equal(dropblock_mod._dilate(seeds, extent).numpy(), expected)
    if math.prod(valid) * math.prod(spatial) <= 1 << 16:
        by_matrix, tensor = dropblock_mod._dropped_by_matrix(grid, 77, 9, gamma, extent)
        assert np.array_equal(tensor.numpy(), expected)
        assert np.shares_memory(by_matrix, tensor.numpy())


def test_drop_block_scales_in_numpy_and_torch_agree():
    """The eager per-sample scale (NumPy) equals the general one (torch) bit for bit, also for
    samples that keep nothing and for float64."""
    gen = torch.Generator().manual_seed(0)
    dropped = torch.rand(50, 3, 5, 5, generator=gen) < torch.rand(50, 1, 1, 1, generator=gen)
    dropped[:5] = True  # empty samples
    for dtype in FAST_DTYPES:
        x = torch.ones(50, 3, 5, 5, dtype=dtype)
        _same_bits(dropblock_mod._eager_scale(x, dropped.numpy()), dropblock_mod._scale(x, dropped))


# ---------------------------------------------------------------- the same errors


def _error(fn):
    with pytest.raises((TypeError, ValueError, AssertionError, IndexError, RuntimeError)) as err:
        fn()
    return type(err.value), str(err.value)


BAD_CALLS = {
    "alpha int input": lambda **k: F.alpha_dropout(
        torch.ones(3, 4, dtype=torch.int64), 0.3, True, **k
    ),
    "alpha p": lambda **k: F.alpha_dropout(torch.ones(3, 4), 1.5, True, **k),
    "feature alpha 1-D": lambda **k: F.feature_alpha_dropout(torch.ones(4), 0.3, True, **k),
    "feature alpha int": lambda **k: F.feature_alpha_dropout(
        torch.ones(2, 3, dtype=torch.int32), 0.3, True, **k
    ),
    "feature alpha p": lambda **k: F.feature_alpha_dropout(torch.ones(2, 3), -0.1, True, **k),
    "dropconnect 3-D weight": lambda **k: F.dropconnect_linear(
        torch.ones(2, 3), torch.ones(4, 3, 1), None, 0.3, **k
    ),
    "dropconnect int x": lambda **k: F.dropconnect_linear(
        torch.ones(2, 3, dtype=torch.int64), torch.ones(4, 3), None, 0.3, **k
    ),
    "dropconnect shapes": lambda **k: F.dropconnect_linear(
        torch.ones(2, 5), torch.ones(4, 3), None, 0.3, **k
    ),
    "dropconnect p": lambda **k: F.dropconnect_linear(
        torch.ones(2, 3), torch.ones(4, 3), None, 2.0, **k
    ),
    "embedding 1-D table": lambda **k: F.embedded_dropout(
        torch.tensor([0, 1]), torch.ones(5), 0.3, **k
    ),
    "embedding padding": lambda **k: F.embedded_dropout(
        torch.zeros(9, dtype=torch.int64), torch.ones(5, 2), 0.3, padding_idx=7, **k
    ),
    "embedding ids": lambda **k: F.embedded_dropout(
        torch.full((9,), 5), torch.ones(5, 2), 0.3, **k
    ),
    "embedding float ids": lambda **k: F.embedded_dropout(
        torch.zeros(9), torch.ones(5, 2), 0.3, **k
    ),
    "drop_block 3-D": lambda **k: F.drop_block2d(torch.ones(2, 3, 8), 0.3, **k),
    "drop_block int": lambda **k: F.drop_block2d(
        torch.ones(1, 2, 8, 8, dtype=torch.int64), 0.3, **k
    ),
    "drop_block size": lambda **k: F.drop_block2d(torch.ones(1, 2, 8, 8), 0.3, block_size=0, **k),
    "drop_block p": lambda **k: F.drop_block2d(torch.ones(1, 2, 8, 8), 1.2, **k),
}


@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_bad_input_gives_the_general_paths_error(name):
    """A call shaped like the common one (default RNG) rejects bad input with the same error
    type and message as the general path (an explicit seed)."""
    call = BAD_CALLS[name]
    assert _error(call) == _error(lambda: call(seed=3))


def test_eager_seed_is_the_draw_key_draw():
    """The per-thread buffer draw gives draw_key's seed and leaves torch's generator where
    draw_key leaves it; inside a stream it is the stream's key."""
    import threading

    from dropkit.functional.mask import eager_seed
    from dropkit.rng import stream
    from dropkit.rng.backend import draw_key

    for k in range(3):
        torch.manual_seed(k)
        seed, offset = draw_key(None, 0, 12)
        after = torch.get_rng_state()
        torch.manual_seed(k)
        assert eager_seed(12) == (int(seed), offset)
        assert torch.equal(torch.get_rng_state(), after)
    with stream(5):
        expected = [(int(s), o) for s, o in (draw_key(None, 0, 12) for _ in range(2))]
    with stream(5):
        assert [eager_seed(12) for _ in range(2)] == expected
    torch.manual_seed(7)
    expected = int(draw_key(None, 0, 3)[0])
    torch.manual_seed(7)
    seeds = []  # another thread draws into its own buffer, from the same generator
    worker = threading.Thread(target=lambda: seeds.append(eager_seed(3)[0]))
    worker.start()
    worker.join()
    assert seeds == [expected]


def test_first_call_under_inference_mode_then_training():
    """The per-thread seed buffer made by a first call under inference_mode can still be
    drawn into afterwards (a fresh thread, so its first call is the one under the mode)."""
    import threading

    errors = []

    def run():
        try:
            x = torch.randn(2, 3, 6, 6)
            with torch.inference_mode():
                F.feature_alpha_dropout(x, 0.2, True)
                F.alpha_dropout(x.bfloat16(), 0.2, True)
            xg = x.clone().requires_grad_(True)
            F.feature_alpha_dropout(xg, 0.2, True).sum().backward()
            F.drop_block2d(xg, 0.2, block_size=3).sum().backward()
            F.alpha_dropout(x.bfloat16(), 0.2, True)
        except Exception as err:  # reported in the main thread
            errors.append(err)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    assert errors == []


@pytest.mark.parametrize("n_ids", [40, 6])
def test_embedded_dropout_gradient_with_non_finite_dy(n_ids):
    """inf and NaN in dy reach only the kept words' rows of dW, on both routes, as in the
    looked-up form (the dropped occurrences give exact zeros)."""
    w = _rand((10, 3), torch.float32)
    ids = torch.randint(0, 10, (n_ids,), generator=torch.Generator().manual_seed(3))
    dy = torch.randn(n_ids, 3, generator=torch.Generator().manual_seed(4))
    dy[::3, 0], dy[1::3, 1] = float("inf"), float("nan")
    grads = []
    for full in (False, True):
        t = w.clone().requires_grad_(True)
        torch.manual_seed(1)
        kw = dict(generator=torch.Generator().manual_seed(1), backend="reference") if full else {}
        y = F.embedded_dropout(ids, t, 0.5, **kw)
        grads.append(torch.autograd.grad(y, t, dy)[0])
    _same_bits(*grads)
    occurs = torch.zeros(10, dtype=torch.bool)
    occurs[ids] = True
    assert ((grads[0] == 0).all(1) & occurs).any()  # a dropped word that occurs
    assert not torch.isfinite(grads[0]).all()
