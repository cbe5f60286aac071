/* ds4-cuda-test — the prefill-only kernels against the decode kernels they
 * replace for whole chunks (each of which is itself tested against the CPU
 * in test_cuda.c and through the fixture models):
 *
 *   compressor  windows pooled in parallel + the state rewrite vs the serial
 *               kernel fed one token at a time: must be bitwise identical
 *               (rows and state), so a prompt's compressed rows do not depend
 *               on its chunking;
 *   attention   the tensor-core flash attention vs the SIMT kernel on random
 *               f16 rows: same sums in another order, bounded relative error;
 *   experts     the routed experts' segment products on gathered rows split
 *               once in place (ds4k_expert_split) vs the same tiles splitting
 *               the f32 rows themselves: must be bitwise identical; and both
 *               against the CPU's products; the two warpgroup-MMA kernels
 *               (producer-fed or not) against each other: bitwise;
 *   dense       the dense Q8_0 products with a scratch buffer (the warpgroup
 *               MMA in sm_90a builds) against the CPU, grouped and not, and
 *               a batch's first tokens alone through narrower tiles: the same
 *               bits (prefill chunks stay bitwise); several products over one
 *               input (ds4k_matmul_jobs) vs each alone: bitwise;
 *   precision   all of the above with the activations' lo halves (oracle
 *               mode), then the default, activations rounded to f16, at the
 *               model's widths: against the CPU on the activations rounded
 *               the same way (f32 rounding) and the exact CPU (2^-11). */
#include <math.h>
#include <string.h>

#include "cpu/matmul.h"
#include "cpu/ops.h"
#include "cuda_test_util.h"
#include "gguf/quant.h"
#include "model/model.h"
#include "util/f16.h"

static void set_pos(int *dpos, int p) { cudaMemcpy(dpos, &p, sizeof(int), cudaMemcpyHostToDevice); }

static bool pool_on(void) {
    const int on = ds4k_cmp_pool_enable(0);
    ds4k_cmp_pool_enable(on);
    return on != 0;
}

static void test_compressor_chunk(ds4_rng *r, int ratio, bool overlap, int width, bool fp8) {
    const int W = overlap ? 2 * width : width, slots = overlap ? 2 * ratio : ratio;
    const int p0 = 5, n = 300, n_rows = (p0 + n) / ratio + 1, n_pairs = 32;
    cmp_inputs in = cmp_inputs_make(r, n, W, ratio, width, slots);
    float *dkv = in.kv, *dgate = in.gate, *dnorm = in.norm, *st0 = in.st0;
    double *dfr = in.freqs;
    const ds4_dw dape = in.ape;
    int *dpos = to_dev(NULL, sizeof(int));
    float *dst[2];
    uint16_t *drows[2], *rows[2];
    float *st[2];
    for (int k = 0; k < 2; k++) {
        dst[k] = to_dev(st0, sizeof(float) * 2 * slots * W); /* st_kv then st_score */
        drows[k] = to_dev(NULL, 2 * (size_t)n_rows * width);
        cudaMemset(drows[k], 0, 2 * (size_t)n_rows * width);
    }
    /* 0: the whole chunk at once (parallel windows); 1: one token at a time */
    set_pos(dpos, p0);
    ds4k_compressor(dst[0], dst[0] + slots * W, ratio, overlap, W, dkv, dgate, &dape, dnorm, 1e-6f, width, dfr, n_pairs,
                    dpos, n, fp8, false, drows[0], DS4_ROW_F16, NULL, NULL, 0, NULL);
    for (int t = 0; t < n; t++) {
        set_pos(dpos, p0 + t);
        ds4k_compressor(dst[1], dst[1] + slots * W, ratio, overlap, W, dkv + (size_t)t * W, dgate + (size_t)t * W,
                        &dape, dnorm, 1e-6f, width, dfr, n_pairs, dpos, 1, fp8, false, drows[1], DS4_ROW_F16, NULL, NULL, 0, NULL);
    }
    for (int k = 0; k < 2; k++) {
        rows[k] = malloc(2 * (size_t)n_rows * width);
        st[k] = malloc(sizeof(float) * 2 * slots * W);
        from_dev(rows[k], drows[k], 2 * (size_t)n_rows * width);
        from_dev(st[k], dst[k], sizeof(float) * 2 * slots * W);
    }
    const bool same_rows = memcmp(rows[0], rows[1], 2 * (size_t)n_rows * width) == 0;
    const bool same_state = memcmp(st[0], st[1], sizeof(float) * 2 * slots * W) == 0;
    int nonzero = 0;
    for (size_t i = 0; i < (size_t)n_rows * width; i++) nonzero += rows[0][i] != 0;
    check(same_rows && same_state && nonzero > 0,
          "compressor ratio %3d%s%s: %d-token chunk vs one token at a time: rows %s, state %s", ratio,
          overlap ? " (overlap)" : "          ", ratio >= 32 && !pool_on() ? " (pooled in place)" : "", n,
          same_rows ? "bitwise identical" : "DIFFER",
          same_state ? "bitwise identical" : "DIFFERS");
    void *bufs[] = {dpos, dst[0], dst[1], drows[0], drows[1]};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) cudaFree(bufs[i]);
    cmp_inputs_free(&in);
    for (int k = 0; k < 2; k++) free(rows[k]), free(st[k]);
}

static void test_attention_mma(ds4_rng *r, int H, int hd, int ratio, bool csa) {
    const int n = 40, p0 = 600, window = 128, raw_cap = window + 64, n_pairs = 32, topk = 512;
    const int n_comp = (p0 + n) / ratio, max_rows = window + 1 + n_comp;
    ds4_hparams hp;
    ds4_hparams_published(&hp);
    double fr[32];
    ds4_rope_freqs(&hp, true, fr);
    float *q = rnd(r, (size_t)n * H * hd, 1.0f), *sinks = rnd(r, H, 1.0f);
    float *ringf = rnd(r, (size_t)raw_cap * hd, 1.0f), *compf = rnd(r, (size_t)n_comp * hd, 1.0f);
    uint16_t *ring = malloc(2 * (size_t)raw_cap * hd), *comp = malloc(2 * (size_t)n_comp * hd);
    for (size_t i = 0; i < (size_t)raw_cap * hd; i++) ring[i] = ds4_f32_to_f16(ringf[i]);
    for (size_t i = 0; i < (size_t)n_comp * hd; i++) comp[i] = ds4_f32_to_f16(compf[i]);
    int *n_sel = malloc(sizeof(int) * n);
    for (int t = 0; t < n; t++) n_sel[t] = -1; /* every visible compressed row */
    float *dq = to_dev(q, sizeof(float) * n * H * hd), *dsinks = to_dev(sinks, sizeof(float) * H);
    uint16_t *dring = to_dev(ring, 2 * (size_t)raw_cap * hd), *dcomp = to_dev(comp, 2 * (size_t)n_comp * hd);
    int *dnsel = to_dev(n_sel, sizeof(int) * n), *dpos = to_dev(&p0, sizeof(int));
    int32_t *dsel = to_dev(NULL, sizeof(int32_t) * n * topk);
    double *dfr = to_dev(fr, sizeof(fr));
    float *dout[2], *out[2];
    if (ds4k_prepare(H, hd, max_rows, 64, 128) != 0) {
        check(false, "attention: shared memory for %d rows refused", max_rows);
        return;
    }
    for (int k = 0; k < 2; k++) {
        dout[k] = to_dev(NULL, sizeof(float) * n * H * hd);
        out[k] = malloc(sizeof(float) * n * H * hd);
        ds4k_attention_mma_enable(k == 0);
        ds4k_attention(dq, n, dpos, H, hd, (float)(1.0 / sqrt((double)hd)), dsinks, dring, raw_cap, window, dcomp, ratio,
                       csa, dsel, dnsel, topk, DS4_ROW_F16, dfr, n_pairs, dout[k], max_rows, NULL, NULL, NULL);
        from_dev(out[k], dout[k], sizeof(float) * n * H * hd);
    }
    ds4k_attention_mma_enable(1);
    double worst = 0, mx = 0;
    for (size_t i = 0; i < (size_t)n * H * hd; i++) {
        worst = fmax(worst, fabs((double)out[0][i] - out[1][i]));
        mx = fmax(mx, fabs((double)out[1][i]));
    }
    check(worst / mx < 1e-5, "attention, tensor cores vs SIMT (%2d heads x %3d, ratio %3d, %3d rows): max |diff| / max|o| %.2e",
          H, hd, ratio, max_rows, worst / mx);
    void *bufs[] = {dq, dsinks, dring, dcomp, dnsel, dpos, dsel, dfr, dout[0], dout[1]};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) cudaFree(bufs[i]);
    free(q), free(sinks), free(ringf), free(compf), free(ring), free(comp), free(n_sel), free(out[0]), free(out[1]);
}


