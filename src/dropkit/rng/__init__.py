"""Counter-based random numbers: Philox-4x32-10, dropkit's mask specification and its kernels.

:mod:`dropkit.rng.philox` is the NumPy reference and the written specification; ``cpu`` (numba)
and ``gpu`` (Triton) implement it bit for bit; ``ops`` wraps them as PyTorch custom operators and
``function`` as an autograd Function with forward-AD and vmap rules; ``backend`` picks one per
device and draws seeds from torch's generator; ``stream`` gives calls explicit keys instead.
"""

from .backend import BACKENDS, draw_seed, resolve
from .function import PhiloxDropout
from .ops import bias_dropout_add, dropout_kernel, philox_dropout, philox_words
from .philox import keep_mask, keep_threshold, normal, philox4x32, random_words, uniform
from .stream import Stream, call_key, stream

__all__ = [
    "BACKENDS",
    "PhiloxDropout",
    "Stream",
    "bias_dropout_add",
    "call_key",
    "draw_seed",
    "dropout_kernel",
    "keep_mask",
    "keep_threshold",
    "normal",
    "philox4x32",
    "philox_dropout",
    "philox_words",
    "random_words",
    "resolve",
    "stream",
    "uniform",
]
