/* ds4 — decode GEMV streamed at memory bandwidth: one token per output.
 *
 * A decode step reads every used weight byte once, so its speed is the
 * speed at which the GPU can pull weight rows through the multiprocessors.
 * The general small-batch kernel (cuda_matmul.cu) alternates between loading
 * a stretch of a row and decoding it, so most of the time a warp has nothing
 * in flight. Here each warp owns a run of whole rows and streams them through
 * a ring of GS_STAGES shared-memory buffers with asynchronous copies
 * (cp.async): while it decodes one chunk, the next two are on their way.
 *
 * The arithmetic is cheaper per weight than the generic kernel's: quantized
 * slices of 32 weights are multiplied with 8-bit integer dot products
 * (dp4a, four products an instruction) against the block's activations,
 * each 32-slice of them split into two int8 vectors (see gs_x below), and
 * the weight block's scale is applied once to the slice's dot. K-quant
 * minimums use sums of 16 activations computed when the block stages them:
 *   sum_i (dl q_i - ml) x_i = dl sum_i q_i x_i - ml sum_i x_i.
 * F16 rows keep float activations. The result differs from the CPU's by the
 * split's rounding (bounded in tests/cuda/cuda_test_util.h); oracle mode
 * turns this kernel off.
 *
 * Determinism: every output is one warp's sum over fixed lane slices, added
 * with a fixed butterfly; no atomics. */
#include "cuda/cuda_gemv.cuh"
#include "cuda/cuda_kernels.h"
#include "cuda/cuda_quant.cuh"

#include <stdlib.h>

#define GS_WARPS 8
#define GS_STAGES 3   /* ring of a warp: GS_STAGES chunks */
#define GS_MAX_SLOTS 8 /* rows shorter than a chunk: up to 8 of them in the ring */
#define GS_X_MAX (96 * 1024) /* activations plus their 16-sums in shared memory */

/* Per type: bytes and elements of a block, and the chunk a warp copies per
 * stage — a whole number of blocks, a multiple of 16 bytes, about 2 KiB, and
 * a multiple of 32 slices where possible so every lane has equal work. */
template <int T> struct gs_fmt;
template <> struct gs_fmt<T_Q8_0> {
    static constexpr int bpb = 34, epb = 32, chunk = 34 * 64;
};
template <> struct gs_fmt<T_Q2_K> {
    static constexpr int bpb = 84, epb = 256, chunk = 84 * 24;
};
template <> struct gs_fmt<T_Q4_K> {
    static constexpr int bpb = 144, epb = 256, chunk = 144 * 16;
};
template <> struct gs_fmt<T_IQ2_XXS> {
    static constexpr int bpb = 66, epb = 256, chunk = 66 * 32;
};
template <> struct gs_fmt<T_F16> {
    static constexpr int bpb = 64, epb = 32, chunk = 64 * 32;
};

template <int T> static constexpr size_t gs_stage_bytes() { return (size_t)GS_WARPS * GS_STAGES * gs_fmt<T>::chunk; }

/* ------------------------------------------------------------------ asynchronous copies */

__device__ __forceinline__ void cp_async16(void *dst, const void *src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const unsigned s = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(src));
#else
    *(uint4 *)dst = *(const uint4 *)src;
#endif
}
__device__ __forceinline__ void cp_async_commit(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}
template <int N> __device__ __forceinline__ void cp_async_wait(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}
/* Wait until at most n copy groups are pending (n < GS_MAX_SLOTS); the
 * instruction takes an immediate, hence the switch (n is warp-uniform). */
__device__ __forceinline__ void cp_async_wait_n(int n) {
    switch (n) {
    case 0: cp_async_wait<0>(); break;
    case 1: cp_async_wait<1>(); break;
    case 2: cp_async_wait<2>(); break;
    case 3: cp_async_wait<3>(); break;
    case 4: cp_async_wait<4>(); break;
    case 5: cp_async_wait<5>(); break;
    case 6: cp_async_wait<6>(); break;
    default: cp_async_wait<7>(); break;
    }
}

/* ------------------------------------------------------------------ activations */