/* The segment table as the device reads it (cuda_layers.inc seg3h). */
typedef struct test_seg {
    int64_t row0;
    int x0, count;
} test_seg;

/* The token-tile width the expert products pick for segments of at most
 * max_count rows (cuda_mma.cu, cuda_wgmma.cu). */
static int tile_width(int max_count) { return max_count > 64 ? 128 : max_count > 32 ? 64 : 32; }

/* Set while the warpgroup MMA rounds the activations to f16 (its default,
 * ds4k_wgmma_exact_acts(0)); clear: the lo halves too (oracle mode). */
static bool g_acts_f16;
/* The bound, relative to |w| |x|, that a product of this type and K is held
 * to against the CPU's exact one: f32 rounding (1e-6), plus, where the
 * activations are rounded to f16, that rounding's own bound (2^-11 of each
 * |x_i|, and sum |w_i x_i| <= |w| |x|). */
static double acts_bound(int type, int64_t K) {
    if (!g_acts_f16 || !ds4k_wgmma_takes(type, K)) return 1e-6;
    /* Q8_0: its weights rounded to f16 too (scales folded in, twin_weights) */
    return type == DS4_TYPE_Q8_0 ? 1e-6 + 2.0 / 2048 + 1.0 / (2048.0 * 2048.0) : 1e-6 + 1.0 / 2048;
}
/* Where the product must also match the CPU's on the activations as the
 * kernel rounds them (round_f16_rows) to f32 rounding: every such type but
 * Q2_K, whose minimums take the exact activations' 16-sums. */
static bool twin_applies(int type, int64_t K) {
    return g_acts_f16 && ds4k_wgmma_takes(type, K) && type != DS4_TYPE_Q2_K;
}
/* The weights as the products take them where the activations are rounded
 * to f16 (cuda_wgmma.cu, wg_build_q8): Q8_0's as an F16 tensor of each
 * weight times its block's scale, rounded to f16 (the f32 product of two
 * f16 values is exact, so one rounding, as the GPU's f16 multiply); other
 * types as they are. The caller frees data where it is not t's. */
static ds4_tensor twin_weights(const ds4_tensor *t) {
    if (t->type != DS4_TYPE_Q8_0) return *t;
    const int64_t K = t->ne[0], rows = (int64_t)(t->size / ds4_row_bytes(t->type, K));
    uint16_t *h = malloc(sizeof(uint16_t) * rows * K);
    float *row = malloc(sizeof(float) * K);
    for (int64_t r = 0; r < rows; r++) {
        ds4_tensor_row(t, r, row); /* d * q, exact in f32 */
        for (int64_t k = 0; k < K; k++) h[r * K + k] = ds4_f32_to_f16(row[k]);
    }
    free(row);
    ds4_tensor f = *t;
    f.type = DS4_TYPE_F16, f.data = h, f.size = sizeof(uint16_t) * rows * K;
    return f;
}
static void twin_weights_free(const ds4_tensor *t, const ds4_tensor *f) {
    if (f->data != t->data) free((void *)f->data);
}

/* A copy of x (n tokens ld apart) with each split row (token t's group g: K
 * elements at t ld + g K) as the products see it without the lo halves: the
 * split scales the row by the power of two that brings its largest |x| to
 * [2^13, 2^14) (cuda_mma.cu, pow2_scales) and rounds it to f16; scaling back
 * is exact. */
static float *round_f16_rows(const float *x, int n, int groups, int64_t K, int64_t ld) {
    float *r = malloc(sizeof(float) * n * ld);
    memcpy(r, x, sizeof(float) * n * ld);
    for (int t = 0; t < n; t++)
        for (int g = 0; g < groups; g++) {
            float *row = r + t * ld + g * K, m = 0.0f;
            for (int64_t k = 0; k < K; k++) m = fmaxf(m, fabsf(row[k]));
            int e = 0;
            if (m > 0.0f) frexpf(m, &e);
            e = e < -100 ? -100 : e;
            for (int64_t k = 0; k < K; k++) row[k] = ldexpf(ds4_round_f16(ldexpf(row[k], 14 - e)), e - 14);
        }
    return r;
}

/* Routed-expert products over segments of gathered rows (one expert each,
 * counts up to 150: every tile width, a second token tile, rows not a
 * multiple of the 128-row block). */
