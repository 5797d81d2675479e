"""Data set registry.

Every loader returns a :class:`Dataset` of NumPy arrays: images as float32 in
[0, 1], NHWC; labels as int64 class indices. Loaders never train and never
print more than one line about where the data came from.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from reds_tf.errors import DataError


@dataclass
class Dataset:
    """A train/test split held in memory.

    Shapes: ``x_train`` (N, *input_shape) float32, ``y_train`` (N,) int64,
    likewise for the test split.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    source: str = ""

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
            self.x_train[idx],
            self.y_train[idx],
            self.x_test,
            self.y_test,
            self.num_classes,
            self.source,
        )


_REGISTRY: dict[str, Callable[..., Dataset]] = {}


def register(name: str) -> Callable[[Callable[..., Dataset]], Callable[..., Dataset]]:
    """Register a loader; it may take keyword options (all with defaults)."""

    def deco(fn: Callable[..., Dataset]) -> Callable[..., Dataset]:
        _REGISTRY[name] = fn
        return fn

    return deco


def available() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def load_dataset(name: str, **options: object) -> Dataset:
    """Load a registered data set by name; unknown names list the known ones.

    ``options`` go to the loader as keyword arguments (e.g. ``augment=2`` for
    the keyword-spotting sets); a loader that does not take one raises DataError.
    """
    _load_builtin()
    if name not in _REGISTRY:
        raise DataError(f"unknown dataset '{name}'; known: {', '.join(sorted(_REGISTRY))}")
    if not options:
        return _REGISTRY[name]()
    params = inspect.signature(_REGISTRY[name]).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in options if k not in params and not takes_any]
    if unknown:
        known = ", ".join(params) or "none"
        raise DataError(f"dataset '{name}' has no option(s) {', '.join(unknown)}; known: {known}")
    return _REGISTRY[name](**options)


def _load_builtin() -> None:
    # Importing registers the loaders. Lazy on purpose: rundir, hence every command,
    # imports this package, and the five loaders cost ~50 ms most commands never need.
    from reds_tf.data import (  # noqa: F401
        cifar10,
        fashion_mnist,
        speech_commands,
        synthetic_keywords,
        vww,
    )
