"""The firmware's serial protocol, end to end: the default model's generated
runtime built for the native and qemu boards with PlatformIO (offline), served
on a pseudo-terminal and driven with pyserial. Outputs must equal the host
simulation of the same generated code (reds_tf.sim)."""

from __future__ import annotations

import io
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from reds_tf import firmware
from reds_tf.errors import FirmwareError, RunDirError
from reds_tf.monitor import demo_inputs
from reds_tf.serial_protocol import ProtocolError, RedsClient
from reds_tf.sim import load_manifest, load_runtime

SAMPLES = 100
# 10,000 random lines through the native firmware; QEMU's UART moves about
# 20 KB/s, so it gets a few hundred (with the same length distribution).
RANDOM_LINES = {"native": 10_000, "qemu": 200}

needs_arm = pytest.mark.skipif(
    shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
    reason="needs gcc-arm-none-eabi and qemu-system-arm (make setup installs them)",
)
BOARDS = ["native", pytest.param("qemu", marks=needs_arm)]


class _AnyInt:
    """Equal to any int (a reply field whose value is measured)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, int) and not isinstance(other, bool)


ANY_INT = _AnyInt()


@pytest.fixture(scope="module")
def builds(exported_run: Path) -> dict[str, tuple[firmware.FirmwareBuild, str]]:
    """Both firmwares of the default model, built once, with their build logs."""
    out = {}
    for board in ("native", "qemu"):
        if board == "qemu" and shutil.which("arm-none-eabi-gcc") is None:
            continue
        log = io.StringIO()
        out[board] = (firmware.build_firmware(exported_run, board, log=log), log.getvalue())
    return out


@pytest.fixture(scope="module", params=BOARDS)
def client(request: pytest.FixtureRequest, builds: dict) -> Iterator[tuple[str, RedsClient]]:
    board = request.param
    with firmware.ServedFirmware(builds[board][0]) as fw:
        with RedsClient(fw.port, timeout=20) as c:
            yield board, c


def _expected_budget_pick(lat: list[int], budget: int) -> int | None:
    fits = [k for k, t in enumerate(lat) if t <= budget]
    return max(fits) if fits else None


def test_builds_are_warning_free_and_qemu_fits_the_nano(builds: dict) -> None:
    for board, (build, log) in builds.items():
        assert "warning:" not in log.lower(), f"{board} build has warnings:\n{log}"
        assert build.program.is_file()
    if "qemu" in builds:
        build, log = builds["qemu"]
        assert "firmware size (qemu): flash" in log
        flash, ram = firmware.elf_sizes(build.program)
        assert (flash, ram) == (build.flash_bytes, build.ram_bytes)
        # the default model must fit the Nano 33 BLE (960 KB flash, 256 KB RAM)
        assert flash < firmware.NANO33BLE_FLASH and ram < firmware.NANO33BLE_RAM
        assert json.loads((build.build_dir / "size.json").read_text())["flash_bytes"] == flash


def test_info_matches_the_export(client, exported_run: Path) -> None:
    _, c = client
    rt = load_runtime(exported_run)
    manifest = load_manifest(exported_run)
    info = c.info()
    assert info["ok"] is True
    assert info["model"] == rt.name == manifest["name"]
    assert info["submodels"] == rt.num_submodels == len(manifest["submodels"])
    assert info["macs"] == [rt.macs(k) for k in range(rt.num_submodels)]
    assert info["input_size"] == rt.input_size
    # the float is printed without printf: it must read back as the same float32
    assert np.float32(info["input_scale"]) == np.float32(rt.input_scale)
    assert info["input_zero_point"] == rt.input_zero_point
    assert info["weight_bytes"] == rt.weight_bytes == manifest["weight_bytes"]
    assert info["arena_bytes"] == rt.arena_bytes
    assert 0 <= info["active"] < info["submodels"]
    # the model fingerprint: manifest == generated header == the device's reply
    header = (exported_run / "export" / "src" / "reds_model.h").read_text()
    assert f'#define REDS_MODEL_FINGERPRINT "{manifest["fingerprint"]}"' in header
    assert info["fingerprint"] == manifest["fingerprint"]
    assert len(info["fingerprint"]) == 16 and int(info["fingerprint"], 16) >= 0
    assert list(info) == [
        "ok", "model", "submodels", "active", "macs", "input_size", "input_scale",
        "input_zero_point", "weight_bytes", "arena_bytes", "fingerprint",
        "stack_bytes", "stack_size_bytes", "serial_buffer_bytes",
    ]  # fmt: skip


def test_info_ram_picture(client, exported_run: Path) -> None:
    """info's RAM fields: the serial buffers (line buffer 2 bytes per input byte
    + 32, reply buffer 416 + 12 per submodel and output + 6 per byte of the
    model name and fingerprint strings), and the stack high-water mark: unknown
    (-1) on native, measured on qemu's 16 KB stack, and never lower after more
    work (an inference of every submodel and a bench)."""
    board, c = client
    info = c.info()
    n, k = info["input_size"], info["submodels"]
    name = len(info["model"].encode()) + 1
    out_size = len(c.infer(np.zeros(n, np.int8))["output"])
    reply = 416 + 12 * (k + out_size) + 6 * name + 6 * (len(info["fingerprint"]) + 1)
    assert info["serial_buffer_bytes"] == 2 * n + 32 + reply
    if board == "native":
        assert info["stack_bytes"] == -1 and info["stack_size_bytes"] == -1
        return
    assert info["stack_size_bytes"] == 16 * 1024
    first = info["stack_bytes"]
    assert 0 < first < info["stack_size_bytes"]
    for j in range(k):
        c.use(j)
        c.infer(np.zeros(n, np.int8))
    c.bench()
    later = c.info()["stack_bytes"]
    # the runtime alone needs ~200 B for the default model (reds bench); the
    # protocol's frames come on top, far below the 16 KB
    assert 200 < first <= later < 8 * 1024, (first, later)


def test_use_every_submodel(client) -> None:
    _, c = client
    k_max = c.info()["submodels"]
    for k in [*range(k_max), 0, k_max - 1]:
        r = c.use(k)
        assert r == {"ok": True, "active": k, "switch_us": r["switch_us"]}
        assert isinstance(r["switch_us"], int) and r["switch_us"] >= 0
        assert c.info()["active"] == k


def test_infer_matches_host_simulation(client, exported_run: Path) -> None:
    _, c = client
    x, _, _ = demo_inputs(exported_run, SAMPLES)
    rt = load_runtime(exported_run)
    for k in range(rt.num_submodels):
        expected = rt.predict(x, k)
        c.use(k)
        for i in range(len(x)):
            r = c.infer(x[i])
            assert r["active"] == k
            assert r["output"] == expected[i].tolist(), f"submodel {k} sample {i}"
            assert r["class"] == int(np.argmax(expected[i]))
            assert isinstance(r["latency_us"], int) and r["latency_us"] >= 0


def test_bench_and_budget_policy(client) -> None:
    board, c = client
    k_max = c.info()["submodels"]
    bench = c.bench()
    lat = bench["latency_us"]
    assert len(lat) == k_max and all(isinstance(t, int) and t >= 0 for t in lat)
    if board == "qemu":
        # instruction-driven clock: bigger submodels are strictly slower
        assert lat == sorted(lat) and lat[0] < lat[-1] and lat[0] > 0
    for budget in sorted({*lat, *(t + 1 for t in lat), max(lat) * 10}):
        r = c.budget(budget)
        pick = _expected_budget_pick(lat, budget)
        assert r == {"ok": True, "active": pick, "latency_us": lat[pick]}
        assert c.info()["active"] == pick
    if min(lat) > 0:
        c.use(1)
        r = c.command(f"budget {min(lat) - 1}")
        assert r["ok"] is False and "fits" in r["error"]
        assert c.info()["active"] == 1


def _malformed_lines(input_size: int, k_max: int) -> list[bytes]:
    good_hex = b"00" * input_size
    bad_digit = bytearray(good_hex)
    bad_digit[7] = ord("g")
    return [
        b"foo",
        b"INFO",
        b"info x",
        b"bench now",
        b"use",
        b"use -1",
        b"use x",
        b"use 1.0",
        b"use 0x1",
        f"use {k_max}".encode(),
        b"use 99999999999",
        b"use 1 2",
        b"infer",
        b"infer 0",
        b"infer " + good_hex[:-1],
        b"infer " + good_hex[:-2],
        b"infer " + good_hex + b"00",
        b"infer " + bytes(bad_digit),
        b"infer " + good_hex + b" 00",
        b"infer " + good_hex[:-2] + b"\xff\xfe",
        b"budget",
        b"budget -5",
        b"budget abc",
        b"budget 99999999999",
        b"\x00info",
        b"info\x00",
        b"\xff\xfe\x80\x01garbage\x7f",
        b"a" * (2 * input_size + 33),  # just over the line buffer
        b"infer " + good_hex * 3,  # a valid prefix, then too long
        bytes(range(256)).replace(b"\n", b"").replace(b"\r", b""),
    ]


def test_malformed_lines_get_one_error_and_change_nothing(client) -> None:
    _, c = client
    info = c.info()
    for line in _malformed_lines(info["input_size"], info["submodels"]):
        c.use(1)
        r = c.command(line)
        assert r["ok"] is False and isinstance(r["error"], str) and r["error"], line[:40]
        assert set(r) == {"ok", "error"}
        # exactly one reply: the next reply must be the info we ask for now
        after = c.info()
        assert after["active"] == 1, line[:40]


def _line_max(input_size: int) -> int:
    """The firmware's longest accepted line (kLineMax in reds_fw.cpp)."""
    return 2 * input_size + 32


