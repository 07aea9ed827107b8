"""Sparse variational dropout (Molchanov et al. 2017): KL, local reparameterisation, pruning."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from dropkit.nn.learned.base import dropout_rates, regularization
from dropkit.nn.learned.sparse_vd import (
    SparseVDConv2d,
    SparseVDLinear,
    compression,
    sparse_vd_kl,
    sparsity_report,
)
from tests.stats import assert_within


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: on a busy 2-core runner a dilated conv took 1–40 s with 2 threads, 0.03 s."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_kl_approximation_matches_monte_carlo():
    """Method: with w = θ(1 + √α ε), ε ~ N(0, 1), the KL to the log-uniform prior is, up to a
    constant, −½ log α + E log|1 + √α ε| (the entropy of q gives −½ log(αθ²), the prior
    E log|w|). The constant is fixed by the limit α → ∞, where the expectation tends to
    ½ log α + E log|ε| = ½ log α − (γ + log 2)/2. The expectation is a 2·10⁶-sample mean
    (common random numbers across log α). Tolerance: the approximation's own error, which we
    measured at up to 0.0093 (at log α = −3.5, on a 0.5-step grid over [−8, 8]), bounded by
    0.01, plus 6 MC standard errors."""
    eps = torch.randn(2_000_000, dtype=torch.float64, generator=_gen(0))
    for log_alpha in (-8.0, -3.5, -2.0, 0.0, 0.5, 2.0, 4.0, 8.0):
        sample = torch.log(torch.abs(1.0 + math.exp(log_alpha / 2) * eps))
        mc_kl = -0.5 * log_alpha + sample.mean().item() + 0.5 * (0.5772156649015329 + math.log(2))
        mc_sd = sample.std().item() / math.sqrt(sample.numel())
        approx = sparse_vd_kl(torch.tensor(log_alpha, dtype=torch.float64)).item()
        assert abs(approx - mc_kl) <= 0.01 + 6 * mc_sd, (log_alpha, approx, mc_kl)


def test_kl_limits():
    """KL → 0 as α → ∞ (the −k1 constant is included); KL ≈ k1 − ½ log α as α → 0."""
    log_alpha = torch.linspace(-20, 50, 141, dtype=torch.float64)
    kl = sparse_vd_kl(log_alpha)
    assert (kl.diff() < 0).all()  # less informative posterior, smaller KL
    assert kl[-1].abs() < 1e-9
    assert kl[0].item() == pytest.approx(0.63576 + 10.0, abs=1e-8)


def _assert_same_moments(lrt: torch.Tensor, sampled: torch.Tensor, what: str) -> None:
    """Per element, the means and variances of two independent samples (over dim 0, n each) of
    Gaussians agree within 6 standard errors of their difference."""
    n = lrt.shape[0]
    columns = (lrt.mean(0), sampled.mean(0), lrt.var(0), sampled.var(0))
    for i, (mean_lrt, mean_w, var_lrt, var_w) in enumerate(
        zip(*(c.flatten().tolist() for c in columns), strict=True)
    ):
        assert_within(mean_lrt, mean_w, math.sqrt(2 * var_w / n), f"{what} mean [{i}]")
        assert_within(var_lrt, var_w, 2 * var_w / math.sqrt(n - 1), f"{what} variance [{i}]")


@pytest.mark.parametrize("conv", [None, (1, 1, 1), (2, 2, 1), (1, 2, 2)])
def test_lrt_moments_equal_weight_sampling(conv):
    """LRT samples have the moments of the output computed once per sampled w = θ + σ ⊙ ε.
    ``conv``: None for the linear layer, else (stride, groups, dilation) of a padded 3×3 conv."""
    n, f64 = 20_000, torch.float64
    if conv is None:
        layer, x = SparseVDLinear(5, 4, dtype=f64), torch.randn(1, 3, 5, dtype=f64)
        op = lambda w: F.linear(x[0], w, layer.bias)  # noqa: E731
    else:
        stride, groups, dilation = conv
        layer = SparseVDConv2d(4, 4, 3, stride, 1, dilation, groups, dtype=f64)
        x = torch.randn(1, 4, 5, 5, dtype=f64)
        op = lambda w: F.conv2d(x[0], w, layer.bias, stride, 1, dilation, groups)  # noqa: E731
    torch.manual_seed(3)
    with torch.no_grad():
        layer.log_sigma2.uniform_(-3.0, 0.0)
        # repeat, not expand: a dilated conv is very slow on a stride-0 input
        lrt = layer(x.repeat(n, *[1] * (x.dim() - 1)))  # independent noise for every copy
        noise = torch.randn(n, *layer.weight.shape, dtype=f64)
        sampled = torch.func.vmap(op)(layer.weight + layer.log_sigma2.exp().sqrt() * noise)
    _assert_same_moments(lrt, sampled, "linear" if conv is None else f"conv {conv}")


@pytest.mark.parametrize("make", [lambda: SparseVDLinear(6, 3), lambda: SparseVDConv2d(2, 3, 3)])
def test_gradients_of_log_sigma2_are_finite_and_nonzero(make):
    layer = make()
    x = torch.randn(4, 6) if isinstance(layer, SparseVDLinear) else torch.randn(4, 2, 5, 5)
    torch.manual_seed(7)
    (layer(x).square().mean() + regularization(layer, scale=1e-3)).backward()
    assert torch.isfinite(layer.log_sigma2.grad).all()
    assert (layer.log_sigma2.grad != 0).all()
    assert torch.isfinite(layer.weight.grad).all()


def test_training_prunes_the_irrelevant_inputs():
    """y = 1.5 x0 − 2 x1 + x2 + noise over 10 inputs; SGVLB = N·MSE + KL, Adam, lr decaying
    linearly from 0.05. The KL drives the 7 irrelevant weights past log α = 3; the data keep
    the relevant ones well below. (Without the KL term most irrelevant log α stay below 3.)"""
    n, steps = 200, 400
    x = torch.randn(n, 10, generator=_gen(0))
    y = 1.5 * x[:, 0] - 2.0 * x[:, 1] + x[:, 2] + 0.1 * torch.randn(n, generator=_gen(1))
    torch.manual_seed(0)
    layer = SparseVDLinear(10, 1)
    opt = torch.optim.Adam(layer.parameters(), lr=0.05)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 - step / steps)
    for _ in range(steps):
        opt.zero_grad()
        loss = n * F.mse_loss(layer(x).squeeze(-1), y) + regularization(layer)
        loss.backward()
        opt.step()
        schedule.step()
    log_alpha = layer.log_alpha.detach()[0]
    assert (log_alpha[3:] > 3).all(), log_alpha
    assert (log_alpha[:3] < 3).all(), log_alpha
    assert layer.sparsity() == pytest.approx(0.7)
    layer.eval()
    with torch.no_grad():
        assert F.mse_loss(layer(x).squeeze(-1), y) < 0.05  # the pruned model still fits


def _hand_set(layer: nn.Module, pruned: torch.Tensor) -> None:
    """θ = 1 and log σ² = 5 (log α ≈ 5, pruned) where ``pruned``, −5 elsewhere."""
    with torch.no_grad():
        layer.weight.fill_(1.0)
        layer.log_sigma2.copy_(torch.where(pruned, 5.0, -5.0))


def test_sparsity_compression_and_eval_on_hand_set_log_sigma2():
    linear, conv = SparseVDLinear(4, 5), SparseVDConv2d(2, 2, 3)
    _hand_set(linear, torch.arange(20).reshape(5, 4) % 10 < 3)  # 6 of 20 pruned
    _hand_set(conv, torch.arange(36).reshape(2, 2, 3, 3) % 4 == 0)  # 9 of 36 pruned
    model = nn.Sequential(linear, nn.ReLU(), conv)
    assert linear.sparsity() == pytest.approx(0.3)
    assert sparsity_report(model) == pytest.approx({"0": 0.3, "2": 0.25})
    assert compression(model) == pytest.approx(56 / 41)
    x, image, kept = torch.randn(3, 4), torch.randn(2, 2, 6, 6), linear.log_sigma2 < 0
    assert torch.equal(linear.eval()(x), F.linear(x, linear.weight * kept, linear.bias))
    kept = conv.log_sigma2 < 0
    assert torch.equal(conv.eval()(image), F.conv2d(image, conv.weight * kept, conv.bias))
    assert not torch.equal(linear(x), F.linear(x, linear.weight, linear.bias))
    linear.threshold = conv.threshold = 6.0
    assert compression(model) == 1.0
    assert sparsity_report(model) == {"0": 0.0, "2": 0.0}
    linear.threshold = conv.threshold = -6.0
    assert compression(model) == math.inf
    with pytest.raises(ValueError, match="compression: model \\(Sequential\\) has no SparseVD"):
        compression(nn.Sequential(nn.Linear(2, 2)))


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"stride": 2, "padding": 1}, {"stride": (2, 1), "padding": (0, 2), "dilation": 2},
     {"groups": 2, "padding": 1}, {"groups": 4, "bias": False}],
)  # fmt: skip
def test_conv_shapes_and_init_match_conv2d(kwargs):
    torch.manual_seed(8)
    plain = nn.Conv2d(4, 8, 3, **kwargs)
    torch.manual_seed(8)
    layer = SparseVDConv2d(4, 8, 3, **kwargs)
    assert torch.equal(layer.weight, plain.weight)
    assert (layer.bias is None) == (plain.bias is None)
    x = torch.randn(2, 4, 9, 7)
    assert layer(x).shape == plain(x).shape == layer.eval()(x).shape
    assert layer(x[0]).shape == plain(x[0]).shape  # unbatched


def test_linear_protocol_and_init():
    torch.manual_seed(9)
    plain = nn.Linear(7, 3)
    torch.manual_seed(9)
    layer = SparseVDLinear(7, 3)
    assert torch.equal(layer.weight, plain.weight)
    assert torch.equal(layer.bias, plain.bias)
    assert (layer.log_sigma2 == -10.0).all()
    assert set(layer.state_dict()) == {"weight", "log_sigma2", "bias"}
    model = nn.Sequential(layer, nn.Tanh(), SparseVDLinear(3, 1, bias=False))
    rates = dropout_rates(model)
    assert set(rates) == {"0", "2"}
    assert torch.equal(rates["0"]["log_alpha"], layer.log_alpha.detach())
    assert layer.log_alpha.requires_grad  # a differentiable tensor attribute, read-only
    with pytest.raises(AttributeError):
        layer.log_alpha = torch.zeros(3, 7)
    expected = sparse_vd_kl(layer.log_alpha).sum() + model[2].regularization()
    torch.testing.assert_close(regularization(model), expected)
    assert layer(torch.randn(5, 2, 7)).shape == (5, 2, 3)


@pytest.mark.parametrize("log_sigma2", [30.0, -30.0])
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_extreme_initialisations_stay_finite(kind, log_sigma2):
    """θ = 0 exactly (log θ² would be −inf without the eps) and log σ² = ±30."""
    torch.manual_seed(10)
    if kind == "linear":
        layer, x = SparseVDLinear(6, 3), torch.randn(8, 6)
    else:
        layer, x = SparseVDConv2d(2, 3, 3, padding=1), torch.randn(8, 2, 5, 5)
    with torch.no_grad():
        layer.weight.zero_()
        layer.log_sigma2.fill_(log_sigma2)
    opt = torch.optim.Adam(layer.parameters(), lr=0.01)
    for _ in range(5):
        opt.zero_grad()
        out = layer(x)
        loss = out.square().mean() + regularization(layer)
        loss.backward()
        grads = [p.grad for p in layer.parameters()]
        assert all(torch.isfinite(t).all() for t in (out, loss, *grads))
        opt.step()
    assert all(torch.isfinite(t).all() for t in (*layer.parameters(), layer.eval()(x)))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"in_channels": 0}, "in_channels must be an integer >= 1, got in_channels=0"),
        ({"out_channels": -1}, "out_channels must be an integer >= 1, got out_channels=-1"),
        ({"kernel_size": 0}, "kernel_size must be an integer >= 1 or a pair of them, got 0"),
        ({"stride": 0}, "stride must be an integer >= 1"),
        ({"padding": -1}, "padding must be an integer >= 0"),
        ({"dilation": (1, 0)}, "dilation"),
        ({"groups": 3}, "groups must divide in_channels and out_channels, got groups=3"),
        ({"threshold": math.nan}, "threshold (a log α) must be a finite real number, got nan"),
    ],
)
def test_bad_conv_arguments(change, message):
    kwargs = {"in_channels": 4, "out_channels": 6, "kernel_size": 3, **change}
    with pytest.raises(ValueError, match=re.escape(f"SparseVDConv2d: {message}")):
        SparseVDConv2d(**kwargs)


def test_bad_linear_arguments():
    with pytest.raises(ValueError, match=r"SparseVDLinear: threshold .* must be a finite"):
        SparseVDLinear(3, 2, threshold=math.inf)
    with pytest.raises(ValueError, match="threshold"):  # checked on assignment too
        SparseVDLinear(3, 2).threshold = math.nan
    with pytest.raises(TypeError, match="threshold"):
        SparseVDLinear(3, 2, threshold="3")
    with pytest.raises(ValueError, match="SparseVDLinear: in_features must be an integer >= 1"):
        SparseVDLinear(0, 2)
