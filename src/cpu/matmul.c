/* ds4 — CPU matmul over quantized weights (see matmul.h). */
#include "cpu/matmul.h"

#include <stdlib.h>

#include "cpu/matmul_internal.h"
#include "gguf/quant.h"

int ds4_matmul_ctx_init(ds4_matmul_ctx *mm, ds4_pool *pool, int64_t max_k) {
    mm->pool = pool;
    mm->n_threads = ds4_pool_threads(pool);
    mm->max_k = max_k;
    mm->scratch = calloc((size_t)mm->n_threads, sizeof(float *));
    if (!mm->scratch) return -1;
    for (int i = 0; i < mm->n_threads; i++) {
        mm->scratch[i] = malloc((size_t)DS4_MM_ROW_BLOCK * (size_t)max_k * sizeof(float));
        if (!mm->scratch[i]) return -1;
    }
    return 0;
}

void ds4_matmul_ctx_free(ds4_matmul_ctx *mm) {
    if (mm->scratch)
        for (int i = 0; i < mm->n_threads; i++) free(mm->scratch[i]);
    free(mm->scratch);
    mm->scratch = NULL;
}

static inline const uint8_t *row_ptr(const ds4_tensor *W, int64_t r) {
    return (const uint8_t *)W->data + (size_t)r * ds4_row_bytes(W->type, W->ne[0]);
}

void ds4_tensor_row(const ds4_tensor *W, int64_t r, float *out) { ds4_dequant_row(W->type, row_ptr(W, r), out, W->ne[0]); }

/* One tile: rows [rb, re) x tokens [tb, te). */
static void tile(const ds4_tensor *W, int64_t r0, int64_t rb, int64_t re, const float *X, int64_t ldx, int64_t tb,
                 int64_t te, float *Y, int64_t ldy, float *scratch) {
    const int64_t K = W->ne[0];
    for (int64_t r = rb; r < re; r++) ds4_dequant_row(W->type, row_ptr(W, r0 + r), scratch + (r - rb) * K, K);
#if DS4_HAVE_MM_AVX2
    if (K % 8 == 0 && ds4_simd_active()) {
        ds4_mm_block_avx2(scratch, K, (int)(re - rb), X + tb * ldx, ldx, (int)(te - tb), Y + tb * ldy + rb, ldy, K);
        return;
    }
#endif
    for (int64_t t = tb; t < te; t++) {
        const float *x = X + t * ldx;
        float *y = Y + t * ldy;
        for (int64_t r = rb; r < re; r++) y[r] = ds4_dot_f32(scratch + (r - rb) * K, x, K);
    }
}

void ds4_matmul_serial(const ds4_tensor *W, int64_t r0, int64_t n_rows, const float *X, int64_t ldx, int n_tok,
                       float *Y, int64_t ldy, float *scratch) {
    for (int64_t rb = 0; rb < n_rows; rb += DS4_MM_ROW_BLOCK) {
        const int64_t re = rb + DS4_MM_ROW_BLOCK < n_rows ? rb + DS4_MM_ROW_BLOCK : n_rows;
        tile(W, r0, rb, re, X, ldx, 0, n_tok, Y, ldy, scratch);
    }
}

typedef struct mm_job {
    ds4_matmul_ctx *mm;
    const ds4_tensor *W;
    int64_t r0, n_rows;
    const float *X;
    int64_t ldx;
    int n_tok;
    float *Y;
    int64_t ldy;
    int64_t n_rb, n_tb;
} mm_job;

static void mm_range(void *ctx, int64_t begin, int64_t end, int thread) {
    mm_job *j = ctx;
    for (int64_t item = begin; item < end; item++) {
        const int64_t ib = item / j->n_tb, it = item % j->n_tb;
        const int64_t rb = ib * DS4_MM_ROW_BLOCK, tb = it * DS4_MM_TOK_BLOCK;
        const int64_t re = rb + DS4_MM_ROW_BLOCK < j->n_rows ? rb + DS4_MM_ROW_BLOCK : j->n_rows;
        const int64_t te = tb + DS4_MM_TOK_BLOCK < j->n_tok ? tb + DS4_MM_TOK_BLOCK : j->n_tok;
        tile(j->W, j->r0, rb, re, j->X, j->ldx, tb, te, j->Y, j->ldy, j->mm->scratch[thread]);
    }
}

void ds4_matmul(ds4_matmul_ctx *mm, const ds4_tensor *W, int64_t r0, int64_t n_rows, const float *X, int64_t ldx,
                int n_tok, float *Y, int64_t ldy) {
    if (n_rows <= 0 || n_tok <= 0) return;
    mm_job j = {mm, W, r0, n_rows, X, ldx, n_tok, Y, ldy, (n_rows + DS4_MM_ROW_BLOCK - 1) / DS4_MM_ROW_BLOCK,
                (n_tok + DS4_MM_TOK_BLOCK - 1) / DS4_MM_TOK_BLOCK};
    const int64_t items = j.n_rb * j.n_tb;
    int64_t grain = items / ((int64_t)mm->n_threads * 8);
    if (grain < 1) grain = 1;
    ds4_pool_for(mm->pool, items, grain, mm_range, &j);
}
