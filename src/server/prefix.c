/* ds4-server — how a job chooses its starting state (INTERFACES.md §6.12)
 * and the disk KV cache saves around it (§7.7, §7.8).
 *
 * Everything here runs on the worker thread, which owns the live session.
 * Invariant (§6.12): whenever a byte prefix is matched, only the bytes after
 * it are tokenized, on their own, with special-token recognition; the full
 * prompt's tokenization is never sliced at a token index, because BPE may
 * merge across the boundary. */
#include <stdlib.h>
#include <string.h>

#include "server/server.h"

/* ============================================================ helpers */

static double ms_since(double t0) { return (ds4_now() - t0) * 1000.0; }

int srv_tokens_extend(srv_server *S, const int32_t *live, int n, const char *rest, size_t rn, ds4_tokvec *out) {
    ds4_err err = {{0}};
    out->n = 0;
    for (int i = 0; i < n; i++)
        if (ds4_tokvec_push(out, live[i], &err)) return -1;
    return rn ? ds4_tokenize(S->tok, rest, rn, true, out, &err) : 0;
}

static bool same_id_set(char *const *a, int na, char *const *b, int nb) {
    if (na != nb || na == 0) return false;
    for (int i = 0; i < na; i++) {
        bool found = false;
        for (int k = 0; k < nb && !found; k++) found = strcmp(a[i], b[k]) == 0;
        if (!found) return false;
    }
    return true;
}

void srv_prefix_free(srv_prefix *p) { ds4_tokvec_free(&p->tokens); }

/* ============================================================ disk saves */

typedef struct tool_list {
    ds4_kvdisk_tool *v;
    size_t n, cap;
} tool_list;

static void collect_tool(void *ud, const char *id, const char *dsml, size_t len) {
    tool_list *t = ud;
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        ds4_kvdisk_tool *v = realloc(t->v, cap * sizeof(*v));
        if (!v) return;
        t->v = v;
        t->cap = cap;
    }
    char *i = strdup(id), *d = malloc(len + 1);
    if (!i || !d) {
        free(i);
        free(d);
        return;
    }
    memcpy(d, dsml, len);
    d[len] = 0;
    t->v[t->n++] = (ds4_kvdisk_tool){i, strlen(i), d, len};
}

static void free_tools(tool_list *t) {
    for (size_t i = 0; i < t->n; i++) {
        free((char *)t->v[i].id);
        free((char *)t->v[i].dsml);
    }
    free(t->v);
}

void srv_kv_store(srv_server *S, ds4_kvdisk_reason reason, bool use_visible) {
    if (!S->kv) return;
    ds4_session *sess = S->eng->sess;
    const int n = ds4_session_n_tokens(sess);
    if (n < ds4_kvdisk_options(S->kv)->min_tokens) return;
    const double t0 = ds4_now();
    char *text = NULL;
    size_t tn = 0;
    ds4_kvdisk_key key = DS4_KVDISK_KEY_TOKEN_TEXT;
    ds4_err err = {{0}};
    if (use_visible && S->visible.valid && S->visible.frontier == n && S->visible.text.n) {
        text = malloc(S->visible.text.n);
        if (!text) return;
        memcpy(text, S->visible.text.p, S->visible.text.n);
        tn = S->visible.text.n;
        key = S->visible.api == SRV_API_RESPONSES ? DS4_KVDISK_KEY_RESPONSES_VISIBLE : DS4_KVDISK_KEY_THINKING_VISIBLE;
    } else if (ds4_detokenize(S->tok, ds4_session_tokens(sess), (size_t)n, &text, &tn, &err) != 0) {
        srv_log("kv cache store failed: %s", err.msg);
        return;
    }
    tool_list tools = {0};
    if (S->cfg.tool_replay) srv_toolmem_each_in_text(S->toolmem, text, tn, collect_tool, &tools);
    ds4_kvdisk_store_req req = {.text = text, .text_len = tn, .reason = reason, .key = key,
                                .tools = tools.v, .n_tools = tools.n};
    ds4_kvdisk_store_result res;
    memset(&res, 0, sizeof(res));
    if (ds4_kvdisk_store(S->kv, sess, &req, &res, &err) != 0) {
        srv_log("kv cache store failed: %s", err.msg);
    } else if (res.outcome == DS4_KVDISK_STORED || res.outcome == DS4_KVDISK_REFRESHED) {
        static const char *const keys[] = {"token-text", "responses-visible", "thinking-visible"};
        srv_log("kv cache %s tokens=%d trimmed=0 reason=%s key=%s size=%.1f MiB save=%.0f ms tools=%zu file=%s",
                res.outcome == DS4_KVDISK_STORED ? "stored" : "refreshed", n, ds4_kvdisk_reason_name(reason), keys[key],
                (double)res.file_bytes / (1024.0 * 1024.0), ms_since(t0), res.tools_written, res.name);
        if (res.evicted) srv_log("kv cache evicted reason=disk-cache-full files=%d bytes=%llu", res.evicted,
                                 (unsigned long long)res.evicted_bytes);
        pthread_mutex_lock(&S->stats_mu);
        S->stats.disk_stores++;
        pthread_mutex_unlock(&S->stats_mu);
    } else {
        srv_log("kv cache store skipped tokens=%d reason=%s: %s", n, ds4_kvdisk_reason_name(reason), res.why);
    }
    free_tools(&tools);
    free(text);
}

