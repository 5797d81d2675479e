/* In-place row runner check for QEMU (tests/test_rows_qemu.py): runs
 * reds_run_conv / reds_run_pool (reds_tf/kernels/rows.cpp, with the kernels
 * REDS_CONV, REDS_POINTWISE, REDS_DEPTHWISE, REDS_AVGPOOL, REDS_MAXPOOL: the
 * DSP ones on the Cortex-M4) with the output placed INSIDE the input's bytes,
 * output = input + shift, for layers described in a blob that QEMU's loader
 * puts at reds_bench_io, and prints on UART0 one line per run:
 *     "L K R CLEAN OUT_HEX"
 * (layer, submodel, run index, 1 when no arena byte outside the output and no
 * byte after the ring's delay + rows rows changed, the output bytes). Links
 * with firmware/bench/bench_startup.c.
 *
 * Blob (little-endian 32-bit words): magic "ROWS", number of layers, then per
 * layer the layer of tests/dsp_check/conv_check.cpp (kind 0 standard,
 * 1 pointwise, 2 depthwise, 3 average pool, 4 max pool; pools: kernel =
 * filter, no weights, multiplier/shift ignored, width = in_width) up to and
 * including its input, then for every submodel k: the number of runs R, then
 * R triples (delay, rows, shift) (shift signed: output start - input start,
 * bytes, a multiple of 4).
 *
 * The input (in_h * in_w * i_k bytes) is copied into a static arena GUARD bytes
 * plus max(0, -shift) (rounded up to 4) from its start; the rest of the arena
 * and the ring are poisoned first.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "bench_io.h"
#include "check_io.h"
#include "reds_kernels.h"

#define ARENA_BYTES 65536
#define RING_BYTES 16384
#define GUARD 64
#define ARENA_POISON 0x5A
#define RING_POISON 0xA5

static uint32_t arena_words[ARENA_BYTES / 4];
static uint32_t ring_words[(RING_BYTES + GUARD) / 4];

/* 1 when bytes [a, b) of buf all equal v. */
static int all_equal(const int8_t *buf, int32_t a, int32_t b, int v) {
    for (int32_t i = a; i < b; i++) {
        if ((uint8_t)buf[i] != (uint8_t)v) {
            return 0;
        }
    }
    return 1;
}

int main(void) {
    uint32_t layers;
    const uint32_t *p = check_blob(0x53574F52u /* "ROWS" */, &layers);
    int8_t *arena = (int8_t *)arena_words;
    int8_t *ring = (int8_t *)ring_words;
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
        if (kind <= 1 && REDS_CONV_SCRATCH_BYTES(layer.kernel_h, layer.kernel_w, max_in,
                                                 max_out) > sizeof scratch) {
            reds_bench_write("error: layer too large\n");
            return 4;
        }
        for (uint32_t k = 0; k < K; k++) {
            const uint32_t runs = p[0];
            p += 1;
            const int32_t in_bytes = (int32_t)layer.in_h * layer.in_w * in_width[k];
            const int32_t out_row = (int32_t)layer.out_w * out_width[k];
            const int32_t out_bytes = (int32_t)layer.out_h * out_row;
            for (uint32_t r = 0; r < runs; r++, p += 3) {
                const int delay = (int)(int32_t)p[0], rows = (int)p[1];
                const int32_t shift = (int32_t)p[2];
                const int32_t in_off = GUARD + (shift < 0 ? ((-shift + 3) & ~3) : 0);
                const int32_t out_off = in_off + shift;
                const int32_t end_in = in_off + in_bytes, end_out = out_off + out_bytes;
                const int32_t end = end_in > end_out ? end_in : end_out;
                const int32_t ring_bytes = (delay + rows) * out_row;
                if (rows < 1 || delay < 0 || (shift & 3) != 0 || end + GUARD > ARENA_BYTES ||
                    ring_bytes > RING_BYTES) {
                    reds_bench_write("error: run does not fit\n");
                    return 4;
                }
                memset(arena, ARENA_POISON, ARENA_BYTES);
                memcpy(arena + in_off, input, (size_t)in_bytes);
                memset(ring, RING_POISON, RING_BYTES + GUARD);
                memset(scratch, 0xA7, sizeof scratch); /* stale scratch must not matter */
                int8_t *output = arena + out_off;
                if (kind >= 3) {
                    reds_run_pool(kind == 4 ? REDS_OP_MAXPOOL : REDS_OP_AVGPOOL, &pool, (int)k,
                                  arena + in_off, output, ring, delay, rows);
                } else {
                    const int op = kind == 2   ? REDS_OP_DEPTHWISE
                                   : kind == 1 ? REDS_OP_POINTWISE
                                               : REDS_OP_CONV;
                    reds_run_conv(op, &layer, (int)k, arena + in_off, output, ring, delay, rows,
                                  scratch);
                }
                /* Nothing written outside the output: the input bytes it does
                 * not cover are still the input's, the rest still poison. */
                int clean = all_equal(ring, ring_bytes, RING_BYTES + GUARD, RING_POISON);
                const int32_t lo = out_off < in_off ? out_off : in_off;
                clean &= all_equal(arena, 0, lo, ARENA_POISON);
                clean &= all_equal(arena, end, ARENA_BYTES, ARENA_POISON);
                for (int32_t i = lo; i < end; i++) {
                    if (i >= out_off && i < end_out) {
                        continue;
                    }
                    if (i >= in_off && i < end_in) {
                        clean &= arena[i] == input[i - in_off];
                    } else {
                        clean &= (uint8_t)arena[i] == ARENA_POISON;
                    }
                }
                reds_bench_write_u32(l);
                reds_bench_write(" ");
                reds_bench_write_u32(k);
                reds_bench_write(" ");
                reds_bench_write_u32(r);
                reds_bench_write(clean ? " 1 " : " 0 ");
                reds_bench_write_hex(output, (uint32_t)out_bytes);
                reds_bench_write("\n");
            }
        }
    }
    reds_bench_write("done\n");
    return 0;
}
