/* ds4 — CUDA kernels of the hyper-connections (MODEL.md 7): the mixer, the
 * split into pre/post/M with Sinkhorn, the collapse of the streams into a
 * sub-layer's input, the update of the streams after it (with the MoE sum)
 * and the output head's collapse (twins: src/cpu/ops.c, cpu_backend.c). */
#include "cuda/cuda_hc.cuh"
#include "cuda/cuda_kernels.h"
#include "cuda/cuda_ops.cuh"
#include "cuda/cuda_tc.cuh"

#define NT 256

/* ------------------------------------------------------------------ hyper-connections */

/* The Sinkhorn-normalized mixing matrix M of one token (MODEL.md 7.1), same
 * evaluation order as the CPU. */
__device__ void hc_sinkhorn_one(const float *mix, const float *scale, const float *base, int hc, int iters, float eps,
                                float *M) {
    for (int i = 0; i < hc; i++) {
        float *row = M + i * hc;
        float mx = -INFINITY;
        for (int j = 0; j < hc; j++) {
            row[j] = mix[2 * hc + i * hc + j] * scale[2] + base[2 * hc + i * hc + j];
            mx = fmaxf(mx, row[j]);
        }
        float sum = 0.0f;
        for (int j = 0; j < hc; j++) {
            row[j] = expf(row[j] - mx);
            sum += row[j];
        }
        for (int j = 0; j < hc; j++) row[j] = row[j] / sum + eps;
    }
    for (int it = 0; it < iters; it++) {
        if (it > 0)
            for (int i = 0; i < hc; i++) {
                float s = 0.0f;
                for (int j = 0; j < hc; j++) s += M[i * hc + j];
                for (int j = 0; j < hc; j++) M[i * hc + j] /= s + eps;
            }
        for (int j = 0; j < hc; j++) {
            float s = 0.0f;
            for (int i = 0; i < hc; i++) s += M[i * hc + j];
            for (int i = 0; i < hc; i++) M[i * hc + j] /= s + eps;
        }
    }
}


/* The same as hc_sinkhorn_one on one warp, for hc*hc <= 32: lane i*hc+j
 * holds M[i][j] and every row or column sum reads its terms through shuffles
 * in the CPU's order, so the 2*iters dependent passes cost a few shuffles
 * each instead of a serial loop over the matrix. The passes divide with the
 * fast reciprocal (within 2 ulp of the CPU's division; the test bounds M):
 * the IEEE division's instruction sequence made these 40 dependent steps
 * most of a decode step's ~11 us here. */
template <int HC>
__device__ void hc_sinkhorn_warp_t(const float *mix, const float *scale, const float *base, int hc_rt, int iters,
                                   float eps, float *M) {
    const unsigned all = 0xffffffffu;
    const int hc = HC ? HC : hc_rt; /* a constant for the model's 4 streams: the shuffles of a sum go out together */
    const int lane = threadIdx.x & 31, i = lane / hc, j = lane % hc;
    const bool own = lane < hc * hc;
    /* lanes past the matrix hold 0 and read wrapped lanes: their sums are
     * never stored, they only keep every shuffle warp-uniform */
    const float logit = own ? mix[2 * hc + lane] * scale[2] + base[2 * hc + lane] : 0.0f;
    float mx = -INFINITY;
#pragma unroll
    for (int k = 0; k < hc; k++) mx = fmaxf(mx, __shfl_sync(all, logit, (i * hc + k) & 31));
    const float e = expf(logit - mx);
    float sum = 0.0f;
#pragma unroll
    for (int k = 0; k < hc; k++) sum += __shfl_sync(all, e, (i * hc + k) & 31);
    float v = e / sum + eps;
    for (int it = 0; it < iters; it++) {
        if (it > 0) {
            float s = 0.0f;
#pragma unroll
            for (int k = 0; k < hc; k++) s += __shfl_sync(all, v, (i * hc + k) & 31);
            v = __fdividef(v, s + eps);
        }
        float s = 0.0f;
#pragma unroll
        for (int k = 0; k < hc; k++) s += __shfl_sync(all, v, (k * hc + j) & 31);
        v = __fdividef(v, s + eps);
    }
    if (own) M[lane] = v;
}

__device__ void hc_sinkhorn_warp(const float *mix, const float *scale, const float *base, int hc, int iters, float eps,
                                 float *M) {
    if (hc == 4) hc_sinkhorn_warp_t<4>(mix, scale, base, hc, iters, eps, M);
    else hc_sinkhorn_warp_t<0>(mix, scale, base, hc, iters, eps, M);
}

/* x = rmsnorm(sum_s w[s] * h[s]) * norm over the D elements of one token's
 * hc streams (threads from `first` on split d; block-wide sum of squares,
 * which every thread of the block joins). A thread keeps its (at most
 * CN_MAX) elements in registers: the stream values and norm weights are
 * loaded by collapse_load before the weights w are known (the split-collapse
 * kernel issues them together with the mixer's parts, so the block waits on
 * one global round trip instead of three), then collapse_finish adds them.
 * The registers hold CN_HC = 4 streams (the model's); another hc, or a D
 * too long for the registers, takes the plain loop (collapse_norm_loop),
 * which adds the same terms in the same order. */
#define CN_MAX 8
#define CN_HC 4 /* the model's 4 streams: collapse_load's register arrays */
struct collapse_regs {
    float h[CN_MAX][CN_HC], norm[CN_MAX];
};
__device__ __forceinline__ bool collapse_in_regs(int hc, int D, int first) {
    return hc == CN_HC && D <= CN_MAX * ((int)blockDim.x - first);
}
__device__ __forceinline__ void collapse_load(const float *h, int D, const float *norm, int first, collapse_regs &r) {
    const int nt = (int)blockDim.x - first, me = (int)threadIdx.x - first;
#pragma unroll
    for (int k = 0; k < CN_MAX; k++) {
        const int d = me + k * nt;
        const bool on = me >= 0 && d < D;
#pragma unroll
        for (int s = 0; s < CN_HC; s++) r.h[k][s] = on ? h[(int64_t)s * D + d] : 0.0f;
        r.norm[k] = on ? norm[d] : 0.0f;
    }
}
__device__ __forceinline__ void collapse_finish(const collapse_regs &r, const float *w, int D, float rms_eps, float *x,
                                                float *red, int first) {
    const int nt = (int)blockDim.x - first, me = (int)threadIdx.x - first;
    float v[CN_MAX], ss = 0.0f;
#pragma unroll
    for (int k = 0; k < CN_MAX; k++) {
        v[k] = 0.0f;
#pragma unroll
        for (int s = 0; s < CN_HC; s++) v[k] = __fmaf_rn(w[s], r.h[k][s], v[k]); /* 0 beyond D: adds nothing */
    }
    /* the same terms, in d order, as the loop below; the rounding steps are
     * spelled out, since an unrolled a*b + c*d may be contracted either way */
#pragma unroll
    for (int k = 0; k < CN_MAX; k++) ss = __fmaf_rn(v[k], v[k], ss);
    ss = block_sum(ss, red);
    const float inv = 1.0f / sqrtf(ss / (float)D + rms_eps);
#pragma unroll
    for (int k = 0; k < CN_MAX; k++) {
        const int d = me + k * nt;
        if (me >= 0 && d < D) x[d] = __fmul_rn(__fmul_rn(v[k], inv), r.norm[k]);
    }
}
__device__ void collapse_norm_loop(const float *h, const float *w, int hc, int D, const float *norm, float rms_eps,
                                   float *x, float *red, int first) {
    const int nt = (int)blockDim.x - first, me = (int)threadIdx.x - first;
    float ss = 0.0f;
    for (int d = me; d >= 0 && d < D; d += nt) {
        float acc = 0.0f;
        for (int s = 0; s < hc; s++) acc += w[s] * h[(int64_t)s * D + d];
        x[d] = acc;
        ss += acc * acc;
    }
    ss = block_sum(ss, red);
    const float inv = 1.0f / sqrtf(ss / (float)D + rms_eps);
    for (int d = threadIdx.x; d < D; d += blockDim.x) x[d] = x[d] * inv * norm[d];
}

