"""The fused bfloat16/float16 CPU kernel rounds exactly as torch does.

numba has no half types on the CPU, so the kernel widens uint16 bits to float32, scales in
float32 and rounds back to nearest even itself. Checked over every one of the 65536 bit patterns
of each half type (zeros, subnormals, the largest finite values, infinities, NaNs) against
torch's own ``(x.float() * scale).to(dtype)`` under the reference mask.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dropkit.rng import cpu, philox

pytestmark = pytest.mark.skipif(not cpu.AVAILABLE, reason="needs numba")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("p", [0.0, 0.1, 0.3, 0.5, 0.9])
def test_every_half_value_matches_torch_rounding(dtype, p):
    x = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)
    scale = 1.0 / (1.0 - p)
    thr = philox.keep_threshold(p)
    out = torch.empty_like(x)
    cpu.masked_scale_half_kernel(
        x.view(torch.int16).numpy().view(np.uint16),
        out.view(torch.int16).numpy().view(np.uint16),
        29,
        3,
        0,
        thr,
        scale,
        dtype == torch.bfloat16,
    )
    keep = torch.from_numpy(philox.random_words(29, 3, x.numel()) >= thr)
    expected = torch.where(keep, x.float() * np.float32(scale), 0.0).to(dtype)
    nan = expected.isnan()
    assert torch.equal(out.isnan(), nan)
    assert torch.equal(out.view(torch.int16)[~nan], expected.view(torch.int16)[~nan])


def test_dropout_bf16_through_the_public_function():
    """``dropout`` on a bfloat16 tensor takes the fused kernel and gives the reference mask with
    torch's float32-then-round values."""
    import dropkit.functional as F

    x = torch.randn(1 << 16).to(torch.bfloat16)
    y = F.dropout(x, 0.5, seed=3)
    keep = torch.from_numpy(philox.random_words(3, 0, x.numel()) >= philox.keep_threshold(0.5))
    assert y.dtype == torch.bfloat16
    assert torch.equal(y, torch.where(keep, (x.float() * 2.0).to(torch.bfloat16), 0.0))
