"""Imports of the optional extras, failing with one line that names the ``pip install`` to run.

The core install (numpy, torch, numba) covers the layers, masks and MC dropout; the command
line, the experiments, plots, ROC/PR areas and the datasets need the ``experiments`` extra.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtraError", "require"]


class MissingExtraError(ModuleNotFoundError):
    """An optional dependency is not installed; the message says which extra brings it."""


def require(module: str, purpose: str, extra: str = "experiments") -> ModuleType:
    """``import module``, or :class:`MissingExtraError` naming ``purpose`` and the extra.

    >>> require("math", "the example").sqrt(4.0)
    2.0
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        missing = (error.name or module).partition(".")[0]
        if missing != module.partition(".")[0]:
            raise  # a dependency of the module itself is missing: not ours to explain
        raise MissingExtraError(
            f'{purpose} needs {missing}, which is not installed; pip install "dropkit[{extra}]"',
            name=missing,
        ) from None