__device__ void collapse_norm(const float *h, const float *w, int hc, int D, const float *norm, float rms_eps, float *x,
                              float *red, int first) {
    if (collapse_in_regs(hc, D, first)) {
        collapse_regs r;
        collapse_load(h, D, norm, first, r);
        collapse_finish(r, w, D, rms_eps, x, red, first);
    } else {
        collapse_norm_loop(h, w, hc, D, norm, rms_eps, x, red, first);
    }
}

/* Split and collapse of token blockIdx.x, in two blocks that run side by
 * side: blockIdx.y == 0 collapses the streams into the sub-layer's input
 * with pre (and writes pre), blockIdx.y == 1 runs the Sinkhorn iterations on
 * one warp and writes post and M. Both form the same mixer sums with the same
 * code. (One block used to do both, and the collapse's block-wide sum waited
 * for the Sinkhorn warp: 40 dependent passes on the critical path of every
 * decode sub-layer.) Threads from 32 on collapse, so the sums of squares
 * keep the order they had beside the Sinkhorn warp. */
__global__ void __launch_bounds__(1024)
    hc_split_collapse_kernel(const float *mix, const float *ss, int n_parts, float flat_eps, const float *scale,
                             const float *base, int hc, int iters, float hc_eps, const float *H, int D,
                             const float *norm, float rms_eps, float *pre, float *post, float *M, float *a,
                             int role0) {
    pdl_enter();
    __shared__ float s_pre[DS4K_MAX_HC], s_post[DS4K_MAX_HC], s_M[DS4K_MAX_HC * DS4K_MAX_HC], red[32];
    __shared__ float s_mix[(2 + DS4K_MAX_HC) * DS4K_MAX_HC];
    __shared__ float s_parts[DS4K_MAX_HC_PARTS * ((2 + DS4K_MAX_HC) * DS4K_MAX_HC + 1)];
    const int t = blockIdx.x, n = gridDim.x, MIX = (2 + hc) * hc;
    const bool sinkhorn = blockIdx.y + role0 == 1; /* role0 1: a launch of Sinkhorn blocks only */
    const int first = blockDim.x > 32 ? 32 : 0;
    const float *h = H + (int64_t)t * hc * D;
    const bool regs = !sinkhorn && collapse_in_regs(hc, D, first);
    collapse_regs r;
    if (regs) collapse_load(h, D, norm, first, r);
    const float *mx = mix + (int64_t)t * MIX;
    if (ss) {
        /* partial products of the mixer with the raw streams and the parts'
         * sums of squares, all loaded at once (a thread each: a decode step
         * waited on 16 dependent loads here), then added in part order; the
         * streams' rmsnorm scale is applied to the sums */
        const int W = MIX + 1;
        for (int i = threadIdx.x; i < n_parts * W; i += blockDim.x) {
            const int s = i / W, j = i - s * W;
            s_parts[i] = j < MIX ? mix[((int64_t)s * n + t) * MIX + j] : ss[s * n + t];
        }
        __syncthreads();
        float sq = 0.0f; /* every thread adds the sums of squares itself */
        for (int s = 0; s < n_parts; s++) sq += s_parts[s * W + MIX];
        const float inv = 1.0f / sqrtf(sq / (float)(hc * D) + flat_eps);
        for (int j = threadIdx.x; j < MIX; j += blockDim.x) {
            float acc = 0.0f;
            for (int s = 0; s < n_parts; s++) acc += s_parts[s * W + j];
            s_mix[j] = acc * inv;
        }
        __syncthreads();
        mx = s_mix;
    }
    if (threadIdx.x < hc) hc_pre_post(mx, scale, base, hc, hc_eps, threadIdx.x, s_pre, s_post);
    __syncthreads();
    if (sinkhorn) {
        if (threadIdx.x < 32) {
            if (hc * hc <= 32) hc_sinkhorn_warp(mx, scale, base, hc, iters, hc_eps, s_M);
            else if (threadIdx.x == 0) hc_sinkhorn_one(mx, scale, base, hc, iters, hc_eps, s_M);
            __syncwarp();
            for (int i = threadIdx.x; i < hc * hc; i += 32) M[(int64_t)t * hc * hc + i] = s_M[i];
            for (int i = threadIdx.x; i < hc; i += 32) post[(int64_t)t * hc + i] = s_post[i];
        }
        return;
    }
    float *x = a + (int64_t)t * D;
    if (regs) collapse_finish(r, s_pre, D, rms_eps, x, red, first);
    else collapse_norm_loop(h, s_pre, hc, D, norm, rms_eps, x, red, first);
    for (int i = threadIdx.x; i < hc; i += blockDim.x) pre[(int64_t)t * hc + i] = s_pre[i];
}

/* A decode step's token: its two blocks side by side in one launch. A
 * batch: the collapse blocks, then the Sinkhorn blocks in a launch of their
 * own with one warp each (in the shared launch each took a whole
 * row_threads(D)-thread block of which one warp works, half the batch's
 * thread slots). The same code in both, so the same bits. */
static void split_collapse_launch(const float *mix, const float *ss, int n_parts, float flat_eps, const float *scale,
                                  const float *base, int hc, int iters, float hc_eps, const float *H, int D,
                                  const float *norm, float rms_eps, int n, float *pre, float *post, float *M, float *a,
                                  cudaStream_t s) {
    if (n <= 0) return;
    if (n <= 8) {
        launch_pdl(hc_split_collapse_kernel, dim3(n, 2), row_threads(D), 0, s, mix, ss, n_parts, flat_eps, scale, base,
                   hc, iters, hc_eps, H, D, norm, rms_eps, pre, post, M, a, 0);
        return;
    }
    launch_pdl(hc_split_collapse_kernel, dim3(n, 1), row_threads(D), 0, s, mix, ss, n_parts, flat_eps, scale, base, hc,
               iters, hc_eps, H, D, norm, rms_eps, pre, post, M, a, 0);
    launch_pdl(hc_split_collapse_kernel, dim3(n, 1), 32, 0, s, mix, ss, n_parts, flat_eps, scale, base, hc, iters,
               hc_eps, H, D, norm, rms_eps, pre, post, M, a, 1);
}

extern "C" void ds4k_hc_split_collapse(const float *mix, const float *scale, const float *base, int hc, int iters,
                                       float hc_eps, const float *H, int D, const float *norm, float rms_eps, int n,
                                       float *pre, float *post, float *M, float *a, ds4_stream st) {
    split_collapse_launch(mix, NULL, 0, 0.0f, scale, base, hc, iters, hc_eps, H, D, norm, rms_eps, n, pre, post, M, a,
                          (cudaStream_t)st);
}

/* post and M alone from stored mixer sums (the Sinkhorn role of the kernel
 * above, one warp a token): for a sub-layer whose input
 * ds4k_hc_post_collapse made, where no extra block made them and its hc_post
 * is not the fused one (hc_post_next). */
extern "C" void ds4k_hc_sinkhorn(const float *mix, const float *scale, const float *base, int hc, int iters,
                                 float hc_eps, int n, float *post, float *M, ds4_stream st) {
    if (n > 0)
        launch_pdl(hc_split_collapse_kernel, dim3(n, 1), 32, 0, (cudaStream_t)st, mix, (const float *)NULL, 0, 0.0f,
                   scale, base, hc, iters, hc_eps, (const float *)NULL, 0, (const float *)NULL, 0.0f, (float *)NULL,
                   post, M, (float *)NULL, 1);
}

