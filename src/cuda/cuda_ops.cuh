/* ds4 — device versions of the small numeric operations (twins of
 * src/cpu/ops.c): RoPE angles, FP8 E4M3 and FP4 E2M1 round trips, Hadamard.
 * The rounding functions use only exact operations (scaling by powers of
 * two, round-to-nearest-even), so they give the CPU's bits. */
#ifndef DS4_CUDA_OPS_CUH
#define DS4_CUDA_OPS_CUH

#include "cuda/cuda_common.cuh"
#include "cuda/cuda_kernels.h"

/* Kernels that reduce over a whole row of one token run one block per row;
 * with few tokens (decode) those blocks are all the GPU does, so a long row
 * gets a wide block (about 4 elements a thread) to keep loads in flight.
 * The width depends on the row length only, never on the batch size, so a
 * token's result does not depend on how the prompt was chunked. */
static int row_threads(int len) {
    int t = (len / 4 + 31) / 32 * 32;
    return t < 32 ? 32 : t > 1024 ? 1024 : t;
}

__device__ __forceinline__ float dev_e4m3_round(float y) {
    const float a = fabsf(y);
    float q;
    if (a < 0.015625f) {
        q = rintf(a * 512.0f) * (1.0f / 512.0f);
    } else {
        int e;
        frexpf(a, &e);
        const float step = ldexpf(1.0f, e - 4);
        q = rintf(a / step) * step;
        if (q > 448.0f) q = 448.0f;
    }
    return y < 0 ? -q : q;
}

__device__ __forceinline__ float dev_pow2_ceil(float v) {
    int e;
    const float m = frexpf(v, &e);
    return ldexpf(1.0f, m == 0.5f ? e - 1 : e);
}

__device__ __forceinline__ float dev_e2m1_round(float y) {
    const float a = fabsf(y);
    float q;
    if (a <= 0.25f) q = 0.0f;
    else if (a < 0.75f) q = 0.5f;
    else if (a <= 1.25f) q = 1.0f;
    else if (a < 1.75f) q = 1.5f;
    else if (a <= 2.5f) q = 2.0f;
    else if (a < 3.5f) q = 3.0f;
    else if (a <= 5.0f) q = 4.0f;
    else q = 6.0f;
    return y < 0 ? -q : q;
}

/* cos/sin of pos * freq computed in double, as the CPU does. */
__device__ __forceinline__ void dev_rope_cs(int64_t pos, double freq, float *c, float *s) {
    double sn, cs;
    sincos((double)pos * freq, &sn, &cs);
    *c = (float)cs;
    *s = (float)sn;
}

/* In-shared-memory helpers run by a whole block on one row x[0..len). */

/* One pair (p[0], p[1]) rotated by the angle whose cosine and sine are c, s
 * (block_rope and the warp-a-head kernel share it: the same contraction). */
__device__ __forceinline__ void rope_pair(float *p, float c, float s) {
    const float a = p[0], b = p[1];
    p[0] = a * c - b * s;
    p[1] = a * s + b * c;
}

/* RoPE of the tail pairs at `pos` (inverse: negated angle). */
__device__ __forceinline__ void block_rope(float *x, int len, int n_pairs, const double *freqs, int64_t pos,
                                           bool inverse) {
    float *t = x + len - 2 * n_pairs;
    for (int k = threadIdx.x; k < n_pairs; k += blockDim.x) {
        float c, s;
        dev_rope_cs(pos, freqs[k], &c, &s);
        if (inverse) s = -s;
        rope_pair(&t[2 * k], c, s);
    }
    __syncthreads();
}

/* FP8 round trip of x[0..n) in blocks of 64. `amax` is shared scratch of n/64 floats. */
__device__ __forceinline__ void block_fp8(float *x, int n, float *amax) {
    const int nb = n / 64;
    for (int b = threadIdx.x; b < nb; b += blockDim.x) {
        float m = 0.0f;
        for (int i = 0; i < 64; i++) m = fmaxf(m, fabsf(x[64 * b + i]));
        amax[b] = dev_pow2_ceil(fmaxf(m, 1e-4f) / 448.0f);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < nb * 64; i += blockDim.x) {
        const float scale = amax[i / 64];
        float y = x[i] / scale;
        y = y > 448.0f ? 448.0f : y < -448.0f ? -448.0f : y;
        x[i] = dev_e4m3_round(y) * scale;
    }
    __syncthreads();
}

