"""Inputs streamed from disk (reds_tf/data/stream.py): a DiskArray reads the
same float32 values the in-memory path holds, whatever the index; a whole
`reds train` on a streamed image folder (training with augmentation,
importance, BN statistics, evaluation) gives the in-memory run's weights and
accuracies, and its int8 calibration set is the in-memory one."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO

from reds_tf.data import fit_to_input, load_dataset
from reds_tf.data.snapshot import content_sha256
from reds_tf.data.stream import DiskArray, iter_chunks, write_npy
from reds_tf.errors import DataError


def _generator():
    spec = importlib.util.spec_from_file_location("mif", REPO / "examples" / "make_image_folder.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return _generator().make(tmp_path_factory.mktemp("images") / "set", 240, 60, 16)


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch) -> None:
    monkeypatch.setenv("REDS_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "stream-cache"))


def _load(folder: Path, stream):
    return load_dataset("image_folder", path=str(folder), image_size=[16, 16], stream=stream)


def test_disk_array_reads_what_memory_holds(folder, tmp_path):
    mem, disk = _load(folder, False), _load(folder, True)
    assert isinstance(disk.x_train, DiskArray) and isinstance(mem.x_train, np.ndarray)
    assert disk.x_train.shape == mem.x_train.shape and disk.input_shape == (16, 16, 3)
    x, d = mem.x_train, disk.x_train
    for key in (5, -1, slice(3, 40, 7), np.array([9, 2, 2, 200, 0]), x[:, 0, 0, 0] > 0.3):
        np.testing.assert_array_equal(d[key], x[key])
    np.testing.assert_array_equal(np.asarray(d), x)
    np.testing.assert_array_equal(np.concatenate(list(iter_chunks(d, 50))), x)
    assert content_sha256(disk) == content_sha256(mem)
    # A limited set and a reshaped one stay on disk with the same values.
    lim_d, lim_m = disk.limited(100, seed=3), mem.limited(100, seed=3)
    assert isinstance(lim_d.x_train, DiskArray)
    np.testing.assert_array_equal(np.asarray(lim_d.x_train), lim_m.x_train)
    np.testing.assert_array_equal(lim_d.x_train[[4, 1]], lim_m.x_train[[4, 1]])
    flat = fit_to_input(disk, (16 * 16 * 3,))
    assert flat.x_test.shape == (60, 768)
    np.testing.assert_array_equal(flat.x_test[7], mem.x_test[7].reshape(-1))
    with pytest.raises(IndexError):
        d[len(d)]
    with pytest.raises(DataError, match="stream must be auto, true or false"):
        _load(folder, "yes")
    # float32 files (e.g. MFCC features) are read as stored.
    f = write_npy(tmp_path / "f.npy", (5, 3), np.float32, [np.full((5, 3), 0.25, np.float32)])
    np.testing.assert_array_equal(DiskArray(f)[1:3], np.full((2, 3), 0.25, np.float32))


def test_large_arrays_are_read_per_batch_not_copied(monkeypatch):
    """Above GATHER_MAX_BYTES an in-memory array is indexed in NumPy per batch
    (TensorFlow holds no second copy of it): the same rows as the gather."""
    import tensorflow as tf

    from reds_tf import inputs

    x = np.random.default_rng(0).random((50, 3, 2), dtype=np.float32)
    idx = tf.constant([7, 0, 49, 7], tf.int64)
    small = inputs.row_reader(x)(idx).numpy()
    monkeypatch.setattr(inputs, "GATHER_MAX_BYTES", 0)
    batches = tf.data.Dataset.from_tensors(idx).map(inputs.row_reader(x))
    np.testing.assert_array_equal(next(iter(batches)).numpy(), small)
    np.testing.assert_array_equal(small, x[[7, 0, 49, 7]])
    np.testing.assert_array_equal(np.concatenate(list(inputs.rows_dataset(x, 16))), x)


def _config(tmp_path: Path, folder: Path, stream: bool) -> Path:
    cfg = {
        "name": f"s{int(stream)}",
        "dataset": "image_folder",
        "data": {"path": str(folder), "image_size": [16, 16], "stream": stream},
        "seed": 0,
        "model": {"type": "cnn", "conv": [{"filters": 8, "kernel": 3}], "hidden": [16]},
        "budgets": [0.5, 1.0],
        "block": 4,
        "train": {
            "epochs": 2,
            "batch_size": 32,
            "learning_rate": 0.003,
            "augment": {"flip": True, "shift": 2},
        },
        "importance": {"batches": 3, "batch_size": 32},
        "finetune": {"epochs": 1, "batch_size": 32, "bn_stats": "per_submodel"},
    }
    p = tmp_path / f"s{int(stream)}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_streamed_run_equals_in_memory_run(folder, tmp_path):
    from reds_tf.models import load_plain_model
    from reds_tf.pipeline import run_training
    from reds_tf.rundir import load_run_data

    runs = {}
    for stream in (False, True):
        cfg = _config(tmp_path, folder, stream)
        lines: list[str] = []
        runs[stream] = run_training(cfg, out_dir=tmp_path / cfg.stem, verbose=0, log=lines.append)
    docs = {s: json.loads((r / "submodels.json").read_text()) for s, r in runs.items()}
    accs = {s: [m["accuracy"] for m in d["submodels"]] for s, d in docs.items()}
    assert accs[True] == accs[False] and min(accs[True]) > 0.6, accs
    w = {s: load_plain_model(r / "model.keras").get_weights() for s, r in runs.items()}
    for a, b in zip(w[False], w[True], strict=True):
        np.testing.assert_array_equal(a, b)
    bn = {s: dict(np.load(r / "bn_stats.npz")) for s, r in runs.items()}
    for k in bn[False]:
        np.testing.assert_array_equal(bn[False][k], bn[True][k])
    # The export's data: the streamed set, its calibration rows those of memory.
    got = {s: load_run_data(runs[s], docs[s]) for s in runs}
    assert isinstance(got[True].dataset.x_train, DiskArray)
    np.testing.assert_array_equal(got[True].calibration, got[False].calibration)