extern "C" void ds4k_hc_split_collapse_parts(const float *parts, const float *ss, int n_parts, float flat_eps,
                                             const float *scale, const float *base, int hc, int iters, float hc_eps,
                                             const float *H, int D, const float *norm, float rms_eps, int n, float *pre,
                                             float *post, float *M, float *a, ds4_stream st) {
    split_collapse_launch(parts, ss, n_parts, flat_eps, scale, base, hc, iters, hc_eps, H, D, norm, rms_eps, n, pre,
                          post, M, a, (cudaStream_t)st);
}

/* The HC mixer of a few tokens without the normalized copy of the streams:
 * block (r, s, t) takes stretch s of K for mixer row r and token t, adds
 * w . h over it and, in row 0's blocks, h . h; the split-collapse kernel adds
 * the parts in order. 8 halves and 8 floats per thread and step. */
__global__ void hc_mix_parts_kernel(const uint16_t *W, int rows, int64_t K, const float *H, int64_t ldh, int S,
                                    float *parts, float *ss) {
    pdl_enter();
    __shared__ float red[32];
    const int r = blockIdx.x, s = blockIdx.y, t = blockIdx.z, n = gridDim.z;
    const int64_t k0 = K * s / S, k1 = K * (s + 1) / S;
    const uint16_t *w = W + (int64_t)r * K;
    const float *h = H + (int64_t)t * ldh;
    float acc = 0.0f, sq = 0.0f;
    for (int64_t k = k0 + 8 * threadIdx.x; k < k1; k += 8 * blockDim.x) {
        const float4 a = *(const float4 *)(h + k), b = *(const float4 *)(h + k + 4);
        acc = dot8_h(*(const uint4 *)(w + k), a, b, acc);
        if (r == 0)
            sq += a.x * a.x + a.y * a.y + a.z * a.z + a.w * a.w + b.x * b.x + b.y * b.y + b.z * b.z + b.w * b.w;
    }
    acc = block_sum(acc, red);
    if (threadIdx.x == 0) parts[((int64_t)s * n + t) * rows + r] = acc;
    if (r == 0) {
        sq = block_sum(sq, red);
        if (threadIdx.x == 0) ss[s * n + t] = sq;
    }
}

/* The same parts for a batch of tokens (prefill): the kernel above spends a
 * block, its launch and two block reductions on 2,048 products (one row, one
 * stretch, one token) and reads every token's streams once per mixer row.
 * Here block (s, g) keeps stretch s of all R mixer rows in shared memory and
 * walks MIX_TOK tokens: each thread forms the same 8-element partial dots
 * and every sum takes block_sum's tree (a lane butterfly, then warp 0 over the
 * warps in order), so the parts are bitwise those of hc_mix_parts_kernel. */
#define MIX_TOK 16
#define MIX_ROWS 24 /* (2 + 4) x 4 mixer rows: 4 streams, as the published model */
#define MIX_SMEM_MAX (96 * 1024) /* 24 rows x a 2,048-wide stretch (the published model) */

template <int R>
__global__ void hc_mix_parts_tok_kernel(const uint16_t *W, int64_t K, const float *H, int64_t ldh, int S, int n,
                                        float *parts, float *ss) {
    pdl_enter();
    extern __shared__ __align__(16) uint16_t w_s[]; /* [R][stretch] */
    __shared__ float red[(R + 1) * (NT / 32)];
    const int s = blockIdx.x, lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = NT / 32;
    const int64_t k0 = K * s / S, k1 = K * (s + 1) / S, len = k1 - k0;
    for (int64_t i = threadIdx.x; i < R * len / 8; i += NT) {
        const int64_t r = i / (len / 8), j = i % (len / 8);
        ((uint4 *)w_s)[i] = *(const uint4 *)(W + r * K + k0 + 8 * j);
    }
    __syncthreads();
    const int t0 = blockIdx.y * MIX_TOK, t_end = min(n, t0 + MIX_TOK);
    /* The published shape gives each thread one 8-element chunk of the
     * stretch a token (len = 8 NT): the next token's chunk is loaded before
     * this one's products, so its global round trip overlaps them (the token
     * loop otherwise waits on it every token). Same operations either way. */
    const bool one = len == 8 * NT;
    const int64_t kt = k0 + 8 * threadIdx.x;
    float4 na = make_float4(0.f, 0.f, 0.f, 0.f), nb = na;
    if (one && t0 < t_end) {
        na = *(const float4 *)(H + (int64_t)t0 * ldh + kt);
        nb = *(const float4 *)(H + (int64_t)t0 * ldh + kt + 4);
    }
    for (int t = t0; t < t_end; t++) {
        const float *h = H + (int64_t)t * ldh;
        float acc[R], sq = 0.0f;
#pragma unroll
        for (int r = 0; r < R; r++) acc[r] = 0.0f;
        auto chunk = [&](int64_t k, const float4 a, const float4 b) {
#pragma unroll
            for (int r = 0; r < R; r++) acc[r] = dot8_h(*(const uint4 *)(w_s + r * len + (k - k0)), a, b, acc[r]);
            sq += a.x * a.x + a.y * a.y + a.z * a.z + a.w * a.w + b.x * b.x + b.y * b.y + b.z * b.z + b.w * b.w;
        };
        if (one) {
            const float4 a = na, b = nb;
            if (t + 1 < t_end) {
                na = *(const float4 *)(h + ldh + kt);
                nb = *(const float4 *)(h + ldh + kt + 4);
            }
            chunk(kt, a, b);
        } else {
            for (int64_t k = kt; k < k1; k += 8 * NT)
                chunk(k, *(const float4 *)(h + k), *(const float4 *)(h + k + 4));
        }
        /* block_sum of R + 1 values at once: same tree, one barrier pair */
#pragma unroll
        for (int r = 0; r < R; r++) acc[r] = warp_sum(acc[r]);
        sq = warp_sum(sq);
        if (lane == 0) {
#pragma unroll
            for (int r = 0; r < R; r++) red[r * nw + warp] = acc[r];
            red[R * nw + warp] = sq;
        }
        __syncthreads();
        for (int v = warp; v <= R; v += nw) {
            float x = lane < nw ? red[v * nw + lane] : 0.0f;
            x = warp_sum(x);
            if (lane == 0) {
                if (v < R) parts[((int64_t)s * n + t) * R + v] = x;
                else ss[(int64_t)s * n + t] = x;
            }
        }
        __syncthreads(); /* red is rewritten for the next token */
    }
}

/* The same parts on the tensor cores (a prefill batch; DS4_HC_MIX_TC=0
 * keeps the kernel above, whose arithmetic is the decode kernel's). The
 * kernel above reads its stretch of all 24 weight rows from shared memory
 * once per token and reduces 25 sums a token across the block: 58 us for a
 * 512-token sub-batch, 0.6 TB/s of streams (12-layer prefill, H200). Here
 * the stretch is a [tokens x k] . [k x 24] product of mma.sync m16n8k8 in
 * TF32: each stream value as tf32 hi + lo (x - hi rounded again: ~22 bits,
 * like the f16 hi/lo elsewhere, over f32's range), the F16 weights exact in
 * tf32, two products per step. Block (s, g): stretch s, tokens 32 g .. +32
 * (two m-tiles); warp w a k-range of the stretch; each k16 chunk's order
 * permuted so a thread's values of its rows are one float4 (logical k t4,
 * t4 + 4 of the first k8 step are physical 4 t4, 4 t4 + 1; of the second,
 * 4 t4 + 2, + 3; the weights the same). The warps' partial sums, and the
 * square sums, are added in a fixed order: deterministic, and a token's
 * parts do not depend on the batch. */
