/* ds4 — block formats of the tensor types in use: traits, dequantization,
 * dot products against f32 activations, and quantizers.
 *
 * Formats (MODEL.md §14): F32, F16, BF16, Q8_0 (32 elems / 34 B),
 * Q2_K (256 / 84 B), Q4_K (256 / 144 B), IQ2_XXS (256 / 66 B), I32.
 *
 * Numerics contract (the CPU forward pass relies on it for bitwise
 * chunk-size independence):
 *   - ds4_dequant_row produces, for each element, exactly the float the
 *     scalar formula of MODEL.md §14 gives, evaluated in f32 in the order
 *     written there (no FMA contraction), on every code path.
 *   - ds4_dot_f32(a, b, n) is the canonical dot product: 8 lanes, lane j
 *     accumulates a[i]*b[i] for i ≡ j (mod 8) in increasing i, then the lanes
 *     are summed as ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)). The AVX2 path uses
 *     one fused multiply-add per step; the portable path emulates the lanes
 *     with separate multiply and add (so the two paths may differ in the last
 *     bits, and each is deterministic).
 *   - ds4_vec_dot(type, row, x, n) == ds4_dot_f32(dequant(row), x, n)
 *     bit for bit on the same path.
 * n must be a multiple of the type's block size (and of 8 for ds4_dot_f32). */
#ifndef DS4_GGUF_QUANT_H
#define DS4_GGUF_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf/gguf.h"

typedef struct ds4_type_traits {
    const char *name;   /* "f32", "f16", "bf16", "q8_0", "q2_K", "q4_K", "iq2_xxs", "i32" */
    int64_t block;      /* elements per block */
    size_t block_bytes; /* bytes per block */
    bool is_float;      /* dequantizable to f32 (everything but i32) */
} ds4_type_traits;

/* NULL for a type id this engine does not know. */
const ds4_type_traits *ds4_type_info(int type);
const char *ds4_type_name(int type); /* "unknown(N)" style string for unknown ids */
/* Bytes of a row of n elements; 0 if n is not a multiple of the block size or the type is unknown. */
size_t ds4_row_bytes(int type, int64_t n);

/* SIMD selection: the AVX2+FMA path is used when the CPU has it. Tests call
 * ds4_simd_force_portable(true) to exercise the portable path. */
bool ds4_simd_available(void);
void ds4_simd_force_portable(bool on);
bool ds4_simd_active(void);

/* Dequantize n elements (n a multiple of the block size) of a float type. */
void ds4_dequant_row(int type, const void *src, float *dst, int64_t n);

float ds4_dot_f32(const float *a, const float *b, int64_t n);
float ds4_vec_dot(int type, const void *row, const float *x, int64_t n);

/* Quantize n elements (multiple of the block size) from f32. Supported:
 * F32, F16, BF16, Q8_0, Q2_K, Q4_K, IQ2_XXS. The K-quants and IQ2_XXS are
 * simple search quantizers: their quality is secondary, their blocks are
 * always valid (finite scales, codes in range, IQ2 sign parity even). */
void ds4_quantize_row(int type, const float *src, void *dst, int64_t n);

/* IQ2_XXS tables (GGML format constants, MODEL.md §14.5). */
extern const uint64_t ds4_iq2xxs_grid[256];
extern const uint8_t ds4_ksigns_iq2xs[128];

#endif
