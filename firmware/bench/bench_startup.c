/* Start-up, instrumentation hooks and I/O of the REDS bench build for QEMU's
 * mps2-an386 (bare-metal Cortex-M4F, no libc start files). Shared by the
 * bench (bench_main.cpp) and the kernel checks in tests/dsp_check.
 *
 * - reds_bench_mark() is an empty, never-inlined function: the instruction
 *   count plugin records the running count each time it is entered.
 * - The stack is painted with a pattern before main(); reds_bench_stack_used()
 *   finds the deepest overwritten word (high-water mark).
 * - Text leaves through UART0 (CMSDK APB UART); the exit status through
 *   semihosting SYS_EXIT, so QEMU must run with -semihosting-config enable=on.
 */
#include <stddef.h>
#include <stdint.h>

#include "bench_io.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _sstack, _estack;
extern void (*__init_array_start[])(void);
extern void (*__init_array_end[])(void);
int main(void);

#define REDS_STACK_PAINT 0xC5A5C5A5u
#define UART0_DATA (*(volatile uint32_t *)0x40004000u)
#define UART0_STATE (*(volatile uint32_t *)0x40004004u)
#define UART0_CTRL (*(volatile uint32_t *)0x40004008u)
#define UART0_BAUDDIV (*(volatile uint32_t *)0x40004010u)

__attribute__((noinline, used)) void reds_bench_mark(void) {
    __asm__ volatile("" ::: "memory");
}

void reds_bench_exit(int status) {
    /* SYS_EXIT_EXTENDED: a (reason, status) block; reason
     * ADP_Stopped_ApplicationExit makes QEMU exit with `status`. */
    volatile uint32_t block[2] = {0x20026u, (uint32_t)status};
    register uint32_t r0 __asm__("r0") = 0x20u;
    register volatile uint32_t *r1 __asm__("r1") = block;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    for (;;) {
    }
}

void reds_bench_write(const char *s) {
    for (; *s; s++) {
        while (UART0_STATE & 1u) {
        }
        UART0_DATA = (uint32_t)(uint8_t)*s;
    }
}

void reds_bench_write_u32(uint32_t v) {
    char buf[12];
    int i = (int)sizeof buf - 1;
    buf[i] = '\0';
    do {
        buf[--i] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v != 0u);
    reds_bench_write(&buf[i]);
}

void reds_bench_write_hex(const int8_t *data, uint32_t n) {
    static const char digits[] = "0123456789abcdef";
    char pair[3] = {0, 0, 0};
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t b = (uint8_t)data[i];
        pair[0] = digits[b >> 4];
        pair[1] = digits[b & 15u];
        reds_bench_write(pair);
    }
}

uint32_t reds_bench_stack_used(void) {
    const uint32_t *p = &_sstack;
    while (p < &_estack && *p == REDS_STACK_PAINT) {
        p++;
    }
    return (uint32_t)((uintptr_t)&_estack - (uintptr_t)p);
}

static void reds_bench_fault(void) {
    reds_bench_write("fault\n");
    reds_bench_exit(3);
}

__attribute__((noreturn)) void reds_bench_reset(void) {
    /* CP10/CP11 full access before any FPU instruction, or the core locks up. */
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    const uint32_t *src = &_sidata;
    for (uint32_t *dst = &_sdata; dst < &_edata;) {
        *dst++ = *src++;
    }
    for (uint32_t *dst = &_sbss; dst < &_ebss;) {
        *dst++ = 0;
    }
    /* Paint the stack below the current frame (leave 64 bytes of margin). */
    uint32_t *sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    for (uint32_t *p = &_sstack; p < sp - 16; p++) {
        *p = REDS_STACK_PAINT;
    }
    for (void (**f)(void) = __init_array_start; f < __init_array_end; f++) {
        (*f)();
    }
    UART0_BAUDDIV = 16u;
    UART0_CTRL = 1u; /* TX enable */
    reds_bench_exit(main());
    for (;;) {
    }
}

__attribute__((section(".isr_vector"), used)) void (*const reds_bench_vectors[16])(void) = {
    (void (*)(void))(uintptr_t)&_estack, reds_bench_reset, reds_bench_fault, reds_bench_fault,
    reds_bench_fault, reds_bench_fault, reds_bench_fault, 0, 0, 0, 0, reds_bench_fault,
    reds_bench_fault, 0, reds_bench_fault, reds_bench_fault,
};
