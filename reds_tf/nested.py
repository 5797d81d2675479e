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

from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras

from reds_tf.errors import RedsError
from reds_tf.models import dense_layers


class NestedDense(keras.layers.Layer):
    """Dense layer evaluated at K prefix widths.

    Input: list of K tensors, tensor k of shape (batch, in_widths[k]).
    Output: list of K tensors, tensor k of shape (batch, out_widths[k]).
    """

    def __init__(
        self,
        units: int,
        in_widths: Sequence[int],
        out_widths: Sequence[int],
        activation: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if len(in_widths) != len(out_widths):
            raise ValueError("in_widths and out_widths need one entry per submodel")
        self.units = int(units)
        self.in_widths = [int(w) for w in in_widths]
        self.out_widths = [int(w) for w in out_widths]
        if max(self.out_widths) > self.units or min(self.out_widths) < 1:
            raise ValueError(f"{self.name}: output widths {self.out_widths} out of 1..{units}")
        self.activation = keras.activations.get(activation)

    def build(self, input_shape: list) -> None:
        fan_in = max(self.in_widths)
        self.kernel = self.add_weight(
            name="kernel", shape=(fan_in, self.units), initializer="glorot_uniform"
        )
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs: list[tf.Tensor]) -> list[tf.Tensor]:
        outs = []
        for x, i_k, o_k in zip(inputs, self.in_widths, self.out_widths, strict=True):
            y = tf.matmul(x[:, :i_k], self.kernel[:i_k, :o_k]) + self.bias[:o_k]
            outs.append(self.activation(y))
        return outs

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg.update(
            units=self.units,
            in_widths=self.in_widths,
            out_widths=self.out_widths,
            activation=keras.activations.serialize(self.activation),
        )
        return cfg


def build_nested(full: keras.Model, widths: Sequence[dict[str, int]]) -> keras.Model:
    """Nested model over ``full`` (a plain dense chain, see models.canonical_dnn).

    Args:
        full: plain full-width model (its weights are copied, not shared).
        widths: one ``{layer name: output width}`` per submodel, smallest first;
            layers missing from a dict stay at full width.
    Returns:
        functional model: input (batch, *input_shape) -> list of K logits
        tensors, each (batch, num_classes).
    """
    k = len(widths)
    if k == 0:
        raise ValueError("need at least one submodel")
    x = inp = keras.Input(shape=full.input_shape[1:], name="input")
    branches: list[tf.Tensor] | None = None
    in_w: list[int] | None = None
    for layer in full.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.layers.Flatten):
            if branches is not None:
                raise RedsError("Flatten after a Dense layer is not supported")
            x = keras.layers.Flatten(name=layer.name)(x)
        elif isinstance(layer, keras.layers.Dense):
            if branches is None:
                branches = [x] * k
                in_w = [int(x.shape[-1])] * k
            out_w = [int(w.get(layer.name, layer.units)) for w in widths]
            nd = NestedDense(
                layer.units,
                in_w,
                out_w,
                activation=keras.activations.serialize(layer.activation),
                name=layer.name,
            )
            branches = nd(branches)
            nd.set_weights(layer.get_weights())
            in_w = out_w
        elif isinstance(layer, keras.layers.Dropout):
            drop = keras.layers.Dropout(layer.rate, name=layer.name)
            branches = [drop(b) for b in branches] if branches is not None else branches
            if branches is None:
                x = drop(x)
        else:
            raise RedsError(
                f"layer '{layer.name}' ({type(layer).__name__}) has no nested version yet"
            )
    if branches is None:
        raise RedsError("the model has no Dense layer")
    return keras.Model(inp, branches, name=f"{full.name}_nested")


def to_plain(nested: keras.Model, full: keras.Model) -> keras.Model:
    """A plain copy of ``full`` carrying the nested model's (fine-tuned) weights."""
    plain = keras.models.clone_model(full)
    plain.set_weights(full.get_weights())
    for layer in dense_layers(plain):
        layer.set_weights(nested.get_layer(layer.name).get_weights())
    return plain


def predict_nested(nested: keras.Model, x: np.ndarray, batch_size: int = 1024) -> list[np.ndarray]:
    """Logits of all K submodels: list of K arrays (N, num_classes)."""
    outs = nested.predict(x, batch_size=batch_size, verbose=0)
    if not isinstance(outs, (list, tuple)):  # Keras unwraps a one-element output list
        outs = [outs]
    return [np.asarray(o) for o in outs]


def nested_accuracy(nested: keras.Model, x: np.ndarray, y: np.ndarray) -> list[float]:
    """Test accuracy of every submodel, smallest first."""
    return [float(np.mean(np.argmax(o, axis=1) == y)) for o in predict_nested(nested, x)]
