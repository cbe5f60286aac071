/* ds4 — decode GEMV streamed at memory bandwidth: one token per output.
 *
 * A decode step reads every used weight byte once, so its speed is the
 * speed at which the GPU can pull weight rows through the multiprocessors.
 * The general small-batch kernel (cuda_matmul.cu) alternates between loading
 * a stretch of a row and decoding it, so most of the time a warp has nothing
 * in flight. Here each warp owns a run of whole rows and streams them through
 * a ring of GS_STAGES shared-memory buffers with asynchronous copies
 * (cp.async): while it decodes one chunk, the next is on its way (rows
 * shorter than a chunk: several rows, up to GS_MAX_SLOTS in the ring).
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
 * Where a whole row fits in one chunk and K <= 4096 (the routed experts, q_b,
 * the shared down projection), each lane keeps the activations of its slices
 * in registers for every row it visits (template parameter XR; off with
 * DS4_GEMV_XREG=0). Read from shared memory per row and slice, they cost a
 * 32-weight IQ2_XXS slice 64 bytes of shared loads for its 8.25 weight bytes.
 *
 * A ds4_prep finishes the activations while they are staged (q_a's rmsnorm,
 * the SwiGLU before a down projection), with the separate kernels' exact
 * expressions, so a decode step needs no launch for them.
 *
 * Launched with programmatic dependent launch (pdl_wait in cuda_common.cuh;
 * off with DS4_PDL=0): a block may start while the kernel before it still
 * runs, and it issues its first weight copies before it waits for that
 * kernel's output (a routed launch waits first: the ids choose its weights).
 * Every other kernel begins with pdl_enter (cuda_common.cuh), so it lets
 * the GEMV after it launch as soon as it runs.
 *
 * Determinism: every output is one warp's sum over fixed lane slices, added
 * with a fixed butterfly; no atomics. */
#include "cuda/cuda_gemv.cuh"
#include "cuda/cuda_hc.cuh"
#include "cuda/cuda_kernels.h"
#include "cuda/cuda_ops.cuh"
#include "cuda/cuda_quant.cuh"

#include <stdlib.h>

#ifndef DS4_CUDA_ARCH_MIN
#define DS4_CUDA_ARCH_MIN 90 /* the Makefile passes the arch it builds for */
#endif

#define GS_WARPS 8
/* Ring of a warp: GS_STAGES chunks, up to GS_STAGES_MAX with DS4_GEMV_STAGES
 * (A/B timing). Two: 12-layer model, 2k context, three alternating runs each
 * in three device calls: decode +1.4%, +1.6%, +1.8% over four; full size
 * +2.0%. A smaller ring fits four blocks of the Q8_0 products a
 * multiprocessor instead of two, and leaves room for the next kernel's
 * blocks beside a GEMV's (which of the two gains was not measured apart; two
 * for the routed experts alone lost 0.8%, for all the others alone gained
 * 1.2%, three everywhere lost 1.5%). Four had beaten three by 3.1% at
 * 4a5f746's kernels (4k context); docs/BENCHMARKS.md. */
#define GS_STAGES 2
#define GS_STAGES_MAX 4
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

template <int T> static constexpr size_t gs_stage_bytes(int stages) { return (size_t)GS_WARPS * stages * gs_fmt<T>::chunk; }

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
    const float *xf;       /* F16: swizzled floats */
    const int4 *xq;        /* quantized: 4 units per slice */
    const float *sx;       /* scale per slice */
    const float *g16;      /* sums of 16 consecutive x (K-quant minimums) */
    const uint32_t *tab;   /* IQ2_XXS signed half-entries (IQ2_TAB_WORDS) */
} gs_x;

