/* ds4 — CUDA matrix products over weights in their GGUF formats: the entry
 * points, and the kernels for what the specialized ones do not take.
 *
 * One token (decode) goes to the streaming GEMV (cuda_gemv.cu), more than 8
 * to the tensor-core tiles (cuda_mma.cu). Here:
 * - batches of 2..8 tokens (and rows the streaming kernel cannot stage):
 *   one warp per output row; lane l takes the 32-element slices l, l+32, ...
 *   of the row, dequantizes each once and multiplies it with every token,
 *   then the warp sums its lanes with a fixed butterfly;
 * - F32/BF16 weights in large batches: 64 x 64 float tiles; each step
 *   dequantizes one 32-wide slice of 64 rows into shared memory and
 *   multiplies it with the matching slice of 64 tokens.
 * Every kernel accumulates each output in a fixed order: deterministic. */
#include "cuda/cuda_kernels.h"
#include "cuda/cuda_quant.cuh"
#include "cuda/cuda_gemv.cuh"

#include <stdio.h>

static __thread const char *g_last_error;

extern "C" const char *ds4k_last_error(void) {
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return cudaGetErrorString(e);
    return g_last_error;
}

extern "C" int ds4k_ops_init(void);
extern "C" int ds4k_hc_init(void);

#define GEMV_WARPS 8
#define GEMV_MAX_TOK 8

/* Dot of a dequantized 32-element slice with its activations, in the one
 * order every GEMV uses (float4 i = 0..7, then x, y, z, w; fused). swz
 * permutes the float4 reads of swizzled shared-memory activations. */
__device__ __forceinline__ float dot32(const float *v, const float4 *x, int swz) {
    float p = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; i++) {
        const float4 xv = x[i ^ swz];
        p = fmaf(v[4 * i], xv.x, p);
        p = fmaf(v[4 * i + 1], xv.y, p);
        p = fmaf(v[4 * i + 2], xv.z, p);
        p = fmaf(v[4 * i + 3], xv.w, p);
    }
    return p;
}

/* Bytes a warp stages per step for a type: a multiple of the block size and
 * of 16 (for 16-byte loads), about 4 KiB. 0 = type not handled. */
__host__ __device__ __forceinline__ int stage_bytes(int type) {
    switch (type) {
    case T_Q8_0: return 34 * 128;  /* 4352 */
    case T_Q2_K: return 336 * 13;  /* 4368 */
    case T_Q4_K: return 144 * 32;  /* 4608 */
    case T_IQ2_XXS: return 528 * 8; /* 4224 */
    case T_F16:
    case T_BF16:
    case T_F32: return 4096;
    default: return 0;
    }
}
#define STAGE_MAX 4608

/* Decode-size batches (n <= 8 tokens): bandwidth comes from having enough
 * bytes in flight, so a row may be shared by WPR warps (1, 2, 4 or 8) chosen
 * to put several thousand warps on the GPU even for 512-row matrices. A block
 * is 8 warps = 8 / WPR rows. Each warp streams its share of the row: it
 * copies a stretch (a whole number of the type's 16-byte-aligned units) into
 * shared memory with 16-byte loads, then its lanes decode 32-element slices
 * from there and multiply them with the activations (kept in shared memory
 * when they fit). The WPR partial sums of a row are added in warp order.
 * Several matrices that read the same activations (e.g. every projection of
 * the attention input) go in one launch: blockIdx.y picks the job. Routed
 * experts: blockIdx.z is the (token, slot) pair, its rows start at
 * ids[pair] * rows, its input is X[pair] or X[pair / k]. */
/* gemv_job / gemv_jobs: cuda_gemv.cuh */

__host__ __device__ __forceinline__ int stage_unit(int type) {
    switch (type) {
    case T_Q8_0: return 272;   /* 8 blocks */
    case T_Q2_K: return 336;   /* 4 blocks */
    case T_Q4_K: return 144;   /* 1 block */
    case T_IQ2_XXS: return 528; /* 8 blocks */
    case T_F32:
    case T_F16:
    case T_BF16: return 128;   /* 1 or 2 slices */
    default: return 0;
    }
}

