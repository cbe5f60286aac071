/* ds4-cuda-test — the streaming one-token GEMV (src/cuda/cuda_gemv.cu).
 *
 * test_gemv_stream: at the model's row layouts (the streaming kernel takes
 * only rows that are whole 16-byte units, which the small shapes of
 * test_matmul are not), every weight type against the CPU matmul, for one
 * matrix, several matrices of mixed types in one call, and routed experts.
 * gemv_bench: time per decode-shaped matrix with the streaming kernel on and
 * off, as GB/s of weight bytes (a measurement, not a test). */
#include <math.h>
#include <string.h>

#include "cpu/matmul.h"
#include "cpu/ops.h"
#include "cuda_test_util.h"
#include "gguf/quant.h"
#include "model/model.h"
#include "util/f16.h"

typedef struct host_w {
    ds4_tensor t;
    uint8_t *w;
    ds4_dw d;
} host_w;

static host_w make_w(ds4_rng *r, int type, int64_t K, int64_t N) {
    host_w h;
    const size_t rb = ds4_row_bytes(type, K);
    float *wf = rnd(r, (size_t)(K * N), 0.05f);
    h.w = malloc(rb * N);
    for (int64_t i = 0; i < N; i++) ds4_quantize_row(type, wf + i * K, h.w + i * rb, K);
    free(wf);
    h.t = (ds4_tensor){.name = "w", .type = type, .n_dims = 2, .ne = {K, N, 1, 1}, .data = h.w, .size = rb * N};
    h.d = (ds4_dw){type, to_dev(h.w, rb * N), K, N};
    return h;
}

static void free_w(host_w *h) {
    cudaFree((void *)h->d.ptr);
    free(h->w);
}

static void cpu_rows(const host_w *h, int64_t r0, int64_t rows, const float *x, float *y) {
    float *scratch = malloc(sizeof(float) * DS4_MM_ROW_BLOCK * h->t.ne[0]);
    ds4_matmul_serial(&h->t, r0, rows, x, h->t.ne[0], 1, y, rows, scratch);
    free(scratch);
}

void test_gemv_stream(ds4_rng *r) {
    static const struct {
        int type;
        int64_t K, N;
    } shapes[] = {{DS4_TYPE_Q8_0, 4096, 300},     {DS4_TYPE_Q8_0, 1024, 260},   {DS4_TYPE_Q8_0, 1536, 50},
                  {DS4_TYPE_Q8_0, 8192, 40}, /* rows of several ring chunks (o_b) */
                  {DS4_TYPE_Q2_K, 2048, 200},     {DS4_TYPE_Q2_K, 4096, 90},    {DS4_TYPE_Q4_K, 4096, 120},
                  {DS4_TYPE_IQ2_XXS, 4096, 100}, {DS4_TYPE_IQ2_XXS, 1536, 70}, {DS4_TYPE_F16, 4096, 300},
                  /* IQ2_XXS: a slice a lane, all lanes and 24 of 32; K > 4096, whose
                   * rows take the per-slice path (one ring chunk, then two) */
                  {DS4_TYPE_IQ2_XXS, 1024, 50},  {DS4_TYPE_IQ2_XXS, 768, 40},  {DS4_TYPE_IQ2_XXS, 8192, 30},
                  {DS4_TYPE_IQ2_XXS, 12288, 20}};
    /* every shape with the activations in registers (where the rows allow:
     * one chunk a row, K <= 4096) and in shared memory */
    for (size_t v = 0; v < 2 * sizeof(shapes) / sizeof(shapes[0]); v++) {
        const size_t i = v / 2;
        const int xreg = v % 2 == 0;
        ds4k_gemv_xreg_enable(xreg);
        host_w h = make_w(r, shapes[i].type, shapes[i].K, shapes[i].N);
        const int64_t K = shapes[i].K, r0 = 7, rows = shapes[i].N - 9;
        float *x = rnd(r, (size_t)K, 1.0f), *yc = malloc(sizeof(float) * rows), *yg = malloc(sizeof(float) * rows);
        cpu_rows(&h, r0, rows, x, yc);
        float *dx = to_dev(x, sizeof(float) * K), *dy = to_dev(NULL, sizeof(float) * rows);
        ds4k_matmul(&h.d, r0, rows, dx, K, 1, dy, rows, NULL);
        from_dev(yg, dy, sizeof(float) * rows);
        const double e = dot_error(&h.t, r0, rows, x, yg, yc);
        check(e < gemv_tolerance(shapes[i].type),
              "stream gemv %-8s K=%-5lld %3lld rows, x in %s: max |diff| / (|w| |x|) %.2e", ds4_type_name(shapes[i].type),
              (long long)K, (long long)rows, xreg ? "registers" : "shared   ", e);
        cudaFree(dx);
        cudaFree(dy);
        free(x);
        free(yc);
        free(yg);
        free_w(&h);
    }
    ds4k_gemv_xreg_enable(1);

    /* F16 rows of at most four chunks split over four warps: bitwise the
     * streaming kernel (whole chunks, a half chunk, two jobs in one call),
     * with the launch's default cap of blocks a job, then with 3 blocks (a
     * block takes many groups of rows in turn) and none (a block a group) */
    const int cap0 = ds4k_gemv_f16_split_cap(-1), caps[3] = {cap0, 3, 0};
    for (int ci = 0; ci < 3; ci++) {
        ds4k_gemv_f16_split_cap(caps[ci]);
        static const int64_t fk[3][2] = {{4096, 300}, {1536, 70}, {2048, 33}};
        for (int i = 0; i < 3; i++) {
            const int64_t K = fk[i][0], N = fk[i][1];
            host_w h = make_w(r, DS4_TYPE_F16, K, N), h2 = make_w(r, DS4_TYPE_F16, K, 17);
            float *x = rnd(r, (size_t)K, 1.0f), *dx = to_dev(x, sizeof(float) * K);
            float *dy = to_dev(NULL, sizeof(float) * 2 * (N + 17)), *y = malloc(sizeof(float) * 2 * (N + 17));
            for (int split = 0; split < 2; split++) {
                ds4k_gemv_f16_split_enable(split);
                ds4_mm_job j[2] = {{&h.d, 0, N, 0, dy + split * (N + 17), N},
                                   {&h2.d, 0, 17, 0, dy + split * (N + 17) + N, 17}};
                ds4k_matmul_multi(j, 2, dx, K, 1, NULL);
            }
            ds4k_gemv_f16_split_enable(1);
            from_dev(y, dy, sizeof(float) * 2 * (N + 17));
            check(memcmp(y, y + N + 17, sizeof(float) * (N + 17)) == 0,
                  "F16 gemv split over warps (cap %d blocks a job), K=%lld, %lld + 17 rows: bitwise the streaming "
                  "kernel",
                  caps[ci], (long long)K, (long long)N);
            cudaFree(dx), cudaFree(dy), free(x), free(y), free_w(&h), free_w(&h2);
        }
    }
    ds4k_gemv_f16_split_cap(cap0);

    /* mixed types in one call (the attention inputs): F16, Q8_0, F16 on a
     * second stretch of the activations */
    {
        const int64_t K = 2048;
        host_w a = make_w(r, DS4_TYPE_F16, K, 64), b = make_w(r, DS4_TYPE_Q8_0, K, 96), c = make_w(r, DS4_TYPE_F16, K, 40);
        float *x = rnd(r, (size_t)(2 * K), 1.0f), *dx = to_dev(x, sizeof(float) * 2 * K);
        float *dy = to_dev(NULL, sizeof(float) * 200);
        ds4_mm_job j[3] = {{&a.d, 0, 64, 0, dy, 64}, {&b.d, 0, 96, 0, dy + 64, 96}, {&c.d, 0, 40, K, dy + 160, 40}};
        ds4k_matmul_multi(j, 3, dx, 2 * K, 1, NULL);
        float yg[200], yc[200];
        from_dev(yg, dy, sizeof(yg));
        cpu_rows(&a, 0, 64, x, yc);
        cpu_rows(&b, 0, 96, x, yc + 64);
        cpu_rows(&c, 0, 40, x + K, yc + 160);
        double e = dot_error(&a.t, 0, 64, x, yg, yc);
        e = fold_max(e, dot_error(&b.t, 0, 96, x, yg + 64, yc + 64));
        e = fold_max(e, dot_error(&c.t, 0, 40, x + K, yg + 160, yc + 160));
        check(e < gemv_tolerance(DS4_TYPE_Q8_0), "stream gemv, F16 + Q8_0 + F16 in one call: max |diff| / (|w| |x|) %.2e", e);
        cudaFree(dx);
        cudaFree(dy);
        free(x);
        free_w(&a);
        free_w(&b);
        free_w(&c);
    }

    /* routed experts: gate-like IQ2_XXS (input per token) and down-like Q2_K
     * (input per pair), several rows a warp (1,000 rows an expert, not a
     * multiple of a block's) */
    for (int per_pair = 0; per_pair < 2; per_pair++) {
        const int E = 4, k = 3, n = 2, type = per_pair ? DS4_TYPE_Q2_K : DS4_TYPE_IQ2_XXS;
        const int64_t K = per_pair ? 2048 : 4096, rows = 1000;
        host_w h = make_w(r, type, K, E * rows);
        const int32_t ids[6] = {2, 0, 2, 3, 1, 0};
        const int nx = per_pair ? n * k : n;
        float *x = rnd(r, (size_t)(nx * K), 1.0f), *yc = malloc(sizeof(float) * n * k * rows);
        float *yg = malloc(sizeof(float) * n * k * rows);
        float *dx = to_dev(x, sizeof(float) * nx * K), *dy = to_dev(NULL, sizeof(float) * n * k * rows);
        int32_t *dids = to_dev(ids, sizeof(ids));
        for (int i = 0; i < n * k; i++)
            cpu_rows(&h, (int64_t)ids[i] * rows, rows, x + (per_pair ? i : i / k) * K, yc + i * rows);
        ds4k_moe_matmul(&h.d, rows, dids, n, k, dx, K, per_pair, dy, rows, NULL);
        from_dev(yg, dy, sizeof(float) * n * k * rows);
        double e = 0;
        for (int i = 0; i < n * k; i++) {
            const float *xi = x + (per_pair ? i : i / k) * K;
            e = fold_max(e, dot_error(&h.t, (int64_t)ids[i] * rows, rows, xi, yg + i * rows, yc + i * rows));
        }
        check(e < gemv_tolerance(type), "stream gemv, routed experts %-8s (input per %s): max |diff| / (|w| |x|) %.2e",
              ds4_type_name(type), per_pair ? "pair" : "token", e);
        cudaFree(dx);
        cudaFree(dy);
        cudaFree(dids);
        free(x);
        free(yc);
        free(yg);
        free_w(&h);
    }
}

