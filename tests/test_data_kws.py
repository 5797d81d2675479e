"""Keyword spotting data: the hash split, the synthetic set's classes and counts,
augmentation, the feature cache and the missing-data messages."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from reds_tf.data import load_dataset
from reds_tf.data import speech_commands as sc
from reds_tf.data import synthetic_keywords as sk
from reds_tf.errors import DataError

pytestmark = pytest.mark.skipif(
    not sk.shutil.which("espeak-ng") or not sk.shutil.which("sox"),
    reason="espeak-ng and sox are not installed (make setup installs them)",
)


def test_split_is_deterministic_and_groups_speakers() -> None:
    assert sc.which_set("yes/0a7c2a8d_nohash_0.wav") == sc.which_set("no/0a7c2a8d_nohash_4.wav")
    rng = np.random.default_rng(0)
    speakers = [f"{v:08x}" for v in rng.integers(0, 2**32, 6000)]
    sets = [sc.which_set(f"go/{s}_nohash_0.wav") for s in speakers]
    assert sets == [sc.which_set(f"stop/{s}_nohash_1.wav") for s in speakers]
    frac = {k: sets.count(k) / len(sets) for k in ("training", "validation", "testing")}
    assert abs(frac["training"] - 0.8) < 0.02, frac
    assert abs(frac["validation"] - 0.1) < 0.015 and abs(frac["testing"] - 0.1) < 0.015, frac


def test_split_agrees_with_the_archives_lists() -> None:
    # The first entries of the archive's validation_list.txt and testing_list.txt.
    assert sc.which_set("right/a69b9b3e_nohash_0.wav") == "validation"
    assert sc.which_set("right/bb05582b_nohash_3.wav") == "testing"


def pick_speakers() -> tuple[tuple[str, str], ...]:
    """3 training, 1 testing and 1 validation voice+variant speaker (by the hash rule)."""
    want = {"training": 3, "testing": 1, "validation": 1}
    out = []
    for voice in sk.english_voices():
        for variant in ("m1", "f2", "m3", "f4", "klatt", "croak", "m5", "f1"):
            s = sc.which_set(f"{sk.speaker_id(voice, variant)}_nohash_0.wav")
            if want[s] > 0:
                want[s] -= 1
                out.append((voice, variant))
    assert not any(want.values()), "not enough speakers to cover the three splits"
    return tuple(out)


@pytest.fixture(scope="module")
def tiny_synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple, Path]:
    cache = tmp_path_factory.mktemp("kws_cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("REDS_CACHE_DIR", str(cache))
    speakers = pick_speakers()
    root = sk.generate(
        sk.SynthSpec(speakers=speakers, unknown_per_speaker=4, repeats=2, noise_seconds=5)
    )
    yield root, speakers, cache
    mp.undo()


def test_synthetic_layout_and_generation_record(tiny_synth: tuple) -> None:
    root, speakers, _ = tiny_synth
    info = json.loads((root / "generation.json").read_text())
    assert "SYNTHETIC" in info["what"] and info["clips"] == len(speakers) * (10 * 2 + 4)
    assert info["seconds"] > 0
    for w in sc.WORDS:
        files = sorted(p.name for p in (root / w).glob("*.wav"))
        assert len(files) == 2 * len(speakers)
    assert len(list((root / sc.BACKGROUND).glob("*.wav"))) == 6
    x = sc.read_wav(root / "yes" / f"{sk.speaker_id(*speakers[0])}_nohash_1.wav")
    assert x.shape == (16000,) and 0.2 < np.abs(x).max() <= 1.0


def test_synthetic_dataset_has_all_classes_with_expected_counts(
    tiny_synth: tuple, monkeypatch
) -> None:
    root, speakers, cache = tiny_synth
    monkeypatch.setenv("REDS_CACHE_DIR", str(cache))
    ds = load_dataset(
        "synthetic_keywords",
        speakers=speakers,
        unknown_per_speaker=4,
        repeats=2,
        noise_seconds=5,
        augment=2,
    )
    assert ds.num_classes == 12 and "SYNTHETIC" in ds.source
    assert ds.x_train.shape[1:] == (49, 10, 1) and ds.x_train.dtype == np.float32
    assert ds.x_train.min() >= 0 and ds.x_train.max() <= 1
    # Expected: 3 training speakers x 2 repeats per word, 10 % unknown and silence
    # (rounded up), all twice (augment=2); 1 testing speaker.
    per_word_train, per_word_test = 3 * 2, 1 * 2
    extra_train = math.ceil(10 * per_word_train * 0.1)
    extra_test = math.ceil(10 * per_word_test * 0.1)
    assert (
        np.bincount(ds.y_train, minlength=12).tolist()
        == [2 * extra_train] * 2 + [2 * per_word_train] * 10
    )
    assert np.bincount(ds.y_test, minlength=12).tolist() == [extra_test] * 2 + [per_word_test] * 10
    # Train and test clips come from disjoint speakers.
    items = {
        s: sc.select_split(sc.scan(root)[0], s, np.random.default_rng(0))
        for s in ("training", "testing")
    }
    names = {s: {Path(p).name.split("_nohash_")[0] for p, _ in v if p} for s, v in items.items()}
    assert names["training"] and names["testing"] and not names["training"] & names["testing"]
    # The DNN variant: 25x10.
    dnn = load_dataset(
        "synthetic_keywords_25x10",
        speakers=speakers,
        unknown_per_speaker=4,
        repeats=2,
        noise_seconds=5,
        augment=0,
    )
    assert dnn.x_train.shape[1:] == (25, 10, 1) and len(dnn.y_train) == len(ds.y_train) // 2


def test_augmentation_shift_noise_and_feature_cache(tiny_synth: tuple, monkeypatch) -> None:
    root, _, cache = tiny_synth
    monkeypatch.setenv("REDS_CACHE_DIR", str(cache))
    folders, noise_files = sc.scan(root)
    noise = [sc.read_wav(root / f, samples=0) for f in noise_files]
    items = [(f, 2) for f in folders["yes"][:6]]
    clean = sc.render_clips(root, items, noise, np.random.default_rng(1), augment=False)
    aug = sc.render_clips(root, items, noise, np.random.default_rng(1), augment=True)
    lags = []
    np.testing.assert_array_equal(clean[0], sc.read_wav(root / items[0][0]))
    for c, a in zip(clean, aug, strict=True):
        xc = np.correlate(a, c, mode="full")
        lags.append(int(np.argmax(xc)) - (len(c) - 1))
    assert all(abs(lag) <= 1600 for lag in lags) and any(lag != 0 for lag in lags), lags
    assert not np.array_equal(clean, aug)
    # Features are computed once, then read back from the cache.
    lines: list[str] = []
    first = sc.build_kws_dataset(root, name="t", augment=1, log=lines.append)
    assert len(lines) == 1 and "computing" in lines[0]
    again = sc.build_kws_dataset(root, name="t", augment=1, log=lines.append)
    assert len(lines) == 1
    np.testing.assert_array_equal(again.x_train, first.x_train)
    # Streamed from the same cache files: the same features, read from disk.
    disk = sc.build_kws_dataset(root, name="t", augment=1, log=lines.append, stream=True)
    assert len(lines) == 1 and disk.x_train.shape == first.x_train.shape
    np.testing.assert_array_equal(np.asarray(disk.x_train), first.x_train)


def test_speech_commands_missing_says_how_to_get_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("REDS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("REDS_DATA_DIR", str(tmp_path / "empty"))

    def offline(*_a: object, **_k: object) -> None:
        raise OSError("no route to host")

    monkeypatch.setattr(sc.urllib.request, "urlretrieve", offline)
    with pytest.raises(DataError) as e:
        load_dataset("speech_commands")
    msg = str(e.value)
    assert "download failed" in msg and sc.URL in msg and "REDS_DATA_DIR" in msg
    assert "synthetic_keywords" in msg
    assert not list((tmp_path / "cache").rglob("*.part"))


def test_incomplete_folder_and_missing_tools(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "yes").mkdir()
    with pytest.raises(DataError, match="not a complete Speech Commands folder.*no word folder"):
        sc.build_kws_dataset(tmp_path, name="x")
    monkeypatch.setattr(sk.shutil, "which", lambda _t: None)
    with pytest.raises(DataError, match="apt-get install espeak-ng sox"):
        sk.generate(sk.SynthSpec(speakers=(("en-us", "m1"),)), root=tmp_path / "gen")
    assert not (tmp_path / "gen").exists()


def test_speech_commands_from_data_dir_and_archive(
    tiny_synth: tuple, tmp_path: Path, monkeypatch
) -> None:
    """The real loader's search order on a Speech-Commands-layout folder: the folder
    under $REDS_DATA_DIR, then the .tar.gz there (extracted once into the cache)."""
    import tarfile

    root, _, _ = tiny_synth
    monkeypatch.setenv("REDS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("REDS_DATA_DIR", str(root))
    ds = load_dataset("speech_commands", augment=0)
    assert ds.source.startswith(str(root)) and ds.x_test.shape[1:] == (49, 10, 1)

    archive_dir = tmp_path / "dl"
    archive_dir.mkdir()
    with tarfile.open(archive_dir / sc.ARCHIVE, "w:gz") as tar:
        for p in sorted(root.iterdir()):
            if p.is_dir():
                tar.add(p, arcname=p.name)
    monkeypatch.setenv("REDS_DATA_DIR", str(archive_dir))
    from_archive = load_dataset("speech_commands", augment=0)
    extracted = tmp_path / "cache" / sc.FOLDER
    assert sc.looks_like_root(extracted) and from_archive.source.startswith(str(extracted))
    np.testing.assert_array_equal(from_archive.y_test, ds.y_test)
    np.testing.assert_allclose(from_archive.x_test, ds.x_test, atol=1e-6)


def test_synthetic_seed_reaches_generation(monkeypatch) -> None:
    """`data: {seed: N}` must change what is generated, not only the split."""
    seen = []

    class Stop(Exception):
        pass

    def fake_generate(spec):
        seen.append(spec)
        raise Stop

    monkeypatch.setattr(sk, "generate", fake_generate)
    for seed in (0, 7):
        with pytest.raises(Stop):
            load_dataset("synthetic_keywords", seed=seed)
    assert [s.seed for s in seen] == [0, 7]
    with pytest.raises(DataError, match="option seed must be an integer >= 0"):
        load_dataset("synthetic_keywords", seed=-1)
