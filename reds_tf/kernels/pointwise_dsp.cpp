/* pointwise_dsp.cpp: the Cortex-M4 DSP 1x1 convolution kernel (reds_pointwise_dsp).
 * Same signature and bit-identical results as reds_pointwise_ref: two output
 * pixels and two rows at a time over segment lists of the nested layout
 * (reds_dsp_pointwise.h, shared with the first-layer conv path). Layers with
 * the fast requantisation run from a per-call table of row pairs (constants
 * and weight segments) through one asm loop per pixel pair; the others take
 * the per-group segment lists and reds_dsp_out.
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

/* Segment entries of the generic path's all-groups table (stack). */
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

/* Words of the fast path's table (stack): 32 single-segment row pairs. When
 * the scratch cannot hold the widened pair (n_out < n_in / 2), the table's
 * first n_in words do, up to n_in = REDS_DSP_PW_XW_IN (what is left still
 * holds 2 row pairs of 16-segment lists). */
#define REDS_DSP_PW_TAB 460
#define REDS_DSP_PW_XW_IN 256

/* What a table of reds_dsp_pw_fast is built from. */
typedef struct reds_dsp_pw_tabctx {
    const uint16_t *iw, *ow;
    int k;
    bool multi, unrolled, tri, fold;
    const int32_t *bias, *mult, *shift;
    uint32_t zq;
    const int8_t *const *r_base, *const *b_base;
} reds_dsp_pw_tabctx;

/* The entries of row pairs *rp, *rp + 2, ... up to n_out or until the next one
 * would pass tab_end, from t on; returns the end, *rp is the next row, *s0p its
 * submodel so far. Out of line: the pixel loop keeps its registers. */
static __attribute__((noinline)) uint32_t *reds_dsp_pw_table(const reds_dsp_pw_tabctx *c,
                                                            uint32_t *t,
                                                            const uint32_t *tab_end, int n_out,
                                                            int *rp, int *s0p) {
    const uint16_t *iw = c->iw, *ow = c->ow;
    const int k = c->k;
    const bool multi = c->multi, unrolled = c->unrolled, tri = c->tri, fold = c->fold;
    const int32_t *bias = c->bias, *mult = c->mult, *shift = c->shift;
    const uint32_t zq = c->zq;
    const int8_t *const *r_base = c->r_base, *const *b_base = c->b_base;
    int r = *rp, s0 = *s0p;
    /* Strip by strip: rows [o_prev, o_end) of submodel s0 share the B strip's
     * columns, the R segments and the size of an entry. */
    while (r < n_out) {
        while (ow[s0] <= r) {
            s0++;
        }
        const int o_prev = s0 > 0 ? ow[s0 - 1] : 0, o_end = ow[s0];
        const int cb = iw[s0];
        int need = tri ? REDS_DSP_PW3_WORDS + fold : 11;
        for (int s = s0 + 1; multi && s <= k; s++) {
            need += iw[s] > iw[s - 1] ? 2 : 0;
        }
        need += multi ? 2 : 0; /* the list's end */
        const uint32_t w_add = unrolled ? 4u * (uint32_t)cb : 0u;
        const uint32_t jump =
            unrolled ? 4u + (tri ? 80u : 60u) * (uint32_t)(REDS_DSP_PWU_MAX - (cb >> 2))
                     : (uint32_t)(cb >> 2);
        const int8_t *wb = b_base[s0] - o_prev * cb;
        for (; r < o_end && t + need <= tab_end; r += 2) {
            const int g = r & ~3, off = (r & 2) << 2;
            uint32_t b0 = 0u, b1 = 0u;
            if (bias != NULL) {
                b0 = (uint32_t)(2 * bias[r]);
                b1 = (uint32_t)(2 * bias[r + 1]);
            }
            /* the pair's 8 bytes of its first chunk, or for reds_dsp_pw_run3
             * the weights' end (16 bytes a chunk) and the jump */
            const uint32_t wp = (uint32_t)(uintptr_t)(wb + g * cb + off) + w_add;
            if (tri) { /* reds_dsp_pw_run3 */
                t[0] = b0;
                t[1] = b0;
                t[2] = b0;
                t[3] = b1;
                t[4] = b1;
                t[5] = b1;
                t[6] = wp;
                t[7] = jump;
                t[8] = (uint32_t)mult[r];
                t[9] = (uint32_t)~shift[r];
                t[10] = fold ? zq << (~shift[r]) : zq; /* reds_dsp_pw_run3c: C_r */
                t[11] = (uint32_t)mult[r + 1];
                t[12] = (uint32_t)~shift[r + 1];
                if (fold) {
                    t[13] = zq << (~shift[r + 1]); /* C_r+1 */
                }
                t += REDS_DSP_PW3_WORDS + fold;
                continue;
            }
            t[0] = b0;
            t[1] = b0;
            t[2] = b1;
            t[3] = b1;
            t[4] = wp;
            t[5] = jump;
            t += 6;
            if (multi) {
                for (int s = s0 + 1; s <= k; s++) {
                    const int cols = iw[s] - iw[s - 1];
                    if (cols > 0) {
                        t[0] = (uint32_t)(uintptr_t)(r_base[s] + g * cols + off);
                        t[1] = (uint32_t)(cols >> 2);
                        t += 2;
                    }
                }
                t[0] = 1u; /* the pair's list ends */
                t[1] = 0u;
                t += 2;
            }
            t[0] = (uint32_t)mult[r];
            t[1] = (uint32_t)mult[r + 1];
            t[2] = (uint32_t)~shift[r];
            t[3] = (uint32_t)~shift[r + 1];
            t[4] = zq;
            t += 5;
        }
        if (r < o_end) {
            break; /* the table is full: this block ends here */
        }
    }
    *rp = r;
    *s0p = s0;
    return t;
}

