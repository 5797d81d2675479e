/* reds_kernels.cpp: portable reference kernels of the generated REDS runtime.
 * A fixed source (reds_tf/kernels/) that `reds export` copies beside the
 * generated model files.
 * Plain C in a .cpp file (C headers only) so it builds for the host, for
 * bare-metal Cortex-M without libstdc++, and inside Arduino sketches. */
/* The Arduino core builds every sketch with -Os, which leaves these loops
 * unscheduled; this file alone is built at -O2 (GCC; other compilers keep
 * their flags). See reds_kernels_dsp.cpp. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O2")
#endif

#include <stddef.h>
#include <stdint.h>

#include "reds_kernels.h"

/* Accumulate one strip (rows [r0, r1), columns [c0, c1)) of the nested
 * layout into acc; returns the weight pointer just past the strip. Inside a
 * group of 4 rows, each chunk of 4 columns holds row after row, so `w` only
 * ever moves forward. */
static const int8_t *reds_fc_ref_strip(const int8_t *w, int32_t r0, int32_t r1, int32_t c0,
                                       int32_t c1, const int16_t *x, int32_t *acc) {
    for (int32_t g = r0; g < r1; g += 4) {
        const int32_t rows = (r1 - g) < 4 ? (r1 - g) : 4;
        int32_t sums[4] = {0, 0, 0, 0};
        int32_t c = c0;
        if (rows == 4) {
#if defined(__SSE2__) || defined(__ARM_NEON) || defined(__wasm_simd128__)
            /* SIMD hosts (the simulator): 16 lanes, one per weight byte of a 4x4
             * tile, a shape GCC/Clang vectorise at -O3; reduced once per group. */
            int32_t lane[16] = {0};
            for (; c + 4 <= c1; c += 4) {
                for (int32_t j = 0; j < 16; ++j) {
                    lane[j] += (int32_t)w[j] * (int32_t)x[c + (j & 3)];
                }
                w += 16;
            }
            for (int32_t r = 0; r < 4; ++r) {
                sums[r] = lane[4 * r] + lane[4 * r + 1] + lane[4 * r + 2] + lane[4 * r + 3];
            }
#else
            /* Scalar cores: 4 register accumulators, each input loaded once per tile. */
            int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
            for (; c + 4 <= c1; c += 4) {
                const int32_t x0 = x[c], x1 = x[c + 1], x2 = x[c + 2], x3 = x[c + 3];
                s0 += w[0] * x0 + w[1] * x1 + w[2] * x2 + w[3] * x3;
                s1 += w[4] * x0 + w[5] * x1 + w[6] * x2 + w[7] * x3;
                s2 += w[8] * x0 + w[9] * x1 + w[10] * x2 + w[11] * x3;
                s3 += w[12] * x0 + w[13] * x1 + w[14] * x2 + w[15] * x3;
                w += 16;
            }
            sums[0] = s0;
            sums[1] = s1;
            sums[2] = s2;
            sums[3] = s3;
#endif
        }
        /* Remaining chunks: a shorter last chunk and/or a shorter last group. */
        for (; c < c1; c += 4) {
            const int32_t cols = (c1 - c) < 4 ? (c1 - c) : 4;
            for (int32_t r = 0; r < rows; ++r) {
                int32_t s = 0;
                for (int32_t j = 0; j < cols; ++j) {
                    s += w[j] * x[c + j];
                }
                sums[r] += s;
                w += cols;
            }
        }
        for (int32_t r = 0; r < rows; ++r) {
            acc[g + r] += sums[r];
        }
    }
    return w;
}

/* Accumulate submodel k's weights (strips R_j, B_j for j = 0 .. k, in storage
 * order) times the widened input x into acc; the widths are n_in[j] (columns)
 * and n_out[j] (rows), times `col_mult` for the columns (conv: kh * kw). */
static void reds_nested_accumulate(const int8_t *w, const uint16_t *in_width,
                                   const uint16_t *out_width, int32_t col_mult, int k,
                                   const int16_t *x, int32_t *acc) {
    int32_t i_prev = 0, o_prev = 0;
    for (int j = 0; j <= k; ++j) {
        const int32_t i_j = col_mult * (int32_t)in_width[j];
        const int32_t o_j = out_width[j];
        w = reds_fc_ref_strip(w, 0, o_prev, i_prev, i_j, x, acc);  /* strip R_j */
        w = reds_fc_ref_strip(w, o_prev, o_j, 0, i_j, x, acc);     /* strip B_j */
        i_prev = i_j;
        o_prev = o_j;
    }
}

static inline int8_t reds_clamp_out(int32_t v, int32_t lo, int32_t hi) {
    v = v < lo ? lo : v;
    v = v > hi ? hi : v;
    return (int8_t)v;
}

void reds_fc_ref(const reds_fc_layer *layer, int k, const int8_t *input, int8_t *output,
                 int32_t *scratch) {
    const int32_t n_in = layer->in_width[k];
    const int32_t n_out = layer->out_width[k];
    int32_t *acc = scratch;
    /* Input plus offset fits int16 (|x + offset| <= 255); widen it once. */
    int16_t *x = (int16_t *)(scratch + n_out);
    for (int32_t c = 0; c < n_in; ++c) {
        x[c] = (int16_t)(input[c] + layer->input_offset);
    }
    for (int32_t r = 0; r < n_out; ++r) {
        acc[r] = layer->bias != NULL ? layer->bias[r] : 0;
    }
    reds_nested_accumulate(layer->weights, layer->in_width, layer->out_width, 1, k, x, acc);
    for (int32_t r = 0; r < n_out; ++r) {
        int32_t v = reds_requantize(acc[r], layer->multiplier[r], layer->shift[r]);
        v += layer->output_offset;
        v = v < layer->act_min ? layer->act_min : v;
        v = v > layer->act_max ? layer->act_max : v;
        output[r] = (int8_t)v;
    }
}

/* Bias / multiplier / shift of submodel k (shared, or its own row). */
static inline int32_t reds_qoff(const reds_conv_layer *layer, int k) {
    return layer->qparam_stride * (int32_t)k;
}

/* Accumulators -> int8 outputs of one pixel. */
static void reds_conv_finish(const reds_conv_layer *layer, int k, int32_t n_out, int32_t *acc,
                             int8_t *out) {
    const int32_t q = reds_qoff(layer, k);
    const int32_t *mult = layer->multiplier + q;
    const int32_t *shift = layer->shift + q;
    for (int32_t r = 0; r < n_out; ++r) {
        const int32_t v = reds_requantize(acc[r], mult[r], shift[r]) + layer->output_offset;
        out[r] = reds_clamp_out(v, layer->act_min, layer->act_max);
    }
}

static void reds_conv_init_acc(const reds_conv_layer *layer, int k, int32_t n_out,
                               int32_t *acc) {
    const int32_t *bias = layer->bias != NULL ? layer->bias + reds_qoff(layer, k) : NULL;
    for (int32_t r = 0; r < n_out; ++r) {
        acc[r] = bias != NULL ? bias[r] : 0;
    }
}

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
