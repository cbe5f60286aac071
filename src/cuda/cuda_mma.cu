/* ds4 — prefill matrix products on the tensor cores, weights dequantized
 * tile by tile (no expanded copy of any weight).
 *
 * A block computes 128 weight rows x 128 tokens (64 or 32 for small batches
 * and the routed experts' segment remainders); its 8 warps each own 32 rows
 * x a quarter of the tokens as mma.m16n8k16 tiles. K is walked one
 * 32-element slice at a time, through two shared-memory stages (the next
 * slice is staged while this one is multiplied), or three where the
 * activations come split already (below):
 *
 *   weights  the slice's quantized values go to shared memory as f16 (they
 *            are small integers — Q8_0 bytes, K-quant levels, IQ2 grid
 *            values — or the F16 weight itself: exact), with the slice's
 *            scale (and K-quant minimum) per row or per 16-element half;
 *   tokens   each token is scaled by the power of two that brings its
 *            largest element to [2^13, 2^14) (a pre-pass, token_scale_kernel)
 *            and each value split into two f16 terms, hi + lo, which
 *            together keep ~22 bits (f16 alone would keep 11) — by every
 *            block as it stages a slice, or once for all readers by
 *            split_rows_kernel (the routed experts' gathered rows, which
 *            then arrive by cp.async two slices ahead, bitwise the same);
 *   product  integer-valued weights times hi and lo on the tensor cores with
 *            f32 accumulation, then acc += w_scale * dot - w_min * sum(x)
 *            per row and token in f32; the token's scale is undone at the end.
 *
 * So the products are the CPU's up to f32 rounding (the kernel test bounds
 * it at the matmul's 1e-6 of |w| |x|), and every output is accumulated in a
 * fixed order: results are deterministic and independent of the grid. */
#include "cuda/cuda_gemv.cuh"
#include "cuda/cuda_kernels.h"
#include "cuda/cuda_ops.cuh"
#include "cuda/cuda_quant.cuh"
#include "cuda/cuda_tc.cuh"

#include <stdlib.h>
#include <string.h>

#define MM_BM 128
#define MM_LD 40 /* halves per staged row: 32 + 8 padding (ldmatrix rows hit distinct banks) */

/* ------------------------------------------------------------------ weight slices */

/* Two bytes of a word as f16 integers without conversion instructions:
 * PRMT places byte k and byte k+1 under the exponent byte 0x64, which reads
 * as the half 1024 + byte, and one packed subtraction removes the 1024
 * (bias 1024 + 128 for bytes that were int8 xor 0x80). Exact: every value
 * is an integer below 2048. */
__device__ __forceinline__ uint32_t bytes_to_h2(uint32_t word, int k, float bias) {
    const uint32_t v = __byte_perm(word, 0x6464u, (uint32_t)k | (4u << 4) | ((uint32_t)(k + 1) << 8) | (5u << 12));
    const __half2 h = __hsub2(*(const __half2 *)&v, __float2half2_rn(bias));
    return *(const uint32_t *)&h;
}

/* IQ2_XXS signs: for 7 stored sign bits (plus parity), the sign bits of the
 * four half2 pairs of a grid entry (bit 15 and 31 set where negative). */
static __device__ const uint4 *d_iq2_pair_signs;

/* The raw bytes a thread needs for 16 values (half `hf` of slice s of a
 * row), loaded one step ahead so the loads are in flight during the
 * previous step's products; decoded into f16 values (exact small integers,
 * or the F16 weights), a scale and a minimum: w = scale * q - min. */
typedef struct wraw {
    uint32_t w[8];
    uint32_t d, x;
} wraw;

template <int T> __device__ __forceinline__ void wload(const uint8_t *row, int s, int hf, wraw &r);
/* IQ2_XXS lookup tables as the block sees them: copies in shared memory
 * (random 8- and 16-byte reads from the 2 KiB global tables replayed one
 * L1 line at a time; from shared memory they cost a few bank passes). */
typedef struct iq2_tabs {
    const uint64_t *grid;
    const uint4 *signs;
} iq2_tabs;

template <int T>
__device__ __forceinline__ void wdecode(const wraw &r, int s, int hf, const iq2_tabs &tb, uint32_t *q8, float *sc,
                                        float *mn);

template <> __device__ __forceinline__ void wload<T_Q8_0>(const uint8_t *row, int s, int hf, wraw &r) {
    const uint8_t *b = row + 34 * s;
#pragma unroll
    for (int i = 0; i < 8; i++) r.w[i] = ld_a16(b + 2 + 16 * hf + 2 * i);
    r.d = ld_a16(b);
}
template <>
__device__ __forceinline__ void wdecode<T_Q8_0>(const wraw &r, int, int, const iq2_tabs &,
                                                    uint32_t *q8, float *sc, float *mn) {
#pragma unroll
    for (int i = 0; i < 8; i++) q8[i] = bytes_to_h2(r.w[i] ^ 0x8080u, 0, 1152.0f);
    *sc = h2f((uint16_t)r.d);
    *mn = 0.0f;
}