/* The block's activations in shared memory. F16 weights use them as floats
 * (swizzled: float4 i of slice g at 8g + (i ^ (g & 7)), so the 8 lanes of a
 * load phase hit 8 different bank groups). The quantized types use integer
 * dot products (dp4a: four 8-bit products per instruction, a quarter of the
 * float work): each 32-element slice g of x is split into two int8 vectors,
 * x ~= sx[g] * (q1 + q2 / 256), sx = max|x| / 127, which keeps about 15 bits
 * (error <= sx / 512 per element: 1e-7 of |w| |x| in a 4096-long dot,
 * measured by the kernel test). q1 and q2 are 4 16-byte units per slice,
 * unit u stored at 4g + (u ^ ((g >> 1) & 3)) for the same bank spread. */
typedef struct gs_x {
    const float *xf;     /* F16: swizzled floats */
    const int4 *xq;      /* quantized: 4 units per slice */
    const float *sx;     /* scale per slice */
    const float *g16;    /* sums of 16 consecutive x (K-quant minimums) */
    const uint64_t *grid; /* IQ2_XXS grid */
    const uint64_t *smask; /* IQ2_XXS: 7 sign bits -> byte mask with the parity bit */
} gs_x;

struct q8pair {
    int4 a0, a1, b0, b1; /* q1 words 0..7, q2 words 0..7 */
};
__device__ __forceinline__ q8pair load_q(const gs_x &x, int64_t g) {
    const int4 *u = x.xq + 4 * g;
    const int sw = (int)((g >> 1) & 3);
    return q8pair{u[0 ^ sw], u[1 ^ sw], u[2 ^ sw], u[3 ^ sw]};
}
__device__ __forceinline__ int qword(const int4 &a0, const int4 &a1, int i) {
    const int4 &v = i < 4 ? a0 : a1;
    switch (i & 3) {
    case 0: return v.x;
    case 1: return v.y;
    case 2: return v.z;
    default: return v.w;
    }
}
/* x-scaled value of an integer dot pair */
__device__ __forceinline__ float qdot(int h, int l, float sx) { return fmaf((float)l, 1.0f / 256.0f, (float)h) * sx; }

/* ------------------------------------------------------------------ one 32-element slice */

/* Dot of slice s of a staged chunk (global slice g of the row) with x. */
template <int T> __device__ __forceinline__ float slice_dot(const uint8_t *buf, int s, int64_t g, const gs_x &x);

template <> __device__ __forceinline__ float slice_dot<T_Q8_0>(const uint8_t *buf, int s, int64_t g, const gs_x &x) {
    const uint8_t *b = buf + 34 * s;
    /* the 32 quants start 2 bytes into a 34-byte block: read aligned words
     * and shift (by 0 or 16 bits) instead of unaligned loads */
    const uint8_t *q = b + 2;
    const int mis = (int)((uintptr_t)q & 3);
    const uint32_t *w = (const uint32_t *)(q - mis);
    const q8pair xq = load_q(x, g);
    int h = 0, l = 0;
    uint32_t prev = w[0];
#pragma unroll
    for (int i = 0; i < 8; i++) {
        const uint32_t next = w[i + 1];
        const int wi = (int)__funnelshift_r(prev, next, 8 * mis);
        h = __dp4a(wi, qword(xq.a0, xq.a1, i), h);
        l = __dp4a(wi, qword(xq.b0, xq.b1, i), l);
        prev = next;
    }
    return h2f((uint16_t)ld_a16(b)) * qdot(h, l, x.sx[g]);
}

template <> __device__ __forceinline__ float slice_dot<T_F16>(const uint8_t *buf, int s, int64_t g, const gs_x &x) {
    const uint4 *w = (const uint4 *)(buf + 64 * s);
    const float4 *xv4 = (const float4 *)(x.xf + 32 * g);
    const int swz = (int)(g & 7);
    float p = 0.0f;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        p = dot8_h(w[i], xv4[(2 * i) ^ swz], xv4[(2 * i + 1) ^ swz], p);
    }
    return p;
}

