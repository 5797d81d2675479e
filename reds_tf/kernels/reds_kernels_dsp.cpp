/* reds_kernels_dsp.cpp: Cortex-M4 DSP-extension kernels of the generated REDS runtime.
 * A fixed source (reds_tf/kernels/) that `reds export` copies beside the
 * generated model files. Every DSP instruction goes through reds_dsp.h.
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
/* The Arduino core builds every sketch with -Os; these loops are where the
 * time goes, and at -Os GCC stops unrolling and scheduling them (DS-CNN-S:
 * 2.00 instead of 1.84 instructions per MAC). This file alone is built at -O2
 * (GCC 7 and later; other compilers keep their flags). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O2")
#endif

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "reds_kernels.h"

#if defined(__ARM_FEATURE_DSP)
#include "reds_dsp.h"

/* reds_requantize for the usual case, -31 <= shift <= -1 and multiplier !=
 * INT32_MIN (the caller checks), in a dozen instructions, same value:
 *  - SaturatingRoundingDoublingHighMul: with gemmlowp's nudge, the truncating
 *    division by 2^31 equals floor((a*b + 2^30) / 2^31) for either sign of a*b
 *    (for a*b < 0 the nudge 1 - 2^30 and the 2^31 - 1 that turns truncation
 *    into floor add up to 2^30): one SMLAL and a 64-bit shift. It cannot
 *    saturate, and x > INT32_MIN, because b != INT32_MIN.
 *  - RoundingDivideByPOT(x, e), e = -shift >= 1, rounds half away from zero:
 *    floor((x + 2^(e-1) - [x < 0]) / 2^e). With y = x - [x < 0] (no overflow)
 *    that is floor((floor(y / 2^(e-1)) + 1) / 2), and e - 1 = ~shift. */
static inline int32_t reds_dsp_requantize_neg(int32_t acc, int32_t multiplier, int32_t shift) {
    const int32_t x = (int32_t)(((int64_t)acc * multiplier + (1 << 30)) >> 31);
    const int32_t y = x + (x >> 31);
    return ((y >> ~shift) + 1) >> 1;
}

/* chunks * 4 int8 inputs -> chunks * 2 words of int16 pairs (x + offset). */
static void reds_dsp_widen(const int8_t *in, int chunks, int32_t offset, uint32_t *xw) {
    const uint32_t off2 = ((uint32_t)offset & 0xFFFFu) * 0x10001u;
    /* Two chunks per iteration; the input may be unaligned (LDR allows it). */
    for (int c = chunks >> 1; c > 0; c--) {
        uint32_t v0, v1;
        memcpy(&v0, in, 4);
        memcpy(&v1, in + 4, 4);
        in += 8;
        xw[0] = reds_sxtab16(off2, v0);
        xw[1] = reds_sxtab16_ror8(off2, v0);
        xw[2] = reds_sxtab16(off2, v1);
        xw[3] = reds_sxtab16_ror8(off2, v1);
        xw += 4;
    }
    if (chunks & 1) {
        uint32_t v;
        memcpy(&v, in, 4);
        xw[0] = reds_sxtab16(off2, v);
        xw[1] = reds_sxtab16_ror8(off2, v);
    }
}

/* One chunk for 4 rows: 2 input words, 4 weight words, 8 SXTB16, 8 SMLAD. */
#define REDS_DSP_TWO_ROWS(A, B)                    \
    "ldrd %[t0], %[t1], [%[w]], #8\n\t"            \
    "sxtb16 %[s], %[t0]\n\t"                       \
    "smlad %[" A "], %[s], %[xe], %[" A "]\n\t"    \
    "sxtb16 %[s], %[t0], ror #8\n\t"               \
    "smlad %[" A "], %[s], %[xo], %[" A "]\n\t"    \
    "sxtb16 %[s], %[t1]\n\t"                       \
    "smlad %[" B "], %[s], %[xe], %[" B "]\n\t"    \
    "sxtb16 %[s], %[t1], ror #8\n\t"               \
    "smlad %[" B "], %[s], %[xo], %[" B "]\n\t"
#define REDS_DSP_CHUNK                             \
    "ldrd %[xe], %[xo], [%[x]], #8\n\t"            \
    REDS_DSP_TWO_ROWS("a0", "a1") REDS_DSP_TWO_ROWS("a2", "a3")

/* Column j < 3 of a widened chunk, as int16: the chunk's words are (x0, x2)
 * and (x1, x3), so column j sits at halfword (j & 1) * 2 + (j >> 1). */
static inline int32_t reds_dsp_lane(const uint32_t *chunk, int j) {
    return ((const int16_t *)(const void *)chunk)[((j & 1) << 1) | (j >> 1)];
}

/* One row's part of a last chunk of `tail` columns. */
static inline int32_t reds_dsp_tail(const int8_t *w, int tail, const uint32_t *chunk) {
    int32_t sum = 0;
    for (int j = 0; j < tail; j++) {
        sum += (int32_t)w[j] * reds_dsp_lane(chunk, j);
    }
    return sum;
}

/* One strip: `rows` rows (groups of 4, the last one shorter) over n full
 * chunks plus a last chunk of `tail` (0..3) columns, starting at widened input
 * x. Accumulators start from `init` (the bias when the strip's rows are new,
 * else acc itself) and end in acc. */
