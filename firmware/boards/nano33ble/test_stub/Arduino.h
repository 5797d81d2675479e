/* TEST STUB: the few Arduino declarations the nano33ble board layer uses, so a
 * host compiler can type-check it (tests/test_firmware_boards.py). The real
 * header comes with the Arduino mbed core that PlatformIO downloads. */
#ifndef REDS_TEST_STUB_ARDUINO_H
#define REDS_TEST_STUB_ARDUINO_H

#include <stddef.h>
#include <stdint.h>

unsigned long micros(void);

class HardwareSerialStub {
  public:
    void begin(unsigned long baud);
    int available(void);
    int read(void);
    size_t write(const uint8_t *buffer, size_t size);
};

extern HardwareSerialStub Serial;

#endif
