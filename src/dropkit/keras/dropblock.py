"""DropBlock for Keras: drop contiguous square regions of feature maps.

Ghiasi, Lin & Le 2018, "DropBlock: A regularization method for convolutional networks"
(arXiv:1810.12890), Algorithm 1. The mask is :mod:`dropkit.reference.dropblock`'s, as in
:class:`dropkit.nn.DropBlock2d`: block extent ``b_d = min(block_size, size_d)``, seeds only
where a whole block fits (the ``size_d - b_d + 1`` valid grid) with rate ``gamma`` from
:func:`dropkit.reference.dropblock.seed_probability`, top-left anchored blocks (odd and even
sizes alike), one mask per channel unless ``shared_channels``, and a per-sample
renormalisation ``count / kept``.
"""

from __future__ import annotations

import keras
from dropkit.reference.base import check_positive_int
from dropkit.reference.dropblock import block_extent, seed_probability

from ._base import RateLayer, check_rank


def drop_block_keep_mask(seeds, extent: tuple[int, int]):
    """Keep mask (bool, True = kept) ``(N, H, W, C)`` from block seeds ``(N, H - b_h + 1,
    W - b_w + 1, C)`` (channels-last): a seed at ``(i, j)`` drops ``[i, i + b_h) x [j, j + b_w)``.

    The union of the blocks is a stride-1 ``b_h x b_w`` max-pool over the seed grid padded by
    ``b - 1`` zeros on both sides (0/1 floats, so the pool is exact).
    """
    bh, bw = extent
    grid = keras.ops.pad(
        keras.ops.cast(seeds, "float32"), [[0, 0], [bh - 1, bh - 1], [bw - 1, bw - 1], [0, 0]]
    )
    dropped = keras.ops.max_pool(grid, (bh, bw), strides=1, padding="valid")
    return keras.ops.equal(dropped, 0.0)


@keras.saving.register_keras_serializable(package="dropkit")
class DropBlock2D(RateLayer):
    r"""DropBlock on images: drop ``b x b`` blocks, renormalise each sample.

    Train :math:`y = x \odot M \cdot |M| / \sum M` per sample, with seeds
    :math:`s \sim \mathrm{Bernoulli}(\gamma)` on the valid grid,
    :math:`\gamma = \frac{p}{b_h b_w}\frac{HW}{(H-b_h+1)(W-b_w+1)}` (clipped to [0, 1];
    ``rate = 1`` seeds everywhere, so everything is dropped), ``M`` = 1 minus the union of the
    blocks (:func:`drop_block_keep_mask`), one mask per (sample, channel) as in the paper's
    Algorithm 1 or one per sample with ``shared_channels``; ``|M|`` counts the mask entries of
    the sample and :math:`\sum M` its kept entries (scale 0 when nothing is kept). Eval
    :math:`y = x`.

    Shape: ``(N, H, W, C)`` (``data_format="channels_last"``, Keras' default) or
    ``(N, C, H, W)`` (``"channels_first"``), strictly 4 dims; output the same.

    Args:
        rate: target drop probability p in [0, 1] (blocks overlap, so slightly fewer are
            dropped: :func:`dropkit.reference.dropblock.drop_probability` gives the exact rate).
        block_size: block side b >= 1, clipped to the map.
        shared_channels: one mask per sample for all channels.
        data_format: ``"channels_last"``, ``"channels_first"`` or None
            (``keras.config.image_data_format()``).
        seed: int seed of the layer's ``keras.random.SeedGenerator``, or None.

    Example:
        >>> import keras, numpy as np
        >>> layer = DropBlock2D(0.2, block_size=3, seed=0)
        >>> keras.ops.convert_to_numpy(layer(np.ones((2, 9, 9, 4), "float32"), training=True)).shape
        (2, 9, 9, 4)
    """

    def __init__(
        self,
        rate: float = 0.1,
        block_size: int = 7,
        *,
        shared_channels: bool = False,
        data_format: str | None = None,
        seed: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(rate, seed=seed, **kwargs)
        self.block_size = check_positive_int(block_size, "block_size", "DropBlock2D")
        self.shared_channels = bool(shared_channels)
        fmt = keras.config.image_data_format() if data_format is None else data_format
        if fmt not in ("channels_last", "channels_first"):
            raise ValueError(
                "DropBlock2D: data_format must be 'channels_last' or 'channels_first', got "
                f"data_format={data_format!r}"
            )
        self.data_format = fmt

    def _channels_last_shape(self, shape: tuple) -> tuple[int, int, int, int]:
        layout = "(N, H, W, C)" if self.data_format == "channels_last" else "(N, C, H, W)"
        check_rank(shape, (4,), layout, "DropBlock2D")
        n, a, b, c = shape
        return (n, a, b, c) if self.data_format == "channels_last" else (n, b, c, a)

    def sample_seeds(self, shape: tuple):
        """Draw the block seeds (bool, channels-last ``(N, H - b_h + 1, W - b_w + 1, C or 1)``)
        for an input of ``shape``: ``U < gamma``, True with probability exactly gamma."""
        n, h, w, c = self._channels_last_shape(tuple(shape))
        extent = block_extent(self.block_size, (h, w))
        valid = (h - extent[0] + 1, w - extent[1] + 1)
        gamma = seed_probability(self.rate, self.block_size, (h, w))
        u = keras.random.uniform(
            (n, *valid, 1 if self.shared_channels else c), seed=self.seed_generator
        )
        return keras.ops.less(u, gamma)

    def call(self, inputs, training=None):
        shape = tuple(keras.ops.shape(inputs))
        _, h, w, _ = self._channels_last_shape(shape)
        if not training or self.rate == 0.0:
            return inputs
        keep = drop_block_keep_mask(self.sample_seeds(shape), block_extent(self.block_size, (h, w)))
        if self.data_format == "channels_first":
            keep = keras.ops.transpose(keep, (0, 3, 1, 2))
        kept = keras.ops.sum(keras.ops.cast(keep, inputs.dtype), axis=(1, 2, 3), keepdims=True)
        count = float(h * w * keep.shape[3 if self.data_format == "channels_last" else 1])
        scale = keras.ops.where(kept > 0, count / keras.ops.maximum(kept, 1.0), 0.0)
        return keras.ops.where(keep, inputs * scale, keras.ops.zeros_like(inputs))

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            block_size=self.block_size,
            shared_channels=self.shared_channels,
            data_format=self.data_format,
        )
        return config
