/* Per-layer latency measurement for QEMU (mps2-an386), built by
 * reds_tf/latency.py with the kernels of reds_tf/kernels, the bench start-up
 * (firmware/bench/bench_startup.c) and its linker script.
 *
 * The cases come in the input blob at reds_bench_io (the words below, little
 * endian), followed by a pool of random bytes that serves as weights and input
 * activations. Per case: one kernel call between two reds_bench_mark() calls,
 * after two marks around nothing (the cost of the marks themselves). Bias,
 * requantisation multipliers and shifts are typical trained values (every
 * kernel takes its usual fast path); the clamp is the full int8 range.
 *
 *   header:  magic "LATC", case count, pool bytes
 *   a case:  kind, K, k, in_h, in_w, out_h, out_w, kernel_h, kernel_w,
 *            stride_h, stride_w, pad_top, pad_left, then K input widths and
 *            K output widths (kind: 0 fully connected, 1 conv, 2 pointwise,
 *            3 depthwise, 4 average pool, 5 max pool)
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "bench_io.h"
#include "reds_kernels.h"

#define REDS_LAT_MAGIC 0x4354414Cu /* "LATC" */
#define REDS_LAT_MAX_K 16
#define REDS_LAT_MAX_OUT 4096
#define REDS_LAT_REGION (256u * 1024u)

static int32_t reds_lat_bias[REDS_LAT_MAX_OUT];
static int32_t reds_lat_mult[REDS_LAT_MAX_OUT];
static int32_t reds_lat_shift[REDS_LAT_MAX_OUT];
/* input | output | scratch, one region each */
static int32_t reds_lat_arena[3 * REDS_LAT_REGION / 4];

int main(void) {
    const uint32_t *w = (const uint32_t *)(const void *)&reds_bench_io;
    if (w[0] != REDS_LAT_MAGIC) {
        reds_bench_write("error: no latency cases at reds_bench_io\n");
        return 4;
    }
    const uint32_t n_cases = w[1];
    const uint32_t pool_bytes = w[2];
    const uint32_t *c = w + 3;
    /* The pool follows the cases: find it first. */
    const uint32_t *end = c;
    for (uint32_t j = 0; j < n_cases; j++) {
        end += 13 + 2 * end[1];
    }
    const int8_t *pool = (const int8_t *)(const void *)end;
    uint32_t seed = 12345u;
    for (int r = 0; r < REDS_LAT_MAX_OUT; r++) {
        seed = seed * 1664525u + 1013904223u;
        reds_lat_bias[r] = (int32_t)(seed >> 21) - 1024;
        reds_lat_mult[r] = 0x40000000 + (int32_t)(seed >> 4 & 0x1FFFFFFF);
        reds_lat_shift[r] = -7 - (int32_t)(seed >> 30 & 1u);
    }
    int8_t *input = (int8_t *)reds_lat_arena;
    int8_t *output = input + REDS_LAT_REGION;
    int32_t *scratch = reds_lat_arena + 2 * REDS_LAT_REGION / 4;
    memcpy(input, pool, pool_bytes < REDS_LAT_REGION ? pool_bytes : REDS_LAT_REGION);

    reds_bench_mark();
    reds_bench_mark();
    for (uint32_t j = 0; j < n_cases; j++) {
        const uint32_t kind = c[0], K = c[1], k = c[2];
        uint16_t iw[REDS_LAT_MAX_K], ow[REDS_LAT_MAX_K];
        for (uint32_t s = 0; s < K && s < REDS_LAT_MAX_K; s++) {
            iw[s] = (uint16_t)c[13 + s];
            ow[s] = (uint16_t)c[13 + K + s];
        }
        const int32_t lo = -128, hi = 127;
        if (kind == 0) {
            const reds_fc_layer fc = {pool, reds_lat_bias, reds_lat_mult, reds_lat_shift, iw, ow,
                                      128, -128, lo, hi};
            reds_bench_mark();
            reds_fc_dsp(&fc, (int)k, input, output, scratch);
            reds_bench_mark();
        } else if (kind <= 3) {
            const reds_conv_layer cv = {pool, reds_lat_bias, reds_lat_mult, reds_lat_shift, iw, ow,
                                        (uint16_t)c[3], (uint16_t)c[4], (uint16_t)c[5],
                                        (uint16_t)c[6], (uint16_t)c[7], (uint16_t)c[8],
                                        (uint16_t)c[9], (uint16_t)c[10], (uint16_t)c[11],
                                        (uint16_t)c[12], 0, 128, -128, lo, hi};
            reds_bench_mark();
            if (kind == 1) {
                reds_conv_dsp(&cv, (int)k, input, output, scratch);
            } else if (kind == 2) {
                reds_pointwise_dsp(&cv, (int)k, input, output, scratch);
            } else {
                reds_depthwise_dsp(&cv, (int)k, input, output);
            }
            reds_bench_mark();
        } else {
            const reds_pool_layer pl = {iw, (uint16_t)c[3], (uint16_t)c[4], (uint16_t)c[5],
                                        (uint16_t)c[6], (uint16_t)c[7], (uint16_t)c[8],
                                        (uint16_t)c[9], (uint16_t)c[10], (uint16_t)c[11],
                                        (uint16_t)c[12], lo, hi};
            reds_bench_mark();
            if (kind == 4) {
                reds_avgpool_dsp(&pl, (int)k, input, output);
            } else {
                reds_maxpool_ref(&pl, (int)k, input, output);
            }
            reds_bench_mark();
        }
        c += 13 + 2 * K;
    }
    reds_bench_write("done\n");
    return 0;
}
