/* ds4 — prefill products on Hopper's warpgroup MMA (wgmma, sm_90a builds
 * only; other builds and other weight types keep cuda_mma.cu's tiles): the
 * routed experts' (IQ2_XXS gate/up, Q2_K down, Q8_0 where a model has it)
 * the dense Q8_0 ones (attention q_b, o_a, o_b, the shared expert...) and
 * the dense F16 ones (router, compressor projections, the indexer's queries:
 * wgmma_kernel only, see pc_takes).
 *
 * Why: the mma.sync tiles (cuda_mma.cu) are latency-bound — 16 warps a
 * multiprocessor, each holding its own fragments, with a barrier and a chain
 * of four dependent products per 32-element slice; ncu shows the tensor
 * pipe ~33% active. wgmma takes the activations straight from shared memory
 * (no fragments in registers), runs asynchronously while the warps decode
 * the next weights, and covers 64 rows x BN tokens per instruction.
 *
 * A block is two warpgroups, each owning 64 weight rows, and BN tokens of an
 * expert segment or a dense product (128, 64 or 32, as the tiles choose;
 * 256 for dense Q8_0 products of 256 tokens or more, see wg_launch_t).
 * Per 32-element slice:
 *
 *   weights      each thread decodes its own A fragment straight from the
 *                weight bytes into registers (no shared-memory stage, no
 *                barrier for weights). The k order inside a slice is
 *                permuted so that a thread's 8 values of a row in the
 *                slice's two k16 steps are one 8-value group (t4 of the
 *                slice): for IQ2_XXS one grid entry, one table lookup per
 *                row and slice. The sub-block scale is folded in as an exact
 *                f16 integer: grid x (2s + 1) <= 1333, Q2_K level x scale
 *                <= 45; Q8_0's bytes are exact f16 integers as they are,
 *                F16 weights are their own fragments (16 bytes a row).
 *   activations  the rows split once in that same permuted order (f16 hi
 *                and lo, ~22 bits together, a slice's 32 hi then its 32 lo
 *                halves: the experts' gathered rows in place by
 *                mma_split_rows, a dense product's input into a scratch
 *                buffer by mma_split_rows_to), copied by cp.async three
 *                slices ahead into five stages laid out as wgmma's K-major
 *                core matrices (8 tokens x 16 bytes) — or, in the
 *                producer-fed kernel, by the tensor-memory accelerator as
 *                128-byte swizzled rows (see there).
 *   products     two wgmma per slice (two k16 steps; four with the lo
 *                halves, see "Activation precision") accumulate a
 *                256-element super-block in f32; at its end the block's
 *                scale (IQ2_XXS d / 8, Q2_K d) promotes it into the result
 *                with one FMA per element (the way block-scaled GEMMs keep
 *                f32 accuracy); Q2_K's minimums are one more k16 product
 *                per super-block on the rows' 16-sums (wg_min_pairs). Q8_0
 *                has a scale per slice, folded into its f16 weights by
 *                default (wg_build_q8); in oracle mode each slice's sums of
 *                exact integers are promoted at the start of the next,
 *                after its barrier, so the tensor cores work through the
 *                barrier and the next fragments.
 *
 * Activation precision. By default the products take the hi halves alone:
 * each activation rounded to f16 (relative error <= 2^-11; the model's own
 * activations are bf16, 2^-8, and the KV rows are f16 here anyway), which
 * halves the tensor-core work: 12-layer prefill 14,935 -> 16,114 t/s
 * (docs/BENCHMARKS.md). Oracle mode (ds4k_wgmma_exact_acts) adds the lo
 * halves: ~22 bits, the CPU's products to f32 rounding (the kernel test
 * bounds them at 1e-6 of |w| |x|). Q2_K's minimums always take their
 * 16-sums' hi and lo. Without the lo halves the producer copies the hi
 * halves alone (half of every tile's reads from L2), wgmma_kernel skips
 * the lo pieces, and the split does not write them; and Q8_0's weights are
 * their f16 products with their block scales (one more 2^-11 rounding),
 * which spares the per-slice promotion (oracle mode keeps it: exact).
 *
 * Every output is a fixed sequence of the same operations whatever the
 * grid, so results are deterministic, though not bitwise those of the
 * mma.sync tiles (another summation order).
 *
 * Two kernels make these products with the same bits: wgmma_kernel, whose
 * MMA warps also copy their activations and load their weight bytes, and
 * wgmma_pc_kernel (the default where rows start on 16 bytes), where a
 * producer warpgroup does all the copying into shared memory and the MMA
 * warps only wait on mbarriers, decode and multiply. */
#include "cuda/cuda_gemv.cuh"
#include "cuda/cuda_kernels.h"
#include "cuda/cuda_quant.cuh"
#include "cuda/cuda_tc.cuh"

#include <cuda.h>
#include <cudaTypedefs.h>
#include <string.h>
#include <type_traits>

#define WG_BM 128      /* weight rows a block: two warpgroups of 64 */
#define WG_THREADS 256 /* two warpgroups */
#define WG_NS 5        /* activation stages: slices s + 1 .. s + 3 land while s and s - 1 may be read */

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define WG_DEVICE 1
#endif

/* ------------------------------------------------------------------ wgmma primitives */

#ifdef WG_DEVICE
__device__ __forceinline__ void wg_fence(void) { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit(void) { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void wg_wait(void) {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
/* Shared-memory writes of the generic proxy (cp.async) made visible to the
 * async proxy that wgmma reads through. */
__device__ __forceinline__ void fence_proxy_async(void) {
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
/* Ties each accumulator to this point, so reads of it are not scheduled
 * before the wgmma.wait_group that completes it. */
template <int R> __device__ __forceinline__ void wg_hold(float (&d)[R]) {
#pragma unroll
    for (int i = 0; i < R; i++) asm volatile("" : "+f"(d[i])::"memory");
}
/* Matrix descriptor of a K-major operand without swizzle: core matrices of
 * 8 rows x 16 bytes stored as 128 contiguous bytes, `lbo` bytes between the
 * two k halves of a k16 step, `sbo` bytes between 8-row groups. */
__device__ __forceinline__ uint64_t wg_desc(const void *smem, uint32_t lbo, uint32_t sbo) {
    const uint32_t a = (uint32_t)__cvta_generic_to_shared(smem);
    return (uint64_t)((a >> 4) & 0x3fff) | ((uint64_t)((lbo >> 4) & 0x3fff) << 16) |
           ((uint64_t)((sbo >> 4) & 0x3fff) << 32);
}

/* D (64 x N f32, N / 2 registers a thread) (+)= A (64 x 16 f16 from
 * registers, the m16n8k16 A fragment per warp) . B (16 x N f16, K-major in
 * shared memory); acc = 0 overwrites D. */
#define WG_D4(d, i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3])
#define WG_D16_AT(d, i) WG_D4(d, i), WG_D4(d, i + 4), WG_D4(d, i + 8), WG_D4(d, i + 12)
#define WG_D16(d) WG_D16_AT(d, 0)
#define WG_D32(d) WG_D16_AT(d, 0), WG_D16_AT(d, 16)
#define WG_D64_AT(d, i) WG_D16_AT(d, i), WG_D16_AT(d, i + 16), WG_D16_AT(d, i + 32), WG_D16_AT(d, i + 48)
#define WG_D64(d) WG_D64_AT(d, 0)

template <int N> struct wg_mma;
template <> struct wg_mma<32> {
    static __device__ __forceinline__ void run(float (&d)[16], const uint32_t (&a)[4], uint64_t desc, int acc) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %20, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n32k16.f32.f16.f16 {"
                     "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15"
                     "}, {%16, %17, %18, %19}, %21, p, 1, 1, 0;\n}\n"
                     : WG_D16(d)
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(acc), "l"(desc));
    }
};
template <> struct wg_mma<64> {
    static __device__ __forceinline__ void run(float (&d)[32], const uint32_t (&a)[4], uint64_t desc, int acc) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %36, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 {"
                     "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                     "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
                     "}, {%32, %33, %34, %35}, %37, p, 1, 1, 0;\n}\n"
                     : WG_D32(d)
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(acc), "l"(desc));
    }
};
template <> struct wg_mma<128> {
    static __device__ __forceinline__ void run(float (&d)[64], const uint32_t (&a)[4], uint64_t desc, int acc) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %68, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {"
                     "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                     "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
                     "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
                     "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
                     "}, {%64, %65, %66, %67}, %69, p, 1, 1, 0;\n}\n"
                     : WG_D64(d)
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(acc), "l"(desc));
    }
};
template <> struct wg_mma<256> {
    static __device__ __forceinline__ void run(float (&d)[128], const uint32_t (&a)[4], uint64_t desc, int acc) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %132, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n256k16.f32.f16.f16 {"
                     "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                     "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
                     "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
                     "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
                     "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "
                     "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "
                     "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, "
                     "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
                     "}, {%128, %129, %130, %131}, %133, p, 1, 1, 0;\n}\n"
                     : WG_D64(d), WG_D64_AT(d, 64)
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(acc), "l"(desc));
    }
};
#endif

/* ------------------------------------------------------------------ weights */

/* The raw bytes of one row's slice a thread needs, loaded four slices ahead
 * (one or two ahead, the loads were still the largest stall, ncu; through
 * shared memory — cp.async of the rows' super-blocks in 4-byte words — the
 * kernel was 7% slower):
 *   IQ2_XXS  a: the grid index of group t4, b / c: the slice's sign/scale
 *            word as two halves (joined at the lookup: joined at once, the
 *            join waited on the loads), d: the super-block's d (first slice).
 *            Slice s's 8 bytes are at row + 2 + 8 s + 2 (s / 8) (66-byte
 *            super-blocks, d first; only 2-byte aligned).
 *   Q2_K     a / b: the 8 level bytes of group t4 (2 bits at 2 (s & 3)),
 *            c: the sub-block's scale/min byte, and at the first slice
 *            d: d | dmin << 16, e: the scale/min bytes of sub-blocks 2t4,
 *            2t4 + 1 (low half) and 8 + 2t4, 9 + 2t4 (high half) for the
 *            minimums' product. 84-byte super-blocks: scales[16], qs[64], d,
 *            dmin.
 *   Q8_0     the 8 bytes of group t4: a / b as two words where they are
 *            4-byte aligned (e = 1: every other 34-byte block of rows of an
 *            even number of blocks), else a / b / c as 2 + 4 + 2 bytes; d:
 *            the block's d.
 *   F16      the 8 halves of group t4 (16 bytes, rows start on 16): a..d. */
