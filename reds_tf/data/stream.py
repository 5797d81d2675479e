"""Data sets larger than memory: inputs kept on disk, read a mini-batch at a time.

A streaming loader keeps its decoded inputs as uncompressed ``.npy`` files
(uint8 images, float32 MFCC features) in its cache folder and hands out a
:class:`DiskArray` instead of a float32 array: it has the array's shape and
float32 dtype, and indexing it (an int, a slice, an index array) reads just
those rows from disk (``os.pread``, through the page cache, so the process
holds no more than the rows asked for) and scales uint8 to ``x / 255``
exactly as the in-memory path does. Everything that takes mini-batches works
on it unchanged: training feeds it to ``tf.data`` (:func:`reds_tf.training.epoch_batches`:
read, scale, augment, batch, prefetch), importance, BatchNorm statistics and
int8 calibration index it, evaluation predicts chunk by chunk
(:func:`iter_chunks`).

``data: {stream: auto}`` (the default of the loaders that stream) streams
when the float32 inputs would take more than :data:`STREAM_ABOVE` bytes;
``true`` / ``false`` force either way. Both give the same values, so the
choice changes no result and no stage record.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from reds_tf.errors import DataError
from reds_tf.fsutil import file_mode

STREAM_ABOVE = 2 << 30  # bytes of float32 inputs above which ``stream: auto`` streams
CHUNK_ROWS = 4096  # rows per read when a whole array is walked (hash, predict)


def want_stream(stream: object, values: int, dataset: str) -> bool:
    """Whether a loader streams: ``stream`` is ``auto``/true/false; ``values``
    is the number of input values (4 bytes each as float32)."""
    if stream == "auto":
        return values * 4 > STREAM_ABOVE
    if isinstance(stream, bool):
        return stream
    raise DataError(f"{dataset} option stream must be auto, true or false, got {stream!r}")


class DiskArray:
    """Rows of a ``.npy`` file on disk, presented as a float32 array.

    ``scale``: stored values are multiplied by it (``1/255`` for uint8
    images; the division is done as ``x.astype(float32) / float32(255)``,
    bit for bit the in-memory conversion). ``rows``: which of the file's rows
    this array shows, in order (None: all). ``row_shape``: the shape each row
    is presented in (same number of elements as stored).
    """

    dtype = np.dtype(np.float32)

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        rows: np.ndarray | None = None,
        row_shape: tuple[int, ...] | None = None,
    ):
        self.path = Path(path)
        mm = np.load(self.path, mmap_mode="r")  # header only: no data is read
        self._offset = int(mm.offset)
        self._stored = mm.dtype
        self._stored_shape = tuple(int(d) for d in mm.shape)
        del mm
        self._row_bytes = self._stored.itemsize * math.prod(self._stored_shape[1:])
        self.rows = None if rows is None else np.asarray(rows, np.int64)
        self.row_shape = tuple(row_shape) if row_shape is not None else self._stored_shape[1:]
        if math.prod(self.row_shape) != math.prod(self._stored_shape[1:]):
            raise ValueError(f"cannot show rows of {self._stored_shape[1:]} as {self.row_shape}")
        self._fd: int | None = None

    # -- array-like surface
    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.row_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.row_shape)

    @property
    def nbytes(self) -> int:
        """Bytes as float32 (what the in-memory array would take)."""
        return 4 * math.prod(self.shape)

    def __len__(self) -> int:
        return self._stored_shape[0] if self.rows is None else len(self.rows)

    def __getitem__(self, key: object) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self._read(np.array([self._index(int(key))]))[0]
        if isinstance(key, slice):
            return self._read(self._file_rows(np.arange(len(self))[key]))
        idx = np.asarray(key)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise TypeError("DiskArray takes an int, a slice or a 1-D index array")
        idx = np.where(idx < 0, idx + len(self), idx)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} rows")
        return self._read(self._file_rows(idx))

    def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
        """All rows in memory (for code that needs a real array; avoid on big sets)."""
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def subset(self, idx: np.ndarray) -> DiskArray:
        """The rows ``idx`` of this array, still on disk."""
        return DiskArray(self.path, rows=self._file_rows(np.asarray(idx)), row_shape=self.row_shape)

    def reshape(self, n: int, *row_shape: int) -> DiskArray:
        """The same rows shown in another (same-size) row shape."""
        if n != len(self):
            raise ValueError(f"a DiskArray keeps its {len(self)} rows, asked for {n}")
        return DiskArray(self.path, rows=self.rows, row_shape=tuple(row_shape))

    # -- reading
    def _index(self, i: int) -> int:
        i = i + len(self) if i < 0 else i
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} rows")
        return int(self.rows[i]) if self.rows is not None else i

    def _file_rows(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, np.int64)
        return idx if self.rows is None else self.rows[idx]

    def _read(self, file_rows: np.ndarray) -> np.ndarray:
        """Stored rows ``file_rows`` (in that order) as float32."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        n, rb = len(file_rows), self._row_bytes
        buf = bytearray(n * rb)
        view = memoryview(buf)
        # Read in file order (sequential runs are one read), place in asked order.
        order = np.argsort(file_rows, kind="stable")
        sorted_rows = file_rows[order]
        start = 0
        while start < n:
            end = start + 1
            while end < n and sorted_rows[end] == sorted_rows[end - 1] + 1:
                end += 1
            want = (end - start) * rb
            got = os.preadv(
                self._fd, [view[start * rb : end * rb]], self._offset + int(sorted_rows[start]) * rb
            )
            if got != want:
                raise DataError(f"{self.path} is truncated (re-create its cache)")
            start = end
        stored = np.frombuffer(buf, self._stored).reshape(n, *self._stored_shape[1:])
        out = np.empty((n, *self._stored_shape[1:]), self._stored)
        out[order] = stored
        out = out.reshape(n, *self.row_shape)
        if self._stored == np.uint8:
            return out.astype(np.float32) / np.float32(255)
        return out.astype(np.float32, copy=False)

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_fd"] = None  # a file descriptor does not travel
        return state

    def __repr__(self) -> str:
        return f"DiskArray({str(self.path)!r}, shape={self.shape})"


