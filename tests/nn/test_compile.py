"""dropkit.nn modules under torch.compile(fullgraph=True): no graph breaks, eval equal to eager,
training with the right statistics and gradients that follow the mask."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from torch import nn

import dropkit.nn as dkn
from dropkit.reference.alpha import ALPHA_PRIME, alpha_dropout_affine
from tests.stats import assert_binomial, assert_within

P = 0.3
Q = 1.0 - P


class Scale(nn.Module):
    """Elementwise learnable scale (initialised to 1), so the model has a parameter to train."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


# name -> (module, input shape, mask dims kept: the mask is y reduced over the other dims)
CASES = {
    "dropout": (lambda: dkn.Dropout(P), (200, 500), (0, 1)),
    "dropout-standard": (lambda: dkn.Dropout(P, inverted=False), (200, 500), (0, 1)),
    "dropout-bcast": (lambda: dkn.Dropout(P, broadcast_dims=(-1,)), (200, 100, 4), (0, 1)),
    "dropout1d": (lambda: dkn.Dropout1d(P), (100, 100, 6), (0, 1)),
    "dropout2d": (lambda: dkn.Dropout2d(P), (100, 100, 2, 3), (0, 1)),
    "dropout3d": (lambda: dkn.Dropout3d(P), (100, 100, 2, 1, 3), (0, 1)),
    "locked": (lambda: dkn.LockedDropout(P), (5, 100, 100), (1, 2)),
    "locked-batch-first": (lambda: dkn.LockedDropout(P, batch_first=True), (100, 5, 100), (0, 2)),
    "droppath": (lambda: dkn.DropPath(P), (10000, 6), (0,)),
    "alpha": (lambda: dkn.AlphaDropout(P), (200, 500), (0, 1)),
    "feature-alpha": (lambda: dkn.FeatureAlphaDropout(P), (200, 500, 3), (0, 1)),
    "gaussian": (lambda: dkn.GaussianDropout(P), (200, 500), (0, 1)),
}
ALL = pytest.mark.parametrize("name", list(CASES))
HAS_CXX = any(shutil.which(cc) for cc in ("g++", "c++", "cc"))


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Each test compiles from scratch (no recompilation limits, no cached graphs)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def build(name: str):
    make, shape, kept_dims = CASES[name]
    eager = nn.Sequential(Scale(shape[-1]), make())
    return eager, torch.compile(eager, backend="aot_eager", fullgraph=True), shape, kept_dims


def draws(t: torch.Tensor, kept_dims) -> torch.Tensor:
    """One value per mask entry: the first element along every shared dim."""
    index = tuple(slice(None) if d in kept_dims else 0 for d in range(t.dim()))
    return t[index].reshape(-1)


@ALL
def test_eval_equals_eager_exactly(name):
    """Compiled eval output is bit-identical to eager (the identity, or q*x for standard)."""
    eager, compiled, shape, _ = build(name)
    eager.eval()
    x = torch.randn(shape)
    y = compiled(x)
    assert torch.equal(y, eager(x))
    assert torch.equal(y, Q * x if name == "dropout-standard" else x)


@pytest.mark.parametrize(
    "name", [n for n in CASES if n not in ("alpha", "feature-alpha", "gaussian")]
)
def test_train_bernoulli_statistics_and_gradients(name):
    """Compiled training keeps Binomial(q) mask entries, shares them, and dx = dy * mask * scale."""
    eager, compiled, shape, kept_dims = build(name)
    x = torch.rand(shape).add_(0.5).requires_grad_(True)
    torch.manual_seed(0)
    y = compiled(x)
    y.backward(torch.ones(shape))
    scale = 1.0 if name == "dropout-standard" else 1.0 / Q
    kept = y != 0
    assert_binomial(int(draws(kept, kept_dims).sum()), draws(kept, kept_dims).numel(), Q, name)
    mask_shape = [n if d in kept_dims else 1 for d, n in enumerate(shape)]
    assert torch.equal(kept, draws(kept, kept_dims).reshape(mask_shape).expand(shape))
    torch.testing.assert_close(y, x.detach() * kept * scale, rtol=1e-6, atol=0)
    assert torch.equal(x.grad, kept * torch.tensor(scale))
    weight = eager[0].weight.grad
    assert weight is not None
    assert bool(torch.isfinite(weight).all())
    assert bool(weight.ne(0).any())


