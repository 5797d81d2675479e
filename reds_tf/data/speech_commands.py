"""Google Speech Commands v0.02 for keyword spotting (12 classes), MFCC features.

Data location (first hit wins): ``$REDS_DATA_DIR`` holding the extracted archive
(``speech_commands_v0.02/``, ``speech_commands/`` or the word folders directly)
or ``speech_commands_v0.02.tar.gz``; then ``<cache>/speech_commands_v0.02/``
(``<cache>`` = ``$REDS_CACHE_DIR`` or ``~/.cache/reds_tf``); else the archive
(2.3 GB) is downloaded to ``<cache>/downloads/`` and extracted there.

Folder layout (the archive's): one folder per word with 16 kHz mono 16-bit
``<speaker>_nohash_<n>.wav`` clips of at most 1 s, plus ``_background_noise_/``
with long noise recordings. Any layout like this is read the same way (the
offline ``synthetic_keywords`` set is written in it; ``audio_folder`` reads it
for any list of words, :func:`build_kws_dataset` ``words``).

Classes: 0 ``_silence_``, 1 ``_unknown_``, 2.. the ten words ``yes no up down
left right on off stop go``.

Split: the standard hash rule of the data set's README. A clip's speaker id is
its file name with ``_nohash_.*`` removed; ``sha1(speaker) mod 2^27`` scaled to
[0, 100) puts it in validation (< 10), testing (< 20) or training. A speaker's
clips therefore never straddle two splits, and the split does not depend on
which other files exist. ``Dataset`` has train and test only; the validation
10 % is not used.

Per split, silence and unknown each add 10 % of the number of keyword clips
(the TensorFlow speech_commands convention): unknown clips are drawn from the
other words' folders with a fixed seed; silence is background noise at a volume
drawn uniformly from [0, 1] (digital zero when the folder has no
``_background_noise_/``, which only ``audio_folder`` allows). A percentage of 0
leaves that class out.

Training augmentation (each of ``augment`` copies of the training set draws
afresh): a random time shift of up to +-100 ms (zero fill) and, with
probability 0.8, a random stretch of a ``_background_noise_`` clip at a volume
drawn from [0, 0.1]. Test clips are not augmented. ``augment=0`` gives the
clean training set (silence still gets its noise).

Features: :func:`reds_tf.data.features.mfcc` (49x10, or 25x10 for the DNN variant),
normalised per coefficient to [0, 1] with the 0.5 / 99.5 percentiles of the
training features (:func:`reds_tf.data.features.normalize`; the two vectors are kept
in the feature cache as ``norm_lo`` / ``norm_hi`` for a device front end).
Output x: (N, frames, 10, 1) float32 in [0, 1]; y: int64 class indices.

Everything is cached under ``<cache>/features/<name>-<key>/`` (``x_train.npy``,
``x_test.npy`` and ``meta.npz``: labels, ``norm_lo`` / ``norm_hi``) keyed by the
data folder's listing and the options, so later epochs and runs read the
features back. ``stream``: ``auto`` (default: when the float32 features would
exceed 2 GiB, e.g. with many ``augment`` copies), ``true`` or ``false``: read
the cached features from disk a mini-batch at a time
(:mod:`reds_tf.data.stream`); computing them the first time still holds them
in memory once.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import tarfile
import urllib.request
import wave
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from reds_tf.data import Dataset, register
from reds_tf.data.cache import cache_key, cache_root, load_npz, save_npz_atomic
from reds_tf.data.features import CNN_FRONTEND, DNN_FRONTEND, MfccConfig, fit_normalization, mfcc
from reds_tf.data.features import normalize as normalize_features
from reds_tf.data.stream import load_rows, valid_npy, want_stream, write_npy
from reds_tf.errors import DataError
from reds_tf.fsutil import atomic_dir

WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SILENCE = "_silence_"
UNKNOWN = "_unknown_"
CLASSES = (SILENCE, UNKNOWN, *WORDS)
BACKGROUND = "_background_noise_"
ARCHIVE = "speech_commands_v0.02.tar.gz"
FOLDER = "speech_commands_v0.02"
URL = "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz"

MAX_NUM_WAVS_PER_CLASS = 2**27 - 1
VALIDATION_PCT = 10.0
TESTING_PCT = 10.0
SPLIT_SHARE = {"training": "80 %", "validation": "10 %", "testing": "10 %"}
TIME_SHIFT_MS = 100.0
BACKGROUND_FREQUENCY = 0.8
BACKGROUND_VOLUME = 0.1
FEATURE_VERSION = 1  # bump when the feature recipe changes: invalidates caches
_CHUNK = 2048  # clips per MFCC chunk: bounds memory on the full data set

CONVERT = "convert it, e.g. sox in.wav -r 16000 -c 1 -b 16 out.wav (or delete it)"
HOW_TO_GET = (
    f"download {URL} (2.3 GB), extract it, and set REDS_DATA_DIR to the folder holding "
    f"{FOLDER}/ (or put the .tar.gz there); without internet use `dataset: "
    "synthetic_keywords`, an offline stand-in generated with espeak-ng"
)


def which_set(
    filename: str, validation_pct: float = VALIDATION_PCT, testing_pct: float = TESTING_PCT
) -> str:
    """'validation', 'testing' or 'training' for a clip, from its speaker id (module doc)."""
    speaker = re.sub(r"_nohash_.*$", "", Path(filename).name)
    value = int(hashlib.sha1(speaker.encode("utf-8")).hexdigest(), 16)
    pct = (value % (MAX_NUM_WAVS_PER_CLASS + 1)) * (100.0 / MAX_NUM_WAVS_PER_CLASS)
    if pct < validation_pct:
        return "validation"
    if pct < validation_pct + testing_pct:
        return "testing"
    return "training"


def looks_like_root(d: Path) -> bool:
    return (d / BACKGROUND).is_dir() and all((d / w).is_dir() for w in WORDS)


def read_wav(path: Path, samples: int = 16000, rate: int = 16000) -> np.ndarray:
    """A mono 16-bit WAV as float32 in [-1, 1), zero-padded or cut to ``samples``
    (``samples=0``: keep the full length)."""
    try:
        with wave.open(str(path), "rb") as w:
            if w.getnchannels() != 1 or w.getsampwidth() != 2 or w.getframerate() != rate:
                raise DataError(
                    f"{path}: expected mono 16-bit {rate} Hz WAV, got {w.getnchannels()} "
                    f"channel(s), {8 * w.getsampwidth()}-bit, {w.getframerate()} Hz; {CONVERT}"
                )
            raw = w.readframes(w.getnframes())
    except (OSError, EOFError, wave.Error) as e:
        raise DataError(f"cannot read {path}: {e}; {CONVERT}") from e
    x = np.frombuffer(raw, "<i2").astype(np.float32) / np.float32(32768.0)
    if samples:
        x = x[:samples]
        if len(x) < samples:
            x = np.pad(x, (0, samples - len(x)))
    return x


def list_clips(root: Path) -> tuple[dict[str, list[str]], list[str]]:
    """Folder -> sorted clip names (relative ``word/file.wav``; folders without
    clips left out), and the noise files (``[]`` without a noise folder)."""
    folders: dict[str, list[str]] = {}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        names = sorted(f for f in os.listdir(entry.path) if f.endswith(".wav"))
        if entry.name == BACKGROUND:
            continue
        if names:
            folders[entry.name] = [f"{entry.name}/{f}" for f in names]
    noise_dir = root / BACKGROUND
    noise = (
        sorted(f"{BACKGROUND}/{f}" for f in os.listdir(noise_dir) if f.endswith(".wav"))
        if noise_dir.is_dir()
        else []
    )
    return folders, noise


def scan(root: Path) -> tuple[dict[str, list[str]], list[str]]:
    """:func:`list_clips` of a complete Speech Commands folder (every word, noise)."""
    folders, noise = list_clips(root)
    missing = [w for w in WORDS if w not in folders]
    if missing or not noise:
        what = f"word folder(s) {', '.join(missing)}" if missing else f"{BACKGROUND}/*.wav"
        raise DataError(f"{root} is not a complete Speech Commands folder: no {what}; {HOW_TO_GET}")
    return folders, noise


def kws_classes(
    words: Sequence[str] = WORDS, silence_pct: float = 10.0, unknown_pct: float = 10.0
) -> tuple[str, ...]:
    """Class names in label order: silence, unknown (each unless its pct is 0), the words."""
    return (
        *((SILENCE,) if silence_pct > 0 else ()),
        *((UNKNOWN,) if unknown_pct > 0 else ()),
        *words,
    )


def select_split(
    folders: dict[str, list[str]],
    split: str,
    rng: np.random.Generator,
    silence_pct: float = 10.0,
    unknown_pct: float = 10.0,
    words: Sequence[str] = WORDS,
) -> list[tuple[str | None, int]]:
    """The clips of one split as ``(relative path or None for silence, label)``:
    all keyword clips, then ``ceil(pct% * keywords)`` unknown and silence entries
    (labels: :func:`kws_classes`). Every word needs a clip in the split."""
    classes = kws_classes(words, silence_pct, unknown_pct)
    items: list[tuple[str | None, int]] = []
    pool: list[str] = []
    for folder, files in folders.items():
        mine = [f for f in files if which_set(f) == split]
        if folder in words:
            label = classes.index(folder)
            items += [(f, label) for f in mine]
        else:
            pool += mine
    n_words = len(items)
    if n_words == 0:
        raise DataError(f"the {split} split has no keyword clips (too few speakers?)")
    present = {lab for _, lab in items}
    absent = [w for w in words if classes.index(w) not in present]
    if absent:
        raise DataError(
            f"word(s) {', '.join(absent)} have no clip in the {split} split: the split is by "
            "speaker (the file name before _nohash_) and put none of their speakers there; "
            f"add clips from more speakers (about {SPLIT_SHARE[split]} of speakers land in it)"
        )
    n_unknown = math.ceil(n_words * unknown_pct / 100)
    if n_unknown and not pool:
        raise DataError(
            f"the {split} split has no clips of other words for the {UNKNOWN} class; add "
            "folders of words outside the keyword list, or set unknown_pct: 0 to leave the "
            "class out"
        )
    pick = rng.choice(len(pool), size=min(n_unknown, len(pool)), replace=False) if pool else []
    if n_unknown:
        items += [(pool[i], classes.index(UNKNOWN)) for i in sorted(pick)]
    if silence_pct > 0:
        items += [(None, classes.index(SILENCE))] * math.ceil(n_words * silence_pct / 100)
    return items


def _noise_stretch(noise: Sequence[np.ndarray], rng: np.random.Generator, n: int) -> np.ndarray:
    if not noise:  # a folder without _background_noise_ (audio_folder): digital silence
        return np.zeros(n, np.float32)
    clip = noise[int(rng.integers(len(noise)))]
    if len(clip) <= n:
        return np.resize(clip, n)
    start = int(rng.integers(0, len(clip) - n + 1))
    return clip[start : start + n]


def render_clips(
    root: Path,
    items: Sequence[tuple[str | None, int]],
    noise: Sequence[np.ndarray],
    rng: np.random.Generator,
    *,
    augment: bool,
    samples: int = 16000,
) -> np.ndarray:
    """Audio (len(items), samples) float32 for a list of split items, augmented or not."""
    out = np.zeros((len(items), samples), np.float32)
    max_shift = int(round(samples * TIME_SHIFT_MS / 1000))
    for i, (rel, _) in enumerate(items):
        if rel is None:  # silence: noise only, any volume
            out[i] = rng.uniform(0, 1) * _noise_stretch(noise, rng, samples)
            continue
        x = read_wav(root / rel, samples)
        if augment:
            shift = int(rng.integers(-max_shift, max_shift + 1))
            if shift > 0:
                x = np.concatenate([np.zeros(shift, np.float32), x[:-shift]])
            elif shift < 0:
                x = np.concatenate([x[-shift:], np.zeros(-shift, np.float32)])
            if noise and rng.uniform() < BACKGROUND_FREQUENCY:
                x = x + rng.uniform(0, BACKGROUND_VOLUME) * _noise_stretch(noise, rng, samples)
        out[i] = x
    return np.clip(out, -1.0, 1.0)


def _features(
    root: Path,
    items: Sequence[tuple[str | None, int]],
    noise: Sequence[np.ndarray],
    rng: np.random.Generator,
    frontend: MfccConfig,
    augment: bool,
) -> np.ndarray:
    feats = np.empty((len(items), *frontend.output_shape), np.float32)
    for s in range(0, len(items), _CHUNK):
        audio = render_clips(root, items[s : s + _CHUNK], noise, rng, augment=augment)
        feats[s : s + _CHUNK] = mfcc(audio, frontend)
    return feats


def listing_signature(root: Path, folders: dict[str, list[str]], noise: list[str]) -> str:
    """Hash of every clip's name and size: a changed folder means new features."""
    h = hashlib.sha1()
    for rel in [*noise, *(f for files in folders.values() for f in files)]:
        h.update(rel.encode())
        h.update(str(os.stat(root / rel).st_size).encode())
    return h.hexdigest()