/* Hadamard (Sylvester order, scaled once by 1/sqrt(n)) then FP4 in blocks of 32. */
__device__ __forceinline__ void block_hadamard_fp4(float *x, int n, float *amax) {
    for (int h = 1; h < n; h *= 2) {
        for (int p = threadIdx.x; p < n / 2; p += blockDim.x) {
            const int j = (p / h) * 2 * h + (p % h);
            const float a = x[j], b = x[j + h];
            x[j] = a + b;
            x[j + h] = a - b;
        }
        __syncthreads();
    }
    const float sc = (float)(1.0 / sqrt((double)n));
    for (int i = threadIdx.x; i < n; i += blockDim.x) x[i] *= sc;
    __syncthreads();
    const int nb = n / 32;
    for (int b = threadIdx.x; b < nb; b += blockDim.x) {
        float m = 0.0f;
        for (int i = 0; i < 32; i++) m = fmaxf(m, fabsf(x[32 * b + i]));
        amax[b] = dev_pow2_ceil(fmaxf(m, 7.052966104933725e-38f) / 6.0f);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < nb * 32; i += blockDim.x) {
        const float scale = amax[i / 32];
        float y = x[i] / scale;
        y = y > 6.0f ? 6.0f : y < -6.0f ? -6.0f : y;
        x[i] = dev_e2m1_round(y) * scale;
    }
    __syncthreads();
}

/* Weighted RMSNorm of x[0..n) in place (w may be NULL). */
__device__ __forceinline__ void block_rmsnorm(float *x, int n, const float *w, float eps, float *red) {
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) ss += x[i] * x[i];
    ss = block_sum(ss, red);
    const float inv = 1.0f / sqrtf(ss / (float)n + eps);
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) x[i] = w ? x[i] * inv * w[i] : x[i] * inv;
    __syncthreads();
}

__device__ __forceinline__ float dev_sigmoid(float z) { return 1.0f / (1.0f + expf(-z)); }
__device__ __forceinline__ float dev_silu(float z) { return z * dev_sigmoid(z); }

/* silu(min(g, L)) * clamp(u, -L, L): one SwiGLU element (ds4k_swiglu and
 * the down projections' staged input use this one expression). */
__device__ __forceinline__ float dev_swiglu(float g, float u, float L) {
    const float gg = g < L ? g : L;
    const float uu = u > L ? L : u < -L ? -L : u;
    return dev_silu(gg) * uu;
}
/* ... times the row's weight where there is one: swiglu_kernel's element,
 * and the routed down input's split makes the same (split_rows_kernel). */
__device__ __forceinline__ float swiglu_at(float g, float u, float L, const float *wts, int64_t row) {
    float h = dev_swiglu(g, u, L);
    if (wts) h *= wts[row];
    return h;
}

/* 1 / sqrt(mean(x^2) + eps) over x[0..len), summed by the whole block in a
 * fixed order (thread i adds x[i], x[i + blockDim.x], ...; then block_sum):
 * rmsnorm_kernel and the GEMV's staged norm share it, so for the same block
 * width they give the same bits. */
__device__ __forceinline__ float block_inv_rms(const float *x, int64_t len, float eps, float *red) {
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < len; i += blockDim.x) ss += x[i] * x[i];
    ss = block_sum(ss, red);
    return 1.0f / sqrtf(ss / (float)len + eps);
}
__device__ __forceinline__ float dev_softplus(float z) {
    if (z > 20.0f) return z;
    if (z < -20.0f) return expf(z);
    return log1pf(expf(z));
}

/* The router's selection for one token, in two parts shared by
 * router_kernel and the router GEMV's last block (decode, ds4k_router_matmul),
 * so both give the same scores, ids and weights bit for bit.
 * route_scores, every thread of the block: pr[e] = sqrt(softplus(logit)),
 * sel[e] = pr[e] + bias[e] (shared memory), the scores also written over the
 * logits (as the CPU does); a block barrier follows in the caller.
 * FROM_L2: the logits read past the L1 cache (other blocks wrote them).
 * route_pick_warp, warp 0 alone: sid[0..k) the hash table's row of token
 * `tok` (tid2eid) or k rounds of a warp arg-max over sel (the larger value
 * and, on ties, the lower id: the CPU's "first maximum" rule); then every
 * lane adds the k scores in slot order (the CPU's sum) and writes the ids
 * and the weights pr[id] / max(sum, 2^-14) * scale.
 *
 * Up to 256 experts (the model's) the arg-max keeps each lane's experts
 * (e = lane + 32 i) in registers as keys in the floats' order and takes a
 * round's maximum, then its lowest id, with one warp reduction each
 * (redux.sync); more experts, or hash routing, keep the butterfly of
 * (value, id) pairs over shared memory, ~5 shuffle steps and 8 loads a
 * round. A decode step's selection sits between the router GEMV and the
 * routed experts: in a full-size trace at 2k the router ended 5.4 us after
 * the collapse instead of 7.6 (decode +0.7% and +0.8% in two calls). It must
 * stay small: the router GEMV that inlines it is held to 40 registers, and
 * a first version with 16 keys a lane (E <= 512) and its rounds unrolled
 * took 50 and lost 2.6% at 2k and 64k (the routed gate/up then launched
 * ~3.4 us later; docs/BENCHMARKS.md, forty-eighth session). */
