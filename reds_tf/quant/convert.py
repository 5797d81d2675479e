"""TFLite converter wrapper: a float tf_keras model -> a full-integer int8 .tflite.

Int8 input and output, per-channel int8 weights (TF 2.21's default for Dense),
activation ranges calibrated on a representative data set. ``qat_finetune``
optionally runs quantisation-aware fine-tuning (tensorflow-model-optimization)
first so that the converter uses the learnt ranges.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from reds_tf.errors import RedsError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# After the log level above, so that importing this module alone stays quiet.
import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras as keras  # noqa: E402


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


def submodel_masks(model, widths: Sequence[dict[str, int]]) -> tuple[list, list[dict]]:
    """The layer chain of ``model`` (plain or QAT-wrapped) and, per submodel, a
    0/1 mask per layer whose width is below its unit count ({layer name: (units,)})."""
    chain = [ly for ly in model.layers if not isinstance(ly, keras.layers.InputLayer)]
    for ly in chain:
        if len(ly._inbound_nodes) != 1:  # a sequential chain is what REDS models are
            raise RedsError(f"QAT over submodels needs a layer chain; {ly.name} is shared")
    masks: list[dict] = []
    for w in widths:
        m = {}
        for ly in chain:
            inner = getattr(ly, "layer", ly)  # QuantizeWrapper -> the wrapped layer
            units = getattr(inner, "units", None)
            if inner.name in w and units is not None and w[inner.name] < units:
                m[ly.name] = tf.constant(np.arange(units) < w[inner.name], tf.float32)
        masks.append(m)
    return chain, masks


def masked_forward(chain: list, mask: dict, x, *, training: bool):
    """Submodel logits as the full chain with units beyond the widths zeroed after
    each layer: a zero input adds nothing to the next layer, so this equals the
    prefix-sliced submodel (for ReLU/linear Dense chains)."""
    h = x
    for ly in chain:
        h = ly(h, training=training)
        if ly.name in mask:
            h = h * mask[ly.name]
    return h


def qat_finetune(
    model,
    x_train: np.ndarray,
    y_train: np.ndarray,
    *,
    epochs: int,
    widths: Sequence[dict[str, int]] | None = None,
    batch_size: int = 128,
    learning_rate: float = 1e-4,
    seed: int = 0,
):
    """Quantisation-aware fine-tuning; returns the QAT model (tensorflow-model-optimization).

    Without ``widths`` the full model alone is fine-tuned. With ``widths`` (one
    ``{layer name: width}`` per submodel) every step averages the loss of ALL
    nested submodels: submodel k is the full QAT model with the units beyond
    its width zeroed after each layer, which equals prefix slicing (a zero input
    adds nothing), so the shared weights stay good for every submodel and the
    fake-quant activation ranges see every submodel's values. The returned
    model carries fake-quant ranges the converter uses directly.
    Shapes: x_train (N, *input_shape) float32, y_train (N,) int64.
    """
    if epochs < 1:
        raise RedsError(f"--qat-epochs must be at least 1, got {epochs}")
    qat = tfmot.quantization.keras.quantize_model(model)
    if not widths:
        qat.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        qat.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, verbose=0)
        return qat

    chain, masks = submodel_masks(qat, widths)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    opt = keras.optimizers.Adam(learning_rate)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = 0.0
            for m in masks:
                loss += ce(y, masked_forward(chain, m, x, training=True))
            loss /= len(masks)
        grads = tape.gradient(loss, qat.trainable_variables)
        opt.apply_gradients(zip(grads, qat.trainable_variables, strict=True))
        return loss

    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(x_train))
        for i in range(0, len(order), batch_size):
            idx = np.sort(order[i : i + batch_size])
            step(tf.constant(x_train[idx]), tf.constant(y_train[idx]))
    return qat