static void test_expert_split(ds4_rng *r, int type, int64_t K, const int *counts, int n_segs) {
    const int E = 4, rows = 40;
    const size_t rb = ds4_row_bytes(type, K);
    float *wf = rnd(r, (size_t)E * rows * K, 0.05f);
    uint8_t *w = malloc(rb * E * rows);
    for (int i = 0; i < E * rows; i++) ds4_quantize_row(type, wf + (size_t)i * K, w + (size_t)i * rb, K);
    ds4_tensor t = {.name = "e", .type = type, .n_dims = 3, .ne = {K, rows, E, 1}, .data = w, .size = rb * E * rows};
    ds4_dw d = {type, to_dev(w, rb * E * rows), K, E * rows};
    test_seg segs[8];
    int pairs = 0, max_count = 0;
    for (int i = 0; i < n_segs; i++) {
        segs[i] = (test_seg){(int64_t)((i * 3 + 1) % E) * rows, pairs, counts[i]};
        pairs += counts[i];
        max_count = counts[i] > max_count ? counts[i] : max_count;
    }
    float *x = rnd(r, (size_t)pairs * K, 1.0f);
    for (int64_t k = 0; k < K; k++) x[k] *= 1e-3f; /* a row of small values: its own scale */
    float *dx = to_dev(x, sizeof(float) * pairs * K), *dx2 = to_dev(x, sizeof(float) * pairs * K);
    float *daux = to_dev(NULL, sizeof(float) * pairs * (1 + K / 16));
    float *dy = to_dev(NULL, sizeof(float) * pairs * rows), *dy2 = to_dev(NULL, sizeof(float) * pairs * rows);
    int32_t *dsegs = to_dev(segs, sizeof(test_seg) * n_segs);
    ds4k_expert_matmul(&d, rows, dsegs, n_segs, max_count, dx, NULL, pairs, K, dy, rows, NULL);
    const ds4_dw *readers[1] = {&d};
    const int rc = ds4k_expert_split(readers, 1, dx2, pairs, K, daux, NULL);
    ds4k_expert_matmul(&d, rows, dsegs, n_segs, max_count, dx2, daux, pairs, K, dy2, rows, NULL);
    float *y = malloc(sizeof(float) * pairs * rows), *y2 = malloc(sizeof(float) * pairs * rows);
    float *yc = malloc(sizeof(float) * pairs * rows), *scratch = malloc(sizeof(float) * DS4_MM_ROW_BLOCK * K);
    from_dev(y, dy, sizeof(float) * pairs * rows);
    from_dev(y2, dy2, sizeof(float) * pairs * rows);
    double worst = 0, worst2 = 0, worst16 = 0; /* split per tile, split once; split once vs x in f16 */
    const bool twin = twin_applies(type, K);
    float *xr = twin ? round_f16_rows(x, pairs, 1, K, K) : NULL;
    const ds4_tensor tw = twin ? twin_weights(&t) : t;
    for (int i = 0; i < n_segs; i++) {
        const test_seg *sg = &segs[i];
        ds4_matmul_serial(&t, sg->row0, rows, x + (size_t)sg->x0 * K, K, sg->count, yc + (size_t)sg->x0 * rows, rows,
                          scratch);
        for (int tk = sg->x0; tk < sg->x0 + sg->count; tk++) {
            const size_t o = (size_t)tk * rows;
            worst = fold_max(worst, dot_error(&t, sg->row0, rows, x + (size_t)tk * K, y + o, yc + o));
            worst2 = fold_max(worst2, dot_error(&t, sg->row0, rows, x + (size_t)tk * K, y2 + o, yc + o));
        }
        if (!twin) continue;
        ds4_matmul_serial(&tw, sg->row0, rows, xr + (size_t)sg->x0 * K, K, sg->count, yc + (size_t)sg->x0 * rows,
                          rows, scratch);
        for (int tk = sg->x0; tk < sg->x0 + sg->count; tk++) {
            const size_t o = (size_t)tk * rows;
            worst16 = fold_max(worst16, dot_error(&tw, sg->row0, rows, xr + (size_t)tk * K, y2 + o, yc + o));
        }
    }
    twin_weights_free(&t, &tw);
    free(xr);
    const double bound = acts_bound(type, K);
    /* split rows of a wgmma weight go to the warpgroup-MMA kernel: its own
     * summation order, so both products are held to the CPU instead; its sums
     * must not depend on the tile width (prefill chunks stay bitwise), so the
     * same rows also go through the wider tiles (a larger max_count only
     * widens them) and must give the same bits */
    const bool wg = ds4k_wgmma_takes(type, K) != 0;
    const bool same = memcmp(y, y2, sizeof(float) * pairs * rows) == 0;
    bool widths_same = true;
    const int wider[2] = {48, 100}; /* counts that pick 64- and 128-token tiles */
    for (int i = 0; wg && i < 2; i++) {
        if (tile_width(wider[i]) <= tile_width(max_count)) continue;
        cudaMemset(dy, 0, sizeof(float) * pairs * rows);
        ds4k_expert_matmul(&d, rows, dsegs, n_segs, wider[i], dx2, daux, pairs, K, dy, rows, NULL);
        from_dev(y, dy, sizeof(float) * pairs * rows);
        widths_same &= memcmp(y, y2, sizeof(float) * pairs * rows) == 0;
    }
    /* the two warpgroup-MMA kernels (producer-fed or not), and the
     * producer-fed one at one block a multiprocessor where it takes two
     * (narrow tiles without the lo halves), make the same products in the
     * same order: each switch flipped gives the same bits (where the
     * producer-fed kernel takes these rows; elsewhere every run would be the
     * other kernel) */
    const bool pc = wg && ds4k_wgmma_producer_takes(type, K);
    const size_t ybytes = sizeof(float) * pairs * rows;
    bool kernels_same = true;
    int (*const flips[2])(int) = {ds4k_wgmma_producer_enable, ds4k_wgmma_two_blocks};
    for (int f = 0; pc && f < 2; f++) {
        const int was = flips[f](0);
        flips[f](!was);
        cudaMemset(dy, 0, ybytes);
        ds4k_expert_matmul(&d, rows, dsegs, n_segs, max_count, dx2, daux, pairs, K, dy, rows, NULL);
        flips[f](was);
        from_dev(y, dy, ybytes);
        kernels_same &= memcmp(y, y2, ybytes) == 0;
    }
    check(rc == 0 && (wg || same) && widths_same && kernels_same && worst < bound && worst2 < bound,
          "expert tiles %-8s K=%-4lld (%d segments, up to %3d rows each)%s: split once %s split per tile: %s, "
          "max |diff| / (|w| |x|) vs CPU %.2e (split once %.2e; bound %.1e)%s%s",
          ds4_type_name(type), (long long)K, n_segs, max_count, g_acts_f16 ? ", x in f16" : "",
          wg ? "(wgmma) vs" : "==", same ? "bitwise" : (wg ? "differ" : "DIFFER"), worst, worst2, bound,
          !wg || tile_width(max_count) == 128 ? ""
          : widths_same                       ? "; wider tiles bitwise"
                                              : "; wider tiles DIFFER",
          !pc ? "" : kernels_same ? "; both wgmma kernels and 1 or 2 blocks an SM bitwise" : "; wgmma kernels DIFFER");
    if (twin)
        check(worst16 < 1e-6, "expert tiles %-8s K=%-4lld, x in f16: vs CPU on x rounded to f16 %.2e",
              ds4_type_name(type), (long long)K, worst16);
    free(scratch);
    free(yc);
    free(y2);
    free(y);
    cudaFree(dsegs);
    cudaFree(dy2);
    cudaFree(dy);
    cudaFree(daux);
    cudaFree(dx2);
    cudaFree(dx);
    cudaFree((void *)d.ptr);
    free(x);
    free(w);
    free(wf);
}

/* The routed experts' split rows gathered from the batch's dense split
 * (ds4k_matmul_jobs_split's scratch, ds4k_expert_gather_split) against the
 * floats gathered and split in place (ds4k_gather_rows, ds4k_expert_split):
 * the same scales and hi (and, with them, lo) halves, so bitwise the same
 * routed products. n_tok batch rows (one of small values: its own scale),
 * pairs gathered rows over two expert segments. */
