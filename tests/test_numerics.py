"""The NumPy int8 reference against exact integer arithmetic and against TFLite Micro."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from reds_tf.quant import numerics, slicer
from reds_tf.quant.tflm import run_tflm

TINY = Path(__file__).parent / "data" / "tiny"
INT32_MIN, INT32_MAX = numerics.INT32_MIN, numerics.INT32_MAX


def _srdhm_exact(a: int, b: int) -> int:
    """gemmlowp's definition with Python integers (C truncating division)."""
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    s = ab + nudge
    q = abs(s) // (1 << 31)
    return q if s >= 0 else -q


def _rdbpot_exact(x: int, e: int) -> int:
    """Round-half-away-from-zero division by 2**e, with Python integers."""
    if e == 0:
        return x
    q, r = divmod(abs(x), 1 << e)
    if 2 * r >= (1 << e):
        q += 1
    return q if x >= 0 else -q


def test_quantize_multiplier_matches_definition():
    rng = np.random.default_rng(0)
    for real in [1.0, 0.5, 0.75, 1e-3, 3.3e-5, 0.999999999, 7.5, *rng.uniform(1e-6, 2, 200)]:
        m, shift = numerics.quantize_multiplier(float(real))
        assert (1 << 30) <= m < (1 << 31)
        assert abs(m * 2.0 ** (shift - 31) - real) <= real * 2.0**-30
    assert numerics.quantize_multiplier(0.0) == (0, 0)
    assert numerics.quantize_multiplier(1e-12) == (0, 0)  # below 2**-31: flushed


def test_high_mul_and_pot_are_exact():
    rng = np.random.default_rng(1)
    a = rng.integers(INT32_MIN, INT32_MAX, 3000, dtype=np.int64, endpoint=True)
    b = rng.integers(1 << 30, INT32_MAX, 3000, dtype=np.int64, endpoint=True)
    a[:4] = [INT32_MIN, INT32_MAX, 0, -1]
    b[:4] = [INT32_MIN, INT32_MAX, 1 << 30, 1 << 30]
    got = numerics.saturating_rounding_doubling_high_mul(a, b)
    assert got.tolist() == [_srdhm_exact(int(x), int(y)) for x, y in zip(a, b, strict=True)]
    x = rng.integers(-(1 << 20), 1 << 20, 3000, dtype=np.int64)
    x[:6] = [-6, -5, -3, 3, 5, 6]  # ties at exponent 1
    e = rng.integers(0, 12, 3000)
    e[:6] = 1
    got = numerics.rounding_divide_by_pot(x, e)
    assert got.tolist() == [_rdbpot_exact(int(v), int(s)) for v, s in zip(x, e, strict=True)]


def test_requantisation_is_double_rounding_not_single():
    """TFLM rounds twice (high mul, then shift); tf.lite's single rounding differs
    on some values. The reference must follow the double rounding exactly."""
    rng = np.random.default_rng(3)
    acc = rng.integers(-(1 << 20), 1 << 20, 20000, dtype=np.int64)
    m = rng.integers(1 << 30, 1 << 31, 20000, dtype=np.int64)
    shift = rng.integers(-12, 1, 20000)
    got = numerics.multiply_by_quantized_multiplier(acc, m, shift)
    double = [
        _rdbpot_exact(_srdhm_exact(int(a), int(b)), -int(s))
        for a, b, s in zip(acc, m, shift, strict=True)
    ]
    assert got.tolist() == double
    single = [
        _rdbpot_exact(int(a) * int(b), 31 - int(s)) for a, b, s in zip(acc, m, shift, strict=True)
    ]
    assert np.count_nonzero(np.asarray(double) != np.asarray(single)) > 0


def test_quantize_rounds_half_away_from_zero():
    q = numerics.quantize(np.array([0.5, 1.5, -0.5, -1.5, 2.4, 1000.0]), 1.0, 0)
    assert q.tolist() == [1, 2, -1, -2, 2, 127]
    x = np.random.default_rng(2).uniform(-1, 1, 500).astype(np.float32)
    back = numerics.dequantize(numerics.quantize(x, 1 / 100, 3), 1 / 100, 3)
    assert np.max(np.abs(back - x)) <= 0.5 / 100 + 1e-6


