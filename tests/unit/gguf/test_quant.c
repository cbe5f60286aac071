/* Tests for src/gguf/quant*.c: block formats, dispatch, dot products,
 * half-precision conversions, quantizers.
 *
 * Dequantization is checked against tests/data/quant/, values produced by
 * ggml's reference dequantizers (see the README there), on both code paths.
 * Everything else is checked by properties: the two paths agree, the fused
 * dot equals the dot of the dequantized row bit for bit, conversions round
 * correctly, quantizers produce valid blocks with bounded error. */
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

#include "test_util.h"

#include "gguf/quant.h"
#include "util/f16.h"
#include "util/rng.h"

/* ---------------------------------------------------------------- helpers */

static const int k_block_types[] = {DS4_TYPE_Q8_0, DS4_TYPE_Q2_K, DS4_TYPE_Q4_K, DS4_TYPE_IQ2_XXS};
static const int k_float_types[] = {DS4_TYPE_F32, DS4_TYPE_F16, DS4_TYPE_BF16, DS4_TYPE_Q8_0,
                                    DS4_TYPE_Q2_K, DS4_TYPE_Q4_K, DS4_TYPE_IQ2_XXS};
#define N_ELEMS(a) (int)(sizeof(a) / sizeof((a)[0]))

/* The paths to exercise: portable always, AVX2 when the CPU has it. */
static int n_paths(void) { return ds4_simd_available() ? 2 : 1; }
static const char *use_path(int p) {
    ds4_simd_force_portable(p == 0);
    return p == 0 ? "portable" : "avx2";
}

static int teardown_path(void **state) {
    (void)state;
    ds4_simd_force_portable(false);
    return 0;
}

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static void wr16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

/* Offsets of the f16 scale fields of a block type (up to 2; -1 = none). */
static void scale_offsets(int type, int off[2]) {
    off[0] = off[1] = -1;
    switch (type) {
    case DS4_TYPE_Q8_0: off[0] = 0; break;
    case DS4_TYPE_Q2_K: off[0] = 80, off[1] = 82; break;
    case DS4_TYPE_Q4_K: off[0] = 0, off[1] = 2; break;
    case DS4_TYPE_IQ2_XXS: off[0] = 0; break;
    default: break;
    }
}

/* A finite random f16 of either sign (subnormals included). */
static uint16_t rand_finite_f16(ds4_rng *r) {
    uint16_t h;
    do h = (uint16_t)ds4_rng_u64(r);
    while ((h & 0x7c00u) == 0x7c00u);
    return h;
}

/* n random bytes of a row of `type`; with finite=true the f16 scale fields
 * (and f16/bf16/f32 elements) are forced finite. */
static void *rand_row(ds4_rng *r, int type, int64_t n, bool finite) {
    const size_t bytes = ds4_row_bytes(type, n);
    uint8_t *p = malloc(bytes);
    assert_non_null(p);
    for (size_t i = 0; i < bytes; i++) p[i] = (uint8_t)ds4_rng_u64(r);
    if (!finite) return p;
    if (type == DS4_TYPE_F32) {
        float *f = (float *)(void *)p;
        for (int64_t i = 0; i < n; i++) f[i] = ds4_rng_normal(r);
    } else if (type == DS4_TYPE_F16) {
        for (int64_t i = 0; i < n; i++) wr16(p + 2 * i, rand_finite_f16(r));
    } else if (type == DS4_TYPE_BF16) {
        for (int64_t i = 0; i < n; i++) wr16(p + 2 * i, ds4_f32_to_bf16(ds4_rng_normal(r)));
    } else {
        const ds4_type_traits *t = ds4_type_info(type);
        int off[2];
        scale_offsets(type, off);
        for (int64_t b = 0; b < n / t->block; b++)
            for (int k = 0; k < 2; k++)
                if (off[k] >= 0) wr16(p + b * t->block_bytes + off[k], rand_finite_f16(r));
    }
    return p;
}

static float *rand_vec(ds4_rng *r, int64_t n) {
    float *x = malloc((size_t)n * sizeof(float));
    assert_non_null(x);
    for (int64_t i = 0; i < n; i++) x[i] = ds4_rng_normal(r);
    return x;
}

/* Bitwise equality of two float arrays; NaN == NaN (any payload) when nan_any. */
static void assert_same_floats(const float *a, const float *b, int64_t n, bool nan_any, const char *what) {
    for (int64_t i = 0; i < n; i++) {
        if (nan_any && isnan(a[i]) && isnan(b[i])) continue;
        if (ds4_f32_to_bits(a[i]) != ds4_f32_to_bits(b[i]))
            fail_msg("%s: element %lld: %.9g (0x%08x) != %.9g (0x%08x)", what, (long long)i, a[i],
                     ds4_f32_to_bits(a[i]), b[i], ds4_f32_to_bits(b[i]));
    }
}

