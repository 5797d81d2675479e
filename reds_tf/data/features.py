"""MFCC front end for keyword spotting (TensorFlow signal ops).

Definition (the paper's, after ARM's "Hello Edge"): 16 kHz mono audio, 1 s clips
(16,000 samples), frames of 40 ms (640 samples) every ``stride_ms`` (20 ms -> 49
frames; the DNN variant uses 40 ms -> 25 frames), no padding at the end. Per
frame:

1. periodic Hann window, real FFT of length 1024 (the next power of two),
   magnitude ``|X_f|`` for the 513 bins ``f * 8000 / 512`` Hz;
2. 40 triangular mel filters (HTK mel scale ``1127 ln(1 + hz / 700)``) with
   edges equally spaced in mel between 20 Hz and 4,000 Hz, the DC bin weighted
   0 (``tf.signal.linear_to_mel_weight_matrix``);
3. ``log(mel + 1e-6)``;
4. DCT-II scaled as in ``tf.signal.mfccs_from_log_mel_spectrograms``:
   ``c_k = sqrt(2 / M) * sum_m logmel_m * cos(pi * k * (m + 1/2) / M)``,
   ``M = 40``; keep ``c_0 .. c_9``.

Output: (N, frames, 10) float32. Shapes: 49x10 at 20 ms stride, 25x10 at 40 ms.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

SAMPLE_RATE = 16000
CLIP_SAMPLES = SAMPLE_RATE  # 1 s


@dataclass(frozen=True)
class MfccConfig:
    """Parameters of the front end; defaults are the paper's CNN/DS-CNN input."""

    sample_rate: int = SAMPLE_RATE
    clip_samples: int = CLIP_SAMPLES
    window_ms: float = 40.0
    stride_ms: float = 20.0
    num_coefficients: int = 10
    num_mel_bins: int = 40
    lower_hz: float = 20.0
    upper_hz: float = 4000.0
    log_offset: float = 1e-6

    @property
    def frame_length(self) -> int:
        return int(round(self.sample_rate * self.window_ms / 1000))

    @property
    def frame_step(self) -> int:
        return int(round(self.sample_rate * self.stride_ms / 1000))

    @property
    def fft_length(self) -> int:
        return 1 << (self.frame_length - 1).bit_length()

    @property
    def num_frames(self) -> int:
        return 1 + (self.clip_samples - self.frame_length) // self.frame_step

    @property
    def output_shape(self) -> tuple[int, int]:
        """(frames, coefficients): (49, 10) for the default, (25, 10) at 40 ms stride."""
        return (self.num_frames, self.num_coefficients)

    def to_dict(self) -> dict:
        return asdict(self)


CNN_FRONTEND = MfccConfig()
DNN_FRONTEND = MfccConfig(stride_ms=40.0)


def mfcc(audio: np.ndarray, cfg: MfccConfig = CNN_FRONTEND, batch: int = 1024) -> np.ndarray:
    """MFCCs of a batch of clips.

    ``audio``: (N, clip_samples) or (clip_samples,) float in [-1, 1].
    Returns (N, frames, num_coefficients) float32 (or (frames, coeffs) for one clip).
    Computed in chunks of ``batch`` clips to bound memory.
    """
    # Lazy on purpose: `reds simulate`/`bench`/`monitor` load KWS data from the cache without TF.
    import tensorflow as tf

    a = np.asarray(audio, dtype=np.float32)
    single = a.ndim == 1
    if single:
        a = a[None]
    if a.ndim != 2 or a.shape[1] != cfg.clip_samples:
        raise ValueError(f"audio must be (N, {cfg.clip_samples}), got {a.shape}")
    mel_w = tf.signal.linear_to_mel_weight_matrix(
        num_mel_bins=cfg.num_mel_bins,
        num_spectrogram_bins=cfg.fft_length // 2 + 1,
        sample_rate=cfg.sample_rate,
        lower_edge_hertz=cfg.lower_hz,
        upper_edge_hertz=cfg.upper_hz,
        dtype=tf.float32,
    )

    @tf.function(reduce_retracing=True)
    def run(x: tf.Tensor) -> tf.Tensor:
        spec = tf.signal.stft(
            x,
            frame_length=cfg.frame_length,
            frame_step=cfg.frame_step,
            fft_length=cfg.fft_length,
            window_fn=tf.signal.hann_window,  # periodic Hann
            pad_end=False,
        )
        mel = tf.tensordot(tf.abs(spec), mel_w, 1)
        logmel = tf.math.log(mel + cfg.log_offset)
        return tf.signal.mfccs_from_log_mel_spectrograms(logmel)[..., : cfg.num_coefficients]

    out = np.empty((len(a), *cfg.output_shape), np.float32)
    for i in range(0, len(a), batch):
        out[i : i + batch] = run(tf.constant(a[i : i + batch])).numpy()
    return out[0] if single else out


def fit_normalization(feats: np.ndarray, pct: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Per-coefficient range ``(lo, hi)`` (each shape (coeffs,)) from training features
    (N, frames, coeffs): the ``pct`` and ``100 - pct`` percentiles, so rare outliers
    do not stretch the int8 input range."""
    flat = feats.reshape(-1, feats.shape[-1]).astype(np.float64)
    lo = np.percentile(flat, pct, axis=0)
    hi = np.percentile(flat, 100 - pct, axis=0)
    hi = np.maximum(hi, lo + 1e-3)  # a constant coefficient must not divide by zero
    return lo.astype(np.float32), hi.astype(np.float32)


def normalize(feats: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Map every coefficient affinely so ``lo -> 0`` and ``hi -> 1``, clipped to [0, 1].

    Per coefficient because c_0 spans a far wider range than c_1..c_9: a single
    range would waste most int8 levels of the higher coefficients. The same
    two vectors must be applied on the device before quantising the input.
    """
    return np.clip((feats - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
