from __future__ import annotations

import numpy as np
import pytest
import tf_keras as keras

from reds_tf.config import ModelConfig
from reds_tf.errors import RedsError
from reds_tf.models import build_model, canonical_dnn, dense_layers, load_base_model, submodel


def test_dnn_names_and_logits():
    m = build_model(ModelConfig(hidden=(32, 16)), (28, 28, 1), 10)
    assert [layer.name for layer in dense_layers(m)] == ["fc1", "fc2", "logits"]
    assert m.output_shape == (None, 10)
    assert dense_layers(m)[-1].activation is keras.activations.linear  # no softmax
    assert all(layer.activation is keras.activations.relu for layer in dense_layers(m)[:-1])


def test_submodel_is_prefix_slice():
    rng = np.random.default_rng(0)
    m = build_model(ModelConfig(hidden=(12, 8)), (5,), 3)
    sub = submodel(m, {"fc1": 4, "fc2": 6, "logits": 3})
    x = rng.normal(size=(7, 5)).astype(np.float32)
    (w1, b1), (w2, b2), (w3, b3) = (layer.get_weights() for layer in dense_layers(m))
    h = np.maximum(x @ w1[:, :4] + b1[:4], 0)
    h = np.maximum(h @ w2[:4, :6] + b2[:6], 0)
    want = h @ w3[:6] + b3
    np.testing.assert_allclose(sub.predict(x, verbose=0), want, atol=1e-5)


def test_canonical_accepts_sequential_softmax_model():
    user = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(20, activation="relu", name="a"),
            keras.layers.Dropout(0.1),
            keras.layers.Dense(10, activation="softmax", name="out"),
        ]
    )
    c = canonical_dnn(user, (28, 28, 1), 10)
    assert [layer.name for layer in dense_layers(c)] == ["fc1", "logits"]
    x = np.random.default_rng(1).random((4, 28, 28, 1), dtype=np.float32)
    probs = keras.activations.softmax(c(x)).numpy()
    np.testing.assert_allclose(probs, user.predict(x, verbose=0), atol=1e-6)


@pytest.mark.parametrize(
    "layers, needle",
    [
        (
            [keras.layers.Conv2D(4, 3), keras.layers.Flatten(), keras.layers.Dense(10)],
            "Conv2D) is not supported",
        ),
        (
            [
                keras.layers.Flatten(),
                keras.layers.Dense(8, activation="tanh"),
                keras.layers.Dense(10),
            ],
            "activation 'tanh'",
        ),
        ([keras.layers.Flatten(), keras.layers.Dense(10)], "needs at least one hidden Dense"),
        (
            [
                keras.layers.Flatten(),
                keras.layers.Dense(8, activation="relu"),
                keras.layers.Dense(7),
            ],
            "output shape (7,) differs",
        ),
    ],
)
def test_canonical_rejects_unsupported(layers, needle):
    user = keras.Sequential([keras.Input((28, 28, 1)), *layers])
    with pytest.raises(RedsError) as e:
        canonical_dnn(user, (28, 28, 1), 10, source="--base m.keras")
    assert needle in str(e.value) and "--base m.keras" in str(e.value)


def test_load_base_model_errors(tmp_path):
    with pytest.raises(RedsError, match="file not found"):
        load_base_model(tmp_path / "missing.keras", (28, 28, 1), 10)
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a zip")
    with pytest.raises(RedsError, match="cannot load"):
        load_base_model(junk, (28, 28, 1), 10)
    wrong = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(10)]
    )
    wrong.save(tmp_path / "wrong.keras")
    with pytest.raises(RedsError, match=r"input shape \(5,\) differs"):
        load_base_model(tmp_path / "wrong.keras", (28, 28, 1), 10)
