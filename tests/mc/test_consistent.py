"""consistent=True: the same T masks for every input, batch, call and strategy."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dropkit import mc
from dropkit import nn as dkn
from dropkit.rng import random_words
from tests.stats import assert_binomial

from .models import FunctionalNet, cnn, mlp

STRATEGIES = [("loop", None), ("batched", None), ("batched", 3), ("prefix", None), ("prefix", 4)]


def _all_strategies(model, x, samples=7, **kwargs):
    results = {}
    for strategy, chunk in STRATEGIES:
        result = mc.predict(
            model, x, samples, strategy=strategy, chunk_size=chunk, consistent=True, **kwargs
        )
        results[strategy, chunk] = result
        assert result.strategy == strategy
    return results


@pytest.mark.parametrize("make", [mlp, cnn], ids=["mlp", "cnn"])
def test_loop_batched_prefix_give_identical_samples(make):
    model = make()
    x = torch.randn(5, 4) if make is mlp else torch.randn(5, 3, 8, 8)
    results = _all_strategies(model, x, seed=11)
    loop = results["loop", None].samples
    assert not torch.allclose(loop[0], loop[1])  # masks differ across samples
    for key, result in results.items():
        torch.testing.assert_close(result.samples, loop, atol=1e-6, rtol=1e-6, msg=str(key))


class _Zoo(nn.Module):
    """Every consistent-capable dropkit module, reached from ids of shape (N, L)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.emb = dkn.EmbeddingDropout(0.3, nn.Embedding(10, 8))
        self.locked = dkn.LockedDropout(0.3, batch_first=True)
        self.conv = nn.Conv1d(8, 8, 1)
        self.d1 = dkn.Dropout1d(0.3)
        self.fa = dkn.FeatureAlphaDropout(0.2)
        self.block = dkn.DropBlock2d(0.3, block_size=2)
        self.d3 = dkn.Dropout3d(0.2)
        self.connect = dkn.DropConnectLinear(48, 16, p=0.3)
        self.gauss = dkn.GaussianDropout(0.2)
        self.alpha = dkn.AlphaDropout(0.2)
        self.path = dkn.DropPath(0.3)
        self.wd = dkn.WeightDrop(nn.Linear(16, 16), "weight", p=0.3)
        self.shared = dkn.Dropout(0.3, broadcast_dims=(1,))
        branch = nn.Sequential(nn.Linear(16, 16), nn.Tanh(), dkn.Dropout(0.2))
        self.depth = dkn.StochasticDepth(branch, p=0.4)

    def forward(self, ids):
        h = self.locked(self.emb(ids % 10))  # (N, 6, 8); "% 10" is the prefix
        h = self.fa(self.d1(self.conv(h.transpose(1, 2))))  # (N, 8, 6)
        h = self.block(h.reshape(-1, 8, 2, 3))
        h = self.d3(h.reshape(-1, 4, 2, 2, 3)).flatten(1)
        h = self.alpha(self.gauss(self.connect(h)))
        return self.depth(self.shared(h + self.path(self.wd(h))))


def test_every_dropkit_module_is_consistent_across_strategies():
    model = _Zoo()
    ids = torch.randint(0, 10, (4, 6))
    results = _all_strategies(model, ids, task="regression", seed=5)
    loop = results["loop", None].samples
    for key, result in results.items():
        torch.testing.assert_close(result.samples, loop, atol=1e-6, rtol=1e-6, msg=str(key))
    assert (results["prefix", None].variance > 0).float().mean() > 0.5


def test_masks_do_not_depend_on_the_input_position_batch_or_call():
    model = mlp()
    a, b, c = torch.randn(3, 4)
    first = mc.predict(model, torch.stack([a, b]), 9, consistent=True, seed=2).samples
    second = mc.predict(model, torch.stack([c, c, a]), 9, consistent=True, seed=2).samples
    torch.testing.assert_close(first[:, 0], second[:, 2], atol=1e-6, rtol=1e-6)
    again = mc.predict(model, torch.stack([a, b]), 9, consistent=True, seed=2).samples
    assert torch.equal(first, again)
    other = mc.predict(model, torch.stack([a, b]), 9, consistent=True, seed=3).samples
    assert not torch.allclose(first, other)
    default = mc.predict(model, torch.stack([a, b]), 9, consistent=True).samples
    assert torch.equal(
        default, mc.predict(model, torch.stack([a, b]), 9, consistent=True, seed=0).samples
    )


def test_one_mask_per_sample_shared_by_the_batch_and_rate_p():
    model = nn.Sequential(nn.Identity(), dkn.Dropout(0.5))
    out = mc.predict(model, torch.ones(4, 50), 40, task="regression", consistent=True).samples
    assert torch.equal(out, out[:, :1].expand_as(out))  # every row of a sample: same mask
    assert not torch.equal(out[0], out[1])
    assert_binomial(int((out[:, 0] == 0).sum()), 40 * 50, 0.5, "dropped units")


