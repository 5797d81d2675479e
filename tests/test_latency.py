"""The per-layer latency model (reds_tf/latency.py): grids, interpolation, the
strip features of the nested layout, the runtime layers of a graph, and its
predictions against cycles measured under QEMU on shapes outside its grid."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from reds_tf import ir, latency

TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-nm", "qemu-system-arm", "gcc")
needs_tools = pytest.mark.skipif(
    any(shutil.which(t) is None for t in TOOLS),
    reason="needs gcc-arm-none-eabi and qemu-system-arm (make setup installs them)",
)


def test_grid_levels_and_bilinear_interpolation() -> None:
    assert latency.grid_levels([4, 8, 12], 5) == [4, 8, 12]
    assert latency.grid_levels(range(4, 68, 4), 5) == [4, 20, 36, 48, 64]
    # a bilinear function is reproduced exactly, inside and (extrapolated) outside
    ig, og = [4, 16, 64], [8, 32]
    f = lambda i, o: 100 + 3 * i + 5 * o + 0.5 * i * o  # noqa: E731
    grid = latency.Grid(ig, og, np.array([[f(i, o) for o in og] for i in ig], float))
    for i, o in ((4, 8), (10, 20), (40, 12), (64, 32), (2, 40)):
        assert grid(i, o) == pytest.approx(f(i, o))


def test_strip_features() -> None:
    # one submodel: one B strip, one segment per 4-row group (8 columns: 2 chunks, even)
    assert latency.strip_features([8], [10]) == (1, 3, 0)
    # k=1 grows both widths: R_1 and B_1; rows 0..3 have 2 segments (1 chunk each:
    # odd), rows 4..11 one (2 chunks)
    assert latency.strip_features([4, 8], [4, 12]) == (3, 2 + 2, 2)
    # the input stays: no R strip; the output stays: no B strip
    assert latency.strip_features([4, 4], [4, 12]) == (2, 3, 3)
    assert latency.strip_features([4, 8], [4, 4]) == (2, 2, 2)
    # three submodels: rows of submodel 0 get R_1 and R_2
    assert latency.strip_features([4, 8, 12], [4, 8, 12]) == (5, 3 + 2 + 1, 3 + 1 + 1)
    # a 3x3 kernel: 9 columns per channel, so 4 channels are 9 chunks (odd)
    assert latency.strip_features([4], [4], taps=9) == (1, 1, 1)


def _dscnn_graph() -> ir.Graph:
    """A tiny DS-CNN (8x8x3 input): conv 3x3 s2 -> depthwise -> pointwise -> GAP -> dense."""
    n = [
        ir.Node(
            "c1", ir.CONV, (ir.INPUT,), 16, (4, 4, 16), (8, 8, 3), True, (3, 3), (2, 2), "same"
        ),
        ir.Node(
            "dw", ir.DEPTHWISE, ("c1",), 16, (4, 4, 16), (4, 4, 16), False, (3, 3), (1, 1), "same"
        ),
        ir.Node("pw", ir.CONV, ("dw",), 16, (4, 4, 16), (4, 4, 16), True, (1, 1), (1, 1), "same"),
        ir.Node("gap", ir.GLOBAL_AVGPOOL, ("pw",), 16, (16,), (4, 4, 16)),
        ir.Node("fc", ir.DENSE, ("gap",), 10, (10,), (16,)),
    ]
    return ir.Graph("tiny", (8, 8, 3), n)


def test_runtime_layers_of_a_dscnn_graph() -> None:
    got = latency.runtime_layers(_dscnn_graph())
    kinds = [(ly.name, ly.shape.kind, ly.in_src, ly.out_src) for ly in got]
    assert kinds == [
        ("c1", "conv", 3, "c1"),
        ("dw", "depthwise", "c1", "c1"),
        ("pw", "pointwise", "dw", "pw"),
        ("gap", "avgpool", "pw", "pw"),
        ("fc", "fully_connected", "pw", "fc"),
    ]
    c1 = got[0].shape
    assert (c1.in_hw, c1.out_hw, c1.stride, c1.pad) == ((8, 8), (4, 4), (2, 2), (0, 0))
    assert got[1].shape.pad == (1, 1) and got[3].shape.kernel == (4, 4)
    assert got[2].nested_input and not got[0].nested_input and not got[1].nested_input


@needs_tools
def test_latency_model_within_5_percent_off_grid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A coarse 3-point grid per axis; predictions at widths and width histories
    that are not grid points stay within 5 % of the cycles measured for them."""
    monkeypatch.setenv("REDS_CACHE_DIR", str(tmp_path / "cache"))
    S, L = latency.LayerShape, latency.RuntimeLayer
    layers = [
        L("c1", S("conv", (16, 16), (8, 8), (3, 3), (2, 2), (0, 0)), 3, "c1", 3, 32),
        L("dw", S("depthwise", (8, 8), (8, 8), (3, 3), (1, 1), (1, 1)), "c1", "c1", 32, 32),
        L("pw", S("pointwise", (8, 8), (8, 8)), "dw", "pw", 32, 32),
        L("cv", S("conv", (8, 8), (4, 4), (3, 3), (2, 2), (0, 0)), "pw", "cv", 32, 32),
        L("gap", S("avgpool", (4, 4), (1, 1), (4, 4)), "cv", "cv", 32, 32),
        L("fc", S("fully_connected"), "cv", "fc", 32, 10),
    ]
    logs: list[str] = []
    model = latency.LatencyModel.for_layers(layers, 4, {"fc": 10}, points=3, log=logs.append)
    assert logs and model.layers[2].grid0.in_grid == [4, 20, 32]
    # every query is off the grid {4, 20, 32}, some with a nested width history
    queries = {
        "c1": [((3,), (12,)), ((3, 3), (8, 28))],
        "dw": [((12,), (12,)), ((8, 24), (8, 24))],
        "pw": [((12,), (28,)), ((8, 16), (12, 24)), ((8, 12, 24), (8, 16, 28))],
        "cv": [((20,), (8,)), ((8, 24), (12, 28))],
        "gap": [((28,), (28,))],
        "fc": [((20,), (10,)), ((8, 28), (10, 10))],
    }
    cases, want = [], []
    for ly in layers:
        for ins, outs in queries[ly.name]:
            cases.append(latency.Case(ly.shape, ins, outs, len(ins) - 1))
            want.append(model.layer_cycles(ly.name, ins, outs))
    got = latency.measure(cases)
    for case, pred in zip(cases, want, strict=True):
        assert pred == pytest.approx(got[case], rel=0.05), case.key()
    # cached: a second model measures nothing
    logs.clear()
    latency.LatencyModel.for_layers(layers, 4, {"fc": 10}, points=3, log=logs.append)
    assert logs == []
