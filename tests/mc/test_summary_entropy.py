"""The running expected entropy (no per-element log) against ``entr`` in float64."""

from __future__ import annotations

import torch

from dropkit.mc.result import summarize


def reference(logits: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean over samples of ``-sum p log p`` in float64, classes in ``dim`` of (T, N, ...)."""
    p = logits.double().softmax(dim)
    return torch.special.entr(p).sum(dim).mean(0)


def test_expected_entropy_matches_entr_on_token_logits() -> None:
    g = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(7, 3, 5, 50, generator=g)  # (T, N, L, V)
    r = summarize(logits, "classification", "loop", class_dim=2)
    torch.testing.assert_close(
        r.expected_entropy.double(), reference(logits, 3), atol=2e-6, rtol=1e-5
    )


def test_confident_samples_have_entropy_near_zero_never_negative() -> None:
    logits = torch.zeros(4, 2, 6)
    logits[..., 0] = 60.0  # p_0 = 1 in fp32
    r = summarize(logits, "classification", "loop")
    assert (r.expected_entropy >= 0).all()
    torch.testing.assert_close(r.expected_entropy.double(), reference(logits, 2), atol=1e-6, rtol=0)


def test_minus_infinity_logits_fall_back_to_entr() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 3, 8, generator=g)
    logits[..., :3] = -torch.inf  # masked classes: 0 * -inf would be nan
    r = summarize(logits, "classification", "loop")
    assert torch.isfinite(r.expected_entropy).all()
    torch.testing.assert_close(
        r.expected_entropy.double(), reference(logits, 2), atol=1e-6, rtol=1e-5
    )
