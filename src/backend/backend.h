/* ds4 — sessions and the backend interface.
 *
 * A session is one sequence being evaluated: the KV state (ds4_state) plus a
 * backend that computes the forward pass on it. The driver here owns what is
 * the same for every backend: context checks, the prefill chunk schedule
 * (boundaries at absolute multiples of the chunk, so a cold prefill and a
 * resume from a checkpoint take the same steps), progress and cancellation,
 * snapshots in the common payload format (INTERFACES.md §7.4).
 *
 * A backend only implements "evaluate these n <= chunk tokens at the current
 * position" plus state transfer. Options that change numerics are explicit
 * per-session options, never globals. */
#ifndef DS4_BACKEND_BACKEND_H
#define DS4_BACKEND_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/kv_format.h"
#include "model/model.h"
#include "model/state.h"
#include "util/err.h"

typedef enum ds4_backend_kind {
    DS4_BACKEND_AUTO = 0, /* CUDA when built in and a GPU is present, else CPU */
    DS4_BACKEND_CPU = 1,
    DS4_BACKEND_CUDA = 2,
} ds4_backend_kind;

/* Prefill chunk: --prefill-chunk, else $DS4_PREFILL_CHUNK, else the
 * backend's default for the device (CUDA: 4096 where GPU memory allows,
 * otherwise DS4_DEFAULT_PREFILL_CHUNK). Chunks above the safe maximum need
 * DS4_ALLOW_UNSAFE_PREFILL_CHUNK=1: their batch buffers grow without bound and
 * they were never validated against the oracle. */
#define DS4_DEFAULT_PREFILL_CHUNK 2048
#define DS4_MAX_SAFE_PREFILL_CHUNK 4096

/* Progress of a long evaluation: done/total tokens of this call. Return
 * non-zero to cancel; the session then stops at the next chunk boundary
 * (its state is valid and holds the tokens evaluated so far). */
typedef int (*ds4_progress_fn)(void *ud, int done, int total);

typedef struct ds4_session_opts {
    int ctx;             /* positions the session can hold (required, >= 1) */
    int prefill_chunk;   /* 0 = default ($DS4_PREFILL_CHUNK or the backend's; capped at ctx) */
    ds4_backend_kind backend;
    int n_threads;       /* CPU threads; 0 = one per core */
    /* Numerics. oracle = true switches off the FP8 KV and FP4 indexer
     * simulations and keeps caches in exact f32 (transformers' behaviour).
     * The two switches below override individual parts: -1 = follow
     * `oracle`, 0 = off, 1 = on. kv_type: how the cache stores its rows
     * (model/kv_format.h; DS4_KV_DEFAULT: f32 in oracle mode, else f16);
     * fp8 needs both simulations on. */
    bool oracle;
    int fp8_kv;
    int fp4_indexer;
    ds4_kv_type kv_type;
    ds4_progress_fn progress;
    void *progress_ud;
} ds4_session_opts;

/* Defaults: ctx must still be set by the caller. */
void ds4_session_opts_default(ds4_session_opts *o);

typedef struct ds4_session ds4_session;

typedef struct ds4_backend_ops {
    const char *name;
    int (*init)(ds4_session *s, ds4_err *err);
    void (*destroy)(ds4_session *s);
    /* Evaluate n tokens (1 <= n <= chunk) at positions state->n_tokens ...;
     * append them to the state, set state->logits to the last token's logits,
     * and write every token's logits to all_logits ([n][vocab]) when non-NULL. */
    int (*eval)(ds4_session *s, const int32_t *tokens, int n, float *all_logits, ds4_err *err);
    /* Bring the host-side ds4_state up to date (before save) / push it to the
     * backend (after load or reset). CPU: pull does nothing; push puts the
     * rows into the session's KV format (a snapshot of another type). */
    int (*pull_state)(ds4_session *s, ds4_err *err);
    int (*push_state)(ds4_session *s, ds4_err *err);
    /* Bytes the backend holds for this session beyond the weights. */
    size_t (*memory_bytes)(const ds4_session *s);
    /* Default prefill chunk for this device and context (NULL: 2048). */
    int (*default_chunk)(const ds4_model *m, int ctx);
    /* Optional (NULL: not offered): greedy decoding chained on the device,
     * see ds4_session_chain_begin. begin returns 1 when it cannot chain now
     * (nothing queued, state untouched). */
    int (*chain_begin)(ds4_session *s, int32_t token, int32_t exclude, int32_t stop_token, ds4_err *err);
    int (*chain_queue)(ds4_session *s, ds4_err *err);
    int (*chain_wait)(ds4_session *s, int32_t *picked, ds4_err *err);
    int (*chain_end)(ds4_session *s, ds4_err *err);
} ds4_backend_ops;

