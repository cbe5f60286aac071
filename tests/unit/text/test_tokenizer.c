/* Tokenizer: the official tokenizer's ids on the test corpus (fixtures from
 * tests/oracle/tokenizer/gen_fixtures.js), round trips on the corpus, on
 * invalid UTF-8 and on random bytes, protocol tokens, streaming
 * detokenization, small vocabularies, construction errors, a 1.3 MB text.
 *
 * Needs the DeepSeek V4 tokenizer data made by scripts/export-tokenizer.js:
 * $DS4_TOKDATA, else $DS4_BUILD_DIR/tokenizer/deepseek-v4.tok, else
 * $DS4_SRC_DIR/build/tokenizer/deepseek-v4.tok (make test creates it). */
#include "test_util.h"

#include <time.h>

#include "text/tokdata.h"
#include "text/tokenizer.h"
#include "util/rng.h"

/* ---------------------------------------------------------------- fixtures */

static ds4_tokenizer *g_tok;
static char *g_corpus;
static size_t g_corpus_len;

typedef struct doc {
    size_t off, len;
    int32_t *plain, *special; /* special == plain when the fixture says "same" */
    size_t n_plain, n_special;
} doc;
static doc *g_docs;
static size_t g_n_docs;
static unsigned char *g_fixture;

static const char *tokdata_path(void) {
    static char buf[4096];
    const char *p = getenv("DS4_TOKDATA");
    if (p && *p) return p;
    const char *b = getenv("DS4_BUILD_DIR");
    if (b && *b)
        snprintf(buf, sizeof(buf), "%s/tokenizer/deepseek-v4.tok", b);
    else
        snprintf(buf, sizeof(buf), "%s/build/tokenizer/deepseek-v4.tok", test_src_dir());
    return buf;
}

static uint32_t fnv1a32(const void *p, size_t n) {
    uint32_t h = 0x811c9dc5u;
    for (size_t i = 0; i < n; i++) h = (h ^ ((const unsigned char *)p)[i]) * 0x01000193u;
    return h;
}

typedef struct rd {
    const unsigned char *p;
    size_t n, off;
} rd;

