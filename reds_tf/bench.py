"""``reds bench``: instruction counts, estimated cycles, flash and RAM of the
generated runtime on a Cortex-M4, measured under QEMU.

The exported runtime (``RUN_DIR/export/src``) is linked three times with the
bench build in ``firmware/bench`` (a bare-metal program for QEMU's
``mps2-an386``, a Cortex-M4F): with the Arduino Nano 33 BLE's compile flags
(``firmware/boards/nano33ble/build_flags.json``: ``-Os``, softfp,
``-funsigned-char``, gnu++14) once with the DSP kernels (``dsp``, the headline
figure: the code users flash) and once with ``-DREDS_NO_DSP`` (``portable``,
the reference kernels), and with the same flags at ``-O2`` (``dsp_o2``, the
figure earlier benchmarks reported). Each ELF runs under ``qemu-system-arm`` with a
TCG plugin built here from ``reds_tf/qemu_plugin/icount.c``: it counts every
executed instruction and records the count whenever the firmware enters
``reds_bench_mark``. From the marks we get instructions per switch and per
inference for every submodel (exact and repeatable: QEMU's translation is
deterministic and the plugin counts instructions, not time). Each ELF runs
twice and the counts must match. The firmware then prints every submodel's
output for a set of inputs on UART0; both builds must agree with each other
and with the host simulation (``reds_tf.sim``) byte for byte.

QEMU models no time: the plugin also ESTIMATES Cortex-M4 cycles from the
Technical Reference Manual's instruction timings (the rules and assumptions are
in ``icount.c``: zero-wait-state memory, taken branches 3 cycles, ...), and the
latency estimate is estimated cycles / 64 MHz. Per layer, the plugin records the
counts at every kernel call in ``reds_invoke``. Results go to
``RUN_DIR/bench.json`` and to a section of ``BENCHMARKS.md`` delimited by HTML
comments.

RAM: per submodel, our activation arena (``manifest.json``) beside TensorFlow
Lite Micro's for the same ``submodel_k.tflite`` (:mod:`reds_tf.tflm_arena`),
and the Nano 33 BLE build's RAM (``ram_nano33ble``, :func:`nano_ram`): the
runtime's and the serial firmware core's ``.data`` + ``.bss`` from objects
compiled with the Nano's flags, the stack high-water mark of the dsp build,
the Arduino core's allowance (``reds_tf.boards``) and what is left of 256 KB.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reds_tf import resources, rundir
from reds_tf.boards import NANO33BLE
from reds_tf.errors import RedsError
from reds_tf.fsutil import dir_mode, write_bytes_atomic, write_json_atomic, write_text_atomic
from reds_tf.sim import Runtime
from reds_tf.tflm_arena import tflm_allocations
from reds_tf.toolchain import nano33ble_flags

BENCH_FW_DIR = resources.FIRMWARE_DIR / "bench"
FW_CORE_DIR = resources.FIRMWARE_DIR / "src"  # the serial firmware's portable core
PLUGIN_SOURCE = resources.QEMU_PLUGIN_SOURCE

CLOCK_HZ = 64_000_000  # Arduino Nano 33 BLE (nRF52840) core clock, for the estimate
NUM_INPUTS = 8  # inputs run through every submodel for the output check
INPUT_SEED = 20261125
IO_ADDRESS = 0x20300000  # REDS_BENCH_IO region in firmware/bench/bench.ld
BENCH_MAGIC = 0x48434E42  # "BNCH", see bench_io.h
QEMU_TIMEOUT_S = 300

# Bare metal without libstdc++: no guard calls for statics, no atexit table.
BARE_METAL_CXX = ["-fno-threadsafe-statics", "-fno-use-cxa-atexit"]
BARE_METAL_LINK = [
    "-nostartfiles",
    "--specs=nano.specs",
    "--specs=nosys.specs",
    "-Wl,--gc-sections",
]
# Build name -> (optimisation level replacing the board's, extra flags). None
# keeps the board's own (-Os).
VARIANTS: dict[str, tuple[str | None, list[str]]] = {
    "dsp": (None, []),
    "portable": (None, ["-DREDS_NO_DSP"]),
    "dsp_o2": ("-O2", []),
}


def compile_flags(language: str, opt: str | None = None) -> list[str]:
    """Flags for one ``c`` or ``c++`` source of a bare-metal Cortex-M4 build:
    the Nano 33 BLE's (``reds_tf.toolchain``), with ``opt`` (e.g. ``-O2``)
    instead of its ``-Os`` when given."""
    flags = nano33ble_flags().compile_flags(language)
    if opt is not None:
        flags = [opt if f.startswith("-O") else f for f in flags]
    return flags + (BARE_METAL_CXX if language == "c++" else [])


def link_flags() -> list[str]:
    """Flags that link a bare-metal bench ELF (same CPU and float ABI as the compile)."""
    return [*nano33ble_flags().cpu, *BARE_METAL_LINK]


# Acceptance targets reported in the table (issues "Cortex-M4 speed" and
# "Convolutional REDS"): instructions per MAC at full width for fully connected
# models and for models with convolutions (depthwise layers included).
TARGET_INSTR_PER_MAC = {"dense": 1.5, "conv": 2.0}
TARGET_SWITCH_INSTR = 100
TARGET_PROPORTIONALITY = 0.10
# Arduino Nano 33 BLE (nRF52840): flash left by the bootloader, and RAM.
NANO33BLE_FLASH_BYTES = NANO33BLE.flash_bytes
NANO33BLE_RAM_BYTES = NANO33BLE.ram_bytes
# The Arduino mbed core's main-thread stack, where loop() and so the runtime run
# (statically allocated, part of NANO33BLE.core_ram_bytes; see reds_tf/boards.py).
NANO33BLE_MAIN_STACK_BYTES = 32 * 1024
# The firmware core's serial buffers (firmware/src/reds_fw.cpp): the line buffer
# and the reply buffer.
SERIAL_BUFFER_SYMBOLS = ("g_line", "g_out_buf")

# Sections written by older versions (one section for whichever model ran last).
MD_BEGIN = "<!-- reds bench: cortex-m4 begin -->"
MD_END = "<!-- reds bench: cortex-m4 end -->"


def md_markers(name: str) -> tuple[str, str]:
    """Begin/end comments of model ``name``'s Cortex-M4 section of BENCHMARKS.md."""
    return (
        f"<!-- reds bench: cortex-m4 {name} begin -->",
        f"<!-- reds bench: cortex-m4 {name} end -->",
    )


