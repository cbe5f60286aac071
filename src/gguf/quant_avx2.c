/* ds4 — AVX2/FMA/F16C kernels for the block formats (compiled with
 * -mavx2 -mfma -mf16c because of the _avx2.c suffix; called only after
 * quant.c's run-time check).
 *
 * Contract (quant.h):
 *   - dequantization gives bitwise the values of the portable code: the
 *     per-sub-block factors (dl, ml, db) are computed with the same scalar
 *     expressions, and the per-element operations are the same multiply and
 *     subtract, never a fused multiply-subtract;
 *   - the dot product keeps one __m256 accumulator, one FMA per 8 elements,
 *     lane j taking the elements i = j (mod 8), then reduces the lanes as
 *     ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7));
 *   - the fused vec_dot feeds the same accumulator with the dequantized
 *     8-element vectors in increasing element order, so it equals
 *     ds4_dot_f32_avx2(dequant(row), x) bit for bit. */
#include "gguf/quant_impl.h"

#if DS4_HAVE_AVX2_KERNELS

#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "util/f16.h"

/* ---------------------------------------------------------------- helpers */

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* 8 bytes at p, zero- or sign-extended to 8 x i32. */
static inline __m256i load_u8x8(const uint8_t *p) {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)p));
}
static inline __m256i load_i8x8(const uint8_t *p) {
    return _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)p));
}

/* Sign masks for an 8-bit sign pattern: lane j gets 0x80000000 if bit j set. */
static inline __m256 sign_mask8(uint8_t bits) {
    const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const __m256i hit = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(bits), bit), bit);
    return _mm256_castsi256_ps(_mm256_and_si256(hit, _mm256_set1_epi32((int)0x80000000u)));
}

/* ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)) */
static inline float reduce8(__m256 v) {
    const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)); /* l0+l4, l1+l5, l2+l6, l3+l7 */
    const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s)); /* (l0+l4)+(l2+l6), (l1+l5)+(l3+l7), .. */
    return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

/* ---------------------------------------------------------------- per-block 8-wide producers
 *
 * Each producer calls emit(k, v) for the 8-element groups of one block in
 * increasing element order (k = group index in the block). They are written
 * as macros over a body so the same code serves dequant (store) and vec_dot
 * (FMA into the accumulator) without a function pointer in the inner loop. */

/* Q8_0: value = d * (float)q */
#define Q8_0_BLOCK(b, EMIT)                                                   \
    do {                                                                      \
        const __m256 d_ = _mm256_set1_ps(ds4_f16_to_f32(rd16(b)));            \
        for (int k_ = 0; k_ < 4; k_++) {                                      \
            const __m256 q_ = _mm256_cvtepi32_ps(load_i8x8((b) + 2 + 8 * k_)); \
            EMIT(k_, _mm256_mul_ps(d_, q_));                                  \
        }                                                                     \
    } while (0)

/* Q2_K: dl = d*sc, ml = dmin*m (scalar, as the portable code), value = dl*q - ml */
#define Q2_K_BLOCK(b, EMIT)                                                                  \
    do {                                                                                     \
        const float d_ = ds4_f16_to_f32(rd16((b) + 80));                                     \
        const float dmin_ = ds4_f16_to_f32(rd16((b) + 82));                                  \
        const __m256i three_ = _mm256_set1_epi32(3);                                         \
        for (int k_ = 0; k_ < 32; k_++) {                                                    \
            const int n0_ = 8 * k_, sb_ = n0_ / 16;                                          \
            const int half_ = n0_ / 128, shift_ = 2 * ((n0_ % 128) / 32), l0_ = n0_ % 32;    \
            const float dl_ = d_ * (float)((b)[sb_] & 15);                                   \
            const float ml_ = dmin_ * (float)((b)[sb_] >> 4);                                \
            const __m256i raw_ = load_u8x8((b) + 16 + 32 * half_ + l0_);                     \
            const __m256i qi_ = _mm256_and_si256(_mm256_srli_epi32(raw_, shift_), three_);   \
            const __m256 p_ = _mm256_mul_ps(_mm256_set1_ps(dl_), _mm256_cvtepi32_ps(qi_));   \
            EMIT(k_, _mm256_sub_ps(p_, _mm256_set1_ps(ml_)));                                \
        }                                                                                    \
    } while (0)

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