def build_kws_dataset(
    root: Path,
    *,
    name: str,
    words: Sequence[str] = WORDS,
    frontend: MfccConfig = CNN_FRONTEND,
    augment: int = 1,
    seed: int = 0,
    silence_pct: float = 10.0,
    unknown_pct: float = 10.0,
    describe: str = "Speech Commands",
    listing: tuple[dict[str, list[str]], list[str]] | None = None,
    log: Callable[[str], None] = print,
    stream: str | bool = "auto",
) -> Dataset:
    """Features of a Speech-Commands-layout folder as a :class:`Dataset` (module doc).

    ``words``: the keyword folders (classes :func:`kws_classes`); ``augment``:
    number of independently augmented copies of the training set (0: clean);
    ``listing``: :func:`list_clips` of ``root`` already checked by the caller
    (default: :func:`scan`, which requires the complete Speech Commands set).
    Shapes: x (N, frames, coeffs, 1) float32 in [0, 1], y (N,) int64.
    """
    if isinstance(augment, bool) or not isinstance(augment, int) or augment < 0:
        raise DataError(f"augment must be an integer >= 0, got {augment!r}")
    root = Path(root)
    words = tuple(words)
    folders, noise_files = listing if listing is not None else scan(root)
    options = {
        "version": FEATURE_VERSION,
        "root": str(root.resolve()),
        "listing": listing_signature(root, folders, noise_files),
        "frontend": frontend.to_dict(),
        "augment": augment,
        "seed": seed,
        "silence_pct": silence_pct,
        "unknown_pct": unknown_pct,
    }
    if words != WORDS:  # the built-in set's key stays as it was
        options["words"] = list(words)
    cache = cache_root() / "features" / f"{name}-{cache_key(options)}"
    arrays = load_npz(cache / "meta.npz")
    f, c = frontend.output_shape
    if arrays is not None:
        n = {k: len(arrays[f"y_{k}"]) for k in ("train", "test")}
        if not all(valid_npy(cache / f"x_{k}.npy", (n[k], f, c), np.float32) for k in n):
            arrays = None
    legacy = load_npz(cache.parent / f"{cache.name}.npz") if arrays is None else None
    if legacy is not None:
        # A cache from before the .npy files: the same features, moved over.
        for k in ("train", "test"):
            x = legacy.pop(f"x_{k}")
            write_npy(cache / f"x_{k}.npy", x.shape, np.float32, [x])
        save_npz_atomic(cache / "meta.npz", **legacy)
        arrays = legacy
    if arrays is None:
        log(f"data: computing {name} MFCC features once (cached in {cache.parent})")
        noise = [read_wav(root / f, samples=0) for f in noise_files]
        splits = {}
        for k, split in enumerate(("training", "testing")):
            rng = np.random.default_rng([seed, k])
            items = select_split(folders, split, rng, silence_pct, unknown_pct, words)
            labels = np.asarray([lab for _, lab in items], np.int64)
            if split == "training":
                copies = [
                    _features(root, items, noise, rng, frontend, augment=True)
                    for _ in range(augment)
                ]
                if not copies:
                    copies = [_features(root, items, noise, rng, frontend, augment=False)]
                splits[split] = (np.concatenate(copies), np.tile(labels, len(copies)))
            else:
                splits[split] = (
                    _features(root, items, noise, rng, frontend, augment=False),
                    labels,
                )
        lo, hi = fit_normalization(splits["training"][0])
        for k, split in (("train", "training"), ("test", "testing")):
            x = normalize_features(splits[split][0], lo, hi)
            write_npy(cache / f"x_{k}.npy", x.shape, np.float32, [x])
        arrays = {
            "y_train": splits["training"][1],
            "y_test": splits["testing"][1],
            "norm_lo": lo,
            "norm_hi": hi,
        }
        save_npz_atomic(cache / "meta.npz", **arrays)  # last: it marks the cache complete
        del splits
    n_values = sum(len(arrays[f"y_{k}"]) for k in ("train", "test")) * f * c
    streaming = want_stream(stream, n_values, name)
    x = {}
    for k in ("train", "test"):
        rows = load_rows(cache / f"x_{k}.npy", streaming)
        x[k] = rows.reshape(len(rows), f, c, 1)
    classes = kws_classes(words, silence_pct, unknown_pct)
    return Dataset(
        name,
        x["train"],
        arrays["y_train"].astype(np.int64),
        x["test"],
        arrays["y_test"].astype(np.int64),
        num_classes=len(classes),
        source=f"{root} ({describe}; MFCC {f}x{c}, per-coefficient [0,1]; augment={augment})",
        class_names=classes,
    )