__global__ void __launch_bounds__(256) gemv_multi(gemv_jobs jobs, const float *X, int64_t ldx, int n, int wpr, int rpw,
                                                 const int32_t *ids, int k, int x_per_pair, int x_in_smem) {
    pdl_enter();
    extern __shared__ __align__(16) float xs[];
    __shared__ __align__(16) uint8_t stage[8][STAGE_MAX];
    __shared__ uint64_t grid_s[256];
    __shared__ float part[8][GEMV_MAX_TOK];
    const gemv_job jb = jobs.j[blockIdx.y];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int rows_per_block = 8 / wpr * rpw;
    const int seg = warp % wpr;
    if ((int64_t)blockIdx.x * rows_per_block >= jb.rows) return; /* whole block past this job's rows */
    const int pair = blockIdx.z;
    X += jb.x_off;
    float *Y = jb.Y;
    if (ids) {
        X += (int64_t)(x_per_pair ? pair : pair / k) * ldx;
        Y += (int64_t)pair * jb.ldy;
        n = 1;
    }
    if (jb.type == T_IQ2_XXS)
        for (int i = threadIdx.x; i < 256; i += blockDim.x) grid_s[i] = d_iq2xxs_grid[i];
    /* Lane s2 reads the 8 float4 of its 32-element slice g = elem0/32 + s2,
     * and 32 lanes read 32 consecutive slices at the same step i: stored
     * plainly, those addresses are 128 bytes apart and every group of 8 lanes
     * hits the same banks (8-way conflict). Stored swizzled (float4 i of
     * slice g at 8g + (i ^ (g & 7))), the 8 lanes of a phase hit 8 different
     * bank groups. The values and their order in the dot are unchanged. */
    if (x_in_smem)
        for (int t = 0; t < n; t++)
            for (int64_t i = threadIdx.x; i < jb.K / 4; i += blockDim.x)
                ((float4 *)(xs + t * jb.K))[(i & ~7) | ((i & 7) ^ ((i >> 3) & 7))] = ((const float4 *)(X + t * ldx))[i];
    __syncthreads();
    const float *xb = x_in_smem ? xs : X;
    const int64_t xld = x_in_smem ? jb.K : ldx;
    int bpb, spb; /* bytes per block, 32-slices per block */
    switch (jb.type) {
    case T_Q8_0: bpb = 34, spb = 1; break;
    case T_Q2_K: bpb = 84, spb = 8; break;
    case T_Q4_K: bpb = 144, spb = 8; break;
    case T_IQ2_XXS: bpb = 66, spb = 8; break;
    case T_F32: bpb = 128, spb = 1; break;
    default: bpb = 64, spb = 1; break;
    }
    for (int rr = 0; rr < rpw; rr++) {
    /* rows of this warp: blockIdx.x * rows_per_block + (warp / wpr) * rpw + rr */
    const int64_t r = (int64_t)blockIdx.x * rows_per_block + (int64_t)(warp / wpr) * rpw + rr;
    float acc[GEMV_MAX_TOK];
#pragma unroll
    for (int t = 0; t < GEMV_MAX_TOK; t++) acc[t] = 0.0f;
    if (r < jb.rows) {
        const uint8_t *row = ids ? jb.W + ((int64_t)ids[pair] * jb.rows + r) * jb.rb : jb.W + (jb.r0 + r) * jb.rb;
        /* this warp's share: whole units, split evenly */
        const int unit = stage_unit(jb.type);
        const int64_t units = jb.rb / unit;
        const int64_t u0 = units * seg / wpr, u1 = units * (seg + 1) / wpr;
        const int sb = STAGE_MAX / unit * unit;
        uint8_t *buf = stage[warp];
        float v[32];
        for (int64_t c0 = u0 * unit; c0 < u1 * unit; c0 += sb) {
            const int nb = (int)(u1 * unit - c0 < sb ? u1 * unit - c0 : sb);
            const uint4 *src = (const uint4 *)(row + c0);
            for (int i = lane; i < nb / 16; i += 32) ((uint4 *)buf)[i] = __ldg(src + i);
            __syncwarp();
            const int ns = nb / bpb * spb;
            const int64_t elem0 = c0 / bpb * spb * 32;
            for (int s2 = lane; s2 < ns; s2 += 32) {
                dequant32_g(jb.type, buf, s2, v, grid_s);
                const int swz = x_in_smem ? (int)((elem0 / 32 + s2) & 7) : 0;
#pragma unroll
                for (int t = 0; t < GEMV_MAX_TOK; t++) {
                    if (t >= n) break;
                    acc[t] += dot32(v, (const float4 *)(xb + t * xld + elem0 + 32 * s2), swz);
                }
            }
            __syncwarp();
        }
    }
#pragma unroll
    for (int t = 0; t < GEMV_MAX_TOK; t++) {
        if (t >= n) break;
        const float sum = warp_sum(acc[t]);
        if (lane == 0) part[warp][t] = sum;
    }
    __syncthreads();
    if (seg == 0 && lane < n && r < jb.rows) {
        float sum = 0.0f;
        for (int w2 = 0; w2 < wpr; w2++) sum += part[warp + w2][lane];
        Y[lane * jb.ldy + r] = sum;
    }
    __syncthreads();
    }
}

/* Few rows, long rows (HC mixers: 24 x 16384, the HC head: 4 x 16384) and one
 * token: a whole block per row, its warps splitting the row; the partial sums
 * are added in warp order (deterministic). */
#define ROWBLK_THREADS 256
__global__ void __launch_bounds__(ROWBLK_THREADS) gemv_rowblock(int type, const uint8_t *W, int64_t rb, int64_t r0,
                                                                int64_t K, const float *X, float *Y) {
    pdl_enter();
    __shared__ float part[ROWBLK_THREADS / 32];
    const int64_t r = blockIdx.x;
    const uint8_t *row = W + (r0 + r) * rb;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    const int nsub = (int)(K / 32);
    float acc = 0.0f, v[32];
    for (int s = warp * 32 + lane; s < nsub; s += nw * 32) {
        dequant32(type, row, s, v);
        acc += dot32(v, (const float4 *)(X + 32 * s), 0);
    }
    acc = warp_sum(acc);
    if (lane == 0) part[warp] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
        float sum = 0.0f;
        for (int w2 = 0; w2 < nw; w2++) sum += part[w2];
        Y[r] = sum;
    }
}

/* Fallback for rows that are not 16-byte multiples (tiny test shapes): each
 * lane reads its own slices straight from global memory. */
