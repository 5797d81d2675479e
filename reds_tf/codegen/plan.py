"""Layer plan (IR) of the generated runtime, built from the int8 full model.

The plan is everything the templates need and nothing TensorFlow-specific:
per layer the op, per-submodel widths, quantisation parameters (already turned
into integer multipliers exactly as TFLite Micro does) and the weights in the
NESTED layout of docs/DESIGN.md, plus the arena layout. Layer kinds:
``fully_connected`` (vector input), ``conv`` (standard conv, and a fully
connected layer after Flatten of an H x W map = a conv whose kernel covers the
map), ``pointwise`` (1x1, stride 1), ``depthwise``, ``avgpool``, ``maxpool`` and
``reshape`` (no code: same bytes). :func:`build_plan` lowers the .tflite
operators one by one through :data:`LOWER` (a small function per operator),
matching the width-carrying ones with the network's graph (:mod:`reds_tf.ir`),
and checks that the plan's MACs are the graph's. Memory planning happens in
ONE place, :mod:`reds_tf.memory`, through :func:`_assign_buffers`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from reds_tf import costs, ir, memory
from reds_tf.errors import RedsError, RunDirError
from reds_tf.quant import numerics, slicer

# Plan kind -> the cost model's kind (for the one MAC formula).
_COST_KINDS = {
    "fully_connected": ir.DENSE,
    "conv": ir.CONV,
    "pointwise": ir.CONV,
    "depthwise": ir.DEPTHWISE,
}
# Pooling ops -> plan kind; both keep the width (and quantisation) of their input.
POOL_KINDS = {"AVERAGE_POOL_2D": "avgpool", "MAX_POOL_2D": "maxpool"}
_ACTIVATIONS = {0: "none", 1: "relu", 3: "relu6"}
ROW_GROUP = 4  # rows per group in the nested layout
ADD_SCRATCH_BYTES = memory.ADD_SCRATCH_BYTES  # REDS_ADD_SCRATCH_BYTES (DSP tables)
COL_CHUNK = 4  # columns per chunk


def nested_strips(in_widths: Sequence[int], out_widths: Sequence[int]) -> list[tuple[int, ...]]:
    """The strips (r0, r1, c0, c1) of the nested layout, in storage order.

    For k = 0 .. K-1: R_k = rows [0, o_{k-1}) x cols [i_{k-1}, i_k), then
    B_k = rows [o_{k-1}, o_k) x cols [0, i_k). Empty strips are skipped.
    """
    strips = []
    ip = op = 0
    for i_k, o_k in zip(in_widths, out_widths, strict=True):
        if i_k < ip or o_k < op:
            raise RedsError(f"widths must not shrink from one submodel to the next: {in_widths}")
        for s in ((0, op, ip, i_k), (op, o_k, 0, i_k)):
            if s[1] > s[0] and s[3] > s[2]:
                strips.append(s)
        ip, op = i_k, o_k
    return strips


def _strip_order(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """Flat (row, col) indices of one strip in storage order: groups of 4 rows,
    chunks of 4 columns, row after row inside a chunk. Returns (n, 2) int64."""
    out = []
    for g in range(r0, r1, ROW_GROUP):
        rows = np.arange(g, min(g + ROW_GROUP, r1))
        for c in range(c0, c1, COL_CHUNK):
            cols = np.arange(c, min(c + COL_CHUNK, c1))
            rr, cc = np.meshgrid(rows, cols, indexing="ij")
            out.append(np.stack([rr.ravel(), cc.ravel()], axis=1))
    return np.concatenate(out) if out else np.zeros((0, 2), np.int64)


def nest_fc_weights(
    w: np.ndarray, in_widths: Sequence[int], out_widths: Sequence[int]
) -> np.ndarray:
    """W (out, in) int8 -> the flat nested array; submodel k reads its first
    ``in_widths[k] * out_widths[k]`` bytes."""
    if w.shape != (out_widths[-1], in_widths[-1]):
        raise RedsError(f"weights {w.shape} differ from the largest submodel's widths")
    idx = np.concatenate([_strip_order(*s) for s in nested_strips(in_widths, out_widths)])
    flat = w[idx[:, 0], idx[:, 1]]
    assert flat.size == w.size, "nested layout must hold every weight exactly once"
    return np.ascontiguousarray(flat, dtype=np.int8)


def unnest_fc_weights(
    flat: np.ndarray, in_widths: Sequence[int], out_widths: Sequence[int], k: int
) -> np.ndarray:
    """Rebuild submodel k's W (o_k, i_k) from the first i_k * o_k nested bytes."""
    strips = nested_strips(in_widths[: k + 1], out_widths[: k + 1])
    idx = np.concatenate([_strip_order(*s) for s in strips])
    w = np.zeros((out_widths[k], in_widths[k]), np.int8)
    w[idx[:, 0], idx[:, 1]] = flat[: len(idx)]
    return w


def conv_column_order(kh: int, kw: int, in_widths: Sequence[int]) -> np.ndarray:
    """The NESTED IM2COL column order of a conv: (ky, kx, c) per column, channel
    blocks [i_{b-1}, i_b) in submodel order, (ky, kx, c) inside a block.
    Returns (kh * kw * in_widths[-1], 3) int64; submodel k's columns are the
    first kh * kw * in_widths[k]."""
    cols = []
    prev = 0
    for i_b in in_widths:
        if i_b < prev:
            raise RedsError(f"widths must not shrink from one submodel to the next: {in_widths}")
        if i_b > prev:
            ky, kx, c = np.meshgrid(
                np.arange(kh), np.arange(kw), np.arange(prev, i_b), indexing="ij"
            )
            cols.append(np.stack([ky.ravel(), kx.ravel(), c.ravel()], axis=1))
        prev = i_b
    return np.concatenate(cols) if cols else np.zeros((0, 3), np.int64)