/* ---------------------------------------------------------------- traits */

static void test_traits(void **state) {
    (void)state;
    static const struct {
        int type;
        const char *name;
        int64_t block;
        size_t bytes;
        bool is_float;
    } want[] = {
        {DS4_TYPE_F32, "f32", 1, 4, true},       {DS4_TYPE_F16, "f16", 1, 2, true},
        {DS4_TYPE_Q8_0, "q8_0", 32, 34, true},   {DS4_TYPE_Q2_K, "q2_K", 256, 84, true},
        {DS4_TYPE_Q4_K, "q4_K", 256, 144, true}, {DS4_TYPE_IQ2_XXS, "iq2_xxs", 256, 66, true},
        {DS4_TYPE_I32, "i32", 1, 4, false},      {DS4_TYPE_BF16, "bf16", 1, 2, true},
    };
    for (int i = 0; i < N_ELEMS(want); i++) {
        const ds4_type_traits *t = ds4_type_info(want[i].type);
        assert_non_null(t);
        assert_string_equal(t->name, want[i].name);
        assert_string_equal(ds4_type_name(want[i].type), want[i].name);
        assert_int_equal(t->block, want[i].block);
        assert_int_equal(t->block_bytes, want[i].bytes);
        assert_int_equal(t->is_float, want[i].is_float);
        assert_int_equal(ds4_row_bytes(want[i].type, 4096), (size_t)(4096 / want[i].block) * want[i].bytes);
        assert_int_equal(ds4_row_bytes(want[i].type, 0), 0);
    }
    const int unknown[] = {-1, 2, 3, 6, 7, 9, 11, 13, 14, 15, 17, 25, 27, 29, 31, 1000};
    for (int i = 0; i < N_ELEMS(unknown); i++) {
        assert_null(ds4_type_info(unknown[i]));
        assert_int_equal(ds4_row_bytes(unknown[i], 256), 0);
    }
    assert_string_equal(ds4_type_name(15), "unknown(15)");
    assert_string_equal(ds4_type_name(-3), "unknown(-3)");
    /* not a whole number of blocks, negative */
    assert_int_equal(ds4_row_bytes(DS4_TYPE_Q8_0, 33), 0);
    assert_int_equal(ds4_row_bytes(DS4_TYPE_Q4_K, 128), 0);
    assert_int_equal(ds4_row_bytes(DS4_TYPE_F32, -8), 0);
    assert_int_equal(ds4_row_bytes(DS4_TYPE_IQ2_XXS, 256 * 3), 198);
}

static void test_dispatch_switch(void **state) {
    (void)state;
    ds4_simd_force_portable(true);
    assert_false(ds4_simd_active());
    ds4_simd_force_portable(false);
    assert_int_equal(ds4_simd_active(), ds4_simd_available());
    print_message("SIMD (AVX2+FMA+F16C) available: %s\n", ds4_simd_available() ? "yes" : "no");
}

/* ---------------------------------------------------------------- tables */

static void test_iq2_tables(void **state) {
    (void)state;
    for (int s = 0; s < 128; s++) {
        const uint8_t v = ds4_ksigns_iq2xs[s];
        assert_int_equal(v & 127, s);
        assert_int_equal(__builtin_popcount(v) % 2, 0);
    }
    /* the first entries, spelled out as in the format description */
    assert_int_equal(ds4_ksigns_iq2xs[0], 0);
    assert_int_equal(ds4_ksigns_iq2xs[1], 129);
    assert_int_equal(ds4_ksigns_iq2xs[3], 3);
    assert_int_equal(ds4_ksigns_iq2xs[127], 255);
    for (int g = 0; g < 256; g++) {
        for (int j = 0; j < 8; j++) {
            const unsigned b = (unsigned)(ds4_iq2xxs_grid[g] >> (8 * j)) & 0xffu;
            if (b != 0x08 && b != 0x19 && b != 0x2b) fail_msg("grid[%d] byte %d = 0x%02x", g, j, b);
        }
        for (int h = 0; h < g; h++)
            if (ds4_iq2xxs_grid[g] == ds4_iq2xxs_grid[h]) fail_msg("grid[%d] == grid[%d]", g, h);
    }
    assert_true(ds4_iq2xxs_grid[0] == 0x0808080808080808ull);
    assert_true(ds4_iq2xxs_grid[255] == 0x2b2b2b1908081908ull);
}

/* ---------------------------------------------------------------- dequant vs ggml fixtures */

