/* reds_kernels.h: int8 layer kernels of the generated REDS runtime.
 * A fixed source (reds_tf/kernels/) that `reds export` copies beside the
 * generated model files.
 *
 * Integer-only arithmetic following the TFLite Micro int8 rules: symmetric
 * per-channel weights (zero point 0), asymmetric activations, int32
 * accumulators, requantisation with a Q31 multiplier and a power-of-two shift
 * using gemmlowp double rounding (SaturatingRoundingDoublingHighMul, then
 * RoundingDivideByPOT), then the output zero point and the fused activation
 * clamp.
 */
#ifndef REDS_KERNELS_H
#define REDS_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One fully connected layer in the NESTED weight layout (docs/DESIGN.md).
 *
 * Let (i_k, o_k) = (in_width[k], out_width[k]), non-decreasing in k, and
 * (i_-1, o_-1) = (0, 0). `weights` stores, for k = 0 .. K-1, strip R_k
 * (rows [0, o_{k-1}), columns [i_{k-1}, i_k)) then strip B_k (rows
 * [o_{k-1}, o_k), columns [0, i_k)). A strip is stored in groups of 4 rows
 * (the last group may be shorter); inside a group in chunks of 4 columns (the
 * last chunk may be shorter); inside a chunk row after row, each row's bytes of
 * that chunk. Submodel k therefore reads exactly the first i_k * o_k bytes.
 * bias / multiplier / shift are in plain output-channel order; submodel k
 * uses their first o_k entries.
 */
typedef struct reds_fc_layer {
    const int8_t *weights;      /* nested layout, in_width[K-1] * out_width[K-1] bytes */
    const int32_t *bias;        /* [out_width[K-1]] int32, or NULL when the layer has none */
    const int32_t *multiplier;  /* [out_width[K-1]] Q31 requantisation multipliers */
    const int32_t *shift;       /* [out_width[K-1]] exponents, TFLite sign: > 0 shifts left */
    const uint16_t *in_width;   /* [K] i_k: active input length of submodel k */
    const uint16_t *out_width;  /* [K] o_k: active output length of submodel k */
    int32_t input_offset;       /* minus the input zero point */
    int32_t output_offset;      /* the output zero point */
    int32_t act_min;            /* fused activation clamp, int8 domain */
    int32_t act_max;
} reds_fc_layer;

/* Fully connected int8 layer, submodel k (0 <= k < K):
 *   acc[r] = bias[r] + sum_{c < i_k} W[r][c] * (input[c] + input_offset)
 *   output[r] = clamp(MultiplyByQuantizedMultiplier(acc[r], multiplier[r], shift[r])
 *                     + output_offset, act_min, act_max)      for r < o_k.
 * input: i_k int8 values; output: o_k int8 values (must not alias input).
 * scratch: REDS_FC_SCRATCH_BYTES(i_k, o_k) bytes, 4-byte aligned, in the arena:
 * o_k int32 accumulators (the active rows) followed by room for i_k int16
 * values, so a kernel may widen the input (plus offset) once per call.
 * The kernel walks strips 0 .. k in storage order, i.e. memory linearly.
 *
 * reds_fc_ref is portable C and the reference. reds_fc_dsp (Cortex-M4 DSP
 * extension, reds_kernels_dsp.cpp) has the SAME signature and
 * must give bit-identical results. The runtime calls REDS_FC, which picks
 * reds_fc_dsp when it was generated and the target has __ARM_FEATURE_DSP
 * (define REDS_NO_DSP to force the reference). */
void reds_fc_ref(const reds_fc_layer *layer, int k, const int8_t *input, int8_t *output,
                 int32_t *scratch);
void reds_fc_dsp(const reds_fc_layer *layer, int k, const int8_t *input, int8_t *output,
                 int32_t *scratch);

/* Scratch bytes a FC kernel may use for input width n_in and output width n_out. */
#define REDS_FC_SCRATCH_BYTES(n_in, n_out) (4u * (uint32_t)(n_out) + 2u * (uint32_t)(n_in) + 4u)

/* 1 when the DSP kernels (reds_kernels_dsp.cpp) serve the model: a core with
 * the DSP extension, unless -DREDS_NO_DSP asks for the portable kernels. */
#if defined(__ARM_FEATURE_DSP) && !defined(REDS_NO_DSP)
#define REDS_USE_DSP 1
#else
#define REDS_USE_DSP 0
#endif

#if REDS_USE_DSP
#define REDS_FC reds_fc_dsp
#else
#define REDS_FC reds_fc_ref
#endif