def nest_conv_weights(
    w: np.ndarray, in_widths: Sequence[int], out_widths: Sequence[int]
) -> np.ndarray:
    """Conv weights (O, kh, kw, I) int8 -> the flat nested array (docs/DESIGN.md):
    the FC nested layout over the nested im2col columns."""
    o, kh, kw, i = w.shape
    if (o, i) != (out_widths[-1], in_widths[-1]):
        raise RedsError(f"conv weights {w.shape} differ from the largest submodel's widths")
    cols = conv_column_order(kh, kw, in_widths)
    mat = w[:, cols[:, 0], cols[:, 1], cols[:, 2]]  # (O, kh*kw*I)
    return nest_fc_weights(mat, [kh * kw * v for v in in_widths], out_widths)


def nest_depthwise_weights(w: np.ndarray) -> np.ndarray:
    """Depthwise weights (kh, kw, C) -> channel-major [c][ky][kx] (a prefix per width)."""
    return np.ascontiguousarray(np.transpose(w, (2, 0, 1)).reshape(-1), dtype=np.int8)


@dataclass(eq=False)  # identity, not array comparison
class LayerPlan:
    """One runtime layer. ``kind``: 'fully_connected', 'conv', 'pointwise',
    'depthwise', 'avgpool', 'maxpool', 'add' (residual join: two inputs of one
    width, :attr:`add` its rescaling, :attr:`src2` its second input) or 'reshape'.

    ``in_widths``/``out_widths``: active input/output channels (units) per
    submodel (K,). ``weights``: the nested flat int8 array. ``bias`` /
    ``multiplier`` / ``shift``: (out_full,) int32 shared by all submodels, or
    (K, out_full) with one row per submodel (per-submodel BatchNorm).
    ``full_weights``: the plain TFLite-order weights ((O, I) for FC,
    (O, kh, kw, I) for conv, (kh, kw, C) for depthwise), for the NumPy
    reference only. Geometry: ``in_hw``, ``out_hw``, ``kernel``, ``stride``,
    ``padding`` (leading TFLite offsets). ``src``/``dst``: C expressions of the
    input/output buffers (set by :func:`_assign_buffers`).
    """

    name: str
    kind: str
    in_widths: list[int]
    out_widths: list[int]
    activation: str = "none"
    weights: np.ndarray | None = None
    bias: np.ndarray | None = None
    multiplier: np.ndarray | None = None
    shift: np.ndarray | None = None
    input_zero_point: int = 0
    output_zero_point: int = 0
    output_scale: float = 1.0
    act_min: int = -128
    act_max: int = 127
    src: str = "input"
    dst: str = "output"
    src2: str = ""  # add: the second input's buffer
    slot: int = -1  # row of the per-submodel placement table (compute layers)
    add: numerics.AddQuant | None = None  # add: TFLite's rescaling of both inputs
    # .tflite tensor indices of the activation inputs and the output (the DAG)
    inputs: tuple[int, ...] = ()
    output: int = -1
    full_weights: np.ndarray | None = None
    in_hw: tuple[int, int] = (1, 1)
    out_hw: tuple[int, int] = (1, 1)
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)

    @property
    def per_submodel(self) -> bool:
        """Whether bias/multiplier/shift hold one row per submodel."""
        return self.multiplier is not None and self.multiplier.ndim == 2

    @property
    def qparam_stride(self) -> int:
        return int(self.multiplier.shape[1]) if self.per_submodel else 0

    @property
    def weight_bytes(self) -> int:
        """Bytes of weights + bias (the quantities counted as model parameters);
        with per-submodel rows one bias row counts (the others are in
        :attr:`extra_qparam_bytes`)."""
        n = 0 if self.weights is None else self.weights.nbytes
        if self.bias is not None:
            n += self.bias[-1].nbytes if self.bias.ndim == 2 else self.bias.nbytes
        return n

    @property
    def extra_qparam_bytes(self) -> int:
        """Bytes of the per-submodel bias/multiplier/shift rows beyond one shared
        set (0 without per-submodel BatchNorm)."""
        if not self.per_submodel:
            return 0
        arrays = [a for a in (self.bias, self.multiplier, self.shift) if a is not None]
        return sum(a.nbytes - a[-1].nbytes for a in arrays)

    def out_bytes(self, k: int) -> int:
        """int8 output bytes of submodel k."""
        return self.out_hw[0] * self.out_hw[1] * self.out_widths[k]

    def in_bytes(self, k: int) -> int:
        return self.in_hw[0] * self.in_hw[1] * self.in_widths[k]

    def macs(self, k: int) -> int:
        """Submodel k's MACs (:func:`reds_tf.costs.macs`; pooling and reshape: 0)."""
        kind = _COST_KINDS.get(self.kind)
        if kind is None:
            return 0
        per = 1 if kind == ir.DENSE else costs.conv_macs_per_pair(self.kernel, self.out_hw)
        return costs.macs(kind, per, self.in_widths[k], self.out_widths[k])

    def scratch_bytes(self, k: int = -1) -> int:
        """Kernel scratch of submodel k, by default the largest (REDS_*_SCRATCH_BYTES)."""
        i, o = self.in_widths[k], self.out_widths[k]
        if self.kind == "fully_connected":
            return 4 * o + 2 * i + 4
        if self.kind in ("conv", "pointwise"):
            return 4 * o + 2 * self.kernel[0] * self.kernel[1] * i + 4
        if self.kind == "add":
            return ADD_SCRATCH_BYTES
        return 0

    def _qrow(self, a: np.ndarray | None, k: int) -> np.ndarray | None:
        if a is None:
            return None
        return a[k] if a.ndim == 2 else a

    def fc_quant(self, k: int) -> numerics.FcQuant:
        """Submodel k's FC layer as a NumPy reference (plain (o_k, i_k) weights),
        rebuilt from the nested array."""
        w = unnest_fc_weights(self.weights, self.in_widths, self.out_widths, k)
        q = numerics.FcQuant(
            w,
            self._qrow(self.bias, k),
            self._qrow(self.multiplier, k),
            self._qrow(self.shift, k),
            self.input_zero_point,
            self.output_zero_point,
            self.act_min,
            self.act_max,
        )
        return q.sliced(self.in_widths[k], self.out_widths[k])

    def conv_quant(self, k: int) -> numerics.ConvQuant:
        """Submodel k's conv / pointwise / depthwise layer as a NumPy reference."""
        i, o = self.in_widths[k], self.out_widths[k]
        dw = self.kind == "depthwise"
        w = self.full_weights[..., :o] if dw else self.full_weights[:o, :, :, :i]
        b = self._qrow(self.bias, k)
        return numerics.ConvQuant(
            w,
            None if b is None else b[:o],
            self._qrow(self.multiplier, k)[:o],
            self._qrow(self.shift, k)[:o],
            self.stride,
            self.padding,
            self.out_hw,
            self.input_zero_point,
            self.output_zero_point,
            self.act_min,
            self.act_max,
            depthwise=dw,
        )


