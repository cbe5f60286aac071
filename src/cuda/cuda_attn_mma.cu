/* ds4 — prefill sink attention on the tensor cores (twin: att_range in
 * src/cpu/cpu_attention.c, and attention_kernel in cuda_attn.cu, which
 * still serves f32 caches, other head sizes and the decode path).
 *
 * All heads of a token attend the same rows (one shared KV head), and a row
 * is both key and value. A block takes one token and 64 heads (16 warps,
 * one block a multiprocessor) and walks the token's rows in chunks of 32
 * (flash attention):
 *
 *   S = Q . K^T    64 heads x 32 rows, K = the chunk's f16 rows (exact), Q in
 *                  f16 hi + lo (~22 bits), f32 accumulation;
 *   softmax        running max m and sum l per head, started at the sink
 *                  (m = sink, l = 1), so the sink joins the denominator as in
 *                  the CPU's max(sink, scores) form; old sums rescaled by
 *                  exp(m_old - m_new);
 *   O += P . V     P in f16 hi + lo, V = the same rows.
 *
 * Each chunk is read once for all 64 heads, copied by cp.async into one of
 * two buffers while the other is multiplied. bf16 and fp8 rows
 * (--kv-type) are loaded into registers instead while the other buffer is
 * multiplied, and stored as f16 at the next chunk's start: each value
 * rounded to f16 as an f16 cache would have stored it, so fp8 rows give
 * the f16 rows' products exactly. With 32 heads a block (two
 * blocks a multiprocessor, one buffer) the kernel took 8% longer (12-layer
 * prefill, docs/BENCHMARKS.md). Shared-memory traffic bounds the scores:
 * a warp takes two 16 x 8 tiles over half the head dim, so each Q element
 * is read by two warps (with one tile over all of it, by four). Every sum
 * has a fixed order: deterministic. The output is divided by l,
 * inverse-RoPE'd and stored like the SIMT kernel's. */
#include "cuda/cuda_attn.cuh"
#include "cuda/cuda_kernels.h"
#include "cuda/cuda_kvrow.cuh"
#include "cuda/cuda_ops.cuh"
#include "cuda/cuda_tc.cuh"

#include <stdlib.h>
#include <string.h>

#define AM_HB 64      /* heads per block (all of the published model's) */
#define AM_RC 32      /* rows per chunk */
#define AM_PLD 40     /* halves per P row (32 + 8: ldmatrix rows on distinct banks) */
#define AM_WARPS 16
#define AM_THREADS (32 * AM_WARPS)

/* Shared bytes for head dim hd: Q hi/lo (later the f32 output), two row
 * chunks, the scores, P hi/lo and the per-head statistics: 213.75 KiB at
 * hd = 512, one block a multiprocessor. */
static size_t am_smem(int hd) {
    const size_t ld = (size_t)hd + 8;
    return 2 * AM_HB * ld * 2 + 2 * AM_RC * ld * 2 + AM_HB * AM_RC * 4 + 2 * AM_HB * AM_PLD * 2 + 3 * AM_HB * 4;
}

/* A thread's pieces of a chunk in flight (bf16 and fp8 rows): 16-byte
 * pieces of 8 elements, AM_RC * hd / 8 of a chunk over AM_THREADS. */
#define AM_PIECES (AM_RC * DS4K_MAX_HEAD_DIM / 8 / AM_THREADS)

/* Piece sg (elements 8 sg .. 8 sg + 7) of a row in format F as its bytes:
 * bf16 as they are; fp8 codes in x and y, the block's exponent in z, or the
 * f16 tail's 16 bytes. */
template <int F>
__device__ __forceinline__ uint4 am_piece_load(const uint8_t *row, int sg, int hd, int nope) {
    if (F == DS4_ROW_FP8) {
        if (8 * sg >= nope) return *(const uint4 *)(row + ds4_fp8_tail_at(nope) + 2 * (8 * sg - nope));
        const uint2 c = *(const uint2 *)(row + 8 * sg);
        return make_uint4(c.x, c.y, (uint32_t)row[ds4_fp8_exps_at(hd, nope) + sg / 8], 0u);
    }
    return *(const uint4 *)(row + 16 * sg);
}
/* ... and as 8 f16 (each value rounded to f16 once). */
template <int F>
__device__ __forceinline__ uint4 am_piece_f16(uint4 u, int sg, int nope) {
    float e[8];
    if (F == DS4_ROW_FP8 && 8 * sg >= nope) return u;
    if (F == DS4_ROW_FP8) {
        const float s = exp2i((int8_t)u.z);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const float2 p = e4m3x2_val((k < 2 ? u.x : u.y) >> (16 * (k & 1)), s);
            e[2 * k] = p.x, e[2 * k + 1] = p.y;
        }
    } else {
        const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int k = 0; k < 4; k++) e[2 * k] = bf16_bits_val(w[k] & 0xffffu), e[2 * k + 1] = bf16_bits_val(w[k] >> 16);
    }
    uint32_t h[4];
