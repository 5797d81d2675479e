"""CIFAR-10 from the standard ``cifar-10-batches-py`` archive.

Search order (first hit wins):

1. ``$REDS_DATA_DIR``: a ``cifar-10-batches-py/`` folder, the batch files
   themselves, or ``cifar-10-python.tar.gz``;
2. the shared data folder: ``$REDS_SHARED_DATA_DIR/cifar-10-python.tar.gz``, then
   ``<repo>/../shared/data/cifar-10-python.tar.gz``;
3. the Keras cache ``~/.keras/datasets/`` (``cifar-10-batches-py/`` as
   ``keras.datasets.cifar10`` leaves it, or the archive);
4. download ``cifar-10-python.tar.gz`` into the Keras cache.

The archive is read in place (no extraction); the decoded uint8 arrays are
cached as an .npz (see :mod:`reds_tf.data.cache`) so the next load skips decoding
the archive. Images: (N, 32, 32, 3) float32 in [0, 1]; labels int64 0..9.
"""

from __future__ import annotations

import os
import pickle
import tarfile
import urllib.request
from pathlib import Path

import numpy as np

from reds_tf.data import Dataset, register
from reds_tf.data.cache import cache_key, cache_root, file_signature, load_npz, save_npz_atomic
from reds_tf.errors import DataError

ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
KERAS_CACHE = Path.home() / ".keras" / "datasets"
REPO_ROOT = Path(__file__).resolve().parents[2]

HOW_TO_GET = (
    f"download {URL} and set REDS_DATA_DIR to the folder holding it (or its extracted "
    f"{FOLDER}/ folder), or put it at {REPO_ROOT.parent / 'shared' / 'data' / ARCHIVE}"
)


def candidates() -> list[Path]:
    """Sources in search order: archives (.tar.gz) or folders with the batch files."""
    out: list[Path] = []
    env = os.environ.get("REDS_DATA_DIR")
    if env:
        d = Path(env).expanduser()
        out += [d / FOLDER, d, d / ARCHIVE]
    shared = os.environ.get("REDS_SHARED_DATA_DIR")
    if shared:
        out.append(Path(shared).expanduser() / ARCHIVE)
    out.append(REPO_ROOT.parent / "shared" / "data" / ARCHIVE)
    out += [KERAS_CACHE / FOLDER, KERAS_CACHE / ARCHIVE, KERAS_CACHE / "cifar-10-batches-py.tar.gz"]
    return out


def _usable(p: Path) -> bool:
    if p.is_dir():
        return all((p / b).is_file() for b in [*TRAIN_BATCHES, TEST_BATCH])
    return p.is_file() and p.name.endswith(".tar.gz")


def find_source() -> Path | None:
    return next((p for p in candidates() if _usable(p)), None)


def _decode_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch -> images (n, 32, 32, 3) uint8, labels (n,) int64."""
    try:
        # The archive format is pickle; only load archives from a source you trust.
        d = pickle.loads(raw, encoding="bytes")
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[b"labels"], dtype=np.int64)
    except Exception as e:  # noqa: BLE001 - any decoding failure means a corrupt file
        raise DataError(f"cannot decode CIFAR-10 batch {where}: {e}; {HOW_TO_GET}") from e
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataError(f"CIFAR-10 batch {where} has shape {data.shape}, expected (n, 3072)")
    # Stored channel-major (R plane, G plane, B plane) per image.
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def read_batches(src: Path) -> dict[str, np.ndarray]:
    """Decode all six batches from a folder or (without extracting) a .tar.gz."""
    raws: dict[str, bytes] = {}
    names = [*TRAIN_BATCHES, TEST_BATCH]
    if src.is_dir():
        for n in names:
            raws[n] = (src / n).read_bytes()
    else:
        try:
            with tarfile.open(src, "r:gz") as tar:
                for member in tar:
                    base = Path(member.name).name
                    if member.isfile() and base in names:
                        f = tar.extractfile(member)
                        if f is not None:
                            raws[base] = f.read()
        except (OSError, tarfile.TarError, EOFError) as e:
            raise DataError(f"cannot read CIFAR-10 archive {src}: {e}; {HOW_TO_GET}") from e
        missing = [n for n in names if n not in raws]
        if missing:
            raise DataError(f"CIFAR-10 archive {src} lacks {', '.join(missing)}; {HOW_TO_GET}")
    train = [_decode_batch(raws[n], f"{src}:{n}") for n in TRAIN_BATCHES]
    x_test, y_test = _decode_batch(raws[TEST_BATCH], f"{src}:{TEST_BATCH}")
    return {
        "x_train": np.concatenate([x for x, _ in train]),
        "y_train": np.concatenate([y for _, y in train]),
        "x_test": x_test,
        "y_test": y_test,
    }


def _download() -> Path:
    dest = KERAS_CACHE / ARCHIVE
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        urllib.request.urlretrieve(URL, tmp)
        os.replace(tmp, dest)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise DataError(f"CIFAR-10 not found and the download failed ({e}); {HOW_TO_GET}") from e
    return dest


def _signature(src: Path) -> dict:
    if src.is_dir():
        return {
            "dir": str(src.resolve()),
            "files": [file_signature(src / b) for b in TRAIN_BATCHES],
        }
    return file_signature(src)


@register("cifar10")
def load() -> Dataset:
    src = find_source() or _download()
    cache = cache_root() / f"cifar10-{cache_key(_signature(src))}.npz"
    arrays = load_npz(cache)
    if arrays is None:
        arrays = read_batches(src)
        save_npz_atomic(cache, **arrays)
    return Dataset(
        "cifar10",
        arrays["x_train"].astype(np.float32) / np.float32(255.0),
        arrays["y_train"].astype(np.int64),
        arrays["x_test"].astype(np.float32) / np.float32(255.0),
        arrays["y_test"].astype(np.int64),
        num_classes=10,
        source=str(src),
    )
