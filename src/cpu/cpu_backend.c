/* ds4 — CPU backend: session context, batch driver, hyper-connections, head. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_internal.h"
#include "cpu/ops.h"
#include "gguf/quant.h"

/* ------------------------------------------------------------------ allocation */

static float *falloc(size_t n, bool *ok) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    if (!p) *ok = false;
    return p;
}

static void cpu_destroy(ds4_session *s) {
    cpu_ctx *c = s->impl;
    if (!c) return;
    float *bufs[] = {c->H, c->a, c->qr, c->hc_pre, c->hc_post, c->hc_M, c->ck, c->cg, c->ik, c->ig,
                     c->flat, c->mix, c->kvb, c->q, c->o, c->low, c->y, c->iq, c->iw, c->scores,
                     c->router, c->route_w, c->ffn_y, c->ex, c->eg, c->eu, c->shg, c->shu, c->z};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) free(bufs[i]);
    free(c->freq_main);
    free(c->freq_cmp);
    free(c->sel);
    free(c->n_sel);
    free(c->route_e);
    free(c->ex_tok);
    if (c->att)
        for (int i = 0; i < ds4_pool_threads(c->pool); i++) free(c->att[i]);
    if (c->tmp)
        for (int i = 0; i < ds4_pool_threads(c->pool); i++) free(c->tmp[i]);
    free(c->att);
    free(c->tmp);
    ds4_matmul_ctx_free(&c->mm);
    ds4_pool_destroy(c->pool);
    free(c);
    s->impl = NULL;
}

