"""Per-layer latency model: estimated Cortex-M4 cycles of each runtime layer as a
function of its input and output widths.

The cycles are MEASURED, not derived: every kernel of ``reds_tf/kernels`` runs
under QEMU with the bench's cycle-estimating plugin (``reds_tf/bench.py``,
``reds_tf/qemu_plugin/icount.c``), built with the Arduino Nano 33 BLE's flags
and the DSP kernels (the bench's ``dsp`` build), in a small harness
(``firmware/latency/latency_main.cpp``) that calls one kernel per case with
random weights and inputs and typical requantisation parameters. A layer's
cycles are measured on a grid of (input width, output width) pairs, at most
:data:`GRID_POINTS` per axis taken from the widths the knapsack may choose,
and interpolated piecewise bilinearly in between (a layer's cycles are close to
``a + b*w_in + c*w_out + d*w_in*w_out``, which that reproduces exactly).

A case is measured as submodel 0 of a one-submodel layer: the cost of the
nested layout's strips of larger submodels is not in the model.

Measurements are cached under ``<reds cache>/latency/`` (``$REDS_CACHE_DIR``,
see :func:`reds_tf.resources.cache_dir`), one file per toolchain: the key
hashes the compiler version, the flags, the kernel and harness sources, the
plugin and the QEMU version, so a new compiler or changed kernel measures
afresh.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reds_tf import bench, costs, ir, resources
from reds_tf.errors import RedsError
from reds_tf.fsutil import write_bytes_atomic, write_json_atomic
from reds_tf.knapsack import CostTerm
from reds_tf.quant import numerics

HARNESS_DIR = resources.FIRMWARE_DIR / "latency"
#: Largest number of grid widths per axis of one layer.
GRID_POINTS = 17
#: Runtime kernels the harness calls, with their case kind ids (latency_main.cpp).
KIND_IDS = {
    "fully_connected": 0,
    "conv": 1,
    "pointwise": 2,
    "depthwise": 3,
    "avgpool": 4,
    "maxpool": 5,
}
#: Kernels whose output width equals their input width.
SAME_WIDTH = frozenset({"depthwise", "avgpool", "maxpool"})
_MAGIC = 0x4354414C  # "LATC"
_REGION = 256 * 1024  # bytes of each of the harness's input / output / scratch regions
_IO_BYTES = 1024 * 1024  # the bench's I/O region (firmware/bench/bench.ld)
_MAX_K = 16
_MAX_OUT = 4096


@dataclass(frozen=True)
class LayerShape:
    """The geometry of one runtime layer: everything its cycles depend on
    besides the widths. Maps are ``(H, W)``; a fully connected layer on a
    vector has 1 x 1 maps. ``pad`` is TFLite's (top, left) SAME offset."""

    kind: str
    in_hw: tuple[int, int] = (1, 1)
    out_hw: tuple[int, int] = (1, 1)
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int] = (0, 0)

    def key(self) -> str:
        """A stable text key (cache entries)."""
        parts = (self.in_hw, self.out_hw, self.kernel, self.stride, self.pad)
        return self.kind + ":" + "/".join("x".join(str(v) for v in p) for p in parts)

    def weight_bytes(self, w_in: int, w_out: int) -> int:
        """Weight bytes of a one-submodel layer (the harness's weight pool)."""
        if self.kind in ("avgpool", "maxpool"):
            return 0
        taps = self.kernel[0] * self.kernel[1]
        return taps * w_out if self.kind == "depthwise" else taps * w_in * w_out

    def in_bytes(self, w_in: int) -> int:
        return self.in_hw[0] * self.in_hw[1] * w_in

    def out_bytes(self, w_out: int) -> int:
        return self.out_hw[0] * self.out_hw[1] * w_out

    def scratch_bytes(self, w_in: int, w_out: int) -> int:
        taps = self.kernel[0] * self.kernel[1]
        return 4 * w_out + 2 * taps * w_in + 4


