/* KV row formats (model/kv_format.h, --kv-type) against independent oracles:
 * the E4M3 / E2M1 codes against their bit-level definitions and a brute-force
 * nearest-value search, and against the FP8 / FP4 simulations' rounding
 * (cpu/ops.h, themselves checked against torch in tests/unit/cpu/test_ops.c);
 * the block exponents against their definition; rows that went through the
 * simulations (random, and torch's own outputs in tests/oracle/fixtures/qat)
 * stored bitwise exactly; the byte layout the CUDA kernels share; sizes and
 * names. */
#include "cpu/ops.h"
#include "model/kv_format.h"
#include "test_util.h"
#include "util/f16.h"
#include "util/rng.h"

#define assert_same_float(a, b, ...)                                                                     \
    do {                                                                                                 \
        const float a__ = (a), b__ = (b);                                                                \
        const uint32_t ua__ = ds4_f32_to_bits(a__), ub__ = ds4_f32_to_bits(b__);                         \
        if (ua__ != ub__) {                                                                              \
            char w__[160];                                                                               \
            snprintf(w__, sizeof(w__), __VA_ARGS__);                                                     \
            fail_msg("%s: %.9g (0x%08x) vs %.9g (0x%08x)", w__, (double)a__, ua__, (double)b__, ub__); \
        }                                                                                                \
    } while (0)

/* ------------------------------------------------------------------ E4M3 */

/* The E4M3FN value of a code from the format's definition (bias 7, 3
 * mantissa bits, exponent field 0 = subnormal), in double; NaN for 0x7f/0xff. */
static double e4m3_def(int c) {
    const int s = c >> 7, E = (c >> 3) & 15, m = c & 7;
    if (E == 15 && m == 7) return NAN;
    const double v = E == 0 ? (m / 8.0) * pow(2.0, -6) : (1.0 + m / 8.0) * pow(2.0, E - 7);
    return s ? -v : v;
}

/* Nearest code by exhaustive search over the 127 non-negative finite codes;
 * a tie goes to the even code; beyond 448 saturates; the sign is y's. */
static int e4m3_nearest(float y) {
    const double a = fabs((double)y);
    int best = 0;
    for (int c = 1; c < 0x7f; c++) {
        const double d = fabs(a - e4m3_def(c)), db = fabs(a - e4m3_def(best));
        if (d < db || (d == db && (c & 1) == 0)) best = c;
    }
    return signbit(y) ? best | 0x80 : best;
}

