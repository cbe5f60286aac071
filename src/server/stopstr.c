/* ds4-server — stop sequences (see stopstr.h). */
#include "server/stopstr.h"

#include <stdlib.h>
#include <string.h>

void srv_stopstr_init(srv_stopstr *s, const char *const *stops, int n) {
    memset(s, 0, sizeof(*s));
    ds4_textbuf_init(&s->pending);
    ds4_textbuf_init(&s->out);
    if (n <= 0) return;
    s->stops = calloc((size_t)n, sizeof(char *));
    s->lens = calloc((size_t)n, sizeof(size_t));
    if (!s->stops || !s->lens) return;
    for (int i = 0; i < n; i++) {
        const size_t l = stops[i] ? strlen(stops[i]) : 0;
        if (!l || !(s->stops[s->n] = strdup(stops[i]))) continue;
        s->lens[s->n++] = l;
        if (l > s->max_len) s->max_len = l;
    }
}

void srv_stopstr_free(srv_stopstr *s) {
    for (int i = 0; i < s->n; i++) free(s->stops[i]);
    free(s->stops);
    free(s->lens);
    ds4_textbuf_free(&s->pending);
    ds4_textbuf_free(&s->out);
    memset(s, 0, sizeof(*s));
}

size_t srv_stopstr_hold(const srv_stopstr *s) { return s->max_len ? s->max_len - 1 : 0; }

/* Earliest occurrence of any stop string in pending, or (size_t)-1. */
static size_t earliest(const srv_stopstr *s) {
    size_t best = (size_t)-1;
    const char *h = s->pending.p;
    const size_t hn = s->pending.n;
    for (int i = 0; i < s->n; i++) {
        const size_t l = s->lens[i];
        for (size_t k = 0; l <= hn && k + l <= hn && k < best; k++)
            if (h[k] == s->stops[i][0] && memcmp(h + k, s->stops[i], l) == 0) {
                best = k;
                break;
            }
    }
    return best;
}

/* Move pending[0..n) to out. */
static void take(srv_stopstr *s, size_t n) {
    ds4_textbuf_clear(&s->out);
    if (!n) return;
    ds4_textbuf_append(&s->out, s->pending.p, n);
    memmove(s->pending.p, s->pending.p + n, s->pending.n - n);
    ds4_textbuf_truncate(&s->pending, s->pending.n - n);
}

const char *srv_stopstr_feed(srv_stopstr *s, const char *p, size_t n, size_t *out_n) {
    ds4_textbuf_clear(&s->out);
    *out_n = 0;
    if (s->hit) return "";
    if (s->n == 0) { /* no stop strings: pass through */
        ds4_textbuf_append(&s->out, p, n);
        *out_n = s->out.n;
        return s->out.p ? s->out.p : "";
    }
    ds4_textbuf_append(&s->pending, p, n);
    const size_t at = earliest(s);
    if (at != (size_t)-1) {
        s->hit = true;
        take(s, at);
        ds4_textbuf_clear(&s->pending);
    } else {
        const size_t hold = srv_stopstr_hold(s);
        size_t cut = s->pending.n > hold ? s->pending.n - hold : 0;
        /* never split a UTF-8 character */
        while (cut > 0 && cut < s->pending.n && ((unsigned char)s->pending.p[cut] & 0xC0) == 0x80) cut--;
        take(s, cut);
    }
    *out_n = s->out.n;
    return s->out.p ? s->out.p : "";
}

const char *srv_stopstr_flush(srv_stopstr *s, size_t *out_n) {
    ds4_textbuf_clear(&s->out);
    *out_n = 0;
    if (s->hit) return "";
    take(s, s->pending.n);
    *out_n = s->out.n;
    return s->out.p ? s->out.p : "";
}
