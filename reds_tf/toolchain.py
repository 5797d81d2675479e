"""Compiler flags of the boards we build for, read from one file.

``firmware/boards/nano33ble/build_flags.json`` holds the flags the Arduino
mbed core compiles a Nano 33 BLE sketch with (GCC 7, ``-Os``,
``-funsigned-char``, softfp, gnu++14). The qemu board's PlatformIO builder,
``reds bench`` and the tests all read it, so the code they check and count is
compiled the way users' boards compile it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from reds_tf import resources

FIRMWARE_DIR = resources.FIRMWARE_DIR
NANO33BLE_FLAGS_FILE = FIRMWARE_DIR / "boards" / "nano33ble" / "build_flags.json"


@dataclass(frozen=True)
class BoardFlags:
    """One board's compiler flags, by role."""

    cpu: tuple[str, ...]  # target CPU / ABI: -mcpu, -mthumb, float ABI, FPU
    codegen: tuple[str, ...]  # optimisation and code-generation options
    warnings: tuple[str, ...]
    cxx: tuple[str, ...]  # C++ only: language standard, no RTTI / exceptions
    c: tuple[str, ...]  # C only: language standard

    def compile_flags(self, language: str) -> list[str]:
        """Every flag for compiling one ``c`` or ``c++`` source file."""
        if language not in ("c", "c++"):
            raise ValueError(f"language must be 'c' or 'c++', not {language!r}")
        lang = self.cxx if language == "c++" else self.c
        return [*self.cpu, *self.codegen, *self.warnings, *lang]


def nano33ble_flags() -> BoardFlags:
    """The Arduino Nano 33 BLE (mbed core) compile flags."""
    data = json.loads(NANO33BLE_FLAGS_FILE.read_text(encoding="utf-8"))
    return BoardFlags(**{k: tuple(data[k]) for k in ("cpu", "codegen", "warnings", "cxx", "c")})
