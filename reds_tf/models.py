"""Architecture builders (tf_keras functional models) and model checks.

Models output LOGITS (no softmax): the int8 export runs logits only and the
class is the argmax. Layers get stable names (``fc1``, ``fc2``, ..., ``logits``)
because ``submodels.json`` refers to them by name.

New architectures register a builder in :data:`MODEL_TYPES` under their
``model.type``.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tf_keras as keras

from reds_tf import ir
from reds_tf.config import ModelConfig
from reds_tf.errors import RedsError

Builder = Callable[["ModelConfig", Sequence[int], int], keras.Model]
MODEL_TYPES: dict[str, Builder] = {}


def register_model(name: str) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        MODEL_TYPES[name] = fn
        return fn

    return deco


def dense_name(i: int) -> str:
    """Name of the i-th hidden Dense layer (0-based): fc1, fc2, ..."""
    return f"fc{i + 1}"


LOGITS = "logits"


def dnn(
    input_shape: Sequence[int],
    hidden: Sequence[int],
    num_classes: int,
    *,
    dropout: float = 0.0,
    activations: Sequence[str] | None = None,
    name: str = "dnn",
) -> keras.Model:
    """Input(input_shape) -> Flatten -> [Dense(h, relu) (-> Dropout)]* -> Dense(num_classes).

    ``activations``: one per hidden layer ("relu" or "relu6"; default all relu).
    Output: logits, shape (batch, num_classes).
    """
    acts = list(activations) if activations is not None else ["relu"] * len(hidden)
    if len(acts) != len(hidden):
        raise ValueError(f"{len(acts)} activations for {len(hidden)} hidden layers")
    x = inp = keras.Input(shape=tuple(input_shape), name="input")
    x = keras.layers.Flatten(name="flatten")(x)
    for i, (h, act) in enumerate(zip(hidden, acts, strict=True)):
        x = keras.layers.Dense(int(h), activation=act, name=dense_name(i))(x)
        if dropout > 0:
            x = keras.layers.Dropout(dropout, name=f"dropout{i + 1}")(x)
    out = keras.layers.Dense(int(num_classes), name=LOGITS)(x)
    return keras.Model(inp, out, name=name)


@register_model("dnn")
def _build_dnn(cfg: ModelConfig, input_shape: Sequence[int], num_classes: int) -> keras.Model:
    return dnn(input_shape, cfg.hidden, num_classes, dropout=cfg.dropout)


def conv_name(i: int) -> str:
    """Name of the i-th standard convolution (0-based): conv1, conv2, ..."""
    return f"conv{i + 1}"


def _conv_bn_relu(
    x, filters: int, kernel: Sequence[int], strides: Sequence[int], padding: str, name: str
):
    """Conv2D (no bias: BN follows) -> BN -> ReLU, named ``name``, ``name_bn``, ``name_relu``."""
    x = keras.layers.Conv2D(
        int(filters),
        tuple(kernel),
        strides=tuple(strides),
        padding=padding,
        use_bias=False,
        name=name,
    )(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _ds_block(x, i: int, filters: int, strides: Sequence[int]):
    """Depthwise 3x3 -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU (block i, 1-based names)."""
    dw = f"dw{i}"
    x = keras.layers.DepthwiseConv2D(
        (3, 3), strides=tuple(strides), padding="same", use_bias=False, name=dw
    )(x)
    x = keras.layers.BatchNormalization(name=f"{dw}_bn")(x)
    x = keras.layers.ReLU(name=f"{dw}_relu")(x)
    return _conv_bn_relu(x, filters, (1, 1), (1, 1), "same", f"pw{i}")


def _gap_logits(x, num_classes: int):
    """Global average pool as AveragePooling2D(full size) + Flatten, then the classifier.

    Not GlobalAveragePooling2D: the int8 graph then has AVERAGE_POOL_2D + RESHAPE
    (exact TFLM rounding) instead of MEAN.
    """
    h, w = int(x.shape[1]), int(x.shape[2])
    x = keras.layers.AveragePooling2D(pool_size=(h, w), name="gap")(x)
    x = keras.layers.Flatten(name="gap_flatten")(x)
    return keras.layers.Dense(int(num_classes), name=LOGITS)(x)


def cnn(
    input_shape: Sequence[int],
    convs: Sequence[dict],
    hidden: Sequence[int],
    num_classes: int,
    *,
    name: str = "cnn",
) -> keras.Model:
    """Hello Edge CNN: [Conv (valid) -> BN -> ReLU]* -> Flatten -> [Dense(relu)]* -> logits.

    ``convs``: dicts with ``filters``, ``kernel`` (kh, kw), ``strides`` (sh, sw),
    optional ``padding`` (default "valid"). Output: logits (batch, num_classes).
    """
    x = inp = keras.Input(shape=tuple(input_shape), name="input")
    for i, c in enumerate(convs):
        x = _conv_bn_relu(
            x, c["filters"], c["kernel"], c["strides"], c.get("padding", "valid"), conv_name(i)
        )
    x = keras.layers.Flatten(name="flatten")(x)
    for i, h in enumerate(hidden):
        x = keras.layers.Dense(int(h), activation="relu", name=dense_name(i))(x)
    out = keras.layers.Dense(int(num_classes), name=LOGITS)(x)
    return keras.Model(inp, out, name=name)


def dscnn(
    input_shape: Sequence[int],
    first: dict,
    blocks: Sequence[dict],
    num_classes: int,
    *,
    name: str = "dscnn",
) -> keras.Model:
    """Hello Edge DS-CNN: Conv (same) -> BN -> ReLU -> N x DS block -> GAP -> logits.

    ``first``: dict with ``filters``, ``kernel``, ``strides``; ``blocks``: dicts
    with ``filters`` (pointwise width) and ``strides`` (of the depthwise conv).
    """
    x = inp = keras.Input(shape=tuple(input_shape), name="input")
    x = _conv_bn_relu(x, first["filters"], first["kernel"], first["strides"], "same", "conv1")
    for i, b in enumerate(blocks, 1):
        x = _ds_block(x, i, b["filters"], b["strides"])
    return keras.Model(inp, _gap_logits(x, num_classes), name=name)


# MobileNetV1: (pointwise filters at alpha 1, depthwise stride) per DS block.
_MOBILENET_BLOCKS = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)  # fmt: skip


def mobilenet_v1(
    input_shape: Sequence[int], num_classes: int, *, alpha: float = 0.25, name: str = "mobilenet_v1"
) -> keras.Model:
    """MobileNetV1: Conv 3x3 s2 (32*alpha) -> 13 DS blocks -> GAP -> logits (own builder)."""
    x = inp = keras.Input(shape=tuple(input_shape), name="input")
    x = _conv_bn_relu(x, max(1, int(32 * alpha)), (3, 3), (2, 2), "same", "conv1")
    for i, (f, s) in enumerate(_MOBILENET_BLOCKS, 1):
        x = _ds_block(x, i, max(1, int(f * alpha)), (s, s))
    return keras.Model(inp, _gap_logits(x, num_classes), name=name)


def _residual_block(x, i: int, filters: int, strides: Sequence[int]):
    """MLPerf Tiny ResNet block i (1-based names ``s{i}_...``): conv 3x3 (strides)
    -> BN -> ReLU -> conv 3x3 -> BN, plus the shortcut: the identity when the
    shape is kept, else a 1x1 conv with the same strides (projection, with bias,
    no BN); then Add and ReLU. The add ties the shortcut's channels to the
    block's (one width, :mod:`reds_tf.ir`)."""
    s = f"s{i}"
    y = _conv_bn_relu(x, filters, (3, 3), strides, "same", f"{s}_conv1")
    y = keras.layers.Conv2D(
        int(filters), (3, 3), padding="same", use_bias=False, name=f"{s}_conv2"
    )(y)
    y = keras.layers.BatchNormalization(name=f"{s}_conv2_bn")(y)
    if tuple(strides) != (1, 1) or int(x.shape[-1]) != int(filters):
        x = keras.layers.Conv2D(
            int(filters), (1, 1), strides=tuple(strides), padding="same", name=f"{s}_proj"
        )(x)
    x = keras.layers.Add(name=f"{s}_add")([x, y])
    return keras.layers.ReLU(name=f"{s}_relu")(x)


