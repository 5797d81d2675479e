#include "reds_fmt.h"

void reds_out_init(reds_out *o, char *buf, size_t cap) {
    o->buf = buf;
    o->cap = cap;
    o->len = 0;
    o->overflow = 0;
}

void reds_out_char(reds_out *o, char c) {
    if (o->len < o->cap) {
        o->buf[o->len++] = c;
    } else {
        o->overflow = 1;
    }
}

void reds_out_raw(reds_out *o, const char *s) {
    while (*s) {
        reds_out_char(o, *s++);
    }
}

void reds_out_json_str(reds_out *o, const char *s) {
    static const char hex[] = "0123456789abcdef";
    reds_out_char(o, '"');
    for (; *s; ++s) {
        const unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            reds_out_char(o, '\\');
            reds_out_char(o, (char)c);
        } else if (c < 0x20 || c >= 0x7f) {
            reds_out_raw(o, "\\u00");
            reds_out_char(o, hex[c >> 4]);
            reds_out_char(o, hex[c & 15]);
        } else {
            reds_out_char(o, (char)c);
        }
    }
    reds_out_char(o, '"');
}

void reds_out_u32(reds_out *o, uint32_t v) {
    char tmp[10];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v != 0u);
    while (n > 0) {
        reds_out_char(o, tmp[--n]);
    }
}

void reds_out_i32(reds_out *o, int32_t v) {
    if (v < 0) {
        reds_out_char(o, '-');
        /* negate in unsigned arithmetic so INT32_MIN works */
        reds_out_u32(o, 0u - (uint32_t)v);
    } else {
        reds_out_u32(o, (uint32_t)v);
    }
}

void reds_out_float(reds_out *o, float v) {
    if (v != v || v > 3.4028235e38f || v < -3.4028235e38f) {
        reds_out_raw(o, "null");
        return;
    }
    if (v == 0.0f) {
        reds_out_char(o, '0');
        return;
    }
    double d = v;
    if (d < 0.0) {
        reds_out_char(o, '-');
        d = -d;
    }
    /* Scale into [1e8, 1e9) so that the integer part holds 9 significant
     * digits. Every float is exact in a double; each of the at most ~60
     * steps adds half an ulp of a double (1e-16 relative), far below the 1e-9
     * that the 9th digit resolves, so the text reads back as the same float. */
    int exp10 = 8;
    while (d >= 1e9) {
        d /= 10.0;
        ++exp10;
    }
    while (d < 1e8) {
        d *= 10.0;
        --exp10;
    }
    uint32_t m = (uint32_t)(d + 0.5);
    if (m >= 1000000000u) {
        m /= 10u;
        ++exp10;
    }
    char dig[9];
    for (int i = 8; i >= 0; --i) {
        dig[i] = (char)('0' + m % 10u);
        m /= 10u;
    }
    int nd = 9;
    while (nd > 1 && dig[nd - 1] == '0') {
        --nd;
    }
    if (exp10 >= -5 && exp10 < 9) {
        if (exp10 < 0) {
            reds_out_raw(o, "0.");
            for (int i = -1; i > exp10; --i) {
                reds_out_char(o, '0');
            }
            for (int i = 0; i < nd; ++i) {
                reds_out_char(o, dig[i]);
            }
        } else {
            for (int i = 0; i <= exp10; ++i) {
                reds_out_char(o, i < nd ? dig[i] : '0');
            }
            if (nd > exp10 + 1) {
                reds_out_char(o, '.');
                for (int i = exp10 + 1; i < nd; ++i) {
                    reds_out_char(o, dig[i]);
                }
            }
        }
        return;
    }
    reds_out_char(o, dig[0]);
    if (nd > 1) {
        reds_out_char(o, '.');
        for (int i = 1; i < nd; ++i) {
            reds_out_char(o, dig[i]);
        }
    }
    reds_out_char(o, 'e');
    reds_out_i32(o, exp10);
}
