/* ds4 — declarations shared by the matrix-product files: cuda_matmul.cu
 * (entry points, the general small-batch GEMV, the float tile fallback),
 * cuda_gemv.cu (one token per row, streamed at memory bandwidth) and
 * cuda_mma.cu (prefill tiles on the tensor cores). */
#ifndef DS4_CUDA_GEMV_CUH
#define DS4_CUDA_GEMV_CUH

#include <stdint.h>

#include "cuda/cuda_kernels.h"

/* One matrix of a launch: rows [r0, r0 + rows) of W (rb bytes per row, K
 * elements), activations X + x_off, outputs Y[t * ldy + r]. Several matrices
 * that read the same activations share a launch (blockIdx.y picks the job);
 * routed experts (ids != NULL) use blockIdx.z for the (token, slot) pair. */
typedef struct gemv_job {
    const uint8_t *W;
    int64_t rb, r0, rows, K, x_off;
    float *Y;
    int64_t ldy;
    int type;
    int64_t ld; /* row stride in bytes, where a job reads a stretch of each row (ds4k_matmul_ksplit); 0: rb */
} gemv_job;
#define GEMV_MAX_JOBS 8
typedef struct gemv_jobs {
    gemv_job j[GEMV_MAX_JOBS];
    int n;
} gemv_jobs;

/* The streaming kernel for one token per output (n == 1, or routed experts):
 * launches and returns true when every job's type and row layout suit it,
 * else returns false and launches nothing. heads: ds4k_matmul_heads's tail
 * (one job, no ids). */
bool gemv_stream(const gemv_jobs *jobs, const float *X, int64_t ldx, const int32_t *ids, int pairs, int k,
                 int x_per_pair, cudaStream_t s, const ds4_prep *prep = NULL, const ds4_heads *heads = NULL);

/* Shared-memory set-up of the streaming kernels; before any graph capture. */
int gemv_stream_init(void);

/* Routed-expert segment of a batch: weight rows start at row0 (the expert's
 * block), inputs and outputs are rows [x0, x0 + count) of X and Y. */
typedef struct seg3 {
    int64_t row0;
    int x0, count;
} seg3;

/* Y[t][r] = W row (r0 + r) . X[t] on the tensor cores for the weight types
 * it handles (Q8_0, Q2_K, Q4_K, IQ2_XXS, F16). With segs (device memory,
 * n_segs of them, counts <= max_count, n = rows of X in all): per expert
 * segment. With groups > 1: group g multiplies rows r0 + g * rows.. with
 * X + g * gx into Y + g * gy. With split_aux: X's rows were split by
 * mma_split_rows (aux holds their scales and sums). Returns false and
 * launches nothing for other types or layouts. DS4_MMA=0 turns it off. */
bool mma_matmul(int type, const void *W, int64_t rb, int64_t r0, int64_t rows, int64_t K, const float *X, int64_t ldx,
                int n, float *Y, int64_t ldy, const void *segs, int n_segs, int max_count, int groups, int64_t gx,
                int64_t gy, const float *split_aux, cudaStream_t s);
/* Whether mma_matmul takes this weight (type, alignment, K) at all. */
bool mma_takes(int type, const void *W, int64_t rb, int64_t K);
/* Whether the tiles of this weight type read the 16-sums of split rows
 * (the K-quants' minimums). */
bool mma_needs_sums(int type);
/* Each of the n rows of X (K values, stride ldx) rewritten in place as the
 * tiles' split input: f16 hi[K] then lo[K]; aux gets n * K / 16 sums
 * (first: their 8-byte copies stay aligned; written only with `sums`), then
 * the n row scales. With perm (rows for cuda_wgmma.cu): each 32-slice's
 * pairs in the order its fragments take (split_src_pair), its 32 hi halves
 * then its 32 lo halves (hi[32] lo[32] per slice instead of hi[K] lo[K];
 * the lo halves left unwritten where !wgmma_takes_lo()),
 * and the sums as f16 hi[16] lo[16] of sum / 16 per 256-element
 * super-block, in the same bytes. False (nothing launched, X unchanged)
 * where the tiles are off or the layout does not fit. */
bool mma_split_rows(float *X, int n, int64_t K, int64_t ldx, float *aux, bool sums, bool perm, cudaStream_t s);
/* The same for the rows swiglu_kernel would make of G and U (G's row r
 * times wts[r] where wts is not NULL), bitwise, without writing them: G
 * holds the split rows afterwards, U is left as it was. */
