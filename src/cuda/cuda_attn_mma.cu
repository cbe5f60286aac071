/* ds4 — prefill sink attention on the tensor cores (twin: att_range in
 * src/cpu/cpu_attention.c, and attention_kernel in cuda_attn.cu, which
 * still serves f32 caches, other head sizes and the decode path).
 *
 * All heads of a token attend the same rows (one shared KV head), and a row
 * is both key and value. A block takes one token and 32 heads and walks the
 * token's rows in chunks of 32 (flash attention):
 *
 *   S = Q . K^T    32 heads x 32 rows, K = the chunk's f16 rows (exact), Q in
 *                  f16 hi + lo (~22 bits), f32 accumulation;
 *   softmax        running max m and sum l per head, started at the sink
 *                  (m = sink, l = 1), so the sink joins the denominator as in
 *                  the CPU's max(sink, scores) form; old sums rescaled by
 *                  exp(m_old - m_new);
 *   O += P . V     P in f16 hi + lo, V = the same rows.
 *
 * Each chunk of rows is read once for 32 heads (the SIMT kernel read it once
 * per 16 heads and did every product on the CUDA cores). Every sum has a
 * fixed order: deterministic. The output is divided by l, inverse-RoPE'd and
 * stored like the SIMT kernel's. */
#include "cuda/cuda_attn.cuh"
#include "cuda/cuda_kernels.h"
#include "cuda/cuda_ops.cuh"
#include "cuda/cuda_tc.cuh"

#include <stdlib.h>
#include <string.h>

#define AM_HB 32      /* heads per block */
#define AM_RC 32      /* rows per chunk */
#define AM_PLD 40     /* halves per P row (32 + 8: ldmatrix rows on distinct banks) */
#define AM_THREADS 256

/* Shared bytes for head dim hd: Q hi/lo (later the f32 output), the row
 * chunk, the scores, P hi/lo and the per-head statistics. */
static size_t am_smem(int hd) {
    const size_t ld = (size_t)hd + 8;
    return 2 * AM_HB * ld * 2 + AM_RC * ld * 2 + AM_HB * AM_RC * 4 + 2 * AM_HB * AM_PLD * 2 + 3 * AM_HB * 4;
}

