"""Build, serve and upload the REDS firmware (``reds firmware``).

The PlatformIO project in ``firmware/`` holds the portable core and the board
layers; the model comes from a run's generated runtime (``RUN_DIR/export/src``).
A build for run R and board B lives in ``R/firmware/``: the runtime is copied to
``R/firmware/lib/reds_model`` (found through ``lib_extra_dirs``) and PlatformIO's
workspace is ``R/firmware/.pio``, so builds of different runs never mix and the
checkout stays clean. PlatformIO's own state goes to ``firmware/.pio-core``.

Offline: ``qemu`` and ``native`` use local dev-platforms (``firmware/platform``)
and system compilers; PlatformIO's core package ``tool-scons`` is made from the
``scons`` Python package. ``nano33ble`` uses the stock ``nordicnrf52`` platform,
which PlatformIO downloads on the first build (internet needed once).
"""

from __future__ import annotations

import contextlib
import fcntl
import filecmp
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

try:
    import SCons
except ImportError:  # pragma: no cover - a broken install; reported where it is needed
    SCons = None

from reds_tf import resources, rundir
from reds_tf.boards import NANO33BLE, fit_problem, load_manifest
from reds_tf.errors import FirmwareError
from reds_tf.fsutil import atomic_dir, write_text_atomic

BOARDS = ("nano33ble", "qemu", "native")
FIRMWARE_DIR = resources.FIRMWARE_DIR
CORE_DIR = resources.platformio_core_dir()
# PlatformIO Core 6.2 asks for tool-scons ~4.41101.0 (= SCons 4.11.1).
TOOL_SCONS_VERSION = "4.41101.0"
# Arduino Nano 33 BLE: 1 MB flash minus the 64 KB bootloader, 256 KB RAM
# (reds_tf/boards.py holds them with the allowances of the fit check).
NANO33BLE_FLASH = NANO33BLE.flash_bytes
NANO33BLE_RAM = NANO33BLE.ram_bytes
QEMU_MACHINE = "mps2-an386"
# QEMU runs with -icount shift=4: the clock follows executed instructions, 16 ns
# each (62.5 MHz at one instruction per cycle, close to the nRF52840's 64 MHz),
# so latencies under QEMU are deterministic; without it QEMU's SysTick is
# unreliable for sub-millisecond timing.
QEMU_ICOUNT_SHIFT = 4
# The firmware's main stack (boards/qemu/mps2_an386.ld), part of the RAM figure.
QEMU_STACK_BYTES = 16 * 1024


@dataclass
class FirmwareBuild:
    """A built firmware: ``program`` is the ELF (qemu, nano33ble) or host executable."""

    board: str
    program: Path
    build_dir: Path
    flash_bytes: int | None = None
    ram_bytes: int | None = None


def check_fits(run_dir: Path, board: str) -> None:
    """Refuse a model too big for a real board (nano33ble) from its export's
    sizes, before anything is downloaded or compiled (see reds_tf.boards)."""
    if board != "nano33ble":
        return
    problem = fit_problem(load_manifest(run_dir), NANO33BLE)
    if problem is not None:
        raise FirmwareError(problem)


