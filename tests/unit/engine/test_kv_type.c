/* KV cache storage types (--kv-type, model/kv_format.h) on the CPU backend,
 * tiny synthetic model, default numerics (FP8 KV and FP4 indexer
 * simulations on): fp8 and bf16 logits against f16 over a prompt prefilled
 * in chunks of 7 and a few decode steps; the rows in the session's state are
 * values of their format; snapshot -> restore -> continue with fp8 is
 * bitwise, and an f16 session's snapshot restores into an fp8 session; oracle
 * mode refuses fp8. The measured differences are printed. */
#include "engine_test_util.h"
#include "model/kv_format.h"
#include "model/state.h"

enum { PROMPT = 40, STEPS = 4, CHUNK = 7 };

static ds4_model *g_model; /* window 16 (the ring wraps), HCA ratio 8, CSA top-4 of 10 rows: partial selection */

static int setup(void **state) {
    (void)state;
    g_model = test_open_model(test_synth("kvtype", "--seed 41 --ffn-gain 3 --window 16 --hca-rate 8 --index-topk 4"));
    return 0;
}

static int teardown(void **state) {
    (void)state;
    ds4_model_close(g_model);
    return 0;
}

static ds4_session *kv_session(ds4_kv_type t, bool oracle, ds4_err *err) {
    ds4_session_opts o;
    ds4_session_opts_default(&o);
    o.ctx = 64;
    o.prefill_chunk = CHUNK;
    o.oracle = oracle;
    o.kv_type = t;
    o.backend = DS4_BACKEND_CPU;
    o.n_threads = 2;
    return ds4_session_create(g_model, &o, err);
}

static ds4_session *kv_session_ok(ds4_kv_type t) {
    ds4_err err = {{0}};
    ds4_session *s = kv_session(t, false, &err);
    if (!s) fail_msg("session %s: %s", ds4_kv_type_name(t), err.msg);
    assert_int_equal(s->kv_type, t);
    return s;
}

static void tokens(int32_t *t, int n) {
    for (int i = 0; i < n; i++) t[i] = (int32_t)((i * 7919 + 101) % g_model->hp.n_vocab);
}

/* decode toks[0..n), the logits of each step into out[n][V] */
static void decode_steps(ds4_session *s, const int32_t *toks, int n, float *out) {
    ds4_err err = {{0}};
    const int64_t V = g_model->hp.n_vocab;
    for (int i = 0; i < n; i++) {
        if (ds4_session_decode(s, toks[i], &err) != 0) fail_msg("decode: %s", err.msg);
        memcpy(out + (size_t)i * V, ds4_session_logits(s), sizeof(float) * (size_t)V);
    }
}

/* Every cached row holds values of its format: rounding it again changes nothing. */
static void check_rows_in_format(const ds4_session *s) {
    const ds4_hparams *hp = &g_model->hp;
    const ds4_state *st = s->state;
    const ds4_row_fmt af = ds4_kv_attn_fmt(s->kv_type), xf = ds4_kv_index_fmt(s->kv_type);
    const int nope = hp->head_dim - hp->rope_dim;
    float *row = malloc(sizeof(float) * (size_t)(hp->head_dim > hp->idx_dim ? hp->head_dim : hp->idx_dim));
    int n_rows = 0;
    for (int il = 0; il < st->n_layer; il++) {
        const ds4_layer_state *L = &st->layers[il];
        const int n_raw = st->n_tokens < st->raw_cap ? st->n_tokens : st->raw_cap;
        for (int k = 0; k < n_raw + (int)L->n_comp + (int)L->n_idx; k++) {
            const bool idx = k >= n_raw + (int)L->n_comp;
            const int dim = idx ? hp->idx_dim : hp->head_dim;
            const float *src = k < n_raw ? L->raw + (size_t)k * hp->head_dim
                               : !idx    ? L->comp + (size_t)(k - n_raw) * hp->head_dim
                                         : L->idx + (size_t)(k - n_raw - (int)L->n_comp) * hp->idx_dim;
            memcpy(row, src, sizeof(float) * (size_t)dim);
            ds4_kvrow_round(idx ? xf : af, row, dim, nope);
            if (memcmp(row, src, sizeof(float) * (size_t)dim) != 0)
                fail_msg("%s: layer %d row %d (%s) is not a value of its format", ds4_kv_type_name(s->kv_type), il, k,
                         k < n_raw ? "raw" : idx ? "indexer" : "compressed");
            n_rows++;
        }
    }
    assert_true(n_rows > 0);
    free(row);
}

