/* ds4 — CUDA kernels for norms, the embedding, the greedy pick, RoPE'd KV
 * rows and queries, router and SwiGLU (twins: src/cpu/ops.c, cpu_backend.c,
 * cpu_attention.c, cpu_ffn.c; the pick's is ds4_sampler_argmax_except in
 * src/text/sampler.c). The hyper-connection kernels are in cuda_hc.cu. */
#include "cuda/cuda_kernels.h"
#include "cuda/cuda_kvrow.cuh"
#include "cuda/cuda_ops.cuh"
#include "cuda/cuda_quant.cuh"

extern "C" int ds4k_ops_init(void) { return quant_tables_upload(); }

#define NT 256


/* ------------------------------------------------------------------ norms, embedding */

__global__ void rmsnorm_kernel(const float *X, int64_t ldx, const float *w, int len, float eps, float *Y, int64_t ldy) {
    pdl_enter();
    __shared__ float red[32];
    const float *x = X + (int64_t)blockIdx.x * ldx;
    float *y = Y + (int64_t)blockIdx.x * ldy;
    const float inv = block_inv_rms(x, len, eps, red);
    for (int i = threadIdx.x; i < len; i += blockDim.x) y[i] = w ? x[i] * inv * w[i] : x[i] * inv;
}

extern "C" void ds4k_rmsnorm(const float *X, int64_t ldx, const float *w, int n, int len, float eps, float *Y,
                             int64_t ldy, ds4_stream st) {
    if (n > 0) launch_pdl(rmsnorm_kernel, n, row_threads(len), 0, (cudaStream_t)st, X, ldx, w, len, eps, Y, ldy);
}

/* Block (t, y): token t's elements [y NT, (y + 1) NT), one a thread. With
 * one block a token each thread walked D / NT elements whose loads the
 * stores between them kept apart (they may alias): a decode step's first
 * kernel took 9.5 us in a full-size trace for 16 KB. */
__global__ void embed_kernel(int type, const void *emb, const int32_t *tok, int hc, int D, float *H) {
    pdl_enter();
    const int t = blockIdx.x, d = blockIdx.y * blockDim.x + threadIdx.x;
    if (d >= D) return;
    float *h = H + (int64_t)t * hc * D;
    const float v = dev_elem(type, emb, (int64_t)tok[t] * D + d);
    for (int s = 0; s < hc; s++) h[(int64_t)s * D + d] = v;
}

extern "C" void ds4k_embed(const ds4_dw *emb, const int32_t *tok, int n, int hc, int D, float *H, ds4_stream st) {
    if (n > 0)
        launch_pdl(embed_kernel, dim3(n, (D + NT - 1) / NT), NT, 0, (cudaStream_t)st, emb->type, emb->ptr, tok, hc, D,
                   H);
}

/* ------------------------------------------------------------------ greedy pick (chained decoding) */

#define PICK_THREADS 256
static_assert(DS4K_PICK_BLOCKS <= PICK_THREADS, "the last block reduces one partial a thread");

/* (v, i) beats the best so far (bv, bi; bi < 0: none yet): larger, or equal
 * and earlier. Candidates are never NaN, so this is a total order and any
 * reduction order gives the first index of the maximum, as the host's
 * ds4_sampler_argmax_except does (== treats -0 and +0 alike there too). */
__device__ __forceinline__ bool pick_beats(float v, int i, float bv, int bi) {
    return i >= 0 && (bi < 0 || v > bv || (v == bv && i < bi));
}

/* The block's best (bv, bi) into thread 0's. */
__device__ __forceinline__ void pick_block_best(float *bv, int *bi, float *sv, int *si) {
    for (int o = DS4_WARP / 2; o > 0; o /= 2) {
        const float ov = __shfl_xor_sync(0xffffffffu, *bv, o);
        const int oi = __shfl_xor_sync(0xffffffffu, *bi, o);
        if (pick_beats(ov, oi, *bv, *bi)) *bv = ov, *bi = oi;
    }
    const int warp = threadIdx.x / DS4_WARP, lane = threadIdx.x % DS4_WARP;
    if (lane == 0) sv[warp] = *bv, si[warp] = *bi;
    __syncthreads();
    if (threadIdx.x == 0)
        for (int w = 1; w < (int)blockDim.x / DS4_WARP; w++)
            if (pick_beats(sv[w], si[w], *bv, *bi)) *bv = sv[w], *bi = si[w];
}

