"""Code generation: nested layout, snapshot of the rendered C++, warning-free builds.

Refresh the snapshot after an INTENDED change of templates or plan:
    REDS_UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest -q tests/test_codegen.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from nano_build import defined_functions, nano_compile, needs_arm, undefined_symbols

from reds_tf import memory
from reds_tf.codegen import plan as P
from reds_tf.codegen.plan import memory_steps
from reds_tf.codegen.render import KERNEL_SOURCES, render_sources
from reds_tf.errors import RedsError
from reds_tf.quant import slicer

TINY = Path(__file__).parent / "data" / "tiny"
SNAPSHOT = TINY / "snapshot"
ARM_FLAGS = [
    "-mcpu=cortex-m4",
    "-mthumb",
    "-mfloat-abi=hard",
    "-mfpu=fpv4-sp-d16",
    "-fno-exceptions",
    "-fno-rtti",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-O2",
    "-c",
]


def _tiny_plan() -> P.ModelPlan:
    sub = json.loads((TINY / "submodels.json").read_text())
    return P.build_plan((TINY / "model.tflite").read_bytes(), sub)


def _write(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for name, text in render_sources(_tiny_plan()).items():
        (src / name).write_text(text)
    return src


@pytest.mark.parametrize(
    "in_w,out_w",
    [([25, 25, 25], [5, 9, 12]), ([3, 7, 10], [1, 2, 5]), ([8], [4]), ([4, 4, 9], [6, 6, 6])],
)
def test_nested_layout_prefix_property(in_w, out_w):
    """Submodel k's weights are exactly the first i_k * o_k bytes of the array."""
    w = np.random.default_rng(0).integers(-127, 128, (out_w[-1], in_w[-1]), dtype=np.int8)
    flat = P.nest_fc_weights(w, in_w, out_w)
    assert flat.size == w.size and sorted(flat.tolist()) == sorted(w.ravel().tolist())
    for k in range(len(in_w)):
        got = P.unnest_fc_weights(flat, in_w, out_w, k)
        np.testing.assert_array_equal(got, w[: out_w[k], : in_w[k]])


def test_nested_layout_is_groups_of_4_rows_in_chunks_of_4_columns():
    w = np.arange(6 * 6, dtype=np.int64).reshape(6, 6).astype(np.int8)
    flat = P.nest_fc_weights(w, [6], [6]).tolist()
    # rows 0-3: chunk cols 0-3 row by row, then chunk cols 4-5; then rows 4-5.
    expect = []
    for rows in ([0, 1, 2, 3], [4, 5]):
        for cols in ([0, 1, 2, 3], [4, 5]):
            expect += [int(w[r, c]) for r in rows for c in cols]
    assert flat == expect
    with pytest.raises(RedsError, match="shrink"):
        P.nest_fc_weights(w, [6, 5, 6], [6, 6, 6])


# The kernels are fixed sources, not generated: they have their own bit-exactness
# tests (NumPy reference, TFLite Micro, QEMU) and stay out of the snapshot.
NOT_SNAPSHOTTED = set(KERNEL_SOURCES)


def test_rendered_sources_match_snapshot():
    files = {n: t for n, t in render_sources(_tiny_plan()).items() if n not in NOT_SNAPSHOTTED}
    if os.environ.get("REDS_UPDATE_SNAPSHOTS"):
        if SNAPSHOT.exists():
            shutil.rmtree(SNAPSHOT)
        SNAPSHOT.mkdir(parents=True)
        for name, text in files.items():
            (SNAPSHOT / name).write_text(text)
    stored = {p.name: p.read_text() for p in SNAPSHOT.iterdir()} if SNAPSHOT.exists() else {}
    hint = (
        "generated C++ changed; if intended: REDS_UPDATE_SNAPSHOTS=1 pytest tests/test_codegen.py"
    )
    assert sorted(stored) == sorted(files), hint
    for name, text in files.items():
        assert text == stored[name], f"{name}: {hint}"