static uint32_t rd_u32(rd *r) {
    if (r->n - r->off < 4) fail_msg("expected.bin is truncated at byte %zu", r->off);
    const unsigned char *b = r->p + r->off;
    r->off += 4;
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static int32_t *rd_ids(rd *r, size_t n) {
    int32_t *v = malloc((n ? n : 1) * sizeof(*v));
    assert_non_null(v);
    for (size_t i = 0; i < n; i++) {
        uint32_t x = 0;
        for (int shift = 0;; shift += 7) {
            if (r->off >= r->n || shift > 28) fail_msg("expected.bin: bad varint at byte %zu", r->off);
            unsigned char b = r->p[r->off++];
            x |= (uint32_t)(b & 0x7f) << shift;
            if (!(b & 0x80)) break;
        }
        v[i] = (int32_t)x;
    }
    return v;
}

static void load_fixtures(void) {
    g_corpus = test_read_file(test_path("tests/data/tokenizer/corpus.txt"), &g_corpus_len);
    if (!g_corpus) fail_msg("cannot read tests/data/tokenizer/corpus.txt");
    size_t n = 0;
    g_fixture = test_read_file(test_path("tests/data/tokenizer/expected.bin"), &n);
    if (!g_fixture) fail_msg("cannot read tests/data/tokenizer/expected.bin");
    rd r = {g_fixture, n, 8};
    if (n < 8 || memcmp(g_fixture, "DS4TOKX1", 8) != 0) fail_msg("expected.bin: bad magic");
    uint32_t corpus_bytes = rd_u32(&r), corpus_hash = rd_u32(&r);
    if (corpus_bytes != g_corpus_len || corpus_hash != fnv1a32(g_corpus, g_corpus_len))
        fail_msg("expected.bin was made from another corpus.txt: regenerate it with "
                 "node tests/oracle/tokenizer/gen_fixtures.js");
    g_n_docs = rd_u32(&r);
    g_docs = calloc(g_n_docs, sizeof(*g_docs));
    assert_non_null(g_docs);
    for (size_t i = 0; i < g_n_docs; i++) {
        doc *d = &g_docs[i];
        d->off = rd_u32(&r);
        d->len = rd_u32(&r);
        if (d->off > g_corpus_len || d->len > g_corpus_len - d->off) fail_msg("expected.bin: document %zu out of range", i);
        d->n_plain = rd_u32(&r);
        d->plain = rd_ids(&r, d->n_plain);
        uint32_t ns = rd_u32(&r);
        if (ns == 0xFFFFFFFFu) {
            d->special = d->plain;
            d->n_special = d->n_plain;
        } else {
            d->n_special = ns;
            d->special = rd_ids(&r, ns);
        }
    }
    if (r.off != n) fail_msg("expected.bin: %zu trailing bytes", n - r.off);
}

static int setup(void **state) {
    ds4_err err = {{0}};
    g_tok = ds4_tokenizer_load_tok(tokdata_path(), &err);
    if (!g_tok) {
        fprintf(stderr, "%s\n(make creates it: make %s, or node scripts/export-tokenizer.js)\n", err.msg,
                tokdata_path());
        return -1;
    }
    load_fixtures();
    return 0;
}

static int teardown(void **state) {
    ds4_tokenizer_free(g_tok);
    for (size_t i = 0; i < g_n_docs; i++) {
        if (g_docs[i].special != g_docs[i].plain) free(g_docs[i].special);
        free(g_docs[i].plain);
    }
    free(g_docs);
    free(g_fixture);
    free(g_corpus);
    return 0;
}

/* ---------------------------------------------------------------- helpers */

static ds4_tokvec encode(const ds4_tokenizer *t, const char *s, size_t n, bool special) {
    ds4_tokvec v = {0};
    ds4_err err = {{0}};
    if (ds4_tokenize(t, s, n, special, &v, &err)) fail_msg("ds4_tokenize: %s", err.msg);
    return v;
}

static void assert_roundtrip(const ds4_tokenizer *t, const char *s, size_t n, bool special) {
    ds4_tokvec v = encode(t, s, n, special);
    char *back;
    size_t blen;
    ds4_err err = {{0}};
    if (ds4_detokenize(t, v.ids, v.n, &back, &blen, &err)) fail_msg("ds4_detokenize: %s", err.msg);
    if (blen != n || memcmp(back, s, n) != 0) {
        size_t i = 0;
        while (i < n && i < blen && back[i] == s[i]) i++;
        fail_msg("round trip (special=%d) of %zu bytes differs at byte %zu (got %zu bytes)", special, n, i, blen);
    }
    free(back);
    ds4_tokvec_free(&v);
}

/* Print a token as its vocabulary string, escaped, for mismatch reports. */
static void fmt_tok(char *buf, size_t cap, int32_t id) {
    size_t len;
    const char *s = ds4_token_str(g_tok, id, &len);
    if (!s) {
        snprintf(buf, cap, "%d(?)", id);
        return;
    }
    snprintf(buf, cap, "%d'%.*s'", id, (int)(len > 40 ? 40 : len), s);
}

/* Print bytes of the document around a position, escaped. */
static void fmt_ctx(char *buf, size_t cap, const char *s, size_t n) {
    size_t o = 0;
    for (size_t i = 0; i < n && o + 8 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n')
            o += (size_t)snprintf(buf + o, cap - o, "\\n");
        else if (c == '\r')
            o += (size_t)snprintf(buf + o, cap - o, "\\r");
        else if (c == '\t')
            o += (size_t)snprintf(buf + o, cap - o, "\\t");
        else if (c < 0x20 || c == 0x7f)
            o += (size_t)snprintf(buf + o, cap - o, "\\x%02X", c);
        else
            buf[o++] = (char)c;
    }
    buf[o] = 0;
}

/* Compare with the oracle on every document; report the first mismatch of
 * each of the first few mismatching documents, then fail. */
static void check_oracle(bool special) {
    size_t bad = 0, total = 0;
    for (size_t k = 0; k < g_n_docs; k++) {
        const doc *d = &g_docs[k];
        const int32_t *want = special ? d->special : d->plain;
        size_t nwant = special ? d->n_special : d->n_plain;
        ds4_tokvec v = encode(g_tok, g_corpus + d->off, d->len, special);
        total += v.n;
        size_t i = 0;
        while (i < v.n && i < nwant && v.ids[i] == want[i]) i++;
        if (i < v.n || i < nwant) {
            if (++bad <= 5) {
                /* Byte offset of the mismatch: the text of the common prefix. */
                size_t at = 0;
                for (size_t j = 0; j < i; j++) {
                    size_t l;
                    ds4_token_text(g_tok, want[j], &l);
                    at += l;
                }
                char a[96] = "(end)", b[96] = "(end)", ctx[400];
                if (i < nwant) fmt_tok(a, sizeof(a), want[i]);
                if (i < v.n) fmt_tok(b, sizeof(b), v.ids[i]);
                size_t from = at > 20 ? at - 20 : 0, to = at + 40 < d->len ? at + 40 : d->len;
                fmt_ctx(ctx, sizeof(ctx), g_corpus + d->off + from, to - from);
                fprintf(stderr,
                        "MISMATCH (special=%d) document %zu (corpus byte %zu), token %zu, text byte %zu:\n"
                        "  expected %s, got %s\n  context: \"%s\"\n",
                        special, k, d->off, i, at, a, b, ctx);
            }
        }
        ds4_tokvec_free(&v);
    }
    printf("oracle (special=%d): %zu documents, %zu tokens, %zu mismatching documents\n", special, g_n_docs, total,
           bad);
    if (bad) fail_msg("%zu of %zu documents differ from the official tokenizer (special=%d)", bad, g_n_docs, special);
}

/* ---------------------------------------------------------------- tests: oracle */

static void test_oracle_plain(void **state) { check_oracle(false); }
static void test_oracle_special(void **state) { check_oracle(true); }

static void test_roundtrip_corpus(void **state) {
    for (size_t k = 0; k < g_n_docs; k++) {
        assert_roundtrip(g_tok, g_corpus + g_docs[k].off, g_docs[k].len, false);
        assert_roundtrip(g_tok, g_corpus + g_docs[k].off, g_docs[k].len, true);
    }
    assert_roundtrip(g_tok, g_corpus, g_corpus_len, true);
}

/* ---------------------------------------------------------------- tests: invalid UTF-8, random bytes */

/* Parse one line of invalid_utf8.txt (escapes \xNN \n \r \t \\). */
static size_t unescape(const char *line, size_t n, char *out) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (line[i] != '\\' || i + 1 >= n) {
            out[o++] = line[i];
            continue;
        }
        char c = line[++i];
        if (c == 'x' && i + 2 < n) {
            char hex[3] = {line[i + 1], line[i + 2], 0};
            out[o++] = (char)strtoul(hex, NULL, 16);
            i += 2;
        } else if (c == 'n') {
            out[o++] = '\n';
        } else if (c == 'r') {
            out[o++] = '\r';
        } else if (c == 't') {
            out[o++] = '\t';
        } else {
            out[o++] = c;
        }
    }
    return o;
}

