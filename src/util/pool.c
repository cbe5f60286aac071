#include "util/pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

struct ds4_pool {
    int n_threads; /* including the caller */
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    pthread_cond_t done;
    uint64_t generation; /* bumped per job; workers run each generation once */
    int running;         /* workers still inside the current job */
    int quit;
    /* current job */
    ds4_range_fn fn;
    void *ctx;
    int64_t n;
    int64_t grain;
    atomic_llong next;
};

typedef struct {
    ds4_pool *pool;
    int index;
} worker_arg;

static void run_ranges(ds4_pool *p, int thread_index) {
    for (;;) {
        const int64_t begin = (int64_t)atomic_fetch_add(&p->next, p->grain);
        if (begin >= p->n) break;
        int64_t end = begin + p->grain;
        if (end > p->n) end = p->n;
        p->fn(p->ctx, begin, end, thread_index);
    }
}

static void *worker_main(void *arg) {
    worker_arg *wa = arg;
    ds4_pool *p = wa->pool;
    const int index = wa->index;
    free(wa);
    uint64_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->quit && p->generation == seen) pthread_cond_wait(&p->wake, &p->mu);
        if (p->quit) break;
        seen = p->generation;
        pthread_mutex_unlock(&p->mu);
        run_ranges(p, index);
        pthread_mutex_lock(&p->mu);
        if (--p->running == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int ds4_cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}

ds4_pool *ds4_pool_create(int n_threads) {
    if (n_threads <= 0) n_threads = ds4_cpu_count();
    ds4_pool *p = calloc(1, sizeof(*p));
    if (!p) return NULL;
    p->n_threads = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    atomic_init(&p->next, 0);
    if (n_threads > 1) {
        p->threads = calloc((size_t)n_threads - 1, sizeof(pthread_t));
        if (!p->threads) {
            free(p);
            return NULL;
        }
        for (int i = 1; i < n_threads; i++) {
            worker_arg *wa = malloc(sizeof(*wa));
            if (!wa) goto fail;
            wa->pool = p;
            wa->index = i;
            if (pthread_create(&p->threads[i - 1], NULL, worker_main, wa) != 0) {
                free(wa);
                goto fail;
            }
            continue;
        fail:
            p->n_threads = i; /* destroy joins the ones that exist */
            ds4_pool_destroy(p);
            return NULL;
        }
    }
    return p;
}

void ds4_pool_destroy(ds4_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->quit = 1;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n_threads; i++) pthread_join(p->threads[i - 1], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    free(p->threads);
    free(p);
}

int ds4_pool_threads(const ds4_pool *p) { return p ? p->n_threads : 1; }

void ds4_pool_for(ds4_pool *p, int64_t n, int64_t grain, ds4_range_fn fn, void *ctx) {
    if (n <= 0) return;
    const int nt = p ? p->n_threads : 1;
    if (grain <= 0) {
        grain = n / ((int64_t)nt * 4);
        if (grain < 1) grain = 1;
    }
    if (!p || nt == 1 || n <= grain) {
        for (int64_t b = 0; b < n; b += grain) fn(ctx, b, b + grain < n ? b + grain : n, 0);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    p->grain = grain;
    atomic_store(&p->next, 0);
    p->running = nt - 1;
    p->generation++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    run_ranges(p, 0);
    pthread_mutex_lock(&p->mu);
    while (p->running > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
