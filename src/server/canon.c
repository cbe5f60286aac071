/* ds4-server — tool checkpoint canonicalization (INTERFACES.md §6.12.4; the
 * why is in canon.h).
 *
 * srv_canon_tool_turn runs on the worker thread after the generation of a
 * chat-completions or Anthropic tool turn and before its final events.  The
 * canonical transcript is the request's conversation with the reply appended,
 * rendered as the next request will render it as history: rendered prompt +
 * [reasoning + </think>] + content + canonical DSML + EOS.  A rebuild cannot
 * rewrite the live tail in place (compressed rows and compressor frontiers
 * have moved past the divergence), so it restarts from the longest disk
 * checkpoint of the canonical text (the disk-text lookup of §7.7) or from
 * empty, and prefills the rest with the caller's progress callback, which
 * sends the stream keepalives of §6.13 and stores continued checkpoints. */
#include <stdlib.h>
#include <string.h>

#include "server/canon.h"
#include "server/server.h"

/* ============================================================ pure parts */

const char *srv_canon_plan_name(srv_canon_plan p) {
    switch (p) {
    case SRV_CANON_KEEP: return "keep";
    case SRV_CANON_EXTEND: return "extend";
    case SRV_CANON_EXTEND_TEXT: return "extend-text";
    case SRV_CANON_SKIP: return "skip";
    case SRV_CANON_REBUILD: return "rebuild";
    }
    return "?";
}

srv_canon_plan srv_canon_decide(const srv_canon_view *v, int *common) {
    int c = 0;
    while (c < v->n_live && c < v->n_canon && v->live[c] == v->canon[c]) c++;
    *common = c;
    if (c == v->n_live && c == v->n_canon) return SRV_CANON_KEEP;
    if (v->live_len == v->canon_len && memcmp(v->live_text, v->canon_text, v->live_len) == 0) return SRV_CANON_KEEP;
    if (c == v->n_live) return SRV_CANON_EXTEND;
    if (v->live_len < v->canon_len && memcmp(v->live_text, v->canon_text, v->live_len) == 0) return SRV_CANON_EXTEND_TEXT;
    if (c < v->prompt_tokens) return SRV_CANON_SKIP;
    return SRV_CANON_REBUILD;
}

ds4_chat_msg *srv_chat_add_reply(ds4_chat *chat, const ds4_dsml_result *r, bool keep_reasoning) {
    ds4_chat_msg *m = ds4_chat_add(chat, DS4_ROLE_ASSISTANT, r->content, r->content_len);
    if (!m) return NULL;
    if (keep_reasoning && r->reasoning_len && ds4_chat_msg_append_reasoning(m, r->reasoning, r->reasoning_len))
        return NULL;
    for (int i = 0; i < r->n_calls; i++)
        if (ds4_chat_msg_add_call(m, r->calls[i].id, r->calls[i].name, r->calls[i].arguments, r->calls[i].arguments_len))
            return NULL;
    return m;
}

void srv_canon_result_free(srv_canon_result *c) { ds4_textbuf_free(&c->text); }

/* ============================================================ the step */

/* Bring the live session to target (its live prefix is kept, the rest
 * evaluated).  On failure or cancellation the session holds some prefix of
 * target: neither the turn nor its canonical form. */
static int eval_to(srv_server *S, const ds4_tokvec *target, ds4_progress_fn progress, void *ud, srv_canon_result *out) {
    ds4_session *sess = S->eng->sess;
    ds4_sync_stats ss;
    memset(&ss, 0, sizeof(ss));
    ds4_err err = {{0}};
    ds4_session_set_progress(sess, progress, ud);
    const int rc = ds4_engine_sync(S->eng, target->ids, (int)target->n, &ss, &err);
    ds4_session_set_progress(sess, NULL, NULL);
    out->evaluated += ss.evaluated;
    if (rc != 0 || ss.cancelled) {
        srv_log("tool checkpoint canonicalization %s: %s", rc ? "failed" : "cancelled", rc ? err.msg : "client gone");
        out->lost = true;
        return -1;
    }
    out->canonical = true;
    return 0;
}

/* The rebuild: restart from the longest disk checkpoint of the canonical text
 * or from empty, then prefill to the canonical transcript. */
