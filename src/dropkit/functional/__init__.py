"""Stateless PyTorch dropout ops, one per variant.

Every op takes ``(x, p, training=True, *, inplace=False, ..., seed=None, offset=0,
backend=None, generator=None)``, validates its arguments (``p`` in [0, 1], floating-point input,
strict ranks for the channel/block/sequence variants) and supports autograd, any float dtype and
any device. Masks are counter-based (:mod:`dropkit.rng`): a pure function of
``(seed, offset, shape, p)``, the same on every backend and under any sharding.
"""

from .alpha import alpha_dropout, feature_alpha_dropout
from .bias_dropout_add import bias_dropout_add
from .channel import dropout1d, dropout2d, dropout3d
from .drop_path_residual import drop_path_residual
from .dropblock import drop_block2d, drop_block3d, drop_block_mask
from .dropconnect import dropconnect_linear
from .dropout import dropout
from .droppath import drop_path
from .embedding import embedded_dropout, embedding_dropout
from .gaussian import gaussian_dropout, gaussian_noise, standard_normal
from .locked import locked_dropout
from .mask import bernoulli_mask, keep_scale, mask_shape, random_words

__all__ = [
    "alpha_dropout",
    "bernoulli_mask",
    "bias_dropout_add",
    "drop_block2d",
    "drop_block3d",
    "drop_block_mask",
    "drop_path",
    "drop_path_residual",
    "dropconnect_linear",
    "dropout",
    "dropout1d",
    "dropout2d",
    "dropout3d",
    "embedded_dropout",
    "embedding_dropout",
    "feature_alpha_dropout",
    "gaussian_dropout",
    "gaussian_noise",
    "keep_scale",
    "locked_dropout",
    "mask_shape",
    "random_words",
    "standard_normal",
]
