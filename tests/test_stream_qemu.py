"""Streams (reds_run_stream, reds_tf/kernels/rows.cpp) with the memory
planner's window layout (reds_tf/memory.py ``stream``/``stream_layout``, the
offsets the generated runtime passes per submodel): on random small chains of
row-wise layers the streamed result is EXACTLY the bytes of one whole-map
kernel call per layer (REDS_CONV, REDS_POINTWISE, REDS_DEPTHWISE, REDS_AVGPOOL,
REDS_MAXPOOL), which also equal the NumPy int8 model.

Run with the Cortex-M4 DSP kernels in QEMU and with the portable kernels on the
host (g++, address and undefined-behaviour sanitizers). The chains have edge
sizes: 1-row and odd maps, stride 2 (also in one direction only), SAME and
VALID, kernels 1x1, 3x3, 5x5, 2x2, 3x1, 1x3, 5x3 and 10x4 (taller than the map
too), channel counts that are multiples of 4 (DSP paths) and not (their
fallbacks), pools in the middle, chains ending in a one-pixel average pool
(int32 sums in the block: global, partial window, padded) and in an ordinary
layer, 2 or 3 nested submodels. Canary bytes around the window block, the
output and the scratch show that nothing outside the planner's block, the
output and the scratch bytes is written, and the input is left alone.

Not vacuous: a layout with two windows at one offset computes something else,
a block one window too short and a scratch of 0 bytes trip the canaries. The
harness is tests/dsp_check/stream_check.cpp.
"""

from __future__ import annotations

import functools
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_dsp import TOOLS, _build, _conv_blob, _conv_case, _pool_case, _words
from test_rows_qemu import KINDS, _expected, _maxpool_case

from reds_tf import bench, memory
from reds_tf.codegen.render import kernel_sources
from reds_tf.memory import EXTERNAL, Step

STREAM_SRC = Path(__file__).resolve().parent / "dsp_check" / "stream_check.cpp"
MAGIC = 0x4D525453  # "STRM"
IO_LIMIT = 1 << 19  # blob bytes per run (the bench I/O region holds 1 MiB)
CLEAN = 15  # block, output and scratch canaries intact, input unchanged
N_RANDOM = 400  # random chains (plus the fixed edge chains)

CONV, POINTWISE, DEPTHWISE, AVGPOOL, MAXPOOL = range(5)  # kinds = REDS_OP_*
KERNELS = {
    CONV: [(1, 1), (3, 3), (3, 3), (5, 5), (2, 2), (3, 1), (1, 3), (10, 4)],
    DEPTHWISE: [(3, 3), (3, 3), (5, 5), (3, 1), (1, 3), (5, 3)],
    AVGPOOL: [(2, 2), (3, 3), (2, 1), (1, 2), (3, 2)],
    MAXPOOL: [(2, 2), (3, 3), (2, 1), (1, 2), (3, 2)],
}
STRIDES = [(1, 1), (1, 1), (2, 2), (2, 1), (1, 2)]
MAX_HW = 11


def _widths(rng, K: int) -> list[int]:
    """Nested widths: all multiples of 4 (the DSP paths) or any (fallbacks)."""
    if rng.random() < 0.5:
        return sorted(int(v) * 4 for v in rng.integers(1, 4, K))
    return sorted(int(v) for v in rng.integers(1, 11, K))