static const int8_t *reds_dsp_strip(const int8_t *w, int32_t *acc, const int32_t *init, int rows,
                                    int n, int tail, const uint32_t *x0) {
    const int pairs = n >> 1;
    /* LDRD needs word-aligned weights: a strip that follows a shorter group
     * with a short last chunk (conv im2col widths) takes the C path below. */
    for (; rows >= 4 && ((uintptr_t)w & 3u) == 0; rows -= 4) {
        int32_t a0 = init[0], a1 = init[1], a2 = init[2], a3 = init[3];
        const uint32_t *x = x0;
        uint32_t t0, t1, xe, xo, s;
        if (n & 1) {
            __asm__ volatile(REDS_DSP_CHUNK
                             : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3),
                               [w] "+r"(w), [x] "+r"(x), [t0] "=&r"(t0), [t1] "=&r"(t1),
                               [xe] "=&r"(xe), [xo] "=&r"(xo), [s] "=&r"(s)
                             :
                             : "memory");
        }
        if (pairs) {
            /* Unrolled twice: the loop costs 2 instructions per 32 MACs. */
            int i = pairs;
            __asm__ volatile("1:\n\t" REDS_DSP_CHUNK REDS_DSP_CHUNK
                             "subs %[i], %[i], #1\n\t"
                             "bne 1b\n\t"
                             : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3),
                               [w] "+r"(w), [x] "+r"(x), [i] "+r"(i), [t0] "=&r"(t0),
                               [t1] "=&r"(t1), [xe] "=&r"(xe), [xo] "=&r"(xo), [s] "=&r"(s)
                             :
                             : "cc", "memory");
        }
        if (tail) {
            /* The shorter last chunk: 4 rows of `tail` bytes (conv im2col widths). */
            a0 += reds_dsp_tail(w, tail, x);
            a1 += reds_dsp_tail(w + tail, tail, x);
            a2 += reds_dsp_tail(w + 2 * tail, tail, x);
            a3 += reds_dsp_tail(w + 3 * tail, tail, x);
            w += 4 * tail;
        }
        acc[0] = a0;
        acc[1] = a1;
        acc[2] = a2;
        acc[3] = a3;
        acc += 4;
        init += 4;
    }
    for (; rows > 0; rows -= 4) {
        /* A shorter last group (chunks of `rows` words), or unaligned weights. */
        const int g = rows < 4 ? rows : 4;
        for (int r = 0; r < g; r++) {
            acc[r] = init[r];
        }
        const uint32_t *x = x0;
        for (int c = 0; c < n; c++) {
            const uint32_t xe = x[0], xo = x[1];
            x += 2;
            for (int r = 0; r < g; r++) {
                uint32_t wv;
                memcpy(&wv, w, 4);
                w += 4;
                acc[r] = reds_smlad(reds_sxtb16(wv), xe, acc[r]);
                acc[r] = reds_smlad(reds_sxtb16_ror8(wv), xo, acc[r]);
            }
        }
        for (int r = 0; r < g; r++) {
            acc[r] += reds_dsp_tail(w, tail, x);
            w += tail;
        }
        acc += g;
        init += g;
    }
    return w;
}

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

/* ---------------------------------------------------------------------------
 * Convolutions (nested im2col layout, docs/DESIGN.md). The weights are the FC
 * nested layout of the (o_K, kh*kw*i_K) matrix, so the FC strip walker above
 * serves standard convolutions (one output pixel's im2col vector at a time)
 * and the pointwise kernel below walks the same bytes two rows and two pixels
 * at a time.
 * ------------------------------------------------------------------------- */

/* Submodels a DSP conv kernel handles (strip tables on the stack); larger k
 * take the reference. */
#define REDS_DSP_MAX_K 16

/* reds_dsp_requantize_neg with e = ~shift precomputed. */
static inline int32_t reds_dsp_rq(int32_t acc, int32_t m, int32_t e) {
    const int32_t x = (int32_t)(((int64_t)acc * m + (1 << 30)) >> 31);
    return (((x + (x >> 31)) >> e) + 1) >> 1;
}

/* Whether every one of the n rows takes reds_dsp_requantize_neg and the
 * clamp is plain int8 saturation (SSAT): the common case, checked once. */
static bool reds_dsp_all_fast(const int32_t *mult, const int32_t *shift, int n, int32_t lo,
                              int32_t hi) {
    bool fast = lo == -128 && hi == 127;
    for (int r = 0; r < n && fast; r++) {
        fast = (uint32_t)(shift[r] + 31) < 31u && mult[r] != INT32_MIN;
    }
    return fast;
}

/* Requantise, add the output zero point, clamp: reds_requantize's value. */
static inline int8_t reds_dsp_out(int32_t acc, int32_t m, int32_t sh, int32_t zp, int32_t lo,
                                  int32_t hi) {
    int32_t v;
    if (__builtin_expect((uint32_t)(sh + 31) < 31u && m != INT32_MIN, 1)) {
        v = reds_dsp_requantize_neg(acc, m, sh);
    } else {
        v = reds_requantize(acc, m, sh);
    }
    v += zp;
    v = v < lo ? lo : v;
    v = v > hi ? hi : v;
    return (int8_t)v;
}

static bool reds_dsp_conv_const_in(const reds_conv_layer *layer, int k, const int8_t *input,
                                   int8_t *output, int32_t *scratch);