def _gets_reply(line: bytes, input_size: int) -> bool:
    """Whether the firmware answers ``line`` (no CR/LF in it): all but empty or
    blank lines; an over-long line always gets its error."""
    return len(line) > _line_max(input_size) or bool(line.strip(b" \t"))


def test_random_lines_do_not_crash_or_hang(client) -> None:
    board, c = client
    rng = random.Random(1234)
    n = RANDOM_LINES[board]
    c.use(2)
    input_size = c.info()["input_size"]
    t0 = time.monotonic()
    lines = []
    for _ in range(n):
        # log-uniform lengths 0..4096: many short lines, some far over the buffer
        length = int(math.exp(rng.uniform(0, math.log(4097)))) - 1
        lines.append(rng.randbytes(length).replace(b"\n", b"\x0b").replace(b"\r", b"\x0c"))
    batch = 8  # a few lines in flight; replies are short, so nothing blocks
    for i in range(0, n, batch):
        chunk = lines[i : i + batch]
        c.serial.write(b"".join(line + b"\n" for line in chunk))
        for line in chunk:
            if not _gets_reply(line, input_size):
                continue
            r = c.read_reply()
            assert r["ok"] is False, line[:40]
    assert c.info()["active"] == 2
    elapsed = time.monotonic() - t0
    print(f"{board}: {n} random lines in {elapsed:.1f} s")


