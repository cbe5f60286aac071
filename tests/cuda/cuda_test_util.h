/* ds4 — helpers shared by the files of ds4-cuda-test: a check line per
 * measurement, device copies, random inputs. */
#ifndef DS4_CUDA_TEST_UTIL_H
#define DS4_CUDA_TEST_UTIL_H

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend/backend.h"
#include "cpu/matmul.h"
#include "cpu/ops.h"
#include "cuda/cuda_kernels.h"
#include "gguf/gguf.h"
#include "test_sh.h"
#include "util/rng.h"

extern int g_fail; /* failed checks so far */

extern char g_bin_dir[4096]; /* where ds4-synth is (this program's directory) */

/* The larger of m and e, a NaN as infinity (fmax would drop it and let a
 * NaN result pass). */
static inline double fold_max(double m, double e) { return e <= m ? m : isnan(e) ? INFINITY : e; }

/* Largest |gpu - cpu| / (|w_row| |x|) over rows [0, rows) of matrix rows
 * row0.. and activations x: the rounding bound of a dot product. */
static inline double dot_error(const ds4_tensor *t, int64_t row0, int64_t rows, const float *x, const float *yg,
                               const float *yc) {
    const int64_t K = t->ne[0];
    float *row = (float *)malloc(sizeof(float) * K);
    double xx = 0, worst = 0;
    for (int64_t k = 0; k < K; k++) xx += (double)x[k] * x[k];
    for (int64_t r = 0; r < rows; r++) {
        ds4_tensor_row(t, row0 + r, row);
        double ww = 0;
        for (int64_t k = 0; k < K; k++) ww += (double)row[k] * row[k];
        worst = fold_max(worst, fabs((double)yg[r] - yc[r]) / (sqrt(ww * xx) + 1e-30));
    }
    free(row);
    return worst;
}

/* A session or exit: the tests cannot go on without one. kv: the KV
 * cache's type (--kv-type; DS4_KV_DEFAULT follows oracle). */
static inline ds4_session *session_kv(ds4_model *m, ds4_backend_kind be, int ctx, int chunk, bool oracle,
                                      ds4_kv_type kv) {
    ds4_session_opts o;
    ds4_session_opts_default(&o);
    o.ctx = ctx;
    o.prefill_chunk = chunk;
    o.oracle = oracle;
    o.backend = be;
    o.kv_type = kv;
    ds4_err err = {{0}};
    ds4_session *s = ds4_session_create(m, &o, &err);
    if (!s) {
        fprintf(stderr, "session: %s\n", err.msg);
        exit(1);
    }
    return s;
}
static inline ds4_session *session(ds4_model *m, ds4_backend_kind be, int ctx, int chunk, bool oracle) {
    return session_kv(m, be, ctx, chunk, oracle, DS4_KV_DEFAULT);
}

static inline int32_t *rand_tokens(int n, int V, uint64_t seed) {
    ds4_rng r;
    ds4_rng_seed(&r, seed);
    int32_t *t = malloc(sizeof(int32_t) * n);
    for (int i = 0; i < n; i++) t[i] = (int32_t)ds4_rng_below(&r, (uint32_t)V);
    return t;
}

static inline void check(bool ok, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%s ", ok ? "ok  " : "FAIL");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    if (!ok) g_fail++;
}

static inline void *to_dev(const void *h, size_t bytes) {
    void *d = NULL;
    if (cudaMalloc(&d, bytes ? bytes : 16) != cudaSuccess) {
        fprintf(stderr, "cudaMalloc failed\n");
        exit(1);
    }
    if (h && bytes) cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice);
    return d;
}
static inline void from_dev(void *h, const void *d, size_t bytes) {
    cudaDeviceSynchronize();
    const char *e = ds4k_last_error();
    if (e) {
        fprintf(stderr, "CUDA error: %s\n", e);
        exit(1);
    }
    cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost);
}
static inline float *rnd(ds4_rng *r, size_t n, float scale) {
    float *p = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = ds4_rng_normal(r) * scale;
    return p;
}

