/* ds4 — private interface between the dispatcher (quant.c) and the AVX2
 * kernels (quant_avx2.c). Nothing outside src/gguf/quant*.c includes this.
 *
 * The AVX2 functions exist only on x86; quant.c calls them only after the
 * run-time check (AVX2 + FMA + F16C, with OS support) succeeded. Their
 * arguments are already validated by the dispatcher: n is a multiple of the
 * type's block size and the type is one of the float types. */
#ifndef DS4_GGUF_QUANT_IMPL_H
#define DS4_GGUF_QUANT_IMPL_H

#include <stdint.h>

#include "gguf/quant.h"

#if defined(__x86_64__) || defined(__i386__)
#define DS4_HAVE_AVX2_KERNELS 1
#else
#define DS4_HAVE_AVX2_KERNELS 0
#endif

#if DS4_HAVE_AVX2_KERNELS
/* Dequantize n elements; returns false for a type it does not handle (the
 * dispatcher then falls back to the portable code). */
bool ds4_dequant_row_avx2(int type, const void *src, float *dst, int64_t n);
float ds4_dot_f32_avx2(const float *a, const float *b, int64_t n);
/* Fused dequant + dot; *out receives the result. Returns false for a type it
 * does not handle. */
bool ds4_vec_dot_avx2(int type, const void *row, const float *x, int64_t n, float *out);
#endif

#endif
