/* REDS firmware core: line protocol, JSON replies, latency budget policy.
 * See reds_fw.h for the protocol. Everything is static: no heap, no printf. */
#include "reds_fw.h"

#include <string.h>

#include "reds_fmt.h"
#include "reds_model.h"

namespace {

/* Longest accepted line (without its line ending): "infer " + 2 hex digits per
 * input byte, plus slack for extra spaces. */
constexpr size_t kLineMax = 2u * REDS_INPUT_SIZE + 32u;
/* Enough for the longest reply: info's macs list or infer's output list. */
constexpr size_t kOutMax = 416u + 12u * (REDS_NUM_SUBMODELS + REDS_OUTPUT_SIZE) +
                           6u * sizeof(REDS_MODEL_NAME) + 6u * sizeof(REDS_MODEL_FINGERPRINT);
/* bench: each submodel runs this many times and keeps the fastest, which
 * filters out interrupts and (under emulation) host scheduling noise. */
constexpr int kBenchRepeats = 3;

char g_line[kLineMax];
size_t g_line_len = 0;
bool g_line_overflow = false;

char g_out_buf[kOutMax];
int8_t g_input[REDS_INPUT_SIZE];
int8_t g_output[REDS_OUTPUT_SIZE];

/* Latency table of the budget policy, refreshed by every `bench`. */
uint32_t g_latency_us[REDS_NUM_SUBMODELS];
uint32_t g_switch_us = 0;

/* The painted stack (reds_fw_stack_paint): [g_stack_lo, g_stack_hi), words;
 * null when the board did not call it. */
constexpr uint32_t kStackPattern = 0x5AA5C33Cu;
/* Left unpainted below the painting function's own frame. */
constexpr uintptr_t kStackPaintMargin = 128u;
uint32_t *g_stack_lo = nullptr;
uint32_t *g_stack_hi = nullptr;

/* Bytes of the stack used at most since it was painted, or -1 (not painted). */
int32_t stack_high_water() {
    if (g_stack_lo == nullptr) {
        return -1;
    }
    const volatile uint32_t *p = g_stack_lo;
    while (p < g_stack_hi && *p == kStackPattern) {
        ++p;
    }
    return (int32_t)((uintptr_t)g_stack_hi - (uintptr_t)p);
}

void send(reds_out *o) {
    /* the buffer is sized for every reply; a cut reply would be invalid JSON,
     * so say so instead */
    if (o->overflow) {
        static const char kMsg[] = "{\"ok\":false,\"error\":\"reply too long for the buffer\"}\n";
        reds_board_write(kMsg, sizeof(kMsg) - 1);
        return;
    }
    reds_board_write(o->buf, o->len);
    reds_board_write("\n", 1);
}

void begin_ok(reds_out *o) {
    reds_out_init(o, g_out_buf, sizeof(g_out_buf));
    reds_out_raw(o, "{\"ok\":true");
}

void key(reds_out *o, const char *name) {
    reds_out_raw(o, ",\"");
    reds_out_raw(o, name);
    reds_out_raw(o, "\":");
}

/* One error reply. `detail` (may be NULL) is appended to `msg`, `num` too when
 * has_num. */
void reply_error(const char *msg, const char *detail = nullptr, bool has_num = false,
                 uint32_t num = 0) {
    reds_out o;
    reds_out_init(&o, g_out_buf, sizeof(g_out_buf));
    /* build the message first in a scratch area at the end of the buffer */
    char text[160];
    reds_out t;
    reds_out_init(&t, text, sizeof(text) - 1);
    reds_out_raw(&t, msg);
    if (detail) {
        reds_out_raw(&t, detail);
    }
    if (has_num) {
        reds_out_u32(&t, num);
    }
    text[t.len] = '\0';
    reds_out_raw(&o, "{\"ok\":false,\"error\":");
    reds_out_json_str(&o, text);
    reds_out_char(&o, '}');
    send(&o);
}

/* Parse a decimal unsigned integer that fills the whole token. */
bool parse_u32(const char *s, size_t n, uint32_t *value) {
    if (n == 0 || n > 10) {
        return false;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) {
        if (s[i] < '0' || s[i] > '9') {
            return false;
        }
        v = v * 10u + (uint64_t)(s[i] - '0');
    }
    if (v > 0xffffffffu) {
        return false;
    }
    *value = (uint32_t)v;
    return true;
}

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

uint32_t elapsed(uint32_t start) { return reds_board_micros() - start; }

/* Time one inference of submodel k (already active) on g_input. */
uint32_t time_invoke(int *status) {
    const uint32_t t0 = reds_board_micros();
    *status = reds_invoke(g_input, g_output);
    return elapsed(t0);
}

/* Measure every submodel (fastest of kBenchRepeats) and the switch time, then
 * restore the active submodel. Runs on the zero-point input (an all-"0.0"
 * image) so the result does not depend on earlier commands. */
bool run_bench() {
    const int active = reds_get_submodel();
    memset(g_input, (int8_t)REDS_INPUT_ZERO_POINT, sizeof(g_input));
    uint32_t switch_us = 0;
    bool ok = true;
    for (int k = 0; k < REDS_NUM_SUBMODELS && ok; ++k) {
        const uint32_t t0 = reds_board_micros();
        reds_set_submodel(k);
        const uint32_t s = elapsed(t0);
        if (s > switch_us) {
            switch_us = s;
        }
        uint32_t best = 0xffffffffu;
        for (int r = 0; r < kBenchRepeats; ++r) {
            int status = 0;
            const uint32_t t = time_invoke(&status);
            if (status != 0) {
                ok = false;
                break;
            }
            if (t < best) {
                best = t;
            }
        }
        g_latency_us[k] = best;
    }
    reds_set_submodel(active);
    g_switch_us = switch_us;
    return ok;
}

void cmd_info() {
    reds_out o;
    begin_ok(&o);
    key(&o, "model");
    reds_out_json_str(&o, reds_model_name());
    key(&o, "submodels");
    reds_out_i32(&o, reds_num_submodels());
    key(&o, "active");
    reds_out_i32(&o, reds_get_submodel());
    key(&o, "macs");
    reds_out_char(&o, '[');
    for (int k = 0; k < REDS_NUM_SUBMODELS; ++k) {
        if (k) reds_out_char(&o, ',');
        reds_out_u32(&o, reds_macs(k));
    }
    reds_out_char(&o, ']');
    key(&o, "input_size");
    reds_out_i32(&o, reds_input_size());
    key(&o, "input_scale");
    reds_out_float(&o, reds_input_scale());
    key(&o, "input_zero_point");
    reds_out_i32(&o, reds_input_zero_point());
    key(&o, "weight_bytes");
    reds_out_u32(&o, reds_weight_bytes());
    key(&o, "arena_bytes");
    reds_out_u32(&o, reds_arena_bytes());
    key(&o, "fingerprint");
    reds_out_json_str(&o, reds_model_fingerprint());
    key(&o, "stack_bytes");
    reds_out_i32(&o, stack_high_water());
    key(&o, "stack_size_bytes");
    reds_out_i32(&o, g_stack_lo ? (int32_t)((uintptr_t)g_stack_hi - (uintptr_t)g_stack_lo) : -1);
    key(&o, "serial_buffer_bytes");
    reds_out_u32(&o, (uint32_t)(sizeof(g_line) + sizeof(g_out_buf)));
    reds_out_char(&o, '}');
    send(&o);
}

void cmd_use(const char *arg, size_t n) {
    uint32_t k = 0;
    if (!parse_u32(arg, n, &k)) {
        reply_error("use needs a submodel index: use K with K a decimal integer");
        return;
    }
    if (k >= (uint32_t)REDS_NUM_SUBMODELS) {
        reply_error("submodel index out of range: valid are 0 to ", nullptr, true,
                    REDS_NUM_SUBMODELS - 1);
        return;
    }
    const uint32_t t0 = reds_board_micros();
    const int status = reds_set_submodel((int)k);
    const uint32_t t = elapsed(t0);
    if (status != 0) {
        reply_error("the runtime refused submodel ", nullptr, true, k);
        return;
    }
    reds_out o;
    begin_ok(&o);
    key(&o, "active");
    reds_out_u32(&o, k);
    key(&o, "switch_us");
    reds_out_u32(&o, t);
    reds_out_char(&o, '}');
    send(&o);
}

void cmd_infer(const char *arg, size_t n) {
    if (n != 2u * REDS_INPUT_SIZE) {
        reply_error("infer needs exactly 2 hex digits per input byte; hex digits expected: ",
                    nullptr, true, 2u * REDS_INPUT_SIZE);
        return;
    }
    /* validate everything before touching the input buffer */
    for (size_t i = 0; i < n; ++i) {
        if (hex_value(arg[i]) < 0) {
            reply_error("bad hex digit at position ", nullptr, true, (uint32_t)i);
            return;
        }
    }
    for (size_t i = 0; i < REDS_INPUT_SIZE; ++i) {
        const int byte = hex_value(arg[2 * i]) * 16 + hex_value(arg[2 * i + 1]);
        g_input[i] = (int8_t)(byte >= 128 ? byte - 256 : byte);
    }
    int status = 0;
    const uint32_t t = time_invoke(&status);
    if (status != 0) {
        reply_error("inference failed, runtime status ", nullptr, true, (uint32_t)status);
        return;
    }
    int best = 0;
    for (int i = 1; i < REDS_OUTPUT_SIZE; ++i) {
        if (g_output[i] > g_output[best]) best = i;
    }
    reds_out o;
    begin_ok(&o);
    key(&o, "active");
    reds_out_i32(&o, reds_get_submodel());
    key(&o, "class");
    reds_out_i32(&o, best);
    key(&o, "output");
    reds_out_char(&o, '[');
    for (int i = 0; i < REDS_OUTPUT_SIZE; ++i) {
        if (i) reds_out_char(&o, ',');
        reds_out_i32(&o, g_output[i]);
    }
    reds_out_char(&o, ']');
    key(&o, "latency_us");
    reds_out_u32(&o, t);
    reds_out_char(&o, '}');
    send(&o);
}

void cmd_bench() {
    if (!run_bench()) {
        reply_error("inference failed during bench");
        return;
    }
    reds_out o;
    begin_ok(&o);
    key(&o, "latency_us");
    reds_out_char(&o, '[');
    for (int k = 0; k < REDS_NUM_SUBMODELS; ++k) {
        if (k) reds_out_char(&o, ',');
        reds_out_u32(&o, g_latency_us[k]);
    }
    reds_out_char(&o, ']');
    key(&o, "switch_us");
    reds_out_u32(&o, g_switch_us);
    reds_out_char(&o, '}');
    send(&o);
}

void cmd_budget(const char *arg, size_t n) {
    uint32_t budget = 0;
    if (!parse_u32(arg, n, &budget)) {
        reply_error("budget needs microseconds: budget US with US a decimal integer");
        return;
    }
    /* the largest submodel that fits; latency need not be monotonic in k */
    int pick = -1;
    for (int k = 0; k < REDS_NUM_SUBMODELS; ++k) {
        if (g_latency_us[k] <= budget) pick = k;
    }
    if (pick < 0) {
        uint32_t fastest = g_latency_us[0];
        for (int k = 1; k < REDS_NUM_SUBMODELS; ++k) {
            if (g_latency_us[k] < fastest) fastest = g_latency_us[k];
        }
        reply_error("no submodel fits the budget; the fastest needs (us): ", nullptr, true,
                    fastest);
        return;
    }
    if (reds_set_submodel(pick) != 0) {
        reply_error("the runtime refused submodel ", nullptr, true, (uint32_t)pick);
        return;
    }
    reds_out o;
    begin_ok(&o);
    key(&o, "active");
    reds_out_i32(&o, pick);
    key(&o, "latency_us");
    reds_out_u32(&o, g_latency_us[pick]);
    reds_out_char(&o, '}');
    send(&o);
}

bool is_space(char c) { return c == ' ' || c == '\t'; }

bool word_is(const char *w, size_t n, const char *name) {
    return strlen(name) == n && memcmp(w, name, n) == 0;
}

}  // namespace