static bool reds_dsp_conv_small(const reds_conv_layer *layer, int k, const int8_t *input,
                                int8_t *output);

void reds_conv_dsp(const reds_conv_layer *layer, int k, const int8_t *input, int8_t *output,
                   int32_t *scratch) {
    if (reds_dsp_conv_small(layer, k, input, output)) {
        return;
    }
    if (k < REDS_DSP_MAX_K && reds_dsp_conv_const_in(layer, k, input, output, scratch)) {
        return;
    }
    const uint16_t *iw = layer->in_width;
    const uint16_t *ow = layer->out_width;
    const int taps = (int)layer->kernel_h * layer->kernel_w;
    if (k >= REDS_DSP_MAX_K) {
        reds_conv_ref(layer, k, input, output, scratch);
        return;
    }
    /* Column widths n_s = taps * i_s. An R strip (columns [n_{s-1}, n_s)) must
     * start on a chunk of the widened vector; B strips always start at 0 and
     * any strip may end in a shorter chunk (e.g. 9 columns of a 3x3 conv on
     * one channel). */
    int ncol[REDS_DSP_MAX_K];
    for (int s = 0; s <= k; s++) {
        ncol[s] = taps * iw[s];
        if (s > 0 && ncol[s] > ncol[s - 1] && (ncol[s - 1] & 3)) {
            reds_conv_ref(layer, k, input, output, scratch);
            return;
        }
    }
    const int n_in = iw[k];
    const int n_out = ow[k];
    const int32_t q = layer->qparam_stride * k;
    const int32_t *bias = layer->bias != NULL ? layer->bias + q : NULL;
    const int32_t *mult = layer->multiplier + q;
    const int32_t *shift = layer->shift + q;
    const int32_t offset = layer->input_offset;
    const uint32_t off2 = ((uint32_t)offset & 0xFFFFu) * 0x10001u;
    const int32_t zp = layer->output_offset, lo = layer->act_min, hi = layer->act_max;
    const bool fast = reds_dsp_all_fast(mult, shift, n_out, lo, hi);
    int32_t *acc = scratch;
    /* The widened im2col vector in SXTB16 lane order: per chunk of 4 columns
     * the words (x0, x2), (x1, x3); n_k int16 plus at most 2 of slack. */
    uint32_t *xw = (uint32_t *)(scratch + n_out);
    int16_t *col = (int16_t *)(void *)xw;
    if (bias == NULL) {
        bias = acc; /* zeroed per pixel below */
    }
    for (int oy = 0; oy < layer->out_h; oy++) {
        const int iy0 = oy * layer->stride_h - layer->pad_top;
        for (int ox = 0; ox < layer->out_w; ox++) {
            const int ix0 = ox * layer->stride_w - layer->pad_left;
            int pos = 0;
            int c_prev = 0;
            for (int j = 0; j <= k; j++) {
                const int c_j = iw[j];
                const int len = c_j - c_prev;
                if (len <= 0) {
                    continue;
                }
                for (int ky = 0; ky < layer->kernel_h; ky++) {
                    const int iy = iy0 + ky;
                    const bool row_in = iy >= 0 && iy < layer->in_h;
                    for (int kx = 0; kx < layer->kernel_w; kx++) {
                        const int ix = ix0 + kx;
                        const bool in = row_in && ix >= 0 && ix < layer->in_w;
                        const int8_t *src = input + (iy * layer->in_w + ix) * n_in + c_prev;
                        if (((pos | len) & 3) == 0) {
                            /* Whole chunks: two SXTAB16 per 4 channels. */
                            uint32_t *d = xw + (pos >> 1);
                            if (!in) {
                                memset(d, 0, (size_t)len * 2u);
                            } else {
                                for (int c = 0; c < len; c += 4) {
                                    uint32_t v;
                                    memcpy(&v, src + c, 4);
                                    d[0] = reds_sxtab16(off2, v);
                                    d[1] = reds_sxtab16_ror8(off2, v);
                                    d += 2;
                                }
                            }
                        } else {
                            for (int c = 0; c < len; c++) {
                                const int p = pos + c;
                                col[(p & ~3) | ((p & 1) << 1) | ((p >> 1) & 1)] =
                                    (int16_t)(in ? src[c] + offset : 0);
                            }
                        }
                        pos += len;
                    }
                }
                c_prev = c_j;
            }
            if (bias == acc) {
                memset(acc, 0, (size_t)n_out * sizeof(int32_t));
            }
            const int8_t *w = layer->weights;
            int ip = 0, op = 0;
            for (int s = 0; s <= k; s++) {
                const int i = ncol[s], o = ow[s];
                if (i > ip && op > 0) {
                    w = reds_dsp_strip(w, acc, acc, op, (i - ip) >> 2, (i - ip) & 3,
                                       xw + (ip >> 1)); /* R_s */
                }
                if (o > op && i > 0) {
                    w = reds_dsp_strip(w, acc + op, bias + op, o - op, i >> 2, i & 3,
                                       xw); /* B_s */
                }
                ip = i;
                op = o;
            }
            int8_t *out = output + (oy * layer->out_w + ox) * n_out;
            if (fast) {
                for (int r = 0; r < n_out; r++) {
                    out[r] = (int8_t)reds_ssat8(reds_dsp_rq(acc[r], mult[r], ~shift[r]) + zp);
                }
            } else {
                for (int r = 0; r < n_out; r++) {
                    out[r] = reds_dsp_out(acc[r], mult[r], shift[r], zp, lo, hi);
                }
            }
        }
    }
}

