"""``reds export RUN_DIR``: int8 .tflite per submodel, manifest and the C++ runtime.

Writes ``RUN_DIR/export/`` atomically (a failure leaves no partial folder):
``model.tflite`` (full int8 model), ``submodel_<k>.tflite`` (prefix slices of
the SAME int8 weights), ``manifest.json`` and ``src/`` (rendered runtime). The
int8 accuracy of every submodel is measured with TFLite Micro and written to
the manifest and to a section of ``report.md`` beside the float accuracy.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tf_keras as keras

from reds_tf import memory, rundir
from reds_tf.boards import NANO33BLE, fit_problem
from reds_tf.codegen.plan import build_plan, fused_steps
from reds_tf.codegen.render import render_sources
from reds_tf.errors import RedsError, RunDirError
from reds_tf.faults import fault_point
from reds_tf.fsutil import atomic_dir, write_json_atomic, write_text_atomic
from reds_tf.models import submodel
from reds_tf.quant import bnfold, convert, numerics, tflm
from reds_tf.quant.slicer import slice_model
from reds_tf.sim import Runtime

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPORT_BEGIN = "<!-- reds export: begin -->"
REPORT_END = "<!-- reds export: end -->"


def load_submodels(run_dir: Path) -> dict[str, Any]:
    """``submodels.json``, checked (:func:`reds_tf.rundir.load_submodels`)."""
    return rundir.load_submodels(run_dir)


load_run_data = rundir.load_run_data
is_dense_only = rundir.is_dense


def load_model(run_dir: Path):
    """The plain full-width tf_keras model ``model.keras``."""
    path = run_dir / rundir.MODEL
    if not path.is_file():
        raise RunDirError(f"{path} is missing; run `reds train` first")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as e:  # Keras raises many types on a damaged file
        raise RunDirError(f"{path} cannot be loaded ({e}); re-run `reds train`") from e


def dense_chain(model, sub: dict[str, Any]) -> list[tuple[str, np.ndarray, np.ndarray, str]]:
    """(name, kernel (in, out), bias (out,), activation) per dense layer of ``sub``."""
    out = []
    for spec in sub["layers"]:
        if spec.get("type") != "dense":
            raise RedsError(f"layer {spec['name']}: type {spec.get('type')!r} is not dense")
        try:
            layer = model.get_layer(spec["name"])
        except ValueError as e:
            raise RunDirError(f"model.keras has no layer {spec['name']!r}") from e
        kernel, bias = layer.get_weights()
        act = layer.activation.__name__
        if act not in ("relu", "relu6", "linear"):
            raise RedsError(f"layer {spec['name']}: activation {act!r} unsupported")
        out.append((spec["name"], kernel, bias, act))
    return out


def check_layers(model, sub: dict[str, Any]) -> None:
    """Every ``submodels.json`` layer exists in ``model.keras`` with its type."""
    kinds = {
        "dense": keras.layers.Dense,
        "depthwise": keras.layers.DepthwiseConv2D,
        "conv": keras.layers.Conv2D,
    }
    for spec in sub["layers"]:
        kind = spec.get("type")
        if kind not in kinds:
            raise RunDirError(f"submodels.json: layer {spec.get('name')} has unknown type {kind!r}")
        try:
            layer = model.get_layer(spec["name"])
        except ValueError as e:
            raise RunDirError(f"model.keras has no layer {spec['name']!r}") from e
        depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
        if not isinstance(layer, kinds[kind]) or depthwise != (kind == "depthwise"):
            raise RunDirError(
                f"layer {spec['name']} is a {type(layer).__name__} in model.keras but "
                f"{kind!r} in submodels.json"
            )


def float_logits(chain, widths: dict[str, int], x: np.ndarray) -> np.ndarray:
    """Float32 logits of a prefix submodel: x (N, *input_shape) -> (N, classes)."""
    h = x.reshape(len(x), -1).astype(np.float32)
    for name, kernel, bias, act in chain:
        o = widths[name]
        h = h @ kernel[: h.shape[1], :o] + bias[:o]
        if act == "relu":
            h = np.maximum(h, 0.0)
        elif act == "relu6":
            h = np.clip(h, 0.0, 6.0)
    return h


def float_submodel_logits(model, widths: dict[str, int], x: np.ndarray) -> np.ndarray:
    """Float32 logits of any prefix submodel (conv included) via a sliced plain
    tf_keras model: x (N, *input_shape) -> (N, classes)."""
    return np.asarray(submodel(model, widths).predict(x, batch_size=256, verbose=0))


def _fc_widths(sub: dict[str, Any], k: int) -> list[int]:
    return [int(sub["submodels"][k]["widths"][ly["name"]]) for ly in sub["layers"]]


def _check_runtime(
    src: Path,
    input_shape: list[int],
    xq: np.ndarray,
    tflm_outputs: list[np.ndarray],
    log: Callable[[str], None],
) -> str:
    """Compile the rendered runtime on the host and require its outputs to equal
    TFLM's on every evaluation input of every submodel. Without a C++ compiler
    the check is skipped (and says so); a mismatch is a bug and fails the export."""
    if shutil.which(os.environ.get("CXX") or "g++") is None:
        log("export: no host C++ compiler; skipped the runtime-vs-TFLM check")
        return "skipped: no host C++ compiler"
    rt = Runtime(src, tuple(input_shape))
    for k, want in enumerate(tflm_outputs):
        got = rt.predict(xq, k)
        if not np.array_equal(got, want):
            bad = int(np.count_nonzero(np.any(got != want, axis=1)))
            raise RedsError(
                f"generated runtime differs from TFLite Micro on {bad} of {len(xq)} inputs of "
                f"submodel {k}; this is a bug in reds_tf, please report it"
            )
    log(f"export: generated runtime == TFLite Micro on {len(xq)} inputs x {len(tflm_outputs)}")
    return f"bit-exact with TFLite Micro on {len(xq)} test inputs per submodel"


def _memory_lines(plan) -> list[str]:
    """report.md: the full model's memory plan, layer by layer."""
    k = plan.num_submodels - 1
    lines = [
        "",
        f"Activation memory of the full model, layer by layer (`reds_tf/memory.py`; the "
        f"busiest layer sets the {plan.placements[k].arena_bytes:,}-byte arena; the "
        "caller's input and output buffers are not in it):",
        "",
        "| layer | kind | input | output | runs | ring | window | scratch | in use |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in memory.describe(fused_steps(plan, k), plan.placements[k]):
        lines.append(
            f"| {r['name']} | {r['kind']} | {r['in_bytes']:,} | {r['out_bytes']:,} | {r['how']} "
            f"| {r['ring_bytes']:,} | {r['window_bytes']:,} | {r['scratch_bytes']:,} "
            f"| {r['arena_bytes']:,} |"
        )
    return lines


def _report_section(
    manifest: dict[str, Any], n_test: int, qat: bool, memory_lines: list[str] | None = None
) -> str:
    extra = ""
    if manifest["per_submodel_qparam_bytes"]:
        extra = (
            " (each submodel has its own requantisation rows: "
            f"{manifest['per_submodel_qparam_bytes']:,} extra bytes)"
        )
    lines = [
        REPORT_BEGIN,
        "## int8 export",
        "",
        f"Written by `reds export`{' --qat' if qat else ''}: int8 accuracy from TFLite Micro on "
        f"`export/submodel_<k>.tflite` ({n_test} test samples), float accuracy of the same "
        "submodel on the same samples. Weights stored once: "
        f"{manifest['weight_bytes']:,} bytes; arena {manifest['arena_bytes']:,} bytes "
        f"(`--arena {manifest.get('arena_mode', 'balanced')}`). "
        f"BatchNorm statistics: {manifest['bn_stats']}{extra}.",
        "",
        "| k | MACs | float accuracy | int8 accuracy | int8 - float |",
        "|---|---|---|---|---|",
    ]
    for s in manifest["submodels"]:
        d = 100 * (s["int8_accuracy"] - s["float_accuracy"])
        lines.append(
            f"| {s['index']} | {s['macs']:,} | {100 * s['float_accuracy']:.2f} | "
            f"{100 * s['int8_accuracy']:.2f} | {d:+.2f} |"
        )
    lines += memory_lines or []
    lines += [REPORT_END, ""]
    return "\n".join(lines)


def update_report(run_dir: Path, section: str) -> None:
    """Replace (or append) the export section of ``report.md`` atomically."""
    path = run_dir / rundir.REPORT
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    pattern = re.compile(re.escape(REPORT_BEGIN) + r".*?" + re.escape(REPORT_END) + r"\n?", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section, text)
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section
    write_text_atomic(path, text)


def run_export(
    run_dir: str | os.PathLike,
    *,
    qat: bool = False,
    qat_epochs: int = 2,
    limit: int | None = None,
    bn_stats: str | None = None,
    arena: str | int = "balanced",
    log: Callable[[str], None] = print,
) -> Path:
    """Export ``run_dir`` (see module doc); returns the ``export/`` path.

    ``limit``: evaluate accuracies on at most this many test samples.
    ``arena``: the runtime's activation memory, "balanced", "smallest", "fastest" or a
    number of bytes (:func:`reds_tf.codegen.plan.build_plan`).
    ``bn_stats``: 'shared' or 'per_submodel' BatchNorm statistics (default:
    ``submodels.json``'s ``bn_stats``). Per-submodel: the full model is
    converted with the full submodel's statistics and every submodel gets its
    own BN-folded weight scales and biases (int8 weights shared; see
    :mod:`reds_tf.quant.bnfold`); float accuracies use each submodel's own
    statistics.

    Before any work the run directory must be writable (and ``report.md``, if
    present, UTF-8 text); an OSError while writing is one OutputError line. The
    export holds a lock on the run directory and first removes what an
    interrupted export left behind (:func:`clean_stale`).
    """
    started = time.time()
    run = Path(run_dir)
    sub = rundir.check_export_inputs(run, qat=qat, qat_epochs=qat_epochs, limit=limit)
    with run_lock(run), rundir.output_errors(str(run)):
        clean_stale(run, started, log)
        fault_point("export:start")
        return _export_locked(run, sub, qat, qat_epochs, limit, bn_stats, arena, log)


@contextlib.contextmanager
def run_lock(run: Path) -> Iterator[None]:
    """An exclusive advisory lock (flock) on the run directory itself, held for
    the whole export: two exports never write one run at once, and while we
    hold it any export temp folder in the run is a dead export's."""
    fd = os.open(run, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RedsError(
                f"another reds command (an export?) is writing {run}; wait for it to finish"
            ) from None
        yield
    finally:
        os.close(fd)


def _complete_export(folder: Path) -> bool:
    """Whether ``folder`` holds a whole export: its manifest is valid, every
    ``.tflite`` it names exists and ``src/`` hashes to its ``sources_sha256``."""
    try:
        manifest = rundir.check_manifest(
            rundir.read_json(folder / "manifest.json", missing="", fix=""), folder
        )
        names = ["model.tflite", *(s["tflite"] for s in manifest["submodels"])]
        want = manifest.get("sources_sha256")
        return (
            all((folder / n).is_file() for n in names)
            and want is not None
            and rundir.sources_sha256(folder / "src") == want
        )
    except (RunDirError, OSError):
        return False


def clean_stale(run: Path, started: float, log: Callable[[str], None] = print) -> None:
    """Remove what an interrupted (killed) export left in ``run``; call with
    :func:`run_lock` held, so none of it belongs to a running export:

    - ``.export.*.tmp/``: a half-built export (``fsutil.atomic_dir``);
    - ``.export.old/``: the previous export, moved aside just before the new
      one was renamed into place. If ``export/`` is missing (killed between the
      two renames) and the old export is whole, it is put back instead;
    - ``.report.md.*.tmp``: a half-written report, and a write probe of
      :func:`reds_tf.rundir.check_output_dir`, if older than this run.
    """
    export = run / rundir.EXPORT
    removed = []
    for p in sorted(run.glob(f".{rundir.EXPORT}.*.tmp")):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
            removed.append(p.name)
    old = run / f".{rundir.EXPORT}.old"
    if old.is_dir() and not old.is_symlink():
        if not export.exists() and _complete_export(old):
            os.replace(old, export)
            log(f"export: restored the previous export from {old.name} (an export was interrupted)")
        else:
            shutil.rmtree(old)
            removed.append(old.name)
    leftovers = [*run.glob(f".{rundir.REPORT}.*.tmp"), *run.glob(f"{rundir.PROBE_PREFIX}*")]
    for p in sorted(leftovers):
        if p.is_file() and not p.is_symlink() and p.stat().st_mtime < started:
            p.unlink()
            removed.append(p.name)
    if removed:
        log(f"export: removed {', '.join(removed)} left in {run} by an interrupted export")


def _export_locked(
    run: Path,
    sub: dict[str, Any],
    qat: bool,
    qat_epochs: int,
    limit: int | None,
    bn_stats: str | None,
    arena: str | int,
    log: Callable[[str], None],
) -> Path:
    model = load_model(run)
    check_layers(model, sub)
    dense = is_dense_only(sub)
    if qat and not dense:
        raise RedsError("--qat supports dense (DNN) models only; export conv models without it")
    bn_mode = bn_stats or str(sub.get("bn_stats", "shared"))
    if bn_mode not in bnfold.BN_MODES:
        raise RedsError(f"bn_stats must be one of {bnfold.BN_MODES}, got {bn_mode!r}")
    K_sub = len(sub["submodels"])
    stats = None
    if bn_mode == "per_submodel" and bnfold.bn_layer_names(model):
        stats = bnfold.read_bn_stats(run, model, K_sub)
    elif bn_mode == "per_submodel":
        bn_mode = "shared"  # no BatchNorm layer: nothing differs between submodels
    chain = dense_chain(model, sub) if dense else None
    run_data = load_run_data(run, sub, need_train=qat)
    if run_data.note:
        log(f"export: {run_data.note}")
    data, rep = run_data.dataset, run_data.calibration
    if list(data.input_shape) != list(sub["input_shape"]):
        raise RunDirError(
            f"data set input {data.input_shape} differs from submodels.json {sub['input_shape']}"
        )

    to_convert = model
    if qat:
        log(f"export: quantisation-aware fine-tuning of all submodels, {qat_epochs} epoch(s)")
        to_convert = convert.qat_finetune(
            model,
            np.asarray(data.x_train),  # a split streamed from disk: read into memory
            data.y_train,
            epochs=qat_epochs,
            widths=[s["widths"] for s in sub["submodels"]],
        )
        chain = dense_chain(_strip_qat(to_convert, model), sub)
    qparams = None
    if stats is not None:
        # The full model's own statistics are the full (last) submodel's.
        to_convert = bnfold.with_bn_stats(model, stats[-1])
    full = convert.convert_int8(to_convert, rep)
    fault_point("export:converted")
    if stats is not None:
        qparams = bnfold.per_submodel_qparams(full, model, sub, stats)
    # build_plan rejects unsupported ops before anything is written
    plan = build_plan(full, sub, qparams, arena)
    K = plan.num_submodels

    n_test = len(data.x_test) if limit is None else min(limit, len(data.x_test))
    x_test, y_test = data.x_test[:n_test], data.y_test[:n_test]
    xq = numerics.quantize(x_test, plan.input_scale, plan.input_zero_point)

    export = run / rundir.EXPORT
    with atomic_dir(export) as tmp:
        (tmp / "model.tflite").write_bytes(full)
        entries = []
        tflm_outputs = []
        for k, s in enumerate(sub["submodels"]):
            name = f"submodel_{k}.tflite"
            rows = bnfold.submodel_rows(qparams, sub, k) if qparams else None
            buf = slice_model(full, _fc_widths(sub, k), rows)
            (tmp / name).write_bytes(buf)
            fault_point("export:submodel")
            res = tflm.run_tflm(buf, xq)
            tflm_outputs.append(res.outputs)
            int8_acc = float(np.mean(np.argmax(res.outputs, axis=1) == y_test))
            logits = (
                float_logits(chain, s["widths"], x_test)
                if chain is not None
                else float_submodel_logits(
                    model if stats is None else bnfold.with_bn_stats(model, stats[k]),
                    s["widths"],
                    x_test,
                )
            )
            float_acc = float(np.mean(np.argmax(logits, axis=1) == y_test))
            log(f"export: submodel {k}: float {float_acc:.4f}, int8 (TFLM) {int8_acc:.4f}")
            entries.append(
                {
                    "index": int(s.get("index", k)),
                    "budget": s.get("budget"),
                    "widths": s["widths"],
                    "macs": plan.macs(k),
                    # the bytes of the arena this submodel uses (reds_tf/memory.py)
                    "arena_bytes": plan.arena["per_submodel"][k],
                    "tflite": name,
                    "float_accuracy": float_acc,
                    "int8_accuracy": int8_acc,
                }
            )
        src = tmp / "src"
        src.mkdir()
        for fname, text in render_sources(plan).items():
            (src / fname).write_text(text)
        sources = rundir.sources_sha256(src)
        fault_point("export:sources")
        per = " / ".join(f"{b:,}" for b in plan.arena["per_submodel"])
        fused = f", fused: {', '.join(sorted(plan.fused))}" if plan.fused else ""
        streams = ", ".join(f"{a} .. {b}" for a, b in plan.streams)
        fused += f", streamed: {streams}" if streams else ""
        log(f"export: arena ({arena}): {per} bytes per submodel{fused}")
        check = _check_runtime(src, plan.input_shape, xq, tflm_outputs, log)
        manifest = {
            "name": plan.name,
            "fingerprint": plan.fingerprint,  # = REDS_MODEL_FINGERPRINT, the firmware's info
            "input_shape": plan.input_shape,
            "num_classes": plan.num_classes,
            "input_scale": plan.input_scale,
            "input_zero_point": plan.input_zero_point,
            "output_scale": plan.output_scale,
            "output_zero_point": plan.output_zero_point,
            "weight_bytes": plan.weight_bytes,
            "per_submodel_qparam_bytes": plan.extra_qparam_bytes,
            "bn_stats": bn_mode,
            "arena_bytes": plan.arena_bytes,
            "arena_mode": arena,  # reds export --arena
            # layers run as one stream (first, last): no map between them exists whole
            "streams": [list(seg) for seg in plan.streams],
            "num_submodels": K,
            "qat": qat,
            "eval_samples": n_test,
            "runtime_check": check,
            "sources_sha256": sources,  # reds simulate/bench/firmware compile only these
            # the training this export was made from: a later retraining makes it stale
            "trained_sha256": rundir.trained_sha256(run),
            "submodels": entries,
        }
        write_json_atomic(tmp / "manifest.json", manifest)
        fault_point("export:manifest")
    fault_point("export:report")
    update_report(run, _report_section(manifest, n_test, qat, _memory_lines(plan)))
    log(f"export: wrote {export} ({K} submodels, {plan.weight_bytes:,} weight bytes)")
    warning = nano33ble_warning(manifest)
    if warning:
        log(warning)
    return export


def nano33ble_warning(manifest: dict[str, Any]) -> str | None:
    """One warning line when the exported model exceeds the Arduino Nano 33
    BLE's flash or RAM (:mod:`reds_tf.boards`), else ``None``. Not an error:
    the qemu and native firmwares still build."""
    problem = fit_problem(manifest, NANO33BLE)
    if problem is None:
        return None
    return (
        f"export: warning: {problem}; `reds firmware --board nano33ble` will refuse it "
        "(qemu and native still build)"
    )


def _strip_qat(qat_model, model):
    """Float weights of the QAT model copied back into a plain model (for the
    float accuracy of what was actually quantised)."""
    plain = keras.models.clone_model(model)
    for layer in plain.layers:
        if not layer.weights:
            continue
        wrapper = qat_model.get_layer("quant_" + layer.name)
        # The wrapper swaps the layer's kernel for a fake-quantised tensor; the
        # float variables are among the wrapper's weights, found by name.
        by_name = {w.name.split("/")[-1].split(":")[0]: w for w in wrapper.weights}
        plain.get_layer(layer.name).set_weights(
            [by_name["kernel"].numpy(), by_name["bias"].numpy()]
        )
    return plain
