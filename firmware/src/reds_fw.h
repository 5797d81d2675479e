/* REDS firmware core: the serial protocol, the latency budget policy and the
 * timing, portable across boards. It knows the model only through the
 * generated C API in reds_model.h.
 *
 * A board layer provides the two functions below, calls reds_fw_init() once
 * and then feeds every received byte to reds_fw_feed(). Replies leave through
 * reds_board_write(), one JSON object per line.
 *
 * Protocol: ASCII lines, each ended by CR, LF, CRLF or LF-CR (CR or LF ends
 * a line; the empty line between the two bytes of a pair is ignored). An
 * empty or blank line gets no reply; every other line gets exactly one:
 *   info        -> {"ok":true,"model":..,"submodels":K,"active":k,"macs":[..],
 *                   "input_size":N,"input_scale":s,"input_zero_point":z,
 *                   "weight_bytes":..,"arena_bytes":..,"fingerprint":"16 hex",
 *                   "stack_bytes":..,"stack_size_bytes":..,"serial_buffer_bytes":..}
 *                  stack_bytes: the stack high-water mark since start-up (bytes
 *                  used at most, interrupts included), stack_size_bytes: the
 *                  stack's size, both -1 on boards that cannot tell (see
 *                  reds_fw_stack_paint); serial_buffer_bytes: the core's line and
 *                  reply buffers. Firmware before these three fields lacks them.
 *   use K       -> {"ok":true,"active":K,"switch_us":t}
 *   infer HEX   -> {"ok":true,"active":k,"class":c,"output":[..],"latency_us":t}
 *   bench       -> {"ok":true,"latency_us":[..one per submodel..],"switch_us":t}
 *   budget US   -> {"ok":true,"active":k,"latency_us":t}  (largest submodel whose
 *                   measured latency is <= US microseconds)
 *   anything else -> {"ok":false,"error":"..."}, state unchanged
 */
#ifndef REDS_FW_H
#define REDS_FW_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- provided by the board layer ---- */
/* Write n bytes to the serial port (blocking until accepted). */
void reds_board_write(const char *data, size_t n);
/* Free-running microsecond clock; only differences are used, so wrapping at
 * 2^32 is fine. */
uint32_t reds_board_micros(void);

/* ---- provided by the core ---- */
/* Reset the protocol state, activate the largest submodel and measure the
 * latency table the budget policy uses (one bench run). */
void reds_fw_init(void);
/* Feed one received byte; a complete line is answered before returning. */
void reds_fw_feed(uint8_t byte);
/* Answer one complete line (without its line ending; a trailing '\r' is
 * dropped); used by reds_fw_feed and by tests. */
void reds_fw_handle_line(const char *line, size_t len);
/* Optional, for `info`'s stack high-water mark: a board layer that knows its
 * stack's bounds calls this once at start-up, before reds_fw_init(), from the
 * stack it describes: [lo, hi) with hi its top (the stack grows down). The
 * core fills the part below the caller's frame with a pattern and later finds
 * the lowest word that no longer holds it. Boards that do not call it report
 * -1 (unknown). */
void reds_fw_stack_paint(void *lo, void *hi);

#ifdef __cplusplus
}
#endif

#endif /* REDS_FW_H */
