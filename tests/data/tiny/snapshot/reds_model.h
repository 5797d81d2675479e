/* reds_model.h: the REDS runtime API for model "tiny".
 * Generated from templates/reds_model.h.j2 by `reds export`; do not edit.
 *
 * One set of int8 weights holds 3 nested submodels (0 = smallest,
 * 2 = the full model). reds_set_submodel(k) switches between them in
 * constant time: no copy, no allocation. At start-up the full model is active.
 * Inputs and outputs are int8: q = round(x / scale) + zero_point.
 */
#ifndef REDS_MODEL_H
#define REDS_MODEL_H

#include <stdint.h>

#define REDS_MODEL_NAME "tiny"
/* 16 hex digits of a SHA-256 over the weights, quantisation parameters and
 * widths: tells one model's firmware from another's (manifest.json
 * "fingerprint"; the firmware's `info` reply reports it). */
#define REDS_MODEL_FINGERPRINT "d5de2eb30d3de3f4"
#define REDS_NUM_SUBMODELS 3
#define REDS_INPUT_SIZE 25          /* int8 elements, shape 5x5x1 */
#define REDS_OUTPUT_SIZE 5         /* int8 logits */
#define REDS_INPUT_SCALE 0.003920796327292919f
#define REDS_INPUT_ZERO_POINT (-128)
#define REDS_OUTPUT_SCALE 0.018634621053934097f
#define REDS_OUTPUT_ZERO_POINT (-3)
#define REDS_WEIGHT_BYTES 538u      /* all weight + bias bytes, stored once */
#define REDS_ARENA_BYTES 116u        /* the one static activation arena */

#ifdef __cplusplus
extern "C" {
#endif

/* Multiply-accumulates of one inference, per submodel. */
extern const uint32_t reds_submodel_macs[REDS_NUM_SUBMODELS];

int reds_num_submodels(void);
/* Select submodel k: 0 ok, nonzero if k is out of range (state unchanged). */
int reds_set_submodel(int k);
int reds_get_submodel(void);
/* Run the active submodel: REDS_INPUT_SIZE int8 in, REDS_OUTPUT_SIZE int8 out.
 * 0 ok, nonzero for a NULL pointer. Not reentrant (one static arena). */
int reds_invoke(const int8_t *input, int8_t *output);

/* Accessors, for callers that cannot read macros (ctypes). */
const char *reds_model_name(void);
const char *reds_model_fingerprint(void);
int reds_input_size(void);
int reds_output_size(void);
float reds_input_scale(void);
int reds_input_zero_point(void);
float reds_output_scale(void);
int reds_output_zero_point(void);
uint32_t reds_macs(int k);          /* 0 for a bad k */
uint32_t reds_weight_bytes(void);
uint32_t reds_arena_bytes(void);
/* Arena bytes submodel k uses (<= reds_arena_bytes()); 0 for a k out of range. */
uint32_t reds_submodel_arena_bytes(int k);

#ifdef __cplusplus
}
#endif

#endif /* REDS_MODEL_H */
