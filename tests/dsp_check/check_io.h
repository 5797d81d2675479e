/* Blob reading and result lines shared by the kernel checks for QEMU
 * (dsp_check.cpp, conv_check.cpp, rows_check.cpp, add_check.cpp; C++); I/O
 * primitives are in bench_io.h. */
#ifndef REDS_CHECK_IO_H
#define REDS_CHECK_IO_H

#include <stddef.h>
#include <stdint.h>

#include "bench_io.h"
#include "reds_kernels.h"

/* Limits shared by both checks: submodels per layer, kernel scratch words. */
#define MAX_K 8
#define SCRATCH_WORDS 4096

static int32_t scratch[SCRATCH_WORDS];
/* Widths of the current layer's submodels (filled by check_widths). */
static uint16_t in_width[MAX_K], out_width[MAX_K];

/* The words after the blob's magic and layer count (stored in *layers); ends
 * the run with status 4, as main() returning 4 would, when the blob does not
 * start with magic. */
static inline const uint32_t *check_blob(uint32_t magic, uint32_t *layers) {
    const uint32_t *p = (const uint32_t *)(const void *)&reds_bench_io;
    if (p[0] != magic) {
        reds_bench_write("error: no layer blob\n");
        reds_bench_exit(4);
    }
    *layers = p[1];
    return p + 2;
}

/* in_width[K] then out_width[K] of a layer into in_width, out_width and the
 * layer; returns the words after them. */
template <typename Layer>
static inline const uint32_t *check_widths(const uint32_t *p, uint32_t K, Layer *layer) {
    for (uint32_t k = 0; k < K; k++) {
        in_width[k] = (uint16_t)p[k];
        out_width[k] = (uint16_t)p[K + k];
    }
    layer->in_width = in_width;
    layer->out_width = out_width;
    return p + 2 * K;
}

/* bias[n] (when has_bias), multiplier[n] and shift[n] of a layer into the
 * layer; returns the words after them. */
template <typename Layer>
static inline const uint32_t *check_qparams(const uint32_t *p, uint32_t has_bias, uint32_t n,
                                            Layer *layer) {
    layer->bias = has_bias ? (const int32_t *)p : NULL;
    p += has_bias ? n : 0u;
    layer->multiplier = (const int32_t *)p;
    layer->shift = (const int32_t *)(p + n);
    return p + 2 * n;
}

/* One convolution or pooling layer of conv_check.cpp's blob format (kind, K,
 * max_in, max_out, geometry, quantisation, widths, weights, qparams, input);
 * `pool` mirrors the geometry for the pooling kinds. */
typedef struct check_conv_record {
    uint32_t kind, K, max_in, max_out;
    reds_conv_layer layer;
    reds_pool_layer pool;
    const int8_t *input;
} check_conv_record;

/* Reads one layer record into *r; returns the words after it, or NULL when
 * its submodel count is 0 or above MAX_K. */
static inline const uint32_t *check_conv_layer(const uint32_t *p, check_conv_record *r) {
    r->kind = p[0];
    r->K = p[1];
    r->max_in = p[2];
    r->max_out = p[3];
    if (r->K == 0 || r->K > MAX_K) {
        return NULL;
    }
    reds_conv_layer *layer = &r->layer;
    layer->in_h = (uint16_t)p[4];
    layer->in_w = (uint16_t)p[5];
    layer->out_h = (uint16_t)p[6];
    layer->out_w = (uint16_t)p[7];
    layer->kernel_h = (uint16_t)p[8];
    layer->kernel_w = (uint16_t)p[9];
    layer->stride_h = (uint16_t)p[10];
    layer->stride_w = (uint16_t)p[11];
    layer->pad_top = (uint16_t)p[12];
    layer->pad_left = (uint16_t)p[13];
    const uint32_t has_bias = p[14];
    layer->qparam_stride = (int32_t)p[15];
    layer->input_offset = (int32_t)p[16];
    layer->output_offset = (int32_t)p[17];
    layer->act_min = (int32_t)p[18];
    layer->act_max = (int32_t)p[19];
    p = check_widths(p + 20, r->K, layer);
    const uint32_t weight_bytes = p[0];
    layer->weights = (const int8_t *)(p + 1);
    p += 1 + (weight_bytes + 3u) / 4u;
    const uint32_t nq = layer->qparam_stride ? r->K * (uint32_t)layer->qparam_stride : r->max_out;
    p = check_qparams(p, has_bias, nq, layer);
    reds_pool_layer *pool = &r->pool;
    pool->width = in_width;
    pool->in_h = layer->in_h;
    pool->in_w = layer->in_w;
    pool->out_h = layer->out_h;
    pool->out_w = layer->out_w;
    pool->filter_h = layer->kernel_h;
    pool->filter_w = layer->kernel_w;
    pool->stride_h = layer->stride_h;
    pool->stride_w = layer->stride_w;
    pool->pad_top = layer->pad_top;
    pool->pad_left = layer->pad_left;
    pool->act_min = layer->act_min;
    pool->act_max = layer->act_max;
    r->input = (const int8_t *)p;
    return p + ((uint32_t)layer->in_h * layer->in_w * r->max_in + 3u) / 4u;
}

/* One result line on UART0: "L K REF_HEX DSP_HEX". */
static inline void check_result(uint32_t l, uint32_t k, const int8_t *ref, const int8_t *dsp,
                                uint32_t n) {
    reds_bench_write_u32(l);
    reds_bench_write(" ");
    reds_bench_write_u32(k);
    reds_bench_write(" ");
    reds_bench_write_hex(ref, n);
    reds_bench_write(" ");
    reds_bench_write_hex(dsp, n);
    reds_bench_write("\n");
}

#endif /* REDS_CHECK_IO_H */
