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


def slice_model(full: bytes, widths: Sequence[int]) -> bytes:
    """A submodel .tflite: FULLY_CONNECTED layer j keeps ``widths[j]`` output units.

    ``widths``: output width per FC op in execution order; the last one must be
    the full output width (the classifier is never pruned). The input width of
    FC j is the output width of FC j-1 (FC 0 keeps the model input).
    """
    model = read_model(full)
    sg = model.subgraphs[0]
    fcs = fully_connected_ops(model)
    if len(fcs) != len(widths):
        raise RedsError(
            f"the model has {len(fcs)} FULLY_CONNECTED layers, got {len(widths)} widths"
        )
    in_width: int | None = None
    for j, (fc, out_w) in enumerate(zip(fcs, widths, strict=True)):
        w = tensor_data(model, sg.tensors[fc.weights])
        full_out, full_in = w.shape
        i_w = full_in if in_width is None else in_width
        if not (0 < out_w <= full_out) or not (0 < i_w <= full_in):
            raise RedsError(
                f"FC layer {j}: widths ({i_w}, {out_w}) outside the full shape "
                f"({full_in}, {full_out})"
            )
        if j == len(fcs) - 1 and out_w != full_out:
            raise RedsError(f"the last layer must keep all {full_out} outputs, got {out_w}")
        if j > 0 and fcs[j - 1].output != fc.input:
            raise RedsError("only a chain of FULLY_CONNECTED layers can be sliced")
        op = sg.operators[fc.op_index]
        inputs = [int(v) for v in op.inputs]
        inputs[1] = _clone_tensor(model, fc.weights, w[:out_w, :i_w], out_w)
        if fc.bias >= 0:
            b = tensor_data(model, sg.tensors[fc.bias])
            inputs[2] = _clone_tensor(model, fc.bias, b[:out_w], out_w)
        op.inputs = np.asarray(inputs, dtype=np.int32)
        # The activation between layers: the only consumer is the next FC.
        out_t = sg.tensors[fc.output]
        if len(out_t.shape) != 2 or int(out_t.shape[1]) != full_out:
            raise RedsError(f"FC layer {j}: unexpected output shape {list(out_t.shape)}")
        out_t.shape = np.asarray([int(out_t.shape[0]), out_w], dtype=np.int32)
        if out_t.shapeSignature is not None:
            out_t.shapeSignature = np.asarray([int(out_t.shapeSignature[0]), out_w], np.int32)
        in_width = out_w
    _compact(model)
    _check_shapes(model)
    return write_model(model)


def _check_shapes(model) -> None:
    """Our own invariants, because TFLM would run inconsistent shapes out of bounds."""
    sg = model.subgraphs[0]
    for j, fc in enumerate(fully_connected_ops(model)):
        w = sg.tensors[fc.weights]
        x = sg.tensors[fc.input]
        y = sg.tensors[fc.output]
        n_out, n_in = (int(d) for d in w.shape)
        if int(np.prod(x.shape)) != n_in or int(y.shape[-1]) != n_out:
            raise AssertionError(f"FC {j}: inconsistent shapes after slicing")
        q = w.quantization
        if q is not None and q.scale is not None and len(q.scale) not in (1, n_out):
            raise AssertionError(f"FC {j}: {len(q.scale)} scales for {n_out} channels")
        if fc.bias >= 0 and int(sg.tensors[fc.bias].shape[0]) != n_out:
            raise AssertionError(f"FC {j}: bias length differs from {n_out}")
