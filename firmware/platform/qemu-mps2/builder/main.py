"""SCons build script of the local qemu-mps2 dev-platform.

Uses the system arm-none-eabi toolchain from PATH (no PlatformIO package), so
the build needs no registry. The compile flags are the Arduino Nano 33 BLE's
(firmware/boards/nano33ble/build_flags.json: -Os, softfp, -funsigned-char,
gnu++14), so the protocol and bit-exactness tests run the code users flash.
C++ has no exceptions/RTTI and links with gcc, so libstdc++ for arm-none-eabi
is not needed. The board layer (firmware/boards/qemu) brings its own vector
table and start-up code.
"""

import json
import os
import sys

from SCons.Script import Default, DefaultEnvironment

env = DefaultEnvironment()
board = env.BoardConfig()

PREFIX = "arm-none-eabi-"
for tool in ("gcc", "g++", "size", "objcopy", "gcc-ar", "gcc-ranlib"):
    if not env.WhereIs(PREFIX + tool):
        sys.stderr.write(
            f"Error: {PREFIX}{tool} not found on PATH. Install the Arm toolchain, e.g. on "
            "Debian/Ubuntu:\n  sudo apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi\n"
        )
        env.Exit(1)

env.Replace(
    AR=PREFIX + "gcc-ar",
    AS=PREFIX + "gcc",
    CC=PREFIX + "gcc",
    CXX=PREFIX + "g++",
    LINK=PREFIX + "gcc",  # C++ without exceptions/RTTI needs no libstdc++
    OBJCOPY=PREFIX + "objcopy",
    RANLIB=PREFIX + "gcc-ranlib",
    SIZETOOL=PREFIX + "size",
    PROGSUFFIX=".elf",
    LDSCRIPT_PATH=os.path.join(env.subst("$PROJECT_DIR"), board.get("build.ldscript")),
)

flags_file = os.path.join(env.subst("$PROJECT_DIR"), "boards", "nano33ble", "build_flags.json")
with open(flags_file, encoding="utf-8") as f:
    nano = json.load(f)
cpu_flags = nano["cpu"]
env.Append(
    ASFLAGS=cpu_flags,
    CCFLAGS=cpu_flags + nano["codegen"] + nano["warnings"],
    CFLAGS=nano["c"],
    # bare metal without libstdc++: no guard calls for statics, no atexit table
    CXXFLAGS=nano["cxx"] + ["-fno-threadsafe-statics", "-fno-use-cxa-atexit"],
    CPPDEFINES=["REDS_BOARD_QEMU"],
    LINKFLAGS=cpu_flags
    + [
        "-nostartfiles",
        "--specs=nano.specs",
        "--specs=nosys.specs",
        "-Wl,--gc-sections",
        "-Wl,-Map,${BUILD_DIR}/firmware.map",
    ],
    LIBS=["c", "gcc"],
)

target_elf = env.BuildProgram()
target_bin = env.Command(
    os.path.join("$BUILD_DIR", "${PROGNAME}.bin"), target_elf, "$OBJCOPY -O binary $SOURCE $TARGET"
)
Default([target_elf, target_bin])