template <> __device__ __forceinline__ void wload<T_IQ2_XXS>(const uint8_t *row, int s, int, wraw &r) {
    const uint8_t *b = row + 66 * (s >> 3);
    const uint8_t *g = b + 2 + 8 * (s & 7);
    r.w[0] = ld_a16(g) | (ld_a16(g + 2) << 16); /* four grid indices */
    r.w[1] = ld_a16(g + 4) | (ld_a16(g + 6) << 16);
    r.d = ld_a16(b);
}
template <>
__device__ __forceinline__ void wdecode<T_IQ2_XXS>(const wraw &r, int, int hf, const iq2_tabs &tb,
                                                    uint32_t *q8, float *sc, float *mn) {
    const uint32_t idx = r.w[0], a1 = r.w[1];
#pragma unroll
    for (int e = 0; e < 2; e++) { /* grid entries 2hf, 2hf+1: 8 values each */
        const int i = 2 * hf + e;
        const uint64_t gv = tb.grid[(idx >> (8 * i)) & 0xff];
        const uint4 sg = tb.signs[(a1 >> (7 * i)) & 127];
        const uint32_t lo = (uint32_t)gv, hi = (uint32_t)(gv >> 32);
        q8[4 * e + 0] = bytes_to_h2(lo, 0, 1024.0f) ^ sg.x;
        q8[4 * e + 1] = bytes_to_h2(lo, 2, 1024.0f) ^ sg.y;
        q8[4 * e + 2] = bytes_to_h2(hi, 0, 1024.0f) ^ sg.z;
        q8[4 * e + 3] = bytes_to_h2(hi, 2, 1024.0f) ^ sg.w;
    }
    *sc = __fmul_rn(__fmul_rn(h2f((uint16_t)r.d), 0.5f + (float)(a1 >> 28)), 0.25f);
    *mn = 0.0f;
}

/* Four words of packed K-quant levels (2 or 4 bits, at `shift`) as eight
 * half2 pairs of exact f16 integers. */
__device__ __forceinline__ void levels_to_h2(const uint32_t *w, int shift, uint32_t mask, uint32_t *q8) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const uint32_t word = (w[i] >> shift) & mask;
        q8[2 * i] = bytes_to_h2(word, 0, 1024.0f);
        q8[2 * i + 1] = bytes_to_h2(word, 2, 1024.0f);
    }
}

template <> __device__ __forceinline__ void wload<T_Q2_K>(const uint8_t *row, int s, int hf, wraw &r) {
    const uint8_t *b = row + 84 * (s >> 3);
    const int j = s & 7;
    const uint8_t *qs = b + 16 + 32 * (j >> 2) + 16 * hf;
#pragma unroll
    for (int w = 0; w < 4; w++) r.w[w] = ld_a32(qs + 4 * w);
    r.d = ld_a32(b + 80);
    r.x = b[2 * j + hf];
}
template <>
__device__ __forceinline__ void wdecode<T_Q2_K>(const wraw &r, int s, int, const iq2_tabs &,
                                                    uint32_t *q8, float *sc, float *mn) {
    levels_to_h2(r.w, 2 * (s & 3), 0x03030303u, q8);
    *sc = __fmul_rn(h2f((uint16_t)(r.d & 0xffff)), (float)(r.x & 15));
    *mn = __fmul_rn(h2f((uint16_t)(r.d >> 16)), (float)(r.x >> 4));
}

template <> __device__ __forceinline__ void wload<T_Q4_K>(const uint8_t *row, int s, int hf, wraw &r) {
    const uint8_t *b = row + 144 * (s >> 3);
    const int j = s & 7;
    int scale, m;
    q4k_scale_min(b + 4, j, &scale, &m);
    const uint8_t *qs = b + 16 + 32 * (j >> 1) + 16 * hf;
#pragma unroll
    for (int w = 0; w < 4; w++) r.w[w] = ld_a32(qs + 4 * w);
    r.d = ld_a32(b);
    r.x = (uint32_t)scale | ((uint32_t)m << 8);
}
template <>
__device__ __forceinline__ void wdecode<T_Q4_K>(const wraw &r, int s, int, const iq2_tabs &,
                                                    uint32_t *q8, float *sc, float *mn) {
    levels_to_h2(r.w, 4 * (s & 1), 0x0f0f0f0fu, q8);
    *sc = __fmul_rn(h2f((uint16_t)(r.d & 0xffff)), (float)(r.x & 0xff));
    *mn = __fmul_rn(h2f((uint16_t)(r.d >> 16)), (float)(r.x >> 8));
}

template <> __device__ __forceinline__ void wload<T_F16>(const uint8_t *row, int s, int hf, wraw &r) {
    const uint4 *p = (const uint4 *)(row + 64 * s + 32 * hf);
    const uint4 u0 = p[0], u1 = p[1];
    r.w[0] = u0.x, r.w[1] = u0.y, r.w[2] = u0.z, r.w[3] = u0.w;
    r.w[4] = u1.x, r.w[5] = u1.y, r.w[6] = u1.z, r.w[7] = u1.w;
}
template <>
__device__ __forceinline__ void wdecode<T_F16>(const wraw &r, int, int, const iq2_tabs &,
                                                    uint32_t *q8, float *sc, float *mn) {
#pragma unroll
    for (int i = 0; i < 8; i++) q8[i] = r.w[i];
    *sc = 1.0f;
    *mn = 0.0f;
}

template <int T> struct mm_traits {
    static constexpr bool has_min = T == T_Q2_K || T == T_Q4_K;
    static constexpr bool half_scales = T == T_Q2_K; /* a scale per 16, not per 32 */
};

/* ------------------------------------------------------------------ token scales */

/* Per token, the power of two that brings its largest |x| to [2^13, 2^14):
 * up[t] scales x into the f16 range before the hi/lo split, down[t] = 1/up
 * scales the product back (both exact). One block per token. */
/* The token scale for largest |x| = m: up brings m to [2^13, 2^14), down
 * undoes it (token_scale_kernel and split_rows_kernel). */
