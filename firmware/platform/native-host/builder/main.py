"""SCons build script of the local native-host dev-platform: the firmware as a
host program built with the system gcc/g++ (serves the protocol on stdin/stdout)."""

import sys

from SCons.Script import Default, DefaultEnvironment

env = DefaultEnvironment()

for tool in ("gcc", "g++"):
    if not env.WhereIs(tool):
        sys.stderr.write(f"Error: {tool} not found on PATH (Debian: sudo apt-get install g++)\n")
        env.Exit(1)

env.Replace(AR="ar", AS="gcc", CC="gcc", CXX="g++", LINK="g++", RANLIB="ranlib", PROGSUFFIX="")
env.Append(
    # The Nano's language levels (C++14, C11); plain char stays the host's
    # (signed), so the protocol tests cover both signednesses (qemu: unsigned).
    CCFLAGS=["-O2"],
    CFLAGS=["-std=gnu11"],
    CXXFLAGS=["-std=gnu++14", "-fno-exceptions", "-fno-rtti"],
    CPPDEFINES=["REDS_BOARD_NATIVE"],
)

Default([env.BuildProgram()])
