"""Cost model: MACs and parameters of a network as functions of its layer widths.

A network is described by a list of :class:`CostLayer` in topological order.
Every layer has an output width (its number of units / channels); its input
width is the output width of its ``producer`` (or the fixed model input when
``producer`` is None). Costs are the TRUE costs of a prefix-sliced submodel:
when a layer keeps ``w_out`` of its units, its consumers' fan-in shrinks to
``w_out`` as well, so a dense layer costs ``w_in * w_out`` MACs (bilinear).

Layer kinds:

- ``dense``, ``conv``, ``pointwise``: every (input unit, output unit) pair
  costs ``macs_per_pair`` MACs (dense 1, conv ``kh*kw*H_out*W_out``) and
  ``params_per_pair`` weights (dense 1, conv ``kh*kw``).
- ``depthwise``: one filter per input channel, so the output width always
  equals the input width; each channel costs ``macs_per_pair`` MACs and
  ``params_per_pair`` weights. Its width is never chosen on its own.

Tied groups (residual networks): layers whose outputs an ``Add`` joins keep the
same channels, so they share one width. Every member but the first (the
group's representative) names it in ``tied``; its width is never chosen on
its own, and a layer reading the group names the representative as its
``producer``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reds_tf import ir
from reds_tf.errors import RedsError

#: Kinds whose cost is bilinear in (input width, output width).
BILINEAR_KINDS = frozenset({"dense", "conv", "pointwise"})
#: Kinds whose output width is tied to the input width (cost linear in it).
TIED_KINDS = frozenset({"depthwise"})
KINDS = BILINEAR_KINDS | TIED_KINDS


@dataclass(frozen=True)
class CostLayer:
    """One weight layer as the cost model sees it.

    Attributes:
        name: Keras layer name.
        kind: one of :data:`KINDS`.
        units: full output width.
        macs_per_pair: MACs per (input unit, output unit) pair; for ``depthwise``
            MACs per channel.
        producer: name of the layer whose output width is this layer's input
            width; None means the fixed model input of ``input_units`` units.
        input_units: full input width (used when ``producer`` is None).
        prunable: False keeps the output width at ``units`` (the classifier).
        use_bias: whether the layer has one bias per output unit.
        params_per_pair: weights per (input unit, output unit) pair (dense 1,
            conv ``kh*kw``); for ``depthwise`` weights per channel.
        out_elems_per_unit: activation elements one output unit produces
            (dense 1, conv ``H_out*W_out``); used by activation-memory limits.
        input_elems_per_unit: activation elements per input unit when
            ``producer`` is None (dense 1, conv ``H_in*W_in``).
        tied: the representative (an earlier, untied dense/conv layer of the
            same ``units``) whose width this layer shares because an ``Add``
            joins their outputs; None for a width of its own.
    """

    name: str
    kind: str
    units: int
    macs_per_pair: int
    producer: str | None
    input_units: int
    prunable: bool = True
    use_bias: bool = True
    params_per_pair: int = 1
    out_elems_per_unit: int = 1
    input_elems_per_unit: int = 1
    tied: str | None = None

    @property
    def follows(self) -> bool:
        """Whether the width follows another layer's (depthwise or tied group)."""
        return self.kind in TIED_KINDS or self.tied is not None


