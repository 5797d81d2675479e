"""``reds monitor`` against the native firmware of the default model: the
--demo table must agree with the host simulation, and the interactive prompt
passes commands through and prints one JSON reply each."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from reds_tf import firmware
from reds_tf.errors import RedsError
from reds_tf.monitor import demo_inputs, run_demo, run_monitor
from reds_tf.serial_protocol import ProtocolError, RedsClient
from reds_tf.sim import load_runtime


@pytest.fixture(scope="module")
def native_port(exported_run: Path):
    build = firmware.build_firmware(exported_run, "native", log=io.StringIO())
    with firmware.ServedFirmware(build) as fw:
        yield fw.port


def test_demo_agrees_with_simulation(native_port: str, exported_run: Path) -> None:
    out = io.StringIO()
    assert run_monitor(native_port, demo=str(exported_run), samples=50, stdout=out) == 0
    text = out.getvalue()
    assert "submodel" in text and "latency us" in text and "switch us" in text
    assert "budget policy" in text and "-> submodel" in text
    x, y, _ = demo_inputs(exported_run, 50)
    rt = load_runtime(exported_run)
    with RedsClient(native_port) as c:
        rows = run_demo(c, exported_run, samples=50)
    assert [r.submodel for r in rows] == list(range(rt.num_submodels))
    for r in rows:
        expected = rt.predict(x, r.submodel)
        np.testing.assert_array_equal(r.outputs, expected)
        acc = float(np.mean(np.argmax(expected, axis=1) == y))
        assert r.accuracy == acc
        # the table shows this row's accuracy
        assert f"{acc:.3f} (50)" in text


def test_interactive_prompt(native_port: str) -> None:
    out = io.StringIO()
    stdin = io.StringIO("help\ninfo\nuse 0\nfoo\n\nuse 1\nquit\ninfo\n")
    assert run_monitor(native_port, stdin=stdin, stdout=out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].startswith(f"connected to {native_port}")
    replies = [json.loads(line) for line in lines if line.startswith("{")]
    assert [r["ok"] for r in replies] == [True, True, False, True]
    assert replies[1]["active"] == 0 and replies[3]["active"] == 1
    assert any("budget US" in line for line in lines)  # the help text


def test_bad_port_and_wrong_run(native_port: str, tmp_path: Path) -> None:
    with pytest.raises(ProtocolError, match="cannot open serial port"):
        RedsClient(str(tmp_path / "no-such-port"))
    with pytest.raises(RedsError, match="reds export"):
        run_monitor(native_port, demo=str(tmp_path), samples=5, stdout=io.StringIO())


def test_demo_refuses_firmware_of_another_model(
    native_port: str, exported_run: Path, tmp_path: Path
) -> None:
    """A run whose export is not the flashed model (here: the same run with
    another fingerprint in its manifest, as a re-export with other weights
    would have): refused before any sample is sent, the library call too."""
    other = tmp_path / exported_run.name
    shutil.copytree(exported_run, other)
    path = other / "export" / "manifest.json"
    manifest = json.loads(path.read_text())
    device_fp = manifest["fingerprint"]
    manifest["fingerprint"] = "f" * 16 if device_fp != "f" * 16 else "0" * 16
    path.write_text(json.dumps(manifest))
    with pytest.raises(RedsError, match=f"fingerprint '{device_fp}'.*flash this run's firmware"):
        run_monitor(native_port, demo=str(other), samples=5, stdout=io.StringIO())
    with RedsClient(native_port) as c:
        with pytest.raises(RedsError, match="flash this run's firmware"):
            run_demo(c, other, samples=5)
        assert c.info()["fingerprint"] == device_fp