void srv_kv_preload_tools(srv_server *S, const ds4_chat *chat) {
    if (!S->kv || !S->cfg.tool_replay) return;
    ds4_str ids[256];
    size_t n = 0;
    for (int i = 0; i < chat->n_msgs && n < 256; i++)
        for (int k = 0; k < chat->msgs[i]->n_calls && n < 256; k++) {
            const char *id = chat->msgs[i]->calls[k].id;
            if (id && !srv_toolmem_has(S->toolmem, id)) ids[n++] = (ds4_str){id, strlen(id)};
        }
    if (!n) return;
    ds4_kvdisk_tools t = {0};
    ds4_err err = {{0}};
    if (ds4_kvdisk_tools_for_ids(S->kv, ids, n, &t, &err) != 0) return;
    for (size_t i = 0; i < t.n; i++) {
        const char *id = t.v[i].id;
        srv_toolmem_put(S->toolmem, &id, 1, t.v[i].dsml, t.v[i].dsml_len, true);
    }
    ds4_kvdisk_tools_free(&t);
}

int srv_kv_restore(srv_server *S, const char *text, size_t len, ds4_tokvec *out, char *file, size_t file_size) {
    if (!S->kv) return 0;
    ds4_session *sess = S->eng->sess;
    const double t0 = ds4_now();
    ds4_kvdisk_load_result res;
    memset(&res, 0, sizeof(res));
    ds4_err err = {{0}};
    int hit = 0;
    if (ds4_kvdisk_restore(S->kv, sess, text, len, &res, &err) != 0) {
        srv_log("kv cache lookup failed: %s", err.msg);
    } else if (res.outcome == DS4_KVDISK_LOADED) {
        const int n = ds4_session_n_tokens(sess);
        hit = srv_tokens_extend(S, ds4_session_tokens(sess), n, text + res.text_bytes, len - res.text_bytes, out) ? -1 : 1;
        for (size_t i = 0; i < res.tools.n; i++) {
            const char *id = res.tools.v[i].id;
            srv_toolmem_put(S->toolmem, &id, 1, res.tools.v[i].dsml, res.tools.v[i].dsml_len, true);
        }
        static const char *const keys[] = {"token-text", "responses-visible", "thinking-visible"};
        srv_log("kv cache hit text tokens=%d text=%zu quant=%u key=%s load=%.0f ms%s file=%s", n, res.text_bytes,
                res.entry.quant_bits, keys[ds4_kvdisk_entry_key(&res.entry)], ms_since(t0),
                res.consumed ? " consumed" : "", res.entry.name);
        if (file) snprintf(file, file_size, "%s", res.entry.name);
        if (hit > 0) {
            ds4_kvdisk_sched_resume(&S->sched, n);
            pthread_mutex_lock(&S->stats_mu);
            S->stats.disk_hits++;
            pthread_mutex_unlock(&S->stats_mu);
        }
    } else if (res.session_reset) {
        srv_log("kv cache: a checkpoint failed to load; the live session was reset");
    }
    ds4_kvdisk_load_result_free(&res);
    return hit;
}

/* ============================================================ choice */

static void set_source(srv_prefix *p, const char *src, int reused) {
    p->source = src;
    p->reused = reused;
}

