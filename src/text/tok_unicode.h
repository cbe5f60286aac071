/* ds4 — Unicode character classes used by the tokenizer's pre-tokenizer.
 *
 * The official pre-tokenizer regexes (INTERFACES.md 2.4) only ever ask whether
 * a code point is a letter or mark (\p{L}, \p{M}), a number (\p{N}), a
 * punctuation or symbol (\p{P}, \p{S}) or whitespace (\s = White_Space).
 * These five classes are disjoint, so one class per code point is enough.
 * The table (tok_unicode.c) is generated; see its header. */
#ifndef DS4_TEXT_TOK_UNICODE_H
#define DS4_TEXT_TOK_UNICODE_H

#include <stdint.h>

enum ds4_ucls {
    DS4_UCLS_OTHER = 0, /* controls that are not whitespace, format, private use, unassigned */
    DS4_UCLS_LM = 1,    /* \p{L} or \p{M} */
    DS4_UCLS_N = 2,     /* \p{N} */
    DS4_UCLS_PS = 3,    /* \p{P} or \p{S} */
    DS4_UCLS_WS = 4,    /* White_Space (Oniguruma's and tokenizers.js's \s) */
};

/* Class of a Unicode scalar value (anything above U+10FFFF is OTHER). */
int ds4_ucls_lookup(uint32_t cp);

#endif
