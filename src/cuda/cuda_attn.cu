/* ds4 — CUDA compressors, lightning indexer scores and sink attention
 * (twins: compressor_push, score_range and att_range in
 * src/cpu/cpu_attention.c). The indexer's causal top-k: cuda_topk.cu. */
#include "cuda/cuda_hc.cuh"
#include "cuda/cuda_kernels.h"
#include "cuda/cuda_attn.cuh"
#include "cuda/cuda_kvrow.cuh"
#include "cuda/cuda_ops.cuh"
#include "cuda/cuda_tc.cuh"

#include <cuda_bf16.h>

#define NT 256

/* ------------------------------------------------------------------ compressor */

#define CMP_THREADS 512 /* a compressor block (serial and windows kernels alike: see ds4k_compressor) */

/* Column of channel j in slot s: j, or width + j for the current window's
 * half with overlap. */
__device__ __forceinline__ int cmp_slot_col(int s, int j, int ratio, bool overlap, int width) {
    return overlap && s >= ratio ? width + j : j;
}
/* Channel j of a closing window: softmax over the candidate slots' scores
 * (column cmp_slot_col) weighting their kv values; 0 when no candidate has a
 * score. cand(s, col, &kv, &score) reads slot s. The serial and the chunk
 * kernels both pool here, in slot order, so their rows are bitwise the
 * same. */
template <typename Cand>
__device__ __forceinline__ float cmp_pool(int j, int ratio, bool overlap, int width, Cand cand) {
    const int slots = overlap ? 2 * ratio : ratio;
    float mx = -INFINITY;
    for (int s = 0; s < slots; s++) {
        float v, sc;
        cand(s, cmp_slot_col(s, j, ratio, overlap, width), &v, &sc);
        mx = fmaxf(mx, sc);
    }
    if (mx == -INFINITY) return 0.0f;
    float den = 0.0f, num = 0.0f;
    for (int s = 0; s < slots; s++) {
        float v, sc;
        cand(s, cmp_slot_col(s, j, ratio, overlap, width), &v, &sc);
        const float wgt = expf(sc - mx);
        den += wgt;
        num += wgt * v;
    }
    return num / den;
}

__global__ void compressor_kernel(float *st_kv, float *st_score, int ratio, bool overlap, int W, const float *kv,
                                  const float *gate, int ape_type, const void *ape, const float *norm, float rms_eps,
                                  int width, const double *freqs, int n_pairs, const int *d_pos, int n, bool fp8,
                                  bool fp4, void *rows, int fmt, const int32_t *skip) {
    pdl_enter();
    if (skip && *skip) return; /* a step that must leave the state as it is */
    extern __shared__ float row[];
    __shared__ float red[32], amax[64];
    const int64_t p0 = d_pos[0];
    for (int t = 0; t < n; t++) {
        const int64_t p = p0 + t;
        const int r = (int)(p % ratio);
        const int slot = overlap ? ratio + r : r;
        for (int c = threadIdx.x; c < W; c += blockDim.x) {
            st_kv[(int64_t)slot * W + c] = kv[(int64_t)t * W + c];
            st_score[(int64_t)slot * W + c] = gate[(int64_t)t * W + c] + dev_elem(ape_type, ape, (int64_t)r * W + c);
        }
        __syncthreads();
        if ((p + 1) % ratio != 0) continue;
        /* pool each channel over the window's candidates (slots in order) */
        for (int j = threadIdx.x; j < width; j += blockDim.x)
            row[j] = cmp_pool(j, ratio, overlap, width, [&](int s, int col, float *v, float *sc) {
                *v = st_kv[(int64_t)s * W + col];
                *sc = st_score[(int64_t)s * W + col];
            });
        __syncthreads();
        block_rmsnorm(row, width, norm, rms_eps, red);
        block_rope(row, width, n_pairs, freqs, p + 1 - ratio, false);
        if (fp8) block_fp8(row, width - 2 * n_pairs, amax);
        if (fp4) block_hadamard_fp4(row, width, amax);
        const int64_t w = (p + 1) / ratio - 1;
        const int nope = width - 2 * n_pairs;
        block_store_row((uint8_t *)rows + w * (int64_t)ds4_kvrow_bytes((ds4_row_fmt)fmt, width, nope), row, fmt, width,
                        nope);
        if (overlap) {
            __syncthreads();
            for (int64_t i = threadIdx.x; i < (int64_t)ratio * W; i += blockDim.x) {
                st_kv[i] = st_kv[(int64_t)ratio * W + i];
                st_score[i] = st_score[(int64_t)ratio * W + i];
            }
        }
        __syncthreads();
    }
}

/* Whole chunks (prefill): every window that closes inside the chunk is
 * pooled by its own block, reading its candidates from the chunk's
 * projections or, for positions before the chunk, from the carried state;
 * then one block rewrites the state as the serial kernel would leave it.
 * Each window does the serial kernel's arithmetic in the same order, so the
 * rows are bitwise the same. Candidate q of window u: chunk token q - p0, or
 * state slot (overlap ? ratio + r : r) for the window open at the chunk's
 * start, or slot r for the one before it (overlap). */
__device__ __forceinline__ void cmp_cand(int64_t q, int col, int64_t p0, int64_t w_open, int ratio, bool overlap, int W,
                                        const float *st_kv, const float *st_score, const float *kv, const float *gate,
                                        int ape_type, const void *ape, float *kvv, float *score) {
    const int r = (int)(((q % ratio) + ratio) % ratio); /* q < 0: the initial state's slots (window -1) */
    if (q >= p0) {
        const int64_t t = q - p0;
        *kvv = kv[t * W + col];
        *score = gate[t * W + col] + dev_elem(ape_type, ape, (int64_t)r * W + col);
    } else {
        const int slot = q / ratio == w_open ? (overlap ? ratio + r : r) : r;
        *kvv = st_kv[(int64_t)slot * W + col];
        *score = st_score[(int64_t)slot * W + col];
    }
}

/* Window u of a chunk starting at p0: the u-th window closing at or after
 * p0 (its closing position (w + 1) ratio - 1, inside the chunk when below
 * p0 + n). */
__device__ __forceinline__ int64_t cmp_window(int64_t p0, int ratio, int u) { return (p0 + ratio) / ratio - 1 + u; }
/* Slot s of window w: the previous window's token s (overlap) or this
 * window's token s - ratio; without overlap this window's token s. */
__device__ __forceinline__ int64_t cmp_slot_pos(int64_t w, int s, int ratio, bool overlap) {
    const bool cur = !overlap || s >= ratio;
    return cur ? w * ratio + (overlap ? s - ratio : s) : (w - 1) * ratio + s;
}

/* A wide window's pooling apart (ratio >= CMP_POOL_RATIO: an HCA layer's
 * 128 candidates). One block a window pooled each column through 2 x 128
 * dependent loads, ~150 us a prefill batch on 17 blocks. Here block (u, c)
 * stages CMP_COLS columns of window u's candidates in shared memory, the
 * loads of all its threads in flight (CMP_STAGE_BATCH a thread before any
 * store), then CMP_COLS threads pool them with cmp_pool's arithmetic in slot
 * order into `pooled`; compressor_windows_kernel finishes the rows from
 * there: bitwise the rows of the one-kernel path. */
