/* ds4-server — command line (INTERFACES.md §6.16), startup, shutdown, and
 * --dump-prompt. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf/gguf.h"
#include "server/server.h"

/* ============================================================ flags */

void srv_config_default(srv_config *c) {
    memset(c, 0, sizeof(*c));
    c->model_path = "ds4flash.gguf";
    c->host = "127.0.0.1";
    c->port = 8000;
    c->max_body = (size_t)64 << 20;
    c->ctx = 32768;
    c->default_tokens = 393216;
    c->backend = DS4_BACKEND_AUTO;
    c->queue_max = 16;
    c->kv_space_mb = 4096;
    c->kv_min = 512;
    c->kv_cold_max = 30000;
    c->kv_continued = 10000;
    c->kv_trim = 32;
    c->kv_align = -1;
    c->tool_replay = true;
    c->tool_memory_max_ids = 100000;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: ds4-server [options]\n"
            "  -m, --model FILE            model GGUF (default ./ds4flash.gguf)\n"
            "  -c, --ctx N                 context tokens (default 32768)\n"
            "  -n, --tokens N              default max output tokens (default 393216)\n"
            "  -t, --threads N             CPU threads (default: all cores)\n"
            "  --cpu | --cuda              backend (default: CUDA when built in and a GPU is present)\n"
            "  --prefill-chunk N           prefill chunk (default $DS4_PREFILL_CHUNK, else 4096 on a GPU with room, else 2048)\n"
            "  --kv-type T                 KV cache storage: f16 (default), bf16, fp8 (half the bytes, exact for the FP8/FP4-simulated rows) or f32 (oracle mode's default)\n"
            "  --host HOST                 bind address, IPv4 (default 127.0.0.1)\n"
            "  --port N                    port (default 8000)\n"
            "  --api-key KEY               require 'Authorization: Bearer KEY' or 'x-api-key: KEY' (not on /health)\n"
            "  --cors                      add CORS headers\n"
            "  --max-body-mb N             request body limit (default 64)\n"
            "  --queue-max N               waiting requests before 429 (default 16)\n"
            "  --trace FILE                append a session trace\n"
            "  --kv-disk-dir DIR           enable the disk KV cache\n"
            "  --kv-disk-space-mb N        disk budget (default 4096)\n"
            "  --kv-cache-min-tokens N     (default 512)\n"
            "  --kv-cache-cold-max-tokens N (default 30000; 0 disables cold saves)\n"
            "  --kv-cache-continued-interval-tokens N (default 10000; 0 disables)\n"
            "  --kv-cache-boundary-trim-tokens N (default 32)\n"
            "  --kv-cache-boundary-align-tokens N (default: the session's prefill chunk)\n"
            "  --kv-cache-reject-different-quant\n"
            "  --disable-exact-dsml-tool-replay\n"
            "                              render past tool calls canonically; each chat/Anthropic tool\n"
            "                              turn then makes its canonical transcript the live state\n"
            "  --tool-memory-max-ids N     (default 100000)\n"
            "  --dump-prompt REQUEST.json --api chat|completions|responses|messages\n"
            "                              print the rendered prompt of a request body and exit\n"
            "  --test-only-scripted-output FILE   TESTS ONLY: replace sampling by scripted text\n"
            "  -h, --help\n");
}

static int parse_int(const char *flag, const char *v, long lo, long hi, long *out) {
    char *end = NULL;
    errno = 0;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || !*v || *end || errno || x < lo || x > hi) {
        fprintf(stderr, "ds4-server: %s needs an integer in [%ld, %ld], got '%s'\n", flag, lo, hi, v ? v : "");
        return -1;
    }
    *out = x;
    return 0;
}

