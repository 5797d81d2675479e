/* reds_kernel_opt.h: included FIRST by every kernel file (internal).
 *
 * The Arduino core builds every sketch with -Os. The kernels' loops are where
 * the time goes, and at -Os GCC stops unrolling and scheduling them (DS-CNN-S:
 * 2.00 instead of 1.84 instructions per MAC on the DSP path, portable kernels
 * 25-34 % slower). So the kernel files alone are compiled at -O2 when the
 * build optimises for size; the rest of the sketch stays small, and other
 * builds (the host simulator's -O3, -O2) keep their own flags. GCC 7 and
 * later; other compilers ignore this. */
#ifndef REDS_KERNEL_OPT_H
#define REDS_KERNEL_OPT_H

#if defined(__GNUC__) && !defined(__clang__) && defined(__OPTIMIZE_SIZE__)
#pragma GCC optimize("O2")
#endif

#endif /* REDS_KERNEL_OPT_H */
