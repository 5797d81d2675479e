"""The activation-memory planner (reds_tf/memory.py).

Placements are checked two ways: by the planner's own rule checker, and by
running the row-by-row execution of rows.cpp in a NumPy byte arena with a
stand-in kernel whose every output byte depends on every input row it reads:
an in-place write that clobbered input still to be read would change the
result, which is compared with separate buffers.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from reds_tf import memory
from reds_tf.memory import EXTERNAL, Step


def _conv_out(n: int, k: int, s: int, same: bool) -> tuple[int, int]:
    if same:
        out = -(-n // s)
        return out, max((out - 1) * s + k - n, 0) // 2
    return (n - k) // s + 1, 0


def _chain(rng: np.random.Generator) -> list[Step]:
    """A random chain: a first conv from the caller's input, then depthwise,
    pointwise, conv and pool layers of random sizes, then a global pool and FC."""
    h = int(rng.integers(4, 20))
    c = int(rng.integers(1, 5))
    steps: list[Step] = []
    t = 0
    kinds = ["conv"] + list(rng.choice(["depthwise", "pointwise", "conv", "avgpool", "maxpool"],
                                       size=int(rng.integers(1, 7))))  # fmt: skip
    for kind in kinds:
        k = 1 if kind == "pointwise" else int(rng.choice([1, 2, 3, 5]))
        s = 1 if kind == "pointwise" else int(rng.choice([1, 1, 2]))
        k = min(k, h)
        same = bool(rng.integers(0, 2))
        oh, pt = _conv_out(h, k, s, same)
        co = c if kind in ("depthwise", "avgpool", "maxpool") else int(rng.integers(1, 9))
        src = EXTERNAL if not steps else t
        t += 1
        scratch = 4 * co + 2 * k * k * c + 4 if kind in ("conv", "pointwise") else 0
        steps.append(Step(f"l{t}", kind, (src,), t, (h, h), (oh, oh), k, s, pt, c, co, scratch))
        h, c = oh, co
    steps.append(Step("gap", "avgpool", (t,), t + 1, (h, h), (1, 1), h, 1, 0, c, c))
    steps.append(Step("fc", "fully_connected", (t + 1,), t + 2, (1, 1), (1, 1), 1, 1, 0, c, 3,
                      4 * 3 + 2 * c + 4))  # fmt: skip
    return steps


def _row(s: Step, rows: list[np.ndarray], oy: int) -> np.ndarray:
    """Stand-in kernel: output row oy from the input rows its window covers."""
    lo = max(0, oy * s.stride_h - s.pad_top)
    hi = min(s.in_hw[0], oy * s.stride_h - s.pad_top + s.kernel_h)
    acc = np.arange(1, s.out_row + 1, dtype=np.int64) * (oy + 7)
    for r in range(lo, hi):
        acc = _fold(acc, rows[r], r)
    return (acc % 251).astype(np.uint8)


def _fold(acc: np.ndarray, row: np.ndarray, r: int) -> np.ndarray:
    """One input row into the stand-in's accumulators (32-bit, as they are
    kept in the arena by an accumulating stream pool)."""
    v = row.astype(np.int64)
    return (acc * 31 + int((v * np.arange(1, v.size + 1)).sum()) + r) & 0xFFFFFFFF


def _stream_rows(s: Step, sl: memory.Slot, arena: np.ndarray, in_rows):
    """A stream's output rows in order, computed as reds_run_stream does: pulled
    from the last layer up, every layer's rows kept in its window in the byte
    arena (so a window overlapping anything still needed changes the result).
    Each stand-in kernel call reads its rows before writing; the emulation
    asserts the bytes it writes are not the bytes it reads, and that no window
    grows past the rows it was given."""
    parts, n = s.parts, len(s.parts)
    lo, held = [0] * n, [0] * n

    def win(i: int) -> int:
        return sl.window + s.windows[i][0]

    def rows_of(i: int, a: int, end: int) -> tuple[list, tuple[int, int]]:
        p, at = parts[i], win(i)
        if a > lo[i]:
            drop = min(a - lo[i], held[i])
            arena[at : at + (held[i] - drop) * p.out_row] = arena[
                at + drop * p.out_row : at + held[i] * p.out_row
            ].copy()
            held[i] -= drop
            lo[i] = lo[i] + drop if held[i] else a
        while lo[i] + held[i] < end:
            assert held[i] < s.windows[i][1], (p.name, "window overflow")
            dst = at + held[i] * p.out_row
            arena[dst : dst + p.out_row] = row(i, lo[i] + held[i], (dst, dst + p.out_row))
            held[i] += 1
        got = [None] * p.out_hw[0]
        for r in range(a, end):
            o = at + (r - lo[i]) * p.out_row
            got[r] = arena[o : o + p.out_row].copy()
        return got, (at + (a - lo[i]) * p.out_row, at + (end - lo[i]) * p.out_row)

    def row(i: int, oy: int, dst: tuple[int, int]) -> np.ndarray:
        p = parts[i]
        a = max(0, oy * p.stride_h - p.pad_top)
        end = min(p.in_hw[0], oy * p.stride_h - p.pad_top + p.kernel_h)
        if i == 0:
            return _row(p, in_rows(), oy)
        got, (r0, r1) = rows_of(i - 1, a, end)
        assert dst[1] <= r0 or r1 <= dst[0], (p.name, "writes the rows it reads")
        return _row(p, got, oy)

    last = parts[-1]
    if memory.accumulates(last):  # int32 sums in the block, one input row at a time
        at = sl.window + s.windows[-1][0]
        sums = np.arange(1, last.out_row + 1, dtype=np.int64) * 7
        a = max(0, -last.pad_top)
        for r in range(a, min(last.in_hw[0], last.kernel_h - last.pad_top)):
            arena[at : at + 4 * last.out_width] = sums.astype("<u4").view(np.uint8)
            got, _ = rows_of(n - 2, r, r + 1)
            sums = arena[at : at + 4 * last.out_width].view("<u4").astype(np.int64)
            sums = _fold(sums, got[r], r)
        yield 0, (sums % 251).astype(np.uint8)
        return
    for oy in range(last.out_hw[0]):
        yield oy, row(n - 1, oy, (-1, -1))


def _fused_rows(s: Step, in_rows):
    """A fused step's rows as reds_run_pw_dw computes them: each pointwise row
    from the input as it is when that row is first needed, then the depthwise
    row from the pointwise rows."""
    pw = Step("pw", "pointwise", s.inputs, 0, s.in_hw, s.in_hw, 1, 1, 0, s.in_width, s.out_width)
    dw = Step("dw", "depthwise", (0,), s.output, s.in_hw, s.out_hw, s.kernel_h, s.stride_h,
              s.pad_top, s.out_width, s.out_width)  # fmt: skip
    mid: dict[int, np.ndarray] = {}

    def row(oy: int) -> np.ndarray:
        lo = max(0, oy * s.stride_h - s.pad_top)
        hi = min(s.in_hw[0], oy * s.stride_h - s.pad_top + s.kernel_h)
        for r in range(lo, hi):
            if r not in mid:
                mid[r] = _row(pw, in_rows(), r)
        return _row(dw, [mid.get(r) for r in range(s.in_hw[0])], oy)

    return row


_SEPARATE = memory.Slot(EXTERNAL, EXTERNAL)  # a stream run in a block of its own


def _scratch(s: Step) -> np.ndarray:
    return np.zeros(s.window, np.uint8)


def _run(steps: list[Step], placement: memory.Placement | None, x: np.ndarray) -> np.ndarray:
    """The chain on the caller's input x: in an arena per ``placement`` with the
    row runner's ring and delay, or (None) with separate buffers."""
    arena = np.zeros(placement.arena_bytes if placement else 0, np.uint8)
    cur = x
    for i, s in enumerate(steps):
        sl = placement.slots[i] if placement else None

        def in_rows(sl=sl, s=s, cur=cur):
            if sl is None or sl.src == EXTERNAL:
                return [cur[r * s.in_row : (r + 1) * s.in_row] for r in range(s.in_hw[0])]
            return [arena[sl.src + r * s.in_row : sl.src + (r + 1) * s.in_row].copy()
                    for r in range(s.in_hw[0])]  # fmt: skip

        h, orow = s.out_hw[0], s.out_row
        if s.kind == memory.STREAM:
            got = []
            for oy, r in _stream_rows(s, sl or _SEPARATE, arena if sl else _scratch(s), in_rows):
                if sl is None or sl.dst == EXTERNAL:
                    got.append(r)
                else:
                    arena[sl.dst + oy * orow : sl.dst + (oy + 1) * orow] = r
            if sl is None:
                cur = np.concatenate(got)
            elif sl.dst == EXTERNAL:
                return np.concatenate(got)
            continue
        row = _fused_rows(s, in_rows) if s.kind == memory.FUSED else (
            lambda oy, s=s, in_rows=in_rows: _row(s, in_rows(), oy)
        )  # fmt: skip
        if sl is None or sl.dst == EXTERNAL:
            out = np.concatenate([row(oy) for oy in range(h)])
            if sl is None:
                cur = out
                continue
            return out
        if sl.delay < 0 and s.kind == memory.FUSED:  # row by row, written directly
            for oy in range(h):
                arena[sl.dst + oy * orow : sl.dst + (oy + 1) * orow] = row(oy)
            continue
        if sl.delay < 0:  # one call: reads all input, then writes
            out = np.concatenate([row(oy) for oy in range(h)])
            arena[sl.dst : sl.dst + out.size] = out
            continue
        held = flushed = 0  # exactly the order of reds_run_conv
        for oy in range(0, h, sl.rows):
            count = min(sl.rows, h - oy)
            band = np.concatenate([row(y) for y in range(oy, oy + count)])
            at = sl.ring + held * orow  # the kernel reads the arena as it is now
            arena[at : at + band.size] = band
            held += count
            keep = sl.delay if oy + count < h else 0
            if held > keep:
                n = held - keep
                arena[sl.dst + flushed * orow : sl.dst + (flushed + n) * orow] = arena[
                    sl.ring : sl.ring + n * orow
                ]
                arena[sl.ring : sl.ring + keep * orow] = arena[
                    sl.ring + n * orow : sl.ring + (n + keep) * orow
                ].copy()
                flushed, held = flushed + n, keep
    return cur


