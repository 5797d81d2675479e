"""TensorFlow input pipelines over a data set's inputs, in memory or streamed
from disk (:class:`reds_tf.data.stream.DiskArray`): the rows a tf.data
pipeline reads, and prediction over a whole split."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf
import tf_keras as keras

from reds_tf.data.stream import DiskArray, is_streaming


def row_reader(x: np.ndarray | DiskArray) -> Callable[[tf.Tensor], tf.Tensor]:
    """``idx`` (int64 vector) -> the float32 rows ``x[idx]`` inside a tf.data
    pipeline: a gather from memory, or for a set streamed from disk a read of
    just those rows (uint8 scaled to float32 on the way)."""
    if not is_streaming(x):
        xs = tf.constant(x)
        return lambda idx: tf.gather(xs, idx)
    row_shape = x.shape[1:]

    def read(idx: tf.Tensor) -> tf.Tensor:
        xb = tf.numpy_function(lambda i: x[i], [idx], tf.float32, stateful=False)
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
    """``model.predict(x)``; a set streamed from disk goes through
    :func:`rows_dataset`, so only a few batches are in memory at once."""
    if not is_streaming(x):
        return model.predict(x, batch_size=batch_size, verbose=0)
    return model.predict(rows_dataset(x, batch_size), verbose=0)