ENDINGS = {"CR": b"\r", "LF": b"\n", "CRLF": b"\r\n", "LFCR": b"\n\r"}


def _next_reply_is_info(c: RedsClient, active: int) -> None:
    """The reply to a fresh ``info`` is the next line: nothing sent before it
    left an extra reply behind."""
    c.serial.write(b"info\n")
    r = c.read_reply()
    assert r["ok"] is True and "input_size" in r, r
    assert r["active"] == active


@pytest.mark.parametrize("ending", list(ENDINGS.values()), ids=list(ENDINGS))
def test_each_line_ending_gives_one_reply_per_command(client, ending: bytes) -> None:
    _, c = client
    assert c.info()["submodels"] >= 4
    c.use(0)
    commands = [b"use 1", b"info", b"use 2", b"nonsense", b"use 3", b"  use 1 "]
    # one command at a time (what a person at a terminal does) ...
    for cmd, want in zip(commands, [1, 1, 2, None, 3, 1], strict=True):
        c.serial.write(cmd + ending)
        r = c.read_reply()
        if want is None:
            assert r["ok"] is False and "unknown command" in r["error"]
        else:
            assert r["ok"] is True and r["active"] == want, (cmd, r)
    _next_reply_is_info(c, 1)
    # ... and all in one write (a pasted block, a script)
    c.serial.write(b"".join(cmd + ending for cmd in commands))
    replies = [c.read_reply() for _ in commands]
    assert [r.get("active") for r in replies] == [1, 1, 2, None, 3, 1]
    _next_reply_is_info(c, 1)


