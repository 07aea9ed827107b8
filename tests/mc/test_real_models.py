"""MC dropout on models nobody here wrote: tiny random-init Hugging Face models (BERT, GPT-2,
ViT), an nn.TransformerEncoder and an nn.LSTM(dropout=), with only attention or torch-internal
dropout non-zero (builders in tests/mc/real_models.py). Models are built once per module;
``predict`` restores every flag, and the tests that change flags restore them too."""

from __future__ import annotations

import functools

import pytest
import torch

from dropkit import mc
from tests.mc import real_models

pytest.importorskip("transformers", reason="transformers not installed ([hf])")

NAMES = list(real_models.BUILDERS)
FAMILY_ALPHA = 1e-4  # two-sided false-alarm rate of one test, over all its comparisons


def z_bound(comparisons: int, alpha: float = FAMILY_ALPHA) -> float:
    """Bonferroni z bound: ``max |z|`` over ``comparisons`` standard normals exceeds it with
    probability at most ``alpha``; never below 4 (two-sided 6e-5 for one comparison)."""
    q = torch.tensor(1.0 - alpha / (2 * comparisons), dtype=torch.float64)
    return max(4.0, float(torch.special.ndtri(q)))


@functools.cache
def built(name: str, impl: str | None = None):
    """One model (eval mode) and its inputs per module run."""
    builder = real_models.BUILDERS[name]
    return builder(impl) if impl else builder()


def class_dim(name: str) -> int | None:
    return -1 if name == "gpt2" else None


@pytest.mark.parametrize("name", NAMES)
def test_internal_dropout_is_sampled_and_matches_a_train_mode_loop(name):
    model, inputs = built(name)
    t = 60
    result = mc.predict(model, inputs, t, seed=0, class_dim=class_dim(name))
    assert result.variance.max() > 0  # only attention / torch-internal dropout is non-zero
    assert result.sampled  # what ran is recorded
    assert not any(m.training for m in model.modules())  # flags restored
    # the oracle: the whole model in train mode (no BatchNorm here), T forwards by hand
    model.train()
    try:
        with torch.no_grad():
            ref = torch.stack(
                [real_models.logits(real_models.call(model, inputs)).softmax(-1) for _ in range(t)]
            )
    finally:
        model.eval()
    se = ((result.variance + ref.var(0, correction=0)) / t).sqrt().clamp_min(1e-6)
    z = ((result.mean - ref.mean(0)).abs() / se).max().item()
    bound = z_bound(result.mean.numel())
    assert z <= bound, f"{name}: MC mean differs from the train-mode loop by {z:.1f} > {bound:.1f}"


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_bert_attention_dropout_both_attention_implementations(impl):
    model, inputs = built("bert", impl)
    assert mc.predict(model, inputs, 6, seed=0).variance.max() > 0


def test_gpt2_probabilities_sum_to_one_over_the_vocabulary():
    model, inputs = built("gpt2")
    result = mc.predict(model, inputs, 6, seed=0)  # ModelOutput logits: classes last
    assert result.samples.shape == (6, 3, 6, 32)
    torch.testing.assert_close(result.mean.sum(-1), torch.ones(3, 6))
    torch.testing.assert_close(result.samples.sum(-1), torch.ones(6, 3, 6))
    assert result.predictive_entropy.shape == (3, 6)
    with pytest.raises(ValueError, match="class_dim"):
        mc.predict(model, inputs, 2, output=lambda o: o.logits)  # a 3-D tensor, no class_dim


def test_keep_samples_false_gives_the_same_summaries():
    model, inputs = built("gpt2")
    kept = mc.predict(model, inputs, 8, seed=3, chunk_size=3)
    lean = mc.predict(model, inputs, 8, seed=3, chunk_size=3, keep_samples=False)
    assert lean.samples is None
    assert lean.num_samples == 8
    for field in ("mean", "variance", "mutual_information", "variation_ratio"):
        torch.testing.assert_close(getattr(lean, field), getattr(kept, field))


@pytest.mark.parametrize("name", NAMES)
def test_consistent_masks_agree_across_strategies(name):
    model, inputs = built(name)
    kw = dict(seed=5, consistent=True, class_dim=class_dim(name))
    runs = [mc.predict(model, inputs, 4, strategy=s, **kw) for s in ("loop", "batched", "prefix")]
    for run in runs[1:]:
        torch.testing.assert_close(run.samples, runs[0].samples, atol=1e-5, rtol=1e-5)
    assert runs[0].variance.max() > 0


def spread_z(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Brown-Forsythe z per element: the mean absolute deviation from the median of the
    samples ``a`` (T, ...) against that of ``b``; approximately N(0, 1) per element when both
    have the same distribution (for any distribution with a finite variance), far from 0
    when one varies less (a cached, once-drawn encoder has no spread at all)."""
    da = (a - a.median(0).values).abs()
    db = (b - b.median(0).values).abs()
    se = (da.var(0) / len(a) + db.var(0) / len(b)).sqrt().clamp_min(1e-9)
    return (da.mean(0) - db.mean(0)) / se


def test_encoder_prefix_does_not_cache_the_stochastic_encoder():
    model, x = built("encoder")
    t = 100
    runs = {
        s: mc.predict(model, x, t, seed=i, strategy=s)
        for i, s in enumerate(("loop", "batched", "prefix", "auto"))
    }
    ref = runs["loop"].samples
    bound = z_bound(3 * ref[0].numel())  # 3 strategies x 12 outputs: false alarm <= 1e-4
    for strategy, run in runs.items():
        assert run.variance.max() > 0, strategy
        if strategy != "loop":
            z = spread_z(run.samples, ref).abs().max().item()
            assert z <= bound, (
                f"{strategy}: spread differs from loop's by z = {z:.1f} > {bound:.1f}"
            )
    # the test has power: samples drawn once and repeated (what a cached encoder gives) fail
    assert spread_z(ref[:1].expand_as(ref), ref).abs().max().item() > bound


def test_dataloader_of_dict_batches_needs_target_named():
    model, inputs = built("bert")
    labels = torch.tensor([0, 1, 2, 0])
    loader = [{**inputs, "labels": labels}]
    with pytest.raises(ValueError, match="target='labels'"):
        mc.predict(model, loader, 3)
    result = mc.predict(model, loader, 3, target="labels")
    assert result.log_likelihood is not None
    pairs = [(inputs["input_ids"], inputs["attention_mask"])]
    with pytest.raises(ValueError, match="ambiguous"):
        mc.predict(model, pairs, 3)
