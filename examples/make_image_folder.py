"""Generate an ``image_folder`` data set of N synthetic RGB images (PNG) for
scale tests: ``train/<class>/`` and ``test/<class>/``, two classes told apart
by a bright square in a class-specific corner over uniform noise.

    python examples/make_image_folder.py OUT --train 50000 --test 2000 --size 96

50,000 96x96x3 images (the size of the Visual Wake Words train split) take
about 1.3 GB of PNG; the same set held as float32 takes 5.5 GB.
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image


def image(seed: int, label: int, size: int) -> np.ndarray:
    """One (size, size, 3) uint8 image of class ``label`` (0 or 1)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 160, (size, size, 3), dtype=np.uint8)
    q = size // 3
    r0, c0 = (0, 0) if label == 0 else (size - q, size - q)
    img[r0 : r0 + q, c0 : c0 + q] = rng.integers(170, 256, (q, q, 3), dtype=np.uint8)
    return img


def make(out: Path, train: int, test: int, size: int, workers: int = 4) -> Path:
    """Write the folder (skipping images already there); returns ``out``."""
    jobs = []
    for split, n, base in (("train", train, 0), ("test", test, 10**9)):
        for i in range(n):
            label = i % 2
            jobs.append((out / split / f"c{label}" / f"{i:06d}.png", base + i, label))
    for split in ("train", "test"):
        for label in (0, 1):
            (out / split / f"c{label}").mkdir(parents=True, exist_ok=True)

    def write(job: tuple[Path, int, int]) -> None:
        path, seed, label = job
        if not path.exists():
            tmp = path.with_name(f".{path.name}.tmp")
            Image.fromarray(image(seed, label, size)).save(tmp, format="PNG", compress_level=1)
            os.replace(tmp, path)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(write, jobs))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--train", type=int, default=50_000)
    ap.add_argument("--test", type=int, default=2_000)
    ap.add_argument("--size", type=int, default=96)
    a = ap.parse_args()
    make(a.out, a.train, a.test, a.size)
    print(f"{a.out}: {a.train} train + {a.test} test images of {a.size}x{a.size}x3")


if __name__ == "__main__":
    main()