static void test_roundtrip_invalid_utf8(void **state) {
    size_t n = 0;
    char *txt = test_read_file(test_path("tests/data/tokenizer/invalid_utf8.txt"), &n);
    assert_non_null(txt);
    char *buf = malloc(n + 1);
    assert_non_null(buf);
    size_t cases = 0;
    for (size_t i = 0; i < n;) {
        size_t e = i;
        while (e < n && txt[e] != '\n') e++;
        if (e > i && txt[i] != '#') {
            size_t len = unescape(txt + i, e - i, buf);
            assert_roundtrip(g_tok, buf, len, false);
            assert_roundtrip(g_tok, buf, len, true);
            cases++;
        }
        i = e + 1;
    }
    printf("invalid UTF-8: %zu cases round-trip\n", cases);
    assert_true(cases >= 50);
    free(buf);
    free(txt);
}

/* Invalid bytes are classified like U+FFFD (a symbol): they join a
 * punctuation run and split letters and numbers apart. */
static void test_invalid_byte_class(void **state) {
    /* "ab\xFFcd": letters, symbol, letters -> pieces "ab", "\xFF", "cd". */
    ds4_tokvec v = encode(g_tok, "ab\xFF" "cd", 5, false);
    ds4_tokvec a = encode(g_tok, "ab", 2, false), c = encode(g_tok, "cd", 2, false);
    ds4_tokvec f = encode(g_tok, "\xFF", 1, false);
    assert_int_equal(v.n, a.n + f.n + c.n);
    assert_int_equal(v.ids[a.n], f.ids[0]);
    ds4_tokvec_free(&v);
    ds4_tokvec_free(&a);
    ds4_tokvec_free(&c);
    ds4_tokvec_free(&f);
}

