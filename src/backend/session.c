/* ds4 — session driver common to every backend (see backend.h). */
#include "backend/backend.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void ds4_session_opts_default(ds4_session_opts *o) {
    memset(o, 0, sizeof(*o));
    o->fp8_kv = -1;
    o->fp4_indexer = -1;
    o->kv_type = DS4_KV_DEFAULT;
}

static bool resolve(int v, bool oracle) { return v < 0 ? !oracle : v != 0; }

/* The prefill chunk asked for: the option, else $DS4_PREFILL_CHUNK; 0 when
 * neither is set (the backend picks); -1 with err set when invalid. */
static int requested_chunk(const ds4_session_opts *opts, ds4_err *err) {
    int chunk = opts->prefill_chunk;
    const char *source = "--prefill-chunk";
    if (chunk < 0) {
        ds4_errf(err, "prefill chunk %d: must be positive", chunk);
        return -1;
    }
    const char *env = getenv("DS4_PREFILL_CHUNK");
    if (chunk == 0 && env && *env) {
        char *end = NULL;
        errno = 0;
        const long v = strtol(env, &end, 10);
        if (errno || *end || v < 1 || v > INT32_MAX) {
            ds4_errf(err, "DS4_PREFILL_CHUNK='%s': must be a positive integer", env);
            return -1;
        }
        chunk = (int)v;
        source = "DS4_PREFILL_CHUNK";
    }
    const char *unsafe = getenv("DS4_ALLOW_UNSAFE_PREFILL_CHUNK");
    if (chunk > DS4_MAX_SAFE_PREFILL_CHUNK && !(unsafe && *unsafe && strcmp(unsafe, "0") != 0)) {
        ds4_errf(err,
                 "prefill chunk %d (from %s) is above %d, the largest validated size; "
                 "set DS4_ALLOW_UNSAFE_PREFILL_CHUNK=1 to use it anyway",
                 chunk, source, DS4_MAX_SAFE_PREFILL_CHUNK);
        return -1;
    }
    return chunk;
}

ds4_session *ds4_session_create(ds4_model *m, const ds4_session_opts *opts, ds4_err *err) {
    const ds4_hparams *hp = &m->hp;
    if (opts->ctx < 1) {
        ds4_errf(err, "context size %d: must be at least 1", opts->ctx);
        return NULL;
    }
    int chunk = requested_chunk(opts, err);
    if (chunk < 0) return NULL;
    const ds4_backend_ops *ops = NULL;
    switch (opts->backend) {
    case DS4_BACKEND_CPU: ops = &ds4_cpu_backend; break;
    case DS4_BACKEND_CUDA:
        ops = ds4_cuda_backend();
        if (!ops) {
            ds4_errf(err, "this build has no CUDA backend (build with `make cuda`)");
            return NULL;
        }
        break;
    case DS4_BACKEND_AUTO: ops = ds4_cuda_available() ? ds4_cuda_backend() : &ds4_cpu_backend; break;
    default: ds4_errf(err, "unknown backend %d", (int)opts->backend); return NULL;
    }
    if (chunk == 0) chunk = ops->default_chunk ? ops->default_chunk(m, opts->ctx) : DS4_DEFAULT_PREFILL_CHUNK;
    if (chunk > opts->ctx) chunk = opts->ctx;
    ds4_session *s = calloc(1, sizeof(*s));
    if (!s) {
        ds4_errf(err, "out of memory");
        return NULL;
    }
    s->model = m;
    s->ops = ops;
    s->opts = *opts;
    s->opts.prefill_chunk = chunk;
    s->fp8_kv = resolve(opts->fp8_kv, opts->oracle);
    s->fp4_indexer = resolve(opts->fp4_indexer, opts->oracle);
    s->kv_type = opts->kv_type != DS4_KV_DEFAULT ? opts->kv_type : opts->oracle ? DS4_KV_F32 : DS4_KV_F16;
    if (s->kv_type < DS4_KV_F32 || s->kv_type > DS4_KV_FP8) {
        ds4_errf(err, "unknown KV cache type %d", (int)s->kv_type);
        free(s);
        return NULL;
    }
    if (s->kv_type == DS4_KV_FP8 && (!s->fp8_kv || !s->fp4_indexer)) {
        ds4_errf(err, "the fp8 KV cache stores the FP8 / FP4 codes of the rows, so it needs the FP8 KV and FP4 "
                      "indexer simulations on (not oracle mode); use --kv-type f32, f16 or bf16 there");
        free(s);
        return NULL;
    }
    if (s->fp8_kv && (hp->head_dim - hp->rope_dim) % 64 != 0) {
        ds4_errf(err, "the FP8 KV simulation needs (key_length - rope dims) to be a multiple of 64 (%d - %d); "
                      "use oracle mode or switch it off",
                 hp->head_dim, hp->rope_dim);
        free(s);
        return NULL;
    }
    if (s->fp4_indexer && (hp->idx_dim % 32 != 0 || (hp->idx_dim & (hp->idx_dim - 1)) != 0)) {
        ds4_errf(err, "the FP4 indexer simulation needs a power-of-two indexer head size that is a multiple of 32 (got %d)",
                 hp->idx_dim);
        free(s);
        return NULL;
    }
    s->state = ds4_state_create(hp, opts->ctx, chunk, err);
    if (!s->state) {
        free(s);
        return NULL;
    }
    if (s->ops->init(s, err) != 0) {
        ds4_state_free(s->state);
        free(s);
        return NULL;
    }
    return s;
}

