/* Disk KV cache with real files and a tiny synthetic model: store, list,
 * lookup by a longer rendered prompt, load into a fresh session and continue
 * bit-identically; the file layout; refusal of another prefill chunk;
 * truncation and bit flips detected and the file deleted; eviction within a
 * tiny budget; the tool-id map section round trip (INTERFACES.md §7). */
#include <sys/stat.h>
#include <unistd.h>

#include "engine_test_util.h"
#include "server/kvdisk.h"
#include "text/tokenizer.h"

#define NTOK 800
#define CTX 1024
#define CHUNK 128

static ds4_model *g_model;
static ds4_tokenizer *g_tok;
static int32_t g_toks[NTOK];
static ds4_session *g_s520, *g_s560, *g_s600; /* sessions holding the first 520 / 560 / 600 tokens */
static uint64_t g_clock = 1700000000;

/* ------------------------------------------------------------------ helpers */

static char g_log[256][600];
static int g_nlog;

static void log_cb(void *ud, const char *line) {
    (void)ud;
    if (getenv("DS4_TEST_VERBOSE")) fprintf(stderr, "%s\n", line);
    snprintf(g_log[g_nlog % 256], sizeof(g_log[0]), "%s", line);
    g_nlog++;
}

static void log_clear(void) { g_nlog = 0; }

static bool log_has(const char *a, const char *b) {
    for (int i = 0; i < g_nlog && i < 256; i++)
        if (strstr(g_log[i], a) && (!b || strstr(g_log[i], b))) return true;
    return false;
}

static uint64_t clock_cb(void *ud) {
    (void)ud;
    return g_clock;
}

static ds4_kvdisk_opts test_opts(const ds4_session *s) {
    ds4_kvdisk_opts o;
    ds4_kvdisk_opts_default(&o, s);
    o.log = log_cb;
    o.clock = clock_cb;
    return o;
}

static const char *dir_for(const char *name) {
    static char buf[4][4096];
    static int k;
    k = (k + 1) & 3;
    snprintf(buf[k], sizeof(buf[k]), "%s/%s", test_tmp_dir(), name);
    return buf[k];
}

static ds4_kvdisk *open_cache(const char *dir, const ds4_kvdisk_opts *o) {
    ds4_err err = {{0}};
    ds4_kvdisk *c = ds4_kvdisk_open(dir, o, &err);
    if (!c) fail_msg("open %s: %s", dir, err.msg);
    return c;
}

/* The cache text of the first n tokens: their concatenated token_text. */
static char *text_of(int n, size_t *len) {
    char *t = NULL;
    ds4_err err = {{0}};
    if (ds4_detokenize(g_tok, g_toks, (size_t)n, &t, len, &err) != 0) fail_msg("detokenize: %s", err.msg);
    return t;
}

static ds4_session *session_at(int ctx, int chunk, int n) {
    ds4_session *s = test_session(g_model, ctx, chunk, false);
    ds4_err err = {{0}};
    if (n > 0 && ds4_session_eval(s, g_toks, n, NULL, &err) != 0) fail_msg("eval: %s", err.msg);
    return s;
}

static ds4_kvdisk_store_result store(ds4_kvdisk *c, ds4_session *s, const char *text, size_t len,
                                     const ds4_kvdisk_tool *tools, size_t n_tools, ds4_kvdisk_outcome want) {
    ds4_kvdisk_store_req req = {text, len, DS4_KVDISK_REASON_COLD, DS4_KVDISK_KEY_TOKEN_TEXT, tools, n_tools};
    ds4_kvdisk_store_result r;
    ds4_err err = {{0}};
    if (ds4_kvdisk_store(c, s, &req, &r, &err) != 0) fail_msg("store: %s", err.msg);
    if (r.outcome != want)
        fail_msg("store: outcome %s (%s), expected %s", ds4_kvdisk_outcome_name(r.outcome), r.why,
                 ds4_kvdisk_outcome_name(want));
    return r;
}

/* Store the first n tokens' session under their text. */
static ds4_kvdisk_store_result store_n(ds4_kvdisk *c, ds4_session *s, int n) {
    size_t len;
    char *t = text_of(n, &len);
    ds4_kvdisk_store_result r = store(c, s, t, len, NULL, 0, DS4_KVDISK_STORED);
    free(t);
    return r;
}

static const char *path_in(const char *dir, const char *name) {
    static char buf[4][4096];
    static int k;
    k = (k + 1) & 3;
    snprintf(buf[k], sizeof(buf[k]), "%s/%s", dir, name);
    return buf[k];
}

static bool exists(const char *path) { return access(path, F_OK) == 0; }

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static size_t count_kv(ds4_kvdisk *c, uint64_t *total) {
    ds4_kvdisk_entry *v;
    size_t n;
    ds4_err err = {{0}};
    assert_int_equal(ds4_kvdisk_list(c, &v, &n, total, &err), 0);
    free(v);
    return n;
}

static uint32_t le32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t le64(const uint8_t *p) { return le32(p) | (uint64_t)le32(p + 4) << 32; }

/* ------------------------------------------------------------------ setup */

static int setup(void **state) {
    (void)state;
    g_model = test_open_model(test_synth("kvdisk", "--seed 31 --ffn-gain 3 --index-topk 8"));
    ds4_err err = {{0}};
    g_tok = ds4_tokenizer_from_gguf(g_model->file, &err);
    if (!g_tok) fail_msg("tokenizer: %s", err.msg);
    /* Ordinary tokens only (ids 300..499): their texts are non-empty, so
     * every prefix of the token list has a distinct cache text. */
    uint64_t x = 12345;
    for (int i = 0; i < NTOK; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        g_toks[i] = 300 + (int32_t)((x >> 33) % 200);
    }
    g_s520 = session_at(CTX, CHUNK, 520);
    g_s560 = session_at(CTX, CHUNK, 560);
    g_s600 = session_at(CTX, CHUNK, 600);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    ds4_session_free(g_s520);
    ds4_session_free(g_s560);
    ds4_session_free(g_s600);
    ds4_tokenizer_free(g_tok);
    ds4_model_close(g_model);
    return 0;
}

