"""Regenerate the FIXED tiny int8 test model in tests/data/tiny/ (run by hand only).

The files are committed so that tests (and the codegen snapshot) do not depend
on the converter's run-to-run behaviour. Shapes are chosen to hit every corner
of the nested layout: an input width (25) and widths that are not multiples of
4, a layer whose all-zero bias the converter drops (bias input -1), ReLU and
linear layers.

    .venv/bin/python tests/data/make_tiny.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent / "tiny"

SUBMODELS = {
    "name": "tiny",
    "dataset": "none",
    "input_shape": [5, 5, 1],
    "num_classes": 5,
    "block": 1,
    "layers": [
        {"name": "fc1", "type": "dense", "units": 12, "prunable": True},
        {"name": "fc2", "type": "dense", "units": 10, "prunable": True},
        {"name": "logits", "type": "dense", "units": 5, "prunable": False},
    ],
    "submodels": [
        {"index": 0, "budget": 0.3, "widths": {"fc1": 5, "fc2": 3, "logits": 5}},
        {"index": 1, "budget": 0.6, "widths": {"fc1": 9, "fc2": 7, "logits": 5}},
        {"index": 2, "budget": 1.0, "widths": {"fc1": 12, "fc2": 10, "logits": 5}},
    ],
}


def build(softmax: bool = False):
    import tf_keras as keras

    rng = np.random.default_rng(7)
    inp = keras.Input((5, 5, 1))
    x = keras.layers.Flatten()(inp)
    x = keras.layers.Dense(12, activation="relu", name="fc1")(x)
    x = keras.layers.Dense(10, activation="relu", name="fc2")(x)
    x = keras.layers.Dense(5, name="logits")(x)
    if softmax:
        x = keras.layers.Softmax()(x)
    model = keras.Model(inp, x)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            k, b = layer.get_weights()
            k = rng.normal(0, 0.5, k.shape).astype(np.float32)
            b = np.zeros_like(b) if layer.name == "fc2" else rng.normal(0, 0.2, b.shape)
            layer.set_weights([k, b.astype(np.float32)])
    return model


def build_shared():
    """fc2 and fc3 with identical weights and biases: the converter merges them
    into ONE constant tensor used by two ops (the slicer must clone it)."""
    import tf_keras as keras

    rng = np.random.default_rng(11)
    inp = keras.Input((8,))
    x = keras.layers.Dense(8, activation="relu", name="fc1")(inp)
    fc2 = keras.layers.Dense(8, activation="relu", name="fc2")
    fc3 = keras.layers.Dense(8, activation="relu", name="fc3")
    x = fc3(fc2(x))
    x = keras.layers.Dense(3, name="logits")(x)
    model = keras.Model(inp, x)
    k, b = rng.normal(0, 0.5, (8, 8)).astype(np.float32), rng.normal(0, 0.2, 8).astype(np.float32)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            shape = layer.get_weights()[0].shape
            kk = rng.normal(0, 0.5, shape).astype(np.float32)
            bb = rng.normal(0, 0.2, shape[1]).astype(np.float32)
            layer.set_weights([k, b] if layer.name in ("fc2", "fc3") else [kk, bb])
    return model


def main() -> None:
    from reds_tf.quant.convert import convert_int8

    HERE.mkdir(parents=True, exist_ok=True)
    rep = np.random.default_rng(3).random((200, 5, 5, 1), dtype=np.float32)
    (HERE / "model.tflite").write_bytes(convert_int8(build(), rep))
    (HERE / "softmax.tflite").write_bytes(convert_int8(build(softmax=True), rep))
    rep8 = np.random.default_rng(4).random((200, 8), dtype=np.float32)
    (HERE / "shared.tflite").write_bytes(convert_int8(build_shared(), rep8))
    (HERE / "submodels.json").write_text(json.dumps(SUBMODELS, indent=2) + "\n")
    print(f"wrote {HERE}")


if __name__ == "__main__":
    main()
