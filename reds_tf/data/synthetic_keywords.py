"""``synthetic_keywords``: an offline keyword-spotting stand-in made of SYNTHETIC speech.

It is not Speech Commands and accuracies on it are not comparable with the
paper's: the words are spoken by the espeak-ng formant synthesiser, which is far
more regular than people recorded on their own microphones.

Generated on first use with Debian's ``espeak-ng`` and ``sox`` into
``<cache>/synthetic_keywords/<key>/`` (``<cache>`` = ``$REDS_CACHE_DIR`` or
``~/.cache/reds_tf``), in the Speech Commands folder layout, so exactly the same
loader, split rule and MFCC front end (:mod:`reds_tf.data.speech_commands`)
read it:

- speakers: every English espeak-ng voice (MBROLA voices need a separate
  package and are skipped) combined with every voice variant (m1..m8, f1..f5,
  klatt, croak, whisper, ...; ``variants_per_voice`` draws fewer with a fixed
  seed): espeak-ng 1.51 on Debian 12 has 8 x 101 = 808; the speaker id
  in the file names is a hash of ``voice+variant``, so the hash split keeps a
  speaker in one split (different variants of one voice share its
  pronunciation rules, so test speakers are only partly unseen);
- each speaker says each of the ten keywords ``repeats`` times and
  ``unknown_per_speaker`` other words (the data set's auxiliary words), each at
  a random speed (120-220 words/min) and pitch (20-80);
- every clip: resampled to 16 kHz by sox, silence trimmed, its energy centre
  put at 0.5 s +- 100 ms of a 1 s clip (as Speech Commands clips are cut around
  the loudest part), peak gain 0.25-0.9, mixed with a stretch of generated
  background noise at 15-40 dB SNR;
- ``_background_noise_/``: six generated 30 s noises (white, pink, brown, mains
  hum, fan-like, babble of synthetic voices) for the loader's augmentation and
  silence class.

Generation runs in ``workers`` parallel pipelines and writes ``generation.json``
(parameters, counts, seconds taken, espeak-ng version) and ``README.txt``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import wave
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from hashlib import sha1
from pathlib import Path

import numpy as np

from reds_tf.data import Dataset, register
from reds_tf.data.cache import cache_key, cache_root
from reds_tf.data.features import CNN_FRONTEND, DNN_FRONTEND
from reds_tf.data.speech_commands import BACKGROUND, WORDS, build_kws_dataset
from reds_tf.errors import DataError
from reds_tf.fsutil import atomic_dir, write_json_atomic, write_text_atomic

# The auxiliary words of Speech Commands v0.02 (the "unknown" class there too).
UNKNOWN_WORDS = (
    "bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow",
    "backward", "forward", "follow", "learn", "visual",
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
)  # fmt: skip
RATE = 16000
GENERATOR_VERSION = 2  # part of the cache key: bump when the recipe changes
HOW_TO_INSTALL = (
    "synthetic_keywords needs Debian's espeak-ng and sox: sudo apt-get install espeak-ng sox"
)


@dataclass(frozen=True)
class SynthSpec:
    """What to generate. ``speakers`` (pairs ``(voice, variant)``) overrides the
    voice x variant draw; tests use it for a tiny set."""

    variants_per_voice: int | None = None  # None: every variant
    repeats: int = 1
    unknown_per_speaker: int = 3
    seed: int = 0
    speakers: tuple[tuple[str, str], ...] | None = None
    noise_seconds: int = 30
    workers: int = 2  # parallel espeak-ng | sox pipelines (not part of the cache key)


def _run(cmd: Sequence[str], **kw: object) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, check=True, **kw)  # type: ignore[call-overload]
    except FileNotFoundError as e:
        raise DataError(f"{cmd[0]} not found; {HOW_TO_INSTALL}") from e
    except subprocess.CalledProcessError as e:
        raise DataError(
            f"{' '.join(cmd)} failed: {e.stderr.decode(errors='replace').strip()}"
        ) from e


def check_tools() -> str:
    """espeak-ng's version line; DataError if espeak-ng or sox is missing."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise DataError(f"{tool} not found; {HOW_TO_INSTALL}")
    return _run(["espeak-ng", "--version"]).stdout.decode().strip()