static void check_fixture(int type, const char *stem) {
    char rel[256];
    size_t nb_bytes = 0, nf_bytes = 0;
    snprintf(rel, sizeof(rel), "tests/data/quant/%s.blocks", stem);
    uint8_t *blocks = test_read_file(test_path(rel), &nb_bytes);
    snprintf(rel, sizeof(rel), "tests/data/quant/%s.f32", stem);
    float *want = test_read_file(test_path(rel), &nf_bytes);
    if (!blocks || !want) fail_msg("cannot read the fixture tests/data/quant/%s.*", stem);
    const ds4_type_traits *t = ds4_type_info(type);
    assert_int_equal(nb_bytes % t->block_bytes, 0);
    const int64_t n = (int64_t)(nb_bytes / t->block_bytes) * t->block;
    assert_int_equal(nf_bytes, (size_t)n * sizeof(float));
    assert_true(n > 0);
    float *got = malloc((size_t)n * sizeof(float));
    assert_non_null(got);
    for (int p = 0; p < n_paths(); p++) {
        char what[64];
        snprintf(what, sizeof(what), "%s fixture, %s path", stem, use_path(p));
        memset(got, 0xff, (size_t)n * sizeof(float));
        ds4_dequant_row(type, blocks, got, n);
        assert_same_floats(got, want, n, false, what);
    }
    ds4_simd_force_portable(false);
    free(got);
    free(blocks);
    free(want);
}

static void test_fixture_q8_0(void **state) { (void)state, check_fixture(DS4_TYPE_Q8_0, "q8_0"); }
static void test_fixture_q2_k(void **state) { (void)state, check_fixture(DS4_TYPE_Q2_K, "q2_K"); }
static void test_fixture_q4_k(void **state) { (void)state, check_fixture(DS4_TYPE_Q4_K, "q4_K"); }
static void test_fixture_iq2_xxs(void **state) { (void)state, check_fixture(DS4_TYPE_IQ2_XXS, "iq2_xxs"); }

/* Hand-made blocks whose values follow directly from MODEL.md §14. */
static void test_dequant_by_hand(void **state) {
    (void)state;
    for (int p = 0; p < n_paths(); p++) {
        use_path(p);
        float y[256];
        /* Q8_0: d = 0.5, q[i] = i - 16 */
        uint8_t q8[34];
        wr16(q8, 0x3800);
        for (int i = 0; i < 32; i++) q8[2 + i] = (uint8_t)(int8_t)(i - 16);
        ds4_dequant_row(DS4_TYPE_Q8_0, q8, y, 32);
        for (int i = 0; i < 32; i++) assert_true(y[i] == 0.5f * (float)(i - 16));

        /* Q2_K: sub-block sb has scale sb & 15, min 1; d = 2, dmin = 0.25;
         * element n gets code n % 4 */
        uint8_t q2[84] = {0};
        for (int sb = 0; sb < 16; sb++) q2[sb] = (uint8_t)((sb & 15) | (1 << 4));
        for (int n = 0; n < 256; n++) {
            const int half = n / 128, shift = 2 * ((n % 128) / 32), l = n % 32;
            q2[16 + 32 * half + l] |= (uint8_t)((n % 4) << shift);
        }
        wr16(q2 + 80, 0x4000);
        wr16(q2 + 82, 0x3400);
        ds4_dequant_row(DS4_TYPE_Q2_K, q2, y, 256);
        for (int n = 0; n < 256; n++) assert_true(y[n] == 2.0f * (float)(n / 16) * (float)(n % 4) - 0.25f);

        /* Q4_K: sc_j = 10 + j, m_j = 40 + j (exercises the high bits of j >= 4);
         * element n gets code n % 16; d = 1, dmin = 0.5 */
        uint8_t q4[144] = {0};
        int sc[8], mn[8];
        for (int j = 0; j < 8; j++) sc[j] = 10 + 7 * j, mn[j] = 63 - 5 * j;
        for (int j = 0; j < 4; j++) {
            q4[4 + j] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6));
            q4[8 + j] = (uint8_t)(mn[j] | ((mn[j + 4] >> 4) << 6));
            q4[12 + j] = (uint8_t)((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
        }
        for (int n = 0; n < 256; n++) {
            const int chunk = n / 64, l = n % 32;
            q4[16 + 32 * chunk + l] |= (uint8_t)((n % 16) << ((n % 64 < 32) ? 0 : 4));
        }
        wr16(q4, 0x3c00);
        wr16(q4 + 2, 0x3800);
        ds4_dequant_row(DS4_TYPE_Q4_K, q4, y, 256);
        for (int n = 0; n < 256; n++) assert_true(y[n] == (float)sc[n / 32] * (float)(n % 16) - 0.5f * (float)mn[n / 32]);

        /* IQ2_XXS: sub-block b uses grid entries 4b..4b+3, sign index 5 (bits
         * 0 and 2 negative), ls = b; d = 1 -> db = (0.5 + b) / 4 */
        uint8_t iq[66] = {0};
        wr16(iq, 0x3c00);
        for (int b = 0; b < 8; b++) {
            for (int i = 0; i < 4; i++) iq[2 + 8 * b + i] = (uint8_t)(4 * b + i);
            const uint32_t a1 = 5u | (5u << 7) | (5u << 14) | (5u << 21) | ((uint32_t)b << 28);
            for (int k = 0; k < 4; k++) iq[2 + 8 * b + 4 + k] = (uint8_t)(a1 >> (8 * k));
        }
        ds4_dequant_row(DS4_TYPE_IQ2_XXS, iq, y, 256);
        for (int n = 0; n < 256; n++) {
            const int b = n / 32, i = (n % 32) / 8, j = n % 8;
            const float mag = (float)((ds4_iq2xxs_grid[4 * b + i] >> (8 * j)) & 0xff);
            const float v = (0.5f + (float)b) / 4.0f * mag;
            assert_true(y[n] == ((j == 0 || j == 2) ? -v : v));
        }
    }
}

