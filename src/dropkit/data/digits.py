"""scikit-learn's 8x8 handwritten digits, split for quick classification experiments.

The images are the test part of the UCI "Optical Recognition of Handwritten Digits" data
(E. Alpaydin and C. Kaynak, 1998): 1797 images of 8x8 cells, each cell counting the set pixels
of a 4x4 block of a 32x32 bitmap (0..16). scikit-learn ships them inside its wheel, so nothing
is downloaded.
"""

from __future__ import annotations

from numbers import Real

import numpy as np

from dropkit.metrics._optional import require

_N_IMAGES = 1797
_MAX_LEVEL = 16.0  # each cell counts the set pixels of a 4x4 block


def load_digits_split(
    test_size: float = 0.25, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A stratified train/test split of the 1797 digits: ``(x_train, y_train, x_test, y_test)``.

    Features are ``float32 (n, 64)`` (the 8x8 image flattened row by row) scaled to ``[0, 1]``
    by dividing the 0..16 counts by 16; labels are ``int64 (n,)`` in ``0..9``. The split is
    ``sklearn.model_selection.train_test_split(x, y, test_size=test_size, stratify=y,
    random_state=seed)``: ``ceil(test_size * 1797)`` test images, every class in the same
    proportion in both parts, the same split for the same ``seed``. ``test_size`` is a fraction
    in the open interval (0, 1) (ValueError otherwise). Source: scikit-learn's
    ``load_digits`` (UCI optical digits test set, Alpaydin & Kaynak 1998).

    >>> x_train, y_train, x_test, y_test = load_digits_split()
    >>> x_train.shape, x_test.shape, x_train.dtype.name, y_train.dtype.name
    ((1347, 64), (450, 64), 'float32', 'int64')
    """
    # A bool is a Real too, and True would read as "all of it"; NaN fails the comparison.
    if isinstance(test_size, bool) or not isinstance(test_size, Real) or not 0 < test_size < 1:
        raise ValueError(
            f"test_size must be a fraction in the open interval (0, 1), got {test_size!r}"
        )
    # Imported here: scikit-learn takes about a second to import, and most users of
    # dropkit.data never need it.
    load_digits = require("sklearn.datasets", "load_digits").load_digits
    from sklearn.model_selection import train_test_split

    images, labels = load_digits(return_X_y=True)
    if images.shape != (_N_IMAGES, 64):
        raise ValueError(f"scikit-learn's digits are {images.shape}, expected ({_N_IMAGES}, 64)")
    x = (images / _MAX_LEVEL).astype(np.float32)
    y = labels.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=float(test_size), stratify=y, random_state=seed
    )
    return x_train, y_train, x_test, y_test
