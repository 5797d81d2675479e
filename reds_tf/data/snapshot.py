"""The run's own copy of its data: calibration inputs and a test sample.

``reds train`` writes ``data.npz`` into the run directory (base stage) so
that the run stays usable when the data it was trained on is gone, moved or
changed, and so that a run trained from in-memory arrays
(:func:`reds_tf.train`) can be exported, simulated and demonstrated in
another process.

Contents (all arrays, ``allow_pickle=False``):

- ``x_calib`` (n_cal, *input_shape): the int8 calibration inputs, the same
  draw ``reds export`` always made (``CALIBRATION_SAMPLES`` training inputs
  chosen with seed 0, in data-set order), so an export is identical whether
  the source is still there or not;
- ``x_test`` (n_test, *input_shape), ``y_test`` (n_test,) int64: the first
  ``TEST_SAMPLES`` test samples;
- ``content_sha256``: :func:`content_sha256` of the whole source data set
  (before ``train.limit``), how later commands tell that the source changed;
- ``num_classes``, ``class_names``, ``source``.

Inputs that are exact multiples of 1/255 (images read from 8-bit files) are
stored as uint8 and restored exactly; anything else is stored as float32.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np

from reds_tf.data import Dataset
from reds_tf.data.stream import DiskArray, iter_chunks
from reds_tf.errors import RunDirError

CALIBRATION_SAMPLES = 500
TEST_SAMPLES = 2000
CALIBRATION_SEED = 0


def content_sha256(data: Dataset) -> str:
    """sha256 over the shapes, dtypes and bytes of all four arrays: two data
    sets hash alike exactly when a model sees the same samples and labels."""
    h = hashlib.sha256()
    for a in (data.x_train, data.y_train, data.x_test, data.y_test):
        if isinstance(a, DiskArray):
            # The same bytes as the in-memory float32 array, a chunk at a time.
            h.update(f"{a.dtype.str}{a.shape};".encode())
            for chunk in iter_chunks(a):
                h.update(memoryview(np.ascontiguousarray(chunk)).cast("B"))
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def calibration_indices(n_train: int) -> np.ndarray:
    """Which training samples calibrate the int8 ranges (sorted indices)."""
    rng = np.random.default_rng(CALIBRATION_SEED)
    n = min(CALIBRATION_SAMPLES, n_train)
    return np.sort(rng.choice(n_train, n, replace=False))


def _pack(x: np.ndarray) -> np.ndarray:
    """uint8 when that is lossless under :func:`_unpack`, else float32."""
    x = np.asarray(x, np.float32)
    if x.size and np.all((x >= 0) & (x <= 1)):
        u8 = np.round(x * 255).astype(np.uint8)
        if np.array_equal(_unpack(u8), x):
            return u8
    return x


def _unpack(x: np.ndarray) -> np.ndarray:
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255)
    return x.astype(np.float32, copy=False)


def snapshot_bytes(data: Dataset, sha256: str) -> bytes:
    """The ``data.npz`` of ``data`` (the whole source set, before any limit)."""
    cal = data.x_train[calibration_indices(len(data.x_train))]
    n = min(TEST_SAMPLES, len(data.x_test))
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        x_calib=_pack(cal),
        x_test=_pack(data.x_test[:n]),
        y_test=np.asarray(data.y_test[:n], np.int64),
        content_sha256=np.array(sha256),
        num_classes=np.array(int(data.num_classes)),
        class_names=np.array(list(data.class_names), dtype=str),
        source=np.array(data.source),
        name=np.array(data.name),
    )
    return buf.getvalue()


class Snapshot:
    """A run's ``data.npz``, read and checked.

    ``x_calib`` (n_cal, *input_shape) float32, ``x_test`` (n, *input_shape)
    float32, ``y_test`` (n,) int64.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        fix = "retrain with `reds train --force` to write it again"
        try:
            with np.load(self.path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise RunDirError(f"{self.path} is missing; {fix}") from None
        except (OSError, ValueError, EOFError) as e:
            raise RunDirError(f"{self.path} is unreadable ({e}); {fix}") from None
        need = ("x_calib", "x_test", "y_test", "content_sha256", "num_classes")
        missing = [k for k in need if k not in arrays]
        if missing:
            raise RunDirError(f"{self.path} lacks {', '.join(missing)}; {fix}")
        self.x_calib = _unpack(arrays["x_calib"])
        self.x_test = _unpack(arrays["x_test"])
        self.y_test = arrays["y_test"].astype(np.int64)
        if self.x_calib.shape[1:] != self.x_test.shape[1:] or len(self.x_test) != len(self.y_test):
            raise RunDirError(f"{self.path} has inconsistent array shapes; {fix}")
        self.content_sha256 = str(arrays["content_sha256"])
        self.num_classes = int(arrays["num_classes"])
        names = arrays.get("class_names")
        self.class_names = tuple(str(c) for c in names) if names is not None else ()
        self.source = str(arrays.get("source", ""))
        self.name = str(arrays.get("name", ""))

    def dataset(self) -> Dataset:
        """The snapshot as a :class:`Dataset` whose training split is the
        calibration set (labels unknown: -1); enough to export and evaluate."""
        return Dataset(
            self.name or "snapshot",
            self.x_calib,
            np.full(len(self.x_calib), -1, np.int64),
            self.x_test,
            self.y_test,
            self.num_classes,
            f"{self.path} (the run's copy: {len(self.x_test)} test samples)",
            self.class_names,
        )
