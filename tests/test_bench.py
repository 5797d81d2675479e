"""``reds bench``: mark parsing, memory accounting, the Markdown section, and one
real benchmark of the default model under QEMU (DSP and portable builds)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from reds_tf import bench
from reds_tf.errors import RedsError

TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-nm", "arm-none-eabi-size", "qemu-system-arm", "gcc")
needs_tools = pytest.mark.skipif(
    any(shutil.which(t) is None for t in TOOLS),
    reason="needs gcc-arm-none-eabi and qemu-system-arm (make setup installs them)",
)


def test_parse_marks_subtracts_mark_overhead() -> None:
    # empty region 3; k=0: switch 10+3, invoke 1000+3; k=1: switch 11+3, invoke 2000+3
    marks = [100, 103, 200, 213, 300, 1303, 1400, 1414, 1500, 3503]
    got = bench.parse_marks(marks, 2)
    assert got == {"mark_overhead": 3, "switch": [10, 11], "invoke": [1000, 2000]}
    with pytest.raises(RedsError, match="expected 10 marks"):
        bench.parse_marks(marks[:-1], 2)


def test_parse_uart_outputs_and_stack() -> None:
    lines = ["variant dsp", "submodels 2", "out 0 0 00ff", "out 0 1 7f80", "stack 256", "done"]
    got = bench.parse_uart(lines, 1, 2, 2)
    assert got["variant"] == "dsp" and got["stack_bytes"] == 256
    np.testing.assert_array_equal(got["outputs"][0], [[0, -1], [127, -128]])
    with pytest.raises(RedsError, match="incomplete"):
        bench.parse_uart(lines[:3] + lines[4:], 1, 2, 2)  # one output missing


def test_memory_use_counts_flash_and_ram() -> None:
    sections = {".isr_vector": 64, ".text": 1000, ".rodata": 5000, ".data": 16, ".bss": 300}
    m = bench.memory_use({**sections, ".stack": 65536, ".comment": 50}, stack_used=200)
    assert m["flash_bytes"] == 64 + 1000 + 5000 + 16
    assert m["ram_bytes"] == 16 + 300 + 200  # the reserved stack does not count, its use does
    assert m["rodata_bytes"] == 5000 and m["stack_bytes"] == 200


def _manifest() -> dict:
    subs = [
        {"index": 0, "budget": 0.5, "widths": {"fc": 2}, "macs": 500},
        {"index": 1, "budget": 1.0, "widths": {"fc": 4}, "macs": 1000},
    ]
    return {"name": "toy", "submodels": subs, "weight_bytes": 10, "arena_bytes": 20}


def _result(counts: dict) -> dict:
    mem = {"dsp": bench.memory_use({".text": 10}, 4), "portable": bench.memory_use({}, 8)}
    result = {
        "name": "toy",
        "run_dir": "runs/toy",
        "qemu": "7.2",
        "compiler": "gcc",
        "board_flags": "-Os",
        "repeatable": True,
        "outputs_identical": True,
        "num_inputs": 8,
        "weight_bytes": 10,
        "arena_bytes": 20,
    }
    result.update(bench.summarise(_manifest(), counts, mem, layers=[("fc1", "fc"), ("fc2", "fc")]))
    return result


def _cyc(switch: list[int], invoke: list[int], cycles_per_instr: float = 1.5) -> dict:
    """Counts of one build with cycles at a fixed ratio to the instructions."""
    return {
        "switch": switch,
        "invoke": invoke,
        "switch_cycles": [round(v * cycles_per_instr) for v in switch],
        "invoke_cycles": [round(v * cycles_per_instr) for v in invoke],
    }


def test_parse_marks_and_layer_counts_with_cycles() -> None:
    # marks (instructions, cycles): empty region, then k=0 switch and invoke
    marks = [(100, 200), (102, 206), (200, 400), (210, 420), (300, 600), (1302, 2606)]
    # two layer calls inside the invoke (and one outside, from a later pass)
    hits = [(0x10, 305, 610), (0x20, 800, 1500), (0x10, 5000, 9000)]
    got = bench.layer_counts(marks, hits, [0x10, 0x20], 1)
    assert got == [[(495, 890), (502, 1106)]]
    assert bench.layer_counts(marks, hits, [0x20, 0x10], 1) is None  # order must match


def test_summarise_checks_and_markdown_section(tmp_path: Path) -> None:
    counts = {
        "dsp": _cyc([8, 9], [660, 1200]),
        "portable": _cyc([8, 9], [2600, 5000]),
        "dsp_o2": _cyc([7, 8], [600, 1100]),
    }
    counts["dsp"]["layers"] = [[(600, 900), (60, 90)], [(1100, 1650), (100, 150)]]
    r = _result(counts)
    rows, c = r["submodels"], r["checks"]
    assert rows[1]["instr_per_mac_dsp"] == 1.2 and rows[1]["instr_per_mac_portable"] == 5.0
    assert rows[1]["instr_per_mac_dsp_o2"] == 1.1 and c["full_width_instr_per_mac_dsp_o2"] == 1.1
    assert rows[1]["portable_over_dsp"] == pytest.approx(5000 / 1200, abs=1e-3)
    assert rows[0]["proportionality_error"] == pytest.approx((660 / 1200) / 0.5 - 1, abs=1e-4)
    assert c["instr_per_mac_ok"] and c["switch_ok"] and c["proportionality_ok"]
    assert c["max_switch_instructions"] == 9
    assert rows[1]["cycles_dsp"] == 1800 and rows[1]["cycles_per_mac_dsp"] == 1.8
    assert rows[1]["latency_us_est_dsp"] == pytest.approx(1800 / 64, abs=0.1)
    assert c["full_width_cycles_per_instr_dsp"] == 1.5
    assert rows[0]["layers"][1] == {
        "name": "fc2",
        "kind": "fc",
        "instructions_dsp": 60,
        "cycles_dsp": 90,
    }
    # 15 % off proportional, too slow and a slow switch: every check fails
    bad = _result({**counts, "dsp": _cyc([8, 150], [1150, 1600])})["checks"]
    assert not (bad["instr_per_mac_ok"] or bad["switch_ok"] or bad["proportionality_ok"])

    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\n## Host\n\nkeep me\n")
    begin, _ = bench.md_markers("toy")
    bench.update_markdown(md, bench.render_markdown(r), "toy")
    first = md.read_text()
    assert "keep me" in first and first.count(begin) == 1
    assert "| 1 | 4 | 1,000 | 1,200 | 1,800 | 1.800 | 1.200 | 1.100 |" in first
    assert "estimate" in first
    assert "| fc2 | fc | 90 | 150 |" in first  # the per-layer table
    # a second run replaces the section instead of appending another one
    r2 = _result({**counts, "dsp": _cyc([8, 9], [700, 1300])})
    bench.update_markdown(md, bench.render_markdown(r2), "toy")
    second = md.read_text()
    assert second.count(begin) == 1 and "keep me" in second
    assert "| 1 | 4 | 1,000 | 1,300 |" in second and "1,200 |" not in second
    # another model gets its own section; an unnamed older section of the same
    # model is replaced in place
    other = {**r2, "name": "other"}
    bench.update_markdown(md, bench.render_markdown(other), "other")
    third = md.read_text()
    assert third.count(begin) == 1 and third.count(bench.md_markers("other")[0]) == 1
    legacy = bench.render_markdown(r).replace(begin, bench.MD_BEGIN)
    legacy = legacy.replace(bench.md_markers("toy")[1], bench.MD_END)
    md.write_text("# Benchmarks\n\n" + legacy + "\nafter\n")
    bench.update_markdown(md, bench.render_markdown(r2), "toy")
    fourth = md.read_text()
    assert bench.MD_BEGIN not in fourth and fourth.count(begin) == 1 and "after" in fourth


def test_conv_target_and_board_fit() -> None:
    counts = {
        "dsp": _cyc([8, 9], [900, 1800]),
        "portable": _cyc([8, 9], [2600, 5000]),
        "dsp_o2": _cyc([8, 9], [850, 1700]),
    }
    mem = {"dsp": bench.memory_use({".text": 10}, 4), "portable": bench.memory_use({}, 8)}
    dense = bench.summarise(_manifest(), counts, mem)["checks"]
    conv = bench.summarise(_manifest(), counts, mem, kind="conv")["checks"]
    assert not dense["instr_per_mac_ok"] and conv["instr_per_mac_ok"]  # 1.8 instr/MAC
    assert conv["target_instr_per_mac"] == 2.0 and conv["fits_nano33ble"]
    big = {**mem, "dsp": bench.memory_use({".rodata": 960 * 1024}, 4)}
    assert not bench.summarise(_manifest(), counts, big, kind="conv")["checks"]["fits_nano33ble"]
    ram = {**mem, "portable": bench.memory_use({".bss": 250 * 1024}, 8 * 1024)}
    assert not bench.summarise(_manifest(), counts, ram, kind="conv")["checks"]["fits_nano33ble"]


def test_submodel_arena_bytes_old_and_new_manifests() -> None:
    old = _manifest()  # one top-level arena for every submodel
    assert bench.submodel_arena_bytes(old) == [20, 20]
    subs = [{**old["submodels"][0], "arena_bytes": 12}, {**old["submodels"][1], "arena_bytes": 20}]
    assert bench.submodel_arena_bytes({**old, "submodels": subs}) == [12, 20]
    subs[0]["arena_bytes"] = [8, 12]  # a list per submodel: its peak
    subs[1].pop("arena_bytes")  # missing on one entry: the top-level arena
    assert bench.submodel_arena_bytes({**old, "submodels": subs}) == [12, 20]


def test_ram_picture_and_tflm_columns() -> None:
    ram = bench.nano_ram(3000, 3004, 2500, 2000, 300)
    assert ram["used_bytes"] == 3004 + 2500 + bench.NANO33BLE.core_ram_bytes
    assert ram["left_bytes"] == 256 * 1024 - ram["used_bytes"]
    assert ram["main_stack_left_bytes"] == 32 * 1024 - 300
    counts = {
        "dsp": _cyc([8, 9], [660, 1200]),
        "portable": _cyc([8, 9], [2600, 5000]),
        "dsp_o2": _cyc([7, 8], [600, 1100]),
    }
    mem = {"dsp": bench.memory_use({".text": 10}, 4), "portable": bench.memory_use({}, 8)}
    tflm = [{"head": 16, "tail": 100, "total": 116}, {"head": 40, "tail": 110, "total": 150}]
    got = bench.summarise(_manifest(), counts, mem, tflm=tflm)["submodels"]
    assert [r["arena_bytes"] for r in got] == [20, 20] and got[0]["arena_shared"]
    assert [r["tflm_arena_bytes"] for r in got] == [16, 40]
    assert got[1]["tflm_arena_total_bytes"] == 150 and got[1]["arena_over_tflm"] == 0.5
    # TFLite Micro unavailable: no columns, the bench goes on
    plain = bench.summarise(_manifest(), counts, mem, tflm=[None, None])["submodels"]
    assert "tflm_arena_bytes" not in plain[0] and plain[0]["arena_bytes"] == 20
    r = _result(counts)
    r["submodels"] = got
    r["ram_nano33ble"] = ram
    md = bench.render_markdown(r)
    assert "| 1 | 20 B | 40 B | 0.50 | 150 B |" in md
    assert f"**{ram['left_bytes']:,}**" in md and "serial line and reply buffers 2,000 B" in md
    assert "300 B of the 32 KB main-thread stack" in md
    assert "one arena for all submodels" in md  # _manifest() has no per-submodel arenas
    # a result of an older version (no arena fields) still renders
    assert "TensorFlow Lite Micro" not in bench.render_markdown(_result(counts)).split("|---|")[0]


def test_missing_export_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(RedsError, match="reds export"):
        bench.run_bench(tmp_path, markdown=None)


@pytest.fixture(scope="module")
def bench_run_dir(request: pytest.FixtureRequest) -> Path:
    """An exported run of the default model (the shared fixture when it exists)."""
    try:
        return Path(request.getfixturevalue("exported_run"))
    except pytest.FixtureLookupError:
        from reds_tf.export import run_export

        run = Path(request.getfixturevalue("trained_run"))
        if not (run / "export" / "manifest.json").exists():
            run_export(run, limit=500, log=lambda _msg: None)
        return run


@needs_tools
def test_bench_default_model(bench_run_dir: Path, tmp_path: Path) -> None:
    out, md = tmp_path / "bench.json", tmp_path / "BENCHMARKS.md"
    result = bench.run_bench(bench_run_dir, out=out, markdown=md)
    saved = json.loads(out.read_text())
    assert saved["checks"] == result["checks"]
    assert saved["repeatable"] and saved["outputs_identical"]
    assert saved["arena_mode"] == "balanced"  # the export's default, said in the markdown
    assert "`reds export --arena balanced`" in md.read_text()
    c = result["checks"]
    assert c["instr_per_mac_ok"], c
    assert c["switch_ok"], c
    # the DSP build must really be faster, on every submodel
    for row in result["submodels"]:
        assert row["instructions_dsp"] < row["instructions_portable"] / 2, row
        assert row["latency_us_est_dsp"] == pytest.approx(row["cycles_dsp"] / 64, abs=0.1)
        assert row["instructions_dsp"] < row["cycles_dsp"] < 3 * row["instructions_dsp"], row
        layers = row["layers"]  # per layer, adding up to the inference less its prologue
        assert [ly["kind"] for ly in layers] == ["fc"] * len(layers)
        assert 0 <= row["cycles_dsp"] - sum(ly["cycles_dsp"] for ly in layers) < 100
    mem = result["memory"]["dsp"]
    assert mem["flash_bytes"] > result["weight_bytes"]
    assert 0 < mem["stack_bytes"] < 65536
    assert mem["ram_bytes"] >= result["arena_bytes"] + mem["stack_bytes"]
    assert bench.md_markers(result["name"])[0] in md.read_text()
    assert c["fits_nano33ble"] and c["model_kind"] == "dense"
    # arena per submodel, ours and TensorFlow Lite Micro's, and the Nano's RAM picture
    assert "tflm_error" not in result, result.get("tflm_error")
    for row in result["submodels"]:
        assert 0 < row["arena_bytes"] <= result["arena_bytes"]
        assert 784 <= row["tflm_arena_bytes"] < row["tflm_arena_total_bytes"]
    ram = saved["ram_nano33ble"]
    assert ram["arena_bytes"] == result["arena_bytes"]
    assert ram["runtime_static_bytes"] >= ram["arena_bytes"]
    # line buffer 2 * 784 + 32 and a reply buffer of at least 320 B
    assert ram["serial_buffer_bytes"] >= 2 * 784 + 32 + 320
    assert ram["firmware_static_bytes"] >= ram["serial_buffer_bytes"] + 784
    assert ram["stack_high_water_bytes"] == mem["stack_bytes"]
    assert ram["used_bytes"] == (
        ram["runtime_static_bytes"] + ram["firmware_static_bytes"] + ram["core_ram_bytes"]
    )
    assert 0 < ram["left_bytes"] == 256 * 1024 - ram["used_bytes"]
    assert f"**{ram['left_bytes']:,}**" in md.read_text()


@pytest.fixture(scope="module")
def dscnn_run_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported DS-CNN-S run (Fashion-MNIST geometry: 3x3 stride-2 first conv,
    4 depthwise-separable blocks of 64): the shared fixture when there is one,
    else random weights with realistic BatchNorm statistics and hand-picked
    nested widths (tests/test_export_conv.py), exported here. Instruction counts
    and bit-exactness do not depend on how well the weights were trained."""
    try:
        return Path(request.getfixturevalue("exported_dscnn_run"))
    except pytest.FixtureLookupError:
        from test_export_conv import make_dscnn_run

        from reds_tf.export import run_export

        run = tmp_path_factory.mktemp("bench_dscnn") / "fmnist_dscnn_s"
        make_dscnn_run(run, blocks=4, filters=64)
        run_export(run, limit=100, log=lambda _msg: None)
        return run


@needs_tools
def test_bench_dscnn(dscnn_run_dir: Path, tmp_path: Path) -> None:
    """A DS-CNN-S export: the DSP build (conv, pointwise DSP kernels) and the
    portable build agree with the host simulation on every submodel in QEMU,
    the DSP build is faster on every submodel, and the model fits the board."""
    result = bench.run_bench(dscnn_run_dir, out=tmp_path / "bench.json", markdown=None)
    c = result["checks"]
    assert result["outputs_identical"] and result["repeatable"]
    assert c["model_kind"] == "conv" and c["target_instr_per_mac"] == 2.0
    assert c["switch_ok"], c
    assert c["fits_nano33ble"], result["memory"]
    assert 0 < result["ram_nano33ble"]["left_bytes"] < 256 * 1024
    for row in result["submodels"]:
        assert row["tflm_arena_bytes"] > 0 and row["arena_bytes"] > 0, row
        assert row["instructions_dsp"] < row["instructions_portable"], row
        assert row["cycles_dsp"] < row["cycles_portable"], row
        assert row["cycles_dsp"] - sum(ly["cycles_dsp"] for ly in row["layers"]) < 100
