/* Blob reading and result lines shared by the kernel checks for QEMU
 * (dsp_check.cpp, conv_check.cpp; C++); I/O primitives are in bench_io.h. */
#ifndef REDS_CHECK_IO_H
#define REDS_CHECK_IO_H

#include <stddef.h>
#include <stdint.h>

#include "bench_io.h"

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
