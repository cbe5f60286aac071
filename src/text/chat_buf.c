/* ds4 — growable byte buffer (see chat_buf.h). */
#include "text/chat_buf.h"

#include <stdlib.h>
#include <string.h>

void ds4_textbuf_init(ds4_textbuf *b) { memset(b, 0, sizeof(*b)); }

void ds4_textbuf_free(ds4_textbuf *b) {
    free(b->p);
    memset(b, 0, sizeof(*b));
}

void ds4_textbuf_clear(ds4_textbuf *b) {
    b->n = 0;
    b->oom = 0;
    if (b->p) b->p[0] = 0;
}

int ds4_textbuf_reserve(ds4_textbuf *b, size_t extra) {
    if (b->oom) return -1;
    /* +1 keeps room for the terminator. */
    if (extra > (size_t)-1 - b->n - 1) {
        b->oom = 1;
        return -1;
    }
    size_t need = b->n + extra + 1;
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) cap = cap > (size_t)-1 / 2 ? need : cap * 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = 1;
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

int ds4_textbuf_append(ds4_textbuf *b, const void *s, size_t n) {
    if (ds4_textbuf_reserve(b, n) != 0) return -1;
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

int ds4_textbuf_puts(ds4_textbuf *b, const char *s) { return ds4_textbuf_append(b, s, strlen(s)); }

int ds4_textbuf_putc(ds4_textbuf *b, char c) { return ds4_textbuf_append(b, &c, 1); }

void ds4_textbuf_truncate(ds4_textbuf *b, size_t n) {
    if (n < b->n) {
        b->n = n;
        b->p[n] = 0;
    }
}

char *ds4_textbuf_detach(ds4_textbuf *b, size_t *len) {
    if (b->oom) {
        ds4_textbuf_free(b);
        if (len) *len = 0;
        return NULL;
    }
    if (!b->p && ds4_textbuf_reserve(b, 0) != 0) return NULL;
    char *p = b->p;
    p[b->n] = 0;
    if (len) *len = b->n;
    memset(b, 0, sizeof(*b));
    return p;
}
