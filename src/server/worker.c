/* ds4-server — the inference worker: one thread that owns the engine and
 * runs queued jobs one at a time (INTERFACES.md §6.1), from the choice of
 * the starting state (prefix.c) through prefill with keepalives, generation
 * with stop strings and the streaming DSML parser, to the response, the
 * bindings for the next request (§6.11, §6.12) and the trace (§6.14). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/server.h"
#include "server/stopstr.h"
#include "server/stream.h"

/* ============================================================ queue */

int srv_worker_submit(srv_server *S, srv_job *j, bool *stopping) {
    pthread_mutex_lock(&S->qmu);
    *stopping = S->stopping;
    if (S->stopping || S->qlen >= S->cfg.queue_max) {
        pthread_mutex_unlock(&S->qmu);
        return -1;
    }
    if (S->qlen == S->qcap) {
        int cap = S->qcap ? S->qcap * 2 : 16;
        srv_job **q = malloc((size_t)cap * sizeof(*q));
        if (!q) {
            pthread_mutex_unlock(&S->qmu);
            return -1;
        }
        for (int i = 0; i < S->qlen; i++) q[i] = S->queue[(S->qhead + i) % S->qcap];
        free(S->queue);
        S->queue = q;
        S->qcap = cap;
        S->qhead = 0;
    }
    srv_job_ref(j); /* the worker's reference */
    S->queue[(S->qhead + S->qlen++) % S->qcap] = j;
    pthread_cond_signal(&S->qcv);
    pthread_mutex_unlock(&S->qmu);
    return 0;
}

bool srv_worker_live_id(void *ud, const char *id) {
    srv_server *S = ud;
    pthread_mutex_lock(&S->bind_mu);
    bool found = false;
    for (int i = 0; i < S->n_live_ids && !found; i++) found = strcmp(S->live_ids[i], id) == 0;
    pthread_mutex_unlock(&S->bind_mu);
    return found;
}

static void clear_live_ids(srv_server *S) {
    pthread_mutex_lock(&S->bind_mu);
    for (int i = 0; i < S->n_live_ids; i++) free(S->live_ids[i]);
    free(S->live_ids);
    S->live_ids = NULL;
    S->n_live_ids = 0;
    S->live_ids_frontier = -1;
    pthread_mutex_unlock(&S->bind_mu);
}

/* ============================================================ one job */

typedef struct gen {
    srv_server *S;
    srv_job *job;
    srv_request *rq;
    srv_stream st;
    ds4_dsml_stream *dsml;
    ds4_dsml_opts dsml_opts;
    srv_stopstr stops;
    ds4_textbuf generated;     /* everything generated (trace) */
    ds4_textbuf completion;    /* /v1/completions: the text up to a stop */
    bool block_end;
    bool stop_hit;
    const ds4_tokvec *script;  /* --test-only-scripted-output */
    size_t script_pos;
    int32_t eos;
    double t_keepalive;
    bool headers;
    int cold_boundary;
    int n_tokens;              /* generated so far (decode progress log) */
    double t_gen;
} gen;

static void on_dsml(void *ud, const ds4_dsml_event *ev) {
    gen *g = ud;
    srv_trace *tr = g->S->trace;
    if (ev->type == DS4_DSML_EV_BLOCK_END) g->block_end = true;
    if (tr && ev->type != DS4_DSML_EV_REASONING && ev->type != DS4_DSML_EV_TEXT && ev->type != DS4_DSML_EV_CALL_ARGS) {
        static const char *const names[] = {"reasoning", "reasoning_end", "text", "call_start",
                                            "call_args", "call_end", "block_end", "error"};
        srv_trace_printf(tr, "\n--- trace: %s", names[ev->type]);
        if (ev->index >= 0) srv_trace_printf(tr, " index=%d", ev->index);
        if (ev->name) srv_trace_printf(tr, " name=%s", ev->name);
        if (ev->id) srv_trace_printf(tr, " id=%s", ev->id);
        if (ev->message) srv_trace_printf(tr, " message=%s", ev->message);
        srv_trace_printf(tr, " ---\n");
    }
    srv_stream_event(&g->st, ev);
}

