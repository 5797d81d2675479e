"""The typed graph (reds_tf/ir.py): built from every supported Keras model type it
gives what the former per-module walks computed (cost layers, widths, MACs,
``submodels.json`` layers), round-trips through ``submodels.json``, loads old
files without ``format_version``, and represents a multi-input (residual) node."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tf_keras as keras

from reds_tf import ir, rundir
from reds_tf.config import load_config
from reds_tf.costs import CostLayer, cost_layers, full_widths, graph_macs, model_macs
from reds_tf.errors import RedsError, RunDirError
from reds_tf.knapsack import free_layers
from reds_tf.models import build_model, cnn, dnn, dscnn, mobilenet_v1

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
TINY = Path(__file__).resolve().parent / "data" / "tiny"


# -- the former walks, frozen here as the reference -------------------------------------


def legacy_cost_layers(model) -> list[CostLayer]:
    """reds_tf.costs.cost_layers_from_keras before the graph (one Keras walk)."""
    in_shape = tuple(model.inputs[0].shape[1:])
    channels = int(in_shape[-1])
    positions = math.prod(int(d) for d in in_shape[:-1])
    flat_from = None
    producer = None
    out: list[CostLayer] = []
    in_channels, in_positions = channels, positions

    def add(layer, kind, units, macs, params, out_elems):
        out.append(
            CostLayer(layer.name, kind, units, macs, producer, in_channels,
                      kind != "depthwise", bool(layer.use_bias), params, out_elems, in_positions)
        )  # fmt: skip

    for layer in model.layers:
        cls = type(layer).__name__
        if cls in ("InputLayer", "Dropout", "Activation", "ReLU", "Softmax", "BatchNormalization"):
            continue
        shape = tuple(int(d) for d in layer.output.shape[1:])
        if cls in ("AveragePooling2D", "MaxPooling2D"):
            positions = math.prod(shape[:-1])
            continue
        if cls == "Flatten":
            flat_from = positions if len(layer.input.shape) > 2 else flat_from
            positions = 1
            continue
        if cls in ("Conv2D", "DepthwiseConv2D"):
            kh, kw = (int(k) for k in layer.kernel_size)
            hw = shape[0] * shape[1]
            if cls == "DepthwiseConv2D":
                add(layer, "depthwise", channels, kh * kw * hw, kh * kw, hw)
            else:
                add(layer, "conv", int(layer.filters), kh * kw * hw, kh * kw, hw)
            channels, positions = shape[-1], hw
        else:  # Dense
            if producer is None:
                in_channels, in_positions = math.prod(int(d) for d in in_shape), 1
                per = 1
            else:
                per = flat_from or 1
            add(layer, "dense", int(layer.units), per, per, 1)
            channels, positions, flat_from = int(layer.units), 1, None
        producer = layer.name
        in_channels, in_positions = channels, positions
    last = out[-1]
    out[-1] = CostLayer(**{**last.__dict__, "prunable": False})
    return out


def legacy_layer_entries(model, layers) -> list[dict[str, Any]]:
    """reds_tf.pipeline._layer_entries before the graph: submodels.json ``layers``."""
    out = []
    for c in layers:
        e = {"name": c.name, "type": c.kind, "units": c.units, "prunable": c.prunable,
             "producer": c.producer}  # fmt: skip
        if c.kind in ("conv", "depthwise"):
            layer = model.get_layer(c.name)
            e["kernel"] = [int(v) for v in layer.kernel_size]
            e["strides"] = [int(v) for v in layer.strides]
            e["padding"] = str(layer.padding)
            e["output_hw"] = [int(layer.output_shape[1]), int(layer.output_shape[2])]
        out.append(e)
    return out


def _mixed():
    """Pools between convolutions, a strided conv, a Dense after Flatten of a map."""
    L = keras.layers
    inp = keras.Input((11, 9, 2), name="input")
    x = L.Conv2D(6, (3, 3), padding="same", activation="relu6", name="conv1")(inp)
    x = L.AveragePooling2D((3, 3), strides=(2, 2), padding="same", name="pool")(x)
    x = L.DepthwiseConv2D((3, 3), padding="same", name="dw1")(x)
    x = L.Conv2D(8, (1, 1), name="pw1", activation="relu")(x)
    x = L.MaxPooling2D((2, 2), strides=(1, 1), name="pool2")(x)
    x = L.Conv2D(5, (2, 2), strides=(2, 1), name="conv2", activation="relu")(x)
    x = L.Flatten(name="flatten")(x)
    x = L.Dropout(0.1, name="drop")(x)
    x = L.Dense(7, activation="relu", name="fc1")(x)
    return keras.Model(inp, L.Dense(4, name="logits")(x), name="mixed")


def _sequential():
    return keras.Sequential(
        [keras.Input((4, 4)), keras.layers.Flatten(), keras.layers.Dense(6, activation="relu",
         name="a"), keras.layers.Dense(2, name="b")], name="seq"
    )  # fmt: skip


MODELS = {
    "dnn": lambda: dnn((28, 28, 1), [32, 16], 10, dropout=0.1),
    "dnn_vector": lambda: dnn((20,), [8], 3),
    "sequential": _sequential,
    "cnn": lambda: cnn(
        (28, 28, 1),
        [
            {"filters": 6, "kernel": [10, 4], "strides": [1, 1]},
            {"filters": 5, "kernel": [10, 4], "strides": [2, 1]},
        ],
        [16, 12],
        10,
    ),  # fmt: skip
    "dscnn": lambda: dscnn(
        (28, 28, 1),
        {"filters": 8, "kernel": [3, 3], "strides": [2, 2]},
        [{"filters": 8, "strides": [1, 1]}, {"filters": 12, "strides": [2, 2]}],
        10,
    ),  # fmt: skip
    "mobilenet_v1": lambda: mobilenet_v1((32, 32, 3), 2, alpha=0.25),
    "mixed": _mixed,
}
# Every shipped config at its data set's input shape.
CONFIG_SHAPES = {
    "cifar10": (32, 32, 3), "fmnist": (28, 28, 1), "kws": (49, 10, 1), "vww": (96, 96, 3),
}  # fmt: skip


def _config_model(name: str):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    shape = CONFIG_SHAPES[name.split("_")[0]]
    if cfg.model.type == "dnn" and name.startswith("kws"):
        shape = (25, 10)  # the MFCC DNN input
    return build_model(cfg.model, shape, 10)


ALL = [*MODELS, *(p.stem for p in sorted(CONFIGS.glob("*.yaml")))]
# The former walks knew plain chains only, not the residual configs.
CHAINS = [
    n for n in ALL if n in MODELS or load_config(CONFIGS / f"{n}.yaml").model.type != "resnet"
]


def _model(name: str):
    return MODELS[name]() if name in MODELS else _config_model(name)


def _with_submodels(graph: ir.Graph, seed: int = 0) -> ir.Graph:
    """``graph`` with three nested submodels (random widths, the last full) and
    the metadata training records."""
    layers = cost_layers(graph)
    rng = np.random.default_rng(seed)
    full = full_widths(layers)
    subs, low = [], {c.name: 1 for c in free_layers(layers)}
    for k in range(3):
        if k < 2:
            low = {n: int(rng.integers(v, full[n] + 1)) for n, v in low.items()}
        else:
            low = {n: full[n] for n in low}
        w = {c.name: low.get(c.name, c.units) for c in layers}
        for c in layers:
            if c.kind == "depthwise":
                w[c.name] = w[c.producer] if c.producer else c.input_units
        subs.append(
            ir.Submodel(
                widths=w, budget=(k + 1) / 3, macs=model_macs(layers, w),
                macs_fraction=model_macs(layers, w) / model_macs(layers, full), params=0,
                accuracy=0.5, extra={"accuracy_before_finetune": 0.25, "knapsack_status": "ok"},
            )
        )  # fmt: skip
    return dataclasses.replace(
        graph, submodels=subs, dataset="none", data_options={}, block=1, bn_stats="shared"
    )


# -- equality with the former walks ------------------------------------------------------


@pytest.mark.parametrize("name", CHAINS)
def test_graph_gives_what_the_former_walks_computed(name):
    model = _model(name)
    graph = ir.from_keras(model)
    legacy = legacy_cost_layers(model)
    assert cost_layers(graph) == legacy
    assert [n.name for n in graph.width_nodes] == [c.name for c in legacy]
    assert graph.to_doc()["layers"] == legacy_layer_entries(model, legacy)
    # MACs: full model and a random submodel, through the one formula.
    layers = cost_layers(graph)
    rng = np.random.default_rng(0)
    for w in (full_widths(layers), {c.name: int(rng.integers(1, c.units + 1))
                                    for c in free_layers(layers)}):  # fmt: skip
        assert model_macs(layers, w) == model_macs(legacy, w)
    # Every node's width: chosen nodes as given, the rest follow their input.
    w = {c.name: max(1, c.units // 2) for c in free_layers(layers)}
    nw = graph.node_widths(w)
    for n in graph.nodes:
        if n.kind in ir.CHOSEN_KINDS:
            assert nw[n.name] == w.get(n.name, n.units)
        else:
            assert nw[n.name] == graph.input_width(n, nw)


# -- submodels.json ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["dnn", "cnn", "dscnn", "mobilenet_v1", "mixed"])
def test_round_trip_through_submodels_json(name, tmp_path):
    graph = _with_submodels(ir.from_keras(_model(name)))
    doc = graph.to_doc()
    assert list(doc)[:2] == ["format_version", "name"] and doc["format_version"] == 1
    (tmp_path / "submodels.json").write_text(json.dumps(doc, indent=2))
    back = rundir.load_graph(tmp_path, record=True)
    assert back.to_doc() == doc
    # The file holds the width graph: width nodes reading their producers, with
    # every recorded field; only the input shapes are not recorded.
    wg = graph.width_graph()
    assert back.submodels == graph.submodels
    keep = ("name", "kind", "inputs", "units", "out_shape", "prunable", "kernel", "strides")
    for a, b in zip(back.nodes, wg.nodes, strict=True):
        assert [getattr(a, f) for f in keep] == [getattr(b, f) for f in keep]
        assert a.in_shape is None and not back.has_shapes and graph.has_shapes
    # MACs: the file's recorded numbers are what the graph computes.
    assert graph_macs(back) == graph_macs(graph) == [s.macs for s in graph.submodels]
    for k in range(3):
        assert back.width_list(k) == [graph.submodels[k].widths[n.name] for n in wg.nodes]


def test_training_doc_keys_keep_their_order():
    graph = _with_submodels(ir.from_keras(_model("dscnn")))
    doc = graph.to_doc()
    assert list(doc) == [
        "format_version", "name", "dataset", "data_options", "input_shape", "num_classes",
        "block", "bn_stats", "layers", "submodels",
    ]  # fmt: skip
    assert list(doc["submodels"][0]) == [
        "index", "budget", "widths", "macs", "macs_fraction", "params", "accuracy",
        "accuracy_before_finetune", "knapsack_status",
    ]  # fmt: skip


def test_old_file_without_format_version_loads(tmp_path):
    """tests/data/tiny/submodels.json predates format_version and producer keys:
    each layer reads the one before it."""
    old = json.loads((TINY / "submodels.json").read_text())
    assert "format_version" not in old and "producer" not in old["layers"][0]
    graph = rundir.load_graph(TINY)
    assert [(n.name, n.inputs, n.units, n.prunable) for n in graph.nodes] == [
        ("fc1", ("input",), 12, True),
        ("fc2", ("fc1",), 10, True),
        ("logits", ("fc2",), 5, False),
    ]
    assert graph.width_list(0) == [5, 3, 5] and graph.num_classes == 5 and graph.block == 1
    assert graph_macs(graph) == [None, None, None]  # not recorded, no shapes
    doc = graph.to_doc()
    assert doc["format_version"] == 1 and doc["layers"][1]["producer"] == "fc1"
    # Written again it holds the same content plus the new keys.
    del doc["format_version"]
    for ly in doc["layers"]:
        del ly["producer"]
    assert doc == old
    (tmp_path / "submodels.json").write_text(json.dumps(graph.to_doc()))
    assert rundir.load_graph(tmp_path).to_doc() == graph.to_doc()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.__setitem__("format_version", 3), "'format_version' is 3, newer than"),
        (lambda d: d.__setitem__("format_version", "1"), "'format_version' must be an integer"),
        (lambda d: d["layers"][1].__setitem__("producer", "nope"), r"'layers\[1\].producer'"),
        (lambda d: d["layers"][1].__setitem__("producer", "fc2"), r"'layers\[1\].producer'"),
        (lambda d: d["layers"][0].__setitem__("name", "input"), "reserved for the model input"),
        (lambda d: d["layers"][0].__setitem__("kernel", [3]), r"'layers\[0\].kernel'"),
        (lambda d: d["layers"][0].__setitem__("padding", "full"), r"'layers\[0\].padding'"),
    ],
)
def test_bad_graph_keys_are_one_line_errors(tmp_path, change, message):
    doc = json.loads((TINY / "submodels.json").read_text())
    change(doc)
    (tmp_path / "submodels.json").write_text(json.dumps(doc))
    with pytest.raises(RunDirError, match=message) as e:
        rundir.load_graph(tmp_path)
    assert "\n" not in str(e.value) and str(e.value).endswith("re-run `reds train`")


def test_depthwise_width_tie_is_checked_on_load(tmp_path):
    graph = _with_submodels(ir.from_keras(_model("dscnn")))
    doc = graph.to_doc()
    doc["layers"][1]["units"] = 7  # dw1 narrower than conv1
    (tmp_path / "submodels.json").write_text(json.dumps(doc))
    with pytest.raises(RunDirError, match=r"'layers\[1\].units' must equal its producer's 8"):
        rundir.load_graph(tmp_path)


# -- several inputs: the residual Add of issue 18 ----------------------------------------


def _residual():
    L = keras.layers
    inp = keras.Input((8, 8, 3), name="input")
    x = L.Conv2D(6, 3, padding="same", name="conv1")(inp)
    y = L.ReLU(name="conv1_relu")(x)
    y = L.Conv2D(6, 3, padding="same", name="conv2")(y)
    x = L.Add(name="add1")([y, x])
    x = L.Flatten(name="flat")(L.AveragePooling2D(8, name="gap")(x))
    return keras.Model(inp, L.Dense(4, name="logits")(x), name="res")


def test_a_multi_input_node_is_representable():
    graph = ir.from_keras(_residual())
    add = graph.node("add1")
    assert add.kind == ir.ADD and add.inputs == ("conv2", "conv1") and add.units == 6
    assert [n.name for n in graph.consumers("conv1")] == ["conv1_relu", "add1"]
    assert not graph.is_chain() and graph.producer(graph.node("gap")) == "conv1"
    assert [n.name for n in graph.nodes if n.prunable] == ["conv1", "conv2"]
    # Joined widths must agree (a tied group): the graph says so.
    assert graph.node_widths({"conv1": 4, "conv2": 4})["add1"] == 4
    # Built by hand, too.
    n = ir.Node("sum", ir.ADD, ("logits", "fc1"), 5, (5,), (5,))
    g = ir.Graph("g", (5,), [ir.Node("fc1", ir.DENSE, ("input",), 5, (5,), (5,)),
                             ir.Node("logits", ir.DENSE, ("fc1",), 5, (5,), (5,)), n])  # fmt: skip
    assert g.output is n and g.node_widths({})["sum"] == 5
    with pytest.raises(ValueError, match="'sum' adds inputs of different widths"):
        g.node_widths({"fc1": 4})


def test_a_residual_graph_has_tied_groups_and_format_2(tmp_path):
    """The Add ties conv1 and conv2 (one width, one unit order): conv2 names its
    representative conv1; a consumer of the sum reads the group as conv1;
    submodels.json says so in format 2 (``tied``) and reads back."""
    graph = ir.from_keras(_residual())
    assert graph.tied_groups == {"conv1": ["conv1", "conv2"]}
    assert graph.node("conv2").tied == "conv1" and graph.node("conv1").tied is None
    assert graph.producer(graph.node("gap")) == "conv1"
    assert graph.node_widths({"conv1": 4})["conv2"] == 4
    with pytest.raises(ValueError, match="'conv2'.*tied to 'conv1'"):
        graph.node_widths({"conv1": 4, "conv2": 5})
    layers = cost_layers(graph)
    assert [(c.name, c.producer, c.tied) for c in layers] == [
        ("conv1", None, None), ("conv2", "conv1", "conv1"), ("logits", "conv1", None),
    ]  # fmt: skip
    assert [c.name for c in free_layers(layers)] == ["conv1"]
    graph = dataclasses.replace(
        graph,
        submodels=[ir.Submodel({"conv1": w, "conv2": w, "logits": 4}) for w in (2, 4, 6)],
        dataset="none",
    )
    doc = graph.to_doc()
    assert doc["format_version"] == 2 and doc["layers"][1]["tied"] == "conv1"
    (tmp_path / "submodels.json").write_text(json.dumps(doc))
    back = rundir.load_graph(tmp_path)
    assert back.to_doc() == doc and back.tied_groups == graph.tied_groups
    doc["submodels"][0]["widths"]["conv2"] = 4
    (tmp_path / "submodels.json").write_text(json.dumps(doc))
    with pytest.raises(RunDirError, match=r"widths.conv2' must equal its tied layer conv1's"):
        rundir.load_graph(tmp_path)
    doc["format_version"] = 1
    (tmp_path / "submodels.json").write_text(json.dumps(doc))
    with pytest.raises(RunDirError, match=r"'layers\[1\].tied' must name an earlier untied"):
        rundir.load_graph(tmp_path)
    # Joined with the model input, a group keeps the input's width: not prunable.
    L = keras.layers
    inp = keras.Input((6, 6, 3), name="input")
    x = L.Add(name="add")([inp, L.Conv2D(3, 3, padding="same", name="c")(inp)])
    x = L.Conv2D(5, 3, name="d")(x)
    g = ir.from_keras(keras.Model(inp, L.Dense(2, name="logits")(L.Flatten()(x))))
    assert [n.name for n in g.nodes if n.prunable] == ["d"] and not g.tied_groups


def test_structural_errors():
    d = ir.Node("fc1", ir.DENSE, ("input",), 4)
    with pytest.raises(ValueError, match="not an earlier node"):
        ir.Graph("g", (3,), [ir.Node("a", ir.DENSE, ("b",), 4), d])
    with pytest.raises(ValueError, match="used twice"):
        ir.Graph("g", (3,), [d, d])
    with pytest.raises(ValueError, match="reads 2 inputs"):
        ir.Graph("g", (3,), [d, ir.Node("x", ir.DENSE, ("fc1", "input"), 4)])
    with pytest.raises(ValueError, match="depthwise node 'dw' has 3 units"):
        ir.Graph("g", (4, 4, 2), [ir.Node("c", ir.CONV, ("input",), 4),
                                  ir.Node("dw", ir.DEPTHWISE, ("c",), 3)])  # fmt: skip
    with pytest.raises(RedsError, match="layer 'my_norm' of type LayerNormalization"):
        inp = keras.Input((8, 8, 1))
        x = keras.layers.LayerNormalization(name="my_norm")(inp)
        ir.from_keras(keras.Model(inp, keras.layers.Dense(3)(keras.layers.Flatten()(x))))


def test_knapsack_takes_the_graph():
    from reds_tf.knapsack import min_macs_fraction, min_widths, solve_nested

    graph = ir.from_keras(_model("dscnn"))
    layers = cost_layers(graph)
    assert free_layers(graph) == free_layers(layers)
    assert min_widths(graph, 4) == min_widths(layers, 4)
    assert min_macs_fraction(graph, 4) == min_macs_fraction(layers, 4)
    rng = np.random.default_rng(0)
    scores = {c.name: np.sort(rng.random(c.units))[::-1] for c in free_layers(layers)}
    a = solve_nested(graph, scores, [0.5, 1.0], 4, log=None)
    b = solve_nested(layers, scores, [0.5, 1.0], 4, log=None)
    assert a.widths == b.widths and a.macs == b.macs


# -- the C++ plan reads the graph and agrees with its MACs -------------------------------


@pytest.fixture(scope="module")
def small_conv():
    """A small DS-CNN with Dense after GAP, its int8 .tflite and a graph with submodels."""
    from reds_tf.quant.convert import convert_int8

    model = dscnn(
        (12, 10, 1), {"filters": 8, "kernel": [3, 3], "strides": [2, 2]},
        [{"filters": 8, "strides": [1, 1]}, {"filters": 12, "strides": [2, 2]}], 5,
    )  # fmt: skip
    x = np.random.default_rng(0).uniform(0, 1, (32, 12, 10, 1)).astype(np.float32)
    return _with_submodels(ir.from_keras(model)), convert_int8(model, x)


def test_plan_from_the_graph_or_its_file_is_the_same(small_conv):
    from reds_tf.codegen.plan import LOWER, SUPPORTED_OPS, build_plan

    graph, full = small_conv
    a = build_plan(full, graph)
    b = build_plan(full, json.loads(json.dumps(graph.to_doc())))
    assert a.fingerprint == b.fingerprint and a.arena == b.arena
    K = len(graph.submodels)
    assert [a.macs(k) for k in range(K)] == graph_macs(graph) == [s.macs for s in graph.submodels]
    # The lowering is a table: one small function per operator.
    assert SUPPORTED_OPS == tuple(LOWER) and {"CONV_2D", "RESHAPE"} <= set(LOWER)
    kinds = [ly.kind for ly in a.layers]
    pointwise = [n.name for n in graph.width_nodes if n.is_pointwise]
    assert pointwise == [ly.name for ly in a.layers if ly.kind == "pointwise"] == ["pw1", "pw2"]
    assert {"conv", "depthwise", "pointwise", "avgpool", "fully_connected"} <= set(kinds)


def test_plan_refuses_a_graph_that_disagrees(small_conv):
    from reds_tf.codegen.plan import build_plan

    graph, full = small_conv
    doc = graph.to_doc()
    doc["submodels"][0]["macs"] += 1
    with pytest.raises(RunDirError, match=r"submodel 0: .* MACs, the int8 model"):
        build_plan(full, doc)
    doc = graph.to_doc()
    doc["layers"][2]["kernel"] = [3, 3]  # pw1 is 1x1
    with pytest.raises(RunDirError, match=r"layer pw1: submodels.json records"):
        build_plan(full, doc)
    doc = graph.to_doc()
    doc["layers"][1]["type"] = "conv"  # dw1
    with pytest.raises(RunDirError, match="does not match the .tflite operator"):
        build_plan(full, doc)


def test_training_writes_the_graph(trained_run):
    """`reds train` saves submodels.json through the graph: format_version 1 (a
    chain), the layers of model.keras's graph, the knapsack's MACs equal the graph's."""
    doc = json.loads((trained_run / "submodels.json").read_text())
    assert doc["format_version"] == 1 < ir.FORMAT_VERSION
    graph = rundir.load_graph(trained_run, record=True)
    assert graph.to_doc() == doc
    model = keras.models.load_model(trained_run / "model.keras", compile=False)
    built = dataclasses.replace(ir.from_keras(model), submodels=graph.submodels)
    assert built.to_doc()["layers"] == doc["layers"]
    assert graph_macs(built) == graph_macs(graph) == [s["macs"] for s in doc["submodels"]]