/* The fast path (reds_dsp_all_fast2): the row pairs' table of
 * reds_dsp_pointwise.h built once per block of rows that fits, then per pixel
 * pair one doubled widening and one runner call over the block. */
static void reds_dsp_pw_fast(const reds_conv_layer *layer, int k, const int8_t *input,
                             int8_t *output, uint32_t *xw, const int8_t *const *r_base,
                             const int8_t *const *b_base, const int32_t *bias,
                             const int32_t *mult, const int32_t *shift) {
    const uint16_t *iw = layer->in_width;
    const uint16_t *ow = layer->out_width;
    const int n_in = iw[k];
    const int n_out = ow[k];
    /* Rows of submodel s0 take one B segment, then one R segment per later
     * submodel that adds inputs: one segment each only if no row has an R. */
    bool multi = false;
    for (int s = 1; s <= k; s++) {
        multi = multi || (iw[s] > iw[s - 1] && ow[s - 1] > 0);
    }
    /* single segments of at most REDS_DSP_PWU_MAX chunks: two rows x three pixels */
    const bool unrolled = !multi && (n_in >> 2) <= REDS_DSP_PWU_MAX;
    const bool tri = unrolled;
    /* reds_dsp_pw_run3c's folded zero point: every multiplier above 2^30 and
     * |2 zp + 1| << e below 2^30 (e = ~shift in [1, 29] on the fast path) */
    const int32_t zq_abs = 2 * layer->output_offset + 1 < 0 ? -(2 * layer->output_offset + 1)
                                                            : 2 * layer->output_offset + 1;
    bool fold = tri;
    for (int r = 0; fold && r < n_out; r++) {
        const int e = ~shift[r];
        fold = mult[r] > (1 << 30) && e < 30 && zq_abs < (1 << (30 - e));
    }
    const uint32_t zq = (uint32_t)(2 * layer->output_offset + 1);
    const int32_t offset = layer->input_offset;
    const int pixels = (int)layer->out_h * layer->out_w;
    uint32_t buf[REDS_DSP_PW_TAB];
    uint32_t *tab = buf;
    const int xbytes = (tri ? 6 : 4) * n_in; /* the widened pixels */
    if (xw == NULL || xbytes > 4 * n_out + 2 * n_in + 4) {
        xw = buf;
        tab = buf + (xbytes >> 2);
    }
    const uint32_t *const tab_end = buf + REDS_DSP_PW_TAB - 8;
    reds_dsp_pw_tabctx c = {iw,   ow,   k,  multi,  unrolled, tri,
                            fold, bias, mult, shift, zq,  r_base, b_base};
    int s0 = 0;
    for (int r0 = 0; r0 < n_out;) {
        int r = r0;
        uint32_t *t = reds_dsp_pw_table(&c, tab, tab_end, n_out, &r, &s0);
        for (int j = 0; j < 8; j++) {
            t[j] = 0u; /* the table ends */
        }
        for (int p = 0; tri && p < pixels; p += 3) {
            /* a short last triple repeats its last pixel */
            const int p1 = p + 1 < pixels ? p + 1 : pixels - 1;
            const int p2 = p + 2 < pixels ? p + 2 : pixels - 1;
            reds_dsp_widen3x(input + p * n_in, input + p1 * n_in, input + p2 * n_in, n_in >> 2,
                             offset, xw);
            if (fold) {
                reds_dsp_pw_run3c(tab, xw + 6 * (n_in >> 2), output + p * n_out + r0,
                                  output + p1 * n_out + r0, output + p2 * n_out + r0);
            } else {
                reds_dsp_pw_run3(tab, xw + 6 * (n_in >> 2), output + p * n_out + r0,
                                 output + p1 * n_out + r0, output + p2 * n_out + r0);
            }
        }
        for (int p = 0; !tri && p < pixels; p += 2) {
            const int p1 = p + 1 < pixels ? p + 1 : p; /* an odd last pixel is done twice */
            reds_dsp_widen2x(input + p * n_in, input + p1 * n_in, n_in >> 2, offset, xw);
            int8_t *out0 = output + p * n_out + r0;
            int8_t *out1 = output + p1 * n_out + r0;
            if (multi) {
                reds_dsp_pw_runm(tab, xw, out0, out1);
            } else {
                reds_dsp_pw_run1(tab, xw, out0, out1);
            }
        }
        r0 = r;
    }
}