def english_voices() -> list[str]:
    """espeak-ng's English voices (language codes), without the MBROLA ones."""
    out = _run(["espeak-ng", "--voices=en"]).stdout.decode().splitlines()[1:]
    voices = []
    for line in out:
        cols = line.split()
        if len(cols) >= 5 and cols[1].startswith("en") and not cols[4].startswith("mb/"):
            if cols[1] not in voices:
                voices.append(cols[1])
    return voices


def voice_variants() -> list[str]:
    """espeak-ng's voice variants (file names under ``!v/``)."""
    out = _run(["espeak-ng", "--voices=variant"]).stdout.decode().splitlines()[1:]
    names = []
    for line in out:
        cols = line.split()
        path = next((c for c in cols if c.startswith("!v/")), None)
        if path:
            names.append(path[3:])
    return sorted(set(names))


def speaker_id(voice: str, variant: str) -> str:
    return sha1(f"{voice}+{variant}".encode()).hexdigest()[:8]


def choose_speakers(spec: SynthSpec) -> list[tuple[str, str]]:
    if spec.speakers is not None:
        return [tuple(s) for s in spec.speakers]  # type: ignore[misc]
    voices, variants = english_voices(), voice_variants()
    if not voices or not variants:
        raise DataError(f"espeak-ng lists no English voices or variants; {HOW_TO_INSTALL}")
    rng = np.random.default_rng([spec.seed, 1])
    k = (
        len(variants)
        if spec.variants_per_voice is None
        else min(spec.variants_per_voice, len(variants))
    )
    return [
        (v, variants[i])
        for v in voices
        for i in sorted(rng.choice(len(variants), k, replace=False))
    ]


def synthesize(text: str, voice: str, variant: str, speed: int, pitch: int) -> np.ndarray:
    """espeak-ng -> sox (16 kHz mono 16-bit) -> float32 samples in [-1, 1)."""
    espeak = subprocess.Popen(
        [
            "espeak-ng",
            "-v",
            f"{voice}+{variant}",
            "-s",
            str(speed),
            "-p",
            str(pitch),
            "--stdout",
            text,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        sox = _run(
            [
                "sox",
                "-t",
                "wav",
                "-",
                "-t",
                "raw",
                "-e",
                "signed",
                "-b",
                "16",
                "-c",
                "1",
                "-r",
                str(RATE),
                "-",
            ],
            stdin=espeak.stdout,
        )
    finally:
        if espeak.stdout:
            espeak.stdout.close()
        espeak.wait()
    return np.frombuffer(sox.stdout, "<i2").astype(np.float32) / np.float32(32768)


def write_wav(path: Path, x: np.ndarray) -> None:
    pcm = np.clip(np.round(x * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.tobytes())


def _normalise_peak(x: np.ndarray, peak: float = 0.5) -> np.ndarray:
    m = float(np.abs(x).max())
    return (x * (peak / m)).astype(np.float32) if m > 0 else x.astype(np.float32)


def make_noises(
    rng: np.random.Generator, seconds: int, babble: list[np.ndarray]
) -> dict[str, np.ndarray]:
    """Six background noises of ``seconds`` s at 16 kHz (float32, peak 0.5)."""
    n = seconds * RATE
    t = np.arange(n) / RATE
    white = rng.standard_normal(n)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / RATE)
    f[0] = f[1]
    pink = np.fft.irfft(spec / np.sqrt(f), n)
    brown = np.cumsum(rng.standard_normal(n))
    brown -= np.convolve(brown, np.ones(801) / 801, mode="same")  # remove the slow drift
    hum = sum(np.sin(2 * np.pi * 50 * h * t + rng.uniform(0, 6.3)) / h for h in range(1, 8))
    hum = hum + 0.05 * white
    low = np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) * (f < 600), n)
    fan = low * (1 + 0.3 * np.sin(2 * np.pi * 0.7 * t)) + 0.1 * np.sin(2 * np.pi * 120 * t)
    mix = np.zeros(n)
    for clip in babble:  # overlapping talkers at random offsets, looped to fill
        start = int(rng.integers(0, RATE * 2))
        rolled = np.roll(np.resize(clip, n), start)
        mix += rolled * rng.uniform(0.5, 1.0)
    out = {
        "white_noise": white,
        "pink_noise": pink,
        "brown_noise": brown,
        "mains_hum": hum,
        "fan": fan,
        "babble": mix + 0.01 * white,
    }
    return {k: _normalise_peak(v) for k, v in out.items()}