static void test_e4m3_known_codes(void **state) {
    (void)state;
    assert_true(ds4_e4m3_decode(0x7e) == 448.0f);
    assert_true(ds4_e4m3_decode(0x01) == ldexpf(1.0f, -9));
    assert_true(ds4_e4m3_decode(0x08) == ldexpf(1.0f, -6));
    assert_true(ds4_e4m3_decode(0x38) == 1.0f);
    assert_true(ds4_e4m3_decode(0x80 | 0x38) == -1.0f);
    assert_true(ds4_e4m3_decode(0x3c) == 1.5f);
    assert_true(ds4_e4m3_decode(0x07) == 7.0f / 512.0f); /* largest subnormal */
    assert_true(ds4_e4m3_decode(0x00) == 0.0f && !signbit(ds4_e4m3_decode(0x00)));
    assert_true(ds4_e4m3_decode(0x80) == 0.0f && signbit(ds4_e4m3_decode(0x80)));
    assert_int_equal(ds4_e4m3_encode(448.0f), 0x7e);
    assert_int_equal(ds4_e4m3_encode(-448.0f), 0xfe);
    assert_int_equal(ds4_e4m3_encode(1.0f), 0x38);
    assert_int_equal(ds4_e4m3_encode(-1.0f), 0xb8);
    assert_int_equal(ds4_e4m3_encode(1.5f), 0x3c);
    assert_int_equal(ds4_e4m3_encode(ldexpf(1.0f, -9)), 0x01);
    assert_int_equal(ds4_e4m3_encode(ldexpf(1.0f, -6)), 0x08);
    assert_int_equal(ds4_e4m3_encode(0.0f), 0x00);
    assert_int_equal(ds4_e4m3_encode(-0.0f), 0x80);
    /* saturation, and the values between the top code and where a 16th
     * mantissa step would be (464) */
    assert_int_equal(ds4_e4m3_encode(1e6f), 0x7e);
    assert_int_equal(ds4_e4m3_encode(-1e6f), 0xfe);
    assert_int_equal(ds4_e4m3_encode(460.0f), 0x7e);
    assert_int_equal(ds4_e4m3_encode(INFINITY), 0x7e);
    /* ties to the even code: 1.0625 between 1 (0x38) and 1.125 (0x39) */
    assert_int_equal(ds4_e4m3_encode(1.0625f), 0x38);
    assert_int_equal(ds4_e4m3_encode(1.1875f), 0x3a);
    assert_int_equal(ds4_e4m3_encode(1.5f * ldexpf(1.0f, -9)), 0x02); /* subnormal tie 1.5 -> 2 */
    assert_int_equal(ds4_e4m3_encode(0.5f * ldexpf(1.0f, -9)), 0x00); /* 0.5 -> 0 */
    assert_int_equal(ds4_e4m3_encode(15.5f / 1024.0f), 0x08);        /* 7.75 * 2^-9: rounds up into the normals */
}

static void test_e4m3_all_codes(void **state) {
    (void)state;
    int finite = 0;
    for (int c = 0; c < 256; c++) {
        const double want = e4m3_def(c);
        if (isnan(want)) continue; /* 0x7f, 0xff: what NaN encodes to (below) */
        finite++;
        const float v = ds4_e4m3_decode((uint8_t)c);
        if ((double)v != want || !!signbit(v) != !!signbit(want))
            fail_msg("code 0x%02x: decode %.9g, definition %.9g", c, v, want);
        if (ds4_e4m3_encode(v) != c) fail_msg("code 0x%02x: encode(decode) = 0x%02x", c, ds4_e4m3_encode(v));
        /* the simulation's rounding keeps every code value (its -0 is +0) */
        if (c != 0x80) assert_same_float(ds4_e4m3_round(v), v, "e4m3_round of code 0x%02x", c);
    }
    assert_int_equal(finite, 254);
    assert_int_equal(ds4_e4m3_encode(NAN), 0x7f);
    assert_int_equal(ds4_e4m3_encode(-NAN), 0xff);
    assert_true(isnan(ds4_e4m3_decode(0x7f)) && isnan(ds4_e4m3_decode(0xff))); /* a NaN stays NaN through the cache */
    /* every midpoint between neighbouring codes goes to the even one */
    for (int c = 0; c < 0x7e; c++) {
        const float mid = (float)((e4m3_def(c) + e4m3_def(c + 1)) / 2); /* exact: one more bit */
        const int want = (c & 1) ? c + 1 : c;
        if (ds4_e4m3_encode(mid) != want)
            fail_msg("midpoint after 0x%02x: code 0x%02x, want 0x%02x", c, ds4_e4m3_encode(mid), want);
        if (ds4_e4m3_encode(-mid) != (want | 0x80)) fail_msg("negative midpoint after 0x%02x", c);
        assert_same_float(ds4_e4m3_decode(ds4_e4m3_encode(mid)), ds4_e4m3_round(mid), "midpoint after 0x%02x", c);
    }
}

