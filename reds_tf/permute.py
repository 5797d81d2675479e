"""Exact, function-preserving permutation of units.

Permuting the output units of a layer (its kernel's output axis and bias) and
the matching input axis of whatever consumes those units leaves the network's
function unchanged. After sorting units by importance, every submodel is a
PREFIX of each layer.

The walk follows the model's graph (:func:`reds_tf.ir.from_keras`: consumers,
input shapes) and is driven by rule tables keyed by node kind, so that conv,
BatchNorm and depthwise layers are handled by the same code:

* ``PRODUCER``: how a prunable layer permutes its own output units;
* ``CHANNELWISE``: layers that carry the channel axis through unchanged but own
  per-channel weights (BatchNorm, depthwise conv): permute them and go on;
* ``TRANSPARENT``: layers that carry the channels through without weights;
* ``CONSUMER``: how a layer permutes its input axis (and the walk stops there);
* ``Flatten`` expands a channel permutation over the spatial positions;
* ``Add`` (residual networks) sums channels of a tied group (:mod:`reds_tf.ir`):
  every member takes the SAME permutation, given under the group's
  representative, and the walk passes each add once.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tf_keras as keras

from reds_tf import ir
from reds_tf.errors import RedsError

Weights = list[np.ndarray]
Rule = Callable[[ir.Node, Weights, np.ndarray], Weights]


def _dense_out(node: ir.Node, w: Weights, p: np.ndarray) -> Weights:
    # kernel (in, out), bias (out,)
    return [w[0][:, p]] + ([w[1][p]] if node.use_bias else [])


def _dense_in(node: ir.Node, w: Weights, p: np.ndarray) -> Weights:
    return [w[0][p, :]] + w[1:]


def _conv_out(node: ir.Node, w: Weights, p: np.ndarray) -> Weights:
    # kernel (kh, kw, in, out), bias (out,)
    return [w[0][..., p]] + ([w[1][p]] if node.use_bias else [])


def _conv_in(node: ir.Node, w: Weights, p: np.ndarray) -> Weights:
    return [w[0][:, :, p, :]] + w[1:]


def _bn(node: ir.Node, w: Weights, p: np.ndarray) -> Weights:
    # gamma, beta, moving mean, moving variance: all (channels,)
    return [v[p] for v in w]


def _depthwise(node: ir.Node, w: Weights, p: np.ndarray) -> Weights:
    # kernel (kh, kw, channels, 1) (depth multiplier 1: ir.from_keras checks), bias (channels,)
    return [w[0][:, :, p, :]] + ([w[1][p]] if node.use_bias else [])


# Rule tables, by node kind (reds_tf.ir).
PRODUCER: dict[str, Rule] = {ir.DENSE: _dense_out, ir.CONV: _conv_out}
CONSUMER: dict[str, Rule] = {ir.DENSE: _dense_in, ir.CONV: _conv_in}
CHANNELWISE: dict[str, Rule] = {ir.BATCHNORM: _bn, ir.DEPTHWISE: _depthwise}
TRANSPARENT = frozenset(
    {
        ir.ACTIVATION,
        ir.DROPOUT,
        ir.MAXPOOL,
        ir.AVGPOOL,
        ir.GLOBAL_AVGPOOL,
        ir.GLOBAL_MAXPOOL,
        ir.ZEROPAD,
        ir.RESHAPE,  # keeps the channel axis (ir.from_keras checks)
        ir.ADD,
    }
)


def _flatten_perm(node: ir.Node, p: np.ndarray) -> np.ndarray:
    """Channel permutation -> permutation of the flattened (..., C) vector."""
    shape = node.in_shape
    if shape[-1] != len(p):
        raise RedsError(f"Flatten '{node.name}': channel axis {shape[-1]} != {len(p)} units")
    idx = np.arange(int(np.prod(shape))).reshape(shape)
    return idx[..., p].reshape(-1)


def permute_model(model: keras.Model, perms: dict[str, np.ndarray]) -> keras.Model:
    """A copy of ``model`` whose layer ``name``'s output unit ``i`` is the old unit
    ``perms[name][i]``; consumers are re-indexed so the function is unchanged.

    Args:
        model: functional tf_keras model.
        perms: ``{producer layer name: permutation of arange(units)}``; a tied
            group is permuted through its representative (all members alike).
    """
    graph = ir.from_keras(model)
    new = keras.models.clone_model(model)
    weights = {layer.name: layer.get_weights() for layer in model.layers}
    groups = graph.tied_groups
    for name, p in perms.items():
        p = np.asarray(p, dtype=np.int64)
        node = graph.node(name) if name in graph else None
        rule = None if node is None else PRODUCER.get(node.kind)
        if rule is None:
            cls = type(model.get_layer(name)).__name__
            raise RedsError(f"layer '{name}' ({cls}) cannot be permuted")
        if node.tied is not None:
            raise RedsError(
                f"layer '{name}' shares its channels with '{node.tied}' (joined by an Add); "
                f"permute the group through '{node.tied}'"
            )
        units = weights[name][0].shape[-1]
        if sorted(p.tolist()) != list(range(units)):
            raise ValueError(f"perms['{name}'] is not a permutation of {units} units")
        seen: set[str] = set()
        for member in groups.get(name, [name]):
            m = graph.node(member)
            weights[member] = PRODUCER[m.kind](m, weights[member], p)
            _propagate(graph, m, p, weights, seen)
    for layer in new.layers:
        layer.set_weights(weights[layer.name])
    return new


def _propagate(
    graph: ir.Graph, src: ir.Node, p: np.ndarray, weights: dict[str, Weights], seen: set[str]
) -> None:
    """Re-index everything downstream of ``src`` that sees its units; ``seen``:
    the nodes already re-indexed for this group (an add is reached once per input)."""
    for node in graph.consumers(src.name):
        if node.name in seen:
            continue
        seen.add(node.name)
        if (rule := CHANNELWISE.get(node.kind)) is not None:
            weights[node.name] = rule(node, weights[node.name], p)
            _propagate(graph, node, p, weights, seen)
        elif node.kind in TRANSPARENT:
            _propagate(graph, node, p, weights, seen)
        elif node.kind == ir.FLATTEN:
            _propagate(graph, node, _flatten_perm(node, p), weights, seen)
        elif (rule := CONSUMER.get(node.kind)) is not None:
            weights[node.name] = rule(node, weights[node.name], p)
        else:
            # Concatenate etc. would need permutations split across branches.
            raise RedsError(
                f"cannot permute through layer '{node.name}' ({node.layer_class or node.kind})"
            )


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