void ds4_session_free(ds4_session *s) {
    if (!s) return;
    if (s->ops) s->ops->destroy(s);
    ds4_state_free(s->state);
    free(s);
}

static int check_tokens(ds4_session *s, const int32_t *tokens, int n, ds4_err *err) {
    if (s->chain_on) return ds4_errf(err, "internal error: evaluating while a chained decode runs");
    if (n < 0) return ds4_errf(err, "negative token count");
    const int have = s->state->n_tokens;
    if ((int64_t)have + n > s->state->ctx)
        return ds4_errf(err, "%d tokens do not fit: the session holds %d of its %d-token context", n, have, s->state->ctx);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= s->model->hp.n_vocab)
            return ds4_errf(err, "token id %d at index %d is outside the vocabulary [0, %d)", tokens[i], i,
                            s->model->hp.n_vocab);
    return 0;
}

int ds4_session_eval(ds4_session *s, const int32_t *tokens, int n, float *all_logits, ds4_err *err) {
    if (check_tokens(s, tokens, n, err) != 0) return -1;
    const int P = s->state->chunk;
    const int64_t V = s->model->hp.n_vocab;
    int done = 0;
    while (done < n) {
        /* Chunk boundaries sit at absolute multiples of P. */
        const int pos = s->state->n_tokens;
        int len = P - pos % P;
        if (len > n - done) len = n - done;
        if (s->ops->eval(s, tokens + done, len, all_logits ? all_logits + (size_t)done * V : NULL, err) != 0) return -1;
        done += len;
        if (s->opts.progress && s->opts.progress(s->opts.progress_ud, done, n) != 0 && done < n) return 1;
    }
    return 0;
}

int ds4_session_decode(ds4_session *s, int32_t token, ds4_err *err) {
    if (check_tokens(s, &token, 1, err) != 0) return -1;
    return s->ops->eval(s, &token, 1, NULL, err);
}

/* ---------------------------------------------------------------- chained greedy decoding */

int ds4_session_chain_begin(ds4_session *s, int32_t token, int32_t exclude, int32_t stop_token, ds4_err *err) {
    if (s->chain_on) return ds4_errf(err, "internal error: a chain is already running");
    if (token == stop_token) return ds4_errf(err, "internal error: a chain fed its stop token first");
    if (!s->ops->chain_begin) return 1;
    if (check_tokens(s, &token, 1, err) != 0) return -1;
    const int rc = s->ops->chain_begin(s, token, exclude, stop_token, err);
    if (rc != 0) return rc;
    s->chain_on = true;
    s->chain_queued = 1;
    s->chain_stopped = false;
    s->chain_stop = stop_token;
    return 0;
}

