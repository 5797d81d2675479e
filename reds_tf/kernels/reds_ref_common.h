/* reds_ref_common.h: helpers shared by the portable kernel files (internal).
 * The strip walker of the nested weight layout (FC, conv im2col, pointwise),
 * the output clamp and the per-submodel quantisation rows of conv layers.
 * Static functions: each kernel file compiles its own copy of what it uses;
 * those not every file uses are marked unused.
 */
#ifndef REDS_REF_COMMON_H
#define REDS_REF_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "reds_kernels.h"

/* Accumulate one strip (rows [r0, r1), columns [c0, c1)) of the nested
 * layout into acc; returns the weight pointer just past the strip. Inside a
 * group of 4 rows, each chunk of 4 columns holds row after row, so `w` only
 * ever moves forward. */
__attribute__((unused)) static const int8_t *reds_fc_ref_strip(const int8_t *w, int32_t r0, int32_t r1, int32_t c0,
                                       int32_t c1, const int16_t *x, int32_t *acc) {
    for (int32_t g = r0; g < r1; g += 4) {
        const int32_t rows = (r1 - g) < 4 ? (r1 - g) : 4;
        int32_t sums[4] = {0, 0, 0, 0};
        int32_t c = c0;
        if (rows == 4) {
#if defined(__SSE2__) || defined(__ARM_NEON) || defined(__wasm_simd128__)
            /* SIMD hosts (the simulator): 16 lanes, one per weight byte of a 4x4
             * tile, a shape GCC/Clang vectorise at -O3; reduced once per group. */
            int32_t lane[16] = {0};
            for (; c + 4 <= c1; c += 4) {
                for (int32_t j = 0; j < 16; ++j) {
                    lane[j] += (int32_t)w[j] * (int32_t)x[c + (j & 3)];
                }
                w += 16;
            }
            for (int32_t r = 0; r < 4; ++r) {
                sums[r] = lane[4 * r] + lane[4 * r + 1] + lane[4 * r + 2] + lane[4 * r + 3];
            }
#else
            /* Scalar cores: 4 register accumulators, each input loaded once per tile. */
            int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
            for (; c + 4 <= c1; c += 4) {
                const int32_t x0 = x[c], x1 = x[c + 1], x2 = x[c + 2], x3 = x[c + 3];
                s0 += w[0] * x0 + w[1] * x1 + w[2] * x2 + w[3] * x3;
                s1 += w[4] * x0 + w[5] * x1 + w[6] * x2 + w[7] * x3;
                s2 += w[8] * x0 + w[9] * x1 + w[10] * x2 + w[11] * x3;
                s3 += w[12] * x0 + w[13] * x1 + w[14] * x2 + w[15] * x3;
                w += 16;
            }
            sums[0] = s0;
            sums[1] = s1;
            sums[2] = s2;
            sums[3] = s3;
#endif
        }
        /* Remaining chunks: a shorter last chunk and/or a shorter last group. */
        for (; c < c1; c += 4) {
            const int32_t cols = (c1 - c) < 4 ? (c1 - c) : 4;
            for (int32_t r = 0; r < rows; ++r) {
                int32_t s = 0;
                for (int32_t j = 0; j < cols; ++j) {
                    s += w[j] * x[c + j];
                }
                sums[r] += s;
                w += cols;
            }
        }
        for (int32_t r = 0; r < rows; ++r) {
            acc[g + r] += sums[r];
        }
    }
    return w;
}

/* Accumulate submodel k's weights (strips R_j, B_j for j = 0 .. k, in storage
 * order) times the widened input x into acc; the widths are n_in[j] (columns)
 * and n_out[j] (rows), times `col_mult` for the columns (conv: kh * kw). */
__attribute__((unused)) static void reds_nested_accumulate(const int8_t *w, const uint16_t *in_width,
                                   const uint16_t *out_width, int32_t col_mult, int k,
                                   const int16_t *x, int32_t *acc) {
    int32_t i_prev = 0, o_prev = 0;
    for (int j = 0; j <= k; ++j) {
        const int32_t i_j = col_mult * (int32_t)in_width[j];
        const int32_t o_j = out_width[j];
        w = reds_fc_ref_strip(w, 0, o_prev, i_prev, i_j, x, acc);  /* strip R_j */
        w = reds_fc_ref_strip(w, o_prev, o_j, 0, i_j, x, acc);     /* strip B_j */
        i_prev = i_j;
        o_prev = o_j;
    }
}

static inline int8_t reds_clamp_out(int32_t v, int32_t lo, int32_t hi) {
    v = v < lo ? lo : v;
    v = v > hi ? hi : v;
    return (int8_t)v;
}

/* Bias / multiplier / shift of submodel k (shared, or its own row). */
static inline int32_t reds_qoff(const reds_conv_layer *layer, int k) {
    return layer->qparam_stride * (int32_t)k;
}

/* Accumulators -> int8 outputs of one pixel. */
__attribute__((unused)) static void reds_conv_finish(const reds_conv_layer *layer, int k, int32_t n_out, int32_t *acc,
                             int8_t *out) {
    const int32_t q = reds_qoff(layer, k);
    const int32_t *mult = layer->multiplier + q;
    const int32_t *shift = layer->shift + q;
    for (int32_t r = 0; r < n_out; ++r) {
        const int32_t v = reds_requantize(acc[r], mult[r], shift[r]) + layer->output_offset;
        out[r] = reds_clamp_out(v, layer->act_min, layer->act_max);
    }
}

__attribute__((unused)) static void reds_conv_init_acc(const reds_conv_layer *layer, int k, int32_t n_out,
                               int32_t *acc) {
    const int32_t *bias = layer->bias != NULL ? layer->bias + reds_qoff(layer, k) : NULL;
    for (int32_t r = 0; r < n_out; ++r) {
        acc[r] = bias != NULL ? bias[r] : 0;
    }
}

#endif /* REDS_REF_COMMON_H */
