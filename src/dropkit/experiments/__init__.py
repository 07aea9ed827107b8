"""Reproducible experiments: recipes, the runner that writes run folders, and their reports.

``dropkit list`` / ``dropkit run RECIPE`` use :func:`run_recipe`; recipes are registered in
:data:`RECIPES` when :mod:`dropkit.experiments.recipes` is imported (:func:`get_recipe` does it).
"""

from .recipe import RECIPES, Recipe, TrialContext, apply_overrides, get_recipe, register
from .report import load_run, summary_table, write_report
from .runner import ResumeError, run_recipe
from .runs import TrialDir
from .toy_mlp import EpochRecord, ToyMLPConfig, ToyMLPResult, run_toy_mlp

__all__ = [
    "RECIPES",
    "EpochRecord",
    "Recipe",
    "ResumeError",
    "ToyMLPConfig",
    "ToyMLPResult",
    "TrialContext",
    "TrialDir",
    "apply_overrides",
    "get_recipe",
    "load_run",
    "register",
    "run_recipe",
    "run_toy_mlp",
    "summary_table",
    "write_report",
]
