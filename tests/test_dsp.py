"""The Cortex-M4 DSP kernels (reds_tf/kernels/*_dsp.cpp)
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
from reds_tf.codegen.render import kernel_sources
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
    for name, text in kernel_sources().items():
        (d / name).write_text(text)
    sources = [
        *sorted(d.glob("*.cpp")),
        CHECK_SRC,
        bench.BENCH_FW_DIR / "bench_startup.c",
    ]
    objs = []
    for s in sources:
        obj = d / (s.name + ".o")
        # the Nano 33 BLE's flags (-Os, -funsigned-char, gnu++14), as users build them
        flags = bench.compile_flags("c++" if s.suffix == ".cpp" else "c")
        cmd = ["arm-none-eabi-gcc", *flags, "-Werror", f"-I{d}"]
        cmd += [f"-I{bench.BENCH_FW_DIR}", "-c", str(s), "-o", str(obj)]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        objs.append(str(obj))
    elf = d / "dsp_check.elf"
    cmd = ["arm-none-eabi-gcc", *bench.link_flags(), "-T", str(bench.BENCH_FW_DIR / "bench.ld")]
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


# --- convolutions: reds_conv_dsp / reds_pointwise_dsp (tests/dsp_check/conv_check.cpp) ---

CONV_SRC = Path(__file__).resolve().parent / "dsp_check" / "conv_check.cpp"


def _same_padding(n_in: int, k: int, s: int) -> tuple[int, int]:
    """TFLite SAME: (output size, padding before)."""
    out = -(-n_in // s)
    total = max((out - 1) * s + k - n_in, 0)
    return out, total // 2


def _conv_case(
    rng,
    in_w,
    out_w,
    *,
    hw=(6, 6),
    kernel=(3, 3),
    strides=(1, 1),
    same=True,
    pointwise=False,
    depthwise=False,
    bias=True,
    per_submodel=False,
    act=(-128, 127),
    shifts=(-12, -6),
    extreme=False,
) -> dict:
    """A random int8 conv layer with nested widths (TFLite weights O, kh, kw, I;
    depthwise: C, kh, kw and in widths == out widths)."""
    n_in, n_out, K = in_w[-1], out_w[-1], len(in_w)
    kh, kw = kernel
    if same:
        (oh, pt), (ow, pl) = (_same_padding(hw[i], kernel[i], strides[i]) for i in (0, 1))
    else:
        oh, ow = ((hw[i] - kernel[i]) // strides[i] + 1 for i in (0, 1))
        pt = pl = 0
    vals = np.array([-128, 127], np.int8)
    wshape = (n_out, kh, kw) if depthwise else (n_out, kh, kw, n_in)
    if extreme:
        w = rng.choice(vals, size=wshape)
        x = rng.choice(vals, size=hw[0] * hw[1] * n_in)
    else:
        w = rng.integers(-128, 128, size=wshape, dtype=np.int8)
        x = rng.integers(-128, 128, size=hw[0] * hw[1] * n_in, dtype=np.int8)
    nq = K * n_out if per_submodel else n_out
    return {
        "kind": 2 if depthwise else 1 if pointwise else 0,
        "in_w": list(in_w),
        "out_w": list(out_w),
        "hw": hw,
        "out_hw": (oh, ow),
        "kernel": kernel,
        "strides": strides,
        "pad": (pt, pl),
        "w": w,
        "x": x,
        "qparam_stride": n_out if per_submodel else 0,
        "bias": rng.integers(-(2**20), 2**20, size=nq).astype(np.int64) if bias else None,
        "mult": rng.integers(2**30, 2**31, size=nq, dtype=np.int64),
        "shift": rng.integers(shifts[0], shifts[1] + 1, size=nq, dtype=np.int64),
        "input_offset": int(rng.integers(-127, 129)),
        "output_offset": int(rng.integers(-128, 128)),
        "act": act,
    }


def _pool_case(rng, widths, *, hw, pool, strides, same=True, act=(-128, 127), fill=None) -> dict:
    """A random AVERAGE_POOL_2D layer (kind 3) on nested widths, in the conv case format."""
    c = _conv_case(
        rng, widths, widths, hw=hw, kernel=pool, strides=strides, same=same, depthwise=True,
        bias=False, act=act, extreme=fill is None and rng.random() < 0.5,
    )  # fmt: skip
    c["kind"] = 3
    c["w"] = np.zeros(0, np.int8)
    if fill is not None:
        c["x"][:] = fill
    return c


def _conv_columns(kh: int, kw: int, in_w: list[int]) -> np.ndarray:
    """Flat (ky, kx, c) column indices of the TFLite weight matrix in nested
    im2col order: channel block by block, (ky, kx, c) inside a block."""
    cols, prev = [], 0
    for c_j in in_w:
        for ky in range(kh):
            for kx in range(kw):
                cols += [(ky * kw + kx) * in_w[-1] + c for c in range(prev, c_j)]
        prev = c_j
    return np.array(cols, np.int64)


def _conv_expected(c: dict, k: int) -> np.ndarray:
    """Submodel k's int8 output (out_h, out_w, o_k) from the int8 rules."""
    i, o = c["in_w"][k], c["out_w"][k]
    (h, wd), (oh, ow) = c["hw"], c["out_hw"]
    (kh, kw), (sh, sw), (pt, pl) = c["kernel"], c["strides"], c["pad"]
    if c["kind"] == 3:
        x = c["x"][: h * wd * i].reshape(1, h, wd, i)
        return numerics.avgpool_int8(x, (kh, kw), (sh, sw), (pt, pl), (oh, ow), *c["act"])[0]
    x = c["x"][: h * wd * i].reshape(h, wd, i).astype(np.int64) + c["input_offset"]
    xp = np.zeros((h + kh + sh * oh, wd + kw + sw * ow, i), np.int64)  # padding contributes 0
    xp[pt : pt + h, pl : pl + wd] = x
    acc = np.zeros((oh, ow, o), np.int64)
    for ky in range(kh):
        for kx in range(kw):
            patch = xp[ky : ky + sh * oh : sh, kx : kx + sw * ow : sw][:oh, :ow]
            if c["kind"] == 2:  # depthwise: channel c reads channel c
                acc += patch * c["w"][:o, ky, kx].astype(np.int64)
            else:
                acc += patch @ c["w"][:o, ky, kx, :i].astype(np.int64).T
    q = k * c["qparam_stride"]
    if c["bias"] is not None:
        acc = acc + c["bias"][q : q + o]
    acc = ((acc + 2**31) % 2**32) - 2**31
    v = numerics.multiply_by_quantized_multiplier(acc, c["mult"][q : q + o], c["shift"][q : q + o])
    return np.clip(v + c["output_offset"], *c["act"]).astype(np.int8)