typedef struct wg_raw {
    uint32_t a, b, c, d, e;
} wg_raw;

template <int T> __device__ __forceinline__ void wg_load(const uint8_t *row, int s, int t4, wg_raw &q);
template <> __device__ __forceinline__ void wg_load<T_IQ2_XXS>(const uint8_t *row, int s, int t4, wg_raw &q) {
    const uint8_t *g = row + 2 + 8 * s + 2 * (s >> 3);
    q.a = g[t4];
    q.b = ld_a16(g + 4);
    q.c = ld_a16(g + 6);
    if ((s & 7) == 0) q.d = ld_a16(g - 2);
}
template <> __device__ __forceinline__ void wg_load<T_Q2_K>(const uint8_t *row, int s, int t4, wg_raw &q) {
    const uint8_t *blk = row + 84 * (s >> 3);
    const int j = s & 7;
    const uint8_t *qs = blk + 16 + 32 * (j >> 2) + 8 * t4;
    q.a = ld_a32(qs);
    q.b = ld_a32(qs + 4);
    q.c = blk[2 * j + (t4 >> 1)];
    if (j == 0) {
        q.d = ld_a32(blk + 80);
        q.e = ld_a16(blk + 2 * t4) | (ld_a16(blk + 8 + 2 * t4) << 16);
    }
}

template <> __device__ __forceinline__ void wg_load<T_F16>(const uint8_t *row, int s, int t4, wg_raw &q) {
    const uint4 v = *(const uint4 *)(row + 64 * s + 16 * t4);
    q.a = v.x, q.b = v.y, q.c = v.z, q.d = v.w;
}

template <> __device__ __forceinline__ void wg_load<T_Q8_0>(const uint8_t *row, int s, int t4, wg_raw &q) {
    const uint8_t *blk = row + 34 * s, *g = blk + 2 + 8 * t4;
    q.e = ((uintptr_t)g & 3) == 0; /* joined at the lookup: joined here, the join waits on the loads (ncu) */
    if (q.e) {
        q.a = ld_a32(g);
        q.b = ld_a32(g + 4);
    } else {
        q.a = ld_a16(g);
        q.b = ld_a32(g + 2);
        q.c = ld_a16(g + 6);
    }
    q.d = ld_a16(blk);
}

/* A row's slice ready to build: gv its 8 values as bytes, sg the sign bits
 * of its four pairs (F16: the four pairs themselves), mb the multiplier
 * pair as 1024 + m; d and e passed on. */
typedef struct wg_look {
    uint64_t gv;
    uint4 sg;
    uint32_t mb, d, e;
} wg_look;

/* IQ2_XXS: the table lookups, issued well before the values are needed
 * (waiting on them at once was the next largest stall); multiplier 2s + 1.
 * Q2_K: the levels at this slice's shift; multiplier the 4-bit scale. */
template <int T>
__device__ __forceinline__ void wg_lookup(const wg_raw &q, int s, int t4, const uint64_t *grid, const uint4 *signs,
                                          wg_look &l);
template <>
__device__ __forceinline__ void wg_lookup<T_IQ2_XXS>(const wg_raw &q, int, int t4, const uint64_t *grid,
                                                     const uint4 *signs, wg_look &l) {
    const uint32_t aux = q.b | (q.c << 16);
    l.gv = grid[q.a];
    l.sg = signs[(aux >> (7 * t4)) & 127];
    l.mb = 0x64006400u | (2 * (aux >> 28) + 1) * 0x10001u;
    l.d = q.d;
}
template <>
__device__ __forceinline__ void wg_lookup<T_Q2_K>(const wg_raw &q, int s, int, const uint64_t *, const uint4 *,
                                                  wg_look &l) {
    const int sh = 2 * (s & 3);
    l.gv = (uint64_t)((q.a >> sh) & 0x03030303u) | ((uint64_t)((q.b >> sh) & 0x03030303u) << 32);
    l.sg = make_uint4(0, 0, 0, 0);
    l.mb = 0x64006400u | (q.c & 15) * 0x10001u;
    l.d = q.d;
    l.e = q.e;
}

/* Q8_0: the bytes as they are (int8: the build takes them xor 0x80). */
template <>
__device__ __forceinline__ void wg_lookup<T_Q8_0>(const wg_raw &q, int, int, const uint64_t *, const uint4 *,
                                                  wg_look &l) {
    const uint32_t lo = q.e ? q.a : q.a | (q.b << 16), hi = q.e ? q.b : (q.b >> 16) | (q.c << 16);
    l.gv = (uint64_t)(lo ^ 0x80808080u) | ((uint64_t)(hi ^ 0x80808080u) << 32);
    l.d = q.d;
}

/* F16: the pairs as they are; no scale (d = 1.0 promotes each 256 sums). */
template <>
__device__ __forceinline__ void wg_lookup<T_F16>(const wg_raw &q, int, int, const uint64_t *, const uint4 *,
                                                 wg_look &l) {
    l.sg = make_uint4(q.a, q.b, q.c, q.d);
    l.d = 0x3c00u;
}

/* The super-block's scale that promotes its f32 sums: IQ2_XXS d / 8 (the
 * sub-block factor 2s + 1 is in the values), Q2_K and Q8_0 d (Q8_0's
 * "super-block" is its one 32-element slice). */
template <int T> __device__ __forceinline__ float wg_dscale(uint32_t d) {
    return T == T_IQ2_XXS ? __fmul_rn(h2f((uint16_t)d), 0.125f) : h2f((uint16_t)d);
}

/* A row's 8 values of group t4 times the multiplier, signed: v[0..3] =
 * value pairs (0,1) (2,3) (4,5) (6,7) as f16x2. Each pair is
 * byte-permuted under the exponent of 1024 (the half 1024 + value) and one
 * FMA gives (1024 + value) m - 1024 m = value m, exact (IQ2_XXS <= 1333,
 * Q2_K <= 45). */
__device__ __forceinline__ void wg_build(const wg_look &l, uint32_t *v) {
    const uint32_t k1024 = 0x64006400u, km1024 = 0xe400e400u; /* 1024 and -1024 as f16 pairs */
    const __half2 m = __hsub2(*(const __half2 *)&l.mb, *(const __half2 *)&k1024);
    const __half2 c = __hmul2(m, *(const __half2 *)&km1024);
    const uint32_t lo = (uint32_t)l.gv, hi = (uint32_t)(l.gv >> 32);
    const uint32_t p[4] = {__byte_perm(lo, 0x6464u, 0x5140u), __byte_perm(lo, 0x6464u, 0x5342u),
                           __byte_perm(hi, 0x6464u, 0x5140u), __byte_perm(hi, 0x6464u, 0x5342u)};
    const uint32_t s4[4] = {l.sg.x, l.sg.y, l.sg.z, l.sg.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const __half2 h = __hfma2(*(const __half2 *)&p[i], m, c);
        v[i] = (*(const uint32_t *)&h) ^ s4[i];
    }
}

/* Q8_0: a row's 8 bytes (xor 0x80) as f16 pairs: byte-permuted under the
 * exponent of 1024 and 1024 + 128 taken off, exact; with `fold`, times the
 * block's scale d, rounded to f16 (what the CPU twin in the kernel test
 * rounds). Folded, a product needs no f32 promotion per 32-element block:
 * the products go straight into the result's accumulators over the whole
 * K, with one f16 rounding per weight (2^-11 relative, as for the
 * activations; the Q8_0 quantization itself is ~100 times coarser). That
 * frees the promotion's second set of accumulators, which is what lets a
 * 256-token tile (128 accumulators a thread) fit; the fold alone, at 128
 * tokens, measured no faster (docs/bench/history-3.md, "twentieth"). Q8_0
 * scales above 511 would overflow f16 here; no model's projections have
 * them. */
__device__ __forceinline__ void wg_build_q8(const wg_look &l, uint32_t *v, bool fold) {
    const uint32_t k1152 = 0x64806480u; /* 1152 as an f16 pair */
    const uint32_t lo = (uint32_t)l.gv, hi = (uint32_t)(l.gv >> 32);
    const uint32_t p[4] = {__byte_perm(lo, 0x6464u, 0x5140u), __byte_perm(lo, 0x6464u, 0x5342u),
                           __byte_perm(hi, 0x6464u, 0x5140u), __byte_perm(hi, 0x6464u, 0x5342u)};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        __half2 h = __hsub2(*(const __half2 *)&p[i], *(const __half2 *)&k1152);
        if (fold) {
            const uint32_t dd = l.d * 0x10001u;
            h = __hmul2(h, *(const __half2 *)&dd);
        }
        v[i] = *(const uint32_t *)&h;
    }
}

/* Q2_K's minimums: w = d sc q - dmin m, so a super-block adds
 * -dmin sum_j m_j xsum_j, xsum_j the sum of the activations of sub-block j.
 * That is one more k16 product per super-block, A = -16 dmin m_j (as f16 hi
 * + lo: exact, at most 15 significant bits), B = xsum_j / 16 (hi + lo from
 * mma_split_rows; / 16 keeps the sums of 16 scaled activations in f16's
 * range), accumulated straight into the result (its scale is in A). A
 * fragment registers of one row: pairs (2t4, 2t4 + 1) and (8 + 2t4, 9 + 2t4)
 * of the 16 sub-blocks, from e's bytes' high nibbles. */
__device__ __forceinline__ void wg_min_pairs(uint32_t e, uint32_t dd, uint32_t *hi, uint32_t *lo) {
    const float f = -16.0f * h2f((uint16_t)(dd >> 16));
#pragma unroll
    for (int p = 0; p < 2; p++) {
        split_hilo(f * (float)((e >> (16 * p + 4)) & 15), f * (float)((e >> (16 * p + 12)) & 15), &hi[p], &lo[p]);
    }
}

/* Q8_0 without the activations' lo halves: each weight's block scale folded
 * into its f16 value (see wg_build_q8), so its sums need no scale of their
 * own and go straight into the result (DIRECT in the kernels below). */
