/* ds4 — the small amount of JSON the DSML layer needs, without a JSON library.
 *
 * Tool-call arguments must keep their exact spelling (number text such as
 * `1.50` or `1e3`, key order, duplicate keys, `\u` escapes), so they are never
 * parsed into a tree and printed back: values are validated and copied as
 * text.  Three tools live here:
 *
 *   - UTF-8 sequence checks, used to hold back incomplete characters while
 *     streaming and to replace invalid bytes when producing JSON;
 *   - JSON string escaping in the exact form of INTERFACES.md §4.7;
 *   - an incremental JSON validator + minifier (one byte at a time, so the
 *     streaming DSML parser can forward `string="false"` values as they are
 *     generated) and, for complete texts, an object-member walker and a
 *     string decoder (used by the canonical DSML renderer, §4.8). */
#ifndef DS4_TEXT_DSML_JSON_H
#define DS4_TEXT_DSML_JSON_H

#include <stddef.h>

#include "text/chat_buf.h"

/* Maximum nesting of arrays/objects accepted (same limit as the server's
 * request reader, §6.3). */
#define DS4_JSON_MAX_DEPTH 256

/* ------------------------------------------------------------------ UTF-8 */

/* Classify the UTF-8 sequence that starts at s (n > 0 bytes available):
 *   > 0  a complete, valid sequence of that many bytes;
 *   0    a valid but incomplete prefix (more bytes are needed to decide);
 *   < 0  invalid: the first -r bytes form the maximal invalid part, which a
 *        caller replaces by one U+FFFD and skips. */
int ds4_json_utf8_seq(const char *s, size_t n);

/* Number of bytes at the end of s[0..n) that form a valid but incomplete
 * UTF-8 sequence (0..3): the bytes a streamer must hold back. */
size_t ds4_json_utf8_hold(const char *s, size_t n);

/* ------------------------------------------------------ string escaping */

/* Append s[0..n) JSON-escaped (without the surrounding quotes) exactly as
 * §4.7 says: `"` and `\` are backslash-escaped, \n \r \t use the short forms,
 * other bytes below 0x20 become \u00XX; `/`, DEL and non-ASCII stay literal.
 * Invalid UTF-8 is replaced by U+FFFD so the output is always valid JSON.
 * The input must not end inside an incomplete UTF-8 sequence unless it
 * really ends there (it is then replaced too). Returns 0 or -1 (OOM). */
int ds4_json_escape(ds4_textbuf *out, const char *s, size_t n);

/* --------------------------------------- incremental validator/minifier */

typedef struct ds4_json_stream {
    unsigned char stack[DS4_JSON_MAX_DEPTH]; /* '{' or '[' per open container */
    int depth;
    int state;  /* internal (J_* in dsml_json.c) */
    int sub;    /* number sub-state, literal index or escape progress */
    int is_key; /* the string being read is an object key */
    const char *lit; /* literal being matched (true/false/null) */
    int error;  /* sticky: the input is not valid JSON */
    int any;    /* a non-whitespace byte was seen */
} ds4_json_stream;

void ds4_json_stream_init(ds4_json_stream *j);

/* Feed one byte.  Bytes that belong in the minified text (everything except
 * whitespace outside strings) are appended to `out` (may be NULL); raw control
 * bytes inside strings, which strict JSON forbids, are appended in escaped
 * form instead (a repair: models sometimes write a literal newline inside a
 * JSON string).  Returns
 *    0  the byte was consumed;
 *    1  a complete top-level value had already been read and this
 *       non-whitespace byte cannot follow it (it is not consumed; the text as
 *       a whole is then invalid);
 *   -1  the input is invalid (sticky; later calls return -1). */
int ds4_json_stream_byte(ds4_json_stream *j, unsigned char c, ds4_textbuf *out);

/* Currently inside a JSON string (value or key)? */
int ds4_json_stream_in_string(const ds4_json_stream *j);

/* Has exactly one complete value been read (trailing whitespace allowed)?
 * A number at the very end counts as complete. */
int ds4_json_stream_complete(const ds4_json_stream *j);

/* ------------------------------------------------- complete JSON texts */

/* Is s[0..n) one valid JSON value (surrounding whitespace allowed)? */
int ds4_json_valid(const char *s, size_t n);

/* Minify a valid JSON text: whitespace outside strings is removed, every
 * other byte is kept verbatim (number spelling, escapes).  0 or -1. */
int ds4_json_minify(ds4_textbuf *out, const char *s, size_t n);

/* Decode the body of a JSON string (the bytes between the quotes, escapes
 * still in place) to UTF-8 bytes.  Surrogate pairs are combined; a lone
 * surrogate becomes U+FFFD; \u0000 becomes a NUL byte.  0, or -1 on OOM or a
 * malformed escape. */
int ds4_json_string_decode(ds4_textbuf *out, const char *s, size_t n);

/* Walk the members of a JSON object, in text order (duplicates included). */
typedef struct ds4_json_object_iter {
    const char *s;
    size_t n;
    size_t pos;
} ds4_json_object_iter;

/* Start iterating; returns 0 if s[0..n) is a valid JSON text whose value is
 * an object, -1 otherwise (not JSON, or JSON but not an object). */
int ds4_json_object_begin(ds4_json_object_iter *it, const char *s, size_t n);

/* Next member: *key and *key_len = the key's string body (still escaped, without
 * quotes); *val and *val_len = the raw value text (not minified).  Returns 1 for
 * a member, 0 at the end. */
int ds4_json_object_next(ds4_json_object_iter *it, const char **key, size_t *key_len, const char **val,
                         size_t *val_len);

#endif
