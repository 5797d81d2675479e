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
#include "reds_kernels.h"

#define CHECK_MAGIC 0x43505344u /* "DSPC" */
#define MAX_K 8
#define MAX_OUT 1024
#define SCRATCH_WORDS 4096

static int32_t scratch[SCRATCH_WORDS];
static int8_t out_ref[MAX_OUT], out_dsp[MAX_OUT];

static void put_u32(uint32_t v) {
    char buf[12];
    int i = (int)sizeof buf - 1;
    buf[i] = '\0';
    do {
        buf[--i] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v != 0u);
    reds_bench_write(&buf[i]);
}

static void put_hex(const int8_t *data, uint32_t n) {
    static const char digits[] = "0123456789abcdef";
    char pair[3] = {0, 0, 0};
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t b = (uint8_t)data[i];
        pair[0] = digits[b >> 4];
        pair[1] = digits[b & 15u];
        reds_bench_write(pair);
    }
}

int main(void) {
    const uint32_t *p = (const uint32_t *)(const void *)&reds_bench_io;
    if (p[0] != CHECK_MAGIC) {
        reds_bench_write("error: no layer blob\n");
        return 4;
    }
    const uint32_t layers = p[1];
    p += 2;
    for (uint32_t l = 0; l < layers; l++) {
        const uint32_t K = p[0], max_in = p[1], max_out = p[2], has_bias = p[3];
        if (K == 0 || K > MAX_K || max_out > MAX_OUT ||
            REDS_FC_SCRATCH_BYTES(max_in, max_out) > sizeof scratch) {
            reds_bench_write("error: layer too large\n");
            return 4;
        }
        static uint16_t in_width[MAX_K], out_width[MAX_K];
        reds_fc_layer layer;
        layer.input_offset = (int32_t)p[4];
        layer.output_offset = (int32_t)p[5];
        layer.act_min = (int32_t)p[6];
        layer.act_max = (int32_t)p[7];
        p += 8;
        for (uint32_t k = 0; k < K; k++) {
            in_width[k] = (uint16_t)p[k];
            out_width[k] = (uint16_t)p[K + k];
        }
        p += 2 * K;
        layer.in_width = in_width;
        layer.out_width = out_width;
        layer.weights = (const int8_t *)p;
        p += (max_in * max_out + 3u) / 4u;
        layer.bias = has_bias ? (const int32_t *)p : NULL;
        p += has_bias ? max_out : 0u;
        layer.multiplier = (const int32_t *)p;
        p += max_out;
        layer.shift = (const int32_t *)p;
        p += max_out;
        const int8_t *input = (const int8_t *)p;
        p += (max_in + 3u) / 4u;
        for (uint32_t k = 0; k < K; k++) {
            memset(out_ref, 0x55, sizeof out_ref);
            memset(out_dsp, 0x55, sizeof out_dsp);
            memset(scratch, 0xA7, sizeof scratch); /* stale scratch must not matter */
            reds_fc_ref(&layer, (int)k, input, out_ref, scratch);
            memset(scratch, 0xA7, sizeof scratch);
            reds_fc_dsp(&layer, (int)k, input, out_dsp, scratch);
            put_u32(l);
            reds_bench_write(" ");
            put_u32(k);
            reds_bench_write(" ");
            put_hex(out_ref, out_width[k]);
            reds_bench_write(" ");
            put_hex(out_dsp, out_width[k]);
            reds_bench_write("\n");
        }
    }
    reds_bench_write("done\n");
    return 0;
}
