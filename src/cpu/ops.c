/* ds4 — CPU reference primitives (see ops.h). */
#include "cpu/ops.h"

#include <math.h>
#include <string.h>

/* ------------------------------------------------------------------ norms */

void ds4_rmsnorm(const float *x, const float *w, int n, float eps, float *out) {
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * (double)x[i];
    const float inv = (float)(1.0 / sqrt(ss / n + (double)eps));
    if (w) {
        for (int i = 0; i < n; i++) out[i] = x[i] * inv * w[i];
    } else {
        for (int i = 0; i < n; i++) out[i] = x[i] * inv;
    }
}

/* ------------------------------------------------------------------ RoPE */

void ds4_rope_freqs(const ds4_hparams *hp, bool compressed, double *freqs) {
    const int R = hp->rope_dim, P = R / 2;
    const double base = compressed ? hp->compress_rope_base : hp->rope_base;
    for (int k = 0; k < P; k++) freqs[k] = pow(base, -2.0 * k / R);
    if (!compressed || hp->yarn_factor <= 1.0) return;
    /* YaRN: pairs below `lo` keep their frequency, pairs above `hi` are divided
     * by the factor, pairs between blend linearly. No magnitude scaling. */
    const double two_pi = 6.283185307179586;
    const double C = (double)hp->yarn_orig_ctx;
    double lo = floor(R * log(C / (hp->yarn_beta_fast * two_pi)) / (2.0 * log(base)));
    double hi = ceil(R * log(C / (hp->yarn_beta_slow * two_pi)) / (2.0 * log(base)));
    if (lo < 0) lo = 0;
    if (hi > R - 1) hi = R - 1;
    const double span = hi - lo > 0.001 ? hi - lo : 0.001;
    for (int k = 0; k < P; k++) {
        double r = (k - lo) / span;
        r = r < 0 ? 0 : r > 1 ? 1 : r;
        freqs[k] = freqs[k] * (1.0 - r) + freqs[k] / hp->yarn_factor * r;
    }
}

void ds4_rope_table(const double *freqs, int n_pairs, int64_t pos, float *cs) {
    for (int k = 0; k < n_pairs; k++) {
        const double phi = (double)pos * freqs[k];
        cs[2 * k] = (float)cos(phi);
        cs[2 * k + 1] = (float)sin(phi);
    }
}

void ds4_rope_tail(float *x, int len, int n_pairs, const float *cs, bool inverse) {
    float *t = x + len - 2 * n_pairs;
    for (int k = 0; k < n_pairs; k++) {
        const float c = cs[2 * k], s = inverse ? -cs[2 * k + 1] : cs[2 * k + 1];
        const float a = t[2 * k], b = t[2 * k + 1];
        t[2 * k] = a * c - b * s;
        t[2 * k + 1] = a * s + b * c;
    }
}

/* ------------------------------------------------------------------ FP8 / FP4 */

float ds4_e4m3_round(float y) {
    const float a = fabsf(y);
    float q;
    if (a < 0.015625f) {
        /* subnormal range: steps of 2^-9, round half to even on the code */
        q = nearbyintf(a * 512.0f) * (1.0f / 512.0f);
    } else {
        int e;
        frexpf(a, &e); /* a = m * 2^e, m in [0.5, 1): the leading bit is 2^(e-1) */
        const float step = ldexpf(1.0f, e - 1 - 3); /* 3 mantissa bits */
        q = nearbyintf(a / step) * step;        /* ties to even mantissa = even code */
        if (q > 448.0f) q = 448.0f;
    }
    return y < 0 ? -q : q;
}

/* 2^ceil(log2(v)) for v > 0, exact for the float v. */
static float pow2_ceil(float v) {
    int e;
    const float m = frexpf(v, &e); /* v = m * 2^e, m in [0.5, 1) */
    return ldexpf(1.0f, m == 0.5f ? e - 1 : e);
}

void ds4_fp8_sim(float *x, int n) {
    for (int b = 0; b + 64 <= n; b += 64) {
        float amax = 0.0f;
        for (int i = 0; i < 64; i++) amax = fmaxf(amax, fabsf(x[b + i]));
        amax = fmaxf(amax, 1e-4f);
        const float scale = pow2_ceil(amax / 448.0f);
        for (int i = 0; i < 64; i++) {
            float y = x[b + i] / scale;
            y = y > 448.0f ? 448.0f : y < -448.0f ? -448.0f : y;
            x[b + i] = ds4_e4m3_round(y) * scale;
        }
    }
}