/* Decode products with each row's K split into stretches
 * (ds4k_matmul_ksplit): the parts added in order against the CPU's whole
 * rows, within the one-row GEMV's tolerance — one matrix (o_b's four
 * stretches of 2,048; Q8_0 of two, whose rows are then two ring chunks;
 * IQ2_XXS, Q2_K; one stretch) and grouped jobs on stretches of x with row
 * offsets; splits inside a quantization block refused. */
static float *sum_parts_host(const float *v, int parts, int64_t count) {
    float *s = malloc(sizeof(float) * count);
    for (int64_t i = 0; i < count; i++) {
        float a = v[i];
        for (int q = 1; q < parts; q++) a += v[q * count + i];
        s[i] = a;
    }
    return s;
}

void test_gemv_ksplit(ds4_rng *r) {
    static const struct {
        int type;
        int64_t K, N;
        int parts;
    } cases[] = {{DS4_TYPE_Q8_0, 8192, 300, 4}, {DS4_TYPE_Q8_0, 8192, 77, 2}, {DS4_TYPE_IQ2_XXS, 8192, 40, 2},
                 {DS4_TYPE_Q2_K, 4096, 90, 2},  {DS4_TYPE_Q8_0, 4096, 50, 1}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const int64_t K = cases[i].K, N = cases[i].N;
        const int P = cases[i].parts;
        host_w h = make_w(r, cases[i].type, K, N);
        float *x = rnd(r, (size_t)K, 1.0f), *yc = malloc(sizeof(float) * N), *yp = malloc(sizeof(float) * P * N);
        float *dx = to_dev(x, sizeof(float) * K), *dy = to_dev(NULL, sizeof(float) * P * N);
        cpu_rows(&h, 0, N, x, yc);
        const ds4_mm_job j = {&h.d, 0, N, 0, dy, N};
        const int rc = ds4k_matmul_ksplit(&j, 1, P, N, dx, K, NULL);
        from_dev(yp, dy, sizeof(float) * P * N);
        float *ys = sum_parts_host(yp, P, N);
        const double e = dot_error(&h.t, 0, N, x, ys, yc);
        check(rc == 0 && e < gemv_tolerance(cases[i].type),
              "gemv K split, %-8s K=%-5lld in %d stretches: parts added, max |diff| / (|w| |x|) %.2e",
              ds4_type_name(cases[i].type), (long long)K, P, e);
        cudaFree(dx), cudaFree(dy), free(x), free(yc), free(yp), free(ys), free_w(&h);
    }

    /* grouped jobs (o_a's layout: rows g * 64.., x stretch g), two stretches each */
    {
        const int G = 3;
        const int64_t K = 4096, R = 64;
        host_w h = make_w(r, DS4_TYPE_Q8_0, K, G * R);
        float *x = rnd(r, (size_t)G * K, 1.0f), *dx = to_dev(x, sizeof(float) * G * K);
        float *dy = to_dev(NULL, sizeof(float) * 2 * G * R), *yp = malloc(sizeof(float) * 2 * G * R);
        float *yc = malloc(sizeof(float) * G * R);
        ds4_mm_job j[3];
        for (int g = 0; g < G; g++) {
            j[g] = (ds4_mm_job){&h.d, g * R, R, g * K, dy + g * R, G * R};
            cpu_rows(&h, g * R, R, x + g * K, yc + g * R);
        }
        const int rc = ds4k_matmul_ksplit(j, G, 2, G * R, dx, G * K, NULL);
        from_dev(yp, dy, sizeof(float) * 2 * G * R);
        float *ys = sum_parts_host(yp, 2, G * R);
        double e = 0;
        for (int g = 0; g < G; g++) e = fold_max(e, dot_error(&h.t, g * R, R, x + g * K, ys + g * R, yc + g * R));
        check(rc == 0 && e < gemv_tolerance(DS4_TYPE_Q8_0),
              "gemv K split, 3 grouped jobs on their x stretches, 2 stretches each: max |diff| / (|w| |x|) %.2e", e);
        cudaFree(dx), cudaFree(dy), free(x), free(yp), free(yc), free(ys), free_w(&h);
    }

    host_w h = make_w(r, DS4_TYPE_Q2_K, 2048, 8);
    const ds4_mm_job j = {&h.d, 0, 8, 0, NULL, 8};
    check(ds4k_matmul_ksplit(&j, 1, 16, 8, NULL, 2048, NULL) == -1 &&
              ds4k_matmul_ksplit(&j, 1, 3, 8, NULL, 2048, NULL) == -1,
          "gemv K split refuses stretches inside a Q2_K block (2048 / 16) and a K the parts do not divide");
    free_w(&h);
}

/* Rows of one chunk two an iteration (the default; the two rows' sums in one
 * butterfly, warp_sum2) against one an iteration: bitwise the same outputs,
 * for rows of 1, 2 and 4 slices a lane (rings of 8 and 4 slots) and of 1
 * or 2 (K = 1536, the bounds-tested path), odd and even row counts (a
 * warp's last row alone), plain and routed; Q8_0 K = 4096 rows are two
 * chunks, which the switch must leave alone. */
void test_gemv_pairs(ds4_rng *r) {
    static const struct {
        int type;
        int64_t K, N;
        int routed;
    } cases[] = {{DS4_TYPE_Q8_0, 1024, 333, 0}, {DS4_TYPE_Q8_0, 2048, 130, 0}, {DS4_TYPE_Q2_K, 2048, 201, 0},
                 {DS4_TYPE_IQ2_XXS, 1536, 71, 0}, {DS4_TYPE_Q2_K, 2048, 4 * 301, 1}, {DS4_TYPE_Q8_0, 1024, 4 * 300, 1},
                 {DS4_TYPE_Q8_0, 4096, 99, 0},    {DS4_TYPE_IQ2_XXS, 4096, 4 * 250, 1}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const int64_t K = cases[i].K, N = cases[i].N, per = N / 4;
        const int routed = cases[i].routed, n_out = routed ? 6 * (int)per : (int)N;
        host_w h = make_w(r, cases[i].type, K, N);
        float *x = rnd(r, (size_t)(6 * K), 1.0f), *dx = to_dev(x, sizeof(float) * 6 * K);
        float *dy = to_dev(NULL, sizeof(float) * 2 * n_out), *y = malloc(sizeof(float) * 2 * n_out);
        const int32_t ids[6] = {2, 0, 2, 3, 1, 0};
        int32_t *dids = to_dev(ids, sizeof(ids));
        for (int pairs = 0; pairs < 2; pairs++) {
            const int was = ds4k_gemv_pairs_enable(pairs);
            if (routed) ds4k_moe_matmul(&h.d, per, dids, 2, 3, dx, K, 1, dy + pairs * n_out, per, NULL);
            else ds4k_matmul(&h.d, 0, N, dx, K, 1, dy + pairs * n_out, N, NULL);
            ds4k_gemv_pairs_enable(was);
        }
        from_dev(y, dy, sizeof(float) * 2 * n_out);
        int nonzero = 0;
        for (int j = 0; j < n_out; j++) nonzero += y[j] != 0.0f;
        check(memcmp(y, y + n_out, sizeof(float) * n_out) == 0 && nonzero > n_out / 2,
              "gemv %-8s K=%-5lld %s%4d rows two an iteration: bitwise one an iteration", ds4_type_name(cases[i].type),
              (long long)K, routed ? "routed " : "", n_out);
        cudaFree(dx), cudaFree(dy), cudaFree(dids), free(x), free(y), free_w(&h);
    }
}

/* The slice dots' conversion-free forms (qdot, qdot_small, small_u2f in
 * cuda_gemv.cu) against the plain conversions they replaced, on the device:
 * the same bits for every exact small integer and for 4 x 2^22 random dot
 * pairs at the four quantized types' bounds. */
void test_gemv_convert(void) {
    const long long bad = ds4k_gemv_convert_check((int64_t)1 << 22, 0x5eed);
    check(bad == 0, "gemv slice conversions: integers v < 2^23 (v and v + 0.5), |v| < 2^22 and 4 x 2^22 dot pairs "
                    "bitwise the plain conversions (%lld differ)", bad);
}

/* ------------------------------------------------------------------ activation prep */

static float swiglu_ref(float g, float u, float lim) {
    const float gg = g < lim ? g : lim;
    const float uu = u > lim ? lim : u < -lim ? -lim : u;
    return ds4_silu(gg) * uu;
}

/* ds4k_matmul_prep: the norm (q_b, the indexer's queries) and the SwiGLU
 * (shared and routed down) done while the GEMV stages its input, against
 * the C reference (the step, then the product), and bitwise against the
 * separate GPU kernels it replaces (the same expressions and sum order). */