def iter_chunks(x: np.ndarray | DiskArray, rows: int = CHUNK_ROWS) -> Iterator[np.ndarray]:
    """``x`` in consecutive float32 chunks of up to ``rows`` rows."""
    for s in range(0, len(x), rows):
        yield np.asarray(x[s : s + rows])


def is_streaming(x: object) -> bool:
    return isinstance(x, DiskArray)


def take(x: np.ndarray | DiskArray, idx: np.ndarray) -> np.ndarray | DiskArray:
    """``x[idx]``, staying on disk for a :class:`DiskArray`."""
    return x.subset(idx) if isinstance(x, DiskArray) else x[idx]


def write_npy(
    path: Path, shape: tuple[int, ...], dtype: object, chunks: Iterable[np.ndarray]
) -> Path:
    """Write a ``.npy`` file from consecutive row chunks without holding the
    whole array: under a temp name, renamed into place once complete."""
    dtype = np.dtype(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False}
            np.lib.format.write_array_header_1_0(f, {**header, "shape": tuple(shape)})
            n = 0
            for c in chunks:
                c = np.ascontiguousarray(c, dtype)
                if c.shape[1:] != tuple(shape[1:]):
                    raise ValueError(f"chunk rows {c.shape[1:]} differ from {shape[1:]}")
                f.write(memoryview(c).cast("B"))
                n += len(c)
            if n != shape[0]:
                raise ValueError(f"{n} rows written, {shape[0]} expected")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path


def valid_npy(path: Path, shape: tuple[int, ...], dtype: object) -> bool:
    """A complete cache file of that shape and dtype (else it is rebuilt)."""
    try:
        mm = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return False
    ok = mm.shape == tuple(shape) and mm.dtype == np.dtype(dtype)
    ok = ok and os.path.getsize(path) == mm.offset + mm.nbytes
    del mm
    return ok


def load_rows(path: Path, stream: bool) -> np.ndarray | DiskArray:
    """A cached ``.npy`` of inputs: on disk (``stream``) or in memory as float32."""
    if stream:
        return DiskArray(path)
    a = np.load(path)
    return (
        a.astype(np.float32) / np.float32(255)
        if a.dtype == np.uint8
        else a.astype(np.float32, copy=False)
    )


def cached_rows(
    folder: Path,
    name: str,
    shape: tuple[int, ...],
    dtype: object,
    make: Callable[[int, int], np.ndarray],
    chunk: int = 1024,
) -> Path:
    """``<folder>/<name>.npy`` of ``shape``, built once from ``make(start,
    stop)`` (rows start..stop-1) a chunk at a time, so a set larger than memory
    is cached without ever being whole in memory. Returns its path."""
    path = folder / f"{name}.npy"
    if not valid_npy(path, shape, dtype):
        n = shape[0]
        write_npy(path, shape, dtype, (make(s, min(n, s + chunk)) for s in range(0, n, chunk)))
    return path
