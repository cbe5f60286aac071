/* ds4 — byte-level BPE tokenizer of DeepSeek V4 (INTERFACES.md section 2).
 *
 * Encoding: text is split at the seven protocol token strings (when special
 * recognition is on), each span is cut into pieces by the official
 * pre-tokenizer (three regex splits, reproduced exactly over Unicode class
 * tables, see tok_encode.c), each piece's bytes are mapped to the GPT-2 byte
 * alphabet and merged by BPE rank. Decoding maps tokens back to bytes.
 *
 * Arbitrary bytes are accepted, not only valid UTF-8, and every input round
 * trips: ds4_detokenize(ds4_tokenize(x)) == x for any byte string x with
 * special recognition off (with it on, too, since the seven special strings
 * decode to themselves). Invalid UTF-8: every byte that is not part of a
 * well-formed UTF-8 sequence is classified like U+FFFD, the character the
 * official tokenizer would see in its place (a symbol, \p{S}), so the piece
 * boundaries are those the official tokenizer draws on the lossily decoded
 * text; the piece itself keeps the original bytes, which BPE then encodes
 * (at worst as single-byte tokens, which every vocabulary must have).
 *
 * A tokenizer is immutable once created: any number of threads may use one
 * tokenizer at the same time. */
#ifndef DS4_TEXT_TOKENIZER_H
#define DS4_TEXT_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

/* A byte string that is not NUL-terminated. */
typedef struct ds4_str {
    const char *ptr;
    size_t len;
} ds4_str;

/* Growable vector of token ids. Zero-initialize; free with ds4_tokvec_free. */
typedef struct ds4_tokvec {
    int32_t *ids;
    size_t n;
    size_t cap;
} ds4_tokvec;

/* Append one id; -1 with err on allocation failure. */
int ds4_tokvec_push(ds4_tokvec *v, int32_t id, ds4_err *err);
void ds4_tokvec_free(ds4_tokvec *v);

/* Ids of the seven protocol tokens, resolved by exact string at creation. */
typedef struct ds4_tok_specials {
    int32_t bos;       /* <｜begin▁of▁sentence｜> */
    int32_t eos;       /* <｜end▁of▁sentence｜> */
    int32_t user;      /* <｜User｜> */
    int32_t assistant; /* <｜Assistant｜> */
    int32_t think;     /* <think> */
    int32_t think_end; /* </think> */
    int32_t dsml;      /* ｜DSML｜ */
} ds4_tok_specials;

typedef struct ds4_tokenizer ds4_tokenizer;

/* ---------------------------------------------------------------- creation */

/* Build a tokenizer from token strings (id = index, byte-level encoded form,
 * e.g. "Ġthe") and merge strings ("LEFT RIGHT", rank = index). The strings are
 * copied. Fails (NULL, err filled) when a protocol token is missing (the
 * message names it), when one of the 256 single-byte tokens is missing, or
 * when a merge string is not two strings joined by one space. Merges whose
 * sides or result are not in the vocabulary are ignored, so small synthetic
 * vocabularies work. With duplicate token strings the lowest id wins. */
ds4_tokenizer *ds4_tokenizer_create(const ds4_str *tokens, size_t n_tokens, const ds4_str *merges, size_t n_merges,
                                    ds4_err *err);

/* From a GGUF's tokenizer.ggml.tokens and tokenizer.ggml.merges (tok_gguf.c;
 * the gguf_file may be closed afterwards). */
struct gguf_file;
ds4_tokenizer *ds4_tokenizer_from_gguf(const struct gguf_file *f, ds4_err *err);

void ds4_tokenizer_free(ds4_tokenizer *tok);

/* ---------------------------------------------------------------- queries */

size_t ds4_tokenizer_n_vocab(const ds4_tokenizer *tok);
const ds4_tok_specials *ds4_tokenizer_specials(const ds4_tokenizer *tok);

/* Id of the token whose vocabulary string is exactly s[0..len), or -1. */
int32_t ds4_tokenizer_find(const ds4_tokenizer *tok, const char *s, size_t len);

/* The vocabulary string of id (byte-level form, "Ġthe"); NULL if id is out
 * of range. Not NUL-terminated. */
const char *ds4_token_str(const ds4_tokenizer *tok, int32_t id, size_t *len);

/* The bytes a token stands for (INTERFACES.md 2.8): the string itself if it
 * contains U+FF5C (the <｜…｜> specials and ｜DSML｜), else its code points
 * mapped back through the GPT-2 byte table (code points outside the table
 * are dropped). May be an incomplete UTF-8 sequence. NULL if id is out of
 * range. Not NUL-terminated. */
const char *ds4_token_text(const ds4_tokenizer *tok, int32_t id, size_t *len);

/* ---------------------------------------------------------------- encoding */

/* Tokenize text[0..len) and APPEND the ids to out. special: recognize the
 * seven protocol strings as single tokens and tokenize the spans between
 * them independently (INTERFACES.md 2.7); otherwise the whole text is plain
 * text. Returns 0, or -1 with err on allocation failure or a text over 2 GiB
 * (out is then left as it was). */
int ds4_tokenize(const ds4_tokenizer *tok, const char *text, size_t len, bool special, ds4_tokvec *out,
                 ds4_err *err);

/* ---------------------------------------------------------------- decoding */

/* Concatenated token_text of ids[0..n) into a new NUL-terminated buffer
 * (free() it; *out_len excludes the NUL). Out-of-range ids are an error. */
int ds4_detokenize(const ds4_tokenizer *tok, const int32_t *ids, size_t n, char **out, size_t *out_len,
                   ds4_err *err);

/* Number of bytes at the end of s[0..n) that form the beginning of a
 * well-formed UTF-8 sequence still missing bytes (0..3). Bytes that can never
 * become valid UTF-8 are not counted: they are to be passed on as they are. */
size_t ds4_utf8_incomplete_tail(const char *s, size_t n);

/* Streaming detokenizer: feed tokens one at a time, get bytes that never end
 * inside a UTF-8 sequence that may still complete. An incomplete trailing
 * sequence is held back until the next token completes it; if the next token
 * shows it can never complete, it is emitted as it is (so output bytes always
 * equal the concatenated token texts). flush() emits whatever is held back. */
typedef struct ds4_detok_stream {
    const ds4_tokenizer *tok;
    char *buf;        /* output scratch: longest token text + 3 held-back bytes */
    char held[4];     /* incomplete trailing sequence held back (at most 3 bytes) */
    size_t n_held;
} ds4_detok_stream;

int ds4_detok_init(ds4_detok_stream *s, const ds4_tokenizer *tok, ds4_err *err);
/* Returns the bytes ready to emit (*len may be 0); valid until the next call.
 * An out-of-range id contributes no bytes. */
const char *ds4_detok_push(ds4_detok_stream *s, int32_t id, size_t *len);
const char *ds4_detok_flush(ds4_detok_stream *s, size_t *len);
void ds4_detok_free(ds4_detok_stream *s);

#endif
