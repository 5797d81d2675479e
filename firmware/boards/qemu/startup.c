/* Start-up for QEMU's mps2-an386 (Cortex-M4F): vector table, FPU enable,
 * .data/.bss initialisation, C++ constructors, then main(). */
#include <stdint.h>
#include <string.h>

extern uint32_t __data_load[], __data_start[], __data_end[];
extern uint32_t __bss_start[], __bss_end[];
extern uint32_t __stack_top[];
extern void (*__init_array_start[])(void);
extern void (*__init_array_end[])(void);

int main(void);
void SysTick_Handler(void);
void UART0RX_Handler(void);
void Reset_Handler(void);

static void Default_Handler(void) {
    for (;;) {
    }
}

/* Stay silent on a fault: the host side sees the firmware stop answering. */
void HardFault_Handler(void) { Default_Handler(); }

__attribute__((section(".isr_vector"), used)) const void *const reds_vectors[17] = {
    __stack_top,                /* initial main stack pointer */
    (const void *)Reset_Handler,
    (const void *)Default_Handler,     /* NMI */
    (const void *)HardFault_Handler,
    (const void *)Default_Handler,     /* MemManage */
    (const void *)Default_Handler,     /* BusFault */
    (const void *)Default_Handler,     /* UsageFault */
    0, 0, 0, 0,
    (const void *)Default_Handler,     /* SVCall */
    (const void *)Default_Handler,     /* DebugMon */
    0,
    (const void *)Default_Handler,     /* PendSV */
    (const void *)SysTick_Handler,
    (const void *)UART0RX_Handler,     /* IRQ 0: UART0 RX */
};

__attribute__((noreturn, used)) void reds_c_startup(void) {
    memcpy(__data_start, __data_load, (size_t)((char *)__data_end - (char *)__data_start));
    memset(__bss_start, 0, (size_t)((char *)__bss_end - (char *)__bss_start));
    for (void (**f)(void) = __init_array_start; f < __init_array_end; ++f) {
        (*f)();
    }
    main();
    for (;;) {
    }
}

/* The FPU must be enabled (CPACR CP10/CP11 full access) before the first
 * floating-point instruction, and C code may use one anywhere, so this part is
 * assembly. */
__attribute__((naked, noreturn)) void Reset_Handler(void) {
    __asm volatile(
        "ldr r0, =0xE000ED88\n"
        "ldr r1, [r0]\n"
        "orr r1, r1, #(0xF << 20)\n"
        "str r1, [r0]\n"
        "dsb\n"
        "isb\n"
        "b reds_c_startup\n");
}