__global__ void __launch_bounds__(AM_THREADS) attention_mma_kernel(
    const float *q, const int *d_pos, int H, int hd, float scale, const float *sinks, const void *ring, int raw_cap,
    int window, const void *comp, int ratio, bool csa, const int32_t *sel_all, const int *n_sel, int topk,
    const double *freqs, int n_pairs, float *o) {
    pdl_enter();
    extern __shared__ __align__(16) uint8_t am_sm[];
    const int LD = hd + 8;
    __half *qh = (__half *)am_sm, *ql = qh + AM_HB * LD, *kc = ql + AM_HB * LD;
    float *S = (float *)(kc + AM_RC * LD);
    __half *ph = (__half *)(S + AM_HB * AM_RC), *pl = ph + AM_HB * AM_PLD;
    float *sm = (float *)(pl + AM_HB * AM_PLD), *sl = sm + AM_HB, *salpha = sl + AM_HB;
    float *out = (float *)am_sm; /* after the last chunk: AM_HB x hd floats over Q */

    const int t = blockIdx.x, h0 = blockIdx.y * AM_HB;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
    const int64_t p = (int64_t)d_pos[0] + t;
    int64_t lo;
    int n_raw;
    const int32_t *sel;
    const int nr = visible_rows(p, t, window, ratio, csa, sel_all, n_sel, topk, &lo, &n_raw, &sel);

    /* Q as float4s, four a thread loaded before any is split: one round trip
     * to memory for each four, not one per element */
    const int n4 = AM_HB * hd / 4;
    for (int i0 = tid; i0 < n4; i0 += 4 * AM_THREADS) {
        float4 v[4];
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const int i = i0 + u * AM_THREADS, hh = 4 * i / hd;
            v[u] = i < n4 && h0 + hh < H ? ((const float4 *)(q + ((int64_t)t * H + h0 + hh) * hd))[i % (hd / 4)]
                                         : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const int i = i0 + u * AM_THREADS, hh = 4 * i / hd, d = 4 * i % hd;
            if (i >= n4) break;
            const float f[4] = {v[u].x, v[u].y, v[u].z, v[u].w};
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const __half hi = __float2half_rn(f[e]);
                qh[hh * LD + d + e] = hi;
                ql[hh * LD + d + e] = __float2half_rn(f[e] - __half2float(hi));
            }
        }
    }
    if (tid < AM_HB) {
        sm[tid] = h0 + tid < H ? sinks[h0 + tid] : 0.0f; /* running max starts at the sink ... */
        sl[tid] = 1.0f;                                   /* ... whose exp(sink - m) = 1 */
    }
    const int ntd = hd / 64; /* 8-wide output n-tiles per warp: the warp owns dims [w hd/8, (w+1) hd/8) */
    float acc[2][DS4K_MAX_HEAD_DIM / 64][4];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < DS4K_MAX_HEAD_DIM / 64; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;
    const int mt_s = warp & 1, nt_s = warp >> 1; /* this warp's 16 x 8 tile of S */
    __syncthreads();

    for (int c0 = 0; c0 < nr; c0 += AM_RC) {
        const int rows = nr - c0 < AM_RC ? nr - c0 : AM_RC;
        const int segs = hd / 8; /* 16-byte pieces per row */
        /* the chunk by cp.async, every piece of a thread in flight at once
         * (plain loads each waited for their store: a round trip a piece) */
        for (int i = tid; i < AM_RC * segs; i += AM_THREADS) {
            const int r = i / segs, sg = i % segs;
            if (r < rows) {
                int64_t off;
                const void *base = att_row(c0 + r, n_raw, lo, ring, raw_cap, comp, sel, hd, true, &off);
                cp_async16(kc + r * LD + 8 * sg, (const uint4 *)((const uint16_t *)base + off) + sg);
            } else {
                *(uint4 *)(kc + r * LD + 8 * sg) = make_uint4(0, 0, 0, 0);
            }
        }
        cp_async_commit();
        cp_async_wait<0>();
        __syncthreads();

        /* scores of heads 16 mt_s.., rows 8 nt_s.. */
        {
            float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            for (int k0 = 0; k0 < hd; k0 += 32) {
                uint32_t b[4], ah[4], al[4];
                ldsm_x4(b, kc + (8 * nt_s + (lane & 7)) * LD + k0 + 8 * (lane >> 3));
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    const int off = (16 * mt_s + (lane & 15)) * LD + k0 + 16 * h + 8 * (lane >> 4);
                    ldsm_x4(ah, qh + off);
                    ldsm_x4(al, ql + off);
                    mma16816(d, ah, b[2 * h], b[2 * h + 1]);
                    mma16816(d, al, b[2 * h], b[2 * h + 1]);
                }
            }
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int hh = 16 * mt_s + g + 8 * (e >> 1), r = 8 * nt_s + 2 * t4 + (e & 1);
                S[hh * AM_RC + r] = r < rows ? d[e] * scale : -INFINITY;
            }
        }
        __syncthreads();

        /* online softmax: warp w owns heads 4w .. 4w+3, lane = row */
        for (int hh = 4 * warp; hh < 4 * warp + 4; hh++) {
            const float sv = S[hh * AM_RC + lane];
            const float m_old = sm[hh];
            const float m_new = fmaxf(m_old, warp_max(sv));
            const float pj = sv == -INFINITY ? 0.0f : expf(sv - m_new);
            const float sum = warp_sum(pj);
            const float alpha = expf(m_old - m_new);
            const __half hi = __float2half_rn(pj);
            ph[hh * AM_PLD + lane] = hi;
            pl[hh * AM_PLD + lane] = __float2half_rn(pj - __half2float(hi));
            __syncwarp();
            if (lane == 0) {
                sl[hh] = sl[hh] * alpha + sum;
                sm[hh] = m_new;
                salpha[hh] = alpha;
            }
        }
        __syncthreads();

        /* O = alpha O + P . V over this warp's dims */
#pragma unroll
        for (int mt = 0; mt < 2; mt++) {
            const float a0 = salpha[16 * mt + g], a1 = salpha[16 * mt + g + 8];
#pragma unroll
            for (int nt = 0; nt < DS4K_MAX_HEAD_DIM / 64; nt++) {
                if (nt >= ntd) break;
                acc[mt][nt][0] *= a0, acc[mt][nt][1] *= a0, acc[mt][nt][2] *= a1, acc[mt][nt][3] *= a1;
            }
        }
