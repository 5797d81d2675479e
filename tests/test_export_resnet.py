"""Residual networks through the int8 export: MLPerf Tiny ResNet-8 (identity
and 1x1-projection shortcuts) on CIFAR-10 inputs, every submodel of the
generated runtime bit-exact with TFLite Micro (500 inputs); the arena keeps
every skip tensor alive across its block; the Arduino compile check; and
`reds train` + `reds export` of a small residual config end to end.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
from nano_build import nano_compile, needs_arm, undefined_symbols
from test_export_conv import check_every_submodel, export_case, realistic_batchnorm

from reds_tf import ir, memory
from reds_tf.codegen.plan import memory_steps
from reds_tf.codegen.render import render_sources
from reds_tf.quant import numerics, slicer

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
N_INPUTS = 500  # per submodel (the acceptance count)
FRACTIONS = (0.25, 0.5, 0.75, 1.0)


def nested_submodels(model, name: str) -> dict:
    """submodels.json (format 2) of ``model`` with uneven per-group widths:
    ceil(f * units) for the untied prunable layers, varied per layer; tied
    layers follow their group's representative."""
    graph = ir.from_keras(model)
    subs = []
    for f in FRACTIONS:
        chosen = {}
        for j, n in enumerate(x for x in graph.width_nodes if x.prunable and x.tied is None):
            g = min(1.0, f + 0.1 * (j % 3) * (f < 1.0))
            chosen[n.name] = max(1, int(np.ceil(g * n.units)))
        nw = graph.node_widths(chosen)
        subs.append(ir.Submodel({n.name: nw[n.name] for n in graph.width_nodes}, budget=f))
    doc = dataclasses.replace(graph, name=name, dataset="cifar10", submodels=subs).to_doc()
    assert doc["format_version"] == 2
    return doc


def resnet8():
    from reds_tf.models import resnet

    return resnet(
        (32, 32, 3),
        {"filters": 16, "kernel": [3, 3], "strides": [1, 1]},
        [{"filters": f, "strides": [s, s]} for f, s in ((16, 1), (32, 2), (64, 2))],
        10,
    )


@pytest.fixture(scope="module")
def resnet_case(tmp_path_factory):
    from reds_tf.data import load_dataset

    data = load_dataset("cifar10")
    model = resnet8()
    realistic_batchnorm(model, data.x_train[:64], seed=18)
    sub = nested_submodels(model, "resnet8_test")
    full, plan, rt = export_case(model, sub, data.x_train[:200], tmp_path_factory.mktemp("r8"))
    xq = numerics.quantize(data.x_test[:N_INPUTS], plan.input_scale, plan.input_zero_point)
    return model, sub, full, plan, rt, xq


def test_every_submodel_bit_exact_with_tflm(resnet_case):
    """500 CIFAR-10 test images x every submodel: runtime == TFLM; NumPy
    reference == TFLM on 20. The joins' widths follow their groups."""
    _, sub, full, plan, rt, xq = resnet_case
    check_every_submodel(full, plan, rt, sub, xq, 20)
    adds = [ly for ly in plan.layers if ly.kind == "add"]
    assert len(adds) == 3 and all(ly.activation == "relu" for ly in adds)
    widths = [s["widths"] for s in sub["submodels"]]
    assert adds[0].in_widths == [w["conv1"] for w in widths] == [w["s1_conv2"] for w in widths]
    assert adds[1].in_widths == [w["s2_proj"] for w in widths] == [w["s2_conv2"] for w in widths]
    assert len(set(adds[2].in_widths)) == 4  # the submodels really differ
    assert plan.macs(3) == 12_501_632  # MLPerf Tiny ResNet-8: 12.5 M MACs


def test_arena_keeps_every_skip_tensor_alive(resnet_case):
    """At every layer of every submodel, the buffers of all tensors still to be
    read (a block's skip tensor included) stay untouched (memory.check), and the
    planner on the Keras graph gives the same arena before training."""
    model, sub, _, plan, _, _ = resnet_case
    last_read = {}
    for i, ly in enumerate(plan.layers):
        for t in ly.inputs:
            last_read[t] = i
    where = {ly.output: i for i, ly in enumerate(plan.layers)}
    skip = [ly.inputs[0] for ly in plan.layers if ly.kind == "add"]
    assert any(last_read[t] - where[t] > 2 for t in skip)  # lives across its block
    graph = ir.from_keras(model)
    for k in range(len(sub["submodels"])):
        steps = memory_steps(plan, k)
        assert memory.check(steps, plan.placements[k]) == [], k
        before = memory.plan(memory.steps_from_graph(graph, sub["submodels"][k]["widths"]))
        assert before.arena_bytes == plan.placements[k].arena_bytes, k
    # The full model's peak: the stem's skip tensor, the block's input and its
    # output, 32 x 32 x 16 bytes each, then the ADD's 2 KB of tables.
    assert plan.arena_bytes == 3 * 32 * 32 * 16 + memory.ADD_SCRATCH_BYTES


@needs_arm
def test_resnet_runtime_compiles_with_the_nano_flags(resnet_case, tmp_path):
    """The Arduino compile check: Nano 33 BLE flags, -Werror, no <arm_acle.h>;
    the model calls the DSP ADD, conv (3x3 and strided 1x1), pool and FC kernels."""
    plan = resnet_case[3]
    src = tmp_path / "src"
    src.mkdir()
    for fname, text in render_sources(plan).items():
        (src / fname).write_text(text)
    objs = nano_compile(sorted(src.glob("*.cpp")), [src], tmp_path / "obj")
    called = undefined_symbols(objs["reds_model.cpp"]) | undefined_symbols(objs["rows.cpp"])
    assert {"reds_add_dsp", "reds_conv_dsp", "reds_avgpool_dsp", "reds_fc_dsp"} <= called


