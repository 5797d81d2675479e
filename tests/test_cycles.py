"""The Cortex-M4 cycle model of the QEMU plugin (reds_tf/qemu_plugin/icount.c) on
hand-counted instruction sequences (tests/cycle_check/snippets.S) run under QEMU."""

from __future__ import annotations

import itertools
import shutil
import subprocess
from pathlib import Path

import pytest

from reds_tf import bench

TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-nm", "qemu-system-arm", "gcc")
pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in TOOLS),
    reason="needs gcc-arm-none-eabi and qemu-system-arm (make setup installs them)",
)

SNIPPETS = Path(__file__).resolve().parent / "cycle_check" / "snippets.S"

# Every region between two marks also holds the marker's `bx lr` and the next
# `bl`: 1 + P each, with the model's pipeline refill P = 2.
CALL_AND_RETURN = 3 + 3

# Cycles of each snippet of snippets.S, counted by hand with the TRM's rules.
EXPECTED = [
    ("empty", 0),
    # 8 single-cycle instructions (MOVS, ADDS, MUL, MLA, SMLAD, SXTB16, SSAT, UBFX)
    ("data processing", 8),
    # LDR 2; LDR, LDR (register offset), LDRB pipelined 1 each; ADD 1; LDRH after
    # an ADD 2; LDR.W pipelined 1
    ("loads", 2 + 1 + 1 + 1 + 1 + 2 + 1),
    # LDR 2; LDR from the loaded pointer 2 (not pipelined); LDR 1; LDRSH 1
    ("load chain", 2 + 2 + 1 + 1),
    # STR imm 1, STR imm 1, LDR after a store 2, STR reg behind a load 1, STR reg
    # behind a store 2, STRB imm 1, LDR 2, STR.W reg behind a load 1
    ("stores", 1 + 1 + 2 + 1 + 2 + 1 + 2 + 1),
    # ADDS 1 + LDR 2 + 1 interlock; MOV 1 + STR imm 1 + 1; ADD.W 1 + LDRD 3 + 1
    ("address interlock", 1 + 3 + 1 + 2 + 1 + 4),
    # LDRD 3, STRD 3, LDM of 3 registers 4, PUSH 2 3, POP 2 3, LDR after POP 2
    ("dual and multiple", 3 + 3 + 4 + 3 + 3 + 2),
    # MOVS 1; 3 x SUBS 1; BNE taken 3, taken 3, not taken 1; B 3 (NOP skipped)
    ("loop and branch", 1 + 3 + 3 + 3 + 1 + 3),
    # MOVS 1, CBZ taken 3, MOVS 1, CBZ not taken 1, NOP 1, CMP 1, IT 1, MOVEQ 1
    ("cbz and it", 1 + 3 + 1 + 1 + 1 + 1 + 1 + 1),
    # BL 3 + BX 3; BL 3 + PUSH {r4, lr} 3 + POP {r4, pc} 1 + 2 + P = 5
    ("calls", 3 + 3 + 3 + 3 + 5),
    # BL 3, CMP 1, IT 1, BXNE failing 1, BX 3; BL 3, CMP 1, IT 1, BXEQ taken 3
    ("conditional return", 3 + 1 + 1 + 1 + 3 + 3 + 1 + 1 + 3),
    # MOVS 1, UDIV and SDIV at the upper bound 12 each
    ("division", 1 + 12 + 12),
    # BL 3, LDR 2, LDR pipelined across the page 1, BX 3; BL 3, ADDS 1, LDR 2 + 1, BX 3
    ("page straddle", 3 + 2 + 1 + 3 + 3 + 1 + 3 + 3),
    # VLDR 2, VADD 1, VMLA 3, VMOV 1
    ("fpu", 2 + 1 + 3 + 1),
]


def _build(tmp_path: Path) -> Path:
    objs = []
    for src in (SNIPPETS, bench.BENCH_FW_DIR / "bench_startup.c"):
        obj = tmp_path / (src.name + ".o")
        flags = bench.compile_flags("c") if src.suffix == ".c" else ["-mcpu=cortex-m4", "-mthumb"]
        cmd = [
            "arm-none-eabi-gcc",
            *flags,
            f"-I{bench.BENCH_FW_DIR}",
            "-c",
            str(src),
            "-o",
            str(obj),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        objs.append(str(obj))
    elf = tmp_path / "snippets.elf"
    cmd = ["arm-none-eabi-gcc", *bench.link_flags(), "-T", str(bench.BENCH_FW_DIR / "bench.ld")]
    subprocess.run([*cmd, "-o", str(elf), *objs, "-lc", "-lgcc"], check=True)
    return elf


def test_cycle_model_on_hand_counted_sequences(tmp_path: Path) -> None:
    elf = _build(tmp_path)
    blob = tmp_path / "empty.bin"
    blob.write_bytes(bytes(16))
    got = bench.run_qemu_counts(elf, bench.build_plugin(), blob, tmp_path / "qemu")
    assert len(got.marks) == len(EXPECTED) + 1, got.marks
    cycles = [b[1] - a[1] - CALL_AND_RETURN for a, b in itertools.pairwise(got.marks)]
    assert dict(zip([n for n, _ in EXPECTED], cycles, strict=True)) == dict(EXPECTED)
    # The empty region: the marker's BX and the next BL, two instructions.
    assert got.marks[1][0] - got.marks[0][0] == 2


def test_plugin_output_parsing() -> None:
    text = "12 30\n@1a4 15 40\nnoise\n20 50\ntotal 99 cycles 200 marks 2\n"
    marks, sites = bench.parse_plugin_output(text)
    assert marks == [(12, 30), (20, 50)]
    assert sites == [(0x1A4, 15, 40)]
