/* ds4 — CPU attention sublayer: HC pre, Q/KV paths, compressors, lightning
 * indexer with causal top-k, sink attention, grouped output, HC post.
 * MODEL.md §8 and §11. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_internal.h"
#include "cpu/ops.h"
#include "gguf/quant.h"
#include "util/f16.h"

/* ------------------------------------------------------------------ helpers */

/* A row as the cache keeps it (--kv-type: model/kv_format.h), in place:
 * attention rows (nope = their FP8 part) or indexer rows (index). */
static void cache_round(const cpu_ctx *c, float *row, int dim, bool index) {
    const ds4_kv_type t = c->sess->kv_type;
    ds4_kvrow_round(index ? ds4_kv_index_fmt(t) : ds4_kv_attn_fmt(t), row, dim, dim - c->hp->rope_dim);
}

static const double *layer_freqs(const cpu_ctx *c, int il) {
    return ds4_layer_kind(c->hp, il) == DS4_ATTN_WINDOW ? c->freq_main : c->freq_cmp;
}

/* ------------------------------------------------------------------ phase A: KV row and q latent */

typedef struct rows_job {
    cpu_ctx *c;
    int il, t0;
} rows_job;

/* kv rows of the sub-batch (already projected into c->kvb): norm, RoPE, FP8, store in the ring. */
static void kv_finish_range(void *ctx, int64_t b, int64_t e, int thread) {
    rows_job *j = ctx;
    cpu_ctx *c = j->c;
    const ds4_hparams *hp = c->hp;
    const ds4_layer_weights *L = &c->w->layers[j->il];
    ds4_layer_state *S = &c->st->layers[j->il];
    float *cs = c->tmp[thread];
    for (int64_t i = b; i < e; i++) {
        const int64_t t = j->t0 + i, p = c->p0 + t;
        float *kv = c->kvb + i * hp->head_dim;
        ds4_rmsnorm(kv, f32_data(&L->kv_norm), hp->head_dim, hp->rms_eps, kv);
        ds4_rope_table(layer_freqs(c, j->il), c->n_pairs, p, cs);
        ds4_rope_tail(kv, hp->head_dim, c->n_pairs, cs, false);
        if (c->sess->fp8_kv) ds4_fp8_sim(kv, hp->head_dim - hp->rope_dim);
        float *dst = S->raw + (size_t)(p % c->st->raw_cap) * hp->head_dim;
        memcpy(dst, kv, sizeof(float) * hp->head_dim);
        cache_round(c, dst, hp->head_dim, false);
    }
}

static void qr_norm_range(void *ctx, int64_t b, int64_t e, int thread) {
    rows_job *j = ctx;
    cpu_ctx *c = j->c;
    const ds4_layer_weights *L = &c->w->layers[j->il];
    for (int64_t t = b; t < e; t++) {
        float *qr = c->qr + t * c->hp->q_lora;
        ds4_rmsnorm(qr, f32_data(&L->q_a_norm), c->hp->q_lora, c->hp->rms_eps, qr);
    }
}

/* ------------------------------------------------------------------ phase B: compressors */

/* Pool one closed window per channel (softmax over candidate gate scores). */
static void pool_window(const float *kv, const float *score, int slots, int stride, int width, bool overlap,
                        int ratio, float *out) {
    for (int j = 0; j < width; j++) {
        /* candidate (slot, column): CSA uses slots [0, ratio) at column j (previous
         * window's first half) and slots [ratio, 2 ratio) at column width + j. */
        float mx = -INFINITY;
        for (int s = 0; s < slots; s++) {
            const int col = overlap && s >= ratio ? width + j : j;
            mx = fmaxf(mx, score[(size_t)s * stride + col]);
        }
        if (mx == -INFINITY) {
            out[j] = 0.0f;
            continue;
        }
        float den = 0.0f, num = 0.0f;
        for (int s = 0; s < slots; s++) {
            const int col = overlap && s >= ratio ? width + j : j;
            const float wgt = expf(score[(size_t)s * stride + col] - mx);
            den += wgt;
            num += wgt * kv[(size_t)s * stride + col];
        }
        out[j] = num / den;
    }
}

/* Feed token (projections pk/pg of width `stride`) at position p into a
 * compressor state; when its window closes, write the pooled (width) row to
 * `out` and return true. */