__device__ __forceinline__ void pow2_scales(float m, float *up, float *down) {
    int e = 0;
    if (m > 0.0f && m <= 3.0e38f) frexpf(m, &e);
    e = e < -100 ? -100 : e; /* below 2^-100 the token is zero for any product */
    *up = ldexpf(1.0f, 14 - e);
    *down = ldexpf(1.0f, e - 14);
}

__global__ void token_scale_kernel(const float *X, int64_t ldx, int64_t K, float *up, float *down) {
    pdl_enter();
    __shared__ float red[32];
    const float *x = X + (int64_t)blockIdx.x * ldx;
    float m = 0.0f;
    for (int64_t k = threadIdx.x; k < K; k += blockDim.x) m = fmaxf(m, fabsf(x[k]));
    m = block_max(m, red);
    if (threadIdx.x == 0) pow2_scales(m, &up[blockIdx.x], &down[blockIdx.x]);
}

/* ------------------------------------------------------------------ the kernel */

/* Block: MM_BM rows x BN tokens, 8 warps as 4 (rows) x 2 (tokens) — of
 * routed-expert segment blockIdx.z (segs), or of group blockIdx.z (several
 * row blocks of one weight over stretches of the activations: the grouped
 * output projection); warp tile
 * 32 rows x BN/2 tokens = 2 x BN/16 mma tiles. Staging: thread tid handles
 * weight row tid / 2 and token tid / 2 (when < BN), 16 values each (half
 * tid & 1 of the slice). The next slice's raw bytes and activations are
 * loaded before this slice's products, so the loads overlap them. */
/* Shared memory of one pipeline stage (two stages: the next slice is staged
 * while this one is multiplied, one barrier per slice). */
template <int BN> struct mm_stage {
    __half w[MM_BM * MM_LD];
    __half xh[BN * MM_LD], xl[BN * MM_LD];
    float wsc[MM_BM][2], wmn[MM_BM][2], xsum[BN][2];
};

/* Two blocks a multiprocessor for both tile widths: the registers are
 * capped at 128 (a few bytes spill, ~180 for the K-quants), which measured
 * 5% faster on the whole prefill than one 255-register block (8 warps could
 * not hide the staging and barrier of each slice). */
/* Stages of the pipeline: two when the block splits the activations itself
 * (their next slice waits in registers), three when they come split
 * (PRE: cp.async two slices ahead, nothing held in registers). */
template <bool PRE> constexpr int mm_stages() { return PRE ? 3 : 2; }

/* Dynamic shared memory of a launch: the stages, plus the IQ2_XXS tables. */
template <int T, int BN, bool PRE> constexpr size_t mm_smem_bytes() {
    return mm_stages<PRE>() * sizeof(mm_stage<BN>) +
           (T == T_IQ2_XXS ? 256 * sizeof(uint64_t) + 128 * sizeof(uint4) : 0);
}

/* The activations as PRE tiles read them (split_rows_kernel wrote them in
 * place of the f32 rows): row t is f16 hi[K] then lo[K] at X + t * ldx
 * floats; down[t] undoes the row's power-of-two scale; xsum[t][K/16] holds
 * the scaled 16-sums the K-quants' minimums need. */
typedef struct mm_split {
    const float *down, *xsum;
} mm_split;

