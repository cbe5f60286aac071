/* ds4 — IEEE half and bfloat16 conversions (scalar, exact).
 *
 * f16 -> f32 is exact for every input (subnormals, infinities, NaN).
 * f32 -> f16 rounds to nearest, ties to even, overflowing to infinity, as
 * IEEE 754 and the F16C instruction do, so the CPU reference, the caches and
 * the CUDA kernels can all agree bit for bit. */
#ifndef DS4_UTIL_F16_H
#define DS4_UTIL_F16_H

#include <stdint.h>
#include <string.h>

static inline float ds4_bits_to_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint32_t ds4_f32_to_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float ds4_f16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0) {
        if (mant == 0) return ds4_bits_to_f32(sign);
        /* subnormal: value = mant * 2^-24, normalise it */
        int e = -1;
        do {
            e++;
            mant <<= 1;
        } while ((mant & 0x400u) == 0);
        mant &= 0x3ffu;
        return ds4_bits_to_f32(sign | ((uint32_t)(127 - 15 - e) << 23) | (mant << 13));
    }
    if (exp == 31) return ds4_bits_to_f32(sign | 0x7f800000u | (mant << 13));
    return ds4_bits_to_f32(sign | ((exp + 127 - 15) << 23) | (mant << 13));
}

static inline uint16_t ds4_f32_to_f16(float f) {
    const uint32_t u = ds4_f32_to_bits(f);
    const uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    const uint32_t aexp = (u >> 23) & 0xffu;
    uint32_t mant = u & 0x7fffffu;
    if (aexp == 0xff) /* inf or nan (keep nan quiet and non-zero) */
        return (uint16_t)(sign | 0x7c00u | (mant ? (0x200u | (mant >> 13)) : 0));
    const int e = (int)aexp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7c00u);
    if (e <= 0) {
        if (e < -10) return sign; /* rounds to zero (below half the smallest subnormal) */
        mant |= 0x800000u;
        const int shift = 14 - e; /* 14..24 */
        uint32_t half = mant >> shift;
        const uint32_t rem = mant & ((1u << shift) - 1u);
        const uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1u))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = ((uint32_t)e << 10) | (mant >> 13);
    const uint32_t rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (half & 1u))) half++; /* may carry into inf: correct */
    return (uint16_t)(sign | half);
}

/* Round an f32 through f16 and back (what the f16 caches store). */
static inline float ds4_round_f16(float f) { return ds4_f16_to_f32(ds4_f32_to_f16(f)); }

static inline float ds4_bf16_to_f32(uint16_t h) { return ds4_bits_to_f32((uint32_t)h << 16); }

static inline uint16_t ds4_f32_to_bf16(float f) {
    uint32_t u = ds4_f32_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* quiet nan */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

#endif
