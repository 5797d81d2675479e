"""`dataset: image_folder`: layout, formats, color modes, scaling, the
validation split, the decode cache and the errors (loader level: no training)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reds_tf.data import image_folder, load_dataset
from reds_tf.errors import DataError


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDS_CACHE_DIR", str(tmp_path / "cache"))


def write_image(path: Path, value: int | tuple, size: tuple[int, int] = (10, 14)) -> None:
    """A constant image of ``size`` (H, W); format from the file extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "L" if isinstance(value, int) else "RGB"
    Image.new(mode, (size[1], size[0]), value).save(path)


def make_folder(root: Path, classes: dict[str, int], test: bool = True) -> Path:
    """``classes``: name -> number of train images (test gets 2 each)."""
    exts = [".png", ".jpg", ".bmp", ".JPEG"]
    for k, (cls, n) in enumerate(classes.items()):
        for i in range(n):
            write_image(root / "train" / cls / f"im{i}{exts[i % 4]}", (40 * k, 100, 200))
        if test:
            for i in range(2):
                write_image(root / "test" / cls / f"t{i}.png", (40 * k, 100, 200))
    return root


def test_layout_labels_and_rgb_scaling(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "imgs", {"zebra": 3, "ant": 4, "moth": 2})
    (root / "train" / "ant" / "notes.txt").write_text("ignored")
    ds = load_dataset("image_folder", path=str(root), image_size=[8, 6])
    assert ds.class_names == ("ant", "moth", "zebra") and ds.num_classes == 3
    assert ds.x_train.shape == (9, 8, 6, 3) and ds.x_train.dtype == np.float32
    assert ds.y_train.tolist() == [0] * 4 + [1] * 2 + [2] * 3
    assert ds.y_test.tolist() == [0, 0, 1, 1, 2, 2] and ds.y_test.dtype == np.int64
    # Constant PNG images keep their colour through the bilinear resize, scaled by 1/255.
    np.testing.assert_allclose(ds.x_test[-1, 0, 0], np.array([0, 100, 200]) / 255, atol=1e-6)
    assert str(root) in ds.source and "8x6 rgb" in ds.source


def test_grayscale_and_square_size(tmp_path: Path) -> None:
    root = tmp_path / "g"
    for split in ("train", "test"):
        for k, cls in enumerate(("a", "b")):
            write_image(root / split / cls / "x.png", 60 * (k + 1))
            write_image(root / split / cls / "y.bmp", (60 * (k + 1),) * 3)
    ds = load_dataset("image_folder", path=str(root), image_size=5, color_mode="grayscale")
    assert ds.x_train.shape == (4, 5, 5, 1)
    np.testing.assert_allclose(ds.x_train[:, 2, 2, 0], [60 / 255] * 2 + [120 / 255] * 2, atol=1e-6)
    rgb = load_dataset("image_folder", path=str(root), image_size=[5, 5])
    assert rgb.x_train.shape == (4, 5, 5, 3)  # a grayscale file gives 3 equal channels
    np.testing.assert_allclose(rgb.x_train[0, 0, 0], [60 / 255] * 3, atol=1e-6)


def test_validation_split_is_per_class_fixed_and_seeded(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "v", {"a": 10, "b": 5}, test=False)
    ds = load_dataset("image_folder", path=str(root), image_size=[4, 4], validation_split=0.2)
    assert np.bincount(ds.y_test).tolist() == [2, 1] and np.bincount(ds.y_train).tolist() == [8, 4]
    again = load_dataset("image_folder", path=str(root), image_size=[4, 4], validation_split=0.2)
    np.testing.assert_array_equal(again.x_test, ds.x_test)
    train, test = image_folder.split_validation(
        {"a": [f"{i}" for i in range(10)]}, 0.3, seed=0, where=root
    )
    assert len(test["a"]) == 3 and sorted(train["a"] + test["a"], key=int) == [
        f"{i}" for i in range(10)
    ]
    other = image_folder.split_validation({"a": [f"{i}" for i in range(10)]}, 0.3, 1, root)
    assert other[1] != test
    assert "validation_split 0.2" in ds.source


