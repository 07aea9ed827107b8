"""``uci-mc``: MC dropout regression on a UCI dataset (Gal & Ghahramani 2016, Table 1)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from dropkit.data import DATASETS

from ..recipe import Recipe, TrialContext, check_settings, register
from ..uci_mc import PAPER_TABLE1, SplitResult, UCIConfig, run_uci, summarise


@dataclass(frozen=True)
class Settings:
    """Which dataset and how much of the protocol: the rate is the trial's (p = 0: no
    dropout, one deterministic prediction); the precision τ is chosen on a validation split
    from the dataset's published grid. ``--epochs`` sets the training epochs per fit (the
    protocol's 40 underfit with batch 128; the recipe's default is 400)."""

    dataset: str = "concrete"
    splits: int = 5
    mc_samples: int = 1000

    def __post_init__(self) -> None:
        check_settings(self, positive=("splits", "mc_samples"))
        if self.dataset not in DATASETS:
            raise ValueError(
                f"setting dataset must be one of {', '.join(sorted(DATASETS))}, got "
                f"{self.dataset!r}"
            )


def train(ctx: TrialContext) -> dict[str, float]:
    """One record per split (``epoch`` = split number); a resumed trial skips finished splits."""
    s: Settings = ctx.settings
    config = UCIConfig(dataset=s.dataset, splits=s.splits, epochs=ctx.epochs,
                       mc_samples=s.mc_samples, seed=ctx.seed, data_path=ctx.data_path,
                       dropout_grid=(ctx.p,))  # fmt: skip
    done = ctx.trial.metrics() if ctx.resume else []
    if ctx.trial.file(ctx.trial.METRICS).is_file():
        ctx.trial.write_metrics(done)  # a fresh trial starts from an empty file

    def record(result: SplitResult) -> None:
        entry = {"epoch": result.split + 1, **asdict(result)}
        ctx.trial.append_metrics(entry)
        if ctx.on_epoch is not None:
            ctx.on_epoch(entry)

    run_uci(config, on_split=record, skip=len(done))
    results = [SplitResult(**{k: r[k] for k in ("split", "p", "tau", "rmse", "log_likelihood")})
               for r in ctx.trial.metrics()]  # fmt: skip
    summary = summarise(results)
    paper_rmse, paper_ll = PAPER_TABLE1[s.dataset]
    return {**summary, "paper_rmse": paper_rmse, "paper_ll": paper_ll}


RECIPE = register(Recipe(
    name="uci-mc",
    summary="MC dropout regression on a UCI dataset: test RMSE and log-likelihood over splits",
    source="Gal & Ghahramani 2016, 'Dropout as a Bayesian approximation', Table 1",
    data="UCI regression datasets with the 20 standard splits (regenerated, not shipped)",
    task="regression", settings=Settings, train=train, default_rates=(0.0, 0.05),
    default_epochs=400,
    columns=(("rmse", "RMSE"), ("rmse_se", "RMSE s.e."), ("ll", "test LL"), ("ll_se", "LL s.e."),
             ("paper_rmse", "paper RMSE"), ("paper_ll", "paper LL")),
    curves=({"title": "test RMSE per split", "ylabel": "RMSE", "xlabel": "split",
             "keys": {"rmse": "RMSE"}},
            {"title": "test log-likelihood per split", "ylabel": "log-likelihood",
             "xlabel": "split", "keys": {"log_likelihood": "LL"}}),
    sweep_metric=("ll", "test log-likelihood"),
    notes="The paper's columns are for its tuned dropout rate and 10,000 MC samples; here each "
    "trial fixes the rate. 400 epochs by default: with batch 128 the protocol's 40 epochs leave "
    "the small datasets underfitted (concrete RMSE 8.3 at 40 epochs, 5.4 at 400).",
))  # fmt: skip