def test_plan_of_tiny_model():
    plan = _tiny_plan()
    assert [ly.kind for ly in plan.layers] == ["reshape"] + ["fully_connected"] * 3
    fc1, fc2, logits = plan.layers[1:]
    assert fc1.in_widths == [25, 25, 25] and fc1.out_widths == [5, 9, 12]
    assert fc2.in_widths == [5, 9, 12] and logits.out_widths == [5, 5, 5]
    assert fc2.bias is None and fc1.bias is not None  # the converter dropped fc2's zero bias
    assert (fc1.activation, logits.activation) == ("relu", "none")
    assert plan.macs(0) == 25 * 5 + 5 * 3 + 3 * 5
    # The busiest layer is fc1: its 12 output bytes beside its scratch of 12 int32
    # accumulators + 25 int16 inputs + 4 (102, aligned to 104). fc2 may overwrite
    # its own input: its output goes through a ring, copied once all input was read.
    assert fc2.out_widths[-1] == 10
    assert [ly.src for ly in plan.layers[1:]] == ["input", "act + s[1].src", "act + s[2].src"]
    assert [ly.dst for ly in plan.layers[1:]] == ["act + s[0].dst", "act + s[1].dst", "output"]
    assert [ly.slot for ly in plan.layers[1:]] == [0, 1, 2]
    for k, placement in enumerate(plan.placements):
        steps = memory_steps(plan, k)
        assert memory.check(steps, placement) == []
        assert placement.arena_bytes == placement.lower_bound  # no byte beyond the busiest layer
    assert plan.arena_bytes == max(p.arena_bytes for p in plan.placements) == 116
    assert plan.arena["per_submodel"] == [84, 104, 116]


def test_fingerprint_covers_weights_and_quantisation():
    """The fingerprint (REDS_MODEL_FINGERPRINT, the firmware's info reply) is
    16 hex digits, stable, blind to the model's name and changed by any weight
    byte, bias, multiplier, shift, width or input quantisation."""
    import dataclasses

    plan = _tiny_plan()
    fp = plan.fingerprint
    assert re.fullmatch(r"[0-9a-f]{16}", fp)
    assert _tiny_plan().fingerprint == fp
    assert f'#define REDS_MODEL_FINGERPRINT "{fp}"' in render_sources(plan)["reds_model.h"]
    assert dataclasses.replace(plan, name="other").fingerprint == fp
    seen = {fp}

    def changed(mutate) -> None:
        p = _tiny_plan()
        mutate(p)
        assert p.fingerprint not in seen
        seen.add(p.fingerprint)

    def flip(layer: int, attr: str):
        """Change the last element of one array by one (within int8)."""

        def mutate(p: P.ModelPlan) -> None:
            a = getattr(p.layers[layer], attr)
            a.flat[-1] += 1 if a.flat[-1] < 127 else -1

        return mutate

    changed(flip(3, "weights"))
    changed(flip(1, "weights"))
    changed(flip(1, "bias"))
    changed(flip(2, "multiplier"))
    changed(flip(3, "shift"))
    changed(lambda p: setattr(p.layers[1], "output_zero_point", p.layers[1].output_zero_point + 1))
    changed(lambda p: setattr(p, "input_scale", p.input_scale * 1.001))
    changed(lambda p: setattr(p.layers[1], "out_widths", [4, 9, 12]))


def _model_weight_bytes(buf: bytes) -> int:
    model = slicer.read_model(buf)
    sg = model.subgraphs[0]
    n = 0
    for fc in slicer.fully_connected_ops(model):
        n += slicer.tensor_data(model, sg.tensors[fc.weights]).nbytes
        if fc.bias >= 0:
            n += slicer.tensor_data(model, sg.tensors[fc.bias]).nbytes
    return n


