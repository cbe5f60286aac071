/* ds4 — CPU MoE sublayer: HC pre, router (sqrt-softplus, hash or biased
 * top-k), routed experts grouped by expert over the whole batch, shared
 * expert, HC post. MODEL.md §9.
 *
 * Summation order (part of the numerics contract, identical for decode and
 * any prefill batch): y = (sum of the routed expert outputs in ascending
 * expert id, a repeated id in slot order) + shared expert output. Grouping by
 * expert over the whole batch means each expert's weights are dequantized
 * once per batch, not once per token. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_internal.h"
#include "cpu/ops.h"

typedef struct ffn_job {
    cpu_ctx *c;
    int il, t0;
    int64_t rows; /* gathered (token, slot) rows */
} ffn_job;

/* Router of tokens [t0, t0+m): scores, selection (hash table or biased top-k
 * with ties to the lower expert id), weights normalized over the selected
 * unbiased scores x scale. Logits come in c->router (sub-batch rows). */
static void route_range(void *ctx, int64_t b, int64_t e, int thread) {
    ffn_job *j = ctx;
    cpu_ctx *c = j->c;
    const ds4_hparams *hp = c->hp;
    const ds4_layer_weights *L = &c->w->layers[j->il];
    const int E = hp->n_expert, K = hp->n_expert_used;
    const float *bias = L->exp_bias.data ? f32_data(&L->exp_bias) : NULL;
    float *sel_score = c->tmp[thread];
    for (int64_t i = b; i < e; i++) {
        const int64_t t = j->t0 + i;
        float *prob = c->router + i * E;
        for (int x = 0; x < E; x++) prob[x] = sqrtf(ds4_softplus(prob[x]));
        const int32_t *hash = ds4_layer_is_hash(hp, j->il) ? (const int32_t *)L->tid2eid.data + (int64_t)c->tok[t] * K
                                                           : NULL;
        ds4_route_pick(prob, bias, E, K, hash, hp->expert_scale, sel_score, c->route_e + t * K, c->route_w + t * K);
    }
}

static inline float swiglu(float g, float u, float lim) {
    const float gg = g < lim ? g : lim;
    const float uu = u > lim ? lim : u < -lim ? -lim : u;
    return ds4_silu(gg) * uu;
}

/* h = silu(min(g, L)) * clamp(u, -L, L) * route weight, in place into eg. */
static void routed_swiglu_range(void *ctx, int64_t b, int64_t e, int thread) {
    ffn_job *j = ctx;
    cpu_ctx *c = j->c;
    const int FF = c->hp->n_ff;
    const float lim = c->hp->swiglu_clamp[j->il];
    for (int64_t r = b; r < e; r++) {
        float *g = c->eg + r * FF;
        const float *u = c->eu + r * FF;
        const float wgt = c->route_w[c->ex_tok[r]]; /* ex_tok = token * K + slot */
        for (int k = 0; k < FF; k++) g[k] = swiglu(g[k], u[k], lim) * wgt;
    }
}

static void shared_swiglu_range(void *ctx, int64_t b, int64_t e, int thread) {
    ffn_job *j = ctx;
    cpu_ctx *c = j->c;
    const int FF = c->hp->n_ff;
    const float lim = c->hp->swiglu_clamp[j->il];
    for (int64_t i = b; i < e; i++) {
        float *g = c->shg + i * FF;
        const float *u = c->shu + i * FF;
        for (int k = 0; k < FF; k++) g[k] = swiglu(g[k], u[k], lim);
    }
}

/* Add the down-projected rows of the gathered batch to their tokens' outputs,
 * in row order (rows of one token within a gather are in slot order). Rows of
 * one token are never split across threads: parallel over tokens. */
typedef struct scatter_job {
    cpu_ctx *c;
    int64_t rows;
} scatter_job;

static void scatter_range(void *ctx, int64_t b, int64_t e, int thread) {
    scatter_job *j = ctx;
    cpu_ctx *c = j->c;
    const int D = c->hp->n_embd, K = c->hp->n_expert_used;
    for (int64_t r = 0; r < j->rows; r++) {
        const int64_t t = c->ex_tok[r] / K;
        if (t < b || t >= e) continue;
        float *y = c->ffn_y + t * D;
        const float *o = c->ex + r * D;
        for (int d = 0; d < D; d++) y[d] += o[d];
    }
}