static void test_roundtrip_random(void **state) {
    ds4_rng r;
    ds4_rng_seed(&r, 20240501);
    static const char *frags[] = {"<\357\275\234User\357\275\234>", "<think>", "</think>", "\357\275\234DSML\357\275\234",
                                  "\xE4\xB8\xAD", "\xF0\x9F\x91\x8D", "\xC3\xA9", "  ", "\r\n", "123", "\xE3\x80\x80"};
    char buf[600];
    for (int it = 0; it < 4000; it++) {
        size_t n = 0, want = ds4_rng_below(&r, 400);
        while (n < want) {
            uint32_t k = ds4_rng_below(&r, 10);
            if (k < 4) {
                buf[n++] = (char)ds4_rng_below(&r, 256); /* any byte */
            } else if (k < 7) {
                buf[n++] = (char)(0x20 + ds4_rng_below(&r, 95)); /* printable ASCII */
            } else if (k < 9) {
                const char *f = frags[ds4_rng_below(&r, sizeof(frags) / sizeof(frags[0]))];
                size_t l = strlen(f);
                if (n + l > sizeof(buf)) break;
                memcpy(buf + n, f, l);
                n += l;
            } else {
                buf[n++] = (char)(0x80 + ds4_rng_below(&r, 0x80)); /* continuation / lead bytes */
            }
        }
        assert_roundtrip(g_tok, buf, n, false);
        assert_roundtrip(g_tok, buf, n, true);
    }
}

/* ---------------------------------------------------------------- tests: protocol tokens */

static const char *const PROTO[7] = {
    "<\357\275\234begin\342\226\201of\342\226\201sentence\357\275\234>",
    "<\357\275\234end\342\226\201of\342\226\201sentence\357\275\234>",
    "<\357\275\234User\357\275\234>",
    "<\357\275\234Assistant\357\275\234>",
    "<think>",
    "</think>",
    "\357\275\234DSML\357\275\234",
};
static const int32_t PROTO_IDS[7] = {0, 1, 128803, 128804, 128821, 128822, 128825};

static void test_special_example(void **state) {
    const char *s = "<\357\275\234User\357\275\234>\xE4\xBD\xA0\xE5\xA5\xBD<\357\275\234Assistant\357\275\234>"
                    "<think>\xE6\x8E\xA8\xE7\x90\x86</think>\xE7\xAD\x94\xE6\xA1\x88"
                    "<\357\275\234end\342\226\201of\342\226\201sentence\357\275\234>";
    const int32_t want[] = {128803, 30594, 128804, 128821, 36101, 128822, 7624, 1};
    ds4_tokvec v = encode(g_tok, s, strlen(s), true);
    assert_int_equal(v.n, 8);
    assert_memory_equal(v.ids, want, sizeof(want));
    ds4_tokvec_free(&v);
}

static void test_specials_single(void **state) {
    const ds4_tok_specials *sp = ds4_tokenizer_specials(g_tok);
    const int32_t got[7] = {sp->bos, sp->eos, sp->user, sp->assistant, sp->think, sp->think_end, sp->dsml};
    assert_memory_equal(got, PROTO_IDS, sizeof(got));
    assert_int_equal(ds4_tokenizer_n_vocab(g_tok), 129280);
    for (int k = 0; k < 7; k++) {
        ds4_tokvec v = encode(g_tok, PROTO[k], strlen(PROTO[k]), true);
        assert_int_equal(v.n, 1);
        assert_int_equal(v.ids[0], PROTO_IDS[k]);
        assert_int_equal(ds4_tokenizer_find(g_tok, PROTO[k], strlen(PROTO[k])), PROTO_IDS[k]);
        ds4_tokvec_free(&v);
    }
    /* INTERFACES.md 2.3: a DSML tag starts with a plain "<" token. */
    const char *tag = "<\357\275\234DSML\357\275\234invoke";
    ds4_tokvec v = encode(g_tok, tag, strlen(tag), true);
    assert_true(v.n >= 3);
    assert_int_equal(v.ids[0], ds4_tokenizer_find(g_tok, "<", 1));
    assert_int_equal(v.ids[1], 128825);
    ds4_tokvec_free(&v);
}

static void test_plain_ignores_specials(void **state) {
    for (int k = 0; k < 7; k++) {
        ds4_tokvec v = encode(g_tok, PROTO[k], strlen(PROTO[k]), false);
        assert_true(v.n > 1);
        for (size_t i = 0; i < v.n; i++)
            for (int j = 0; j < 7; j++) assert_int_not_equal(v.ids[i], PROTO_IDS[j]);
        ds4_tokvec_free(&v);
    }
    /* Other added tokens are never recognized, even in special mode. */
    const char *fim = "<\357\275\234fim\342\226\201hole\357\275\234>";
    ds4_tokvec v = encode(g_tok, fim, strlen(fim), true);
    assert_true(v.n > 1);
    ds4_tokvec_free(&v);
}

