"""Client for the REDS firmware's serial protocol (see ``firmware/src/reds_fw.h``).

One ASCII command line out, exactly one JSON line back. ``RedsClient`` wraps a
pyserial port; it works the same with a Nano 33 BLE, QEMU's pty or the native
firmware's pty.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from reds_tf.errors import RedsError


class ProtocolError(RedsError):
    """The firmware did not answer, or answered something that is not a reply."""


class CommandError(RedsError):
    """The firmware answered ``{"ok": false, "error": ...}``."""

    def __init__(self, message: str, reply: dict[str, Any]):
        super().__init__(message)
        self.reply = reply


class RedsClient:
    """A connection to REDS firmware.

    ``command(line)`` returns the reply dict (``ok`` true or false);
    ``info``/``use``/``infer``/``bench``/``budget`` raise :class:`CommandError`
    on an ``ok: false`` reply. ``timeout`` is seconds per reply.
    """

    def __init__(self, port: str, baud: int = 115200, timeout: float = 10.0, *, sync: bool = True):
        import serial

        try:
            self.serial = serial.Serial(port, baud, timeout=timeout, write_timeout=timeout)
        except (serial.SerialException, OSError) as e:
            raise ProtocolError(f"cannot open serial port {port}: {e}") from e
        self.port = port
        self.timeout = timeout
        self.info_cache: dict[str, Any] = {}
        if sync:
            self.sync()

    def close(self) -> None:
        self.serial.close()

    def __enter__(self) -> RedsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- raw lines -----------------------------------------------------------------

    def write_line(self, line: bytes | str) -> None:
        if isinstance(line, str):
            line = line.encode("ascii")
        self.serial.write(line + b"\n")

    def read_reply(self) -> dict[str, Any]:
        """Read one reply line and parse it."""
        raw = self.serial.readline()
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
        raw = line.encode("ascii") if isinstance(line, str) else line
        if b"\r" in raw or b"\n" in raw:
            raise ProtocolError(f"a command is one line, without CR or LF: {raw[:80]!r}")
        if not raw.strip(b" \t"):
            raise ProtocolError("an empty line is not a command (the firmware does not answer it)")
        self.write_line(raw)
        return self.read_reply()

    def sync(self) -> dict[str, Any]:
        """Drop stale input (e.g. replies to a previous client's commands) and
        return a fresh ``info`` reply."""
        self.serial.reset_input_buffer()
        self.write_line("info")
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            raw = self.serial.readline()
            if not raw:
                break
            try:
                reply = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(reply, dict) and reply.get("ok") and "input_size" in reply:
                self.info_cache = reply
                return reply
        raise ProtocolError(
            f"no REDS firmware answered on {self.port} within {self.timeout:g} s "
            "(is it the right port, and is the firmware flashed?)"
        )

    # -- commands --------------------------------------------------------------------

    def _ok(self, line: bytes | str) -> dict[str, Any]:
        reply = self.command(line)
        if not reply["ok"]:
            raise CommandError(f"firmware error: {reply.get('error')}", reply)
        return reply

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