/* ---------------------------------------------------------------- portable == AVX2 dequant */

static void test_dequant_paths_agree(void **state) {
    (void)state;
    if (!ds4_simd_available()) skip();
    ds4_rng r;
    ds4_rng_seed(&r, 101);
    const int64_t n = 256 * 12;
    float *a = malloc((size_t)n * sizeof(float)), *b = malloc((size_t)n * sizeof(float));
    assert_non_null(a);
    assert_non_null(b);
    for (int t = 0; t < N_ELEMS(k_float_types); t++) {
        const int type = k_float_types[t];
        for (int rep = 0; rep < 20; rep++) {
            /* finite scales: bitwise; arbitrary bytes (NaN/inf scales): NaN-tolerant */
            const bool finite = rep < 16;
            void *row = rand_row(&r, type, n, finite);
            use_path(0);
            ds4_dequant_row(type, row, a, n);
            use_path(1);
            ds4_dequant_row(type, row, b, n);
            assert_same_floats(a, b, n, !finite, ds4_type_name(type));
            free(row);
        }
    }
    ds4_simd_force_portable(false);
    free(a);
    free(b);
}

/* Every f16 bit pattern through both dequantizers (the AVX2 one uses the F16C
 * instruction, an independent implementation of the conversion). */
static void test_f16_all_values_paths(void **state) {
    (void)state;
    uint8_t *h = malloc(65536 * 2);
    float *a = malloc(65536 * sizeof(float)), *b = malloc(65536 * sizeof(float));
    assert_non_null(h);
    assert_non_null(a);
    assert_non_null(b);
    for (int i = 0; i < 65536; i++) wr16(h + 2 * i, (uint16_t)i);
    use_path(0);
    ds4_dequant_row(DS4_TYPE_F16, h, a, 65536);
    for (int i = 0; i < 65536; i++) assert_true(ds4_f32_to_bits(a[i]) == ds4_f32_to_bits(ds4_f16_to_f32((uint16_t)i)));
    if (ds4_simd_available()) {
        use_path(1);
        ds4_dequant_row(DS4_TYPE_F16, h, b, 65536);
        /* F16C quiets signalling NaNs; every other value must agree bit for bit */
        assert_same_floats(a, b, 65536, true, "f16 all values");
    }
    ds4_simd_force_portable(false);
    free(h);
    free(a);
    free(b);
}

/* ---------------------------------------------------------------- dot products */

/* The lane order of the contract, observable: lane j holds exactly
 * v[j]; with these magnitudes any other summation order gives another sum. */
static void test_dot_lane_order(void **state) {
    (void)state;
    const float v[8] = {1e8f, 0.0f, 1.0f, 0.0f, -1e8f, 0.0f, 1.0f, 0.0f};
    float a[16], b[16];
    for (int i = 0; i < 16; i++) {
        a[i] = i < 8 ? v[i] : 0.0f;
        b[i] = 1.0f;
    }
    const float want = ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
    const float naive = ((((((v[0] + v[1]) + v[2]) + v[3]) + v[4]) + v[5]) + v[6]) + v[7];
    const float pairwise = ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
    assert_true(want == 2.0f && naive != want && pairwise != want); /* the data does discriminate */
    for (int p = 0; p < n_paths(); p++) {
        use_path(p);
        const float got = ds4_dot_f32(a, b, 16);
        if (ds4_f32_to_bits(got) != ds4_f32_to_bits(want)) fail_msg("%s: %.9g != %.9g", use_path(p), got, want);
    }
    ds4_simd_force_portable(false);
}

