/* ds4 — tokenizer tables (vocabulary, merges, byte alphabet, specials) and
 * decoding. Encoding lives in tok_encode.c. See tokenizer.h. */
#include "text/tokenizer.h"

#include <stdlib.h>
#include <string.h>

#include "text/tok_internal.h"

/* The seven protocol strings, in the fixed recognition order of
 * INTERFACES.md 2.7. U+FF5C is \357\275\234 (EF BD 9C), U+2581 is \342\226\201
 * (E2 96 81); octal escapes, because a hex escape would swallow the letters
 * that follow. */
static const char *const SPECIAL_NAMES[DS4_TOK_N_SPECIAL] = {
    "BOS", "EOS", "User", "Assistant", "<think>", "</think>", "DSML",
};
static const char *const SPECIAL_STRINGS[DS4_TOK_N_SPECIAL] = {
    "<\357\275\234begin\342\226\201of\342\226\201sentence\357\275\234>",
    "<\357\275\234end\342\226\201of\342\226\201sentence\357\275\234>",
    "<\357\275\234User\357\275\234>",
    "<\357\275\234Assistant\357\275\234>",
    "<think>",
    "</think>",
    "\357\275\234DSML\357\275\234",
};

/* ================================================================ token vectors */

int ds4_tokvec_push(ds4_tokvec *v, int32_t id, ds4_err *err) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 256;
        int32_t *p = realloc(v->ids, cap * sizeof(*p));
        if (!p) return ds4_errf(err, "out of memory growing a token vector to %zu ids", cap);
        v->ids = p;
        v->cap = cap;
    }
    v->ids[v->n++] = id;
    return 0;
}

void ds4_tokvec_free(ds4_tokvec *v) {
    if (!v) return;
    free(v->ids);
    v->ids = NULL;
    v->n = v->cap = 0;
}

/* ================================================================ GPT-2 byte alphabet */

/* bytes_to_unicode: printable bytes 33-126, 161-172, 174-255 stand for
 * themselves; the other 68 bytes map, in increasing order, to 256.. 323. */
static uint32_t byte_to_cp(unsigned b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) return b;
    unsigned k = 0;
    for (unsigned x = 0; x < b; x++)
        if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) k++;
    return 256 + k;
}

static size_t utf8_put(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    out[0] = (char)(0xE0 | cp >> 12);
    out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
}

/* Lenient decoder for vocabulary strings: returns the code point at s[*i]
 * and advances; a malformed byte decodes as U+FFFD (which maps to no byte). */
static uint32_t utf8_get_lenient(const unsigned char *s, size_t n, size_t *i) {
    unsigned c = s[*i];
    if (c < 0x80) {
        (*i)++;
        return c;
    }
    size_t need = (c >= 0xC2 && c <= 0xDF) ? 1 : (c >= 0xE0 && c <= 0xEF) ? 2 : (c >= 0xF0 && c <= 0xF4) ? 3 : 0;
    if (need == 0 || n - *i <= need) {
        (*i)++;
        return 0xFFFD;
    }
    uint32_t cp = c & (0x3Fu >> need);
    for (size_t k = 1; k <= need; k++) {
        unsigned d = s[*i + k];
        if ((d & 0xC0) != 0x80) {
            (*i)++;
            return 0xFFFD;
        }
        cp = cp << 6 | (d & 0x3F);
    }
    *i += need + 1;
    return cp;
}

/* ================================================================ string index */