_APT_HINT = (
    "install the Arm toolchain and QEMU, e.g. on Debian/Ubuntu: sudo apt-get install "
    "gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm gcc"
)


class BenchError(RedsError):
    """The benchmark cannot run (missing tools, a failed build or emulator run)
    or its results are invalid (outputs differ between kernels)."""


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BenchError(f"`{name}` not found on PATH; {_APT_HINT}")
    return path


def _run(cmd: list[str], what: str, timeout: float = 600, **kw: Any) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what} timed out after {timeout:.0f} s: {' '.join(cmd)}") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout or "").strip()[-3000:]
        raise BenchError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return proc


def cache_dir() -> Path:
    """Folder for the built plugin (``<reds_tf cache>/qemu_plugin``)."""
    return resources.cache_dir() / "qemu_plugin"


def build_plugin() -> Path:
    """Compile the instruction-count plugin with the host C compiler (cached by
    the hash of its source); returns the shared library."""
    cc = _tool("gcc")
    src = PLUGIN_SOURCE.read_bytes()
    flags = ["-shared", "-fPIC", "-O2", "-Wall", "-Wextra"]
    digest = hashlib.sha256(src + " ".join(flags).encode()).hexdigest()[:16]
    lib = cache_dir() / f"icount-{digest}.so"
    if lib.is_file():
        return lib
    lib.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".icount.", suffix=".so", dir=lib.parent)
    os.close(fd)
    try:
        _run([cc, *flags, "-o", tmp, str(PLUGIN_SOURCE)], "building the QEMU plugin")
        os.chmod(tmp, dir_mode())  # a shared library: rwx under the umask, not mkstemp's 0600
        os.replace(tmp, lib)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return lib


def build_elf(src_dir: Path, build_dir: Path, variant: str) -> Path:
    """Link the exported runtime with the bench firmware; returns the ELF path.

    ``variant`` is a key of VARIANTS: ``dsp`` (DSP kernels), ``portable``
    (``-DREDS_NO_DSP``), both with the board's flags, or ``dsp_o2``."""
    gcc = _tool("arm-none-eabi-gcc")
    sources = sorted(src_dir.glob("*.cpp")) + sorted(BENCH_FW_DIR.glob("*.c"))
    sources += sorted(BENCH_FW_DIR.glob("*.cpp"))
    obj_dir = build_dir / f"obj_{variant}"
    obj_dir.mkdir(parents=True, exist_ok=True)
    includes = [f"-I{src_dir}", f"-I{BENCH_FW_DIR}"]
    procs, objs = [], []
    for s in sources:
        obj = obj_dir / (s.name + ".o")
        opt, extra = VARIANTS[variant]
        flags = compile_flags("c++" if s.suffix == ".cpp" else "c", opt)
        cmd = [gcc, *flags, *extra, *includes, "-c", str(s), "-o", str(obj)]
        procs.append((s, cmd))
        objs.append(obj)
    # Two compilers at a time: the weights file dominates and the machine is shared.
    running: list[tuple[Path, subprocess.Popen]] = []
    for s, cmd in procs:
        while len(running) >= 2:
            _wait_compile(running.pop(0))
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        running.append((s, p))
    for item in running:
        _wait_compile(item)
    elf = build_dir / f"bench_{variant}.elf"
    tmp = build_dir / f".bench_{variant}.elf.tmp"
    ld = ["-T", str(BENCH_FW_DIR / "bench.ld"), f"-Wl,-Map,{build_dir / f'bench_{variant}.map'}"]
    _run([gcc, *link_flags(), *ld, "-o", str(tmp), *map(str, objs), "-lc", "-lgcc"], "linking")
    os.replace(tmp, elf)
    return elf


def _wait_compile(item: tuple[Path, subprocess.Popen]) -> None:
    src, proc = item
    _, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise BenchError(f"compiling {src.name} for the Cortex-M4 failed:\n{err.strip()[-3000:]}")


def symbol_address(elf: Path, name: str) -> int:
    """Address of a function symbol (Thumb bit cleared)."""
    out = _run([_tool("arm-none-eabi-nm"), str(elf)], "reading ELF symbols").stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == name:
            return int(parts[0], 16) & ~1
    raise BenchError(f"symbol {name} not found in {elf}")


def elf_sections(elf: Path) -> dict[str, int]:
    """Section name -> size in bytes (``arm-none-eabi-size -A``)."""
    out = _run([_tool("arm-none-eabi-size"), "-A", str(elf)], "reading ELF sizes").stdout
    sizes = {}
    for line in out.splitlines():
        m = re.match(r"^(\.\S+)\s+(\d+)\s+(\d+)", line.strip())
        if m:
            sizes[m.group(1)] = int(m.group(2))
    return sizes


def memory_use(sections: dict[str, int], stack_used: int) -> dict[str, int]:
    """Flash = everything stored in flash (vector table, code, constants, the
    initial values of .data); RAM = .data + .bss + the stack high-water mark."""
    flash_secs = (".isr_vector", ".text", ".rodata", ".ARM.exidx", ".init_array", ".data")
    code = sum(sections.get(s, 0) for s in (".isr_vector", ".text", ".ARM.exidx", ".init_array"))
    return {
        "text_bytes": code,
        "rodata_bytes": sections.get(".rodata", 0),
        "data_bytes": sections.get(".data", 0),
        "bss_bytes": sections.get(".bss", 0),
        "stack_bytes": stack_used,
        "flash_bytes": sum(sections.get(s, 0) for s in flash_secs),
        "ram_bytes": sections.get(".data", 0) + sections.get(".bss", 0) + stack_used,
    }


def static_ram_bytes(objects: list[Path]) -> int:
    """.data + .bss of object files (``arm-none-eabi-size -B``): their static RAM."""
    if not objects:
        return 0
    out = _run(
        [_tool("arm-none-eabi-size"), "-B", "-d", *map(str, objects)], "reading object sizes"
    ).stdout
    total = 0
    for line in out.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 3 and parts[1].isdigit() and parts[2].isdigit():
            total += int(parts[1]) + int(parts[2])
    return total