#define CMP_POOL_RATIO 32
#define CMP_COLS 32
#define CMP_STAGE_BATCH 4
__global__ void compressor_pool_kernel(const float *st_kv, const float *st_score, int ratio, bool overlap, int W,
                                       const float *kv, const float *gate, int ape_type, const void *ape, int width,
                                       const int *d_pos, int n, float *pooled) {
    pdl_enter();
    extern __shared__ float stage[]; /* [slots][CMP_COLS] kv values, then scores */
    const int slots = overlap ? 2 * ratio : ratio, total = slots * CMP_COLS;
    float *sv = stage, *ss = stage + total;
    const int64_t p0 = d_pos[0], w_open = p0 / ratio;
    const int64_t w = cmp_window(p0, ratio, blockIdx.x);
    if ((w + 1) * ratio - 1 >= p0 + n) return;
    const int j0 = blockIdx.y * CMP_COLS;
    for (int i0 = threadIdx.x; i0 < total; i0 += CMP_STAGE_BATCH * blockDim.x) {
        float v[CMP_STAGE_BATCH], sc[CMP_STAGE_BATCH];
#pragma unroll
        for (int u = 0; u < CMP_STAGE_BATCH; u++) {
            const int i = i0 + u * blockDim.x, s = i / CMP_COLS, j = j0 + i % CMP_COLS;
            v[u] = sc[u] = 0.0f;
            if (i < total && j < width)
                cmp_cand(cmp_slot_pos(w, s, ratio, overlap), cmp_slot_col(s, j, ratio, overlap, width), p0, w_open,
                         ratio, overlap, W, st_kv, st_score, kv, gate, ape_type, ape, &v[u], &sc[u]);
        }
#pragma unroll
        for (int u = 0; u < CMP_STAGE_BATCH; u++) {
            const int i = i0 + u * blockDim.x;
            if (i < total) sv[i] = v[u], ss[i] = sc[u];
        }
    }
    __syncthreads();
    const int jj = threadIdx.x, j = j0 + jj;
    if (jj < CMP_COLS && j < width)
        pooled[(int64_t)blockIdx.x * width + j] = cmp_pool(j, ratio, overlap, width, [&](int s, int, float *v, float *sc) {
            *v = sv[s * CMP_COLS + jj];
            *sc = ss[s * CMP_COLS + jj];
        });
}

/* pooled: the rows pooled apart (compressor_pool_kernel), else here. */
__global__ void compressor_windows_kernel(const float *st_kv, const float *st_score, int ratio, bool overlap, int W,
                                          const float *kv, const float *gate, int ape_type, const void *ape,
                                          const float *norm, float rms_eps, int width, const double *freqs, int n_pairs,
                                          const int *d_pos, int n, bool fp8, bool fp4, void *rows, int fmt,
                                          const float *pooled, const int32_t *skip) {
    pdl_enter();
    if (skip && *skip) return; /* a chained step fed the stop token (compressor_kernel) */
    extern __shared__ float row[];
    __shared__ float red[32], amax[64];
    const int64_t p0 = d_pos[0], w_open = p0 / ratio;
    const int64_t w = cmp_window(p0, ratio, blockIdx.x);
    const int64_t p = (w + 1) * ratio - 1; /* its closing position */
    if (p >= p0 + n) return;
    for (int j = threadIdx.x; j < width; j += blockDim.x)
        row[j] = pooled ? pooled[(int64_t)blockIdx.x * width + j]
                        : cmp_pool(j, ratio, overlap, width, [&](int s, int col, float *v, float *sc) {
                              cmp_cand(cmp_slot_pos(w, s, ratio, overlap), col, p0, w_open, ratio, overlap, W, st_kv,
                                       st_score, kv, gate, ape_type, ape, v, sc);
                          });
    __syncthreads();
    block_rmsnorm(row, width, norm, rms_eps, red);
    block_rope(row, width, n_pairs, freqs, p + 1 - ratio, false);
    if (fp8) block_fp8(row, width - 2 * n_pairs, amax);
    if (fp4) block_hadamard_fp4(row, width, amax);
    const int nope = width - 2 * n_pairs;
    block_store_row((uint8_t *)rows + w * (int64_t)ds4_kvrow_bytes((ds4_row_fmt)fmt, width, nope), row, fmt, width, nope);
}

/* The state after the chunk, as the serial kernel leaves it: slot r (+ ratio
 * with overlap) holds the open window's token r, or, past the tokens it has
 * so far, the last closed window's token r (not yet overwritten); with
 * overlap, slots r also hold the last closed window (copied at its close).
 * The copies are written first: their sources may be the open window's old
 * slots. A slot whose token would come from its own old value is skipped. */
__global__ void compressor_state_kernel(float *st_kv, float *st_score, int ratio, bool overlap, int W, const float *kv,
                                        const float *gate, int ape_type, const void *ape, const int *d_pos, int n,
                                        const int32_t *skip) {
    pdl_enter();
    if (skip && *skip) return;
    const int64_t p0 = d_pos[0], w_open = p0 / ratio, pe = p0 + n, w_end = pe / ratio;
    /* with overlap one block (its copies before the open window's writes);
     * without, only the open window's slots, from the chunk or left as they
     * are: any number of blocks */
    const int64_t i0 = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, step = (int64_t)gridDim.x * blockDim.x;
    for (int part = overlap ? 0 : 1; part < 2; part++) {
        for (int64_t i = i0; i < (int64_t)ratio * W; i += step) {
            const int r = (int)(i / W), col = (int)(i % W);
            const int64_t q = part == 0 || r >= pe - w_end * ratio ? (w_end - 1) * ratio + r : w_end * ratio + r;
            if (q < 0) continue;
            const int slot = part == 0 || !overlap ? r : ratio + r;
            const int src_slot = q / ratio == w_open ? (overlap ? ratio + r : r) : r;
            if (q < p0 && src_slot == slot) continue; /* already there */
            float v, sc;
            cmp_cand(q, col, p0, w_open, ratio, overlap, W, st_kv, st_score, kv, gate, ape_type, ape, &v, &sc);
            st_kv[(int64_t)slot * W + col] = v;
            st_score[(int64_t)slot * W + col] = sc;
        }
        __syncthreads();
    }
}

/* The pooled rows of a wide compressor's windows: a grow-only device
 * buffer (prefill batches are never captured in a graph, so it may grow
 * here; the stream is drained first, as a launch before may still read it).
 * DS4_CMP_POOL=0: pooled inside the windows kernel (A/B timing). */
static float *g_pool;
static size_t g_pool_cap;
static int g_pool_on = -1;
static bool cmp_pool_on(void) {
    if (g_pool_on < 0) g_pool_on = env_switch_on("DS4_CMP_POOL");
    return g_pool_on;
}
extern "C" int ds4k_cmp_pool_enable(int on) {
    const int was = cmp_pool_on();
    g_pool_on = on;
    return was;
}
static bool pool_scratch(size_t floats, cudaStream_t s) {
    if (floats <= g_pool_cap) return true;
    cudaStreamSynchronize(s);
    cudaFree(g_pool);
    g_pool = NULL, g_pool_cap = 0;
    if (cudaMalloc(&g_pool, floats * sizeof(float)) != cudaSuccess) {
        cudaGetLastError();
        return false;
    }
    g_pool_cap = floats;
    return true;
}

