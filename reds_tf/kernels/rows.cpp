/* rows.cpp: runs a layer row by row so that its output may overlap its input
 * (reds_run_conv, reds_run_pool, reds_run_fc; see reds_kernels.h).
 *
 * Each output row is computed by the layer's own kernel, called on a one-row
 * geometry (the input rows its window covers, the padding above them), into a
 * RING of delay + 1 rows, and copied to the output tensor `delay` rows later.
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

/* Input rows [*lo, *lo + *rows) that output row oy's window covers, and the
 * padding rows above them. */
static inline void reds_row_window(int oy, int stride, int pad, int kernel, int in_h, int *lo,
                                   int *rows, int *pad_top) {
    const int iy0 = oy * stride - pad;
    const int end = iy0 + kernel < in_h ? iy0 + kernel : in_h;
    *lo = iy0 < 0 ? 0 : iy0;
    *rows = end - *lo;
    *pad_top = *lo - iy0;
}

void reds_run_conv(int op, const reds_conv_layer *layer, int k, const int8_t *input,
                   int8_t *output, int8_t *ring, int delay, int32_t *scratch) {
    if (delay < 0) {
        reds_conv_call(op, layer, k, input, output, scratch);
        return;
    }
    const int32_t in_row = (int32_t)layer->in_w * layer->in_width[k];
    const int32_t out_row = (int32_t)layer->out_w * layer->out_width[k];
    const int slots = delay + 1, out_h = layer->out_h;
    reds_conv_layer row = *layer;
    row.out_h = 1;
    int slot = 0;
    for (int oy = 0; oy < out_h; ++oy) {
        int lo, rows, pad_top;
        reds_row_window(oy, layer->stride_h, layer->pad_top, layer->kernel_h, layer->in_h, &lo,
                        &rows, &pad_top);
        row.in_h = (uint16_t)rows;
        row.pad_top = (uint16_t)pad_top;
        reds_conv_call(op, &row, k, input + lo * in_row, ring + slot * out_row, scratch);
        slot = slot + 1 == slots ? 0 : slot + 1;
        if (oy >= delay) { /* the oldest row in the ring is the slot written next */
            memcpy(output + (oy - delay) * out_row, ring + slot * out_row, (size_t)out_row);
        }
    }
    for (int oy = out_h - delay; oy < out_h; ++oy) {
        if (oy >= 0) {
            memcpy(output + oy * out_row, ring + (oy % slots) * out_row, (size_t)out_row);
        }
    }
}

void reds_run_pool(int op, const reds_pool_layer *layer, int k, const int8_t *input,
                   int8_t *output, int8_t *ring, int delay) {
    if (delay < 0) {
        if (op == REDS_OP_MAXPOOL) {
            REDS_MAXPOOL(layer, k, input, output);
        } else {
            REDS_AVGPOOL(layer, k, input, output);
        }
        return;
    }
    const int32_t in_row = (int32_t)layer->in_w * layer->width[k];
    const int32_t out_row = (int32_t)layer->out_w * layer->width[k];
    const int slots = delay + 1, out_h = layer->out_h;
    reds_pool_layer row = *layer;
    row.out_h = 1;
    int slot = 0;
    for (int oy = 0; oy < out_h; ++oy) {
        int lo, rows, pad_top;
        reds_row_window(oy, layer->stride_h, layer->pad_top, layer->filter_h, layer->in_h, &lo,
                        &rows, &pad_top);
        row.in_h = (uint16_t)rows;
        row.pad_top = (uint16_t)pad_top;
        if (op == REDS_OP_MAXPOOL) {
            REDS_MAXPOOL(&row, k, input + lo * in_row, ring + slot * out_row);
        } else {
            REDS_AVGPOOL(&row, k, input + lo * in_row, ring + slot * out_row);
        }
        slot = slot + 1 == slots ? 0 : slot + 1;
        if (oy >= delay) {
            memcpy(output + (oy - delay) * out_row, ring + slot * out_row, (size_t)out_row);
        }
    }
    for (int oy = out_h - delay; oy < out_h; ++oy) {
        if (oy >= 0) {
            memcpy(output + oy * out_row, ring + (oy % slots) * out_row, (size_t)out_row);
        }
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
