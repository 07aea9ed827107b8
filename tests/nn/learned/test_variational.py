"""VariationalDropout / VariationalDropoutLinear against dropkit.reference.variational, the KL
approximation against a Monte Carlo KL, and the local reparameterisation against weight noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

import dropkit
from dropkit.nn.learned.base import LearnedDropout
from dropkit.nn.learned.variational import (
    VariationalDropout,
    VariationalDropoutLinear,
    variational_dropout,
    variational_dropout_kl,
)
from dropkit.reference import gradcheck as ref_gradcheck
from dropkit.reference import variational as ref
from tests.helpers import clones
from tests.stats import assert_within

F64 = torch.float64
TOL = {"rtol": 1e-12, "atol": 1e-14}


def _randn(*shape, seed=0):
    return torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(seed))


def _set_log_alpha(layer, seed=2, low=-3.03, high=0.5):
    """Spread log alpha evenly over [low, high] in a shuffled order: with high > 0 some entries
    lie above the clip at 0; none is exactly at the kink 0."""
    n = layer.log_alpha.numel()
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    values = torch.linspace(low, high, n, dtype=F64)[order].view(layer.log_alpha.shape)
    assert (values != 0).all()
    with torch.no_grad():
        layer.log_alpha.copy_(values)


@pytest.mark.parametrize(("features", "shape"), [(6, (4, 6)), ((3, 4), (2, 3, 4))])
def test_dropout_equals_the_reference(features, shape):
    """float64, the same eps: y, dx and d(log alpha) equal the reference's (0 above the clip)."""
    layer = VariationalDropout(features).double()
    _set_log_alpha(layer)
    x = _randn(*shape).requires_grad_()
    dout = _randn(*shape, seed=1)
    torch.manual_seed(4)
    y = layer(x)
    torch.manual_seed(4)
    eps = torch.randn(shape, dtype=F64)
    y.backward(dout)
    reference = ref.VariationalDropout(features)
    reference.params["log_alpha"] = layer.log_alpha.detach().numpy().copy()
    np.testing.assert_allclose(
        y.detach().numpy(), reference.forward(x.detach().numpy(), noise=eps.numpy()), **TOL
    )
    np.testing.assert_allclose(x.grad.numpy(), reference.backward(dout.numpy()), **TOL)
    np.testing.assert_allclose(layer.log_alpha.grad.numpy(), reference.grads["log_alpha"], **TOL)
    assert (layer.log_alpha.grad[layer.log_alpha > 0] == 0).all()


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("lead", [(5,), (2, 3)])
def test_linear_equals_the_reference(bias, lead):
    layer = VariationalDropoutLinear(4, 3, bias=bias, dtype=F64)
    _set_log_alpha(layer)
    x = _randn(*lead, 4).requires_grad_()
    dout = _randn(*lead, 3, seed=1)
    torch.manual_seed(6)
    y = layer(x)
    torch.manual_seed(6)
    eps = torch.randn(*lead, 3, dtype=F64)
    y.backward(dout)
    reference = ref.VariationalDropoutLinear(4, 3, bias=bias)
    for name, value in layer.named_parameters():
        reference.params[name] = value.detach().numpy().copy()
    np.testing.assert_allclose(
        y.detach().numpy(), reference.forward(x.detach().numpy(), noise=eps.numpy()), **TOL
    )
    np.testing.assert_allclose(x.grad.numpy(), reference.backward(dout.numpy()), **TOL)
    for name, value in layer.named_parameters():
        np.testing.assert_allclose(value.grad.numpy(), reference.grads[name], **TOL, err_msg=name)


