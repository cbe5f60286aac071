/* Greedy generation through ds4_greedy (engine.c generate_greedy) against
 * the plain one-token-at-a-time loop (DS4_GREEDY_CHAIN=0): the same tokens,
 * stop reason and count, and bitwise the same session afterwards (snapshot
 * and logits), for every way a run ends: length, full context, the callback,
 * EOS (evaluated never), and with EOS banned. Each case runs three ways: the
 * plain loop; the chained loop on the CPU backend (greedy.c's host steps);
 * and the chained loop on a backend that offers the session's chain ops
 * (the CPU's eval behind ops that commit each step at its wait, as the CUDA
 * backend does), so session.c's chain wrappers and the engine's device path
 * run here too. The CUDA chain itself is checked by ds4-cuda-test. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine_test_util.h"
#include "text/sampler.h"

/* ------------------------------------------------------------------ a backend with chain ops */

static struct {
    int n;             /* queued steps */
    int32_t last_pick; /* the token the oldest was fed (its predecessor's pick) */
    int32_t exclude, stop;
} g_fake;
static ds4_backend_ops g_fake_ops;

static int fake_begin(ds4_session *s, int32_t token, int32_t exclude, int32_t stop, ds4_err *err) {
    (void)s;
    (void)err;
    g_fake.n = 1;
    g_fake.last_pick = token;
    g_fake.exclude = exclude;
    g_fake.stop = stop;
    return 0;
}

static int fake_queue(ds4_session *s, ds4_err *err) {
    (void)s;
    (void)err;
    g_fake.n++;
    return 0;
}

/* The oldest step: evaluated now (or dropped when fed the stop token). */
static int fake_pop(ds4_session *s, int32_t *picked, ds4_err *err) {
    const int32_t t = g_fake.last_pick;
    g_fake.n--;
    *picked = -1;
    if (g_fake.stop >= 0 && t == g_fake.stop) return 0;
    if (ds4_cpu_backend.eval(s, &t, 1, NULL, err) != 0) return -1;
    *picked = g_fake.last_pick = ds4_sampler_argmax_except(s->state->logits, s->model->hp.n_vocab, g_fake.exclude);
    return 0;
}

static int fake_wait(ds4_session *s, int32_t *picked, ds4_err *err) { return fake_pop(s, picked, err); }

static int fake_end(ds4_session *s, ds4_err *err) {
    int32_t picked;
    while (g_fake.n > 0)
        if (fake_pop(s, &picked, err) != 0) return -1;
    return 0;
}

static const char *g_path;

