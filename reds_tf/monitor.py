"""``reds monitor``: talk to REDS firmware over a serial port.

Interactive: a prompt that sends each line as a command and prints the JSON
reply. ``--demo RUN_DIR``: quantise test samples of the run's data set, run
them through every submodel on the device and print accuracy, latency and
switch time per submodel, then show the latency budget policy at work. The
demo first checks that the firmware runs the run's model: the ``fingerprint``
of its ``info`` reply (REDS_MODEL_FINGERPRINT, a hash of the weights and
quantisation parameters) must equal the export's.

Every failure is one line: bad arguments before the port is opened, a device
that vanishes mid-session ends it saying so (:class:`DisconnectedError`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from reds_tf import rundir
from reds_tf.errors import RedsError, RunDirError
from reds_tf.serial_protocol import (
    CommandError,
    DisconnectedError,
    ProtocolError,
    RedsClient,
    check_reply,
)

HELP = """commands (one per line, the firmware answers each with one JSON line):
  info          model, submodels, MACs, input quantisation, memory (arena, stack
                high-water mark, serial buffers)
  use K         switch to submodel K (0 = smallest)
  infer HEX     run the active submodel; HEX = 2 hex digits per int8 input byte
  bench         measure every submodel's latency on the device
  budget US     activate the largest submodel whose latency fits US microseconds
  help, quit"""


@dataclass
class DemoRow:
    """Device results of one submodel over the demo samples."""

    submodel: int
    macs: int
    samples: int
    accuracy: float  # on the device, these samples
    int8_accuracy: float | None  # from the export manifest (its evaluation set)
    latency_us: float  # mean of the infer replies
    switch_us: int  # from the `use` reply
    outputs: np.ndarray  # (samples, classes) int8, as returned by the device


MAX_BAUD = 2**31 - 1  # what termios takes
MAX_TIMEOUT = 86_400.0  # a day; select() refuses far larger timeouts
FINGERPRINT_RE = re.compile(r"[0-9a-f]{16}")


def check_arguments(baud: int, timeout: float, samples: int) -> None:
    """Refuse values pyserial or the demo would fail on, before the port opens."""
    if isinstance(baud, bool) or not isinstance(baud, int) or not 1 <= baud <= MAX_BAUD:
        raise RedsError(f"--baud must be a whole number from 1 to {MAX_BAUD}, got {baud!r}")
    if not isinstance(timeout, int | float) or not (
        math.isfinite(timeout) and 0 < timeout <= MAX_TIMEOUT
    ):
        raise RedsError(
            f"--timeout must be a number of seconds above 0 and at most {MAX_TIMEOUT:g}, "
            f"got {timeout!r}"
        )
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise RedsError(f"--samples must be at least 1, got {samples!r}")


def _run_manifest(run_dir: str | os.PathLike) -> dict:
    if not Path(run_dir).is_dir():
        raise RunDirError(f"run directory {run_dir} does not exist")
    manifest = rundir.load_manifest(run_dir)
    rundir.check_export_current(run_dir, manifest)
    return manifest


def run_fingerprint(run_dir: str | os.PathLike, manifest: dict) -> str:
    """The exported model's fingerprint: ``manifest.json``'s, else (an export
    from before the manifest recorded it) the generated ``reds_model.h``'s."""
    fp = manifest.get("fingerprint")
    source = Path(run_dir) / rundir.MANIFEST
    if fp is None:
        header = source = Path(run_dir) / rundir.EXPORT_SRC / "reds_model.h"
        try:
            m = re.search(r'#define REDS_MODEL_FINGERPRINT "([^"]*)"', header.read_text("utf-8"))
        except (OSError, UnicodeDecodeError):
            m = None
        if m is None:
            raise RunDirError(
                f"{run_dir} was exported before exports had a model fingerprint: run "
                f"`reds export {run_dir}` and flash its firmware again"
            )
        fp = m.group(1)
    if not isinstance(fp, str) or not FINGERPRINT_RE.fullmatch(fp):
        raise RunDirError(
            f"{source} has a malformed model fingerprint {fp!r}: re-run `reds export {run_dir}`"
        )
    return fp


