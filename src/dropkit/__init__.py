"""dropkit: every dropout variant, done correctly.

Subpackages:

* :mod:`dropkit.reference` - NumPy forward/backward reference layers (the test oracle).
* :mod:`dropkit.functional` - stateless PyTorch ops, one per variant.
* :mod:`dropkit.nn` - PyTorch modules (drop-in replacements for ``torch.nn`` dropout layers).
* :mod:`dropkit.experiments` - reproducible experiments (the seed MLP run by ``dropkit demo``).
"""

from . import functional, nn, reference
from ._version import __version__

__all__ = ["__version__", "functional", "nn", "reference"]
