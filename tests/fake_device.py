"""A stand-in for REDS firmware on a pseudo-terminal, for the monitor's fault
tests: it answers the serial protocol from a thread, can report any ``info``
(another model's fingerprint, none, broken fields), stay silent, and vanish
after a number of command lines the way an unplugged board does (its end of the
pty closes, so the client's reads and writes fail with EIO)."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import threading
import tty
from pathlib import Path
from typing import Any

DEFAULT_INFO: dict[str, Any] = {
    "ok": True,
    "model": "fake",
    "submodels": 2,
    "active": 1,
    "macs": [10, 20],
    "input_size": 4,
    "input_scale": 0.5,
    "input_zero_point": 0,
    "weight_bytes": 100,
    "arena_bytes": 16,
    "fingerprint": "0123456789abcdef",
}
# What newer firmware adds to ``info`` (DEFAULT_INFO is an older firmware's
# reply, without them): the stack high-water mark and size (-1 where the board
# cannot tell) and the serial buffers' bytes.
RAM_INFO: dict[str, Any] = {
    "stack_bytes": 1234,
    "stack_size_bytes": 16384,
    "serial_buffer_bytes": 900,
}


def info_of_run(run: Path, **changes: Any) -> dict[str, Any]:
    """An ``info`` reply describing an exported run, newer firmware's RAM
    fields included (:data:`RAM_INFO`), with ``changes`` applied (a key set to
    None is left out)."""
    manifest = json.loads((run / "export" / "manifest.json").read_text())
    size = 1
    for d in manifest["input_shape"]:
        size *= int(d)
    info = {
        "ok": True,
        "model": manifest["name"],
        "submodels": len(manifest["submodels"]),
        "active": len(manifest["submodels"]) - 1,
        "macs": [int(s["macs"]) for s in manifest["submodels"]],
        "input_size": size,
        "input_scale": manifest["input_scale"],
        "input_zero_point": manifest["input_zero_point"],
        "weight_bytes": manifest["weight_bytes"],
        "arena_bytes": manifest["arena_bytes"],
        "fingerprint": manifest["fingerprint"],
        **RAM_INFO,
    }
    info.update(changes)
    return {k: v for k, v in info.items() if v is not None}


class FakeDevice:
    """``port``: the pty's path (also symlinked from ``link`` if given).

    ``info``: the ``info`` reply; ``silent``: never answer; ``vanish_after``:
    close the pty on receiving that many command lines (counting the monitor's
    own ``info`` at connect), before answering the last; ``lifetime``: seconds
    after which the device goes away anyway (so a forgotten one ends)."""

    def __init__(
        self,
        info: dict[str, Any] | None = None,
        *,
        silent: bool = False,
        vanish_after: int | None = None,
        link: Path | None = None,
        lifetime: float = 60.0,
    ):
        self.info = dict(DEFAULT_INFO if info is None else info)
        self.silent = silent
        self.vanish_after = vanish_after
        self.lifetime = lifetime
        self.lines: list[bytes] = []
        self._master, self._slave = pty.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        if link is not None:
            link.symlink_to(self.port)
        self._stop = threading.Event()
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def __enter__(self) -> FakeDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._vanish()

    def _vanish(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                for fd in (self._master, self._slave):
                    with contextlib.suppress(OSError):
                        os.close(fd)

    def _reply(self, line: str) -> dict[str, Any]:
        words = line.split()
        cmd = words[0] if words else ""
        if cmd == "info":
            return self.info
        if cmd == "use" and len(words) == 2 and words[1].isdigit():
            self.info["active"] = int(words[1])
            return {"ok": True, "active": int(words[1]), "switch_us": 1}
        if cmd == "infer":
            return {"ok": True, "active": 0, "class": 0, "output": [0, 0], "latency_us": 5}
        if cmd == "bench":
            return {"ok": True, "latency_us": [5, 9], "switch_us": 1}
        if cmd == "budget":
            return {"ok": True, "active": 1, "latency_us": 9}
        return {"ok": False, "error": "unknown command"}

    def _serve(self) -> None:
        buf = b""
        deadline = threading.Event()
        timer = threading.Timer(self.lifetime, deadline.set)
        timer.daemon = True
        timer.start()
        try:
            while not self._stop.is_set() and not deadline.is_set():
                ready, _, _ = select.select([self._master], [], [], 0.05)
                if not ready:
                    continue
                try:
                    data = os.read(self._master, 4096)
                except OSError:
                    return
                if not data:
                    return
                buf += data.replace(b"\r", b"\n")
                while b"\n" in buf:
                    raw, buf = buf.split(b"\n", 1)
                    if not raw.strip():
                        continue
                    self.lines.append(raw)
                    if self.vanish_after is not None and len(self.lines) >= self.vanish_after:
                        return  # unplugged: the finally closes the pty
                    if not self.silent:
                        reply = self._reply(raw.decode("ascii", "replace"))
                        os.write(self._master, json.dumps(reply).encode() + b"\n")
        finally:
            timer.cancel()
            if self.vanish_after is not None or deadline.is_set():
                self._vanish()
