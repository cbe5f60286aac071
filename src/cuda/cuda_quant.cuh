/* ds4 — block formats on the device: 32-element slices of a weight row.
 *
 * Every supported type is read in slices of 32 consecutive elements (a Q8_0
 * block, an eighth of a K-quant or IQ2_XXS super-block, 32 halves or
 * floats), so one GEMV lane handles one slice whatever the type. The values
 * are the exact floats of the CPU dequantizer (MODEL.md §14): the products
 * and differences use explicit round-to-nearest intrinsics so the compiler
 * does not fuse them into FMAs, which would change the last bit. */
#ifndef DS4_CUDA_QUANT_CUH
#define DS4_CUDA_QUANT_CUH

#include "cuda/cuda_common.cuh"

/* ggml type ids */
#define T_F32 0
#define T_F16 1
#define T_Q8_0 8
#define T_Q2_K 10
#define T_Q4_K 12
#define T_IQ2_XXS 16
#define T_BF16 30

/* IQ2_XXS tables in global memory (read through the L1 cache): every lane
 * indexes a different grid entry, which constant memory would serialize.
 * Each translation unit that includes this header has its own pointers
 * (no relocatable device code needed), set by quant_tables_upload(). */
static __device__ const uint64_t *d_iq2xxs_grid;
static __device__ const uint8_t *d_ksigns;

extern "C" {
extern const uint64_t ds4_iq2xxs_grid[256];
extern const uint8_t ds4_ksigns_iq2xs[128];
}

static inline int quant_tables_upload(void) {
    static void *grid, *signs;
    if (!grid) {
        if (cudaMalloc(&grid, 256 * 8) != cudaSuccess || cudaMalloc(&signs, 128) != cudaSuccess) return -1;
        if (cudaMemcpy(grid, ds4_iq2xxs_grid, 256 * 8, cudaMemcpyHostToDevice) != cudaSuccess ||
            cudaMemcpy(signs, ds4_ksigns_iq2xs, 128, cudaMemcpyHostToDevice) != cudaSuccess)
            return -1;
    }
    if (cudaMemcpyToSymbol(d_iq2xxs_grid, &grid, sizeof(void *)) != cudaSuccess) return -1;
    if (cudaMemcpyToSymbol(d_ksigns, &signs, sizeof(void *)) != cudaSuccess) return -1;
    return 0;
}

/* Bytes of a row of K elements (K a multiple of the block size). */
__host__ __device__ __forceinline__ int64_t row_bytes_dev(int type, int64_t K) {
    switch (type) {
    case T_F32: return K * 4;
    case T_F16:
    case T_BF16: return K * 2;
    case T_Q8_0: return K / 32 * 34;
    case T_Q2_K: return K / 256 * 84;
    case T_Q4_K: return K / 256 * 144;
    case T_IQ2_XXS: return K / 256 * 66;
    default: return 0;
    }
}

/* Q4_K: the 6-bit scale and minimum of 32-element group j (0..7) from the
 * 12 packed bytes sc of a super-block. */
__device__ __forceinline__ void q4k_scale_min(const uint8_t *sc, int j, int *scale, int *mn) {
    if (j < 4) {
        *scale = sc[j] & 63;
        *mn = sc[j + 4] & 63;
    } else {
        *scale = (sc[j + 4] & 15) | ((sc[j - 4] >> 6) << 4);
        *mn = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
    }
}

/* The 32 values of slice s of `row`; `grid` is the IQ2_XXS grid table (in
 * global or shared memory). The sign byte of IQ2_XXS is the 7 stored bits
 * plus an even-parity bit, computed here instead of looked up. */