static void test_tokenize_appends(void **state) {
    ds4_tokvec v = {0};
    ds4_err err = {{0}};
    assert_int_equal(ds4_tokvec_push(&v, ds4_tokenizer_specials(g_tok)->bos, &err), 0);
    assert_int_equal(ds4_tokenize(g_tok, "Hello", 5, true, &v, &err), 0);
    assert_int_equal(ds4_tokenize(g_tok, "", 0, true, &v, &err), 0);
    assert_true(v.n >= 2);
    assert_int_equal(v.ids[0], 0);
    ds4_tokvec_free(&v);
}

/* ---------------------------------------------------------------- tests: decoding */

static void test_token_text(void **state) {
    size_t len;
    const char *s = ds4_token_text(g_tok, 128803, &len); /* verbatim: contains U+FF5C */
    assert_int_equal(len, strlen(PROTO[2]));
    assert_memory_equal(s, PROTO[2], len);
    s = ds4_token_text(g_tok, 128821, &len);
    assert_int_equal(len, 7);
    assert_memory_equal(s, "<think>", 7);
    int32_t the = ds4_tokenizer_find(g_tok, "\xC4\xA0the", 5); /* "Ġthe" */
    assert_true(the >= 0);
    s = ds4_token_text(g_tok, the, &len);
    assert_int_equal(len, 4);
    assert_memory_equal(s, " the", 4);
    s = ds4_token_str(g_tok, the, &len);
    assert_int_equal(len, 5);
    assert_null(ds4_token_text(g_tok, -1, &len));
    assert_null(ds4_token_text(g_tok, 129280, &len));
    /* Each of the 256 bytes has its own token, decoding to that byte. */
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        ds4_tokvec v = encode(g_tok, &c, 1, false);
        assert_int_equal(v.n, 1);
        s = ds4_token_text(g_tok, v.ids[0], &len);
        assert_int_equal(len, 1);
        assert_int_equal((unsigned char)s[0], b);
        ds4_tokvec_free(&v);
    }
    char *out;
    ds4_err err = {{0}};
    int32_t bad[] = {1, 200000};
    assert_int_equal(ds4_detokenize(g_tok, bad, 2, &out, &len, &err), -1);
    assert_non_null(strstr(err.msg, "200000"));
}

static void test_utf8_incomplete_tail(void **state) {
    struct {
        const char *s;
        size_t want;
    } cases[] = {
        {"", 0}, {"abc", 0}, {"\xC3", 1}, {"a\xC3", 1}, {"\xC3\xA9", 0}, {"\xE4", 1}, {"\xE4\xB8", 2},
        {"\xE4\xB8\xAD", 0}, {"\xF0\x9F\x91", 3}, {"\xF0\x9F\x91\x8D", 0}, {"\xF0\x9F", 2}, {"\xF0", 1},
        {"\xE0\x80", 0},     /* overlong: can never complete */
        {"\xED\xA0", 0},     /* surrogate */
        {"\xF4\x90", 0},     /* above U+10FFFF */
        {"\xC0", 0},        {"\xFF", 0}, {"\x80", 0}, {"\x80\x80\x80", 0}, {"\xE4\x41", 0}, {"\xF5", 0},
        {"\xE0\xA0", 2},    {"\xED\x9F", 2}, {"\xF4\x8F\xBF", 3},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t got = ds4_utf8_incomplete_tail(cases[i].s, strlen(cases[i].s));
        if (got != cases[i].want) fail_msg("case %zu: got %zu, want %zu", i, got, cases[i].want);
    }
}

/* Is s[0..n) valid UTF-8 (strict)? */
static bool valid_utf8(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t need;
        unsigned lo = 0x80, hi = 0xBF;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else {
            return false;
        }
        if (n - i <= need) return false;
        for (size_t k = 1; k <= need; k++) {
            unsigned d = s[i + k];
            if (k == 1 ? (d < lo || d > hi) : (d & 0xC0) != 0x80) return false;
        }
        i += need + 1;
    }
    return true;
}

/* Feed token by token; every chunk of a valid text must be valid UTF-8 by
 * itself, and the chunks must add up to the text. */