def test_kl_and_regularization_equal_the_reference():
    layer = VariationalDropoutLinear(5, 4, dtype=F64)
    _set_log_alpha(layer, low=-8.0)
    reg = layer.regularization()
    reg.backward()
    kl, grad = ref.variational_dropout_kl(layer.log_alpha.detach().numpy())
    np.testing.assert_allclose(reg.item(), kl.sum(), **TOL)
    np.testing.assert_allclose(layer.log_alpha.grad.numpy(), grad, **TOL)
    # By hand at alpha = 1/2: the fit with its constant chosen so that the KL is 0 at alpha = 1.
    a, c1, c2, c3 = 0.5, ref.C1, ref.C2, ref.C3
    expected = (c1 + c2 + c3) - (0.5 * math.log(a) + c1 * a + c2 * a**2 + c3 * a**3)
    got = variational_dropout_kl(torch.tensor(math.log(a), dtype=F64)).item()
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("linear", [False, True])
def test_reference_gradcheck(linear):
    """The reference's own backward against finite differences (log alpha below the clip)."""
    reference = ref.VariationalDropoutLinear(4, 3, rng=1) if linear else ref.VariationalDropout(4)
    shape = reference.params["log_alpha"].shape
    reference.params["log_alpha"] = np.random.default_rng(2).uniform(-3, -0.1, shape)
    assert ref_gradcheck(reference, np.random.default_rng(0).standard_normal((5, 4)))


@pytest.mark.parametrize(
    ("make", "shape"),
    [
        (lambda: VariationalDropout((2, 3)), (4, 2, 3)),
        (lambda: VariationalDropoutLinear(4, 3), (5, 4)),
    ],
)
def test_autograd_gradcheck(make, shape):
    """torch.autograd.gradcheck in float64, the noise held fixed by reseeding inside f."""
    layer = make().double()
    _set_log_alpha(layer, low=-3.0, high=-0.1)  # away from the kink of the clip
    params = {n: p.detach().clone().requires_grad_() for n, p in layer.named_parameters()}

    def f(x, *values):
        torch.manual_seed(9)
        out = functional_call(layer, dict(zip(params, values, strict=True)), (x,))
        return out, variational_dropout_kl(values[-1]).sum()  # log_alpha is the last parameter

    x = _randn(*shape).requires_grad_()
    assert torch.autograd.gradcheck(f, (x, *params.values()))


def test_kl_approximation_matches_a_monte_carlo_kl():
    """Method: with the log-uniform prior, -KL(N(theta, alpha theta^2) || p) = const + 0.5 log
    alpha - E log|1 + sqrt(alpha) xi|, xi ~ N(0, 1) (Kingma et al. 2015, appendix C). E is a
    Monte Carlo mean over 2e6 draws (the same draws for every alpha), so -KL_MC + KL_approx must
    be one constant over alpha: within the fit's error (0.005 for 0.1 <= alpha <= 1, measured by
    quadrature: 0.004) plus 6 Monte Carlo standard errors; at alpha = 0.01 within 0.04."""
    xi = np.random.default_rng(0).standard_normal(2_000_000)
    alphas = [0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0]
    residual, sds = [], []
    for alpha in [*alphas, 0.01]:
        log_abs = np.log(np.abs(1.0 + math.sqrt(alpha) * xi))
        neg_kl_mc = 0.5 * math.log(alpha) - log_abs.mean()
        kl = variational_dropout_kl(torch.tensor(math.log(alpha), dtype=F64)).item()
        residual.append(neg_kl_mc + kl)
        sds.append(log_abs.std() / math.sqrt(xi.size))
    constant = np.mean(residual[: len(alphas)])
    for alpha, r, sd in zip(alphas, residual, sds, strict=False):
        assert abs(r - constant) <= 0.005 + 6 * sd, f"alpha={alpha}: {r - constant:.5f}"
    assert abs(residual[-1] - constant) <= 0.04
    # A wrong coefficient is far outside that tolerance: c1 off by 10 % moves alpha = 1 by 0.12.