#define MIXC_WARPS 8
#define MIXC_TOK 32
__device__ __forceinline__ uint32_t tf32_rna(float x) {
    uint32_t r;
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
    return r;
}
__global__ void __launch_bounds__(32 * MIXC_WARPS)
    hc_mix_parts_tc_kernel(const uint16_t *W, int64_t K, const float *H, int64_t ldh, int S, int n, float *parts,
                           float *ss) {
    pdl_enter();
    constexpr int R = MIX_ROWS, NTL = R / 8;
    __shared__ float red[MIXC_WARPS][MIXC_TOK][R + 1];
    const int s = blockIdx.x, lane = threadIdx.x & 31, w = threadIdx.x >> 5, g = lane >> 2, t4 = lane & 3;
    const int t0 = blockIdx.y * MIXC_TOK;
    const int64_t len = K / S, klen = len / MIXC_WARPS, kw = len * s + klen * w;
    const float *xr[2][2];
    bool live[2][2];
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int t = t0 + 16 * mt + 8 * h + g;
            live[mt][h] = t < n;
            xr[mt][h] = H + (int64_t)(t < n ? t : 0) * ldh + kw + 4 * t4;
        }
    const uint16_t *wr[NTL];
#pragma unroll
    for (int nt = 0; nt < NTL; nt++) wr[nt] = W + (int64_t)(8 * nt + g) * K + kw + 4 * t4;
    float acc[2][NTL][4] = {}, sq[2][2] = {};
    /* chunk k + 16's loads are issued before chunk k's products (the loop
     * otherwise waits on each chunk's global round trip) */
    float4 xn[2][2];
    uint2 wn[NTL];
    auto fetch = [&](int64_t k) {
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int h = 0; h < 2; h++)
                xn[mt][h] = live[mt][h] && k < klen ? *(const float4 *)(xr[mt][h] + k)
                                                    : make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
        for (int nt = 0; nt < NTL; nt++) wn[nt] = k < klen ? *(const uint2 *)(wr[nt] + k) : make_uint2(0, 0);
    };
    fetch(0);
    for (int64_t k = 0; k < klen; k += 16) {
        float4 x[2][2];
        uint2 wb[NTL];
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int h = 0; h < 2; h++) x[mt][h] = xn[mt][h];
#pragma unroll
        for (int nt = 0; nt < NTL; nt++) wb[nt] = wn[nt];
        fetch(k + 16);
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const float4 v = x[mt][h];
                float q = __fmaf_rn(v.x, v.x, sq[mt][h]);
                q = __fmaf_rn(v.y, v.y, q);
                q = __fmaf_rn(v.z, v.z, q);
                sq[mt][h] = __fmaf_rn(v.w, v.w, q);
            }
#pragma unroll
        for (int step = 0; step < 2; step++) {
            uint32_t b[NTL][2];
#pragma unroll
            for (int nt = 0; nt < NTL; nt++) {
                const uint32_t pr = step ? wb[nt].y : wb[nt].x; /* the step's two halves */
                b[nt][0] = __float_as_uint(__half2float(__ushort_as_half((unsigned short)(pr & 0xffffu))));
                b[nt][1] = __float_as_uint(__half2float(__ushort_as_half((unsigned short)(pr >> 16))));
            }
#pragma unroll
            for (int mt = 0; mt < 2; mt++) {
                /* logical (row g, k t4), (g + 8, t4), (g, t4 + 4), (g + 8, t4 + 4) */
                const float v[4] = {step ? x[mt][0].z : x[mt][0].x, step ? x[mt][1].z : x[mt][1].x,
                                    step ? x[mt][0].w : x[mt][0].y, step ? x[mt][1].w : x[mt][1].y};
                uint32_t hi[4], lo[4];
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    hi[i] = tf32_rna(v[i]);
                    lo[i] = tf32_rna(v[i] - __uint_as_float(hi[i]));
                }
#pragma unroll
                for (int nt = 0; nt < NTL; nt++) {
                    mma1688_tf32(acc[mt][nt], hi, b[nt][0], b[nt][1]);
                    mma1688_tf32(acc[mt][nt], lo, b[nt][0], b[nt][1]);
                }
            }
        }
    }
    /* the warps' partial sums: D register (g or g + 8, 2 t4 or 2 t4 + 1) */
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int nt = 0; nt < NTL; nt++)
#pragma unroll
            for (int i = 0; i < 4; i++) red[w][16 * mt + g + 8 * (i >> 1)][8 * nt + 2 * t4 + (i & 1)] = acc[mt][nt][i];
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            float q = sq[mt][h];
            q += __shfl_xor_sync(0xffffffffu, q, 1);
            q += __shfl_xor_sync(0xffffffffu, q, 2);
            if (t4 == 0) red[w][16 * mt + 8 * h + g][R] = q;
        }
    __syncthreads();
    for (int i = threadIdx.x; i < MIXC_TOK * (R + 1); i += 32 * MIXC_WARPS) {
        const int tt = i / (R + 1), r = i % (R + 1), t = t0 + tt;
        if (t >= n) continue;
        float v = 0.0f;
#pragma unroll
        for (int ww = 0; ww < MIXC_WARPS; ww++) v += red[ww][tt][r];
        if (r < R) parts[((int64_t)s * n + t) * R + r] = v;
        else ss[(int64_t)s * n + t] = v;
    }
}

static int g_mix_tc = -1; /* ds4k_hc_mix_tc / DS4_HC_MIX_TC */

extern "C" int ds4k_hc_mix_tc(int on) {
    if (g_mix_tc < 0) g_mix_tc = env_switch_on("DS4_HC_MIX_TC");
    const int was = g_mix_tc;
    if (on >= 0) g_mix_tc = on;
    return was;
}

extern "C" int ds4k_hc_mix_parts(const ds4_dw *W, int rows, const float *H, int64_t ldh, int n, int S, float *parts,
                                 float *ss, ds4_stream st) {
    if (W->type != 1 /* F16 */ || W->N < rows || S > DS4K_MAX_HC_PARTS || W->K % (8 * S) != 0 ||
        ((uintptr_t)W->ptr % 16) != 0 || ((uintptr_t)H % 16) != 0 || ldh % 4 != 0)
        return -1;
    if (n <= 0) return 0;
    const size_t w_bytes = (size_t)rows * (size_t)(W->K / S) * 2;
    if (n > 8 && rows == MIX_ROWS && (W->K / S) % (16 * MIXC_WARPS) == 0 && ds4k_hc_mix_tc(-1)) {
        launch_pdl(hc_mix_parts_tc_kernel, dim3(S, (n + MIXC_TOK - 1) / MIXC_TOK), 32 * MIXC_WARPS, 0,
                   (cudaStream_t)st, (const uint16_t *)W->ptr, W->K, H, ldh, S, n, parts, ss);
        return 0;
    }
    if (n > 8 && rows == MIX_ROWS && w_bytes <= MIX_SMEM_MAX) {
        launch_pdl(hc_mix_parts_tok_kernel<MIX_ROWS>, dim3(S, (n + MIX_TOK - 1) / MIX_TOK), NT, w_bytes,
                   (cudaStream_t)st, (const uint16_t *)W->ptr, W->K, H, ldh, S, n, parts, ss);
        return 0;
    }
    launch_pdl(hc_mix_parts_kernel, dim3(rows, S, n), NT, 0, (cudaStream_t)st, (const uint16_t *)W->ptr, rows, W->K, H,
               ldh, S, parts, ss);
    return 0;
}

/* Slot order of a token's k routed experts for the MoE sum: ascending expert
 * id, a repeated id in slot order (stable insertion sort), as the CPU adds. */
__device__ __forceinline__ void moe_order(const int32_t *ids, int k, int *ord) {
    for (int j = 0; j < k; j++) ord[j] = j;
    for (int j = 1; j < k; j++) {
        const int v = ord[j];
        int p = j;
        while (p > 0 && ids[ord[p - 1]] > ids[v]) {
            ord[p] = ord[p - 1];
            p--;
        }
        ord[p] = v;
    }
}

/* Element d of token t's y, given as `parts` partial vectors (ds4k_matmul_ksplit:
 * part q of token t at row q * n + t) added in part order. The first
 * Y_PARTS_MAX parts are loaded before any is added: as a loop with a
 * run-time count the loads went one after another, an L2 round trip each
 * on the step's critical path (a decode step's o_b comes in four parts). */