def _conv_cases() -> list[dict]:
    rng = np.random.default_rng(11)
    cases = [
        # first layer of DS-CNN-S on Fashion-MNIST: 1 channel, 3x3 stride 2, 9 columns
        _conv_case(rng, [1, 1, 1, 1], [16, 32, 48, 64], hw=(9, 9), strides=(2, 2)),
        # CIFAR-style 3 channels (27 columns), shorter row groups, per-submodel
        # BatchNorm rows, no bias, a generic clamp
        _conv_case(
            rng, [3, 3, 3], [6, 10, 13], hw=(5, 7), bias=False, per_submodel=True, act=(-20, 90)
        ),
        # nested input channels (R strips), VALID, 10x4 kernel (KWS-style)
        _conv_case(rng, [4, 8, 12], [8, 12, 20], hw=(12, 6), kernel=(10, 4), same=False),
        # constant input width (first layers): 27 columns (tail 3), odd pixel count,
        # per-submodel rows, no bias; 36 columns (no tail) with shifts -31..+3
        _conv_case(rng, [3, 3], [16, 24], hw=(5, 5), bias=False, per_submodel=True),
        _conv_case(rng, [4, 4], [8, 12], hw=(3, 4), shifts=(-31, 3)),
        # input widths whose im2col columns do not start chunks: the reference path
        _conv_case(rng, [3, 6], [4, 8], hw=(4, 4)),
        # shifts from -31 to +3 and extreme values
        _conv_case(rng, [4, 8], [4, 8], hw=(4, 5), shifts=(-31, 3), extreme=True),
        # pointwise: an odd pixel count, four nested widths, ReLU-style clamp
        _conv_case(
            rng,
            [16, 32, 48, 64],
            [16, 32, 48, 64],
            hw=(5, 5),
            kernel=(1, 1),
            pointwise=True,
            act=(-128, 127),
            extreme=True,
            shifts=(-14, -8),
        ),
        # pointwise growing channels with per-submodel rows and equal in widths
        _conv_case(
            rng,
            [8, 8, 16],
            [12, 24, 32],
            hw=(4, 3),
            kernel=(1, 1),
            pointwise=True,
            per_submodel=True,
            bias=False,
            act=(-128, 100),
        ),
        # pointwise fallbacks: widths not multiples of 4; too little scratch
        # for two pixels (64 inputs, 8 outputs: the fast path widens them into
        # its table on the stack, a generic clamp falls back, case 46)
        _conv_case(rng, [6, 10], [5, 9], hw=(3, 3), kernel=(1, 1), pointwise=True),
        _conv_case(rng, [32, 64], [4, 8], hw=(3, 2), kernel=(1, 1), pointwise=True),
        # a bias too large for the SMMULR requantisation (|acc| may reach 2^30):
        # the generic path, same results
        _conv_case(rng, [8, 16], [8, 16], hw=(3, 3), kernel=(1, 1), pointwise=True),
        # pointwise with shifts -31..+3 (the generic requantisation)
        _conv_case(rng, [4, 8], [4, 8], hw=(2, 3), kernel=(1, 1), pointwise=True, shifts=(-31, 3)),
    ]
    cases += [
        # depthwise 3x3 (DS-CNN): SAME borders, stride 2, per-submodel rows, a clamp
        _conv_case(rng, [8, 16, 24], [8, 16, 24], hw=(7, 6), depthwise=True, extreme=True),
        _conv_case(
            rng,
            [4, 12],
            [4, 12],
            hw=(6, 5),
            strides=(2, 2),
            depthwise=True,
            per_submodel=True,
            bias=False,
            act=(-128, 90),
        ),
        # another kernel size (generic path) and widths not multiples of 4 (reference)
        _conv_case(rng, [4, 8], [4, 8], hw=(6, 6), kernel=(5, 3), depthwise=True),
        _conv_case(rng, [6, 10], [6, 10], hw=(4, 4), depthwise=True, shifts=(-31, 3)),
        # a map wider than the padded row buffer holds at once (refills), and
        # VALID stride 2 with shifts -31..+3 (the generic per-pixel path)
        _conv_case(rng, [4, 8], [4, 8], hw=(40, 37), depthwise=True),
        _conv_case(
            rng,
            [8, 12],
            [8, 12],
            hw=(9, 8),
            strides=(2, 2),
            same=False,
            depthwise=True,
            shifts=(-31, 3),
        ),
    ]
    one_row = np.random.default_rng(12)  # own stream: the other cases keep their values
    cases += [
        # Conv1D models run on one-row maps (1, T, C) with (1, k) kernels: VALID
        # stride 2, SAME with a ReLU6-style clamp, 1x1, depthwise (1, 3), a (1, 2) pool
        _conv_case(one_row, [4, 8], [8, 12], hw=(1, 24), kernel=(1, 5), strides=(1, 2), same=False),
        _conv_case(one_row, [8, 12], [8, 16], hw=(1, 11), kernel=(1, 3), act=(-128, 60)),
        _conv_case(
            one_row, [8, 16], [8, 16], hw=(1, 9), kernel=(1, 1), pointwise=True, act=(-100, 20)
        ),
        _conv_case(
            one_row, [8, 12], [8, 12], hw=(1, 9), kernel=(1, 3), depthwise=True, act=(-128, 40)
        ),
        _pool_case(one_row, [8, 12], hw=(1, 9), pool=(1, 2), strides=(1, 2)),
    ]
    dw = np.random.default_rng(13)  # own stream too
    cases += [
        # depthwise kx3 kernels read in place: maps 2 and 1 pixels wide (windows cut
        # on both sides), VALID, stride 2 on an even width and stride (1, 2) on an
        # odd one, a 2x3 kernel (1 or 2 kernel rows), a clamp (the generic path)
        _conv_case(dw, [4, 8], [4, 8], hw=(5, 2), depthwise=True),
        _conv_case(dw, [4, 8], [4, 8], hw=(4, 1), depthwise=True),
        _conv_case(dw, [8, 12], [8, 12], hw=(5, 6), depthwise=True, same=False),
        _conv_case(dw, [8], [8], hw=(5, 8), strides=(2, 2), depthwise=True),
        _conv_case(dw, [8], [8], hw=(6, 7), strides=(1, 2), depthwise=True),
        _conv_case(dw, [4, 8], [4, 8], hw=(5, 6), kernel=(2, 3), depthwise=True),
        _conv_case(dw, [4, 8], [4, 8], hw=(3, 5), depthwise=True, act=(-128, 50)),
    ]
    cases += [
        # first convs with at most 10 im2col columns (one 16-instruction step per
        # output): short row groups and per-submodel rows, more than 64 channels
        # (two table passes), 2 channels x 2x2, 2x5 on one channel (10 columns),
        # a generic clamp and a too large bias (the other paths)
        _conv_case(rng, [1, 1, 1], [5, 9, 14], hw=(7, 6), bias=False, per_submodel=True),
        _conv_case(rng, [1, 1], [40, 72], hw=(5, 4), strides=(2, 2), extreme=True),
        _conv_case(rng, [2, 2], [8, 12], hw=(5, 5), kernel=(2, 2), same=False),
        _conv_case(rng, [1, 1], [4, 8], hw=(6, 7), kernel=(2, 5), strides=(1, 2)),
        _conv_case(rng, [1, 1], [4, 8], hw=(5, 5), act=(-20, 90)),
        _conv_case(rng, [1, 1], [4, 8], hw=(4, 4)),
    ]
    cases += [
        # average pools: global (DS-CNN), windows cut by SAME padding at odd
        # sizes, VALID, a clamp, widths not multiples of 4 (reference), more than
        # 256 positions (int16 lanes flushed) all -128 and all 127
        _pool_case(rng, [16, 32, 48, 64], hw=(14, 14), pool=(14, 14), strides=(1, 1), same=False),
        _pool_case(rng, [4, 8, 12], hw=(7, 9), pool=(3, 3), strides=(2, 2)),
        _pool_case(rng, [8, 12], hw=(6, 5), pool=(2, 3), strides=(1, 2), act=(-60, 70)),
        _pool_case(rng, [4, 8], hw=(5, 7), pool=(3, 2), strides=(2, 3), same=False),
        _pool_case(rng, [6, 10], hw=(5, 5), pool=(3, 3), strides=(1, 1)),
        _pool_case(rng, [4, 8], hw=(20, 17), pool=(20, 17), strides=(1, 1), same=False, fill=-128),
        _pool_case(rng, [4, 8], hw=(20, 17), pool=(20, 17), strides=(1, 1), same=False, fill=127),
    ]
    c = cases[-12]  # a bias too large for the fast requantisation
    c["bias"][2] = 2**30 + 600_000
    big = cases[11]
    big["bias"][3] = 2**30 + 600_000  # |acc| > 2^30 whatever the products
    big["bias"][5] = -(2**30) - 600_000
    c = cases[12]  # special multipliers, as in the FC cases
    c["mult"][1] = INT32_MIN
    c["mult"][2] = -(2**30) - 12345
    c["mult"][3] = INT32_MIN
    c["shift"][3] = 0
    c["bias"][3] = INT32_MIN // 2
    table = np.random.default_rng(13)  # own stream: the cases above keep their values
    cases += [
        # the table-driven fast paths (fast requantisation, int8 clamp).
        # Pointwise: one segment per row pair with rows of several submodels
        # (equal in widths), per-submodel rows and an odd pixel count; one row
        # of pixels (the row runner's calls); a table split in blocks (128
        # rows, R segments, extreme values); 136 rows of one segment, no bias
        _conv_case(table, [16, 16], [8, 16], hw=(3, 5), kernel=(1, 1), pointwise=True,
                   per_submodel=True, shifts=(-17, -12)),
        _conv_case(table, [8, 16], [8, 16], hw=(1, 7), kernel=(1, 1), pointwise=True,
                   shifts=(-17, -12)),
        _conv_case(table, [32, 64], [64, 128], hw=(2, 3), kernel=(1, 1), pointwise=True,
                   extreme=True, shifts=(-14, -8)),
        _conv_case(table, [8], [136], hw=(1, 3), kernel=(1, 1), pointwise=True, bias=False),
        # First layers (constant input width) with last chunks of 1, 2, 0 and 3
        # columns: 5x5 on one channel (25), 3x3 on two (18) stride 2 without
        # bias, 2x2 on four (16) VALID, 1x5 on three (15) on one row; 72
        # channels (two table blocks) of a 3x3 RGB stem with extreme values
        _conv_case(table, [1, 1], [8, 12], hw=(6, 5), kernel=(5, 5)),
        _conv_case(table, [2, 2], [12, 16], hw=(5, 5), strides=(2, 2), bias=False),
        _conv_case(table, [4, 4], [8, 16], hw=(5, 4), kernel=(2, 2), same=False,
                   per_submodel=True),
        _conv_case(table, [3, 3], [4, 8], hw=(1, 9), kernel=(1, 5)),
        _conv_case(table, [3, 3], [64, 72], hw=(5, 5), strides=(2, 2), extreme=True,
                   shifts=(-14, -8)),
        _conv_case(table, [32, 64], [4, 8], hw=(3, 2), kernel=(1, 1), pointwise=True,
                   act=(-100, 20), shifts=(-17, -12)),
        # single-segment pointwise tables: 16 chunks (the whole unrolled loop,
        # equal in widths) and 24 chunks (beyond it: the looped runner)
        _conv_case(table, [64, 64], [16, 32], hw=(3, 3), kernel=(1, 1), pointwise=True,
                   shifts=(-18, -13)),
        _conv_case(table, [96], [12], hw=(2, 3), kernel=(1, 1), pointwise=True,
                   shifts=(-18, -13)),
        # two rows x three pixels (single segment, <= 16 chunks) with a last
        # triple of 2 pixels (8 pixels), widened on the stack (n_in > n_out + 1)
        _conv_case(table, [12, 12], [8, 16], hw=(2, 4), kernel=(1, 1), pointwise=True,
                   shifts=(-17, -12)),
        _conv_case(table, [40], [24], hw=(2, 4), kernel=(1, 1), pointwise=True,
                   shifts=(-18, -13), extreme=True),
        # the zero point folded into the rounding constant needs every multiplier
        # above 2^30 and |2 zp + 1| << -(shift + 1) below 2^30: one multiplier of
        # exactly 2^30, then shifts down to -24 with a large zero point (the
        # unfolded runner, both), then the folded one without bias
        _conv_case(table, [16, 16], [8, 12], hw=(3, 3), kernel=(1, 1), pointwise=True,
                   shifts=(-17, -12)),
        _conv_case(table, [16], [8], hw=(2, 5), kernel=(1, 1), pointwise=True,
                   shifts=(-24, -20)),
        _conv_case(table, [20], [12], hw=(1, 5), kernel=(1, 1), pointwise=True,
                   shifts=(-16, -12), bias=False),
    ]  # fmt: skip
    cases[-3]["mult"][1] = 2**30  # folding would be off by one for -1 accumulators
    c = cases[-2]  # |2 zp + 1| << 23 >= 2^30
    c["output_offset"] = -100
    c["bias"] = c["bias"] // 16
    return cases


