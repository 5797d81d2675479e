"""The Arduino compile check shared by the tests: sources compiled exactly as
the Arduino mbed core compiles a Nano 33 BLE sketch (the flags of
``firmware/boards/nano33ble/build_flags.json``: ``-Os``, softfp,
``-funsigned-char``, gnu++14 / gnu11), plus ``-Werror`` and an ``arm_acle.h``
first on the include path that fails when included: the Nano toolchains are
GCC 7, whose ``<arm_acle.h>`` has none of the SIMD32 intrinsics, so any code
that needs it would not build for users."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from reds_tf.toolchain import FIRMWARE_DIR, nano33ble_flags

ARDUINO_STUB = FIRMWARE_DIR / "boards" / "nano33ble" / "test_stub"
POISONED_ACLE = '#error "<arm_acle.h> has no SIMD32 intrinsics on GCC 7 (the Nano toolchain)"\n'

needs_arm = pytest.mark.skipif(
    shutil.which("arm-none-eabi-g++") is None or shutil.which("arm-none-eabi-nm") is None,
    reason="needs gcc-arm-none-eabi (make setup installs it)",
)


def nano_compile(sources: list[Path], include_dirs: list[Path], out_dir: Path) -> dict[str, Path]:
    """Compile (not link) every source with the Nano's flags and -Werror;
    ``.ino`` files as C++. Asserts each compiles with no diagnostics at all;
    returns source name -> object file."""
    flags = nano33ble_flags()
    poison = out_dir / "poisoned_include"
    poison.mkdir(parents=True, exist_ok=True)
    (poison / "arm_acle.h").write_text(POISONED_ACLE)
    includes = ["-I", str(poison)]
    for d in include_dirs:
        includes += ["-I", str(d)]
    objs = {}
    for src in sources:
        lang = "c" if src.suffix == ".c" else "c++"
        cxx = "arm-none-eabi-gcc" if lang == "c" else "arm-none-eabi-g++"
        obj = out_dir / f"{src.name}.o"
        cmd = [cxx, *flags.compile_flags(lang), "-Werror", *includes]
        cmd += ["-x", lang, "-c", str(src), "-o", str(obj)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0 and not proc.stderr, f"{src.name}:\n{proc.stderr[-3000:]}"
        objs[src.name] = obj
    return objs


def defined_functions(obj: Path) -> set[str]:
    """Names of the functions an object file defines (``nm`` type T/t)."""
    out = subprocess.run(
        ["arm-none-eabi-nm", "--defined-only", "-C", str(obj)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = set()
    for line in out.splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) == 3 and parts[1] in ("T", "t"):
            names.add(parts[2].split("(")[0])
    return names


def undefined_symbols(obj: Path) -> set[str]:
    """Names an object file uses but does not define (``nm -u``)."""
    out = subprocess.run(
        ["arm-none-eabi-nm", "-u", "-C", str(obj)], capture_output=True, text=True, check=True
    ).stdout
    return {line.split()[-1].split("(")[0] for line in out.splitlines() if line.strip()}
