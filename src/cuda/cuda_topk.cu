/* ds4 — the indexer's causal top-k on the GPU (CPU twin: topk_range in
 * cpu_attention.c; checked against a sort by ds4-cuda-test attention).
 *
 * Token t of a ratio-4 layer attends to the `topk` compressed rows of
 * highest indexer score among the V = (pos + 1) / 4 it may see, in ascending
 * row order, ties going to the lower index. The selection is a radix select
 * of the topk-th largest key (8 bits a pass from the top: 4 passes, integer
 * histograms in shared memory, so the counts do not depend on the order of
 * the atomics), then one ordered pass that writes the rows above that key
 * and the first `need` rows equal to it.
 *
 * A token's selection is a chain of passes with a barrier each, so one
 * block of 1,024 threads spends its time on instruction issue and barriers:
 * topk-bench, H200, one decode token, 6.4 us at 1,024 rows (the launch alone
 * ~4.3 in that loop), 14.0 at 16,384, 36.0 at 50,000; at 16,384 rows the
 * three later passes take ~4.8 us and the ordered pass ~4.5 (timing knobs,
 * docs/bench/history-8.md, forty-fourth session). From a 64k context on that
 * chain is on a ratio-4 layer's critical path.
 *
 * The cluster form (the caller's choice: decode steps over more than 16,384
 * rows, a 64k context, cuda_layers.inc STEP_SELECT_HUGE; at most
 * TOPK_CLUSTER_TOKENS tokens) splits each token's rows over a cluster of
 * TOPK_CLUSTER blocks of 512 threads, which sum their histograms through
 * distributed shared memory: 9.5 us at 16,384 rows, 14.9 at 50,000 (a
 * cluster launch costs ~9.5 us whatever the rows). In the model (full
 * size, H200, in-call A/B) decode gains +0.4% at a 64k
 * context, +2.1% at 96k, +4.2% at 128k, +6.8% at 192k and +12.3% at 256k
 * with q_b in 3/8 of the GPU beside it, where with q_b in 2/8 it had lost
 * 0.6% at 64k (its eight blocks must find room together).
 * DS4_TOPK_CLUSTER=0 never takes it (A/B). Prefill's chunks fill the GPU
 * with one block a token and always take the one-block form (the same
 * kernel, C = 1). */
#include "cuda/cuda_common.cuh"
#include "cuda/cuda_kernels.h"

#include <cooperative_groups.h>
#include <stdio.h>

namespace cg = cooperative_groups;

#ifndef DS4_CUDA_ARCH_MIN
#define DS4_CUDA_ARCH_MIN 90 /* the Makefile passes the arch it builds for */
#endif

#define TOPK_THREADS 1024          /* a block of the single-block form */
#define TOPK_CLUSTER_THREADS 512   /* a block of a cluster: a tile is 2,048 rows, a 64k context's share of 8 */
#define TOPK_CLUSTER 8             /* blocks a token in the cluster form (the portable maximum) */
#define TOPK_CLUSTER_TOKENS 8      /* at most this many tokens take the cluster form */
#define TOPK_CACHE_ROWS (48 * 1024) /* keys a block keeps in shared memory (192 KB) */

/* A block's rows [lo, hi) of one token's scores s, the first nc of them (a
 * multiple of 4) as keys in the shared cache. */
struct topk_rows {
    const float *s;
    const uint4 *cache;
    int lo, hi, nc;
};

/* f(k, r0) over the block's rows in tiles of 4 NT rows, thread i taking rows
 * r0 .. r0+3 (r0 = tile start + 4i) with keys k.x .. k.w (rows at or past hi:
 * don't care, the caller masks them); the trips are block-uniform, so f may
 * use warp votes and block barriers. Cached rows come from the cache, the
 * rest from s (L2) in every pass. */
