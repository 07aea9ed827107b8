"""Reproducible experiments. Each returns plain results; printing and files are the CLI's job."""

from .toy_mlp import EpochRecord, ToyMLPConfig, ToyMLPResult, run_toy_mlp

__all__ = ["EpochRecord", "ToyMLPConfig", "ToyMLPResult", "run_toy_mlp"]