@dataclass(frozen=True)
class Case:
    """One measurement: submodel ``k`` of a layer with per-submodel widths."""

    shape: LayerShape
    in_widths: tuple[int, ...]
    out_widths: tuple[int, ...]
    k: int = 0

    def key(self) -> str:
        ws = ",".join(f"{i}:{o}" for i, o in zip(self.in_widths, self.out_widths, strict=True))
        return f"{self.shape.key()}|{ws}|k{self.k}"

    def check(self) -> None:
        """Raise RedsError when the harness cannot run this case."""
        s = self.shape
        if s.kind not in KIND_IDS:
            raise RedsError(f"no latency harness for layer kind {s.kind!r}")
        if not 1 <= len(self.in_widths) <= _MAX_K or len(self.in_widths) != len(self.out_widths):
            raise RedsError(f"latency case {self.key()}: 1..{_MAX_K} submodels of widths")
        i, o = max(self.in_widths), max(self.out_widths)
        big = (
            s.in_bytes(i) > _REGION
            or s.out_bytes(o) > _REGION
            or s.scratch_bytes(i, o) > _REGION
            or o > _MAX_OUT
            or s.weight_bytes(i, o) + 64 * len(self.in_widths) > _IO_BYTES // 2
        )
        if big:
            raise RedsError(f"latency case {self.key()} is too large for the harness")


def _case_words(case: Case) -> list[int]:
    s = case.shape
    words = [KIND_IDS[s.kind], len(case.in_widths), case.k, *s.in_hw, *s.out_hw]
    words += [*s.kernel, *s.stride, *s.pad, *case.in_widths, *case.out_widths]
    return words


def cases_blob(cases: Sequence[Case], seed: int = 20261201) -> bytes:
    """The harness input: header, the cases, then a pool of random bytes large
    enough for every case's weights and input."""
    pool = 16
    for c in cases:
        c.check()
        i, o = max(c.in_widths), max(c.out_widths)
        pool = max(pool, c.shape.weight_bytes(i, o), c.shape.in_bytes(i))
    pool = (pool + 15) // 16 * 16
    words = [_MAGIC, len(cases), pool]
    for c in cases:
        words += _case_words(c)
    rng = np.random.default_rng(seed)
    data = rng.integers(-128, 128, size=pool, dtype=np.int8).tobytes()
    return np.asarray(words, dtype="<u4").tobytes() + data


def _batches(cases: Sequence[Case]) -> list[list[Case]]:
    """Cases grouped so that every group's blob fits the I/O region."""
    out: list[list[Case]] = []
    cur: list[Case] = []
    for c in cases:
        if cur and len(cases_blob([*cur, c])) > _IO_BYTES:
            out.append(cur)
            cur = []
        cur.append(c)
    if cur:
        out.append(cur)
    return out


# --- the harness build and its cache ------------------------------------------------------


def _harness_sources() -> list[Path]:
    kernels = sorted(resources.KERNELS_DIR.glob("*.cpp"))
    return [*kernels, HARNESS_DIR / "latency_main.cpp", bench.BENCH_FW_DIR / "bench_startup.c"]


def toolchain_key() -> str:
    """Hash of everything a measurement depends on besides the case: compiler
    version and flags, kernel, harness and plugin sources, QEMU version."""
    h = hashlib.sha256()
    gcc = bench._run([bench._tool("arm-none-eabi-gcc"), "--version"], "gcc --version").stdout
    h.update(gcc.encode())
    h.update(bench.qemu_version().encode())
    for lang in ("c", "c++"):
        h.update(" ".join(bench.compile_flags(lang)).encode())
    h.update(" ".join(bench.link_flags()).encode())
    headers = sorted(resources.KERNELS_DIR.glob("*.h")) + sorted(bench.BENCH_FW_DIR.glob("*.h"))
    for p in [*_harness_sources(), *headers, bench.PLUGIN_SOURCE, bench.BENCH_FW_DIR / "bench.ld"]:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    """Folder of the latency measurements (``<reds cache>/latency``)."""
    return resources.cache_dir() / "latency"


