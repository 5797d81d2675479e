"""``reds monitor`` under a hostile but realistic user (issue 15, item 3): bad
arguments, non-ASCII input, a device that vanishes mid-session, a device that
is not REDS firmware or runs another model. Each ends in one line, never a
traceback. The device is tests/fake_device.py on a pseudo-terminal; the real
firmware's fingerprint check is in tests/test_monitor.py."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
from pathlib import Path

import pytest
from fake_device import FakeDevice

from reds_tf.cli import main
from reds_tf.errors import RedsError
from reds_tf.monitor import (
    check_arguments,
    check_firmware,
    ram_summary,
    run_fingerprint,
    run_monitor,
)
from reds_tf.serial_protocol import DisconnectedError, ProtocolError, RedsClient, check_reply


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the CLI: exit 2 and exactly one line on stderr (returned)."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("reds monitor: error: "), err
    return err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--baud", "-5"], "--baud must be a whole number from 1"),
        (["--baud", "0"], "--baud must be a whole number from 1"),
        (["--baud", "99999999999"], "--baud must be a whole number from 1"),
        (["--timeout", "-1"], "--timeout must be a number of seconds above 0"),
        (["--timeout", "0"], "--timeout must be a number of seconds above 0"),
        (["--timeout", "nan"], "--timeout must be"),
        (["--timeout", "inf"], "--timeout must be"),
        (["--samples", "0"], "--samples must be at least 1"),
    ],
)
def test_bad_arguments_are_one_line_before_the_port_opens(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    with FakeDevice() as dev:
        err = _one_line_error(capsys, ["monitor", "--port", dev.port, *args])
        assert message in err
        assert dev.lines == []  # refused before talking to the device


def test_check_arguments_accepts_the_defaults() -> None:
    check_arguments(115200, 10.0, 100)
    check_arguments(1, 0.001, 1)
    with pytest.raises(RedsError, match="--baud"):
        check_arguments(True, 10.0, 100)


def test_non_ascii_command_is_refused_and_the_session_goes_on() -> None:
    with FakeDevice() as dev:
        with RedsClient(dev.port, timeout=5) as c:
            with pytest.raises(ProtocolError, match=r"ASCII.*'é' \(U\+00E9\) at position 4"):
                c.command("use é")
            assert c.command("use 1")["ok"]
        out = io.StringIO()
        stdin = io.StringIO("use é\nuse 0\ninfo ☃\n\ufffd\nquit\n")
        assert run_monitor(dev.port, stdin=stdin, stdout=out, timeout=5) == 0
        lines = out.getvalue().splitlines()
        errors = [line for line in lines if line.startswith("error:")]
        assert len(errors) == 3 and all("commands are ASCII" in e for e in errors)
        assert json.loads(lines[2]) == {"ok": True, "active": 0, "switch_us": 1}
        # non-ASCII never reached the device
        assert all(line.isascii() for line in dev.lines)


def test_undecodable_stdin_is_an_error_line(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 from a strict stdin: one error line each, no traceback."""
    with FakeDevice() as dev:
        raw = io.BytesIO(b"\xff\xfe\n")
        stdin = io.TextIOWrapper(raw, encoding="utf-8", errors="strict")
        out = io.StringIO()
        assert run_monitor(dev.port, stdin=stdin, stdout=out, timeout=5) == 0
        assert "error: input is not utf-8 text" in out.getvalue()


@pytest.mark.parametrize("vanish_after", [1, 2])
def test_device_vanishing_mid_session(
    capsys: pytest.CaptureFixture[str], vanish_after: int
) -> None:
    """Unplugged at connect (1: during the monitor's own info) or after the
    first command (2): the session ends with one line naming the port and
    what to do, exit 2."""
    with FakeDevice(vanish_after=vanish_after) as dev:
        stdin = io.StringIO("use 0\nuse 1\nuse 0\n")
        with pytest.raises(DisconnectedError, match="disconnected"):
            run_monitor(dev.port, stdin=stdin, stdout=io.StringIO(), timeout=5)
    with FakeDevice(vanish_after=vanish_after) as dev:
        # the CLI reads sys.stdin: give it the same commands
        import sys

        old = sys.stdin
        sys.stdin = io.StringIO("use 0\nuse 1\nuse 0\n")
        try:
            err = _one_line_error(capsys, ["monitor", "--port", dev.port, "--timeout", "5"])
        finally:
            sys.stdin = old
        assert f"the serial device {dev.port} disconnected" in err
        assert "reconnect the board" in err


def test_device_vanishing_on_write_and_flush() -> None:
    """A write to a vanished device (pyserial: SerialException, OSError) and the
    input flush of a new sync (termios.error) are a disconnect too."""
    dev = FakeDevice()
    c = RedsClient(dev.port, timeout=5)
    dev.close()
    with pytest.raises(DisconnectedError, match="disconnected"):
        c.write_line("use 1")
    with pytest.raises(DisconnectedError, match="disconnected"):
        c.sync()
    c.close()  # closing a vanished device is quiet


