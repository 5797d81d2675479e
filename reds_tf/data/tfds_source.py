"""``dataset: tfds:NAME``: a data set of the TensorFlow Datasets catalogue.

Config::

    dataset: tfds:mnist
    data: {split_train: train, split_test: test}

Needs the ``tensorflow-datasets`` package (``pip install tensorflow-datasets``;
not a dependency of reds_tf). ``NAME`` is read with ``tfds.load(NAME,
split=[split_train, split_test], batch_size=-1, data_dir=data_dir)``, which
downloads and prepares it on first use. Options:

- ``split_train`` (default ``train``), ``split_test`` (default ``test``): tfds
  split names, slices allowed (``train[:90%]``, ``train[90%:]`` for a set
  without a test split);
- ``image_key`` (default ``image``), ``label_key`` (default ``label``): the
  feature names of the inputs and the class labels;
- ``data_dir``: tfds's data folder (default its own, ``~/tensorflow_datasets``).

Without internet, prepare the data set on a machine that has it (``tfds.load``
or ``tfds build NAME``) and copy its ``NAME/`` folder into ``data_dir``.

Inputs follow :mod:`reds_tf.data.user_data`'s rules: uint8 images are scaled
to [0, 1], float features are used as given, in the data set's shape
(``(N, 28, 28, 1)`` for mnist); labels are class indices, ``class_names`` the
data set's label names when it has them. Every class needs training and test
samples.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from reds_tf.data import Dataset
from reds_tf.data.user_data import from_arrays, user_path
from reds_tf.errors import DataError

PREFIX = "tfds:"
DEFAULT_DATA_DIR = "~/tensorflow_datasets"


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    text = text[:200] + ("..." if len(text) > 200 else "")
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _class_names(info: Any, label_key: str) -> list[str] | None:
    try:
        names = info.features[label_key].names
    except (AttributeError, KeyError, TypeError):
        return None
    return [str(n) for n in names] if names else None


def _feature(split: Any, key: str, option: str, name: str, split_name: str) -> np.ndarray:
    try:
        return np.asarray(split[key])
    except (KeyError, TypeError, IndexError) as e:
        have = ", ".join(map(str, split.keys())) if hasattr(split, "keys") else "?"
        raise DataError(
            f"tfds:{name} split {split_name} has no feature {key!r} (features: {have}); "
            f"set data.{option} to the one to use"
        ) from e


def load(
    name: str,
    split_train: str = "train",
    split_test: str = "test",
    image_key: str = "image",
    label_key: str = "label",
    data_dir: str | None = None,
) -> Dataset:
    """``NAME`` from TensorFlow Datasets (module doc: options, offline use)."""
    if not name:
        raise DataError("dataset 'tfds:' needs a data set name, e.g. `dataset: tfds:mnist`")
    try:
        tfds = importlib.import_module("tensorflow_datasets")
    except ImportError as e:
        raise DataError(
            f"dataset 'tfds:{name}' needs tensorflow-datasets: pip install tensorflow-datasets"
        ) from e
    ddir = str(user_path(data_dir, f"tfds:{name}", "data_dir")) if data_dir is not None else None
    try:
        (train, test), info = tfds.load(
            name,
            split=[split_train, split_test],
            batch_size=-1,
            with_info=True,
            data_dir=ddir,
        )
    except Exception as e:  # noqa: BLE001 - tfds raises many types (network, registry, I/O)
        if type(e).__name__ == "DatasetNotFoundError":
            raise DataError(
                f"tensorflow-datasets has no data set '{name}' ({_one_line(e)}); see "
                "https://www.tensorflow.org/datasets/catalog for the names"
            ) from None
        raise DataError(
            f"cannot load tfds:{name} ({_one_line(e)}); offline, prepare it where there is "
            f"internet (tfds build {name}) and copy its {name}/ folder into "
            f"{ddir or DEFAULT_DATA_DIR} (data.data_dir)"
        ) from None
    x_train = _feature(train, image_key, "image_key", name, split_train)
    y_train = _feature(train, label_key, "label_key", name, split_train)
    x_test = _feature(test, image_key, "image_key", name, split_test)
    y_test = _feature(test, label_key, "label_key", name, split_test)
    where = f"tfds:{name}"
    return from_arrays(
        where,
        x_train,
        y_train,
        x_test,
        y_test,
        where=where,
        source=f"tensorflow-datasets {name} ({split_train} / {split_test}"
        f"{', ' + ddir if ddir else ''})",
        class_names=_class_names(info, label_key),
    )