template <int T, bool LO> constexpr bool wg_q8_fold() { return T == T_Q8_0 && !LO; }
/* Slices a scale covers: a 256-element super-block, or in oracle mode Q8_0's
 * 32-element block (its scale applied to the f32 sums of exact integers). */
template <int T, bool LO> constexpr int wg_scale_slices() { return T == T_Q8_0 && LO ? 1 : 8; }

/* A thread's A fragments for its two rows (ra, rc), one slice at a time:
 * the lookups (issued well before the build needs them), then the build
 * (row ra in registers 0 and 2, rc in 1 and 3; step 0 takes value pairs
 * (0,1) (2,3), step 1 (4,5) (6,7)) and, at a scale block's start, the rows'
 * scales and Q2_K's minimums' fragment. Both kernels below use it. */
template <int T, bool LO> struct wg_frags {
    wg_look la, lc;
    float da, dc;        /* the current scale block's scale, rows ra and rc */
    uint32_t amin[2][4]; /* Q2_K: the minimums' A fragment, hi and lo */
    __device__ __forceinline__ void lookup(const wg_raw (&qs)[2], int s, int t4, const uint64_t *grid,
                                           const uint4 *signs) {
        wg_lookup<T>(qs[0], s, t4, grid, signs, la);
        wg_lookup<T>(qs[1], s, t4, grid, signs, lc);
    }
    __device__ __forceinline__ void build(int s, uint32_t (&a)[2][4]) {
        uint32_t va[4], vc[4];
        if (T == T_Q8_0) {
            wg_build_q8(la, va, wg_q8_fold<T, LO>());
            wg_build_q8(lc, vc, wg_q8_fold<T, LO>());
        } else if (T == T_F16) {
            va[0] = la.sg.x, va[1] = la.sg.y, va[2] = la.sg.z, va[3] = la.sg.w;
            vc[0] = lc.sg.x, vc[1] = lc.sg.y, vc[2] = lc.sg.z, vc[3] = lc.sg.w;
        } else {
            wg_build(la, va);
            wg_build(lc, vc);
        }
        a[0][0] = va[0], a[0][1] = vc[0], a[0][2] = va[1], a[0][3] = vc[1];
        a[1][0] = va[2], a[1][1] = vc[2], a[1][2] = va[3], a[1][3] = vc[3];
        if (s % wg_scale_slices<T, LO>() == 0) {
            da = wg_dscale<T>(la.d); /* (unused where the scales are folded: see DIRECT) */
            dc = wg_dscale<T>(lc.d);
            if (T == T_Q2_K) {
                uint32_t ha[2], lo_a[2], hc[2], lo_c[2];
                wg_min_pairs(la.e, la.d, ha, lo_a);
                wg_min_pairs(lc.e, lc.d, hc, lo_c);
                amin[0][0] = ha[0], amin[0][1] = hc[0], amin[0][2] = ha[1], amin[0][3] = hc[1];
                amin[1][0] = lo_a[0], amin[1][1] = lo_c[0], amin[1][2] = lo_a[1], amin[1][3] = lo_c[1];
            }
        }
    }
};

#ifdef WG_DEVICE
/* A scale block's finished sums into the result: acc += scale x tmp, the
 * scale of row ra or (registers with i & 2) rc. */
template <int R> __device__ __forceinline__ void wg_promote(float (&acc)[R], float (&tmp)[R], float sa, float sc) {
    wg_hold(tmp);
    wg_hold(acc);
#pragma unroll
    for (int i = 0; i < R; i++) acc[i] = fmaf(i & 2 ? sc : sa, tmp[i], acc[i]);
}
/* slice(k, s) for s = 0 .. nsl - 1, k = s mod 4 as a compile-time constant,
 * so that every buffer index a slice derives from it is static (registers). */
template <class F> __device__ __forceinline__ void wg_slices(int nsl, F &&slice) {
    for (int s = 0; s < nsl; s += 4) {
        slice(std::integral_constant<int, 0>(), s);
        if (s + 1 < nsl) slice(std::integral_constant<int, 1>(), s + 1);
        if (s + 2 < nsl) slice(std::integral_constant<int, 2>(), s + 2);
        if (s + 3 < nsl) slice(std::integral_constant<int, 3>(), s + 3);
    }
}
/* The result, scaled by each token's scale: D fragment register 4j + e is
 * row ra (e < 2) or rc, token t0 + 8j + (e & 1) (t0 = the tile's first token
 * + 2 t4). */
template <int R>
__device__ __forceinline__ void wg_store(const float (&acc)[R], float *Y, int64_t ldy, const float *tdown, int dstep,
                                         int64_t ra, int64_t rc, int64_t rows, int t0, int n) {
#pragma unroll
    for (int i = 0; i < R; i++) {
        const int64_t r = i & 2 ? rc : ra;
        const int t = t0 + 8 * (i >> 2) + (i & 1);
        if (r < rows && t < n) Y[(int64_t)t * ldy + r] = acc[i] * tdown[(int64_t)t * dstep];
    }
}
#endif

/* ------------------------------------------------------------------ the kernel */

/* Halves of one activation stage: [hi, lo][k16 step][k half][BN tokens][8];
 * of one super-block's 16-sums (Q2_K): [hi, lo][k half][BN tokens][8]. */
template <int BN> constexpr int wg_stage_halves() { return 64 * BN; }
template <int BN> constexpr int wg_sums_halves() { return 32 * BN; }
template <int T, int BN> constexpr size_t wg_smem_bytes() {
    return WG_NS * wg_stage_halves<BN>() * sizeof(__half) + 256 * sizeof(uint64_t) + 128 * sizeof(uint4) +
           (T == T_Q2_K ? 2 * wg_sums_halves<BN>() * sizeof(__half) : 0);
}

/* What a launch multiplies. Routed experts (segs): segment blockIdx.z, its
 * rows of W from row0 and the split rows [x0, x0 + count) of X (in place of
 * the gathered floats), scales down[t]. Dense products (segs NULL): group
 * blockIdx.z < groups, rows r0 + z rows .. of W, its n tokens' split rows at
 * X + z gxh halves (the groups of a token split one after another), scales
 * down[t groups + z], outputs at Y + z gy. Split rows are f16 hi[K] lo[K],
 * ldh halves apart; xsums: Q2_K's 16-sum records (experts only). */
typedef struct wg_args {
    const uint8_t *W;
    int64_t rb, r0, rows, K;
    const __half *X;
    int64_t ldh, gxh;
    float *Y;
    int64_t ldy, gy;
    const seg3 *segs;
    /* routed experts: a second matrix over the same segments (gate and up
     * in one launch, one tail instead of two): tiles z >= nseg1 take
     * segment z - nseg1 of W2 into Y2 */
    const uint8_t *W2;
    float *Y2;
    int nseg1;
    int n, groups;
    const float *down;
    const __half *xsums;
    const uint4 *signs;
    int64_t xrows; /* split rows X holds (the tensor map's extent) */
    int tx, ty;     /* wgmma_pc_kernel: its tiles' row blocks and token tiles (a launch of one tile a block: its grid) */
    int ntiles;     /* wgmma_pc_kernel: how many (tx ty tz, or with jobs jtiles[njobs]) */
    /* several dense products of one type over the same split rows
     * (wgmma_dense_jobs; groups 1): product z's weights, rows and output in
     * place of W, rows, Y and ldy */
    int njobs;
    int jtiles[WG_JOBS + 1], jrbx[WG_JOBS]; /* wgmma_pc_kernel: tiles before job j (only its rows' blocks), its row blocks */
    const uint8_t *jw[WG_JOBS];
    int64_t jrows[WG_JOBS], jldy[WG_JOBS];
    float *jy[WG_JOBS];
    CUtensorMap tmap; /* wgmma_pc_kernel: X as [rows][groups][2K halves] (wg_tensor_map) */
} wg_args;

/* What a tile's z (blockIdx.z in a launch of one tile a block) multiplies:
 * a routed segment, a dense group or one of several dense products
 * (wg_args). */
struct wg_part {
    const uint8_t *W;
    int64_t rows, ldy, xoff; /* xoff: halves from X to the part's split rows */
    float *Y;
    const float *down; /* its first token's scale (tokens dstep apart) */
    seg3 sg;
    int tgrp; /* the tensor map's group */
};
__device__ __forceinline__ wg_part wg_part_at(const wg_args &a, int z) {
    wg_part p;
    p.W = a.W, p.rows = a.rows, p.ldy = a.ldy, p.tgrp = 0;
    if (a.segs) {
        const bool second = z >= a.nseg1;
        p.sg = a.segs[second ? z - a.nseg1 : z];
        if (second) p.W = a.W2;
        p.xoff = p.sg.x0 * a.ldh, p.Y = (second ? a.Y2 : a.Y) + p.sg.x0 * a.ldy, p.down = a.down + p.sg.x0;
    } else if (a.njobs) {
        p.sg = seg3{0, 0, a.n};
        p.xoff = 0, p.Y = a.Y, p.down = a.down;
#pragma unroll
        for (int j = 0; j < WG_JOBS; j++) /* a select, not an index: the arguments stay in the constant bank */
            if (j == z) p.W = a.jw[j], p.rows = a.jrows[j], p.ldy = a.jldy[j], p.Y = a.jy[j];
    } else {
        p.sg = seg3{a.r0 + z * a.rows, 0, a.n};
        p.xoff = z * a.gxh, p.Y = a.Y + z * a.gy, p.down = a.down + z, p.tgrp = z;
    }
    return p;
}