static bool compressor_push(float *st_kv, float *st_score, int ratio, bool overlap, int stride, const float *pk,
                            const float *pg, const ds4_tensor *ape, int64_t p, float *ape_row, float *out) {
    const int r = (int)(p % ratio);
    const int slot = overlap ? ratio + r : r;
    ds4_tensor_row(ape, r, ape_row);
    memcpy(st_kv + (size_t)slot * stride, pk, sizeof(float) * (size_t)stride);
    for (int k = 0; k < stride; k++) st_score[(size_t)slot * stride + k] = pg[k] + ape_row[k];
    if ((p + 1) % ratio != 0) return false;
    const int width = overlap ? stride / 2 : stride;
    pool_window(st_kv, st_score, overlap ? 2 * ratio : ratio, stride, width, overlap, ratio, out);
    if (overlap) {
        /* the current window becomes the "previous" one of the next row */
        memcpy(st_kv, st_kv + (size_t)ratio * stride, sizeof(float) * (size_t)ratio * stride);
        memcpy(st_score, st_score + (size_t)ratio * stride, sizeof(float) * (size_t)ratio * stride);
    }
    return true;
}

/* Runs the tokens of the batch through the layer's compressor(s) in position
 * order, emitting every row whose window closes inside the batch. */
static void compressors_run(cpu_ctx *c, int il) {
    const ds4_hparams *hp = c->hp;
    const ds4_layer_weights *L = &c->w->layers[il];
    ds4_layer_state *S = &c->st->layers[il];
    const int ratio = hp->ratio[il];
    const bool csa = ds4_layer_kind(hp, il) == DS4_ATTN_CSA;
    const int W = ds4_cmp_width(hp, il), IW = 2 * hp->idx_dim;
    /* scratch: the ape row (up to 2 x the wider head), the pooled row, the RoPE table */
    const int wide = hp->head_dim > hp->idx_dim ? hp->head_dim : hp->idx_dim;
    float *ape_row = c->tmp[0], *row = ape_row + 2 * wide, *cs = row + wide;
    for (int t = 0; t < c->n; t++) {
        const int64_t p = c->p0 + t;
        if (compressor_push(S->cmp_kv, S->cmp_score, ratio, csa, W, c->ck + (size_t)t * W, c->cg + (size_t)t * W,
                            &L->cmp_ape, p, ape_row, row)) {
            ds4_rmsnorm(row, f32_data(&L->cmp_norm), hp->head_dim, hp->rms_eps, row);
            ds4_rope_table(c->freq_cmp, c->n_pairs, p + 1 - ratio, cs);
            ds4_rope_tail(row, hp->head_dim, c->n_pairs, cs, false);
            if (c->sess->fp8_kv) ds4_fp8_sim(row, hp->head_dim - hp->rope_dim);
            float *dst = S->comp + (size_t)S->n_comp * hp->head_dim;
            memcpy(dst, row, sizeof(float) * hp->head_dim);
            cache_round(c, dst, hp->head_dim, false);
            S->n_comp++;
        }
        if (csa && compressor_push(S->icmp_kv, S->icmp_score, 4, true, IW, c->ik + (size_t)t * IW,
                                   c->ig + (size_t)t * IW, &L->icmp_ape, p, ape_row, row)) {
            ds4_rmsnorm(row, f32_data(&L->icmp_norm), hp->idx_dim, hp->rms_eps, row);
            ds4_rope_table(c->freq_cmp, c->n_pairs, p + 1 - 4, cs);
            ds4_rope_tail(row, hp->idx_dim, c->n_pairs, cs, false);
            if (c->sess->fp4_indexer) {
                ds4_hadamard(row, hp->idx_dim);
                ds4_fp4_sim(row, hp->idx_dim);
            }
            float *dst = S->idx + (size_t)S->n_idx * hp->idx_dim;
            memcpy(dst, row, sizeof(float) * hp->idx_dim);
            cache_round(c, dst, hp->idx_dim, true);
            S->n_idx++;
        }
    }
}

/* ------------------------------------------------------------------ phase C: queries, indexer */

