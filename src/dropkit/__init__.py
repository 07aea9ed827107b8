"""dropkit: every dropout variant, done correctly.

Subpackages:

* :mod:`dropkit.reference` - NumPy forward/backward reference layers (the test oracle).
* :mod:`dropkit.rng` - Philox-4x32-10 counter-based masks (NumPy reference, numba, Triton).
* :mod:`dropkit.functional` - stateless PyTorch ops, one per variant.
* :mod:`dropkit.nn` - PyTorch modules (drop-in replacements for ``torch.nn`` dropout layers).
* :mod:`dropkit.schedules` - dropout-rate schedules over training and stochastic-depth rates.
* :mod:`dropkit.mc` - Monte Carlo dropout: sampling strategies and uncertainty decomposition.
* :mod:`dropkit.metrics`, :mod:`dropkit.acquisition` - calibration/uncertainty metrics and
  active-learning acquisition functions.
* :mod:`dropkit.data` - checksummed dataset loaders.
* :mod:`dropkit.experiments` - reproducible experiments (the seed MLP run by ``dropkit demo``).

:func:`convert` replaces a model's torch/timm/torchvision dropout modules with dropkit's;
:func:`regularization` and :func:`dropout_rates` collect the loss terms and learned rates of
the learned-rate layers (:mod:`dropkit.nn.learned`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

# Subpackages and names load on first use (PEP 562): ``import dropkit`` stays cheap and
# ``import dropkit.reference`` (the NumPy oracle) imports neither torch nor numba.
_SUBMODULES = frozenset(
    {"acquisition", "data", "functional", "mc", "metrics", "nn", "reference", "rng", "schedules"}
)
_NAMES = {
    "ConversionReport": ".conversion",
    "convert": ".conversion",
    "dropout_rates": ".nn.learned",
    "regularization": ".nn.learned",
}

if TYPE_CHECKING:  # pragma: no cover - static analysers see the eager imports
    from . import acquisition, data, functional, mc, metrics, nn, reference, rng, schedules
    from .conversion import ConversionReport, convert
    from .nn.learned import dropout_rates, regularization


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dropkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "ConversionReport",
    "__version__",
    "acquisition",
    "convert",
    "data",
    "dropout_rates",
    "functional",
    "mc",
    "metrics",
    "nn",
    "reference",
    "regularization",
    "rng",
    "schedules",
]
