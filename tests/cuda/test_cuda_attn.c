/* ds4-cuda-test — the decode-side attention kernels against plain C
 * references written here from the model's definitions (MODEL.md §9–10):
 *
 *   attention   sink attention over the raw window and the visible or
 *               selected compressed rows, inverse RoPE of the output; the
 *               split-row (flash-decoding) kernel of batches <= 8 tokens
 *               and the whole-row kernels, SIMT and tensor cores, vs
 *               double-precision sums;
 *   indexer     S[t][c] = sum_h w[h] relu(q_h . k_c) / sqrt(ID * IH) over
 *               the visible rows, vs double-precision sums;
 *   top-k       the causal top-k of a score row (ties to the lower index,
 *               ascending output), vs a sort: must be identical, also on
 *               scores with many exact ties.
 *
 * The attention and indexer kernels read rows in each format of the KV
 * cache (--kv-type, model/kv_format.h): the reference takes the rows'
 * decoded values (the CPU's ds4_kvrow_decode). */
#include <math.h>
#include <string.h>

#include "cpu/ops.h"
#include "cuda_test_util.h"
#include "model/kv_format.h"
#include "model/model.h"

/* o[t][h] for tokens at positions p0 + t: the reference in double, the
 * inverse RoPE of the CPU twin applied in float. */
static void attention_ref(const float *q, int n, int p0, int H, int hd, const float *sinks, const float *ring,
                          int raw_cap, int window, const float *comp, int ratio, const int32_t *sel, const int *n_sel,
                          int topk, const double *freqs, int n_pairs, float *o) {
    const double scale = 1.0 / sqrt((double)hd);
    double *w = malloc(sizeof(double) * (window + 1 + 100000)), *acc = malloc(sizeof(double) * hd);
    float *cs = malloc(sizeof(float) * 2 * n_pairs);
    for (int t = 0; t < n; t++) {
        const int64_t p = p0 + t, lo = p - window + 1 > 0 ? p - window + 1 : 0;
        const int n_raw = (int)(p - lo + 1);
        int n_cmp = ratio > 0 ? (int)((p + 1) / ratio) : 0;
        const int32_t *s = NULL;
        if (sel && n_sel[t] >= 0) s = sel + (int64_t)t * topk, n_cmp = n_sel[t];
        for (int h = 0; h < H; h++) {
            const float *qh = q + ((int64_t)t * H + h) * hd;
            double mx = sinks[h];
            for (int r = 0; r < n_raw + n_cmp; r++) {
                const float *k = r < n_raw ? ring + ((lo + r) % raw_cap) * hd : comp + (int64_t)(s ? s[r - n_raw] : r - n_raw) * hd;
                double d = 0;
                for (int i = 0; i < hd; i++) d += (double)qh[i] * k[i];
                w[r] = d * scale;
                mx = fmax(mx, w[r]);
            }
            double den = exp(sinks[h] - mx);
            for (int i = 0; i < hd; i++) acc[i] = 0;
            for (int r = 0; r < n_raw + n_cmp; r++) {
                const float *v = r < n_raw ? ring + ((lo + r) % raw_cap) * hd : comp + (int64_t)(s ? s[r - n_raw] : r - n_raw) * hd;
                const double e = exp(w[r] - mx);
                den += e;
                for (int i = 0; i < hd; i++) acc[i] += e * v[i];
            }
            float *oh = o + ((int64_t)t * H + h) * hd;
            for (int i = 0; i < hd; i++) oh[i] = (float)(acc[i] / den);
            ds4_rope_table(freqs, n_pairs, p, cs);
            ds4_rope_tail(oh, hd, n_pairs, cs, true);
        }
    }
    free(w), free(acc), free(cs);
}

/* n random rows of dim as the cache stores them in format fmt, and their
 * exact float values. sim: 'a' puts the first dim - 64 elements of each row
 * through the FP8 simulation first, 'i' the whole row through the FP4 one
 * (as the model makes attention and indexer rows; fp8 and FP4 rows store
 * such values exactly). */