@dataclass
class ModelPlan:
    """The whole runtime: layers in execution order plus model-level constants."""

    name: str
    input_shape: list[int]
    num_classes: int
    input_scale: float
    input_zero_point: int
    output_scale: float
    output_zero_point: int
    layers: list[LayerPlan]
    submodels: list[dict[str, Any]] = field(default_factory=list)
    arena: dict[str, Any] = field(default_factory=dict)
    placements: list[memory.Placement] = field(default_factory=list)
    # pointwise layers run fused with the depthwise layer that reads them
    fused: frozenset[str] = frozenset()
    # (first, last) layer names of the streams (memory.stream): run as one step
    streams: tuple[tuple[str, str], ...] = ()

    @property
    def num_submodels(self) -> int:
        return len(self.submodels)

    @property
    def input_size(self) -> int:
        return int(np.prod(self.input_shape))

    @property
    def weight_bytes(self) -> int:
        return sum(layer.weight_bytes for layer in self.layers)

    @property
    def extra_qparam_bytes(self) -> int:
        """Per-submodel requantisation rows beyond one shared set (per-submodel BN)."""
        return sum(layer.extra_qparam_bytes for layer in self.layers)

    @property
    def arena_bytes(self) -> int:
        return self.arena["total"]

    def macs(self, k: int) -> int:
        return sum(layer.macs(k) for layer in self.layers)

    @property
    def fingerprint(self) -> str:
        """16 hex digits of a SHA-256 over everything that decides the runtime's
        numbers: per layer its kind, widths, geometry, zero points, clamps, the
        nested int8 weights and the int32 bias / multiplier / shift arrays, and
        the model's input/output shape and quantisation. The model name is left
        out (a renamed copy computes the same). The firmware's ``info`` reply
        reports it (REDS_MODEL_FINGERPRINT), the manifest records it, and
        ``reds monitor --demo`` refuses a device whose fingerprint differs."""
        h = hashlib.sha256()

        def add_json(obj: Any) -> None:
            data = json.dumps(obj, sort_keys=True).encode()
            h.update(len(data).to_bytes(8, "little") + data)

        def add_array(a: np.ndarray | None, dtype: str) -> None:
            if a is None:
                add_json(None)
                return
            add_json([list(a.shape), dtype])
            h.update(np.ascontiguousarray(a, dtype=dtype).tobytes())

        add_json(
            {
                "input_shape": [int(d) for d in self.input_shape],
                "num_classes": int(self.num_classes),
                "input": [float(np.float32(self.input_scale)), int(self.input_zero_point)],
                "output": [float(np.float32(self.output_scale)), int(self.output_zero_point)],
                "submodels": self.num_submodels,
            }
        )
        for ly in self.layers:
            add_json(
                {
                    "kind": ly.kind,
                    "in_widths": [int(w) for w in ly.in_widths],
                    "out_widths": [int(w) for w in ly.out_widths],
                    "activation": ly.activation,
                    "zero_points": [int(ly.input_zero_point), int(ly.output_zero_point)],
                    "clamp": [int(ly.act_min), int(ly.act_max)],
                    "geometry": [
                        [int(v) for v in t]
                        for t in (ly.in_hw, ly.out_hw, ly.kernel, ly.stride, ly.padding)
                    ],
                }
            )
            if ly.add is not None:
                add_json(dataclasses.asdict(ly.add))
            add_array(ly.weights, "<i1")
            add_array(ly.bias, "<i4")
            add_array(ly.multiplier, "<i4")
            add_array(ly.shift, "<i4")
        return h.hexdigest()[:16]

    def reference(self, x: np.ndarray, k: int) -> np.ndarray:
        """NumPy int8 reference of submodel k: (N, *input_shape) int8 -> (N, classes) int8."""
        h = np.asarray(x, np.int8)
        h = h.reshape(len(h), *self.input_shape) if len(self.input_shape) == 3 else h
        x0, seen = h, {}  # the DAG: every layer's output by tensor index
        for ly in self.layers:
            h = seen.get(ly.inputs[0], x0) if ly.inputs else h
            if ly.kind == "add":
                h2 = seen.get(ly.inputs[1], x0)
                h = numerics.add_int8(ly.add, h, h2.reshape(h.shape))
            if ly.kind == "fully_connected":
                h = numerics.fc_int8(ly.fc_quant(k), h.reshape(len(h), -1))
            elif ly.kind in ("conv", "pointwise", "depthwise"):
                if h.ndim != 4:  # a flat map (FC after Flatten) or a (T, C) input
                    h = h.reshape(len(h), *ly.in_hw, -1)
                h = numerics.conv_int8(ly.conv_quant(k), h)
            elif ly.kind in ("avgpool", "maxpool"):
                h = h.reshape(len(h), *ly.in_hw, -1)
                pool = numerics.avgpool_int8 if ly.kind == "avgpool" else numerics.maxpool_int8
                h = pool(h, ly.kernel, ly.stride, ly.padding, ly.out_hw, ly.act_min, ly.act_max)
            seen[ly.output] = h
        return h.reshape(len(h), -1)