/* The prompt (chunks of 7) and STEPS decode steps: logits of every position. */
static float *run(ds4_kv_type t) {
    const int64_t V = g_model->hp.n_vocab;
    int32_t toks[PROMPT + STEPS];
    tokens(toks, PROMPT + STEPS);
    float *out = malloc(sizeof(float) * (size_t)(PROMPT + STEPS) * V);
    ds4_err err = {{0}};
    ds4_session *s = kv_session_ok(t);
    if (ds4_session_eval(s, toks, PROMPT, out, &err) != 0) fail_msg("eval: %s", err.msg);
    decode_steps(s, toks + PROMPT, STEPS, out + (size_t)PROMPT * V);
    check_rows_in_format(s);
    ds4_session_free(s);
    return out;
}

static double max_abs(const float *x, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++) m = fabs(x[i]) > m ? fabs(x[i]) : m;
    return m;
}

static double compare(const char *what, const float *got, const float *ref, double tol_rel) {
    const int64_t V = g_model->hp.n_vocab;
    const int n = PROMPT + STEPS;
    const double d = test_compare_logits(what, got, ref, n, V, tol_rel);
    const double mx = max_abs(ref, (size_t)n * V);
    printf("%s: max|dlogit| %.3g = %.2g of max|logit| %.4g over %d positions (tolerance %.3g, bitwise %s)\n", what, d,
           d / (mx > 1.0 ? mx : 1.0), mx, n, tol_rel * (mx > 1.0 ? mx : 1.0),
           memcmp(got, ref, sizeof(float) * (size_t)n * V) == 0 ? "equal" : "different");
    return d;
}

static void test_fp8_and_bf16_vs_f16(void **state) {
    (void)state;
    float *f16 = run(DS4_KV_F16), *fp8 = run(DS4_KV_FP8), *bf16 = run(DS4_KV_BF16), *f32 = run(DS4_KV_F32);
    /* The attention rows' first nope elements went through the FP8
     * simulation (4 significant bits, power-of-two block scales) and the
     * indexer rows through the FP4 one: f16 holds those exactly, so fp8 and
     * f16 differ only where a tiny block's values fall below f16's normal
     * range. The RoPE tail is f16 in both. */
    compare("kv fp8 vs f16", fp8, f16, 1e-3);
    /* bf16 rounds the RoPE tail to 8 significant bits instead of f16's 11:
     * 8x f16's rounding error there. Its distance from f16 is measured
     * against f16's own distance from the exact (f32) cache, and bounded by
     * 1e-2 of max|logit| (the measured 4.9e-3, twice over). */
    const double d16 = compare("kv f16 vs f32", f16, f32, 1e-3);
    const double db = compare("kv bf16 vs f32", bf16, f32, 1e-2);
    compare("kv bf16 vs f16", bf16, f16, 1e-2);
    printf("bf16 / f16 distance from f32: %.3g\n", db / d16);
    free(f16);
    free(fp8);
    free(bf16);
    free(f32);
}

/* ------------------------------------------------------------------ snapshots */

