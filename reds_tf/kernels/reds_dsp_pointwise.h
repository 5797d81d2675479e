/* reds_dsp_pointwise.h: the two-row, two-pixel pass of the pointwise kernel (internal).
 * Shared by pointwise_dsp.cpp and the first-layer path of conv_dsp.cpp.
 * Include after reds_dsp_common.h.
 */
#ifndef REDS_DSP_POINTWISE_H
#define REDS_DSP_POINTWISE_H

#include "reds_dsp_common.h"

/* Two pixels, n_in = 4 * chunks int8 each -> per chunk the words
 * (p0: x0, x2), (p0: x1, x3), (p1: x0, x2), (p1: x1, x3), offset added. */
__attribute__((unused)) static void reds_dsp_widen2(const int8_t *in0, const int8_t *in1,
                                                   int chunks, int32_t offset, uint32_t *xw) {
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

/* ---------------------------------------------------------------------------
 * The table-driven fast path (reds_dsp_all_fast2 layers): per call, every row
 * pair's constants and weight segments go into one table of words, so that a
 * pixel pair costs, per row pair, one LDM for the accumulators and the weights,
 * the MAC loop, one LDM for the requantisation constants and 5 instructions
 * per output (SMMULR, rounding, shift, zero point, SSAT) plus its store. The
 * accumulators hold twice the sum (the input is widened doubled and the bias
 * doubled), which is what SMMULR of reds_dsp_rq8 wants: |2 acc| < 2^31 on
 * this path.
 *
 * Entry of a row pair (r, r + 1), words:
 *   single segment (reds_dsp_pw_run1): 2b_r, 2b_r, 2b_r+1, 2b_r+1, w, chunks,
 *       m_r, m_r+1, ~shift_r, ~shift_r+1, 2 zp + 1                (11 words)
 *   segment list (reds_dsp_pw_runm): 2b_r, 2b_r, 2b_r+1, 2b_r+1, then per
 *       segment w, chunks (>= 1), then 1, 0, then the 5 constants
 * w already points at the pair's 8 bytes of its first chunk. The table ends
 * with 6 zero words. Both runners take (tab, widened pair, out0, out1) and
 * store rows in table order from out0 / out1 on.
 * ------------------------------------------------------------------------- */

/* Two pixels widened as reds_dsp_widen2 but doubled: 2 (x + offset). One STM
 * per chunk (13 instructions a chunk with the loop). */
__attribute__((unused)) static void reds_dsp_widen2x(const int8_t *in0, const int8_t *in1,
                                                    int chunks, int32_t offset, uint32_t *xw) {
    const uint32_t off4 = ((uint32_t)(2 * offset) & 0xFFFFu) * 0x10001u;
    for (int c = chunks; c > 0; c--) {
        uint32_t v0, v1;
        memcpy(&v0, in0, 4);
        memcpy(&v1, in1, 4);
        in0 += 4;
        in1 += 4;
        register uint32_t e0 __asm__("r4") = reds_sxtab16(reds_sxtab16(off4, v0), v0);
        register uint32_t o0 __asm__("r5") = reds_sxtab16_ror8(reds_sxtab16_ror8(off4, v0), v0);
        register uint32_t e1 __asm__("r6") = reds_sxtab16(reds_sxtab16(off4, v1), v1);
        register uint32_t o1 __asm__("r8") = reds_sxtab16_ror8(reds_sxtab16_ror8(off4, v1), v1);
        __asm__ volatile("stmia %[p]!, {%[e0], %[o0], %[e1], %[o1]}"
                         : [p] "+r"(xw)
                         : [e0] "r"(e0), [o0] "r"(o0), [e1] "r"(e1), [o1] "r"(o1)
                         : "memory");
    }
}

/* REDS_DSP_PW_CHUNK with fixed registers: w r6, x r8, accumulators
 * r2 (row r, pixel 0), r3 (r, 1), r4 (r + 1, 0), r5 (r + 1, 1). */
#define REDS_DSP_PWR_CHUNK                         \
    "ldrd r9, r10, [r6], #16\n\t" REDS_DSP_PWR_MACS
/* The chunk's multiply-accumulates, its row weights in r9 (row r), r10 (r + 1). */
#define REDS_DSP_PWR_MACS                          \
    "ldrd lr, r1, [r8], #8\n\t"                    \
    "sxtb16 r11, r9, ror #8\n\t"                   \
    "sxtb16 r9, r9\n\t"                            \
    "smlad r2, r9, lr, r2\n\t"                     \
    "smlad r2, r11, r1, r2\n\t"                    \
    "sxtb16 r12, r10, ror #8\n\t"                  \
    "sxtb16 r10, r10\n\t"                          \
    "smlad r4, r10, lr, r4\n\t"                    \
    "smlad r4, r12, r1, r4\n\t"                    \
    "ldrd lr, r1, [r8], #8\n\t"                    \
    "smlad r3, r9, lr, r3\n\t"                     \
    "smlad r3, r11, r1, r3\n\t"                    \
    "smlad r5, r10, lr, r5\n\t"                    \
    "smlad r5, r12, r1, r5\n\t"

/* reds_dsp_rq8 of accumulator A (doubled) with multiplier M, e = E, 2 zp + 1 in r11. */
#define REDS_DSP_PWR_RQ(A, M, E)                   \
    "smmulr " A ", " A ", " M "\n\t"               \
    "add " A ", " A ", " A ", asr #31\n\t"         \
    "asr " A ", " A ", " E "\n\t"                  \
    "add " A ", " A ", r11\n\t"                    \
    "ssat " A ", #8, " A ", asr #1\n\t"

/* The requantisation of a row pair and its 4 stores; out0 / out1 at sp, sp + 4. */
#define REDS_DSP_PWR_STORE                         \
    "ldmia r0!, {r6, r7, r9, r10, r11}\n\t" REDS_DSP_PWR_STORE4
/* The same with the constants already in r6, r7, r9, r10 and 2 zp + 1 in r11. */
#define REDS_DSP_PWR_STORE4                        \
    "ldrd r12, lr, [sp]\n\t"                       \
    REDS_DSP_PWR_RQ("r2", "r6", "r9")              \
    REDS_DSP_PWR_RQ("r4", "r7", "r10")             \
    REDS_DSP_PWR_RQ("r3", "r6", "r9")              \
    REDS_DSP_PWR_RQ("r5", "r7", "r10")             \
    "strb r2, [r12], #1\n\t"                       \
    "strb r4, [r12], #1\n\t"                       \
    "strb r3, [lr], #1\n\t"                        \
    "strb r5, [lr], #1\n\t"                        \
    "strd r12, lr, [sp]\n\t"

/* Frame: out0, out1, x at sp, sp + 4, sp + 8 (r1 = x, r2 = out0, r3 = out1). */
#define REDS_DSP_PWR_ENTER                         \
    "push {r4, r5, r6, r7, r8, r9, r10, r11, lr}\n\t" \
    "sub sp, sp, #12\n\t"                          \
    "strd r2, r3, [sp]\n\t"                        \
    "str r1, [sp, #8]\n\t"
#define REDS_DSP_PWR_LEAVE                         \
    "add sp, sp, #12\n\t"                          \
    "pop {r4, r5, r6, r7, r8, r9, r10, r11, pc}\n\t"

/* Every row pair of a single-segment table for one pixel pair. Per pair: 15
 * instructions per chunk, 2 per chunk pair of loop, 34 of set-up and
 * requantisation (8.5 per output). */
__attribute__((naked, noinline, unused)) static void reds_dsp_pw_run1(
    const uint32_t *tab __attribute__((unused)), const uint32_t *x __attribute__((unused)),
    int8_t *out0 __attribute__((unused)), int8_t *out1 __attribute__((unused))) {
    __asm__ volatile(
        REDS_DSP_PWR_ENTER
        "1:\n\t"
        "ldmia r0!, {r2, r3, r4, r5, r6, r7}\n\t"
        "ldr r8, [sp, #8]\n\t"
        "lsrs r7, r7, #1\n\t"
        "bcs 2f\n\t"
        "bne 3f\n\t"
        REDS_DSP_PWR_LEAVE
        "2:\n\t" REDS_DSP_PWR_CHUNK
        "beq 4f\n\t"
        "3:\n\t" REDS_DSP_PWR_CHUNK REDS_DSP_PWR_CHUNK
        "subs r7, r7, #1\n\t"
        "bne 3b\n\t"
        "4:\n\t" REDS_DSP_PWR_STORE
        "b 1b\n\t");
}

/* Every row pair of a segment-list table for one pixel pair: as
 * reds_dsp_pw_run1 plus 5 instructions per segment and 5 per pair for the
 * list's end. */
__attribute__((naked, noinline, unused)) static void reds_dsp_pw_runm(
    const uint32_t *tab __attribute__((unused)), const uint32_t *x __attribute__((unused)),
    int8_t *out0 __attribute__((unused)), int8_t *out1 __attribute__((unused))) {
    __asm__ volatile(
        REDS_DSP_PWR_ENTER
        "1:\n\t"
        "ldmia r0!, {r2, r3, r4, r5}\n\t"
        "ldr r8, [sp, #8]\n\t"
        "5:\n\t"
        "ldmia r0!, {r6, r7}\n\t"
        "lsrs r7, r7, #1\n\t"
        "bcs 2f\n\t"
        "bne 3f\n\t"
        "cbnz r6, 6f\n\t"
        REDS_DSP_PWR_LEAVE
        "6:\n\t" REDS_DSP_PWR_STORE
        "b 1b\n\t"
        "2:\n\t" REDS_DSP_PWR_CHUNK
        "beq 5b\n\t"
        "3:\n\t" REDS_DSP_PWR_CHUNK REDS_DSP_PWR_CHUNK
        "subs r7, r7, #1\n\t"
        "bne 3b\n\t"
        "b 5b\n\t");
}

/* Single-segment tables of at most REDS_DSP_PWU_MAX chunks run a fully
 * unrolled chunk sequence with offsets from the ends of the weights (r6) and
 * of the widened pixels (r8), entered by "add pc" at the pair's first chunk:
 * the entry's words hold w_end = w + 16 * chunks and the jump 4 + (bytes of
 * code a chunk) * (REDS_DSP_PWU_MAX - chunks); the table's end (jump 0) lands
 * on the exit. Per row pair 2 instructions of set-up and no loop. */
#define REDS_DSP_PWU_MAX 16

/* ---------------------------------------------------------------------------
 * Single-segment tables, two rows x three pixels (reds_dsp_pw_run3): with no
 * segment list and no loop counter, the table pointer can live on the stack
 * and its register hold two more accumulators, so each chunk's weights serve
 * three pixels: 20 instructions per 24 MACs instead of 15 per 16. The chunk
 * sequence is unrolled (REDS_DSP_PWU_MAX above, 80 bytes of code a chunk).
 * Three pixels widened doubled, per chunk the words (p0: x0, x2), (p0: x1, x3),
 * (p1: ...), (p2: ...). Entry of a row pair, words: 2b_r (3 times), 2b_r+1
 * (3 times), w_end, jump = 4 + 80 * (REDS_DSP_PWU_MAX - chunks), m_r,
 * ~shift_r, 2 zp + 1, m_r+1, ~shift_r+1 (13 words; reds_dsp_pw_run3c: m_r,
 * ~shift_r, C_r, m_r+1, ~shift_r+1, C_r+1, 14 words); the table ends with 8
 * zero words.
 * ------------------------------------------------------------------------- */
#define REDS_DSP_PW3_WORDS 13
#define REDS_DSP_PW3_CHUNK(W, X0, X1, X2)          \
    "ldrd r9, r10, [r6, #" W "]\n\t"              \
    "ldrd r12, lr, [r8, #" X0 "]\n\t"             \
    "sxtb16 r11, r9, ror #8\n\t"                   \
    "sxtb16 r9, r9\n\t"                            \
    "smlad r0, r9, r12, r0\n\t"                    \
    "smlad r0, r11, lr, r0\n\t"                    \
    "sxtb16 r7, r10, ror #8\n\t"                   \
    "sxtb16 r10, r10\n\t"                          \
    "smlad r3, r10, r12, r3\n\t"                   \
    "smlad r3, r7, lr, r3\n\t"                     \
    "ldrd r12, lr, [r8, #" X1 "]\n\t"             \
    "smlad r1, r9, r12, r1\n\t"                    \
    "smlad r1, r11, lr, r1\n\t"                    \
    "smlad r4, r10, r12, r4\n\t"                   \
    "smlad r4, r7, lr, r4\n\t"                     \
    "ldrd r12, lr, [r8, #" X2 "]\n\t"             \
    "smlad r2, r9, r12, r2\n\t"                    \
    "smlad r2, r11, lr, r2\n\t"                    \
    "smlad r5, r10, r12, r5\n\t"                   \
    "smlad r5, r7, lr, r5\n\t"
#define REDS_DSP_PW3_CHUNKS \
    REDS_DSP_PW3_CHUNK("-256", "-384", "-376", "-368") \
    REDS_DSP_PW3_CHUNK("-240", "-360", "-352", "-344") \
    REDS_DSP_PW3_CHUNK("-224", "-336", "-328", "-320") \
    REDS_DSP_PW3_CHUNK("-208", "-312", "-304", "-296") \
    REDS_DSP_PW3_CHUNK("-192", "-288", "-280", "-272") \
    REDS_DSP_PW3_CHUNK("-176", "-264", "-256", "-248") \
    REDS_DSP_PW3_CHUNK("-160", "-240", "-232", "-224") \
    REDS_DSP_PW3_CHUNK("-144", "-216", "-208", "-200") \
    REDS_DSP_PW3_CHUNK("-128", "-192", "-184", "-176") \
    REDS_DSP_PW3_CHUNK("-112", "-168", "-160", "-152") \
    REDS_DSP_PW3_CHUNK("-96", "-144", "-136", "-128") \
    REDS_DSP_PW3_CHUNK("-80", "-120", "-112", "-104") \
    REDS_DSP_PW3_CHUNK("-64", "-96", "-88", "-80") \
    REDS_DSP_PW3_CHUNK("-48", "-72", "-64", "-56") \
    REDS_DSP_PW3_CHUNK("-32", "-48", "-40", "-32") \
    REDS_DSP_PW3_CHUNK("-16", "-24", "-16", "-8")

/* Three pixels widened as reds_dsp_widen2x, one STM per chunk. */
__attribute__((unused)) static void reds_dsp_widen3x(const int8_t *in0, const int8_t *in1,
                                                    const int8_t *in2, int chunks,
                                                    int32_t offset, uint32_t *xw) {
    const uint32_t off4 = ((uint32_t)(2 * offset) & 0xFFFFu) * 0x10001u;
    for (int c = chunks; c > 0; c--) {
        uint32_t v0, v1, v2;
        memcpy(&v0, in0, 4);
        memcpy(&v1, in1, 4);
        memcpy(&v2, in2, 4);
        in0 += 4;
        in1 += 4;
        in2 += 4;
        register uint32_t e0 __asm__("r4") = reds_sxtab16(reds_sxtab16(off4, v0), v0);
        register uint32_t o0 __asm__("r5") = reds_sxtab16_ror8(reds_sxtab16_ror8(off4, v0), v0);
        register uint32_t e1 __asm__("r6") = reds_sxtab16(reds_sxtab16(off4, v1), v1);
        register uint32_t o1 __asm__("r8") = reds_sxtab16_ror8(reds_sxtab16_ror8(off4, v1), v1);
        register uint32_t e2 __asm__("r9") = reds_sxtab16(reds_sxtab16(off4, v2), v2);
        register uint32_t o2 __asm__("r10") = reds_sxtab16_ror8(reds_sxtab16_ror8(off4, v2), v2);
        __asm__ volatile("stmia %[p]!, {%[e0], %[o0], %[e1], %[o1], %[e2], %[o2]}"
                         : [p] "+r"(xw)
                         : [e0] "r"(e0), [o0] "r"(o0), [e1] "r"(e1), [o1] "r"(o1), [e2] "r"(e2),
                           [o2] "r"(o2)
                         : "memory");
    }
}

/* The runners of two-row, three-pixel tables for one pixel triple; x_end =
 * the widened triple + 24 * chunks. Frame: table pointer, out0, out1, out2 at
 * sp .. sp + 12 (out2, the 5th argument, arrives at sp + 36). RQ is the
 * requantisation and the 6 stores, the constants read from the table. */
#define REDS_DSP_PW3_RUN(RQ)                                                     \
    "push {r4, r5, r6, r7, r8, r9, r10, r11, lr}\n\t"                            \
    "sub sp, sp, #16\n\t"                                                        \
    "ldr r4, [sp, #52]\n\t"                                                      \
    "str r0, [sp]\n\t"                                                           \
    "strd r2, r3, [sp, #4]\n\t"                                                  \
    "str r4, [sp, #12]\n\t"                                                      \
    "mov r8, r1\n\t"                                                             \
    "1:\n\t"                                                                     \
    "ldr r12, [sp]\n\t"                                                          \
    "ldmia r12!, {r0, r1, r2, r3, r4, r5, r6, r7}\n\t"                           \
    "str r12, [sp]\n\t"                                                          \
    "add pc, r7\n\t"                                                             \
    "nop.n\n\t"                                                                  \
    "b.w 9f\n\t" REDS_DSP_PW3_CHUNKS RQ                                          \
    "add r12, sp, #4\n\t"                                                        \
    "stmia r12, {r7, r10, lr}\n\t"                                               \
    "b 1b\n\t"                                                                   \
    "9:\n\t"                                                                     \
    "add sp, sp, #16\n\t"                                                        \
    "pop {r4, r5, r6, r7, r8, r9, r10, r11, pc}\n\t"

/* Constants m_r, ~shift_r, 2 zp + 1, m_r+1, ~shift_r+1 (reds_dsp_rq8): 6
 * instructions an output with its store. */
#define REDS_DSP_PW3_RQ_ZQ                         \
    "ldr r12, [sp]\n\t"                            \
    "ldmia r12!, {r6, r9, r11}\n\t"                \
    "add lr, sp, #4\n\t"                           \
    "ldmia lr, {r7, r10, lr}\n\t"                  \
    REDS_DSP_PWR_RQ("r0", "r6", "r9")              \
    REDS_DSP_PWR_RQ("r1", "r6", "r9")              \
    REDS_DSP_PWR_RQ("r2", "r6", "r9")              \
    "strb r0, [r7], #1\n\t"                        \
    "strb r1, [r10], #1\n\t"                       \
    "strb r2, [lr], #1\n\t"                        \
    "ldmia r12!, {r6, r9}\n\t"                     \
    "str r12, [sp]\n\t"                            \
    REDS_DSP_PWR_RQ("r3", "r6", "r9")              \
    REDS_DSP_PWR_RQ("r4", "r6", "r9")              \
    REDS_DSP_PWR_RQ("r5", "r6", "r9")              \
    "strb r3, [r7], #1\n\t"                        \
    "strb r4, [r10], #1\n\t"                       \
    "strb r5, [lr], #1\n\t"

/* One output with the zero point folded into the rounding constant: M = m,
 * E = e = ~shift, C = (2 zp + 1) << e, the accumulator A (doubled) kept for
 * its sign. SMMLAR gives C + x with x = reds_dsp_rq8's SMMULR; A < 0 iff
 * x < 0 when m > 2^30 (A is even, so A <= -2 and A m + 2^31 < 0), and
 * (x + C - [x < 0]) >> e = ((x - [x < 0]) >> e) + 2 zp + 1 as C is a multiple
 * of 2^e and |x| + |C| < 2^31 (|x| <= 2^30, |C| < 2^30): reds_dsp_rq8's
 * value in 5 instructions with the store. */
#define REDS_DSP_PW3_RQC1(A, O)                    \
    "smmlar r12, " A ", r6, r11\n\t"               \
    "add r12, r12, " A ", asr #31\n\t"             \
    "asr r12, r12, r9\n\t"                         \
    "ssat r12, #8, r12, asr #1\n\t"                \
    "strb r12, [" O "], #1\n\t"
/* Constants m_r, ~shift_r, C_r, m_r+1, ~shift_r+1, C_r+1 (the table pointer
 * goes back to the frame so that r12 can hold each result). */
#define REDS_DSP_PW3_RQ_C                          \
    "ldr r12, [sp]\n\t"                            \
    "ldmia r12!, {r6, r9, r11}\n\t"                \
    "str r12, [sp]\n\t"                            \
    "add lr, sp, #4\n\t"                           \
    "ldmia lr, {r7, r10, lr}\n\t"                  \
    REDS_DSP_PW3_RQC1("r0", "r7")                  \
    REDS_DSP_PW3_RQC1("r1", "r10")                 \
    REDS_DSP_PW3_RQC1("r2", "lr")                  \
    "ldr r12, [sp]\n\t"                            \
    "ldmia r12!, {r6, r9, r11}\n\t"                \
    "str r12, [sp]\n\t"                            \
    REDS_DSP_PW3_RQC1("r3", "r7")                  \
    REDS_DSP_PW3_RQC1("r4", "r10")                 \
    REDS_DSP_PW3_RQC1("r5", "lr")

__attribute__((naked, noinline, unused)) static void reds_dsp_pw_run3(
    const uint32_t *tab __attribute__((unused)), const uint32_t *x_end __attribute__((unused)),
    int8_t *out0 __attribute__((unused)), int8_t *out1 __attribute__((unused)),
    int8_t *out2 __attribute__((unused))) {
    __asm__ volatile(REDS_DSP_PW3_RUN(REDS_DSP_PW3_RQ_ZQ));
}
/* The same with REDS_DSP_PW3_RQ_C: entries of 14 words (see above). */
__attribute__((naked, noinline, unused)) static void reds_dsp_pw_run3c(
    const uint32_t *tab __attribute__((unused)), const uint32_t *x_end __attribute__((unused)),
    int8_t *out0 __attribute__((unused)), int8_t *out1 __attribute__((unused)),
    int8_t *out2 __attribute__((unused))) {
    __asm__ volatile(REDS_DSP_PW3_RUN(REDS_DSP_PW3_RQ_C));
}

#endif /* REDS_DSP_POINTWISE_H */