void test_gemv_prep(ds4_rng *r) {
    const char *off = getenv("DS4_GEMV_PREP");
    if (off && strcmp(off, "0") == 0) {
        printf("skip gemv with the norm / SwiGLU while staging: DS4_GEMV_PREP=0 in the environment\n");
        return;
    }
    /* norm: q_lora = 1024 wide, Q8_0 (q_b) and F16 (indexer queries) */
    static const int norm_types[2] = {DS4_TYPE_Q8_0, DS4_TYPE_F16};
    for (int i = 0; i < 2; i++) {
        const int64_t K = 1024, rows = 200;
        host_w h = make_w(r, norm_types[i], K, rows);
        float *x = rnd(r, (size_t)K, 3.0f), *w = rnd(r, (size_t)K, 0.2f), *xn = malloc(sizeof(float) * K);
        for (int64_t k = 0; k < K; k++) w[k] += 1.0f;
        ds4_rmsnorm(x, w, (int)K, 1e-6f, xn);
        float *yc = malloc(sizeof(float) * rows), *yg = malloc(sizeof(float) * rows), *ys = malloc(sizeof(float) * rows);
        cpu_rows(&h, 0, rows, xn, yc);
        float *dx = to_dev(x, sizeof(float) * K), *dw = to_dev(w, sizeof(float) * K);
        float *dy = to_dev(NULL, sizeof(float) * rows), *dy2 = to_dev(NULL, sizeof(float) * rows);
        const ds4_prep pp = {DS4_PREP_NORM, dw, 1e-6f, NULL, NULL, 0.0f, 0};
        const int rc = ds4k_matmul_prep(&h.d, rows, dx, K, &pp, NULL, 1, 1, 0, dy, rows, NULL);
        from_dev(yg, dy, sizeof(float) * rows);
        ds4k_rmsnorm(dx, K, dw, 1, (int)K, 1e-6f, dx, K, NULL); /* the separate kernels */
        ds4k_matmul(&h.d, 0, rows, dx, K, 1, dy2, rows, NULL);
        from_dev(ys, dy2, sizeof(float) * rows);
        const double e = dot_error(&h.t, 0, rows, xn, yg, yc);
        const bool same = memcmp(yg, ys, sizeof(float) * rows) == 0;
        check(rc == 0 && e < gemv_tolerance(norm_types[i]) && same,
              "gemv with the norm while staging, %-4s K=%lld: max |diff| / (|w| |x|) %.2e, vs rmsnorm + gemv %s",
              ds4_type_name(norm_types[i]), (long long)K, e, same ? "bitwise identical" : "DIFFER");
        cudaFree(dx), cudaFree(dw), cudaFree(dy), cudaFree(dy2);
        free(x), free(w), free(xn), free(yc), free(yg), free(ys);
        free_w(&h);
    }
    /* SwiGLU: shared down (Q8_0, one token) and routed down (Q2_K, input and
     * router weight per pair) */
    for (int routed = 0; routed < 2; routed++) {
        const int E = 4, k = routed ? 3 : 1, n = routed ? 2 : 1, type = routed ? DS4_TYPE_Q2_K : DS4_TYPE_Q8_0;
        const int64_t K = 2048, rows = 96;
        const float lim = 2.5f;
        host_w h = make_w(r, type, K, (routed ? E : 1) * rows);
        const int32_t ids[6] = {3, 1, 3, 0, 2, 1};
        const int nx = n * k;
        float *g = rnd(r, (size_t)nx * K, 2.0f), *u = rnd(r, (size_t)nx * K, 2.0f), *wts = rnd(r, (size_t)nx, 0.5f);
        float *hx = malloc(sizeof(float) * nx * K);
        for (int p = 0; p < nx; p++)
            for (int64_t c = 0; c < K; c++) {
                const float v = swiglu_ref(g[p * K + c], u[p * K + c], lim);
                hx[p * K + c] = routed ? v * wts[p] : v;
            }
        float *yc = malloc(sizeof(float) * nx * rows), *yg = malloc(sizeof(float) * nx * rows);
        float *ys = malloc(sizeof(float) * nx * rows);
        float *dg = to_dev(g, sizeof(float) * nx * K), *du = to_dev(u, sizeof(float) * nx * K);
        float *dwts = to_dev(wts, sizeof(float) * nx), *dy = to_dev(NULL, sizeof(float) * nx * rows);
        float *dy2 = to_dev(NULL, sizeof(float) * nx * rows);
        int32_t *dids = to_dev(ids, sizeof(ids));
        const ds4_prep pp = {DS4_PREP_SWIGLU, NULL, 0.0f, du, routed ? dwts : NULL, lim, 0};
        const int rc = ds4k_matmul_prep(&h.d, rows, dg, K, &pp, routed ? dids : NULL, n, k, routed, dy, rows, NULL);
        from_dev(yg, dy, sizeof(float) * nx * rows);
        ds4k_swiglu(dg, du, nx, (int)K, lim, routed ? dwts : NULL, NULL); /* the separate kernels */
        if (routed) ds4k_moe_matmul(&h.d, rows, dids, n, k, dg, K, 1, dy2, rows, NULL);
        else ds4k_matmul(&h.d, 0, rows, dg, K, 1, dy2, rows, NULL);
        from_dev(ys, dy2, sizeof(float) * nx * rows);
        double e = 0;
        for (int p = 0; p < nx; p++) {
            const int64_t r0 = routed ? (int64_t)ids[p] * rows : 0;
            cpu_rows(&h, r0, rows, hx + p * K, yc + p * rows);
            e = fold_max(e, dot_error(&h.t, r0, rows, hx + p * K, yg + p * rows, yc + p * rows));
        }
        const bool same = memcmp(yg, ys, sizeof(float) * nx * rows) == 0;
        check(rc == 0 && e < gemv_tolerance(type) && same,
              "gemv with the SwiGLU while staging, %s: max |diff| / (|w| |x|) %.2e, vs swiglu + gemv %s",
              routed ? "routed (Q2_K, router weights)" : "shared (Q8_0)", e, same ? "bitwise identical" : "DIFFER");
        cudaFree(dg), cudaFree(du), cudaFree(dwts), cudaFree(dy), cudaFree(dy2), cudaFree(dids);
        free(g), free(u), free(wts), free(hx), free(yc), free(yg), free(ys);
        free_w(&h);
    }
}

/* ds4k_matmul_heads: q_b's shape (Q8_0, K = 1,024, heads of 512 with their
 * norm and RoPE; and heads of 128, RoPE alone), with q_a's norm while
 * staging, bitwise against ds4k_matmul_prep then ds4k_heads_rope (held to
 * the CPU by test_gemv_prep and test_kv_and_heads). On a GPU of 132
 * multiprocessors the 9,216 rows of the second case go 24 to a block, so
 * heads of 128 straddle blocks and a block counts into two heads. Two
 * launches back to back on one count, which must be zero afterwards. A
 * shape without the tail (F16 rows) must be declined, nothing launched. */
void test_gemv_heads(ds4_rng *r) {
    const char *off = getenv("DS4_GEMV_HEADS");
    if (off && strcmp(off, "0") == 0) {
        printf("skip gemv with the heads' tail: DS4_GEMV_HEADS=0 in the environment\n");
        return;
    }
    static const struct {
        int type, hd, heads, norm;
        const char *what;
    } cases[3] = {{DS4_TYPE_Q8_0, 512, 16, 1, "q_b: Q8_0, norm + RoPE"},
                  {DS4_TYPE_Q8_0, 128, 72, 0, "Q8_0, RoPE alone"},
                  {DS4_TYPE_F16, 128, 8, 0, "F16"}};
    const int64_t K = 1024;
    double fr[32];
    for (int i = 0; i < 32; i++) fr[i] = pow(10000.0, -2.0 * i / 64.0);
    double *dfr = to_dev(fr, sizeof(fr));
    const int pos = 1234;
    int *dpos = to_dev(&pos, sizeof(int));
    for (int ci = 0; ci < 3; ci++) {
        const int64_t rows = (int64_t)cases[ci].hd * cases[ci].heads;
        const size_t ncnt = (size_t)cases[ci].heads * DS4K_HEADS_CNT_STRIDE;
        host_w h = make_w(r, cases[ci].type, K, rows);
        float *x = rnd(r, (size_t)K, 3.0f), *w = rnd(r, (size_t)K, 0.2f);
        for (int64_t k = 0; k < K; k++) w[k] += 1.0f;
        float *dx = to_dev(x, sizeof(float) * K), *dw = to_dev(w, sizeof(float) * K);
        float *dy = to_dev(NULL, sizeof(float) * rows), *dy2 = to_dev(NULL, sizeof(float) * rows);
        float *yg = malloc(sizeof(float) * rows), *ys = malloc(sizeof(float) * rows);
        unsigned *cnt = to_dev(NULL, sizeof(unsigned) * ncnt), *hc = malloc(sizeof(unsigned) * ncnt);
        cudaMemset(cnt, 0, sizeof(unsigned) * ncnt);
        const ds4_prep pp = {DS4_PREP_NORM, dw, 1e-6f, NULL, NULL, 0.0f, 0};
        const ds4_heads hh = {cases[ci].hd, cases[ci].norm, 32, 1e-6f, dfr, dpos, cnt, 0};
        if (cases[ci].type != DS4_TYPE_Q8_0) {
            const int rc = ds4k_matmul_heads(&h.d, rows, dx, &pp, &hh, dy, NULL);
            check(rc == -1 && cudaDeviceSynchronize() == cudaSuccess, "gemv with the heads' tail declines %s rows",
                  cases[ci].what);
        } else {
            int rc = 0;
            for (int rep = 0; rep < 2; rep++) rc |= ds4k_matmul_heads(&h.d, rows, dx, &pp, &hh, dy, NULL);
            rc |= ds4k_matmul_prep(&h.d, rows, dx, K, &pp, NULL, 1, 1, 0, dy2, rows, NULL);
            ds4k_heads_rope(dy2, 1, cases[ci].heads, cases[ci].hd, cases[ci].norm, 1e-6f, dfr, 32, dpos, false, NULL);
            from_dev(yg, dy, sizeof(float) * rows);
            from_dev(ys, dy2, sizeof(float) * rows);
            const bool same = memcmp(yg, ys, sizeof(float) * rows) == 0;
            /* the same in 3/8 and 2/8 (q_b's default beside the indexer) of the GPU, more rows a warp, each row
             * still one warp's; Y is set to NaN first, so a row the launch leaves unwritten fails */
            bool same_share = true;
            for (int share = 3; share >= 2; share--) {
                ds4_heads hs = hh;
                hs.share8 = share;
                cudaMemset(dy, 0xff, sizeof(float) * rows);
                rc |= ds4k_matmul_heads(&h.d, rows, dx, &pp, &hs, dy, NULL);
                from_dev(yg, dy, sizeof(float) * rows);
                same_share &= memcmp(yg, ys, sizeof(float) * rows) == 0;
            }
            from_dev(hc, cnt, sizeof(unsigned) * ncnt);
            bool zero = true;
            for (size_t i = 0; i < ncnt; i++) zero &= hc[i] == 0;
            check(rc == 0 && same && same_share && zero,
                  "gemv with the heads' tail, %s (%d heads of %d): %s the product then heads_rope, in 3/8 and 2/8 "
                  "of the GPU %s%s",
                  cases[ci].what, cases[ci].heads, cases[ci].hd, same ? "bitwise" : "DIFFERS from",
                  same_share ? "bitwise too" : "DIFFERS", zero ? "" : "; counts left non-zero");
        }
        cudaFree(dx), cudaFree(dw), cudaFree(dy), cudaFree(dy2), cudaFree(cnt);
        free(x), free(w), free(yg), free(ys), free(hc);
        free_w(&h);
    }
    cudaFree(dfr), cudaFree(dpos);
}

/* ds4k_router_matmul (a decode step's router product, its last block
 * selecting) against ds4k_matmul + ds4k_router, which test_gemv_stream and
 * test_router hold to the CPU: bitwise the same scores (written over the
 * logits), the same ids, bitwise the same weights. Each case launches twice
 * on one count on a non-blocking stream, back to back (the second may start
 * early, by programmatic launch), both captured in a graph replayed 20
 * times; the count must be at 0 afterwards. E = 16 and 298
 * leave lanes of the selecting warp without an expert and a block partly
 * past the rows; hash routing and ties as in test_router. */