/* Each block finds the best of its stretch; the last block to finish
 * combines the blocks' results and writes the pick. */
__global__ void __launch_bounds__(PICK_THREADS)
    pick_kernel(const float *logits, int n, ds4k_pick_ctl *ctl, int32_t *tok, int *pos, volatile int32_t *host_ring,
                float *keep) {
    pdl_enter();
    __shared__ float sv[PICK_THREADS / DS4_WARP];
    __shared__ int si[PICK_THREADS / DS4_WARP];
    __shared__ bool last, dead;
    const int exclude = ctl->exclude;
    const int per = (n + gridDim.x - 1) / gridDim.x, a = blockIdx.x * per, b = min(n, a + per);
    float bv = -INFINITY;
    int bi = -1;
    for (int i = a + threadIdx.x; i < b; i += blockDim.x) {
        const float v = logits[i];
        if (i != exclude && !isnan(v) && pick_beats(v, i, bv, bi)) bv = v, bi = i;
    }
    pick_block_best(&bv, &bi, sv, si);
    if (threadIdx.x == 0) {
        ctl->part_v[blockIdx.x] = bv;
        ctl->part_i[blockIdx.x] = bi;
        __threadfence(); /* the partial is visible before the count says so */
        last = atomicAdd(&ctl->done, 1u) == gridDim.x - 1;
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    bv = -INFINITY, bi = -1;
    if (threadIdx.x < gridDim.x) {
        bv = ((volatile float *)ctl->part_v)[threadIdx.x];
        bi = ((volatile int32_t *)ctl->part_i)[threadIdx.x];
    }
    __syncthreads(); /* sv/si are reused */
    pick_block_best(&bv, &bi, sv, si);
    if (threadIdx.x == 0) {
        const int32_t t = bi >= 0 ? bi : (exclude == 0 && n > 1 ? 1 : 0); /* every logit NaN or excluded */
        const int p = pos[0];
        tok[0] = t;
        pos[0] = p + 1;
        host_ring[p & 3] = t;
        __threadfence_system();               /* the host reads it once the step's event completes */
        const bool fed_stop = ctl->dead != 0; /* this step's output is dropped: keep what keep holds */
        dead = !fed_stop && ctl->stop_token >= 0 && t == ctl->stop_token;
        if (!fed_stop) ctl->dead = dead;
        ctl->done = 0; /* ready for the next step */
    }
    __syncthreads();
    if (dead)
        for (int i = threadIdx.x; i < n; i += blockDim.x) keep[i] = logits[i];
}

extern "C" void ds4k_pick_next(const float *logits, int n, ds4k_pick_ctl *ctl, int32_t *tok, int *pos,
                               int32_t *host_ring, float *keep, ds4_stream st) {
    launch_pdl(pick_kernel, DS4K_PICK_BLOCKS, PICK_THREADS, 0, (cudaStream_t)st, logits, n, ctl, tok, pos, host_ring,
               keep);
}

/* ------------------------------------------------------------------ KV rows and queries */

/* aring (ds4k_kv_store_ring): block t also copies token t's attention
 * input (a row of D floats, D % 4 == 0) into row pos % aratio of aring, if t
 * is among the last aratio tokens. */
__global__ void kv_store_kernel(float *kv, const float *norm, float rms_eps, const double *freqs, int n_pairs,
                                const int *d_pos, int hd, bool fp8, void *ring, int raw_cap, int fmt, const float *a,
                                int64_t D, float *aring, int aratio, int n) {
    pdl_enter();
    extern __shared__ float sh[];
    __shared__ float red[32], amax[64];
    const int t = blockIdx.x;
    const int64_t pos = (int64_t)d_pos[0] + t;
    if (aring && t >= n - (n < aratio ? n : aratio)) {
        const float4 *src = (const float4 *)(a + (int64_t)t * D);
        float4 *dst = (float4 *)(aring + (pos % aratio) * D);
        for (int64_t i = threadIdx.x; i < D / 4; i += blockDim.x) dst[i] = src[i];
    }
    float *x = sh;
    block_load_floats(x, kv + (int64_t)t * hd, hd);
    __syncthreads();
    block_rmsnorm(x, hd, norm, rms_eps, red);
    block_rope(x, hd, n_pairs, freqs, pos, false);
    if (fp8) block_fp8(x, hd - 2 * n_pairs, amax);
    const int nope = hd - 2 * n_pairs;
    block_store_row((uint8_t *)ring + (pos % raw_cap) * (int64_t)ds4_kvrow_bytes((ds4_row_fmt)fmt, hd, nope), x, fmt, hd,
                    nope);
}

extern "C" void ds4k_kv_store(float *kv, const float *norm, float rms_eps, const double *freqs, int n_pairs,
                              const int *d_pos, int n, int hd, bool fp8, void *ring, int raw_cap, int fmt,
                              ds4_stream st) {
    ds4k_kv_store_ring(kv, norm, rms_eps, freqs, n_pairs, d_pos, n, hd, fp8, ring, raw_cap, fmt, NULL, 0, NULL, 0, st);
}

extern "C" void ds4k_kv_store_ring(float *kv, const float *norm, float rms_eps, const double *freqs, int n_pairs,
                                   const int *d_pos, int n, int hd, bool fp8, void *ring, int raw_cap, int fmt,
                                   const float *a, int64_t D, float *aring, int aratio, ds4_stream st) {
    if (!aring || aratio < 1) aring = NULL, aratio = 1;
    if (n > 0)
        launch_pdl(kv_store_kernel, n, NT, hd * sizeof(float), (cudaStream_t)st, kv, norm, rms_eps, freqs, n_pairs,
                   d_pos, hd, fp8, ring, raw_cap, fmt, a, D, aring, aratio, n);
}

__global__ void pos_back_kernel(const int *d_pos, int back, int *out) {
    pdl_enter();
    if (threadIdx.x == 0) out[0] = d_pos[0] - back;
}

extern "C" void ds4k_pos_back(const int *d_pos, int back, int *out, ds4_stream st) {
    launch_pdl(pos_back_kernel, 1, 32, 0, (cudaStream_t)st, d_pos, back, out);
}

__global__ void heads_rope_kernel(float *q, int heads, int hd, bool norm, float rms_eps, const double *freqs,
                                  int n_pairs, const int *d_pos, bool fp4) {
    pdl_enter();
    extern __shared__ float sh[];
    __shared__ float red[32], amax[64];
    const int t = blockIdx.x, h = blockIdx.y;
    const int64_t pos = (int64_t)d_pos[0] + t;
    float *g = q + ((int64_t)t * heads + h) * hd;
    float *x = sh;
    block_load_floats(x, g, hd);
    __syncthreads();
    if (norm) block_rmsnorm(x, hd, NULL, rms_eps, red);
    block_rope(x, hd, n_pairs, freqs, pos, false);
    if (fp4) block_hadamard_fp4(x, hd, amax);
    for (int i = threadIdx.x; i < hd; i += blockDim.x) g[i] = x[i];
}

/* The same for heads of hd a multiple of 128 up to 512, RoPE on at most 32
 * pairs (the attention queries; with FP4, hd a power of two: the indexer's
 * queries): one warp a head, four a block, no block barrier (the kernel above
 * spends a 128-thread block and three barriers on 2 KB, and ten more on the
 * Hadamard and FP4). Bitwise the kernel above: lane l holds elements l + 32 m
 * and forms the sums of squares of that kernel's threads 32 w + l (elements
 * 32 w + l + 128 j, in j order: m = w + 4 j), each warp w's butterfly, then
 * block_sum's last step over four warp sums, which comes to (W0 + W2) + (W1 +
 * W3) (the other lanes add zeros); lane k rotates pair k. The Hadamard's
 * butterflies are the same sums and differences in the same stage order (a
 * stage below 32 between lanes, from 32 up between a lane's registers), and
 * the FP4 blocks of 32 are register m of every lane: their maximum by a
 * butterfly (max is exact in any order). */
#define HR_WARPS 4
template <bool FP4>
__global__ void __launch_bounds__(32 * HR_WARPS)
    heads_rope_warp_kernel(float *q, int n, int heads, int hd, bool norm, float rms_eps, const double *freqs,
                           int n_pairs, const int *d_pos) {
    pdl_enter();
    __shared__ float sx[HR_WARPS][HR_MAX];
    const int w = threadIdx.x >> 5;
    const int64_t head = (int64_t)blockIdx.x * HR_WARPS + w;
    if (head >= (int64_t)n * heads) return; /* the whole warp: no block barrier below */
    rope_head_warp<FP4>(q + head * hd, hd, norm, rms_eps, freqs, n_pairs, (int64_t)d_pos[0] + head / heads, sx[w]);
}

static int g_rope_warps = -1; /* DS4_ROPE_WARPS=0 / ds4k_heads_rope_warps: the block kernel (A/B, tests) */

extern "C" int ds4k_heads_rope_warps(int on) {
    if (g_rope_warps < 0) g_rope_warps = env_switch_on("DS4_ROPE_WARPS");
    const int was = g_rope_warps;
    if (on >= 0) g_rope_warps = on;
    return was;
}

extern "C" void ds4k_heads_rope(float *q, int n, int heads, int hd, bool norm, float rms_eps, const double *freqs,
                                int n_pairs, const int *d_pos, bool fp4, ds4_stream st) {
    if (n <= 0) return;
    /* FP4 heads by warps only in prefill batches: in a decode step (64
     * heads of one token) the warps ran 1.1% slower than the 64 blocks, the
     * same bits either way (12-layer model, docs/BENCHMARKS.md) */
    if (ds4k_heads_rope_warps(-1) && hd % 128 == 0 && hd <= HR_MAX && n_pairs <= 32 && 2 * n_pairs <= hd &&
        (!fp4 || ((hd & (hd - 1)) == 0 && n > 8))) {
        const int64_t warps = (int64_t)n * heads;
        const unsigned blocks = (unsigned)((warps + HR_WARPS - 1) / HR_WARPS);
        if (fp4)
            launch_pdl(heads_rope_warp_kernel<true>, blocks, 32 * HR_WARPS, 0, (cudaStream_t)st, q, n, heads, hd, norm,
                       rms_eps, freqs, n_pairs, d_pos);
        else
            launch_pdl(heads_rope_warp_kernel<false>, blocks, 32 * HR_WARPS, 0, (cudaStream_t)st, q, n, heads, hd,
                       norm, rms_eps, freqs, n_pairs, d_pos);
        return;
    }
    launch_pdl(heads_rope_kernel, dim3(n, heads), 128, hd * sizeof(float), (cudaStream_t)st, q, heads, hd, norm,
               rms_eps, freqs, n_pairs, d_pos, fp4);
}

/* ------------------------------------------------------------------ MoE */

/* One token a block: the scores sqrt(softplus(logit)) (written back over the
 * logits, as the CPU does), then the selection and the weights on warp 0
 * (route_scores, route_pick_warp). The selection's ids and the scores stay
 * in shared memory for the weights' sum; read back from global memory, as
 * they once were, each of the k terms waited on two dependent loads (a
 * decode step's trace: the kernel's time after the router GEMV ~6.4 -> ~5.8
 * us). */
__global__ void router_kernel(float *logits, int E, int k, const float *bias, const int32_t *tid2eid,
                              const int32_t *tok, float scale, int32_t *ids, float *w) {
    pdl_enter();
    extern __shared__ float sel[]; /* sel[E] selection scores, pr[E] scores, sid[k] chosen ids */
    float *pr = sel + E;
    int32_t *sid = (int32_t *)(pr + E);
    const int t = blockIdx.x;
    float *prob = logits + (int64_t)t * E;
    route_scores(prob, E, bias, sel, pr);
    __syncthreads();
    if (threadIdx.x >= 32) return;
    route_pick_warp(E, k, tid2eid, tid2eid ? tok[t] : 0, scale, sel, pr, sid, ids + (int64_t)t * k, w + (int64_t)t * k);
}

extern "C" void ds4k_router(float *logits, int n, int E, int k, const float *bias, const int32_t *tid2eid,
                            const int32_t *tok, float scale, int32_t *ids, float *w, ds4_stream st) {
    if (n > 0)
        launch_pdl(router_kernel, n, NT, 2 * E * sizeof(float) + k * sizeof(int32_t), (cudaStream_t)st, logits, E, k,
                   bias, tid2eid, tok, scale, ids, w);
}

__global__ void swiglu_kernel(float *g, const float *u, int64_t total, int FF, float L, const float *wts) {
    pdl_enter();
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        g[i] = swiglu_at(g[i], u[i], L, wts, i / FF);
    }
}

extern "C" void ds4k_swiglu(float *g, const float *u, int64_t rows, int FF, float L, const float *wts, ds4_stream st) {
    const int64_t total = rows * FF;
    if (total <= 0) return;
    int64_t blocks = (total + NT - 1) / NT;
    if (blocks > 65535) blocks = 65535;
    launch_pdl(swiglu_kernel, (unsigned)blocks, NT, 0, (cudaStream_t)st, g, u, total, FF, L, wts);
}

