"""The C++ runtime of an export: model-specific files rendered from
``templates/`` with Jinja2 (StrictUndefined), plus the fixed kernel sources of
``reds_tf/kernels/`` copied verbatim.

All C++ text lives in those two folders; Python only supplies the plan and two
value formatters (C array bodies and float literals).
"""

from __future__ import annotations

import os
from pathlib import Path

import jinja2
import numpy as np

from reds_tf import memory, resources
from reds_tf.codegen.plan import ModelPlan, fused_steps

TEMPLATES_DIR = resources.TEMPLATES_DIR
KERNELS_DIR = resources.KERNELS_DIR

# Rendered file -> template (the model-specific files).
SOURCES = {
    "reds_model.h": "reds_model.h.j2",
    "reds_model.cpp": "reds_model.cpp.j2",
    "reds_weights.h": "reds_weights.h.j2",
    "reds_weights.cpp": "reds_weights.cpp.j2",
}
# Fixed sources copied into every export: one file per op and variant
# (reference and Cortex-M4 DSP), their headers and the inline-asm DSP header.
KERNEL_SOURCES = tuple(sorted(p.name for p in KERNELS_DIR.iterdir() if p.suffix in (".h", ".cpp")))
# Layer kinds reds_model.cpp.j2 knows how to invoke.
RENDERABLE_KINDS = {
    "fully_connected",
    "conv",
    "pointwise",
    "depthwise",
    "avgpool",
    "maxpool",
    "reshape",
    "add",
}


def carray(values: np.ndarray, per_line: int = 16) -> str:
    """Body of a C array initialiser: comma-separated integers, indented lines."""
    flat = [int(v) for v in np.asarray(values).ravel()]
    lines = []
    for i in range(0, len(flat), per_line):
        lines.append("    " + ", ".join(str(v) for v in flat[i : i + per_line]) + ",")
    return "\n".join(lines)


def cfloat(value: float) -> str:
    """A float literal that round-trips the float32 value exactly."""
    return f"{float(np.float32(value))!r}f"


def environment(templates_dir: str | os.PathLike | None = None) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir or TEMPLATES_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["carray"] = carray
    env.filters["cfloat"] = cfloat
    env.filters["offset"] = lambda v: max(int(v), 0)  # memory.EXTERNAL -> 0 (never read)
    return env


def kernel_sources() -> dict[str, str]:
    """File name -> text of the fixed kernel sources (identical in every export)."""
    return {name: (KERNELS_DIR / name).read_text(encoding="utf-8") for name in KERNEL_SOURCES}


def _streams(plan: ModelPlan, compute: list) -> dict[str, dict]:
    """Per stream (by its first layer): its layers, the rows each layer's window
    holds and, per submodel, the windows' byte offsets (memory.stream_layout)."""
    names = [ly.name for ly in compute]
    out: dict[str, dict] = {}
    for first, last in plan.streams:
        layers = compute[names.index(first) : names.index(last) + 1]
        offsets, rows = [], []
        for k in range(plan.num_submodels):
            step = next(s for s in fused_steps(plan, k) if s.name == first)
            assert step.kind == memory.STREAM and len(step.parts) == len(layers)
            offsets.append([w[0] for w in step.windows])
            rows = [w[1] for w in step.windows]
        out[first] = {"layers": layers, "rows": rows, "windows": offsets}
    return out


def render_sources(
    plan: ModelPlan, templates_dir: str | os.PathLike | None = None
) -> dict[str, str]:
    """File name -> rendered text for every runtime source."""
    unknown = {ly.kind for ly in plan.layers} - RENDERABLE_KINDS
    if unknown:  # a new plan kind needs its template branch first
        raise ValueError(f"no template support for layer kind(s) {sorted(unknown)}")
    env = environment(templates_dir)
    fc_layers = [ly for ly in plan.layers if ly.kind == "fully_connected"]
    compute = [ly for ly in plan.layers if ly.kind != "reshape"]
    conv_layers = [ly for ly in plan.layers if ly.kind in ("conv", "pointwise", "depthwise")]
    if any(ly.per_submodel for ly in fc_layers):
        raise ValueError("per-submodel requantisation is supported for convolutions only")
    ctx = {
        "plan": plan,
        "fc_layers": fc_layers,
        # pointwise layer name -> the depthwise layer fused into its step
        "fused_dw": {
            a.name: b for a, b in zip(compute, compute[1:], strict=False) if a.name in plan.fused
        },
        # first layer name -> the stream it starts (layers, window rows, offsets per k)
        "streams": _streams(plan, compute),
        # one placement-table entry each (a fused depthwise layer has none)
        "compute_layers": [ly for ly in plan.layers if ly.kind != "reshape" and ly.slot >= 0],
        "conv_layers": conv_layers,
        # Average and max pools share one table of reds_pool_layer.
        "pool_layers": [ly for ly in plan.layers if ly.kind in ("avgpool", "maxpool")],
        "add_layers": [ly for ly in plan.layers if ly.kind == "add"],
        "weight_layers": [ly for ly in plan.layers if ly.weights is not None],
    }
    files = {name: env.get_template(tpl).render(**ctx) for name, tpl in SOURCES.items()}
    return {**files, **kernel_sources()}


def write_sources(plan: ModelPlan, out_dir: str | os.PathLike) -> list[Path]:
    """Render into ``out_dir`` (created); returns the written paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in render_sources(plan).items():
        p = out / name
        p.write_text(text)
        paths.append(p)
    return paths
