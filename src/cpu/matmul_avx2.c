/* ds4 — AVX2 register-blocked micro-kernel for the CPU matmul.
 *
 * Computes up to 4 rows x 3 tokens of dot products at once (12 independent
 * accumulators keep both FMA ports busy instead of waiting on one chain),
 * while every single dot product is accumulated exactly like the canonical
 * ds4_dot_f32 (gguf/quant.h): one 8-lane accumulator, one fused multiply-add
 * per 8 elements in increasing order, then the same lane reduction. So the
 * result of a dot does not depend on which kernel shape computed it, and a
 * token's logits do not depend on how many tokens share a call. */
#include "cpu/matmul_internal.h"

#if DS4_HAVE_MM_AVX2
#include <immintrin.h>

/* ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)), as in gguf/quant_avx2.c */
static inline float reduce8(__m256 v) {
    const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

/* 4 rows x 3 tokens with explicit accumulators (written out so the compiler
 * keeps all twelve in registers at -O2). */
static void k4x3(const float *W, int64_t ldw, const float *X, int64_t ldx, float *Y, int64_t ldy, int64_t K) {
    __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a10 = a00, a11 = a00, a12 = a00;
    __m256 a20 = a00, a21 = a00, a22 = a00, a30 = a00, a31 = a00, a32 = a00;
    const float *w0 = W, *w1 = W + ldw, *w2 = W + 2 * ldw, *w3 = W + 3 * ldw;
    const float *x0 = X, *x1 = X + ldx, *x2 = X + 2 * ldx;
    for (int64_t k = 0; k < K; k += 8) {
        const __m256 v0 = _mm256_loadu_ps(x0 + k), v1 = _mm256_loadu_ps(x1 + k), v2 = _mm256_loadu_ps(x2 + k);
        __m256 w = _mm256_loadu_ps(w0 + k);
        a00 = _mm256_fmadd_ps(w, v0, a00);
        a01 = _mm256_fmadd_ps(w, v1, a01);
        a02 = _mm256_fmadd_ps(w, v2, a02);
        w = _mm256_loadu_ps(w1 + k);
        a10 = _mm256_fmadd_ps(w, v0, a10);
        a11 = _mm256_fmadd_ps(w, v1, a11);
        a12 = _mm256_fmadd_ps(w, v2, a12);
        w = _mm256_loadu_ps(w2 + k);
        a20 = _mm256_fmadd_ps(w, v0, a20);
        a21 = _mm256_fmadd_ps(w, v1, a21);
        a22 = _mm256_fmadd_ps(w, v2, a22);
        w = _mm256_loadu_ps(w3 + k);
        a30 = _mm256_fmadd_ps(w, v0, a30);
        a31 = _mm256_fmadd_ps(w, v1, a31);
        a32 = _mm256_fmadd_ps(w, v2, a32);
    }
    Y[0] = reduce8(a00), Y[1] = reduce8(a10), Y[2] = reduce8(a20), Y[3] = reduce8(a30);
    Y[ldy] = reduce8(a01), Y[ldy + 1] = reduce8(a11), Y[ldy + 2] = reduce8(a21), Y[ldy + 3] = reduce8(a31);
    Y[2 * ldy] = reduce8(a02), Y[2 * ldy + 1] = reduce8(a12), Y[2 * ldy + 2] = reduce8(a22), Y[2 * ldy + 3] = reduce8(a32);
}

/* 4 rows x 1 token (decode): four independent chains. */
static void k4x1(const float *W, int64_t ldw, const float *X, int64_t ldx, float *Y, int64_t ldy, int64_t K) {
    (void)ldx, (void)ldy;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const float *w0 = W, *w1 = W + ldw, *w2 = W + 2 * ldw, *w3 = W + 3 * ldw;
    for (int64_t k = 0; k < K; k += 8) {
        const __m256 v = _mm256_loadu_ps(X + k);
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + k), v, a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + k), v, a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + k), v, a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + k), v, a3);
    }
    Y[0] = reduce8(a0), Y[1] = reduce8(a1), Y[2] = reduce8(a2), Y[3] = reduce8(a3);
}

/* 1 row x 3 tokens. */
static void k1x3(const float *W, int64_t ldw, const float *X, int64_t ldx, float *Y, int64_t ldy, int64_t K) {
    (void)ldw;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0;
    for (int64_t k = 0; k < K; k += 8) {
        const __m256 w = _mm256_loadu_ps(W + k);
        a0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(X + k), a0);
        a1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(X + ldx + k), a1);
        a2 = _mm256_fmadd_ps(w, _mm256_loadu_ps(X + 2 * ldx + k), a2);
    }
    Y[0] = reduce8(a0), Y[ldy] = reduce8(a1), Y[2 * ldy] = reduce8(a2);
}

static void k1x1(const float *W, int64_t ldw, const float *X, int64_t ldx, float *Y, int64_t ldy, int64_t K) {
    (void)ldw, (void)ldx, (void)ldy;
    __m256 a = _mm256_setzero_ps();
    for (int64_t k = 0; k < K; k += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(W + k), _mm256_loadu_ps(X + k), a);
    Y[0] = reduce8(a);
}

void ds4_mm_block_avx2(const float *W, int64_t ldw, int nr, const float *X, int64_t ldx, int nt, float *Y, int64_t ldy,
                       int64_t K) {
    int r = 0;
    for (; r + 4 <= nr; r += 4) {
        int t = 0;
        for (; t + 3 <= nt; t += 3) k4x3(W + r * ldw, ldw, X + t * ldx, ldx, Y + t * ldy + r, ldy, K);
        for (; t < nt; t++) k4x1(W + r * ldw, ldw, X + t * ldx, ldx, Y + t * ldy + r, ldy, K);
    }
    for (; r < nr; r++) {
        int t = 0;
        for (; t + 3 <= nt; t += 3) k1x3(W + r * ldw, ldw, X + t * ldx, ldx, Y + t * ldy + r, ldy, K);
        for (; t < nt; t++) k1x1(W + r * ldw, ldw, X + t * ldx, ldx, Y + t * ldy + r, ldy, K);
    }
}
#endif
