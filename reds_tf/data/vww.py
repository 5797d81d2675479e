"""Visual Wake Words: person / no-person at 96x96 RGB, built from a local COCO 2014 copy.

Label rule (the VWW definition): an image is ``person`` (1) if at least one
annotation of the COCO category ``person`` has a bounding box ``w * h`` of at
least 0.5 % of the image area (``area_source="mask"`` uses the annotation's
segmentation ``area`` instead, as TensorFlow's VWW build script does); every
other image, including one with no annotations, is ``no-person`` (0). Crowd
annotations count like any other.

Expected layout (``$REDS_DATA_DIR/coco/`` or ``$REDS_DATA_DIR`` itself)::

    annotations/instances_train2014.json
    annotations/instances_val2014.json
    train2014/COCO_train2014_*.jpg
    val2014/COCO_val2014_*.jpg
    mscoco_minival_ids.txt        (optional: the VWW "minival" image ids, one per line)

Get it from https://cocodataset.org/#download: ``train2014.zip``,
``val2014.zip`` and ``annotations_trainval2014.zip`` (about 19 GB), unzipped
into one folder. It is never downloaded automatically.

Split: with ``mscoco_minival_ids.txt`` the VWW paper's split (train = train2014
plus val2014 minus minival, test = minival); without it train2014 / val2014.

Images are decoded with Pillow, converted to RGB and resized (whole image, no
crop) to 96x96 bilinear; the uint8 result is cached under
``<cache>/features/`` (``$REDS_CACHE_DIR`` or ``~/.cache/reds_tf``) as ``.npy``
files, written a chunk at a time. Output x: (N, 96, 96, 3) float32 in [0, 1]
(about 9 GB for the full train split: ``max_images`` takes a fixed random
subset of each split); y: int64, 1 = person. ``stream``: ``auto`` (default:
when the float32 inputs would exceed 2 GiB, as the full split does), ``true``
or ``false``: read the cached images from disk a mini-batch at a time
(:mod:`reds_tf.data.stream`) instead of holding them in memory.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from reds_tf.data import Dataset, register
from reds_tf.data.cache import cache_key, cache_root, file_signature
from reds_tf.data.stream import cached_rows, load_rows, want_stream
from reds_tf.errors import DataError

SIZE = 96
THRESHOLD = 0.005
SUBSETS = ("train2014", "val2014")
MINIVAL = "mscoco_minival_ids.txt"
HOW_TO_GET = (
    "download train2014.zip, val2014.zip and annotations_trainval2014.zip from "
    "https://cocodataset.org/#download, unzip them into one folder <dir>/coco/ "
    "(annotations/instances_{train,val}2014.json, train2014/, val2014/) and set "
    "REDS_DATA_DIR=<dir>"
)


def person_labels(
    coco: dict[str, Any], threshold: float = THRESHOLD, area_source: str = "box"
) -> dict[int, int]:
    """image id -> 1 if a person covers >= ``threshold`` of the image, else 0."""
    if area_source not in ("box", "mask"):
        raise DataError(f"area_source must be 'box' or 'mask', got {area_source!r}")
    try:
        person = {c["id"] for c in coco["categories"] if c["name"] == "person"}
        sizes = {im["id"]: float(im["width"]) * float(im["height"]) for im in coco["images"]}
        labels = dict.fromkeys(sizes, 0)
        for ann in coco.get("annotations", []):
            if ann["category_id"] not in person:
                continue
            if area_source == "box":
                area = float(ann["bbox"][2]) * float(ann["bbox"][3])
            else:
                area = float(ann["area"])
            if area >= threshold * sizes[ann["image_id"]]:
                labels[ann["image_id"]] = 1
    except (KeyError, TypeError, IndexError) as e:
        raise DataError(f"COCO annotations are malformed ({e!r}); {HOW_TO_GET}") from e
    if not person:
        raise DataError("COCO annotations have no 'person' category")
    return labels


def find_root() -> Path:
    env = os.environ.get("REDS_DATA_DIR")
    if not env:
        raise DataError(f"Visual Wake Words needs a local COCO 2014 copy: {HOW_TO_GET}")
    for d in (Path(env).expanduser() / "coco", Path(env).expanduser()):
        if all((d / "annotations" / f"instances_{s}.json").is_file() for s in SUBSETS):
            return d
    raise DataError(f"no COCO 2014 annotations under {env} (nor {env}/coco); {HOW_TO_GET}")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {path}: {e}") from e


def _entries(
    root: Path, threshold: float, area_source: str
) -> dict[str, list[tuple[Path, int, int]]]:
    """split -> [(image path, image id, label)] sorted by image id."""
    minival: set[int] | None = None
    if (root / MINIVAL).is_file():
        text = (root / MINIVAL).read_text().split()
        try:
            minival = {int(t) for t in text}
        except ValueError as e:
            raise DataError(f"{root / MINIVAL}: expected one integer image id per line") from e
    out: dict[str, list[tuple[Path, int, int]]] = {"train": [], "test": []}
    for subset in SUBSETS:
        coco = _read_json(root / "annotations" / f"instances_{subset}.json")
        labels = person_labels(coco, threshold, area_source)
        for im in sorted(coco["images"], key=lambda im: im["id"]):
            entry = (root / subset / im["file_name"], int(im["id"]), labels[im["id"]])
            if minival is not None:
                out["test" if im["id"] in minival else "train"].append(entry)
            else:
                out["train" if subset == "train2014" else "test"].append(entry)
    return out


def decode(path: Path, size: int = SIZE) -> np.ndarray:
    """One image file -> (size, size, 3) uint8 RGB, whole image resized bilinear."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR), np.uint8)
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"cannot read image {path}: {e}") from e