static void test_e4m3_random(void **state) {
    (void)state;
    ds4_rng r;
    ds4_rng_seed(&r, 1234);
    for (int i = 0; i < 200000; i++) {
        float y;
        if (i & 1) {
            y = (ds4_rng_uniform(&r) * 2.0f - 1.0f) * 448.0f;
        } else { /* log-uniform magnitudes 2^-14 .. 448, covering the subnormals */
            y = ldexpf(0.5f + 0.5f * ds4_rng_uniform(&r), (int)ds4_rng_below(&r, 23) - 13);
            if (y > 448.0f) y = 448.0f;
            if (ds4_rng_u64(&r) & 1) y = -y;
        }
        const uint8_t c = ds4_e4m3_encode(y);
        assert_same_float(ds4_e4m3_decode(c), ds4_e4m3_round(y), "y = %.9g", (double)y);
        if (c != e4m3_nearest(y)) fail_msg("y = %.9g: code 0x%02x, nearest 0x%02x", (double)y, c, e4m3_nearest(y));
    }
}

/* ------------------------------------------------------------------ E2M1 */

static const double e2m1_mag[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};

static int e2m1_nearest(float y) {
    const double a = fabs((double)y);
    int best = 0;
    for (int c = 1; c < 8; c++) {
        const double d = fabs(a - e2m1_mag[c]), db = fabs(a - e2m1_mag[best]);
        if (d < db || (d == db && (c & 1) == 0)) best = c;
    }
    return signbit(y) ? best | 8 : best;
}

static void test_e2m1(void **state) {
    (void)state;
    for (int c = 0; c < 16; c++) {
        const float v = ds4_e2m1_decode((uint8_t)c);
        const double want = c & 8 ? -e2m1_mag[c & 7] : e2m1_mag[c & 7];
        if ((double)v != want || !!signbit(v) != !!(c & 8)) fail_msg("code %d: %.9g", c, v);
        assert_int_equal(ds4_e2m1_encode(v), c);
    }
    static const float ties[][2] = {{0.25f, 0}, {0.75f, 1}, {1.25f, 1}, {1.75f, 2}, {2.5f, 2}, {3.5f, 4}, {5, 4}};
    for (size_t i = 0; i < sizeof(ties) / sizeof(ties[0]); i++) {
        assert_true(ds4_e2m1_decode(ds4_e2m1_encode(ties[i][0])) == ties[i][1]);
        assert_true(ds4_e2m1_decode(ds4_e2m1_encode(-ties[i][0])) == -ties[i][1]);
        assert_same_float(ds4_e2m1_decode(ds4_e2m1_encode(ties[i][0])), ds4_e2m1_round(ties[i][0]), "tie %g",
                          (double)ties[i][0]);
    }
    assert_int_equal(ds4_e2m1_encode(100.0f), 7);
    assert_int_equal(ds4_e2m1_encode(-100.0f), 15);
    ds4_rng r;
    ds4_rng_seed(&r, 77);
    for (int i = 0; i < 100000; i++) {
        const float y = (ds4_rng_uniform(&r) * 2.0f - 1.0f) * 6.0f;
        const uint8_t c = ds4_e2m1_encode(y);
        assert_same_float(ds4_e2m1_decode(c), ds4_e2m1_round(y), "y = %.9g", (double)y);
        if (c != e2m1_nearest(y)) fail_msg("y = %.9g: code %d, nearest %d", (double)y, c, e2m1_nearest(y));
    }
}

/* ------------------------------------------------------------------ block exponents */