def _layer_quants(model) -> list[tuple[slicer.FcTensors, numerics.FcQuant]]:
    sg = model.subgraphs[0]
    out = []
    for fc in slicer.fully_connected_ops(model):
        tx, tw, ty = sg.tensors[fc.input], sg.tensors[fc.weights], sg.tensors[fc.output]
        xs, xz = float(tx.quantization.scale[0]), int(tx.quantization.zeroPoint[0])
        ys, yz = float(ty.quantization.scale[0]), int(ty.quantization.zeroPoint[0])
        mult, shift = numerics.channel_multipliers(xs, tw.quantization.scale, ys)
        act = {0: "none", 1: "relu"}[
            sg.operators[fc.op_index].builtinOptions.fusedActivationFunction
        ]
        lo, hi = numerics.activation_range(act, ys, yz)
        bias = None if fc.bias < 0 else slicer.tensor_data(model, sg.tensors[fc.bias])
        w = slicer.tensor_data(model, tw)
        out.append((fc, numerics.FcQuant(w, bias, mult, shift, xz, yz, lo, hi)))
    return out


@pytest.mark.parametrize("k", [0, 2])
def test_reference_matches_tflm_per_layer(k):
    """Every intermediate tensor of TFLM equals the NumPy reference, bit for bit."""
    sub = json.loads((TINY / "submodels.json").read_text())
    widths = [sub["submodels"][k]["widths"][ly["name"]] for ly in sub["layers"]]
    buf = slicer.slice_model((TINY / "model.tflite").read_bytes(), widths)
    model = slicer.read_model(buf)
    layers = _layer_quants(model)
    rng = np.random.default_rng(k)
    x = rng.integers(-128, 128, (1200, 5, 5, 1), dtype=np.int8)
    res = run_tflm(buf, x, tensors=[fc.output for fc, _ in layers[:-1]])
    h = x.reshape(len(x), -1)
    for fc, q in layers:
        h = numerics.fc_int8(q, h)
        want = res.tensors[fc.output] if fc.output in res.tensors else res.outputs
        assert h.shape == want.shape
        np.testing.assert_array_equal(h, want)
    # Not vacuous: the outputs vary and the ReLU clamp is active somewhere.
    assert len(np.unique(res.outputs)) > 20


def test_reference_matches_tflm_per_layer_on_trained_run(exported_run):
    """The same per-layer check on every submodel of the (briefly) trained default run:
    1000 test images and 500 random int8 vectors."""
    from reds_tf.data import load_dataset

    manifest = json.loads((exported_run / "export" / "manifest.json").read_text())
    data = load_dataset("fashion_mnist")
    x = np.concatenate(
        [
            numerics.quantize(
                data.x_test[:1000], manifest["input_scale"], manifest["input_zero_point"]
            ),
            np.random.default_rng(4).integers(-128, 128, (500, 28, 28, 1), dtype=np.int8),
        ]
    )
    for e in manifest["submodels"]:
        buf = (exported_run / "export" / e["tflite"]).read_bytes()
        layers = _layer_quants(slicer.read_model(buf))
        res = run_tflm(buf, x, tensors=[fc.output for fc, _ in layers[:-1]])
        h = x.reshape(len(x), -1)
        for fc, q in layers:
            h = numerics.fc_int8(q, h)
            want = res.tensors.get(fc.output, res.outputs)
            np.testing.assert_array_equal(h, want.reshape(h.shape))


