"""The activation-memory planner: where every tensor, ring, window and scratch
buffer of one submodel lives in the runtime's arena, and how many bytes that
takes.

ONE planner serves the export (the generated runtime's placement tables, see
:mod:`reds_tf.codegen.plan`), the check before training and the knapsack's
memory bounds (:func:`steps_from_graph`, :func:`linear_terms`), so a bound
checked at selection time is the bound the exported arena meets.

In-place layers. A layer runs row by row through the row runner
(``reds_tf/kernels/rows.cpp``): bands of ``rows`` output rows are computed by
the layer's own kernel into a small RING of ``delay + rows`` output rows, and
each row is copied into the output tensor once ``delay`` more rows were
computed. The output tensor may then overlap the input tensor: it starts
``shift`` bytes after the input's start, where ``shift`` is at most
:func:`max_shift`, the largest offset at which no copied row ever covers input
bytes a later row still reads. Numbers are unchanged (the kernels compute the
same rows), only where they are written. A growing layer (output larger than
input) ends where its input ends, a shrinking one starts where its input
starts: the pair takes max(input, output) bytes instead of input + output,
plus the ring.

Fused steps (:data:`FUSED`). A pointwise layer whose output only a depthwise
layer reads can run as one step (:func:`fuse`): the pointwise rows each
depthwise row needs are computed into a window of ``kernel_h`` rows, so the
pointwise map never exists whole. :func:`plan_submodels` chooses the pairs.

Layers with more than one input (ADD), and every layer of a network that has
one, use the lifetime plan instead (:func:`plan_dag`): a tensor lives from the
layer that writes it to the last layer that reads it, buffers are placed first
fit, largest first, never in place.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

EXTERNAL = -1  # the caller's model input, or the caller's output buffer
# Kinds the row wrapper runs in place; other kinds (add) never overlap.
ROW_KINDS = ("fully_connected", "conv", "pointwise", "depthwise", "avgpool", "maxpool", "pw_dw")
FUSED = "pw_dw"  # a pointwise layer and the depthwise layer reading it, run as one step
STREAM = "stream"  # consecutive layers run row by row as one step (reds_run_stream)
STREAM_KINDS = ("conv", "pointwise", "depthwise", "avgpool", "maxpool")
STREAM_MAX_STAGES = 32  # REDS_STREAM_MAX_STAGES: layers one stream may hold
NO_RING = -1  # delay of a layer called once on the whole map (no ring)


def align4(n: int) -> int:
    return (n + 3) & ~3


@dataclass(frozen=True)
class Step:
    """One compute layer of one submodel, in execution order.

    ``inputs``/``output``: tensor ids (:data:`EXTERNAL` for the caller's input;
    the last step's output is the caller's output). ``in_hw``/``out_hw``: map
    sizes (1 x 1 for vectors); ``kernel_h``, ``stride_h``, ``pad_top``: the
    vertical geometry (rows are what the wrapper streams). ``in_width`` /
    ``out_width``: this submodel's channels. ``scratch``: kernel scratch bytes.
    """

    name: str
    kind: str
    inputs: tuple[int, ...]
    output: int
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    kernel_h: int
    stride_h: int
    pad_top: int
    in_width: int
    out_width: int
    scratch: int = 0
    # A STREAM step: its layers' steps, each layer's output window (offset in
    # the window block, rows held) and the block's bytes (:func:`stream_layout`).
    parts: tuple[Step, ...] = ()
    windows: tuple[tuple[int, int], ...] = ()
    window_bytes: int = 0

    @property
    def in_bytes(self) -> int:
        return self.in_hw[0] * self.in_hw[1] * self.in_width

    @property
    def out_bytes(self) -> int:
        return self.out_hw[0] * self.out_hw[1] * self.out_width

    @property
    def in_row(self) -> int:
        return self.in_hw[1] * self.in_width

    @property
    def out_row(self) -> int:
        return self.out_hw[1] * self.out_width

    @property
    def window(self) -> int:
        """A fused step's sliding window (kernel_h rows of the pointwise output),
        a stream's window block."""
        if self.kind == STREAM:
            return self.window_bytes
        return self.kernel_h * self.in_hw[1] * self.out_width if self.kind == FUSED else 0


@dataclass
class Slot:
    """Where one step reads and writes (byte offsets in the arena; :data:`EXTERNAL`
    for the caller's buffers). ``delay``: rows between computing an output row
    and copying it out of the ring (:data:`NO_RING`: one call, output written
    directly). ``src2``: an ADD's second input."""

    src: int
    dst: int
    ring: int = 0
    delay: int = NO_RING
    scratch: int = 0
    src2: int = EXTERNAL
    rows: int = 1  # output rows per kernel call when running through the ring
    window: int = 0  # a fused step's window of pointwise rows