extern "C" void ds4k_compressor(float *st_kv, float *st_score, int ratio, bool overlap, int W, const float *kv,
                                const float *gate, const ds4_dw *ape, const float *norm, float rms_eps, int width,
                                const double *freqs, int n_pairs, const int *d_pos, int n, bool fp8, bool fp4,
                                void *rows, int fmt, const int32_t *skip, float *pool, size_t pool_floats,
                                ds4_stream st) {
    if (n <= 0) return;
    cudaStream_t s = (cudaStream_t)st;
    /* both kernels normalize a row with block_rmsnorm, whose sum of squares
     * is taken in an order set by the block's width: the same width for
     * both, so their rows are bitwise the same (with 256 threads for the
     * windows, 512-wide rows differed from the serial kernel's in the last
     * bit for some inputs) */
    const int threads = CMP_THREADS;
    if (n <= 8) { /* decode: one block walks the tokens */
        launch_pdl(compressor_kernel, 1, threads, width * sizeof(float), s, st_kv, st_score, ratio, overlap, W, kv,
                   gate, ape->type, ape->ptr, norm, rms_eps, width, freqs, n_pairs, d_pos, n, fp8, fp4, rows, fmt,
                   skip);
        return;
    }
    /* windows closing in [p0, p0 + n): at most n / ratio + 1, whatever p0 */
    const int nw = n / ratio + 1;
    const float *pooled = NULL;
    const size_t pool_smem = 2 * (size_t)(overlap ? 2 * ratio : ratio) * CMP_COLS * sizeof(float);
    /* the caller's buffer, else the module's (never into a graph: it may
     * grow, and move, at a later batch) */
    float *pbuf = NULL;
    if (ratio >= CMP_POOL_RATIO && pool_smem <= 48 * 1024 && cmp_pool_on()) {
        cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
        const bool capturing = cudaStreamIsCapturing(s, &cap) == cudaSuccess && cap != cudaStreamCaptureStatusNone;
        pbuf = pool ? (pool_floats >= (size_t)nw * width ? pool : NULL)
                    : !capturing && pool_scratch((size_t)nw * width, s) ? g_pool : NULL;
    }
    if (pbuf) {
        launch_pdl(compressor_pool_kernel, dim3((unsigned)nw, (unsigned)((width + CMP_COLS - 1) / CMP_COLS)), 256,
                   pool_smem, s, st_kv, st_score, ratio, overlap, W, kv, gate, ape->type, ape->ptr, width, d_pos, n,
                   pbuf);
        pooled = pbuf;
    }
    launch_pdl(compressor_windows_kernel, nw, threads, width * sizeof(float), s, st_kv, st_score, ratio, overlap, W, kv,
               gate, ape->type, ape->ptr, norm, rms_eps, width, freqs, n_pairs, d_pos, n, fp8, fp4, rows, fmt, pooled,
               skip);
    const int state_blocks = overlap ? 1 : (int)(((int64_t)ratio * W + 511) / 512);
    launch_pdl(compressor_state_kernel, state_blocks, 512, 0, s, st_kv, st_score, ratio, overlap, W, kv, gate, ape->type,
               ape->ptr, d_pos, n, skip);
}

/* ------------------------------------------------------------------ indexer scores */

/* Indexer scores. A block takes IDX_ROWS key rows of one token (copied into
 * shared memory as floats with 16-byte loads) and the token's IH query
 * heads; lane r scores row r against the heads h = warp, warp + W, ..., IH/W
 * at a time so every key load serves that many dot products, and the block
 * adds the warps' weighted relu sums in warp order. W = 8 warps for batches
 * above 8 tokens (many blocks, and eight dot products a key load); W = 16
 * for decode-sized batches, whose few blocks (V/32 for a token) are each a
 * long dependent chain per warp: ncu on a 4k-context step showed 2 warps a
 * scheduler issuing every 8.6 cycles, 16 us for 33 blocks. A token's
 * arithmetic does not depend on its batch above 8 tokens, so prefill chunks
 * agree. (The kernel before read each key element per head with a warp
 * reduction per dot: 150 us a layer at a 4k context.) */
#define IDX_ROWS 32
#define IDX_WARPS_BATCH 8
#define IDX_WARPS_DECODE 16

static size_t idx_smem(int IH, int ID, int W) {
    return (size_t)(IH * ID + (IH + 3) / 4 * 4 + IDX_ROWS * (ID + 4) + W * IDX_ROWS) * sizeof(float);
}

template <int W, int F>
__global__ void __launch_bounds__(32 * W)
    indexer_scores_kernel(const float *q, const float *w, const void *keys, const int *d_pos, int IH, int ID,
                          int topk, float *S, int64_t lds, float scale) {
    constexpr int HB = 64 / W; /* heads a lane scores at a time: 64 a pass of the block */
    pdl_enter();
    extern __shared__ float sh[];
    const int t = blockIdx.x;
    const int64_t p = (int64_t)d_pos[0] + t;
    const int64_t V = (p + 1) / 4;
    if (V <= topk) return;
    const int64_t r0 = (int64_t)blockIdx.y * IDX_ROWS;
    if (r0 >= V) return;
    const int nrow = V - r0 < IDX_ROWS ? (int)(V - r0) : IDX_ROWS, ks = ID + 4;
    float *sq = sh, *sw = sq + IH * ID, *sk = sw + (IH + 3) / 4 * 4, *sred = sk + IDX_ROWS * ks; /* 16-byte aligned */
    const float *qt = q + (int64_t)t * IH * ID;
    /* the queries' loads in flight together */
    stage_rows<DS4_ROW_F32>(sq, IH * ID, 1, IH * ID, 0, [&](int) { return (const uint8_t *)qt; });
    for (int i = threadIdx.x; i < IH; i += blockDim.x) sw[i] = w[(int64_t)t * IH + i];
    const int64_t row_bytes = (int64_t)ds4_kvrow_bytes((ds4_row_fmt)F, ID, 0);
    stage_rows<F>(sk, ks, nrow, ID, 0, [&](int r) { return (const uint8_t *)keys + (r0 + r) * row_bytes; });
    __syncthreads();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float part = 0.0f;
    if (lane < nrow) {
        const float4 *kr = (const float4 *)(sk + lane * ks);
        for (int hb = warp; hb < IH; hb += W * HB) {
            float acc[HB];
#pragma unroll
            for (int j = 0; j < HB; j++) acc[j] = 0.0f;
#pragma unroll 4
            for (int i = 0; i < ID / 4; i++) {
                const float4 k = kr[i];
#pragma unroll
                for (int j = 0; j < HB; j++) {
                    const int h = hb + j * W;
                    if (h < IH) {
                        const float4 x = ((const float4 *)(sq + h * ID))[i];
                        acc[j] = fmaf(k.x, x.x, acc[j]);
                        acc[j] = fmaf(k.y, x.y, acc[j]);
                        acc[j] = fmaf(k.z, x.z, acc[j]);
                        acc[j] = fmaf(k.w, x.w, acc[j]);
                    }
                }
            }
#pragma unroll
            for (int j = 0; j < HB; j++) {
                const int h = hb + j * W;
                if (h < IH) part += sw[h] * (acc[j] > 0.0f ? acc[j] : 0.0f);
            }
        }
    }
    sred[warp * IDX_ROWS + lane] = part;
    __syncthreads();
    if (warp == 0 && lane < nrow) {
        float s = 0.0f;
        for (int k = 0; k < W; k++) s += sred[k * IDX_ROWS + lane];
        S[(int64_t)t * lds + r0 + lane] = s * scale;
    }
}

/* The scores of a prefill batch on the tensor cores, where the queries and
 * keys are FP4-simulated (e2m1 values times a power of two: at most three
 * significant bits, exact in bf16 over f32's whole range, so every q . k
 * term is exact and only the f32 sums' order differs from the kernel
 * above). The SIMT kernel did 2 x 8,192 flops a row and token at ~24 TFLOPS
 * (181 us for 512 tokens of a 4k-context layer). Block (t, y): token t's 64
 * heads in shared memory as bf16 (rows padded to 288 bytes: 8-byte loads
 * of a half-warp on distinct banks) and rows [y rb, (y + 1) rb) — all of
 * them in one block for a batch above 8 tokens (the queries staged once),
 * 128 a block for decode-sized batches, whose few tokens would otherwise
 * leave most of the GPU idle while each warp walks a long chain of row
 * tiles (the SIMT kernel's problem there too, see above); warp w the key
 * rows 16 w + 128 i .. of its block's rows:
 * A = 16 rows x 128 dims of the keys (f16 or FP4 codes converted, exact;
 * bf16 as they are), B = 8 heads
 * of q, mma.sync m16n8k16, each k16 step's order permuted so a thread's
 * values are 8 contiguous bytes (logical k 2 t4, + 1 and 2 t4 + 8, + 9 are
 * physical 4 t4 .. 4 t4 + 3, for A and B alike); relu times the head's
 * weight summed over the heads in a fixed order: deterministic, and a
 * token's scores do not depend on its batch. */
#define IDXC_H 64
#define IDXC_D 128
#define IDXC_WARPS 8
#define IDXC_QS (IDXC_D + 16)
__device__ __forceinline__ uint32_t bf16_pair(float a, float b) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
    return *(const uint32_t *)&v;
}
__device__ __forceinline__ uint32_t f16_pair_to_bf16(uint32_t u) {
    const float2 f = __half22float2(*(const __half2 *)&u);
    return bf16_pair(f.x, f.y);
}
/* Keys in format F (f16, bf16 or FP4: model/kv_format.h): elements
 * 4 t4 + 16 ks .. + 3 of a row as two bf16 pairs. FP4 codes come as 16
 * bits in x, the row's four exponents (ex, loaded once a row) beside. */
