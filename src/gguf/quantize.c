/* ds4 — quantizers: f32 rows to the block formats of MODEL.md §14.
 *
 * Used by the synthetic-model tool and the tests, never on the inference
 * path, so the K-quant and IQ2_XXS quantizers are plain search quantizers:
 * simple, deterministic, and always producing valid blocks (finite f16
 * scales, codes in range, IQ2 sign patterns of even parity). Quality is
 * secondary; tests/unit/gguf/test_quant.c measures it.
 *
 * Robustness: inputs are sanitized per element (NaN -> 0, magnitudes clamped
 * to 1e9, far beyond what any block format can represent with an f16 scale),
 * so no NaN or infinity can reach a scale or a float-to-int conversion. */
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf/quant.h"
#include "util/f16.h"

/* ---------------------------------------------------------------- helpers */

#define F16_MAX 65504.0f
#define SANE_MAX 1e9f

static inline void wr16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline void wr32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static inline float sane(float v) {
    if (v != v) return 0.0f;
    return v > SANE_MAX ? SANE_MAX : v < -SANE_MAX ? -SANE_MAX : v;
}

/* round(v) clamped to [lo, hi]; v is finite here, the clamp happens before
 * the conversion so it is always defined. */
static inline int round_clamp(float v, int lo, int hi) {
    const float r = roundf(v);
    if (!(r >= (float)lo)) return lo;
    if (r > (float)hi) return hi;
    return (int)r;
}

/* A non-negative scale as f16: finite (clamped to the largest f16), 0 for
 * anything not positive. */
static inline uint16_t scale_f16(float d) {
    if (!(d > 0.0f)) return 0;
    if (d >= F16_MAX) return ds4_f32_to_f16(F16_MAX);
    return ds4_f32_to_f16(d);
}

/* ---------------------------------------------------------------- Q8_0 */

/* d = max|x| / 127 (stored as f16), q = round(x / d) with the stored d. */
static void quant_q8_0_block(const float *x, uint8_t *b) {
    float xs[32], amax = 0.0f;
    for (int i = 0; i < 32; i++) {
        xs[i] = sane(x[i]);
        amax = fmaxf(amax, fabsf(xs[i]));
    }
    const uint16_t h = scale_f16(amax / 127.0f);
    const float d = ds4_f16_to_f32(h);
    wr16(b, h);
    for (int i = 0; i < 32; i++) {
        const int q = d > 0.0f ? round_clamp(xs[i] / d, -127, 127) : 0;
        b[2 + i] = (uint8_t)(int8_t)q;
    }
}

/* ---------------------------------------------------------------- K-quant sub-block fit
 *
 * Fit x[0..n) ~ a*L - m with integer codes L in [0, nmax], a >= 0 and m >= 0
 * (the formats subtract a non-negative min). Candidate grids: the range
 * [min(0, min x), max x] divided into nmax + delta steps for a few deltas;
 * for each, assign codes, then solve the 2x2 least-squares problem for (a, m)
 * and keep the candidate with the smallest squared error. */
static void fit_affine(const float *x, int n, int nmax, float *scale, float *min) {
    float lo = 0.0f, hi = x[0];
    for (int i = 0; i < n; i++) {
        lo = fminf(lo, x[i]);
        hi = fmaxf(hi, x[i]);
    }
    *scale = 0.0f;
    *min = -lo;
    if (!(hi > lo)) return; /* all equal to lo <= 0: exactly a = 0, m = -lo */

    float best_err = INFINITY;
    for (int t = -5; t <= 10; t++) {
        const float iscale = ((float)nmax + 0.1f * (float)t) / (hi - lo);
        uint8_t L[32];
        float sl = 0, sl2 = 0, sx = 0, sxl = 0;
        for (int i = 0; i < n; i++) {
            L[i] = (uint8_t)round_clamp(iscale * (x[i] - lo), 0, nmax);
            sl += L[i];
            sl2 += (float)L[i] * L[i];
            sx += x[i];
            sxl += x[i] * L[i];
        }
        /* least squares for x ~ a*L + c, then c <= 0 enforced (c = -m) */
        float a, c;
        const float det = (float)n * sl2 - sl * sl;
        if (det > 0.0f) {
            a = ((float)n * sxl - sl * sx) / det;
            c = (sl2 * sx - sl * sxl) / det;
        } else {
            a = 0.0f;
            c = sx / (float)n;
        }
        if (c > 0.0f) {
            c = 0.0f;
            a = sl2 > 0.0f ? sxl / sl2 : 0.0f;
        }
        if (a < 0.0f) a = 0.0f;
        float err = 0.0f;
        for (int i = 0; i < n; i++) {
            const float e = a * (float)L[i] + c - x[i];
            err += e * e;
        }
        if (err < best_err) {
            best_err = err;
            *scale = a;
            *min = -c;
        }
    }
}

