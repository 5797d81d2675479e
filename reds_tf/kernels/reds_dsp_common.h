/* reds_dsp_common.h: helpers shared by the DSP kernel files (internal).
 * Requantisation fast paths (bit-identical with reds_requantize), the input
 * widening into SXTB16 lane order and the strip walker of the nested FC layout
 * (used by the FC kernel and the im2col conv path). Static functions, so each
 * kernel file compiles its own copy of what it uses and the compiler sees the
 * same code as before the split; helpers not every file uses are marked unused.
 * Include after reds_dsp.h, only where __ARM_FEATURE_DSP is defined.
 */
#ifndef REDS_DSP_COMMON_H
#define REDS_DSP_COMMON_H

#include <stdint.h>
#include <string.h>

#include "reds_dsp.h"
#include "reds_kernels.h"

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
__attribute__((unused)) static void reds_dsp_widen(const int8_t *in, int chunks, int32_t offset, uint32_t *xw) {
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
__attribute__((unused)) static const int8_t *reds_dsp_strip(const int8_t *w, int32_t *acc, const int32_t *init, int rows,
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
__attribute__((unused)) static bool reds_dsp_all_fast(const int32_t *mult, const int32_t *shift, int n, int32_t lo,
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
__attribute__((unused, noinline)) static bool reds_dsp_all_fast2(const int32_t *mult, const int32_t *shift, const int32_t *bias,
                               int n, int32_t n_terms, int32_t lo, int32_t hi) {
    bool fast = lo == -128 && hi == 127 && n_terms >= 0 && n_terms <= 32767;
    const int32_t room = fast ? (1 << 30) - 1 - n_terms * 32640 : 0;
    for (int r = 0; r < n && fast; r++) {
        fast = (uint32_t)(shift[r] + 31) < 30u && mult[r] != INT32_MIN &&
               (bias == NULL || (bias[r] <= room && bias[r] >= -room));
    }
    return fast;
}

#endif /* REDS_DSP_COMMON_H */
