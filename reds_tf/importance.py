"""First-order Taylor importance of every unit of the prunable layers.

For a Dense unit j with incoming weights ``W[:, j]`` the score is
``s_j = sum_i |W_ij * G_ij|`` where ``G`` is the loss gradient SUMMED over a
number of training mini-batches: the first-order estimate of how much the loss
changes when the unit is removed. Scores are returned in the layer's current
(original) unit order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras


def _output_axis_reducer(layer: keras.layers.Layer) -> tuple[tf.Variable, tuple[int, ...]]:
    """The kernel whose |W*G| is summed, and the axes to sum over (all but the unit axis)."""
    if isinstance(layer, keras.layers.Dense):
        return layer.kernel, (0,)  # kernel (in, out)
    if isinstance(layer, keras.layers.Conv2D) and not isinstance(
        layer, keras.layers.DepthwiseConv2D
    ):
        return layer.kernel, (0, 1, 2)  # kernel (kh, kw, in, out)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return layer.depthwise_kernel, (0, 1, 3)  # kernel (kh, kw, channels, multiplier)
    raise NotImplementedError(f"no importance rule for {type(layer).__name__} '{layer.name}'")


def taylor_scores(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    layer_names: Sequence[str],
    *,
    batches: int = 100,
    batch_size: int = 128,
    seed: int = 0,
    strategy: tf.distribute.Strategy | None = None,
) -> dict[str, np.ndarray]:
    """Taylor scores for the named layers.

    Args:
        model: a model returning logits, shape (batch, classes).
        x, y: training inputs (N, *input_shape) and int labels (N,).
        layer_names: prunable layers to score.
        batches: number of mini-batches whose gradients are summed (fewer if
            the data runs out).
        strategy: with more than one replica each mini-batch is split over
            them and their gradients summed (the same sum as on one device).
    Returns:
        ``{name: scores}``, scores float64 of shape (units,), non-negative.
    """
    layers = [model.get_layer(n) for n in layer_names]
    kernels, axes = zip(*(_output_axis_reducer(layer) for layer in layers), strict=True)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def grads(xb: tf.Tensor, yb: tf.Tensor) -> list[tf.Tensor]:
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=False))
        return tape.gradient(loss, list(kernels))

    if strategy is not None and strategy.num_replicas_in_sync > 1:
        grads = _replicated(strategy, model, list(kernels))

    # A fixed random sample of the training set, in mini-batches.
    n = min(len(x), batches * batch_size)
    idx = np.random.default_rng(seed).permutation(len(x))[:n]
    acc = [np.zeros(k.shape, np.float64) for k in kernels]
    for start in range(0, n, batch_size):
        b = idx[start : start + batch_size]
        for a, g in zip(acc, grads(tf.constant(x[b]), tf.constant(y[b])), strict=True):
            a += g.numpy()
    return {
        layer.name: np.abs(k.numpy().astype(np.float64) * g).sum(axis=ax)
        for layer, k, g, ax in zip(layers, kernels, acc, axes, strict=True)
    }


def _replicated(
    strategy: tf.distribute.Strategy,
    model: keras.Model,
    kernels: list[tf.Variable],
) -> Callable[[tf.Tensor, tf.Tensor], list[tf.Tensor]]:
    """``grads`` of :func:`taylor_scores` with each batch split over the
    replicas: replica r takes rows r, r + R, ...; its loss is its sum over the
    whole batch's size, so the summed gradients are those of the batch mean."""
    replicas = strategy.num_replicas_in_sync
    per_example = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction=keras.losses.Reduction.NONE
    )

    @tf.function
    def grads(xb: tf.Tensor, yb: tf.Tensor) -> list[tf.Tensor]:
        n = tf.cast(tf.shape(yb)[0], tf.float32)

        def rows(t: tf.Tensor):
            return strategy.experimental_distribute_values_from_function(
                lambda ctx: t[ctx.replica_id_in_sync_group :: replicas]
            )

        xs, ys = rows(xb), rows(yb)

        def one(xr: tf.Tensor, yr: tf.Tensor) -> list[tf.Tensor]:
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(per_example(yr, model(xr, training=False))) / n
            return tape.gradient(loss, kernels)

        per_replica = strategy.run(one, args=(xs, ys))
        return [strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None) for g in per_replica]

    return grads


def fold_tied_scores(scores: dict[str, np.ndarray], layers: Sequence) -> dict[str, np.ndarray]:
    """Scores per width-choosing layer, with every depthwise layer's channel
    scores and every tied layer's unit scores added to the layer whose width
    it follows.

    A depthwise channel exists exactly as long as the producer's unit that feeds
    it, so the pair is one unit: its value is the sum of both scores. Likewise
    the units of a tied group (outputs joined by an ``Add``) are one channel of
    the sum, kept or dropped together: the representative gets the group's sum.

    Args:
        scores: ``{name: (units,)}`` for the prunable layers (tied ones
            included) and, optionally, the depthwise layers (original unit order).
        layers: the model's :class:`reds_tf.costs.CostLayer` list.
    Returns:
        ``{name: (units,)}`` for the width-choosing (prunable, untied) layers only.
    """
    by_name = {c.name: c for c in layers}
    out = {
        c.name: np.asarray(scores[c.name], np.float64).copy()
        for c in layers
        if c.prunable and not c.follows
    }
    for c in layers:
        if not c.follows or c.name not in scores:
            continue
        root: str | None = c.name
        while root is not None and by_name[root].follows:
            r = by_name[root]
            root = r.tied if r.tied is not None else r.producer
        if root is not None and root in out:  # None: tied to the fixed model input
            out[root] += np.asarray(scores[c.name], np.float64)
    return out