/* One slice of quantized activations, as a lane holds it. */
struct xslice {
    int4 a0, a1, b0, b1; /* q1 words 0..7, q2 words 0..7 */
    float sx, g0, g1;    /* scale; sums of elements 0..15 and 16..31 */
};
__device__ __forceinline__ xslice load_x(const gs_x &x, int64_t g, bool kquant) {
    const int4 *u = x.xq + 4 * g;
    const int sw = (int)((g >> 1) & 3);
    xslice r;
    r.a0 = u[0 ^ sw], r.a1 = u[1 ^ sw], r.b0 = u[2 ^ sw], r.b1 = u[3 ^ sw];
    r.sx = x.sx[g];
    r.g0 = kquant ? x.g16[2 * g] : 0.0f;
    r.g1 = kquant ? x.g16[2 * g + 1] : 0.0f;
    return r;
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
/* Integer-to-float conversions issue on the multiprocessor's conversion
 * unit, at 16 results a clock (the CUDA guide's table for sm_80 and sm_90)
 * against 64 to 128 for float adds and multiplies, and a slice used up to
 * eight of them. Each is taken without it here, to the same bits:
 * - the x-scaled value of an integer dot pair, h + l / 256 rounded once,
 *   is 256 h + l converted (one rounding, then an exact power-of-two scale;
 *   |256 h + l| < 2^31 for every type here) instead of h and l converted
 *   and added by an fma;
 * - an integer v in [0, 2^23) (a K-quant scale, IQ2_XXS's 4-bit scale) is
 *   the float whose bits put v under the exponent of 2^23, less 2^23 (less
 *   2^23 - 0.5 for v + 0.5): an integer operation and a float add, exact;
 * - an integer in (-2^22, 2^22), such as a Q2_K dot pair's 256 h + l (below
 *   2^21), the same way with a bias of 1.5 * 2^23 for the sign.
 * `ds4-cuda-test gemv` holds them to the plain conversions' bits on the
 * device (ds4k_gemv_convert_check). */
__device__ __forceinline__ float small_u2f(uint32_t v) { return __int_as_float(0x4B000000u | v) - 8388608.0f; }
__device__ __forceinline__ float small_u2f_half(uint32_t v) { return __int_as_float(0x4B000000u | v) - 8388607.5f; }
__device__ __forceinline__ float small_i2f(int v) { return __int_as_float(0x4B400000 + v) - 12582912.0f; }
__device__ __forceinline__ float qdot(int h, int l, float sx) {
    return __int2float_rn(h * 256 + l) * (1.0f / 256.0f) * sx;
}
__device__ __forceinline__ float qdot_small(int h, int l, float sx) {
    return small_i2f(h * 256 + l) * (1.0f / 256.0f) * sx;
}

/* IQ2_XXS without per-weight sign work: a group of 8 weights is a grid
 * entry (8 magnitudes) and 8 signs (7 stored, the 8th their parity). Two
 * tables hold every signed half-entry as 4 int8 values ready for dp4a:
 *   lo[n][idx]: weights 0..3 with sign bits n = s7 & 15;
 *   hi[2q + p][idx]: weights 4..6 with sign bits q = s7 >> 4, and weight 7
 *     negative when p ^ parity(q), with p = parity(s7 & 15) (so the parity
 *     of all seven bits needs no popc).
 * 2 x 16 KiB, built once on the host and copied into each block's shared
 * memory; a group then costs two shared loads. The grid index sits in the
 * low byte of a table index and the sign nibble in the next, so one byte
 * permute forms each index (see slice_dot). */
#define IQ2_TAB_WORDS (2 * 256 * 16)

/* ------------------------------------------------------------------ one 32-element slice */

/* Dot of slice s of a staged chunk with the slice's activations xs. */
template <int T> __device__ __forceinline__ float slice_dot(const uint8_t *buf, int s, const xslice &xs, const gs_x &x);

template <> __device__ __forceinline__ float slice_dot<T_Q8_0>(const uint8_t *buf, int s, const xslice &xs, const gs_x &) {
    const uint8_t *b = buf + 34 * s;
    /* the 32 quants start 2 bytes into a 34-byte block: read aligned words
     * and shift (by 0 or 16 bits) instead of unaligned loads */
    const uint8_t *q = b + 2;
    const int mis = (int)((uintptr_t)q & 3);
    const uint32_t *w = (const uint32_t *)(q - mis);
    int h = 0, l = 0;
    uint32_t prev = w[0];
#pragma unroll
    for (int i = 0; i < 8; i++) {
        const uint32_t next = w[i + 1];
        const int wi = (int)__funnelshift_r(prev, next, 8 * mis);
        h = __dp4a(wi, qword(xs.a0, xs.a1, i), h);
        l = __dp4a(wi, qword(xs.b0, xs.b1, i), l);
        prev = next;
    }
    return h2f((uint16_t)ld_a16(b)) * qdot(h, l, xs.sx);
}

/* F16 rows keep float activations (read from shared memory). */
__device__ __forceinline__ float slice_dot_f16(const uint8_t *buf, int s, int64_t g, const gs_x &x) {
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

/* Byte permute: byte i of a into byte 0, byte i of b into byte 1, and the
 * sign of byte i of b replicated above (zeros: b's bytes here are at most
 * 15), which makes the table index idx_i + 256 * nibble_i. PTX's prmt, since
 * __byte_perm drops the sign-replicate bit of each selector nibble. */
template <int I> __device__ __forceinline__ uint32_t iq2_index(uint32_t a, uint32_t b) {
    constexpr uint32_t sel = I | (4 + I) << 4 | (12 + I) << 8 | (12 + I) << 12;
    uint32_t r;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "n"(sel));
    return r;
}

template <>
__device__ __forceinline__ float slice_dot<T_IQ2_XXS>(const uint8_t *buf, int s, const xslice &xs, const gs_x &x) {
    /* the slice's 8 bytes start 2 bytes past a multiple of 4 in every other
     * block (chunks start on 16 bytes): aligned words and funnel shifts
     * instead of four 16-bit loads. Offsets from the chunk only, so they
     * stay in registers from one row to the next. */
    const int o = 66 * (s >> 3) + 2 + 8 * (s & 7), mis = o & 2;
    const uint32_t *w = (const uint32_t *)(buf + (o - mis));
    const uint32_t w0 = w[0], w1 = w[1], w2 = w[mis ? 2 : 1]; /* w2: only its low half, where mis == 2 */
    const uint32_t idx = __funnelshift_r(w0, w1, 8 * mis); /* four grid indices */
    const uint32_t a1 = __funnelshift_r(w1, w2, 8 * mis);  /* 4 x 7 sign bits, the 4-bit scale */
    /* all four groups' sign nibbles at once, one a byte: N holds n_i (bits
     * 7i..7i+3 of a1), Q holds 2 q_i + parity(n_i) (q_i: bits 7i+4..7i+6) */
    const uint32_t N = (a1 & 0xfu) | ((a1 << 1) & 0xf00u) | ((a1 << 2) & 0xf0000u) | ((a1 << 3) & 0xf000000u);
    uint32_t par = N ^ (N >> 2);
    par ^= par >> 1;
    const uint32_t Q = ((a1 >> 3) & 0xeu) | ((a1 >> 2) & 0xe00u) | ((a1 >> 1) & 0xe0000u) | (a1 & 0xe000000u) |
                       (par & 0x01010101u);
    const uint32_t *lo = x.tab, *hi = x.tab + 256 * 16;
    int h = 0, l = 0;
    const int wq[8] = {(int)lo[iq2_index<0>(idx, N)], (int)hi[iq2_index<0>(idx, Q)],
                       (int)lo[iq2_index<1>(idx, N)], (int)hi[iq2_index<1>(idx, Q)],
                       (int)lo[iq2_index<2>(idx, N)], (int)hi[iq2_index<2>(idx, Q)],
                       (int)lo[iq2_index<3>(idx, N)], (int)hi[iq2_index<3>(idx, Q)]};
#pragma unroll
    for (int i = 0; i < 8; i++) {
        h = __dp4a(wq[i], qword(xs.a0, xs.a1, i), h);
        l = __dp4a(wq[i], qword(xs.b0, xs.b1, i), l);
    }
    const float d = h2f((uint16_t)ld_a16(buf + 66 * (s >> 3)));
    return __fmul_rn(__fmul_rn(d, small_u2f_half(a1 >> 28)), 0.25f) * qdot(h, l, xs.sx);
}

template <> __device__ __forceinline__ float slice_dot<T_Q2_K>(const uint8_t *buf, int s, const xslice &xs, const gs_x &) {
    const uint8_t *b = buf + 84 * (s >> 3);
    const int j = s & 7;
    const uint32_t dd = ld_a32(b + 80);
    const float d = h2f((uint16_t)(dd & 0xffff)), dmin = h2f((uint16_t)(dd >> 16));
    const uint8_t *qs = b + 16 + 32 * (j >> 2);
    const int shift = 2 * (j & 3);
    const uint32_t scs = ld_a16(b + 2 * j);
    float r = 0.0f;
#pragma unroll
    for (int hf = 0; hf < 2; hf++) { /* two 16-element scale groups */
        const uint32_t sc = (scs >> (8 * hf)) & 0xff;
        int h = 0, l = 0;
#pragma unroll
        for (int w = 0; w < 4; w++) {
            const int q = (int)((ld_a32(qs + 16 * hf + 4 * w) >> shift) & 0x03030303u);
            h = __dp4a(q, qword(xs.a0, xs.a1, 4 * hf + w), h);
            l = __dp4a(q, qword(xs.b0, xs.b1, 4 * hf + w), l);
        }
        r = fmaf(__fmul_rn(d, small_u2f(sc & 15)), qdot_small(h, l, xs.sx), r);
        r = fmaf(-__fmul_rn(dmin, small_u2f(sc >> 4)), hf ? xs.g1 : xs.g0, r);
    }
    return r;
}

template <> __device__ __forceinline__ float slice_dot<T_Q4_K>(const uint8_t *buf, int s, const xslice &xs, const gs_x &) {
    const uint8_t *b = buf + 144 * (s >> 3);
    const int j = s & 7;
    const uint32_t dd = ld_a32(b);
    const float d = h2f((uint16_t)(dd & 0xffff)), dmin = h2f((uint16_t)(dd >> 16));
    int scale, mn;
    q4k_scale_min(b + 4, j, &scale, &mn);
    const uint8_t *qs = b + 16 + 32 * (j >> 1);
    const int shift = 4 * (j & 1);
    int h = 0, l = 0;
#pragma unroll
    for (int w = 0; w < 8; w++) {
        const int q = (int)((ld_a32(qs + 4 * w) >> shift) & 0x0f0f0f0fu);
        h = __dp4a(q, qword(xs.a0, xs.a1, w), h);
        l = __dp4a(q, qword(xs.b0, xs.b1, w), l);
    }
    const float r = __fmul_rn(d, small_u2f((uint32_t)scale)) * qdot(h, l, xs.sx);
    return fmaf(-__fmul_rn(dmin, small_u2f((uint32_t)mn)), xs.g0 + xs.g1, r);
}

/* ------------------------------------------------------------------ the kernel */

/* Shared bytes of the activations for K elements (after the rings). */
template <int T> __host__ __device__ constexpr size_t gs_x_bytes(int64_t K) {
    const size_t tables = T == T_IQ2_XXS ? IQ2_TAB_WORDS * 4 : 0;
    return T == T_F16 ? (size_t)K * 4 : (size_t)K * 2 + (size_t)(K / 32) * 4 + (size_t)(K / 16) * 4 + tables;
}

/* ds4_prep on one element x of the activations, with the separate kernels'
 * expressions; aux is its second operand (the norm weight, or the up
 * projection's value), inv the norm's 1/rms, wt the pair's router weight. */
__device__ __forceinline__ float prep_val(const ds4_prep &pp, float x, float aux, float inv, float wt) {
    if (pp.op == DS4_PREP_NORM) return x * inv * aux;
    float h = dev_swiglu(x, aux, pp.clamp);
    if (pp.wts) h *= wt;
    return h;
}
/* The same on element i, reading its second operand. */
__device__ __forceinline__ float prep_elem(const ds4_prep &pp, float x, const float *U, int64_t i, float inv,
                                           float wt) {
    return prep_val(pp, x, pp.op == DS4_PREP_NORM ? pp.w[i] : U[i], inv, wt);
}

/* Quantize the K activations into shared memory (see gs_x): four threads a
 * slice, eight elements each, the slice's max|x| and 16-sums shared through
 * shuffles (the loop is uniform over the block, so every lane takes part).
 * A thread's elements of up to SQ_BATCH passes, and the prep's second
 * operand, are loaded before any is used, and a norm's sum of squares is
 * taken while they arrive: the staging waits on one round trip to L2, not
 * one a pass (o_b's K = 8,192 took four). */
#define SQ_BATCH 2
template <int T, bool CG = false>
__device__ void stage_quantized(const float *X, int64_t K, uint8_t *xa, gs_x *xv, const ds4_prep &pp, const float *U,
                                float wt, float *red) {
    int8_t *xq = (int8_t *)xa;
    float *sx = (float *)(xa + K * 2), *g16 = sx + K / 32;
    const int64_t tasks = K / 32 * 4;
    const float *aux = pp.op == DS4_PREP_NORM ? pp.w : pp.op == DS4_PREP_SWIGLU ? U : NULL;
    const float4 *X4 = (const float4 *)X, *A4 = (const float4 *)aux;
    float inv = 1.0f;
    for (int64_t base0 = 0; base0 < tasks; base0 += SQ_BATCH * blockDim.x) {
        float4 f[SQ_BATCH][2], ax[SQ_BATCH][2];
#pragma unroll
        for (int p = 0; p < SQ_BATCH; p++) {
            const int64_t i = base0 + p * blockDim.x + threadIdx.x;
            const bool on = i < tasks;
            /* CG: through L2 (x staged before the wait, DS4_EARLY_X) */
            f[p][0] = on ? (CG ? __ldcg(X4 + 2 * i) : X4[2 * i]) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            f[p][1] = on ? (CG ? __ldcg(X4 + 2 * i + 1) : X4[2 * i + 1]) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            ax[p][0] = on && aux ? A4[2 * i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            ax[p][1] = on && aux ? A4[2 * i + 1] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
        /* the norm's 1/rms (summed in rmsnorm_kernel's order when
         * blockDim.x == row_threads(K)), once, while the loads are in flight */
        if (base0 == 0 && pp.op == DS4_PREP_NORM) inv = block_inv_rms(X, K, pp.eps, red);
#pragma unroll
        for (int p = 0; p < SQ_BATCH; p++) {
            const int64_t base = base0 + p * blockDim.x;
            if (base >= tasks) break; /* uniform over the block */
            const int64_t i = base + threadIdx.x;
            const bool on = i < tasks;
            const int64_t g = i >> 2;
            const int t = (int)(i & 3);
            float v[8] = {f[p][0].x, f[p][0].y, f[p][0].z, f[p][0].w, f[p][1].x, f[p][1].y, f[p][1].z, f[p][1].w};
            const float a[8] = {ax[p][0].x, ax[p][0].y, ax[p][0].z, ax[p][0].w,
                                ax[p][1].x, ax[p][1].y, ax[p][1].z, ax[p][1].w};
            if (on && pp.op != DS4_PREP_NONE)
#pragma unroll
                for (int e = 0; e < 8; e++) v[e] = prep_val(pp, v[e], a[e], inv, wt);
            float amax = 0.0f;
#pragma unroll
            for (int e = 0; e < 8; e++) amax = fmaxf(amax, fabsf(v[e]));
            amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 1));
            amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 2));
            const float is = amax > 0.0f ? 127.0f / amax : 0.0f;
            uint32_t w1[2], w2[2];
#pragma unroll
            for (int w = 0; w < 2; w++) {
                w1[w] = w2[w] = 0;
#pragma unroll
                for (int b2 = 0; b2 < 4; b2++) {
                    const float tq = v[4 * w + b2] * is, q1 = rintf(tq);
                    const float q2 = fminf(fmaxf(rintf((tq - q1) * 256.0f), -128.0f), 127.0f);
                    w1[w] |= (uint32_t)((int)q1 & 0xff) << (8 * b2);
                    w2[w] |= (uint32_t)((int)q2 & 0xff) << (8 * b2);
                }
            }
            float part = 0.0f;
#pragma unroll
            for (int e = 0; e < 8; e++) part += v[e];
            const float pair_sum = part + __shfl_xor_sync(0xffffffffu, part, 1);
            if (on) {
                /* words 2t, 2t+1 of q1 (and q2): half of unit t >> 1 (2 + (t >> 1)) */
                const int sw = (int)((g >> 1) & 3);
                int2 *u = (int2 *)((int4 *)xq + 4 * g);
                u[2 * ((t >> 1) ^ sw) + (t & 1)] = make_int2((int)w1[0], (int)w1[1]);
                u[2 * ((2 + (t >> 1)) ^ sw) + (t & 1)] = make_int2((int)w2[0], (int)w2[1]);
                if (t == 0) sx[g] = amax * (1.0f / 127.0f);
                if ((T == T_Q2_K || T == T_Q4_K) && (t & 1) == 0) g16[2 * g + (t >> 1)] = pair_sum;
            }
        }
    }
    xv->xq = (const int4 *)xq;
    xv->sx = sx;
    xv->g16 = g16;
}

