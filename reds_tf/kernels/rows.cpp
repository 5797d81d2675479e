/* rows.cpp: runs a layer row by row so that its output may overlap its input
 * (reds_run_conv, reds_run_pool, reds_run_fc; see reds_kernels.h).
 *
 * Each band of `rows` output rows is computed by the layer's own kernel, called
 * on the band's geometry (the input rows its windows cover, the padding above
 * them), into a RING of delay + rows output rows; every row is copied to the
 * output tensor once `delay` more rows have been computed.
 * The memory planner (reds_tf/memory.py) places the output so that no copy
 * ever covers input bytes a later row still reads; the numbers are the
 * kernel's own, only where they are written changes.
 *
 * A fixed source (reds_tf/kernels/) that `reds export` copies beside the
 * generated model files.
 */
#include "reds_kernel_opt.h" /* first: -O2 for the kernels in -Os builds */

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "reds_kernels.h"

static void reds_conv_call(int op, const reds_conv_layer *layer, int k, const int8_t *input,
                           int8_t *output, int32_t *scratch) {
    switch (op) {
    case REDS_OP_POINTWISE:
        REDS_POINTWISE(layer, k, input, output, scratch);
        break;
    case REDS_OP_DEPTHWISE:
        REDS_DEPTHWISE(layer, k, input, output);
        break;
    default:
        REDS_CONV(layer, k, input, output, scratch);
        break;
    }
}

/* Input rows [*lo, *lo + *n) that output rows [oy, oy + count) read, and the
 * padding rows above them. */
static inline void reds_band_window(int oy, int count, int stride, int pad, int kernel, int in_h,
                                    int *lo, int *n, int *pad_top) {
    const int iy0 = oy * stride - pad;
    const int last = (oy + count - 1) * stride - pad + kernel;
    const int end = last < in_h ? last : in_h;
    *lo = iy0 < 0 ? 0 : iy0;
    *n = end - *lo;
    *pad_top = *lo - iy0;
}

/* After a band was computed into the ring (`*held` rows, oldest first): copy
 * all but the newest `keep` rows to the output and move those to the front. */
static inline void reds_ring_flush(int8_t *output, int8_t *ring, int32_t out_row, int *held,
                                   int *flushed, int keep) {
    if (*held <= keep) {
        return;
    }
    const int n = *held - keep;
    memcpy(output + *flushed * out_row, ring, (size_t)n * (size_t)out_row);
    if (keep > 0) {
        memmove(ring, ring + n * out_row, (size_t)keep * (size_t)out_row);
    }
    *flushed += n;
    *held = keep;
}

/* One band: output rows [oy, oy + count) read input rows [lo, lo + rows_in),
 * with pad_top padding rows above them. */
typedef struct reds_band {
    int count, lo, rows_in, pad_top;
} reds_band;

/* Runs a layer's kernel on one band's geometry (a copy of the layer struct). */
typedef void (*reds_band_kernel)(const void *layer, int op, int k, const reds_band *band,
                                 const int8_t *input, int8_t *output, int32_t *scratch);

/* The band loop shared by every layer kind: bands into the ring, rows copied
 * out `delay` rows after they were computed (all of them after the last band). */
static void reds_run_bands(reds_band_kernel call, const void *layer, int op, int k, int out_h,
                           int stride, int pad, int kernel, int in_h, int32_t in_row,
                           int32_t out_row, const int8_t *input, int8_t *output, int8_t *ring,
                           int delay, int rows, int32_t *scratch) {
    int held = 0, flushed = 0;
    for (int oy = 0; oy < out_h; oy += rows) {
        reds_band band;
        band.count = out_h - oy < rows ? out_h - oy : rows;
        reds_band_window(oy, band.count, stride, pad, kernel, in_h, &band.lo, &band.rows_in,
                         &band.pad_top);
        call(layer, op, k, &band, input + band.lo * in_row, ring + held * out_row, scratch);
        held += band.count;
        reds_ring_flush(output, ring, out_row, &held, &flushed,
                        oy + band.count < out_h ? delay : 0);
    }
}

