/* Tokenizer built from GGUF metadata (tokenizer.ggml.tokens / .merges):
 * the same ids as the .tok tokenizer with the full V4 vocabulary, a small
 * synthetic vocabulary, and clear errors for missing or wrong keys. */
#include "test_util.h"

#include <fcntl.h>
#include <unistd.h>

#include "gguf/gguf.h"
#include "text/tokdata.h"
#include "text/tokenizer.h"

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

/* What to put in the test GGUF. */
typedef struct meta {
    const ds4_str *tokens;
    size_t n_tokens;
    const ds4_str *merges;
    size_t n_merges;
    const char *model; /* tokenizer.ggml.model, NULL: absent */
} meta;

static void put_strs(gguf_writer *w, const char *key, const ds4_str *s, size_t n) {
    const char **p = malloc((n ? n : 1) * sizeof(*p));
    uint64_t *l = malloc((n ? n : 1) * sizeof(*l));
    assert_true(p && l);
    for (size_t i = 0; i < n; i++) {
        p[i] = s[i].ptr;
        l[i] = s[i].len;
    }
    gguf_w_arr_str(w, key, p, l, n);
    free(p);
    free(l);
}

static gguf_file *write_gguf(const char *name, const meta *m) {
    static char path[4096];
    snprintf(path, sizeof(path), "%s/%s", test_tmp_dir(), name);
    gguf_writer *w = gguf_writer_create(0);
    assert_non_null(w);
    gguf_w_str(w, "general.architecture", "deepseek4");
    if (m->model) gguf_w_str(w, "tokenizer.ggml.model", m->model);
    if (m->tokens) put_strs(w, "tokenizer.ggml.tokens", m->tokens, m->n_tokens);
    if (m->merges) put_strs(w, "tokenizer.ggml.merges", m->merges, m->n_merges);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    ds4_err err = {{0}};
    if (gguf_writer_write_header(w, fd, &err) || gguf_writer_finish(w, fd, &err)) fail_msg("write: %s", err.msg);
    close(fd);
    gguf_writer_free(w);
    gguf_file *f = gguf_open(path, &err);
    if (!f) fail_msg("gguf_open: %s", err.msg);
    return f;
}

static void test_full_vocab_from_gguf(void **state) {
    ds4_tokdata td;
    ds4_err err = {{0}};
    if (ds4_tokdata_load(tokdata_path(), &td, &err)) fail_msg("%s", err.msg);
    meta m = {td.tokens, td.n_tokens, td.merges, td.n_merges, "gpt2"};
    gguf_file *f = write_gguf("full.gguf", &m);
    ds4_tokenizer *a = ds4_tokenizer_from_gguf(f, &err);
    if (!a) fail_msg("%s", err.msg);
    gguf_close(f); /* the tokenizer keeps its own copy of the strings */
    ds4_tokenizer *b = ds4_tokenizer_create(td.tokens, td.n_tokens, td.merges, td.n_merges, &err);
    assert_non_null(b);

    size_t n = 0;
    char *text = test_read_file(test_path("tests/data/tokenizer/corpus.txt"), &n);
    assert_non_null(text);
    ds4_tokvec va = {0}, vb = {0};
    assert_int_equal(ds4_tokenize(a, text, n, true, &va, &err), 0);
    assert_int_equal(ds4_tokenize(b, text, n, true, &vb, &err), 0);
    assert_int_equal(va.n, vb.n);
    assert_memory_equal(va.ids, vb.ids, va.n * sizeof(int32_t));
    assert_memory_equal(ds4_tokenizer_specials(a), ds4_tokenizer_specials(b), sizeof(ds4_tok_specials));
    ds4_tokvec_free(&va);
    ds4_tokvec_free(&vb);
    free(text);
    ds4_tokenizer_free(a);
    ds4_tokenizer_free(b);
    ds4_tokdata_free(&td);
}

/* 7 protocol tokens + 256 byte tokens + "ab". */
typedef struct small {
    char bytes[256][2];
    ds4_str tokens[300];
    size_t n;
} small;

static void make_small(small *s) {
    static const char *proto[7] = {
        "<\357\275\234begin\342\226\201of\342\226\201sentence\357\275\234>",
        "<\357\275\234end\342\226\201of\342\226\201sentence\357\275\234>",
        "<\357\275\234User\357\275\234>",
        "<\357\275\234Assistant\357\275\234>",
        "<think>",
        "</think>",
        "\357\275\234DSML\357\275\234",
    };
    s->n = 0;
    for (int k = 0; k < 7; k++) s->tokens[s->n++] = (ds4_str){proto[k], strlen(proto[k])};
    for (unsigned b = 0; b < 256; b++) {
        unsigned cp = b, k = 0;
        if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174)) {
            for (unsigned x = 0; x < b; x++)
                if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || x >= 174)) k++;
            cp = 256 + k;
        }
        size_t len = 1;
        if (cp < 0x80) {
            s->bytes[b][0] = (char)cp;
        } else {
            s->bytes[b][0] = (char)(0xC0 | cp >> 6);
            s->bytes[b][1] = (char)(0x80 | (cp & 0x3F));
            len = 2;
        }
        s->tokens[s->n++] = (ds4_str){s->bytes[b], len};
    }
    s->tokens[s->n++] = (ds4_str){"ab", 2};
}

static void test_small_vocab_from_gguf(void **state) {
    small s;
    make_small(&s);
    const ds4_str merges[] = {{"a b", 3}};
    meta m = {s.tokens, s.n, merges, 1, NULL}; /* no tokenizer.ggml.model: accepted */
    gguf_file *f = write_gguf("small.gguf", &m);
    ds4_err err = {{0}};
    ds4_tokenizer *t = ds4_tokenizer_from_gguf(f, &err);
    gguf_close(f);
    if (!t) fail_msg("%s", err.msg);
    ds4_tokvec v = {0};
    assert_int_equal(ds4_tokenize(t, "ab<think>", 9, true, &v, &err), 0);
    assert_int_equal(v.n, 2);
    assert_int_equal(v.ids[0], 263);
    assert_int_equal(v.ids[1], 4);
    ds4_tokvec_free(&v);
    ds4_tokenizer_free(t);
}

static void expect_error(const char *name, const meta *m, const char *needle) {
    gguf_file *f = write_gguf(name, m);
    ds4_err err = {{0}};
    ds4_tokenizer *t = ds4_tokenizer_from_gguf(f, &err);
    gguf_close(f);
    assert_null(t);
    if (!strstr(err.msg, needle)) fail_msg("error \"%s\" does not mention \"%s\"", err.msg, needle);
}

static void test_gguf_errors(void **state) {
    small s;
    make_small(&s);
    const ds4_str merges[] = {{"a b", 3}};
    expect_error("no_tokens.gguf", &(meta){NULL, 0, merges, 1, "gpt2"}, "tokenizer.ggml.tokens");
    expect_error("no_merges.gguf", &(meta){s.tokens, s.n, NULL, 0, "gpt2"}, "tokenizer.ggml.merges");
    expect_error("llama.gguf", &(meta){s.tokens, s.n, merges, 1, "llama"}, "gpt2");
    /* Drop </think> (index 5) from the vocabulary. */
    s.tokens[5] = (ds4_str){"</thonk>", 8};
    expect_error("no_think_end.gguf", &(meta){s.tokens, s.n, merges, 1, "gpt2"}, "</think>");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_vocab_from_gguf),
        cmocka_unit_test(test_small_vocab_from_gguf),
        cmocka_unit_test(test_gguf_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