void test_router_matmul(ds4_rng *r) {
    const char *off = getenv("DS4_ROUTER_LAST"), *stream_off = getenv("DS4_GEMV_STREAM");
    if ((off && strcmp(off, "0") == 0) || (stream_off && strcmp(stream_off, "0") == 0)) {
        printf("skip router GEMV selecting in its last block: switched off in the environment\n");
        return;
    }
    cudaStream_t ts;
    cudaStreamCreateWithFlags(&ts, cudaStreamNonBlocking);
    static const struct {
        int64_t K;
        int E, k, bias, ties, hash;
    } cs[] = {{4096, 256, 6, 1, 0, 0}, {4096, 256, 6, 0, 1, 0}, {4096, 256, 6, 1, 0, 1},
              {2048, 16, 6, 1, 1, 0},  {4096, 298, 8, 1, 0, 0}};
    const int vocab = 7, tok = 3;
    const float scale = 1.5f;
    unsigned *done = to_dev(NULL, sizeof(unsigned));
    cudaMemset(done, 0, sizeof(unsigned));
    for (size_t c = 0; c < sizeof(cs) / sizeof(cs[0]); c++) {
        const int E = cs[c].E, k = cs[c].k;
        const int64_t K = cs[c].K;
        host_w h = make_w(r, DS4_TYPE_F16, K, E);
        float *x = rnd(r, (size_t)K, 1.0f), *bias = malloc(sizeof(float) * E);
        if (cs[c].ties) { /* four distinct rows, repeated: the logits tie in fours */
            const size_t rb = ds4_row_bytes(DS4_TYPE_F16, K);
            for (int e = 4; e < E; e++) memcpy(h.w + rb * e, h.w + rb * (e % 4), rb);
            cudaMemcpy((void *)h.d.ptr, h.w, rb * E, cudaMemcpyHostToDevice);
        }
        for (int e = 0; e < E; e++) bias[e] = cs[c].ties ? 0.25f * (float)(e % 3) : 0.1f * ds4_rng_normal(r);
        int32_t *tab = malloc(sizeof(int32_t) * vocab * k);
        for (int i = 0; i < vocab * k; i++) tab[i] = (int32_t)ds4_rng_below(r, (uint32_t)E);
        float *dx = to_dev(x, sizeof(float) * K), *db = to_dev(bias, sizeof(float) * E);
        float *dl = to_dev(NULL, sizeof(float) * 3 * E), *dw = to_dev(NULL, sizeof(float) * 3 * k);
        int32_t *dtab = to_dev(tab, sizeof(int32_t) * vocab * k), *dtok = to_dev(&tok, sizeof(tok));
        int32_t *dids = to_dev(NULL, sizeof(int32_t) * 3 * k);
        const float *bp = cs[c].bias ? db : NULL;
        const int32_t *tp = cs[c].hash ? dtab : NULL;
        /* the second launch also makes an FFN's post and M (ds4_route.hc: one block more, beside the
         * GEMV's, which must not change their count) */
        float *mixh = rnd(r, 24, 1.0f), *baseh = rnd(r, 24, 0.5f), sch[3] = {0.8f, 1.2f, 0.9f};
        float *dmix = to_dev(mixh, sizeof(float) * 24), *dbase = to_dev(baseh, sizeof(float) * 24);
        float *dsc = to_dev(sch, sizeof(sch)), *dpm = to_dev(NULL, sizeof(float) * 2 * 20);
        int rc = 0;
        unsigned left = 1;
        cudaGraph_t graph = NULL;
        cudaGraphExec_t exec = NULL;
        bool graph_ok = cudaStreamBeginCapture(ts, cudaStreamCaptureModeGlobal) == cudaSuccess;
        for (int rep = 0; rep < 2; rep++) {
            const ds4_route rt = {dl + rep * E, E, k, bp, tp, dtok, scale, dids + rep * k, dw + rep * k,
                                  {rep ? dmix : NULL, dsc, dbase, 20, 1e-6f, dpm, dpm + 4}};
            rc |= ds4k_router_matmul(&h.d, dx, &rt, done, (ds4_stream)ts);
        }
        graph_ok = graph_ok && cudaStreamEndCapture(ts, &graph) == cudaSuccess &&
                   cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess;
        for (int i = 0; graph_ok && i < 20; i++) graph_ok = cudaGraphLaunch(exec, ts) == cudaSuccess;
        graph_ok = graph_ok && cudaStreamSynchronize(ts) == cudaSuccess;
        if (exec) cudaGraphExecDestroy(exec);
        if (graph) cudaGraphDestroy(graph);
        from_dev(&left, done, sizeof(unsigned));
        ds4k_matmul(&h.d, 0, E, dx, K, 1, dl + 2 * E, E, NULL); /* the two launches */
        ds4k_router(dl + 2 * E, 1, E, k, bp, tp, dtok, scale, dids + 2 * k, dw + 2 * k, NULL);
        ds4k_hc_sinkhorn(dmix, dsc, dbase, 4, 20, 1e-6f, 1, dpm + 20, dpm + 24, NULL);
        float pm[40];
        from_dev(pm, dpm, sizeof(pm));
        const bool hc_same = memcmp(pm, pm + 20, sizeof(float) * 20) == 0;
        float *pl = malloc(sizeof(float) * 3 * E), w[3 * 16];
        int32_t ids[3 * 16];
        from_dev(pl, dl, sizeof(float) * 3 * E);
        from_dev(w, dw, sizeof(float) * 3 * k);
        from_dev(ids, dids, sizeof(int32_t) * 3 * k);
        bool same = true;
        for (int rep = 0; rep < 2; rep++)
            same = same && memcmp(pl + rep * E, pl + 2 * E, sizeof(float) * E) == 0 &&
                   memcmp(ids + rep * k, ids + 2 * k, sizeof(int32_t) * k) == 0 &&
                   memcmp(w + rep * k, w + 2 * k, sizeof(float) * k) == 0;
        check(rc == 0 && graph_ok && same && left == 0 && hc_same,
              "router GEMV, E %3d k %d K %lld%s%s%s, its last block selecting (2 launches x 20 graph replays): "
              "scores, ids and weights %s, count back to 0: %s, post and M beside it bitwise ds4k_hc_sinkhorn's: %s",
              E, k, (long long)K, cs[c].bias ? " bias" : "", cs[c].ties ? " ties" : "", cs[c].hash ? " hash" : "",
              rc != 0 || !graph_ok ? "NOT LAUNCHED" : same ? "bitwise the two launches'" : "DIFFER",
              left == 0 ? "yes" : "NO", hc_same ? "yes" : "NO");
        cudaFree(dmix), cudaFree(dbase), cudaFree(dsc), cudaFree(dpm), free(mixh), free(baseh);
        cudaFree(dx), cudaFree(db), cudaFree(dl), cudaFree(dw), cudaFree(dtab), cudaFree(dtok), cudaFree(dids);
        free(x), free(bias), free(tab), free(pl), free_w(&h);
    }
    cudaFree(done);
    cudaStreamDestroy(ts);
}

/* Random weight bytes of a quantized type with sane block scales (the
 * checks below compare two paths bitwise, so no CPU quantization is needed:
 * IQ2_XXS quantizes slowly). */
static void *sane_blocks_dev(ds4_rng *r, int type, size_t bytes) {
    uint8_t *h = malloc(bytes);
    for (size_t i = 0; i < bytes; i++) h[i] = (uint8_t)ds4_rng_below(r, 256);
    const size_t bb = type == DS4_TYPE_IQ2_XXS ? 66 : 84, at = type == DS4_TYPE_IQ2_XXS ? 0 : 80;
    for (size_t b = 0; b + bb <= bytes; b += bb) {
        const uint16_t d = ds4_f32_to_f16(0.01f + 0.01f * (float)ds4_rng_below(r, 100) / 100.0f);
        memcpy(h + b + at, &d, 2);
        if (type == DS4_TYPE_Q2_K) memcpy(h + b + at + 2, &d, 2); /* dmin */
    }
    void *d = to_dev(h, bytes);
    free(h);
    return d;
}

/* The routed products' early starts (DS4_EARLY_X for gate and up, whose
 * x is staged before their wait; DS4_EARLY_IDS for the down projection,
 * whose weight copies start before it) in the decode step's order: a kernel
 * writes x into the one buffer every round reuses, the router's product and
 * selection write the ids, then gate/up and the SwiGLU down. Eight rounds
 * captured in a graph, replayed 10 times, against the same rounds with the
 * flags off, one launch at a time: bitwise, or a read came too early. */
