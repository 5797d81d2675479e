"""Fashion-MNIST from the standard IDX files.

Search order: ``$REDS_DATA_DIR`` (or its ``fashion-mnist/`` sub-folder), Debian's
``dataset-fashion-mnist`` package, the Keras cache, else download.
"""

from __future__ import annotations

import gzip
import os
import struct
import urllib.request
from pathlib import Path

import numpy as np

from reds_tf.data import Dataset, register
from reds_tf.errors import DataError

FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
KERAS_CACHE = Path.home() / ".keras" / "datasets" / "fashion-mnist"
DOWNLOAD_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"


def candidate_dirs() -> list[Path]:
    dirs = []
    env = os.environ.get("REDS_DATA_DIR")
    if env:
        dirs += [Path(env) / "fashion-mnist", Path(env)]
    dirs += [DEBIAN_DIR, KERAS_CACHE]
    return dirs


def read_idx(path: Path) -> np.ndarray:
    """Read a (gzipped) IDX file: magic, dims, then unsigned bytes."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
        zero, dtype, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype != 0x08:
            raise ValueError("not an unsigned-byte IDX file")
        dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
        arr = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
        return arr.reshape(dims)
    except (OSError, ValueError, struct.error, EOFError) as e:
        raise DataError(f"cannot read IDX file {path}: {e}; delete it to re-fetch") from e


def _find_dir() -> Path | None:
    for d in candidate_dirs():
        if all((d / f).is_file() for f in FILES.values()):
            return d
    return None


def _download(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for fname in FILES.values():
        target = dest / fname
        if target.is_file():
            continue
        tmp = target.with_suffix(".part")
        try:
            urllib.request.urlretrieve(DOWNLOAD_URL + fname, tmp)
            os.replace(tmp, target)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise DataError(
                "Fashion-MNIST not found and the download failed "
                f"({e}). Get it with `sudo apt-get install dataset-fashion-mnist`, or put "
                f"{', '.join(FILES.values())} into a folder and set REDS_DATA_DIR to it."
            ) from e
    return dest


@register("fashion_mnist")
def load() -> Dataset:
    d = _find_dir() or _download(KERAS_CACHE)
    arrays = {k: read_idx(d / f) for k, f in FILES.items()}
    x_train = (arrays["x_train"].astype(np.float32) / 255.0)[..., None]
    x_test = (arrays["x_test"].astype(np.float32) / 255.0)[..., None]
    return Dataset(
        "fashion_mnist",
        x_train,
        arrays["y_train"].astype(np.int64),
        x_test,
        arrays["y_test"].astype(np.int64),
        num_classes=10,
        source=str(d),
    )
