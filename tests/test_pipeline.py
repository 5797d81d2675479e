"""End to end: `reds train` on the default config (briefly), resume, and bad inputs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import DEFAULT_CONFIG, REPO, TINY

from reds_tf.cli import main
from reds_tf.costs import cost_layers_from_keras, model_macs
from reds_tf.errors import ConfigError, DataError, InfeasibleBudgetError, RedsError, RunDirError
from reds_tf.models import load_plain_model, submodel
from reds_tf.pipeline import STAGE_FILES, run_training
from reds_tf.training import accuracy


def _direct_macs(model, widths: dict[str, int]) -> int:
    """MACs counted straight from the Keras Dense kernels' sliced shapes."""
    total, fan_in = 0, None
    for layer in model.layers:
        if hasattr(layer, "kernel"):
            fan_in = layer.kernel.shape[0] if fan_in is None else fan_in
            out = widths[layer.name]
            total += fan_in * out
            fan_in = out
    return total


def test_submodels_json_contract(trained_run: Path):
    doc = json.loads((trained_run / "submodels.json").read_text())
    assert doc["name"] == "fmnist_dnn" and doc["dataset"] == "fashion_mnist"
    assert doc["input_shape"] == [28, 28, 1] and doc["num_classes"] == 10 and doc["block"] == 4
    assert [(la["name"], la["units"], la["prunable"]) for la in doc["layers"]] == [
        ("fc1", 256, True),
        ("fc2", 256, True),
        ("logits", 10, False),
    ]
    subs = doc["submodels"]
    assert [s["index"] for s in subs] == [0, 1, 2, 3]
    assert [s["budget"] for s in subs] == [0.25, 0.5, 0.75, 1.0]
    model = load_plain_model(trained_run / "model.keras")
    full = _direct_macs(model, {"fc1": 256, "fc2": 256, "logits": 10})
    assert subs[-1]["macs"] == full == 784 * 256 + 256 * 256 + 256 * 10
    layers = cost_layers_from_keras(model)
    prev = None
    for s in subs:
        w = s["widths"]
        assert set(w) == {"fc1", "fc2", "logits"} and w["logits"] == 10
        assert all(w[n] % 4 == 0 and 4 <= w[n] <= 256 for n in ("fc1", "fc2"))
        if prev is not None:  # nested: widths never shrink
            assert all(w[n] >= prev[n] for n in w)
        prev = w
        assert s["macs"] == _direct_macs(model, w) == model_macs(layers, w)
        assert s["macs_fraction"] == pytest.approx(s["macs"] / full)
        # TRUE MACs within [budget - 2 %, budget]
        assert s["budget"] - 0.02 <= s["macs_fraction"] <= s["budget"]
        assert s["params"] == s["macs"] + w["fc1"] + w["fc2"] + 10  # weights + biases
        assert 0.0 <= s["accuracy"] <= 1.0
        assert s["knapsack_status"] in ("optimal", "full model")
    assert subs[-1]["widths"] == {"fc1": 256, "fc2": 256, "logits": 10}
    assert subs[-1]["accuracy"] > 0.5  # even one brief epoch learns something


def test_reported_accuracy_is_that_of_the_saved_model(trained_run: Path):
    from reds_tf.data import load_dataset

    doc = json.loads((trained_run / "submodels.json").read_text())
    model = load_plain_model(trained_run / "model.keras")
    data = load_dataset("fashion_mnist")
    s = doc["submodels"][0]
    sub = submodel(model, s["widths"])
    assert accuracy(sub, data.x_test, data.y_test) == pytest.approx(s["accuracy"], abs=1e-4)