/* The K activations as floats in shared memory for F16 rows, swizzled (see
 * gs_x), with the prep applied; four passes' loads at once (one round trip). */
__device__ const float *stage_floats(const float *X, int64_t K, uint8_t *xa, const ds4_prep &prep, const float *U,
                                     float inv, float wt) {
    float *xf = (float *)xa;
    const float4 *X4 = (const float4 *)X;
    for (int64_t i0 = threadIdx.x; i0 < K / 4; i0 += 4 * blockDim.x) {
        float4 fb[4];
#pragma unroll
        for (int p = 0; p < 4; p++) {
            const int64_t i = i0 + p * blockDim.x;
            if (i < K / 4) fb[p] = X4[i];
        }
#pragma unroll
        for (int p = 0; p < 4; p++) {
            const int64_t i = i0 + p * blockDim.x;
            if (i >= K / 4) break;
            float4 f = fb[p];
            if (prep.op != DS4_PREP_NONE) {
                f.x = prep_elem(prep, f.x, U, 4 * i, inv, wt), f.y = prep_elem(prep, f.y, U, 4 * i + 1, inv, wt);
                f.z = prep_elem(prep, f.z, U, 4 * i + 2, inv, wt), f.w = prep_elem(prep, f.w, U, 4 * i + 3, inv, wt);
            }
            ((float4 *)xf)[(i & ~7) | ((i & 7) ^ ((i >> 3) & 7))] = f;
        }
    }
    return xf;
}

/* The router GEMV's last block (ds4k_router_matmul). Each block counts
 * itself done once its logits are written (a fence first, so they are
 * visible to the block that sees the last count), and lets the next kernel
 * (the routed gate/up) launch then: its blocks stage x and copy their
 * tables while the last block selects (letting it launch right after each
 * block's wait instead: -0.3%, within noise; full size, H200,
 * docs/BENCHMARKS.md, forty-eighth session). The block that counts last
 * reads the E logits from L2, writes the scores over them and selects on
 * its warp 0 with router_kernel's code (route_scores, route_pick_warp).
 * The count wraps back to 0 on the last increment (atomicInc), so no
 * separate reset can be lost. Only integer atomics, and the selection does
 * not depend on which block is last. `scratch` holds 2 E floats. `blocks`:
 * the GEMV's blocks (the launch's, less the HC split's; see
 * gemv_f16_split_kernel). */
__device__ void route_last_block(const ds4_route &route, unsigned *done, float *scratch, unsigned blocks) {
    __shared__ bool last;
    __shared__ int32_t sid[DS4_ROUTE_K_MAX];
    __threadfence();
    __syncthreads();
    pdl_trigger();
    if (threadIdx.x == 0) last = atomicInc(done, blocks - 1) == blocks - 1;
    __syncthreads();
    if (!last) return;
    __threadfence(); /* the other blocks' logits, counted before this block's */
    float *sel = scratch, *pr = scratch + route.E;
    route_scores<true>(route.logits, route.E, route.bias, sel, pr);
    __syncthreads();
    if (threadIdx.x < 32)
        route_pick_warp(route.E, route.k, route.tid2eid, route.tid2eid ? route.tok[0] : 0, route.scale, sel, pr, sid,
                        route.ids, route.w);
}

/* F16 rows of at most FS_PARTS chunks (K <= 4096: the router, the compressor
 * projections), FS_PARTS warps a row, each copying and multiplying one
 * chunk, so a row's bytes are all in flight at once: the streaming kernel
 * gives such a matrix (256 rows for the router) a warp a row, which walks
 * its chunks one round trip after another on a few multiprocessors. Lane
 * l's dot with slice l of each chunk is kept per chunk (an absent slice adds
 * -0, which changes nothing) and the row's first warp adds them in chunk
 * order, then the butterfly: the streaming kernel's sums, bitwise. */
