/* Hooks of the REDS bench build (firmware/bench), see bench_startup.c. */
#ifndef REDS_BENCH_IO_H
#define REDS_BENCH_IO_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Entered at every measurement point; the QEMU plugin records the count. */
void reds_bench_mark(void);
/* Write a NUL-terminated string to UART0. */
void reds_bench_write(const char *s);
/* Write v in decimal to UART0. */
void reds_bench_write_u32(uint32_t v);
/* Write n bytes to UART0 as lowercase hex, two digits each, no separators. */
void reds_bench_write_hex(const int8_t *data, uint32_t n);
/* Bytes of stack ever used since reset (painted-stack high-water mark). */
uint32_t reds_bench_stack_used(void);
/* Leave QEMU with this exit status (semihosting). */
void reds_bench_exit(int status);

/* Benchmark inputs placed by QEMU's loader: magic, count, size, then
 * count * size int8 values. */
#define REDS_BENCH_MAGIC 0x48434E42u /* "BNCH" little-endian */
typedef struct reds_bench_inputs {
    uint32_t magic;
    uint32_t count;
    uint32_t size;
    int8_t data[];
} reds_bench_inputs;
extern reds_bench_inputs reds_bench_io;

#ifdef __cplusplus
}
#endif

#endif /* REDS_BENCH_IO_H */
