"""A user's own data through ``reds train`` -> ``reds export`` -> ``reds
simulate``: one small generated set per source (npz, PNG folders, WAV
folders, CSV), each exported bit-exact with TensorFlow Lite Micro on every
submodel; then what happens when the data moves or changes after training."""

from __future__ import annotations

import json
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest
import yaml

from reds_tf.errors import RunDirError

QUIET = {"verbose": 0, "log": lambda _msg: None}


def _config(tmp: Path, name: str, dataset: str, data: dict) -> Path:
    cfg = {
        "name": name,
        "dataset": dataset,
        "data": data,
        "model": {"type": "dnn", "hidden": [24, 24]},
        "budgets": [0.5, 1.0],
        "train": {"epochs": 5, "batch_size": 32, "learning_rate": 0.01},
        "importance": {"batches": 4, "batch_size": 32},
        "finetune": {"epochs": 1, "batch_size": 32},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _train_export(cfg: Path, out: Path) -> tuple[Path, dict]:
    from reds_tf.export import run_export
    from reds_tf.pipeline import run_training

    run = run_training(cfg, out_dir=out, **QUIET)
    run_export(run, log=lambda _msg: None)
    return run, json.loads((run / "export" / "manifest.json").read_text())


def _check_run(run: Path, manifest: dict, capsys) -> None:
    """Bit-exact on every submodel, and ``reds simulate`` agrees with export."""
    from reds_tf.sim import run_simulate

    n = manifest["eval_samples"]
    want = f"bit-exact with TFLite Micro on {n} test inputs per submodel"
    assert manifest["runtime_check"] == want
    assert manifest["num_submodels"] == 2
    for e in manifest["submodels"]:
        acc = run_simulate(run, submodel=e["index"])
        assert acc == pytest.approx(e["int8_accuracy"], abs=1e-9)
    # The source is still there and unchanged: no note about the run's copy.
    assert "kept in" not in capsys.readouterr().err


def _blobs(n: int, classes: int, shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, ...]:
    """Class-dependent mean patterns plus noise, as uint8 in 0..255."""
    rng = np.random.default_rng(seed)
    means = np.random.default_rng(99).uniform(40, 215, (classes, *shape))
    y = np.arange(n) % classes
    x = means[y] + rng.normal(0, 25, (n, *shape))
    return np.clip(np.round(x), 0, 255).astype(np.uint8), y.astype(np.int64)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> None:
    monkeypatch.setenv("REDS_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "own_cache"))


def test_npz_run_and_a_source_that_moves_or_changes(tmp_path: Path, capsys) -> None:
    from reds_tf.export import run_export
    from reds_tf.pipeline import run_training
    from reds_tf.sim import run_simulate

    x, y = _blobs(300, 3, (6, 6, 1), seed=0)
    xt, yt = _blobs(90, 3, (6, 6, 1), seed=1)
    npz = tmp_path / "mine.npz"
    np.savez(npz, x_train=x, y_train=y, x_test=xt, y_test=yt, class_names=["a", "b", "c"])
    cfg = _config(tmp_path, "mine", "npz", {"path": str(npz)})
    run, manifest = _train_export(cfg, tmp_path / "run")
    _check_run(run, manifest, capsys)
    acc = manifest["submodels"][-1]["int8_accuracy"]
    assert acc > 0.8  # three well separated blobs

    # Moved away: simulate uses the run's copy (all 90 test samples) and says so.
    moved = tmp_path / "moved.npz"
    npz.rename(moved)
    assert run_simulate(run, submodel=1) == pytest.approx(acc, abs=1e-9)
    err = capsys.readouterr().err
    assert "npz is unavailable" in err and "kept in" in err and str(npz) in err
    # Export still works from the copy (calibration is the copy's: same tflite).
    before = (run / "export" / "submodel_1.tflite").read_bytes()
    run_export(run, log=print)
    assert "using the 90 test samples kept in" in capsys.readouterr().out
    assert (run / "export" / "submodel_1.tflite").read_bytes() == before
    # QAT needs the whole training split: refused with the reason.
    with pytest.raises(RunDirError, match="unavailable.*quantisation-aware"):
        run_export(run, qat=True, log=lambda _m: None)

    # Changed in place: the copy again, with the other reason.
    xt2 = xt.copy()
    xt2[0, 0, 0, 0] ^= 1
    np.savez(npz, x_train=x, y_train=y, x_test=xt2, y_test=yt, class_names=["a", "b", "c"])
    run_simulate(run, submodel=0)
    assert "changed since training" in capsys.readouterr().err
    # ... and a resumed training refuses to mix the two.
    with pytest.raises(RunDirError, match="changed since.*--force"):
        run_training(cfg, out_dir=run, **QUIET)
    # Put back as it was: the source is used again, silently.
    shutil.copy(moved, npz)
    run_simulate(run, submodel=0)
    assert "kept in" not in capsys.readouterr().err


def test_image_folder_run(tmp_path: Path, capsys) -> None:
    from PIL import Image

    root = tmp_path / "images"
    for split, n, seed in (("train", 40, 0), ("test", 12, 1)):
        x, y = _blobs(n * 3, 3, (8, 8), seed)
        for i, (img, label) in enumerate(zip(x, y, strict=True)):
            d = root / split / ["cat", "dog", "owl"][label]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img, "L").save(d / f"{i}.png")
    data = {"path": str(root), "image_size": [8, 8], "color_mode": "grayscale"}
    run, manifest = _train_export(_config(tmp_path, "pics", "image_folder", data), tmp_path / "r")
    _check_run(run, manifest, capsys)
    assert manifest["input_shape"] == [8, 8, 1]
    assert manifest["submodels"][-1]["int8_accuracy"] > 0.8


def _write_wav(path: Path, audio: np.ndarray) -> None:
    pcm = np.clip(np.round(audio * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm.tobytes())


def test_audio_folder_run(tmp_path: Path, capsys) -> None:
    from reds_tf.data.speech_commands import which_set

    # Speakers whose hash puts them in training or testing (validation is unused).
    speakers: dict[str, list[str]] = {"training": [], "testing": []}
    i = 0
    while len(speakers["training"]) < 6 or len(speakers["testing"]) < 2:
        name = f"spk{i:03d}"
        split = which_set(f"{name}_nohash_0.wav")
        if split in speakers and len(speakers[split]) < (6 if split == "training" else 2):
            speakers[split].append(name)
        i += 1
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    root = tmp_path / "keywords"
    for word, f0 in (("lamp", 440.0), ("fan", 1700.0)):
        (root / word).mkdir(parents=True)
        for s in speakers["training"] + speakers["testing"]:
            for n in range(3):
                f = f0 * rng.uniform(0.95, 1.05)
                audio = 0.3 * np.sin(2 * np.pi * f * t) * (np.abs(t - 0.5) < 0.3)
                audio = audio + rng.normal(0, 0.01, t.shape)
                _write_wav(root / word / f"{s}_nohash_{n}.wav", audio)
    data = {"path": str(root), "words": ["lamp", "fan"], "unknown_pct": 0, "augment": 0}
    run, manifest = _train_export(_config(tmp_path, "kw", "audio_folder", data), tmp_path / "r")
    _check_run(run, manifest, capsys)
    sub = json.loads((run / "submodels.json").read_text())
    assert sub["input_shape"] == [49, 10, 1] and sub["num_classes"] == 3  # silence, lamp, fan


def test_csv_run(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    rows = ["t,ax,ay,az,activity"]
    step = 0
    for _rep in range(12):
        for label, freq in (("walk", 0.2), ("run", 0.6), ("rest", 0.0)):
            for _ in range(40):
                phase = 2 * np.pi * freq * step
                ax, ay = np.sin(phase), np.cos(phase) * (0.5 if label == "run" else 1)
                az = 1.0 + rng.normal(0, 0.05)
                rows.append(f"{step},{ax:.4f},{ay:.4f},{az:.4f},{label}")
                step += 1
    path = tmp_path / "imu.csv"
    path.write_text("\n".join(rows) + "\n")
    data = {"path": str(path), "label_column": "activity", "window": 20, "stride": 10}
    data["columns"] = ["ax", "ay", "az"]
    run, manifest = _train_export(_config(tmp_path, "imu", "csv", data), tmp_path / "r")
    _check_run(run, manifest, capsys)
    assert manifest["input_shape"] == [20, 3, 1]
