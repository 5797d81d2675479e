"""``reds export``: files, manifest, weights stored once, bit-exact submodels, errors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from reds_tf.data import load_dataset
from reds_tf.errors import RedsError, RunDirError
from reds_tf.export import REPORT_BEGIN, run_export, update_report
from reds_tf.quant import numerics, slicer
from reds_tf.quant.tflm import run_tflm
from reds_tf.sim import load_runtime

TINY = Path(__file__).parent / "data" / "tiny"
MANIFEST_KEYS = {
    "name", "input_shape", "num_classes", "input_scale", "input_zero_point", "output_scale",
    "output_zero_point", "weight_bytes", "arena_bytes", "submodels",
}  # fmt: skip
SUBMODEL_KEYS = {"index", "budget", "widths", "macs", "tflite", "float_accuracy", "int8_accuracy"}


def _manifest(run: Path) -> dict:
    return json.loads((run / "export" / "manifest.json").read_text())


def test_export_writes_every_artifact(exported_run):
    export = exported_run / "export"
    sub = json.loads((exported_run / "submodels.json").read_text())
    m = _manifest(exported_run)
    assert MANIFEST_KEYS <= set(m)
    assert len(m["submodels"]) == len(sub["submodels"])
    for k, (e, s) in enumerate(zip(m["submodels"], sub["submodels"], strict=True)):
        assert SUBMODEL_KEYS <= set(e)
        assert e["tflite"] == f"submodel_{k}.tflite" and (export / e["tflite"]).is_file()
        assert e["widths"] == s["widths"] and e["macs"] == s["macs"]
    assert (export / "model.tflite").is_file()
    names = {p.name for p in (export / "src").iterdir()}
    assert {"reds_model.h", "reds_model.cpp", "reds_weights.cpp", "reds_kernels.h"} <= names
    header = (export / "src" / "reds_model.h").read_text()
    assert f"#define REDS_NUM_SUBMODELS {len(sub['submodels'])}" in header
    assert not [p for p in exported_run.iterdir() if p.name.startswith(".export")]
    assert m["runtime_check"].startswith("bit-exact with TFLite Micro on 2000")


def test_every_submodel_bit_exact_with_tflm(exported_run):
    """1000 test images + 1000 random int8 vectors per submodel."""
    m = _manifest(exported_run)
    data = load_dataset("fashion_mnist")
    images = numerics.quantize(data.x_test[:1000], m["input_scale"], m["input_zero_point"])
    noise = np.random.default_rng(0).integers(-128, 128, (1000, *m["input_shape"]), np.int8)
    x = np.concatenate([images, noise])
    rt = load_runtime(exported_run)
    for e in m["submodels"]:
        want = run_tflm(exported_run / "export" / e["tflite"], x).outputs
        got = rt.predict(x, e["index"])
        assert got.shape == (2000, m["num_classes"])
        np.testing.assert_array_equal(got, want)


def _tflite_weight_bytes(path: Path) -> int:
    model = slicer.read_model(path.read_bytes())
    sg = model.subgraphs[0]
    total = 0
    for fc in slicer.fully_connected_ops(model):
        total += slicer.tensor_data(model, sg.tensors[fc.weights]).nbytes
        if fc.bias >= 0:
            total += slicer.tensor_data(model, sg.tensors[fc.bias]).nbytes
    return total


def test_weights_stored_once(exported_run):
    export = exported_run / "export"
    m = _manifest(exported_run)
    full = _tflite_weight_bytes(export / "model.tflite")
    src = (export / "src" / "reds_weights.cpp").read_text()
    sizes = {"int8_t": 1, "int32_t": 4}
    in_sources = sum(
        sizes[t] * int(n)
        for t, n in re.findall(r"const (int8_t|int32_t) reds_\w+_(?:weights|bias)\[(\d+)\]", src)
    )
    assert in_sources == full == m["weight_bytes"]
    # ... while separate per-submodel copies would need far more.
    copies = sum(_tflite_weight_bytes(export / e["tflite"]) for e in m["submodels"])
    assert copies > 1.5 * full


def test_int8_accuracy_close_to_float_and_in_report(exported_run):
    m = _manifest(exported_run)
    for e in m["submodels"]:
        # Briefly trained test model: allow 2 points (BENCHMARKS.md has the real run).
        assert abs(e["int8_accuracy"] - e["float_accuracy"]) < 0.02
        assert e["int8_accuracy"] > 0.5
    report = (exported_run / "report.md").read_text()
    assert report.count(REPORT_BEGIN) == 1
    assert f"{100 * m['submodels'][-1]['int8_accuracy']:.2f}" in report
    # the full model's memory plan, layer by layer, ending at the busiest layer's bytes
    assert "| layer | kind | input | output | runs | ring | window | scratch | in use |" in report
    assert f"sets the {m['arena_bytes']:,}-byte arena" in report


def test_report_section_is_replaced_not_duplicated(tmp_path):
    (tmp_path / "report.md").write_text("# run\n\ntext\n")
    update_report(tmp_path, f"{REPORT_BEGIN}\nold\n<!-- reds export: end -->\n")
    update_report(tmp_path, f"{REPORT_BEGIN}\nnew\n<!-- reds export: end -->\n")
    text = (tmp_path / "report.md").read_text()
    assert text.startswith("# run\n\ntext\n") and "new" in text and "old" not in text
    assert text.count(REPORT_BEGIN) == 1


@pytest.fixture()
def run_copy(trained_run, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(trained_run, out)
    return out


def _no_partial_export(run: Path) -> None:
    assert not (run / "export").exists()
    assert not [p for p in run.iterdir() if p.name.startswith(".export")]


def test_missing_or_corrupt_run_dir(run_copy, tmp_path):
    with pytest.raises(RunDirError, match="does not exist"):
        run_export(tmp_path / "nope")
    (run_copy / "submodels.json").write_text("{ not json")
    with pytest.raises(RunDirError, match="submodels.json is corrupt"):
        run_export(run_copy)
    _no_partial_export(run_copy)


def test_corrupt_model_file(run_copy):
    (run_copy / "model.keras").write_bytes(b"garbage")
    with pytest.raises(RunDirError, match="model.keras"):
        run_export(run_copy)
    _no_partial_export(run_copy)


def test_unsupported_op_leaves_no_export(run_copy, monkeypatch):
    softmax = (TINY / "softmax.tflite").read_bytes()
    monkeypatch.setattr("reds_tf.quant.convert.convert_int8", lambda *a, **k: softmax)
    with pytest.raises(RedsError, match="SOFTMAX"):
        run_export(run_copy, limit=10, log=lambda _m: None)
    _no_partial_export(run_copy)


def test_failure_midway_keeps_previous_export(exported_run, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(exported_run, run)
    before = (run / "export" / "manifest.json").read_text()

    def boom(*_a, **_k):
        raise RedsError("TFLite Micro failed on the model (simulated)")

    monkeypatch.setattr("reds_tf.quant.tflm.run_tflm", boom)
    with pytest.raises(RedsError, match="simulated"):
        run_export(run, limit=10, log=lambda _m: None)
    assert (run / "export" / "manifest.json").read_text() == before
    assert not [p for p in run.iterdir() if p.name.startswith(".export")]


QAT_SAMPLES = 3000  # training samples of the QAT epoch below (the run was trained on 3000)


def test_qat_export_is_bit_exact_too(run_copy, monkeypatch):
    """--qat: quantisation-aware fine-tuning, then the same export contract.

    The QAT epoch sees the first QAT_SAMPLES of the 60,000 training images
    (the real fine-tuning, on fewer steps): the export contract checked here
    does not depend on how many images the fine-tuning saw."""
    from reds_tf.quant import convert

    real = convert.qat_finetune
    seen = []

    def fewer_samples(model, x_train, y_train, **kwargs):
        seen.append(len(x_train))
        return real(model, x_train[:QAT_SAMPLES], y_train[:QAT_SAMPLES], **kwargs)

    monkeypatch.setattr(convert, "qat_finetune", fewer_samples)
    run_export(run_copy, qat=True, qat_epochs=1, limit=500, log=lambda _m: None)
    assert len(seen) == 1 and seen[0] > QAT_SAMPLES  # the export did fine-tune
    m = _manifest(run_copy)
    assert m["qat"] is True and m["eval_samples"] == 500
    rt = load_runtime(run_copy)
    x = np.random.default_rng(3).integers(-128, 128, (1000, *m["input_shape"]), np.int8)
    for e in (m["submodels"][0], m["submodels"][-1]):
        want = run_tflm(run_copy / "export" / e["tflite"], x).outputs
        np.testing.assert_array_equal(rt.predict(x, e["index"]), want)
        assert e["int8_accuracy"] > 0.5
    with pytest.raises(RedsError, match="qat-epochs"):
        run_export(run_copy, qat=True, qat_epochs=0)


def test_cli_export_errors_exit_2(tmp_path, capsys):
    from reds_tf.cli import main as cli_main

    assert cli_main(["export", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err
    (tmp_path / "run").mkdir()
    assert cli_main(["export", str(tmp_path / "run")]) == 2
    assert "submodels.json is missing" in capsys.readouterr().err
    assert cli_main(["export", str(tmp_path / "run"), "--limit", "0"]) == 2
    assert "--limit" in capsys.readouterr().err
    assert not (tmp_path / "run" / "export").exists()


def test_runtime_mismatch_fails_the_export(run_copy, monkeypatch):
    """The export compiles the runtime and compares it with TFLM; a difference
    (simulated here) aborts the export before anything is written."""
    from reds_tf.sim import Runtime

    real = Runtime.predict

    def off_by_one(self, x, k=None):
        y = real(self, x, k)
        y[0, 0] = np.int8(y[0, 0] ^ 1)
        return y

    monkeypatch.setattr(Runtime, "predict", off_by_one)
    with pytest.raises(RedsError, match="differs from TFLite Micro"):
        run_export(run_copy, limit=20, log=lambda _m: None)
    _no_partial_export(run_copy)


@pytest.mark.parametrize(
    "compiler,flags",
    [
        ("g++", ["-std=c++11", "-O2"]),
        (
            "arm-none-eabi-g++",
            ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"]
            + ["-fno-exceptions", "-fno-rtti", "-O2"],
        ),
    ],
)
def test_exported_sources_compile_without_warnings(exported_run, tmp_path, compiler, flags):
    import subprocess

    if shutil.which(compiler) is None:
        pytest.skip(f"{compiler} not installed")
    for cpp in sorted((exported_run / "export" / "src").glob("*.cpp")):
        out = tmp_path / (cpp.stem + ".o")
        cmd = [compiler, *flags, "-Wall", "-Wextra", "-Werror", "-c", str(cpp), "-o", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0 and not proc.stderr, proc.stderr


def test_masked_forward_equals_prefix_slicing(trained_run):
    """The QAT loss's submodels (masked full model) are exactly the sliced submodels."""
    from reds_tf.export import dense_chain, float_logits, load_model, load_submodels
    from reds_tf.quant.convert import masked_forward, submodel_masks

    model = load_model(trained_run)
    sub = load_submodels(trained_run)
    widths = [s["widths"] for s in sub["submodels"]]
    chain, masks = submodel_masks(model, widths)
    assert len(masks[0]) >= 1 and masks[-1] == {}
    x = load_dataset("fashion_mnist").x_test[:64]
    dense = dense_chain(model, sub)
    for w, m in zip(widths, masks, strict=True):
        got = masked_forward(chain, m, x, training=False).numpy()
        np.testing.assert_allclose(got, float_logits(dense, w, x), rtol=1e-4, atol=1e-4)