static uint8_t *kv_rows(ds4_rng *r, size_t n, int dim, int fmt, char sim, float **exact) {
    const int nope = dim - 64;
    const size_t rb = ds4_kvrow_bytes((ds4_row_fmt)fmt, dim, nope);
    uint8_t *b = malloc(rb * n);
    *exact = malloc(sizeof(float) * n * dim);
    for (size_t k = 0; k < n; k++) {
        float *x = *exact + k * dim;
        for (int i = 0; i < dim; i++) x[i] = ds4_rng_normal(r);
        if (sim == 'a') ds4_fp8_sim(x, nope);
        if (sim == 'i') ds4_fp4_sim(x, dim);
        ds4_kvrow_encode((ds4_row_fmt)fmt, x, dim, nope, b + k * rb);
        ds4_kvrow_decode((ds4_row_fmt)fmt, b + k * rb, dim, nope, x);
    }
    return b;
}

/* spare: rows past those attended, as a decode graph captured for a longer
 * context has (its tail chunks are empty) */
static void test_attention_decode(ds4_rng *r, int n, int p0, int H, int hd, int ratio, bool csa, bool select,
                                  int spare, int fmt) {
    const int window = 128, raw_cap = window + 64, n_pairs = 32, topk = 512;
    const int n_comp = ratio ? (p0 + n) / ratio : 0;
    const int max_rows = window + 1 + (csa ? (n_comp < topk ? n_comp : topk) : n_comp) + spare;
    ds4_hparams hp;
    ds4_hparams_published(&hp);
    double fr[32];
    ds4_rope_freqs(&hp, true, fr);
    float *q = rnd(r, (size_t)n * H * hd, 0.3f), *sinks = rnd(r, H, 1.0f), *ringf, *compf;
    const char sim = fmt == DS4_ROW_FP8 ? 'a' : 0;
    const size_t rb = ds4_kvrow_bytes((ds4_row_fmt)fmt, hd, hd - 64);
    uint8_t *ring = kv_rows(r, (size_t)raw_cap, hd, fmt, sim, &ringf), *comp = kv_rows(r, (size_t)(n_comp + 1), hd, fmt, sim, &compf);
    int *n_sel = malloc(sizeof(int) * n);
    int32_t *sel = calloc((size_t)n * topk, sizeof(int32_t));
    for (int t = 0; t < n; t++) {
        const int vis = (p0 + t + 1) / (ratio ? ratio : 1);
        n_sel[t] = -1;
        if (select && vis > topk) { /* every other row from a random start, ascending */
            const int start = (int)ds4_rng_below(r, (uint32_t)(vis - 2 * topk > 0 ? vis - 2 * topk : 1));
            int k = 0;
            for (int c = start; c < vis && k < topk; c += vis >= 2 * topk ? 2 : 1) sel[(int64_t)t * topk + k++] = c;
            n_sel[t] = k;
        }
    }
    float *want = malloc(sizeof(float) * n * H * hd);
    attention_ref(q, n, p0, H, hd, sinks, ringf, raw_cap, window, compf, ratio, csa ? sel : NULL, n_sel, topk, fr,
                  n_pairs, want);
    float *dq = to_dev(q, sizeof(float) * n * H * hd), *dsinks = to_dev(sinks, sizeof(float) * H);
    uint8_t *dring = to_dev(ring, rb * raw_cap), *dcomp = to_dev(comp, rb * (n_comp + 1));
    int *dnsel = to_dev(n_sel, sizeof(int) * n), *dpos = to_dev(&p0, sizeof(int));
    int32_t *dsel = to_dev(sel, sizeof(int32_t) * n * topk);
    double *dfr = to_dev(fr, sizeof(fr));
    float *dpart = to_dev(NULL, sizeof(float) * ds4k_attention_part_floats(H, hd, max_rows));
    float *dout = to_dev(NULL, sizeof(float) * n * H * hd), *got = malloc(sizeof(float) * n * H * hd);
    if (ds4k_prepare(H, hd, max_rows, 64, 128) != 0) check(false, "attention: shared memory for %d rows refused", max_rows);
    float *split_out = malloc(sizeof(float) * n * H * hd);
    static const char *name[4] = {"split rows", "whole rows, SIMT", "whole rows, tensor cores",
                                  "split rows, block merge"};
    /* the split (decode) kernel with each merge (past 32 chunks only the
     * block merge exists), the whole-row (prefill) kernels */
    const int chunks = (max_rows + 31) / 32, runs = chunks <= 32 ? 4 : 3;
    for (int k = 0; k < runs; k++) {
        ds4k_attention_mma_enable(k == 2);
        const int merge = ds4k_attention_combine_warp(k != 3);
        ds4k_attention(dq, n, dpos, H, hd, (float)(1.0 / sqrt((double)hd)), dsinks, dring, raw_cap, window, dcomp, ratio,
                       csa, dsel, dnsel, topk, fmt, dfr, n_pairs, dout, max_rows, k == 0 || k == 3 ? dpart : NULL, NULL,
                       NULL);
        ds4k_attention_mma_enable(1);
        ds4k_attention_combine_warp(merge);
        from_dev(got, dout, sizeof(float) * n * H * hd);
        if (k == 0) memcpy(split_out, got, sizeof(float) * n * H * hd);
        if (k == 3)
            check(memcmp(got, split_out, sizeof(float) * n * H * hd) == 0,
                  "attention: the warp merge bitwise the block merge (%d chunks%s): %d token(s) at %d, %2d heads x %3d",
                  chunks, spare ? ", empty tail chunks" : "", n, p0, H, hd);
        double worst = 0, mx = 0;
        for (size_t i = 0; i < (size_t)n * H * hd; i++) {
            worst = fmax(worst, fabs((double)got[i] - want[i]));
            mx = fmax(mx, fabs((double)want[i]));
        }
        /* float sums of <= 675 rows of 512 products vs double: ~1e-7 relative;
         * the tensor cores take q and the weights as f16 hi + lo (~22 bits).
         * A float sum's error bound grows with its length: past 675 rows the
         * bound grows with them (1,222 rows at 140,000, ratio 128: the SIMT
         * kernel measured 1.38e-6 and 2.08e-6 on two draws of the data) */
        const double tol = (k == 2 ? 1e-5 : 2e-6) * (max_rows > 675 ? max_rows / 675.0 : 1.0);
        check(worst / mx < tol, "attention (%s, %s rows) vs double reference: %d token(s) at %d, %2d heads x %3d, ratio %3d%s: "
              "max |diff| / max|o| %.2e", name[k], fmt == DS4_ROW_F16 ? "f16" : fmt == DS4_ROW_BF16 ? "bf16" : fmt == DS4_ROW_FP8 ? "fp8" : "f32",
              n, p0, H, hd, ratio, select ? ", selected rows" : "", worst / mx);
    }
    if (n == 1) { /* the split launch with an HC split beside it (ds4k_hc_split) */
        float *mixh = rnd(r, 24, 1.0f), *baseh = rnd(r, 24, 0.5f), sch[3] = {0.8f, 1.2f, 0.9f}, pm[40];
        float *dmix = to_dev(mixh, sizeof(float) * 24), *dbase = to_dev(baseh, sizeof(float) * 24);
        float *dsc = to_dev(sch, sizeof(sch)), *dpm = to_dev(NULL, sizeof(pm));
        const ds4k_hc_split hs = {dmix, dsc, dbase, 20, 1e-6f, dpm, dpm + 4};
        const int made = ds4k_attention(dq, n, dpos, H, hd, (float)(1.0 / sqrt((double)hd)), dsinks, dring, raw_cap,
                                        window, dcomp, ratio, csa, dsel, dnsel, topk, fmt, dfr, n_pairs, dout, max_rows,
                                        dpart, &hs, NULL);
        ds4k_hc_sinkhorn(dmix, dsc, dbase, 4, 20, 1e-6f, 1, dpm + 20, dpm + 24, NULL);
        from_dev(got, dout, sizeof(float) * n * H * hd);
        from_dev(pm, dpm, sizeof(pm));
        check(made == 1 && memcmp(got, split_out, sizeof(float) * n * H * hd) == 0 &&
                  memcmp(pm, pm + 20, sizeof(float) * 20) == 0,
              "attention with an HC split beside it (%d chunks): output bitwise the plain launch's, post and M "
              "bitwise ds4k_hc_sinkhorn's",
              chunks);
        cudaFree(dmix), cudaFree(dbase), cudaFree(dsc), cudaFree(dpm), free(mixh), free(baseh);
    }
    void *bufs[] = {dq, dsinks, dring, dcomp, dnsel, dpos, dsel, dfr, dpart, dout};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) cudaFree(bufs[i]);
    free(q), free(sinks), free(ringf), free(compf), free(ring), free(comp), free(n_sel), free(sel), free(want), free(got);
    free(split_out);
}