template <int T, int BN, bool LO> __global__ void __launch_bounds__(WG_THREADS, 1) wgmma_kernel(const wg_args args) {
    pdl_enter();
#ifdef WG_DEVICE
    constexpr int R = BN / 2, SH = wg_stage_halves<BN>(), SPB = wg_scale_slices<T, LO>();
    constexpr bool MINS = T == T_Q2_K, PER_SLICE = SPB == 1;
    constexpr bool DIRECT = wg_q8_fold<T, LO>(); /* products straight into acc (wg_q8_fold) */
    extern __shared__ __align__(128) uint8_t wg_smem[];
    __half *stages = (__half *)wg_smem;
    uint64_t *grid = (uint64_t *)(stages + WG_NS * SH);
    uint4 *signs = (uint4 *)(grid + 256);
    __half *sums = (__half *)(signs + 128); /* Q2_K: two super-blocks' 16-sums */
    const int tid = threadIdx.x;
    const wg_part part = wg_part_at(args, blockIdx.z);
    const int64_t K = args.K, rows = part.rows, ldh = args.ldh, ldy = part.ldy;
    const seg3 sg = part.sg;
    const int tbase = blockIdx.y * BN, n = sg.count;
    if (tbase >= n || (int64_t)blockIdx.x * WG_BM >= rows) return;
    if (T == T_IQ2_XXS) {
        grid[tid] = d_iq2xxs_grid[tid];
        if (tid < 128) signs[tid] = args.signs[tid];
    }
    const __half *X = args.X + part.xoff;
    float *Y = part.Y;
    const float *tdown = part.down;
    const int dstep = args.segs ? 1 : args.groups; /* between tokens' scales */
    const uint8_t *W = part.W;
    const int64_t rb = args.rb;
    const int warp = (tid >> 5) & 3, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
    const int64_t ra = (int64_t)blockIdx.x * WG_BM + 64 * (tid >> 7) + 16 * warp + g, rc = ra + 8;
    /* rows past the matrix read row 0: rows are independent in the
     * product, and theirs are never stored */
    const uint8_t *wa = W + (sg.row0 + (ra < rows ? ra : 0)) * rb, *wc = W + (sg.row0 + (rc < rows ? rc : 0)) * rb;
    const int nsl = (int)(K / 32);

    /* Slice s of the split rows into its stage: 8 16-byte pieces a token
     * (hi/lo x step x k half). Two lanes copy one token's 32 contiguous
     * bytes, a warp one (hi/lo, step) of 16 tokens (contiguous stores).
     * Piece i of a thread is (hi/lo, step) hs0 + i 128 / BN of the same
     * token and k half: 4096 bytes further in the stage, and in the row
     * at xoff(i) halves from piece 0 (set once: no index math per slice).
     * Q2_K: with a super-block's first slice, its 16-sums (hi, lo: 4 pieces a
     * token, the same lanes; piece i is hi/lo hs0 + i 128 / BN, 4096 bytes on). */
    constexpr int FI = BN * 8 / WG_THREADS;
    const int kh = tid & 1, ft = (tid >> 1) % BN, hs0 = (tid >> 1) / BN, ftok = tbase + ft;
    const int fbytes = ftok < n ? 16 : 0;
    const int64_t frow = ftok < n ? ftok : 0;
    /* a split row's slice s is hi[32] lo[32] at 64 s: (hi/lo, step) hs at 16 hs */
    const __half *fsrc = X + frow * ldh + 16 * hs0 + 8 * kh;
    const uint32_t fdst = (uint32_t)(hs0 * 32 * BN + kh * 16 * BN + 16 * ft);
    auto xoff = [&](int i) -> int64_t { return 16 * i * (128 / BN); };
    const __half *ssrc = MINS ? args.xsums + (int64_t)sg.x0 * (K / 8) + frow * (K / 8) + 16 * hs0 + 8 * kh : NULL;
    auto fetch = [&](int s) {
        if (s < nsl) {
            uint8_t *st = (uint8_t *)stages + (s % WG_NS) * (2 * SH) + fdst;
#pragma unroll
            for (int i = 0; i < FI; i++) /* the lo pieces (hs 2, 3) only where the products take them:
                                             * at 64 and 128 tokens a thread's later half, at 32 a warp's */
                if (LO || (BN >= 64 ? i < FI / 2 : hs0 < 2))
                    cp_async16_zfill(st + 4096 * i, fsrc + xoff(i) + 64 * s, fbytes);
            if (MINS && (s & 7) == 0 && hs0 < 2) { /* 4 pieces a token: hi/lo x k half */
                uint8_t *ss = (uint8_t *)(sums + ((s >> 3) & 1) * wg_sums_halves<BN>()) + fdst;
#pragma unroll
                for (int i = 0; i < (FI + 1) / 2; i++)
                    cp_async16_zfill(ss + 4096 * i, ssrc + 16 * i + 32 * (s >> 3), fbytes);
            }
        }
        cp_async_commit(); /* empty past the end: the wait count stays uniform */
    };

    float acc[R], tmp[R];
#pragma unroll
    for (int i = 0; i < R; i++) acc[i] = tmp[i] = 0.0f;
    float(&pd)[R] = DIRECT ? acc : tmp; /* where the products go (tmp: unused where DIRECT) */
    uint32_t areg[2][2][4];     /* [buffer][k16 step][fragment register] */
    wg_frags<T, LO> fr = {};
    float pa = 0.0f, pc = 0.0f; /* Q8_0: the scales of the slice in flight */
    wg_raw q[4][2] = {};        /* raw bytes of rows ra and rc, slice s in q[s & 3] */
    auto load = [&](int s, wg_raw (&qs)[2]) {
        if (s < nsl) {
            wg_load<T>(wa, s, t4, qs[0]);
            wg_load<T>(wc, s, t4, qs[1]);
        }
    };
    auto lookup = [&](int s, const wg_raw(&qs)[2]) { fr.lookup(qs, s, t4, grid, signs); };
    auto build = [&](int s, uint32_t (&a)[2][4]) { fr.build(s, a); };

    const uint64_t desc0 = wg_desc(stages, 16 * BN, 128); /* k halves 16 BN bytes apart, 8-token groups 128 */
    const uint64_t sdesc0 = MINS ? wg_desc(sums, 16 * BN, 128) : 0;
    fetch(0);
    fetch(1);
    fetch(2);
    load(0, q[0]);
    load(1, q[1]);
    load(2, q[2]);
    load(3, q[3]);
    __syncthreads(); /* the tables */
    lookup(0, q[0]);
    build(0, areg[0]);
    load(4, q[0]);
    /* slice s from buffer B; then slice s + 1 decoded into the other */
    auto promote = [&](float sa, float sc) {
        if constexpr (DIRECT) wg_hold(acc); /* read only after the wait before this */
        else wg_promote(acc, tmp, sa, sc);
    };
    auto slice = [&](auto Bc, int s) {
        constexpr int B = decltype(Bc)::value & 1, Q = (decltype(Bc)::value + 1) & 3; /* slice s + 1's raw bytes */
        cp_async_wait<2>(); /* this thread's pieces of slice s are in (s + 1's, s + 2's may fly) */
        fence_proxy_async();
        __syncthreads(); /* everyone's pieces; every warpgroup is past slice s - 2 */
        fetch(s + 3);
        if (s + 1 < nsl) lookup(s + 1, q[Q]); /* read after the products below are issued */
        /* the descriptor's address field counts 16 bytes: a (hi/lo, step)
         * sub-tile is 2 BN of them, a stage 8 BN; a 16-sums buffer 4 BN */
        const uint64_t d0 = desc0 + (uint64_t)((s % WG_NS) * 8 * BN);
        if (PER_SLICE) {
            /* slice s - 1's sums, done while this thread built slice s and
             * waited above (at s = 0: nothing to wait for, and 0 x 0 added).
             * Unconditional: on a path that skipped the wait, ptxas would
             * see the next fragment overwrite one a wgmma still reads and
             * serialize them all (warning C7513). */
            wg_wait<0>();
            promote(pa, pc);
            pa = fr.da, pc = fr.dc;
        }
        wg_fence();
        if (MINS && (s & 7) == 0) { /* the super-block's minimums, straight into the result */
            const uint64_t m0 = sdesc0 + (uint64_t)(((s >> 3) & 1) * 4 * BN);
            wg_mma<BN>::run(acc, fr.amin[0], m0, 1);          /* A hi, B hi */
            wg_mma<BN>::run(acc, fr.amin[0], m0 + 2 * BN, 1); /* A hi, B lo */
            wg_mma<BN>::run(acc, fr.amin[1], m0, 1);          /* A lo, B hi */
            wg_mma<BN>::run(acc, fr.amin[1], m0 + 2 * BN, 1); /* A lo, B lo */
        }
        wg_mma<BN>::run(pd, areg[B][0], d0, DIRECT || s % SPB != 0); /* hi, step 0 */
        if constexpr (LO) wg_mma<BN>::run(pd, areg[B][0], d0 + 4 * BN, 1); /* lo, step 0 */
        wg_mma<BN>::run(pd, areg[B][1], d0 + 2 * BN, 1);   /* hi, step 1 */
        if constexpr (LO) wg_mma<BN>::run(pd, areg[B][1], d0 + 6 * BN, 1); /* lo, step 1 */
        wg_commit();
        if (PER_SLICE) {
            /* slice s - 1's products are done (waited above): its buffers are free */
        } else if ((s & 7) == 7 || s == nsl - 1) { /* the super-block is complete (Q8_0's last may be short) */
            wg_wait<0>();
            promote(fr.da, fr.dc);
        } else {
            wg_wait<1>(); /* slice s - 1's products are done: its buffer is free */
        }
        if (s + 1 < nsl) {
            build(s + 1, areg[B ^ 1]);
            load(s + 5, q[Q]);
        }
    };
    wg_slices(nsl, slice);
    if (PER_SLICE) {
        wg_wait<0>();
        promote(pa, pc);
    }
    wg_store(acc, Y, ldy, tdown, dstep, ra, rc, rows, tbase + 2 * t4, n);
#endif
}

/* ------------------------------------------------------------------ producer-fed kernel */

