"""An Arduino library from an exported run (``reds arduino``).

The library is in the Arduino 1.5 format and installs with the Arduino IDE's
"Sketch > Include Library > Add .ZIP Library" or ``arduino-cli lib install
--zip-path``::

    REDS_<model>/
        library.properties
        keywords.txt
        src/REDS_<model>.h          includes reds_model.h and reds_fw.h
        src/...                     the generated runtime (RUN_DIR/export/src, every file)
                                    and the portable firmware core (firmware/src)
        examples/RedsSerial/RedsSerial.ino   the nano33ble board layer as a sketch

Nothing here is a copy: the runtime comes from the run, the core and the
sketch from ``firmware/`` at build time, so the library and ``reds firmware
--board nano33ble`` build the same code. The zip is written atomically.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from pathlib import Path

from reds_tf import resources, rundir
from reds_tf.errors import FirmwareError
from reds_tf.fsutil import write_bytes_atomic

FIRMWARE_DIR = resources.FIRMWARE_DIR
BOARD_LAYER = FIRMWARE_DIR / "boards" / "nano33ble" / "board.cpp"
EXAMPLE_NAME = "RedsSerial"
CATEGORY = "Data Processing"
URL = "https://arxiv.org/abs/2311.13349"  # the REDS paper; the project has no public home
AUTHOR = "reds_tf"
# Where the library applies. The generated runtime and the firmware core are
# portable C++11 (fixed-width integer types, no heap, no printf, no <arm_acle.h>);
# the Cortex-M4 DSP kernel is compiled only where the compiler defines
# __ARM_FEATURE_DSP (M4/M7/M33) and the reference kernel everywhere else, and
# the sketch uses only Serial and micros(). So the code applies to every 32-bit
# Arduino core whose const data stays in flash: the Arduino mbed cores
# (mbed_nano is the Nano 33 BLE, the board this project checks the build for;
# "mbed" is the same core's name before its 2.0 split), SAMD21/SAMD51, SAM
# (Due), Adafruit nRF52, RP2040/RP2350, Renesas (UNO R4, Portenta C33),
# STM32duino and ESP32. Not "*": the AVR cores (Uno, Mega, Nano Every) have a
# 16-bit int, keep const arrays in 2-8 KB of RAM unless marked PROGMEM and have
# far too little memory for a model, so the IDE should flag them as incompatible.
ARCHITECTURES = (
    "mbed_nano",
    "mbed_nicla",
    "mbed_edge",
    "mbed_portenta",
    "mbed_giga",
    "mbed_opta",
    "mbed_rp2040",
    "mbed",
    "samd",
    "sam",
    "nrf52",
    "rp2040",
    "renesas_uno",
    "renesas_portenta",
    "stm32",
    "esp32",
)


def package_version() -> str:
    """``reds_tf.__version__`` if defined, else the installed package's version."""
    import reds_tf

    version = getattr(reds_tf, "__version__", None)
    if version:
        return str(version)
    from importlib import metadata

    try:
        return metadata.version("reds_tf")
    except metadata.PackageNotFoundError:  # pragma: no cover - a source checkout
        return "0.0.0"


def _defines(header: str) -> dict[str, str]:
    """``#define NAME VALUE`` lines of a header (value without a trailing comment)."""
    out = {}
    for m in re.finditer(r"^#define\s+(\w+)[ \t]+(.+?)\s*(?:/\*.*)?$", header, re.MULTILINE):
        out[m.group(1)] = m.group(2).strip()
    return out


def library_name(model_name: str) -> str:
    """``REDS_<model>`` with every character outside ``[A-Za-z0-9_]`` turned into
    ``_``: a valid Arduino library name and a portable header/folder name."""
    safe = re.sub(r"[^A-Za-z0-9_]", "_", model_name).strip("_") or "model"
    return f"REDS_{safe}"


def _files(folder: Path, patterns: tuple[str, ...] = ("*",)) -> list[tuple[str, Path]]:
    """(relative path, file) under ``folder``, sorted, without hidden files."""
    found = {}
    for pattern in patterns:
        for p in folder.rglob(pattern):
            rel = p.relative_to(folder)
            if p.is_file() and not any(part.startswith(".") for part in rel.parts):
                found[rel.as_posix()] = p
    return sorted(found.items())


