"""Architecture builders (tf_keras functional models) and model checks.

Models output LOGITS (no softmax): the int8 export runs logits only and the
class is the argmax. Layers get stable names (``fc1``, ``fc2``, ..., ``logits``)
because ``submodels.json`` refers to them by name.

New architectures register a builder in :data:`MODEL_TYPES` under their
``model.type``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tf_keras as keras

from reds_tf.errors import RedsError

if TYPE_CHECKING:
    from reds_tf.config import ModelConfig

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


@register_model("cnn")
def _build_cnn(cfg: ModelConfig, input_shape: Sequence[int], num_classes: int) -> keras.Model:
    return cnn(input_shape, [c.as_dict() for c in cfg.conv], cfg.hidden, num_classes)


@register_model("dscnn")
def _build_dscnn(cfg: ModelConfig, input_shape: Sequence[int], num_classes: int) -> keras.Model:
    return dscnn(input_shape, cfg.first.as_dict(), [b.as_dict() for b in cfg.blocks], num_classes)


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


def canonical_dnn(
    model: keras.Model, input_shape: Sequence[int], num_classes: int, *, source: str = "model"
) -> keras.Model:
    """Check that ``model`` is a dense chain this project supports and return an
    equivalent model in canonical form (layer names fc1.., logits; logits out).

    Supported: Input -> [Flatten] -> Dense(relu)* -> Dense(linear or softmax),
    with optional Dropout anywhere. A final softmax is dropped (argmax unchanged).
    """
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
    dense = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            dense.append(layer)
        elif isinstance(layer, keras.layers.Flatten) and not dense:
            continue
        elif not isinstance(layer, _PASSIVE):
            problems.append(f"layer '{layer.name}' ({type(layer).__name__}) is not supported")
    # A chain: each layer has exactly one inbound layer (the previous one).
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
    if len(dense) < 2:
        problems.append("needs at least one hidden Dense layer and an output Dense layer")
    for i, layer in enumerate(dense):
        act = keras.activations.serialize(layer.activation)
        act = act if isinstance(act, str) else str(act)
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


def load_base_model(path: str | Path, input_shape: Sequence[int], num_classes: int) -> keras.Model:
    """Load a user's pretrained ``.keras``/``.h5`` model and canonicalise it."""
    path = Path(path)
    if not path.exists():
        raise RedsError(f"--base: file not found: {path}")
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as e:  # Keras raises many types for unreadable files
        raise RedsError(
            f"--base: cannot load {path} as a tf_keras model ({type(e).__name__}: {e})"
        ) from e
    return canonical_dnn(model, input_shape, num_classes, source=f"--base {path}")


def load_plain_model(path: str | Path) -> keras.Model:
    """Load a model this project wrote (``base.keras``, ``model.keras``)."""
    return keras.models.load_model(path, compile=False)


def flatten_rows(positions: int, channels: int, width: int) -> np.ndarray:
    """Rows of a Dense kernel after Flatten of an (H, W, ``channels``) map
    (``positions`` = H*W) that a channel prefix ``width`` keeps, in (h, w, c) order."""
    pos = np.arange(positions)[:, None] * channels
    return (pos + np.arange(width)[None, :]).reshape(-1)


def submodel(full: keras.Model, widths: dict[str, int]) -> keras.Model:
    """A standalone plain model holding the prefix slices of ``full`` for the
    given per-layer output widths (same names, same function as the nested
    submodel; conv, depthwise, BN and Dense after Flatten included). Layers
    missing from ``widths`` keep their full width; depthwise and BN layers
    follow their input. Used for the scratch baseline and for checks."""
    cfg = full.get_config()
    for lc in cfg["layers"]:
        name, conf = lc["config"]["name"], lc["config"]
        if name in widths and lc["class_name"] == "Conv2D":
            conf["filters"] = int(widths[name])
        elif name in widths and lc["class_name"] == "Dense":
            conf["units"] = int(widths[name])
    cfg["name"] = f"{full.name}_sub"
    sub = keras.Model.from_config(cfg)
    chans = int(full.input_shape[-1])
    positions = 1
    for src in full.layers:
        w = src.get_weights()
        dst = sub.get_layer(src.name)
        if isinstance(src, keras.layers.DepthwiseConv2D):
            dst.set_weights([w[0][:, :, :chans]] + [v[:chans] for v in w[1:]])
        elif isinstance(src, keras.layers.Conv2D):
            o = dst.filters
            dst.set_weights([w[0][:, :, :chans, :o]] + [v[:o] for v in w[1:]])
            chans = o
        elif isinstance(src, keras.layers.BatchNormalization):
            dst.set_weights([v[:chans] for v in w])
        elif isinstance(src, keras.layers.Flatten):
            shape = src.input_shape[1:]
            positions *= int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        elif isinstance(src, keras.layers.Dense):
            o = dst.units
            full_c = w[0].shape[0] // positions
            rows = flatten_rows(positions, full_c, chans)
            dst.set_weights([w[0][rows, :o]] + [v[:o] for v in w[1:]])
            chans, positions = o, 1
    return sub
