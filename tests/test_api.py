"""The Python API (``reds_tf.train`` / ``load`` / ``Run``), the example script
that uses it, and a run trained from in-memory arrays used afterwards by the
command line in new processes (``reds simulate``, ``reds monitor --demo``)."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

import reds_tf
from reds_tf.errors import ConfigError, RedsError

REPO = Path(__file__).resolve().parents[1]
REDS = [sys.executable, "-m", "reds_tf"]


@pytest.fixture(scope="module")
def example_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """examples/train_from_arrays.py run as a user would, into a temp folder."""
    out = tmp_path_factory.mktemp("example") / "patterns"
    r = subprocess.run(
        [sys.executable, "examples/train_from_arrays.py", "--out", str(out), "--epochs", "2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return out, r.stdout


def test_the_example_script_trains_exports_and_runs_the_cpp_runtime(example_run) -> None:
    run, stdout = example_run
    assert len(re.findall(r"^submodel \d: ", stdout, re.M)) == 3
    runtime_lines = re.findall(r"C\+\+ runtime, submodel (\d): int8 accuracy ([\d.]+)", stdout)
    assert [k for k, _ in runtime_lines] == ["0", "1", "2"]
    assert float(runtime_lines[-1][1]) > 0.9  # four easy patterns: the full model learns them
    manifest = json.loads((run / "export" / "manifest.json").read_text())
    assert manifest["runtime_check"].startswith("bit-exact with TFLite Micro")
    sub = json.loads((run / "submodels.json").read_text())
    assert sub["dataset"] == "arrays" and sub["input_shape"] == [12, 12, 1]


def test_load_gives_the_submodels_as_keras_models(example_run) -> None:
    run_dir, _ = example_run
    run = reds_tf.load(run_dir)
    assert len(run.submodels) == 3 and run.num_classes == 4
    macs = [s["macs"] for s in run.submodels]
    assert macs == sorted(macs) and run.submodels[-1]["macs_fraction"] == 1.0
    with np.load(run_dir / "data.npz") as z:
        x = z["x_test"][:50].astype(np.float32) / 255  # stored as uint8 (1/255 steps)
        y = z["y_test"][:50]
    small, full = run.submodel(0), run.submodel(-1)
    assert small.count_params() < full.count_params()
    widths = run.submodels[0]["widths"]
    assert small.get_layer("fc1").units == widths["fc1"]
    # The float accuracy training recorded is the plain submodel's accuracy.
    assert float(np.mean(np.argmax(full.predict(x, verbose=0), axis=1) == y)) > 0.9
    assert "submodel" in run.report().lower()
    with pytest.raises(RedsError, match=r"0\.\.2"):
        run.submodel(3)


def test_an_array_run_simulates_in_a_new_process(example_run) -> None:
    run_dir, _ = example_run
    r = subprocess.run(
        [*REDS, "simulate", str(run_dir), "--submodel", "0"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "trained from in-memory arrays" in r.stderr and "data.npz" in r.stderr
    acc = float(re.search(r"int8 test accuracy ([\d.]+) on (\d+) samples", r.stdout).group(1))
    # The same number through the runtime in this process, on the run's own copy.
    rt = reds_tf.load(run_dir).runtime()
    with np.load(run_dir / "data.npz") as z:
        x, y = z["x_test"].astype(np.float32) / 255, z["y_test"]
    ours = float(np.mean(np.argmax(rt.predict(rt.quantize(x), 0), axis=1) == y))
    assert acc == pytest.approx(ours, abs=1e-4)


def test_an_array_run_demos_on_firmware_in_a_new_process(example_run) -> None:
    from reds_tf import firmware

    run_dir, _ = example_run
    build = firmware.build_firmware(run_dir, "native", log=io.StringIO())
    with firmware.ServedFirmware(build) as fw:
        r = subprocess.run(
            [*REDS, "monitor", "--port", fw.port, "--demo", str(run_dir), "--samples", "20"],
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert r.returncode == 0, r.stderr
    assert "latency us" in r.stdout and "(20)" in r.stdout


def test_train_refuses_bad_arguments_before_training(tmp_path: Path) -> None:
    x = np.zeros((8, 4), np.float32)
    y = np.array([0, 1] * 4)
    with pytest.raises(RedsError, match=r"\(x_train, y_train, x_test, y_test\)"):
        reds_tf.train({"name": "a"}, data=(x, y), out=tmp_path / "a")
    with pytest.raises(ConfigError, match="both given"):
        reds_tf.train({"dataset": "fashion_mnist"}, data=(x, y, x, y), out=tmp_path / "b")
    with pytest.raises(ConfigError, match="must be a dict"):
        reds_tf.train(42, data=(x, y, x, y), out=tmp_path / "c")
    with pytest.raises(RedsError, match="2 samples but y_train has 8|y_train has 8"):
        reds_tf.train({}, data=(x[:2], y, x, y), out=tmp_path / "d")
    with pytest.raises(ConfigError, match="arrays"):
        reds_tf.train({"dataset": "arrays"}, out=tmp_path / "e")
    assert not any(tmp_path.iterdir())  # nothing written


def test_a_keras3_model_object_is_named(tmp_path: Path) -> None:
    import keras  # Keras 3, installed beside tf_keras

    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    x = np.random.default_rng(0).random((20, 4)).astype(np.float32)
    y = np.array([0, 1] * 10)
    with pytest.raises(RedsError, match="Keras 3 model.*tf_keras"):
        reds_tf.train({}, model=m, data=(x, y, x, y), out=tmp_path / "k3")
    assert not (tmp_path / "k3").exists()


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_a_keras3_file_is_one_line(tmp_path: Path, suffix: str) -> None:
    import keras

    from reds_tf.models import read_base_model

    path = tmp_path / f"k3{suffix}"
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save(path)
    with pytest.raises(RedsError, match="saved by Keras 3") as e:
        read_base_model(path)
    assert "\n" not in str(e.value) and "tf_keras" in str(e.value)
    if suffix == ".keras":
        with zipfile.ZipFile(path) as z:
            assert json.loads(z.read("metadata.json"))["keras_version"].startswith("3")


def test_version_is_the_package_version() -> None:
    assert reds_tf.__version__ == metadata.version("reds_tf")
    r = subprocess.run([*REDS, "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == f"reds_tf {reds_tf.__version__}"


def test_data_is_reshaped_to_a_base_models_input(tmp_path: Path) -> None:
    """A model taking (36,) features trains on (6, 6) images: same element count."""
    import tf_keras as keras

    rng = np.random.default_rng(0)
    y = np.arange(200) % 2
    x = (rng.random((200, 6, 6)) * 0.3 + y[:, None, None] * 0.5).astype(np.float32)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((36,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2)]
    )
    model.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(True))
    # Trained on flat rows; the run's accuracy is only high if its reshape
    # keeps the element order (row-major, as numpy's reshape).
    model.fit(x[:150].reshape(150, 36), y[:150], epochs=20, verbose=0)
    run = reds_tf.train(
        {"budgets": [0.5, 1.0], "finetune": {"epochs": 1}, "importance": {"batches": 2}},
        model=model,
        data=(x[:150], y[:150], x[150:], y[150:]),
        out=tmp_path / "flat",
        verbose=0,
        log=lambda _m: None,
    )
    assert run.input_shape == (36,)
    with np.load(run.path / "data.npz") as z:
        assert z["x_test"].shape == (50, 36) and z["x_calib"].shape == (150, 36)
    # The pipeline scored the given model on the reshaped test images exactly
    # as it scores on the flat rows: the reshape keeps the element order.
    logits = model.predict(x[150:].reshape(50, 36), verbose=0)
    flat = float(np.mean(np.argmax(logits, 1) == y[150:]))
    assert flat > 0.9
    assert json.loads((run.path / "run.json").read_text())["base_accuracy"] == flat
