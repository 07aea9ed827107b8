"""``vit-droppath``: a small ViT on 8x8 digits: no DropPath, ordinary DropPath, skip-compute.

Variants per rate (depth-linear up to the trial's p): ``ordinary`` computes every residual
branch for the whole batch and zeroes the dropped samples (timm's ``DropPath``); ``skip``
computes each branch on the kept samples only (:class:`dropkit.nn.StochasticDepth`, row mode:
the same distribution). Accuracy should agree within seed noise; ``epoch_s`` (the fastest
epoch's wall-clock) shows what skipping saves.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dropkit.data import load_digits_split

from ..recipe import Recipe, TrialContext, check_settings, register
from ..trainer import CLASSIFICATION_COLUMNS, CLASSIFICATION_CURVES, run_classifier
from ..vit import build_vit


@dataclass(frozen=True)
class Settings:
    """ViT size (2x2 patches of the 8x8 digits: 17 tokens), optimiser and skip-compute mode."""

    dim: int = 64
    depth: int = 6
    heads: int = 4
    mlp_ratio: float = 2.0
    mode: str = "row"
    lr: float = 1e-3
    weight_decay: float = 0.05
    batch_size: int = 64
    test_size: float = 0.5
    mc_samples: int = 10
    n_train: int | None = None

    def __post_init__(self) -> None:
        positive = ("dim", "depth", "heads", "mlp_ratio", "lr", "batch_size", "n_train")
        check_settings(self, positive=positive, fractions=("test_size",),
                       nonnegative=("mc_samples", "weight_decay"))  # fmt: skip
        if self.mode not in ("row", "fixed", "batch"):
            raise ValueError(f"setting mode must be row, fixed or batch, got {self.mode!r}")
        if self.dim % self.heads:
            raise ValueError(f"setting dim ({self.dim}) must be divisible by heads ({self.heads})")


def train(ctx: TrialContext) -> dict[str, float]:
    s: Settings = ctx.settings
    x_train, y_train, x_test, y_test = load_digits_split(test_size=s.test_size, seed=0)
    x_train, y_train = x_train[: s.n_train], y_train[: s.n_train]
    images = [torch.from_numpy(x).reshape(-1, 1, 8, 8) for x in (x_train, x_test)]
    model = build_vit(8, 2, 1, 10, dim=s.dim, depth=s.depth, heads=s.heads,
                      mlp_ratio=s.mlp_ratio, drop_path_rate=ctx.p,
                      skip_compute=ctx.variant == "skip", mode=s.mode)  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    summary = run_classifier(
        ctx, model, optimizer, (images[0], torch.from_numpy(y_train)),
        (images[1], torch.from_numpy(y_test)), batch_size=s.batch_size, mc_samples=s.mc_samples,
    )  # fmt: skip
    times = [r["time_s"] for r in ctx.trial.metrics()]
    return {**summary, "epoch_s": min(times), "epoch_s_mean": sum(times) / len(times)}


RECIPE = register(Recipe(
    name="vit-droppath",
    summary="ViT (6 blocks, dim 64) on 8x8 digits: no DropPath vs ordinary vs skip-compute",
    source="Huang et al. 2016 stochastic depth; DINOv2's subset residual (arXiv:2304.07193)",
    data="scikit-learn digits: 1797 8x8 images, stratified 50/50 train/test split",
    task="classification", settings=Settings, train=train, default_rates=(0.0, 0.1, 0.2, 0.4),
    default_epochs=30, variants=("ordinary", "skip"),
    columns=(*CLASSIFICATION_COLUMNS, ("epoch_s", "fastest epoch (s)")),
    curves=CLASSIFICATION_CURVES,
    notes="Rates are depth-linear (dropkit.schedules.drop_path_rates) up to p; the skip "
          "variant computes each residual branch on the kept samples only.",
))  # fmt: skip