def validate_layers(layers: Sequence[CostLayer]) -> dict[str, CostLayer]:
    """Check that ``layers`` is a consistent, topologically ordered description.

    Returns:
        ``{name: layer}`` in the given order.

    Raises:
        ValueError: on duplicate names, unknown kinds, producers that are not
            defined earlier, non-positive sizes, or a depthwise layer whose
            width differs from its input width.
    """
    by_name: dict[str, CostLayer] = {}
    if not layers:
        raise ValueError("the cost model needs at least one layer")
    for layer in layers:
        if layer.name in by_name:
            raise ValueError(f"duplicate cost layer name {layer.name!r}")
        if layer.kind not in KINDS:
            raise ValueError(
                f"layer {layer.name!r}: unknown kind {layer.kind!r} (known: {sorted(KINDS)})"
            )
        if layer.units < 1 or layer.macs_per_pair < 1 or layer.params_per_pair < 1:
            raise ValueError(
                f"layer {layer.name!r}: units, macs_per_pair and params_per_pair must be >= 1"
            )
        if layer.out_elems_per_unit < 1 or layer.input_elems_per_unit < 1:
            raise ValueError(
                f"layer {layer.name!r}: out_elems_per_unit and input_elems_per_unit must be >= 1"
            )
        if layer.producer is None:
            if layer.input_units < 1:
                raise ValueError(f"layer {layer.name!r}: input_units must be >= 1")
            full_in = layer.input_units
        else:
            if layer.producer not in by_name:
                raise ValueError(
                    f"layer {layer.name!r}: producer {layer.producer!r} is not an earlier layer"
                )
            full_in = by_name[layer.producer].units
        if layer.kind in TIED_KINDS and layer.units != full_in:
            raise ValueError(
                f"depthwise layer {layer.name!r} has {layer.units} units but {full_in} inputs"
            )
        if layer.tied is not None:
            rep = by_name.get(layer.tied)
            if rep is None or rep.follows or layer.kind in TIED_KINDS or rep.units != layer.units:
                raise ValueError(
                    f"layer {layer.name!r}: tied to {layer.tied!r}, which must be an earlier "
                    f"untied dense/conv layer of {layer.units} units"
                )
        by_name[layer.name] = layer
    return by_name


def full_widths(layers: Sequence[CostLayer]) -> dict[str, int]:
    """Every layer at its full width: ``{name: units}``."""
    return {layer.name: layer.units for layer in layers}


def resolve_widths(layers: Sequence[CostLayer], widths: Mapping[str, int]) -> dict[str, int]:
    """Complete and check a width assignment.

    ``widths`` must give every prunable bilinear layer that is not tied;
    non-prunable layers default to full width, depthwise layers to their input
    width and tied layers to their representative's (if given, they must match).

    Returns:
        ``{name: width}`` for every layer, in layer order.

    Raises:
        ValueError: a width is missing, out of ``[1, units]``, contradicts a
            fixed/tied width, or names an unknown layer.
    """
    by_name = validate_layers(layers)
    unknown = set(widths) - set(by_name)
    if unknown:
        raise ValueError(f"widths name unknown layers: {sorted(unknown)}")
    out: dict[str, int] = {}
    for layer in layers:
        if layer.kind in TIED_KINDS:
            w = layer.input_units if layer.producer is None else out[layer.producer]
        elif layer.tied is not None:
            w = out[layer.tied]
        elif not layer.prunable:
            w = layer.units
        elif layer.name in widths:
            w = int(widths[layer.name])
        else:
            raise ValueError(f"no width given for prunable layer {layer.name!r}")
        if layer.name in widths and int(widths[layer.name]) != w:
            if layer.kind in TIED_KINDS:
                why = "its input width"
            elif layer.tied is not None:
                why = f"the width of {layer.tied!r} (joined by an Add)"
            else:
                why = "full width (not prunable)"
            raise ValueError(
                f"layer {layer.name!r}: width {widths[layer.name]} given, but it is fixed "
                f"to {why} = {w}"
            )
        if not 1 <= w <= layer.units:
            raise ValueError(f"layer {layer.name!r}: width {w} outside [1, {layer.units}]")
        out[layer.name] = w
    return out


def _input_width(layer: CostLayer, widths: Mapping[str, int]) -> int:
    return layer.input_units if layer.producer is None else widths[layer.producer]


def macs(kind: str, macs_per_pair: int, w_in: int, w_out: int) -> int:
    """THE MAC formula (the cost model and the C++ plan both count with it):
    ``macs_per_pair * w_in * w_out`` for the bilinear kinds, ``macs_per_pair *
    w_out`` for a depthwise layer (``w_in == w_out``)."""
    if kind in TIED_KINDS:
        return macs_per_pair * w_out
    return macs_per_pair * w_in * w_out


