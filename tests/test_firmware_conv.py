"""DS-CNN-S through the qemu firmware (Cortex-M4, mps2-an386) over a pty:
every submodel's outputs equal TFLite Micro's on the same int8 inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from reds_tf import firmware
from reds_tf.quant.tflm import run_tflm
from reds_tf.serial_protocol import RedsClient

SAMPLES = 6  # per submodel: QEMU's UART moves about 20 KB/s (784-byte inputs)

pytestmark = pytest.mark.skipif(
    shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
    reason="needs gcc-arm-none-eabi and qemu-system-arm (make setup installs them)",
)


def test_dscnn_s_on_qemu_firmware_is_bit_exact_with_tflm(exported_dscnn_run: Path) -> None:
    from reds_tf.data import load_dataset
    from reds_tf.quant import numerics

    # DS-CNN-S: conv64 3x3 s2, 4 x (dw3x3 + pw64), exported once per session
    # (tests/conftest.py; test_bench.py benches the same export)
    run = exported_dscnn_run
    export = run / "export"
    m = json.loads((export / "manifest.json").read_text())
    assert m["runtime_check"].startswith("bit-exact")
    data = load_dataset("fashion_mnist")
    x = numerics.quantize(data.x_test[-SAMPLES:], m["input_scale"], m["input_zero_point"])
    build = firmware.build_firmware(run, "qemu")
    assert build.flash_bytes < firmware.NANO33BLE_FLASH and build.ram_bytes < firmware.NANO33BLE_RAM
    with firmware.ServedFirmware(build) as fw, RedsClient(fw.port, timeout=60) as c:
        assert c.info()["submodels"] == len(m["submodels"])
        for e in m["submodels"]:
            want = run_tflm(export / e["tflite"], x).outputs
            c.use(e["index"])
            for i in range(SAMPLES):
                r = c.infer(x[i])
                assert r["active"] == e["index"]
                assert r["output"] == want[i].tolist(), f"submodel {e['index']} sample {i}"