@pytest.mark.parametrize("seed", range(60))
def test_random_chains_in_place_equal_separate_buffers(seed):
    rng = np.random.default_rng(seed)
    steps = _chain(rng)
    x = rng.integers(0, 256, steps[0].in_bytes).astype(np.uint8)
    want = _run(steps, None, x)
    placement = memory.plan(steps)
    assert memory.check(steps, placement) == []
    np.testing.assert_array_equal(_run(steps, placement, x), want)
    # At least two rows per call (reds export's default): still the same bytes.
    balanced = memory.plan(steps, min_rows=2)
    assert balanced.arena_bytes >= placement.arena_bytes
    assert memory.check(steps, balanced) == []
    np.testing.assert_array_equal(_run(steps, balanced, x), want)
    # With room to spare, bands of several rows per call: still the same bytes.
    roomy = memory.plan(steps, arena_bytes=placement.arena_bytes * 5 // 4)
    assert roomy.arena_bytes >= placement.arena_bytes
    assert memory.check(steps, roomy) == []
    np.testing.assert_array_equal(_run(steps, roomy, x), want)
    separate = max(s.in_bytes + s.out_bytes for s in steps[1:-1]) + max(
        memory.align4(s.scratch) for s in steps
    )
    assert placement.arena_bytes <= separate + 8 * len(steps)


def test_the_checker_catches_an_output_shifted_one_byte_too_far():
    """Not vacuous: a depthwise layer run in place at its largest safe shift is
    accepted and computes what separate buffers do; 4 bytes further the checker
    reports it and the emulated run computes something else."""
    s0 = Step("c", "conv", (EXTERNAL,), 1, (8, 8), (8, 8), 3, 1, 1, 1, 4, 64)
    s1 = Step("dw", "depthwise", (1,), 2, (8, 8), (8, 8), 3, 1, 1, 4, 4)
    s2 = Step("fc", "fully_connected", (2,), 3, (1, 1), (1, 1), 1, 1, 0, 256, 2, 524)
    steps = [s0, s1, s2]
    shift = int(memory.max_shift(s1, 1))
    assert shift == 0  # a 3x3 stride-1 map may overwrite itself one row late
    x = np.random.default_rng(0).integers(0, 256, 64).astype(np.uint8)
    want = _run(steps, None, x)
    for extra, ok in ((0, True), (4, False)):
        dst = 8 + shift + extra
        slots = [
            memory.Slot(EXTERNAL, 8, scratch=1000),
            memory.Slot(8, dst, ring=600, delay=1, scratch=1000),
            memory.Slot(dst, EXTERNAL, scratch=1000),
        ]
        placement = memory.Placement(slots, 2000)
        problems = memory.check(steps, placement)
        assert (problems == []) == ok, problems
        assert np.array_equal(_run(steps, placement, x), want) == ok


def test_ds_cnn_and_mobilenet_shapes():
    """DS-CNN-S on 32x32x3 (stride-2 first conv to 16x16x64, 4 blocks) and
    MobileNetV1-0.25 on 96x96x3: the arena is the busiest layer's need."""

    def step(name, kind, t, ih, oh, kh, sh, pt, ci, co, scr=0):
        return Step(name, kind, (t - 1 if t > 1 else EXTERNAL,), t, (ih, ih), (oh, oh), kh, sh,
                    pt, ci, co, scr)  # fmt: skip

    ds = [step("c", "conv", 1, 32, 16, 3, 2, 0, 3, 64, 4 * 64 + 2 * 27 + 4)]
    for b in range(4):
        ds.append(step(f"dw{b}", "depthwise", len(ds) + 1, 16, 16, 3, 1, 1, 64, 64))
        ds.append(step(f"pw{b}", "pointwise", len(ds) + 1, 16, 16, 1, 1, 0, 64, 64, 388))
    ds.append(step("gap", "avgpool", len(ds) + 1, 16, 1, 16, 1, 0, 64, 64))
    p = memory.plan(ds)
    assert memory.check(ds, p) == []
    # one 16x16x64 map + the depthwise's 2-row ring (16 x 64 bytes each)
    assert p.arena_bytes == p.lower_bound == 16 * 16 * 64 + 2 * 16 * 64


def test_the_random_chains_exercise_rings_and_bands():
    """Not vacuous: most random chains run some layer in place, and with room to
    spare many compute several rows per kernel call."""
    in_place = bands = 0
    for seed in range(60):
        steps = _chain(np.random.default_rng(seed))
        tight = memory.plan(steps)
        roomy = memory.plan(steps, arena_bytes=tight.arena_bytes * 5 // 4)
        in_place += any(sl.delay >= 0 for sl in tight.slots)
        bands += any(sl.delay >= 0 and sl.rows > 1 for sl in roomy.slots)
    assert in_place >= 30 and bands >= 15, (in_place, bands)


def _mobile_chain(rng: np.random.Generator) -> list[Step]:
    """A random MobileNet-like chain: first conv, then (depthwise, pointwise)
    blocks of random stride and channel growth, global pool and FC."""
    h, c = int(rng.integers(5, 17)), int(rng.integers(1, 5))
    oh, pt = _conv_out(h, 3, 2, True)
    co = int(rng.integers(2, 9))
    steps = [Step("c", "conv", (EXTERNAL,), 1, (h, h), (oh, oh), 3, 2, pt, c, co, 64)]
    h, c, t = oh, co, 1
    for b in range(int(rng.integers(1, 4))):
        s = int(rng.choice([1, 2]))
        oh, pt = _conv_out(h, 3, s, bool(rng.integers(0, 2)) or s == 1 or h < 3)
        steps.append(Step(f"dw{b}", "depthwise", (t,), t + 1, (h, h), (oh, oh), 3, s, pt, c, c))
        co = int(rng.integers(1, 3 * c + 1))
        steps.append(Step(f"pw{b}", "pointwise", (t + 1,), t + 2, (oh, oh), (oh, oh), 1, 1, 0,
                          c, co, 4 * co + 2 * c + 4))  # fmt: skip
        h, c, t = oh, co, t + 2
    steps.append(Step("gap", "avgpool", (t,), t + 1, (h, h), (1, 1), h, 1, 0, c, c))
    steps.append(Step("fc", "fully_connected", (t + 1,), t + 2, (1, 1), (1, 1), 1, 1, 0, c, 3,
                      4 * 3 + 2 * c + 4))  # fmt: skip
    return steps


@pytest.mark.parametrize("seed", range(40))
def test_fused_pointwise_depthwise_equals_separate_layers(seed):
    """Every fusable pointwise + depthwise pair fused (the planner's candidates),
    placed and run in the byte arena as reds_run_pw_dw does: the same bytes as
    the unfused chain with separate buffers; and the planner's own choice of
    fusions never makes the arena larger."""
    rng = np.random.default_rng(100 + seed)
    steps = _mobile_chain(rng)
    x = rng.integers(0, 256, steps[0].in_bytes).astype(np.uint8)
    want = _run(steps, None, x)
    names = set(memory.fusable(steps))
    fused = memory.fuse(steps, names)
    assert len(fused) == len(steps) - len(names)
    placement = memory.plan(fused)
    assert memory.check(fused, placement) == []
    np.testing.assert_array_equal(_run(fused, placement, x), want)
    chosen, placements = memory.plan_submodels([steps])
    assert placements[0].arena_bytes <= memory.plan(steps).arena_bytes
    assert memory.check(memory.fuse(steps, chosen), placements[0]) == []
    np.testing.assert_array_equal(_run(memory.fuse(steps, chosen), placements[0], x), want)


def test_fusion_lowers_mobilenet_peak():
    """MobileNetV1-0.25 at 96x96: fusing the first pointwise layer (48x48,
    8 -> 16 channels) with the stride-2 depthwise after it removes the
    36,864-byte map from the peak."""

    def step(name, kind, t, ih, oh, kh, sh, pt, ci, co, scr=0):
        src = t - 1 if t > 1 else EXTERNAL
        return Step(name, kind, (src,), t, (ih, ih), (oh, oh), kh, sh, pt, ci, co, scr)

    st = [step("c", "conv", 1, 96, 48, 3, 2, 0, 3, 8, 4 * 8 + 2 * 27 + 4)]
    h, c = 48, 8
    for i, (co, s) in enumerate([(16, 1), (32, 2), (32, 1), (64, 2)]):
        oh = -(-h // s)
        st.append(step(f"dw{i}", "depthwise", len(st) + 1, h, oh, 3, s, 1 if s == 1 else 0, c, c))
        st.append(step(f"pw{i}", "pointwise", len(st) + 1, oh, oh, 1, 1, 0, c, co,
                       4 * co + 2 * c + 4))  # fmt: skip
        h, c = oh, co
    unfused = memory.plan(st)
    chosen, placements = memory.plan_submodels([st])
    assert "pw0" in chosen
    assert unfused.arena_bytes >= 48 * 48 * 16 > placements[0].arena_bytes


def test_describe_accounts_for_the_busiest_step():
    """memory.describe: per step, the arena bytes in use (input, output, ring,
    window and scratch, overlaps counted once) never exceed the arena, and the
    busiest step uses all of a tight arena; it says how each step runs."""
    for seed in range(20):
        steps = _mobile_chain(np.random.default_rng(300 + seed))
        chosen, (placement,) = memory.plan_submodels([steps])
        fused = memory.fuse(steps, chosen)
        rows = memory.describe(fused, placement)
        assert [r["name"] for r in rows] == [s.name for s in fused]
        assert max(r["arena_bytes"] for r in rows) <= placement.arena_bytes
        for r, sl in zip(rows, placement.slots, strict=True):
            assert (r["how"] == "direct") == (sl.delay < 0 and r["kind"] != memory.FUSED)
    ds = [Step("c", "conv", (EXTERNAL,), 1, (8, 8), (8, 8), 3, 1, 1, 1, 16, 0),
          Step("dw", "depthwise", (1,), 2, (8, 8), (8, 8), 3, 1, 1, 16, 16),
          Step("fc", "fully_connected", (2,), 3, (1, 1), (1, 1), 1, 1, 0, 1024, 2, 0)]  # fmt: skip
    p = memory.plan(ds)
    rows = memory.describe(ds, p)
    assert rows[1]["how"] == "in place, 1 row per call"
    assert rows[1]["arena_bytes"] == p.arena_bytes == 8 * 8 * 16 + 2 * 8 * 16


def _ds_cnn(w: int = 64) -> list[Step]:
    """DS-CNN-S on 32x32x3: stride-2 first conv to 16x16xw, 4 depthwise +
    pointwise blocks, global average pool, FC."""

    def step(name, kind, t, ih, oh, kh, sh, pt, ci, co, scr=0):
        return Step(name, kind, (t - 1 if t > 1 else EXTERNAL,), t, (ih, ih), (oh, oh), kh, sh,
                    pt, ci, co, scr)  # fmt: skip

    ds = [step("c", "conv", 1, 32, 16, 3, 2, 0, 3, w, 4 * w + 2 * 27 + 4)]
    for b in range(4):
        ds.append(step(f"dw{b}", "depthwise", len(ds) + 1, 16, 16, 3, 1, 1, w, w))
        ds.append(step(f"pw{b}", "pointwise", len(ds) + 1, 16, 16, 1, 1, 0, w, w, 6 * w + 4))
    ds.append(step("gap", "avgpool", len(ds) + 1, 16, 1, 16, 1, 0, w, w))
    ds.append(Step("fc", "fully_connected", (len(ds),), len(ds) + 1, (1, 1), (1, 1), 1, 1, 0, w,
                   10, 4 * 10 + 2 * w + 4))  # fmt: skip
    return ds


@pytest.mark.parametrize("seed", range(40))
def test_random_streams_equal_separate_buffers(seed):
    """A random segment of a random chain run as one stream (reds_run_stream's
    order, windows in the byte arena): the same bytes as separate buffers; and
    the planner's own streams (memory.plan_streams) never enlarge the arena,
    pass the checker and compute the same bytes too."""
    rng = np.random.default_rng(500 + seed)
    steps = (_chain if seed % 2 else _mobile_chain)(rng)
    x = rng.integers(0, 256, steps[0].in_bytes).astype(np.uint8)
    want = _run(steps, None, x)
    runs = memory.streamable(steps)
    assert runs  # every random chain has one (first conv .. global pool at least)
    run = runs[int(rng.integers(0, len(runs)))]
    a = int(rng.integers(0, len(run) - 1))
    b = int(rng.integers(a + 1, len(run)))
    streamed = memory.arrange(steps, streams=[(run[a], run[b])])
    assert len(streamed) == len(steps) - (b - a)
    placement = memory.plan(streamed)
    assert memory.check(streamed, placement) == []
    np.testing.assert_array_equal(_run(streamed, placement, x), want)
    if len(run) >= 4:  # two streams back to back: one's output is the other's input
        two = memory.arrange(steps, streams=[(run[0], run[1]), (run[2], run[-1])])
        placement = memory.plan(two)
        assert memory.check(two, placement) == []
        np.testing.assert_array_equal(_run(two, placement, x), want)
    fused, pls = memory.plan_submodels([steps])
    segs, fused2, (best,) = memory.plan_streams([steps], fused=fused, placements=pls)
    assert best.arena_bytes <= pls[0].arena_bytes
    chosen = memory.arrange(steps, fused2, segs)
    assert memory.check(chosen, best) == []
    np.testing.assert_array_equal(_run(chosen, best, x), want)


def test_the_random_streams_are_not_vacuous():
    """The planner streams most random chains, many ending in an accumulating
    pool; and the emulation catches a wrong window layout (every window at
    offset 0)."""
    streamed = accumulating = 0
    for seed in range(40):
        steps = (_chain if seed % 2 else _mobile_chain)(np.random.default_rng(500 + seed))
        segs, _, _ = memory.plan_streams([steps])
        streamed += bool(segs)
        names = {s.name: s for s in steps}
        accumulating += any(memory.accumulates(names[b]) for _, b in segs)
    assert streamed >= 25 and accumulating >= 10, (streamed, accumulating)
    steps = _ds_cnn(8)
    x = np.random.default_rng(1).integers(0, 256, steps[0].in_bytes).astype(np.uint8)
    want = _run(steps, None, x)
    st = memory.arrange(steps, streams=[("c", "gap")])
    placement = memory.plan(st)
    np.testing.assert_array_equal(_run(st, placement, x), want)
    bad = [dataclasses.replace(st[0], windows=tuple((0, r) for _, r in st[0].windows)), st[1]]
    try:
        assert not np.array_equal(_run(bad, placement, x), want)
    except AssertionError as e:  # or the emulation's own read/write check fires
        assert "writes the rows it reads" in str(e) or "assert not" in str(e)


def test_streaming_ds_cnn_takes_under_half_of_tflite_micros_arena():
    """DS-CNN-S on CIFAR-10 (64 channels): TFLite Micro's activation arena for
    it is 32,768 bytes (two 16x16x64 maps). Streamed from the first conv to the
    global pool, no 16,384-byte map exists: four 3-row depthwise windows, two
    shared one-row buffers, the pool's int32 sums, the kernel scratch."""
    steps = _ds_cnn(64)
    fused, pls = memory.plan_submodels([steps])
    segs, _, (best,) = memory.plan_streams([steps], fused=fused, placements=pls)
    assert segs == (("c", "gap"),)
    st = memory.arrange(steps, streams=segs)[0]
    rows = [r for _, r in st.windows]
    assert rows == [3, 1, 3, 1, 3, 1, 3, 1, 1, 0]  # depthwise windows hold 3 rows
    row = 16 * 64
    assert st.window_bytes == 4 * 3 * row + 2 * row + 4 * 64
    assert memory.check(memory.arrange(steps, streams=segs), best) == []
    assert best.arena_bytes == st.window_bytes + 6 * 64 + 4 + 64  # + scratch + pooled vector
    assert best.arena_bytes <= 32768 // 2 < pls[0].arena_bytes