/* ---------------------------------------------------------------- Q2_K */

/* 16 sub-blocks of 16: value = (d*sc)*q - dmin*m, sc, m in 0..15, q in 0..3. */
static void quant_q2_k_block(const float *x, uint8_t *b) {
    float xs[256], sc_f[16], mn_f[16], max_sc = 0.0f, max_mn = 0.0f;
    for (int i = 0; i < 256; i++) xs[i] = sane(x[i]);
    for (int j = 0; j < 16; j++) {
        fit_affine(xs + 16 * j, 16, 3, &sc_f[j], &mn_f[j]);
        max_sc = fmaxf(max_sc, sc_f[j]);
        max_mn = fmaxf(max_mn, mn_f[j]);
    }
    const uint16_t hd = scale_f16(max_sc / 15.0f), hm = scale_f16(max_mn / 15.0f);
    const float d = ds4_f16_to_f32(hd), dmin = ds4_f16_to_f32(hm);
    uint8_t L[256];
    for (int j = 0; j < 16; j++) {
        const int sc = d > 0.0f ? round_clamp(sc_f[j] / d, 0, 15) : 0;
        const int m = dmin > 0.0f ? round_clamp(mn_f[j] / dmin, 0, 15) : 0;
        b[j] = (uint8_t)(sc | (m << 4));
        /* codes from the stored (rounded) factors, as the dequantizer sees them */
        const float dl = d * (float)sc, ml = dmin * (float)m;
        for (int i = 0; i < 16; i++)
            L[16 * j + i] = (uint8_t)(dl > 0.0f ? round_clamp((xs[16 * j + i] + ml) / dl, 0, 3) : 0);
    }
    /* byte qs[32*half + l] holds elements 128*half + l + 32*k in bits 2k..2k+1 */
    uint8_t *qs = b + 16;
    for (int half = 0; half < 2; half++)
        for (int l = 0; l < 32; l++) {
            const uint8_t *e = L + 128 * half + l;
            qs[32 * half + l] = (uint8_t)(e[0] | (e[32] << 2) | (e[64] << 4) | (e[96] << 6));
        }
    wr16(b + 80, hd);
    wr16(b + 82, hm);
}

/* ---------------------------------------------------------------- Q4_K */

/* 8 sub-blocks of 32: value = (d*sc)*q - dmin*m, sc, m in 0..63, q in 0..15. */
static void quant_q4_k_block(const float *x, uint8_t *b) {
    float xs[256], sc_f[8], mn_f[8], max_sc = 0.0f, max_mn = 0.0f;
    for (int i = 0; i < 256; i++) xs[i] = sane(x[i]);
    for (int j = 0; j < 8; j++) {
        fit_affine(xs + 32 * j, 32, 15, &sc_f[j], &mn_f[j]);
        max_sc = fmaxf(max_sc, sc_f[j]);
        max_mn = fmaxf(max_mn, mn_f[j]);
    }
    const uint16_t hd = scale_f16(max_sc / 63.0f), hm = scale_f16(max_mn / 63.0f);
    const float d = ds4_f16_to_f32(hd), dmin = ds4_f16_to_f32(hm);
    int sc[8], m[8];
    uint8_t L[256];
    for (int j = 0; j < 8; j++) {
        sc[j] = d > 0.0f ? round_clamp(sc_f[j] / d, 0, 63) : 0;
        m[j] = dmin > 0.0f ? round_clamp(mn_f[j] / dmin, 0, 63) : 0;
        const float dl = d * (float)sc[j], ml = dmin * (float)m[j];
        for (int i = 0; i < 32; i++)
            L[32 * j + i] = (uint8_t)(dl > 0.0f ? round_clamp((xs[32 * j + i] + ml) / dl, 0, 15) : 0);
    }
    wr16(b, hd);
    wr16(b + 2, hm);
    /* 12 bytes of packed 6-bit values: the inverse of the unpacking in §14.4 */
    uint8_t *s = b + 4;
    for (int j = 0; j < 4; j++) {
        s[j] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6));
        s[j + 4] = (uint8_t)(m[j] | ((m[j + 4] >> 4) << 6));
        s[j + 8] = (uint8_t)((sc[j + 4] & 15) | ((m[j + 4] & 15) << 4));
    }
    /* chunk c of 64 elements: low nibbles the first 32, high nibbles the next 32 */
    uint8_t *qs = b + 16;
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) qs[32 * c + l] = (uint8_t)(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
}

