/* ds4 — KV rows in the cache's formats on the device (--kv-type; the
 * layouts and their CPU twin: src/model/kv_format.[ch]): a block's store of
 * one row, one element's load, and the staging of whole rows into shared
 * memory as floats. Every decode gives the exact value the CPU's
 * ds4_kvrow_decode gives; every store the CPU's ds4_kvrow_encode bytes. */
#ifndef DS4_CUDA_KVROW_CUH
#define DS4_CUDA_KVROW_CUH

#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include "cuda/cuda_common.cuh"
#include "model/kv_format.h"

/* ------------------------------------------------------------------ codes */

/* 2^e as a float, e in [-126, 127] (the encoders keep e in [-120, 120]). */
__device__ __forceinline__ float exp2i(int e) { return __int_as_float((e + 127) << 23); }

/* E4M3 codes' values: the conversion to f16 is exact (every E4M3 value is
 * an f16; its NaN code a NaN), one instruction for two codes from sm_89
 * on (cuda_fp8.h emulates it before). e4m3x2_val: the low 16 bits of c,
 * low byte first, times s. */
__device__ __forceinline__ float e4m3_val(uint32_t c) {
    return __half2float(__ushort_as_half(__nv_cvt_fp8_to_halfraw((__nv_fp8_storage_t)(c & 0xffu), __NV_E4M3).x));
}
__device__ __forceinline__ float2 e4m3x2_val(uint32_t c, float s) {
    const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(c & 0xffffu), __NV_E4M3);
    const float2 f = __half22float2(*(const __half2 *)&h);
    return make_float2(f.x * s, f.y * s);
}
/* An E2M1 code's value: its exponent and mantissa bits placed in a float's
 * fields make the value times 2^-126 (code 1, 0.5, makes a subnormal float:
 * exact, as this build does not flush them to zero); one multiply puts the
 * scale back. */
__device__ __forceinline__ float e2m1_val(uint32_t c) {
    return __uint_as_float(((c & 8u) << 28) | ((c & 7u) << 22)) * exp2i(126);
}

/* ds4_fp8_block_exp / ds4_fp4_block_exp from the float's bits: amax =
 * 1.f 2^(be - 127), frexp's k = be - 126 and m = 1.f / 2. */
__device__ __forceinline__ int block_exp_dev(float amax, uint32_t mant_max, int ktop) {
    if (!(amax > 0.0f)) return 0;
    const uint32_t u = __float_as_uint(amax);
    const int be = (int)(u >> 23) & 255;
    if (be == 255) return 120;
    if (be == 0) return -120; /* a subnormal maximum: far below the clamp */
    const int k = be - 126, e = (u & 0x7fffffu) <= mant_max ? k - ktop : k - ktop + 1;
    return e < -120 ? -120 : e > 120 ? 120 : e;
}
__device__ __forceinline__ int fp8_exp_dev(float amax) { return block_exp_dev(amax, 0x600000u, 9); } /* m <= 0.875 */
__device__ __forceinline__ int fp4_exp_dev(float amax) { return block_exp_dev(amax, 0x400000u, 3); } /* m <= 0.75 */

__device__ __forceinline__ uint32_t e4m3_code(float y) {
    return (uint32_t)__nv_cvt_float_to_fp8(y, __NV_SATFINITE, __NV_E4M3); /* nearest, ties to even */
}
__device__ __forceinline__ uint32_t e2m1_code(float y) { /* ds4_e2m1_encode's midpoints */
    const float a = fabsf(y);
    const uint32_t c = a <= 0.25f ? 0 : a < 0.75f ? 1 : a <= 1.25f ? 2 : a < 1.75f ? 3 : a <= 2.5f ? 4 : a < 3.5f ? 5
                       : a <= 5.0f ? 6 : 7;
    return signbit(y) ? c | 8u : c;
}

__device__ __forceinline__ float bf16_bits_val(uint32_t h) { return __uint_as_float(h << 16); }

/* ------------------------------------------------------------------ one row */

/* Row x (dim floats in shared memory, written by any thread of the block)
 * stored at dst in format f by the whole block (blockDim.x a multiple of
 * 32); FP8 rows' first `nope` elements and FP4 rows' blocks by a warp a
 * block. The padding is zeroed: bytes the same as ds4_kvrow_encode's. */
