"""Slice a full int8 .tflite into a prefix-width submodel with the SHARED int8 weights.

Uses the flatbuffer object API that ships inside TensorFlow (``ModelT``). A
submodel keeps every operator; each FULLY_CONNECTED layer keeps the prefix
``W[:o_k, :i_k]`` of the full model's int8 weights, ``bias[:o_k]`` and the
first ``o_k`` per-channel scales, so nothing is re-quantised. Pitfalls handled:
the converter merges identical constants into one tensor used by several ops
(we clone every tensor we edit), an all-zero bias may be absent (input -1),
TFLM barely validates shapes (we assert our own invariants), and the Python
packer loses the 16-byte buffer alignment (re-aligned with tflite_micro's
``align_tflite_model``).
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from reds_tf.errors import RedsError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _schema():
    from tensorflow.lite.python import schema_py_generated as schema

    return schema


_NP_TYPES = {"INT8": np.int8, "INT32": np.int32, "UINT8": np.uint8, "INT16": np.int16}


def read_model(buf: bytes):
    """Parse .tflite bytes into a mutable ``ModelT``; corrupt bytes -> RedsError."""
    from tensorflow.lite.python.util import _convert_model_from_bytearray_to_object

    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise RedsError("not a TFLite flatbuffer (missing the 'TFL3' identifier)")
    try:
        model = _convert_model_from_bytearray_to_object(bytearray(buf))
    except Exception as e:  # flatbuffers raises assorted errors on garbage
        raise RedsError(f"corrupt .tflite flatbuffer: {e}") from e
    if not model.subgraphs:
        raise RedsError("the .tflite model has no subgraph")
    return model


def write_model(model) -> bytes:
    """Serialise a ``ModelT`` and restore the schema's 16-byte buffer alignment."""
    from tensorflow.lite.python.util import _convert_model_from_object_to_bytearray
    from tflite_micro.tensorflow.lite.micro.tools import tflite_flatbuffer_align_wrapper

    raw = bytes(_convert_model_from_object_to_bytearray(model))
    with tempfile.TemporaryDirectory(prefix="reds_align_") as d:
        src, dst = os.path.join(d, "in.tflite"), os.path.join(d, "out.tflite")
        with open(src, "wb") as f:
            f.write(raw)
        tflite_flatbuffer_align_wrapper.align_tflite_model(src, dst)
        with open(dst, "rb") as f:
            return f.read()


def op_name(model, op) -> str:
    """The builtin operator name of ``op`` (e.g. 'FULLY_CONNECTED')."""
    schema = _schema()
    code = model.operatorCodes[op.opcodeIndex]
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    if builtin == schema.BuiltinOperator.CUSTOM:
        custom = code.customCode.decode() if code.customCode else "?"
        return f"CUSTOM({custom})"
    return names.get(builtin, f"builtin#{builtin}")


def tensor_type_name(t) -> str:
    schema = _schema()
    names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    return names.get(t.type, str(t.type))


def tensor_data(model, t) -> np.ndarray:
    """The constant data of tensor ``t`` as a NumPy array of its shape."""
    buf = model.buffers[t.buffer]
    if buf.data is None:
        raise RedsError(f"tensor {t.name!r} has no constant data")
    dtype = _NP_TYPES.get(tensor_type_name(t))
    if dtype is None:
        raise RedsError(f"tensor {t.name!r} has unsupported type {tensor_type_name(t)}")
    raw = np.asarray(buf.data, dtype=np.uint8).tobytes()
    return np.frombuffer(raw, dtype=dtype).reshape(tuple(int(d) for d in t.shape)).copy()


@dataclass
class FcTensors:
    """Tensor indices of one FULLY_CONNECTED op: input, weights, bias (-1: none), output."""

    op_index: int
    input: int
    weights: int
    bias: int
    output: int


def fully_connected_ops(model) -> list[FcTensors]:
    """The FULLY_CONNECTED ops of subgraph 0 in execution order."""
    sg = model.subgraphs[0]
    out = []
    for i, op in enumerate(sg.operators):
        if op_name(model, op) == "FULLY_CONNECTED":
            ins = [int(v) for v in op.inputs]
            bias = ins[2] if len(ins) > 2 else -1
            out.append(FcTensors(i, ins[0], ins[1], bias, int(op.outputs[0])))
    return out


