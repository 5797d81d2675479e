"""The run directory: the name of every file in it and the one schema of every
file a command reads.

A run directory (``runs/<name>/``) is written by ``reds train`` and extended by
``reds export``, ``bench`` and ``firmware``; docs/DESIGN.md describes each file.
Every command that reads a run file goes through this module, so a damaged,
hand-edited or foreign file ends in one line (:class:`~reds_tf.errors.RunDirError`,
exit 2) that names the file, the key and what to do, never in a traceback or
in silently wrong numbers:

- :func:`load_submodels`: ``submodels.json`` (the training contract);
- :func:`load_manifest`: ``export/manifest.json`` (the export contract);
- :func:`verify_sources`: ``export/src`` against the manifest's
  ``sources_sha256`` before anything compiles it on this machine;
- :func:`load_report_inputs`: ``scratch.json`` and ``run.json`` for the report;
- :func:`load_inputs`: an ``--inputs`` ``.npy`` file, header checked before
  any data is read.

It also checks output locations before a command starts its work
(:func:`check_output_dir`, :func:`check_output_file`) and turns an ``OSError``
while writing into one line (:func:`output_errors`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
from numpy.lib import format as npy

from reds_tf import data as datasets
from reds_tf import ir
from reds_tf.errors import DataError, OutputError, RedsError, RunDirError
from reds_tf.quant import numerics

# Files of a run directory, relative to it (docs/DESIGN.md, "Run directory").
CONFIG = "config.yaml"
BASE_MODEL = "base.keras"
DATA_SNAPSHOT = "data.npz"  # calibration inputs + a test sample (reds_tf.data.snapshot)
IMPORTANCE = "importance.npz"
PERMUTED_MODEL = "permuted.keras"
KNAPSACK = "knapsack.json"
MODEL = "model.keras"
SUBMODELS = "submodels.json"
BN_STATS = "bn_stats.npz"
SCRATCH = "scratch.json"
RUN_JSON = "run.json"
REPORT = "report.md"
PLOT = "accuracy_vs_macs.png"
EXPORT = "export"
MANIFEST = "export/manifest.json"
EXPORT_SRC = "export/src"
BENCH_JSON = "bench.json"
BENCH_BUILD = ".bench"
FIRMWARE = "firmware"
ARDUINO = "arduino"

LAYER_TYPES = ir.WIDTH_KINDS
BN_MODES = ("shared", "per_submodel")
# JSON files of a run are a few KB (a wide conv model's submodels.json: ~20 KB);
# anything far larger is not ours and is refused before it is parsed.
MAX_JSON_BYTES = 16 * 1024 * 1024
# ``reds simulate --inputs``: at most this much int8 data (1 GiB; 1.3 million
# Fashion-MNIST images). Larger sets: split them into several files.
MAX_INPUT_BYTES = 1 << 30
_MAX_DIM = 1 << 24  # one dimension of an input shape
_MAX_COUNT = (1 << 32) - 1  # MACs, bytes: the C API's uint32_t
_TFLITE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\.tflite")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FINGERPRINT = re.compile(r"[0-9a-f]{16}")


def require_run_dir(run_dir: str | os.PathLike) -> Path:
    """``run_dir`` as a Path, or a RunDirError when it is not a folder."""
    run = Path(run_dir)
    if not run.is_dir():
        what = "is not a folder" if run.exists() else "does not exist"
        raise RunDirError(f"run directory {run} {what}; train one with `reds train`")
    return run


# -- validation helpers ---------------------------------------------------------


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


class _Schema:
    """Checks values of one parsed file; every failure names the file, the key
    path and what to do."""

    def __init__(self, path: Path, fix: str) -> None:
        self.path = path
        self.fix = fix

    def fail(self, key: str, what: str, got: Any = ..., *, show: bool = True) -> NoReturn:
        got_text = f", got {_show(got)}" if show and got is not ... else ""
        where = f"'{key}' " if key else ""
        raise RunDirError(f"{self.path}: {where}{what}{got_text}; {self.fix}")

    def obj(self, v: Any, key: str) -> dict[str, Any]:
        if not isinstance(v, dict):
            self.fail(key, "must be a JSON object", type(v).__name__)
        return v

    def has(self, d: dict[str, Any], name: str, prefix: str = "") -> Any:
        if name not in d:
            self.fail(prefix + name, "is missing", show=False)
        return d[name]

    def int(self, v: Any, key: str, lo: int = 0, hi: int = _MAX_COUNT) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            self.fail(key, f"must be an integer in {lo}..{hi}", v)
        return v

    def num(self, v: Any, key: str, lo: float, hi: float, *, lo_open: bool = False) -> float:
        ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        if not ok or v > hi or v < lo or (lo_open and v == lo):
            rng = f"({lo:g}, {hi:g}]" if lo_open else f"[{lo:g}, {hi:g}]"
            self.fail(key, f"must be a number in {rng}", v)
        return float(v)

    def str(self, v: Any, key: str, pattern: re.Pattern | None = None, what: str = "") -> str:
        if not isinstance(v, str) or not v or (pattern is not None and not pattern.fullmatch(v)):
            self.fail(key, f"must be {what or 'a non-empty string'}", v)
        return v

    def list(self, v: Any, key: str, *, nonempty: bool = True) -> list[Any]:
        if not isinstance(v, list) or (nonempty and not v):
            self.fail(key, "must be a non-empty list" if nonempty else "must be a list", v)
        return v

    def shape(self, v: Any, key: str) -> list[int]:
        dims = self.list(v, key)
        if len(dims) > 4:
            self.fail(key, "must have 1 to 4 dimensions", v)
        for i, d in enumerate(dims):
            self.int(d, f"{key}[{i}]", 1, _MAX_DIM)
        if math.prod(dims) > _MAX_DIM:
            self.fail(key, f"must hold at most {_MAX_DIM:,} elements", v)
        return dims


def read_json(path: Path, *, missing: str, fix: str) -> Any:
    """The parsed JSON of ``path``; one-line RunDirErrors: ``missing`` when the
    file does not exist, ``<path> is corrupt (...); <fix>`` when it cannot be
    read or parsed (binary garbage, too large, nested too deep)."""
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise RunDirError(f"{path} is not a file; {fix}")
        if size > MAX_JSON_BYTES:
            raise RunDirError(
                f"{path} is corrupt ({size:,} bytes, more than {MAX_JSON_BYTES:,} for a run file); "
                f"{fix}"
            )
        return json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise RunDirError(missing) from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
        reason = reason.splitlines()[0] if reason else type(e).__name__
        if isinstance(e, RecursionError):
            reason = "nested too deeply"
        raise RunDirError(f"{path} is corrupt ({reason}); {fix}") from e


# -- submodels.json -------------------------------------------------------------


def load_submodels(run_dir: str | os.PathLike, *, record: bool = False) -> dict[str, Any]:
    """``submodels.json`` parsed and checked against :func:`check_submodels`."""
    path = Path(run_dir) / SUBMODELS
    fix = "re-run `reds train`"
    doc = read_json(path, missing=f"{path} is missing; run `reds train` first", fix=fix)
    return check_submodels(doc, path, record=record)


def load_graph(run_dir: str | os.PathLike, *, record: bool = False) -> ir.Graph:
    """``submodels.json`` as the network's graph (:func:`reds_tf.ir.from_doc`),
    checked by :func:`check_submodels` first."""
    return ir.from_doc(load_submodels(run_dir, record=record))


# Per-submodel numbers that training records (the report needs them, export does not).
RECORD_KEYS = ("budget", "macs", "macs_fraction", "params", "accuracy")


def check_submodels(
    doc: Any, path: Path | str = SUBMODELS, *, record: bool = False
) -> dict[str, Any]:
    """The schema of ``submodels.json`` (docs/DESIGN.md); returns ``doc``.

    Required: ``name``, ``dataset``, ``input_shape``, ``num_classes``,
    ``layers`` (unique names, type dense/conv/depthwise, units) and
    ``submodels``, each with a width for every layer (1..units, never
    shrinking from one submodel to the next). Checked when present (required
    with ``record=True``, as training writes them): ``index`` (= position),
    ``budget``, ``macs``, ``macs_fraction``, ``params``, ``accuracy``;
    optional: ``accuracy_before_finetune``, ``predicted_cycles`` (the latency
    model's estimate, ``knapsack: {cost: latency}``), ``arena_bytes`` (the
    planned activation arena) and ``memory_budget_bytes`` (its bound), ``block``, ``bn_stats``,
    ``data_options`` (an object), ``format_version`` (absent: 1; newer than
    :data:`reds_tf.ir.FORMAT_VERSION` is refused), per layer ``producer`` (null
    or an earlier layer; a depthwise layer as wide as it), ``tied`` (format 2:
    an earlier untied dense/conv layer of the same units and widths), ``kernel``,
    ``strides``, ``output_hw`` (two positive integers) and ``padding``."""
    s = _Schema(Path(path), "re-run `reds train`")
    doc = s.obj(doc, "")
    for key in ("name", "dataset"):
        s.str(s.has(doc, key), key)
    s.shape(s.has(doc, "input_shape"), "input_shape")
    s.int(s.has(doc, "num_classes"), "num_classes", 1, _MAX_DIM)
    if "block" in doc:
        s.int(doc["block"], "block", 1, _MAX_DIM)
    if "bn_stats" in doc and doc["bn_stats"] not in BN_MODES:
        s.fail("bn_stats", f"must be one of {', '.join(BN_MODES)}", doc["bn_stats"])
    opts = doc.get("data_options", {})
    if not isinstance(opts, dict):
        s.fail("data_options", "must be a JSON object", opts)
    version = s.int(doc.get("format_version", 1), "format_version", 1, 1 << 20)
    if version > ir.FORMAT_VERSION:
        raise RunDirError(
            f"{path}: 'format_version' is {version}, newer than this reds_tf reads "
            f"({ir.FORMAT_VERSION}); use the reds_tf that wrote it, or re-run `reds train`"
        )
    units: dict[str, int] = {}
    tied: dict[str, str] = {}  # member -> its group's representative
    tied_ok: set[str] = set()  # layers a later one may be tied to
    for i, ly in enumerate(s.list(s.has(doc, "layers"), "layers")):
        key = f"layers[{i}]"
        ly = s.obj(ly, key)
        name = s.str(s.has(ly, "name", key + "."), f"{key}.name")
        if name in units:
            s.fail(f"{key}.name", "repeats an earlier layer's name", name)
        kind = s.has(ly, "type", key + ".")
        if kind not in LAYER_TYPES:
            s.fail(f"{key}.type", f"must be one of {', '.join(LAYER_TYPES)}", kind)
        units[name] = s.int(s.has(ly, "units", key + "."), f"{key}.units", 1, _MAX_DIM)
        if "prunable" in ly and not isinstance(ly["prunable"], bool):
            s.fail(f"{key}.prunable", "must be true or false", ly["prunable"])
        if name == ir.INPUT:
            s.fail(f"{key}.name", "is reserved for the model input", name)
        producer = ly.get("producer")
        if producer is not None and (
            not isinstance(producer, str) or producer == name or producer not in units
        ):
            s.fail(f"{key}.producer", "must be null or the name of an earlier layer", producer)
        if kind == ir.DEPTHWISE and producer is not None and units[name] != units[producer]:
            s.fail(f"{key}.units", f"must equal its producer's {units[producer]}", units[name])
        if "tied" in ly:
            rep = ly["tied"]
            if (
                version < 2
                or kind not in ir.CHOSEN_KINDS
                or not isinstance(rep, str)
                or rep not in tied_ok
            ):
                s.fail(f"{key}.tied", "must name an earlier untied dense/conv layer", rep)
            if units[rep] != units[name]:
                s.fail(f"{key}.units", f"must equal its tied layer's {units[rep]}", units[name])
            tied[name] = rep
        elif kind in ir.CHOSEN_KINDS:
            tied_ok.add(name)
        for geo in ("kernel", "strides", "output_hw"):
            if geo in ly:
                pair = s.list(ly[geo], f"{key}.{geo}")
                if len(pair) != 2:
                    s.fail(f"{key}.{geo}", "must be two positive integers", pair)
                for j, v in enumerate(pair):
                    s.int(v, f"{key}.{geo}[{j}]", 1, _MAX_DIM)
        if "padding" in ly and ly["padding"] not in ("valid", "same"):
            s.fail(f"{key}.padding", "must be valid or same", ly["padding"])
    previous: dict[str, int] = {}
    for k, sm in enumerate(s.list(s.has(doc, "submodels"), "submodels")):
        key = f"submodels[{k}]"
        sm = s.obj(sm, key)
        widths = s.obj(s.has(sm, "widths", key + "."), f"{key}.widths")
        for name, n in units.items():
            w = s.int(s.has(widths, name, f"{key}.widths."), f"{key}.widths.{name}", 1, n)
            if w < previous.get(name, 0):
                s.fail(
                    f"{key}.widths.{name}",
                    f"must not be smaller than the previous submodel's {previous[name]}",
                    w,
                )
            previous[name] = w
        for name, rep in tied.items():
            if widths[name] != widths[rep]:
                s.fail(f"{key}.widths.{name}", f"must equal its tied layer {rep}'s", widths[name])
        if record:
            for name in ("index", *RECORD_KEYS):
                s.has(sm, name, key + ".")
        if "index" in sm:
            s.int(sm["index"], f"{key}.index", k, k)
        if sm.get("budget") is not None:
            s.num(sm["budget"], f"{key}.budget", 0.0, 1.0, lo_open=True)
        if "macs" in sm:
            s.int(sm["macs"], f"{key}.macs", 1, 1 << 62)
        if "params" in sm:
            s.int(sm["params"], f"{key}.params", 0, 1 << 62)
        if "predicted_cycles" in sm:
            s.int(sm["predicted_cycles"], f"{key}.predicted_cycles", 1, 1 << 62)
        if "arena_bytes" in sm:
            s.int(sm["arena_bytes"], f"{key}.arena_bytes", 0, 1 << 62)
        if "memory_budget_bytes" in sm:
            s.int(sm["memory_budget_bytes"], f"{key}.memory_budget_bytes", 1, 1 << 62)
        for name in ("macs_fraction", "accuracy", "accuracy_before_finetune"):
            if name in sm:
                s.num(sm[name], f"{key}.{name}", 0.0, 1.0)
    return doc


def is_dense(sub: dict[str, Any]) -> bool:
    """Whether every width-carrying layer is fully connected (a DNN): the one
    place that decides it (export's float path and QAT, bench's target)."""
    return all(ly["type"] == "dense" for ly in sub["layers"])


def model_kind(sub: dict[str, Any]) -> str:
    """``dense`` (a DNN) or ``conv`` (any convolution or depthwise layer)."""
    return "dense" if is_dense(sub) else "conv"


@dataclass
class RunData:
    """The data a later command works with (:func:`load_run_data`).

    ``dataset``: the source as trained, or the run's own copy when the source is
    gone or changed (then its training split is the calibration set and
    ``note`` says why); ``calibration`` (n, *input_shape) float32: the inputs
    that calibrate int8 ranges."""

    dataset: Any
    calibration: np.ndarray
    note: str = ""

    @property
    def from_snapshot(self) -> bool:
        return bool(self.note)


def load_run_data(
    run_dir: str | os.PathLike, sub: dict[str, Any] | None = None, *, need_train: bool = False
) -> RunData:
    """The run's data: ``sub["dataset"]`` (default: from ``submodels.json``)
    loaded with the ``data:`` options training recorded (``data_options``),
    shaped as the model's input.

    When the run has its own copy (``data.npz``, written by ``reds train``) and
    the source is gone, moved, or no longer hashes as it did at training time,
    the copy is used instead and ``note`` says so in one line. ``need_train``
    (quantisation-aware training) refuses that fallback: it needs the whole
    training split."""
    from reds_tf.data.snapshot import Snapshot, calibration_indices, content_sha256

    run = Path(run_dir)
    sub = load_submodels(run) if sub is None else sub
    snap_path = run / DATA_SNAPSHOT
    snap = Snapshot(snap_path) if snap_path.is_file() else None
    name = sub["dataset"]
    shape = tuple(sub["input_shape"])
    if name == datasets.ARRAYS:
        if snap is None:
            raise RunDirError(
                f"{run} was trained from in-memory arrays and its copy {snap_path} is missing; "
                "retrain it with reds_tf.train(..., force=True)"
            )
        reason = "trained from in-memory arrays"
    else:
        try:
            data = datasets.load_dataset(name, **sub.get("data_options", {}))
        except DataError as e:
            if snap is None:
                raise
            reason = f"{name} is unavailable ({e})"
        else:
            if snap is None or content_sha256(data) == snap.content_sha256:
                data = datasets.fit_to_input(data, shape)
                if snap is not None:
                    cal = snap.x_calib
                else:
                    cal = data.x_train[calibration_indices(len(data.x_train))]
                return RunData(data, cal)
            reason = f"{name} ({data.source}) changed since training: its content hash differs"
    if need_train:
        raise RunDirError(
            f"{reason}; quantisation-aware training needs the training data as it was "
            "trained on: restore it, or export without --qat"
        )
    copy = snap.dataset()
    note = f"data: {reason}; using the {len(copy.x_test)} test samples kept in {snap_path}"
    return RunData(datasets.fit_to_input(copy, shape), snap.x_calib.reshape(-1, *shape), note)


def quantized_test_set(
    run_dir: str | os.PathLike,
    manifest: dict[str, Any],
    limit: int | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The run's test set as the exported runtime takes it: the first ``limit``
    (default all) test samples quantised with the manifest's input scale and
    zero point, ``(n, *input_shape)`` int8, and their labels ``(n,)``. When
    the run's own copy stands in for its data, ``log`` (default: stderr) gets
    the one line saying why."""
    run_data = load_run_data(run_dir)
    if run_data.note:
        (log or _stderr)(run_data.note)
    data = run_data.dataset
    n = len(data.x_test) if limit is None else max(1, min(limit, len(data.x_test)))
    xq = numerics.quantize(data.x_test[:n], manifest["input_scale"], manifest["input_zero_point"])
    return xq, np.asarray(data.y_test[:n])


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- export/manifest.json -------------------------------------------------------