__device__ __forceinline__ void block_store_row(uint8_t *dst, const float *x, int f, int dim, int nope) {
    if (f == DS4_ROW_F32 || f == DS4_ROW_F16 || f == DS4_ROW_BF16) {
        for (int i = threadIdx.x; i < dim; i += blockDim.x) {
            if (f == DS4_ROW_F32) ((float *)dst)[i] = x[i];
            else if (f == DS4_ROW_F16) ((uint16_t *)dst)[i] = f2h(x[i]);
            else ((__nv_bfloat16 *)dst)[i] = __float2bfloat16_rn(x[i]);
        }
        return;
    }
    __syncthreads(); /* the row is whole before a warp reads another thread's elements */
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    if (f == DS4_ROW_FP8) {
        const int ex = ds4_fp8_exps_at(dim, nope);
        for (int b = warp; b < nope / 64; b += nw) {
            const float a = x[64 * b + lane], c = x[64 * b + 32 + lane];
            const int e = fp8_exp_dev(warp_max(fmaxf(fabsf(a), fabsf(c))));
            const float s = exp2i(-e);
            dst[64 * b + lane] = (uint8_t)e4m3_code(a * s);
            dst[64 * b + 32 + lane] = (uint8_t)e4m3_code(c * s);
            if (lane == 0) dst[ex + b] = (uint8_t)(int8_t)e;
        }
        for (int i = nope + threadIdx.x; i < dim; i += blockDim.x)
            ((uint16_t *)(dst + ds4_fp8_tail_at(nope)))[i - nope] = f2h(x[i]);
        for (int i = ex + nope / 64 + threadIdx.x; i < (int)ds4_kvrow_bytes(DS4_ROW_FP8, dim, nope); i += blockDim.x)
            dst[i] = 0;
        return;
    }
    /* FP4: lane l codes element 32 b + l; even lanes write a byte of two */
    const int ex = ds4_fp4_exps_at(dim);
    for (int b = warp; b < dim / 32; b += nw) {
        const float a = x[32 * b + lane];
        const int e = fp4_exp_dev(warp_max(fabsf(a)));
        const uint32_t c = e2m1_code(a * exp2i(-e)), hi = __shfl_down_sync(0xffffffffu, c, 1);
        if (!(lane & 1)) dst[16 * b + lane / 2] = (uint8_t)(c | hi << 4);
        if (lane == 0) dst[ex + b] = (uint8_t)(int8_t)e;
    }
    for (int i = ex + dim / 32 + threadIdx.x; i < (int)ds4_kvrow_bytes(DS4_ROW_FP4, dim, 0); i += blockDim.x) dst[i] = 0;
}

/* Element i of a row (one thread, any format). */
__device__ __forceinline__ float kvrow_load(const uint8_t *row, int i, int f, int dim, int nope) {
    switch (f) {
    case DS4_ROW_F32: return ((const float *)row)[i];
    case DS4_ROW_F16: return h2f(((const uint16_t *)row)[i]);
    case DS4_ROW_BF16: return bf16_bits_val(((const uint16_t *)row)[i]);
    case DS4_ROW_FP8:
        if (i >= nope) return h2f(((const uint16_t *)(row + ds4_fp8_tail_at(nope)))[i - nope]);
        return e4m3_val(row[i]) * exp2i((int8_t)row[ds4_fp8_exps_at(dim, nope) + i / 64]);
    default: return e2m1_val(row[i / 2] >> (4 * (i & 1))) * exp2i((int8_t)row[ds4_fp4_exps_at(dim) + i / 32]);
    }
}

/* ------------------------------------------------------------------ staging */

/* Rows 0 .. nrow-1 of `dim` elements (row(r) = the row's first byte, 16-byte
 * aligned) into shared memory as floats at dst + r * ks, with 16-byte loads
 * spread over the block, SR_BATCH of a thread's loads issued before its
 * first store. As a plain loop (one load, its store, the next load) the
 * compiler kept that order — the stores go through pointers it cannot tell
 * from the rows' — so a thread's 8 vectors of a decode attention chunk came
 * one memory round trip after another.
 *
 * A vector of 16 bytes holds 4 f32, 8 f16 / bf16, 16 FP8 codes (its block's
 * exponent loaded beside it) or 32 FP4 codes. A vector's floats span 2, 4
 * or 8 float4s, which a lane stores starting at a place set by its vector's
 * index (v & 1, v & 3, v & 7): all lanes storing their first float4 would
 * use a part of the banks many times over. The format is a template
 * argument: each kernel's f16 code is what it was before the other
 * formats came. */