#pragma unroll
    for (int k = 0; k < 4; k++) {
        const __half2 p = __floats2half2_rn(e[2 * k], e[2 * k + 1]);
        h[k] = *(const uint32_t *)&p;
    }
    return make_uint4(h[0], h[1], h[2], h[3]);
}

template <int F>
__global__ void __launch_bounds__(AM_THREADS, 1) attention_mma_kernel(
    const float *q, const int *d_pos, int H, int hd, float scale, const float *sinks, const void *ring, int raw_cap,
    int window, const void *comp, int ratio, bool csa, const int32_t *sel_all, const int *n_sel, int topk,
    const double *freqs, int n_pairs, float *o) {
    pdl_enter();
    extern __shared__ __align__(16) uint8_t am_sm[];
    const int LD = hd + 8;
    __half *qh = (__half *)am_sm, *ql = qh + AM_HB * LD, *kbuf = ql + AM_HB * LD;
    float *S = (float *)(kbuf + 2 * AM_RC * LD);
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

    /* chunk c0's rows into buf by cp.async, every piece of a thread in flight
     * at once; rows past the end are zeros. bf16 / fp8 rows: into the
     * registers `pend`, which land() stores into the chunk's buffer. */
    const int segs = hd / 8; /* 16-byte pieces per row */
    /* f16 rows spelled out: from n_pairs and ds4_kvrow_bytes the f16
     * instance spilled 12 bytes instead of 4 at its 128 registers */
    const int nope = F == DS4_ROW_F16 ? hd : hd - 2 * n_pairs;
    const int rbytes = F == DS4_ROW_F16 ? 2 * hd : (int)ds4_kvrow_bytes((ds4_row_fmt)F, hd, nope);
    uint4 pend[AM_PIECES];
    auto issue = [&](int c0, __half *buf) {
        const int rows = nr - c0 < AM_RC ? nr - c0 : AM_RC;
        if (F != DS4_ROW_F16) {
#pragma unroll
            for (int k = 0; k < AM_PIECES; k++) {
                const int i = tid + k * AM_THREADS, r = i / segs, sg = i % segs;
                pend[k] = i < AM_RC * segs && r < rows
                              ? am_piece_load<F>(att_row(c0 + r, n_raw, lo, ring, raw_cap, comp, sel, rbytes), sg, hd, nope)
                              : make_uint4(0u, 0u, 0u, 0u);
            }
        } else {
            for (int i = tid; i < AM_RC * segs; i += AM_THREADS) {
                const int r = i / segs, sg = i % segs;
                if (r < rows)
                    cp_async16(buf + r * LD + 8 * sg, att_row(c0 + r, n_raw, lo, ring, raw_cap, comp, sel, rbytes) + 16 * sg);
                else
                    *(uint4 *)(buf + r * LD + 8 * sg) = make_uint4(0, 0, 0, 0);
            }
            cp_async_commit();
        }
    };
    auto land = [&](int c0, __half *buf) {
        const int rows = nr - c0 < AM_RC ? nr - c0 : AM_RC;
#pragma unroll
        for (int k = 0; k < AM_PIECES; k++) {
            const int i = tid + k * AM_THREADS, r = i / segs, sg = i % segs;
            if (i < AM_RC * segs) *(uint4 *)(buf + r * LD + 8 * sg) = r < rows ? am_piece_f16<F>(pend[k], sg, nope) : pend[k];
        }
    };
    if (nr > 0) issue(0, kbuf); /* in flight while Q is split */

    /* Q as float4s, four a thread loaded before any is split */
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
    const int ntd = hd / 128; /* 8-wide output n-tiles per warp: the warp owns dims [w hd/16, (w+1) hd/16) */
    float acc[4][DS4K_MAX_HEAD_DIM / 128][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < DS4K_MAX_HEAD_DIM / 128; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;
    /* this warp's part of S: heads 16 mt_s.., rows 16 nh_s.., half kh_s of
     * the head dim (each Q element read by two warps, not four) */
    const int mt_s = warp & 3, nh_s = (warp >> 2) & 1, kh_s = warp >> 3;

    for (int c0 = 0, c = 0; c0 < nr; c0 += AM_RC, c++) {
        const int rows = nr - c0 < AM_RC ? nr - c0 : AM_RC;
        __half *kc = kbuf + (c & 1) * AM_RC * LD;
        if (F == DS4_ROW_F16) cp_async_wait<0>(); /* this thread's pieces of the chunk */
        else land(c0, kc);
        __syncthreads();    /* everyone's; and every warp is past the last chunk's products */
        if (c0 + AM_RC < nr) issue(c0 + AM_RC, kbuf + ((c + 1) & 1) * AM_RC * LD); /* lands during this chunk */

        /* scores: this warp's two 16 x 8 tiles over its half of the head
         * dim (hi and lo products in separate sums); the second half's
         * warps store theirs, the first half's add them, in that order */
        {
            float d[2][2][4] = {}; /* [n-tile][hi, lo] */
            const int kb = kh_s * (hd / 2);
            for (int k0 = kb; k0 < kb + hd / 2; k0 += 32) {
                uint32_t b0[4], b1[4], ah[4], al[4];
                ldsm_x4(b0, kc + (16 * nh_s + (lane & 7)) * LD + k0 + 8 * (lane >> 3));
                ldsm_x4(b1, kc + (16 * nh_s + 8 + (lane & 7)) * LD + k0 + 8 * (lane >> 3));
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    const int off = (16 * mt_s + (lane & 15)) * LD + k0 + 16 * h + 8 * (lane >> 4);
                    ldsm_x4(ah, qh + off);
                    ldsm_x4(al, ql + off);
                    mma16816(d[0][0], ah, b0[2 * h], b0[2 * h + 1]);
                    mma16816(d[0][1], al, b0[2 * h], b0[2 * h + 1]);
                    mma16816(d[1][0], ah, b1[2 * h], b1[2 * h + 1]);
                    mma16816(d[1][1], al, b1[2 * h], b1[2 * h + 1]);
                }
            }
            if (kh_s == 1)
#pragma unroll
                for (int i = 0; i < 8; i++) {
                    const int nt = i >> 2, e = i & 3;
                    const int hh = 16 * mt_s + g + 8 * (e >> 1), r = 16 * nh_s + 8 * nt + 2 * t4 + (e & 1);
                    S[hh * AM_RC + r] = d[nt][0][e] + d[nt][1][e];
                }
            __syncthreads();
            if (kh_s == 0)
#pragma unroll
                for (int i = 0; i < 8; i++) {
                    const int nt = i >> 2, e = i & 3;
                    const int hh = 16 * mt_s + g + 8 * (e >> 1), r = 16 * nh_s + 8 * nt + 2 * t4 + (e & 1);
                    const float v = (d[nt][0][e] + d[nt][1][e]) + S[hh * AM_RC + r];
                    S[hh * AM_RC + r] = r < rows ? v * scale : -INFINITY;
                }
        }
        __syncthreads();

        /* online softmax: warp w owns heads 4w .. 4w+3 (their reductions
         * interleaved), lane = row */
        {
            const int hb = 4 * warp;
            float sv[4], mx[4], sum[4];
#pragma unroll
            for (int j = 0; j < 4; j++) sv[j] = S[(hb + j) * AM_RC + lane], mx[j] = sv[j];
#pragma unroll
            for (int o = 16; o > 0; o >>= 1)
#pragma unroll
                for (int j = 0; j < 4; j++) mx[j] = fmaxf(mx[j], __shfl_xor_sync(0xffffffffu, mx[j], o));
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const float m_new = fmaxf(sm[hb + j], mx[j]);
                const float pj = sv[j] == -INFINITY ? 0.0f : expf(sv[j] - m_new);
                const __half hi = __float2half_rn(pj);
                ph[(hb + j) * AM_PLD + lane] = hi;
                pl[(hb + j) * AM_PLD + lane] = __float2half_rn(pj - __half2float(hi));
                mx[j] = m_new;
                sum[j] = pj;
            }
#pragma unroll
            for (int o = 16; o > 0; o >>= 1)
#pragma unroll
                for (int j = 0; j < 4; j++) sum[j] += __shfl_xor_sync(0xffffffffu, sum[j], o);
            __syncwarp();
            if (lane < 4) {
                const float m_old = sm[hb + lane];
                const float m_new = lane == 0 ? mx[0] : lane == 1 ? mx[1] : lane == 2 ? mx[2] : mx[3];
                const float s_new = lane == 0 ? sum[0] : lane == 1 ? sum[1] : lane == 2 ? sum[2] : sum[3];
                const float alpha = expf(m_old - m_new);
                sl[hb + lane] = sl[hb + lane] * alpha + s_new;
                sm[hb + lane] = m_new;
                salpha[hb + lane] = alpha;
            }
        }
        __syncthreads();

        /* O = alpha O + P . V over this warp's dims */
#pragma unroll
        for (int mt = 0; mt < 4; mt++) {
            const float a0 = salpha[16 * mt + g], a1 = salpha[16 * mt + g + 8];
#pragma unroll
            for (int nt = 0; nt < DS4K_MAX_HEAD_DIM / 128; nt++) {
                if (nt >= ntd) break;
                acc[mt][nt][0] *= a0, acc[mt][nt][1] *= a0, acc[mt][nt][2] *= a1, acc[mt][nt][3] *= a1;
            }
        }
#pragma unroll
        for (int kk = 0; kk < 2; kk++) { /* rows 16 kk .. 16 kk + 15 of the chunk */
            uint32_t pah[4][4], pal[4][4];
#pragma unroll
            for (int mt = 0; mt < 4; mt++) {
                const int off = (16 * mt + (lane & 15)) * AM_PLD + 16 * kk + 8 * (lane >> 4);
                ldsm_x4(pah[mt], ph + off);
                ldsm_x4(pal[mt], pl + off);
            }
#pragma unroll
            for (int nt = 0; nt < DS4K_MAX_HEAD_DIM / 128; nt += 2) {
                if (nt >= ntd) break;
                uint32_t b[4]; /* n-tiles nt and nt + 1 (for hd = 128 the second is the next warp's, unused) */
                const int d0 = warp * (hd / 16) + 8 * nt;
                ldsm_x4_t(b, kc + (16 * kk + (lane & 15)) * LD + d0 + 8 * (lane >> 4));
#pragma unroll
                for (int mt = 0; mt < 4; mt++) {
                    mma16816(acc[mt][nt], pah[mt], b[0], b[1]);
                    mma16816(acc[mt][nt], pal[mt], b[0], b[1]);
                    if (nt + 1 < DS4K_MAX_HEAD_DIM / 128) {
                        mma16816(acc[mt][nt + 1], pah[mt], b[2], b[3]);
                        mma16816(acc[mt][nt + 1], pal[mt], b[2], b[3]);
                    }
                }
            }
        }
    }
    __syncthreads(); /* every warp's last products are done: Q's space takes the output */

    /* normalize into shared memory (over Q), inverse RoPE, store */
