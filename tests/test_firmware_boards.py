"""The nano33ble board layer cannot be built here (PlatformIO downloads the
Arduino mbed core), so it is compiled on the host against a minimal Arduino.h
stub with -Wall -Wextra -Werror, linked with a stand-in Serial on stdin/stdout,
and driven through setup()/loop()."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from nano_build import ARDUINO_STUB, defined_functions, nano_compile, needs_arm

from reds_tf.firmware import FIRMWARE_DIR

STUB_RUNTIME = Path(__file__).parent / "data" / "stub_runtime"

# Host stand-ins for the Arduino functions the board layer calls.
HARNESS = r"""
#include <Arduino.h>
#include <stdio.h>
#include <time.h>
USBSerial Serial;
static int g_next = -2;
unsigned long micros(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long)(ts.tv_sec * 1000000L + ts.tv_nsec / 1000L);
}
void USBSerial::begin(unsigned long) {}
int USBSerial::available(void) {
    if (g_next == -2) g_next = getchar();
    return g_next == EOF ? 0 : 1;
}
int USBSerial::read(void) {
    available();
    int c = g_next;
    g_next = -2;
    return c;
}
size_t USBSerial::write(uint8_t c) { return fwrite(&c, 1, 1, stdout); }
size_t USBSerial::write(const uint8_t *b, size_t n) {
    return fwrite(b, 1, n, stdout);
}
void setup();
void loop();
int main() {
    setup();
    while (Serial.available()) loop();
    return 0;
}
"""


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_nano33ble_layer_compiles_and_runs_against_arduino_stub(tmp_path: Path) -> None:
    harness = tmp_path / "harness.cpp"
    harness.write_text(HARNESS)
    sources = [
        FIRMWARE_DIR / "boards" / "nano33ble" / "board.cpp",
        *sorted((FIRMWARE_DIR / "src").glob("*.cpp")),
        STUB_RUNTIME / "reds_model.cpp",
        harness,
    ]
    exe = tmp_path / "nano_host"
    cmd = [
        "g++", "-std=gnu++14", "-funsigned-char", "-Wall", "-Wextra", "-Wvla", "-Werror", "-O1",
        "-I", str(FIRMWARE_DIR / "boards" / "nano33ble" / "test_stub"),
        "-I", str(FIRMWARE_DIR / "src"), "-I", str(STUB_RUNTIME),
        *map(str, sources), "-o", str(exe),
    ]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = subprocess.run(
        [str(exe)], input=b"info\nuse 1\nuse 7\n", capture_output=True, timeout=30
    ).stdout.decode()
    lines = out.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith('{"ok":true,"model":"stub_mlp","submodels":4,"active":3')
    assert ',"fingerprint":"0123456789abcdef","stack_bytes":-1,"stack_size_bytes":-1,' in lines[0]
    assert re.search(r',"serial_buffer_bytes":\d+}$', lines[0])
    assert lines[1].startswith('{"ok":true,"active":1,"switch_us":')
    assert lines[2].startswith('{"ok":false,"error":"submodel index out of range')


# A stand-in for mbed OS's RTX header (rtx_os.h): only the thread control
# block's fields the nano33ble layer reads; the harness points it at the host
# stack it runs on.
FAKE_RTX = r"""
#include <stdint.h>
typedef void *osThreadId_t;
typedef struct osRtxThread_s {
    uint8_t id;
    void *stack_mem;
    uint32_t stack_size;
    uint32_t sp;
} osRtxThread_t;
extern osRtxThread_t reds_test_thread;
static inline osThreadId_t osThreadGetId(void) { return &reds_test_thread; }
"""
RTX_MAIN = r"""
#include <rtx_os.h>
osRtxThread_t reds_test_thread;
int main() {
    char *top = (char *)__builtin_frame_address(0);
    reds_test_thread.stack_mem = top - 65536;
    reds_test_thread.stack_size = 65536;
    setup();
"""


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_nano33ble_layer_paints_the_rtx_thread_stack(tmp_path: Path) -> None:
    """With RTX's header (here a stand-in describing 64 KB of the host stack
    below main's frame), setup() has the core paint the thread's stack and
    info reports a measured high-water mark that grows with the work done."""
    (tmp_path / "rtx").mkdir()
    (tmp_path / "rtx" / "rtx_os.h").write_text(FAKE_RTX)
    harness = tmp_path / "harness.cpp"
    harness.write_text(HARNESS.replace("int main() {\n    setup();\n", RTX_MAIN, 1))
    sources = [
        FIRMWARE_DIR / "boards" / "nano33ble" / "board.cpp",
        *sorted((FIRMWARE_DIR / "src").glob("*.cpp")),
        STUB_RUNTIME / "reds_model.cpp",
        harness,
    ]
    exe = tmp_path / "nano_host_rtx"
    cmd = [
        "g++", "-std=gnu++14", "-funsigned-char", "-Wall", "-Wextra", "-Wvla", "-Werror", "-O1",
        "-I", str(FIRMWARE_DIR / "boards" / "nano33ble" / "test_stub"),
        "-I", str(tmp_path / "rtx"),
        "-I", str(FIRMWARE_DIR / "src"), "-I", str(STUB_RUNTIME),
        *map(str, sources), "-o", str(exe),
    ]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = subprocess.run(
        [str(exe)], input=b"info\nbench\ninfo\n", capture_output=True, timeout=30
    ).stdout.decode()
    first, _, second = (json.loads(line) for line in out.splitlines())
    assert first["stack_size_bytes"] == 65536 - 8  # RTX's magic word stays unpainted
    assert 0 < first["stack_bytes"] <= second["stack_bytes"] < 65536 - 8


@needs_arm
def test_core_and_nano33ble_layer_compile_with_the_nano_flags(tmp_path: Path) -> None:
    """The Arduino compile check on the portable firmware core and the
    nano33ble board layer: the Nano's flags (-Os, -funsigned-char, gnu++14),
    -Werror, a failing <arm_acle.h>, the Arduino.h stub of the real core's API."""
    sources = [
        FIRMWARE_DIR / "boards" / "nano33ble" / "board.cpp",
        *sorted((FIRMWARE_DIR / "src").glob("*.cpp")),
    ]
    objs = nano_compile(sources, [ARDUINO_STUB, FIRMWARE_DIR / "src", STUB_RUNTIME], tmp_path)
    board = defined_functions(objs["board.cpp"])
    assert {"setup", "loop", "reds_board_write", "reds_board_micros"} <= board
    assert {"reds_fw_feed", "reds_fw_stack_paint"} <= defined_functions(objs["reds_fw.cpp"])
    # the RTX branch (mbed OS's thread stack) too, against the stand-in header
    (tmp_path / "rtx").mkdir()
    (tmp_path / "rtx" / "rtx_os.h").write_text(FAKE_RTX)
    rtx_dir = tmp_path / "with_rtx"
    rtx_dir.mkdir()
    includes = [ARDUINO_STUB, tmp_path / "rtx", FIRMWARE_DIR / "src", STUB_RUNTIME]
    objs = nano_compile(sources[:1], includes, rtx_dir)
    assert "setup" in defined_functions(objs["board.cpp"])


FMT_HARNESS = r"""
#include <stdio.h>
#include <string.h>
#include "reds_fmt.h"
int main() {
    unsigned int bits;
    char buf[64];
    while (scanf("%x", &bits) == 1) {
        float f;
        memcpy(&f, &bits, sizeof f);
        reds_out o;
        reds_out_init(&o, buf, sizeof buf);
        reds_out_float(&o, f);
        printf("%.*s\n", (int)o.len, buf);
    }
    return 0;
}
"""


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_float_formatting_reads_back_exactly(tmp_path: Path) -> None:
    """reds_out_float (no printf on the device) prints JSON numbers that parse
    back to the same float32, over random bit patterns and edge cases."""
    import json

    import numpy as np

    harness = tmp_path / "fmt.cpp"
    harness.write_text(FMT_HARNESS)
    exe = tmp_path / "fmt"
    r = subprocess.run(
        ["g++", "-Wall", "-Wextra", "-Werror", "-O2", "-I", str(FIRMWARE_DIR / "src"),
         str(FIRMWARE_DIR / "src" / "reds_fmt.cpp"), str(harness), "-o", str(exe)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, 20000, dtype=np.uint64).astype(np.uint32)
    edge = np.array(
        [0.0, -0.0, 1.0, -1.0, 0.1, 1 / 255, 1 / 256, 1e-5, 9.99999e-6, 1e9, 999999999.0,
         3.4028235e38, 1.4e-45, 1.17549435e-38, 0.00392156886, 123456789.0],
        np.float32,
    ).view(np.uint32)  # fmt: skip
    bits = np.concatenate([edge, bits])
    values = bits.view(np.float32)
    finite = np.isfinite(values)
    text = "\n".join(f"{int(b):x}" for b in bits) + "\n"
    out = subprocess.run([str(exe)], input=text, capture_output=True, text=True, timeout=60)
    lines = out.stdout.splitlines()
    assert len(lines) == len(bits)
    for v, ok, s in zip(values, finite, lines, strict=True):
        if not ok:
            assert s == "null"
            continue
        parsed = json.loads(s)
        assert np.float32(parsed) == v, (v, s)
    assert lines[list(bits).index(np.float32(0.00392156886).view(np.uint32))] == "0.00392156886"