/* ------------------------------------------------------------------ tests */

/* Store ~600 tokens, list, look up with a longer rendered prompt, load into a
 * fresh session, continue: identical to never having stopped. */
static void test_round_trip(void **state) {
    (void)state;
    const char *dir = dir_for("rt/a/b"); /* created recursively */
    ds4_kvdisk_opts o = test_opts(g_s600);
    assert_int_equal(o.boundary_align_tokens, CHUNK);
    ds4_kvdisk *c = open_cache(dir, &o);
    struct stat st;
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    assert_int_equal(stat(dir_for("rt/a"), &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);

    size_t tlen, plen;
    char *text = text_of(600, &tlen);
    char *prompt = text_of(700, &plen);
    ds4_kvdisk_store_result sr = store(c, g_s600, text, tlen, NULL, 0, DS4_KVDISK_STORED);
    char sha[41];
    ds4_kvdisk_sha1_hex(text, tlen, sha);
    assert_memory_equal(sr.name, sha, 40);
    assert_string_equal(sr.name + 40, ".kv");
    const uint64_t payload = ds4_session_payload_size(g_s600);
    assert_true(sr.file_bytes == ds4_kvdisk_file_bytes(tlen, payload, 0));
    assert_true(log_has("stored", sr.name));

    /* list */
    ds4_kvdisk_entry *v;
    size_t n;
    uint64_t total;
    ds4_err err = {{0}};
    assert_int_equal(ds4_kvdisk_list(c, &v, &n, &total, &err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(v[0].name, sr.name);
    assert_int_equal(v[0].tokens, 600);
    assert_int_equal(v[0].text_bytes, tlen);
    assert_int_equal(v[0].reason, DS4_KVDISK_REASON_COLD);
    assert_int_equal(v[0].ext, DS4_KVDISK_EXT_CHECKSUM);
    assert_int_equal(v[0].hits, 0);
    assert_int_equal(v[0].ctx, CTX);
    assert_int_equal(v[0].payload_chunk, CHUNK);
    assert_true(v[0].created == g_clock && v[0].last_used == g_clock);
    assert_true(v[0].payload_bytes == payload && v[0].file_bytes == sr.file_bytes && total == sr.file_bytes);
    assert_int_equal(ds4_kvdisk_entry_key(&v[0]), DS4_KVDISK_KEY_TOKEN_TEXT);
    free(v);

    /* lookup: a longer prompt finds it; a shorter one or a different byte does not */
    ds4_kvdisk_entry best;
    ds4_session *fresh = test_session(g_model, CTX, CHUNK, false);
    assert_int_equal(ds4_kvdisk_lookup(c, fresh, prompt, plen, &best, &err), 1);
    assert_string_equal(best.name, sr.name);
    assert_int_equal(ds4_kvdisk_lookup(c, fresh, prompt, tlen - 1, &best, &err), 0);
    assert_int_equal(ds4_kvdisk_lookup(c, fresh, prompt, tlen, &best, &err), 1); /* exactly the text */
    prompt[tlen / 2] ^= 1;
    assert_int_equal(ds4_kvdisk_lookup(c, fresh, prompt, plen, &best, &err), 0);
    prompt[tlen / 2] ^= 1;

    /* load into a fresh session and continue */
    g_clock += 60;
    ds4_kvdisk_load_result lr;
    assert_int_equal(ds4_kvdisk_restore(c, fresh, prompt, plen, &lr, &err), 0);
    assert_int_equal(lr.outcome, DS4_KVDISK_LOADED);
    assert_int_equal(lr.tokens, 600);
    assert_int_equal(lr.text_bytes, tlen);
    assert_false(lr.consumed);
    assert_int_equal(lr.tools.n, 0);
    assert_int_equal(ds4_session_n_tokens(fresh), 600);
    assert_memory_equal(ds4_session_tokens(fresh), g_toks, 600 * sizeof(int32_t));
    ds4_kvdisk_load_result_free(&lr);

    const int64_t V = g_model->hp.n_vocab;
    float *ref = malloc(sizeof(float) * 700 * (size_t)V), *got = malloc(sizeof(float) * 100 * (size_t)V);
    ds4_session *whole = test_session(g_model, CTX, CHUNK, false);
    assert_int_equal(ds4_session_eval(whole, g_toks, 700, ref, &err), 0);
    assert_memory_equal(ds4_session_logits(fresh), ref + 599 * V, sizeof(float) * (size_t)V);
    assert_int_equal(ds4_session_eval(fresh, g_toks + 600, 100, got, &err), 0);
    assert_memory_equal(got, ref + 600 * V, sizeof(float) * 100 * (size_t)V);
    free(ref);
    free(got);
    ds4_session_free(whole);

    /* the hit was counted in place and the file still verifies */
    assert_int_equal(ds4_kvdisk_list(c, &v, &n, NULL, &err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(v[0].hits, 1);
    assert_true(v[0].last_used == g_clock && v[0].created == g_clock - 60);
    free(v);
    g_clock += 60;
    assert_int_equal(ds4_kvdisk_load(c, sr.name, fresh, prompt, plen, &lr, &err), 0);
    assert_int_equal(lr.outcome, DS4_KVDISK_LOADED);
    assert_int_equal(lr.entry.hits, 1);
    ds4_kvdisk_load_result_free(&lr);
    assert_int_equal(ds4_kvdisk_list(c, &v, &n, NULL, &err), 0);
    assert_int_equal(v[0].hits, 2);
    free(v);

    /* reopening finds it again (restart) */
    ds4_kvdisk_close(c);
    c = open_cache(dir, &o);
    assert_int_equal(ds4_kvdisk_lookup(c, fresh, prompt, plen, &best, &err), 1);
    ds4_kvdisk_close(c);
    ds4_session_free(fresh);
    free(text);
    free(prompt);
}

/* The bytes on disk are exactly the documented layout. */
static void test_file_layout(void **state) {
    (void)state;
    const char *dir = dir_for("layout");
    ds4_kvdisk_opts o = test_opts(g_s600);
    ds4_kvdisk *c = open_cache(dir, &o);
    size_t tlen;
    char *text = text_of(560, &tlen);
    ds4_kvdisk_store_req req = {text, tlen, DS4_KVDISK_REASON_CONTINUED, DS4_KVDISK_KEY_THINKING_VISIBLE, NULL, 0};
    ds4_kvdisk_store_result sr;
    ds4_err err = {{0}};
    assert_int_equal(ds4_kvdisk_store(c, g_s560, &req, &sr, &err), 0);
    assert_int_equal(sr.outcome, DS4_KVDISK_STORED);
    size_t n;
    uint8_t *b = test_read_file(path_in(dir, sr.name), &n);
    assert_non_null(b);
    const uint64_t payload = ds4_session_payload_size(g_s560);
    assert_int_equal(n, 52 + tlen + payload + 28);
    assert_memory_equal(b, "KVC\x01", 4);
    assert_int_equal(b[4], o.quant_bits);
    assert_int_equal(b[5], 2);                           /* continued */
    assert_int_equal(b[6], 0x08 | 0x04);                 /* integrity section + thinking-visible key */
    assert_int_equal(b[7], 0);
    assert_int_equal(le32(b + 8), 560);
    assert_int_equal(le32(b + 12), 0);
    assert_int_equal(le32(b + 16), CTX);
    assert_int_equal(le32(b + 20), 0);
    assert_true(le64(b + 24) == g_clock && le64(b + 32) == g_clock);
    assert_true(le64(b + 40) == payload);
    assert_int_equal(le32(b + 48), tlen);
    assert_memory_equal(b + 52, text, tlen);
    uint8_t *snap;
    size_t slen;
    assert_int_equal(ds4_session_snapshot(g_s560, &snap, &slen, &err), 0);
    assert_int_equal(slen, payload);
    assert_memory_equal(b + 52 + tlen, snap, slen); /* the §7.4 payload, verbatim */
    free(snap);
    /* integrity section: body CRC with the mutable bytes as zero, trailer CRC
     * over the flags byte (no sections), meta CRC over hits and last used */
    const uint8_t *ck = b + n - 28;
    assert_memory_equal(ck, "KCK\x01", 4);
    uint8_t h[48];
    memcpy(h, b, 48);
    h[6] = 0;
    memset(h + 12, 0, 4);
    memset(h + 32, 0, 8);
    uint64_t crc = ds4_kvdisk_crc64(0, h, 48);
    crc = ds4_kvdisk_crc64(crc, b + 48, n - 28 - 48);
    assert_true(le64(ck + 4) == crc);
    assert_true(le64(ck + 12) == ds4_kvdisk_crc64(0, b + 6, 1));
    assert_true(le64(ck + 20) == ds4_kvdisk_crc64(ds4_kvdisk_crc64(0, b + 12, 4), b + 32, 8));
    ds4_kvdisk_entry *v;
    size_t nv;
    assert_int_equal(ds4_kvdisk_list(c, &v, &nv, NULL, &err), 0);
    assert_int_equal(ds4_kvdisk_entry_key(&v[0]), DS4_KVDISK_KEY_THINKING_VISIBLE);
    free(v);
    /* the same store again (no tool map either time) leaves the file as it is */
    g_clock += 5;
    assert_int_equal(ds4_kvdisk_store(c, g_s560, &req, &sr, &err), 0);
    assert_int_equal(sr.outcome, DS4_KVDISK_REFRESHED);
    size_t n2;
    uint8_t *b2 = test_read_file(path_in(dir, sr.name), &n2);
    assert_int_equal(n2, n);
    assert_memory_equal(b2, b, n);
    free(b2);
    free(b);
    free(text);
    ds4_kvdisk_close(c);
}

/* Longest text prefix wins; non-prefixes are ignored. */
static void test_longest_prefix(void **state) {
    (void)state;
    const char *dir = dir_for("longest");
    ds4_kvdisk_opts o = test_opts(g_s600);
    ds4_kvdisk *c = open_cache(dir, &o);
    ds4_kvdisk_store_result r520 = store_n(c, g_s520, 520), r600 = store_n(c, g_s600, 600);
    /* a file whose text is not a prefix of anything below */
    size_t ol;
    char *other = text_of(560, &ol);
    other[10] ^= 0x20;
    store(c, g_s560, other, ol, NULL, 0, DS4_KVDISK_STORED);
    free(other);

    ds4_kvdisk_entry best;
    ds4_err err = {{0}};
    size_t len;
    char *p = text_of(700, &len);
    assert_int_equal(ds4_kvdisk_lookup(c, g_s600, p, len, &best, &err), 1);
    assert_string_equal(best.name, r600.name);
    free(p);
    p = text_of(580, &len);
    assert_int_equal(ds4_kvdisk_lookup(c, g_s600, p, len, &best, &err), 1);
    assert_string_equal(best.name, r520.name);
    free(p);
    p = text_of(519, &len);
    assert_int_equal(ds4_kvdisk_lookup(c, g_s600, p, len, &best, &err), 0);
    free(p);

    /* min_tokens filters what is looked up: a cache that wants 550+ tokens
     * only sees the 600-token file. */
    ds4_kvdisk_close(c);
    o.min_tokens = 550;
    c = open_cache(dir, &o);
    p = text_of(580, &len);
    assert_int_equal(ds4_kvdisk_lookup(c, g_s600, p, len, &best, &err), 0);
    free(p);
    /* and a session below min_tokens is not stored */
    size_t tl;
    char *t = text_of(520, &tl);
    ds4_kvdisk_store_result sr = store(c, g_s520, t, tl, NULL, 0, DS4_KVDISK_SKIPPED_SHORT);
    assert_non_null(strstr(sr.why, "fewer than min_tokens"));
    free(t);
    ds4_kvdisk_close(c);
}

/* A checkpoint written with another prefill chunk is refused as
 * incompatible (and kept); so is one from a larger context. */
static void test_other_chunk_refused(void **state) {
    (void)state;
    const char *dir = dir_for("chunk");
    ds4_session *s64 = session_at(CTX, 64, 600);
    ds4_kvdisk_opts o = test_opts(s64);
    assert_int_equal(o.boundary_align_tokens, 64);
    ds4_kvdisk *c = open_cache(dir, &o);
    ds4_kvdisk_store_result sr = store_n(c, s64, 600);
    ds4_session_free(s64);

    size_t len;
    char *p = text_of(700, &len);
    ds4_err err = {{0}};
    ds4_session *s = session_at(CTX, CHUNK, 10);
    ds4_kvdisk_entry best;
    assert_int_equal(ds4_kvdisk_lookup(c, s, p, len, &best, &err), 0);    /* filtered */
    assert_int_equal(ds4_kvdisk_lookup(c, NULL, p, len, &best, &err), 1); /* no session: listed */
    ds4_kvdisk_load_result lr;
    log_clear();
    assert_int_equal(ds4_kvdisk_load(c, sr.name, s, p, len, &lr, &err), 0);
    assert_int_equal(lr.outcome, DS4_KVDISK_INCOMPATIBLE);
    assert_non_null(strstr(lr.why, "incompatible checkpoint: prefill chunk 64 differs from this session's 128"));
    assert_false(lr.session_reset);
    assert_int_equal(ds4_session_n_tokens(s), 10); /* untouched */
    assert_true(exists(path_in(dir, sr.name)));   /* kept for runtimes that can use it */
    assert_true(log_has("not using", "prefill chunk 64"));
    assert_int_equal(ds4_kvdisk_restore(c, s, p, len, &lr, &err), 0);
    assert_int_equal(lr.outcome, DS4_KVDISK_MISS);
    ds4_session_free(s);

    /* Same check for a smaller context than the writer's. */
    s = session_at(CTX / 2 + 128, 64, 0);
    assert_int_equal(ds4_kvdisk_load(c, sr.name, s, p, len, &lr, &err), 0);
    assert_int_equal(lr.outcome, DS4_KVDISK_INCOMPATIBLE);
    assert_non_null(strstr(lr.why, "ctx"));
    ds4_session_free(s);
    free(p);
    ds4_kvdisk_close(c);
}

/* Store one checkpoint with a tool map into a fresh directory; return its
 * bytes (for damaging copies) and name. */
static uint8_t *stored_bytes(const char *dir, ds4_kvdisk **cache, char name[64], size_t *n, size_t *text_len) {
    ds4_kvdisk_opts o = test_opts(g_s600);
    ds4_kvdisk *c = open_cache(dir, &o);
    size_t tl;
    char *text = text_of(600, &tl);
    /* any bytes of the text can stand in for a sampled DSML block */
    const ds4_kvdisk_tool tools[1] = {{"call_x", 6, text + 100, 40}};
    ds4_kvdisk_store_result sr = store(c, g_s600, text, tl, tools, 1, DS4_KVDISK_STORED);
    assert_int_equal(sr.tools_written, 1);
    snprintf(name, 64, "%s", sr.name);
    uint8_t *b = test_read_file(path_in(dir, sr.name), n);
    assert_non_null(b);
    free(text);
    *cache = c;
    if (text_len) *text_len = tl;
    return b;
}

/* One fresh session and the 700-token prompt, shared by the damage tests
 * (a corrupt file must never touch the session). */
static ds4_session *g_probe;
static char *g_prompt;
static size_t g_prompt_len;

static void probe_begin(void) {
    g_probe = test_session(g_model, CTX, CHUNK, false);
    g_prompt = text_of(700, &g_prompt_len);
}

static void probe_end(void) {
    ds4_session_free(g_probe);
    free(g_prompt);
}

static void expect_corrupt(ds4_kvdisk *c, const char *dir, const char *name, const char *what, size_t off) {
    ds4_kvdisk_load_result lr;
    ds4_err err = {{0}};
    log_clear();
    if (ds4_kvdisk_load(c, name, g_probe, g_prompt, g_prompt_len, &lr, &err) != 0)
        fail_msg("%s at %zu: load failed: %s", what, off, err.msg);
    if (lr.outcome != DS4_KVDISK_CORRUPT)
        fail_msg("%s at offset %zu: outcome %s (%s), expected corrupt", what, off, ds4_kvdisk_outcome_name(lr.outcome),
                 lr.why);
    if (exists(path_in(dir, name))) fail_msg("%s at offset %zu: the file was not deleted", what, off);
    if (!log_has("deleted corrupt checkpoint", name)) fail_msg("%s at offset %zu: no log line", what, off);
    if (lr.session_reset || ds4_session_n_tokens(g_probe) != 0) fail_msg("%s at offset %zu: session touched", what, off);
}

static void test_truncation_detected(void **state) {
    (void)state;
    const char *dir = dir_for("trunc");
    ds4_kvdisk *c;
    char name[64];
    size_t n, tl;
    uint8_t *b = stored_bytes(dir, &c, name, &n, &tl);
    probe_begin();
    const size_t body_end = n - 28 - (8 + 8 + 6 + 40);
    const size_t cuts[] = {0,      1,       3,           47,          48,          51,       52,       52 + tl / 2,
                           52 + tl, 52 + tl + 51, 52 + tl + 1000, (52 + tl + body_end) / 2, body_end - 1, body_end,
                           body_end + 4, body_end + 20, n - 29, n - 28, n - 27, n - 8, n - 1};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        write_file(path_in(dir, name), b, cuts[i]);
        expect_corrupt(c, dir, name, "truncation", cuts[i]);
    }
    /* one byte too many */
    uint8_t *longer = malloc(n + 1);
    memcpy(longer, b, n);
    longer[n] = 0;
    write_file(path_in(dir, name), longer, n + 1);
    expect_corrupt(c, dir, name, "extension", n);
    free(longer);

    /* lookup never returns a truncated file: listing deletes it */
    write_file(path_in(dir, name), b, body_end - 10);
    size_t plen;
    char *p = text_of(700, &plen);
    ds4_kvdisk_entry best;
    ds4_err err = {{0}};
    log_clear();
    assert_int_equal(ds4_kvdisk_lookup(c, g_s600, p, plen, &best, &err), 0);
    assert_false(exists(path_in(dir, name)));
    assert_true(log_has("deleted corrupt checkpoint", "truncated"));
    /* the intact file still loads after all this */
    write_file(path_in(dir, name), b, n);
    ds4_session *s = test_session(g_model, CTX, CHUNK, false);
    ds4_kvdisk_load_result lr;
    assert_int_equal(ds4_kvdisk_restore(c, s, p, plen, &lr, &err), 0);
    assert_int_equal(lr.outcome, DS4_KVDISK_LOADED);
    ds4_kvdisk_load_result_free(&lr);
    ds4_session_free(s);
    free(p);
    free(b);
    probe_end();
    ds4_kvdisk_close(c);
}

static void test_bit_flips_detected(void **state) {
    (void)state;
    const char *dir = dir_for("flips");
    ds4_kvdisk *c;
    char name[64];
    size_t n, tl;
    uint8_t *b = stored_bytes(dir, &c, name, &n, &tl);
    probe_begin();
    uint8_t *cp = malloc(n);
    int tried = 0;
    for (size_t off = 0; off < n; off++) {
        /* every byte of the header, the payload header and the trailer (tool
         * map + integrity section); a spread through the text and payload */
        const size_t pay = 52 + tl;
        const bool every = off < 52 || (off >= pay && off < pay + 256) || off >= n - 200;
        const bool text = off >= 52 && off < pay && off % 13 == 0;
        if (!every && !text && off % 509 != 0) continue;
        memcpy(cp, b, n);
        cp[off] ^= (uint8_t)(1u << (off % 8));
        write_file(path_in(dir, name), cp, n);
        expect_corrupt(c, dir, name, "bit flip", off);
        tried++;
    }
    assert_true(tried > 2500);

    /* restore falls back to the next candidate when the best is corrupt */
    ds4_kvdisk_store_result r520 = store_n(c, g_s520, 520);
    memcpy(cp, b, n);
    cp[n / 2] ^= 0x10;
    write_file(path_in(dir, name), cp, n);
    size_t plen;
    char *p = text_of(700, &plen);
    ds4_session *s = test_session(g_model, CTX, CHUNK, false);
    ds4_kvdisk_load_result lr;
    ds4_err err = {{0}};
    log_clear();
    assert_int_equal(ds4_kvdisk_restore(c, s, p, plen, &lr, &err), 0);
    assert_int_equal(lr.outcome, DS4_KVDISK_LOADED);
    assert_string_equal(lr.entry.name, r520.name);
    assert_int_equal(ds4_session_n_tokens(s), 520);
    assert_false(exists(path_in(dir, name)));
    assert_true(log_has("deleted corrupt checkpoint", "body CRC mismatch"));
    ds4_kvdisk_load_result_free(&lr);
    ds4_session_free(s);
    free(p);
    free(cp);
    free(b);
    probe_end();
    ds4_kvdisk_close(c);
}

/* Files without the integrity section (e.g. the reference's) are never used;
 * other names in the directory are left alone; stale temporaries of dead
 * writers are removed; upper-case names are accepted. */
static void test_directory_hygiene(void **state) {
    (void)state;
    const char *dir = dir_for("hygiene");
    ds4_kvdisk *c;
    char name[64];
    size_t n;
    uint8_t *b = stored_bytes(dir, &c, name, &n, NULL);
    ds4_kvdisk_close(c);

    /* strip the integrity section and clear bit 3: a reference-style file */
    uint8_t *ref = malloc(n);
    memcpy(ref, b, n);
    ref[6] &= (uint8_t)~0x08;
    write_file(path_in(dir, name), ref, n - 28);
    char tmp_mine[4200], tmp_dead[4200], tmp_live[4200], upper[64];
    snprintf(tmp_mine, sizeof(tmp_mine), "%s/%s.tmp.%ld", dir, name, (long)getpid());
    snprintf(tmp_dead, sizeof(tmp_dead), "%s/%s.tmp.%d", dir, name, 2000000000);
    snprintf(tmp_live, sizeof(tmp_live), "%s/%s.tmp.%ld", dir, name, (long)getppid());
    write_file(tmp_mine, "x", 1);
    write_file(tmp_dead, "x", 1);
    write_file(tmp_live, "x", 1);
    write_file(path_in(dir, "notes.txt"), "hello", 5);
    write_file(path_in(dir, "0123.kv"), "hello", 5);
    log_clear();
    ds4_kvdisk_opts o = test_opts(g_s600);
    c = open_cache(dir, &o);
    assert_false(exists(path_in(dir, name)));
    assert_true(log_has("deleted corrupt checkpoint", "no integrity section"));
    assert_false(exists(tmp_mine));
    assert_false(exists(tmp_dead));
    assert_true(exists(tmp_live)); /* its writer may still be running */
    assert_true(exists(path_in(dir, "notes.txt")));
    assert_true(exists(path_in(dir, "0123.kv")));
    unlink(tmp_live);

    /* upper-case hex names are read (and matched lower-cased) */
    for (int i = 0; i < 64 && name[i]; i++) upper[i] = (char)(name[i] >= 'a' && name[i] <= 'f' ? name[i] - 32 : name[i]);
    upper[strlen(name)] = 0;
    write_file(path_in(dir, upper), b, n);
    size_t plen;
    char *p = text_of(700, &plen);
    ds4_session *s = test_session(g_model, CTX, CHUNK, false);
    ds4_kvdisk_load_result lr;
    ds4_err err = {{0}};
    assert_int_equal(ds4_kvdisk_restore(c, s, p, plen, &lr, &err), 0);
    assert_int_equal(lr.outcome, DS4_KVDISK_LOADED);
    assert_string_equal(lr.entry.name, upper);
    assert_memory_equal(lr.entry.sha1, name, 40);
    assert_int_equal(lr.tools.n, 1);
    ds4_kvdisk_load_result_free(&lr);
    ds4_session_free(s);
    free(p);
    free(ref);
    free(b);
    ds4_kvdisk_close(c);
}

/* Checkpoints over cold_max_tokens are consumed by a hit; the quant rule. */
static void test_consume_and_quant(void **state) {
    (void)state;
    const char *dir = dir_for("consume");
    ds4_kvdisk_opts o = test_opts(g_s600);
    o.cold_max_tokens = 550;
    ds4_kvdisk *c = open_cache(dir, &o);
    ds4_kvdisk_store_result r600 = store_n(c, g_s600, 600), r520 = store_n(c, g_s520, 520);
    size_t plen;
    char *p = text_of(700, &plen);
    ds4_session *s = test_session(g_model, CTX, CHUNK, false);
    ds4_kvdisk_load_result lr;
    ds4_err err = {{0}};
    assert_int_equal(ds4_kvdisk_restore(c, s, p, plen, &lr, &err), 0);
    assert_int_equal(lr.outcome, DS4_KVDISK_LOADED);
    assert_true(lr.consumed);
    assert_false(exists(path_in(dir, r600.name)));
    assert_int_equal(ds4_session_n_tokens(s), 600);
    assert_int_equal(ds4_kvdisk_restore(c, s, p, plen, &lr, &err), 0); /* now the 520 one, kept */
    assert_int_equal(lr.outcome, DS4_KVDISK_LOADED);
    assert_false(lr.consumed);
    assert_true(exists(path_in(dir, r520.name)));
    ds4_kvdisk_close(c);

    /* Cross-quant reuse is allowed by default and refused on request. */
    o.quant_bits = o.quant_bits == 2 ? 4 : 2;
    c = open_cache(dir, &o);
    ds4_kvdisk_entry best;
    assert_int_equal(ds4_kvdisk_lookup(c, s, p, plen, &best, &err), 1);
    ds4_kvdisk_close(c);
    o.reject_different_quant = true;
    c = open_cache(dir, &o);
    assert_int_equal(ds4_kvdisk_lookup(c, s, p, plen, &best, &err), 0);
    assert_int_equal(ds4_kvdisk_load(c, r520.name, s, p, plen, &lr, &err), 0);
    assert_int_equal(lr.outcome, DS4_KVDISK_INCOMPATIBLE);
    assert_non_null(strstr(lr.why, "routed experts"));
    ds4_kvdisk_close(c);
    ds4_session_free(s);
    free(p);
}

/* The directory stays within a tiny budget: 1% slack at store, lowest
 * tokens-per-byte evicted first, the just-stored file protected, startup
 * eviction. */
static void test_eviction_budget(void **state) {
    (void)state;
    size_t l520, l560, l600;
    char *t520 = text_of(520, &l520), *t560 = text_of(560, &l560), *t600 = text_of(600, &l600);
    const uint64_t f520 = ds4_kvdisk_file_bytes(l520, ds4_session_payload_size(g_s520), 0);
    const uint64_t f560 = ds4_kvdisk_file_bytes(l560, ds4_session_payload_size(g_s560), 0);
    const uint64_t f600 = ds4_kvdisk_file_bytes(l600, ds4_session_payload_size(g_s600), 0);
    assert_true(f520 < f560 && f560 < f600);
    ds4_kvdisk_opts o = test_opts(g_s600);

    /* budget check with 1% slack, rounded up */
    o.budget_bytes = f600 + (f600 + 99) / 100;
    ds4_kvdisk *c = open_cache(dir_for("slack1"), &o);
    store(c, g_s600, t600, l600, NULL, 0, DS4_KVDISK_STORED);
    ds4_kvdisk_close(c);
    o.budget_bytes--;
    c = open_cache(dir_for("slack2"), &o);
    ds4_kvdisk_store_result sr = store(c, g_s600, t600, l600, NULL, 0, DS4_KVDISK_SKIPPED_BUDGET);
    assert_non_null(strstr(sr.why, "budget"));
    assert_int_equal(count_kv(c, NULL), 0);
    ds4_kvdisk_close(c);

    /* room for two: the third store evicts the worst tokens-per-byte (520) */
    const char *dir = dir_for("evict");
    o.budget_bytes = f560 + f600 + 1000;
    c = open_cache(dir, &o);
    ds4_kvdisk_store_result a = store(c, g_s520, t520, l520, NULL, 0, DS4_KVDISK_STORED);
    ds4_kvdisk_store_result b = store(c, g_s560, t560, l560, NULL, 0, DS4_KVDISK_STORED);
    assert_int_equal(b.evicted, 0);
    log_clear();
    ds4_kvdisk_store_result d = store(c, g_s600, t600, l600, NULL, 0, DS4_KVDISK_STORED);
    assert_int_equal(d.evicted, 1);
    assert_true(d.evicted_bytes == f520);
    assert_false(exists(path_in(dir, a.name)));
    assert_true(exists(path_in(dir, b.name)) && exists(path_in(dir, d.name)));
    assert_true(log_has("evicted", a.name));
    uint64_t total;
    assert_int_equal(count_kv(c, &total), 2);
    assert_true(total <= o.budget_bytes);

    /* storing 520 now: it has the lowest score but is protected, so 560 goes */
    ds4_kvdisk_store_result e = store(c, g_s520, t520, l520, NULL, 0, DS4_KVDISK_STORED);
    assert_int_equal(e.evicted, 1);
    assert_true(exists(path_in(dir, e.name)) && exists(path_in(dir, d.name)));
    assert_false(exists(path_in(dir, b.name)));
    assert_int_equal(count_kv(c, &total), 2);
    assert_true(total <= o.budget_bytes);

    /* hits keep an entry: with two hits on 520, storing 560 evicts 600 */
    size_t plen;
    char *p = text_of(540, &plen);
    ds4_session *s = test_session(g_model, CTX, CHUNK, false);
    ds4_kvdisk_load_result lr;
    ds4_err err = {{0}};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(ds4_kvdisk_restore(c, s, p, plen, &lr, &err), 0);
        assert_int_equal(lr.outcome, DS4_KVDISK_LOADED);
    }
    store(c, g_s560, t560, l560, NULL, 0, DS4_KVDISK_STORED);
    assert_true(exists(path_in(dir, e.name)) && exists(path_in(dir, b.name)));
    assert_false(exists(path_in(dir, d.name)));
    /* ...until the hits have decayed (two days later): then 520 is worst again */
    g_clock += 2 * 86400;
    store(c, g_s600, t600, l600, NULL, 0, DS4_KVDISK_STORED);
    assert_false(exists(path_in(dir, e.name)));
    assert_true(exists(path_in(dir, b.name)) && exists(path_in(dir, d.name)));
    ds4_kvdisk_close(c);

    /* startup eviction: reopening with a smaller budget trims the directory */
    o.budget_bytes = f600 + 100;
    c = open_cache(dir, &o);
    assert_int_equal(count_kv(c, &total), 1);
    assert_true(exists(path_in(dir, d.name)));
    ds4_kvdisk_close(c);
    ds4_session_free(s);
    free(p);
    free(t520);
    free(t560);
    free(t600);
}

/* §7.5: only entries whose block is in the cache text are written; a disk
 * hit returns them; the before-rendering scan returns the requested ids; a
 * same-name store refreshes only the map; an incompatible one replaces. */
static void test_tool_map_round_trip(void **state) {
    (void)state;
    const char *dir = dir_for("tools");
    ds4_kvdisk_opts o = test_opts(g_s600);
    ds4_kvdisk *c = open_cache(dir, &o);
    size_t tl;
    char *text = text_of(600, &tl);
    /* a "DSML block" taken from the text, and one preceded by "\n\n" whose
     * separator is not in the text */
    char *sep = malloc(42);
    memcpy(sep, "\n\n", 2);
    memcpy(sep + 2, text + 300, 40);
    const char *absent = "\n\n<｜DSML｜tool_calls>not in the text</｜DSML｜tool_calls>";
    const ds4_kvdisk_tool tools[5] = {
        {"call_1", 6, text + 100, 50},
        {"call_2", 6, text + 100, 50}, /* same block, second id of the turn */
        {"call_3", 6, absent, strlen(absent)},
        {"call_4", 6, sep, 42},
        {"", 0, text + 100, 50}, /* empty id: never written */
    };
    ds4_kvdisk_store_result sr = store(c, g_s600, text, tl, tools, 5, DS4_KVDISK_STORED);
    assert_int_equal(sr.tools_written, 3);
    const uint64_t with_map = sr.file_bytes;
    assert_true(with_map == ds4_kvdisk_file_bytes(tl, ds4_session_payload_size(g_s600), 8 + 3 * 8 + 18 + 100 + 42));

    /* a disk hit brings the map back */
    size_t plen;
    char *p = text_of(700, &plen);
    ds4_session *s = test_session(g_model, CTX, CHUNK, false);
    ds4_kvdisk_load_result lr;
    ds4_err err = {{0}};
    assert_int_equal(ds4_kvdisk_restore(c, s, p, plen, &lr, &err), 0);
    assert_int_equal(lr.outcome, DS4_KVDISK_LOADED);
    assert_int_equal(lr.tools.n, 3);
    assert_string_equal(lr.tools.v[0].id, "call_1");
    assert_int_equal(lr.tools.v[0].dsml_len, 50);
    assert_memory_equal(lr.tools.v[0].dsml, text + 100, 50);
    assert_string_equal(lr.tools.v[1].id, "call_2");
    assert_string_equal(lr.tools.v[2].id, "call_4");
    assert_memory_equal(lr.tools.v[2].dsml, sep, 42);
    ds4_kvdisk_load_result_free(&lr);

    /* before rendering: only the ids the request mentions */
    const ds4_str want[4] = {{"call_4", 6}, {"call_3", 6}, {"nope", 4}, {"call_2", 6}};
    ds4_kvdisk_tools got;
    assert_int_equal(ds4_kvdisk_tools_for_ids(c, want, 4, &got, &err), 0);
    assert_int_equal(got.n, 2);
    assert_string_equal(got.v[0].id, "call_2");
    assert_string_equal(got.v[1].id, "call_4");
    ds4_kvdisk_tools_free(&got);

    /* same text again, other tools: the payload is kept, the map replaced */
    size_t n0 = 0;
    uint8_t *before = test_read_file(path_in(dir, sr.name), &n0);
    const ds4_kvdisk_tool other[1] = {{"call_9", 6, text + 200, 30}};
    ds4_kvdisk_store_result rr = store(c, g_s600, text, tl, other, 1, DS4_KVDISK_REFRESHED);
    assert_int_equal(rr.tools_written, 1);
    size_t n1 = 0;
    uint8_t *after = test_read_file(path_in(dir, sr.name), &n1);
    assert_true(n1 == rr.file_bytes && n1 == ds4_kvdisk_file_bytes(tl, ds4_session_payload_size(g_s600), 8 + 8 + 6 + 30));
    const size_t body_end = 52 + tl + (size_t)ds4_session_payload_size(g_s600);
    assert_memory_equal(after + 52, before + 52, body_end - 52); /* text and payload untouched */
    assert_int_equal(le32(after + 12), 1);                        /* hits kept */
    assert_int_equal(ds4_kvdisk_tools_for_ids(c, want, 4, &got, &err), 0);
    assert_int_equal(got.n, 0);
    ds4_kvdisk_tools_free(&got);
    const ds4_str want9[1] = {{"call_9", 6}};
    assert_int_equal(ds4_kvdisk_tools_for_ids(c, want9, 1, &got, &err), 0);
    assert_int_equal(got.n, 1);
    ds4_kvdisk_tools_free(&got);
    assert_int_equal(ds4_kvdisk_restore(c, s, p, plen, &lr, &err), 0); /* CRCs still valid */
    assert_int_equal(lr.outcome, DS4_KVDISK_LOADED);
    assert_int_equal(lr.tools.n, 1);
    ds4_kvdisk_load_result_free(&lr);
    free(before);
    free(after);

    /* refresh with nothing to map: bit 0 cleared, section gone */
    rr = store(c, g_s600, text, tl, NULL, 0, DS4_KVDISK_REFRESHED);
    after = test_read_file(path_in(dir, sr.name), &n1);
    assert_int_equal(after[6], 0x08);
    assert_true(n1 == ds4_kvdisk_file_bytes(tl, ds4_session_payload_size(g_s600), 0));
    free(after);
    assert_int_equal(ds4_kvdisk_restore(c, s, p, plen, &lr, &err), 0);
    assert_int_equal(lr.outcome, DS4_KVDISK_LOADED);
    assert_int_equal(lr.tools.n, 0);
    ds4_kvdisk_load_result_free(&lr);

    /* a damaged tool map is caught by the before-rendering scan */
    store(c, g_s600, text, tl, tools, 5, DS4_KVDISK_REFRESHED);
    after = test_read_file(path_in(dir, sr.name), &n1);
    after[n1 - 28 - 10] ^= 0x01;
    write_file(path_in(dir, sr.name), after, n1);
    free(after);
    log_clear();
    assert_int_equal(ds4_kvdisk_tools_for_ids(c, want, 4, &got, &err), 0);
    assert_int_equal(got.n, 0);
    assert_false(exists(path_in(dir, sr.name)));
    assert_true(log_has("deleted corrupt checkpoint", "trailer CRC"));

    /* a same-name file the session cannot use is replaced */
    ds4_session *big = session_at(2 * CTX, CHUNK, 600);
    store(c, big, text, tl, NULL, 0, DS4_KVDISK_STORED);
    ds4_session_free(big);
    ds4_kvdisk_store_result rep = store(c, g_s600, text, tl, tools, 5, DS4_KVDISK_STORED);
    assert_true(rep.replaced);
    ds4_kvdisk_entry *v;
    size_t nv;
    assert_int_equal(ds4_kvdisk_list(c, &v, &nv, NULL, &err), 0);
    assert_int_equal(nv, 1);
    assert_int_equal(v[0].ctx, CTX);
    assert_int_equal(v[0].ext, 0x09);
    free(v);

    ds4_session_free(s);
    free(p);
    free(sep);
    free(text);
    ds4_kvdisk_close(c);
}

static void test_open_errors(void **state) {
    (void)state;
    ds4_kvdisk_opts o = test_opts(NULL);
    ds4_err err = {{0}};
    write_file(dir_for("a-file"), "x", 1);
    assert_null(ds4_kvdisk_open(dir_for("a-file"), &o, &err));
    assert_non_null(strstr(err.msg, "not a directory"));
    assert_null(ds4_kvdisk_open(dir_for("a-file/sub"), &o, &err));
    assert_non_null(strstr(err.msg, "cannot create"));
    assert_null(ds4_kvdisk_open("", &o, &err));
    o.quant_bits = 3;
    assert_null(ds4_kvdisk_open(dir_for("ok"), &o, &err));
    assert_non_null(strstr(err.msg, "quant bits"));
    o = test_opts(NULL);
    o.budget_bytes = 0;
    assert_null(ds4_kvdisk_open(dir_for("ok"), &o, &err));
    o = test_opts(NULL);
    ds4_kvdisk *c = open_cache(dir_for("ok/"), &o);
    assert_string_equal(ds4_kvdisk_dir(c), dir_for("ok"));
    assert_int_equal(ds4_kvdisk_options(c)->min_tokens, 512);
    /* bad store requests are errors, not crashes */
    ds4_kvdisk_store_req req = {NULL, 0, DS4_KVDISK_REASON_EVICT, DS4_KVDISK_KEY_TOKEN_TEXT, NULL, 0};
    ds4_kvdisk_store_result r;
    assert_int_equal(ds4_kvdisk_store(c, g_s600, &req, &r, &err), -1);
    ds4_kvdisk_load_result lr;
    assert_int_equal(ds4_kvdisk_load(c, "../x", g_s600, NULL, 0, &lr, &err), -1);
    assert_int_equal(ds4_kvdisk_load(c, "a9993e364706816aba3e25717850c26c9cd0d89d.kv", g_s600, NULL, 0, &lr, &err), 0);
    assert_int_equal(lr.outcome, DS4_KVDISK_MISS);
    ds4_kvdisk_close(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_file_layout),
        cmocka_unit_test(test_longest_prefix),
        cmocka_unit_test(test_other_chunk_refused),
        cmocka_unit_test(test_truncation_detected),
        cmocka_unit_test(test_bit_flips_detected),
        cmocka_unit_test(test_directory_hygiene),
        cmocka_unit_test(test_consume_and_quant),
        cmocka_unit_test(test_eviction_budget),
        cmocka_unit_test(test_tool_map_round_trip),
        cmocka_unit_test(test_open_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