/* The kernel above with its copies taken off the MMA warps (DS4_WGMMA_PRODUCER
 * =0 keeps it, for A/B timing; rows that do not start on 16 bytes keep it
 * too). There every thread issues its share of the activations' cp.async,
 * waits for them, and the block meets at a barrier each slice; its weight
 * bytes are loads into registers four slices ahead that ncu still found
 * pending at the lookup (long scoreboard, 45% of the stall cycles). Here a
 * third warpgroup only copies:
 *
 *   producer   the activations of each slice into PC_NS stages, one
 *              tensor-memory copy a stage (thread 0: BN rows of the slice's
 *              128 bytes, hi[32] lo[32], 128-byte swizzled as wgmma reads
 *              them, or its 64 bytes of hi alone, 64-byte swizzled, where
 *              the products skip the lo halves; tokens past the batch
 *              arrive as zeros, rows past a routed segment as the next
 *              one's, whose product columns are
 *              never stored), Q2_K's 16-sums by cp.async, and the weights
 *              into PC_NW windows of 8 slices (each row's bytes as the
 *              16-byte units that cover them, 9 or more slices ahead) by
 *              cp.async; each stage and window signals an mbarrier (`full`)
 *              when its copies land. (The activations by cp.async, 16 bytes
 *              a thread, kept the MMA warps waiting on `full` most of the
 *              time: the copy took 24% longer, ncu.)
 *   consumers  the two warpgroups of the kernel above, unchanged in what they
 *              compute (the same fragments, products, order and promotions:
 *              bitwise the same sums, the kernel test compares the two), but
 *              reading the weight bytes from shared memory two slices ahead,
 *              waiting on a stage's barrier instead of a block barrier, and
 *              handing a stage (window) back through an `empty` mbarrier
 *              once its products are done (its bytes are read).
 *
 * An attempt with the decoding in its own warpgroup and A through shared
 * memory was slower (docs/BENCHMARKS.md): A stays in registers here. */
#define PC_THREADS 384 /* two consumer warpgroups, then the producer warpgroup */
#define PC_NS 7        /* activation stages (WG_NS's 5: 4% slower, 12-layer prefill) */
#define PC_NS_HI 7     /* the same, of the stages half as large that hold hi halves alone (10: no faster) */
#define PC_NW 3        /* weight windows */
/* Registers a thread after setmaxnreg (ptxas allocates each role's code
 * within its count): the producer gives most of its share to the consumers;
 * each of the 4 register files holds one producer warp and two consumer
 * warps, (56 + 2 x 224) x 32 <= 16,384. Without it every role gets 168 and
 * the 128-token consumers spill. */
#define PC_PRODUCER_REGS 56
#define PC_CONSUMER_REGS 224
/* Two blocks a multiprocessor for the routed experts' narrow tiles (32 and
 * 64 tokens, hi halves alone). An expert's remainder tile, and at a 2,048-
 * token chunk most experts' only tile, decodes as many weights per slice as
 * a 128-token tile for a half or a quarter of its tensor work, so its warps
 * spend a slice in a chain of dependent loads, lookups and builds; a second
 * block gives each scheduler twice the warps to hide that chain (12-layer
 * 4k step +6.8%, docs/bench/history-3.md "twenty-first"). It costs registers:
 * 2 x 384 threads at 80 each; the producer's 128 threads give 48 each to
 * the 256 consumers, which get 104. Within that the consumers load raw
 * bytes one slice ahead instead of two and look them up just before the
 * build (the other block's warps hide the latency). Q2_K's 64-token
 * consumers still spill 160 bytes a thread, and ptxas serializes their
 * wgmma for want of registers (C7512); IQ2_XXS's spill 24. Both measured
 * faster anyway. The products, their order and so their bits are those of
 * one block a multiprocessor. */
template <int T, int BN, bool LO> constexpr bool pc_two_blocks() {
    return !LO && BN <= 64 && (T == T_IQ2_XXS || T == T_Q2_K);
}
#define PC2_PRODUCER_REGS 32
#define PC2_CONSUMER_REGS 104

template <int T> constexpr int pc_win_bytes() { return T == T_Q8_0 ? 8 * 34 : T == T_Q2_K ? 84 : 66; }
/* 16-byte units that cover a window wherever it starts: Q8_0's start on 16
 * bytes (272 w), Q2_K's at 4-byte steps (84 w), IQ2_XXS's at 2-byte steps */
template <int T> constexpr int pc_win_units() { return T == T_Q8_0 ? 17 : T == T_Q2_K ? 6 : 5; }
/* Offsets from the dynamic shared memory rounded up to 1024 bytes (the
 * swizzle's period): the stages (B: BN rows of a slice's 128 bytes, hi and
 * lo; or, without the lo halves, of its 64 bytes of hi), Q2_K's 16-sums per
 * stage, the weight windows, the IQ2_XXS tables, the barriers. */
template <int T, int BN, bool LO> struct pc_layout {
    static constexpr int NS = LO ? PC_NS : PC_NS_HI;
    static constexpr int stage = (LO ? 128 : 64) * BN, sum_stage = T == T_Q2_K ? 64 * BN : 0;
    static constexpr int sums = NS * stage;
    static constexpr int row = 16 * pc_win_units<T>(), slot = 128 * row;
    static constexpr int wins = sums + NS * sum_stage, tables = wins + PC_NW * slot;
    static constexpr int bars = tables + 256 * 8 + 128 * 16;
    static constexpr int bytes = bars + (2 * NS + 2 * PC_NW) * 8 + 1024; /* + the rounding */
};
template <int T, int BN, bool LO> constexpr size_t pc_smem_bytes() {
    static_assert(pc_layout<T, BN, LO>::bytes <= 227 * 1024, "more shared memory than a block may have");
    return pc_layout<T, BN, LO>::bytes;
}

#ifdef WG_DEVICE
__device__ __forceinline__ uint32_t smem_addr(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void mbar_init(uint64_t *b, int count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(b)), "r"(count) : "memory");
}
/* Arrives once every cp.async this thread issued before it has landed. */
__device__ __forceinline__ void mbar_arrive_copies(uint64_t *b) {
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(smem_addr(b)) : "memory");
}
/* An arrival from lane 0 of the warp, predicated inside the instruction: a
 * branch around it would be a divergent path between a wgmma and its wait,
 * and ptxas serializes every wgmma of a kernel that has one (C7518, C7520). */
__device__ __forceinline__ void mbar_arrive_lane0(uint64_t *b, int lane) {
    asm volatile("{\n.reg .pred first;\nsetp.eq.u32 first, %1, 0;\n"
                 "@first mbarrier.arrive.shared::cta.b64 _, [%0];\n}\n" ::"r"(smem_addr(b)),
                 "r"(lane)
                 : "memory");
}
/* One arrival that also expects `bytes` more of asynchronous copies. */
__device__ __forceinline__ void mbar_expect_tx(uint64_t *b, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(b)), "r"(bytes) : "memory");
}
/* The box at (c0, c1, c2) of tensor map m (a kernel parameter) into shared
 * memory by the tensor-memory accelerator, its bytes completing on b. */
__device__ __forceinline__ void tma_load_3d(void *dst, const CUtensorMap *m, int c0, int c1, int c2, uint64_t *b) {
    asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
                 " [%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(smem_addr(dst)),
                 "l"((uint64_t)m), "r"(c0), "r"(c1), "r"(c2), "r"(smem_addr(b))
                 : "memory");
}
/* Descriptor of a stage's B: K-major, rows of 128 bytes (hi and lo) with
 * the 128-byte swizzle, 8-row groups 1024 bytes apart; or rows of 64 bytes
 * (hi alone) with the 64-byte swizzle, groups 512 bytes apart. Either way a
 * k16 step is 32 bytes on in the row. */
template <bool LO> __device__ __forceinline__ uint64_t wg_desc_swizzled(const void *smem) {
    const uint32_t a = (uint32_t)__cvta_generic_to_shared(smem);
    return (uint64_t)((a >> 4) & 0x3fff) | (1ull << 16) | ((uint64_t)((LO ? 1024 : 512) >> 4) << 32) |
           ((LO ? 1ull : 2ull) << 62);
}
/* Until the barrier's phase of this parity has completed. */
__device__ __forceinline__ void mbar_wait(uint64_t *b, uint32_t parity) {
    asm volatile("{\n.reg .pred done;\npc_wait:\n"
                 "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
                 "@!done bra pc_wait;\n}\n" ::"r"(smem_addr(b)),
                 "r"(parity)
                 : "memory");
}
#endif