/* (score desc, index asc) of the first V scores, the best K sorted by index */
static const float *g_sc;
static int by_score(const void *a, const void *b) {
    const int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (g_sc[x] != g_sc[y]) return g_sc[x] > g_sc[y] ? -1 : 1;
    return (x > y) - (x < y);
}
static int by_index(const void *a, const void *b) {
    const int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}
static void topk_ref(const float *s, int V, int K, int32_t *out) {
    int32_t *idx = malloc(sizeof(int32_t) * V);
    for (int i = 0; i < V; i++) idx[i] = i;
    g_sc = s;
    qsort(idx, (size_t)V, sizeof(int32_t), by_score);
    memcpy(out, idx, sizeof(int32_t) * K);
    qsort(out, (size_t)K, sizeof(int32_t), by_index);
    free(idx);
}

/* Tokens p0 .. p0+n-1 whose causal top-k (ds4k_topk on dS, the device copy
 * of S) differs from the sort's (or whose count is wrong), summed over the
 * kernel's two forms: one block a token; a cluster of blocks a token (up to
 * 8 tokens). */
static int topk_vs_sort(const float *S, const float *dS, int64_t lds, int n, int p0, int topk, const int *dpos) {
    int *dnsel = to_dev(NULL, sizeof(int) * n), *n_sel = malloc(sizeof(int) * n);
    int32_t *dsel = to_dev(NULL, sizeof(int32_t) * n * topk), *sel = malloc(sizeof(int32_t) * n * topk);
    int32_t *want = malloc(sizeof(int32_t) * topk);
    int bad = 0;
    static const char *form_name[] = {"one-block", "cluster"};
    for (int form = 0; form < 2; form++) {
        cudaMemset(dsel, 0xff, sizeof(int32_t) * n * topk); /* no form passes on the one before's results */
        cudaMemset(dnsel, 0, sizeof(int) * n);
        ds4k_topk(dS, lds, n, dpos, topk, form > 0, dsel, dnsel, NULL);
        if (cudaGetLastError() != cudaSuccess || cudaDeviceSynchronize() != cudaSuccess)
            check(false, "top-k: the %s form's launch failed", form_name[form]);
        from_dev(sel, dsel, sizeof(int32_t) * n * topk);
        from_dev(n_sel, dnsel, sizeof(int) * n);
        for (int t = 0; t < n; t++) {
            const int V = (p0 + t + 1) / 4;
            if (V <= topk) {
                bad += n_sel[t] != -1;
                continue;
            }
            topk_ref(S + t * lds, V, topk, want);
            bad += n_sel[t] != topk || memcmp(want, sel + (int64_t)t * topk, sizeof(int32_t) * topk) != 0;
        }
    }
    cudaFree(dnsel), cudaFree(dsel);
    free(n_sel), free(sel), free(want);
    return bad;
}