def _model_name(header: str, run_dir: Path) -> str:
    name = _defines(header).get("REDS_MODEL_NAME", "")
    if len(name) >= 2 and name[0] == name[-1] == '"':
        return name[1:-1]
    return run_dir.name


def keywords(headers: list[str], lib_name: str) -> str:
    """``keywords.txt``: the library header's name (KEYWORD1), every ``reds_*``
    function or array declared in the public headers (KEYWORD2) and every
    ``REDS_*`` macro with a value (LITERAL1; include guards have none)."""
    functions: dict[str, None] = {}
    literals: dict[str, None] = {}
    for text in headers:
        code = re.sub(r"/\*.*?\*/", " ", text, flags=re.DOTALL)
        for m in re.finditer(r"\b(reds_\w+)\s*[(\[]", code):
            functions[m.group(1)] = None
        for name in _defines(code):
            if name.startswith("REDS_"):
                literals[name] = None
    lines = [
        f"# Syntax colouring for {lib_name} (Arduino IDE); generated by `reds arduino`.",
        "",
        "# Datatypes and classes (KEYWORD1)",
        f"{lib_name}\tKEYWORD1",
        "",
        "# Functions (KEYWORD2)",
        *(f"{name}\tKEYWORD2" for name in functions),
        "",
        "# Constants (LITERAL1)",
        *(f"{name}\tLITERAL1" for name in literals),
    ]
    return "\n".join(lines) + "\n"


def _properties(lib_name: str, model: str, defines: dict[str, str]) -> str:
    def number(key: str) -> str:
        return re.sub(r"[uUlL]+$", "", defines.get(key, "?"))

    submodels = number("REDS_NUM_SUBMODELS")
    fields = {
        "name": lib_name,
        "version": package_version(),
        "author": AUTHOR,
        "maintainer": AUTHOR,
        "sentence": (
            f'The int8 REDS model "{model}": {submodels} nested submodels in one set of '
            "weights, switched at run time without copying."
        ),
        "paragraph": (
            f"Generated by `reds arduino` from a reds_tf export. C API in reds_model.h "
            f"(reds_set_submodel, reds_invoke): {number('REDS_INPUT_SIZE')} int8 inputs, "
            f"{number('REDS_OUTPUT_SIZE')} int8 outputs, {number('REDS_WEIGHT_BYTES')} bytes "
            f"of weights in flash, a {number('REDS_ARENA_BYTES')}-byte static arena, no heap. "
            "Includes the serial firmware core (reds_fw.h: info, use, infer, bench, budget) "
            f"and the {EXAMPLE_NAME} example sketch. Cortex-M4/M7/M33 use the DSP kernels."
        ),
        "category": CATEGORY,
        "url": URL,
        "architectures": ",".join(ARCHITECTURES),
        "includes": f"{lib_name}.h",
    }
    return "".join(f"{k}={v}\n" for k, v in fields.items())


def _main_header(lib_name: str, model: str) -> str:
    guard = f"{lib_name.upper()}_LIBRARY_H"
    return (
        f'/* {lib_name}: the REDS runtime for model "{model}" and the serial firmware\n'
        " * core, as an Arduino library. Generated by `reds arduino`; do not edit.\n"
        " * reds_model.h: the model's C API (reds_set_submodel, reds_invoke, ...).\n"
        " * reds_fw.h: the serial protocol; a sketch provides reds_board_write and\n"
        " * reds_board_micros (see the RedsSerial example). */\n"
        f"#ifndef {guard}\n"
        f"#define {guard}\n\n"
        '#include "reds_model.h"\n'
        '#include "reds_fw.h"\n\n'
        f"#endif /* {guard} */\n"
    )


def _sketch(lib_name: str, model: str, board_layer: str) -> str:
    header = (
        f'/* {EXAMPLE_NAME}: the REDS serial protocol for model "{model}" (library\n'
        f" * {lib_name}). Upload, open the Serial Monitor at 115200 baud with the line\n"
        ' * ending "Newline" and send `info`, `use K`, `infer HEX`, `bench` or\n'
        " * `budget US`; every command gets one JSON line back. Generated by\n"
        " * `reds arduino`: the include below, then reds_tf's board layer\n"
        " * firmware/boards/nano33ble/board.cpp. */\n"
        f"#include <{lib_name}.h>\n\n"
    )
    return header + board_layer


