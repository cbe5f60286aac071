/* ds4 — tokenizer encoding: special-token recognition, the official
 * pre-tokenizer, and BPE by merge rank. See tokenizer.h and INTERFACES.md
 * 2.4-2.7.
 *
 * The pre-tokenizer is the official sequence of three "isolated" regex splits
 * (a match and the gap before it both become pieces), reproduced by hand:
 *
 *   1. \p{N}{1,3}
 *   2. [一-龥぀-ゟ゠-ヿ]+                      (U+4E00-9FA5, U+3040-30FF)
 *   3. [!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+
 *      | [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+
 *      | ?[\p{P}\p{S}]+[\r\n]*
 *      | \s*[\r\n]+
 *      | \s+(?!\S)
 *      | \s+
 *
 * Each split works on the pieces of the previous one as separate strings, so
 * a later pattern never looks across an earlier boundary (in particular the
 * (?!\S) lookahead succeeds at the end of a piece). Splits 1 and 2 together
 * cut a span into: runs of \p{N} chunked by three from the left, maximal
 * runs of the CJK/kana ranges, and maximal runs of everything else. Number
 * pieces contain nothing split 3 can match (every alternative needs a letter,
 * mark, punctuation, symbol or space), so they go to BPE whole; the other
 * two kinds go through split 3, implemented by match_at() below as the
 * leftmost-first alternation the regex engine evaluates.
 *
 * Character classes come from tok_unicode.c. A byte that is not part of a
 * well-formed UTF-8 sequence is its own character of class \p{S}, like the
 * U+FFFD the official tokenizer sees in its place (tokenizer.h). */
#include <stdlib.h>
#include <string.h>

#include "text/tok_internal.h"
#include "text/tok_unicode.h"
#include "text/tokenizer.h"

/* ================================================================ character flags */

enum {
    F_LM = 1 << 0,     /* \p{L} or \p{M} */
    F_N = 1 << 1,      /* \p{N} */
    F_PS = 1 << 2,     /* \p{P} or \p{S} (and invalid bytes) */
    F_WS = 1 << 3,     /* \s (White_Space) */
    F_NL = 1 << 4,     /* \r or \n */
    F_SP = 1 << 5,     /* ' ' */
    F_ALPHA = 1 << 6,  /* [A-Za-z] */
    F_APUNCT = 1 << 7, /* the 32 ASCII punctuation characters of alternative 1 */
    F_CJK = 1 << 8,    /* [一-龥぀-ゟ゠-ヿ] */
};

static const unsigned UCLS_FLAGS[5] = {
    [DS4_UCLS_OTHER] = 0, [DS4_UCLS_LM] = F_LM, [DS4_UCLS_N] = F_N, [DS4_UCLS_PS] = F_PS, [DS4_UCLS_WS] = F_WS,
};

static inline unsigned ascii_flags(unsigned c) {
    unsigned l = c | 0x20;
    if (l >= 'a' && l <= 'z') return F_LM | F_ALPHA;
    if (c >= '0' && c <= '9') return F_N;
    if (c == ' ') return F_WS | F_SP;
    if (c == '\n' || c == '\r') return F_WS | F_NL;
    if (c >= 0x09 && c <= 0x0D) return F_WS;
    if (c > 0x20 && c < 0x7F) return F_PS | F_APUNCT; /* every other printable ASCII char is P or S */
    return 0;                                         /* controls */
}

/* Flags of the character at s[i] (i < e); *next = index after it. Decoding
 * is strict (Unicode Table 3-7): overlongs, surrogates, code points above
 * U+10FFFF and truncated sequences are invalid, and each of their bytes is a
 * one-byte character of class \p{S}. */
static inline unsigned char_info(const unsigned char *s, size_t i, size_t e, size_t *next) {
    unsigned c = s[i];
    if (c < 0x80) {
        *next = i + 1;
        return ascii_flags(c);
    }
    size_t need;
    unsigned lo = 0x80, hi = 0xBF;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 1;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        cp = c & 0x0F;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        cp = c & 0x07;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        goto invalid;
    }
    if (e - i <= need) goto invalid;
    for (size_t k = 1; k <= need; k++) {
        unsigned d = s[i + k];
        if (k == 1 ? (d < lo || d > hi) : (d & 0xC0) != 0x80) goto invalid;
        cp = cp << 6 | (d & 0x3F);
    }
    *next = i + need + 1;
    unsigned f = UCLS_FLAGS[ds4_ucls_lookup(cp)];
    if ((cp >= 0x4E00 && cp <= 0x9FA5) || (cp >= 0x3040 && cp <= 0x30FF)) f |= F_CJK;
    return f;
invalid:
    *next = i + 1;
    return F_PS;
}

/* ================================================================ encoder state */

/* A candidate merge in the BPE heap: ordered by rank, then by position
 * (leftmost first); lid/rid detect entries made stale by other merges. */
typedef struct heap_ent {
    uint64_t key; /* rank << 32 | position of the left symbol */
    int32_t lid, rid, res;
} heap_ent;

