/* Tests for the sampler (INTERFACES.md §5, §4.5 structural forcing).
 *
 * Distributions are hand-made: logits are log-probabilities, so with T = 1 the
 * softmax gives back the chosen probabilities and every cut can be checked
 * against numbers computed by hand in the comments. */
#include "test_util.h"

#include "text/sampler.h"

#include <float.h>

/* Logits for probabilities p[0..n) (log p; p = 0 gives -inf). */
static void logits_of(float *l, const double *p, int n) {
    for (int i = 0; i < n; i++) l[i] = p[i] > 0 ? (float)log(p[i]) : -INFINITY;
}

static ds4_sampler make(int n, float t, float top_p, float min_p, int top_k, uint64_t seed) {
    ds4_sampler s;
    assert_int_equal(ds4_sampler_init(&s, n, NULL), 0);
    ds4_sampling p = {t, top_p, min_p, top_k, seed};
    ds4_sampler_start(&s, &p);
    return s;
}

/* Check the kept set (ids in walk order) and its renormalized probabilities. */
static void expect_dist(ds4_sampler *s, const float *l, const int32_t *ids, const double *probs, int n) {
    int32_t got_ids[64];
    double got_p[64];
    int k = ds4_sampler_distribution(s, l, got_ids, got_p, 64);
    if (k != n) fail_msg("kept %d tokens, want %d", k, n);
    for (int i = 0; i < n; i++) {
        assert_int_equal(got_ids[i], ids[i]);
        assert_close(got_p[i], probs[i], 1e-5);
    }
}

/* Draw many times: only kept tokens ever appear, all of them do, with about
 * the right frequencies. */
static void expect_draws(ds4_sampler *s, const float *l, int n_vocab, const int32_t *ids, const double *probs, int n) {
    const int draws = 40000;
    int counts[64] = {0};
    for (int d = 0; d < draws; d++) {
        int32_t t = ds4_sampler_sample(s, l, DS4_DSML_OUTSIDE);
        assert_true(t >= 0 && t < n_vocab);
        counts[t]++;
    }
    for (int t = 0; t < n_vocab; t++) {
        int kept = -1;
        for (int i = 0; i < n; i++)
            if (ids[i] == t) kept = i;
        if (kept < 0) {
            if (counts[t]) fail_msg("token %d was sampled %d times but is cut", t, counts[t]);
        } else {
            assert_true(counts[t] > 0);
            assert_close((double)counts[t] / draws, probs[kept], 0.015);
        }
    }
}

/* ============================================================ parameters */

static void test_defaults_and_normalize(void **state) {
    (void)state;
    ds4_sampling d = ds4_sampling_defaults();
    assert_close(d.temperature, 1.0, 0);
    assert_close(d.top_p, 1.0, 0);
    assert_close(d.min_p, 0.05, 1e-9);
    assert_int_equal(d.top_k, 0);
    assert_true(d.seed == 0);

    ds4_sampling p = {0.7f, 0.0f, -0.1f, 2000, 5};
    ds4_sampling q = ds4_sampling_normalize(p);
    assert_close(q.top_p, 1.0, 0);
    assert_close(q.min_p, 0.0, 0);
    assert_int_equal(q.top_k, 1024);
    assert_close(q.temperature, 0.7, 1e-7);
    p.top_p = 1.5f;
    p.top_k = -3;
    q = ds4_sampling_normalize(p);
    assert_close(q.top_p, 1.0, 0);
    assert_int_equal(q.top_k, 0);
    p.top_p = NAN;
    assert_close(ds4_sampling_normalize(p).top_p, 1.0, 0);
    p.top_p = 0.9f;
    assert_close(ds4_sampling_normalize(p).top_p, 0.9, 1e-7);
}