def test_lrt_moments_equal_weight_sampling():
    """Per output, the LRT samples and the explicit weight samples w = theta + sqrt(alpha)
    |theta| xi have the same mean and variance (both Gaussian: sd of a variance is
    var sqrt(2 / (n - 1))), and both match x theta^T + b and x^2 (alpha theta^2)^T."""
    n = 40_000
    layer = VariationalDropoutLinear(5, 3, dtype=F64)
    _set_log_alpha(layer, low=-2.0, high=-0.05)
    x = _randn(1, 5)
    torch.manual_seed(1)
    with torch.no_grad():
        lrt = layer(x.expand(n, 5))
        theta, alpha = layer.weight, layer.log_alpha.exp()
        w = theta + alpha.sqrt() * theta.abs() * torch.randn(n, 3, 5, dtype=F64)
        sampled = torch.einsum("noi,i->no", w, x[0]) + layer.bias
        mean = F.linear(x, theta, layer.bias)[0]
        var = F.linear(x.square(), alpha * theta.square())[0]
    for j in range(3):
        sd_mean, sd_var = math.sqrt(var[j] / n), var[j].item() * math.sqrt(2 / (n - 1))
        for name, y in [("lrt", lrt[:, j]), ("weights", sampled[:, j])]:
            assert_within(y.mean().item(), mean[j].item(), sd_mean, f"{name} mean {j}")
            assert_within(y.var().item(), var[j].item(), sd_var, f"{name} variance {j}")
        diff_sd = math.sqrt(2) * sd_var
        assert_within(lrt[:, j].var().item(), sampled[:, j].var().item(), diff_sd, f"var {j}")


def test_dropout_noise_moments():
    """E[y] = x and Var[y] = alpha x^2, per unit."""
    n = 50_000
    layer = VariationalDropout(3, p_init=0.2).double()
    alpha = 0.25
    x = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    torch.manual_seed(0)
    y = layer(x.expand(n, 3)).detach()
    for j in range(3):
        var = alpha * x[j].item() ** 2
        assert_within(y[:, j].mean().item(), x[j].item(), math.sqrt(var / n), f"mean {j}")
        assert_within(y[:, j].var().item(), var, var * math.sqrt(2 / (n - 1)), f"var {j}")


def test_log_alpha_is_clipped_at_zero():
    """log alpha is clamped at log 1 = 0 (not at alpha_max = 1 in log space, peers' bug): 0.5
    behaves as 0; no gradient above the clip, a gradient at exactly 0 (the default init)."""
    x, eps = _randn(4, 3), _randn(4, 3, seed=1)
    at_one = variational_dropout(x, torch.zeros(3, dtype=F64), eps)
    above = torch.full((3,), 0.5, dtype=F64, requires_grad=True)
    torch.testing.assert_close(variational_dropout(x, above, eps), at_one, rtol=0, atol=0)
    variational_dropout(x, above, eps).sum().backward()
    assert (above.grad == 0).all()
    layer = VariationalDropout(3).double()  # p_init = 0.5: log alpha = 0 exactly
    assert (layer.log_alpha == 0).all()
    layer(x).square().sum().backward()
    assert (layer.log_alpha.grad != 0).all()
    with torch.no_grad():
        layer.log_alpha.fill_(5.0)
    assert (layer.rates()["log_alpha"] == 0).all()
    torch.testing.assert_close(layer.rates()["p_equivalent"], torch.full((3,), 0.5, dtype=F64))
    assert layer.regularization().item() == 0.0


@pytest.mark.parametrize("log_alpha", [30.0, -30.0])
def test_extreme_log_alpha_stays_finite(log_alpha):
    x = torch.randn(8, 4)
    for layer in (VariationalDropout(4), VariationalDropoutLinear(4, 2)):
        with torch.no_grad():
            layer.log_alpha.fill_(log_alpha)
        opt = torch.optim.Adam(layer.parameters(), lr=0.1)
        for _ in range(5):
            opt.zero_grad()
            loss = layer(x).square().mean() + layer.regularization()
            assert torch.isfinite(loss)
            loss.backward()
            assert all(torch.isfinite(p.grad).all() for p in layer.parameters())
            opt.step()
        assert all(torch.isfinite(p).all() for p in layer.parameters())


