/* CPU forward pass against transformers' DeepseekV4ForCausalLM (fixtures in
 * tests/oracle/fixtures, made on the GPU machine by tests/oracle/gen_fixtures.py).
 *
 * For each case of tests/oracle/cases.txt the model is regenerated with
 * ds4-synth and must have the SHA-256 recorded in the fixture (so the engine
 * and the oracle saw the same weights). Oracle mode (no FP8/FP4 simulation,
 * f32 caches) must then match the reference logits of every position within
 * 1e-4 * max(1, max|logit|) with the same argmax, for a one-shot prefill,
 * prefill then one-token decode steps, and irregular chunk sizes. */
#include "engine_test_util.h"

#define TOL 1e-4

typedef struct fixture {
    char name[64];
    char opts[512];
} fixture;

static int load_cases(fixture *out, int cap) {
    size_t len = 0;
    char *txt = test_read_file(test_path("tests/oracle/cases.txt"), &len);
    assert_non_null(txt);
    int n = 0;
    char *save = NULL;
    for (char *line = strtok_r(txt, "\n", &save); line && n < cap; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#' || !line[0]) continue;
        char *sp = strchr(line, ' ');
        assert_non_null(sp);
        *sp = 0;
        snprintf(out[n].name, sizeof(out[n].name), "%s", line);
        while (*++sp == ' ') {
        }
        snprintf(out[n].opts, sizeof(out[n].opts), "%s", sp);
        n++;
    }
    free(txt);
    return n;
}

static void check_case(const fixture *fx) {
    char rel[512];
    snprintf(rel, sizeof(rel), "tests/oracle/fixtures/%.63s/meta.json", fx->name);
    char *meta = test_read_file(test_path(rel), NULL);
    assert_non_null(meta);
    const char *want = strstr(meta, "\"gguf_sha256\": \"");
    assert_non_null(want);
    want += strlen("\"gguf_sha256\": \"");

    const char *path = test_synth(fx->name, fx->opts);
    char sha[65];
    test_sha256_file(path, sha);
    if (strncmp(sha, want, 64) != 0)
        fail_msg("%s: ds4-synth %s now writes a different model (sha256 %s, fixture has %.64s); "
                 "regenerate the fixtures (tests/oracle/README.md)", fx->name, fx->opts, sha, want);
    free(meta);

    snprintf(rel, sizeof(rel), "tests/oracle/fixtures/%.63s/tokens.i32", fx->name);
    size_t tb = 0;
    int32_t *toks = test_read_file(test_path(rel), &tb);
    assert_non_null(toks);
    const int n = (int)(tb / 4);
    snprintf(rel, sizeof(rel), "tests/oracle/fixtures/%.63s/logits.f32", fx->name);
    size_t lb = 0;
    float *ref = test_read_file(test_path(rel), &lb);
    assert_non_null(ref);

    ds4_model *m = test_open_model(path);
    const int64_t V = m->hp.n_vocab;
    assert_int_equal(lb, (size_t)n * V * 4);
    float *got = malloc(sizeof(float) * (size_t)n * V);

    /* (a) one-shot prefill */
    ds4_session *s = test_session(m, n, n, true);
    test_eval_pattern(s, toks, n, NULL, got, V);
    double d1 = test_compare_logits("one-shot prefill", got, ref, n, V, TOL);
    ds4_session_free(s);

    /* (b) prefill 200 then one-token decode steps */
    s = test_session(m, n, 2048, true);
    static const int pd[] = {200, 1, 0};
    ds4_err err = {{0}};
    assert_int_equal(ds4_session_eval(s, toks, 200, got, &err), 0);
    for (int i = 200; i < n; i++) {
        assert_int_equal(ds4_session_decode(s, toks[i], &err), 0);
        memcpy(got + (size_t)i * V, ds4_session_logits(s), sizeof(float) * (size_t)V);
    }
    (void)pd;
    double d2 = test_compare_logits("prefill 200 + decode", got, ref, n, V, TOL);
    ds4_session_free(s);

    /* (c) irregular chunk sizes */
    s = test_session(m, n, 2048, true);
    static const int irregular[] = {1, 7, 120, 3, 128, 41, 0};
    test_eval_pattern(s, toks, n, irregular, got, V);
    double d3 = test_compare_logits("irregular chunks", got, ref, n, V, TOL);
    ds4_session_free(s);

    /* (d) the session's own prefill chunk (7) cuts every call at multiples of 7 */
    s = test_session(m, n, 7, true);
    test_eval_pattern(s, toks, n, NULL, got, V);
    double d4 = test_compare_logits("prefill chunk 7", got, ref, n, V, TOL);
    ds4_session_free(s);

    printf("  %-9s %3d tokens: max|diff| one-shot %.2e, decode %.2e, irregular %.2e, chunk-7 %.2e\n", fx->name, n, d1,
           d2, d3, d4);
    free(got);
    free(ref);
    free(toks);
    ds4_model_close(m);
}

static void test_oracle_cases(void **state) {
    (void)state;
    fixture fx[16];
    const int n = load_cases(fx, 16);
    assert_true(n >= 4);
    for (int i = 0; i < n; i++) check_case(&fx[i]);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_oracle_cases)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
