"""Client for the REDS firmware's serial protocol (see ``firmware/src/reds_fw.h``).

One ASCII command line out, exactly one JSON line back. ``RedsClient`` wraps a
pyserial port; it works the same with a Nano 33 BLE, QEMU's pty or the native
firmware's pty. A device that goes away mid-session (a board unplugged, an
emulator that exited) raises :class:`DisconnectedError`, whatever pyserial or
the OS reported.
"""

from __future__ import annotations

import contextlib
import errno
import json
import time
from typing import Any

import numpy as np
import serial

from reds_tf.errors import RedsError


class ProtocolError(RedsError):
    """The firmware did not answer, or answered something that is not a reply."""


class DisconnectedError(ProtocolError):
    """The serial device went away mid-session: reads or writes fail."""


# What pyserial and the OS raise when the device behind an open port vanishes:
# SerialException (e.g. "device reports readiness to read but returned no
# data"), OSError (EIO, ENXIO, ENODEV) and, from tcflush, termios.error.
_DEVICE_ERRORS: tuple[type[BaseException], ...] = (serial.SerialException, OSError)
with contextlib.suppress(ImportError):  # no termios on Windows
    import termios

    _DEVICE_ERRORS += (termios.error,)


class CommandError(RedsError):
    """The firmware answered ``{"ok": false, "error": ...}``."""

    def __init__(self, message: str, reply: dict[str, Any]):
        super().__init__(message)
        self.reply = reply


# The fields each ok reply must carry, and their types: "int" (not bool),
# "number" (int or float), "ints" (a list of ints), or a Python type.
REPLY_FIELDS: dict[str, dict[str, Any]] = {
    "info": {
        "model": str, "submodels": "int", "active": "int", "macs": "ints",
        "input_size": "int", "input_scale": "number", "input_zero_point": "int",
        "weight_bytes": "int", "arena_bytes": "int",
    },
    "use": {"active": "int", "switch_us": "int"},
    "infer": {"active": "int", "class": "int", "output": "ints", "latency_us": "int"},
    "bench": {"latency_us": "ints", "switch_us": "int"},
    "budget": {"active": "int", "latency_us": "int"},
}  # fmt: skip

# Fields that newer firmware adds and older firmware lacks: checked only when
# present. info's RAM picture: the stack high-water mark and the stack's size
# (-1: the board cannot tell, e.g. native) and the serial buffers' bytes.
OPTIONAL_FIELDS: dict[str, dict[str, Any]] = {
    "info": {"stack_bytes": "int", "stack_size_bytes": "int", "serial_buffer_bytes": "int"},
}


def _is(value: Any, kind: Any) -> bool:
    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if kind == "int":
        return is_int(value)
    if kind == "number":
        return is_int(value) or isinstance(value, float)
    if kind == "ints":
        return isinstance(value, list) and all(is_int(v) for v in value)
    return isinstance(value, kind)


def check_reply(command: str, reply: dict[str, Any]) -> dict[str, Any]:
    """Raise :class:`ProtocolError` unless an ok reply to ``command`` (info,
    use, infer, bench, budget) has its fields with the right types; returns it."""
    text = json.dumps(reply)[:160]
    for name, kind in REPLY_FIELDS[command].items():
        if not _is(reply.get(name), kind):
            raise ProtocolError(
                f"the device's reply to {command!r} lacks a valid {name!r}: {text} "
                "(is it REDS firmware?)"
            )
    for name, kind in OPTIONAL_FIELDS.get(command, {}).items():
        if name in reply and not _is(reply[name], kind):
            raise ProtocolError(
                f"the device's reply to {command!r} has an invalid {name!r}: {text}"
            )
    if command == "info":
        if any(reply.get(n, 0) < -1 for n in ("stack_bytes", "stack_size_bytes")) or (
            reply.get("serial_buffer_bytes", 0) < 0
        ):
            raise ProtocolError(f"the device's info reply is inconsistent: {text}")
        k = reply["submodels"]
        if k < 1 or len(reply["macs"]) != k or reply["input_size"] < 1:
            raise ProtocolError(f"the device's info reply is inconsistent: {text}")
        if not isinstance(reply.get("fingerprint", ""), str):
            raise ProtocolError(f"the device's info reply has a non-string fingerprint: {text}")
    if command == "infer" and not all(-128 <= v <= 127 for v in reply["output"]):
        raise ProtocolError(f"the device's infer output is not int8: {text}")
    if command == "bench" and not reply["latency_us"]:
        raise ProtocolError(f"the device's bench reply has no latencies: {text}")
    return reply


def _ascii(line: str) -> bytes:
    """The protocol is ASCII: a command with other characters is refused here
    (the firmware would answer it, but with an error about bytes the user never
    typed)."""
    try:
        return line.encode("ascii")
    except UnicodeEncodeError as e:
        bad = line[e.start]
        raise ProtocolError(
            f"commands are ASCII; {line[:80]!r} has {bad!r} (U+{ord(bad):04X}) at position "
            f"{e.start}"
        ) from None