def _zip_bytes(entries: dict[str, bytes]) -> bytes:
    """A zip of ``entries`` (path -> bytes) with its folders, fixed timestamps and
    modes, so the same inputs give the same bytes."""
    buf = io.BytesIO()
    stamp = (1980, 1, 1, 0, 0, 0)
    all_dirs: set[str] = set()
    for path in entries:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            all_dirs.add("/".join(parts[:i]) + "/")
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for d in sorted(all_dirs):
            info = zipfile.ZipInfo(d, stamp)
            info.external_attr = (0o40755 << 16) | 0x10
            zf.writestr(info, b"")
        for path in sorted(entries):
            info = zipfile.ZipInfo(path, stamp)
            info.external_attr = 0o100644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, entries[path])
    return buf.getvalue()


def library_files(
    run_dir: str | os.PathLike, *, trust: bool = False
) -> tuple[str, dict[str, bytes]]:
    """The library's name and files (path inside the zip -> bytes). The sources
    must be what `reds export` generated from the run's current training
    (:func:`reds_tf.rundir.verify_sources`; ``trust`` skips the sources hash)."""
    run_dir = Path(run_dir)
    src = rundir.verify_sources(run_dir, trust=trust)
    core = FIRMWARE_DIR / "src"
    if not BOARD_LAYER.is_file() or not (core / "reds_fw.h").is_file():
        raise FirmwareError(
            f"the firmware sources are missing ({FIRMWARE_DIR}); `reds arduino` runs from a "
            "reds_tf checkout"
        )
    model_header = (src / "reds_model.h").read_text()
    model = _model_name(model_header, run_dir)
    lib_name = library_name(model)
    sources: dict[str, Path] = {}
    for rel, path in _files(src) + _files(core, ("*.h", "*.cpp", "*.c")):
        # compared in lower case: Windows and macOS file systems ignore case
        if rel.lower() in {r.lower() for r in sources}:
            raise FirmwareError(
                f"{rel} exists both in {src} and {core}: the library's src/ cannot hold both"
            )
        sources[rel] = path
    if f"{lib_name}.h".lower() in {r.lower() for r in sources}:  # e.g. model "fw"
        lib_name += "_lib"
    root = lib_name
    entries = {f"{root}/src/{rel}": path.read_bytes() for rel, path in sources.items()}
    entries[f"{root}/src/{lib_name}.h"] = _main_header(lib_name, model).encode()
    entries[f"{root}/library.properties"] = _properties(
        lib_name, model, _defines(model_header)
    ).encode()
    public = [model_header, (core / "reds_fw.h").read_text()]
    entries[f"{root}/keywords.txt"] = keywords(public, lib_name).encode()
    sketch = _sketch(lib_name, model, BOARD_LAYER.read_text())
    entries[f"{root}/examples/{EXAMPLE_NAME}/{EXAMPLE_NAME}.ino"] = sketch.encode()
    return lib_name, entries


def build_library(
    run_dir: str | os.PathLike, out: str | os.PathLike | None = None, *, trust: bool = False
) -> Path:
    """Write the Arduino library zip of an exported run and return its path.

    ``out``: the zip's path, or an existing folder to put ``<LibName>.zip`` in
    (default ``RUN_DIR/arduino/<LibName>.zip``). Atomic: a failure leaves no zip
    and keeps a previous one.
    """
    lib_name, entries = library_files(run_dir, trust=trust)
    if out is None:
        path = Path(run_dir) / "arduino" / f"{lib_name}.zip"
    else:
        path = Path(out)
        if path.is_dir():
            path = path / f"{lib_name}.zip"
    data = _zip_bytes(entries)
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise FirmwareError(f"cannot write the Arduino library to {path}: {parent} is not a folder")
    try:
        write_bytes_atomic(path, data)
    except OSError as e:
        reason = e.strerror or str(e)
        raise FirmwareError(f"cannot write the Arduino library to {path}: {reason}") from e
    return path


def run_arduino(
    run_dir: str | os.PathLike, out: str | os.PathLike | None = None, *, trust: bool = False
) -> int:
    """``reds arduino``: build the library zip and print its path."""
    path = build_library(run_dir, out, trust=trust)
    print(path)
    return 0