def source_weight_bytes(weights_cpp: str) -> int:
    """Bytes of every weight and bias array defined in reds_weights.cpp."""
    sizes = {"int8_t": 1, "int32_t": 4}
    total = 0
    for ctype, n in re.findall(
        r"const (int8_t|int32_t) reds_\w+_(?:weights|bias)\[(\d+)\]", weights_cpp
    ):
        total += sizes[ctype] * int(n)
    return total


def test_weights_are_stored_once():
    files = render_sources(_tiny_plan())
    full = _model_weight_bytes((TINY / "model.tflite").read_bytes())
    assert source_weight_bytes(files["reds_weights.cpp"]) == full
    assert f"#define REDS_WEIGHT_BYTES {full}u" in files["reds_model.h"]


def test_unsupported_op_is_named():
    sub = json.loads((TINY / "submodels.json").read_text())
    with pytest.raises(RedsError, match="SOFTMAX"):
        P.build_plan((TINY / "softmax.tflite").read_bytes(), sub)


def test_inconsistent_submodels_json():
    buf = (TINY / "model.tflite").read_bytes()
    sub = json.loads((TINY / "submodels.json").read_text())
    bad = json.loads(json.dumps(sub))
    bad["layers"][0]["units"] = 13
    with pytest.raises(RedsError, match="units"):
        P.build_plan(buf, bad)
    bad = json.loads(json.dumps(sub))
    bad["submodels"][1]["widths"]["fc1"] = 4  # shrinks from submodel 0 to 1
    with pytest.raises(RedsError, match="shrink"):
        P.build_plan(buf, bad)
    bad = json.loads(json.dumps(sub))
    bad["submodels"][0]["widths"]["fc2"] = 0
    with pytest.raises(RedsError, match="at least 1 unit"):
        P.build_plan(buf, bad)
    bad = json.loads(json.dumps(sub))
    bad["submodels"][2]["widths"]["fc1"] = 11  # the last submodel must be the full model
    with pytest.raises(RedsError, match="full model"):
        P.build_plan(buf, bad)


def test_compiles_warning_free_with_host_gxx(tmp_path):
    src = _write(tmp_path)
    for cpp in sorted(src.glob("*.cpp")):
        cmd = ["g++", "-std=c++11", "-Wall", "-Wextra", "-Werror", "-O2", "-c", str(cpp)]
        proc = subprocess.run(
            cmd + ["-o", str(tmp_path / (cpp.stem + ".o"))], capture_output=True, text=True
        )
        assert proc.returncode == 0 and not proc.stderr, proc.stderr


@needs_arm
def test_dense_runtime_compiles_with_the_nano_flags_and_gcc7_headers(tmp_path):
    """The Arduino compile check on a dense model's runtime: the Nano 33 BLE's
    flags, -Werror, a failing <arm_acle.h>; the DSP kernel is compiled in and
    is what the model calls."""
    src = _write(tmp_path)
    objs = nano_compile(sorted(src.glob("*.cpp")), [src], tmp_path / "obj")
    assert "reds_fc_dsp" in defined_functions(objs["fully_connected_dsp.cpp"])
    assert "reds_fc_dsp" in undefined_symbols(objs["rows.cpp"])  # the row runner calls it


@needs_arm
def test_the_arduino_compile_check_rejects_arm_acle(tmp_path):
    """The check is live: code that includes <arm_acle.h> (as the kernels did
    before) fails it, and so does a warning."""
    acle = tmp_path / "acle.cpp"
    acle.write_text("#include <arm_acle.h>\nint f(int a) { return a; }\n")
    with pytest.raises(AssertionError, match="SIMD32"):
        nano_compile([acle], [], tmp_path / "o1")
    vla = tmp_path / "vla.cpp"
    vla.write_text("int g(int n) { int a[n]; a[0] = n; return a[0]; }\n")
    with pytest.raises(AssertionError, match="Werror=vla"):
        nano_compile([vla], [], tmp_path / "o2")