/* ------------------------------------------------------------------------
 * Convolutions (docs/DESIGN.md, "Nested weight layout (convolutions)").
 *
 * Activation maps are NHWC int8 with batch 1, stored densely with the ACTIVE
 * channel count as the innermost stride: submodel k's map of a layer with
 * width c_k is H x W x c_k bytes (exactly what TFLite's sliced submodel holds).
 *
 * One struct describes CONV_2D, the pointwise (1x1) special case,
 * DEPTHWISE_CONV_2D (in_width == out_width, depth multiplier 1) and a fully
 * connected layer after Flatten of an H x W map (= a conv whose kernel covers
 * the whole map: kernel H x W, VALID, output 1 x 1).
 *
 * Standard / pointwise weight layout: the FC nested layout above applied to
 * the NESTED IM2COL column order. With input widths i_k (i_-1 = 0), channel
 * block b holds channels [i_{b-1}, i_b); submodel k's im2col vector at one
 * output pixel is, for b = 0 .. k, for ky, for kx, for c in block b:
 *     x[iy][ix][c] + input_offset   (0 when (iy, ix) lies in the padding),
 * n_k = kernel_h * kernel_w * i_k values, and submodel k's columns are the
 * first n_k of the full model's. The weights are the FC nested layout of the
 * (o_K, n_K) matrix in that column order with in widths n_k, out widths o_k:
 * submodel k reads exactly the first n_k * o_k bytes. For a 1x1 kernel the
 * column order is the plain channel order (pointwise = FC at every pixel).
 *
 * Depthwise weight layout: channel-major, [c][ky][kx]; submodel k reads the
 * first c_k * kernel_h * kernel_w bytes.
 *
 * bias / multiplier / shift: per output channel. qparam_stride = 0: one set in
 * channel order shared by all submodels (prefix o_k). qparam_stride = o_K:
 * one row per submodel (per-submodel BatchNorm folded into the requantisation),
 * submodel k uses entries [k * qparam_stride, k * qparam_stride + o_k).
 * ------------------------------------------------------------------------ */
typedef struct reds_conv_layer {
    const int8_t *weights;      /* nested layout (see above) */
    const int32_t *bias;        /* NULL when the layer has none */
    const int32_t *multiplier;  /* Q31 requantisation multipliers */
    const int32_t *shift;       /* exponents, TFLite sign: > 0 shifts left */
    const uint16_t *in_width;   /* [K] i_k: active input channels of submodel k */
    const uint16_t *out_width;  /* [K] o_k: active output channels (depthwise: == i_k) */
    uint16_t in_h, in_w;        /* input map height, width */
    uint16_t out_h, out_w;      /* output map height, width */
    uint16_t kernel_h, kernel_w;
    uint16_t stride_h, stride_w;
    uint16_t pad_top, pad_left; /* TFLite SAME padding offsets (0 for VALID) */
    int32_t qparam_stride;      /* 0: shared bias/multiplier/shift; else per-submodel rows */
    int32_t input_offset;       /* minus the input zero point */
    int32_t output_offset;      /* the output zero point */
    int32_t act_min;            /* fused activation clamp, int8 domain */
    int32_t act_max;
} reds_conv_layer;

/* Standard convolution (any kernel, stride, padding), submodel k:
 *   out[oy][ox][r] = clamp(requantize(bias[r] + sum over the im2col vector of
 *                    W[r][col] * im2col[col]) + output_offset)    for r < o_k.
 * input: in_h * in_w * i_k int8; output: out_h * out_w * o_k int8 (no aliasing).
 * scratch: REDS_CONV_SCRATCH_BYTES(kernel_h, kernel_w, i_k, o_k) bytes, 4-byte
 * aligned: o_k int32 accumulators, then n_k = kernel_h * kernel_w * i_k int16
 * (one output pixel's im2col vector, offset added, padding = 0).
 * reds_conv_ref is the portable reference; reds_conv_dsp (optional, in
 * reds_kernels_dsp.cpp) must be bit-identical. The runtime calls REDS_CONV. */
void reds_conv_ref(const reds_conv_layer *layer, int k, const int8_t *input, int8_t *output,
                   int32_t *scratch);
void reds_conv_dsp(const reds_conv_layer *layer, int k, const int8_t *input, int8_t *output,
                   int32_t *scratch);

/* Pointwise convolution: kernel 1x1, stride 1, no padding (in_h == out_h,
 * in_w == out_w); the FC kernel at every pixel. Same scratch contract as
 * REDS_CONV (n_k = i_k). Called through REDS_POINTWISE. */
void reds_pointwise_ref(const reds_conv_layer *layer, int k, const int8_t *input,
                        int8_t *output, int32_t *scratch);