def ram_summary(info: dict) -> str:
    """The RAM fields of an ``info`` reply that newer firmware adds, as text
    (``""`` for older firmware without them): serial buffers, and the stack
    high-water mark when the board measures it."""
    parts = []
    if "serial_buffer_bytes" in info:
        parts.append(f"{info['serial_buffer_bytes']} serial buffer bytes")
    stack, size = info.get("stack_bytes"), info.get("stack_size_bytes")
    if isinstance(stack, int) and stack >= 0:
        of = f" of {size}" if isinstance(size, int) and size > 0 else ""
        parts.append(f"stack high-water {stack}{of} bytes")
    elif "stack_bytes" in info:
        parts.append("stack high-water unknown on this board")
    return "".join(", " + p for p in parts)


def check_firmware(info: dict, run_dir: str | os.PathLike, manifest: dict) -> None:
    """Refuse a device whose model is not the run's: the numbers of the demo
    would mix two models."""
    want = run_fingerprint(run_dir, manifest)
    got = info.get("fingerprint")
    flash = f"flash this run's firmware first (`reds firmware {run_dir} --board ...`)"
    if got is None:
        raise RedsError(
            f"the firmware runs model {info.get('model')!r} and reports no model fingerprint "
            f"(built before fingerprints): {flash}"
        )
    if got != want:
        raise RedsError(
            f"the firmware runs model {info.get('model')!r} with fingerprint {got!r}, but "
            f"{run_dir} exported {manifest.get('name')!r} with fingerprint {want!r}: {flash}"
        )


def demo_inputs(run_dir: str | os.PathLike, samples: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """The first ``samples`` test inputs of the run's data set quantised like the
    exported model's input: returns (x int8 (N, *input_shape), labels (N,), manifest)."""

    run_dir = Path(run_dir)
    manifest = _run_manifest(run_dir)
    if samples < 1:
        raise RedsError(f"--samples must be at least 1, got {samples}")
    x, y = rundir.quantized_test_set(run_dir, manifest, samples)
    return x, y, manifest


def run_demo(
    client: RedsClient,
    run_dir: str | os.PathLike,
    samples: int = 100,
    progress: Callable[[str], None] | None = None,
) -> list[DemoRow]:
    """Send ``samples`` test inputs through every submodel; restores nothing
    (the largest submodel is active afterwards). Refuses firmware of another
    model (its fingerprint) before loading any data."""
    info = client.info()
    check_firmware(info, run_dir, _run_manifest(run_dir))
    x, y, manifest = demo_inputs(run_dir, samples)
    if info["input_size"] != int(np.prod(x.shape[1:])) or info["submodels"] != len(
        manifest["submodels"]
    ):
        raise RedsError(
            f"the firmware runs model {info['model']!r} ({info['submodels']} submodels, input "
            f"size {info['input_size']}) but {run_dir} exported {manifest['name']!r} "
            f"({len(manifest['submodels'])} submodels): flash this run's firmware first"
        )
    rows = []
    for k in range(info["submodels"]):
        switch = client.use(k)["switch_us"]
        outs, lat = [], []
        for i in range(len(x)):
            r = client.infer(x[i])
            outs.append(r["output"])
            lat.append(r["latency_us"])
        out = np.asarray(outs, np.int8)
        acc = float(np.mean(np.argmax(out, axis=1) == y))
        rows.append(
            DemoRow(
                submodel=k,
                macs=int(info["macs"][k]),
                samples=len(x),
                accuracy=acc,
                int8_accuracy=manifest["submodels"][k].get("int8_accuracy"),
                latency_us=float(np.mean(lat)),
                switch_us=int(switch),
                outputs=out,
            )
        )
        if progress:
            progress(f"submodel {k}: {len(x)} samples done")
    return rows


def format_demo(rows: list[DemoRow]) -> str:
    """The demo table as aligned text."""
    head = ["submodel", "MACs", "accuracy", "int8 acc (export)", "latency us", "switch us"]
    body = [
        [
            str(r.submodel),
            f"{r.macs:,}",
            f"{r.accuracy:.3f} ({r.samples})",
            "-" if r.int8_accuracy is None else f"{r.int8_accuracy:.3f}",
            f"{r.latency_us:.0f}",
            str(r.switch_us),
        ]
        for r in rows
    ]
    widths = [max(len(c) for c in col) for col in zip(head, *body, strict=True)]

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))

    return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *map(fmt, body)])


