/* ds4 — block formats: type traits, run-time SIMD dispatch, and the portable
 * dequantizers and dot products (MODEL.md §14; contract in quant.h).
 *
 * Numerics. Every dequantized value is computed in f32 in the order written
 * next to each format below, one rounding per operation. For the formats in
 * use those products are in fact exact (an f16 scale has 11 significant bits
 * and the codes are small integers), so the only rounding in a dequantized
 * K-quant value is the final subtraction; we still keep the operations
 * separate so that the code states the contract rather than relying on that.
 *
 * The portable dot product emulates the 8 AVX2 lanes with a separate multiply
 * and add per element. That requires that the compiler does not contract
 * a*b+c into an FMA: the Makefile passes -ffp-contract=off (GCC also implies
 * it under -std=c11, and the portable files are not compiled with -mfma);
 * clang contracts within an expression by default, which the pragma below
 * turns off even if the flag is missing (GCC ignores the pragma, hence the
 * guard). Do not build this file with -ffp-contract=fast. */
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

#include "gguf/quant.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf/quant_impl.h"
#include "util/f16.h"

#if DS4_HAVE_AVX2_KERNELS
#include <cpuid.h>
#endif

/* ---------------------------------------------------------------- type traits */

static const ds4_type_traits k_f32 = {"f32", 1, 4, true};
static const ds4_type_traits k_f16 = {"f16", 1, 2, true};
static const ds4_type_traits k_bf16 = {"bf16", 1, 2, true};
static const ds4_type_traits k_q8_0 = {"q8_0", 32, 34, true};
static const ds4_type_traits k_q2_k = {"q2_K", 256, 84, true};
static const ds4_type_traits k_q4_k = {"q4_K", 256, 144, true};
static const ds4_type_traits k_iq2_xxs = {"iq2_xxs", 256, 66, true};
static const ds4_type_traits k_i32 = {"i32", 1, 4, false};

const ds4_type_traits *ds4_type_info(int type) {
    switch (type) {
    case DS4_TYPE_F32: return &k_f32;
    case DS4_TYPE_F16: return &k_f16;
    case DS4_TYPE_BF16: return &k_bf16;
    case DS4_TYPE_Q8_0: return &k_q8_0;
    case DS4_TYPE_Q2_K: return &k_q2_k;
    case DS4_TYPE_Q4_K: return &k_q4_k;
    case DS4_TYPE_IQ2_XXS: return &k_iq2_xxs;
    case DS4_TYPE_I32: return &k_i32;
    default: return NULL;
    }
}

const char *ds4_type_name(int type) {
    const ds4_type_traits *t = ds4_type_info(type);
    if (t) return t->name;
    /* A thread-local rotating buffer keeps the result valid for a few calls
     * (enough for one error message naming two types) without allocation. */
    static _Thread_local char buf[4][32];
    static _Thread_local int k;
    k = (k + 1) & 3;
    snprintf(buf[k], sizeof(buf[k]), "unknown(%d)", type);
    return buf[k];
}

size_t ds4_row_bytes(int type, int64_t n) {
    const ds4_type_traits *t = ds4_type_info(type);
    if (!t || n < 0 || n % t->block != 0) return 0;
    const uint64_t blocks = (uint64_t)(n / t->block);
    if (blocks > SIZE_MAX / t->block_bytes) return 0;
    return (size_t)blocks * t->block_bytes;
}

/* Misuse of the row functions (an unknown or non-float type, a length that is
 * not a whole number of blocks) is a bug in the caller, which is expected to
 * have validated the tensor with ds4_type_info / ds4_row_bytes; there is no
 * sensible value to return, so stop loudly rather than read out of bounds. */
static void check_row(const char *fn, int type, int64_t n) {
    const ds4_type_traits *t = ds4_type_info(type);
    if (t && t->is_float && n >= 0 && n % t->block == 0) return;
    fprintf(stderr, "ds4: %s: bad arguments (type %s, n %lld)\n", fn, ds4_type_name(type), (long long)n);
    abort();
}

/* ---------------------------------------------------------------- SIMD dispatch */

/* 1 = the CPU can run the AVX2 kernels, 0 = it cannot, -1 = not probed yet.
 * Atomics make the lazy probe and the test switch race-free across threads. */
static atomic_int g_simd_available = -1;
static atomic_bool g_force_portable = false;

static int probe_simd(void) {
#if DS4_HAVE_AVX2_KERNELS
    /* __builtin_cpu_supports checks the OS saves the YMM state too. F16C has
     * no builtin name in every compiler, so ask CPUID leaf 1 (ECX bit 29). */
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return 0;
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    return (c & (1u << 29)) ? 1 : 0;
#else
    return 0;
#endif
}

bool ds4_simd_available(void) {
    int v = atomic_load_explicit(&g_simd_available, memory_order_relaxed);
    if (v < 0) {
        v = probe_simd();
        atomic_store_explicit(&g_simd_available, v, memory_order_relaxed);
    }
    return v == 1;
}