template <>
__device__ __forceinline__ float slice_dot<T_IQ2_XXS>(const uint8_t *buf, int s, int64_t g, const gs_x &x) {
    const uint8_t *b = buf + 66 * (s >> 3);
    const uint8_t *g8 = b + 2 + 8 * (s & 7);
    const uint32_t idx = ld_a16(g8) | (ld_a16(g8 + 2) << 16); /* four grid indices */
    const uint32_t a1 = ld_a16(g8 + 4) | (ld_a16(g8 + 6) << 16);
    const q8pair xq = load_q(x, g);
    int h = 0, l = 0;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const uint64_t gv = x.grid[(idx >> (8 * i)) & 0xff];
        const uint64_t m = x.smask[(a1 >> (7 * i)) & 127];
        /* negate the marked bytes: (v ^ 0xff) + 1; grid bytes are 8..43, so
         * no byte carries into the next */
        const uint32_t mlo = (uint32_t)m, mhi = (uint32_t)(m >> 32);
        const int w0 = (int)((((uint32_t)gv) ^ mlo) + (mlo & 0x01010101u));
        const int w1 = (int)((((uint32_t)(gv >> 32)) ^ mhi) + (mhi & 0x01010101u));
        h = __dp4a(w0, qword(xq.a0, xq.a1, 2 * i), h);
        h = __dp4a(w1, qword(xq.a0, xq.a1, 2 * i + 1), h);
        l = __dp4a(w0, qword(xq.b0, xq.b1, 2 * i), l);
        l = __dp4a(w1, qword(xq.b0, xq.b1, 2 * i + 1), l);
    }
    const float d = h2f((uint16_t)ld_a16(b));
    return __fmul_rn(__fmul_rn(d, 0.5f + (float)(a1 >> 28)), 0.25f) * qdot(h, l, x.sx[g]);
}

template <> __device__ __forceinline__ float slice_dot<T_Q2_K>(const uint8_t *buf, int s, int64_t g, const gs_x &x) {
    const uint8_t *b = buf + 84 * (s >> 3);
    const int j = s & 7;
    const uint32_t dd = ld_a32(b + 80);
    const float d = h2f((uint16_t)(dd & 0xffff)), dmin = h2f((uint16_t)(dd >> 16));
    const uint8_t *qs = b + 16 + 32 * (j >> 2);
    const int shift = 2 * (j & 3);
    const uint32_t scs = ld_a16(b + 2 * j);
    const q8pair xq = load_q(x, g);
    const float sx = x.sx[g];
    float r = 0.0f;
#pragma unroll
    for (int hf = 0; hf < 2; hf++) { /* two 16-element scale groups */
        const uint32_t sc = (scs >> (8 * hf)) & 0xff;
        int h = 0, l = 0;
#pragma unroll
        for (int w = 0; w < 4; w++) {
            const int q = (int)((ld_a32(qs + 16 * hf + 4 * w) >> shift) & 0x03030303u);
            h = __dp4a(q, qword(xq.a0, xq.a1, 4 * hf + w), h);
            l = __dp4a(q, qword(xq.b0, xq.b1, 4 * hf + w), l);
        }
        r = fmaf(__fmul_rn(d, (float)(sc & 15)), qdot(h, l, sx), r);
        r = fmaf(-__fmul_rn(dmin, (float)(sc >> 4)), x.g16[2 * g + hf], r);
    }
    return r;
}

template <> __device__ __forceinline__ float slice_dot<T_Q4_K>(const uint8_t *buf, int s, int64_t g, const gs_x &x) {
    const uint8_t *b = buf + 144 * (s >> 3);
    const int j = s & 7;
    const uint32_t dd = ld_a32(b);
    const float d = h2f((uint16_t)(dd & 0xffff)), dmin = h2f((uint16_t)(dd >> 16));
    int scale, mn;
    q4k_scale_min(b + 4, j, &scale, &mn);
    const uint8_t *qs = b + 16 + 32 * (j >> 1);
    const int shift = 4 * (j & 1);
    const q8pair xq = load_q(x, g);
    int h = 0, l = 0;
#pragma unroll
    for (int w = 0; w < 8; w++) {
        const int q = (int)((ld_a32(qs + 4 * w) >> shift) & 0x0f0f0f0fu);
        h = __dp4a(q, qword(xq.a0, xq.a1, w), h);
        l = __dp4a(q, qword(xq.b0, xq.b1, w), l);
    }
    const float r = __fmul_rn(d, (float)scale) * qdot(h, l, x.sx[g]);
    return fmaf(-__fmul_rn(dmin, (float)mn), x.g16[2 * g] + x.g16[2 * g + 1], r);
}

