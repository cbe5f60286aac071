/* Greedy generation through ds4_greedy (engine.c generate_greedy, on the CPU
 * its host steps) against the plain one-token-at-a-time loop
 * (DS4_GREEDY_CHAIN=0): the same tokens, stop reason and count, and bitwise
 * the same session afterwards (snapshot and logits), for every way a run
 * ends: length, full context, the callback, EOS (evaluated never), and with
 * EOS banned. The CUDA chain is checked the same way by ds4-cuda-test. */
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine_test_util.h"

static const char *g_path;

static int setup(void **state) {
    (void)state;
    g_path = test_synth("greedy", "--seed 31 --ffn-gain 3 --index-topk 8");
    return 0;
}

typedef struct run_out {
    int32_t tok[256];
    int n_cb;       /* on_token calls with a token (id >= 0) */
    int stop_after; /* the callback asks to stop at this many tokens (0: never) */
    ds4_gen_result res;
    int n_tokens; /* the session's tokens afterwards */
    uint8_t *snap;
    size_t len;
    float *logits;
    int64_t n_vocab;
} run_out;

static int on_token(void *ud, int32_t id, const char *text, size_t len) {
    (void)text;
    (void)len;
    run_out *o = ud;
    if (id < 0) return 0;
    if (o->n_cb < 256) o->tok[o->n_cb] = id;
    o->n_cb++;
    return o->stop_after > 0 && o->n_cb >= o->stop_after;
}

/* A fresh engine: prompt, then generate; eos_override >= 0 makes that token
 * the end-of-sentence id (to reach the EOS stop on a random model). */
static void generate(bool chained, int ctx, int max_tokens, bool ban_eos, int stop_after, int32_t eos_override,
                     run_out *o) {
    setenv("DS4_GREEDY_CHAIN", chained ? "1" : "0", 1);
    ds4_session_opts so;
    ds4_session_opts_default(&so);
    so.ctx = ctx;
    so.backend = DS4_BACKEND_CPU;
    so.n_threads = 2;
    ds4_err err = {{0}};
    ds4_engine *e = ds4_engine_open(g_path, &so, &err);
    if (!e) fail_msg("engine: %s", err.msg);
    if (eos_override >= 0) ((ds4_tok_specials *)ds4_tokenizer_specials(e->tok))->eos = eos_override;
    int32_t prompt[20];
    for (int i = 0; i < 20; i++) prompt[i] = (int32_t)((i * 7919 + 13) % e->model->hp.n_vocab);
    if (ds4_engine_sync(e, prompt, 20, NULL, &err) != 0) fail_msg("sync: %s", err.msg);
    memset(o, 0, sizeof(*o));
    o->stop_after = stop_after;
    ds4_gen_opts go = {.max_tokens = max_tokens, .ban_eos = ban_eos, .on_token = on_token, .ud = o};
    go.sampling = ds4_sampling_defaults();
    go.sampling.temperature = 0.0f;
    if (ds4_engine_generate(e, &go, &o->res, &err) != 0) fail_msg("generate: %s", err.msg);
    o->n_tokens = ds4_session_n_tokens(e->sess);
    if (ds4_session_snapshot(e->sess, &o->snap, &o->len, &err) != 0) fail_msg("snapshot: %s", err.msg);
    o->logits = malloc(sizeof(float) * (size_t)e->model->hp.n_vocab);
    memcpy(o->logits, ds4_session_logits(e->sess), sizeof(float) * (size_t)e->model->hp.n_vocab);
    o->n_vocab = e->model->hp.n_vocab;
    ds4_engine_close(e);
    unsetenv("DS4_GREEDY_CHAIN");
}

static void free_run(run_out *o) {
    free(o->snap);
    free(o->logits);
}

/* Both loops, then every observable compared; returns the plain run's
 * result for the caller's own checks (freed by the caller). */
static void both(int ctx, int max_tokens, bool ban_eos, int stop_after, int32_t eos_override, run_out *plain) {
    run_out chained;
    generate(false, ctx, max_tokens, ban_eos, stop_after, eos_override, plain);
    generate(true, ctx, max_tokens, ban_eos, stop_after, eos_override, &chained);
    assert_int_equal(chained.res.stop, plain->res.stop);
    assert_int_equal(chained.res.n_tokens, plain->res.n_tokens);
    assert_int_equal(chained.n_cb, plain->n_cb);
    assert_memory_equal(chained.tok, plain->tok, sizeof(int32_t) * (size_t)(plain->n_cb < 256 ? plain->n_cb : 256));
    assert_int_equal(chained.n_tokens, plain->n_tokens);
    assert_int_equal(chained.len, plain->len);
    assert_memory_equal(chained.snap, plain->snap, plain->len);
    assert_memory_equal(chained.logits, plain->logits, sizeof(float) * (size_t)plain->n_vocab);
    free_run(&chained);
}

static void test_length(void **state) {
    (void)state;
    run_out p;
    both(128, 30, false, 0, -1, &p);
    assert_int_equal(p.res.stop, DS4_STOP_LENGTH);
    assert_int_equal(p.res.n_tokens, 30);
    assert_int_equal(p.n_tokens, 20 + 30); /* every produced token evaluated */
    free_run(&p);
}

static void test_context_full(void **state) {
    (void)state;
    run_out p;
    both(40, 0, false, 0, -1, &p);
    assert_int_equal(p.res.stop, DS4_STOP_CONTEXT);
    assert_int_equal(p.n_tokens, 40);
    free_run(&p);
}

static void test_callback_stop(void **state) {
    (void)state;
    run_out p;
    both(128, 30, false, 7, -1, &p);
    assert_int_equal(p.res.stop, DS4_STOP_CALLBACK);
    assert_int_equal(p.res.n_tokens, 7);
    assert_int_equal(p.n_tokens, 20 + 7); /* the stopping token is evaluated */
    free_run(&p);
}

static void test_eos(void **state) {
    (void)state;
    run_out free_run_out;
    generate(false, 128, 30, false, 0, -1, &free_run_out);
    /* the first use of a token after a few steps becomes "EOS" */
    int k = 4;
    while (k < 30) {
        bool first = true;
        for (int i = 0; i < k; i++) first &= free_run_out.tok[i] != free_run_out.tok[k];
        if (first) break;
        k++;
    }
    assert_true(k < 30);
    const int32_t eos = free_run_out.tok[k];
    free_run(&free_run_out);
    run_out p;
    both(128, 30, false, 0, eos, &p);
    assert_int_equal(p.res.stop, DS4_STOP_EOS);
    assert_int_equal(p.res.n_tokens, k + 1);
    assert_int_equal(p.n_tokens, 20 + k); /* EOS itself is not evaluated */
    free_run(&p);
    /* banned, the same token is never produced and the run goes on */
    both(128, 30, true, 0, eos, &p);
    assert_int_equal(p.res.stop, DS4_STOP_LENGTH);
    for (int i = 0; i < p.n_cb; i++) assert_int_not_equal(p.tok[i], eos);
    free_run(&p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_length),
        cmocka_unit_test(test_context_full),
        cmocka_unit_test(test_callback_stop),
        cmocka_unit_test(test_eos),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
