from __future__ import annotations

import numpy as np
import pytest
import tf_keras as keras

from reds_tf.config import ModelConfig
from reds_tf.costs import cost_layers_from_keras, full_widths
from reds_tf.errors import RedsError
from reds_tf.models import (
    build_model,
    canonical_dnn,
    dense_layers,
    dscnn,
    load_base_model,
    submodel,
)
from reds_tf.nested import build_nested


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


def _randomise_bn(model: keras.Model, rng: np.random.Generator) -> None:
    """Non-trivial BN statistics and affine parameters, so that a check sees them."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, c),
                    rng.normal(0, 0.2, c),
                    rng.normal(0, 0.2, c),
                    rng.uniform(0.5, 2.0, c),
                ]
            )


def _user_dscnn_softmax() -> keras.Model:
    """The project's DS-CNN with a softmax layer appended (as a user would save it)."""
    m = dscnn((12, 10, 1), {"filters": 6, "kernel": (3, 3), "strides": (2, 2)},
              [{"filters": 8, "strides": (1, 1)}], 5)  # fmt: skip
    return keras.Model(m.input, keras.layers.Activation("softmax", name="probs")(m.output))


def _user_sequential_cnn() -> keras.Model:
    """A Sequential conv net with every supported layer kind, Dense softmax output."""
    return keras.Sequential(
        [
            keras.Input((12, 10, 1)),
            keras.layers.Conv2D(6, 3, activation="relu", name="c1"),
            keras.layers.BatchNormalization(name="c1_bn"),
            keras.layers.MaxPooling2D(2, name="pool1"),
            keras.layers.DepthwiseConv2D(3, padding="same", name="dw"),
            keras.layers.BatchNormalization(name="dw_bn"),
            keras.layers.ReLU(name="dw_relu"),
            keras.layers.Conv2D(8, 1, use_bias=False, name="pw"),
            keras.layers.Activation("relu", name="pw_relu"),
            keras.layers.AveragePooling2D(2, padding="same", name="pool2"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dropout(0.2, name="drop"),
            keras.layers.Dense(7, activation="relu", name="hidden"),
            keras.layers.Dense(5, activation="softmax", name="out"),
        ]
    )


def _user_gap_cnn(keepdims: bool = False) -> keras.Model:
    """A Keras-style conv net ending in GlobalAveragePooling2D (-> Dense softmax)."""
    tail = [keras.layers.Flatten(name="flat")] if keepdims else []
    return keras.Sequential(
        [
            keras.Input((12, 10, 1)),
            keras.layers.Conv2D(6, 3, strides=2, padding="same", name="c1"),
            keras.layers.BatchNormalization(name="c1_bn"),
            keras.layers.ReLU(name="c1_relu"),
            keras.layers.DepthwiseConv2D(3, padding="same", name="dw"),
            keras.layers.BatchNormalization(name="dw_bn"),
            keras.layers.ReLU(name="dw_relu"),
            keras.layers.Conv2D(8, 1, activation="relu", name="pw"),
            keras.layers.GlobalAveragePooling2D(keepdims=keepdims, name="gap"),
            *tail,
            keras.layers.Dense(5, activation="softmax", name="out"),
        ]
    )


@pytest.mark.parametrize("keepdims", [False, True])
def test_load_base_rewrites_global_average_pooling(tmp_path, keepdims):
    rng = np.random.default_rng(4)
    user = _user_gap_cnn(keepdims)
    _randomise_bn(user, rng)
    user.save(tmp_path / "user.keras")
    m = load_base_model(tmp_path / "user.keras", (12, 10, 1), 5)
    gap = m.get_layer("gap")
    assert type(gap) is keras.layers.AveragePooling2D and tuple(gap.pool_size) == (6, 5)
    names = [ly.name for ly in m.layers[1:]]
    assert names[names.index("gap") + 1] == ("flat" if keepdims else "gap_flatten")
    assert not any(type(ly) is keras.layers.GlobalAveragePooling2D for ly in m.layers)
    x = rng.normal(size=(6, 12, 10, 1)).astype(np.float32)
    logits = m.predict(x, verbose=0)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(
        probs / probs.sum(axis=1, keepdims=True), user.predict(x, verbose=0), atol=1e-5
    )
    layers = cost_layers_from_keras(m)
    small = {c.name: max(1, c.units // 2) for c in layers if c.prunable}
    nested = build_nested(m, [small, full_widths(layers)])
    out_small, out_full = nested.predict(x, verbose=0)
    np.testing.assert_allclose(out_full, logits, atol=1e-4)
    np.testing.assert_allclose(out_small, submodel(m, small).predict(x, verbose=0), atol=1e-4)


@pytest.mark.parametrize("make", [_user_dscnn_softmax, _user_sequential_cnn])
def test_load_base_accepts_conv_model(tmp_path, make):
    rng = np.random.default_rng(3)
    user = make()
    _randomise_bn(user, rng)
    user.save(tmp_path / "user.keras")
    m = load_base_model(tmp_path / "user.keras", (12, 10, 1), 5)
    # Same layers and names (the classifier becomes "logits"), softmax removed.
    want = [ly.name for ly in user.layers if not isinstance(ly, keras.layers.InputLayer)]
    want = [n for n in want if n != "probs"]
    want[-1] = "logits"
    assert [ly.name for ly in m.layers[1:]] == want
    assert m.get_layer("logits").activation is keras.activations.linear
    x = rng.normal(size=(6, 12, 10, 1)).astype(np.float32)
    logits = m.predict(x, verbose=0)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs, user.predict(x, verbose=0), atol=1e-5)
    assert not np.allclose(logits.sum(axis=1), 1.0)  # logits, not probabilities
    # The accepted model works with the cost model and the nested model: the
    # full-width branch is the model, a smaller one the sliced plain submodel.
    layers = cost_layers_from_keras(m)
    full = full_widths(layers)
    small = {c.name: max(1, c.units // 2) for c in layers if c.prunable}
    assert len(small) >= 2 and "logits" not in small
    nested = build_nested(m, [small, full])
    out_small, out_full = nested.predict(x, verbose=0)
    np.testing.assert_allclose(out_full, logits, atol=1e-4)
    np.testing.assert_allclose(out_small, submodel(m, small).predict(x, verbose=0), atol=1e-4)


def _residual() -> keras.Model:
    x = inp = keras.Input((12, 10, 1))
    y = keras.layers.Conv2D(1, 3, padding="same", name="c1")(x)
    y = keras.layers.Add(name="skip")([x, y])
    y = keras.layers.Flatten()(y)
    return keras.Model(inp, keras.layers.Dense(5)(y))


def test_load_base_takes_a_residual_model(tmp_path):
    """An Add join is a residual network (canonical_residual); joined with the
    model input, the conv keeps the input's width (not prunable)."""
    from reds_tf import ir

    _residual().save(tmp_path / "user.keras")
    m = load_base_model(tmp_path / "user.keras", (12, 10, 1), 5)
    graph = ir.from_keras(m)
    assert graph.node("skip").kind == ir.ADD and not graph.node("c1").prunable


def _seq(*layers) -> keras.Model:
    return keras.Sequential([keras.Input((12, 10, 1)), *layers])


@pytest.mark.parametrize(
    "make, needles",
    [
        (
            lambda: _seq(
                keras.layers.Conv2D(4, 3, dilation_rate=2, name="dil"),
                keras.layers.Flatten(),
                keras.layers.Dense(5),
            ),
            ["layer 'dil' (Conv2D) with dilation_rate (2, 2) is not supported"],
        ),
        (
            lambda: _seq(
                keras.layers.Conv2D(4, 3),
                keras.layers.LayerNormalization(name="ln"),
                keras.layers.Flatten(),
                keras.layers.Dense(5),
            ),
            ["layer 'ln' (LayerNormalization) is not supported"],
        ),
        (
            lambda: _seq(
                keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw2"),
                keras.layers.GlobalAveragePooling2D(name="gap"),
                keras.layers.Dense(5),
            ),
            ["layer 'dw2' (DepthwiseConv2D) with depth_multiplier=2"],
        ),
        (
            lambda: _seq(
                keras.layers.Conv2D(4, 3, name="c"),
                keras.layers.GlobalMaxPooling2D(name="gmp"),
                keras.layers.Dense(5),
            ),
            ["layer 'gmp' (GlobalMaxPooling2D) is not supported"],
        ),
        (
            lambda: _seq(keras.layers.Conv2D(4, 3), keras.layers.Dense(5, name="d4")),
            ["Dense 'd4' gets an input of shape (10, 8, 4); put a Flatten before it"],
        ),
    ],
)
def test_load_base_rejects_unsupported_conv_model(tmp_path, make, needles):
    make().save(tmp_path / "user.keras")
    with pytest.raises(RedsError) as e:
        load_base_model(tmp_path / "user.keras", (12, 10, 1), 5)
    msg = str(e.value)
    assert f"--base {tmp_path / 'user.keras'} is not a supported model" in msg
    assert "Supported: Input -> Conv2D / Conv1D (groups 1, dilation 1)" in msg
    for needle in needles:
        assert needle in msg


def test_load_base_conv_shape_mismatch(tmp_path):
    _user_sequential_cnn().save(tmp_path / "user.keras")
    with pytest.raises(RedsError) as e:
        load_base_model(tmp_path / "user.keras", (28, 28, 1), 5)
    msg = str(e.value)
    assert "input shape (12, 10, 1) differs from the data set's (28, 28, 1)" in msg
    assert "not supported" not in msg  # the layers themselves are fine
    with pytest.raises(RedsError, match=r"output shape \(5,\) differs from \(10,\)") as e:
        load_base_model(tmp_path / "user.keras", (12, 10, 1), 10)
    assert "not supported" not in str(e.value)