static void reds_conv_band(const void *layer, int op, int k, const reds_band *band,
                           const int8_t *input, int8_t *output, int32_t *scratch) {
    reds_conv_layer g = *(const reds_conv_layer *)layer;
    g.out_h = (uint16_t)band->count;
    g.in_h = (uint16_t)band->rows_in;
    g.pad_top = (uint16_t)band->pad_top;
    reds_conv_call(op, &g, k, input, output, scratch);
}

static void reds_pool_call(int op, const reds_pool_layer *layer, int k, const int8_t *input,
                           int8_t *output) {
    if (op == REDS_OP_MAXPOOL) {
        REDS_MAXPOOL(layer, k, input, output);
    } else {
        REDS_AVGPOOL(layer, k, input, output);
    }
}

static void reds_pool_band(const void *layer, int op, int k, const reds_band *band,
                           const int8_t *input, int8_t *output, int32_t *scratch) {
    (void)scratch;
    reds_pool_layer g = *(const reds_pool_layer *)layer;
    g.out_h = (uint16_t)band->count;
    g.in_h = (uint16_t)band->rows_in;
    g.pad_top = (uint16_t)band->pad_top;
    reds_pool_call(op, &g, k, input, output);
}

void reds_run_conv(int op, const reds_conv_layer *layer, int k, const int8_t *input,
                   int8_t *output, int8_t *ring, int delay, int rows, int32_t *scratch) {
    if (delay < 0) {
        reds_conv_call(op, layer, k, input, output, scratch);
        return;
    }
    reds_run_bands(reds_conv_band, layer, op, k, layer->out_h, layer->stride_h, layer->pad_top,
                   layer->kernel_h, layer->in_h, (int32_t)layer->in_w * layer->in_width[k],
                   (int32_t)layer->out_w * layer->out_width[k], input, output, ring, delay, rows,
                   scratch);
}

void reds_run_pool(int op, const reds_pool_layer *layer, int k, const int8_t *input,
                   int8_t *output, int8_t *ring, int delay, int rows) {
    if (delay < 0) {
        reds_pool_call(op, layer, k, input, output);
        return;
    }
    reds_run_bands(reds_pool_band, layer, op, k, layer->out_h, layer->stride_h, layer->pad_top,
                   layer->filter_h, layer->in_h, (int32_t)layer->in_w * layer->width[k],
                   (int32_t)layer->out_w * layer->width[k], input, output, ring, delay, rows,
                   NULL);
}

void reds_run_pw_dw(const reds_conv_layer *pw, const reds_conv_layer *dw, int k,
                    const int8_t *input, int8_t *output, int8_t *window, int8_t *ring, int delay,
                    int32_t *scratch) {
    const int32_t in_row = (int32_t)pw->in_w * pw->in_width[k];
    const int32_t mid_row = (int32_t)pw->out_w * pw->out_width[k];
    const int32_t out_row = (int32_t)dw->out_w * dw->out_width[k];
    const int out_h = dw->out_h;
    reds_conv_layer pw_row = *pw;
    pw_row.in_h = 1;
    pw_row.out_h = 1;
    reds_conv_layer dw_row = *dw;
    dw_row.out_h = 1;
    int have_lo = 0, have_n = 0; /* the window holds pointwise rows [have_lo, have_lo + have_n) */
    int held = 0, flushed = 0;
    for (int oy = 0; oy < out_h; ++oy) {
        int lo, n, pad_top;
        reds_band_window(oy, 1, dw->stride_h, dw->pad_top, dw->kernel_h, dw->in_h, &lo, &n,
                         &pad_top);
        if (lo > have_lo) { /* rows above the window are done with */
            const int drop = lo - have_lo < have_n ? lo - have_lo : have_n;
            memmove(window, window + drop * mid_row, (size_t)(have_n - drop) * (size_t)mid_row);
            have_n -= drop;
            have_lo = have_n > 0 ? have_lo + drop : lo;
        }
        while (have_lo + have_n < lo + n) { /* the pointwise rows this output row reads */
            const int r = have_lo + have_n;
            REDS_POINTWISE(&pw_row, k, input + r * in_row, window + have_n * mid_row, scratch);
            have_n++;
        }
        dw_row.in_h = (uint16_t)n;
        dw_row.pad_top = (uint16_t)pad_top;
        const int8_t *rows = window + (lo - have_lo) * mid_row;
        if (delay < 0) {
            REDS_DEPTHWISE(&dw_row, k, rows, output + oy * out_row);
            continue;
        }
        REDS_DEPTHWISE(&dw_row, k, rows, ring + held * out_row);
        held++;
        reds_ring_flush(output, ring, out_row, &held, &flushed, oy + 1 < out_h ? delay : 0);
    }
}