static void test_fp8_snapshot_restore(void **state) {
    (void)state;
    const int64_t V = g_model->hp.n_vocab;
    int32_t toks[PROMPT + 3];
    tokens(toks, PROMPT + 3);
    float *a = malloc(sizeof(float) * 3 * (size_t)V), *b = malloc(sizeof(float) * 3 * (size_t)V);
    float *at_prompt = malloc(sizeof(float) * (size_t)V);
    ds4_err err = {{0}};

    ds4_session *s = kv_session_ok(DS4_KV_FP8);
    assert_int_equal(ds4_session_eval(s, toks, PROMPT, NULL, &err), 0);
    memcpy(at_prompt, ds4_session_logits(s), sizeof(float) * (size_t)V);
    uint8_t *snap = NULL;
    size_t len = 0;
    assert_int_equal(ds4_session_snapshot(s, &snap, &len, &err), 0);
    decode_steps(s, toks + PROMPT, 3, a);
    ds4_session_free(s);

    s = kv_session_ok(DS4_KV_FP8);
    if (ds4_session_load(s, snap, len, &err) != 0) fail_msg("load: %s", err.msg);
    assert_int_equal(ds4_session_n_tokens(s), PROMPT);
    assert_memory_equal(ds4_session_logits(s), at_prompt, sizeof(float) * (size_t)V);
    check_rows_in_format(s);
    decode_steps(s, toks + PROMPT, 3, b);
    assert_memory_equal(a, b, sizeof(float) * 3 * (size_t)V);
    ds4_session_free(s);
    free(snap);

    /* an f16 session's snapshot continued in an fp8 session */
    s = kv_session_ok(DS4_KV_F16);
    assert_int_equal(ds4_session_eval(s, toks, PROMPT, NULL, &err), 0);
    assert_int_equal(ds4_session_snapshot(s, &snap, &len, &err), 0);
    ds4_session_free(s);
    s = kv_session_ok(DS4_KV_FP8);
    if (ds4_session_load(s, snap, len, &err) != 0) fail_msg("load an f16 snapshot into fp8: %s", err.msg);
    assert_int_equal(ds4_session_n_tokens(s), PROMPT);
    decode_steps(s, toks + PROMPT, 3, b);
    const double d = test_compare_logits("f16 snapshot continued in fp8", b, a, 3, V, 1e-3);
    printf("f16 snapshot continued in an fp8 session vs fp8 throughout: max|dlogit| %.3g (max|logit| %.4g)\n", d,
           max_abs(a, 3 * (size_t)V));
    ds4_session_free(s);
    free(snap);

    /* an f32 session's snapshot (rows FP8-simulated, the RoPE tails not
     * rounded) loaded into an fp8 session: its rows come in as the fp8
     * cache keeps them (ds4_session_load rounds them), as CUDA's push would */
    s = kv_session_ok(DS4_KV_F32);
    assert_int_equal(ds4_session_eval(s, toks, PROMPT, NULL, &err), 0);
    assert_int_equal(ds4_session_snapshot(s, &snap, &len, &err), 0);
    ds4_session_free(s);
    s = kv_session_ok(DS4_KV_FP8);
    if (ds4_session_load(s, snap, len, &err) != 0) fail_msg("load an f32 snapshot into fp8: %s", err.msg);
    check_rows_in_format(s);
    ds4_session_free(s);
    free(snap);
    free(at_prompt);
    free(a);
    free(b);
}

/* ------------------------------------------------------------------ resolution and refusals */

static void test_resolution_and_refusals(void **state) {
    (void)state;
    ds4_err err = {{0}};
    ds4_session *s = kv_session(DS4_KV_FP8, true, &err);
    assert_null(s);
    assert_non_null(strstr(err.msg, "fp8"));
    printf("oracle mode + fp8: %s\n", err.msg);

    memset(&err, 0, sizeof(err));
    s = kv_session(DS4_KV_F16, true, &err);
    if (!s) fail_msg("oracle mode + f16: %s", err.msg);
    assert_int_equal(s->kv_type, DS4_KV_F16);
    ds4_session_free(s);
    s = kv_session(DS4_KV_DEFAULT, true, &err);
    assert_non_null(s);
    assert_int_equal(s->kv_type, DS4_KV_F32);
    ds4_session_free(s);
    s = kv_session(DS4_KV_DEFAULT, false, &err);
    assert_non_null(s);
    assert_int_equal(s->kv_type, DS4_KV_F16);
    ds4_session_free(s);

    /* fp8 needs both simulations, whatever switched them off */
    ds4_session_opts o;
    ds4_session_opts_default(&o);
    o.ctx = 64;
    o.backend = DS4_BACKEND_CPU;
    o.kv_type = DS4_KV_FP8;
    o.fp4_indexer = 0;
    memset(&err, 0, sizeof(err));
    assert_null(ds4_session_create(g_model, &o, &err));
    assert_non_null(strstr(err.msg, "fp8"));
    o.fp4_indexer = -1;
    o.fp8_kv = 0;
    assert_null(ds4_session_create(g_model, &o, &err));
    o.fp8_kv = 1;
    o.fp4_indexer = 1;
    o.oracle = true; /* both forced on in oracle mode: accepted */
    s = ds4_session_create(g_model, &o, &err);
    if (!s) fail_msg("oracle mode with both simulations on + fp8: %s", err.msg);
    assert_int_equal(s->kv_type, DS4_KV_FP8);
    ds4_session_free(s);
    o.kv_type = (ds4_kv_type)99;
    assert_null(ds4_session_create(g_model, &o, &err));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fp8_and_bf16_vs_f16),
        cmocka_unit_test(test_fp8_snapshot_restore),
        cmocka_unit_test(test_resolution_and_refusals),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