static void test_block_exponents(void **state) {
    (void)state;
    assert_int_equal(ds4_fp8_block_exp(448.0f), 0);
    assert_int_equal(ds4_fp8_block_exp(449.0f), 1);
    assert_int_equal(ds4_fp8_block_exp(1.0f), -8);
    assert_int_equal(ds4_fp8_block_exp(0.0f), 0);
    assert_int_equal(ds4_fp8_block_exp(896.0f), 1);
    assert_int_equal(ds4_fp4_block_exp(6.0f), 0);
    assert_int_equal(ds4_fp4_block_exp(6.01f), 1);
    assert_int_equal(ds4_fp4_block_exp(1.0f), -2);
    assert_int_equal(ds4_fp4_block_exp(0.0f), 0);
    assert_int_equal(ds4_fp4_block_exp(3.0f), -1);
    ds4_rng r;
    ds4_rng_seed(&r, 5);
    for (int i = 0; i < 100000; i++) {
        /* random magnitudes 2^-90 .. 2^90, and exact multiples top * 2^k */
        float amax = ldexpf(0.5f + 0.5f * ds4_rng_uniform(&r), (int)ds4_rng_below(&r, 181) - 90);
        if (i % 16 == 0) amax = ldexpf(i & 16 ? 448.0f : 6.0f, (int)ds4_rng_below(&r, 121) - 60);
        const int e8 = ds4_fp8_block_exp(amax), e4 = ds4_fp4_block_exp(amax);
        if (!(amax <= ldexpf(448.0f, e8) && amax > ldexpf(448.0f, e8 - 1)))
            fail_msg("fp8 exponent of %.9g: %d", (double)amax, e8);
        if (!(amax <= ldexpf(6.0f, e4) && amax > ldexpf(6.0f, e4 - 1)))
            fail_msg("fp4 exponent of %.9g: %d", (double)amax, e4);
    }
}

/* ------------------------------------------------------------------ rows */

/* A row of n floats: normal values, each block of `blk` scaled by a random
 * power of ten in [1e-3, 1e3]; kind 1: block 1 tiny (amax ~1e-6); kind 2:
 * block 2 all zero. */
static void random_row(ds4_rng *r, float *x, int n, int blk, int kind) {
    for (int b = 0; b < n / blk; b++) {
        const float scale = powf(10.0f, -3.0f + 6.0f * ds4_rng_uniform(r));
        for (int i = 0; i < blk; i++) x[b * blk + i] = ds4_rng_normal(r) * scale;
    }
    for (int i = 0; i < n % blk; i++) x[n / blk * blk + i] = ds4_rng_normal(r);
    if (kind == 1 && n >= 2 * blk)
        for (int i = blk; i < 2 * blk; i++) x[i] = ds4_rng_normal(r) * 3e-7f;
    if (kind == 2 && n >= 3 * blk) memset(x + 2 * blk, 0, sizeof(float) * (size_t)blk);
}

enum { CANARY = 48 };

/* Encode into a buffer with canary bytes after the row; decode; check the
 * canary, the 16-byte padding, and that ds4_kvrow_round gives the same. */
static void round_trip(ds4_row_fmt f, const float *x, int dim, int nope, float *out) {
    const size_t nb = ds4_kvrow_bytes(f, dim, nope);
    uint8_t *buf = malloc(nb + CANARY);
    memset(buf, 0xa5, nb + CANARY);
    ds4_kvrow_encode(f, x, dim, nope, buf);
    for (size_t i = nb; i < nb + CANARY; i++)
        if (buf[i] != 0xa5) fail_msg("format %d: encode wrote byte %zu past the row's %zu", (int)f, i, nb);
    ds4_kvrow_decode(f, buf, dim, nope, out);
    float *y = malloc(sizeof(float) * (size_t)dim);
    memcpy(y, x, sizeof(float) * (size_t)dim);
    ds4_kvrow_round(f, y, dim, nope);
    for (int i = 0; i < dim; i++)
        assert_same_float(y[i], out[i], "format %d element %d: round vs decode(encode)", (int)f, i);
    free(y);
    free(buf);
}

