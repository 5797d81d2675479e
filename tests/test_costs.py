"""Cost model: MACs/params of prefix-sliced submodels against direct counts on Keras layers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tf_keras as keras

from reds_tf.costs import (
    CostLayer,
    cost_layers_from_keras,
    full_widths,
    layer_macs,
    layer_params,
    model_activation_elems,
    model_macs,
    model_params,
    resolve_widths,
    validate_layers,
)
from reds_tf.errors import RedsError


def _dense_model(input_shape, hidden, classes, *, seed, extras=True, bias=True):
    """Flatten/Dense chain with Dropout/Activation in between (ignored by the cost model)."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input(input_shape)
    x = keras.layers.Flatten()(inp) if len(input_shape) > 1 else inp
    for i, units in enumerate(hidden):
        x = keras.layers.Dense(units, name=f"fc{i + 1}", use_bias=bias)(x)
        if extras:
            x = keras.layers.Activation("relu")(x)
            x = keras.layers.Dropout(0.2)(x)
    out = keras.layers.Dense(classes, name="logits")(x)
    return keras.Model(inp, out)


def _sliced_direct_count(model, widths):
    """Slice every Dense kernel by prefix and count MACs/params from the arrays themselves.

    A dense layer does one MAC per kernel entry; its parameters are the kernel
    plus bias entries. The input of each Dense is the previous Dense's kept
    outputs (the first one sees the whole flattened input).
    """
    macs = params = 0
    w_in = None
    for layer in model.layers:
        if not isinstance(layer, keras.layers.Dense):
            continue
        kernel = layer.get_weights()[0]
        rows = kernel.shape[0] if w_in is None else w_in
        cols = widths.get(layer.name, kernel.shape[1])
        k = kernel[:rows, :cols]
        macs += k.size
        params += k.size
        if layer.use_bias:
            params += layer.get_weights()[1][:cols].size
        w_in = cols
    return macs, params


@pytest.mark.parametrize(
    ("input_shape", "hidden", "classes", "bias"),
    [
        ((28, 28, 1), [256, 256], 10, True),  # the default model
        ((7, 5, 3), [13, 9, 6], 4, True),
        ((20,), [8], 3, False),
    ],
)
def test_keras_macs_and_params_match_direct_count(input_shape, hidden, classes, bias):
    model = _dense_model(input_shape, hidden, classes, seed=1, bias=bias)
    layers = cost_layers_from_keras(model)

    assert [layer.name for layer in layers] == [f"fc{i + 1}" for i in range(len(hidden))] + [
        "logits"
    ]
    assert [layer.prunable for layer in layers] == [True] * len(hidden) + [False]
    assert layers[0].producer is None and layers[0].input_units == math.prod(input_shape)
    assert all(b.producer == a.name for a, b in zip(layers, layers[1:], strict=False))

    # Full model: params agree with Keras' own count.
    full = full_widths(layers)
    assert model_params(layers, full) == model.count_params()
    assert (model_macs(layers, full), model_params(layers, full)) == _sliced_direct_count(
        model, full
    )

    rng = np.random.default_rng(0)
    for _ in range(5):
        widths = {f"fc{i + 1}": int(rng.integers(1, h + 1)) for i, h in enumerate(hidden)}
        assert (model_macs(layers, widths), model_params(layers, widths)) == (
            _sliced_direct_count(model, widths)
        )


def test_default_model_numbers_by_hand():
    model = _dense_model((28, 28, 1), [256, 256], 10, seed=0)
    layers = cost_layers_from_keras(model)
    assert model_macs(layers, full_widths(layers)) == 784 * 256 + 256 * 256 + 256 * 10
    w = {"fc1": 96, "fc2": 64}
    assert model_macs(layers, w) == 784 * 96 + 96 * 64 + 64 * 10
    assert model_params(layers, w) == 784 * 96 + 96 + 96 * 64 + 64 + 64 * 10 + 10
    # Non-prunable layers may be given, at full width only.
    assert model_macs(layers, {**w, "logits": 10}) == model_macs(layers, w)
    with pytest.raises(ValueError, match="logits"):
        model_macs(layers, {**w, "logits": 5})


def test_sequential_model_is_supported():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4, 4)),
            keras.layers.Flatten(),
            keras.layers.Dense(6, activation="relu", name="a"),
            keras.layers.Dense(2, name="b"),
        ]
    )
    layers = cost_layers_from_keras(model)
    assert [(x.name, x.units, x.input_units, x.prunable) for x in layers] == [
        ("a", 6, 16, True),
        ("b", 2, 6, False),
    ]


