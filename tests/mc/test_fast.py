"""predict's CPU answers to torch's dropout (dropkit.mc.fast) against torch's own formulas."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as tF

from dropkit import functional as F
from dropkit.mc import fast


def _reference(q, k, v, mask, p, causal, scale, seed):
    """torch's SDPA math with the keep mask that dropkit draws from ``seed``."""
    s = q.shape[-1] ** -0.5 if scale is None else scale
    scores = q @ k.transpose(-2, -1) * s
    if causal:
        keep = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
        scores = scores.masked_fill(~keep, -torch.inf)
    if mask is not None:
        scores = (
            scores.masked_fill(~mask, -torch.inf) if mask.dtype == torch.bool else scores + mask
        )
    weights = torch.ops.aten._safe_softmax(scores, -1)
    torch.manual_seed(seed)
    return F.dropout(weights, p, True) @ v


@pytest.mark.parametrize("kind", ["none", "bool", "float", "causal"])
def test_sdpa_with_dropout_is_torchs_math_with_dropkits_mask(kind):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64) for _ in range(3))
    mask = None
    if kind == "bool":
        mask = torch.rand(5, 5, generator=g) > 0.3
        mask[0] = False  # a row with every key masked: zeros, as torch's safe softmax
    elif kind == "float":
        mask = torch.randn(5, 5, generator=g, dtype=torch.float64)
    causal = kind == "causal"
    torch.manual_seed(7)
    got = fast.scaled_dot_product_attention(q, k, v, mask, 0.4, causal, scale=0.3)
    want = _reference(q, k, v, mask, 0.4, causal, 0.3, 7)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # without dropout it is torch's own call
    plain = fast.scaled_dot_product_attention(q, k, v, mask, 0.0, causal, scale=0.3)
    torch.testing.assert_close(
        plain, tF.scaled_dot_product_attention(q, k, v, mask, 0.0, causal, scale=0.3)
    )


def test_the_mode_answers_dropout_and_leaves_eval_alone():
    x = torch.ones(4000)
    with fast.FastDropout():
        torch.manual_seed(3)
        y = tF.dropout(x, 0.25, True)
        same = tF.dropout(x, 0.25, False)
    torch.manual_seed(3)
    assert torch.equal(y, F.dropout(x, 0.25, True))  # dropkit's kernel, torch's seed
    assert same is x or torch.equal(same, x)
    kept = int((y != 0).sum())
    # Bernoulli(0.75) over 4000 elements: 6 sigma is about 164
    assert abs(kept - 3000) < 164
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / 0.75))