@pytest.mark.parametrize("name", ["alpha", "feature-alpha"])
def test_train_alpha_statistics_and_gradients(name):
    """Compiled alpha dropout keeps mean 0 / variance 1 on N(0, 1) input; dx = a * mask."""
    _, compiled, shape, kept_dims = build(name)
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x.requires_grad_(True)
    compiled.double()
    torch.manual_seed(2)
    y = compiled(x)
    y.backward(torch.ones(shape, dtype=torch.float64))
    y = y.detach()
    a, b = alpha_dropout_affine(P)
    kept = x.grad != 0
    n = draws(kept, kept_dims).numel()  # independent mask entries: a conservative sample size
    assert_binomial(int(draws(kept, kept_dims).sum()), n, Q, f"{name} kept")
    assert torch.equal(x.grad, kept * torch.tensor(a, dtype=torch.float64))
    expected = torch.where(
        kept, a * x.detach() + b, torch.tensor(a * ALPHA_PRIME + b, dtype=torch.float64)
    )
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
    d = a * ALPHA_PRIME + b
    fourth = Q * (3 * a**4 + 6 * a**2 * b**2 + b**4) + P * d**4
    assert_within(float(y.mean()), 0.0, 1.0 / math.sqrt(n), f"{name} mean")
    assert_within(float(y.var()), 1.0, math.sqrt((fourth - 1.0) / n), f"{name} variance")


def test_train_gaussian_statistics_and_gradients():
    """Compiled Gaussian dropout: y = x * eps with eps ~ N(1, p/q), and dx = eps."""
    eager, compiled, shape, _ = build("gaussian")
    x = torch.rand(shape, dtype=torch.float64).add_(0.5).requires_grad_(True)
    compiled.double()
    torch.manual_seed(3)
    y = compiled(x)
    y.backward(torch.ones(shape, dtype=torch.float64))
    noise, n, var = x.grad, x.numel(), P / Q
    torch.testing.assert_close(y, x.detach() * noise, rtol=1e-12, atol=0)
    assert_within(float(noise.mean()), 1.0, math.sqrt(var / n), "noise mean")
    assert_within(float(noise.var()), var, var * math.sqrt(2.0 / n), "noise variance")
    assert bool(torch.isfinite(eager[0].weight.grad).all())


@ALL
def test_train_then_eval_recompiles_cleanly(name):
    """Switching the compiled model train -> eval -> train follows the mode without errors."""
    eager, compiled, shape, _ = build(name)
    x = torch.rand(shape).add_(0.5)
    assert not torch.equal(compiled(x), compiled.eval()(x))
    assert torch.equal(compiled(x), eager(x))
    compiled.train()
    assert not torch.equal(compiled(x), eager.eval()(x))


# Importing inductor runs torch.utils.mkldnn, which uses the deprecated torch.jit.script_method.
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.skipif(not HAS_CXX, reason="the inductor backend needs a C++ compiler (g++/c++/cc)")
def test_inductor_mlp_train_and_eval():
    """Default inductor backend, fullgraph: eval matches eager; training drops Binomial(q) units."""
    torch.manual_seed(4)
    mlp = nn.Sequential(nn.Linear(16, 256), nn.Tanh(), dkn.Dropout(P), nn.Linear(256, 4))
    compiled = torch.compile(mlp, fullgraph=True)
    x = torch.randn(128, 16)
    hidden = mlp[1](mlp[0](x))
    mlp.eval()
    torch.testing.assert_close(compiled(x), mlp(x), rtol=1e-5, atol=1e-5)
    mlp.train()
    trunk = torch.compile(mlp[:3], fullgraph=True)
    h = trunk(x)
    kept = h != 0
    assert_binomial(int(kept.sum()), kept.numel(), Q, "inductor kept units")
    torch.testing.assert_close(h[kept], hidden[kept] / Q, rtol=1e-5, atol=1e-6)
    compiled(x).square().mean().backward()
    grads = [p.grad for p in mlp.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