int srv_config_parse(srv_config *c, int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long x = 0;
#define FLAG(s) (strcmp(a, s) == 0)
#define INTARG(lo, hi, dst)                                                      \
    do {                                                                         \
        if (parse_int(a, v, lo, hi, &x)) return -1;                              \
        dst = x;                                                                 \
        i++;                                                                     \
    } while (0)
#define STRARG(dst)                                                              \
    do {                                                                         \
        if (!v) {                                                                \
            fprintf(stderr, "ds4-server: %s needs a value\n", a);                \
            return -1;                                                           \
        }                                                                        \
        dst = v;                                                                 \
        i++;                                                                     \
    } while (0)
        if (FLAG("-h") || FLAG("--help")) {
            usage(stdout);
            return 1;
        } else if (FLAG("-m") || FLAG("--model")) STRARG(c->model_path);
        else if (FLAG("-c") || FLAG("--ctx")) INTARG(1, INT_MAX, c->ctx);
        else if (FLAG("-n") || FLAG("--tokens")) INTARG(0, INT_MAX, c->default_tokens);
        else if (FLAG("-t") || FLAG("--threads")) INTARG(0, 4096, c->threads);
        else if (FLAG("--cpu")) c->backend = DS4_BACKEND_CPU;
        else if (FLAG("--cuda")) c->backend = DS4_BACKEND_CUDA;
        else if (FLAG("--prefill-chunk")) INTARG(0, 1 << 20, c->prefill_chunk);
        else if (FLAG("--kv-type")) {
            if (!v || ds4_kv_type_parse(v, &c->kv_type) != 0) {
                fprintf(stderr, "ds4-server: --kv-type needs f16, bf16, fp8 or f32, got '%s'\n", v ? v : "");
                return -1;
            }
            i++;
        } else if (FLAG("--host")) STRARG(c->host);
        else if (FLAG("--port")) INTARG(0, 65535, c->port);
        else if (FLAG("--api-key")) STRARG(c->api_key);
        else if (FLAG("--cors")) c->cors = true;
        else if (FLAG("--max-body-mb")) {
            INTARG(1, 4096, x);
            c->max_body = (size_t)x << 20;
        } else if (FLAG("--queue-max")) INTARG(0, 100000, c->queue_max);
        else if (FLAG("--trace")) STRARG(c->trace_path);
        else if (FLAG("--kv-disk-dir")) STRARG(c->kv_dir);
        else if (FLAG("--kv-disk-space-mb")) INTARG(1, 1L << 30, c->kv_space_mb);
        else if (FLAG("--kv-cache-min-tokens")) INTARG(1, INT_MAX, c->kv_min);
        else if (FLAG("--kv-cache-cold-max-tokens")) INTARG(0, INT_MAX, c->kv_cold_max);
        else if (FLAG("--kv-cache-continued-interval-tokens")) INTARG(0, INT_MAX, c->kv_continued);
        else if (FLAG("--kv-cache-boundary-trim-tokens")) INTARG(0, INT_MAX, c->kv_trim);
        else if (FLAG("--kv-cache-boundary-align-tokens")) INTARG(0, INT_MAX, c->kv_align);
        else if (FLAG("--kv-cache-reject-different-quant")) c->kv_reject_quant = true;
        else if (FLAG("--disable-exact-dsml-tool-replay")) c->tool_replay = false;
        else if (FLAG("--tool-memory-max-ids")) INTARG(1, 100000000, c->tool_memory_max_ids);
        else if (FLAG("--test-only-scripted-output")) STRARG(c->scripted_output);
        else if (FLAG("--dump-prompt")) STRARG(c->dump_prompt);
        else if (FLAG("--api")) {
            if (!v || srv_api_parse(v, &c->dump_api) != 0) {
                fprintf(stderr, "ds4-server: --api needs chat, completions, responses or messages\n");
                return -1;
            }
            i++;
        } else {
            fprintf(stderr, "ds4-server: unknown option '%s' (see --help)\n", a);
            return -1;
        }
#undef FLAG
#undef INTARG
#undef STRARG
    }
    if (c->kv_cold_max != 0 && c->kv_cold_max < c->kv_min) {
        fprintf(stderr, "ds4-server: --kv-cache-cold-max-tokens must be 0 or >= --kv-cache-min-tokens\n");
        return -1;
    }
    return 0;
}

