"""Layer plan (IR) of the generated runtime, built from the int8 full model.

The plan is everything the templates need and nothing TensorFlow-specific:
per layer the op, per-submodel widths, quantisation parameters (already turned
into integer multipliers exactly as TFLite Micro does) and the weights in the
NESTED layout of docs/DESIGN.md, plus the arena layout. Ops are an open set:
``fully_connected`` and ``reshape`` exist now; conv/depthwise/pool layers add a
``LayerPlan`` kind and a template branch without touching the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from reds_tf.errors import RedsError, RunDirError
from reds_tf.quant import numerics, slicer

SUPPORTED_OPS = ("FULLY_CONNECTED", "RESHAPE")
_ACTIVATIONS = {0: "none", 1: "relu", 3: "relu6"}
ROW_GROUP = 4  # rows per group in the nested layout
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


@dataclass(eq=False)  # identity, not array comparison
class LayerPlan:
    """One runtime layer. ``kind`` is 'fully_connected' or 'reshape'.

    For fully_connected: ``in_widths``/``out_widths`` per submodel (K,),
    ``weights`` the nested flat int8 array (in_full * out_full,), ``bias``
    (out_full,) int32 or None, ``multiplier``/``shift`` (out_full,) int32.
    ``src``/``dst`` name the buffers ('input', 'output', 'a', 'b').
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

    @property
    def weight_bytes(self) -> int:
        """Bytes of weights + bias (the quantities counted as model parameters)."""
        n = 0 if self.weights is None else self.weights.nbytes
        return n + (0 if self.bias is None else self.bias.nbytes)

    def macs(self, k: int) -> int:
        return self.in_widths[k] * self.out_widths[k] if self.kind == "fully_connected" else 0

    def fc_quant(self, k: int) -> numerics.FcQuant:
        """Submodel k's layer as a NumPy reference (plain (o_k, i_k) weights)."""
        w = unnest_fc_weights(self.weights, self.in_widths, self.out_widths, k)
        q = numerics.FcQuant(
            w,
            self.bias,
            self.multiplier,
            self.shift,
            self.input_zero_point,
            self.output_zero_point,
            self.act_min,
            self.act_max,
        )
        return q.sliced(self.in_widths[k], self.out_widths[k])


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
    arena: dict[str, int] = field(default_factory=dict)

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
    def arena_bytes(self) -> int:
        return self.arena["total"]

    def macs(self, k: int) -> int:
        return sum(layer.macs(k) for layer in self.layers)

    def reference(self, x: np.ndarray, k: int) -> np.ndarray:
        """NumPy int8 reference of submodel k: (N, *input_shape) int8 -> (N, classes) int8."""
        h = np.asarray(x, np.int8).reshape(len(x), -1)
        for layer in self.layers:
            if layer.kind == "fully_connected":
                h = numerics.fc_int8(layer.fc_quant(k), h)
        return h


def _qparams(t) -> tuple[float, int]:
    q = t.quantization
    if q is None or q.scale is None or len(q.scale) != 1:
        raise RedsError(f"tensor {t.name!r} is not per-tensor quantised int8")
    return float(q.scale[0]), int(q.zeroPoint[0])


def _align4(n: int) -> int:
    return (n + 3) & ~3