def _same_tree(a: Path, b: Path) -> bool:
    if not b.is_dir():
        return False
    names = sorted(p.name for p in a.iterdir() if p.is_file())
    if names != sorted(p.name for p in b.iterdir() if p.is_file()):
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    return not mismatch and not errors


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (parallel builds of one run, or core set-up)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_core_dir() -> Path:
    """Prepare ``firmware/.pio-core`` with a ``tool-scons`` package made from
    the installed ``scons`` module, so PlatformIO does not download it.

    PlatformIO only accepts the package when its ``.piopm`` names the owner
    ``platformio``; the launcher puts the installed SCons on ``sys.path``.
    """
    if SCons is None:  # pragma: no cover - a broken install
        raise FirmwareError(
            "the Python package 'scons' is missing: reinstall reds_tf (`make setup`)"
        )
    scons_parent = Path(SCons.__file__).resolve().parents[1]
    pkg = CORE_DIR / "packages" / "tool-scons"
    launcher = (
        "# PlatformIO's SCons entry point, made by reds_tf.firmware.\n"
        "import sys\n"
        f"sys.path.insert(0, {str(scons_parent)!r})\n"
        "import SCons.Script\n"
        "SCons.Script.main()\n"
    )
    with _locked(CORE_DIR / ".reds-setup.lock"):
        if (pkg / "scons.py").is_file() and (pkg / "scons.py").read_text() == launcher:
            return CORE_DIR
        with atomic_dir(pkg) as tmp:
            (tmp / "scons.py").write_text(launcher)
            manifest = {
                "name": "tool-scons",
                "version": TOOL_SCONS_VERSION,
                "description": f"SCons {SCons.__version__} from the installed Python package",
            }
            (tmp / "package.json").write_text(json.dumps(manifest, indent=2) + "\n")
            piopm = {
                "type": "tool",
                "name": "tool-scons",
                "version": TOOL_SCONS_VERSION,
                "spec": {
                    "owner": "platformio",
                    "id": None,
                    "name": "tool-scons",
                    "requirements": None,
                    "uri": None,
                },
            }
            (tmp / ".piopm").write_text(json.dumps(piopm) + "\n")
    return CORE_DIR


def _check_tools(board: str, serve: bool) -> None:
    needed: list[tuple[str, str]] = []
    if board == "qemu":
        needed += [
            ("arm-none-eabi-gcc", "gcc-arm-none-eabi libnewlib-arm-none-eabi"),
            ("arm-none-eabi-size", "binutils-arm-none-eabi"),
        ]
        if serve:
            needed.append(("qemu-system-arm", "qemu-system-arm"))
    elif board == "native":
        needed += [("gcc", "gcc"), ("g++", "g++")]
    for tool, package in needed:
        if shutil.which(tool) is None:
            raise FirmwareError(
                f"{tool} not found for the {board} firmware; install it "
                f"(Debian/Ubuntu: sudo apt-get install {package}, or `make setup` as root)"
            )


def _pio_env(run_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PLATFORMIO_CORE_DIR=str(ensure_core_dir()),
        PLATFORMIO_WORKSPACE_DIR=str(run_dir / "firmware" / ".pio"),
        PLATFORMIO_LIB_EXTRA_DIRS=str(run_dir / "firmware" / "lib"),
        PLATFORMIO_SETTING_ENABLE_TELEMETRY="No",
        PLATFORMIO_SETTING_CHECK_PLATFORMIO_INTERVAL="3650",
        PLATFORMIO_SETTING_CHECK_PLATFORMS_INTERVAL="3650",
        PLATFORMIO_SETTING_CHECK_PRUNE_SYSTEM_THRESHOLD="0",
        PLATFORMIO_NO_ANSI="true",
        PLATFORMIO_DISABLE_PROGRESSBAR="true",
    )
    return env


