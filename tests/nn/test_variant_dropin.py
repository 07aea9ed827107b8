"""Drop-in parity of the variants with torch: every autograd mode (forward AD, torch.func
transforms, vmap with "different" / "same" randomness, per-sample gradients, gradgradcheck),
strides and memory formats, the meta device, torch's functional signatures, repr and class
hierarchy, and the eval / p = 0 rules."""

from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import grad, jacrev, jvp, vjp, vmap

import dropkit.functional as F
import dropkit.nn as dkn

# torch.func.jvp imports torch's jvp decompositions, which still call torch.jit.script.
pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
)

P, SEED = 0.4, 1234

# name -> (functional taking (x, **rng), per-sample input shape)
FUNCS = {
    "dropout1d": (lambda x, **k: F.dropout1d(x, P, **k), (4, 6, 5)),
    "dropout2d": (lambda x, **k: F.dropout2d(x, P, **k), (3, 4, 3, 3)),
    "dropout3d": (lambda x, **k: F.dropout3d(x, P, **k), (2, 4, 2, 3, 2)),
    "drop_path": (lambda x, **k: F.drop_path(x, P, **k), (6, 3, 4)),
    "locked": (lambda x, **k: F.locked_dropout(x, P, **k), (5, 3, 4)),
    "locked-batch-first": (lambda x, **k: F.locked_dropout(x, P, batch_first=True, **k), (3, 5, 4)),
    "feature-alpha": (lambda x, **k: F.feature_alpha_dropout(x, P, True, **k), (3, 4, 3, 2)),
    "alpha": (lambda x, **k: F.alpha_dropout(x, P, True, **k), (5, 6)),
    "gaussian": (lambda x, **k: F.gaussian_dropout(x, P, **k), (5, 6)),
}
AFFINE = {"feature-alpha", "alpha"}  # y = A x + B: the tangent/grad has no B
NAMES = list(FUNCS)


def _x(name: str, batch: tuple[int, ...] = (), dtype=torch.float64) -> torch.Tensor:
    shape = FUNCS[name][1]
    return torch.randn(*batch, *shape, dtype=dtype, generator=torch.Generator().manual_seed(3))


def _linear_part(name: str, x: torch.Tensor, **rng) -> torch.Tensor:
    """The map t -> J t of the op at this seed (the op minus its value at 0 for affine ops)."""
    fn = FUNCS[name][0]
    y = fn(x, **rng)
    return y - fn(torch.zeros_like(x), **rng) if name in AFFINE else y


@pytest.mark.parametrize("name", NAMES)
def test_forward_ad_tangent_is_the_same_mask_times_the_tangent(name):
    """jvp (torch.func and dual tensors): tangent = J t with the forward's own mask/noise."""
    fn = FUNCS[name][0]
    x, t = _x(name), torch.randn(FUNCS[name][1], dtype=torch.float64)
    expected = _linear_part(name, t, seed=SEED, offset=2)
    # exact for the linear ops; the affine ones' expected value is a difference of two outputs
    tol = {"rtol": 1e-13, "atol": 1e-15} if name in AFFINE else {"rtol": 0, "atol": 0}
    y, y_t = jvp(lambda v: fn(v, seed=SEED, offset=2), (x,), (t,))
    assert torch.equal(y, fn(x, seed=SEED, offset=2))
    torch.testing.assert_close(y_t, expected, **tol)
    with fwAD.dual_level():
        out = fn(fwAD.make_dual(x, t), seed=SEED, offset=2)
        torch.testing.assert_close(fwAD.unpack_dual(out).tangent, expected, **tol)


@pytest.mark.parametrize("name", NAMES)
def test_vjp_jacrev_and_grad_agree_with_the_linear_map(name):
    """vjp/jacrev/grad: the Jacobian is diagonal-by-broadcast; rows equal J applied to e_i."""
    fn = FUNCS[name][0]
    x = _x(name)
    jac = jacrev(lambda v: fn(v, seed=SEED))(x).reshape(x.numel(), x.numel())
    # J is diagonal: every variant scales each element by its own mask/noise factor
    diag = _linear_part(name, torch.ones_like(x), seed=SEED).reshape(-1)
    assert torch.equal(jac, torch.diag(diag))
    _, pullback = vjp(lambda v: fn(v, seed=SEED), x)
    dy = torch.randn_like(x)
    assert torch.equal(pullback(dy)[0], diag.view_as(x) * dy)
    assert torch.equal(grad(lambda v: fn(v, seed=SEED).sum())(x), diag.view_as(x))


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_and_gradgradcheck(name):
    fn = FUNCS[name][0]
    x = _x(name).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: fn(v, seed=SEED), (x,))
    assert torch.autograd.gradgradcheck(lambda v: fn(v, seed=SEED), (x,))


# Mask values per entry: entry b of a vmapped batch starts at stream position b * MASK_SIZE.
MASK_SIZE = {
    "dropout1d": 4 * 6,
    "dropout2d": 3 * 4,
    "dropout3d": 2 * 4,
    "drop_path": 6,
    "locked": 3 * 4,
    "locked-batch-first": 3 * 4,
    "feature-alpha": 3 * 4,
    "alpha": 30,
    "gaussian": 30,
}