/* §5.3: thinking modes ignore the client's knobs. */
static void test_thinking_fixed(void **state) {
    (void)state;
    ds4_sampling client = {0.2f, 0.5f, 0.0f, 5, 77};
    ds4_sampling t = ds4_sampling_for_mode(&client, 1);
    assert_close(t.temperature, 1.0, 0);
    assert_close(t.top_p, 1.0, 0);
    assert_close(t.min_p, 0.05, 1e-9);
    assert_int_equal(t.top_k, 0);
    assert_true(t.seed == 77);
    ds4_sampling n = ds4_sampling_for_mode(&client, 0);
    assert_close(n.temperature, 0.2, 1e-7);
    assert_close(n.top_p, 0.5, 1e-7);
    assert_close(n.min_p, 0.0, 0);
    assert_int_equal(n.top_k, 5);
}

/* ================================================================ greedy */

/* §5.2 step 1: T <= 0 is argmax, lowest index on ties; no randomness. */
static void test_greedy(void **state) {
    (void)state;
    float l[6] = {1.0f, 3.0f, 3.0f, 2.0f, NAN, -INFINITY};
    ds4_sampler s = make(6, 0.0f, 1.0f, 0.05f, 0, 1);
    for (int i = 0; i < 100; i++) assert_int_equal(ds4_sampler_sample(&s, l, DS4_DSML_STRING_BODY), 1);
    ds4_sampling p = {-1.0f, 0.5f, 0.0f, 3, 0};
    ds4_sampler_set_params(&s, &p);
    assert_int_equal(ds4_sampler_sample(&s, l, DS4_DSML_OUTSIDE), 1);
    assert_int_equal(ds4_sampler_distribution(&s, l, NULL, NULL, 0), 0);
    float all_inf[3] = {-INFINITY, -INFINITY, -INFINITY};
    assert_int_equal(ds4_sampler_argmax(all_inf, 3), 0);
    float with_nan[3] = {NAN, -1.0f, -2.0f};
    assert_int_equal(ds4_sampler_argmax(with_nan, 3), 1);
    ds4_sampler_free(&s);
}

/* =========================================================== truncation */

/* min-p alone (default filter, top_p = 1): keep p_i >= 0.05 * p_max and walk
 * in vocabulary order.  p = .5 .3 .1 .05 .026 .024: threshold .025 keeps the
 * first five; renormalized by .976. */
static void test_min_p(void **state) {
    (void)state;
    const double p[6] = {0.5, 0.3, 0.1, 0.05, 0.026, 0.024};
    float l[6];
    logits_of(l, p, 6);
    ds4_sampler s = make(6, 1.0f, 1.0f, 0.05f, 0, 1234);
    const int32_t ids[5] = {0, 1, 2, 3, 4};
    const double probs[5] = {0.5 / 0.976, 0.3 / 0.976, 0.1 / 0.976, 0.05 / 0.976, 0.026 / 0.976};
    expect_dist(&s, l, ids, probs, 5);
    expect_draws(&s, l, 6, ids, probs, 5);

    /* min_p 0: everything finite is kept; -inf never */
    const double p2[6] = {0.7, 0.2, 0.0, 0.1, 0.0, 0.0};
    float l2[6];
    logits_of(l2, p2, 6);
    ds4_sampling q = {1.0f, 1.0f, 0.0f, 0, 0};
    ds4_sampler_set_params(&s, &q);
    const int32_t ids2[3] = {0, 1, 3};
    const double probs2[3] = {0.7, 0.2, 0.1};
    expect_dist(&s, l2, ids2, probs2, 3);
    expect_draws(&s, l2, 6, ids2, probs2, 3);

    /* min_p 0.45: tokens with at least 45% of the best one's probability
     * (.2/.4 = .5 kept, .1/.4 = .25 cut) */
    const double p3[6] = {0.1, 0.4, 0.3, 0.2, 0.0, 0.0};
    float l3[6];
    logits_of(l3, p3, 6);
    q.min_p = 0.45f;
    ds4_sampler_set_params(&s, &q);
    const int32_t ids3[3] = {1, 2, 3};
    const double probs3[3] = {0.4 / 0.9, 0.3 / 0.9, 0.2 / 0.9};
    expect_dist(&s, l3, ids3, probs3, 3);
    ds4_sampler_free(&s);
}