/* Q4_K: per 32-element sub-block j, dl = d*sc_j, ml = dmin*m_j, value = dl*q - ml */
#define Q4_K_BLOCK(b, EMIT)                                                                    \
    do {                                                                                       \
        const float d_ = ds4_f16_to_f32(rd16(b));                                              \
        const float dmin_ = ds4_f16_to_f32(rd16((b) + 2));                                     \
        const __m256i fifteen_ = _mm256_set1_epi32(15);                                        \
        for (int j_ = 0; j_ < 8; j_++) {                                                       \
            int s_, m_;                                                                        \
            q4k_scale_min((b) + 4, j_, &s_, &m_);                                              \
            const __m256 dl_ = _mm256_set1_ps(d_ * (float)s_);                                 \
            const __m256 ml_ = _mm256_set1_ps(dmin_ * (float)m_);                              \
            const uint8_t *q_ = (b) + 16 + 32 * (j_ / 2);                                      \
            const int shift_ = 4 * (j_ & 1);                                                   \
            for (int i_ = 0; i_ < 4; i_++) {                                                   \
                const __m256i raw_ = load_u8x8(q_ + 8 * i_);                                   \
                const __m256i qi_ = _mm256_and_si256(_mm256_srli_epi32(raw_, shift_), fifteen_); \
                const __m256 p_ = _mm256_mul_ps(dl_, _mm256_cvtepi32_ps(qi_));                 \
                EMIT(4 * j_ + i_, _mm256_sub_ps(p_, ml_));                                     \
            }                                                                                  \
        }                                                                                      \
    } while (0)

/* IQ2_XXS: db = (d*(0.5f+ls))*0.25f (scalar), value = db*mag with the sign bit flipped */
#define IQ2_XXS_BLOCK(b, EMIT)                                                                 \
    do {                                                                                       \
        const float d_ = ds4_f16_to_f32(rd16(b));                                              \
        for (int sb_ = 0; sb_ < 8; sb_++) {                                                    \
            const uint8_t *g_ = (b) + 2 + 8 * sb_;                                             \
            const uint32_t a1_ = rd32(g_ + 4);                                                 \
            const __m256 db_ = _mm256_set1_ps(d_ * (0.5f + (float)(a1_ >> 28)) * 0.25f);       \
            for (int i_ = 0; i_ < 4; i_++) {                                                   \
                const uint8_t *grid_ = (const uint8_t *)&ds4_iq2xxs_grid[g_[i_]];              \
                const __m256 mag_ = _mm256_cvtepi32_ps(load_u8x8(grid_));                      \
                const __m256 sg_ = sign_mask8(ds4_ksigns_iq2xs[(a1_ >> (7 * i_)) & 127]);      \
                EMIT(4 * sb_ + i_, _mm256_xor_ps(_mm256_mul_ps(db_, mag_), sg_));              \
            }                                                                                  \
        }                                                                                      \
    } while (0)

/* The grid is read as bytes in memory order; that is the format's byte order
 * only on a little-endian machine, which every x86 is. */

/* ---------------------------------------------------------------- dequantization */

bool ds4_dequant_row_avx2(int type, const void *src, float *dst, int64_t n) {
    const uint8_t *s = src;
    int64_t i = 0;
    switch (type) {
    case DS4_TYPE_F32:
        memcpy(dst, src, (size_t)n * sizeof(float));
        return true;
    case DS4_TYPE_F16:
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(s + 2 * i))));
        for (; i < n; i++) dst[i] = ds4_f16_to_f32(rd16(s + 2 * i));
        return true;
    case DS4_TYPE_BF16:
        for (; i + 8 <= n; i += 8) {
            const __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)(s + 2 * i)));
            _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(h, 16)));
        }
        for (; i < n; i++) dst[i] = ds4_bf16_to_f32(rd16(s + 2 * i));
        return true;
    default: break;
    }