static uint64_t str_hash(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

static const char *tok_str(const ds4_tokenizer *t, size_t id, size_t *len) {
    *len = t->str_off[id + 1] - t->str_off[id];
    return t->strs + t->str_off[id];
}

int32_t ds4_tokenizer_find(const ds4_tokenizer *t, const char *s, size_t len) {
    uint64_t hash = str_hash(s, len);
    uint32_t tag = (uint32_t)(hash >> 32);
    for (uint64_t h = hash & t->str_index_mask;; h = (h + 1) & t->str_index_mask) {
        int32_t id = t->str_index[h].id;
        if (id < 0) return -1;
        if (t->str_index[h].tag != tag) continue;
        size_t n;
        const char *p = tok_str(t, (size_t)id, &n);
        if (n == len && memcmp(p, s, len) == 0) return id;
    }
}

/* ================================================================ creation */

/* Copy the vocabulary and index it by string (the lowest id wins for a
 * duplicated string). */
static int build_vocab(ds4_tokenizer *t, const ds4_str *tokens, size_t n, ds4_err *err) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (tokens[i].len > UINT32_MAX - total)
            return ds4_errf(err, "the vocabulary strings exceed 4 GiB in total");
        total += tokens[i].len;
    }
    t->strs = malloc(total ? total : 1);
    t->str_off = malloc((n + 1) * sizeof(*t->str_off));
    uint64_t cap = 1024;
    while (cap < 2 * (uint64_t)n) cap *= 2;
    t->str_index = malloc(cap * sizeof(*t->str_index));
    if (!t->strs || !t->str_off || !t->str_index) return ds4_errf(err, "out of memory for the vocabulary");
    t->str_index_mask = cap - 1;
    for (uint64_t i = 0; i < cap; i++) t->str_index[i] = (struct ds4_str_slot){0, -1};

    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        t->str_off[i] = (uint32_t)off;
        if (tokens[i].len) memcpy(t->strs + off, tokens[i].ptr, tokens[i].len);
        off += tokens[i].len;
    }
    t->str_off[n] = (uint32_t)off;
    t->n_vocab = n;

    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *s = tok_str(t, i, &len);
        if (ds4_tokenizer_find(t, s, len) >= 0) continue; /* duplicate: keep the lower id */
        uint64_t hash = str_hash(s, len);
        uint64_t h = hash & t->str_index_mask;
        while (t->str_index[h].id >= 0) h = (h + 1) & t->str_index_mask;
        t->str_index[h] = (struct ds4_str_slot){(uint32_t)(hash >> 32), (int32_t)i};
    }
    return 0;
}

/* Decoded bytes of every token (INTERFACES.md 2.8), computed once. */
static int build_texts(ds4_tokenizer *t, ds4_err *err) {
    int16_t cp_to_byte[324]; /* the whole GPT-2 alphabet is below U+0144 */
    for (size_t i = 0; i < 324; i++) cp_to_byte[i] = -1;
    for (unsigned b = 0; b < 256; b++) cp_to_byte[byte_to_cp(b)] = (int16_t)b;

    /* Decoded text is never longer than the string itself. */
    size_t total = t->str_off[t->n_vocab];
    t->texts = malloc(total ? total : 1);
    t->text_off = malloc((t->n_vocab + 1) * sizeof(*t->text_off));
    if (!t->texts || !t->text_off) return ds4_errf(err, "out of memory for the token texts");

    size_t off = 0;
    t->max_text = 0;
    for (size_t id = 0; id < t->n_vocab; id++) {
        size_t len;
        const char *s = tok_str(t, id, &len);
        t->text_off[id] = (uint32_t)off;
        bool verbatim = false;
        for (size_t i = 0; i + 2 < len && !verbatim; i++)
            verbatim = (unsigned char)s[i] == 0xEF && (unsigned char)s[i + 1] == 0xBD && (unsigned char)s[i + 2] == 0x9C;
        if (verbatim) {
            memcpy(t->texts + off, s, len);
            off += len;
        } else {
            for (size_t i = 0; i < len;) {
                uint32_t cp = utf8_get_lenient((const unsigned char *)s, len, &i);
                if (cp < 324 && cp_to_byte[cp] >= 0) t->texts[off++] = (char)cp_to_byte[cp];
            }
        }
        size_t tl = off - t->text_off[id];
        if (tl > t->max_text) t->max_text = tl;
    }
    t->text_off[t->n_vocab] = (uint32_t)off;
    return 0;
}

static int build_specials(ds4_tokenizer *t, ds4_err *err) {
    int32_t *dst[DS4_TOK_N_SPECIAL] = {&t->sp.bos,   &t->sp.eos,       &t->sp.user, &t->sp.assistant,
                                       &t->sp.think, &t->sp.think_end, &t->sp.dsml};
    for (int k = 0; k < DS4_TOK_N_SPECIAL; k++) {
        const char *s = SPECIAL_STRINGS[k];
        int32_t id = ds4_tokenizer_find(t, s, strlen(s));
        if (id < 0)
            return ds4_errf(err, "the vocabulary has no %s token \"%s\" (every DeepSeek V4 protocol token is required)",
                            SPECIAL_NAMES[k], s);
        *dst[k] = id;
        t->special_str[k] = (ds4_str){s, strlen(s)};
        t->special_id[k] = id;
    }
    return 0;
}

