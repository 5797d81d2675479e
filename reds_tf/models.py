"""Architecture builders (tf_keras functional models) and model checks.

Models output LOGITS (no softmax): the int8 export runs logits only and the
class is the argmax. Layers get stable names (``fc1``, ``fc2``, ..., ``logits``)
because ``submodels.json`` refers to them by name.

New architectures register a builder in :data:`MODEL_TYPES` under their
``model.type``.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Sequence
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
    name: str = "dnn",
) -> keras.Model:
    """Input(input_shape) -> Flatten -> [Dense(h, relu) (-> Dropout)]* -> Dense(num_classes).

    Output: logits, shape (batch, num_classes).
    """
    x = inp = keras.Input(shape=tuple(input_shape), name="input")
    x = keras.layers.Flatten(name="flatten")(x)
    for i, h in enumerate(hidden):
        x = keras.layers.Dense(int(h), activation="relu", name=dense_name(i))(x)
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


def _chain_problems(model: keras.Model) -> list[str]:
    """A chain: each layer has exactly one inbound layer (the previous one)."""
    problems = []
    prev = None
    for layer in model.layers:
        inbound = list(layer._inbound_nodes)  # no public graph API in tf_keras
        if len(inbound) > 1:
            problems.append(f"layer '{layer.name}' is called more than once")
        srcs = []
        for node in inbound:
            il = node.inbound_layers
            srcs += il if isinstance(il, list) else [il]
        if prev is not None and [s.name for s in srcs] != [prev.name]:
            problems.append(f"layer '{layer.name}' is not fed by the previous layer only")
        prev = layer
    return problems


def _act_name(fn) -> str:
    act = keras.activations.serialize(fn)
    return act if isinstance(act, str) else str(act)


def canonical_dnn(
    model: keras.Model, input_shape: Sequence[int], num_classes: int, *, source: str = "model"
) -> keras.Model:
    """Check that ``model`` is a dense chain this project supports and return an
    equivalent model in canonical form (layer names fc1.., logits; logits out).

    Supported: Input -> [Flatten] -> Dense(relu)* -> Dense(linear or softmax),
    with optional Dropout anywhere. A final softmax is dropped (argmax unchanged).
    """
    problems = _shape_problems(model, input_shape, num_classes, source)
    dense = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            dense.append(layer)
        elif isinstance(layer, keras.layers.Flatten) and not dense:
            continue
        elif not isinstance(layer, _PASSIVE):
            problems.append(f"layer '{layer.name}' ({type(layer).__name__}) is not supported")
    problems += _chain_problems(model)
    if len(dense) < 2:
        problems.append("needs at least one hidden Dense layer and an output Dense layer")
    for i, layer in enumerate(dense):
        act = _act_name(layer.activation)
        last = i == len(dense) - 1
        allowed = ("linear", "softmax") if last else ("relu",)
        if act not in allowed:
            problems.append(
                f"Dense '{layer.name}' has activation '{act}' (supported: {'/'.join(allowed)})"
            )
        if not layer.use_bias:
            problems.append(f"Dense '{layer.name}' has no bias (use_bias=False not supported)")
    if problems:
        raise RedsError(
            f"{source} is not a supported model: "
            + "; ".join(problems)
            + ". Supported: Input -> Flatten -> Dense(relu) ... -> Dense(classes, linear/softmax)."
        )
    hidden = [layer.units for layer in dense[:-1]]
    out = dnn(input_shape, hidden, num_classes)
    for src, dst in zip(dense, dense_layers(out), strict=True):
        dst.set_weights(src.get_weights())
    return out


_CONV_SUPPORTED = (
    "Input -> Conv2D (groups 1, dilation 1) / DepthwiseConv2D (depth_multiplier 1) / "
    "BatchNormalization (channels-last, center and scale) / ReLU / Activation('relu') / "
    "AveragePooling2D / MaxPooling2D ... -> Flatten or GlobalAveragePooling2D -> Dense ... "
    "-> Dense(classes, linear/softmax), one plain chain, Dropout anywhere"
)


def _is_softmax(layer: keras.layers.Layer) -> bool:
    """A softmax layer over the class axis (a final one is dropped)."""
    if type(layer) is keras.layers.Softmax:
        return layer.axis in (-1, [-1], 1, [1])
    return type(layer) is keras.layers.Activation and _act_name(layer.activation) == "softmax"


def _channels_last(layer: keras.layers.Layer) -> list[str]:
    fmt = getattr(layer, "data_format", "channels_last")
    if fmt == "channels_last":
        return []
    return [f"layer '{layer.name}' uses data_format '{fmt}' (only channels_last is supported)"]


def _in_shape(layer: keras.layers.Layer) -> tuple | None:
    """The layer's input shape (batch included); None if it has several (shared layer)."""
    try:
        shape = layer.input_shape
    except (AttributeError, RuntimeError):
        return None
    return tuple(shape) if isinstance(shape, tuple) else None