__global__ void gemv_kernel(int type, const uint8_t *W, int64_t rb, int64_t r0, int64_t rows, int64_t K,
                            const float *X, int64_t ldx, int n, float *Y, int64_t ldy, const int32_t *ids, int k,
                            int x_per_pair) {
    pdl_enter();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int64_t r = (int64_t)blockIdx.x * GEMV_WARPS + warp;
    if (r >= rows) return;
    const int pair = blockIdx.y;
    const uint8_t *row;
    if (ids) {
        row = W + ((int64_t)ids[pair] * rows + r) * rb;
        X += (int64_t)(x_per_pair ? pair : pair / k) * ldx;
        Y += (int64_t)pair * ldy;
        n = 1;
    } else {
        row = W + (r0 + r) * rb;
    }
    const int nsub = (int)(K / 32);
    float acc[GEMV_MAX_TOK];
#pragma unroll
    for (int t = 0; t < GEMV_MAX_TOK; t++) acc[t] = 0.0f;
    float v[32];
    for (int s = lane; s < nsub; s += 32) {
        dequant32(type, row, s, v);
#pragma unroll
        for (int t = 0; t < GEMV_MAX_TOK; t++) {
            if (t >= n) break;
            acc[t] += dot32(v, (const float4 *)(X + t * ldx + 32 * s), 0);
        }
    }
#pragma unroll
    for (int t = 0; t < GEMV_MAX_TOK; t++) {
        if (t >= n) break;
        const float s = warp_sum(acc[t]);
        if (lane == 0) Y[t * ldy + r] = s;
    }
}

#define XS_MAX (96 * 1024) /* activations kept in shared memory up to this size */

static bool stageable(const ds4_dw *W, int64_t rb) {
    return stage_unit(W->type) > 0 && rb % stage_unit(W->type) == 0 && ((uintptr_t)W->ptr % 16) == 0;
}

/* Warps per row so that about 4 warps per SM-thread-slot exist. */
/* Warps per row: split long rows so a few thousand warps exist, but keep at
 * least ~2 KiB per warp so each lane has several 16-byte loads in flight. */
static int pick_wpr(int64_t total_rows, int64_t rb, int unit) {
    int wpr = 1;
    while (wpr < 8 && total_rows * wpr < 8192 && rb / (2 * wpr) >= 2048 && rb / unit >= 2 * wpr) wpr *= 2;
    return wpr;
}

static void launch_multi(const gemv_jobs *jobs, const float *X, int64_t ldx, int n, const int32_t *ids, int pairs, int k,
                         int x_per_pair, cudaStream_t s, int early = 0) {
    int64_t max_rows = 0, total = 0, K = 0, min_rb = INT64_MAX;
    int unit = 16;
    for (int i = 0; i < jobs->n; i++) {
        max_rows = jobs->j[i].rows > max_rows ? jobs->j[i].rows : max_rows;
        total += jobs->j[i].rows;
        K = jobs->j[i].K > K ? jobs->j[i].K : K;
        if (jobs->j[i].rb < min_rb) min_rb = jobs->j[i].rb, unit = stage_unit(jobs->j[i].type);
    }
    const ds4_prep none = {DS4_PREP_NONE, NULL, 0.0f, NULL, NULL, 0.0f, early};
    if ((ids || n == 1) && gemv_stream(jobs, X, ldx, ids, pairs, k, x_per_pair, s, &none)) return;
    if (ids) total *= pairs;
    const int wpr = pick_wpr(total, min_rb, unit);
    const int ntok = ids ? 1 : n;
    const size_t xbytes = (size_t)ntok * K * sizeof(float);
    const int x_in_smem = xbytes <= XS_MAX && (ldx % 4) == 0 && ((uintptr_t)X % 16) == 0;
    /* rows per warp: a block should read several times more weight bytes than
     * the activations it copies to shared memory, while leaving enough blocks */
    int rpw = 1;
    const int64_t blocks_total = (total + 8 / wpr - 1) / (8 / wpr);
    while (rpw < 8 && (int64_t)(8 / wpr) * rpw * min_rb < 4 * (int64_t)xbytes && blocks_total / (2 * rpw) >= 528) rpw *= 2;
    const int rpb = 8 / wpr * rpw;
    const dim3 grid((unsigned)((max_rows + rpb - 1) / rpb), (unsigned)jobs->n, (unsigned)(ids ? pairs : 1));
    launch_pdl(gemv_multi, grid, 256, x_in_smem ? xbytes : 0, s, *jobs, X, ldx, n, wpr, rpw, ids, k, x_per_pair,
               x_in_smem);
}

static void launch_gemv(const ds4_dw *W, int64_t r0, int64_t rows, const float *X, int64_t ldx, int n, float *Y,
                        int64_t ldy, const int32_t *ids, int pairs, int k, int x_per_pair, cudaStream_t s) {
    const int64_t rb = row_bytes_dev(W->type, W->K);
    if (!ids && n == 1 && rows <= 64 && W->K >= 4096) {
        launch_pdl(gemv_rowblock, (unsigned)rows, ROWBLK_THREADS, 0, s, W->type, (const uint8_t *)W->ptr, rb, r0, W->K,
                   X, Y);
        return;
    }
    if (stageable(W, rb)) {
        gemv_jobs jobs;
        jobs.n = 1;
        jobs.j[0] = (gemv_job){(const uint8_t *)W->ptr, rb, r0, rows, W->K, 0, Y, ldy, W->type};
        launch_multi(&jobs, X, ldx, n, ids, pairs, k, x_per_pair, s);
    } else {
        const dim3 grid((unsigned)((rows + GEMV_WARPS - 1) / GEMV_WARPS), (unsigned)(ids ? pairs : 1));
        launch_pdl(gemv_kernel, grid, 32 * GEMV_WARPS, 0, s, W->type, (const uint8_t *)W->ptr, rb, r0, rows, W->K, X,
                   ldx, n, Y, ldy, ids, k, x_per_pair);
    }
}

