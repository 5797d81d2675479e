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

/* Per 4-channel quad: weights widened to int16 pairs per tap, words
 * (c0, c2), (c1, c3) to match SXTB16's lanes; requantisation constants. With
 * the fast requantisation, weights and bias are doubled (|w| <= 128 stays an
 * int16, |acc| < 2^30 fits doubled): the accumulators come out as the 2 * acc
 * that SMMULR takes. */
typedef struct reds_dsp_dwq {
    int32_t bias[4];
    int32_t me[8]; /* (m, e) per channel: one LDRD each */
    uint32_t w[2 * REDS_DSP_DW_MAX_TAPS];
} reds_dsp_dwq;

/* Windows of one output row of a kx3 kernel, 4 channels, fast
 * requantisation, reading the input in place (reds_dsp_dw3_*). */
typedef struct reds_dsp_dwrow {
    const int8_t *src; /* the first window's first valid tap */
    const uint32_t *w; /* the widened weights of its first valid kernel row */
    int8_t *out;       /* the first output; outputs n bytes apart */
    int8_t *end;       /* out + windows * n (at least one window) */
    int adv;           /* input bytes from a window's last valid row to the next window */
    int n, row;        /* input bytes between pixels, between rows */
    uint32_t off2;     /* the input offset in both halfwords */
    int32_t zp2p1;     /* 2 * output zero point + 1 (reds_dsp_rq8) */
} reds_dsp_dwrow;
/* Offsets the assembly below reads. */
static_assert(offsetof(reds_dsp_dwrow, src) == 0 && offsetof(reds_dsp_dwrow, w) == 4 &&
                  offsetof(reds_dsp_dwrow, out) == 8 && offsetof(reds_dsp_dwrow, end) == 12 &&
                  offsetof(reds_dsp_dwrow, adv) == 16 && offsetof(reds_dsp_dwrow, n) == 20 &&
                  offsetof(reds_dsp_dwrow, row) == 24 && offsetof(reds_dsp_dwrow, off2) == 28 &&
                  offsetof(reds_dsp_dwrow, zp2p1) == 32,
              "reds_dsp_dwrow layout");
static_assert(offsetof(reds_dsp_dwq, bias) == 0 && offsetof(reds_dsp_dwq, me) == 16,
              "reds_dsp_dwq layout");

/* The windows' loop is assembly in a naked function, every register in use:
 * r0-r3 accumulators, r4/r5 the input word and its even lanes, r6/r7 weights,
 * r8 input, r9 weights, r10 n, r11 row, r12 offset, lr output; the quad, the
 * zero point, the end and adv live on the stack. Per window: the taps (8
 * instructions each, one ADD per further kernel row), 7 per channel to
 * requantise and store, 10 of loop. One tap (ADDR: "", ", r10" or ", r10, lsl
 * #1"; WOFF: bytes into the first valid kernel row's weights): */
#define REDS_DSP_DW_TAP(ADDR, WOFF)            \
    "ldr r4, [r8" ADDR "]\n\t"                 \
    "ldrd r6, r7, [r9, #" WOFF "]\n\t"         \
    "sxtab16 r5, r12, r4\n\t"                  \
    "sxtab16 r4, r12, r4, ror #8\n\t"          \
    "smlabb r0, r5, r6, r0\n\t"                \
    "smlatt r2, r5, r6, r2\n\t"                \
    "smlabb r1, r4, r7, r1\n\t"                \
    "smlatt r3, r4, r7, r3\n\t"
/* One kernel row: 3 taps, or 2 (a window cut by the left or right padding). */
#define REDS_DSP_DW_ROW3(A, B, C) \
    REDS_DSP_DW_TAP("", A) REDS_DSP_DW_TAP(", r10", B) REDS_DSP_DW_TAP(", r10, lsl #1", C)
#define REDS_DSP_DW_ROW2(A, B) REDS_DSP_DW_TAP("", A) REDS_DSP_DW_TAP(", r10", B)
#define REDS_DSP_DW_NEXT "add r8, r8, r11\n\t"
/* reds_dsp_rq8 of the doubled accumulator rA (channel A) and its byte store;
 * r4 = the quad, r5 = zp2p1. */
#define REDS_DSP_DW_RQ(A, ME)                  \
    "ldrd r6, r7, [r4, #" ME "]\n\t"           \
    "smmulr r" A ", r" A ", r6\n\t"            \
    "add r" A ", r" A ", r" A ", asr #31\n\t"  \
    "asr r" A ", r" A ", r7\n\t"               \
    "add r" A ", r" A ", r5\n\t"               \
    "ssat r" A ", #8, r" A ", asr #1\n\t"      \
    "strb r" A ", [lr, #" A "]\n\t"
/* void NAME(const reds_dsp_dwrow *p, const reds_dsp_dwq *qd): the windows
 * [p->out, p->end), MAC = their taps. */