@dataclass
class Placement:
    """One submodel's arena: a :class:`Slot` per step and the bytes it spans."""

    slots: list[Slot]
    arena_bytes: int
    lower_bound: int = 0  # max over steps of the bytes that step needs at once


def _need_start(s: Step, oy: int) -> int:
    """First input byte read by output rows >= oy."""
    return max(0, oy * s.stride_h - s.pad_top) * s.in_row


def max_shift(s: Step, delay: int) -> float:
    """The largest output-minus-input offset at which row-by-row execution with
    ``delay`` is exact: output row oy, copied out after row oy + delay was
    computed, must end at or before the first input byte any later row reads."""
    h = s.out_hw[0]
    best = float("inf")
    for oy in range(max(0, h - delay - 1)):
        best = min(best, _need_start(s, oy + delay + 1) - (oy + 1) * s.out_row)
    return best


@functools.lru_cache(maxsize=4096)  # the placement search asks again for every option
def in_place(s: Step) -> tuple[int, int] | None:
    """(delay, max shift) of the cheapest in-place execution of ``s``, or None
    when overlapping saves nothing over separate input and output buffers."""
    if s.kind not in ROW_KINDS:
        return None
    want = min(0, s.in_bytes - s.out_bytes)  # end-aligned if growing, else start-aligned
    for delay in range(s.out_hw[0]):
        shift = max_shift(s, delay)
        if shift >= want:
            span = max(s.in_bytes, s.out_bytes)
            if span + align4((delay + 1) * s.out_row) < s.in_bytes + s.out_bytes:
                return delay, int(min(shift, 1 << 30))
            return None
    return None


def _min_band(s: Step, min_rows: int) -> int:
    """Output rows per call of a step run through its ring: at least ``min_rows``
    (a fused step: always one)."""
    return 1 if s.kind == FUSED else max(1, min(min_rows, s.out_hw[0]))


def _chain_need(s: Step, first: bool, last: bool, min_rows: int = 1) -> int:
    """Bytes step s needs at once: its arena tensors, ring, window and scratch."""
    scratch = align4(s.scratch) + align4(s.window)
    if first and last:
        return scratch
    if first:
        return align4(s.out_bytes) + scratch
    if last:
        return align4(s.in_bytes) + scratch
    ip = in_place(s)
    if ip is None:
        return align4(s.in_bytes) + align4(s.out_bytes) + scratch
    delay, _ = ip
    ring = align4((delay + _min_band(s, min_rows)) * s.out_row)
    return (
        min(align4(max(s.in_bytes, s.out_bytes)) + ring, align4(s.in_bytes) + align4(s.out_bytes))
        + scratch
    )


def _options(
    s: Step,
    first: bool,
    last: bool,
    cur: tuple[int, int] | None,
    size: int,
    rows: int = 1,
    direct: bool = False,
):
    """Placements of step s in ``size`` bytes given its input at ``cur``: the
    transient block (ring + scratch) at the top or the bottom of the arena, the
    output in place as high as the rules allow, or in a free gap beside the
    input (directly written, no ring)."""
    scratch = align4(s.scratch)
    window = align4(s.window)
    src = EXTERNAL if first else cur[0]
    ip = None if first or last or direct else in_place(s)
    out = align4(s.out_bytes)
    ring = align4((ip[0] + rows) * s.out_row) if ip else 0
    # Direct calls first: a layer runs row by row (more kernel calls) only
    # where the arena's size needs it.
    options = [(d, t) for d in [NO_RING] + ([ip[0]] if ip else []) for t in (True, False)]
    for delay, top in options:
        r = ring if delay != NO_RING else 0
        trans = r + window + scratch
        t0 = size - trans if top else 0  # transient block [t0, t0 + trans)
        lo, hi = (0, size - trans) if top else (trans, size)  # room for tensors
        if hi < lo or (cur is not None and (cur[0] < lo or cur[1] > hi)):
            continue
        if last:
            yield Slot(src, EXTERNAL, scratch=t0 + window, window=t0)
            continue
        if delay != NO_RING:
            cands = [min(cur[0] + ip[1], hi - out) & ~3]
        elif cur is None:
            cands = [hi - out, lo]
        else:
            cands = [o for o in (hi - out, lo) if o + out <= cur[0] or o >= cur[1]]
        for o in cands:
            if lo <= o and o + out <= hi:
                ring_at = t0 if delay != NO_RING else 0
                yield Slot(src, o, ring=ring_at, delay=delay, scratch=t0 + r + window,
                           rows=rows, window=t0 + r)  # fmt: skip


