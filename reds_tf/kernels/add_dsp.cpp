/* add_dsp.cpp: the Cortex-M4 DSP int8 ADD kernel (reds_add_dsp), same signature
 * and bit-identical results as reds_add_ref.
 *
 * An input's rescaled value depends on its int8 code alone, so each input gets
 * a 256-entry table (in the scratch), built with the reference arithmetic
 * (reds_dsp_requantize_neg equals it for negative shifts); per element the
 * kernel then adds two table entries and requantises the sum as reds_dsp_rq8,
 * four elements per 32-bit load and store.
 */
#include "reds_kernel_opt.h" /* first: -O2 for the kernels in -Os builds */

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "reds_kernels.h"

#if defined(__ARM_FEATURE_DSP)
#include "reds_dsp.h"
#include "reds_dsp_common.h"

/* t[u]: TWICE the rescaled value of the int8 code whose byte is u as
 * reds_add_ref computes it (doubled: the SMMULR requantisation takes 2 * sum). */
static void reds_add_table(int32_t *t, int32_t offset, int32_t multiplier, int32_t shift) {
    /* TFLite's shifts here are in [-31, 0]: reds_dsp_requantize_neg's identity
     * for shift < 0; for shift 0 (the larger input's 0.5) the doubling high
     * multiply alone, which cannot saturate unless the multiplier is INT32_MIN. */
    const bool fast = shift >= -31 && shift <= 0 && multiplier != INT32_MIN;
    for (int32_t u = 0; u < 256; u++) {
        const int32_t v = ((int8_t)(uint8_t)u + offset) * (1 << REDS_ADD_LEFT_SHIFT);
        int32_t r;
        if (!fast) {
            r = reds_requantize(v, multiplier, shift);
        } else if (shift == 0) {
            r = (int32_t)(((int64_t)v * multiplier + (1 << 30)) >> 31);
        } else {
            r = reds_dsp_requantize_neg(v, multiplier, shift);
        }
        t[u] = 2 * r;
    }
}

/* One output: reds_dsp_rq8 of the table sum (already doubled), then the lower
 * clamp; SSAT did the upper one when HI is 127. */
template <bool HI>
static inline uint32_t reds_add_one(const int32_t *t1, const int32_t *t2, uint32_t a, uint32_t b,
                                    int32_t m, int32_t e, int32_t zp2p1, int32_t lo, int32_t hi) {
    const int32_t x = reds_smmulr(t1[a & 0xFFu] + t2[b & 0xFFu], m);
    int32_t v = reds_ssat8_asr1(((x + (x >> 31)) >> e) + zp2p1);
    v = v < lo ? lo : v;
    if (HI) {
        v = v > hi ? hi : v;
    }
    return (uint32_t)v & 0xFFu;
}

template <bool HI>
static void reds_add_run(const int32_t *t1, const int32_t *t2, const int8_t *input1,
                         const int8_t *input2, int8_t *output, int32_t n, int32_t m, int32_t e,
                         int32_t zp2p1, int32_t lo, int32_t hi) {
    int32_t i = 0;
    for (; i + 4 <= n; i += 4) {
        uint32_t a, b;
        memcpy(&a, input1 + i, 4);
        memcpy(&b, input2 + i, 4);
        uint32_t out = reds_add_one<HI>(t1, t2, a, b, m, e, zp2p1, lo, hi);
        out |= reds_add_one<HI>(t1, t2, a >> 8, b >> 8, m, e, zp2p1, lo, hi) << 8;
        out |= reds_add_one<HI>(t1, t2, a >> 16, b >> 16, m, e, zp2p1, lo, hi) << 16;
        out |= reds_add_one<HI>(t1, t2, a >> 24, b >> 24, m, e, zp2p1, lo, hi) << 24;
        memcpy(output + i, &out, 4);
    }
    for (; i < n; i++) {
        output[i] = (int8_t)reds_add_one<HI>(t1, t2, (uint8_t)input1[i], (uint8_t)input2[i], m, e,
                                             zp2p1, lo, hi);
    }
}

void reds_add_dsp(const reds_add_layer *layer, int k, const int8_t *input1, const int8_t *input2,
                  int8_t *output, int32_t *scratch) {
    const int32_t n = (int32_t)layer->h * layer->w * layer->width[k];
    const int32_t m = layer->output_multiplier, sh = layer->output_shift;
    /* The tables (about 7000 instructions) pay off from about 100 elements on.
     * The requantisation needs a shift in [-31, -2] and |2 * sum| < 2^31: each
     * table entry is at most 2 * 256 * 2^19 in magnitude. */
    if (n < 128 || scratch == NULL || (uint32_t)(sh + 31) >= 30u || m == INT32_MIN) {
        reds_add_ref(layer, k, input1, input2, output, scratch);
        return;
    }
    int32_t *t1 = scratch, *t2 = scratch + 256;
    reds_add_table(t1, layer->input1_offset, layer->input1_multiplier, layer->input1_shift);
    reds_add_table(t2, layer->input2_offset, layer->input2_multiplier, layer->input2_shift);
    const int32_t e = ~sh, zp2p1 = 2 * layer->output_offset + 1;
    const int32_t lo = layer->act_min, hi = layer->act_max;
    if (hi >= 127) {
        reds_add_run<false>(t1, t2, input1, input2, output, n, m, e, zp2p1, lo, hi);
    } else {
        reds_add_run<true>(t1, t2, input1, input2, output, n, m, e, zp2p1, lo, hi);
    }
}

#else /* no DSP extension: the reference is the implementation */

void reds_add_dsp(const reds_add_layer *layer, int k, const int8_t *input1, const int8_t *input2,
                  int8_t *output, int32_t *scratch) {
    reds_add_ref(layer, k, input1, input2, output, scratch);
}

#endif
