"""consistent=True on Hugging Face stochastic depth: ``floor(keep + torch.rand((N, 1, 1)))``.

BEiT (like Swin and ConvNeXt) draws one uniform per sample with ``aten.rand``; consistent MC
answers it with one uniform per MC sample shared by every input (dropkit.mc.intercept)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dropkit import mc
from tests.stats import assert_binomial


def beit(n: int = 4):
    """BeitForImageClassification on 3x8x8 images; the only randomness is drop path 0.5 in
    its second layer (rates linspace(0, 0.5, 2)); row 1 of the batch repeats row 0."""
    hf = pytest.importorskip("transformers", reason="transformers not installed ([hf])")
    cfg = hf.BeitConfig(
        image_size=8, patch_size=4, num_channels=3, hidden_size=8, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=16, num_labels=3, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, drop_path_rate=0.5, use_mean_pooling=True,
    )  # fmt: skip
    torch.manual_seed(0)
    model = hf.BeitForImageClassification._from_config(cfg)
    pixels = torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    pixels[1] = pixels[0]
    return model.eval(), {"pixel_values": pixels}


@pytest.mark.parametrize(("strategy", "chunk"), [("batched", None), ("batched", 3)])
def test_drop_path_masks_agree_with_the_loop(strategy, chunk):
    model, inputs = beit()
    loop = mc.predict(model, inputs, 6, strategy="loop", seed=4, consistent=True)
    other = mc.predict(
        model, inputs, 6, strategy=strategy, chunk_size=chunk, seed=4, consistent=True
    )
    assert other.strategy.startswith(strategy)
    torch.testing.assert_close(other.samples, loop.samples, atol=1e-5, rtol=1e-5)
    assert loop.variance.max() > 0


def _labels(values: torch.Tensor) -> list[int]:
    """For samples ``(T, C)``: the index of the first sample with the same output, per sample."""
    labels = []
    for t in range(len(values)):
        same = torch.isclose(values[:t], values[t], rtol=1e-5, atol=1e-6).all(-1).nonzero()
        labels.append(int(same[0]) if len(same) else t)
    return labels


def test_one_decision_per_sample_shared_by_every_input():
    """BEiT's layer calls its drop path twice (after attention, after the MLP): each MC sample
    makes two keep-or-drop decisions for the whole batch, so every input switches between the
    same (up to) four outputs at the same samples, and a sample repeats sample 0's pair of
    decisions with probability 1/4."""
    model, inputs = beit()
    t = 200
    samples = mc.predict(model, inputs, t, seed=9, consistent=True).samples  # (T, N, 3)
    torch.testing.assert_close(samples[:, 1], samples[:, 0], atol=0, rtol=0)  # equal inputs
    labels = [_labels(samples[:, row]) for row in range(samples.shape[1])]
    for row in range(1, len(labels)):
        assert labels[row] == labels[0], f"input {row} switches at other samples than input 0"
    assert 2 <= len(set(labels[0])) <= 4
    assert_binomial(labels[0][1:].count(0), t - 1, 0.25, "samples deciding as sample 0 did")


def test_a_rand_that_is_not_one_per_sample_raises_naming_the_module():
    class Noisy(nn.Module):
        def forward(self, x):
            if self.training:
                return x + 0.1 * torch.rand(x.shape)  # noise: no per-sample structure
            return x

    model = nn.Sequential(nn.Linear(4, 3), Noisy()).eval()
    with pytest.raises(ValueError, match=r"aten\.rand\.default in module '1' \(Noisy\)"):
        mc.predict(model, torch.randn(5, 4), 4, consistent=True, task="regression")
    # without consistent the noise is simply sampled
    assert mc.predict(model, torch.randn(5, 4), 4, task="regression").variance.max() > 0