struct ds4_session {
    ds4_model *model;
    ds4_session_opts opts;
    bool fp8_kv, fp4_indexer;            /* resolved numerics */
    ds4_kv_type kv_type;                 /* resolved: never DS4_KV_DEFAULT */
    ds4_state *state;                    /* host copy / CPU working state */
    const ds4_backend_ops *ops;
    void *impl;                          /* backend private */
    int chain_queued;                    /* chained steps queued and not yet waited for */
    bool chain_on;                       /* between chain_begin and chain_end */
    bool chain_stopped;                  /* a wait returned the stop token: nothing more may be queued */
    int32_t chain_stop;                  /* this chain's stop token (-1: none) */
};

/* Create a session. Errors name the problem: ctx too small, chunk invalid,
 * unknown backend, CUDA not built in, out of memory. */
ds4_session *ds4_session_create(ds4_model *m, const ds4_session_opts *opts, ds4_err *err);
void ds4_session_free(ds4_session *s);

/* Append tokens and evaluate them in chunks aligned to absolute multiples of
 * the prefill chunk. all_logits ([n][vocab]) is optional. Fails (state
 * untouched) if the tokens do not fit in the context or an id is outside the
 * vocabulary; returns 1 if cancelled by the progress callback. */
int ds4_session_eval(ds4_session *s, const int32_t *tokens, int n, float *all_logits, ds4_err *err);

/* Evaluate tokens strictly one at a time (the decode path). */
int ds4_session_decode(ds4_session *s, int32_t token, ds4_err *err);

const float *ds4_session_logits(const ds4_session *s); /* NULL before the first token */
int ds4_session_n_tokens(const ds4_session *s);
const int32_t *ds4_session_tokens(const ds4_session *s);
int ds4_session_ctx(const ds4_session *s);
int ds4_session_chunk(const ds4_session *s);
const char *ds4_session_backend_name(const ds4_session *s);
void ds4_session_reset(ds4_session *s);
/* Replace the progress callback (per request, e.g. a server's keepalive/cancel). */
void ds4_session_set_progress(ds4_session *s, ds4_progress_fn fn, void *ud);

/* Greedy decoding chained on the device. A backend that offers it picks
 * each step's argmax where the logits are and feeds it to the next step
 * without a host round trip, so the host can queue step k+1 while step k
 * runs (CUDA: the next graph launch overlaps the running step).
 *
 *   begin(token, exclude, stop_token)  queue the evaluation of token; every
 *                     step then picks the argmax of its logits, never
 *                     `exclude` (-1: none), NaN never chosen, the first
 *                     index on ties (= ds4_sampler_argmax_except)
 *   queue()           queue the evaluation of the token the last queued step
 *                     picks (at most two steps queued at a time)
 *   wait(&picked)     wait for the oldest queued step: its token joins the
 *                     session; picked = the token its logits chose
 *   end()             wait for what is still queued; a step fed stop_token
 *                     (-1: none) leaves the session as it was and is
 *                     dropped, any other is kept. The session's logits are
 *                     then those of its last token (they are not kept up to
 *                     date in between).
 *
 * begin returns 1 (nothing queued) when the backend cannot chain: no such
 * ops, or not now (the caller then decodes and picks on the host). Every
 * queued step must fit the context; after a wait has returned the stop
 * token only end is accepted. In between, eval, decode, save, snapshot and
 * load fail; reset ends the chain first. */
int ds4_session_chain_begin(ds4_session *s, int32_t token, int32_t exclude, int32_t stop_token, ds4_err *err);
int ds4_session_chain_queue(ds4_session *s, ds4_err *err);
int ds4_session_chain_wait(ds4_session *s, int32_t *picked, ds4_err *err);
int ds4_session_chain_end(ds4_session *s, ds4_err *err);

/* Snapshot in the common payload format. */
size_t ds4_session_payload_size(ds4_session *s);
int ds4_session_save(ds4_session *s, uint8_t *buf, size_t cap, ds4_err *err);
/* Allocating convenience: *out is malloc'd, *len its size. */
int ds4_session_snapshot(ds4_session *s, uint8_t **out, size_t *len, ds4_err *err);
int ds4_session_load(ds4_session *s, const uint8_t *buf, size_t len, ds4_err *err);

/* Backends. */
extern const ds4_backend_ops ds4_cpu_backend;
const ds4_backend_ops *ds4_cuda_backend(void); /* NULL when not built with CUDA */
bool ds4_cuda_available(void);                 /* built in and a usable GPU present */
/* The rows of a CUDA session's rings of HCA attention inputs (its compressor
 * projections a window at a time, src/cuda/cuda_layers.inc); 0 when it
 * keeps none (not CUDA, the scheme off). Tests. */
int ds4_cuda_cmp_ring(const ds4_session *s);

#endif
