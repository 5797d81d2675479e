"""``dataset: audio_folder``: keyword spotting on your own recordings.

Config::

    dataset: audio_folder
    data: {path: my_keywords, words: [lights, music, stop]}

Layout (that of Speech Commands, for any vocabulary)::

    my_keywords/
      lights/<speaker>_nohash_<n>.wav     one folder per keyword in ``words``
      music/...
      stop/...
      other/..., hello/...                optional: any other folder is "unknown" speech
      _background_noise_/*.wav            optional: long recordings of background noise

Clips: 16 kHz mono 16-bit PCM WAV, cut or zero-padded to 1 s. Name them
``<speaker>_nohash_<n>.wav``: the split is Speech Commands' hash rule on the
speaker (the name before ``_nohash_``), so each speaker's clips stay in one
split: about 80 % of speakers land in training, 10 % in testing and 10 % in the
(unused) validation split. A file without ``_nohash_`` counts as its own
speaker. Every word needs clips in both training and testing: with few
speakers, record more speakers until each split has one.

Everything else is :mod:`reds_tf.data.speech_commands`' recipe: classes
``_silence_``, ``_unknown_``, then ``words`` in the order given; silence and
unknown each add ``silence_pct`` / ``unknown_pct`` % (default 10) of the
keyword clips (0 leaves the class out); unknown clips come from the folders not
in ``words``, so without such folders set ``unknown_pct: 0``. Training
augmentation (``augment`` copies, default 1; 0: clean): time shift +-100 ms and
background noise. MFCC features 49x10 (``frontend: cnn``, default) or 25x10
(``frontend: dnn``), normalised per coefficient to [0, 1]; x ``(N, frames, 10,
1)`` float32, y int64. Cached under ``<cache>/features/`` keyed by the folder
listing and the options.

Without ``_background_noise_/`` the data still loads: silence clips are digital
zeros and augmentation only shifts in time (``Dataset.source`` says so). A
device hears room noise, not zeros: record a few minutes of your setting's
background into ``_background_noise_/`` for a model that works there.
"""

from __future__ import annotations

import os

from reds_tf.data import Dataset, register
from reds_tf.data import speech_commands as sc
from reds_tf.data.features import CNN_FRONTEND, DNN_FRONTEND
from reds_tf.data.user_data import user_path
from reds_tf.errors import DataError

FRONTENDS = {"cnn": CNN_FRONTEND, "dnn": DNN_FRONTEND}
LAYOUT = "DIR/<word>/<speaker>_nohash_<n>.wav (16 kHz mono 16-bit)"


def _words(words: object) -> tuple[str, ...]:
    if words is None:
        raise DataError(
            "dataset 'audio_folder' needs the option words: the keyword folder names to "
            "classify, e.g. `data: {path: DIR, words: [yes, no]}`"
        )
    if isinstance(words, str):
        words = [words]
    if not isinstance(words, (list, tuple)) or not words:
        raise DataError(f"audio_folder option words must be a list of folder names, got {words!r}")
    bad = [w for w in words if not isinstance(w, str) or not w or w.startswith(("_", "."))]
    if bad:
        raise DataError(
            f"audio_folder option words: {bad!r} cannot be keyword folder names (names starting "
            "with _ are reserved: _silence_, _unknown_, _background_noise_)"
        )
    dup = sorted({w for w in words if words.count(w) > 1})
    if dup:
        raise DataError(f"audio_folder option words lists {', '.join(dup)} more than once")
    return tuple(words)


def _pct(value: object, option: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
        raise DataError(f"audio_folder option {option} must be a percentage 0..100, got {value!r}")
    return float(value)


@register("audio_folder")
def load(
    path: str | None = None,
    words: list[str] | None = None,
    augment: int = 1,
    seed: int = 0,
    frontend: str = "cnn",
    silence_pct: float = 10.0,
    unknown_pct: float = 10.0,
    stream: str | bool = "auto",
) -> Dataset:
    """Keyword folders of 16 kHz WAV clips (module doc: layout, split, classes)."""
    root = user_path(path, "audio_folder")
    if not root.is_dir():
        what = "is a file" if root.exists() else "does not exist"
        raise DataError(f"audio folder {root} {what}; set data.path to a folder laid out {LAYOUT}")
    kw = _words(words)
    if frontend not in FRONTENDS:
        raise DataError(
            f"audio_folder option frontend must be cnn (49x10 MFCC) or dnn (25x10), "
            f"got {frontend!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise DataError(f"audio_folder option seed must be an integer, got {seed!r}")
    silence, unknown = _pct(silence_pct, "silence_pct"), _pct(unknown_pct, "unknown_pct")
    if len(sc.kws_classes(kw, silence, unknown)) < 2:
        raise DataError(
            "audio_folder has a single class: list two or more words, or keep "
            "silence_pct / unknown_pct above 0"
        )
    folders, noise = sc.list_clips(root)
    no_folder = [w for w in kw if not (root / w).is_dir()]
    if no_folder:
        have = sorted(e.name for e in os.scandir(root) if e.is_dir()) or ["none"]
        raise DataError(
            f"{root} has no folder for word(s) {', '.join(no_folder)} (folders: "
            f"{', '.join(have)}); lay clips out as {LAYOUT} or fix data.words"
        )
    empty = [w for w in kw if w not in folders]
    if empty:
        raise DataError(
            f"word folder(s) {', '.join(str(root / w) for w in empty)} hold no .wav clip; "
            f"add clips ({LAYOUT})"
        )
    note = "" if noise else f"; no {sc.BACKGROUND}/: silence is zeros, no noise augmentation"
    return sc.build_kws_dataset(
        root,
        name="audio_folder",
        words=kw,
        frontend=FRONTENDS[frontend],
        augment=augment,
        seed=seed,
        silence_pct=silence,
        unknown_pct=unknown,
        describe=f"audio folder, words {', '.join(kw)}{note}",
        listing=(folders, noise),
        stream=stream,
    )