typedef struct enc {
    const ds4_tokenizer *t;
    ds4_tokvec *out;
    ds4_err *err;
    /* BPE scratch, grown to the longest piece seen: one symbol per byte. */
    int32_t *sym, *nxt, *prv;
    size_t cap;
    heap_ent *heap;
    size_t heap_n, heap_cap;
} enc;

static int grow_scratch(enc *c, size_t n) {
    if (n <= c->cap) return 0;
    size_t cap = c->cap ? c->cap : 64;
    while (cap < n) cap *= 2;
    int32_t *a = realloc(c->sym, cap * sizeof(*a));
    if (a) c->sym = a;
    int32_t *b = a ? realloc(c->nxt, cap * sizeof(*b)) : NULL;
    if (b) c->nxt = b;
    int32_t *p = b ? realloc(c->prv, cap * sizeof(*p)) : NULL;
    if (p) c->prv = p;
    /* At most n-1 initial pairs plus 2 per merge (at most n-1 merges). */
    heap_ent *h = p ? realloc(c->heap, 3 * cap * sizeof(*h)) : NULL;
    if (h) c->heap = h;
    if (!h) return ds4_errf(c->err, "out of memory tokenizing a piece of %zu bytes", n);
    c->cap = cap;
    c->heap_cap = 3 * cap;
    return 0;
}

/* ================================================================ BPE */

static void heap_push(enc *c, heap_ent e) {
    size_t i = c->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (c->heap[p].key <= e.key) break;
        c->heap[i] = c->heap[p];
        i = p;
    }
    c->heap[i] = e;
}

static heap_ent heap_pop(enc *c) {
    heap_ent top = c->heap[0], last = c->heap[--c->heap_n];
    size_t i = 0, n = c->heap_n;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= n) break;
        size_t m = (l + 1 < n && c->heap[l + 1].key < c->heap[l].key) ? l + 1 : l;
        if (last.key <= c->heap[m].key) break;
        c->heap[i] = c->heap[m];
        i = m;
    }
    if (n) c->heap[i] = last;
    return top;
}

/* Queue the pair (pos, its right neighbour) if it has a merge. */
static void queue_pair(enc *c, int32_t pos) {
    int32_t r = c->nxt[pos];
    uint32_t rank;
    int32_t res;
    if (r < 0 || ds4_merge_find(c->t, c->sym[pos], c->sym[r], &rank, &res)) return;
    heap_push(c, (heap_ent){(uint64_t)rank << 32 | (uint32_t)pos, c->sym[pos], c->sym[r], res});
}

/* Encode one pre-token piece: start from its byte tokens and repeatedly
 * apply the lowest-ranked merge among adjacent pairs (leftmost on ties).
 * Symbols live in a linked list over the byte positions; a merged symbol
 * keeps its left position, so position order is text order. Heap entries
 * that no longer describe two adjacent live symbols are skipped. */
