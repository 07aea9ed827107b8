"""ConcreteDropout / SpatialConcreteDropout against dropkit.reference.concrete, the paper's
regulariser, the relaxed mask's limit, and learning the rate."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

import dropkit
from dropkit.nn.learned.base import LearnedDropout
from dropkit.nn.learned.concrete import (
    ConcreteDropout,
    SpatialConcreteDropout,
    concrete_regularizers,
)
from dropkit.reference import concrete as ref
from dropkit.reference import gradcheck as ref_gradcheck
from tests.helpers import clones
from tests.stats import assert_binomial

F64 = torch.float64
TOL = {"rtol": 1e-12, "atol": 1e-15}
# name -> (torch layer, reference layer, input shape)
LAYERS = {
    "dense": (ConcreteDropout, ref.ConcreteDropout, (4, 6)),
    "spatial": (SpatialConcreteDropout, ref.SpatialConcreteDropout, (3, 4, 2, 3)),
}


def _randn(*shape, seed=0):
    return torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", list(LAYERS))
def test_forward_and_grads_equal_the_reference(kind):
    """float64, the same uniform noise u: y, dx and d(logit) equal the NumPy reference's."""
    make, make_ref, shape = LAYERS[kind]
    layer = make(p_init=0.3).double()
    x = _randn(*shape).requires_grad_()
    dout = _randn(*shape, seed=1)
    torch.manual_seed(7)
    y = layer(x)
    torch.manual_seed(7)  # the layer's single draw, replayed
    u = torch.rand(layer._mask_shape(x)[0], dtype=F64)
    y.backward(dout)
    reference = make_ref(0.3, layer.temperature)
    reference.params["p_logit"] = layer.p_logit.detach().numpy().copy()
    np.testing.assert_allclose(
        y.detach().numpy(), reference.forward(x.detach().numpy(), noise=u.numpy()), **TOL
    )
    np.testing.assert_allclose(x.grad.numpy(), reference.backward(dout.numpy()), **TOL)
    np.testing.assert_allclose(layer.p_logit.grad.numpy(), reference.grads["p_logit"], **TOL)
    keep = reference.mask
    assert 0.05 < np.mean(keep < 0.5) < 0.95  # a real mix of dropped and kept entries


class _Detached(ref.ConcreteDropout):
    """The known bug of detaching p in the 1/(1-p) rescale: its d(logit) term is missing."""

    def backward(self, dout):
        dx, c = super().backward(dout), self._cache
        self.grads["p_logit"] -= np.sum(dout * c["x"] * c["scale"] * c["keep"] * c["p"])
        return dx


@pytest.mark.parametrize("kind", [*LAYERS, "detached"])
def test_reference_gradcheck(kind):
    """The reference's backward against finite differences; the checker catches the bug."""
    make_ref, shape = (_Detached, (4, 6)) if kind == "detached" else LAYERS[kind][1:]
    layer = make_ref(0.3, 0.5, rng=3)
    x = np.random.default_rng(0).standard_normal(shape)
    assert ref_gradcheck(layer, x) == (kind != "detached")
    layer.params["p_logit"] = np.array(-2.0)
    assert ref_gradcheck(layer, x) == (kind != "detached")


@pytest.mark.parametrize("kind", ["dense", "spatial", "wrapped"])
def test_autograd_gradcheck(kind):
    """torch.autograd.gradcheck in float64, the noise held fixed by reseeding inside f."""
    if kind == "wrapped":
        layer, shape = ConcreteDropout(nn.Linear(5, 3), p_init=0.3, temperature=0.5), (4, 5)
    else:
        make, _, shape = LAYERS[kind]
        layer = make(p_init=0.3, temperature=0.5)
    layer = layer.double()
    params = {n: p.detach().clone().requires_grad_() for n, p in layer.named_parameters()}

    def f(x, *values):
        torch.manual_seed(11)
        return functional_call(layer, dict(zip(params, values, strict=True)), (x,))

    x = _randn(*shape).requires_grad_()
    assert torch.autograd.gradcheck(f, (x, *params.values()))


@pytest.mark.parametrize("temperature", [1.0, 0.1, 0.01])
def test_relaxed_mask_tends_to_a_hard_bernoulli(temperature):
    """z > 0.5 iff u > 1 - p, so the dropped fraction is Binomial(n, p) at every t; the
    fraction of undecided z in (0.01, 0.99) is Binomial(n, pi(t)) with the exact
    pi(t) = sigma(-a + c t) - sigma(-a - c t), c = log(99), which goes to 0 with t."""
    n = 40_000
    layer = ConcreteDropout(p_init=0.3, temperature=temperature).double()
    p = layer.p.item()
    torch.manual_seed(5)
    q = 1.0 - p
    z = 1.0 - layer(torch.ones(n, dtype=F64)) * q
    assert_binomial(int((z > 0.5).sum()), n, p, "z > 0.5")
    a, ct = math.log(p / q), math.log(99.0) * temperature
    pi = 1 / (1 + math.exp(a - ct)) - 1 / (1 + math.exp(a + ct))
    undecided = int(((z > 0.01) & (z < 0.99)).sum())
    assert_binomial(undecided, n, pi, f"undecided z at t={temperature}")
    if temperature <= 0.01:
        assert undecided < 0.03 * n