/* Scores vs double sums for tokens at p0 .. p0+n-1, then the top-k of the
 * kernel's own scores (and of tied scores) vs the sort. fp4: queries and keys
 * on the FP4 grid, which lets a batch above 8 tokens take the tensor cores. */
static void test_indexer_topk(ds4_rng *r, int n, int p0, int IH, int ID, int topk, bool fp4, int fmt) {
    const int cap = (p0 + n) / 4 + 1;
    const int64_t lds = cap + 1;
    float *q = rnd(r, (size_t)n * IH * ID, 0.3f), *w = rnd(r, (size_t)n * IH, 1.0f), *keysf;
    /* fp4: queries and keys through the CPU's FP4 simulation, as the model's indexer makes them */
    uint8_t *keys = kv_rows(r, (size_t)cap, ID, fmt, fp4 ? 'i' : 0, &keysf);
    if (fp4)
        for (int h = 0; h < n * IH; h++) ds4_fp4_sim(q + (size_t)h * ID, ID);
    float *dq = to_dev(q, sizeof(float) * n * IH * ID), *dw = to_dev(w, sizeof(float) * n * IH);
    uint8_t *dkeys = to_dev(keys, ds4_kvrow_bytes((ds4_row_fmt)fmt, ID, 0) * cap);
    int *dpos = to_dev(&p0, sizeof(int));
    float *dS = to_dev(NULL, sizeof(float) * n * lds), *S = malloc(sizeof(float) * n * lds);
    if (ds4k_prepare(4, 128, 256, IH, ID) != 0) check(false, "indexer: shared memory refused");
    ds4k_indexer_scores(dq, dw, dkeys, fmt, fp4, n, dpos, IH, ID, topk, cap, dS, lds, NULL);
    from_dev(S, dS, sizeof(float) * n * lds);
    double worst = 0;
    const double scale = 1.0 / sqrt((double)ID * IH);
    for (int t = 0; t < n; t++) {
        const int V = (p0 + t + 1) / 4;
        if (V <= topk) continue;
        for (int c = 0; c < V; c++) {
            double s = 0, mag = 0;
            for (int h = 0; h < IH; h++) {
                double d = 0, m = 0;
                for (int i = 0; i < ID; i++) {
                    d += (double)q[((int64_t)t * IH + h) * ID + i] * keysf[(int64_t)c * ID + i];
                    m += fabs((double)q[((int64_t)t * IH + h) * ID + i] * keysf[(int64_t)c * ID + i]);
                }
                s += w[t * IH + h] * (d > 0 ? d : 0);
                mag += fabs(w[t * IH + h]) * m;
            }
            worst = fmax(worst, fabs(S[t * lds + c] - s * scale) / (mag * scale));
        }
    }
    check(worst < 1e-6,
          "indexer scores%s, %s keys vs double reference: %d tokens at %d, %d heads x %d: max |diff| / sum|terms| %.2e",
          fp4 && IH == 64 && ID == 128 ? " (FP4 grid, tensor cores)" : fp4 ? " (FP4 grid)" : "",
          fmt == DS4_ROW_F16 ? "f16" : fmt == DS4_ROW_BF16 ? "bf16" : fmt == DS4_ROW_FP4 ? "FP4" : "f32", n, p0, IH, ID, worst);
    for (int tied = 0; tied < 2; tied++) {
        if (tied) { /* scores on a coarse grid: many exact ties at the threshold */
            for (int64_t i = 0; i < n * lds; i++) S[i] = roundf(S[i] * 8.0f) / 8.0f;
            cudaMemcpy(dS, S, sizeof(float) * n * lds, cudaMemcpyHostToDevice);
        }
        const int bad = topk_vs_sort(S, dS, lds, n, p0, topk, dpos);
        check(bad == 0, "causal top-%d vs sort%s: %d tokens at %d (up to %d rows): %d differ", topk,
              tied ? " (scores with exact ties)" : "", n, p0, (p0 + n) / 4, bad);
    }
    void *bufs[] = {dq, dw, dkeys, dpos, dS};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) cudaFree(bufs[i]);
    free(q), free(w), free(keys), free(keysf), free(S);
}

