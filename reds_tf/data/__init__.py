"""Data set registry.

Every loader returns a :class:`Dataset` of NumPy arrays: images as float32 in
[0, 1], NHWC; labels as int64 class indices. Loaders never train and never
print more than one line about where the data came from.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from reds_tf.data.stream import take
from reds_tf.errors import DataError


@dataclass
class Dataset:
    """A train/test split.

    Shapes: ``x_train`` (N, *input_shape) float32, ``y_train`` (N,) int64,
    likewise for the test split. The inputs are NumPy arrays in memory, or,
    for sets larger than memory, :class:`reds_tf.data.stream.DiskArray` s
    read from disk a mini-batch at a time (labels always in memory).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    source: str = ""
    # Names of the classes in label order, when the source has them (folder
    # names, an npz's ``class_names``); () when it does not.
    class_names: tuple[str, ...] = ()

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_train.shape[1:])

    def limited(self, limit: int | None, seed: int = 0) -> Dataset:
        """A copy with at most ``limit`` training samples (a fixed random subset)."""
        if limit is None or limit >= len(self.x_train):
            return self
        if limit <= 0:
            raise DataError(f"--limit must be positive, got {limit}")
        idx = np.random.default_rng(seed).permutation(len(self.x_train))[:limit]
        idx.sort()
        return Dataset(
            self.name,
            take(self.x_train, idx),  # streamed inputs stay on disk
            self.y_train[idx],
            self.x_test,
            self.y_test,
            self.num_classes,
            self.source,
            self.class_names,
        )


# ``dataset:`` of a run trained from in-memory arrays (reds_tf.train(data=...)):
# not loadable by name; later commands use the run's own copy (data.npz).
ARRAYS = "arrays"

_REGISTRY: dict[str, Callable[..., Dataset]] = {}
# ``dataset: tfds:NAME`` loads NAME through tensorflow-datasets (tfds_source).
TFDS_PREFIX = "tfds:"


def fit_to_input(data: Dataset, input_shape: tuple[int, ...]) -> Dataset:
    """``data`` with its inputs reshaped to ``input_shape`` when only the shape
    differs and the element count matches (a ``(28, 28)`` model on
    ``(28, 28, 1)`` images); otherwise ``data`` unchanged (the model check
    then names the mismatch)."""
    shape = tuple(int(d) for d in input_shape)
    if data.input_shape == shape or math.prod(data.input_shape) != math.prod(shape):
        return data
    return dataclasses.replace(
        data,
        x_train=data.x_train.reshape(len(data.x_train), *shape),
        x_test=data.x_test.reshape(len(data.x_test), *shape),
    )


def register(name: str) -> Callable[[Callable[..., Dataset]], Callable[..., Dataset]]:
    """Register a loader; it may take keyword options (all with defaults)."""

    def deco(fn: Callable[..., Dataset]) -> Callable[..., Dataset]:
        _REGISTRY[name] = fn
        return fn

    return deco


def available() -> list[str]:
    _load_builtin()
    return [*sorted(_REGISTRY), f"{TFDS_PREFIX}<name>"]


def load_dataset(name: str, **options: object) -> Dataset:
    """Load a registered data set by name; unknown names list the known ones.

    ``options`` go to the loader as keyword arguments (e.g. ``augment=2`` for
    the keyword-spotting sets); a loader that does not take one raises DataError.
    """
    _load_builtin()
    if name == ARRAYS:
        raise DataError(
            f"dataset '{ARRAYS}' is data given as arrays to reds_tf.train(data=...) and cannot "
            "be loaded by name; save the arrays with numpy.savez and use `dataset: npz`"
        )
    if name.startswith(TFDS_PREFIX):
        from reds_tf.data import tfds_source

        loader = functools.partial(tfds_source.load, name[len(TFDS_PREFIX) :])
    elif name in _REGISTRY:
        loader = _REGISTRY[name]
    else:
        raise DataError(f"unknown dataset '{name}'; known: {', '.join(available())}")
    if not options:
        return loader()
    params = inspect.signature(loader).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in options if k not in params and not takes_any]
    if unknown:
        known = ", ".join(params) or "none"
        raise DataError(f"dataset '{name}' has no option(s) {', '.join(unknown)}; known: {known}")
    return loader(**options)


def _load_builtin() -> None:
    # Importing registers the loaders. Lazy on purpose: rundir, hence every command,
    # imports this package, and the loaders cost ~50 ms most commands never need.
    from reds_tf.data import (  # noqa: F401
        audio_folder,
        cifar10,
        csv_windows,
        fashion_mnist,
        image_folder,
        npz_file,
        speech_commands,
        synthetic_keywords,
        vww,
    )