def resnet(
    input_shape: Sequence[int],
    first: dict,
    blocks: Sequence[dict],
    num_classes: int,
    *,
    name: str = "resnet",
) -> keras.Model:
    """Residual network (MLPerf Tiny ResNet-8 with ``first`` = 16 filters 3x3 and
    blocks of 16/32/64 filters, strides 1/2/2): Conv (same) -> BN -> ReLU ->
    N residual blocks (:func:`_residual_block`) -> GAP -> logits."""
    x = inp = keras.Input(shape=tuple(input_shape), name="input")
    x = _conv_bn_relu(x, first["filters"], first["kernel"], first["strides"], "same", "conv1")
    for i, b in enumerate(blocks, 1):
        x = _residual_block(x, i, b["filters"], b["strides"])
    return keras.Model(inp, _gap_logits(x, num_classes), name=name)


@register_model("cnn")
def _build_cnn(cfg: ModelConfig, input_shape: Sequence[int], num_classes: int) -> keras.Model:
    return cnn(input_shape, [c.as_dict() for c in cfg.conv], cfg.hidden, num_classes)


@register_model("dscnn")
def _build_dscnn(cfg: ModelConfig, input_shape: Sequence[int], num_classes: int) -> keras.Model:
    return dscnn(input_shape, cfg.first.as_dict(), [b.as_dict() for b in cfg.blocks], num_classes)


@register_model("resnet")
def _build_resnet(cfg: ModelConfig, input_shape: Sequence[int], num_classes: int) -> keras.Model:
    return resnet(input_shape, cfg.first.as_dict(), [b.as_dict() for b in cfg.blocks], num_classes)


@register_model("mobilenet_v1")
def _build_mobilenet(cfg: ModelConfig, input_shape: Sequence[int], num_classes: int) -> keras.Model:
    return mobilenet_v1(input_shape, num_classes, alpha=cfg.alpha)


def build_model(cfg: ModelConfig, input_shape: Sequence[int], num_classes: int) -> keras.Model:
    """Build the full-width model for ``cfg.type`` (weights freshly initialised)."""
    try:
        builder = MODEL_TYPES[cfg.type]
    except KeyError:
        raise RedsError(
            f"unknown model.type '{cfg.type}'; known: {', '.join(sorted(MODEL_TYPES))}"
        ) from None
    return builder(cfg, input_shape, num_classes)


def compile_classifier(
    model: keras.Model,
    learning_rate: float | object,
    optimizer: keras.optimizers.Optimizer | None = None,
) -> None:
    """``optimizer`` (default Adam at ``learning_rate``) on sparse categorical
    cross-entropy from logits, with accuracy."""
    model.compile(
        optimizer=optimizer or keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="acc")],
    )


# Layers a dense chain may contain besides Dense; they do not change the function
# at inference time or only reshape.
_PASSIVE = (keras.layers.InputLayer, keras.layers.Flatten, keras.layers.Dropout)


def dense_layers(model: keras.Model) -> list[keras.layers.Dense]:
    """The Dense layers of a supported dense chain, in order; raises otherwise."""
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]


def _shape_problems(
    model: keras.Model, input_shape: Sequence[int], num_classes: int, source: str
) -> list[str]:
    """Input/output shape mismatches with the data set (raises if unreadable)."""
    if not isinstance(model, keras.Model):
        raise RedsError(f"{source}: not a tf_keras model")
    problems = []
    try:
        in_shape = tuple(model.input_shape[1:])
        out_shape = tuple(model.output_shape[1:])
    except (AttributeError, ValueError) as e:
        raise RedsError(f"{source}: cannot read input/output shape ({e})") from e
    if in_shape != tuple(input_shape):
        problems.append(f"input shape {in_shape} differs from the data set's {tuple(input_shape)}")
    if out_shape != (num_classes,):
        problems.append(f"output shape {out_shape} differs from ({num_classes},)")
    return problems


# Refusal reasons. A reason is a plain sentence, or (template, layer name): a
# template says {layer} ("layer 'a'" / "layers 'a' and 'b'"), {names} ("'a'" /
# "'a' and 'b'"), {is} and {has} (agreeing in number). Reasons that share a
# template are said once, naming every layer they apply to (a MobileNet's 13
# identical layers make one sentence, not 13).
Problem = str | tuple[str, str]
_MAX_NAMED = 6


def _quoted(names: Sequence[str]) -> str:
    q = [f"'{n}'" for n in names[:_MAX_NAMED]]
    if len(names) > _MAX_NAMED:
        return ", ".join(q) + f" and {len(names) - _MAX_NAMED} more"
    return q[0] if len(q) == 1 else ", ".join(q[:-1]) + " and " + q[-1]


def say_once(problems: Sequence[Problem]) -> list[str]:
    """Each distinct problem once, in first-seen order, with all the layers it names."""
    groups: dict[str, list[str]] = {}
    for p in problems:
        template, name = (p, None) if isinstance(p, str) else p
        names = groups.setdefault(template, [])
        if name is not None and name not in names:
            names.append(name)
    out = []
    for template, names in groups.items():
        one = len(names) <= 1
        words = {
            "{layer}": ("layer " if one else "layers ") + _quoted(names) if names else "",
            "{names}": _quoted(names) if names else "",
            "{is}": "is" if one else "are",
            "{has}": "has" if one else "have",
        }
        for key, word in words.items():
            template = template.replace(key, word)
        out.append(template)
    return out