/* Portable dot = the header's formula with separate multiply and add. */
static void test_dot_portable_formula(void **state) {
    (void)state;
    ds4_rng r;
    ds4_rng_seed(&r, 7);
    for (int rep = 0; rep < 50; rep++) {
        const int64_t n = 8 * (1 + (int64_t)ds4_rng_below(&r, 300));
        float *a = rand_vec(&r, n), *b = rand_vec(&r, n);
        float l[8] = {0};
        for (int64_t i = 0; i < n; i++) {
            const float prod = a[i] * b[i];
            l[i % 8] = l[i % 8] + prod;
        }
        const float want = ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
        ds4_simd_force_portable(true);
        const float got = ds4_dot_f32(a, b, n);
        assert_true(ds4_f32_to_bits(got) == ds4_f32_to_bits(want));
        if (ds4_simd_available()) {
            /* AVX2: one fused multiply-add per element and lane */
            float m[8] = {0};
            for (int64_t i = 0; i < n; i++) m[i % 8] = fmaf(a[i], b[i], m[i % 8]);
            const float want2 = ((m[0] + m[4]) + (m[2] + m[6])) + ((m[1] + m[5]) + (m[3] + m[7]));
            ds4_simd_force_portable(false);
            assert_true(ds4_f32_to_bits(ds4_dot_f32(a, b, n)) == ds4_f32_to_bits(want2));
        }
        free(a);
        free(b);
    }
    ds4_simd_force_portable(false);
}

/* vec_dot == dot_f32(dequant(row), x) bit for bit on each path, and the two
 * paths agree to rounding. */
static void test_vec_dot(void **state) {
    (void)state;
    ds4_rng r;
    ds4_rng_seed(&r, 2024);
    for (int t = 0; t < N_ELEMS(k_float_types); t++) {
        const int type = k_float_types[t];
        for (int rep = 0; rep < 12; rep++) {
            const int64_t n = 256 * (1 + (int64_t)ds4_rng_below(&r, 8));
            void *row = rand_row(&r, type, n, true);
            float *x = rand_vec(&r, n), *w = malloc((size_t)n * sizeof(float));
            assert_non_null(w);
            float res[2] = {0, 0};
            for (int p = 0; p < n_paths(); p++) {
                use_path(p);
                ds4_dequant_row(type, row, w, n);
                const float want = ds4_dot_f32(w, x, n);
                const float got = ds4_vec_dot(type, row, x, n);
                if (ds4_f32_to_bits(got) != ds4_f32_to_bits(want) && !(isnan(got) && isnan(want)))
                    fail_msg("%s %s n=%lld: vec_dot %.9g != dot(dequant) %.9g", ds4_type_name(type), use_path(p),
                             (long long)n, got, want);
                res[p] = got;
            }
            if (n_paths() == 2 && isfinite(res[0])) {
                double mag = 0.0;
                for (int64_t i = 0; i < n; i++) mag += fabs((double)w[i] * x[i]);
                if (!(fabs((double)res[0] - res[1]) <= 1e-5 * mag + 1e-30))
                    fail_msg("%s: portable %.9g vs avx2 %.9g (sum|w*x| %.3g)", ds4_type_name(type), res[0], res[1], mag);
            }
            free(row);
            free(x);
            free(w);
        }
    }
    ds4_simd_force_portable(false);
}

static void test_dot_vs_double(void **state) {
    (void)state;
    ds4_rng r;
    ds4_rng_seed(&r, 99);
    const int64_t n = 4096;
    float *a = rand_vec(&r, n), *b = rand_vec(&r, n);
    double ref = 0.0, mag = 0.0;
    for (int64_t i = 0; i < n; i++) {
        ref += (double)a[i] * b[i];
        mag += fabs((double)a[i] * b[i]);
    }
    for (int p = 0; p < n_paths(); p++) {
        use_path(p);
        assert_close(ds4_dot_f32(a, b, n), ref, 1e-5 * mag);
    }
    ds4_simd_force_portable(false);
    free(a);
    free(b);
}

/* ---------------------------------------------------------------- f16 / bf16 conversions */

static void test_f16_roundtrip_all(void **state) {
    (void)state;
    for (uint32_t i = 0; i < 65536; i++) {
        const uint16_t h = (uint16_t)i;
        const float f = ds4_f16_to_f32(h);
        const bool is_nan = (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu);
        if (is_nan) {
            assert_true(isnan(f));
            const uint16_t back = ds4_f32_to_f16(f);
            assert_true((back & 0x7c00u) == 0x7c00u && (back & 0x3ffu)); /* NaN stays NaN */
            assert_int_equal(back & 0x8000u, h & 0x8000u);
            continue;
        }
        assert_int_equal(ds4_f32_to_f16(f), h);
        /* the value, independently: (-1)^s * 2^(e-15) * (1 + m/1024), or m * 2^-24 */
        const int e = (h >> 10) & 31, m = h & 1023;
        const double mag = e == 31 ? INFINITY : e == 0 ? ldexp(m, -24) : ldexp(1024 + m, e - 25);
        assert_true((double)f == ((h & 0x8000u) ? -mag : mag));
    }
}

