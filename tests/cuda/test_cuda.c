/* ds4-cuda-test — the CUDA backend against its CPU twins.
 *
 *   ds4-cuda-test kernels   every kernel vs its CPU twin on random inputs
 *   ds4-cuda-test model     tiny models: CUDA vs the transformers fixtures
 *                           (oracle mode) and vs the CPU backend (default
 *                           mode) for prefill chunks 1/7/2048/4096, decode,
 *                           snapshot/restore; bitwise determinism;
 *                           chained greedy decoding vs one step at a time
 *   ds4-cuda-test           both
 *   ds4-cuda-test chain     only the pick kernel and the chained decoding
 *   ds4-cuda-test gemv-bench  decode-shaped GEMV and pick timings (not a test)
 *   ds4-cuda-test topk-bench  the decode top-k's timings at 513 to 50,000 rows (not a test)
 *
 * Plain C (the GPU machine has no cmocka). Run from the source tree; the
 * ds4-synth of the same build directory makes the models. Prints one line
 * per check with the measured error; exits 1 on any failure. */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "backend/backend.h"
#include "cpu/matmul.h"
#include "cpu/ops.h"
#include "cuda/cuda_kernels.h"
#include "gguf/quant.h"
#include "model/model.h"
#include "util/f16.h"
#include "util/rng.h"

#include "cuda_test_util.h"

int g_fail;
char g_bin_dir[4096] = "build-cuda/bin";

/* ------------------------------------------------------------------ kernels */

static void test_matmul(ds4_rng *r) {
    const int types[] = {DS4_TYPE_F32, DS4_TYPE_F16, DS4_TYPE_BF16, DS4_TYPE_Q8_0, DS4_TYPE_Q2_K, DS4_TYPE_Q4_K, DS4_TYPE_IQ2_XXS};
    const int ns[] = {1, 5, 8, 9, 70};
    const int64_t K = 512, N = 40, r0 = 3, rows = 37, ldx = K + 32;
    for (size_t ti = 0; ti < sizeof(types) / sizeof(types[0]); ti++) {
        const int type = types[ti];
        const size_t rb = ds4_row_bytes(type, K);
        uint8_t *w = malloc(rb * N);
        float *wf = rnd(r, (size_t)(K * N), 0.05f);
        for (int64_t i = 0; i < N; i++) ds4_quantize_row(type, wf + i * K, w + i * rb, K);
        ds4_tensor t = {.name = "w", .type = type, .n_dims = 2, .ne = {K, N, 1, 1}, .data = w, .size = rb * N};
        void *dw_ = to_dev(w, rb * N);
        ds4_dw d = {type, dw_, K, N};
        double worst = 0, worst1 = 0; /* n > 1, n = 1 (the streaming kernel for row layouts it takes) */
        for (size_t ni = 0; ni < sizeof(ns) / sizeof(ns[0]); ni++) {
            const int n = ns[ni];
            float *x = rnd(r, (size_t)(n * ldx), 1.0f), *yc = calloc((size_t)n * rows, 4), *yg = calloc((size_t)n * rows, 4);
            float *scratch = malloc(sizeof(float) * DS4_MM_ROW_BLOCK * K);
            ds4_matmul_serial(&t, r0, rows, x, ldx, n, yc, rows, scratch);
            float *dx = to_dev(x, sizeof(float) * n * ldx), *dy = to_dev(NULL, sizeof(float) * n * rows);
            ds4k_matmul(&d, r0, rows, dx, ldx, n, dy, rows, NULL);
            from_dev(yg, dy, sizeof(float) * n * rows);
            float *row = malloc(sizeof(float) * K);
            for (int t2 = 0; t2 < n; t2++) {
                double xx = 0;
                for (int64_t k2 = 0; k2 < K; k2++) xx += (double)x[t2 * ldx + k2] * x[t2 * ldx + k2];
                for (int64_t r2 = 0; r2 < rows; r2++) {
                    ds4_tensor_row(&t, r0 + r2, row);
                    double ww = 0;
                    for (int64_t k2 = 0; k2 < K; k2++) ww += (double)row[k2] * row[k2];
                    const double e = fabs(yg[t2 * rows + r2] - yc[t2 * rows + r2]) / (sqrt(ww * xx) + 1e-30);
                    if (n == 1 && e > worst1) worst1 = e;
                    if (n > 1 && e > worst) worst = e;
                }
            }
            free(row);
            cudaFree(dx);
            cudaFree(dy);
            free(x);
            free(yc);
            free(yg);
            free(scratch);
        }
        check(worst < 1e-6, "matmul %-8s n=5..70: max |diff| / (|w| |x|) %.2e", ds4_type_name(type), worst);
        check(worst1 < gemv_tolerance(type), "matmul %-8s n=1:     max |diff| / (|w| |x|) %.2e (tolerance %.0e)",
              ds4_type_name(type), worst1, gemv_tolerance(type));
        cudaFree(dw_);
        free(w);
        free(wf);
    }
}

static void test_moe_matmul(ds4_rng *r) {
    const int E = 4, rows = 24, k = 3, n = 2;
    const int64_t K = 256;
    const int type = DS4_TYPE_IQ2_XXS;
    const size_t rb = ds4_row_bytes(type, K);
    float *wf = rnd(r, (size_t)(E * rows * K), 0.05f);
    uint8_t *w = malloc(rb * E * rows);
    for (int i = 0; i < E * rows; i++) ds4_quantize_row(type, wf + i * K, w + i * rb, K);
    ds4_tensor t = {.name = "e", .type = type, .n_dims = 3, .ne = {K, rows, E, 1}, .data = w, .size = rb * E * rows};
    int32_t ids[6] = {2, 0, 2, 3, 1, 0};
    float *x = rnd(r, (size_t)(n * k * K), 1.0f);
    float *yc = malloc(sizeof(float) * n * k * rows), *yg = malloc(sizeof(float) * n * k * rows);
    float *scratch = malloc(sizeof(float) * DS4_MM_ROW_BLOCK * K);
    void *dw_ = to_dev(w, rb * E * rows);
    ds4_dw d = {type, dw_, K, E * rows};
    int32_t *dids = to_dev(ids, sizeof(ids));
    float *dx = to_dev(x, sizeof(float) * n * k * K), *dy = to_dev(NULL, sizeof(float) * n * k * rows);
    double worst = 0;
    float *row = malloc(sizeof(float) * K);
    for (int per_pair = 0; per_pair < 2; per_pair++) {
        for (int i = 0; i < n * k; i++)
            ds4_matmul_serial(&t, (int64_t)ids[i] * rows, rows, x + (per_pair ? i : i / k) * K, K, 1, yc + i * rows, rows,
                              scratch);
        ds4k_moe_matmul(&d, rows, dids, n, k, dx, K, per_pair, dy, rows, NULL);
        from_dev(yg, dy, sizeof(float) * n * k * rows);
        for (int i = 0; i < n * k; i++) {
            const float *xi = x + (per_pair ? i : i / k) * K;
            double xx = 0;
            for (int64_t k2 = 0; k2 < K; k2++) xx += (double)xi[k2] * xi[k2];
            for (int r2 = 0; r2 < rows; r2++) {
                ds4_tensor_row(&t, (int64_t)ids[i] * rows + r2, row);
                double ww = 0;
                for (int64_t k2 = 0; k2 < K; k2++) ww += (double)row[k2] * row[k2];
                worst = fmax(worst, fabs(yg[i * rows + r2] - yc[i * rows + r2]) / (sqrt(ww * xx) + 1e-30));
            }
        }
    }
    free(row);
    check(worst < 1e-6, "moe_matmul (expert ids on the device): max |diff| / (|w| |x|) %.2e", worst);
    cudaFree(dw_);
    cudaFree(dids);
    cudaFree(dx);
    cudaFree(dy);
    free(w);
    free(wf);
    free(x);
    free(yc);
    free(yg);
    free(scratch);
}

/* The router against its CPU twin (ds4_route_pick): scores sqrt(softplus(logit))
 * within the two libms' rounding (1e-6); then, from the device's own scores,
 * the same ids (biased top-k, ties to the lower id, or the hash table's row)
 * and bitwise the same weights (the k scores added in slot order). Ties come
 * from logits rounded to a few values; E = 16 leaves lanes of the selecting
 * warp without an expert, E = 300 is not a multiple of 32. */
