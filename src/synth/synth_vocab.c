/* ds4 — vocabulary for synthetic models.
 *
 * With the real tokenizer data (.tok, from the DeepSeek tokenizer) and the
 * published vocabulary size, the model gets the real vocabulary and merges.
 * A smaller vocabulary is built as: BOS, EOS, the 256 byte-level tokens, the
 * five other protocol tokens, then the real merges in rank order whose two
 * sides are already in the vocabulary, until it is full; so a tiny model still
 * tokenizes any text (byte fallback) with real BPE pieces. Without tokenizer
 * data the rest is filled with placeholder tokens. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "synth/synth_internal.h"
#include "text/tokdata.h"

/* ------------------------------------------------------------------ string set */

typedef struct strset {
    char **keys;
    size_t cap, n;
} strset;

static uint64_t fnv(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static bool set_has(const strset *s, const char *k, size_t n) {
    for (size_t i = fnv(k, n) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
        if (!s->keys[i]) return false;
        if (strlen(s->keys[i]) == n && memcmp(s->keys[i], k, n) == 0) return true;
    }
}

static void set_add(strset *s, char *k) {
    for (size_t i = fnv(k, strlen(k)) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
        if (!s->keys[i]) {
            s->keys[i] = k;
            s->n++;
            return;
        }
    }
}

/* ------------------------------------------------------------------ vocab building */

static void vocab_push(synth_vocab *v, const char *s, size_t n) {
    char *c = malloc(n + 1);
    memcpy(c, s, n);
    c[n] = 0;
    v->tokens[v->n_tokens++] = c;
}

static const char *const PROTOCOL[] = {"<｜User｜>", "<｜Assistant｜>", "<think>", "</think>", "｜DSML｜"};

/* GPT-2 byte-to-unicode: printable bytes map to themselves, the other 68 to 256+. */
static size_t byte_token(int b, char out[4]) {
    unsigned cp;
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) {
        cp = (unsigned)b;
    } else {
        unsigned n = 0;
        for (int x = 0; x < b; x++)
            if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) n++;
        cp = 256 + n;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xc0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
}

int synth_vocab_build(synth_vocab *v, int n_vocab, const char *tokdata_path, ds4_err *err) {
    memset(v, 0, sizeof(*v));
    ds4_tokdata td;
    memset(&td, 0, sizeof(td));
    if (tokdata_path && ds4_tokdata_load(tokdata_path, &td, err) != 0) return ds4_err_prefix(err, "tokenizer data");
    v->tokens = calloc((size_t)n_vocab, sizeof(char *));
    v->merges = calloc(td.n_merges ? td.n_merges : 1, sizeof(char *));
    if (!v->tokens || !v->merges) {
        ds4_tokdata_free(&td);
        return ds4_errf(err, "out of memory");
    }
    if (tokdata_path && (size_t)n_vocab == td.n_tokens) {
        /* the real vocabulary, unchanged */
        for (size_t i = 0; i < td.n_tokens; i++) vocab_push(v, td.tokens[i].ptr, td.tokens[i].len);
        for (size_t i = 0; i < td.n_merges; i++) {
            char *m = malloc(td.merges[i].len + 1);
            memcpy(m, td.merges[i].ptr, td.merges[i].len);
            m[td.merges[i].len] = 0;
            v->merges[v->n_merges++] = m;
        }
        ds4_tokdata_free(&td);
        return 0;
    }
    if (n_vocab < 263) {
        ds4_tokdata_free(&td);
        return ds4_errf(err, "vocabulary of %d tokens is too small: BOS, EOS, 256 byte tokens and 5 protocol tokens need 263",
                        n_vocab);
    }
    strset set = {0};
    set.cap = 1;
    while (set.cap < (size_t)n_vocab * 2 + 16) set.cap <<= 1;
    set.keys = calloc(set.cap, sizeof(char *));
    vocab_push(v, "<｜begin▁of▁sentence｜>", strlen("<｜begin▁of▁sentence｜>"));
    vocab_push(v, "<｜end▁of▁sentence｜>", strlen("<｜end▁of▁sentence｜>"));
    for (int b = 0; b < 256; b++) {
        char tb[4];
        vocab_push(v, tb, byte_token(b, tb));
    }
    for (size_t i = 0; i < sizeof(PROTOCOL) / sizeof(PROTOCOL[0]); i++) vocab_push(v, PROTOCOL[i], strlen(PROTOCOL[i]));
    for (int i = 0; i < v->n_tokens; i++) set_add(&set, v->tokens[i]);
    for (size_t mi = 0; mi < td.n_merges && v->n_tokens < n_vocab; mi++) {
        const char *m = td.merges[mi].ptr;
        const size_t len = td.merges[mi].len;
        const char *sp = memchr(m, ' ', len);
        if (!sp) continue;
        const size_t la = (size_t)(sp - m), lb = len - la - 1;
        if (!set_has(&set, m, la) || !set_has(&set, sp + 1, lb)) continue;
        char joined[512];
        if (la + lb >= sizeof(joined)) continue;
        memcpy(joined, m, la);
        memcpy(joined + la, sp + 1, lb);
        if (set_has(&set, joined, la + lb)) continue;
        vocab_push(v, joined, la + lb);
        set_add(&set, v->tokens[v->n_tokens - 1]);
        char *mc = malloc(len + 1);
        memcpy(mc, m, len);
        mc[len] = 0;
        v->merges[v->n_merges++] = mc;
    }
    while (v->n_tokens < n_vocab) {
        char ph[64];
        snprintf(ph, sizeof(ph), "<｜place▁holder▁no▁%d｜>", v->n_tokens);
        vocab_push(v, ph, strlen(ph));
    }
    free(set.keys);
    ds4_tokdata_free(&td);
    return 0;
}

void synth_vocab_free(synth_vocab *v) {
    for (int i = 0; i < v->n_tokens; i++) free(v->tokens[i]);
    for (int i = 0; i < v->n_merges; i++) free(v->merges[i]);
    free(v->tokens);
    free(v->merges);
    memset(v, 0, sizeof(*v));
}