int ds4_session_chain_queue(ds4_session *s, ds4_err *err) {
    if (!s->chain_on || s->chain_queued < 1 || s->chain_queued >= 2)
        return ds4_errf(err, "internal error: chain_queue with %d steps queued", s->chain_queued);
    if (s->chain_stopped) return ds4_errf(err, "internal error: chain_queue after the stop token was picked");
    if ((int64_t)s->state->n_tokens + s->chain_queued >= s->state->ctx)
        return ds4_errf(err, "the next token does not fit: the session holds %d of its %d-token context",
                        s->state->n_tokens + s->chain_queued, s->state->ctx);
    if (s->ops->chain_queue(s, err) != 0) return -1;
    s->chain_queued++;
    return 0;
}

int ds4_session_chain_wait(ds4_session *s, int32_t *picked, ds4_err *err) {
    if (!s->chain_on || s->chain_queued < 1) return ds4_errf(err, "internal error: chain_wait with nothing queued");
    /* the step after a stop pick was fed the stop token: only end drops it */
    if (s->chain_stopped) return ds4_errf(err, "internal error: chain_wait on the step fed the stop token");
    if (s->ops->chain_wait(s, picked, err) != 0) return -1;
    s->chain_queued--;
    if (s->chain_stop >= 0 && *picked == s->chain_stop) s->chain_stopped = true;
    return 0;
}

int ds4_session_chain_end(ds4_session *s, ds4_err *err) {
    if (!s->chain_on) return 0;
    s->chain_on = false;
    s->chain_queued = 0;
    return s->ops->chain_end(s, err);
}

const float *ds4_session_logits(const ds4_session *s) { return s->state->has_logits ? s->state->logits : NULL; }
int ds4_session_n_tokens(const ds4_session *s) { return s->state->n_tokens; }
const int32_t *ds4_session_tokens(const ds4_session *s) { return s->state->tokens; }
int ds4_session_ctx(const ds4_session *s) { return s->state->ctx; }
int ds4_session_chunk(const ds4_session *s) { return s->state->chunk; }
const char *ds4_session_backend_name(const ds4_session *s) { return s->ops->name; }

void ds4_session_set_progress(ds4_session *s, ds4_progress_fn fn, void *ud) {
    s->opts.progress = fn;
    s->opts.progress_ud = ud;
}

/* Save, snapshot and load need the session between two tokens. */
static int chain_idle(const ds4_session *s, ds4_err *err) {
    return s->chain_on ? ds4_errf(err, "internal error: the session is in the middle of a chained decode") : 0;
}

void ds4_session_reset(ds4_session *s) {
    if (s->chain_on) ds4_session_chain_end(s, NULL); /* nothing may still run on the state */
    ds4_state_reset(s->state);
    if (s->ops->push_state) s->ops->push_state(s, NULL);
}

size_t ds4_session_payload_size(ds4_session *s) { return ds4_state_payload_size(s->state); }

int ds4_session_save(ds4_session *s, uint8_t *buf, size_t cap, ds4_err *err) {
    if (chain_idle(s, err) != 0) return -1;
    if (s->ops->pull_state && s->ops->pull_state(s, err) != 0) return -1;
    return ds4_state_save(s->state, buf, cap, err);
}

int ds4_session_snapshot(ds4_session *s, uint8_t **out, size_t *len, ds4_err *err) {
    if (chain_idle(s, err) != 0) return -1;
    if (s->ops->pull_state && s->ops->pull_state(s, err) != 0) return -1;
    const size_t n = ds4_state_payload_size(s->state);
    uint8_t *buf = malloc(n);
    if (!buf) return ds4_errf(err, "out of memory for a %zu-byte snapshot", n);
    if (ds4_state_save(s->state, buf, n, err) != 0) {
        free(buf);
        return -1;
    }
    *out = buf;
    *len = n;
    return 0;
}

int ds4_session_load(ds4_session *s, const uint8_t *buf, size_t len, ds4_err *err) {
    if (chain_idle(s, err) != 0) return -1;
    const int rc = ds4_state_load(s->state, buf, len, err);
    if (s->ops->push_state && s->ops->push_state(s, rc == 0 ? err : NULL) != 0) return -1;
    return rc;
}