def test_reds_train_and_export_a_residual_config(tmp_path, monkeypatch):
    """`reds train` on a small residual config (identity and projection blocks;
    512 CIFAR-10 training and 300 test images) writes tied widths
    (submodels.json format 2); `reds export` is bit-exact with TFLite Micro on
    every submodel."""
    import yaml

    from reds_tf import data as datasets
    from reds_tf.export import run_export
    from reds_tf.pipeline import run_training

    full = datasets.load_dataset("cifar10")
    small = dataclasses.replace(
        full.limited(512), name="cifar10_small", x_test=full.x_test[:300], y_test=full.y_test[:300]
    )
    monkeypatch.setitem(datasets._REGISTRY, "cifar10_small", lambda: small)
    cfg = yaml.safe_load((REPO / "configs" / "resnet8.yaml").read_text())
    cfg["dataset"] = "cifar10_small"
    cfg["model"]["first"]["filters"] = 8
    cfg["model"]["blocks"] = [{"filters": 8, "strides": [1, 1]}, {"filters": 12, "strides": [2, 2]}]
    cfg["train"].update(epochs=1, learning_rate=0.05)
    cfg["finetune"].update(epochs=1)
    cfg["importance"] = {"batches": 4}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = run_training(path, out_dir=tmp_path / "run", verbose=0, log=lambda _m: None)
    doc = json.loads((run / "submodels.json").read_text())
    assert doc["format_version"] == 2
    tied = {ly["name"]: ly["tied"] for ly in doc["layers"] if "tied" in ly}
    assert tied == {"s1_conv2": "conv1", "s2_proj": "s2_conv2"}
    for s in doc["submodels"]:
        assert all(s["widths"][m] == s["widths"][r] for m, r in tied.items())
    export = run_export(run, limit=100, log=lambda _m: None)
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["runtime_check"].startswith("bit-exact with TFLite Micro on 100 test inputs")
    assert manifest["bn_stats"] == "per_submodel"
    assert slicer.weight_bytes((export / "model.tflite").read_bytes()) == manifest["weight_bytes"]


def _user_resnet8(input_shape=(16, 16, 3)):
    """MLPerf Tiny's ResNet-8 as its reference Keras code writes it: convs with
    bias and an L2 regulariser, Activation('relu'), `add([x, y])`, projections
    without BatchNorm, AveragePooling2D + Flatten, Dense(softmax)."""
    import tf_keras as keras

    L, reg = keras.layers, keras.regularizers.l2(1e-4)

    def conv(f, k, s=1):
        return L.Conv2D(f, k, strides=s, padding="same", kernel_regularizer=reg)

    inp = keras.Input(input_shape)
    x = L.Activation("relu")(L.BatchNormalization()(conv(16, 3)(inp)))
    for f, s in ((16, 1), (32, 2), (64, 2)):
        y = L.Activation("relu")(L.BatchNormalization()(conv(f, 3, s)(x)))
        y = L.BatchNormalization()(conv(f, 3)(y))
        if s != 1:
            x = conv(f, 1, s)(x)
        x = L.Activation("relu")(keras.layers.add([x, y]))
    x = L.Flatten()(L.AveragePooling2D(pool_size=int(x.shape[1]))(x))
    return keras.Model(inp, L.Dense(10, activation="softmax")(x))


def test_a_users_resnet8_converts_exactly_and_exports_bit_exact(tmp_path):
    """`reds train --base` accepts a saved residual model: the canonical model
    computes the user's logits (softmax dropped), the Adds become tied groups,
    and every submodel's runtime equals TFLite Micro."""
    import tf_keras as keras

    from reds_tf.errors import RedsError
    from reds_tf.models import load_base_model

    user = _user_resnet8()
    rng = np.random.default_rng(4)
    x = rng.uniform(0, 1, (64, 16, 16, 3)).astype(np.float32)
    realistic_batchnorm(user, x, seed=4)
    user.save(tmp_path / "user.h5")
    model = load_base_model(tmp_path / "user.h5", (16, 16, 3), 10)
    want = user.predict(x, verbose=0)
    got = keras.activations.softmax(model(x, training=False)).numpy()
    assert np.abs(got - want).max() <= 1e-5 and model.layers[-1].name == "logits"
    graph = ir.from_keras(model)
    assert len(graph.tied_groups) == 3 and all(len(m) == 2 for m in graph.tied_groups.values())
    sub = nested_submodels(model, "user_resnet8")
    full, plan, rt = export_case(model, sub, x, tmp_path)
    xq = numerics.quantize(
        rng.uniform(0, 1, (100, 16, 16, 3)), plan.input_scale, plan.input_zero_point
    )
    check_every_submodel(full, plan, rt, sub, xq, 10)
    # Joins other than a two-input Add are named.
    inp = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(3, 3, padding="same", name="a")(inp)
    s = keras.layers.Add(name="sum3")([inp, a, a])
    bad = keras.Model(inp, keras.layers.Dense(10)(keras.layers.Flatten()(s)))
    with pytest.raises(RedsError, match="Add 'sum3' must sum exactly two inputs"):
        load_base_model(_saved(bad, tmp_path / "bad.keras"), (8, 8, 3), 10)


def _saved(model, path):
    model.save(path)
    return path