/* ------------------------------------------------------------------ the kernel */

/* Shared bytes of the activations for K elements (after the rings). */
template <int T> __host__ __device__ constexpr size_t gs_x_bytes(int64_t K) {
    return T == T_F16 ? (size_t)K * 4
                      : (size_t)K * 2 + (size_t)(K / 32) * 4 + (size_t)(K / 16) * 4 + (T == T_IQ2_XXS ? 384 * 8 : 0);
}

/* Block: GS_WARPS warps over GS_WARPS * rpw consecutive rows of one job (and
 * one routed pair); warp w streams rows [w * rpw, (w + 1) * rpw) chunk by
 * chunk. The first copies are issued before the activations are staged, so
 * both latencies overlap. */
template <int T>
__global__ void __launch_bounds__(GS_WARPS * 32) gemv_stream_kernel(gemv_jobs jobs, const float *X, int64_t ldx,
                                                                    int rpw, const int32_t *ids, int k, int x_per_pair) {
    typedef gs_fmt<T> F;
    constexpr int CH = F::chunk, SPB = F::epb / 32;
    extern __shared__ __align__(16) uint8_t gs_smem[];
    const gemv_job jb = jobs.j[blockIdx.y];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int64_t rbase = (int64_t)blockIdx.x * GS_WARPS * rpw;
    if (rbase >= jb.rows) return; /* the whole block is past this job's rows */
    const int64_t rb = jb.rb, K = jb.K;
    const uint8_t *W = jb.W + jb.r0 * rb;
    float *Y = jb.Y;
    X += jb.x_off;
    if (ids) {
        const int pair = blockIdx.z;
        W = jb.W + (int64_t)ids[pair] * jb.rows * rb;
        X += (int64_t)(x_per_pair ? pair : pair / k) * ldx;
        Y += (int64_t)pair * jb.ldy;
    }
    uint8_t *ring = gs_smem + (size_t)warp * GS_STAGES * CH;

    const int64_t r0 = rbase + (int64_t)warp * rpw;
    const int64_t r1 = r0 + rpw < jb.rows ? r0 + rpw : jb.rows;
    const int cpr = (int)((rb + CH - 1) / CH); /* chunks per row */
    const int items = r1 > r0 ? (int)(r1 - r0) * cpr : 0;
    /* The ring holds GS_STAGES chunks; rows shorter than a chunk are staged
     * one per slot, with more slots, so the bytes in flight stay the same.
     * Counters advance by steps (no divisions in the loop). */
    const int slot = (int)(rb < CH ? rb : CH);
    const int nslots = GS_STAGES * CH / slot < GS_MAX_SLOTS ? GS_STAGES * CH / slot : GS_MAX_SLOTS;
    int is_n = 0, is_row = 0, is_c = 0, is_slot = 0;
    auto issue_next = [&]() {
        if (is_n < items) {
            const uint8_t *src = W + (r0 + is_row) * rb + (int64_t)is_c * CH;
            const int64_t left = rb - (int64_t)is_c * CH;
            const int nb = (int)(left < CH ? left : CH);
            uint8_t *dst = ring + is_slot * slot;
            for (int i = lane; i < nb / 16; i += 32) cp_async16(dst + 16 * i, src + 16 * i);
            is_n++;
            if (++is_c == cpr) is_c = 0, is_row++;
            if (++is_slot == nslots) is_slot = 0;
        }
        cp_async_commit(); /* an empty group keeps the wait count uniform */
    };
    for (int p = 0; p < nslots - 1; p++) issue_next();

    /* stage the activations */
    uint8_t *xa = gs_smem + gs_stage_bytes<T>();
    gs_x xv;
    if (T == T_F16) {
        float *xf = (float *)xa;
        const float4 *X4 = (const float4 *)X;
        for (int64_t i = threadIdx.x; i < K / 4; i += blockDim.x)
            ((float4 *)xf)[(i & ~7) | ((i & 7) ^ ((i >> 3) & 7))] = X4[i];
        xv.xf = xf;
    } else {
        int8_t *xq = (int8_t *)xa;
        float *sx = (float *)(xa + K * 2), *g16 = sx + K / 32;
        /* one thread per slice: its 8 float4 loads are in flight together */
        for (int64_t g = threadIdx.x; g < K / 32; g += blockDim.x) {
            float v[32];
            const float4 *X4 = (const float4 *)(X + 32 * g);
#pragma unroll
            for (int i = 0; i < 8; i++) {
                const float4 f = X4[i];
                v[4 * i] = f.x, v[4 * i + 1] = f.y, v[4 * i + 2] = f.z, v[4 * i + 3] = f.w;
            }
            float amax = 0.0f;
#pragma unroll
            for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(v[i]));
            const float is = amax > 0.0f ? 127.0f / amax : 0.0f;
            uint32_t w1[8], w2[8];
#pragma unroll
            for (int i = 0; i < 8; i++) {
                w1[i] = w2[i] = 0;
#pragma unroll
                for (int b2 = 0; b2 < 4; b2++) {
                    const float t = v[4 * i + b2] * is, q1 = rintf(t);
                    const float q2 = fminf(fmaxf(rintf((t - q1) * 256.0f), -128.0f), 127.0f);
                    w1[i] |= (uint32_t)((int)q1 & 0xff) << (8 * b2);
                    w2[i] |= (uint32_t)((int)q2 & 0xff) << (8 * b2);
                }
            }
            const int sw = (int)((g >> 1) & 3);
            int4 *u = (int4 *)xq + 4 * g;
            u[0 ^ sw] = make_int4((int)w1[0], (int)w1[1], (int)w1[2], (int)w1[3]);
            u[1 ^ sw] = make_int4((int)w1[4], (int)w1[5], (int)w1[6], (int)w1[7]);
            u[2 ^ sw] = make_int4((int)w2[0], (int)w2[1], (int)w2[2], (int)w2[3]);
            u[3 ^ sw] = make_int4((int)w2[4], (int)w2[5], (int)w2[6], (int)w2[7]);
            sx[g] = amax * (1.0f / 127.0f);
            if (T == T_Q2_K || T == T_Q4_K) {
                float s0 = 0.0f, s1 = 0.0f;
#pragma unroll
                for (int i = 0; i < 16; i++) s0 += v[i], s1 += v[16 + i];
                g16[2 * g] = s0;
                g16[2 * g + 1] = s1;
            }
        }
        xv.xq = (const int4 *)xq;
        xv.sx = sx;
        xv.g16 = g16;
        if (T == T_IQ2_XXS) {
            uint64_t *grid = (uint64_t *)(g16 + K / 16), *smask = grid + 256;
            for (int i = threadIdx.x; i < 256; i += blockDim.x) grid[i] = d_iq2xxs_grid[i];
            for (int i = threadIdx.x; i < 128; i += blockDim.x) {
                const uint32_t signs = (uint32_t)i | ((__popc(i) & 1) << 7);
                uint64_t m = 0;
                for (int b = 0; b < 8; b++)
                    if ((signs >> b) & 1) m |= 0xffull << (8 * b);
                smask[i] = m;
            }
            xv.grid = grid;
            xv.smask = smask;
        }
    }
    __syncthreads();

    float acc = 0.0f;
    int c = 0, row = 0, cur = 0;
    for (int it = 0; it < items; it++) {
        issue_next();
        cp_async_wait_n(nslots - 1);
        __syncwarp();
        const int64_t left = rb - (int64_t)c * CH;
        const int nb = (int)(left < CH ? left : CH);
        const uint8_t *buf = ring + cur * slot;
        const int ns = nb / F::bpb * SPB;
        const int64_t g0 = (int64_t)c * (CH / F::bpb) * SPB; /* first slice of the chunk in the row */
        for (int s = lane; s < ns; s += 32) acc += slice_dot<T>(buf, s, g0 + s, xv);
        __syncwarp(); /* the buffer is refilled next */
        if (++cur == nslots) cur = 0;
        if (++c == cpr) {
            const float sum = warp_sum(acc);
            if (lane == 0) Y[r0 + row] = sum;
            acc = 0.0f;
            c = 0;
            row++;
        }
    }
    cp_async_wait<0>();
}

