"""The Nano 33 BLE fit check: `reds firmware --board nano33ble` refuses a model
too big for the board from its export's sizes, in one line (exit 2), before
PlatformIO runs (so before any download or compile); `reds export` warns."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import DEFAULT_CONFIG

from reds_tf import boards, firmware
from reds_tf.cli import main
from reds_tf.errors import FirmwareError, RunDirError
from reds_tf.export import nano33ble_warning

# What `reds export` records for `model: {type: dnn, hidden: [2048, 2048]}` on
# Fashion-MNIST (checked against a real export: 5,836,840 weight bytes, a
# 16,388-byte arena; the slow test below makes one).
BIG_HIDDEN = [2048, 2048]
BIG_WEIGHT_BYTES = 784 * 2048 + 2048 * 2048 + 2048 * 10 + 4 * (2048 + 2048 + 10)
BIG_ARENA_BYTES = 16388


def _dense_manifest(name: str, hidden: list[int], arena_bytes: int) -> dict:
    """A manifest.json of a Fashion-MNIST DNN with these hidden sizes (4 submodels)."""
    sizes = [784, *hidden, 10]
    weight_bytes = sum(a * b + 4 * b for a, b in zip(sizes, sizes[1:], strict=False))
    names = [f"fc{i + 1}" for i in range(len(hidden))] + ["logits"]
    subs = []
    for k, frac in enumerate([0.25, 0.5, 0.75, 1.0]):
        widths = {n: max(4, int(h * frac) // 4 * 4) for n, h in zip(names, hidden, strict=False)}
        widths["logits"] = 10
        macs = sum(a * b for a, b in zip([784, *widths.values()], widths.values(), strict=False))
        subs.append(
            {
                "index": k,
                "budget": frac,
                "widths": widths,
                "macs": macs,
                "tflite": f"submodel_{k}.tflite",
                "float_accuracy": 0.8,
                "int8_accuracy": 0.8,
            }
        )
    return {
        "name": name,
        "input_shape": [28, 28, 1],
        "num_classes": 10,
        "input_scale": 1 / 255,
        "input_zero_point": -128,
        "output_scale": 0.1,
        "output_zero_point": 0,
        "weight_bytes": weight_bytes,
        "per_submodel_qparam_bytes": 0,
        "bn_stats": "shared",
        "arena_bytes": arena_bytes,
        "num_submodels": 4,
        "qat": False,
        "submodels": subs,
    }


def _fake_run(tmp_path: Path, manifest: dict) -> Path:
    """A run directory whose export holds ``manifest`` and a runtime header
    (enough for `reds firmware` up to the point where it would build)."""
    run = tmp_path / manifest["name"]
    src = run / "export" / "src"
    src.mkdir(parents=True)
    (src / "reds_model.h").write_text("/* stand-in: the fit check refuses before any build */\n")
    (run / "export" / "manifest.json").write_text(json.dumps(manifest))
    return run


@pytest.fixture()
def no_build_no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Any attempt to run PlatformIO, start a process or open a network
    connection fails the test (recorded in the returned list too)."""
    attempts: list[str] = []

    def forbid(what: str):
        def _raise(*args, **kwargs):
            attempts.append(what)
            raise AssertionError(f"{what} attempted: {args[:2]!r}")

        return _raise

    monkeypatch.setattr(firmware, "_run_pio", forbid("PlatformIO"))
    monkeypatch.setattr(firmware, "ensure_core_dir", forbid("PlatformIO core set-up"))
    monkeypatch.setattr(subprocess, "run", forbid("subprocess.run"))
    monkeypatch.setattr(subprocess, "Popen", forbid("subprocess.Popen"))
    monkeypatch.setattr(socket.socket, "connect", forbid("socket connect"))
    monkeypatch.setattr(socket, "create_connection", forbid("network connection"))
    return attempts


def test_the_big_manifest_is_what_export_records() -> None:
    assert _dense_manifest("x", BIG_HIDDEN, 0)["weight_bytes"] == BIG_WEIGHT_BYTES == 5_836_840


