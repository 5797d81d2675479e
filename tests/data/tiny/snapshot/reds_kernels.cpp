/* reds_kernels.cpp: portable reference kernels of the generated REDS runtime.
 * Generated from templates/reds_kernels.cpp.j2 by `reds export`; do not edit.
 * Plain C in a .cpp file (C headers only) so it builds for the host, for
 * bare-metal Cortex-M without libstdc++, and inside Arduino sketches. */
#include <stddef.h>
#include <stdint.h>

#include "reds_kernels.h"

/* Accumulate one strip (rows [r0, r1), columns [c0, c1)) of the nested
 * layout into acc; returns the weight pointer just past the strip. Inside a
 * group of 4 rows, each chunk of 4 columns holds row after row, so `w` only
 * ever moves forward. */
static const int8_t *reds_fc_ref_strip(const int8_t *w, int32_t r0, int32_t r1, int32_t c0,
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

void reds_fc_ref(const reds_fc_layer *layer, int k, const int8_t *input, int8_t *output,
                 int32_t *scratch) {
    const int32_t n_in = layer->in_width[k];
    const int32_t n_out = layer->out_width[k];
    int32_t *acc = scratch;
    /* Input plus offset fits int16 (|x + offset| <= 255); widen it once. */
    int16_t *x = (int16_t *)(scratch + n_out);
    for (int32_t c = 0; c < n_in; ++c) {
        x[c] = (int16_t)(input[c] + layer->input_offset);
    }
    for (int32_t r = 0; r < n_out; ++r) {
        acc[r] = layer->bias != NULL ? layer->bias[r] : 0;
    }
    const int8_t *w = layer->weights;
    int32_t i_prev = 0, o_prev = 0;
    for (int j = 0; j <= k; ++j) {
        const int32_t i_j = layer->in_width[j];
        const int32_t o_j = layer->out_width[j];
        w = reds_fc_ref_strip(w, 0, o_prev, i_prev, i_j, x, acc);  /* strip R_j */
        w = reds_fc_ref_strip(w, o_prev, o_j, 0, i_j, x, acc);     /* strip B_j */
        i_prev = i_j;
        o_prev = o_j;
    }
    for (int32_t r = 0; r < n_out; ++r) {
        int32_t v = reds_requantize(acc[r], layer->multiplier[r], layer->shift[r]);
        v += layer->output_offset;
        v = v < layer->act_min ? layer->act_min : v;
        v = v > layer->act_max ? layer->act_max : v;
        output[r] = (int8_t)v;
    }
}