#define Y_PARTS_MAX 8
/* V consecutive floats at p (V 4: one 16-byte load) */
template <int V> __device__ __forceinline__ void load_v(const float *p, float (&x)[V]) {
    if constexpr (V == 4) {
        const float4 a = *(const float4 *)p;
        x[0] = a.x, x[1] = a.y, x[2] = a.z, x[3] = a.w;
    } else {
#pragma unroll
        for (int e = 0; e < V; e++) x[e] = p[e];
    }
}
/* elements d .. d + V - 1 (see load_v) */
template <int V>
__device__ __forceinline__ void y_sum_v(const float *y, int64_t ldy, int parts, int n, int t, int d, float (&yd)[V]) {
    float v[Y_PARTS_MAX][V];
#pragma unroll
    for (int q = 0; q < Y_PARTS_MAX; q++) {
        if (q < parts) load_v<V>(y + ((int64_t)q * n + t) * ldy + d, v[q]);
        else
#pragma unroll
            for (int e = 0; e < V; e++) v[q][e] = 0.0f;
    }
#pragma unroll
    for (int e = 0; e < V; e++) {
        yd[e] = v[0][e];
#pragma unroll
        for (int q = 1; q < Y_PARTS_MAX; q++)
            if (q < parts) yd[e] += v[q][e];
        for (int q = Y_PARTS_MAX; q < parts; q++) yd[e] += y[((int64_t)q * n + t) * ldy + d + e];
    }
}
__device__ __forceinline__ float y_sum(const float *y, int64_t ldy, int parts, int n, int t, int d) {
    float yd[1];
    y_sum_v<1>(y, ldy, parts, n, t, d, yd);
    return yd[0];
}

/* The row of eo holding pair i (token i / k, slot i % k): i itself, or
 * erow[i] where the routed outputs stayed in their gathered order (a prefill
 * batch: no scatter back to pair order). */
__device__ __forceinline__ int eo_row(const int32_t *erow, int i) { return erow ? erow[i] : i; }

/* H = post y + M^T H, element-wise over d: a grid of (d blocks, tokens), so
 * one token spreads over the GPU. y is read from `y`, or — with `eo` — made
 * here as the MoE output: the token's k routed outputs in moe_order plus the
 * shared expert's `sh`, so the FFN's sum is never stored (one launch and
 * one round trip less a layer). */
__global__ void hc_post_kernel(const float *post, const float *M, const float *y, int64_t ldy, int yparts,
                               const float *eo, const int32_t *erow, const int32_t *ids, const float *sh, int k, int hc,
                               int D, float *H) {
    pdl_enter();
    const int t = blockIdx.y;
    const float *p = post + (int64_t)t * hc, *m = M + (int64_t)t * hc * hc;
    float *h = H + (int64_t)t * hc * D;
    const int d = blockIdx.x * blockDim.x + threadIdx.x;
    if (d < D) {
        float yd;
        if (eo) {
            int ord[DS4K_MAX_EXPERTS_USED];
            moe_order(ids + (int64_t)t * k, k, ord);
            float acc = 0.0f;
            for (int j = 0; j < k; j++) acc += eo[(int64_t)eo_row(erow, t * k + ord[j]) * D + d];
            yd = acc + sh[(int64_t)t * D + d];
        } else {
            yd = y_sum(y, ldy, yparts, gridDim.y, t, d);
        }
        float in[DS4K_MAX_HC];
        for (int s = 0; s < hc; s++) in[s] = h[(int64_t)s * D + d];
        for (int j = 0; j < hc; j++) {
            float acc = p[j] * yd;
            for (int s = 0; s < hc; s++) acc += m[s * hc + j] * in[s];
            h[(int64_t)j * D + d] = acc;
        }
    }
}

/* hc_post_kernel for the model's shape (4 streams, at most 8 routed experts)
 * with every load issued before any is used: the streams, post, M, the k
 * routed outputs (in slot order) and the shared expert's, then the MoE sum
 * taken in moe_order by rank (ascending id, ties in slot order) with
 * register selects. The same additions in the same order as hc_post_kernel;
 * that one sorted through dependent loads of the ids and kept the streams in
 * an array indexed at run time (local memory), several round trips a decode
 * step waited on twice a layer. */
#define POST_HC 4
#define POST_KMAX 8
/* p and m: token t's post and M (global or shared memory) */
template <int V>
__device__ __forceinline__ void post_fast_v(const float *p, const float *m, const float *y, int64_t ldy, int yparts,
                                            const float *eo, const int32_t *erow, const int32_t *ids,
                                            const float *sh, int k, int D, const float *H, int t, int d,
                                            float (&out)[POST_HC][V]) {
    const float *h = H + (int64_t)t * POST_HC * D;
    float in[POST_HC][V], pv[POST_HC], mv[POST_HC * POST_HC];
#pragma unroll
    for (int s = 0; s < POST_HC; s++) load_v<V>(h + (int64_t)s * D + d, in[s]), pv[s] = p[s];
#pragma unroll
    for (int i = 0; i < POST_HC * POST_HC; i++) mv[i] = m[i];
    float yd[V];
    if (eo) {
        int id[POST_KMAX], rank[POST_KMAX];
        float v[POST_KMAX][V], shd[V];
        const int32_t *ti = ids + (int64_t)t * k;
#pragma unroll
        for (int j = 0; j < POST_KMAX; j++) {
            id[j] = j < k ? ti[j] : INT_MAX;
            if (j < k) load_v<V>(eo + (int64_t)eo_row(erow, t * k + j) * D + d, v[j]);
            else
#pragma unroll
                for (int e = 0; e < V; e++) v[j][e] = 0.0f;
        }
        load_v<V>(sh + (int64_t)t * D + d, shd);
#pragma unroll
        for (int j = 0; j < POST_KMAX; j++) {
            int r = 0;
#pragma unroll
            for (int i = 0; i < POST_KMAX; i++) r += i < k && (id[i] < id[j] || (id[i] == id[j] && i < j));
            rank[j] = r;
        }
#pragma unroll
        for (int e = 0; e < V; e++) {
            float acc = 0.0f;
#pragma unroll
            for (int r = 0; r < POST_KMAX; r++) {
                if (r >= k) break;
                float x = 0.0f;
#pragma unroll
                for (int j = 0; j < POST_KMAX; j++) x = rank[j] == r ? v[j][e] : x;
                acc += x;
            }
            yd[e] = acc + shd[e];
        }
    } else {
        y_sum_v<V>(y, ldy, yparts, gridDim.y, t, d, yd);
    }
#pragma unroll
    for (int j = 0; j < POST_HC; j++)
#pragma unroll
        for (int e = 0; e < V; e++) {
            float acc = __fmul_rn(pv[j], yd[e]); /* rounding steps spelled out: see collapse_finish */
#pragma unroll
            for (int s = 0; s < POST_HC; s++) acc = __fmaf_rn(mv[s * POST_HC + j], in[s][e], acc);
            out[j][e] = acc;
        }
}
__device__ __forceinline__ void post_fast_d(const float *p, const float *m, const float *y, int64_t ldy, int yparts,
                                            const float *eo, const int32_t *erow, const int32_t *ids,
                                            const float *sh, int k, int D, const float *H, int t, int d,
                                            float out[POST_HC]) {
    float o[POST_HC][1];
    post_fast_v<1>(p, m, y, ldy, yparts, eo, erow, ids, sh, k, D, H, t, d, o);
#pragma unroll
    for (int j = 0; j < POST_HC; j++) out[j] = o[j][0];
}

/* V elements a thread: 4 for a batch whose rows allow 16-byte loads (each
 * thread has four times the bytes in flight: a prefill batch's ~500 MB a
 * MoE sub-layer moved at ~2 TB/s a float a thread), else 1. The same
 * arithmetic per element either way. */
