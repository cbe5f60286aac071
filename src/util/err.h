/* ds4 — error reporting convention.
 *
 * Library functions never print and never exit on bad input: they return a
 * status (0 = ok, -1 = failure) and fill a ds4_err with a sentence that says
 * what was wrong, naming the tensor / key / field and what was expected.
 * Only main() prints the message and chooses the exit code. */
#ifndef DS4_UTIL_ERR_H
#define DS4_UTIL_ERR_H

#include <stddef.h>

typedef struct ds4_err {
    char msg[1024];
} ds4_err;

#if defined(__GNUC__)
#define DS4_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define DS4_PRINTF(a, b)
#endif

/* Format a message into e (if e is not NULL) and return -1, so callers can
 * write `return ds4_errf(e, "...", ...);`. */
int ds4_errf(ds4_err *e, const char *fmt, ...) DS4_PRINTF(2, 3);

/* Prefix an existing message with more context ("loading x: <old>"). */
int ds4_err_prefix(ds4_err *e, const char *fmt, ...) DS4_PRINTF(2, 3);

#endif