def data_symbol_sizes(obj: Path) -> dict[str, int]:
    """Size of every data/bss symbol of an object file, by its demangled name
    without namespace (``(anonymous namespace)::g_line`` -> ``g_line``)."""
    out = _run(
        [_tool("arm-none-eabi-nm"), "-S", "-C", str(obj)], f"reading symbols of {obj.name}"
    ).stdout
    sizes = {}
    for line in out.splitlines():
        parts = line.split(None, 3)
        if len(parts) == 4 and parts[2] in "bBdD" and len(parts[2]) == 1:
            sizes[parts[3].rsplit("::", 1)[-1]] = int(parts[1], 16)
    return sizes


def build_fw_core(src_dir: Path, build_dir: Path) -> list[Path]:
    """Compile the serial firmware's portable core (``firmware/src/*.cpp``: the
    protocol, its line and reply buffers) against the export's ``reds_model.h``
    with the Nano 33 BLE's flags; returns the object files (not linked)."""
    gcc = _tool("arm-none-eabi-gcc")
    obj_dir = build_dir / "obj_fw_core"
    obj_dir.mkdir(parents=True, exist_ok=True)
    objs = []
    for s in sorted(FW_CORE_DIR.glob("*.cpp")):
        obj = obj_dir / (s.name + ".o")
        flags = compile_flags("c++")
        cmd = [gcc, *flags, f"-I{src_dir}", f"-I{FW_CORE_DIR}", "-c", str(s), "-o", str(obj)]
        _run(cmd, f"compiling the firmware core's {s.name}")
        objs.append(obj)
    return objs


def submodel_arena_bytes(manifest: dict[str, Any]) -> list[int]:
    """Our activation arena per submodel: the submodel entry's ``arena_bytes``
    when the export records one (an int, or a list whose maximum is taken),
    else the manifest's top-level ``arena_bytes`` (one arena sized for the
    largest submodel; older exports)."""
    top = int(manifest.get("arena_bytes") or 0)
    out = []
    for sm in manifest["submodels"]:
        v = sm.get("arena_bytes") if isinstance(sm, dict) else None
        if isinstance(v, list) and v and all(isinstance(x, int) for x in v):
            v = max(v)
        out.append(int(v) if isinstance(v, int) and not isinstance(v, bool) and v > 0 else top)
    return out


def tflm_arenas(run_dir: Path, manifest: dict[str, Any]) -> tuple[list[dict | None], str | None]:
    """TensorFlow Lite Micro's arena report (head, tail, total) for every
    submodel's ``.tflite`` (:mod:`reds_tf.tflm_arena`), and None; on failure a
    list of None and the reason (the bench goes on without the comparison)."""
    subs = manifest["submodels"]
    try:
        models = [(run_dir / rundir.EXPORT / sm["tflite"]).read_bytes() for sm in subs]
        return list(tflm_allocations(models)), None
    except (OSError, RedsError) as e:
        return [None] * len(subs), str(e).splitlines()[0][:300]


def nano_ram(
    arena_bytes: int,
    runtime_static_bytes: int,
    firmware_static_bytes: int,
    serial_buffer_bytes: int,
    stack_high_water_bytes: int,
) -> dict[str, int]:
    """The Nano 33 BLE build's RAM: the runtime's static RAM (.data + .bss, the
    arena included) and the firmware core's (serial buffers, input, output,
    latency table), both from objects compiled with the Nano's flags; the
    Arduino mbed core's allowance (``NANO33BLE.core_ram_bytes``, which holds the
    32 KB main-thread stack that the stack high-water mark lives in); and what
    is left of the 256 KB for the user's own code."""
    used = runtime_static_bytes + firmware_static_bytes + NANO33BLE.core_ram_bytes
    return {
        "ram_bytes": NANO33BLE_RAM_BYTES,
        "arena_bytes": arena_bytes,
        "runtime_static_bytes": runtime_static_bytes,
        "firmware_static_bytes": firmware_static_bytes,
        "serial_buffer_bytes": serial_buffer_bytes,
        "stack_high_water_bytes": stack_high_water_bytes,
        "main_stack_bytes": NANO33BLE_MAIN_STACK_BYTES,
        "main_stack_left_bytes": NANO33BLE_MAIN_STACK_BYTES - stack_high_water_bytes,
        "core_ram_bytes": NANO33BLE.core_ram_bytes,
        "used_bytes": used,
        "left_bytes": NANO33BLE_RAM_BYTES - used,
    }


def qemu_version() -> str:
    out = _run([_tool("qemu-system-arm"), "--version"], "qemu-system-arm --version").stdout
    m = re.search(r"version (\S+)", out)
    return m.group(1) if m else out.strip().splitlines()[0]


@dataclass
class QemuCounts:
    """What one QEMU run under the plugin recorded.

    ``marks``: (instructions, cycles) at every entry of the marker function;
    ``sites``: (address, instructions, cycles) at every execution of a site
    address, in execution order; ``uart``: the lines the firmware printed.
    Counts exclude the instruction at the mark or site itself."""

    marks: list[tuple[int, int]]
    sites: list[tuple[int, int, int]]
    uart: list[str]


def parse_plugin_output(text: str) -> tuple[list[tuple[int, int]], list[tuple[int, int, int]]]:
    """Marks ("INSNS CYCLES") and site hits ("@ADDR INSNS CYCLES") of the plugin's output file."""
    marks: list[tuple[int, int]] = []
    sites: list[tuple[int, int, int]] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            marks.append((int(parts[0]), int(parts[1])))
        elif len(parts) == 3 and parts[0].startswith("@"):
            sites.append((int(parts[0][1:], 16), int(parts[1]), int(parts[2])))
    return marks, sites