def build_plan(full_tflite: bytes, submodels: dict[str, Any]) -> ModelPlan:
    """The runtime plan for the int8 full model and the ``submodels.json`` contract.

    FULLY_CONNECTED op j (execution order) is the j-th ``dense`` layer of
    ``submodels['layers']``; its output width in submodel k is
    ``submodels['submodels'][k]['widths'][name]``.
    """
    model = slicer.read_model(full_tflite)
    if len(model.subgraphs) != 1:
        raise RedsError(f"expected one subgraph, the model has {len(model.subgraphs)}")
    sg = model.subgraphs[0]
    names = [slicer.op_name(model, op) for op in sg.operators]
    bad = sorted({n for n in names if n not in SUPPORTED_OPS})
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

    dense = [ly for ly in submodels.get("layers", []) if ly.get("type") == "dense"]
    subs = submodels.get("submodels", [])
    if not subs:
        raise RunDirError("submodels.json lists no submodels")
    K = len(subs)
    n_fc = names.count("FULLY_CONNECTED")
    if n_fc != len(dense):
        raise RunDirError(
            f"the .tflite has {n_fc} FULLY_CONNECTED layers but submodels.json lists "
            f"{len(dense)} dense layers"
        )

    layers: list[LayerPlan] = []
    current = int(sg.inputs[0])
    width = [int(np.prod(t_in.shape[1:]))] * K  # active features per submodel
    fc_j = 0
    for op, name in zip(sg.operators, names, strict=True):
        if int(op.inputs[0]) != current:
            raise RedsError("only a chain of layers (each op feeding the next) is supported")
        if name == "RESHAPE":
            if _qparams(sg.tensors[int(op.inputs[0])]) != _qparams(sg.tensors[int(op.outputs[0])]):
                raise RedsError("RESHAPE with different input/output quantisation")
            layers.append(LayerPlan("reshape", "reshape", list(width), list(width)))
        else:  # FULLY_CONNECTED
            spec = dense[fc_j]
            lname = spec["name"]
            ins = [int(v) for v in op.inputs]
            tx, tw, ty = sg.tensors[ins[0]], sg.tensors[ins[1]], sg.tensors[int(op.outputs[0])]
            w = slicer.tensor_data(model, tw)
            if w.ndim != 2 or w.shape[0] != int(spec["units"]):
                raise RunDirError(
                    f"layer {lname}: .tflite weights {w.shape} do not match "
                    f"{spec['units']} units in submodels.json"
                )
            if w.shape[1] != width[-1]:
                raise RedsError(f"layer {lname}: {w.shape[1]} inputs, expected {width[-1]}")
            bias = None
            if len(ins) > 2 and ins[2] >= 0:
                bias = slicer.tensor_data(model, sg.tensors[ins[2]]).astype(np.int32)
            wq = tw.quantization
            w_scales = np.asarray(wq.scale, np.float32)
            if len(w_scales) == 1:  # per-tensor weights: one scale for every channel
                w_scales = np.full(w.shape[0], w_scales[0], np.float32)
            if np.any(np.asarray(wq.zeroPoint) != 0):
                raise RedsError(f"layer {lname}: weights must be symmetric (zero point 0)")
            x_scale, x_zp = _qparams(tx)
            y_scale, y_zp = _qparams(ty)
            mult, shift = numerics.channel_multipliers(x_scale, w_scales, y_scale)
            opts = op.builtinOptions
            act = _ACTIVATIONS.get(int(opts.fusedActivationFunction))
            if act is None:
                raise RedsError(
                    f"layer {lname}: fused activation {opts.fusedActivationFunction} unsupported"
                )
            lo, hi = numerics.activation_range(act, y_scale, y_zp)
            try:
                out_w = [int(s["widths"][lname]) for s in subs]
            except KeyError as e:
                raise RunDirError(f"submodels.json: a submodel has no width for {e}") from e
            if min(out_w) < 1:
                raise RunDirError(f"layer {lname}: every submodel needs at least 1 unit: {out_w}")
            if out_w[-1] != w.shape[0]:
                raise RunDirError(
                    f"layer {lname}: the last submodel must be the full model "
                    f"({w.shape[0]} units), got {out_w[-1]}"
                )
            if max(max(width), max(out_w)) > 65535:
                raise RedsError(f"layer {lname}: widths above 65535 are not supported")
            in_w = list(width)
            layers.append(
                LayerPlan(
                    lname,
                    "fully_connected",
                    in_w,
                    out_w,
                    activation=act,
                    weights=nest_fc_weights(w, in_w, out_w),
                    bias=bias,
                    multiplier=mult,
                    shift=shift,
                    input_zero_point=x_zp,
                    output_zero_point=y_zp,
                    output_scale=y_scale,
                    act_min=lo,
                    act_max=hi,
                )
            )
            width = out_w
            fc_j += 1
        current = int(op.outputs[0])
    if current != int(sg.outputs[0]):
        raise RedsError("the last operator does not produce the model output")
    if fc_j == 0:
        raise RedsError("the model has no FULLY_CONNECTED layer")

    plan = ModelPlan(
        name=str(submodels.get("name", "model")),
        input_shape=[int(d) for d in t_in.shape[1:]],
        num_classes=int(np.prod(t_out.shape[1:])),
        input_scale=in_scale,
        input_zero_point=in_zp,
        output_scale=out_scale,
        output_zero_point=out_zp,
        layers=layers,
        submodels=[dict(s) for s in subs],
    )
    _assign_buffers(plan)
    return plan


def _assign_buffers(plan: ModelPlan) -> None:
    """Ping-pong the activations between arena buffers 'a' and 'b'; the first
    compute layer reads the caller's input, the last writes the caller's output.
    Arena = a | b | FC scratch, each sized for the largest submodel."""
    compute = [ly for ly in plan.layers if ly.kind == "fully_connected"]
    src = "input"
    for ly in plan.layers:
        ly.src = src
        if ly.kind == "reshape":
            ly.dst = src  # same bytes, different shape: no copy
            continue
        ly.dst = "output" if ly is compute[-1] else ("a" if src != "a" else "b")
        src = ly.dst
    act = max([max(ly.out_widths) for ly in compute if ly.dst in ("a", "b")] + [0])
    scratch = max(4 * max(ly.out_widths) + 2 * max(ly.in_widths) + 4 for ly in compute)
    a = _align4(act)
    b = a if any(ly.dst == "b" for ly in compute) else 0
    plan.arena = {
        "a_offset": 0,
        "b_offset": a,
        "scratch_offset": a + b,
        "total": a + b + _align4(scratch),
    }
