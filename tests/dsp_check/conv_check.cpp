/* Convolution and pooling kernel check for QEMU (tests/test_dsp.py): runs the
 * portable reds_{conv,pointwise,depthwise,avgpool}_ref and their DSP
 * counterparts on layers described in a blob that QEMU's loader puts at
 * reds_bench_io, for every submodel k, and prints on UART0
 * "L K REF_HEX DSP_HEX INSTR_MARKS..." lines (the marks are only counted by
 * the plugin). Links with firmware/bench/bench_startup.c.
 *
 * Blob (little-endian 32-bit words): magic "CONV", number of layers, then per
 * layer: kind (0 standard, 1 pointwise, 2 depthwise, 3 average pool: kernel =
 * filter, no weights, multiplier/shift ignored), K, max_in, max_out, in_h, in_w,
 * out_h, out_w, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left,
 * has_bias, qparam_stride, input_offset, output_offset, act_min, act_max,
 * in_width[K], out_width[K], weight byte count, weights (padded to 4),
 * bias[nq] if has_bias, multiplier[nq], shift[nq] (nq = qparam_stride ?
 * K * qparam_stride : max_out), input (in_h * in_w * max_in bytes, padded;
 * submodel k reads the first in_h * in_w * i_k as its map).
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
    const uint32_t *p = check_blob(0x564E4F43u /* "CONV" */, &layers);
    reds_bench_mark();
    reds_bench_mark();
    for (uint32_t l = 0; l < layers; l++) {
        check_conv_record rec;
        p = check_conv_layer(p, &rec);
        if (p == NULL) {
            reds_bench_write("error: layer too large\n");
            return 4;
        }
        const uint32_t kind = rec.kind, K = rec.K, max_in = rec.max_in, max_out = rec.max_out;
        reds_conv_layer &layer = rec.layer;
        reds_pool_layer &pool = rec.pool;
        const int8_t *input = rec.input;
        const uint32_t pixels = (uint32_t)layer.out_h * layer.out_w;
        if (pixels * max_out > MAX_OUT_BYTES ||
            (kind != 3 && REDS_CONV_SCRATCH_BYTES(layer.kernel_h, layer.kernel_w, max_in,
                                                  max_out) > sizeof scratch)) {
            reds_bench_write("error: layer too large\n");
            return 4;
        }
        for (uint32_t k = 0; k < K; k++) {
            const uint32_t n = pixels * out_width[k];
            memset(out_ref, 0x55, n);
            memset(out_dsp, 0x55, n);
            memset(scratch, 0xA7, sizeof scratch); /* stale scratch must not matter */
            reds_bench_mark();
            if (kind == 3) {
                reds_avgpool_ref(&pool, (int)k, input, out_ref);
            } else if (kind == 2) {
                reds_depthwise_ref(&layer, (int)k, input, out_ref);
            } else if (kind == 0) {
                reds_conv_ref(&layer, (int)k, input, out_ref, scratch);
            } else {
                reds_pointwise_ref(&layer, (int)k, input, out_ref, scratch);
            }
            reds_bench_mark();
            memset(scratch, 0xA7, sizeof scratch);
            reds_bench_mark();
            if (kind == 3) {
                reds_avgpool_dsp(&pool, (int)k, input, out_dsp);
            } else if (kind == 2) {
                reds_depthwise_dsp(&layer, (int)k, input, out_dsp);
            } else if (kind == 0) {
                reds_conv_dsp(&layer, (int)k, input, out_dsp, scratch);
            } else {
                reds_pointwise_dsp(&layer, (int)k, input, out_dsp, scratch);
            }
            reds_bench_mark();
            check_result(l, k, out_ref, out_dsp, n);
        }
    }
    reds_bench_write("done\n");
    return 0;
}
