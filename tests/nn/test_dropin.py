"""dropkit's elementwise dropout as a drop-in for torch's: every autograd mode, layouts, devices.

Values are checked against the Philox keep mask (:func:`dropkit.rng.keep_mask`, the NumPy
specification), never only that a call returns.
"""

from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.autograd import gradcheck, gradgradcheck

import dropkit.functional as F
import dropkit.nn as dkn
from dropkit.rng import draw_seed, keep_mask
from tests.stats import assert_binomial

P, SEED, OFFSET = 0.3, 1234, 7
# torch's own forward-AD decompositions (and torch.jit.script) warn that TorchScript is
# deprecated; that is torch talking to itself, not a dropkit warning.
pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
)


def expected(x: torch.Tensor, seed: int = SEED, offset: int = OFFSET, p: float = P):
    """The specified output: the logical row-major keep mask of (seed, offset), times 1/(1-p)."""
    keep = torch.from_numpy(keep_mask(seed, offset, tuple(x.shape), p)).to(x.device)
    return torch.where(keep, x * (1 / (1 - p)), torch.zeros((), dtype=x.dtype))


def drop(x):
    return F.dropout(x, P, seed=SEED, offset=OFFSET)


def test_forward_ad_tangent_is_the_same_mask():
    """Forward mode (forward_ad): tangent = keep * scale * t, the primal's own mask."""
    x, t = torch.randn(6, 9, dtype=torch.float64), torch.randn(6, 9, dtype=torch.float64)
    with fwAD.dual_level():
        out = drop(fwAD.make_dual(x, t))
        primal, tangent = fwAD.unpack_dual(out)
    assert tangent is not None
    assert torch.equal(primal, expected(x))
    assert torch.equal(tangent, expected(t))


def test_func_jvp_vjp_grad_jacrev_values():
    """torch.func jvp, vjp, grad and jacrev give the mask-times-scale linear map."""
    x, t = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    out, tangent = torch.func.jvp(drop, (x,), (t,))
    assert torch.equal(out, expected(x))
    assert torch.equal(tangent, expected(t))
    out, pullback = torch.func.vjp(drop, x)
    (cot,) = pullback(t)
    assert torch.equal(cot, expected(t))
    grad = torch.func.grad(lambda a: drop(a).sum())(x)
    assert torch.equal(grad, expected(torch.ones_like(x)))
    jac = torch.func.jacrev(drop)(x.view(-1)[:8].clone())
    diag = expected(torch.ones(8, dtype=torch.float64))
    assert torch.equal(jac, torch.diag(diag))


def test_gradcheck_and_gradgradcheck():
    """float64 gradcheck and gradgradcheck (backward is itself the regenerated-mask op)."""
    x = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    assert gradcheck(drop, (x,))
    assert gradgradcheck(drop, (x,))


def test_gradcheck_catches_a_wrong_gradient():
    """The checker can fail: a dropout whose gradient uses another seed's mask is rejected."""

    class WrongGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a):
            return F.dropout(a, P, seed=SEED)

        @staticmethod
        def backward(ctx, g):
            return F.dropout(g, P, seed=SEED + 1)

    x = torch.randn(40, dtype=torch.float64, requires_grad=True)
    assert not gradcheck(WrongGrad.apply, (x,), raise_exception=False)


def test_vmap_different_gives_each_entry_its_own_mask():
    """randomness="different" with a drawn seed: the batch is dropped as one tensor keyed by the
    first entry's seed (entry b at positions b * numel + i), so masks differ between entries."""
    x = torch.randn(5, 8, 16)
    torch.manual_seed(11)
    out = torch.func.vmap(lambda a: F.dropout(a, P), randomness="different")(x)
    torch.manual_seed(11)
    seeds = torch.func.vmap(lambda a: draw_seed(), randomness="different")(x)
    assert torch.equal(out, expected(x, seed=int(seeds[0]), offset=0))
    assert not torch.equal(out[0] != 0, out[1] != 0)


@pytest.mark.parametrize("randomness", ["same", "different"])
def test_vmap_with_one_seed_shares_one_mask(randomness):
    """An unbatched seed (randomness="same", or an explicit seed=) gives every entry one mask:
    the op is a pure function of (x, seed)."""
    x = torch.randn(4, 6, 10)
    out = torch.func.vmap(drop, randomness=randomness)(x)
    assert torch.equal(out, torch.stack([expected(row) for row in x]))
    torch.manual_seed(3)
    out = torch.func.vmap(lambda a: F.dropout(a, P), randomness="same")(x)
    assert (out[0] != 0).equal(out[3] != 0)


def test_vmap_error_mode_raises():
    """randomness="error" (vmap's default) refuses the seed draw, as torch's dropout does."""
    with pytest.raises(RuntimeError, match="randomness"):
        torch.func.vmap(lambda a: F.dropout(a, P))(torch.ones(3, 4))