void test_gemv_early(void) {
    const char *off = getenv("DS4_GEMV_EARLY"), *stream_off = getenv("DS4_GEMV_STREAM");
    if ((off && strcmp(off, "0") == 0) || (stream_off && strcmp(stream_off, "0") == 0)) {
        printf("skip routed GEMVs started early: switched off in the environment\n");
        return;
    }
    ds4_rng lr; /* its own draws: the checks after this one see the same data either way */
    ds4_rng_seed(&lr, 11);
    enum { E = 16, KS = 6, ROUNDS = 8 };
    const int64_t D = 4096, FF = 1024; /* Q2_K rows of FF: whole 16-byte units */
    const size_t gb = ds4_row_bytes(DS4_TYPE_IQ2_XXS, D) * FF * E, db = ds4_row_bytes(DS4_TYPE_Q2_K, FF) * D * E;
    const ds4_dw wg = {DS4_TYPE_IQ2_XXS, sane_blocks_dev(&lr, DS4_TYPE_IQ2_XXS, gb), D, FF * E},
                 wu = {DS4_TYPE_IQ2_XXS, sane_blocks_dev(&lr, DS4_TYPE_IQ2_XXS, gb), D, FF * E},
                 wd = {DS4_TYPE_Q2_K, sane_blocks_dev(&lr, DS4_TYPE_Q2_K, db), FF, D * E};
    host_w wr = make_w(&lr, DS4_TYPE_F16, D, E);
    float *src = rnd(&lr, (size_t)ROUNDS * D, 1.0f), *dsrc = to_dev(src, sizeof(float) * ROUNDS * D);
    float *dx = to_dev(NULL, sizeof(float) * D), *dl = to_dev(NULL, sizeof(float) * E);
    float *dg = to_dev(NULL, sizeof(float) * 2 * ROUNDS * KS * FF), *du = dg + ROUNDS * KS * FF;
    float *dy = to_dev(NULL, sizeof(float) * 2 * ROUNDS * KS * D), *dw = to_dev(NULL, sizeof(float) * ROUNDS * KS);
    int32_t *dids = to_dev(NULL, sizeof(int32_t) * ROUNDS * KS);
    unsigned *done = to_dev(NULL, sizeof(unsigned));
    cudaMemset(done, 0, sizeof(unsigned));
    cudaStream_t ts;
    cudaStreamCreateWithFlags(&ts, cudaStreamNonBlocking);
    int rc = 0;
    for (int pass = 0; pass < 2; pass++) { /* 0: early, in a graph; 1: flags off, synchronized launches */
        cudaGraph_t graph = NULL;
        cudaGraphExec_t exec = NULL;
        bool ok = pass == 1 || cudaStreamBeginCapture(ts, cudaStreamCaptureModeGlobal) == cudaSuccess;
        for (int t = 0; t < ROUNDS; t++) {
            const ds4_stream st = (ds4_stream)ts;
            float *g = dg + (int64_t)t * KS * FF, *u = du + (int64_t)t * KS * FF, *y = dy + (int64_t)(pass * ROUNDS + t) * KS * D;
            int32_t *ids = dids + t * KS;
            ds4k_rmsnorm(dsrc + t * D, D, NULL, 1, (int)D, 1e-6f, dx, D, st);
            const ds4_route rt = {dl, E, KS, NULL, NULL, NULL, 1.5f, ids, dw + t * KS, {NULL, NULL, NULL, 0, 0.0f, NULL, NULL}};
            if (ds4k_router_matmul(&wr.d, dx, &rt, done, st) != 0) {
                ds4k_matmul(&wr.d, 0, E, dx, D, 1, dl, E, st);
                ds4k_router(dl, 1, E, KS, NULL, NULL, NULL, 1.5f, ids, dw + t * KS, st);
            }
            const ds4_mm_job j[2] = {{&wg, 0, FF, 0, g, FF}, {&wu, 0, FF, 0, u, FF}};
            ds4k_moe_matmul_multi(j, 2, ids, 1, KS, dx, D, 0, pass ? 0 : DS4_EARLY_X, st);
            const ds4_prep sw = {DS4_PREP_SWIGLU, NULL, 0.0f, u, dw + t * KS, 10.0f, pass ? 0 : DS4_EARLY_IDS};
            rc |= ds4k_matmul_prep(&wd, D, g, FF, &sw, ids, 1, KS, 1, y, D, st);
            if (pass) ok = ok && cudaStreamSynchronize(ts) == cudaSuccess;
        }
        if (pass == 0) {
            ok = ok && cudaStreamEndCapture(ts, &graph) == cudaSuccess && cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess;
            for (int i = 0; ok && i < 10; i++) ok = cudaGraphLaunch(exec, ts) == cudaSuccess;
            ok = ok && cudaStreamSynchronize(ts) == cudaSuccess;
            if (exec) cudaGraphExecDestroy(exec);
            if (graph) cudaGraphDestroy(graph);
        }
        rc |= ok ? 0 : 1;
    }
    float *y = malloc(sizeof(float) * 2 * ROUNDS * KS * D);
    from_dev(y, dy, sizeof(float) * 2 * ROUNDS * KS * D);
    int bad = 0, finite = 1;
    int64_t nonzero = 0;
    for (int t = 0; t < ROUNDS; t++) bad += memcmp(y + (int64_t)t * KS * D, y + (int64_t)(ROUNDS + t) * KS * D, sizeof(float) * KS * D) != 0;
    for (int64_t i = 0; i < (int64_t)ROUNDS * KS * D; i++) finite &= isfinite(y[i]), nonzero += y[i] != 0.0f;
    finite &= nonzero > (int64_t)ROUNDS * KS * D / 2;
    check(rc == 0 && bad == 0 && finite,
          "routed gate/up with x staged early and the down with its copies started early (%d rounds x 10 graph "
          "replays): %s",
          ROUNDS, rc ? "NOT LAUNCHED" : !finite ? "outputs not finite or mostly 0" : bad ? "DIFFER from the flags off" : "bitwise the flags off");
    cudaFree((void *)wg.ptr), cudaFree((void *)wu.ptr), cudaFree((void *)wd.ptr), free_w(&wr);
    cudaFree(dsrc), cudaFree(dx), cudaFree(dl), cudaFree(dg), cudaFree(dy), cudaFree(dw), cudaFree(dids), cudaFree(done);
    cudaStreamDestroy(ts);
    free(src), free(y);
}

/* ------------------------------------------------------------------ timing */

static void *random_dev(size_t bytes, uint64_t seed) {
    uint64_t *h = malloc(bytes + 8);
    for (size_t i = 0; i < bytes / 8 + 1; i++) {
        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
        /* keep every 16-bit field a small positive f16-ish pattern so scales
         * are finite: clear the exponent's top bits */
        h[i] = seed & 0x3bff3bff3bff3bffull;
    }
    void *d = to_dev(h, bytes);
    free(h);
    return d;
}

static double time_ms(void (*fn)(void *), void *arg, int iters) {
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    for (int i = 0; i < 3; i++) fn(arg);
    cudaEventRecord(a, NULL);
    for (int i = 0; i < iters; i++) fn(arg);
    cudaEventRecord(b, NULL);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return ms / iters;
}

typedef struct bench_case {
    const char *name;
    int type;
    int64_t K, N; /* rows per matrix (per expert) */
    int experts;  /* 0: one matrix; else routed, 6 pairs of one token */
    ds4_dw d;
    const float *x;
    float *y;
    const int32_t *ids;
} bench_case;

static int bench_parts = 1; /* > 1: the rows in K stretches (ds4k_matmul_ksplit) */
static void run_case(void *p) {
    bench_case *c = p;
    if (bench_parts > 1 && !c->experts) {
        const ds4_mm_job j = {&c->d, 0, c->N, 0, c->y, c->N};
        ds4k_matmul_ksplit(&j, 1, bench_parts, c->N, c->x, c->K, NULL);
    } else if (c->experts) {
        ds4k_moe_matmul(&c->d, c->N, c->ids, 1, 6, c->x, c->K, 0, c->y, c->N, NULL);
    } else {
        ds4k_matmul(&c->d, 0, c->N, c->x, c->K, 1, c->y, c->N, NULL);
    }
}

static int prefill_n;
static void run_prefill(void *p) {
    bench_case *c = p;
    ds4k_matmul(&c->d, 0, c->N, c->x, c->K, prefill_n, c->y, c->N, NULL);
}

int gemv_bench(void) {
    bench_case cases[] = {
        {"q_a", DS4_TYPE_Q8_0, 4096, 1024, 0, {0}, NULL, NULL, NULL},
        {"q_b", DS4_TYPE_Q8_0, 1024, 32768, 0, {0}, NULL, NULL, NULL},
        {"o_a group", DS4_TYPE_Q8_0, 4096, 1024, 0, {0}, NULL, NULL, NULL},
        {"o_b", DS4_TYPE_Q8_0, 8192, 4096, 0, {0}, NULL, NULL, NULL},
        {"shared gate", DS4_TYPE_Q8_0, 4096, 2048, 0, {0}, NULL, NULL, NULL},
        {"shared down", DS4_TYPE_Q8_0, 2048, 4096, 0, {0}, NULL, NULL, NULL},
        {"router", DS4_TYPE_F16, 4096, 256, 0, {0}, NULL, NULL, NULL},
        {"hc mixer", DS4_TYPE_F16, 16384, 24, 0, {0}, NULL, NULL, NULL},
        {"expert gate", DS4_TYPE_IQ2_XXS, 4096, 2048, 256, {0}, NULL, NULL, NULL},
        {"expert down", DS4_TYPE_Q2_K, 2048, 4096, 256, {0}, NULL, NULL, NULL},
        {"expert q4", DS4_TYPE_Q4_K, 4096, 2048, 256, {0}, NULL, NULL, NULL},
        {"head", DS4_TYPE_Q8_0, 4096, 129280, 0, {0}, NULL, NULL, NULL},
    };
    const int32_t ids[6] = {3, 77, 140, 200, 9, 251};
    int32_t *dids = to_dev(ids, sizeof(ids));
    ds4_rng r;
    ds4_rng_seed(&r, 7);
    float *x = rnd(&r, 16384 * 6, 1.0f), *dx = to_dev(x, sizeof(float) * 16384 * 6);
    float *dy = to_dev(NULL, sizeof(float) * 129280 * 6);
    printf("%-12s %-8s %6s %7s %9s | %9s %7s | %9s %7s | %9s %7s\n", "matrix", "type", "K", "rows", "MB", "old us",
           "GB/s", "x smem us", "GB/s", "x reg us", "GB/s");
    /* DS4_GEMV_BENCH=name: only the cases whose name contains it (no
     * prefill section), for quick A/B runs of one matrix */
    const char *only = getenv("DS4_GEMV_BENCH");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bench_case *c = &cases[i];
        if (only && !strstr(c->name, only)) continue;
        const size_t rb = ds4_row_bytes(c->type, c->K);
        const int64_t total_rows = c->N * (c->experts ? c->experts : 1);
        c->d = (ds4_dw){c->type, random_dev(rb * total_rows, 0x9e3779b97f4a7c15ull + i), c->K, total_rows};
        c->x = dx;
        c->y = dy;
        c->ids = dids;
        const double mb = (double)rb * c->N * (c->experts ? 6 : 1) / 1e6;
        ds4k_gemv_stream_enable(0);
        const double t_old = time_ms(run_case, c, 20);
        ds4k_gemv_stream_enable(1);
        ds4k_gemv_xreg_enable(0);
        const double t_smem = time_ms(run_case, c, 20);
        ds4k_gemv_xreg_enable(1);
        const double t_new = time_ms(run_case, c, 20);
        printf("%-12s %-8s %6lld %7lld %9.2f | %9.1f %7.0f | %9.1f %7.0f | %9.1f %7.0f\n", c->name,
               ds4_type_name(c->type), (long long)c->K, (long long)c->N, mb, t_old * 1e3, mb / t_old, t_smem * 1e3,
               mb / t_smem, t_new * 1e3, mb / t_new);
        { /* x in registers, rows one an iteration (where they go two by default) */
            const int was = ds4k_gemv_pairs_enable(0);
            const double t_one = time_ms(run_case, c, 20);
            ds4k_gemv_pairs_enable(was);
            printf("%-12s   x in registers, rows one an iteration: %.1f us, %.0f GB/s\n", "", t_one * 1e3, mb / t_one);
        }
        for (int parts = 2; parts <= 4 && c->K >= 4096 && c->type != DS4_TYPE_F16 && !c->experts; parts *= 2) {
            bench_parts = parts;
            const double t_k = time_ms(run_case, c, 20);
            bench_parts = 1;
            printf("%-12s   K in %d stretches: %.1f us, %.0f GB/s\n", "", parts, t_k * 1e3, mb / t_k);
        }
        cudaFree((void *)c->d.ptr);
    }
    cudaFree(dids);
    cudaFree(dx);
    cudaFree(dy);
    free(x);

    if (only) return 0;
    /* prefill-sized products: float tiles vs tensor-core tiles */
    static const struct {
        const char *name;
        int type;
        int64_t K, N;
        int n;
    } pf[] = {{"q_b", DS4_TYPE_Q8_0, 1024, 32768, 2048},      {"shared gate", DS4_TYPE_Q8_0, 4096, 2048, 2048},
              {"o_b", DS4_TYPE_Q8_0, 8192, 4096, 2048},       {"expert iq2", DS4_TYPE_IQ2_XXS, 4096, 2048, 512},
              {"expert q2_K", DS4_TYPE_Q2_K, 2048, 4096, 512}, {"router f16", DS4_TYPE_F16, 4096, 256, 2048}};
    float *px = rnd(&r, (size_t)8192 * 2048, 1.0f), *dpx = to_dev(px, sizeof(float) * 8192 * 2048);
    float *dpy = to_dev(NULL, sizeof(float) * 32768 * 2048);
    printf("\n%-12s %-8s %6s %7s %5s | %9s %7s | %9s %7s\n", "matrix", "type", "K", "rows", "n", "float ms", "TFLOPS",
           "mma ms", "TFLOPS");
    for (size_t i = 0; i < sizeof(pf) / sizeof(pf[0]); i++) {
        bench_case c = {pf[i].name, pf[i].type, pf[i].K, pf[i].N, 0, {0}, dpx, dpy, NULL};
        const size_t rb = ds4_row_bytes(c.type, c.K);
        c.d = (ds4_dw){c.type, random_dev(rb * c.N, 0x51ed27ull + i), c.K, c.N};
        prefill_n = pf[i].n;
        const double flop = 2.0 * c.K * c.N * pf[i].n;
        ds4k_mma_enable(0);
        const double t_old = time_ms(run_prefill, &c, 3);
        ds4k_mma_enable(1);
        const double t_new = time_ms(run_prefill, &c, 3);
        printf("%-12s %-8s %6lld %7lld %5d | %9.2f %7.1f | %9.2f %7.1f\n", c.name, ds4_type_name(c.type),
               (long long)c.K, (long long)c.N, pf[i].n, t_old, flop / t_old / 1e9, t_new, flop / t_new / 1e9);
        cudaFree((void *)c.d.ptr);
    }
    cudaFree(dpx);
    cudaFree(dpy);
    free(px);
    const char *e = ds4k_last_error();
    if (e) {
        fprintf(stderr, "CUDA error: %s\n", e);
        return 1;
    }
    return 0;
}

