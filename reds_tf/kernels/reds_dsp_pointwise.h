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

#endif /* REDS_DSP_POINTWISE_H */