/* Two pixels, n_in = 4 * chunks int8 each -> per chunk the words
 * (p0: x0, x2), (p0: x1, x3), (p1: x0, x2), (p1: x1, x3), offset added. */
static void reds_dsp_widen2(const int8_t *in0, const int8_t *in1, int chunks, int32_t offset,
                            uint32_t *xw) {
    const uint32_t off2 = ((uint32_t)offset & 0xFFFFu) * 0x10001u;
    for (int c = 0; c < chunks; c++) {
        uint32_t v0, v1;
        memcpy(&v0, in0 + 4 * c, 4);
        memcpy(&v1, in1 + 4 * c, 4);
        xw[0] = reds_sxtab16(off2, v0);
        xw[1] = reds_sxtab16_ror8(off2, v0);
        xw[2] = reds_sxtab16(off2, v1);
        xw[3] = reds_sxtab16_ror8(off2, v1);
        xw += 4;
    }
}

/* One chunk for rows (r, r+1) and two pixels: one 64-bit weight load, four
 * SXTB16, two 64-bit input loads, eight SMLAD (16 MACs in 15 instructions). */
#define REDS_DSP_PW_CHUNK                          \
    "ldrd %[t0], %[t1], [%[w]], #16\n\t"           \
    "ldrd %[xe], %[xo], [%[x]], #8\n\t"            \
    "sxtb16 %[u0], %[t0], ror #8\n\t"              \
    "sxtb16 %[t0], %[t0]\n\t"                      \
    "smlad %[a00], %[t0], %[xe], %[a00]\n\t"       \
    "smlad %[a00], %[u0], %[xo], %[a00]\n\t"       \
    "sxtb16 %[u1], %[t1], ror #8\n\t"              \
    "sxtb16 %[t1], %[t1]\n\t"                      \
    "smlad %[a10], %[t1], %[xe], %[a10]\n\t"       \
    "smlad %[a10], %[u1], %[xo], %[a10]\n\t"       \
    "ldrd %[xe], %[xo], [%[x]], #8\n\t"            \
    "smlad %[a01], %[t0], %[xe], %[a01]\n\t"       \
    "smlad %[a01], %[u0], %[xo], %[a01]\n\t"       \
    "smlad %[a11], %[t1], %[xe], %[a11]\n\t"       \
    "smlad %[a11], %[u1], %[xo], %[a11]\n\t"

/* Requantisation of the fast path (see reds_dsp_all_fast2), output zero point
 * folded in: zp2p1 = 2 * zp + 1, e = ~shift >= 1. Equals
 * reds_ssat8(reds_dsp_rq(acc, m, e) + zp):
 *  - |acc| < 2^30, so 2 * acc fits and SMMULR(2 acc, m) = floor((2 acc m + 2^31)
 *    / 2^32) = floor((acc m + 2^30) / 2^31), the SaturatingRoundingDoublingHighMul;
 *  - ((a + 1) >> 1) + zp == (a + zp2p1) >> 1, and with e >= 1, |a| < 2^30 so
 *    a + zp2p1 cannot overflow; SSAT does the final shift for free. */
static inline int32_t reds_dsp_rq8(int32_t acc, int32_t m, int32_t e, int32_t zp2p1) {
    const int32_t x = reds_smmulr(acc + acc, m);
    const int32_t t = ((x + (x >> 31)) >> e) + zp2p1;
    return reds_ssat8_asr1(t);
}

/* Whether reds_dsp_rq8 serves every one of the n rows: plain int8 saturation
 * as the clamp, shifts in [-31, -2] (e >= 1), multiplier != INT32_MIN, and
 * every accumulator provably below 2^30 in magnitude: |bias| plus n_terms
 * products of at most 255 * 128 = 32640 (int8 weight, offset int8 input). */
static bool reds_dsp_all_fast2(const int32_t *mult, const int32_t *shift, const int32_t *bias,
                               int n, int32_t n_terms, int32_t lo, int32_t hi) {
    bool fast = lo == -128 && hi == 127 && n_terms >= 0 && n_terms <= 32767;
    const int32_t room = fast ? (1 << 30) - 1 - n_terms * 32640 : 0;
    for (int r = 0; r < n && fast; r++) {
        fast = (uint32_t)(shift[r] + 31) < 30u && mult[r] != INT32_MIN &&
               (bias == NULL || (bias[r] <= room && bias[r] >= -room));
    }
    return fast;
}

/* Channels of one pass of reds_dsp_conv_small (its table is on the stack). */
#define REDS_DSP_SMALL_CH 64

/* One output pixel of reds_dsp_conv_small over a table of channels: per
 * channel 8 words {bias, 5 weight pairs, multiplier, e = ~shift (bit 8 set on
 * the last channel)} loaded by two LDM; the pixel's 5 im2col pairs stay in
 * registers. 16 instructions per output (10 MACs' worth of SMLAD, requantised
 * as reds_dsp_rq8). ASR by register reads only the low byte of e. */
