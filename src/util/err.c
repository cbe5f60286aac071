#include "util/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int ds4_errf(ds4_err *e, const char *fmt, ...) {
    if (!e) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
    return -1;
}

int ds4_err_prefix(ds4_err *e, const char *fmt, ...) {
    if (!e) return -1;
    char prefix[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    char old[sizeof(e->msg)];
    memcpy(old, e->msg, sizeof(old));
    /* build "prefix: old" piecewise; truncation of very long messages is fine */
    size_t n = strlen(prefix);
    if (n > sizeof(e->msg) - 3) n = sizeof(e->msg) - 3;
    memcpy(e->msg, prefix, n);
    e->msg[n++] = ':';
    e->msg[n++] = ' ';
    size_t m = strlen(old);
    if (m > sizeof(e->msg) - 1 - n) m = sizeof(e->msg) - 1 - n;
    memcpy(e->msg + n, old, m);
    e->msg[n + m] = '\0';
    return -1;
}
