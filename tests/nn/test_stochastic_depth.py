"""Skip-compute stochastic depth: exact agreement with x + drop_path(f(x)) under the same stream,
the fixed and batch modes' distributions, coupling errors, checkpointing, autocast, compile,
MC dropout and the transformer-block helper."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import dropkit.nn as dkn
from dropkit import mc
from dropkit.functional import drop_path, drop_path_residual
from dropkit.functional.drop_path_residual import kept_rows
from tests.stats import assert_binomial

N, L, D = 12, 3, 6


def branch(dtype=torch.float64) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.LayerNorm(D), nn.Linear(D, 2 * D), nn.GELU(), nn.Linear(2 * D, D)).to(
        dtype
    )


def inputs(dtype=torch.float64) -> torch.Tensor:
    return torch.randn(N, L, D, dtype=dtype, generator=torch.Generator().manual_seed(1))


def seed_keeping(want: str, mode: str, p: float = 0.5, n: int = N) -> int:
    """A seed of torch's generator after which a module keeps ``want`` ("none", "some" or
    "all") of ``n`` rows."""
    for seed in range(1000):
        generator = torch.Generator().manual_seed(seed)  # the stream manual_seed(seed) gives
        kept = kept_rows(n, p, mode, ndim=3, generator=generator)[0].numel()
        if {"none": kept == 0, "all": kept == n, "some": 0 < kept < n}[want]:
            return seed
    raise AssertionError(f"no seed keeps {want} rows")


def grads(f: nn.Module, out: torch.Tensor, x: torch.Tensor) -> list[torch.Tensor]:
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
    params = list(f.parameters())
    return torch.autograd.grad((out * weights).sum(), [x, *params])


@pytest.mark.parametrize("p", [0.0, 0.3, 0.7, 1.0])
@pytest.mark.parametrize("seed", [0, 5])
def test_row_mode_equals_drop_path_on_the_full_branch(p, seed):
    """Output, input gradient and parameter gradients equal x + drop_path(f(x)) in float64."""
    f = branch()
    x = inputs().requires_grad_()
    y = drop_path_residual(x, f, p, seed=seed, offset=3)
    ref = x + drop_path(f(x), p, seed=seed, offset=3)
    # round-off only: a matmul over a subset of rows may block its sums differently
    torch.testing.assert_close(y, ref, rtol=1e-13, atol=1e-14)
    assert torch.equal(y == x, ref == x)  # the same rows kept
    for g, g_ref in zip(grads(f, y, x), grads(f, ref, x), strict=True):
        torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-12)


def test_module_draws_its_seed_like_drop_path():
    """Without a seed, both draw one seed from torch's generator: manual_seed reproduces."""
    f, x = branch(), inputs()
    module = dkn.StochasticDepth(f, 0.5)
    torch.manual_seed(7)
    y = module(x)
    after = torch.randint(1 << 30, ())
    torch.manual_seed(7)
    ref = x + dkn.DropPath(0.5)(f(x))
    torch.testing.assert_close(y, ref, rtol=1e-13, atol=1e-14)
    assert torch.equal(y == x, ref == x)
    assert torch.equal(after, torch.randint(1 << 30, ()))
    assert not torch.equal(y, x + f(x))
    assert not torch.equal(y, x)


def test_gradcheck_float64():
    f, x = branch(), inputs()[:6, :1].requires_grad_()
    w = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w: drop_path_residual(x, lambda h: f(h) * w.sum(), 0.5, seed=2), (x, w)
    )


def test_eval_is_the_plain_residual():
    f, x = branch(), inputs()
    module = dkn.StochasticDepth(f, 0.9).eval()
    assert torch.equal(module(x), x + f(x))


def test_all_dropped_gives_zero_parameter_gradients_as_drop_path_does():
    f, x = branch(), inputs()
    y = dkn.StochasticDepth(f, 1.0)(x)
    y.sum().backward()
    assert torch.equal(y, x)
    assert all(p.grad is not None and not p.grad.any() for p in f.parameters())


class WithUnused(nn.Module):
    """A branch holding a parameter its forward never uses (torch leaves its grad None)."""

    def __init__(self) -> None:
        super().__init__()
        self.used, self.unused = branch(), nn.Linear(D, D).double()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.used(h)


