/* reds_weights.h: constant tensors of model "tiny" (internal).
 * Generated from templates/reds_weights.h.j2 by `reds export`; do not edit. */
#ifndef REDS_WEIGHTS_H
#define REDS_WEIGHTS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif
/* fc1: 25 -> 12, weights in the nested layout */
extern const int8_t reds_fc1_weights[300];
extern const int32_t reds_fc1_bias[12];
extern const int32_t reds_fc1_multiplier[12];
extern const int32_t reds_fc1_shift[12];
/* fc2: 12 -> 10, weights in the nested layout */
extern const int8_t reds_fc2_weights[120];
extern const int32_t reds_fc2_multiplier[10];
extern const int32_t reds_fc2_shift[10];
/* logits: 10 -> 5, weights in the nested layout */
extern const int8_t reds_logits_weights[50];
extern const int32_t reds_logits_bias[5];
extern const int32_t reds_logits_multiplier[5];
extern const int32_t reds_logits_shift[5];
#ifdef __cplusplus
}
#endif

#endif /* REDS_WEIGHTS_H */