static void q_finish_range(void *ctx, int64_t b, int64_t e, int thread) {
    rows_job *j = ctx;
    cpu_ctx *c = j->c;
    const ds4_hparams *hp = c->hp;
    float *cs = c->tmp[thread];
    const int64_t QD = (int64_t)hp->n_head * hp->head_dim;
    for (int64_t i = b; i < e; i++) {
        const int64_t p = c->p0 + j->t0 + i;
        ds4_rope_table(layer_freqs(c, j->il), c->n_pairs, p, cs);
        for (int h = 0; h < hp->n_head; h++) {
            float *qh = c->q + i * QD + (int64_t)h * hp->head_dim;
            ds4_rmsnorm(qh, NULL, hp->head_dim, hp->rms_eps, qh);
            ds4_rope_tail(qh, hp->head_dim, c->n_pairs, cs, false);
        }
    }
}

static void iq_finish_range(void *ctx, int64_t b, int64_t e, int thread) {
    rows_job *j = ctx;
    cpu_ctx *c = j->c;
    const ds4_hparams *hp = c->hp;
    float *cs = c->tmp[thread];
    const int64_t IQD = (int64_t)hp->idx_heads * hp->idx_dim;
    for (int64_t i = b; i < e; i++) {
        const int64_t p = c->p0 + j->t0 + i;
        ds4_rope_table(c->freq_cmp, c->n_pairs, p, cs);
        for (int h = 0; h < hp->idx_heads; h++) {
            float *qh = c->iq + i * IQD + (int64_t)h * hp->idx_dim;
            ds4_rope_tail(qh, hp->idx_dim, c->n_pairs, cs, false);
            if (c->sess->fp4_indexer) {
                ds4_hadamard(qh, hp->idx_dim);
                ds4_fp4_sim(qh, hp->idx_dim);
            }
        }
    }
}

/* Indexer scores of sub-batch token i over its visible rows [0, V). Work item
 * = (token, block of 64 rows); each score is computed by one thread. */
typedef struct score_job {
    cpu_ctx *c;
    int il, t0, m;
    int64_t blocks_per_tok;
} score_job;

#define SCORE_BLOCK 64

static void score_range(void *ctx, int64_t b, int64_t e, int thread) {
    score_job *j = ctx;
    cpu_ctx *c = j->c;
    const ds4_hparams *hp = c->hp;
    const ds4_layer_state *S = &c->st->layers[j->il];
    const int64_t IQD = (int64_t)hp->idx_heads * hp->idx_dim;
    const float scale = (float)(1.0 / sqrt((double)hp->idx_dim * hp->idx_heads));
    const int64_t stride = c->st->comp_cap_max + 1;
    for (int64_t item = b; item < e; item++) {
        const int64_t i = item / j->blocks_per_tok, blk = item % j->blocks_per_tok;
        const int64_t p = c->p0 + j->t0 + i;
        const int64_t V = (p + 1) / 4;
        if (V <= hp->idx_topk) continue; /* every visible row is attended: no scores needed */
        const int64_t r0 = blk * SCORE_BLOCK, r1 = r0 + SCORE_BLOCK < V ? r0 + SCORE_BLOCK : V;
        const float *iq = c->iq + i * IQD, *iw = c->iw + i * hp->idx_heads;
        float *sc = c->scores + i * stride;
        for (int64_t r = r0; r < r1; r++) {
            const float *k = S->idx + r * hp->idx_dim;
            float acc = 0.0f;
            for (int h = 0; h < hp->idx_heads; h++) {
                const float d = ds4_dot_f32(iq + (int64_t)h * hp->idx_dim, k, hp->idx_dim);
                acc += iw[h] * (d > 0.0f ? d : 0.0f);
            }
            sc[r] = acc * scale;
        }
    }
}

/* (score desc, index asc): a strict total order, so selection is deterministic
 * and ties go to the lower index. */
static inline bool better(const float *sc, int32_t a, int32_t b) { return sc[a] > sc[b] || (sc[a] == sc[b] && a < b); }

static void sift_down(const float *sc, int32_t *heap, int n, int i) {
    /* min-heap under `better`: the root is the worst kept row */
    for (;;) {
        int l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && better(sc, heap[w], heap[l])) w = l;
        if (r < n && better(sc, heap[w], heap[r])) w = r;
        if (w == i) return;
        const int32_t t = heap[i];
        heap[i] = heap[w];
        heap[w] = t;
        i = w;
    }
}

