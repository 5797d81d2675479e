/* ADD kernel check for QEMU (tests/test_dsp.py): runs reds_add_ref and
 * reds_add_dsp on layers described in a blob that QEMU's loader puts at
 * reds_bench_io, for every submodel k, and prints "L K REF_HEX DSP_HEX" lines on
 * UART0, with reds_bench_mark() around each call (instruction counts). Links
 * with firmware/bench/bench_startup.c.
 *
 * Blob (little-endian 32-bit words): magic "ADDC", number of layers, then per
 * layer: K, h, w, input1_offset, input2_offset, input1_multiplier,
 * input1_shift, input2_multiplier, input2_shift, output_multiplier,
 * output_shift, output_offset, act_min, act_max, width[K], then input1 and
 * input2 (h * w * width[K-1] bytes each, padded to 4; submodel k reads the
 * first h * w * width[k] of each).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "bench_io.h"
#include "check_io.h"
#include "reds_kernels.h"

#define MAX_OUT_BYTES 32768

static int8_t out_ref[MAX_OUT_BYTES], out_dsp[MAX_OUT_BYTES];

int main(void) {
    uint32_t layers;
    const uint32_t *p = check_blob(0x43444441u /* "ADDC" */, &layers);
    reds_bench_mark();
    reds_bench_mark();
    for (uint32_t l = 0; l < layers; l++) {
        const uint32_t K = p[0];
        reds_add_layer layer;
        layer.h = (uint16_t)p[1];
        layer.w = (uint16_t)p[2];
        layer.input1_offset = (int32_t)p[3];
        layer.input2_offset = (int32_t)p[4];
        layer.input1_multiplier = (int32_t)p[5];
        layer.input1_shift = (int32_t)p[6];
        layer.input2_multiplier = (int32_t)p[7];
        layer.input2_shift = (int32_t)p[8];
        layer.output_multiplier = (int32_t)p[9];
        layer.output_shift = (int32_t)p[10];
        layer.output_offset = (int32_t)p[11];
        layer.act_min = (int32_t)p[12];
        layer.act_max = (int32_t)p[13];
        p += 14;
        if (K == 0 || K > MAX_K || REDS_ADD_SCRATCH_BYTES > sizeof scratch) {
            reds_bench_write("error: layer too large\n");
            return 4;
        }
        for (uint32_t k = 0; k < K; k++) {
            in_width[k] = (uint16_t)p[k];
        }
        p += K;
        layer.width = in_width;
        const uint32_t n_max = (uint32_t)layer.h * layer.w * in_width[K - 1];
        if (n_max > MAX_OUT_BYTES) {
            reds_bench_write("error: layer too large\n");
            return 4;
        }
        const int8_t *in1 = (const int8_t *)p;
        p += (n_max + 3u) / 4u;
        const int8_t *in2 = (const int8_t *)p;
        p += (n_max + 3u) / 4u;
        for (uint32_t k = 0; k < K; k++) {
            const uint32_t n = (uint32_t)layer.h * layer.w * in_width[k];
            memset(out_ref, 0x55, n);
            memset(out_dsp, 0x55, n);
            memset(scratch, 0xA7, sizeof scratch); /* stale scratch must not matter */
            reds_bench_mark();
            reds_add_ref(&layer, (int)k, in1, in2, out_ref, scratch);
            reds_bench_mark();
            memset(scratch, 0xA7, sizeof scratch);
            reds_bench_mark();
            reds_add_dsp(&layer, (int)k, in1, in2, out_dsp, scratch);
            reds_bench_mark();
            check_result(l, k, out_ref, out_dsp, n);
        }
    }
    reds_bench_write("done\n");
    return 0;
}