static void test_fp8_rows(void **state) {
    (void)state;
    enum { DIM = 512, NOPE = 448 };
    ds4_rng r;
    ds4_rng_seed(&r, 8);
    float x[DIM], sim[DIM], out[DIM];
    for (int t = 0; t < 300; t++) {
        random_row(&r, x, DIM, 64, t % 3);
        memcpy(sim, x, sizeof(x));
        ds4_fp8_sim(sim, NOPE);
        round_trip(DS4_ROW_FP8, sim, DIM, NOPE, out);
        for (int i = 0; i < NOPE; i++) assert_same_float(out[i], sim[i], "row %d element %d (simulated)", t, i);
        for (int i = NOPE; i < DIM; i++) assert_same_float(out[i], ds4_round_f16(x[i]), "row %d tail %d", t, i);
        /* a row that did not go through the simulation: every element within
         * half a code step of its block, the tail f16 */
        round_trip(DS4_ROW_FP8, x, DIM, NOPE, out);
        for (int b = 0; b < NOPE / 64; b++) {
            float amax = 0.0f;
            for (int i = 0; i < 64; i++) amax = fmaxf(amax, fabsf(x[b * 64 + i]));
            const int e = ds4_fp8_block_exp(amax);
            for (int i = b * 64; i < b * 64 + 64; i++) {
                const float want = ldexpf(ds4_e4m3_round(ldexpf(x[i], -e)), e);
                if (fabsf(out[i] - want) != 0.0f) fail_msg("row %d element %d: %.9g, want %.9g", t, i, out[i], want);
            }
        }
    }
    /* torch's FP8 round trips (float8_e4m3fn, tests/oracle/fixtures/qat): whole rows of E4M3 blocks */
    size_t n = 0;
    float *ref = test_read_file(test_path("tests/oracle/fixtures/qat/fp8_out.f32"), &n);
    assert_non_null(ref);
    n /= 4;
    assert_int_equal(n % DIM, 0);
    for (size_t o = 0; o < n; o += DIM) {
        round_trip(DS4_ROW_FP8, ref + o, DIM, DIM, out);
        for (int i = 0; i < DIM; i++) assert_same_float(out[i], ref[o + i], "torch fp8 element %zu", o + (size_t)i);
    }
    free(ref);
}

static void test_fp4_rows(void **state) {
    (void)state;
    enum { DIM = 128 };
    ds4_rng r;
    ds4_rng_seed(&r, 4);
    float x[DIM], out[DIM];
    for (int t = 0; t < 600; t++) {
        random_row(&r, x, DIM, 32, 0);
        ds4_hadamard(x, DIM);
        if (t % 3 == 1)
            for (int i = 32; i < 64; i++) x[i] = ds4_rng_normal(&r) * 3e-7f; /* a tiny block */
        if (t % 3 == 2) memset(x + 64, 0, sizeof(float) * 32);                /* an all-zero block */
        if (t % 7 == 3)
            for (int i = 96; i < 128; i++) x[i] = -fabsf(x[i]) * 1e-3f; /* one large value per block below */
        if (t % 7 == 3) x[96] = -50.0f;                                 /* ... so the rest rounds to -0 */
        ds4_fp4_sim(x, DIM);
        round_trip(DS4_ROW_FP4, x, DIM, 0, out);
        for (int i = 0; i < DIM; i++) assert_same_float(out[i], x[i], "row %d element %d (simulated)", t, i);
    }
    size_t n = 0;
    float *ref = test_read_file(test_path("tests/oracle/fixtures/qat/fp4_out.f32"), &n);
    assert_non_null(ref);
    n /= 4;
    assert_int_equal(n % DIM, 0);
    for (size_t o = 0; o < n; o += DIM) {
        round_trip(DS4_ROW_FP4, ref + o, DIM, 0, out);
        for (int i = 0; i < DIM; i++) assert_same_float(out[i], ref[o + i], "reference fp4 element %zu", o + (size_t)i);
    }
    free(ref);
}

