/* add_dsp.cpp: the Cortex-M4 DSP int8 ADD kernel (reds_add_dsp), same signature
 * and bit-identical results as reds_add_ref.
 *
 * An input's rescaled value depends on its int8 code alone, so each input gets
 * a 256-entry table (in the scratch), built with the reference arithmetic; per
 * element the kernel then adds two table entries and requantises the sum with
 * the SMMULR fast path (reds_dsp_rq8), four elements per 32-bit load and store.
 */
#include "reds_kernel_opt.h" /* first: -O2 for the kernels in -Os builds */

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "reds_kernels.h"

#if defined(__ARM_FEATURE_DSP)
#include "reds_dsp.h"
#include "reds_dsp_common.h"

/* t[u]: the rescaled value of the int8 code whose byte is u, exactly as
 * reds_add_ref computes it. */
static void reds_add_table(int32_t *t, int32_t offset, int32_t multiplier, int32_t shift) {
    for (int32_t u = 0; u < 256; u++) {
        const int32_t x = (int8_t)(uint8_t)u;
        t[u] = reds_requantize((x + offset) * (1 << REDS_ADD_LEFT_SHIFT), multiplier, shift);
    }
}

static inline uint32_t reds_add_one(const int32_t *t1, const int32_t *t2, uint32_t a, uint32_t b,
                                    int32_t m, int32_t e, int32_t zp2p1, int32_t lo, int32_t hi) {
    int32_t v = reds_dsp_rq8(t1[a & 0xFFu] + t2[b & 0xFFu], m, e, zp2p1);
    v = v < lo ? lo : v;
    v = v > hi ? hi : v;
    return (uint32_t)v & 0xFFu;
}

void reds_add_dsp(const reds_add_layer *layer, int k, const int8_t *input1, const int8_t *input2,
                  int8_t *output, int32_t *scratch) {
    const int32_t n = (int32_t)layer->h * layer->w * layer->width[k];
    const int32_t m = layer->output_multiplier, sh = layer->output_shift;
    /* Tables pay off from a few hundred elements on. reds_dsp_rq8 needs a shift
     * in [-31, -2] and |sum| < 2^30: each table entry is at most 255 * 2^19. */
    if (n < 512 || scratch == NULL || (uint32_t)(sh + 31) >= 30u || m == INT32_MIN) {
        reds_add_ref(layer, k, input1, input2, output, scratch);
        return;
    }
    int32_t *t1 = scratch, *t2 = scratch + 256;
    reds_add_table(t1, layer->input1_offset, layer->input1_multiplier, layer->input1_shift);
    reds_add_table(t2, layer->input2_offset, layer->input2_multiplier, layer->input2_shift);
    const int32_t e = ~sh, zp2p1 = 2 * layer->output_offset + 1;
    const int32_t lo = layer->act_min, hi = layer->act_max;
    int32_t i = 0;
    for (; i + 4 <= n; i += 4) {
        uint32_t a, b;
        memcpy(&a, input1 + i, 4);
        memcpy(&b, input2 + i, 4);
        uint32_t out = reds_add_one(t1, t2, a, b, m, e, zp2p1, lo, hi);
        out |= reds_add_one(t1, t2, a >> 8, b >> 8, m, e, zp2p1, lo, hi) << 8;
        out |= reds_add_one(t1, t2, a >> 16, b >> 16, m, e, zp2p1, lo, hi) << 16;
        out |= reds_add_one(t1, t2, a >> 24, b >> 24, m, e, zp2p1, lo, hi) << 24;
        memcpy(output + i, &out, 4);
    }
    for (; i < n; i++) {
        output[i] = (int8_t)reds_add_one(t1, t2, (uint8_t)input1[i], (uint8_t)input2[i], m, e,
                                         zp2p1, lo, hi);
    }
}

#else /* no DSP extension: the reference is the implementation */

void reds_add_dsp(const reds_add_layer *layer, int k, const int8_t *input1, const int8_t *input2,
                  int8_t *output, int32_t *scratch) {
    reds_add_ref(layer, k, input1, input2, output, scratch);
}

#endif
