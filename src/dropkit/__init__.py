"""dropkit: every dropout variant, done correctly.

Subpackages:

* :mod:`dropkit.reference` - NumPy forward/backward reference layers (the test oracle).
* :mod:`dropkit.experiments` - reproducible experiments (the seed MLP run by ``dropkit demo``).
"""

from . import reference
from ._version import __version__

__all__ = ["__version__", "reference"]
