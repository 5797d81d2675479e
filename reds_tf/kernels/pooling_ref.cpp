/* pooling_ref.cpp: the portable average and max pooling kernels.
 * reds_avgpool_ref and reds_maxpool_ref share the window bounds (TFLite Micro
 * pools never read padding); max pooling serves DSP targets too.
 *
 * A fixed source (reds_tf/kernels/) that `reds export` copies beside the
 * generated model files. Plain C in a .cpp file (C headers only) so it builds
 * for the host, for bare-metal Cortex-M without libstdc++, and inside Arduino
 * sketches.
 */
#include "reds_kernel_opt.h" /* first: -O2 for the kernels in -Os builds */

#include <stddef.h>
#include <stdint.h>

#include "reds_kernels.h"
#include "reds_ref_common.h"

/* One axis of a pool window, cut to the image: TFLM pools never read padding. */
static inline void reds_pool_window(int32_t o, int32_t stride, int32_t pad, int32_t filter,
                                    int32_t in, int32_t *lo, int32_t *hi) {
    const int32_t start = o * stride - pad;
    *lo = start < 0 ? 0 : start;
    *hi = (start + filter) < in ? (start + filter) : in;
}

void reds_avgpool_ref(const reds_pool_layer *layer, int k, const int8_t *input, int8_t *output) {
    const int32_t n = layer->width[k];
    for (int32_t oy = 0; oy < layer->out_h; ++oy) {
        int32_t y0, y1;
        reds_pool_window(oy, layer->stride_h, layer->pad_top, layer->filter_h, layer->in_h, &y0,
                         &y1);
        for (int32_t ox = 0; ox < layer->out_w; ++ox) {
            int32_t x0, x1;
            reds_pool_window(ox, layer->stride_w, layer->pad_left, layer->filter_w, layer->in_w,
                             &x0, &x1);
            const int32_t count = (y1 - y0) * (x1 - x0);
            int8_t *out = output + (oy * layer->out_w + ox) * n;
            for (int32_t c = 0; c < n; ++c) {
                int32_t sum = 0;
                for (int32_t y = y0; y < y1; ++y) {
                    for (int32_t x = x0; x < x1; ++x) {
                        sum += input[(y * layer->in_w + x) * n + c];
                    }
                }
                /* TFLite: round half away from zero (C division truncates). */
                const int32_t avg = count <= 0     ? 0
                                    : sum > 0 ? (sum + count / 2) / count
                                              : (sum - count / 2) / count;
                out[c] = reds_clamp_out(avg, layer->act_min, layer->act_max);
            }
        }
    }
}

void reds_maxpool_ref(const reds_pool_layer *layer, int k, const int8_t *input, int8_t *output) {
    const int32_t n = layer->width[k];
    for (int32_t oy = 0; oy < layer->out_h; ++oy) {
        int32_t y0, y1;
        reds_pool_window(oy, layer->stride_h, layer->pad_top, layer->filter_h, layer->in_h, &y0,
                         &y1);
        for (int32_t ox = 0; ox < layer->out_w; ++ox) {
            int32_t x0, x1;
            reds_pool_window(ox, layer->stride_w, layer->pad_left, layer->filter_w, layer->in_w,
                             &x0, &x1);
            int8_t *out = output + (oy * layer->out_w + ox) * n;
            /* TFLite Micro starts from the lowest int8 (a window entirely in the
             * padding, impossible with SAME/VALID, would give -128). The running
             * maximum lives in the output pixel: contiguous channel loops. */
            for (int32_t c = 0; c < n; ++c) {
                out[c] = INT8_MIN;
            }
            for (int32_t y = y0; y < y1; ++y) {
                for (int32_t x = x0; x < x1; ++x) {
                    const int8_t *in = input + (y * layer->in_w + x) * n;
                    for (int32_t c = 0; c < n; ++c) {
                        out[c] = in[c] > out[c] ? in[c] : out[c];
                    }
                }
            }
            for (int32_t c = 0; c < n; ++c) {
                out[c] = reds_clamp_out(out[c], layer->act_min, layer->act_max);
            }
        }
    }
}