#pragma unroll
        for (int kk = 0; kk < 2; kk++) { /* rows 16 kk .. 16 kk + 15 of the chunk */
            uint32_t pah[2][4], pal[2][4];
#pragma unroll
            for (int mt = 0; mt < 2; mt++) {
                const int off = (16 * mt + (lane & 15)) * AM_PLD + 16 * kk + 8 * (lane >> 4);
                ldsm_x4(pah[mt], ph + off);
                ldsm_x4(pal[mt], pl + off);
            }
#pragma unroll
            for (int nt = 0; nt < DS4K_MAX_HEAD_DIM / 64; nt += 2) {
                if (nt >= ntd) break;
                uint32_t b[4]; /* n-tiles nt and nt + 1 */
                const int d0 = warp * (hd / 8) + 8 * nt;
                ldsm_x4_t(b, kc + (16 * kk + (lane & 15)) * LD + d0 + 8 * (lane >> 4));
#pragma unroll
                for (int mt = 0; mt < 2; mt++) {
                    mma16816(acc[mt][nt], pah[mt], b[0], b[1]);
                    mma16816(acc[mt][nt], pal[mt], b[0], b[1]);
                    mma16816(acc[mt][nt + 1], pah[mt], b[2], b[3]);
                    mma16816(acc[mt][nt + 1], pal[mt], b[2], b[3]);
                }
            }
        }
        __syncthreads(); /* the chunk, S and P are rewritten next */
    }

    /* normalize into shared memory (over Q, no longer needed), inverse RoPE, store */
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int nt = 0; nt < DS4K_MAX_HEAD_DIM / 64; nt++) {
            if (nt >= ntd) break;
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int hh = 16 * mt + g + 8 * (e >> 1), d = warp * (hd / 8) + 8 * nt + 2 * t4 + (e & 1);
                out[hh * hd + d] = acc[mt][nt][e] / sl[hh];
            }
        }
    __syncthreads();
    const int heads = H - h0 < AM_HB ? H - h0 : AM_HB;
    for (int i = tid; i < heads * n_pairs; i += AM_THREADS) {
        const int hh = i / n_pairs, k = i % n_pairs;
        float *x = out + hh * hd + hd - 2 * n_pairs;
        float c, s;
        dev_rope_cs(p, freqs[k], &c, &s);
        s = -s;
        const float a = x[2 * k], b = x[2 * k + 1];
        x[2 * k] = a * c - b * s;
        x[2 * k + 1] = a * s + b * c;
    }
    __syncthreads();
    for (int i = tid; i < heads * hd; i += AM_THREADS) o[((int64_t)t * H + h0) * hd + i] = out[i];
}

static int g_att_mma = -1, g_att_mma_env = 1; /* ds4k_attention_mma_enable; DS4_ATT_MMA=0: always off */

extern "C" int ds4k_attention_mma_enable(int on) {
    const int was = g_att_mma == 1;
    if (g_att_mma < 0) { /* first use: read the environment and set the shared-memory limit */
        g_att_mma_env = env_switch_on("DS4_ATT_MMA");
    }
    g_att_mma = on && g_att_mma_env &&
                        cudaFuncSetAttribute(attention_mma_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             (int)am_smem(DS4K_MAX_HEAD_DIM)) == cudaSuccess
                    ? 1
                    : 0;
    return was;
}

/* Launches the tensor-core attention when it applies (f16 rows, head dim a
 * multiple of 64 up to DS4K_MAX_HEAD_DIM, 16-byte aligned rows); false
 * otherwise (nothing launched). */
bool attention_mma(const float *q, int n, const int *d_pos, int H, int hd, float scale, const float *sinks,
                   const void *ring, int raw_cap, int window, const void *comp, int ratio, bool csa,
                   const int32_t *sel, const int *n_sel, int topk, bool f16, const double *freqs, int n_pairs,
                   float *o, cudaStream_t st) {
    if (g_att_mma < 0) ds4k_attention_mma_enable(1);
    const bool allowed = g_att_mma == 1;
    if (!allowed || !f16 || hd % 64 != 0 || hd > DS4K_MAX_HEAD_DIM || ((uintptr_t)ring % 16) != 0 ||
        (comp && ((uintptr_t)comp % 16) != 0))
        return false;
    launch_pdl(attention_mma_kernel, dim3(n, (H + AM_HB - 1) / AM_HB), AM_THREADS, am_smem(hd), st, q, d_pos, H, hd,
               scale, sinks, ring, raw_cap, window, comp, ratio, csa, sel, n_sel, topk, freqs, n_pairs, o);
    return true;
}