/* Any requantisation: two rows and two pixels at a time over the segment
 * lists of reds_dsp_pw_pass, each output through reds_dsp_out. */
static __attribute__((noinline)) void reds_dsp_pw_generic(
    const reds_conv_layer *layer, int k, const int8_t *input, int8_t *output, uint32_t *xw,
    const int8_t *const *r_base, const int8_t *const *b_base, const int32_t *bias,
    const int32_t *mult, const int32_t *shift) {
    const uint16_t *iw = layer->in_width;
    const uint16_t *ow = layer->out_width;
    const int n_in = iw[k];
    const int n_out = ow[k];
    const int32_t zp = layer->output_offset, lo = layer->act_min, hi = layer->act_max;
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
                reds_dsp_pw_store(out0, out1, rr, a00, a01, a10, a11, mult, shift, false, zp, lo,
                                  hi);
            }
        }
    }
}

void reds_pointwise_dsp(const reds_conv_layer *layer, int k, const int8_t *input,
                        int8_t *output, int32_t *scratch) {
    const uint16_t *iw = layer->in_width;
    const uint16_t *ow = layer->out_width;
    const int n_in = iw[k];
    const int n_out = ow[k];
    /* Two widened pixels take 4 * n_in bytes of the REDS_CONV_SCRATCH_BYTES
     * scratch (4 * n_out + 2 * n_in + 4), or of the fast path's table; row pairs
     * and whole chunks need every width to be a multiple of 4. Otherwise: one
     * pixel at a time. */
    uint32_t widths = 0;
    for (int s = 0; s <= k; s++) {
        widths |= (uint32_t)iw[s] | ow[s];
    }
    if (k >= REDS_DSP_MAX_K || (widths & 3u) || n_in == 0 ||
        (2 * n_in > 4 * n_out + 4 && n_in > REDS_DSP_PW_XW_IN) ||
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
    /* The widened pair in the scratch, or if it does not fit (n_out < n_in / 2)
     * on the fast path at the start of its table. */
    uint32_t *xw = 2 * n_in <= 4 * n_out + 4 ? (uint32_t *)scratch : NULL;
    if (reds_dsp_all_fast2(mult, shift, bias, n_out, n_in, layer->act_min, layer->act_max)) {
        reds_dsp_pw_fast(layer, k, input, output, xw, r_base, b_base, bias, mult, shift);
    } else if (xw != NULL) {
        reds_dsp_pw_generic(layer, k, input, output, xw, r_base, b_base, bias, mult, shift);
    } else {
        reds_conv_dsp(layer, k, input, output, scratch);
    }
}

#else /* no DSP extension: the reference is the implementation */

void reds_pointwise_dsp(const reds_conv_layer *layer, int k, const int8_t *input,
                        int8_t *output, int32_t *scratch) {
    reds_pointwise_ref(layer, k, input, output, scratch);
}

#endif
