/* fully_connected_ref.cpp: the portable fully connected kernel (reds_fc_ref).
 * The reference of the int8 rules and the fallback of every target.
 *
 * A fixed source (reds_tf/kernels/) that `reds export` copies beside the
 * generated model files. Plain C in a .cpp file (C headers only) so it builds
 * for the host, for bare-metal Cortex-M without libstdc++, and inside Arduino
 * sketches.
 */
#include "reds_kernel_opt.h" /* first: -O2 for the kernels in -Os builds */

#include <stddef.h>
#include <stdint.h>

#include "reds_kernels.h"
#include "reds_ref_common.h"

void reds_fc_ref(const reds_fc_layer *layer, int k, const int8_t *input, int8_t *output,
                 int32_t *scratch) {
    const int32_t n_in = layer->in_width[k];
    const int32_t n_out = layer->out_width[k];
    int32_t *acc = scratch;
    /* Input plus offset fits int16 (|x + offset| <= 255); widen it once. */
    int16_t *x = (int16_t *)(scratch + n_out);
    for (int32_t c = 0; c < n_in; ++c) {
        x[c] = (int16_t)(input[c] + layer->input_offset);
    }
    for (int32_t r = 0; r < n_out; ++r) {
        acc[r] = layer->bias != NULL ? layer->bias[r] : 0;
    }
    reds_nested_accumulate(layer->weights, layer->in_width, layer->out_width, 1, k, x, acc);
    for (int32_t r = 0; r < n_out; ++r) {
        int32_t v = reds_requantize(acc[r], layer->multiplier[r], layer->shift[r]);
        v += layer->output_offset;
        v = v < layer->act_min ? layer->act_min : v;
        v = v > layer->act_max ? layer->act_max : v;
        output[r] = (int8_t)v;
    }
}
