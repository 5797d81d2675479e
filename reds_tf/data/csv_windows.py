"""``dataset: csv``: sensor time series in CSV files, cut into fixed windows.

Config::

    dataset: csv
    data: {path: recordings/, label_column: activity, window: 50, stride: 25}

Format: text CSV (comma-separated unless ``delimiter`` says otherwise), a header
line of column names, then one row per time step::

    time,acc_x,acc_y,acc_z,activity
    0.00,0.12,-0.98,0.05,walk
    0.02,0.15,-0.95,0.07,walk

``path`` is one CSV file or a folder of ``*.csv`` files, each one recording:
windows never straddle two files. Options:

- ``label_column`` (required): the column holding each row's class. Labels are
  strings (classes sorted by name) or integers (classes sorted by value); the
  class index is the position in that order, ``Dataset.class_names`` the labels.
- ``window`` (required): rows per window; ``stride`` (default ``window``): rows
  between window starts, from the first row of each file.
- ``columns``: the feature columns, in that order; default: every column other
  than the label whose first value is a number (list ``columns`` to leave out
  e.g. a time stamp). Every value of a feature column must be a finite number.
- ``test_fraction`` (default 0.2): the test share, split so that no row is in
  both splits. Several files: whole files are held out. Files are grouped by
  the class most of their windows have; in each group (sorted by name) the last
  ``round(test_fraction * n)`` files go to test, at least one when the group
  has two or more files. One file: per class, the last ``test_fraction`` of its
  windows in time order (at least one) are test, and training windows that
  share rows with a test window are dropped.
- ``delimiter`` (default ``,``): the field separator, e.g. ``;`` or ``"\\t"``.

A window's label is the label of all its rows: windows whose rows have mixed
labels are dropped. Values are used as given (float32, no scaling). Output x:
``(N, window, channels, 1)``; y: int64 class indices.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reds_tf.data import Dataset, register
from reds_tf.data.user_data import from_arrays, user_path
from reds_tf.errors import DataError


@dataclass
class Recording:
    """One CSV file: its features ``(rows, channels)`` and per-row label strings."""

    path: Path
    values: np.ndarray
    labels: list[str]


def _is_number(s: str) -> bool:
    try:
        return math.isfinite(float(s))
    except ValueError:
        return False


def _read_rows(path: Path, delimiter: str) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, data rows (blank lines skipped) and each row's line number."""
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=delimiter)
            for row in reader:
                if not any(c.strip() for c in row):
                    continue
                if header is None:
                    header = [c.strip() for c in row]
                    continue
                rows.append(row)
                lines.append(reader.line_num)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read {path} ({e}); save it as UTF-8 CSV text") from e
    if header is None:
        raise DataError(f"{path} is empty; it needs a header line of column names, then data rows")
    if all(_is_number(c) for c in header):
        raise DataError(
            f"{path}: the first line ({delimiter.join(header)[:60]}) looks like data; add a "
            "header line of column names"
        )
    return header, rows, lines


def _read(
    path: Path, label_column: str, columns: list[str] | None, delimiter: str
) -> tuple[Recording, list[str]]:
    """One file as a :class:`Recording`, and the feature columns used (``columns``
    when given, else the numeric ones of this file's first row)."""
    header, rows, lines = _read_rows(path, delimiter)
    if label_column not in header:
        raise DataError(
            f"{path} has no column {label_column!r} for label_column; its columns: "
            f"{', '.join(header)}"
        )
    li = header.index(label_column)
    if not rows:
        raise DataError(f"{path} has a header but no data rows; add the recording's rows")
    for row, line in zip(rows, lines, strict=True):
        if len(row) != len(header):
            raise DataError(
                f"{path} line {line} has {len(row)} fields but the header has {len(header)}; "
                f"fix the row (delimiter {delimiter!r})"
            )
    if columns is None:
        columns = [h for i, h in enumerate(header) if i != li and _is_number(rows[0][i])]
        if not columns:
            raise DataError(
                f"{path}: no numeric column besides {label_column!r} in the first data row; "
                "list the feature columns with data.columns"
            )
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(
            f"{path} has no column(s) {', '.join(missing)} of data.columns; its columns: "
            f"{', '.join(header)}"
        )
    if label_column in columns:
        raise DataError(f"data.columns lists the label column {label_column!r}; leave it out")
    idx = [header.index(c) for c in columns]
    cells = [[row[i] for i in idx] for row in rows]
    try:
        values = np.array(cells, dtype=str).reshape(len(rows), len(idx)).astype(np.float64)
        ok = bool(np.isfinite(values).all())
    except ValueError:
        ok = False
    if not ok:
        for row, line in zip(cells, lines, strict=True):
            for col, v in zip(columns, row, strict=True):
                if not _is_number(v):
                    raise DataError(
                        f"{path} line {line}, column {col!r}: {v!r} is not a finite number; "
                        "fix the value or leave the column out of data.columns"
                    )
    labels = [row[li].strip() for row in rows]
    for lab, line in zip(labels, lines, strict=True):
        if not lab:
            raise DataError(
                f"{path} line {line}: empty {label_column!r}; give every row a label (or "
                "delete the row)"
            )
    return Recording(path, values.astype(np.float32), labels), columns


