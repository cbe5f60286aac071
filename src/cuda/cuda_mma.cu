/* ds4 — prefill matrix products on the tensor cores, weights dequantized
 * tile by tile (no expanded copy of any weight).
 *
 * A block computes 64 weight rows x 64 tokens; its 4 warps each own 32 x 32
 * (2 x 4 mma.m16n8k16 tiles). K is walked one 32-element slice at a time:
 *
 *   weights  the slice's quantized values go to shared memory as f16 (they
 *            are small integers — Q8_0 bytes, K-quant levels, IQ2 grid
 *            values — or the F16 weight itself: exact), with the slice's
 *            scale (and K-quant minimum) per row or per 16-element half;
 *   tokens   each token's slice is scaled by a power of two so its largest
 *            element is about 2^14 and split into two f16 terms, hi + lo,
 *            which together keep ~22 bits (f16 alone would keep 11);
 *   product  integer-valued weights times hi and lo on the tensor cores with
 *            f32 accumulation, then acc += (w_scale * 2^-e) * dot - w_min *
 *            sum(x) per row and token in f32.
 *
 * So the products are the CPU's up to f32 rounding (the kernel test bounds
 * it at the matmul's 1e-6 of |w| |x|), and every output is accumulated in a
 * fixed order: results are deterministic and independent of the grid. */
#include "cuda/cuda_gemv.cuh"
#include "cuda/cuda_kernels.h"
#include "cuda/cuda_quant.cuh"

#include <stdlib.h>
#include <string.h>

#define MM_BM 64
#define MM_BN 64
#define MM_LD 40 /* halves per staged row: 32 + 8 padding (ldmatrix rows hit distinct banks) */

/* ------------------------------------------------------------------ tensor-core primitives */

__device__ __forceinline__ void ldsm_x4(uint32_t *r, const void *p) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

