/* conv_ref.cpp: the portable convolution kernels of TFLite's CONV_2D:
 * reds_conv_ref (im2col per output pixel) and reds_pointwise_ref (1x1: each
 * pixel a fully connected layer), both over the nested layout of
 * reds_ref_common.h. One file, as the two share the accumulate/requantise
 * helpers: compiled together they run 0.45 % fewer instructions on DS-CNN-S.
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

void reds_conv_ref(const reds_conv_layer *layer, int k, const int8_t *input, int8_t *output,
                   int32_t *scratch) {
    const int32_t n_in = layer->in_width[k];
    const int32_t n_out = layer->out_width[k];
    const int32_t kh = layer->kernel_h, kw = layer->kernel_w;
    int32_t *acc = scratch;
    int16_t *col = (int16_t *)(scratch + n_out);
    for (int32_t oy = 0; oy < layer->out_h; ++oy) {
        for (int32_t ox = 0; ox < layer->out_w; ++ox) {
            const int32_t iy0 = oy * layer->stride_h - layer->pad_top;
            const int32_t ix0 = ox * layer->stride_w - layer->pad_left;
            /* The nested im2col vector: channel blocks of submodels 0 .. k, each
             * (ky, kx, c) with the offset added; padding contributes 0. */
            int16_t *p = col;
            int32_t c_prev = 0;
            for (int j = 0; j <= k; ++j) {
                const int32_t c_j = layer->in_width[j];
                if (c_j == c_prev) {
                    continue;
                }
                for (int32_t ky = 0; ky < kh; ++ky) {
                    const int32_t iy = iy0 + ky;
                    for (int32_t kx = 0; kx < kw; ++kx) {
                        const int32_t ix = ix0 + kx;
                        if (iy < 0 || iy >= layer->in_h || ix < 0 || ix >= layer->in_w) {
                            for (int32_t c = c_prev; c < c_j; ++c) {
                                *p++ = 0;
                            }
                        } else {
                            const int8_t *src = input + (iy * layer->in_w + ix) * n_in;
                            for (int32_t c = c_prev; c < c_j; ++c) {
                                *p++ = (int16_t)(src[c] + layer->input_offset);
                            }
                        }
                    }
                }
                c_prev = c_j;
            }
            reds_conv_init_acc(layer, k, n_out, acc);
            reds_nested_accumulate(layer->weights, layer->in_width, layer->out_width, kh * kw, k,
                                   col, acc);
            reds_conv_finish(layer, k, n_out, acc,
                             output + (oy * layer->out_w + ox) * n_out);
        }
    }
}

void reds_pointwise_ref(const reds_conv_layer *layer, int k, const int8_t *input,
                        int8_t *output, int32_t *scratch) {
    const int32_t n_in = layer->in_width[k];
    const int32_t n_out = layer->out_width[k];
    const int32_t pixels = (int32_t)layer->out_h * layer->out_w;
    int32_t *acc = scratch;
    int16_t *x = (int16_t *)(scratch + n_out);
    for (int32_t p = 0; p < pixels; ++p) {
        const int8_t *src = input + p * n_in;
        for (int32_t c = 0; c < n_in; ++c) {
            x[c] = (int16_t)(src[c] + layer->input_offset);
        }
        reds_conv_init_acc(layer, k, n_out, acc);
        reds_nested_accumulate(layer->weights, layer->in_width, layer->out_width, 1, k, x, acc);
        reds_conv_finish(layer, k, n_out, acc, output + p * n_out);
    }
}