def _maxpool_model():
    """Conv -> MAX_POOL_2D chain covering VALID / SAME (partial windows), 2x2 and
    3x3 windows with stride 2, a fused ReLU in the conv before the pool or not,
    and a ReLU after the pool (fused into MAX_POOL_2D: an active clamp)."""
    import tf_keras as keras

    L = keras.layers
    inp = keras.Input((31, 27, 3))
    x = L.Conv2D(6, 3, padding="same", activation="relu")(inp)
    x = L.MaxPooling2D(2, padding="valid")(x)  # 31x27 -> 15x13, drops a row/column
    x = L.Conv2D(6, 1)(x)
    x = L.MaxPooling2D(3, strides=2, padding="same")(x)  # -> 8x7, pad 1 on each side
    x = L.ReLU()(x)  # fused into the pool above
    x = L.Conv2D(6, 1, activation="relu")(x)
    x = L.MaxPooling2D(3, strides=2, padding="valid")(x)  # -> 3x3
    x = L.Conv2D(6, 1)(x)
    x = L.MaxPooling2D(2, strides=2, padding="same")(x)  # -> 2x2, partial last windows
    x = L.Flatten()(x)
    out = L.Dense(3)(x)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(11)
    for ly in model.layers:
        ws = ly.get_weights()
        if ws:
            ly.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in ws])
    return model


def test_maxpool_reference_matches_tflm():
    """numerics.maxpool_int8 on TFLM's own input of every MAX_POOL_2D equals TFLM's
    output, bit for bit (400 random int8 inputs)."""
    from reds_tf.quant.convert import convert_int8

    rng = np.random.default_rng(5)
    cal = rng.uniform(-1, 1, (64, 31, 27, 3)).astype(np.float32)
    buf = convert_int8(_maxpool_model(), cal)
    model = slicer.read_model(buf)
    sg = model.subgraphs[0]
    pools = [op for op in sg.operators if slicer.op_name(model, op) == "MAX_POOL_2D"]
    assert len(pools) == 4
    ios = [(int(op.inputs[0]), int(op.outputs[0])) for op in pools]
    x = rng.integers(-128, 128, (400, 31, 27, 3), dtype=np.int8)
    res = run_tflm(buf, x, tensors=[t for io in ios for t in io])
    seen = set()
    clamped = 0
    for op, (ti, to) in zip(pools, ios, strict=True):
        tx, ty = sg.tensors[ti], sg.tensors[to]
        scale, zp = float(ty.quantization.scale[0]), int(ty.quantization.zeroPoint[0])
        assert (float(tx.quantization.scale[0]), int(tx.quantization.zeroPoint[0])) == (scale, zp)
        o = op.builtinOptions
        kernel, stride = (o.filterHeight, o.filterWidth), (o.strideH, o.strideW)
        in_hw, out_hw = tuple(tx.shape[1:3]), tuple(ty.shape[1:3])
        same = o.padding == 0
        pad = tuple(
            numerics.same_padding(i, f, s, n) if same else 0
            for i, f, s, n in zip(in_hw, kernel, stride, out_hw, strict=True)
        )
        act = {0: "none", 1: "relu"}[o.fusedActivationFunction]
        lo, hi = numerics.activation_range(act, scale, zp)
        h = res.tensors[ti].reshape(len(x), *in_hw, -1)  # TFLM rows come flat
        want = res.tensors[to].reshape(len(x), *out_hw, -1)
        got = numerics.maxpool_int8(h, kernel, stride, pad, out_hw, lo, hi)
        np.testing.assert_array_equal(got, want, err_msg=f"pool {kernel} {stride}")
        unclamped = numerics.maxpool_int8(h, kernel, stride, pad, out_hw)
        clamped += int(np.count_nonzero(got != unclamped))
        producer = next(op for op in sg.operators if int(op.outputs[0]) == ti)
        relu_before = producer.builtinOptions.fusedActivationFunction == 1
        seen.add((kernel, same, act, relu_before, pad != (0, 0)))
    assert seen == {
        ((2, 2), False, "none", True, False),
        ((3, 3), True, "relu", False, True),
        ((3, 3), False, "none", True, False),
        ((2, 2), True, "none", False, False),
    }
    assert clamped > 100  # the fused ReLU clamp is exercised
