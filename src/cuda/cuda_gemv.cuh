/* ds4 — matrix-vector jobs shared by the two decode GEMV kernels
 * (cuda_matmul.cu: any batch of up to 8 tokens; cuda_gemv.cu: one token per
 * row, streamed at memory bandwidth). */
#ifndef DS4_CUDA_GEMV_CUH
#define DS4_CUDA_GEMV_CUH

#include <stdint.h>

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
} gemv_job;
#define GEMV_MAX_JOBS 8
typedef struct gemv_jobs {
    gemv_job j[GEMV_MAX_JOBS];
    int n;
} gemv_jobs;

/* The streaming kernel for one token per output (n == 1, or routed experts):
 * launches and returns true when every job's type and row layout suit it,
 * else returns false and launches nothing. */
bool gemv_stream(const gemv_jobs *jobs, const float *X, int64_t ldx, const int32_t *ids, int pairs, int k,
                 int x_per_pair, cudaStream_t s);

/* Shared-memory set-up of the streaming kernels; before any graph capture. */
int gemv_stream_init(void);

#endif