static int setup(void **state) {
    (void)state;
    g_path = test_synth("greedy", "--seed 31 --ffn-gain 3 --index-topk 8");
    g_fake_ops = ds4_cpu_backend;
    g_fake_ops.name = "cpu+chain";
    g_fake_ops.chain_begin = fake_begin;
    g_fake_ops.chain_queue = fake_queue;
    g_fake_ops.chain_wait = fake_wait;
    g_fake_ops.chain_end = fake_end;
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
enum { PLAIN, CHAINED_HOST, CHAINED_OPS };

static float g_temperature = 0.0f; /* of the runs below (NaN: a request that samples) */

static void generate(int mode, int ctx, int max_tokens, bool ban_eos, int stop_after, int32_t eos_override,
                     run_out *o) {
    setenv("DS4_GREEDY_CHAIN", mode == PLAIN ? "0" : "1", 1);
    ds4_session_opts so;
    ds4_session_opts_default(&so);
    so.ctx = ctx;
    so.backend = DS4_BACKEND_CPU;
    so.n_threads = 2;
    ds4_err err = {{0}};
    ds4_engine *e = ds4_engine_open(g_path, &so, &err);
    if (!e) fail_msg("engine: %s", err.msg);
    if (eos_override >= 0) ((ds4_tok_specials *)ds4_tokenizer_specials(e->tok))->eos = eos_override;
    if (mode == CHAINED_OPS) e->sess->ops = &g_fake_ops;
    int32_t prompt[20];
    for (int i = 0; i < 20; i++) prompt[i] = (int32_t)((i * 7919 + 13) % e->model->hp.n_vocab);
    if (ds4_engine_sync(e, prompt, 20, NULL, &err) != 0) fail_msg("sync: %s", err.msg);
    memset(o, 0, sizeof(*o));
    o->stop_after = stop_after;
    ds4_gen_opts go = {.max_tokens = max_tokens, .ban_eos = ban_eos, .on_token = on_token, .ud = o};
    go.sampling = ds4_sampling_defaults();
    go.sampling.temperature = g_temperature;
    go.sampling.seed = 7;
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
    generate(PLAIN, ctx, max_tokens, ban_eos, stop_after, eos_override, plain);
    for (int mode = CHAINED_HOST; mode <= CHAINED_OPS; mode++) {
        run_out chained;
        generate(mode, ctx, max_tokens, ban_eos, stop_after, eos_override, &chained);
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
    generate(PLAIN, 128, 30, false, 0, -1, &free_run_out);
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

static void test_edges(void **state) {
    (void)state;
    run_out p;
    both(21, 0, false, 0, -1, &p); /* room for one token */
    assert_int_equal(p.res.stop, DS4_STOP_CONTEXT);
    assert_int_equal(p.res.n_tokens, 1);
    free_run(&p);
    both(20, 5, false, 0, -1, &p); /* the prompt fills the context */
    assert_int_equal(p.res.stop, DS4_STOP_CONTEXT);
    assert_int_equal(p.res.n_tokens, 0);
    free_run(&p);
    both(128, 1, false, 0, -1, &p);
    assert_int_equal(p.res.n_tokens, 1);
    free_run(&p);
    both(128, 5, false, 5, -1, &p); /* the callback stops at the last token */
    assert_int_equal(p.res.stop, DS4_STOP_CALLBACK);
    free_run(&p);
}

/* A NaN temperature samples at 1 (the sampler's normalization), so it must
 * not take the greedy path: all three runs sample the same seeded stream. */
static void test_nan_temperature_samples(void **state) {
    (void)state;
    run_out p, greedy;
    g_temperature = NAN;
    both(128, 12, false, 0, -1, &p);
    g_temperature = 0.0f;
    generate(PLAIN, 128, 12, false, 0, -1, &greedy);
    assert_int_equal(p.res.n_tokens, 12);
    assert_true(memcmp(p.tok, greedy.tok, sizeof(int32_t) * 12) != 0); /* it did sample */
    free_run(&p);
    free_run(&greedy);
}

/* The session's chain calls refuse what would corrupt the session. */
static void test_chain_misuse(void **state) {
    (void)state;
    ds4_model *m = test_open_model(g_path);
    ds4_session *s = test_session(m, 64, 0, false);
    s->ops = &g_fake_ops;
    ds4_err err = {{0}};
    int32_t prompt[8] = {5, 9, 13, 17, 21, 25, 29, 33}, picked = -1;
    assert_int_equal(ds4_session_eval(s, prompt, 8, NULL, &err), 0);
    const int32_t first = ds4_sampler_argmax_except(ds4_session_logits(s), m->hp.n_vocab, -1);
    /* learn the pick after `first`, then use it as the stop token */
    assert_int_equal(ds4_session_chain_begin(s, first, -1, -1, &err), 0);
    assert_int_equal(ds4_session_chain_wait(s, &picked, &err), 0);
    assert_int_equal(ds4_session_chain_end(s, &err), 0);
    const int32_t stop = picked;
    ds4_session_reset(s);
    assert_int_equal(ds4_session_eval(s, prompt, 8, NULL, &err), 0);
    assert_int_equal(ds4_session_chain_begin(s, first, -1, stop, &err), 0);
    assert_int_not_equal(ds4_session_chain_begin(s, first, -1, stop, &err), 0); /* already running */
    assert_int_not_equal(ds4_session_decode(s, first, &err), 0);
    uint8_t *snap = NULL;
    size_t len = 0;
    assert_int_not_equal(ds4_session_snapshot(s, &snap, &len, &err), 0);
    assert_int_equal(ds4_session_chain_queue(s, &err), 0);
    assert_int_not_equal(ds4_session_chain_queue(s, &err), 0); /* two queued already */
    assert_int_equal(ds4_session_chain_wait(s, &picked, &err), 0);
    assert_int_equal(picked, stop);
    assert_int_not_equal(ds4_session_chain_queue(s, &err), 0); /* after the stop pick */
    assert_int_not_equal(ds4_session_chain_wait(s, &picked, &err), 0);
    assert_int_equal(ds4_session_chain_end(s, &err), 0);
    assert_int_equal(ds4_session_n_tokens(s), 9); /* `first` kept, the step fed the stop token dropped */
    assert_non_null(ds4_session_logits(s));
    /* reset in the middle of a chain ends it first */
    assert_int_equal(ds4_session_chain_begin(s, first, -1, -1, &err), 0);
    ds4_session_reset(s);
    assert_int_equal(ds4_session_n_tokens(s), 0);
    assert_int_equal(ds4_session_eval(s, prompt, 8, NULL, &err), 0);
    ds4_session_free(s);
    ds4_model_close(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_length),        cmocka_unit_test(test_context_full),
        cmocka_unit_test(test_callback_stop), cmocka_unit_test(test_eos),
        cmocka_unit_test(test_edges),         cmocka_unit_test(test_nan_temperature_samples),
        cmocka_unit_test(test_chain_misuse),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