static int cmp_i32(const void *a, const void *b) {
    const int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Causal top-k: only rows c < V are candidates (the mask is applied before the
 * selection), the k best are kept and sorted by index. */
static void topk_range(void *ctx, int64_t b, int64_t e, int thread) {
    score_job *j = ctx;
    cpu_ctx *c = j->c;
    const int K = c->hp->idx_topk;
    const int64_t stride = c->st->comp_cap_max + 1;
    for (int64_t i = b; i < e; i++) {
        const int64_t p = c->p0 + j->t0 + i;
        const int64_t V = (p + 1) / 4;
        if (V <= K) {
            c->n_sel[i] = -1;
            continue;
        }
        const float *sc = c->scores + i * stride;
        int32_t *heap = c->sel + i * K;
        for (int r = 0; r < K; r++) heap[r] = r;
        for (int r = K / 2 - 1; r >= 0; r--) sift_down(sc, heap, K, r);
        for (int32_t r = K; r < V; r++) {
            if (better(sc, r, heap[0])) {
                heap[0] = r;
                sift_down(sc, heap, K, 0);
            }
        }
        qsort(heap, (size_t)K, sizeof(int32_t), cmp_i32);
        c->n_sel[i] = K;
    }
}

/* ------------------------------------------------------------------ attention */

typedef struct att_job {
    cpu_ctx *c;
    int il, t0;
} att_job;

static void att_range(void *ctx, int64_t b, int64_t e, int thread) {
    att_job *j = ctx;
    cpu_ctx *c = j->c;
    const ds4_hparams *hp = c->hp;
    const ds4_layer_state *S = &c->st->layers[j->il];
    const int HD = hp->head_dim, ratio = hp->ratio[j->il];
    const int64_t QD = (int64_t)hp->n_head * HD;
    const float scale = (float)(1.0 / sqrt((double)HD));
    const float *sinks = f32_data(&c->w->layers[j->il].sinks);
    float *wts = c->att[thread];
    float *cs = c->tmp[thread];
    for (int64_t item = b; item < e; item++) {
        const int64_t i = item / hp->n_head;
        const int h = (int)(item % hp->n_head);
        const int64_t p = c->p0 + j->t0 + i;
        const float *q = c->q + i * QD + (int64_t)h * HD;
        float *o = c->o + i * QD + (int64_t)h * HD;
        /* rows: raw window [lo, p], then compressed rows */
        const int64_t lo = p - hp->window + 1 > 0 ? p - hp->window + 1 : 0;
        const int n_raw = (int)(p - lo + 1);
        int n_cmp = 0;
        const int32_t *sel = NULL;
        if (ratio > 0) {
            n_cmp = (int)((p + 1) / ratio);
            if (ds4_layer_kind(hp, j->il) == DS4_ATTN_CSA && c->n_sel[i] >= 0) {
                sel = c->sel + i * hp->idx_topk;
                n_cmp = c->n_sel[i];
            }
        }
        float mx = sinks[h];
        for (int r = 0; r < n_raw; r++) {
            const float *k = S->raw + (size_t)((lo + r) % c->st->raw_cap) * HD;
            wts[r] = ds4_dot_f32(q, k, HD) * scale;
            mx = fmaxf(mx, wts[r]);
        }
        for (int r = 0; r < n_cmp; r++) {
            const int64_t ci = sel ? sel[r] : r;
            wts[n_raw + r] = ds4_dot_f32(q, S->comp + (size_t)ci * HD, HD) * scale;
            mx = fmaxf(mx, wts[n_raw + r]);
        }
        float den = expf(sinks[h] - mx);
        for (int r = 0; r < n_raw + n_cmp; r++) {
            wts[r] = expf(wts[r] - mx);
            den += wts[r];
        }
        memset(o, 0, sizeof(float) * (size_t)HD);
        for (int r = 0; r < n_raw + n_cmp; r++) {
            const float *v = r < n_raw ? S->raw + (size_t)((lo + r) % c->st->raw_cap) * HD
                                       : S->comp + (size_t)(sel ? sel[r - n_raw] : r - n_raw) * HD;
            const float wgt = wts[r];
            for (int d = 0; d < HD; d++) o[d] += wgt * v[d];
        }
        const float inv = 1.0f / den;
        for (int d = 0; d < HD; d++) o[d] *= inv;
        /* undo the rotation the values carried (K = V rows) at the query position */
        ds4_rope_table(layer_freqs(c, j->il), c->n_pairs, p, cs);
        ds4_rope_tail(o, HD, c->n_pairs, cs, true);
    }
}

/* ------------------------------------------------------------------ the layer */

void ds4_cpu_attention_layer(cpu_ctx *c, int il) {
    const ds4_hparams *hp = c->hp;
    const ds4_layer_weights *L = &c->w->layers[il];
    const ds4_attn_kind kind = ds4_layer_kind(hp, il);
    const int64_t D = hp->n_embd, HD = hp->head_dim, QD = (int64_t)hp->n_head * HD;
    const int n = c->n, SB = DS4_CPU_SUB_BATCH;

    /* A: HC pre, KV rows into the ring, q latent, compressor projections */
    for (int t0 = 0; t0 < n; t0 += SB) {
        const int m = n - t0 < SB ? n - t0 : SB;
        ds4_cpu_hc_pre(c, &L->hc_attn_fn, &L->hc_attn_scale, &L->hc_attn_base, &L->attn_norm, t0, m);
        ds4_matmul(&c->mm, &L->kv, 0, HD, c->a + t0 * D, D, m, c->kvb, HD);
        rows_job rj = {c, il, t0};
        ds4_pool_for(c->pool, m, 1, kv_finish_range, &rj);
    }
    ds4_matmul(&c->mm, &L->q_a, 0, hp->q_lora, c->a, D, n, c->qr, hp->q_lora);
    rows_job qj = {c, il, 0};
    ds4_pool_for(c->pool, n, 1, qr_norm_range, &qj);
    if (kind != DS4_ATTN_WINDOW) {
        const int W = ds4_cmp_width(hp, il);
        ds4_matmul(&c->mm, &L->cmp_kv, 0, W, c->a, D, n, c->ck, W);
        ds4_matmul(&c->mm, &L->cmp_gate, 0, W, c->a, D, n, c->cg, W);
        if (kind == DS4_ATTN_CSA) {
            const int IW = 2 * hp->idx_dim;
            ds4_matmul(&c->mm, &L->icmp_kv, 0, IW, c->a, D, n, c->ik, IW);
            ds4_matmul(&c->mm, &L->icmp_gate, 0, IW, c->a, D, n, c->ig, IW);
        }
        /* B: compressor state machine, in position order */
        compressors_run(c, il);
    }

    /* C: per sub-batch: queries, indexer top-k, attention, output projection, HC post */
    const int64_t GIN = QD / hp->o_groups, LOW = (int64_t)hp->o_groups * hp->o_lora;
    for (int t0 = 0; t0 < n; t0 += SB) {
        const int m = n - t0 < SB ? n - t0 : SB;
        ds4_matmul(&c->mm, &L->q_b, 0, QD, c->qr + (int64_t)t0 * hp->q_lora, hp->q_lora, m, c->q, QD);
        rows_job rj = {c, il, t0};
        ds4_pool_for(c->pool, m, 1, q_finish_range, &rj);

        for (int i = 0; i < m; i++) c->n_sel[i] = -1;
        if (kind == DS4_ATTN_CSA && (c->p0 + t0 + m) / 4 > hp->idx_topk) {
            const int64_t IQD = (int64_t)hp->idx_heads * hp->idx_dim;
            ds4_matmul(&c->mm, &L->idx_q_b, 0, IQD, c->qr + (int64_t)t0 * hp->q_lora, hp->q_lora, m, c->iq, IQD);
            ds4_pool_for(c->pool, m, 1, iq_finish_range, &rj);
            ds4_matmul(&c->mm, &L->idx_proj, 0, hp->idx_heads, c->a + t0 * D, D, m, c->iw, hp->idx_heads);
            const int64_t vmax = (c->p0 + t0 + m) / 4;
            score_job sj = {c, il, t0, m, (vmax + SCORE_BLOCK - 1) / SCORE_BLOCK};
            ds4_pool_for(c->pool, (int64_t)m * sj.blocks_per_tok, 0, score_range, &sj);
            ds4_pool_for(c->pool, m, 1, topk_range, &sj);
        }
        att_job aj = {c, il, t0};
        ds4_pool_for(c->pool, (int64_t)m * hp->n_head, 0, att_range, &aj);
        for (int g = 0; g < hp->o_groups; g++)
            ds4_matmul(&c->mm, &L->o_a, (int64_t)g * hp->o_lora, hp->o_lora, c->o + g * GIN, QD, m, c->low + (int64_t)g * hp->o_lora,
                       LOW);
        ds4_matmul(&c->mm, &L->o_b, 0, D, c->low, LOW, m, c->y, D);
        ds4_cpu_hc_post(c, t0, m, c->y);
    }
}