template <int F>
__device__ __forceinline__ uint2 idx_key_piece(const uint8_t *row, int ks, int t4) {
    if (F == DS4_ROW_FP4) return make_uint2(*(const uint16_t *)(row + 8 * ks + 2 * t4), 0u);
    return *(const uint2 *)(row + 2 * (16 * ks + 4 * t4));
}
template <int F>
__device__ __forceinline__ uint32_t idx_key_pair(uint2 p, uint32_t ex, int ks, int half) {
    if (F == DS4_ROW_BF16) return half ? p.y : p.x;
    if (F == DS4_ROW_F16) return f16_pair_to_bf16(half ? p.y : p.x);
    const float s = exp2i((int8_t)(ex >> (8 * (ks / 2)))); /* elements 16 ks ..: block ks / 2 of 32 */
    const uint32_t b = p.x >> (8 * half);
    return bf16_pair(e2m1_val(b & 15u) * s, e2m1_val((b >> 4) & 15u) * s);
}
template <int F>
__global__ void __launch_bounds__(32 * IDXC_WARPS)
    indexer_scores_tc_kernel(const float *q, const float *w, const uint8_t *keys, const int *d_pos, int topk, float *S,
                             int64_t lds, float scale, int64_t rb) {
    pdl_enter();
    __shared__ __align__(16) __nv_bfloat16 qs[IDXC_H * IDXC_QS];
    __shared__ float ws[IDXC_H];
    const int t = blockIdx.x;
    const int64_t p = (int64_t)d_pos[0] + t, V = (p + 1) / 4, rbeg = (int64_t)blockIdx.y * rb;
    if (V <= topk || rbeg >= V) return;
    const int64_t rend = rbeg + rb < V ? rbeg + rb : V;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t4 = lane & 3;
    /* Every load of the set-up at once, the first row tile's keys with them:
     * as a loop whose stores to shared memory the compiler cannot tell from
     * its loads, the queries came one L2 round trip after another, eight of
     * them on a decode step's path. */
    constexpr int QL = IDXC_H * IDXC_D / 4 / (32 * IDXC_WARPS); /* float4s of the queries a thread */
    static_assert(QL * 4 * 32 * IDXC_WARPS == IDXC_H * IDXC_D, "the queries split evenly over the threads");
    static_assert(32 * IDXC_WARPS >= IDXC_H, "a thread loads each head weight");
    const float4 *qt = (const float4 *)(q + (int64_t)t * IDXC_H * IDXC_D);
    float4 qv[QL];
#pragma unroll
    for (int j = 0; j < QL; j++) qv[j] = qt[threadIdx.x + j * 32 * IDXC_WARPS];
    const float wv = threadIdx.x < IDXC_H ? w[(int64_t)t * IDXC_H + threadIdx.x] : 0.0f;
    uint2 ua[IDXC_D / 16], ub[IDXC_D / 16]; /* key rows r0 + g and r0 + g + 8, this thread's pieces */
    uint32_t ea = 0, eb = 0;                 /* ... and their exponents (FP4) */
    auto fetch = [&](int64_t r0) {
        const int64_t ra = r0 + g < V ? r0 + g : V - 1, rc = r0 + g + 8 < V ? r0 + g + 8 : V - 1;
        const int64_t rbytes = (int64_t)ds4_kvrow_bytes((ds4_row_fmt)F, IDXC_D, 0);
        const uint8_t *ka = keys + ra * rbytes, *kb = keys + rc * rbytes;
#pragma unroll
        for (int ks = 0; ks < IDXC_D / 16; ks++) ua[ks] = idx_key_piece<F>(ka, ks, t4), ub[ks] = idx_key_piece<F>(kb, ks, t4);
        if (F == DS4_ROW_FP4) {
            ea = *(const uint32_t *)(ka + ds4_fp4_exps_at(IDXC_D));
            eb = *(const uint32_t *)(kb + ds4_fp4_exps_at(IDXC_D));
        }
    };
    int64_t r0 = rbeg + 16 * warp;
    if (r0 < rend) fetch(r0);
#pragma unroll
    for (int j = 0; j < QL; j++) {
        const int i = threadIdx.x + j * 32 * IDXC_WARPS, h = 4 * i / IDXC_D, d = 4 * i % IDXC_D;
        *(uint2 *)&qs[h * IDXC_QS + d] = make_uint2(bf16_pair(qv[j].x, qv[j].y), bf16_pair(qv[j].z, qv[j].w));
    }
    if (threadIdx.x < IDXC_H) ws[threadIdx.x] = wv;
    __syncthreads();
    for (; r0 < rend; r0 += 16 * IDXC_WARPS) {
        uint32_t a[IDXC_D / 16][4];
#pragma unroll
        for (int ks = 0; ks < IDXC_D / 16; ks++) {
            a[ks][0] = idx_key_pair<F>(ua[ks], ea, ks, 0);
            a[ks][1] = idx_key_pair<F>(ub[ks], eb, ks, 0);
            a[ks][2] = idx_key_pair<F>(ua[ks], ea, ks, 1);
            a[ks][3] = idx_key_pair<F>(ub[ks], eb, ks, 1);
        }
        if (r0 + 16 * IDXC_WARPS < rend) fetch(r0 + 16 * IDXC_WARPS); /* the next tile's keys on their way */
        float pa = 0.0f, pb = 0.0f; /* rows r0 + g and r0 + g + 8 */
#pragma unroll
        for (int nt = 0; nt < IDXC_H / 8; nt++) {
            float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            const __nv_bfloat16 *qh = qs + (8 * nt + g) * IDXC_QS + 4 * t4;
#pragma unroll
            for (int ks = 0; ks < IDXC_D / 16; ks++) {
                const uint2 b = *(const uint2 *)(qh + 16 * ks);
                mma16816_bf16(c, a[ks], b.x, b.y);
            }
            const int h = 8 * nt + 2 * t4; /* D register (row g or g + 8, head h or h + 1) */
            pa = fmaf(ws[h], c[0] > 0.0f ? c[0] : 0.0f, pa);
            pa = fmaf(ws[h + 1], c[1] > 0.0f ? c[1] : 0.0f, pa);
            pb = fmaf(ws[h], c[2] > 0.0f ? c[2] : 0.0f, pb);
            pb = fmaf(ws[h + 1], c[3] > 0.0f ? c[3] : 0.0f, pb);
        }
        pa += __shfl_xor_sync(0xffffffffu, pa, 1);
        pa += __shfl_xor_sync(0xffffffffu, pa, 2);
        pb += __shfl_xor_sync(0xffffffffu, pb, 1);
        pb += __shfl_xor_sync(0xffffffffu, pb, 2);
        if (t4 == 0) {
            if (r0 + g < rend) S[(int64_t)t * lds + r0 + g] = pa * scale;
            if (r0 + g + 8 < rend) S[(int64_t)t * lds + r0 + g + 8] = pb * scale;
        }
    }
}

static int g_idx_tc = -1; /* DS4_IDX_TC=0: scores on the SIMT kernels (A/B timing) */

