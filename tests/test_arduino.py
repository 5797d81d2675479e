"""``reds arduino``: the Arduino library zip (1.5 format) of an exported run.

The run is the fixed tiny model of ``tests/data/tiny`` rendered by the code
generator into ``RUN/export/src`` (no training, no TFLite conversion). The
unpacked library's ``src/`` and example are compiled on the host against the
``Arduino.h`` stub and run, and, when the Arm compiler and the board's flag
file are there, compiled with the Nano 33 BLE's flags.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from nano_build import defined_functions, nano_compile, needs_arm
from test_firmware_boards import HARNESS

from reds_tf import rundir
from reds_tf.arduino import ARCHITECTURES, BOARD_LAYER, FIRMWARE_DIR, library_name
from reds_tf.cli import main

TINY = Path(__file__).parent / "data" / "tiny"
STUB = FIRMWARE_DIR / "boards" / "nano33ble" / "test_stub"
LIB = "REDS_tiny"
INO = f"{LIB}/examples/RedsSerial/RedsSerial.ino"
REQUIRED_PROPERTIES = {
    "name", "version", "author", "maintainer", "sentence", "paragraph", "category", "url",
    "architectures",
}  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory whose ``export/src`` is the generated runtime of the tiny model."""
    from reds_tf.codegen import plan as P
    from reds_tf.codegen.render import render_sources

    run = tmp_path_factory.mktemp("arduino") / "tiny"
    src = run / "export" / "src"
    src.mkdir(parents=True)
    sub = json.loads((TINY / "submodels.json").read_text())
    plan = P.build_plan((TINY / "model.tflite").read_bytes(), sub)
    for name, text in render_sources(plan).items():
        (src / name).write_text(text)
    # the manifest `reds export` would write (reds arduino checks the sources' hash)
    manifest = {
        "name": plan.name,
        "input_shape": list(plan.input_shape),
        "num_classes": plan.num_classes,
        "input_scale": plan.input_scale,
        "input_zero_point": plan.input_zero_point,
        "output_scale": plan.output_scale,
        "output_zero_point": plan.output_zero_point,
        "weight_bytes": plan.weight_bytes,
        "arena_bytes": plan.arena_bytes,
        "sources_sha256": rundir.sources_sha256(src),
        "submodels": [
            {"index": k, "widths": s["widths"], "macs": plan.macs(k),
             "tflite": f"submodel_{k}.tflite", "float_accuracy": 0.5, "int8_accuracy": 0.5}
            for k, s in enumerate(sub["submodels"])
        ],
    }  # fmt: skip
    rundir.check_manifest(manifest)
    (run / "export" / "manifest.json").write_text(json.dumps(manifest))
    return run