def elf_sizes(elf: Path) -> tuple[int, int]:
    """Flash and RAM bytes of an Arm ELF: flash = text + data, RAM = data + bss
    (bss includes the reserved stack)."""
    out = subprocess.run(
        ["arm-none-eabi-size", "-B", "-d", str(elf)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    text, data, bss = (int(v) for v in out[1].split()[:3])
    return text + data, data + bss


def size_report(build: FirmwareBuild) -> str:
    """One line about flash/RAM use against the Nano 33 BLE limits."""
    assert build.flash_bytes is not None and build.ram_bytes is not None
    return (
        f"firmware size ({build.board}): flash {build.flash_bytes} bytes "
        f"({100 * build.flash_bytes / NANO33BLE_FLASH:.1f}% of the Nano 33 BLE's "
        f"{NANO33BLE_FLASH // 1024} KB), RAM {build.ram_bytes} bytes incl. "
        f"{QEMU_STACK_BYTES // 1024} KB stack ({100 * build.ram_bytes / NANO33BLE_RAM:.1f}% "
        f"of {NANO33BLE_RAM // 1024} KB)"
    )


def _run_pio(args: list[str], run_dir: Path, log: IO[str], what: str) -> None:
    cmd = [sys.executable, "-m", "platformio", *args, "-d", str(FIRMWARE_DIR)]
    proc = subprocess.run(
        cmd, env=_pio_env(run_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    log.write(proc.stdout)
    log.flush()
    if proc.returncode != 0:
        hint = ""
        if "HTTPClientError" in proc.stdout or "Could not resolve" in proc.stdout:
            hint = (
                " PlatformIO could not reach its registry: the first nano33ble build downloads "
                "the nordicnrf52 platform, the Arm toolchain and the Arduino mbed core, so it "
                "needs internet once."
            )
        raise FirmwareError(f"{what} failed (`pio {' '.join(args)}`, output above).{hint}")


def build_firmware(
    run_dir: str | os.PathLike,
    board: str,
    *,
    log: IO[str] | None = None,
    trust: bool = False,
) -> FirmwareBuild:
    """Copy the run's generated runtime into its firmware build and build ``board``.

    Returns the program path and, for qemu, flash/RAM bytes from the ELF.
    PlatformIO's output goes to ``log`` (default stdout).

    Before any work: the fit check (nano33ble), ``export/src`` must be what
    the export generated (the build runs on this machine and the native
    firmware runs here; ``trust=True`` skips this), the tools, and the output
    folders (``RUN_DIR/firmware``, PlatformIO's ``firmware/.pio-core``) must be
    writable. An OSError while writing is one OutputError line.
    """
    log = log or sys.stdout
    if board not in BOARDS:
        raise FirmwareError(f"unknown board {board!r}; choose one of {', '.join(BOARDS)}")
    run_dir = Path(run_dir).resolve()  # PlatformIO runs from firmware/: relative paths would break
    rundir.export_src(run_dir)
    check_fits(run_dir, board)
    src = rundir.verify_sources(run_dir, trust=trust)
    _check_tools(board, serve=False)
    fw_dir = rundir.check_output_dir(run_dir / rundir.FIRMWARE, "the firmware build folder")
    rundir.check_output_dir(CORE_DIR, "PlatformIO's core folder")
    with rundir.output_errors(str(fw_dir)):
        return _build(run_dir, board, src, fw_dir, log)


def _clean_stale_lib(lib: Path) -> None:
    """Temp copies of the runtime left by a killed build (fsutil.atomic_dir);
    called with the build lock held, so none is in use."""
    for p in lib.parent.glob(f".{lib.name}.*.tmp"):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
    old = lib.with_name(f".{lib.name}.old")
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old)


def _build(run_dir: Path, board: str, src: Path, fw_dir: Path, log: IO[str]) -> FirmwareBuild:
    with _locked(fw_dir / ".build.lock"):
        lib = fw_dir / "lib" / "reds_model"
        _clean_stale_lib(lib)
        if not _same_tree(src, lib):
            with atomic_dir(lib) as tmp:
                for f in sorted(src.iterdir()):
                    if f.is_file():
                        shutil.copy2(f, tmp / f.name)
        _run_pio(["run", "-e", board], run_dir, log, f"building the {board} firmware")
    build_dir = fw_dir / ".pio" / "build" / board
    program = build_dir / ("program" if board == "native" else "program.elf")
    if not program.is_file():
        raise FirmwareError(f"the build finished but {program} is missing")
    build = FirmwareBuild(board=board, program=program, build_dir=build_dir)
    if board == "qemu":
        build.flash_bytes, build.ram_bytes = elf_sizes(program)
        write_text_atomic(
            build_dir / "size.json",
            json.dumps({"flash_bytes": build.flash_bytes, "ram_bytes": build.ram_bytes}) + "\n",
        )
        log.write(size_report(build) + "\n")
        if build.flash_bytes > NANO33BLE_FLASH or build.ram_bytes > NANO33BLE_RAM:
            log.write("warning: this model does not fit the Nano 33 BLE\n")
        log.flush()
    return build


class ServedFirmware:
    """A running qemu/native firmware whose serial port is a pseudo-terminal.

    Use as a context manager; ``port`` is the path for serial clients. The
    native program runs with stdin/stdout on the pty master; we keep the slave
    open so the firmware never sees end-of-file while clients come and go.
    """

    def __init__(self, build: FirmwareBuild, *, icount: int | None = QEMU_ICOUNT_SHIFT) -> None:
        self.build = build
        self._slave_fd: int | None = None
        if build.board == "native":
            master, slave = os.openpty()
            # raw: no echo of replies back into the firmware, no CR/LF rewriting
            tty.setraw(slave)
            self.proc = subprocess.Popen(
                [str(build.program)], stdin=master, stdout=master, close_fds=True
            )
            os.close(master)
            self._slave_fd = slave
            self.port = os.ttyname(slave)
        elif build.board == "qemu":
            _check_tools("qemu", serve=True)
            cmd = [
                "qemu-system-arm",
                "-M",
                QEMU_MACHINE,
                "-display",
                "none",
                "-monitor",
                "none",
                "-serial",
                "pty",
                "-kernel",
                str(build.program),
            ]
            if icount is not None:
                cmd += ["-icount", f"shift={icount}"]
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            self.port = self._qemu_port()
        else:
            raise FirmwareError(f"--serve runs qemu or native firmware, not {build.board}")

    def _qemu_port(self) -> str:
        assert self.proc.stdout is not None
        seen = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            m = re.search(r"char device redirected to (\S+)", line)
            if m:
                # keep draining QEMU's output so a full pipe never blocks it
                threading.Thread(target=self._drain, daemon=True).start()
                return m.group(1)
        self.close()
        raise FirmwareError("QEMU did not open a serial pty:\n" + "".join(seen))

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        with contextlib.suppress(ValueError, OSError):
            for line in self.proc.stdout:
                sys.stderr.write(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._slave_fd is not None:
            os.close(self._slave_fd)
            self._slave_fd = None

    def __enter__(self) -> ServedFirmware:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_firmware(
    run_dir: str | os.PathLike,
    board: str,
    serve: bool = False,
    upload: bool = False,
    trust: bool = False,
) -> int:
    """``reds firmware``: build; then serve on a pty (qemu, native: prints
    ``PORT <path>`` as the first stdout line, runs until interrupted) or upload
    (nano33ble). Returns the exit status."""
    if serve and upload:
        raise FirmwareError("choose --serve (qemu, native) or --upload (nano33ble), not both")
    if upload and board != "nano33ble":
        raise FirmwareError(f"--upload is for nano33ble; {board} firmware runs with --serve")
    if serve and board == "nano33ble":
        raise FirmwareError("--serve runs qemu or native firmware; flash a board with --upload")
    if serve:
        _check_tools(board, serve=True)
    # with --serve, stdout carries only the PORT line
    log = sys.stderr if serve else sys.stdout
    build = build_firmware(run_dir, board, log=log, trust=trust)
    if upload:
        with rundir.output_errors(str(Path(run_dir) / rundir.FIRMWARE)):
            _run_pio(["run", "-e", board, "-t", "upload"], Path(run_dir), log, "uploading")
        print("uploaded; open the monitor with: reds monitor --port <your board's port>")
        return 0
    if not serve:
        print(f"built {build.program}")
        return 0
    # SIGTERM (kill, a service manager) stops the server like Ctrl-C, so the
    # firmware process is shut down too instead of outliving us.
    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if on_main else None
    try:
        with ServedFirmware(build) as fw:
            print(f"PORT {fw.port}", flush=True)
            print(f"serving {board} firmware on {fw.port}; Ctrl-C stops it", file=sys.stderr)
            try:
                status = fw.proc.wait()
            except KeyboardInterrupt:
                return 0
    finally:
        if on_main:
            signal.signal(signal.SIGTERM, previous)
    if status != 0:
        raise FirmwareError(f"the {board} firmware exited with status {status}")
    return 0