template <int V>
__global__ void hc_post_fast_kernel(const float *post, const float *M, const float *y, int64_t ldy, int yparts,
                                    const float *eo, const int32_t *erow, const int32_t *ids, const float *sh, int k,
                                    int D, float *H) {
    pdl_enter();
    const int t = blockIdx.y, d = V * (blockIdx.x * blockDim.x + threadIdx.x);
    if (d >= D) return;
    float out[POST_HC][V];
    post_fast_v<V>(post + (int64_t)t * POST_HC, M + (int64_t)t * POST_HC * POST_HC, y, ldy, yparts, eo, erow, ids, sh,
                   k, D, H, t, d, out);
#pragma unroll
    for (int j = 0; j < POST_HC; j++) {
        float *o = H + ((int64_t)t * POST_HC + j) * D + d;
        if constexpr (V == 4) *(float4 *)o = make_float4(out[j][0], out[j][1], out[j][2], out[j][3]);
        else o[0] = out[j][0];
    }
}

/* A decode step's hc_post fused with the next sub-layer's HC mixer: block
 * (p, t) owns elements [PM_DB p, PM_DB (p + 1)) of all 4 streams of token t.
 * Its threads update the streams there (post_fast_d, one element each: the
 * same values as hc_post_fast_kernel, in place, as no other block reads
 * them), then its warps multiply them with the 24 mixer rows (warp w rows
 * 3w..3w+2, lane l elements 8l..8l+7 of each stream) and the block writes
 * part p of each row and of the streams' sum of squares; hc_split_collapse
 * adds the parts in order. The mixer's weights are loaded before the wait
 * for the sub-layer's output. One launch instead of two (hc_post, then
 * hc_mix_parts over stretches of K), and the streams make one trip through
 * the chip instead of three. The parts split K by element range, not by
 * stretch, so a step's mixer sums associate differently from prefill's. */
#define PM_DB 256
#define PM_ROWS 24 /* (2 + 4) x 4 mixer rows */
#define PM_RPW (PM_ROWS / (PM_DB / 32)) /* 3 mixer rows a warp */

/* A block's share of the mixer rows (warp w rows PM_RPW w .. + PM_RPW - 1,
 * lane l elements 8 l .. 8 l + 7 of each stream), loaded before the wait. */
__device__ __forceinline__ void pm_load_rows(const uint16_t *W, int64_t K, int D, int64_t e0,
                                             uint4 (&wv)[PM_RPW][POST_HC]) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int r = 0; r < PM_RPW; r++)
#pragma unroll
        for (int j = 0; j < POST_HC; j++)
            wv[r][j] = *(const uint4 *)(W + (int64_t)(PM_RPW * warp + r) * K + (int64_t)j * D + e0 + 8 * lane);
}

/* The block's hc_post and its mixer parts: element e0 + tid of token t's
 * streams updated in place with post pp and M mm (post_fast_d) and kept in
 * hn (out: this thread's), the block's sum of squares returned, and its dot
 * with mixer row r written to rows[r] (added over the warp's lanes). */
__device__ __forceinline__ float pm_post_mix(const float *pp, const float *mm, const float *y, int64_t ldy, int yparts,
                                             const float *eo, const int32_t *ids, const float *sh, int k, int D,
                                             float *H, int t, int64_t e0, const uint4 (&wv)[PM_RPW][POST_HC],
                                             float (&hn)[POST_HC][PM_DB], float *red, float *rows,
                                             float (&out)[POST_HC]) {
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    post_fast_d(pp, mm, y, ldy, yparts, eo, NULL, ids, sh, k, D, H, t, (int)e0 + tid, out);
    float sq = 0.0f;
#pragma unroll
    for (int j = 0; j < POST_HC; j++) {
        H[((int64_t)t * POST_HC + j) * D + e0 + tid] = out[j];
        hn[j][tid] = out[j];
        sq = __fmaf_rn(out[j], out[j], sq);
    }
    sq = block_sum(sq, red); /* also the barrier before hn is read */
    float acc[PM_RPW];
#pragma unroll
    for (int r = 0; r < PM_RPW; r++) {
        acc[r] = 0.0f;
#pragma unroll
        for (int j = 0; j < POST_HC; j++) {
            const float4 a = *(const float4 *)&hn[j][8 * lane], b = *(const float4 *)&hn[j][8 * lane + 4];
            acc[r] = dot8_h(wv[r][j], a, b, acc[r]);
        }
    }
#pragma unroll
    for (int r = 0; r < PM_RPW; r++) {
        const float v = warp_sum(acc[r]);
        if (lane == 0) rows[PM_RPW * warp + r] = v;
    }
    return sq;
}

__global__ void __launch_bounds__(PM_DB)
    hc_post_mix_kernel(const float *post, const float *M, const float *y, int64_t ldy, int yparts, const float *eo,
                       const int32_t *ids, const float *sh, int k, int D, float *H, const uint16_t *W, float *parts,
                       float *ss) {
    __shared__ __align__(16) float hn[POST_HC][PM_DB];
    __shared__ float red[32];
    const int p = blockIdx.x, t = blockIdx.y, n = gridDim.y, tid = threadIdx.x;
    const int64_t K = (int64_t)POST_HC * D, e0 = (int64_t)p * PM_DB;
    uint4 wv[PM_RPW][POST_HC];
    pm_load_rows(W, K, D, e0, wv);
    pdl_wait();
    pdl_trigger();
    float out[POST_HC];
    const float sq = pm_post_mix(post + (int64_t)t * POST_HC, M + (int64_t)t * POST_HC * POST_HC, y, ldy, yparts, eo,
                                 ids, sh, k, D, H, t, e0, wv, hn, red, parts + ((int64_t)p * n + t) * PM_ROWS, out);
    if (tid == 0) ss[p * n + t] = sq;
}

/* A decode step's hc_post fused with the whole HC pre of the next sub-layer
 * (ds4k_hc_post_collapse; on by default, DS4_HC_COLLAPSE=0 turns it off).
 * It replaces hc_post_mix_kernel followed by the split-collapse kernel,
 * which is a launch on the critical path of every sub-layer: its block waits for hc_post_mix to
 * finish, reads the token's 80 KB of streams and norm weights on one
 * multiprocessor, and only then can the next products start. Here the P
 * blocks of a token, each holding the new streams of its element range,
 * write their parts, meet (token_blocks_meet), and each collapses its own
 * range:
 *  - the mixer's sums and pre, from the parts in part order with the
 *    split-collapse kernel's expressions (bitwise its values);
 *  - the rmsnorm of a = sum_s pre_s H_s needs |a|^2 over all D elements. It
 *    comes from the streams' Gram matrix G, whose 10 entries each block adds
 *    over its range beside the mixer's rows: |a|^2 = sum_s pre_s sum_t pre_t
 *    G_st, so the blocks meet once, not twice. It is not the split-collapse
 *    kernel's direct sum of squares: the logits differ from the unfused
 *    path's by rounding (the test bounds the input; on the 12-layer model the
 *    decode logits moved by at most 3.6e-2 of max|logit|, argmax equal at all
 *    600 positions); pre is positive, so the sum has no cancellation beyond
 *    the streams' own.
 * The next sub-layer's post and M (the Sinkhorn's 40 dependent steps) are
 * not made here, where they would hold up the next products: its mixer sums
 * are stored (mix). The FFN's are made by an extra block of the router
 * GEMV's launch (ds4_route.hc), the attention's by an extra block of the
 * split attention (ds4k_attention's hc), each on one thread
 * (hc_split_thread); where neither applies, by the next call in its
 * prologue (SINKHORN). Where to put them was the open problem.
 * 12-layer model, H200, decode t/s against the unfused path (hc_post_mix,
 * then the split-collapse), same call: with both in the prologue, -1.5%
 * (584.25 / 592.27); with the meeting skipped
 * (wrong results, timing only) +0.3%; with the Sinkhorn skipped +2.7%; both
 * skipped +4.4%. So a meeting costs ~1.2 us, and the prologue's Sinkhorn
 * ~2.9 us a sub-layer: the launch does not start early enough to hide it.
 * With the FFN's beside the router's selection: +0.2% (592.62 / 591.60). On
 * a side stream it cost more: -4.2% with the FFN's before the shared expert,
 * -4.8% on a stream forked for it in both sub-layers. With the attention's
 * in the split attention's extra block: +0.7% (596.72 / 592.40; dispatching
 * that block first instead of last changed nothing). A trace then showed the
 * FFN's Sinkhorn outlasting the router's selection by ~2.4 us; in a block of
 * its own beside the router GEMV: +1.7% (602.46 / 592.60). Full size (H200):
 * decode +1.8 to +2.1% from 4k to 64k in one call; the decode logits within
 * 7.9e-2 of max|logit| of the unfused path's at 600 positions, argmax equal
 * at 98.5% (a reordering of the sums the random 43-layer model amplifies, as
 * o_b's K stretches did: 8.5e-2, 97.3%); two runs bitwise.
 * docs/bench/history-5.md, "twenty-sixth". */