/* top-p: sorted by logit, keep until the cumulative probability reaches
 * top_p (the token that crosses it is kept), walk in sorted order.
 * Probabilities are placed out of vocabulary order on purpose. */
static void test_top_p(void **state) {
    (void)state;
    /* token: 0    1    2    3    4    5    6    7 */
    const double p[8] = {0.02, 0.01, 0.3, 0.04, 0.03, 0.1, 0.0, 0.5};
    float l[8];
    logits_of(l, p, 8);
    /* top_p .85: .5 (cum .5) .3 (.8) .1 (.9 >= .85, kept, stop) */
    ds4_sampler s = make(8, 1.0f, 0.85f, 0.0f, 0, 99);
    const int32_t ids[3] = {7, 2, 5};
    const double probs[3] = {0.5 / 0.9, 0.3 / 0.9, 0.1 / 0.9};
    expect_dist(&s, l, ids, probs, 3);
    expect_draws(&s, l, 8, ids, probs, 3);

    /* top_p .4: the best token alone already crosses it */
    ds4_sampling q = {1.0f, 0.4f, 0.0f, 0, 0};
    ds4_sampler_set_params(&s, &q);
    const int32_t ids1[1] = {7};
    const double probs1[1] = {1.0};
    expect_dist(&s, l, ids1, probs1, 1);
    expect_draws(&s, l, 8, ids1, probs1, 1);

    /* top-p and min-p together: min-p .15 (threshold .075) leaves .5 .3 .1;
     * top_p .99 is never reached, so all three are kept */
    q.top_p = 0.99f;
    q.min_p = 0.15f;
    ds4_sampler_set_params(&s, &q);
    expect_dist(&s, l, ids, probs, 3);
    /* min-p .3 (threshold .15): .5 .3 */
    q.min_p = 0.3f;
    ds4_sampler_set_params(&s, &q);
    const int32_t ids2[2] = {7, 2};
    const double probs2[2] = {0.5 / 0.8, 0.3 / 0.8};
    expect_dist(&s, l, ids2, probs2, 2);
    ds4_sampler_free(&s);
}

/* top-k: softmax over the k largest logits (ties: lower id first), then the
 * same min-p / top-p cuts, walk in sorted order. */
static void test_top_k(void **state) {
    (void)state;
    const double p[8] = {0.02, 0.01, 0.3, 0.04, 0.03, 0.1, 0.0, 0.5};
    float l[8];
    logits_of(l, p, 8);
    ds4_sampler s = make(8, 1.0f, 1.0f, 0.0f, 2, 5);
    const int32_t ids[2] = {7, 2};
    const double probs[2] = {0.5 / 0.8, 0.3 / 0.8};
    expect_dist(&s, l, ids, probs, 2);
    expect_draws(&s, l, 8, ids, probs, 2);

    /* top_k 4 keeps .5 .3 .1 .04 (z = .94); min_p .25 (w >= .25) drops .1
     * (w .2) and .04 */
    ds4_sampling q = {1.0f, 1.0f, 0.25f, 4, 0};
    ds4_sampler_set_params(&s, &q);
    expect_dist(&s, l, ids, probs, 2);

    /* top_k 4 + top_p .6: cum .5/.94 = .53, (.8)/.94 = .85 >= .6 -> two */
    q.min_p = 0.0f;
    q.top_p = 0.6f;
    ds4_sampler_set_params(&s, &q);
    expect_dist(&s, l, ids, probs, 2);

    /* top_k 3, no other cut: .5 .3 .1 renormalized over the three */
    q.top_p = 1.0f;
    q.top_k = 3;
    ds4_sampler_set_params(&s, &q);
    const int32_t ids3[3] = {7, 2, 5};
    const double probs3[3] = {0.5 / 0.9, 0.3 / 0.9, 0.1 / 0.9};
    expect_dist(&s, l, ids3, probs3, 3);
    expect_draws(&s, l, 8, ids3, probs3, 3);

    /* ties: equal logits, k = 2 -> the two lowest ids */
    float flat[8] = {1, 1, 1, 1, 1, -INFINITY, -INFINITY, -INFINITY};
    q.top_k = 2;
    ds4_sampler_set_params(&s, &q);
    const int32_t idsf[2] = {0, 1};
    const double probsf[2] = {0.5, 0.5};
    expect_dist(&s, flat, idsf, probsf, 2);
    /* k larger than the finite tokens */
    q.top_k = 1024;
    ds4_sampler_set_params(&s, &q);
    const int32_t ids_all[7] = {7, 2, 5, 3, 4, 0, 1};
    const double probs_all[7] = {0.5, 0.3, 0.1, 0.04, 0.03, 0.02, 0.01};
    expect_dist(&s, l, ids_all, probs_all, 7);
    ds4_sampler_free(&s);
}