/* ============================================================ --dump-prompt */

static int dump_prompt(const srv_config *c) {
    FILE *f = fopen(c->dump_prompt, "rb");
    if (!f) {
        fprintf(stderr, "ds4-server: cannot read '%s': %s\n", c->dump_prompt, strerror(errno));
        return 1;
    }
    ds4_textbuf body;
    ds4_textbuf_init(&body);
    char buf[65536];
    size_t k;
    while ((k = fread(buf, 1, sizeof(buf), f)) > 0) ds4_textbuf_append(&body, buf, k);
    fclose(f);
    /* the vocabulary only (no weights): the same tokenizer the server uses,
     * so the context check applies exactly as it would */
    ds4_err err = {{0}};
    ds4_tokenizer *tok = NULL;
    gguf_file *g = gguf_open(c->model_path, &err);
    if (g) {
        tok = ds4_tokenizer_from_gguf(g, &err);
        gguf_close(g);
    }
    if (!tok) fprintf(stderr, "ds4-server: %s: %s (rendering without the context check)\n", c->model_path, err.msg);
    srv_parse_ctx pc = {.ctx = c->ctx, .tok = tok};
    srv_request r;
    srv_request_init(&r);
    srv_error e;
    memset(&e, 0, sizeof(e));
    int rc = 0;
    if (srv_request_parse(c->dump_api, body.p ? body.p : "", body.n, &pc, &r, &e) != 0) {
        fprintf(stderr, "ds4-server: %d %s\n", e.status, e.msg);
        rc = 1;
    } else {
        fwrite(r.prompt.p ? r.prompt.p : "", 1, r.prompt.n, stdout);
        fflush(stdout);
    }
    srv_request_free(&r);
    ds4_textbuf_free(&body);
    ds4_tokenizer_free(tok);
    return rc;
}

/* ============================================================ startup */

static void kv_log(void *ud, const char *line) {
    (void)ud;
    srv_log("%s", line);
}

static int open_kv(srv_server *S) {
    const srv_config *c = &S->cfg;
    ds4_kvdisk_opts o;
    ds4_kvdisk_opts_default(&o, S->eng->sess);
    o.budget_bytes = (uint64_t)c->kv_space_mb << 20;
    o.min_tokens = c->kv_min;
    o.cold_max_tokens = c->kv_cold_max;
    o.continued_interval_tokens = c->kv_continued;
    o.boundary_trim_tokens = c->kv_trim;
    if (c->kv_align >= 0) o.boundary_align_tokens = c->kv_align;
    o.reject_different_quant = c->kv_reject_quant;
    o.tool_max_ids = c->tool_memory_max_ids;
    o.log = kv_log;
    ds4_err err = {{0}};
    S->kv = ds4_kvdisk_open(c->kv_dir, &o, &err);
    if (!S->kv) {
        srv_log("ds4-server: KV disk cache %s: %s", c->kv_dir, err.msg);
        return -1;
    }
    srv_log("ds4-server: KV disk cache %s (budget=%ld MiB, cross-quant=%s, min=%d, cold_max=%d, continued=%d, trim=%d, "
            "align=%d, hit_half_life=%ds)",
            c->kv_dir, c->kv_space_mb, o.reject_different_quant ? "reject" : "accept", o.min_tokens, o.cold_max_tokens,
            o.continued_interval_tokens, o.boundary_trim_tokens, o.boundary_align_tokens, DS4_KVDISK_HALF_LIFE_S);
    return 0;
}

static srv_server G; /* one server per process */

static void exit_now(int sig) {
    (void)sig;
    _exit(130);
}