static void test_router(ds4_rng *r) {
    static const struct { int E, k, ties, bias, hash; } cs[] = {
        {256, 6, 0, 1, 0}, {256, 6, 1, 1, 0}, {256, 6, 1, 0, 0}, {16, 6, 1, 1, 0}, {300, 8, 0, 1, 0}, {256, 6, 0, 0, 1}};
    const int n = 3, vocab = 11;
    const float scale = 1.5f;
    for (size_t c = 0; c < sizeof(cs) / sizeof(cs[0]); c++) {
        const int E = cs[c].E, k = cs[c].k;
        float *lg = malloc(sizeof(float) * n * E), *bias = malloc(sizeof(float) * E);
        float *pg = malloc(sizeof(float) * n * E), *wg = malloc(sizeof(float) * n * k);
        int32_t *tab = malloc(sizeof(int32_t) * vocab * k), tok[3] = {4, 0, 10}, *ig = malloc(sizeof(int32_t) * n * k);
        for (int i = 0; i < n * E; i++) {
            const float x = ds4_rng_normal(r) * 2.0f;
            lg[i] = cs[c].ties ? roundf(x) : x;
        }
        for (int e = 0; e < E; e++) bias[e] = cs[c].ties ? 0.25f * (float)(e % 3) : 0.1f * ds4_rng_normal(r);
        for (int i = 0; i < vocab * k; i++) tab[i] = (int32_t)ds4_rng_below(r, (uint32_t)E);
        float *dl = to_dev(lg, sizeof(float) * n * E), *db = to_dev(bias, sizeof(float) * E);
        float *dw = to_dev(NULL, sizeof(float) * n * k);
        int32_t *dtab = to_dev(tab, sizeof(int32_t) * vocab * k), *dtok = to_dev(tok, sizeof(tok));
        int32_t *dids = to_dev(NULL, sizeof(int32_t) * n * k);
        ds4k_router(dl, n, E, k, cs[c].bias ? db : NULL, cs[c].hash ? dtab : NULL, dtok, scale, dids, dw, NULL);
        from_dev(pg, dl, sizeof(float) * n * E);
        from_dev(ig, dids, sizeof(int32_t) * n * k);
        from_dev(wg, dw, sizeof(float) * n * k);
        double perr = 0.0;
        int bad_ids = 0, bad_w = 0;
        float *sel = malloc(sizeof(float) * E);
        for (int t = 0; t < n; t++) {
            const float *p = pg + (int64_t)t * E;
            for (int e = 0; e < E; e++) {
                const float want = sqrtf(ds4_softplus(lg[t * E + e]));
                perr = fold_max(perr, fabs((double)p[e] - want) / fmax(fabs((double)want), 1e-30));
            }
            int32_t want_ids[8];
            float want_w[8];
            ds4_route_pick(p, cs[c].bias ? bias : NULL, E, k, cs[c].hash ? tab + tok[t] * k : NULL, scale, sel,
                           want_ids, want_w);
            for (int j = 0; j < k; j++) {
                bad_ids += ig[t * k + j] != want_ids[j];
                bad_w += memcmp(&wg[t * k + j], &want_w[j], sizeof(float)) != 0;
            }
        }
        check(perr <= 1e-6 && bad_ids == 0 && bad_w == 0,
              "router E %3d k %d%s%s%s: scores vs host %.2e (bound 1e-6), ids differing %d, weights not bitwise %d", E, k,
              cs[c].ties ? " ties" : "", cs[c].bias ? " bias" : "", cs[c].hash ? " hash" : "", perr, bad_ids, bad_w);
        cudaFree(dl), cudaFree(db), cudaFree(dw), cudaFree(dtab), cudaFree(dtok), cudaFree(dids);
        free(lg), free(bias), free(pg), free(wg), free(tab), free(ig), free(sel);
    }
}

/* The split and collapse of a batch (more than 8 tokens: the collapse
 * blocks and the Sinkhorn warps in launches of their own) against one token
 * at a time (a decode step's shared launch): bitwise, at the model's D. */
static void test_split_collapse_batch(ds4_rng *r) {
    const int n = 20, hc = 4, D = 4096, MIX = (2 + hc) * hc;
    float *H = rnd(r, (size_t)n * hc * D, 1.0f), *w = rnd(r, D, 0.1f), *mix = rnd(r, (size_t)n * MIX, 1.0f);
    float scale[3] = {0.8f, 1.2f, 0.9f}, *base = rnd(r, MIX, 0.5f);
    float *dH = to_dev(H, sizeof(float) * n * hc * D), *dw = to_dev(w, sizeof(float) * D);
    float *dmix = to_dev(mix, sizeof(float) * n * MIX), *dscale = to_dev(scale, sizeof(scale));
    float *dbase = to_dev(base, sizeof(float) * MIX);
    const size_t outs = (size_t)n * (hc + hc + hc * hc + D); /* pre, post, M, a */
    float *dout[2], *out[2];
    for (int v = 0; v < 2; v++) {
        dout[v] = to_dev(NULL, sizeof(float) * outs);
        cudaMemset(dout[v], 0, sizeof(float) * outs);
        out[v] = malloc(sizeof(float) * outs);
    }
    for (int v = 0; v < 2; v++) {
        float *pre = dout[v], *post = pre + n * hc, *M = post + n * hc, *a = M + n * hc * hc;
        if (v == 0) {
            ds4k_hc_split_collapse(dmix, dscale, dbase, hc, 20, 1e-6f, dH, D, dw, 1e-6f, n, pre, post, M, a, NULL);
        } else {
            for (int t = 0; t < n; t++)
                ds4k_hc_split_collapse(dmix + t * MIX, dscale, dbase, hc, 20, 1e-6f, dH + (size_t)t * hc * D, D, dw,
                                       1e-6f, 1, pre + t * hc, post + t * hc, M + t * hc * hc, a + (size_t)t * D, NULL);
        }
        from_dev(out[v], dout[v], sizeof(float) * outs);
    }
    bool same = memcmp(out[0], out[1], sizeof(float) * outs) == 0;
    /* the prefill path: the mixer in parts ([part][token][row], then each
     * part's sums of squares), added in part order by the kernel */
    const int S = 8;
    float *parts = rnd(r, (size_t)S * n * MIX, 1.0f), *ssq = rnd(r, (size_t)S * n, 1.0f);
    for (int i = 0; i < S * n; i++) ssq[i] = fabsf(ssq[i]) * 1000.0f;
    float *dparts = to_dev(parts, sizeof(float) * S * n * MIX), *dss = to_dev(ssq, sizeof(float) * S * n);
    float *tparts = malloc(sizeof(float) * S * MIX), *tss = malloc(sizeof(float) * S);
    float *dtp = to_dev(NULL, sizeof(float) * S * MIX), *dts = to_dev(NULL, sizeof(float) * S);
    for (int v = 0; v < 2; v++) {
        float *pre = dout[v], *post = pre + n * hc, *M = post + n * hc, *a = M + n * hc * hc;
        cudaMemset(dout[v], 0, sizeof(float) * outs);
        if (v == 0) {
            ds4k_hc_split_collapse_parts(dparts, dss, S, 1e-6f, dscale, dbase, hc, 20, 1e-6f, dH, D, dw, 1e-6f, n, pre,
                                         post, M, a, NULL);
        } else {
            for (int t = 0; t < n; t++) { /* token t's parts as a batch of one */
                for (int p = 0; p < S; p++) {
                    memcpy(tparts + p * MIX, parts + ((size_t)p * n + t) * MIX, sizeof(float) * MIX);
                    tss[p] = ssq[(size_t)p * n + t];
                }
                cudaMemcpy(dtp, tparts, sizeof(float) * S * MIX, cudaMemcpyHostToDevice);
                cudaMemcpy(dts, tss, sizeof(float) * S, cudaMemcpyHostToDevice);
                ds4k_hc_split_collapse_parts(dtp, dts, S, 1e-6f, dscale, dbase, hc, 20, 1e-6f, dH + (size_t)t * hc * D,
                                             D, dw, 1e-6f, 1, pre + t * hc, post + t * hc, M + t * hc * hc,
                                             a + (size_t)t * D, NULL);
                cudaDeviceSynchronize(); /* dtp and dts are rewritten for the next token */
            }
        }
        from_dev(out[v], dout[v], sizeof(float) * outs);
    }
    same &= memcmp(out[0], out[1], sizeof(float) * outs) == 0;
    check(same,
          "hc_split_collapse (and from mixer parts) of %d tokens at once (collapse and Sinkhorn launched apart) "
          "bitwise one at a time",
          n);
    cudaFree(dts), cudaFree(dtp), cudaFree(dss), cudaFree(dparts);
    free(tss), free(tparts), free(ssq), free(parts);
    for (int v = 0; v < 2; v++) {
        cudaFree(dout[v]);
        free(out[v]);
    }
    cudaFree(dbase);
    cudaFree(dscale);
    cudaFree(dmix);
    cudaFree(dw);
    cudaFree(dH);
    free(base);
    free(mix);
    free(w);
    free(H);
}