static void test_expert_gather_split(ds4_rng *r, int64_t K, int n_tok, int pairs) {
    const int E = 2, rows = 64;
    const size_t rb = ds4_row_bytes(DS4_TYPE_IQ2_XXS, K), qb = ds4_row_bytes(DS4_TYPE_Q8_0, K);
    float *wf = rnd(r, (size_t)E * rows * K, 0.05f);
    uint8_t *w = malloc(rb * E * rows), *wq = malloc(qb * rows);
    for (int i = 0; i < E * rows; i++) ds4_quantize_row(DS4_TYPE_IQ2_XXS, wf + (size_t)i * K, w + (size_t)i * rb, K);
    for (int i = 0; i < rows; i++) ds4_quantize_row(DS4_TYPE_Q8_0, wf + (size_t)i * K, wq + (size_t)i * qb, K);
    ds4_dw d = {DS4_TYPE_IQ2_XXS, to_dev(w, rb * E * rows), K, E * rows}, dq = {DS4_TYPE_Q8_0, to_dev(wq, qb * rows), K, rows};
    float *x = rnd(r, (size_t)n_tok * K, 1.0f);
    for (int64_t k = 0; k < K; k++) x[K + k] *= 1e-3f;
    int32_t *idx = malloc(sizeof(int32_t) * pairs);
    for (int i = 0; i < pairs; i++) idx[i] = (int32_t)ds4_rng_below(r, (uint32_t)n_tok);
    const test_seg segs[2] = {{0, 0, pairs / 3}, {rows, pairs / 3, pairs - pairs / 3}};
    const size_t cap = (size_t)n_tok * (K + 1);
    float *dx = to_dev(x, sizeof(float) * n_tok * K), *dscr = to_dev(NULL, sizeof(float) * cap);
    float *dq_y = to_dev(NULL, sizeof(float) * n_tok * rows);
    float *da = to_dev(NULL, sizeof(float) * pairs * K), *db = to_dev(NULL, sizeof(float) * pairs * K);
    float *auxa = to_dev(NULL, sizeof(float) * pairs * (1 + K / 16)), *auxb = to_dev(NULL, sizeof(float) * pairs * (1 + K / 16));
    float *dya = to_dev(NULL, sizeof(float) * pairs * rows), *dyb = to_dev(NULL, sizeof(float) * pairs * rows);
    int32_t *didx = to_dev(idx, sizeof(int32_t) * pairs), *dsegs = to_dev(segs, sizeof(segs));
    const ds4_mm_job job = {&dq, 0, rows, 0, dq_y, rows};
    const int64_t split_k = ds4k_matmul_jobs_split(&job, 1, dx, K, n_tok, dscr, cap, 0, NULL);
    const ds4_dw *readers[1] = {&d};
    ds4k_gather_rows(dx, K, didx, pairs, (int)K, da, NULL);
    const int rca = ds4k_expert_split(readers, 1, da, pairs, K, auxa, NULL);
    const int rcb = split_k == K ? ds4k_expert_gather_split(readers, 1, dscr, n_tok, didx, pairs, db, K, auxb, NULL) : -1;
    const int max_count = pairs - pairs / 3;
    ds4k_expert_matmul(&d, rows, dsegs, 2, max_count, da, rca == 0 ? auxa : NULL, pairs, K, dya, rows, NULL);
    ds4k_expert_matmul(&d, rows, dsegs, 2, max_count, db, rcb == 0 ? auxb : NULL, pairs, K, dyb, rows, NULL);
    const size_t yb_bytes = sizeof(float) * pairs * rows;
    float *ya = malloc(yb_bytes), *yb = malloc(yb_bytes);
    float *sa = malloc(sizeof(float) * pairs), *sb = malloc(sizeof(float) * pairs);
    from_dev(ya, dya, yb_bytes);
    from_dev(yb, dyb, yb_bytes);
    from_dev(sa, auxa + (size_t)pairs * (K / 16), sizeof(float) * pairs);
    from_dev(sb, auxb + (size_t)pairs * (K / 16), sizeof(float) * pairs);
    const bool wg = ds4k_wgmma_takes(DS4_TYPE_IQ2_XXS, K) != 0;
    const bool same = memcmp(ya, yb, yb_bytes) == 0 && memcmp(sa, sb, sizeof(float) * pairs) == 0;
    check(wg ? rca == 0 && rcb == 0 && same : rcb != 0,
          "expert rows gathered from the dense split, K=%lld, %d of %d rows%s: %s", (long long)K, pairs, n_tok,
          g_acts_f16 ? ", x in f16" : "",
          !wg ? (rcb != 0 ? "declined (no wgmma)" : "TAKEN without wgmma")
              : rcb != 0 ? "DECLINED"
              : same     ? "scales and products bitwise those of gather + split"
                         : "DIFFER from gather + split");
    /* gate and up in one launch (ds4k_expert_matmul2): each matrix's
     * products bitwise its own launch's; the second matrix is the first's
     * second expert, so both segments (expert 0 of each) read other weights */
    const ds4_dw d2 = {DS4_TYPE_IQ2_XXS, (const uint8_t *)d.ptr + rb * rows, K, rows};
    const test_seg segs2[2] = {{0, 0, pairs / 3}, {0, pairs / 3, pairs - pairs / 3}};
    int32_t *dsegs2 = to_dev(segs2, sizeof(segs2));
    float *dy1 = to_dev(NULL, yb_bytes), *dy2 = to_dev(NULL, yb_bytes);
    float *y1 = malloc(yb_bytes), *y2 = malloc(yb_bytes), *y2s = malloc(yb_bytes);
    const float *aux = rca == 0 ? auxa : NULL;
    ds4k_expert_matmul(&d2, rows, dsegs2, 2, max_count, da, aux, pairs, K, dyb, rows, NULL);
    from_dev(y2s, dyb, yb_bytes);
    ds4k_expert_matmul(&d, rows, dsegs2, 2, max_count, da, aux, pairs, K, dyb, rows, NULL);
    from_dev(yb, dyb, yb_bytes);
    const int was = ds4k_expert_pair_enable(1);
    ds4k_expert_matmul2(&d, &d2, rows, dsegs2, 2, max_count, da, aux, pairs, K, dy1, dy2, rows, NULL);
    ds4k_expert_pair_enable(was);
    from_dev(y1, dy1, yb_bytes);
    from_dev(y2, dy2, yb_bytes);
    const bool pair_same = memcmp(y1, yb, yb_bytes) == 0 && memcmp(y2, y2s, yb_bytes) == 0;
    check(pair_same, "expert gate and up in one launch, K=%lld, %d rows%s: %s", (long long)K, pairs,
          g_acts_f16 ? ", x in f16" : "", pair_same ? "bitwise a launch each" : "DIFFER from a launch each");
    free(y2s), free(y2), free(y1);
    cudaFree(dy2), cudaFree(dy1), cudaFree(dsegs2);
    free(sb), free(sa), free(yb), free(ya);
    cudaFree(dsegs), cudaFree(didx), cudaFree(dyb), cudaFree(dya), cudaFree(auxb), cudaFree(auxa);
    cudaFree(db), cudaFree(da), cudaFree(dq_y), cudaFree(dscr), cudaFree(dx);
    cudaFree((void *)dq.ptr), cudaFree((void *)d.ptr);
    free(idx), free(x), free(wq), free(w), free(wf);
}

/* The routed experts' down input: the SwiGLU inside the split
 * (ds4k_expert_split_swiglu) against ds4k_swiglu then ds4k_expert_split:
 * bitwise the same scales and 16-sums and so the same products (whose
 * inputs, the lo halves aside, are all the split writes). A row of small
 * values (its own scale) and values past the clamp L. */
