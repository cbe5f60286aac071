/* ds4 — CUDA helpers shared by the kernels: error checks, half conversions,
 * deterministic reductions.
 *
 * Determinism rule of the CUDA backend: no float atomics, and every
 * reduction has a fixed shape (a lane order or a tree that does not depend
 * on timing), so the same inputs give the same bits run after run. */
#ifndef DS4_CUDA_COMMON_CUH
#define DS4_CUDA_COMMON_CUH

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* An A/B switch of a kernel family: on unless the environment sets NAME=0. */
static inline bool env_switch_on(const char *name) {
    const char *e = getenv(name);
    return !(e && strcmp(e, "0") == 0);
}
/* A whole-number A/B setting: def where NAME is unset, `off` (the setting's
 * neutral value) where it is outside [lo, hi]. */
static inline int env_int(const char *name, int def, int lo, int hi, int off) {
    const char *e = getenv(name);
    if (!e) return def;
    const int v = atoi(e);
    return v < lo || v > hi ? off : v;
}

#define DS4_WARP 32

/* Sum over the 32 lanes of a warp with a fixed xor butterfly: every lane ends
 * with the same, order-fixed result. */
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Two warp_sums in five shuffles instead of ten: lanes 0..15 end with a's
 * sum, lanes 16..31 with b's. After the first exchange only lanes of one
 * half meet. Lane 0 forms a's sum with warp_sum's operations in their
 * order. Lane 16 forms b's first addition with its operands swapped (b16 +
 * b0 for b0 + b16: the same float), so at every level it holds what lane 0
 * holds in warp_sum(b), and its partner what lane 0's partner holds: both
 * sums are bitwise warp_sum's at lane 0. */
__device__ __forceinline__ float warp_sum2(float a, float b) {
    const bool hi = (threadIdx.x & 16) != 0;
    float v = (hi ? b : a) + __shfl_xor_sync(0xffffffffu, hi ? a : b, 16);
#pragma unroll
    for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* dst[i] = src[i], i < n, over the block, each thread's BLOCK_LOADS loads
 * issued before its stores: a plain loop issues a thread's next load only
 * after the store before it (the compiler cannot tell the two pointers
 * apart), one L2 round trip after another on a decode step's path. */
#define BLOCK_LOADS 4
__device__ __forceinline__ void block_load_floats(float *dst, const float *src, int n) {
    for (int i0 = threadIdx.x; i0 < n; i0 += BLOCK_LOADS * blockDim.x) {
        float v[BLOCK_LOADS];
#pragma unroll
        for (int j = 0; j < BLOCK_LOADS; j++) {
            const int i = i0 + j * (int)blockDim.x;
            v[j] = i < n ? src[i] : 0.0f;
        }
#pragma unroll
        for (int j = 0; j < BLOCK_LOADS; j++) {
            const int i = i0 + j * (int)blockDim.x;
            if (i < n) dst[i] = v[j];
        }
    }
}

/* Block-wide sum (blockDim.x a multiple of 32, <= 1024): warp sums, then
 * warp 0 sums the warp results in lane order. All threads get the result.
 * `red` is shared scratch of 32 floats. */
__device__ __forceinline__ float block_sum(float v, float *red) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) red[w] = v;
    __syncthreads();
    float t = lane < nw ? red[lane] : 0.0f;
    t = warp_sum(t);
    return t;
}

__device__ __forceinline__ float block_max(float v, float *red) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) red[w] = v;
    __syncthreads();
    float t = lane < nw ? red[lane] : -INFINITY;
    t = warp_max(t);
    return t;
}

