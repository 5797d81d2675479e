"""``dataset: image_folder``: a folder of images, one sub-folder per class.

Config::

    dataset: image_folder
    data: {path: my_images, image_size: [32, 32], color_mode: rgb}

Layout (that of Keras's ``image_dataset_from_directory``, with a train/test
level above the class folders)::

    my_images/
      train/<class>/*.png|.jpg|.jpeg|.bmp
      test/<class>/...            (optional: else set validation_split)

- Classes: the sorted sub-folder names of ``train/`` (label 0 is the first
  name); ``test/`` must have the same class folders. Files with other
  extensions and hidden files are ignored.
- ``image_size: [H, W]`` (required; one number means square): every image is
  resized to it (bilinear, whole image, no crop or padding).
- ``color_mode``: ``rgb`` (default; 3 channels, grayscale images replicated)
  or ``grayscale`` (1 channel, Pillow's ``L`` conversion).
- ``validation_split``: without a ``test/`` folder, this fraction of each
  class's images (at least one, at most all but one) becomes the test split: a
  fixed draw from ``seed`` (default 0) and the class index, so the same folder
  gives the same split. Not allowed together with a ``test/`` folder.
- ``stream``: ``auto`` (default), ``true`` or ``false``: read the cached images
  from disk a mini-batch at a time instead of holding them in memory
  (:mod:`reds_tf.data.stream`); ``auto`` streams sets whose float32 inputs
  would exceed 2 GiB.

Output x: ``(N, H, W, 3)`` or ``(N, H, W, 1)`` float32 in [0, 1] (uint8 / 255);
y: int64 class indices. The decoded images are cached under
``<cache>/features/`` (``$REDS_CACHE_DIR`` or ``~/.cache/reds_tf``) as uint8
``.npy`` files, keyed by every file's name, size and modification time and by
the options, so a changed folder is decoded again.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from reds_tf.data import Dataset, register
from reds_tf.data.cache import cache_key, cache_root
from reds_tf.data.stream import DiskArray, cached_rows, want_stream
from reds_tf.data.user_data import from_arrays, user_path
from reds_tf.errors import DataError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
COLOR_MODES = {"rgb": "RGB", "grayscale": "L"}
CACHE_VERSION = 2  # bump when decoding or the cache format changes: invalidates caches
MAX_SIDE = 4096
LAYOUT = "DIR/train/<class>/*.png (also .jpg .jpeg .bmp) and DIR/test/<class>/..."


def _images(folder: Path) -> list[str]:
    return sorted(
        f
        for f in os.listdir(folder)
        if not f.startswith(".") and f.lower().endswith(EXTENSIONS) and (folder / f).is_file()
    )


def list_split(split_dir: Path) -> dict[str, list[str]]:
    """Class name -> sorted image file names of one split folder (``train/``, ``test/``)."""
    classes = sorted(
        e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith(".")
    )
    if not classes:
        raise DataError(
            f"{split_dir} has no class folders; put each class's images in "
            f"{split_dir}/<class name>/ ({LAYOUT})"
        )
    out = {c: _images(split_dir / c) for c in classes}
    empty = [c for c, files in out.items() if not files]
    if empty:
        raise DataError(
            f"class folder(s) {', '.join(str(split_dir / c) for c in empty)} hold no "
            f"{'/'.join(e[1:] for e in EXTENSIONS)} image; add images or remove the folder"
        )
    return out


def _image_size(value: object) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    ok = (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        and all(1 <= v <= MAX_SIDE for v in value)
    )
    if not ok:
        raise DataError(
            f"image_folder option image_size must be [height, width] in pixels (1..{MAX_SIDE}), "
            f"e.g. [32, 32]; got {value!r}"
        )
    return int(value[0]), int(value[1])


def decode(path: Path, size: tuple[int, int], mode: str) -> np.ndarray:
    """One image file -> (H, W, channels) uint8, whole image resized bilinear."""
    try:
        with Image.open(path) as im:
            im = im.convert(COLOR_MODES[mode]).resize((size[1], size[0]), Image.BILINEAR)
            arr = np.asarray(im, np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(
            f"cannot read image {path} ({e}); re-save it as PNG or JPEG, or delete it"
        ) from e
    return arr[..., None] if arr.ndim == 2 else arr


def _decode_all(paths: list[Path], size: tuple[int, int], mode: str) -> np.ndarray:
    out = np.empty((len(paths), *size, 1 if mode == "grayscale" else 3), np.uint8)
    # Pillow releases the GIL while decoding and resizing: threads overlap files.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for i, img in enumerate(pool.map(lambda p: decode(p, size, mode), paths)):
            out[i] = img
    return out


def _signature(root: Path, files: list[str]) -> list[list]:
    sig = []
    for rel in files:
        st = os.stat(root / rel)
        sig.append([rel, st.st_size, st.st_mtime_ns])
    return sig


def split_validation(
    train: dict[str, list[str]], fraction: float, seed: int, where: Path
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Per class, ``round(fraction * n)`` images (1 .. n-1) drawn with
    ``default_rng([seed, class index])`` go to test; file order is kept."""
    tr: dict[str, list[str]] = {}
    te: dict[str, list[str]] = {}
    for k, (cls, files) in enumerate(train.items()):
        n = len(files)
        if n < 2:
            raise DataError(
                f"class folder {where / cls} has {n} image; validation_split needs at least "
                "two per class (one for each split): add images"
            )
        n_test = min(max(1, round(fraction * n)), n - 1)
        pick = set(np.random.default_rng([seed, k]).permutation(n)[:n_test].tolist())
        te[cls] = [f for i, f in enumerate(files) if i in pick]
        tr[cls] = [f for i, f in enumerate(files) if i not in pick]
    return tr, te