static void stream_check(const char *s, size_t n, bool input_valid) {
    ds4_tokvec v = encode(g_tok, s, n, true);
    ds4_detok_stream st;
    ds4_err err = {{0}};
    assert_int_equal(ds4_detok_init(&st, g_tok, &err), 0);
    char *acc = malloc(n + 1);
    size_t an = 0, len;
    for (size_t i = 0; i <= v.n; i++) {
        const char *p = i < v.n ? ds4_detok_push(&st, v.ids[i], &len) : ds4_detok_flush(&st, &len);
        if (input_valid && !valid_utf8((const unsigned char *)p, len))
            fail_msg("stream chunk after token %zu is not valid UTF-8", i);
        assert_true(an + len <= n);
        memcpy(acc + an, p, len);
        an += len;
    }
    assert_int_equal(an, n);
    assert_memory_equal(acc, s, n);
    free(acc);
    ds4_detok_free(&st);
    ds4_tokvec_free(&v);
}

static void test_detok_stream(void **state) {
    for (size_t k = 0; k < g_n_docs; k++) stream_check(g_corpus + g_docs[k].off, g_docs[k].len, true);
    /* Invalid input: bytes still all come out, in order. */
    stream_check("\xE4\xB8 \xF0\x9F\x91\xC3\xA9\xFF\xE4", 10, false);
    /* A held-back sequence that the next token breaks is emitted as it is. */
    ds4_detok_stream st;
    ds4_err err = {{0}};
    assert_int_equal(ds4_detok_init(&st, g_tok, &err), 0);
    size_t len;
    ds4_tokvec a = encode(g_tok, "\xE4", 1, false), b = encode(g_tok, "x", 1, false);
    ds4_detok_push(&st, a.ids[0], &len);
    assert_int_equal(len, 0);
    const char *p = ds4_detok_push(&st, b.ids[0], &len);
    assert_int_equal(len, 2);
    assert_memory_equal(p, "\xE4x", 2);
    ds4_detok_flush(&st, &len);
    assert_int_equal(len, 0);
    ds4_detok_free(&st);
    ds4_tokvec_free(&a);
    ds4_tokvec_free(&b);
}

/* ---------------------------------------------------------------- tests: small vocabularies, errors */

/* GPT-2 byte alphabet, to build byte tokens for a synthetic vocabulary. */
static size_t byte_token(unsigned b, char *out) {
    unsigned cp = b;
    if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174)) {
        unsigned k = 0;
        for (unsigned x = 0; x < b; x++)
            if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || x >= 174)) k++;
        cp = 256 + k;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xC0 | cp >> 6);
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

typedef struct small_vocab {
    char bytes[256][2];
    ds4_str tokens[512];
    size_t n_tokens;
    ds4_str merges[64];
    size_t n_merges;
} small_vocab;

/* 7 protocol tokens, 256 byte tokens, some merged tokens; skip omits one
 * protocol token (-1: none). */
static void make_small(small_vocab *v, int skip) {
    memset(v, 0, sizeof(*v));
    for (int k = 0; k < 7; k++)
        if (k != skip) v->tokens[v->n_tokens++] = (ds4_str){PROTO[k], strlen(PROTO[k])};
    for (unsigned b = 0; b < 256; b++) v->tokens[v->n_tokens++] = (ds4_str){v->bytes[b], byte_token(b, v->bytes[b])};
    static const char *extra[] = {"he", "ll", "hell", "hello", "\xC4\xA0w", "\xC4\xA0wor", "or", "ld", "\xC4\xA0world"};
    for (size_t i = 0; i < sizeof(extra) / sizeof(extra[0]); i++)
        v->tokens[v->n_tokens++] = (ds4_str){extra[i], strlen(extra[i])};
    static const char *merges[] = {
        "h e", "l l", "he ll", "hell o", "\xC4\xA0 w", "o r", "\xC4\xA0w or",
        "l d", "\xC4\xA0wor ld",
        "x y",     /* result "xy" is not a token: ignored */
        "zz q",    /* side "zz" is not a token: ignored */
        "h e",     /* duplicate: ignored */
    };
    for (size_t i = 0; i < sizeof(merges) / sizeof(merges[0]); i++)
        v->merges[v->n_merges++] = (ds4_str){merges[i], strlen(merges[i])};
}