@pytest.mark.parametrize("upload", [False, True], ids=["build", "upload"])
def test_oversized_model_is_refused_in_one_line_before_any_build(
    tmp_path: Path, capsys: pytest.CaptureFixture, no_build_no_network: list[str], upload: bool
) -> None:
    run = _fake_run(tmp_path, _dense_manifest("fmnist_2048", BIG_HIDDEN, BIG_ARENA_BYTES))
    t0 = time.monotonic()
    status = main(["firmware", str(run), "--board", "nano33ble", *(["--upload"] if upload else [])])
    elapsed = time.monotonic() - t0
    out, err = capsys.readouterr()
    assert status == 2
    assert no_build_no_network == []
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("reds firmware: error: model 'fmnist_2048' does not fit the Arduino")
    flash_needed = BIG_WEIGHT_BYTES + 8 * (2048 + 2048 + 10) + 32 * 1024 + 96 * 1024
    assert f"flash {flash_needed:,} B needed > {960 * 1024:,} B available" in line
    assert "RAM" not in line.split("Train a smaller model")[0]  # RAM fits: only flash is named
    assert "fewer units" in line and "model.hidden" in line
    assert not (run / "firmware").exists()  # nothing copied, no PlatformIO workspace
    assert elapsed < 2.0, f"took {elapsed:.2f} s"


def test_oversized_model_is_refused_by_the_cli_process_within_seconds(tmp_path: Path) -> None:
    """The real command in a fresh process, with PlatformIO pointed at an empty
    core directory and every proxy at a closed port: exit 2, one line, fast,
    and PlatformIO never ran (no core directory, no workspace)."""
    run = _fake_run(tmp_path, _dense_manifest("fmnist_2048", BIG_HIDDEN, BIG_ARENA_BYTES))
    dead = "http://127.0.0.1:9"
    env = {
        **os.environ,
        "PLATFORMIO_CORE_DIR": str(tmp_path / "pio-core"),
        "http_proxy": dead,
        "https_proxy": dead,
        "HTTP_PROXY": dead,
        "HTTPS_PROXY": dead,
    }
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "reds_tf", "firmware", str(run), "--board", "nano33ble"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    elapsed = time.monotonic() - t0
    assert r.returncode == 2, r.stderr
    assert r.stdout == ""
    assert len(r.stderr.splitlines()) == 1, r.stderr
    assert "does not fit the Arduino Nano 33 BLE" in r.stderr and "Traceback" not in r.stderr
    assert not (run / "firmware").exists()
    assert not (tmp_path / "pio-core").exists()
    assert elapsed < 10.0, f"took {elapsed:.1f} s"
    print(f"refused in {elapsed:.2f} s (whole process)")


def test_ram_alone_can_refuse(tmp_path: Path, no_build_no_network: list[str]) -> None:
    # weights that fit, an activation arena of 240 KB that does not
    manifest = _dense_manifest("wide_acts", [64, 64], 240 * 1024)
    with pytest.raises(FirmwareError) as e:
        firmware.build_firmware(_fake_run(tmp_path, manifest), "nano33ble")
    msg = str(e.value)
    assert "\n" not in msg
    assert "RAM" in msg and "flash" not in msg.split("Train a smaller model")[0]
    needs = boards.memory_needs(manifest)
    assert f"RAM {needs.ram_bytes:,} B needed > {256 * 1024:,} B available" in msg
    assert no_build_no_network == []


def test_limits_and_the_boundary() -> None:
    board = boards.NANO33BLE
    assert (board.flash_bytes, board.ram_bytes) == (983_040, 262_144)
    assert (firmware.NANO33BLE_FLASH, firmware.NANO33BLE_RAM) == (983_040, 262_144)
    m = _dense_manifest("edge", [256, 256], 3108)
    need = boards.memory_needs(m, board)
    # exactly at the limit fits, one byte over does not
    m["weight_bytes"] += board.flash_bytes - need.flash_bytes
    assert boards.memory_needs(m, board).flash_bytes == board.flash_bytes
    assert boards.fit_problem(m, board) is None
    m["weight_bytes"] += 1
    assert "flash" in (boards.fit_problem(m, board) or "")
    m = _dense_manifest("edge", [256, 256], 3108)
    m["arena_bytes"] += board.ram_bytes - boards.memory_needs(m, board).ram_bytes
    assert boards.fit_problem(m, board) is None
    m["arena_bytes"] += 1
    assert "RAM" in (boards.fit_problem(m, board) or "")


def test_per_submodel_rows_count_as_flash() -> None:
    m = _dense_manifest("bn", [256, 256], 3108)
    base = boards.memory_needs(m).flash_bytes
    m["per_submodel_qparam_bytes"] = 12_000
    assert boards.memory_needs(m).flash_bytes == base + 12_000