def _clone_tensor(model, t_index: int, data: np.ndarray, n_channels: int) -> int:
    """Append a copy of tensor ``t_index`` holding ``data`` (own buffer), with its
    per-channel quantisation cut to the first ``n_channels``; return its index."""
    sg = model.subgraphs[0]
    schema = _schema()
    t = copy.deepcopy(sg.tensors[t_index])
    buf = schema.BufferT()
    buf.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8).copy()
    model.buffers.append(buf)
    t.buffer = len(model.buffers) - 1
    t.shape = np.asarray(data.shape, dtype=np.int32)
    t.shapeSignature = None
    q = t.quantization
    if q is not None and q.scale is not None and len(q.scale) > 1:
        q.scale = np.asarray(q.scale, np.float32)[:n_channels].copy()
        q.zeroPoint = np.asarray(q.zeroPoint, np.int64)[:n_channels].copy()
    sg.tensors.append(t)
    return len(sg.tensors) - 1


def _compact(model) -> None:
    """Drop tensors and buffers no longer referenced, remapping every index."""
    sg = model.subgraphs[0]
    used: set[int] = set(int(i) for i in sg.inputs) | set(int(i) for i in sg.outputs)
    for op in sg.operators:
        used |= {int(i) for i in op.inputs if i >= 0} | {int(i) for i in op.outputs if i >= 0}
        if op.intermediates is not None:
            used |= {int(i) for i in op.intermediates if i >= 0}
    order = sorted(used)
    tmap = {old: new for new, old in enumerate(order)}

    def remap(seq):
        return np.asarray([tmap[int(i)] if i >= 0 else -1 for i in seq], dtype=np.int32)

    sg.tensors = [sg.tensors[i] for i in order]
    sg.inputs, sg.outputs = remap(sg.inputs), remap(sg.outputs)
    for op in sg.operators:
        op.inputs, op.outputs = remap(op.inputs), remap(op.outputs)
        if op.intermediates is not None:
            op.intermediates = remap(op.intermediates)
    for sig in model.signatureDefs or []:
        for tm in list(sig.inputs or []) + list(sig.outputs or []):
            tm.tensorIndex = tmap[int(tm.tensorIndex)]
    # Buffers: 0 is the schema's empty sentinel; metadata buffers must survive.
    bused = {0} | {int(t.buffer) for s in model.subgraphs for t in s.tensors}
    bused |= {int(m.buffer) for m in model.metadata or []}
    border = sorted(bused)
    bmap = {old: new for new, old in enumerate(border)}
    model.buffers = [model.buffers[i] for i in border]
    for s in model.subgraphs:
        for t in s.tensors:
            t.buffer = bmap[int(t.buffer)]
    for m in model.metadata or []:
        m.buffer = bmap[int(m.buffer)]


#: Width-carrying operators -> the graph's node kind (reds_tf.ir).
OP_KINDS = {"CONV_2D": "conv", "DEPTHWISE_CONV_2D": "depthwise", "FULLY_CONNECTED": "dense"}
WIDTH_OPS = tuple(OP_KINDS)
POOL_OPS = ("AVERAGE_POOL_2D", "MAX_POOL_2D")  # per-channel: keep the input's width
PASS_OPS = (*POOL_OPS, "RESHAPE", "ADD")  # ADD: inputs of one width (a tied group)


def width_ops(model) -> list[FcTensors]:
    """The width-carrying ops (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED) of
    subgraph 0 in execution order: one per ``submodels.json`` layer."""
    sg = model.subgraphs[0]
    out = []
    for i, op in enumerate(sg.operators):
        if op_name(model, op) in WIDTH_OPS:
            ins = [int(v) for v in op.inputs]
            bias = ins[2] if len(ins) > 2 else -1
            out.append(FcTensors(i, ins[0], ins[1], bias, int(op.outputs[0])))
    return out