/* Temperature reshapes the weights: w = exp((l - l_max) / T). */
static void test_temperature(void **state) {
    (void)state;
    float l[2] = {0.0f, (float)log(4.0)};
    ds4_sampler s = make(2, 2.0f, 1.0f, 0.0f, 0, 3);
    const int32_t ids[2] = {0, 1};
    const double probs_t2[2] = {1.0 / 3.0, 2.0 / 3.0}; /* weights .5, 1 */
    expect_dist(&s, l, ids, probs_t2, 2);
    expect_draws(&s, l, 2, ids, probs_t2, 2);
    ds4_sampling q = {0.5f, 1.0f, 0.0f, 0, 0};
    ds4_sampler_set_params(&s, &q);
    const double probs_t05[2] = {1.0 / 17.0, 16.0 / 17.0}; /* weights 1/16, 1 */
    expect_dist(&s, l, ids, probs_t05, 2);
    ds4_sampler_free(&s);
}

/* Non-finite logits: -inf and NaN never sampled; +inf wins outright. */
static void test_non_finite(void **state) {
    (void)state;
    float l[4] = {NAN, 0.0f, -INFINITY, 0.0f};
    ds4_sampler s = make(4, 1.0f, 1.0f, 0.0f, 0, 8);
    const int32_t ids[2] = {1, 3};
    const double probs[2] = {0.5, 0.5};
    expect_draws(&s, l, 4, ids, probs, 2);
    float inf[4] = {0.0f, INFINITY, 5.0f, 1.0f};
    for (int i = 0; i < 50; i++) assert_int_equal(ds4_sampler_sample(&s, inf, DS4_DSML_OUTSIDE), 1);
    ds4_sampler_free(&s);
}

/* ======================================================= reproducibility */

static void draw_seq(ds4_sampler *s, const float *l, int32_t *out, int n) {
    for (int i = 0; i < n; i++) out[i] = ds4_sampler_sample(s, l, DS4_DSML_OUTSIDE);
}

