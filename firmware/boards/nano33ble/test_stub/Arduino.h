/* TEST STUB of the Arduino mbed core's Arduino.h: only what the real core
 * provides and the nano33ble board layer uses, so that the tests can compile
 * the board layer with the Nano's flags and drive it on the host
 * (tests/test_firmware_boards.py). Shapes follow ArduinoCore-API: Print ->
 * Stream -> HardwareSerial, and on the Nano `Serial` is the USB CDC port, an
 * object of a class derived from them. The real header comes with the core
 * that PlatformIO or the Arduino IDE downloads. */
#ifndef REDS_TEST_STUB_ARDUINO_H
#define REDS_TEST_STUB_ARDUINO_H

#include <stddef.h>
#include <stdint.h>

unsigned long micros(void);

class Print {
  public:
    virtual ~Print() {}
    virtual size_t write(uint8_t c) = 0;
    virtual size_t write(const uint8_t *buffer, size_t size) = 0;
};

class Stream : public Print {
  public:
    virtual int available(void) = 0;
    virtual int read(void) = 0;
};

class HardwareSerial : public Stream {
  public:
    virtual void begin(unsigned long baud) = 0;
};

/* The Nano's USB serial port; the tests' harness defines the members. */
class USBSerial : public HardwareSerial {
  public:
    void begin(unsigned long baud) override;
    int available(void) override;
    int read(void) override;
    size_t write(uint8_t c) override;
    size_t write(const uint8_t *buffer, size_t size) override;
};

extern USBSerial Serial;

/* The sketch provides these; the core's main() calls them. */
void setup(void);
void loop(void);

#endif
