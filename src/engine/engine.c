/* ds4 — engine: session sync with prefix reuse, and generation (engine.h). */
#include "engine/engine.h"

#include "engine/greedy.h"

#include <stdlib.h>
#include <string.h>

ds4_engine *ds4_engine_open(const char *model_path, const ds4_session_opts *opts, ds4_err *err) {
    ds4_engine *e = calloc(1, sizeof(*e));
    if (!e) {
        ds4_errf(err, "out of memory");
        return NULL;
    }
    e->model = ds4_model_open(model_path, 0, err);
    if (!e->model) goto fail;
    e->tok = ds4_tokenizer_from_gguf(e->model->file, err);
    if (!e->tok) {
        ds4_err_prefix(err, "%s: tokenizer", model_path);
        goto fail;
    }
    if ((int64_t)ds4_tokenizer_n_vocab(e->tok) != e->model->hp.n_vocab) {
        ds4_errf(err, "%s: the tokenizer has %zu tokens but the model's vocabulary is %d", model_path,
                 ds4_tokenizer_n_vocab(e->tok), e->model->hp.n_vocab);
        goto fail;
    }
    e->sess = ds4_session_create(e->model, opts, err);
    if (!e->sess) goto fail;
    if (ds4_sampler_init(&e->sampler, e->model->hp.n_vocab, err) != 0) goto fail;
    return e;
fail:
    ds4_engine_close(e);
    return NULL;
}

void ds4_engine_close(ds4_engine *e) {
    if (!e) return;
    ds4_sampler_free(&e->sampler);
    ds4_session_free(e->sess);
    ds4_tokenizer_free(e->tok);
    ds4_model_close(e->model);
    free(e);
}

/* ---------------------------------------------------------------- sync */

/* Below this many new tokens, the decode path is used (INTERFACES 8.2). */
#define RESUME_BATCH_MIN 4

int ds4_engine_sync(ds4_engine *e, const int32_t *prompt, int n, ds4_sync_stats *st, ds4_err *err) {
    ds4_sync_stats local;
    if (!st) st = &local;
    memset(st, 0, sizeof(*st));
    ds4_session *s = e->sess;
    if (n > ds4_session_ctx(s))
        return ds4_errf(err, "the prompt has %d tokens but the context holds %d (raise --ctx)", n, ds4_session_ctx(s));
    if (n < 1) return ds4_errf(err, "empty prompt");
    const int live = ds4_session_n_tokens(s);
    const int32_t *lt = ds4_session_tokens(s);
    int keep = 0;
    if (live <= n && memcmp(lt, prompt, sizeof(int32_t) * (size_t)live) == 0) keep = live;
    /* a prompt equal to the live tokens needs their logits, which the session has */
    if (keep == n && ds4_session_logits(s)) {
        st->reused = keep;
        return 0;
    }
    if (keep == 0 && live > 0) ds4_session_reset(s);
    if (keep == n) { /* identical but no logits (cannot happen after an eval); re-evaluate cold */
        ds4_session_reset(s);
        keep = 0;
    }
    st->reused = keep;
    const double t0 = ds4_now();
    int rc = 0;
    const int suffix = n - keep;
    if (keep > 0 && suffix < RESUME_BATCH_MIN) {
        for (int i = keep; i < n && rc == 0; i++) rc = ds4_session_decode(s, prompt[i], err);
    } else {
        rc = ds4_session_eval(s, prompt + keep, suffix, NULL, err);
    }
    st->seconds = ds4_now() - t0;
    st->evaluated = ds4_session_n_tokens(s) - keep;
    if (rc == 1) {
        st->cancelled = true;
        return 0;
    }
    return rc;
}

/* ---------------------------------------------------------------- generate */

int32_t ds4_engine_argmax(const ds4_engine *e, int32_t exclude) {
    return ds4_sampler_argmax_except(ds4_session_logits(e->sess), e->model->hp.n_vocab, exclude);
}

/* One produced token to the caller: counted, detokenized, on_token. */
static int emit(const ds4_gen_opts *o, ds4_gen_result *r, ds4_detok_stream *ds, int32_t tok, int32_t eos) {
    r->n_tokens++;
    size_t len = 0;
    const char *text = tok == eos ? "" : ds4_detok_push(ds, tok, &len);
    return o->on_token ? o->on_token(o->ud, tok, text, len) : 0;
}

/* Greedy generation through ds4_greedy: the same tokens, stops and session
 * as the loop in ds4_engine_generate, but each step's successor is queued
 * before the host waits for it (on CUDA the next step's launch then overlaps
 * the running one, and the pick never leaves the GPU). The first token comes
 * from the session's logits on the host, as there. */
