/* add_ref.cpp: the portable int8 ADD kernel (reds_add_ref), TFLite's rules
 * element by element (reds_kernels.h).
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

void reds_add_ref(const reds_add_layer *layer, int k, const int8_t *input1, const int8_t *input2,
                  int8_t *output, int32_t *scratch) {
    (void)scratch;
    const int32_t n = (int32_t)layer->h * layer->w * layer->width[k];
    for (int32_t i = 0; i < n; ++i) {
        /* |x + offset| <= 255, so the shifted value fits int32 with room to spare. */
        const int32_t a = (input1[i] + layer->input1_offset) * (1 << REDS_ADD_LEFT_SHIFT);
        const int32_t b = (input2[i] + layer->input2_offset) * (1 << REDS_ADD_LEFT_SHIFT);
        const int32_t sum = reds_requantize(a, layer->input1_multiplier, layer->input1_shift) +
                            reds_requantize(b, layer->input2_multiplier, layer->input2_shift);
        const int32_t v = reds_requantize(sum, layer->output_multiplier, layer->output_shift) +
                          layer->output_offset;
        output[i] = reds_clamp_out(v, layer->act_min, layer->act_max);
    }
}