def test_per_sample_gradients_through_a_module():
    """vmap(grad) over a Linear + dkn.Dropout model: each sample's gradient is its own mask's."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 1, bias=False), dkn.Dropout(0.5))
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(prm, xb):
        return torch.func.functional_call(model, prm, (xb[None],)).sum()

    xs = torch.randn(64, 6)
    grads = torch.func.vmap(torch.func.grad(loss), (None, 0), randomness="different")(params, xs)
    g = grads["0.weight"][:, 0, :]  # (64, 6): either 2 * x_b (kept) or 0 (dropped)
    kept = (g != 0).any(dim=1)
    assert torch.equal(g[kept], 2 * xs[kept])
    assert torch.equal(g[~kept], torch.zeros_like(g[~kept]))
    assert_binomial(int(kept.sum()), 64, 0.5, "samples kept")


@pytest.mark.parametrize(
    ("shape", "layout"),
    [
        ((2, 3, 4, 5), torch.channels_last),
        ((2, 3, 4, 5, 6), torch.channels_last_3d),
        ((7, 9), "transposed"),
    ],
)
def test_output_keeps_the_input_strides(shape, layout):
    """channels_last / channels_last_3d / transposed inputs give outputs with the same strides,
    and element i of the mask is the logical row-major index (equal to the contiguous result)."""
    x = torch.randn(shape)
    y = x.t() if layout == "transposed" else x.to(memory_format=layout)
    out = drop(y)
    assert out.stride() == y.stride()
    assert torch.equal(out, expected(y.contiguous()))
    y = y.detach().requires_grad_()
    (g,) = torch.autograd.grad(drop(y), y, torch.ones_like(y))
    assert g.stride() == y.stride()


def test_meta_device_shapes_only():
    """Functional and module run on meta tensors; the output is meta with the input's shape."""
    x = torch.empty(3, 4, 5, 6, device="meta").to(memory_format=torch.channels_last)
    for out in (F.dropout(x, 0.5), dkn.Dropout(0.2)(x)):
        assert out.device.type == "meta"
        assert out.shape == x.shape
        assert out.stride() == x.stride()


def test_deferred_init_on_meta_device():
    """A model built under torch.device("meta") (deferred init) runs shape inference."""
    with torch.device("meta"):
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), dkn.Dropout(0.1))
        out = model(torch.empty(2, 4))
    assert out.device.type == "meta"
    assert out.shape == (2, 8)


def test_torch_functional_signature():
    """dropout(input, p=0.5, training=True, inplace=False) positionally and by keyword."""
    x = torch.randn(3, 4)
    torch.manual_seed(5)
    a = F.dropout(input=x, p=0.5, training=True, inplace=False)
    torch.manual_seed(5)
    b = F.dropout(x, 0.5, True, False)
    assert torch.equal(a, b)
    y = x.clone()
    torch.manual_seed(5)
    out = F.dropout(y, 0.5, True, True)  # positional inplace, as in torch
    assert out is y
    assert torch.equal(y, a)
    assert F.dropout(x, 0.5, False) is x


@pytest.mark.parametrize(("p", "training"), [(0.0, True), (0.5, False), (0, True)])
def test_inplace_on_a_leaf_is_a_no_op_when_nothing_is_dropped(p, training):
    """torch returns the input for p = 0 or eval mode, even with inplace=True on a grad leaf."""
    leaf = torch.randn(4, 3, requires_grad=True)
    assert F.dropout(leaf, p, training, True) is leaf
    module = dkn.Dropout(p, inplace=True).train(training)
    assert module(leaf) is leaf
    with pytest.raises(ValueError, match="inplace"):
        F.dropout(leaf, 0.5, True, True)


@pytest.mark.parametrize("p", [0, 0.5, 1, 0.25])
def test_module_repr_and_isinstance_match_torch(p):
    """dkn.Dropout prints as torch's and is a torch.nn.Dropout (for isinstance checks)."""
    ours = dkn.Dropout(p, inplace=p == 0.25)
    assert repr(ours) == repr(torch.nn.Dropout(p, inplace=p == 0.25))
    assert isinstance(ours, torch.nn.Dropout)
    assert isinstance(ours, dkn.DropoutModule)
    state = torch.nn.Dropout(p).state_dict()
    ours.load_state_dict(state)


TORCH_TWINS = ["Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout",
               "FeatureAlphaDropout"]  # fmt: skip


@pytest.mark.parametrize("name", TORCH_TWINS)
def test_module_forward_signature_matches_torch(name):
    """``layer(input=x)`` works as on torch's module (the parameter is named ``input``)."""
    import inspect

    ours, theirs = getattr(dkn, name), getattr(torch.nn, name)
    assert list(inspect.signature(ours.forward).parameters) == list(
        inspect.signature(theirs.forward).parameters
    )
    x = torch.randn({"Dropout1d": (2, 3, 4), "Dropout3d": (2, 3, 4, 4, 4)}.get(name, (2, 3, 4, 4)))
    layer = ours(0.5).train()
    torch.manual_seed(3)
    by_keyword = layer(input=x)
    torch.manual_seed(3)
    assert torch.equal(by_keyword, layer(x))


def test_torchscript_raises_a_clear_error():
    """torch.jit.script on a model holding a dropkit module says TorchScript is unsupported."""
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), dkn.Dropout(0.3))
    with pytest.raises(RuntimeError, match="does not support TorchScript"):
        torch.jit.script(model)


def test_learned_rate_layers_exported_from_nn():
    """dropkit.nn exports the learned-rate layers next to Dropout."""
    import dropkit.nn.learned as learned

    for name in ("ConcreteDropout", "VariationalDropout", "SparseVDLinear", "Standout"):
        assert getattr(dkn, name) is getattr(learned, name)
    layer = dkn.VariationalDropout(4)
    assert isinstance(layer.log_alpha, torch.Tensor)
    assert layer.log_alpha.shape == (4,)


def test_cuda_defaults_to_the_torch_backend():
    """Until the Triton kernels pass the GPU tests on hardware, CUDA resolves to "torch"."""
    from dropkit.rng.backend import resolve

    assert resolve(torch.device("cuda"), None) == "torch"
