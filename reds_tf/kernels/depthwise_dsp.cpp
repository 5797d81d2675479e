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

/* The windows of one output row of a kx3 kernel that the assembly below
 * computes (4 channels, fast requantisation, input read in place): a window
 * cut by one column of left padding, an interior run, a window cut by one
 * column of right padding, each optional. */
typedef struct reds_dsp_dwrow {
    const int8_t *src; /* the first window's first valid row, at its column 0 (maybe -1) */
    const uint32_t *w; /* the widened weights of that kernel row */
    int8_t *out;       /* the first window's output; outputs n bytes apart */
    int8_t *mid;       /* the output after the interior run */
    int adv;           /* input bytes from a window's last valid row to the next window */
    int n, row;        /* input bytes between pixels, between rows */
    uint32_t off2;     /* the input offset in both halfwords */
    int32_t zp2p1;     /* 2 * output zero point + 1 (reds_dsp_rq8) */
    int left, right;   /* whether the cut windows are there */
} reds_dsp_dwrow;
/* Offsets the assembly reads. */
static_assert(offsetof(reds_dsp_dwrow, src) == 0 && offsetof(reds_dsp_dwrow, w) == 4 &&
                  offsetof(reds_dsp_dwrow, out) == 8 && offsetof(reds_dsp_dwrow, mid) == 12 &&
                  offsetof(reds_dsp_dwrow, adv) == 16 && offsetof(reds_dsp_dwrow, n) == 20 &&
                  offsetof(reds_dsp_dwrow, row) == 24 && offsetof(reds_dsp_dwrow, off2) == 28 &&
                  offsetof(reds_dsp_dwrow, zp2p1) == 32 && offsetof(reds_dsp_dwrow, left) == 36 &&
                  offsetof(reds_dsp_dwrow, right) == 40,
              "reds_dsp_dwrow layout");
static_assert(offsetof(reds_dsp_dwq, bias) == 0 && offsetof(reds_dsp_dwq, me) == 16,
              "reds_dsp_dwq layout");

/* The windows are assembly in naked functions, every register in use: r0-r3
 * accumulators, r4/r5 the input word and its even lanes, r6/r7 weights, r8
 * input, r9 weights, r10 n, r11 row, r12 offset, lr output; the quad, the zero
 * point, mid, adv and right live on the stack. Per window: the taps (8
 * instructions each, one ADD per further kernel row), 7 per channel to
 * requantise and store, 9 of loop. One tap (ADDR: "", ", r10" or ", r10, lsl
 * #1"; WOFF: bytes into the first valid kernel row's weights; THEN: after its
 * input load, the move to the next row when it is a row's last, early so that
 * the next load's address is not waited for): */
#define REDS_DSP_DW_TAP(ADDR, WOFF, THEN)      \
    "ldr r4, [r8" ADDR "]\n\t" THEN            \
    "ldrd r6, r7, [r9, #" WOFF "]\n\t"         \
    "sxtab16 r5, r12, r4\n\t"                  \
    "sxtab16 r4, r12, r4, ror #8\n\t"          \
    "smlabb r0, r5, r6, r0\n\t"                \
    "smlatt r2, r5, r6, r2\n\t"                \
    "smlabb r1, r4, r7, r1\n\t"                \
    "smlatt r3, r4, r7, r3\n\t"
/* One kernel row of a window: 3 taps, or 2 (cut on the left or the right);
 * A, B, C: the weight offsets of its taps; N: REDS_DSP_DW_NEXT or "". */
#define REDS_DSP_DW_FULL(A, B, C, N)                                \
    REDS_DSP_DW_TAP("", A, "") REDS_DSP_DW_TAP(", r10", B, "")      \
    REDS_DSP_DW_TAP(", r10, lsl #1", C, N)
#define REDS_DSP_DW_LEFT(A, B, C, N) \
    REDS_DSP_DW_TAP(", r10", B, "") REDS_DSP_DW_TAP(", r10, lsl #1", C, N)
#define REDS_DSP_DW_RIGHT(A, B, C, N) REDS_DSP_DW_TAP("", A, "") REDS_DSP_DW_TAP(", r10", B, N)
/* 1, 2 or 3 valid kernel rows of ROW windows. */
#define REDS_DSP_DW_NEXT "add r8, r8, r11\n\t"
#define REDS_DSP_DW_R1(ROW) ROW("0", "8", "16", "")
#define REDS_DSP_DW_R2(ROW) ROW("0", "8", "16", REDS_DSP_DW_NEXT) ROW("24", "32", "40", "")
#define REDS_DSP_DW_R3(ROW)                                                            \
    ROW("0", "8", "16", REDS_DSP_DW_NEXT) ROW("24", "32", "40", REDS_DSP_DW_NEXT)       \
    ROW("48", "56", "64", "")
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
/* One window: bias, taps (MAC), requantisation, on to the next window. */
#define REDS_DSP_DW_WINDOW(MAC)                                                    \
    "ldr r4, [sp]\n\t"                                                             \
    "ldm r4, {r0-r3}\n\t" MAC "ldrd r4, r5, [sp]\n\t" REDS_DSP_DW_RQ("0", "16")     \
    REDS_DSP_DW_RQ("1", "24") REDS_DSP_DW_RQ("2", "32") REDS_DSP_DW_RQ("3", "40")   \
    "ldr r6, [sp, #12]\n\t"                                                        \
    "add r8, r8, r6\n\t"                                                           \
    "add lr, lr, r10\n\t"
