"""Convolutional int8 export: CNN-S, DS-CNN-S and MobileNetV1 (random weights,
realistic BatchNorm statistics), every submodel bit-exact with TFLite Micro.

Each model is converted ONCE per module; every submodel's sliced .tflite runs
in TFLM (subprocess) and the generated C++ runtime (ctypes) on the same
inputs; the NumPy reference is checked on a subset.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import shutil
import time

import numpy as np
import pytest
from nano_build import defined_functions, nano_compile, needs_arm, undefined_symbols

from reds_tf import ir, memory
from reds_tf.codegen.plan import BALANCED_ROWS, build_plan, fused_steps, memory_steps
from reds_tf.codegen.render import render_sources
from reds_tf.errors import RedsError
from reds_tf.quant import numerics, slicer
from reds_tf.quant.convert import convert_int8
from reds_tf.quant.tflm import run_tflm
from reds_tf.sim import Runtime

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FRACTIONS = (0.25, 0.5, 0.75, 1.0)


def width_layers(model) -> list[dict]:
    """The submodels.json ``layers`` of a tf_keras model (contract: conv,
    depthwise, dense in graph order; depthwise tied to its producer)."""
    import tf_keras as keras

    out, producer = [], None
    for ly in model.layers:
        if isinstance(ly, keras.layers.DepthwiseConv2D):
            kind, units = "depthwise", None
        elif isinstance(ly, keras.layers.Conv2D):
            kind, units = "conv", int(ly.filters)
        elif isinstance(ly, keras.layers.Dense):
            kind, units = "dense", int(ly.units)
        else:
            continue
        if kind == "depthwise":
            units = next(x["units"] for x in out if x["name"] == producer)
        out.append(
            {
                "name": ly.name,
                "type": kind,
                "units": units,
                "prunable": kind != "depthwise" and ly.name != "logits",
                "producer": producer,
            }
        )
        producer = ly.name
    return out


def handmade_submodels(model, name: str, dataset: str) -> dict:
    """submodels.json with widths = ceil(fraction * units) per prunable layer,
    depthwise = its producer's width, logits full; fractions vary per layer so
    that the nested strips are uneven."""
    layers = width_layers(model)
    subs = []
    for k, f in enumerate(FRACTIONS):
        widths: dict[str, int] = {}
        for j, ly in enumerate(layers):
            if ly["type"] == "depthwise":
                widths[ly["name"]] = widths[ly["producer"]] if ly["producer"] else ly["units"]
            elif not ly["prunable"]:
                widths[ly["name"]] = ly["units"]
            else:
                g = min(1.0, f + 0.1 * (j % 3) * (f < 1.0))
                widths[ly["name"]] = max(1, int(np.ceil(g * ly["units"])))
        subs.append({"index": k, "budget": f, "widths": widths})
    return {
        "name": name,
        "dataset": dataset,
        "input_shape": [int(d) for d in model.inputs[0].shape[1:]],
        "num_classes": int(model.outputs[0].shape[-1]),
        "layers": layers,
        "submodels": subs,
    }


def realistic_batchnorm(model, x: np.ndarray, seed: int = 0) -> None:
    """Give every BatchNorm the statistics of its actual input on ``x`` (so a deep
    random net neither explodes nor collapses), random gamma/beta."""
    import tf_keras as keras

    rng = np.random.default_rng(seed)
    for ly in model.layers:
        if not isinstance(ly, keras.layers.BatchNormalization):
            continue
        probe = keras.Model(model.inputs, ly.input)
        h = probe(x, training=False).numpy()
        axes = tuple(range(h.ndim - 1))
        c = h.shape[-1]
        ly.set_weights(
            [
                rng.uniform(0.5, 1.5, c).astype(np.float32),
                rng.uniform(-0.2, 0.5, c).astype(np.float32),
                h.mean(axis=axes).astype(np.float32),
                (h.var(axis=axes) + 1e-3).astype(np.float32),
            ]
        )


def export_case(model, sub: dict, x_cal: np.ndarray, tmp) -> tuple[bytes, object, Runtime]:
    full = convert_int8(model, x_cal)
    plan = build_plan(full, sub)
    src = tmp / "src"
    src.mkdir()
    for fname, text in render_sources(plan).items():
        (src / fname).write_text(text)
    return full, plan, Runtime(src, tuple(plan.input_shape))


def check_every_submodel(full, plan, rt, sub, xq, n_ref: int) -> list[float]:
    """Runtime == TFLM on every row of xq and every submodel; NumPy reference ==
    TFLM on the first n_ref rows. Returns the TFLM seconds per submodel."""
    names = [ly["name"] for ly in sub["layers"]]
    times = []
    for k, s in enumerate(sub["submodels"]):
        buf = slicer.slice_model(full, [s["widths"][n] for n in names])
        t0 = time.perf_counter()
        want = run_tflm(buf, xq).outputs
        times.append(time.perf_counter() - t0)
        got = rt.predict(xq, k)
        assert got.shape == want.shape == (len(xq), sub["num_classes"])
        np.testing.assert_array_equal(got, want, err_msg=f"submodel {k}")
        np.testing.assert_array_equal(plan.reference(xq[:n_ref], k), want[:n_ref])
        assert rt.macs(k) == plan.macs(k)
    # Not vacuous: the outputs vary with the input.
    assert len({tuple(r) for r in want.tolist()}) > len(xq) // 10
    return times


def weights_stored_once(full: bytes, plan) -> None:
    assert plan.weight_bytes == slicer.weight_bytes(full)
    assert f"#define REDS_WEIGHT_BYTES {plan.weight_bytes}u" in render_sources(plan)["reds_model.h"]


N_INPUTS = 500  # per submodel and model (the acceptance count)
N_REF = 40  # NumPy reference rows (slow einsum on big maps)


def _fmnist(n: int) -> tuple[np.ndarray, np.ndarray]:
    from reds_tf.data import load_dataset

    d = load_dataset("fashion_mnist")
    return d.x_test[:n], d.x_train[:200]


def _build(name: str):
    """(model, evaluation inputs (float), calibration inputs (float))."""
    from reds_tf import models

    if name == "mobilenet_v1":
        rng = np.random.default_rng(0)
        model = models.mobilenet_v1((96, 96, 3), 2, alpha=0.25)
        x = rng.uniform(0, 1, (N_INPUTS, 96, 96, 3)).astype(np.float32)
        cal = rng.uniform(0, 1, (100, 96, 96, 3)).astype(np.float32)
    else:
        x, cal = _fmnist(N_INPUTS)
        if name == "dscnn_s":
            model = models.dscnn(
                (28, 28, 1),
                {"filters": 64, "kernel": [3, 3], "strides": [2, 2]},
                [{"filters": 64, "strides": [1, 1]}] * 4,
                10,
            )
        else:  # CNN-S of the paper on a 28x28x1 input
            model = models.cnn(
                (28, 28, 1),
                [
                    {"filters": 28, "kernel": [10, 4], "strides": [1, 1]},
                    {"filters": 30, "kernel": [10, 4], "strides": [2, 1]},
                ],
                [16, 128],
                10,
            )
    realistic_batchnorm(model, cal[:64])
    return model, x, cal


@pytest.fixture(scope="module", params=["cnn_s", "dscnn_s", "mobilenet_v1"])
def case(request, tmp_path_factory):
    model, x, cal = _build(request.param)
    sub = handmade_submodels(model, request.param, "fashion_mnist")
    full, plan, rt = export_case(model, sub, cal, tmp_path_factory.mktemp(request.param))
    xq = numerics.quantize(x, plan.input_scale, plan.input_zero_point)
    return request.param, model, sub, full, plan, rt, xq


def test_every_submodel_bit_exact_with_tflm(case):
    """500 inputs x every submodel: runtime == TFLM; NumPy reference == TFLM on 40."""
    name, _, sub, full, plan, rt, xq = case
    assert len(xq) == N_INPUTS
    check_every_submodel(full, plan, rt, sub, xq, N_REF)
    kinds = {ly.kind for ly in plan.layers}
    expect = {
        "cnn_s": {"conv", "reshape", "fully_connected"},
        "dscnn_s": {"conv", "depthwise", "pointwise", "avgpool", "fully_connected"},
        "mobilenet_v1": {"conv", "depthwise", "pointwise", "avgpool", "fully_connected"},
    }[name]
    assert expect <= kinds


def test_weights_stored_once_and_macs(case):
    name, _, sub, full, plan, _, _ = case
    weights_stored_once(full, plan)
    # Every submodel reads a prefix: the nested arrays hold each weight exactly once.
    for ly in plan.layers:
        if ly.full_weights is not None:
            assert ly.weights.size == ly.full_weights.size
    # MACs follow the contract's formulas (conv kh*kw*cin*cout*H*W, depthwise kh*kw*c*H*W).
    k = 0
    w = sub["submodels"][k]["widths"]
    want = 0
    for ly in plan.layers:
        if ly.kind in ("conv", "pointwise"):
            want += ly.kernel[0] * ly.kernel[1] * ly.in_widths[k] * w[ly.name] * np.prod(ly.out_hw)
        elif ly.kind == "depthwise":
            want += ly.kernel[0] * ly.kernel[1] * w[ly.name] * np.prod(ly.out_hw)
        elif ly.kind == "fully_connected":
            want += ly.in_widths[k] * w[ly.name]
    assert plan.macs(k) == want < plan.macs(len(sub["submodels"]) - 1)


def _geometry(s: memory.Step) -> tuple:
    """A step without its name and tensor ids (the .tflite names and numbers apart)."""
    return tuple(
        v for f, v in dataclasses.asdict(s).items() if f not in ("name", "inputs", "output")
    )


def test_arena_placement_is_safe_and_in_place(case):
    """For every submodel the placement passes every rule of the memory planner
    (each layer reads where its producer wrote; outputs, rings, windows and
    scratch stay inside the arena and off every tensor still to be read; an
    output overlaps its input only through the ring, within the safe shift),
    the runtime's arena is the largest submodel's, and the in-place layers make
    it smaller than separate input and output buffers would. The planner on the
    Keras graph, before training, sees the same layers and makes the same plan
    (fusions included)."""
    name, model, sub, _, plan, rt, _ = case
    K = len(sub["submodels"])
    assert rt.arena_bytes == plan.arena_bytes == max(plan.arena["per_submodel"])
    assert rt.submodel_arena_bytes == plan.arena["per_submodel"]
    graph = ir.from_keras(model)
    before = [memory.steps_from_graph(graph, s["widths"]) for s in sub["submodels"]]
    fused, placements = memory.plan_submodels(before, min_rows=BALANCED_ROWS)  # the default
    assert fused == plan.fused
    for k in range(K):
        steps = fused_steps(plan, k)
        placement = plan.placements[k]
        assert memory.check(steps, placement) == [], k
        assert [_geometry(s) for s in before[k]] == [_geometry(s) for s in memory_steps(plan, k)]
        assert placements[k].arena_bytes == placement.arena_bytes
        separate = max(s.in_bytes + s.out_bytes for s in memory_steps(plan, k)[1:-1])
        assert placement.arena_bytes < separate + max(s.scratch for s in steps) + 8
    assert any(
        sl.delay >= 0 and sl.dst < sl.src + s.in_bytes and sl.src < sl.dst + s.out_bytes
        for s, sl in zip(fused_steps(plan, K - 1), plan.placements[-1].slots, strict=True)
    )
    if name == "mobilenet_v1":  # 96x96: the 48x48x16 pointwise map is never whole
        assert plan.fused
        unfused = max(memory.plan(s).arena_bytes for s in before)
        assert plan.arena_bytes < unfused


def test_sliced_conv_weights_are_shared_prefixes(case):
    """The submodel .tflite holds prefixes of the full int8 weights (depthwise:
    channel axis last) with the per-channel scales cut to the width."""
    _, _, sub, full, _, _, _ = case
    names = [ly["name"] for ly in sub["layers"]]
    fm = slicer.read_model(full)
    fops = slicer.width_ops(fm)
    part = slicer.read_model(
        slicer.slice_model(full, [sub["submodels"][0]["widths"][n] for n in names])
    )
    pops = slicer.width_ops(part)
    fsg, psg = fm.subgraphs[0], part.subgraphs[0]
    for f, p in zip(fops, pops, strict=True):
        fw = slicer.tensor_data(fm, fsg.tensors[f.weights])
        pw = slicer.tensor_data(part, psg.tensors[p.weights])
        opname = slicer.op_name(fm, fsg.operators[f.op_index])
        if opname == "DEPTHWISE_CONV_2D":
            np.testing.assert_array_equal(pw, fw[..., : pw.shape[-1]])
            n = pw.shape[-1]
        elif opname == "CONV_2D":
            np.testing.assert_array_equal(pw, fw[: pw.shape[0], :, :, : pw.shape[3]])
            n = pw.shape[0]
        else:
            n = pw.shape[0]
            assert pw.shape[1] <= fw.shape[1]
        scales = psg.tensors[p.weights].quantization.scale
        np.testing.assert_array_equal(
            scales, np.asarray(fsg.tensors[f.weights].quantization.scale)[:n]
        )
        out = psg.tensors[p.output]
        assert int(out.shape[-1]) == n


@pytest.mark.parametrize(
    "in_w,out_w,kernel",
    [([2, 3, 5], [1, 4, 6], (3, 3)), ([4], [4], (1, 1)), ([1, 1, 3], [2, 2, 2], (2, 3))],
)
def test_nested_conv_layout_prefix_property(in_w, out_w, kernel):
    """Submodel k's conv weights are the first kh*kw*i_k*o_k bytes, in nested im2col order."""
    from reds_tf.codegen import plan as P

    kh, kw = kernel
    w = np.random.default_rng(0).integers(-127, 128, (out_w[-1], kh, kw, in_w[-1]), dtype=np.int8)
    flat = P.nest_conv_weights(w, in_w, out_w)
    assert flat.size == w.size
    for k in range(len(in_w)):
        n = kh * kw * in_w[k]
        cols = P.conv_column_order(kh, kw, in_w)[:n]
        mat = P.unnest_fc_weights(flat, [kh * kw * v for v in in_w], out_w, k)
        sub = w[: out_w[k], :, :, : in_w[k]]
        np.testing.assert_array_equal(mat, sub[:, cols[:, 0], cols[:, 1], cols[:, 2]])
        # The columns of submodel k are exactly the (ky, kx, c < i_k) positions.
        assert sorted(map(tuple, cols.tolist())) == sorted(
            (a, b, c) for a in range(kh) for b in range(kw) for c in range(in_w[k])
        )
    dw = w[0]  # (kh, kw, C) depthwise
    flat = P.nest_depthwise_weights(dw)
    for c in range(1, dw.shape[-1] + 1):
        np.testing.assert_array_equal(
            flat[: c * kh * kw].reshape(c, kh, kw), np.transpose(dw[..., :c], (2, 0, 1))
        )