float ds4_e2m1_round(float y) {
    const float a = fabsf(y);
    float q;
    /* midpoints between {0, .5, 1, 1.5, 2, 3, 4, 6}; a tie goes to the even index */
    if (a <= 0.25f) q = 0.0f;
    else if (a < 0.75f) q = 0.5f;
    else if (a <= 1.25f) q = 1.0f;
    else if (a < 1.75f) q = 1.5f;
    else if (a <= 2.5f) q = 2.0f;
    else if (a < 3.5f) q = 3.0f;
    else if (a <= 5.0f) q = 4.0f;
    else q = 6.0f;
    return y < 0 ? -q : q;
}

void ds4_fp4_sim(float *x, int n) {
    for (int b = 0; b + 32 <= n; b += 32) {
        float amax = 0.0f;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(x[b + i]));
        amax = fmaxf(amax, 7.052966104933725e-38f);
        const float scale = pow2_ceil(amax / 6.0f);
        for (int i = 0; i < 32; i++) {
            float y = x[b + i] / scale;
            y = y > 6.0f ? 6.0f : y < -6.0f ? -6.0f : y;
            x[b + i] = ds4_e2m1_round(y) * scale;
        }
    }
}

void ds4_hadamard(float *x, int n) {
    for (int h = 1; h < n; h *= 2) {
        for (int i = 0; i < n; i += 2 * h) {
            for (int j = i; j < i + h; j++) {
                const float a = x[j], b = x[j + h];
                x[j] = a + b;
                x[j + h] = a - b;
            }
        }
    }
    const float s = (float)(1.0 / sqrt((double)n));
    for (int i = 0; i < n; i++) x[i] *= s;
}

/* ------------------------------------------------------------------ activations */

float ds4_softplus(float z) {
    if (z > 20.0f) return z;
    if (z < -20.0f) return expf(z);
    return log1pf(expf(z));
}

float ds4_sigmoid(float z) { return 1.0f / (1.0f + expf(-z)); }

float ds4_silu(float z) { return z * ds4_sigmoid(z); }

/* ------------------------------------------------------------------ router */

void ds4_route_pick(const float *prob, const float *bias, int E, int K, const int32_t *hash_ids, float scale,
                    float *sel, int32_t *ids, float *w) {
    if (hash_ids) {
        for (int k = 0; k < K; k++) ids[k] = hash_ids[k];
    } else {
        for (int x = 0; x < E; x++) sel[x] = prob[x] + (bias ? bias[x] : 0.0f);
        for (int k = 0; k < K; k++) {
            int best = 0;
            for (int x = 1; x < E; x++)
                if (sel[x] > sel[best]) best = x;
            ids[k] = best;
            sel[best] = -INFINITY;
        }
    }
    float sum = 0.0f;
    for (int k = 0; k < K; k++) sum += prob[ids[k]];
    if (sum < 6.103515625e-5f) sum = 6.103515625e-5f;
    for (int k = 0; k < K; k++) w[k] = prob[ids[k]] / sum * scale;
}

/* ------------------------------------------------------------------ hyper-connections */

void ds4_hc_split(const float *mix, const float *scale, const float *base, int hc, int iters, float eps, float *pre,
                  float *post, float *M) {
    for (int i = 0; i < hc; i++) {
        pre[i] = ds4_sigmoid(mix[i] * scale[0] + base[i]) + eps;
        post[i] = 2.0f * ds4_sigmoid(mix[hc + i] * scale[1] + base[hc + i]);
    }
    /* comb logits, row softmax, + eps */
    for (int i = 0; i < hc; i++) {
        float *row = M + i * hc;
        float mx = -INFINITY;
        for (int j = 0; j < hc; j++) {
            row[j] = mix[2 * hc + i * hc + j] * scale[2] + base[2 * hc + i * hc + j];
            mx = fmaxf(mx, row[j]);
        }
        float sum = 0.0f;
        for (int j = 0; j < hc; j++) {
            row[j] = expf(row[j] - mx);
            sum += row[j];
        }
        for (int j = 0; j < hc; j++) row[j] = row[j] / sum + eps;
    }
    /* Sinkhorn: one column pass, then (iters-1) x (row pass, column pass) */
    for (int it = 0; it < iters; it++) {
        if (it > 0) {
            for (int i = 0; i < hc; i++) {
                float s = 0.0f;
                for (int j = 0; j < hc; j++) s += M[i * hc + j];
                for (int j = 0; j < hc; j++) M[i * hc + j] /= s + eps;
            }
        }
        for (int j = 0; j < hc; j++) {
            float s = 0.0f;
            for (int i = 0; i < hc; i++) s += M[i * hc + j];
            for (int i = 0; i < hc; i++) M[i * hc + j] /= s + eps;
        }
    }
}