def test_a_broken_manifest_is_a_one_line_run_dir_error(tmp_path: Path) -> None:
    m = _dense_manifest("broken", [256, 256], 3108)
    del m["weight_bytes"]
    run = _fake_run(tmp_path, m)
    with pytest.raises(RunDirError, match="weight_bytes.* re-run `reds export"):
        firmware.check_fits(run, "nano33ble")
    (run / "export" / "manifest.json").unlink()
    with pytest.raises(RunDirError, match="reds export"):
        firmware.check_fits(run, "nano33ble")
    # the offline boards are not checked against the Nano
    firmware.check_fits(run, "qemu")


def test_export_warning_line() -> None:
    big = _dense_manifest("fmnist_2048", BIG_HIDDEN, BIG_ARENA_BYTES)
    w = nano33ble_warning(big)
    assert w is not None and "\n" not in w
    assert w.startswith("export: warning: model 'fmnist_2048' does not fit the Arduino Nano 33 BLE")
    assert "--board nano33ble` will refuse it" in w
    assert nano33ble_warning(_dense_manifest("small", [256, 256], 3108)) is None


def test_default_model_fits_and_goes_on_to_build(
    exported_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default model passes the check, and the build goes on to PlatformIO."""
    manifest = json.loads((exported_run / "export" / "manifest.json").read_text())
    assert boards.fit_problem(manifest) is None
    assert nano33ble_warning(manifest) is None
    needs = boards.memory_needs(manifest)
    assert needs.flash_bytes < 0.5 * boards.NANO33BLE.flash_bytes
    assert needs.ram_bytes < 0.3 * boards.NANO33BLE.ram_bytes

    class Reached(Exception):
        pass

    calls = []

    def fake_pio(args, run_dir, log, what):
        calls.append(args)
        raise Reached

    monkeypatch.setattr(firmware, "_run_pio", fake_pio)
    with pytest.raises(Reached):
        firmware.build_firmware(exported_run, "nano33ble", log=io.StringIO())
    assert calls == [["run", "-e", "nano33ble"]]


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="needs gcc-arm-none-eabi")
def test_estimate_covers_the_measured_model_share(exported_run: Path) -> None:
    """The estimate without the Arduino core allowance is at least what the
    qemu firmware (the same core and runtime, newlib instead of mbed) takes."""
    build = firmware.build_firmware(exported_run, "qemu", log=io.StringIO())
    needs = boards.memory_needs(json.loads((exported_run / "export" / "manifest.json").read_text()))
    assert build.flash_bytes <= needs.flash_bytes - needs.core_flash_bytes
    # the qemu RAM figure holds a 16 KB reserved stack; on the Nano the stack is
    # the mbed main thread's, inside the core allowance
    qemu_static_ram = build.ram_bytes - firmware.QEMU_STACK_BYTES
    assert qemu_static_ram <= needs.ram_bytes - needs.core_ram_bytes


@pytest.mark.slow
def test_real_2048x2048_export_warns_and_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The acceptance case for real: `hidden: [2048, 2048]` on Fashion-MNIST,
    trained briefly and exported (about a minute; the host compile check of the
    28 MB weight source is skipped), warns on export and is refused at once."""
    from reds_tf.export import run_export
    from reds_tf.pipeline import run_training

    config = tmp_path / "big.yaml"
    text = DEFAULT_CONFIG.read_text().replace("hidden: [256, 256]", "hidden: [2048, 2048]")
    assert "hidden: [2048, 2048]" in text
    config.write_text(text)
    run = run_training(
        config,
        out_dir=tmp_path / "big",
        verbose=0,
        log=lambda _m: None,
        epochs=1,
        finetune_epochs=1,
        limit=300,
        seed=0,
    )
    monkeypatch.setenv("CXX", str(tmp_path / "no-compiler"))
    logs: list[str] = []
    run_export(run, limit=20, log=logs.append)
    warnings = [line for line in logs if "warning" in line]
    assert len(warnings) == 1 and "does not fit the Arduino Nano 33 BLE" in warnings[0]
    manifest = json.loads((run / "export" / "manifest.json").read_text())
    assert manifest["weight_bytes"] == BIG_WEIGHT_BYTES
    assert manifest["arena_bytes"] == BIG_ARENA_BYTES
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "reds_tf", "firmware", str(run), "--board", "nano33ble"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert "does not fit" in r.stderr
    assert not (run / "firmware").exists()
    assert time.monotonic() - t0 < 10.0
