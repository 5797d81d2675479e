"""A small learnable data set for pipeline tests: 3 classes of 8x8 patterns
under noise, written as the npz layout `dataset: npz` reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_pattern_npz(path: Path, n_train: int = 600, n_test: int = 200) -> Path:
    """Writes ``path`` (x_train/y_train/x_test/y_test, float32 (N, 8, 8, 1) in
    [0, 1], int64 labels 0..2, seed 0) and returns it."""
    rng = np.random.default_rng(0)
    pattern = rng.random((3, 8, 8, 1), dtype=np.float32)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        y = np.arange(n) % 3
        arrays[f"x_{split}"] = 0.6 * pattern[y] + 0.4 * rng.random((n, 8, 8, 1), dtype=np.float32)
        arrays[f"y_{split}"] = y.astype(np.int64)
    np.savez(path, **arrays)
    return path