template <int NT, typename F> __device__ __forceinline__ void topk_each_tile(const topk_rows &R, F f) {
    for (int t0 = R.lo; t0 < R.hi; t0 += 4 * NT) {
        const int r0 = t0 + 4 * (int)threadIdx.x;
        uint4 k;
        if (r0 - R.lo < R.nc) {
            k = R.cache[(r0 - R.lo) / 4];
        } else {
            k.x = r0 < R.hi ? order_key(__ldcg(R.s + r0)) : 0u;
            k.y = r0 + 1 < R.hi ? order_key(__ldcg(R.s + r0 + 1)) : 0u;
            k.z = r0 + 2 < R.hi ? order_key(__ldcg(R.s + r0 + 2)) : 0u;
            k.w = r0 + 3 < R.hi ? order_key(__ldcg(R.s + r0 + 3)) : 0u;
        }
        f(k, r0);
    }
}

/* A barrier of every thread of the cluster, in two halves (sm_90): arrive
 * (release: this block's shared-memory writes before it are seen by the
 * cluster's reads after the wait), then wait (acquire). */
__device__ __forceinline__ void cluster_arrive(void) {
#if __CUDA_ARCH__ >= 900
    asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory");
#endif
}
__device__ __forceinline__ void cluster_wait(void) {
#if __CUDA_ARCH__ >= 900
    asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory");
#endif
}
/* p's place in the shared memory of block `rank` of the cluster. */
template <typename T> __device__ __forceinline__ T *cluster_ptr(T *p, int rank) {
#if __CUDA_ARCH__ >= 900
    return cg::this_cluster().map_shared_rank(p, rank);
#else
    return p;
#endif
}

/* One pass's pick, by a block's first warp. g: the pass's histogram of the
 * whole token (lane l's digits 248-8l .. 255-8l, two int4); hl: this block's
 * own (NULL where the block has every row). The digit whose bin holds the
 * need-th key from the top goes into *prefix (at shift) and the rows still to
 * take inside it into *need; *above gains this block's rows in the bins above
 * that digit (rows above the final key) and *equal becomes its rows in the
 * digit's bin (after the last pass: its rows equal to the final key). */
__device__ void topk_pick(const int4 *g, const int *hl, int shift, uint32_t *prefix, int *need, int *above,
                          int *equal) {
    const int lane = threadIdx.x & 31;
    const int4 lo4 = g[0], hi4 = g[1];
    const int all[8] = {hi4.w, hi4.z, hi4.y, hi4.x, lo4.w, lo4.z, lo4.y, lo4.x}; /* digit 255 - 8 lane - i */
    int sum = 0;
#pragma unroll
    for (int i = 0; i < 8; i++) sum += all[i];
    int incl = sum;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const int y = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += y;
    }
    /* the lane whose digits hold the need-th key, and which of them */
    const int at = incl - sum, nd = *need;
    const int L = __ffs(__ballot_sync(0xffffffffu, at < nd && nd <= incl)) - 1;
    int pick = 0, run = at;
    bool past = false;
#pragma unroll
    for (int i = 0; i < 8; i++) { /* on lane L: the digits above the chosen one, and their rows */
        past = past || run + all[i] >= nd;
        if (!past) run += all[i], pick = i + 1;
    }
    pick = __shfl_sync(0xffffffffu, pick, L);
    run = __shfl_sync(0xffffffffu, run, L);
    *prefix |= (uint32_t)(255 - 8 * L - pick) << shift;
    *need = nd - run;
    if (hl) {
        int up = 0, eq = 0;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const int v = hl[255 - 8 * lane - i];
            up += lane < L || (lane == L && i < pick) ? v : 0;
            eq += lane == L && i == pick ? v : 0;
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            up += __shfl_xor_sync(0xffffffffu, up, o);
            eq += __shfl_xor_sync(0xffffffffu, eq, o);
        }
        *above += up;
        *equal = eq;
    }
}

/* The top-k of token blockIdx.x / C. With C > 1 the token's rows are split
 * over the C blocks of its cluster (a block may have none): each
 * block counts its own rows and adds its histogram into the cluster's (bins
 * 32q .. 32q+31 in block q, for C = 8; three in turn, so a pass clears the
 * next one while the last is still read), and every block picks the same
 * digit from it. The rows above and equal to the final key in the blocks
 * before a block say where its rows go. With C = 1 the block takes every
 * row. */