template <int F>
static void indexer_scores_launch(const float *q, const float *w, const void *keys, bool tc, int n, const int *d_pos,
                                  int IH, int ID, int topk, int cap, float *S, int64_t lds, float scale,
                                  cudaStream_t st) {
    if constexpr (F != DS4_ROW_F32) /* f32 keys: never the tensor cores (ds4k_indexer_scores) */
        if (tc) {
            const int64_t tile = 16 * IDXC_WARPS, rb = n > 8 ? (cap + tile - 1) / tile * tile : tile;
            launch_pdl(indexer_scores_tc_kernel<F>, dim3(n, (unsigned)((cap + rb - 1) / rb)), 32 * IDXC_WARPS, 0, st, q,
                       w, (const uint8_t *)keys, d_pos, topk, S, lds, scale, rb);
            return;
        }
    const dim3 grid(n, (unsigned)((cap + IDX_ROWS - 1) / IDX_ROWS));
    const auto decode = indexer_scores_kernel<IDX_WARPS_DECODE, F>, batch = indexer_scores_kernel<IDX_WARPS_BATCH, F>;
    if (n <= 8)
        launch_pdl(decode, grid, 32 * IDX_WARPS_DECODE, idx_smem(IH, ID, IDX_WARPS_DECODE), st, q, w, keys, d_pos, IH,
                   ID, topk, S, lds, scale);
    else
        launch_pdl(batch, grid, 32 * IDX_WARPS_BATCH, idx_smem(IH, ID, IDX_WARPS_BATCH), st, q, w, keys, d_pos, IH, ID,
                   topk, S, lds, scale);
}

extern "C" void ds4k_indexer_scores(const float *q, const float *w, const void *keys, int fmt, bool fp4, int n,
                                    const int *d_pos, int IH, int ID, int topk, int cap, float *S, int64_t lds,
                                    ds4_stream st) {
    if (n <= 0 || cap <= 0) return;
    const float scale = (float)(1.0 / sqrt((double)ID * IH));
    if (g_idx_tc < 0) g_idx_tc = env_switch_on("DS4_IDX_TC");
    /* FP4-simulated queries and keys are exact in bf16, whether the keys
     * are kept as f16, bf16 or FP4 codes */
    const bool tc = g_idx_tc && fp4 && fmt != DS4_ROW_F32 && IH == IDXC_H && ID == IDXC_D && (uintptr_t)keys % 16 == 0;
    const cudaStream_t s = (cudaStream_t)st;
#define IDX_LAUNCH(F) indexer_scores_launch<F>(q, w, keys, tc, n, d_pos, IH, ID, topk, cap, S, lds, scale, s)
    switch (fmt) {
    case DS4_ROW_F32: IDX_LAUNCH(DS4_ROW_F32); break;
    case DS4_ROW_F16: IDX_LAUNCH(DS4_ROW_F16); break;
    case DS4_ROW_BF16: IDX_LAUNCH(DS4_ROW_BF16); break;
    default: IDX_LAUNCH(DS4_ROW_FP4); break;
    }
#undef IDX_LAUNCH
}

/* ------------------------------------------------------------------ attention */


/* One block per (token, group of HG heads): the heads of a group share every
 * K = V row (one shared KV head), so each row is read once for HG heads.
 * Warp j owns head j's softmax; the output loop reads each row once and
 * updates all HG heads. Every sum has a fixed order: deterministic. */
#define ATT_THREADS 256
#define ATT_MAX_HG 16 /* heads per block: each row read is shared by up to 16 heads */
/* F: the rows' format (ds4_row_fmt) as a template argument, as in the other
 * attention kernels: read through a runtime switch, the loads spilled 12
 * bytes (ptxas, sm_90a). */
template <int F>
__global__ void __launch_bounds__(ATT_THREADS) attention_kernel(
    const float *q, const int *d_pos, int H, int hd, float scale, const float *sinks, const void *ring, int raw_cap,
    int window, const void *comp, int ratio, bool csa, const int32_t *sel_all, const int *n_sel, int topk,
    const double *freqs, int n_pairs, float *o, int HG, int max_rows) {
    pdl_enter();
    extern __shared__ float sh[];
    const int t = blockIdx.x, h0 = blockIdx.y * HG;
    const int64_t p = (int64_t)d_pos[0] + t;
    int64_t lo;
    int n_raw;
    const int32_t *sel;
    const int nr = visible_rows(p, t, window, ratio, csa, sel_all, n_sel, topk, &lo, &n_raw, &sel);
    float *sq = sh, *so = sh + HG * hd, *sc = sh + 2 * HG * hd, *sden = sc + HG * max_rows;
    for (int i = threadIdx.x; i < HG * hd; i += blockDim.x) sq[i] = q[((int64_t)t * H + h0) * hd + i];
    __syncthreads();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    /* scores: a warp per row; the row is read once for all HG heads */
    const int per_lane = hd / 32; /* <= DS4K_MAX_HEAD_DIM / 32 */
    const int nope = hd - 2 * n_pairs;
    const size_t rbytes = ds4_kvrow_bytes((ds4_row_fmt)F, hd, nope);
    for (int r = warp; r < nr; r += nw) {
        const uint8_t *row = att_row(r, n_raw, lo, ring, raw_cap, comp, sel, rbytes);
        float rv[DS4K_MAX_HEAD_DIM / 32];
#pragma unroll
        for (int i = 0; i < DS4K_MAX_HEAD_DIM / 32; i++)
            rv[i] = i < per_lane ? kvrow_load(row, lane + 32 * i, F, hd, nope) : 0.0f;
        for (int j = 0; j < HG; j++) {
            float d = 0.0f;
#pragma unroll
            for (int i = 0; i < DS4K_MAX_HEAD_DIM / 32; i++)
                if (i < per_lane) d += sq[j * hd + lane + 32 * i] * rv[i];
            d = warp_sum(d);
            if (lane == 0) sc[j * max_rows + r] = d * scale;
        }
    }
    __syncthreads();
    /* softmax with the sink, warp j for head j */
    for (int j = warp; j < HG; j += nw) {
        float *s = sc + j * max_rows;
        const float sink = sinks[h0 + j];
        float m = sink;
        for (int r = lane; r < nr; r += 32) m = fmaxf(m, s[r]);
        m = warp_max(m);
        float den = 0.0f;
        for (int r = lane; r < nr; r += 32) {
            s[r] = expf(s[r] - m);
            den += s[r];
        }
        den = warp_sum(den) + expf(sink - m);
        if (lane == 0) sden[j] = 1.0f / den;
    }
    __syncthreads();
    /* output: each thread owns some dims for all HG heads */
    for (int dd = threadIdx.x; dd < hd; dd += blockDim.x) {
        float acc[ATT_MAX_HG];
#pragma unroll
        for (int j = 0; j < ATT_MAX_HG; j++) acc[j] = 0.0f;
        for (int r = 0; r < nr; r++) {
            const float v = kvrow_load(att_row(r, n_raw, lo, ring, raw_cap, comp, sel, rbytes), dd, F, hd, nope);
#pragma unroll
            for (int j = 0; j < ATT_MAX_HG; j++)
                if (j < HG) acc[j] += sc[j * max_rows + r] * v;
        }
#pragma unroll
        for (int j = 0; j < ATT_MAX_HG; j++)
            if (j < HG) so[j * hd + dd] = acc[j] * sden[j];
    }
    __syncthreads();
    for (int j = 0; j < HG; j++) block_rope(so + j * hd, hd, n_pairs, freqs, p, true);
    for (int i = threadIdx.x; i < HG * hd; i += blockDim.x) o[((int64_t)t * H + h0) * hd + i] = so[i];
}

/* Decode-size batches (flash-decoding): each token's rows are split into
 * chunks of ATT_SPLIT rows so the whole GPU works on one token. A block
 * takes one chunk for ATT_SPLIT_HG heads, which share every K = V row (one
 * KV head): the chunk is copied once into shared memory as floats with
 * 16-byte loads; lane r scores row r for every head of the block, each warp
 * over its share of the dims (four running sums a head, added in a fixed
 * order, then the warps' shares in warp order); warp j makes the chunk's
 * softmax in registers, and each thread accumulates two output dims for all
 * heads.
 * Per head it writes the chunk's max, its sum of exp and its unnormalized
 * output; the combine kernel merges the chunks in index order
 * (deterministic). Few heads a block and the dims split over warps keep
 * each warp's chain of dependent shared loads short: a block's time is
 * latency, not arithmetic. (The first decode kernel read each row with
 * 2-byte loads and waited on one global load per row in its output loop:
 * ~80 us a layer; 8 heads a block with whole dots per warp: 15 us.) The
 * tensor-core kernel was tried for this split and lost: its per-block set-up
 * (Q in f16 hi + lo) is paid for only 32 rows. */
