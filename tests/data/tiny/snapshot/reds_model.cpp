/* reds_model.cpp: layer table, submodel switch and inference for "tiny".
 * Generated from templates/reds_model.cpp.j2 by `reds export`; do not edit. */
#include <stddef.h>
#include <stdint.h>

#include "reds_kernels.h"
#include "reds_model.h"
#include "reds_weights.h"

const uint32_t reds_submodel_macs[REDS_NUM_SUBMODELS] = {155u, 323u, 470u};

/* Active widths (channels / units) of every layer, per submodel. */
static const uint16_t reds_fc1_in_width[REDS_NUM_SUBMODELS] = {25, 25, 25};
static const uint16_t reds_fc1_out_width[REDS_NUM_SUBMODELS] = {5, 9, 12};
static const uint16_t reds_fc2_in_width[REDS_NUM_SUBMODELS] = {5, 9, 12};
static const uint16_t reds_fc2_out_width[REDS_NUM_SUBMODELS] = {3, 7, 10};
static const uint16_t reds_logits_in_width[REDS_NUM_SUBMODELS] = {3, 7, 10};
static const uint16_t reds_logits_out_width[REDS_NUM_SUBMODELS] = {5, 5, 5};

/* Fully connected layers (vector input), in execution order. */
static const reds_fc_layer reds_fc_layers[3] = {
    /* fc1: activation relu */
    {reds_fc1_weights, reds_fc1_bias, reds_fc1_multiplier,
     reds_fc1_shift, reds_fc1_in_width, reds_fc1_out_width,
     128, -128, -128, 127},
    /* fc2: activation relu */
    {reds_fc2_weights, NULL, reds_fc2_multiplier,
     reds_fc2_shift, reds_fc2_in_width, reds_fc2_out_width,
     128, -128, -128, 127},
    /* logits: activation none */
    {reds_logits_weights, reds_logits_bias, reds_logits_multiplier,
     reds_logits_shift, reds_logits_in_width, reds_logits_out_width,
     128, -3, -128, 127},
};

/* Where every compute layer of submodel k reads, writes, keeps its ring of
 * output rows and its scratch: byte offsets in the arena, one row per submodel
 * (reds_tf/memory.py). delay < 0: one kernel call, output written directly;
 * delay >= 0: bands of `rows` rows through the ring, the output overlapping
 * the input where that is exact (reds_run_* in rows.cpp). */
typedef struct reds_slot {
    uint32_t src, src2, dst, ring, scratch, window;
    int16_t delay, rows;
} reds_slot;
static const reds_slot reds_slots[REDS_NUM_SUBMODELS][3] = {
    { /* submodel 0: 84 arena bytes */
     {0, 0, 0, 0, 8, 8, -1, 1}, /* fc1 */
     {0, 0, 52, 0, 56, 56, -1, 1}, /* fc2 */
     {52, 0, 0, 0, 0, 0, -1, 1} /* logits */
    },
    { /* submodel 1: 104 arena bytes */
     {0, 0, 0, 0, 12, 12, -1, 1}, /* fc1 */
     {0, 0, 44, 0, 52, 52, -1, 1}, /* fc2 */
     {44, 0, 0, 0, 64, 64, -1, 1} /* logits */
    },
    { /* submodel 2: 116 arena bytes */
     {0, 0, 0, 0, 12, 12, -1, 1}, /* fc1 */
     {0, 0, 36, 0, 48, 48, -1, 1}, /* fc2 */
     {36, 0, 0, 0, 72, 72, -1, 1} /* logits */
    },
};

/* Arena bytes each submodel uses (the arena below is the largest of them). */
static const uint32_t reds_submodel_arena[REDS_NUM_SUBMODELS] = {84u, 104u, 116u};

/* The one static arena, sized for the largest submodel. */
static int32_t reds_arena[REDS_ARENA_BYTES / 4];

/* The whole submodel switch: one store. */
static int reds_active = REDS_NUM_SUBMODELS - 1;

int reds_num_submodels(void) { return REDS_NUM_SUBMODELS; }

int reds_set_submodel(int k) {
    if (k < 0 || k >= REDS_NUM_SUBMODELS) {
        return 1;
    }
    reds_active = k;
    return 0;
}

int reds_get_submodel(void) { return reds_active; }

int reds_invoke(const int8_t *input, int8_t *output) {
    if (input == NULL || output == NULL) {
        return 1;
    }
    const int k = reds_active;
    int8_t *const act = (int8_t *)reds_arena;
    const reds_slot *const s = reds_slots[k];
    (void)act;
    (void)s;
    /* reshape: same int8 bytes in a new shape, nothing to do */
    /* fc1: input -> act + s[0].dst */
    reds_run_fc(&reds_fc_layers[0], k, input, act + s[0].dst, act + s[0].ring, s[0].delay, (int32_t *)(act + s[0].scratch));
    /* fc2: act + s[1].src -> act + s[1].dst */
    reds_run_fc(&reds_fc_layers[1], k, act + s[1].src, act + s[1].dst, act + s[1].ring, s[1].delay, (int32_t *)(act + s[1].scratch));
    /* logits: act + s[2].src -> output */
    reds_run_fc(&reds_fc_layers[2], k, act + s[2].src, output, act + s[2].ring, s[2].delay, (int32_t *)(act + s[2].scratch));
    return 0;
}

const char *reds_model_name(void) { return REDS_MODEL_NAME; }
const char *reds_model_fingerprint(void) { return REDS_MODEL_FINGERPRINT; }
int reds_input_size(void) { return REDS_INPUT_SIZE; }
int reds_output_size(void) { return REDS_OUTPUT_SIZE; }
float reds_input_scale(void) { return REDS_INPUT_SCALE; }
int reds_input_zero_point(void) { return REDS_INPUT_ZERO_POINT; }
float reds_output_scale(void) { return REDS_OUTPUT_SCALE; }
int reds_output_zero_point(void) { return REDS_OUTPUT_ZERO_POINT; }
uint32_t reds_macs(int k) {
    return (k >= 0 && k < REDS_NUM_SUBMODELS) ? reds_submodel_macs[k] : 0u;
}
uint32_t reds_weight_bytes(void) { return REDS_WEIGHT_BYTES; }
uint32_t reds_arena_bytes(void) { return REDS_ARENA_BYTES; }
uint32_t reds_submodel_arena_bytes(int k) {
    return (k >= 0 && k < REDS_NUM_SUBMODELS) ? reds_submodel_arena[k] : 0u;
}
