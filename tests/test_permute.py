from __future__ import annotations

import numpy as np
import pytest
import tf_keras as keras

from reds_tf.errors import RedsError
from reds_tf.models import dnn
from reds_tf.permute import permute_by_importance, permute_model


def _randomise(model: keras.Model, rng: np.random.Generator) -> None:
    """Random weights at a trained-like scale (kernels ~ 1/sqrt(fan-in), outputs O(1))
    with non-zero biases and BN statistics, so permutation mistakes show."""
    for layer in model.layers:
        ws = layer.get_weights()
        if ws:
            scale = [1 / np.sqrt(np.prod(w.shape[:-1])) if w.ndim > 1 else 0.5 for w in ws]
            new = [
                (rng.normal(size=w.shape) * s).astype(np.float32)
                for w, s in zip(ws, scale, strict=True)
            ]
            if isinstance(layer, keras.layers.BatchNormalization):
                new[3] = np.abs(new[3]) + 0.5  # variance > 0
            layer.set_weights(new)


@pytest.mark.parametrize("seed", range(5))
def test_dense_permutation_preserves_function(seed):
    rng = np.random.default_rng(seed)
    depth = int(rng.integers(1, 4))
    hidden = [int(h) for h in rng.integers(3, 40, depth)]
    m = dnn((4, 5, 1), hidden, int(rng.integers(2, 11)), dropout=0.1 * (seed % 2))
    _randomise(m, rng)
    perms = {f"fc{i + 1}": rng.permutation(h) for i, h in enumerate(hidden)}
    p = permute_model(m, perms)
    x = rng.normal(size=(64, 4, 5, 1)).astype(np.float32)
    diff = np.abs(m.predict(x, verbose=0) - p.predict(x, verbose=0)).max()
    assert diff <= 1e-5
    # And it really moved the units: fc1's columns are the old ones in perm order.
    np.testing.assert_array_equal(
        p.get_layer("fc1").kernel.numpy(), m.get_layer("fc1").kernel.numpy()[:, perms["fc1"]]
    )
    assert not np.array_equal(perms["fc1"], np.arange(hidden[0])) or hidden[0] < 4


def test_conv_bn_depthwise_flatten_permutation_preserves_function():
    rng = np.random.default_rng(3)
    inp = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(6, 3, padding="same", name="c1")(inp)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.Conv2D(5, 1, name="pw")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(7, activation="relu", name="fc")(x)
    m = keras.Model(inp, keras.layers.Dense(3, name="logits")(x))
    _randomise(m, rng)
    perms = {"c1": rng.permutation(6), "pw": rng.permutation(5), "fc": rng.permutation(7)}
    p = permute_model(m, perms)
    xin = rng.normal(size=(16, 8, 8, 2)).astype(np.float32)
    assert np.abs(m.predict(xin, verbose=0) - p.predict(xin, verbose=0)).max() <= 1e-5


def test_sort_by_importance_gives_descending_scores():
    rng = np.random.default_rng(0)
    m = dnn((6,), [9, 5], 3)
    _randomise(m, rng)
    scores = {"fc1": rng.random(9), "fc2": rng.random(5)}
    p, perms, sorted_scores = permute_by_importance(m, scores)
    for n, s in sorted_scores.items():
        assert np.all(np.diff(s) <= 0)
        np.testing.assert_array_equal(s, np.sort(scores[n])[::-1])
    # The most important unit of fc1 is now unit 0.
    best = int(np.argmax(scores["fc1"]))
    np.testing.assert_array_equal(
        p.get_layer("fc1").kernel.numpy()[:, 0], m.get_layer("fc1").kernel.numpy()[:, best]
    )


def test_bad_permutations_and_unsupported_graphs():
    m = dnn((6,), [4], 3)
    with pytest.raises(ValueError, match="not a permutation"):
        permute_model(m, {"fc1": np.array([0, 1, 1, 2])})
    with pytest.raises(RedsError, match="cannot be permuted"):
        permute_model(m, {"flatten": np.arange(6)})
    inp = keras.Input((4,))
    a = keras.layers.Dense(4, name="a")(inp)
    b = keras.layers.Dense(4, name="b")(inp)
    out = keras.layers.Add()([a, b])
    m = keras.Model(inp, keras.layers.Dense(3, name="c")(out))
    # An Add ties a and b: b moves with a, and only through a.
    with pytest.raises(RedsError, match="'b' shares its channels with 'a'.*through 'a'"):
        permute_model(m, {"b": np.arange(4)[::-1]})
    p = permute_model(m, {"a": np.arange(4)[::-1]})
    np.testing.assert_array_equal(p.get_layer("b").kernel.numpy(), m.get_layer("b").kernel[:, ::-1])
    inp = keras.Input((4,))
    x = keras.layers.Dense(4, name="a")(inp)
    out = keras.layers.Concatenate()([x, keras.layers.Dense(2, name="b")(inp)])
    with pytest.raises(RedsError, match="Concatenate is not supported"):
        permute_model(keras.Model(inp, out), {"a": np.arange(4)[::-1]})


def _resnet8(seed: int) -> keras.Model:
    """MLPerf Tiny ResNet-8 (identity shortcut in stack 1, 1x1 projections in
    stacks 2 and 3) at a reduced input size, random weights."""
    from reds_tf.models import resnet

    m = resnet(
        (16, 16, 3),
        {"filters": 16, "kernel": [3, 3], "strides": [1, 1]},
        [{"filters": f, "strides": [s, s]} for f, s in ((16, 1), (32, 2), (64, 2))],
        10,
    )
    _randomise(m, np.random.default_rng(seed))
    return m


@pytest.mark.parametrize("seed", range(2))
def test_resnet8_permutation_preserves_function(seed):
    """Every tied group (identity and projection shortcuts) takes one
    permutation from its summed importance: outputs unchanged."""
    from reds_tf import ir
    from reds_tf.costs import cost_layers
    from reds_tf.importance import fold_tied_scores

    m = _resnet8(seed)
    graph = ir.from_keras(m)
    assert graph.tied_groups == {
        "conv1": ["conv1", "s1_conv2"],  # identity shortcut: the stem and block 1
        "s2_conv2": ["s2_conv2", "s2_proj"],  # projection shortcuts
        "s3_conv2": ["s3_conv2", "s3_proj"],
    }
    layers = cost_layers(graph)
    rng = np.random.default_rng(100 + seed)
    raw = {c.name: rng.random(c.units) for c in layers if c.prunable}
    scores = fold_tied_scores(raw, layers)
    assert set(scores) == {"conv1", "s1_conv1", "s2_conv1", "s2_conv2", "s3_conv1", "s3_conv2"}
    np.testing.assert_array_equal(scores["s2_conv2"], raw["s2_conv2"] + raw["s2_proj"])
    p, perms, sorted_scores = permute_by_importance(m, scores)
    x = rng.normal(size=(32, 16, 16, 3)).astype(np.float32)
    want = m.predict(x, verbose=0)
    assert np.abs(want - p.predict(x, verbose=0)).max() <= 1e-5 * max(1.0, np.abs(want).max())
    for rep, members in graph.tied_groups.items():
        for name in members:  # each member's output channels in the group's order
            k = m.get_layer(name).kernel.numpy()
            src = graph.producer(graph.node(name))
            p_in = perms[src] if src in perms else np.arange(k.shape[2])
            np.testing.assert_array_equal(
                p.get_layer(name).kernel.numpy(), k[:, :, p_in][..., perms[rep]]
            )
    assert all(np.all(np.diff(s) <= 0) for s in sorted_scores.values())
