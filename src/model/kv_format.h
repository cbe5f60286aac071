/* ds4 — how the KV cache stores its rows (--kv-type), shared by the CPU
 * reference, the CUDA kernels and the session's state transfers.
 *
 * The session state (ds4_state) always holds rows as floats; a KV type says
 * which values those floats may take, because the backend keeps them in
 * that format:
 *
 *   f32   exact (oracle mode's default)
 *   f16   every element rounded to f16 (the default)
 *   bf16  every element rounded to bf16 (what the official graph keeps)
 *   fp8   attention rows as their FP8 codes: the first `nope` elements as
 *         E4M3 codes with a power-of-two exponent per block of 64, the RoPE
 *         tail as f16; indexer rows as FP4 (E2M1) codes with an exponent per
 *         block of 32. Rows that went through the FP8 / FP4 simulations
 *         (MODEL.md §4.3, §4.4) are stored exactly: 592 bytes per attention
 *         row instead of 1,024 in f16, 80 per indexer row instead of 256.
 *
 * A row format names one row's bytes; a KV type gives one for the attention
 * rows (raw ring and compressed) and one for the indexer rows. The inline
 * helpers below compile for the host and for CUDA kernels alike. */
#ifndef DS4_MODEL_KV_FORMAT_H
#define DS4_MODEL_KV_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __CUDACC__
#define DS4_HOSTDEV __host__ __device__
#else
#define DS4_HOSTDEV
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ds4_kv_type {
    DS4_KV_DEFAULT = 0, /* f32 in oracle mode, else f16 */
    DS4_KV_F32 = 1,
    DS4_KV_F16 = 2,
    DS4_KV_BF16 = 3,
    DS4_KV_FP8 = 4,
} ds4_kv_type;

typedef enum ds4_row_fmt {
    DS4_ROW_F32 = 0,
    DS4_ROW_F16 = 1,
    DS4_ROW_BF16 = 2,
    DS4_ROW_FP8 = 3, /* [nope E4M3 codes][dim - nope f16][nope/64 exponents], padded to 16 bytes */
    DS4_ROW_FP4 = 4, /* [dim/2 bytes: element 2i low nibble, 2i+1 high][dim/32 exponents], padded to 16 */
} ds4_row_fmt;

/* "f32", "f16", "bf16", "fp8" (DS4_KV_DEFAULT: "default"). */
const char *ds4_kv_type_name(ds4_kv_type t);
/* 0 and *out set, or -1 for an unknown name. */
int ds4_kv_type_parse(const char *s, ds4_kv_type *out);

static inline DS4_HOSTDEV ds4_row_fmt ds4_kv_attn_fmt(ds4_kv_type t) {
    return t == DS4_KV_F32 ? DS4_ROW_F32 : t == DS4_KV_BF16 ? DS4_ROW_BF16 : t == DS4_KV_FP8 ? DS4_ROW_FP8 : DS4_ROW_F16;
}
static inline DS4_HOSTDEV ds4_row_fmt ds4_kv_index_fmt(ds4_kv_type t) {
    return t == DS4_KV_FP8 ? DS4_ROW_FP4 : ds4_kv_attn_fmt(t);
}

/* FP8 rows: where the f16 tail and the exponents start. */
static inline DS4_HOSTDEV int ds4_fp8_tail_at(int nope) { return nope; }
static inline DS4_HOSTDEV int ds4_fp8_exps_at(int dim, int nope) { return nope + 2 * (dim - nope); }
/* FP4 rows: where the exponents start. */
static inline DS4_HOSTDEV int ds4_fp4_exps_at(int dim) { return dim / 2; }

/* Bytes of one row of dim elements (nope: FP8 rows' E4M3 part, a multiple
 * of 64; FP4 rows: dim a multiple of 32). Every format keeps rows 16-byte
 * aligned when dim is a multiple of 8. */
static inline DS4_HOSTDEV size_t ds4_kvrow_bytes(ds4_row_fmt f, int dim, int nope) {
    switch (f) {
    case DS4_ROW_F32: return (size_t)dim * 4;
    case DS4_ROW_F16:
    case DS4_ROW_BF16: return (size_t)dim * 2;
    case DS4_ROW_FP8: return ((size_t)ds4_fp8_exps_at(dim, nope) + (size_t)nope / 64 + 15) / 16 * 16;
    case DS4_ROW_FP4: return ((size_t)ds4_fp4_exps_at(dim) + (size_t)dim / 32 + 15) / 16 * 16;
    }
    return 0;
}

/* The smallest exponent e with amax <= top * 2^e (top = 448 for E4M3, 6
 * for E2M1), clamped to [-120, 120]; 0 for amax == 0. A block whose values
 * went through the FP8 (FP4) simulation with scale 2^s has e <= s, and its
 * values divided by 2^e are E4M3 (E2M1) values: the codes are exact. */
int ds4_fp8_block_exp(float amax);
int ds4_fp4_block_exp(float amax);
/* E4M3FN code of y (round to nearest, ties to even; beyond 448 saturates
 * to 448) and its value. */
uint8_t ds4_e4m3_encode(float y);
float ds4_e4m3_decode(uint8_t c);
/* E2M1 code (4 bits) of y (nearest of 0, .5, 1, 1.5, 2, 3, 4, 6; ties to
 * the even code; saturates at 6) and its value. */
uint8_t ds4_e2m1_encode(float y);
float ds4_e2m1_decode(uint8_t c);

/* One row of dim floats to its bytes and back (ds4_kvrow_bytes of them). */
void ds4_kvrow_encode(ds4_row_fmt f, const float *x, int dim, int nope, uint8_t *out);
void ds4_kvrow_decode(ds4_row_fmt f, const uint8_t *in, int dim, int nope, float *x);
/* x as the format stores it: encode then decode, in place. */
void ds4_kvrow_round(ds4_row_fmt f, float *x, int dim, int nope);

#ifdef __cplusplus
}
#endif

#endif
