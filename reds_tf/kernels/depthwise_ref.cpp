/* depthwise_ref.cpp: the portable depthwise convolution kernel (reds_depthwise_ref).
 * Channel c of submodel k is channel c of the full model: no nesting inside a tap.
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

void reds_depthwise_ref(const reds_conv_layer *layer, int k, const int8_t *input,
                        int8_t *output) {
    const int32_t n = layer->in_width[k];
    const int32_t kh = layer->kernel_h, kw = layer->kernel_w;
    const int32_t q = reds_qoff(layer, k);
    for (int32_t oy = 0; oy < layer->out_h; ++oy) {
        const int32_t iy0 = oy * layer->stride_h - layer->pad_top;
        /* Kernel rows inside the image; the same for every column of this row. */
        const int32_t ky0 = iy0 < 0 ? -iy0 : 0;
        const int32_t ky1 = (layer->in_h - iy0) < kh ? (layer->in_h - iy0) : kh;
        for (int32_t ox = 0; ox < layer->out_w; ++ox) {
            const int32_t ix0 = ox * layer->stride_w - layer->pad_left;
            const int32_t kx0 = ix0 < 0 ? -ix0 : 0;
            const int32_t kx1 = (layer->in_w - ix0) < kw ? (layer->in_w - ix0) : kw;
            int8_t *out = output + (oy * layer->out_w + ox) * n;
            for (int32_t c = 0; c < n; ++c) {
                const int8_t *w = layer->weights + c * kh * kw;
                int32_t acc = layer->bias != NULL ? layer->bias[q + c] : 0;
                for (int32_t ky = ky0; ky < ky1; ++ky) {
                    const int32_t row = (iy0 + ky) * layer->in_w + ix0;
                    for (int32_t kx = kx0; kx < kx1; ++kx) {
                        acc += w[ky * kw + kx] * (input[(row + kx) * n + c] + layer->input_offset);
                    }
                }
                const int32_t v = reds_requantize(acc, layer->multiplier[q + c],
                                                  layer->shift[q + c]) +
                                  layer->output_offset;
                out[c] = reds_clamp_out(v, layer->act_min, layer->act_max);
            }
        }
    }
}