bool mma_split_rows_swiglu(float *G, const float *U, float L, const float *wts, int n, int64_t K, int64_t ldx,
                           float *aux, bool sums, bool perm, cudaStream_t s);
/* Whether mma_split_rows_to takes rows of K (the tiles on: DS4_MMA). */
bool mma_split_takes(int64_t K);
/* The same for a dense product's input, out of place: the n x groups rows
 * (token t's group g at X + t ldx + g gx, K values) into dst (split row
 * t groups + g at dst + (t groups + g) K floats), their scales into down;
 * no sums. X is left as it was. */
bool mma_split_rows_to(const float *X, int n, int groups, int64_t K, int64_t ldx, int64_t gx, float *dst, float *down,
                       bool perm, cudaStream_t s);
/* Rows idx[0 .. n) of a dense split in the wgmma order (mma_split_rows_to
 * with perm, one group, n_src rows: wgmma_split's scratch) into X as
 * mma_split_rows(X, n, K, ldx, aux, false, true) would have split the
 * gathered floats, bitwise, their scales at down (aux + n K / 16). */
bool mma_gather_split(const float *split, int n_src, int64_t K, const int32_t *idx, int n, float *X, int64_t ldx,
                      float *down, cudaStream_t s);
/* Tokens a prefill tile covers for a batch (or segments) of at most `cols`
 * rows: 128 for wide ones, 64 for small ones, 32 for segment tables whose
 * counts are all <= 32 (the routed experts' remainders: less padding). The
 * mma.sync tiles and the wgmma kernel choose alike. */
static inline int mma_tile_tokens(int cols, bool segs) { return cols > 64 ? 128 : cols > 32 || !segs ? 64 : 32; }
int mma_init(void);
/* The IQ2_XXS sign patterns as the tiles use them (set by mma_init). */
const uint4 *mma_iq2_pair_signs(void);

/* Prefill products on Hopper's warpgroup MMA (cuda_wgmma.cu): whether a
 * weight of this type and K goes there (an sm_90a build on an sm_90 device,
 * DS4_WGMMA not 0) — a routed expert's rows must then be split with perm —
 * and the routed experts' product itself, with mma_matmul's arguments for
 * segments of split rows; false (nothing launched) where it does not take
 * them. */
bool wgmma_takes(int type, int64_t K);
/* Whether those products take the activations' lo halves (oracle mode,
 * DS4_WGMMA_LO=1); without them a split for them (perm) writes hi alone. */
bool wgmma_takes_lo(void);
/* W2 (with Y2) not NULL: a second matrix of the same type and shape over
 * the same segments in the same launch (gate and up). */
bool wgmma_expert_matmul(int type, const void *W, const void *W2, int64_t rb, int64_t rows, int64_t K, const float *X,
                         int64_t ldx, int n, float *Y, float *Y2, int64_t ldy, const void *segs, int n_segs,
                         int max_count, const float *split_aux, cudaStream_t s);
/* A dense product (mma_matmul's arguments without segments; groups as
 * there) on the warpgroup MMA: X split into scratch first (X unchanged),
 * which must hold n * groups * (K + 1) floats (the split rows, then their
 * scales), 16-byte aligned. Q8_0 weights only; false (nothing launched)
 * otherwise. */
bool wgmma_dense_matmul(int type, const void *W, int64_t rb, int64_t r0, int64_t rows, int64_t K, const float *X,
                        int64_t ldx, int n, float *Y, int64_t ldy, int groups, int64_t gx, int64_t gy, float *scratch,
                        size_t scratch_floats, cudaStream_t s);
/* Several dense products of one type over the same activations: X split
 * once into scratch (wgmma_split: n * (K + 1) floats, 16-byte aligned),
 * then one launch for up to six weights of that type and K, each from its
 * row 0 (wgmma_dense_jobs: Q8_0 or F16; false, nothing launched, otherwise). */
#define WG_JOBS 6 /* dense products of one wgmma_dense_jobs launch */
bool wgmma_split(const float *X, int64_t ldx, int n, int64_t K, float *scratch, size_t scratch_floats, cudaStream_t s);
bool wgmma_dense_jobs(int type, int njobs, const void *const *W, const int64_t *rows, float *const *Y,
                      const int64_t *ldy, int64_t K, int n, const float *split, cudaStream_t s);
int wgmma_init(void);

#endif