def budget_demo(client: RedsClient) -> list[tuple[int, dict]]:
    """Ask for each submodel's measured latency as a budget (and one below the
    fastest): returns (budget, reply) pairs; replies may be errors."""
    lat = client.bench()["latency_us"]
    budgets = sorted({max(0, min(lat) - 1), *lat})
    out = []
    for b in budgets:
        reply = client.command(f"budget {b}")
        if reply["ok"]:
            check_reply("budget", reply)
        elif not isinstance(reply.get("error"), str):
            raise ProtocolError(f"the device's error reply lacks its 'error': {reply}")
        out.append((b, reply))
    return out


def _interactive(client: RedsClient, stdin: IO[str], stdout: IO[str]) -> int:
    info = client.info_cache
    print(
        f"connected to {client.port}: model {info.get('model')} (fingerprint "
        f"{info.get('fingerprint', 'none')}), {info.get('submodels')} submodels, active "
        f"{info.get('active')}. Type 'help' for commands.",
        file=stdout,
        flush=True,
    )
    interactive = stdin.isatty()
    while True:
        try:
            if interactive:
                try:
                    line = input("reds> ")
                except EOFError:
                    print(file=stdout)
                    return 0
            else:
                line = stdin.readline()
                if not line:
                    return 0
        except UnicodeDecodeError as e:  # stdin with strict decoding
            print(f"error: input is not {e.encoding} text ({e.reason})", file=stdout, flush=True)
            continue
        line = line.strip()
        if not line:
            continue
        if line in ("quit", "exit"):
            return 0
        if line == "help":
            print(HELP, file=stdout)
            continue
        try:
            reply = client.command(line)
        except DisconnectedError:
            raise  # the session is over: one line from the CLI
        except RedsError as e:
            print(f"error: {e}", file=stdout, flush=True)
            continue
        print(json.dumps(reply), file=stdout, flush=True)


def run_monitor(
    port: str,
    baud: int = 115200,
    demo: str | os.PathLike | None = None,
    samples: int = 100,
    timeout: float = 10.0,
    *,
    stdin: IO[str] | None = None,
    stdout: IO[str] | None = None,
) -> int:
    """``reds monitor``: interactive prompt, or with ``demo`` the per-submodel table."""
    check_arguments(baud, timeout, samples)
    if stdin is None:
        stdin = sys.stdin
        # undecodable bytes become U+FFFD, which the ASCII check then names
        with contextlib.suppress(AttributeError, ValueError):
            stdin.reconfigure(errors="replace")
    stdout = stdout or sys.stdout
    if demo is not None:  # a wrong run directory needs no device to say so
        run_fingerprint(demo, _run_manifest(demo))
    with RedsClient(port, baud, timeout) as client:
        if demo is None:
            return _interactive(client, stdin, stdout)
        info = client.info_cache
        check_firmware(info, demo, _run_manifest(demo))
        print(
            f"{info['model']} on {port}: {info['submodels']} submodels, "
            f"{info['weight_bytes']} weight bytes, {info['arena_bytes']} arena bytes"
            + ram_summary(info),
            file=stdout,
            flush=True,
        )
        rows = run_demo(client, demo, samples)
        print(format_demo(rows), file=stdout)
        print("\nlatency budget policy (budget US -> active submodel):", file=stdout)
        for b, reply in budget_demo(client):
            if reply["ok"]:
                print(
                    f"  budget {b:>8} us -> submodel {reply['active']} ({reply['latency_us']} us)",
                    file=stdout,
                )
            else:
                print(f"  budget {b:>8} us -> {reply['error']}", file=stdout)
        stdout.flush()
        return 0


__all__ = [
    "CommandError",
    "DemoRow",
    "DisconnectedError",
    "check_firmware",
    "run_demo",
    "run_monitor",
    "format_demo",
    "budget_demo",
]