def _extract(archive: Path, dest: Path) -> Path:
    try:
        with atomic_dir(dest) as tmp, tarfile.open(archive, "r:gz") as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, filter="data")
            else:  # Python < 3.11.4: members are checked by hand
                for m in tar.getmembers():
                    if m.name.startswith("/") or ".." in Path(m.name).parts:
                        raise DataError(f"{archive}: unsafe member path {m.name}")
                tar.extractall(tmp)
    except (OSError, tarfile.TarError, EOFError) as e:
        raise DataError(f"cannot extract {archive}: {e}; {HOW_TO_GET}") from e
    if not looks_like_root(dest):
        raise DataError(f"{archive} does not hold the Speech Commands folders; {HOW_TO_GET}")
    return dest


def find_root(download: bool = True) -> Path:
    """The data folder (module doc: search order); extracts or downloads if needed."""
    env = os.environ.get("REDS_DATA_DIR")
    base = [Path(env).expanduser()] if env else []
    for d in base:
        for cand in (d / FOLDER, d / "speech_commands", d):
            if looks_like_root(cand):
                return cand
    extracted = cache_root() / FOLDER
    if looks_like_root(extracted):
        return extracted
    for archive in [*(d / ARCHIVE for d in base), cache_root() / "downloads" / ARCHIVE]:
        if archive.is_file():
            return _extract(archive, extracted)
    if not download:
        raise DataError(f"Speech Commands v0.02 not found; {HOW_TO_GET}")
    target = cache_root() / "downloads" / ARCHIVE
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    try:
        urllib.request.urlretrieve(URL, tmp)
        os.replace(tmp, target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise DataError(
            f"Speech Commands v0.02 not found and the download failed ({e}); {HOW_TO_GET}"
        ) from e
    return _extract(target, extracted)


@register("speech_commands")
def load(augment: int = 1, seed: int = 0, stream: str | bool = "auto") -> Dataset:
    """Speech Commands v0.02, 49x10 MFCC (CNN / DS-CNN input)."""
    return build_kws_dataset(
        find_root(),
        name="speech_commands",
        frontend=CNN_FRONTEND,
        augment=augment,
        seed=seed,
        stream=stream,
    )


@register("speech_commands_25x10")
def load_dnn(augment: int = 1, seed: int = 0, stream: str | bool = "auto") -> Dataset:
    """Speech Commands v0.02, 25x10 MFCC (40 ms stride: the DNN's 250 inputs)."""
    return build_kws_dataset(
        find_root(),
        name="speech_commands_25x10",
        frontend=DNN_FRONTEND,
        augment=augment,
        seed=seed,
        stream=stream,
    )
