/* Stream check (tests/test_stream_qemu.py): runs chains of row-wise layers
 * through reds_run_stream (reds_tf/kernels/rows.cpp) with the window layout of
 * the memory planner (reds_tf/memory.py stream_layout, computed in Python and
 * passed in the blob), and the same chain as one whole-map kernel call per
 * layer (REDS_CONV, REDS_POINTWISE, REDS_DEPTHWISE, REDS_AVGPOOL, REDS_MAXPOOL:
 * the DSP kernels on the Cortex-M4, the portable ones on the host). Prints one
 * line per run:
 *     "C K R CLEAN STREAM_HEX WHOLE_HEX"
 * (chain, submodel, run index, CLEAN: bit 0 nothing written around the window
 * block, bit 1 nothing around the output, bit 2 nothing in the scratch beyond
 * the bytes given, bit 3 the input unchanged; then both outputs), then "done".
 *
 * Built for QEMU (links with firmware/bench/bench_startup.c, the blob at
 * reds_bench_io) or on the host with g++ (the blob file is argv[1], the lines
 * go to stdout).
 *
 * Blob (little-endian 32-bit words): magic "STRM", number of chains, then per
 * chain: stages n, submodels K; n layer records in the format of
 * tests/dsp_check/conv_check.cpp (check_conv_layer: kind = REDS_OP_*, pools
 * with the filter as kernel and width = in_width; the first record's input is
 * the chain's input, the others' are ignored); n window rows (the stage's
 * `rows`); then per submodel k: runs R, and per run: the window block's bytes,
 * the scratch bytes, and the n window offsets in the block.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "bench_io.h"
#include "check_io.h"
#include "reds_kernels.h"

#define MAX_STAGES 8
#define BLOCK_BYTES 32768
#define MAP_BYTES 16384
#define SCRATCH_BYTES 16384
#define GUARD 64
#define POISON 0x5A

static uint32_t block_words[(BLOCK_BYTES + 2 * GUARD) / 4];
static uint32_t out_words[(MAP_BYTES + 2 * GUARD) / 4];
static uint32_t scratch_words[(SCRATCH_BYTES + GUARD) / 4];
static uint32_t input_words[MAP_BYTES / 4];
static uint32_t ping_words[MAP_BYTES / 4], pong_words[MAP_BYTES / 4];

/* Per stage: its record and its own copy of the widths (check_conv_layer
 * points every record at the shared in_width / out_width). */
static check_conv_record recs[MAX_STAGES];
static uint16_t stage_in[MAX_STAGES][MAX_K], stage_out[MAX_STAGES][MAX_K];

/* 1 when bytes [a, b) of buf all equal v. */
static int all_equal(const int8_t *buf, uint32_t a, uint32_t b, int v) {
    for (uint32_t i = a; i < b; i++) {
        if ((uint8_t)buf[i] != (uint8_t)v) {
            return 0;
        }
    }
    return 1;
}

static uint32_t map_bytes(const check_conv_record *r, int k, int out) {
    const reds_conv_layer *l = &r->layer;
    return out ? (uint32_t)l->out_h * l->out_w * l->out_width[k]
               : (uint32_t)l->in_h * l->in_w * l->in_width[k];
}

/* The chain as one kernel call per layer on whole maps; returns the output. */
static const int8_t *run_whole(int n, int k, const int8_t *input) {
    const int8_t *src = input;
    int8_t *bufs[2] = {(int8_t *)ping_words, (int8_t *)pong_words};
    for (int i = 0; i < n; i++) {
        int8_t *dst = bufs[i & 1];
        const reds_conv_layer *l = &recs[i].layer;
        const reds_pool_layer *p = &recs[i].pool;
        switch (recs[i].kind) {
        case REDS_OP_CONV:
            REDS_CONV(l, k, src, dst, scratch);
            break;
        case REDS_OP_POINTWISE:
            REDS_POINTWISE(l, k, src, dst, scratch);
            break;
        case REDS_OP_DEPTHWISE:
            REDS_DEPTHWISE(l, k, src, dst);
            break;
        case REDS_OP_AVGPOOL:
            REDS_AVGPOOL(p, k, src, dst);
            break;
        default:
            REDS_MAXPOOL(p, k, src, dst);
            break;
        }
        src = dst;
    }
    return src;
}