/* ------------------------------------------------------------------ HC mixer from the raw streams */

/* Largest errors of a GPU hc_pre (the Sinkhorn matrices Mg, post weights pg
 * and the collapsed, normed inputs ag of n tokens) against the CPU order on
 * the streams H: rmsnorm, the mixer t, split, collapse with pre, rmsnorm
 * with w: wm over M, wp over post, wa over the inputs. */
static void hc_pre_errors(const ds4_tensor *t, const float *H, int n, int hc, int D, const float *scale,
                          const float *base, const float *w, const float *Mg, const float *pg, const float *ag,
                          double *wm, double *wp, double *wa) {
    const int64_t K = (int64_t)hc * D;
    const int MIX = (2 + hc) * hc;
    float *flat = malloc(sizeof(float) * K), *mix = malloc(sizeof(float) * MIX), *a = malloc(sizeof(float) * D);
    float *scratch = malloc(sizeof(float) * DS4_MM_ROW_BLOCK * K);
    *wm = 0, *wp = 0, *wa = 0;
    for (int tk = 0; tk < n; tk++) {
        float pre[DS4K_MAX_HC], post[DS4K_MAX_HC], M[DS4K_MAX_HC * DS4K_MAX_HC];
        ds4_rmsnorm(H + tk * K, NULL, (int)K, 1e-6f, flat);
        ds4_matmul_serial(t, 0, MIX, flat, K, 1, mix, MIX, scratch);
        ds4_hc_split(mix, scale, base, hc, 20, 1e-6f, pre, post, M);
        for (int dd = 0; dd < D; dd++) {
            float acc = 0;
            for (int s = 0; s < hc; s++) acc += pre[s] * H[tk * K + s * D + dd];
            a[dd] = acc;
        }
        ds4_rmsnorm(a, w, D, 1e-6f, a);
        for (int i = 0; i < hc * hc; i++) *wm = fold_max(*wm, fabs(Mg[tk * hc * hc + i] - M[i]));
        for (int i = 0; i < hc; i++) *wp = fold_max(*wp, fabs(pg[tk * hc + i] - post[i]));
        for (int i = 0; i < D; i++) *wa = fold_max(*wa, fabs(ag[tk * D + i] - a[i]));
    }
    free(flat), free(mix), free(a), free(scratch);
}

/* The decode HC pre (ds4k_hc_mix_parts + ds4k_hc_split_collapse_parts: the
 * mixer of the raw streams in 8 stretches, the rmsnorm scale applied to its
 * outputs) against the CPU order (rmsnorm, mixer, split, collapse). */
void test_hc_mix_parts(ds4_rng *r) {
    const int n = 3, hc = 4, D = 1024, MIX = (2 + hc) * hc, S = 8;
    const int64_t K = (int64_t)hc * D;
    float *H = rnd(r, (size_t)n * K, 1.0f), *wf = rnd(r, (size_t)MIX * K, 1.0f / 64.0f), *w = rnd(r, D, 0.1f);
    for (int i = 0; i < D; i++) w[i] += 1.0f;
    float scale[3] = {0.8f, 1.2f, 0.9f}, *base = rnd(r, MIX, 0.5f);
    uint16_t *wh = malloc(sizeof(uint16_t) * MIX * K);
    for (int64_t i = 0; i < MIX * K; i++) wh[i] = ds4_f32_to_f16(wf[i]);
    ds4_tensor t = {.name = "hc", .type = DS4_TYPE_F16, .n_dims = 2, .ne = {K, MIX, 1, 1}, .data = wh, .size = 2 * MIX * K};
    ds4_dw d = {DS4_TYPE_F16, to_dev(wh, 2 * MIX * K), K, MIX};
    float *dH = to_dev(H, sizeof(float) * n * K), *dparts = to_dev(NULL, sizeof(float) * S * n * MIX);
    float *dss = to_dev(NULL, sizeof(float) * S * n), *dscale = to_dev(scale, sizeof(scale));
    float *dbase = to_dev(base, sizeof(float) * MIX), *dw = to_dev(w, sizeof(float) * D);
    float *dpre = to_dev(NULL, sizeof(float) * n * hc), *dpost = to_dev(NULL, sizeof(float) * n * hc);
    float *dM = to_dev(NULL, sizeof(float) * n * hc * hc), *da = to_dev(NULL, sizeof(float) * n * D);
    const int rc = ds4k_hc_mix_parts(&d, MIX, dH, K, n, S, dparts, dss, NULL);
    ds4k_hc_split_collapse_parts(dparts, dss, S, 1e-6f, dscale, dbase, hc, 20, 1e-6f, dH, D, dw, 1e-6f, n, dpre, dpost,
                                 dM, da, NULL);
    float *ag = malloc(sizeof(float) * n * D), *Mg = malloc(sizeof(float) * n * hc * hc);
    float *pg = malloc(sizeof(float) * n * hc);
    from_dev(ag, da, sizeof(float) * n * D);
    from_dev(Mg, dM, sizeof(float) * n * hc * hc);
    from_dev(pg, dpost, sizeof(float) * n * hc);
    double wm, wp, wa;
    hc_pre_errors(&t, H, n, hc, D, scale, base, w, Mg, pg, ag, &wm, &wp, &wa);
    check(rc == 0 && wm < 2e-6 && wp < 1e-5 && wa < 2e-5,
          "hc mixer in parts + split_collapse: Sinkhorn %.2e, post %.2e, collapsed+normed input %.2e", wm, wp, wa);
    void *bufs[] = {(void *)d.ptr, dH, dparts, dss, dscale, dbase, dw, dpre, dpost, dM, da};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) cudaFree(bufs[i]);
    free(H), free(wf), free(w), free(base), free(wh), free(ag), free(Mg), free(pg);
}

/* The prefill mixers against the per-(row, stretch, token) kernel the decode
 * step uses, token by token: the SIMT one (a block per stretch and 16
 * tokens, all rows; DS4_HC_MIX_TC=0) must give its parts and square sums
 * bitwise; the tensor-core one (TF32 hi + lo) against double sums over each
 * part's stretch, within 1e-5 of sum |w| |x| — a warp's partial sum is 64
 * accumulations in the tensor core's f32, each within 2^-23 of the running
 * sum (64 x 2^-23 = 7.6e-6), the lo halves' rounding adds 2^-22 — and its
 * square sums within 1e-6 relative of the decode kernel's. */