def test_windowed_pool_relu6_and_linear_activations(tmp_path):
    """Windowed AVERAGE_POOL_2D (SAME, odd sizes: partial windows), fused ReLU6,
    a depthwise conv without activation, VALID strided conv, FC after Flatten."""
    import tf_keras as keras

    inp = keras.Input((11, 9, 2), name="input")
    x = keras.layers.Conv2D(6, (3, 3), padding="same", activation="relu6", name="conv1")(inp)
    x = keras.layers.AveragePooling2D((3, 3), strides=(2, 2), padding="same", name="pool")(x)
    x = keras.layers.DepthwiseConv2D((3, 3), padding="same", name="dw1")(x)
    x = keras.layers.Conv2D(8, (1, 1), name="pw1", activation="relu")(x)
    x = keras.layers.AveragePooling2D((2, 2), strides=(1, 1), padding="valid", name="pool2")(x)
    x = keras.layers.Conv2D(5, (2, 2), strides=(2, 1), name="conv2", activation="relu")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    out = keras.layers.Dense(4, name="logits")(x)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(3)
    for ly in model.layers:
        ws = ly.get_weights()
        if ws:
            ly.set_weights([rng.normal(0, 0.6, w.shape).astype(np.float32) for w in ws])
    x = rng.uniform(0, 1, (600, 11, 9, 2)).astype(np.float32)
    sub = handmade_submodels(model, "mixed", "none")
    full, plan, rt = export_case(model, sub, x[500:], tmp_path)
    assert [ly.kind for ly in plan.layers if ly.kind != "reshape"] == [
        "conv", "avgpool", "depthwise", "pointwise", "avgpool", "conv", "conv",
    ]  # fmt: skip
    pools = [ly for ly in plan.layers if ly.kind == "avgpool"]
    assert pools[0].padding == (1, 1) and pools[0].out_hw == (6, 5)
    conv1 = plan.layers[0]
    assert conv1.activation == "relu6" and conv1.act_min == conv1.output_zero_point
    assert plan.layers[2].activation == "none"
    xq = numerics.quantize(x[:500], plan.input_scale, plan.input_zero_point)
    check_every_submodel(full, plan, rt, sub, xq, 100)