def _place(
    speech: np.ndarray, rng: np.random.Generator, noise: list[np.ndarray]
) -> tuple[np.ndarray, bool]:
    """Trim silence, centre in a 1 s clip (+-100 ms jitter), set gain, add noise.

    Speech Commands clips are 1 s cut around the loudest part of a recording;
    centring the word's energy mimics that."""
    loud = np.flatnonzero(np.abs(speech) > 0.02 * max(float(np.abs(speech).max()), 1e-6))
    if len(loud):
        speech = speech[max(0, loud[0] - 160) : loud[-1] + 160]
    truncated = len(speech) > RATE
    speech = speech[:RATE]
    clip = np.zeros(RATE, np.float32)
    energy = speech.astype(np.float64) ** 2
    centre = float(np.sum(np.arange(len(speech)) * energy) / max(float(energy.sum()), 1e-12))
    target = RATE / 2 + rng.uniform(-0.1, 0.1) * RATE
    off = int(np.clip(round(target - centre), 0, RATE - len(speech)))
    clip[off : off + len(speech)] = _normalise_peak(speech, rng.uniform(0.25, 0.9))
    src = noise[int(rng.integers(len(noise)))]
    start = int(rng.integers(0, len(src) - RATE + 1))
    bg = src[start : start + RATE]
    p_speech = float(np.mean(clip[off : off + len(speech)] ** 2)) if len(speech) else 0.0
    p_noise = float(np.mean(bg**2)) or 1.0
    snr_db = rng.uniform(15, 40)
    clip = clip + bg * np.sqrt(p_speech / p_noise / 10 ** (snr_db / 10))
    return np.clip(clip, -1, 1).astype(np.float32), truncated


def _jobs(spec: SynthSpec, speakers: list[tuple[str, str]]) -> list[tuple[str, str, str, str]]:
    """(folder, file name, voice, variant) for every clip, in a fixed order."""
    rng = np.random.default_rng([spec.seed, 2])
    jobs = []
    for voice, variant in speakers:
        sid = speaker_id(voice, variant)
        for word in WORDS:
            jobs += [(word, f"{sid}_nohash_{r}.wav", voice, variant) for r in range(spec.repeats)]
        pick = rng.choice(
            len(UNKNOWN_WORDS), min(spec.unknown_per_speaker, len(UNKNOWN_WORDS)), replace=False
        )
        jobs += [(UNKNOWN_WORDS[i], f"{sid}_nohash_0.wav", voice, variant) for i in sorted(pick)]
    return jobs


