"""`dataset: csv`: windows, label order, the two split rules (no shared rows),
columns, delimiters and the errors (loader level: no training)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reds_tf.data import load_dataset
from reds_tf.errors import DataError


def write_csv(path: Path, labels: list[str], sep: str = ",", extra: str = "") -> Path:
    """Columns time, ax, ay, label (+ ``extra`` text column); ax = row index, ay = -ax."""
    path.parent.mkdir(parents=True, exist_ok=True)
    head = ["time", "ax", "ay", "label"] + (["note"] if extra else [])
    lines = [sep.join(head)]
    for i, lab in enumerate(labels):
        row = [f"{i * 0.02:.2f}", str(i), str(-i), lab] + ([extra] if extra else [])
        lines.append(sep.join(row))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_one_file_windows_labels_and_split(tmp_path: Path) -> None:
    labels = ["walk"] * 40 + ["run"] * 40 + ["walk"] * 40
    p = write_csv(tmp_path / "rec.csv", labels, extra="x")
    ds = load_dataset("csv", path=str(p), label_column="label", window=10, stride=5)
    assert ds.class_names == ("run", "walk") and ds.num_classes == 2
    # Default columns: the numeric ones except the label (time, ax, ay; not note).
    assert ds.input_shape == (10, 3, 1) and ds.x_train.dtype == np.float32
    starts = {
        s: ds_x[:, 0, 1, 0].astype(int) for s, ds_x in (("tr", ds.x_train), ("te", ds.x_test))
    }
    # Every window is one label's: ax = row index, so the label is known per start.
    for s, y in ((starts["tr"], ds.y_train), (starts["te"], ds.y_test)):
        assert all(
            labels[i] == labels[i + 9] == ds.class_names[c] for i, c in zip(s, y, strict=True)
        )
    np.testing.assert_array_equal(ds.x_train[0, :, 2, 0], -ds.x_train[0, :, 1, 0])
    # Per class the last 20 % of its windows are test, and no row is in both splits.
    train_rows = {r for s in starts["tr"] for r in range(s, s + 10)}
    test_rows = {r for s in starts["te"] for r in range(s, s + 10)}
    assert not train_rows & test_rows
    assert max(starts["te"][ds.y_test == 1]) == 110 and max(starts["tr"]) < 100
    assert np.bincount(ds.y_test).tolist() == [1, 3]


def test_mixed_windows_dropped_and_integer_labels(tmp_path: Path) -> None:
    labels = ["2"] * 12 + ["10"] * 12 + ["2"] * 12 + ["10"] * 12
    p = write_csv(tmp_path / "r.csv", labels)
    ds = load_dataset(
        "csv", path=str(p), label_column="label", window=6, columns=["ay"], test_fraction=0.5
    )
    assert ds.class_names == ("2", "10") and ds.input_shape == (6, 1, 1)  # numeric order
    assert len(ds.y_train) + len(ds.y_test) == 8  # 48 rows / 6: no window straddles a change
    shifted = load_dataset("csv", path=str(p), label_column="label", window=6, stride=3,
                           test_fraction=0.5)  # fmt: skip
    # Stride 3: 15 starts 0, 3, ..., 42; those at 9, 21 and 33 straddle a change: dropped.
    assert len(shifted.y_train) + len(shifted.y_test) == 12


def test_folder_split_by_whole_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "recs"
    for i in range(5):
        write_csv(d / f"walk_{i}.csv", ["walk"] * 30)
        write_csv(d / f"sit_{i}.csv", ["sit"] * 30, sep=";")
    (d / "readme.txt").write_text("not a recording")
    with pytest.raises(DataError, match="sit_0.csv has no column 'label'"):
        load_dataset("csv", path=str(d), label_column="label", window=10)
    for i in range(5):
        write_csv(d / f"sit_{i}.csv", ["sit"] * 30)
    monkeypatch.chdir(tmp_path)
    ds = load_dataset("csv", path="recs", label_column="label", window=10, columns=["ax", "ay"])
    assert ds.source.startswith(str(d)) and "whole files" in ds.source
    # 5 files per class: the last one of each (by name) is test; 3 windows per file.
    assert np.bincount(ds.y_test).tolist() == [3, 3] and np.bincount(ds.y_train).tolist() == [
        12,
        12,
    ]
    assert ds.x_train.shape == (24, 10, 2, 1)


def test_delimiter_option(tmp_path: Path) -> None:
    p = write_csv(tmp_path / "t.tsv.csv", ["a"] * 20 + ["b"] * 20, sep="\t")
    ds = load_dataset("csv", path=str(p), label_column="label", window=5, delimiter="\t")
    assert ds.class_names == ("a", "b") and ds.input_shape == (5, 3, 1)


def _err(**options: object) -> str:
    with pytest.raises(DataError) as e:
        load_dataset("csv", **options)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_errors(tmp_path: Path) -> None:
    good = write_csv(tmp_path / "g.csv", ["a"] * 30 + ["b"] * 30)
    base = {"path": str(good), "label_column": "label", "window": 5}
    assert "does not exist" in _err(**{**base, "path": str(tmp_path / "no.csv")})
    (tmp_path / "empty").mkdir()
    assert "holds no .csv file" in _err(**{**base, "path": str(tmp_path / "empty")})
    assert "needs the option label_column" in _err(**{**base, "label_column": None})
    assert "window must be a number of rows >= 1" in _err(**{**base, "window": None})
    assert "stride must be a number of rows" in _err(**{**base, "stride": 0})
    assert "test_fraction must be between 0 and 1" in _err(**{**base, "test_fraction": 1})
    msg = _err(**{**base, "label_column": "activity"})
    assert "no column 'activity'" in msg and "its columns: time, ax, ay, label" in msg
    assert "no column(s) gyro of data.columns" in _err(**{**base, "columns": ["ax", "gyro"]})

    (tmp_path / "e.csv").write_text("")
    assert "is empty" in _err(**{**base, "path": str(tmp_path / "e.csv")})
    (tmp_path / "head.csv").write_text("ax,label\n")
    assert "has a header but no data rows" in _err(**{**base, "path": str(tmp_path / "head.csv")})
    (tmp_path / "t.csv").write_text("note,label\nx,a\n")
    assert "no numeric column besides 'label'" in _err(**{**base, "path": str(tmp_path / "t.csv")})
    assert "lists the label column" in _err(**{**base, "columns": ["ax", "label"]})
    (tmp_path / "h.csv").write_text("1,2,3\n4,5,6\n")
    assert "looks like data; add a header" in _err(**{**base, "path": str(tmp_path / "h.csv")})
    bad = write_csv(tmp_path / "n.csv", ["a"] * 30 + ["b"] * 30)
    text = bad.read_text().splitlines()
    text[7] = text[7].replace(",6,", ",six,")
    bad.write_text("\n".join(text))
    msg = _err(**{**base, "path": str(bad)})
    assert "n.csv line 8, column 'ax': 'six' is not a finite number" in msg
    text[7] = text[7].replace(",six,", ",nan,")
    bad.write_text("\n".join(text))
    assert "'nan' is not a finite number" in _err(**{**base, "path": str(bad)})
    text[7] = text[7] + ",extra"
    bad.write_text("\n".join(text))
    assert "line 8 has 5 fields but the header has 4" in _err(**{**base, "path": str(bad)})

    short = write_csv(tmp_path / "s.csv", ["a"] * 3)
    assert "has 3 data rows, fewer than window=5" in _err(**{**base, "path": str(short)})
    one = write_csv(tmp_path / "o.csv", ["a"] * 30)
    assert "holds one class only" in _err(**{**base, "path": str(one)})
    blip = write_csv(tmp_path / "b.csv", ["a"] * 30 + ["b"] * 3 + ["a"] * 30)
    assert "class(es) b have no window of 5 rows" in _err(**{**base, "path": str(blip)})
    few = write_csv(tmp_path / "f.csv", ["a"] * 30 + ["b"] * 5)
    assert "class 'b' has 1 window(s); it needs at least two" in _err(**{**base, "path": str(few)})
    d = tmp_path / "files"
    write_csv(d / "1.csv", ["a"] * 20)
    write_csv(d / "2.csv", ["a"] * 20)
    write_csv(d / "3.csv", ["b"] * 20)
    msg = _err(**{**base, "path": str(d)})
    assert "class(es) b have no test window after the split by whole files" in msg
    assert "add recording files" in msg