#pragma unroll
    for (int mt = 0; mt < 4; mt++)
#pragma unroll
        for (int nt = 0; nt < DS4K_MAX_HEAD_DIM / 128; nt++) {
            if (nt >= ntd) break;
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int hh = 16 * mt + g + 8 * (e >> 1), d = warp * (hd / 16) + 8 * nt + 2 * t4 + (e & 1);
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
    const int smem = (int)am_smem(DS4K_MAX_HEAD_DIM);
    g_att_mma = on && g_att_mma_env &&
                        cudaFuncSetAttribute(attention_mma_kernel<DS4_ROW_F16>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize, smem) == cudaSuccess &&
                        cudaFuncSetAttribute(attention_mma_kernel<DS4_ROW_BF16>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize, smem) == cudaSuccess &&
                        cudaFuncSetAttribute(attention_mma_kernel<DS4_ROW_FP8>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize, smem) == cudaSuccess
                    ? 1
                    : 0;
    return was;
}

/* Launches the tensor-core attention when it applies (f16, bf16 or fp8
 * rows, head dim a multiple of 128 up to DS4K_MAX_HEAD_DIM, fp8 rows' f16
 * tail a multiple of 8 wide, 16-byte aligned rows); false otherwise
 * (nothing launched). */
bool attention_mma(const float *q, int n, const int *d_pos, int H, int hd, float scale, const float *sinks,
                   const void *ring, int raw_cap, int window, const void *comp, int ratio, bool csa,
                   const int32_t *sel, const int *n_sel, int topk, int fmt, const double *freqs, int n_pairs,
                   float *o, cudaStream_t st) {
    if (g_att_mma < 0) ds4k_attention_mma_enable(1);
    const bool allowed = g_att_mma == 1;
    if (!allowed || fmt == DS4_ROW_F32 || hd % 128 != 0 || hd > DS4K_MAX_HEAD_DIM || (2 * n_pairs) % 8 != 0 ||
        ((uintptr_t)ring % 16) != 0 || (comp && ((uintptr_t)comp % 16) != 0))
        return false;
    const dim3 grid(n, (H + AM_HB - 1) / AM_HB);
    if (fmt == DS4_ROW_BF16)
        launch_pdl(attention_mma_kernel<DS4_ROW_BF16>, grid, AM_THREADS, am_smem(hd), st, q, d_pos, H, hd, scale, sinks,
                   ring, raw_cap, window, comp, ratio, csa, sel, n_sel, topk, freqs, n_pairs, o);
    else if (fmt == DS4_ROW_FP8)
        launch_pdl(attention_mma_kernel<DS4_ROW_FP8>, grid, AM_THREADS, am_smem(hd), st, q, d_pos, H, hd, scale, sinks,
                   ring, raw_cap, window, comp, ratio, csa, sel, n_sel, topk, freqs, n_pairs, o);
    else
        launch_pdl(attention_mma_kernel<DS4_ROW_F16>, grid, AM_THREADS, am_smem(hd), st, q, d_pos, H, hd, scale, sinks,
                   ring, raw_cap, window, comp, ratio, csa, sel, n_sel, topk, freqs, n_pairs, o);
    return true;
}
