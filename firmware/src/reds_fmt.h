/* Bounded text output for the JSON replies, without printf: newlib-nano's
 * printf has no floats unless linked with -u _printf_float (about 10 KB), and
 * the replies need just integers, one float and escaped strings. */
#ifndef REDS_FMT_H
#define REDS_FMT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct reds_out {
    char *buf;
    size_t cap;  /* bytes available in buf */
    size_t len;  /* bytes written so far (never more than cap) */
    int overflow; /* set when something did not fit; the text is then cut */
} reds_out;

void reds_out_init(reds_out *o, char *buf, size_t cap);
void reds_out_raw(reds_out *o, const char *s);
void reds_out_char(reds_out *o, char c);
/* A JSON string literal with quotes; control and non-ASCII bytes as \u00XX. */
void reds_out_json_str(reds_out *o, const char *s);
void reds_out_i32(reds_out *o, int32_t v);
void reds_out_u32(reds_out *o, uint32_t v);
/* Shortest-ish decimal for a float: 9 significant digits (enough to read the
 * same float back), trailing zeros dropped, plain notation for 1e-5 <= |v| <
 * 1e9 and d.ddde<exp> otherwise; "null" for NaN/inf (JSON has neither). */
void reds_out_float(reds_out *o, float v);

#ifdef __cplusplus
}
#endif

#endif /* REDS_FMT_H */