def _conv_blob(cases: list[dict]) -> bytes:
    out = [np.array([0x564E4F43, len(cases)], "<u4").tobytes()]
    for c in cases:
        K, (kh, kw) = len(c["in_w"]), c["kernel"]
        n_in, n_out = c["in_w"][-1], c["out_w"][-1]
        if c["kind"] >= 2:  # depthwise: channel-major, a prefix per submodel; pool: none
            nested = np.ascontiguousarray(c["w"]).reshape(-1)
        else:
            cols = _conv_columns(kh, kw, c["in_w"])
            matrix = c["w"].reshape(n_out, -1)[:, cols]
            nested = nest_fc_weights(matrix, [kh * kw * i for i in c["in_w"]], c["out_w"])
        head = [c["kind"], K, n_in, n_out, *c["hw"], *c["out_hw"], kh, kw, *c["strides"]]
        head += [*c["pad"], c["bias"] is not None, c["qparam_stride"], c["input_offset"]]
        head += [c["output_offset"], *c["act"], *c["in_w"], *c["out_w"], nested.size]
        out += [_words(head), _padded(nested)]
        if c["bias"] is not None:
            out.append(_words(c["bias"]))
        out += [_words(c["mult"]), _words(c["shift"]), _padded(c["x"])]
    return b"".join(out)


