"""`dataset: tfds:NAME` with a stand-in tensorflow_datasets module: what is
passed to tfds.load, scaling and class names, and the one-line messages when
the package is missing or the data cannot be fetched."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from reds_tf.data import available, load_dataset
from reds_tf.errors import DataError


class ClassLabel:
    names = ["zero", "one", "two"]


class DatasetNotFoundError(Exception):
    pass


def fake_tfds(calls: list, fail: Exception | None = None) -> types.ModuleType:
    rng = np.random.default_rng(0)

    def split(n: int) -> dict:
        return {
            "image": rng.integers(0, 256, (n, 6, 6, 1), dtype=np.uint8),
            "label": np.arange(n) % 3,
        }

    def load(name: str, **kw: object) -> tuple:
        calls.append((name, kw))
        if fail is not None:
            raise fail
        info = types.SimpleNamespace(features={"label": ClassLabel()})
        return [split(9), split(6)], info

    mod = types.ModuleType("tensorflow_datasets")
    mod.load = load  # type: ignore[attr-defined]
    return mod


def test_loads_through_tfds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list = []
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake_tfds(calls))
    monkeypatch.chdir(tmp_path)
    ds = load_dataset("tfds:digits", split_test="train[90%:]", data_dir="tfdata")
    name, kw = calls[0]
    assert name == "digits" and kw["split"] == ["train", "train[90%:]"]
    assert kw["batch_size"] == -1 and kw["data_dir"] == str(tmp_path / "tfdata")
    assert ds.x_train.shape == (9, 6, 6, 1) and ds.x_train.dtype == np.float32
    assert 0 <= ds.x_train.min() and ds.x_train.max() <= 1
    assert ds.class_names == ("zero", "one", "two") and ds.num_classes == 3
    assert ds.y_test.dtype == np.int64 and "digits" in ds.source
    with pytest.raises(DataError, match="has no feature 'pixels'.*set data.image_key"):
        load_dataset("tfds:digits", image_key="pixels")
    with pytest.raises(DataError, match="has no option.*split; known: split_train"):
        load_dataset("tfds:digits", split="train")
    assert "tfds:<name>" in available()


def test_not_installed_says_pip_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails
    with pytest.raises(DataError) as e:
        load_dataset("tfds:mnist")
    assert str(e.value) == (
        "dataset 'tfds:mnist' needs tensorflow-datasets: pip install tensorflow-datasets"
    )


def test_offline_and_unknown_name_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    offline = ConnectionError("Failed to establish a new connection:\n [Errno -3] no network")
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake_tfds([], fail=offline))
    with pytest.raises(DataError) as e:
        load_dataset("tfds:mnist")
    msg = str(e.value)
    assert "\n" not in msg and "cannot load tfds:mnist (ConnectionError: Failed" in msg
    assert "tfds build mnist" in msg and "~/tensorflow_datasets (data.data_dir)" in msg
    assert e.value.__cause__ is None and e.value.__suppress_context__
    missing = DatasetNotFoundError("Dataset mnsit not found.\nDid you mean: mnist")
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake_tfds([], fail=missing))
    with pytest.raises(DataError, match="tensorflow-datasets has no data set 'mnsit'"):
        load_dataset("tfds:mnsit")
    with pytest.raises(DataError, match="needs a data set name"):
        load_dataset("tfds:")