/* Several matrices over the same activations in one launch (decode). Falls
 * back to one launch each when a matrix cannot be staged. */
extern "C" void ds4k_matmul_multi(const ds4_mm_job *mj_in, int n_jobs_in, const float *X, int64_t ldx, int n,
                                  ds4_stream st) {
    cudaStream_t s = (cudaStream_t)st;
    /* one token: the streaming kernel takes the jobs of one type per launch;
     * whatever it cannot take goes through the general path below */
    ds4_mm_job mj[GEMV_MAX_JOBS];
    int n_jobs = 0;
    if (n == 1 && n_jobs_in <= GEMV_MAX_JOBS) {
        bool done[GEMV_MAX_JOBS] = {false};
        for (int i = 0; i < n_jobs_in; i++) {
            if (done[i]) continue;
            gemv_jobs group;
            group.n = 0;
            int members[GEMV_MAX_JOBS];
            for (int j = i; j < n_jobs_in; j++) {
                if (done[j] || mj_in[j].W->type != mj_in[i].W->type) continue;
                members[group.n] = j;
                group.j[group.n++] = (gemv_job){(const uint8_t *)mj_in[j].W->ptr,
                                                row_bytes_dev(mj_in[j].W->type, mj_in[j].W->K), mj_in[j].r0,
                                                mj_in[j].rows, mj_in[j].W->K, mj_in[j].x_off, mj_in[j].Y, mj_in[j].ldy,
                                                mj_in[j].W->type};
            }
            if (gemv_stream(&group, X, ldx, NULL, 1, 1, 0, s))
                for (int m = 0; m < group.n; m++) done[members[m]] = true;
        }
        for (int i = 0; i < n_jobs_in; i++)
            if (!done[i]) mj[n_jobs++] = mj_in[i];
        if (n_jobs == 0) return;
    } else {
        for (int i = 0; i < n_jobs_in && i < GEMV_MAX_JOBS; i++) mj[n_jobs++] = mj_in[i];
        if (n_jobs_in > GEMV_MAX_JOBS) {
            for (int i = 0; i < n_jobs_in; i++)
                ds4k_matmul(mj_in[i].W, mj_in[i].r0, mj_in[i].rows, X + mj_in[i].x_off, ldx, n, mj_in[i].Y,
                            mj_in[i].ldy, st);
            return;
        }
    }
    bool ok = n <= GEMV_MAX_TOK && n_jobs <= GEMV_MAX_JOBS;
    for (int i = 0; ok && i < n_jobs; i++) ok = stageable(mj[i].W, row_bytes_dev(mj[i].W->type, mj[i].W->K));
    if (!ok) {
        for (int i = 0; i < n_jobs; i++)
            ds4k_matmul(mj[i].W, mj[i].r0, mj[i].rows, X + mj[i].x_off, ldx, n, mj[i].Y, mj[i].ldy, st);
        return;
    }
    gemv_jobs jobs;
    jobs.n = n_jobs;
    for (int i = 0; i < n_jobs; i++)
        jobs.j[i] = (gemv_job){(const uint8_t *)mj[i].W->ptr, row_bytes_dev(mj[i].W->type, mj[i].W->K), mj[i].r0,
                               mj[i].rows, mj[i].W->K, mj[i].x_off, mj[i].Y, mj[i].ldy, mj[i].W->type};
    launch_multi(&jobs, X, ldx, n, NULL, 1, 1, 0, s);
}

#define TM 64
#define TN 64
#define TK 64 /* two 32-element slices per row per step: 128 slices, one per thread of the first half */

/* Output tile TM rows x TN tokens (the float fallback of cuda_mma.cu, for
 * F32/BF16 weights or layouts it does not take). Segments (routed experts):
 * blockIdx.z picks a segment (seg3, cuda_gemv.cuh). */
__global__ void __launch_bounds__(256) tile_kernel(int type, const uint8_t *W, int64_t rb, int64_t r0, int64_t rows,
                                                   int64_t K, const float *X, int64_t ldx, int n, float *Y, int64_t ldy,
                                                   const seg3 *segs) {
    pdl_enter();
    __shared__ __align__(16) float Ws[TK][TM + 4];
    __shared__ __align__(16) float Xs[TK][TN + 4];
    int tbase = blockIdx.y * TN;
    if (segs) {
        const seg3 sg = segs[blockIdx.z];
        if (tbase >= sg.count) return;
        r0 += sg.row0;
        X += (int64_t)sg.x0 * ldx;
        Y += (int64_t)sg.x0 * ldy;
        n = sg.count;
    }
    const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    const int64_t rbase = (int64_t)blockIdx.x * TM;
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
    const int nsub = (int)(K / 32);
    for (int s = 0; s < nsub; s += 2) {
        const int two = s + 1 < nsub ? 2 : 1;
        if (tid < 2 * TM) {
            const int row = tid >> 1, half = tid & 1;
            float v[32];
            const int64_t r = rbase + row;
            if (r < rows && half < two) dequant32(type, W + (r0 + r) * rb, s + half, v);
            else
#pragma unroll
                for (int i = 0; i < 32; i++) v[i] = 0.0f;
#pragma unroll
            for (int i = 0; i < 32; i++) Ws[32 * half + i][row] = v[i];
        }
        for (int i = tid; i < TK * TN; i += 256) {
            const int tok = i / TK, k = i % TK;
            Xs[k][tok] = tbase + tok < n && k < 32 * two ? X[(int64_t)(tbase + tok) * ldx + 32 * s + k] : 0.0f;
        }
        __syncthreads();
#pragma unroll 8
        for (int k = 0; k < 32 * two; k++) {
            /* one 16-byte load each (rows of TM + 4 floats keep 16-byte alignment) */
            const float4 a4 = *(const float4 *)&Ws[k][ty * 4], b4 = *(const float4 *)&Xs[k][tx * 4];
            const float a[4] = {a4.x, a4.y, a4.z, a4.w}, b[4] = {b4.x, b4.y, b4.z, b4.w};
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int64_t r = rbase + ty * 4 + i;
        if (r >= rows) continue;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int t = tbase + tx * 4 + j;
            if (t < n) Y[(int64_t)t * ldy + r] = acc[i][j];
        }
    }
}

