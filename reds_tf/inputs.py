"""TensorFlow input pipelines over a data set's inputs, in memory or streamed
from disk (:class:`reds_tf.data.stream.DiskArray`): the rows a tf.data
pipeline reads, and prediction over a whole split."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf
import tf_keras as keras

from reds_tf.data.stream import DiskArray, is_streaming

# Arrays up to this size are copied into TensorFlow and gathered in the graph
# (fastest); larger ones are indexed in NumPy per batch, never copied whole.
GATHER_MAX_BYTES = 512 << 20


def row_reader(x: np.ndarray | DiskArray) -> Callable[[tf.Tensor], tf.Tensor]:
    """``idx`` (int64 vector) -> the float32 rows ``x[idx]`` inside a tf.data
    pipeline: a gather from a small array in memory; for a large one or a set
    streamed from disk, just those rows indexed in NumPy (read from disk and
    uint8 scaled to float32 on the way)."""
    if not is_streaming(x) and x.nbytes <= GATHER_MAX_BYTES:
        xs = tf.constant(x)
        return lambda idx: tf.gather(xs, idx)
    row_shape = x.shape[1:]

    def rows(i: np.ndarray) -> np.ndarray:
        return np.asarray(x[i], np.float32)

    def read(idx: tf.Tensor) -> tf.Tensor:
        xb = tf.numpy_function(rows, [idx], tf.float32, stateful=False)
        xb.set_shape([None, *row_shape])
        return xb

    return read


def rows_dataset(x: np.ndarray | DiskArray, batch_size: int) -> tf.data.Dataset:
    """``x`` in order, in batches of ``batch_size`` (read, batch, prefetch)."""
    idx = tf.data.Dataset.range(len(x)).batch(batch_size)
    return idx.map(row_reader(x)).prefetch(tf.data.AUTOTUNE)


def predict_rows(
    model: keras.Model, x: np.ndarray | DiskArray, batch_size: int = 1024
) -> np.ndarray | list[np.ndarray]:
    """``model.predict(x)``; a set streamed from disk (or a large array) goes
    through :func:`rows_dataset`, so only a few batches are copied at once."""
    if not is_streaming(x) and x.nbytes <= GATHER_MAX_BYTES:
        return model.predict(x, batch_size=batch_size, verbose=0)
    return model.predict(rows_dataset(x, batch_size), verbose=0)