static __attribute__((noinline)) void reds_dsp_small_pixel(const uint32_t *x,
                                                          const uint32_t *tab, int8_t *out,
                                                          int32_t zp2p1) {
    register uint32_t x0 __asm__("r5") = x[0];
    register uint32_t x1 __asm__("r6") = x[1];
    register uint32_t x2 __asm__("r8") = x[2];
    register uint32_t x3 __asm__("r9") = x[3];
    register uint32_t x4 __asm__("r10") = x[4];
    register const uint32_t *wp __asm__("r11") = tab;
    register int8_t *o __asm__("r12") = out;
    register int32_t zq __asm__("lr") = zp2p1;
    register int32_t a __asm__("r0");
    register uint32_t t1 __asm__("r1"), t2 __asm__("r2"), t3 __asm__("r3"), t4 __asm__("r4");
    __asm__ volatile(
        "1:\n\t"
        "ldmia %[wp]!, {r0-r4}\n\t"
        "smlad r0, %[x0], r1, r0\n\t"
        "smlad r0, %[x1], r2, r0\n\t"
        "smlad r0, %[x2], r3, r0\n\t"
        "smlad r0, %[x3], r4, r0\n\t"
        "ldmia %[wp]!, {r1-r3}\n\t"
        "smlad r0, %[x4], r1, r0\n\t"
        "add r0, r0, r0\n\t"
        "smmulr r0, r0, r2\n\t"
        "add r0, r0, r0, asr #31\n\t"
        "asr r0, r0, r3\n\t"
        "add r0, r0, %[zq]\n\t"
        "ssat r0, #8, r0, asr #1\n\t"
        "strb r0, [%[o]], #1\n\t"
        "tst r3, #256\n\t"
        "beq 1b\n\t"
        : [wp] "+r"(wp), [o] "+r"(o), "=&r"(a), "=&r"(t1), "=&r"(t2), "=&r"(t3), "=&r"(t4)
        : [x0] "r"(x0), [x1] "r"(x1), [x2] "r"(x2), [x3] "r"(x3), [x4] "r"(x4), [zq] "r"(zq)
        : "cc", "memory");
}

/* Standard convolution with at most 10 im2col columns whose input width is the
 * same in every submodel (a first layer on 1-channel images: 3x3 -> 9 columns),
 * fast requantisation only. The weights are B strips only; each output
 * channel's columns are widened once per call into int16 pairs (zero padded to
 * 10), so every output costs one 16-instruction step of reds_dsp_small_pixel.
 * Returns false when the layer does not qualify. */
static bool reds_dsp_conv_small(const reds_conv_layer *layer, int k, const int8_t *input,
                                int8_t *output) {
    const uint16_t *iw = layer->in_width;
    const uint16_t *ow = layer->out_width;
    const int c_in = iw[k], n_out = ow[k];
    const int kh = layer->kernel_h, kw = layer->kernel_w;
    const int n = kh * kw * c_in;
    for (int s = 0; s <= k; s++) {
        if (iw[s] != c_in) {
            return false;
        }
    }
    if (n == 0 || n > 10 || n_out == 0) {
        return false;
    }
    const int32_t q = layer->qparam_stride * k;
    const int32_t *bias = layer->bias != NULL ? layer->bias + q : NULL;
    const int32_t *mult = layer->multiplier + q;
    const int32_t *shift = layer->shift + q;
    if (!reds_dsp_all_fast2(mult, shift, bias, n_out, n, layer->act_min, layer->act_max)) {
        return false;
    }
    const int32_t offset = layer->input_offset;
    const int32_t zp2p1 = 2 * layer->output_offset + 1;
    const int in_h = layer->in_h, in_w = layer->in_w;
    uint32_t tab[8 * REDS_DSP_SMALL_CH];
    for (int r0 = 0; r0 < n_out; r0 += REDS_DSP_SMALL_CH) {
        const int nch = n_out - r0 < REDS_DSP_SMALL_CH ? n_out - r0 : REDS_DSP_SMALL_CH;
        /* Row r of the nested layout: strip s (o_{s-1} <= r < o_s) starts at
         * byte o_{s-1} * n, its 4-row group at 4 * n * (local row / 4); chunk
         * c of a g-row group holds g rows of min(4, n - 4c) bytes. */
        int s = 0, o_prev = 0;
        for (int j = 0; j < nch; j++) {
            const int r = r0 + j;
            while (ow[s] <= r) {
                o_prev = ow[s];
                s++;
            }
            const int lr = r - o_prev, g0 = lr & ~3;
            const int g = ow[s] - o_prev - g0 < 4 ? ow[s] - o_prev - g0 : 4;
            const int8_t *grp = layer->weights + o_prev * n + g0 * n;
            int16_t wv[10] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
            for (int col = 0; col < n; col++) {
                const int c4 = col & ~3, wc = n - c4 < 4 ? n - c4 : 4;
                wv[col] = grp[c4 * g + (lr & 3) * wc + (col & 3)];
            }
            uint32_t *e = tab + 8 * j;
            e[0] = bias != NULL ? (uint32_t)bias[r] : 0u;
            for (int i = 0; i < 5; i++) {
                e[1 + i] = (uint32_t)(uint16_t)wv[2 * i] | ((uint32_t)(uint16_t)wv[2 * i + 1] << 16);
            }
            e[6] = (uint32_t)mult[r];
            e[7] = (uint32_t)~shift[r] | (j == nch - 1 ? 256u : 0u);
        }
        int8_t *out = output + r0;
        for (int oy = 0; oy < layer->out_h; oy++) {
            const int iy0 = oy * layer->stride_h - layer->pad_top;
            const int ky0 = iy0 < 0 ? -iy0 : 0;
            const int ky1 = in_h - iy0 < kh ? in_h - iy0 : kh;
            for (int ox = 0; ox < layer->out_w; ox++, out += n_out) {
                const int ix0 = ox * layer->stride_w - layer->pad_left;
                const int kx0 = ix0 < 0 ? -ix0 : 0;
                const int kx1 = in_w - ix0 < kw ? in_w - ix0 : kw;
                /* The im2col pairs as int16 in memory order: word i = (x_2i, x_2i+1). */
                union {
                    uint32_t w[5];
                    int16_t h[10];
                } xv;
                xv.w[0] = xv.w[1] = xv.w[2] = xv.w[3] = xv.w[4] = 0;
                for (int ky = ky0; ky < ky1; ky++) {
                    const int8_t *src = input + ((iy0 + ky) * in_w + ix0) * c_in;
                    int16_t *d = xv.h + ky * kw * c_in;
                    for (int i = kx0 * c_in; i < kx1 * c_in; i++) {
                        d[i] = (int16_t)(src[i] + offset);
                    }
                }
                reds_dsp_small_pixel(xv.w, tab, out, zp2p1);
            }
        }
    }
    return true;
}

