/* ds4 — CPU matrix products against weights in their stored GGUF formats.
 *
 * Y[t][r] = dot(W row (r0 + r), X[t]) for tokens t < n_tok and rows r < n_rows.
 * Every output element is one canonical dot product (ds4_dot_f32 over the
 * dequantized row, see gguf/quant.h) computed by one thread, so the result of
 * a token does not depend on how many tokens share the call, on the thread
 * count, or on scheduling: prefill in any chunking and decode give the same
 * bits. Work is split over (row block x token block) tiles. */
#ifndef DS4_CPU_MATMUL_H
#define DS4_CPU_MATMUL_H

#include <stdint.h>

#include "model/weights.h"
#include "util/pool.h"

typedef struct ds4_matmul_ctx {
    ds4_pool *pool;
    float **scratch;      /* per pool thread: DS4_MM_ROW_BLOCK * max_k floats */
    int64_t max_k;
    int n_threads;
} ds4_matmul_ctx;

#define DS4_MM_ROW_BLOCK 16
#define DS4_MM_TOK_BLOCK 128

int ds4_matmul_ctx_init(ds4_matmul_ctx *mm, ds4_pool *pool, int64_t max_k);
void ds4_matmul_ctx_free(ds4_matmul_ctx *mm);

/* Rows [r0, r0 + n_rows) of the 2-D (or flattened 3-D) weight W, whose row
 * length is W->ne[0]. X rows have stride ldx floats, Y rows stride ldy. */
void ds4_matmul(ds4_matmul_ctx *mm, const ds4_tensor *W, int64_t r0, int64_t n_rows, const float *X, int64_t ldx,
                int n_tok, float *Y, int64_t ldy);

/* Single-threaded version for callers already inside a parallel region. */
void ds4_matmul_serial(const ds4_tensor *W, int64_t r0, int64_t n_rows, const float *X, int64_t ldx, int n_tok,
                       float *Y, int64_t ldy, float *scratch);

/* Dequantize one row (f32 copy of row r). */
void ds4_tensor_row(const ds4_tensor *W, int64_t r, float *out);

#endif