/* Text that can no longer be part of a stop string goes on to the parser
 * (or straight to the client for /v1/completions). */
static void release(gen *g, const char *s, size_t n) {
    if (!n) return;
    if (g->dsml) {
        ds4_dsml_stream_feed(g->dsml, s, n);
    } else {
        ds4_textbuf_append(&g->completion, s, n);
        ds4_dsml_event ev = {.type = DS4_DSML_EV_TEXT, .text = s, .len = n, .index = -1};
        srv_stream_event(&g->st, &ev);
    }
}

static int on_token(void *ud, int32_t id, const char *text, size_t len) {
    gen *g = ud;
    if (id == g->eos) return 0;
    if (id >= 0 && ++g->n_tokens % 50 == 0) {
        const double dt = ds4_now() - g->t_gen;
        srv_log("decode %d tokens (%.1f t/s)", g->n_tokens, dt > 0 ? g->n_tokens / dt : 0.0);
    }
    if (len) {
        ds4_textbuf_append(&g->generated, text, len);
        if (g->S->trace) srv_trace_write(g->S->trace, text, len);
        size_t out_n = 0;
        const char *out = srv_stopstr_feed(&g->stops, text, len, &out_n);
        release(g, out, out_n);
        if (g->stops.hit) g->stop_hit = true;
    }
    if (g->st.failed) srv_job_cancel(g->job);
    return g->stop_hit || g->block_end || srv_job_cancelled(g->job) || atomic_load(&g->S->shutdown);
}

static int32_t pick(void *ud, const float *logits, int n_vocab) {
    gen *g = ud;
    srv_server *S = g->S;
    /* continued checkpoints before each sampled token, except inside a DSML
     * block (§7.8) */
    if (S->kv && (!g->dsml || ds4_dsml_stream_state(g->dsml) == DS4_DSML_OUTSIDE)) {
        const int L = ds4_session_n_tokens(S->eng->sess);
        if (ds4_kvdisk_sched_due(ds4_kvdisk_options(S->kv), &S->sched, L) >= 0) {
            ds4_kvdisk_sched_mark(&S->sched, L);
            srv_kv_store(S, DS4_KVDISK_REASON_CONTINUED, false);
        }
    }
    if (!g->script) return -1;
    if (g->script_pos < g->script->n) return g->script->ids[g->script_pos++];
    return g->eos;
}

/* Prefill progress: SSE headers and keepalive comments for streams (§6.13),
 * cancellation, continued checkpoints between chunks (§7.8). */
static int on_progress(void *ud, int done, int total) {
    gen *g = ud;
    srv_server *S = g->S;
    if (srv_job_cancelled(g->job) || atomic_load(&S->shutdown)) return 1;
    if (g->rq->stream) {
        const double now = ds4_now();
        if (!g->headers) {
            g->headers = true;
            srv_job_stream_begin(g->job);
            g->t_keepalive = now;
            if (srv_sse_comment(g->job, "prefill")) return 1;
        } else if (now - g->t_keepalive >= 5.0) {
            g->t_keepalive = now;
            if (srv_sse_comment(g->job, "prefill")) return 1;
        }
    }
    if (S->kv && done < total) {
        const int L = ds4_session_n_tokens(S->eng->sess);
        if (ds4_kvdisk_sched_due(ds4_kvdisk_options(S->kv), &S->sched, L) >= 0) {
            ds4_kvdisk_sched_mark(&S->sched, L);
            srv_kv_store(S, DS4_KVDISK_REASON_CONTINUED, false);
        }
    }
    srv_log("prefill chunk %d/%d (%.0f%%)", done, total, total ? 100.0 * done / total : 100.0);
    return 0;
}

/* A tool checkpoint rebuild (§6.12.4) runs between the last tool-call
 * event and the finish events: its first call (done = 0) sends a keepalive
 * at once, later ones follow the prefill rule above. */
static int on_canon_progress(void *ud, int done, int total) {
    gen *g = ud;
    if (done == 0) g->t_keepalive = ds4_now() - 5.0;
    return on_progress(ud, done, total);
}