#define PC_GRAM 10                         /* entries s <= u of the 4 x 4 Gram matrix */
#define PC_COLS (PM_ROWS + 1 + PC_GRAM)    /* a part: 24 mixer rows, the sum of squares, the Gram entries */
static_assert(PC_COLS == DS4K_HC_COLLAPSE_COLS, "cuda_kernels.h's part size");
__device__ __forceinline__ int gram_index(int s, int u) { /* s <= u: 00 01 02 03 11 12 13 22 23 33 */
    return (s == 0 ? 0 : s == 1 ? 4 : s == 2 ? 7 : 9) + u - s;
}
__device__ __forceinline__ void gram_pair(int e, int &s, int &u) { /* gram_index's inverse */
    s = e < 4 ? 0 : e < 7 ? 1 : e < 9 ? 2 : 3;
    u = s + e - gram_index(s, s);
}
__device__ __forceinline__ unsigned ld_acquire_u32(const unsigned *p) {
    unsigned v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}
/* The `blocks` blocks of a token meet here once each has written its part:
 * bar[0] counts arrivals and wraps to 0 at the last (atomicInc), bar[1] is a
 * generation the last arrival advances and the others wait for. Both return
 * to where they were by themselves, so a graph replays without a reset. A
 * block reads the generation before it counts itself (acquire: the count
 * cannot go out first), so every block waits for the same advance. The
 * blocks are co-resident: the launch after this one starts only when every
 * block has passed its pdl_trigger, and other kernels' blocks finish without
 * waiting on these. */
template <bool ONE_WORD> __device__ void token_blocks_meet(unsigned *bar, unsigned blocks) {
    __threadfence(); /* this block's part, visible before it is counted */
    __syncthreads();
    if (ONE_WORD && threadIdx.x == 0) {
        /* one word that only grows: arrival `old` waits for the end of its
         * group of `blocks` (a power of two, so the groups stay aligned when
         * the count wraps); one round trip less for the last arrival than the
         * count and generation below (DS4_HC_COLLAPSE=2: 12-layer model,
         * H200, decode -0.5% against this one) */
        const unsigned old = atomicAdd(bar, 1u), target = old - old % blocks + blocks;
        while ((int)(ld_acquire_u32(bar) - target) < 0) {
        }
        __threadfence();
    } else if (threadIdx.x == 0) {
        const unsigned g = ld_acquire_u32(bar + 1);
        if (atomicInc(bar, blocks - 1) == blocks - 1) {
            __threadfence();
            atomicAdd(bar + 1, 1u);
        } else {
            while (ld_acquire_u32(bar + 1) == g) {
            }
        }
        __threadfence();
    }
    __syncthreads();
}

template <bool ONE_WORD, bool SINKHORN>
__global__ void __launch_bounds__(PM_DB)
    hc_post_collapse_kernel(const float *y, int64_t ldy, int yparts, const float *eo, const int32_t *ids,
                            const float *sh, int k, int D, float *H, const uint16_t *W, ds4k_hc_collapse g) {
    __shared__ __align__(16) float hn[POST_HC][PM_DB];
    __shared__ float red[32], s_post[POST_HC], s_M[POST_HC * POST_HC], s_cur[PM_ROWS], s_scratch[POST_HC];
    __shared__ float s_col[PC_COLS], s_mix[PM_ROWS], s_pre[POST_HC], s_postn[POST_HC];
    const int p = blockIdx.x, t = blockIdx.y, n = gridDim.y, P = gridDim.x, tid = threadIdx.x, lane = tid & 31,
              warp = tid >> 5;
    const int64_t K = (int64_t)POST_HC * D, e0 = (int64_t)p * PM_DB;
    uint4 wv[PM_RPW][POST_HC];
    pm_load_rows(W, K, D, e0, wv);
    const float nw = g.norm[e0 + tid];
    if (SINKHORN) { /* post and M of the sub-layer that ends, from its stored mixer sums */
        if (warp == 0) {
            if (lane < PM_ROWS) s_cur[lane] = __ldcg(g.mix + (int64_t)t * PM_ROWS + lane);
            __syncwarp();
            if (lane < POST_HC) hc_pre_post(s_cur, g.cur_scale, g.cur_base, POST_HC, g.hc_eps, lane, s_scratch, s_post);
            if (lane == 0) hc_sinkhorn_thread<POST_HC>(s_cur, g.cur_scale, g.cur_base, g.iters, g.hc_eps, s_M);
        }
    } else { /* ... or as made before (written at least two kernels back) */
        if (tid < POST_HC) s_post[tid] = __ldcg(g.post + (int64_t)t * POST_HC + tid);
        else if (tid < POST_HC + POST_HC * POST_HC)
            s_M[tid - POST_HC] = __ldcg(g.M + (int64_t)t * POST_HC * POST_HC + tid - POST_HC);
    }
    __syncthreads();
    pdl_wait();
    pdl_trigger();
    float out[POST_HC];
    float *part = g.parts + ((int64_t)p * n + t) * PC_COLS;
    const float sq = pm_post_mix(s_post, s_M, y, ldy, yparts, eo, ids, sh, k, D, H, t, e0, wv, hn, red, part, out);
    for (int e = warp; e < PC_GRAM; e += PM_DB / 32) { /* warp-uniform */
        int s, u;
        gram_pair(e, s, u);
        float gs = 0.0f;
#pragma unroll
        for (int i = 0; i < 8; i++) gs = fmaf(hn[s][8 * lane + i], hn[u][8 * lane + i], gs);
        gs = warp_sum(gs);
        if (lane == 0) part[PM_ROWS + 1 + e] = gs;
    }
    if (tid == 0) part[PM_ROWS] = sq;
    token_blocks_meet<ONE_WORD>(g.bar + 2 * t, (unsigned)P);
    if (tid < PC_COLS) { /* column tid over the parts, in part order (as hc_split_collapse_kernel adds them) */
        float v[DS4K_MAX_HC_PARTS];
#pragma unroll
        for (int q = 0; q < DS4K_MAX_HC_PARTS; q++)
            v[q] = q < P ? __ldcg(g.parts + ((int64_t)q * n + t) * PC_COLS + tid) : 0.0f;
        float sum = 0.0f;
#pragma unroll
        for (int q = 0; q < DS4K_MAX_HC_PARTS; q++)
            if (q < P) sum += v[q];
        s_col[tid] = sum;
    }
    __syncthreads();
    if (tid < PM_ROWS) {
        const float inv = 1.0f / sqrtf(s_col[PM_ROWS] / (float)K + g.flat_eps);
        s_mix[tid] = s_col[tid] * inv;
    }
    __syncthreads();
    if (tid < POST_HC) hc_pre_post(s_mix, g.scale, g.base, POST_HC, g.hc_eps, tid, s_pre, s_postn);
    __syncthreads();
    float a2 = 0.0f; /* |a|^2 = sum_s pre_s sum_u pre_u G_su */
#pragma unroll
    for (int s = 0; s < POST_HC; s++) {
        float r = 0.0f;
#pragma unroll
        for (int u = 0; u < POST_HC; u++)
            r = fmaf(s_pre[u], s_col[PM_ROWS + 1 + (s <= u ? gram_index(s, u) : gram_index(u, s))], r);
        a2 = fmaf(s_pre[s], r, a2);
    }
    const float inv = 1.0f / sqrtf(a2 / (float)D + g.rms_eps);
    float v = 0.0f; /* collapse_finish's terms and rounding steps */
#pragma unroll
    for (int s = 0; s < POST_HC; s++) v = __fmaf_rn(s_pre[s], out[s], v);
    g.a[(int64_t)t * D + e0 + tid] = __fmul_rn(__fmul_rn(v, inv), nw);
    if (p == 0) {
        if (tid < PM_ROWS) g.mix[(int64_t)t * PM_ROWS + tid] = s_mix[tid];
        if (tid < POST_HC) g.pre[(int64_t)t * POST_HC + tid] = s_pre[tid];
    }
}

