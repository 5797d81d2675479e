"""The Cortex-M4 DSP fully connected kernel (templates/reds_kernels_dsp.cpp.j2)
against the portable reference and a NumPy model of the int8 rules, run in QEMU
on layers chosen to hit every path: odd/even chunk counts, shorter row groups,
widths that are not multiples of 4 (reference fallback), no bias, a generic
activation clamp, shifts from -31 to +3, INT32_MIN and negative multipliers."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from reds_tf import bench
from reds_tf.codegen.plan import nest_fc_weights
from reds_tf.codegen.render import environment
from reds_tf.quant import numerics

CHECK_SRC = Path(__file__).resolve().parent / "dsp_check" / "dsp_check.cpp"
TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-nm", "qemu-system-arm", "gcc")
pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in TOOLS),
    reason="needs gcc-arm-none-eabi and qemu-system-arm (make setup installs them)",
)

INT32_MIN = -(2**31)


def _layer(rng, in_w, out_w, *, bias=True, act=(-128, 127), shifts=(-12, -6), extreme=False):
    """Random int8 FC layer with nested widths; returns a dict of its arrays."""
    n_in, n_out = in_w[-1], out_w[-1]
    if extreme:  # largest magnitudes: accumulators near their bound
        w = rng.choice(np.array([-128, 127], np.int8), size=(n_out, n_in))
        x = rng.choice(np.array([-128, 127], np.int8), size=n_in)
    else:
        w = rng.integers(-128, 128, size=(n_out, n_in), dtype=np.int8)
        x = rng.integers(-128, 128, size=n_in, dtype=np.int8)
    mult = rng.integers(2**30, 2**31, size=n_out, dtype=np.int64)
    shift = rng.integers(shifts[0], shifts[1] + 1, size=n_out, dtype=np.int64)
    return {
        "in_w": list(in_w),
        "out_w": list(out_w),
        "w": w,
        "x": x,
        "bias": rng.integers(-(2**20), 2**20, size=n_out).astype(np.int64) if bias else None,
        "mult": mult,
        "shift": shift,
        "input_offset": int(rng.integers(-127, 129)),
        "output_offset": int(rng.integers(-128, 128)),
        "act": act,
    }


def _cases() -> list[dict]:
    rng = np.random.default_rng(7)
    cases = [
        # even and odd chunk counts per strip, one 4-row group per step
        _layer(rng, [8, 24, 40], [4, 8, 12], shifts=(-31, 3)),
        # shorter last groups (6, 10, 13 rows), no bias, a generic clamp
        _layer(rng, [16, 28, 36], [6, 10, 13], bias=False, act=(-10, 50)),
        # input widths that are not multiples of 4: the reference fallback
        _layer(rng, [10, 18], [4, 8]),
        # a realistic first layer with extreme values
        _layer(rng, [20, 36, 784], [8, 32, 64], extreme=True, shifts=(-14, -8)),
        # ReLU-style clamp with a non-int8 range, shift 0 and small positive
        _layer(rng, [4, 12], [3, 5], act=(-128, 100), shifts=(0, 2)),
    ]
    c = cases[0]  # special multipliers on a few rows
    c["mult"][1] = INT32_MIN
    c["mult"][2] = -(2**30) - 12345
    c["mult"][3] = INT32_MIN
    c["shift"][3] = 0
    c["bias"][3] = INT32_MIN // 2  # with the left shift below: a == INT32_MIN
    c["shift"][4] = 1
    return cases


def _expected(c: dict, k: int) -> np.ndarray:
    i, o = c["in_w"][k], c["out_w"][k]
    acc = c["w"][:o, :i].astype(np.int64) @ (c["x"][:i].astype(np.int64) + c["input_offset"])
    if c["bias"] is not None:
        acc = acc + c["bias"][:o]
    acc = ((acc + 2**31) % 2**32) - 2**31  # int32 wrap-around, as on the device
    v = numerics.multiply_by_quantized_multiplier(acc, c["mult"][:o], c["shift"][:o])
    v = v + c["output_offset"]
    return np.clip(v, *c["act"]).astype(np.int8)


def _words(values) -> bytes:
    return np.asarray(values, dtype=np.int64).astype("<i4").tobytes()


def _padded(a: np.ndarray) -> bytes:
    b = np.ascontiguousarray(a, dtype=np.int8).tobytes()
    return b + b"\0" * (-len(b) % 4)


def _blob(cases: list[dict]) -> bytes:
    out = [np.array([0x43505344, len(cases)], "<u4").tobytes()]
    for c in cases:
        n_in, n_out = c["in_w"][-1], c["out_w"][-1]
        head = [len(c["in_w"]), n_in, n_out, c["bias"] is not None, c["input_offset"]]
        head += [c["output_offset"], *c["act"], *c["in_w"], *c["out_w"]]
        out.append(_words(head))
        out.append(_padded(nest_fc_weights(c["w"], c["in_w"], c["out_w"])))
        if c["bias"] is not None:
            out.append(_words(c["bias"]))
        out += [_words(c["mult"]), _words(c["shift"]), _padded(c["x"])]
    return b"".join(out)


@pytest.fixture(scope="module")
def check_elf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The check firmware: rendered kernel templates + dsp_check.cpp + bench start-up."""
    d = tmp_path_factory.mktemp("dsp_check")
    env = environment()
    for name in ("reds_kernels.h", "reds_kernels.cpp", "reds_kernels_dsp.cpp"):
        (d / name).write_text(env.get_template(name + ".j2").render(has_fc_dsp=True))
    sources = [
        d / "reds_kernels.cpp",
        d / "reds_kernels_dsp.cpp",
        CHECK_SRC,
        bench.BENCH_FW_DIR / "bench_startup.c",
    ]
    objs = []
    for s in sources:
        obj = d / (s.name + ".o")
        lang = ["-std=c++11", *bench.CXX_ONLY] if s.suffix == ".cpp" else ["-std=c11"]
        cmd = ["arm-none-eabi-gcc", *bench.CC_FLAGS, "-Werror", *lang, f"-I{d}"]
        cmd += [f"-I{bench.BENCH_FW_DIR}", "-c", str(s), "-o", str(obj)]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        objs.append(str(obj))
    elf = d / "dsp_check.elf"
    cmd = ["arm-none-eabi-gcc", *bench.LINK_FLAGS, "-T", str(bench.BENCH_FW_DIR / "bench.ld")]
    subprocess.run([*cmd, "-o", str(elf), *objs, "-lc", "-lgcc"], check=True)
    return elf