__device__ __forceinline__ void mma16816(float *d, const uint32_t *a, uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_h2(float a, float b) {
    const __half2 h = __floats2half2_rn(a, b);
    return *(const uint32_t *)&h;
}

/* ------------------------------------------------------------------ weight slices */

/* 16 quantized values of half `hf` of slice s of a row as f16 (exact), and
 * that half's scale and minimum: w = scale * q - min. */
template <int T> __device__ __forceinline__ void wslice(const uint8_t *row, int s, int hf, uint32_t *q8, float *sc,
                                                        float *mn);

template <> __device__ __forceinline__ void wslice<T_Q8_0>(const uint8_t *row, int s, int hf, uint32_t *q8, float *sc,
                                                          float *mn) {
    const uint8_t *b = row + 34 * s;
    const uint8_t *q = b + 2 + 16 * hf;
#pragma unroll
    for (int i = 0; i < 8; i++) {
        const uint32_t two = ld_a16(q + 2 * i);
        q8[i] = pack_h2((float)(int8_t)(two & 0xff), (float)(int8_t)(two >> 8));
    }
    *sc = h2f((uint16_t)ld_a16(b));
    *mn = 0.0f;
}

template <> __device__ __forceinline__ void wslice<T_IQ2_XXS>(const uint8_t *row, int s, int hf, uint32_t *q8,
                                                             float *sc, float *mn) {
    const uint8_t *b = row + 66 * (s >> 3);
    const uint8_t *g = b + 2 + 8 * (s & 7);
    const uint32_t idx = ld_a16(g) | (ld_a16(g + 2) << 16);
    const uint32_t a1 = ld_a16(g + 4) | (ld_a16(g + 6) << 16);
#pragma unroll
    for (int e = 0; e < 2; e++) { /* grid entries 2hf, 2hf+1: 8 values each */
        const int i = 2 * hf + e;
        const uint64_t gv = d_iq2xxs_grid[(idx >> (8 * i)) & 0xff];
        const uint32_t s7 = (a1 >> (7 * i)) & 127;
        const uint32_t signs = s7 | ((__popc(s7) & 1) << 7);
#pragma unroll
        for (int k = 0; k < 8; k += 2) {
            const float v0 = (float)((gv >> (8 * k)) & 0xff), v1 = (float)((gv >> (8 * k + 8)) & 0xff);
            q8[4 * e + k / 2] = pack_h2((signs >> k) & 1 ? -v0 : v0, (signs >> (k + 1)) & 1 ? -v1 : v1);
        }
    }
    const float d = h2f((uint16_t)ld_a16(b));
    *sc = __fmul_rn(__fmul_rn(d, 0.5f + (float)(a1 >> 28)), 0.25f);
    *mn = 0.0f;
}

template <> __device__ __forceinline__ void wslice<T_Q2_K>(const uint8_t *row, int s, int hf, uint32_t *q8, float *sc,
                                                          float *mn) {
    const uint8_t *b = row + 84 * (s >> 3);
    const int j = s & 7;
    const uint32_t dd = ld_a32(b + 80);
    const uint8_t *qs = b + 16 + 32 * (j >> 2) + 16 * hf;
    const int shift = 2 * (j & 3);
#pragma unroll
    for (int w = 0; w < 4; w++) {
        const uint32_t word = (ld_a32(qs + 4 * w) >> shift) & 0x03030303u;
        q8[2 * w] = pack_h2((float)(word & 0xff), (float)((word >> 8) & 0xff));
        q8[2 * w + 1] = pack_h2((float)((word >> 16) & 0xff), (float)(word >> 24));
    }
    const uint32_t scb = b[2 * j + hf];
    *sc = __fmul_rn(h2f((uint16_t)(dd & 0xffff)), (float)(scb & 15));
    *mn = __fmul_rn(h2f((uint16_t)(dd >> 16)), (float)(scb >> 4));
}

template <> __device__ __forceinline__ void wslice<T_Q4_K>(const uint8_t *row, int s, int hf, uint32_t *q8, float *sc,
                                                          float *mn) {
    const uint8_t *b = row + 144 * (s >> 3);
    const int j = s & 7;
    const uint32_t dd = ld_a32(b);
    const uint8_t *scp = b + 4;
    int scale, m;
    if (j < 4) {
        scale = scp[j] & 63;
        m = scp[j + 4] & 63;
    } else {
        scale = (scp[j + 4] & 15) | ((scp[j - 4] >> 6) << 4);
        m = (scp[j + 4] >> 4) | ((scp[j] >> 6) << 4);
    }
    const uint8_t *qs = b + 16 + 32 * (j >> 1) + 16 * hf;
    const int shift = 4 * (j & 1);
#pragma unroll
    for (int w = 0; w < 4; w++) {
        const uint32_t word = (ld_a32(qs + 4 * w) >> shift) & 0x0f0f0f0fu;
        q8[2 * w] = pack_h2((float)(word & 0xff), (float)((word >> 8) & 0xff));
        q8[2 * w + 1] = pack_h2((float)((word >> 16) & 0xff), (float)(word >> 24));
    }
    *sc = __fmul_rn(h2f((uint16_t)(dd & 0xffff)), (float)scale);
    *mn = __fmul_rn(h2f((uint16_t)(dd >> 16)), (float)m);
}

template <> __device__ __forceinline__ void wslice<T_F16>(const uint8_t *row, int s, int hf, uint32_t *q8, float *sc,
                                                         float *mn) {
    const uint4 *p = (const uint4 *)(row + 64 * s + 32 * hf);
    const uint4 u0 = p[0], u1 = p[1];
    q8[0] = u0.x, q8[1] = u0.y, q8[2] = u0.z, q8[3] = u0.w;
    q8[4] = u1.x, q8[5] = u1.y, q8[6] = u1.z, q8[7] = u1.w;
    *sc = 1.0f;
    *mn = 0.0f;
}

template <int T> struct mm_traits {
    static constexpr bool has_min = T == T_Q2_K || T == T_Q4_K;
    static constexpr bool half_scales = T == T_Q2_K; /* a scale per 16, not per 32 */
};

/* ------------------------------------------------------------------ the kernel */

template <int T>
__global__ void __launch_bounds__(128) mma_tile_kernel(const uint8_t *W, int64_t rb, int64_t r0, int64_t rows, int64_t K,
                                                      const float *X, int64_t ldx, int n, float *Y, int64_t ldy,
                                                      const seg3 *segs) {
    __shared__ __align__(16) __half Ws[MM_BM * MM_LD];
    __shared__ __align__(16) __half Xh[MM_BN * MM_LD], Xl[MM_BN * MM_LD];
    __shared__ float wsc[MM_BM][2], wmn[MM_BM][2], xsc[MM_BN], xsum[MM_BN][2];
    const int tbase = blockIdx.y * MM_BN;
    if (segs) {
        const seg3 sg = segs[blockIdx.z];
        if (tbase >= sg.count) return;
        r0 += sg.row0;
        X += (int64_t)sg.x0 * ldx;
        Y += (int64_t)sg.x0 * ldy;
        n = sg.count;
    } else if (tbase >= n) {
        return;
    }
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int wm = warp >> 1, wn = warp & 1; /* warp tile: rows 32 wm.., tokens 32 wn.. */
    const int64_t rbase = (int64_t)blockIdx.x * MM_BM;
    /* staging roles: thread tid handles row / token tid >> 1, half tid & 1 */
    const int sr = tid >> 1, shf = tid & 1;
    const int64_t wrow = rbase + sr;
    const uint8_t *wptr = wrow < rows ? W + (r0 + wrow) * rb : NULL;
    const int xt = tbase + sr;
    const float *xptr = xt < n ? X + (int64_t)xt * ldx : NULL;

    float acc[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;

    const int nsl = (int)(K / 32);
    for (int s = 0; s < nsl; s++) {
        /* weights: 16 values of row sr, half shf */
        {
            uint32_t q8[8];
            float sc = 0.0f, mn = 0.0f;
            if (wptr) {
                wslice<T>(wptr, s, shf, q8, &sc, &mn);
            } else {
#pragma unroll
                for (int i = 0; i < 8; i++) q8[i] = 0;
            }
            uint4 *dst = (uint4 *)(Ws + sr * MM_LD + 16 * shf);
            dst[0] = make_uint4(q8[0], q8[1], q8[2], q8[3]);
            dst[1] = make_uint4(q8[4], q8[5], q8[6], q8[7]);
            wsc[sr][shf] = sc;
            wmn[sr][shf] = mn;
        }
        /* tokens: 16 values of token sr, half shf, scaled by the power of two
         * that brings the slice's largest magnitude to [2^13, 2^14) */
        {
            float v[16];
            if (xptr) {
                const float4 *p = (const float4 *)(xptr + 32 * s + 16 * shf);
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    const float4 f = p[i];
                    v[4 * i] = f.x, v[4 * i + 1] = f.y, v[4 * i + 2] = f.z, v[4 * i + 3] = f.w;
                }
            } else {
#pragma unroll
                for (int i = 0; i < 16; i++) v[i] = 0.0f;
            }
            float mx = 0.0f, sum = 0.0f;
#pragma unroll
            for (int i = 0; i < 16; i++) mx = fmaxf(mx, fabsf(v[i]));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            int e = 0;
            if (mx > 0.0f) frexpf(mx, &e);
            const float up = ldexpf(1.0f, 14 - e);
            uint32_t hi[8], lo[8];
#pragma unroll
            for (int i = 0; i < 8; i++) {
                const float a = v[2 * i] * up, b = v[2 * i + 1] * up;
                const __half2 h = __floats2half2_rn(a, b);
                const float2 hf = __half22float2(h);
                hi[i] = *(const uint32_t *)&h;
                lo[i] = pack_h2(a - hf.x, b - hf.y);
            }
            if (mm_traits<T>::has_min) {
#pragma unroll
                for (int i = 0; i < 16; i++) sum += v[i];
                xsum[sr][shf] = sum;
            }
            uint4 *dh = (uint4 *)(Xh + sr * MM_LD + 16 * shf), *dl = (uint4 *)(Xl + sr * MM_LD + 16 * shf);
            dh[0] = make_uint4(hi[0], hi[1], hi[2], hi[3]);
            dh[1] = make_uint4(hi[4], hi[5], hi[6], hi[7]);
            dl[0] = make_uint4(lo[0], lo[1], lo[2], lo[3]);
            dl[1] = make_uint4(lo[4], lo[5], lo[6], lo[7]);
            if (shf == 0) xsc[sr] = mx > 0.0f ? ldexpf(1.0f, e - 14) : 0.0f;
        }
        __syncthreads();

        /* fragments: A (rows) per m-tile and k half; B (tokens) per n-tile */
        uint32_t a[2][2][4];
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int h = 0; h < 2; h++)
                ldsm_x4(a[mt][h], Ws + (32 * wm + 16 * mt + (lane & 15)) * MM_LD + 16 * h + 8 * (lane >> 4));
        const int g = lane >> 2, t4 = lane & 3;
#pragma unroll
        for (int nt = 0; nt < 4; nt++) {
            const int tok = 32 * wn + 8 * nt;
            uint32_t bh[4], bl[4]; /* k 0-7, 8-15, 16-23, 24-31 of 8 tokens */
            ldsm_x4(bh, Xh + (tok + (lane & 7)) * MM_LD + 8 * (lane >> 3));
            ldsm_x4(bl, Xl + (tok + (lane & 7)) * MM_LD + 8 * (lane >> 3));
            const float xs0 = xsc[tok + 2 * t4], xs1 = xsc[tok + 2 * t4 + 1];
#pragma unroll
            for (int mt = 0; mt < 2; mt++) {
                const int ra = 32 * wm + 16 * mt + g, rc = ra + 8;
                if (mm_traits<T>::half_scales) {
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                        mma16816(d, a[mt][h], bh[2 * h], bh[2 * h + 1]);
                        mma16816(d, a[mt][h], bl[2 * h], bl[2 * h + 1]);
                        const float sa = wsc[ra][h], sc2 = wsc[rc][h];
                        acc[mt][nt][0] = fmaf(sa * xs0, d[0], acc[mt][nt][0]);
                        acc[mt][nt][1] = fmaf(sa * xs1, d[1], acc[mt][nt][1]);
                        acc[mt][nt][2] = fmaf(sc2 * xs0, d[2], acc[mt][nt][2]);
                        acc[mt][nt][3] = fmaf(sc2 * xs1, d[3], acc[mt][nt][3]);
                        const float ma = wmn[ra][h], mc = wmn[rc][h];
                        const float s0 = xsum[tok + 2 * t4][h], s1 = xsum[tok + 2 * t4 + 1][h];
                        acc[mt][nt][0] = fmaf(-ma, s0, acc[mt][nt][0]);
                        acc[mt][nt][1] = fmaf(-ma, s1, acc[mt][nt][1]);
                        acc[mt][nt][2] = fmaf(-mc, s0, acc[mt][nt][2]);
                        acc[mt][nt][3] = fmaf(-mc, s1, acc[mt][nt][3]);
                    }
                } else {
                    float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        mma16816(d, a[mt][h], bh[2 * h], bh[2 * h + 1]);
                        mma16816(d, a[mt][h], bl[2 * h], bl[2 * h + 1]);
                    }
                    const float sa = wsc[ra][0], sc2 = wsc[rc][0];
                    acc[mt][nt][0] = fmaf(sa * xs0, d[0], acc[mt][nt][0]);
                    acc[mt][nt][1] = fmaf(sa * xs1, d[1], acc[mt][nt][1]);
                    acc[mt][nt][2] = fmaf(sc2 * xs0, d[2], acc[mt][nt][2]);
                    acc[mt][nt][3] = fmaf(sc2 * xs1, d[3], acc[mt][nt][3]);
                    if (mm_traits<T>::has_min) {
                        const float ma = wmn[ra][0], mc = wmn[rc][0];
                        const float s0 = xsum[tok + 2 * t4][0] + xsum[tok + 2 * t4][1];
                        const float s1 = xsum[tok + 2 * t4 + 1][0] + xsum[tok + 2 * t4 + 1][1];
                        acc[mt][nt][0] = fmaf(-ma, s0, acc[mt][nt][0]);
                        acc[mt][nt][1] = fmaf(-ma, s1, acc[mt][nt][1]);
                        acc[mt][nt][2] = fmaf(-mc, s0, acc[mt][nt][2]);
                        acc[mt][nt][3] = fmaf(-mc, s1, acc[mt][nt][3]);
                    }
                }
            }
        }
        __syncthreads();
    }

    const int g = lane >> 2, t4 = lane & 3;
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int64_t r = rbase + 32 * wm + 16 * mt + g + 8 * (e >> 1);
                const int t = tbase + 32 * wn + 8 * nt + 2 * t4 + (e & 1);
                if (r < rows && t < n) Y[(int64_t)t * ldy + r] = acc[mt][nt][e];
            }
}

