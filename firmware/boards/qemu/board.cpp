/* Board layer "qemu": bare-metal Cortex-M4F on QEMU's mps2-an386.
 *
 * - Serial port: UART0, a CMSDK APB UART at 0x40004000 (QEMU's `-serial pty`
 *   turns it into a pseudo-terminal). The RX interrupt (IRQ 0) moves bytes
 *   into a ring buffer and the main loop sleeps in WFI while it is empty:
 *   QEMU hands over the next byte only after the guest emptied the one-byte RX
 *   register, and a sleeping guest lets QEMU's I/O thread run at once, which is
 *   about 10x faster than busy polling. When the ring is full the interrupt is
 *   switched off and the byte stays in the UART, which holds back the sender
 *   (nothing is lost). TX is polled.
 * - Clock: SysTick on the 25 MHz system clock, interrupting every millisecond;
 *   micros = ms * 1000 + ticks into the current millisecond / 25. Run QEMU
 *   with `-icount shift=N` (reds_tf.firmware does): the clock then follows
 *   executed instructions (2^N ns each) and latencies are deterministic.
 *
 * - Stack: the linker script's .stack section, [__stack_bottom, __stack_top),
 *   the one stack (main and interrupts); main() has the core paint it so that
 *   `info` reports its high-water mark.
 *
 * Adding a bench mode: build with an extra flag (e.g. -DREDS_QEMU_BENCH), and
 * in main() call reds_set_submodel()/reds_invoke() between calls to two
 * noinline marker functions that a TCG plugin recognises by address; stop
 * SysTick and the UART interrupt first so they add no instructions.
 */
#include <stdint.h>

#include "reds_fw.h"

namespace {

struct CmsdkUart {
    volatile uint32_t data;     /* +0x00 */
    volatile uint32_t state;    /* +0x04 bit 0 TX full, bit 1 RX full */
    volatile uint32_t ctrl;     /* +0x08 bit 0 TX enable, bit 1 RX enable */
    volatile uint32_t intstatus; /* +0x0c read: status, write 1: clear */
    volatile uint32_t bauddiv;  /* +0x10 */
};
CmsdkUart *const kUart0 = reinterpret_cast<CmsdkUart *>(0x40004000u);

volatile uint32_t *const kSystCsr = reinterpret_cast<volatile uint32_t *>(0xE000E010u);
volatile uint32_t *const kSystRvr = reinterpret_cast<volatile uint32_t *>(0xE000E014u);
volatile uint32_t *const kSystCvr = reinterpret_cast<volatile uint32_t *>(0xE000E018u);
volatile uint32_t *const kScbIcsr = reinterpret_cast<volatile uint32_t *>(0xE000ED04u);

constexpr uint32_t kSysclkHz = 25000000u;
constexpr uint32_t kTicksPerMs = kSysclkHz / 1000u;
constexpr uint32_t kTicksPerUs = kSysclkHz / 1000000u;
constexpr uint32_t kIcsrPendStSet = 1u << 26;

constexpr uint32_t kUartCtrlTxEn = 1u << 0;
constexpr uint32_t kUartCtrlRxEn = 1u << 1;
constexpr uint32_t kUartCtrlRxIntEn = 1u << 3;
constexpr uint32_t kUartIntRx = 1u << 1;  /* INTSTATUS/INTCLEAR bit */
volatile uint32_t *const kNvicIser0 = reinterpret_cast<volatile uint32_t *>(0xE000E100u);
constexpr uint32_t kUart0RxIrq = 0u;

volatile uint32_t g_ms = 0;

/* Single-producer (ISR) single-consumer (main loop) byte ring. */
constexpr uint32_t kRingSize = 256u; /* power of two */
volatile uint8_t g_ring[kRingSize];
volatile uint32_t g_head = 0; /* written by the ISR */
volatile uint32_t g_tail = 0; /* written by the main loop */

}  // namespace

/* Bounds of the main stack (mps2_an386.ld). */
extern "C" uint32_t __stack_bottom[];
extern "C" uint32_t __stack_top[];

extern "C" void SysTick_Handler(void) { g_ms = g_ms + 1u; }

extern "C" void UART0RX_Handler(void) {
    while (kUart0->state & 2u) {
        if (g_head - g_tail >= kRingSize) {
            /* full: leave the byte in the UART and stop interrupting until the
             * main loop made room */
            kUart0->ctrl = kUart0->ctrl & ~kUartCtrlRxIntEn;
            break;
        }
        g_ring[g_head % kRingSize] = static_cast<uint8_t>(kUart0->data);
        g_head = g_head + 1u;
    }
    kUart0->intstatus = kUartIntRx;
}

extern "C" void reds_board_write(const char *data, size_t n) {
    for (size_t i = 0; i < n; ++i) {
        while (kUart0->state & 1u) {
        }
        kUart0->data = static_cast<uint8_t>(data[i]);
    }
}

extern "C" uint32_t reds_board_micros(void) {
    uint32_t ms, cvr, pending;
    do {
        ms = g_ms;
        cvr = *kSystCvr;
        pending = *kScbIcsr & kIcsrPendStSet;
    } while (ms != g_ms);
    /* the counter wrapped but the interrupt has not run yet */
    if (pending && cvr > kTicksPerMs / 2u) ms += 1u;
    return ms * 1000u + (kTicksPerMs - 1u - cvr) / kTicksPerUs;
}

int main(void) {
    reds_fw_stack_paint(__stack_bottom, __stack_top);
    kUart0->bauddiv = kSysclkHz / 115200u;
    kUart0->ctrl = kUartCtrlTxEn | kUartCtrlRxEn | kUartCtrlRxIntEn;
    *kNvicIser0 = 1u << kUart0RxIrq;
    *kSystRvr = kTicksPerMs - 1u;
    *kSystCvr = 0u;
    *kSystCsr = 7u; /* processor clock, interrupt, enable */
    reds_fw_init();
    for (;;) {
        /* sleep with interrupts masked so a byte arriving between the check
         * and WFI still wakes us (WFI wakes on pending interrupts) */
        __asm volatile("cpsid i" ::: "memory");
        if (g_head == g_tail && !(kUart0->state & 2u)) {
            __asm volatile("wfi" ::: "memory");
        }
        __asm volatile("cpsie i" ::: "memory");
        while (g_head != g_tail) {
            const uint8_t byte = g_ring[g_tail % kRingSize];
            g_tail = g_tail + 1u;
            reds_fw_feed(byte);
        }
        if (!(kUart0->ctrl & kUartCtrlRxIntEn) || (kUart0->state & 2u)) {
            /* the ring was full: re-arm the interrupt and collect the byte
             * that waited in the UART (the UART raises no interrupt for a byte
             * that arrived while its interrupt was off) */
            __asm volatile("cpsid i" ::: "memory");
            kUart0->ctrl = kUart0->ctrl | kUartCtrlRxIntEn;
            UART0RX_Handler();
            __asm volatile("cpsie i" ::: "memory");
        }
    }
}
