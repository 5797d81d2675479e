/* fully_connected_dsp.cpp: the Cortex-M4 DSP fully connected kernel.
 * A fixed source (reds_tf/kernels/) that `reds export` copies beside the
 * generated model files, like every kernel file. Every DSP instruction goes
 * through reds_dsp.h; helpers shared with the conv kernels are in
 * reds_dsp_common.h.
 *
 * reds_fc_dsp computes exactly what reds_fc_ref computes (same signature, same
 * integer arithmetic, bit-identical outputs) with SXTB16 / SMLAD:
 *  - the input plus its offset is widened once per call into int16 pairs laid
 *    out to match SXTB16's lanes: per 4-column chunk (x0, x2) then (x1, x3);
 *  - the nested layout stores each 4-row group chunk by chunk, row after row,
 *    so one pointer walks the weights, one 64-bit load fetches two rows' words,
 *    and each loaded input pair serves 4 rows (16 MACs per 19 instructions);
 *  - accumulators live in the caller's scratch while the strips of submodels
 *    0 .. k are walked in storage order.
 * On targets without __ARM_FEATURE_DSP reds_fc_dsp forwards to reds_fc_ref, so
 * the symbol always exists (the host simulator can call both).
 */
#include "reds_kernel_opt.h" /* first: -O2 for the kernels in -Os builds */

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "reds_kernels.h"

#if defined(__ARM_FEATURE_DSP)
#include "reds_dsp.h"
#include "reds_dsp_common.h"

void reds_fc_dsp(const reds_fc_layer *layer, int k, const int8_t *input, int8_t *output,
                 int32_t *scratch) {
    const uint16_t *iw = layer->in_width;
    const uint16_t *ow = layer->out_width;
    /* Chunks of 4 columns must start at multiples of 4 in every strip; a layer
     * whose widths are not (never the case with block 4) takes the reference. */
    uint32_t odd = 0;
    for (int s = 0; s <= k; s++) {
        odd |= iw[s];
    }
    if (odd & 3u) {
        reds_fc_ref(layer, k, input, output, scratch);
        return;
    }
    const int n_in = iw[k];
    const int n_out = ow[k];
    int32_t *acc = scratch;
    uint32_t *xw = (uint32_t *)(scratch + n_out); /* 2 * n_in bytes, see REDS_FC_SCRATCH_BYTES */
    reds_dsp_widen(input, n_in >> 2, layer->input_offset, xw);
    /* A row's first strip is B_s (rows [o_{s-1}, o_s)): it starts from the
     * bias; the later R strips add to the accumulator. */
    const int32_t *bias = layer->bias;
    if (bias == NULL) {
        memset(acc, 0, (size_t)n_out * sizeof(int32_t));
        bias = acc;
    }
    const int8_t *w = layer->weights;
    int ip = 0, op = 0;
    for (int s = 0; s <= k; s++) {
        const int i = iw[s], o = ow[s];
        if (i > ip && op > 0) {
            w = reds_dsp_strip(w, acc, acc, op, (i - ip) >> 2, 0, xw + (ip >> 1)); /* R_s */
        }
        if (o > op && i > 0) {
            w = reds_dsp_strip(w, acc + op, bias + op, o - op, i >> 2, 0, xw); /* B_s */
        }
        ip = i;
        op = o;
    }
    const int32_t lo = layer->act_min, hi = layer->act_max, zp = layer->output_offset;
    const int32_t *mult = layer->multiplier;
    const int32_t *shift = layer->shift;
    if (lo == -128 && hi == 127) {
        /* The clamp is plain int8 saturation (no activation, or ReLU with
         * output zero point -128): one SSAT. */
        for (int r = 0; r < n_out; r++) {
            const int32_t m = mult[r], sh = shift[r];
            int32_t v;
            if (__builtin_expect((uint32_t)(sh + 31) < 31u && m != INT32_MIN, 1)) {
                v = reds_dsp_requantize_neg(acc[r], m, sh);
            } else {
                v = reds_requantize(acc[r], m, sh);
            }
            output[r] = (int8_t)reds_ssat8(v + zp);
        }
        return;
    }
    for (int r = 0; r < n_out; r++) {
        const int32_t m = mult[r], sh = shift[r];
        int32_t v;
        if (__builtin_expect((uint32_t)(sh + 31) < 31u && m != INT32_MIN, 1)) {
            v = reds_dsp_requantize_neg(acc[r], m, sh);
        } else {
            v = reds_requantize(acc[r], m, sh);
        }
        v += zp;
        v = v < lo ? lo : v;
        v = v > hi ? hi : v;
        output[r] = (int8_t)v;
    }
}

#else /* no DSP extension: the reference is the implementation */

void reds_fc_dsp(const reds_fc_layer *layer, int k, const int8_t *input, int8_t *output,
                 int32_t *scratch) {
    reds_fc_ref(layer, k, input, output, scratch);
}

#endif