/* ------------------------------------------------------------------ launch */

static int g_stream_on = -1;  /* ds4k_gemv_stream_enable */
static int g_stream_env = 1;  /* DS4_GEMV_STREAM=0 in the environment: always off (A/B timing) */
static int g_sm_count;

template <int T> static size_t smem_bytes(int64_t K) { return gs_stage_bytes<T>() + gs_x_bytes<T>(K); }

template <int T>
static bool launch_t(const gemv_jobs *jobs, const float *X, int64_t ldx, const int32_t *ids, int pairs, int k,
                     int x_per_pair, cudaStream_t s) {
    int64_t max_rows = 0, max_k = 0;
    for (int i = 0; i < jobs->n; i++) {
        const gemv_job *j = &jobs->j[i];
        if (j->rb % 16 != 0 || j->rb % gs_fmt<T>::bpb != 0 || ((uintptr_t)j->W % 16) != 0 || j->x_off % 4 != 0 ||
            j->K % 32 != 0)
            return false;
        max_rows = j->rows > max_rows ? j->rows : max_rows;
        max_k = j->K > max_k ? j->K : max_k;
    }
    if (gs_x_bytes<T>(max_k) > GS_X_MAX || ((uintptr_t)X % 16) != 0 || (ids && ldx % 4 != 0))
        return false;
    const size_t smem = smem_bytes<T>(max_k);
    int per_sm = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, gemv_stream_kernel<T>, GS_WARPS * 32, smem) !=
            cudaSuccess ||
        per_sm < 1)
        return false;
    /* rows per warp: the fewest that let every block be resident at once
     * (no second, partly empty wave), so each warp streams a long run */
    const int64_t cap = (int64_t)per_sm * g_sm_count, z = ids ? pairs : 1;
    const int64_t slots = cap / (jobs->n * z) > 0 ? cap / (jobs->n * z) : 1; /* blocks per job and pair */
    const int64_t rpw64 = (max_rows + GS_WARPS * slots - 1) / (GS_WARPS * slots);
    const int rpw = (int)(rpw64 > 0 ? rpw64 : 1);
    const dim3 grid((unsigned)((max_rows + GS_WARPS * rpw - 1) / (GS_WARPS * rpw)), (unsigned)jobs->n, (unsigned)z);
    gemv_stream_kernel<T><<<grid, GS_WARPS * 32, smem, s>>>(*jobs, X, ldx, rpw, ids, k, x_per_pair);
    return true;
}