template <int T, int BN, bool PRE>
__global__ void __launch_bounds__(256, 2) mma_tile_kernel(const uint8_t *W, int64_t rb, int64_t r0,
                                                                          int64_t rows, int64_t K, const float *X,
                                                                          int64_t ldx, int n, float *Y, int64_t ldy,
                                                                          const seg3 *segs, int64_t gx, int64_t gy,
                                                                          const float *tup, const float *tdown,
                                                                          mm_split sp) {
    pdl_enter();
    constexpr int NT = BN / 16; /* n-tiles per warp */
    constexpr int NS = mm_stages<PRE>();
    extern __shared__ __align__(16) uint8_t mm_smem[];
    mm_stage<BN> *stg = (mm_stage<BN> *)mm_smem;
    const int tbase = blockIdx.y * BN;
    int tok0 = 0; /* first row of X / Y (and of the token scales) */
    if (segs) {
        const seg3 sg = segs[blockIdx.z];
        if (tbase >= sg.count) return;
        r0 += sg.row0;
        tok0 = sg.x0;
        n = sg.count;
    } else if (tbase >= n) {
        return;
    } else if (gridDim.z > 1) { /* group z: rows z * rows.., activations + z * gx, outputs + z * gy */
        r0 += (int64_t)blockIdx.z * rows;
        X += (int64_t)blockIdx.z * gx;
        Y += (int64_t)blockIdx.z * gy;
    }
    X += (int64_t)tok0 * ldx;
    Y += (int64_t)tok0 * ldy;
    const float *xsums = PRE ? sp.xsum + (int64_t)tok0 * (K / 16) : NULL;
    tup += PRE ? 0 : tok0;
    tdown = PRE ? sp.down + tok0 : tdown + tok0;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int wm = warp >> 1, wn = warp & 1;
    const int64_t rbase = (int64_t)blockIdx.x * MM_BM;
    const int sr = tid >> 1, shf = tid & 1;
    const int64_t wrow = rbase + sr;
    const uint8_t *wptr = wrow < rows ? W + (r0 + wrow) * rb : NULL;
    const int xt = tbase + sr;
    const bool stage_x = !PRE && sr < BN;
    const float *xptr = stage_x && xt < n ? X + (int64_t)xt * ldx : NULL;
    const float up = xptr ? tup[xt] : 0.0f;
    iq2_tabs tabs = {NULL, NULL};
    if (T == T_IQ2_XXS) { /* after the stages: 256 grid entries, 128 sign patterns */
        uint64_t *grid = (uint64_t *)(stg + NS);
        uint4 *signs = (uint4 *)(grid + 256);
        grid[tid] = d_iq2xxs_grid[tid];
        if (tid < 128) signs[tid] = d_iq2_pair_signs[tid];
        tabs.grid = grid;
        tabs.signs = signs;
        __syncthreads(); /* read by the first stage() below */
    }

    float acc[2][NT][4];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;

    const int nsl = (int)(K / 32);
    wraw wr = {};
    float4 xr[4]; /* !PRE: the next slice's activations (unused with PRE) */
    auto load = [&](int s) {
        if (wptr) wload<T>(wptr, s, shf, wr);
        if constexpr (!PRE) {
            if (xptr) {
                const float4 *p = (const float4 *)(xptr + 32 * s + 16 * shf);
#pragma unroll
                for (int i = 0; i < 4; i++) xr[i] = p[i];
            } else {
#pragma unroll
                for (int i = 0; i < 4; i++) xr[i] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            }
        }
    };
    /* PRE: slice s of the split activations into stage st, one copy group:
     * a token's hi and lo are 4 + 4 16-byte pieces; tokens past n fill with
     * zeros. */
    auto fetch_x = [&](mm_stage<BN> &st, int s) {
        if (s < nsl) {
#pragma unroll
            for (int j = 0; j < BN * 8 / 256; j++) {
                const int c = tid + 256 * j, tt = c >> 3, part = c & 7;
                const int t = tbase + tt;
                const __half *row = (const __half *)(X + (int64_t)(t < n ? t : 0) * ldx);
                const __half *src = row + (part < 4 ? 0 : K) + 32 * s + 8 * (part & 3);
                __half *dst = (part < 4 ? st.xh : st.xl) + tt * MM_LD + 8 * (part & 3);
                cp_async16_zfill(dst, src, t < n ? 16 : 0);
            }
            if (mm_traits<T>::has_min && tid < BN) {
                const int t = tbase + tid;
                cp_async8_zfill(&st.xsum[tid][0], xsums + (int64_t)(t < n ? t : 0) * (K / 16) + 2 * s, t < n ? 8 : 0);
            }
        }
        cp_async_commit(); /* empty past the end: the wait count stays uniform */
    };
    /* slice s (its raw data in wr / xr) into stage st */
    auto stage = [&](mm_stage<BN> &st, int s) {
        uint32_t q8[8];
        float sc = 0.0f, mn = 0.0f;
        if (wptr) {
            wdecode<T>(wr, s, shf, tabs, q8, &sc, &mn);
        } else {
#pragma unroll
            for (int i = 0; i < 8; i++) q8[i] = 0;
        }
        uint4 *dst = (uint4 *)(st.w + sr * MM_LD + 16 * shf);
        dst[0] = make_uint4(q8[0], q8[1], q8[2], q8[3]);
        dst[1] = make_uint4(q8[4], q8[5], q8[6], q8[7]);
        st.wsc[sr][shf] = sc;
        st.wmn[sr][shf] = mn;
        if constexpr (!PRE) {
            if (!stage_x) return;
            const float v[16] = {xr[0].x, xr[0].y, xr[0].z, xr[0].w, xr[1].x, xr[1].y, xr[1].z, xr[1].w,
                                 xr[2].x, xr[2].y, xr[2].z, xr[2].w, xr[3].x, xr[3].y, xr[3].z, xr[3].w};
            uint32_t hi[8], lo[8];
#pragma unroll
            for (int i = 0; i < 8; i++) split_hilo(v[2 * i] * up, v[2 * i + 1] * up, &hi[i], &lo[i]);
            if (mm_traits<T>::has_min) {
                float sum = 0.0f;
#pragma unroll
                for (int i = 0; i < 16; i++) sum += v[i];
                st.xsum[sr][shf] = sum * up;
            }
            uint4 *dh = (uint4 *)(st.xh + sr * MM_LD + 16 * shf), *dl = (uint4 *)(st.xl + sr * MM_LD + 16 * shf);
            dh[0] = make_uint4(hi[0], hi[1], hi[2], hi[3]);
            dh[1] = make_uint4(hi[4], hi[5], hi[6], hi[7]);
            dl[0] = make_uint4(lo[0], lo[1], lo[2], lo[3]);
            dl[1] = make_uint4(lo[4], lo[5], lo[6], lo[7]);
        }
    };
    const int g = lane >> 2, t4 = lane & 3;
    if (PRE) {
        fetch_x(stg[0], 0);
        fetch_x(stg[1], 1);
    }
    load(0);
    stage(stg[0], 0);
    if (nsl > 1) load(1);
    if (PRE) cp_async_wait<1>(); /* slice 0's activations are in */
    __syncthreads();
    for (int s = 0; s < nsl; s++) {
        const mm_stage<BN> &st = stg[s % NS];
        /* PRE: slice s + 2 into the stage read by iteration s - 1 (free since
         * its closing barrier) */
        if (PRE) fetch_x(stg[(s + 2) % NS], s + 2);
        uint32_t a[2][2][4];
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int h = 0; h < 2; h++)
                ldsm_x4(a[mt][h], st.w + (32 * wm + 16 * mt + (lane & 15)) * MM_LD + 16 * h + 8 * (lane >> 4));
        float sa[2][2][2], ma[2][2][2]; /* [mt][row g / g+8][half] */
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int rr = 0; rr < 2; rr++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    sa[mt][rr][h] = st.wsc[32 * wm + 16 * mt + g + 8 * rr][h];
                    ma[mt][rr][h] = mm_traits<T>::has_min ? st.wmn[32 * wm + 16 * mt + g + 8 * rr][h] : 0.0f;
                }
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            const int tok = (BN / 2) * wn + 8 * nt;
            uint32_t bh[4], bl[4]; /* k 0-7, 8-15, 16-23, 24-31 of 8 tokens */
            ldsm_x4(bh, st.xh + (tok + (lane & 7)) * MM_LD + 8 * (lane >> 3));
            ldsm_x4(bl, st.xl + (tok + (lane & 7)) * MM_LD + 8 * (lane >> 3));