static int bpe_piece(enc *c, const unsigned char *s, size_t n) {
    const ds4_tokenizer *t = c->t;
    if (n == 1) return ds4_tokvec_push(c->out, t->byte_tok[s[0]], c->err);
    if (grow_scratch(c, n)) return -1;
    for (size_t i = 0; i < n; i++) {
        c->sym[i] = t->byte_tok[s[i]];
        c->prv[i] = (int32_t)i - 1;
        c->nxt[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    c->heap_n = 0;
    for (size_t i = 0; i + 1 < n; i++) queue_pair(c, (int32_t)i);

    while (c->heap_n) {
        heap_ent e = heap_pop(c);
        int32_t pos = (int32_t)(uint32_t)e.key;
        if (c->sym[pos] != e.lid) continue; /* pos merged away or grew */
        int32_t r = c->nxt[pos];
        if (r < 0 || c->sym[r] != e.rid) continue; /* right neighbour changed */
        int32_t rr = c->nxt[r];
        c->sym[pos] = e.res;
        c->sym[r] = -1;
        c->nxt[pos] = rr;
        if (rr >= 0) c->prv[rr] = pos;
        if (c->prv[pos] >= 0) queue_pair(c, c->prv[pos]);
        queue_pair(c, pos);
    }
    for (int32_t i = 0; i >= 0; i = c->nxt[i])
        if (ds4_tokvec_push(c->out, c->sym[i], c->err)) return -1;
    return 0;
}

/* ================================================================ split 3 */

static size_t run_of(const unsigned char *s, size_t i, size_t e, unsigned flags) {
    while (i < e) {
        size_t nx;
        if (!(char_info(s, i, e, &nx) & flags)) break;
        i = nx;
    }
    return i;
}

/* End of the split-3 match starting at i within the piece [.., e), or i if
 * no alternative matches there. */
static size_t match_at(const unsigned char *s, size_t i, size_t e) {
    size_t i1, i2 = 0;
    unsigned f0 = char_info(s, i, e, &i1), f1 = 0;
    if (i1 < e) f1 = char_info(s, i1, e, &i2);

    /* [ASCII punct][A-Za-z]+ */
    if ((f0 & F_APUNCT) && (f1 & F_ALPHA)) {
        size_t j = i2;
        while (j < e && (ascii_flags(s[j]) & F_ALPHA) && s[j] < 0x80) j++;
        return j;
    }
    /* [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+ : with the optional char, or
     * without (when the first char is itself a letter or mark; a leading mark
     * gives the same end either way). */
    if (!(f0 & (F_NL | F_LM | F_PS)) && (f1 & F_LM)) return run_of(s, i2, e, F_LM);
    if (f0 & F_LM) return run_of(s, i1, e, F_LM);
    /*  ?[\p{P}\p{S}]+[\r\n]* */
    if ((f0 & F_SP) && (f1 & F_PS)) return run_of(s, run_of(s, i2, e, F_PS), e, F_NL);
    if (f0 & F_PS) return run_of(s, run_of(s, i1, e, F_PS), e, F_NL);
    if (f0 & F_WS) {
        /* Scan the whitespace run, remembering where its last newline ends
         * and where its last character starts. */
        size_t j = i, last_start = i, nl_end = 0, count = 0;
        while (j < e) {
            size_t nx;
            unsigned g = char_info(s, j, e, &nx);
            if (!(g & F_WS)) break;
            if (g & F_NL) nl_end = nx;
            last_start = j;
            j = nx;
            count++;
        }
        if (nl_end) return nl_end;               /* \s*[\r\n]+ : up to the last newline */
        if (j == e || count == 1) return j;      /* \s+(?!\S) at the piece end, or \s+ */
        return last_start;                       /* \s+(?!\S) : leave one space for the next word */
    }
    return i;
}

/* Split [b, e) with split 3; gaps between matches are pieces too. */
static int split3(enc *c, const unsigned char *s, size_t b, size_t e) {
    size_t i = b, gap = b;
    while (i < e) {
        size_t m = match_at(s, i, e);
        if (m > i) {
            if (gap < i && bpe_piece(c, s + gap, i - gap)) return -1;
            if (bpe_piece(c, s + i, m - i)) return -1;
            i = gap = m;
        } else {
            size_t nx;
            char_info(s, i, e, &nx);
            i = nx;
        }
    }
    if (gap < e && bpe_piece(c, s + gap, e - gap)) return -1;
    return 0;
}

/* ================================================================ splits 1 and 2 */

/* Encode plain text [b, e) with the full pre-tokenizer. */
static int encode_span(enc *c, const unsigned char *s, size_t b, size_t e) {
    size_t i = b;
    while (i < e) {
        size_t j;
        unsigned f = char_info(s, i, e, &j);
        if (f & F_N) {
            /* \p{N}{1,3}: a number piece is never split further. */
            for (int count = 1; j < e && count < 3; count++) {
                size_t nx;
                if (!(char_info(s, j, e, &nx) & F_N)) break;
                j = nx;
            }
            if (bpe_piece(c, s + i, j - i)) return -1;
        } else {
            /* A maximal CJK run, or a maximal run of neither numbers nor CJK. */
            unsigned cjk = f & F_CJK;
            while (j < e) {
                size_t nx;
                unsigned g = char_info(s, j, e, &nx);
                if ((g & F_N) || (g & F_CJK) != cjk) break;
                j = nx;
            }
            if (split3(c, s, i, j)) return -1;
        }
        i = j;
    }
    return 0;
}

/* ================================================================ entry point */

/* Index of the special string starting at s[i], or -1. */
static int special_at(const ds4_tokenizer *t, const unsigned char *s, size_t i, size_t len) {
    for (int k = 0; k < DS4_TOK_N_SPECIAL; k++) {
        const ds4_str *sp = &t->special_str[k];
        if (s[i] == (unsigned char)sp->ptr[0] && len - i >= sp->len && memcmp(s + i, sp->ptr, sp->len) == 0) return k;
    }
    return -1;
}

int ds4_tokenize(const ds4_tokenizer *t, const char *text, size_t len, bool special, ds4_tokvec *out, ds4_err *err) {
    if (len > INT32_MAX) return ds4_errf(err, "cannot tokenize a text of %zu bytes (the limit is 2 GiB)", len);
    const unsigned char *s = (const unsigned char *)text;
    enc c = {.t = t, .out = out, .err = err};
    size_t n0 = out->n;
    int rc = 0;
    if (!special) {
        rc = encode_span(&c, s, 0, len);
    } else {
        /* Every special string starts with '<' or the first byte of U+FF5C;
         * testing those two bytes first keeps the scan cheap. */
        size_t span = 0, i = 0;
        while (i < len && !rc) {
            int k = (s[i] == '<' || s[i] == 0xEF) ? special_at(t, s, i, len) : -1;
            if (k < 0) {
                i++;
                continue;
            }
            rc = encode_span(&c, s, span, i);
            if (!rc) rc = ds4_tokvec_push(out, t->special_id[k], err);
            i += t->special_str[k].len;
            span = i;
        }
        if (!rc) rc = encode_span(&c, s, span, len);
    }
    free(c.sym);
    free(c.nxt);
    free(c.prv);
    free(c.heap);
    if (rc) out->n = n0;
    return rc;
}