def test_run_dir_files(trained_run: Path):
    for f in (*[v for k, v in STAGE_FILES.items() if k != "scratch"], "config.yaml", "run.json"):
        assert (trained_run / f).is_file(), f
    assert (trained_run / "accuracy_vs_macs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (trained_run / "report.md").read_text()
    assert report.count("\n| ") == 5  # header + 4 submodels
    assert "| 0 | 0.25 |" in report
    assert "epochs: 1" in (trained_run / "config.yaml").read_text()
    assert not [p for p in trained_run.iterdir() if p.name.startswith(".")]  # no temp files
    with np.load(trained_run / "importance.npz") as z:
        assert sorted(z.files) == ["fc1", "fc2"] and z["fc1"].shape == (256,)


def test_rerun_resumes_and_changed_config_is_refused(trained_run: Path):
    before = {p.name: p.stat().st_mtime_ns for p in trained_run.iterdir() if p.suffix != ".yaml"}
    lines: list[str] = []
    run_training(DEFAULT_CONFIG, out_dir=trained_run, verbose=0, log=lines.append, **TINY)
    assert sum("already done, skipped" in line for line in lines) == 7
    after = {p.name: p.stat().st_mtime_ns for p in trained_run.iterdir() if p.suffix != ".yaml"}
    assert {k: v for k, v in after.items() if k != "run.json"} == {
        k: v for k, v in before.items() if k != "run.json"
    }
    with pytest.raises(RunDirError, match=r"different base config \(train.epochs was 1, now 2\)"):
        run_training(
            DEFAULT_CONFIG,
            out_dir=trained_run,
            verbose=0,
            log=lines.append,
            **{**TINY, "epochs": 2},
        )


def test_changed_finetune_config_redoes_only_later_stages(trained_run: Path, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(trained_run, run)
    stamp = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    cfg = _config(tmp_path, finetune={"epochs": 10, "distill": True, "alpha": 0.25})
    lines: list[str] = []
    run_training(cfg, out_dir=run, verbose=0, log=lines.append, **TINY)
    assert any("redoing from stage 'finetune'" in line for line in lines)
    assert sum("already done, skipped" in line for line in lines) == 4  # base .. select
    for f in ("base.keras", "importance.npz", "permuted.keras", "knapsack.json"):
        assert run.joinpath(f).stat().st_mtime_ns == stamp[f]
    for f in ("model.keras", "submodels.json", "report.md"):
        assert run.joinpath(f).stat().st_mtime_ns > stamp[f]
    assert "alpha: 0.25" in (run / "config.yaml").read_text()


def _config(tmp_path: Path, **changes) -> Path:
    import yaml

    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    data.update(changes)
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def _train(cfg: Path, out: Path, **kw):
    return run_training(cfg, out_dir=out, verbose=0, log=lambda _m: None, **{**TINY, **kw})


def test_budget_below_minimum(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(InfeasibleBudgetError) as e:
        _train(_config(tmp_path, budgets=[0.001, 0.5, 1.0]), out)
    msg = str(e.value)
    assert "budgets: 0.001 is below the smallest achievable submodel" in msg
    assert "raise the smallest budget to at least 0.0119" in msg  # 3192/268800 MACs
    assert not out.exists()


def test_unknown_dataset(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(DataError, match="unknown dataset 'mnist_fashion'; known: .*fashion_mnist"):
        _train(_config(tmp_path, dataset="mnist_fashion"), out)
    assert not out.exists()


def test_malformed_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndataset: fashion_mnist\nbudgets: [0.25, 0.5\n")
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="malformed YAML"):
        _train(bad, out)
    assert not out.exists()


def test_missing_data(tmp_path, monkeypatch):
    from reds_tf.data import fashion_mnist

    monkeypatch.setenv("REDS_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(fashion_mnist, "KERAS_CACHE", tmp_path / "cache")
    monkeypatch.setattr(fashion_mnist, "DOWNLOAD_URL", (tmp_path / "no-server").as_uri() + "/")
    out = tmp_path / "run"
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        _train(_config(tmp_path), out)
    assert not out.exists()


def test_unsupported_base_model(tmp_path):
    import tf_keras as keras

    m = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(2, 3, dilation_rate=2),  # conv chains are fine, dilation not
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )
    m.save(tmp_path / "conv.keras")
    out = tmp_path / "run"
    with pytest.raises(RedsError, match="Conv2D.*not supported"):
        _train(DEFAULT_CONFIG, out, base_model=tmp_path / "conv.keras")
    assert not out.exists()


def test_foreign_out_dir_is_refused(tmp_path):
    out = tmp_path / "stuff"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(RunDirError, match="not a reds run directory"):
        _train(DEFAULT_CONFIG, out)
    assert (out / "keep.txt").read_text() == "mine"


def test_cli_prints_error_and_exits_2(tmp_path, capsys):
    cfg = _config(tmp_path, train={"epochs": "abc"})
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert (
        "reds train: error:" in err and "train.epochs must be a positive integer, got 'abc'" in err
    )
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_cli_end_to_end_from_base_model(trained_run: Path, tmp_path):
    """`reds train --base` as a user runs it on a few thousand samples."""
    out = tmp_path / "run"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [
        sys.executable,
        "-m",
        "reds_tf",
        "train",
        "--config",
        str(DEFAULT_CONFIG),
        "--out",
        str(out),
        "--base",
        str(trained_run / "model.keras"),
        "--limit",
        "2000",
        "--finetune-epochs",
        "1",
    ]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "stage 1/7 base training: done" in r.stdout
    assert "stage 7/7 report: done" in r.stdout
    doc = json.loads((out / "submodels.json").read_text())
    assert len(doc["submodels"]) == 4
    meta = json.loads((out / "run.json").read_text())
    assert meta["base_model"].endswith("model.keras")


def test_training_is_deterministic(tmp_path):
    """Same config and seed -> identical weights and accuracies (fresh init included)."""
    import tf_keras as keras

    runs = []
    for name in ("a", "b"):
        keras.utils.set_random_seed(len(name) * 7 + ord(name))  # disturb the global RNG
        runs.append(_train(DEFAULT_CONFIG, tmp_path / name, limit=1000))
    docs = [json.loads((r / "submodels.json").read_text())["submodels"] for r in runs]
    for d in docs:
        for s in d:
            del s["knapsack_seconds"]  # wall time
    assert docs[0] == docs[1]
    w = [load_plain_model(r / "model.keras").get_weights() for r in runs]
    assert all(np.array_equal(x, y) for x, y in zip(*w, strict=True))


def _user_keras_cnn():
    """A conv net as a Keras user writes it: Sequential, max and average pooling,
    GlobalAveragePooling2D, softmax output, default layer names."""
    import tf_keras as keras

    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.MaxPooling2D(2),
            keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Conv2D(24, 1, activation="relu"),
            keras.layers.AveragePooling2D(2),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dropout(0.1),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


def test_cli_conv_base_model_to_bit_exact_export(tmp_path):
    """A user's own conv model: `reds train --base` then `reds export`, whose
    generated runtime must equal TFLite Micro on every submodel."""
    import tf_keras as keras

    from reds_tf.data import load_dataset

    data = load_dataset("fashion_mnist")
    keras.utils.set_random_seed(0)
    user = _user_keras_cnn()
    user.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    user.fit(data.x_train[:3000], data.y_train[:3000], epochs=1, batch_size=64, verbose=0)
    user.save(tmp_path / "user.keras")
    out = tmp_path / "run"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    cfg = _config(tmp_path, finetune={"epochs": 1, "bn_stats": "per_submodel"})
    base = [sys.executable, "-m", "reds_tf"]
    r = subprocess.run(
        [*base, "train", "--config", str(cfg), "--out", str(out),
         "--base", str(tmp_path / "user.keras"), "--limit", "2000"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads((out / "submodels.json").read_text())
    kinds = [la["type"] for la in doc["layers"]]
    assert kinds == ["conv", "depthwise", "conv", "conv", "dense"]
    widths = [s["widths"] for s in doc["submodels"]]
    assert widths[0] != widths[-1]  # the small submodels really are smaller
    r = subprocess.run(
        [*base, "export", str(out), "--limit", "300"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "generated runtime == TFLite Micro on 300 inputs x 4" in r.stdout
    manifest = json.loads((out / "export" / "manifest.json").read_text())
    assert manifest["bn_stats"] == "per_submodel"
    accs = [s["int8_accuracy"] for s in manifest["submodels"]]
    assert accs[-1] > 0.2, accs  # above chance (0.1) after 1 + 1 short epochs


def test_finetuning_from_the_base_teacher(tmp_path):
    lines: list[str] = []
    cfg = _config(tmp_path, finetune={"epochs": 1, "teacher": "base"})
    run_training(cfg, out_dir=tmp_path / "run", verbose=0, log=lines.append, **TINY)
    done = [ln for ln in lines if "stage 5/7 joint fine-tuning: done" in ln]
    assert len(done) == 1 and "distillation from the base model" in done[0], lines
    assert (tmp_path / "run" / STAGE_FILES["finetune"]).exists()


@pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("arm-none-eabi-gcc", "qemu-system-arm", "gcc")),
    reason="needs gcc-arm-none-eabi and qemu-system-arm (make setup installs them)",
)
def test_knapsack_on_latency(trained_run: Path, tmp_path, monkeypatch):
    """knapsack: {cost: latency} redoes the select stage on estimated cycles (a
    3-point grid per layer here): each submodel's predicted cycles keep its
    budget of the full model's, and submodels.json records them."""
    from reds_tf import latency

    monkeypatch.setenv("REDS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(latency, "GRID_POINTS", 3)
    run = tmp_path / "copy"
    shutil.copytree(trained_run, run)
    cfg = _config(tmp_path, knapsack={"cost": "latency"})
    lines: list[str] = []
    run_training(cfg, out_dir=run, verbose=0, log=lines.append, **TINY)
    assert any("redoing from stage 'select'" in line for line in lines)
    assert any("latency model: measuring" in line for line in lines)
    ks = json.loads((run / "knapsack.json").read_text())
    assert ks["cost"] == "latency" and len(ks["predicted_cycles"]) == len(ks["budgets"])
    for b, f in zip(ks["budgets"], ks["cost_fraction"], strict=True):
        assert f <= b + 1e-12
    assert ks["cost_fraction"][-1] == 1.0
    subs = json.loads((run / "submodels.json").read_text())["submodels"]
    assert [s["predicted_cycles"] for s in subs] == ks["predicted_cycles"]
