/* ds4 — the fused decode HC kernel (ds4k_hc_post_pre: the stream update
 * after a sub-layer and the HC pre of the next in one launch) against a C
 * reference of the same steps: post y + M^T H, rmsnorm, mixer, split with
 * Sinkhorn, collapse, rmsnorm. */
#include <math.h>
#include <string.h>

#include "cpu/matmul.h"
#include "cpu/ops.h"
#include "cuda_test_util.h"
#include "gguf/quant.h"
#include "model/model.h"
#include "util/f16.h"

enum { HCT = 4, MIXT = (2 + HCT) * HCT, KEXP = 6 };

/* One token's reference: H updated in place (when post), then pre/post/M/a. */
static void ref_token(float *H, int D, const float *post, const float *M, const float *y, const ds4_tensor *mixer,
                      const float *scale, const float *base, const float *norm, float *pre_o, float *post_o,
                      float *M_o, float *a) {
    const int64_t K = (int64_t)HCT * D;
    if (post) {
        for (int d = 0; d < D; d++) {
            float in[HCT], out[HCT];
            for (int s = 0; s < HCT; s++) in[s] = H[s * D + d];
            for (int j = 0; j < HCT; j++) {
                float acc = post[j] * y[d];
                for (int s = 0; s < HCT; s++) acc += M[s * HCT + j] * in[s];
                out[j] = acc;
            }
            for (int j = 0; j < HCT; j++) H[j * D + d] = out[j];
        }
    }
    float *flat = malloc(sizeof(float) * K), *scratch = malloc(sizeof(float) * DS4_MM_ROW_BLOCK * K), mix[MIXT];
    ds4_rmsnorm(H, NULL, (int)K, 1e-6f, flat);
    ds4_matmul_serial(mixer, 0, MIXT, flat, K, 1, mix, MIXT, scratch);
    ds4_hc_split(mix, scale, base, HCT, 20, 1e-6f, pre_o, post_o, M_o);
    for (int d = 0; d < D; d++) {
        float acc = 0;
        for (int s = 0; s < HCT; s++) acc += pre_o[s] * H[s * D + d];
        a[d] = acc;
    }
    ds4_rmsnorm(a, norm, D, 1e-6f, a);
    free(flat), free(scratch);
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

/* mode 0: no update before (the step's first HC pre); 1: after the
 * attention (y); 2: after the MoE (routed outputs + shared expert). */
static void test_case(ds4_rng *r, int mode, int n, int D) {
    const int64_t K = (int64_t)HCT * D;
    float *H = rnd(r, (size_t)n * K, 1.0f), *wf = rnd(r, (size_t)MIXT * K, 1.0f / 64.0f), *norm = rnd(r, D, 0.1f);
    for (int i = 0; i < D; i++) norm[i] += 1.0f;
    float scale[3] = {0.8f, 1.2f, 0.9f}, *base = rnd(r, MIXT, 0.5f);
    float *post = rnd(r, (size_t)n * HCT, 0.5f), *M = rnd(r, (size_t)n * HCT * HCT, 0.3f);
    float *y = rnd(r, (size_t)n * D, 1.0f), *eo = rnd(r, (size_t)n * KEXP * D, 1.0f), *sh = rnd(r, (size_t)n * D, 1.0f);
    int32_t ids[8 * KEXP];
    for (int t = 0; t < n; t++)
        for (int j = 0; j < KEXP; j++) ids[t * KEXP + j] = (int32_t)((7 * j + 3 * t) % 11); /* distinct per token */
    uint16_t *wh = malloc(sizeof(uint16_t) * MIXT * K);
    for (int64_t i = 0; i < MIXT * K; i++) wh[i] = ds4_f32_to_f16(wf[i]);
    ds4_tensor mixer = {.name = "hc", .type = DS4_TYPE_F16, .n_dims = 2, .ne = {K, MIXT, 1, 1}, .data = wh, .size = 2 * MIXT * K};

    /* the MoE output as the CPU adds it: routed outputs in ascending expert
     * id, then the shared expert */
    float *ymoe = malloc(sizeof(float) * n * D);
    for (int t = 0; t < n; t++)
        for (int d = 0; d < D; d++) {
            float acc = 0;
            for (int e = 0; e < 11; e++)
                for (int j = 0; j < KEXP; j++)
                    if (ids[t * KEXP + j] == e) acc += eo[((size_t)t * KEXP + j) * D + d];
            ymoe[(size_t)t * D + d] = acc + sh[(size_t)t * D + d];
        }

    ds4_dw dwm = {DS4_TYPE_F16, to_dev(wh, 2 * MIXT * K), K, MIXT};
    float *dH = to_dev(H, sizeof(float) * n * K), *dy = to_dev(y, sizeof(float) * n * D);
    float *deo = to_dev(eo, sizeof(float) * n * KEXP * D), *dsh = to_dev(sh, sizeof(float) * n * D);
    int32_t *dids = to_dev(ids, sizeof(int32_t) * n * KEXP);
    float *dscale = to_dev(scale, sizeof(scale)), *dbase = to_dev(base, sizeof(float) * MIXT);
    float *dnorm = to_dev(norm, sizeof(float) * D), *da = to_dev(NULL, sizeof(float) * n * D);
    float *dpre = to_dev(NULL, sizeof(float) * n * HCT), *dpost = to_dev(NULL, sizeof(float) * n * HCT);
    float *dM = to_dev(NULL, sizeof(float) * n * HCT * HCT);
    const int S = D / (D < 512 ? D : 512);
    float *dparts = to_dev(NULL, sizeof(float) * S * n * MIXT), *dss = to_dev(NULL, sizeof(float) * S * n);
    unsigned *dcount = to_dev(NULL, sizeof(unsigned) * DS4K_HCF_MAX_TOKENS);
    cudaMemset(dcount, 0, sizeof(unsigned) * DS4K_HCF_MAX_TOKENS);

    /* twice, from the same inputs: the counters must be back at zero and the
     * results bitwise the same. post and M are read and rewritten in place,
     * as in a decode step. */
    const size_t nout = (size_t)n * (K + D + 2 * HCT + HCT * HCT);
    float *got[2];
    int rc = 0;
    for (int run = 0; run < 2; run++) {
        cudaMemcpy(dH, H, sizeof(float) * n * K, cudaMemcpyHostToDevice);
        cudaMemcpy(dpost, post, sizeof(float) * n * HCT, cudaMemcpyHostToDevice);
        cudaMemcpy(dM, M, sizeof(float) * n * HCT * HCT, cudaMemcpyHostToDevice);
        ds4k_hc_post_in prev = {0};
        if (mode) {
            prev.post = dpost, prev.M = dM;
            if (mode == 1) prev.y = dy, prev.ldy = D;
            else prev.eo = deo, prev.ids = dids, prev.sh = dsh, prev.k = KEXP;
        }
        rc |= ds4k_hc_post_pre(&prev, &dwm, dscale, dbase, HCT, 20, 1e-6f, 1e-6f, dnorm, 1e-6f, dH, D, n, dparts, dss,
                               dcount, dpre, dpost, dM, da, NULL);
        float *o = got[run] = malloc(sizeof(float) * nout);
        from_dev(o, dH, sizeof(float) * n * K);
        from_dev(o + n * K, da, sizeof(float) * n * D);
        from_dev(o + n * (K + D), dpre, sizeof(float) * n * HCT);
        from_dev(o + n * (K + D + HCT), dpost, sizeof(float) * n * HCT);
        from_dev(o + n * (K + D + 2 * HCT), dM, sizeof(float) * n * HCT * HCT);
    }
    unsigned count[DS4K_HCF_MAX_TOKENS];
    from_dev(count, dcount, sizeof(count));
    bool zero = true;
    for (int i = 0; i < DS4K_HCF_MAX_TOKENS; i++) zero &= count[i] == 0;
    const bool same = memcmp(got[0], got[1], sizeof(float) * nout) == 0;

    double eh = 0, ea = 0, ep = 0, em = 0;
    float *Hr = malloc(sizeof(float) * K), *ar = malloc(sizeof(float) * D), prer[HCT], postr[HCT], Mr[HCT * HCT];
    for (int t = 0; t < n; t++) {
        memcpy(Hr, H + t * K, sizeof(float) * K);
        const float *yt = mode == 1 ? y + (size_t)t * D : ymoe + (size_t)t * D;
        ref_token(Hr, D, mode ? post + t * HCT : NULL, M + t * HCT * HCT, yt, &mixer, scale, base, norm, prer, postr, Mr,
                  ar);
        const float *o = got[0];
        eh = fmax(eh, max_abs_diff(o + t * K, Hr, (size_t)K));
        ea = fmax(ea, max_abs_diff(o + n * K + (size_t)t * D, ar, (size_t)D));
        ep = fmax(ep, max_abs_diff(o + n * (K + D) + t * HCT, prer, HCT));
        ep = fmax(ep, max_abs_diff(o + n * (K + D + HCT) + t * HCT, postr, HCT));
        em = fmax(em, max_abs_diff(o + n * (K + D + 2 * HCT) + t * HCT * HCT, Mr, HCT * HCT));
    }
    static const char *what[] = {"no update", "after attention", "after MoE"};
    /* H: the same element-wise products as the C loop (FMA contraction may
     * round the last bit); pre/post/M/a: the mixer's sums in another order */
    check(rc == 0 && zero && same && eh < 1e-5 && ep < 2e-6 && em < 2e-6 && ea < 2e-5,
          "hc post+pre fused (%-15s, %d tokens, D=%d): H %.1e, pre/post %.1e, M %.1e, a %.1e; rerun %s, counters %s",
          what[mode], n, D, eh, ep, em, ea, same ? "bitwise identical" : "DIFFERS", zero ? "zero" : "NOT ZERO");

    void *bufs[] = {(void *)dwm.ptr, dH, dy, deo, dsh, dids, dscale, dbase, dnorm, da, dpre, dpost, dM, dparts, dss, dcount};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) cudaFree(bufs[i]);
    free(H), free(wf), free(norm), free(base), free(post), free(M), free(y), free(eo), free(sh), free(wh), free(ymoe);
    free(got[0]), free(got[1]), free(Hr), free(ar);
}

void test_hc_post_pre(ds4_rng *r) {
    test_case(r, 0, 1, 4096);
    test_case(r, 1, 3, 4096); /* the published width: 8 parts */
    test_case(r, 2, 2, 4096);
    test_case(r, 2, 8, 128);  /* the tiny models: one part, the block is its own last */
}