static void rebuild(srv_server *S, const ds4_tokvec *ct, int prompt_tokens, int n_live, ds4_progress_fn progress,
                    void *ud, srv_canon_result *out) {
    ds4_session *sess = S->eng->sess;
    ds4_tokvec restored = {0}; /* a checkpoint's tokens + tokenize(the text after it) */
    int from = 0;
    const int hit = srv_kv_restore(S, out->text.p, out->text.n, &restored, NULL, 0);
    if (hit < 0) {
        /* out of memory after a load: the live session may be the checkpoint */
        srv_log("tool checkpoint canonicalization failed: out of memory");
        out->lost = true;
        ds4_tokvec_free(&restored);
        return;
    }
    if (hit) {
        from = ds4_session_n_tokens(sess);
    } else {
        /* the live tail cannot be rewritten in place: start over */
        ds4_session_reset(sess);
        ds4_kvdisk_sched_reset(&S->sched);
    }
    const ds4_tokvec *target = hit ? &restored : ct;
    const int need = (int)target->n - from;
    srv_log("tool checkpoint canonicalization needs %d tokens rebuild (live=%d canonical=%d common=%d prompt=%d from=%s:%d)",
            need, n_live, out->n_canon, out->common, prompt_tokens, hit ? "disk" : "empty", from);
    const double t0 = ds4_now();
    /* a stream gets its first keepalive now: the finish events wait for this */
    if (progress && progress(ud, 0, need) != 0) {
        srv_log("tool checkpoint canonicalization cancelled: client gone");
        out->lost = true;
    } else if (eval_to(S, target, progress, ud, out) == 0) {
        srv_log("tool checkpoint canonicalized via=%s evaluated=%d tokens %.2f s", hit ? "disk" : "empty", out->evaluated,
                ds4_now() - t0);
    }
    ds4_tokvec_free(&restored);
}

int srv_canon_tool_turn(srv_server *S, srv_request *rq, const ds4_dsml_result *r, int prompt_tokens,
                        ds4_progress_fn progress, void *ud, srv_canon_result *out) {
    ds4_session *sess = S->eng->sess;
    ds4_err err = {{0}};
    out->ran = true;
    out->reply = srv_chat_add_reply(&rq->chat, r, true);
    if (!out->reply || ds4_chat_render_history(&rq->chat, &out->text, &err) != 0) {
        srv_log("tool checkpoint canonicalization failed: %s", err.msg[0] ? err.msg : "out of memory");
        return -1;
    }
    const int n_live = ds4_session_n_tokens(sess);
    const int32_t *live = ds4_session_tokens(sess);
    ds4_tokvec ct = {0};
    char *lt = NULL;
    size_t ln = 0;
    int rc = -1;
    if (ds4_tokenize(S->tok, out->text.p ? out->text.p : "", out->text.n, true, &ct, &err) != 0 ||
        ds4_detokenize(S->tok, live, (size_t)n_live, &lt, &ln, &err) != 0) {
        srv_log("tool checkpoint canonicalization failed: %s", err.msg);
        goto done;
    }
    out->n_canon = (int)ct.n;
    const srv_canon_view v = {.live = live, .n_live = n_live, .live_text = lt, .live_len = ln, .canon = ct.ids,
                              .n_canon = (int)ct.n, .canon_text = out->text.p, .canon_len = out->text.n,
                              .prompt_tokens = prompt_tokens};
    out->plan = srv_canon_decide(&v, &out->common);
    /* a transcript that fills the context leaves the next request no room anyway */
    const bool fits = (int)ct.n < S->ctx;
    if (out->plan != SRV_CANON_KEEP && !fits) out->plan = SRV_CANON_SKIP;
    rc = 0;
    switch (out->plan) {
    case SRV_CANON_KEEP:
        out->canonical = true;
        break;
    case SRV_CANON_SKIP:
        srv_log("tool checkpoint canonicalization skipped: common=%d prompt=%d live=%d canonical=%d%s", out->common,
                prompt_tokens, n_live, out->n_canon, fits ? "" : " (does not fit the context)");
        break;
    case SRV_CANON_EXTEND:
        /* ds4_engine_sync keeps the live prefix and evaluates the rest */
        eval_to(S, &ct, progress, ud, out);
        break;
    case SRV_CANON_EXTEND_TEXT: {
        /* the bytes after the live ones, tokenized on their own (§6.12 invariant) */
        ds4_tokvec t = {0};
        if (srv_tokens_extend(S, live, n_live, out->text.p + ln, out->text.n - ln, &t) == 0)
            eval_to(S, &t, progress, ud, out);
        else
            rc = -1;
        ds4_tokvec_free(&t);
        break;
    }
    case SRV_CANON_REBUILD:
        rebuild(S, &ct, prompt_tokens, n_live, progress, ud, out);
        break;
    }
    if ((out->plan == SRV_CANON_EXTEND || out->plan == SRV_CANON_EXTEND_TEXT) && out->canonical)
        srv_log("tool checkpoint canonicalization extended the live state by %d tokens (live=%d canonical=%d)",
                out->evaluated, n_live, out->n_canon);
    if (S->trace)
        srv_trace_printf(S->trace,
                         "\n--- trace: tool_checkpoint_canonicalization plan=%s live=%d canonical=%d common=%d prompt=%d "
                         "evaluated=%d canonical_state=%d ---\n",
                         srv_canon_plan_name(out->plan), n_live, out->n_canon, out->common, prompt_tokens, out->evaluated,
                         out->canonical);
    pthread_mutex_lock(&S->stats_mu);
    if (out->plan == SRV_CANON_EXTEND || out->plan == SRV_CANON_EXTEND_TEXT) S->stats.canon_extended++;
    if (out->plan == SRV_CANON_REBUILD) S->stats.canon_rebuilt++;
    if (out->plan == SRV_CANON_SKIP) S->stats.canon_skipped++;
    pthread_mutex_unlock(&S->stats_mu);
done:
    ds4_tokvec_free(&ct);
    free(lt);
    return rc;
}