void reds_run_fc(const reds_fc_layer *layer, int k, const int8_t *input, int8_t *output,
                 int8_t *ring, int delay, int32_t *scratch) {
    if (delay < 0) {
        REDS_FC(layer, k, input, output, scratch);
        return;
    }
    /* One row: the output is copied out once every input byte has been read. */
    REDS_FC(layer, k, input, ring, scratch);
    memcpy(output, ring, (size_t)layer->out_width[k]);
}

/* ---- Streams (reds_run_stream) ---- */

/* The vertical geometry of one stream stage for submodel k. */
typedef struct reds_stream_geom {
    int16_t out_h, in_h, stride, pad, kernel;
    int16_t lo, held; /* its window holds output rows [lo, lo + held) */
    int32_t in_row, out_row;
} reds_stream_geom;

typedef struct reds_stream_ctx {
    const reds_stream_stage *stages;
    int k;
    const uint32_t *windows;
    int8_t *block;
    const int8_t *input;
    int32_t *scratch;
    reds_stream_geom g[REDS_STREAM_MAX_STAGES];
} reds_stream_ctx;

static inline bool reds_is_pool(int op) { return op == REDS_OP_AVGPOOL || op == REDS_OP_MAXPOOL; }

static void reds_stream_geometry(const reds_stream_stage *st, int k, reds_stream_geom *g) {
    if (reds_is_pool(st->op)) {
        const reds_pool_layer *p = (const reds_pool_layer *)st->layer;
        g->out_h = (int16_t)p->out_h;
        g->in_h = (int16_t)p->in_h;
        g->stride = (int16_t)p->stride_h;
        g->pad = (int16_t)p->pad_top;
        g->kernel = (int16_t)p->filter_h;
        g->in_row = (int32_t)p->in_w * p->width[k];
        g->out_row = (int32_t)p->out_w * p->width[k];
    } else {
        const reds_conv_layer *c = (const reds_conv_layer *)st->layer;
        g->out_h = (int16_t)c->out_h;
        g->in_h = (int16_t)c->in_h;
        g->stride = (int16_t)c->stride_h;
        g->pad = (int16_t)c->pad_top;
        g->kernel = (int16_t)c->kernel_h;
        g->in_row = (int32_t)c->in_w * c->in_width[k];
        g->out_row = (int32_t)c->out_w * c->out_width[k];
    }
    g->lo = 0;
    g->held = 0;
}

static const int8_t *reds_stream_rows(reds_stream_ctx *c, int i, int lo, int end);

/* Output row oy of stage i into dst: its input rows from the stream's input
 * (stage 0) or from stage i - 1's window, then one kernel call. */
static void reds_stream_row(reds_stream_ctx *c, int i, int oy, int8_t *dst) {
    const reds_stream_geom *g = &c->g[i];
    reds_band band;
    band.count = 1;
    reds_band_window(oy, 1, g->stride, g->pad, g->kernel, g->in_h, &band.lo, &band.rows_in,
                     &band.pad_top);
    const int8_t *src = i == 0 ? c->input + band.lo * g->in_row
                               : reds_stream_rows(c, i - 1, band.lo, band.lo + band.rows_in);
    const reds_stream_stage *st = &c->stages[i];
    if (reds_is_pool(st->op)) {
        reds_pool_band(st->layer, st->op, c->k, &band, src, dst, NULL);
    } else {
        reds_conv_band(st->layer, st->op, c->k, &band, src, dst, c->scratch);
    }
}