/* One segment of a row pair's weights: the pair's part of one strip (chunk
 * stride 16 bytes), `chunks` >= 1 chunks; a list ends with chunks == 0. The
 * segments of a row cover its columns 0 .. n_in in order, so the widened input
 * pointer just runs on from one segment to the next. */
typedef struct reds_dsp_seg {
    const int8_t *w;
    int32_t chunks;
} reds_dsp_seg;

/* Rows (r, r+1) x two pixels over a whole segment list, in one asm block:
 * accumulators stay in registers across segments; odd chunk counts enter the
 * twice-unrolled loop half way. OFF = byte offset of the pair inside its
 * 4-row group (0 or 8). The list pointer lives in memory (no register left). */
template <int OFF>
static inline __attribute__((always_inline)) void reds_dsp_pw_pass(int32_t *a00p, int32_t *a01p,
                                                                   int32_t *a10p, int32_t *a11p,
                                                                   const reds_dsp_seg *tab,
                                                                   const uint32_t *x) {
    int32_t a00 = *a00p, a01 = *a01p, a10 = *a10p, a11 = *a11p;
    const int8_t *w;
    int32_t i;
    uint32_t t0, t1, u0, u1, xe, xo;
    __asm__ volatile(
        "1:\n\t"
        "ldr %[t0], %[tab]\n\t"
        "ldrd %[w], %[i], [%[t0]], #8\n\t"
        "str %[t0], %[tab]\n\t"
        "cmp %[i], #0\n\t"
        "beq 4f\n\t"
        "add %[w], %[w], %[off]\n\t"
        "lsrs %[i], %[i], #1\n\t"
        "bcc 2f\n\t" REDS_DSP_PW_CHUNK
        "beq 1b\n\t"
        "2:\n\t" REDS_DSP_PW_CHUNK REDS_DSP_PW_CHUNK
        "subs %[i], %[i], #1\n\t"
        "bne 2b\n\t"
        "b 1b\n\t"
        "4:\n\t"
        : [a00] "+r"(a00), [a01] "+r"(a01), [a10] "+r"(a10), [a11] "+r"(a11), [w] "=&r"(w),
          [x] "+r"(x), [i] "=&r"(i), [t0] "=&r"(t0), [t1] "=&r"(t1), [u0] "=&r"(u0),
          [u1] "=&r"(u1), [xe] "=&r"(xe), [xo] "=&r"(xo), [tab] "+m"(tab)
        : [off] "I"(OFF)
        : "cc", "memory");
    *a00p = a00;
    *a01p = a01;
    *a10p = a10;
    *a11p = a11;
}

/* Requantises and stores rows (r, r+1) of two pixels. */
static inline __attribute__((always_inline)) void reds_dsp_pw_store(
    int8_t *out0, int8_t *out1, int r, int32_t a00, int32_t a01, int32_t a10, int32_t a11,
    const int32_t *mult, const int32_t *shift, bool fast, int32_t zp, int32_t lo, int32_t hi) {
    if (fast) {
        const int32_t m0 = mult[r], m1 = mult[r + 1];
        const int32_t e0 = ~shift[r], e1 = ~shift[r + 1];
        const int32_t zp2p1 = 2 * zp + 1;
        const int32_t v00 = reds_dsp_rq8(a00, m0, e0, zp2p1);
        const int32_t v01 = reds_dsp_rq8(a01, m0, e0, zp2p1);
        const int32_t v10 = reds_dsp_rq8(a10, m1, e1, zp2p1);
        const int32_t v11 = reds_dsp_rq8(a11, m1, e1, zp2p1);
        out0[r] = (int8_t)v00;
        out0[r + 1] = (int8_t)v10;
        out1[r] = (int8_t)v01;
        out1[r + 1] = (int8_t)v11;
    } else {
        out0[r] = reds_dsp_out(a00, mult[r], shift[r], zp, lo, hi);
        out0[r + 1] = reds_dsp_out(a10, mult[r + 1], shift[r + 1], zp, lo, hi);
        out1[r] = reds_dsp_out(a01, mult[r], shift[r], zp, lo, hi);
        out1[r + 1] = reds_dsp_out(a11, mult[r + 1], shift[r + 1], zp, lo, hi);
    }
}

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

