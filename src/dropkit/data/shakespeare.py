"""Tiny Shakespeare: the character-level language-modelling corpus of char-rnn and nanoGPT.

One text file of 1,115,394 ASCII characters (65 distinct), compiled by A. Karpathy for char-rnn
(``karpathy/char-rnn``, ``data/tinyshakespeare/input.txt``); nanoGPT's
``data/shakespeare_char/prepare.py`` downloads the same file. The text is Shakespeare's (public
domain). :func:`load_tiny_shakespeare` returns it, fetched and checksummed like every dropkit
file (see :mod:`dropkit.data.cache`); :class:`CharCorpus` turns a text into character ids with
nanoGPT's split, the first 90% of the characters for training and the last 10% for validation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from numbers import Real

import numpy as np

from .cache import RemoteFile, fetch

TINY_SHAKESPEARE = RemoteFile(
    "tinyshakespeare/input.txt",
    "https://raw.githubusercontent.com/karpathy/char-rnn/6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e"
    "/data/tinyshakespeare/input.txt",
    "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
)

# A part needs one character as input and the next as its target.
_MIN_PART = 2


def load_tiny_shakespeare(
    path: str | os.PathLike | None = None, *, download: bool | None = None
) -> str:
    """The Tiny Shakespeare text, 1,115,394 characters, as a ``str``.

    ``path`` is the ``input.txt`` file itself or a data root holding
    ``tinyshakespeare/input.txt``; otherwise ``$DROPKIT_DATA/tinyshakespeare/input.txt`` or the
    cache is used, downloading into it (from char-rnn at a fixed commit) unless
    ``download=False`` or, with ``download=None``, ``DROPKIT_OFFLINE`` is set. The file is
    checked against its SHA-256 (ValueError on a mismatch); a missing file that may not be
    downloaded raises a one-line FileNotFoundError naming the places looked, where to put it and
    its URL.
    """
    # The module attribute is read at call time, so a mirror can be substituted for it.
    file = fetch(TINY_SHAKESPEARE, path, download=download)
    # Decoded from bytes, not read in text mode: newline translation would change the text.
    return file.read_bytes().decode("utf-8")


@dataclass(frozen=True, eq=False)
class CharCorpus:
    """A character-level corpus: its vocabulary and the train/validation character ids.

    ``vocab`` holds the distinct characters of the whole text, sorted (so ids follow code
    points, as in nanoGPT's ``prepare.py``); ``train`` and ``val`` are 1-d ``int64`` arrays of
    ids into it. Build one with :meth:`from_text`.

    >>> corpus = CharCorpus.from_text("hello world", val_fraction=0.25)
    >>> corpus.vocab, corpus.vocab_size, len(corpus.train), len(corpus.val)
    (' dehlorw', 8, 8, 3)
    >>> corpus.encode("low").tolist()
    [4, 5, 7]
    >>> corpus.decode(corpus.train)
    'hello wo'
    """

    vocab: str
    train: np.ndarray
    val: np.ndarray

    def __post_init__(self) -> None:
        if not self.vocab or list(self.vocab) != sorted(set(self.vocab)):
            raise ValueError("vocab must be a non-empty string of distinct characters, sorted")
        for name in ("train", "val"):
            ids = np.asarray(getattr(self, name))
            if ids.ndim != 1 or ids.dtype != np.int64:
                raise ValueError(f"{name} must be a 1-d int64 array, got {ids.dtype} {ids.shape}")
            if ids.size and (ids.min() < 0 or ids.max() >= len(self.vocab)):
                raise ValueError(f"{name} holds ids outside 0..{len(self.vocab) - 1}")
            # Left writable: torch.from_numpy warns on read-only arrays, and sharing these
            # arrays with torch without a copy is the point of keeping them as int64.
            object.__setattr__(self, name, ids)

    @classmethod
    def from_text(cls, text: str, val_fraction: float = 0.1) -> CharCorpus:
        """The corpus of ``text``: vocabulary of all its characters, nanoGPT's contiguous split.

        The first ``int(len(text) * (1 - val_fraction))`` characters are the training ids and
        the rest the validation ids (nanoGPT, ``data/shakespeare_char/prepare.py``); Tiny
        Shakespeare gives 1,003,854 / 111,540 ids over 65 characters. ``val_fraction`` must lie
        in the open interval (0, 1) and each part must hold at least 2 characters (an input and
        its next-character target), else ValueError.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if (
            isinstance(val_fraction, bool)
            or not isinstance(val_fraction, Real)
            or not 0 < val_fraction < 1
        ):
            raise ValueError(
                f"val_fraction must be a fraction in the open interval (0, 1), got {val_fraction!r}"
            )
        n_train = int(len(text) * (1 - val_fraction))
        n_val = len(text) - n_train
        if min(n_train, n_val) < _MIN_PART:
            raise ValueError(
                f"a text of {len(text)} characters is too short to split with "
                f"val_fraction={val_fraction}: train would get {n_train} and val {n_val} "
                f"characters, and each needs at least {_MIN_PART} (an input and its target)"
            )
        vocab = "".join(sorted(set(text)))
        ids = _ids(text, vocab)
        return cls(vocab, ids[:n_train], ids[n_train:])

    @property
    def vocab_size(self) -> int:
        """The number of distinct characters, ``len(vocab)``."""
        return len(self.vocab)

    def encode(self, text: str) -> np.ndarray:
        """The ids of ``text``'s characters, ``int64 (len(text),)``.

        ValueError naming the characters that are not in the vocabulary.
        """
        return _ids(text, self.vocab)

    def decode(self, ids: np.ndarray | list[int]) -> str:
        """The text of a 1-d sequence of ids (ValueError for ids outside ``0..vocab_size-1``)."""
        array = np.asarray(ids)
        if array.size == 0:
            return ""
        if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
            raise ValueError(
                f"decode needs a 1-d sequence of integer ids, got {array.dtype} {array.shape}"
            )
        if array.min() < 0 or array.max() >= len(self.vocab):
            raise ValueError(
                f"ids must lie in 0..{len(self.vocab) - 1}, got {array.min()} to {array.max()}"
            )
        return _codes(self.vocab)[array].tobytes().decode("utf-32-le", "surrogatepass")


def _codes(text: str) -> np.ndarray:
    """The code points of ``text`` as ``uint32``, vectorised (a per-character loop is slow)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


def _ids(text: str, vocab: str) -> np.ndarray:
    """Each character's position in the sorted ``vocab``, ``int64``."""
    table = _codes(vocab)
    codes = _codes(text)
    ids = np.minimum(np.searchsorted(table, codes), len(table) - 1)
    unknown = table[ids] != codes
    if unknown.any():
        missing = "".join(sorted({chr(code) for code in codes[unknown].tolist()}))
        raise ValueError(f"characters not in the vocabulary: {missing!r}")
    return ids.astype(np.int64)