class _Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp, self.drop = nn.Identity(), dkn.Dropout(0.5)

    def forward(self, x):
        h = self.inp(x)
        return torch.cat([self.drop(h), self.drop(h)], 1)


@pytest.mark.parametrize("strategy", ["loop", "prefix"])
def test_a_module_called_twice_draws_two_masks(strategy):
    out = mc.predict(
        _Twice(), torch.ones(2, 64), 3, task="regression", consistent=True, strategy=strategy
    )
    assert out.samples.shape == (3, 2, 128)
    assert out.strategy == strategy
    assert not torch.equal(out.samples[..., :64], out.samples[..., 64:])


def test_a_forward_patched_on_the_instance_is_not_traced():
    model = nn.Sequential(nn.Linear(4, 4), dkn.Dropout(0.5))
    model.forward = lambda x: torch.cat([model[1](model[0](x)), x], 1)
    out = mc.predict(model, torch.ones(2, 4), 3, task="regression", consistent=True)
    assert out.samples.shape == (3, 2, 8)
    assert out.strategy == "batched (prefix unavailable: forward is replaced on the instance)"


def test_dataloader_equals_the_concatenated_tensor():
    model = mlp()
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    loader = DataLoader(TensorDataset(x, y), batch_size=3)
    whole = mc.predict(model, x, 6, consistent=True, seed=4, targets=y)
    batched = mc.predict(model, loader, 6, consistent=True, seed=4, target=1)
    torch.testing.assert_close(batched.samples, whole.samples, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(batched.log_likelihood, whole.log_likelihood)
    only_x = DataLoader(TensorDataset(x), batch_size=5)
    torch.testing.assert_close(
        mc.predict(model, only_x, 6, consistent=True, seed=4).mean, whole.mean
    )


def test_sample_seed_is_the_documented_derivation():
    for seed, k, t in [(0, 0, 0), (7, 2, 5), (2**62, 3, 2**20 - 1)]:
        w0, w1 = random_words(seed, 2 * (k * 2**20 + t), 2).tolist()
        assert mc.sample_seed(seed, k, t) == ((int(w0) & 0x7FFFFFFF) << 32) | int(w1)
    seeds = {mc.sample_seed(1, k, t) for k in range(3) for t in range(50)}
    assert len(seeds) == 150
    assert all(0 <= s < 2**63 for s in seeds)


def test_torch_and_functional_dropout_are_consistent_without_convert():
    for model, x in [
        (nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Linear(4, 2)), torch.randn(3, 4)),
        (FunctionalNet(), torch.randn(3, 4)),
    ]:
        runs = [
            mc.predict(model, x, 5, consistent=True, seed=2, strategy=s, task="regression")
            for s in ("loop", "batched", "prefix")
        ]
        for run in runs[1:]:
            torch.testing.assert_close(run.samples, runs[0].samples, atol=1e-6, rtol=1e-6)
        assert not torch.equal(runs[0].samples[0], runs[0].samples[1])


def test_noise_that_is_not_a_mask_cannot_be_consistent():
    class Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(4, 4)

        def forward(self, x):
            h = self.inp(x)
            return h + torch.randn_like(h) * 0.1 if self.training else h

    model = nn.Sequential(nn.Linear(4, 4), Noisy())
    with pytest.raises(ValueError, match=r"randn.*module '1' \(Noisy\)"):
        mc.predict(model, torch.randn(3, 4), 4, consistent=True, task="regression")
    assert mc.predict(model, torch.randn(3, 4), 4, task="regression").variance.min() > 0


@pytest.mark.parametrize("consistent", [False, True])
def test_dropout_nested_in_a_batch_mode_stochastic_depth_sees_one_sample(consistent):
    # The outer module runs once per sample's copy of the batch; a batch-mode DropPath inside
    # its branch must see that copy as one sample (3 rows), not as 4 copies to split again.
    torch.manual_seed(0)
    branch = nn.Sequential(nn.Linear(6, 6), dkn.DropPath(0.5, mode="batch"))
    model = nn.Sequential(dkn.StochasticDepth(branch, p=0.3, mode="batch"), nn.Linear(6, 2))
    x = torch.randn(3, 6)
    loop = mc.predict(model, x, 4, strategy="loop", task="regression", seed=2, consistent=True)
    batched = mc.predict(
        model, x, 4, strategy="batched", task="regression", seed=2, consistent=consistent
    )
    assert batched.samples.shape == (4, 3, 2)
    if consistent:
        torch.testing.assert_close(batched.samples, loop.samples, atol=1e-6, rtol=1e-6)
    # one draw per sample for the whole batch: every row of a sample moves together, so a
    # sample's rows all equal the deterministic rows or none do (for each of the 4 outcomes)
    outcomes = {
        tuple(torch.isclose(s, batched.samples[0]).all(dim=1).tolist()) for s in batched.samples
    }
    assert all(len(set(o)) == 1 for o in outcomes)