def _maxpool_cnn():
    """Conv+BN+ReLU -> MaxPooling2D(2) -> depthwise+BN+ReLU -> 1x1 conv+BN ->
    MaxPooling2D(3, strides 2, SAME) -> ReLU (fused into the pool: an active
    clamp) -> AveragePooling2D(full map) + Flatten -> Dense. Max and average
    pools share the runtime's pool table."""
    import tf_keras as keras

    L = keras.layers
    inp = keras.Input((20, 18, 3), name="input")
    x = L.Conv2D(12, 3, padding="same", use_bias=False, name="conv1")(inp)
    x = L.ReLU(name="conv1_relu")(L.BatchNormalization(name="conv1_bn")(x))
    x = L.MaxPooling2D(2, name="mp1")(x)  # 20x18 -> 10x9
    x = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw1")(x)
    x = L.ReLU(name="dw1_relu")(L.BatchNormalization(name="dw1_bn")(x))
    x = L.Conv2D(16, 1, use_bias=False, name="pw1")(x)
    x = L.BatchNormalization(name="pw1_bn")(x)
    x = L.MaxPooling2D(3, strides=2, padding="same", name="mp2")(x)  # -> 5x5, padded
    x = L.ReLU(name="mp2_relu")(x)
    x = L.AveragePooling2D((5, 5), name="gap")(x)
    x = L.Flatten(name="gap_flatten")(x)
    out = L.Dense(6, name="logits")(x)
    return keras.Model(inp, out)