def layer_macs(layer: CostLayer, w_in: int, w_out: int) -> int:
    """MACs of one layer keeping ``w_in`` inputs and ``w_out`` outputs."""
    if layer.kind in TIED_KINDS and w_in != w_out:
        raise ValueError(f"depthwise layer {layer.name!r}: w_in {w_in} != w_out {w_out}")
    return macs(layer.kind, layer.macs_per_pair, w_in, w_out)


def layer_params(layer: CostLayer, w_in: int, w_out: int) -> int:
    """Weights plus biases one layer uses when keeping ``w_in`` x ``w_out``."""
    bias = w_out if layer.use_bias else 0
    if layer.kind in TIED_KINDS:
        if w_in != w_out:
            raise ValueError(f"depthwise layer {layer.name!r}: w_in {w_in} != w_out {w_out}")
        return layer.params_per_pair * w_out + bias
    return layer.params_per_pair * w_in * w_out + bias


def model_macs(layers: Sequence[CostLayer], widths: Mapping[str, int]) -> int:
    """True MACs of the submodel with the given widths (see :func:`resolve_widths`)."""
    w = resolve_widths(layers, widths)
    return sum(layer_macs(layer, _input_width(layer, w), w[layer.name]) for layer in layers)


def model_params(layers: Sequence[CostLayer], widths: Mapping[str, int]) -> int:
    """Weights plus biases the submodel with the given widths actually uses."""
    w = resolve_widths(layers, widths)
    return sum(layer_params(layer, _input_width(layer, w), w[layer.name]) for layer in layers)


def layer_activation_elems(
    layer: CostLayer, w_in: int, w_out: int, producer: CostLayer | None
) -> int:
    """Input plus output activation elements live while ``layer`` runs.

    ``producer`` is the layer named by ``layer.producer`` (None for the model input).
    """
    per_in = layer.input_elems_per_unit if producer is None else producer.out_elems_per_unit
    return per_in * w_in + layer.out_elems_per_unit * w_out


def model_activation_elems(
    layers: Sequence[CostLayer], widths: Mapping[str, int]
) -> dict[str, int]:
    """Per layer, input plus output activation elements: ``{name: elems}``.

    The peak of these is a lower bound on the activation arena a runtime
    needs (it must hold a layer's input and output at once).
    """
    by_name = validate_layers(layers)
    w = resolve_widths(layers, widths)
    return {
        layer.name: layer_activation_elems(
            layer,
            _input_width(layer, w),
            w[layer.name],
            None if layer.producer is None else by_name[layer.producer],
        )
        for layer in layers
    }


# Nodes that change neither widths nor MACs we count (activations are free,
# dropout is the identity at inference, BatchNorm folds into the layer before,
# a reshape keeps the channels and moves no data).
_IGNORED = (ir.ACTIVATION, ir.SOFTMAX, ir.DROPOUT, ir.BATCHNORM, ir.RESHAPE)
# Pooling keeps the channel count (its MACs are not counted) but shrinks the map.
_POOLING = (ir.AVGPOOL, ir.MAXPOOL)
_SUPPORTED = (
    "Conv2D, DepthwiseConv2D, Dense, BatchNormalization, pooling, Flatten, Dropout, Add, "
    "activations"
)


def conv_macs_per_pair(kernel: Sequence[int], out_hw: Sequence[int]) -> int:
    """MACs per (input channel, filter) pair of a convolution, or per channel of a
    depthwise one: ``kh*kw*H_out*W_out`` (the plan's kernels count the same)."""
    return int(kernel[0]) * int(kernel[1]) * int(out_hw[0]) * int(out_hw[1])