#define REDS_DSP_DW_RUN(NAME, MAC)                                                         \
    static __attribute__((naked, noinline)) void NAME(const reds_dsp_dwrow * /* r0 */,      \
                                                      const reds_dsp_dwq * /* r1 */) {     \
        __asm__ volatile(                                                                  \
            "push {r4-r11, lr}\n\t"                                                        \
            "ldr r2, [r0, #32]\n\t"                                                        \
            "ldr r3, [r0, #12]\n\t"                                                        \
            "ldr r4, [r0, #16]\n\t"                                                        \
            "push {r1-r4}\n\t" /* [sp]: qd, zp2p1, end, adv */                             \
            "ldrd r8, r9, [r0]\n\t"                                                        \
            "ldr lr, [r0, #8]\n\t"                                                         \
            "ldrd r10, r11, [r0, #20]\n\t"                                                 \
            "ldr r12, [r0, #28]\n\t"                                                       \
            "1:\n\t"                                                                       \
            "ldr r4, [sp]\n\t"                                                             \
            "ldm r4, {r0-r3}\n\t"                                                          \
            MAC                                                                            \
            "ldrd r4, r5, [sp]\n\t"                                                        \
            REDS_DSP_DW_RQ("0", "16") REDS_DSP_DW_RQ("1", "24")                            \
            REDS_DSP_DW_RQ("2", "32") REDS_DSP_DW_RQ("3", "40")                            \
            "ldrd r6, r7, [sp, #8]\n\t"                                                    \
            "add r8, r8, r7\n\t"                                                           \
            "add lr, lr, r10\n\t"                                                          \
            "cmp lr, r6\n\t"                                                               \
            "bne 1b\n\t"                                                                   \
            "add sp, sp, #16\n\t"                                                          \
            "pop {r4-r11, pc}\n\t");                                                       \
    }
REDS_DSP_DW_RUN(reds_dsp_dw3_r3, REDS_DSP_DW_ROW3("0", "8", "16") REDS_DSP_DW_NEXT
                                 REDS_DSP_DW_ROW3("24", "32", "40") REDS_DSP_DW_NEXT
                                 REDS_DSP_DW_ROW3("48", "56", "64"))
REDS_DSP_DW_RUN(reds_dsp_dw3_r3_left, REDS_DSP_DW_ROW2("8", "16") REDS_DSP_DW_NEXT
                                      REDS_DSP_DW_ROW2("32", "40") REDS_DSP_DW_NEXT
                                      REDS_DSP_DW_ROW2("56", "64"))
REDS_DSP_DW_RUN(reds_dsp_dw3_r3_right, REDS_DSP_DW_ROW2("0", "8") REDS_DSP_DW_NEXT
                                       REDS_DSP_DW_ROW2("24", "32") REDS_DSP_DW_NEXT
                                       REDS_DSP_DW_ROW2("48", "56"))
REDS_DSP_DW_RUN(reds_dsp_dw3_r2, REDS_DSP_DW_ROW3("0", "8", "16") REDS_DSP_DW_NEXT
                                 REDS_DSP_DW_ROW3("24", "32", "40"))
REDS_DSP_DW_RUN(reds_dsp_dw3_r1, REDS_DSP_DW_ROW3("0", "8", "16"))

/* reds_dsp_rq8 of a doubled accumulator. */
static inline int32_t reds_dsp_dw_rq8(int32_t acc2, int32_t m, int32_t e, int32_t zp2p1) {
    const int32_t x = reds_smmulr(acc2, m);
    return reds_ssat8_asr1(((x + (x >> 31)) >> e) + zp2p1);
}

/* Stores 4 channels of one output pixel. */
static inline __attribute__((always_inline)) void reds_dsp_dw_store(
    int8_t *out, int32_t a0, int32_t a1, int32_t a2, int32_t a3, const reds_dsp_dwq *qd,
    bool fast, int32_t zp, int32_t lo, int32_t hi) {
    const int32_t *me = qd->me;
    if (fast) {
        const int32_t zp2p1 = 2 * zp + 1;
        out[0] = (int8_t)reds_dsp_dw_rq8(a0, me[0], me[1], zp2p1);
        out[1] = (int8_t)reds_dsp_dw_rq8(a1, me[2], me[3], zp2p1);
        out[2] = (int8_t)reds_dsp_dw_rq8(a2, me[4], me[5], zp2p1);
        out[3] = (int8_t)reds_dsp_dw_rq8(a3, me[6], me[7], zp2p1);
    } else {
        out[0] = reds_dsp_out(a0, me[0], me[1], zp, lo, hi);
        out[1] = reds_dsp_out(a1, me[2], me[3], zp, lo, hi);
        out[2] = reds_dsp_out(a2, me[4], me[5], zp, lo, hi);
        out[3] = reds_dsp_out(a3, me[6], me[7], zp, lo, hi);
    }
}