def test_silent_device_and_not_a_serial_port(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with FakeDevice(silent=True) as dev:
        err = _one_line_error(capsys, ["monitor", "--port", dev.port, "--timeout", "0.5"])
        assert "no REDS firmware answered" in err
    for port, why in [
        (tmp_path, "Is a directory"),
        (tmp_path / "missing", "No such file or directory (is the board plugged in?"),
        ("/dev/null", "not a serial device (Inappropriate ioctl for device)"),
    ]:
        err = _one_line_error(capsys, ["monitor", "--port", str(port), "--timeout", "0.5"])
        assert f"cannot open serial port {port}: {why}" in err


@pytest.mark.parametrize(
    "code,hint",
    [(errno.EACCES, "dialout"), (errno.EBUSY, "another program"), (errno.EIO, "Input/output")],
)
def test_open_errors_say_what_to_do(code: int, hint: str) -> None:
    import serial

    from reds_tf.serial_protocol import _open_problem

    try:
        try:
            raise OSError(code, os.strerror(code))
        except OSError as cause:
            raise serial.SerialException(code, f"could not open port x: {cause}") from cause
    except serial.SerialException as e:
        text = _open_problem(e)
    assert text.startswith(os.strerror(code)) and hint in text and "could not open" not in text


@pytest.mark.parametrize(
    "change",
    [
        {"macs": [1]},
        {"submodels": "2"},
        {"model": None},
        {"fingerprint": 7},
        {"input_size": 0},
        {"stack_bytes": "12"},
        {"stack_bytes": -2},
        {"stack_size_bytes": 1.5},
        {"serial_buffer_bytes": True},
        {"serial_buffer_bytes": -1},
    ],
)
def test_info_reply_of_something_else_is_refused(
    capsys: pytest.CaptureFixture[str], change: dict
) -> None:
    info = {**FakeDevice().info, **change}
    info = {k: v for k, v in info.items() if v is not None}
    with FakeDevice(info) as dev:
        err = _one_line_error(capsys, ["monitor", "--port", dev.port, "--timeout", "5"])
        assert "the device's" in err and "info" in err


def test_info_ram_fields_are_optional() -> None:
    """Older firmware's info (no RAM fields) and newer firmware's (with them,
    the stack unknown or measured) are all accepted; the monitor shows what
    there is."""
    from fake_device import RAM_INFO

    old = FakeDevice().info
    assert not set(RAM_INFO) & set(old)
    unknown = {**RAM_INFO, "stack_bytes": -1, "stack_size_bytes": -1}
    for extra, shown in [
        ({}, ""),
        (RAM_INFO, ", 900 serial buffer bytes, stack high-water 1234 of 16384 bytes"),
        (unknown, ", 900 serial buffer bytes, stack high-water unknown on this board"),
    ]:
        with FakeDevice({**old, **extra}) as dev, RedsClient(dev.port, timeout=5) as c:
            info = c.info()
            assert {k: info[k] for k in extra} == extra and check_reply("info", info) == info
            assert ram_summary(info) == shown


def test_fingerprint_of_a_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "export" / "src").mkdir(parents=True)
    assert run_fingerprint(run, {"fingerprint": "0123456789abcdef"}) == "0123456789abcdef"
    for bad in ("0123", 12, "0123456789ABCDEF", None):
        with pytest.raises(RedsError, match="fingerprint|before exports"):
            run_fingerprint(run, {"fingerprint": bad} if bad is not None else {})
    # an older manifest: the generated header has it
    (run / "export" / "src" / "reds_model.h").write_text(
        '#define REDS_MODEL_FINGERPRINT "fedcba9876543210"\n'
    )
    assert run_fingerprint(run, {}) == "fedcba9876543210"
    info = {"model": "m", "fingerprint": "fedcba9876543210"}
    check_firmware(info, run, {})
    with pytest.raises(RedsError, match="fingerprint 'ffffffffffffffff'.*flash this run"):
        check_firmware({**info, "fingerprint": "ffffffffffffffff"}, run, {"name": "m"})
    with pytest.raises(RedsError, match="reports no model fingerprint"):
        check_firmware({"model": "m"}, run, {})


def test_demo_refuses_another_models_firmware(
    capsys: pytest.CaptureFixture[str], exported_run: Path, tmp_path: Path
) -> None:
    """--demo against a device whose fingerprint is not the run's: one line,
    before any sample is sent; the right fingerprint passes the check."""
    from fake_device import info_of_run

    run = tmp_path / exported_run.name
    shutil.copytree(exported_run, run)
    with FakeDevice(info_of_run(run, fingerprint="ffffffffffffffff")) as dev:
        err = _one_line_error(capsys, ["monitor", "--port", dev.port, "--demo", str(run)])
        assert "fingerprint 'ffffffffffffffff'" in err and "flash this run's firmware" in err
        assert [line.split()[0] for line in dev.lines] == [b"info"]
    with FakeDevice(info_of_run(run, fingerprint=None)) as dev:
        err = _one_line_error(capsys, ["monitor", "--port", dev.port, "--demo", str(run)])
        assert "reports no model fingerprint" in err


def test_demo_device_vanishing(capsys: pytest.CaptureFixture[str], exported_run: Path) -> None:
    """Unplugged during --demo (at the first `use`, after the data loaded):
    one line, exit 2."""
    from fake_device import info_of_run

    with FakeDevice(info_of_run(exported_run), vanish_after=3) as dev:
        argv = ["monitor", "--port", dev.port, "--demo", str(exported_run), "--samples", "3"]
        err = _one_line_error(capsys, argv)
        assert f"the serial device {dev.port} disconnected" in err
        assert [line.split()[0] for line in dev.lines] == [b"info", b"info", b"use"]