/* A compressor's random inputs on the device: n tokens of projections (kv,
 * gate: [n][W]), the APE ([ratio][W], f32), the norm (around 1), the
 * published model's RoPE table, an initial state (st0, on the host:
 * 2 slots W floats, st_kv then st_score). */
typedef struct cmp_inputs {
    float *kv, *gate, *norm, *st0;
    double *freqs;
    ds4_dw ape;
} cmp_inputs;
static inline cmp_inputs cmp_inputs_make(ds4_rng *r, int n, int W, int ratio, int width, int slots) {
    ds4_hparams hp;
    ds4_hparams_published(&hp);
    double fr[32];
    ds4_rope_freqs(&hp, true, fr);
    float *kv = rnd(r, (size_t)n * W, 1.0f), *gate = rnd(r, (size_t)n * W, 1.0f), *ape = rnd(r, (size_t)ratio * W, 0.5f);
    float *norm = rnd(r, width, 0.1f);
    cmp_inputs c = {0};
    c.st0 = rnd(r, (size_t)2 * slots * W, 1.0f);
    for (int i = 0; i < width; i++) norm[i] += 1.0f;
    c.kv = to_dev(kv, sizeof(float) * n * W), c.gate = to_dev(gate, sizeof(float) * n * W);
    c.norm = to_dev(norm, sizeof(float) * width);
    c.freqs = to_dev(fr, sizeof(fr));
    c.ape = (ds4_dw){DS4_TYPE_F32, to_dev(ape, sizeof(float) * ratio * W), W, ratio};
    free(kv), free(gate), free(ape), free(norm);
    return c;
}
static inline void cmp_inputs_free(cmp_inputs *c) {
    cudaFree(c->kv), cudaFree(c->gate), cudaFree(c->norm), cudaFree(c->freqs), cudaFree((void *)c->ape.ptr);
    free(c->st0);
}

/* Tolerance of a one-token product, as |diff| / (|w| |x|) against the CPU.
 * Float dot products differ from the CPU only in rounding order (~1e-7).
 * The streaming kernel's integer dot products split each 32-slice of x into
 * two int8 vectors, x = sx (q1 + q2 / 256) + e with |e| <= sx / 512 and
 * sx = max|x| / 127; for |x| ~ N(0,1) slices (max ~ 4 sigma) that bounds
 * |e| / |x| by 6e-5 if every error lined up with w, and ~ 2e-6 was measured
 * in 1024- to 4096-long dots. 1e-5 sits between the two. */
static inline double gemv_tolerance(int type) {
    const bool integer_dot = type == DS4_TYPE_Q8_0 || type == DS4_TYPE_Q2_K || type == DS4_TYPE_Q4_K ||
                             type == DS4_TYPE_IQ2_XXS;
    return integer_dot ? 1e-5 : 1e-6;
}

/* The checks of the streaming decode GEMV at the model's shapes, and its
 * timing against the general kernel (test_cuda_gemv.c). */
void test_gemv_stream(ds4_rng *r);
void test_gemv_pairs(ds4_rng *r);
void test_gemv_convert(void);
void test_gemv_ksplit(ds4_rng *r);
void test_hc_mix_parts(ds4_rng *r);
void test_hc_mix_batched(ds4_rng *r);
void test_hc_post_mix(ds4_rng *r);
void test_hc_post_collapse(ds4_rng *r);
void test_gemv_prep(ds4_rng *r);
void test_gemv_heads(ds4_rng *r);
void test_router_matmul(ds4_rng *r);
void test_gemv_early(void);

/* Prefill-only kernels vs the kernels they replace (test_cuda_prefill.c). */
void test_prefill_kernels(ds4_rng *r);

/* Decode attention, indexer scores and top-k vs plain C references
 * (test_cuda_attn.c). */
void test_attention_kernels(ds4_rng *r);
/* the KV cache's row formats: stores against the CPU twin (test_cuda_kvrow.c) */
void test_kvrow_kernels(ds4_rng *r);

/* The device pick vs the host argmax, and chained greedy decoding vs one
 * step at a time (test_cuda_chain.c). */
void test_pick_kernel(ds4_rng *r);
void test_chained_decode(void);
void test_engine_chain(void);
void pick_bench(void);
int topk_bench(void);
int gemv_bench(void);

#endif