static void test_small_vocab(void **state) {
    small_vocab sv;
    make_small(&sv, -1);
    ds4_err err = {{0}};
    ds4_tokenizer *t = ds4_tokenizer_create(sv.tokens, sv.n_tokens, sv.merges, sv.n_merges, &err);
    if (!t) fail_msg("%s", err.msg);
    assert_int_equal(ds4_tokenizer_n_vocab(t), 7 + 256 + 9);
    assert_int_equal(ds4_tokenizer_specials(t)->dsml, 6);

    ds4_tokvec v = {0};
    assert_int_equal(ds4_tokenize(t, "hello world xy<think>", 21, true, &v, &err), 0);
    int32_t hello = ds4_tokenizer_find(t, "hello", 5), world = ds4_tokenizer_find(t, "\xC4\xA0world", 7);
    int32_t sp = ds4_tokenizer_find(t, "\xC4\xA0", 2), x = ds4_tokenizer_find(t, "x", 1), y = ds4_tokenizer_find(t, "y", 1);
    const int32_t want[] = {hello, world, sp, x, y, 4};
    assert_int_equal(v.n, 6);
    assert_memory_equal(v.ids, want, sizeof(want));
    ds4_tokvec_free(&v);

    ds4_rng r;
    ds4_rng_seed(&r, 7);
    char buf[300];
    for (int it = 0; it < 500; it++) {
        size_t n = ds4_rng_below(&r, sizeof(buf));
        static const char alpha[] = "helo wrd<think>\xC3\xA9 1";
        for (size_t i = 0; i < n; i++)
            buf[i] = it & 1 ? (char)ds4_rng_below(&r, 256) : alpha[ds4_rng_below(&r, sizeof(alpha) - 1)];
        assert_roundtrip(t, buf, n, false);
        assert_roundtrip(t, buf, n, true);
    }
    ds4_tokenizer_free(t);
}

static void test_missing_protocol_token(void **state) {
    static const char *names[7] = {"begin", "end", "User", "Assistant", "<think>", "</think>", "DSML"};
    for (int k = 0; k < 7; k++) {
        small_vocab sv;
        make_small(&sv, k);
        ds4_err err = {{0}};
        ds4_tokenizer *t = ds4_tokenizer_create(sv.tokens, sv.n_tokens, sv.merges, sv.n_merges, &err);
        assert_null(t);
        if (!strstr(err.msg, names[k])) fail_msg("error does not name the missing token %s: %s", names[k], err.msg);
    }
}

static void test_construction_errors(void **state) {
    small_vocab sv;
    ds4_err err = {{0}};
    /* A missing byte token. */
    make_small(&sv, -1);
    sv.tokens[7 + 'A'] = (ds4_str){"AA", 2};
    assert_null(ds4_tokenizer_create(sv.tokens, sv.n_tokens, sv.merges, sv.n_merges, &err));
    assert_non_null(strstr(err.msg, "0x41"));
    /* Malformed merges. */
    static const char *bad[] = {"he", "h  e", " he", "he ", "", "a b c"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        make_small(&sv, -1);
        sv.merges[3] = (ds4_str){bad[i], strlen(bad[i])};
        assert_null(ds4_tokenizer_create(sv.tokens, sv.n_tokens, sv.merges, sv.n_merges, &err));
        assert_non_null(strstr(err.msg, "merge 3"));
    }
    assert_null(ds4_tokenizer_create(sv.tokens, 0, NULL, 0, &err));
}

/* ---------------------------------------------------------------- tests: tokenizer data file */