def _try_chain(
    steps: Sequence[Step], size: int, bands: Sequence[int] | None = None, direct: bool = False
) -> list[Slot] | None:
    """A placement of the chain in ``size`` bytes (depth-first over each step's
    :func:`_options`, remembering input positions that failed), or None.
    ``bands``: output rows per kernel call of each step run through its ring;
    ``direct``: every layer one kernel call (no in-place rows)."""
    n = len(steps)
    failed: set[tuple[int, int]] = set()

    def place(i: int, cur: tuple[int, int] | None) -> list[Slot] | None:
        if i == n:
            return []
        key = (i, -1 if cur is None else cur[0])
        if key in failed:
            return None
        s = steps[i]
        band = bands[i] if bands else 1
        for sl in _options(s, i == 0, i == n - 1, cur, size, band, direct):
            nxt = None if sl.dst == EXTERNAL else (sl.dst, sl.dst + align4(s.out_bytes))
            rest = place(i + 1, nxt)
            if rest is not None:
                return [sl, *rest]
        failed.add(key)
        return None

    return place(0, None)


def plan_chain(
    steps: Sequence[Step],
    arena_bytes: int | None = None,
    fastest: bool = False,
    min_rows: int = 1,
) -> Placement:
    """The chain's placement: the smallest arena the placement search fits it
    into (binary search from the lower bound up to separate buffers for every
    layer), or ``arena_bytes`` when given and at least that. Within that size,
    layers are called directly wherever they fit, and the others compute as
    many rows per kernel call (bands of 2, 4, 8 ... rows) as still fit: fewer,
    larger calls cost fewer instructions. ``fastest``: every layer one kernel
    call, in the smallest arena that allows it. ``min_rows``: every layer run
    through its ring computes at least this many rows per call."""
    n = len(steps)
    start = [_min_band(s, min_rows) for s in steps]
    lower = max(_chain_need(s, i == 0, i == n - 1, min_rows) for i, s in enumerate(steps))
    upper = max(align4(s.in_bytes) + align4(s.out_bytes) for s in steps) + max(
        align4(s.scratch) + align4(s.window) + align4(s.out_hw[0] * s.out_row) for s in steps
    )
    upper = max(upper, lower)
    best = _try_chain(steps, upper, start, direct=fastest)
    while best is None:  # the search places blocks at the ends only: give it room
        upper *= 2
        best = _try_chain(steps, upper, start, direct=fastest)
    lo, hi = align4(lower), upper
    while lo < hi:
        mid = max(lo, ((lo + hi) // 2) & ~3)
        got = _try_chain(steps, mid, start, direct=fastest)
        if got is not None:
            best, hi = got, mid
        else:
            lo = mid + 4
    size = hi
    if arena_bytes is not None and arena_bytes > size:
        size = arena_bytes & ~3
        best = _try_chain(steps, size, start) or best
    bands = start
    for i, sl in enumerate(best):
        if sl.delay < 0 or steps[i].kind == FUSED:  # a fused step runs one row per call
            continue
        while bands[i] * 2 < steps[i].out_hw[0]:
            trial = [*bands[:i], bands[i] * 2, *bands[i + 1 :]]
            got = _try_chain(steps, size, trial)
            if got is None:
                break
            bands, best = trial, got
    return Placement(best, size, lower_bound=lower)


def plan_dag(steps: Sequence[Step]) -> Placement:
    """Lifetime plan of a network with joins: first fit, largest first; scratch
    after the activations. Reshapes must already be resolved to their source."""
    last_i = len(steps) - 1
    first: dict[int, int] = {}
    until: dict[int, int] = {}
    size: dict[int, int] = {}
    for i, s in enumerate(steps):
        for t in s.inputs:
            if t != EXTERNAL:
                until[t] = i
        if i != last_i:
            first[s.output] = until[s.output] = i
            size[s.output] = align4(s.out_bytes)
    placed: list[tuple[int, int, int, int]] = []
    offset: dict[int, int] = {}
    for t in sorted(size, key=lambda t: (-size[t], first[t])):
        lo, hi = first[t], until[t]
        off = 0
        for o, e, _, _ in sorted(p for p in placed if p[2] <= hi and lo <= p[3]):
            if off + size[t] <= o:
                break
            off = max(off, e)
        placed.append((off, off + size[t], lo, hi))
        offset[t] = off
    act = max([p[1] for p in placed] + [0])
    slots = []
    for i, s in enumerate(steps):
        src = offset.get(s.inputs[0], EXTERNAL)
        src2 = offset.get(s.inputs[1], EXTERNAL) if len(s.inputs) > 1 else EXTERNAL
        dst = EXTERNAL if i == last_i else offset[s.output]
        slots.append(Slot(src, dst, scratch=act, src2=src2))
    scratch = max([align4(s.scratch) for s in steps] + [0])
    return Placement(slots, act + scratch, lower_bound=act + scratch)


def plan(
    steps: Sequence[Step],
    arena_bytes: int | None = None,
    fastest: bool = False,
    min_rows: int = 1,
) -> Placement:
    """The placement of one submodel: :func:`plan_chain` for a chain (in
    ``arena_bytes`` if given and enough, faster with more room; ``fastest``:
    no in-place rows; ``min_rows``: rows per call at least), :func:`plan_dag`
    when some layer has two inputs."""
    if not steps:
        return Placement([], 0)
    if any(len(s.inputs) > 1 for s in steps):
        return plan_dag(steps)
    return plan_chain(steps, arena_bytes, fastest, min_rows)


def fusable(steps: Sequence[Step]) -> list[str]:
    """Names of the pointwise steps whose output only the next step, a
    depthwise layer, reads: candidates for a fused step."""
    readers: dict[int, int] = {}
    for s in steps:
        for t in s.inputs:
            readers[t] = readers.get(t, 0) + 1
    return [
        a.name
        for a, b in zip(steps, steps[1:], strict=False)
        if a.kind == "pointwise" and b.kind == "depthwise" and b.inputs == (a.output,)
        and readers.get(a.output) == 1
    ]  # fmt: skip


def fuse(steps: Sequence[Step], pointwise: set[str] | frozenset[str]) -> list[Step]:
    """``steps`` with each named pointwise step and the depthwise step after it
    merged into one :data:`FUSED` step (the depthwise geometry, the pointwise
    input and scratch, named after the pointwise layer). A pair already inside
    a stream stays there."""
    out: list[Step] = []
    skip = False
    for i, s in enumerate(steps):
        if skip:
            skip = False
            continue
        if (s.name in pointwise and s.kind == "pointwise" and i + 1 < len(steps)
                and steps[i + 1].kind == "depthwise"):  # fmt: skip
            d = steps[i + 1]
            out.append(Step(s.name, FUSED, s.inputs, d.output, s.in_hw, d.out_hw, d.kernel_h,
                            d.stride_h, d.pad_top, s.in_width, d.out_width, s.scratch))  # fmt: skip
            skip = True
        else:
            out.append(s)
    return out


def _score(pls: Sequence[Placement]) -> tuple[int, int]:
    """What the submodel-wide choices (fusions, streams) minimise: the largest
    arena, then the sum."""
    return max(p.arena_bytes for p in pls), sum(p.arena_bytes for p in pls)


def _over_caps(pls: Sequence[Placement], caps: Sequence[int | None] | None) -> bool:
    """Whether some submodel's arena exceeds its cap (memory budget)."""
    return bool(caps) and any(
        c is not None and p.arena_bytes > c for p, c in zip(pls, caps, strict=True)
    )


def accumulates(s: Step) -> bool:
    """An average pool with one output pixel: a stream adds its input up row by
    row into int32 sums instead of holding the rows its window covers."""
    return s.kind == "avgpool" and s.out_hw == (1, 1)


def stream_layout(parts: Sequence[Step]) -> tuple[tuple[tuple[int, int], ...], int]:
    """Where a stream keeps each layer's output rows: per layer (offset in the
    stream's window block, rows held), and the block's bytes.

    A layer's window holds the rows that one output row of the next layer reads
    (its kernel height). A one-row window whose reader reads every row once (a
    1-row kernel, or the accumulating pool) is written just before it is read,
    so those windows share two buffers, neighbours alternating (a kernel never
    writes the buffer it reads). The last layer writes the stream's output
    tensor, or (an accumulating pool) int32 sums placed at its entry."""
    n = len(parts)
    caps: list[int] = []
    parity: list[int | None] = []
    shared = [0, 0]
    for i in range(n - 1):
        nxt = parts[i + 1]
        acc = i + 1 == n - 1 and accumulates(nxt)  # only the last layer accumulates
        cap = 1 if acc else min(nxt.kernel_h, parts[i].out_hw[0])
        caps.append(cap)
        p = None
        if cap == 1 and (acc or nxt.kernel_h == 1):
            p = 1 - parity[i - 1] if i > 0 and parity[i - 1] is not None else 0
            shared[p] = max(shared[p], align4(parts[i].out_row))
        parity.append(p)
    base = (0, shared[0])
    offset = shared[0] + shared[1]
    windows: list[tuple[int, int]] = []
    for i in range(n - 1):
        p = parity[i]
        if p is not None:
            windows.append((base[p], 1))
        else:
            windows.append((offset, caps[i]))
            offset += align4(caps[i] * parts[i].out_row)
    if accumulates(parts[-1]):
        windows.append((offset, 0))
        offset += 4 * parts[-1].out_width
    else:
        windows.append((0, 0))
    return tuple(windows), offset


def streamable(steps: Sequence[Step]) -> list[list[str]]:
    """Maximal runs (names, two or more) of steps a stream can run: row-wise
    layers each read only by the next one."""
    readers: dict[int, int] = {}
    for s in steps:
        for t in s.inputs:
            readers[t] = readers.get(t, 0) + 1
    runs: list[list[str]] = []
    run: list[str] = []
    for i, s in enumerate(steps):
        ok = s.kind in STREAM_KINDS and len(s.inputs) == 1
        linked = bool(run) and s.inputs == (steps[i - 1].output,) and readers[s.inputs[0]] == 1
        if ok and linked:
            run.append(s.name)
            continue
        if len(run) > 1:
            runs.append(run)
        run = [s.name] if ok else []
    if len(run) > 1:
        runs.append(run)
    return runs


def stream(steps: Sequence[Step], segments: Sequence[tuple[str, str]]) -> list[Step]:
    """``steps`` with each segment (first, last layer name) merged into one
    :data:`STREAM` step named after its first layer: the first layer reads the
    segment's input, the last writes its output, and no map in between exists
    whole (:func:`stream_layout`)."""
    bounds = dict(segments)
    out: list[Step] = []
    i = 0
    while i < len(steps):
        s = steps[i]
        if s.name not in bounds:
            out.append(s)
            i += 1
            continue
        j = next(j for j in range(i + 1, len(steps)) if steps[j].name == bounds[s.name])
        parts = tuple(steps[i : j + 1])
        last = parts[-1]
        windows, size = stream_layout(parts)
        out.append(Step(s.name, STREAM, s.inputs, last.output, s.in_hw, last.out_hw,
                        last.kernel_h, last.stride_h, last.pad_top, s.in_width, last.out_width,
                        max(p.scratch for p in parts), parts, windows, size))  # fmt: skip
        i = j + 1
    return out


def arrange(
    steps: Sequence[Step],
    fused: set[str] | frozenset[str] = frozenset(),
    streams: Sequence[tuple[str, str]] = (),
) -> list[Step]:
    """One submodel's steps as the runtime runs them: streams, then fused
    pointwise + depthwise pairs outside them."""
    return fuse(stream(steps, streams), fused)


def plan_streams(
    steps_by_k: Sequence[Sequence[Step]],
    caps: Sequence[int | None] | None = None,
    fused: frozenset[str] = frozenset(),
    placements: Sequence[Placement] | None = None,
    rounds: int = 3,
) -> tuple[tuple[tuple[str, str], ...], frozenset[str], list[Placement]]:
    """Stream segments that lower the largest arena (then the sum), on top of
    the fusions ``fused`` (placed as ``placements``): greedily, the best
    segment that starts or ends a streamable run, up to ``rounds`` segments,
    within every submodel's cap. A fused pair inside a segment is dropped (the
    stream runs it row by row anyway). Streams run every layer one row per call:
    the least RAM, at some speed."""
    if placements is None:
        placements = [plan(arrange(s, fused)) for s in steps_by_k]
    chosen: tuple[tuple[str, str], ...] = ()
    best = (fused, list(placements))
    if not steps_by_k:
        return chosen, fused, best[1]
    names = [s.name for s in steps_by_k[-1]]
    pos = {n: i for i, n in enumerate(names)}

    for _ in range(rounds):
        taken = {n for a, b in chosen for n in names[pos[a] : pos[b] + 1]}
        stretches: list[list[str]] = []
        for run in streamable(steps_by_k[-1]):
            stretches.append([])
            for n in run:  # the run cut at segments already chosen
                if n in taken:
                    stretches.append([])
                else:
                    stretches[-1].append(n)
        cands = set()
        for f in stretches:
            for j in range(1, min(len(f), STREAM_MAX_STAGES)):
                cands.add((f[0], f[j]))
                cands.add((f[-1 - j], f[-1]))
        improved = None
        for seg in sorted(cands, key=lambda c: (pos[c[0]], pos[c[1]])):
            segs = (*chosen, seg)
            inside = {n for a, b in segs for n in names[max(pos[a] - 1, 0) : pos[b] + 1]}
            keep = frozenset(f for f in best[0] if f not in inside)
            pls = [plan(arrange(s, keep, segs)) for s in steps_by_k]
            if _over_caps(pls, caps):
                continue
            if _score(pls) < _score(improved[2] if improved else best[1]):
                improved = (segs, keep, pls)
        if improved is None:
            break
        chosen, best = improved[0], (improved[1], improved[2])
    return chosen, best[0], best[1]


def plan_submodels(
    steps_by_k: Sequence[Sequence[Step]],
    arena_bytes: int | None = None,
    fastest: bool = False,
    caps: Sequence[int | None] | None = None,
    min_rows: int = 1,
) -> tuple[frozenset[str], list[Placement]]:
    """Every submodel's placement, and the pointwise layers fused with their
    depthwise reader (the same for every submodel: the runtime's code is one).
    A pair is fused when that lowers the largest arena (then the sum) and keeps
    every submodel within its cap; fastest and budgeted arenas fuse nothing
    (fused layers always run row by row)."""
    placements = [plan(s, arena_bytes, fastest, min_rows) for s in steps_by_k]
    chosen: frozenset[str] = frozenset()
    if fastest or arena_bytes is not None or not steps_by_k:
        return chosen, placements

    for name in fusable(steps_by_k[-1]):
        trial = chosen | {name}
        pls = [plan(fuse(s, trial), min_rows=min_rows) for s in steps_by_k]
        if _over_caps(pls, caps):
            continue
        if _score(pls) < _score(placements):
            chosen, placements = trial, pls
    return chosen, placements


def check(steps: Sequence[Step], placement: Placement) -> list[str]:
    """Every rule the runtime relies on, checked on one submodel's placement;
    returns the violations (none for a correct plan). Each step reads its inputs
    where their producers wrote them; what a step writes (output, ring,
    scratch) stays inside the arena and away from every tensor still to be
    read; an output overlaps its own input only when the step runs through its
    ring and the offset is within :func:`max_shift`."""
    problems: list[str] = []
    where: dict[int, tuple[int, int]] = {}
    last_read: dict[int, int] = {}
    for i, s in enumerate(steps):
        for t in s.inputs:
            last_read[t] = i
    size = placement.arena_bytes

    def overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
        return a[0] < b[1] and b[0] < a[1] and a[0] < a[1] and b[0] < b[1]

    for i, (s, sl) in enumerate(zip(steps, placement.slots, strict=True)):
        srcs = [sl.src, sl.src2][: len(s.inputs)]
        for t, off in zip(s.inputs, srcs, strict=True):
            want = EXTERNAL if t == EXTERNAL else where.get(t, (None,))[0]
            if off != want:
                problems.append(f"{s.name}: reads tensor {t} at {off}, written at {want}")
        writes: list[tuple[str, tuple[int, int]]] = []
        if sl.dst != EXTERNAL:
            writes.append(("output", (sl.dst, sl.dst + s.out_bytes)))
        if sl.delay >= 0:
            writes.append(("ring", (sl.ring, sl.ring + (sl.delay + sl.rows) * s.out_row)))
        if s.scratch:
            writes.append(("scratch", (sl.scratch, sl.scratch + s.scratch)))
        if s.window:
            writes.append(("window", (sl.window, sl.window + s.window)))
        for what, (a, b) in writes:
            if a < 0 or b > size:
                problems.append(f"{s.name}: {what} [{a}, {b}) outside the {size}-byte arena")
        for j, (w1, r1) in enumerate(writes):
            for w2, r2 in writes[j + 1 :]:
                if overlap(r1, r2):
                    problems.append(f"{s.name}: {w1} {r1} overlaps {w2} {r2}")
        for t, region in where.items():
            if last_read.get(t, -1) < i:
                continue  # dead
            mine = t in s.inputs and last_read[t] == i
            for what, r in writes:
                if not overlap(r, region):
                    continue
                if what == "output" and mine and sl.delay >= 0 and len(s.inputs) == 1:
                    if r[0] - region[0] <= max_shift(s, sl.delay):
                        continue
                problems.append(f"{s.name}: {what} {r} overwrites tensor {t} at {region}")
        if sl.dst != EXTERNAL:
            where[s.output] = (sl.dst, sl.dst + s.out_bytes)
    return problems


ADD_SCRATCH_BYTES = 2048  # REDS_ADD_SCRATCH_BYTES: the DSP ADD kernel's two tables


def _same_pad_top(n_in: int, n_out: int, kernel: int, stride: int) -> int:
    return max((n_out - 1) * stride + kernel - n_in, 0) // 2


def steps_from_graph(graph, widths: dict[str, int]) -> list[Step]:
    """The steps of the submodel with the given chosen widths, from the network
    graph (:class:`reds_tf.ir.Graph` with shapes, e.g. :func:`reds_tf.ir.from_keras`)
    alone: what the export will plan, known before any training. BatchNorm,
    activations, dropout, softmax, flatten and reshape are no layers of their own
    in the runtime (folded, fused or the same bytes); a Dense after a Flatten of
    an H x W map is a convolution covering the map, as in the export."""
    from reds_tf import ir  # local: the planner itself needs no graph

    if not graph.has_shapes:
        raise ValueError("the graph has no shapes; build it with reds_tf.ir.from_keras")
    node_w = graph.node_widths(widths)
    tensor: dict[str, int] = {ir.INPUT: EXTERNAL}
    map_of: dict[str, tuple[int, int]] = {}  # flattened tensor -> its map's (H, W)
    steps: list[Step] = []
    for i, n in enumerate(graph.nodes):
        src = n.inputs[0]
        w_in = graph.input_width(n, node_w)
        in_shape, out_shape = tuple(n.in_shape), tuple(n.out_shape)
        hw_in = (in_shape[0], in_shape[1]) if len(in_shape) == 3 else (1, 1)
        hw_out = (out_shape[0], out_shape[1]) if len(out_shape) == 3 else (1, 1)
        common = dict(name=n.name, inputs=(tensor[src],), output=i, in_width=w_in)
        if n.kind == ir.DENSE:
            hw = map_of.get(src, (1, 1))
            steps.append(Step(kind="conv" if hw != (1, 1) else "fully_connected",
                              in_hw=hw, out_hw=(1, 1), kernel_h=hw[0], stride_h=1, pad_top=0,
                              out_width=node_w[n.name],
                              scratch=4 * node_w[n.name] + 2 * hw[0] * hw[1] * w_in + 4,
                              **common))  # fmt: skip
        elif n.kind in (ir.CONV, ir.DEPTHWISE, ir.AVGPOOL, ir.MAXPOOL, ir.GLOBAL_AVGPOOL):
            if n.kind == ir.GLOBAL_AVGPOOL:
                kernel, stride, pad = hw_in, (1, 1), 0
            else:
                kernel, stride = tuple(n.kernel), tuple(n.strides or (1, 1))
                same = n.padding == "same"
                pad = _same_pad_top(hw_in[0], hw_out[0], kernel[0], stride[0]) if same else 0
            kind = {ir.CONV: "conv", ir.DEPTHWISE: "depthwise", ir.MAXPOOL: "maxpool"}.get(
                n.kind, "avgpool"
            )
            if kind == "conv" and kernel == (1, 1) and stride == (1, 1):
                kind = "pointwise"
            out_w = node_w[n.name]
            scratch = 4 * out_w + 2 * kernel[0] * kernel[1] * w_in + 4 if n.kind == ir.CONV else 0
            steps.append(Step(kind=kind, in_hw=hw_in, out_hw=hw_out, kernel_h=kernel[0],
                              stride_h=stride[0], pad_top=pad, out_width=out_w, scratch=scratch,
                              **common))  # fmt: skip
        elif n.kind == ir.ADD:
            ins = tuple(tensor[s] for s in n.inputs)
            steps.append(Step(name=n.name, kind="add", inputs=ins, output=i, in_hw=hw_in,
                              out_hw=hw_out, kernel_h=1, stride_h=1, pad_top=0, in_width=w_in,
                              out_width=node_w[n.name], scratch=ADD_SCRATCH_BYTES))  # fmt: skip
        else:  # the same bytes as its input
            tensor[n.name] = tensor[src]
            if n.kind == ir.FLATTEN and len(in_shape) == 3:
                map_of[n.name] = hw_in
            elif src in map_of:
                map_of[n.name] = map_of[src]
            continue
        tensor[n.name] = i
    return steps


@dataclass(frozen=True)
class Term:
    """A linear upper bound on bytes the arena needs at one point of the run:
    ``const + sum(coef[n] * width(n))`` over chosen (prunable) graph nodes."""

    step: str
    const: int
    coef: dict[str, int]

    def value(self, widths: dict[str, int]) -> int:
        return self.const + sum(c * int(widths[n]) for n, c in self.coef.items())


def width_source(graph, name: str) -> str | int:
    """What decides node ``name``'s width: a prunable chosen node's name, or a
    fixed number of channels (the input's, a fixed layer's)."""
    from reds_tf import ir

    if name == ir.INPUT:
        return int(graph.input_shape[-1])
    n = graph.node(name)
    if n.kind in ir.CHOSEN_KINDS:
        root = graph.node(n.tied) if n.tied is not None else n
        return root.name if root.prunable else int(root.units)
    return width_source(graph, n.inputs[0])


def linear_terms(graph) -> list[Term]:
    """Terms whose maximum bounds the arena of every submodel from above (up to
    the greedy placement, which :func:`plan` then checks exactly): per chain
    step its input and/or output, ring and scratch (4-byte alignment counted
    as 3 bytes per buffer); for a network with joins, per step every tensor
    alive then plus the largest scratch. The in-place choice (and its ring's
    delay) is the one the full model makes."""
    from reds_tf import ir

    full = {n.name: n.units for n in graph.nodes if n.kind in ir.CHOSEN_KINDS}
    steps = steps_from_graph(graph, full)
    by_name = {n.name: n for n in graph.nodes}

    def lin(pairs: list[tuple[int, str | int]], const: int = 0) -> tuple[int, dict[str, int]]:
        coef: dict[str, int] = {}
        for per, src in pairs:
            if isinstance(src, str):
                coef[src] = coef.get(src, 0) + per
            else:
                const += per * src
        return const, coef

    def io(s: Step) -> tuple[str | int, str | int]:
        node = by_name[s.name]
        return width_source(graph, node.inputs[0]), width_source(graph, node.name)

    def scratch(s: Step) -> list[tuple[int, str | int]]:
        w_in, w_out = io(s)
        if s.kind in ("conv", "pointwise", "fully_connected"):
            node = by_name[s.name]  # a Dense after Flatten: its kernel covers the map
            kh, kw = (s.in_hw if node.kind == ir.DENSE else node.kernel) or (1, 1)
            return [(4, w_out), (2 * kh * kw, w_in), (4 + 3, 1)]
        if s.kind == "add":
            return [(ADD_SCRATCH_BYTES, 1)]
        return []

    terms: list[Term] = []
    n = len(steps)
    if any(len(s.inputs) > 1 for s in steps):
        # Joins: tensors alive at each step (first fit may need more; plan() checks).
        out_of = {s.output: s for s in steps}
        last_read = {t: i for i, s in enumerate(steps) for t in s.inputs}
        worst_scratch = max((sum(p * (full.get(src, src) if isinstance(src, str) else src)
                                 for p, src in scratch(s)) for s in steps), default=0)  # fmt: skip
        for i, s in enumerate(steps):
            pairs: list[tuple[int, str | int]] = []
            for t, p in out_of.items():
                born = steps.index(p)
                if born == n - 1 or not (born <= i <= last_read.get(t, born)):
                    continue
                pairs += [(p.out_hw[0] * p.out_hw[1], io(p)[1]), (3, 1)]
            const, coef = lin(pairs, worst_scratch)
            terms.append(Term(s.name, const, coef))
        return terms
    for i, s in enumerate(steps):
        w_in, w_out = io(s)
        first, last = i == 0, i == n - 1
        base = scratch(s)
        ins = [(s.in_hw[0] * s.in_hw[1], w_in), (3, 1)]
        outs = [(s.out_hw[0] * s.out_hw[1], w_out), (3, 1)]
        if first and last:
            variants = [base]
        elif first:
            variants = [base + outs]
        elif last:
            variants = [base + ins]
        else:
            ip = in_place(s)
            if ip is None:
                variants = [base + ins + outs]
            else:
                ring = [((ip[0] + 1) * s.out_hw[1], w_out), (3, 1)]
                variants = [base + ring + ins, base + ring + outs]
        for pairs in variants:
            const, coef = lin(pairs)
            terms.append(Term(s.name, const, coef))
    return terms


def describe(steps: Sequence[Step], placement: Placement) -> list[dict[str, object]]:
    """Per step of one submodel's placement: how it runs (``direct``, ``in
    place`` with its rows per call, ``fused`` window) and the arena bytes in
    use while it runs (the union of its input, output, ring, window and
    scratch regions; the caller's input and output buffers excluded)."""
    rows: list[dict[str, object]] = []
    for s, sl in zip(steps, placement.slots, strict=True):
        regions = []
        if sl.src != EXTERNAL:
            regions.append((sl.src, sl.src + s.in_bytes))
        if sl.src2 != EXTERNAL and len(s.inputs) > 1:
            regions.append((sl.src2, sl.src2 + s.in_bytes))
        if sl.dst != EXTERNAL:
            regions.append((sl.dst, sl.dst + s.out_bytes))
        ring = (sl.delay + sl.rows) * s.out_row if sl.delay >= 0 else 0
        for at, n in ((sl.ring, ring), (sl.window, s.window), (sl.scratch, s.scratch)):
            if n:
                regions.append((at, at + n))
        used, end = 0, -1
        for a, b in sorted(regions):  # union length
            if b > end:
                used += b - max(a, end)
                end = b
        if s.kind == STREAM:
            how = f"stream of {len(s.parts)} layers, one row per call"
        elif s.kind == FUSED:
            how = "fused window" + (", in place" if sl.delay >= 0 else "")
        elif sl.delay >= 0:
            how = f"in place, {sl.rows} row{'s' if sl.rows > 1 else ''} per call"
        else:
            how = "direct"
        rows.append({"name": s.name, "kind": s.kind, "in_bytes": s.in_bytes,
                     "out_bytes": s.out_bytes, "how": how, "ring_bytes": ring,
                     "window_bytes": s.window, "scratch_bytes": s.scratch,
                     "arena_bytes": used})  # fmt: skip
    return rows