/* The split form every reader takes: false where some reader's type or
 * layout is not the tiles', or the readers disagree on the wgmma order;
 * else whether 16-sums are needed and the order. */
static bool split_form(const ds4_dw *const *readers, int n_readers, bool *sums, bool *perm) {
    if (n_readers <= 0) return false;
    const int64_t K = readers[0]->K;
    int wg = 0; /* readers that take their rows in the wgmma order */
    *sums = false;
    for (int i = 0; i < n_readers; i++) {
        const ds4_dw *W = readers[i];
        if (W->K != K || !mma_takes(W->type, W->ptr, row_bytes_dev(W->type, W->K), W->K)) return false;
        *sums |= mma_needs_sums(W->type);
        wg += wgmma_takes(W->type, W->K);
    }
    *perm = wg != 0;
    return wg == 0 || wg == n_readers; /* one order for all readers, or no split */
}

extern "C" int ds4k_expert_split(const ds4_dw *const *readers, int n_readers, float *X, int n, int64_t ldx,
                                 float *aux, ds4_stream st) {
    bool sums, perm;
    if (n <= 0 || !split_form(readers, n_readers, &sums, &perm)) return -1;
    return mma_split_rows(X, n, readers[0]->K, ldx, aux, sums, perm, (cudaStream_t)st) ? 0 : -1;
}

extern "C" int ds4k_expert_split_swiglu(const ds4_dw *const *readers, int n_readers, float *G, const float *U,
                                        float L, const float *wts, int n, int64_t ldx, float *aux, ds4_stream st) {
    bool sums, perm;
    if (n <= 0 || !split_form(readers, n_readers, &sums, &perm)) return -1;
    return mma_split_rows_swiglu(G, U, L, wts, n, readers[0]->K, ldx, aux, sums, perm, (cudaStream_t)st) ? 0 : -1;
}

extern "C" int ds4k_expert_gather_split(const ds4_dw *const *readers, int n_readers, const float *split, int n_src,
                                        const int32_t *idx, int n, float *X, int64_t ldx, float *aux, ds4_stream st) {
    bool sums, perm; /* the dense split has the wgmma order and no 16-sums */
    if (n <= 0 || !split_form(readers, n_readers, &sums, &perm) || sums || !perm) return -1;
    const int64_t K = readers[0]->K;
    return mma_gather_split(split, n_src, K, idx, n, X, ldx, aux + (int64_t)n * (K / 16), (cudaStream_t)st) ? 0 : -1;
}

/* DS4_EXPERT_PAIR=0: gate and up in a launch each (A/B timing) */
static int g_expert_pair = 1;
extern "C" int ds4k_expert_pair_enable(int on) {
    const int was = g_expert_pair;
    g_expert_pair = on;
    return was;
}

/* Routed experts of a batch in one launch per matrix: segment e covers the
 * gathered rows [x0, x0 + count) that chose expert expert_id (its rows start at
 * expert_id * rows of the 3-D weight). */
extern "C" void ds4k_expert_matmul(const ds4_dw *W, int64_t rows, const int32_t *seg_dev, int n_segs, int max_count,
                                   const float *X, const float *split_aux, int n_x, int64_t ldx, float *Y, int64_t ldy,
                                   ds4_stream st) {
    if (n_segs <= 0 || max_count <= 0) return;
    if (split_aux && wgmma_takes(W->type, W->K)) { /* rows split in its order: only it may read them */
        if (!wgmma_expert_matmul(W->type, W->ptr, NULL, row_bytes_dev(W->type, W->K), rows, W->K, X, ldx, n_x, Y, NULL,
                                 ldy, seg_dev, n_segs, max_count, split_aux, (cudaStream_t)st))
            g_last_error = "ds4k_expert_matmul: rows split for the warpgroup MMA but its kernel declined them";
        return;
    }
    if (mma_matmul(W->type, W->ptr, row_bytes_dev(W->type, W->K), 0, rows, W->K, X, ldx, n_x, Y, ldy, seg_dev, n_segs,
                   max_count, 1, 0, 0, split_aux, (cudaStream_t)st))
        return;
    if (split_aux) { /* ds4k_expert_split checked this reader: not reached */
        g_last_error = "ds4k_expert_matmul: split rows but no tensor-core tiles for this weight";
        return;
    }
    const dim3 grid((unsigned)((rows + TM - 1) / TM), (unsigned)((max_count + TN - 1) / TN), (unsigned)n_segs);
    launch_pdl(tile_kernel, grid, 256, 0, (cudaStream_t)st, W->type, (const uint8_t *)W->ptr,
               row_bytes_dev(W->type, W->K), 0, rows, W->K, X, ldx, 0, Y, ldy, (const seg3 *)seg_dev);
}

