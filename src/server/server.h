/* ds4-server — the server process: configuration, shared state, and the
 * pieces that connect HTTP (http.c), the inference worker (worker.c,
 * prefix.c), tracing (trace.c) and the disk KV cache (kvdisk.c).
 *
 * Threads (INTERFACES.md §6.1): libmicrohttpd runs one thread per
 * connection; that thread reads and parses the request (JSON, rendering,
 * tokenization) and queues a job.  One worker thread owns the engine and
 * its live session and runs jobs strictly one at a time, in arrival order. */
#ifndef DS4_SERVER_SERVER_H
#define DS4_SERVER_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "engine/engine.h"
#include "server/canon.h"
#include "server/job.h"
#include "server/kvdisk.h"
#include "server/request.h"
#include "server/toolmem.h"

#define SRV_MODEL_ID "deepseek-v4-flash"

/* ------------------------------------------------------------ configuration */

typedef struct srv_config {
    const char *model_path;
    const char *host;
    int port;
    const char *api_key;            /* NULL: no authentication */
    bool cors;
    size_t max_body;                /* request body limit in bytes */
    int ctx;
    int default_tokens;             /* -n */
    int threads;
    ds4_backend_kind backend;
    int prefill_chunk;              /* 0: default */
    ds4_kv_type kv_type;            /* --kv-type; DS4_KV_DEFAULT: the session's default */
    int queue_max;                  /* waiting jobs beyond the running one */
    const char *trace_path;
    /* disk KV cache (§7.6) */
    const char *kv_dir;
    long kv_space_mb;
    int kv_min, kv_cold_max, kv_continued, kv_trim, kv_align; /* kv_align < 0: the prefill chunk */
    bool kv_reject_quant;
    /* tool memory (§6.11) */
    bool tool_replay;
    int tool_memory_max_ids;
    /* test only */
    const char *scripted_output;
    /* --dump-prompt */
    const char *dump_prompt;
    srv_api dump_api;
} srv_config;

void srv_config_default(srv_config *c);
/* Parse argv; 0 ok, 1 --help printed, -1 error (message printed). */
int srv_config_parse(srv_config *c, int argc, char **argv);

/* ------------------------------------------------------------ logging */