def build_harness(key: str) -> Path:
    """The harness ELF for toolchain ``key`` (built once, cached)."""
    work = cache_dir() / f"harness-{key}"
    elf = work / "latency.elf"
    if elf.is_file():
        return elf
    work.mkdir(parents=True, exist_ok=True)
    gcc = bench._tool("arm-none-eabi-gcc")
    includes = [f"-I{resources.KERNELS_DIR}", f"-I{bench.BENCH_FW_DIR}"]
    objs = []
    for src in _harness_sources():
        obj = work / (src.name + ".o")
        flags = bench.compile_flags("c++" if src.suffix == ".cpp" else "c")
        bench._run(
            [gcc, *flags, *includes, "-c", str(src), "-o", str(obj)], f"compiling {src.name}"
        )
        objs.append(str(obj))
    tmp = work / ".latency.elf.tmp"
    ld = ["-T", str(bench.BENCH_FW_DIR / "bench.ld")]
    bench._run([gcc, *bench.link_flags(), *ld, "-o", str(tmp), *objs, "-lc", "-lgcc"], "linking")
    os.replace(tmp, elf)
    return elf


def _run_cases(elf: Path, cases: Sequence[Case], work: Path) -> list[int]:
    plugin = bench.build_plugin()
    out = []
    for n, batch in enumerate(_batches(cases)):
        blob = work / f"cases_{n}.bin"
        write_bytes_atomic(blob, cases_blob(batch))
        got = bench.run_qemu_counts(elf, plugin, blob, work / f"qemu_{n}")
        if not got.uart or got.uart[-1] != "done" or len(got.marks) != 2 + 2 * len(batch):
            raise bench.BenchError(f"the latency harness failed: {'; '.join(got.uart[-3:])}")
        overhead = got.marks[1][1] - got.marks[0][1]
        for j in range(len(batch)):
            a, b = got.marks[2 + 2 * j], got.marks[3 + 2 * j]
            out.append(b[1] - a[1] - overhead)
    return out


def measure(cases: Iterable[Case], log: Callable[[str], None] | None = None) -> dict[Case, int]:
    """Estimated cycles of every case: from the cache, the rest measured under
    QEMU (and added to the cache)."""
    cases = list(dict.fromkeys(cases))
    key = toolchain_key()
    path = cache_dir() / f"cycles-{key}.json"
    try:
        cached = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        cached = {}
    todo = [c for c in cases if c.key() not in cached]
    if todo:
        if log is not None:
            log(f"latency model: measuring {len(todo)} layer cases under QEMU")
        elf = build_harness(key)
        work = cache_dir() / f"harness-{key}" / f"run-{os.getpid()}"
        try:
            cycles = _run_cases(elf, todo, work)
        except subprocess.SubprocessError as e:
            raise bench.BenchError(f"the latency harness failed: {e}") from None
        # Re-read: a concurrent run may have added entries meanwhile.
        try:
            cached = json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, ValueError):
            cached = {}
        cached.update({c.key(): int(v) for c, v in zip(todo, cycles, strict=True)})
        write_json_atomic(path, cached)
    return {c: int(cached[c.key()]) for c in cases}


# --- the model ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RuntimeLayer:
    """One layer the runtime executes, as the latency model sees it.

    ``in_src`` / ``out_src``: the cost-model layer (:class:`reds_tf.costs.CostLayer`)
    whose output width is this layer's input / output width, or a fixed width.
    ``in_full`` / ``out_full`` are the full widths."""

    name: str
    shape: LayerShape
    in_src: str | int
    out_src: str | int
    in_full: int
    out_full: int

    @property
    def same_width(self) -> bool:
        return self.shape.kind in SAME_WIDTH

    @property
    def nested_input(self) -> bool:
        """Whether the input width changes between submodels (strips, not one block)."""
        return isinstance(self.in_src, str) and not self.same_width


def _pad(in_hw, kernel, stride, out_hw, padding: str | None) -> tuple[int, int]:
    if padding != "same":
        return (0, 0)
    geom = zip(in_hw, kernel, stride, out_hw, strict=True)
    return tuple(numerics.same_padding(i, f, s, o) for i, f, s, o in geom)  # type: ignore[return-value]