void reds_pointwise_dsp(const reds_conv_layer *layer, int k, const int8_t *input,
                        int8_t *output, int32_t *scratch);

/* Depthwise convolution, depth multiplier 1: channel c of the output only
 * reads channel c of the input. No scratch. */
void reds_depthwise_ref(const reds_conv_layer *layer, int k, const int8_t *input,
                        int8_t *output);
void reds_depthwise_dsp(const reds_conv_layer *layer, int k, const int8_t *input,
                        int8_t *output);

/* Scratch bytes of REDS_CONV / REDS_POINTWISE for a kh x kw kernel. */
#define REDS_CONV_SCRATCH_BYTES(kh, kw, n_in, n_out) \
    (4u * (uint32_t)(n_out) + 2u * (uint32_t)(kh) * (uint32_t)(kw) * (uint32_t)(n_in) + 4u)

/* Pooling (AVERAGE_POOL_2D, MAX_POOL_2D; same quantisation in and out, so no
 * rescaling). Channel c of the output only reads channel c of the input, so
 * submodel k pools the width[k] channels of its dense H x W x width[k] map.
 * Only window positions inside the image count (padding is never read). */
typedef struct reds_pool_layer {
    const uint16_t *width;      /* [K] active channels of submodel k */
    uint16_t in_h, in_w, out_h, out_w;
    uint16_t filter_h, filter_w, stride_h, stride_w;
    uint16_t pad_top, pad_left;
    int32_t act_min, act_max;
} reds_pool_layer;

/* Average pooling: the mean over the window, rounded half away from zero,
 * clamped to [act_min, act_max]. A global pool has a window of the map size. */
void reds_avgpool_ref(const reds_pool_layer *layer, int k, const int8_t *input, int8_t *output);
void reds_avgpool_dsp(const reds_pool_layer *layer, int k, const int8_t *input, int8_t *output);

/* Max pooling: the maximum over the window (starting from -128, as TFLite
 * Micro), clamped to [act_min, act_max] (the fused activation). Comparisons
 * only: the portable kernel is also the one used on DSP targets (REDS_MAXPOOL).
 * output must not alias input. */
void reds_maxpool_ref(const reds_pool_layer *layer, int k, const int8_t *input, int8_t *output);

#if REDS_USE_DSP
#define REDS_CONV reds_conv_dsp
#else
#define REDS_CONV reds_conv_ref
#endif
#if REDS_USE_DSP
#define REDS_POINTWISE reds_pointwise_dsp
#else
#define REDS_POINTWISE reds_pointwise_ref
#endif
#if REDS_USE_DSP
#define REDS_DEPTHWISE reds_depthwise_dsp
#else
#define REDS_DEPTHWISE reds_depthwise_ref
#endif
#if REDS_USE_DSP
#define REDS_AVGPOOL reds_avgpool_dsp
#else
#define REDS_AVGPOOL reds_avgpool_ref
#endif
#define REDS_MAXPOOL reds_maxpool_ref

/* Elementwise ADD of two int8 maps of one shape (a residual join), TFLite's
 * int8 rules: each input plus its offset, shifted left by 20 bits, rescaled by
 * its own multiplier (to twice the larger input scale), the sum rescaled to the
 * output scale, plus the output zero point, clamped (fused activation). Both
 * inputs of submodel k have width[k] channels (the layers an Add joins share
 * one width), so the maps are h * w * width[k] dense bytes and the kernel
 * walks that prefix. All shifts are <= 0 (TFLite sign). */
typedef struct reds_add_layer {
    const uint16_t *width;      /* [K] active channels of submodel k */
    uint16_t h, w;              /* map size (inputs and output) */
    int32_t input1_offset;      /* minus the zero points */
    int32_t input2_offset;
    int32_t input1_multiplier, input1_shift;
    int32_t input2_multiplier, input2_shift;
    int32_t output_multiplier, output_shift;
    int32_t output_offset;      /* the output zero point */
    int32_t act_min, act_max;   /* fused activation clamp, int8 domain */
} reds_add_layer;

/* TFLite's left shift of both ADD inputs (int8). */
#define REDS_ADD_LEFT_SHIFT 20
/* Scratch of REDS_ADD: the DSP kernel's two 256-entry int32 tables. */
#define REDS_ADD_SCRATCH_BYTES 2048u

/* output[i] = ADD(input1[i], input2[i]) for i < h * w * width[k]. output may
 * alias neither input. scratch: REDS_ADD_SCRATCH_BYTES, 4-byte aligned (the
 * reference does not use it). reds_add_dsp gives bit-identical results. */
void reds_add_ref(const reds_add_layer *layer, int k, const int8_t *input1, const int8_t *input2,
                  int8_t *output, int32_t *scratch);
