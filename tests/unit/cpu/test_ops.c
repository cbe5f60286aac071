/* The small operations of the forward pass against independently computed
 * values: FP8 E4M3 round trips against torch.float8_e4m3fn, FP4 E2M1 and the
 * Hadamard-128 against float64 references (tests/oracle/fixtures/qat, made
 * on the GPU machine), the Sinkhorn projection against an exact float64
 * re-implementation, RoPE frequencies against MODEL.md's table. */
#include "cpu/ops.h"
#include "test_util.h"

static float *load_f32(const char *rel, size_t *n) {
    size_t bytes = 0;
    float *p = test_read_file(test_path(rel), &bytes);
    if (!p) fail_msg("cannot read %s", rel);
    *n = bytes / 4;
    return p;
}

/* ------------------------------------------------------------------ FP8 */

static void test_fp8_vs_torch(void **state) {
    (void)state;
    size_t n, m;
    float *in = load_f32("tests/oracle/fixtures/qat/fp8_in.f32", &n);
    float *out = load_f32("tests/oracle/fixtures/qat/fp8_out.f32", &m);
    assert_int_equal(n, m);
    assert_int_equal(n % 64, 0);
    ds4_fp8_sim(in, (int)n);
    for (size_t i = 0; i < n; i++)
        if (memcmp(&in[i], &out[i], 4) != 0) fail_msg("fp8 element %zu: got %.9g, torch %.9g", i, in[i], out[i]);
    free(in);
    free(out);
}

static void test_e4m3_properties(void **state) {
    (void)state;
    assert_true(ds4_e4m3_round(448.0f) == 448.0f);
    assert_true(ds4_e4m3_round(-448.0f) == -448.0f);
    assert_true(ds4_e4m3_round(0.0f) == 0.0f);
    /* between 1 and 1.125 the midpoint 1.0625 goes to the even code (1.0) */
    assert_true(ds4_e4m3_round(1.0625f) == 1.0f);
    /* between 1.125 and 1.25 the midpoint goes to 1.25 (even mantissa) */
    assert_true(ds4_e4m3_round(1.1875f) == 1.25f);
    /* subnormals: steps of 2^-9 */
    assert_true(ds4_e4m3_round(3.0f / 1024.0f) == 2.0f / 512.0f); /* 1.5 * 2^-9 -> 2 * 2^-9 (even) */
    float z[64] = {0};
    ds4_fp8_sim(z, 64);
    for (int i = 0; i < 64; i++) assert_true(z[i] == 0.0f);
    /* every code value is a fixed point */
    for (int c = 0; c < 127; c++) {
        const int e = c >> 3, mnt = c & 7;
        const float v = e == 0 ? mnt / 512.0f : (1.0f + mnt / 8.0f) * ldexpf(1.0f, e - 7);
        assert_true(ds4_e4m3_round(v) == v);
        assert_true(ds4_e4m3_round(-v) == -v);
    }
}

/* ------------------------------------------------------------------ FP4 and Hadamard */

