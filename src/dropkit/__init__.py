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

from . import acquisition, data, functional, mc, metrics, nn, reference, rng, schedules
from ._version import __version__
from .convert import ConversionReport, convert
from .nn.learned import dropout_rates, regularization

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