#define FS_PARTS 4
#define FS_WARPS 16
#define FS_ROWS (FS_WARPS / FS_PARTS)
/* SELECT (a decode step's router, ds4k_router_matmul): one job, the E logits
 * of the token, and the block that finishes last selects the experts (see
 * route_last_block); the rest of the kernel is the same. With route.hc.mix
 * set, the launch has one more block, the last, whose first thread makes the
 * FFN's post and M (hc_split_thread) from the mixer sums of
 * ds4k_hc_post_collapse, the kernel before this one, beside the GEMV: in
 * that kernel's prologue the Sinkhorn stood on the critical path (its launch
 * follows the shared expert's join), and on a thread of the last block,
 * beside the selection, it outlasted the selection by ~2.4 us (trace,
 * 12-layer model). That block lets the routed gate/up launch before it
 * waits, not at its exit: the launch had waited for its Sinkhorn, ~3.8 us
 * after the collapse whatever the selection took (traces), where the
 * GEMV's blocks let it go sooner (full size, H200, at 2k: decode +1.0%,
 * 192.60 against 190.73 t/s). The rule that a kernel lets the next launch
 * only after its wait still holds for the launch: the dependant starts once
 * every block has let it, and the GEMV's blocks do only after theirs. */
template <bool SELECT>
__global__ void __launch_bounds__(FS_WARPS * 32) gemv_f16_split_kernel(gemv_jobs jobs, const float *X, ds4_route route,
                                                                       unsigned *done) {
    typedef gs_fmt<T_F16> F;
    constexpr int CH = F::chunk;
    extern __shared__ __align__(16) uint8_t gs_smem[];
    __shared__ float part[FS_ROWS][FS_PARTS][32];
    const unsigned gemv_blocks = gridDim.x - (SELECT && route.hc.mix ? 1 : 0);
    if (SELECT && blockIdx.x == gemv_blocks) {
        pdl_trigger(); /* before its wait: see above */
        pdl_wait();
        if (threadIdx.x == 0) hc_split_thread(route.hc);
        return;
    }
    const gemv_job jb = jobs.j[blockIdx.y];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, rloc = warp / FS_PARTS, c = warp % FS_PARTS;
    const int64_t rb = jb.rb, K = jb.K;
    if (!SELECT && (int64_t)blockIdx.x * FS_ROWS >= jb.rows) { /* the whole block is past this job's rows */
        pdl_wait();
        return;
    }
    const int cpr = (int)((rb + CH - 1) / CH);
    uint8_t *buf = gs_smem + (size_t)warp * CH;
    const ds4_prep none = {DS4_PREP_NONE, NULL, 0.0f, NULL, NULL, 0.0f, 0};
    gs_x xv = {};
    /* a launch of fewer blocks than row groups (g_f16_cap; never the
     * router's, a group a block): a block takes every gemv_blocks-th group,
     * x staged once in its first */
    const int64_t step = (int64_t)gemv_blocks * FS_ROWS;
    for (int64_t row0 = (int64_t)blockIdx.x * FS_ROWS; row0 < jb.rows; row0 += step) {
        const bool first = row0 < step;
        const int64_t row = row0 + rloc;
        const bool on = row < jb.rows && c < cpr;
        const int nb = on ? (int)(rb - (int64_t)c * CH < CH ? rb - (int64_t)c * CH : CH) : 0;
        if (on) {
            const uint8_t *src = jb.W + (jb.r0 + row) * rb + (int64_t)c * CH;
            for (int i = lane; i < nb / 16; i += 32) cp_async16(buf + 16 * i, src + 16 * i);
        }
        cp_async_commit();
        if (first) {
            pdl_wait(); /* the weights are in flight; the activations are the previous kernel's */
            if (!SELECT) pdl_trigger();
            xv.xf = stage_floats(X + jb.x_off, K, gs_smem + (size_t)FS_WARPS * CH, none, NULL, 1.0f, 1.0f);
        }
        cp_async_wait<0>();
        __syncthreads();
        const int ns = nb / F::bpb; /* slices in this chunk (32 in a whole one) */
        part[rloc][c][lane] = lane < ns ? slice_dot_f16(buf, lane, (int64_t)c * 32 + lane, xv) : -0.0f;
        __syncthreads();
        if (c == 0 && row < jb.rows) {
            float acc = 0.0f;
            for (int q = 0; q < cpr; q++) acc += part[rloc][q][lane];
            const float sum = warp_sum(acc);
            if (lane == 0) jb.Y[row] = sum;
        }
        if (SELECT) break; /* no loop in the router's code (40 registers, not 64) */
    }
    if (SELECT) route_last_block(route, done, (float *)gs_smem, gemv_blocks * gridDim.y);
}

/* The tail of a product with heads (ds4_heads): the block's rows [b0, b1)
 * of Y are written; warp w counts the block's rows in the block's w-th head
 * (and w + GS_WARPS-th, ...), and a warp whose count completes a head
 * finishes it (rope_head_warp) in `scratch`, its ring, idle once its copies
 * have landed. A count a block, not a warp, and the counters 128 bytes
 * apart: a count a warp on adjacent counters (~4,000 atomics on two L2
 * lines a launch) cost decode 1.9%. Every thread fences its writes before the
 * block barrier, and the finishing warp fences again before it reads the
 * other blocks' rows (through L2): the order of a last-block reduction.
 * The finisher leaves the counter at zero for the next launch (every count
 * of this head is in by then). No block barrier may follow. */
__device__ void heads_tail(const ds4_heads &hh, float *Y, int64_t b0, int64_t b1, float *scratch) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int64_t hd = hh.hd;
    __threadfence();
    __syncthreads();
    for (int64_t h = b0 / hd + warp; h * hd < b1; h += GS_WARPS) {
        const int64_t lo = b0 > h * hd ? b0 : h * hd, hi = b1 < (h + 1) * hd ? b1 : (h + 1) * hd;
        unsigned *cnt = hh.cnt + h * DS4K_HEADS_CNT_STRIDE;
        unsigned before = 0;
        if (lane == 0) before = atomicAdd(cnt, (unsigned)(hi - lo));
        before = __shfl_sync(0xffffffffu, before, 0);
        if (before + (unsigned)(hi - lo) != (unsigned)hd) continue;
        __threadfence();
        rope_head_warp<false>(Y + h * hd, hh.hd, hh.norm, hh.rms_eps, hh.freqs, hh.n_pairs, hh.d_pos[0], scratch);
        __syncwarp();
        if (lane == 0) *cnt = 0;
    }
}

/* Block: GS_WARPS warps over GS_WARPS * rpw consecutive rows of one job (and
 * one routed pair); warp w streams rows [w * rpw, (w + 1) * rpw) chunk by
 * chunk. The first copies are issued before the activations are staged, so
 * both latencies overlap. XR > 0: every row is one chunk and has at most
 * 32 * XR slices; lane l keeps slices l, l + 32, ... of x in registers.
 *
 * EARLY (routed products, ds4_prep.early): 0, the ids are the previous
 * kernel's output, so the block waits for it before anything else;
 * DS4_EARLY_IDS, the ids are older: the weight copies start before the wait
 * as a dense product's do; DS4_EARLY_X, x is older: it is staged first,
 * then the block waits, reads the ids and issues the copies. What was
 * written before the previous kernel is complete once this kernel runs
 * (that kernel triggered this launch only after its own wait); it is read
 * through L2 (__ldcg), where no stale L1 line can shadow it. A template
 * parameter, so the other products' code is unchanged (a runtime flag
 * cost q_b 16 registers, or with the staging duplicated, 5.5% of decode).
 *
 * HEADS (q_b of a decode step, ds4k_matmul_heads): the block ends in
 * heads_tail; held to 64 registers, so it keeps the 4 blocks a
 * multiprocessor the plain kernel has at q_b's shape. */