static int id_taken(void *ud, const char *id) { return srv_toolmem_has(ud, id); }

/* An error before anything was generated: an HTTP error, or an SSE error
 * event when the stream headers are out already (§6.9). */
static void fail_job(gen *g, int status, const char *msg) {
    srv_job *j = g->job;
    pthread_mutex_lock(&j->mu);
    const bool streaming = j->streaming;
    pthread_mutex_unlock(&j->mu);
    size_t n = 0;
    char *body;
    if (streaming) {
        body = srv_error_sse(g->rq->api, msg, &n);
        if (body) srv_job_write(j, body, n);
    } else {
        srv_error e = {.status = status};
        snprintf(e.msg, sizeof(e.msg), "%s", msg);
        body = srv_error_body(g->rq->api, &e, &n);
        if (body) srv_job_reply(j, status, body, n);
    }
    free(body);
}

static void trace_begin(srv_server *S, srv_job *j, const srv_prefix *p) {
    srv_trace *t = S->trace;
    if (!t) return;
    const srv_request *rq = &j->req;
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    char ts[64];
    strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S", &tm);
    srv_trace_printf(t, "===== request %llu %s =====\n", (unsigned long long)j->seq, ts);
    srv_trace_printf(t, "kind: %s\nmodel: %s\nstream: %d\ntools: %d\nthink_mode: %s\n", srv_api_name(rq->api), rq->model,
                     rq->stream, rq->chat.n_tools, rq->think == DS4_THINK_NONE ? "none" : rq->think == DS4_THINK_MAX ? "max" : "high");
    srv_trace_printf(t, "prompt_tokens: %zu\neffective_prompt_tokens: %zu\ncached_tokens: %d\nmax_tokens: %d\n",
                     rq->tokens.n, p->tokens.n, p->reused, rq->max_tokens);
    srv_trace_printf(t, "temperature: %g\ntop_k: %d\ntop_p: %g\nmin_p: %g\nseed: %llu\nstream_include_usage: %d\n",
                     (double)rq->sampling.temperature, rq->sampling.top_k, (double)rq->sampling.top_p,
                     (double)rq->sampling.min_p, (unsigned long long)rq->sampling.seed, rq->include_usage);
    srv_trace_printf(t, "--- cache decision ---\nlive_tokens_before: %d\nprompt_tokens: %zu\nlive_prompt_common: %d\n",
                     p->live_before, rq->tokens.n, p->common);
    srv_trace_printf(t, "memory_token_reusable: %d\nmemory_miss_reason: %s\n",
                     p->live_before > 0 && p->common == p->live_before, p->miss_reason);
    srv_trace_printf(t, "tool_replay: mem=%d disk=0 canonical=%d missing_ids=%d\n", rq->replay_mem, rq->replay_canonical,
                     rq->replay_missing);
    srv_trace_printf(t, "cache_source: %s\ncached_tokens: %d\ndisk_cached_tokens: %d\n", p->source, p->reused, p->disk_tokens);
    if (p->disk_file[0]) srv_trace_printf(t, "disk_cache_file: %s\n", p->disk_file);
    if (p->live_before > 0 && p->common < p->live_before) {
        /* a 17-token window around the first mismatch */
        const int32_t *live = ds4_session_tokens(S->eng->sess);
        const int lo = p->common > 8 ? p->common - 8 : 0;
        srv_trace_printf(t, "mismatch_window (pos %d):\n", p->common);
        for (int i = lo; i < p->common + 9; i++) {
            size_t la = 0, lb = 0;
            const char *ta = i < p->live_before ? ds4_token_text(S->tok, live[i], &la) : NULL;
            const char *tb = i < (int)rq->tokens.n ? ds4_token_text(S->tok, rq->tokens.ids[i], &lb) : NULL;
            srv_trace_printf(t, "  %6d live=%d '", i, i < p->live_before ? live[i] : -1);
            if (ta) srv_trace_escaped(t, ta, la);
            srv_trace_printf(t, "' prompt=%d '", i < (int)rq->tokens.n ? rq->tokens.ids[i] : -1);
            if (tb) srv_trace_escaped(t, tb, lb);
            srv_trace_printf(t, "'\n");
        }
    }
    srv_trace_printf(t, "--- raw request json ---\n");
    srv_trace_write(t, j->body ? j->body : "", j->body_len);
    srv_trace_printf(t, "\n--- rendered prompt ---\n");
    srv_trace_write(t, rq->prompt.p ? rq->prompt.p : "", rq->prompt.n);
    srv_trace_printf(t, "\n--- generated text ---\n");
}