/* A positive seed makes sampling reproducible (§5.1). */
static void test_seeded_reproducible(void **state) {
    (void)state;
    enum { V = 64, N = 2000 };
    float l[V];
    for (int i = 0; i < V; i++) l[i] = (float)((i * 37) % 11) * 0.3f;
    int32_t a[N], b[N], c[N];
    ds4_sampler s1 = make(V, 1.0f, 0.95f, 0.0f, 0, 42);
    ds4_sampler s2 = make(V, 1.0f, 0.95f, 0.0f, 0, 42);
    ds4_sampler s3 = make(V, 1.0f, 0.95f, 0.0f, 0, 43);
    draw_seq(&s1, l, a, N);
    draw_seq(&s2, l, b, N);
    draw_seq(&s3, l, c, N);
    assert_memory_equal(a, b, sizeof(a));
    assert_memory_not_equal(a, c, sizeof(a));
    /* re-seeding restarts the stream; changing parameters does not reseed */
    ds4_sampler_seed(&s1, 42);
    draw_seq(&s1, l, b, N);
    assert_memory_equal(a, b, sizeof(a));
    ds4_sampling same = {1.0f, 0.95f, 0.0f, 0, 42};
    ds4_sampler_start(&s1, &same);
    draw_seq(&s1, l, b, N / 2);
    ds4_sampler_set_params(&s1, &same);
    draw_seq(&s1, l, b + N / 2, N - N / 2);
    assert_memory_equal(a, b, sizeof(a));
    /* the reference generator is reproducible too, and differs */
    ds4_sampler_set_rng(&s1, DS4_SAMPLER_RNG_REFERENCE, 42);
    ds4_sampler_set_rng(&s2, DS4_SAMPLER_RNG_REFERENCE, 42);
    draw_seq(&s1, l, b, N);
    draw_seq(&s2, l, c, N);
    assert_memory_equal(b, c, sizeof(b));
    assert_memory_not_equal(a, b, sizeof(a));
    ds4_sampler_free(&s1);
    ds4_sampler_free(&s2);
    ds4_sampler_free(&s3);
}

/* §5.2 step 4, transcribed independently: xorshift-multiply, uniform = top 24
 * bits / 2^24, zero state replaced. */
static float ref_uniform(uint64_t *x) {
    if (*x == 0) *x = 0x9e3779b97f4a7c15ull;
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;
    uint64_t out = *x * 0x2545f4914f6cdd1dull;
    return (float)(out >> 40) / 16777216.0f;
}

/* With the reference generator, a seeded draw is bit-exact: r = U * sum of
 * kept weights, walked in vocabulary order until r <= 0. */
static void test_reference_walk(void **state) {
    (void)state;
    const double p[4] = {0.2, 0.5, 0.0, 0.3};
    float l[4];
    logits_of(l, p, 4);
    ds4_sampler s = make(4, 1.0f, 1.0f, 0.0f, 0, 0);
    for (uint64_t seed = 1; seed <= 300; seed++) {
        ds4_sampler_set_rng(&s, DS4_SAMPLER_RNG_REFERENCE, seed);
        uint64_t x = seed;
        for (int k = 0; k < 5; k++) {
            /* weights relative to the max (.5): .4, 1, .6; sum 2 */
            double w[3] = {expf(l[0] - l[1]), 1.0, expf(l[3] - l[1])};
            int32_t idv[3] = {0, 1, 3};
            double r = (double)ref_uniform(&x) * (w[0] + w[1] + w[2]);
            int32_t want = 3;
            for (int j = 0; j < 3; j++) {
                r -= w[j];
                if (r <= 0) {
                    want = idv[j];
                    break;
                }
            }
            assert_int_equal(ds4_sampler_sample(&s, l, DS4_DSML_OUTSIDE), want);
        }
    }
    /* the sampler's uniform is the formula's */
    ds4_sampler_set_rng(&s, DS4_SAMPLER_RNG_REFERENCE, 12345);
    uint64_t x = 12345;
    for (int i = 0; i < 100; i++) assert_true(ds4_sampler_uniform(&s) == ref_uniform(&x));
    ds4_sampler_set_rng(&s, DS4_SAMPLER_RNG_REFERENCE, 0); /* 0 = time-seeded, still works */
    float u = ds4_sampler_uniform(&s);
    assert_true(u >= 0.0f && u < 1.0f);
    ds4_sampler_free(&s);
}

/* ==================================================== structural forcing */

/* §4.5 / §5.4: STRUCTURAL and JSON_STRUCTURAL force argmax whatever the
 * parameters; payload states sample. */