/* The byte layout (kv_format.h), which the CUDA kernels read and write. */
static void test_row_layout(void **state) {
    (void)state;
    ds4_rng r;
    ds4_rng_seed(&r, 11);
    float x[512];
    uint8_t buf[2048];
    random_row(&r, x, 512, 64, 1);
    ds4_fp8_sim(x, 448);
    ds4_kvrow_encode(DS4_ROW_FP8, x, 512, 448, buf);
    for (int b = 0; b < 7; b++) {
        float amax = 0.0f;
        for (int i = 0; i < 64; i++) amax = fmaxf(amax, fabsf(x[b * 64 + i]));
        const int e = ds4_fp8_block_exp(amax);
        assert_int_equal((int8_t)buf[448 + 2 * 64 + b], e);
        for (int i = b * 64; i < b * 64 + 64; i++) assert_int_equal(buf[i], ds4_e4m3_encode(ldexpf(x[i], -e)));
    }
    for (int i = 448; i < 512; i++) {
        uint16_t h;
        memcpy(&h, buf + 448 + 2 * (i - 448), 2);
        assert_int_equal(h, ds4_f32_to_f16(x[i]));
    }
    for (size_t i = 448 + 128 + 7; i < ds4_kvrow_bytes(DS4_ROW_FP8, 512, 448); i++) assert_int_equal(buf[i], 0);

    random_row(&r, x, 128, 32, 0);
    ds4_fp4_sim(x, 128);
    ds4_kvrow_encode(DS4_ROW_FP4, x, 128, 0, buf);
    for (int b = 0; b < 4; b++) {
        float amax = 0.0f;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(x[b * 32 + i]));
        const int e = ds4_fp4_block_exp(amax);
        assert_int_equal((int8_t)buf[64 + b], e);
        for (int i = b * 32; i < b * 32 + 32; i += 2) {
            assert_int_equal(buf[i / 2] & 15, ds4_e2m1_encode(ldexpf(x[i], -e)));
            assert_int_equal(buf[i / 2] >> 4, ds4_e2m1_encode(ldexpf(x[i + 1], -e)));
        }
    }
    for (size_t i = 68; i < ds4_kvrow_bytes(DS4_ROW_FP4, 128, 0); i++) assert_int_equal(buf[i], 0);

    x[0] = 1.5f;
    x[1] = -2.0f;
    ds4_kvrow_encode(DS4_ROW_BF16, x, 2, 0, buf);
    assert_memory_equal(buf, "\xc0\x3f\x00\xc0", 4); /* little-endian bf16 0x3fc0, 0xc000 */
    ds4_kvrow_encode(DS4_ROW_F16, x, 2, 0, buf);
    assert_memory_equal(buf, "\x00\x3e\x00\xc0", 4); /* f16 0x3e00, 0xc000 */
    ds4_kvrow_encode(DS4_ROW_F32, x, 2, 0, buf);
    assert_memory_equal(buf, x, 8);
}

static void test_half_rows(void **state) {
    (void)state;
    enum { DIM = 512 };
    ds4_rng r;
    ds4_rng_seed(&r, 16);
    float x[DIM], out[DIM];
    for (int t = 0; t < 200; t++) {
        random_row(&r, x, DIM, 64, t % 3);
        round_trip(DS4_ROW_F16, x, DIM, 0, out);
        for (int i = 0; i < DIM; i++) assert_same_float(out[i], ds4_round_f16(x[i]), "f16 row %d element %d", t, i);
        round_trip(DS4_ROW_BF16, x, DIM, 0, out);
        for (int i = 0; i < DIM; i++) {
            assert_same_float(out[i], ds4_bf16_to_f32(ds4_f32_to_bf16(x[i])), "bf16 row %d element %d", t, i);
            /* and by definition: 8 significant bits, the nearer of the two
             * neighbours (ties to an even last bit) */
            const uint32_t u = ds4_f32_to_bits(x[i]), lo = u & 0xffff0000u, hi = lo + 0x10000u;
            const float flo = ds4_bits_to_f32(lo), fhi = ds4_bits_to_f32(hi);
            const double dlo = fabs((double)x[i] - flo), dhi = fabs((double)x[i] - fhi);
            const float want = dlo < dhi ? flo : dhi < dlo ? fhi : (lo & 0x10000u) ? fhi : flo;
            assert_same_float(out[i], want, "bf16 definition, row %d element %d", t, i);
        }
        round_trip(DS4_ROW_F32, x, DIM, 0, out);
        assert_memory_equal(out, x, sizeof(x));
        /* the FP8 and FP4 formats on rows that were not simulated */
        round_trip(DS4_ROW_FP8, x, DIM, 448, out);
        round_trip(DS4_ROW_FP4, x, DIM, 0, out);
    }
}