@pytest.mark.parametrize(("mode", "want"), [("row", "none"), ("batch", "none"), ("row", "some"),
                                            ("fixed", "some"), ("batch", "all")])  # fmt: skip
def test_parameter_gradients_are_zero_or_none_as_with_ordinary_drop_path(mode, want):
    """Every gradient equals that of the ordinary form x + m * f(x) with the same mask m
    (x + DropPath(f(x)) for "row"/"batch"): zero for the used parameters of a branch that keeps
    nothing (it runs on an empty batch, so DDP sees them used), None for a parameter the
    branch never uses."""
    f, x = WithUnused(), inputs()
    seed = seed_keeping(want, "row" if mode == "fixed" else mode, 0.8)
    torch.manual_seed(seed)
    dkn.StochasticDepth(f, 0.8, mode)(x).square().sum().backward()
    got = {name: p.grad for name, p in f.named_parameters()}
    f.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    rows, scale = kept_rows(N, 0.8, mode, ndim=3)
    mask = torch.zeros(N, 1, 1, dtype=x.dtype).index_fill_(0, rows, scale)
    (x + mask * f(x)).square().sum().backward()
    for name, p in f.named_parameters():
        if name.startswith("unused"):
            assert got[name] is None, name
            assert p.grad is None, name
            continue
        torch.testing.assert_close(got[name], p.grad, rtol=1e-12, atol=1e-12)
        assert bool(got[name].any()) == (want != "none"), name


def test_extra_arguments_are_sliced_and_shared_ones_are_not():
    x = inputs()

    def f(h, row_scale, *, bias):
        return h * row_scale[:, None, None] + bias

    scale, bias = torch.arange(N, dtype=x.dtype), torch.ones(D, dtype=x.dtype)
    y = drop_path_residual(x, f, 0.5, args=(scale,), shared={"bias": bias}, seed=4)
    assert torch.equal(y, x + drop_path(f(x, scale, bias=bias), 0.5, seed=4))
    with pytest.raises(ValueError, match=r"needs 12 rows in dim 0.*shared="):
        drop_path_residual(x, f, 0.5, args=(scale[:3],), shared={"bias": bias}, seed=4)


def test_fixed_mode_keeps_exactly_k_uniformly_chosen_rows_scaled_by_n_over_k():
    f, x = branch(), inputs()
    k, full = round(N * 0.6), f(x)
    counts = torch.zeros(N)
    trials = 120
    for seed in range(trials):
        y = drop_path_residual(x, f, 0.4, mode="fixed", seed=seed)
        kept = (y != x).flatten(1).any(1)
        assert int(kept.sum()) == k
        torch.testing.assert_close(y[kept], x[kept] + full[kept] * (N / k), rtol=1e-12, atol=0)
        counts += kept
    for row in range(N):
        assert_binomial(int(counts[row]), trials, k / N, f"times row {row} was kept")
    y = drop_path_residual(x, f, 0.99, mode="fixed", seed=0)
    assert int((y != x).flatten(1).any(1).sum()) == 1  # k = max(1, round(N q))


def test_batch_mode_equals_drop_path_batch_mode():
    f, x = branch(), inputs()
    for seed in range(20):
        y = drop_path_residual(x, f, 0.5, mode="batch", seed=seed)
        assert torch.equal(y, x + drop_path(f(x), 0.5, mode="batch", seed=seed))


@pytest.mark.parametrize(
    "layer",
    [nn.BatchNorm1d(L), nn.InstanceNorm1d(L, track_running_stats=True), nn.SyncBatchNorm(L)],
    ids=["batchnorm", "instancenorm-stats", "syncbatchnorm"],
)
def test_cross_sample_layers_raise_in_training(layer):
    module = dkn.StochasticDepth(nn.Sequential(nn.Linear(D, D), layer), 0.3)
    with pytest.raises(ValueError, match=r"couples the samples.*1 \((BatchNorm1d|Instance|Sync)"):
        module(inputs(torch.float32))
    module.eval()
    assert module(inputs(torch.float32)).shape == (N, L, D)