void test_hc_mix_batched(ds4_rng *r) {
    const int n = 37, hc = 4, D = 4096, MIX = (2 + hc) * hc, S = 8; /* the published widths */
    const int64_t K = (int64_t)hc * D, len = K / S;
    float *H = rnd(r, (size_t)n * K, 1.0f), *wf = rnd(r, (size_t)MIX * K, 1.0f / 64.0f);
    for (int64_t i = 0; i < (int64_t)n * K; i += 97) H[i] *= 300.0f; /* a wide range, as residual streams have */
    uint16_t *wh = malloc(sizeof(uint16_t) * MIX * K);
    for (int64_t i = 0; i < MIX * K; i++) wh[i] = ds4_f32_to_f16(wf[i]);
    ds4_dw d = {DS4_TYPE_F16, to_dev(wh, 2 * MIX * K), K, MIX};
    float *dH = to_dev(H, sizeof(float) * n * K);
    float *dparts = to_dev(NULL, sizeof(float) * S * n * MIX), *dss = to_dev(NULL, sizeof(float) * S * n);
    float *dp1 = to_dev(NULL, sizeof(float) * S * MIX), *ds1 = to_dev(NULL, sizeof(float) * S);
    float *parts = malloc(sizeof(float) * S * n * MIX), *ss = malloc(sizeof(float) * S * n);
    float *p1 = malloc(sizeof(float) * S * MIX * n), *s1 = malloc(sizeof(float) * S * n);
    for (int t = 0; t < n; t++) { /* the decode kernel, one token at a time */
        ds4k_hc_mix_parts(&d, MIX, dH + (int64_t)t * K, K, 1, S, dp1, ds1, NULL);
        from_dev(p1 + (size_t)t * S * MIX, dp1, sizeof(float) * S * MIX);
        from_dev(s1 + (size_t)t * S, ds1, sizeof(float) * S);
    }
    for (int tc = 0; tc < 2; tc++) {
        const int was = ds4k_hc_mix_tc(tc);
        const int rc = ds4k_hc_mix_parts(&d, MIX, dH, K, n, S, dparts, dss, NULL);
        ds4k_hc_mix_tc(was);
        from_dev(parts, dparts, sizeof(float) * S * n * MIX);
        from_dev(ss, dss, sizeof(float) * S * n);
        bool same = rc == 0;
        double worst = 0.0, worst_ss = 0.0;
        for (int t = 0; t < n; t++)
            for (int s = 0; s < S; s++) {
                const float *a = &parts[((size_t)s * n + t) * MIX], *b = &p1[(size_t)t * S * MIX + s * MIX];
                same &= memcmp(a, b, sizeof(float) * MIX) == 0 && ss[(size_t)s * n + t] == s1[(size_t)t * S + s];
                if (tc == 0) continue;
                const float *h = H + (int64_t)t * K;
                worst_ss = fold_max(worst_ss, fabs((double)ss[(size_t)s * n + t] - s1[(size_t)t * S + s]) /
                                                  fabs((double)s1[(size_t)t * S + s]));
                for (int row = 0; row < MIX; row++) {
                    double dot = 0.0, scale = 0.0;
                    for (int64_t k = len * s; k < len * (s + 1); k++) {
                        const double term = (double)ds4_f16_to_f32(wh[row * K + k]) * h[k];
                        dot += term;
                        scale += fabs(term);
                    }
                    worst = fold_max(worst, fabs(a[row] - dot) / scale);
                }
            }
        if (tc == 0)
            check(same, "hc mixer, %d tokens batched (SIMT: a block per stretch and 16 tokens): parts bitwise those of "
                        "one token",
                  n);
        else
            check(rc == 0 && worst < 1e-5 && worst_ss < 1e-6,
                  "hc mixer, %d tokens batched (tensor cores, TF32 hi + lo): parts within %.2e of sum |w||x| of "
                  "double sums (bound 1e-5), square sums %.2e relative to the decode kernel's",
                  n, worst, worst_ss);
    }
    void *bufs[] = {(void *)d.ptr, dH, dparts, dss, dp1, ds1};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) cudaFree(bufs[i]);
    free(H), free(wf), free(wh), free(parts), free(ss), free(p1), free(s1);
}

/* The decode step's hc_post fused with the next sub-layer's mixer
 * (ds4k_hc_post_mix), after a sub-layer output y and after the MoE sum: the
 * streams bitwise those of ds4k_hc_post / ds4k_hc_post_moe, and the mixer's
 * parts, through split_collapse, against the CPU order (rmsnorm, mixer,
 * split, collapse) on the updated streams. */
void test_hc_post_mix(ds4_rng *r) {
    const int n = 2, hc = 4, MIX = (2 + hc) * hc, k = 6, YP = 3;
    const int Ds[2] = {1024, 4096};
    /* moe 0: y; 1: the MoE sum; 2: y as YP partial vectors (ds4k_matmul_ksplit),
     * against hc_post of their sum in part order — bitwise, fused or not */
    for (int moe = 0; moe < 3; moe++)
        for (int di = 0; di < 2; di++) {
            const int D = Ds[di];
            const int64_t K = (int64_t)hc * D;
            float *H = rnd(r, (size_t)n * K, 1.0f), *post = rnd(r, n * hc, 1.0f), *M = rnd(r, n * hc * hc, 0.5f);
            float *y = rnd(r, (size_t)n * D, 1.0f), *eo = rnd(r, (size_t)n * k * D, 0.3f), *sh = rnd(r, (size_t)n * D, 1.0f);
            float *yp = rnd(r, (size_t)YP * n * D, 1.0f);
            if (moe == 2) { /* y: the parts' sum in part order */
                free(y);
                y = sum_parts_host(yp, YP, (int64_t)n * D);
            }
            const int32_t ids[12] = {40, 3, 77, 3, 120, 9, 5, 200, 1, 64, 199, 2}; /* a repeated id in token 0 */
            float *wf = rnd(r, (size_t)MIX * K, 1.0f / 64.0f), *w = rnd(r, D, 0.1f);
            for (int i = 0; i < D; i++) w[i] += 1.0f;
            float scale[3] = {0.8f, 1.2f, 0.9f}, *base = rnd(r, MIX, 0.5f);
            uint16_t *wh = malloc(sizeof(uint16_t) * MIX * K);
            for (int64_t i = 0; i < MIX * K; i++) wh[i] = ds4_f32_to_f16(wf[i]);
            ds4_tensor t = {.name = "hc", .type = DS4_TYPE_F16, .n_dims = 2, .ne = {K, MIX, 1, 1}, .data = wh,
                            .size = 2 * MIX * K};
            ds4_dw d = {DS4_TYPE_F16, to_dev(wh, 2 * MIX * K), K, MIX};
            float *dH1 = to_dev(H, sizeof(float) * n * K), *dH2 = to_dev(H, sizeof(float) * n * K);
            float *dpost = to_dev(post, sizeof(float) * n * hc), *dM = to_dev(M, sizeof(float) * n * hc * hc);
            float *dy = to_dev(y, sizeof(float) * n * D), *deo = to_dev(eo, sizeof(float) * n * k * D);
            float *dyp = to_dev(yp, sizeof(float) * YP * n * D), *dH3 = to_dev(H, sizeof(float) * n * K);
            const float *ymix = moe == 2 ? dyp : dy;
            const int yparts = moe == 2 ? YP : 1;
            float *dsh = to_dev(sh, sizeof(float) * n * D);
            int32_t *dids = to_dev(ids, sizeof(ids));
            float *dparts = to_dev(NULL, sizeof(float) * DS4K_MAX_HC_PARTS * n * MIX);
            float *dss = to_dev(NULL, sizeof(float) * DS4K_MAX_HC_PARTS * n), *dscale = to_dev(scale, sizeof(scale));
            float *dbase = to_dev(base, sizeof(float) * MIX), *dw = to_dev(w, sizeof(float) * D);
            float *dpre = to_dev(NULL, sizeof(float) * n * hc), *dpost2 = to_dev(NULL, sizeof(float) * n * hc);
            float *dM2 = to_dev(NULL, sizeof(float) * n * hc * hc), *da = to_dev(NULL, sizeof(float) * n * D);
            if (moe == 1) ds4k_hc_post_moe(dpost, dM, deo, NULL, dids, dsh, n, k, hc, D, dH1, NULL);
            else ds4k_hc_post(dpost, dM, dy, D, 1, n, hc, D, dH1, NULL);
            if (moe == 2) ds4k_hc_post(dpost, dM, dyp, D, YP, n, hc, D, dH3, NULL);
            const int P = ds4k_hc_post_mix(dpost, dM, moe == 1 ? NULL : ymix, D, yparts, moe == 1 ? deo : NULL, dids,
                                           dsh, n, k, hc, D, dH2, &d, MIX, dparts, dss, NULL);
            if (P > 0)
                ds4k_hc_split_collapse_parts(dparts, dss, P, 1e-6f, dscale, dbase, hc, 20, 1e-6f, dH2, D, dw, 1e-6f, n,
                                             dpre, dpost2, dM2, da, NULL);
            float *h1 = malloc(sizeof(float) * n * K), *h2 = malloc(sizeof(float) * n * K);
            float *ag = malloc(sizeof(float) * n * D), *Mg = malloc(sizeof(float) * n * hc * hc);
            float *pg = malloc(sizeof(float) * n * hc);
            from_dev(h1, dH1, sizeof(float) * n * K);
            from_dev(h2, dH2, sizeof(float) * n * K);
            bool same3 = true;
            if (moe == 2) {
                float *h3 = malloc(sizeof(float) * n * K);
                from_dev(h3, dH3, sizeof(float) * n * K);
                same3 = memcmp(h1, h3, sizeof(float) * n * K) == 0;
                free(h3);
            }
            from_dev(ag, da, sizeof(float) * n * D);
            from_dev(Mg, dM2, sizeof(float) * n * hc * hc);
            from_dev(pg, dpost2, sizeof(float) * n * hc);
            double wm, wp, wa;
            hc_pre_errors(&t, h1, n, hc, D, scale, base, w, Mg, pg, ag, &wm, &wp, &wa);
            const bool same = memcmp(h1, h2, sizeof(float) * n * K) == 0;
            check(P == D / 256 && same && same3 && wm < 2e-6 && wp < 1e-5 && wa < 2e-5,
                  "hc_post + next mixer fused (%s, D=%d, %d parts): streams bitwise hc_post's %s%s, "
                  "Sinkhorn %.2e, post %.2e, collapsed+normed input %.2e",
                  moe == 1 ? "MoE sum" : moe == 2 ? "y in 3 parts" : "output y", D, P, same ? "yes" : "NO",
                  moe == 2 ? (same3 ? " (unfused: yes)" : " (unfused: NO)") : "", wm, wp, wa);
            void *bufs[] = {(void *)d.ptr, dH1, dH2, dH3, dpost, dM, dy, dyp, deo, dsh, dids, dparts, dss,
                            dscale, dbase, dw, dpre, dpost2, dM2, da};
            for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) cudaFree(bufs[i]);
            free(H), free(post), free(M), free(y), free(yp), free(eo), free(sh), free(wf), free(w), free(base);
            free(wh);
            free(h1), free(h2), free(ag), free(Mg), free(pg);
        }
}

/* The decode step's hc_post fused with the next HC pre but its Sinkhorn
 * (ds4k_hc_post_collapse) against the launches it replaces: hc_post_mix,
 * then the split-collapse kernel from its parts; and ds4k_hc_sinkhorn on its
 * mixer sums against that kernel's post and M. The streams, pre, post and M
 * must be bitwise theirs; the input a takes its
 * rmsnorm from the streams' Gram matrix, so it is held to a relative bound,
 * and also against the CPU order. Three launches in a row with each kind
 * of meeting check that its counters end where they should; every other
 * launch makes the ending sub-layer's post and M itself, from its sums. */