#define SR_BATCH 8
template <int f, typename Row>
__device__ __forceinline__ void stage_rows(float *dst, int ks, int nrow, int dim, int nope, Row row) {
    const int ncode = f == DS4_ROW_FP8 ? nope / 16 : 0; /* FP8 rows: code vectors, then the f16 tail's */
    const int vpr = f == DS4_ROW_F32   ? dim / 4
                    : f == DS4_ROW_FP4 ? dim / 32
                    : f == DS4_ROW_FP8 ? ncode + (dim - nope) / 8
                                       : dim / 8; /* 16-byte vectors a row */
    const int ex_at = f == DS4_ROW_FP8 ? ds4_fp8_exps_at(dim, nope) : ds4_fp4_exps_at(dim);
    const int total = nrow * vpr;
    for (int v0 = threadIdx.x; v0 < total; v0 += SR_BATCH * blockDim.x) {
        uint4 u[SR_BATCH];
        uint32_t ex[(SR_BATCH + 3) / 4] = {}; /* the vectors' exponent bytes, four a word: fewer registers */
#pragma unroll
        for (int i = 0; i < SR_BATCH; i++) {
            const int v = v0 + i * (int)blockDim.x, r = v / vpr, c = v - r * vpr;
            u[i] = make_uint4(0u, 0u, 0u, 0u);
            if (v >= total) continue;
            const uint8_t *rp = row(r);
            if (f == DS4_ROW_FP8) {
                u[i] = c < ncode ? ((const uint4 *)rp)[c] : ((const uint4 *)(rp + ds4_fp8_tail_at(nope)))[c - ncode];
                if (c < ncode) ex[i / 4] |= (uint32_t)rp[ex_at + c / 4] << (8 * (i & 3));
            } else {
                u[i] = ((const uint4 *)rp)[c];
                if (f == DS4_ROW_FP4) ex[i / 4] |= (uint32_t)rp[ex_at + c] << (8 * (i & 3));
            }
        }
#pragma unroll
        for (int i = 0; i < SR_BATCH; i++) {
            const int v = v0 + i * (int)blockDim.x, r = v / vpr, c = v - r * vpr;
            if (v >= total) break;
            float *d = dst + r * ks;
            const uint32_t w[4] = {u[i].x, u[i].y, u[i].z, u[i].w};
            if (f == DS4_ROW_F32) {
                ((float4 *)d)[c] = make_float4(__uint_as_float(w[0]), __uint_as_float(w[1]), __uint_as_float(w[2]),
                                               __uint_as_float(w[3]));
            } else if (f == DS4_ROW_F16 || f == DS4_ROW_BF16 || (f == DS4_ROW_FP8 && c >= ncode)) {
                float e[8];
#pragma unroll
                for (int k = 0; k < 4; k++) {
                    if (f == DS4_ROW_BF16) {
                        e[2 * k] = bf16_bits_val(w[k] & 0xffffu), e[2 * k + 1] = bf16_bits_val(w[k] >> 16);
                    } else {
                        const float2 p = __half22float2(*(const __half2 *)&w[k]);
                        e[2 * k] = p.x, e[2 * k + 1] = p.y;
                    }
                }
                float4 *d4 = (float4 *)(f == DS4_ROW_FP8 ? d + nope + 8 * (c - ncode) : d + 8 * c);
                const int sw = (v >> 2) & 1;
                d4[sw] = sw ? make_float4(e[4], e[5], e[6], e[7]) : make_float4(e[0], e[1], e[2], e[3]);
                d4[1 - sw] = sw ? make_float4(e[0], e[1], e[2], e[3]) : make_float4(e[4], e[5], e[6], e[7]);
            } else if (f == DS4_ROW_FP8) {
                const float s = exp2i((int8_t)(ex[i / 4] >> (8 * (i & 3))));
                float4 *d4 = (float4 *)(d + 16 * c);
#pragma unroll
                for (int k = 0; k < 4; k++) {
                    const int q = (k + v) & 3; /* float4 q: codes 4q .. 4q + 3, the bytes of word q */
                    const uint32_t b = q == 0 ? w[0] : q == 1 ? w[1] : q == 2 ? w[2] : w[3];
                    const float2 lo = e4m3x2_val(b, s), hi = e4m3x2_val(b >> 16, s);
                    d4[q] = make_float4(lo.x, lo.y, hi.x, hi.y);
                }
            } else {
                const float s = exp2i((int8_t)(ex[i / 4] >> (8 * (i & 3))));
                float4 *d4 = (float4 *)(d + 32 * c);
#pragma unroll
                for (int k = 0; k < 8; k++) {
                    const int q = (k + v) & 7; /* float4 q: codes 4q .. 4q + 3, half of word q / 2 */
                    const uint32_t b = (q >> 1) == 0 ? w[0] : (q >> 1) == 1 ? w[1] : (q >> 1) == 2 ? w[2] : w[3];
                    const uint32_t h = b >> (16 * (q & 1));
                    d4[q] = make_float4(e2m1_val(h & 15u) * s, e2m1_val((h >> 4) & 15u) * s,
                                        e2m1_val((h >> 8) & 15u) * s, e2m1_val((h >> 12) & 15u) * s);
                }
            }
        }
    }
}

#endif