/* void NAME(const reds_dsp_dwrow *p, const reds_dsp_dwq *qd): the windows of
 * one output row with RR valid kernel rows (REDS_DSP_DW_R1..3). */
#define REDS_DSP_DW_RUN(NAME, RR)                                                          \
    static __attribute__((naked, noinline)) void NAME(const reds_dsp_dwrow * /* r0 */,      \
                                                      const reds_dsp_dwq * /* r1 */) {     \
        __asm__ volatile(                                                                  \
            "push {r4-r11, lr}\n\t"                                                        \
            "ldr r2, [r0, #32]\n\t"                                                        \
            "ldr r3, [r0, #12]\n\t"                                                        \
            "ldr r4, [r0, #16]\n\t"                                                        \
            "ldr r5, [r0, #40]\n\t"                                                        \
            "push {r1-r5}\n\t" /* [sp]: qd, zp2p1, mid, adv, right */                      \
            "ldr r6, [r0, #36]\n\t"                                                        \
            "ldrd r8, r9, [r0]\n\t"                                                        \
            "ldr lr, [r0, #8]\n\t"                                                         \
            "ldrd r10, r11, [r0, #20]\n\t"                                                 \
            "ldr r12, [r0, #28]\n\t"                                                       \
            "cmp r6, #0\n\t"                                                               \
            "beq 1f\n\t"                                                                   \
            REDS_DSP_DW_WINDOW(RR(REDS_DSP_DW_LEFT))                                       \
            "1:\n\t"                                                                       \
            "ldr r6, [sp, #8]\n\t"                                                         \
            "cmp lr, r6\n\t"                                                               \
            "beq 3f\n\t"                                                                   \
            "2:\n\t"                                                                       \
            REDS_DSP_DW_WINDOW(RR(REDS_DSP_DW_FULL))                                       \
            "ldr r6, [sp, #8]\n\t"                                                         \
            "cmp lr, r6\n\t"                                                               \
            "bne 2b\n\t"                                                                   \
            "3:\n\t"                                                                       \
            "ldr r6, [sp, #16]\n\t"                                                        \
            "cmp r6, #0\n\t"                                                               \
            "beq 4f\n\t"                                                                   \
            REDS_DSP_DW_WINDOW(RR(REDS_DSP_DW_RIGHT))                                      \
            "4:\n\t"                                                                       \
            "add sp, sp, #20\n\t"                                                          \
            "pop {r4-r11, pc}\n\t");                                                       \
    }
REDS_DSP_DW_RUN(reds_dsp_dw3_r1, REDS_DSP_DW_R1)
REDS_DSP_DW_RUN(reds_dsp_dw3_r2, REDS_DSP_DW_R2)
REDS_DSP_DW_RUN(reds_dsp_dw3_r3, REDS_DSP_DW_R3)

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

/* Widens `count` taps of the quad's weights (4 channels `taps` bytes apart)
 * into the int16 pairs of reds_dsp_dwq.w, doubled when D. */
template <bool D>
static void reds_dsp_dw_widen(const int8_t *wc, int taps, int count, uint32_t *w) {
    for (int t = 0; t < count; t++, wc++, w += 2) {
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

/* Taps t..t+3 of channels j and j + 2 (x, y: their 4 weight bytes), doubled,
 * into w[0], w[2], w[4], w[6] (w = &reds_dsp_dwq.w[2 * t + j]). */
static inline void reds_dsp_dw_widen4(uint32_t x, uint32_t y, uint32_t *w) {
    uint32_t xe = reds_sxtb16(x), ye = reds_sxtb16(y);           /* taps t, t + 2 */
    uint32_t xo = reds_sxtb16_ror8(x), yo = reds_sxtb16_ror8(y); /* taps t + 1, t + 3 */
    __asm__("sadd16 %0, %0, %0" : "+r"(xe));
    __asm__("sadd16 %0, %0, %0" : "+r"(ye));
    __asm__("sadd16 %0, %0, %0" : "+r"(xo));
    __asm__("sadd16 %0, %0, %0" : "+r"(yo));
    uint32_t r0, r1, r2, r3;
    __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(r0) : "r"(xe), "r"(ye));
    __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(r1) : "r"(xo), "r"(yo));
    __asm__("pkhtb %0, %1, %2, asr #16" : "=r"(r2) : "r"(ye), "r"(xe));
    __asm__("pkhtb %0, %1, %2, asr #16" : "=r"(r3) : "r"(yo), "r"(xo));
    w[0] = r0;
    w[2] = r1;
    w[4] = r2;
    w[6] = r3;
}

