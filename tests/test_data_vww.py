"""Visual Wake Words labelling and loading on a tiny COCO-format fixture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reds_tf.data import load_dataset
from reds_tf.data.vww import person_labels
from reds_tf.errors import DataError

PERSON, DOG = 1, 18

# (id, subset, width, height, colour, format, annotations as (category, bbox w, h, mask area))
IMAGES = [
    (1, "train2014", 200, 100, (255, 0, 0), "png", [(PERSON, 10, 10, 80)]),  # 100 = 0.5 %: person
    (2, "train2014", 200, 100, (0, 255, 0), "png", [(PERSON, 9, 11, 99), (DOG, 150, 90, 9000)]),
    (3, "train2014", 64, 64, (0, 0, 255), "jpg", [(PERSON, 4, 5, 20), (PERSON, 3, 7, 21)]),
    (4, "train2014", 50, 80, (255, 255, 0), "png", []),  # no annotations at all
    (5, "val2014", 120, 90, (0, 255, 255), "jpg", [(PERSON, 6, 9, 54)]),  # 54 = 0.5 % (crowd)
    (6, "val2014", 120, 90, (255, 0, 255), "png", [(PERSON, 60, 60, 50)]),  # big box, tiny mask
]
# Worked out by hand from the table: box area / (w * h) >= 0.005.
BOX_LABELS = {1: 1, 2: 0, 3: 1, 4: 0, 5: 1, 6: 1}
MASK_LABELS = {1: 0, 2: 0, 3: 1, 4: 0, 5: 1, 6: 0}  # 80 < 100; 21 >= 20.48; 54 >= 54; 50 < 54


def make_coco(root: Path) -> Path:
    coco = root / "coco"
    (coco / "annotations").mkdir(parents=True)
    per_subset: dict[str, dict] = {}
    ann_id = 0
    for img_id, subset, w, h, colour, fmt, anns in IMAGES:
        d = per_subset.setdefault(
            subset,
            {
                "images": [],
                "annotations": [],
                "categories": [{"id": PERSON, "name": "person"}, {"id": DOG, "name": "dog"}],
            },
        )
        fname = f"COCO_{subset}_{img_id:012d}.{fmt}"
        (coco / subset).mkdir(exist_ok=True)
        Image.new("RGB", (w, h), colour).save(coco / subset / fname)
        d["images"].append({"id": img_id, "file_name": fname, "width": w, "height": h})
        for cat, bw, bh, area in anns:
            ann_id += 1
            d["annotations"].append(
                {
                    "id": ann_id,
                    "image_id": img_id,
                    "category_id": cat,
                    "bbox": [1.0, 2.0, float(bw), float(bh)],
                    "area": float(area),
                    "iscrowd": int(img_id == 5),
                }
            )
    for subset, d in per_subset.items():
        (coco / "annotations" / f"instances_{subset}.json").write_text(json.dumps(d))
    return coco


@pytest.fixture
def coco(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("REDS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("REDS_DATA_DIR", str(tmp_path))
    return make_coco(tmp_path)


def test_labels_match_hand_computed_answer(coco: Path) -> None:
    got: dict[int, int] = {}
    got_mask: dict[int, int] = {}
    for subset in ("train2014", "val2014"):
        data = json.loads((coco / "annotations" / f"instances_{subset}.json").read_text())
        got |= person_labels(data)
        got_mask |= person_labels(data, area_source="mask")
    assert got == BOX_LABELS
    assert got_mask == MASK_LABELS


def test_loader_images_labels_and_split(coco: Path) -> None:
    ds = load_dataset("vww")
    assert ds.num_classes == 2
    assert ds.x_train.shape == (4, 96, 96, 3) and ds.x_test.shape == (2, 96, 96, 3)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.y_train.tolist() == [BOX_LABELS[i] for i in (1, 2, 3, 4)]
    assert ds.y_test.tolist() == [BOX_LABELS[i] for i in (5, 6)]
    # Solid-colour images survive decoding and resizing (JPEG within a few levels).
    for k, (_, _, _, _, colour, _, _) in enumerate(IMAGES[:4]):
        np.testing.assert_allclose(
            ds.x_train[k].mean(axis=(0, 1)), np.array(colour) / 255, atol=0.03
        )
    assert len(list((coco.parent / "cache" / "features").glob("vww-*/x_train.npy"))) == 1
    again = load_dataset("vww")
    np.testing.assert_array_equal(again.x_test, ds.x_test)
    # Streamed from the same cache: the same values, read from disk.
    disk = load_dataset("vww", stream=True)
    assert type(disk.x_train).__name__ == "DiskArray"
    np.testing.assert_array_equal(np.asarray(disk.x_train), ds.x_train)


def test_minival_split_and_mask_option(coco: Path) -> None:
    (coco / "mscoco_minival_ids.txt").write_text("2\n5\n")
    ds = load_dataset("vww", area_source="mask")
    assert ds.y_train.tolist() == [MASK_LABELS[i] for i in (1, 3, 4, 6)]
    assert ds.y_test.tolist() == [MASK_LABELS[i] for i in (2, 5)]
    assert "minival" in ds.source


def test_missing_coco_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDS_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="cocodataset.org.*REDS_DATA_DIR"):
        load_dataset("vww")
    monkeypatch.setenv("REDS_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match="no COCO 2014 annotations"):
        load_dataset("vww")
    with pytest.raises(DataError, match="no option"):
        load_dataset("vww", colour=True)
