/* conv_dsp.cpp: the Cortex-M4 DSP standard convolution kernel (reds_conv_dsp).
 * Same signature and bit-identical results as reds_conv_ref. Three paths: a
 * small-kernel path for few channels (reds_dsp_conv_small), a path for a first
 * layer whose input width is not nested (reds_dsp_conv_const_in, two pixels
 * and two rows at a time with the pointwise pass of reds_dsp_pointwise.h), and
 * the general im2col path over the FC strip walker (reds_dsp_common.h).
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

/* ---------------------------------------------------------------------------
 * Convolutions (nested im2col layout, docs/DESIGN.md). The weights are the FC
 * nested layout of the (o_K, kh*kw*i_K) matrix, so the FC strip walker above
 * serves standard convolutions (one output pixel's im2col vector at a time)
 * and the pointwise kernel below walks the same bytes two rows and two pixels
 * at a time.
 * ------------------------------------------------------------------------- */

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
    /* The channel blocks [c0, c0 + len) of the nested column order; when all
     * are whole chunks, tap t of block b goes to column base[b] + t * len[b]:
     * one bounds check per tap, then one widening copy per block. */
    int blk_c0[REDS_DSP_MAX_K], blk_len[REDS_DSP_MAX_K], blk_base[REDS_DSP_MAX_K];
    int nblk = 0;
    bool chunked = true;
    for (int j = 0, c_prev = 0; j <= k; c_prev = iw[j], j++) {
        if (iw[j] > c_prev) {
            blk_c0[nblk] = c_prev;
            blk_len[nblk] = iw[j] - c_prev;
            blk_base[nblk] = taps * c_prev;
            chunked = chunked && ((c_prev | blk_len[nblk]) & 3) == 0;
            nblk++;
        }
    }
    chunked = chunked && nblk > 1; /* one block: the loop below is as short */
    const int kh = layer->kernel_h, kw = layer->kernel_w;
    const int in_h = layer->in_h, in_w = layer->in_w;
    for (int oy = 0; oy < layer->out_h; oy++) {
        const int iy0 = oy * layer->stride_h - layer->pad_top;
        for (int ox = 0; ox < layer->out_w; ox++) {
            const int ix0 = ox * layer->stride_w - layer->pad_left;
            int pos = 0;
            int c_prev = 0;
            for (int ky = 0, t = 0; chunked && ky < kh; ky++) {
                const int iy = iy0 + ky;
                const bool row_in = iy >= 0 && iy < in_h;
                for (int kx = 0; kx < kw; kx++, t++) {
                    const int ix = ix0 + kx;
                    const bool in = row_in && ix >= 0 && ix < in_w;
                    const int8_t *src = input + (iy * in_w + ix) * n_in;
                    for (int b = 0; b < nblk; b++) {
                        const int len = blk_len[b];
                        uint32_t *d = xw + ((blk_base[b] + t * len) >> 1);
                        if (!in) {
                            memset(d, 0, (size_t)len * 2u);
                            continue;
                        }
                        const int8_t *sb = src + blk_c0[b];
                        for (int c = 0; c < len; c += 4) {
                            uint32_t v;
                            memcpy(&v, sb + c, 4);
                            d[0] = reds_sxtab16(off2, v);
                            d[1] = reds_sxtab16_ror8(off2, v);
                            d += 2;
                        }
                    }
                }
            }
            for (int j = 0; !chunked && j <= k; j++) {
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
static __attribute__((noinline)) bool reds_dsp_conv_small(const reds_conv_layer *layer, int k,
                                                         const int8_t *input, int8_t *output) {
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

/* Columns of a first layer whose im2col vectors are built on the stack. */
#define REDS_DSP_CI_STACK 256

/* The output pixel after (oy, ox) in row-major order. */
static inline void reds_dsp_next_pixel(int out_w, int *oy, int *ox) {
    if (++*ox == out_w) {
        *ox = 0;
        ++*oy;
    }
}

/* A copy in words (newlib-nano's memcpy goes byte by byte). */
static inline void reds_dsp_ci_copy(int8_t *dst, const int8_t *src, int len) {
    int i = 0;
    for (; i + 4 <= len; i += 4) {
        uint32_t v;
        memcpy(&v, src + i, 4);
        memcpy(dst + i, &v, 4);
    }
    for (; i < len; i++) {
        dst[i] = src[i];
    }
}

/* One output pixel's im2col vector as int8 in column order (ky, kx, c): per
 * kernel row one copy of kw * c_in contiguous input bytes, the padding filled
 * with the input zero point `zpb` (it contributes 0 once the offset is added). */
static void reds_dsp_ci_col(const reds_conv_layer *layer, const int8_t *input, int c_in, int iy0,
                            int ix0, int8_t zpb, int8_t *dst) {
    const int kh = layer->kernel_h, kw = layer->kernel_w, in_h = layer->in_h, in_w = layer->in_w;
    const int seg = kw * c_in;
    const bool x_in = ix0 >= 0 && ix0 + kw <= in_w;
    for (int ky = 0; ky < kh; ky++, dst += seg) {
        const int iy = iy0 + ky;
        if (iy < 0 || iy >= in_h) {
            memset(dst, zpb, (size_t)seg);
            continue;
        }
        const int8_t *src = input + (iy * in_w + ix0) * c_in;
        if (x_in) {
            reds_dsp_ci_copy(dst, src, seg);
            continue;
        }
        for (int kx = 0; kx < kw; kx++) {
            const bool in = ix0 + kx >= 0 && ix0 + kx < in_w;
            for (int c = 0; c < c_in; c++) {
                dst[kx * c_in + c] = in ? src[kx * c_in + c] : zpb;
            }
        }
    }
}

/* Standard convolution whose input width is the same in every submodel (a
 * first layer: image channels are not nested), so the weights are B strips
 * only and 4-row group g starts at g * 4 * n (n = kernel_h * kernel_w * c_in
 * columns: n >> 2 chunks of 16 bytes, then 4 rows x (n & 3) tail bytes). Two
 * output pixels and two rows at a time with the pointwise pass; the im2col
 * vectors of the pixel pair are built once for all rows: up to
 * REDS_DSP_CI_STACK columns as int8 rows on the stack, widened a chunk at a
 * time (so any output width qualifies), else scattered into the scratch.
 * Returns false when the layer does not qualify (the general path). */
/* ---------------------------------------------------------------------------
 * The fast path of reds_dsp_conv_const_in (reds_dsp_all_fast2 layers): the
 * table-driven pass of reds_dsp_pointwise.h, one 4-row group per iteration.
 * Entry of a row pair, words: 2b_r, 2b_r, 2b_r+1, 2b_r+1, w, chunks, m_r,
 * m_r+1, ~shift_r, ~shift_r+1 (2 zp + 1 is the 5th argument); the table ends
 * with 6 zero words. A last chunk of T = n & 3 columns follows the full ones
 * in the widened vector, its columns in lanes 4 - T .. 3 (the rest 0): each
 * row's tail is read as the word that ends with it (the bytes before it are
 * the weights' own, multiplied by 0), at w_end + A0 / A1 for rows (r, r + 1)
 * of the group's first pair and w_end + A2 / A3 for its second pair, w_end
 * being where the pair's full chunks end: A = T - 4, 2T - 4, 3T - 12, 4T - 12.
 * ------------------------------------------------------------------------- */
#define REDS_DSP_CI_TAIL(A0, A1)                   \
    "ldr r10, [r6, #" A1 "]\n\t"                   \
    "ldr r9, [r6, #" A0 "]\n\t" REDS_DSP_PWR_MACS
#define REDS_DSP_CI_PAIR(L, TAIL)                  \
    "ldmia r0!, {r2, r3, r4, r5, r6, r7}\n\t"      \
    "ldr r8, [sp, #8]\n\t"                         \
    "lsrs r7, r7, #1\n\t"                          \
    "bcs " L "1f\n\t"                              \
    "bne " L "2f\n\t"                              \
    "b 9f\n\t"                                     \
    L "1:\n\t" REDS_DSP_PWR_CHUNK                  \
    "beq " L "3f\n\t"                              \
    L "2:\n\t" REDS_DSP_PWR_CHUNK REDS_DSP_PWR_CHUNK \
    "subs r7, r7, #1\n\t"                          \
    "bne " L "2b\n\t"                              \
    L "3:\n\t" TAIL                                \
    "ldmia r0!, {r6, r7, r9, r10}\n\t"             \
    "ldr r11, [sp, #48]\n\t" REDS_DSP_PWR_STORE4
#define REDS_DSP_CI_RUN(NAME, TAIL0, TAIL1)                                                  \
    __attribute__((naked, noinline)) static void NAME(                                      \
        const uint32_t *tab __attribute__((unused)), const uint32_t *x __attribute__((unused)), \
        int8_t *out0 __attribute__((unused)), int8_t *out1 __attribute__((unused)),          \
        uint32_t zq __attribute__((unused))) {                                               \
        __asm__ volatile(REDS_DSP_PWR_ENTER "8:\n\t" REDS_DSP_CI_PAIR("4", TAIL0)           \
                             REDS_DSP_CI_PAIR("5", TAIL1) "b 8b\n\t"                         \
                             "9:\n\t" REDS_DSP_PWR_LEAVE);                                  \
    }
REDS_DSP_CI_RUN(reds_dsp_ci_run0, "", "")
REDS_DSP_CI_RUN(reds_dsp_ci_run1, REDS_DSP_CI_TAIL("-3", "-2"), REDS_DSP_CI_TAIL("-9", "-8"))
REDS_DSP_CI_RUN(reds_dsp_ci_run2, REDS_DSP_CI_TAIL("-2", "0"), REDS_DSP_CI_TAIL("-6", "-4"))
REDS_DSP_CI_RUN(reds_dsp_ci_run3, REDS_DSP_CI_TAIL("-1", "2"), REDS_DSP_CI_TAIL("-3", "0"))

/* Columns of the fast path's im2col rows (stack) and its table words: 32 row
 * pairs (a 64-channel first layer in one block). */
#define REDS_DSP_CI_FAST 128
#define REDS_DSP_CI_TAB (10 * 32 + 6)

/* An inside pixel's im2col rows: each kernel row as whole words (up to 3
 * bytes more, inside the input, overwritten by the next row or the slack).
 * Out of line, as reds_dsp_ci_widen, so that their loops keep their registers. */
static __attribute__((noinline)) void reds_dsp_ci_rows(const int8_t *src, int row, int kh,
                                                      int seg, int8_t *dst) {
    for (int ky = 0; ky < kh; ky++, src += row, dst += seg) {
        for (int i = 0; i < seg; i += 4) {
            uint32_t v;
            memcpy(&v, src + i, 4);
            memcpy(dst + i, &v, 4);
        }
    }
}
static __attribute__((noinline)) void reds_dsp_ci_widen(const int8_t *in0, const int8_t *in1,
                                                       int chunks, int32_t offset, uint32_t *xw) {
    reds_dsp_widen2x(in0, in1, chunks, offset, xw);
}

/* The fast path: n <= REDS_DSP_CI_FAST columns (im2col rows and the widened
 * pair on the stack, no scratch). */
static __attribute__((noinline)) void reds_dsp_ci_fast(const reds_conv_layer *layer, int k,
                                                      const int8_t *input, int8_t *output) {
    const int c_in = layer->in_width[k], n_out = layer->out_width[k];
    const int n = (int)layer->kernel_h * layer->kernel_w * c_in;
    const int nfull = n >> 2, tail = n & 3;
    const int32_t q = layer->qparam_stride * k;
    const int32_t *bias = layer->bias != NULL ? layer->bias + q : NULL;
    const int32_t *mult = layer->multiplier + q;
    const int32_t *shift = layer->shift + q;
    const int32_t offset = layer->input_offset;
    const uint32_t zq = (uint32_t)(2 * layer->output_offset + 1);
    const int8_t zpb = (int8_t)(-offset);
    const int pixels = (int)layer->out_h * layer->out_w;
    uint32_t tab[REDS_DSP_CI_TAB];
    int8_t col[2][REDS_DSP_CI_FAST + 4];
    uint32_t xw[4 * (REDS_DSP_CI_FAST / 4 + 1)]; /* the widened pair, its last chunk included */
    uint32_t *xt = xw + 4 * nfull;
    const int kh = layer->kernel_h, kw = layer->kernel_w, in_h = layer->in_h, in_w = layer->in_w;
    const int seg = kw * c_in, row = in_w * c_in;
    /* what an inside pixel's word copies read past its window start; the end of the input */
    const int last = (kh - 1) * row + ((seg + 3) & ~3);
    const int8_t *in_end = input + (size_t)in_h * (size_t)row;
    /* The last chunk: bytes 4 - tail .. 3 kept; 2 * offset in their lanes
     * (even lanes = bytes 0, 2; odd lanes = bytes 1, 3). */
    const uint32_t tmask = tail ? 0xFFFFFFFFu << (8 * (4 - tail)) : 0u;
    const uint32_t off2 = (uint32_t)(2 * offset) & 0xFFFFu;
    const uint32_t toff_e = tail >= 2 ? off2 << 16 : 0u;
    const uint32_t toff_o = (off2 << 16) | (tail >= 3 ? off2 : 0u);
    for (int r0 = 0; r0 < n_out; r0 += 64) {
        const int r1 = n_out - r0 < 64 ? n_out : r0 + 64;
        uint32_t *t = tab;
        for (int r = r0; r < r1; r += 2, t += 10) {
            const uint32_t b0 = bias != NULL ? (uint32_t)(2 * bias[r]) : 0u;
            const uint32_t b1 = bias != NULL ? (uint32_t)(2 * bias[r + 1]) : 0u;
            t[0] = b0;
            t[1] = b0;
            t[2] = b1;
            t[3] = b1;
            t[4] = (uint32_t)(uintptr_t)(layer->weights + (r & ~3) * n + ((r & 2) << 2));
            t[5] = (uint32_t)nfull;
            t[6] = (uint32_t)mult[r];
            t[7] = (uint32_t)mult[r + 1];
            t[8] = (uint32_t)~shift[r];
            t[9] = (uint32_t)~shift[r + 1];
        }
        for (int j = 0; j < 6; j++) {
            t[j] = 0u; /* the table ends */
        }
        int oy0 = 0, ox0 = 0; /* the pair's first pixel */
        for (int p = 0; p < pixels; p += 2) {
            const int p1 = p + 1 < pixels ? p + 1 : p; /* an odd last pixel is done twice */
            int oy1 = oy0, ox1 = ox0;
            if (p1 > p) {
                reds_dsp_next_pixel(layer->out_w, &oy1, &ox1);
            }
            for (int j = 0; j < 2; j++) {
                const int iy0 = (j ? oy1 : oy0) * layer->stride_h - layer->pad_top;
                const int ix0 = (j ? ox1 : ox0) * layer->stride_w - layer->pad_left;
                const int8_t *src = input + (iy0 * in_w + ix0) * c_in;
                if (iy0 >= 0 && iy0 <= in_h - kh && ix0 >= 0 && ix0 <= in_w - kw &&
                    src + last <= in_end) {
                    reds_dsp_ci_rows(src, row, kh, seg, col[j]);
                } else {
                    reds_dsp_ci_col(layer, input, c_in, iy0, ix0, zpb, col[j]);
                }
            }
            reds_dsp_ci_widen(col[0], col[1], nfull, offset, xw);
            if (tail) {
                /* lanes 4 - tail .. 3 of the last chunk (the word ending at column
                 * n, the columns before it masked off), doubled */
                uint32_t v0, v1;
                memcpy(&v0, col[0] + n - 4, 4);
                memcpy(&v1, col[1] + n - 4, 4);
                v0 &= tmask;
                v1 &= tmask;
                xt[0] = reds_sxtab16(reds_sxtab16(toff_e, v0), v0);
                xt[1] = reds_sxtab16_ror8(reds_sxtab16_ror8(toff_o, v0), v0);
                xt[2] = reds_sxtab16(reds_sxtab16(toff_e, v1), v1);
                xt[3] = reds_sxtab16_ror8(reds_sxtab16_ror8(toff_o, v1), v1);
            }
            oy0 = oy1;
            ox0 = ox1;
            reds_dsp_next_pixel(layer->out_w, &oy0, &ox0);
            int8_t *out0 = output + p * n_out + r0;
            int8_t *out1 = output + p1 * n_out + r0;
            if (tail == 0) {
                reds_dsp_ci_run0(tab, xw, out0, out1, zq);
            } else if (tail == 1) {
                reds_dsp_ci_run1(tab, xw, out0, out1, zq);
            } else if (tail == 2) {
                reds_dsp_ci_run2(tab, xw, out0, out1, zq);
            } else {
                reds_dsp_ci_run3(tab, xw, out0, out1, zq);
            }
        }
    }
}

static bool reds_dsp_ci_any(const reds_conv_layer *layer, int k, const int8_t *input,
                            int8_t *output, int32_t *scratch);

static bool reds_dsp_conv_const_in(const reds_conv_layer *layer, int k, const int8_t *input,
                                   int8_t *output, int32_t *scratch) {
    const uint16_t *iw = layer->in_width;
    const uint16_t *ow = layer->out_width;
    const int c_in = iw[k], n_out = ow[k];
    const int n = (int)layer->kernel_h * layer->kernel_w * c_in;
    uint32_t widths = 0;
    for (int s = 0; s <= k; s++) {
        if (iw[s] != c_in) {
            return false;
        }
        widths |= ow[s];
    }
    /* The fast path: whole row groups, aligned weights, up to REDS_DSP_CI_FAST columns. */
    const int32_t q = layer->qparam_stride * k;
    if ((widths & 3u) == 0 && n >= 4 && n <= REDS_DSP_CI_FAST &&
        ((uintptr_t)layer->weights & 3u) == 0 &&
        reds_dsp_all_fast2(layer->multiplier + q, layer->shift + q,
                           layer->bias != NULL ? layer->bias + q : NULL, n_out, n,
                           layer->act_min, layer->act_max)) {
        reds_dsp_ci_fast(layer, k, input, output);
        return true;
    }
    return reds_dsp_ci_any(layer, k, input, output, scratch);
}

static __attribute__((noinline)) bool reds_dsp_ci_any(const reds_conv_layer *layer, int k,
                                                     const int8_t *input, int8_t *output,
                                                     int32_t *scratch) {
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
    const bool on_stack = n <= REDS_DSP_CI_STACK;
    if ((widths & 3u) || nfull == 0 || (!on_stack && need > 4 * n_out + 2 * n + 4) ||
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
    uint32_t xw_stack[4 * (REDS_DSP_CI_STACK / 4 + 1)];
    int8_t col[2][REDS_DSP_CI_STACK + 4];
    uint32_t *xw = on_stack ? xw_stack : (uint32_t *)scratch;
    int16_t *xt = (int16_t *)(void *)(xw + 4 * nfull); /* tails: pixel 0 [0..2], pixel 1 [3..5] */
    const int pixels = (int)layer->out_h * layer->out_w;
    const int8_t zpb = (int8_t)(-offset);
    reds_dsp_seg tab[2];
    tab[1].chunks = 0;
    int oy0 = 0, ox0 = 0; /* the pair's first pixel */
    for (int p = 0; p < pixels; p += 2) {
        const int p1 = p + 1 < pixels ? p + 1 : p; /* an odd last pixel is done twice */
        int oy1 = oy0, ox1 = ox0;
        if (p1 > p) {
            reds_dsp_next_pixel(layer->out_w, &oy1, &ox1);
        }
        if (on_stack) {
            reds_dsp_ci_col(layer, input, c_in, oy0 * layer->stride_h - layer->pad_top,
                            ox0 * layer->stride_w - layer->pad_left, zpb, col[0]);
            reds_dsp_ci_col(layer, input, c_in, oy1 * layer->stride_h - layer->pad_top,
                            ox1 * layer->stride_w - layer->pad_left, zpb, col[1]);
            reds_dsp_widen2(col[0], col[1], nfull, offset, xw);
            for (int t = 0; t < tail; t++) {
                xt[t] = (int16_t)(col[0][4 * nfull + t] + offset);
                xt[3 + t] = (int16_t)(col[1][4 * nfull + t] + offset);
            }
        }
        oy0 = oy1;
        ox0 = ox1;
        reds_dsp_next_pixel(layer->out_w, &oy0, &ox0);
        /* im2col of both pixels, (ky, kx, c) order, offset added, padding 0,
         * stored per chunk as (p0: x0, x2), (p0: x1, x3), (p1: x0, x2), (p1: x1, x3). */
        for (int j = 0; j < 2 && !on_stack; j++) {
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

#else /* no DSP extension: the reference is the implementation */

void reds_conv_dsp(const reds_conv_layer *layer, int k, const int8_t *input, int8_t *output,
                   int32_t *scratch) {
    reds_conv_ref(layer, k, input, output, scratch);
}

#endif