@pytest.mark.parametrize("name", NAMES)
def test_vmap_different_numbers_the_batch_as_one_tensor(name):
    """randomness="different": entry b gets the op at offset b * (mask size), i.e. what the
    stacked batch would get, under one seed (the first of the per-entry draws); the default
    seed comes from torch's generator, so torch.manual_seed reproduces it."""
    fn = FUNCS[name][0]
    xs = _x(name, (5,))
    torch.manual_seed(0)
    out = vmap(lambda v: fn(v), randomness="different")(xs)
    torch.manual_seed(0)
    again = vmap(lambda v: fn(v), randomness="different")(xs)
    assert torch.equal(out, again)
    explicit = vmap(lambda v: fn(v, seed=SEED), randomness="different")(xs)
    for b in range(5):
        expected = fn(xs[b], seed=SEED, offset=b * MASK_SIZE[name])
        torch.testing.assert_close(explicit[b], expected, rtol=1e-15, atol=0)
    assert not all(torch.equal(explicit[0] - xs[0], explicit[b] - xs[b]) for b in range(1, 5))


@pytest.mark.parametrize("name", NAMES)
def test_vmap_same_gives_every_entry_one_mask_and_error_raises(name):
    fn = FUNCS[name][0]
    xs = _x(name, (4,))
    out = vmap(lambda v: fn(v, seed=SEED), randomness="same")(xs)
    for b in range(4):
        assert torch.equal(out[b], fn(xs[b], seed=SEED))
    with pytest.raises(RuntimeError, match="randomness"):
        vmap(lambda v: fn(v))(xs)


@pytest.mark.parametrize("name", NAMES)
def test_per_sample_gradients_through_the_module_path(name):
    """vmap(grad(f)) with "same" randomness: each entry's gradient is the op's own gradient."""
    fn = FUNCS[name][0]
    xs = _x(name, (3,))
    grads = vmap(grad(lambda v: (fn(v, seed=SEED) ** 2).sum()), randomness="same")(xs)
    for b in range(3):
        v = xs[b].clone().requires_grad_(True)
        (g,) = torch.autograd.grad((fn(v, seed=SEED) ** 2).sum(), v)
        torch.testing.assert_close(grads[b], g, rtol=1e-14, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_meta_tensors(name):
    fn = FUNCS[name][0]
    x = torch.empty(FUNCS[name][1], device="meta")
    y = fn(x)
    assert y.device.type == "meta"
    assert y.shape == x.shape


MODULES = {
    "Dropout1d": (dkn.Dropout1d, torch.nn.Dropout1d, (2, 3, 4)),
    "Dropout2d": (dkn.Dropout2d, torch.nn.Dropout2d, (2, 3, 4, 4)),
    "Dropout3d": (dkn.Dropout3d, torch.nn.Dropout3d, (2, 3, 2, 4, 4)),
    "AlphaDropout": (dkn.AlphaDropout, torch.nn.AlphaDropout, (4, 5)),
    "FeatureAlphaDropout": (dkn.FeatureAlphaDropout, torch.nn.FeatureAlphaDropout, (2, 3, 4, 4)),
}


@pytest.mark.parametrize("name", list(MODULES))
def test_modules_subclass_torch_and_share_its_repr(name):
    ours, theirs, _ = MODULES[name]
    for args in ((), (0.25,), (0.3, True)):
        assert isinstance(ours(*args), theirs)
        assert repr(ours(*args)) == repr(theirs(*args))


@pytest.mark.parametrize("name", list(MODULES))
def test_modules_deferred_init_on_meta_and_memory_format(name):
    ours, _, shape = MODULES[name]
    with torch.device("meta"):
        layer = ours(0.5)
        assert layer(torch.empty(shape)).device.type == "meta"
    if len(shape) in (4, 5):
        fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
        x = torch.randn(shape).contiguous(memory_format=fmt)
        assert ours(0.5)(x).is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("name", ["DropPath", "LockedDropout", "GaussianDropout"])
def test_dropkit_only_modules_keep_strides(name):
    layer = getattr(dkn, name)(0.3)
    x = torch.randn(4, 5, 6).transpose(0, 2)
    assert layer(x).stride() == x.stride()


def test_functionals_take_torch_positional_and_keyword_form():
    x = torch.randn(2, 3, 4, 4)
    y = F.dropout2d(input=x, p=0.5, training=True, inplace=False, seed=1)
    assert torch.equal(y, F.dropout2d(x, 0.5, True, False, seed=1))
    z = torch.randn(4, 5)
    # torch's alpha_dropout defaults to training=False, and so does dropkit's
    assert F.alpha_dropout(z, 0.5) is z
    assert F.alpha_dropout(input=z, p=0.5, training=False, inplace=False) is z
    assert F.feature_alpha_dropout(x, 0.5) is x
    assert torch.nn.functional.alpha_dropout(z, 0.5) is z


@pytest.mark.parametrize("name", NAMES)
def test_eval_and_p_zero_return_the_input_even_inplace_on_a_leaf(name):
    """As torch: eval mode and p = 0 return the input object itself, also with inplace=True
    on a leaf that requires grad (nothing is written)."""
    leaf = _x(name).requires_grad_(True)
    ops = {
        "dropout1d": F.dropout1d,
        "dropout2d": F.dropout2d,
        "dropout3d": F.dropout3d,
        "drop_path": F.drop_path,
        "locked": F.locked_dropout,
        "locked-batch-first": F.locked_dropout,
        "feature-alpha": F.feature_alpha_dropout,
        "alpha": F.alpha_dropout,
        "gaussian": F.gaussian_dropout,
    }
    op = ops[name]
    assert op(leaf, 0.0, True, True) is leaf
    assert op(leaf, 0.5, False, True) is leaf
    with pytest.raises(ValueError, match="inplace"):
        op(leaf, 0.5, True, True)
