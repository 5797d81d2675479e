/* Board layer "nano33ble": Arduino Nano 33 BLE (nRF52840, Cortex-M4F, 64 MHz)
 * on the Arduino mbed core. USB serial (the baud rate is nominal on USB CDC),
 * micros() for timing. Everything else is the portable core. */
#include <Arduino.h>

#include "reds_fw.h"

extern "C" void reds_board_write(const char *data, size_t n) {
    Serial.write(reinterpret_cast<const uint8_t *>(data), n);
}

extern "C" uint32_t reds_board_micros(void) { return static_cast<uint32_t>(micros()); }

void setup() {
    Serial.begin(115200);
    reds_fw_init();
}

void loop() {
    while (Serial.available() > 0) {
        const int c = Serial.read();
        if (c >= 0) reds_fw_feed(static_cast<uint8_t>(c));
    }
}
