"""`dataset: audio_folder`: Speech Commands' recipe on a vocabulary of one's
own (classes, split by speaker, front ends, no-noise folders, cache) and its
errors; also that the built-in set's cache key is unchanged by the shared code."""

from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np
import pytest

from reds_tf.data import load_dataset
from reds_tf.data import speech_commands as sc
from reds_tf.data.cache import cache_key
from reds_tf.errors import DataError

TRAIN, TEST, VALIDATION = ("cat", "eve", "fay"), ("ann",), ("ned",)
SPEAKERS = TRAIN + TEST + VALIDATION


def write_wav(path: Path, audio: np.ndarray, rate: int = 16000, width: int = 2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(width)
        w.setframerate(rate)
        data = np.round(np.clip(audio, -1, 1) * 32767).astype("<i2")
        w.writeframes(data.tobytes() if width == 2 else data.astype(np.int8).tobytes())


def tone(hz: float, seconds: float = 0.5, seed: int = 0) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    noise = np.random.default_rng(seed).normal(0, 0.01, len(t))
    return 0.5 * np.sin(2 * np.pi * hz * t) + noise


def make_folder(
    root: Path,
    words: dict[str, float],
    speakers: tuple[str, ...] = SPEAKERS,
    clips: int = 2,
    noise: bool = True,
) -> Path:
    """``words``: folder -> tone frequency; each speaker says each ``clips`` times."""
    for k, (word, hz) in enumerate(words.items()):
        for s in speakers:
            for n in range(clips):
                write_wav(root / word / f"{s}_nohash_{n}.wav", tone(hz, seed=k * 100 + n))
    if noise:
        rng = np.random.default_rng(9)
        write_wav(root / sc.BACKGROUND / "room.wav", rng.normal(0, 0.2, 3 * 16000))
    return root


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDS_CACHE_DIR", str(tmp_path / "cache"))


def test_speaker_names_fall_in_the_intended_splits() -> None:
    for names, split in ((TRAIN, "training"), (TEST, "testing"), (VALIDATION, "validation")):
        assert all(sc.which_set(f"{s}_nohash_0.wav") == split for s in names)


def test_classes_counts_and_speaker_split(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = make_folder(tmp_path / "kw", {"lights": 500, "music": 1200, "other": 300, "hey": 2000})
    ds = load_dataset("audio_folder", path=str(root), words=["music", "lights"], augment=1)
    assert ds.class_names == ("_silence_", "_unknown_", "music", "lights")
    assert ds.num_classes == 4 and ds.x_train.shape[1:] == (49, 10, 1)
    assert ds.x_train.dtype == np.float32 and 0 <= ds.x_train.min() and ds.x_train.max() <= 1
    per_word_train, per_word_test = len(TRAIN) * 2, len(TEST) * 2
    extra_train = math.ceil(2 * per_word_train * 0.1)
    extra_test = math.ceil(2 * per_word_test * 0.1)
    assert np.bincount(ds.y_train).tolist() == [extra_train] * 2 + [per_word_train] * 2
    assert np.bincount(ds.y_test).tolist() == [extra_test] * 2 + [per_word_test] * 2
    assert "words music, lights" in ds.source and str(root) in ds.source
    # Features are computed once (one line), then read from the cache.
    assert capsys.readouterr().out.count("computing audio_folder") == 1
    again = load_dataset("audio_folder", path=str(root), words=["music", "lights"])
    assert "computing" not in capsys.readouterr().out
    np.testing.assert_array_equal(again.x_test, ds.x_test)
    dnn = load_dataset(
        "audio_folder", path=str(root), words=["music", "lights"], frontend="dnn", augment=2
    )
    assert dnn.x_train.shape[1:] == (25, 10, 1) and len(dnn.y_train) == 2 * len(ds.y_train)


def test_without_noise_or_other_words(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_folder(tmp_path / "kw", {"on": 400, "off": 900}, noise=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="no clips of other words for the _unknown_ class.*"
                       "unknown_pct: 0"):  # fmt: skip
        load_dataset("audio_folder", path="kw", words=["on", "off"])
    ds = load_dataset("audio_folder", path="kw", words=["on", "off"], unknown_pct=0, augment=0)
    assert ds.class_names == ("_silence_", "on", "off")
    assert "no _background_noise_/: silence is zeros" in ds.source
    assert ds.source.startswith(str(tmp_path / "kw"))
    silence = ds.x_train[ds.y_train == 0]
    assert len(silence) and np.ptp(silence, axis=0).max() == 0  # all the same (digital zero)


def test_builtin_cache_key_is_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The built-in set (words = the ten) keys its features as before the
    audio_folder generalisation, so existing caches stay valid."""
    root = tmp_path / "sc"
    for w in sc.WORDS:
        write_wav(root / w / "cat_nohash_0.wav", tone(300))
    write_wav(root / sc.BACKGROUND / "n.wav", tone(50, 2))
    seen: list[Path] = []

    def fake_cache(path: Path) -> dict:
        seen.append(path)
        z = np.zeros((1, 49, 10), np.float32)
        return {"x_train": z, "y_train": np.zeros(1), "x_test": z, "y_test": np.zeros(1)}

    monkeypatch.setattr(sc, "load_npz", fake_cache)
    ds = sc.build_kws_dataset(root, name="speech_commands", augment=1, seed=0)
    folders, noise = sc.scan(root)
    before = {
        "version": sc.FEATURE_VERSION,
        "root": str(root.resolve()),
        "listing": sc.listing_signature(root, folders, noise),
        "frontend": sc.CNN_FRONTEND.to_dict(),
        "augment": 1,
        "seed": 0,
        "silence_pct": 10.0,
        "unknown_pct": 10.0,
    }
    # The cache folder is named by the key; a cache file of that name from
    # before the folders is read (and moved into the folder).
    assert seen[0].parent.name == f"speech_commands-{cache_key(before)}"
    assert seen[1].name == f"speech_commands-{cache_key(before)}.npz"
    assert ds.class_names == sc.CLASSES and ds.num_classes == 12


def _err(**options: object) -> str:
    with pytest.raises(DataError) as e:
        load_dataset("audio_folder", **options)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_errors(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "kw", {"yes": 500, "no": 900, "other": 300}, clips=1)
    assert "does not exist" in _err(path=str(tmp_path / "none"), words=["yes"])
    assert "needs the option words" in _err(path=str(root))
    assert "reserved" in _err(path=str(root), words=["yes", "_unknown_"])
    assert "lists yes more than once" in _err(path=str(root), words=["yes", "yes"])
    assert "frontend must be cnn" in _err(path=str(root), words=["yes"], frontend="big")
    assert "single class" in _err(path=str(root), words=["yes"], silence_pct=0, unknown_pct=0)
    assert "percentage 0..100" in _err(path=str(root), words=["yes"], silence_pct=200)
    msg = _err(path=str(root), words=["yes", "maybe"])
    assert "no folder for word(s) maybe (folders: _background_noise_, no, other, yes)" in msg
    (root / "maybe").mkdir()
    assert "maybe hold no .wav clip" in _err(path=str(root), words=["yes", "maybe"])
    # A word said only by training speakers has no test clip.
    for s in TRAIN:
        write_wav(root / "maybe" / f"{s}_nohash_0.wav", tone(700))
    msg = _err(path=str(root), words=["yes", "maybe"])
    assert "word(s) maybe have no clip in the testing split" in msg and "more speakers" in msg
    write_wav(root / "maybe" / "ann_nohash_0.wav", tone(700))
    (root / "yes" / "eve_nohash_0.wav").write_bytes(b"RIFF garbage")
    msg = _err(path=str(root), words=["yes", "maybe"])
    assert "cannot read" in msg and "eve_nohash_0.wav" in msg and "sox" in msg
    write_wav(root / "yes" / "eve_nohash_0.wav", tone(500), rate=8000)
    msg = _err(path=str(root), words=["yes", "maybe"])
    assert "eve_nohash_0.wav: expected mono 16-bit 16000 Hz WAV" in msg and "8000 Hz" in msg