#define STORE(k, v) _mm256_storeu_ps(y + 8 * (k), (v))
    switch (type) {
    case DS4_TYPE_Q8_0:
        for (int64_t blk = 0; blk < n / 32; blk++) {
            const uint8_t *b = s + 34 * blk;
            float *y = dst + 32 * blk;
            Q8_0_BLOCK(b, STORE);
        }
        return true;
    case DS4_TYPE_Q2_K:
        for (int64_t blk = 0; blk < n / 256; blk++) {
            const uint8_t *b = s + 84 * blk;
            float *y = dst + 256 * blk;
            Q2_K_BLOCK(b, STORE);
        }
        return true;
    case DS4_TYPE_Q4_K:
        for (int64_t blk = 0; blk < n / 256; blk++) {
            const uint8_t *b = s + 144 * blk;
            float *y = dst + 256 * blk;
            Q4_K_BLOCK(b, STORE);
        }
        return true;
    case DS4_TYPE_IQ2_XXS:
        for (int64_t blk = 0; blk < n / 256; blk++) {
            const uint8_t *b = s + 66 * blk;
            float *y = dst + 256 * blk;
            IQ2_XXS_BLOCK(b, STORE);
        }
        return true;
    default: return false;
    }
#undef STORE
}

/* ---------------------------------------------------------------- dot products */

/* Tail of fewer than 8 elements (only when n is not a multiple of 8, which
 * the contract excludes; kept so such calls stay well defined): element
 * i0 + j goes to lane j with one fused multiply-add, as in the vector loop. */
static float finish(__m256 acc, const float *a, const float *b, int64_t rem) {
    if (rem == 0) return reduce8(acc);
    float l[8];
    _mm256_storeu_ps(l, acc);
    for (int64_t j = 0; j < rem; j++) l[j] = fmaf(a[j], b[j], l[j]);
    return reduce8(_mm256_loadu_ps(l));
}

float ds4_dot_f32_avx2(const float *a, const float *b, int64_t n) {
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
    return finish(acc, a + i, b + i, n - i);
}

bool ds4_vec_dot_avx2(int type, const void *row, const float *x, int64_t n, float *out) {
    const uint8_t *s = row;
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    switch (type) {
    case DS4_TYPE_F32:
        *out = ds4_dot_f32_avx2((const float *)row, x, n);
        return true;
    case DS4_TYPE_F16:
        for (; i + 8 <= n; i += 8) {
            const __m256 v = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(s + 2 * i)));
            acc = _mm256_fmadd_ps(v, _mm256_loadu_ps(x + i), acc);
        }
        if (i < n) {
            float t[8];
            for (int64_t j = i; j < n; j++) t[j - i] = ds4_f16_to_f32(rd16(s + 2 * j));
            *out = finish(acc, t, x + i, n - i);
        } else {
            *out = reduce8(acc);
        }
        return true;
    case DS4_TYPE_BF16:
        for (; i + 8 <= n; i += 8) {
            const __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)(s + 2 * i)));
            const __m256 v = _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
            acc = _mm256_fmadd_ps(v, _mm256_loadu_ps(x + i), acc);
        }
        if (i < n) {
            float t[8];
            for (int64_t j = i; j < n; j++) t[j - i] = ds4_bf16_to_f32(rd16(s + 2 * j));
            *out = finish(acc, t, x + i, n - i);
        } else {
            *out = reduce8(acc);
        }
        return true;
    default: break;
    }
#define FMA(k, v) acc = _mm256_fmadd_ps((v), _mm256_loadu_ps(xb + 8 * (k)), acc)
    switch (type) {
    case DS4_TYPE_Q8_0:
        for (int64_t blk = 0; blk < n / 32; blk++) {
            const uint8_t *b = s + 34 * blk;
            const float *xb = x + 32 * blk;
            Q8_0_BLOCK(b, FMA);
        }
        break;
    case DS4_TYPE_Q2_K:
        for (int64_t blk = 0; blk < n / 256; blk++) {
            const uint8_t *b = s + 84 * blk;
            const float *xb = x + 256 * blk;
            Q2_K_BLOCK(b, FMA);
        }
        break;
    case DS4_TYPE_Q4_K:
        for (int64_t blk = 0; blk < n / 256; blk++) {
            const uint8_t *b = s + 144 * blk;
            const float *xb = x + 256 * blk;
            Q4_K_BLOCK(b, FMA);
        }
        break;
    case DS4_TYPE_IQ2_XXS:
        for (int64_t blk = 0; blk < n / 256; blk++) {
            const uint8_t *b = s + 66 * blk;
            const float *xb = x + 256 * blk;
            IQ2_XXS_BLOCK(b, FMA);
        }
        break;
    default: return false;
    }
#undef FMA
    *out = reduce8(acc);
    return true;
}

#else /* not x86: nothing to compile, keep the translation unit non-empty */

typedef int ds4_quant_avx2_unused;

#endif