/* ------------------------------------------------------------------ launch */

static int g_mma_on = 1;  /* ds4k_mma_enable */
static int g_mma_env = 1; /* DS4_MMA=0 in the environment: always off (A/B timing) */

template <int T>
static void launch_t(const uint8_t *W, int64_t rb, int64_t r0, int64_t rows, int64_t K, const float *X, int64_t ldx,
                     int n, float *Y, int64_t ldy, const seg3 *segs, int n_segs, int max_count, cudaStream_t s) {
    const dim3 grid((unsigned)((rows + MM_BM - 1) / MM_BM), (unsigned)(((segs ? max_count : n) + MM_BN - 1) / MM_BN),
                    (unsigned)(segs ? n_segs : 1));
    mma_tile_kernel<T><<<grid, 128, 0, s>>>(W, rb, r0, rows, K, X, ldx, n, Y, ldy, segs);
}

bool mma_matmul(int type, const void *W, int64_t rb, int64_t r0, int64_t rows, int64_t K, const float *X, int64_t ldx,
                int n, float *Y, int64_t ldy, const void *segs, int n_segs, int max_count, cudaStream_t s) {
    /* float4 activation loads, 16-byte F16 weight loads */
    if (!g_mma_on || K % 32 != 0 || ldx % 4 != 0 || ((uintptr_t)X % 16) != 0) return false;
    const uint8_t *w = (const uint8_t *)W;
    const seg3 *sg = (const seg3 *)segs;
    switch (type) {
    case T_Q8_0: launch_t<T_Q8_0>(w, rb, r0, rows, K, X, ldx, n, Y, ldy, sg, n_segs, max_count, s); return true;
    case T_Q2_K: launch_t<T_Q2_K>(w, rb, r0, rows, K, X, ldx, n, Y, ldy, sg, n_segs, max_count, s); return true;
    case T_Q4_K: launch_t<T_Q4_K>(w, rb, r0, rows, K, X, ldx, n, Y, ldy, sg, n_segs, max_count, s); return true;
    case T_IQ2_XXS: launch_t<T_IQ2_XXS>(w, rb, r0, rows, K, X, ldx, n, Y, ldy, sg, n_segs, max_count, s); return true;
    case T_F16:
        if (((uintptr_t)W % 16) != 0 || rb % 16 != 0) return false;
        launch_t<T_F16>(w, rb, r0, rows, K, X, ldx, n, Y, ldy, sg, n_segs, max_count, s);
        return true;
    default: return false;
    }
}

int mma_init(void) {
    const char *e = getenv("DS4_MMA");
    g_mma_env = !(e && strcmp(e, "0") == 0);
    g_mma_on = g_mma_env;
    return quant_tables_upload();
}

extern "C" int ds4k_mma_enable(int on) {
    const int was = g_mma_on == 1;
    g_mma_on = on && g_mma_env ? 1 : 0;
    return was;
}