def test_maxpool_model_every_submodel_bit_exact_with_tflm(tmp_path):
    """MAX_POOL_2D (VALID after a ReLU; SAME with partial windows and a fused ReLU
    clamp) in a nested conv model: generated runtime == TFLM on every submodel
    (400 inputs), NumPy reference == TFLM on 100."""
    rng = np.random.default_rng(8)
    model = _maxpool_cnn()
    x = rng.uniform(0, 1, (500, 20, 18, 3)).astype(np.float32)
    realistic_batchnorm(model, x[400:], seed=8)
    sub = handmade_submodels(model, "maxpool_cnn", "none")
    full, plan, rt = export_case(model, sub, x[400:], tmp_path)
    kinds = [ly.kind for ly in plan.layers if ly.kind != "reshape"]
    assert kinds == [
        "conv",
        "maxpool",
        "depthwise",
        "pointwise",
        "maxpool",
        "avgpool",
        "fully_connected",
    ]
    mp1, mp2 = [ly for ly in plan.layers if ly.kind == "maxpool"]
    assert (mp1.kernel, mp1.stride, mp1.padding, mp1.out_hw) == ((2, 2), (2, 2), (0, 0), (10, 9))
    assert (mp2.kernel, mp2.stride, mp2.padding, mp2.out_hw) == ((3, 3), (2, 2), (0, 1), (5, 5))
    assert mp1.act_min == -128 and mp2.act_min > -128  # mp2 carries the fused ReLU
    # Nested: each pool keeps its producer's per-submodel width, channels a prefix.
    widths = [s["widths"] for s in sub["submodels"]]
    assert mp1.in_widths == mp1.out_widths == [w["conv1"] for w in widths]
    assert mp2.in_widths == mp2.out_widths == [w["pw1"] for w in widths]
    assert len(set(mp1.in_widths)) == 4 and len(set(mp2.in_widths)) == 3
    src = render_sources(plan)["reds_model.cpp"]
    assert src.count("reds_run_pool(REDS_OP_MAXPOOL, &reds_pool_layers[") == 2
    assert "reds_run_pool(REDS_OP_AVGPOOL, &reds_pool_layers[2]" in src
    xq = numerics.quantize(x[:400], plan.input_scale, plan.input_zero_point)
    check_every_submodel(full, plan, rt, sub, xq, 100)

    # Not vacuous: mp2's clamp changes some outputs of the full model.
    fm = slicer.read_model(full)
    sg = fm.subgraphs[0]
    ops = [op for op in sg.operators if slicer.op_name(fm, op) == "MAX_POOL_2D"]
    t_in = int(ops[1].inputs[0])
    h = run_tflm(full, xq[:100], tensors=[t_in]).tensors[t_in].reshape(100, 10, 9, 16)
    args = (mp2.kernel, mp2.stride, mp2.padding, mp2.out_hw)
    clamped = numerics.maxpool_int8(h, *args, mp2.act_min, mp2.act_max)
    assert np.count_nonzero(clamped != numerics.maxpool_int8(h, *args)) > 50

    # TFLM requires one quantisation in and out; the plan refuses anything else.
    out_t = sg.tensors[int(ops[0].outputs[0])]
    out_t.quantization.scale = np.asarray(out_t.quantization.scale, np.float32) * 2
    with pytest.raises(RedsError, match="MAX_POOL_2D with different input/output quantisation"):
        build_plan(slicer.write_model(fm), sub)