void ds4_simd_force_portable(bool on) { atomic_store_explicit(&g_force_portable, on, memory_order_relaxed); }

bool ds4_simd_active(void) {
    return ds4_simd_available() && !atomic_load_explicit(&g_force_portable, memory_order_relaxed);
}

/* ---------------------------------------------------------------- portable dequantizers
 *
 * Each function turns whole blocks into f32. The comment on each states the
 * evaluation order; the AVX2 kernels follow the same order. */

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static void deq_f32(const uint8_t *s, float *y, int64_t n) { memcpy(y, s, (size_t)n * sizeof(float)); }

static void deq_f16(const uint8_t *s, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = ds4_f16_to_f32(rd16(s + 2 * i));
}

static void deq_bf16(const uint8_t *s, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = ds4_bf16_to_f32(rd16(s + 2 * i));
}

/* Q8_0, one 34-byte block: value = d * (float)q. */
static void deq_q8_0_block(const uint8_t *b, float *y) {
    const float d = ds4_f16_to_f32(rd16(b));
    const int8_t *q = (const int8_t *)(b + 2);
    for (int i = 0; i < 32; i++) y[i] = d * (float)q[i];
}

/* Q2_K, one 84-byte block. Per 16-element sub-block sb:
 *   dl = d * (float)(scales[sb] & 15)      (rounded once)
 *   ml = dmin * (float)(scales[sb] >> 4)   (rounded once)
 *   value = dl * (float)q - ml             (multiply, then subtract) */
static void deq_q2_k_block(const uint8_t *b, float *y) {
    const uint8_t *scales = b, *qs = b + 16;
    const float d = ds4_f16_to_f32(rd16(b + 80));
    const float dmin = ds4_f16_to_f32(rd16(b + 82));
    for (int n0 = 0; n0 < 256; n0 += 16) {
        const int sb = n0 / 16;
        const float dl = d * (float)(scales[sb] & 15);
        const float ml = dmin * (float)(scales[sb] >> 4);
        const int half = n0 / 128, shift = 2 * ((n0 % 128) / 32), l0 = n0 % 32;
        const uint8_t *q = qs + 32 * half + l0;
        for (int l = 0; l < 16; l++) y[n0 + l] = dl * (float)((q[l] >> shift) & 3) - ml;
    }
}

/* The 6-bit scale and min of Q4_K sub-block j (MODEL.md §14.4). */
static inline void q4k_scale_min(const uint8_t *sc, int j, int *scale, int *min) {
    if (j < 4) {
        *scale = sc[j] & 63;
        *min = sc[j + 4] & 63;
    } else {
        *scale = (sc[j + 4] & 15) | ((sc[j - 4] >> 6) << 4);
        *min = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
    }
}

/* Q4_K, one 144-byte block. Per 32-element sub-block j:
 *   dl = d * (float)sc_j, ml = dmin * (float)m_j, value = dl * (float)q - ml */
static void deq_q4_k_block(const uint8_t *b, float *y) {
    const float d = ds4_f16_to_f32(rd16(b));
    const float dmin = ds4_f16_to_f32(rd16(b + 2));
    const uint8_t *sc = b + 4, *qs = b + 16;
    for (int j = 0; j < 8; j++) {
        int s, m;
        q4k_scale_min(sc, j, &s, &m);
        const float dl = d * (float)s;
        const float ml = dmin * (float)m;
        const uint8_t *q = qs + 32 * (j / 2);
        const int shift = 4 * (j & 1); /* even j: low nibbles, odd j: high nibbles */
        for (int l = 0; l < 32; l++) y[32 * j + l] = dl * (float)((q[l] >> shift) & 15) - ml;
    }
}

/* IQ2_XXS, one 66-byte block. Per 32-element sub-block b:
 *   db = (d * (0.5f + (float)ls)) * 0.25f
 *   value = db * (float)mag, negated when the sign bit is set.
 * Negation is written as a sign flip (not a multiply by -1) so that the AVX2
 * kernel, which flips the sign bit, agrees even on NaN payloads. */
static void deq_iq2_xxs_block(const uint8_t *b, float *y) {
    const float d = ds4_f16_to_f32(rd16(b));
    for (int sb = 0; sb < 8; sb++) {
        const uint8_t *g = b + 2 + 8 * sb;
        const uint32_t a1 = rd32(g + 4);
        const float db = d * (0.5f + (float)(a1 >> 28)) * 0.25f;
        for (int i = 0; i < 4; i++) {
            const uint64_t grid = ds4_iq2xxs_grid[g[i]];
            const uint8_t signs = ds4_ksigns_iq2xs[(a1 >> (7 * i)) & 127];
            for (int j = 0; j < 8; j++) {
                const float v = db * (float)((grid >> (8 * j)) & 0xff);
                y[32 * sb + 8 * i + j] = (signs >> j) & 1 ? -v : v;
            }
        }
    }
}