void reds_add_dsp(const reds_add_layer *layer, int k, const int8_t *input1, const int8_t *input2,
                  int8_t *output, int32_t *scratch);

#if REDS_USE_DSP
#define REDS_ADD reds_add_dsp
#else
#define REDS_ADD reds_add_ref
#endif

/* ------------------------------------------------------------------------
 * Row-by-row execution (rows.cpp): what lets a layer's output overlap its input.
 *
 * delay < 0: the kernel is called once, output written directly (it must not
 * overlap the input). delay >= 0: bands of `rows` output rows are computed by
 * the same kernel on the band's geometry into `ring` (delay + rows output
 * rows, disjoint from input and output); output row oy is copied out once row
 * oy + delay was computed. The memory planner (reds_tf/memory.py) places the
 * output so that no copy covers input bytes a later row reads. Results are
 * bit-identical to one call.
 * ------------------------------------------------------------------------ */
#define REDS_OP_CONV 0
#define REDS_OP_POINTWISE 1
#define REDS_OP_DEPTHWISE 2
#define REDS_OP_AVGPOOL 3
#define REDS_OP_MAXPOOL 4

void reds_run_conv(int op, const reds_conv_layer *layer, int k, const int8_t *input,
                   int8_t *output, int8_t *ring, int delay, int rows, int32_t *scratch);
void reds_run_pool(int op, const reds_pool_layer *layer, int k, const int8_t *input,
                   int8_t *output, int8_t *ring, int delay, int rows);
void reds_run_fc(const reds_fc_layer *layer, int k, const int8_t *input, int8_t *output,
                 int8_t *ring, int delay, int32_t *scratch);
/* A pointwise layer and the depthwise layer that reads it, fused: the
 * pointwise map never exists whole. For each depthwise output row, the
 * pointwise rows its window covers are computed into `window` (kernel_h rows
 * of the pointwise output, kept as they slide down), then the depthwise row
 * from them; output rows go through `ring` as above (delay < 0: written
 * directly). scratch: the pointwise kernel's. */
void reds_run_pw_dw(const reds_conv_layer *pw, const reds_conv_layer *dw, int k,
                    const int8_t *input, int8_t *output, int8_t *window, int8_t *ring, int delay,
                    int32_t *scratch);

/* A stream: consecutive layers run one output row per kernel call, pulled from
 * the last layer up, so that no map between them exists whole. Each layer but
 * the last keeps its output rows in a window of `rows` rows (the rows one
 * output row of the next layer reads; they slide down as it advances), at
 * windows[i] bytes into `block`; the first layer reads `input`, the last writes
 * `output`. A last average pool with one output pixel adds its input rows up
 * into int32 sums at windows[last] instead. The planner (reds_tf/memory.py,
 * stream_layout) sizes and places the windows, some of them shared. Results
 * are bit-identical to one call per layer. scratch: the largest kernel's. */
typedef struct reds_stream_stage {
    const void *layer; /* reds_conv_layer or reds_pool_layer, as op says */
    int16_t op;        /* REDS_OP_* */
    int16_t rows;      /* rows the window of this layer's output holds (last: 0) */
} reds_stream_stage;
#define REDS_STREAM_MAX_STAGES 32
void reds_run_stream(const reds_stream_stage *stages, int n, int k, const uint32_t *windows,
                     int8_t *block, const int8_t *input, int8_t *output, int32_t *scratch);

/* TFLite's MultiplyByQuantizedMultiplier with double rounding; shared by
 * every kernel so that all of them round identically. */
static inline int32_t reds_srdhm(int32_t a, int32_t b) {
    /* SaturatingRoundingDoublingHighMul: the only overflow is INT32_MIN^2. */
    if (a == b && a == INT32_MIN) {
        return INT32_MAX;
    }
    const int64_t ab = (int64_t)a * (int64_t)b;
    const int64_t nudge = ab >= 0 ? (int64_t)(1 << 30) : (int64_t)(1 - (1 << 30));
    /* C division truncates toward zero, as gemmlowp requires. */
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

static inline int32_t reds_rdbpot(int32_t x, int exponent) {
    /* RoundingDivideByPOT: round half away from zero. */
    const int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

static inline int32_t reds_requantize(int32_t acc, int32_t multiplier, int32_t shift) {
    const int left = shift > 0 ? (int)shift : 0;
    const int right = shift > 0 ? 0 : (int)-shift;
    return reds_rdbpot(reds_srdhm((int32_t)((uint32_t)acc << left), multiplier), right);
}

#ifdef __cplusplus
}
#endif

#endif /* REDS_KERNELS_H */
