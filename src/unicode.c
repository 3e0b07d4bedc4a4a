/* unicode.c: see unicode.h. */
#include "unicode.h"

size_t unicode_len_utf8(uint8_t lead) {
    static const uint8_t lookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lookup[lead >> 4];
}

static int is_cont(const char *s, size_t len, size_t i) {
    return i < len && ((uint8_t)s[i] & 0xC0u) == 0x80u;
}

uint32_t unicode_cpt_from_utf8(const char *s, size_t len, size_t *off) {
    const size_t i = *off;
    const uint32_t c0 = (uint8_t)s[i];
    if (!(c0 & 0x80u)) {
        *off = i + 1;
        return c0;
    }
    if ((c0 & 0xE0u) == 0xC0u) {
        if (is_cont(s, len, i + 1)) {
            *off = i + 2;
            return ((c0 & 0x1Fu) << 6) | ((uint8_t)s[i + 1] & 0x3Fu);
        }
    } else if ((c0 & 0xF0u) == 0xE0u) {
        if (is_cont(s, len, i + 1) && is_cont(s, len, i + 2)) {
            *off = i + 3;
            return ((c0 & 0x0Fu) << 12) | (((uint8_t)s[i + 1] & 0x3Fu) << 6) |
                   ((uint8_t)s[i + 2] & 0x3Fu);
        }
    } else if ((c0 & 0xF8u) == 0xF0u) {
        if (is_cont(s, len, i + 1) && is_cont(s, len, i + 2) && is_cont(s, len, i + 3)) {
            const uint32_t cpt = ((c0 & 0x07u) << 18) | (((uint8_t)s[i + 1] & 0x3Fu) << 12) |
                                 (((uint8_t)s[i + 2] & 0x3Fu) << 6) | ((uint8_t)s[i + 3] & 0x3Fu);
            *off = i + 4;
            return cpt <= 0x10FFFFu ? cpt : UNICODE_REPLACEMENT;
        }
    }
    *off = i + 1; /* continuation byte as lead, F8..FF, or truncated sequence */
    return UNICODE_REPLACEMENT;
}

size_t unicode_cpt_to_utf8(uint32_t cpt, char out[4]) {
    if (cpt <= 0x7Fu) {
        out[0] = (char)cpt;
        return 1;
    }
    if (cpt <= 0x7FFu) {
        out[0] = (char)(0xC0u | (cpt >> 6));
        out[1] = (char)(0x80u | (cpt & 0x3Fu));
        return 2;
    }
    if (cpt <= 0xFFFFu) {
        out[0] = (char)(0xE0u | (cpt >> 12));
        out[1] = (char)(0x80u | ((cpt >> 6) & 0x3Fu));
        out[2] = (char)(0x80u | (cpt & 0x3Fu));
        return 3;
    }
    out[0] = (char)(0xF0u | ((cpt >> 18) & 0x07u));
    out[1] = (char)(0x80u | ((cpt >> 12) & 0x3Fu));
    out[2] = (char)(0x80u | ((cpt >> 6) & 0x3Fu));
    out[3] = (char)(0x80u | (cpt & 0x3Fu));
    return 4;
}

/* Printable bytes keep their code point: '!'..'~', 0xA1..0xAC, 0xAE..0xFF.
 * The 68 others, in byte order, are 0x00..0x20 -> U+0100..U+0120,
 * 0x7F..0xA0 -> U+0121..U+0142 and 0xAD -> U+0143. */
uint32_t unicode_byte_to_cpt(uint8_t b) {
    if (b <= 0x20u) return 0x100u + b;
    if (b >= 0x7Fu && b <= 0xA0u) return 0x121u + (b - 0x7Fu);
    if (b == 0xADu) return 0x143u;
    return b;
}

int32_t unicode_cpt_to_byte(uint32_t cpt) {
    if (cpt <= 0xFFu) {
        const int printable =
            (cpt >= 0x21u && cpt <= 0x7Eu) || (cpt >= 0xA1u && cpt <= 0xACu) || cpt >= 0xAEu;
        return printable ? (int32_t)cpt : -1;
    }
    if (cpt <= 0x120u) return (int32_t)(cpt - 0x100u);
    if (cpt <= 0x142u) return (int32_t)(0x7Fu + (cpt - 0x121u));
    if (cpt == 0x143u) return 0xAD;
    return -1;
}