__device__ __forceinline__ void dequant32_g(int type, const uint8_t *row, int s, float *v, const uint64_t *grid_tab) {
    switch (type) {
    case T_F32: {
        const float *p = (const float *)row + 32 * s;
#pragma unroll
        for (int i = 0; i < 32; i++) v[i] = p[i];
        break;
    }
    case T_F16: {
        const uint16_t *p = (const uint16_t *)row + 32 * s;
#pragma unroll
        for (int i = 0; i < 32; i++) v[i] = h2f(p[i]);
        break;
    }
    case T_BF16: {
        const uint16_t *p = (const uint16_t *)row + 32 * s;
#pragma unroll
        for (int i = 0; i < 32; i++) v[i] = bf2f(p[i]);
        break;
    }
    case T_Q8_0: {
        const uint8_t *b = row + 34 * s;
        const float d = h2f((uint16_t)ld_a16(b));
#pragma unroll
        for (int i = 0; i < 16; i++) {
            const uint32_t two = ld_a16(b + 2 + 2 * i);
            v[2 * i] = __fmul_rn(d, (float)(int8_t)(two & 0xff));
            v[2 * i + 1] = __fmul_rn(d, (float)(int8_t)(two >> 8));
        }
        break;
    }
    case T_Q2_K: {
        const uint8_t *b = row + 84 * (s >> 3);
        const int j = s & 7; /* slice in the super-block */
        const uint32_t dd = ld_a32(b + 80); /* d, dmin */
        const float d = h2f((uint16_t)(dd & 0xffff)), dmin = h2f((uint16_t)(dd >> 16));
        const uint8_t *qs = b + 16 + 32 * (j >> 2);
        const int shift = 2 * (j & 3);
        const uint32_t scs = ld_a16(b + 2 * j);
#pragma unroll
        for (int h = 0; h < 2; h++) { /* two 16-element scale groups */
            const uint32_t sc = (scs >> (8 * h)) & 0xff;
            const float dl = __fmul_rn(d, (float)(sc & 15)), ml = __fmul_rn(dmin, (float)(sc >> 4));
#pragma unroll
            for (int w = 0; w < 4; w++) {
                const uint32_t word = ld_a32(qs + 16 * h + 4 * w);
#pragma unroll
                for (int l = 0; l < 4; l++) {
                    const int q = (int)((word >> (8 * l + shift)) & 3);
                    v[16 * h + 4 * w + l] = __fsub_rn(__fmul_rn(dl, (float)q), ml);
                }
            }
        }
        break;
    }
    case T_Q4_K: {
        const uint8_t *b = row + 144 * (s >> 3);
        const int j = s & 7;
        const float d = h2f(ld_u16(b)), dmin = h2f(ld_u16(b + 2));
        int scale, mn;
        q4k_scale_min(b + 4, j, &scale, &mn);
        const float dl = __fmul_rn(d, (float)scale), ml = __fmul_rn(dmin, (float)mn);
        const uint8_t *qs = b + 16 + 32 * (j >> 1);
        const int shift = 4 * (j & 1);
#pragma unroll
        for (int w = 0; w < 8; w++) {
            const uint32_t word = ld_a32(qs + 4 * w);
#pragma unroll
            for (int l = 0; l < 4; l++) {
                const int q = (int)((word >> (8 * l + shift)) & 15);
                v[4 * w + l] = __fsub_rn(__fmul_rn(dl, (float)q), ml);
            }
        }
        break;
    }
    case T_IQ2_XXS: {
        const uint8_t *b = row + 66 * (s >> 3);
        const int j = s & 7;
        const float d = h2f((uint16_t)ld_a16(b));
        const uint8_t *g = b + 2 + 8 * j;
        const uint32_t idx = ld_a16(g) | (ld_a16(g + 2) << 16); /* four grid indices */
        const uint32_t a1 = ld_a16(g + 4) | (ld_a16(g + 6) << 16);
        const float db = __fmul_rn(__fmul_rn(d, 0.5f + (float)(a1 >> 28)), 0.25f);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const uint64_t grid = grid_tab[(idx >> (8 * i)) & 0xff];
            const uint32_t s7 = (a1 >> (7 * i)) & 127;
            const uint32_t signs = s7 | ((__popc(s7) & 1) << 7);
#pragma unroll
            for (int k = 0; k < 8; k++) {
                const float m = __fmul_rn(db, (float)((grid >> (8 * k)) & 0xff));
                v[8 * i + k] = (signs >> k) & 1 ? -m : m;
            }
        }
        break;
    }
    default:
#pragma unroll
        for (int i = 0; i < 32; i++) v[i] = 0.0f;
    }
}

__device__ __forceinline__ void dequant32(int type, const uint8_t *row, int s, float *v) {
    dequant32_g(type, row, s, v, d_iq2xxs_grid);
}

#endif