def test_decoded_images_are_cached_and_refreshed_on_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_folder(tmp_path / "c", {"a": 2, "b": 2})
    first = load_dataset("image_folder", path=str(root), image_size=[4, 4])

    def no_decode(*_a: object) -> None:
        raise AssertionError("decoded again")

    monkeypatch.setattr(image_folder, "decode", no_decode)
    again = load_dataset("image_folder", path=str(root), image_size=[4, 4])
    np.testing.assert_array_equal(again.x_train, first.x_train)
    write_image(root / "train" / "a" / "new.png", (1, 2, 3))
    with pytest.raises(AssertionError, match="decoded again"):
        load_dataset("image_folder", path=str(root), image_size=[4, 4])


def test_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_folder(tmp_path / "rel", {"a": 1, "b": 1})
    monkeypatch.chdir(tmp_path)
    ds = load_dataset("image_folder", path="rel", image_size=[3, 3])
    assert ds.source.startswith(str(tmp_path / "rel"))


def _err(tmp_path: Path, **options: object) -> str:
    with pytest.raises(DataError) as e:
        load_dataset("image_folder", **{"image_size": [4, 4], **options})
    assert "\n" not in str(e.value)
    return str(e.value)


def test_folder_errors(tmp_path: Path) -> None:
    assert "does not exist" in _err(tmp_path, path=str(tmp_path / "none"))
    (tmp_path / "flat" / "cats").mkdir(parents=True)
    assert "has no train/ folder" in _err(tmp_path, path=str(tmp_path / "flat"))
    (tmp_path / "empty" / "train").mkdir(parents=True)
    assert "has no class folders" in _err(tmp_path, path=str(tmp_path / "empty"))
    root = make_folder(tmp_path / "f", {"a": 2, "b": 2})
    (root / "train" / "c").mkdir()
    msg = _err(tmp_path, path=str(root))
    assert "train/c hold no png/jpg/jpeg/bmp image" in msg
    (root / "train" / "c").rmdir()
    write_image(root / "test" / "d" / "x.png", 3)
    assert "has class folder(s) d that" in _err(tmp_path, path=str(root))
    for f in (root / "test" / "d").iterdir():
        f.unlink()
    (root / "test" / "d").rmdir()
    for f in (root / "test" / "b").iterdir():
        f.unlink()
    (root / "test" / "b").rmdir()
    assert "lacks class folder(s) b" in _err(tmp_path, path=str(root))


def test_option_and_file_errors(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "o", {"a": 2, "b": 2})
    assert "color_mode must be one of rgb, grayscale" in _err(
        tmp_path, path=str(root), color_mode="bgr"
    )
    for bad in ([0, 4], [4], "32", [4.5, 4]):
        assert "image_size must be [height, width]" in _err(
            tmp_path, path=str(root), image_size=bad
        )
    with pytest.raises(DataError, match="needs the option image_size.*is 10x14"):
        load_dataset("image_folder", path=str(root))
    assert "has a test/ folder, so validation_split" in _err(
        tmp_path, path=str(root), validation_split=0.2
    )
    bad = tmp_path / "b"
    make_folder(bad, {"a": 2, "b": 1}, test=False)
    assert "no test/ folder; add" in _err(tmp_path, path=str(bad))
    for frac in (0, 1, 1.5, "x"):
        assert "validation_split must be a fraction" in _err(
            tmp_path, path=str(bad), validation_split=frac
        )
    assert "train/b has 1 image; validation_split needs" in _err(
        tmp_path, path=str(bad), validation_split=0.5
    )
    (root / "train" / "a" / "broken.png").write_bytes(b"\x89PNG not really")
    msg = _err(tmp_path, path=str(root))
    assert "cannot read image" in msg and "broken.png" in msg and "re-save it" in msg
