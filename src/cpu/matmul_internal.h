/* ds4 — private interface of the CPU matmul (matmul.c dispatches to the
 * AVX2 micro-kernel in matmul_avx2.c when the CPU has it). */
#ifndef DS4_CPU_MATMUL_INTERNAL_H
#define DS4_CPU_MATMUL_INTERNAL_H

#include <stdint.h>

#if defined(__x86_64__) || defined(__i386__)
#define DS4_HAVE_MM_AVX2 1
/* Y[t*ldy + r] = canonical dot(W row r, X row t) for r < nr, t < nt; K % 8 == 0. */
void ds4_mm_block_avx2(const float *W, int64_t ldw, int nr, const float *X, int64_t ldx, int nt, float *Y, int64_t ldy,
                       int64_t K);
#else
#define DS4_HAVE_MM_AVX2 0
#endif

#endif