def runtime_layers(graph: ir.Graph) -> list[RuntimeLayer]:
    """The layers the generated runtime runs for ``graph`` (which must have
    shapes: built from the model), in order, with the kernel each one takes:
    a Dense on a vector is ``fully_connected``, a Dense after Flatten of an
    H x W map a ``conv`` whose kernel covers the map, a 1x1 stride-1 Conv2D
    ``pointwise``, pooling layers ``avgpool`` / ``maxpool``. Layers without a
    kernel (activations, BatchNorm, Flatten, Dropout, reshapes) cost nothing;
    ``add`` joins are not modelled (left out)."""
    if not graph.has_shapes:
        raise RedsError(f"graph {graph.name!r} has no shapes; build it from the model")
    out: list[RuntimeLayer] = []
    for node in graph.nodes:
        prod = graph.producer(node)
        in_full = graph.input_units(node)
        in_src: str | int = prod if prod is not None else in_full
        in_shape, out_shape = node.in_shape, node.out_shape
        if node.kind == ir.DENSE:
            src = None if node.inputs[0] == ir.INPUT else graph.node(node.inputs[0])
            flat = src is not None and src.kind == ir.FLATTEN and len(src.in_shape or ()) == 3
            if prod is None and not flat:
                in_full = math.prod(in_shape)  # a Dense on the (flattened) model input
                in_src = in_full
            if flat and graph.positions(node) > 1:
                hw = (src.in_shape[0], src.in_shape[1])
                shape = LayerShape("conv", hw, (1, 1), hw)
            else:
                shape = LayerShape("fully_connected")
            out.append(RuntimeLayer(node.name, shape, in_src, node.name, in_full, node.units))
        elif node.kind in (ir.CONV, ir.DEPTHWISE):
            in_hw, out_hw = (in_shape[0], in_shape[1]), (out_shape[0], out_shape[1])
            stride = node.strides or (1, 1)
            pad = _pad(in_hw, node.kernel, stride, out_hw, node.padding)
            if node.kind == ir.DEPTHWISE:
                kind, out_src = "depthwise", in_src
            else:
                kind, out_src = ("pointwise" if node.is_pointwise else "conv"), node.name
            shape = LayerShape(kind, in_hw, out_hw, node.kernel, stride, pad)
            out.append(RuntimeLayer(node.name, shape, in_src, out_src, in_full, node.units))
        elif node.kind in (ir.AVGPOOL, ir.MAXPOOL, ir.GLOBAL_AVGPOOL, ir.GLOBAL_MAXPOOL):
            in_hw = (in_shape[0], in_shape[1])
            out_hw = (out_shape[0], out_shape[1]) if len(out_shape) == 3 else (1, 1)
            glob = node.kind in (ir.GLOBAL_AVGPOOL, ir.GLOBAL_MAXPOOL)
            kernel = in_hw if glob else node.kernel
            stride = (1, 1) if glob else (node.strides or node.kernel)
            pad = _pad(in_hw, kernel, stride, out_hw, None if glob else node.padding)
            kind = "avgpool" if node.kind in (ir.AVGPOOL, ir.GLOBAL_AVGPOOL) else "maxpool"
            shape = LayerShape(kind, in_hw, out_hw, kernel, stride, pad)
            out.append(RuntimeLayer(node.name, shape, in_src, in_src, in_full, in_full))
    return out


def grid_levels(levels: Sequence[int], points: int = GRID_POINTS) -> list[int]:
    """At most ``points`` of ``levels`` (sorted), evenly spread, both ends kept."""
    levels = sorted(set(int(v) for v in levels))
    if len(levels) <= points:
        return levels
    idx = np.unique(np.round(np.linspace(0, len(levels) - 1, points)).astype(int))
    return [levels[i] for i in idx]


def _interp_axis(grid: Sequence[int], v: float) -> tuple[int, int, float]:
    """Bracketing grid indices of v and its weight on the upper one (linear
    extrapolation outside the grid)."""
    g = np.asarray(grid, dtype=np.float64)
    if len(g) == 1:
        return 0, 0, 0.0
    j = int(np.clip(np.searchsorted(g, v) - 1, 0, len(g) - 2))
    return j, j + 1, float((v - g[j]) / (g[j + 1] - g[j]))


