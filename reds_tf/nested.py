"""Nested model: K prefix submodels sharing one set of weights, one forward pass.

A :class:`NestedDense` holds the full kernel ``W`` (in, out) and bias ``b`` and,
for submodel k with input width ``i_k`` and output width ``o_k``, computes
``act(x_k @ W[:i_k, :o_k] + b[:o_k])``. Gradients of all K branches land on
the same variables, so one optimiser step trains all submodels jointly.

:func:`build_nested` turns a plain full-width model plus per-submodel widths
into a functional model whose output is the list of K logits (smallest
submodel first); :func:`to_plain` copies the (fine-tuned) weights back into a
plain full-width model, which is what the run directory stores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
import tf_keras as keras

from reds_tf import ir
from reds_tf.errors import RedsError
from reds_tf.inputs import predict_rows


class NestedDense(keras.layers.Layer):
    """Dense layer evaluated at K prefix widths.

    ``in_widths`` count input CHANNELS. With ``positions`` P > 1 the layer sits
    after Flatten of an (H, W, C) map (P = H*W, full kernel rows in (h, w, c)
    order): submodel k keeps the rows {(h, w, c): c < in_widths[k]}, a gather
    rather than a row prefix, in the order its own flattened input has them.

    Input: list of K tensors, tensor k of shape (batch, P * in_widths[k]).
    Output: list of K tensors, tensor k of shape (batch, out_widths[k]).
    """

    def __init__(
        self,
        units: int,
        in_widths: Sequence[int],
        out_widths: Sequence[int],
        activation: str | None = None,
        positions: int = 1,
        in_channels: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if len(in_widths) != len(out_widths):
            raise ValueError("in_widths and out_widths need one entry per submodel")
        self.units = int(units)
        self.in_widths = [int(w) for w in in_widths]
        self.out_widths = [int(w) for w in out_widths]
        self.positions = int(positions)
        self.in_channels = int(in_channels) if in_channels is not None else max(self.in_widths)
        if max(self.out_widths) > self.units or min(self.out_widths) < 1:
            raise ValueError(f"{self.name}: output widths {self.out_widths} out of 1..{units}")
        if max(self.in_widths) > self.in_channels:
            raise ValueError(f"{self.name}: input widths {self.in_widths} > {self.in_channels}")
        self.activation = keras.activations.get(activation)

    def build(self, input_shape: list) -> None:
        fan_in = self.positions * self.in_channels
        self.kernel = self.add_weight(
            name="kernel", shape=(fan_in, self.units), initializer="glorot_uniform"
        )
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")
        super().build(input_shape)

    def _rows(self, i_k: int) -> np.ndarray:
        """Kernel rows submodel k uses, in (h, w, c < i_k) order."""
        pos = np.arange(self.positions)[:, None] * self.in_channels
        return (pos + np.arange(i_k)[None, :]).reshape(-1)

    def call(self, inputs: list[tf.Tensor]) -> list[tf.Tensor]:
        outs = []
        for x, i_k, o_k in zip(inputs, self.in_widths, self.out_widths, strict=True):
            if self.positions == 1:
                w = self.kernel[:i_k, :o_k]
            elif i_k == self.in_channels:
                w = self.kernel[:, :o_k]
            else:
                w = tf.gather(self.kernel[:, :o_k], self._rows(i_k), axis=0)
            y = tf.matmul(x, w) + self.bias[:o_k]
            outs.append(self.activation(y))
        return outs

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg.update(
            units=self.units,
            in_widths=self.in_widths,
            out_widths=self.out_widths,
            activation=keras.activations.serialize(self.activation),
            positions=self.positions,
            in_channels=self.in_channels,
        )
        return cfg


def _conv_widths(layer: keras.layers.Layer, in_widths, out_widths) -> None:
    if len(in_widths) != len(out_widths):
        raise ValueError(f"{layer.name}: in_widths and out_widths need one entry per submodel")


class NestedConv2D(keras.layers.Layer):
    """Conv2D at K prefix widths: submodel k uses ``kernel[:, :, :i_k, :o_k]``.

    Input/output: lists of K NHWC tensors with i_k / o_k channels.
    """

    def __init__(
        self,
        filters: int,
        in_channels: int,
        in_widths: Sequence[int],
        out_widths: Sequence[int],
        kernel_size: Sequence[int],
        strides: Sequence[int],
        padding: str,
        use_bias: bool,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _conv_widths(self, in_widths, out_widths)
        self.filters = int(filters)
        self.in_channels = int(in_channels)
        self.in_widths = [int(w) for w in in_widths]
        self.out_widths = [int(w) for w in out_widths]
        self.kernel_size = tuple(int(k) for k in kernel_size)
        self.strides = tuple(int(s) for s in strides)
        self.padding = str(padding).upper()
        self.use_bias = bool(use_bias)

    def build(self, input_shape: list) -> None:
        shape = (*self.kernel_size, self.in_channels, self.filters)
        self.kernel = self.add_weight(name="kernel", shape=shape, initializer="glorot_uniform")
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs: list[tf.Tensor]) -> list[tf.Tensor]:
        outs = []
        for x, i_k, o_k in zip(inputs, self.in_widths, self.out_widths, strict=True):
            y = tf.nn.conv2d(x, self.kernel[:, :, :i_k, :o_k], self.strides, self.padding)
            outs.append(y + self.bias[:o_k] if self.use_bias else y)
        return outs

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg.update(
            filters=self.filters,
            in_channels=self.in_channels,
            in_widths=self.in_widths,
            out_widths=self.out_widths,
            kernel_size=list(self.kernel_size),
            strides=list(self.strides),
            padding=self.padding,
            use_bias=self.use_bias,
        )
        return cfg


class NestedDepthwise(keras.layers.Layer):
    """DepthwiseConv2D (multiplier 1) at K widths, each tied to its input width."""

    def __init__(
        self,
        channels: int,
        widths: Sequence[int],
        kernel_size: Sequence[int],
        strides: Sequence[int],
        padding: str,
        use_bias: bool,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.widths = [int(w) for w in widths]
        self.kernel_size = tuple(int(k) for k in kernel_size)
        self.strides = tuple(int(s) for s in strides)
        self.padding = str(padding).upper()
        self.use_bias = bool(use_bias)

    def build(self, input_shape: list) -> None:
        shape = (*self.kernel_size, self.channels, 1)
        self.kernel = self.add_weight(
            name="depthwise_kernel", shape=shape, initializer="glorot_uniform"
        )
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.channels,), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs: list[tf.Tensor]) -> list[tf.Tensor]:
        outs = []
        for x, c in zip(inputs, self.widths, strict=True):
            y = tf.nn.depthwise_conv2d(
                x, self.kernel[:, :, :c, :], (1, *self.strides, 1), self.padding
            )
            outs.append(y + self.bias[:c] if self.use_bias else y)
        return outs

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg.update(
            channels=self.channels,
            widths=self.widths,
            kernel_size=list(self.kernel_size),
            strides=list(self.strides),
            padding=self.padding,
            use_bias=self.use_bias,
        )
        return cfg


class NestedBatchNorm(keras.layers.Layer):
    """BatchNormalization at K prefix widths.

    Weights in Keras order (gamma, beta, moving_mean, moving_variance), all
    (channels,), then per-submodel statistics ``sub_mean``/``sub_variance``
    (K, channels). Training normalises each branch with its own batch
    moments; the SHARED moving statistics get one momentum update per branch
    (on that branch's prefix), as when the submodels share one BN layer.
    Inference uses the shared statistics, or with ``per_submodel = True`` the
    per-submodel ones (filled by :func:`estimate_bn_stats`).

    ``private_affine``: every submodel but the full one also gets its own
    scale and shift, ``gamma_k = gamma * exp(sub_log_gamma[k])`` and
    ``beta_k = beta + sub_dbeta[k]`` ((K-1, channels) each, trainable, start
    at 0). The exponential keeps ``gamma_k``'s sign equal to ``gamma``'s, which
    lets the int8 export keep the weights shared (see :func:`bn_stats_arrays`).
    """

    def __init__(
        self,
        channels: int,
        widths: Sequence[int],
        momentum: float = 0.99,
        epsilon: float = 1e-3,
        private_affine: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.widths = [int(w) for w in widths]
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.private_affine = bool(private_affine) and len(self.widths) > 1
        self.per_submodel = False
        self.calibrating = False  # set by estimate_bn_stats

    def build(self, input_shape: list) -> None:
        c, k = self.channels, len(self.widths)
        self.gamma = self.add_weight(name="gamma", shape=(c,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(c,), initializer="zeros")
        self.moving_mean = self.add_weight(
            name="moving_mean", shape=(c,), initializer="zeros", trainable=False
        )
        self.moving_variance = self.add_weight(
            name="moving_variance", shape=(c,), initializer="ones", trainable=False
        )
        self.sub_mean = self.add_weight(
            name="sub_mean", shape=(k, c), initializer="zeros", trainable=False
        )
        self.sub_variance = self.add_weight(
            name="sub_variance", shape=(k, c), initializer="ones", trainable=False
        )
        if self.private_affine:
            self.sub_log_gamma = self.add_weight(
                name="sub_log_gamma", shape=(k - 1, c), initializer="zeros"
            )
            self.sub_dbeta = self.add_weight(
                name="sub_dbeta", shape=(k - 1, c), initializer="zeros"
            )
        super().build(input_shape)

    def affine(self, k: int, c: int) -> tuple[tf.Tensor, tf.Tensor]:
        """Branch k's (gamma, beta), each (c,)."""
        if not self.private_affine or k == len(self.widths) - 1:
            return self.gamma[:c], self.beta[:c]
        return (
            self.gamma[:c] * tf.exp(self.sub_log_gamma[k, :c]),
            self.beta[:c] + self.sub_dbeta[k, :c],
        )

    def _pad(self, v: tf.Tensor, c: int) -> tf.Tensor:
        return tf.pad(v, [[0, self.channels - c]])

    def _update_moving(self, mean: tf.Tensor, var: tf.Tensor, c: int) -> None:
        """One momentum step of the shared statistics' first ``c`` entries."""
        m = self.momentum
        keep = self._pad(tf.ones([c]), c)
        self.moving_mean.assign(
            self.moving_mean - keep * (1 - m) * (self.moving_mean - self._pad(mean, c))
        )
        self.moving_variance.assign(
            self.moving_variance - keep * (1 - m) * (self.moving_variance - self._pad(var, c))
        )

    def call(self, inputs: list[tf.Tensor], training: bool | None = None) -> list[tf.Tensor]:
        outs = []
        for k, (x, c) in enumerate(zip(inputs, self.widths, strict=True)):
            gamma, beta = self.affine(k, c)
            if training and not self.calibrating and len(x.shape) == 4:
                # The fused kernel is what Keras uses on NHWC: it made a joint
                # DS-CNN-S training step ~17 % faster than moments + normalise.
                y, mean, var = tf.compat.v1.nn.fused_batch_norm(
                    x, gamma, beta, epsilon=self.epsilon, is_training=True
                )
                self._update_moving(mean, var, c)
                outs.append(y)
                continue
            if training:
                axes = list(range(len(x.shape) - 1))
                mean, var = tf.nn.moments(x, axes=axes)
                if self.calibrating:
                    # Sum of batch moments; estimate_bn_stats turns them into averages.
                    onehot = tf.one_hot(k, len(self.widths))[:, None]
                    self.sub_mean.assign_add(onehot * self._pad(mean, c)[None, :])
                    self.sub_variance.assign_add(
                        onehot * self._pad(var + tf.square(mean), c)[None, :]
                    )
                else:
                    self._update_moving(mean, var, c)
            elif self.per_submodel:
                mean, var = self.sub_mean[k, :c], self.sub_variance[k, :c]
            else:
                mean, var = self.moving_mean[:c], self.moving_variance[:c]
            outs.append(tf.nn.batch_normalization(x, mean, var, beta, gamma, self.epsilon))
        return outs

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg.update(
            channels=self.channels,
            widths=self.widths,
            momentum=self.momentum,
            epsilon=self.epsilon,
            private_affine=self.private_affine,
        )
        return cfg


class _PerBranch(keras.layers.Layer):
    """Applies one weightless Keras layer (ReLU, pooling, Flatten, Dropout) to
    every branch."""

    def __init__(self, inner: keras.layers.Layer, **kwargs):
        super().__init__(**kwargs)
        self.inner = inner

    def call(self, inputs: list[tf.Tensor], training: bool | None = None) -> list[tf.Tensor]:
        return [self.inner(x, training=training) for x in inputs]


class NestedAdd(keras.layers.Layer):
    """Add (residual join) per branch. Input: the K branches of each summed
    tensor, one after the other (n * K tensors); output k: the sum of every
    input's branch k (their widths agree: the inputs are one tied group)."""

    def __init__(self, branches: int, **kwargs):
        super().__init__(**kwargs)
        self.branches = int(branches)

    def call(self, inputs: list[tf.Tensor]) -> list[tf.Tensor]:
        k = self.branches
        return [tf.add_n(inputs[j::k]) for j in range(k)]

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg.update(branches=self.branches)
        return cfg


@dataclass
class _Step:
    """One node of :func:`build_nested`: its Keras layer, its input branches (of
    the first input; ``all_branches``: of every input) and the input / output
    width of every submodel."""

    graph: ir.Graph
    node: ir.Node
    layer: keras.layers.Layer
    branches: list[tf.Tensor]
    in_w: list[int]
    out_w: list[int]
    private_bn_affine: bool
    all_branches: list[list[tf.Tensor]] | None = None


def _nest_depthwise(st: _Step) -> list[tf.Tensor]:
    layer = st.layer
    nl = NestedDepthwise(
        st.node.units,
        st.in_w,
        layer.kernel_size,
        layer.strides,
        layer.padding,
        layer.use_bias,
        name=st.node.name,
    )
    out = nl(st.branches)
    nl.set_weights(layer.get_weights())
    return _act(layer, out, len(out))


def _nest_conv(st: _Step) -> list[tf.Tensor]:
    layer = st.layer
    if tuple(layer.dilation_rate) != (1, 1):
        raise RedsError(f"conv layer '{layer.name}': groups/dilation are not supported")
    nl = NestedConv2D(
        st.node.units,
        st.node.in_shape[-1],
        st.in_w,
        st.out_w,
        layer.kernel_size,
        layer.strides,
        layer.padding,
        layer.use_bias,
        name=st.node.name,
    )
    out = nl(st.branches)
    nl.set_weights(layer.get_weights())
    return _act(layer, out, len(out))


def _nest_dense(st: _Step) -> list[tf.Tensor]:
    nl = NestedDense(
        st.node.units,
        st.in_w,
        st.out_w,
        activation=keras.activations.serialize(st.layer.activation),
        positions=st.graph.positions(st.node),
        in_channels=st.graph.input_units(st.node),
        name=st.node.name,
    )
    out = nl(st.branches)
    nl.set_weights(st.layer.get_weights())
    return out


def _nest_bn(st: _Step) -> list[tf.Tensor]:
    layer = st.layer
    if layer.axis not in ([-1], [len(layer.input_shape) - 1]) or not (layer.center and layer.scale):
        raise RedsError(f"BatchNormalization '{layer.name}': only channels-last with scale/center")
    nl = NestedBatchNorm(
        st.node.units,
        st.in_w,
        momentum=layer.momentum,
        epsilon=layer.epsilon,
        private_affine=st.private_bn_affine,
        name=st.node.name,
    )
    out = nl(st.branches)
    set_bn_weights(nl, layer.get_weights())
    return out


def _nest_add(st: _Step) -> list[tf.Tensor]:
    flat = [t for branches in st.all_branches for t in branches]
    return NestedAdd(len(st.branches), name=st.node.name)(flat)


def _per_branch(st: _Step) -> list[tf.Tensor]:
    inner = st.layer.__class__.from_config(st.layer.get_config())
    return _PerBranch(inner, name=st.node.name)(st.branches)


def _nest_reshape(st: _Step) -> list[tf.Tensor]:
    # The channel axis is kept (ir.from_keras checks) and may be narrower in a branch.
    target = tuple(st.layer.target_shape)
    inner = keras.layers.Reshape((*target[:-1], -1))
    return _PerBranch(inner, name=st.node.name)(st.branches)


# Node kind -> how its nested version is built (weightless kinds: per branch).
NESTED: dict[str, Callable[[_Step], list[tf.Tensor]]] = {
    ir.DEPTHWISE: _nest_depthwise,
    ir.CONV: _nest_conv,
    ir.DENSE: _nest_dense,
    ir.BATCHNORM: _nest_bn,
    ir.ACTIVATION: _per_branch,
    ir.DROPOUT: _per_branch,
    ir.AVGPOOL: _per_branch,
    ir.MAXPOOL: _per_branch,
    ir.FLATTEN: _per_branch,
    ir.RESHAPE: _nest_reshape,
    ir.ADD: _nest_add,
}


def build_nested(
    full: keras.Model, widths: Sequence[dict[str, int]], *, private_bn_affine: bool = False
) -> keras.Model:
    """Nested model over ``full`` (Conv2D / DepthwiseConv2D / BatchNormalization /
    Dense with activations, pooling, Flatten, Dropout, in a chain or joined by
    Add), built node by node from its graph (:func:`reds_tf.ir.from_keras`).

    Args:
        full: plain full-width model (its weights are copied, not shared).
        widths: one ``{layer name: output width}`` per submodel, smallest first;
            conv/dense layers missing from a dict stay at full width (tied ones:
            their representative's width); depthwise and BN layers follow their
            input's width.
        private_bn_affine: BN layers give every submodel but the full one its
            own scale and shift (see :class:`NestedBatchNorm`).
    Returns:
        functional model: input (batch, *input_shape) -> list of K logits
        tensors, each (batch, num_classes).
    """
    k = len(widths)
    if k == 0:
        raise ValueError("need at least one submodel")
    graph = ir.from_keras(full)
    node_widths = [graph.node_widths(w) for w in widths]
    x = inp = keras.Input(shape=full.input_shape[1:], name="input")
    branches: dict[str, list[tf.Tensor]] = {ir.INPUT: [x] * k}
    for node in graph.nodes:
        build = NESTED.get(node.kind)
        if build is None:
            raise RedsError(f"layer '{node.name}' ({node.layer_class}) has no nested version yet")
        step = _Step(
            graph,
            node,
            full.get_layer(node.name),
            branches[node.inputs[0]],
            [graph.input_width(node, nw) for nw in node_widths],
            [nw[node.name] for nw in node_widths],
            private_bn_affine,
            [branches[src] for src in node.inputs],
        )
        branches[node.name] = build(step)
    return keras.Model(inp, branches[graph.output.name], name=f"{full.name}_nested")


def _act(layer: keras.layers.Layer, branches: list[tf.Tensor], k: int) -> list[tf.Tensor]:
    """A conv layer's own (fused) activation, applied per branch."""
    act = layer.activation
    if act is None or act is keras.activations.linear:
        return branches
    return [act(b) for b in branches]


def set_bn_weights(nl: NestedBatchNorm, plain: list[np.ndarray]) -> None:
    """Load a plain BN layer's (gamma, beta, mean, variance) into ``nl``; the
    per-submodel statistics start as copies of the shared ones."""
    k = len(nl.widths)
    gamma, beta, mean, var = plain
    for v, value in (
        (nl.gamma, gamma),
        (nl.beta, beta),
        (nl.moving_mean, mean),
        (nl.moving_variance, var),
        (nl.sub_mean, np.tile(mean, (k, 1))),
        (nl.sub_variance, np.tile(var, (k, 1))),
    ):
        v.assign(value)
    if nl.private_affine:
        nl.sub_log_gamma.assign(tf.zeros_like(nl.sub_log_gamma))
        nl.sub_dbeta.assign(tf.zeros_like(nl.sub_dbeta))


def bn_layers(nested: keras.Model) -> list[NestedBatchNorm]:
    return [layer for layer in nested.layers if isinstance(layer, NestedBatchNorm)]


def use_per_submodel_stats(nested: keras.Model, on: bool) -> None:
    """Inference with per-submodel (True) or shared (False) BN statistics."""
    for layer in bn_layers(nested):
        layer.per_submodel = bool(on)
    # The flag is read when tracing: drop Keras' cached inference functions.
    nested.predict_function = None
    nested.test_function = None


def estimate_bn_stats(
    nested: keras.Model,
    x: np.ndarray,
    *,
    batches: int = 100,
    batch_size: int = 128,
    seed: int = 0,
    transform: Callable[[tf.Tensor], tf.Tensor] | None = None,
) -> int:
    """Re-estimate every submodel's own BN statistics on training data.

    Each branch runs with batch statistics (so a layer sees inputs normalised
    the way that submodel will see them); the population mean and variance of
    each BN input are averaged over ``batches`` equal-size mini-batches and
    stored in ``sub_mean``/``sub_variance``. Returns the number of batches used.

    ``transform`` maps each (batch, H, W, C) mini-batch before it is fed: pass
    the training augmentation. The weights were fitted to activations
    normalised with statistics of AUGMENTED inputs; statistics of clean inputs
    measured 3.4 points worse on a CIFAR-10 DS-CNN-S (78.16 -> 74.74 %).
    """
    layers = bn_layers(nested)
    if not layers:
        return 0
    n = min(len(x), batches * batch_size) // batch_size * batch_size
    if n == 0:
        n = len(x)
        batch_size = n
    idx = np.random.default_rng(seed).permutation(len(x))[:n]
    for layer in layers:
        layer.sub_mean.assign(tf.zeros_like(layer.sub_mean))
        layer.sub_variance.assign(tf.zeros_like(layer.sub_variance))
        layer.calibrating = True
    feed = transform if transform is not None else (lambda xb: xb)
    step = tf.function(lambda xb: nested(feed(xb), training=True))
    try:
        nb = 0
        for s in range(0, n, batch_size):
            step(tf.constant(x[idx[s : s + batch_size]]))
            nb += 1
    finally:
        for layer in layers:
            layer.calibrating = False
    for layer in layers:
        mean = layer.sub_mean.numpy() / nb
        sq = layer.sub_variance.numpy() / nb
        var = np.maximum(sq - mean**2, 0.0)
        # Entries past a submodel's width are unused: keep them at the shared values.
        for k, c in enumerate(layer.widths):
            mean[k, c:] = layer.moving_mean.numpy()[c:]
            var[k, c:] = layer.moving_variance.numpy()[c:]
        layer.sub_mean.assign(mean)
        layer.sub_variance.assign(var)
    return nb


def bn_stats_arrays(nested: keras.Model) -> dict[str, np.ndarray]:
    """Per-submodel statistics in the ``bn_stats.npz`` layout:
    ``"{k}/{bn name}/mean"`` and ``"{k}/{bn name}/variance"``, full length.

    A layer with private affine parameters is written as EFFECTIVE statistics
    for the shared ``gamma``/``beta``: with ``r = exp(sub_log_gamma[k])``,
    ``variance' = (variance + eps) / r**2 - eps`` and
    ``mean' = mean - sub_dbeta[k] / a_k`` (``a_k = gamma_k / sqrt(variance + eps)``)
    give the same affine map, so a plain BN layer, the evaluation and the int8
    export fold (which needs ``gamma_k / gamma > 0``) read one format.
    ``variance'`` may dip below 0, never below ``-eps``.
    """
    out: dict[str, np.ndarray] = {}
    for layer in bn_layers(nested):
        means = layer.sub_mean.numpy().astype(np.float64)
        variances = layer.sub_variance.numpy().astype(np.float64)
        if layer.private_affine:
            means, variances = _effective_stats(layer, means, variances)
        for k in range(len(layer.widths)):
            out[f"{k}/{layer.name}/mean"] = means[k].astype(np.float32)
            out[f"{k}/{layer.name}/variance"] = variances[k].astype(np.float32)
    return out


def _affine_deltas(layer: NestedBatchNorm) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gamma (C,), scale ratios r (K, C), shift deltas (K, C)); the full row is (1, 0)."""
    c = layer.channels
    r = np.vstack([np.exp(layer.sub_log_gamma.numpy().astype(np.float64)), np.ones((1, c))])
    db = np.vstack([layer.sub_dbeta.numpy().astype(np.float64), np.zeros((1, c))])
    return layer.gamma.numpy().astype(np.float64), r, db


def _effective_stats(
    layer: NestedBatchNorm, means: np.ndarray, variances: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    gamma, r, db = _affine_deltas(layer)
    eps = layer.epsilon
    a = gamma * r / np.sqrt(variances + eps)
    if np.any((a == 0) & (db != 0)):
        raise RedsError(f"BatchNorm '{layer.name}': a zero scale with a private shift")
    shift = np.divide(db, a, out=np.zeros_like(db), where=a != 0)
    return means - shift, (variances + eps) / r**2 - eps


def _real_stats(
    layer: NestedBatchNorm, means: np.ndarray, variances: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`_effective_stats`."""
    gamma, r, db = _affine_deltas(layer)
    eps = layer.epsilon
    real_var = (variances + eps) * r**2 - eps
    a = gamma * r / np.sqrt(real_var + eps)
    shift = np.divide(db, a, out=np.zeros_like(db), where=a != 0)
    return means + shift, real_var