static void trace_end(srv_server *S, srv_job *j, srv_finish f, int n_gen, double secs, const ds4_dsml_result *r,
                      const ds4_textbuf *completion) {
    srv_trace *t = S->trace;
    if (!t) return;
    srv_trace_printf(t, "\n--- parsed message ---\nfinish: %s\ngenerated_tokens: %d\nelapsed_sec: %.3f\n", srv_finish_name(f),
                     n_gen, secs);
    if (r) {
        srv_trace_printf(t, "reasoning: ");
        srv_trace_escaped(t, r->reasoning ? r->reasoning : "", r->reasoning_len);
        srv_trace_printf(t, "\ncontent: ");
        srv_trace_escaped(t, r->content ? r->content : "", r->content_len);
        srv_trace_printf(t, "\n");
        if (r->error[0]) srv_trace_printf(t, "dsml_error: %s\n", r->error);
        for (int i = 0; i < r->n_calls; i++) {
            srv_trace_printf(t, "tool_call: id=%s name=%s arguments=", r->calls[i].id ? r->calls[i].id : "",
                             r->calls[i].name);
            srv_trace_escaped(t, r->calls[i].arguments, r->calls[i].arguments_len);
            srv_trace_printf(t, "\n");
        }
    } else if (completion) {
        srv_trace_printf(t, "content: ");
        srv_trace_escaped(t, completion->p ? completion->p : "", completion->n);
        srv_trace_printf(t, "\n");
    }
    srv_trace_printf(t, "===== end request %llu =====\n", (unsigned long long)j->seq);
}

/* After a turn: remember what the next request will replay (§6.11, §6.12).
 * canon: what tool checkpoint canonicalization did to the live session. */
static void remember_turn(srv_server *S, gen *g, const ds4_dsml_result *r, srv_finish f, const srv_canon_result *canon) {
    srv_request *rq = g->rq;
    const int frontier = ds4_session_n_tokens(S->eng->sess);
    /* exact DSML replay memory */
    if (S->cfg.tool_replay && r && r->n_calls > 0 && r->raw_dsml) {
        const char *ids[64];
        int n = 0;
        for (int i = 0; i < r->n_calls && n < 64; i++)
            if (r->calls[i].id) ids[n++] = r->calls[i].id;
        srv_toolmem_put(S->toolmem, ids, n, r->raw_dsml, r->raw_dsml_len, false);
    }
    /* a rebuild that did not finish left another state live: nothing below describes it */
    if (canon->lost) return;
    /* the calls a tool-output-only continuation may answer */
    if (r && f == SRV_FINISH_TOOL_CALLS && (rq->api == SRV_API_RESPONSES || rq->api == SRV_API_MESSAGES)) {
        pthread_mutex_lock(&S->bind_mu);
        S->live_ids = calloc((size_t)r->n_calls, sizeof(char *));
        for (int i = 0; S->live_ids && i < r->n_calls; i++)
            if (r->calls[i].id) S->live_ids[S->n_live_ids++] = strdup(r->calls[i].id);
        S->live_ids_frontier = frontier;
        S->live_ids_api = rq->api;
        pthread_mutex_unlock(&S->bind_mu);
    }
    /* the visible transcript: the conversation with this reply appended,
     * as a later request renders it, without the closing EOS (so the next
     * request's suffix starts with it and the KV gets it, §13 item 1) */
    if (!r || g->stop_hit || (f != SRV_FINISH_STOP && f != SRV_FINISH_TOOL_CALLS) || r->status != DS4_DSML_OK) return;
    if (rq->api == SRV_API_RESPONSES ? false : rq->think != DS4_THINK_NONE && !r->reasoning_closed) return;
    ds4_textbuf_clear(&S->visible.text);
    if (canon->canonical) {
        /* the live session is the canonical transcript, its EOS included */
        if (ds4_textbuf_append(&S->visible.text, canon->text.p, canon->text.n)) return;
    } else {
        const bool keep_reasoning = rq->api == SRV_API_RESPONSES ? rq->summary && r->n_calls > 0 : true;
        ds4_chat_msg *m = canon->ran ? canon->reply : srv_chat_add_reply(&rq->chat, r, keep_reasoning);
        if (!m) return;
        if (r->n_calls && r->raw_dsml) ds4_chat_msg_set_raw_dsml(m, r->raw_dsml, r->raw_dsml_len);
        ds4_err err = {{0}};
        if (ds4_chat_render_history(&rq->chat, &S->visible.text, &err) != 0) return;
        const size_t el = strlen(DS4_CHAT_EOS);
        if (S->visible.text.n >= el && memcmp(S->visible.text.p + S->visible.text.n - el, DS4_CHAT_EOS, el) == 0)
            ds4_textbuf_truncate(&S->visible.text, S->visible.text.n - el);
    }
    S->visible.valid = true;
    S->visible.frontier = frontier;
    S->visible.api = rq->api;
}

