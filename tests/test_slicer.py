"""The .tflite prefix slicer: shared int8 weights, sliced scales, runnable in TFLM."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from reds_tf.errors import RedsError
from reds_tf.quant import slicer
from reds_tf.quant.tflm import run_tflm

TINY = Path(__file__).parent / "data" / "tiny"


def _tiny():
    sub = json.loads((TINY / "submodels.json").read_text())
    return (TINY / "model.tflite").read_bytes(), sub


def _widths(sub, k):
    return [sub["submodels"][k]["widths"][ly["name"]] for ly in sub["layers"]]


def test_submodel_weights_are_prefixes_of_the_full_int8_weights():
    full_buf, sub = _tiny()
    full = slicer.read_model(full_buf)
    fsg = full.subgraphs[0]
    full_fcs = slicer.fully_connected_ops(full)
    assert [fc.bias for fc in full_fcs][1] == -1  # the tiny model exercises a dropped bias
    for k in range(len(sub["submodels"])):
        widths = _widths(sub, k)
        part = slicer.read_model(slicer.slice_model(full_buf, widths))
        psg = part.subgraphs[0]
        in_w = 25
        for j, (ffc, pfc) in enumerate(
            zip(full_fcs, slicer.fully_connected_ops(part), strict=True)
        ):
            o = widths[j]
            fw = slicer.tensor_data(full, fsg.tensors[ffc.weights])
            pw = slicer.tensor_data(part, psg.tensors[pfc.weights])
            np.testing.assert_array_equal(pw, fw[:o, :in_w])
            fq, pq = fsg.tensors[ffc.weights].quantization, psg.tensors[pfc.weights].quantization
            np.testing.assert_array_equal(pq.scale, np.asarray(fq.scale)[:o])
            assert len(pq.zeroPoint) == o
            assert (pfc.bias < 0) == (ffc.bias < 0)
            if ffc.bias >= 0:
                fb = slicer.tensor_data(full, fsg.tensors[ffc.bias])
                pb = slicer.tensor_data(part, psg.tensors[pfc.bias])
                np.testing.assert_array_equal(pb, fb[:o])
                np.testing.assert_array_equal(
                    psg.tensors[pfc.bias].quantization.scale,
                    np.asarray(fsg.tensors[ffc.bias].quantization.scale)[:o],
                )
            assert list(psg.tensors[pfc.output].shape) == [1, o]
            in_w = o


def test_sliced_file_is_compact_and_aligned():
    full_buf, sub = _tiny()
    small = slicer.slice_model(full_buf, _widths(sub, 0))
    model = slicer.read_model(small)
    # No stale full-size buffers left behind: every buffer but the sentinel is used.
    used = {t.buffer for t in model.subgraphs[0].tensors} | {m.buffer for m in model.metadata}
    assert used | {0} == set(range(len(model.buffers)))
    assert len(small) < len(full_buf)
    # The full width slice keeps every weight byte.
    same = slicer.read_model(slicer.slice_model(full_buf, _widths(sub, 2)))
    full = slicer.read_model(full_buf)
    for a, b in zip(
        slicer.fully_connected_ops(same), slicer.fully_connected_ops(full), strict=True
    ):
        np.testing.assert_array_equal(
            slicer.tensor_data(same, same.subgraphs[0].tensors[a.weights]),
            slicer.tensor_data(full, full.subgraphs[0].tensors[b.weights]),
        )


def test_shared_constant_tensor_is_cloned_before_editing():
    """fc2 and fc3 of shared.tflite read ONE merged weight tensor; each slice must
    get its own prefix and the submodel must compute what the reference says."""
    from reds_tf.codegen.plan import build_plan

    buf = (TINY / "shared.tflite").read_bytes()
    full = slicer.read_model(buf)
    fcs = slicer.fully_connected_ops(full)
    assert fcs[1].weights == fcs[2].weights  # the converter really shared it
    layers = [
        {"name": n, "type": "dense", "units": u}
        for n, u in [("fc1", 8), ("fc2", 8), ("fc3", 8), ("logits", 3)]
    ]
    small = {"fc1": 6, "fc2": 5, "fc3": 4, "logits": 3}
    sub = {
        "name": "shared",
        "layers": layers,
        "submodels": [
            {"index": 0, "widths": small},
            {"index": 1, "widths": {"fc1": 8, "fc2": 8, "fc3": 8, "logits": 3}},
        ],
    }
    part_buf = slicer.slice_model(buf, [6, 5, 4, 3])
    part = slicer.read_model(part_buf)
    shared_w = slicer.tensor_data(full, full.subgraphs[0].tensors[fcs[1].weights])
    pf = slicer.fully_connected_ops(part)
    psg = part.subgraphs[0]
    np.testing.assert_array_equal(
        slicer.tensor_data(part, psg.tensors[pf[1].weights]), shared_w[:5, :6]
    )
    np.testing.assert_array_equal(
        slicer.tensor_data(part, psg.tensors[pf[2].weights]), shared_w[:4, :5]
    )
    x = np.random.default_rng(5).integers(-128, 128, (300, 8), dtype=np.int8)
    plan = build_plan(buf, sub)
    np.testing.assert_array_equal(run_tflm(part_buf, x).outputs, plan.reference(x, 0))


def test_every_slice_runs_in_tflm():
    full_buf, sub = _tiny()
    x = np.random.default_rng(0).integers(-128, 128, (50, 5, 5, 1), dtype=np.int8)
    outs = []
    for k in range(len(sub["submodels"])):
        res = run_tflm(slicer.slice_model(full_buf, _widths(sub, k)), x)
        assert res.outputs.shape == (50, 5)
        outs.append(res.outputs)
    full = run_tflm(full_buf, x).outputs
    np.testing.assert_array_equal(outs[-1], full)
    assert not np.array_equal(outs[0], full)  # a narrower submodel is a different function


def test_bad_widths_and_bad_bytes():
    full_buf, _ = _tiny()
    with pytest.raises(RedsError, match="3 FULLY_CONNECTED"):
        slicer.slice_model(full_buf, [4, 4])
    with pytest.raises(RedsError, match="outside the full shape"):
        slicer.slice_model(full_buf, [13, 4, 5])
    with pytest.raises(RedsError, match="last layer"):
        slicer.slice_model(full_buf, [4, 4, 3])
    with pytest.raises(RedsError, match="TFL3"):
        slicer.read_model(b"not a model at all")
    with pytest.raises(RedsError):
        slicer.read_model(full_buf[:64])