def _refusal(source: str, problems: Sequence[Problem], supported: str) -> RedsError:
    return RedsError(
        f"{source} is not a supported model: " + "; ".join(say_once(problems)) + supported
    )


def _chain_problems(model: keras.Model) -> list[Problem]:
    """A chain: each layer has exactly one inbound layer (the previous one)."""
    problems: list[Problem] = []
    prev = None
    for layer in model.layers:
        inbound = list(layer._inbound_nodes)  # no public graph API in tf_keras
        if len(inbound) > 1:
            problems.append(("{layer} {is} called more than once", layer.name))
        srcs = []
        for node in inbound:
            il = node.inbound_layers
            srcs += il if isinstance(il, list) else [il]
        if prev is not None and [s.name for s in srcs] != [prev.name]:
            problems.append(("{layer} {is} not fed by the previous layer only", layer.name))
        prev = layer
    return problems


def _act_name(fn) -> str:
    act = keras.activations.serialize(fn)
    return act if isinstance(act, str) else str(act)


_L = keras.layers
# Input maps y = scale * x + offset that fold into the first Conv/Dense layer.
_AFFINE = (_L.Rescaling, _L.Normalization)
_WEIGHTED = (_L.Dense, _L.Conv1D, _L.Conv2D, _L.DepthwiseConv2D)
# 1-D layers and the 2-D layer each becomes on a (1, T, C) map.
_AS_2D = {
    _L.Conv1D: _L.Conv2D,
    _L.MaxPooling1D: _L.MaxPooling2D,
    _L.AveragePooling1D: _L.AveragePooling2D,
    _L.GlobalAveragePooling1D: _L.GlobalAveragePooling2D,
}
_GLOBAL_AVG = (_L.GlobalAveragePooling1D, _L.GlobalAveragePooling2D)
_POOLS = (_L.AveragePooling1D, _L.AveragePooling2D, _L.MaxPooling1D, _L.MaxPooling2D)
_HIDDEN_ACTS = ("linear", "relu", "relu6")


@dataclass
class _Spec:
    """One layer of the canonical model being built: class, config and weights;
    ``layer`` is the user's layer it stands for (shapes, messages), None for a
    layer the canonical form adds."""

    cls: type
    cfg: dict
    weights: list[np.ndarray]
    layer: keras.layers.Layer | None = None
    in_dims: tuple[int, ...] | None = None  # a conv's input size before a folded ZeroPadding2D

    @property
    def name(self) -> str:
        return str(self.cfg["name"])

    @property
    def act(self) -> str:
        """The activation of a Dense/conv spec ('linear', 'relu', 'relu6', ...)."""
        act = self.cfg.get("activation", "linear")
        return act if isinstance(act, str) else str(act)


def _specs(layers: Sequence[keras.layers.Layer]) -> list[_Spec]:
    return [_Spec(type(ly), ly.get_config(), ly.get_weights(), ly) for ly in layers]


def _relu_kind(layer: keras.layers.ReLU) -> str | None:
    """'relu' or 'relu6' for ReLU() / ReLU(6.), None for any other setting."""
    if float(layer.negative_slope) != 0 or float(layer.threshold) != 0:
        return None
    if layer.max_value is None:
        return "relu"
    return "relu6" if float(layer.max_value) == 6.0 else None


def _layer_act(layer: keras.layers.Layer) -> str | None:
    """What a ReLU / Activation layer computes ('relu', 'relu6', 'linear', ...)."""
    if type(layer) is _L.ReLU:
        return _relu_kind(layer)
    return _act_name(layer.activation)


def _bn_on_channels(layer: keras.layers.Layer) -> bool:
    rank = len(_in_shape(layer) or ())
    return list(layer.axis) in ([-1], [rank - 1])


def _affine(layer: keras.layers.Layer, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, offset)``, float64 arrays of ``shape`` (one per input element),
    with ``layer(x) == scale * x + offset`` at inference: Rescaling,
    Normalization or BatchNormalization."""

    def f64(v) -> np.ndarray:
        return np.asarray(v, np.float64)

    if type(layer) is _L.Rescaling:
        scale, offset = f64(layer.scale), f64(layer.offset)
    elif type(layer) is _L.Normalization:
        mean = f64(layer.mean)  # broadcast shape (1, ..., C)
        sd = np.maximum(np.sqrt(f64(layer.variance)), keras.backend.epsilon())
        scale, offset = (sd, mean) if layer.invert else (1.0 / sd, -mean / sd)
    else:
        gamma = f64(layer.gamma) if layer.scale else 1.0
        beta = f64(layer.beta) if layer.center else 0.0
        scale = gamma / np.sqrt(f64(layer.moving_variance) + layer.epsilon)
        offset = beta - f64(layer.moving_mean) * scale
    full = (1, *shape)
    return np.broadcast_to(scale, full)[0].copy(), np.broadcast_to(offset, full)[0].copy()


def _with_bias(spec: _Spec) -> list[np.ndarray]:
    """``spec``'s weights with a zero bias added if it has none (same function)."""
    if spec.cfg.get("use_bias", True):
        return list(spec.weights)
    kernel = spec.weights[0]
    n = kernel.shape[-2] if spec.cls is _L.DepthwiseConv2D else kernel.shape[-1]
    spec.cfg["use_bias"] = True
    return [kernel, np.zeros(n, kernel.dtype)]