static int cpu_init(ds4_session *s, ds4_err *err) {
    const ds4_hparams *hp = &s->model->hp;
    cpu_ctx *c = calloc(1, sizeof(*c));
    if (!c) return ds4_errf(err, "out of memory");
    s->impl = c;
    c->sess = s;
    c->hp = hp;
    c->w = &s->model->w;
    c->st = s->state;
    c->max_batch = s->state->chunk;
    c->pool = ds4_pool_create(s->opts.n_threads);
    if (!c->pool) goto oom;
    const int nt = ds4_pool_threads(c->pool);
    const int64_t D = hp->n_embd, HCD = (int64_t)hp->n_hc * D, QD = (int64_t)hp->n_head * hp->head_dim;
    int64_t max_k = HCD;
    const int64_t ks[] = {D, hp->q_lora, QD / hp->o_groups, (int64_t)hp->o_groups * hp->o_lora, hp->n_ff};
    for (size_t i = 0; i < sizeof(ks) / sizeof(ks[0]); i++)
        if (ks[i] > max_k) max_k = ks[i];
    if (ds4_matmul_ctx_init(&c->mm, c->pool, max_k) != 0) goto oom;

    bool ok = true;
    const size_t B = (size_t)c->max_batch, SB = DS4_CPU_SUB_BATCH, HC = (size_t)hp->n_hc;
    const size_t NU = (size_t)hp->n_expert_used;
    c->n_pairs = hp->rope_dim / 2;
    c->freq_main = malloc(sizeof(double) * (size_t)c->n_pairs);
    c->freq_cmp = malloc(sizeof(double) * (size_t)c->n_pairs);
    if (!c->freq_main || !c->freq_cmp) goto oom;
    ds4_rope_freqs(hp, false, c->freq_main);
    ds4_rope_freqs(hp, true, c->freq_cmp);

    c->H = falloc(B * (size_t)HCD, &ok);
    c->a = falloc(B * (size_t)D, &ok);
    c->qr = falloc(B * (size_t)hp->q_lora, &ok);
    c->hc_pre = falloc(B * HC, &ok);
    c->hc_post = falloc(B * HC, &ok);
    c->hc_M = falloc(B * HC * HC, &ok);
    c->ck = falloc(B * 2 * (size_t)hp->head_dim, &ok);
    c->cg = falloc(B * 2 * (size_t)hp->head_dim, &ok);
    c->ik = falloc(B * 2 * (size_t)hp->idx_dim, &ok);
    c->ig = falloc(B * 2 * (size_t)hp->idx_dim, &ok);
    c->flat = falloc(SB * (size_t)HCD, &ok);
    c->mix = falloc(SB * (size_t)ds4_hc_mix(hp), &ok);
    c->kvb = falloc(SB * (size_t)hp->head_dim, &ok);
    c->q = falloc(SB * (size_t)QD, &ok);
    c->o = falloc(SB * (size_t)QD, &ok);
    c->low = falloc(SB * (size_t)hp->o_groups * hp->o_lora, &ok);
    c->y = falloc(SB * (size_t)D, &ok);
    c->iq = falloc(SB * (size_t)hp->idx_heads * hp->idx_dim, &ok);
    c->iw = falloc(SB * (size_t)hp->idx_heads, &ok);
    c->scores = falloc(SB * (size_t)(s->state->comp_cap_max + 1), &ok);
    c->sel = malloc(SB * (size_t)hp->idx_topk * sizeof(int32_t));
    c->n_sel = malloc(SB * sizeof(int));
    c->router = falloc(SB * (size_t)hp->n_expert, &ok);
    c->route_e = malloc(B * NU * sizeof(int32_t));
    c->route_w = falloc(B * NU, &ok);
    c->ffn_y = falloc(B * (size_t)D, &ok);
    /* an expert's rows are gathered up to this many at a time (one pass over
     * its weights per gather; a batch rarely sends more tokens to one expert) */
    c->gather_cap = (int)(B * NU < 4096 ? B * NU : 4096);
    c->ex = falloc((size_t)c->gather_cap * (size_t)D, &ok);
    c->eg = falloc((size_t)c->gather_cap * (size_t)hp->n_ff, &ok);
    c->eu = falloc((size_t)c->gather_cap * (size_t)hp->n_ff, &ok);
    c->ex_tok = malloc((size_t)c->gather_cap * sizeof(int32_t));
    c->shg = falloc(SB * (size_t)hp->n_ff, &ok);
    c->shu = falloc(SB * (size_t)hp->n_ff, &ok);
    c->z = falloc(SB * (size_t)D, &ok);
    c->att = calloc((size_t)nt, sizeof(float *));
    c->tmp = calloc((size_t)nt, sizeof(float *));
    if (!ok || !c->sel || !c->n_sel || !c->route_e || !c->ex_tok || !c->att || !c->tmp) goto oom;
    int64_t tmp_n = 4 * (int64_t)hp->head_dim + 4 * (int64_t)hp->idx_dim + D + hp->n_expert;
    for (int i = 0; i < nt; i++) {
        c->att[i] = falloc((size_t)hp->window + (size_t)s->state->comp_cap_max + 1, &ok);
        c->tmp[i] = falloc((size_t)tmp_n, &ok);
    }
    if (!ok) goto oom;
    return 0;
oom:
    cpu_destroy(s);
    return ds4_errf(err, "out of memory allocating CPU work buffers (prefill chunk %d)", s->state->chunk);
}

/* ------------------------------------------------------------------ hyper-connections */

typedef struct hc_job {
    cpu_ctx *c;
    int t0;
    const float *scale, *base, *norm;
    bool head; /* output HC head: no post/comb, different layout */
} hc_job;

static void hc_flat_range(void *ctx, int64_t b, int64_t e, int thread) {
    hc_job *j = ctx;
    cpu_ctx *c = j->c;
    const int64_t HCD = (int64_t)c->hp->n_hc * c->hp->n_embd;
    for (int64_t i = b; i < e; i++) ds4_rmsnorm(c->H + (j->t0 + i) * HCD, NULL, (int)HCD, c->hp->rms_eps, c->flat + i * HCD);
}

static void hc_collapse_range(void *ctx, int64_t b, int64_t e, int thread) {
    hc_job *j = ctx;
    cpu_ctx *c = j->c;
    const ds4_hparams *hp = c->hp;
    const int HC = hp->n_hc, D = hp->n_embd, MIX = ds4_hc_mix(hp);
    for (int64_t i = b; i < e; i++) {
        const int64_t t = j->t0 + i;
        float *pre = c->hc_pre + t * HC, *post = c->hc_post + t * HC, *M = c->hc_M + t * HC * HC;
        ds4_hc_split(c->mix + i * MIX, j->scale, j->base, HC, hp->sinkhorn_iters, hp->hc_eps, pre, post, M);
        const float *H = c->H + t * (int64_t)HC * D;
        float *x = c->a + t * D;
        for (int d = 0; d < D; d++) {
            float acc = 0.0f;
            for (int s = 0; s < HC; s++) acc += pre[s] * H[(int64_t)s * D + d];
            x[d] = acc;
        }
        ds4_rmsnorm(x, j->norm, D, hp->rms_eps, x);
    }
}