def classes_of(labels: set[str]) -> tuple[list[str], dict[str, int]]:
    """Class names in label order (integers by value when every label is one,
    else strings by name) and each label string's class index."""
    try:
        values = {s: int(s) for s in labels}
    except ValueError:
        names = sorted(labels)
        return names, {n: i for i, n in enumerate(names)}
    order = sorted(set(values.values()))  # "07" and "7" are one class
    return [str(v) for v in order], {s: order.index(v) for s, v in values.items()}


def window_starts(ids: np.ndarray, window: int, stride: int) -> np.ndarray:
    """Starts of the windows (every ``stride`` rows) whose rows share one label."""
    starts = np.arange(0, len(ids) - window + 1, stride)
    changes = np.concatenate([[0], np.cumsum(ids[1:] != ids[:-1])])
    return starts[changes[starts + window - 1] == changes[starts]]


def _rows(value: object, option: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DataError(
            f"dataset 'csv' option {option} must be a number of rows >= 1, got {value!r}"
        )
    return value


def _files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise DataError(f"CSV path {root} does not exist; set data.path to a .csv file or a folder")
    files = sorted(
        p for p in root.iterdir() if p.suffix.lower() == ".csv" and not p.name.startswith(".")
    )
    if not files:
        raise DataError(f"folder {root} holds no .csv file; put one CSV file per recording there")
    return files


def _split_files(
    recs: list[Recording], starts: list[np.ndarray], ids: list[np.ndarray], n_cls: int, frac: float
) -> list[bool]:
    """Which files are test (module doc: grouped by their dominant class)."""
    groups: dict[int, list[int]] = {}
    for k, (s, i) in enumerate(zip(starts, ids, strict=True)):
        if len(s):
            dominant = int(np.argmax(np.bincount(i[s], minlength=n_cls)))
            groups.setdefault(dominant, []).append(k)
    test = [False] * len(recs)
    for members in groups.values():
        members.sort(key=lambda k: recs[k].path.name)
        n = len(members)
        n_test = 0 if n < 2 else min(max(1, round(frac * n)), n - 1)
        for k in members[n - n_test :]:
            test[k] = True
    return test


def _split_windows(
    starts: np.ndarray, ids: np.ndarray, window: int, frac: float, names: list[str], where: Path
) -> tuple[np.ndarray, np.ndarray]:
    """One file: per class the last ``frac`` of its windows are test; training
    windows overlapping a test window are dropped. Returns (train, test) starts."""
    labels = ids[starts]
    train, test = [], []
    for c in np.unique(labels):
        mine = starts[labels == c]
        if len(mine) < 2:
            raise DataError(
                f"{where}: class {names[c]!r} has {len(mine)} window(s); it needs at least two "
                "(one per split): record more of it, or lower window or stride"
            )
        n_test = min(max(1, round(frac * len(mine))), len(mine) - 1)
        held = mine[len(mine) - n_test :]
        rest = mine[: len(mine) - n_test]
        # Test windows are the class's last: a training window shares rows with
        # one exactly when it starts less than ``window`` rows before the first.
        keep = rest[held[0] - rest >= window]
        if not len(keep):
            raise DataError(
                f"{where}: class {names[c]!r} has no training window left that shares no row "
                "with a test window; record more of it, or raise stride"
            )
        train.append(keep)
        test.append(held)
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


@register("csv")
def load(
    path: str | None = None,
    label_column: str | None = None,
    window: int | None = None,
    stride: int | None = None,
    test_fraction: float = 0.2,
    columns: list[str] | None = None,
    delimiter: str = ",",
) -> Dataset:
    """Windows of CSV time series (module doc: format, windows, split)."""
    root = user_path(path, "csv")
    files = _files(root)
    if label_column is None or not isinstance(label_column, str):
        raise DataError(
            "dataset 'csv' needs the option label_column: the name of the column holding "
            f"each row's class, got {label_column!r}"
        )
    win = _rows(window, "window")
    step = win if stride is None else _rows(stride, "stride")
    frac = test_fraction
    if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 < frac < 1:
        raise DataError(
            f"dataset 'csv' option test_fraction must be between 0 and 1 (exclusive), got {frac!r}"
        )
    if columns is not None and (
        not isinstance(columns, list) or not columns or not all(isinstance(c, str) for c in columns)
    ):
        raise DataError(
            f"dataset 'csv' option columns must be a list of column names, got {columns!r}"
        )
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise DataError(f"dataset 'csv' option delimiter must be one character, got {delimiter!r}")

    recs: list[Recording] = []
    for f in files:
        rec, columns = _read(f, label_column, columns, delimiter)
        if len(rec.values) < win:
            raise DataError(
                f"{f} has {len(rec.values)} data rows, fewer than window={win}; lower window "
                "or record longer"
            )
        recs.append(rec)
    names, index = classes_of({lab for r in recs for lab in r.labels})
    ids = [np.asarray([index[lab] for lab in r.labels], np.int64) for r in recs]
    starts = [window_starts(i, win, step) for i in ids]

    counts = np.bincount(
        np.concatenate([i[s] for i, s in zip(ids, starts, strict=True)]), minlength=len(names)
    )
    none = [names[c] for c in np.flatnonzero(counts == 0)]
    if none:
        raise DataError(
            f"{root}: class(es) {', '.join(none)} have no window of {win} rows all with that "
            "label (mixed windows are dropped); lower window or record longer runs of them"
        )
    if len(names) < 2:
        raise DataError(f"{root}: {label_column!r} holds one class only; a classifier needs two")

    parts: dict[str, list[tuple[int, np.ndarray]]] = {"train": [], "test": []}
    if len(recs) > 1:
        is_test = _split_files(recs, starts, ids, len(names), frac)
        for k, s in enumerate(starts):
            parts["test" if is_test[k] else "train"].append((k, s))
        rule = "whole files"
    else:
        tr, te = _split_windows(starts[0], ids[0], win, frac, names, recs[0].path)
        parts = {"train": [(0, tr)], "test": [(0, te)]}
        rule = "last windows of each class"
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, chosen in parts.items():
        xs = [np.stack([recs[k].values[s : s + win] for s in st]) for k, st in chosen if len(st)]
        ys = [ids[k][st] for k, st in chosen if len(st)]
        x = np.concatenate(xs) if xs else np.zeros((0, win, len(columns or [])), np.float32)
        y = np.concatenate(ys) if ys else np.zeros(0, np.int64)
        arrays[split] = (x[..., None], y)
    for split, (_, y) in arrays.items():
        lacking = [names[c] for c in range(len(names)) if not (y == c).any()]
        if lacking:
            files_hint = (
                "add recording files of them (one file per recording)"
                if len(recs) > 1
                else "record more of them"
            )
            raise DataError(
                f"{root}: class(es) {', '.join(lacking)} have no {split} window after the "
                f"split by {rule}; {files_hint}"
            )
    assert columns is not None
    shown = ", ".join(columns) if len(columns) <= 8 else f"{', '.join(columns[:8])}, ..."
    return from_arrays(
        "csv",
        arrays["train"][0],
        arrays["train"][1],
        arrays["test"][0],
        arrays["test"][1],
        where=str(root),
        source=(
            f"{root} (csv, {len(recs)} file(s), window {win} stride {step}, "
            f"{len(columns)} channel(s): {shown}; test split: {rule})"
        ),
        class_names=names,
        min_per_class=1,
    )