/* The causal top-k alone on generated scores, tokens at p0 .. p0+n-1 (rows
 * past the kernel's shared-memory cache of 48k keys once p0 > 196,608):
 * normal scores, scores on a coarse grid (ties at the threshold, -0 and +0),
 * scores of one sign and exponent (one bin for every row in the first
 * radix pass), and scores a third of which tie at the maximum (every pass
 * ends in the same bin), each against the sort. */
static void test_topk_rows(ds4_rng *r, int n, int p0, int topk) {
    const int64_t lds = (p0 + n) / 4 + 1;
    float *S = malloc(sizeof(float) * n * lds), *dS = to_dev(NULL, sizeof(float) * n * lds);
    int *dpos = to_dev(&p0, sizeof(int));
    static const char *kind[] = {"normal scores", "scores with exact ties", "scores in [1, 2)",
                                 "a third of the scores tied at the top"};
    if (ds4k_prepare(4, 128, 256, 64, 128) != 0) check(false, "top-k: shared memory refused");
    for (int mode = 0; mode < 4; mode++) {
        for (int64_t i = 0; i < n * lds; i++) {
            const float x = ds4_rng_normal(r);
            S[i] = mode == 0   ? x
                   : mode == 1 ? roundf(x * 8.0f) / 8.0f
                   : mode == 2 ? 1.0f + ds4_rng_below(r, 1u << 20) / 1048576.0f
                               : (x > 0.4307f ? 3.0f : x);
        }
        cudaMemcpy(dS, S, sizeof(float) * n * lds, cudaMemcpyHostToDevice);
        const int bad = topk_vs_sort(S, dS, lds, n, p0, topk, dpos);
        check(bad == 0, "causal top-%d vs sort (%s): %d tokens at %d (up to %d rows): %d differ", topk, kind[mode], n,
              p0, (p0 + n) / 4, bad);
    }
    cudaFree(dS), cudaFree(dpos);
    free(S);
}