static void run_job(srv_server *S, srv_job *j) {
    srv_request *rq = &j->req;
    ds4_engine *e = S->eng;
    gen g;
    memset(&g, 0, sizeof(g));
    g.S = S;
    g.job = j;
    g.rq = rq;
    g.eos = ds4_tokenizer_specials(S->tok)->eos;
    srv_stream_init(&g.st, j, j->seq);
    ds4_textbuf_init(&g.generated);
    ds4_textbuf_init(&g.completion);
    srv_stopstr_init(&g.stops, (const char *const *)rq->stops, rq->n_stops);
    srv_prefix p;
    memset(&p, 0, sizeof(p));
    ds4_dsml_result res;
    memset(&res, 0, sizeof(res));
    bool have_res = false;
    srv_canon_result canon;
    memset(&canon, 0, sizeof(canon));
    const double t0 = ds4_now();

    if (srv_job_cancelled(j)) goto out;
    if (srv_prefix_choose(S, j, &p) != 0) {
        fail_job(&g, 500, "out of memory");
        goto out;
    }
    trace_begin(S, j, &p);
    if (p.status) {
        fail_job(&g, p.status, p.error);
        goto out;
    }
    if ((long)p.tokens.n >= S->ctx) {
        char msg[256];
        snprintf(msg, sizeof(msg), "Prompt has %zu tokens, but the configured context size is %d tokens", p.tokens.n, S->ctx);
        fail_job(&g, 400, msg);
        goto out;
    }
    /* bindings belong to the previous owner of the live session */
    S->visible.valid = false;
    clear_live_ids(S);

    srv_log("%s ctx=%d..%zu:%zu%s%s prompt start (source=%s)", srv_api_name(rq->api), p.reused, p.tokens.n,
            p.tokens.n - (size_t)p.reused, rq->api == SRV_API_RESPONSES ? " responses" : "",
            rq->tools_active ? " tools" : "", p.source);

    /* ---- prefill (with the cold checkpoint split of §7.8) */
    ds4_session_set_progress(e->sess, on_progress, &g);
    ds4_err err = {{0}};
    ds4_sync_stats ss;
    memset(&ss, 0, sizeof(ss));
    int evaluated = 0;
    const double tp = ds4_now();
    if (S->kv && strcmp(p.source, "none") == 0) {
        const ds4_tok_specials *sp = ds4_tokenizer_specials(S->tok);
        const int b = ds4_kvdisk_cold_boundary(ds4_kvdisk_options(S->kv), p.tokens.ids, (int)p.tokens.n, sp->user,
                                               sp->assistant);
        if (b > 0) {
            const int prev = ds4_kvdisk_sched_cold_begin(&S->sched, b);
            int rc = 0;
            if (b < (int)p.tokens.n) {
                rc = ds4_engine_sync(e, p.tokens.ids, b, &ss, &err);
                evaluated += ss.evaluated;
            }
            if (rc == 0 && !ss.cancelled && b < (int)p.tokens.n) {
                const int before = S->stats.disk_stores;
                srv_kv_store(S, DS4_KVDISK_REASON_COLD, false);
                ds4_kvdisk_sched_cold_end(&S->sched, prev, S->stats.disk_stores != before);
            } else if (b < (int)p.tokens.n) {
                ds4_kvdisk_sched_cold_end(&S->sched, prev, false);
            } else {
                g.cold_boundary = b; /* store after the full prefill */
                ds4_kvdisk_sched_cold_end(&S->sched, prev, true);
            }
            if (rc != 0) goto prefill_failed;
        }
    }
    if (!ss.cancelled) {
        if (ds4_engine_sync(e, p.tokens.ids, (int)p.tokens.n, &ss, &err) != 0) goto prefill_failed;
        evaluated += ss.evaluated;
    }
    if (g.cold_boundary > 0 && !ss.cancelled) srv_kv_store(S, DS4_KVDISK_REASON_COLD, false);
    ds4_session_set_progress(e->sess, NULL, NULL);
    if (ss.cancelled || srv_job_cancelled(j) || atomic_load(&S->shutdown)) {
        srv_log("request %llu cancelled during prefill", (unsigned long long)j->seq);
        if (!srv_job_cancelled(j)) fail_job(&g, 503, "server shutting down");
        goto out;
    }
    const double prefill_s = ds4_now() - tp;
    const int cached = (int)p.tokens.n - evaluated;
    {
        pthread_mutex_lock(&S->stats_mu);
        S->stats.last_prompt_tokens = (int)p.tokens.n;
        S->stats.last_cached_tokens = cached;
        S->stats.last_evaluated = evaluated;
        snprintf(S->stats.last_source, sizeof(S->stats.last_source), "%s", p.source);
        snprintf(S->stats.last_disk_file, sizeof(S->stats.last_disk_file), "%s", p.disk_file);
        pthread_mutex_unlock(&S->stats_mu);
    }
    srv_log("prefill done: %d tokens evaluated, %d cached, %.2f s (%.1f t/s)", evaluated, cached, prefill_s,
            prefill_s > 0 ? evaluated / prefill_s : 0.0);

    /* ---- generation */
    srv_stream_begin(&g.st, (int)p.tokens.n, cached);
    if (rq->api != SRV_API_COMPLETIONS) {
        g.dsml_opts = (ds4_dsml_opts){.thinking = rq->think != DS4_THINK_NONE,
                           .tools_active = rq->tools_active,
                           .id_prefix = rq->api == SRV_API_MESSAGES ? "toolu_" : "call_",
                           .random = srv_random_bytes,
                           .id_taken = id_taken,
                           .id_taken_user = S->toolmem};
        g.dsml = ds4_dsml_stream_new(&g.dsml_opts, on_dsml, &g);
        if (!g.dsml) {
            fail_job(&g, 500, "out of memory");
            goto out;
        }
    }
    if (S->script) g.script = srv_script_pick(S->script, rq->prompt.p, rq->prompt.n);
    const int room = S->ctx - (int)p.tokens.n;
    int max_tokens = rq->max_tokens < 0 ? S->cfg.default_tokens : rq->max_tokens;
    if (max_tokens > room) max_tokens = room;
    ds4_gen_result gr;
    memset(&gr, 0, sizeof(gr));
    gr.stop = DS4_STOP_LENGTH;
    int gen_rc = 0;
    if (max_tokens > 0) {
        ds4_gen_opts go = {.max_tokens = max_tokens,
                           .sampling = ds4_sampling_for_mode(&rq->sampling, rq->think != DS4_THINK_NONE),
                           .dsml = g.dsml,
                           .on_token = on_token,
                           .ud = &g,
                           /* the hook runs between tokens (checkpoints, scripts); without one
                            * a greedy request may chain its steps on the GPU */
                           .pick = S->kv || g.script ? pick : NULL};
        g.t_gen = ds4_now();
        gen_rc = ds4_engine_generate(e, &go, &gr, &err);
    }
    /* whatever a stop string did not claim goes on */
    if (!g.stop_hit) {
        size_t n = 0;
        const char *rest = srv_stopstr_flush(&g.stops, &n);
        release(&g, rest, n);
    }
    srv_finish f;
    const char *errmsg = NULL;
    if (g.dsml) {
        ds4_dsml_stream_finish(g.dsml, &res);
        have_res = true;
    }
    if (gen_rc != 0) {
        f = SRV_FINISH_ERROR;
        errmsg = err.msg;
    } else if (srv_job_cancelled(j) || atomic_load(&S->shutdown)) {
        f = SRV_FINISH_ERROR;
        errmsg = srv_job_cancelled(j) ? "client disconnected" : "shutdown requested";
    } else if (have_res && res.status == DS4_DSML_UNTERMINATED) {
        f = SRV_FINISH_ERROR;
        errmsg = "unterminated tool call";
    } else if (have_res && res.status == DS4_DSML_OK && res.n_calls > 0 && g.block_end) {
        f = SRV_FINISH_TOOL_CALLS;
    } else if (g.stop_hit || gr.stop == DS4_STOP_EOS) {
        f = SRV_FINISH_STOP;
    } else if (gr.stop == DS4_STOP_LENGTH || gr.stop == DS4_STOP_CONTEXT) {
        f = SRV_FINISH_LENGTH;
    } else {
        f = SRV_FINISH_STOP;
    }
    /* §6.12.4: a client that sends the calls back as JSON will render them
     * canonically; make that the live state before the final events */
    if (f == SRV_FINISH_TOOL_CALLS && (rq->api == SRV_API_CHAT || rq->api == SRV_API_MESSAGES) &&
        (!S->cfg.tool_replay || !res.raw_dsml))
        srv_canon_tool_turn(S, rq, &res, (int)p.tokens.n, on_canon_progress, &g, &canon);
    const int completion_tokens = gr.n_tokens - (gr.stop == DS4_STOP_EOS ? 1 : 0);
    srv_outcome oc = {.finish = f,
                      .res = have_res ? &res : NULL,
                      .text = g.completion.p,
                      .text_len = g.completion.n,
                      .error = errmsg,
                      .prompt_tokens = (int)p.tokens.n,
                      .cached_tokens = cached,
                      .completion_tokens = completion_tokens};
    srv_stream_finish(&g.st, &oc);
    const double gs = gr.seconds;
    srv_log("finish=%s prompt=%zu cached=%d generated=%d %.2f s (%.1f t/s)%s%s", srv_finish_name(f), p.tokens.n, cached,
            completion_tokens, gs, gs > 0 ? completion_tokens / gs : 0.0, errmsg ? " error=" : "", errmsg ? errmsg : "");
    if (have_res && res.n_calls > 0) {
        char ids[512] = "", names[512] = "";
        for (int i = 0; i < res.n_calls; i++) {
            size_t a = strlen(ids), b = strlen(names);
            snprintf(ids + a, sizeof(ids) - a, "%s%s", i ? "," : "", res.calls[i].id ? res.calls[i].id : "");
            snprintf(names + b, sizeof(names) - b, "%s%s", i ? "," : "", res.calls[i].name);
        }
        srv_log("tool calls ctx=%d n=%d raw_dsml=%zu ids=[%s] names=[%s]", ds4_session_n_tokens(e->sess), res.n_calls,
                res.raw_dsml_len, ids, names);
    }
    remember_turn(S, &g, have_res ? &res : NULL, f, &canon);
    trace_end(S, j, f, completion_tokens, ds4_now() - t0, have_res ? &res : NULL, &g.completion);
    pthread_mutex_lock(&S->stats_mu);
    S->stats.completed++;
    S->stats.last_generated = completion_tokens;
    pthread_mutex_unlock(&S->stats_mu);
    goto out;

prefill_failed:
    ds4_session_set_progress(e->sess, NULL, NULL);
    srv_log("prefill failed: %s", err.msg);
    fail_job(&g, 500, err.msg[0] ? err.msg : "prefill failed");
out:
    ds4_session_set_progress(e->sess, NULL, NULL);
    if (have_res) ds4_dsml_result_free(&res);
    srv_canon_result_free(&canon);
    if (g.dsml) ds4_dsml_stream_free(g.dsml);
    srv_stream_free(&g.st);
    srv_stopstr_free(&g.stops);
    ds4_textbuf_free(&g.generated);
    ds4_textbuf_free(&g.completion);
    srv_prefix_free(&p);
}

