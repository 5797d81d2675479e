"""`dataset: npz`: scaling, shapes, label forms, paths, and one clear error per
kind of bad file (loader level: no training)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reds_tf.config import check_data_options, parse_config
from reds_tf.data import load_dataset
from reds_tf.errors import ConfigError, DataError


def arrays(n_train: int = 12, n_test: int = 6, classes: int = 3, dtype=np.uint8) -> dict:
    rng = np.random.default_rng(0)
    x_tr = rng.integers(0, 256, (n_train, 5, 4)).astype(dtype)
    x_te = rng.integers(0, 256, (n_test, 5, 4)).astype(dtype)
    return {
        "x_train": x_tr,
        "y_train": np.arange(n_train) % classes,
        "x_test": x_te,
        "y_test": np.arange(n_test) % classes,
    }


def save(path: Path, **arr: np.ndarray) -> Path:
    np.savez(path, **arr)
    return path


def test_uint8_is_scaled_and_shapes_kept(tmp_path: Path) -> None:
    a = arrays()
    p = save(tmp_path / "d.npz", **a, class_names=np.array(["cat", "dog", "owl"]))
    ds = load_dataset("npz", path=str(p))
    assert ds.x_train.shape == (12, 5, 4) and ds.x_train.dtype == np.float32
    np.testing.assert_allclose(ds.x_test, a["x_test"] / 255.0, rtol=1e-6)
    assert ds.y_train.dtype == np.int64 and ds.y_test.tolist() == a["y_test"].tolist()
    assert ds.num_classes == 3 and ds.class_names == ("cat", "dog", "owl")
    assert ds.input_shape == (5, 4) and str(p) in ds.source and "1/255" in ds.source


def test_float_is_used_as_given_and_label_forms(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x_tr = rng.normal(0, 40, (8, 6)).astype(np.float64)  # 2-D features, outside [0, 1]
    x_te = rng.normal(0, 40, (4, 6)).astype(np.float64)
    y_tr = np.eye(2)[np.arange(8) % 2]  # one-hot
    y_te = (np.arange(4) % 2).astype(np.float32)[:, None]  # (N, 1) whole floats
    ds = load_dataset("npz", path=str(save(tmp_path / "f.npz", x_train=x_tr, y_train=y_tr,
                                           x_test=x_te, y_test=y_te)))  # fmt: skip
    np.testing.assert_array_equal(ds.x_train, x_tr.astype(np.float32))
    assert ds.y_train.tolist() == [0, 1] * 4 and ds.y_test.tolist() == [0, 1, 0, 1]
    assert ds.class_names == () and ds.num_classes == 2


def test_relative_and_home_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save(tmp_path / "d.npz", **arrays())
    monkeypatch.chdir(tmp_path)
    assert load_dataset("npz", path="d.npz").source.startswith(str(tmp_path / "d.npz"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load_dataset("npz", path="~/d.npz").source.startswith(str(tmp_path / "d.npz"))


def _bad(tmp_path: Path, **over: object) -> Path:
    a = {**arrays(), **over}
    return save(tmp_path / "bad.npz", **{k: v for k, v in a.items() if v is not None})


@pytest.mark.parametrize(
    ("over", "needle"),
    [
        ({"y_test": None, "x_test": None}, "lacks the array(s) x_test, y_test"),
        ({"x_train": np.zeros((12, 5, 4), np.int16)}, "dtype int16; convert it to uint8"),
        ({"y_train": np.arange(11) % 3}, "x_train has 12 samples but y_train has 11"),
        ({"x_test": np.zeros((6, 4, 5), np.uint8)}, "train samples have shape (5, 4)"),
        (
            {"x_train": np.full((12, 5, 4), np.nan), "x_test": np.zeros((6, 5, 4))},
            "NaN/inf",
        ),
        ({"y_train": np.arange(12) % 3 - 1}, "is negative"),
        ({"y_test": np.array([0, 1, 2, 0, 1, 1.5])}, "y_test[5] = 1.5 is not a whole number"),
        ({"y_test": np.array([0, 1, 0, 1, 0, 1])}, "class(es) 2 have no test sample"),
        ({"y_train": np.arange(12) % 2}, "class(es) 2 of 0..2 have no training sample"),
        ({"y_train": np.zeros(12, int), "y_test": np.zeros(6, int)}, "only one class"),
        ({"y_train": np.array([0] * 10 + [1, 2])}, "fewer than 2 training samples"),
        ({"class_names": np.array(["a", "b"])}, "class_names has 2 name(s) but the labels have 3"),
        ({"x_test": np.zeros((6, 5, 4), np.float32)}, "only one would be scaled by 1/255"),
        ({"y_train": np.array(["a"] * 12)}, "labels must be integer class indices"),
    ],
)
def test_bad_arrays_say_what_and_where(tmp_path: Path, over: dict, needle: str) -> None:
    p = _bad(tmp_path, **over)
    with pytest.raises(DataError) as e:
        load_dataset("npz", path=str(p))
    assert needle in str(e.value) and str(p) in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope.npz does not exist; set data.path"):
        load_dataset("npz", path=str(tmp_path / "nope.npz"))
    (tmp_path / "t.npz").write_text("not numpy")
    with pytest.raises(DataError, match="is not an .npz file .* np.savez"):
        load_dataset("npz", path=str(tmp_path / "t.npz"))
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(DataError, match="holds a single array"):
        load_dataset("npz", path=str(tmp_path / "one.npy"))
    ragged = np.empty(12, object)
    ragged[:] = [[1]] * 12
    with pytest.raises(DataError, match="array x_train cannot be read without pickle"):
        load_dataset("npz", path=str(_bad(tmp_path, x_train=ragged)))
    with pytest.raises(DataError, match="needs the option path"):
        load_dataset("npz")
    with pytest.raises(DataError, match="has no option.*paht; known: path"):
        load_dataset("npz", paht="x")


def test_config_error_names_the_option(tmp_path: Path) -> None:
    cfg = parse_config(
        {"name": "t", "dataset": "npz", "data": {"path": str(tmp_path / "x.npz")}}, "c.yaml"
    )
    with pytest.raises(ConfigError, match=r"c.yaml: data.path: npz file .*x.npz does not exist"):
        check_data_options(cfg, load_dataset)