/* GPU time of the causal top-k of one decode token at several row counts
 * (topk-bench; not a test): 2k, 4k, 16k, 64k and 200k contexts. */
int topk_bench(void) {
    static const int rows[] = {513, 1024, 4096, 16384, 50000};
    const int K = 512, reps = 500;
    const int64_t lds = 50004;
    if (ds4k_prepare(4, 128, 256, 64, 128) != 0) {
        fprintf(stderr, "ds4-cuda-test topk-bench: the kernel's shared memory was refused\n");
        return 1;
    }
    ds4_rng r;
    ds4_rng_seed(&r, 5);
    float *S = malloc(sizeof(float) * lds);
    for (int64_t i = 0; i < lds; i++) S[i] = ds4_rng_normal(&r);
    float *dS = to_dev(S, sizeof(float) * lds);
    int *dpos = to_dev(NULL, sizeof(int)), *dnsel = to_dev(NULL, sizeof(int));
    int32_t *dsel = to_dev(NULL, sizeof(int32_t) * K);
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    static const char *form_name[] = {"one block", "a cluster of blocks"};
    for (int form = 0; form < 2; form++) {
        for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
            const int p = 4 * rows[i] - 1; /* the token whose (p + 1) / 4 rows are visible */
            cudaMemcpy(dpos, &p, sizeof(int), cudaMemcpyHostToDevice);
            for (int k = 0; k < 10; k++) ds4k_topk(dS, lds, 1, dpos, K, form > 0, dsel, dnsel, NULL);
            cudaEventRecord(e0, NULL);
            for (int k = 0; k < reps; k++) ds4k_topk(dS, lds, 1, dpos, K, form > 0, dsel, dnsel, NULL);
            cudaEventRecord(e1, NULL);
            if (cudaEventSynchronize(e1) != cudaSuccess) {
                fprintf(stderr, "ds4-cuda-test topk-bench: %s failed: %s\n", form_name[form],
                        cudaGetErrorString(cudaGetLastError()));
                return 1;
            }
            float ms = 0;
            cudaEventElapsedTime(&ms, e0, e1);
            printf("top-%d over %d rows (normal scores), %s: %.2f us a launch (%d back-to-back launches)\n", K,
                   rows[i], form_name[form], 1000.0 * ms / reps, reps);
        }
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaFree(dS), cudaFree(dpos), cudaFree(dnsel), cudaFree(dsel);
    free(S);
    return 0;
}