int srv_prefix_choose(srv_server *S, srv_job *j, srv_prefix *p) {
    srv_request *rq = &j->req;
    ds4_session *sess = S->eng->sess;
    const int n_live = ds4_session_n_tokens(sess);
    const int32_t *live = ds4_session_tokens(sess);
    const char *prompt = rq->prompt.p ? rq->prompt.p : "";
    const size_t plen = rq->prompt.n;
    memset(p, 0, sizeof(*p));
    p->live_before = n_live;
    p->source = "none";
    p->miss_reason = "";
    while (p->common < n_live && p->common < (int)rq->tokens.n && live[p->common] == rq->tokens.ids[p->common])
        p->common++;
    const bool chatlike = rq->api == SRV_API_CHAT || rq->api == SRV_API_MESSAGES;
    const srv_visible *v = &S->visible;
    const bool vis_ok = n_live > 0 && v->valid && v->frontier == n_live && v->text.n < plen &&
                        memcmp(v->text.p, prompt, v->text.n) == 0;

    /* 1. responses-visible */
    if (rq->api == SRV_API_RESPONSES && vis_ok && v->api == SRV_API_RESPONSES) {
        if (srv_tokens_extend(S, live, n_live, prompt + v->text.n, plen - v->text.n, &p->tokens)) return -1;
        set_source(p, "responses-visible", n_live);
        srv_log("responses live continuation match=visible-prefix cached=%d prompt=%zu", n_live, p->tokens.n);
        return 0;
    }
    /* 2./3. tool outputs answering exactly the live turn's calls */
    if ((rq->api == SRV_API_RESPONSES || rq->api == SRV_API_MESSAGES) && rq->tail_from >= 0 && n_live > 0 &&
        S->live_ids_frontier == n_live && S->live_ids_api == rq->api &&
        same_id_set(rq->tail_ids, rq->n_tail_ids, S->live_ids, S->n_live_ids)) {
        ds4_textbuf tail;
        ds4_textbuf_init(&tail);
        ds4_err err = {{0}};
        int rc = ds4_chat_render_tail(&rq->chat, rq->tail_from, &tail, &err);
        /* the tail starts with the EOS that closes the live turn; a turn
         * canonicalized by canon.c (§6.12.4) has evaluated it already */
        const size_t el = strlen(DS4_CHAT_EOS);
        size_t skip = 0;
        if (!rc && n_live > 0 && live[n_live - 1] == ds4_tokenizer_specials(S->tok)->eos && tail.n >= el &&
            memcmp(tail.p, DS4_CHAT_EOS, el) == 0)
            skip = el;
        if (!rc) rc = srv_tokens_extend(S, live, n_live, tail.p + skip, tail.n - skip, &p->tokens);
        ds4_textbuf_free(&tail);
        if (rc) return -1;
        const bool resp = rq->api == SRV_API_RESPONSES;
        set_source(p, resp ? "responses-tool-output" : "anthropic-tool-output", n_live);
        srv_log("%s live continuation match=tool-output-ids ids=%d cached=%d prompt=%zu", resp ? "responses" : "anthropic",
                rq->n_tail_ids, n_live, p->tokens.n);
        return 0;
    }
    /* 4. outputs for calls only the live session knew, and it moved on */
    if (rq->n_live_ids > 0) {
        p->status = 409;
        snprintf(p->error, sizeof(p->error), "%s continuation state is not available; retry by replaying the full %s history",
                 rq->api == SRV_API_RESPONSES ? "Responses" : "Anthropic", rq->api == SRV_API_RESPONSES ? "input" : "messages");
        return 0;
    }
    /* 5. memory-token */
    if (n_live > 0 && p->common == n_live) {
        if (srv_tokens_extend(S, rq->tokens.ids, (int)rq->tokens.n, NULL, 0, &p->tokens)) return -1;
        set_source(p, "memory-token", n_live);
        return 0;
    }
    /* 6. thinking-visible */
    if (chatlike && vis_ok && v->api != SRV_API_RESPONSES) {
        if (srv_tokens_extend(S, live, n_live, prompt + v->text.n, plen - v->text.n, &p->tokens)) return -1;
        set_source(p, "thinking-visible", n_live);
        srv_log("thinking live continuation match=visible-prefix cached=%d prompt=%zu", n_live, p->tokens.n);
        return 0;
    }
    /* 7. memory-text: the live tokens' bytes are a prefix of the prompt */
    if (n_live > 0) {
        char *lt = NULL;
        size_t ln = 0;
        ds4_err err = {{0}};
        if (ds4_detokenize(S->tok, live, (size_t)n_live, &lt, &ln, &err) == 0 && ln <= plen &&
            memcmp(lt, prompt, ln) == 0) {
            int rc = srv_tokens_extend(S, live, n_live, prompt + ln, plen - ln, &p->tokens);
            free(lt);
            if (rc) return -1;
            set_source(p, "memory-text", n_live);
            return 0;
        }
        free(lt);
    }
    /* 8. miss: keep the live state on disk before it is replaced */
    p->miss_reason = n_live == 0 ? "no-live-checkpoint"
                     : (int)rq->tokens.n < n_live && p->common == (int)rq->tokens.n
                         ? "incoming-prompt-shorter-than-live-checkpoint"
                         : "token-mismatch";
    if (n_live > 0) {
        srv_log("live kv cache miss reason=%s live=%d prompt=%zu common=%d", p->miss_reason, n_live, rq->tokens.n,
                p->common);
        srv_kv_store(S, DS4_KVDISK_REASON_EVICT, true);
    }
    /* 9. disk-text */
    const int hit = srv_kv_restore(S, prompt, plen, &p->tokens, p->disk_file, sizeof(p->disk_file));
    if (hit < 0) return -1;
    if (hit) {
        p->disk_tokens = ds4_session_n_tokens(sess);
        set_source(p, "disk-text", p->disk_tokens);
        return 0;
    }
    /* 10. cold */
    if (srv_tokens_extend(S, rq->tokens.ids, (int)rq->tokens.n, NULL, 0, &p->tokens)) return -1;
    ds4_kvdisk_sched_reset(&S->sched);
    set_source(p, "none", 0);
    return 0;
}
