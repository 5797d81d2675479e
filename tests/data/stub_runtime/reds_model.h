/* TEST STUB of the generated runtime API (see README.md in this folder). */
#ifndef REDS_MODEL_H
#define REDS_MODEL_H

#include <stdint.h>

#define REDS_MODEL_NAME "stub_mlp"
#define REDS_MODEL_FINGERPRINT "0123456789abcdef"
#define REDS_NUM_SUBMODELS 4
#define REDS_INPUT_SIZE 784
#define REDS_OUTPUT_SIZE 10
#define REDS_INPUT_SCALE 0.0039215688593685627f
#define REDS_INPUT_ZERO_POINT (-128)
#define REDS_WEIGHT_BYTES 203264u
#define REDS_ARENA_BYTES 1024u

#ifdef __cplusplus
extern "C" {
#endif

extern const uint32_t reds_submodel_macs[REDS_NUM_SUBMODELS];
int reds_num_submodels(void);
int reds_set_submodel(int k);
int reds_get_submodel(void);
int reds_invoke(const int8_t *input, int8_t *output);
const char *reds_model_name(void);
const char *reds_model_fingerprint(void);
int reds_input_size(void);
int reds_output_size(void);
float reds_input_scale(void);
int reds_input_zero_point(void);
uint32_t reds_macs(int k);
uint32_t reds_weight_bytes(void);
uint32_t reds_arena_bytes(void);

#ifdef __cplusplus
}
#endif

#endif