def test_changed_sources_are_not_packaged_unless_trusted(
    tiny_run: Path, tmp_path: Path, capsys
) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    with open(run / "export" / "src" / "reds_model.cpp", "a") as f:
        f.write("/* changed */\n")
    assert main(["arduino", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not what `reds export` generated" in err and len(err.splitlines()) == 1
    assert not (run / "arduino").exists()
    assert main(["arduino", str(run), "--trust"]) == 0


def _tiny_fingerprint() -> str:
    from reds_tf.codegen import plan as P

    sub = json.loads((TINY / "submodels.json").read_text())
    return P.build_plan((TINY / "model.tflite").read_bytes(), sub).fingerprint


@pytest.fixture(scope="module")
def library_zip(tiny_run: Path) -> Path:
    assert main(["arduino", str(tiny_run)]) == 0
    path = tiny_run / "arduino" / f"{LIB}.zip"
    assert path.is_file()
    return path


def _properties(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def _unpack(zip_path: Path, dest: Path) -> Path:
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(dest)
    return dest / LIB


def test_library_layout_properties_and_sources(library_zip: Path, tiny_run: Path) -> None:
    with zipfile.ZipFile(library_zip) as zf:
        names = {n for n in zf.namelist() if not n.endswith("/")}
        files = {n: zf.read(n) for n in names}
    assert {n.split("/")[0] for n in names} == {LIB}  # one top folder, named after the library
    export_src = tiny_run / "export" / "src"
    runtime = {p.name for p in export_src.iterdir()}
    core = {p.name for p in (FIRMWARE_DIR / "src").iterdir() if p.suffix in (".h", ".cpp")}
    assert {"reds_model.h", "fully_connected_dsp.cpp", "reds_fw.h", "reds_fw.cpp"} <= runtime | core
    expected = {f"{LIB}/src/{n}" for n in runtime | core | {f"{LIB}.h"}}
    expected |= {f"{LIB}/library.properties", f"{LIB}/keywords.txt", INO}
    assert names == expected
    # every source is the run's (or the checkout's) file, byte for byte
    for n in runtime:
        assert files[f"{LIB}/src/{n}"] == (export_src / n).read_bytes()
    for n in core:
        assert files[f"{LIB}/src/{n}"] == (FIRMWARE_DIR / "src" / n).read_bytes()

    props = _properties(files[f"{LIB}/library.properties"].decode())
    assert REQUIRED_PROPERTIES <= set(props)
    assert all(props[k] for k in REQUIRED_PROPERTIES)
    assert props["name"] == LIB
    assert re.fullmatch(r"\d+\.\d+\.\d+", props["version"])
    assert props["category"] == "Data Processing"
    archs = props["architectures"].split(",")
    assert archs[0] == "mbed_nano" and archs == list(ARCHITECTURES)
    assert "*" not in archs and "avr" not in archs  # 16-bit int, const data in RAM
    assert props["includes"] == f"{LIB}.h"
    header = files[f"{LIB}/src/{LIB}.h"].decode()
    assert '#include "reds_model.h"' in header and '#include "reds_fw.h"' in header

    # the example is the nano33ble board layer, behind a comment and the library's include
    ino = files[INO].decode()
    board = BOARD_LAYER.read_text()
    assert ino.endswith(board)
    prefix = ino[: -len(board)]
    assert f"#include <{LIB}.h>" in prefix
    assert re.sub(r"/\*.*?\*/", "", prefix, flags=re.DOTALL).split() == ["#include", f"<{LIB}.h>"]

    keywords = {}
    for line in files[f"{LIB}/keywords.txt"].decode().splitlines():
        if line and not line.startswith("#"):
            name, kind = line.split("\t")
            keywords[name] = kind
    assert set(keywords.values()) <= {"KEYWORD1", "KEYWORD2", "LITERAL1"}
    for fn in ("reds_set_submodel", "reds_invoke", "reds_get_submodel", "reds_fw_init"):
        assert keywords[fn] == "KEYWORD2"
    for macro in ("REDS_NUM_SUBMODELS", "REDS_INPUT_SIZE", "REDS_MODEL_NAME"):
        assert keywords[macro] == "LITERAL1"
    assert keywords[LIB] == "KEYWORD1"
    assert "REDS_MODEL_H" not in keywords and "REDS_FW_H" not in keywords  # include guards


def test_default_output_is_printed_and_zip_is_reproducible(
    library_zip: Path, tiny_run: Path, tmp_path: Path, capsys
) -> None:
    capsys.readouterr()
    out = tmp_path / "nested" / "lib.zip"
    assert main(["arduino", str(tiny_run), "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.read_bytes() == library_zip.read_bytes()  # fixed timestamps: same bytes
    # -o naming a folder puts <LibName>.zip into it
    assert main(["arduino", str(tiny_run), "--output", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / f"{LIB}.zip")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{LIB}.zip", "nested"]


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_unpacked_library_compiles_and_runs_on_host(library_zip: Path, tmp_path: Path) -> None:
    """The library's src/ + example sketch, -std=gnu++14 -Wall -Wextra -Werror,
    against the Arduino.h stub; then driven through setup()/loop()."""
    lib = _unpack(library_zip, tmp_path)
    harness = tmp_path / "harness.cpp"
    harness.write_text(HARNESS)
    exe = tmp_path / "sketch"
    cmd = [
        "g++", "-std=gnu++14", "-funsigned-char", "-Wall", "-Wextra", "-Werror", "-O1",
        "-I", str(STUB), "-I", str(lib / "src"),
        "-x", "c++", str(lib / "examples" / "RedsSerial" / "RedsSerial.ino"), "-x", "none",
        *map(str, sorted((lib / "src").glob("*.cpp"))), str(harness), "-o", str(exe),
    ]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = subprocess.run(
        [str(exe)], input=b"info\nuse 0\n", capture_output=True, timeout=30
    ).stdout.decode()
    lines = out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith('{"ok":true,"model":"tiny","submodels":3,"active":2')
    fingerprint = _tiny_fingerprint()
    assert f',"fingerprint":"{fingerprint}","stack_bytes":-1,"stack_size_bytes":-1,' in lines[0]
    assert re.search(r',"serial_buffer_bytes":\d+}$', lines[0])
    assert lines[1].startswith('{"ok":true,"active":0,"switch_us":')


@needs_arm
def test_unpacked_library_compiles_with_nano33ble_flags(library_zip: Path, tmp_path: Path) -> None:
    """The Arduino compile check on the unpacked library: every source of src/
    and the example, the Nano's flags, -Werror, a failing <arm_acle.h>; the
    DSP kernel is compiled in."""
    lib = _unpack(library_zip, tmp_path)
    sources = [lib / "examples" / "RedsSerial" / "RedsSerial.ino"]
    sources += sorted((lib / "src").glob("*.cpp"))
    objs = nano_compile(sources, [STUB, lib / "src"], tmp_path / "obj")
    assert "reds_fc_dsp" in defined_functions(objs["fully_connected_dsp.cpp"])
    assert {"setup", "loop"} <= defined_functions(objs["RedsSerial.ino"])


def test_library_name() -> None:
    assert library_name("fmnist_dnn") == "REDS_fmnist_dnn"
    assert library_name("kws-dscnn s.v2") == "REDS_kws_dscnn_s_v2"
    assert library_name("") == "REDS_model"


def test_library_header_never_clashes_with_a_source(tiny_run: Path, tmp_path: Path) -> None:
    """A model named "fw" would give REDS_fw.h next to reds_fw.h: the same file on
    case-insensitive file systems, so the library takes another name."""
    run = tmp_path / "fw"
    shutil.copytree(tiny_run / "export", run / "export")
    header = run / "export" / "src" / "reds_model.h"
    header.write_text(header.read_text().replace('"tiny"', '"fw"'))
    assert main(["arduino", str(run), "--trust"]) == 0  # the header was edited here
    with zipfile.ZipFile(run / "arduino" / "REDS_fw_lib.zip") as zf:
        props = _properties(zf.read("REDS_fw_lib/library.properties").decode())
        assert "REDS_fw_lib/src/REDS_fw_lib.h" in zf.namelist()
    assert props["name"] == "REDS_fw_lib" and props["includes"] == "REDS_fw_lib.h"


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("reds arduino: error: "), err
    return err


def test_missing_run_dir(tmp_path: Path, capsys) -> None:
    assert main(["arduino", str(tmp_path / "nope")]) == 2
    assert "does not exist" in _one_line_error(capsys)
    assert not list(tmp_path.iterdir())


def test_run_without_export(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "submodels.json").write_text("{}")
    assert main(["arduino", str(run)]) == 2
    assert f"reds export {run}" in _one_line_error(capsys)
    assert sorted(p.name for p in run.iterdir()) == ["submodels.json"]


def test_unwritable_output_leaves_nothing(tiny_run: Path, tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["arduino", str(tiny_run), "-o", str(blocker / "lib.zip")]) == 2
    err = _one_line_error(capsys)
    assert "cannot write the Arduino library" in err and "is not a folder" in err
    assert blocker.read_text() == "not a folder"


def test_failed_write_leaves_no_partial_zip(
    tiny_run: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    previous = out_dir / "lib.zip"
    previous.write_bytes(b"previous")

    def no_space(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_space)
    assert main(["arduino", str(tiny_run), "-o", str(previous)]) == 2
    monkeypatch.undo()
    assert "No space left on device" in _one_line_error(capsys)
    assert [p.name for p in out_dir.iterdir()] == ["lib.zip"]  # no temp file left
    assert previous.read_bytes() == b"previous"  # the old zip is kept