#define ATT_SPLIT 32
#define ATT_SPLIT_WARPS 8
#define ATT_SPLIT_HG 4 /* heads a block (fewer when H is not a multiple) */
#define ATT_Q_VEC (ATT_SPLIT_HG * DS4K_MAX_HEAD_DIM / 4 / (32 * ATT_SPLIT_WARPS))

/* The chunk's rows, the heads' queries (then the warps' partial dots, in
 * the same place once the queries are read), the chunk's weights. At
 * hd = 512: 74,752 bytes, three blocks a multiprocessor with the static
 * 256 and the 1 KB a block the GPU reserves (228 KB); the partial dots as
 * a static array of their own (4 KB) leave room for two, and a ratio-4
 * layer's 320 blocks take two waves (its split 12.3 us against 10.1 in a
 * full-size trace). */
#define ATT_SPLIT_DOTS (ATT_SPLIT_WARPS * ATT_SPLIT_HG * ATT_SPLIT)
__host__ __device__ __forceinline__ int att_split_qd(int hd) { /* floats of the queries' (then dots') place */
    return ATT_SPLIT_HG * hd > ATT_SPLIT_DOTS ? ATT_SPLIT_HG * hd : ATT_SPLIT_DOTS;
}
static size_t att_split_smem(int hd) {
    return (size_t)(ATT_SPLIT * (hd + 4) + att_split_qd(hd) + ATT_SPLIT * ATT_SPLIT_HG) * sizeof(float);
}

/* HCS (ds4k_attention's hc): the launch has one more plane of chunks, z ==
 * n_chunks, whose block (0, 0) makes a token's HC split on one thread
 * beside the attention (hc_split_thread) and whose other blocks return:
 * the attention sub-layer's post and M, for ds4k_hc_post_collapse at its
 * end, where its prologue's Sinkhorn stood on the critical path. The plain
 * instantiation's code is the kernel's without it. */