/* Whether each of token t's hc streams in H is bitwise y[t]. */
static bool every_stream_is(const float *H, const float *y, int n, int hc, int D) {
    for (int t = 0; t < n; t++)
        for (int j = 0; j < hc; j++)
            for (int d = 0; d < D; d++)
                if (H[(t * hc + j) * D + d] != y[t * D + d]) return false;
    return true;
}

/* n tokens: a decode-sized batch (5) or a prefill one (12: hc_post four
 * elements a thread, the split-collapse in two launches) */
static void test_norm_hc(ds4_rng *r, int n) {
    const int hc = 4, D = 256, MIX = (2 + hc) * hc;
    float *H = rnd(r, (size_t)n * hc * D, 1.0f), *w = rnd(r, D, 0.1f), *mix = rnd(r, (size_t)n * MIX, 1.0f);
    for (int i = 0; i < D; i++) w[i] += 1.0f;
    float scale[3] = {0.8f, 1.2f, 0.9f}, *base = rnd(r, MIX, 0.5f);
    /* rmsnorm */
    float *y = malloc(sizeof(float) * n * hc * D), *yg = malloc(sizeof(float) * n * hc * D);
    for (int t = 0; t < n; t++) ds4_rmsnorm(H + t * hc * D, NULL, hc * D, 1e-6f, y + t * hc * D);
    float *dH = to_dev(H, sizeof(float) * n * hc * D), *dy = to_dev(NULL, sizeof(float) * n * hc * D);
    ds4k_rmsnorm(dH, hc * D, NULL, n, hc * D, 1e-6f, dy, hc * D, NULL);
    from_dev(yg, dy, sizeof(float) * n * hc * D);
    double worst = 0;
    for (int i = 0; i < n * hc * D; i++) worst = fmax(worst, fabs(yg[i] - y[i]));
    check(worst < 1e-5, "rmsnorm (%d tokens): max abs diff %.2e", n, worst);
    /* HC split + collapse + norm */
    float pre[4], post[4], M[16], *a = malloc(sizeof(float) * n * D), *ag = malloc(sizeof(float) * n * D);
    float *preg = malloc(sizeof(float) * n * hc), *postg = malloc(sizeof(float) * n * hc), *Mg = malloc(sizeof(float) * n * hc * hc);
    float *dmix = to_dev(mix, sizeof(float) * n * MIX), *dscale = to_dev(scale, sizeof(scale)), *dbase = to_dev(base, sizeof(float) * MIX);
    float *dw = to_dev(w, sizeof(float) * D), *dpre = to_dev(NULL, sizeof(float) * n * hc), *dpost = to_dev(NULL, sizeof(float) * n * hc);
    float *dM = to_dev(NULL, sizeof(float) * n * hc * hc), *da = to_dev(NULL, sizeof(float) * n * D);
    ds4k_hc_split_collapse(dmix, dscale, dbase, hc, 20, 1e-6f, dH, D, dw, 1e-6f, n, dpre, dpost, dM, da, NULL);
    from_dev(ag, da, sizeof(float) * n * D);
    from_dev(preg, dpre, sizeof(float) * n * hc);
    from_dev(Mg, dM, sizeof(float) * n * hc * hc);
    double wa = 0, wm = 0;
    for (int t = 0; t < n; t++) {
        ds4_hc_split(mix + t * MIX, scale, base, hc, 20, 1e-6f, pre, post, M);
        for (int d = 0; d < D; d++) {
            float acc = 0;
            for (int s = 0; s < hc; s++) acc += pre[s] * H[t * hc * D + s * D + d];
            a[t * D + d] = acc;
        }
        ds4_rmsnorm(a + t * D, w, D, 1e-6f, a + t * D);
        for (int i = 0; i < hc * hc; i++) wm = fmax(wm, fabs(Mg[t * hc * hc + i] - M[i]));
        for (int i = 0; i < hc; i++) wm = fmax(wm, fabs(preg[t * hc + i] - pre[i]));
    }
    for (int i = 0; i < n * D; i++) wa = fmax(wa, fabs(ag[i] - a[i]));
    check(wm < 2e-6 && wa < 2e-5, "hc_split_collapse (%d tokens): Sinkhorn %.2e, collapsed+normed input %.2e", n, wm, wa);
    /* HC post */
    float *yy = rnd(r, (size_t)n * D, 1.0f), *Hc = malloc(sizeof(float) * n * hc * D), *Hg = malloc(sizeof(float) * n * hc * D);
    from_dev(postg, dpost, sizeof(float) * n * hc);
    memcpy(Hc, H, sizeof(float) * n * hc * D);
    for (int t = 0; t < n; t++)
        for (int d = 0; d < D; d++) {
            float in[4];
            for (int s = 0; s < hc; s++) in[s] = H[t * hc * D + s * D + d];
            for (int j = 0; j < hc; j++) {
                float acc = postg[t * hc + j] * yy[t * D + d];
                for (int s = 0; s < hc; s++) acc += Mg[t * hc * hc + s * hc + j] * in[s];
                Hc[t * hc * D + j * D + d] = acc;
            }
        }
    float *dyy = to_dev(yy, sizeof(float) * n * D);
    ds4k_hc_post(dpost, dM, dyy, D, 1, n, hc, D, dH, NULL);
    from_dev(Hg, dH, sizeof(float) * n * hc * D);
    worst = 0;
    for (int i = 0; i < n * hc * D; i++) worst = fmax(worst, fabs(Hg[i] - Hc[i]) / (1 + fabs(Hc[i])));
    check(worst < 1e-6, "hc_post (%d tokens): max rel diff %.2e", n, worst);
    /* HC post of the MoE output made in place: routed outputs in ascending
     * expert id (a repeated id in slot order) plus the shared expert */
    const int k = 6;
    float *eo = rnd(r, (size_t)n * k * D, 1.0f), *sh = rnd(r, (size_t)n * D, 1.0f);
    int32_t *ids = malloc(sizeof(int32_t) * n * k);
    for (int i = 0; i < n * k; i++) ids[i] = (int32_t)ds4_rng_below(r, 5); /* small ids: repeats in every token */
    for (int t = 0; t < n; t++)
        for (int d = 0; d < D; d++) {
            float acc = 0.0f;
            for (int id = 0; id < 5; id++)
                for (int j = 0; j < k; j++)
                    if (ids[t * k + j] == id) acc += eo[((int64_t)t * k + j) * D + d];
            yy[t * D + d] = acc + sh[t * D + d];
        }
    /* post = 1 and M = 0 make every stream exactly y, so the sum's order is
     * checked bit for bit */
    float *ones = malloc(sizeof(float) * n * hc), *zeros = calloc((size_t)n * hc * hc, sizeof(float));
    for (int i = 0; i < n * hc; i++) ones[i] = 1.0f;
    float *deo = to_dev(eo, sizeof(float) * n * k * D), *dsh = to_dev(sh, sizeof(float) * n * D);
    float *d1 = to_dev(ones, sizeof(float) * n * hc), *d0 = to_dev(zeros, sizeof(float) * n * hc * hc);
    int32_t *dids = to_dev(ids, sizeof(int32_t) * n * k);
    ds4k_hc_post_moe(d1, d0, deo, NULL, dids, dsh, n, k, hc, D, dH, NULL);
    from_dev(Hg, dH, sizeof(float) * n * hc * D);
    const bool same = every_stream_is(Hg, yy, n, hc, D);
    check(same, "hc_post of the MoE sum (ascending expert id, repeated ids in slot order) (%d tokens): bitwise the C order", n);
    /* the routed outputs left in a gathered order (a prefill batch): row
     * erow[i] holds pair i; the same sums */
    {
        int32_t *erow = malloc(sizeof(int32_t) * n * k);
        float *eg = malloc(sizeof(float) * n * k * D);
        for (int i = 0; i < n * k; i++) erow[i] = (int32_t)((i * 7 + 3) % (n * k)); /* a permutation: 7 is prime to n k */
        for (int i = 0; i < n * k; i++) memcpy(eg + (size_t)erow[i] * D, eo + (size_t)i * D, sizeof(float) * D);
        float *deg = to_dev(eg, sizeof(float) * n * k * D);
        int32_t *derow = to_dev(erow, sizeof(int32_t) * n * k);
        cudaMemset(dH, 0, sizeof(float) * n * hc * D);
        ds4k_hc_post_moe(d1, d0, deg, derow, dids, dsh, n, k, hc, D, dH, NULL);
        from_dev(Hg, dH, sizeof(float) * n * hc * D);
        check(every_stream_is(Hg, yy, n, hc, D), "hc_post of the MoE sum from rows in a gathered order (erow) (%d tokens): bitwise the C order", n);
        cudaFree(deg), cudaFree(derow), free(eg), free(erow);
    }
    cudaFree(d1), cudaFree(d0), free(ones), free(zeros);
    cudaFree(deo), cudaFree(dsh), cudaFree(dids);
    free(eo), free(sh), free(ids);
    void *ps[] = {dH, dy, dmix, dscale, dbase, dw, dpre, dpost, dM, da, dyy};
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) cudaFree(ps[i]);
    free(H), free(w), free(mix), free(base), free(y), free(yg), free(a), free(ag), free(preg), free(postg), free(Mg), free(yy),
        free(Hc), free(Hg);
}

