/* ds4 — a monotonic clock in seconds, for progress lines and timings in
 * every layer (the engine's generation speed, ds4-synth's progress, the CUDA
 * backend's start-up line). */
#ifndef DS4_UTIL_CLOCK_H
#define DS4_UTIL_CLOCK_H

#include <time.h>

static inline double ds4_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

#endif