void ds4_cpu_hc_pre(cpu_ctx *c, const ds4_tensor *fn, const ds4_tensor *scale, const ds4_tensor *base,
                    const ds4_tensor *norm, int t0, int m) {
    const int64_t HCD = (int64_t)c->hp->n_hc * c->hp->n_embd;
    hc_job j = {c, t0, f32_data(scale), f32_data(base), f32_data(norm), false};
    ds4_pool_for(c->pool, m, 1, hc_flat_range, &j);
    ds4_matmul(&c->mm, fn, 0, ds4_hc_mix(c->hp), c->flat, HCD, m, c->mix, ds4_hc_mix(c->hp));
    ds4_pool_for(c->pool, m, 1, hc_collapse_range, &j);
}

typedef struct post_job {
    cpu_ctx *c;
    int t0;
    const float *y;
} post_job;

static void hc_post_range(void *ctx, int64_t b, int64_t e, int thread) {
    post_job *j = ctx;
    cpu_ctx *c = j->c;
    const int HC = c->hp->n_hc, D = c->hp->n_embd;
    for (int64_t i = b; i < e; i++) {
        const int64_t t = j->t0 + i;
        const float *post = c->hc_post + t * HC, *M = c->hc_M + t * HC * HC, *y = j->y + i * D;
        float *H = c->H + t * (int64_t)HC * D;
        for (int d = 0; d < D; d++) {
            float in[64];
            for (int s = 0; s < HC; s++) in[s] = H[(int64_t)s * D + d];
            for (int jj = 0; jj < HC; jj++) {
                float acc = post[jj] * y[d];
                for (int s = 0; s < HC; s++) acc += M[s * HC + jj] * in[s];
                H[(int64_t)jj * D + d] = acc;
            }
        }
    }
}

void ds4_cpu_hc_post(cpu_ctx *c, int t0, int m, const float *y) {
    post_job j = {c, t0, y};
    ds4_pool_for(c->pool, m, 1, hc_post_range, &j);
}

/* ------------------------------------------------------------------ embedding and head */

typedef struct embd_job {
    cpu_ctx *c;
} embd_job;

static void embd_range(void *ctx, int64_t b, int64_t e, int thread) {
    embd_job *j = ctx;
    cpu_ctx *c = j->c;
    const int HC = c->hp->n_hc, D = c->hp->n_embd;
    for (int64_t t = b; t < e; t++) {
        float *H = c->H + t * (int64_t)HC * D;
        ds4_tensor_row(&c->w->token_embd, c->tok[t], H);
        for (int s = 1; s < HC; s++) memcpy(H + (int64_t)s * D, H, sizeof(float) * (size_t)D);
    }
}

typedef struct head_job {
    cpu_ctx *c;
    int t0;
} head_job;

static void head_collapse_range(void *ctx, int64_t b, int64_t e, int thread) {
    head_job *j = ctx;
    cpu_ctx *c = j->c;
    const ds4_hparams *hp = c->hp;
    const int HC = hp->n_hc, D = hp->n_embd;
    const float sc = f32_data(&c->w->output_hc_scale)[0];
    const float *base = f32_data(&c->w->output_hc_base);
    for (int64_t i = b; i < e; i++) {
        const float *H = c->H + (j->t0 + i) * (int64_t)HC * D;
        float wts[64];
        for (int s = 0; s < HC; s++) wts[s] = ds4_sigmoid(c->mix[i * HC + s] * sc + base[s]) + hp->hc_eps;
        float *z = c->z + i * D;
        for (int d = 0; d < D; d++) {
            float acc = 0.0f;
            for (int s = 0; s < HC; s++) acc += wts[s] * H[(int64_t)s * D + d];
            z[d] = acc;
        }
        ds4_rmsnorm(z, f32_data(&c->w->output_norm), D, hp->rms_eps, z);
    }
}