def test_per_sample_norms_do_not_raise():
    f = nn.Sequential(nn.GroupNorm(1, L), nn.InstanceNorm1d(L), nn.Linear(D, D))
    assert dkn.StochasticDepth(f, 0.3)(inputs(torch.float32)).shape == (N, L, D)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="mode must be one of"):
        dkn.StochasticDepth(nn.Linear(D, D), 0.1, mode="sample")
    with pytest.raises(TypeError, match=r"branch must be an nn\.Module"):
        dkn.StochasticDepth(torch.sin, 0.1)
    with pytest.raises(ValueError, match=r"p must"):
        dkn.StochasticDepth(nn.Linear(D, D), 1.5)
    with pytest.raises(ValueError, match="keep the shape"):
        drop_path_residual(inputs(torch.float32), nn.Linear(D, 2), 0.5, seed=0)


@pytest.mark.parametrize("mode", ["row", "fixed", "batch"])
def test_checkpointing_replays_the_same_rows(mode):
    """Gradients with torch.utils.checkpoint equal those without (the recomputation draws
    the same rows: the seed comes from torch's generator, which checkpointing restores)."""
    f = branch()
    module = dkn.StochasticDepth(f, 0.5, mode)
    x = inputs().requires_grad_()
    seed = seed_keeping("some" if mode != "batch" else "all", "row" if mode == "fixed" else mode)
    torch.manual_seed(seed)
    plain = grads(f, module(x), x)
    torch.manual_seed(seed)
    out = checkpoint(module, x, use_reentrant=False)
    for g, g_ref in zip(grads(f, out, x), plain, strict=True):
        torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-12)


def test_autocast_matches_drop_path_under_autocast():
    """bf16 autocast: the same output (dtype float32, the residual stream's) and the same
    input and parameter gradients as x + drop_path(f(x)) under autocast."""
    f, x = branch(torch.float32), inputs(torch.float32).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = drop_path_residual(x, f, 0.5, seed=9)
        ref = x + drop_path(f(x), 0.5, seed=9)
    assert y.dtype == ref.dtype == torch.float32
    assert not torch.equal(y, x)
    assert torch.equal(y, ref)
    for g, g_ref in zip(grads(f, y, x), grads(f, ref, x), strict=True):
        # bf16 matmuls over a subset of rows may round their sums differently
        torch.testing.assert_close(g, g_ref, rtol=2e-2, atol=2e-2)


def test_compile_fixed_mode_static_shapes_no_recompiles():
    """fullgraph, dynamic=False: one graph for every step (each keeps other rows), no
    recompiles (torch._dynamo counters), outputs and gradients as in eager."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    graphs = []

    def counting(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    f = branch(torch.float32)
    module = dkn.StochasticDepth(f, 0.4, mode="fixed")
    compiled = torch.compile(module, backend=counting, fullgraph=True, dynamic=False)
    x = inputs(torch.float32).requires_grad_()
    for step in range(4):
        torch.manual_seed(step)
        y = compiled(x)
        got = grads(f, y, x)
        torch.manual_seed(step)
        ref = module(x)
        torch.testing.assert_close(y, ref)
        for g, g_ref in zip(got, grads(f, ref, x), strict=True):
            torch.testing.assert_close(g, g_ref)
    assert len(graphs) == 1
    assert counters["stats"]["unique_graphs"] == 1
    assert not counters["recompiles"]
    assert not counters["graph_break"]
    torch._dynamo.reset()


def test_compile_row_mode_dynamic_shapes():
    """dynamic=True: the kept subset's size varies from step to step (and the batch size
    with it) without new graphs after the first steps; outputs and gradients as in eager."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    f = branch(torch.float32)
    module = dkn.StochasticDepth(f, 0.4)
    compiled = torch.compile(module, backend="aot_eager", dynamic=True)
    sizes, graphs = set(), []
    for step, n in enumerate((12, 12, 8, 12, 8, 12, 12, 8)):
        x = inputs(torch.float32)[:n].requires_grad_()
        seed = seed_keeping("some", "row", 0.4, n) + 7 * step
        torch.manual_seed(seed)
        y = compiled(x)
        got = grads(f, y, x)
        torch.manual_seed(seed)
        ref = module(x)
        torch.testing.assert_close(y, ref)
        for g, g_ref in zip(got, grads(f, ref, x), strict=True):
            torch.testing.assert_close(g, g_ref)
        sizes.add(int((y != x).flatten(1).any(1).sum()))
        graphs.append(counters["stats"]["unique_graphs"])
    assert len(sizes) >= 3  # the subset size did vary
    assert graphs[2:] == [graphs[2]] * (len(graphs) - 2), graphs  # no recompiles after warm-up
    torch._dynamo.reset()


