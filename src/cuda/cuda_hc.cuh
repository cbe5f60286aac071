/* ds4 — the per-token split of the hyper-connections (MODEL.md 7.1) shared
 * by the HC kernels (cuda_hc.cu) and the kernels that make a decode step's
 * post and M beside their own work: an extra block of the router GEMV's
 * launch (cuda_gemv.cu) and of the split attention's (cuda_attn.cu). */
#pragma once
#include "cuda/cuda_kernels.h"
#include "cuda/cuda_ops.cuh"

/* pre[i] and post[i] of one token (MODEL.md 7.1). */
__device__ __forceinline__ void hc_pre_post(const float *mix, const float *scale, const float *base, int hc, float eps,
                                            int i, float *pre, float *post) {
    pre[i] = dev_sigmoid(mix[i] * scale[0] + base[i]) + eps;
    post[i] = 2.0f * dev_sigmoid(mix[hc + i] * scale[1] + base[hc + i]);
}

/* The Sinkhorn-normalized mixing matrix M of one token on one thread: the
 * operations of hc_sinkhorn_warp_t (cuda_hc.cu) in its order (each row or
 * column sum from 0 in index order, the same fast divisions), so the same
 * bits; a pass waits on three dependent adds and a division instead of four
 * shuffles and a division. For the kernels that make post and M beside other
 * work (ds4k_hc_post_collapse's prologue, hc_split_thread). */
template <int HC>
__device__ void hc_sinkhorn_thread(const float *mix, const float *scale, const float *base, int iters, float eps,
                                   float *M) {
    float v[HC][HC];
#pragma unroll
    for (int i = 0; i < HC; i++) {
        float lg[HC], e[HC], mx = -INFINITY, sum = 0.0f;
#pragma unroll
        for (int j = 0; j < HC; j++) lg[j] = mix[2 * HC + i * HC + j] * scale[2] + base[2 * HC + i * HC + j];
#pragma unroll
        for (int k = 0; k < HC; k++) mx = fmaxf(mx, lg[k]);
#pragma unroll
        for (int k = 0; k < HC; k++) e[k] = expf(lg[k] - mx);
#pragma unroll
        for (int k = 0; k < HC; k++) sum += e[k];
#pragma unroll
        for (int j = 0; j < HC; j++) v[i][j] = e[j] / sum + eps;
    }
    for (int it = 0; it < iters; it++) {
        if (it > 0)
#pragma unroll
            for (int i = 0; i < HC; i++) {
                float s = 0.0f;
#pragma unroll
                for (int k = 0; k < HC; k++) s += v[i][k];
#pragma unroll
                for (int j = 0; j < HC; j++) v[i][j] = __fdividef(v[i][j], s + eps);
            }
#pragma unroll
        for (int j = 0; j < HC; j++) {
            float s = 0.0f;
#pragma unroll
            for (int k = 0; k < HC; k++) s += v[k][j];
#pragma unroll
            for (int i = 0; i < HC; i++) v[i][j] = __fdividef(v[i][j], s + eps);
        }
    }
#pragma unroll
    for (int i = 0; i < HC; i++)
#pragma unroll
        for (int j = 0; j < HC; j++) M[i * HC + j] = v[i][j];
}

/* post and M of one token with 4 streams from its stored mixer sums, on one
 * thread (ds4k_hc_split): the values ds4k_hc_sinkhorn writes. The sums are
 * read through L2: the kernels that call this run well after they were
 * written, past their own wait. */
__device__ __forceinline__ void hc_split_thread(const ds4k_hc_split &h) {
    float mix[(2 + 4) * 4], pre[4], post[4], M[16];
#pragma unroll
    for (int i = 0; i < (2 + 4) * 4; i++) mix[i] = __ldcg(h.mix + i);
#pragma unroll
    for (int i = 0; i < 4; i++) hc_pre_post(mix, h.scale, h.base, 4, h.eps, i, pre, post);
    hc_sinkhorn_thread<4>(mix, h.scale, h.base, h.iters, h.eps, M);
#pragma unroll
    for (int i = 0; i < 4; i++) h.post[i] = post[i];
#pragma unroll
    for (int i = 0; i < 16; i++) h.M[i] = M[i];
}