/* ============================================================ the thread */

static void *worker_main(void *ud) {
    srv_server *S = ud;
    for (;;) {
        pthread_mutex_lock(&S->qmu);
        while (!S->stopping && S->qlen == 0) pthread_cond_wait(&S->qcv, &S->qmu);
        if (S->qlen == 0) { /* stopping and nothing left */
            pthread_mutex_unlock(&S->qmu);
            break;
        }
        srv_job *j = S->queue[S->qhead];
        S->qhead = (S->qhead + 1) % S->qcap;
        S->qlen--;
        S->current = j;
        const bool stopping = S->stopping;
        pthread_mutex_unlock(&S->qmu);
        if (stopping) {
            /* drained without running: the client learns why */
            srv_error e = {.status = 503};
            snprintf(e.msg, sizeof(e.msg), "server shutting down");
            size_t n = 0;
            char *b = srv_error_body(j->req.api, &e, &n);
            if (b) srv_job_reply(j, 503, b, n);
            free(b);
        } else {
            run_job(S, j);
        }
        pthread_mutex_lock(&S->qmu);
        S->current = NULL;
        pthread_mutex_unlock(&S->qmu);
        srv_job_done(j);
        srv_job_unref(j);
    }
    return NULL;
}

int srv_worker_start(srv_server *S) {
    S->live_ids_frontier = -1;
    ds4_textbuf_init(&S->visible.text);
    if (pthread_create(&S->worker, NULL, worker_main, S) != 0) return -1;
    S->worker_started = true;
    return 0;
}