@register("image_folder")
def load(
    path: str | None = None,
    image_size: list[int] | None = None,
    color_mode: str = "rgb",
    validation_split: float | None = None,
    seed: int = 0,
    stream: str | bool = "auto",
) -> Dataset:
    """Images from class folders (module doc: layout, size, split, scaling)."""
    root = user_path(path, "image_folder")
    if not root.is_dir():
        what = "is a file" if root.exists() else "does not exist"
        raise DataError(f"image folder {root} {what}; set data.path to a folder laid out {LAYOUT}")
    train_dir, test_dir = root / "train", root / "test"
    if not train_dir.is_dir():
        raise DataError(
            f"{root} has no train/ folder; lay the images out as {LAYOUT} "
            "(without test/, set validation_split)"
        )
    if color_mode not in COLOR_MODES:
        raise DataError(
            f"image_folder option color_mode must be one of {', '.join(COLOR_MODES)}, "
            f"got {color_mode!r}"
        )
    if image_size is None:
        train0 = list_split(train_dir)
        first = next(iter(train0.items()))
        first_path = train_dir / first[0] / first[1][0]
        try:
            with Image.open(first_path) as im:
                seen = f"; {first_path} is {im.height}x{im.width}"
        except (OSError, UnidentifiedImageError):
            seen = ""
        raise DataError(
            "image_folder needs the option image_size: [height, width] that every image is "
            f"resized to (small for a microcontroller, e.g. [32, 32]){seen}"
        )
    size = _image_size(image_size)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise DataError(f"image_folder option seed must be an integer, got {seed!r}")
    train = list_split(train_dir)
    if test_dir.is_dir():
        if validation_split is not None:
            raise DataError(
                f"{root} has a test/ folder, so validation_split does not apply; remove the "
                "option (or the test/ folder to split train/ instead)"
            )
        test = list_split(test_dir)
        extra = [c for c in test if c not in train]
        if extra:
            raise DataError(
                f"{test_dir} has class folder(s) {', '.join(extra)} that {train_dir} lacks; "
                "both splits need the same class folders"
            )
        absent = [c for c in train if c not in test]
        if absent:
            raise DataError(
                f"{test_dir} lacks class folder(s) {', '.join(absent)} of {train_dir}; "
                "add test images of every class"
            )
        split_rule = "train/ and test/ folders"
    else:
        if validation_split is None:
            raise DataError(
                f"{root} has no test/ folder; add {test_dir}/<class>/ images, or set "
                "validation_split (e.g. 0.2) to hold out part of train/"
            )
        frac = validation_split
        if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 < frac < 1:
            raise DataError(
                "image_folder option validation_split must be a fraction between 0 and 1 "
                f"(exclusive), e.g. 0.2; got {frac!r}"
            )
        train, test = split_validation(train, float(frac), seed, train_dir)
        split_rule = f"validation_split {frac} of train/, seed {seed}"
    classes = list(train)
    lists = {
        "train": [f"train/{c}/{f}" for c in classes for f in train[c]],
        "test": [
            f"{'test' if test_dir.is_dir() else 'train'}/{c}/{f}" for c in classes for f in test[c]
        ],
    }
    labels = {
        s: np.asarray([classes.index(c) for c in classes for _ in d[c]], np.int64)
        for s, d in (("train", train), ("test", test))
    }
    key = cache_key(
        {
            "v": CACHE_VERSION,
            "root": str(root.resolve()),
            "files": {s: _signature(root, v) for s, v in lists.items()},
            "size": size,
            "mode": color_mode,
        }
    )
    cache = cache_root() / "features" / f"image_folder-{key}"
    row = (*size, 1 if color_mode == "grayscale" else 3)
    n_values = sum(len(v) for v in lists.values()) * math.prod(row)
    streaming = want_stream(stream, n_values, "image_folder")
    arrays = {}
    for s, rel in lists.items():
        paths = [root / r for r in rel]
        f = cached_rows(
            cache,
            f"x_{s}",
            (len(paths), *row),
            np.uint8,
            lambda a, b, paths=paths: _decode_all(paths[a:b], size, color_mode),
        )
        arrays[f"x_{s}"] = DiskArray(f) if streaming else np.load(f)
    return from_arrays(
        "image_folder",
        arrays["x_train"],
        labels["train"],
        arrays["x_test"],
        labels["test"],
        where=str(root),
        source=f"{root} (image folders, {size[0]}x{size[1]} {color_mode}, {split_rule})",
        class_names=classes,
        min_per_class=1,
    )