@dataclass
class Grid:
    """Measured cycles of one layer shape on ``in_grid`` x ``out_grid`` (one axis of
    length 1 when that width is fixed; the same axis twice for same-width kernels),
    interpolated piecewise bilinearly."""

    in_grid: list[int]
    out_grid: list[int]
    cycles: np.ndarray  # (len(in_grid), len(out_grid))

    def __call__(self, w_in: float, w_out: float) -> float:
        a0, a1, ta = _interp_axis(self.in_grid, w_in)
        b0, b1, tb = _interp_axis(self.out_grid, w_out)
        c = self.cycles
        lo = (1 - tb) * c[a0, b0] + tb * c[a0, b1]
        hi = (1 - tb) * c[a1, b0] + tb * c[a1, b1]
        return float((1 - ta) * lo + ta * hi)


def strip_features(
    in_widths: Sequence[int], out_widths: Sequence[int], taps: int = 1
) -> tuple[int, int, int]:
    """(strips, segments, odd segments) the nested layout makes a kernel walk for
    the LAST submodel of the given width history: the non-empty strips R_s, B_s
    (s <= k); over its 4-row groups, the strips that hold a part of each group's
    rows (a group's weights are one segment per such strip); and of those the
    segments of an odd number of 4-column chunks (``taps`` columns per input
    channel), which the kernels' two-chunk loops take apart."""
    strips, ip, op = 0, 0, 0
    first: list[int] = []  # per 4-row group: the submodel whose B strip holds it
    for s, (i, o) in enumerate(zip(in_widths, out_widths, strict=True)):
        strips += int(op > 0 and i > ip) + int(o > op and i > 0)
        first += [s] * (len(range(0, o, 4)) - len(first))
        ip, op = i, o
    n = len(in_widths)
    grew = [int(s > 0 and in_widths[s] > in_widths[s - 1]) for s in range(n)]
    odd_b = [(taps * in_widths[s] >> 2) & 1 for s in range(n)]
    odd_r = [grew[s] & (taps * (in_widths[s] - in_widths[s - 1]) >> 2) & 1 for s in range(n)]
    after = np.cumsum(grew[::-1])[::-1].tolist() + [0]  # R strips from s on
    after_odd = np.cumsum(odd_r[::-1])[::-1].tolist() + [0]
    segments = sum(1 + after[s0 + 1] for s0 in first)
    odd = sum(odd_b[s0] + after_odd[s0 + 1] for s0 in first)
    return strips, segments, odd


@dataclass
class LayerModel:
    """Cycles of one runtime layer at any width history: ``grid0`` (measured as
    the only submodel) for submodel 0 and for layers whose input width is fixed
    or equal to the output's; otherwise ``grid1`` (measured as the second
    submodel after a one-block first one), plus ``per_strip`` cycles per strip,
    ``per_segment`` per segment and ``per_odd`` per odd segment that the
    history makes the kernel walk beyond that reference
    (:func:`strip_features`; fitted on nested histories)."""

    layer: RuntimeLayer
    block: int
    grid0: Grid
    grid1: Grid | None = None
    per_strip: float = 0.0
    per_segment: float = 0.0
    per_odd: float = 0.0

    def reference(self, w_in: int, w_out: int) -> list[tuple[int, int]]:
        """The width history grid1 was measured with."""
        return [(min(self.block, w_in), min(self.block, w_out)), (w_in, w_out)]

    def extra_features(
        self, in_widths: Sequence[int], out_widths: Sequence[int]
    ) -> tuple[int, int, int]:
        """The strip features of a history less those of grid1's reference."""
        taps = self.layer.shape.kernel[0] * self.layer.shape.kernel[1]
        ref = self.reference(in_widths[-1], out_widths[-1])
        f0 = strip_features([r[0] for r in ref], [r[1] for r in ref], taps)
        f1 = strip_features(in_widths, out_widths, taps)
        return f1[0] - f0[0], f1[1] - f0[1], f1[2] - f0[2]

    def cycles(self, in_widths: Sequence[int], out_widths: Sequence[int]) -> float:
        """Predicted cycles of the last submodel of the given width history."""
        i, o = in_widths[-1], out_widths[-1]
        if len(in_widths) == 1 or self.grid1 is None:
            return self.grid0(i, o)
        ds, dg, dodd = self.extra_features(in_widths, out_widths)
        extra = self.per_strip * ds + self.per_segment * dg + self.per_odd * dodd
        return self.grid1(i, o) + extra