#pragma unroll
            for (int mt = 0; mt < 2; mt++) {
                if (mm_traits<T>::half_scales) {
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                        mma16816(d, a[mt][h], bh[2 * h], bh[2 * h + 1]);
                        mma16816(d, a[mt][h], bl[2 * h], bl[2 * h + 1]);
#pragma unroll
                        for (int e = 0; e < 4; e++) acc[mt][nt][e] = fmaf(sa[mt][e >> 1][h], d[e], acc[mt][nt][e]);
                        const float s0 = st.xsum[tok + 2 * t4][h], s1 = st.xsum[tok + 2 * t4 + 1][h];
#pragma unroll
                        for (int e = 0; e < 4; e++)
                            acc[mt][nt][e] = fmaf(-ma[mt][e >> 1][h], e & 1 ? s1 : s0, acc[mt][nt][e]);
                    }
                } else {
                    float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        mma16816(d, a[mt][h], bh[2 * h], bh[2 * h + 1]);
                        mma16816(d, a[mt][h], bl[2 * h], bl[2 * h + 1]);
                    }
#pragma unroll
                    for (int e = 0; e < 4; e++) acc[mt][nt][e] = fmaf(sa[mt][e >> 1][0], d[e], acc[mt][nt][e]);
                    if (mm_traits<T>::has_min) {
                        const float s0 = st.xsum[tok + 2 * t4][0] + st.xsum[tok + 2 * t4][1];
                        const float s1 = st.xsum[tok + 2 * t4 + 1][0] + st.xsum[tok + 2 * t4 + 1][1];
#pragma unroll
                        for (int e = 0; e < 4; e++)
                            acc[mt][nt][e] = fmaf(-ma[mt][e >> 1][0], e & 1 ? s1 : s0, acc[mt][nt][e]);
                    }
                }
            }
        }
        /* the next slice's weights into their stage (free since the last
         * barrier), then its successor's loads */
        if (s + 1 < nsl) {
            stage(stg[(s + 1) % NS], s + 1);
            if (s + 2 < nsl) load(s + 2);
        }
        if (PRE) cp_async_wait<1>(); /* slice s + 1's activations are in (s + 2's may fly) */
        __syncthreads();
    }

#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int64_t r = rbase + 32 * wm + 16 * mt + g + 8 * (e >> 1);
                const int t = tbase + (BN / 2) * wn + 8 * nt + 2 * t4 + (e & 1);
                if (r < rows && t < n) Y[(int64_t)t * ldy + r] = acc[mt][nt][e] * tdown[t];
            }
}

/* Rows split once for the tiles of every product that reads them: the same
 * power-of-two scale and hi/lo halves a tile would make of a row (bitwise),
 * and (xsum non-NULL) the scaled 16-sums; with perm (the readers are
 * cuda_wgmma.cu's) the pairs in its order and the sums as its f16 records.
 * Split row i is token i / groups, group i % groups (X + t ldx + g gx: the
 * grouped output projection splits each group's stretch with its own
 * scale), written to dst + i ldd floats: in place for the routed experts'
 * gathered rows (mma_split_rows), into a scratch buffer for the dense
 * products (mma_split_rows_to). One block per split row; the row goes
 * through shared memory (its halves may overwrite its floats), with a
 * padding float after every 16 so the 16-sums (one group a thread) read
 * distinct banks. */
__device__ __forceinline__ int split_slot(int k) { return k + (k >> 4); }

/* Where the pair at physical position 2k of a split row comes from when the
 * row is split for the wgmma products (cuda_wgmma.cu): inside each 32-slice,
 * k16 step s, position p holds group t4 = (p & 7) / 2's values 4s + (p & 1)
 * (p < 8) or 4s + 2 + (p & 1) (p >= 8), so a thread's A fragment over the
 * slice's two steps is one 8-value group. */
__device__ __forceinline__ int split_src_pair(int k, bool perm) {
    if (!perm) return 2 * k;
    const int P = 2 * k, in = P & 31, step = in >> 4, p = in & 15;
    return (P & ~31) + 8 * ((p & 7) >> 1) + 4 * step + 2 * (p >> 3);
}

/* The optional SwiGLU in front of a split (the routed experts' down input):
 * each value is swiglu_at's (swiglu_kernel's expression), so the split is
 * bitwise that of swiglu_kernel's output. */
struct split_swiglu {
    const float *U; /* NULL: the rows as they are */
    float L;
    const float *wts; /* a weight a row, or NULL */
};

