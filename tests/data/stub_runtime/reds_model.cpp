/* TEST STUB runtime: a nested 784 -> H_k -> 10 integer MLP whose weights come
 * from a hash (see README.md). Submodel k uses the first H_k hidden units. */
#include "reds_model.h"

static const int kHidden[REDS_NUM_SUBMODELS] = {32, 64, 128, 256};
const uint32_t reds_submodel_macs[REDS_NUM_SUBMODELS] = {
    784u * 32u + 32u * 10u, 784u * 64u + 64u * 10u, 784u * 128u + 128u * 10u,
    784u * 256u + 256u * 10u};
static int g_active = REDS_NUM_SUBMODELS - 1;
static int8_t g_hidden[256];

static int8_t weight(uint32_t layer, uint32_t row, uint32_t col) {
    uint32_t h = layer * 0x9e3779b9u ^ row * 0x85ebca6bu ^ col * 0xc2b2ae35u;
    h ^= h >> 15;
    h *= 0x2c1b3c6du;
    h ^= h >> 12;
    return (int8_t)(h & 0xff);
}

static int8_t clamp8(int32_t v) { return (int8_t)(v < -128 ? -128 : (v > 127 ? 127 : v)); }

int reds_num_submodels(void) { return REDS_NUM_SUBMODELS; }
int reds_set_submodel(int k) {
    if (k < 0 || k >= REDS_NUM_SUBMODELS) return 1;
    g_active = k;
    return 0;
}
int reds_get_submodel(void) { return g_active; }
int reds_invoke(const int8_t *input, int8_t *output) {
    const int hidden = kHidden[g_active];
    for (int j = 0; j < hidden; ++j) {
        int32_t acc = 0;
        for (int i = 0; i < REDS_INPUT_SIZE; ++i) {
            acc += (input[i] - REDS_INPUT_ZERO_POINT) * weight(1, (uint32_t)j, (uint32_t)i);
        }
        g_hidden[j] = clamp8(acc >> 14);
        if (g_hidden[j] < 0) g_hidden[j] = 0;
    }
    for (int c = 0; c < REDS_OUTPUT_SIZE; ++c) {
        int32_t acc = 0;
        for (int j = 0; j < hidden; ++j) acc += g_hidden[j] * weight(2, (uint32_t)c, (uint32_t)j);
        output[c] = clamp8(acc >> 9);
    }
    return 0;
}
const char *reds_model_name(void) { return REDS_MODEL_NAME; }
const char *reds_model_fingerprint(void) { return REDS_MODEL_FINGERPRINT; }
int reds_input_size(void) { return REDS_INPUT_SIZE; }
int reds_output_size(void) { return REDS_OUTPUT_SIZE; }
float reds_input_scale(void) { return REDS_INPUT_SCALE; }
int reds_input_zero_point(void) { return REDS_INPUT_ZERO_POINT; }
uint32_t reds_macs(int k) {
    return (k >= 0 && k < REDS_NUM_SUBMODELS) ? reds_submodel_macs[k] : 0u;
}
uint32_t reds_weight_bytes(void) { return REDS_WEIGHT_BYTES; }
uint32_t reds_arena_bytes(void) { return REDS_ARENA_BYTES; }
