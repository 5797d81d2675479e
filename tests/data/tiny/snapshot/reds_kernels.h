/* reds_kernels.h: int8 layer kernels of the generated REDS runtime.
 * Generated from templates/reds_kernels.h.j2 by `reds export`; do not edit.
 *
 * Integer-only arithmetic following the TFLite Micro int8 rules: symmetric
 * per-channel weights (zero point 0), asymmetric activations, int32
 * accumulators, requantisation with a Q31 multiplier and a power-of-two shift
 * using gemmlowp double rounding (SaturatingRoundingDoublingHighMul, then
 * RoundingDivideByPOT), then the output zero point and the fused activation
 * clamp.
 */
#ifndef REDS_KERNELS_H
#define REDS_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One fully connected layer in the NESTED weight layout (docs/DESIGN.md).
 *
 * Let (i_k, o_k) = (in_width[k], out_width[k]), non-decreasing in k, and
 * (i_-1, o_-1) = (0, 0). `weights` stores, for k = 0 .. K-1, strip R_k
 * (rows [0, o_{k-1}), columns [i_{k-1}, i_k)) then strip B_k (rows
 * [o_{k-1}, o_k), columns [0, i_k)). A strip is stored in groups of 4 rows
 * (the last group may be shorter); inside a group in chunks of 4 columns (the
 * last chunk may be shorter); inside a chunk row after row, each row's bytes of
 * that chunk. Submodel k therefore reads exactly the first i_k * o_k bytes.
 * bias / multiplier / shift are in plain output-channel order; submodel k
 * uses their first o_k entries.
 */
typedef struct reds_fc_layer {
    const int8_t *weights;      /* nested layout, in_width[K-1] * out_width[K-1] bytes */
    const int32_t *bias;        /* [out_width[K-1]] int32, or NULL when the layer has none */
    const int32_t *multiplier;  /* [out_width[K-1]] Q31 requantisation multipliers */
    const int32_t *shift;       /* [out_width[K-1]] exponents, TFLite sign: > 0 shifts left */
    const uint16_t *in_width;   /* [K] i_k: active input length of submodel k */
    const uint16_t *out_width;  /* [K] o_k: active output length of submodel k */
    int32_t input_offset;       /* minus the input zero point */
    int32_t output_offset;      /* the output zero point */
    int32_t act_min;            /* fused activation clamp, int8 domain */
    int32_t act_max;
} reds_fc_layer;

/* Fully connected int8 layer, submodel k (0 <= k < K):
 *   acc[r] = bias[r] + sum_{c < i_k} W[r][c] * (input[c] + input_offset)
 *   output[r] = clamp(MultiplyByQuantizedMultiplier(acc[r], multiplier[r], shift[r])
 *                     + output_offset, act_min, act_max)      for r < o_k.
 * input: i_k int8 values; output: o_k int8 values (must not alias input).
 * scratch: REDS_FC_SCRATCH_BYTES(i_k, o_k) bytes, 4-byte aligned, in the arena:
 * o_k int32 accumulators (the active rows) followed by room for i_k int16
 * values, so a kernel may widen the input (plus offset) once per call.
 * The kernel walks strips 0 .. k in storage order, i.e. memory linearly.
 *
 * reds_fc_ref is portable C and the reference. reds_fc_dsp (Cortex-M4 DSP
 * extension, templates/reds_kernels_dsp.cpp.j2) has the SAME signature and
 * must give bit-identical results. The runtime calls REDS_FC, which picks
 * reds_fc_dsp when it was generated and the target has __ARM_FEATURE_DSP
 * (define REDS_NO_DSP to force the reference). */
void reds_fc_ref(const reds_fc_layer *layer, int k, const int8_t *input, int8_t *output,
                 int32_t *scratch);
void reds_fc_dsp(const reds_fc_layer *layer, int k, const int8_t *input, int8_t *output,
                 int32_t *scratch);

/* Scratch bytes a FC kernel may use for input width n_in and output width n_out. */
#define REDS_FC_SCRATCH_BYTES(n_in, n_out) (4u * (uint32_t)(n_out) + 2u * (uint32_t)(n_in) + 4u)

/* 1 when reds_kernels_dsp.cpp was generated next to this file. */
#define REDS_HAVE_FC_DSP 1

#if REDS_HAVE_FC_DSP && defined(__ARM_FEATURE_DSP) && !defined(REDS_NO_DSP)
#define REDS_FC reds_fc_dsp
#else
#define REDS_FC reds_fc_ref
#endif

/* TFLite's MultiplyByQuantizedMultiplier with double rounding; shared by
 * every kernel so that all of them round identically. */
static inline int32_t reds_srdhm(int32_t a, int32_t b) {
    /* SaturatingRoundingDoublingHighMul: the only overflow is INT32_MIN^2. */
    if (a == b && a == INT32_MIN) {
        return INT32_MAX;
    }
    const int64_t ab = (int64_t)a * (int64_t)b;
    const int64_t nudge = ab >= 0 ? (int64_t)(1 << 30) : (int64_t)(1 - (1 << 30));
    /* C division truncates toward zero, as gemmlowp requires. */
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

static inline int32_t reds_rdbpot(int32_t x, int exponent) {
    /* RoundingDivideByPOT: round half away from zero. */
    const int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

static inline int32_t reds_requantize(int32_t acc, int32_t multiplier, int32_t shift) {
    const int left = shift > 0 ? (int)shift : 0;
    const int right = shift > 0 ? 0 : (int)-shift;
    return reds_rdbpot(reds_srdhm((int32_t)((uint32_t)acc << left), multiplier), right);
}

#ifdef __cplusplus
}
#endif

#endif /* REDS_KERNELS_H */