static void test_expert_split_swiglu(ds4_rng *r, int type, int64_t K, int pairs) {
    const int E = 2, rows = 64;
    const float L = 2.5f;
    const size_t rb = ds4_row_bytes(type, K);
    float *wf = rnd(r, (size_t)E * rows * K, 0.05f);
    uint8_t *w = malloc(rb * E * rows);
    for (int i = 0; i < E * rows; i++) ds4_quantize_row(type, wf + (size_t)i * K, w + (size_t)i * rb, K);
    ds4_dw d = {type, to_dev(w, rb * E * rows), K, E * rows};
    float *g = rnd(r, (size_t)pairs * K, 3.0f), *u = rnd(r, (size_t)pairs * K, 3.0f), *wt = rnd(r, (size_t)pairs, 1.0f);
    for (int64_t k = 0; k < K; k++) g[K + k] *= 1e-3f;
    const test_seg segs[2] = {{0, 0, pairs / 2}, {rows, pairs / 2, pairs - pairs / 2}};
    const size_t xb = sizeof(float) * pairs * K, ab = sizeof(float) * pairs * (1 + K / 16);
    float *dga = to_dev(g, xb), *dgb = to_dev(g, xb), *du = to_dev(u, xb), *dw = to_dev(wt, sizeof(float) * pairs);
    float *auxa = to_dev(NULL, ab), *auxb = to_dev(NULL, ab);
    float *dya = to_dev(NULL, sizeof(float) * pairs * rows), *dyb = to_dev(NULL, sizeof(float) * pairs * rows);
    int32_t *dsegs = to_dev(segs, sizeof(segs));
    cudaMemset(auxa, 0, ab);
    cudaMemset(auxb, 0, ab);
    const ds4_dw *readers[1] = {&d};
    ds4k_swiglu(dga, du, pairs, (int)K, L, dw, NULL);
    const int rca = ds4k_expert_split(readers, 1, dga, pairs, K, auxa, NULL);
    const int rcb = ds4k_expert_split_swiglu(readers, 1, dgb, du, L, dw, pairs, K, auxb, NULL);
    const int max_count = pairs - pairs / 2;
    ds4k_expert_matmul(&d, rows, dsegs, 2, max_count, dga, rca == 0 ? auxa : NULL, pairs, K, dya, rows, NULL);
    ds4k_expert_matmul(&d, rows, dsegs, 2, max_count, dgb, rcb == 0 ? auxb : NULL, pairs, K, dyb, rows, NULL);
    float *ya = malloc(sizeof(float) * pairs * rows), *yb = malloc(sizeof(float) * pairs * rows);
    float *aa = malloc(ab), *abb = malloc(ab);
    from_dev(ya, dya, sizeof(float) * pairs * rows);
    from_dev(yb, dyb, sizeof(float) * pairs * rows);
    from_dev(aa, auxa, ab);
    from_dev(abb, auxb, ab);
    const bool same = memcmp(ya, yb, sizeof(float) * pairs * rows) == 0 && memcmp(aa, abb, ab) == 0;
    const int tiles_on = ds4k_mma_enable(1); /* the tiles take these readers: both splits must run */
    ds4k_mma_enable(tiles_on);
    check((tiles_on ? rca == 0 && rcb == 0 : rca == rcb) && same, "expert down input, SwiGLU inside the split, %-8s K=%lld, %d rows%s: %s",
          ds4_type_name(type), (long long)K, pairs, g_acts_f16 ? ", x in f16" : "",
          rca != rcb ? "TAKEN BY ONE PATH ONLY"
          : rca != 0 ? (same ? "both declined, products the same" : "both declined, products DIFFER")
          : same     ? "scales, 16-sums and products bitwise those of swiglu + split"
                     : "DIFFER from swiglu + split");
    free(abb), free(aa), free(yb), free(ya);
    cudaFree(dsegs), cudaFree(dyb), cudaFree(dya), cudaFree(auxb), cudaFree(auxa);
    cudaFree(dw), cudaFree(du), cudaFree(dgb), cudaFree(dga), cudaFree((void *)d.ptr);
    free(wt), free(u), free(g), free(w), free(wf);
}

/* A reader whose weights the tiles do not take: the split declines and the
 * rows keep their floats. */
static void test_expert_split_declines(ds4_rng *r) {
    const int n = 3;
    const int64_t K = 64;
    float *x = rnd(r, (size_t)n * K, 1.0f), *back = malloc(sizeof(float) * n * K);
    float *dx = to_dev(x, sizeof(float) * n * K), *daux = to_dev(NULL, sizeof(float) * n * (1 + K / 16));
    ds4_dw d = {DS4_TYPE_F32, to_dev(NULL, sizeof(float) * K * 8), K, 8};
    const ds4_dw *readers[1] = {&d};
    const int rc = ds4k_expert_split(readers, 1, dx, n, K, daux, NULL);
    from_dev(back, dx, sizeof(float) * n * K);
    check(rc == -1 && memcmp(back, x, sizeof(float) * n * K) == 0,
          "expert split declines F32 readers and leaves the rows as they were");
    cudaFree((void *)d.ptr);
    cudaFree(daux);
    cudaFree(dx);
    free(back);
    free(x);
}

/* Dense products through a scratch buffer (ds4k_matmul_scratch,
 * ds4k_matmul_groups): W holds groups x rows rows of K, token t's group g
 * input at x + t ldx + g K. `cap` < the need (or 0) takes the tiles without
 * scratch, which must agree with the CPU just the same. */