template <int T, int XR, int EARLY, bool HEADS>
__global__ void __launch_bounds__(GS_WARPS * 32, HEADS ? 4 : 1)
    gemv_stream_kernel(gemv_jobs jobs, const float *X, int64_t ldx, int rpw, const int32_t *ids, int k, int x_per_pair,
                       const uint32_t *iq2tab, ds4_prep prep, int stages, int row_pairs, ds4_heads hh) {
    typedef gs_fmt<T> F;
    constexpr int CH = F::chunk, SPB = F::epb / 32;
    constexpr bool KQ = T == T_Q2_K || T == T_Q4_K;
    constexpr int TQ = T == T_F16 ? T_Q8_0 : T; /* F16 takes slice_dot_f16 */
    extern __shared__ __align__(16) uint8_t gs_smem[];
    const gemv_job jb = jobs.j[blockIdx.y];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int64_t rbase = (int64_t)blockIdx.x * GS_WARPS * rpw;
    if (rbase >= jb.rows) { /* the whole block is past this job's rows */
        pdl_wait();
        return;
    }
    const int64_t rb = jb.rb, K = jb.K, ld = jb.ld ? jb.ld : rb; /* bytes read a row, row stride */
    const uint8_t *W = jb.W + jb.r0 * ld;
    float *Y = jb.Y;
    X += jb.x_off;
    int64_t xrow = 0; /* the activations' row (for the prep's router weight) */
    if (ids) {
        if (EARLY == 0) pdl_wait(); /* the routing is the previous kernel's output */
        const int pair = blockIdx.z;
        if (EARLY == 0) W = jb.W + (int64_t)ids[pair] * jb.rows * ld;
        if (EARLY == DS4_EARLY_IDS) W = jb.W + (int64_t)__ldcg(ids + pair) * jb.rows * ld;
        xrow = x_per_pair ? pair : pair / k;
        X += xrow * ldx;
        Y += (int64_t)pair * jb.ldy;
    }
    const float *U = prep.u ? prep.u + jb.x_off + xrow * ldx : NULL;
    uint8_t *ring = gs_smem + (size_t)warp * stages * CH;

    const int64_t r0 = rbase + (int64_t)warp * rpw;
    const int64_t r1 = r0 + rpw < jb.rows ? r0 + rpw : jb.rows;
    const int64_t rend = rbase + GS_WARPS * rpw < jb.rows ? rbase + GS_WARPS * rpw : jb.rows; /* the block's rows end */
    /* chunks per row: XR > 0 only for rows of one chunk (pick_xr) */
    const int cpr = XR > 0 ? 1 : (int)((rb + CH - 1) / CH);
    const int items = r1 > r0 ? (int)(r1 - r0) * cpr : 0;
    /* The ring holds `stages` chunks; rows shorter than a chunk are staged
     * one per slot, with more slots, so the bytes in flight stay the same.
     * Counters advance by steps (no divisions in the loop). */
    const int slot = (int)(rb < CH ? rb : CH);
    const int nslots = stages * CH / slot < GS_MAX_SLOTS ? stages * CH / slot : GS_MAX_SLOTS;
    int is_n = 0, is_row = 0, is_c = 0, is_slot = 0;
    /* XR > 0 (a row a copy): lane l copies the row's 16-byte units l, l + 32,
     * ... from a running pointer, without the loop a general chunk needs
     * (which made the copy most of the instructions a row costs) */
    constexpr int UPL = (CH / 16 + 31) / 32; /* units a lane copies at most */
    const int units = (int)(rb / 16);
    const uint8_t *is_src = W + r0 * ld + 16 * lane; /* DS4_EARLY_X: set again once W is */
    auto issue_next = [&]() {
        if (is_n < items) {
            if (XR > 0) {
                uint8_t *dst = ring + is_slot * slot + 16 * lane;
#pragma unroll
                for (int u = 0; u < UPL; u++)
                    if (lane + 32 * u < units) cp_async16(dst + 512 * u, is_src + 512 * u);
                is_src += ld;
            } else {
                const uint8_t *src = W + (r0 + is_row) * ld + (int64_t)is_c * CH;
                const int64_t left = rb - (int64_t)is_c * CH;
                const int nb = (int)(left < CH ? left : CH);
                uint8_t *dst = ring + is_slot * slot;
                for (int i = lane; i < nb / 16; i += 32) cp_async16(dst + 16 * i, src + 16 * i);
                if (++is_c == cpr) is_c = 0, is_row++;
            }
            is_n++;
            if (++is_slot == nslots) is_slot = 0;
        }
        cp_async_commit(); /* an empty group keeps the wait count uniform */
    };
    /* IQ2_XXS: the signed tables, copied in the oldest copy group, so the
     * ring's first wait (below) also covers them */
    uint8_t *xa = gs_smem + gs_stage_bytes<T>(stages);
    uint32_t *tab = (uint32_t *)(xa + gs_x_bytes<T>(K) - (T == T_IQ2_XXS ? IQ2_TAB_WORDS * 4 : 0));
    if (T == T_IQ2_XXS) {
        for (int i = threadIdx.x; i < IQ2_TAB_WORDS / 4; i += blockDim.x) cp_async16(tab + 4 * i, iq2tab + 4 * i);
        cp_async_commit();
    }
    /* stage the activations (with the prep: the norm's 1/rms summed in
     * rmsnorm_kernel's order when blockDim.x == row_threads(K)) */
    __shared__ float red[32];
    gs_x xv = {};
    xv.tab = tab;
    auto stage = [&]() {
        const float wt = prep.op == DS4_PREP_SWIGLU && prep.wts ? prep.wts[xrow] : 1.0f;
        if (T == T_F16) {
            const float inv = prep.op == DS4_PREP_NORM ? block_inv_rms(X, K, prep.eps, red) : 1.0f;
            xv.xf = stage_floats(X, K, xa, prep, U, inv, wt);
        } else {
            stage_quantized<T, EARLY == DS4_EARLY_X>(X, K, xa, &xv, prep, U, wt, red);
        }
    };
    if (EARLY == DS4_EARLY_X) {
        stage();
        pdl_wait();
        W = jb.W + (int64_t)__ldcg(ids + blockIdx.z) * jb.rows * ld;
        is_src = W + r0 * ld + 16 * lane;
    }
    for (int p = 0; p < nslots - 1; p++) issue_next();
    /* weights are in flight; from here on the previous kernel's output */
    if (!ids || EARLY == DS4_EARLY_IDS) pdl_wait();
    pdl_trigger();
    if (EARLY != DS4_EARLY_X) stage();
    if (T == T_IQ2_XXS) cp_async_wait_n(nslots - 1);
    __syncthreads();

    /* XR > 0: this lane's slices of x, kept for every row */
    xslice xr[XR > 0 ? XR : 1];
    const int nsl = (int)(K / 32);
#pragma unroll
    for (int j = 0; j < XR; j++)
        if (lane + 32 * j < nsl) xr[j] = load_x(xv, lane + 32 * j, KQ);

    /* XR > 0: one row's dot, lane l's slices l, l + 32, ... in order */
    auto row_dot = [&](const uint8_t *buf) -> float {
        float a = 0.0f;
        if (nsl == 32 * XR) {
            /* every lane has all XR slices (K = 1024 * XR: the usual case):
             * without a bounds test per slice the compiler interleaves the
             * slices' dependent dp4a chains; the sum order is unchanged */
            float d[XR > 0 ? XR : 1];
#pragma unroll
            for (int j = 0; j < XR; j++) d[j] = slice_dot<TQ>(buf, lane + 32 * j, xr[j], xv);
#pragma unroll
            for (int j = 0; j < XR; j++) a += d[j];
        } else {
#pragma unroll
            for (int j = 0; j < XR; j++)
                if (lane + 32 * j < nsl) a += slice_dot<TQ>(buf, lane + 32 * j, xr[j], xv);
        }
        return a;
    };
    /* Two rows an iteration (XR > 0, unless DS4_GEMV_PAIRS=0): the ring's
     * bookkeeping (a copy issued, a wait, the slot counters, the loop) is
     * paid once for two rows and their two butterflies interleave; for a
     * short row (q_b: one slice a lane) that bookkeeping was most of a row's
     * instructions. Each iteration issues one row before its wait, so the
     * wait leaves nslots - 2 rows in flight, and one after, into the slot it
     * has just read. The rows' sums are the loop's below, bitwise. 12-layer
     * model, 4k context: decode 505.9 -> 516.4 t/s (docs/BENCHMARKS.md). */
    if (XR > 0 && row_pairs) {
        int cur = 0; /* slot of row it */
        for (int it = 0; it < items; it += 2) {
            issue_next(); /* row it + nslots - 1, into the slot of row it - 1 */
            if (nslots == GS_MAX_SLOTS) cp_async_wait<GS_MAX_SLOTS - 2>();
            else cp_async_wait_n(nslots - 2);
            __syncwarp();
            const int nxt = cur + 1 == nslots ? 0 : cur + 1;
            const bool two = it + 1 < items; /* uniform over the warp */
            const float a0 = row_dot(ring + cur * slot), a1 = two ? row_dot(ring + nxt * slot) : 0.0f;
            const float s = warp_sum2(a0, a1); /* row it's sum at lane 0, row it + 1's at lane 16 */
            __syncwarp(); /* both slots are refilled next */
            issue_next(); /* row it + nslots, into the slot of row it */
            if (lane == 0) Y[r0 + it] = s;
            if (lane == 16 && two) Y[r0 + it + 1] = s;
            cur = nxt + 1 == nslots ? 0 : nxt + 1;
        }
        cp_async_wait<0>();
        if constexpr (HEADS) heads_tail(hh, Y, rbase, rend, (float *)ring);
        return;
    }
    float acc = 0.0f;
    int c = 0, row = 0, cur = 0;
    for (int it = 0; it < items; it++) {
        issue_next();
        cp_async_wait_n(nslots - 1);
        __syncwarp();
        const uint8_t *buf = ring + cur * slot;
        if (XR > 0) {
            acc += row_dot(buf);
        } else {
            const int64_t left = rb - (int64_t)c * CH;
            const int nb = (int)(left < CH ? left : CH);
            const int ns = nb / F::bpb * SPB;
            const int64_t g0 = (int64_t)c * (CH / F::bpb) * SPB; /* first slice of the chunk in the row */
            for (int s = lane; s < ns; s += 32) {
                if (T == T_F16) acc += slice_dot_f16(buf, s, g0 + s, xv);
                else acc += slice_dot<TQ>(buf, s, load_x(xv, g0 + s, KQ), xv);
            }
        }
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
    if constexpr (HEADS) heads_tail(hh, Y, rbase, rend, (float *)ring);
}

/* ------------------------------------------------------------------ launch */

static int g_stream_on = -1;  /* ds4k_gemv_stream_enable */
static int g_stream_env = 1;  /* DS4_GEMV_STREAM=0 in the environment: always off (A/B timing) */
static int g_stages = GS_STAGES; /* DS4_GEMV_STAGES (2 .. GS_STAGES_MAX): the ring's depth (A/B timing) */
static int g_sm_count;
/* DS4_GEMV_PAIRS=0: rows of one chunk one an iteration, not two (see the
 * kernel; A/B timing). */
static int g_row_pairs = 1;

template <int T> static size_t smem_bytes(int64_t K) { return gs_stage_bytes<T>(g_stages) + gs_x_bytes<T>(K); }

/* The IQ2_XXS signed half-entries (see IQ2_TAB_WORDS), in device memory. */
static const uint32_t *g_iq2tab;

static int iq2_tables_upload(void) {
    uint32_t *h = (uint32_t *)malloc(sizeof(uint32_t) * IQ2_TAB_WORDS);
    if (!h) return -1;
    for (int idx = 0; idx < 256; idx++) {
        const uint64_t e = ds4_iq2xxs_grid[idx];
        for (int n = 0; n < 16; n++) {
            /* lo: weights 0..3, signs n; hi: weights 4..7, signs q = n >> 1
             * for 4..6 and (n & 1) ^ parity(q) for 7 */
            const int q = n >> 1, neg7 = (n & 1) ^ (__builtin_popcount(q) & 1);
            const int sign_hi = q | (neg7 << 3);
            uint32_t lo = 0, hi = 0;
            for (int j = 0; j < 4; j++) {
                const int vl = (int)((e >> (8 * j)) & 0xff), vh = (int)((e >> (8 * (j + 4))) & 0xff);
                lo |= (uint32_t)(uint8_t)((n >> j) & 1 ? -vl : vl) << (8 * j);
                hi |= (uint32_t)(uint8_t)((sign_hi >> j) & 1 ? -vh : vh) << (8 * j);
            }
            h[n * 256 + idx] = lo;
            h[256 * 16 + n * 256 + idx] = hi;
        }
    }
    void *d = NULL;
    const bool ok = cudaMalloc(&d, sizeof(uint32_t) * IQ2_TAB_WORDS) == cudaSuccess &&
                    cudaMemcpy(d, h, sizeof(uint32_t) * IQ2_TAB_WORDS, cudaMemcpyHostToDevice) == cudaSuccess;
    free(h);
    if (!ok) return -1;
    g_iq2tab = (const uint32_t *)d;
    return 0;
}

/* Activations in registers (XR slices a lane) when every row is one chunk
 * and K <= 4096; DS4_GEMV_XREG=0 keeps them in shared memory (A/B timing). */
static int g_xreg = 1;
int g_pdl_on = 1;           /* DS4_PDL=0: each kernel after the previous one completes (A/B timing) */
int g_pdl_small_batch = 1;   /* set per forward pass (cuda_layers.inc) */
static int g_f16_split = 1; /* DS4_GEMV_F16_SPLIT=0: F16 rows by the streaming kernel (A/B timing) */
/* Blocks a job of the F16 split GEMV (no selection), each taking every
 * g_f16_cap-th group of rows: half the multiprocessors by default,
 * DS4_F16_SPLIT_CAP=N sets N, 0 a block a group (the old launch). A
 * decode step's compressor projections run beside the layer's critical
 * chain (q_b; at a ratio-4 layer the indexer's scores and top-k), and a
 * block a group (512 blocks of 512 threads for an attention compressor)
 * took every free slot: the indexer's scores, on the critical path at long
 * contexts, began ~6 us after their input. Full size, H200, one sweep each
 * in one call: decode +0.7 to +0.8% from 16k to 64k, 2k-8k within noise
 * (docs/bench/history-6.md, thirty-second session). */
static int g_f16_cap;
static int g_early = 1;     /* DS4_GEMV_EARLY=0: ds4_prep's early flags ignored (A/B timing) */

template <int T> static int pick_xr(const gemv_jobs *jobs, int64_t max_k) {
    bool one_chunk = true;
    for (int i = 0; i < jobs->n; i++) one_chunk &= jobs->j[i].rb <= gs_fmt<T>::chunk;
    if (T == T_F16 || !g_xreg || max_k > 4096 || !one_chunk) return 0;
    return max_k <= 1024 ? 1 : max_k <= 2048 ? 2 : 4;
}

/* Whether gemv_stream_kernel has EARLY variants for T and XR: the routed
 * experts' types with activations in registers. */
template <int T, int XR> static constexpr bool has_early(void) {
    return XR > 0 && (T == T_IQ2_XXS || T == T_Q2_K || T == T_Q4_K);
}
/* ... and a variant with the heads' tail (ds4k_matmul_heads): q_b's rows
 * (Q8_0, K = 1,024: one slice a lane). The indexer's queries (F16) lost
 * with it: their Hadamard and FP4 on one warp a head outlast the 64-block
 * kernel (decode -0.9%, docs/BENCHMARKS.md). */
template <int T, int XR> static constexpr bool has_heads(void) { return T == T_Q8_0 && XR == 1; }
typedef void (*stream_kernel_t)(gemv_jobs, const float *, int64_t, int, const int32_t *, int, int, const uint32_t *,
                                ds4_prep, int, int, ds4_heads);
/* NULL where there is no such variant. */
template <int T, int XR> static stream_kernel_t stream_kernel(int early, bool heads) {
    constexpr bool E = has_early<T, XR>(), H = has_heads<T, XR>();
    if (heads) return H && !early ? gemv_stream_kernel<T, XR, 0, H> : NULL;
    return early == DS4_EARLY_X && E     ? gemv_stream_kernel<T, XR, E ? DS4_EARLY_X : 0, false>
           : early == DS4_EARLY_IDS && E ? gemv_stream_kernel<T, XR, E ? DS4_EARLY_IDS : 0, false>
                                         : gemv_stream_kernel<T, XR, 0, false>;
}

template <int T, int XR>
static bool launch_xr(const gemv_jobs *jobs, const float *X, int64_t ldx, const int32_t *ids, int pairs, int k,
                      int x_per_pair, int64_t max_rows, int64_t max_k, cudaStream_t s, const ds4_prep &prep,
                      const ds4_heads *heads) {
    const size_t smem = smem_bytes<T>(max_k);
    /* early starts only for routed products (DS4_GEMV_EARLY=0: never) */
    const stream_kernel_t kern = stream_kernel<T, XR>(ids && g_early ? prep.early : 0, heads != NULL);
    /* the tail works in a warp's ring: a head of floats must fit */
    if (!kern || (heads && (size_t)heads->hd * sizeof(float) > (size_t)g_stages * gs_fmt<T>::chunk)) return false;
    int per_sm = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kern, GS_WARPS * 32, smem) !=
            cudaSuccess ||
        per_sm < 1)
        return false;
    /* rows per warp: the fewest that let every block be resident at once
     * (no second, partly empty wave), so each warp streams a long run; with
     * a share (ds4_heads), within that share of the GPU */
    int64_t cap = (int64_t)per_sm * g_sm_count;
    if (heads && heads->share8 > 0 && heads->share8 < 8) cap = cap * heads->share8 / 8;
    if (cap < 1) cap = 1;
    const int64_t z = ids ? pairs : 1;
    const int64_t slots = cap / (jobs->n * z) > 0 ? cap / (jobs->n * z) : 1; /* blocks per job and pair */
    const int64_t rpw64 = (max_rows + GS_WARPS * slots - 1) / (GS_WARPS * slots);
    const int rpw = (int)(rpw64 > 0 ? rpw64 : 1);
    const dim3 grid((unsigned)((max_rows + GS_WARPS * rpw - 1) / (GS_WARPS * rpw)), (unsigned)jobs->n, (unsigned)z);
    cudaLaunchAttribute attr;
    const cudaLaunchConfig_t cfg = pdl_config(grid, dim3(GS_WARPS * 32), smem, s, &attr, true);
    const int pairs_on = XR > 0 && g_row_pairs;
    const ds4_heads none = {};
    return cudaLaunchKernelEx(&cfg, kern, *jobs, X, ldx, rpw, ids, k, x_per_pair, g_iq2tab, prep, g_stages, pairs_on,
                              heads ? *heads : none) == cudaSuccess;
}