extern "C" void ds4k_expert_matmul2(const ds4_dw *W, const ds4_dw *W2, int64_t rows, const int32_t *seg_dev, int n_segs,
                                    int max_count, const float *X, const float *split_aux, int n_x, int64_t ldx,
                                    float *Y, float *Y2, int64_t ldy, ds4_stream st) {
    if (n_segs <= 0 || max_count <= 0) return;
    if (split_aux && g_expert_pair && W->type == W2->type && W->K == W2->K && wgmma_takes(W->type, W->K) &&
        wgmma_expert_matmul(W->type, W->ptr, W2->ptr, row_bytes_dev(W->type, W->K), rows, W->K, X, ldx, n_x, Y, Y2,
                            ldy, seg_dev, n_segs, max_count, split_aux, (cudaStream_t)st))
        return;
    ds4k_expert_matmul(W, rows, seg_dev, n_segs, max_count, X, split_aux, n_x, ldx, Y, ldy, st);
    ds4k_expert_matmul(W2, rows, seg_dev, n_segs, max_count, X, split_aux, n_x, ldx, Y2, ldy, st);
}

extern "C" int ds4k_init(void) {
    /* which set-up failed, and CUDA's word for it (ds4k_last_error) */
    static __thread char why[160];
    g_expert_pair = env_switch_on("DS4_EXPERT_PAIR");
    const char *part = quant_tables_upload() != 0 ? "tables"
                       : ds4k_ops_init() != 0     ? "ops"
                       : ds4k_hc_init() != 0      ? "hc"
                       : gemv_stream_init() != 0  ? "streaming gemv"
                       : mma_init() != 0          ? "mma"
                       : wgmma_init() != 0        ? "wgmma"
                       /* set before any graph capture: attributes cannot change inside one */
                       : cudaFuncSetAttribute(gemv_multi, cudaFuncAttributeMaxDynamicSharedMemorySize, XS_MAX) !=
                               cudaSuccess
                           ? "gemv"
                           : NULL;
    if (!part) return 0;
    snprintf(why, sizeof(why), "kernel set-up (%s) failed: %s", part, cudaGetErrorString(cudaGetLastError()));
    g_last_error = why;
    return -1;
}

extern "C" void ds4k_matmul(const ds4_dw *W, int64_t r0, int64_t rows, const float *X, int64_t ldx, int n, float *Y,
                            int64_t ldy, ds4_stream st) {
    ds4k_matmul_scratch(W, r0, rows, X, ldx, n, Y, ldy, NULL, 0, st);
}

extern "C" void ds4k_matmul_scratch(const ds4_dw *W, int64_t r0, int64_t rows, const float *X, int64_t ldx, int n,
                                    float *Y, int64_t ldy, float *scratch, size_t scratch_floats, ds4_stream st) {
    if (rows <= 0 || n <= 0) return;
    const int64_t rb = row_bytes_dev(W->type, W->K);
    cudaStream_t s = (cudaStream_t)st;
    if (n <= GEMV_MAX_TOK) {
        launch_gemv(W, r0, rows, X, ldx, n, Y, ldy, NULL, 1, 1, 0, s);
        return;
    }
    if (wgmma_dense_matmul(W->type, W->ptr, rb, r0, rows, W->K, X, ldx, n, Y, ldy, 1, 0, 0, scratch, scratch_floats,
                           s))
        return;
    if (!mma_matmul(W->type, W->ptr, rb, r0, rows, W->K, X, ldx, n, Y, ldy, NULL, 0, 0, 1, 0, 0, NULL, s)) {
        const dim3 grid((unsigned)((rows + TM - 1) / TM), (unsigned)((n + TN - 1) / TN));
        launch_pdl(tile_kernel, grid, 256, 0, s, W->type, (const uint8_t *)W->ptr, rb, r0, rows, W->K, X, ldx, n, Y,
                   ldy, (const seg3 *)NULL);
    }
}

/* Prefill: several products over the same activations. On the warpgroup
 * MMA the rows are split once and each type's products (Q8_0, F16; up to
 * WG_JOBS of one K) go in one launch, whose tiles of the small products (the
 * KV and compressor projections, the router) fill the GPU together (12-layer
 * prefill +1.6%, bitwise the same products); anything else, one
 * ds4k_matmul_scratch each (after them: it splits into the same scratch).
 * A batch the GEMV takes goes to ds4k_matmul_multi. */
/* The first WG_JOBS jobs of weight type `type` whose K is the first one's,
 * from row 0 and x_off 0 (one wgmma_dense_jobs launch): their weights,
 * shapes and outputs, their indices in members; how many. */
typedef struct wg_group {
    const void *W[WG_JOBS];
    int64_t rows[WG_JOBS], ldy[WG_JOBS], K;
    float *Y[WG_JOBS];
    int members[WG_JOBS], m;
} wg_group;
static void wg_group_of(const ds4_mm_job *jobs, int n_jobs, int type, wg_group *g) {
    g->m = 0, g->K = 0;
    for (int i = 0; i < n_jobs && g->m < WG_JOBS; i++) {
        const ds4_mm_job *j = &jobs[i];
        if (j->W->type != type || (g->m > 0 && j->W->K != g->K) || j->r0 != 0 || j->x_off != 0) continue;
        g->K = j->W->K;
        g->W[g->m] = j->W->ptr, g->rows[g->m] = j->rows, g->Y[g->m] = j->Y, g->ldy[g->m] = j->ldy;
        g->members[g->m++] = i;
    }
}