def _levels(full: int, block: int) -> list[int]:
    levels = list(range(block, full + 1, block))
    return levels if levels and levels[-1] == full else [*levels, full]


def _fixed(src: str | int, fixed: dict[str, int]) -> int | None:
    """The fixed width of a source (an int, or a layer at a fixed width)."""
    return src if isinstance(src, int) else fixed.get(src)


def _grid_cases(
    layer: RuntimeLayer, block: int, fixed: dict[str, int], points: int, nested: bool
) -> tuple[list[int], list[int], list[Case]]:
    fin, fout = _fixed(layer.in_src, fixed), _fixed(layer.out_src, fixed)
    in_grid = [fin] if fin is not None else grid_levels(_levels(layer.in_full, block), points)
    out_grid = [fout] if fout is not None else grid_levels(_levels(layer.out_full, block), points)
    if layer.same_width:
        out_grid = in_grid
    cases = []
    for i in in_grid:
        for o in [i] if layer.same_width else out_grid:
            if nested:
                ref = [(min(block, i), min(block, o)), (i, o)]
                ins, outs = tuple(r[0] for r in ref), tuple(r[1] for r in ref)
                cases.append(Case(layer.shape, ins, outs, 1))
            else:
                cases.append(Case(layer.shape, (i,), (o,)))
    return in_grid, out_grid, cases


