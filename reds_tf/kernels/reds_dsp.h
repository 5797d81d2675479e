/* reds_dsp.h: the Cortex-M4 DSP instructions the kernels use, as one-line
 * inline asm.
 *
 * Why not <arm_acle.h>: GCC provides the ACLE SIMD32 intrinsics (__smlad,
 * __sxtb16, ...) only from version 10 on, and the compilers Nano 33 BLE users
 * have are GCC 7 (PlatformIO's toolchain-gccarmnoneeabi 1.70201.0, the Arduino
 * IDE's mbed_nano core). Inline asm of these instructions builds on every GCC
 * and clang that targets ARMv7E-M. The asm statements are not volatile and
 * touch no memory, so the compiler may still hoist, merge or drop them like
 * any pure expression; SMLAD/SMLAxy may set the Q flag, which nothing reads.
 *
 * Include only where __ARM_FEATURE_DSP is defined (-mcpu=cortex-m4/m7/m33). */
#ifndef REDS_DSP_H
#define REDS_DSP_H

#include <stdint.h>

#if !defined(__ARM_FEATURE_DSP)
#error "reds_dsp.h needs the Arm DSP extension (__ARM_FEATURE_DSP)"
#endif

/* Per 16-bit lane: sign-extended bytes 0 and 2 of v. */
static inline uint32_t reds_sxtb16(uint32_t v) {
    uint32_t r;
    __asm__("sxtb16 %0, %1" : "=r"(r) : "r"(v));
    return r;
}

/* Per 16-bit lane: sign-extended bytes 1 and 3 of v. */
static inline uint32_t reds_sxtb16_ror8(uint32_t v) {
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
}

/* Per 16-bit lane: a + sign-extended bytes 0 and 2 of v. */
static inline uint32_t reds_sxtab16(uint32_t a, uint32_t v) {
    uint32_t r;
    __asm__("sxtab16 %0, %1, %2" : "=r"(r) : "r"(a), "r"(v));
    return r;
}

/* Per 16-bit lane: a + sign-extended bytes 1 and 3 of v. */
static inline uint32_t reds_sxtab16_ror8(uint32_t a, uint32_t v) {
    uint32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(v));
    return r;
}

/* acc + x.lo * y.lo + x.hi * y.hi (signed 16-bit lanes). */
static inline int32_t reds_smlad(uint32_t x, uint32_t y, int32_t acc) {
    int32_t r;
    __asm__("smlad %0, %1, %2, %3" : "=r"(r) : "r"(x), "r"(y), "r"(acc));
    return r;
}

/* acc + x.lo * y.lo (signed 16-bit bottom halves). */
static inline int32_t reds_smlabb(int32_t x, int32_t y, int32_t acc) {
    int32_t r;
    __asm__("smlabb %0, %1, %2, %3" : "=r"(r) : "r"(x), "r"(y), "r"(acc));
    return r;
}

/* acc + x.hi * y.hi (signed 16-bit top halves). */
static inline int32_t reds_smlatt(int32_t x, int32_t y, int32_t acc) {
    int32_t r;
    __asm__("smlatt %0, %1, %2, %3" : "=r"(r) : "r"(x), "r"(y), "r"(acc));
    return r;
}

/* v saturated to [-128, 127]. */
static inline int32_t reds_ssat8(int32_t v) {
    int32_t r;
    __asm__("ssat %0, #8, %1" : "=r"(r) : "r"(v));
    return r;
}

/* (v >> 1) saturated to [-128, 127]: the shift comes free with SSAT. */
static inline int32_t reds_ssat8_asr1(int32_t v) {
    int32_t r;
    __asm__("ssat %0, #8, %1, asr #1" : "=r"(r) : "r"(v));
    return r;
}

/* floor((a * b + 2^31) / 2^32): the rounded high word of the 64-bit product. */
static inline int32_t reds_smmulr(int32_t a, int32_t b) {
    int32_t r;
    __asm__("smmulr %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
    return r;
}

#endif /* REDS_DSP_H */