static int generate_greedy(ds4_engine *e, const ds4_gen_opts *o, ds4_gen_result *r, ds4_detok_stream *ds,
                           ds4_err *err) {
    ds4_session *s = e->sess;
    const int32_t eos = ds4_tokenizer_specials(e->tok)->eos;
    const int32_t exclude = o->ban_eos ? eos : -1, stop_token = o->ban_eos ? -1 : eos;
    const int ctx = ds4_session_ctx(s), n0 = ds4_session_n_tokens(s);
    r->stop = DS4_STOP_LENGTH;
    if (n0 >= ctx) {
        r->stop = DS4_STOP_CONTEXT;
        return 0;
    }
    int32_t tok = ds4_engine_argmax(e, exclude);
    ds4_greedy g;
    if (tok != eos && ds4_greedy_begin(&g, s, tok, exclude, stop_token, err) != 0) return -1;
    int stop = emit(o, r, ds, tok, eos);
    if (tok == eos) {
        r->stop = DS4_STOP_EOS;
        return 0;
    }
    int rc = 0;
    for (;;) {
        /* the step fed `tok` is queued */
        if (stop) {
            r->stop = DS4_STOP_CALLBACK;
            break;
        }
        const bool length = o->max_tokens > 0 && r->n_tokens >= o->max_tokens;
        const bool full = n0 + r->n_tokens >= ctx; /* the session's tokens once this step is in */
        if (!length && !full && (rc = ds4_greedy_queue(&g, err)) != 0) break;
        int32_t next;
        if ((rc = ds4_greedy_wait(&g, &next, err)) != 0) break;
        if (length || full) {
            r->stop = length ? DS4_STOP_LENGTH : DS4_STOP_CONTEXT;
            break;
        }
        tok = next;
        stop = emit(o, r, ds, tok, eos);
        if (tok == eos) { /* its queued step is dropped by greedy_end */
            r->stop = DS4_STOP_EOS;
            break;
        }
    }
    const int erc = ds4_greedy_end(&g, rc == 0 ? err : NULL);
    return rc != 0 ? rc : erc;
}

/* Greedy generation goes through generate_greedy unless DS4_GREEDY_CHAIN=0
 * (A/B timing and bisecting: the plain loop below). Greedy as the sampler
 * sees it: its normalized parameters (a NaN temperature samples at 1). */
static bool greedy_chain(const ds4_engine *e, const ds4_gen_opts *o) {
    if (o->pick || (!o->ban_eos && e->sampler.params.temperature > 0.0f)) return false;
    const char *v = getenv("DS4_GREEDY_CHAIN");
    return !(v && strcmp(v, "0") == 0);
}

int ds4_engine_generate(ds4_engine *e, const ds4_gen_opts *o, ds4_gen_result *r, ds4_err *err) {
    ds4_gen_result local;
    if (!r) r = &local;
    memset(r, 0, sizeof(*r));
    ds4_session *s = e->sess;
    if (!ds4_session_logits(s)) return ds4_errf(err, "generate needs a prompt first");
    const int32_t eos = ds4_tokenizer_specials(e->tok)->eos;
    ds4_detok_stream ds;
    if (ds4_detok_init(&ds, e->tok, err) != 0) return -1;
    ds4_sampler_start(&e->sampler, &o->sampling);
    const double t0 = ds4_now();
    int rc = 0;
    r->stop = DS4_STOP_LENGTH;
    if (greedy_chain(e, o)) {
        rc = generate_greedy(e, o, r, &ds, err);
        goto done;
    }
    for (;;) {
        if (o->max_tokens > 0 && r->n_tokens >= o->max_tokens) {
            r->stop = DS4_STOP_LENGTH;
            break;
        }
        /* keep one slot free: the chosen token must still fit */
        if (ds4_session_n_tokens(s) >= ds4_session_ctx(s)) {
            r->stop = DS4_STOP_CONTEXT;
            break;
        }
        const ds4_dsml_decode_state ds_state = o->dsml ? ds4_dsml_stream_state(o->dsml) : DS4_DSML_OUTSIDE;
        int32_t tok = o->pick ? o->pick(o->ud, ds4_session_logits(s), e->model->hp.n_vocab) : -1;
        if (tok >= e->model->hp.n_vocab) tok = -1;
        if (tok >= 0) {
        } else if (o->ban_eos) {
            tok = ds4_engine_argmax(e, eos);
        } else {
            tok = ds4_sampler_sample(&e->sampler, ds4_session_logits(s), ds_state);
        }
        const int stop = emit(o, r, &ds, tok, eos);
        if (tok == eos) {
            r->stop = DS4_STOP_EOS;
            break;
        }
        if ((rc = ds4_session_decode(s, tok, err)) != 0) break;
        if (stop) {
            r->stop = DS4_STOP_CALLBACK;
            break;
        }
    }
done:;
    size_t len = 0;
    const char *rest = ds4_detok_flush(&ds, &len);
    if (len && o->on_token) o->on_token(o->ud, -1, rest, len);
    ds4_detok_free(&ds);
    r->seconds = ds4_now() - t0;
    return rc;
}
