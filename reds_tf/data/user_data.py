"""Checks shared by the loaders of users' own data (npz, image_folder,
audio_folder, csv, tfds:NAME).

Rules every such loader follows:

- a path option accepts an absolute path or one relative to the current
  directory; ``~`` is expanded; ``Dataset.source`` names the absolute path;
- inputs: uint8 is scaled to [0, 1] by 1/255, floats are used as given (as
  float32); any other dtype is refused (convert it to uint8 or float);
- labels: class indices ``0 .. C-1`` (integers, or whole-valued floats), or
  one-hot / per-class scores of shape ``(N, C)`` (their argmax is the label);
- every class has at least ``min_per_class`` training samples (2) and at least
  one test sample; at least two classes.

Every problem raises :class:`reds_tf.errors.DataError` with one line: what is
wrong, in which file, and how to fix it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from reds_tf.data import Dataset
from reds_tf.data.stream import is_streaming
from reds_tf.errors import DataError


def user_path(value: object, dataset: str, option: str = "path") -> Path:
    """An option naming a file or folder as an absolute path (``~`` expanded,
    relative to the current directory); existence is the caller's check."""
    if value is None:
        raise DataError(
            f"dataset '{dataset}' needs the option {option}: set `data: {{{option}: ...}}` "
            "in the config"
        )
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise DataError(f"dataset '{dataset}' option {option} must be a path, got {value!r}")
    return Path(os.path.abspath(Path(value).expanduser()))


def _fmt_classes(classes: Sequence[int], names: Sequence[str]) -> str:
    return ", ".join(f"{c} ({names[c]})" if c < len(names) else str(c) for c in classes)


