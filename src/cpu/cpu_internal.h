/* ds4 — CPU backend internals: the per-session working context.
 *
 * Evaluation of a batch of n tokens is layer-major (MODEL.md §11.1). Buffers
 * that must live for the whole batch inside a layer are sized by the prefill
 * chunk; the big per-token buffers (queries, attention outputs, MoE hidden
 * states) are sized by a sub-batch and reused, so memory stays bounded for
 * any chunk. Everything is allocated at session creation: evaluating tokens
 * allocates nothing. */
#ifndef DS4_CPU_INTERNAL_H
#define DS4_CPU_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "cpu/matmul.h"
#include "util/pool.h"

#define DS4_CPU_SUB_BATCH 128

typedef struct cpu_ctx {
    ds4_session *sess;
    const ds4_hparams *hp;
    const ds4_weights *w;
    ds4_state *st;
    ds4_pool *pool;
    ds4_matmul_ctx mm;
    int max_batch;        /* the prefill chunk */
    int n_pairs;          /* rope pairs */
    double *freq_main;    /* [n_pairs] window-only layers */
    double *freq_cmp;     /* [n_pairs] compressed layers */

    /* the batch being evaluated */
    int n;                /* tokens in the batch */
    int64_t p0;           /* position of the first */
    const int32_t *tok;

    /* batch-wide (max_batch rows) */
    float *H;             /* [n][hc*D] residual streams */
    float *a;             /* [n][D] normed sublayer input (attention input, then FFN input) */
    float *qr;            /* [n][q_lora] normed q latent */
    float *hc_pre, *hc_post, *hc_M; /* [n][hc], [n][hc], [n][hc*hc] */
    float *ck, *cg;       /* [n][2*head_dim] compressor projections */
    float *ik, *ig;       /* [n][2*idx_dim] indexer compressor projections */

    /* sub-batch (DS4_CPU_SUB_BATCH rows) */
    float *flat;          /* [sb][hc*D] */
    float *mix;           /* [sb][MIX] */
    float *kvb;           /* [sb][head_dim] */
    float *q;             /* [sb][H*head_dim] queries, then attention outputs in place */
    float *o;             /* [sb][H*head_dim] */
    float *low;           /* [sb][o_groups*o_lora] */
    float *y;             /* [sb][D] */
    float *iq;            /* [sb][idx_heads*idx_dim] */
    float *iw;            /* [sb][idx_heads] */
    float *scores;        /* [sb][comp_cap_max] indexer scores */
    int32_t *sel;         /* [sb][idx_topk] selected compressed rows, ascending */
    int *n_sel;           /* [sb] (-1: attend to every visible row) */
    float **att;          /* per thread: (window + comp_cap_max) attention weights */
    float **tmp;          /* per thread: scratch of max(D, 2*head_dim, ...) floats */
    /* MoE */
    float *router;        /* [sb][E] router logits, then scores */
    int32_t *route_e;     /* [n][n_used] selected experts (batch-wide) */
    float *route_w;       /* [n][n_used] route weights (batch-wide) */
    float *ffn_y;         /* [n][D] MoE output accumulator (batch-wide) */
    int gather_cap;       /* rows of the gather buffers */
    float *ex;            /* [gather_cap][D] gathered inputs, then down outputs */
    float *eg, *eu;       /* [gather_cap][ff] */
    int32_t *ex_tok;      /* [gather_cap] token * n_used + slot of each gathered row */
    float *shg, *shu;     /* [sb][ff] */
    float *z;             /* [sb][D] head input */
} cpu_ctx;

/* cpu_attention.c */
void ds4_cpu_attention_layer(cpu_ctx *c, int il);
/* cpu_ffn.c */
void ds4_cpu_ffn_layer(cpu_ctx *c, int il);
/* cpu_backend.c: HC pre for tokens [t0, t0+m) of the batch: writes pre/post/M
 * (batch-wide arrays) and the normed collapsed input into c->a rows. */
void ds4_cpu_hc_pre(cpu_ctx *c, const ds4_tensor *fn, const ds4_tensor *scale, const ds4_tensor *base,
                    const ds4_tensor *norm, int t0, int m);
/* H[t] = post[t] (x) y[t-t0] + M[t]^T H[t] for t in [t0, t0+m). */
void ds4_cpu_hc_post(cpu_ctx *c, int t0, int m, const float *y);

static inline const float *f32_data(const ds4_tensor *t) { return (const float *)t->data; }

#endif
