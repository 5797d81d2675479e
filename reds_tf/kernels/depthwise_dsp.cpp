/* depthwise_dsp.cpp: the Cortex-M4 DSP depthwise convolution kernel (reds_depthwise_dsp).
 * Same signature and bit-identical results as reds_depthwise_ref.
 */
#include "reds_kernel_opt.h" /* first: -O2 for the kernels in -Os builds */

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "reds_kernels.h"

#if defined(__ARM_FEATURE_DSP)
#include "reds_dsp.h"
#include "reds_dsp_common.h"

/* Depthwise taps per pass: at most this many (3x3 = 9, 10x4 = 40). */
#define REDS_DSP_DW_MAX_TAPS 64
/* Words of the padded 3-row buffer of the 3x3 path (stack). */
#define REDS_DSP_DW_BUF_WORDS 384

/* Per 4-channel quad: weights widened to int16 pairs per tap, words
 * (c0, c2), (c1, c3) to match SXTB16's lanes; requantisation constants. */
typedef struct reds_dsp_dwq {
    int32_t bias[4];  /* bias, offset not folded (border pixels) */
    int32_t bias2[4]; /* bias + input_offset * sum of the channel's weights (interior) */
    int32_t m[4], e[4];
    int32_t me[8]; /* (m, e) per channel for one LDRD; the 3x3 path finds it 104 bytes before w[18] */
    uint32_t w[2 * REDS_DSP_DW_MAX_TAPS];
} reds_dsp_dwq;
static_assert(offsetof(reds_dsp_dwq, w) - offsetof(reds_dsp_dwq, me) == 32,
              "REDS_DSP_DW_RQ addresses me from the end of a 3x3 quad's weights");

/* One 3x3 window of 4 channels, input WITHOUT its offset (folded into bias2):
 * per tap one load, two SXTB16, one LDRD of packed weights, four multiplies. */
#define REDS_DSP_DW_TAP(OFF)                          \
    "ldr %[v], [%[s]" OFF "]\n\t"                     \
    "ldrd %[w0], %[w1], [%[wq]], #8\n\t"              \
    "sxtb16 %[e], %[v]\n\t"                           \
    "sxtb16 %[v], %[v], ror #8\n\t"                   \
    "smlabb %[a0], %[e], %[w0], %[a0]\n\t"            \
    "smlatt %[a2], %[e], %[w0], %[a2]\n\t"            \
    "smlabb %[a1], %[v], %[w1], %[a1]\n\t"            \
    "smlatt %[a3], %[v], %[w1], %[a3]\n\t"
/* Taps of one kernel row: 4 bytes (one padded-buffer pixel) apart. */
#define REDS_DSP_DW_ROW REDS_DSP_DW_TAP("") REDS_DSP_DW_TAP(", #4") REDS_DSP_DW_TAP(", #8")
/* reds_dsp_rq8 of channel A and its byte store, after the 9 taps (wq = &w[18]):
 * (m, e) from qd->me at wq - 104 + 8 * channel. */
#define REDS_DSP_DW_RQ(A, ME, OUT)                    \
    "ldrd %[w0], %[w1], [%[wq], #" ME "]\n\t"          \
    "add %[" A "], %[" A "], %[" A "]\n\t"              \
    "smmulr %[" A "], %[" A "], %[w0]\n\t"             \
    "add %[" A "], %[" A "], %[" A "], asr #31\n\t"     \
    "asr %[" A "], %[" A "], %[w1]\n\t"                \
    "add %[" A "], %[" A "], %[zq]\n\t"                \
    "ssat %[" A "], #8, %[" A "], asr #1\n\t"          \
    "strb %[" A "], [%[o]" OUT "]\n\t"

/* Stores 4 channels of one output pixel. */
static inline __attribute__((always_inline)) void reds_dsp_dw_store(
    int8_t *out, int32_t a0, int32_t a1, int32_t a2, int32_t a3, const reds_dsp_dwq *qd,
    bool fast, int32_t zp, int32_t lo, int32_t hi) {
    if (fast) {
        const int32_t zp2p1 = 2 * zp + 1;
        out[0] = (int8_t)reds_dsp_rq8(a0, qd->m[0], qd->e[0], zp2p1);
        out[1] = (int8_t)reds_dsp_rq8(a1, qd->m[1], qd->e[1], zp2p1);
        out[2] = (int8_t)reds_dsp_rq8(a2, qd->m[2], qd->e[2], zp2p1);
        out[3] = (int8_t)reds_dsp_rq8(a3, qd->m[3], qd->e[3], zp2p1);
    } else {
        out[0] = reds_dsp_out(a0, qd->m[0], qd->e[0], zp, lo, hi);
        out[1] = reds_dsp_out(a1, qd->m[1], qd->e[1], zp, lo, hi);
        out[2] = reds_dsp_out(a2, qd->m[2], qd->e[2], zp, lo, hi);
        out[3] = reds_dsp_out(a3, qd->m[3], qd->e[3], zp, lo, hi);
    }
}