/* Stage i's output rows [lo, end) in its window (rows above lo dropped, the
 * missing ones computed); returns where row lo is. */
static const int8_t *reds_stream_rows(reds_stream_ctx *c, int i, int lo, int end) {
    reds_stream_geom *g = &c->g[i];
    int8_t *win = c->block + c->windows[i];
    if (lo > g->lo) {
        const int drop = lo - g->lo < g->held ? lo - g->lo : g->held;
        if (g->held > drop) {
            memmove(win, win + drop * g->out_row, (size_t)(g->held - drop) * (size_t)g->out_row);
        }
        g->held = (int16_t)(g->held - drop);
        g->lo = (int16_t)(g->held > 0 ? g->lo + drop : lo);
    }
    while (g->lo + g->held < end) {
        reds_stream_row(c, i, g->lo + g->held, win + g->held * g->out_row);
        g->held++;
    }
    return win + (lo - g->lo) * g->out_row;
}

/* A last average pool with one output pixel: its window's rows added up one
 * at a time (int32 sums, exact), then TFLite's rounding and clamp. */
static void reds_stream_average(reds_stream_ctx *c, int last, int8_t *output) {
    const reds_pool_layer *p = (const reds_pool_layer *)c->stages[last].layer;
    const int n = p->width[c->k];
    int32_t *sums = (int32_t *)(void *)(c->block + c->windows[last]);
    int y0, rows, x0, cols, unused;
    reds_band_window(0, 1, p->stride_h, p->pad_top, p->filter_h, p->in_h, &y0, &rows, &unused);
    reds_band_window(0, 1, p->stride_w, p->pad_left, p->filter_w, p->in_w, &x0, &cols, &unused);
    for (int ch = 0; ch < n; ch++) {
        sums[ch] = 0;
    }
    for (int y = y0; y < y0 + rows; y++) {
        const int8_t *px = reds_stream_rows(c, last - 1, y, y + 1) + x0 * n;
        for (int x = 0; x < cols; x++, px += n) {
            for (int ch = 0; ch < n; ch++) {
                sums[ch] += px[ch];
            }
        }
    }
    const int32_t count = rows * cols;
    for (int ch = 0; ch < n; ch++) {
        const int32_t sum = sums[ch];
        /* TFLite: round half away from zero (C division truncates). */
        int32_t avg = count <= 0 ? 0 : sum > 0 ? (sum + count / 2) / count : (sum - count / 2) / count;
        avg = avg < p->act_min ? p->act_min : avg;
        avg = avg > p->act_max ? p->act_max : avg;
        output[ch] = (int8_t)avg;
    }
}

void reds_run_stream(const reds_stream_stage *stages, int n, int k, const uint32_t *windows,
                     int8_t *block, const int8_t *input, int8_t *output, int32_t *scratch) {
    reds_stream_ctx c;
    c.stages = stages;
    c.k = k;
    c.windows = windows;
    c.block = block;
    c.input = input;
    c.scratch = scratch;
    for (int i = 0; i < n; i++) {
        reds_stream_geometry(&stages[i], k, &c.g[i]);
    }
    const int last = n - 1;
    const reds_stream_geom *g = &c.g[last];
    if (stages[last].op == REDS_OP_AVGPOOL && g->out_h == 1 &&
        ((const reds_pool_layer *)stages[last].layer)->out_w == 1) {
        reds_stream_average(&c, last, output);
        return;
    }
    for (int oy = 0; oy < g->out_h; oy++) {
        reds_stream_row(&c, last, oy, output + oy * g->out_row);
    }
}