def weight_bytes(buf: bytes) -> int:
    """Bytes of every weight and bias tensor of the width-carrying ops of a .tflite."""
    model = read_model(buf)
    sg = model.subgraphs[0]
    n = 0
    for t in width_ops(model):
        n += tensor_data(model, sg.tensors[t.weights]).nbytes
        if t.bias >= 0:
            n += tensor_data(model, sg.tensors[t.bias]).nbytes
    return n


def _set_shape(t, shape: Sequence[int]) -> None:
    t.shape = np.asarray(shape, dtype=np.int32)
    if t.shapeSignature is not None:
        t.shapeSignature = np.asarray(shape, dtype=np.int32)


def slice_model(
    full: bytes,
    widths: Sequence[int],
    qparams: dict[int, tuple[np.ndarray, np.ndarray]] | None = None,
) -> bytes:
    """A submodel .tflite keeping the SHARED int8 weights' prefixes.

    ``widths``: the output width (channels / units) of every width-carrying op
    (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED) in execution order, i.e. the
    ``submodels.json`` layers in order. A depthwise width must equal its input
    width (tied); the last layer keeps its full output. Conv weights
    ``[O, kh, kw, I]`` keep ``[:o, :, :, :i]``, depthwise ``[1, kh, kw, C]`` keep
    ``[..., :c]``, a FULLY_CONNECTED after a flattened ``H x W x C`` map keeps
    the columns ``{(h, w, c): c < c_k}``; bias and per-channel scales are cut to
    the output width and every activation shape is cut to its active channels.

    ``qparams`` (per-submodel BatchNorm, see :mod:`reds_tf.quant.bnfold`): width
    layer index -> this submodel's (weight scales (O,) float32, bias (O,) int32),
    which replace the full model's (cut to the width); the int8 weights stay
    the shared ones.
    """
    qparams = qparams or {}
    model = read_model(full)
    sg = model.subgraphs[0]
    ops = width_ops(model)
    if len(ops) != len(widths):
        names = [op_name(model, sg.operators[t.op_index]) for t in ops]
        kinds = ", ".join(f"{names.count(n)} {n}" for n in WIDTH_OPS if n in names)
        raise RedsError(
            f"the model has {len(ops)} width-carrying layers ({kinds}), got {len(widths)} widths"
        )
    by_op = {t.op_index: (j, t) for j, t in enumerate(ops)}
    # Per activation tensor: active channels; for a flattened map also (H, W, C_full).
    active: dict[int, int] = {}
    flat_geom: dict[int, tuple[int, int, int]] = {}
    x0 = int(sg.inputs[0])
    active[x0] = int(sg.tensors[x0].shape[-1])
    full_c = {x0: active[x0]}  # unsliced channel count of each activation
    for i, op in enumerate(sg.operators):
        name = op_name(model, op)
        ins = [int(v) for v in op.inputs]
        out = int(op.outputs[0])
        x = ins[0]
        if x not in active:
            raise RedsError(f"operator {i} ({name}) does not read the previous layer's output")
        c_in = active[x]
        xt, yt = sg.tensors[x], sg.tensors[out]
        if name in WIDTH_OPS:
            j, t = by_op[i]
            o = int(widths[j])
            w = tensor_data(model, sg.tensors[t.weights])
            full_out = int(w.shape[-1] if name == "DEPTHWISE_CONV_2D" else w.shape[0])
            if not 0 < o <= full_out:
                raise RedsError(
                    f"layer {j} ({name}): width {o} outside the full shape (1..{full_out})"
                )
            if j == len(ops) - 1 and o != full_out:
                raise RedsError(f"the last layer must keep all {full_out} outputs, got {o}")
            if name == "CONV_2D":
                if w.shape[3] != full_c[x]:
                    raise RedsError(f"layer {j}: conv input channels differ from its weights")
                ws = w[:o, :, :, :c_in]
            elif name == "DEPTHWISE_CONV_2D":
                if o != c_in:
                    raise RedsError(
                        f"layer {j}: a depthwise width is tied to its input ({c_in}), got {o}"
                    )
                if w.shape[0] != 1 or full_out != full_c[x]:
                    raise RedsError(f"layer {j}: only depth multiplier 1 is supported")
                ws = w[..., :c_in]
            else:  # FULLY_CONNECTED
                geom = flat_geom.get(x)
                if geom is None and len(xt.shape) == 4:  # FC flattens a map itself
                    geom = (int(xt.shape[1]), int(xt.shape[2]), full_c[x])
                if geom is not None and int(np.prod(geom)) == w.shape[1]:
                    hh, ww, cc = geom
                    ws = w.reshape(full_out, hh, ww, cc)[:o, :, :, :c_in].reshape(o, -1)
                elif geom is None and len(xt.shape) == 2:
                    ws = w[:o, :c_in]
                else:
                    raise RedsError(f"layer {j}: FULLY_CONNECTED input shape not understood")
            inputs = list(ins)
            inputs[1] = _clone_tensor(model, t.weights, ws, o)
            own = qparams.get(j)
            if own is not None:  # this submodel's BN-folded scales and bias
                scales, bias = (np.asarray(v) for v in own)
                if t.bias < 0 or len(scales) != full_out or len(bias) != full_out:
                    raise RedsError(
                        f"layer {j}: per-submodel scales/bias must have {full_out} entries"
                    )
                sg.tensors[inputs[1]].quantization.scale = scales[:o].astype(np.float32).copy()
            if t.bias >= 0:
                b = tensor_data(model, sg.tensors[t.bias])
                if own is not None:
                    b = bias.astype(b.dtype)
                inputs[2] = _clone_tensor(model, t.bias, b[:o], o)
                bq = sg.tensors[inputs[2]].quantization
                if own is not None and bq is not None and bq.scale is not None:
                    # int32 bias scale = input scale * weight scale (informative in TFLM)
                    s_in = np.float64(xt.quantization.scale[0])
                    bq.scale = (s_in * scales[:o].astype(np.float64)).astype(np.float32)
                    bq.zeroPoint = np.zeros(o, np.int64)
            op.inputs = np.asarray(inputs, dtype=np.int32)
            shape = [int(d) for d in yt.shape]
            if shape[-1] != full_out:
                raise RedsError(f"layer {j}: unexpected output shape {shape}")
            _set_shape(yt, shape[:-1] + [o])
            active[out] = o
            full_c[out] = full_out
        elif name in POOL_OPS:
            _set_shape(yt, [int(d) for d in yt.shape[:-1]] + [c_in])
            active[out] = c_in
            full_c[out] = full_c[x]
        elif name == "RESHAPE" and _keeps_channels(xt, yt, full_c[x]):
            # (1, T, C) -> (1, 1, T, C) of a Conv1D model: the channels stay last
            shape = [int(d) for d in yt.shape[:-1]] + [c_in]
            _set_shape(yt, shape)
            _set_new_shape(model, op, ins, shape)
            active[out] = c_in
            full_c[out] = full_c[x]
        elif name == "RESHAPE":
            if len(xt.shape) not in (3, 4) or len(yt.shape) != 2:
                raise RedsError(
                    "only RESHAPE of a [1, H, W, C] map or a [1, T, C] input to [1, N] (Flatten), "
                    "or keeping the channel axis, is supported"
                )
            xs = [int(d) for d in xt.shape]
            hh, ww = (xs[1], xs[2]) if len(xs) == 4 else (1, xs[1])
            cc = full_c[x]
            n = hh * ww * c_in
            _set_shape(yt, [int(yt.shape[0]), n])
            if len(ins) > 1 and ins[1] >= 0:  # the constant new-shape input
                shp = tensor_data(model, sg.tensors[ins[1]]).copy()
                shp[-1] = n
                inputs = list(ins)
                inputs[1] = _clone_tensor(model, ins[1], shp, 0)
                op.inputs = np.asarray(inputs, dtype=np.int32)
            opts = op.builtinOptions
            if opts is not None and getattr(opts, "newShape", None) is not None:
                ns = np.asarray(opts.newShape, np.int32).copy()
                ns[-1] = n
                opts.newShape = ns
            active[out] = c_in
            full_c[out] = full_c[x]
            flat_geom[out] = (hh, ww, cc)
        elif name == "ADD":
            x2 = ins[1]
            if x2 not in active:
                raise RedsError(f"operator {i} (ADD) reads a tensor no earlier operator wrote")
            if active[x2] != c_in or full_c[x2] != full_c[x]:
                raise RedsError(
                    f"operator {i} (ADD) adds {c_in} and {active[x2]} active channels; the "
                    "layers an Add joins must share one width (a tied group)"
                )
            _set_shape(yt, [int(d) for d in yt.shape[:-1]] + [c_in])
            active[out] = c_in
            full_c[out] = full_c[x]
        else:
            raise RedsError(f"operator {name} cannot be sliced (supported: {WIDTH_OPS + PASS_OPS})")
    _compact(model)
    _check_shapes(model)
    return write_model(model)


