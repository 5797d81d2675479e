/* Board layer "native": the firmware as a host process. The serial port is
 * stdin/stdout; `reds firmware --board native --serve` connects them to a new
 * pseudo-terminal so that serial clients (pyserial, `reds monitor`) can talk
 * to it like to a board. Exits when stdin reaches end of file. */
#include <errno.h>
#include <time.h>
#include <unistd.h>

#include "reds_fw.h"

extern "C" void reds_board_write(const char *data, size_t n) {
    while (n > 0) {
        const ssize_t w = write(STDOUT_FILENO, data, n);
        if (w < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            _exit(1);  // the port is gone: nothing left to answer
        }
        data += w;
        n -= (size_t)w;
    }
}

extern "C" uint32_t reds_board_micros(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint32_t)((uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u);
}

int main() {
    reds_fw_init();
    unsigned char buf[4096];
    for (;;) {
        const ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
        if (n == 0) break;
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            break;
        }
        for (ssize_t i = 0; i < n; ++i) reds_fw_feed(buf[i]);
    }
    return 0;
}