def _build(d: Path, main_src: Path, name: str) -> Path:
    for name, text in kernel_sources().items():
        (d / name).write_text(text)
    sources = [*sorted(d.glob("*.cpp")), main_src]
    sources.append(bench.BENCH_FW_DIR / "bench_startup.c")
    objs = []
    for s in sources:
        obj = d / (s.name + ".o")
        # the Nano 33 BLE's flags (-Os, -funsigned-char, gnu++14), as users build them
        flags = bench.compile_flags("c++" if s.suffix == ".cpp" else "c")
        cmd = ["arm-none-eabi-gcc", *flags, "-Werror", f"-I{d}"]
        cmd += [f"-I{bench.BENCH_FW_DIR}", "-c", str(s), "-o", str(obj)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        objs.append(str(obj))
    elf = d / f"{name}.elf"
    cmd = ["arm-none-eabi-gcc", *bench.link_flags(), "-T", str(bench.BENCH_FW_DIR / "bench.ld")]
    subprocess.run([*cmd, "-o", str(elf), *objs, "-lc", "-lgcc"], check=True)
    return elf


def test_dsp_conv_kernels_match_reference_in_qemu(tmp_path: Path) -> None:
    """reds_conv_dsp, reds_pointwise_dsp and reds_depthwise_dsp equal the portable kernels and the
    NumPy int8 model on every submodel of layers that hit every path; the DSP
    pointwise kernel is also much cheaper where it applies."""
    elf = _build(tmp_path, CONV_SRC, "conv_check")
    cases = _conv_cases()
    blob = tmp_path / "convs.bin"
    blob.write_bytes(_conv_blob(cases))
    marks, uart = bench.run_qemu(elf, bench.build_plugin(), blob, tmp_path / "qemu")
    assert uart and uart[-1] == "done", uart[-5:]
    lines = [ln.split() for ln in uart[:-1]]
    assert len(lines) == sum(len(c["in_w"]) for c in cases)
    overhead = marks[1] - marks[0]
    costs = []  # (case, k, instructions ref, instructions dsp)
    for n, (li, k, ref_hex, dsp_hex) in enumerate(lines):
        c = cases[int(li)]
        want = _conv_expected(c, int(k)).reshape(-1)
        ref = np.frombuffer(bytes.fromhex(ref_hex), np.int8)
        dsp = np.frombuffer(bytes.fromhex(dsp_hex), np.int8)
        np.testing.assert_array_equal(ref, want, err_msg=f"reference, layer {li} k={k}")
        np.testing.assert_array_equal(dsp, want, err_msg=f"DSP, layer {li} k={k}")
        m = marks[2 + 4 * n : 6 + 4 * n]
        costs.append((int(li), int(k), m[1] - m[0] - overhead, m[3] - m[2] - overhead))
    # The two-row, two-pixel pointwise path at full width (case 5): at least 2x
    # fewer instructions than the portable kernel.
    full = [c for c in costs if c[0] == 7 and c[1] == 3][0]
    assert full[3] * 2 < full[2], full
    # The constant-input-width conv path (case 0, 9 columns) and the 3x3
    # depthwise row-buffer path (case 13) at full width: also at least 2x cheaper.
    for case, k in ((0, 3), (13, 2)):
        got = [c for c in costs if c[0] == case and c[1] == k][0]
        assert got[3] * 2 < got[2], got
    # The global average pool at full width: at least 2x cheaper.
    pool = [c for c in costs if c[0] == len(cases) - 24 and c[1] == 3][0]
    assert pool[3] * 2 < pool[2], pool


# --- residual joins: reds_add_dsp (tests/dsp_check/add_check.cpp) ---

ADD_SRC = Path(__file__).resolve().parent / "dsp_check" / "add_check.cpp"


def _add_case(rng, widths, hw, *, scales=None, act=None, fill=None) -> dict:
    """A random int8 ADD on nested widths: parameters from TFLite's rules for
    the given (or random) input/output scales and zero points."""
    s1, s2, so = scales or rng.uniform(0.01, 0.2, 3)
    z1, z2, zo = (int(v) for v in rng.integers(-128, 128, 3))
    lo, hi = act or (-128, 127)
    q = numerics.AddQuant.from_scales((s1, z1), (s2, z2), (so, zo), lo, hi)
    n = hw[0] * hw[1] * widths[-1]
    x1 = rng.integers(-128, 128, n).astype(np.int8)
    x2 = rng.integers(-128, 128, n).astype(np.int8)
    if fill is not None:
        x1[:], x2[:] = fill
    return {"widths": list(widths), "hw": hw, "q": q, "x1": x1, "x2": x2}


def _add_cases() -> list[dict]:
    rng = np.random.default_rng(21)
    return [
        # ResNet-8's first join (32x32, 16 channels) at four nested widths, a ReLU clamp
        _add_case(rng, [4, 8, 12, 16], (32, 32), act=(-20, 127)),
        # 8x8 maps of 28..64 channels, equal input scales (both multipliers 2^30, shift 0)
        _add_case(rng, [28, 44, 64], (8, 8), scales=(0.05, 0.05, 0.08)),
        # element counts not multiples of 4 (a scalar tail), the first below the table threshold
        _add_case(rng, [2, 7, 13], (7, 9)),
        # very different scales (one input barely counts), a generic clamp
        _add_case(rng, [8, 16], (6, 6), scales=(0.001, 0.9, 0.5), act=(-60, 70)),
        # an output scale so small the output shift is -1: the reference path
        _add_case(rng, [8, 16], (8, 8), scales=(0.1, 0.1, 0.2 / (0.3 * 2**20))),
        # extremes: all -128 and all 127
        _add_case(rng, [16, 32], (6, 6), fill=(-128, 127)),
        _add_case(rng, [16, 32], (6, 6), fill=(127, 127)),
    ]


def _add_blob(cases: list[dict]) -> bytes:
    out = [np.array([0x43444441, len(cases)], "<u4").tobytes()]
    for c in cases:
        q = c["q"]
        head = [len(c["widths"]), *c["hw"], q.input1_offset, q.input2_offset]
        head += [q.input1_multiplier, q.input1_shift, q.input2_multiplier, q.input2_shift]
        head += [q.output_multiplier, q.output_shift, q.output_zero_point, q.act_min, q.act_max]
        out += [_words(head + c["widths"]), _padded(c["x1"]), _padded(c["x2"])]
    return b"".join(out)


def test_dsp_add_kernel_matches_reference_in_qemu(tmp_path: Path) -> None:
    """reds_add_dsp equals reds_add_ref and the NumPy int8 ADD (TFLite's rules) on
    every submodel of joins that hit every path, and is much cheaper where its
    tables apply."""
    elf = _build(tmp_path, ADD_SRC, "add_check")
    cases = _add_cases()
    assert cases[4]["q"].output_shift == -1  # really the reference path
    blob = tmp_path / "adds.bin"
    blob.write_bytes(_add_blob(cases))
    marks, uart = bench.run_qemu(elf, bench.build_plugin(), blob, tmp_path / "qemu")
    assert uart and uart[-1] == "done", uart[-5:]
    lines = [ln.split() for ln in uart[:-1]]
    assert len(lines) == sum(len(c["widths"]) for c in cases)
    overhead = marks[1] - marks[0]
    per_element = {}
    for n, (li, k, ref_hex, dsp_hex) in enumerate(lines):
        c, k = cases[int(li)], int(k)
        m = c["hw"][0] * c["hw"][1] * c["widths"][k]
        want = numerics.add_int8(c["q"], c["x1"][:m], c["x2"][:m])
        ref = np.frombuffer(bytes.fromhex(ref_hex), np.int8)
        dsp = np.frombuffer(bytes.fromhex(dsp_hex), np.int8)
        np.testing.assert_array_equal(ref, want, err_msg=f"reference, layer {li} k={k}")
        np.testing.assert_array_equal(dsp, want, err_msg=f"DSP, layer {li} k={k}")
        mk = marks[2 + 4 * n : 6 + 4 * n]
        per_element[int(li), k] = ((mk[1] - mk[0] - overhead) / m, (mk[3] - mk[2] - overhead) / m)
    # Not vacuous: the first join's outputs cover much of the int8 range, clamp included.
    y = numerics.add_int8(cases[0]["q"], cases[0]["x1"], cases[0]["x2"])
    assert len(np.unique(y)) > 100 and (y == -20).any()
    ref, dsp = per_element[0, 3]  # 16384 elements: the tables pay off
    assert dsp * 2 < ref, (ref, dsp)
