"""Bad inputs and faults of ``reds monitor`` for RELIABILITY.md (collected and
run by tests/test_reliability.py).

The serial devices are tests/fake_device.py on a pseudo-terminal, symlinked as
``{tmp}/port``: a REDS firmware stand-in that can stay silent, report another
model, report broken fields or vanish like an unplugged board. A ``setup``
returns the device; the runner closes it after the command. ``stdin`` is what
the interactive prompt reads. Every case ends before any data set loads.
The real firmware and the slower faults are in tests/test_monitor.py and
tests/test_monitor_faults.py (listed in ``FAULTS``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fake_device import FakeDevice, info_of_run

M = "monitor"
PORT = ["monitor", "--port", "{tmp}/port"]
DEMO = [*PORT, "--demo", "{run}"]


def device(tmp: Path, run: Path) -> FakeDevice:
    return FakeDevice(link=tmp / "port")


def silent_device(tmp: Path, run: Path) -> FakeDevice:
    return FakeDevice(silent=True, link=tmp / "port")


def vanishing_device(tmp: Path, run: Path) -> FakeDevice:
    """Answers the monitor's own info at connect, then is unplugged."""
    return FakeDevice(vanish_after=2, link=tmp / "port")


def not_reds_firmware(tmp: Path, run: Path) -> FakeDevice:
    info = {"ok": True, "input_size": 4, "model": "other", "submodels": 3, "macs": [1]}
    return FakeDevice(info, link=tmp / "port")


def another_models_firmware(tmp: Path, run: Path) -> FakeDevice:
    return FakeDevice(info_of_run(run, fingerprint="ffffffffffffffff"), link=tmp / "port")


def firmware_without_fingerprint(tmp: Path, run: Path) -> FakeDevice:
    return FakeDevice(info_of_run(run, fingerprint=None), link=tmp / "port")


def a_folder(tmp: Path, run: Path) -> None:
    (tmp / "port").mkdir()


def a_file(tmp: Path, run: Path) -> None:
    (tmp / "port").write_text("not a serial port\n")


CASES: list[dict[str, Any]] = [
    {"area": M, "input": "--baud -5",
     "argv": [*PORT, "--baud", "-5"], "setup": "device", "exit": 2,
     "message": "--baud must be a whole number from 1 to 2147483647, got -5"},
    {"area": M, "input": "--baud 0 (would hang up the line)",
     "argv": [*PORT, "--baud", "0"], "setup": "device", "exit": 2,
     "message": "--baud must be a whole number from 1"},
    {"area": M, "input": "--baud 99999999999",
     "argv": [*PORT, "--baud", "99999999999"], "setup": "device", "exit": 2,
     "message": "--baud must be a whole number from 1"},
    {"area": M, "input": "--timeout -1",
     "argv": [*PORT, "--timeout", "-1"], "setup": "device", "exit": 2,
     "message": "--timeout must be a number of seconds above 0"},
    {"area": M, "input": "--timeout nan",
     "argv": [*PORT, "--timeout", "nan"], "setup": "device", "exit": 2,
     "message": "--timeout must be a number of seconds above 0"},
    {"area": M, "input": "--samples 0 with --demo",
     "argv": [*DEMO, "--samples", "0"], "setup": "device", "exit": 2,
     "message": "--samples must be at least 1"},
    {"area": M, "input": "--port that does not exist",
     "argv": ["monitor", "--port", "{tmp}/missing"], "exit": 2,
     "message": "cannot open serial port {tmp}/missing"},
    {"area": M, "input": "--port a folder",
     "argv": PORT, "setup": "a_folder", "exit": 2,
     "message": "cannot open serial port {tmp}/port"},
    {"area": M, "input": "--port a regular file",
     "argv": PORT, "setup": "a_file", "exit": 2,
     "message": "cannot open serial port {tmp}/port"},
    {"area": M, "input": "a port where nothing answers",
     "argv": [*PORT, "--timeout", "0.5"], "setup": "silent_device", "exit": 2,
     "message": "no REDS firmware answered on {tmp}/port within 0.5 s"},
    {"area": M, "input": "a device whose info reply is not REDS firmware's",
     "argv": PORT, "setup": "not_reds_firmware", "exit": 2,
     "message": "the device's reply to 'info' lacks a valid 'active'"},
    {"area": M, "input": "interactive: `use é` (non-ASCII), then `use 0`",
     "argv": PORT, "setup": "device", "stdin": "use é\nuse 0\nquit\n", "exit": 0,
     "message": "error: commands are ASCII; 'use é' has 'é' (U+00E9) at position 4"},
    {"area": M, "input": "interactive: bytes that are not UTF-8 on stdin",
     "argv": PORT, "setup": "device", "stdin": b"use \xff\xfe\ninfo\n", "exit": 0,
     "message": "error: commands are ASCII"},
    {"area": M, "input": "device unplugged mid-session (after connecting)",
     "argv": PORT, "setup": "vanishing_device", "stdin": "use 0\nuse 1\n", "exit": 2,
     "message": "the serial device {tmp}/port disconnected"},
    {"area": M, "input": "--demo with firmware of another model (fingerprint differs)",
     "argv": DEMO, "setup": "another_models_firmware", "exit": 2,
     "message": "with fingerprint 'ffffffffffffffff', but {run} exported"},
    {"area": M, "input": "--demo with firmware built before fingerprints",
     "argv": DEMO, "setup": "firmware_without_fingerprint", "exit": 2,
     "message": "reports no model fingerprint"},
    {"area": M, "input": "--demo with a run directory that does not exist",
     "argv": [*PORT, "--demo", "{tmp}/no-run"], "setup": "device", "exit": 2,
     "message": "run directory {tmp}/no-run does not exist"},
]  # fmt: skip

T = "tests/test_monitor_faults.py::"
FAULTS: list[dict[str, Any]] = [
    {"area": M, "input": "device unplugged during --demo (at the first `use`)",
     "outcome": "exit 2, one line: the serial device ... disconnected (...); reconnect the board",
     "test": T + "test_demo_device_vanishing"},
    {"area": M, "input": "device gone on write, and on the input flush of a new sync",
     "outcome": "DisconnectedError (pyserial's SerialException, OSError, termios.error)",
     "test": T + "test_device_vanishing_on_write_and_flush"},
    {"area": M, "input": "info replies with a wrong type, inconsistent macs, input_size 0",
     "outcome": "exit 2, one line: the device's info reply ...",
     "test": T + "test_info_reply_of_something_else_is_refused"},
    {"area": M, "input": "--demo against the real native firmware of another export",
     "outcome": "refused before any sample (CLI and run_demo), fingerprints named",
     "test": "tests/test_monitor.py::test_demo_refuses_firmware_of_another_model"},
    {"area": M, "input": "10,000 random lines to the native firmware (200 under QEMU)",
     "outcome": "one JSON reply per line, no crash or hang, state unchanged by errors",
     "test": "tests/test_firmware_protocol.py::test_random_lines_do_not_crash_or_hang"},
    {"area": "files", "input": "umask 022, 077, 002: atomic files and folders",
     "outcome": "0666 & ~umask and 0777 & ~umask, like open() and mkdir()",
     "test": "tests/test_fsutil.py::test_atomic_writes_follow_the_umask"},
    {"area": "files", "input": "every file of a trained and exported run",
     "outcome": "the umask's mode, .keras and atomically written files alike",
     "test": "tests/test_fsutil.py::test_exported_run_follows_the_umask"},
]  # fmt: skip
