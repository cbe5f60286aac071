/* Helpers for tests that run models: building synthetic models with the
 * ds4-synth program, opening sessions, comparing logits. */
#ifndef DS4_ENGINE_TEST_UTIL_H
#define DS4_ENGINE_TEST_UTIL_H

#include <sha2.h>

#include "backend/backend.h"
#include "model/model.h"
#include "test_sh.h"
#include "test_util.h"

/* Path of a program of the normal build (DS4_BUILD_DIR, default ./build). */
static inline const char *test_bin(const char *name) {
    static char buf[4][4096];
    static int k;
    k = (k + 1) & 3;
    const char *b = getenv("DS4_BUILD_DIR");
    snprintf(buf[k], sizeof(buf[k]), "%s/bin/%s", b && *b ? b : "build", name);
    return buf[k];
}

/* Write a synthetic model with ds4-synth options; returns its path (static). */
static inline const char *test_synth(const char *name, const char *opts) {
    static char path[8][4096];
    static int k;
    k = (k + 1) & 7;
    snprintf(path[k], sizeof(path[k]), "%s/%s.gguf", test_tmp_dir(), name);
    if (test_sh("%s -q %s -o %s", test_bin("ds4-synth"), opts, path[k]) != 0) fail_msg("ds4-synth %s failed", opts);
    return path[k];
}

static inline void test_sha256_file(const char *path, char out[65]) {
    size_t n = 0;
    uint8_t *d = test_read_file(path, &n);
    assert_non_null(d);
    SHA256Data(d, n, out);
    free(d);
}

static inline ds4_model *test_open_model(const char *path) {
    ds4_err err = {{0}};
    ds4_model *m = ds4_model_open(path, 0, &err);
    if (!m) fail_msg("open %s: %s", path, err.msg);
    return m;
}

static inline ds4_session *test_session(ds4_model *m, int ctx, int chunk, bool oracle) {
    ds4_session_opts o;
    ds4_session_opts_default(&o);
    o.ctx = ctx;
    o.prefill_chunk = chunk;
    o.oracle = oracle;
    o.backend = DS4_BACKEND_CPU;
    o.n_threads = 2;
    ds4_err err = {{0}};
    ds4_session *s = ds4_session_create(m, &o, &err);
    if (!s) fail_msg("session: %s", err.msg);
    return s;
}

/* Evaluate tokens in the given chunk pattern (sizes cycle; 0-terminated list;
 * NULL = one call), collecting logits of every position into out[n][V]. */
static inline void test_eval_pattern(ds4_session *s, const int32_t *toks, int n, const int *pattern, float *out,
                                     int64_t V) {
    ds4_err err = {{0}};
    int pos = 0, k = 0;
    while (pos < n) {
        int len = n - pos;
        if (pattern) {
            if (!pattern[k]) k = 0;
            len = pattern[k++];
            if (len > n - pos) len = n - pos;
        }
        if (len == 1 && pattern) {
            if (ds4_session_decode(s, toks[pos], &err) != 0) fail_msg("decode: %s", err.msg);
            memcpy(out + (size_t)pos * V, ds4_session_logits(s), sizeof(float) * (size_t)V);
        } else if (ds4_session_eval(s, toks + pos, len, out + (size_t)pos * V, &err) != 0) {
            fail_msg("eval: %s", err.msg);
        }
        pos += len;
    }
}

/* Compare logits rows with the reference: |diff| <= tol_rel * max(1, max|ref|),
 * and the same argmax unless the reference's own top-2 are within tolerance
 * (a near-tie has no meaningful argmax). Returns the max abs difference. */
static inline double test_compare_logits(const char *what, const float *got, const float *ref, int n, int64_t V,
                                         double tol_rel) {
    double mx = 1.0, md = 0.0;
    for (size_t i = 0; i < (size_t)n * V; i++) mx = fabs(ref[i]) > mx ? fabs(ref[i]) : mx;
    const double tol = tol_rel * mx;
    for (int t = 0; t < n; t++) {
        const float *g = got + (size_t)t * V, *r = ref + (size_t)t * V;
        int ig = 0, ir = 0;
        for (int64_t v = 0; v < V; v++) {
            const double d = fabs((double)g[v] - r[v]);
            if (!(d <= tol)) fail_msg("%s: position %d token %lld: got %.7g, reference %.7g (|diff| %.3g > %.3g)", what, t,
                                      (long long)v, g[v], r[v], d, tol);
            if (d > md) md = d;
            if (g[v] > g[ig]) ig = (int)v;
            if (r[v] > r[ir]) ir = (int)v;
        }
        if (ig != ir && fabs((double)r[ig] - r[ir]) > tol)
            fail_msg("%s: position %d argmax %d, reference %d", what, t, ig, ir);
    }
    return md;
}

#endif