void test_attention_kernels(ds4_rng *r) {
    test_attention_decode(r, 1, 4095, 64, 512, 4, true, true, 0, DS4_ROW_F16);     /* decode, published CSA: 128 + 512 selected */
    test_attention_decode(r, 1, 70000, 64, 512, 128, false, false, 0, DS4_ROW_F16); /* decode, HCA: 128 + 546 rows */
    test_attention_decode(r, 1, 60, 64, 512, 0, false, false, 0, DS4_ROW_F16);      /* window only, short */
    test_attention_decode(r, 1, 300, 64, 512, 128, false, false, 700, DS4_ROW_F16); /* a graph's spare rows: empty tail chunks */
    test_attention_decode(r, 1, 140000, 64, 512, 128, false, false, 0, DS4_ROW_F16); /* HCA, 39 chunks: the block merge only */
    test_attention_decode(r, 8, 1500, 64, 512, 4, true, false, 0, DS4_ROW_F16);     /* 8 tokens, every compressed row */
    test_attention_decode(r, 3, 2100, 4, 128, 4, true, true, 0, DS4_ROW_F16);       /* the fixture models' 4 heads */
    if (!ds4k_topk_cluster_ready()) printf("note: no cluster top-k here; its checks test the one-block form\n");
    test_indexer_topk(r, 3, 8000, 64, 128, 512, false, DS4_ROW_F16);             /* 2,000 rows */
    test_indexer_topk(r, 2, 70000, 64, 128, 512, false, DS4_ROW_F16);            /* 17,500 rows: many per thread */
    test_indexer_topk(r, 6, 2046, 64, 128, 512, false, DS4_ROW_F16);             /* around the first selection: 511 .. 513 rows */
    test_indexer_topk(r, 2, 600, 4, 32, 8, false, DS4_ROW_F16);                  /* few heads, short keys */
    test_indexer_topk(r, 12, 8000, 64, 128, 512, false, DS4_ROW_F16);            /* a batch above 8: the 8-warp blocks */
    test_indexer_topk(r, 3, 8000, 64, 128, 512, true, DS4_ROW_F16);              /* FP4 grid, decode-sized: 128 rows a block */
    test_indexer_topk(r, 1, 65000, 64, 128, 512, true, DS4_ROW_F16);             /* ... one token at a 64k context */
    test_indexer_topk(r, 2, 2050, 64, 128, 512, true, DS4_ROW_F16);              /* ... 512 rows (not scored), 513 (a block of one) */
    test_topk_rows(r, 2, 230000, 512);  /* 57,500 rows: 8,348 past the cache, partial tiles */
    test_topk_rows(r, 3, 4093, 512);    /* 1,023 .. 1,024 rows: one tile, full and partial */
    test_topk_rows(r, 3, 65533, 512);   /* 16,383 .. 16,384 rows: a 64k context */
    test_topk_rows(r, 4, 200000, 2048); /* rows just past the cache (50,000 .. 50,001), a larger k */
    test_topk_rows(r, 1, 2051, 512);    /* decode: 513 rows, 68 a block of a whole cluster, the last 37 */
    test_topk_rows(r, 1, 65535, 512);   /* decode at a 64k context: 16,384 rows */
    test_topk_rows(r, 1, 39, 8);        /* 10 rows: blocks of the cluster with none */
    test_topk_rows(r, 9, 8000, 512);    /* 9 tokens: one block a token in every form */
    test_indexer_topk(r, 12, 8000, 64, 128, 512, true, DS4_ROW_F16);             /* FP4 grid above 8 tokens: tensor cores */
    test_indexer_topk(r, 12, 2040, 64, 128, 512, true, DS4_ROW_F16);             /* ... around the first selection */
    test_indexer_topk(r, 10, 70000, 64, 128, 512, true, DS4_ROW_F16);            /* ... 17,500 rows, 137 tiles a warp */
    /* the other formats of the cache (--kv-type): fp8 rows hold FP8-simulated
     * values, FP4 keys FP4-simulated ones, exactly */
    test_attention_decode(r, 1, 4095, 64, 512, 4, true, true, 0, DS4_ROW_FP8);
    test_attention_decode(r, 1, 70000, 64, 512, 128, false, false, 0, DS4_ROW_FP8);
    test_attention_decode(r, 8, 1500, 64, 512, 4, true, false, 0, DS4_ROW_FP8);
    test_attention_decode(r, 3, 2100, 4, 128, 4, true, true, 0, DS4_ROW_FP8);
    test_attention_decode(r, 1, 4095, 64, 512, 4, true, true, 0, DS4_ROW_BF16);
    test_attention_decode(r, 8, 1500, 64, 512, 4, true, false, 0, DS4_ROW_BF16);
    test_attention_decode(r, 2, 900, 64, 512, 4, true, false, 0, DS4_ROW_F32);
    test_indexer_topk(r, 3, 8000, 64, 128, 512, true, DS4_ROW_FP4);   /* decode-sized, tensor cores */
    test_indexer_topk(r, 1, 65000, 64, 128, 512, true, DS4_ROW_FP4);  /* one token at a 64k context */
    test_indexer_topk(r, 12, 8000, 64, 128, 512, true, DS4_ROW_FP4);  /* above 8 tokens */
    test_indexer_topk(r, 2, 600, 4, 32, 8, true, DS4_ROW_FP4);        /* the SIMT kernel's FP4 staging */
    test_indexer_topk(r, 3, 8000, 64, 128, 512, true, DS4_ROW_BF16);
    test_indexer_topk(r, 2, 8000, 64, 128, 512, false, DS4_ROW_BF16); /* the SIMT kernel */
    test_indexer_topk(r, 2, 8000, 64, 128, 512, false, DS4_ROW_F32);
}