def generate(
    spec: SynthSpec = SynthSpec(), root: Path | None = None, log: Callable[[str], None] = print
) -> Path:
    """Generate (once) and return the data folder for ``spec`` (module doc)."""
    version = check_tools()
    speakers = choose_speakers(spec)
    if not speakers:
        raise DataError("synthetic_keywords: no speakers to generate")
    what = {k: v for k, v in asdict(spec).items() if k != "workers"}
    key = cache_key(
        {"gen": GENERATOR_VERSION, "espeak": version, "spec": what, "speakers": speakers}
    )
    dest = (root or cache_root() / "synthetic_keywords") / key
    if (dest / "generation.json").is_file():
        return dest
    n_clips = len(speakers) * (
        10 * spec.repeats + min(spec.unknown_per_speaker, len(UNKNOWN_WORDS))
    )
    log(f"data: generating synthetic_keywords once: {n_clips} clips with espeak-ng into {dest}")
    t0 = time.perf_counter()
    rng = np.random.default_rng([spec.seed, 3])
    with atomic_dir(dest) as tmp:
        babble_voices = speakers[:: max(1, len(speakers) // 6)][:6]
        babble = [
            synthesize(" ".join(rng.choice(UNKNOWN_WORDS, 12)), v, var, 160, 50)
            for v, var in babble_voices
        ]
        noises = make_noises(rng, spec.noise_seconds, babble)
        (tmp / BACKGROUND).mkdir()
        for name, x in noises.items():
            write_wav(tmp / BACKGROUND / f"{name}.wav", x)
        noise_list = list(noises.values())
        jobs = _jobs(spec, speakers)
        for folder in sorted({j[0] for j in jobs}):
            (tmp / folder).mkdir()

        def one(i: int) -> bool:
            folder, fname, voice, variant = jobs[i]
            r = np.random.default_rng([spec.seed, 4, i])
            speech = synthesize(
                folder, voice, variant, int(r.integers(120, 221)), int(r.integers(20, 81))
            )
            clip, truncated = _place(speech, r, noise_list)
            write_wav(tmp / folder / fname, clip)
            return truncated

        with ThreadPoolExecutor(max_workers=max(1, spec.workers)) as pool:
            truncated = sum(pool.map(one, range(len(jobs))))
        seconds = time.perf_counter() - t0
        counts = {f: sum(1 for j in jobs if j[0] == f) for f in sorted({j[0] for j in jobs})}
        write_json_atomic(
            tmp / "generation.json",
            {
                "what": "SYNTHETIC speech (espeak-ng formant synthesis), not Speech Commands",
                "espeak_ng": version,
                "spec": asdict(spec),
                "speakers": [f"{v}+{var}" for v, var in speakers],
                "clips": len(jobs),
                "clips_per_folder": counts,
                "truncated_to_1s": int(truncated),
                "seconds": round(seconds, 1),
                "workers": spec.workers,
            },
        )
        write_text_atomic(
            tmp / "README.txt",
            "Synthetic keyword clips generated with espeak-ng and sox by reds_tf "
            "(reds_tf/data/synthetic_keywords.py). This is synthetic speech, NOT Google "
            "Speech Commands; results on it are not comparable with published numbers.\n",
        )
    return dest


def _spec(options: dict) -> SynthSpec:
    allowed = {f for f in SynthSpec.__dataclass_fields__}
    bad = sorted(set(options) - allowed)
    if bad:
        known = ", ".join(sorted(allowed | {"augment"}))  # the loader's own keyword too
        raise DataError(f"synthetic_keywords has no option(s) {', '.join(bad)}; known: {known}")
    # Options may come from a config's `data:` section: check types here, and
    # name the option, so a bad value is not a TypeError deep in generation.
    minimum = {"variants_per_voice": 1, "repeats": 1, "unknown_per_speaker": 0, "seed": 0}
    minimum |= {"noise_seconds": 1, "workers": 1}
    for k, lo in minimum.items():
        v = options.get(k)
        if k in options and not (k == "variants_per_voice" and v is None):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise DataError(
                    f"synthetic_keywords option {k} must be an integer >= {lo}, got {v!r}"
                )
    sp = options.get("speakers")
    if sp is not None:
        if not isinstance(sp, (list, tuple)) or not all(
            isinstance(s, (list, tuple)) and len(s) == 2 and all(isinstance(e, str) for e in s)
            for s in sp
        ):
            raise DataError(
                f"synthetic_keywords option speakers must be a list of [voice, variant], got {sp!r}"
            )
        options = {**options, "speakers": tuple(tuple(s) for s in sp)}
    return SynthSpec(**options)


def _load(
    name: str, frontend_25: bool, augment: int, seed: int, options: dict, stream: str | bool
) -> Dataset:
    # One seed for the whole set: the generation draw (speakers, unknown words,
    # noise) and the split/augmentation below.
    spec = _spec({**options, "seed": seed})
    root = generate(spec)
    info = json.loads((root / "generation.json").read_text())
    return build_kws_dataset(
        root,
        name=name,
        frontend=DNN_FRONTEND if frontend_25 else CNN_FRONTEND,
        augment=augment,
        seed=seed,
        describe=f"SYNTHETIC speech by espeak-ng, {len(info['speakers'])} voice+variant speakers, "
        "not Speech Commands",
        stream=stream,
    )


@register("synthetic_keywords")
def load(
    augment: int = 1, seed: int = 0, stream: str | bool = "auto", **generation: object
) -> Dataset:
    """Synthetic keywords, 49x10 MFCC. ``generation``: :class:`SynthSpec` fields;
    ``stream``: see :func:`reds_tf.data.speech_commands.build_kws_dataset`."""
    return _load("synthetic_keywords", False, augment, seed, generation, stream)


@register("synthetic_keywords_25x10")
def load_dnn(
    augment: int = 1, seed: int = 0, stream: str | bool = "auto", **generation: object
) -> Dataset:
    """Synthetic keywords, 25x10 MFCC (the DNN input)."""
    return _load("synthetic_keywords_25x10", True, augment, seed, generation, stream)