def _pads(spec: _Spec) -> bool:
    """Whether a convolution with padding 'same' zero-pads its input (a 1x1
    stride-1 one does not)."""
    if spec.cfg.get("padding") != "same":
        return False
    dims = spec.in_dims or (_in_shape(spec.layer) or ())[1:-1]
    kernel, strides = spec.cfg["kernel_size"], spec.cfg["strides"]
    return any(
        (-(-n // s) - 1) * s + k - n > 0 for n, k, s in zip(dims, kernel, strides, strict=True)
    )


def _fold_into(spec: _Spec, scale: np.ndarray, offset: np.ndarray) -> str | None:
    """Fold ``y = scale * x + offset`` on ``spec``'s input into its weights and
    bias (a Dense: per input element; a convolution: per channel). Returns why
    it cannot (a template for the affine layers), else None."""
    weights = _with_bias(spec)
    kernel, bias = (np.asarray(v, np.float64) for v in weights)
    if spec.cls is _L.Dense:
        a, o = scale.reshape(-1), offset.reshape(-1)
        new = [kernel * a[:, None], bias + o @ kernel]
    else:
        c = scale.shape[-1]
        a, o = scale.reshape(-1, c), offset.reshape(-1, c)
        if np.any(a != a[0]) or np.any(o != o[0]):
            return (
                "{layer} {has} a scale or offset per position; only one per channel (axis=-1) "
                f"folds into the convolution '{spec.name}'"
            )
        a, o = a[0], o[0]
        if np.any(o != 0) and _pads(spec):
            return (
                "{layer} {has} a nonzero offset, which does not fold exactly into "
                f"'{spec.name}' (padding='same' pads with zeros at the borders): use "
                "padding='valid' there, "
                "an offset of 0 (e.g. Rescaling(1/255)), or normalise the data instead"
            )
        # the channel axis is the kernel's second last: (k, C, F), (kh, kw, C, F), (kh, kw, C, 1)
        shifted = kernel * o[:, None]
        if spec.cls is _L.DepthwiseConv2D:
            new = [kernel * a[:, None], bias + shifted.sum(axis=(0, 1, 3))]
        else:
            new = [kernel * a[:, None], bias + shifted.sum(axis=tuple(range(kernel.ndim - 1)))]
    spec.weights = [v.astype(np.float32) for v in new]
    return None


def _fold_input_affine(specs: list[_Spec], input_shape: Sequence[int]) -> list[Problem]:
    """Fold the Rescaling / Normalization / BatchNormalization layers before the
    first Conv/Dense layer (Flatten and Dropout may sit between) into that
    layer's weights and bias, and remove them from ``specs`` (exact: the
    layer computes on their output)."""
    shape = tuple(int(d) for d in input_shape)
    scale = offset = None
    folded: list[_Spec] = []
    i = 0
    while i < len(specs) and specs[i].cls in (*_AFFINE, _L.BatchNormalization, _L.Flatten,
                                              _L.Dropout):  # fmt: skip
        s = specs[i]
        if s.cls is _L.Flatten:
            shape = (math.prod(shape),)
            if scale is not None:
                scale, offset = scale.reshape(-1), offset.reshape(-1)
        elif s.cls is not _L.Dropout:
            if s.cls is _L.BatchNormalization and not _bn_on_channels(s.layer):
                break  # its own check names the axis
            a, o = _affine(s.layer, shape)
            scale, offset = (a, o) if scale is None else (a * scale, a * offset + o)
            folded.append(s)
        i += 1
    if not folded:
        return []
    target = specs[i] if i < len(specs) else None
    if target is None or target.cls not in _WEIGHTED:
        why = (
            "{layer} must be followed by a Conv/Dense layer to fold into "
            "(Flatten/Dropout may sit between)"
        )
    else:
        why = _fold_into(target, scale, offset)
    for s in folded:
        specs.remove(s)  # refused or folded: no further message about them
    return [] if why is None else [(why, s.name) for s in folded]


def _fold_vector_bn(specs: list[_Spec]) -> list[Problem]:
    """Fold every BatchNormalization on a vector into the Dense before it (one
    without activation) or else the Dense after it (Dropout may sit between),
    and remove it from ``specs``."""
    problems: list[Problem] = []
    i = 0
    while i < len(specs):
        s = specs[i]
        shape = _in_shape(s.layer) if s.layer is not None else None
        if s.cls is not _L.BatchNormalization or shape is None or len(shape) != 2:
            i += 1
            continue
        scale, offset = _affine(s.layer, shape[1:])
        j, k = i - 1, i + 1
        while j >= 0 and specs[j].cls is _L.Dropout:
            j -= 1
        while k < len(specs) and specs[k].cls is _L.Dropout:
            k += 1
        if j >= 0 and specs[j].cls is _L.Dense and specs[j].act == "linear":
            kernel, bias = _with_bias(specs[j])
            specs[j].weights = [
                (kernel * scale[None, :]).astype(np.float32),
                (bias * scale + offset).astype(np.float32),
            ]
        elif k < len(specs) and specs[k].cls is _L.Dense:
            _fold_into(specs[k], scale, offset)
        else:
            problems.append(
                (
                    "{layer} (BatchNormalization on a vector) must directly follow a Dense "
                    "without activation or precede a Dense (it folds into it)",
                    s.name,
                )
            )
            i += 1
            continue
        del specs[i]
    return problems


def _merge_activations(specs: list[_Spec]) -> list[Problem]:
    """Dense chains: fold every ReLU / ReLU(6.) / Activation layer into the Dense
    before it (one without activation; Dropout may sit between)."""
    problems: list[Problem] = []
    i = 0
    while i < len(specs):
        s = specs[i]
        if s.cls not in (_L.ReLU, _L.Activation):
            i += 1
            continue
        act = _layer_act(s.layer)
        j = i - 1
        while j >= 0 and specs[j].cls is _L.Dropout:
            j -= 1
        prev = specs[j] if j >= 0 else None
        if act == "linear":
            pass
        elif act is None:
            problems.append(
                ("ReLU {names} {has} max_value/negative_slope/threshold set "
                 "(supported: ReLU() and ReLU(6.))", s.name)
            )  # fmt: skip
        elif act not in ("relu", "relu6"):
            problems.append(
                (f"{{layer}} ({s.cls.__name__}) computes '{act}' (supported: relu, relu6)", s.name)
            )
        elif prev is None or prev.cls is not _L.Dense or prev.act != "linear":
            problems.append(
                (f"{{layer}} ({s.cls.__name__}) must follow a Dense without activation", s.name)
            )
        else:
            prev.cfg["activation"] = act
        del specs[i]
    return problems


def _unique(name: str, names: set[str]) -> str:
    while name in names:
        name += "_"
    names.add(name)
    return name


def _as_2d(specs: list[_Spec], input_shape: Sequence[int], names: set[str]) -> list[_Spec]:
    """A model on (T, C) maps as the same computation on (1, T, C) maps, the way
    the TFLite converter runs Conv1D (a CONV_2D with a one-row kernel), without
    its reshapes around every layer: one Reshape after the input, Conv1D ->
    Conv2D with a (1, k) kernel, 1-D pooling -> 2-D pooling with (1, p)
    windows; BatchNormalization keeps the channel axis (the last)."""
    reshape = {"name": _unique("to_2d", names), "target_shape": (1, *input_shape)}
    out = [_Spec(_L.Reshape, reshape, [])]
    for s in specs:
        cfg, weights = dict(s.cfg), list(s.weights)
        if s.cls is _L.Conv1D:
            cfg.update(
                kernel_size=(1, *cfg["kernel_size"]),
                strides=(1, *cfg["strides"]),
                dilation_rate=(1, 1),
            )
            weights[0] = weights[0][None]  # (k, C, F) -> (1, k, C, F)
        elif s.cls in (_L.MaxPooling1D, _L.AveragePooling1D):
            cfg.update(pool_size=(1, *cfg["pool_size"]), strides=(1, *cfg["strides"]))
        elif s.cls is _L.BatchNormalization:
            cfg["axis"] = -1
        elif s.cls is _L.Dropout and len(cfg.get("noise_shape") or ()) == 3:
            cfg["noise_shape"] = (cfg["noise_shape"][0], 1, *cfg["noise_shape"][1:])
        out.append(_Spec(_AS_2D.get(s.cls, s.cls), cfg, weights, s.layer))
    return out


def _same_pads(dims: Sequence[int], kernel: Sequence[int], strides: Sequence[int]) -> tuple:
    """TFLite's padding='same' per spatial axis: ((before, after), ...)."""
    out = []
    for n, k, st in zip(dims, kernel, strides, strict=True):
        total = max((-(-n // st) - 1) * st + k - n, 0)
        out.append((total // 2, total - total // 2))
    return tuple(out)


def _fold_zero_padding(specs: list[_Spec]) -> list[Problem]:
    """A ZeroPadding2D right before a 'valid' Conv2D / DepthwiseConv2D that pads
    exactly as padding='same' would (keras.applications' MobileNets before a
    stride-2 convolution) becomes that convolution with padding='same'."""
    problems: list[Problem] = []
    i = 0
    while i < len(specs) - 1:
        pad, conv = specs[i], specs[i + 1]
        shape = _in_shape(pad.layer) if pad.cls is _L.ZeroPadding2D else None
        if (
            shape is None
            or conv.cls not in (_L.Conv2D, _L.DepthwiseConv2D)
            or conv.cfg.get("padding") != "valid"
            or pad.cfg.get("data_format", "channels_last") != "channels_last"
        ):
            i += 1
            continue
        dims = tuple(int(d) for d in shape[1:3])
        want = _same_pads(dims, conv.cfg["kernel_size"], conv.cfg["strides"])
        pads = tuple(tuple(int(v) for v in p) for p in pad.cfg["padding"])
        if pads == want:
            conv.cfg["padding"] = "same"
            conv.in_dims = dims
        else:
            problems.append(
                (f"{{layer}} (ZeroPadding2D) pads {pads} on a {dims} map, padding='same' of the "
                 f"next convolution would pad {want}: only that folds (with a MobileNet, use an "
                 "input size whose maps stay even before every stride-2 layer)", pad.name)
            )  # fmt: skip
        del specs[i]
    return problems


def _conv_head_as_dense(specs: list[_Spec], names: set[str]) -> None:
    """A 1x1 Conv2D on a 1x1 map followed by a Flatten or a Reshape to a vector
    (the classifier of keras.applications' MobileNet) becomes Flatten + Dense."""
    for i, (s, nxt) in enumerate(zip(specs, specs[1:], strict=False)):
        shape = _in_shape(s.layer) if s.cls is _L.Conv2D else None
        if shape is None or tuple(shape[1:3]) != (1, 1):
            continue
        units = int(s.cfg["filters"])
        to_vector = nxt.cls is _L.Flatten or (
            nxt.cls is _L.Reshape and tuple(nxt.cfg["target_shape"]) == (units,)
        )
        if tuple(s.cfg["kernel_size"]) != (1, 1) or not to_vector:
            continue
        dense = {k: s.cfg[k] for k in ("name", "activation", "use_bias")}
        dense["units"] = units
        weights = [s.weights[0].reshape(-1, units), *s.weights[1:]]  # (1, 1, C, F) -> (C, F)
        flat = {"name": _unique(f"{s.name}_flatten", names)}
        specs[i : i + 2] = [_Spec(_L.Flatten, flat, []), _Spec(_L.Dense, dense, weights, s.layer)]
        return


def canonical_dnn(
    model: keras.Model, input_shape: Sequence[int], num_classes: int, *, source: str = "model"
) -> keras.Model:
    """Check that ``model`` is a dense chain this project supports and return an
    equivalent model in canonical form (layer names fc1.., logits; logits out).

    Supported: Input -> [Flatten] -> Dense(relu/relu6)* -> Dense(linear or
    softmax), with Dropout anywhere. Folded exactly (the same function):
    Rescaling / Normalization / BatchNormalization before the first Dense
    (into its weights and bias), BatchNormalization after a Dense (into it, or
    into the next Dense after an activation), ReLU / ReLU(6.) / Activation
    layers (into the Dense before them), a Dense without bias. A final softmax
    (activation or layer) is dropped (argmax unchanged).
    """
    problems: list[Problem] = list(_shape_problems(model, input_shape, num_classes, source))
    layers = [ly for ly in model.layers if type(ly) is not keras.layers.InputLayer]
    body = layers[:-1] if layers and _is_softmax(layers[-1]) else layers
    specs = _specs(body)
    problems += _fold_input_affine(specs, model.input_shape[1:])
    problems += _fold_vector_bn(specs)
    problems += _merge_activations(specs)
    dense: list[_Spec] = []
    for s in specs:
        if s.cls is _L.Dense:
            shape = _in_shape(s.layer)
            if shape is not None and len(shape) != 2:
                problems.append(
                    (f"Dense {{names}} gets an input of shape {shape[1:]}; put a Flatten before it",
                     s.name)
                )  # fmt: skip
            dense.append(s)
        elif s.cls is _L.Dropout or (s.cls is _L.Flatten and not dense):
            continue
        else:
            problems.append((f"{{layer}} ({s.cls.__name__}) {{is}} not supported", s.name))
    problems += _chain_problems(model)
    if len(dense) < 2:
        problems.append("needs at least one hidden Dense layer and an output Dense layer")
    for i, s in enumerate(dense):
        allowed = ("linear", "softmax") if i == len(dense) - 1 else ("relu", "relu6")
        if s.act not in allowed:
            problems.append(
                (f"Dense {{names}} {{has}} activation '{s.act}' (supported: {'/'.join(allowed)})",
                 s.name)
            )  # fmt: skip
    if problems:
        raise _refusal(
            source,
            problems,
            ". Supported: Input -> Flatten -> Dense(relu/relu6) ... -> Dense(classes, "
            "linear/softmax).",
        )
    hidden = [int(s.cfg["units"]) for s in dense[:-1]]
    out = dnn(input_shape, hidden, num_classes, activations=[s.act for s in dense[:-1]])
    for src, dst in zip(dense, dense_layers(out), strict=True):
        dst.set_weights(_with_bias(src))
    return out


_CONV_SUPPORTED = (
    "Input -> Conv2D / Conv1D (groups 1, dilation 1) / DepthwiseConv2D (depth_multiplier 1) / "
    "BatchNormalization (channels-last, center and scale) / ReLU / ReLU(6.) / "
    "Activation('relu'/'relu6') / AveragePooling1D/2D / MaxPooling1D/2D ... -> Flatten or "
    "GlobalAveragePooling1D/2D -> Dense ... -> Dense(classes, linear/softmax), one plain chain, "
    "Dropout anywhere; Rescaling / Normalization right after the input and BatchNormalization "
    "around a Dense fold into that layer"
)


def _is_softmax(layer: keras.layers.Layer) -> bool:
    """A softmax layer over the class axis (a final one is dropped)."""
    if type(layer) is keras.layers.Softmax:
        return layer.axis in (-1, [-1], 1, [1])
    return type(layer) is keras.layers.Activation and _act_name(layer.activation) == "softmax"


def _channels_last(layer: keras.layers.Layer) -> list[Problem]:
    fmt = getattr(layer, "data_format", "channels_last")
    if fmt == "channels_last":
        return []
    return [(f"{{layer}} {{is}} data_format '{fmt}' (only channels_last is supported)", layer.name)]


def _in_shape(layer: keras.layers.Layer) -> tuple | None:
    """The layer's input shape (batch included); None if it has several (shared layer)."""
    try:
        shape = layer.input_shape
    except (AttributeError, RuntimeError):
        return None
    return tuple(shape) if isinstance(shape, tuple) else None


def _conv_layer_problems(layer: keras.layers.Layer, classifier: bool) -> list[Problem]:
    """Why one layer of a convolutional chain is unsupported (empty: supported)."""
    name, cls = layer.name, type(layer).__name__
    if type(layer) in (keras.layers.InputLayer, keras.layers.Dropout):
        return []
    problems: list[Problem] = []

    def say(template: str) -> None:
        problems.append((template, name))

    if name == "input":
        say(f"{{layer}} ({cls}): the name 'input' is reserved; rename the layer")
    if layer.compute_dtype != "float32":
        say(f"{{layer}} ({cls}) computes in {layer.compute_dtype}; save the model in float32")
    act = _act_name(layer.activation) if hasattr(layer, "activation") else None
    if type(layer) in (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.DepthwiseConv2D):
        dilation = tuple(layer.dilation_rate)
        if set(dilation) != {1}:
            say(
                f"{{layer}} ({cls}) with dilation_rate {dilation} {{is}} not supported "
                "(use dilation_rate 1)"
            )
        if type(layer) is not keras.layers.DepthwiseConv2D and layer.groups != 1:
            say(f"{{layer}} ({cls}) with groups={layer.groups} {{is}} not supported (use groups 1)")
        if type(layer) is keras.layers.DepthwiseConv2D and layer.depth_multiplier != 1:
            say(
                f"{{layer}} (DepthwiseConv2D) with depth_multiplier={layer.depth_multiplier}"
                " {is} not supported (use depth_multiplier 1)"
            )
        if layer.padding == "causal":
            say("{layer} (Conv1D) with padding 'causal' {is} not supported (use 'valid'/'same')")
        problems += _channels_last(layer)
        if act not in _HIDDEN_ACTS:
            say(f"{cls} {{names}} {{has}} activation '{act}' (supported: linear/relu/relu6)")
    elif type(layer) is keras.layers.BatchNormalization:
        if not _bn_on_channels(layer):
            say(
                f"BatchNormalization {{names}} normalises axis {list(layer.axis)} "
                "(only the last, channel axis is supported)"
            )
        if not (layer.center and layer.scale):
            say(
                f"BatchNormalization {{names}} {{has}} center={layer.center}, "
                f"scale={layer.scale} (both must be on)"
            )
        if layer.renorm or layer.virtual_batch_size is not None:
            say("BatchNormalization {names} uses renorm/virtual_batch_size (not supported)")
    elif type(layer) is keras.layers.ReLU:
        if _relu_kind(layer) is None:
            say(
                "ReLU {names} {has} max_value/negative_slope/threshold set "
                "(supported: ReLU() and ReLU(6.))"
            )
    elif type(layer) is keras.layers.Activation:
        if act not in _HIDDEN_ACTS:
            say(
                f"Activation {{names}} {{is}} '{act}' (supported: relu/relu6; a softmax only at "
                "the end)"
            )
    elif type(layer) in (*_POOLS, keras.layers.Flatten, *_GLOBAL_AVG):
        problems += _channels_last(layer)  # global pooling: rewritten by canonical_conv
    elif type(layer) in _AFFINE:
        say(
            f"{{layer}} ({cls}) folds only into the first Conv/Dense layer; put it right after "
            "the input"
        )
    elif type(layer) is keras.layers.Dense:
        shape = _in_shape(layer)
        if shape is not None and len(shape) != 2:
            say(f"Dense {{names}} gets an input of shape {shape[1:]}; put a Flatten before it")
        allowed = ("linear", "softmax") if classifier else _HIDDEN_ACTS
        if act not in allowed:
            say(f"Dense {{names}} {{has}} activation '{act}' (supported: {'/'.join(allowed)})")
    else:
        say(f"{{layer}} ({cls}) {{is}} not supported")
    return problems


def canonical_conv(
    model: keras.Model, input_shape: Sequence[int], num_classes: int, *, source: str = "model"
) -> keras.Model:
    """Check that ``model`` is a convolutional chain this project supports (see
    :data:`_CONV_SUPPORTED`) and return an equivalent functional model with
    logits out: a final softmax (activation or layer) is dropped, the
    classifier is renamed ``logits`` (if that name is free), other layer names
    are kept. A GlobalAveragePooling2D ``g`` becomes AveragePooling2D over the
    whole map named ``g`` (plus Flatten ``g_flatten`` unless ``keepdims``):
    the same function, in the form the nested layers, costs and int8 kernels
    know (see :func:`_gap_logits`). The checks cover what
    :func:`reds_tf.costs.cost_layers_from_keras`, :func:`reds_tf.nested.build_nested`
    and :mod:`reds_tf.permute` need.

    Folded exactly into the layer they feed (and removed): Rescaling /
    Normalization / BatchNormalization between the input and the first
    Conv/Dense layer (a nonzero offset is refused before a convolution that
    zero-pads: padding='same' makes the fold inexact at the borders), and
    BatchNormalization on a vector (around a Dense). A model on ``(T, C)``
    inputs (Conv1D, 1-D pooling) becomes the same computation on ``(1, T, C)``
    maps (:func:`_as_2d`). A Dense without bias gets a zero bias. As
    keras.applications' MobileNet writes them: a ZeroPadding2D equal to the next
    convolution's padding='same' is folded into it, a 1x1 Conv2D classifier on a
    1x1 map (then Reshape) is Flatten + Dense.
    """
    problems: list[Problem] = list(_shape_problems(model, input_shape, num_classes, source))
    layers = [ly for ly in model.layers if type(ly) is not keras.layers.InputLayer]
    body = layers[:-1] if layers and _is_softmax(layers[-1]) else layers
    specs = _specs(body)
    names = {ly.name for ly in model.layers}
    problems += _fold_zero_padding(specs)
    _conv_head_as_dense(specs, names)
    problems += _fold_input_affine(specs, model.input_shape[1:])
    problems += _fold_vector_bn(specs)
    dense = [i for i, s in enumerate(specs) if s.cls is keras.layers.Dense]
    cls_i = dense[-1] if dense else None
    if cls_i is None:
        problems.append("needs a Dense classifier layer at the end")
    else:
        after = [s for s in specs[cls_i + 1 :] if s.cls is not keras.layers.Dropout]
        if after:
            problems.append(
                f"layer '{after[0].name}' ({after[0].cls.__name__}) follows the classifier "
                f"'{specs[cls_i].name}'; the model must end in the classifier (optionally softmax)"
            )
    if not any(s.cls in (_L.Conv1D, _L.Conv2D, _L.DepthwiseConv2D) for s in specs):
        problems.append("has no Conv2D/Conv1D/DepthwiseConv2D layer")
    one_d = any(s.cls in _AS_2D for s in specs)
    if one_d and len(input_shape) != 2:
        problems.append(
            f"has 1-D layers but its input is {tuple(input_shape)}, not (steps, channels)"
        )
    for i, s in enumerate(specs):
        if s.layer is not None:  # None: a Flatten the canonical form adds
            problems += _conv_layer_problems(s.layer, classifier=i == cls_i)
    if cls_i is not None and specs[cls_i].act not in ("linear", "softmax"):
        problems.append(
            (f"{{layer}} (the classifier) {{has}} activation '{specs[cls_i].act}' (supported: "
             "linear/softmax)", specs[cls_i].name)
        )  # fmt: skip
    problems += _chain_problems(model)
    if problems:
        raise _refusal(
            source,
            problems,
            f". Supported: {_CONV_SUPPORTED}. Change or remove the named layers and save the "
            "model again.",
        )
    names = {ly.name for ly in model.layers}
    classifier = specs[cls_i].name
    if one_d:
        specs = _as_2d(specs, input_shape, names)
    x = inp = keras.Input(shape=tuple(input_shape), name="input")
    for s in specs:
        cfg = s.cfg
        if s.name == classifier:
            cfg["activation"] = "linear"
            if LOGITS not in names:
                cfg["name"] = LOGITS
        if s.cls is keras.layers.GlobalAveragePooling2D:
            x = _global_pool_as_window(s.name, bool(cfg.get("keepdims")), x, names)
            continue
        weights = _with_bias(s) if s.cls is keras.layers.Dense else s.weights
        new = s.cls.from_config(cfg)
        x = new(x)
        new.set_weights(weights)
    return keras.Model(inp, x, name=model.name)


def _global_pool_as_window(name: str, keepdims: bool, x, names: set[str]):
    """A global average pooling ``name`` applied to ``x`` as a full-map
    AveragePooling2D (+ Flatten unless ``keepdims``)."""
    h, w = (int(v) for v in x.shape[1:3])
    x = keras.layers.AveragePooling2D(pool_size=(h, w), name=name)(x)
    if keepdims:
        return x
    return keras.layers.Flatten(name=_unique(f"{name}_flatten", names))(x)


_RESIDUAL_SUPPORTED = (
    "Input -> Conv2D (groups 1, dilation 1) / DepthwiseConv2D (depth_multiplier 1) / "
    "BatchNormalization on maps / ReLU / ReLU(6.) / Activation('relu'/'relu6') / "
    "AveragePooling2D / MaxPooling2D, branches joined by Add (two inputs) ... -> Flatten or "
    "GlobalAveragePooling2D -> Dense ... -> Dense(classes, linear/softmax), Dropout anywhere"
)


def _has_add(model: keras.Model) -> bool:
    """Whether ``model`` joins branches with Add (a residual network)."""
    return any(type(layer) is keras.layers.Add for layer in getattr(model, "layers", []))


def _inbound_names(layer: keras.layers.Layer) -> list[str]:
    """Names of the layers feeding ``layer``'s first call, in call order."""
    srcs = layer._inbound_nodes[0].inbound_layers  # no public graph API in tf_keras
    return [s.name for s in (srcs if isinstance(srcs, list) else [srcs])]


def canonical_residual(
    model: keras.Model, input_shape: Sequence[int], num_classes: int, *, source: str = "model"
) -> keras.Model:
    """Check a user's residual network (branches joined by Add only, see
    :data:`_RESIDUAL_SUPPORTED`) and rebuild it along its own graph with logits
    out: a final softmax is dropped, the classifier renamed ``logits`` (if that
    name is free), a GlobalAveragePooling2D becomes a full-map AveragePooling2D
    (+ Flatten), as in :func:`canonical_conv`; other layers and names are kept,
    so the function is the same. The channels an Add joins become one tied
    group (:mod:`reds_tf.ir`)."""
    problems: list[Problem] = list(_shape_problems(model, input_shape, num_classes, source))
    layers = [ly for ly in model.layers if type(ly) is not keras.layers.InputLayer]
    body = layers[:-1] if layers and _is_softmax(layers[-1]) else layers
    dense = [ly for ly in body if type(ly) is keras.layers.Dense]
    classifier = dense[-1] if dense else None
    tail = [ly for ly in body[body.index(classifier) + 1 :]] if classifier is not None else []
    if classifier is None:
        problems.append("needs a Dense classifier layer at the end")
    elif any(type(ly) is not keras.layers.Dropout for ly in tail):
        problems.append(
            (f"{{layer}} follows the classifier '{classifier.name}'; the model must end in the "
             "classifier (optionally softmax)", tail[0].name)
        )  # fmt: skip
    for ly in model.layers:
        if len(ly._inbound_nodes) > 1:
            problems.append(("{layer} {is} called more than once", ly.name))
    for ly in body:
        if type(ly) is keras.layers.Add:
            if len(_inbound_names(ly)) != 2:
                problems.append(("Add {names} must sum exactly two inputs", ly.name))
        elif type(ly) in (*_AS_2D, *_AFFINE) or (
            type(ly) is keras.layers.BatchNormalization and len(_in_shape(ly) or ()) != 4
        ):
            problems.append(
                (f"{{layer}} ({type(ly).__name__}) {{is}} not supported in a residual network "
                 "(2-D maps only, no folded input scaling or vector BatchNormalization)", ly.name)
            )  # fmt: skip
        else:
            problems += _conv_layer_problems(ly, classifier=ly is classifier)
    if problems:
        raise _refusal(
            source,
            problems,
            f". Supported: {_RESIDUAL_SUPPORTED}. Change or remove the named layers and save the "
            "model again.",
        )
    names = {ly.name for ly in model.layers}
    x = inp = keras.Input(shape=tuple(input_shape), name="input")
    out = {ly.name: inp for ly in model.layers if type(ly) is keras.layers.InputLayer}
    for ly in body:
        xs = [out[s] for s in _inbound_names(ly)]
        if type(ly) is keras.layers.GlobalAveragePooling2D:
            out[ly.name] = _global_pool_as_window(ly.name, bool(ly.keepdims), xs[0], names)
            continue
        cfg = ly.get_config()
        if ly is classifier:
            cfg["activation"] = "linear"
            if LOGITS not in names:
                cfg["name"] = LOGITS
        new = type(ly).from_config(cfg)
        out[ly.name] = new(xs if type(ly) is keras.layers.Add else xs[0])
        new.set_weights(ly.get_weights())
        x = out[ly.name]
    return keras.Model(inp, x, name=model.name)


def _has_conv(model: keras.Model) -> bool:
    """Whether ``model`` has any convolution (supported or not): such models are
    checked against the convolutional chain, all others against the dense one."""
    return any("Conv" in type(layer).__name__ for layer in getattr(model, "layers", []))


def load_base_model(path: str | Path, input_shape: Sequence[int], num_classes: int) -> keras.Model:
    """Load a user's pretrained ``.keras``/``.h5`` model and canonicalise it
    (:func:`read_base_model`, then :func:`canonical_base`)."""
    model = read_base_model(path)
    return canonical_base(model, input_shape, num_classes, source=f"--base {path}")


def canonical_base(
    model: Any, input_shape: Sequence[int], num_classes: int, source: str = "model"
) -> keras.Model:
    """Check and canonicalise a user's tf_keras model: one with Add joins by
    :func:`canonical_residual`, one with a convolution by :func:`canonical_conv`,
    any other by :func:`canonical_dnn`."""
    if not isinstance(model, keras.Model):
        kind = type(model).__module__.split(".")[0]
        if kind == "keras":
            raise RedsError(
                f"{source}: a Keras 3 model; reds_tf trains tf_keras models: build it with "
                "`import tf_keras as keras` (same API) instead of `import keras`"
            )
        raise RedsError(f"{source}: expected a tf_keras model, got {type(model).__name__}")
    if _has_add(model):
        return canonical_residual(model, input_shape, num_classes, source=source)
    check = canonical_conv if _has_conv(model) else canonical_dnn
    return check(model, input_shape, num_classes, source=source)


def keras3_file(path: Path) -> bool:
    """Whether ``path`` was saved by Keras 3 (which tf_keras cannot load): a
    ``.keras`` zip whose metadata.json names Keras 3, or an HDF5 file whose
    ``keras_version`` attribute starts with 3."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                meta = json.loads(z.read("metadata.json"))
            return str(meta.get("keras_version", "")).startswith("3")
        with open(path, "rb") as f:
            if f.read(8) != b"\x89HDF\r\n\x1a\n":
                return False
        import h5py  # a TensorFlow dependency; only needed for .h5 files

        with h5py.File(path, "r") as h:
            version = h.attrs.get("keras_version", "")
        if isinstance(version, bytes):
            version = version.decode("utf-8", "replace")
        return str(version).startswith("3")
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return False


def read_base_model(path: str | Path) -> keras.Model:
    """A user's ``.keras``/``.h5`` model file as saved (not yet checked)."""
    path = Path(path)
    if not path.exists():
        raise RedsError(f"--base: file not found: {path}")
    if keras3_file(path):
        raise RedsError(
            f"--base: {path} was saved by Keras 3, which tf_keras cannot read; build and save "
            "the model with `import tf_keras as keras` (same API), or in Keras 3 re-create it "
            "in tf_keras and copy the weights layer by layer (`set_weights`)"
        )
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as e:  # Keras raises many types for unreadable files
        raise RedsError(
            f"--base: cannot load {path} as a tf_keras model ({type(e).__name__}: {e})"
        ) from e


def load_plain_model(path: str | Path) -> keras.Model:
    """Load a model this project wrote (``base.keras``, ``model.keras``)."""
    return keras.models.load_model(path, compile=False)


def flatten_rows(positions: int, channels: int, width: int) -> np.ndarray:
    """Rows of a Dense kernel after Flatten of an (H, W, ``channels``) map
    (``positions`` = H*W) that a channel prefix ``width`` keeps, in (h, w, c) order."""
    pos = np.arange(positions)[:, None] * channels
    return (pos + np.arange(width)[None, :]).reshape(-1)


Weights = list[np.ndarray]


def _slice_depthwise(g: ir.Graph, n: ir.Node, w: Weights, c_in: int, c_out: int) -> Weights:
    return [w[0][:, :, :c_in]] + [v[:c_in] for v in w[1:]]  # kernel (kh, kw, C, 1)


def _slice_conv(g: ir.Graph, n: ir.Node, w: Weights, c_in: int, c_out: int) -> Weights:
    return [w[0][:, :, :c_in, :c_out]] + [v[:c_out] for v in w[1:]]  # kernel (kh, kw, I, O)


def _slice_bn(g: ir.Graph, n: ir.Node, w: Weights, c_in: int, c_out: int) -> Weights:
    return [v[:c_in] for v in w]  # gamma, beta, mean, variance


def _slice_dense(g: ir.Graph, n: ir.Node, w: Weights, c_in: int, c_out: int) -> Weights:
    # kernel (positions * C, O): after Flatten of an (H, W, C) map a channel prefix is a gather
    rows = flatten_rows(g.positions(n), g.input_units(n), c_in)
    return [w[0][rows, :c_out]] + [v[:c_out] for v in w[1:]]


# Node kind -> the prefix slice of its weights (input width c_in, output width c_out).
SLICE = {ir.DEPTHWISE: _slice_depthwise, ir.CONV: _slice_conv, ir.BATCHNORM: _slice_bn,
         ir.DENSE: _slice_dense}  # fmt: skip


def submodel(full: keras.Model, widths: dict[str, int]) -> keras.Model:
    """A standalone plain model holding the prefix slices of ``full`` for the
    given per-layer output widths (same names, same function as the nested
    submodel; conv, depthwise, BN and Dense after Flatten included). Layers
    missing from ``widths`` keep their full width; depthwise and BN layers
    follow their input (:meth:`reds_tf.ir.Graph.node_widths`). Used for the
    scratch baseline and for checks."""
    graph = ir.from_keras(full)
    node_widths = graph.node_widths(widths)
    cfg = full.get_config()
    for lc in cfg["layers"]:
        name, conf = lc["config"]["name"], lc["config"]
        kind = graph.node(name).kind if name in graph else None
        if kind == ir.CONV:
            conf["filters"] = int(node_widths[name])
        elif kind == ir.DENSE:
            conf["units"] = int(node_widths[name])
    cfg["name"] = f"{full.name}_sub"
    sub = keras.Model.from_config(cfg)
    for node in graph.nodes:
        cut = SLICE.get(node.kind)
        if cut is None:
            continue
        w = full.get_layer(node.name).get_weights()
        c_in = graph.input_width(node, node_widths)
        sub.get_layer(node.name).set_weights(cut(graph, node, w, c_in, node_widths[node.name]))
    return sub