int srv_main(int argc, char **argv) {
    srv_server *S = &G;
    srv_config_default(&S->cfg);
    const int pr = srv_config_parse(&S->cfg, argc, argv);
    if (pr) return pr > 0 ? 0 : 2;
    if (S->cfg.dump_prompt) return dump_prompt(&S->cfg);

    signal(SIGPIPE, SIG_IGN);
    /* SIGINT/SIGTERM are taken by sigwait below: block them before any
     * thread starts so every thread inherits the mask */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    pthread_mutex_init(&S->qmu, NULL);
    pthread_cond_init(&S->qcv, NULL);
    pthread_mutex_init(&S->bind_mu, NULL);
    pthread_mutex_init(&S->stats_mu, NULL);
    int rc = 1;
    ds4_err err = {{0}};
    if (S->cfg.trace_path && !(S->trace = srv_trace_open(S->cfg.trace_path, &err))) {
        srv_log("ds4-server: %s", err.msg);
        return 1;
    }
    ds4_session_opts so;
    ds4_session_opts_default(&so);
    so.ctx = S->cfg.ctx;
    so.prefill_chunk = S->cfg.prefill_chunk;
    so.backend = S->cfg.backend;
    so.n_threads = S->cfg.threads;
    so.kv_type = S->cfg.kv_type;
    const double t0 = ds4_now();
    S->eng = ds4_engine_open(S->cfg.model_path, &so, &err);
    if (!S->eng) {
        srv_log("ds4-server: %s", err.msg);
        goto out;
    }
    S->tok = S->eng->tok;
    S->ctx = ds4_session_ctx(S->eng->sess);
    {
        const ds4_session *ss = S->eng->sess;
        srv_log("ds4-server: model %s loaded in %.1f s", S->cfg.model_path, ds4_now() - t0);
        srv_log("ds4-server: context buffers %.1f MiB (ctx=%d, backend=%s, prefill_chunk=%d, kv=%s, raw_kv_rows=%d, "
                "compressed_kv_rows=%d)",
                (double)ss->ops->memory_bytes(ss) / (1024.0 * 1024.0), S->ctx, ds4_session_backend_name(ss),
                ds4_session_chunk(ss), ds4_kv_type_name(ss->kv_type), ss->state->raw_cap, ss->state->comp_cap_max);
    }
    if (!(S->toolmem = srv_toolmem_new(S->cfg.tool_memory_max_ids))) goto out;
    if (S->cfg.kv_dir && open_kv(S) != 0) goto out;
    if (S->cfg.scripted_output) {
        S->script = srv_script_load(S->cfg.scripted_output, S->tok, &err);
        if (!S->script) {
            srv_log("ds4-server: %s", err.msg);
            goto out;
        }
        for (int i = 0; i < 3; i++)
            srv_log("ds4-server: WARNING: --test-only-scripted-output is on: replies are SCRIPTED from %s, "
                    "not sampled from the model. This is for tests only.",
                    S->cfg.scripted_output);
    }
    if (srv_worker_start(S) != 0) goto out;
    if (srv_http_start(S) != 0) {
        srv_worker_stop(S);
        goto out;
    }

    int sig = 0;
    sigwait(&sigs, &sig);
    srv_log("ds4-server: %s received, shutting down (send it again to exit at once)", sig == SIGINT ? "SIGINT" : "SIGTERM");
    /* a second signal ends the process at once */
    {
        struct sigaction now;
        memset(&now, 0, sizeof(now));
        now.sa_handler = exit_now;
        sigaction(SIGINT, &now, NULL);
        sigaction(SIGTERM, &now, NULL);
        pthread_sigmask(SIG_UNBLOCK, &sigs, NULL);
    }
    srv_http_quiesce(S); /* stop accepting */
    srv_worker_stop(S);
    srv_worker_shutdown_save(S);
    srv_http_stop(S);
    srv_log("ds4-server: bye");
    rc = 0;
out:
    srv_script_free(S->script);
    if (S->kv) ds4_kvdisk_close(S->kv);
    srv_toolmem_free(S->toolmem);
    if (S->eng) ds4_engine_close(S->eng);
    srv_trace_close(S->trace);
    free(S->queue);
    return rc;
}
