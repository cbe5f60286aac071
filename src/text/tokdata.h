/* ds4 — reader for the compact tokenizer data file (.tok).
 *
 * scripts/export-tokenizer.js writes the DeepSeek V4 vocabulary and merges in
 * this format (build/tokenizer/deepseek-v4.tok); ds4-synth copies it into
 * synthetic GGUFs and the tokenizer tests load it directly.
 *
 * Layout, all integers u32 little-endian:
 *   "DS4TOK1\0"                          8-byte magic
 *   n_tokens, then n_tokens x (len, len bytes)     token strings, id = index
 *   n_merges, then n_merges x (len, len bytes)     merge strings "LEFT RIGHT", rank = index
 * Nothing may follow the last merge.
 *
 * The reader validates every count and length against the file size before
 * using it, so a truncated or corrupt file gives an error, never a crash or a
 * huge allocation. */
#ifndef DS4_TEXT_TOKDATA_H
#define DS4_TEXT_TOKDATA_H

#include <stddef.h>
#include <stdint.h>

#include "text/tokenizer.h"
#include "util/err.h"

#define DS4_TOKDATA_MAGIC "DS4TOK1" /* 7 chars + the terminating NUL = 8 bytes */

typedef struct ds4_tokdata {
    ds4_str *tokens; /* n_tokens strings pointing into blob (not NUL-terminated) */
    size_t n_tokens;
    ds4_str *merges; /* n_merges strings pointing into blob */
    size_t n_merges;
    unsigned char *blob; /* private: the file contents */
    size_t blob_len;
} ds4_tokdata;

/* Read and validate a .tok file. On failure *out is left empty (safe to
 * free) and err says what is wrong and at which byte offset. */
int ds4_tokdata_load(const char *path, ds4_tokdata *out, ds4_err *err);

/* The same from memory; the bytes are copied, so data may be freed after. */
int ds4_tokdata_parse(const void *data, size_t len, ds4_tokdata *out, ds4_err *err);

void ds4_tokdata_free(ds4_tokdata *td);

/* Convenience: load a .tok file and build a tokenizer from it. */
ds4_tokenizer *ds4_tokenizer_load_tok(const char *path, ds4_err *err);

#endif