extern "C" void reds_fw_handle_line(const char *line, size_t len) {
    if (len > 0 && line[len - 1] == '\r') --len;
    size_t i = 0;
    while (i < len && is_space(line[i])) ++i;
    while (len > i && is_space(line[len - 1])) --len;
    if (i == len) {
        /* An empty (or blank) line gets no reply: it is what a terminal sends
         * for a bare Enter, and the second byte of a CRLF or LF-CR ending. */
        return;
    }
    const char *cmd = line + i;
    while (i < len && !is_space(line[i])) ++i;
    const size_t cmd_len = (size_t)(line + i - cmd);
    while (i < len && is_space(line[i])) ++i;
    const char *arg = line + i;
    size_t arg_len = len - i;
    for (size_t j = 0; j < arg_len; ++j) {
        if (is_space(arg[j])) {
            reply_error("too many arguments");
            return;
        }
    }
    if (word_is(cmd, cmd_len, "info") || word_is(cmd, cmd_len, "bench")) {
        if (arg_len != 0) {
            reply_error(cmd[0] == 'i' ? "info" : "bench", " takes no argument");
            return;
        }
        if (cmd[0] == 'i') {
            cmd_info();
        } else {
            cmd_bench();
        }
    } else if (word_is(cmd, cmd_len, "use")) {
        cmd_use(arg, arg_len);
    } else if (word_is(cmd, cmd_len, "infer")) {
        cmd_infer(arg, arg_len);
    } else if (word_is(cmd, cmd_len, "budget")) {
        cmd_budget(arg, arg_len);
    } else {
        reply_error("unknown command; commands: info, use K, infer HEX, bench, budget US");
    }
}