extern "C" int64_t ds4k_matmul_jobs_split(const ds4_mm_job *jobs, int n_jobs, const float *X, int64_t ldx, int n,
                                         float *scratch, size_t scratch_floats, int64_t split_k, ds4_stream st) {
    cudaStream_t s = (cudaStream_t)st;
    if (n <= GEMV_MAX_TOK) {
        ds4k_matmul_multi(jobs, n_jobs, X, ldx, n, st);
        return split_k;
    }
    bool taken[GEMV_MAX_JOBS] = {false};
    /* split_k: the K whose split rows the scratch holds (0: none yet) */
    for (int pass = 0; n_jobs <= GEMV_MAX_JOBS && pass < 2; pass++) {
        const int type = pass == 0 ? T_Q8_0 : T_F16;
        wg_group g;
        wg_group_of(jobs, n_jobs, type, &g);
        if (g.m == 0 || !wgmma_takes(type, g.K)) continue;
        if (split_k != g.K) {
            if (!wgmma_split(X, ldx, n, g.K, scratch, scratch_floats, s)) continue;
            split_k = g.K;
        }
        if (wgmma_dense_jobs(type, g.m, g.W, g.rows, g.Y, g.ldy, g.K, n, scratch, s))
            for (int i = 0; i < g.m; i++) taken[g.members[i]] = true;
    }
    for (int i = 0; i < n_jobs; i++)
        if (i >= GEMV_MAX_JOBS || !taken[i]) {
            ds4k_matmul_scratch(jobs[i].W, jobs[i].r0, jobs[i].rows, X + jobs[i].x_off, ldx, n, jobs[i].Y, jobs[i].ldy,
                                scratch, scratch_floats, st);
            split_k = 0; /* its own split may have overwritten the scratch */
        }
    return split_k;
}

extern "C" void ds4k_matmul_jobs(const ds4_mm_job *jobs, int n_jobs, const float *X, int64_t ldx, int n, float *scratch,
                                 size_t scratch_floats, ds4_stream st) {
    ds4k_matmul_jobs_split(jobs, n_jobs, X, ldx, n, scratch, scratch_floats, 0, st);
}

extern "C" int ds4k_matmul_jobs_tc_takes(int type, int64_t K, int n, size_t scratch_floats) {
    return (type == T_Q8_0 || type == T_F16) && n >= 1 && wgmma_takes(type, K) && mma_split_takes(K) &&
           scratch_floats >= (size_t)n * (K + 1); /* wgmma_split's rows and scales */
}

extern "C" int ds4k_matmul_jobs_tc(const ds4_mm_job *jobs, int n_jobs, const float *X, int64_t ldx, int n,
                                   float *scratch, size_t scratch_floats, ds4_stream st) {
    if (n_jobs < 1 || n_jobs > WG_JOBS) return -1;
    wg_group g;
    wg_group_of(jobs, n_jobs, jobs[0].W->type, &g);
    if (g.m != n_jobs || !ds4k_matmul_jobs_tc_takes(jobs[0].W->type, g.K, n, scratch_floats)) return -1;
    cudaStream_t s = (cudaStream_t)st;
    if (!wgmma_split(X, ldx, n, g.K, scratch, scratch_floats, s)) return -1;
    return wgmma_dense_jobs(jobs[0].W->type, g.m, g.W, g.rows, g.Y, g.ldy, g.K, n, scratch, s) ? 0 : -1;
}

/* ------------------------------------------------------------------ routed experts, small batches */

extern "C" void ds4k_moe_matmul_multi(const ds4_mm_job *mj, int n_jobs, const int32_t *ids, int n, int k, const float *X,
                                      int64_t ldx, int x_per_pair, int early, ds4_stream st) {
    bool ok = n_jobs <= GEMV_MAX_JOBS;
    for (int i = 0; ok && i < n_jobs; i++) ok = stageable(mj[i].W, row_bytes_dev(mj[i].W->type, mj[i].W->K));
    if (!ok) {
        for (int i = 0; i < n_jobs; i++) ds4k_moe_matmul(mj[i].W, mj[i].rows, ids, n, k, X, ldx, x_per_pair, mj[i].Y, mj[i].ldy, st);
        return;
    }
    gemv_jobs jobs;
    jobs.n = n_jobs;
    for (int i = 0; i < n_jobs; i++)
        jobs.j[i] = (gemv_job){(const uint8_t *)mj[i].W->ptr, row_bytes_dev(mj[i].W->type, mj[i].W->K), 0, mj[i].rows,
                               mj[i].W->K, 0, mj[i].Y, mj[i].ldy, mj[i].W->type};
    launch_multi(&jobs, X, ldx, 1, ids, n * k, k, x_per_pair, (cudaStream_t)st, early);
}

extern "C" void ds4k_moe_matmul(const ds4_dw *W, int64_t rows, const int32_t *ids, int n, int k, const float *X,
                                int64_t ldx, int x_per_pair, float *Y, int64_t ldy, ds4_stream st) {
    if (n <= 0) return;
    launch_gemv(W, 0, rows, X, ldx, 1, Y, ldy, ids, n * k, k, x_per_pair, (cudaStream_t)st);
}

/* One matrix by the streaming kernel, with a prep and heads' tail as given
 * (ds4k_matmul_prep, ds4k_matmul_heads); -1 where the kernel cannot take it. */