def cost_layers(graph: ir.Graph) -> list[CostLayer]:
    """The cost model of a graph built from a model (:func:`reds_tf.ir.from_keras`):
    Conv2D / DepthwiseConv2D / Dense with BatchNorm, activations, pooling,
    Flatten and Dropout between, in a chain or joined by ``Add`` (residual
    networks: the joined layers are one tied group, :attr:`CostLayer.tied`).

    Per layer (``H_out, W_out`` = output map size, ``kh, kw`` = kernel):
    Conv2D costs ``kh*kw*H_out*W_out`` MACs per (input channel, filter) pair,
    DepthwiseConv2D ``kh*kw*H_out*W_out`` per channel (width tied to its
    producer), a Dense after Flatten of an ``H x W`` map ``H*W`` per (channel,
    unit) pair, a Dense on a vector 1. The last Dense (the classifier) is not
    prunable; depthwise layers are not prunable on their own.

    Returns:
        One :class:`CostLayer` per width-carrying node, in graph order.

    Raises:
        RedsError: a node or topology the cost model does not support (the
            message names the layer).
        ValueError: the graph has no shapes (read from ``submodels.json``).
    """
    if not graph.has_shapes:
        raise ValueError(f"graph {graph.name!r} has no shapes; build it from the model")
    out: list[CostLayer] = []
    in_positions = math.prod(graph.input_shape[:-1])
    for node in graph.nodes:
        # An add costs no MACs; its inputs' widths are one tied group (ir.from_keras).
        if node.kind in _IGNORED or node.kind in _POOLING or node.kind in (ir.FLATTEN, ir.ADD):
            continue
        if not node.is_width:
            raise RedsError(
                f"layer {node.name!r} of type {node.layer_class or node.kind} is not supported by "
                f"the cost model (supported: {_SUPPORTED})"
            )
        producer = graph.producer(node)
        src = None if producer is None else graph.node(producer)
        in_units = graph.input_units(node)
        if src is not None:
            in_positions = math.prod(src.out_shape[:-1])
        if node.kind == ir.DENSE:
            per = 1 if src is None else graph.positions(node)
            if src is None:
                # A Dense straight on the (flattened) model input: one unit per element.
                in_units, in_positions = math.prod(node.in_shape), 1
            out_elems = 1
        else:
            per = conv_macs_per_pair(node.kernel, node.out_hw)
            out_elems = math.prod(node.out_hw)
        out.append(
            CostLayer(
                name=node.name,
                kind=node.kind,
                units=node.units,
                macs_per_pair=per,
                producer=producer,
                input_units=in_units,
                prunable=node.prunable,
                use_bias=node.use_bias,
                params_per_pair=per if node.kind == ir.DENSE else node.kernel[0] * node.kernel[1],
                out_elems_per_unit=out_elems,
                input_elems_per_unit=in_positions,
                tied=node.tied,
            )
        )
    if not out:
        raise RedsError(f"model {graph.name!r} has no Dense layer to count")
    if out[-1].kind != "dense":
        raise RedsError(f"model {graph.name!r} must end in a Dense classifier")
    return out


def cost_layers_from_keras(model) -> list[CostLayer]:
    """:func:`cost_layers` of :func:`reds_tf.ir.from_keras` ``(model)``."""
    return cost_layers(ir.from_keras(model))


def as_cost_layers(layers: Sequence[CostLayer] | ir.Graph) -> list[CostLayer]:
    """``layers`` as a list of :class:`CostLayer` (a graph goes through :func:`cost_layers`)."""
    return cost_layers(layers) if isinstance(layers, ir.Graph) else list(layers)


def graph_macs(graph: ir.Graph) -> list[int | None]:
    """THE MACs of every submodel of ``graph``: from the cost model when the
    graph has shapes (built from the model), else the ``macs`` training
    recorded in ``submodels.json`` (None where absent)."""
    if graph.has_shapes:
        layers = cost_layers(graph)
        return [model_macs(layers, s.widths) for s in graph.submodels]
    return [s.macs for s in graph.submodels]
