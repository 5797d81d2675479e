"""``reds bench --host``: the exported runtime against TensorFlow Lite Micro on
this machine (accuracy, time per inference, weight bytes).

Per submodel: float and int8 accuracy (from the manifest), host time per
inference of the generated runtime (ctypes, :mod:`reds_tf.sim`) and of the
TFLite Micro interpreter on the same ``.tflite`` (``invoke()`` only), and the
weight bytes stored once against per-submodel copies. Results are printed and,
with ``--markdown``, written into that file's "int8 export and host runtime"
section. The Cortex-M4 benchmark (QEMU instruction counts) is :mod:`reds_tf.bench`.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

import numpy as np

from reds_tf import rundir
from reds_tf.errors import RedsError
from reds_tf.fsutil import write_text_atomic
from reds_tf.quant import slicer
from reds_tf.quant.tflm import run_tflm
from reds_tf.sim import Runtime, load_manifest

BENCH_BEGIN = "<!-- reds export: host begin -->"
BENCH_END = "<!-- reds export: host end -->"


def benchmark(
    run_dir: str | os.PathLike,
    *,
    samples: int = 200,
    repeats: int = 5,
    rounds: int = 3,
    trust: bool = False,
) -> dict[str, object]:
    """Measure an exported run on this machine (see the module docstring).

    Per submodel: float and int8 accuracy (from the manifest), host time per
    inference of the generated runtime (ctypes) and of the TFLite Micro
    interpreter on the same ``.tflite`` (``invoke()`` only), each the best of
    ``rounds`` x ``repeats`` passes over the same ``samples`` quantised test
    images (the two alternate round by round), plus
    weight bytes stored once against per-submodel copies.
    """
    run = Path(run_dir)
    manifest = load_manifest(run)
    src = rundir.verify_sources(run, manifest, trust=trust)  # once for both builds
    shape = tuple(manifest["input_shape"])
    rt = Runtime(src, shape)
    generic = Runtime(src, shape, native=False)
    x, _ = rundir.quantized_test_set(run, manifest, samples)

    def weight_bytes(path: Path) -> int:
        return slicer.weight_bytes(path.read_bytes())

    rows = []
    for e in manifest["submodels"]:
        k = int(e["index"])
        tfl = run / "export" / e["tflite"]
        # Alternate the two in rounds so a burst of load on this shared machine
        # hits both; keep each one's best pass.
        tflm_s = ours = ours_generic = float("inf")
        for _ in range(rounds):
            tflm = run_tflm(tfl, x, repeats=repeats)
            if not np.array_equal(rt.predict(x, k), tflm.outputs):
                raise RedsError(f"submodel {k}: generated runtime differs from TFLM")
            tflm_s = min(tflm_s, tflm.seconds_per_invoke)
            ours = min(ours, rt.seconds_per_inference(x, k, repeats=repeats))
            ours_generic = min(ours_generic, generic.seconds_per_inference(x, k, repeats=repeats))
        rows.append(
            {
                "index": k,
                "widths": e["widths"],
                "macs": e["macs"],
                "float_accuracy": e["float_accuracy"],
                "int8_accuracy": e["int8_accuracy"],
                "runtime_us": ours * 1e6,
                "tflm_us": tflm_s * 1e6,
                "speedup": tflm_s / ours,
                "generic_us": ours_generic * 1e6,
                "generic_speedup": tflm_s / ours_generic,
                "tflite_weight_bytes": weight_bytes(tfl),
            }
        )
    return {
        "name": manifest["name"],
        "run_dir": str(run_dir),
        "eval_samples": manifest.get("eval_samples"),
        "qat": manifest.get("qat", False),
        "weight_bytes": manifest["weight_bytes"],
        "full_model_weight_bytes": weight_bytes(run / "export" / "model.tflite"),
        "arena_bytes": manifest["arena_bytes"],
        "samples": samples,
        "repeats": repeats * rounds,
        "submodels": rows,
    }


def benchmark_markdown(b: dict, command: str) -> str:
    """The BENCHMARKS.md section for :func:`benchmark`'s result."""
    rows = b["submodels"]
    copies = sum(r["tflite_weight_bytes"] for r in rows)
    lines = [
        BENCH_BEGIN,
        f"## int8 export and host runtime: `{b['name']}` (`{command}`)",
        "",
        f"Commands: `reds export {b['run_dir']}`, then `{command} --markdown BENCHMARKS.md`. "
        f"Accuracy on {b['eval_samples']} test images: float = the exported float weights, int8 = "
        f"TFLite Micro on `submodel_<k>.tflite`{' (after QAT)' if b['qat'] else ''}; the generated "
        "runtime is bit-identical to TFLite Micro (checked again while timing). Host time: "
        f"best of {b['repeats']} passes over {b['samples']} test images, per inference, same "
        f"machine, same run ({platform.machine()}; runtime built with `g++ -O3 -march=native`, "
        "and with `g++ -O3` for the generic x86-64 target; "
        "ctypes call included; TFLite Micro: `invoke()` only).",
        "",
        "| k | MACs | float acc. | int8 acc. | int8 - float | TFLM us | runtime us (native) "
        "| speed-up | runtime us (generic) | speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        d = 100 * (r["int8_accuracy"] - r["float_accuracy"])
        lines.append(
            f"| {r['index']} | {r['macs']:,} | {100 * r['float_accuracy']:.2f} | "
            f"{100 * r['int8_accuracy']:.2f} | {d:+.2f} | {r['tflm_us']:.1f} | "
            f"{r['runtime_us']:.1f} | {r['speedup']:.1f}x | {r['generic_us']:.1f} | "
            f"{r['generic_speedup']:.1f}x |"
        )
    worst_drop = max(100 * (r["float_accuracy"] - r["int8_accuracy"]) for r in rows)
    min_speed = min(r["speedup"] for r in rows)
    min_generic = min(r["generic_speedup"] for r in rows)
    same = b["weight_bytes"] == b["full_model_weight_bytes"]
    lines += [
        "",
        f"- int8 vs float: largest drop {max(worst_drop, 0.0):.2f} points (goal <= 0.5: "
        f"{'met' if worst_drop <= 0.5 else 'NOT met'}). Activation ranges are calibrated on "
        "the full model only (500 training images) and shared by every submodel.",
        f"- Weight + bias bytes in the generated sources for all {len(rows)} submodels: "
        f"{b['weight_bytes']:,}; full model alone (`model.tflite`): "
        f"{b['full_model_weight_bytes']:,} (goal equal: {'met' if same else 'NOT met'}); "
        f"separate per-submodel copies would take {copies:,}.",
        f"- Host speed-up over TFLite Micro, runtime built as `reds simulate` builds it "
        f"(native): at least {min_speed:.1f}x (goal >= 2x on every submodel: "
        f"{'met' if min_speed >= 2 else 'NOT met'}); generic x86-64 build: at least "
        f"{min_generic:.1f}x. The machine is shared, so times vary from run to run. "
        f"Arena {b['arena_bytes']:,} bytes.",
        BENCH_END,
        "",
    ]
    return "\n".join(lines)


def run_host_bench(
    run_dir: str | os.PathLike,
    *,
    markdown: str | os.PathLike | None = None,
    samples: int = 200,
    repeats: int = 5,
    rounds: int = 3,
    trust: bool = False,
) -> dict[str, object]:
    """:func:`benchmark`, printed, and written into ``markdown`` (its host
    section replaced, or appended) when given; returns the result."""
    for name, v in (("--samples", samples), ("--repeats", repeats), ("--rounds", rounds)):
        if v < 1:
            raise RedsError(f"{name} must be at least 1, got {v}")
    if markdown is not None:
        rundir.check_output_file(markdown, "the Markdown file", text=True)
    b = benchmark(run_dir, samples=samples, repeats=repeats, rounds=rounds, trust=trust)
    text = benchmark_markdown(b, f"reds bench --host {run_dir}")
    print(text)
    if markdown is not None:
        path = Path(markdown)
        old = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n"
        pat = re.compile(re.escape(BENCH_BEGIN) + r".*?" + re.escape(BENCH_END) + r"\n?", re.S)
        new = pat.sub(lambda _m: text, old) if pat.search(old) else old.rstrip("\n") + "\n\n" + text
        with rundir.output_errors(str(path)):
            write_text_atomic(path, new)
    return b
