/* Board layer "nano33ble": Arduino Nano 33 BLE (nRF52840, Cortex-M4F, 64 MHz)
 * on the Arduino mbed core. USB serial (the baud rate is nominal on USB CDC),
 * micros() for timing. Everything else is the portable core.
 *
 * Stack: setup() and loop() run on mbed OS's main thread, whose stack (32 KB,
 * allocated statically by the core) RTX describes in the thread's control
 * block (stack_mem, stack_size). setup() has the core paint it so that `info`
 * reports its high-water mark; interrupts run on the separate main stack (MSP)
 * and are not part of it. Where RTX's header is not available (the tests'
 * Arduino.h stub), the mark is reported as unknown (-1). */
#include <Arduino.h>

#if defined(__has_include)
#if __has_include(<rtx_os.h>)
#include <rtx_os.h>
#define REDS_NANO_RTX 1
#endif
#endif

#include "reds_fw.h"

extern "C" void reds_board_write(const char *data, size_t n) {
    Serial.write(reinterpret_cast<const uint8_t *>(data), n);
}

extern "C" uint32_t reds_board_micros(void) { return static_cast<uint32_t>(micros()); }

#if defined(REDS_NANO_RTX)
/* The running thread's stack; its lowest 8 bytes (RTX's overflow magic word)
 * stay untouched. */
static void paint_thread_stack() {
    const osRtxThread_t *t = reinterpret_cast<const osRtxThread_t *>(osThreadGetId());
    if (t == nullptr || t->stack_mem == nullptr || t->stack_size <= 8u) {
        return;
    }
    char *lo = static_cast<char *>(t->stack_mem);
    reds_fw_stack_paint(lo + 8, lo + t->stack_size);
}
#endif

void setup() {
#if defined(REDS_NANO_RTX)
    paint_thread_stack();
#endif
    Serial.begin(115200);
    reds_fw_init();
}

void loop() {
    while (Serial.available() > 0) {
        const int c = Serial.read();
        if (c >= 0) reds_fw_feed(static_cast<uint8_t>(c));
    }
}
