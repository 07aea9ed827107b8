"""Tiny Shakespeare and the character corpus.

The checks on the real text use the shared data folder when it holds
``tinyshakespeare/input.txt`` and skip otherwise; the corpus itself is also tested on small
generated texts, always.
"""

from __future__ import annotations

import numpy as np
import pytest

from dropkit.data import CharCorpus, load_tiny_shakespeare
from dropkit.data.shakespeare import TINY_SHAKESPEARE
from tests.conftest import DATA as SHARED

needs_shared = pytest.mark.skipif(
    not (SHARED / TINY_SHAKESPEARE.relpath).is_file(),
    reason="the shared data folder has no tinyshakespeare/input.txt",
)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """An empty cache under ``tmp_path``, no ``$DROPKIT_DATA`` and downloads allowed."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("DROPKIT_DATA", raising=False)
    monkeypatch.delenv("DROPKIT_OFFLINE", raising=False)
    return tmp_path / "xdg" / "dropkit"


# ---------------------------------------------------------------------------------------------
# the real text (shared folder)


@needs_shared
@pytest.mark.parametrize("how", ["data root", "file", "DROPKIT_DATA"])
def test_real_text_sizes_vocab_and_nanogpt_split(how, monkeypatch):
    if how == "DROPKIT_DATA":
        monkeypatch.setenv("DROPKIT_DATA", str(SHARED))
        text = load_tiny_shakespeare(download=False)
    else:
        text = load_tiny_shakespeare(
            SHARED if how == "data root" else SHARED / "tinyshakespeare" / "input.txt"
        )
    assert len(text) == 1_115_394
    assert text.startswith("First Citizen:\nBefore we proceed any further, hear me speak.")
    corpus = CharCorpus.from_text(text)
    assert corpus.vocab_size == 65
    assert corpus.vocab[:3] == "\n !"
    assert (len(corpus.train), len(corpus.val)) == (1_003_854, 111_540)
    assert corpus.train.dtype == corpus.val.dtype == np.int64
    assert corpus.decode(corpus.train) + corpus.decode(corpus.val) == text
    np.testing.assert_array_equal(corpus.encode(text[:1000]), corpus.train[:1000])


@needs_shared
def test_real_text_is_never_copied_into_the_cache(isolated):
    load_tiny_shakespeare(SHARED)
    assert not isolated.exists()


# ---------------------------------------------------------------------------------------------
# generated texts (always run)


def test_wrong_file_given_by_path_fails_the_checksum(tmp_path):
    wrong = tmp_path / "input.txt"
    wrong.write_text("To be, or not to be\n")
    with pytest.raises(ValueError, match="does not match") as error:
        load_tiny_shakespeare(wrong)
    assert TINY_SHAKESPEARE.sha256 in str(error.value)
    (tmp_path / "tinyshakespeare").mkdir()
    wrong.rename(tmp_path / "tinyshakespeare" / "input.txt")
    with pytest.raises(ValueError, match="does not match"):
        load_tiny_shakespeare(tmp_path)


def test_missing_explicit_path_is_one_line_naming_the_url(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_tiny_shakespeare(tmp_path / "nowhere.txt")
    message = str(error.value)
    assert "\n" not in message
    assert "does not exist" in message
    assert TINY_SHAKESPEARE.url in message


def test_corpus_of_a_small_text():
    text = "abracadabra, cab!\n" * 5  # 90 characters
    corpus = CharCorpus.from_text(text, val_fraction=0.2)
    assert corpus.vocab == "\n !,abcdr"
    assert corpus.vocab_size == 9
    assert (len(corpus.train), len(corpus.val)) == (72, 18)
    assert corpus.train.dtype == corpus.val.dtype == np.int64
    assert corpus.decode(corpus.train) == text[:72]
    assert corpus.decode(corpus.val) == text[72:]
    assert corpus.decode(corpus.encode("bad cab")) == "bad cab"
    assert corpus.decode([4, 5]) == "ab"
    assert corpus.decode([]) == ""
    assert corpus.encode("").shape == (0,)
    with pytest.raises(AttributeError):
        corpus.train = corpus.val  # frozen
    assert corpus.train.flags.writeable  # torch.from_numpy warns on read-only arrays


def test_default_split_is_nanogpts_first_90_percent():
    text = "".join(chr(ord("a") + i % 26) for i in range(1001))
    corpus = CharCorpus.from_text(text)
    assert (len(corpus.train), len(corpus.val)) == (int(1001 * 0.9), 1001 - int(1001 * 0.9))
    assert corpus.decode(corpus.val) == text[900:]


def test_non_ascii_characters_round_trip():
    text = "naïve café — ünïcödé ✓ 𝄞 " * 4
    corpus = CharCorpus.from_text(text, val_fraction=0.5)
    assert list(corpus.vocab) == sorted(set(text))
    assert corpus.decode(np.concatenate([corpus.train, corpus.val])) == text


def test_unknown_characters_and_bad_ids_are_refused():
    corpus = CharCorpus.from_text("hello world", val_fraction=0.25)
    with pytest.raises(ValueError, match="not in the vocabulary: 'xz'"):
        corpus.encode("zero x")
    for ids in ([0, 8], [-1], [[1, 2]], [0.5]):
        with pytest.raises(ValueError, match="ids"):
            corpus.decode(ids)


@pytest.mark.parametrize("val_fraction", [0, 1, 1.0, -0.1, 2.0, float("nan"), True])
def test_bad_val_fraction_is_refused(val_fraction):
    with pytest.raises(ValueError, match=r"val_fraction must be a fraction in the open interval"):
        CharCorpus.from_text("some text to split", val_fraction)


@pytest.mark.parametrize(("text", "val_fraction"), [("", 0.1), ("abc", 0.1), ("abcdefghij", 0.1)])
def test_text_too_short_to_split_is_refused(text, val_fraction):
    with pytest.raises(ValueError, match="too short to split"):
        CharCorpus.from_text(text, val_fraction)


def test_direct_construction_is_validated():
    ids = np.array([0, 1, 1], dtype=np.int64)
    assert CharCorpus("ab", ids, ids).vocab_size == 2
    with pytest.raises(ValueError, match="sorted"):
        CharCorpus("ba", ids, ids)
    with pytest.raises(ValueError, match="outside"):
        CharCorpus("a", ids, ids)
    with pytest.raises(ValueError, match="int64"):
        CharCorpus("ab", ids.astype(np.int32), ids)