template <int T>
static bool launch_t(const gemv_jobs *jobs, const float *X, int64_t ldx, const int32_t *ids, int pairs, int k,
                     int x_per_pair, cudaStream_t s, const ds4_prep &prep, const ds4_heads *heads) {
    int64_t max_rows = 0, max_k = 0;
    for (int i = 0; i < jobs->n; i++) {
        const gemv_job *j = &jobs->j[i];
        if (j->rb % 16 != 0 || j->rb % gs_fmt<T>::bpb != 0 || j->ld % 16 != 0 || ((uintptr_t)j->W % 16) != 0 ||
            j->x_off % 4 != 0 || j->K % 32 != 0)
            return false;
        max_rows = j->rows > max_rows ? j->rows : max_rows;
        max_k = j->K > max_k ? j->K : max_k;
    }
    if (gs_x_bytes<T>(max_k) > GS_X_MAX || ((uintptr_t)X % 16) != 0 || (ids && ldx % 4 != 0))
        return false;
    switch (pick_xr<T>(jobs, max_k)) {
    case 1: return launch_xr<T, T == T_F16 ? 0 : 1>(jobs, X, ldx, ids, pairs, k, x_per_pair, max_rows, max_k, s, prep,
                                                    heads);
    case 2: return launch_xr<T, T == T_F16 ? 0 : 2>(jobs, X, ldx, ids, pairs, k, x_per_pair, max_rows, max_k, s, prep,
                                                    heads);
    case 4: return launch_xr<T, T == T_F16 ? 0 : 4>(jobs, X, ldx, ids, pairs, k, x_per_pair, max_rows, max_k, s, prep,
                                                    heads);
    default: return launch_xr<T, 0>(jobs, X, ldx, ids, pairs, k, x_per_pair, max_rows, max_k, s, prep, heads);
    }
}