static int build_bytes(ds4_tokenizer *t, ds4_err *err) {
    for (unsigned b = 0; b < 256; b++) {
        char u[4];
        size_t n = utf8_put(byte_to_cp(b), u);
        t->byte_tok[b] = ds4_tokenizer_find(t, u, n);
        if (t->byte_tok[b] < 0)
            return ds4_errf(err, "the vocabulary has no token for byte 0x%02X (string \"%.*s\"); a byte-level BPE "
                                 "vocabulary needs all 256", b, (int)n, u);
    }
    return 0;
}

/* Index the usable merges: both sides and the result must be tokens, since
 * BPE symbols are always tokens (a merge producing an unknown string could
 * never be emitted, so it is ignored, as is a pair already seen at a lower
 * rank). */
static int build_merges(ds4_tokenizer *t, const ds4_str *merges, size_t n, ds4_err *err) {
    if (n > UINT32_MAX) return ds4_errf(err, "%zu merges is too many", n);
    t->merge_bits = 10;
    while (((uint64_t)1 << t->merge_bits) < 2 * (uint64_t)n) t->merge_bits++;
    size_t cap = (size_t)1 << t->merge_bits;
    t->merges = malloc(cap * sizeof(*t->merges));
    if (!t->merges) return ds4_errf(err, "out of memory for %zu merges", n);
    for (size_t i = 0; i < cap; i++) t->merges[i].key = DS4_MERGE_EMPTY;

    char *cat = NULL; /* left+right, reused */
    size_t cat_cap = 0;
    for (size_t r = 0; r < n; r++) {
        const char *s = merges[r].ptr;
        size_t len = merges[r].len;
        const char *sp = len ? memchr(s, ' ', len) : NULL;
        if (!sp || sp == s || sp == s + len - 1 || memchr(sp + 1, ' ', len - (size_t)(sp + 1 - s))) {
            free(cat);
            return ds4_errf(err, "merge %zu \"%.*s\" is not of the form \"LEFT RIGHT\"", r, (int)(len > 200 ? 200 : len), s);
        }
        size_t ll = (size_t)(sp - s), rl = len - ll - 1;
        int32_t a = ds4_tokenizer_find(t, s, ll), b = ds4_tokenizer_find(t, sp + 1, rl);
        if (a < 0 || b < 0) continue;
        if (ll + rl > cat_cap) {
            cat_cap = 2 * (ll + rl);
            char *p = realloc(cat, cat_cap);
            if (!p) {
                free(cat);
                return ds4_errf(err, "out of memory");
            }
            cat = p;
        }
        memcpy(cat, s, ll);
        memcpy(cat + ll, sp + 1, rl);
        int32_t res = ds4_tokenizer_find(t, cat, ll + rl);
        if (res < 0) continue;

        uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
        uint64_t h = ds4_merge_hash(key, t->merge_bits);
        while (t->merges[h].key != DS4_MERGE_EMPTY && t->merges[h].key != key) h = (h + 1) & (cap - 1);
        if (t->merges[h].key == key) continue; /* duplicate pair: the lower rank stays */
        t->merges[h] = (ds4_merge_slot){key, (uint32_t)r, res};
        t->n_merges++;
    }
    free(cat);
    return 0;
}

ds4_tokenizer *ds4_tokenizer_create(const ds4_str *tokens, size_t n_tokens, const ds4_str *merges, size_t n_merges,
                                    ds4_err *err) {
    if (n_tokens == 0 || n_tokens > INT32_MAX) {
        ds4_errf(err, "a vocabulary of %zu tokens is not usable", n_tokens);
        return NULL;
    }
    ds4_tokenizer *t = calloc(1, sizeof(*t));
    if (!t) {
        ds4_errf(err, "out of memory for the tokenizer");
        return NULL;
    }
    if (build_vocab(t, tokens, n_tokens, err) || build_texts(t, err) || build_specials(t, err) ||
        build_bytes(t, err) || build_merges(t, merges, n_merges, err)) {
        ds4_tokenizer_free(t);
        return NULL;
    }
    return t;
}

void ds4_tokenizer_free(ds4_tokenizer *t) {
    if (!t) return;
    free(t->strs);
    free(t->str_off);
    free(t->texts);
    free(t->text_off);
    free(t->str_index);
    free(t->merges);
    free(t);
}