static void test_fp4_vs_reference(void **state) {
    (void)state;
    size_t n, m;
    float *in = load_f32("tests/oracle/fixtures/qat/fp4_in.f32", &n);
    float *out = load_f32("tests/oracle/fixtures/qat/fp4_out.f32", &m);
    assert_int_equal(n, m);
    ds4_fp4_sim(in, (int)n);
    for (size_t i = 0; i < n; i++)
        if (memcmp(&in[i], &out[i], 4) != 0) fail_msg("fp4 element %zu: got %.9g, reference %.9g", i, in[i], out[i]);
    free(in);
    free(out);
    static const float table[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
    for (int i = 0; i < 8; i++) assert_true(ds4_e2m1_round(table[i]) == table[i]);
    assert_true(ds4_e2m1_round(0.25f) == 0.0f);
    assert_true(ds4_e2m1_round(2.5f) == 2.0f);
    assert_true(ds4_e2m1_round(5.0f) == 4.0f);
    assert_true(ds4_e2m1_round(-1.75f) == -2.0f);
}

static void test_hadamard_vs_reference(void **state) {
    (void)state;
    size_t n, m;
    float *in = load_f32("tests/oracle/fixtures/qat/hadamard_in.f32", &n);
    float *out = load_f32("tests/oracle/fixtures/qat/hadamard_out.f32", &m);
    assert_int_equal(n, m);
    float keep[128];
    for (size_t r = 0; r < n / 128; r++) {
        float *x = in + r * 128;
        memcpy(keep, x, sizeof(keep));
        ds4_hadamard(x, 128);
        for (int i = 0; i < 128; i++) assert_close(x[i], out[r * 128 + i], 2e-6 * (1 + fabsf(out[r * 128 + i])));
        /* applying it twice gives the identity (it is orthogonal and symmetric) */
        ds4_hadamard(x, 128);
        for (int i = 0; i < 128; i++) assert_close(x[i], keep[i], 4e-6 * (1 + fabsf(keep[i])));
    }
    free(in);
    free(out);
}

/* ------------------------------------------------------------------ Sinkhorn */

static void sinkhorn_f64(const float *mix, const float *scale, const float *base, int hc, int iters, double eps,
                         double *pre, double *post, double *M) {
    for (int i = 0; i < hc; i++) {
        pre[i] = 1.0 / (1.0 + exp(-((double)mix[i] * scale[0] + base[i]))) + eps;
        post[i] = 2.0 / (1.0 + exp(-((double)mix[hc + i] * scale[1] + base[hc + i])));
    }
    for (int i = 0; i < hc; i++) {
        double mx = -1e300, s = 0;
        for (int j = 0; j < hc; j++) {
            M[i * hc + j] = (double)mix[2 * hc + i * hc + j] * scale[2] + base[2 * hc + i * hc + j];
            mx = fmax(mx, M[i * hc + j]);
        }
        for (int j = 0; j < hc; j++) s += (M[i * hc + j] = exp(M[i * hc + j] - mx));
        for (int j = 0; j < hc; j++) M[i * hc + j] = M[i * hc + j] / s + eps;
    }
    for (int it = 0; it < iters; it++) {
        if (it) {
            for (int i = 0; i < hc; i++) {
                double s = 0;
                for (int j = 0; j < hc; j++) s += M[i * hc + j];
                for (int j = 0; j < hc; j++) M[i * hc + j] /= s + eps;
            }
        }
        for (int j = 0; j < hc; j++) {
            double s = 0;
            for (int i = 0; i < hc; i++) s += M[i * hc + j];
            for (int i = 0; i < hc; i++) M[i * hc + j] /= s + eps;
        }
    }
}

static void test_sinkhorn_vs_f64(void **state) {
    (void)state;
    uint64_t x = 12345;
    for (int trial = 0; trial < 200; trial++) {
        float mix[24], base[24], scale[3];
        const float spread = trial < 100 ? 1.0f : 4.0f; /* mild, then peaked logits */
        for (int i = 0; i < 24; i++) {
            x = x * 6364136223846793005ull + 1;
            mix[i] = ((float)(x >> 40) / 16777216.0f - 0.5f) * 4 * spread;
            x = x * 6364136223846793005ull + 1;
            base[i] = ((float)(x >> 40) / 16777216.0f - 0.5f);
        }
        scale[0] = 0.7f, scale[1] = 1.1f, scale[2] = 0.9f;
        float pre[4], post[4], M[16];
        double dp[4], dq[4], dM[16];
        ds4_hc_split(mix, scale, base, 4, 20, 1e-6f, pre, post, M);
        sinkhorn_f64(mix, scale, base, 4, 20, 1e-6, dp, dq, dM);
        for (int i = 0; i < 4; i++) {
            assert_close(pre[i], dp[i], 1e-6);
            assert_close(post[i], dq[i], 2e-6);
        }
        for (int i = 0; i < 16; i++) assert_close(M[i], dM[i], 2e-6);
        /* the last pass normalizes columns: they sum to ~1 - eps */
        for (int j = 0; j < 4; j++) assert_close(M[j] + M[4 + j] + M[8 + j] + M[12 + j], 1.0, 1e-5);
    }
}

/* ------------------------------------------------------------------ RoPE */

static void test_rope_frequencies(void **state) {
    (void)state;
    ds4_hparams hp;
    ds4_hparams_published(&hp);
    double w[32];
    ds4_rope_freqs(&hp, true, w);
    /* MODEL.md 4.2 table */
    static const struct {
        int k;
        double w;
    } T[] = {{0, 1.0}, {1, 0.687656}, {2, 0.472871}, {15, 3.635539e-3}, {16, 2.265625e-03}, {17, 1.396801e-03},
             {18, 8.496897e-04}, {19, 5.080820e-04}, {20, 2.969778e-04}, {21, 1.681800e-04}, {22, 9.086784e-05},
             {23, 4.544423e-05}, {24, 1.953125e-05}, {25, 5.372313e-06}, {31, 5.680529e-07}};
    for (size_t i = 0; i < sizeof(T) / sizeof(T[0]); i++) assert_close(w[T[i].k], T[i].w, 1e-6 * T[i].w + 1e-12);
    ds4_rope_freqs(&hp, false, w);
    for (int k = 0; k < 32; k++) assert_close(w[k], pow(10000.0, -k / 32.0), 1e-12);
    /* rotation then inverse rotation is the identity; the first L-R elements are untouched */
    float v[128], keep[128], cs[64];
    for (int i = 0; i < 128; i++) keep[i] = v[i] = (float)sin(i * 0.37);
    ds4_rope_table(w, 32, 1000, cs);
    ds4_rope_tail(v, 128, 32, cs, false);
    for (int i = 0; i < 64; i++) assert_true(v[i] == keep[i]);
    ds4_rope_tail(v, 128, 32, cs, true);
    for (int i = 0; i < 128; i++) assert_close(v[i], keep[i], 1e-6);
    /* pair k rotates (x[2k], x[2k+1]) by pos * w_k: check one pair by hand */
    float u[4] = {1, 0, 0, 1};
    float cs2[4];
    const double f2[2] = {0.5, 0.25};
    ds4_rope_table(f2, 2, 2, cs2);
    ds4_rope_tail(u, 4, 2, cs2, false);
    assert_close(u[0], cos(1.0), 1e-7);
    assert_close(u[1], sin(1.0), 1e-7);
    assert_close(u[2], -sin(0.5), 1e-7);
    assert_close(u[3], cos(0.5), 1e-7);
}

static void test_rmsnorm_and_activations(void **state) {
    (void)state;
    float x[4] = {1, 2, 3, 4}, w[4] = {1, 0.5f, 2, 1}, y[4];
    ds4_rmsnorm(x, w, 4, 1e-6f, y);
    const double r = sqrt((1 + 4 + 9 + 16) / 4.0 + 1e-6);
    for (int i = 0; i < 4; i++) assert_close(y[i], x[i] / r * w[i], 1e-6);
    assert_close(ds4_softplus(0.0f), log(2.0), 1e-7);
    assert_close(ds4_softplus(30.0f), 30.0, 0);
    assert_close(ds4_softplus(-30.0f), exp(-30.0), 1e-20);
    assert_close(ds4_silu(2.0f), 2.0 / (1 + exp(-2.0)), 1e-7);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fp8_vs_torch),         cmocka_unit_test(test_e4m3_properties),
        cmocka_unit_test(test_fp4_vs_reference),     cmocka_unit_test(test_hadamard_vs_reference),
        cmocka_unit_test(test_sinkhorn_vs_f64),      cmocka_unit_test(test_rope_frequencies),
        cmocka_unit_test(test_rmsnorm_and_activations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