template <int T, int BN, bool LO, int OCC = 1>
__global__ void __launch_bounds__(PC_THREADS, OCC) wgmma_pc_kernel(const __grid_constant__ wg_args args) {
    pdl_enter();
#ifdef WG_DEVICE
    typedef pc_layout<T, BN, LO> L;
    constexpr int R = BN / 2, SPB = wg_scale_slices<T, LO>(), WB = pc_win_bytes<T>(), WU = pc_win_units<T>();
    constexpr bool MINS = T == T_Q2_K, PER_SLICE = SPB == 1;
    constexpr bool DIRECT = wg_q8_fold<T, LO>(); /* products straight into acc (wg_q8_fold) */
    extern __shared__ __align__(1024) uint8_t wg_smem_raw[];
    uint8_t *wg_smem = wg_smem_raw + ((1024 - (smem_addr(wg_smem_raw) & 1023)) & 1023);
    uint8_t *stages = wg_smem, *sums = wg_smem + L::sums, *wins = wg_smem + L::wins;
    uint64_t *grid = (uint64_t *)(wg_smem + L::tables);
    uint4 *signs = (uint4 *)(grid + 256);
    uint64_t *full = (uint64_t *)(wg_smem + L::bars), *empty = full + L::NS, *wfull = empty + L::NS,
             *wempty = wfull + PC_NW;
    const int tid = threadIdx.x;
    const int64_t K = args.K;
    /* Tiles (row block bx, token tile by, group or segment z), numbered
     * bx + tx (by + ty z): a block takes tiles first, first + stride, ...
     * (a launch of one block a tile: its own tile; a persistent launch of
     * fewer blocks: several, the producer copying the next tile's first
     * slices while the MMA warps finish and store this one). Tiles past a
     * segment's tokens, or past the rows of a product of fewer rows than the
     * launch's widest, are skipped by every role alike. */
    const int ntiles = args.ntiles;
    const int first = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    const int stride = gridDim.x * gridDim.y * gridDim.z;
    struct tile_t {
        int bx, tbase, n;
        wg_part p;
    };
    auto tile_at = [&](int t, tile_t &tl) {
        if (args.njobs) { /* job j's tiles jtiles[j] ..: its row blocks only, then token tiles */
            int j = 0, base = 0, rbx = args.jrbx[0];
#pragma unroll
            for (int i = 1; i < WG_JOBS; i++) /* selects, not indices: the arguments stay in the constant bank */
                if (i < args.njobs && t >= args.jtiles[i]) j = i, base = args.jtiles[i], rbx = args.jrbx[i];
            tl.bx = (t - base) % rbx;
            tl.tbase = (t - base) / rbx * BN;
            tl.p = wg_part_at(args, j);
        } else {
            tl.bx = t % args.tx;
            tl.tbase = (t / args.tx) % args.ty * BN;
            tl.p = wg_part_at(args, t / (args.tx * args.ty));
        }
        tl.n = tl.p.sg.count;
        return tl.tbase < tl.n && (int64_t)tl.bx * WG_BM < tl.p.rows;
    };
    if (T == T_IQ2_XXS && tid < 256) {
        grid[tid] = d_iq2xxs_grid[tid];
        if (tid < 128) signs[tid] = args.signs[tid];
    }
    if (tid == 0) {
        for (int i = 0; i < L::NS; i++) {
            mbar_init(&full[i], MINS ? 129 : 1); /* thread 0's expected bytes (+ every producer thread's sums) */
            mbar_init(&empty[i], 8); /* each consumer warp, its products done */
        }
        for (int i = 0; i < PC_NW; i++) {
            mbar_init(&wfull[i], 128);
            mbar_init(&wempty[i], 8);
        }
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); /* seen by the copy engine too */
    }
    __syncthreads();
    const int nsl = (int)(K / 32), nwin = nsl / 8, lane = tid & 31; /* K % 256 == 0: pc_takes */
    /* the warp's role through a shuffle, so the compiler knows it is uniform
     * over the warp: a branch on tid itself counts as divergent, and ptxas
     * then serializes the wgmma behind it (C7518, C7520) */
    const int wid = __shfl_sync(0xffffffffu, tid >> 5, 0);
    /* window w of a row is its bytes [w WB, w WB + WB), copied from lo, the
     * 16 bytes below (rows start on 16; every window is whole: pc_takes) */
    auto win_lo = [&](int w) { return (w * WB) & ~15; };
    /* Slices and windows are counted over the block's tiles (gs, gw: those
     * of earlier tiles), so the stages' and windows' barrier phases run on
     * from one tile to the next. */

    if (wid >= 8) {
        /* ---------------- producer */
        asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(OCC == 2 ? PC2_PRODUCER_REGS : PC_PRODUCER_REGS));
        /* a thread's 16-sum units (Q2_K): k half pt & 1, unit i of a
         * super-block at q = pt / 2 + 64 i: token q % BN, hi/lo q / BN */
        constexpr int NTP = BN > 64 ? BN / 64 : 1, US = BN / 32;
        const int pt = tid - 256, kh = pt & 1, l2 = pt >> 1;
        if (pt == 0) asm volatile("prefetch.tensormap [%0];\n" ::"l"((uint64_t)&args.tmap) : "memory");
        int gs = 0, gw = 0;
        tile_t tl;
        for (int t = first; t < ntiles; t += stride) {
            if (!tile_at(t, tl)) continue;
            const __half *srow[NTP];
            int xbytes[NTP];
#pragma unroll
            for (int j = 0; j < NTP; j++) {
                const int ftok = tl.tbase + (l2 + 64 * j) % BN;
                const int64_t frow = ftok < tl.n ? ftok : 0;
                xbytes[j] = ftok < tl.n ? 16 : 0;
                srow[j] = MINS ? args.xsums + ((int64_t)tl.p.sg.x0 + frow) * (K / 8) + 8 * kh : NULL;
            }
            /* the stage's rows in the tensor map: token (segment row) and group */
            const int trow = tl.p.sg.x0 + tl.tbase, tgrp = tl.p.tgrp;
            const int64_t r = (int64_t)tl.bx * WG_BM + pt, gr = r < tl.p.rows ? r : 0;
            const uint8_t *wsrc = tl.p.W + (tl.p.sg.row0 + gr) * args.rb; /* row pt (rows past the matrix: row 0) */
            auto copy_window = [&](int w) {
                if (w >= nwin) return;
                const int g = gw + w, slot = g % PC_NW;
                if (g >= PC_NW) mbar_wait(&wempty[slot], (uint32_t)((g / PC_NW - 1) & 1));
                const int lo = win_lo(w), hi = w * WB + WB;
                uint8_t *dst = wins + slot * L::slot + pt * L::row;
#pragma unroll
                for (int u = 0; u < WU; u++)
                    if (lo + 16 * u < hi) cp_async16(dst + 16 * u, wsrc + lo + 16 * u);
                mbar_arrive_copies(&wfull[slot]);
            };
            for (int w = 0; w < PC_NW - 1; w++) copy_window(w);
            for (int s = 0; s < nsl; s++) {
                if ((s & 7) == 4) copy_window((s >> 3) + PC_NW - 1); /* its slot's last reader is well past it */
                const int g = gs + s, st = g % L::NS;
                if ((MINS || pt == 0) && g >= L::NS) mbar_wait(&empty[st], (uint32_t)((g / L::NS - 1) & 1));
                if (pt == 0) {
                    mbar_expect_tx(&full[st], L::stage);
                    tma_load_3d(stages + st * L::stage, &args.tmap, 64 * s, tgrp, trow, &full[st]);
                }
                if (MINS) {
                    if ((s & 7) == 0)
#pragma unroll
                        for (int i = 0; i < US; i++) {
                            const int q = l2 + 64 * i, ft = q % BN, hl = q / BN, j = i % NTP;
                            cp_async16_zfill(sums + st * L::sum_stage + hl * 32 * BN + kh * 16 * BN + 16 * ft,
                                             srow[j] + 16 * hl + 32 * (s >> 3), xbytes[j]);
                        }
                    mbar_arrive_copies(&full[st]);
                }
            }
            gs += nsl;
            gw += nwin;
        }
        cp_async_wait<0>();
        return;
    }

    /* ---------------- consumers: the kernel above's work, fed */
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(OCC == 2 ? PC2_CONSUMER_REGS : PC_CONSUMER_REGS));
    const int warp = wid & 3, g = lane >> 2, t4 = lane & 3;
    const int la = 64 * (wid >> 2) + 16 * warp + g, lc = la + 8; /* rows in the block */
    const uint64_t desc0 = wg_desc_swizzled<LO>(stages);
    const uint64_t sdesc0 = MINS ? wg_desc(sums, 16 * BN, 128) : 0;
    int gs = 0, gw = 0;
    tile_t tl;
    for (int t = first; t < ntiles; t += stride) {
        if (!tile_at(t, tl)) continue;
        float acc[R], tmp[R];
#pragma unroll
        for (int i = 0; i < R; i++) acc[i] = tmp[i] = 0.0f;
        float(&pd)[R] = DIRECT ? acc : tmp;
        uint32_t areg[2][2][4];
        wg_frags<T, LO> fr = {};
        float pa = 0.0f, pc = 0.0f;
        /* raw bytes of rows la and lc: two slices ahead, slice s in q[s & 1];
         * at two blocks a multiprocessor one ahead, in q[0] (pc_two_blocks) */
        constexpr int QB = OCC == 2 ? 1 : 2;
        wg_raw q[QB][2] = {};
        /* slice s's bytes from its window (waiting for the window at its
         * first slice): a row pointer shifted so wg_load's offsets land in
         * the slot */
        auto load = [&](int s, wg_raw(&qs)[2]) {
            if (s < nsl) {
                const int w = gw + (s >> 3);
                if ((s & 7) == 0) mbar_wait(&wfull[w % PC_NW], (uint32_t)((w / PC_NW) & 1));
                const uint8_t *slot = wins + (w % PC_NW) * L::slot - win_lo(s >> 3);
                wg_load<T>(slot + la * L::row, s, t4, qs[0]);
                wg_load<T>(slot + lc * L::row, s, t4, qs[1]);
            }
        };
        auto lookup = [&](int s, const wg_raw(&qs)[2]) { fr.lookup(qs, s, t4, grid, signs); };
        auto build = [&](int s, uint32_t (&a)[2][4]) { fr.build(s, a); };
        auto promote = [&](float sa, float sc) {
            if constexpr (DIRECT) wg_hold(acc); /* read only after the wait before this */
            else wg_promote(acc, tmp, sa, sc);
        };
        auto release = [&](int s) { mbar_arrive_lane0(&empty[(gs + s) % L::NS], lane); };
        load(0, q[0]);
        if constexpr (QB == 2) load(1, q[QB - 1]);
        lookup(0, q[0]);
        build(0, areg[0]);
        load(QB, q[0]);
        auto slice = [&](auto Bc, int s) {
            constexpr int B = decltype(Bc)::value & 1; /* slice s + 1's raw bytes in q[Q] */
            constexpr int Q = QB == 2 ? (decltype(Bc)::value + 1) & 1 : 0;
            const int gsl = gs + s, st = gsl % L::NS;
            mbar_wait(&full[st], (uint32_t)((gsl / L::NS) & 1));
            /* Q2_K's 16-sums landed through the generic proxy (cp.async) and
             * wgmma reads through the async one; the stage itself came by the
             * async proxy and its barrier's phase makes it visible (no fence:
             * 2.4% faster prefill, bitwise the same sums) */
            if (MINS) fence_proxy_async();
            if (QB == 2 && s + 1 < nsl) lookup(s + 1, q[Q]);
            if (QB == 2 && (s & 7) == 6) mbar_arrive_lane0(&wempty[(gw + (s >> 3)) % PC_NW], lane); /* window s / 8 read */
            const uint64_t d0 = desc0 + (uint64_t)(st * (L::stage >> 4));
            if (PER_SLICE) {
                wg_wait<0>(); /* unconditional: see the kernel above */
                promote(pa, pc);
                pa = fr.da, pc = fr.dc;
                if (s > 0) release(s - 1);
            }
            wg_fence();
            if (MINS && (s & 7) == 0) {
                const uint64_t m0 = sdesc0 + (uint64_t)(st * (L::sum_stage >> 4));
                wg_mma<BN>::run(acc, fr.amin[0], m0, 1);
                wg_mma<BN>::run(acc, fr.amin[0], m0 + 2 * BN, 1);
                wg_mma<BN>::run(acc, fr.amin[1], m0, 1);
                wg_mma<BN>::run(acc, fr.amin[1], m0 + 2 * BN, 1);
            }
            /* (hi/lo, step) at 32 hi/lo + 16 step halves of each row */
            wg_mma<BN>::run(pd, areg[B][0], d0, DIRECT || s % SPB != 0); /* hi, step 0 */
            if constexpr (LO) wg_mma<BN>::run(pd, areg[B][0], d0 + 4, 1); /* lo, step 0 */
            wg_mma<BN>::run(pd, areg[B][1], d0 + 2, 1);        /* hi, step 1 */
            if constexpr (LO) wg_mma<BN>::run(pd, areg[B][1], d0 + 6, 1); /* lo, step 1 */
            wg_commit();
            if (PER_SLICE) {
            } else if ((s & 7) == 7) {
                wg_wait<0>();
                promote(fr.da, fr.dc);
                release(s - 1);
                release(s);
            } else {
                wg_wait<1>();
                if ((s & 7) != 0) release(s - 1); /* (slice s - 1 ended a super-block: released there) */
            }
            if (s + 1 < nsl) {
                if (QB == 1) lookup(s + 1, q[Q]); /* late: the other block's warps hide its latency */
                build(s + 1, areg[B ^ 1]);
                load(s + QB + 1, q[Q]);
            }
            if (QB == 1 && (s & 7) == 6) /* window s / 8 read: its last slice looked up just above */
                mbar_arrive_lane0(&wempty[(gw + (s >> 3)) % PC_NW], lane);
        };
        wg_slices(nsl, slice);
        if (PER_SLICE) {
            wg_wait<0>();
            promote(pa, pc);
            release(nsl - 1);
        }
        const int64_t ra = (int64_t)tl.bx * WG_BM + la, rc = ra + 8;
        wg_store(acc, tl.p.Y, tl.p.ldy, tl.p.down, args.segs ? 1 : args.groups, ra, rc, tl.p.rows, tl.tbase + 2 * t4,
                 tl.n);
        gs += nsl;
        gw += nwin;
    }