def test_kl_term_keeps_alpha_from_collapsing():
    """The likelihood alone drives alpha down; with the KL (weighted 1/N) it stays larger."""

    def final_log_alpha(kl_weight):
        torch.manual_seed(0)
        x = torch.randn(128, 4)
        y = x @ torch.tensor([1.0, -1.0, 0.5, 0.0]) + 0.3 * torch.randn(128)
        layer = VariationalDropoutLinear(4, 1, p_init=0.3)
        opt = torch.optim.Adam(layer.parameters(), lr=0.05)
        for _ in range(200):
            opt.zero_grad()
            mse = (layer(x).squeeze(-1) - y).square().mean()
            (mse + kl_weight * layer.regularization()).backward()
            opt.step()
        return layer.log_alpha.mean().item()

    assert final_log_alpha(0.0) < final_log_alpha(1.0 / 128) - 1.0


def test_eval_is_deterministic():
    x = torch.randn(5, 4)
    layer = VariationalDropout(4).eval()
    assert layer(x) is x
    linear = VariationalDropoutLinear(4, 3).eval()
    assert torch.equal(linear(x), F.linear(x, linear.weight, linear.bias))
    linear.train()
    assert not torch.equal(linear(x), F.linear(x, linear.weight, linear.bias))


def test_same_init_as_linear():
    torch.manual_seed(0)
    plain = nn.Linear(7, 3)
    torch.manual_seed(0)
    layer = VariationalDropoutLinear(7, 3, p_init=0.2)
    assert torch.equal(layer.weight, plain.weight)
    assert torch.equal(layer.bias, plain.bias)
    torch.testing.assert_close(layer.log_alpha, torch.full((3, 7), math.log(0.25)))
    with torch.no_grad():
        layer.log_alpha.zero_()
    layer.reset_parameters()
    torch.testing.assert_close(layer.log_alpha, torch.full((3, 7), math.log(0.25)))


@pytest.mark.parametrize("p_init", [0.0, 0.6, 1.0, -0.1, math.nan])
@pytest.mark.parametrize("linear", [False, True])
def test_invalid_p_init(p_init, linear):
    with pytest.raises(ValueError, match=r"p_init must be in \(0, 0.5\].*got p_init="):
        VariationalDropoutLinear(3, 2, p_init=p_init) if linear else VariationalDropout(3, p_init)


def test_usage_errors():
    for features in (0, (3, 0), (), True):
        with pytest.raises(ValueError, match="features must be"):
            VariationalDropout(features)
    with pytest.raises(ValueError, match=r"expects input \(\*, 3\), got shape \(2, 4\)"):
        VariationalDropout(3)(torch.ones(2, 4))


def test_extra_repr_protocol_and_state_dict():
    assert repr(VariationalDropout(3)) == "VariationalDropout(features=(3,))"
    linear = VariationalDropoutLinear(4, 2, p_init=0.1)
    assert (
        repr(linear)
        == "VariationalDropoutLinear(in_features=4, out_features=2, bias=True, p_init=0.1)"
    )
    assert isinstance(linear, LearnedDropout)
    assert set(linear.state_dict()) == {"weight", "bias", "log_alpha"}
    fresh = VariationalDropoutLinear(4, 2)
    fresh.load_state_dict(linear.state_dict())
    x = torch.randn(3, 4)
    for other in [fresh, *clones(linear)]:
        torch.manual_seed(1)
        expected = linear(x)
        torch.manual_seed(1)
        assert torch.equal(other(x), expected)
    model = nn.Sequential(VariationalDropout(4), linear)
    total = dropkit.nn.learned.regularization(model, scale=0.5)
    torch.testing.assert_close(total, 0.5 * (model[0].regularization() + linear.regularization()))
    rates = dropkit.nn.learned.dropout_rates(model)
    assert set(rates["1"]) == {"log_alpha", "p_equivalent"}