static void test_structural_forcing(void **state) {
    (void)state;
    const double p[3] = {0.3, 0.4, 0.3};
    float l[3];
    logits_of(l, p, 3);
    ds4_sampler s = make(3, 1.5f, 1.0f, 0.0f, 0, 11);
    for (int i = 0; i < 500; i++) {
        assert_int_equal(ds4_sampler_sample(&s, l, DS4_DSML_STRUCTURAL), 1);
        assert_int_equal(ds4_sampler_sample(&s, l, DS4_DSML_JSON_STRUCTURAL), 1);
    }
    ds4_dsml_decode_state free_states[3] = {DS4_DSML_OUTSIDE, DS4_DSML_STRING_BODY, DS4_DSML_JSON_STRING};
    for (int k = 0; k < 3; k++) {
        int seen[3] = {0};
        for (int i = 0; i < 500; i++) seen[ds4_sampler_sample(&s, l, free_states[k])]++;
        assert_true(seen[0] > 0 && seen[1] > 0 && seen[2] > 0);
    }
    ds4_sampler_free(&s);
}

/* A full-size vocabulary (§1: 129280) with nucleus sampling: no allocation
 * per call, results inside the kept set. */
static void test_full_vocab(void **state) {
    (void)state;
    enum { V = 129280 };
    float *l = malloc(V * sizeof(float));
    ds4_rng r;
    ds4_rng_seed(&r, 7);
    for (int i = 0; i < V; i++) l[i] = ds4_rng_normal(&r) * 3.0f;
    ds4_sampler s = make(V, 1.0f, 0.9f, 0.0f, 0, 21);
    int32_t *ids = malloc(V * sizeof(int32_t));
    double *probs = malloc(V * sizeof(double));
    int k = ds4_sampler_distribution(&s, l, ids, probs, V);
    assert_true(k > 1 && k < V);
    double total = 0;
    for (int i = 0; i < k; i++) {
        total += probs[i];
        if (i) assert_true(l[ids[i]] <= l[ids[i - 1]]);
    }
    assert_close(total, 1.0, 1e-6);
    for (int d = 0; d < 200; d++) {
        int32_t t = ds4_sampler_sample(&s, l, DS4_DSML_OUTSIDE);
        int found = 0;
        for (int i = 0; i < k && !found; i++) found = ids[i] == t;
        assert_true(found);
    }
    /* default parameters (min-p) and top-k 1024 on the same logits */
    ds4_sampling q = ds4_sampling_defaults();
    ds4_sampler_set_params(&s, &q);
    assert_true(ds4_sampler_sample(&s, l, DS4_DSML_OUTSIDE) < V);
    q.top_k = 1024;
    ds4_sampler_set_params(&s, &q);
    assert_true(ds4_sampler_distribution(&s, l, NULL, NULL, 0) <= 1024);
    free(ids);
    free(probs);
    free(l);
    ds4_sampler_free(&s);

    ds4_err err;
    assert_int_equal(ds4_sampler_init(&s, 0, &err), -1);
}

/* The greedy pick and the min-p set on a whole vocabulary against plain
 * loops written from the definitions (every expf taken; index kept while
 * scanning), with ties, NaN, infinities, the excluded id and tokens placed
 * right at the min-p boundary. */
static int32_t naive_argmax(const float *l, int n, int32_t skip) {
    int32_t best = -1;
    for (int i = 0; i < n; i++)
        if (i != skip && !isnan(l[i]) && (best < 0 || l[i] > l[best])) best = i;
    return best >= 0 ? best : skip == 0 && n > 1 ? 1 : 0;
}

/* The kept set of plain min-p sampling (top-p 1, top-k 0) against the loop
 * written from the definition: every expf taken, vocabulary order. */