def _decode_all(paths: list[Path], workers: int) -> np.ndarray:
    out = np.empty((len(paths), SIZE, SIZE, 3), np.uint8)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, img in enumerate(pool.map(decode, paths)):
            out[i] = img
    return out


@register("vww")
def load(
    max_images: int | None = None,
    threshold: float = THRESHOLD,
    area_source: str = "box",
    workers: int = 2,
    root: str | None = None,
    stream: str | bool = "auto",
) -> Dataset:
    """Visual Wake Words from COCO 2014 (module doc). ``root``: the COCO folder
    (default: found under ``$REDS_DATA_DIR``)."""
    coco_root = Path(root) if root else find_root()
    splits = _entries(coco_root, threshold, area_source)
    if max_images is not None:
        if max_images <= 0:
            raise DataError(f"max_images must be positive, got {max_images}")
        rng = np.random.default_rng(0)
        for k, v in splits.items():
            if len(v) > max_images:
                keep = np.sort(rng.choice(len(v), max_images, replace=False))
                splits[k] = [v[i] for i in keep]
    sig = [file_signature(coco_root / "annotations" / f"instances_{s}.json") for s in SUBSETS]
    key = cache_key(
        {
            "v": 2,  # 2: one .npy per array
            "root": str(coco_root.resolve()),
            "ann": sig,
            "ids": [[e[1] for e in splits[k]] for k in ("train", "test")],
            "threshold": threshold,
            "area": area_source,
            "size": SIZE,
        }
    )
    cache = cache_root() / "features" / f"vww-{key}"
    n_values = sum(len(v) for v in splits.values()) * SIZE * SIZE * 3
    streaming = want_stream(stream, n_values, "vww")
    x = {}
    for k in ("train", "test"):
        paths = [e[0] for e in splits[k]]
        f = cached_rows(
            cache,
            f"x_{k}",
            (len(paths), SIZE, SIZE, 3),
            np.uint8,
            lambda a, b, paths=paths: _decode_all(paths[a:b], workers),
        )
        x[k] = load_rows(f, streaming)
    split_name = "minival split" if (coco_root / MINIVAL).is_file() else "train2014/val2014"
    return Dataset(
        "vww",
        x["train"],
        np.asarray([e[2] for e in splits["train"]], np.int64),
        x["test"],
        np.asarray([e[2] for e in splits["test"]], np.int64),
        num_classes=2,
        source=f"{coco_root} (COCO 2014, {split_name}, person box >= {threshold:.1%})",
    )