def _strip_cases(layer: RuntimeLayer, block: int) -> list[Case]:
    """Histories with more strips and segments than grid1's reference, at full
    width: what per_strip and per_segment are fitted on."""
    fi, fo = layer.in_full, layer.out_full

    def lv(full: int, frac: float) -> int:
        return max(block, int(full * frac) // block * block)

    half, b = lv(fi, 0.5), block
    hists = [
        [(half, lv(fo, 0.5)), (fi, fo)],
        [(min(half + b, fi), lv(fo, 0.5)), (fi, fo)],  # other chunk parities
        [(lv(fi, 0.25), lv(fo, 0.25)), (half, lv(fo, 0.5)), (fi, fo)],
        [(lv(fi, 0.25) + b, lv(fo, 0.25)), (half, lv(fo, 0.75)), (fi, fo)],
        [(lv(fi, 0.25), lv(fo, 0.5)), (half + b, lv(fo, 0.75)), (lv(fi, 0.75), fo), (fi, fo)],
        [(b, b), (fi, lv(fo, 0.5)), (fi, fo)],
    ]
    out = []
    for h in hists:
        ins, outs = tuple(v[0] for v in h), tuple(v[1] for v in h)
        out.append(Case(layer.shape, ins, outs, len(h) - 1))
    return out


class LatencyModel:
    """Predicted cycles of every runtime layer of a model, and of whole submodels.

    Built by :meth:`for_layers` (measures what the cache lacks). ``fixed``
    names the cost-model layers whose width never changes (the classifier,
    not prunable) with that width."""

    def __init__(self, layers: list[LayerModel]) -> None:
        self.layers = layers

    @classmethod
    def for_layers(
        cls,
        layers: Sequence[RuntimeLayer],
        block: int,
        fixed: dict[str, int] | None = None,
        *,
        points: int = GRID_POINTS,
        log: Callable[[str], None] | None = None,
    ) -> LatencyModel:
        fixed = dict(fixed or {})
        plan = []
        todo: list[Case] = []
        for ly in layers:
            g0 = _grid_cases(ly, block, fixed, points, nested=False)
            g1 = _grid_cases(ly, block, fixed, points, nested=True) if ly.nested_input else None
            strip = _strip_cases(ly, block) if ly.nested_input else []
            plan.append((ly, g0, g1, strip))
            todo += g0[2] + (g1[2] if g1 else []) + strip
        got = measure(todo, log=log)

        def grid(g: tuple[list[int], list[int], list[Case]], same: bool) -> Grid:
            in_grid, out_grid, cases = g
            c = np.zeros((len(in_grid), len(out_grid)))
            for case in cases:
                i, o = case.in_widths[-1], case.out_widths[-1]
                if same:
                    c[in_grid.index(i), :] = got[case]  # constant along the (tied) other axis
                else:
                    c[in_grid.index(i), out_grid.index(o)] = got[case]
            return Grid(in_grid, out_grid, c)

        models = []
        for ly, g0, g1, strip in plan:
            m = LayerModel(ly, block, grid(g0, ly.same_width))
            if g1 is not None:
                m.grid1 = grid(g1, False)
                rows, rhs = [], []
                for case in strip:
                    i, o = case.in_widths[-1], case.out_widths[-1]
                    rows.append(m.extra_features(case.in_widths, case.out_widths))
                    rhs.append(got[case] - m.grid1(i, o))
                a, y = np.asarray(rows, float), np.asarray(rhs, float)
                coef = np.linalg.lstsq(a, y, rcond=None)[0]
                m.per_strip, m.per_segment, m.per_odd = (float(v) for v in coef)
            models.append(m)
        return cls(models)

    def layer_cycles(self, name: str, in_widths: Sequence[int], out_widths: Sequence[int]) -> float:
        """Predicted cycles of runtime layer ``name`` in the last submodel of the history."""
        for m in self.layers:
            if m.layer.name == name:
                return m.cycles(in_widths, out_widths)
        raise KeyError(name)

    def predict(self, history: Sequence[Mapping[str, int]]) -> list[float]:
        """Predicted cycles of every submodel of a nested model, given every
        submodel's widths (smallest first; each maps cost-model layer names to
        widths, every layer named as :func:`reds_tf.costs.resolve_widths` gives)."""
        out = []
        for k in range(len(history)):
            total = 0.0
            for m in self.layers:
                ins = [_width(m.layer.in_src, h) for h in history[: k + 1]]
                outs = [_width(m.layer.out_src, h) for h in history[: k + 1]]
                total += m.cycles(ins, outs)
            out.append(total)
        return out


def _width(src: str | int, widths: Mapping[str, int]) -> int:
    return src if isinstance(src, int) else int(widths[src])


class LatencyCost:
    """A :class:`LatencyModel` as the knapsack's cost
    (:class:`reds_tf.knapsack.SubmodelCost`): one term per runtime layer, the
    layer's predicted cycles after the width history of the submodels before."""

    name = "cycles"

    def __init__(self, model: LatencyModel) -> None:
        self.model = model

    def terms(self, history: Sequence[Mapping[str, int]]) -> list[CostTerm]:
        out = []
        for m in self.model.layers:
            ly = m.layer
            hin = [_width(ly.in_src, h) for h in history]
            hout = [_width(ly.out_src, h) for h in history]
            if ly.same_width:
                out.append(CostTerm((ly.in_src,), lambda w, m=m, h=hin: m.cycles([*h, w], [*h, w])))
            else:
                out.append(
                    CostTerm(
                        (ly.in_src, ly.out_src),
                        lambda i, o, m=m, hi=hin, ho=hout: m.cycles([*hi, i], [*ho, o]),
                    )
                )
        return out


def model_for_graph(
    graph: ir.Graph,
    block: int,
    *,
    points: int | None = None,
    log: Callable[[str], None] | None = None,
) -> LatencyModel:
    """The latency model of a graph built from a model (measures what the cache
    lacks); ``points`` grid widths per axis (default :data:`GRID_POINTS`)."""
    layers = costs.cost_layers(graph)
    fixed = {ly.name: ly.units for ly in layers if not ly.prunable and not ly.follows}
    points = GRID_POINTS if points is None else points
    return LatencyModel.for_layers(runtime_layers(graph), block, fixed, points=points, log=log)