void srv_worker_stop(srv_server *S) {
    pthread_mutex_lock(&S->qmu);
    S->stopping = true;
    atomic_store(&S->shutdown, true); /* the running job ends with finish error */
    pthread_cond_broadcast(&S->qcv);
    pthread_mutex_unlock(&S->qmu);
    if (S->worker_started) pthread_join(S->worker, NULL);
    S->worker_started = false;
}

void srv_worker_shutdown_save(srv_server *S) {
    if (S->kv && S->eng) srv_kv_store(S, DS4_KVDISK_REASON_SHUTDOWN, true);
    clear_live_ids(S);
    ds4_textbuf_free(&S->visible.text);
}

void srv_stats_json(srv_server *S, ds4_textbuf *out) {
    pthread_mutex_lock(&S->stats_mu);
    srv_stats st = S->stats;
    pthread_mutex_unlock(&S->stats_mu);
    pthread_mutex_lock(&S->qmu);
    const int q = S->qlen;
    pthread_mutex_unlock(&S->qmu);
    char buf[1024];
    snprintf(buf, sizeof(buf),
             "{\"requests\":%llu,\"completed\":%llu,\"rejected_busy\":%llu,\"queue\":%d,\"disk_hits\":%d,"
             "\"disk_stores\":%d,\"last\":{\"prompt_tokens\":%d,\"cached_tokens\":%d,\"evaluated_tokens\":%d,"
             "\"generated_tokens\":%d,\"cache_source\":\"%s\",\"disk_file\":\"%s\"},"
             "\"tool_canon\":{\"extended\":%d,\"rebuilt\":%d,\"skipped\":%d}}\n",
             (unsigned long long)st.requests, (unsigned long long)st.completed, (unsigned long long)st.rejected_busy, q,
             st.disk_hits, st.disk_stores, st.last_prompt_tokens, st.last_cached_tokens, st.last_evaluated,
             st.last_generated, st.last_source, st.last_disk_file, st.canon_extended, st.canon_rebuilt,
             st.canon_skipped);
    ds4_textbuf_puts(out, buf);
}