def scale_inputs(x: np.ndarray, what: str, where: str) -> np.ndarray:
    """uint8 -> float32 / 255; floats -> float32 as given (finite only)."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    if x.dtype.kind != "f":
        raise DataError(
            f"{where}: {what} has dtype {x.dtype}; convert it to uint8 (0..255, scaled to "
            "[0, 1]) or to float (used as given), e.g. x.astype(np.float32)"
        )
    x = x.astype(np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        first = int(np.flatnonzero(bad.reshape(len(x), -1).any(axis=1))[0])
        raise DataError(
            f"{where}: {what} holds {int(bad.sum())} NaN/inf value(s) (first in sample "
            f"{first}); replace or drop those samples"
        )
    return x


def label_indices(y: np.ndarray, what: str, where: str) -> tuple[np.ndarray, int | None]:
    """Labels as int64 class indices, and the one-hot width (None for index labels)."""
    width = None
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2:
        if y.dtype.kind not in "biuf" or not np.isfinite(y).all():
            raise DataError(f"{where}: {what} (one-hot, {y.shape}) must hold finite numbers")
        width = int(y.shape[1])
        return np.argmax(y, axis=1).astype(np.int64), width
    if y.ndim != 1:
        raise DataError(
            f"{where}: {what} has shape {y.shape}; labels must be class indices (N,) or "
            "one-hot (N, classes)"
        )
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or (y != np.round(y)).any():
            bad = int(np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))[0])
            raise DataError(
                f"{where}: {what}[{bad}] = {y[bad]} is not a whole number; labels must be "
                "class indices 0, 1, 2, ..."
            )
    elif y.dtype.kind not in "biu":
        raise DataError(
            f"{where}: {what} has dtype {y.dtype}; labels must be integer class indices "
            "0, 1, 2, ... (map class names to indices and pass the names as class_names)"
        )
    y = y.astype(np.int64)
    if len(y) and y.min() < 0:
        bad = int(np.flatnonzero(y < 0)[0])
        raise DataError(
            f"{where}: {what}[{bad}] = {y[bad]} is negative; labels must be class indices "
            "0, 1, 2, ..."
        )
    return y, width


def from_arrays(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    where: str,
    source: str,
    class_names: Sequence[str] | None = None,
    min_per_class: int = 2,
) -> Dataset:
    """A checked :class:`Dataset` from raw arrays (module doc: scaling, labels,
    class counts). ``where`` names the origin in error messages (a file, a
    folder). Shapes are kept as given: x ``(N, ...)``, at least 2-D. Inputs
    streamed from disk (:class:`reds_tf.data.stream.DiskArray`) stay there."""
    xs = {
        k: x if is_streaming(x) else np.asarray(x)
        for k, x in (("x_train", x_train), ("x_test", x_test))
    }
    ys = {"y_train": np.asarray(y_train), "y_test": np.asarray(y_test)}
    for k, x in xs.items():
        if x.ndim < 2:
            raise DataError(
                f"{where}: {k} has shape {x.shape}; inputs must be (samples, features...) "
                "with one row per sample"
            )
    for split in ("train", "test"):
        nx, ny = len(xs[f"x_{split}"]), len(ys[f"y_{split}"])
        if nx != ny:
            raise DataError(
                f"{where}: x_{split} has {nx} samples but y_{split} has {ny}; "
                "give one label per sample"
            )
        if nx == 0:
            raise DataError(f"{where}: x_{split} has no samples")
    if xs["x_train"].shape[1:] != xs["x_test"].shape[1:]:
        raise DataError(
            f"{where}: train samples have shape {xs['x_train'].shape[1:]} but test samples "
            f"{xs['x_test'].shape[1:]}; both splits must hold samples of one shape"
        )
    kinds = {k: ("uint8" if x.dtype == np.uint8 else x.dtype.kind) for k, x in xs.items()}
    if set(kinds.values()) == {"uint8", "f"}:
        raise DataError(
            f"{where}: x_train is {xs['x_train'].dtype} but x_test is {xs['x_test'].dtype}, "
            "so only one would be scaled by 1/255; save both with the same dtype"
        )
    # Streamed inputs are scaled as they are read (uint8 / 255: always finite).
    x_tr, x_te = (x if is_streaming(x) else scale_inputs(x, k, where) for k, x in xs.items())
    y_tr, w_tr = label_indices(ys["y_train"], "y_train", where)
    y_te, w_te = label_indices(ys["y_test"], "y_test", where)
    if w_tr is not None and w_te is not None and w_tr != w_te:
        raise DataError(
            f"{where}: one-hot y_train has {w_tr} columns but y_test {w_te}; "
            "both must have one column per class"
        )
    num = max(int(y_tr.max()) + 1, int(y_te.max()) + 1, w_tr or 0, w_te or 0)
    names = tuple(str(n) for n in class_names) if class_names is not None else ()
    if class_names is not None and len(names) < num:
        raise DataError(
            f"{where}: class_names has {len(names)} name(s) but the labels have {num} "
            f"classes (0..{num - 1}); give one name per class, in label order"
        )
    # More names than labels reach: the classes without samples are named below.
    num = max(num, len(names))
    if num < 2:
        raise DataError(f"{where}: the labels hold only one class; a classifier needs at least two")
    train_counts = np.bincount(y_tr, minlength=num)
    test_counts = np.bincount(y_te, minlength=num)
    missing = np.flatnonzero(train_counts == 0).tolist()
    if missing:
        raise DataError(
            f"{where}: class(es) {_fmt_classes(missing, names)} of 0..{num - 1} have no "
            "training sample; labels must be 0..C-1 with every class in the training split"
        )
    missing = np.flatnonzero(test_counts == 0).tolist()
    if missing:
        raise DataError(
            f"{where}: class(es) {_fmt_classes(missing, names)} have no test sample; "
            "put samples of every class in the test split"
        )
    few = np.flatnonzero(train_counts < min_per_class).tolist()
    if few:
        raise DataError(
            f"{where}: class(es) {_fmt_classes(few, names)} have fewer than "
            f"{min_per_class} training samples; add more samples of them"
        )
    return Dataset(name, x_tr, y_tr, x_te, y_te, num, source, names)