void test_hc_post_collapse(ds4_rng *r) {
    const int hc = 4, MIX = (2 + hc) * hc, k = 6, YP = 3;
    const int Ds[2] = {1024, 4096}, ns[2] = {1, 3};
    for (int moe = 0; moe < 3; moe++)
        for (int di = 0; di < 2; di++) {
            const int D = Ds[di], n = ns[di];
            const int64_t K = (int64_t)hc * D;
            float *H = rnd(r, (size_t)n * K, 1.0f), *mixc = rnd(r, (size_t)n * MIX, 1.0f);
            float *y = rnd(r, (size_t)n * D, 1.0f), *eo = rnd(r, (size_t)n * k * D, 0.3f), *sh = rnd(r, (size_t)n * D, 1.0f);
            float *yp = rnd(r, (size_t)YP * n * D, 1.0f);
            const int32_t ids[18] = {40, 3, 77, 3, 120, 9, 5, 200, 1, 64, 199, 2, 7, 8, 9, 10, 11, 12};
            float *wf = rnd(r, (size_t)MIX * K, 1.0f / 64.0f), *w = rnd(r, D, 0.1f);
            for (int i = 0; i < D; i++) w[i] += 1.0f;
            float sc_c[3] = {0.7f, 1.1f, 1.3f}, sc_n[3] = {0.8f, 1.2f, 0.9f};
            float *base_c = rnd(r, MIX, 0.5f), *base_n = rnd(r, MIX, 0.5f);
            uint16_t *wh = malloc(sizeof(uint16_t) * MIX * K);
            for (int64_t i = 0; i < MIX * K; i++) wh[i] = ds4_f32_to_f16(wf[i]);
            ds4_tensor t = {.name = "hc", .type = DS4_TYPE_F16, .n_dims = 2, .ne = {K, MIX, 1, 1}, .data = wh,
                            .size = 2 * MIX * K};
            ds4_dw d = {DS4_TYPE_F16, to_dev(wh, 2 * MIX * K), K, MIX};
            const size_t hb = sizeof(float) * n * K;
            float *dH1 = to_dev(H, hb), *dH2 = to_dev(H, hb), *dmixc = to_dev(mixc, sizeof(float) * n * MIX);
            float *dy = to_dev(y, sizeof(float) * n * D), *deo = to_dev(eo, sizeof(float) * n * k * D);
            float *dyp = to_dev(yp, sizeof(float) * YP * n * D), *dsh = to_dev(sh, sizeof(float) * n * D);
            const float *yv = moe == 2 ? dyp : moe == 0 ? dy : NULL;
            const int yparts = moe == 2 ? YP : 1;
            int32_t *dids = to_dev(ids, sizeof(ids));
            float *dscc = to_dev(sc_c, sizeof(sc_c)), *dscn = to_dev(sc_n, sizeof(sc_n));
            float *dbc = to_dev(base_c, sizeof(float) * MIX), *dbn = to_dev(base_n, sizeof(float) * MIX);
            float *dw = to_dev(w, sizeof(float) * D);
            float *dparts = to_dev(NULL, sizeof(float) * DS4K_MAX_HC_PARTS * n * MIX);
            float *dss = to_dev(NULL, sizeof(float) * DS4K_MAX_HC_PARTS * n);
            float *dcp = to_dev(NULL, sizeof(float) * DS4K_MAX_HC_PARTS * n * DS4K_HC_COLLAPSE_COLS);
            unsigned *dbar = to_dev(NULL, 2 * sizeof(unsigned) * n);
            cudaMemset(dbar, 0, 2 * sizeof(unsigned) * n);
            /* out[0]: the reference path's, out[1]: the fused kernel's; post0 / M0: the ending sub-layer's */
            float *dpost0 = to_dev(NULL, sizeof(float) * n * hc), *dM0 = to_dev(NULL, sizeof(float) * n * hc * hc);
            float *dpre[2], *dpost[2], *dM[2], *da[2], *dmix[2];
            for (int v = 0; v < 2; v++) {
                dpre[v] = to_dev(NULL, sizeof(float) * n * hc), dpost[v] = to_dev(NULL, sizeof(float) * n * hc);
                dM[v] = to_dev(NULL, sizeof(float) * n * hc * hc), da[v] = to_dev(NULL, sizeof(float) * n * D);
                dmix[v] = to_dev(NULL, sizeof(float) * n * MIX);
            }
            ds4k_hc_sinkhorn(dmixc, dscc, dbc, hc, 20, 1e-6f, n, dpost0, dM0, NULL); /* the ending sub-layer's */
            const int P = ds4k_hc_post_mix(dpost0, dM0, yv, D, yparts, moe == 1 ? deo : NULL, dids, dsh, n, k, hc, D,
                                           dH1, &d, MIX, dparts, dss, NULL);
            if (P > 0)
                ds4k_hc_split_collapse_parts(dparts, dss, P, 1e-6f, dscn, dbn, hc, 20, 1e-6f, dH1, D, dw, 1e-6f, n,
                                             dpre[0], dpost[0], dM[0], da[0], NULL);
            int rc = 0;
            bool repeat_same = true;
            float *a_first = malloc(sizeof(float) * n * D), *a_now = malloc(sizeof(float) * n * D);
            /* three launches with each meeting (1: one growing word, 2: count and generation) */
            unsigned bar[2][16];
            const int was_on = ds4k_hc_collapse_enable(-1);
            for (int rep = 0; rep < 6 && rc == 0; rep++) {
                if (rep % 3 == 0) {
                    ds4k_hc_collapse_enable(1 + rep / 3);
                    cudaMemset(dbar, 0, 2 * sizeof(unsigned) * n);
                }
                cudaMemcpy(dH2, H, hb, cudaMemcpyHostToDevice);
                /* odd launches make post and M themselves, from the ending sub-layer's sums */
                const bool own = rep & 1;
                if (own) cudaMemcpy(dmix[1], mixc, sizeof(float) * n * MIX, cudaMemcpyHostToDevice);
                const ds4k_hc_collapse g = {dpost0, dM0, own ? dscc : NULL, own ? dbc : NULL, 20, &d, dscn, dbn, dw, 1e-6f, 1e-6f, 1e-6f, dmix[1], dpre[1], da[1],
                                            dcp, dbar};
                rc = ds4k_hc_post_collapse(yv, D, yparts, moe == 1 ? deo : NULL, dids, dsh, n, k, hc, D, dH2, &g, NULL);
                from_dev(rep == 0 ? a_first : a_now, da[1], sizeof(float) * n * D);
                if (rep > 0) repeat_same = repeat_same && memcmp(a_first, a_now, sizeof(float) * n * D) == 0;
                if (rep % 3 == 2) from_dev(bar[rep / 3], dbar, 2 * sizeof(unsigned) * n);
            }
            ds4k_hc_collapse_enable(was_on);
            /* the next sub-layer's post and M from the fused kernel's sums */
            ds4k_hc_sinkhorn(dmix[1], dscn, dbn, hc, 20, 1e-6f, n, dpost[1], dM[1], NULL);
            bool counts = true;
            for (int i = 0; i < n; i++)
                counts = counts && bar[1][2 * i] == 0 && bar[1][2 * i + 1] == 3 &&
                         bar[0][2 * i] == 3u * (unsigned)(D / 256) && bar[0][2 * i + 1] == 0;
            /* the bitwise parts */
            float *h1 = malloc(hb), *h2 = malloc(hb);
            from_dev(h1, dH1, hb);
            from_dev(h2, dH2, hb);
            bool same = memcmp(h1, h2, hb) == 0;
            const struct {
                float *const *p; /* p[1] (fused) against p[0] (the launches it replaces) */
                size_t n;
            } bw[3] = {{dpre, (size_t)n * hc}, {dpost, (size_t)n * hc}, {dM, (size_t)n * hc * hc}};
            for (int i = 0; i < 3; i++) {
                float *x = malloc(sizeof(float) * bw[i].n), *z = malloc(sizeof(float) * bw[i].n);
                from_dev(x, bw[i].p[1], sizeof(float) * bw[i].n);
                from_dev(z, bw[i].p[0], sizeof(float) * bw[i].n);
                same = same && memcmp(x, z, sizeof(float) * bw[i].n) == 0;
                free(x), free(z);
            }
            float *a0 = malloc(sizeof(float) * n * D), *Mg = malloc(sizeof(float) * n * hc * hc);
            float *pg = malloc(sizeof(float) * n * hc);
            from_dev(a0, da[0], sizeof(float) * n * D);
            from_dev(Mg, dM[0], sizeof(float) * n * hc * hc);
            from_dev(pg, dpost[0], sizeof(float) * n * hc);
            double rel = 0, amax = 0;
            for (int i = 0; i < n * D; i++) {
                rel = fold_max(rel, fabs((double)a_first[i] - a0[i]));
                amax = fold_max(amax, fabs(a0[i]));
            }
            rel /= amax > 0 ? amax : 1;
            double wm, wp, wa;
            hc_pre_errors(&t, h1, n, hc, D, sc_n, base_n, w, Mg, pg, a_first, &wm, &wp, &wa);
            check(P == D / 256 && rc == 0 && same && repeat_same && counts && rel < 2e-6 && wa < 2e-5,
                  "hc_post + the next HC pre fused (%s, D=%d, %d token(s)): streams, pre, and post and M from its "
                  "mixer sums bitwise the launches it replaces: %s; input within %.2e of theirs (relative), %.2e of the CPU's; "
                  "six launches alike %s, counters right %s",
                  moe == 1 ? "MoE sum" : moe == 2 ? "y in 3 parts" : "output y", D, n, same ? "yes" : "NO", rel, wa,
                  repeat_same ? "yes" : "NO", counts ? "yes" : "NO");
            const int was = ds4k_hc_collapse_enable(0);
            const ds4k_hc_collapse g0 = {dpost0, dM0, NULL, NULL, 0, &d, dscn, dbn, dw, 1e-6f, 1e-6f, 1e-6f, dmix[1], dpre[1], da[1],
                                         dcp, dbar};
            const int off = ds4k_hc_post_collapse(yv, D, yparts, moe == 1 ? deo : NULL, dids, dsh, n, k, hc, D, dH2,
                                                  &g0, NULL);
            ds4k_hc_collapse_enable(was);
            check(off == -1, "hc_post_collapse declines when off (DS4_HC_COLLAPSE=0)");
            void *bufs[] = {(void *)d.ptr, dH1, dH2, dmixc, dy, deo, dyp, dsh, dids, dscc, dscn, dbc, dbn, dw, dparts,
                            dss, dcp, dbar, dpost0, dM0};
            for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) cudaFree(bufs[i]);
            for (int v = 0; v < 2; v++) cudaFree(dpre[v]), cudaFree(dpost[v]), cudaFree(dM[v]), cudaFree(da[v]), cudaFree(dmix[v]);
            free(H), free(mixc), free(y), free(eo), free(sh), free(yp), free(wf), free(w), free(base_c), free(base_n);
            free(wh), free(a_first), free(a_now), free(h1), free(h2), free(a0), free(Mg), free(pg);
        }
}
