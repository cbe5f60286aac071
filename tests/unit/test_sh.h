/* A shell command from a test: shared by the cmocka unit tests
 * (engine_test_util.h) and the plain-C CUDA test (cuda_test_util.h), which
 * cannot include cmocka's headers. */
#ifndef DS4_TEST_SH_H
#define DS4_TEST_SH_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

/* Run a shell command; returns its exit status (or -1). */
static inline int test_sh(const char *fmt, ...) {
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    const int st = system(cmd);
    return st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

#endif