/* Widens the quad's weights (4 channels of `taps` bytes each, channel-major)
 * into the int16 pairs of reds_dsp_dwq.w, doubled when D. */
template <bool D>
static void reds_dsp_dw_widen(const int8_t *wc, int taps, uint32_t *w) {
    for (int t = 0; t < taps; t++, wc++, w += 2) {
        const int32_t w0 = wc[0], w1 = wc[taps], w2 = wc[2 * taps], w3 = wc[3 * taps];
        uint32_t e, o;
        __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(e) : "r"(w0), "r"(w2));
        __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(o) : "r"(w1), "r"(w3));
        if (D) {
            __asm__("sadd16 %0, %0, %0" : "+r"(e));
            __asm__("sadd16 %0, %0, %0" : "+r"(o));
        }
        w[0] = e;
        w[1] = o;
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
 * reds_depthwise_ref. 4 channels at a time: the quad's weights are widened
 * once per call; per tap one 32-bit input load and two SXTAB16 give the 4
 * channels with the input offset added, SMLABB/SMLATT multiply them with packed
 * int16 weights. Windows of kx3 kernels (up to 3 rows) that lie inside the
 * input horizontally read it in place, their kernel rows cut to those inside
 * the input (top and bottom padding contribute 0); the other windows take the
 * per-pixel path. Nothing is copied, so a call on one output row (the row
 * runner's) costs its windows plus the weights' set-up. */
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
    g.off2 = ((uint32_t)layer->input_offset & 0xFFFFu) * 0x10001u;
    const int out_h = layer->out_h, out_w = layer->out_w;
    const int sh = layer->stride_h, sw = layer->stride_w, pt = layer->pad_top, pl = layer->pad_left;
    /* kx3 kernels of up to 3 rows with the fast requantisation read the input
     * in place; the windows before output column ox1 that start at or after
     * input column 0 lie inside it horizontally. */
    const bool three = kw == 3 && kh <= 3 && g.fast;
    int ox1 = g.in_w >= 3 ? (g.in_w - 3 + pl) / sw + 1 : 0;
    ox1 = ox1 < out_w ? ox1 : out_w;
    reds_dsp_dwrow p;
    p.n = n;
    p.row = g.row;
    p.off2 = g.off2;
    p.zp2p1 = 2 * g.zp + 1;
    const int32_t dbl = g.fast ? 2 : 1;
    const int32_t emask = g.fast ? -1 : 0; /* e = ~shift on the fast path */
    reds_dsp_dwq qd;
    for (int c = 0; c < n; c += 4) {
        for (int j = 0; j < 4; j++) {
            qd.bias[j] = bias != NULL ? bias[c + j] * dbl : 0;
            qd.me[2 * j] = mult[c + j];
            qd.me[2 * j + 1] = shift[c + j] ^ emask;
        }
        if (g.fast) {
            reds_dsp_dw_widen<true>(layer->weights + c * taps, taps, qd.w);
        } else {
            reds_dsp_dw_widen<false>(layer->weights + c * taps, taps, qd.w);
        }
        for (int oy = 0; oy < out_h; oy++) {
            const int iy0 = oy * sh - pt;
            int8_t *out = output + oy * out_w * n + c;
            const int ky0 = iy0 < 0 ? -iy0 : 0;
            const int ky1 = g.in_h - iy0 < kh ? g.in_h - iy0 : kh;
            const int rows = ky1 - ky0;
            if (!three || rows <= 0) {
                for (int ox = 0; ox < out_w; ox++) {
                    reds_dsp_dw_pixel(&g, &qd, iy0, ox * sw - pl, c, out + ox * n);
                }
                continue;
            }
            p.w = qd.w + 6 * ky0;
            p.adv = sw * n - (rows - 1) * g.row;
            const int8_t *in_row = input + (iy0 + ky0) * g.row + c;
            for (int ox = 0; ox < out_w;) {
                const int ix0 = ox * sw - pl;
                p.src = in_row + ix0 * n;
                p.out = out + ox * n;
                if (ix0 >= 0 && ix0 + 3 <= g.in_w) { /* the interior run */
                    p.end = out + ox1 * n;
                    if (rows == 3) {
                        reds_dsp_dw3_r3(&p, &qd);
                    } else if (rows == 2) {
                        reds_dsp_dw3_r2(&p, &qd);
                    } else {
                        reds_dsp_dw3_r1(&p, &qd);
                    }
                    ox = ox1;
                    continue;
                }
                p.end = p.out + n;
                if (rows == 3 && ix0 == -1 && g.in_w >= 2) {
                    p.src += n;
                    reds_dsp_dw3_r3_left(&p, &qd);
                } else if (rows == 3 && ix0 >= 0 && ix0 + 2 == g.in_w) {
                    reds_dsp_dw3_r3_right(&p, &qd);
                } else {
                    reds_dsp_dw_pixel(&g, &qd, iy0, ix0, c, p.out);
                }
                ox++;
            }
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
