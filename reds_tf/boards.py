"""Board memory limits and the fit check of an exported model (``reds firmware
--board nano33ble`` refuses, ``reds export`` warns).

The one place for the Arduino Nano 33 BLE's flash and RAM and for the
allowances added to a model's own needs. A model needs

- flash: its weights and biases (``manifest.json``'s ``weight_bytes``), the
  requantisation tables (an int32 multiplier and an int32 shift per output
  channel of every layer, plus ``per_submodel_qparam_bytes``), the firmware
  core and runtime code (:data:`FIRMWARE_CODE_FLASH_BYTES`) and the Arduino
  mbed core (:attr:`BoardLimits.core_flash_bytes`);
- RAM: the activation arena (``arena_bytes``), the firmware core's static
  buffers (:func:`firmware_ram_bytes`, sized like ``firmware/src/reds_fw.cpp``)
  and the Arduino mbed core (:attr:`BoardLimits.core_ram_bytes`, which holds
  the main thread's stack, where ``loop()`` and so the runtime run).

The allowances (see :data:`NANO33BLE` and :data:`FIRMWARE_CODE_FLASH_BYTES`
for the numbers and where they come from) are on the high side, by about 25 KB
of flash and 7 KB of RAM: a model that close to the limit may be refused
although it would just link, which costs the user less than a first build that
downloads several hundred MB and then fails in the board's linker, or a
firmware that overruns its stack on the board.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reds_tf import rundir
from reds_tf.errors import RunDirError


@dataclass(frozen=True)
class BoardLimits:
    """Memory of a board as the application sees it, and what its core uses."""

    name: str
    flash_bytes: int  # flash available to the application (bootloader excluded)
    ram_bytes: int  # RAM, shared with the framework core
    core_flash_bytes: int  # allowance for the framework core's code and constants
    core_ram_bytes: int  # allowance for the framework core's static RAM and stacks


# Arduino Nano 33 BLE (nRF52840): 1 MB flash minus the 64 KB bootloader (the
# application starts at 0x10000; the IDE's "Maximum is 983040 bytes"), 256 KB
# RAM. Core allowance, from published figures (the core's prebuilt libmbed.a
# cannot be fetched here, see ../shared/PLATFORM_NOTES.md):
# - an EMPTY sketch (setup() {} loop() {}) built with the Arduino mbed core
#   (`arduino-cli compile --fqbn arduino:mbed_nano:nano33ble`) reports 85,328
#   bytes of flash and 44,552 bytes of global variables. The USB serial port
#   is part of it: the core always runs USB CDC for the 1200-baud upload reset.
# - those global variables include the 32 KB main-thread stack that loop(), and
#   so the runtime, runs on: mbed OS allocates it statically (`_main_stack` in
#   mbed-os cmsis/device/rtos/source/mbed_rtos_rtx.c; 32768 from the core's
#   variants/ARDUINO_NANO33BLE/conf/mbed_app.json).
# - not included: the variant's linker script keeps 2 KB at the top of RAM for
#   the interrupt stack and 512 B at its start (vector table copy, crash data),
#   and starts the application 512 B into its flash region.
# Rounded up to 96 KB flash (85,328 + 512 + 12.5 KB margin) and 52 KB RAM
# (44,552 + 2,560 + 6 KB margin for heap use by the core and other core
# versions).
NANO33BLE = BoardLimits(
    name="Arduino Nano 33 BLE",
    flash_bytes=960 * 1024,
    ram_bytes=256 * 1024,
    core_flash_bytes=96 * 1024,
    core_ram_bytes=52 * 1024,
)

# The firmware's own code: the portable core (protocol, JSON), the nano33ble
# board layer and the generated runtime's code and small tables. Measured with
# the Nano's flags (firmware/boards/nano33ble/build_flags.json, arm-none-eabi-g++
# 12.2; the kernel files at -O2 by their own pragma), object files before the
# linker drops unused kernels: 19,184 bytes for the default model; the code does
# not depend on the widths (a 2048x2048 model: the same). 32 KB leaves room for
# the Nano's GCC 7 and kernels still to come.
FIRMWARE_CODE_FLASH_BYTES = 32 * 1024
# Requantisation per output channel: int32 multiplier + int32 shift (the bias
# is counted in weight_bytes).
QPARAM_BYTES_PER_CHANNEL = 8
# The firmware core's scalars, alignment and the board layer's own buffers
# (the qemu layer's 256-byte receive ring; on the Nano, USB buffers are the
# core's). Static RAM beyond the buffers counted in firmware_ram_bytes, default
# model: 9 bytes (core objects, Nano flags), 28 bytes + the ring (the whole
# qemu firmware); rounded up to 1 KB.
FIRMWARE_RAM_SLACK_BYTES = 1024


def firmware_ram_bytes(input_size: int, num_classes: int, num_submodels: int, name: str) -> int:
    """Static RAM of the firmware core (``firmware/src/reds_fw.cpp``): the line
    buffer (kLineMax), the reply buffer (kOutMax), input, output and the
    latency table, plus :data:`FIRMWARE_RAM_SLACK_BYTES`."""
    line = 2 * input_size + 32
    # kOutMax: + 6 bytes per character of the name and of the 16-digit fingerprint
    reply = 416 + 12 * (num_submodels + num_classes) + 6 * (len(name.encode()) + 1) + 6 * 17
    return line + reply + input_size + num_classes + 4 * num_submodels + FIRMWARE_RAM_SLACK_BYTES


@dataclass(frozen=True)
class MemoryNeeds:
    """Estimated flash and RAM of the firmware with one exported model."""

    weight_bytes: int
    qparam_bytes: int
    code_bytes: int
    core_flash_bytes: int
    arena_bytes: int
    firmware_ram_bytes: int
    core_ram_bytes: int

    @property
    def flash_bytes(self) -> int:
        return self.weight_bytes + self.qparam_bytes + self.code_bytes + self.core_flash_bytes

    @property
    def ram_bytes(self) -> int:
        return self.arena_bytes + self.firmware_ram_bytes + self.core_ram_bytes


def _int(manifest: dict[str, Any], key: str) -> int:
    v = manifest.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise RunDirError(
            f"export/manifest.json has no valid '{key}' (got {v!r}); re-run `reds export`"
        )
    return v


def memory_needs(manifest: dict[str, Any], board: BoardLimits = NANO33BLE) -> MemoryNeeds:
    """Flash and RAM the firmware needs on ``board`` with the model of ``manifest``
    (an export's ``manifest.json``)."""
    shape = manifest.get("input_shape")
    subs = manifest.get("submodels")
    if (
        not isinstance(shape, list)
        or not all(isinstance(d, int) and d > 0 for d in shape)
        or not isinstance(subs, list)
        or not subs
        or not all(
            isinstance(s, dict)
            and isinstance(s.get("widths"), dict)
            and all(isinstance(w, int) and w >= 0 for w in s["widths"].values())
            for s in subs
        )
    ):
        raise RunDirError(
            "export/manifest.json lacks input_shape or submodel widths; re-run `reds export`"
        )
    # Every layer's tables hold the full (widest) submodel's output channels.
    channels: dict[str, int] = {}
    for s in subs:
        for layer, width in s["widths"].items():
            channels[layer] = max(channels.get(layer, 0), int(width))
    qparams = QPARAM_BYTES_PER_CHANNEL * sum(channels.values())
    if "per_submodel_qparam_bytes" in manifest:  # absent in older exports
        qparams += _int(manifest, "per_submodel_qparam_bytes")
    fw_ram = firmware_ram_bytes(
        math.prod(shape),
        _int(manifest, "num_classes"),
        len(subs),
        str(manifest.get("name", "")),
    )
    return MemoryNeeds(
        weight_bytes=_int(manifest, "weight_bytes"),
        qparam_bytes=qparams,
        code_bytes=FIRMWARE_CODE_FLASH_BYTES,
        core_flash_bytes=board.core_flash_bytes,
        arena_bytes=_int(manifest, "arena_bytes"),
        firmware_ram_bytes=fw_ram,
        core_ram_bytes=board.core_ram_bytes,
    )


def fit_problem(manifest: dict[str, Any], board: BoardLimits = NANO33BLE) -> str | None:
    """``None`` when the model fits ``board``, otherwise one line saying what is
    needed against what is available and what to do."""
    n = memory_needs(manifest, board)
    over = []
    if n.flash_bytes > board.flash_bytes:
        over.append(
            f"flash {n.flash_bytes:,} B needed > {board.flash_bytes:,} B available "
            f"(weights and biases {n.weight_bytes:,} + requantisation {n.qparam_bytes:,} + "
            f"firmware code {n.code_bytes:,} + Arduino core {n.core_flash_bytes:,})"
        )
    if n.ram_bytes > board.ram_bytes:
        over.append(
            f"RAM {n.ram_bytes:,} B needed > {board.ram_bytes:,} B available "
            f"(arena {n.arena_bytes:,} + firmware buffers {n.firmware_ram_bytes:,} + "
            f"Arduino core and stack {n.core_ram_bytes:,})"
        )
    if not over:
        return None
    return (
        f"model {manifest.get('name', '?')!r} does not fit the {board.name}: "
        + "; ".join(over)
        + ". Train a smaller model: fewer units (model.hidden, conv filters or alpha in the "
        "config), then `reds train` and `reds export` again (lower budgets do not help: every "
        "submodel shares the full model's weights and arena)"
    )


def load_manifest(run_dir: str | Path) -> dict[str, Any]:
    """``RUN_DIR/export/manifest.json``, checked (:func:`reds_tf.rundir.load_manifest`)."""
    return rundir.load_manifest(run_dir)