/* Standard convolution whose input width is the same in every submodel (a
 * first layer: image channels are not nested), so the weights are B strips
 * only and 4-row group g starts at g * 4 * n (n = kernel_h * kernel_w * c_in
 * columns: n >> 2 chunks of 16 bytes, then 4 rows x (n & 3) tail bytes). Two
 * output pixels and two rows at a time with the pointwise pass; the im2col
 * vectors of the pixel pair are built once for all rows. Returns false when
 * the layer does not qualify (the caller takes the general path). */
static bool reds_dsp_conv_const_in(const reds_conv_layer *layer, int k, const int8_t *input,
                                   int8_t *output, int32_t *scratch) {
    const uint16_t *iw = layer->in_width;
    const uint16_t *ow = layer->out_width;
    const int c_in = iw[k], n_out = ow[k];
    const int n = (int)layer->kernel_h * layer->kernel_w * c_in;
    const int nfull = n >> 2, tail = n & 3;
    uint32_t widths = 0;
    for (int s = 0; s <= k; s++) {
        if (iw[s] != c_in) {
            return false;
        }
        widths |= ow[s];
    }
    /* Scratch: 2 pixels x (n rounded up to 4) int16 in the pass layout, then
     * the 2 x 3 tail values; REDS_CONV_SCRATCH_BYTES gives 4 n_out + 2 n + 4. */
    const int need = 16 * (nfull + 1);
    if ((widths & 3u) || nfull == 0 || need > 4 * n_out + 2 * n + 4 ||
        ((uintptr_t)layer->weights & 3u) != 0 || n > 4096) {
        return false;
    }
    const int32_t q = layer->qparam_stride * k;
    const int32_t *bias = layer->bias != NULL ? layer->bias + q : NULL;
    const int32_t *mult = layer->multiplier + q;
    const int32_t *shift = layer->shift + q;
    const int32_t zp = layer->output_offset, lo = layer->act_min, hi = layer->act_max;
    const bool fast = reds_dsp_all_fast2(mult, shift, bias, n_out, n, lo, hi);
    const int32_t offset = layer->input_offset;
    const int kh = layer->kernel_h, kw = layer->kernel_w, in_h = layer->in_h, in_w = layer->in_w;
    uint32_t *xw = (uint32_t *)scratch;
    int16_t *xt = (int16_t *)(void *)(xw + 4 * nfull); /* tails: pixel 0 [0..2], pixel 1 [3..5] */
    const int pixels = (int)layer->out_h * layer->out_w;
    reds_dsp_seg tab[2];
    tab[1].chunks = 0;
    for (int p = 0; p < pixels; p += 2) {
        const int p1 = p + 1 < pixels ? p + 1 : p; /* an odd last pixel is done twice */
        /* im2col of both pixels, (ky, kx, c) order, offset added, padding 0,
         * stored per chunk as (p0: x0, x2), (p0: x1, x3), (p1: x0, x2), (p1: x1, x3). */
        for (int j = 0; j < 2; j++) {
            const int pp = j ? p1 : p;
            const int oy = pp / layer->out_w, ox = pp - oy * layer->out_w;
            const int iy0 = oy * layer->stride_h - layer->pad_top;
            const int ix0 = ox * layer->stride_w - layer->pad_left;
            int16_t *lanes = (int16_t *)(void *)xw + 4 * j;
            int pos = 0;
            for (int ky = 0; ky < kh; ky++) {
                const int iy = iy0 + ky;
                const bool row_in = iy >= 0 && iy < in_h;
                for (int kx = 0; kx < kw; kx++) {
                    const int ix = ix0 + kx;
                    const bool in = row_in && ix >= 0 && ix < in_w;
                    const int8_t *src = input + (iy * in_w + ix) * c_in;
                    for (int c = 0; c < c_in; c++, pos++) {
                        const int16_t v = (int16_t)(in ? src[c] + offset : 0);
                        if (pos < 4 * nfull) {
                            /* column 4b + t -> halfword 8b + 2(t & 1) + (t >> 1) */
                            lanes[8 * (pos >> 2) + ((pos & 1) << 1) + ((pos >> 1) & 1)] = v;
                        } else {
                            xt[3 * j + pos - 4 * nfull] = v;
                        }
                    }
                }
            }
        }
        int8_t *out0 = output + p * n_out;
        int8_t *out1 = output + p1 * n_out;
        const int32_t x0t = xt[0], x1t = xt[3];
        for (int r = 0; r < n_out; r += 4) {
            const int8_t *grp = layer->weights + r * n;
            const int8_t *wt = grp + 16 * nfull;
            tab[0].w = grp;
            tab[0].chunks = nfull;
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
                const int8_t *w0 = wt + 2 * h * tail, *w1 = w0 + tail;
                if (tail == 1) { /* e.g. a 3x3 kernel on one channel: 9 columns */
                    a00 = reds_smlabb(w0[0], x0t, a00);
                    a01 = reds_smlabb(w0[0], x1t, a01);
                    a10 = reds_smlabb(w1[0], x0t, a10);
                    a11 = reds_smlabb(w1[0], x1t, a11);
                } else {
                    for (int t = 0; t < tail; t++) {
                        a00 += w0[t] * xt[t];
                        a01 += w0[t] * xt[3 + t];
                        a10 += w1[t] * xt[t];
                        a11 += w1[t] * xt[3 + t];
                    }
                }
                reds_dsp_pw_store(out0, out1, rr, a00, a01, a10, a11, mult, shift, fast, zp, lo,
                                  hi);
            }
        }
    }
    return true;
}

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