void srv_log(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

/* ------------------------------------------------------------ trace */

typedef struct srv_trace srv_trace;
srv_trace *srv_trace_open(const char *path, ds4_err *err);
void srv_trace_close(srv_trace *t);
void srv_trace_printf(srv_trace *t, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
void srv_trace_write(srv_trace *t, const char *s, size_t n);
/* Text with control bytes escaped (\n, \t, \xNN), for one-line fields. */
void srv_trace_escaped(srv_trace *t, const char *s, size_t n);

/* ------------------------------------------------------------ scripted output (tests only) */

typedef struct srv_script srv_script;
srv_script *srv_script_load(const char *path, const ds4_tokenizer *tok, ds4_err *err);
void srv_script_free(srv_script *s);
/* The token sequence to emit for this rendered prompt (the rule whose
 * trigger occurs latest in the prompt, else the default); NULL if none. */
const ds4_tokvec *srv_script_pick(const srv_script *s, const char *prompt, size_t n);

/* ------------------------------------------------------------ server state */

/* A remembered "visible transcript" of the live session (§6.12.1, §6.12.3):
 * the text a client will replay for the state the live KV holds. */
typedef struct srv_visible {
    bool valid;
    int frontier;                   /* live token count it belongs to */
    srv_api api;
    ds4_textbuf text;
} srv_visible;

typedef struct srv_stats {
    uint64_t requests, completed, rejected_busy, errors;
    /* the last request that ran */
    int last_prompt_tokens, last_cached_tokens, last_evaluated, last_generated;
    char last_source[32];
    char last_disk_file[64];
    int disk_hits, disk_stores;
    int canon_extended, canon_rebuilt, canon_skipped; /* tool checkpoint canonicalization (§6.12.4) */
} srv_stats;

typedef struct srv_server {
    srv_config cfg;
    ds4_engine *eng;
    const ds4_tokenizer *tok;
    srv_tool_memory *toolmem;
    ds4_kvdisk *kv;
    srv_trace *trace;
    srv_script *script;
    int ctx;

    /* queue */
    pthread_mutex_t qmu;
    pthread_cond_t qcv;
    srv_job **queue;
    int qhead, qlen, qcap;
    srv_job *current;
    bool stopping;
    atomic_bool shutdown;           /* generation must end (read without the lock) */
    atomic_int open_streams;        /* SSE replies not yet fully sent (shutdown drains them) */
    pthread_t worker;
    bool worker_started;
    atomic_uint_fast64_t seq;

    /* live bindings (worker writes; parse threads read ids under bind_mu) */
    pthread_mutex_t bind_mu;
    srv_visible visible;
    char **live_ids;                /* call ids of the live session's last tool turn */
    int n_live_ids;
    int live_ids_frontier;
    srv_api live_ids_api;
    ds4_kvdisk_sched sched;

    pthread_mutex_t stats_mu;
    srv_stats stats;

    struct MHD_Daemon *mhd;
} srv_server;

/* worker.c */
int srv_worker_start(srv_server *S);
/* Queue a job; -1 when the queue is full (429) or the server stops (503). */
int srv_worker_submit(srv_server *S, srv_job *j, bool *stopping);
/* Stop: cancel the running job, refuse queued ones, join the worker. */
void srv_worker_stop(srv_server *S);
/* Is id one of the live session's last tool-call ids? (parse callback) */
bool srv_worker_live_id(void *S, const char *id);
/* Preload disk tool maps for the request's ids (parse callback). */
void srv_worker_shutdown_save(srv_server *S);
void srv_stats_json(srv_server *S, ds4_textbuf *out);

/* prefix.c: the starting state of a job (§6.12) and the disk-cache saves. */
typedef struct srv_prefix {
    ds4_tokvec tokens;              /* effective prompt */
    const char *source;             /* cache_source (§14.5) */
    int reused;                     /* tokens kept from the live session or disk */
    int disk_tokens;
    char disk_file[64];
    const char *miss_reason;
    int live_before;
    int common;                     /* live/prompt common token prefix */
    int status;                     /* != 0: reply with this error (409) */
    char error[256];
} srv_prefix;

int srv_prefix_choose(srv_server *S, srv_job *j, srv_prefix *p);
void srv_prefix_free(srv_prefix *p);
/* Store the live session (reason evict/shutdown/continued/cold). */
void srv_kv_store(srv_server *S, ds4_kvdisk_reason reason, bool use_visible);
/* Load tool-map entries for the ids of the request's assistant calls. */
void srv_kv_preload_tools(srv_server *S, const ds4_chat *chat);
/* The disk-text lookup of §7.7 for text[0..len): load the longest checkpoint
 * whose cached text is a byte prefix of it into the live session (logged,
 * counted, its tool map remembered, the continued schedule resumed) and set
 * out = its tokens + tokenize(the text after it).  1 loaded, 0 none (the live
 * session may then have been reset by a checkpoint that failed to load), -1
 * out of memory.  file (file_size bytes, may be NULL) gets the file name. */
int srv_kv_restore(srv_server *S, const char *text, size_t len, ds4_tokvec *out, char *file, size_t file_size);
/* out = live[0..n) + tokenize(rest[0..rn)) with special tokens: a byte prefix
 * continued by its suffix tokenized on its own (the §6.12 invariant). 0 or -1. */
int srv_tokens_extend(srv_server *S, const int32_t *live, int n, const char *rest, size_t rn, ds4_tokvec *out);

/* canon.c: after a chat/Anthropic tool turn whose exact DSML will not be
 * replayed, and before its final events, bring the live session to the
 * canonical transcript (§6.12.4; canon.h).  Appends the reply to rq->chat
 * (out->reply).  progress runs during any evaluation (keepalives, cancel,
 * continued checkpoints); a rebuild first calls it with done = 0.  0, or -1
 * when out of memory (the live session then untouched unless out->lost). */
int srv_canon_tool_turn(srv_server *S, srv_request *rq, const ds4_dsml_result *r, int prompt_tokens,
                        ds4_progress_fn progress, void *ud, srv_canon_result *out);

/* http.c */
int srv_http_start(srv_server *S);
void srv_http_quiesce(srv_server *S);
void srv_http_stop(srv_server *S);

/* server.c */
int srv_main(int argc, char **argv);

#endif
