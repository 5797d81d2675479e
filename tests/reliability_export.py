"""Bad inputs and faults of ``reds export``, ``simulate``, ``bench`` and
``firmware``, as a table for RELIABILITY.md (collected by
tests/test_reliability.py; run on their own by tests/test_export_reliability.py).

Each case: ``area``, ``input`` (what is wrong), ``argv`` (the ``reds``
arguments; ``{tmp}`` is an empty temp folder, ``{run}`` a copy of an exported
run directory), optional ``setup`` (the name of a function below taking
``(tmp, run)`` that damages files first), the expected ``exit`` code and a
``message`` substring of stderr. Every case fails before any slow work (no
TensorFlow, no compiler, no QEMU), in well under 5 s.

Slower faults are covered by tests instead: killing ``reds export`` at every
stage (tests/test_export_faults.py), read-only mounts and a full disk
(tests/test_export_reliability.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def _edit_json(path: Path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def _sub(run: Path, change) -> None:
    _edit_json(run / "submodels.json", change)


def _manifest(run: Path, change) -> None:
    _edit_json(run / "export" / "manifest.json", change)


def _first_layer(run: Path) -> str:
    return json.loads((run / "submodels.json").read_text())["layers"][0]["name"]


def _input_shape(run: Path) -> list[int]:
    return json.loads((run / "export" / "manifest.json").read_text())["input_shape"]


# -- submodels.json ---------------------------------------------------------------


def width_not_integer(tmp: Path, run: Path) -> None:
    name = _first_layer(run)
    _sub(run, lambda d: d["submodels"][0]["widths"].__setitem__(name, 12.5))


def width_too_large(tmp: Path, run: Path) -> None:
    name = _first_layer(run)
    _sub(run, lambda d: d["submodels"][0]["widths"].__setitem__(name, 10**9))


def width_missing(tmp: Path, run: Path) -> None:
    name = _first_layer(run)
    _sub(run, lambda d: d["submodels"][1]["widths"].pop(name))


def widths_shrink(tmp: Path, run: Path) -> None:
    name = _first_layer(run)

    def change(d: dict[str, Any]) -> None:
        subs = d["submodels"]
        subs[1]["widths"][name] = subs[0]["widths"][name] - 1

    _sub(run, change)


def submodels_garbage(tmp: Path, run: Path) -> None:
    (run / "submodels.json").write_bytes(bytes(range(256)) * 4)


def submodels_layers_not_list(tmp: Path, run: Path) -> None:
    _sub(run, lambda d: d.__setitem__("layers", "fc1,fc2"))


def submodels_unknown_layer_type(tmp: Path, run: Path) -> None:
    _sub(run, lambda d: d["layers"][0].__setitem__("type", "lstm"))


def submodels_data_options_not_object(tmp: Path, run: Path) -> None:
    _sub(run, lambda d: d.__setitem__("data_options", [1, 2]))


def submodels_missing(tmp: Path, run: Path) -> None:
    (run / "submodels.json").unlink()


def submodels_nested_too_deep(tmp: Path, run: Path) -> None:
    (run / "submodels.json").write_text("[" * 100_000 + "]" * 100_000)


# -- export output locations ------------------------------------------------------


def export_is_a_file(tmp: Path, run: Path) -> None:
    import shutil

    shutil.rmtree(run / "export")
    (run / "export").write_text("not a folder\n")


def report_is_a_folder(tmp: Path, run: Path) -> None:
    (run / "report.md").unlink(missing_ok=True)
    (run / "report.md").mkdir()


def report_not_text(tmp: Path, run: Path) -> None:
    (run / "report.md").write_bytes(b"\xff\xfe\x00binary\x89PNG")


# -- manifest.json ----------------------------------------------------------------


def manifest_garbage(tmp: Path, run: Path) -> None:
    (run / "export" / "manifest.json").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))


def manifest_scale_is_text(tmp: Path, run: Path) -> None:
    _manifest(run, lambda m: m.__setitem__("input_scale", "0.0039"))


def manifest_scale_nan(tmp: Path, run: Path) -> None:
    path = run / "export" / "manifest.json"
    m = json.loads(path.read_text())
    m["input_scale"] = float("nan")
    path.write_text(json.dumps(m))  # NaN: accepted by Python's json, not a valid number


def manifest_zero_point_out_of_range(tmp: Path, run: Path) -> None:
    _manifest(run, lambda m: m.__setitem__("input_zero_point", 1000))


def manifest_weight_bytes_text(tmp: Path, run: Path) -> None:
    _manifest(run, lambda m: m.__setitem__("weight_bytes", "lots"))


def manifest_macs_zero(tmp: Path, run: Path) -> None:
    _manifest(run, lambda m: m["submodels"][0].__setitem__("macs", 0))


def manifest_tflite_path(tmp: Path, run: Path) -> None:
    _manifest(run, lambda m: m["submodels"][0].__setitem__("tflite", "../../../etc/passwd"))


def manifest_submodels_not_list(tmp: Path, run: Path) -> None:
    _manifest(run, lambda m: m.__setitem__("submodels", {"0": {}}))


def manifest_count_mismatch(tmp: Path, run: Path) -> None:
    _manifest(run, lambda m: m.__setitem__("num_submodels", 99))


def manifest_is_a_list(tmp: Path, run: Path) -> None:
    (run / "export" / "manifest.json").write_text("[1, 2, 3]\n")


def manifest_no_sources_hash(tmp: Path, run: Path) -> None:
    _manifest(run, lambda m: m.pop("sources_sha256"))


def no_export(tmp: Path, run: Path) -> None:
    import shutil

    shutil.rmtree(run / "export")


# -- export/src ------------------------------------------------------------------


def sources_edited(tmp: Path, run: Path) -> None:
    with open(run / "export" / "src" / "reds_model.cpp", "a") as f:
        f.write("\n__attribute__((constructor)) static void hi() { __builtin_trap(); }\n")


def sources_file_added(tmp: Path, run: Path) -> None:
    (run / "export" / "src" / "extra.cpp").write_text("int reds_extra = 1;\n")


# -- --inputs / --output --------------------------------------------------------------


def inputs_npz(tmp: Path, run: Path) -> None:
    x = np.zeros((2, *_input_shape(run)), np.int8)
    np.savez(tmp / "in.npz", x=x)


def inputs_text(tmp: Path, run: Path) -> None:
    (tmp / "in.npy").write_text("1 2 3\n4 5 6\n")


def inputs_huge_header(tmp: Path, run: Path) -> None:
    """A valid .npy header that declares 10^12 inputs, followed by no data."""
    from numpy.lib import format as npy

    header = {"descr": "|i1", "fortran_order": False, "shape": (10**12, *_input_shape(run))}
    with open(tmp / "in.npy", "wb") as f:
        npy.write_array_header_1_0(f, header)


def inputs_truncated(tmp: Path, run: Path) -> None:
    np.save(tmp / "in.npy", np.zeros((100, *_input_shape(run)), np.int8))
    data = (tmp / "in.npy").read_bytes()
    (tmp / "in.npy").write_bytes(data[: len(data) // 2])


def inputs_float(tmp: Path, run: Path) -> None:
    np.save(tmp / "in.npy", np.zeros((2, *_input_shape(run)), np.float32))


def inputs_wrong_shape(tmp: Path, run: Path) -> None:
    np.save(tmp / "in.npy", np.zeros((2, 3, 3), np.int8))


def inputs_objects(tmp: Path, run: Path) -> None:
    np.save(tmp / "in.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)


def inputs_ok(tmp: Path, run: Path) -> None:
    np.save(tmp / "in.npy", np.zeros((3, *_input_shape(run)), np.int8))


def bench_dir_is_a_file(tmp: Path, run: Path) -> None:
    (run / ".bench").write_text("not a folder\n")


def markdown_not_text(tmp: Path, run: Path) -> None:
    (tmp / "B.md").write_bytes(b"# Bench\n\xff\xfe\xfa binary\n")


def firmware_dir_is_a_file(tmp: Path, run: Path) -> None:
    import shutil

    if (run / "firmware").is_dir():
        shutil.rmtree(run / "firmware")
    (run / "firmware").write_text("not a folder\n")


E, S, B, F = "export", "simulate", "bench", "firmware"
SIM = ["simulate", "{run}", "--submodel", "0"]
SIM_IN = [*SIM, "--inputs", "{tmp}/in.npy"]
CORRUPT = "is corrupt"
NOT_GENERATED = "is not what `reds export` generated"

CASES: list[dict[str, Any]] = [
    # reds export: submodels.json (one schema: reds_tf/rundir.py)
    {"area": E, "input": "submodels.json: a width of 12.5 (not an integer)",
     "argv": ["export", "{run}"], "setup": "width_not_integer", "exit": 2,
     "message": "' must be an integer in 1.."},
    {"area": E, "input": "submodels.json: a width above the layer's units",
     "argv": ["export", "{run}"], "setup": "width_too_large", "exit": 2,
     "message": ", got 1000000000; re-run `reds train`"},
    {"area": E, "input": "submodels.json: a submodel without a width for a layer",
     "argv": ["export", "{run}"], "setup": "width_missing", "exit": 2,
     "message": "' is missing; re-run `reds train`"},
    {"area": E, "input": "submodels.json: widths shrinking from one submodel to the next",
     "argv": ["export", "{run}"], "setup": "widths_shrink", "exit": 2,
     "message": "must not be smaller than the previous submodel's"},
    {"area": E, "input": "submodels.json: binary garbage",
     "argv": ["export", "{run}"], "setup": "submodels_garbage", "exit": 2,
     "message": f"submodels.json {CORRUPT}"},
    {"area": E, "input": "submodels.json: 100,000 nested brackets",
     "argv": ["export", "{run}"], "setup": "submodels_nested_too_deep", "exit": 2,
     "message": "is corrupt (nested too deeply)"},
    {"area": E, "input": "submodels.json: 'layers' a string",
     "argv": ["export", "{run}"], "setup": "submodels_layers_not_list", "exit": 2,
     "message": "'layers' must be a non-empty list"},
    {"area": E, "input": "submodels.json: layer type 'lstm'",
     "argv": ["export", "{run}"], "setup": "submodels_unknown_layer_type", "exit": 2,
     "message": "'layers[0].type' must be one of dense, conv, depthwise"},
    {"area": E, "input": "submodels.json: data_options a list",
     "argv": ["export", "{run}"], "setup": "submodels_data_options_not_object", "exit": 2,
     "message": "'data_options' must be a JSON object"},
    {"area": E, "input": "submodels.json missing",
     "argv": ["export", "{run}"], "setup": "submodels_missing", "exit": 2,
     "message": "submodels.json is missing; run `reds train` first"},
    {"area": E, "input": "run directory missing",
     "argv": ["export", "{tmp}/nope"], "exit": 2, "message": "does not exist"},
    {"area": E, "input": "--limit 0",
     "argv": ["export", "{run}", "--limit", "0"], "exit": 2,
     "message": "--limit must be positive"},
    {"area": E, "input": "output location: export/ is a file",
     "argv": ["export", "{run}"], "setup": "export_is_a_file", "exit": 2,
     "message": "export: it exists and is not a folder"},
    {"area": E, "input": "output location: report.md is a folder",
     "argv": ["export", "{run}"], "setup": "report_is_a_folder", "exit": 2,
     "message": "report.md: it exists and is not a regular file"},
    {"area": E, "input": "report.md is binary, not text",
     "argv": ["export", "{run}"], "setup": "report_not_text", "exit": 2,
     "message": "is not UTF-8 text"},
    # reds simulate: manifest.json
    {"area": S, "input": "manifest.json: binary garbage",
     "argv": SIM, "setup": "manifest_garbage", "exit": 2,
     "message": f"manifest.json {CORRUPT}"},
    {"area": S, "input": "manifest.json: a JSON list",
     "argv": SIM, "setup": "manifest_is_a_list", "exit": 2,
     "message": "manifest.json: must be a JSON object, got 'list'"},
    {"area": S, "input": "manifest.json: input_scale a string",
     "argv": SIM, "setup": "manifest_scale_is_text", "exit": 2,
     "message": "'input_scale' must be a number"},
    {"area": S, "input": "manifest.json: input_scale NaN",
     "argv": SIM, "setup": "manifest_scale_nan", "exit": 2,
     "message": "'input_scale' must be a number"},
    {"area": S, "input": "manifest.json: input_zero_point 1000",
     "argv": SIM, "setup": "manifest_zero_point_out_of_range", "exit": 2,
     "message": "'input_zero_point' must be an integer in -128..127"},
    {"area": S, "input": "manifest.json: a .tflite name with ../",
     "argv": SIM, "setup": "manifest_tflite_path", "exit": 2,
     "message": "must be a file name in export/ ending in .tflite"},
    {"area": S, "input": "manifest.json: submodels an object",
     "argv": SIM, "setup": "manifest_submodels_not_list", "exit": 2,
     "message": "'submodels' must be a non-empty list"},
    {"area": S, "input": "manifest.json: num_submodels 99",
     "argv": SIM, "setup": "manifest_count_mismatch", "exit": 2,
     "message": "'num_submodels' must be an integer in"},
    {"area": S, "input": "no export (manifest.json missing)",
     "argv": SIM, "setup": "no_export", "exit": 2,
     "message": "manifest.json is missing; run `reds export"},
    {"area": S, "input": "--submodel 99",
     "argv": ["simulate", "{run}", "--submodel", "99"], "exit": 2,
     "message": "--submodel must be in 0.."},
    # reds simulate: export/src is compiled and loaded into the process
    {"area": S, "input": "export/src edited after the export",
     "argv": SIM, "setup": "sources_edited", "exit": 2, "message": NOT_GENERATED},
    {"area": S, "input": "a file added to export/src",
     "argv": SIM, "setup": "sources_file_added", "exit": 2, "message": NOT_GENERATED},
    {"area": S, "input": "manifest.json without sources_sha256 (older export)",
     "argv": SIM, "setup": "manifest_no_sources_hash", "exit": 2,
     "message": "records no sources_sha256"},
    # reds simulate: --inputs / --output
    {"area": S, "input": "--inputs: a .npz archive",
     "argv": [*SIM, "--inputs", "{tmp}/in.npz"], "setup": "inputs_npz", "exit": 2,
     "message": "is a .npz archive"},
    {"area": S, "input": "--inputs: a text file",
     "argv": SIM_IN, "setup": "inputs_text", "exit": 2,
     "message": "is not a .npy array file"},
    {"area": S, "input": "--inputs: a .npy header declaring 10^12 inputs",
     "argv": SIM_IN, "setup": "inputs_huge_header", "exit": 2,
     "message": "declares 1,000,000,000,000 inputs"},
    {"area": S, "input": "--inputs: a truncated .npy",
     "argv": SIM_IN, "setup": "inputs_truncated", "exit": 2, "message": "is truncated"},
    {"area": S, "input": "--inputs: float32 instead of int8",
     "argv": SIM_IN, "setup": "inputs_float", "exit": 2,
     "message": "inputs must be int8 (quantised with scale"},
    {"area": S, "input": "--inputs: the wrong shape",
     "argv": SIM_IN, "setup": "inputs_wrong_shape", "exit": 2,
     "message": "inputs must have shape (N, "},
    {"area": S, "input": "--inputs: pickled Python objects",
     "argv": SIM_IN, "setup": "inputs_objects", "exit": 2, "message": "holds Python objects"},
    {"area": S, "input": "--inputs: no such file",
     "argv": SIM_IN, "exit": 2, "message": "does not exist"},
    {"area": S, "input": "--output in a folder that does not exist",
     "argv": [*SIM_IN, "--output", "{tmp}/missing/dir/o.npy"], "setup": "inputs_ok",
     "exit": 2, "message": "missing/dir does not exist"},
    {"area": S, "input": "--output is a folder",
     "argv": [*SIM_IN, "--output", "{tmp}"], "setup": "inputs_ok", "exit": 2,
     "message": "it exists and is not a regular file"},
    {"area": S, "input": "--output in a read-only location (/sys)",
     "argv": [*SIM_IN, "--output", "/sys/o.npy"], "setup": "inputs_ok", "exit": 2,
     "message": "the folder /sys is not writable"},
    {"area": S, "input": "--output without --inputs",
     "argv": [*SIM, "--output", "{tmp}/o.npy"], "exit": 2,
     "message": "--output needs --inputs"},
    # reds bench (checked before any build or QEMU run)
    {"area": B, "input": "manifest.json: weight_bytes a string",
     "argv": ["bench", "{run}"], "setup": "manifest_weight_bytes_text", "exit": 2,
     "message": "'weight_bytes' must be an integer"},
    {"area": B, "input": "manifest.json: a submodel with 0 MACs",
     "argv": ["bench", "{run}"], "setup": "manifest_macs_zero", "exit": 2,
     "message": "'submodels[0].macs' must be an integer in 1.."},
    {"area": B, "input": "manifest.json: binary garbage",
     "argv": ["bench", "{run}"], "setup": "manifest_garbage", "exit": 2,
     "message": f"manifest.json {CORRUPT}"},
    {"area": B, "input": "submodels.json: binary garbage (was read as 'dense')",
     "argv": ["bench", "{run}"], "setup": "submodels_garbage", "exit": 2,
     "message": f"submodels.json {CORRUPT}"},
    {"area": B, "input": "export/src edited after the export",
     "argv": ["bench", "{run}"], "setup": "sources_edited", "exit": 2,
     "message": NOT_GENERATED},
    {"area": B, "input": "--out in a folder that does not exist",
     "argv": ["bench", "{run}", "--out", "{tmp}/missing/bench.json"], "exit": 2,
     "message": "missing does not exist"},
    {"area": B, "input": "--out in a read-only location (/sys)",
     "argv": ["bench", "{run}", "--out", "/sys/bench.json"], "exit": 2,
     "message": "the folder /sys is not writable"},
    {"area": B, "input": "--markdown file is binary, not text",
     "argv": ["bench", "{run}", "--markdown", "{tmp}/B.md"], "setup": "markdown_not_text",
     "exit": 2, "message": "is not UTF-8 text"},
    {"area": B, "input": "output location: RUN/.bench is a file",
     "argv": ["bench", "{run}"], "setup": "bench_dir_is_a_file", "exit": 2,
     "message": ".bench: it exists and is not a folder"},
    # reds firmware
    {"area": F, "input": "export/src edited after the export",
     "argv": ["firmware", "{run}", "--board", "native"], "setup": "sources_edited",
     "exit": 2, "message": NOT_GENERATED},
    {"area": F, "input": "manifest.json without sources_sha256 (older export)",
     "argv": ["firmware", "{run}", "--board", "native"], "setup": "manifest_no_sources_hash",
     "exit": 2, "message": "records no sources_sha256"},
    {"area": F, "input": "manifest.json: binary garbage",
     "argv": ["firmware", "{run}", "--board", "nano33ble"], "setup": "manifest_garbage",
     "exit": 2, "message": f"manifest.json {CORRUPT}"},
    {"area": F, "input": "output location: RUN/firmware is a file",
     "argv": ["firmware", "{run}", "--board", "native"], "setup": "firmware_dir_is_a_file",
     "exit": 2, "message": "firmware: it exists and is not a folder"},
]  # fmt: skip

T = "tests/test_export_reliability.py::"
T_FAULTS = "tests/test_export_faults.py::test_export_killed_at_every_stage_then_rerun"
FAULTS: list[dict[str, str]] = [
    {"area": E, "input": "training re-ran after the export (model.keras, submodels.json or "
     "bn_stats.npz changed)",
     "outcome": "exit 2 in simulate, bench, firmware (--trust too) and monitor --demo: "
     "export/ was made from an earlier training of this run; re-run reds export",
     "test": T + "test_an_export_older_than_the_training_is_refused"},
    {"area": E, "input": "reds export killed (SIGKILL) at its start, after the int8 "
     "conversion, mid-way through the submodels and before the rename, no export yet",
     "outcome": "no export/ folder; the next export removes the dead one's .export.*.tmp "
     "folder (says so) and writes a whole export", "test": T_FAULTS},
    {"area": E, "input": "reds export killed mid-way with a previous export in place, and "
     "after the rename before report.md is updated",
     "outcome": "the previous export stays whole; manifest accuracies == the simulator on "
     "the same images; nothing left over after the next export", "test": T_FAULTS},
    {"area": E, "input": "killed between the two renames of the export folder "
     "(export/ moved to .export.old, new one not yet in place)",
     "outcome": "the next export puts the old export back if it is whole (manifest, "
     ".tflite files, sources hash), else removes it",
     "test": T + "test_killed_between_the_two_renames_restores_the_previous_export"},
    {"area": E, "input": "stale .export.*.tmp, .export.old and .report.md.*.tmp of "
     "killed exports",
     "outcome": "removed by the next export (run directory locked, so none is in use); "
     "other files kept", "test": T + "test_export_removes_what_killed_exports_left"},
    {"area": E, "input": "a second reds export of the same run while one is running",
     "outcome": "exit 2: another reds command (an export?) is writing RUN; the running "
     "export's temp folder is untouched",
     "test": T + "test_a_second_export_of_the_same_run_is_refused"},
    {"area": E, "input": "disk full while the export writes its files",
     "outcome": "exit 2: cannot write .../manifest.json: No space left on device; no "
     "partial export, the previous one kept",
     "test": T + "test_disk_full_in_the_middle_of_an_export"},
    {"area": E, "input": "run directory, output folders on a read-only mount (export, "
     "bench, firmware, simulate --output)",
     "outcome": "exit 2 before any work: ... is not writable (Read-only file system); "
     "nothing written", "test": T + "test_read_only_locations_are_one_line_before_any_work"},
    {"area": S, "input": "disk full while writing --output (a 4 KB tmpfs)",
     "outcome": "exit 2: cannot write OUT: No space left on device; no temp file left",
     "test": T + "test_full_disk_while_writing_is_one_line_and_leaves_nothing"},
    {"area": S, "input": "export/src changed, then --trust",
     "outcome": "refused without --trust; with it the changed sources are compiled",
     "test": T + "test_changed_sources_are_refused_unless_trusted"},
]  # fmt: skip
