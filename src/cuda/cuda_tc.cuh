/* ds4 — tensor-core primitives shared by the prefill tiles (cuda_mma.cu),
 * the prefill attention (cuda_attn_mma.cu), the batch HC mixer (cuda_hc.cu)
 * and the batch indexer scores (cuda_attn.cu): ldmatrix loads of 8 x 8 f16
 * matrices from shared memory and the mma.sync products with f32
 * accumulation (the accumulation order inside an mma is fixed by the
 * hardware: the same inputs give the same bits). */
#ifndef DS4_CUDA_TC_CUH
#define DS4_CUDA_TC_CUH

#include "cuda/cuda_common.cuh"

/* Four 8 x 8 matrices; lanes 8i .. 8i+7 address the rows of matrix i. */
__device__ __forceinline__ void ldsm_x4(uint32_t *r, const void *p) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

/* The same, transposed: B fragments of a matrix stored [k][n]. */
__device__ __forceinline__ void ldsm_x4_t(uint32_t *r, const void *p) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

/* d += a (16 x K, row-major fragments) . b (K x 8, column fragments b0 b1),
 * f32 accumulation: f16 or bf16 with K = 16, tf32 with K = 8. */
#define DS4_MMA_SYNC(name, shape_and_types)                                                                        \
    __device__ __forceinline__ void name(float *d, const uint32_t *a, uint32_t b0, uint32_t b1) {                 \
        asm volatile("mma.sync.aligned." shape_and_types " {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n" \
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])                                              \
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));                              \
    }
DS4_MMA_SYNC(mma16816, "m16n8k16.row.col.f32.f16.f16.f32")
DS4_MMA_SYNC(mma16816_bf16, "m16n8k16.row.col.f32.bf16.bf16.f32")
DS4_MMA_SYNC(mma1688_tf32, "m16n8k8.row.col.f32.tf32.tf32.f32")
#undef DS4_MMA_SYNC

/* Two floats as f16 hi and lo terms, a + b ~= hi + lo to ~22 bits (the
 * tiles' staging, split_rows_kernel, the wgmma kernel's Q2_K minimums). */
__device__ __forceinline__ void split_hilo(float a, float b, uint32_t *hi, uint32_t *lo) {
    const __half2 h = __floats2half2_rn(a, b);
    const float2 hf = __half22float2(h);
    const __half2 l = __floats2half2_rn(a - hf.x, b - hf.y);
    *hi = *(const uint32_t *)&h;
    *lo = *(const uint32_t *)&l;
}

#endif