/* ================================================================ queries */

size_t ds4_tokenizer_n_vocab(const ds4_tokenizer *t) { return t->n_vocab; }

const ds4_tok_specials *ds4_tokenizer_specials(const ds4_tokenizer *t) { return &t->sp; }

const char *ds4_token_str(const ds4_tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || (size_t)id >= t->n_vocab) {
        *len = 0;
        return NULL;
    }
    return tok_str(t, (size_t)id, len);
}

const char *ds4_token_text(const ds4_tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || (size_t)id >= t->n_vocab) {
        *len = 0;
        return NULL;
    }
    *len = t->text_off[id + 1] - t->text_off[id];
    return t->texts + t->text_off[id];
}

/* ================================================================ decoding */

int ds4_detokenize(const ds4_tokenizer *t, const int32_t *ids, size_t n, char **out, size_t *out_len, ds4_err *err) {
    *out = NULL;
    *out_len = 0;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (size_t)ids[i] >= t->n_vocab)
            return ds4_errf(err, "token id %d at position %zu is outside the vocabulary (%zu tokens)", ids[i], i,
                            t->n_vocab);
        total += t->text_off[ids[i] + 1] - t->text_off[ids[i]];
    }
    char *buf = malloc(total + 1);
    if (!buf) return ds4_errf(err, "out of memory for %zu bytes of detokenized text", total);
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *s = ds4_token_text(t, ids[i], &len);
        memcpy(buf + off, s, len);
        off += len;
    }
    buf[off] = 0;
    *out = buf;
    *out_len = off;
    return 0;
}

/* Length of the well-formed sequence a lead byte starts (0: not a lead) and
 * the allowed range of its second byte (Unicode Table 3-7: no overlongs, no
 * surrogates, nothing above U+10FFFF). */
static size_t utf8_lead(unsigned c, unsigned *lo, unsigned *hi) {
    *lo = 0x80;
    *hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) return 2;
    if (c >= 0xE0 && c <= 0xEF) {
        if (c == 0xE0) *lo = 0xA0;
        if (c == 0xED) *hi = 0x9F;
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (c == 0xF0) *lo = 0x90;
        if (c == 0xF4) *hi = 0x8F;
        return 4;
    }
    return 0;
}

size_t ds4_utf8_incomplete_tail(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    /* The last lead byte can be at most 3 bytes from the end. */
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        unsigned c = s[n - k];
        if ((c & 0xC0) == 0x80) continue; /* continuation: look further back */
        unsigned lo, hi;
        size_t need = utf8_lead(c, &lo, &hi);
        if (need <= k) return 0; /* not a lead, or its sequence is already complete */
        /* Every byte present after the lead must be a valid continuation. */
        for (size_t j = 1; j < k; j++) {
            unsigned d = s[n - k + j];
            if (j == 1 ? (d < lo || d > hi) : (d & 0xC0) != 0x80) return 0;
        }
        return k;
    }
    return 0;
}

int ds4_detok_init(ds4_detok_stream *s, const ds4_tokenizer *t, ds4_err *err) {
    s->tok = t;
    s->n_held = 0;
    s->buf = malloc(t->max_text + 4);
    if (!s->buf) return ds4_errf(err, "out of memory for a detokenizer stream");
    return 0;
}

const char *ds4_detok_push(ds4_detok_stream *s, int32_t id, size_t *len) {
    size_t tl = 0;
    const char *text = ds4_token_text(s->tok, id, &tl);
    /* Output = held-back bytes + this token's text, minus a new incomplete
     * tail, which moves to held[] (the caller reads buf meanwhile). */
    memcpy(s->buf, s->held, s->n_held);
    if (tl) memcpy(s->buf + s->n_held, text, tl);
    size_t total = s->n_held + tl;
    size_t keep = ds4_utf8_incomplete_tail(s->buf, total);
    *len = total - keep;
    memcpy(s->held, s->buf + *len, keep);
    s->n_held = keep;
    return s->buf;
}

const char *ds4_detok_flush(ds4_detok_stream *s, size_t *len) {
    memcpy(s->buf, s->held, s->n_held);
    *len = s->n_held;
    s->n_held = 0;
    return s->buf;
}

void ds4_detok_free(ds4_detok_stream *s) {
    if (!s) return;
    free(s->buf);
    s->buf = NULL;
    s->n_held = 0;
}
