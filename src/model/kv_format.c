/* ds4 — KV row formats (kv_format.h): names, the E4M3 / E2M1 codes, and a
 * row's encoding. The CUDA kernels encode and decode the same bytes
 * (src/cuda/cuda_kvrow.cuh); this file is their CPU twin. */
#include "model/kv_format.h"

#include <math.h>
#include <string.h>

#include "util/f16.h"

static const struct {
    ds4_kv_type t;
    const char *name;
} kv_names[] = {{DS4_KV_F32, "f32"}, {DS4_KV_F16, "f16"}, {DS4_KV_BF16, "bf16"}, {DS4_KV_FP8, "fp8"}};

const char *ds4_kv_type_name(ds4_kv_type t) {
    for (size_t i = 0; i < sizeof(kv_names) / sizeof(kv_names[0]); i++)
        if (kv_names[i].t == t) return kv_names[i].name;
    return "default";
}

int ds4_kv_type_parse(const char *s, ds4_kv_type *out) {
    for (size_t i = 0; s && i < sizeof(kv_names) / sizeof(kv_names[0]); i++)
        if (strcmp(s, kv_names[i].name) == 0) {
            *out = kv_names[i].t;
            return 0;
        }
    return -1;
}

/* ------------------------------------------------------------------ codes */

/* amax = m 2^k with m in [0.5, 1); top = mtop 2^ktop likewise. The smallest
 * e with amax <= top 2^e is k - ktop, or one more when m > mtop. */
static int block_exp(float amax, float mtop, int ktop) {
    if (!(amax > 0.0f)) return 0;
    if (!isfinite(amax)) return 120;
    int k;
    const float m = frexpf(amax, &k);
    int e = m <= mtop ? k - ktop : k - ktop + 1;
    return e < -120 ? -120 : e > 120 ? 120 : e;
}
int ds4_fp8_block_exp(float amax) { return block_exp(amax, 0.875f, 9); } /* 448 = 0.875 * 2^9 */
int ds4_fp4_block_exp(float amax) { return block_exp(amax, 0.75f, 3); }  /* 6 = 0.75 * 2^3 */

uint8_t ds4_e4m3_encode(float y) {
    const uint8_t s = signbit(y) ? 0x80u : 0u;
    const float a = fabsf(y);
    if (isnan(a)) return (uint8_t)(s | 0x7fu);
    if (a < 0.015625f) return (uint8_t)(s | (uint8_t)nearbyintf(a * 512.0f)); /* subnormals, steps of 2^-9; 8 = 2^-6 */
    if (a >= 448.0f) return (uint8_t)(s | 0x7eu);
    int k;
    frexpf(a, &k); /* a = m 2^k: the leading bit is 2^(k-1) */
    int q = (int)nearbyintf(ldexpf(a, 4 - k)); /* 8..16: the mantissa with its leading bit, ties to even */
    if (q == 16) q = 8, k++;
    const int E = k + 6; /* value (q / 8) 2^(k-1), exponent field (k - 1) + 7 */
    if (E > 15 || (E == 15 && q > 14)) return (uint8_t)(s | 0x7eu);
    return (uint8_t)(s | (E << 3) | (q - 8));
}

float ds4_e4m3_decode(uint8_t c) {
    if ((c & 0x7fu) == 0x7fu) return NAN; /* E4M3FN's only NaN code, ds4_e4m3_encode's for NaN */
    const int E = (c >> 3) & 15, m = c & 7;
    const float v = E ? ldexpf((float)(8 + m), E - 10) : ldexpf((float)m, -9);
    return c & 0x80u ? -v : v;
}

uint8_t ds4_e2m1_encode(float y) {
    const float a = fabsf(y);
    /* the midpoints of 0, .5, 1, 1.5, 2, 3, 4, 6; a tie goes to the even code
     * (ds4_e2m1_round's rule) */
    const uint8_t c = a <= 0.25f ? 0 : a < 0.75f ? 1 : a <= 1.25f ? 2 : a < 1.75f ? 3 : a <= 2.5f ? 4 : a < 3.5f ? 5
                      : a <= 5.0f ? 6 : 7;
    return (uint8_t)(signbit(y) ? c | 8u : c);
}