def make_dscnn_run(run_dir, *, blocks: int = 2, filters: int = 16):
    """A small DS-CNN run directory for Fashion-MNIST (model.keras +
    submodels.json, random weights with realistic BN statistics)."""
    import json

    from reds_tf import models

    model = models.dscnn(
        (28, 28, 1),
        {"filters": filters, "kernel": [3, 3], "strides": [2, 2]},
        [{"filters": filters, "strides": [1, 1]}] * blocks,
        10,
    )
    x, cal = _fmnist(64)
    realistic_batchnorm(model, cal[:64])
    run_dir.mkdir(parents=True, exist_ok=True)
    model.save(run_dir / "model.keras")
    sub = handmade_submodels(model, "fmnist_dscnn_test", "fashion_mnist")
    (run_dir / "submodels.json").write_text(json.dumps(sub, indent=1))
    return model, sub


def test_reds_export_of_a_conv_run(tmp_path):
    """`reds export` on a DS-CNN run: manifest, submodel files, runtime check,
    float accuracy of the sliced float model next to the int8 accuracy."""
    import json

    from reds_tf.export import run_export

    run = tmp_path / "fmnist_dscnn_test"
    make_dscnn_run(run)
    export = run_export(run, limit=200, log=lambda _m: None)
    m = json.loads((export / "manifest.json").read_text())
    assert m["runtime_check"] == "bit-exact with TFLite Micro on 200 test inputs per submodel"
    assert len(m["submodels"]) == 4 and all(
        (export / e["tflite"]).is_file() for e in m["submodels"]
    )
    assert m["weight_bytes"] == slicer.weight_bytes((export / "model.tflite").read_bytes())
    for e in m["submodels"]:
        assert 0.0 <= e["float_accuracy"] <= 1.0 and 0.0 <= e["int8_accuracy"] <= 1.0
    # Random weights: int8 and float still agree on most predictions' accuracy level.
    full = m["submodels"][-1]
    assert abs(full["float_accuracy"] - full["int8_accuracy"]) < 0.1


