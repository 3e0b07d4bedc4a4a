/* unicode.h: the UTF-8 primitives of llama.cpp's unicode.cpp (c392e509) that
 * the tokenizer must reproduce byte for byte, including how they treat
 * malformed input, and the GPT-2 byte-to-unicode alphabet. */
#ifndef CS_UNICODE_H
#define CS_UNICODE_H

#include <stddef.h>
#include <stdint.h>

#define UNICODE_REPLACEMENT 0xFFFDu

/* Length of the UTF-8 sequence announced by its first byte, from the high
 * nibble only (continuation and invalid lead bytes give 1, F8..FF give 4),
 * exactly like llama.cpp's unicode_len_utf8. Callers clamp it to the bytes
 * that remain. */
size_t unicode_len_utf8(uint8_t lead);

/* Decode one code point of s[*off, len) (*off < len) like llama.cpp's
 * unicode_cpts_from_utf8: a lead byte must be followed by the right number of
 * continuation bytes (overlong forms and surrogates are accepted, as
 * there); anything else yields U+FFFD and consumes one byte. Code points
 * above U+10FFFF (F4 90.. to F7 ..) also yield U+FFFD, consuming all four
 * bytes: llama.cpp throws on them later (documented divergence).
 * Advances *off by at least 1. O(1). */
uint32_t unicode_cpt_from_utf8(const char *s, size_t len, size_t *off);

/* Encode cpt (<= 0x10FFFF; surrogates are encoded as if valid) into out;
 * returns the byte count 1..4. */
size_t unicode_cpt_to_utf8(uint32_t cpt, char out[4]);

/* GPT-2's bytes_to_unicode(): byte b is shown as code point
 * unicode_byte_to_cpt(b) (printable Latin-1 bytes map to themselves, the
 * other 68 to U+0100..U+0143 in byte order). */
uint32_t unicode_byte_to_cpt(uint8_t b);
/* The inverse: the byte for cpt, or -1 when cpt is not in the alphabet. */
int32_t unicode_cpt_to_byte(uint32_t cpt);

#endif /* CS_UNICODE_H */