def _open_problem(e: BaseException) -> str:
    """Why a port did not open, without pyserial's repetitions, with the usual fix."""
    cause = e.__context__ if e.__context__ is not None else e
    code = getattr(cause, "errno", None)
    if code is None and cause.args and isinstance(cause.args[0], int):
        code = cause.args[0]  # termios.error(errno, text)
    text = getattr(cause, "strerror", None) or (
        cause.args[1] if len(cause.args) == 2 and isinstance(cause.args[1], str) else str(e)
    )
    if code == errno.ENOTTY:
        return f"not a serial device ({text})"
    if code == errno.ENOENT:
        return f"{text} (is the board plugged in? Linux: ls /dev/ttyACM*)"
    if code in (errno.EACCES, errno.EPERM):
        return f"{text} (Linux: add yourself to the port's group, e.g. dialout, and log in again)"
    if code == errno.EBUSY:
        return f"{text} (another program, e.g. a serial monitor, has it open)"
    return text


class RedsClient:
    """A connection to REDS firmware.

    ``command(line)`` returns the reply dict (``ok`` true or false);
    ``info``/``use``/``infer``/``bench``/``budget`` raise :class:`CommandError`
    on an ``ok: false`` reply. ``timeout`` is seconds per reply.
    """

    def __init__(self, port: str, baud: int = 115200, timeout: float = 10.0, *, sync: bool = True):
        try:
            self.serial = serial.Serial(port, baud, timeout=timeout, write_timeout=timeout)
        except (*_DEVICE_ERRORS, ValueError, OverflowError) as e:
            # ValueError / OverflowError: a baud rate or timeout pyserial refuses
            raise ProtocolError(f"cannot open serial port {port}: {_open_problem(e)}") from e
        self.port = port
        self.timeout = timeout
        self.info_cache: dict[str, Any] = {}
        if sync:
            self.sync()

    def close(self) -> None:
        # closing a vanished device can fail too; there is nothing left to do
        with contextlib.suppress(*_DEVICE_ERRORS):
            self.serial.close()

    def __enter__(self) -> RedsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- raw lines -----------------------------------------------------------------

    def _disconnected(self, e: BaseException) -> DisconnectedError:
        return DisconnectedError(
            f"the serial device {self.port} disconnected ({e}); reconnect the board and "
            f"start again (after a replug the port may have another name)"
        )

    def _readline(self) -> bytes:
        try:
            return self.serial.readline()
        except _DEVICE_ERRORS as e:
            raise self._disconnected(e) from e

    def write_line(self, line: bytes | str) -> None:
        if isinstance(line, str):
            line = _ascii(line)
        try:
            self.serial.write(line + b"\n")
        except serial.SerialTimeoutException as e:
            raise ProtocolError(
                f"writing to {self.port} timed out after {self.timeout:g} s "
                "(is the firmware running and reading?)"
            ) from e
        except _DEVICE_ERRORS as e:
            raise self._disconnected(e) from e

    def read_reply(self) -> dict[str, Any]:
        """Read one reply line and parse it."""
        raw = self._readline()
        if not raw.endswith(b"\n"):
            raise ProtocolError(
                f"no reply from {self.port} within {self.timeout:g} s"
                + (f" (partial: {raw[:80]!r})" if raw else "")
            )
        try:
            reply = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ProtocolError(f"reply is not JSON: {raw[:120]!r}") from e
        if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
            raise ProtocolError(f"reply lacks the 'ok' field: {raw[:120]!r}")
        return reply

    def command(self, line: bytes | str) -> dict[str, Any]:
        """Send one command line (without line ending) and return its reply.

        The firmware answers every line but an empty (or blank) one, and CR ends
        a line like LF: such lines would leave no reply or two, so they are
        refused here."""
        raw = _ascii(line) if isinstance(line, str) else line
        if b"\r" in raw or b"\n" in raw:
            raise ProtocolError(f"a command is one line, without CR or LF: {raw[:80]!r}")
        if not raw.strip(b" \t"):
            raise ProtocolError("an empty line is not a command (the firmware does not answer it)")
        self.write_line(raw)
        return self.read_reply()

    def sync(self) -> dict[str, Any]:
        """Drop stale input (e.g. replies to a previous client's commands) and
        return a fresh ``info`` reply."""
        try:
            self.serial.reset_input_buffer()
        except _DEVICE_ERRORS as e:
            raise self._disconnected(e) from e
        self.write_line("info")
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            raw = self._readline()
            if not raw:
                break
            try:
                reply = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(reply, dict) and reply.get("ok") and "input_size" in reply:
                self.info_cache = check_reply("info", reply)
                return reply
        raise ProtocolError(
            f"no REDS firmware answered on {self.port} within {self.timeout:g} s "
            "(is it the right port, and is the firmware flashed?)"
        )

    # -- commands --------------------------------------------------------------------

    def _ok(self, line: str) -> dict[str, Any]:
        reply = self.command(line)
        if not reply["ok"]:
            raise CommandError(f"firmware error: {reply.get('error')}", reply)
        return check_reply(line.split()[0], reply)

    def info(self) -> dict[str, Any]:
        self.info_cache = self._ok("info")
        return self.info_cache

    def use(self, k: int) -> dict[str, Any]:
        return self._ok(f"use {int(k)}")

    def infer(self, x: np.ndarray) -> dict[str, Any]:
        """Run the active submodel on one int8 input (any shape, ``input_size``
        elements); the reply's ``output`` is the int8 output vector."""
        x = np.asarray(x)
        if x.dtype != np.int8:
            raise RedsError(f"infer needs int8 input, got {x.dtype}")
        return self._ok("infer " + x.reshape(-1).view(np.uint8).tobytes().hex())

    def bench(self) -> dict[str, Any]:
        return self._ok("bench")

    def budget(self, us: int) -> dict[str, Any]:
        return self._ok(f"budget {int(us)}")