/* `count` 3x3 windows of one output row, 4 channels, fast requantisation:
 * src = the first window's top-left word in the padded buffer (taps 4 bytes
 * apart), step = bytes between windows, row = bytes between kernel rows, out =
 * the first output, on = bytes between outputs. */
static __attribute__((noinline)) void reds_dsp_dw3x3_row(const int8_t *src, int count, int step,
                                                        int row, const reds_dsp_dwq *qd,
                                                        int32_t zp2p1, int8_t *out, int on) {
    for (; count > 0; count--, src += step, out += on) {
        int32_t a0 = qd->bias2[0], a1 = qd->bias2[1], a2 = qd->bias2[2], a3 = qd->bias2[3];
        const int8_t *s = src;
        const uint32_t *wq = qd->w;
        uint32_t v, e, w0, w1;
        __asm__ volatile(REDS_DSP_DW_ROW "add %[s], %[s], %[row]\n\t" REDS_DSP_DW_ROW
                         "add %[s], %[s], %[row]\n\t" REDS_DSP_DW_ROW
                         REDS_DSP_DW_RQ("a0", "-104", "") REDS_DSP_DW_RQ("a1", "-96", ", #1")
                         REDS_DSP_DW_RQ("a2", "-88", ", #2") REDS_DSP_DW_RQ("a3", "-80", ", #3")
                         : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3),
                           [s] "+r"(s), [wq] "+r"(wq), [v] "=&r"(v), [e] "=&r"(e),
                           [w0] "=&r"(w0), [w1] "=&r"(w1)
                         : [row] "r"(row), [zq] "r"(zp2p1), [o] "r"(out)
                         : "memory");
    }
}

/* Geometry of one depthwise call. */
typedef struct reds_dsp_dwg {
    const int8_t *input;
    int n, row, in_h, in_w, kh, kw;
    uint32_t off2;
    int32_t zp, lo, hi;
    bool fast;
} reds_dsp_dwg;

/* One output pixel, 4 channels, any kernel, window possibly cut by the
 * padding: the valid taps with the offset added per tap (padding = 0). */
static __attribute__((noinline)) void reds_dsp_dw_pixel(const reds_dsp_dwg *g,
                                                       const reds_dsp_dwq *qd, int iy0, int ix0,
                                                       int c, int8_t *out) {
    int32_t a0 = qd->bias[0], a1 = qd->bias[1], a2 = qd->bias[2], a3 = qd->bias[3];
    const int kh = g->kh, kw = g->kw, n = g->n;
    const int ky0 = iy0 < 0 ? -iy0 : 0;
    const int ky1 = g->in_h - iy0 < kh ? g->in_h - iy0 : kh;
    const int kx0 = ix0 < 0 ? -ix0 : 0;
    const int kx1 = g->in_w - ix0 < kw ? g->in_w - ix0 : kw;
    const uint32_t off2 = g->off2;
    for (int ky = ky0; ky < ky1; ky++) {
        const int8_t *src = g->input + (iy0 + ky) * g->row + ix0 * n + c;
        const uint32_t *wt = qd->w + 2 * (ky * kw);
        for (int kx = kx0; kx < kx1; kx++) {
            uint32_t v;
            memcpy(&v, src + kx * n, 4);
            const uint32_t xe = reds_sxtab16(off2, v);         /* (x0, x2) */
            const uint32_t xo = reds_sxtab16_ror8(off2, v); /* (x1, x3) */
            const uint32_t w0 = wt[2 * kx], w1 = wt[2 * kx + 1];
            a0 = reds_smlabb((int32_t)xe, (int32_t)w0, a0);
            a2 = reds_smlatt((int32_t)xe, (int32_t)w0, a2);
            a1 = reds_smlabb((int32_t)xo, (int32_t)w1, a1);
            a3 = reds_smlatt((int32_t)xo, (int32_t)w1, a3);
        }
    }
    reds_dsp_dw_store(out, a0, a1, a2, a3, qd, g->fast, g->zp, g->lo, g->hi);
}

/* Depthwise convolution (depth multiplier 1), same signature and results as
 * reds_depthwise_ref. 4 channels at a time, over the whole map: the quad's
 * weights are widened once; per tap one 32-bit input load and two SXTB16 give
 * the 4 channels, SMLABB/SMLATT multiply them with packed int16 weights. The
 * input offset of interior 3x3 windows is folded into the bias (sum of the
 * weights times the offset); border windows add it per tap (padding = 0). */
extern "C" void reds_depthwise_dsp(const reds_conv_layer *layer, int k, const int8_t *input,
                                   int8_t *output);

