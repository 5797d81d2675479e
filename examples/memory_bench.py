"""Peak activation memory per submodel, three ways, for the default FC model,
DS-CNN-S on CIFAR-10 and MobileNetV1-0.25 on 96x96x3 (VWW), random weights:

- ``before``: separate input and output buffers for every layer (the planner
  before in-place execution: the largest input + output, plus the largest
  kernel scratch);
- ``smallest``: :mod:`reds_tf.memory`, the exported runtime's arena for that
  submodel with ``reds export --arena smallest`` (in-place rows through a ring
  where exact, fused pointwise + depthwise pairs, streams of layers run row by
  row so that no map between them exists whole);
- ``balanced``: the same with the default ``--arena balanced`` (at least two
  rows per kernel call);
- ``tflm``: TensorFlow Lite Micro's activation arena ("head" of
  ``print_allocations()``) for the same submodel's ``.tflite``.

Submodels take 25 / 50 / 75 / 100 % of every prunable layer's units (a
multiple of 4); memory depends only on the widths, not on what was trained.

Usage::

    .venv/bin/python examples/memory_bench.py --out runs/memory_bench.json --markdown
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CASES = {
    # config, input shape, classes
    "fc (fmnist_dnn)": ("configs/fmnist_dnn.yaml", (28, 28, 1), 10),
    "ds-cnn-s (cifar10_dscnn)": ("configs/cifar10_dscnn.yaml", (32, 32, 3), 10),
    "mobilenet_v1 0.25 (vww_mobilenet)": ("configs/vww_mobilenet.yaml", (96, 96, 3), 2),
}
FRACTIONS = (0.25, 0.5, 0.75, 1.0)
REPO = Path(__file__).resolve().parents[1]


def _before(steps) -> int:
    from reds_tf import memory

    n = len(steps)
    act = max(
        (memory.align4(s.in_bytes) if i else 0) + (memory.align4(s.out_bytes) if i < n - 1 else 0)
        for i, s in enumerate(steps)
    )
    return act + max(memory.align4(s.scratch) for s in steps)


def measure(name: str, config: str, shape: tuple[int, ...], classes: int) -> dict:
    from reds_tf import ir
    from reds_tf.codegen.plan import build_plan, memory_steps
    from reds_tf.config import load_config
    from reds_tf.models import build_model
    from reds_tf.quant.convert import convert_int8
    from reds_tf.quant.slicer import slice_model
    from reds_tf.tflm_arena import tflm_allocations

    cfg = load_config(REPO / config)
    model = build_model(cfg.model, shape, classes)
    graph = ir.from_keras(model)
    subs = []
    for f in FRACTIONS:
        widths = {
            n.name: max(4, min(n.units, 4 * math.ceil(f * n.units / 4)))
            for n in graph.nodes
            if n.prunable
        }
        every = graph.node_widths(widths)
        subs.append(
            ir.Submodel(widths={n.name: every[n.name] for n in graph.width_nodes}, budget=f)
        )
    graph.submodels = subs
    x = np.random.default_rng(0).uniform(0, 1, (64, *shape)).astype(np.float32)
    full = convert_int8(model, x)
    plan = build_plan(full, graph, arena="smallest")
    default = build_plan(full, graph)  # --arena balanced
    tflites = [slice_model(full, graph.width_list(k)) for k in range(len(subs))]
    tflm = tflm_allocations(tflites)
    rows = []
    for k, f in enumerate(FRACTIONS):
        steps = memory_steps(plan, k)
        rows.append(
            {
                "fraction": f,
                "macs": plan.macs(k),
                "before": _before(steps),
                "smallest": plan.placements[k].arena_bytes,
                "balanced": default.placements[k].arena_bytes,
                "tflm_head": tflm[k]["head"],
                "tflm_total": tflm[k]["total"],
            }
        )
        print(f"{name} {f:.2f}: {rows[-1]}", file=sys.stderr, flush=True)
    streams = [list(seg) for seg in plan.streams]
    print(f"{name}: smallest streams {streams}, fused {sorted(plan.fused)}", file=sys.stderr)
    return {"name": name, "config": config, "input_shape": list(shape), "submodels": rows,
            "smallest_streams": streams, "smallest_fused": sorted(plan.fused)}  # fmt: skip


def markdown(results: list[dict]) -> str:
    lines = [
        "| model | units | before (separate buffers) | smallest | balanced (default) "
        "| TFLM head | smallest / TFLM | balanced / TFLM |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for s in r["submodels"]:
            lines.append(
                f"| {r['name']} | {s['fraction']:.0%} | {s['before']:,} B | {s['smallest']:,} B "
                f"| {s['balanced']:,} B | {s['tflm_head']:,} B "
                f"| {s['smallest'] / s['tflm_head']:.3f} | {s['balanced'] / s['tflm_head']:.3f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/memory_bench.json"))
    ap.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = ap.parse_args(argv)
    results = [measure(n, *c) for n, c in CASES.items()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(args.out)
    if args.markdown:
        print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
