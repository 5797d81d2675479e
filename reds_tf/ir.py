"""One typed graph of the network, from the Keras model to ``submodels.json``.

A :class:`Graph` is a list of :class:`Node` in topological order. Every node
has a ``kind``, the names of the nodes it reads (``inputs``; :data:`INPUT` is
the model input; more than one for a residual ``add``), its full output width
``units`` (channels or features) and its full shapes. The width-carrying nodes
(:data:`WIDTH_KINDS`: dense, conv, depthwise) own weights; every other node
keeps the width of its input. A graph also carries the per-submodel widths
(:class:`Submodel`) and the run's metadata, so it is exactly what
``submodels.json`` holds.

Built from a Keras model by :func:`from_keras`, the one walk over a model's
layer graph (each stage builds it from the model file it loads); the cost
model (:func:`reds_tf.costs.cost_layers`, hence the knapsack), the permutation,
the nested model, :func:`reds_tf.models.submodel` and the C++ plan
(:func:`reds_tf.codegen.plan.build_plan`) read it.

Residual networks: the dense/conv nodes whose outputs an ``add`` joins (through
BatchNorm, activations, ...) keep the same channels, so they form a TIED GROUP
with one width and one unit order. Every member but the first in node order
(the group's representative) records it in :attr:`Node.tied`
(:func:`from_keras` finds the groups); a node reading the group has the
representative as its :meth:`Graph.producer`.

``submodels.json`` (:meth:`Graph.to_doc`, :func:`from_doc`) records the WIDTH
GRAPH (:meth:`Graph.width_graph`): the width-carrying nodes only, each reading
the nearest width-carrying node before it (its ``producer``) and naming its
group's representative (``tied``); pooling, Flatten, BatchNorm, activations
and ``add`` follow their producer's width and are left out, as are the input
shapes (a graph loaded from the file has ``in_shape`` None). The file schema
is :func:`reds_tf.rundir.check_submodels`; ``format_version`` is 1 for a
graph without tied groups (a chain, readable by every reds_tf) and 2 with them
(the ``tied`` key); files without it are version 1. :data:`FORMAT_VERSION` is
the newest this module reads.

Shapes are per example, without the batch axis, channels last: a map
``(H, W, C)``, a vector ``(N,)``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reds_tf.errors import RedsError, RunDirError

#: The newest ``submodels.json`` ``format_version`` read (2: tied groups);
#: files without it are 1.
FORMAT_VERSION = 2
#: The model input's name in :attr:`Node.inputs` (no node has it).
INPUT = "input"

# Node kinds.
DENSE = "dense"
CONV = "conv"  # standard convolution; pointwise = kernel (1, 1), stride (1, 1)
DEPTHWISE = "depthwise"  # depth multiplier 1: output width = input width
BATCHNORM = "batchnorm"
ACTIVATION = "activation"  # ReLU, Activation (relu, softmax, ...)
SOFTMAX = "softmax"  # the Softmax layer
DROPOUT = "dropout"
AVGPOOL = "avgpool"
MAXPOOL = "maxpool"
GLOBAL_AVGPOOL = "global_avgpool"
GLOBAL_MAXPOOL = "global_maxpool"
ZEROPAD = "zeropad"
FLATTEN = "flatten"  # (H, W, C) -> (H*W*C,); its width is the channel count C
ADD = "add"  # elementwise sum of several inputs of one width (residual networks)
RESHAPE = "reshape"  # keeps the channel axis: the (T, C) input as a (1, T, C) map (Conv1D)

#: Kinds with weights and their own entry in ``submodels.json`` ``layers``.
WIDTH_KINDS = (DENSE, CONV, DEPTHWISE)
#: Width-carrying kinds whose width is chosen (when prunable).
CHOSEN_KINDS = (DENSE, CONV)
#: Every kind a graph may hold.
KINDS = (
    *WIDTH_KINDS,
    BATCHNORM,
    ACTIVATION,
    SOFTMAX,
    DROPOUT,
    AVGPOOL,
    MAXPOOL,
    GLOBAL_AVGPOOL,
    GLOBAL_MAXPOOL,
    ZEROPAD,
    FLATTEN,
    ADD,
    RESHAPE,
)

# tf_keras layer class -> kind (exact class names: a subclass may compute
# something else, e.g. Conv2DTranspose is a Conv2D).
_KERAS_KINDS = {
    "Dense": DENSE,
    "Conv2D": CONV,
    "DepthwiseConv2D": DEPTHWISE,
    "BatchNormalization": BATCHNORM,
    "ReLU": ACTIVATION,
    "Activation": ACTIVATION,
    "Softmax": SOFTMAX,
    "Dropout": DROPOUT,
    "AveragePooling2D": AVGPOOL,
    "MaxPooling2D": MAXPOOL,
    "GlobalAveragePooling2D": GLOBAL_AVGPOOL,
    "GlobalMaxPooling2D": GLOBAL_MAXPOOL,
    "ZeroPadding2D": ZEROPAD,
    "Flatten": FLATTEN,
    "Add": ADD,
    "Reshape": RESHAPE,
}

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Node:
    """One layer of the network.

    Attributes:
        name: the layer's name (the Keras layer name; unique, never :data:`INPUT`).
        kind: one of :data:`KINDS`.
        inputs: names of the nodes whose outputs it reads, in call order
            (:data:`INPUT` for the model input); one except for ``add``.
        units: full output width: units (dense), filters (conv); every other
            kind has its input's width (after a Flatten: the channels of the
            flattened map, whose positions multiply them).
        out_shape: full output shape, e.g. ``(H, W, units)`` or ``(N,)``;
            None when not recorded (a node read from ``submodels.json``
            without geometry).
        in_shape: full shape of the first input; None when not recorded.
        prunable: the knapsack chooses this node's width (dense/conv, not the
            classifier); other nodes are at full width or tied to their input.
        kernel, strides: ``(kh, kw)``, ``(sh, sw)`` of convolutions and pools.
        padding: ``"valid"`` or ``"same"`` (convolutions and pools).
        use_bias: whether a width-carrying node adds a bias per output unit.
        activation: the fused activation of a width-carrying node, or the
            function of an ``activation`` node (``"linear"``, ``"relu"``, ...).
        layer_class: the framework's class name (for messages only).
        tied: for a dense/conv node whose output an ``add`` joins with an
            earlier one's, its tied group's representative (the first member):
            same units, same width in every submodel, one permutation. None
            otherwise (also for the representative itself).
    """

    name: str
    kind: str
    inputs: tuple[str, ...]
    units: int
    out_shape: Shape | None = None
    in_shape: Shape | None = None
    prunable: bool = False
    kernel: tuple[int, int] | None = None
    strides: tuple[int, int] | None = None
    padding: str | None = None
    use_bias: bool = True
    activation: str = "linear"
    layer_class: str = ""
    tied: str | None = None

    @property
    def is_width(self) -> bool:
        """Carries weights and its own width (dense, conv, depthwise)."""
        return self.kind in WIDTH_KINDS

    @property
    def is_pointwise(self) -> bool:
        """A 1x1 stride-1 convolution (the runtime's pointwise kernel)."""
        return self.kind == CONV and self.kernel == (1, 1) and self.strides in (None, (1, 1))

    @property
    def out_hw(self) -> tuple[int, int] | None:
        """``(H, W)`` of a map output, None for a vector or when not recorded."""
        if self.out_shape is None or len(self.out_shape) != 3:
            return None
        return self.out_shape[0], self.out_shape[1]


@dataclass
class Submodel:
    """One submodel: the output width of every width-carrying node, plus what
    training recorded about it (all optional: export needs only the widths).

    ``extra`` holds any further recorded keys (e.g. ``accuracy_before_finetune``,
    ``knapsack_status``) in file order.
    """

    widths: dict[str, int]
    budget: float | None = None
    macs: int | None = None
    macs_fraction: float | None = None
    params: int | None = None
    accuracy: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def record(self, index: int) -> dict[str, Any]:
        """The ``submodels.json`` entry (keys in the order training writes them)."""
        out: dict[str, Any] = {"index": index}
        if self.budget is not None:
            out["budget"] = self.budget
        out["widths"] = dict(self.widths)
        for key in ("macs", "macs_fraction", "params", "accuracy"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out.update(self.extra)
        return out


_SUBMODEL_KEYS = ("budget", "macs", "macs_fraction", "params", "accuracy")


@dataclass
class Graph:
    """The network and its submodels (the content of ``submodels.json``).

    ``nodes`` in topological order; the last node produces the model output.
    ``input_shape`` None: not recorded (a document built in code may omit it).
    ``submodels`` smallest first (the last is the full model). ``dataset``,
    ``data_options``, ``block``, ``bn_stats`` and ``extra`` (other top-level
    keys) are the run's metadata, kept as the file has them (None: absent).
    """

    name: str
    input_shape: Shape | None
    nodes: list[Node]
    submodels: list[Submodel] = field(default_factory=list)
    num_classes: int | None = None
    dataset: str | None = None
    data_options: dict[str, Any] | None = None
    block: int | None = None
    bn_stats: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.input_shape is not None:
            self.input_shape = tuple(int(d) for d in self.input_shape)
        self.nodes = list(self.nodes)
        self._by_name = _check_nodes(self.nodes)
        if self.num_classes is None and self.nodes:
            self.num_classes = self.nodes[-1].units

    # -- structure ------------------------------------------------------------------

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def node(self, name: str) -> Node:
        """The node called ``name`` (KeyError if none)."""
        return self._by_name[name]

    @property
    def output(self) -> Node:
        """The node that produces the model output."""
        return self.nodes[-1]

    @property
    def width_nodes(self) -> list[Node]:
        """The width-carrying nodes in order: the ``submodels.json`` layers."""
        return [n for n in self.nodes if n.is_width]

    @property
    def has_shapes(self) -> bool:
        """Whether every node's input and output shape is known (a graph built
        from a model; a graph read from ``submodels.json`` has no input shapes)."""
        return all(n.in_shape is not None and n.out_shape is not None for n in self.nodes)

    def _input_channels(self) -> int:
        if not self.input_shape:
            raise ValueError(f"graph {self.name!r}: the input shape is not recorded")
        return self.input_shape[-1]

    def consumers(self, name: str) -> list[Node]:
        """The nodes that read ``name``'s output (or the model input), in order."""
        return [n for n in self.nodes if name in n.inputs]

    def input_units(self, node: Node) -> int:
        """Full width of ``node``'s (first) input: its input node's ``units``,
        or the model input's channel count."""
        src = node.inputs[0]
        return self._input_channels() if src == INPUT else self._by_name[src].units

    def producer(self, node: Node) -> str | None:
        """The width-carrying node whose width ``node``'s first input has (through
        BatchNorm, activations, pooling, Flatten, ``add``, ...), None for the model
        input; a member of a tied group stands for its representative."""
        src = node.inputs[0]
        while src != INPUT:
            n = self._by_name[src]
            if n.is_width:
                return n.tied or n.name
            src = n.inputs[0]
        return None

    @property
    def tied_groups(self) -> dict[str, list[str]]:
        """``{representative: [representative, member, ...]}`` of every tied group
        (node order); empty for a graph without ``add`` joins."""
        groups: dict[str, list[str]] = {}
        for n in self.nodes:
            if n.tied is not None:
                groups.setdefault(n.tied, [n.tied]).append(n.name)
        return groups

    def positions(self, node: Node) -> int:
        """Input positions per input channel of a dense node: ``H*W`` after a
        Flatten of an ``(H, W, C)`` map (the kernel's rows are in ``(h, w, c)``
        order), 1 on a vector."""
        if node.in_shape is None:
            raise ValueError(f"node {node.name!r}: the input shape is not recorded")
        fan_in, c = math.prod(node.in_shape), self.input_units(node)
        if fan_in % c:
            raise ValueError(f"node {node.name!r}: {fan_in} inputs are not a multiple of {c}")
        return fan_in // c

    def is_chain(self) -> bool:
        """Whether every node reads exactly the node before it (the first: the input)."""
        prev = INPUT
        for n in self.nodes:
            if n.inputs != (prev,):
                return False
            prev = n.name
        return True

    # -- widths ---------------------------------------------------------------------

    def node_widths(self, widths: Mapping[str, int]) -> dict[str, int]:
        """The output width of EVERY node for the given widths of the chosen
        (dense/conv) nodes; those missing are at full width, every other node
        follows its input (an ``add`` needs equal input widths).

        Returns:
            ``{name: width}`` in node order.
        """
        out: dict[str, int] = {}
        for n in self.nodes:
            w_in = [self._input_channels() if s == INPUT else out[s] for s in n.inputs]
            if n.kind in CHOSEN_KINDS and n.tied is not None:
                w = out[n.tied]
                if n.name in widths and int(widths[n.name]) != w:
                    raise ValueError(
                        f"node {n.name!r}: width {widths[n.name]} given, but it is tied to "
                        f"{n.tied!r} (width {w})"
                    )
            elif n.kind in CHOSEN_KINDS:
                w = int(widths.get(n.name, n.units))
            else:
                if len(set(w_in)) != 1:
                    raise ValueError(f"node {n.name!r} adds inputs of different widths {w_in}")
                w = w_in[0]
                if n.name in widths and int(widths[n.name]) != w:
                    raise ValueError(
                        f"node {n.name!r}: width {widths[n.name]} given, but it follows its "
                        f"input's width {w}"
                    )
            out[n.name] = w
        return out

    def input_width(self, node: Node, node_widths: Mapping[str, int]) -> int:
        """Width of ``node``'s (first) input in :meth:`node_widths` ``node_widths``."""
        src = node.inputs[0]
        return self._input_channels() if src == INPUT else int(node_widths[src])

    def width_list(self, k: int) -> list[int]:
        """Submodel k's width of every width-carrying node, in order."""
        widths = self.submodels[k].widths
        return [int(widths[n.name]) for n in self.width_nodes]

    # -- submodels.json -------------------------------------------------------------

    @property
    def format_version(self) -> int:
        """The ``submodels.json`` format this graph needs: 2 with tied groups, else 1."""
        return 2 if self.tied_groups else 1

    def width_graph(self) -> Graph:
        """The graph ``submodels.json`` records: the width-carrying nodes only,
        each reading its :meth:`producer` (other nodes, ``add`` included,
        contracted away: the ``tied`` keys keep what the joins mean for widths)."""
        nodes = [
            dataclasses.replace(n, inputs=(self.producer(n) or INPUT,))
            for n in self.nodes
            if n.is_width
        ]
        return dataclasses.replace(self, nodes=nodes)

    def to_doc(self) -> dict[str, Any]:
        """The ``submodels.json`` document (a JSON-ready dict; key order as written)."""
        doc: dict[str, Any] = {"format_version": self.format_version, "name": self.name}
        if self.dataset is not None:
            doc["dataset"] = self.dataset
        if self.data_options is not None:
            doc["data_options"] = dict(self.data_options)
        if self.input_shape is not None:
            doc["input_shape"] = list(self.input_shape)
        if self.num_classes is not None:
            doc["num_classes"] = self.num_classes
        if self.block is not None:
            doc["block"] = self.block
        if self.bn_stats is not None:
            doc["bn_stats"] = self.bn_stats
        doc.update(self.extra)
        wg = self.width_graph()
        doc["layers"] = [_layer_entry(n) for n in wg.nodes]
        doc["submodels"] = [s.record(k) for k, s in enumerate(self.submodels)]
        return doc


def _layer_entry(n: Node) -> dict[str, Any]:
    """One ``submodels.json`` ``layers`` entry of a width-graph node."""
    e: dict[str, Any] = {
        "name": n.name,
        "type": n.kind,
        "units": n.units,
        "prunable": n.prunable,
        "producer": None if n.inputs[0] == INPUT else n.inputs[0],
    }
    if n.tied is not None:
        e["tied"] = n.tied
    if n.kind in (CONV, DEPTHWISE) and n.kernel is not None:
        e["kernel"] = list(n.kernel)
        e["strides"] = list(n.strides or (1, 1))
        e["padding"] = n.padding
        hw = n.out_hw
        if hw is not None:
            e["output_hw"] = list(hw)
    return e


def _check_nodes(nodes: Sequence[Node]) -> dict[str, Node]:
    """``{name: node}``; ValueError unless the nodes form a graph in topological
    order (unique names, known kinds, inputs defined earlier, widths >= 1, a
    depthwise node as wide as its input)."""
    by_name: dict[str, Node] = {}
    for n in nodes:
        if n.name == INPUT or n.name in by_name:
            what = "is reserved for the model input" if n.name == INPUT else "is used twice"
            raise ValueError(f"node name {n.name!r} {what}")
        if n.kind not in KINDS:
            raise ValueError(f"node {n.name!r}: unknown kind {n.kind!r} (known: {KINDS})")
        if not n.inputs or (n.kind != ADD and len(n.inputs) != 1):
            raise ValueError(f"node {n.name!r} ({n.kind}) reads {len(n.inputs)} inputs")
        for src in n.inputs:
            if src != INPUT and src not in by_name:
                raise ValueError(f"node {n.name!r} reads {src!r}, which is not an earlier node")
        if isinstance(n.units, bool) or int(n.units) < 1:
            raise ValueError(f"node {n.name!r}: units must be >= 1, got {n.units}")
        if n.tied is not None:
            rep = by_name.get(n.tied)
            if (
                n.kind not in CHOSEN_KINDS
                or rep is None
                or rep.kind not in CHOSEN_KINDS
                or rep.tied is not None
                or rep.units != n.units
            ):
                raise ValueError(
                    f"node {n.name!r} is tied to {n.tied!r}, which must be an earlier untied "
                    f"dense/conv node of {n.units} units"
                )
        if n.kind == DEPTHWISE and n.inputs[0] != INPUT:
            src = by_name[n.inputs[0]]
            if src.units != n.units:
                raise ValueError(
                    f"depthwise node {n.name!r} has {n.units} units but its input "
                    f"{src.name!r} has {src.units}"
                )
        by_name[n.name] = n
    return by_name


def _pair(v: Any) -> tuple[int, int] | None:
    return None if v is None else (int(v[0]), int(v[1]))


def from_doc(doc: Mapping[str, Any]) -> Graph:
    """The graph of a ``submodels.json`` document: its width graph (see the
    module doc), with the per-submodel widths and the recorded numbers.

    A layer without ``producer`` (files of dense-only runs) reads the layer
    before it. Expects a document that passed
    :func:`reds_tf.rundir.check_submodels` (files) or was built in code; a
    missing key or a broken structure is a one-line RunDirError.
    """
    try:
        version = doc.get("format_version", 1)
        if version not in range(1, FORMAT_VERSION + 1):
            raise RunDirError(
                f"submodels.json has format_version {version!r}; this reds_tf reads 1 to "
                f"{FORMAT_VERSION}: re-run `reds train` or use the reds_tf that wrote it"
            )
        nodes = []
        prev = INPUT
        for ly in doc["layers"]:
            kind, units = str(ly["type"]), int(ly["units"])
            producer = ly["producer"] if "producer" in ly else prev
            hw = _pair(ly.get("output_hw"))
            if hw is not None:
                out_shape: Shape | None = (*hw, units)
            else:
                out_shape = (units,) if kind == DENSE else None
            padding = ly.get("padding")
            nodes.append(
                Node(
                    name=str(ly["name"]),
                    kind=kind,
                    inputs=(producer or INPUT,),
                    units=units,
                    out_shape=out_shape,
                    prunable=bool(ly.get("prunable", kind in CHOSEN_KINDS)),
                    kernel=_pair(ly.get("kernel")),
                    strides=_pair(ly.get("strides")),
                    padding=None if padding is None else str(padding).lower(),
                    tied=ly.get("tied"),
                )
            )
            prev = nodes[-1].name
        subs = []
        for s in doc["submodels"]:
            rest = {k: v for k, v in s.items() if k not in ("index", "widths", *_SUBMODEL_KEYS)}
            subs.append(
                Submodel(
                    widths={str(n): int(w) for n, w in s["widths"].items()},
                    **{k: s.get(k) for k in _SUBMODEL_KEYS},
                    extra=rest,
                )
            )
        known = {"format_version", "name", "dataset", "data_options", "input_shape"}
        known |= {"num_classes", "block", "bn_stats", "layers", "submodels"}
        return Graph(
            name=str(doc.get("name", "model")),
            input_shape=doc.get("input_shape"),
            nodes=nodes,
            submodels=subs,
            num_classes=doc.get("num_classes"),
            dataset=doc.get("dataset"),
            data_options=doc.get("data_options"),
            block=doc.get("block"),
            bn_stats=doc.get("bn_stats"),
            extra={k: v for k, v in doc.items() if k not in known},
        )
    except KeyError as e:
        raise RunDirError(f"submodels.json: {e} is missing; re-run `reds train`") from None
    except (TypeError, ValueError, AttributeError) as e:
        if isinstance(e, RedsError):
            raise
        raise RunDirError(f"submodels.json is malformed ({e}); re-run `reds train`") from None


# -- from Keras ---------------------------------------------------------------------------


def _shape(v: Any, what: str) -> Shape:
    dims = tuple(v)
    if any(d is None for d in dims):
        raise RedsError(f"{what} has shape {dims}; every dimension must be known")
    return tuple(int(d) for d in dims)


def _activation_name(fn: Any) -> str:
    import tf_keras as keras

    act = keras.activations.serialize(fn)
    return act if isinstance(act, str) else str(act)


def _relu_name(layer: Any) -> str:
    mv, slope, th = layer.max_value, float(layer.negative_slope), float(layer.threshold)
    if slope == 0 and th == 0:
        if mv is None:
            return "relu"
        if float(mv) == 6.0:
            return "relu6"
    return f"relu(max_value={mv}, negative_slope={slope:g}, threshold={th:g})"


_SUPPORTED_KERAS = ", ".join(_KERAS_KINDS)


def from_keras(model: Any) -> Graph:
    """The graph of a tf_keras functional or Sequential model (one walk over
    its layers): a node per layer except the input, with its inputs, width,
    geometry and full shapes. The graph has no submodels yet.

    Prunable: every dense/conv node except the one whose width is the model
    output's (the classifier) and the members of a tied group that holds it
    or is joined with the model input (fixed widths). Tied groups: see the
    module doc.

    Raises:
        RedsError: more than one input, an input of unknown size, a layer of an
            unknown class, a layer called more than once, a Dense on an
            unflattened input, a grouped convolution or a depth multiplier
            other than 1 (the message names the layer).
    """
    if len(model.inputs) != 1:
        raise RedsError(
            f"model {model.name!r} has {len(model.inputs)} inputs; only single-input models "
            "are supported"
        )
    input_shape = _shape(model.inputs[0].shape[1:], f"model {model.name!r} input")
    nodes: list[Node] = []
    by_name: dict[str, Node] = {}
    for layer in model.layers:
        cls = type(layer).__name__
        if cls == "InputLayer":
            continue
        kind = _KERAS_KINDS.get(cls)
        if kind is None:
            raise RedsError(
                f"layer {layer.name!r} of type {cls} is not supported (supported: "
                f"{_SUPPORTED_KERAS})"
            )
        if layer.name == INPUT:
            raise RedsError(f"layer {INPUT!r} ({cls}): the name is reserved; rename the layer")
        inbound = layer._inbound_nodes  # tf_keras has no public graph API
        if len(inbound) != 1:
            raise RedsError(
                f"layer {layer.name!r} ({cls}) is called {len(inbound)} times; a shared layer "
                "is not supported"
            )
        srcs = inbound[0].inbound_layers
        srcs = srcs if isinstance(srcs, list) else [srcs]
        inputs = tuple(INPUT if type(s).__name__ == "InputLayer" else str(s.name) for s in srcs)
        src = inputs[0]
        if src != INPUT and src not in by_name:
            raise RedsError(f"layer {layer.name!r} ({cls}) reads {src!r}, which is not before it")
        # Every kind but dense/conv has its input's width (after a Flatten: the map's channels).
        units = input_shape[-1] if src == INPUT else by_name[src].units
        tensors = layer.input if isinstance(layer.input, list) else [layer.input]
        in_shape = _shape(tensors[0].shape[1:], f"layer {layer.name!r} input")
        out_shape = _shape(layer.output.shape[1:], f"layer {layer.name!r} output")
        if kind == RESHAPE and out_shape[-1] != in_shape[-1]:
            raise RedsError(
                f"Reshape layer {layer.name!r} turns {in_shape} into {out_shape}; only a reshape "
                "that keeps the channel (last) axis is supported"
            )
        geometry: dict[str, Any] = {}
        activation = "linear"
        use_bias = bool(getattr(layer, "use_bias", False))
        if kind == DENSE:
            if len(in_shape) != 1:
                raise RedsError(
                    f"Dense layer {layer.name!r} gets an input of shape {in_shape}; "
                    "put a Flatten before it"
                )
            units = int(layer.units)
        elif kind in (CONV, DEPTHWISE):
            if kind == CONV and int(layer.groups) != 1:
                raise RedsError(f"conv layer {layer.name!r}: grouped convolution unsupported")
            if kind == DEPTHWISE and int(layer.depth_multiplier) != 1:
                raise RedsError(
                    f"depthwise layer {layer.name!r}: only depth_multiplier=1 is supported"
                )
            units = int(layer.filters) if kind == CONV else in_shape[-1]
            geometry = {
                "kernel": _pair(layer.kernel_size),
                "strides": _pair(layer.strides),
                "padding": str(layer.padding).lower(),
            }
        elif kind in (AVGPOOL, MAXPOOL):
            geometry = {
                "kernel": _pair(layer.pool_size),
                "strides": _pair(layer.strides),
                "padding": str(layer.padding).lower(),
            }
        if kind in WIDTH_KINDS or cls == "Activation":
            activation = _activation_name(layer.activation)
        elif cls == "ReLU":
            activation = _relu_name(layer)
        elif kind == SOFTMAX:
            activation = "softmax"
        nodes.append(
            Node(
                name=str(layer.name),
                kind=kind,
                inputs=inputs,
                units=units,
                out_shape=out_shape,
                in_shape=in_shape,
                use_bias=use_bias,
                activation=activation,
                layer_class=cls,
                **geometry,
            )
        )
        by_name[nodes[-1].name] = nodes[-1]
    if not nodes:
        raise RedsError(f"model {model.name!r} has no layers")
    groups = _tie_groups(nodes)
    nodes = [dataclasses.replace(n, tied=groups.get(n.name, n.name)) for n in nodes]
    nodes = [
        dataclasses.replace(n, tied=None if n.tied in (n.name, INPUT) else n.tied) for n in nodes
    ]
    graph = Graph(name=str(model.name), input_shape=input_shape, nodes=nodes)
    head = graph.output.name if graph.output.is_width else graph.producer(graph.output)
    fixed = {INPUT, groups.get(str(head), head)}  # groups of the classifier and of the input

    def prunable(n: Node) -> bool:
        return n.kind in CHOSEN_KINDS and n.name != head and groups.get(n.name) not in fixed

    nodes = [dataclasses.replace(n, prunable=prunable(n)) for n in nodes]
    return dataclasses.replace(graph, nodes=nodes)


def _tie_groups(nodes: Sequence[Node]) -> dict[str, str]:
    """``{dense/conv node: its group's representative}`` for every node whose
    output an ``add`` joins with others (the representative maps to itself):
    the first member in node order, or :data:`INPUT` for a group joined with the
    model input (whose width is fixed)."""
    by_name = {n.name: n for n in nodes}
    order = {INPUT: -1, **{n.name: i for i, n in enumerate(nodes)}}
    parent: dict[str, str] = {}

    def find(a: str) -> str:
        while parent.get(a, a) != a:
            a = parent[a]
        return a

    def chooser(src: str) -> str:
        """The dense/conv node (or the input) whose width ``src``'s output has."""
        while src != INPUT:
            n = by_name[src]
            if n.kind in CHOSEN_KINDS:
                return find(n.name)
            src = n.inputs[0]  # an add's inputs are one group already
        return INPUT

    for n in nodes:
        if n.kind != ADD:
            continue
        roots = {chooser(src) for src in n.inputs}
        first = min(roots, key=order.__getitem__)
        for r in roots:
            parent[r] = first
    return {name: find(name) for name in parent if name != INPUT}