/* Run the gathered rows [0, rows) of expert x: gate/up, SwiGLU x weight, down,
 * accumulate into ffn_y. */
static void flush_expert(cpu_ctx *c, ffn_job *j, int x, int64_t rows) {
    const ds4_layer_weights *L = &c->w->layers[j->il];
    const int64_t D = c->hp->n_embd, FF = c->hp->n_ff;
    if (rows <= 0) return;
    ds4_matmul(&c->mm, &L->gate_exps, (int64_t)x * FF, FF, c->ex, D, (int)rows, c->eg, FF);
    ds4_matmul(&c->mm, &L->up_exps, (int64_t)x * FF, FF, c->ex, D, (int)rows, c->eu, FF);
    j->rows = rows;
    ds4_pool_for(c->pool, rows, 1, routed_swiglu_range, j);
    ds4_matmul(&c->mm, &L->down_exps, (int64_t)x * D, D, c->eg, FF, (int)rows, c->ex, D);
    scatter_job sj = {c, rows};
    ds4_pool_for(c->pool, c->n, 0, scatter_range, &sj);
}

void ds4_cpu_ffn_layer(cpu_ctx *c, int il) {
    const ds4_hparams *hp = c->hp;
    const ds4_layer_weights *L = &c->w->layers[il];
    const int64_t D = hp->n_embd, FF = hp->n_ff;
    const int K = hp->n_expert_used, E = hp->n_expert, SB = DS4_CPU_SUB_BATCH, n = c->n;
    ffn_job j = {c, il, 0, 0};

    /* 1. HC pre and routing of every token of the batch */
    for (int t0 = 0; t0 < n; t0 += SB) {
        const int m = n - t0 < SB ? n - t0 : SB;
        ds4_cpu_hc_pre(c, &L->hc_ffn_fn, &L->hc_ffn_scale, &L->hc_ffn_base, &L->ffn_norm, t0, m);
        ds4_matmul(&c->mm, &L->gate_inp, 0, E, c->a + (int64_t)t0 * D, D, m, c->router, E);
        j.t0 = t0;
        ds4_pool_for(c->pool, m, 1, route_range, &j);
    }

    /* 2. routed experts in ascending id, gathering their (token, slot) rows */
    memset(c->ffn_y, 0, sizeof(float) * (size_t)n * (size_t)D);
    const int64_t cap = (int64_t)c->gather_cap;
    for (int x = 0; x < E; x++) {
        int64_t rows = 0;
        for (int t = 0; t < n; t++) {
            for (int k = 0; k < K; k++) {
                if (c->route_e[t * K + k] != x) continue;
                if (rows == cap) { /* buffer full: run what is gathered, keep going */
                    flush_expert(c, &j, x, rows);
                    rows = 0;
                }
                c->ex_tok[rows] = t * K + k;
                memcpy(c->ex + rows * D, c->a + (int64_t)t * D, sizeof(float) * (size_t)D);
                rows++;
            }
        }
        flush_expert(c, &j, x, rows);
    }

    /* 3. shared expert, added last; then HC post */
    for (int t0 = 0; t0 < n; t0 += SB) {
        const int m = n - t0 < SB ? n - t0 : SB;
        const float *f = c->a + (int64_t)t0 * D;
        ds4_matmul(&c->mm, &L->gate_sh, 0, FF, f, D, m, c->shg, FF);
        ds4_matmul(&c->mm, &L->up_sh, 0, FF, f, D, m, c->shu, FF);
        ds4_pool_for(c->pool, m, 1, shared_swiglu_range, &j);
        ds4_matmul(&c->mm, &L->down_sh, 0, D, c->shg, FF, m, c->y, D);
        float *y = c->ffn_y + (int64_t)t0 * D;
        for (int64_t i = 0; i < (int64_t)m * D; i++) y[i] += c->y[i];
        ds4_cpu_hc_post(c, t0, m, y);
    }
}
