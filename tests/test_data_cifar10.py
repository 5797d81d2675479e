"""CIFAR-10 loader: the shared archive, a folder source, and the missing-data message."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from reds_tf.data import cifar10, load_dataset
from reds_tf.errors import DataError

SHARED = cifar10.REPO_ROOT.parent / "shared" / "data" / cifar10.ARCHIVE


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No user data dir, an empty Keras cache and a private feature cache."""
    monkeypatch.delenv("REDS_DATA_DIR", raising=False)
    monkeypatch.delenv("REDS_SHARED_DATA_DIR", raising=False)
    monkeypatch.setenv("REDS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(cifar10, "KERAS_CACHE", tmp_path / "keras")
    return tmp_path


def _batch(n: int, seed: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, n).tolist()
    return pickle.dumps({b"data": data, b"labels": labels}), data, np.asarray(labels)


def test_reads_folder_layout_channel_major(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = isolated / "user" / cifar10.FOLDER
    root.mkdir(parents=True)
    expect = {}
    for i, name in enumerate([*cifar10.TRAIN_BATCHES, cifar10.TEST_BATCH]):
        raw, data, labels = _batch(4, i)
        (root / name).write_bytes(raw)
        expect[name] = (data, labels)
    monkeypatch.setenv("REDS_DATA_DIR", str(root.parent))
    ds = load_dataset("cifar10")
    assert ds.x_train.shape == (20, 32, 32, 3) and ds.x_test.shape == (4, 32, 32, 3)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert Path(ds.source) == root
    # Pixel (row 1, col 2) of image 0, green channel = byte 1024 + 1*32 + 2 of its row.
    data0, labels0 = expect["data_batch_1"]
    assert ds.x_train[0, 1, 2, 1] == np.float32(data0[0, 1024 + 32 + 2]) / np.float32(255)
    np.testing.assert_array_equal(ds.y_test, expect["test_batch"][1])
    np.testing.assert_array_equal(ds.y_train[:4], labels0)
    # The second load comes from the decoded cache.
    assert len(list((isolated / "cache").glob("cifar10-*.npz"))) == 1
    again = load_dataset("cifar10")
    np.testing.assert_array_equal(again.x_train, ds.x_train)


def test_archive_missing_batch_is_a_clear_error(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arch = isolated / "user" / cifar10.ARCHIVE
    arch.parent.mkdir()
    with tarfile.open(arch, "w:gz") as tar:
        raw = _batch(2, 0)[0]
        info = tarfile.TarInfo(f"{cifar10.FOLDER}/data_batch_1")
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
    monkeypatch.setenv("REDS_DATA_DIR", str(arch.parent))
    with pytest.raises(DataError, match="lacks data_batch_2.*REDS_DATA_DIR"):
        load_dataset("cifar10")


def test_missing_data_says_how_to_get_it(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cifar10, "REPO_ROOT", isolated / "nowhere" / "repo")

    def offline(*_a: object, **_k: object) -> None:
        raise OSError("no route to host")

    monkeypatch.setattr(cifar10.urllib.request, "urlretrieve", offline)
    with pytest.raises(DataError) as e:
        load_dataset("cifar10")
    msg = str(e.value)
    assert "download failed" in msg and cifar10.URL in msg and "REDS_DATA_DIR" in msg
    assert not list((isolated / "keras").glob("*.part"))


@pytest.mark.skipif(not SHARED.is_file(), reason=f"shared archive {SHARED} absent")
def test_reads_the_shared_archive(isolated: Path) -> None:
    ds = load_dataset("cifar10")
    assert Path(ds.source) == SHARED.resolve() or Path(ds.source) == SHARED
    assert ds.x_train.shape == (50000, 32, 32, 3) and ds.x_test.shape == (10000, 32, 32, 3)
    assert ds.x_train.dtype == np.float32 and 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    assert ds.num_classes == 10
    # The README: 5,000 train and 1,000 test images per class.
    np.testing.assert_array_equal(np.bincount(ds.y_train, minlength=10), [5000] * 10)
    np.testing.assert_array_equal(np.bincount(ds.y_test, minlength=10), [1000] * 10)
    assert 0.3 < ds.x_train[:1000].mean() < 0.7  # real images, not zeros