def test_conv_runtime_compiles_warning_free(case, tmp_path):
    """Host g++ (-std=gnu++14 -funsigned-char, as on the board), -Wall -Wextra -Werror."""
    import subprocess

    _, _, _, _, plan, _, _ = case
    for fname, text in render_sources(plan).items():
        (tmp_path / fname).write_text(text)
    flags = ["-std=gnu++14", "-funsigned-char", "-Wall", "-Wextra", "-Wvla", "-Werror", "-O2"]
    for cpp in sorted(tmp_path.glob("*.cpp")):
        cmd = ["g++", *flags, "-c", str(cpp), "-o", str(tmp_path / "x.o")]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0 and not proc.stderr, f"g++ {cpp.name}: {proc.stderr}"


@needs_arm
def test_conv_runtime_compiles_with_the_nano_flags_and_gcc7_headers(case, tmp_path):
    """The Arduino compile check on CNN-S, DS-CNN-S and MobileNetV1 runtimes:
    the Nano 33 BLE's flags, -Werror, a failing <arm_acle.h>; every DSP conv
    kernel is compiled in and the model calls the DSP variants (through the row
    runner, rows.cpp)."""
    _, _, _, _, plan, _, _ = case
    src = tmp_path / "src"
    src.mkdir()
    for fname, text in render_sources(plan).items():
        (src / fname).write_text(text)
    objs = nano_compile(sorted(src.glob("*.cpp")), [src], tmp_path / "obj")
    dsp = {"reds_conv_dsp", "reds_pointwise_dsp", "reds_depthwise_dsp", "reds_avgpool_dsp"}
    defined = set().union(*(defined_functions(o) for n, o in objs.items() if "_dsp" in n))
    assert dsp <= defined
    used = {ly.kind for ly in plan.layers}
    assert {"reds_run_conv", "reds_run_pool", "reds_run_fc"} & undefined_symbols(
        objs["reds_model.cpp"]
    )
    called = undefined_symbols(objs["rows.cpp"])
    for kind in ("conv", "pointwise", "depthwise"):
        if kind in used:
            assert f"reds_{kind}_dsp" in called, kind


@pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("arm-none-eabi-gcc", "qemu-system-arm")),
    reason="needs gcc-arm-none-eabi and qemu-system-arm (make setup installs them)",
)
def test_dsp_runtime_in_qemu_equals_the_host_runtime(case, tmp_path):
    """The generated runtime with the Cortex-M4 DSP kernels, built with the
    Nano's flags and run in QEMU (in-place rows, bands and, for MobileNetV1, the
    fused pointwise + depthwise step all on the DSP path), computes exactly what
    the host runtime (== TFLM, above) does on every submodel."""
    from reds_tf import bench

    _, _, sub, _, plan, rt, xq = case
    src = tmp_path / "src"
    src.mkdir()
    for fname, text in render_sources(plan).items():
        (src / fname).write_text(text)
    elf = bench.build_elf(src, tmp_path, "dsp")
    x = xq[:3].reshape(3, -1)
    blob = tmp_path / "inputs.bin"
    blob.write_bytes(bench.inputs_blob(x))
    _, uart = bench.run_qemu(elf, bench.build_plugin(), blob, tmp_path / "qemu")
    K = len(sub["submodels"])
    got = bench.parse_uart(uart, len(x), K, sub["num_classes"])
    assert got["variant"] == "dsp"
    for k in range(K):
        np.testing.assert_array_equal(got["outputs"][:, k], rt.predict(xq[:3], k), err_msg=str(k))


