/* ds4 — persistent thread pool with a parallel-for.
 *
 * Workers are created once and sleep between jobs, so the per-token decode
 * path costs no thread creation. Work is handed out in fixed-size ranges
 * from an atomic counter; every item is computed entirely by one thread, so
 * results never depend on the number of threads or on scheduling (each
 * output element has one fixed reduction order). */
#ifndef DS4_UTIL_POOL_H
#define DS4_UTIL_POOL_H

#include <stdint.h>

typedef struct ds4_pool ds4_pool;

/* fn(ctx, begin, end, thread_index) processes items [begin, end). thread_index
 * is in [0, ds4_pool_threads(pool)) and lets callers use per-thread scratch. */
typedef void (*ds4_range_fn)(void *ctx, int64_t begin, int64_t end, int thread_index);

/* n_threads <= 0 means one per online CPU. Returns NULL only when out of memory
 * or threads cannot be created. */
ds4_pool *ds4_pool_create(int n_threads);
void ds4_pool_destroy(ds4_pool *pool);
int ds4_pool_threads(const ds4_pool *pool);

/* Run fn over [0, n) in ranges of `grain` items (grain <= 0: chosen from n and
 * the thread count). The calling thread takes part. Returns when all is done.
 * A NULL pool runs everything on the calling thread. Not reentrant: fn must
 * not call ds4_pool_for on the same pool. */
void ds4_pool_for(ds4_pool *pool, int64_t n, int64_t grain, ds4_range_fn fn, void *ctx);

/* Number of online CPUs (at least 1). */
int ds4_cpu_count(void);

#endif
