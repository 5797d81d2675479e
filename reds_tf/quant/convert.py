"""TFLite converter wrapper: a float tf_keras model -> a full-integer int8 .tflite.

Int8 input and output, per-channel int8 weights (TF 2.21's default for Dense),
activation ranges calibrated on a representative data set. ``qat_finetune``
optionally runs quantisation-aware fine-tuning (tensorflow-model-optimization)
first so that the converter uses the learnt ranges.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import numpy as np

from reds_tf.errors import RedsError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def convert_int8(
    model,
    representative: np.ndarray,
    *,
    range_samples: Callable[[], Iterator[list[np.ndarray]]] | None = None,
) -> bytes:
    """Convert ``model`` to an int8 .tflite flatbuffer with a batch of 1.

    ``representative``: (N, *input_shape) float32 calibration inputs (a few
    hundred are enough). ``range_samples`` overrides the calibration generator
    (it must yield ``[x]`` with x of shape (1, *input_shape)).
    """
    import tensorflow as tf

    input_shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    if representative.ndim != len(input_shape) + 1 or representative.shape[1:] != input_shape:
        raise RedsError(
            f"representative data has shape {representative.shape[1:]}, "
            f"the model expects {input_shape}"
        )
    # A fixed batch of 1 keeps the graph free of dynamic-shape ops.
    fn = tf.function(lambda x: model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec((1, *input_shape), tf.float32))

    def gen() -> Iterator[list[np.ndarray]]:
        for i in range(len(representative)):
            yield [representative[i : i + 1].astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = range_samples or gen
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    try:
        return bytes(converter.convert())
    except Exception as e:  # the converter raises many exception types
        raise RedsError(f"TFLite conversion to int8 failed: {e}") from e


def qat_finetune(
    model,
    x_train: np.ndarray,
    y_train: np.ndarray,
    *,
    epochs: int,
    batch_size: int = 128,
    learning_rate: float = 1e-4,
):
    """Quantisation-aware fine-tuning of the full-width model; returns the QAT model.

    The returned model carries fake-quant ranges the converter uses directly.
    Shapes: x_train (N, *input_shape) float32, y_train (N,) int64.
    """
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    if epochs < 1:
        raise RedsError(f"--qat-epochs must be at least 1, got {epochs}")
    qat = tfmot.quantization.keras.quantize_model(model)
    qat.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    qat.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, verbose=0)
    return qat