def test_regularization_closed_form_without_biases():
    """wr * ||W||^2 / (1 - p) + dr * K * (p log p + (1-p) log(1-p)), K = in_features; the bias
    (deliberately large) neither enters the value nor gets a gradient from it."""
    linear = nn.Linear(3, 2).double()
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]]))
        linear.bias.fill_(100.0)
    layer = ConcreteDropout(linear, p_init=0.2, weight_regularizer=0.5, dropout_regularizer=0.25)
    layer, p = layer.double(), 0.2
    expected = 0.5 * 15.25 / (1 - p) + 0.25 * 3 * (p * math.log(p) + (1 - p) * math.log(1 - p))
    reg = layer.regularization()
    assert reg.shape == ()
    assert reg.item() == pytest.approx(expected, rel=1e-6)  # p_logit was stored in float32
    reg.backward()
    assert linear.bias.grad is None
    torch.testing.assert_close(linear.weight.grad, 2 * 0.5 * linear.weight / (1 - layer.p.item()))
    alone = ConcreteDropout(p_init=0.2, dropout_regularizer=0.25, input_dim=3).double()
    assert alone.regularization().item() == pytest.approx(
        expected - 0.5 * 15.25 / (1 - p), rel=1e-6
    )


def test_regularization_equals_the_reference():
    linear = nn.Linear(4, 3).double()
    layer = ConcreteDropout(linear, p_init=0.35, weight_regularizer=0.3, dropout_regularizer=0.2)
    reg = layer.double().regularization()
    reg.backward()
    reference = ref.ConcreteDropout(0.35)
    reference.params["p_logit"] = layer.p_logit.detach().numpy().copy()
    square = float(linear.weight.detach().square().sum())
    value, d_logit, d_square = reference.regularization(
        4, square, weight_regularizer=0.3, dropout_regularizer=0.2
    )
    np.testing.assert_allclose(reg.item(), value, **TOL)
    np.testing.assert_allclose(layer.p_logit.grad.item(), d_logit, **TOL)
    np.testing.assert_allclose(
        linear.weight.grad.numpy(), 2 * d_square * linear.weight.detach().numpy(), **TOL
    )


def test_concrete_regularizers():
    """wr = l^2 / (tau N), dr = 2 / (tau N)."""
    assert concrete_regularizers(lengthscale=2.0, tau=4.0, n=100) == pytest.approx((0.01, 0.005))
    for name, bad in [("lengthscale", 0.0), ("tau", -1.0), ("n", 0)]:
        with pytest.raises(ValueError, match=rf"{name} must be .*got {name}="):
            concrete_regularizers(**{"lengthscale": 1.0, "tau": 1.0, "n": 10, name: bad})


def _learned_p(noise_std: float) -> float:
    """A linear regression y = x . 1 + noise, ConcreteDropout wrapping the Linear, Gaussian NLL
    with a learned noise variance. The dropout's cost in the NLL is its added variance divided by
    the noise variance, so noisier data make dropout cheaper and the entropy term (dr) wins."""
    torch.manual_seed(0)
    x = torch.randn(256, 4)
    y = x.sum(1) + noise_std * torch.randn(256)
    model = ConcreteDropout(
        nn.Linear(4, 1), p_init=0.1, weight_regularizer=0.0, dropout_regularizer=0.25
    )
    log_var = nn.Parameter(torch.zeros(()))
    opt = torch.optim.Adam([*model.parameters(), log_var], lr=0.03)
    for _ in range(400):
        opt.zero_grad()
        residual = y - model(x).squeeze(-1)
        nll = 0.5 * (residual.square() * torch.exp(-log_var) + log_var).mean()
        (nll + model.regularization()).backward()
        opt.step()
    return model.p.item()


def test_p_rises_when_the_data_are_noisier():
    clean, noisy = _learned_p(0.1), _learned_p(1.0)
    assert noisy > 0.1 > clean  # from p_init = 0.1: up for noisy data, down for clean data
    assert noisy > 3 * clean


def test_logit_gradient_from_the_data_term_alone():
    """dr = wr = 0: the relaxed mask alone carries a finite, non-zero gradient to the logit."""
    layer = ConcreteDropout(nn.Linear(6, 1), weight_regularizer=0.0, dropout_regularizer=0.0)
    x = torch.randn(32, 6)
    torch.manual_seed(1)
    (layer(x).squeeze(-1) - x.sum(1)).square().mean().backward()
    grad = layer.p_logit.grad
    assert torch.isfinite(grad)
    assert grad.abs() > 1e-4
    assert layer.regularization().item() == 0.0