#endif
}

/* ------------------------------------------------------------------ launch */

/* Whether the products take the activations' lo halves (see "Activation
 * precision" above): 0 by default, 1 in oracle mode (ds4k_wgmma_exact_acts);
 * DS4_WGMMA_LO=0 or 1 in the environment fixes it (A/B timing). */
static int g_wgmma_lo = 0;
static int g_wgmma_lo_env = -1;
static int g_wgmma_on; /* wgmma_init: an sm_90a build on an sm_90 device, DS4_WGMMA not 0 */
static int g_wgmma_f16 = 1; /* DS4_WGMMA_F16=0: F16 products on the mma.sync tiles (A/B timing) */
static int g_wgmma_256 = 1; /* DS4_WGMMA_256=0: dense Q8_0 products in 128-token tiles at most (A/B timing) */

/* IQ2_XXS and Q2_K: whole 256-element super-blocks only (the raw-byte
 * offsets, the promotion at every eighth slice, Q2_K's minimums and the
 * split's sums records all assume them; both types' blocks are 256
 * anyway); F16 too (promoted every eighth slice). Q8_0: any K of whole
 * 32-element blocks. */
bool wgmma_takes_lo(void) { return g_wgmma_lo != 0; }

bool wgmma_takes(int type, int64_t K) {
    if (!g_wgmma_on) return false;
    if (type == T_Q8_0) return K % 32 == 0;
    return (type == T_IQ2_XXS || type == T_Q2_K || (type == T_F16 && g_wgmma_f16)) && K % 256 == 0;
}

static int g_wgmma_pc = 1; /* DS4_WGMMA_PRODUCER=0: the kernel that copies in its MMA warps (A/B timing) */
static int g_wgmma_two = 1; /* DS4_WGMMA_TWO_BLOCKS=0: narrow routed tiles one block a multiprocessor (A/B timing) */
static int g_tile_blocks = 132; /* wgmma_pc_kernel's blocks for a dense product: the multiprocessors */

/* Whether wgmma_pc_kernel takes rows of rb bytes at W: its producer copies
 * the weights in 16-byte units of whole 8-slice windows, so rows must start
 * on 16 bytes and K be whole windows (rb % 16 == 0 implies K % 256 == 0 for
 * all three types; checked anyway). Every product of the model qualifies. */
static PFN_cuTensorMapEncodeTiled_v12000 g_encode_tmap; /* the driver's, found by wgmma_init */

static bool pc_takes(const void *W, int64_t rb, int64_t K) {
    return g_wgmma_pc && g_encode_tmap && rb % 16 == 0 && (uintptr_t)W % 16 == 0 && K % 256 == 0;
}
/* F16 rows go to wgmma_kernel only: a producer window of 8 F16 slices is
 * 64 KiB for 128 rows, three of them more shared memory than a block has. */
static constexpr bool pc_type(int type) { return type != T_F16; }
/* The weights' start: F16 fragments are 16-byte loads from the rows (whose
 * length, K being whole 256s, is a multiple of 16). */
static bool wg_weights_fit(int type, const void *W) { return type != T_F16 || (uintptr_t)W % 16 == 0; }

/* The producer-fed kernel's view of the split rows: dimensions (2K halves,
 * groups, rows) with the rows ldh and the groups gxh halves apart (a
 * routed product: one group), zeros past the last row. A box is a slice of
 * BN rows as wgmma_pc_kernel's stages hold it: its 64 halves (hi, lo) with
 * the 128-byte swizzle, or without the lo halves its first 32 (hi) with the
 * 64-byte swizzle, which halves what every tile reads from L2. */