float ds4_e2m1_decode(uint8_t c) {
    static const float mag[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    return c & 8u ? -mag[c & 7] : mag[c & 7];
}

/* ------------------------------------------------------------------ rows */

static float block_amax(const float *x, int n) {
    float m = 0.0f;
    for (int i = 0; i < n; i++) m = fmaxf(m, fabsf(x[i]));
    return m;
}

void ds4_kvrow_encode(ds4_row_fmt f, const float *x, int dim, int nope, uint8_t *out) {
    const size_t bytes = ds4_kvrow_bytes(f, dim, nope);
    memset(out, 0, bytes);
    switch (f) {
    case DS4_ROW_F32: memcpy(out, x, bytes); return;
    case DS4_ROW_F16:
    case DS4_ROW_BF16:
        for (int i = 0; i < dim; i++) {
            const uint16_t h = f == DS4_ROW_F16 ? ds4_f32_to_f16(x[i]) : ds4_f32_to_bf16(x[i]);
            memcpy(out + 2 * i, &h, 2);
        }
        return;
    case DS4_ROW_FP8:
        for (int b = 0; b < nope / 64; b++) {
            const int e = ds4_fp8_block_exp(block_amax(x + 64 * b, 64));
            out[ds4_fp8_exps_at(dim, nope) + b] = (uint8_t)(int8_t)e;
            for (int i = 64 * b; i < 64 * b + 64; i++) out[i] = ds4_e4m3_encode(ldexpf(x[i], -e));
        }
        for (int i = nope; i < dim; i++) {
            const uint16_t h = ds4_f32_to_f16(x[i]);
            memcpy(out + ds4_fp8_tail_at(nope) + 2 * (i - nope), &h, 2);
        }
        return;
    case DS4_ROW_FP4:
        for (int b = 0; b < dim / 32; b++) {
            const int e = ds4_fp4_block_exp(block_amax(x + 32 * b, 32));
            out[ds4_fp4_exps_at(dim) + b] = (uint8_t)(int8_t)e;
            for (int i = 32 * b; i < 32 * b + 32; i++)
                out[i / 2] |= (uint8_t)(ds4_e2m1_encode(ldexpf(x[i], -e)) << (4 * (i & 1)));
        }
        return;
    }
}

void ds4_kvrow_decode(ds4_row_fmt f, const uint8_t *in, int dim, int nope, float *x) {
    switch (f) {
    case DS4_ROW_F32: memcpy(x, in, (size_t)dim * 4); return;
    case DS4_ROW_F16:
    case DS4_ROW_BF16:
        for (int i = 0; i < dim; i++) {
            uint16_t h;
            memcpy(&h, in + 2 * i, 2);
            x[i] = f == DS4_ROW_F16 ? ds4_f16_to_f32(h) : ds4_bf16_to_f32(h);
        }
        return;
    case DS4_ROW_FP8:
        for (int i = 0; i < nope; i++)
            x[i] = ldexpf(ds4_e4m3_decode(in[i]), (int8_t)in[ds4_fp8_exps_at(dim, nope) + i / 64]);
        for (int i = nope; i < dim; i++) {
            uint16_t h;
            memcpy(&h, in + ds4_fp8_tail_at(nope) + 2 * (i - nope), 2);
            x[i] = ds4_f16_to_f32(h);
        }
        return;
    case DS4_ROW_FP4:
        for (int i = 0; i < dim; i++)
            x[i] = ldexpf(ds4_e2m1_decode((uint8_t)(in[i / 2] >> (4 * (i & 1)) & 15u)),
                          (int8_t)in[ds4_fp4_exps_at(dim) + i / 32]);
        return;
    }
}

void ds4_kvrow_round(ds4_row_fmt f, float *x, int dim, int nope) {
    switch (f) {
    case DS4_ROW_F32: return;
    case DS4_ROW_F16:
        for (int i = 0; i < dim; i++) x[i] = ds4_round_f16(x[i]);
        return;
    case DS4_ROW_BF16:
        for (int i = 0; i < dim; i++) x[i] = ds4_bf16_to_f32(ds4_f32_to_bf16(x[i]));
        return;
    case DS4_ROW_FP8: /* the codes' values in place: ds4_kvrow_decode(ds4_kvrow_encode(x)) */
        for (int b = 0; b < nope / 64; b++) {
            const int e = ds4_fp8_block_exp(block_amax(x + 64 * b, 64));
            for (int i = 64 * b; i < 64 * b + 64; i++) x[i] = ldexpf(ds4_e4m3_decode(ds4_e4m3_encode(ldexpf(x[i], -e))), e);
        }
        for (int i = nope; i < dim; i++) x[i] = ds4_round_f16(x[i]);
        return;
    case DS4_ROW_FP4:
        for (int b = 0; b < dim / 32; b++) {
            const int e = ds4_fp4_block_exp(block_amax(x + 32 * b, 32));
            for (int i = 32 * b; i < 32 * b + 32; i++) x[i] = ldexpf(ds4_e2m1_decode(ds4_e2m1_encode(ldexpf(x[i], -e))), e);
        }
        return;
    }
}