def test_eval_is_deterministic_and_train_reseeds():
    x, image, linear = torch.randn(5, 4), torch.ones(6, 5, 3, 3), nn.Linear(4, 3)
    assert ConcreteDropout(p_init=0.5).eval()(x) is x  # inverted: eval returns x, no copy
    spatial = SpatialConcreteDropout(p_init=0.5)
    assert spatial.eval()(image) is image
    wrapped = ConcreteDropout(linear, p_init=0.5).eval()
    assert torch.equal(wrapped(x), linear(x))
    assert not torch.equal(wrapped.train()(x), linear(x))
    torch.manual_seed(2)  # training noise: torch's global generator
    first = spatial.train()(image)
    torch.manual_seed(2)
    assert torch.equal(spatial(image), first)
    assert torch.equal(first, first[:, :, :1, :1].expand_as(first))  # one value per (n, c)
    assert first.unique().numel() > 1


@pytest.mark.parametrize("logit", [50.0, -50.0])
@pytest.mark.parametrize("spatial", [False, True])
def test_extreme_logits_stay_finite(logit, spatial):
    """logit = +-50 (p = 1 or 0 in float32): outputs, regulariser and a few Adam steps are
    finite, because every log and the 1/(1-p) rescale are floored at eps = 1e-7."""
    if spatial:
        layer, x = SpatialConcreteDropout(nn.Conv2d(4, 2, 1)), torch.randn(8, 4, 3, 3)
    else:
        layer, x = ConcreteDropout(nn.Linear(4, 2)), torch.randn(8, 4)
    with torch.no_grad():
        layer.p_logit.fill_(logit)
    opt = torch.optim.Adam(layer.parameters(), lr=0.1)
    for _ in range(5):
        opt.zero_grad()
        loss = layer(x).square().mean() + layer.regularization()
        assert torch.isfinite(loss)
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in layer.parameters())
        opt.step()
    assert all(torch.isfinite(p).all() for p in layer.parameters())


INVALID = [("temperature", 0.0), ("temperature", -1.0), ("p_init", 0.0), ("p_init", 1.0)]
INVALID += [("p_init", math.nan), ("weight_regularizer", -1e-3), ("dropout_regularizer", -1.0)]


@pytest.mark.parametrize(("name", "value"), [*INVALID, ("input_dim", 0)])
def test_invalid_arguments(name, value):
    with pytest.raises(ValueError, match=rf"{name} must be .*got {name}="):
        ConcreteDropout(**{name: value})


def test_usage_errors():
    with pytest.raises(TypeError, match=r"p_init=0.2"):
        ConcreteDropout(0.2)
    with pytest.raises(ValueError, match="contradicts"):
        ConcreteDropout(nn.Linear(4, 2), input_dim=3)
    with pytest.raises(RuntimeError, match="input dimension K is not known"):
        ConcreteDropout().regularization()
    layer = ConcreteDropout()
    layer(torch.ones(2, 5))
    assert layer.input_dim == 5
    with pytest.raises(ValueError, match="input_dim=5"):
        layer(torch.ones(2, 4))
    with pytest.raises(ValueError, match="at least 3 dims"):
        SpatialConcreteDropout()(torch.ones(2, 3))


def test_extra_repr_and_protocol():
    layer = ConcreteDropout(nn.Linear(4, 2), p_init=0.25)
    assert repr(layer).startswith(
        "ConcreteDropout(\n  p=0.25, temperature=0.1, weight_regularizer=1e-06, "
        "dropout_regularizer=1e-05, input_dim=4\n  (layer): Linear("
    )
    assert "temperature=0.666667" in repr(SpatialConcreteDropout())
    assert isinstance(layer, LearnedDropout)
    assert set(layer.rates()) == {"p"}
    model = nn.Sequential(layer, nn.ReLU(), ConcreteDropout(nn.Linear(2, 1)))
    total = dropkit.nn.learned.regularization(model)
    torch.testing.assert_close(total, layer.regularization() + model[2].regularization())
    rates = dropkit.nn.learned.dropout_rates(model)
    assert set(rates) == {"0", "2"}
    assert not rates["0"]["p"].requires_grad


def test_state_dict_round_trip():
    torch.manual_seed(0)
    layer = SpatialConcreteDropout(nn.Conv2d(3, 2, 1), p_init=0.2)
    with torch.no_grad():
        layer.p_logit.fill_(0.7)
    assert set(layer.state_dict()) == {"p_logit", "layer.weight", "layer.bias"}
    fresh = SpatialConcreteDropout(nn.Conv2d(3, 2, 1))
    fresh.load_state_dict(layer.state_dict())
    x = torch.randn(2, 3, 4, 4)
    for other in [fresh, *clones(layer)]:
        torch.manual_seed(3)
        expected = layer(x)
        torch.manual_seed(3)
        assert torch.equal(other(x), expected)
        assert other.p.item() == layer.p.item()


def test_mc_mode_samples_learned_layers():
    """mc_mode samples learned-rate layers and keeps BatchNorm and the wrapped layer in eval."""
    from dropkit import mc

    layer = ConcreteDropout(nn.Linear(4, 2))
    assert mc.is_dropout_module(layer)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), layer)
    with mc.mc_mode(model):
        assert layer.training
        assert not model[1].training
        assert not layer.layer.training