static bool wg_tensor_map(wg_args &a, int bn, bool lo) {
    const cuuint64_t dims[3] = {(cuuint64_t)(2 * a.K), (cuuint64_t)a.groups, (cuuint64_t)a.xrows};
    const cuuint64_t strides[2] = {(cuuint64_t)(2 * a.gxh), (cuuint64_t)(2 * a.ldh)};
    const cuuint32_t box[3] = {lo ? 64u : 32u, 1, (cuuint32_t)bn}, step[3] = {1, 1, 1};
    return g_encode_tmap(&a.tmap, CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 3, (void *)a.X, dims, strides, box, step,
                         CU_TENSOR_MAP_INTERLEAVE_NONE, lo ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_64B,
                         CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

/* The producer-fed kernel's launch where it takes the rows (false: not
 * launched). */
template <int T, int BN, bool LO> static bool wg_launch_pc(dim3 grid, const wg_args &a0, cudaStream_t s) {
    if constexpr (pc_type(T)) {
        wg_args a = a0;
        if (pc_takes(a.W, a.rb, a.K) && wg_tensor_map(a, BN, LO)) {
            a.tx = (int)grid.x, a.ty = (int)grid.y;
            a.ntiles = (int)(grid.x * grid.y * grid.z);
            if (a.njobs) { /* numbered without the row blocks a job of fewer rows lacks */
                a.jtiles[0] = 0;
                for (int j = 0; j < a.njobs; j++) {
                    a.jrbx[j] = (int)((a.jrows[j] + WG_BM - 1) / WG_BM);
                    a.jtiles[j + 1] = a.jtiles[j] + a.jrbx[j] * (int)grid.y;
                }
                a.ntiles = a.jtiles[a.njobs];
            }
            /* dense products: one block a multiprocessor, each taking
             * tiles in turn (12-layer prefill +0.8%, the Q8_0 products 2.8%
             * faster); routed ones keep a block a tile, whose uneven segments
             * the hardware's scheduler balances better (-2.9% persistent).
             * Jobs' tiles are numbered on one axis: a 1-D grid either way. */
            const dim3 pg = !a.segs && a.ntiles > g_tile_blocks ? dim3((unsigned)g_tile_blocks)
                            : a.njobs                           ? dim3((unsigned)a.ntiles)
                                                                : grid;
            if constexpr (pc_two_blocks<T, BN, LO>())
                if (g_wgmma_two) {
                    launch_pdl((wgmma_pc_kernel<T, BN, LO, 2>), pg, PC_THREADS, (pc_smem_bytes<T, BN, LO>()), s, a);
                    return true;
                }
            launch_pdl((wgmma_pc_kernel<T, BN, LO>), pg, PC_THREADS, (pc_smem_bytes<T, BN, LO>()), s, a);
            return true;
        }
    }
    return false;
}
/* One precision's launch (LO: the activations' lo halves too). */
template <int T, int BN, bool LO> static void wg_launch_as(dim3 grid, const wg_args &a0, cudaStream_t s) {
    if (!wg_launch_pc<T, BN, LO>(grid, a0, s))
        launch_pdl((wgmma_kernel<T, BN, LO>), grid, WG_THREADS, (wg_smem_bytes<T, BN>()), s, a0);
}
template <int T, int BN> static void wg_launch(dim3 grid, const wg_args &a0, cudaStream_t s) {
    if (g_wgmma_lo) wg_launch_as<T, BN, true>(grid, a0, s);
    else wg_launch_as<T, BN, false>(grid, a0, s);
}

/* Token tiles as wide as the mma.sync tiles choose (mma_tile_tokens); the
 * sums of an output do not depend on the width. */
template <int T> static void wg_launch_t(const wg_args &a, int max_count, unsigned z, cudaStream_t s) {
    const unsigned bx = (unsigned)((a.rows + WG_BM - 1) / WG_BM);
    const int bn = mma_tile_tokens(max_count, a.segs != NULL);
    /* dense Q8_0 products of 256 tokens or more, without the lo halves:
     * 256-token tiles on the producer-fed kernel, twice the tensor work per
     * slice for the same weight decoding and barriers (their accumulators,
     * 128 registers a thread, fit because the folded scales need no second
     * set for promotion: wg_q8_fold) */
    if constexpr (T == T_Q8_0)
        if (g_wgmma_256 && !g_wgmma_lo && !a.segs && bn == 128 && max_count >= 256 &&
            wg_launch_pc<T_Q8_0, 256, false>(dim3(bx, (unsigned)((max_count + 255) / 256), z), a, s))
            return;
    const dim3 grid(bx, (unsigned)((max_count + bn - 1) / bn), z);
    if (bn == 128) wg_launch<T, 128>(grid, a, s);
    else if (bn == 64) wg_launch<T, 64>(grid, a, s);
    else wg_launch<T, 32>(grid, a, s);
}

static void wg_dispatch(int type, const wg_args &a, int max_count, unsigned z, cudaStream_t s) {
    if (type == T_IQ2_XXS) wg_launch_t<T_IQ2_XXS>(a, max_count, z, s);
    else if (type == T_Q2_K) wg_launch_t<T_Q2_K>(a, max_count, z, s);
    else if (type == T_F16) wg_launch_t<T_F16>(a, max_count, z, s);
    else wg_launch_t<T_Q8_0>(a, max_count, z, s);
}

bool wgmma_expert_matmul(int type, const void *W, const void *W2, int64_t rb, int64_t rows, int64_t K, const float *X,
                         int64_t ldx, int n, float *Y, float *Y2, int64_t ldy, const void *segs, int n_segs,
                         int max_count, const float *split_aux, cudaStream_t s) {
    if (!wgmma_takes(type, K) || !segs || !split_aux || n_segs <= 0 || max_count <= 0 || ldx % 4 != 0 ||
        (uintptr_t)X % 16 != 0 || !wg_weights_fit(type, W) || (W2 && !wg_weights_fit(type, W2)) ||
        (W2 && !pc_takes(W, rb, K) != !pc_takes(W2, rb, K)))
        return false; /* (the split checked the layout already) */
    wg_args a = {};
    a.W = (const uint8_t *)W, a.rb = rb, a.rows = rows, a.K = K;
    a.X = (const __half *)X, a.ldh = 2 * ldx; /* split in place: a row's halves where its floats were */
    a.Y = Y, a.ldy = ldy;
    a.segs = (const seg3 *)segs;
    a.W2 = (const uint8_t *)W2, a.Y2 = Y2, a.nseg1 = n_segs;
    a.down = split_aux + (int64_t)n * (K / 16);
    a.xsums = (const __half *)split_aux; /* the 16-sums as hi/lo halves (perm split) */
    a.xrows = n, a.groups = 1, a.gxh = 2 * K; /* the tensor map's one group */
    a.signs = mma_iq2_pair_signs();
    wg_dispatch(type, a, max_count, (unsigned)(W2 ? 2 * n_segs : n_segs), s);
    return true;
}

static size_t wgmma_dense_scratch(int64_t K, int n, int groups) { return (size_t)n * groups * (K + 1); }

/* A dense product's input split into scratch: n x groups split rows of K
 * (group g of a token at X + g gx), then their scales. */
static bool dense_split(const float *X, int64_t ldx, int n, int groups, int64_t gx, int64_t K, float *scratch,
                        size_t scratch_floats, cudaStream_t s) {
    return n > 0 && groups >= 1 && scratch && (uintptr_t)scratch % 16 == 0 &&
           scratch_floats >= wgmma_dense_scratch(K, n, groups) &&
           mma_split_rows_to(X, n, groups, K, ldx, gx, scratch, scratch + (int64_t)n * groups * K, true, s);
}

/* What every dense product over rows that dense_split wrote shares. */
static wg_args dense_args(int type, int64_t K, int n, int groups, const float *split) {
    wg_args a = {};
    a.rb = row_bytes_dev(type, K), a.K = K;
    a.X = (const __half *)split, a.ldh = 2 * K * groups, a.gxh = 2 * K;
    a.n = n, a.groups = groups, a.xrows = n;
    a.down = split + (int64_t)n * groups * K;
    a.signs = mma_iq2_pair_signs();
    return a;
}

bool wgmma_dense_matmul(int type, const void *W, int64_t rb, int64_t r0, int64_t rows, int64_t K, const float *X,
                        int64_t ldx, int n, float *Y, int64_t ldy, int groups, int64_t gx, int64_t gy, float *scratch,
                        size_t scratch_floats, cudaStream_t s) {
    if ((type != T_Q8_0 && type != T_F16) || !wgmma_takes(type, K) || !wg_weights_fit(type, W) ||
        !dense_split(X, ldx, n, groups, gx, K, scratch, scratch_floats, s))
        return false;
    wg_args a = dense_args(type, K, n, groups, scratch);
    a.W = (const uint8_t *)W, a.rb = rb, a.r0 = r0, a.rows = rows;
    a.Y = Y, a.ldy = ldy, a.gy = gy;
    wg_dispatch(type, a, n, (unsigned)groups, s);
    return true;
}

/* Several dense products of one type and K (every job's r0 0, x_off 0)
 * over rows split once by wgmma_split: one launch, product z in tile z. */
bool wgmma_split(const float *X, int64_t ldx, int n, int64_t K, float *scratch, size_t scratch_floats, cudaStream_t s) {
    return dense_split(X, ldx, n, 1, 0, K, scratch, scratch_floats, s);
}

bool wgmma_dense_jobs(int type, int njobs, const void *const *W, const int64_t *rows, float *const *Y,
                      const int64_t *ldy, int64_t K, int n, const float *split, cudaStream_t s) {
    if ((type != T_Q8_0 && type != T_F16) || !wgmma_takes(type, K) || njobs < 1 || njobs > WG_JOBS || n <= 0)
        return false;
    wg_args a = dense_args(type, K, n, 1, split);
    int64_t max_rows = 0;
    for (int j = 0; j < njobs; j++) {
        if ((uintptr_t)W[j] % 16 != 0) return false; /* the producer-fed kernel's check (pc_takes) for every job */
        a.jw[j] = (const uint8_t *)W[j], a.jrows[j] = rows[j], a.jy[j] = Y[j], a.jldy[j] = ldy[j];
        max_rows = rows[j] > max_rows ? rows[j] : max_rows;
    }
    a.njobs = njobs;
    a.W = a.jw[0], a.rows = max_rows;
    wg_dispatch(type, a, n, (unsigned)njobs, s);
    return true;
}

template <int T, int BN, bool LO, int OCC> static bool pc_allow_smem(void) {
    return cudaFuncSetAttribute(wgmma_pc_kernel<T, BN, LO, OCC>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                (int)pc_smem_bytes<T, BN, LO>()) == cudaSuccess;
}
template <int T, int BN, bool LO> static bool wg_allow_smem_as(void) {
    if (cudaFuncSetAttribute(wgmma_kernel<T, BN, LO>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             (int)wg_smem_bytes<T, BN>()) != cudaSuccess)
        return false;
    if constexpr (pc_two_blocks<T, BN, LO>()) /* two blocks' shared memory: the largest carveout */
        if (!pc_allow_smem<T, BN, LO, 2>() ||
            cudaFuncSetAttribute(wgmma_pc_kernel<T, BN, LO, 2>, cudaFuncAttributePreferredSharedMemoryCarveout,
                                 (int)cudaSharedmemCarveoutMaxShared) != cudaSuccess)
            return false;
    if constexpr (pc_type(T)) return pc_allow_smem<T, BN, LO, 1>();
    return true;
}
template <int T, int BN> static bool wg_allow_smem(void) {
    return wg_allow_smem_as<T, BN, true>() && wg_allow_smem_as<T, BN, false>();
}
template <int T> static bool wg_allow_smem_t(void) {
    return wg_allow_smem<T, 128>() && wg_allow_smem<T, 64>() && wg_allow_smem<T, 32>();
}

int wgmma_init(void) {
    g_wgmma_on = 0;
    int dev = 0, major = 0;
    if (!strstr(DS4_CUDA_ARCH, "90a") || cudaGetDevice(&dev) != cudaSuccess || /* sm_90a or compute_90a */
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess || major != 9)
        return 0; /* not an error: the mma.sync tiles serve */
    if (!wg_allow_smem_t<T_IQ2_XXS>() || !wg_allow_smem_t<T_Q2_K>() || !wg_allow_smem_t<T_Q8_0>() ||
        !wg_allow_smem_t<T_F16>() ||
        cudaFuncSetAttribute(wgmma_pc_kernel<T_Q8_0, 256, false>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             (int)pc_smem_bytes<T_Q8_0, 256, false>()) != cudaSuccess ||
        quant_tables_upload() != 0)
        return -1;
    /* the producer-fed kernel's tensor maps: without the driver's encoder
     * (a driver older than CUDA 12) the other kernel serves */
    void *fn = NULL;
    cudaDriverEntryPointQueryResult found;
    g_encode_tmap = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault,
                                                     &found) == cudaSuccess &&
                            found == cudaDriverEntryPointSuccess
                        ? (PFN_cuTensorMapEncodeTiled_v12000)fn
                        : NULL;
    g_wgmma_on = env_switch_on("DS4_WGMMA");
    g_wgmma_pc = env_switch_on("DS4_WGMMA_PRODUCER");
    const char *lo_env = getenv("DS4_WGMMA_LO");
    g_wgmma_lo_env = lo_env ? strcmp(lo_env, "0") != 0 : -1;
    if (g_wgmma_lo_env >= 0) g_wgmma_lo = g_wgmma_lo_env;
    g_wgmma_f16 = env_switch_on("DS4_WGMMA_F16");
    g_wgmma_256 = env_switch_on("DS4_WGMMA_256");
    g_wgmma_two = env_switch_on("DS4_WGMMA_TWO_BLOCKS");
    if (cudaDeviceGetAttribute(&g_tile_blocks, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) return -1;
    return 0;
}

extern "C" int ds4k_wgmma_takes(int type, int64_t K) { return wgmma_takes(type, K) ? 1 : 0; }

extern "C" int ds4k_wgmma_producer_takes(int type, int64_t K) {
    return wgmma_takes(type, K) && pc_type(type) && pc_takes(NULL, row_bytes_dev(type, K), K) ? 1 : 0;
}

extern "C" int ds4k_wgmma_tile_blocks(int blocks) {
    const int was = g_tile_blocks;
    if (blocks > 0) g_tile_blocks = blocks;
    return was;
}

extern "C" int ds4k_wgmma_two_blocks(int on) {
    const int was = g_wgmma_two;
    g_wgmma_two = on ? 1 : 0;
    return was;
}

extern "C" int ds4k_wgmma_exact_acts(int on) {
    const int was = g_wgmma_lo;
    g_wgmma_lo = g_wgmma_lo_env >= 0 ? g_wgmma_lo_env : on ? 1 : 0;
    return was;
}

extern "C" int ds4k_wgmma_producer_enable(int on) {
    const int was = g_wgmma_pc;
    g_wgmma_pc = on ? 1 : 0;
    return was;
}