static void expect_plain_min_p(const float *l, int n, float temp, float min_p, int32_t *ids, double *probs) {
    ds4_sampler s = make(n, temp, 1.0f, min_p, 0, 1);
    const int k = ds4_sampler_distribution(&s, l, ids, probs, n);
    ds4_sampler_free(&s);
    float lmax = -INFINITY;
    for (int i = 0; i < n; i++)
        if (isfinite(l[i]) && l[i] > lmax) lmax = l[i];
    int want = 0;
    for (int i = 0; i < n; i++) {
        if (!isfinite(l[i])) continue;
        const float w = expf((l[i] - lmax) * (1.0f / temp));
        if (w <= 0.0f || w < min_p) continue;
        if (want >= k || ids[want] != i) fail_msg("T %g, min_p %g: token %d (w %.9g) missing from the kept set", temp,
                                                  min_p, i, w);
        want++;
    }
    assert_int_equal(k, want);
}

static void test_fast_paths(void **state) {
    (void)state;
    enum { V = 129280 };
    float *l = malloc(V * sizeof(float));
    int32_t *ids = malloc(V * sizeof(int32_t));
    double *probs = malloc(V * sizeof(double));
    ds4_rng r;
    ds4_rng_seed(&r, 11);
    for (int trial = 0; trial < 12; trial++) {
        for (int i = 0; i < V; i++) l[i] = ds4_rng_normal(&r) * 2.0f;
        const int top = (int)(ds4_rng_uniform(&r) * V);
        l[top] = 12.0f;
        if (trial % 3 == 1) l[(top + 977) % V] = 12.0f;  /* a tie: the lower id wins */
        if (trial % 4 == 2) l[(top + 5) % V] = NAN;
        if (trial % 4 == 3) l[(top + 7) % V] = -INFINITY;
        const float temp = trial < 6 ? 1.0f : 0.37f, min_p = trial % 2 ? 0.05f : 0.002f;
        /* tokens whose weight lands just above and just below min_p */
        for (int j = 1; j <= 8; j++) l[(top + 31 * j) % V] = 12.0f + temp * logf(min_p) + (j - 4.5f) * 1e-6f;
        for (int skip = -1; skip < 2; skip++) {
            const int32_t sk = skip < 0 ? -1 : skip ? top : 0;
            assert_int_equal(ds4_sampler_argmax_except(l, V, sk), naive_argmax(l, V, sk));
        }
        expect_plain_min_p(l, V, temp, min_p, ids, probs);
    }
    /* extreme parameters: 1/T overflows to inf (the top token's exponent is
     * NaN), 1/T is 0 with logits more than FLT_MAX apart, a subnormal min_p */
    float two[2] = {0.0f, -103.5f}, wide[130];
    expect_plain_min_p(two, 2, 1.0f, 1.4e-45f, ids, probs);
    expect_plain_min_p(two, 2, 1e-40f, 0.05f, ids, probs);
    wide[0] = FLT_MAX;
    for (int i = 1; i < 130; i++) wide[i] = i == 100 ? FLT_MAX : -FLT_MAX;
    expect_plain_min_p(wide, 130, INFINITY, 0.05f, ids, probs);
    expect_plain_min_p(wide, 130, 1e-40f, 0.05f, ids, probs);
    float nan3[3] = {NAN, NAN, NAN};
    assert_int_equal(ds4_sampler_argmax_except(nan3, 3, 0), 1);
    assert_int_equal(ds4_sampler_argmax(nan3, 3), 0);
    free(l);
    free(ids);
    free(probs);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_and_normalize),
        cmocka_unit_test(test_thinking_fixed),
        cmocka_unit_test(test_greedy),
        cmocka_unit_test(test_min_p),
        cmocka_unit_test(test_top_p),
        cmocka_unit_test(test_top_k),
        cmocka_unit_test(test_temperature),
        cmocka_unit_test(test_non_finite),
        cmocka_unit_test(test_seeded_reproducible),
        cmocka_unit_test(test_reference_walk),
        cmocka_unit_test(test_structural_forcing),
        cmocka_unit_test(test_full_vocab),
        cmocka_unit_test(test_fast_paths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