bool gemv_stream(const gemv_jobs *jobs, const float *X, int64_t ldx, const int32_t *ids, int pairs, int k,
                 int x_per_pair, cudaStream_t s) {
    if (g_stream_on != 1 || jobs->n < 1) return false;
    const int type = jobs->j[0].type;
    for (int i = 1; i < jobs->n; i++)
        if (jobs->j[i].type != type) return false;
    switch (type) {
    case T_Q8_0: return launch_t<T_Q8_0>(jobs, X, ldx, ids, pairs, k, x_per_pair, s);
    case T_Q2_K: return launch_t<T_Q2_K>(jobs, X, ldx, ids, pairs, k, x_per_pair, s);
    case T_Q4_K: return launch_t<T_Q4_K>(jobs, X, ldx, ids, pairs, k, x_per_pair, s);
    case T_IQ2_XXS: return launch_t<T_IQ2_XXS>(jobs, X, ldx, ids, pairs, k, x_per_pair, s);
    case T_F16: return launch_t<T_F16>(jobs, X, ldx, ids, pairs, k, x_per_pair, s);
    default: return false;
    }
}

template <int T> static bool allow_smem(void) {
    return cudaFuncSetAttribute(gemv_stream_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                (int)(gs_stage_bytes<T>() + GS_X_MAX)) == cudaSuccess;
}

int gemv_stream_init(void) {
    if (quant_tables_upload() != 0) return -1; /* this file's copy of the IQ2 grid pointer */
    const char *e = getenv("DS4_GEMV_STREAM");
    g_stream_env = !(e && strcmp(e, "0") == 0);
    g_stream_on = g_stream_env;
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&g_sm_count, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
        return -1;
    if (!allow_smem<T_Q8_0>() || !allow_smem<T_Q2_K>() || !allow_smem<T_Q4_K>() || !allow_smem<T_IQ2_XXS>() ||
        !allow_smem<T_F16>())
        return -1;
    return 0;
}

extern "C" int ds4k_gemv_stream_enable(int on) {
    const int was = g_stream_on == 1;
    g_stream_on = on && g_stream_env ? 1 : 0;
    return was;
}