/* Within one FP8/FP4 step of each other (values may round differently when
 * the inputs differ in the last bits); returns the fraction exactly equal. */
static double step_equal(const float *a, const float *b, int n, double rel_step, bool *ok) {
    int eq = 0;
    for (int i = 0; i < n; i++) {
        if (a[i] == b[i]) eq++;
        else if (fabs(a[i] - b[i]) > rel_step * fmax(fabs(a[i]), fabs(b[i])) + 1e-6) *ok = false;
    }
    return (double)eq / n;
}

/* Token rows of an F16, a BF16 and an F32 table (the types the loader
 * takes for token_embd) copied to every stream (hc = 4), widths that fill
 * and that do not fill the kernel's last block, a token repeated: bitwise
 * the CPU's dequantized rows. */
static void test_embed(ds4_rng *r) {
    static const struct { int type, D; } cases[] = {{DS4_TYPE_F16, 4096}, {DS4_TYPE_BF16, 4096}, {DS4_TYPE_F32, 300},
                                                     {DS4_TYPE_F16, 300}};
    const int V = 37, n = 6, hc = 4;
    const int32_t tok[6] = {5, 0, 36, 5, 17, 2};
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        const int type = cases[c].type, D = cases[c].D;
        const size_t rb = ds4_row_bytes(type, D);
        float *src = rnd(r, (size_t)V * D, 1.0f), *want = malloc(sizeof(float) * D), *H = malloc(sizeof(float) * n * hc * D);
        uint8_t *table = malloc(rb * V);
        for (int v = 0; v < V; v++) ds4_quantize_row(type, src + (size_t)v * D, table + rb * v, D);
        void *dtable = to_dev(table, rb * V);
        int32_t *dtok = to_dev(tok, sizeof(tok));
        float *dH = to_dev(NULL, sizeof(float) * n * hc * D);
        const ds4_dw emb = {type, dtable, D, V};
        ds4k_embed(&emb, dtok, n, hc, D, dH, NULL);
        from_dev(H, dH, sizeof(float) * n * hc * D);
        int bad = 0;
        for (int t = 0; t < n; t++) {
            ds4_dequant_row(type, table + rb * tok[t], want, D);
            for (int s = 0; s < hc; s++) bad += memcmp(H + ((size_t)t * hc + s) * D, want, sizeof(float) * D) != 0;
        }
        check(bad == 0, "embedding rows (%s, D = %d, %d tokens x %d streams) bitwise the CPU's: %d rows differ",
              ds4_type_name(type), D, n, hc, bad);
        cudaFree(dtable), cudaFree(dtok), cudaFree(dH);
        free(src), free(want), free(H), free(table);
    }
}

static void test_kv_and_heads(ds4_rng *r) {
    ds4_hparams hp;
    ds4_hparams_published(&hp);
    double fr[32];
    ds4_rope_freqs(&hp, true, fr);
    const int n = 7, hd = 512, raw_cap = 16;
    const int pos0 = 1000;
    float *kv = rnd(r, (size_t)n * hd, 1.0f), *w = rnd(r, hd, 0.1f);
    for (int i = 0; i < hd; i++) w[i] += 1.0f;
    for (int fp8 = 0; fp8 < 2; fp8++) {
        float *ref = malloc(sizeof(float) * n * hd), cs[64];
        for (int t = 0; t < n; t++) {
            float *x = ref + t * hd;
            ds4_rmsnorm(kv + t * hd, w, hd, 1e-6f, x);
            ds4_rope_table(fr, 32, pos0 + t, cs);
            ds4_rope_tail(x, hd, 32, cs, false);
            if (fp8) ds4_fp8_sim(x, hd - 64);
            for (int i = 0; i < hd; i++) x[i] = ds4_round_f16(x[i]);
        }
        float *dkv = to_dev(kv, sizeof(float) * n * hd), *dw = to_dev(w, sizeof(float) * hd);
        double *dfr = to_dev(fr, sizeof(fr));
        int p = pos0, *dpos = to_dev(&p, sizeof(int));
        uint16_t *dring = to_dev(NULL, 2 * raw_cap * hd), *ring = malloc(2 * raw_cap * hd);
        ds4k_kv_store(dkv, dw, 1e-6f, dfr, 32, dpos, n, hd, fp8, dring, raw_cap, DS4_ROW_F16, NULL);
        from_dev(ring, dring, 2 * raw_cap * hd);
        float *got = malloc(sizeof(float) * n * hd);
        for (int t = 0; t < n; t++)
            for (int i = 0; i < hd; i++) got[t * hd + i] = ds4_f16_to_f32(ring[((pos0 + t) % raw_cap) * hd + i]);
        bool ok = true;
        const double eq = step_equal(got, ref, n * hd, fp8 ? 0.13 : 2e-3, &ok);
        check(ok && eq > 0.95, "kv_store (norm, RoPE, %s, f16 ring): %.1f%% identical, rest within one step", fp8 ? "FP8" : "no FP8",
              100 * eq);
        /* with an HCA layer's ring of attention inputs (ratio 4 here: the 7
         * tokens' last 4, at positions 1003..1006, in rows 3, 0, 1, 2): the
         * same KV rows, and each input row copied where it belongs */
        const int64_t D = 96;
        float *a = rnd(r, (size_t)n * D, 1.0f), *dA = to_dev(a, sizeof(float) * n * D);
        float *dar = to_dev(NULL, sizeof(float) * 4 * D), *ar = malloc(sizeof(float) * 4 * D);
        uint16_t *ring2 = malloc(2 * raw_cap * hd);
        ds4k_kv_store_ring(dkv, dw, 1e-6f, dfr, 32, dpos, n, hd, fp8, dring, raw_cap, DS4_ROW_F16, dA, D, dar, 4, NULL);
        from_dev(ring2, dring, 2 * raw_cap * hd);
        from_dev(ar, dar, sizeof(float) * 4 * D);
        bool rows_ok = memcmp(ring, ring2, 2 * raw_cap * hd) == 0;
        for (int t = n - 4; t < n; t++) rows_ok &= memcmp(ar + ((pos0 + t) % 4) * D, a + t * D, sizeof(float) * D) == 0;
        check(rows_ok, "kv_store with the attention inputs' ring (%s): KV rows bitwise, the last 4 inputs in rows p %% 4",
              fp8 ? "FP8" : "no FP8");
        cudaFree(dA), cudaFree(dar), free(a), free(ar), free(ring2);
        cudaFree(dkv), cudaFree(dw), cudaFree(dfr), cudaFree(dpos), cudaFree(dring);
        free(ref), free(ring), free(got);
    }
    /* queries: per-head norm + RoPE; indexer queries: RoPE + Hadamard + FP4 */
    for (int idx = 0; idx < 2; idx++) {
        const int heads = 4, d = idx ? 128 : 512;
        float *q = rnd(r, (size_t)n * heads * d, 1.0f), *ref = malloc(sizeof(float) * n * heads * d), cs[64];
        memcpy(ref, q, sizeof(float) * n * heads * d);
        for (int t = 0; t < n; t++) {
            ds4_rope_table(fr, 32, pos0 + t, cs);
            for (int h = 0; h < heads; h++) {
                float *x = ref + (t * heads + h) * d;
                if (!idx) ds4_rmsnorm(x, NULL, d, 1e-6f, x);
                ds4_rope_tail(x, d, 32, cs, false);
                if (idx) {
                    ds4_hadamard(x, d);
                    ds4_fp4_sim(x, d);
                }
            }
        }
        float *dq = to_dev(q, sizeof(float) * n * heads * d);
        double *dfr = to_dev(fr, sizeof(fr));
        int p = pos0, *dpos = to_dev(&p, sizeof(int));
        ds4k_heads_rope(dq, n, heads, d, !idx, 1e-6f, dfr, 32, dpos, idx, NULL);
        from_dev(q, dq, sizeof(float) * n * heads * d);
        bool ok = true;
        const double eq = step_equal(q, ref, n * heads * d, idx ? 0.34 : 1e-5, &ok);
        /* the norm's sum runs in another order than the CPU's, so a whole
         * head may round differently: the bound is the check; FP4 steps
         * must stay rare */
        check(ok && (!idx || eq > 0.9), "heads_rope (%s): %.1f%% identical, rest within %s", idx ? "indexer: Hadamard + FP4" : "norm + RoPE",
              100 * eq, idx ? "one FP4 step" : "1e-5");
        cudaFree(dq), cudaFree(dfr), cudaFree(dpos);
        free(q), free(ref);
    }
    free(kv), free(w);
}

