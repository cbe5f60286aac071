/* ds4 — CPU MoE sublayer: HC pre, router (sqrt-softplus, hash or biased
 * top-k), routed experts grouped by expert, shared expert, HC post.
 * MODEL.md §9. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_internal.h"
#include "cpu/ops.h"

typedef struct ffn_job {
    cpu_ctx *c;
    int il, t0, m;
    int64_t rows; /* gathered (token, slot) rows */
} ffn_job;

/* Router: scores, selection (hash table or biased top-k with ties to the lower
 * expert id), weights normalized over the selected unbiased scores x scale. */
static void route_range(void *ctx, int64_t b, int64_t e, int thread) {
    ffn_job *j = ctx;
    cpu_ctx *c = j->c;
    const ds4_hparams *hp = c->hp;
    const ds4_layer_weights *L = &c->w->layers[j->il];
    const int E = hp->n_expert, K = hp->n_expert_used;
    const float *bias = L->exp_bias.data ? f32_data(&L->exp_bias) : NULL;
    float *sel_score = c->tmp[thread];
    for (int64_t i = b; i < e; i++) {
        float *prob = c->router + i * E;
        for (int x = 0; x < E; x++) prob[x] = sqrtf(ds4_softplus(prob[x]));
        int32_t *ids = c->route_e + i * K;
        if (ds4_layer_is_hash(hp, j->il)) {
            const int32_t *tab = (const int32_t *)L->tid2eid.data;
            const int32_t tok = c->tok[j->t0 + i];
            for (int k = 0; k < K; k++) ids[k] = tab[(int64_t)tok * K + k];
        } else {
            for (int x = 0; x < E; x++) sel_score[x] = prob[x] + (bias ? bias[x] : 0.0f);
            for (int k = 0; k < K; k++) {
                int best = -1;
                for (int x = 0; x < E; x++)
                    if (sel_score[x] != -INFINITY && (best < 0 || sel_score[x] > sel_score[best])) best = x;
                if (best < 0) best = 0; /* unreachable with finite scores */
                ids[k] = best;
                sel_score[best] = -INFINITY;
            }
        }
        float sum = 0.0f;
        for (int k = 0; k < K; k++) sum += prob[ids[k]];
        if (sum < 6.103515625e-5f) sum = 6.103515625e-5f;
        for (int k = 0; k < K; k++) c->route_w[i * K + k] = prob[ids[k]] / sum * hp->expert_scale;
    }
}

/* h = silu(min(g, L)) * clamp(u, -L, L) * w, in place into g. */
static void swiglu_range(void *ctx, int64_t b, int64_t e, int thread) {
    ffn_job *j = ctx;
    cpu_ctx *c = j->c;
    const int FF = c->hp->n_ff;
    const float lim = c->hp->swiglu_clamp[j->il];
    for (int64_t r = b; r < e; r++) {
        float *g = c->eg + r * FF;
        const float *u = c->eu + r * FF;
        const float wgt = c->route_w[c->ex_tok[r]]; /* ex_tok = token * K + slot */
        for (int k = 0; k < FF; k++) {
            const float gg = g[k] < lim ? g[k] : lim;
            const float uu = u[k] > lim ? lim : u[k] < -lim ? -lim : u[k];
            g[k] = ds4_silu(gg) * uu * wgt;
        }
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
        for (int k = 0; k < FF; k++) {
            const float gg = g[k] < lim ? g[k] : lim;
            const float uu = u[k] > lim ? lim : u[k] < -lim ? -lim : u[k];
            g[k] = ds4_silu(gg) * uu;
        }
    }
}

/* y = sum over slots in slot order, then + shared expert output (in c->y). */
static void combine_range(void *ctx, int64_t b, int64_t e, int thread) {
    ffn_job *j = ctx;
    cpu_ctx *c = j->c;
    const int D = c->hp->n_embd, K = c->hp->n_expert_used;
    for (int64_t i = b; i < e; i++) {
        float *y = c->y + i * D;
        const float *eo = c->eout + i * K * D;
        for (int d = 0; d < D; d++) {
            float acc = eo[d];
            for (int k = 1; k < K; k++) acc += eo[(int64_t)k * D + d];
            y[d] = acc + y[d];
        }
    }
}

void ds4_cpu_ffn_layer(cpu_ctx *c, int il) {
    const ds4_hparams *hp = c->hp;
    const ds4_layer_weights *L = &c->w->layers[il];
    const int64_t D = hp->n_embd, FF = hp->n_ff;
    const int K = hp->n_expert_used, E = hp->n_expert, SB = DS4_CPU_SUB_BATCH;
    for (int t0 = 0; t0 < c->n; t0 += SB) {
        const int m = c->n - t0 < SB ? c->n - t0 : SB;
        ds4_cpu_hc_pre(c, &L->hc_ffn_fn, &L->hc_ffn_scale, &L->hc_ffn_base, &L->ffn_norm, t0, m);
        const float *f = c->a + t0 * D;
        ffn_job j = {c, il, t0, m, 0};
        ds4_matmul(&c->mm, &L->gate_inp, 0, E, f, D, m, c->router, E);
        ds4_pool_for(c->pool, m, 1, route_range, &j);

        /* group (token, slot) pairs by expert, experts in ascending order */
        for (int x = 0; x < E; x++) {
            int64_t first = j.rows;
            for (int i = 0; i < m; i++)
                for (int k = 0; k < K; k++)
                    if (c->route_e[i * K + k] == x) {
                        c->ex_tok[j.rows] = i * K + k;
                        memcpy(c->ex + j.rows * D, f + (int64_t)i * D, sizeof(float) * (size_t)D);
                        j.rows++;
                    }
            const int cnt = (int)(j.rows - first);
            if (cnt == 0) continue;
            ds4_matmul(&c->mm, &L->gate_exps, (int64_t)x * FF, FF, c->ex + first * D, D, cnt, c->eg + first * FF, FF);
            ds4_matmul(&c->mm, &L->up_exps, (int64_t)x * FF, FF, c->ex + first * D, D, cnt, c->eu + first * FF, FF);
        }
        ds4_pool_for(c->pool, j.rows, 1, swiglu_range, &j);
        /* down projections, written to each (token, slot) output row */
        for (int64_t r0 = 0; r0 < j.rows;) {
            const int x = c->route_e[c->ex_tok[r0]];
            int64_t r1 = r0 + 1;
            while (r1 < j.rows && c->route_e[c->ex_tok[r1]] == x) r1++;
            /* outputs of consecutive rows go to scattered slots: compute into ex, then scatter */
            ds4_matmul(&c->mm, &L->down_exps, (int64_t)x * D, D, c->eg + r0 * FF, FF, (int)(r1 - r0), c->ex + r0 * D, D);
            r0 = r1;
        }
        for (int64_t r = 0; r < j.rows; r++)
            memcpy(c->eout + (int64_t)c->ex_tok[r] * D, c->ex + r * D, sizeof(float) * (size_t)D);

        /* shared expert */
        ds4_matmul(&c->mm, &L->gate_sh, 0, FF, f, D, m, c->shg, FF);
        ds4_matmul(&c->mm, &L->up_sh, 0, FF, f, D, m, c->shu, FF);
        ds4_pool_for(c->pool, m, 1, shared_swiglu_range, &j);
        ds4_matmul(&c->mm, &L->down_sh, 0, D, c->shg, FF, m, c->y, D);
        ds4_pool_for(c->pool, m, 1, combine_range, &j);
        ds4_cpu_hc_post(c, t0, m, c->y);
    }
}
