/* ds4 — the rows a query attends (shared by the attention kernels of
 * cuda_attn.cu and cuda_attn_mma.cu): its raw window in the ring, then the
 * compressed rows it may see (HCA: all; CSA: the indexer's selection when
 * there is one). */
#ifndef DS4_CUDA_ATTN_CUH
#define DS4_CUDA_ATTN_CUH

#include "cuda/cuda_common.cuh"

/* Row r of a query's rows (its window's first n_raw, then the compressed
 * ones, sel[i] or i) as its first byte; rows of row_bytes bytes. */
__device__ __forceinline__ const uint8_t *att_row(int r, int n_raw, int64_t lo, const void *ring, int raw_cap,
                                                  const void *comp, const int32_t *sel, size_t row_bytes) {
    if (r < n_raw) return (const uint8_t *)ring + ((lo + r) % raw_cap) * (int64_t)row_bytes;
    const int64_t c = sel ? sel[r - n_raw] : r - n_raw;
    return (const uint8_t *)comp + c * (int64_t)row_bytes;
}

/* The rows query t at position p attends: the raw window [lo, p] (n_raw rows,
 * oldest first), then the compressed rows: the indexer's selection (CSA, when
 * it ran) or all (p + 1) / ratio of them. Returns the total row count. */
__device__ __forceinline__ int visible_rows(int64_t p, int t, int window, int ratio, bool csa, const int32_t *sel_all,
                                            const int *n_sel, int topk, int64_t *lo, int *n_raw, const int32_t **sel) {
    *lo = p - window + 1 > 0 ? p - window + 1 : 0;
    *n_raw = (int)(p - *lo + 1);
    *sel = NULL;
    int n_cmp = 0;
    if (ratio > 0) {
        n_cmp = (int)((p + 1) / ratio);
        if (csa && n_sel[t] >= 0) {
            *sel = sel_all + (int64_t)t * topk;
            n_cmp = n_sel[t];
        }
    }
    return *n_raw + n_cmp;
}

/* Prefill attention on the tensor cores (cuda_attn_mma.cu): launches and
 * returns true when it applies (f16, bf16 or fp8 rows: model/kv_format.h;
 * head dim a multiple of 128 up to DS4K_MAX_HEAD_DIM); DS4_ATT_MMA=0 turns
 * it off. */
bool attention_mma(const float *q, int n, const int *d_pos, int H, int hd, float scale, const float *sinks,
                   const void *ring, int raw_cap, int window, const void *comp, int ratio, bool csa,
                   const int32_t *sel, const int *n_sel, int topk, int fmt, const double *freqs, int n_pairs,
                   float *o, cudaStream_t st);

#endif