static void hc_post_launch(const float *post, const float *M, const float *y, int64_t ldy, int yparts,
                           const float *eo, const int32_t *erow, const int32_t *ids, const float *sh, int n, int k,
                           int hc, int D, float *H, ds4_stream st) {
    if (n <= 0) return;
    const dim3 grid((D + NT - 1) / NT, n);
    const bool fast = hc == POST_HC && (!eo || k <= POST_KMAX);
    /* a batch: four elements a thread where every row starts on 16 bytes */
    const bool v4 = n > 8 && D % 4 == 0 && ((uintptr_t)H % 16) == 0 &&
                    (!y || (ldy % 4 == 0 && ((uintptr_t)y % 16) == 0)) && ((uintptr_t)eo % 16) == 0 &&
                    ((uintptr_t)sh % 16) == 0;
    if (fast && v4)
        launch_pdl(hc_post_fast_kernel<4>, dim3((D / 4 + NT - 1) / NT, n), NT, 0, (cudaStream_t)st, post, M, y, ldy,
                   yparts, eo, erow, ids, sh, k, D, H);
    else if (fast)
        launch_pdl(hc_post_fast_kernel<1>, grid, NT, 0, (cudaStream_t)st, post, M, y, ldy, yparts, eo, erow, ids, sh, k,
                   D, H);
    else
        launch_pdl(hc_post_kernel, grid, NT, 0, (cudaStream_t)st, post, M, y, ldy, yparts, eo, erow, ids, sh, k, hc, D,
                   H);
}

extern "C" void ds4k_hc_post(const float *post, const float *M, const float *y, int64_t ldy, int yparts, int n, int hc,
                             int D, float *H, ds4_stream st) {
    hc_post_launch(post, M, y, ldy, yparts, NULL, NULL, NULL, NULL, n, 0, hc, D, H, st);
}

extern "C" void ds4k_hc_post_moe(const float *post, const float *M, const float *eo, const int32_t *erow,
                                 const int32_t *ids, const float *sh, int n, int k, int hc, int D, float *H,
                                 ds4_stream st) {
    hc_post_launch(post, M, NULL, 0, 1, eo, erow, ids, sh, n, k, hc, D, H, st);
}

extern "C" int ds4k_hc_post_mix(const float *post, const float *M, const float *y, int64_t ldy, int yparts,
                                const float *eo, const int32_t *ids, const float *sh, int n, int k, int hc, int D,
                                float *H, const ds4_dw *W, int rows, float *parts, float *ss, ds4_stream st) {
    const int P = D / PM_DB;
    if (hc != POST_HC || rows != PM_ROWS || (eo && k > POST_KMAX) || D % PM_DB != 0 || P > DS4K_MAX_HC_PARTS ||
        W->type != 1 /* F16 */ || W->K != (int64_t)hc * D || W->N < rows || ((uintptr_t)W->ptr % 16) != 0 || n < 1)
        return -1;
    launch_pdl(hc_post_mix_kernel, dim3(P, n), PM_DB, 0, (cudaStream_t)st, post, M, y, ldy, yparts, eo, ids, sh, k, D,
               H, (const uint16_t *)W->ptr, parts, ss);
    return P;
}

/* DS4_HC_COLLAPSE: unset or 1, ds4k_hc_post_collapse (the default); 0,
 * hc_post_mix and the split-collapse kernel (A/B, tests); 2, the collapse
 * with the meeting by count and generation */
static int g_hc_collapse = -1;
extern "C" int ds4k_hc_collapse_enable(int on) {
    if (g_hc_collapse < 0) {
        const char *e = getenv("DS4_HC_COLLAPSE");
        g_hc_collapse = e && !strcmp(e, "0") ? 0 : e && !strcmp(e, "2") ? 2 : 1;
    }
    const int was = g_hc_collapse;
    if (on >= 0) g_hc_collapse = on;
    return was;
}

extern "C" int ds4k_hc_post_collapse(const float *y, int64_t ldy, int yparts, const float *eo, const int32_t *ids,
                                     const float *sh, int n, int k, int hc, int D, float *H,
                                     const ds4k_hc_collapse *g, ds4_stream st) {
    const int P = D / PM_DB, mode = ds4k_hc_collapse_enable(-1);
    const ds4_dw *W = g->W;
    if (!mode || hc != POST_HC || (eo && k > POST_KMAX) || D % PM_DB != 0 ||
        P > DS4K_MAX_HC_PARTS || n < 1 || n > DS4K_HC_COLLAPSE_MAX_TOKENS || W->type != 1 /* F16 */ ||
        W->K != (int64_t)hc * D || W->N < PM_ROWS || ((uintptr_t)W->ptr % 16) != 0)
        return -1;
    const bool one = mode == 1 && (P & (P - 1)) == 0;
    void (*kern)(const float *, int64_t, int, const float *, const int32_t *, const float *, int, int, float *,
                 const uint16_t *, ds4k_hc_collapse) =
        one ? (g->cur_scale ? hc_post_collapse_kernel<true, true> : hc_post_collapse_kernel<true, false>)
            : (g->cur_scale ? hc_post_collapse_kernel<false, true> : hc_post_collapse_kernel<false, false>);
    launch_pdl(kern, dim3(P, n), PM_DB, 0, (cudaStream_t)st, y, ldy, yparts, eo, ids, sh, k, D, H,
               (const uint16_t *)W->ptr, *g);
    return 0;
}

__global__ void __launch_bounds__(1024)
    hc_head_kernel(const float *mix, const float *scale, const float *base, int hc, float hc_eps, const float *H, int D,
                   const float *norm, float rms_eps, float *z) {
    pdl_enter();
    __shared__ float wts[DS4K_MAX_HC], red[32];
    const int t = blockIdx.x;
    if (threadIdx.x < hc) wts[threadIdx.x] = dev_sigmoid(mix[(int64_t)t * hc + threadIdx.x] * scale[0] + base[threadIdx.x]) + hc_eps;
    __syncthreads();
    collapse_norm(H + (int64_t)t * hc * D, wts, hc, D, norm, rms_eps, z + (int64_t)t * D, red, 0);
}

extern "C" void ds4k_hc_head(const float *mix, const float *scale, const float *base, int hc, float hc_eps,
                             const float *H, int D, const float *norm, float rms_eps, int n, float *z, ds4_stream st) {
    if (n > 0)
        launch_pdl(hc_head_kernel, n, row_threads(D), 0, (cudaStream_t)st, mix, scale, base, hc, hc_eps, H, D, norm,
                   rms_eps, z);
}

/* Shared-memory limit of the batched mixer, set once at start-up (before any
 * graph capture). */
extern "C" int ds4k_hc_init(void) {
    return cudaFuncSetAttribute(hc_mix_parts_tok_kernel<MIX_ROWS>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                MIX_SMEM_MAX) == cudaSuccess
               ? 0
               : -1;
}