def run_qemu_counts(
    elf: Path,
    plugin: Path,
    inputs_bin: Path,
    work: Path,
    marker: str | None = "reds_bench_mark",
    sites: list[int] | None = None,
) -> QemuCounts:
    """Run one bench ELF to completion with ``inputs_bin`` at the I/O address;
    returns the instruction and estimated cycle counts at every entry of
    function ``marker`` and at every execution of an address in ``sites``."""
    plugin_args = f"out={work / 'marks.txt'}"
    if marker is not None:
        plugin_args += f",marker={symbol_address(elf, marker):#x}"
    for addr in sites or []:
        plugin_args += f",at={addr:#x}"
    work.mkdir(parents=True, exist_ok=True)
    marks_file, uart_file = work / "marks.txt", work / "uart.txt"
    for f in (marks_file, uart_file):
        f.unlink(missing_ok=True)
    cmd = [
        _tool("qemu-system-arm"),
        "-M", "mps2-an386",
        "-display", "none",
        "-monitor", "none",
        "-serial", f"file:{uart_file}",
        "-semihosting-config", "enable=on,target=native",
        "-kernel", str(elf),
        "-device", f"loader,file={inputs_bin},addr={IO_ADDRESS:#x},force-raw=on",
        "-plugin", f"{plugin},{plugin_args}",
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=QEMU_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise BenchError(f"QEMU did not finish within {QEMU_TIMEOUT_S} s running {elf}") from None
    uart = uart_file.read_text(errors="replace").splitlines() if uart_file.exists() else []
    if proc.returncode != 0:
        raise BenchError(
            f"QEMU run of {elf.name} failed (exit {proc.returncode}): "
            f"{(proc.stderr.strip() or '; '.join(uart[-5:]))[-2000:]}"
        )
    if not marks_file.exists():
        raise BenchError(f"the QEMU plugin wrote no counts for {elf.name}: {proc.stderr.strip()}")
    marks, hits = parse_plugin_output(marks_file.read_text())
    return QemuCounts(marks, hits, uart)


def run_qemu(
    elf: Path, plugin: Path, inputs_bin: Path, work: Path, marker: str | None = "reds_bench_mark"
) -> tuple[list[int], list[str]]:
    """Run one bench ELF to completion with ``inputs_bin`` at the I/O address;
    returns (instruction count at every entry of function ``marker``, UART lines)."""
    got = run_qemu_counts(elf, plugin, inputs_bin, work, marker)
    return [m[0] for m in got.marks], got.uart


def parse_marks(marks: list[int], num_submodels: int) -> dict[str, Any]:
    """Turn the mark sequence of bench_main.cpp into per-submodel counts.

    The empty region's count (the marks' own call and return) is subtracted
    from every measured region."""
    expected = 2 + 4 * num_submodels
    if len(marks) != expected:
        raise BenchError(f"expected {expected} marks from the bench firmware, got {len(marks)}")
    overhead = marks[1] - marks[0]
    switch, invoke = [], []
    for k in range(num_submodels):
        m = marks[2 + 4 * k : 6 + 4 * k]
        switch.append(m[1] - m[0] - overhead)
        invoke.append(m[3] - m[2] - overhead)
    return {"mark_overhead": overhead, "switch": switch, "invoke": invoke}


# The kernel entry points reds_invoke calls, one per layer (reds_model.cpp.j2).
# A layer's comment, then its call: a kernel macro (``REDS_FC(``) or a row
# driver with its operation (``reds_run_fc(``, ``reds_run_conv(REDS_OP_POINTWISE,``).
_LAYER_CALL = re.compile(
    r"/\* (\w+): [^*]*\*/\s*\n\s*(?:REDS_(\w+)\(|reds_run_(\w+)\((?:REDS_OP_(\w+))?)"
)
_BL_LINE = re.compile(r"^\s*([0-9a-f]+):\s+bl\s+[0-9a-f]+ <(reds_\w+)>")


def model_layers(src_dir: Path) -> list[tuple[str, str]]:
    """(name, kind) of every layer reds_invoke runs, in order, from the generated
    ``reds_model.cpp`` (kind: the kernel macro, e.g. ``pointwise``)."""
    text = (src_dir / "reds_model.cpp").read_text(encoding="utf-8", errors="replace")
    body = text.split("int reds_invoke(", 1)[-1]
    return [
        (m.group(1), (m.group(2) or m.group(4) or m.group(3)).lower())
        for m in _LAYER_CALL.finditer(body)
    ]


def layer_call_sites(elf: Path) -> list[int]:
    """Addresses of the kernel calls (``bl reds_...``) inside ``reds_invoke``, in order."""
    out = _run(
        [_tool("arm-none-eabi-objdump"), "-d", "--no-show-raw-insn", str(elf)], "disassembling"
    ).stdout
    body = out.split("<reds_invoke>:", 1)
    if len(body) < 2:
        return []
    sites = []
    for line in body[1].split("\n\n", 1)[0].splitlines():
        m = _BL_LINE.match(line)
        if m and m.group(2) != "reds_bench_mark":
            sites.append(int(m.group(1), 16))
    return sites


def layer_counts(
    marks: list[tuple[int, int]], hits: list[tuple[int, int, int]], sites: list[int], num_k: int
) -> list[list[tuple[int, int]]] | None:
    """Per submodel, per layer (instructions, cycles) of the measured inference:
    from one layer's kernel call to the next (the last layer up to the end mark,
    reds_invoke's return included). None when the calls seen do not match."""
    out = []
    for k in range(num_k):
        start, end = marks[4 + 4 * k], marks[5 + 4 * k]
        seen = [h for h in hits if start[0] <= h[1] <= end[0]]
        if [h[0] for h in seen] != sites:
            return None
        bounds = [(h[1], h[2]) for h in seen] + [end]
        out.append([(b[0] - a[0], b[1] - a[1]) for a, b in itertools.pairwise(bounds)])
    return out


def parse_uart(lines: list[str], num_inputs: int, num_submodels: int, out_size: int) -> dict:
    """Outputs ((num_inputs, K, out_size) int8) and the stack high-water mark."""
    outputs = np.zeros((num_inputs, num_submodels, out_size), np.int8)
    seen = np.zeros((num_inputs, num_submodels), bool)
    stack, variant, done = None, None, False
    for line in lines:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "out" and len(parts) == 4:
            j, k = int(parts[1]), int(parts[2])
            outputs[j, k] = np.frombuffer(bytes.fromhex(parts[3]), np.int8)
            seen[j, k] = True
        elif parts[0] == "stack":
            stack = int(parts[1])
        elif parts[0] == "variant":
            variant = parts[1]
        elif parts[0] == "done":
            done = True
    if not done or stack is None or not seen.all():
        raise BenchError("the bench firmware output is incomplete:\n" + "\n".join(lines[-10:]))
    return {"outputs": outputs, "stack_bytes": stack, "variant": variant}


def make_inputs(input_size: int, count: int = NUM_INPUTS) -> np.ndarray:
    """Deterministic int8 inputs (count, input_size) spanning the whole range."""
    rng = np.random.default_rng(INPUT_SEED)
    return rng.integers(-128, 128, size=(count, input_size), dtype=np.int8)


def inputs_blob(x: np.ndarray) -> bytes:
    header = np.array([BENCH_MAGIC, x.shape[0], x.shape[1]], dtype="<u4").tobytes()
    return header + np.ascontiguousarray(x, dtype=np.int8).tobytes()


def model_kind(run_dir: Path) -> str:
    """``conv`` when ``submodels.json`` lists a convolution or depthwise layer,
    else ``dense`` (the instructions-per-MAC target differs); a missing or
    damaged ``submodels.json`` is a RunDirError."""
    return rundir.model_kind(rundir.load_submodels(run_dir))


def summarise(
    manifest: dict,
    counts: dict[str, dict[str, Any]],
    memory: dict[str, dict[str, int]],
    kind: str = "dense",
    layers: list[tuple[str, str]] | None = None,
    tflm: list[dict[str, int] | None] | None = None,
) -> dict[str, Any]:
    """Per-submodel table and acceptance checks from the measured counts.

    ``kind`` (``dense`` or ``conv``) selects the instructions-per-MAC target;
    ``layers`` ((name, kind) in execution order) names the per-layer counts
    (``counts[variant]["layers"]``), when measured. Every row gets our arena
    (:func:`submodel_arena_bytes`) and, from ``tflm`` (one TFLite Micro arena
    report per submodel, or None), TFLite Micro's activation arena ("head")
    and its whole arena ("total") for the same ``.tflite``."""
    subs = manifest["submodels"]
    arenas = submodel_arena_bytes(manifest)
    macs = [int(s["macs"]) for s in subs]
    dsp, ref = counts["dsp"], counts["portable"]
    o2 = counts["dsp_o2"]
    full = len(subs) - 1
    cyc, cyc_ref, cyc_o2 = dsp["invoke_cycles"], ref["invoke_cycles"], o2["invoke_cycles"]
    rows = []
    for k, s in enumerate(subs):
        mac_frac = macs[k] / macs[full]
        instr_frac = dsp["invoke"][k] / dsp["invoke"][full]
        cycle_frac = cyc[k] / cyc[full]
        rows.append(
            {
                "index": k,
                "budget": s.get("budget"),
                "widths": s.get("widths"),
                "macs": macs[k],
                "macs_fraction": round(mac_frac, 6),
                "instructions_dsp": dsp["invoke"][k],
                "instructions_portable": ref["invoke"][k],
                "instr_per_mac_dsp": round(dsp["invoke"][k] / macs[k], 4),
                "instr_per_mac_portable": round(ref["invoke"][k] / macs[k], 4),
                "portable_over_dsp": round(ref["invoke"][k] / dsp["invoke"][k], 3),
                "instructions_dsp_o2": o2["invoke"][k],
                "instr_per_mac_dsp_o2": round(o2["invoke"][k] / macs[k], 4),
                "switch_instructions_dsp": dsp["switch"][k],
                "switch_instructions_portable": ref["switch"][k],
                "cycles_dsp": cyc[k],
                "cycles_portable": cyc_ref[k],
                "cycles_dsp_o2": cyc_o2[k],
                "cycles_per_mac_dsp": round(cyc[k] / macs[k], 4),
                "cycles_per_instr_dsp": round(cyc[k] / dsp["invoke"][k], 4),
                "switch_cycles_dsp": dsp["switch_cycles"][k],
                "latency_us_est_dsp": round(cyc[k] / CLOCK_HZ * 1e6, 1),
                "latency_us_est_portable": round(cyc_ref[k] / CLOCK_HZ * 1e6, 1),
                "instructions_fraction": round(instr_frac, 6),
                "proportionality_error": round(instr_frac / mac_frac - 1.0, 4),
                "cycles_fraction": round(cycle_frac, 6),
                "cycles_proportionality_error": round(cycle_frac / mac_frac - 1.0, 4),
            }
        )
        rows[-1]["arena_bytes"] = arenas[k]
        rows[-1]["arena_shared"] = not isinstance(s.get("arena_bytes"), (int, list))
        rep = tflm[k] if tflm is not None and k < len(tflm) else None
        if rep is not None:
            rows[-1]["tflm_arena_bytes"] = int(rep["head"])
            rows[-1]["tflm_arena_total_bytes"] = int(rep["total"])
            if rep["head"] > 0:
                rows[-1]["arena_over_tflm"] = round(arenas[k] / rep["head"], 4)
        predicted = s.get("predicted_cycles")
        if predicted is not None:
            rows[-1]["predicted_cycles"] = int(predicted)
            rows[-1]["prediction_error"] = round(cyc[k] / int(predicted) - 1.0, 4)
        if layers and dsp.get("layers") is not None:
            rows[-1]["layers"] = [
                {
                    "name": name,
                    "kind": lkind,
                    "instructions_dsp": dsp["layers"][k][i][0],
                    "cycles_dsp": dsp["layers"][k][i][1],
                    **(
                        {"cycles_portable": ref["layers"][k][i][1]}
                        if ref.get("layers") is not None
                        else {}
                    ),
                }
                for i, (name, lkind) in enumerate(layers)
            ]
    worst = max(abs(r["proportionality_error"]) for r in rows)
    max_switch = max(max(dsp["switch"]), max(ref["switch"]))
    full_ipm = rows[full]["instr_per_mac_dsp"]
    target = TARGET_INSTR_PER_MAC[kind]
    fits = {
        v: m["flash_bytes"] < NANO33BLE_FLASH_BYTES and m["ram_bytes"] < NANO33BLE_RAM_BYTES
        for v, m in memory.items()
    }
    checks = {
        "model_kind": kind,
        "target_instr_per_mac": target,
        "full_width_instr_per_mac_dsp": full_ipm,
        "full_width_instr_per_mac_portable": rows[full]["instr_per_mac_portable"],
        "full_width_portable_over_dsp": rows[full]["portable_over_dsp"],
        "full_width_instr_per_mac_dsp_o2": rows[full]["instr_per_mac_dsp_o2"],
        "full_width_cycles_per_mac_dsp": rows[full]["cycles_per_mac_dsp"],
        "full_width_cycles_per_instr_dsp": rows[full]["cycles_per_instr_dsp"],
        "max_cycles_proportionality_error": max(
            abs(r["cycles_proportionality_error"]) for r in rows
        ),
        "instr_per_mac_ok": full_ipm <= target,
        "max_switch_instructions": max_switch,
        "switch_ok": max_switch <= TARGET_SWITCH_INSTR,
        "max_proportionality_error": worst,
        "proportionality_ok": worst <= TARGET_PROPORTIONALITY,
        "fits_nano33ble": all(fits.values()),
    }
    return {"submodels": rows, "checks": checks, "memory": memory}


def render_markdown(result: dict[str, Any]) -> str:
    """The Cortex-M4 section of BENCHMARKS.md (between the begin/end markers)."""
    c = result["checks"]
    mem = result["memory"]
    begin, end = md_markers(result["name"])
    lines = [
        begin,
        f"## Cortex-M4: `{result['name']}` (`reds bench {result['run_dir']}`)",
        "",
        f"Measured under QEMU {result['qemu']} (`-M mps2-an386`, Cortex-M4F) with the "
        "project's instruction-count plugin; compiler "
        f"`{result['compiler']}` with the Arduino Nano 33 BLE's flags "
        f"(`{result['board_flags']}`); the DSP and portable columns are that build, "
        "the -O2 column the same flags at -O2. Counts are exact executed instructions "
        "(two runs per build "
        f"gave identical counts: {'yes' if result['repeatable'] else 'NO'}). Cycles are an "
        "**estimate** by the plugin's Cortex-M4 cycle model (the Technical Reference "
        "Manual's instruction timings: loads 2 cycles or 1 when pipelined, LDM/STM 1 + N, "
        "taken branches 3, address interlocks; zero-wait-state memory, so flash wait "
        "states and cache misses on the nRF52840 are not included; "
        "`reds_tf/qemu_plugin/icount.c` lists every rule). Latency = estimated cycles / "
        f"{CLOCK_HZ // 1_000_000} MHz.",
        "",
    ]
    pred = any("predicted_cycles" in r for r in result["submodels"])
    lines += [
        "| k | widths | MACs | instr/inference DSP | est. cycles DSP | cycles/MAC DSP "
        "| instr/MAC DSP | instr/MAC DSP -O2 | instr/inference portable | instr/MAC portable "
        "| portable / DSP | switch instr | est. latency @64 MHz DSP "
        "| cycles(k)/cycles(full) vs MACs(k)/MACs(full) "
        "| instr(k)/instr(full) |" + (" predicted cycles (error) |" if pred else ""),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"
        + ("---:|" if pred else ""),
    ]
    for r in result["submodels"]:
        widths = ", ".join(f"{v}" for v in (r["widths"] or {}).values())
        row = (
            f"| {r['index']} | {widths} | {r['macs']:,} | {r['instructions_dsp']:,} "
            f"| {r['cycles_dsp']:,} | {r['cycles_per_mac_dsp']:.3f} "
            f"| {r['instr_per_mac_dsp']:.3f} | {r['instr_per_mac_dsp_o2']:.3f} "
            f"| {r['instructions_portable']:,} "
            f"| {r['instr_per_mac_portable']:.3f} | {r['portable_over_dsp']:.2f}x "
            f"| {r['switch_instructions_dsp']} | {r['latency_us_est_dsp']:,.0f} us "
            f"| {r['cycles_fraction']:.3f} vs {r['macs_fraction']:.3f} "
            f"({r['cycles_proportionality_error']:+.1%}) "
            f"| {r['instructions_fraction']:.3f} ({r['proportionality_error']:+.1%}) |"
        )
        if pred:
            p = r.get("predicted_cycles")
            row += f" {p:,} ({r['prediction_error']:+.1%}) |" if p is not None else " - |"
        lines.append(row)
    lines += _layer_table(result["submodels"])

    def ok(flag: bool) -> str:
        return "met" if flag else "NOT met"

    lines += [
        "",
        f"- Full width: {c['full_width_cycles_per_mac_dsp']:.3f} estimated cycles per MAC "
        f"({c['full_width_cycles_per_instr_dsp']:.2f} cycles per instruction) with the DSP "
        "kernels.",
        f"- Full width: {c['full_width_instr_per_mac_dsp']:.3f} instructions per MAC with the "
        f"DSP kernels (target <= {c['target_instr_per_mac']}: {ok(c['instr_per_mac_ok'])}; "
        f"{c['full_width_instr_per_mac_dsp_o2']:.3f} at -O2), "
        f"{c['full_width_instr_per_mac_portable']:.3f} with the portable kernels: "
        f"{c['full_width_portable_over_dsp']:.2f}x. Whole `reds_invoke`, all layers included.",
        f"- Switch (`reds_set_submodel`, call included): at most {c['max_switch_instructions']} "
        f"instructions, about {c['max_switch_instructions'] / CLOCK_HZ * 1e6:.2f} us at 64 MHz "
        f"(target <= {TARGET_SWITCH_INSTR}: {ok(c['switch_ok'])}).",
        f"- Latency follows MACs: largest deviation {c['max_proportionality_error']:.1%} "
        f"in instructions (target <= {TARGET_PROPORTIONALITY:.0%}: "
        f"{ok(c['proportionality_ok'])}), {c['max_cycles_proportionality_error']:.1%} in "
        "estimated cycles.",
        f"- Outputs: DSP and portable kernels in QEMU and the host simulation agree bit for "
        f"bit on {result['num_inputs']} inputs x {len(result['submodels'])} submodels: "
        f"{'yes' if result['outputs_identical'] else 'NO'}.",
        "",
        "| build | flash (text + rodata + data init) | RAM (data + bss + stack high-water) "
        "| of which stack |",
        "|---|---:|---:|---:|",
    ]
    for v, m in mem.items():
        lines.append(
            f"| {v} | {m['flash_bytes']:,} B | {m['ram_bytes']:,} B | {m['stack_bytes']:,} B |"
        )
    lines += [
        "",
        f"Model share: {result['weight_bytes']:,} B of weights and biases (stored once for all "
        f"submodels), a {result['arena_bytes']:,} B activation arena"
        + (f" (`reds export --arena {result['arena_mode']}`)" if result.get("arena_mode") else "")
        + ". The bench build is the "
        "runtime plus a minimal harness (`firmware/bench`), no serial protocol. Arduino Nano 33 "
        f"BLE fit (flash < {NANO33BLE_FLASH_BYTES // 1024} KB, RAM < "
        f"{NANO33BLE_RAM_BYTES // 1024} KB, both builds): "
        f"{'yes' if c['fits_nano33ble'] else 'NO'}.",
    ]
    lines += _ram_section(result)
    lines.append(end)
    return "\n".join(lines) + "\n"


def _ram_section(result: dict[str, Any]) -> list[str]:
    """Arena per submodel against TFLite Micro's, and the Nano 33 BLE's RAM
    budget (results of older versions have neither: nothing)."""
    rows = result["submodels"]
    out: list[str] = []
    if rows and all("arena_bytes" in r for r in rows):
        out += [
            "",
            "Activation arena per submodel: ours (`manifest.json`) against TensorFlow Lite "
            'Micro\'s for the same `submodel_k.tflite` (`reds_tf/tflm_arena.py`: the "head" of '
            "its interpreter's `print_allocations()`, i.e. activation tensors and kernel scratch "
            'buffers; "whole" adds its persistent tail of interpreter structs):',
            "",
            "| k | our arena | TFLite Micro arena (head) | ours / TFLite Micro "
            "| TFLite Micro whole arena |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in rows:
            head = r.get("tflm_arena_bytes")
            ratio = r.get("arena_over_tflm")
            out.append(
                f"| {r['index']} | {r['arena_bytes']:,} B "
                + (f"| {head:,} B " if head is not None else "| - ")
                + (f"| {ratio:.2f} " if ratio is not None else "| - ")
                + (
                    f"| {r['tflm_arena_total_bytes']:,} B |"
                    if r.get("tflm_arena_total_bytes") is not None
                    else "| - |"
                )
            )
        if all(r.get("arena_shared") for r in rows):
            out += [
                "",
                "(This export records one arena for all submodels, sized for the largest: "
                "`manifest.json` has no per-submodel `arena_bytes`.)",
            ]
        if result.get("tflm_error"):
            out += ["", f"TFLite Micro's arena could not be read: {result['tflm_error']}"]
    ram = result.get("ram_nano33ble")
    if ram:
        kb = ram["ram_bytes"] // 1024
        out += [
            "",
            f"RAM of the Arduino Nano 33 BLE build ({kb} KB), from objects compiled with the "
            "Nano's flags:",
            "",
            "| | bytes |",
            "|---|---:|",
            f"| runtime static RAM (.data + .bss; the arena, {ram['arena_bytes']:,} B, included) "
            f"| {ram['runtime_static_bytes']:,} |",
            "| firmware core static RAM (`firmware/src`: serial line and reply buffers "
            f"{ram['serial_buffer_bytes']:,} B, input, output, latency table) "
            f"| {ram['firmware_static_bytes']:,} |",
            "| Arduino mbed core allowance (`reds_tf/boards.py`, from published figures, not "
            f"measured here; includes its {ram['main_stack_bytes'] // 1024} KB main-thread "
            f"stack) | {ram['core_ram_bytes']:,} |",
            f"| used | {ram['used_bytes']:,} |",
            f"| **left for your own code** | **{ram['left_bytes']:,}** "
            f"({ram['left_bytes'] / ram['ram_bytes']:.1%}) |",
            "",
            f"Stack high-water mark of the runtime (QEMU, dsp build, every submodel): "
            f"{ram['stack_high_water_bytes']:,} B of the {ram['main_stack_bytes'] // 1024} KB "
            f"main-thread stack that `loop()` runs on ({ram['main_stack_left_bytes']:,} B "
            "left there; the serial protocol's own frames come on top, `info` on the device "
            "reports the whole mark).",
        ]
    return out


def _layer_table(rows: list[dict[str, Any]]) -> list[str]:
    """Estimated DSP cycles per layer and submodel, when the bench measured them."""
    if not rows or any("layers" not in r for r in rows):
        return []
    full = rows[-1]["layers"]
    total = sum(ly["cycles_dsp"] for ly in full)
    head = " | ".join(f"k={r['index']}" for r in rows)
    out = [
        "",
        "Estimated cycles per layer (DSP kernels; from one layer's kernel call to the next, "
        "the last layer up to the end of the inference):",
        "",
        f"| layer | kind | {head} | share of full |",
        "|---|---|" + "---:|" * len(rows) + "---:|",
    ]
    for i, ly in enumerate(full):
        cells = " | ".join(f"{r['layers'][i]['cycles_dsp']:,}" for r in rows)
        out.append(f"| {ly['name']} | {ly['kind']} | {cells} | {ly['cycles_dsp'] / total:.1%} |")
    return out


def update_markdown(path: Path, section: str, name: str) -> None:
    """Replace model ``name``'s Cortex-M4 section of ``path`` (or an older
    unnamed section about the same model), else append it; atomically."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    begin, end = md_markers(name)
    legacy = MD_BEGIN in text and f"## Cortex-M4: `{name}`" in text.split(MD_BEGIN, 1)[1]
    if not (begin in text and end in text) and legacy and MD_END in text:
        begin, end = MD_BEGIN, MD_END
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + section.rstrip("\n") + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    write_text_atomic(path, text)


def run_bench(
    run_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    markdown: str | os.PathLike | None = None,
    trust: bool = False,
) -> dict[str, Any]:
    """Benchmark the exported runtime of ``run_dir`` under QEMU.

    Writes ``bench.json`` (default ``RUN_DIR/bench.json``) and, unless
    ``markdown`` is None, the Cortex-M4 section of that Markdown file. Returns
    the result dict. Raises BenchError when a tool is missing, a build or run
    fails, the counts are not repeatable or the kernels' outputs differ.

    Before any work: the manifest and ``submodels.json`` are checked,
    ``export/src`` must be what the export generated (the host simulation
    compiles and loads it; ``trust=True`` skips this) and every output location
    must be writable (the folders of ``out`` and ``markdown`` must exist). An
    OSError while writing is one OutputError line."""
    t0 = time.monotonic()
    run_dir = Path(run_dir)
    rundir.require_run_dir(run_dir)
    manifest = rundir.load_manifest(run_dir)
    kind = model_kind(run_dir)
    src_dir = rundir.verify_sources(run_dir, manifest, trust=trust)
    if not (BENCH_FW_DIR / "bench.ld").is_file():
        raise BenchError(f"bench firmware sources not found in {BENCH_FW_DIR}")
    build_dir = rundir.check_output_dir(run_dir / rundir.BENCH_BUILD, "the bench build folder")
    out_path = Path(out) if out is not None else run_dir / rundir.BENCH_JSON
    rundir.check_output_file(out_path, "the bench results")
    if markdown is not None:
        rundir.check_output_file(markdown, "the Markdown file", text=True)
    with rundir.output_errors(str(build_dir)):
        return _run_bench(run_dir, manifest, kind, src_dir, build_dir, out_path, markdown, t0)


def _run_bench(
    run_dir: Path,
    manifest: dict[str, Any],
    kind: str,
    src_dir: Path,
    build_dir: Path,
    out_path: Path,
    markdown: str | os.PathLike | None,
    t0: float,
) -> dict[str, Any]:
    num_k = len(manifest["submodels"])
    # The latency model's predictions (knapsack: {cost: latency}), shown beside the measurements.
    predicted = [sm.get("predicted_cycles") for sm in rundir.load_submodels(run_dir)["submodels"]]
    if len(predicted) == num_k and any(p is not None for p in predicted):
        pairs = zip(manifest["submodels"], predicted, strict=True)
        subs = [{**sm, "predicted_cycles": p} for sm, p in pairs]
        manifest = {**manifest, "submodels": subs}
    plugin = build_plugin()
    build_dir.mkdir(parents=True, exist_ok=True)

    runtime = Runtime(src_dir, tuple(manifest["input_shape"]))
    x = make_inputs(runtime.input_size)
    inputs_bin = build_dir / "inputs.bin"
    write_bytes_atomic(inputs_bin, inputs_blob(x))
    xs = x.reshape((len(x), *runtime.input_shape))
    host = np.stack([runtime.predict(xs, k) for k in range(num_k)], axis=1)

    counts: dict[str, dict[str, Any]] = {}
    memory: dict[str, dict[str, int]] = {}
    outputs: dict[str, np.ndarray] = {}
    repeatable = True
    layers = model_layers(src_dir)
    for variant in VARIANTS:
        elf = build_elf(src_dir, build_dir, variant)
        sites = layer_call_sites(elf)
        runs = []
        for rep in range(2):
            work = build_dir / f"qemu_{variant}_{rep}"
            got = run_qemu_counts(elf, plugin, inputs_bin, work, sites=sites)
            runs.append((got, parse_uart(got.uart, len(x), num_k, runtime.output_size)))
        if (runs[0][0].marks, runs[0][0].sites) != (runs[1][0].marks, runs[1][0].sites):
            repeatable = False
        parsed = runs[0][1]
        expected = "portable" if "-DREDS_NO_DSP" in VARIANTS[variant][1] else "dsp"
        if parsed["variant"] != expected:
            raise BenchError(f"the {variant} build reports variant {parsed['variant']!r}")
        marks = runs[0][0].marks
        counts[variant] = parse_marks([m[0] for m in marks], num_k)
        cyc = parse_marks([m[1] for m in marks], num_k)
        counts[variant].update({f"{key}_cycles": cyc[key] for key in cyc})
        per_layer = None
        if len(sites) == len(layers):
            per_layer = layer_counts(marks, runs[0][0].sites, sites, num_k)
        counts[variant]["layers"] = per_layer
        outputs[variant] = parsed["outputs"]
        memory[variant] = memory_use(elf_sections(elf), parsed["stack_bytes"])

    for variant, got in outputs.items():
        if not np.array_equal(got, host):
            bad = np.argwhere((got != host).any(axis=2))
            raise BenchError(
                f"{variant} kernels in QEMU differ from the host simulation on "
                f"{len(bad)} (input, submodel) pairs, first {bad[0].tolist()}"
            )
    if not repeatable:
        raise BenchError("two QEMU runs of the same ELF gave different instruction or cycle counts")

    # The RAM picture of the Nano 33 BLE build: the runtime's objects as the dsp
    # build compiled them (the Nano's flags), the serial firmware's core
    # compiled the same way, and TFLite Micro's arena for the same .tflite files.
    runtime_objs = [build_dir / "obj_dsp" / (s.name + ".o") for s in sorted(src_dir.glob("*.cpp"))]
    fw_objs = build_fw_core(src_dir, build_dir)
    fw_syms: dict[str, int] = {}
    for obj in fw_objs:
        fw_syms.update(data_symbol_sizes(obj))
    tflm, tflm_error = tflm_arenas(run_dir, manifest)
    ram = nano_ram(
        arena_bytes=int(manifest.get("arena_bytes") or 0),
        runtime_static_bytes=static_ram_bytes(runtime_objs),
        firmware_static_bytes=static_ram_bytes(fw_objs),
        serial_buffer_bytes=sum(fw_syms.get(n, 0) for n in SERIAL_BUFFER_SYMBOLS),
        stack_high_water_bytes=memory["dsp"]["stack_bytes"],
    )

    gcc_version = _run([_tool("arm-none-eabi-gcc"), "-dumpversion"], "gcc version").stdout
    result: dict[str, Any] = {
        "name": manifest.get("name", run_dir.name),
        "run_dir": str(run_dir),
        "qemu": qemu_version(),
        "machine": "mps2-an386 (Cortex-M4F)",
        "compiler": f"arm-none-eabi-gcc {gcc_version.strip()}",
        "board_flags": " ".join(compile_flags("c++")),
        "clock_hz_for_estimate": CLOCK_HZ,
        "num_inputs": len(x),
        "repeatable": repeatable,
        "outputs_identical": True,
        "weight_bytes": manifest.get("weight_bytes"),
        "arena_bytes": manifest.get("arena_bytes"),
        "arena_mode": manifest.get("arena_mode"),  # reds export --arena (absent: before it)
        "counts": counts,
        "ram_nano33ble": ram,
    }
    if tflm_error is not None:
        result["tflm_error"] = tflm_error
    result.update(summarise(manifest, counts, memory, kind, layers, tflm))
    result["seconds"] = round(time.monotonic() - t0, 1)
    write_json_atomic(out_path, result)
    if markdown is not None:
        update_markdown(Path(markdown), render_markdown(result), result["name"])
    c = result["checks"]
    print(
        f"bench {result['name']}: full width {c['full_width_instr_per_mac_dsp']:.3f} instr/MAC "
        f"(DSP, the Nano's -Os flags), {c['full_width_instr_per_mac_dsp_o2']:.3f} (DSP, -O2), "
        f"{c['full_width_instr_per_mac_portable']:.3f} (portable), "
        f"{c['full_width_cycles_per_mac_dsp']:.3f} est. cycles/MAC (DSP); switch <= "
        f"{c['max_switch_instructions']} instr; latency vs MACs within "
        f"{c['max_proportionality_error']:.1%}; fits the Nano 33 BLE: "
        f"{'yes' if c['fits_nano33ble'] else 'NO'} ({ram['left_bytes']:,} B of RAM left); "
        f"outputs identical; {result['seconds']} s "
        f"-> {out_path}"
    )
    return result