def _keeps_channels(xt, yt, full_in: int) -> bool:
    """A RESHAPE that keeps the channel (last) axis and the positions' order."""
    xs, ys = [int(d) for d in xt.shape], [int(d) for d in yt.shape]
    return len(ys) > 2 and ys[-1] == full_in and int(np.prod(xs[1:-1])) == int(np.prod(ys[1:-1]))


def _set_new_shape(model, op, ins: list[int], shape: list[int]) -> None:
    """Give a RESHAPE op the new output ``shape`` (its constant shape input and options)."""
    if len(ins) > 1 and ins[1] >= 0:  # the constant new-shape input
        inputs = list(ins)
        inputs[1] = _clone_tensor(model, ins[1], np.asarray(shape, np.int32), 0)
        op.inputs = np.asarray(inputs, dtype=np.int32)
    opts = op.builtinOptions
    if opts is not None and getattr(opts, "newShape", None) is not None:
        opts.newShape = np.asarray(shape, np.int32)


def _check_shapes(model) -> None:
    """Our own invariants, because TFLM would run inconsistent shapes out of bounds."""
    sg = model.subgraphs[0]
    for i, op in enumerate(sg.operators):
        name = op_name(model, op)
        ins = [int(v) for v in op.inputs]
        x, y = sg.tensors[ins[0]], sg.tensors[int(op.outputs[0])]
        xs, ys = [int(d) for d in x.shape], [int(d) for d in y.shape]
        if name in WIDTH_OPS:
            w = sg.tensors[ins[1]]
            wsh = [int(d) for d in w.shape]
            if name == "CONV_2D":
                n_out, n_in = wsh[0], wsh[3]
                ok = xs[-1] == n_in and ys[-1] == n_out
            elif name == "DEPTHWISE_CONV_2D":
                n_out = wsh[3]
                ok = xs[-1] == n_out and ys[-1] == n_out
            else:
                n_out = wsh[0]
                ok = int(np.prod(xs)) == wsh[1] and ys[-1] == n_out
            if not ok:
                raise AssertionError(f"op {i} ({name}): inconsistent shapes {xs} {wsh} {ys}")
            q = w.quantization
            if q is not None and q.scale is not None and len(q.scale) not in (1, n_out):
                raise AssertionError(f"op {i} ({name}): {len(q.scale)} scales for {n_out} channels")
            if len(ins) > 2 and ins[2] >= 0 and int(sg.tensors[ins[2]].shape[0]) != n_out:
                raise AssertionError(f"op {i} ({name}): bias length differs from {n_out}")
        elif name in POOL_OPS:
            if xs[-1] != ys[-1]:
                raise AssertionError(f"op {i} ({name}): channels differ {xs} {ys}")
        elif name == "ADD":
            x2 = [int(d) for d in sg.tensors[ins[1]].shape]
            if not xs == x2 == ys:
                raise AssertionError(f"op {i} ({name}): shapes differ {xs} {x2} {ys}")
        elif name == "RESHAPE":
            if int(np.prod(xs)) != int(np.prod(ys)):
                raise AssertionError(f"op {i} ({name}): sizes differ {xs} {ys}")