/* Logits of batch tokens [t0, t0+m) into out rows (stride n_vocab). */
static void output_head(cpu_ctx *c, int t0, int m, float *out) {
    const ds4_hparams *hp = c->hp;
    const int64_t HCD = (int64_t)hp->n_hc * hp->n_embd;
    hc_job hj = {c, t0, NULL, NULL, NULL, true};
    ds4_pool_for(c->pool, m, 1, hc_flat_range, &hj);
    ds4_matmul(&c->mm, &c->w->output_hc_fn, 0, hp->n_hc, c->flat, HCD, m, c->mix, hp->n_hc);
    head_job j = {c, t0};
    ds4_pool_for(c->pool, m, 1, head_collapse_range, &j);
    ds4_matmul(&c->mm, &c->w->output, 0, hp->n_vocab, c->z, hp->n_embd, m, out, hp->n_vocab);
}

/* ------------------------------------------------------------------ batch driver */

static int cpu_eval(ds4_session *s, const int32_t *tokens, int n, float *all_logits, ds4_err *err) {
    cpu_ctx *c = s->impl;
    ds4_state *st = s->state;
    if (n < 1 || n > c->max_batch) return ds4_errf(err, "internal error: batch of %d tokens (chunk %d)", n, c->max_batch);
    c->n = n;
    c->p0 = st->n_tokens;
    c->tok = tokens;
    embd_job ej = {c};
    ds4_pool_for(c->pool, n, 1, embd_range, &ej);
    for (int il = 0; il < c->hp->n_layer; il++) {
        ds4_cpu_attention_layer(c, il);
        ds4_cpu_ffn_layer(c, il);
    }
    const int64_t V = c->hp->n_vocab;
    if (all_logits) {
        for (int t0 = 0; t0 < n; t0 += DS4_CPU_SUB_BATCH) {
            const int m = n - t0 < DS4_CPU_SUB_BATCH ? n - t0 : DS4_CPU_SUB_BATCH;
            output_head(c, t0, m, all_logits + (size_t)t0 * V);
        }
        memcpy(st->logits, all_logits + (size_t)(n - 1) * V, sizeof(float) * (size_t)V);
    } else {
        output_head(c, n - 1, 1, st->logits);
    }
    memcpy(st->tokens + st->n_tokens, tokens, sizeof(int32_t) * (size_t)n);
    st->n_tokens += n;
    st->has_logits = true;
    return 0;
}

static size_t cpu_memory(const ds4_session *s) { return ds4_state_memory_bytes(s->state); }

/* A state loaded from a snapshot (or reset) becomes the CPU's working state
 * as it is, so its rows are put into the session's KV format here: one
 * written under another --kv-type, or with f32 rows, holds values this
 * cache cannot (CUDA encodes them when it pushes). Rows already in the
 * format stay as they are; ring slots no position reached are zeros. */
static int cpu_push(ds4_session *s, ds4_err *err) {
    (void)err;
    ds4_state *st = s->state;
    const ds4_row_fmt fa = ds4_kv_attn_fmt(s->kv_type), fi = ds4_kv_index_fmt(s->kv_type);
    if (fa == DS4_ROW_F32 && fi == DS4_ROW_F32) return 0;
    const int hd = st->head_dim, id = st->idx_dim, nope = hd - s->model->hp.rope_dim;
    const int n_raw = st->n_tokens < st->raw_cap ? st->n_tokens : st->raw_cap;
    for (int il = 0; il < st->n_layer; il++) {
        ds4_layer_state *ls = &st->layers[il];
        for (int r = 0; r < n_raw; r++) ds4_kvrow_round(fa, ls->raw + (size_t)r * hd, hd, nope);
        for (uint32_t r = 0; ls->comp && r < ls->n_comp; r++) ds4_kvrow_round(fa, ls->comp + (size_t)r * hd, hd, nope);
        for (uint32_t r = 0; ls->idx && r < ls->n_idx; r++) ds4_kvrow_round(fi, ls->idx + (size_t)r * id, id, 0);
    }
    return 0;
}

const ds4_backend_ops ds4_cpu_backend = {
    .name = "cpu",
    .init = cpu_init,
    .destroy = cpu_destroy,
    .eval = cpu_eval,
    .pull_state = NULL,
    .push_state = cpu_push,
    .memory_bytes = cpu_memory,
};