/* ------------------------------------------------------------------ sizes and names */

static void test_sizes_and_names(void **state) {
    (void)state;
    assert_int_equal(ds4_kvrow_bytes(DS4_ROW_FP8, 512, 448), 592);
    assert_int_equal(ds4_kvrow_bytes(DS4_ROW_FP4, 128, 0), 80);
    assert_int_equal(ds4_kvrow_bytes(DS4_ROW_F16, 512, 448), 1024);
    assert_int_equal(ds4_kvrow_bytes(DS4_ROW_BF16, 512, 448), 1024);
    assert_int_equal(ds4_kvrow_bytes(DS4_ROW_F32, 512, 448), 2048);
    assert_int_equal(ds4_kvrow_bytes(DS4_ROW_FP8, 128, 64), 208); /* the tiny model: 64 + 128 + 1 -> 208 */
    for (int dim = 64; dim <= 1024; dim += 64) {
        assert_int_equal(ds4_kvrow_bytes(DS4_ROW_FP8, dim, dim - 64) % 16, 0);
        assert_int_equal(ds4_kvrow_bytes(DS4_ROW_FP4, dim, 0) % 16, 0);
    }
    assert_int_equal(ds4_kv_attn_fmt(DS4_KV_FP8), DS4_ROW_FP8);
    assert_int_equal(ds4_kv_index_fmt(DS4_KV_FP8), DS4_ROW_FP4);
    assert_int_equal(ds4_kv_attn_fmt(DS4_KV_BF16), DS4_ROW_BF16);
    assert_int_equal(ds4_kv_index_fmt(DS4_KV_BF16), DS4_ROW_BF16);
    assert_int_equal(ds4_kv_index_fmt(DS4_KV_F16), DS4_ROW_F16);
    assert_int_equal(ds4_kv_index_fmt(DS4_KV_F32), DS4_ROW_F32);

    static const char *names[] = {"f32", "f16", "bf16", "fp8"};
    static const ds4_kv_type types[] = {DS4_KV_F32, DS4_KV_F16, DS4_KV_BF16, DS4_KV_FP8};
    for (int i = 0; i < 4; i++) {
        ds4_kv_type t = DS4_KV_DEFAULT;
        assert_int_equal(ds4_kv_type_parse(names[i], &t), 0);
        assert_int_equal(t, types[i]);
        assert_string_equal(ds4_kv_type_name(types[i]), names[i]);
    }
    assert_string_equal(ds4_kv_type_name(DS4_KV_DEFAULT), "default");
    static const char *bad[] = {"fp16", "", "F16", "f16 ", "fp4", "default", "bf"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ds4_kv_type t = DS4_KV_BF16;
        assert_int_equal(ds4_kv_type_parse(bad[i], &t), -1);
        assert_int_equal(t, DS4_KV_BF16); /* untouched */
    }
    ds4_kv_type t = DS4_KV_BF16;
    assert_int_equal(ds4_kv_type_parse(NULL, &t), -1);
    assert_int_equal(t, DS4_KV_BF16);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_e4m3_known_codes), cmocka_unit_test(test_e4m3_all_codes),
        cmocka_unit_test(test_e4m3_random),      cmocka_unit_test(test_e2m1),
        cmocka_unit_test(test_block_exponents),  cmocka_unit_test(test_fp8_rows),
        cmocka_unit_test(test_fp4_rows),         cmocka_unit_test(test_row_layout),
        cmocka_unit_test(test_half_rows),        cmocka_unit_test(test_sizes_and_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
