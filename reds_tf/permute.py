"""Exact, function-preserving permutation of units.

Permuting the output units of a layer (its kernel's output axis and bias) and
the matching input axis of whatever consumes those units leaves the network's
function unchanged. After sorting units by importance, every submodel is a
PREFIX of each layer.

The walk is driven by a per-layer-type rule table, so that conv, BatchNorm and
depthwise layers are handled by the same code:

* ``PRODUCER``: how a prunable layer permutes its own output units;
* ``CHANNELWISE``: layers that carry the channel axis through unchanged but own
  per-channel weights (BatchNorm, depthwise conv): permute them and go on;
* ``TRANSPARENT``: layers that carry the channels through without weights;
* ``CONSUMER``: how a layer permutes its input axis (and the walk stops there);
* ``Flatten`` expands a channel permutation over the spatial positions.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tf_keras as keras

from reds_tf.errors import RedsError

Weights = list[np.ndarray]
Rule = Callable[[keras.layers.Layer, Weights, np.ndarray], Weights]


def _dense_out(layer: keras.layers.Layer, w: Weights, p: np.ndarray) -> Weights:
    # kernel (in, out), bias (out,)
    return [w[0][:, p]] + ([w[1][p]] if layer.use_bias else [])


def _dense_in(layer: keras.layers.Layer, w: Weights, p: np.ndarray) -> Weights:
    return [w[0][p, :]] + w[1:]


def _conv_out(layer: keras.layers.Layer, w: Weights, p: np.ndarray) -> Weights:
    # kernel (kh, kw, in, out), bias (out,)
    return [w[0][..., p]] + ([w[1][p]] if layer.use_bias else [])


def _conv_in(layer: keras.layers.Layer, w: Weights, p: np.ndarray) -> Weights:
    return [w[0][:, :, p, :]] + w[1:]


def _bn(layer: keras.layers.Layer, w: Weights, p: np.ndarray) -> Weights:
    # gamma, beta, moving mean, moving variance: all (channels,)
    return [v[p] for v in w]


def _depthwise(layer: keras.layers.Layer, w: Weights, p: np.ndarray) -> Weights:
    if layer.depth_multiplier != 1:
        raise RedsError(f"depthwise layer '{layer.name}': only depth_multiplier=1 is supported")
    # kernel (kh, kw, channels, 1), bias (channels,)
    return [w[0][:, :, p, :]] + ([w[1][p]] if layer.use_bias else [])


def _is_depthwise(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, keras.layers.DepthwiseConv2D)


def _is_conv(layer: keras.layers.Layer) -> bool:
    return type(layer) is keras.layers.Conv2D


def _is_dense(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, keras.layers.Dense)


def _is_bn(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, keras.layers.BatchNormalization)


PRODUCER: list[tuple[Callable[[keras.layers.Layer], bool], Rule]] = [
    (_is_dense, _dense_out),
    (_is_conv, _conv_out),
]
CONSUMER: list[tuple[Callable[[keras.layers.Layer], bool], Rule]] = [
    (_is_dense, _dense_in),
    (_is_conv, _conv_in),
]
CHANNELWISE: list[tuple[Callable[[keras.layers.Layer], bool], Rule]] = [
    (_is_bn, _bn),
    (_is_depthwise, _depthwise),
]
TRANSPARENT: tuple[type, ...] = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.Dropout,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.ZeroPadding2D,
)


def _rule(table: list, layer: keras.layers.Layer) -> Rule | None:
    for pred, rule in table:
        if pred(layer):
            return rule
    return None


def _consumers(model: keras.Model) -> dict[str, list[keras.layers.Layer]]:
    """Layer name -> layers that take its output as input (within ``model``)."""
    out: dict[str, list[keras.layers.Layer]] = {layer.name: [] for layer in model.layers}
    for layer in model.layers:
        for node in layer._inbound_nodes:  # tf_keras has no public graph API
            srcs = node.inbound_layers
            for src in srcs if isinstance(srcs, list) else [srcs]:
                if src.name in out and layer not in out[src.name]:
                    out[src.name].append(layer)
    return out


def _flatten_perm(layer: keras.layers.Layer, p: np.ndarray) -> np.ndarray:
    """Channel permutation -> permutation of the flattened (..., C) vector."""
    shape = tuple(int(d) for d in layer.input_shape[1:])
    if shape[-1] != len(p):
        raise RedsError(f"Flatten '{layer.name}': channel axis {shape[-1]} != {len(p)} units")
    idx = np.arange(int(np.prod(shape))).reshape(shape)
    return idx[..., p].reshape(-1)


def permute_model(model: keras.Model, perms: dict[str, np.ndarray]) -> keras.Model:
    """A copy of ``model`` whose layer ``name``'s output unit ``i`` is the old unit
    ``perms[name][i]``; consumers are re-indexed so the function is unchanged.

    Args:
        model: functional tf_keras model.
        perms: ``{producer layer name: permutation of arange(units)}``.
    """
    new = keras.models.clone_model(model)
    weights = {layer.name: layer.get_weights() for layer in model.layers}
    consumers = _consumers(model)
    for name, p in perms.items():
        p = np.asarray(p, dtype=np.int64)
        layer = model.get_layer(name)
        rule = _rule(PRODUCER, layer)
        if rule is None:
            raise RedsError(f"layer '{name}' ({type(layer).__name__}) cannot be permuted")
        units = weights[name][0].shape[-1]
        if sorted(p.tolist()) != list(range(units)):
            raise ValueError(f"perms['{name}'] is not a permutation of {units} units")
        weights[name] = rule(layer, weights[name], p)
        _propagate(layer, p, consumers, weights)
    for layer in new.layers:
        layer.set_weights(weights[layer.name])
    return new


def _propagate(
    src: keras.layers.Layer,
    p: np.ndarray,
    consumers: dict[str, list[keras.layers.Layer]],
    weights: dict[str, Weights],
) -> None:
    """Re-index everything downstream of ``src`` that sees its units."""
    for layer in consumers[src.name]:
        if (rule := _rule(CHANNELWISE, layer)) is not None:
            weights[layer.name] = rule(layer, weights[layer.name], p)
            _propagate(layer, p, consumers, weights)
        elif isinstance(layer, TRANSPARENT):
            _propagate(layer, p, consumers, weights)
        elif isinstance(layer, keras.layers.Flatten):
            _propagate(layer, _flatten_perm(layer, p), consumers, weights)
        elif (rule := _rule(CONSUMER, layer)) is not None:
            weights[layer.name] = rule(layer, weights[layer.name], p)
        else:
            # Add/Concatenate etc. would need permutations tied across branches.
            raise RedsError(f"cannot permute through layer '{layer.name}' ({type(layer).__name__})")


def sort_permutations(scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Permutations that order each layer's units by descending score (stable)."""
    return {name: np.argsort(-np.asarray(s), kind="stable") for name, s in scores.items()}


def permute_by_importance(
    model: keras.Model, scores: dict[str, np.ndarray]
) -> tuple[keras.Model, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Sort every scored layer's units by descending importance.

    Returns the permuted model, the permutations, and the scores in the new
    order (each 1-D, descending), which is what the knapsack takes.
    """
    perms = sort_permutations(scores)
    sorted_scores = {n: np.asarray(scores[n])[p] for n, p in perms.items()}
    return permute_model(model, perms), perms, sorted_scores
