/* pointwise_dsp.cpp: the Cortex-M4 DSP 1x1 convolution kernel (reds_pointwise_dsp).
 * Same signature and bit-identical results as reds_pointwise_ref: two output
 * pixels and two rows at a time over segment lists of the nested layout
 * (reds_dsp_pointwise.h, shared with the first-layer conv path).
 */
#include "reds_kernel_opt.h" /* first: -O2 for the kernels in -Os builds */

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "reds_kernels.h"

#if defined(__ARM_FEATURE_DSP)
#include "reds_dsp.h"
#include "reds_dsp_common.h"
#include "reds_dsp_pointwise.h"

/* Segment entries of the pointwise kernel's all-groups table (stack). */
#define REDS_DSP_PW_SEGS 160

/* The segment list of the 4-row group starting at row r: the B strip of the
 * first submodel s0 that has row r, then the R strips of s0+1 .. k; at most
 * k + 2 entries with the terminator. */
static void reds_dsp_pw_list(reds_dsp_seg *tab, int r, int k, const uint16_t *iw,
                             const uint16_t *ow, const int8_t *const *r_base,
                             const int8_t *const *b_base) {
    int s0 = 0;
    while (ow[s0] <= r) {
        s0++;
    }
    const int o_prev = s0 > 0 ? ow[s0 - 1] : 0;
    int nseg = 0;
    tab[nseg].w = b_base[s0] + (r - o_prev) * iw[s0];
    tab[nseg++].chunks = iw[s0] >> 2;
    for (int s = s0 + 1; s <= k; s++) {
        const int cols = iw[s] - iw[s - 1];
        if (cols > 0) {
            tab[nseg].w = r_base[s] + r * cols;
            tab[nseg++].chunks = cols >> 2;
        }
    }
    tab[nseg].chunks = 0;
}

void reds_pointwise_dsp(const reds_conv_layer *layer, int k, const int8_t *input,
                        int8_t *output, int32_t *scratch) {
    const uint16_t *iw = layer->in_width;
    const uint16_t *ow = layer->out_width;
    const int n_in = iw[k];
    const int n_out = ow[k];
    /* Two widened pixels take 4 * n_in bytes of the REDS_CONV_SCRATCH_BYTES
     * scratch (4 * n_out + 2 * n_in + 4); row pairs and whole chunks need every
     * width to be a multiple of 4. Otherwise: one pixel at a time. */
    uint32_t widths = 0;
    for (int s = 0; s <= k; s++) {
        widths |= (uint32_t)iw[s] | ow[s];
    }
    if (k >= REDS_DSP_MAX_K || (widths & 3u) || n_in == 0 || 2 * n_in > 4 * n_out + 4 ||
        ((uintptr_t)layer->weights & 3u) != 0) {
        reds_conv_dsp(layer, k, input, output, scratch);
        return;
    }
    /* Where each strip starts: R_s (rows [0, o_{s-1}), columns [i_{s-1}, i_s))
     * then B_s (rows [o_{s-1}, o_s), columns [0, i_s)). */
    const int8_t *r_base[REDS_DSP_MAX_K], *b_base[REDS_DSP_MAX_K];
    const int8_t *w = layer->weights;
    for (int s = 0, ip = 0, op = 0; s <= k; s++) {
        r_base[s] = w;
        w += op * (iw[s] - ip);
        b_base[s] = w;
        w += (ow[s] - op) * iw[s];
        ip = iw[s];
        op = ow[s];
    }
    const int32_t q = layer->qparam_stride * k;
    const int32_t *bias = layer->bias != NULL ? layer->bias + q : NULL;
    const int32_t *mult = layer->multiplier + q;
    const int32_t *shift = layer->shift + q;
    const int32_t zp = layer->output_offset, lo = layer->act_min, hi = layer->act_max;
    const bool fast = reds_dsp_all_fast2(mult, shift, bias, n_out, n_in, lo, hi);
    uint32_t *xw = (uint32_t *)scratch;
    const int pixels = (int)layer->out_h * layer->out_w;
    /* Every 4-row group's segment list, built once per call when they fit
     * (group g's at segs + g * (k + 2)), else per group and pixel pair. */
    reds_dsp_seg segs[REDS_DSP_PW_SEGS];
    const int stride = k + 2;
    const bool once = (n_out >> 2) * stride <= REDS_DSP_PW_SEGS;
    for (int r = 0; once && r < n_out; r += 4) {
        reds_dsp_pw_list(segs + (r >> 2) * stride, r, k, iw, ow, r_base, b_base);
    }
    for (int p = 0; p < pixels; p += 2) {
        const int p1 = p + 1 < pixels ? p + 1 : p; /* an odd last pixel is done twice */
        reds_dsp_widen2(input + p * n_in, input + p1 * n_in, n_in >> 2, layer->input_offset, xw);
        int8_t *out0 = output + p * n_out;
        int8_t *out1 = output + p1 * n_out;
        for (int r = 0; r < n_out; r += 4) {
            const reds_dsp_seg *tab = segs + (r >> 2) * stride;
            if (!once) {
                reds_dsp_pw_list(segs, r, k, iw, ow, r_base, b_base);
                tab = segs;
            }
            for (int h = 0; h < 2; h++) {
                const int rr = r + 2 * h;
                int32_t a00 = bias != NULL ? bias[rr] : 0;
                int32_t a10 = bias != NULL ? bias[rr + 1] : 0;
                int32_t a01 = a00, a11 = a10;
                if (h == 0) {
                    reds_dsp_pw_pass<0>(&a00, &a01, &a10, &a11, tab, xw);
                } else {
                    reds_dsp_pw_pass<8>(&a00, &a01, &a10, &a11, tab, xw);
                }
                reds_dsp_pw_store(out0, out1, rr, a00, a01, a10, a11, mult, shift, fast, zp, lo,
                                  hi);
            }
        }
    }
}

#else /* no DSP extension: the reference is the implementation */

void reds_pointwise_dsp(const reds_conv_layer *layer, int k, const int8_t *input,
                        int8_t *output, int32_t *scratch) {
    reds_pointwise_ref(layer, k, input, output, scratch);
}

#endif
