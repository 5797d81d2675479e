"""The row runner (reds_tf/kernels/rows.cpp) with the Cortex-M4 DSP kernels, run
in QEMU with each layer's output written INTO its input's bytes at the memory
planner's most aggressive offset (reds_tf/memory.py ``max_shift``, rounded
down to a multiple of 4 as the planner aligns offsets): the int8 results equal
the NumPy int8 model on edge sizes (odd heights and widths, 1- and 2-row maps,
stride 2 on even and odd heights, SAME and VALID, 3x3, 5x5, 1x1 growing and
shrinking, 10x4 kernels, depthwise widths that are not multiples of 4, depthwise
maps 1 and 2 pixels wide and 2x3 kernels, average
and max pools, nested widths), for bands of 1, 2 and 3 rows and delays from the
smallest exact one up. Runs 4+ bytes beyond the bound must differ, so the check
is not vacuous. The harness is tests/dsp_check/rows_check.cpp."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_dsp import TOOLS, _build, _conv_blob, _conv_case, _conv_expected, _pool_case, _words

from reds_tf import bench
from reds_tf.memory import Step, align4, in_place, max_shift
from reds_tf.quant import numerics

pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in TOOLS),
    reason="needs gcc-arm-none-eabi and qemu-system-arm (make setup installs them)",
)

ROWS_SRC = Path(__file__).resolve().parent / "dsp_check" / "rows_check.cpp"
KINDS = {0: "conv", 1: "pointwise", 2: "depthwise", 3: "avgpool", 4: "maxpool"}
ROWS = (1, 2, 3)


def _maxpool_case(rng, widths, **kw) -> dict:
    c = _pool_case(rng, widths, **kw)
    c["kind"] = 4
    return c


def _box_filter(c: dict) -> dict:
    """Depthwise weights all 1, no bias or offsets, scale 2^-3: every output is
    round(window sum / 8), so a corrupted input byte shows in the output."""
    c["w"][:] = 1
    c["bias"] = None
    c["mult"][:] = 2**30
    c["shift"][:] = -2
    c["input_offset"] = c["output_offset"] = 0
    return c


def _cases() -> list[dict]:
    rng = np.random.default_rng(20)
    return [
        # standard convs: 3x3 SAME on odd sizes (per-submodel rows, no bias, a clamp),
        # stride 2 on odd and even heights, VALID stride 2, 5x5 SAME and VALID
        _conv_case(
            rng, [3, 3, 3], [6, 10, 13], hw=(5, 7), bias=False, per_submodel=True, act=(-20, 90)
        ),
        _conv_case(rng, [1, 1, 1], [8, 16, 24], hw=(9, 9), strides=(2, 2)),
        _conv_case(rng, [4, 8], [8, 12], hw=(8, 6), strides=(2, 2)),
        _conv_case(rng, [4, 8], [4, 8], hw=(7, 5), strides=(2, 2), same=False),
        _conv_case(rng, [2, 4], [4, 8], hw=(7, 6), kernel=(5, 5)),
        _conv_case(rng, [4, 8], [4, 4], hw=(9, 7), kernel=(5, 5), same=False),
        # KWS-style 10x4: VALID stride 1 and SAME stride 2 (DS-CNN's first layer)
        _conv_case(rng, [4, 8, 12], [8, 12, 20], hw=(12, 6), kernel=(10, 4), same=False),
        _conv_case(rng, [1, 1], [8, 16], hw=(13, 10), kernel=(10, 4), strides=(2, 2)),
        # 1-row and 2-row maps
        _conv_case(rng, [4, 8], [8, 12], hw=(1, 11), kernel=(1, 3)),
        _conv_case(rng, [4, 8], [4, 8], hw=(2, 5)),
        _conv_case(rng, [4], [8], hw=(2, 7), strides=(2, 2)),
        # pointwise: growing, shrinking, widths not multiples of 4, one row
        _conv_case(rng, [4, 8], [8, 16], hw=(5, 3), kernel=(1, 1), pointwise=True),
        _conv_case(rng, [16, 32], [4, 8], hw=(5, 5), kernel=(1, 1), pointwise=True),
        _conv_case(rng, [6, 10], [5, 9], hw=(3, 3), kernel=(1, 1), pointwise=True),
        _conv_case(rng, [8, 16], [8, 16], hw=(1, 9), kernel=(1, 1), pointwise=True),
        # depthwise: 3x3 stride 1 (the non-vacuous case below), stride 2 on even
        # and odd heights, widths not multiples of 4 (reference), 5x3, 2 rows, 1 row
        _conv_case(rng, [8, 16, 24], [8, 16, 24], hw=(7, 6), depthwise=True),
        _box_filter(_conv_case(rng, [8, 16], [8, 16], hw=(7, 5), depthwise=True)),
        _conv_case(rng, [4, 12], [4, 12], hw=(6, 5), strides=(2, 2), depthwise=True),
        _conv_case(rng, [4, 8], [4, 8], hw=(7, 7), strides=(2, 2), depthwise=True, same=False),
        _conv_case(rng, [6, 10], [6, 10], hw=(5, 5), depthwise=True),
        _conv_case(rng, [3, 5], [3, 5], hw=(7, 9), strides=(2, 2), depthwise=True),
        _conv_case(rng, [4, 8], [4, 8], hw=(7, 6), kernel=(5, 3), depthwise=True),
        _conv_case(rng, [8], [8], hw=(2, 5), depthwise=True),
        _conv_case(rng, [8, 12], [8, 12], hw=(1, 9), kernel=(1, 3), depthwise=True),
        # average pools: global, 2x2 stride 2 on an odd height, 3x3 stride 2,
        # widths not multiples of 4, a 2-row map
        _pool_case(rng, [8, 16], hw=(7, 5), pool=(7, 5), strides=(1, 1), same=False),
        _pool_case(rng, [4, 8, 12], hw=(7, 6), pool=(2, 2), strides=(2, 2)),
        _pool_case(rng, [4, 8], hw=(9, 7), pool=(3, 3), strides=(2, 2), act=(-60, 70)),
        _pool_case(rng, [6, 10], hw=(5, 5), pool=(3, 3), strides=(1, 1)),
        _pool_case(rng, [4, 8], hw=(2, 6), pool=(2, 2), strides=(2, 2), same=False),
        # max pools: global, 2x2 stride 2 on odd (SAME) and even (VALID) heights,
        # 3x3 stride 1 and 2, a clamp, widths not multiples of 4
        _maxpool_case(rng, [8, 16], hw=(6, 5), pool=(6, 5), strides=(1, 1), same=False),
        _maxpool_case(rng, [4, 8], hw=(7, 5), pool=(2, 2), strides=(2, 2)),
        _maxpool_case(rng, [4, 8], hw=(6, 4), pool=(2, 2), strides=(2, 2), same=False),
        _maxpool_case(rng, [6, 10], hw=(5, 7), pool=(3, 3), strides=(1, 1), act=(-128, 60)),
        _maxpool_case(rng, [4, 8], hw=(9, 5), pool=(3, 3), strides=(2, 2), same=False),
        # depthwise kx3 kernels read in place: maps 2 and 1 pixels wide, stride
        # (1, 2) on an odd width, a 2x3 kernel, the generic requantisation
        _conv_case(rng, [4, 8], [4, 8], hw=(5, 2), depthwise=True),
        _conv_case(rng, [8], [8], hw=(4, 1), depthwise=True),
        _conv_case(rng, [8], [8], hw=(6, 7), strides=(1, 2), depthwise=True),
        _conv_case(rng, [4, 8], [4, 8], hw=(5, 6), kernel=(2, 3), depthwise=True),
        _conv_case(rng, [8, 12], [8, 12], hw=(5, 6), depthwise=True, shifts=(-31, 3)),
    ]


BAD_CASE = 16  # depthwise 3x3 stride 1 SAME (box filter): copying a row 4 bytes too far
# overwrites the first pixel of the input row the next band reads


def _step(c: dict, k: int) -> Step:
    return Step(
        name=f"case{k}", kind=KINDS[c["kind"]], inputs=(0,), output=1, in_hw=tuple(c["hw"]),
        out_hw=tuple(c["out_hw"]), kernel_h=c["kernel"][0], stride_h=c["strides"][0],
        pad_top=c["pad"][0], in_width=c["in_w"][k], out_width=c["out_w"][k],
    )  # fmt: skip


def _floor4(x: int) -> int:
    return x & ~3  # Python ints: floors negative offsets too


def _shift(s: Step, delay: int) -> int:
    """The planner's most aggressive offset for ``delay``, aligned down to 4;
    with no bound (every row copied after the last one), output end-aligned
    with the input if it grows, else start-aligned (the planner's choice)."""
    m = max_shift(s, delay)
    if math.isinf(m):
        return _floor4(min(0, s.in_bytes - s.out_bytes))
    return _floor4(int(m))


def _runs(c: dict, k: int) -> list[tuple[int, int, int, bool]]:
    """(delay, rows, shift, exact) runs of submodel k: the smallest exact delay
    (in_place's, else the smallest whose bound is at least the planner's wanted
    offset, else 0) and larger ones, each with bands of 1, 2 and 3 rows."""
    s = _step(c, k)
    h = s.out_hw[0]
    ip = in_place(s)
    if ip is not None:
        d0 = ip[0]
    else:
        want = min(0, s.in_bytes - s.out_bytes)
        d0 = next((d for d in range(h) if max_shift(s, d) >= want), 0)
    delays = sorted({min(d, h) for d in (d0, d0 + 1, d0 + 3)})
    runs = [(d, r, _shift(s, d), True) for d in delays for r in ROWS]
    return runs


def _bad_runs(c: dict, k: int) -> list[tuple[int, int, int, bool]]:
    """Runs 4+ bytes beyond the bound (rounded up to a multiple of 4): wrong."""
    s = _step(c, k)
    d0 = in_place(s)[0]
    return [(d0, r, align4(int(max_shift(s, d0)) + 4), False) for r in ROWS]


def _expected(c: dict, k: int) -> np.ndarray:
    if c["kind"] != 4:
        return _conv_expected(c, k).reshape(-1)
    (h, w), i = c["hw"], c["in_w"][k]
    x = c["x"][: h * w * i].reshape(1, h, w, i)
    y = numerics.maxpool_int8(x, c["kernel"], c["strides"], c["pad"], c["out_hw"], *c["act"])
    return y.reshape(-1)


def _blob(cases: list[dict], runs: list[list[list[tuple]]]) -> bytes:
    out = [np.array([0x53574F52, len(cases)], "<u4").tobytes()]
    for c, per_k in zip(cases, runs, strict=True):
        out.append(_conv_blob([c])[8:])  # the conv check's layer record, without its header
        for rs in per_k:
            out.append(_words([len(rs), *[v for d, r, sh, _ in rs for v in (d, r, sh)]]))
    return b"".join(out)


def test_in_place_rows_match_numpy_in_qemu(tmp_path: Path) -> None:
    cases = _cases()
    bad = cases[BAD_CASE]
    assert bad["kind"] == 2 and bad["kernel"] == (3, 3) and bad["strides"] == (1, 1)
    runs = []
    for li, c in enumerate(cases):
        per_k = []
        for k in range(len(c["in_w"])):
            rs = _runs(c, k)
            if li == BAD_CASE:
                rs += _bad_runs(c, k)
            per_k.append(rs)
        runs.append(per_k)
    # The edge sizes really are in there.
    heights = {c["hw"][0] for c in cases}
    assert {1, 2} <= heights and any(h % 2 for h in heights)
    assert any(sh < 0 for per_k in runs for rs in per_k for _, _, sh, _ in rs)  # growing: before
    assert any(sh > 0 for per_k in runs for rs in per_k for _, _, sh, _ in rs)
    elf = _build(tmp_path, ROWS_SRC, "rows_check")
    blob = tmp_path / "rows.bin"
    blob.write_bytes(_blob(cases, runs))
    _, uart = bench.run_qemu(elf, bench.build_plugin(), blob, tmp_path / "qemu", marker=None)
    assert uart and uart[-1] == "done", uart[-5:]
    lines = [ln.split() for ln in uart[:-1]]
    assert len(lines) == sum(len(rs) for per_k in runs for rs in per_k)
    exact = wrong = 0
    for li_s, k_s, r_s, clean, out_hex in lines:
        li, k, r = int(li_s), int(k_s), int(r_s)
        c = cases[li]
        delay, rows, shift, ok = runs[li][k][r]
        what = f"case {li} ({KINDS[c['kind']]}) k={k} delay={delay} rows={rows} shift={shift}"
        assert clean == "1", f"{what}: wrote outside its output or ring"
        got = np.frombuffer(bytes.fromhex(out_hex), np.int8)
        want = _expected(c, k)
        s = _step(c, k)
        assert max(0, shift) < min(s.in_bytes, shift + s.out_bytes), f"{what}: no overlap"
        if ok:
            np.testing.assert_array_equal(got, want, err_msg=what)
            exact += 1
        else:
            # what the device computes from the corrupted input, and not the result
            np.testing.assert_array_equal(got, _simulate(c, k, delay, rows, shift), err_msg=what)
            assert not np.array_equal(got, want), what
            wrong += 1
    assert wrong == len(ROWS) * len(bad["in_w"]) and exact > 200, (exact, wrong)


def _simulate(c: dict, k: int, delay: int, rows: int, shift: int) -> np.ndarray:
    """rows.cpp in NumPy on a byte arena: bands of ``rows`` output rows computed
    from the input bytes as they are at that moment, copied out of the ring
    ``delay`` rows later to input + shift. Exact runs give the plain result;
    runs beyond the bound give what the device computes from corrupted input."""
    (h, w), i = c["hw"], c["in_w"][k]
    in_bytes = h * w * i
    out_h = c["out_hw"][0]
    out_row = c["out_hw"][1] * c["out_w"][k]
    in_off = align4(max(0, -shift))
    out_off = in_off + shift
    arena = np.zeros(in_off + max(in_bytes, shift + out_h * out_row) + 4, np.int8)
    arena[in_off : in_off + in_bytes] = c["x"][:in_bytes]
    ring: list[np.ndarray] = []
    flushed = 0
    for oy in range(0, out_h, rows):
        count = min(rows, out_h - oy)
        now = dict(c, x=arena[in_off : in_off + in_bytes].copy())
        full = _expected(now, k).reshape(out_h, out_row)
        ring += list(full[oy : oy + count])
        keep = delay if oy + count < out_h else 0
        while len(ring) > keep:
            arena[out_off + flushed * out_row : out_off + (flushed + 1) * out_row] = ring.pop(0)
            flushed += 1
    return arena[out_off : out_off + out_h * out_row].copy()
