"""predict's chunking to a memory budget, and the per-model cache of the prefix plan."""

from __future__ import annotations

import gc
import importlib
import logging
import weakref

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dropkit import mc
from dropkit import nn as dkn
from dropkit.mc import budget, prefix

from .models import Branchy, cnn, mlp

# the module, not the function that dropkit.mc exports under its name
predict_module = importlib.import_module("dropkit.mc.chunking")

HUGE = 2**50  # bytes: every copy in one forward


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def chunks(self) -> list[tuple[int, int]]:
        """(chunk size, bytes per copy) of every batch since the last call."""
        found = [r.args for r in self.records if r.msg.startswith("dropkit.mc: chunk_size=")]
        self.records.clear()
        return [(args[0], args[2]) for args in found]


@pytest.fixture
def log():
    """The debug records of predict (pytest's own log capture is off in this suite)."""
    logger = logging.getLogger(predict_module.__name__)
    handler, level = _Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
def traces(monkeypatch):
    """Counts the calls of prefix.build_plan (the torch.fx trace and split)."""
    calls = []
    build = prefix.build_plan

    def spy(*args):
        calls.append(args[0])
        return build(*args)

    monkeypatch.setattr(prefix, "build_plan", spy)
    return calls


@pytest.mark.parametrize("strategy", ["batched", "prefix"])
@pytest.mark.parametrize("make", [mlp, cnn], ids=["mlp", "cnn"])
def test_a_small_budget_chunks_without_changing_consistent_samples(make, strategy, log):
    model, t = make(), 12
    x = torch.randn(5, 4) if make is mlp else torch.randn(5, 3, 8, 8)
    kwargs = dict(strategy=strategy, consistent=True, seed=3, task="regression")
    whole = mc.predict(model, x, t, memory_budget=HUGE, **kwargs)
    [(size, cost)] = log.chunks()
    assert size == t
    rows = []
    hook = model[-1].register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]))
    chunked = mc.predict(model, x, t, memory_budget=5 * cost + cost // 2, **kwargs)
    hook.remove()
    assert log.chunks() == [(5, cost)]  # the cost is kept from the first call: no probe
    assert rows == [5, 5, 25, 25, 10]  # two probes of MC mode, then 5 + 5 + 2 copies
    assert whole.strategy == chunked.strategy == strategy
    torch.testing.assert_close(chunked.samples, whole.samples, atol=1e-6, rtol=1e-6)
    loop = mc.predict(model, x, t, **{**kwargs, "strategy": "loop"})
    torch.testing.assert_close(chunked.samples, loop.samples, atol=1e-6, rtol=1e-6)


def test_the_probe_leaves_seeded_draws_alone(log):
    """Without consistent masks the draws follow the chunks; the probe draws from a forked
    generator, so a budget that fits all T gives exactly the one-forward samples."""
    model, x = mlp(), torch.randn(4, 4)
    for strategy in ("batched", "prefix"):
        probed = mc.predict(model, x, 9, strategy=strategy, seed=4, task="regression")
        assert log.chunks()[0][0] == 9
        fixed = mc.predict(model, x, 9, strategy=strategy, seed=4, chunk_size=9, task="regression")
        assert log.chunks() == []  # an explicit chunk_size is not probed
        assert torch.equal(probed.samples, fixed.samples)


def test_a_loader_probes_once_and_scales_to_the_batch(log):
    model, t = mlp(), 10
    data = torch.randn(11, 4)
    loader = DataLoader(TensorDataset(data), batch_size=4)  # 4, 4, 3 rows
    kwargs = dict(strategy="prefix", consistent=True, seed=1, task="regression")
    whole = mc.predict(model, data, t, chunk_size=t, **kwargs)
    mc.predict(model, torch.randn(4, 4), t, memory_budget=HUGE, **kwargs)
    (_, cost), *_ = log.chunks()
    chunked = mc.predict(model, loader, t, memory_budget=3 * cost, **kwargs)
    # the last, smaller batch keeps the probed cost (a lower one could exceed the budget)
    assert log.chunks() == [(3, cost)] * 3
    torch.testing.assert_close(chunked.samples, whole.samples, atol=1e-6, rtol=1e-6)


def test_the_estimator_stays_within_one_and_t_and_follows_the_budget():
    model = nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 3)).eval()
    x = torch.randn(6, 4)

    def copies(samples, memory):
        return budget.copies_within_budget(
            lambda: model(x), samples, memory, modules=model.modules()
        )

    cost = budget.probe_bytes(lambda: model(x), model.modules())
    assert cost == (6 * 4 + 2 * 6 * 64 + 6 * 3) * 4  # input, hidden, ReLU, output
    assert copies(50, 1) == 1
    assert copies(50, HUGE) == 50
    for memory in (3 * cost, 3 * cost + cost // 2, 7 * cost - 1, 11 * cost):
        k = copies(1000, memory)
        assert 1 <= k <= 1000
        assert copies(1000, 2 * memory) in (2 * k, 2 * k + 1)
    assert budget.default_budget() == budget.default_budget("cpu") == 2**30


def test_the_cuda_probe_reads_the_allocator(monkeypatch):
    """The CUDA branch with fake allocator counters: the peak over the memory before, less what
    stays allocated (a workspace made on first use); a quarter of the usable memory."""
    state = {"allocated": 1000, "peak": 0, "reserved": 5000}

    def forward():
        state["peak"] = state["allocated"] + 700  # activations of one copy
        state["allocated"] += 100  # kept after the probe

    fake = {
        "reset_peak_memory_stats": lambda device: state.update(peak=state["allocated"]),
        "memory_allocated": lambda device: state["allocated"],
        "max_memory_allocated": lambda device: state["peak"],
        "memory_reserved": lambda device: state["reserved"],
        "mem_get_info": lambda device: (8000, 10**6),
    }
    for name, value in fake.items():
        monkeypatch.setattr(torch.cuda, name, value)
    assert budget.probe_bytes(forward, device="cuda") == 600
    assert budget.default_budget("cuda") == (8000 + 5000 - 1100) // 4


@pytest.mark.parametrize("memory", [0, -1, 2.5, True, "1GiB"])
def test_bad_memory_budget(memory):
    with pytest.raises(ValueError, match="memory_budget"):
        mc.predict(mlp(), torch.randn(2, 4), 3, memory_budget=memory)


def _uncached(model, x, **kwargs):
    prefix.clear_plan_cache(model)
    return mc.predict(model, x, **kwargs).samples


def test_repeated_calls_trace_once(traces):
    model, x = mlp(), torch.randn(3, 4)
    for _ in range(3):
        assert mc.predict(model, x, 4, seed=0).strategy == "prefix"
    mc.predict(model, torch.randn(7, 4), 4, strategy="prefix")  # another batch size: same plan
    assert len(traces) == 1
    plan = prefix._PLANS[model][1]
    assert plan.first is None  # the cache holds no batch
    cached = mc.predict(model, x, 4, seed=5).samples
    assert torch.equal(cached, _uncached(model, x, samples=4, seed=5))


def test_a_loader_traces_once(traces):
    model = cnn()
    loader = DataLoader(TensorDataset(torch.randn(10, 3, 8, 8)), batch_size=3)
    assert mc.predict(model, loader, 4).strategy == "prefix"
    assert mc.predict(model, loader, 4).samples.shape == (4, 10, 5)
    assert len(traces) == 1


def test_an_untraceable_model_is_not_traced_again(traces):
    model = Branchy()
    for _ in range(3):
        assert mc.predict(model, torch.randn(3, 4), 4, task="regression").strategy.startswith(
            "batched (prefix unavailable: torch.fx"
        )
    assert len(traces) == 1


def test_structural_changes_retrace(traces):
    model, x = mlp(), torch.randn(3, 4)
    kwargs = dict(samples=5, seed=2, consistent=True)
    mc.predict(model, x, **kwargs)
    model[6] = nn.Linear(16, 3)  # a new module
    new = mc.predict(model, x, **kwargs).samples
    assert len(traces) == 2
    assert torch.equal(new, _uncached(model, x, **kwargs))
    model[2] = dkn.Dropout(0.9)  # the same type, another module: the old one must not run
    new = mc.predict(model, x, **kwargs).samples
    assert len(traces) == 4  # one more by _uncached
    assert torch.equal(new, _uncached(model, x, **kwargs))
    model[0].weight = nn.Parameter(model[0].weight * 2)  # a reassigned parameter
    mc.predict(model, x, **kwargs)
    model.double()  # dtype of the input and new buffers
    mc.predict(model, x.double(), **kwargs)
    assert len(traces) == 7
    mc.predict(model, x.double(), **kwargs)
    assert len(traces) == 7


def test_rate_changes_follow_the_live_modules_or_retrace(traces):
    model, x = mlp(p=0.0), torch.randn(3, 4)
    kwargs = dict(samples=6, seed=1, task="regression")
    before = mc.predict(model, x, **kwargs).samples
    model[2].p = 0.5  # 0 -> 0.5 on a dropkit module: the plan calls the live module
    after = mc.predict(model, x, **kwargs).samples
    assert len(traces) == 2  # module 2 now samples: it leaves the prefix, a new plan
    assert not torch.equal(before, after)
    assert torch.equal(after, _uncached(model, x, **kwargs))

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.inp = nn.Linear(4, 8)
            self.attn = nn.MultiheadAttention(8, 2, dropout=0.0, batch_first=True)
            self.drop, self.out = dkn.Dropout(0.2), nn.Linear(8, 3)

        def forward(self, x):
            h = self.inp(x)
            return self.out(self.drop(self.attn(h, h, h, need_weights=False)[0])).mean(1)

    model, x = Attention(), torch.randn(2, 5, 4)
    traces.clear()
    mc.predict(model, x, **kwargs)
    model.attn.dropout = 0.3  # now attn samples (functional="auto"): it must leave the prefix
    after = mc.predict(model, x, **kwargs).samples
    assert len(traces) == 2
    assert torch.equal(after, _uncached(model, x, **kwargs))


def test_a_collected_model_leaves_no_cache_entry():
    gc.collect()
    plans, costs = len(prefix._PLANS), len(predict_module._COSTS)
    model = mlp()
    mc.predict(model, torch.randn(3, 4), 4)
    assert (len(prefix._PLANS), len(predict_module._COSTS)) == (plans + 1, costs + 1)
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None
    assert (len(prefix._PLANS), len(predict_module._COSTS)) == (plans, costs)