/* The heads' norm and RoPE by one warp a head against the 128-thread block
 * kernel it replaces where it can: bitwise, for head widths 128 .. 512, 16
 * or 32 rotated pairs, with and without the norm, with and without the
 * Hadamard + FP4 of the indexer's queries, and a head count that leaves the
 * last block's warps partly idle. */
static void test_heads_rope_warps(ds4_rng *r) {
    const int n = 11, heads = 3, pos0 = 77; /* more than 8 tokens: FP4 heads take warps only then */
    const int widths[3] = {128, 256, 512}, pairs[2] = {16, 32};
    ds4_hparams hp;
    ds4_hparams_published(&hp);
    double fr[32];
    ds4_rope_freqs(&hp, true, fr);
    double *dfr = to_dev(fr, sizeof(fr));
    int p = pos0, *dpos = to_dev(&p, sizeof(int));
    bool same = true;
    for (int wi = 0; wi < 3; wi++)
        for (int pi = 0; pi < 2; pi++)
            for (int mode = 0; mode < 4; mode++) {
                const int d = widths[wi];
                const bool norm = mode & 1, fp4 = mode & 2;
                const size_t sz = (size_t)n * heads * d;
                float *q = rnd(r, sz, 1.0f), *a = malloc(sizeof(float) * sz), *b = malloc(sizeof(float) * sz);
                float *da = to_dev(q, sizeof(float) * sz), *db = to_dev(q, sizeof(float) * sz);
                const int was = ds4k_heads_rope_warps(1);
                ds4k_heads_rope(da, n, heads, d, norm, 1e-6f, dfr, pairs[pi], dpos, fp4, NULL);
                ds4k_heads_rope_warps(0);
                ds4k_heads_rope(db, n, heads, d, norm, 1e-6f, dfr, pairs[pi], dpos, fp4, NULL);
                ds4k_heads_rope_warps(was);
                from_dev(a, da, sizeof(float) * sz);
                from_dev(b, db, sizeof(float) * sz);
                same &= memcmp(a, b, sizeof(float) * sz) == 0;
                cudaFree(db), cudaFree(da);
                free(b), free(a), free(q);
            }
    check(same, "heads_rope by a warp a head bitwise the block kernel (widths 128/256/512, 16/32 pairs, norm or not, "
                "Hadamard + FP4 or not, %d x %d heads)",
          n, heads);
    cudaFree(dpos), cudaFree(dfr);
}

/* ------------------------------------------------------------------ model level */