@pytest.mark.parametrize("mode", ["row", "fixed", "batch"])
@pytest.mark.parametrize("strategy", ["loop", "batched"])
def test_mc_predict_samples_the_skipped_branch(mode, strategy):
    """MC dropout sees StochasticDepth as dropout; a replicated batch samples every copy."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(D, D), dkn.StochasticDepth(nn.Sequential(nn.Linear(D, D), nn.Tanh()), 0.5, mode)
    )
    assert mc.is_dropout_module(model[1])
    x = torch.randn(4, D)
    result = mc.predict(model, x, 40, task="regression", strategy=strategy, seed=0)
    assert bool((result.variance > 0).all())
    with torch.no_grad():
        skipped = model[0](x)  # the output of a sample that dropped the branch
    # A replicated batch runs the first Linear as one larger GEMM, whose blocking may round
    # differently in the last bit: a dropped branch matches `skipped` to rounding, a kept one
    # differs by the branch's output (order 1).
    dropped = torch.isclose(result.samples, skipped, rtol=1e-5, atol=1e-6).all(-1)
    kept = (~dropped).sum(0)  # (N,) samples that kept it, per row
    for row in range(len(x)):
        assert_binomial(int(kept[row]), 40, 0.5, f"MC samples that kept the branch, row {row}")


def test_rates_from_the_depth_linear_schedule():
    from dropkit.experiments.vit import build_vit
    from dropkit.schedules import drop_path_rates

    model = build_vit(depth=4, dim=8, heads=2, drop_path_rate=0.3, skip_compute=True)
    rates = [(b.attn.p, b.mlp.p) for b in model.blocks]
    assert rates == [(r, r) for r in drop_path_rates(4, 0.3)]


@pytest.mark.parametrize("norm_first", [True, False], ids=["pre-norm", "post-norm"])
def test_encoder_layer_helper_keeps_eval_output_and_parameters(norm_first):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(D, 2, 16, dropout=0.0, batch_first=True,
                                       norm_first=norm_first, dtype=torch.float64)  # fmt: skip
    params = set(map(id, layer.parameters()))
    x, pad = inputs(), torch.zeros(N, L, dtype=torch.bool)
    pad[:, -1] = True
    causal = torch.ones(L, L, dtype=torch.bool).triu(1)  # True: not attended
    expected = layer.eval()(x, causal, pad)
    model = dkn.apply_stochastic_depth(nn.Sequential(layer), [0.5])
    block = model[0]
    assert isinstance(block, dkn.stochastic_depth_blocks.SkipEncoderLayer)
    assert set(map(id, model.parameters())) == params  # an optimizer built before still works
    torch.testing.assert_close(block.eval()(x, causal, pad), expected, rtol=1e-12, atol=1e-12)
    block.train()
    y = block(x, causal, pad)
    y.sum().backward()
    assert y.shape == x.shape
    with pytest.raises(ValueError, match="3-D src_mask"):
        block(x, causal.expand(2 * N, L, L))


def test_encoder_layer_helper_errors():
    layer = nn.TransformerEncoderLayer(D, 2, 16)
    with pytest.raises(ValueError, match="batch_first=True"):
        dkn.apply_stochastic_depth(nn.Sequential(layer), 0.1)
    layer = nn.TransformerEncoderLayer(D, 2, 16, batch_first=True)
    with pytest.raises(ValueError, match="pass rates="):
        dkn.apply_stochastic_depth(nn.Sequential(layer))
    with pytest.raises(ValueError, match="rates has 2 entries but the model has 1 blocks"):
        dkn.apply_stochastic_depth(nn.Sequential(layer), [0.1, 0.2])
    with pytest.raises(ValueError, match="no TransformerEncoderLayer"):
        dkn.apply_stochastic_depth(nn.Linear(2, 2), 0.1)