def _out_hw(hw, kernel, strides, same) -> tuple[int, int]:
    if same:
        return tuple(-(-hw[i] // strides[i]) for i in (0, 1))
    return tuple((hw[i] - kernel[i]) // strides[i] + 1 for i in (0, 1))


def _layer(rng, spec: dict, hw, in_w: list[int], zp: int, x: np.ndarray) -> dict:
    """One layer of a chain from its spec (kind, kernel, strides, same, out_w,
    act), on the current map (full width x, zero point zp). Convolutions are
    requantised to spread their outputs over the int8 range (random weights
    with the test_dsp defaults mostly saturate, which would hide corruption)."""
    kind, act = spec["kind"], spec.get("act", (-128, 127))
    kernel, strides, same = spec.get("kernel", (1, 1)), spec.get("strides", (1, 1)), spec["same"]
    if kind in (AVGPOOL, MAXPOOL):
        make = _pool_case if kind == AVGPOOL else _maxpool_case
        return make(rng, in_w, hw=hw, pool=kernel, strides=strides, same=same, act=act)
    out_w = in_w if kind == DEPTHWISE else spec["out_w"]
    c = _conv_case(
        rng, in_w, out_w, hw=hw, kernel=kernel, strides=strides, same=same,
        pointwise=kind == POINTWISE, depthwise=kind == DEPTHWISE,
        bias=bool(rng.random() < 0.8), per_submodel=bool(rng.random() < 0.3), act=act,
    )  # fmt: skip
    fan_in = kernel[0] * kernel[1] * (1 if kind == DEPTHWISE else in_w[-1])
    rms_x = math.sqrt(float(np.mean((x.astype(np.float64) - zp) ** 2))) + 1.0
    rms_acc = rms_x * 74.0 * math.sqrt(fan_in)  # int8 weights: rms 74
    s0 = int(round(math.log2(40.0 / (0.75 * rms_acc))))
    c["input_offset"] = -zp
    c["output_offset"] = int(rng.integers(-60, 61))
    c["shift"] = rng.integers(s0 - 1, s0 + 2, size=c["shift"].size).clip(-31, 0).astype(np.int64)
    if c["bias"] is not None:
        c["bias"] = rng.integers(-int(rms_acc), int(rms_acc) + 1, size=c["bias"].size)
    return c


def _chain(rng, hw, in_w: list[int], specs: list[dict], acc: bool | None = None) -> dict:
    """A chain from its input (size hw, widths in_w) and layer specs; "acc":
    the last layer is an average pool with one output pixel (the stream adds its
    input up), as ``acc`` says when given."""
    zp = int(rng.integers(-20, 21))
    x = rng.integers(-128, 128, size=hw[0] * hw[1] * in_w[-1]).astype(np.int8)
    layers = []
    for spec in specs:
        c = _layer(rng, spec, hw, in_w, zp, x)
        if not layers:
            c["x"] = x
        layers.append(c)
        x = _expected(dict(c, x=x), len(in_w) - 1).reshape(-1)
        hw, in_w = tuple(c["out_hw"]), c["out_w"]
        zp = c["output_offset"] if c["kind"] <= DEPTHWISE else zp
    last = layers[-1]
    accumulates = tuple(last["out_hw"]) == (1, 1) and last["kind"] == AVGPOOL
    assert acc is None or acc == accumulates
    return {"layers": layers, "acc": accumulates}


def _random_spec(rng, hw, kind: int) -> dict:
    """A random layer on an hw map (kernels and VALID only where they fit)."""
    spec: dict = {"kind": kind, "same": bool(rng.random() < 0.5)}
    if kind == POINTWISE:
        spec["same"] = False
        return spec
    kernel = KERNELS[kind][int(rng.integers(len(KERNELS[kind])))]
    if kernel == (10, 4) and (hw[0] < 10 or hw[1] < 4):
        kernel = (3, 3)
    spec["kernel"], spec["strides"] = kernel, STRIDES[int(rng.integers(len(STRIDES)))]
    if kernel[0] > hw[0] or kernel[1] > hw[1]:
        spec["same"] = True
    if kind == CONV and kernel == (1, 1) and spec["strides"] == (1, 1):
        return {"kind": POINTWISE, "same": False}
    if rng.random() < 0.25:
        spec["act"] = (int(rng.integers(-128, -30)), int(rng.integers(30, 128)))
    return spec


def _random_chain(rng) -> dict:
    K = int(rng.integers(2, 4))
    hw = tuple(int(rng.choice([1, 2, 3, 4, 5, 6, 7, 8, 9, MAX_HW])) for _ in range(2))
    if rng.random() < 0.1:
        hw = (int(rng.integers(10, 13)), int(rng.integers(4, 7)))  # room for 10x4
    in_w = _widths(rng, K)
    n = int(rng.integers(2, 8))
    acc = bool(rng.random() < 0.4)
    specs, cur = [], hw
    for _ in range(n - 1 if acc else n):
        kind = int(rng.choice([CONV, POINTWISE, DEPTHWISE, AVGPOOL, MAXPOOL],
                              p=[0.3, 0.2, 0.25, 0.125, 0.125]))  # fmt: skip
        spec = _random_spec(rng, cur, kind)
        spec["out_w"] = _widths(rng, K)
        specs.append(spec)
        if spec["kind"] != POINTWISE:
            cur = _out_hw(cur, spec["kernel"], spec["strides"], spec["same"])
    if acc:
        specs.append(_one_pixel_pool(rng, cur))
    return _chain(rng, hw, in_w, specs)


def _one_pixel_pool(rng, hw) -> dict:
    """An average pool with one output pixel: global, a partial VALID window,
    or SAME with a stride of the map size (padding when the filter is larger)."""
    how = int(rng.integers(3))
    if how == 0:
        return {"kind": AVGPOOL, "kernel": hw, "strides": (1, 1), "same": False}
    kernel = tuple(int(rng.integers(1, 4)) for _ in range(2))
    if how == 1:
        kernel = tuple(min(kernel[i], hw[i]) for i in (0, 1))
        return {"kind": AVGPOOL, "kernel": kernel, "strides": hw, "same": False}
    act = (int(rng.integers(-128, -10)), int(rng.integers(10, 128)))
    return {"kind": AVGPOOL, "kernel": kernel, "strides": hw, "same": True, "act": act}


def _spec(kind, kernel=(1, 1), strides=(1, 1), same=True, out_w=None, act=(-128, 127)) -> dict:
    return {"kind": kind, "kernel": kernel, "strides": strides, "same": same, "out_w": out_w,
            "act": act}  # fmt: skip


def _edge_chains(rng) -> list[dict]:
    """Fixed chains for the shapes a random draw may miss."""
    gap = [_spec(AVGPOOL, (6, 3), same=False)]
    return [
        # DS-CNN's KWS front: 10x4 stride 2 SAME, depthwise + pointwise, global pool
        _chain(
            rng,
            (12, 6),
            [1, 1],
            [
                _spec(CONV, (10, 4), (2, 2), out_w=[8, 12]),
                _spec(DEPTHWISE, (3, 3)),
                _spec(POINTWISE, out_w=[8, 16]),
            ]
            + gap,
            acc=True,
        ),
        # a 1-row map: 1x3 conv, 3x3 depthwise taller than the map, 1x2 max pool, pointwise
        _chain(
            rng,
            (1, 9),
            [4, 8],
            [
                _spec(CONV, (1, 3), out_w=[8, 12]),
                _spec(DEPTHWISE, (3, 3)),
                _spec(MAXPOOL, (1, 2), (1, 2), same=False),
                _spec(POINTWISE, out_w=[4, 8]),
            ],
            acc=False,
        ),
        # MobileNet-like: stride 2 SAME and VALID on odd maps, accumulating pool
        _chain(
            rng,
            (9, 9),
            [3, 3, 3],
            [
                _spec(CONV, (3, 3), (2, 2), out_w=[4, 8, 8]),
                _spec(DEPTHWISE, (3, 3), (2, 2), same=False),
                _spec(POINTWISE, out_w=[8, 8, 16]),
                _spec(DEPTHWISE, (3, 3)),
                _spec(POINTWISE, out_w=[8, 12, 16]),
                _spec(AVGPOOL, (2, 2), same=False),
            ],
            acc=True,
        ),
        # 5x5 VALID, 2x2 average pool stride 2 on an odd map, 3x3 max pool SAME, 3x1 conv
        _chain(
            rng,
            (11, 9),
            [3, 5],
            [
                _spec(CONV, (5, 5), same=False, out_w=[6, 7]),
                _spec(AVGPOOL, (2, 2), (2, 2), same=False),
                _spec(MAXPOOL, (3, 3)),
                _spec(CONV, (3, 1), out_w=[2, 9]),
            ],
            acc=False,
        ),
        # a one-pixel pool on a one-pixel map with padding (3x3 SAME), widths not of 4
        _chain(
            rng,
            (3, 3),
            [5, 6],
            [_spec(CONV, (3, 3), (3, 3), out_w=[3, 7]), _spec(AVGPOOL, (3, 3), act=(-40, 50))],
            acc=True,
        ),
        # one-row windows sharing two buffers (neighbours alternating, not only
        # neighbours on one buffer), a 3-row window between them, 2x1 stride
        _chain(
            rng,
            (8, 7),
            [4, 8, 12],
            [
                _spec(CONV, (3, 3), (2, 1), out_w=[4, 8, 8]),
                _spec(POINTWISE, out_w=[4, 4, 8]),
                _spec(CONV, (1, 3), out_w=[8, 8, 8]),
                _spec(MAXPOOL, (1, 2), (1, 2), same=False),
                _spec(POINTWISE, out_w=[4, 8, 12]),
                _spec(DEPTHWISE, (3, 3)),
                _spec(POINTWISE, out_w=[5, 6, 7]),
                _spec(AVGPOOL, (4, 3), same=False),
            ],
            acc=True,
        ),
        # the chain the wrong layouts use: two 3-row windows, then a shared one
        _chain(
            rng,
            (7, 6),
            [4, 8],
            [
                _spec(CONV, (3, 3), out_w=[8, 12]),
                _spec(DEPTHWISE, (3, 3)),
                _spec(DEPTHWISE, (3, 3)),
                _spec(POINTWISE, out_w=[4, 8]),
            ],
            acc=False,
        ),
    ]


BAD_CHAIN = 6  # in _edge_chains


def _steps(chain: dict, k: int) -> list[Step]:
    """Submodel k's steps as the export's memory planner sees them."""
    steps = []
    for j, c in enumerate(chain["layers"]):
        i, o = c["in_w"][k], c["out_w"][k]
        (kh, kw), kind = c["kernel"], c["kind"]
        scratch = 4 * o + 2 * kh * kw * i + 4 if kind in (CONV, POINTWISE) else 0
        src = j - 1 if j else EXTERNAL
        steps.append(Step(f"s{j}", KINDS[kind], (src,), j, tuple(c["hw"]), tuple(c["out_hw"]),
                          kh, c["strides"][0], c["pad"][0], i, o, scratch))  # fmt: skip
    return steps


def _layout(chain: dict, k: int) -> Step:
    """The STREAM step of the whole chain (memory.stream: stream_layout's
    windows and block bytes, the largest scratch)."""
    steps = _steps(chain, k)
    assert memory.streamable(steps) == [[s.name for s in steps]]
    (st,) = memory.stream(steps, [(steps[0].name, steps[-1].name)])
    assert st.kind == memory.STREAM and len(st.windows) == len(steps)
    assert memory.accumulates(steps[-1]) == chain["acc"]
    return st


@functools.lru_cache(maxsize=1)
def _cases() -> tuple[list[dict], list[list[list[tuple]]]]:
    """The chains and, per chain and submodel, the runs (block bytes, scratch
    bytes, window offsets, what to expect)."""
    rng = np.random.default_rng(2026)
    chains = _edge_chains(rng) + [_random_chain(rng) for _ in range(N_RANDOM)]
    runs = []
    for ci, ch in enumerate(chains):
        per_k = []
        for k in range(len(ch["layers"][0]["in_w"])):
            st = _layout(ch, k)
            offs = [w[0] for w in st.windows]
            rs = [(st.window_bytes, st.scratch, offs, "exact")]
            if ci == BAD_CHAIN:
                a, b = st.windows[0], st.windows[1]
                assert a[1] == b[1] == 3 and a[0] != b[0], st.windows
                rs.append((st.window_bytes, st.scratch, [a[0], a[0], *offs[2:]], "overlap"))
                short = max(o for o, r in st.windows if r > 1)  # the last 3-row window
                assert short + 4 <= st.window_bytes
                rs.append((short, st.scratch, offs, "short block"))
                if k > 0:  # a nested input width: the conv's im2col path uses the scratch
                    rs.append((st.window_bytes, 0, offs, "no scratch"))
            per_k.append(rs)
        rows = {tuple(w[1] for w in _layout(ch, k).windows) for k in range(len(per_k))}
        assert len(rows) == 1, rows  # the runtime keeps one rows value per stage
        ch["rows"] = list(rows.pop())
        runs.append(per_k)
    return chains, runs


def _chain_bytes(ch: dict, per_k: list) -> bytes:
    """One chain's part of the blob (stream_check.cpp's format)."""
    layers = ch["layers"]
    out = [_words([len(layers), len(per_k)])]
    for j, c in enumerate(layers):
        if j:  # only the first layer's input is read
            c = dict(c, x=np.zeros(c["hw"][0] * c["hw"][1] * c["in_w"][-1], np.int8))
        out.append(_conv_blob([c])[8:])
    out.append(_words(ch["rows"]))
    for rs in per_k:
        out.append(_words([len(rs), *[v for blk, scr, offs, _ in rs for v in (blk, scr, *offs)]]))
    return b"".join(out)


def _run_batches(run, d: Path, chains: list[dict], runs: list) -> list[str]:
    """All chains through ``run`` (blob file -> output lines) in blobs that fit
    the bench I/O region; the lines' chain numbers made global, one "done"."""
    parts = [_chain_bytes(ch, per_k) for ch, per_k in zip(chains, runs, strict=True)]
    lines: list[str] = []
    start = 0
    while start < len(chains):
        end, size = start, 8
        while end < len(chains) and (end == start or size + len(parts[end]) <= IO_LIMIT):
            size += len(parts[end])
            end += 1
        blob = d / f"stream{start}.bin"
        head = np.array([MAGIC, end - start], "<u4").tobytes()
        blob.write_bytes(head + b"".join(parts[start:end]))
        got = run(blob)
        assert got and got[-1] == "done", got[-5:]
        for ln in got[:-1]:
            ci, rest = ln.split(" ", 1)
            lines.append(f"{int(ci) + start} {rest}")
        start = end
    return [*lines, "done"]


def _numpy(chain: dict, k: int) -> np.ndarray:
    x = chain["layers"][0]["x"]
    for c in chain["layers"]:
        x = _expected(dict(c, x=x), k).reshape(-1)
    return x


def _check(lines: list[str], chains: list[dict], runs: list) -> dict[str, int]:
    """Every run's line against what it must be; counts per expectation."""
    assert lines and lines[-1] == "done", lines[-5:]
    got = [ln.split() for ln in lines[:-1]]
    assert len(got) == sum(len(rs) for per_k in runs for rs in per_k)
    seen: dict[str, int] = {}
    for ci_s, k_s, r_s, clean_s, stream_hex, whole_hex in got:
        ci, k, r, clean = int(ci_s), int(k_s), int(r_s), int(clean_s)
        ch = chains[ci]
        blk, scr, offs, what = runs[ci][k][r]
        shape = " -> ".join(
            f"{KINDS[c['kind']]} {c['hw'][0]}x{c['hw'][1]}x{c['in_w'][k]} k{c['kernel']} "
            f"s{c['strides']} p{c['pad']}" for c in ch["layers"]
        )  # fmt: skip
        msg = f"chain {ci} k={k} ({what}): {shape} -> {ch['layers'][-1]['out_hw']}; windows {offs}"
        stream = np.frombuffer(bytes.fromhex(stream_hex), np.int8)
        whole = np.frombuffer(bytes.fromhex(whole_hex), np.int8)
        np.testing.assert_array_equal(whole, _numpy(ch, k), err_msg="whole-map kernels: " + msg)
        if what == "exact":
            assert clean == CLEAN, f"{msg}: canaries/input {clean:04b}"
            np.testing.assert_array_equal(stream, whole, err_msg=msg)
        elif what == "overlap":
            assert not np.array_equal(stream, whole), msg
        elif what == "short block":
            assert clean == CLEAN & ~1, f"{msg}: {clean:04b}"
            np.testing.assert_array_equal(stream, whole, err_msg=msg)
        else:
            assert clean == CLEAN & ~4, f"{msg}: {clean:04b}"
            np.testing.assert_array_equal(stream, whole, err_msg=msg)
        seen[what] = seen.get(what, 0) + 1
    return seen


def test_the_chains_cover_the_edges() -> None:
    """The random and fixed chains really hold the shapes and paths listed above."""
    chains, runs = _cases()
    layers = [c for ch in chains for c in ch["layers"]]
    kinds = {c["kind"] for c in layers}
    assert kinds == {CONV, POINTWISE, DEPTHWISE, AVGPOOL, MAXPOOL}
    mid = {c["kind"] for ch in chains for c in ch["layers"][:-1]}
    assert {AVGPOOL, MAXPOOL} <= mid
    kernels = {tuple(c["kernel"]) for c in layers}
    assert {(1, 1), (3, 3), (5, 5), (3, 1), (1, 3), (10, 4)} <= kernels
    assert {(2, 2), (2, 1)} <= {tuple(c["strides"]) for c in layers}
    assert any(c["hw"][0] == 1 for c in layers) and any(c["hw"][0] % 2 for c in layers)
    assert any(c["pad"][0] > 0 for c in layers)  # SAME with padding
    assert any(c["kernel"][0] > c["hw"][0] for c in layers)  # taller than the map
    widths = [w for c in layers for w in c["in_w"] + c["out_w"]]
    assert any(w % 4 for w in widths) and any(w % 4 == 0 for w in widths)
    assert all(len(c["in_w"]) >= 2 for c in layers)
    acc = [ch for ch in chains if ch["acc"]]
    assert len(acc) >= 30 and len(chains) - len(acc) >= 30, len(acc)
    pools = [ch["layers"][-1] for ch in acc]
    assert any(tuple(p["kernel"]) == tuple(p["hw"]) for p in pools)  # global
    assert any(p["kernel"][0] < p["hw"][0] for p in pools)  # partial window
    assert any(p["pad"] != (0, 0) for p in pools)  # padded
    # shared one-row windows and windows of several rows, per the planner
    rows = [r for ch in chains for r in ch["rows"][:-1]]
    assert 1 in rows and max(rows) >= 3

    def far_shared(ch: dict) -> bool:  # one buffer holds windows of stages 2+ apart
        w = _layout(ch, 0).windows[:-1]
        return any(w[i] == w[j] for i in range(len(w)) for j in range(i + 2, len(w)))

    assert sum(far_shared(ch) for ch in chains) >= 10
    assert sum(len(per_k) for per_k in runs) >= 250


@pytest.mark.skipif(
    any(shutil.which(t) is None for t in TOOLS),
    reason="needs gcc-arm-none-eabi and qemu-system-arm (make setup installs them)",
)
def test_streams_equal_whole_map_kernels_in_qemu(tmp_path: Path) -> None:
    """The DSP kernels on the Cortex-M4 (QEMU), streamed and whole-map."""
    chains, runs = _cases()
    elf = _build(tmp_path, STREAM_SRC, "stream_check")
    plugin = bench.build_plugin()

    def run(blob: Path) -> list[str]:
        return bench.run_qemu(elf, plugin, blob, blob.with_suffix(""), marker=None)[1]

    uart = _run_batches(run, tmp_path, chains, runs)
    seen = _check(uart, chains, runs)
    k_bad = len(chains[BAD_CHAIN]["layers"][0]["in_w"])
    assert seen["overlap"] == seen["short block"] == seen["no scratch"] + 1 == k_bad, seen


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_streams_equal_whole_map_kernels_on_the_host(tmp_path: Path) -> None:
    """The portable kernels on the host (sanitizers on), streamed and whole-map."""
    chains, runs = _cases()
    for name, text in kernel_sources().items():
        (tmp_path / name).write_text(text)
    exe = tmp_path / "stream_check"
    cmd = ["g++", "-std=gnu++14", "-funsigned-char", "-O1", "-g", "-Wall", "-Wextra", "-Werror",
           "-fsanitize=address,undefined", "-fno-sanitize-recover=all", f"-I{tmp_path}",
           f"-I{bench.BENCH_FW_DIR}", *map(str, sorted(tmp_path.glob("*.cpp"))), str(STREAM_SRC),
           "-o", str(exe)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]

    def run(blob: Path) -> list[str]:
        proc = subprocess.run([str(exe), str(blob)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, (proc.stderr[-3000:], proc.stdout[-500:])
        return proc.stdout.splitlines()

    seen = _check(_run_batches(run, tmp_path, chains, runs), chains, runs)
    k_bad = len(chains[BAD_CHAIN]["layers"][0]["in_w"])
    assert seen["overlap"] == seen["short block"] == seen["no scratch"] + 1 == k_bad, seen