def load_bn_stats(nested: keras.Model, arrays: dict[str, np.ndarray]) -> None:
    """Inverse of :func:`bn_stats_arrays`."""
    for layer in bn_layers(nested):
        k = len(layer.widths)
        means = np.stack([arrays[f"{i}/{layer.name}/mean"] for i in range(k)]).astype(np.float64)
        variances = np.stack([arrays[f"{i}/{layer.name}/variance"] for i in range(k)]).astype(
            np.float64
        )
        if layer.private_affine:
            means, variances = _real_stats(layer, means, variances)
        layer.sub_mean.assign(means.astype(np.float32))
        layer.sub_variance.assign(variances.astype(np.float32))


def to_plain(nested: keras.Model, full: keras.Model) -> keras.Model:
    """A plain copy of ``full`` carrying the nested model's (fine-tuned) weights
    (BN layers get the SHARED statistics)."""
    plain = keras.models.clone_model(full)
    plain.set_weights(full.get_weights())
    for layer in plain.layers:
        if not layer.get_weights():
            continue
        src = nested.get_layer(layer.name)
        if isinstance(src, NestedBatchNorm):
            layer.set_weights(
                [v.numpy() for v in (src.gamma, src.beta, src.moving_mean, src.moving_variance)]
            )
            continue
        w = src.get_weights()
        n = len(layer.get_weights())
        layer.set_weights(w[:n])
    return plain


def predict_nested(nested: keras.Model, x: np.ndarray, batch_size: int = 1024) -> list[np.ndarray]:
    """Logits of all K submodels: list of K arrays (N, num_classes)."""
    outs = predict_rows(nested, x, batch_size)  # streamed from disk too
    if not isinstance(outs, (list, tuple)):  # Keras unwraps a one-element output list
        outs = [outs]
    return [np.asarray(o) for o in outs]


def nested_accuracy(nested: keras.Model, x: np.ndarray, y: np.ndarray) -> list[float]:
    """Test accuracy of every submodel, smallest first."""
    return [float(np.mean(np.argmax(o, axis=1) == y)) for o in predict_nested(nested, x)]