def test_unsupported_layer_is_named():
    inp = keras.Input((8, 8, 1))
    x = keras.layers.LayerNormalization(name="my_norm")(inp)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(3)(x)
    with pytest.raises(RedsError, match="my_norm.*LayerNormalization"):
        cost_layers_from_keras(keras.Model(inp, out))


def test_dense_on_unflattened_input_is_rejected():
    inp = keras.Input((5, 3))
    out = keras.layers.Dense(3, name="fc_3d")(inp)
    with pytest.raises(RedsError, match="fc_3d.*Flatten"):
        cost_layers_from_keras(keras.Model(inp, out))


def test_branches_joined_by_an_add_are_one_tied_group():
    inp = keras.Input((5,))
    a = keras.layers.Dense(4, name="left")(inp)
    b = keras.layers.Dense(4, name="right")(inp)
    out = keras.layers.Add()([a, b])
    layers = cost_layers_from_keras(keras.Model(inp, out))
    # The group holds the model output: fixed at full width.
    assert [(c.name, c.tied, c.prunable) for c in layers] == [
        ("left", None, False),
        ("right", "left", False),
    ]


def test_model_without_dense_is_rejected():
    inp = keras.Input((5,))
    out = keras.layers.Activation("relu")(inp)
    with pytest.raises(RedsError, match="no Dense"):
        cost_layers_from_keras(keras.Model(inp, out))


def _conv_net():
    # conv 3x3 on 3 input channels, 16x16 output; depthwise 3x3 8x8; pointwise; classifier.
    return [
        CostLayer(
            "c1", "conv", 16, 9 * 16 * 16, None, 3, params_per_pair=9, out_elems_per_unit=256
        ),
        CostLayer("dw", "depthwise", 16, 9 * 8 * 8, "c1", 16, params_per_pair=9),
        CostLayer("pw", "pointwise", 32, 8 * 8, "dw", 16, out_elems_per_unit=64),
        CostLayer("fc", "dense", 5, 1, "pw", 32, prunable=False),
    ]


def test_conv_depthwise_costs_by_hand():
    layers = _conv_net()
    w = {"c1": 8, "pw": 12}
    full = resolve_widths(layers, w)
    assert full == {"c1": 8, "dw": 8, "pw": 12, "fc": 5}
    expected_macs = 9 * 256 * 3 * 8 + 9 * 64 * 8 + 64 * 8 * 12 + 12 * 5
    assert model_macs(layers, w) == expected_macs
    expected_params = (9 * 3 * 8 + 8) + (9 * 8 + 8) + (8 * 12 + 12) + (12 * 5 + 5)
    assert model_params(layers, w) == expected_params
    # A depthwise width that contradicts its input width is an error.
    with pytest.raises(ValueError, match="dw"):
        model_macs(layers, {**w, "dw": 4})
    with pytest.raises(ValueError, match="depthwise"):
        layer_macs(layers[1], 8, 4)
    assert layer_params(layers[0], 3, 16) == 9 * 3 * 16 + 16


def test_width_and_layer_validation():
    layers = _conv_net()
    with pytest.raises(ValueError, match="no width given"):
        model_macs(layers, {"c1": 8})
    with pytest.raises(ValueError, match="outside"):
        model_macs(layers, {"c1": 17, "pw": 4})
    with pytest.raises(ValueError, match="outside"):
        model_macs(layers, {"c1": 0, "pw": 4})
    with pytest.raises(ValueError, match="unknown layers"):
        model_macs(layers, {"c1": 8, "pw": 4, "nope": 1})
    with pytest.raises(ValueError, match="not an earlier layer"):
        validate_layers(
            [CostLayer("a", "dense", 4, 1, "b", 4), CostLayer("b", "dense", 4, 1, None, 4)]
        )
    with pytest.raises(ValueError, match="duplicate"):
        validate_layers([CostLayer("a", "dense", 4, 1, None, 4)] * 2)
    with pytest.raises(ValueError, match="unknown kind"):
        validate_layers([CostLayer("a", "lstm", 4, 1, None, 4)])
    with pytest.raises(ValueError, match="depthwise"):
        validate_layers([CostLayer("a", "depthwise", 4, 1, None, 3)])


def test_activation_elems_by_hand():
    layers = [
        CostLayer("c1", "conv", 8, 9 * 36, None, 3, out_elems_per_unit=36, input_elems_per_unit=64),
        CostLayer("dw", "depthwise", 8, 9 * 9, "c1", 8, out_elems_per_unit=9),
        CostLayer("fc", "dense", 5, 1, "dw", 8, prunable=False),
    ]
    acts = model_activation_elems(layers, {"c1": 4})
    assert acts == {"c1": 64 * 3 + 36 * 4, "dw": 36 * 4 + 9 * 4, "fc": 9 * 4 + 5}