template <int C, int NT>
__global__ void __launch_bounds__(NT, 1) topk_kernel(const float *S, int64_t lds, const int *d_pos, int K,
                                                     int cache_rows, int32_t *sel, int *n_sel) {
    static_assert(NT % 32 == 0 && NT <= 1024, "the ordered pass scans the warps' counts with a lane a warp");
    static_assert(256 % C == 0 && 256 / C >= 8, "a lane's 8 digits lie in one block's part of the histogram");
    constexpr int NW = NT / 32;
    pdl_enter();
    extern __shared__ uint4 topk_cache[];
    __shared__ __align__(16) int hist[2][256], gsum[3][256];
    __shared__ __align__(8) int cnt[2];
    __shared__ int counts[2][32], s_need, s_above, s_equal;
    __shared__ uint32_t s_prefix;
    const int t = blockIdx.x / C, b = blockIdx.x % C; /* block b of the cluster (clusters are C blocks along x) */
    const int64_t p = (int64_t)d_pos[0] + t;
    const int V = (int)((p + 1) / 4);
    constexpr bool cl = C > 1;
    if (V <= K) { /* every block of a cluster leaves here alike */
        if (b == 0 && threadIdx.x == 0) n_sel[t] = -1;
        return;
    }
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const int nb = cl ? C : 1, per = ((V + nb - 1) / nb + 3) / 4 * 4; /* a block's rows, a multiple of 4 */
    topk_rows R;
    R.s = S + (int64_t)t * lds;
    R.cache = topk_cache;
    R.lo = b * per < V ? b * per : V;
    R.hi = R.lo + per < V ? R.lo + per : V;
    R.nc = (R.hi - R.lo + 3) / 4 * 4 < cache_rows ? (R.hi - R.lo + 3) / 4 * 4 : cache_rows;
    if (cl) { /* the first pass's sums start at 0 before any block adds to them */
        for (int i = threadIdx.x; i < 256; i += NT) gsum[0][i] = 0;
        cluster_arrive();
    }
    { /* the cache: rows [lo, lo + nc), 0 past hi; 8 loads in flight a thread, from one running pointer */
        uint32_t *cache = (uint32_t *)topk_cache + threadIdx.x;
        const float *src = R.s + R.lo + threadIdx.x;
        for (int left = R.nc - (int)threadIdx.x, have = R.hi - R.lo - (int)threadIdx.x; left > 0;
             left -= 8 * NT, have -= 8 * NT, src += 8 * NT, cache += 8 * NT) {
            float v[8];
#pragma unroll
            for (int u = 0; u < 8; u++) v[u] = u * NT < have ? __ldcg(src + u * NT) : 0.0f;
#pragma unroll
            for (int u = 0; u < 8; u++)
                if (u * NT < left) cache[u * NT] = order_key(v[u]);
        }
    }
    if (cl) cluster_wait();
    uint32_t prefix = 0, mask = 0;
    int need = K, above = 0, equal = 0; /* above/equal: warp 0's running counts of this block's rows */
    for (int pass = 0, shift = 24; shift >= 0; pass++, shift -= 8) {
        int *h = hist[pass & 1];
        for (int i = threadIdx.x; i < 256; i += NT) {
            h[i] = 0;
            if (cl) gsum[(pass + 1) % 3][i] = 0; /* last read two passes ago, before the last cluster barrier */
        }
        __syncthreads(); /* also: the cache is written */
        topk_each_tile<NT>(R, [&](uint4 k4, int r0) {
            const uint32_t k[4] = {k4.x, k4.y, k4.z, k4.w};
#pragma unroll
            for (int j = 0; j < 4; j++)
                if (r0 + j < R.hi && (k[j] & mask) == prefix) atomicAdd(&h[(k[j] >> shift) & 255], 1);
        });
        __syncthreads();
        const int4 *g = (const int4 *)&h[248 - 8 * lane];
        if (cl) {
            for (int i = threadIdx.x; i < 256; i += NT)
                if (h[i]) atomicAdd(cluster_ptr(&gsum[pass % 3][i], i / (256 / C)), h[i]);
            cluster_arrive();
            cluster_wait();
            g = (const int4 *)cluster_ptr(&gsum[pass % 3][248 - 8 * lane], (248 - 8 * lane) / (256 / C));
        }
        if (w == 0) {
            topk_pick(g, cl ? h : NULL, shift, &prefix, &need, &above, &equal);
            if (lane == 0) s_prefix = prefix, s_need = need, cnt[0] = above, cnt[1] = equal;
        }
        __syncthreads();
        prefix = s_prefix;
        need = s_need;
        mask |= 255u << shift;
    }
    int gt_seen = 0, eq_seen = 0; /* rows above / equal to T before this tile */
    if (cl) { /* the rows above / equal to T in the blocks before this one */
        cluster_arrive();
        cluster_wait();
        if (w == 0) {
            int2 c = lane < b ? *cluster_ptr((int2 *)cnt, lane) : make_int2(0, 0);
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) {
                c.x += __shfl_xor_sync(0xffffffffu, c.x, o);
                c.y += __shfl_xor_sync(0xffffffffu, c.y, o);
            }
            if (lane == 0) s_above = c.x, s_equal = c.y;
        }
        /* no more reads of another block's memory; it may not leave before ours are done (the wait at the end) */
        cluster_arrive();
        __syncthreads();
        gt_seen = s_above;
        eq_seen = s_equal;
    }
    const uint32_t T = prefix; /* the K-th largest key; the first `need` rows equal to it are taken */
    int32_t *out = sel + (int64_t)t * K;
    topk_each_tile<NT>(R, [&](uint4 k4, int r0) {
        const uint32_t k[4] = {k4.x, k4.y, k4.z, k4.w};
        int ge = 0; /* this thread's rows above T (low 16 bits) and equal to it (high 16): a tile's counts fit */
#pragma unroll
        for (int j = 0; j < 4; j++) ge += r0 + j < R.hi ? (k[j] > T) + ((k[j] == T) << 16) : 0;
        int gei = ge; /* inclusive scans over the warp, then over the warps */
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const int y = __shfl_up_sync(0xffffffffu, gei, o);
            if (lane >= o) gei += y;
        }
        /* two sets, by the tile's parity: a tile's counts are written while the last one's are read */
        int *c = counts[((r0 - R.lo) / (4 * NT)) & 1];
        if (lane == 31) c[w] = gei;
        __syncthreads();
        int wge = lane < NW ? c[lane] : 0; /* a lane a warp */
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const int y = __shfl_up_sync(0xffffffffu, wge, o);
            if (lane >= o) wge += y;
        }
        const int before = (w > 0 ? __shfl_sync(0xffffffffu, wge, w - 1) : 0) + gei - ge;
        int G = gt_seen + (before & 0xffff), E = eq_seen + (before >> 16); /* rows above / equal to T before r0 */