def load_manifest(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``export/manifest.json`` parsed and checked against :func:`check_manifest`."""
    path = Path(run_dir) / MANIFEST
    doc = read_json(
        path,
        missing=f"{path} is missing; run `reds export {run_dir}` first",
        fix=f"re-run `reds export {run_dir}`",
    )
    return check_manifest(doc, path, fix=f"re-run `reds export {run_dir}`")


def check_manifest(
    doc: Any, path: Path | str = MANIFEST, fix: str = "re-run `reds export`"
) -> dict[str, Any]:
    """The schema of ``export/manifest.json`` (docs/DESIGN.md); returns ``doc``.

    Optional (absent in older exports): ``per_submodel_qparam_bytes``,
    ``bn_stats``, ``num_submodels`` (must equal the number of submodels),
    ``qat``, ``eval_samples``, ``runtime_check``, ``fingerprint``,
    ``sources_sha256`` (required by :func:`verify_sources`), a submodel's
    ``arena_bytes`` (at most the top-level one)."""
    s = _Schema(Path(path), fix)
    doc = s.obj(doc, "")
    s.str(s.has(doc, "name"), "name")
    s.shape(s.has(doc, "input_shape"), "input_shape")
    s.int(s.has(doc, "num_classes"), "num_classes", 1, _MAX_DIM)
    for side in ("input", "output"):
        s.num(s.has(doc, f"{side}_scale"), f"{side}_scale", 0.0, 1e30, lo_open=True)
        s.int(s.has(doc, f"{side}_zero_point"), f"{side}_zero_point", -128, 127)
    for key in ("weight_bytes", "arena_bytes"):
        s.int(s.has(doc, key), key)
    if "per_submodel_qparam_bytes" in doc:
        s.int(doc["per_submodel_qparam_bytes"], "per_submodel_qparam_bytes")
    if "bn_stats" in doc and doc["bn_stats"] not in BN_MODES:
        s.fail("bn_stats", f"must be one of {', '.join(BN_MODES)}", doc["bn_stats"])
    if "qat" in doc and not isinstance(doc["qat"], bool):
        s.fail("qat", "must be true or false", doc["qat"])
    if "eval_samples" in doc:
        s.int(doc["eval_samples"], "eval_samples", 1, 1 << 40)
    if "runtime_check" in doc and not isinstance(doc["runtime_check"], str):
        s.fail("runtime_check", "must be a string", doc["runtime_check"])
    if "fingerprint" in doc:
        s.str(doc["fingerprint"], "fingerprint", _FINGERPRINT, "16 lowercase hex digits")
    if "sources_sha256" in doc:
        s.str(doc["sources_sha256"], "sources_sha256", _SHA256, "64 lowercase hex digits")
    if "arena_mode" in doc and not (
        doc["arena_mode"] in ("balanced", "smallest", "fastest")
        or (isinstance(doc["arena_mode"], int) and not isinstance(doc["arena_mode"], bool))
    ):
        s.fail(
            "arena_mode", "must be balanced, smallest, fastest or a byte count", doc["arena_mode"]
        )
    if "trained_sha256" in doc:
        s.str(doc["trained_sha256"], "trained_sha256", _SHA256, "64 lowercase hex digits")
    subs = s.list(s.has(doc, "submodels"), "submodels")
    if "num_submodels" in doc:
        s.int(doc["num_submodels"], "num_submodels", len(subs), len(subs))
    for k, sm in enumerate(subs):
        key = f"submodels[{k}]"
        sm = s.obj(sm, key)
        s.int(s.has(sm, "index", key + "."), f"{key}.index", k, k)
        if sm.get("budget") is not None:
            s.num(sm["budget"], f"{key}.budget", 0.0, 1.0, lo_open=True)
        widths = s.obj(s.has(sm, "widths", key + "."), f"{key}.widths")
        if not widths:
            s.fail(f"{key}.widths", "must name at least one layer", widths)
        for name, w in widths.items():
            s.int(w, f"{key}.widths.{name}", 1, _MAX_DIM)
        s.int(s.has(sm, "macs", key + "."), f"{key}.macs", 1)
        if "arena_bytes" in sm:  # absent in older exports
            s.int(sm["arena_bytes"], f"{key}.arena_bytes", 0, doc["arena_bytes"])
        s.str(
            s.has(sm, "tflite", key + "."),
            f"{key}.tflite",
            _TFLITE_NAME,
            "a file name in export/ ending in .tflite",
        )
        for acc in ("float_accuracy", "int8_accuracy"):
            s.num(s.has(sm, acc, key + "."), f"{key}.{acc}", 0.0, 1.0)
    return doc


# -- the trained files an export was made from ---------------------------------

# What `reds export` reads of a trained run; a retraining that changes any of
# them leaves export/ stale.
TRAINED_FILES = (MODEL, SUBMODELS, BN_STATS)


def trained_sha256(run_dir: str | os.PathLike) -> str | None:
    """SHA-256 over the trained files of a run (name and bytes of each of
    TRAINED_FILES that exists); None when ``model.keras`` is absent (an export
    shared without its training)."""
    run = Path(run_dir)
    if not (run / MODEL).is_file():
        return None
    h = hashlib.sha256()
    for name in TRAINED_FILES:
        p = run / name
        if p.is_file():
            data = p.read_bytes()
            h.update(name.encode() + b"\0" + len(data).to_bytes(8, "little") + data)
    return h.hexdigest()


def check_export_current(run_dir: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """RunDirError when ``export/`` was made from other trained files than the
    run holds now (training re-ran after the export): its weights, accuracies
    and runtime would contradict ``submodels.json``. Exports that record no
    ``trained_sha256`` (older reds_tf) and runs without ``model.keras`` pass."""
    want = manifest.get("trained_sha256")
    got = trained_sha256(run_dir) if want is not None else None
    if want is not None and got is not None and got != want:
        raise RunDirError(
            f"{Path(run_dir) / EXPORT} was made from an earlier training of this run "
            f"({', '.join(TRAINED_FILES)} changed since): re-run `reds export {run_dir}`"
        )


# -- export/src: what `reds export` generated ----------------------------------


def sources_sha256(src_dir: str | os.PathLike) -> str:
    """SHA-256 over every entry of ``src_dir`` (relative path, kind and, for
    files, the bytes), in name order: any added, removed, renamed or changed
    file, link or folder changes it."""
    src = Path(src_dir)
    h = hashlib.sha256()
    for p in sorted(src.rglob("*"), key=lambda q: q.relative_to(src).as_posix()):
        rel = p.relative_to(src).as_posix().encode()
        if p.is_symlink():
            entry = b"link\0" + os.readlink(p).encode()
        elif p.is_dir():
            entry = b"dir\0"
        elif p.is_file():
            data = p.read_bytes()
            entry = b"file\0" + len(data).to_bytes(8, "little") + data
        else:
            entry = b"other\0"
        h.update(len(rel).to_bytes(4, "little") + rel + entry)
    return h.hexdigest()


def export_src(run_dir: str | os.PathLike) -> Path:
    """``RUN/export/src`` when the run directory exists and holds a generated
    runtime, else a one-line RunDirError saying what to run."""
    run = require_run_dir(run_dir)
    src = run / EXPORT_SRC
    if not (src / "reds_model.h").is_file():
        raise RunDirError(
            f"{run} has no generated runtime ({src}/reds_model.h is missing): "
            f"run `reds export {run}` first"
        )
    return src


def verify_sources(
    run_dir: str | os.PathLike, manifest: dict[str, Any] | None = None, *, trust: bool = False
) -> Path:
    """``export/src`` if it is exactly what ``reds export`` generated (its
    SHA-256 equals the manifest's ``sources_sha256``), else a RunDirError:
    compiling it runs its code on this machine, and a run directory can come
    from someone else. ``trust=True`` (``--trust``) skips the comparison."""
    run = Path(run_dir)
    src = export_src(run)
    manifest = load_manifest(run) if manifest is None else manifest
    check_export_current(run, manifest)
    if trust:
        return src
    want = manifest.get("sources_sha256")
    if want is None:
        raise RunDirError(
            f"{run / MANIFEST} records no sources_sha256 (an export by an older reds_tf), so "
            f"{src} cannot be checked before it is compiled: re-run `reds export {run}`, or "
            "pass --trust if you trust the code in it"
        )
    got = sources_sha256(src)
    if got != want:
        raise RunDirError(
            f"{src} is not what `reds export` generated (sha256 {got[:16]}..., manifest.json "
            f"says {want[:16]}...): refusing to compile code that was changed after the "
            f"export; re-run `reds export {run}`, or pass --trust if you trust the code in it"
        )
    return src


# -- report inputs: scratch.json, run.json -------------------------------------


def load_report_inputs(
    run_dir: str | os.PathLike, num_submodels: int, *, include_scratch: bool = True
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(``scratch.json``, ``run.json``), each ``None`` when absent; checked
    for the keys the report uses."""
    run = Path(run_dir)
    fix = "re-run `reds train`"
    scratch = meta = None
    path = run / SCRATCH
    if include_scratch and path.exists():
        s = _Schema(path, fix)
        scratch = s.obj(read_json(path, missing="", fix=fix), "")
        s.int(s.has(scratch, "epochs"), "epochs", 0, 1 << 30)
        acc = s.list(s.has(scratch, "accuracy"), "accuracy")
        if len(acc) != num_submodels:
            s.fail("accuracy", f"must hold {num_submodels} accuracies (one per submodel)", acc)
        for i, a in enumerate(acc):
            s.num(a, f"accuracy[{i}]", 0.0, 1.0)
    path = run / RUN_JSON
    if path.exists():
        s = _Schema(path, fix)
        meta = s.obj(read_json(path, missing="", fix=fix), "")
        stages = meta.get("stages") or {}
        for name, secs in s.obj(stages, "stages").items():
            s.num(secs, f"stages.{name}", 0.0, 1e12)
        if meta.get("base_accuracy") is not None:
            s.num(meta["base_accuracy"], "base_accuracy", 0.0, 1.0)
        if meta.get("base_model") is not None and not isinstance(meta["base_model"], str):
            s.fail("base_model", "must be a string", meta["base_model"])
    return scratch, meta


# -- --inputs .npy --------------------------------------------------------------


def load_inputs(
    path: str | os.PathLike,
    input_shape: Sequence[int],
    *,
    hint: str = "",
    max_bytes: int = MAX_INPUT_BYTES,
) -> np.ndarray:
    """An int8 ``.npy`` array shaped ``(N, *input_shape)``, its header checked
    (kind, dtype, shape, size against ``max_bytes``, file length) before any
    data is read. Every problem is one RedsError naming the file; ``hint``
    (how to quantise) is added to a dtype error."""
    path = Path(path)
    want = f"(N, {', '.join(str(int(d)) for d in input_shape)})"
    try:
        if not path.exists():
            raise RedsError(f"inputs file {path} does not exist")
        if not path.is_file():
            raise RedsError(f"inputs file {path} is not a file")
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(6)
            f.seek(0)
            if head.startswith(b"PK\x03\x04"):
                raise RedsError(
                    f"{path} is a .npz archive; --inputs takes one array saved with numpy.save "
                    "(.npy)"
                )
            try:
                version = npy.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = npy.read_array_header_1_0(f)
                else:
                    shape, fortran, dtype = npy.read_array_header_2_0(f)
            except (ValueError, SyntaxError, EOFError) as e:
                raise RedsError(
                    f"{path} is not a .npy array file ({str(e).splitlines()[0]}); save the "
                    "inputs with numpy.save"
                ) from None
            offset = f.tell()
    except OSError as e:
        raise RedsError(f"cannot read inputs file {path}: {e.strerror or e}") from e
    if dtype.hasobject:
        raise RedsError(f"{path} holds Python objects; --inputs must be an int8 array")
    if dtype != np.int8:
        raise RedsError(f"inputs must be int8{hint}, got {dtype} in {path}")
    if len(shape) < 1 or tuple(shape[1:]) != tuple(int(d) for d in input_shape):
        raise RedsError(f"inputs must have shape {want}, got {tuple(shape)} in {path}")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > max_bytes:
        raise RedsError(
            f"{path} declares {shape[0]:,} inputs ({nbytes:,} bytes), more than the "
            f"{max_bytes:,}-byte limit; split it into smaller files"
        )
    if size - offset < nbytes:
        raise RedsError(
            f"{path} is truncated: its header declares {nbytes:,} bytes of data, the file "
            f"holds {max(size - offset, 0):,}"
        )
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise RedsError(f"cannot read {path} as a .npy array ({e})") from e


# -- output locations -----------------------------------------------------------


PROBE_PREFIX = ".reds-write-probe."


def _unwritable(folder: Path) -> str | None:
    """``None`` if a file can be created in ``folder``, else why not. Creates
    and removes an empty probe file: permission bits alone do not tell (root
    passes them, but not a read-only mount or sysfs), and the error says why."""
    try:
        fd, probe = tempfile.mkstemp(prefix=PROBE_PREFIX, dir=folder)
    except OSError as e:
        return f"not writable ({e.strerror or e})"
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return None


def check_output_dir(path: str | os.PathLike, what: str, *, create: bool = True) -> Path:
    """Before any work: ``path`` can be written as a folder. It exists as a
    writable folder, or (``create=True``) its nearest existing parent is a
    writable folder so it can be made. OutputError otherwise."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise OutputError(f"cannot write {what} {path}: it exists and is not a folder")
        why = _unwritable(path)
        if why:
            raise OutputError(f"cannot write {what} {path}: the folder is {why}")
        return path
    if not create:
        raise OutputError(f"cannot write {what} {path}: the folder does not exist")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"cannot create {what} {path}: {parent} is not a folder")
    why = _unwritable(parent)
    if why:
        raise OutputError(f"cannot create {what} {path}: {parent} is {why}")
    return path


def check_export_inputs(
    run_dir: str | os.PathLike,
    *,
    qat: bool = False,
    qat_epochs: int = 2,
    limit: int | None = None,
) -> dict[str, Any]:
    """What ``reds export`` checks before any work, TensorFlow-free (the CLI
    calls it before importing :mod:`reds_tf.export`, which loads TensorFlow):
    the run directory and its ``submodels.json`` (returned), the options, and
    that the export and the report can be written."""
    run = Path(run_dir)
    if not run.is_dir():
        raise RunDirError(f"run directory {run} does not exist; run `reds train` first")
    if limit is not None and limit <= 0:
        raise RedsError(f"--limit must be positive, got {limit}")
    if qat and qat_epochs < 1:
        raise RedsError(f"--qat-epochs must be at least 1, got {qat_epochs}")
    sub = load_submodels(run)
    check_output_dir(run, "the export into run directory", create=False)
    check_output_dir(run / EXPORT, "the export folder")
    check_output_file(run / REPORT, "the report", text=True)
    return sub


def check_output_file(path: str | os.PathLike, what: str, *, text: bool = False) -> Path:
    """Before any work: ``path`` can be (re)written as a regular file. Its
    folder must already exist (nothing is created for it) and be writable; an
    existing ``path`` must be a regular file (not a folder or device) and, with
    ``text=True`` (a file the command edits), UTF-8 text."""
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        why = "does not exist" if not folder.exists() else "is not a folder"
        raise OutputError(f"cannot write {what} {path}: the folder {folder} {why}")
    why = _unwritable(folder)
    if why:
        raise OutputError(f"cannot write {what} {path}: the folder {folder} is {why}")
    if path.exists() or path.is_symlink():
        if not path.is_file():
            raise OutputError(f"cannot write {what} {path}: it exists and is not a regular file")
        if text:
            try:
                path.read_bytes().decode("utf-8")
            except UnicodeDecodeError as e:
                raise OutputError(
                    f"cannot update {what} {path}: it is not UTF-8 text ({e.reason} at byte "
                    f"{e.start}); move it away or delete it"
                ) from None
            except OSError as e:
                raise OutputError(f"cannot read {what} {path}: {e.strerror or e}") from None
    return path


@contextlib.contextmanager
def output_errors(what: str) -> Iterator[None]:
    """Turn an OSError raised while writing ``what`` into one OutputError line
    naming the path (exit 2) instead of a traceback."""
    try:
        yield
    except OutputError:
        raise
    except OSError as e:
        target = e.filename if e.filename is not None else what
        reason = e.strerror or str(e) or type(e).__name__
        extra = f" -> {e.filename2}" if e.filename2 is not None else ""
        verb = "cannot write" if e.errno in _WRITE_ERRNOS else "cannot access"
        raise OutputError(f"{verb} {target}{extra}: {reason}") from e


# errno values that only a write produces (others, e.g. EACCES, also come from reads)
_WRITE_ERRNOS = {
    errno.ENOSPC,
    errno.EROFS,
    errno.EDQUOT,
    errno.EFBIG,
    errno.EEXIST,
    errno.ENOTEMPTY,
}
