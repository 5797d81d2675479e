"""The generated runtime on the host (ctypes): bit-exact with TFLite Micro."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from reds_tf.cli import main as cli_main
from reds_tf.codegen.plan import build_plan
from reds_tf.codegen.render import render_sources
from reds_tf.errors import RedsError
from reds_tf.quant.slicer import slice_model
from reds_tf.quant.tflm import run_tflm
from reds_tf.sim import Runtime, load_runtime, run_simulate

TINY = Path(__file__).parent / "data" / "tiny"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    sub = json.loads((TINY / "submodels.json").read_text())
    buf = (TINY / "model.tflite").read_bytes()
    plan = build_plan(buf, sub)
    src = tmp_path_factory.mktemp("tiny_src")
    for name, text in render_sources(plan).items():
        (src / name).write_text(text)
    return sub, buf, plan, Runtime(src, (5, 5, 1))


def test_tiny_bit_exact_with_tflm_on_every_submodel(tiny):
    sub, buf, plan, rt = tiny
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (1500, 5, 5, 1), dtype=np.int8)
    x[:10] = -128  # extremes of the int8 range
    x[10:20] = 127
    assert rt.num_submodels == 3
    for k in range(3):
        widths = [sub["submodels"][k]["widths"][ly["name"]] for ly in sub["layers"]]
        want = run_tflm(slice_model(buf, widths), x).outputs
        got = rt.predict(x, k)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(plan.reference(x, k), want)
        assert rt.get_submodel() == k
        assert rt.macs(k) == plan.macs(k)


def test_switching_back_and_forth_is_stateless(tiny):
    _, _, _, rt = tiny
    x = np.random.default_rng(1).integers(-128, 128, (20, 5, 5, 1), dtype=np.int8)
    first = [rt.predict(x, k) for k in (2, 0, 1)]
    again = [rt.predict(x, k) for k in (1, 2, 0)]
    np.testing.assert_array_equal(first[0], again[1])
    np.testing.assert_array_equal(first[1], again[2])
    np.testing.assert_array_equal(first[2], again[0])


def test_runtime_rejects_bad_inputs(tiny):
    _, _, _, rt = tiny
    with pytest.raises(RedsError, match="int8"):
        rt.predict(np.zeros((2, 5, 5, 1), np.float32))
    with pytest.raises(RedsError, match=r"shape \(N, 5, 5, 1\)"):
        rt.predict(np.zeros((2, 25), np.int8))
    rt.set_submodel(1)
    with pytest.raises(RedsError, match="out of range"):
        rt.set_submodel(3)
    with pytest.raises(RedsError, match="out of range"):
        rt.set_submodel(-1)
    assert rt.get_submodel() == 1  # a bad k leaves the state unchanged
    assert rt.macs(7) == 0


def test_simulate_maps_npy_inputs_to_outputs(exported_run, tmp_path):
    manifest = json.loads((exported_run / "export" / "manifest.json").read_text())
    x = np.random.default_rng(2).integers(-128, 128, (30, *manifest["input_shape"]), np.int8)
    inp, out = tmp_path / "in.npy", tmp_path / "out.npy"
    np.save(inp, x)
    rc = cli_main(
        [
            "simulate",
            str(exported_run),
            "--submodel",
            "1",
            "--inputs",
            str(inp),
            "--output",
            str(out),
        ]
    )
    assert rc == 0
    y = np.load(out)
    assert y.dtype == np.int8 and y.shape == (30, manifest["num_classes"])
    want = run_tflm(exported_run / "export" / manifest["submodels"][1]["tflite"], x).outputs
    np.testing.assert_array_equal(y, want)


def test_simulate_accuracy_matches_manifest(exported_run):
    manifest = json.loads((exported_run / "export" / "manifest.json").read_text())
    k = 0
    acc = run_simulate(exported_run, submodel=k, limit=manifest["eval_samples"])
    # Bit-exact with TFLM on the same samples, hence the same accuracy.
    assert acc == pytest.approx(manifest["submodels"][k]["int8_accuracy"], abs=1e-12)


def test_simulate_bad_inputs(exported_run, tmp_path, capsys):
    bad_dtype = tmp_path / "f.npy"
    np.save(bad_dtype, np.zeros((2, 28, 28, 1), np.float32))
    bad_shape = tmp_path / "s.npy"
    np.save(bad_shape, np.zeros((2, 27, 28, 1), np.int8))
    for path, msg in [(bad_dtype, "int8"), (bad_shape, "shape"), (tmp_path / "no.npy", "exist")]:
        rc = cli_main(["simulate", str(exported_run), "--submodel", "0", "--inputs", str(path)])
        assert rc == 2
        assert msg in capsys.readouterr().err
    rc = cli_main(["simulate", str(exported_run), "--submodel", "9"])
    assert rc == 2 and "--submodel" in capsys.readouterr().err
    rc = cli_main(["simulate", str(tmp_path), "--submodel", "0"])
    assert rc == 2 and "reds export" in capsys.readouterr().err


def test_load_runtime_reads_constants(exported_run):
    rt = load_runtime(exported_run)
    manifest = json.loads((exported_run / "export" / "manifest.json").read_text())
    assert rt.weight_bytes == manifest["weight_bytes"]
    assert rt.arena_bytes == manifest["arena_bytes"]
    assert rt.input_zero_point == manifest["input_zero_point"]
    assert rt.input_scale == pytest.approx(manifest["input_scale"], rel=1e-7)
    assert rt.num_submodels == len(manifest["submodels"])


def test_host_benchmark_reports_every_goal(exported_run, tmp_path):
    from reds_tf.bench_host import benchmark, benchmark_markdown
    from reds_tf.cli import main as cli_main

    def bench_main(argv: list[str]) -> int:
        return cli_main(["bench", "--host", *argv])

    b = benchmark(exported_run, samples=20, repeats=1, rounds=1)
    assert b["weight_bytes"] == b["full_model_weight_bytes"]
    assert len(b["submodels"]) == len(
        json.loads((exported_run / "submodels.json").read_text())["submodels"]
    )
    for r in b["submodels"]:
        assert r["runtime_us"] > 0 and r["tflm_us"] > 0 and r["generic_us"] > 0
        assert r["tflite_weight_bytes"] <= b["full_model_weight_bytes"]
    text = benchmark_markdown(b, "cmd")
    rows = [ln for ln in text.splitlines() if re.match(r"\| \d+ \|", ln)]
    assert len(rows) == len(b["submodels"])
    md = tmp_path / "B.md"
    md.write_text("# Benchmarks\n\nother section\n")
    args = [str(exported_run), "--samples", "10", "--repeats", "1", "--rounds", "1"]
    assert bench_main([*args, "--markdown", str(md)]) == 0
    assert bench_main([*args, "--markdown", str(md)]) == 0  # replaced, not appended twice
    out = md.read_text()
    assert out.startswith("# Benchmarks\n\nother section\n")
    assert out.count("reds export: host begin") == 1