template <bool FROM_L2 = false>
__device__ __forceinline__ void route_scores(float *logits, int E, const float *bias, float *sel, float *pr) {
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        const float p = sqrtf(dev_softplus(FROM_L2 ? __ldcg(logits + e) : logits[e]));
        logits[e] = p;
        pr[e] = p;
        sel[e] = p + (bias ? bias[e] : 0.0f);
    }
}
/* A selection score's key (order_key), NaN's 1: below every number, so a
 * broken model's NaN scores are taken last; 0 marks an expert taken or
 * absent. */
__device__ __forceinline__ uint32_t route_key(float v) { return v != v ? 1u : order_key(v); }
/* The arg-max rounds on keys in registers, NPL a lane (E <= 32 NPL, k <=
 * DS4_ROUTE_K_MAX): every lane learns each round's id, loads its score (a
 * broadcast) and adds it in slot order, so the weights need no second pass
 * over shared memory. */
template <int NPL>
__device__ __forceinline__ void route_pick_keys(int E, int k, const float *sel, const float *pr, float scale,
                                                int32_t *ids, float *w) {
    const int lane = threadIdx.x & 31;
    uint32_t key[NPL];
#pragma unroll
    for (int i = 0; i < NPL; i++) key[i] = lane + 32 * i < E ? route_key(sel[lane + 32 * i]) : 0u;
    int32_t my_id = 0;
    float my_p = 0.0f, sum = 0.0f;
    for (int j = 0; j < k; j++) {
        uint32_t m = 0;
#pragma unroll
        for (int i = 0; i < NPL; i++) m = key[i] > m ? key[i] : m;
        const uint32_t top = __reduce_max_sync(0xffffffffu, m);
        uint32_t first = 0xffffffffu; /* this lane's lowest id holding the maximum */
#pragma unroll
        for (int i = NPL - 1; i >= 0; i--)
            if (key[i] == top && lane + 32 * i < E) first = (uint32_t)(lane + 32 * i);
        uint32_t id = __reduce_min_sync(0xffffffffu, first);
        if (id >= (uint32_t)E) id = 0; /* unreachable for k <= E: every round has a number left */
#pragma unroll
        for (int i = 0; i < NPL; i++)
            if ((uint32_t)(lane + 32 * i) == id) key[i] = 0u;
        const float p = pr[id];
        sum += p; /* the CPU's sum: slot order from 0 */
        if (lane == j) my_id = (int32_t)id, my_p = p;
    }
    if (sum < 6.103515625e-5f) sum = 6.103515625e-5f;
    if (lane < k) ids[lane] = my_id, w[lane] = my_p / sum * scale;
}
__device__ __forceinline__ void route_pick_warp(int E, int k, const int32_t *tid2eid, int32_t tok, float scale,
                                                float *sel, const float *pr, int32_t *sid, int32_t *ids, float *w) {
    const int lane = threadIdx.x & 31;
    if (!tid2eid && k <= DS4_ROUTE_K_MAX && k <= E && E <= 32 * 8) {
        route_pick_keys<8>(E, k, sel, pr, scale, ids, w);
        return;
    }
    if (tid2eid) {
        for (int j = lane; j < k; j += 32) sid[j] = tid2eid[(int64_t)tok * k + j];
    } else {
        for (int j = 0; j < k; j++) {
            float bv = -INFINITY;
            int bi = E;
            for (int e = lane; e < E; e += 32)
                if (bi == E || sel[e] > bv) bv = sel[e], bi = e;
            for (int o = 16; o > 0; o >>= 1) {
                const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
                const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
                if (oi < E && (bi == E || ov > bv || (ov == bv && oi < bi))) bv = ov, bi = oi;
            }
            if (lane == 0) sid[j] = bi;
            __syncwarp();
            if (lane == (bi & 31)) sel[bi] = -INFINITY;
            __syncwarp();
        }
    }
    __syncwarp();
    float sum = 0.0f;
    for (int j = 0; j < k; j++) sum += pr[sid[j]];
    if (sum < 6.103515625e-5f) sum = 6.103515625e-5f;
    for (int j = lane; j < k; j += 32) ids[j] = sid[j], w[j] = pr[sid[j]] / sum * scale;
}