__global__ void split_rows_kernel(const float *X, int64_t ldx, int64_t gx, int groups, float *dst, int64_t ldd,
                                  int K, float *down, float *xsum, bool perm, bool lo_too, split_swiglu sw) {
    pdl_enter();
    extern __shared__ float row_s[];
    __shared__ float red[32];
    const int64_t t = blockIdx.x / groups, g = blockIdx.x % groups;
    const float *x = X + t * ldx + g * gx;
    const float *u = sw.U ? sw.U + t * ldx + g * gx : NULL;
    float m = 0.0f;
    if (((uintptr_t)x & 15) == 0 && ((uintptr_t)u & 15) == 0) {
        /* float4 loads (K % 32 == 0: every caller checks), four a thread
         * (and four of u) issued before any is stored. A float at a time,
         * each load waited behind the store before it and the kernel moved
         * ~2.3 TB/s: 41.7 -> 26.8 us a launch, prefill +1-2%
         * (docs/bench/history-3.md, "nineteenth") */
        const float4 *x4 = (const float4 *)x, *u4 = (const float4 *)u;
        const int K4 = K / 4;
        for (int k0 = threadIdx.x; k0 < K4; k0 += 4 * blockDim.x) {
            float4 v[4], w[4];
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int k = k0 + e * blockDim.x;
                v[e] = k < K4 ? x4[k] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                if (u) w[e] = k < K4 ? u4[k] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            }
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int k = k0 + e * blockDim.x;
                if (k >= K4) break;
                if (u)
                    v[e] = make_float4(swiglu_at(v[e].x, w[e].x, sw.L, sw.wts, t),
                                       swiglu_at(v[e].y, w[e].y, sw.L, sw.wts, t),
                                       swiglu_at(v[e].z, w[e].z, sw.L, sw.wts, t),
                                       swiglu_at(v[e].w, w[e].w, sw.L, sw.wts, t));
                float *d = row_s + split_slot(4 * k); /* a group's four floats are adjacent: 4k + e + k / 4 */
                d[0] = v[e].x, d[1] = v[e].y, d[2] = v[e].z, d[3] = v[e].w;
                m = fmaxf(m, fmaxf(fmaxf(fabsf(v[e].x), fabsf(v[e].y)), fmaxf(fabsf(v[e].z), fabsf(v[e].w))));
            }
        }
    } else {
        for (int k = threadIdx.x; k < K; k += blockDim.x) {
            const float v = u ? swiglu_at(x[k], u[k], sw.L, sw.wts, t) : x[k];
            row_s[split_slot(k)] = v;
            m = fmaxf(m, fabsf(v));
        }
    }
    m = block_max(m, red); /* its barriers also order every read of x before the writes (in place) */
    float up, dn;
    pow2_scales(m, &up, &dn);
    if (threadIdx.x == 0) down[blockIdx.x] = dn;
    /* half2 pairs: hi[K / 2] then lo[K / 2]; with perm each 32-slice's 16
     * hi pairs then its 16 lo pairs (a slice's 128 bytes, one row of the
     * wgmma kernel's tensor-memory copies) */
    uint32_t *row = (uint32_t *)(dst + (int64_t)blockIdx.x * ldd);
    for (int k = threadIdx.x; k < K / 2; k += blockDim.x) {
        const int src = split_src_pair(k, perm);
        uint32_t *hi = perm ? row + 32 * (k >> 4) + (k & 15) : row + k, *lo = perm ? hi + 16 : hi + K / 2;
        uint32_t h, l;
        split_hilo(row_s[split_slot(src)] * up, row_s[split_slot(src + 1)] * up, &h, &l);
        *hi = h;
        if (lo_too) *lo = l; /* (the wgmma products without their lo halves never read them) */
    }
    if (xsum)
        for (int gi = threadIdx.x; gi < K / 16; gi += blockDim.x) {
            float sum = 0.0f;
            for (int i = 0; i < 16; i++) sum += row_s[17 * gi + i];
            if (!perm) {
                xsum[(int64_t)blockIdx.x * (K / 16) + gi] = sum * up;
            } else { /* the wgmma products' B for the minimums: per super-block hi[16] lo[16] of sum / 16 */
                const float v = sum * up * 0.0625f;
                const __half h = __float2half_rn(v);
                __half *rec = (__half *)(xsum + (int64_t)blockIdx.x * (K / 16)) + 32 * (gi >> 4) + (gi & 15);
                rec[0] = h;
                rec[16] = __float2half_rn(v - __half2float(h));
            }
        }
}

/* Rows of a dense split (mma_split_rows_to, one group: n_src rows of K
 * floats, then a scale a row) gathered: dst row r (ldd floats apart) is
 * split row idx[r], dst_down[r] its scale. A row's split depends on that
 * row alone, so this is bitwise what splitting the gathered floats in place
 * gives (mma_split_rows), without the float rows' round trip. Without the
 * lo halves only the hi ones are copied: in the wgmma order each 32-slice's
 * 16 hi pairs are its first 64 bytes. Each thread issues its loads before
 * any store (a load behind the previous store would wait for it). */
#define GATHER_UNITS 4 /* 16-byte units a thread has in flight */
__global__ void gather_split_kernel(const float *src, int64_t K, int n_src, const int32_t *idx, float *dst, int64_t ldd,
                                    float *dst_down, bool lo_too) {
    pdl_enter();
    const int r = blockIdx.x;
    const int64_t t = idx[r];
    const uint4 *s = (const uint4 *)(src + t * K);
    uint4 *d = (uint4 *)(dst + (int64_t)r * ldd);
    const int units = (int)(lo_too ? K / 4 : K / 8); /* 16-byte units to copy */
    for (int i0 = threadIdx.x; i0 < units; i0 += GATHER_UNITS * blockDim.x) {
        uint4 v[GATHER_UNITS];
#pragma unroll
        for (int u = 0; u < GATHER_UNITS; u++) {
            const int i = i0 + u * blockDim.x, at = lo_too ? i : 8 * (i >> 2) + (i & 3);
            if (i < units) v[u] = s[at];
        }
#pragma unroll
        for (int u = 0; u < GATHER_UNITS; u++) {
            const int i = i0 + u * blockDim.x, at = lo_too ? i : 8 * (i >> 2) + (i & 3);
            if (i < units) d[at] = v[u];
        }
    }
    if (threadIdx.x == 0) dst_down[r] = src[(int64_t)n_src * K + t];
}