def test_arena_modes(case, tmp_path):
    """--arena smallest: never more than the default (balanced), which computes
    at least two rows per call; --arena fastest: no in-place rows, no fusion,
    every layer one kernel call, never smaller than the default; a byte count:
    every submodel gets exactly that room (and runs faster ways within it);
    below the full model's smallest arena: a one-line error. The fastest
    runtime is bit-exact as well."""
    name, _, sub, full, plan, _, xq = case
    small = build_plan(full, sub, arena="smallest")
    assert small.arena_bytes <= plan.arena_bytes  # the default, balanced
    for k, p in enumerate(small.placements):
        assert memory.check(fused_steps(small, k), p) == []
        assert p.arena_bytes <= plan.placements[k].arena_bytes
    # balanced: every layer run through its ring computes >= 2 rows per call
    for k, p in enumerate(plan.placements):
        for st, sl in zip(fused_steps(plan, k), p.slots, strict=True):
            if sl.delay >= 0 and st.kind != memory.FUSED and st.out_hw[0] >= 2:
                assert sl.rows >= 2, (k, st.name)
    fast = build_plan(full, sub, arena="fastest")
    assert not fast.fused
    assert all(sl.delay < 0 for p in fast.placements for sl in p.slots)
    assert fast.arena_bytes >= plan.arena_bytes
    for k, p in enumerate(fast.placements):
        assert memory.check(fused_steps(fast, k), p) == []
    room = plan.arena_bytes + 1000
    roomy = build_plan(full, sub, arena=room)
    assert roomy.arena["per_submodel"] == [room & ~3] * len(sub["submodels"])
    with pytest.raises(RedsError, match="below the full model's smallest arena without streams"):
        build_plan(full, sub, arena=small.arena_bytes - 4)
    # A submodel's memory budget (submodels.json) bounds what fastest gives it.
    capped = copy.deepcopy(sub)
    cap = plan.placements[0].arena_bytes
    capped["submodels"][0]["memory_budget_bytes"] = cap
    fast_capped = build_plan(full, capped, arena="fastest")
    assert fast_capped.placements[0].arena_bytes <= cap
    for k, p in enumerate(fast_capped.placements):
        assert memory.check(fused_steps(fast_capped, k), p) == []
    if name == "dscnn_s":
        src = tmp_path / "src"
        src.mkdir()
        for fname, text in render_sources(fast).items():
            (src / fname).write_text(text)
        rt = Runtime(src, tuple(fast.input_shape))
        for k in range(len(sub["submodels"])):
            np.testing.assert_array_equal(rt.predict(xq[:50], k), case[5].predict(xq[:50], k))


@needs_arm
@pytest.mark.skipif(shutil.which("qemu-system-arm") is None, reason="needs qemu-system-arm")
def test_streamed_runtime_equals_the_host_runtime(case, tmp_path):
    """--arena smallest streams CNN-S's convolutions, DS-CNN-S from its first
    conv to its global pool and MobileNetV1 through many layers (reds_run_stream: one row per kernel
    call, every map between first and last a few rows): the portable runtime
    on the host and the DSP runtime in QEMU (the Nano's flags, compiled by the
    Arduino compile check too) compute exactly what the default runtime (==
    TFLM, above) computes, every submodel; the arena is smaller."""
    from reds_tf import bench

    name, _, sub, full, plan, rt, xq = case
    small = build_plan(full, sub, arena="smallest")
    assert small.streams and small.arena_bytes < plan.arena_bytes
    for k, p in enumerate(small.placements):
        assert memory.check(fused_steps(small, k), p) == []
    src = tmp_path / "src"
    src.mkdir()
    for fname, text in render_sources(small).items():
        (src / fname).write_text(text)
    host = Runtime(src, tuple(small.input_shape))
    K = len(sub["submodels"])
    for k in range(K):
        np.testing.assert_array_equal(host.predict(xq[:40], k), rt.predict(xq[:40], k))
    objs = nano_compile(sorted(src.glob("*.cpp")), [src], tmp_path / "obj")
    assert "reds_run_stream" in undefined_symbols(objs["reds_model.cpp"])
    elf = bench.build_elf(src, tmp_path, "dsp")
    blob = tmp_path / "inputs.bin"
    blob.write_bytes(bench.inputs_blob(xq[:3].reshape(3, -1)))
    _, uart = bench.run_qemu(elf, bench.build_plugin(), blob, tmp_path / "qemu")
    got = bench.parse_uart(uart, 3, K, sub["num_classes"])
    for k in range(K):
        np.testing.assert_array_equal(got["outputs"][:, k], rt.predict(xq[:3], k), err_msg=str(k))