/* One head of hd floats at g (hd a multiple of 128 up to HR_MAX, RoPE on at
 * most 32 pairs; with FP4, hd a power of two), by one warp: ds4k_heads_rope's
 * steps, bitwise the block kernel's (see heads_rope_warp_kernel in
 * cuda_ops.cu for why). x: the warp's hd floats of shared memory. The head is
 * read through L2 (other blocks may have written it: a GEMV's tail). */
#define HR_MAX 512
template <bool FP4>
__device__ __forceinline__ void rope_head_warp(float *g, int hd, bool norm, float rms_eps, const double *freqs,
                                               int n_pairs, int64_t pos, float *x) {
    const int lane = threadIdx.x & 31, M = hd / 32;
    float v[HR_MAX / 32];
#pragma unroll
    for (int m = 0; m < HR_MAX / 32; m++)
        if (m < M) v[m] = __ldcg(g + lane + 32 * m);
    if (norm) {
        float W[4];
#pragma unroll
        for (int vw = 0; vw < 4; vw++) {
            float ss = 0.0f;
#pragma unroll
            for (int m = vw; m < HR_MAX / 32; m += 4)
                if (m < M) ss += v[m] * v[m];
            W[vw] = warp_sum(ss);
        }
        const float inv = 1.0f / sqrtf(((W[0] + W[2]) + (W[1] + W[3])) / (float)hd + rms_eps);
#pragma unroll
        for (int m = 0; m < HR_MAX / 32; m++)
            if (m < M) v[m] = v[m] * inv;
    }
#pragma unroll
    for (int m = 0; m < HR_MAX / 32; m++)
        if (m < M) x[lane + 32 * m] = v[m];
    __syncwarp();
    if (lane < n_pairs) {
        float c, s;
        dev_rope_cs(pos, freqs[lane], &c, &s);
        rope_pair(&x[hd - 2 * n_pairs + 2 * lane], c, s);
    }
    __syncwarp();
    if constexpr (FP4) {
#pragma unroll
        for (int m = 0; m < HR_MAX / 32; m++)
            if (m < M) v[m] = x[lane + 32 * m];
        for (int h = 1; h < 32; h *= 2) /* element j + h's partner j: lanes l and l ^ h */
#pragma unroll
            for (int m = 0; m < HR_MAX / 32; m++)
                if (m < M) {
                    const float o = __shfl_xor_sync(0xffffffffu, v[m], h);
                    v[m] = lane & h ? o - v[m] : v[m] + o;
                }
#pragma unroll
        for (int h = 1; h < HR_MAX / 32; h *= 2) /* 32 h apart: registers m and m + h */
#pragma unroll
            for (int m = 0; m < HR_MAX / 32; m++)
                if (m + h < M && !(m & h)) {
                    const float a = v[m], b = v[m + h];
                    v[m] = a + b;
                    v[m + h] = a - b;
                }
        const float sc = (float)(1.0 / sqrt((double)hd));
#pragma unroll
        for (int m = 0; m < HR_MAX / 32; m++)
            if (m < M) {
                v[m] *= sc;
                float a = fabsf(v[m]);
#pragma unroll
                for (int o = 16; o > 0; o >>= 1) a = fmaxf(a, __shfl_xor_sync(0xffffffffu, a, o));
                const float scale = dev_pow2_ceil(fmaxf(a, 7.052966104933725e-38f) / 6.0f);
                float y = v[m] / scale;
                y = y > 6.0f ? 6.0f : y < -6.0f ? -6.0f : y;
                g[lane + 32 * m] = dev_e2m1_round(y) * scale;
            }
    } else {
#pragma unroll
        for (int m = 0; m < HR_MAX / 32; m++)
            if (m < M) g[lane + 32 * m] = x[lane + 32 * m];
    }
}

/* Element i of a float-type weight (F32 / F16 / BF16). */
__device__ __forceinline__ float dev_elem(int type, const void *p, int64_t i) {
    if (type == 0) return ((const float *)p)[i];
    if (type == 30) return bf2f(((const uint16_t *)p)[i]);
    return h2f(((const uint16_t *)p)[i]);
}

#endif
