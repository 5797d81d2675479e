"""MFCC front end: documented shapes and agreement with a direct NumPy computation."""

from __future__ import annotations

import numpy as np
import pytest

from reds_tf.data.features import CNN_FRONTEND, DNN_FRONTEND, MfccConfig, fit_normalization, mfcc
from reds_tf.data.features import normalize as norm_features


def numpy_mfcc(audio: np.ndarray, cfg: MfccConfig) -> np.ndarray:
    """The module docstring's definition written out in float64 NumPy."""
    n, step = cfg.frame_length, cfg.frame_step
    frames = np.stack(
        [audio[:, s : s + n] for s in range(0, audio.shape[1] - n + 1, step)], axis=1
    ).astype(np.float64)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)  # periodic Hann
    mag = np.abs(np.fft.rfft(frames * window, n=cfg.fft_length, axis=-1))

    def to_mel(hz: np.ndarray) -> np.ndarray:
        return 1127.0 * np.log1p(hz / 700.0)

    bins_hz = np.linspace(0, cfg.sample_rate / 2, cfg.fft_length // 2 + 1)
    bins_mel = to_mel(bins_hz)
    edges = np.linspace(
        to_mel(np.float64(cfg.lower_hz)), to_mel(np.float64(cfg.upper_hz)), cfg.num_mel_bins + 2
    )
    weights = np.zeros((len(bins_hz), cfg.num_mel_bins))
    for m in range(cfg.num_mel_bins):
        left, centre, right = edges[m], edges[m + 1], edges[m + 2]
        rise = (bins_mel - left) / (centre - left)
        fall = (right - bins_mel) / (right - centre)
        weights[:, m] = np.maximum(0.0, np.minimum(rise, fall))
    weights[0] = 0.0  # the DC bin takes no part
    logmel = np.log(mag @ weights + cfg.log_offset)

    big_m = cfg.num_mel_bins
    k = np.arange(cfg.num_coefficients)[:, None]
    m = np.arange(big_m)[None, :]
    dct = np.sqrt(2.0 / big_m) * np.cos(np.pi * k * (m + 0.5) / big_m)
    return logmel @ dct.T


def speechlike(n: int, seed: int = 0) -> np.ndarray:
    """Tones with a moving pitch, an envelope and noise: energy in every mel band."""
    rng = np.random.default_rng(seed)
    t = np.arange(16000) / 16000.0
    out = []
    for _ in range(n):
        f0 = rng.uniform(90, 250)
        sweep = f0 * (1 + 0.3 * np.sin(2 * np.pi * rng.uniform(1, 4) * t))
        phase = 2 * np.pi * np.cumsum(sweep) / 16000
        x = sum(np.sin(h * phase) / h for h in range(1, 16))
        env = np.exp(-(((t - rng.uniform(0.3, 0.7)) / 0.2) ** 2))
        x = 0.3 * x * env + 0.01 * rng.standard_normal(16000)
        out.append(x)
    return np.clip(np.asarray(out), -1, 1).astype(np.float32)


def test_documented_shapes() -> None:
    assert CNN_FRONTEND.output_shape == (49, 10)
    assert DNN_FRONTEND.output_shape == (25, 10)
    assert (CNN_FRONTEND.frame_length, CNN_FRONTEND.frame_step) == (640, 320)
    assert CNN_FRONTEND.fft_length == 1024
    audio = speechlike(3)
    assert mfcc(audio).shape == (3, 49, 10)
    assert mfcc(audio, DNN_FRONTEND).shape == (3, 25, 10)
    assert mfcc(audio[0]).shape == (49, 10)
    assert mfcc(audio).dtype == np.float32
    with pytest.raises(ValueError, match="16000"):
        mfcc(np.zeros((2, 8000), np.float32))


@pytest.mark.parametrize("cfg", [CNN_FRONTEND, DNN_FRONTEND], ids=["49x10", "25x10"])
def test_matches_numpy_definition(cfg: MfccConfig) -> None:
    audio = speechlike(4, seed=1)
    silence = np.zeros((1, 16000), np.float32)  # log of the offset only: c_0 dominates
    audio = np.concatenate([audio, silence])
    got = mfcc(audio, cfg)
    want = numpy_mfcc(audio, cfg)
    err = np.abs(got - want).max()
    assert err < 1e-4, f"max |TF - NumPy| = {err}"
    # Not trivially equal to zero or a constant: the coefficients carry the signal.
    assert np.std(want[:4, :, 1:]) > 0.5


def test_normalization_maps_range_to_unit_interval() -> None:
    feats = mfcc(speechlike(6, seed=2))
    lo, hi = fit_normalization(feats)
    z = norm_features(feats, lo, hi)
    assert z.dtype == np.float32 and z.min() >= 0 and z.max() <= 1
    # Inside the fitted range the map is affine per coefficient.
    c = 3
    v = feats[..., c]
    inside = (v > lo[c]) & (v < hi[c])
    np.testing.assert_allclose(z[..., c][inside], (v[inside] - lo[c]) / (hi[c] - lo[c]), rtol=1e-5)