def _qparams(t) -> tuple[float, int]:
    q = t.quantization
    if q is None or q.scale is None or len(q.scale) != 1:
        raise RedsError(f"tensor {t.name!r} is not per-tensor quantised int8")
    return float(q.scale[0]), int(q.zeroPoint[0])


def _align4(n: int) -> int:
    return (n + 3) & ~3


def _activation(op, lname: str) -> str:
    opts = op.builtinOptions
    code = int(getattr(opts, "fusedActivationFunction", 0)) if opts is not None else 0
    act = _ACTIVATIONS.get(code)
    if act is None:
        raise RedsError(f"layer {lname}: fused activation {code} unsupported")
    return act


def _geometry(op, in_hw, kernel, out_hw) -> tuple[tuple[int, int], tuple[int, int]]:
    """(stride, leading padding) of a conv/pool op, checked against the shapes."""
    opts = op.builtinOptions
    stride = (int(opts.strideH), int(opts.strideW))
    for name in ("dilationHFactor", "dilationWFactor"):
        if int(getattr(opts, name, 1) or 1) != 1:
            raise RedsError("dilated convolutions are not supported")
    if int(opts.padding) == 0:  # SAME
        want = tuple(-(-i // s) for i, s in zip(in_hw, stride, strict=True))
        pad = tuple(
            numerics.same_padding(i, f, s, o)
            for i, f, s, o in zip(in_hw, kernel, stride, out_hw, strict=True)
        )
    else:  # VALID
        want = tuple((i - f) // s + 1 for i, f, s in zip(in_hw, kernel, stride, strict=True))
        pad = (0, 0)
    if tuple(out_hw) != want:
        raise RedsError(f"output size {out_hw} inconsistent with input {in_hw} and stride")
    return stride, pad  # type: ignore[return-value]


@dataclass
class _Lowering:
    """State of the walk over the int8 operators in execution order: ``shape``,
    ``width`` and ``flat_of`` describe the tensor the current operator reads
    (set from ``state``, every activation written so far)."""

    model: Any  # the .tflite ModelT
    graph: ir.Graph
    qparams: dict[str, tuple[np.ndarray, np.ndarray]]  # popped as they are used
    shape: list[int]  # full shape of the current activation
    width: list[int]  # its active channels (or features) per submodel
    flat_of: tuple[int, int] | None = None  # (H, W) when the vector is a flattened map
    j: int = 0  # the next width-carrying node of the graph
    n_layers: int = 0  # layers lowered so far
    # tensor index -> (full shape, width per submodel, flat_of) of every activation so far
    state: dict[int, tuple[list[int], list[int], tuple[int, int] | None]] = field(
        default_factory=dict
    )

    @property
    def K(self) -> int:
        return len(self.graph.submodels)

    def tensors(self, op) -> tuple[list[int], Any, Any, list[int]]:
        """(input indices, input tensor, output tensor, full output shape) of ``op``."""
        sg = self.model.subgraphs[0]
        ins = [int(v) for v in op.inputs]
        ty = sg.tensors[int(op.outputs[0])]
        return ins, sg.tensors[ins[0]], ty, [int(d) for d in ty.shape[1:]]


def _map_hw(shape: Sequence[int]) -> tuple[int, int]:
    """``(H, W)`` of an activation: a map ``(H, W, C)``, a ``(T, C)`` input as
    ``(1, T)``, a vector as ``(1, 1)``."""
    if len(shape) == 3:
        return int(shape[0]), int(shape[1])
    return (1, int(shape[0])) if len(shape) == 2 else (1, 1)


def _lower_reshape(lw: _Lowering, op, opname: str) -> LayerPlan:
    """RESHAPE (no code: the same bytes): Flatten of a map or of a ``(T, C)``
    input, or a reshape that keeps the channel axis (a ``(T, C)`` input as the
    ``(1, T, C)`` map of a Conv1D model)."""
    _, tx, ty, y_shape = lw.tensors(op)
    shape = lw.shape
    if _qparams(tx) != _qparams(ty):
        raise RedsError("RESHAPE with different input/output quantisation")
    in_hw, out_hw = _map_hw(shape), _map_hw(y_shape)
    if len(shape) in (2, 3) and len(y_shape) == 1:
        lw.flat_of = in_hw
        out_hw = in_hw
    elif y_shape[-1] != shape[-1] or in_hw[0] * in_hw[1] != out_hw[0] * out_hw[1]:
        raise RedsError(
            f"RESHAPE {shape} -> {y_shape} is not supported (Flatten, or one keeping the channels)"
        )
    return LayerPlan(
        "reshape", "reshape", list(lw.width), list(lw.width), in_hw=in_hw, out_hw=out_hw
    )


def _lower_pool(lw: _Lowering, op, opname: str) -> LayerPlan:
    """AVERAGE_POOL_2D / MAX_POOL_2D: per channel, keeps its input's width."""
    kind = POOL_KINDS[opname]
    _, tx, ty, y_shape = lw.tensors(op)
    if _qparams(tx) != _qparams(ty):
        raise RedsError(f"{opname} with different input/output quantisation")
    o = op.builtinOptions
    kernel = (int(o.filterHeight), int(o.filterWidth))
    in_hw, out_hw = (lw.shape[0], lw.shape[1]), (y_shape[0], y_shape[1])
    stride, pad = _geometry(op, in_hw, kernel, out_hw)
    y_scale, y_zp = _qparams(ty)
    lo, hi = numerics.activation_range(_activation(op, kind), y_scale, y_zp)
    return LayerPlan(
        f"pool{lw.n_layers}", kind, list(lw.width), list(lw.width), act_min=lo, act_max=hi,
        in_hw=in_hw, out_hw=out_hw, kernel=kernel, stride=stride, padding=pad,
    )  # fmt: skip


@dataclass
class _WidthOp:
    """What every width-carrying op shares: its graph node, int8 weights, the
    per-submodel widths and the LayerPlan keywords of its requantisation."""

    node: ir.Node
    w: np.ndarray
    units: int
    in_w: list[int]
    out_w: list[int]
    common: dict[str, Any]


def _width_op(lw: _Lowering, op, opname: str) -> _WidthOp:
    """Match ``op`` with the graph's next width-carrying node and read its
    weights, bias, multipliers / shifts (per submodel with per-submodel BN) and
    activation clamp; check the widths."""
    sg = lw.model.subgraphs[0]
    ins, tx, ty, _ = lw.tensors(op)
    node = lw.graph.width_nodes[lw.j]
    lname = node.name
    if node.kind != slicer.OP_KINDS[opname]:
        raise RunDirError(
            f"layer {lw.j} of submodels.json ({lname}, type {node.kind!r}) does not "
            f"match the .tflite operator {opname}"
        )
    w = slicer.tensor_data(lw.model, sg.tensors[ins[1]])
    units = int(w.shape[-1] if opname == "DEPTHWISE_CONV_2D" else w.shape[0])
    if units != node.units:
        raise RunDirError(
            f"layer {lname}: .tflite weights {w.shape} do not match "
            f"{node.units} units in submodels.json"
        )
    bias = None
    if len(ins) > 2 and ins[2] >= 0:
        bias = slicer.tensor_data(lw.model, sg.tensors[ins[2]]).astype(np.int32)
    wq = sg.tensors[ins[1]].quantization
    w_scales = np.asarray(wq.scale, np.float32)
    if len(w_scales) == 1:  # per-tensor weights: one scale for every channel
        w_scales = np.full(units, w_scales[0], np.float32)
    if np.any(np.asarray(wq.zeroPoint) != 0):
        raise RedsError(f"layer {lname}: weights must be symmetric (zero point 0)")
    x_scale, x_zp = _qparams(tx)
    y_scale, y_zp = _qparams(ty)
    mult, shift = numerics.channel_multipliers(x_scale, w_scales, y_scale)
    K = lw.K
    own = lw.qparams.pop(lname, None)
    if own is not None:  # one row per submodel: its own BN-folded scales and bias
        if opname not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            raise RedsError(f"layer {lname}: per-submodel requantisation needs a convolution")
        o_scales, o_bias = (np.asarray(v) for v in own)
        if o_scales.shape != (K, units) or o_bias.shape != (K, units) or bias is None:
            raise RedsError(f"layer {lname}: per-submodel scales/bias must be ({K}, {units})")
        rows = [numerics.channel_multipliers(x_scale, r, y_scale) for r in o_scales]
        mult = np.stack([m for m, _ in rows])
        shift = np.stack([sh for _, sh in rows])
        bias = o_bias.astype(np.int32)
    act = _activation(op, lname)
    lo, hi = numerics.activation_range(act, y_scale, y_zp)
    try:
        out_w = [int(s.widths[lname]) for s in lw.graph.submodels]
    except KeyError as e:
        raise RunDirError(f"submodels.json: a submodel has no width for {e}") from e
    if min(out_w) < 1:
        raise RunDirError(f"layer {lname}: every submodel needs at least 1 unit: {out_w}")
    if out_w[-1] != units:
        raise RunDirError(
            f"layer {lname}: the last submodel must be the full model "
            f"({units} units), got {out_w[-1]}"
        )
    if max(max(lw.width), max(out_w)) > 65535:
        raise RedsError(f"layer {lname}: widths above 65535 are not supported")
    common = dict(
        activation=act, bias=bias, multiplier=mult, shift=shift, input_zero_point=x_zp,
        output_zero_point=y_zp, output_scale=y_scale, act_min=lo, act_max=hi,
    )  # fmt: skip
    lw.j += 1
    return _WidthOp(node, w, units, list(lw.width), out_w, common)


def _conv_geometry(lw: _Lowering, op, wo: _WidthOp):
    """(in_hw, out_hw, kernel, stride, padding) of a CONV_2D / DEPTHWISE_CONV_2D,
    checked against the graph's geometry where ``submodels.json`` records it."""
    _, _, _, y_shape = lw.tensors(op)
    kernel = (int(wo.w.shape[1]), int(wo.w.shape[2]))
    in_hw, out_hw = (lw.shape[0], lw.shape[1]), (y_shape[0], y_shape[1])
    stride, pad = _geometry(op, in_hw, kernel, out_hw)
    n = wo.node
    if n.kernel is not None:
        recorded = (n.kernel, n.strides or stride, n.out_hw or out_hw)
        if recorded != (kernel, stride, out_hw):
            raise RunDirError(
                f"layer {n.name}: submodels.json records (kernel, strides, output) {recorded}, "
                f"the .tflite has {(kernel, stride, out_hw)}; re-run `reds train`"
            )
    return in_hw, out_hw, kernel, stride, pad


def _lower_depthwise(lw: _Lowering, op, opname: str) -> LayerPlan:
    """DEPTHWISE_CONV_2D (multiplier 1): weights channel-major, width tied to its input."""
    wo = _width_op(lw, op, opname)
    if wo.out_w != wo.in_w:
        raise RunDirError(
            f"layer {wo.node.name}: a depthwise width must equal its input width in every "
            f"submodel ({wo.in_w}), got {wo.out_w}"
        )
    if wo.w.shape[0] != 1 or wo.units != lw.shape[-1]:
        raise RedsError(f"layer {wo.node.name}: only depth multiplier 1 is supported")
    in_hw, out_hw, kernel, stride, pad = _conv_geometry(lw, op, wo)
    lw.width = wo.out_w
    w = wo.w[0]
    return LayerPlan(
        wo.node.name, "depthwise", wo.in_w, wo.out_w, weights=nest_depthwise_weights(w),
        full_weights=w, in_hw=in_hw, out_hw=out_hw, kernel=kernel, stride=stride, padding=pad,
        **wo.common,
    )  # fmt: skip


def _lower_conv(lw: _Lowering, op, opname: str) -> LayerPlan:
    """CONV_2D: nested im2col layout; 1x1 stride 1 is the pointwise kernel."""
    wo = _width_op(lw, op, opname)
    if wo.w.shape[3] != lw.shape[-1]:
        raise RedsError(
            f"layer {wo.node.name}: {wo.w.shape[3]} input channels, expected {lw.shape[-1]}"
        )
    in_hw, out_hw, kernel, stride, pad = _conv_geometry(lw, op, wo)
    pointwise = kernel == (1, 1) and stride == (1, 1)
    lw.width = wo.out_w
    return LayerPlan(
        wo.node.name, "pointwise" if pointwise else "conv", wo.in_w, wo.out_w,
        weights=nest_conv_weights(wo.w, wo.in_w, wo.out_w), full_weights=wo.w, in_hw=in_hw,
        out_hw=out_hw, kernel=kernel, stride=stride, padding=pad, **wo.common,
    )  # fmt: skip


def _lower_fully_connected(lw: _Lowering, op, opname: str) -> LayerPlan:
    """FULLY_CONNECTED on a vector, or after Flatten of an H x W map with sliced
    channels: a conv whose kernel covers the map (docs/DESIGN.md)."""
    wo = _width_op(lw, op, opname)
    w, in_w, out_w, name = wo.w, wo.in_w, wo.out_w, wo.node.name
    shape = lw.shape
    if len(shape) == 3 and shape[0] * shape[1] == 1:
        shape = [shape[2]]  # a 1x1 map is a vector already
    elif len(shape) == 3:
        lw.flat_of = (shape[0], shape[1])
        shape = [int(np.prod(shape))]
    if w.shape[1] != shape[0]:
        raise RedsError(f"layer {name}: {w.shape[1]} inputs, expected {shape[0]}")
    flat_of, lw.flat_of, lw.width = lw.flat_of, None, out_w
    if flat_of is not None and flat_of != (1, 1) and len(set(in_w)) > 1:
        # Dense after Flatten of an H x W x C map whose channels are sliced:
        # a conv covering the map (with one channel width it is a plain FC).
        hh, ww = flat_of
        w4 = w.reshape(wo.units, hh, ww, -1)
        return LayerPlan(
            name, "conv", in_w, out_w, weights=nest_conv_weights(w4, in_w, out_w),
            full_weights=w4, in_hw=(hh, ww), out_hw=(1, 1), kernel=(hh, ww), **wo.common,
        )  # fmt: skip
    if flat_of is not None:  # features of the flattened map
        in_w = [flat_of[0] * flat_of[1] * c for c in in_w]
    return LayerPlan(
        name, "fully_connected", in_w, out_w, weights=nest_fc_weights(w, in_w, out_w),
        full_weights=w, **wo.common,
    )  # fmt: skip


def _lower_add(lw: _Lowering, op, opname: str) -> LayerPlan:
    """ADD of two maps of one shape (a residual join): both inputs have one width
    in every submodel (a tied group); TFLite's rescaling of each input and of
    the sum (:class:`reds_tf.quant.numerics.AddQuant`), fused activation clamp."""
    ins, tx, ty, y_shape = lw.tensors(op)
    sg = lw.model.subgraphs[0]
    shape2, width2, _ = lw.state[ins[1]]
    if list(shape2) != list(lw.shape) or list(y_shape) != list(lw.shape):
        raise RedsError(f"ADD of shapes {lw.shape} and {shape2}: only equal shapes are supported")
    if list(width2) != list(lw.width):
        raise RedsError(
            f"ADD joins widths {lw.width} and {width2}; the layers an Add joins must share one "
            "width in every submodel (a tied group): re-run `reds train`"
        )
    y_scale, y_zp = _qparams(ty)
    act = _activation(op, "add")
    lo, hi = numerics.activation_range(act, y_scale, y_zp)
    q = numerics.AddQuant.from_scales(_qparams(tx), _qparams(sg.tensors[ins[1]]), (y_scale, y_zp),
                                      lo, hi)  # fmt: skip
    hw = _map_hw(lw.shape)
    return LayerPlan(
        f"add{lw.n_layers}", "add", list(lw.width), list(lw.width), activation=act, add=q,
        output_zero_point=y_zp, output_scale=y_scale, act_min=lo, act_max=hi, in_hw=hw, out_hw=hw,
    )  # fmt: skip


#: The lowering table: .tflite operator -> its small lowering function (the
#: runtime's LayerPlan). Adding an op means adding a row here.
LOWER: dict[str, Callable[[_Lowering, Any, str], LayerPlan]] = {
    "CONV_2D": _lower_conv,
    "DEPTHWISE_CONV_2D": _lower_depthwise,
    "FULLY_CONNECTED": _lower_fully_connected,
    "AVERAGE_POOL_2D": _lower_pool,
    "MAX_POOL_2D": _lower_pool,
    "RESHAPE": _lower_reshape,
    "ADD": _lower_add,
}
SUPPORTED_OPS = tuple(LOWER)


ARENA_MODES = ("balanced", "smallest", "fastest")
# "balanced": a layer run row by row computes at least this many rows per kernel
# call (the DSP depthwise kernel repeats its set-up at every call).
BALANCED_ROWS = 2


def build_plan(
    full_tflite: bytes,
    submodels: ir.Graph | dict[str, Any],
    qparams: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    arena: str | int = "balanced",
) -> ModelPlan:
    """The runtime plan for the int8 full model and the network's graph (or the
    ``submodels.json`` document, read with :func:`reds_tf.ir.from_doc`).

    Every operator is lowered by its row of :data:`LOWER`. The width-carrying
    ops (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED) in execution order are
    the graph's width-carrying nodes in order (kinds, units and recorded
    geometry must match); layer j's output width in submodel k is
    ``graph.submodels[k].widths[name]``. The plan's MACs must equal the
    graph's (:func:`reds_tf.costs.graph_macs`: the cost model's count, or the
    MACs recorded in ``submodels.json``).

    ``qparams`` (per-submodel BatchNorm, :func:`reds_tf.quant.bnfold.per_submodel_qparams`):
    layer name -> (weight scales (K, O) float32, bias (K, O) int32); those
    layers get one row of bias / multiplier / shift per submodel
    (``qparam_stride``), the int8 weights stay the full model's.

    ``arena`` (:func:`_assign_buffers`): "balanced" (the least memory with at
    least two rows per kernel call), "smallest" (each submodel in the least
    memory, rows in place where needed), "fastest" (no in-place rows), or a
    number of bytes every submodel may use (faster with more room).
    """
    graph = submodels if isinstance(submodels, ir.Graph) else ir.from_doc(submodels)
    model = slicer.read_model(full_tflite)
    if len(model.subgraphs) != 1:
        raise RedsError(f"expected one subgraph, the model has {len(model.subgraphs)}")
    sg = model.subgraphs[0]
    names = [slicer.op_name(model, op) for op in sg.operators]
    bad = sorted({n for n in names if n not in LOWER})
    if bad:
        raise RedsError(
            f"unsupported operator(s) {', '.join(bad)} in the .tflite; the runtime "
            f"generator supports {', '.join(SUPPORTED_OPS)}"
        )
    if len(sg.inputs) != 1 or len(sg.outputs) != 1:
        raise RedsError("the model must have exactly one input and one output tensor")
    t_in, t_out = sg.tensors[int(sg.inputs[0])], sg.tensors[int(sg.outputs[0])]
    for t in (t_in, t_out):
        if slicer.tensor_type_name(t) != "INT8":
            raise RedsError(
                f"tensor {t.name!r} is {slicer.tensor_type_name(t)}; export needs int8 in/out"
            )
    in_scale, in_zp = _qparams(t_in)
    out_scale, out_zp = _qparams(t_out)

    if not graph.submodels:
        raise RunDirError("submodels.json lists no submodels")
    specs = graph.width_nodes
    n_width = sum(n in slicer.OP_KINDS for n in names)
    if n_width != len(specs):
        counts = ", ".join(f"{names.count(n)} {n}" for n in slicer.OP_KINDS if n in names)
        raise RunDirError(
            f"the .tflite has {n_width} width-carrying layers ({counts}) but submodels.json "
            f"lists {len(specs)} layers"
        )

    shape = [int(d) for d in t_in.shape[1:]]  # full shape of the current activation
    lw = _Lowering(model, graph, dict(qparams or {}), shape, [shape[-1]] * len(graph.submodels))
    layers: list[LayerPlan] = []
    lw.state[int(sg.inputs[0])] = (lw.shape, lw.width, None)
    # Execution order is a topological order: a chain, or a DAG joined by ADD.
    for i, (op, opname) in enumerate(zip(sg.operators, names, strict=True)):
        acts = [int(op.inputs[0])] + ([int(op.inputs[1])] if opname == "ADD" else [])
        if any(t not in lw.state for t in acts):
            raise RedsError(f"operator {i} ({opname}) reads a tensor no earlier operator wrote")
        lw.shape, lw.width, lw.flat_of = lw.state[acts[0]]
        ly = LOWER[opname](lw, op, opname)
        ly.inputs, ly.output = tuple(acts), int(op.outputs[0])
        layers.append(ly)
        lw.n_layers = len(layers)
        lw.state[ly.output] = (lw.tensors(op)[3], list(lw.width), lw.flat_of)
    if not layers or layers[-1].output != int(sg.outputs[0]):
        raise RedsError("the last operator does not produce the model output")
    if lw.j == 0:
        raise RedsError("the model has no CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED layer")
    if lw.qparams:
        raise RedsError(f"per-submodel qparams for unknown layer(s) {sorted(lw.qparams)}")

    plan = ModelPlan(
        name=graph.name,
        input_shape=[int(d) for d in t_in.shape[1:]],
        num_classes=int(np.prod(t_out.shape[1:])),
        input_scale=in_scale,
        input_zero_point=in_zp,
        output_scale=out_scale,
        output_zero_point=out_zp,
        layers=layers,
        submodels=[s.record(k) for k, s in enumerate(graph.submodels)],
    )
    for k, want in enumerate(costs.graph_macs(graph)):
        if want is not None and plan.macs(k) != want:
            raise RunDirError(
                f"submodel {k}: submodels.json / the model count {want:,} MACs, the int8 model "
                f"{plan.macs(k):,}; re-run `reds train`"
            )
    _assign_buffers(plan, arena)
    return plan


COMPUTE_KINDS = ("fully_connected", "conv", "pointwise", "depthwise", "avgpool", "maxpool", "add")


def memory_steps(plan: ModelPlan, k: int) -> list[memory.Step]:
    """Submodel k's compute layers as the memory planner sees them (a RESHAPE is
    the same bytes as its input; the model input is :data:`memory.EXTERNAL`)."""
    alias: dict[int, int] = {}
    steps: list[memory.Step] = []
    first_input = plan.layers[0].inputs[0] if plan.layers else memory.EXTERNAL

    def tensor(t: int) -> int:
        while t in alias:
            t = alias[t]
        return memory.EXTERNAL if t == first_input else t

    for ly in plan.layers:
        if ly.kind == "reshape":
            alias[ly.output] = ly.inputs[0]
            continue
        vector = ly.kind == "fully_connected"
        steps.append(
            memory.Step(
                name=ly.name,
                kind=ly.kind,
                inputs=tuple(tensor(t) for t in ly.inputs),
                output=ly.output,
                in_hw=(1, 1) if vector else tuple(ly.in_hw),
                out_hw=(1, 1) if vector else tuple(ly.out_hw),
                kernel_h=1 if vector else ly.kernel[0],
                stride_h=1 if vector else ly.stride[0],
                pad_top=0 if vector else ly.padding[0],
                in_width=ly.in_widths[k],
                out_width=ly.out_widths[k],
                scratch=ly.scratch_bytes(k),
            )
        )
    return steps


def fused_steps(plan: ModelPlan, k: int) -> list[memory.Step]:
    """Submodel k's steps as placed: :func:`memory_steps` with the plan's
    streams and fused pointwise + depthwise pairs merged
    (:func:`reds_tf.memory.arrange`)."""
    return memory.arrange(memory_steps(plan, k), plan.fused, plan.streams)


def _assign_buffers(plan: ModelPlan, arena: str | int = "balanced") -> None:
    """THE memory plan (:mod:`reds_tf.memory`): one placement per submodel, the
    arena sized for the largest. Each compute layer gets a slot index into the
    generated per-submodel placement table (a pointwise layer fused with its
    depthwise reader shares one); the first layer reads the caller's input, the
    last writes the caller's output. A submodel's ``memory_budget_bytes``
    (``submodels.json``) caps the arena ("fastest" or a byte count give it at
    most that) and keeps fusions that would exceed it out. Only "smallest"
    streams (:func:`reds_tf.memory.plan_streams`: one row per kernel call)."""
    K = plan.num_submodels
    if not (arena in ARENA_MODES or (isinstance(arena, int) and not isinstance(arena, bool))):
        raise RedsError(f"arena must be one of {', '.join(ARENA_MODES)} or a number of bytes")
    steps = [memory_steps(plan, k) for k in range(K)]
    caps = [plan.submodels[k].get("memory_budget_bytes") for k in range(K)]
    fused, smallest = memory.plan_submodels(steps, caps=caps)
    plan.streams = ()
    if arena == "smallest":  # streams too, where they lower the arena
        plan.streams, plan.fused, plan.placements = memory.plan_streams(
            steps, caps=caps, fused=fused, placements=smallest
        )
    else:
        if isinstance(arena, int) and arena < smallest[-1].arena_bytes:
            streamed = memory.plan_streams(steps, caps=caps, fused=fused, placements=smallest)
            raise RedsError(
                f"arena: {arena:,} bytes is below the full model's smallest arena without "
                f"streams ({smallest[-1].arena_bytes:,} bytes); give at least that, or "
                f"'smallest' ({streamed[2][-1].arena_bytes:,} bytes, streamed where that "
                "saves memory: slower)"
            )
        if arena == "balanced":
            options: dict[str, Any] = {"min_rows": BALANCED_ROWS}
            candidates = [memory.plan_submodels(steps, caps=caps, min_rows=BALANCED_ROWS)[0]]
        elif arena == "fastest":
            options, candidates = {"fastest": True}, [frozenset(), fused]
        else:  # a byte count fuses only when the unfused layers do not fit in it
            options = {"arena_bytes": arena}
            unfused = max(memory.plan(s).arena_bytes for s in steps)
            candidates = [fused] if arena < unfused else [frozenset(), fused]
        for pairs in candidates:
            plan.fused = pairs
            plan.placements = [memory.plan(memory.fuse(s, pairs), **options) for s in steps]

            def over(k: int) -> bool:
                return caps[k] is not None and plan.placements[k].arena_bytes > caps[k]

            for k in filter(over, range(K)):  # a memory budget bounds what the mode gives
                plan.placements[k] = memory.plan(
                    memory.fuse(steps[k], pairs), arena_bytes=max(int(caps[k]), 4)
                )
            if not any(map(over, range(K))):
                break
        else:  # only the smallest plan keeps every submodel within its budget
            plan.fused, plan.placements = fused, smallest
    per = [p.arena_bytes for p in plan.placements]
    plan.arena = {"total": max(per + [4]), "per_submodel": per}
    slots = plan.placements[-1].slots
    by_tensor: dict[int, str] = {}
    j = 0
    compute = [ly for ly in plan.layers if ly.kind != "reshape"]
    in_stream: dict[str, LayerPlan] = {}  # layer -> the first layer of its stream
    names = [ly.name for ly in compute]
    for first, last in plan.streams:
        for name in names[names.index(first) + 1 : names.index(last) + 1]:
            in_stream[name] = compute[names.index(first)]
    for i, ly in enumerate(compute):
        if ly.name in in_stream or (i > 0 and compute[i - 1].name in plan.fused):
            ly.slot = -1  # runs inside the stream or fused step of an earlier layer
            continue
        ly.slot = j
        sl = slots[j]
        ly.src = "input" if sl.src == memory.EXTERNAL else f"act + s[{j}].src"
        if ly.kind == "add":
            ly.src2 = "input" if sl.src2 == memory.EXTERNAL else f"act + s[{j}].src2"
        ly.dst = "output" if sl.dst == memory.EXTERNAL else f"act + s[{j}].dst"
        by_tensor[ly.output] = ly.dst
        j += 1
    for i, ly in enumerate(compute):  # a stream or fused step's output is its last layer's
        if ly.slot < 0:
            head = in_stream.get(ly.name, compute[i - 1])
            ly.src = ly.dst = head.dst
            by_tensor[ly.output] = ly.dst
    for ly in plan.layers:  # a RESHAPE names the same bytes as its input
        if ly.kind == "reshape":
            ly.src = ly.dst = by_tensor.get(ly.inputs[0], "input")
            by_tensor[ly.output] = ly.dst