/* ---------------------------------------------------------------- IQ2_XXS
 *
 * Per 8-element group: the sign pattern is taken from x; IQ2_XXS can only
 * store patterns with an even number of negatives, so if the count is odd the
 * element of smallest |x| gets the wrong sign (the cheapest one to get
 * wrong). With signs s_j fixed, the target magnitudes are t_j = s_j * x_j
 * (t_j = -|x_j| for the flipped element) and the error of grid entry g at
 * sub-block scale db is
 *     sum_j (db*G[g][j] - t_j)^2 = db^2*|G[g]|^2 - 2*db*<G[g], t> + |t|^2,
 * so the dot products <G[g], t> are computed once per group and each scale
 * candidate costs one pass over the 256 entries.
 *
 * Scales: pass 1 finds for every sub-block the best free scale db_b among a
 * few candidates proportional to its max|x|; the block scale d (f16) is set
 * so that the largest db_b is reachable with ls = 15 (db = d*31/8); pass 2
 * tries all 16 codes ls per sub-block with the exact dequantizer factor
 * db = (d*(0.5+ls))*0.25 and keeps the lowest error. */

typedef struct iq2_group {
    float dot[256]; /* <G[g], t> */
    float tt;       /* |t|^2 */
    uint8_t sign7;  /* sign index: bits 0..6 of the even-parity pattern */
} iq2_group;

typedef struct iq2_tables {
    float mag[256][8];
    float norm2[256];
    iq2_group groups[32]; /* work space of the block being quantized */
} iq2_tables;

static void iq2_tables_init(iq2_tables *t) {
    for (int g = 0; g < 256; g++) {
        float s = 0.0f;
        for (int j = 0; j < 8; j++) {
            t->mag[g][j] = (float)((ds4_iq2xxs_grid[g] >> (8 * j)) & 0xff);
            s += t->mag[g][j] * t->mag[g][j];
        }
        t->norm2[g] = s;
    }
}

static void iq2_group_init(const iq2_tables *t, const float *x, iq2_group *gr) {
    unsigned pattern = 0;
    int nneg = 0, smallest = 0;
    for (int j = 0; j < 8; j++) {
        if (x[j] < 0.0f) {
            pattern |= 1u << j;
            nneg++;
        }
        if (fabsf(x[j]) < fabsf(x[smallest])) smallest = j;
    }
    if (nneg & 1) pattern ^= 1u << smallest;
    float tv[8], tt = 0.0f;
    for (int j = 0; j < 8; j++) {
        tv[j] = (pattern >> j) & 1 ? -x[j] : x[j];
        tt += tv[j] * tv[j];
    }
    for (int g = 0; g < 256; g++) {
        float s = 0.0f;
        for (int j = 0; j < 8; j++) s += t->mag[g][j] * tv[j];
        gr->dot[g] = s;
    }
    gr->tt = tt;
    gr->sign7 = (uint8_t)(pattern & 127); /* bit 7 is implied by the even parity */
}

/* Best grid entry for one group at scale db; returns its squared error. */
static float iq2_best(const iq2_tables *t, const iq2_group *gr, float db, int *best) {
    float be = INFINITY;
    int bg = 0;
    const float db2 = db * db;
    for (int g = 0; g < 256; g++) {
        const float e = db2 * t->norm2[g] - 2.0f * db * gr->dot[g];
        if (e < be) {
            be = e;
            bg = g;
        }
    }
    *best = bg;
    return be + gr->tt;
}

