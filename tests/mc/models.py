"""Small models shared by the MC tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dropkit import nn as dkn


def mlp(p: float = 0.5) -> nn.Sequential:
    """Linear-ReLU-Dropout-Linear-BatchNorm-Dropout-Linear: a prefix, two dropouts, a BN."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(4, 16), nn.ReLU(), dkn.Dropout(p), nn.Linear(16, 16), nn.BatchNorm1d(16),
        dkn.Dropout(0.3), nn.Linear(16, 3),
    )  # fmt: skip
    warm_up(model, torch.randn(32, 4))
    return model


class Branchy(nn.Module):
    """Linear then Dropout, with data-dependent control flow that torch.fx cannot trace."""

    def __init__(self):
        super().__init__()
        self.inp, self.drop = nn.Linear(4, 4), dkn.Dropout(0.5)

    def forward(self, x):
        if x.sum() > 0:
            return self.drop(self.inp(x))
        return self.drop(-self.inp(x))


def cnn() -> nn.Sequential:
    """Conv-BN-ReLU-Dropout2d-Conv-Flatten-Linear on (N, 3, 8, 8)."""
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), dkn.Dropout2d(0.5), nn.Conv2d(8, 4, 3),
        nn.Flatten(), nn.Linear(4 * 4 * 4, 5),
    )  # fmt: skip
    warm_up(model, torch.randn(16, 3, 8, 8))
    return model


def warm_up(model: nn.Module, x: torch.Tensor) -> None:
    """One training forward so that BatchNorm's running statistics are not the defaults."""
    model.train()
    with torch.no_grad():
        model(x)


class Attention(nn.Module):
    """Attention-style block: dropout by a function call, and a BatchNorm child."""

    def __init__(self, p: float = 0.3) -> None:
        super().__init__()
        self.q = nn.Linear(8, 8)
        self.p = p
        self.norm = nn.BatchNorm1d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(F.dropout(self.q(x), self.p, training=self.training))


class FunctionalNet(nn.Module):
    """No dropout module at all: only ``F.dropout(..., training=self.training)`` inside."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.inp = nn.Linear(4, 8)
        self.attn = Attention()
        self.out = nn.Linear(8, 3)
        warm_up(self, torch.randn(16, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.attn(self.inp(x)))


def bn_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every BatchNorm buffer (running stats and num_batches_tracked)."""
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "tracked" in k}


def assert_same_state(before: dict, model: nn.Module) -> None:
    after = bn_state(model)
    assert before
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
