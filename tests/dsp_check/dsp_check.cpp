/* Kernel check for QEMU (tests/test_dsp.py): runs reds_fc_ref and reds_fc_dsp
 * on fully connected layers described in a blob that QEMU's loader puts at
 * reds_bench_io (firmware/bench/bench.ld), for every submodel k, and prints
 * both outputs on UART0: "L K REF_HEX DSP_HEX". Links with
 * firmware/bench/bench_startup.c.
 *
 * Blob (little-endian 32-bit words): magic "DSPC", number of layers, then per
 * layer: K, max_in, max_out, has_bias, input_offset, output_offset, act_min,
 * act_max, in_width[K], out_width[K], weights (max_in * max_out bytes,
 * padded to 4), bias[max_out] if has_bias, multiplier[max_out],
 * shift[max_out], input (max_in bytes, padded to 4).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "bench_io.h"
#include "check_io.h"
#include "reds_kernels.h"

#define MAX_OUT 1024

static int8_t out_ref[MAX_OUT], out_dsp[MAX_OUT];

int main(void) {
    uint32_t layers;
    const uint32_t *p = check_blob(0x43505344u /* "DSPC" */, &layers);
    for (uint32_t l = 0; l < layers; l++) {
        const uint32_t K = p[0], max_in = p[1], max_out = p[2], has_bias = p[3];
        if (K == 0 || K > MAX_K || max_out > MAX_OUT ||
            REDS_FC_SCRATCH_BYTES(max_in, max_out) > sizeof scratch) {
            reds_bench_write("error: layer too large\n");
            return 4;
        }
        reds_fc_layer layer;
        layer.input_offset = (int32_t)p[4];
        layer.output_offset = (int32_t)p[5];
        layer.act_min = (int32_t)p[6];
        layer.act_max = (int32_t)p[7];
        p += 8;
        p = check_widths(p, K, &layer);
        layer.weights = (const int8_t *)p;
        p += (max_in * max_out + 3u) / 4u;
        p = check_qparams(p, has_bias, max_out, &layer);
        const int8_t *input = (const int8_t *)p;
        p += (max_in + 3u) / 4u;
        for (uint32_t k = 0; k < K; k++) {
            memset(out_ref, 0x55, sizeof out_ref);
            memset(out_dsp, 0x55, sizeof out_dsp);
            memset(scratch, 0xA7, sizeof scratch); /* stale scratch must not matter */
            reds_fc_ref(&layer, (int)k, input, out_ref, scratch);
            memset(scratch, 0xA7, sizeof scratch);
            reds_fc_dsp(&layer, (int)k, input, out_dsp, scratch);
            check_result(l, k, out_ref, out_dsp, out_width[k]);
        }
    }
    reds_bench_write("done\n");
    return 0;
}
