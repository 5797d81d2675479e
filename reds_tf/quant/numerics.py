"""THE int8 reference in NumPy: TFLite Micro's integer arithmetic, bit for bit.

TFLite Micro requantises with gemmlowp DOUBLE rounding:
``RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x << left, m), right)``.
(TF's own ``tf.lite.Interpreter`` rounds once and differs by 1 LSB on a few
outputs, so never compare against it.) Everything here works on int64 NumPy
arrays so intermediate products cannot overflow, and then reproduces the int32
wrap-around/saturation rules explicitly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from reds_tf.errors import RedsError

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite ``QuantizeMultiplier``: ``real ~= m * 2**(shift - 31)``.

    Returns ``(m, shift)`` with ``m`` a Q31 value in ``[2**30, 2**31)`` (or 0) and
    ``shift`` in TFLite's sign convention (positive = left shift).
    """
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)  # real = q * 2**shift, q in [0.5, 1)
    q_fixed = int(math.floor(q * (1 << 31) + 0.5))  # std::round; exact in double
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:  # too small to represent: TFLite flushes to zero
        return 0, 0
    if shift > 30:
        raise RedsError(f"requantisation scale {real} is too large for the int8 kernels")
    return q_fixed, shift


def channel_multipliers(
    input_scale: float, weight_scales: np.ndarray, output_scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel (multiplier, shift) as TFLM computes them, in double.

    ``weight_scales``: (out,) float32. Returns two (out,) int32 arrays.
    """
    mult = np.zeros(len(weight_scales), np.int32)
    shift = np.zeros(len(weight_scales), np.int32)
    for c, ws in enumerate(np.asarray(weight_scales, np.float32)):
        real = float(np.float32(input_scale)) * float(ws) / float(np.float32(output_scale))
        mult[c], shift[c] = quantize_multiplier(real)
    return mult, shift


def saturating_rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul on int32 values (as int64 arrays)."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    s = ab + nudge
    # Division truncating toward zero (C semantics), not NumPy's floor.
    q = np.sign(s) * (np.abs(s) >> 31)
    overflow = (a == b) & (a == INT32_MIN)
    return np.where(overflow, INT32_MAX, q).astype(np.int64)


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT: divide by 2**exponent, round half away from zero."""
    x = np.asarray(x, np.int64)
    exponent = np.asarray(exponent, np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def _wrap_int32(x: np.ndarray) -> np.ndarray:
    return ((np.asarray(x, np.int64) + 2**31) % 2**32) - 2**31


def multiply_by_quantized_multiplier(
    acc: np.ndarray, multiplier: np.ndarray, shift: np.ndarray
) -> np.ndarray:
    """TFLite ``MultiplyByQuantizedMultiplier`` (double rounding), broadcasting.

    ``acc``: int32 values (any shape); ``multiplier``/``shift`` broadcast against it.
    """
    shift = np.asarray(shift, np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    shifted = _wrap_int32(np.asarray(acc, np.int64) << left)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, multiplier), right)


def quantize(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Float -> int8 as the TFLite QUANTIZE op does (round half away from zero, clamp)."""
    # Divide in float32 like the kernel, then std::round (half away from zero),
    # which differs from NumPy's round-half-to-even on ties.
    v = (np.asarray(x, np.float32) / np.float32(scale)).astype(np.float64)
    q = np.where(v >= 0, np.floor(v + 0.5), np.ceil(v - 0.5))
    return np.clip(q + zero_point, -128, 127).astype(np.int8)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """int8 -> float32: ``scale * (q - zero_point)``."""
    return (np.asarray(q, np.float32) - np.float32(zero_point)) * np.float32(scale)


def activation_range(
    activation: str, output_scale: float, output_zero_point: int
) -> tuple[int, int]:
    """TFLite ``CalculateActivationRangeQuantized`` for int8 outputs.

    ``activation``: "none", "relu" or "relu6".
    """
    qmin, qmax = -128, 127
    if activation == "none":
        return qmin, qmax

    def q(v: float) -> int:
        return output_zero_point + int(round(v / output_scale))

    if activation == "relu":
        return max(qmin, q(0.0)), qmax
    if activation == "relu6":
        return max(qmin, q(0.0)), min(qmax, q(6.0))
    raise ValueError(f"unsupported fused activation {activation!r}")


@dataclass
class FcQuant:
    """Integer parameters of one int8 fully connected layer (TFLM int8 rules).

    Shapes: ``weights`` (out, in) int8 (zero point 0), ``bias`` (out,) int32 or
    None, ``multiplier``/``shift`` (out,) int32.
    """

    weights: np.ndarray
    bias: np.ndarray | None
    multiplier: np.ndarray
    shift: np.ndarray
    input_zero_point: int
    output_zero_point: int
    act_min: int
    act_max: int

    def sliced(self, in_width: int, out_width: int) -> FcQuant:
        """The prefix submodel layer ``W[:out_width, :in_width]``."""
        return FcQuant(
            self.weights[:out_width, :in_width],
            None if self.bias is None else self.bias[:out_width],
            self.multiplier[:out_width],
            self.shift[:out_width],
            self.input_zero_point,
            self.output_zero_point,
            self.act_min,
            self.act_max,
        )


def fc_accumulate(q: FcQuant, x: np.ndarray) -> np.ndarray:
    """int32 accumulators ``bias + W @ (x - input_zp)``: x (N, in) int8 -> (N, out) int64."""
    xs = np.asarray(x, np.int64) - q.input_zero_point
    acc = xs @ np.asarray(q.weights, np.int64).T
    if q.bias is not None:
        acc = acc + np.asarray(q.bias, np.int64)[None, :]
    if np.any(acc > INT32_MAX) or np.any(acc < INT32_MIN):
        raise OverflowError("int32 accumulator overflow in the int8 reference")
    return acc


def fc_int8(q: FcQuant, x: np.ndarray) -> np.ndarray:
    """One int8 FULLY_CONNECTED layer as TFLM computes it: (N, in) int8 -> (N, out) int8."""
    acc = fc_accumulate(q, x)
    y = multiply_by_quantized_multiplier(acc, q.multiplier[None, :], q.shift[None, :])
    y = y + q.output_zero_point
    return np.clip(y, q.act_min, q.act_max).astype(np.int8)


def same_padding(in_size: int, filter_size: int, stride: int, out_size: int) -> int:
    """TFLite's leading padding offset for SAME (the extra pixel goes at the end)."""
    return max(0, ((out_size - 1) * stride + filter_size - in_size) // 2)


@dataclass
class ConvQuant:
    """Integer parameters of one int8 CONV_2D / DEPTHWISE_CONV_2D (TFLM rules).

    Shapes: ``weights`` (out, kh, kw, in) int8 for a standard conv, (kh, kw, C)
    for a depthwise conv (channel axis last, depth multiplier 1); ``bias``
    (out,) int32 or None; ``multiplier``/``shift`` (out,) int32.
    """

    weights: np.ndarray
    bias: np.ndarray | None
    multiplier: np.ndarray
    shift: np.ndarray
    stride: tuple[int, int]
    padding: tuple[int, int]  # leading (top, left) offsets
    out_hw: tuple[int, int]
    input_zero_point: int
    output_zero_point: int
    act_min: int
    act_max: int
    depthwise: bool = False


def _patches(x: np.ndarray, kh: int, kw: int, q: ConvQuant) -> np.ndarray:
    """Zero-point-corrected input patches, padding = 0:
    x (N, H, W, C) int8 -> (N, OH, OW, kh, kw, C) int64."""
    _, h, w, _ = x.shape
    oh, ow = q.out_hw
    sh, sw = q.stride
    pt, pl = q.padding
    xs = np.asarray(x, np.int64) - q.input_zero_point
    # Pad generously with zeros (= the zero point after correction): padded
    # positions then add nothing, exactly like TFLM skipping them.
    pad_b = max(0, (oh - 1) * sh + kh - pt - h)
    pad_r = max(0, (ow - 1) * sw + kw - pl - w)
    xp = np.pad(xs, ((0, 0), (pt, pad_b), (pl, pad_r), (0, 0)))
    iy = (np.arange(oh) * sh)[:, None] + np.arange(kh)[None, :]  # (OH, kh)
    ix = (np.arange(ow) * sw)[:, None] + np.arange(kw)[None, :]  # (OW, kw)
    return xp[:, iy[:, None, :, None], ix[None, :, None, :], :]


def conv_int8(q: ConvQuant, x: np.ndarray) -> np.ndarray:
    """One int8 conv as TFLM computes it: x (N, H, W, C_in) int8 -> (N, OH, OW, C_out) int8."""
    if q.depthwise:
        kh, kw, _ = q.weights.shape
        p = _patches(x, kh, kw, q)
        acc = np.einsum("nyxhwc,hwc->nyxc", p, np.asarray(q.weights, np.int64))
    else:
        _, kh, kw, _ = q.weights.shape
        p = _patches(x, kh, kw, q)
        acc = np.einsum("nyxhwc,ohwc->nyxo", p, np.asarray(q.weights, np.int64))
    if q.bias is not None:
        acc = acc + np.asarray(q.bias, np.int64)
    if np.any(acc > INT32_MAX) or np.any(acc < INT32_MIN):
        raise OverflowError("int32 accumulator overflow in the int8 reference")
    y = multiply_by_quantized_multiplier(acc, q.multiplier, q.shift) + q.output_zero_point
    return np.clip(y, q.act_min, q.act_max).astype(np.int8)


def avgpool_int8(
    x: np.ndarray,
    filter_hw: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    out_hw: tuple[int, int],
    act_min: int = -128,
    act_max: int = 127,
) -> np.ndarray:
    """TFLM int8 AVERAGE_POOL_2D: mean over the in-image window positions, rounded
    half away from zero. x (N, H, W, C) int8 -> (N, OH, OW, C) int8."""
    n, h, w, c = x.shape
    out = np.zeros((n, *out_hw, c), np.int8)
    xs = np.asarray(x, np.int64)
    for oy, ox, (ya, yb), (xa, xb) in _pool_windows((h, w), filter_hw, stride, padding, out_hw):
        count = (yb - ya) * (xb - xa)
        s = xs[:, ya:yb, xa:xb, :].sum(axis=(1, 2))
        avg = np.where(s > 0, (s + count // 2) // count, -((-s + count // 2) // count))
        out[:, oy, ox, :] = np.clip(avg, act_min, act_max)
    return out


def _pool_windows(
    in_hw: tuple[int, int],
    filter_hw: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    out_hw: tuple[int, int],
):
    """Yield ``(oy, ox, (y0, y1), (x0, x1))``: each output pixel's window cut
    to the image (TFLM pools never read padding)."""
    for oy in range(out_hw[0]):
        y = oy * stride[0] - padding[0]
        rows = (max(0, y), min(in_hw[0], y + filter_hw[0]))
        for ox in range(out_hw[1]):
            x = ox * stride[1] - padding[1]
            yield oy, ox, rows, (max(0, x), min(in_hw[1], x + filter_hw[1]))


def maxpool_int8(
    x: np.ndarray,
    filter_hw: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    out_hw: tuple[int, int],
    act_min: int = -128,
    act_max: int = 127,
) -> np.ndarray:
    """TFLM int8 MAX_POOL_2D: the maximum over the in-image window positions
    (padding never counts), starting from -128, then clamped to the fused
    activation range. Input and output share one quantisation (TFLM requires
    it; :func:`reds_tf.codegen.plan.build_plan` checks it), so there is no
    rescaling. x (N, H, W, C) int8 -> (N, OH, OW, C) int8."""
    n, h, w, c = x.shape
    out = np.zeros((n, *out_hw, c), np.int8)
    xs = np.asarray(x, np.int64)
    for oy, ox, (ya, yb), (xa, xb) in _pool_windows((h, w), filter_hw, stride, padding, out_hw):
        m = np.full((n, c), -128, np.int64)
        if yb > ya and xb > xa:  # TFLM keeps -128 for a window fully in the padding
            m = np.maximum(m, xs[:, ya:yb, xa:xb, :].max(axis=(1, 2)))
        out[:, oy, ox, :] = np.clip(m, act_min, act_max)
    return out


#: TFLite's headroom for int8 ADD: both inputs are shifted left by 20 bits first.
ADD_LEFT_SHIFT = 20


@dataclass
class AddQuant:
    """Integer parameters of one int8 ADD (TFLite ``CalculateOpDataAdd``): the
    inputs' offsets (minus their zero points), per-input and output
    multipliers with shifts (TFLite sign, all <= 0), the output zero point and
    the fused activation clamp."""

    input1_offset: int
    input2_offset: int
    input1_multiplier: int
    input1_shift: int
    input2_multiplier: int
    input2_shift: int
    output_multiplier: int
    output_shift: int
    output_zero_point: int
    act_min: int
    act_max: int

    @classmethod
    def from_scales(
        cls,
        in1: tuple[float, int],
        in2: tuple[float, int],
        out: tuple[float, int],
        act_min: int = -128,
        act_max: int = 127,
    ) -> AddQuant:
        """From the (scale, zero point) of both inputs and the output, in double
        as TFLite does: the inputs are rescaled to twice the larger input scale,
        the sum to the output scale (``QuantizeMultiplierSmallerThanOneExp``)."""
        s1, s2, so = (float(np.float32(t[0])) for t in (in1, in2, out))
        twice_max = 2.0 * max(s1, s2)
        mults = []
        for real in (s1 / twice_max, s2 / twice_max, twice_max / ((1 << ADD_LEFT_SHIFT) * so)):
            if not 0.0 < real < 1.0:
                raise RedsError(f"ADD rescaling factor {real} is outside (0, 1)")
            mults.append(quantize_multiplier(real))
        (m1, sh1), (m2, sh2), (mo, sho) = mults
        return cls(
            -int(in1[1]), -int(in2[1]), m1, sh1, m2, sh2, mo, sho, int(out[1]), act_min, act_max
        )


def add_int8(q: AddQuant, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """One int8 ADD as TFLM computes it (same shapes, no broadcasting): each
    input plus its offset, shifted left by 20, rescaled; the sum rescaled to the
    output, plus its zero point, clamped."""
    a = (np.asarray(x1, np.int64) + q.input1_offset) << ADD_LEFT_SHIFT
    b = (np.asarray(x2, np.int64) + q.input2_offset) << ADD_LEFT_SHIFT
    a = multiply_by_quantized_multiplier(a, q.input1_multiplier, q.input1_shift)
    b = multiply_by_quantized_multiplier(b, q.input2_multiplier, q.input2_shift)
    y = multiply_by_quantized_multiplier(a + b, q.output_multiplier, q.output_shift)
    return np.clip(y + q.output_zero_point, q.act_min, q.act_max).astype(np.int8)