/* reds_dsp_dw_widen<true> of 3x3 weights: 4 taps per word load. */
static void reds_dsp_dw_widen9(const int8_t *wc, uint32_t *w) {
    for (int t = 0; t < 8; t += 4) {
        uint32_t x0, x1, x2, x3;
        memcpy(&x0, wc + t, 4);
        memcpy(&x1, wc + 9 + t, 4);
        memcpy(&x2, wc + 18 + t, 4);
        memcpy(&x3, wc + 27 + t, 4);
        reds_dsp_dw_widen4(x0, x2, w + 2 * t);
        reds_dsp_dw_widen4(x1, x3, w + 2 * t + 1);
    }
    reds_dsp_dw_widen<true>(wc + 8, 9, 1, w + 16);
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
    /* kx3 kernels of up to 3 rows with the fast requantisation, on inputs at
     * least 3 wide, read the input in place: per output row, from column ox0
     * (the first window starting at input column -1 or later), a window cut
     * on the left, the interior run [oxi, ox1), a window cut on the right, by
     * one assembly call; the windows before ox0 and from oxt (SAME padding
     * of more than a column) by the per-pixel path. */
    const bool three = kw == 3 && kh <= 3 && g.fast && g.in_w >= 3;
    reds_dsp_dwrow p;
    int ox0 = out_w, oxt = out_w, ox1 = out_w;
    if (three) {
        ox0 = pl > 1 ? (pl - 1 + sw - 1) / sw : 0;
        ox0 = ox0 < out_w ? ox0 : out_w;
        p.left = ox0 < out_w && ox0 * sw - pl == -1;
        const int oxi = ox0 + p.left;
        ox1 = (g.in_w - 3 + pl) / sw + 1;
        ox1 = ox1 < out_w ? ox1 : out_w;
        ox1 = ox1 > oxi ? ox1 : oxi;
        p.right = ox1 < out_w && ox1 * sw - pl + 2 == g.in_w;
        oxt = ox1 + p.right;
    }
    p.n = n;
    p.row = g.row;
    p.off2 = g.off2;
    p.zp2p1 = 2 * g.zp + 1;
    const int32_t dbl = g.fast ? 2 : 1;
    const int32_t emask = g.fast ? -1 : 0; /* e = ~shift on the fast path */
    reds_dsp_dwq qd;
    for (int c = 0; c < n; c += 4) {
        const int32_t *mc = mult + c, *sc = shift + c;
        qd.me[0] = mc[0];
        qd.me[1] = sc[0] ^ emask;
        qd.me[2] = mc[1];
        qd.me[3] = sc[1] ^ emask;
        qd.me[4] = mc[2];
        qd.me[5] = sc[2] ^ emask;
        qd.me[6] = mc[3];
        qd.me[7] = sc[3] ^ emask;
        if (bias != NULL) {
            const int32_t *bc = bias + c;
            qd.bias[0] = bc[0] * dbl;
            qd.bias[1] = bc[1] * dbl;
            qd.bias[2] = bc[2] * dbl;
            qd.bias[3] = bc[3] * dbl;
        } else {
            memset(qd.bias, 0, sizeof(qd.bias));
        }
        const int8_t *wc = layer->weights + c * taps;
        if (g.fast && taps == 9) {
            reds_dsp_dw_widen9(wc, qd.w);
        } else if (g.fast) {
            reds_dsp_dw_widen<true>(wc, taps, taps, qd.w);
        } else {
            reds_dsp_dw_widen<false>(wc, taps, taps, qd.w);
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
            for (int ox = 0; ox < ox0; ox++) {
                reds_dsp_dw_pixel(&g, &qd, iy0, ox * sw - pl, c, out + ox * n);
            }
            p.src = input + (iy0 + ky0) * g.row + (ox0 * sw - pl) * n + c;
            p.w = qd.w + 6 * ky0;
            p.out = out + ox0 * n;
            p.mid = out + ox1 * n;
            p.adv = sw * n - (rows - 1) * g.row;
            if (rows == 3) {
                reds_dsp_dw3_r3(&p, &qd);
            } else if (rows == 2) {
                reds_dsp_dw3_r2(&p, &qd);
            } else {
                reds_dsp_dw3_r1(&p, &qd);
            }
            for (int ox = oxt; ox < out_w; ox++) {
                reds_dsp_dw_pixel(&g, &qd, iy0, ox * sw - pl, c, out + ox * n);
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