static void *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *b = malloc((size_t)n);
    if (fread(b, 1, (size_t)n, f) != (size_t)n) n = 0;
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* logits of every position: prefill in one call (the session's chunk splits it),
 * or prefill `split` tokens then decode one at a time. */
static void eval_all(ds4_session *s, const int32_t *toks, int n, int split, float *out, int64_t V) {
    ds4_err err = {{0}};
    if (split <= 0 || split > n) split = n;
    if (ds4_session_eval(s, toks, split, out, &err) != 0) {
        fprintf(stderr, "eval: %s\n", err.msg);
        exit(1);
    }
    for (int i = split; i < n; i++) {
        if (ds4_session_decode(s, toks[i], &err) != 0) {
            fprintf(stderr, "decode: %s\n", err.msg);
            exit(1);
        }
        memcpy(out + (size_t)i * V, ds4_session_logits(s), sizeof(float) * V);
    }
}

/* max |a-b| / max(1, max|ref|), and argmax agreement except reference near-ties */
static double compare(const float *a, const float *ref, int n, int64_t V, int *argmax_bad, double tol) {
    double mx = 1, md = 0;
    for (size_t i = 0; i < (size_t)n * V; i++) mx = fmax(mx, fabs(ref[i]));
    *argmax_bad = 0;
    for (int t = 0; t < n; t++) {
        int ia = 0, ir = 0;
        for (int64_t v = 0; v < V; v++) {
            md = fmax(md, fabs(a[t * V + v] - ref[t * V + v]));
            if (a[t * V + v] > a[t * V + ia]) ia = (int)v;
            if (ref[t * V + v] > ref[t * V + ir]) ir = (int)v;
        }
        if (ia != ir && fabs(ref[t * V + ia] - ref[t * V + ir]) > tol * mx) (*argmax_bad)++;
    }
    return md / mx;
}

static void test_oracle_fixtures(void) {
    static const char *cases[][2] = {{"tiny", "--seed 11 --ffn-gain 3"},
                                     {"bounds", "--seed 12 --ffn-gain 3 --layers 6 --window 16 --hca-rate 16"},
                                     {"partial", "--seed 13 --ffn-gain 3 --index-topk 8"},
                                     {"ds4types", "--seed 14 --ffn-gain 3 --policy ds4 --embd 256 --ff 256 --q4-from-layer 3"}};
    for (size_t c = 0; c < 4; c++) {
        char path[256], rel[256];
        snprintf(path, sizeof(path), "/tmp/ds4cu_%s.gguf", cases[c][0]);
        if (test_sh("%s/ds4-synth -q %s -o %s", g_bin_dir, cases[c][1], path) != 0) {
            check(false, "synth %s", cases[c][0]);
            continue;
        }
        size_t tb = 0, lb = 0;
        snprintf(rel, sizeof(rel), "tests/oracle/fixtures/%s/tokens.i32", cases[c][0]);
        int32_t *toks = read_all(rel, &tb);
        snprintf(rel, sizeof(rel), "tests/oracle/fixtures/%s/logits.f32", cases[c][0]);
        float *ref = read_all(rel, &lb);
        ds4_err err = {{0}};
        ds4_model *m = ds4_model_open(path, 0, &err);
        if (!m || !toks || !ref) {
            check(false, "%s: open (%s)", cases[c][0], err.msg);
            continue;
        }
        const int n = (int)(tb / 4);
        const int64_t V = m->hp.n_vocab;
        float *got = malloc(sizeof(float) * n * V);
        const struct {
            int chunk, split;
            const char *what;
        } modes[] = {{2048, 0, "one-shot prefill"}, {2048, 200, "prefill 200 + decode"}, {7, 0, "prefill chunk 7"}, {1, 0, "chunk 1"}};
        for (size_t k = 0; k < 4; k++) {
            ds4_session *s = session(m, DS4_BACKEND_CUDA, n, modes[k].chunk, true);
            eval_all(s, toks, n, modes[k].split, got, V);
            int bad;
            const double d = compare(got, ref, n, V, &bad, 1e-3);
            check(d <= 1e-3 && bad == 0, "oracle %-8s %-22s CUDA vs transformers: max|diff|/max(1,max|logit|) %.2e, argmax mismatches %d",
                  cases[c][0], modes[k].what, d, bad);
            ds4_session_free(s);
        }
        free(got);
        free(ref);
        free(toks);
        ds4_model_close(m);
    }
}

/* The fixture models in default mode (FP8/FP4 simulations on): CUDA vs the CPU
 * backend, prefill with chunks 1, 7, 2048, 4096 and decode; first with the
 * prefill products' activations at ~22 bits (ds4k_wgmma_exact_acts(1), as in
 * oracle mode: every other approximation held to 1e-3), then as CUDA runs by
 * default, rounded to f16 there. That rounding alone moves the CPU's own
 * logits: the CPU with the same products' activations rounded to f16 differs
 * from itself by up to 7.0e-3 on ds4types (bf16 activations, the model's
 * own precision: 3.7e-1), through the FP8 KV rounding steps it flips; hence
 * 1e-2 for the default. */
static void test_default_mode_fixtures(void) {
    static const char *cases[][2] = {{"tiny", "--seed 11 --ffn-gain 3"},
                                     {"bounds", "--seed 12 --ffn-gain 3 --layers 6 --window 16 --hca-rate 16"},
                                     {"partial", "--seed 13 --ffn-gain 3 --index-topk 8"},
                                     {"ds4types", "--seed 14 --ffn-gain 3 --policy ds4 --embd 256 --ff 256 --q4-from-layer 3"}};
    for (size_t c = 0; c < 4; c++) {
        char path[256], rel[256];
        snprintf(path, sizeof(path), "/tmp/ds4cu_%s.gguf", cases[c][0]);
        size_t tb = 0;
        snprintf(rel, sizeof(rel), "tests/oracle/fixtures/%s/tokens.i32", cases[c][0]);
        int32_t *toks = read_all(rel, &tb);
        ds4_err err = {{0}};
        ds4_model *m = ds4_model_open(path, 0, &err);
        if (!m || !toks) {
            check(false, "%s: open (%s)", cases[c][0], err.msg);
            continue;
        }
        const int n = (int)(tb / 4), ctx = 4096;
        const int64_t V = m->hp.n_vocab;
        float *cpu = malloc(sizeof(float) * n * V), *gpu = malloc(sizeof(float) * n * V);
        ds4_session *s = session(m, DS4_BACKEND_CPU, ctx, 2048, false);
        eval_all(s, toks, n, 0, cpu, V);
        ds4_session_free(s);
        const struct {
            int chunk, split;
        } modes[] = {{1, 0}, {7, 0}, {2048, 0}, {4096, 0}, {2048, 150}};
        for (int exact = 1; exact >= 0; exact--) {
            const double tol = exact ? 1e-3 : 1e-2;
            double worst = 0;
            int bad_total = 0;
            for (size_t k = 0; k < 5; k++) {
                s = session(m, DS4_BACKEND_CUDA, ctx, modes[k].chunk, false);
                if (exact) ds4k_wgmma_exact_acts(1); /* after the session's own choice */
                eval_all(s, toks, n, modes[k].split, gpu, V);
                ds4_session_free(s);
                int bad;
                worst = fmax(worst, compare(gpu, cpu, n, V, &bad, tol));
                bad_total += bad;
            }
            check(worst <= tol && bad_total == 0,
                  "default mode %-8s CUDA (chunks 1/7/2048/4096, decode; prefill activations %s) vs CPU: "
                  "max|diff|/max(1,max|logit|) %.2e (tolerance %.0e), argmax mismatches %d",
                  cases[c][0], exact ? "hi + lo" : "in f16", worst, tol, bad_total);
        }
        free(cpu);
        free(gpu);
        free(toks);
        ds4_model_close(m);
    }
}

static void test_cpu_vs_cuda(void) {
    const char *path = "/tmp/ds4cu_cmp.gguf";
    if (test_sh("%s/ds4-synth -q --seed 31 --ffn-gain 3 --index-topk 8 -o %s", g_bin_dir, path) != 0) {
        check(false, "synth");
        return;
    }
    ds4_err err = {{0}};
    ds4_model *m = ds4_model_open(path, 0, &err);
    const int n = 4200, ctx = 4300;
    const int64_t V = m->hp.n_vocab;
    int32_t *toks = rand_tokens(n, (int)V, 5);
    float *cpu = malloc(sizeof(float) * n * V), *gpu = malloc(sizeof(float) * n * V), *gpu2 = malloc(sizeof(float) * n * V);
    ds4_session *s = session(m, DS4_BACKEND_CPU, ctx, 2048, false);
    eval_all(s, toks, n, 0, cpu, V);
    ds4_session_free(s);
    const int chunks[] = {2048, 4096, 7, 1};
    for (size_t k = 0; k < 4; k++) {
        s = session(m, DS4_BACKEND_CUDA, ctx, chunks[k], false);
        eval_all(s, toks, n, 0, gpu, V);
        ds4_session_free(s);
        int bad;
        const double d = compare(gpu, cpu, n, V, &bad, 1e-3);
        /* 4200 tokens with top-8 of up to 1050 rows: FP8/FP4 boundary flips and
         * indexer near-ties between two accumulation orders grow the gap over
         * the sequence (measured ~2e-3; docs/BENCHMARKS.md), argmax must agree */
        check(d <= 5e-3 && bad == 0, "long default mode, %d tokens, CUDA chunk %4d vs CPU chunk 2048: max|diff|/max(1,max|logit|) %.2e, argmax mismatches %d",
              n, chunks[k], d, bad);
        if (k == 0) {
            s = session(m, DS4_BACKEND_CUDA, ctx, 2048, false);
            eval_all(s, toks, n, 0, gpu2, V);
            ds4_session_free(s);
            check(memcmp(gpu, gpu2, sizeof(float) * n * V) == 0, "determinism: two CUDA runs give bitwise identical logits");
        }
    }
    /* decode after a prefill */
    s = session(m, DS4_BACKEND_CUDA, ctx, 2048, false);
    eval_all(s, toks, 600, 500, gpu, V);
    ds4_session_free(s);
    int bad;
    double d = compare(gpu, cpu, 600, V, &bad, 1e-3);
    check(d <= 1e-3 && bad == 0, "default mode, prefill 500 + 100 decode steps (CUDA graph) vs CPU: %.2e, argmax mismatches %d", d, bad);
    /* snapshot / restore on CUDA; CPU snapshot continued on CUDA */
    s = session(m, DS4_BACKEND_CUDA, ctx, 2048, false);
    eval_all(s, toks, 2300, 0, gpu, V);
    uint8_t *snap = NULL;
    size_t len = 0;
    ds4_session_snapshot(s, &snap, &len, &err);
    ds4_session_free(s);
    s = session(m, DS4_BACKEND_CUDA, ctx, 2048, false);
    if (ds4_session_load(s, snap, len, &err) != 0) check(false, "restore: %s", err.msg);
    eval_all(s, toks + 2300, 60, 1, gpu2, V);
    ds4_session_free(s);
    s = session(m, DS4_BACKEND_CUDA, ctx, 2048, false);
    eval_all(s, toks, 2360, 2300, gpu, V);
    ds4_session_free(s);
    check(memcmp(gpu + (size_t)2300 * V, gpu2, sizeof(float) * 60 * V) == 0,
          "snapshot -> restore -> decode on CUDA is bitwise identical to not stopping");
    free(snap);
    s = session(m, DS4_BACKEND_CPU, ctx, 2048, false);
    eval_all(s, toks, 2300, 0, cpu, V);
    ds4_session_snapshot(s, &snap, &len, &err);
    ds4_session_free(s);
    s = session(m, DS4_BACKEND_CUDA, ctx, 2048, false);
    ds4_session_load(s, snap, len, &err);
    eval_all(s, toks + 2300, 60, 1, gpu2, V);
    ds4_session_free(s);
    s = session(m, DS4_BACKEND_CPU, ctx, 2048, false);
    eval_all(s, toks, 2360, 2300, cpu, V);
    ds4_session_free(s);
    d = compare(gpu2, cpu + (size_t)2300 * V, 60, V, &bad, 1e-3);
    check(d <= 1e-3 && bad == 0, "CPU snapshot restored on CUDA, 60 decode steps vs CPU: %.2e, argmax mismatches %d", d, bad);
    free(snap);
    free(cpu);
    free(gpu);
    free(gpu2);
    free(toks);
    ds4_model_close(m);
}

/* The KV cache's other row formats end to end: CUDA against the CPU with
 * the same --kv-type (the CPU rounds its rows through the same format:
 * ds4_kvrow_round), prefill and the decode graphs, snapshot / restore
 * through the format's encoding; fp8 against f16 on CUDA. */
static void test_kv_types(void) {
    const char *path = "/tmp/ds4cu_kv.gguf";
    if (test_sh("%s/ds4-synth -q --seed 31 --ffn-gain 3 --index-topk 8 -o %s", g_bin_dir, path) != 0) {
        check(false, "synth");
        return;
    }
    ds4_err err = {{0}};
    ds4_model *m = ds4_model_open(path, 0, &err);
    const int n = 1300, ctx = 1400;
    const int64_t V = m->hp.n_vocab;
    int32_t *toks = rand_tokens(n, (int)V, 9);
    float *cpu = malloc(sizeof(float) * n * V), *gpu = malloc(sizeof(float) * n * V), *gpu2 = malloc(sizeof(float) * n * V);
    const ds4_kv_type kinds[2] = {DS4_KV_FP8, DS4_KV_BF16};
    for (int k = 0; k < 2; k++) {
        const char *name = ds4_kv_type_name(kinds[k]);
        ds4_session *s = session_kv(m, DS4_BACKEND_CPU, ctx, 512, false, kinds[k]);
        eval_all(s, toks, n, 0, cpu, V);
        ds4_session_free(s);
        s = session_kv(m, DS4_BACKEND_CUDA, ctx, 512, false, kinds[k]);
        eval_all(s, toks, n, 0, gpu, V);
        ds4_session_free(s);
        int bad;
        double d = compare(gpu, cpu, n, V, &bad, 1e-3);
        check(d <= 5e-3 && bad == 0, "kv %s, %d tokens, CUDA vs CPU (chunk 512): max|diff|/max(1,max|logit|) %.2e, argmax mismatches %d",
              name, n, d, bad);
        s = session_kv(m, DS4_BACKEND_CUDA, ctx, 512, false, kinds[k]);
        eval_all(s, toks, 700, 600, gpu2, V);
        ds4_session_free(s);
        d = compare(gpu2, cpu, 700, V, &bad, 1e-3);
        check(d <= 1e-3 && bad == 0, "kv %s, prefill 600 + 100 decode steps (CUDA graph) vs CPU: %.2e, argmax mismatches %d",
              name, d, bad);
        /* snapshot after 900 tokens, restore, 60 more: bitwise not stopping */
        s = session_kv(m, DS4_BACKEND_CUDA, ctx, 512, false, kinds[k]);
        eval_all(s, toks, 900, 0, gpu2, V);
        uint8_t *snap = NULL;
        size_t len = 0;
        ds4_session_snapshot(s, &snap, &len, &err);
        ds4_session_free(s);
        s = session_kv(m, DS4_BACKEND_CUDA, ctx, 512, false, kinds[k]);
        if (ds4_session_load(s, snap, len, &err) != 0) check(false, "restore: %s", err.msg);
        eval_all(s, toks + 900, 60, 1, gpu2, V);
        ds4_session_free(s);
        s = session_kv(m, DS4_BACKEND_CUDA, ctx, 512, false, kinds[k]);
        eval_all(s, toks, 960, 900, cpu, V);
        ds4_session_free(s);
        check(memcmp(cpu + (size_t)900 * V, gpu2, sizeof(float) * 60 * V) == 0,
              "kv %s: snapshot -> restore -> decode on CUDA is bitwise identical to not stopping", name);
        free(snap);
        if (kinds[k] == DS4_KV_FP8) { /* fp8 rows store what f16 rows store, while f16 holds the FP8 values exactly */
            s = session_kv(m, DS4_BACKEND_CUDA, ctx, 512, false, DS4_KV_F16);
            eval_all(s, toks, n, 0, gpu2, V);
            ds4_session_free(s);
            d = compare(gpu, gpu2, n, V, &bad, 1e-3);
            check(d <= 5e-3 && bad == 0, "kv fp8 vs f16 on CUDA, %d tokens: %s, max|diff|/max(1,max|logit|) %.2e, argmax mismatches %d",
                  n, memcmp(gpu, gpu2, sizeof(float) * n * V) == 0 ? "bitwise identical" : "not bitwise", d, bad);
        }
    }
    free(cpu), free(gpu), free(gpu2), free(toks);
    ds4_model_close(m);
}

/* An HCA layer's compressor a window at a time (cuda_layers.inc,
 * "compressor windows"), on a model whose HCA projections the tiles take
 * (the published types at D = 256) and whose HCA windows close every 16
 * tokens: graph decode steps across ten closes (the ring alone, the close),
 * with a snapshot (the open window flushed) between, bitwise one-token evals
 * launched kernel by kernel (each token its own projections, a window
 * closed by the serial compressor); a session restored from that snapshot
 * (its own projections until the window's end, then the ring) bitwise not
 * stopping; and near the CPU. */
static void test_cmp_ring(void) {
    const char *path = "/tmp/ds4cu_ring.gguf";
    if (test_sh("%s/ds4-synth -q --seed 31 --ffn-gain 3 --index-topk 8 --policy ds4 --embd 256 --ff 256 --hca-rate 16 "
                "-o %s", g_bin_dir, path) != 0) {
        check(false, "synth");
        return;
    }
    ds4_err err = {{0}};
    ds4_model *m = ds4_model_open(path, 0, &err);
    if (!m) {
        check(false, "open: %s", err.msg);
        return;
    }
    const int p0 = 100, n = 260, snap_at = 180, ctx = 512, chunk = 256;
    const int64_t V = m->hp.n_vocab;
    int32_t *toks = rand_tokens(n, (int)V, 9);
    float *gpu = malloc(sizeof(float) * n * V), *eager = malloc(sizeof(float) * n * V);
    float *back = malloc(sizeof(float) * n * V), *cpu = malloc(sizeof(float) * n * V);
    uint8_t *snap = NULL;
    size_t len = 0;
    ds4_session *s = session(m, DS4_BACKEND_CUDA, ctx, chunk, false);
    const int ring = ds4_cuda_cmp_ring(s);
    bool ok = ring == 16;
    if (!ok) { /* off only where the tiles are missing (not an sm_90a build) */
        check(ring == 0 && !ds4k_wgmma_takes(DS4_TYPE_F16, 256),
              "compressor windows: rings of %d rows (want 16, or 0 without sm_90a tiles)", ring);
    } else {
        ok &= ds4_session_eval(s, toks, p0, gpu, &err) == 0;
        for (int i = p0; ok && i < n; i++) {
            if (i == snap_at) ok &= ds4_session_snapshot(s, &snap, &len, &err) == 0;
            ok &= ds4_session_decode(s, toks[i], &err) == 0;
            memcpy(gpu + (size_t)i * V, ds4_session_logits(s), sizeof(float) * V);
        }
    }
    ds4_session_free(s);
    if (ok) {
        s = session(m, DS4_BACKEND_CUDA, ctx, chunk, false);
        ok &= ds4_session_eval(s, toks, p0, eager, &err) == 0;
        for (int i = p0; ok && i < n; i++) ok &= ds4_session_eval(s, toks + i, 1, eager + (size_t)i * V, &err) == 0;
        ds4_session_free(s);
        s = session(m, DS4_BACKEND_CUDA, ctx, chunk, false);
        ok &= ds4_session_load(s, snap, len, &err) == 0;
        for (int i = snap_at; ok && i < n; i++) {
            ok &= ds4_session_decode(s, toks[i], &err) == 0;
            memcpy(back + (size_t)i * V, ds4_session_logits(s), sizeof(float) * V);
        }
        ds4_session_free(s);
        s = session(m, DS4_BACKEND_CPU, ctx, chunk, false);
        eval_all(s, toks, n, p0, cpu, V);
        ds4_session_free(s);
        int bad = 0;
        const double d = compare(gpu + (size_t)p0 * V, cpu + (size_t)p0 * V, n - p0, V, &bad, 1e-2);
        const bool same_eager = memcmp(gpu + (size_t)p0 * V, eager + (size_t)p0 * V, sizeof(float) * (n - p0) * V) == 0;
        const bool same_back =
            memcmp(gpu + (size_t)snap_at * V, back + (size_t)snap_at * V, sizeof(float) * (n - snap_at) * V) == 0;
        check(ok && same_eager && same_back && d <= 5e-2 && bad == 0,
              "compressor windows (HCA windows of 16): %d graph decode steps, a snapshot between, %s one-token evals; "
              "restored at %d %s not stopping; vs CPU %.2e, argmax mismatches %d%s%s",
              n - p0, same_eager ? "bitwise" : "NOT bitwise", snap_at, same_back ? "bitwise" : "NOT bitwise", d, bad,
              ok ? "" : ": ", ok ? "" : err.msg);
    }
    free(snap);
    free(cpu);
    free(back);
    free(eager);
    free(gpu);
    free(toks);
    ds4_model_close(m);
}

/* Full-size comparison (GPU machine): CPU vs CUDA on the logits of short
 * prompts of a large model, and how the gap grows with position. */
static int overlap_top(const float *a, const float *b, int64_t V, int k) {
    int ia[64], ib[64];
    for (int j = 0; j < k; j++) {
        ia[j] = ib[j] = -1;
        for (int64_t v = 0; v < V; v++) {
            bool ta = false, tb = false;
            for (int q = 0; q < j; q++) ta |= ia[q] == v, tb |= ib[q] == v;
            if (!ta && (ia[j] < 0 || a[v] > a[ia[j]])) ia[j] = (int)v;
            if (!tb && (ib[j] < 0 || b[v] > b[ib[j]])) ib[j] = (int)v;
        }
    }
    int o = 0;
    for (int x = 0; x < k; x++)
        for (int y = 0; y < k; y++) o += ia[x] == ib[y];
    return o;
}

static int compare_full(const char *path, int n_prompts, int max_len) {
    ds4_err err = {{0}};
    ds4_model *m = ds4_model_open(path, 0, &err);
    if (!m) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    const int64_t V = m->hp.n_vocab;
    float *cpu = malloc(sizeof(float) * max_len * V), *gpu = malloc(sizeof(float) * max_len * V);
    double worst = 0;
    int argmax_diff = 0;
    for (int p = 0; p < n_prompts; p++) {
        const int n = 8 + (int)((p * 7919u) % (unsigned)(max_len - 7));
        int32_t *toks = rand_tokens(n, (int)V, 1000 + (uint64_t)p);
        ds4_session *s = session(m, DS4_BACKEND_CPU, max_len + 8, 2048, false);
        const double t0 = (double)clock() / CLOCKS_PER_SEC;
        eval_all(s, toks, n, 0, cpu, V);
        ds4_session_free(s);
        s = session(m, DS4_BACKEND_CUDA, max_len + 8, 2048, false);
        eval_all(s, toks, n, 0, gpu, V);
        ds4_session_free(s);
        (void)t0;
        int bad;
        const double d = compare(gpu + (size_t)(n - 1) * V, cpu + (size_t)(n - 1) * V, 1, V, &bad, 0.0);
        worst = fmax(worst, d);
        argmax_diff += bad;
        printf("prompt %2d: %3d tokens, last position max|dlogit|/max(1,max|logit|) %.3e, argmax %s, top-8 overlap %d/8; by position:",
               p, n, d, bad ? "DIFFERENT" : "same", overlap_top(gpu + (size_t)(n - 1) * V, cpu + (size_t)(n - 1) * V, V, 8));
        for (int q = 1; q <= n; q *= 2) {
            int b2;
            printf(" %d:%.1e", q, compare(gpu + (size_t)(q - 1) * V, cpu + (size_t)(q - 1) * V, 1, V, &b2, 0.0));
        }
        printf("\n");
        fflush(stdout);
        free(toks);
    }
    /* Tolerance from measurement (docs/BENCHMARKS.md): on the 43-layer random
     * q2 model, prompts of <= 64 tokens differed by at most 6.2e-2 over 10
     * prompts (FP8 KV rounding flips amplified by depth), never in argmax. */
    const double tol = 0.1;
    const bool pass = worst <= tol && argmax_diff == 0;
    printf("full-size CPU vs CUDA: %d prompts, worst %.3e (tolerance %.1e), argmax differences %d: %s\n", n_prompts,
           worst, tol, argmax_diff, pass ? "passed" : "FAILED");
    free(cpu);
    free(gpu);
    ds4_model_close(m);
    return pass ? 0 : 1;
}

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "all";
    static const char *const modes[] = {"all",   "kernels",   "model",      "prefill",    "gemv",    "hc",
                                        "chain", "attention", "gemv-bench", "topk-bench", "compare", "kv"};
    bool known = false;
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) known |= !strcmp(what, modes[i]);
    if (!known) {
        fprintf(stderr,
                "usage: ds4-cuda-test [all|kernels|model|prefill|gemv|hc|chain|attention|kv|gemv-bench|topk-bench|"
                "compare MODEL [prompts] [max_len]]\n");
        return 2;
    }
    char exe[4096];
    const ssize_t k = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (k > 0) {
        exe[k] = 0;
        char *sl = strrchr(exe, '/');
        if (sl) {
            *sl = 0;
            snprintf(g_bin_dir, sizeof(g_bin_dir), "%s", exe);
        }
    }
    if (ds4k_init() != 0) {
        fprintf(stderr, "ds4-cuda-test: no usable GPU (%s)\n", ds4k_last_error() ? ds4k_last_error() : "?");
        return 2;
    }
    if (!strcmp(what, "gemv-bench")) {
        pick_bench();
        return gemv_bench();
    }
    if (!strcmp(what, "topk-bench")) return topk_bench();
    if (!strcmp(what, "compare")) {
        if (argc < 3) {
            fprintf(stderr, "usage: ds4-cuda-test compare MODEL [prompts] [max_len]\n");
            return 2;
        }
        return compare_full(argv[2], argc > 3 ? atoi(argv[3]) : 10, argc > 4 ? atoi(argv[4]) : 64);
    }
    ds4_rng r;
    ds4_rng_seed(&r, 42);
    if (!strcmp(what, "chain")) { /* only the chained-decoding checks */
        test_pick_kernel(&r);
        test_chained_decode();
        test_engine_chain();
    }
    if (!strcmp(what, "prefill")) test_prefill_kernels(&r); /* alone: short enough for compute-sanitizer */
    if (!strcmp(what, "kv")) { /* the KV rows' formats (--kv-type): kernels and end to end */
        test_kvrow_kernels(&r);
        test_kv_types();
    }
    if (!strcmp(what, "attention")) { /* attention, indexer, top-k; the KV rows' formats */
        test_attention_kernels(&r);
        test_kvrow_kernels(&r);
    }
    if (!strcmp(what, "hc")) { /* the decode step's hyper-connection kernels */
        test_hc_mix_parts(&r);
        test_hc_post_mix(&r);
        test_hc_post_collapse(&r);
    }
    if (!strcmp(what, "gemv")) { /* only the one-token GEMV checks */
        test_gemv_stream(&r);
        test_gemv_pairs(&r);
        test_gemv_convert();
        test_gemv_ksplit(&r);
        test_gemv_prep(&r);
        test_gemv_heads(&r);
        test_router_matmul(&r);
        test_gemv_early();
    }
    if (!strcmp(what, "all") || !strcmp(what, "kernels")) {
        test_matmul(&r);
        test_moe_matmul(&r);
        test_router(&r);
        test_gemv_stream(&r);
        test_gemv_pairs(&r);
        test_gemv_convert();
        test_gemv_ksplit(&r);
        test_hc_mix_parts(&r);
        test_hc_mix_batched(&r);
        test_hc_post_mix(&r);
        test_hc_post_collapse(&r);
        test_gemv_prep(&r);
        test_gemv_heads(&r);
        test_router_matmul(&r);
        test_gemv_early();
        test_prefill_kernels(&r);
        test_attention_kernels(&r);
        test_kvrow_kernels(&r);
        test_norm_hc(&r, 5);
        test_norm_hc(&r, 12);
        test_split_collapse_batch(&r);
        test_heads_rope_warps(&r);
        test_kv_and_heads(&r);
        test_embed(&r);
        test_pick_kernel(&r);
    }
    if (!strcmp(what, "all") || !strcmp(what, "model")) {
        test_oracle_fixtures();
        test_default_mode_fixtures();
        test_cpu_vs_cuda();
        test_kv_types();
        test_cmp_ring();
        test_chained_decode();
        test_engine_chain();
    }
    printf("%s: %d failure(s)\n", g_fail ? "FAILED" : "passed", g_fail);
    return g_fail ? 1 : 0;
}