static void test_dense_scratch(ds4_rng *r, int type, int64_t K, int rows, int n, int groups, bool enough) {
    const int64_t ldx = groups * K + 8, R = (int64_t)groups * rows;
    const size_t rb = ds4_row_bytes(type, K);
    float *wf = rnd(r, (size_t)(R * K), 0.05f);
    uint8_t *w = malloc(rb * R);
    for (int64_t i = 0; i < R; i++) ds4_quantize_row(type, wf + i * K, w + i * rb, K);
    ds4_tensor t = {.name = "d", .type = type, .n_dims = 2, .ne = {K, R, 1, 1}, .data = w, .size = rb * R};
    ds4_dw d = {type, to_dev(w, rb * R), K, R};
    float *x = rnd(r, (size_t)n * ldx, 1.0f);
    for (int64_t k = 0; k < ldx; k++) x[ldx + k] *= 1e-3f; /* a token of small values: its own scale */
    const size_t need = (size_t)n * groups * (K + 1), cap = enough ? need + 100 : need - 1;
    float *dx = to_dev(x, sizeof(float) * n * ldx), *dscr = to_dev(NULL, sizeof(float) * need + 400);
    float *dy = to_dev(NULL, sizeof(float) * n * R), *dy2 = to_dev(NULL, sizeof(float) * n * R);
    if (groups == 1) ds4k_matmul_scratch(&d, 0, rows, dx, ldx, n, dy, R, dscr, cap, NULL);
    else ds4k_matmul_groups(&d, rows, groups, dx, K, ldx, n, dy, rows, R, dscr, cap, NULL);
    /* the first tokens alone, in a batch of their own (a narrower tile where
     * n > 64): the same bits. Batches of at most 16 leave none that the
     * GEMV (8 tokens or fewer) would not take instead. */
    const int n2 = n > 64 ? 40 : n > 16 ? n / 2 : 0;
    if (n2 > 0 && groups == 1) ds4k_matmul_scratch(&d, 0, rows, dx, ldx, n2, dy2, R, dscr, cap, NULL);
    else if (n2 > 0) ds4k_matmul_groups(&d, rows, groups, dx, K, ldx, n2, dy2, rows, R, dscr, cap, NULL);
    float *y = malloc(sizeof(float) * n * R), *y2 = malloc(sizeof(float) * n * R), *yc = malloc(sizeof(float) * n * R);
    from_dev(y, dy, sizeof(float) * n * R);
    from_dev(y2, dy2, sizeof(float) * n2 * R);
    float *scratch = malloc(sizeof(float) * DS4_MM_ROW_BLOCK * K);
    for (int g = 0; g < groups; g++)
        ds4_matmul_serial(&t, (int64_t)g * rows, rows, x + g * K, ldx, n, yc + (int64_t)g * rows, R, scratch);
    double worst = 0, worst16 = 0;
    for (int tk = 0; tk < n; tk++)
        for (int g = 0; g < groups; g++) {
            const size_t o = (size_t)tk * R + (size_t)g * rows;
            worst = fold_max(worst, dot_error(&t, (int64_t)g * rows, rows, x + tk * ldx + g * K, y + o, yc + o));
        }
    const bool twin = enough && twin_applies(type, K);
    if (twin) { /* the same against the CPU on x rounded to f16 */
        float *xr = round_f16_rows(x, n, groups, K, ldx);
        const ds4_tensor tw = twin_weights(&t);
        for (int g = 0; g < groups; g++)
            ds4_matmul_serial(&tw, (int64_t)g * rows, rows, xr + g * K, ldx, n, yc + (int64_t)g * rows, R, scratch);
        for (int tk = 0; tk < n; tk++)
            for (int g = 0; g < groups; g++) {
                const size_t o = (size_t)tk * R + (size_t)g * rows;
                worst16 = fold_max(worst16,
                                   dot_error(&tw, (int64_t)g * rows, rows, xr + tk * ldx + g * K, y + o, yc + o));
            }
        twin_weights_free(&t, &tw);
        free(xr);
    }
    const double bound = enough ? acts_bound(type, K) : 1e-6;
    const bool wg = enough && ds4k_wgmma_takes(type, K) != 0 && n2 > 0;
    const bool narrow_same = memcmp(y, y2, sizeof(float) * n2 * R) == 0;
    /* the other warpgroup-MMA kernel (producer-fed or not): the same bits,
     * where the producer-fed one takes these rows */
    const bool pc = enough && ds4k_wgmma_producer_takes(type, K);
    bool kernels_same = true, tiles_same = true;
    if (pc) {
        const int was = ds4k_wgmma_producer_enable(0);
        ds4k_wgmma_producer_enable(!was);
        if (groups == 1) ds4k_matmul_scratch(&d, 0, rows, dx, ldx, n, dy2, R, dscr, cap, NULL);
        else ds4k_matmul_groups(&d, rows, groups, dx, K, ldx, n, dy2, rows, R, dscr, cap, NULL);
        ds4k_wgmma_producer_enable(was);
        float *y3 = malloc(sizeof(float) * n * R);
        from_dev(y3, dy2, sizeof(float) * n * R);
        kernels_same = memcmp(y, y3, sizeof(float) * n * R) == 0;
        /* three blocks taking every tile in turn: the same bits */
        const int blocks = ds4k_wgmma_tile_blocks(3);
        cudaMemset(dy2, 0, sizeof(float) * n * R);
        if (groups == 1) ds4k_matmul_scratch(&d, 0, rows, dx, ldx, n, dy2, R, dscr, cap, NULL);
        else ds4k_matmul_groups(&d, rows, groups, dx, K, ldx, n, dy2, rows, R, dscr, cap, NULL);
        ds4k_wgmma_tile_blocks(blocks);
        from_dev(y3, dy2, sizeof(float) * n * R);
        tiles_same = memcmp(y, y3, sizeof(float) * n * R) == 0;
        free(y3);
    }
    char twin_note[64] = "";
    if (twin) snprintf(twin_note, sizeof twin_note, "; on x rounded to f16 %.2e", worst16);
    check(worst < bound && worst16 < 1e-6 && (!wg || narrow_same) && kernels_same && tiles_same,
          "dense %-4s K=%-4lld %3d rows x %d group%s, %3d tokens, scratch %s%s: max |diff| / (|w| |x|) vs CPU %.2e%s%s%s%s",
          ds4_type_name(type), (long long)K, rows, groups, groups > 1 ? "s" : " ", n,
          enough ? (ds4k_wgmma_takes(type, K) ? "(wgmma)" : "(tiles)") : "too small (tiles)",
          g_acts_f16 ? ", x in f16" : "", worst, twin_note,
          !wg ? "" : narrow_same ? "; first tokens alone bitwise" : "; first tokens alone DIFFER",
          !pc ? "" : kernels_same ? "; both wgmma kernels bitwise" : "; wgmma kernels DIFFER",
          !pc ? "" : tiles_same ? "; 3 blocks of all tiles bitwise" : "; 3 blocks of all tiles DIFFER");
    free(scratch);
    free(yc);
    free(y2);
    free(y);
    cudaFree(dy2);
    cudaFree(dy);
    cudaFree(dscr);
    cudaFree(dx);
    cudaFree((void *)d.ptr);
    free(x);
    free(w);
    free(wf);
}

/* Several products over the same activations (ds4k_matmul_jobs): each
 * weight type's jobs in one launch after one split, the rest one by one;
 * every output must be bitwise that of the job alone (ds4k_matmul_scratch,
 * itself held to the CPU above), and within the CPU's bound here too. */
