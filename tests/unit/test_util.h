/* Shared helpers for ds4's unit tests (cmocka). */
#ifndef DS4_TEST_UTIL_H
#define DS4_TEST_UTIL_H

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

/* Paths in tests are built with snprintf into fixed buffers on purpose; a
 * truncated path simply fails to open. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif

/* Root of the source tree (tests run from it; DS4_SRC_DIR overrides). */
static inline const char *test_src_dir(void) {
    const char *d = getenv("DS4_SRC_DIR");
    return d && *d ? d : ".";
}

/* Path under the source tree, in a static rotating buffer. */
static inline const char *test_path(const char *rel) {
    static char buf[4][4096];
    static int k;
    k = (k + 1) & 3;
    snprintf(buf[k], sizeof(buf[k]), "%s/%s", test_src_dir(), rel);
    return buf[k];
}

/* A fresh temporary directory for this test process (removed by the runner). */
static inline const char *test_tmp_dir(void) {
    static char dir[4096];
    if (!dir[0]) {
        const char *base = getenv("DS4_TEST_TMP");
        snprintf(dir, sizeof(dir), "%s/ds4test.XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(dir)) {
            fprintf(stderr, "mkdtemp failed\n");
            exit(1);
        }
    }
    return dir;
}

/* Read a whole file; returns NULL if it cannot be read. */
static inline void *test_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf && n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (len) *len = (size_t)(n > 0 ? n : 0);
    return buf;
}

/* Assert |a-b| <= tol with a readable message. */
#define assert_close(a, b, tol)                                                                          \
    do {                                                                                                 \
        double a_ = (double)(a), b_ = (double)(b), t_ = (double)(tol);                                  \
        if (!(fabs(a_ - b_) <= t_)) fail_msg("%s = %.9g, %s = %.9g, |diff| %.3g > %.3g", #a, a_, #b, b_, \
                                             fabs(a_ - b_), t_);                                         \
    } while (0)

#endif