#pragma unroll
        for (int j = 0; j < 4; j++) {
            if (r0 + j >= R.hi) break;
            if (k[j] > T) {
                out[G + (E < need ? E : need)] = r0 + j;
                G++;
            } else if (k[j] == T) {
                if (E < need) out[G + E] = r0 + j;
                E++;
            }
        }
        const int tile_ge = __shfl_sync(0xffffffffu, wge, 31);
        gt_seen += tile_ge & 0xffff;
        eq_seen += tile_ge >> 16;
    });
    if (b == 0 && threadIdx.x == 0) n_sel[t] = K;
    if (cl) cluster_wait();
}

/* Whether the cluster form may be taken: -1 until the first launch,
 * ds4k_topk_prepare or ds4k_topk_cluster_ready reads DS4_TOPK_CLUSTER (on
 * unless it is 0, where the build is for sm_90 or later and the GPU can
 * hold such a cluster). */
static int g_topk_cluster = -1;

/* A launch of the cluster form for n tokens (attr: the caller's storage for
 * two attributes). */
static cudaLaunchConfig_t topk_cluster_config(int n, size_t smem, cudaStream_t st, cudaLaunchAttribute *attr) {
    cudaLaunchConfig_t cfg = pdl_config(dim3(n * TOPK_CLUSTER), dim3(TOPK_CLUSTER_THREADS), smem, st, &attr[0],
                                        g_pdl_small_batch);
    attr[cfg.numAttrs].id = cudaLaunchAttributeClusterDimension;
    attr[cfg.numAttrs].val.clusterDim.x = TOPK_CLUSTER;
    attr[cfg.numAttrs].val.clusterDim.y = 1;
    attr[cfg.numAttrs].val.clusterDim.z = 1;
    cfg.attrs = attr;
    cfg.numAttrs++;
    return cfg;
}

