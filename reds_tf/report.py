"""``report.md`` and ``accuracy_vs_macs.png`` from the files of a run directory.

Inputs: ``submodels.json`` (required), ``scratch.json`` (the scratch baseline,
optional), ``run.json`` (stage times, base accuracy, optional). Both outputs
are written atomically.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from reds_tf.fsutil import write_bytes_atomic, write_text_atomic
from reds_tf.rundir import load_report_inputs, load_submodels


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def render_markdown(
    sub: dict[str, Any], scratch: dict[str, Any] | None, meta: dict[str, Any] | None
) -> str:
    """The report text: one table row per submodel, smallest first."""
    prunable = [layer["name"] for layer in sub["layers"] if layer.get("prunable", True)]
    full_macs = sub["submodels"][-1]["macs"]
    lines = [
        f"# REDS run `{sub['name']}`",
        "",
        f"Data set `{sub['dataset']}`, input {tuple(sub['input_shape'])}, "
        f"{sub['num_classes']} classes; widths in multiples of {sub.get('block', 1)}; "
        f"full model {full_macs:,} MACs. Accuracies are float32 test accuracy in %.",
        "",
    ]
    head = ["k", "budget", "widths (" + ", ".join(prunable) + ")", "true MACs", "MAC fraction"]
    both_bn = all("accuracy_per_submodel_bn" in s for s in sub["submodels"])
    head += ["params", "accuracy"]
    if both_bn:
        head += ["shared BN", "per-submodel BN"]
    head += ["before fine-tune"]
    if scratch:
        head += [f"scratch ({scratch['epochs']} ep.)", "REDS - scratch"]
    head += ["knapsack"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in sub["submodels"]:
        k = s["index"]
        row = [
            str(k),
            f"{s['budget']:g}",
            ", ".join(str(s["widths"][n]) for n in prunable),
            f"{s['macs']:,}",
            f"{s['macs_fraction']:.4f}",
            f"{s['params']:,}",
            _pct(s["accuracy"]),
        ]
        if both_bn:
            row += [_pct(s["accuracy_shared_bn"]), _pct(s["accuracy_per_submodel_bn"])]
        row += [
            _pct(s["accuracy_before_finetune"]) if "accuracy_before_finetune" in s else "",
        ]
        if scratch:
            sa = scratch["accuracy"][k]
            row += [_pct(sa), f"{100 * (s['accuracy'] - sa):+.2f}"]
        status = s.get("knapsack_status", "")
        secs = s.get("knapsack_seconds")
        row.append(f"{status}, {secs:.2f} s" if secs is not None else status)
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    if both_bn:
        lines += [
            f"BatchNorm statistics used for `accuracy` (and by the export): "
            f"{sub.get('bn_stats', 'shared')}. Shared = one set for all submodels (the "
            "paper); per-submodel = re-estimated for each submodel after fine-tuning.",
            "",
        ]
    if meta:
        if meta.get("base_accuracy") is not None:
            src = meta.get("base_model") or "trained here"
            lines.append(f"Base model ({src}): {_pct(meta['base_accuracy'])} % test accuracy.")
        stages = meta.get("stages") or {}
        if stages:
            parts = ", ".join(f"{k} {v:.1f} s" for k, v in stages.items())
            lines.append(f"Stage wall times: {parts}.")
        lines.append("")
    lines += [
        "![accuracy vs MACs](accuracy_vs_macs.png)",
        "",
    ]
    return "\n".join(lines)


def render_plot(sub: dict[str, Any], scratch: dict[str, Any] | None) -> bytes:
    """PNG bytes: accuracy of each submodel against its true MACs."""
    subs = sub["submodels"]
    macs = [s["macs"] for s in subs]
    # A bare Figure (not pyplot): no backend or display, nothing global to close.
    fig = Figure(figsize=(6, 4), dpi=120)
    ax = fig.subplots()
    ax.plot(macs, [100 * s["accuracy"] for s in subs], "o-", label="REDS (nested, one model)")
    if any("accuracy_before_finetune" in s for s in subs):
        ax.plot(
            macs,
            [100 * s.get("accuracy_before_finetune", float("nan")) for s in subs],
            "x:",
            label="before joint fine-tuning",
        )
    if scratch:
        ax.plot(macs, [100 * a for a in scratch["accuracy"]], "s--", label="scratch twins")
    for s in subs:
        ax.annotate(
            f"{s['budget']:g}",
            (s["macs"], 100 * s["accuracy"]),
            textcoords="offset points",
            xytext=(4, -12),
            fontsize=8,
        )
    ax.set_xlabel("true MACs per inference")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{sub['name']}: accuracy vs MACs")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_report(run_dir: str | Path, *, include_scratch: bool = True) -> tuple[Path, Path]:
    """Write ``report.md`` and ``accuracy_vs_macs.png`` into ``run_dir``."""
    run = Path(run_dir)
    sub = load_submodels(run, record=True)
    scratch, meta = load_report_inputs(run, len(sub["submodels"]), include_scratch=include_scratch)
    png = write_bytes_atomic(run / "accuracy_vs_macs.png", render_plot(sub, scratch))
    md = write_text_atomic(run / "report.md", render_markdown(sub, scratch, meta))
    return md, png