def _conv_layer_problems(layer: keras.layers.Layer, classifier: bool) -> list[str]:
    """Why one layer of a convolutional chain is unsupported (empty: supported)."""
    name, cls = layer.name, type(layer).__name__
    if type(layer) in (keras.layers.InputLayer, keras.layers.Dropout):
        return []
    problems = []
    if name == "input":
        problems.append(f"layer 'input' ({cls}): the name 'input' is reserved; rename the layer")
    if layer.compute_dtype != "float32":
        problems.append(
            f"layer '{name}' ({cls}) computes in {layer.compute_dtype}; save the model in float32"
        )
    act = _act_name(layer.activation) if hasattr(layer, "activation") else None
    if type(layer) in (keras.layers.Conv2D, keras.layers.DepthwiseConv2D):
        if tuple(layer.dilation_rate) != (1, 1):
            problems.append(
                f"layer '{name}' ({cls}) with dilation_rate {tuple(layer.dilation_rate)} is not "
                "supported (use dilation_rate 1)"
            )
        if type(layer) is keras.layers.Conv2D and layer.groups != 1:
            problems.append(
                f"layer '{name}' (Conv2D) with groups={layer.groups} is not supported "
                "(use groups 1)"
            )
        if type(layer) is keras.layers.DepthwiseConv2D and layer.depth_multiplier != 1:
            problems.append(
                f"layer '{name}' (DepthwiseConv2D) with depth_multiplier={layer.depth_multiplier}"
                " is not supported (use depth_multiplier 1)"
            )
        problems += _channels_last(layer)
        if act not in ("linear", "relu"):
            problems.append(f"{cls} '{name}' has activation '{act}' (supported: linear/relu)")
    elif type(layer) is keras.layers.BatchNormalization:
        rank = len(_in_shape(layer) or ())
        if list(layer.axis) not in ([-1], [rank - 1]):
            problems.append(
                f"BatchNormalization '{name}' normalises axis {list(layer.axis)} "
                "(only the last, channel axis is supported)"
            )
        if not (layer.center and layer.scale):
            problems.append(
                f"BatchNormalization '{name}' has center={layer.center}, scale={layer.scale} "
                "(both must be on)"
            )
        if layer.renorm or layer.virtual_batch_size is not None:
            problems.append(
                f"BatchNormalization '{name}' uses renorm/virtual_batch_size (not supported)"
            )
    elif type(layer) is keras.layers.ReLU:
        if (
            layer.max_value is not None
            or float(layer.negative_slope) != 0
            or float(layer.threshold) != 0
        ):
            problems.append(
                f"ReLU '{name}' has max_value/negative_slope/threshold set "
                "(only a plain ReLU is supported)"
            )
    elif type(layer) is keras.layers.Activation:
        if act not in ("linear", "relu"):
            problems.append(
                f"Activation '{name}' is '{act}' (supported: relu; a softmax only at the end)"
            )
    elif type(layer) in (
        keras.layers.AveragePooling2D,
        keras.layers.MaxPooling2D,
        keras.layers.Flatten,
    ):
        problems += _channels_last(layer)
    elif type(layer) is keras.layers.GlobalAveragePooling2D:
        problems += _channels_last(layer)  # rewritten by canonical_conv
    elif type(layer) is keras.layers.Dense:
        shape = _in_shape(layer)
        if shape is not None and len(shape) != 2:
            problems.append(
                f"Dense '{name}' gets an input of shape {shape[1:]}; put a Flatten before it"
            )
        allowed = ("linear", "softmax") if classifier else ("linear", "relu")
        if act not in allowed:
            problems.append(
                f"Dense '{name}' has activation '{act}' (supported: {'/'.join(allowed)})"
            )
        if not layer.use_bias:
            problems.append(f"Dense '{name}' has no bias (use_bias=False not supported)")
    else:
        problems.append(f"layer '{name}' ({cls}) is not supported")
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
    """
    problems = _shape_problems(model, input_shape, num_classes, source)
    layers = [ly for ly in model.layers if type(ly) is not keras.layers.InputLayer]
    body = layers[:-1] if layers and _is_softmax(layers[-1]) else layers
    dense = [i for i, ly in enumerate(body) if type(ly) is keras.layers.Dense]
    cls_i = dense[-1] if dense else None
    if cls_i is None:
        problems.append("needs a Dense classifier layer at the end")
    else:
        after = [ly for ly in body[cls_i + 1 :] if type(ly) is not keras.layers.Dropout]
        if after:
            problems.append(
                f"layer '{after[0].name}' ({type(after[0]).__name__}) follows the classifier "
                f"'{body[cls_i].name}'; the model must end in the classifier (optionally softmax)"
            )
    if not any(type(ly) in (keras.layers.Conv2D, keras.layers.DepthwiseConv2D) for ly in body):
        problems.append("has no Conv2D/DepthwiseConv2D layer")
    for i, layer in enumerate(body):
        problems += _conv_layer_problems(layer, classifier=i == cls_i)
    problems += _chain_problems(model)
    if problems:
        raise RedsError(
            f"{source} is not a supported model: "
            + "; ".join(problems)
            + f". Supported: {_CONV_SUPPORTED}. Change or remove the named layers and save the "
            "model again."
        )
    names = {ly.name for ly in body}
    x = inp = keras.Input(shape=tuple(input_shape), name="input")
    for i, layer in enumerate(body):
        cfg = layer.get_config()
        if i == cls_i:
            cfg["activation"] = "linear"
            if LOGITS not in names:
                cfg["name"] = LOGITS
        if type(layer) is keras.layers.GlobalAveragePooling2D:
            x = _global_pool_as_window(layer, x, names)
            continue
        new = type(layer).from_config(cfg)
        x = new(x)
        new.set_weights(layer.get_weights())
    return keras.Model(inp, x, name=model.name)


def _global_pool_as_window(layer: keras.layers.GlobalAveragePooling2D, x, names: set[str]):
    """``layer`` applied to ``x`` as a full-map AveragePooling2D (+ Flatten)."""
    h, w = (int(v) for v in x.shape[1:3])
    x = keras.layers.AveragePooling2D(pool_size=(h, w), name=layer.name)(x)
    if layer.keepdims:
        return x
    flat = f"{layer.name}_flatten"
    while flat in names:
        flat += "_"
    return keras.layers.Flatten(name=flat)(x)


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
    """Check and canonicalise a user's tf_keras model: one with a convolution by
    :func:`canonical_conv`, any other by :func:`canonical_dnn`."""
    if not isinstance(model, keras.Model):
        kind = type(model).__module__.split(".")[0]
        if kind == "keras":
            raise RedsError(
                f"{source}: a Keras 3 model; reds_tf trains tf_keras models: build it with "
                "`import tf_keras as keras` (same API) instead of `import keras`"
            )
        raise RedsError(f"{source}: expected a tf_keras model, got {type(model).__name__}")
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