def test_dsp_kernel_matches_reference_in_qemu(check_elf: Path, tmp_path: Path) -> None:
    cases = _cases()
    blob = tmp_path / "layers.bin"
    blob.write_bytes(_blob(cases))
    _, uart = bench.run_qemu(check_elf, bench.build_plugin(), blob, tmp_path / "qemu", marker=None)
    assert uart[-1] == "done", uart[-5:]
    results = {}
    for line in uart[:-1]:
        layer, k, ref_hex, dsp_hex = line.split()
        results[int(layer), int(k)] = (ref_hex, dsp_hex)
    checked = 0
    for li, c in enumerate(cases):
        for k in range(len(c["in_w"])):
            ref_hex, dsp_hex = results[li, k]
            want = _expected(c, k)
            ref = np.frombuffer(bytes.fromhex(ref_hex), np.int8)
            dsp = np.frombuffer(bytes.fromhex(dsp_hex), np.int8)
            np.testing.assert_array_equal(ref, want, err_msg=f"reference, layer {li} k={k}")
            np.testing.assert_array_equal(dsp, want, err_msg=f"DSP, layer {li} k={k}")
            checked += want.size
    assert checked == sum(sum(c["out_w"]) for c in cases)


def test_fast_requantisation_identity() -> None:
    """The DSP kernel's requantisation shortcut (one SMLAL, shifts) equals the
    gemmlowp double rounding for shift in [-31, -1], multiplier != INT32_MIN."""
    rng = np.random.default_rng(3)
    n = 200_000
    acc = rng.integers(-(2**31), 2**31, size=n, dtype=np.int64)
    acc[: n // 4] = rng.integers(-(2**16), 2**16, size=n // 4)  # typical magnitudes
    mult = rng.integers(-(2**31) + 1, 2**31, size=n, dtype=np.int64)
    shift = rng.integers(-31, 0, size=n, dtype=np.int64)
    want = numerics.multiply_by_quantized_multiplier(acc, mult, shift)
    x = (acc * mult + (1 << 30)) >> 31  # floor: arithmetic shift on int64
    y = x + (x >> 63)
    got = ((y >> (-shift - 1)) + 1) >> 1
    np.testing.assert_array_equal(got, want)
