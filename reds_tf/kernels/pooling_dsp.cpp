/* pooling_dsp.cpp: the Cortex-M4 DSP average pooling kernel (reds_avgpool_dsp).
 * Same signature and bit-identical results as reds_avgpool_ref; max pooling
 * has no DSP variant (comparisons only: reds_maxpool_ref serves every target).
 */
#include "reds_kernel_opt.h" /* first: -O2 for the kernels in -Os builds */

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "reds_kernels.h"

#if defined(__ARM_FEATURE_DSP)
#include "reds_dsp.h"
#include "reds_dsp_common.h"

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

void reds_avgpool_dsp(const reds_pool_layer *layer, int k, const int8_t *input, int8_t *output) {
    reds_avgpool_ref(layer, k, input, output);
}

#endif