static int run(const uint32_t *p, uint32_t chains) {
    int8_t *const block = (int8_t *)block_words + GUARD;
    int8_t *const out = (int8_t *)out_words + GUARD;
    int8_t *const scr = (int8_t *)scratch_words;
    int8_t *const in = (int8_t *)input_words;
    for (uint32_t c = 0; c < chains; c++) {
        const int n = (int)p[0];
        const uint32_t K = p[1];
        p += 2;
        if (n < 1 || n > MAX_STAGES || K == 0 || K > MAX_K) {
            reds_bench_write("error: chain too large\n");
            return 4;
        }
        reds_stream_stage stages[MAX_STAGES];
        for (int i = 0; i < n; i++) {
            p = check_conv_layer(p, &recs[i]);
            if (p == NULL || recs[i].kind > REDS_OP_MAXPOOL) {
                reds_bench_write("error: bad layer\n");
                return 4;
            }
            for (uint32_t k = 0; k < K; k++) {
                stage_in[i][k] = in_width[k];
                stage_out[i][k] = out_width[k];
            }
            recs[i].layer.in_width = stage_in[i];
            recs[i].layer.out_width = stage_out[i];
            recs[i].pool.width = stage_in[i];
            const int op = (int)recs[i].kind;
            stages[i].layer = op >= REDS_OP_AVGPOOL ? (const void *)&recs[i].pool
                                                    : (const void *)&recs[i].layer;
            stages[i].op = (int16_t)op;
        }
        for (int i = 0; i < n; i++) {
            stages[i].rows = (int16_t)p[i];
        }
        p += n;
        for (uint32_t k = 0; k < K; k++) {
            const uint32_t runs = p[0];
            p += 1;
            const uint32_t in_bytes = map_bytes(&recs[0], (int)k, 0);
            const uint32_t out_bytes = map_bytes(&recs[n - 1], (int)k, 1);
            for (uint32_t r = 0; r < runs; r++) {
                const uint32_t block_bytes = p[0], scratch_bytes = p[1];
                const uint32_t *windows = p + 2;
                p += 2 + n;
                if (block_bytes > BLOCK_BYTES || scratch_bytes > SCRATCH_BYTES ||
                    in_bytes > MAP_BYTES || out_bytes > MAP_BYTES) {
                    reds_bench_write("error: run does not fit\n");
                    return 4;
                }
                for (int i = 0; i < n; i++) {
                    if (recs[i].kind <= REDS_OP_POINTWISE &&
                        REDS_CONV_SCRATCH_BYTES(recs[i].layer.kernel_h, recs[i].layer.kernel_w,
                                                recs[i].max_in, recs[i].max_out) >
                            sizeof scratch) {
                        reds_bench_write("error: layer too large\n");
                        return 4;
                    }
                    if (map_bytes(&recs[i], (int)k, 1) > MAP_BYTES) {
                        reds_bench_write("error: map too large\n");
                        return 4;
                    }
                }
                memcpy(in, recs[0].input, in_bytes);
                memset(block_words, POISON, sizeof block_words);
                memset(out_words, POISON, sizeof out_words);
                memset(scratch_words, POISON, sizeof scratch_words);
                reds_run_stream(stages, n, (int)k, windows, block, in, out, (int32_t *)scr);
                int clean = 0;
                clean |= (all_equal(block - GUARD, 0, GUARD, POISON) &&
                          all_equal(block, block_bytes, BLOCK_BYTES + GUARD, POISON))
                         << 0;
                clean |= (all_equal(out - GUARD, 0, GUARD, POISON) &&
                          all_equal(out, out_bytes, MAP_BYTES + GUARD, POISON))
                         << 1;
                clean |= all_equal(scr, scratch_bytes, SCRATCH_BYTES + GUARD, POISON) << 2;
                clean |= (memcmp(in, recs[0].input, in_bytes) == 0) << 3;
                memset(scratch, 0xA7, sizeof scratch); /* stale scratch must not matter */
                const int8_t *whole = run_whole(n, (int)k, in);
                reds_bench_write_u32(c);
                reds_bench_write(" ");
                reds_bench_write_u32(k);
                reds_bench_write(" ");
                reds_bench_write_u32(r);
                reds_bench_write(" ");
                reds_bench_write_u32((uint32_t)clean);
                reds_bench_write(" ");
                reds_bench_write_hex(out, out_bytes);
                reds_bench_write(" ");
                reds_bench_write_hex(whole, out_bytes);
                reds_bench_write("\n");
            }
        }
    }
    reds_bench_write("done\n");
    return 0;
}

#define STREAM_MAGIC 0x4D525453u /* "STRM" */

#if defined(__arm__)
int main(void) {
    uint32_t chains;
    const uint32_t *p = check_blob(STREAM_MAGIC, &chains);
    return run(p, chains);
}
#else
#include <stdio.h>
#include <stdlib.h>

extern "C" {
void reds_bench_write(const char *s) { fputs(s, stdout); }
void reds_bench_write_u32(uint32_t v) { printf("%lu", (unsigned long)v); }
void reds_bench_write_hex(const int8_t *data, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) {
        printf("%02x", (unsigned)(uint8_t)data[i]);
    }
}
void reds_bench_exit(int status) { exit(status); }
}

int main(int argc, char **argv) {
    FILE *f = argc == 2 ? fopen(argv[1], "rb") : NULL;
    if (f == NULL) {
        fputs("usage: stream_check BLOB\n", stderr);
        return 2;
    }
    fseek(f, 0, SEEK_END);
    const long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint32_t *words = (uint32_t *)calloc((size_t)size / 4 + 2, 4);
    if (words == NULL || fread(words, 1, (size_t)size, f) != (size_t)size) {
        fputs("error: cannot read the blob\n", stderr);
        return 2;
    }
    fclose(f);
    if (words[0] != STREAM_MAGIC) {
        reds_bench_write("error: no layer blob\n");
        return 4;
    }
    const int status = run(words + 2, words[1]);
    free(words);
    return status;
}
#endif