static void test_tokdata(void **state) {
    ds4_tokdata td;
    ds4_err err = {{0}};
    if (ds4_tokdata_load(tokdata_path(), &td, &err)) fail_msg("%s", err.msg);
    assert_int_equal(td.n_tokens, 129280);
    assert_true(td.n_merges > 100000);
    assert_int_equal(td.tokens[128821].len, 7);
    assert_memory_equal(td.tokens[128821].ptr, "<think>", 7);
    ds4_tokdata_free(&td);

    /* A small valid file, then every truncation and some corruptions. */
    unsigned char f[64];
    size_t n = 0;
    memcpy(f, "DS4TOK1\0", 8);
    n = 8;
#define PUT32(v) (f[n] = (unsigned char)(v), f[n + 1] = (unsigned char)((v) >> 8), f[n + 2] = (unsigned char)((v) >> 16), f[n + 3] = (unsigned char)((v) >> 24), n += 4)
    PUT32(2u);
    PUT32(1u);
    f[n++] = 'a';
    PUT32(2u);
    f[n++] = 'b';
    f[n++] = 'c';
    PUT32(1u);
    PUT32(3u);
    memcpy(f + n, "a b", 3);
    n += 3;
    assert_int_equal(ds4_tokdata_parse(f, n, &td, &err), 0);
    assert_int_equal(td.n_tokens, 2);
    assert_int_equal(td.tokens[1].len, 2);
    assert_memory_equal(td.tokens[1].ptr, "bc", 2);
    assert_int_equal(td.n_merges, 1);
    ds4_tokdata_free(&td);
    for (size_t cut = 0; cut < n; cut++) {
        assert_int_equal(ds4_tokdata_parse(f, cut, &td, &err), -1);
        assert_null(td.tokens);
    }
    f[n] = 0;
    assert_int_equal(ds4_tokdata_parse(f, n + 1, &td, &err), -1); /* trailing byte */
    assert_non_null(strstr(err.msg, "after the last merge"));
    unsigned char g[64];
    memcpy(g, f, n);
    g[0] = 'X';
    assert_int_equal(ds4_tokdata_parse(g, n, &td, &err), -1);
    assert_non_null(strstr(err.msg, "magic"));
    memcpy(g, f, n);
    g[8] = 0xFF, g[9] = 0xFF, g[10] = 0xFF, g[11] = 0x7F; /* huge token count */
    assert_int_equal(ds4_tokdata_parse(g, n, &td, &err), -1);
    assert_non_null(strstr(err.msg, "impossible"));
    memcpy(g, f, n);
    g[12] = 0xF0, g[13] = 0xFF, g[14] = 0xFF, g[15] = 0xFF; /* huge string length */
    assert_int_equal(ds4_tokdata_parse(g, n, &td, &err), -1);
    assert_non_null(strstr(err.msg, "truncated"));
    assert_int_equal(ds4_tokdata_load("/nonexistent/x.tok", &td, &err), -1);
    assert_non_null(strstr(err.msg, "/nonexistent/x.tok"));
#undef PUT32
}

/* ---------------------------------------------------------------- tests: a large text */

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void test_large_text(void **state) {
    size_t target = 1300 * 1000, n = 0;
    char *big = malloc(target + g_corpus_len);
    assert_non_null(big);
    while (n < target) {
        memcpy(big + n, g_corpus, g_corpus_len);
        n += g_corpus_len;
    }
    n = target;
    ds4_tokvec v = {0};
    ds4_err err = {{0}};
    double t0 = now_ms();
    assert_int_equal(ds4_tokenize(g_tok, big, n, true, &v, &err), 0);
    double t1 = now_ms();
    printf("large text: %zu bytes -> %zu tokens in %.1f ms (%.1f MB/s)\n", n, v.n, t1 - t0, n / 1e3 / (t1 - t0));
    char *back;
    size_t blen;
    assert_int_equal(ds4_detokenize(g_tok, v.ids, v.n, &back, &blen, &err), 0);
    assert_int_equal(blen, n);
    assert_memory_equal(back, big, n);
    free(back);
    ds4_tokvec_free(&v);

    /* Long single pieces: whitespace, one letter run, one punctuation run. */
    memset(big, ' ', 200000);
    assert_roundtrip(g_tok, big, 200000, false);
    memset(big, 'a', 200000);
    assert_roundtrip(g_tok, big, 200000, false);
    memset(big, '-', 200000);
    assert_roundtrip(g_tok, big, 200000, false);
    free(big);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_oracle_plain),
        cmocka_unit_test(test_oracle_special),
        cmocka_unit_test(test_roundtrip_corpus),
        cmocka_unit_test(test_roundtrip_invalid_utf8),
        cmocka_unit_test(test_invalid_byte_class),
        cmocka_unit_test(test_roundtrip_random),
        cmocka_unit_test(test_special_example),
        cmocka_unit_test(test_specials_single),
        cmocka_unit_test(test_plain_ignores_specials),
        cmocka_unit_test(test_tokenize_appends),
        cmocka_unit_test(test_token_text),
        cmocka_unit_test(test_utf8_incomplete_tail),
        cmocka_unit_test(test_detok_stream),
        cmocka_unit_test(test_small_vocab),
        cmocka_unit_test(test_missing_protocol_token),
        cmocka_unit_test(test_construction_errors),
        cmocka_unit_test(test_tokdata),
        cmocka_unit_test(test_large_text),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