__device__ __forceinline__ float h2f(uint16_t h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ uint16_t f2h(float f) { return __half_as_ushort(__float2half_rn(f)); }
__device__ __forceinline__ float bf2f(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }
__device__ __forceinline__ float round_f16(float f) { return __half2float(__float2half_rn(f)); }
/* Unsigned keys in the floats' order (the top-k's and the experts'
 * selections); -0 and +0 get one key, as they compare equal in the CPU's
 * selections (ties then go to the lower index). */
__device__ __forceinline__ uint32_t order_key(float f) {
    uint32_t u = __float_as_uint(f);
    if (u == 0x80000000u) u = 0;
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ uint16_t ld_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
/* Aligned loads for the block formats: every row of a quantized matrix
 * starts at an even offset (block sizes 34, 66, 84, 144 bytes are even and
 * tensor data is 32-byte aligned), so 16-bit fields can be read whole, and
 * Q2_K/Q4_K quant bytes (4-aligned in their 84/144-byte blocks) as 32-bit
 * words: a quarter or half of the load instructions of byte reads. */
__device__ __forceinline__ uint32_t ld_a16(const uint8_t *p) { return *(const uint16_t *)p; }
__device__ __forceinline__ uint32_t ld_a32(const uint8_t *p) { return *(const uint32_t *)p; }
__device__ __forceinline__ uint32_t ld_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* acc + the 8 halves of u times a (4) then b (4), one fused multiply-add at a
 * time in element order (the F16 GEMV and the HC mixer parts). */
__device__ __forceinline__ float dot8_h(uint4 u, float4 a, float4 b, float acc) {
    const float2 w0 = __half22float2(*(const __half2 *)&u.x), w1 = __half22float2(*(const __half2 *)&u.y);
    const float2 w2 = __half22float2(*(const __half2 *)&u.z), w3 = __half22float2(*(const __half2 *)&u.w);
    acc = fmaf(w0.x, a.x, acc);
    acc = fmaf(w0.y, a.y, acc);
    acc = fmaf(w1.x, a.z, acc);
    acc = fmaf(w1.y, a.w, acc);
    acc = fmaf(w2.x, b.x, acc);
    acc = fmaf(w2.y, b.y, acc);
    acc = fmaf(w3.x, b.z, acc);
    return fmaf(w3.y, b.w, acc);
}

/* ------------------------------------------------------------------ asynchronous copies */

/* cp.async global -> shared (sm_80+; a plain copy on older targets). */
__device__ __forceinline__ void cp_async16(void *dst, const void *src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const unsigned s = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(src));
#else
    *(uint4 *)dst = *(const uint4 *)src;
#endif
}
/* The same, reading only src_bytes (0 or 16) and filling the rest with zeros:
 * rows past the end of a segment stage as zeros without a branch. */
__device__ __forceinline__ void cp_async16_zfill(void *dst, const void *src, int src_bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const unsigned s = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(src), "r"(src_bytes));
#else
    *(uint4 *)dst = src_bytes ? *(const uint4 *)src : make_uint4(0, 0, 0, 0);
#endif
}
/* 8 bytes (through L1: .cg takes only 16), zero-filled past src_bytes. */
__device__ __forceinline__ void cp_async8_zfill(void *dst, const void *src, int src_bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const unsigned s = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(s), "l"(src), "r"(src_bytes));
#else
    *(uint2 *)dst = src_bytes ? *(const uint2 *)src : make_uint2(0, 0);
#endif
}
/* Programmatic dependent launch (sm_90). A kernel launched with the
 * programmatic-serialization attribute may start before the kernel ahead of
 * it in the stream has finished: it does what needs none of that kernel's
 * results (weight loads), then pdl_wait() returns once that kernel has
 * completed and its writes are visible. pdl_trigger() lets the next such
 * kernel start early. Both do nothing for a kernel launched without the
 * attribute. Every block of a kernel launched with it waits before it reads
 * another kernel's output or returns, so its completion still implies its
 * predecessors'. */
__device__ __forceinline__ void pdl_wait(void) {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger(void) {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
/* The first statement of every kernel but the GEMVs (which issue weight
 * copies first): wait for the kernel ahead, then let the next one launch.
 * Triggering after the wait keeps the look-ahead to one kernel, so a chain
 * of launches never fills the GPU with blocks that only wait. */
__device__ __forceinline__ void pdl_enter(void) {
    pdl_wait();
    pdl_trigger();
}

/* Programmatic launch (on unless DS4_PDL=0 or the build's CUDA_ARCH is below
 * sm_90, where pdl_wait compiles to nothing; set at init in cuda_gemv.cu):
 * a launch's blocks start while the kernel ahead of it runs and wait in
 * pdl_wait(). The GEMVs always use it (they copy weights before they wait);
 * every other kernel only in batches of at most PDL_SMALL_BATCH tokens
 * (g_pdl_small_batch, set per forward pass): there the kernels are short
 * and each launch overlaps the one before it (12-layer model, H200: decode
 * +1%), while prefill's chunks ran 2-3% slower with it. Every kernel of the
 * backend begins with pdl_wait(), so each launch is correct either way. */
#define PDL_SMALL_BATCH 16
extern int g_pdl_on;
extern int g_pdl_small_batch;

/* A launch configuration, programmatic if `programmatic` (attr: the
 * caller's storage for the attribute). */
static inline cudaLaunchConfig_t pdl_config(dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                                            cudaLaunchAttribute *attr, bool programmatic) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = s;
    attr->id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr->val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = g_pdl_on && programmatic ? 1 : 0;
    return cfg;
}

/* kernel<<<grid, block, smem, st>>>(args...), programmatic in small
 * batches; errors surface through cudaGetLastError like a <<<>>> launch's. */
#define launch_pdl(kernel, grid, block, smem, st, ...)                                                 \
    do {                                                                                               \
        cudaLaunchAttribute pdl_attr_;                                                                 \
        const cudaLaunchConfig_t pdl_cfg_ =                                                            \
            pdl_config((grid), (block), (smem), (st), &pdl_attr_, g_pdl_small_batch);                  \
        (void)cudaLaunchKernelEx(&pdl_cfg_, kernel, __VA_ARGS__);                                      \
    } while (0)

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

#endif