static void topk_cluster_setting(void) {
    if (g_topk_cluster >= 0) return;
    g_topk_cluster = env_switch_on("DS4_TOPK_CLUSTER") && DS4_CUDA_ARCH_MIN >= 90;
    if (!g_topk_cluster) return;
    cudaLaunchAttribute attr[2];
    const int bytes = (int)(sizeof(uint32_t) * TOPK_CACHE_ROWS);
    const cudaLaunchConfig_t cfg = topk_cluster_config(1, bytes, NULL, attr);
    int clusters = 0;
    if (cudaFuncSetAttribute(topk_kernel<TOPK_CLUSTER, TOPK_CLUSTER_THREADS>,
                             cudaFuncAttributeMaxDynamicSharedMemorySize, bytes) != cudaSuccess ||
        cudaOccupancyMaxActiveClusters(&clusters, topk_kernel<TOPK_CLUSTER, TOPK_CLUSTER_THREADS>, &cfg) !=
            cudaSuccess ||
        clusters < 1) {
        (void)cudaGetLastError();
        fprintf(stderr, "ds4: the cluster top-k is off: this GPU cannot hold a cluster of %d of its blocks\n",
                TOPK_CLUSTER);
        g_topk_cluster = 0;
    }
}

static int topk_cache_rows(int64_t rows) {
    return (int)((rows < TOPK_CACHE_ROWS ? rows : TOPK_CACHE_ROWS) + 3) / 4 * 4;
}

extern "C" int ds4k_topk_cluster_ready(void) {
    topk_cluster_setting();
    return g_topk_cluster;
}

extern "C" void ds4k_topk(const float *S, int64_t lds, int n, const int *d_pos, int topk, bool cluster, int32_t *sel,
                          int *n_sel, ds4_stream st) {
    if (n <= 0) return;
    topk_cluster_setting();
    if (cluster && g_topk_cluster && n <= TOPK_CLUSTER_TOKENS) {
        const int cache_rows = topk_cache_rows((lds + TOPK_CLUSTER - 1) / TOPK_CLUSTER); /* a block's share */
        cudaLaunchAttribute attr[2];
        const cudaLaunchConfig_t cfg = topk_cluster_config(n, sizeof(uint32_t) * cache_rows, (cudaStream_t)st, attr);
        (void)cudaLaunchKernelEx(&cfg, topk_kernel<TOPK_CLUSTER, TOPK_CLUSTER_THREADS>, S, lds, d_pos, topk,
                                 cache_rows, sel, n_sel);
        return;
    }
    const int cache_rows = topk_cache_rows(lds);
    launch_pdl((topk_kernel<1, TOPK_THREADS>), n, TOPK_THREADS, sizeof(uint32_t) * cache_rows, (cudaStream_t)st, S,
               lds, d_pos, topk, cache_rows, sel, n_sel);
}

/* Both forms' shared memory allowed up front (before a graph capture; the
 * cluster form's by topk_cluster_setting, where it is on). */
extern "C" int ds4k_topk_prepare(void) {
    const int bytes = (int)(sizeof(uint32_t) * TOPK_CACHE_ROWS);
    if (cudaFuncSetAttribute(topk_kernel<1, TOPK_THREADS>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes) !=
        cudaSuccess)
        return -1;
    topk_cluster_setting();
    return 0;
}