/* gemv_f16_split_kernel for F16 jobs of at most FS_PARTS chunks a row, no
 * routing and no prep (else false: the streaming kernel takes them). */
static bool launch_f16_split(const gemv_jobs *jobs, const float *X, const int32_t *ids, cudaStream_t s,
                             const ds4_prep &prep) {
    if (!g_f16_split || ids || prep.op != DS4_PREP_NONE) return false;
    int64_t max_rows = 0;
    for (int i = 0; i < jobs->n; i++) {
        const gemv_job *j = &jobs->j[i];
        if (j->rb > (int64_t)FS_PARTS * gs_fmt<T_F16>::chunk || j->rb % 16 != 0 || (j->ld && j->ld != j->rb) ||
            ((uintptr_t)j->W % 16) != 0 || j->x_off % 4 != 0 || j->K % 32 != 0)
            return false;
        max_rows = j->rows > max_rows ? j->rows : max_rows;
    }
    if (((uintptr_t)X % 16) != 0) return false;
    /* smem: a chunk a warp, then the activations (K <= FS_PARTS chunks of F16) */
    const size_t smem = (size_t)FS_WARPS * gs_fmt<T_F16>::chunk + gs_x_bytes<T_F16>(FS_PARTS * gs_fmt<T_F16>::chunk / 2);
    int64_t groups = (max_rows + FS_ROWS - 1) / FS_ROWS;
    if (g_f16_cap > 0 && groups > g_f16_cap) groups = g_f16_cap;
    cudaLaunchAttribute attr;
    const cudaLaunchConfig_t cfg =
        pdl_config(dim3((unsigned)groups, (unsigned)jobs->n), dim3(FS_WARPS * 32), smem, s, &attr, true);
    const ds4_route none_route = {};
    return cudaLaunchKernelEx(&cfg, gemv_f16_split_kernel<false>, *jobs, X, none_route, (unsigned *)NULL) ==
           cudaSuccess;
}

extern "C" int ds4k_router_matmul(const ds4_dw *W, const float *X, const ds4_route *r, unsigned *done,
                                  ds4_stream st) {
    static int on = -1; /* DS4_ROUTER_LAST=0: the product and ds4k_router apart (A/B) */
    if (on < 0) on = env_switch_on("DS4_ROUTER_LAST");
    const int64_t rb = W->K * 2; /* F16 rows */
    const size_t scratch = (size_t)FS_WARPS * gs_fmt<T_F16>::chunk; /* the chunk buffers, free once the dots are done */
    if (!on || g_stream_on != 1 || !g_f16_split || !done || !r->logits || !r->ids || !r->w ||
        (r->tid2eid && !r->tok) || W->type != T_F16 || W->N != r->E || r->k < 1 ||
        r->k > DS4_ROUTE_K_MAX || r->E < r->k || (size_t)r->E * 2 * sizeof(float) > scratch ||
        rb > (int64_t)FS_PARTS * gs_fmt<T_F16>::chunk || rb % 16 != 0 || ((uintptr_t)W->ptr % 16) != 0 ||
        W->K % 32 != 0 || ((uintptr_t)X % 16) != 0)
        return -1;
    gemv_jobs jobs;
    jobs.n = 1;
    jobs.j[0] = (gemv_job){(const uint8_t *)W->ptr, rb, 0, r->E, W->K, 0, r->logits, r->E, T_F16};
    const size_t smem = scratch + gs_x_bytes<T_F16>(FS_PARTS * gs_fmt<T_F16>::chunk / 2);
    cudaLaunchAttribute attr;
    const unsigned blocks = (unsigned)((r->E + FS_ROWS - 1) / FS_ROWS) + (r->hc.mix ? 1 : 0); /* + the HC split's */
    const cudaLaunchConfig_t cfg = pdl_config(dim3(blocks, 1), dim3(FS_WARPS * 32), smem, (cudaStream_t)st, &attr, true);
    return cudaLaunchKernelEx(&cfg, gemv_f16_split_kernel<true>, jobs, X, *r, done) == cudaSuccess ? 0 : -1;
}