/* ------------------------------------------------------------------ launch */

static int g_mma_on = 1;  /* ds4k_mma_enable */
static int g_mma_env = 1; /* DS4_MMA=0 in the environment: always off (A/B timing) */

/* Token scales: a grow-only device buffer (prefill batches are never
 * captured in a graph, so allocating here is allowed). */
static float *g_scales;
static size_t g_scales_cap;

template <int T, int BN, bool PRE>
static void launch_tiles(dim3 grid, const uint8_t *W, int64_t rb, int64_t r0, int64_t rows, int64_t K, const float *X,
                         int64_t ldx, int n, float *Y, int64_t ldy, const seg3 *segs, int64_t gx, int64_t gy,
                         const float *up, const float *down, mm_split sp, cudaStream_t s) {
    launch_pdl((mma_tile_kernel<T, BN, PRE>), grid, 256, (mm_smem_bytes<T, BN, PRE>()), s, W, rb, r0, rows, K, X, ldx,
               n, Y, ldy, segs, gx, gy, up, down, sp);
}

template <int T>
static bool launch_t(const uint8_t *W, int64_t rb, int64_t r0, int64_t rows, int64_t K, const float *X, int64_t ldx,
                     int n, float *Y, int64_t ldy, const seg3 *segs, int n_segs, int max_count, int groups, int64_t gx,
                     int64_t gy, const float *split_aux, cudaStream_t s) {
    float *up = NULL, *down = NULL;
    const mm_split sp = {split_aux ? split_aux + (int64_t)n * (K / 16) : NULL, split_aux}; /* sums first: 8-byte copies */
    if (!split_aux) {
        if ((size_t)n * 2 > g_scales_cap) {
            cudaStreamSynchronize(s);
            cudaFree(g_scales);
            g_scales = NULL;
            g_scales_cap = 0;
            if (cudaMalloc(&g_scales, (size_t)n * 2 * sizeof(float)) != cudaSuccess) return false;
            g_scales_cap = (size_t)n * 2;
        }
        up = g_scales, down = g_scales + n;
        /* one scale per token over every element any group reads */
        launch_pdl(token_scale_kernel, n, 256, 0, s, X, ldx, (int64_t)(groups - 1) * gx + K, up, down);
    }
    const int cols = segs ? max_count : n, bn = mma_tile_tokens(cols, segs != NULL);
    const dim3 grid((unsigned)((rows + MM_BM - 1) / MM_BM), (unsigned)((cols + bn - 1) / bn),
                    (unsigned)(segs ? n_segs : groups));
#define MM_TILE_ARGS W, rb, r0, rows, K, X, ldx, n, Y, ldy, segs, gx, gy, up, down, sp, s
    if (bn == 128) {
        if (split_aux) launch_tiles<T, 128, true>(grid, MM_TILE_ARGS);
        else launch_tiles<T, 128, false>(grid, MM_TILE_ARGS);
    } else if (bn == 64) {
        if (split_aux) launch_tiles<T, 64, true>(grid, MM_TILE_ARGS);
        else launch_tiles<T, 64, false>(grid, MM_TILE_ARGS);
    } else {
        if (split_aux) launch_tiles<T, 32, true>(grid, MM_TILE_ARGS);
        else launch_tiles<T, 32, false>(grid, MM_TILE_ARGS);
    }
#undef MM_TILE_ARGS
    return true;
}

bool mma_needs_sums(int type) {
    switch (type) {
    case T_Q2_K: return mm_traits<T_Q2_K>::has_min;
    case T_Q4_K: return mm_traits<T_Q4_K>::has_min;
    default: return false;
    }
}

bool mma_takes(int type, const void *W, int64_t rb, int64_t K) {
    if (!g_mma_on || K % 32 != 0) return false;
    switch (type) {
    case T_Q8_0:
    case T_Q2_K:
    case T_Q4_K:
    case T_IQ2_XXS: return true;
    case T_F16: return ((uintptr_t)W % 16) == 0 && rb % 16 == 0; /* 16-byte weight loads */
    default: return false;
    }
}

bool mma_matmul(int type, const void *W, int64_t rb, int64_t r0, int64_t rows, int64_t K, const float *X, int64_t ldx,
                int n, float *Y, int64_t ldy, const void *segs, int n_segs, int max_count, int groups, int64_t gx,
                int64_t gy, const float *split_aux, cudaStream_t s) {
    /* float4 activation loads (16-byte copies of split rows) */
    if (!mma_takes(type, W, rb, K) || n <= 0 || ldx % 4 != 0 || gx % 4 != 0 || ((uintptr_t)X % 16) != 0) return false;
    if (groups < 1 || (segs && groups != 1) || (split_aux && groups != 1)) return false;
    const uint8_t *w = (const uint8_t *)W;
    const seg3 *sg = (const seg3 *)segs;
#define MM_ARGS w, rb, r0, rows, K, X, ldx, n, Y, ldy, sg, n_segs, max_count, groups, gx, gy, split_aux, s
    switch (type) {
    case T_Q8_0: return launch_t<T_Q8_0>(MM_ARGS);
    case T_Q2_K: return launch_t<T_Q2_K>(MM_ARGS);
    case T_Q4_K: return launch_t<T_Q4_K>(MM_ARGS);
    case T_IQ2_XXS: return launch_t<T_IQ2_XXS>(MM_ARGS);
    case T_F16: return launch_t<T_F16>(MM_ARGS);
    default: return false;
    }
#undef MM_ARGS
}

