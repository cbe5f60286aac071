/* ds4 — kernel timeline of any CUDA run, for finding a decode step's
 * critical path (ncu serializes kernels and nsys is not on the GPU machine).
 * A CUPTI injection library: the driver loads it when CUDA_INJECTION64_PATH
 * names it, and it writes one line per kernel (start ns, end ns, stream,
 * graph node, name) to $DS4_TRACE_OUT (default trace.csv). Graph replays are
 * traced node by node, with their real overlap and gaps. Copies are lines
 * named "memcpy:<bytes>", and the host's CUDA runtime calls lines named
 * "api:<function>" on stream 0 (what the host does between decode steps).
 *   sh scripts/cupti-trace.sh  (builds it with the toolkit's CUPTI, on the GPU machine) */
#include <cupti.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef KREC
#error "KREC: the newest CUpti_ActivityKernelN of this CUPTI (scripts/cupti-trace.sh finds it)"
#endif
#ifndef MREC
#error "MREC: the newest CUpti_ActivityMemcpyN of this CUPTI (scripts/cupti-trace.sh finds it)"
#endif

#define TRACE_BUF (16u << 20)
static FILE *g_out;

static void CUPTIAPI buffer_requested(uint8_t **buffer, size_t *size, size_t *max_records) {
    *buffer = (uint8_t *)aligned_alloc(8, TRACE_BUF);
    *size = *buffer ? TRACE_BUF : 0;
    *max_records = 0;
}

static void CUPTIAPI buffer_completed(CUcontext ctx, uint32_t stream, uint8_t *buffer, size_t size, size_t valid) {
    (void)ctx, (void)stream, (void)size;
    CUpti_Activity *rec = NULL;
    while (cuptiActivityGetNextRecord(buffer, valid, &rec) == CUPTI_SUCCESS) {
        if (rec->kind == CUPTI_ACTIVITY_KIND_MEMCPY) {
            const MREC *m = (const MREC *)rec;
            fprintf(g_out, "%llu,%llu,%u,%llu,memcpy:%llu\n", (unsigned long long)m->start,
                    (unsigned long long)m->end, (unsigned)m->streamId, (unsigned long long)m->graphNodeId,
                    (unsigned long long)m->bytes);
            continue;
        }
        if (rec->kind == CUPTI_ACTIVITY_KIND_RUNTIME) {
            const CUpti_ActivityAPI *a = (const CUpti_ActivityAPI *)rec;
            const char *name = NULL;
            if (cuptiGetCallbackName(CUPTI_CB_DOMAIN_RUNTIME_API, a->cbid, &name) != CUPTI_SUCCESS) name = NULL;
            fprintf(g_out, "%llu,%llu,0,0,api:%s\n", (unsigned long long)a->start, (unsigned long long)a->end,
                    name ? name : "?");
            continue;
        }
        if (rec->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL && rec->kind != CUPTI_ACTIVITY_KIND_KERNEL) continue;
        const KREC *k = (const KREC *)rec;
        fprintf(g_out, "%llu,%llu,%u,%llu,%s\n", (unsigned long long)k->start, (unsigned long long)k->end,
                (unsigned)k->streamId, (unsigned long long)k->graphNodeId, k->name ? k->name : "?");
    }
    size_t dropped = 0;
    if (cuptiActivityGetNumDroppedRecords(NULL, 0, &dropped) == CUPTI_SUCCESS && dropped)
        fprintf(stderr, "cupti-trace: %zu records dropped\n", dropped);
    free(buffer);
}

static void flush_at_exit(void) {
    cuptiActivityFlushAll(1);
    if (g_out) fclose(g_out);
}

int InitializeInjection(void) {
    const char *path = getenv("DS4_TRACE_OUT");
    g_out = fopen(path ? path : "trace.csv", "w");
    if (!g_out) return 0;
    if (cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed) != CUPTI_SUCCESS ||
        cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) != CUPTI_SUCCESS ||
        cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMCPY) != CUPTI_SUCCESS ||
        cuptiActivityEnable(CUPTI_ACTIVITY_KIND_RUNTIME) != CUPTI_SUCCESS) {
        fprintf(stderr, "cupti-trace: CUPTI refused the activity trace\n");
        return 0;
    }
    atexit(flush_at_exit);
    return 1;
}