static void test_dense_jobs(ds4_rng *r, int64_t K, int n) {
    enum { NJ = 6 };
    const int types[NJ] = {DS4_TYPE_Q8_0, DS4_TYPE_F16, DS4_TYPE_Q8_0, DS4_TYPE_F16, DS4_TYPE_Q4_K, DS4_TYPE_F16};
    const int rows[NJ] = {300, 64, 130, 200, 70, 37}; /* Q8_0 130: a row block of 300's three skipped */
    const int64_t ldx = K + 8;
    float *x = rnd(r, (size_t)n * ldx, 1.0f);
    float *dx = to_dev(x, sizeof(float) * n * ldx);
    const size_t cap = (size_t)n * (K + 1) + 64;
    float *dscr = to_dev(NULL, sizeof(float) * cap);
    ds4_dw d[NJ];
    ds4_tensor t[NJ];
    ds4_mm_job jobs[NJ];
    float *dy[NJ], *dy1[NJ];
    uint8_t *w[NJ];
    for (int j = 0; j < NJ; j++) {
        const size_t rb = ds4_row_bytes(types[j], K);
        float *wf = rnd(r, (size_t)rows[j] * K, 0.05f);
        w[j] = malloc(rb * rows[j]);
        for (int i = 0; i < rows[j]; i++) ds4_quantize_row(types[j], wf + (size_t)i * K, w[j] + i * rb, K);
        free(wf);
        t[j] = (ds4_tensor){.name = "j", .type = types[j], .n_dims = 2, .ne = {K, rows[j], 1, 1}, .data = w[j],
                            .size = rb * rows[j]};
        d[j] = (ds4_dw){types[j], to_dev(w[j], rb * rows[j]), K, rows[j]};
        dy[j] = to_dev(NULL, sizeof(float) * n * rows[j]);
        dy1[j] = to_dev(NULL, sizeof(float) * n * rows[j]);
        jobs[j] = (ds4_mm_job){&d[j], 0, rows[j], 0, dy[j], rows[j]};
    }
    ds4k_matmul_jobs(jobs, NJ, dx, ldx, n, dscr, cap, NULL);
    for (int j = 0; j < NJ; j++) ds4k_matmul_scratch(&d[j], 0, rows[j], dx, ldx, n, dy1[j], rows[j], dscr, cap, NULL);
    bool same = true;
    /* again with three blocks taking every tile in turn (the row blocks a
     * product of fewer rows lacks skipped): the same bits */
    float *dy3[NJ];
    const int blocks = ds4k_wgmma_tile_blocks(3);
    for (int j = 0; j < NJ; j++) {
        dy3[j] = to_dev(NULL, sizeof(float) * n * rows[j]);
        jobs[j].Y = dy3[j];
    }
    ds4k_matmul_jobs(jobs, NJ, dx, ldx, n, dscr, cap, NULL);
    ds4k_wgmma_tile_blocks(blocks);
    for (int j = 0; j < NJ; j++) {
        const size_t sz = (size_t)n * rows[j];
        float *a = malloc(sizeof(float) * sz), *b = malloc(sizeof(float) * sz);
        from_dev(a, dy[j], sizeof(float) * sz);
        from_dev(b, dy3[j], sizeof(float) * sz);
        same &= memcmp(a, b, sizeof(float) * sz) == 0;
        free(b);
        free(a);
        cudaFree(dy3[j]);
    }
    double worst = 0, worst16 = 0; /* vs the CPU, in units of each job's bound; on x rounded to f16 */
    float *scratch = malloc(sizeof(float) * DS4_MM_ROW_BLOCK * K);
    float *xr = round_f16_rows(x, n, 1, K, ldx);
    for (int j = 0; j < NJ; j++) {
        const size_t sz = (size_t)n * rows[j];
        float *y = malloc(sizeof(float) * sz), *y1 = malloc(sizeof(float) * sz), *yc = malloc(sizeof(float) * sz);
        from_dev(y, dy[j], sizeof(float) * sz);
        from_dev(y1, dy1[j], sizeof(float) * sz);
        same &= memcmp(y, y1, sizeof(float) * sz) == 0;
        ds4_matmul_serial(&t[j], 0, rows[j], x, ldx, n, yc, rows[j], scratch);
        const double bound = acts_bound(types[j], K);
        for (int tk = 0; tk < n; tk++)
            worst = fold_max(worst, dot_error(&t[j], 0, rows[j], x + tk * ldx, y + (size_t)tk * rows[j],
                                              yc + (size_t)tk * rows[j]) / bound);
        if (twin_applies(types[j], K)) {
            const ds4_tensor tw = twin_weights(&t[j]);
            ds4_matmul_serial(&tw, 0, rows[j], xr, ldx, n, yc, rows[j], scratch);
            for (int tk = 0; tk < n; tk++)
                worst16 = fold_max(worst16, dot_error(&tw, 0, rows[j], xr + tk * ldx, y + (size_t)tk * rows[j],
                                                      yc + (size_t)tk * rows[j]));
            twin_weights_free(&t[j], &tw);
        }
        free(yc);
        free(y1);
        free(y);
        cudaFree(dy1[j]);
        cudaFree(dy[j]);
        cudaFree((void *)d[j].ptr);
        free(w[j]);
    }
    check(same && worst < 1.0 && worst16 < 1e-6,
          "dense jobs K=%-4lld %3d tokens (2 Q8_0, 3 F16, 1 Q4_K; also by 3 blocks of all tiles)%s: each %s the job "
          "alone, max |diff| / (|w| |x|) vs CPU %.2f of its bound%s%.2e",
          (long long)K, n, g_acts_f16 ? ", x in f16" : "", same ? "bitwise" : "DIFFERS from", worst,
          g_acts_f16 ? ", on x rounded to f16 (wgmma jobs) " : "", g_acts_f16 ? worst16 : 0.0);
    free(xr);
    free(scratch);
    cudaFree(dscr);
    cudaFree(dx);
    free(x);
}

/* ds4k_matmul_jobs_tc: a token's outputs the same bits alone, among 128
 * tokens or among n (and those of ds4k_matmul_jobs for the batch): an HCA
 * compressor's projections made a token at a time, at a window's close or
 * in a prefill batch give the same rows (cuda_layers.inc). */
static void test_dense_tc_tokens(ds4_rng *r, int type, int64_t K, int rows, int n) {
    const size_t rb = ds4_row_bytes(type, K);
    float *wf = rnd(r, (size_t)rows * K, 0.05f), *x = rnd(r, (size_t)n * K, 1.0f);
    uint8_t *w = malloc(rb * rows);
    for (int i = 0; i < rows; i++) ds4_quantize_row(type, wf + (size_t)i * K, w + i * rb, K);
    ds4_dw d = {type, to_dev(w, rb * rows), K, rows};
    float *dx = to_dev(x, sizeof(float) * n * K);
    const size_t cap = (size_t)n * (K + 1) + 64;
    float *dscr = to_dev(NULL, sizeof(float) * cap), *dy = to_dev(NULL, sizeof(float) * n * rows);
    float *y = malloc(sizeof(float) * n * rows), *y1 = malloc(sizeof(float) * n * rows);
    const int takes = ds4k_matmul_jobs_tc_takes(type, K, n, cap);
    ds4_mm_job j = {&d, 0, rows, 0, dy, rows};
    ds4k_matmul_jobs(&j, 1, dx, K, n, dscr, cap, NULL); /* the batch's path */
    int bad = 0;
    from_dev(y, dy, sizeof(float) * n * rows);
    int rc = ds4k_matmul_jobs_tc(&j, 1, dx, K, n, dscr, cap, NULL);
    from_dev(y1, dy, sizeof(float) * n * rows);
    bad += rc != 0 || memcmp(y, y1, sizeof(float) * n * rows) != 0;
    const int firsts[] = {1, 3, 128};
    for (size_t f = 0; rc == 0 && f < sizeof(firsts) / sizeof(firsts[0]) && firsts[f] <= n; f++) {
        rc = ds4k_matmul_jobs_tc(&j, 1, dx, K, firsts[f], dscr, cap, NULL); /* the first tokens alone */
        from_dev(y1, dy, sizeof(float) * firsts[f] * rows);
        bad += rc != 0 || memcmp(y, y1, sizeof(float) * firsts[f] * rows) != 0;
    }
    for (int t = n - 2; rc == 0 && t < n; t++) { /* the last tokens one at a time */
        rc = ds4k_matmul_jobs_tc(&j, 1, dx + (size_t)t * K, K, 1, dscr, cap, NULL);
        from_dev(y1, dy, sizeof(float) * rows);
        bad += rc != 0 || memcmp(y + (size_t)t * rows, y1, sizeof(float) * rows) != 0;
    }
    check(takes ? bad == 0 : rc != 0, "tiles whatever the tokens (%s, K=%lld, %d rows, %d tokens): %s", ds4_type_name(type),
          (long long)K, rows, n, !takes ? "declined (no sm_90a tiles)" : bad ? "a token's outputs DIFFER" : "each token's bits the same");
    free(y1);
    free(y);
    cudaFree(dy);
    cudaFree(dscr);
    cudaFree(dx);
    cudaFree((void *)d.ptr);
    free(w);
    free(x);
    free(wf);
}