extern "C" void reds_fw_feed(uint8_t byte) {
    /* CR alone (screen, minicom, picocom), LF, CRLF and LF-CR all end a line:
     * either byte ends one, and the other byte of a pair then ends an empty
     * line, which gets no reply. */
    if (byte == '\n' || byte == '\r') {
        if (g_line_overflow) {
            reply_error("line too long; the longest accepted line has bytes: ", nullptr, true,
                        (uint32_t)kLineMax);
        } else {
            reds_fw_handle_line(g_line, g_line_len);
        }
        g_line_len = 0;
        g_line_overflow = false;
        return;
    }
    if (g_line_overflow) return;  // discard the rest of an over-long line
    if (g_line_len < kLineMax) {
        g_line[g_line_len++] = (char)byte;
    } else {
        g_line_overflow = true;
    }
}

extern "C" void reds_fw_stack_paint(void *lo, void *hi) {
    /* whole words inside [lo, hi); nothing at or below this frame's margin */
    uintptr_t a = ((uintptr_t)lo + 3u) & ~(uintptr_t)3u;
    uintptr_t b = (uintptr_t)hi & ~(uintptr_t)3u;
    const uintptr_t here = (uintptr_t)__builtin_frame_address(0);
    if (a >= b || here < a || here > b) {
        return;  // not the stack we run on: leave it unknown
    }
    const uintptr_t end = (here - kStackPaintMargin) & ~(uintptr_t)3u;
    if (here < a + kStackPaintMargin || end <= a) {
        return;  // no room below this frame
    }
    volatile uint32_t *p = (volatile uint32_t *)a;
    while ((uintptr_t)p < end) {
        *p++ = kStackPattern;
    }
    g_stack_lo = (uint32_t *)a;
    g_stack_hi = (uint32_t *)b;
}

extern "C" void reds_fw_init(void) {
    g_line_len = 0;
    g_line_overflow = false;
    reds_set_submodel(REDS_NUM_SUBMODELS - 1);
    run_bench();
}
