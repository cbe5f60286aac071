/* ds4 — growable byte buffer used by the text layer (renderer, DSML parser).
 *
 * The buffer is always NUL-terminated (p[n] == 0 once anything was appended),
 * so it can be handed to printf-style code, but it may hold NUL bytes inside:
 * n is the authoritative length.  Allocation failure is sticky: the first
 * failed append sets `oom`, later appends do nothing, and callers check once
 * at the end instead of after every append. */
#ifndef DS4_TEXT_CHAT_BUF_H
#define DS4_TEXT_CHAT_BUF_H

#include <stddef.h>

typedef struct ds4_textbuf {
    char *p;     /* bytes (NUL-terminated), NULL while empty */
    size_t n;    /* length in bytes, not counting the terminator */
    size_t cap;  /* allocated bytes */
    int oom;     /* an append failed; the content is incomplete */
} ds4_textbuf;

void ds4_textbuf_init(ds4_textbuf *b);
void ds4_textbuf_free(ds4_textbuf *b);
/* Forget the content, keep the allocation (and clear the oom flag). */
void ds4_textbuf_clear(ds4_textbuf *b);
/* Make room for `extra` more bytes; 0 ok, -1 out of memory. */
int ds4_textbuf_reserve(ds4_textbuf *b, size_t extra);
/* Append bytes; each returns 0, or -1 when out of memory (oom is then set). */
int ds4_textbuf_append(ds4_textbuf *b, const void *s, size_t n);
int ds4_textbuf_puts(ds4_textbuf *b, const char *s);
int ds4_textbuf_putc(ds4_textbuf *b, char c);
/* Shrink to the first n bytes (n <= b->n). */
void ds4_textbuf_truncate(ds4_textbuf *b, size_t n);
/* Hand the bytes to the caller (malloc'd, NUL-terminated, never NULL unless
 * out of memory) and leave the buffer empty.  *len gets the length. */
char *ds4_textbuf_detach(ds4_textbuf *b, size_t *len);

#endif