void reds_depthwise_dsp(const reds_conv_layer *layer, int k, const int8_t *input,
                        int8_t *output) {
    const int n = layer->in_width[k];
    const int kh = layer->kernel_h, kw = layer->kernel_w, taps = kh * kw;
    if ((n & 3) || taps > REDS_DSP_DW_MAX_TAPS) {
        reds_depthwise_ref(layer, k, input, output);
        return;
    }
    const int32_t q = layer->qparam_stride * k;
    const int32_t *bias = layer->bias != NULL ? layer->bias + q : NULL;
    const int32_t *mult = layer->multiplier + q;
    const int32_t *shift = layer->shift + q;
    reds_dsp_dwg g;
    g.input = input;
    g.n = n;
    g.row = layer->in_w * n;
    g.in_h = layer->in_h;
    g.in_w = layer->in_w;
    g.kh = kh;
    g.kw = kw;
    g.zp = layer->output_offset;
    g.lo = layer->act_min;
    g.hi = layer->act_max;
    g.fast = reds_dsp_all_fast2(mult, shift, bias, n, taps, g.lo, g.hi);
    const int32_t offset = layer->input_offset;
    g.off2 = ((uint32_t)offset & 0xFFFFu) * 0x10001u;
    const int out_h = layer->out_h, out_w = layer->out_w;
    const int sh = layer->stride_h, sw = layer->stride_w, pt = layer->pad_top, pl = layer->pad_left;
    /* 3x3 with the fast requantisation: per output row, the kernel's 3 input
     * rows of the quad (4 bytes per pixel) are copied into a padded buffer,
     * the padding holding the input zero point (it contributes 0 once the
     * offset is added), so every window takes the unrolled path. */
    const int bufw = (out_w - 1) * sw + kw;
    const bool direct = kh == 3 && kw == 3 && g.fast && kh * bufw <= REDS_DSP_DW_BUF_WORDS;
    /* Padded rows the buffer holds: the whole map when it fits (each input row
     * copied once per quad), else as many as fit. */
    const int rows_needed = (out_h - 1) * sh + kh;
    const int buf_fit = bufw > 0 ? REDS_DSP_DW_BUF_WORDS / bufw : 0;
    const int buf_rows = rows_needed < buf_fit ? rows_needed : buf_fit;
    const int in_end = pl + g.in_w < bufw ? pl + g.in_w : bufw;
    const uint32_t zpw = (uint32_t)(uint8_t)(-offset) * 0x01010101u;
    uint32_t buf[REDS_DSP_DW_BUF_WORDS];
    reds_dsp_dwq qd;
    for (int c = 0; c < n; c += 4) {
        int base = 0, rows_in_buf = 0; /* buffer row 0 = padded input row `base` */
        const int8_t *wc = layer->weights + c * taps;
        for (int j = 0; j < 4; j++) {
            int32_t sum = 0;
            for (int t = 0; t < taps; t++) {
                sum += wc[j * taps + t];
            }
            qd.bias[j] = bias != NULL ? bias[c + j] : 0;
            qd.bias2[j] = qd.bias[j] + offset * sum;
            qd.m[j] = mult[c + j];
            qd.e[j] = g.fast ? ~shift[c + j] : shift[c + j];
            qd.me[2 * j] = qd.m[j];
            qd.me[2 * j + 1] = qd.e[j];
        }
        for (int t = 0; t < taps; t++) {
            qd.w[2 * t] = (uint32_t)(uint16_t)wc[t] | ((uint32_t)wc[2 * taps + t] << 16);
            qd.w[2 * t + 1] = (uint32_t)(uint16_t)wc[taps + t] | ((uint32_t)wc[3 * taps + t] << 16);
        }
        for (int oy = 0; oy < out_h; oy++) {
            const int iy0 = oy * sh - pt;
            int8_t *out = output + oy * out_w * n + c;
            if (!direct) {
                for (int ox = 0; ox < out_w; ox++) {
                    reds_dsp_dw_pixel(&g, &qd, iy0, ox * sw - pl, c, out + ox * n);
                }
                continue;
            }
            if (iy0 < base || iy0 + 3 > base + rows_in_buf) {
                /* Refill: padded input rows [iy0, iy0 + buf_rows) of the quad. */
                base = iy0;
                rows_in_buf = buf_rows;
                for (int r = 0; r < buf_rows; r++) {
                    const int iy = iy0 + r;
                    uint32_t *d = buf + r * bufw;
                    if (iy < 0 || iy >= g.in_h) {
                        for (int bx = 0; bx < bufw; bx++) {
                            d[bx] = zpw;
                        }
                        continue;
                    }
                    const int8_t *src = input + iy * g.row + c;
                    int bx = 0;
                    for (; bx < pl; bx++) {
                        d[bx] = zpw;
                    }
                    for (; bx < in_end; bx++, src += n) {
                        memcpy(&d[bx], src, 4);
                    }
                    for (; bx < bufw; bx++) {
                        d[bx] = zpw;
                    }
                }
            }
            reds_dsp_dw3x3_row((const int8_t *)(buf + (iy0 - base) * bufw), out_w, sw * 4,
                               bufw * 4, &qd, 2 * g.zp + 1, out, n);
        }
    }
}

#else /* no DSP extension: the reference is the implementation */

extern "C" void reds_depthwise_dsp(const reds_conv_layer *layer, int k, const int8_t *input,
                                   int8_t *output);

void reds_depthwise_dsp(const reds_conv_layer *layer, int k, const int8_t *input,
                        int8_t *output) {
    reds_depthwise_ref(layer, k, input, output);
}

#endif