/* Average pooling, same results as reds_avgpool_ref: per output pixel and
 * 4-channel quad, one 32-bit load and two SXTAB16 add a window position into
 * int16 lanes (c0, c2), (c1, c3). 256 int8 values sum into [-32768, 32512],
 * so the lanes are flushed into int32 sums at most every 256 positions. */
void reds_avgpool_dsp(const reds_pool_layer *layer, int k, const int8_t *input, int8_t *output) {
    const int n = layer->width[k];
    const int in_w = layer->in_w, in_h = layer->in_h;
    const int fw = layer->filter_w;
    if ((n & 3) || fw > 256) {
        reds_avgpool_ref(layer, k, input, output);
        return;
    }
    const int32_t lo = layer->act_min, hi = layer->act_max;
    const int row = in_w * n;
    for (int oy = 0; oy < layer->out_h; oy++) {
        const int iy0 = oy * layer->stride_h - layer->pad_top;
        const int y0 = iy0 < 0 ? 0 : iy0;
        const int y1 = iy0 + layer->filter_h < in_h ? iy0 + layer->filter_h : in_h;
        for (int ox = 0; ox < layer->out_w; ox++) {
            const int ix0 = ox * layer->stride_w - layer->pad_left;
            const int x0 = ix0 < 0 ? 0 : ix0;
            const int x1 = ix0 + fw < in_w ? ix0 + fw : in_w;
            const int w = x1 - x0;
            const int32_t count = y1 > y0 && w > 0 ? (y1 - y0) * w : 0;
            int8_t *out = output + (oy * layer->out_w + ox) * n;
            for (int c = 0; c < n; c += 4) {
                int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
                uint32_t se = 0, so = 0; /* int16 lanes: (c0, c2), (c1, c3) */
                int pending = 0;
                for (int y = y0; y < y1 && w > 0; y++) {
                    if (pending + w > 256) {
                        s0 += (int16_t)se;
                        s2 += (int32_t)se >> 16;
                        s1 += (int16_t)so;
                        s3 += (int32_t)so >> 16;
                        se = so = 0;
                        pending = 0;
                    }
                    const int8_t *src = input + y * row + x0 * n + c;
                    int x = w;
                    for (; x >= 2; x -= 2) {
                        uint32_t v0, v1;
                        memcpy(&v0, src, 4);
                        memcpy(&v1, src + n, 4);
                        src += 2 * n;
                        se = reds_sxtab16(se, v0);
                        so = reds_sxtab16_ror8(so, v0);
                        se = reds_sxtab16(se, v1);
                        so = reds_sxtab16_ror8(so, v1);
                    }
                    if (x) {
                        uint32_t v;
                        memcpy(&v, src, 4);
                        se = reds_sxtab16(se, v);
                        so = reds_sxtab16_ror8(so, v);
                    }
                    pending += w;
                }
                s0 += (int16_t)se;
                s2 += (int32_t)se >> 16;
                s1 += (int16_t)so;
                s3 += (int32_t)so >> 16;
                const int32_t s[4] = {s0, s1, s2, s3};
                for (int j = 0; j < 4; j++) {
                    /* TFLite: round half away from zero (C division truncates). */
                    const int32_t sum = s[j];
                    const int32_t avg = count <= 0 ? 0
                                        : sum > 0  ? (sum + count / 2) / count
                                                   : (sum - count / 2) / count;
                    out[c + j] = (int8_t)(avg < lo ? lo : avg > hi ? hi : avg);
                }
            }
        }
    }
}

#else /* no DSP extension: the reference is the implementation */

void reds_fc_dsp(const reds_fc_layer *layer, int k, const int8_t *input, int8_t *output,
                 int32_t *scratch) {
    reds_fc_ref(layer, k, input, output, scratch);
}

void reds_conv_dsp(const reds_conv_layer *layer, int k, const int8_t *input, int8_t *output,
                   int32_t *scratch) {
    reds_conv_ref(layer, k, input, output, scratch);
}

void reds_pointwise_dsp(const reds_conv_layer *layer, int k, const int8_t *input,
                        int8_t *output, int32_t *scratch) {
    reds_pointwise_ref(layer, k, input, output, scratch);
}

extern "C" void reds_depthwise_dsp(const reds_conv_layer *layer, int k, const int8_t *input,
                                   int8_t *output);

void reds_depthwise_dsp(const reds_conv_layer *layer, int k, const int8_t *input,
                        int8_t *output) {
    reds_depthwise_ref(layer, k, input, output);
}

void reds_avgpool_dsp(const reds_pool_layer *layer, int k, const int8_t *input, int8_t *output) {
    reds_avgpool_ref(layer, k, input, output);
}

#endif