/* Rows of at most this many values can be split (the row passes through
 * shared memory): the model's widest expert input is n_embd = 4096. */
#define MM_SPLIT_MAX_K 12288

static size_t split_smem_bytes(int64_t K) { return (size_t)(K + K / 16) * sizeof(float); }

bool mma_split_takes(int64_t K) { return g_mma_on && K % 32 == 0 && K <= MM_SPLIT_MAX_K; }

/* An in-place split of X's rows, through the SwiGLU with sw.U set. */
static bool split_in_place(float *X, split_swiglu sw, int n, int64_t K, int64_t ldx, float *aux, bool sums, bool perm,
                           cudaStream_t s) {
    if (!mma_split_takes(K) || n <= 0 || ldx % 4 != 0 || ((uintptr_t)X % 16) != 0 || ((uintptr_t)sw.U % 16) != 0)
        return false;
    launch_pdl(split_rows_kernel, n, 256, split_smem_bytes(K), s, (const float *)X, ldx, (int64_t)0, 1, X, ldx, (int)K,
               aux + (int64_t)n * (K / 16), sums ? aux : NULL, perm, !perm || wgmma_takes_lo(), sw);
    return true;
}

bool mma_split_rows(float *X, int n, int64_t K, int64_t ldx, float *aux, bool sums, bool perm, cudaStream_t s) {
    return split_in_place(X, split_swiglu{NULL, 0.0f, NULL}, n, K, ldx, aux, sums, perm, s);
}

bool mma_split_rows_swiglu(float *G, const float *U, float L, const float *wts, int n, int64_t K, int64_t ldx,
                           float *aux, bool sums, bool perm, cudaStream_t s) {
    return U && split_in_place(G, split_swiglu{U, L, wts}, n, K, ldx, aux, sums, perm, s);
}

bool mma_split_rows_to(const float *X, int n, int groups, int64_t K, int64_t ldx, int64_t gx, float *dst, float *down,
                       bool perm, cudaStream_t s) {
    if (!mma_split_takes(K) || n <= 0 || groups < 1) return false;
    launch_pdl(split_rows_kernel, n * groups, 256, split_smem_bytes(K), s, X, ldx, gx, groups, dst, K, (int)K, down,
               (float *)NULL, perm, !perm || wgmma_takes_lo(), split_swiglu{NULL, 0.0f, NULL});
    return true;
}

bool mma_gather_split(const float *split, int n_src, int64_t K, const int32_t *idx, int n, float *X, int64_t ldx,
                      float *down, cudaStream_t s) {
    if (!mma_split_takes(K) || n <= 0 || ldx % 4 != 0 || ((uintptr_t)X % 16) != 0 || ((uintptr_t)split % 16) != 0)
        return false;
    launch_pdl(gather_split_kernel, n, 128, 0, s, split, K, n_src, idx, X, ldx, down, wgmma_takes_lo());
    return true;
}

template <int T, int BN, bool PRE> static bool allow_smem_1(void) {
    return cudaFuncSetAttribute(mma_tile_kernel<T, BN, PRE>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                (int)mm_smem_bytes<T, BN, PRE>()) == cudaSuccess;
}
template <int T> static bool allow_smem(void) {
    return allow_smem_1<T, 128, false>() && allow_smem_1<T, 64, false>() && allow_smem_1<T, 32, false>() &&
           allow_smem_1<T, 128, true>() && allow_smem_1<T, 64, true>() && allow_smem_1<T, 32, true>();
}

static uint4 *g_pair_signs; /* d_iq2_pair_signs' device table */
const uint4 *mma_iq2_pair_signs(void) { return g_pair_signs; }

int mma_init(void) {
    if (!allow_smem<T_Q8_0>() || !allow_smem<T_Q2_K>() || !allow_smem<T_Q4_K>() || !allow_smem<T_IQ2_XXS>() ||
        !allow_smem<T_F16>() ||
        cudaFuncSetAttribute(split_rows_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             (int)split_smem_bytes(MM_SPLIT_MAX_K)) != cudaSuccess)
        return -1;
    g_mma_env = env_switch_on("DS4_MMA");
    g_mma_on = g_mma_env;
    if (!g_pair_signs) {
        uint4 h[128];
        for (int i = 0; i < 128; i++) {
            const uint32_t b = (uint32_t)i | ((uint32_t)(__builtin_popcount(i) & 1) << 7);
            uint32_t p[4];
            for (int k = 0; k < 4; k++) p[k] = (((b >> (2 * k)) & 1u) << 15) | (((b >> (2 * k + 1)) & 1u) << 31);
            h[i] = make_uint4(p[0], p[1], p[2], p[3]);
        }
        if (cudaMalloc(&g_pair_signs, sizeof(h)) != cudaSuccess ||
            cudaMemcpy(g_pair_signs, h, sizeof(h), cudaMemcpyHostToDevice) != cudaSuccess)
            return -1;
    }
    if (cudaMemcpyToSymbol(d_iq2_pair_signs, &g_pair_signs, sizeof(g_pair_signs)) != cudaSuccess) return -1;
    return quant_tables_upload();
}

extern "C" int ds4k_mma_enable(int on) {
    const int was = g_mma_on == 1;
    g_mma_on = on && g_mma_env ? 1 : 0;
    return was;
}