static int stream_one(const ds4_dw *W, int64_t rows, const float *X, int64_t ldx, const ds4_prep *prep,
                      const ds4_heads *heads, const int32_t *ids, int n, int k, int x_per_pair, float *Y, int64_t ldy,
                      ds4_stream st) {
    const int64_t rb = row_bytes_dev(W->type, W->K);
    if (rows <= 0 || n < 1 || (!ids && n != 1) || !stageable(W, rb)) return -1;
    gemv_jobs jobs;
    jobs.n = 1;
    jobs.j[0] = (gemv_job){(const uint8_t *)W->ptr, rb, 0, rows, W->K, 0, Y, ldy, W->type};
    return gemv_stream(&jobs, X, ldx, ids, ids ? n * k : 1, k, x_per_pair, (cudaStream_t)st, prep, heads) ? 0 : -1;
}

extern "C" int ds4k_matmul_prep(const ds4_dw *W, int64_t rows, const float *X, int64_t ldx, const ds4_prep *prep,
                                const int32_t *ids, int n, int k, int x_per_pair, float *Y, int64_t ldy,
                                ds4_stream st) {
    static int on = -1; /* DS4_GEMV_PREP=0: the separate kernels (A/B) */
    if (on < 0) on = env_switch_on("DS4_GEMV_PREP");
    return on ? stream_one(W, rows, X, ldx, prep, NULL, ids, n, k, x_per_pair, Y, ldy, st) : -1;
}

extern "C" int ds4k_matmul_heads(const ds4_dw *W, int64_t rows, const float *X, const ds4_prep *prep,
                                 const ds4_heads *heads, float *Y, ds4_stream st) {
    static int on = -1; /* DS4_GEMV_HEADS=0: the product and ds4k_heads_rope apart (A/B) */
    if (on < 0) on = env_switch_on("DS4_GEMV_HEADS");
    return on && heads ? stream_one(W, rows, X, W->K, prep, heads, NULL, 1, 1, 0, Y, rows, st) : -1;
}

extern "C" int ds4k_matmul_ksplit(const ds4_mm_job *mj, int n_jobs, int parts, int64_t pstride, const float *X,
                                  int64_t ldx, ds4_stream st) {
    if (parts < 1 || n_jobs < 1 || n_jobs * parts > GEMV_MAX_JOBS) return -1;
    gemv_jobs jobs;
    jobs.n = 0;
    for (int i = 0; i < n_jobs; i++) {
        const ds4_dw *W = mj[i].W;
        if (W->K % parts != 0) return -1;
        const int64_t kn = W->K / parts, rb = row_bytes_dev(W->type, kn), ld = row_bytes_dev(W->type, W->K);
        if (rb <= 0 || rb * parts != ld) return -1; /* stretches of whole blocks */
        for (int q = 0; q < parts; q++)
            jobs.j[jobs.n++] = (gemv_job){(const uint8_t *)W->ptr + q * rb, rb,        mj[i].r0, mj[i].rows,
                                          kn, mj[i].x_off + q * kn, mj[i].Y + q * pstride, mj[i].ldy, W->type, ld};
    }
    return gemv_stream(&jobs, X, ldx, NULL, 1, 1, 0, (cudaStream_t)st) ? 0 : -1;
}

/* ------------------------------------------------------------------ row gather / scatter */

__global__ void gather_kernel(const float *src, int64_t lds, const int32_t *idx, int D, float *dst) {
    pdl_enter();
    const int i = blockIdx.x;
    const float *s = src + (int64_t)idx[i] * lds;
    float *d = dst + (int64_t)i * D;
    for (int c = threadIdx.x; c < D; c += blockDim.x) d[c] = s[c];
}

__global__ void scatter_kernel(const float *src, const int32_t *idx, int D, float *dst, int64_t ldd) {
    pdl_enter();
    const int i = blockIdx.x;
    const float *s = src + (int64_t)i * D;
    float *d = dst + (int64_t)idx[i] * ldd;
    for (int c = threadIdx.x; c < D; c += blockDim.x) d[c] = s[c];
}

extern "C" void ds4k_gather_rows(const float *src, int64_t lds, const int32_t *idx, int n, int D, float *dst,
                                 ds4_stream st) {
    if (n > 0) launch_pdl(gather_kernel, n, 256, 0, (cudaStream_t)st, src, lds, idx, D, dst);
}

extern "C" void ds4k_scatter_rows(const float *src, const int32_t *idx, int n, int D, float *dst, int64_t ldd,
                                  ds4_stream st) {
    if (n > 0) launch_pdl(scatter_kernel, n, 256, 0, (cudaStream_t)st, src, idx, D, dst, ldd);
}

/* ------------------------------------------------------------------ grouped products */

extern "C" void ds4k_matmul_groups(const ds4_dw *W, int64_t rows, int groups, const float *X, int64_t gx, int64_t ldx,
                                   int n, float *Y, int64_t gy, int64_t ldy, float *scratch, size_t scratch_floats,
                                   ds4_stream st) {
    if (rows <= 0 || n <= 0 || groups <= 0) return;
    const int64_t rb = row_bytes_dev(W->type, W->K);
    const cudaStream_t s = (cudaStream_t)st;
    if (n > GEMV_MAX_TOK && W->K == gx &&
        (wgmma_dense_matmul(W->type, W->ptr, rb, 0, rows, W->K, X, ldx, n, Y, ldy, groups, gx, gy, scratch,
                            scratch_floats, s) ||
         mma_matmul(W->type, W->ptr, rb, 0, rows, W->K, X, ldx, n, Y, ldy, NULL, 0, 0, groups, gx, gy, NULL, s)))
        return;
    for (int g = 0; g < groups; g++)
        ds4k_matmul_scratch(W, (int64_t)g * rows, rows, X + g * gx, ldx, n, Y + g * gy, ldy, scratch, scratch_floats, st);
}