typedef void (*deq_block_fn)(const uint8_t *b, float *y);

/* Block dequantizer of a block type, or NULL for the element-wise types. */
static deq_block_fn block_fn(int type) {
    switch (type) {
    case DS4_TYPE_Q8_0: return deq_q8_0_block;
    case DS4_TYPE_Q2_K: return deq_q2_k_block;
    case DS4_TYPE_Q4_K: return deq_q4_k_block;
    case DS4_TYPE_IQ2_XXS: return deq_iq2_xxs_block;
    default: return NULL;
    }
}

static void dequant_portable(int type, const void *src, float *dst, int64_t n) {
    const uint8_t *s = src;
    switch (type) {
    case DS4_TYPE_F32: deq_f32(s, dst, n); return;
    case DS4_TYPE_F16: deq_f16(s, dst, n); return;
    case DS4_TYPE_BF16: deq_bf16(s, dst, n); return;
    default: break;
    }
    const ds4_type_traits *t = ds4_type_info(type);
    const deq_block_fn fn = block_fn(type);
    for (int64_t i = 0; i < n / t->block; i++) fn(s + i * t->block_bytes, dst + i * t->block);
}

/* ---------------------------------------------------------------- portable dot products
 *
 * Eight emulated lanes: lane j accumulates a[i]*b[i] for i = j (mod 8) in
 * increasing i, with the product rounded before the add. */

typedef struct lanes8 {
    float l[8];
} lanes8;

/* Add a[0..n) * b[0..n) into the lanes, element i going to lane i mod 8.
 * The caller passes chunks that start at a multiple of 8. */
static inline void lanes_acc(lanes8 *acc, const float *a, const float *b, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) {
            const float p = a[i + j] * b[i + j];
            acc->l[j] = acc->l[j] + p;
        }
    for (int j = 0; i < n; i++, j++) {
        const float p = a[i] * b[i];
        acc->l[j] = acc->l[j] + p;
    }
}

/* ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)): the order the AVX2 reduction uses
 * (high half onto low half, then the upper pair onto the lower, then the two). */
static inline float lanes_sum(const lanes8 *a) {
    const float *l = a->l;
    return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
}

static float dot_f32_portable(const float *a, const float *b, int64_t n) {
    lanes8 acc = {{0}};
    lanes_acc(&acc, a, b, n);
    return lanes_sum(&acc);
}

/* Fused dequant + dot: dequantize one block at a time into a small buffer and
 * feed it to the same lanes. Block sizes are multiples of 8, so lane
 * assignment and per-lane order are those of dot_f32 on the whole row, and
 * the result equals dot_f32(dequant(row), x) bit for bit. The element-wise
 * types go through the same path in chunks of 256. */
static float vec_dot_portable(int type, const void *row, const float *x, int64_t n) {
    const uint8_t *s = row;
    float buf[256];
    lanes8 acc = {{0}};
    const deq_block_fn fn = block_fn(type);
    if (fn) {
        const ds4_type_traits *t = ds4_type_info(type);
        for (int64_t i = 0; i < n / t->block; i++) {
            fn(s + i * t->block_bytes, buf);
            lanes_acc(&acc, buf, x + i * t->block, t->block);
        }
        return lanes_sum(&acc);
    }
    if (type == DS4_TYPE_F32) return dot_f32_portable((const float *)row, x, n);
    const size_t esz = ds4_type_info(type)->block_bytes;
    for (int64_t i = 0; i < n; i += 256) {
        const int64_t m = n - i < 256 ? n - i : 256;
        dequant_portable(type, s + i * esz, buf, m);
        lanes_acc(&acc, buf, x + i, m);
    }
    return lanes_sum(&acc);
}

/* ---------------------------------------------------------------- public entry points */

void ds4_dequant_row(int type, const void *src, float *dst, int64_t n) {
    check_row("ds4_dequant_row", type, n);
#if DS4_HAVE_AVX2_KERNELS
    if (ds4_simd_active() && ds4_dequant_row_avx2(type, src, dst, n)) return;
#endif
    dequant_portable(type, src, dst, n);
}

float ds4_dot_f32(const float *a, const float *b, int64_t n) {
#if DS4_HAVE_AVX2_KERNELS
    if (ds4_simd_active()) return ds4_dot_f32_avx2(a, b, n);
#endif
    return dot_f32_portable(a, b, n);
}

float ds4_vec_dot(int type, const void *row, const float *x, int64_t n) {
    check_row("ds4_vec_dot", type, n);
#if DS4_HAVE_AVX2_KERNELS
    float r;
    if (ds4_simd_active() && ds4_vec_dot_avx2(type, row, x, n, &r)) return r;
    /* The AVX2 kernels cover every float type; were one missing, the portable
     * result below would still be correct but would not be bitwise equal to
     * the AVX2 ds4_dot_f32 of the dequantized row. */
#endif
    return vec_dot_portable(type, row, x, n);
}