/* Every f16 midpoint (and its f32 neighbours) rounds as IEEE RNE says. */
static void test_f16_rounding(void **state) {
    (void)state;
    for (uint16_t h = 0; h < 0x7c00u; h++) {
        /* above the largest finite f16, IEEE rounds as if the next value were 65536 */
        const float lo = ds4_f16_to_f32(h), hi = h == 0x7bffu ? 65536.0f : ds4_f16_to_f32((uint16_t)(h + 1));
        const float mid = (float)(((double)lo + (double)hi) / 2.0); /* exact in f32 */
        assert_true((double)mid == ((double)lo + (double)hi) / 2.0);
        const uint16_t even = (h & 1) ? (uint16_t)(h + 1) : h;
        assert_int_equal(ds4_f32_to_f16(mid), even);
        assert_int_equal(ds4_f32_to_f16(nextafterf(mid, 0.0f)), h);
        assert_int_equal(ds4_f32_to_f16(nextafterf(mid, INFINITY)), h + 1);
        assert_int_equal(ds4_f32_to_f16(-mid), even | 0x8000u);
    }
    /* hand-picked */
    assert_int_equal(ds4_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);         /* tie -> even (1.0) */
    assert_int_equal(ds4_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);     /* tie -> even (up) */
    assert_int_equal(ds4_f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(ds4_f32_to_f16(65519.996f), 0x7bff);
    assert_int_equal(ds4_f32_to_f16(65520.0f), 0x7c00);                 /* tie -> even = inf */
    assert_int_equal(ds4_f32_to_f16(1e10f), 0x7c00);
    assert_int_equal(ds4_f32_to_f16(-1e10f), 0xfc00);
    assert_int_equal(ds4_f32_to_f16(INFINITY), 0x7c00);
    assert_int_equal(ds4_f32_to_f16(-INFINITY), 0xfc00);
    assert_true((ds4_f32_to_f16(NAN) & 0x7fffu) > 0x7c00u);
    assert_int_equal(ds4_f32_to_f16(0x1p-24f), 0x0001);                 /* smallest subnormal */
    assert_int_equal(ds4_f32_to_f16(0x1p-25f), 0x0000);                 /* tie -> even (0) */
    assert_int_equal(ds4_f32_to_f16(0x1.000002p-25f), 0x0001);
    assert_int_equal(ds4_f32_to_f16(3 * 0x1p-25f), 0x0002);             /* tie -> even */
    assert_int_equal(ds4_f32_to_f16(0x1p-14f), 0x0400);                 /* smallest normal */
    assert_int_equal(ds4_f32_to_f16(1023.5f * 0x1p-24f), 0x0400);       /* subnormal -> normal carry */
    assert_int_equal(ds4_f32_to_f16(1e-30f), 0x0000);
    assert_int_equal(ds4_f32_to_f16(-1e-30f), 0x8000);
    assert_int_equal(ds4_f32_to_f16(-0.0f), 0x8000);
    assert_int_equal(ds4_f32_to_f16(0x1p-149f), 0x0000);                /* f32 subnormal */
    assert_true(ds4_f16_to_f32(0x0001) == 0x1p-24f);
    assert_true(ds4_f16_to_f32(0x03ff) == 1023 * 0x1p-24f);
    assert_true(ds4_f16_to_f32(0x7bff) == 65504.0f);
    assert_true(isinf(ds4_f16_to_f32(0xfc00)) && ds4_f16_to_f32(0xfc00) < 0);
}

static void test_bf16(void **state) {
    (void)state;
    for (uint32_t i = 0; i < 65536; i++) {
        const uint16_t h = (uint16_t)i;
        const float f = ds4_bf16_to_f32(h);
        assert_true(ds4_f32_to_bits(f) == (uint32_t)h << 16);
        if (isnan(f)) {
            assert_true(isnan(ds4_bf16_to_f32(ds4_f32_to_bf16(f))));
            continue;
        }
        assert_int_equal(ds4_f32_to_bf16(f), h);
    }
    assert_int_equal(ds4_f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(ds4_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);     /* tie -> even */
    assert_int_equal(ds4_f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82); /* tie -> even (up) */
    assert_int_equal(ds4_f32_to_bf16(1.0f + 0x1.2p-8f), 0x3f81);
    assert_int_equal(ds4_f32_to_bf16(-2.0f), 0xc000);
    assert_int_equal(ds4_f32_to_bf16(INFINITY), 0x7f80);
    assert_int_equal(ds4_f32_to_bf16(ds4_bits_to_f32(0x7f7fffffu)), 0x7f80); /* FLT_MAX rounds to inf */
    assert_true(isnan(ds4_bf16_to_f32(ds4_f32_to_bf16(NAN))));
    assert_true(isnan(ds4_bf16_to_f32(ds4_f32_to_bf16(ds4_bits_to_f32(0x7f800001u))))); /* payload in low bits */
    assert_int_equal(ds4_f32_to_bf16(ds4_bits_to_f32(0x00008000u)), 0x0000);    /* subnormal tie -> even */
    assert_int_equal(ds4_f32_to_bf16(ds4_bits_to_f32(0x00018000u)), 0x0002);
}

/* ---------------------------------------------------------------- quantizers */

/* sqrt(sum (x - y)^2 / sum x^2) */
static double rel_rms(const float *x, const float *y, int64_t n) {
    double e = 0.0, s = 0.0;
    for (int64_t i = 0; i < n; i++) {
        e += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
        s += (double)x[i] * x[i];
    }
    return s > 0 ? sqrt(e / s) : sqrt(e);
}

/* Quantize, check validity, dequantize; returns the relative RMS error. */
static double quant_roundtrip(int type, const float *x, int64_t n) {
    const size_t bytes = ds4_row_bytes(type, n);
    uint8_t *q = malloc(bytes);
    float *y = malloc((size_t)n * sizeof(float));
    assert_non_null(q);
    assert_non_null(y);
    ds4_quantize_row(type, x, q, n);
    const ds4_type_traits *t = ds4_type_info(type);
    int off[2];
    scale_offsets(type, off);
    for (int64_t b = 0; b < n / t->block; b++)
        for (int k = 0; k < 2; k++)
            if (off[k] >= 0) {
                const float s = ds4_f16_to_f32(rd16(q + b * t->block_bytes + off[k]));
                if (!isfinite(s)) fail_msg("%s block %lld: scale %d not finite", t->name, (long long)b, k);
                /* the quantizers only produce non-negative scales */
                assert_true(s >= 0.0f);
            }
    ds4_dequant_row(type, q, y, n);
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(y[i])) fail_msg("%s: element %lld dequantizes to %g", t->name, (long long)i, y[i]);
    if (type == DS4_TYPE_IQ2_XXS) {
        /* even number of negatives per 8-element slice (only visible when d != 0) */
        for (int64_t g = 0; g < n / 8; g++) {
            int neg = 0;
            for (int j = 0; j < 8; j++) neg += signbit(y[8 * g + j]) != 0;
            if (neg % 2) fail_msg("iq2_xxs slice %lld: %d negatives", (long long)g, neg);
        }
    }
    const double err = rel_rms(x, y, n);
    free(q);
    free(y);
    return err;
}

static void test_quantize_error(void **state) {
    (void)state;
    /* bounds: the measured errors (f16 0.0002, bf16 0.0017, q8_0 0.0053,
     * q4_K 0.071, q2_K 0.268, iq2_xxs 0.327) plus a margin, so that a
     * regression of the quantizers shows */
    static const struct {
        int type;
        double bound;
    } cases[] = {
        {DS4_TYPE_F32, 0.0},     {DS4_TYPE_F16, 5e-4},  {DS4_TYPE_BF16, 3e-3},   {DS4_TYPE_Q8_0, 0.008},
        {DS4_TYPE_Q4_K, 0.09},   {DS4_TYPE_Q2_K, 0.33}, {DS4_TYPE_IQ2_XXS, 0.40},
    };
    const int64_t n = 256 * 64;
    ds4_rng r;
    ds4_rng_seed(&r, 31337);
    float *x = rand_vec(&r, n);
    /* a second row with a different scale per 256 block, 1e-3 .. 1e3 */
    float *xs = malloc((size_t)n * sizeof(float));
    assert_non_null(xs);
    for (int64_t i = 0; i < n; i++) xs[i] = x[i] * powf(10.0f, (float)((i / 256) % 7) - 3.0f);
    for (int c = 0; c < N_ELEMS(cases); c++) {
        for (int p = 0; p < n_paths(); p++) {
            use_path(p);
            const double e1 = quant_roundtrip(cases[c].type, x, n);
            const double e2 = quant_roundtrip(cases[c].type, xs, n);
            if (p == 0) print_message("%-8s rel RMS error: N(0,1) %.4f, mixed scales %.4f (bound %.3g)\n",
                                      ds4_type_name(cases[c].type), e1, e2, cases[c].bound);
            if (!(e1 <= cases[c].bound && e2 <= cases[c].bound))
                fail_msg("%s: error %.4f / %.4f over %.3g", ds4_type_name(cases[c].type), e1, e2, cases[c].bound);
        }
    }
    ds4_simd_force_portable(false);
    free(x);
    free(xs);
}

static void test_quantize_zeros(void **state) {
    (void)state;
    const int64_t n = 512;
    float x[512] = {0}, y[512];
    uint8_t q[2048];
    for (int t = 0; t < N_ELEMS(k_float_types); t++) {
        const int type = k_float_types[t];
        memset(q, 0xa5, sizeof(q));
        ds4_quantize_row(type, x, q, n);
        const size_t bytes = ds4_row_bytes(type, n);
        for (size_t i = 0; i < bytes; i++)
            if (q[i] != 0) fail_msg("%s: byte %zu of the zero row is 0x%02x", ds4_type_name(type), i, q[i]);
        for (int p = 0; p < n_paths(); p++) {
            use_path(p);
            ds4_dequant_row(type, q, y, n);
            for (int64_t i = 0; i < n; i++) assert_true(ds4_f32_to_bits(y[i]) == 0);
        }
    }
    ds4_simd_force_portable(false);
}

/* Exact values survive: Q8_0 of d*q with d an f16 power of two, and a
 * block whose values are exactly on a Q4_K grid with min 0. */
static void test_quantize_exact(void **state) {
    (void)state;
    float x[256], y[256];
    uint8_t q[144];
    for (int i = 0; i < 32; i++) x[i] = 0.25f * (float)(i * 8 - 127 + (i == 31 ? 6 : 0)); /* max |q| = 127 */
    ds4_quantize_row(DS4_TYPE_Q8_0, x, q, 32);
    ds4_dequant_row(DS4_TYPE_Q8_0, q, y, 32);
    for (int i = 0; i < 32; i++) assert_true(y[i] == x[i]);
    for (int i = 0; i < 256; i++) x[i] = (float)(i % 16) * 0.5f;
    ds4_quantize_row(DS4_TYPE_Q4_K, x, q, 256);
    ds4_dequant_row(DS4_TYPE_Q4_K, q, y, 256);
    assert_true(rel_rms(x, y, 256) < 1e-3);
}

/* Hostile inputs still give valid blocks and finite values. */
static void test_quantize_extremes(void **state) {
    (void)state;
    const int64_t n = 256 * 6;
    float *x = malloc((size_t)n * sizeof(float));
    assert_non_null(x);
    ds4_rng r;
    ds4_rng_seed(&r, 5);
    for (int64_t i = 0; i < n; i++) {
        const float g = ds4_rng_normal(&r);
        switch (i / 256) {
        case 0: x[i] = g * 1e30f; break;                         /* beyond any f16 scale */
        case 1: x[i] = g * 1e-30f; break;                        /* below f16 resolution */
        case 2: x[i] = (i % 7 == 0) ? NAN : g; break;            /* NaN sprinkled */
        case 3: x[i] = (i % 5 == 0) ? ((i & 1) ? INFINITY : -INFINITY) : g; break;
        case 4: x[i] = (i % 64 == 0) ? 1000.0f : g * 1e-3f; break; /* one outlier per sub-block */
        default: x[i] = -fabsf(g) - 10.0f; break;                /* all negative, away from 0 */
        }
    }
    /* the error is meaningless here (x holds NaN and inf); quant_roundtrip
     * checks finite scales, finite values and IQ2 sign parity */
    for (int t = 0; t < N_ELEMS(k_block_types); t++) (void)quant_roundtrip(k_block_types[t], x, n);
    /* all-negative constant-ish block: the K-quants represent it through the min */
    for (int64_t i = 0; i < 256; i++) x[i] = -3.0f;
    assert_true(quant_roundtrip(DS4_TYPE_Q4_K, x, 256) < 1e-3);
    assert_true(quant_roundtrip(DS4_TYPE_Q2_K, x, 256) < 1e-2);
    free(x);
}

/* ---------------------------------------------------------------- main */

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_traits),
        cmocka_unit_test_teardown(test_dispatch_switch, teardown_path),
        cmocka_unit_test(test_iq2_tables),
        cmocka_unit_test_teardown(test_fixture_q8_0, teardown_path),
        cmocka_unit_test_teardown(test_fixture_q2_k, teardown_path),
        cmocka_unit_test_teardown(test_fixture_q4_k, teardown_path),
        cmocka_unit_test_teardown(test_fixture_iq2_xxs, teardown_path),
        cmocka_unit_test_teardown(test_dequant_by_hand, teardown_path),
        cmocka_unit_test_teardown(test_dequant_paths_agree, teardown_path),
        cmocka_unit_test_teardown(test_f16_all_values_paths, teardown_path),
        cmocka_unit_test_teardown(test_dot_lane_order, teardown_path),
        cmocka_unit_test_teardown(test_dot_portable_formula, teardown_path),
        cmocka_unit_test_teardown(test_vec_dot, teardown_path),
        cmocka_unit_test_teardown(test_dot_vs_double, teardown_path),
        cmocka_unit_test(test_f16_roundtrip_all),
        cmocka_unit_test(test_f16_rounding),
        cmocka_unit_test(test_bf16),
        cmocka_unit_test_teardown(test_quantize_error, teardown_path),
        cmocka_unit_test_teardown(test_quantize_zeros, teardown_path),
        cmocka_unit_test(test_quantize_exact),
        cmocka_unit_test(test_quantize_extremes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
