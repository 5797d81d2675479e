"""Convolutional int8 export: CNN-S, DS-CNN-S and MobileNetV1 (random weights,
realistic BatchNorm statistics), every submodel bit-exact with TFLite Micro.

Each model is converted ONCE per module; every submodel's sliced .tflite runs
in TFLM (subprocess) and the generated C++ runtime (ctypes) on the same
inputs; the NumPy reference is checked on a subset.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from reds_tf.codegen.plan import build_plan
from reds_tf.codegen.render import render_sources
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