void test_prefill_kernels(ds4_rng *r) {
    /* the products with the activations' lo halves (oracle mode) first: the
     * CPU's to f32 rounding; then the default, activations rounded to f16 */
    const int exact = ds4k_wgmma_exact_acts(1);
    g_acts_f16 = false;
    test_compressor_chunk(r, 4, true, 512, true);     /* CSA attention compressor (FP8 rows) */
    test_compressor_chunk(r, 128, false, 512, true);  /* HCA */
    const int pool = ds4k_cmp_pool_enable(0);         /* HCA windows pooled in the windows kernel itself */
    test_compressor_chunk(r, 128, false, 512, true);
    ds4k_cmp_pool_enable(pool);
    test_compressor_chunk(r, 4, true, 128, false);    /* indexer compressor */
    test_attention_mma(r, 64, 512, 4, true);          /* the published shape: CSA rows */
    test_attention_mma(r, 64, 512, 128, false);       /* HCA rows */
    test_attention_mma(r, 4, 128, 4, true);           /* the fixture models: 28 of 32 heads masked */
    const int wide[] = {150, 5, 33}, mid[] = {40, 7, 64, 1}, narrow[] = {20, 3, 32};
    const int types[] = {DS4_TYPE_IQ2_XXS, DS4_TYPE_Q2_K, DS4_TYPE_Q4_K, DS4_TYPE_Q8_0};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        test_expert_split(r, types[i], 512, wide, 3);   /* 128-token tiles */
        test_expert_split(r, types[i], 512, mid, 4);    /* 64-token tiles */
        test_expert_split(r, types[i], 512, narrow, 3); /* 32-token tiles */
    }
    /* the pipeline's edges: one and two slices (three stages, two prefetched) */
    test_expert_split(r, DS4_TYPE_Q8_0, 32, wide, 3);
    test_expert_split(r, DS4_TYPE_Q8_0, 64, mid, 4);
    test_expert_split(r, DS4_TYPE_F16, 32, narrow, 3);
    /* wgmma (sm_90a): one super-block, and the model's expert widths */
    test_expert_split(r, DS4_TYPE_IQ2_XXS, 256, wide, 3);
    test_expert_split(r, DS4_TYPE_IQ2_XXS, 4096, mid, 4);
    test_expert_split(r, DS4_TYPE_Q2_K, 256, narrow, 3);
    test_expert_split(r, DS4_TYPE_Q2_K, 2048, wide, 3); /* the model's down width */
    test_expert_split(r, DS4_TYPE_F16, 512, wide, 3);    /* F16 experts (no model has them) */
    test_expert_split_declines(r);
    test_expert_gather_split(r, 4096, 40, 150); /* the model's gate/up width */
    test_expert_gather_split(r, 256, 12, 70);
    test_expert_split_swiglu(r, DS4_TYPE_Q2_K, 2048, 150); /* the model's down width */
    test_expert_split_swiglu(r, DS4_TYPE_IQ2_XXS, 256, 40);
    test_expert_split_swiglu(r, DS4_TYPE_Q4_K, 512, 40); /* the mma.sync tiles' split */
    /* dense Q8_0 products: the model's q_b (K 1024), o_a (K 4096 a group),
     * shared down (K 2048) and o_b (K 8192) widths; an odd number of blocks a
     * row (2-byte aligned groups); one slice; a batch just past the GEMV */
    test_dense_scratch(r, DS4_TYPE_Q8_0, 1024, 300, 150, 1, true);
    test_dense_scratch(r, DS4_TYPE_Q8_0, 4096, 130, 100, 3, true);
    test_dense_scratch(r, DS4_TYPE_Q8_0, 2048, 64, 40, 1, true);
    test_dense_scratch(r, DS4_TYPE_Q8_0, 8192, 40, 70, 1, true);
    test_dense_scratch(r, DS4_TYPE_Q8_0, 96, 37, 70, 2, true);
    /* 256 tokens or more: with the lo halves still 128-token tiles (the
     * 256-token tiles need the folded scales; they run in the default below) */
    test_dense_scratch(r, DS4_TYPE_Q8_0, 4096, 130, 300, 3, true);
    test_dense_scratch(r, DS4_TYPE_Q8_0, 1024, 300, 520, 1, true);
    test_dense_jobs(r, 1024, 300);
    test_dense_scratch(r, DS4_TYPE_Q8_0, 32, 20, 9, 1, true);
    test_dense_scratch(r, DS4_TYPE_Q8_0, 1024, 50, 20, 2, false);
    /* dense F16 products (wgmma_kernel where K is whole 256s): the router
     * (K 4096, 256 rows), the indexer's queries (K 1024), one super-block,
     * grouped, and a K the tiles keep */
    test_dense_scratch(r, DS4_TYPE_F16, 4096, 256, 150, 1, true);
    test_dense_scratch(r, DS4_TYPE_F16, 1024, 300, 100, 1, true);
    test_dense_scratch(r, DS4_TYPE_F16, 256, 37, 70, 2, true);
    test_dense_scratch(r, DS4_TYPE_F16, 96, 20, 40, 1, true);
    /* several products over one input (the attention input's projections,
     * the router with the shared expert): 128- and 64-token tiles */
    test_dense_jobs(r, 1024, 150);
    test_dense_jobs(r, 4096, 40);
    /* the default: the activations rounded to f16 (the model's widths) */
    ds4k_wgmma_exact_acts(0);
    g_acts_f16 = true;
    test_expert_split(r, DS4_TYPE_IQ2_XXS, 4096, mid, 4);
    test_expert_gather_split(r, 4096, 40, 150);
    test_expert_split_swiglu(r, DS4_TYPE_Q2_K, 2048, 150);
    test_expert_split(r, DS4_TYPE_Q2_K, 2048, wide, 3);
    test_expert_split(r, DS4_TYPE_Q8_0, 512, wide, 3);
    test_expert_split(r, DS4_TYPE_Q8_0, 64, mid, 4); /* folded scales: a short last super-block */
    test_dense_scratch(r, DS4_TYPE_Q8_0, 4096, 130, 100, 3, true);
    test_dense_scratch(r, DS4_TYPE_Q8_0, 1024, 300, 150, 1, true);
    test_dense_scratch(r, DS4_TYPE_Q8_0, 8192, 40, 70, 1, true);
    test_dense_scratch(r, DS4_TYPE_Q8_0, 96, 37, 70, 2, true);
    /* 256-token tiles (dense Q8_0 of 256 tokens or more): against the CPU
     * twin, and bitwise the 64-token tiles of the first 40 tokens alone, the
     * other kernel (128-token tiles) and 3 blocks taking every tile */
    test_dense_scratch(r, DS4_TYPE_Q8_0, 4096, 130, 300, 3, true);
    test_dense_scratch(r, DS4_TYPE_Q8_0, 1024, 300, 520, 1, true);
    test_dense_jobs(r, 1024, 300);
    test_dense_scratch(r, DS4_TYPE_F16, 4096, 256, 150, 1, true);
    test_dense_jobs(r, 1024, 150);
    test_dense_tc_tokens(r, DS4_TYPE_F16, 4096, 512, 300); /* an HCA compressor's projections */
    test_dense_tc_tokens(r, DS4_TYPE_Q8_0, 4096, 200, 150);
    g_acts_f16 = false;
    ds4k_wgmma_exact_acts(exact);
}