bool gemv_stream(const gemv_jobs *jobs, const float *X, int64_t ldx, const int32_t *ids, int pairs, int k,
                 int x_per_pair, cudaStream_t s, const ds4_prep *prep_in, const ds4_heads *heads) {
    if (g_stream_on != 1 || jobs->n < 1) return false;
    const ds4_prep none = {DS4_PREP_NONE, NULL, 0.0f, NULL, NULL, 0.0f, 0}, &prep = prep_in ? *prep_in : none;
    /* the prep's other inputs are read with the activations' layout */
    if (prep.op == DS4_PREP_SWIGLU && (!prep.u || ((uintptr_t)prep.u % 16) != 0)) return false;
    if (prep.op == DS4_PREP_NORM && (!prep.w || jobs->n != 1 || ((uintptr_t)prep.w % 16) != 0)) return false;
    const int type = jobs->j[0].type;
    for (int i = 1; i < jobs->n; i++)
        if (jobs->j[i].type != type) return false;
    /* the heads' tail: one job of whole heads, one token, and the shapes
     * rope_head_warp takes */
    if (heads) {
        const ds4_heads &h = *heads;
        if (ids || jobs->n != 1 || h.hd <= 0 || h.hd % 128 != 0 || h.hd > HR_MAX || jobs->j[0].rows % h.hd != 0 ||
            h.n_pairs < 0 || h.n_pairs > 32 || 2 * h.n_pairs > h.hd || !h.cnt || !h.d_pos || (h.n_pairs > 0 && !h.freqs))
            return false;
    }
    switch (type) {
    case T_Q8_0: return launch_t<T_Q8_0>(jobs, X, ldx, ids, pairs, k, x_per_pair, s, prep, heads);
    case T_Q2_K: return launch_t<T_Q2_K>(jobs, X, ldx, ids, pairs, k, x_per_pair, s, prep, heads);
    case T_Q4_K: return launch_t<T_Q4_K>(jobs, X, ldx, ids, pairs, k, x_per_pair, s, prep, heads);
    case T_IQ2_XXS: return launch_t<T_IQ2_XXS>(jobs, X, ldx, ids, pairs, k, x_per_pair, s, prep, heads);
    case T_F16:
        return (!heads && launch_f16_split(jobs, X, ids, s, prep)) ||
               launch_t<T_F16>(jobs, X, ldx, ids, pairs, k, x_per_pair, s, prep, heads);
    default: return false;
    }
}

template <int T, int XR> static bool allow_smem_xr(void) {
    const int bytes = (int)(gs_stage_bytes<T>(GS_STAGES_MAX) + GS_X_MAX);
    for (int early = 0; early <= DS4_EARLY_IDS; early++)
        if (cudaFuncSetAttribute(stream_kernel<T, XR>(early, false), cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 bytes) != cudaSuccess)
            return false;
    const stream_kernel_t with_heads = stream_kernel<T, XR>(0, true);
    return !with_heads ||
           cudaFuncSetAttribute(with_heads, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes) == cudaSuccess;
}
template <int T> static bool allow_smem(void) {
    constexpr bool Q = T != T_F16; /* F16 has no register variant */
    return allow_smem_xr<T, 0>() && allow_smem_xr<T, Q ? 1 : 0>() && allow_smem_xr<T, Q ? 2 : 0>() &&
           allow_smem_xr<T, Q ? 4 : 0>();
}

int gemv_stream_init(void) {
    if (!g_iq2tab && iq2_tables_upload() != 0) return -1;
    g_stream_env = env_switch_on("DS4_GEMV_STREAM");
    g_stream_on = g_stream_env;
    g_xreg = env_switch_on("DS4_GEMV_XREG");
    g_stages = env_int("DS4_GEMV_STAGES", GS_STAGES, 2, GS_STAGES_MAX, GS_STAGES);
    g_row_pairs = env_switch_on("DS4_GEMV_PAIRS");
    /* pdl_wait is compiled only for sm_90 and later: code built for an older
     * architecture (and JIT-compiled from its PTX on a newer GPU) must not
     * be launched early, it would not wait */
    g_pdl_on = env_switch_on("DS4_PDL") && DS4_CUDA_ARCH_MIN >= 90;
    g_f16_split = env_switch_on("DS4_GEMV_F16_SPLIT");
    g_early = env_switch_on("DS4_GEMV_EARLY");
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&g_sm_count, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
        return -1;
    g_f16_cap = env_int("DS4_F16_SPLIT_CAP", g_sm_count / 2, 0, 1 << 20, 0);
    if (cudaFuncSetAttribute(gemv_f16_split_kernel<false>, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024) !=
            cudaSuccess ||
        cudaFuncSetAttribute(gemv_f16_split_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024) !=
            cudaSuccess)
        return -1;
    if (!allow_smem<T_Q8_0>() || !allow_smem<T_Q2_K>() || !allow_smem<T_Q4_K>() || !allow_smem<T_IQ2_XXS>() ||
        !allow_smem<T_F16>())
        return -1;
    return 0;
}

extern "C" int ds4k_gemv_f16_split_enable(int on) {
    const int was = g_f16_split;
    g_f16_split = on ? 1 : 0;
    return was;
}

extern "C" int ds4k_gemv_f16_split_cap(int blocks) {
    const int was = g_f16_cap;
    if (blocks >= 0) g_f16_cap = blocks;
    return was;
}

extern "C" int ds4k_gemv_pairs_enable(int on) {
    const int was = g_row_pairs;
    g_row_pairs = on ? 1 : 0;
    return was;
}

extern "C" int ds4k_gemv_xreg_enable(int on) {
    const int was = g_xreg;
    g_xreg = on ? 1 : 0;
    return was;
}

extern "C" int ds4k_gemv_stream_enable(int on) {
    const int was = g_stream_on == 1;
    g_stream_on = on && g_stream_env ? 1 : 0;
    return was;
}

/* ------------------------------------------------------------------ conversion check (tests) */

/* The slices' conversions above against the plain expressions they replace,
 * on this device: every integer the exact forms take (small_u2f and
 * small_u2f_half over [0, 2^23), small_i2f over (-2^22, 2^22)), and qdot
 * and qdot_small on `per_type` pseudo-random pairs at each
 * type's bound of |h| and |l| with a random positive scale (normal or
 * subnormal). Mismatches are counted into *bad. */
__global__ void gemv_convert_check_kernel(int64_t per_type, uint64_t seed, unsigned long long *bad) {
    const int64_t i0 = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, step = (int64_t)gridDim.x * blockDim.x;
    unsigned long long n = 0;
    for (int64_t v = i0; v < (1 << 23); v += step) {
        n += __float_as_uint(small_u2f((uint32_t)v)) != __float_as_uint((float)v);
        n += __float_as_uint(small_u2f_half((uint32_t)v)) != __float_as_uint(0.5f + (float)v);
        const int sv = (int)v - (1 << 22);
        if (sv > -(1 << 22)) n += __float_as_uint(small_i2f(sv)) != __float_as_uint((float)sv);
    }
    /* |h|, |l| bounds: Q8_0 32 * 127 * 127, IQ2_XXS 32 * 43 * 127, Q4_K 32 * 15 * 127, Q2_K 16 * 3 * 127 */
    const int lim[4] = {516128, 174752, 60960, 6096};
    uint64_t x = seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)(i0 + 1));
    for (int64_t k = i0; k < 4 * per_type; k += step) {
        const int t = (int)(k % 4);
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        const int h = (int)(x % (2u * lim[t] + 1)) - lim[t];
        const int l = (int)((x >> 32) % (2u * lim[t] + 1)) - lim[t];
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        const float sx = __uint_as_float((uint32_t)(x % 0x7f000000u));
        const uint32_t want = __float_as_uint(fmaf((float)l, 1.0f / 256.0f, (float)h) * sx);
        n += __float_as_uint(qdot(h, l, sx)) != want;
        if (t == 3) n += __float_as_uint(qdot_small(h, l, sx)) != want;
    }
    if (n) atomicAdd(bad, n);
}

extern "C" long long ds4k_gemv_convert_check(int64_t per_type, uint64_t seed) {
    unsigned long long *d = NULL, h = 0;
    if (cudaMalloc(&d, sizeof(*d)) != cudaSuccess) return -1;
    bool ok = cudaMemset(d, 0, sizeof(*d)) == cudaSuccess;
    if (ok) {
        gemv_convert_check_kernel<<<264, 256>>>(per_type, seed, d);
        ok = cudaGetLastError() == cudaSuccess && cudaMemcpy(&h, d, sizeof(h), cudaMemcpyDeviceToHost) == cudaSuccess;
    }
    cudaFree(d);
    return ok ? (long long)h : -1;
}