static void quant_iq2_xxs_block(iq2_tables *t, const float *x, uint8_t *b) {
    float xs[256], amax_sb[8], amax = 0.0f;
    for (int i = 0; i < 256; i++) xs[i] = sane(x[i]);
    for (int sb = 0; sb < 8; sb++) {
        amax_sb[sb] = 0.0f;
        for (int i = 0; i < 32; i++) amax_sb[sb] = fmaxf(amax_sb[sb], fabsf(xs[32 * sb + i]));
        amax = fmaxf(amax, amax_sb[sb]);
    }
    memset(b, 0, 66);
    if (amax == 0.0f) return; /* d = 0: every value dequantizes to +0 */

    iq2_group *groups = t->groups;
    for (int k = 0; k < 32; k++) iq2_group_init(t, xs + 8 * k, &groups[k]);

    /* pass 1: free scale per sub-block */
    float max_db = 0.0f;
    for (int sb = 0; sb < 8; sb++) {
        if (amax_sb[sb] == 0.0f) continue;
        float best_err = INFINITY, best_db = 0.0f;
        for (int c = 0; c < 16; c++) {
            const float db = amax_sb[sb] * (0.5f + 0.07f * (float)c) / 43.0f;
            float err = 0.0f;
            for (int i = 0; i < 4; i++) {
                int g;
                err += iq2_best(t, &groups[4 * sb + i], db, &g);
            }
            if (err < best_err) {
                best_err = err;
                best_db = db;
            }
        }
        max_db = fmaxf(max_db, best_db);
    }
    const uint16_t hd = scale_f16(max_db * 8.0f / 31.0f);
    const float d = ds4_f16_to_f32(hd);
    if (d == 0.0f) return; /* the block is below f16 resolution: all zeros */
    wr16(b, hd);

    /* pass 2: the best code ls per sub-block with the exact factor */
    for (int sb = 0; sb < 8; sb++) {
        float best_err = INFINITY;
        int best_ls = 0, best_g[4] = {0, 0, 0, 0};
        for (int ls = 0; ls < 16; ls++) {
            const float db = d * (0.5f + (float)ls) * 0.25f;
            float err = 0.0f;
            int g[4];
            for (int i = 0; i < 4; i++) err += iq2_best(t, &groups[4 * sb + i], db, &g[i]);
            if (err < best_err) {
                best_err = err;
                best_ls = ls;
                memcpy(best_g, g, sizeof(g));
            }
        }
        uint32_t a0 = 0, a1 = (uint32_t)best_ls << 28;
        for (int i = 0; i < 4; i++) {
            a0 |= (uint32_t)best_g[i] << (8 * i);
            a1 |= (uint32_t)groups[4 * sb + i].sign7 << (7 * i);
        }
        wr32(b + 2 + 8 * sb, a0);
        wr32(b + 2 + 8 * sb + 4, a1);
    }
}

/* ---------------------------------------------------------------- entry point */

void ds4_quantize_row(int type, const float *src, void *dst, int64_t n) {
    const ds4_type_traits *tr = ds4_type_info(type);
    if (!tr || !tr->is_float || n < 0 || n % tr->block != 0) {
        /* a caller bug (see check_row in quant.c): stop rather than write out of bounds */
        fprintf(stderr, "ds4: ds4_quantize_row: bad arguments (type %s, n %lld)\n", ds4_type_name(type),
                (long long)n);
        abort();
    }
    uint8_t *out = dst;
    const int64_t nb = n / tr->block;
    switch (type) {
    case DS4_TYPE_F32: memcpy(dst, src, (size_t)n * sizeof(float)); return;
    case DS4_TYPE_F16:
        for (int64_t i = 0; i < n; i++) wr16(out + 2 * i, ds4_f32_to_f16(src[i]));
        return;
    case DS4_TYPE_BF16:
        for (int64_t i = 0; i < n; i++) wr16(out + 2 * i, ds4_f32_to_bf16(src[i]));
        return;
    case DS4_TYPE_Q8_0:
        for (int64_t i = 0; i < nb; i++) quant_q8_0_block(src + 32 * i, out + 34 * i);
        return;
    case DS4_TYPE_Q2_K:
        for (int64_t i = 0; i < nb; i++) quant_q2_k_block(src + 256 * i, out + 84 * i);
        return;
    case DS4_TYPE_Q4_K:
        for (int64_t i = 0; i < nb; i++) quant_q4_k_block(src + 256 * i, out + 144 * i);
        return;
    case DS4_TYPE_IQ2_XXS: {
        iq2_tables *t = malloc(sizeof(*t)); /* ~41 KiB: kept off the stack */
        if (!t) {
            fprintf(stderr, "ds4: ds4_quantize_row: out of memory\n");
            abort();
        }
        iq2_tables_init(t);
        for (int64_t i = 0; i < nb; i++) quant_iq2_xxs_block(t, src + 256 * i, out + 66 * i);
        free(t);
        return;
    }
    default: return;
    }
}