template <bool HCS, int F>
__global__ void __launch_bounds__(32 * ATT_SPLIT_WARPS, F == DS4_ROW_FP8 ? 3 : 1) attention_split_kernel(
    const float *q, const int *d_pos, int H, int hd, int hg, float scale, const void *ring, int raw_cap, int window,
    const void *comp, int ratio, bool csa, const int32_t *sel_all, const int *n_sel, int topk, int nope, float *part,
    int n_chunks, ds4k_hc_split hcs) {
    pdl_enter();
    if (HCS && (int)blockIdx.z == n_chunks) {
        if (blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x == 0)
            hc_split_thread(hcs);
        return;
    }
    extern __shared__ float sh[];
    const int ks = hd + 4; /* row stride: lanes' 16-byte reads of different rows hit different banks */
    float *Ks = sh, *Qs = sh + ATT_SPLIT * ks, *Ps = Qs + att_split_qd(hd);
    float(*sdot)[ATT_SPLIT_HG][ATT_SPLIT] = (float(*)[ATT_SPLIT_HG][ATT_SPLIT])Qs; /* after the queries' last read */
    const int t = blockIdx.x, h0 = blockIdx.y * hg, ch = blockIdx.z;
    const int64_t p = (int64_t)d_pos[0] + t;
    int64_t lo;
    int n_raw;
    const int32_t *sel;
    const int nr = visible_rows(p, t, window, ratio, csa, sel_all, n_sel, topk, &lo, &n_raw, &sel);
    const int r0 = ch * ATT_SPLIT, nrow = nr - r0 < ATT_SPLIT ? nr - r0 : ATT_SPLIT;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float m = -INFINITY, l = 0.0f;
    const int64_t head_stride = (int64_t)n_chunks * (hd + 2);
    float *pp = part + ((int64_t)(t * H + h0) * n_chunks + ch) * (hd + 2);
    if (nrow <= 0) {
        if (threadIdx.x < hg) pp[threadIdx.x * head_stride + hd] = -INFINITY, pp[threadIdx.x * head_stride + hd + 1] = 0.0f;
        return;
    }
    /* the query heads' loads go out first, beside the rows' addresses, and
     * are stored after the rows' loads (ATT_Q_VEC 16-byte vectors a thread
     * cover ATT_SPLIT_HG heads of DS4K_MAX_HEAD_DIM with 256 threads) */
    const float4 *q4 = (const float4 *)(q + ((int64_t)t * H + h0) * hd);
    const int nq4 = hg * hd / 4;
    float4 qv[ATT_Q_VEC];
#pragma unroll
    for (int i = 0; i < ATT_Q_VEC; i++) {
        const int v = threadIdx.x + i * (int)blockDim.x;
        qv[i] = v < nq4 ? q4[v] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
    __shared__ const uint8_t *rowp[ATT_SPLIT]; /* each row's address, found once */
    if (threadIdx.x < nrow)
        rowp[threadIdx.x] = att_row(r0 + threadIdx.x, n_raw, lo, ring, raw_cap, comp, sel,
                                    ds4_kvrow_bytes((ds4_row_fmt)F, hd, nope));
    __syncthreads();
    stage_rows<F>(Ks, ks, nrow, hd, nope, [&](int r) { return rowp[r]; });
#pragma unroll
    for (int i = 0; i < ATT_Q_VEC; i++) {
        const int v = threadIdx.x + i * (int)blockDim.x;
        if (v < nq4) ((float4 *)Qs)[v] = qv[i];
    }
    for (int v = threadIdx.x + ATT_Q_VEC * (int)blockDim.x; v < nq4; v += blockDim.x) ((float4 *)Qs)[v] = q4[v];
    __syncthreads();
    {
        /* warp w takes the float4s [v0, v1) of every row for all hg heads, so
         * a K vector is read from shared memory once, not once a head (with a
         * warp for half a head's dims, the QK of a block took 2,560 shared
         * wavefronts at hd = 512; 1,024 now) */
        const int nv = hd / 4, v0 = warp * nv / ATT_SPLIT_WARPS, v1 = (warp + 1) * nv / ATT_SPLIT_WARPS;
        float acc[ATT_SPLIT_HG][4];
#pragma unroll
        for (int j = 0; j < ATT_SPLIT_HG; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
        if (lane < nrow) {
            const float4 *kr = (const float4 *)(Ks + lane * ks);
#pragma unroll 4
            for (int i = v0; i < v1; i++) {
                const float4 k = kr[i];
#pragma unroll
                for (int j = 0; j < ATT_SPLIT_HG; j++) {
                    if (j >= hg) break; /* block-uniform */
                    const float4 x = ((const float4 *)(Qs + j * hd))[i];
                    acc[j][0] = fmaf(k.x, x.x, acc[j][0]);
                    acc[j][1] = fmaf(k.y, x.y, acc[j][1]);
                    acc[j][2] = fmaf(k.z, x.z, acc[j][2]);
                    acc[j][3] = fmaf(k.w, x.w, acc[j][3]);
                }
            }
        }
        __syncthreads(); /* every warp is done with Qs */
#pragma unroll
        for (int j = 0; j < ATT_SPLIT_HG; j++) sdot[warp][j][lane] = (acc[j][0] + acc[j][1]) + (acc[j][2] + acc[j][3]);
        __syncthreads();
        float s = -INFINITY;
        if (warp < hg && lane < nrow) {
            float d = 0.0f;
#pragma unroll
            for (int w = 0; w < ATT_SPLIT_WARPS; w++) d += sdot[w][warp][lane];
            s = d * scale;
        }
        m = warp_max(s);
        const float e = s == -INFINITY ? 0.0f : expf(s - m);
        l = warp_sum(e);
        if (warp < ATT_SPLIT_HG) Ps[lane * ATT_SPLIT_HG + warp] = e; /* heads past hg weigh 0 */
    }
    __syncthreads();
    for (int c2 = threadIdx.x; c2 < hd / 2; c2 += blockDim.x) {
        float2 acc[ATT_SPLIT_HG];
#pragma unroll
        for (int j = 0; j < ATT_SPLIT_HG; j++) acc[j] = make_float2(0.0f, 0.0f);
#pragma unroll 4
        for (int r = 0; r < nrow; r++) {
            const float2 v = *(const float2 *)(Ks + r * ks + 2 * c2);
            const float4 pa = *(const float4 *)(Ps + r * ATT_SPLIT_HG);
            const float w[ATT_SPLIT_HG] = {pa.x, pa.y, pa.z, pa.w};
#pragma unroll
            for (int j = 0; j < ATT_SPLIT_HG; j++) {
                acc[j].x = fmaf(w[j], v.x, acc[j].x);
                acc[j].y = fmaf(w[j], v.y, acc[j].y);
            }
        }
#pragma unroll
        for (int j = 0; j < ATT_SPLIT_HG; j++)
            if (j < hg) *(float2 *)(pp + j * head_stride + 2 * c2) = acc[j];
    }
    if (warp < hg && lane == 0) pp[warp * head_stride + hd] = m, pp[warp * head_stride + hd + 1] = l;
}

/* Merges a (token, head)'s chunks: the chunks' weights exp(m_c - M) and the
 * denominator (sink included) are made once in shared memory with fixed
 * reduction trees, then each thread adds two dims over the chunks in index
 * order; the output is un-rotated at the query position. */
#define COMB_BATCH 8
__global__ void attention_combine_kernel(const int *d_pos, int H, int hd, const float *sinks, const float *part,
                                         int n_chunks, const double *freqs, int n_pairs, float *o) {
    pdl_enter();
    extern __shared__ float wc[]; /* n_chunks weights */
    __shared__ float so[DS4K_MAX_HEAD_DIM], red[32];
    const int t = blockIdx.x, h = blockIdx.y;
    const int64_t p = (int64_t)d_pos[0] + t;
    const float *pp = part + ((int64_t)t * H + h) * n_chunks * (hd + 2);
    float mx = sinks[h];
    for (int c = threadIdx.x; c < n_chunks; c += blockDim.x) mx = fmaxf(mx, pp[c * (hd + 2) + hd]);
    const float M = block_max(mx, red);
    float den = 0.0f;
    for (int c = threadIdx.x; c < n_chunks; c += blockDim.x) {
        const float mc = pp[c * (hd + 2) + hd], lc = pp[c * (hd + 2) + hd + 1]; /* together, not one after the other */
        const float w = mc == -INFINITY ? 0.0f : expf(mc - M);
        wc[c] = w;
        den += w * lc;
    }
    den = block_sum(den, red) + expf(sinks[h] - M);
    __syncthreads();
    for (int c2 = threadIdx.x; c2 < hd / 2; c2 += blockDim.x) {
        float2 acc = make_float2(0.0f, 0.0f);
        /* COMB_BATCH chunks' values loaded before any is added (a load
         * behind each chunk's test went out one round trip at a time, 20 of
         * them at a 64k context); an empty chunk (it wrote no output) is
         * neither read nor added — reading it anyway cost 1.5% of a decode
         * step (docs/bench/history-3.md, "sixteenth") */
        for (int c0 = 0; c0 < n_chunks; c0 += COMB_BATCH) {
            float2 v[COMB_BATCH];
#pragma unroll
            for (int i = 0; i < COMB_BATCH; i++)
                v[i] = c0 + i < n_chunks && wc[c0 + i] != 0.0f
                           ? *(const float2 *)(pp + (int64_t)(c0 + i) * (hd + 2) + 2 * c2)
                           : make_float2(0.0f, 0.0f);
#pragma unroll
            for (int i = 0; i < COMB_BATCH; i++) {
                const float w = c0 + i < n_chunks ? wc[c0 + i] : 0.0f;
                if (w == 0.0f) continue;
                acc.x = fmaf(w, v[i].x, acc.x);
                acc.y = fmaf(w, v[i].y, acc.y);
            }
        }
        so[2 * c2] = acc.x / den;
        so[2 * c2 + 1] = acc.y / den;
    }
    __syncthreads();
    block_rope(so, hd, n_pairs, freqs, p, true);
    for (int i = threadIdx.x; i < hd; i += blockDim.x) o[((int64_t)t * H + h) * hd + i] = so[i];
}

/* The same merge for at most 32 chunks (a decode step's attention up to
 * ~1,000 rows: a CSA layer's window and 512 selected rows, an HCA layer's up
 * to a ~110k context) without shared memory or block barriers: lane c of
 * every warp holds chunk c's maximum and sum, each warp forms the maximum,
 * the weights and the denominator with shuffles, and each thread merges one
 * pair of dims over the chunks and un-rotates it itself. The kernel above
 * waits on three global round trips (the maxima, the weights' terms, the
 * values behind the weights in shared memory) and five barriers; this one
 * on one (maxima, sums and values at once) and none. Bitwise the kernel
 * above: with every chunk in lanes 0..31 of warp 0 there, its block-wide
 * trees reduce to one warp butterfly over those lanes plus exact additions
 * of zeros, the maximum is exact in any order, and the chunks are added in
 * index order with the same skips and the same rope_pair. 12-layer model,
 * H200: decode +0.7% and +0.6% at 2k (two device calls), +0.3% at 64k; the
 * merge ends ~0.5 us sooner after the split. Full size, H200: +1.0 to +1.2%
 * from 4k to 64k, -0.6% at 2k (docs/bench/history-3.md, "nineteenth"). */
#define COMB_WARP_CHUNKS 32
__global__ void __launch_bounds__(DS4K_MAX_HEAD_DIM / 2)
    attention_combine_warp_kernel(const int *d_pos, int H, int hd, const float *sinks, const float *part, int n_chunks,
                                  const double *freqs, int n_pairs, float *o) {
    pdl_enter();
    const int t = blockIdx.x, h = blockIdx.y, lane = threadIdx.x & 31, c2 = threadIdx.x; /* dims 2 c2, 2 c2 + 1 */
    const float *pp = part + ((int64_t)t * H + h) * n_chunks * (hd + 2);
    const bool has = lane < n_chunks;
    const float mc = has ? pp[lane * (hd + 2) + hd] : -INFINITY, lc = has ? pp[lane * (hd + 2) + hd + 1] : 0.0f;
    const float sink = sinks[h];
    /* every chunk's values on their way with the maxima and sums: one round
     * trip, not two. An empty chunk's place holds no output of this step
     * (zeros or an older step's numbers, never NaN from uninitialized
     * memory: the session clears it) and is read but never added: its
     * weight is 0. Loaded behind the weights, only the chunks that weigh,
     * the merge ended ~0.9 us later (full size, H200: decode +0.4% at 2k,
     * +0.5% at 64k; docs/BENCHMARKS.md, forty-sixth session). */
    float2 v[COMB_WARP_CHUNKS];
#pragma unroll
    for (int c = 0; c < COMB_WARP_CHUNKS; c++)
        v[c] = c < n_chunks ? *(const float2 *)(pp + (int64_t)c * (hd + 2) + 2 * c2) : make_float2(0.0f, 0.0f);
    /* the un-rotation's angle, while the loads above are in flight */
    const int k = c2 - (hd / 2 - n_pairs);
    float rc = 1.0f, rs = 0.0f;
    if (k >= 0) {
        dev_rope_cs((int64_t)d_pos[0] + t, freqs[k], &rc, &rs);
        rs = -rs;
    }
    const float M = warp_max(fmaxf(sink, mc));
    const float w = mc == -INFINITY ? 0.0f : expf(mc - M);
    float den = 0.0f;
    if (has) den += w * lc;
    den = warp_sum(den) + expf(sink - M);
    float wv[COMB_WARP_CHUNKS];
#pragma unroll
    for (int c = 0; c < COMB_WARP_CHUNKS; c++) wv[c] = __shfl_sync(0xffffffffu, w, c);
    float2 acc = make_float2(0.0f, 0.0f);
#pragma unroll
    for (int c = 0; c < COMB_WARP_CHUNKS; c++) {
        if (c >= n_chunks || wv[c] == 0.0f) continue;
        acc.x = fmaf(wv[c], v[c].x, acc.x);
        acc.y = fmaf(wv[c], v[c].y, acc.y);
    }
    float r[2] = {acc.x / den, acc.y / den};
    if (k >= 0) rope_pair(r, rc, rs);
    *(float2 *)(o + ((int64_t)t * H + h) * hd + 2 * c2) = make_float2(r[0], r[1]);
}

/* DS4_COMB_WARP=0 / ds4k_attention_combine_warp(0): always the block merge
 * (A/B timing, tests) */
static int g_comb_warp = -1;
extern "C" int ds4k_attention_combine_warp(int on) {
    if (g_comb_warp < 0) g_comb_warp = env_switch_on("DS4_COMB_WARP");
    const int was = g_comb_warp;
    if (on >= 0) g_comb_warp = on;
    return was;
}

extern "C" size_t ds4k_attention_part_floats(int H, int hd, int max_rows) {
    return (size_t)8 * H * ((max_rows + ATT_SPLIT - 1) / ATT_SPLIT) * (hd + 2);
}

/* Heads per attention block: as many as fit (at most ATT_MAX_HG) in ~200 KiB. */
static int att_group(int H, int hd, int max_rows, size_t *smem) {
    for (int hg = ATT_MAX_HG; hg >= 1; hg /= 2) {
        if (H % hg) continue;
        /* queries, outputs, scores, one 1/denominator a head */
        const size_t b = (size_t)(2 * hg * hd + hg * max_rows + hg) * sizeof(float);
        if (b <= 200 * 1024 || hg == 1) {
            *smem = b;
            return hg;
        }
    }
    *smem = 0;
    return 1;
}

/* The whole-row kernel for rows of format fmt. */
typedef void (*att_simt_fn)(const float *, const int *, int, int, float, const float *, const void *, int, int,
                            const void *, int, bool, const int32_t *, const int *, int, const double *, int, float *, int,
                            int);
static att_simt_fn att_simt_for(int fmt) {
    switch (fmt) {
    case DS4_ROW_F32: return attention_kernel<DS4_ROW_F32>;
    case DS4_ROW_BF16: return attention_kernel<DS4_ROW_BF16>;
    case DS4_ROW_FP8: return attention_kernel<DS4_ROW_FP8>;
    default: return attention_kernel<DS4_ROW_F16>;
    }
}

/* The split kernel for rows of format fmt, with or without the HC split. */
typedef void (*att_split_fn)(const float *, const int *, int, int, int, float, const void *, int, int, const void *, int,
                             bool, const int32_t *, const int *, int, int, float *, int, ds4k_hc_split);
static att_split_fn att_split_for(int fmt, bool hcs) {
#define ATT_SPLIT_PICK(F) (hcs ? attention_split_kernel<true, F> : attention_split_kernel<false, F>)
    switch (fmt) {
    case DS4_ROW_F32: return ATT_SPLIT_PICK(DS4_ROW_F32);
    case DS4_ROW_BF16: return ATT_SPLIT_PICK(DS4_ROW_BF16);
    case DS4_ROW_FP8: return ATT_SPLIT_PICK(DS4_ROW_FP8);
    default: return ATT_SPLIT_PICK(DS4_ROW_F16);
    }
#undef ATT_SPLIT_PICK
}

extern "C" int ds4k_attention(const float *q, int n, const int *d_pos, int H, int hd, float scale, const float *sinks,
                              const void *ring, int raw_cap, int window, const void *comp, int ratio, bool csa,
                              const int32_t *sel, const int *n_sel, int topk, int fmt, const double *freqs,
                              int n_pairs, float *o, int max_rows, float *part, const ds4k_hc_split *hc,
                              ds4_stream st) {
    if (n <= 0) return 0;
    if (part && n <= 8) {
        int hg = ATT_SPLIT_HG;
        while (H % hg) hg /= 2;
        const int n_chunks = (max_rows + ATT_SPLIT - 1) / ATT_SPLIT;
        const bool hcs = hc && n == 1;
        const ds4k_hc_split none = {};
        launch_pdl(att_split_for(fmt, hcs), dim3(n, H / hg, n_chunks + (hcs ? 1 : 0)), 32 * ATT_SPLIT_WARPS,
                   att_split_smem(hd), (cudaStream_t)st, q, d_pos, H, hd, hg, scale, ring, raw_cap, window, comp, ratio,
                   csa, sel, n_sel, topk, hd - 2 * n_pairs, part, n_chunks, hcs ? *hc : none);
        if (ds4k_attention_combine_warp(-1) && n_chunks <= COMB_WARP_CHUNKS && hd % 64 == 0 &&
            hd <= DS4K_MAX_HEAD_DIM && 2 * n_pairs <= hd) {
            launch_pdl(attention_combine_warp_kernel, dim3(n, H), hd / 2, 0, (cudaStream_t)st, d_pos, H, hd, sinks, part,
                       n_chunks, freqs, n_pairs, o);
            return hcs;
        }
        /* the chunk weights' array rounded up to whole 16-byte words: the
         * compiler reads its tail with one 16-byte load */
        launch_pdl(attention_combine_kernel, dim3(n, H), 256, sizeof(float) * ((n_chunks + 3) & ~3), (cudaStream_t)st,
                   d_pos, H, hd, sinks, part, n_chunks, freqs, n_pairs, o);
        return hcs;
    }
    if (attention_mma(q, n, d_pos, H, hd, scale, sinks, ring, raw_cap, window, comp, ratio, csa, sel, n_sel, topk, fmt,
                      freqs, n_pairs, o, (cudaStream_t)st))
        return 0;
    size_t smem;
    const int hg = att_group(H, hd, max_rows, &smem);
    launch_pdl(att_simt_for(fmt), dim3(n, H / hg), ATT_THREADS, smem, (cudaStream_t)st, q, d_pos, H, hd, scale, sinks,
               ring, raw_cap, window, comp, ratio, csa, sel, n_sel, topk, freqs, n_pairs, o, hg, max_rows);
    return 0;
}

/* 0 when the indexer kernels for keys of format F may take sc bytes. */
template <int F> static int idx_allow(int sc) {
    return cudaFuncSetAttribute(indexer_scores_kernel<IDX_WARPS_BATCH, F>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                sc) != cudaSuccess ||
           cudaFuncSetAttribute(indexer_scores_kernel<IDX_WARPS_DECODE, F>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                sc) != cudaSuccess;
}

/* Shared memory above 48 KB must be allowed per kernel before launches (and
 * before a graph capture): attention keeps a score per visible row, the
 * split attention a chunk of rows, the indexer the query heads and a chunk
 * of keys. */
extern "C" int ds4k_prepare(int H, int hd, int max_rows, int IH, int ID) {
    /* any layer's row count <= max_rows: its head group takes at most the
     * 200 KiB budget of att_group, or one head's need at max_rows */
    size_t att;
    att_group(H, hd, max_rows, &att);
    if (att < 200 * 1024) att = 200 * 1024;
    const size_t sc = idx_smem(IH, ID, IDX_WARPS_DECODE), split = att_split_smem(hd); /* the larger of the two */
    const int fmts[4] = {DS4_ROW_F32, DS4_ROW_F16, DS4_ROW_BF16, DS4_ROW_FP8};
    for (int i = 0; att > 48 * 1024 && i < 4; i++)
        if (cudaFuncSetAttribute(att_simt_for(fmts[i]), cudaFuncAttributeMaxDynamicSharedMemorySize, (int)att) !=
            cudaSuccess)
            return -1;
    if (sc > 48 * 1024 && (idx_allow<DS4_ROW_F32>((int)sc) || idx_allow<DS4_ROW_F16>((int)sc) ||
                           idx_allow<DS4_ROW_BF16>((int)sc) || idx_allow<DS4_ROW_FP4>((int)sc)))
        return -1;
    if (ds4k_topk_prepare() != 0) return -1;
    for (int i = 0; split > 48 * 1024 && i < 8; i++)
        if (cudaFuncSetAttribute(att_split_for(fmts[i / 2], i & 1), cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 (int)split) != cudaSuccess)
            return -1;
    return 0;
}