def test_empty_lines_get_no_reply(client) -> None:
    _, c = client
    c.use(1)
    empties = [b"\r", b"\n", b"\r\n", b"\n\r", b"\r\r\r", b"\n\n", b"\r\n\r\n", b"   \r", b"\t \n"]
    for e in empties:
        c.serial.write(e)
        _next_reply_is_info(c, 1)
    c.serial.write(b"".join(empties) + b"use 2\r\n\r\n\n\r\r")
    assert c.read_reply() == {"ok": True, "active": 2, "switch_us": ANY_INT}
    _next_reply_is_info(c, 2)


@pytest.mark.parametrize("ending", list(ENDINGS.values()), ids=list(ENDINGS))
def test_over_long_line_gets_exactly_one_error(client, ending: bytes) -> None:
    _, c = client
    info = c.info()
    c.use(1)
    for line in (b"a" * (_line_max(info["input_size"]) + 1), b"infer " + b"00" * 3000):
        c.serial.write(line + ending)
        r = c.read_reply()
        assert r["ok"] is False and "line too long" in r["error"], r
        _next_reply_is_info(c, 1)


def test_client_refuses_lines_that_would_not_get_one_reply(client) -> None:
    _, c = client
    for bad in ("", "   ", "info\r", "info\nuse 1", b"use 1\r"):
        with pytest.raises(ProtocolError):
            c.command(bad)
    assert c.info()["ok"] is True


def test_reconnect_keeps_serving(client) -> None:
    _, c = client
    c.use(0)
    c.serial.close()
    c.serial.open()
    fresh = c.sync()
    assert fresh["active"] == 0


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_cli_prints_port_first_and_stops_on_interrupt(
    exported_run: Path, builds, tmp_path: Path, stop: int
) -> None:
    err = (tmp_path / "stderr.txt").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reds_tf",
            "firmware",
            str(exported_run),
            "--board",
            "native",
            "--serve",
        ],
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        # A test run started in the background by a non-interactive shell
        # inherits SIGINT as ignored, and Python then installs no Ctrl-C
        # handler: give the server the disposition a terminal user has.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        first = proc.stdout.readline()
        assert first.startswith("PORT /dev/"), first
        with RedsClient(first.split()[1], timeout=20) as c:
            assert c.info()["submodels"] >= 1
        served = _children(proc.pid)
        assert served, "the served firmware should be a child process"
        proc.send_signal(stop)
        assert proc.wait(timeout=60) == 0, (tmp_path / "stderr.txt").read_text()[-2000:]
        # The firmware went down with the server.
        assert not any(_running(p) for p in served), served
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        err.close()


def test_user_errors(tmp_path: Path, exported_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RunDirError, match="does not exist"):
        firmware.run_firmware(tmp_path / "nope", board="native")
    (tmp_path / "run").mkdir()
    with pytest.raises(RunDirError, match="reds export"):
        firmware.run_firmware(tmp_path / "run", board="native")
    with pytest.raises(FirmwareError, match="--upload is for nano33ble"):
        firmware.run_firmware(exported_run, board="qemu", upload=True)
    with pytest.raises(FirmwareError, match="--serve runs qemu or native"):
        firmware.run_firmware(exported_run, board="nano33ble", serve=True)
    with pytest.raises(FirmwareError, match="unknown board"):
        firmware.build_firmware(exported_run, "uno")
    r = subprocess.run(
        [sys.executable, "-m", "reds_tf", "firmware", str(tmp_path / "run"), "--board", "qemu"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "reds export" in r.stderr and "Traceback" not in r.stderr
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FirmwareError, match="arm-none-eabi-gcc not found"):
        firmware.build_firmware(exported_run, "qemu")
