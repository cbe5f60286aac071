/* ds4 — the CUDA backend: weights resident in device memory in their GGUF
 * formats, the session state on the device (KV rows in f16, or f32 in
 * oracle mode), the layer driver (same schedule as the CPU reference), and
 * the decode step captured as a CUDA graph (one launch per token).
 *
 * Written in C style; nvcc compiles it as C++, hence the explicit casts. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "backend/backend.h"
#include "cpu/ops.h"
#include "gguf/quant.h"
#include "util/clock.h"
#include "util/f16.h"
}
#include "cuda/cuda_common.cuh"
#include "cuda/cuda_kernels.h"

/* The architecture the kernels were compiled for (Makefile CUDA_ARCH). */
#ifndef DS4_CUDA_ARCH
#define DS4_CUDA_ARCH "sm_90"
#define DS4_CUDA_ARCH_MIN 90
#endif

/* Token-tile widths (128, 64, 32) of the routed experts' prefill products
 * (cuda_layers.inc ffn_layer; cuda_mma.cu picks a launch's width from its
 * largest segment count) */
#define EXP_TILES 3
/* HC pre: the mixer in HC_PARTS stretches of K (cuda_layers.inc hc_pre);
 * batches of at most HC_FUSE_MAX tokens form it in the previous sub-layer's
 * hc_post instead (hc_post_next) */
#define HC_PARTS 8
#define HC_FUSE_MAX 8

/* Sub-batch of the per-token buffers of attention (q, o, indexer scores;
 * and the normalized copy of the streams a mixer that is not F16 takes):
 * prefill runs q_b, the indexer, attention and o_a 512 tokens at a time
 * (256 measured 4-5% slower: o_a's grouped tiles half filled the GPU);
 * 227 MiB more than 256. */
#define SB 512

/* ------------------------------------------------------------------ errors */

#define CU(call, what)                                                                            \
    do {                                                                                          \
        const cudaError_t e_ = (call);                                                            \
        if (e_ != cudaSuccess) return ds4_errf(err, "CUDA: %s: %s", what, cudaGetErrorString(e_)); \
    } while (0)

static int launch_check(ds4_err *err, const char *where) {
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return ds4_errf(err, "CUDA kernel failed in %s: %s", where, cudaGetErrorString(e));
    return 0;
}

/* ------------------------------------------------------------------ device weights (per model) */

typedef struct cu_weights {
    size_t bytes;
    int refs;
} cu_weights;

typedef struct upload_ctx {
    int failed;
    size_t done, total;
    double t_last;
    cudaError_t err;
} upload_ctx;

static void upload_one(void *ud, ds4_tensor *t) {
    upload_ctx *u = (upload_ctx *)ud;
    if (u->failed || t->dev) return;
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, t->size);
    if (e == cudaSuccess) e = cudaMemcpy(p, t->data, t->size, cudaMemcpyHostToDevice);
    if (e != cudaSuccess) {
        if (p) cudaFree(p);
        u->failed = 1;
        u->err = e;
        return;
    }
    t->dev = p;
    u->done += t->size;
    if (u->total > (1ull << 30) && (u->done * 10 / u->total) != ((u->done - t->size) * 10 / u->total))
        fprintf(stderr, "ds4: loading weights into GPU memory: %.1f / %.1f GiB\n", (double)u->done / (1 << 30),
                (double)u->total / (1 << 30));
}

static void free_one(void *ud, ds4_tensor *t) {
    (void)ud;
    if (t->dev) cudaFree(t->dev);
    t->dev = NULL;
}

static void release_weights(ds4_model *m) {
    ds4_weights_visit(&m->w, free_one, NULL);
    free(m->backend_weights);
    m->backend_weights = NULL;
    m->backend_release = NULL;
}

static int upload_weights(ds4_model *m, ds4_err *err) {
    if (m->backend_weights) {
        ((cu_weights *)m->backend_weights)->refs++;
        return 0;
    }
    size_t free_b = 0, total_b = 0;
    CU(cudaMemGetInfo(&free_b, &total_b), "querying GPU memory");
    if (m->w.n_bytes + (512ull << 20) > free_b)
        return ds4_errf(err,
                        "the model needs %.1f GiB of GPU memory for its weights, the GPU has %.1f GiB free of %.1f GiB: "
                        "use a GPU with more memory (an H200 holds the q2 file), or --cpu",
                        (double)m->w.n_bytes / (1 << 30), (double)free_b / (1 << 30), (double)total_b / (1 << 30));
    upload_ctx u = {0, 0, m->w.n_bytes, 0, cudaSuccess};
    ds4_weights_visit(&m->w, upload_one, &u);
    if (u.failed) {
        ds4_weights_visit(&m->w, free_one, NULL);
        return ds4_errf(err, "CUDA: copying weights to the GPU: %s", cudaGetErrorString(u.err));
    }
    cu_weights *cw = (cu_weights *)calloc(1, sizeof(*cw));
    cw->bytes = m->w.n_bytes;
    cw->refs = 1;
    m->backend_weights = cw;
    m->backend_release = release_weights;
    return 0;
}

static ds4_dw dw(const ds4_tensor *t) {
    ds4_dw d;
    d.type = t->type;
    d.ptr = t->dev;
    d.K = t->ne[0];
    d.N = t->ne[1] * t->ne[2];
    return d;
}

/* ------------------------------------------------------------------ session */

/* Kinds of decode step, a captured graph each (cuda_layers.inc step_kind):
 * no indexer selection; selection with few compressed rows; with many; with
 * so many that the top-k takes a cluster of blocks a token. */
#define STEP_KINDS 4
/* ... and compressor modes (cuda_layers.inc cmp_mode): a graph a pair */
#define CMP_MODES 3
/* ... and where a ratio-4 layer's attention compressor forks (cuda_layers.inc fork3_mode) */
#define FORK3_MODES 2
#define STEP_GRAPHS (STEP_KINDS * CMP_MODES * FORK3_MODES)

typedef struct cu_layer {
    void *raw, *comp, *idx;
    float *cmp_kv, *cmp_score, *icmp_kv, *icmp_score;
    float *ring; /* an HCA layer's attention inputs of the open window (cuda_layers.inc, "compressor windows") */
} cu_layer;

typedef struct cu_sess {
    cudaStream_t st;
    /* decode steps run a layer's independent branches on st2 (and st3,
     * st4) beside st (cuda_layers.inc side_begin / side_end / side_join) */
    cudaStream_t st2, st3, st4;
    cudaEvent_t ev_fork, ev_join, ev_fork3, ev_join3, ev_fork4, ev_join4;
    /* a prefill layer's routing (ffn_layer): its ids made, copied to the
     * host, its tables copied back */
    cudaEvent_t ev_ids, ev_route, ev_routed;
    const ds4_hparams *hp;
    const ds4_weights *w;
    int kv_fmt, ix_fmt; /* attention and indexer rows' formats (ds4_row_fmt, --kv-type) */
    size_t kv_row, ix_row; /* ... and their bytes */
    int max_batch, raw_cap, comp_cap_max, max_rows, n_pairs;
    size_t bytes; /* device memory of this session */
    cu_layer *L;
    double *freq_main, *freq_cmp;
    int *d_pos;     /* [max_batch / SB + 1] position of each sub-batch's first token */
    int *h_pos;     /* pinned */
    int32_t *d_tok, *h_tok;
    float *H, *a, *qr, *pre, *post, *M, *ck, *cg, *ik, *ig;
    float *mix_parts, *mix_ss; /* HC mixer partials of a sub-batch (cuda_layers.inc hc_pre) */
    float *flat, *mix, *kvb, *q, *o, *low, *y, *iq, *iw, *S, *router, *rw, *eg, *eu, *ex, *exa, *eo, *shg, *shu, *sh, *z;
    float *logits, *h_logits; /* device [SB][V]; pinned [V] */
    float *att_part;          /* split-row attention partials */
    int32_t *sel, *ids, *h_ids;
    int *n_sel;
    int32_t *gtok, *gpair, *gpos, *h_gtok, *h_gpair, *h_gpos; /* gathered row r: token, pair; pair i: its row */
    void *segs, *h_segs; /* expert segments: 2 * EXP_TILES tables of E x 16 bytes (cuda_layers.inc ffn_layer) */
    float *gw, *h_gw, *h_rw;
    cudaGraphExec_t graph[STEP_GRAPHS]; /* decode step of each kind, compressor mode and fork (cuda_layers.inc) */
    bool qr_normed; /* the layer's q_a output already normalized in place (else its consumers norm it) */
    int mix_ready;  /* > 0: the last hc_post also formed the next mixer's parts, this many (cuda_layers.inc) */
    bool a_ready;      /* the last hc_post also made the next sub-layer's input (ds4k_hc_post_collapse) */
    bool post_due;     /* ... so this sub-layer's post and M are still to be made, from mixsum */
    float *mixsum;     /* ... and its mixer's sums, MIX a token, for its post and M (hc_pre) */
    float *cparts;     /* ds4k_hc_post_collapse's parts */
    unsigned *hc_bar;  /* ... and its meeting counters, 2 a token, zero between launches */
    bool graph_ok[STEP_GRAPHS];
    int graph_failed;
    /* chained greedy decoding (cuda_layers.inc, "chained steps"): its own
     * graphs, whose step ends in the pick instead of the logits copy */
    cudaGraphExec_t chain_graph[STEP_GRAPHS];
    bool chain_graph_ok[STEP_GRAPHS];
    bool chaining;                /* capturing a chained step (forward's tail, the compressors' skip) */
    ds4k_pick_ctl *pick, *h_pick; /* device; pinned (the first three fields, set at chain_begin) */
    int32_t *h_picked, *d_picked; /* mapped host ring of picks, by position & 3 (host / device address) */
    float *logits_keep;           /* a step's logits when its pick was the stop token */
    unsigned *route_done;         /* the router GEMV's count of finished blocks (ds4k_router_matmul), 0 between launches */
    unsigned *heads_cnt;          /* q_b's ds4_heads counters, n_head of them; 0 between launches */
    cudaEvent_t ev_step[2];       /* the end of each queued chained step */
    int chain_n, chain_head;      /* queued steps, and the slot of the oldest */
    int chain_pos[2];             /* their positions */
    int32_t chain_tok[2];         /* their tokens (-1: still on the device) */
    int32_t chain_stop;           /* the stop token of this chain */
    int32_t chain_last_pick;      /* the pick of the last step waited for */
    bool chain_failed;            /* capturing its graphs failed: chain_begin declines */
    size_t attn_smem;
    /* an HCA layer's compressor projections a window at a time (cuda_layers.inc, "compressor windows") */
    int ring_ratio;       /* the HCA layers' ratio: the rows of their rings; 0: the scheme is off */
    int64_t ring_from;    /* the rings hold every position's attention input from here on */
    bool cmp_pending;     /* the open window's steps so far left their projections to its close */
    int *d_wpos, *h_wpos; /* the first position of the window a step closes or cmp_flush completes */
    float *cmp_pool;      /* its pooled windows (ds4k_compressor's pool): CMP_POOL_FLOATS */
    /* a ratio-4 layer's attention compressor forked early in a step closing its windows (cuda_layers.inc early3_ratio) */
    int early3_ratio; /* their ratio; 0: no step forks early */
    int huge_rows;    /* steps selecting among more compressed rows are of the huge kind (cuda_layers.inc) */
    bool fork3_early; /* the step being captured does (never a step launched kernel by kernel or a batch) */
} cu_sess;
/* a batch of n = ring_ratio tokens from a window's first position spans
 * n / ratio + 1 = 2 windows of an HCA row's width (the head dim) */
#define CMP_POOL_FLOATS(c) ((size_t)2 * (c)->hp->head_dim)

static int dalloc(cu_sess *c, void **p, size_t bytes, ds4_err *err) {
    if (bytes == 0) bytes = 16;
    const cudaError_t e = cudaMalloc(p, bytes);
    if (e != cudaSuccess) {
        size_t f = 0, t = 0;
        cudaMemGetInfo(&f, &t);
        return ds4_errf(err,
                        "CUDA: out of GPU memory allocating %.1f MiB of session buffers (%.1f GiB free); "
                        "use a smaller --ctx or --prefill-chunk",
                        (double)bytes / (1 << 20), (double)f / (1 << 30));
    }
    c->bytes += bytes;
    return 0;
}
#define DA(ptr, bytes)                                                    \
    do {                                                                  \
        if (dalloc(c, (void **)&(ptr), (size_t)(bytes), err) != 0) return -1; \
    } while (0)

static void cu_destroy(ds4_session *s);

/* The buffers that hold a value per token of the whole batch (B = the
 * prefill chunk), with their bytes per token: cu_alloc allocates them, and
 * cu_default_chunk prices a larger chunk from the same list. Routed experts
 * are grouped over the whole batch, hence the K-wide ones. */
typedef struct batch_buf {
    void **ptr;
    size_t per_token;
} batch_buf;
#define BATCH_BUFS_MAX 32

static int batch_buffers(cu_sess *c, const ds4_hparams *hp, batch_buf *b) {
    const size_t D = (size_t)hp->n_embd, HC = (size_t)hp->n_hc, hd = (size_t)hp->head_dim, id = (size_t)hp->idx_dim;
    const size_t K = (size_t)hp->n_expert_used, FF = (size_t)hp->n_ff;
    int n = 0;
#define BB(field, count)                                                    \
    do {                                                                    \
        if (n == BATCH_BUFS_MAX) return -1; /* the table must grow */       \
        b[n++] = (batch_buf){(void **)&c->field, (size_t)(count) * 4};      \
    } while (0)
    BB(d_tok, 1);
    BB(H, HC * D);
    BB(a, D);
    BB(qr, hp->q_lora);
    BB(pre, HC);
    BB(post, HC);
    BB(M, HC * HC);
    BB(ck, 2 * hd);
    BB(cg, 2 * hd);
    BB(ik, 2 * id);
    BB(ig, 2 * id);
    BB(sh, D);
    BB(y, D);
    BB(kvb, hd);
    BB(router, hp->n_expert);
    BB(shg, FF);
    BB(shu, FF);
    BB(low, (size_t)hp->o_groups * hp->o_lora);
    BB(ids, K);
    BB(rw, K);
    BB(eg, K * FF);
    BB(eu, K * FF);
    BB(ex, K * D);
    BB(eo, K * D);
    BB(exa, K * (1 + (D > FF ? D : FF) / 16)); /* scales and 16-sums of split expert inputs (ds4k_expert_split) */
    BB(gtok, K);
    BB(gpair, K);
    BB(gpos, K);
    BB(gw, K);
#undef BB
    return n;
}

/* Most rows a query of layer il can attend: the window plus the selected
 * (CSA) or all (HCA) compressed rows. */
static int attended_rows(const ds4_hparams *hp, const ds4_layer_state *ls, int il) {
    const ds4_attn_kind kind = ds4_layer_kind(hp, il);
    int rows = hp->window + 1;
    if (kind == DS4_ATTN_CSA) rows += (int)(ls->comp_cap < (uint32_t)hp->idx_topk ? ls->comp_cap : (uint32_t)hp->idx_topk);
    else if (kind == DS4_ATTN_HCA) rows += (int)ls->comp_cap;
    return rows;
}

static int max_attended_rows(const ds4_hparams *hp, const ds4_state *st) {
    int m = hp->window + 1;
    for (int il = 0; il < hp->n_layer; il++) {
        const int r = attended_rows(hp, &st->layers[il], il);
        m = r > m ? r : m;
    }
    return m;
}

static int cu_alloc(ds4_session *s, cu_sess *c, ds4_err *err) {
    const ds4_hparams *hp = c->hp;
    const ds4_state *st = s->state;
    const size_t B = (size_t)c->max_batch, D = (size_t)hp->n_embd, HC = (size_t)hp->n_hc, hd = (size_t)hp->head_dim;
    const size_t QD = (size_t)hp->n_head * hd, K = (size_t)hp->n_expert_used;
    const size_t id = (size_t)hp->idx_dim;
    const size_t sb = B < SB ? B : SB;
    c->L = (cu_layer *)calloc((size_t)hp->n_layer, sizeof(cu_layer));
    for (int il = 0; il < hp->n_layer; il++) {
        cu_layer *L = &c->L[il];
        const ds4_layer_state *ls = &st->layers[il];
        DA(L->raw, (size_t)c->raw_cap * c->kv_row);
        if (ls->ratio > 0) {
            DA(L->comp, (size_t)ls->comp_cap * c->kv_row);
            DA(L->cmp_kv, (size_t)ls->cmp_slots * ls->cmp_width * 4);
            DA(L->cmp_score, (size_t)ls->cmp_slots * ls->cmp_width * 4);
            if (c->ring_ratio && ds4_layer_kind(hp, il) == DS4_ATTN_HCA) DA(L->ring, (size_t)c->ring_ratio * D * 4);
            if (ls->idx) {
                DA(L->idx, (size_t)ls->comp_cap * c->ix_row);
                DA(L->icmp_kv, 16 * id * 4);
                DA(L->icmp_score, 16 * id * 4);
            }
        }
    }
    batch_buf bb[BATCH_BUFS_MAX] = {};
    const int nbb = batch_buffers(c, hp, bb);
    if (nbb < 0) return ds4_errf(err, "CUDA: internal error: BATCH_BUFS_MAX is too small");
    for (int i = 0; i < nbb; i++) DA(*bb[i].ptr, B * bb[i].per_token);
    DA(c->freq_main, sizeof(double) * c->n_pairs);
    DA(c->freq_cmp, sizeof(double) * c->n_pairs);
    const size_t nsb = B / SB + 2;
    DA(c->d_pos, sizeof(int) * nsb);
    DA(c->flat, sb * HC * D * 4);
    DA(c->mix, sb * (2 + HC) * HC * 4);
    /* the mixer's parts: HC_PARTS stretches of every token of a batch, or up
     * to DS4K_MAX_HC_PARTS element ranges of a decode-sized batch (hc_post_next) */
    const size_t parts = (size_t)HC_PARTS * B > (size_t)DS4K_MAX_HC_PARTS * HC_FUSE_MAX
                             ? (size_t)HC_PARTS * B
                             : (size_t)DS4K_MAX_HC_PARTS * HC_FUSE_MAX;
    DA(c->mix_parts, parts * (2 + HC) * HC * 4);
    DA(c->mix_ss, parts * 4);
    DA(c->q, sb * QD * 4);
    DA(c->o, sb * QD * 4);
    DA(c->iq, sb * hp->idx_heads * id * 4);
    DA(c->iw, B * hp->idx_heads * 4); /* the batch's (attention_layer's input projections) */
    DA(c->S, sb * (size_t)(c->comp_cap_max + 1) * 4);
    DA(c->sel, sb * hp->idx_topk * 4);
    DA(c->n_sel, sb * 4);
    DA(c->segs, 2 * EXP_TILES * (size_t)hp->n_expert * 16);
    DA(c->z, sb * D * 4);
    DA(c->logits, sb * hp->n_vocab * 4);
    DA(c->att_part, ds4k_attention_part_floats(hp->n_head, hd, c->max_rows) * 4);
    DA(c->pick, sizeof(ds4k_pick_ctl));
    DA(c->logits_keep, hp->n_vocab * 4);
    DA(c->route_done, sizeof(unsigned));
    DA(c->d_wpos, sizeof(int));
    if (c->ring_ratio) DA(c->cmp_pool, CMP_POOL_FLOATS(c) * sizeof(float));
    DA(c->mixsum, (size_t)DS4K_HC_COLLAPSE_MAX_TOKENS * (2 + HC) * HC * 4);
    DA(c->cparts, (size_t)DS4K_MAX_HC_PARTS * DS4K_HC_COLLAPSE_MAX_TOKENS * DS4K_HC_COLLAPSE_COLS * 4);
    DA(c->hc_bar, 2 * DS4K_HC_COLLAPSE_MAX_TOKENS * sizeof(unsigned));
    CU(cudaMemsetAsync(c->hc_bar, 0, 2 * DS4K_HC_COLLAPSE_MAX_TOKENS * sizeof(unsigned), c->st), "clearing the HC counters");
    CU(cudaMemset(c->pick, 0, sizeof(ds4k_pick_ctl)), "clearing the pick state");
    CU(cudaMemsetAsync(c->route_done, 0, sizeof(unsigned), c->st), "clearing the router's count");
    /* the warp merge reads an empty chunk's place too (never adding it) */
    CU(cudaMemsetAsync(c->att_part, 0, ds4k_attention_part_floats(hp->n_head, hd, c->max_rows) * 4, c->st),
       "clearing the attention partials");
    const size_t n_heads = (size_t)hp->n_head * DS4K_HEADS_CNT_STRIDE;
    DA(c->heads_cnt, n_heads * sizeof(unsigned));
    CU(cudaMemsetAsync(c->heads_cnt, 0, n_heads * sizeof(unsigned), c->st), "clearing the heads' counters");
    if (cudaMallocHost((void **)&c->h_logits, sizeof(float) * hp->n_vocab) != cudaSuccess ||
        cudaMallocHost((void **)&c->h_pos, sizeof(int) * nsb) != cudaSuccess ||
        cudaMallocHost((void **)&c->h_tok, sizeof(int32_t) * B) != cudaSuccess ||
        cudaMallocHost((void **)&c->h_pick, sizeof(ds4k_pick_ctl)) != cudaSuccess ||
        cudaMallocHost((void **)&c->h_wpos, sizeof(int)) != cudaSuccess ||
        cudaHostAlloc((void **)&c->h_picked, 4 * sizeof(int32_t), cudaHostAllocMapped) != cudaSuccess)
        return ds4_errf(err, "CUDA: cannot allocate pinned host buffers");
    CU(cudaHostGetDevicePointer((void **)&c->d_picked, c->h_picked, 0), "mapping the pick ring");
    /* pinned, so a prefill layer's routing copies are asynchronous: the
     * host waits for the ids alone while the shared expert runs (ffn_layer) */
    const size_t segs_bytes = 2 * EXP_TILES * (size_t)hp->n_expert * 16;
    if (cudaMallocHost((void **)&c->h_ids, B * K * 4) != cudaSuccess ||
        cudaMallocHost((void **)&c->h_rw, B * K * 4) != cudaSuccess ||
        cudaMallocHost((void **)&c->h_gtok, B * K * 4) != cudaSuccess ||
        cudaMallocHost((void **)&c->h_gpair, B * K * 4) != cudaSuccess ||
        cudaMallocHost((void **)&c->h_gpos, B * K * 4) != cudaSuccess ||
        cudaMallocHost((void **)&c->h_gw, B * K * 4) != cudaSuccess ||
        cudaMallocHost(&c->h_segs, segs_bytes) != cudaSuccess)
        return ds4_errf(err, "CUDA: cannot allocate pinned host buffers for the expert routing");
    memset(c->h_segs, 0, segs_bytes);
    return 0;
}

/* ------------------------------------------------------------------ state transfer */

/* n rows of dim floats to the device in format fmt (nope: FP8 rows' E4M3
 * part) and back, through a host buffer of the rows' bytes. */
static int copy_rows_to_dev(void *dst, const float *src, size_t n, int fmt, int dim, int nope, ds4_err *err) {
    if (n == 0) return 0;
    const size_t rb = ds4_kvrow_bytes((ds4_row_fmt)fmt, dim, nope);
    uint8_t *tmp = (uint8_t *)malloc(n * rb);
    if (!tmp) return ds4_errf(err, "CUDA: out of host memory pushing the session state (%zu bytes)", n * rb);
    for (size_t r = 0; r < n; r++) ds4_kvrow_encode((ds4_row_fmt)fmt, src + r * dim, dim, nope, tmp + r * rb);
    const cudaError_t e = cudaMemcpy(dst, tmp, n * rb, cudaMemcpyHostToDevice);
    free(tmp);
    if (e != cudaSuccess) return ds4_errf(err, "CUDA: pushing the session state: %s", cudaGetErrorString(e));
    return 0;
}

static int copy_rows_to_host(float *dst, const void *src, size_t n, int fmt, int dim, int nope, ds4_err *err) {
    if (n == 0) return 0;
    const size_t rb = ds4_kvrow_bytes((ds4_row_fmt)fmt, dim, nope);
    uint8_t *tmp = (uint8_t *)malloc(n * rb);
    if (!tmp) return ds4_errf(err, "CUDA: out of host memory pulling the session state (%zu bytes)", n * rb);
    const cudaError_t e = cudaMemcpy(tmp, src, n * rb, cudaMemcpyDeviceToHost);
    for (size_t r = 0; e == cudaSuccess && r < n; r++)
        ds4_kvrow_decode((ds4_row_fmt)fmt, tmp + r * rb, dim, nope, dst + r * dim);
    free(tmp);
    if (e != cudaSuccess) return ds4_errf(err, "CUDA: pulling the session state: %s", cudaGetErrorString(e));
    return 0;
}

static int cu_push(ds4_session *s, ds4_err *err) {
    cu_sess *c = (cu_sess *)s->impl;
    const ds4_state *st = s->state;
    /* a new state: the rings hold none of its inputs (cmp_mode) */
    c->ring_from = st->n_tokens;
    c->cmp_pending = false;
    /* the copies below run on the legacy stream, which does not wait for
     * the session's non-blocking one */
    CU(cudaStreamSynchronize(c->st), "synchronizing");
    const int hd = st->head_dim, id = st->idx_dim, nope = hd - 2 * c->n_pairs;
    for (int il = 0; il < st->n_layer; il++) {
        const ds4_layer_state *ls = &st->layers[il];
        cu_layer *L = &c->L[il];
        if (copy_rows_to_dev(L->raw, ls->raw, st->raw_cap, c->kv_fmt, hd, nope, err)) return -1;
        if (ls->ratio > 0) {
            if (copy_rows_to_dev(L->comp, ls->comp, ls->n_comp, c->kv_fmt, hd, nope, err)) return -1;
            const size_t ns = (size_t)ls->cmp_slots * ls->cmp_width;
            CU(cudaMemcpy(L->cmp_kv, ls->cmp_kv, ns * 4, cudaMemcpyHostToDevice), "pushing compressor state");
            CU(cudaMemcpy(L->cmp_score, ls->cmp_score, ns * 4, cudaMemcpyHostToDevice), "pushing compressor state");
            if (ls->idx) {
                if (copy_rows_to_dev(L->idx, ls->idx, ls->n_idx, c->ix_fmt, id, 0, err)) return -1;
                CU(cudaMemcpy(L->icmp_kv, ls->icmp_kv, 16 * id * 4, cudaMemcpyHostToDevice), "pushing indexer state");
                CU(cudaMemcpy(L->icmp_score, ls->icmp_score, 16 * id * 4, cudaMemcpyHostToDevice), "pushing indexer state");
            }
        }
    }
    return 0;
}

static int cmp_flush(ds4_session *s, cu_sess *c, ds4_err *err);

static int cu_pull(ds4_session *s, ds4_err *err) {
    cu_sess *c = (cu_sess *)s->impl;
    ds4_state *st = s->state;
    const int hd = st->head_dim, id = st->idx_dim, nope = hd - 2 * c->n_pairs;
    if (cmp_flush(s, c, err) != 0) return -1; /* the open window's projections into the state */
    CU(cudaStreamSynchronize(c->st), "synchronizing");
    for (int il = 0; il < st->n_layer; il++) {
        ds4_layer_state *ls = &st->layers[il];
        cu_layer *L = &c->L[il];
        if (copy_rows_to_host(ls->raw, L->raw, st->raw_cap, c->kv_fmt, hd, nope, err)) return -1;
        if (ls->ratio > 0) {
            if (copy_rows_to_host(ls->comp, L->comp, ls->n_comp, c->kv_fmt, hd, nope, err)) return -1;
            const size_t ns = (size_t)ls->cmp_slots * ls->cmp_width;
            CU(cudaMemcpy(ls->cmp_kv, L->cmp_kv, ns * 4, cudaMemcpyDeviceToHost), "pulling compressor state");
            CU(cudaMemcpy(ls->cmp_score, L->cmp_score, ns * 4, cudaMemcpyDeviceToHost), "pulling compressor state");
            if (ls->idx) {
                if (copy_rows_to_host(ls->idx, L->idx, ls->n_idx, c->ix_fmt, id, 0, err)) return -1;
                CU(cudaMemcpy(ls->icmp_kv, L->icmp_kv, 16 * id * 4, cudaMemcpyDeviceToHost), "pulling indexer state");
                CU(cudaMemcpy(ls->icmp_score, L->icmp_score, 16 * id * 4, cudaMemcpyDeviceToHost), "pulling indexer state");
            }
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ the layers */

#include "cuda/cuda_layers.inc"

/* ------------------------------------------------------------------ backend ops */

static int cu_init(ds4_session *s, ds4_err *err) {
    int ndev = 0, drv = 0, rt = 0;
    const cudaError_t de = cudaGetDeviceCount(&ndev);
    if (de != cudaSuccess || ndev == 0) {
        cudaDriverGetVersion(&drv);
        cudaRuntimeGetVersion(&rt);
        /* the runtime reports a missing driver as an old one (version 0) */
        if (de == cudaErrorInsufficientDriver && drv == 0)
            return ds4_errf(err, "CUDA: no NVIDIA driver is loaded on this machine (no GPU, or the driver is not "
                                 "installed); run with --cpu");
        if (de == cudaErrorInsufficientDriver)
            return ds4_errf(err,
                            "CUDA: the driver is too old for this build (driver supports CUDA %d.%d, the build uses "
                            "%d.%d); update the NVIDIA driver or run with --cpu",
                            drv / 1000, drv % 1000 / 10, rt / 1000, rt % 1000 / 10);
        return ds4_errf(err, "no usable CUDA GPU (%s); run with --cpu",
                        de != cudaSuccess ? cudaGetErrorString(de) : "no device");
    }
    static int inited;
    if (!inited) {
        if (ds4k_init() != 0) {
            const char *why = ds4k_last_error();
            int dev = 0;
            cudaDeviceProp prop;
            if (cudaGetDevice(&dev) == cudaSuccess && cudaGetDeviceProperties(&prop, dev) == cudaSuccess &&
                (prop.major * 10 + prop.minor) < DS4_CUDA_ARCH_MIN)
                return ds4_errf(err,
                                "CUDA: this build's kernels are for %s and later, the GPU (%s) is sm_%d%d; rebuild "
                                "with make cuda CUDA_ARCH=sm_%d%d (tensor-core kernels need sm_80 or later) or run "
                                "with --cpu",
                                DS4_CUDA_ARCH, prop.name, prop.major, prop.minor, prop.major, prop.minor);
            return ds4_errf(err, "CUDA: initialization failed: %s", why ? why : "unknown error");
        }
        inited = 1;
    }
    const ds4_hparams *hp = &s->model->hp;
    if (hp->n_hc > DS4K_MAX_HC || hp->head_dim > DS4K_MAX_HEAD_DIM || hp->head_dim % 32 != 0 ||
        hp->n_expert_used > DS4K_MAX_EXPERTS_USED || hp->idx_dim % 8 != 0)
        return ds4_errf(err,
                        "CUDA: this model's shape is beyond what the kernels are built for (hyper-connection streams "
                        "%d, at most %d; head dim %d, a multiple of 32 up to %d; experts per token %d, at most %d; "
                        "indexer dim %d, a multiple of 8); run with --cpu",
                        hp->n_hc, DS4K_MAX_HC, hp->head_dim, DS4K_MAX_HEAD_DIM, hp->n_expert_used,
                        DS4K_MAX_EXPERTS_USED, hp->idx_dim);
    if (upload_weights(s->model, err) != 0) return -1;
    cu_sess *c = (cu_sess *)calloc(1, sizeof(cu_sess));
    s->impl = c;
    c->hp = hp;
    c->w = &s->model->w;
    c->kv_fmt = ds4_kv_attn_fmt(s->kv_type);
    c->ix_fmt = ds4_kv_index_fmt(s->kv_type);
    c->kv_row = ds4_kvrow_bytes((ds4_row_fmt)c->kv_fmt, hp->head_dim, hp->head_dim - hp->rope_dim);
    c->ix_row = ds4_kvrow_bytes((ds4_row_fmt)c->ix_fmt, hp->idx_dim, 0);
    /* oracle mode keeps every product in floats: no 8-bit activation split */
    ds4k_gemv_stream_enable(!s->opts.oracle);
    /* ... and the prefill products' activations beyond f16 (their lo halves) */
    ds4k_wgmma_exact_acts(s->opts.oracle);
    c->max_batch = s->state->chunk;
    c->raw_cap = s->state->raw_cap;
    c->comp_cap_max = s->state->comp_cap_max;
    c->n_pairs = c->hp->rope_dim / 2;
    c->max_rows = max_attended_rows(c->hp, s->state);
    if (cudaStreamCreateWithFlags(&c->st, cudaStreamNonBlocking) != cudaSuccess ||
        cudaStreamCreateWithFlags(&c->st2, cudaStreamNonBlocking) != cudaSuccess ||
        cudaStreamCreateWithFlags(&c->st3, cudaStreamNonBlocking) != cudaSuccess ||
        cudaStreamCreateWithFlags(&c->st4, cudaStreamNonBlocking) != cudaSuccess ||
        cudaEventCreateWithFlags(&c->ev_fork, cudaEventDisableTiming) != cudaSuccess ||
        cudaEventCreateWithFlags(&c->ev_join, cudaEventDisableTiming) != cudaSuccess ||
        cudaEventCreateWithFlags(&c->ev_fork3, cudaEventDisableTiming) != cudaSuccess ||
        cudaEventCreateWithFlags(&c->ev_join3, cudaEventDisableTiming) != cudaSuccess ||
        cudaEventCreateWithFlags(&c->ev_fork4, cudaEventDisableTiming) != cudaSuccess ||
        cudaEventCreateWithFlags(&c->ev_join4, cudaEventDisableTiming) != cudaSuccess ||
        cudaEventCreateWithFlags(&c->ev_ids, cudaEventDisableTiming) != cudaSuccess ||
        cudaEventCreateWithFlags(&c->ev_route, cudaEventDisableTiming) != cudaSuccess ||
        cudaEventCreateWithFlags(&c->ev_routed, cudaEventDisableTiming) != cudaSuccess ||
        cudaEventCreateWithFlags(&c->ev_step[0], cudaEventDisableTiming) != cudaSuccess ||
        cudaEventCreateWithFlags(&c->ev_step[1], cudaEventDisableTiming) != cudaSuccess) {
        cu_destroy(s);
        return ds4_errf(err, "CUDA: cannot create the session's streams");
    }
    c->ring_ratio = cmp_ring_ratio(s, c);
    c->early3_ratio = early3_ratio(c);
    if (cu_alloc(s, c, err) != 0) {
        cu_destroy(s);
        return -1;
    }
    if (ds4k_prepare(c->hp->n_head, c->hp->head_dim, c->max_rows, c->hp->idx_heads, c->hp->idx_dim) != 0) {
        cu_destroy(s);
        return ds4_errf(err, "CUDA: attention over %d rows needs more shared memory than the GPU has; use a smaller --ctx",
                        c->max_rows);
    }
    c->huge_rows = huge_rows_setting();
    double *fr = (double *)malloc(sizeof(double) * c->n_pairs);
    ds4_rope_freqs(c->hp, false, fr);
    cudaMemcpy(c->freq_main, fr, sizeof(double) * c->n_pairs, cudaMemcpyHostToDevice);
    ds4_rope_freqs(c->hp, true, fr);
    cudaMemcpy(c->freq_cmp, fr, sizeof(double) * c->n_pairs, cudaMemcpyHostToDevice);
    free(fr);
    if (cu_push(s, err) != 0) {
        cu_destroy(s);
        return -1;
    }
    const double t0 = ds4_now();
    if (capture_graphs(s, c, err) != 0) {
        cu_destroy(s);
        return -1;
    }
    const double graph_ms = (ds4_now() - t0) * 1e3;
    cudaDeviceProp prop;
    size_t free_b = 0, total_b = 0;
    cudaGetDeviceProperties(&prop, 0);
    cudaMemGetInfo(&free_b, &total_b);
    fprintf(stderr,
            "ds4: CUDA %s: weights %.2f GiB, session %.1f MiB (KV %s, %zu + %zu bytes a compressed row, ctx %d, "
            "prefill_chunk=%d), decode graphs %.0f ms, %.1f GiB free\n",
            prop.name, (double)s->model->w.n_bytes / (1 << 30), (double)c->bytes / (1 << 20),
            ds4_kv_type_name(s->kv_type), c->kv_row, c->ix_row, s->state->ctx, s->state->chunk, graph_ms,
            (double)free_b / (1 << 30));
    return 0;
}

static void cu_destroy(ds4_session *s) {
    cu_sess *c = (cu_sess *)s->impl;
    if (!c) return;
    prof_print();
    cudaStreamSynchronize(c->st);
    if (c->st2) cudaStreamSynchronize(c->st2);
    if (c->st3) cudaStreamSynchronize(c->st3);
    if (c->st4) cudaStreamSynchronize(c->st4);
    for (int g = 0; g < STEP_GRAPHS; g++) {
        if (c->graph_ok[g]) cudaGraphExecDestroy(c->graph[g]);
        if (c->chain_graph_ok[g]) cudaGraphExecDestroy(c->chain_graph[g]);
    }
    for (size_t i = 0; i < sizeof(c->ev_step) / sizeof(c->ev_step[0]); i++) /* not STEP_KINDS: the chain's two slots */
        if (c->ev_step[i]) cudaEventDestroy(c->ev_step[i]);
    if (c->L) {
        for (int il = 0; il < c->hp->n_layer; il++) {
            cu_layer *L = &c->L[il];
            cudaFree(L->raw);
            cudaFree(L->comp);
            cudaFree(L->idx);
            cudaFree(L->cmp_kv);
            cudaFree(L->cmp_score);
            cudaFree(L->icmp_kv);
            cudaFree(L->icmp_score);
            cudaFree(L->ring);
        }
    }
    void *bufs[] = {c->freq_main, c->freq_cmp, c->d_pos, c->d_tok, c->H,        c->a,    c->qr,         c->pre,
                    c->post,      c->M,        c->ck,    c->cg,    c->ik,       c->ig,   c->flat,       c->mix,
                    c->mix_parts, c->mix_ss,   c->kvb,   c->q,     c->o,        c->low,  c->y,          c->iq,
                    c->iw,        c->S,        c->sel,   c->n_sel, c->router,   c->ids,  c->rw,         c->eg,
                    c->eu,        c->ex,       c->eo,    c->shg,   c->shu,      c->sh,   c->z,          c->logits,
                    c->gtok,      c->gpair,    c->gpos,  c->gw,    c->segs,  c->att_part, c->pick, c->logits_keep,
                    c->route_done, c->mixsum, c->cparts, c->hc_bar, c->d_wpos, c->cmp_pool};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) cudaFree(bufs[i]);
    cudaFreeHost(c->h_logits);
    cudaFreeHost(c->h_pos);
    cudaFreeHost(c->h_tok);
    cudaFreeHost(c->h_pick);
    cudaFreeHost(c->h_wpos);
    cudaFreeHost(c->h_picked);
    cudaFreeHost(c->h_ids);
    cudaFreeHost(c->h_rw);
    cudaFreeHost(c->h_gtok);
    cudaFreeHost(c->h_gpair);
    cudaFreeHost(c->h_gpos);
    cudaFreeHost(c->h_gw);
    cudaFreeHost(c->h_segs);
    free(c->L);
    if (c->st) cudaStreamDestroy(c->st);
    if (c->st2) cudaStreamDestroy(c->st2);
    if (c->st3) cudaStreamDestroy(c->st3);
    if (c->st4) cudaStreamDestroy(c->st4);
    if (c->ev_fork) cudaEventDestroy(c->ev_fork);
    if (c->ev_join) cudaEventDestroy(c->ev_join);
    if (c->ev_fork3) cudaEventDestroy(c->ev_fork3);
    if (c->ev_join3) cudaEventDestroy(c->ev_join3);
    if (c->ev_fork4) cudaEventDestroy(c->ev_fork4);
    if (c->ev_join4) cudaEventDestroy(c->ev_join4);
    if (c->ev_ids) cudaEventDestroy(c->ev_ids);
    if (c->ev_route) cudaEventDestroy(c->ev_route);
    if (c->ev_routed) cudaEventDestroy(c->ev_routed);
    /* the device weights stay with the model (released by ds4_model_close), so
     * sessions can come and go without copying 80 GiB again */
    if (s->model->backend_weights) ((cu_weights *)s->model->backend_weights)->refs--;
    free(c);
    s->impl = NULL;
}

static size_t cu_memory(const ds4_session *s) {
    const cu_sess *c = (const cu_sess *)s->impl;
    return c ? c->bytes : 0;
}

/* Bytes of the sub-batch buffers cu_alloc makes for a chunk of at least SB
 * tokens: HC scratch, q and o, the indexer's queries and its scores over
 * every compressed row, the selection, the head's input and logits; and the
 * HC mixer's parts, which hold the whole chunk. */
static size_t sub_batch_bytes(const ds4_hparams *hp, size_t comp_cap, size_t chunk) {
    const size_t HC = hp->n_hc, D = hp->n_embd, MIXW = (2 + HC) * HC, QD = (size_t)hp->n_head * hp->head_dim;
    const size_t per = HC * D + MIXW + 2 * QD + (size_t)hp->idx_heads * (hp->idx_dim + 1) + (comp_cap + 1) +
                       (size_t)hp->idx_topk + 1 + D + (size_t)hp->n_vocab;
    return ((size_t)SB * per + chunk * HC_PARTS * (MIXW + 1)) * 4;
}

/* Default prefill chunk: 4096 where GPU memory allows, else 2048. Take 4096
 * when, after the weights (if not resident yet), a generous estimate of the
 * f16 KV cache of ctx and the batch buffers of a 4096-token chunk, 1 GiB is
 * still free. */
static int cu_default_chunk(const ds4_model *m, int ctx) {
    const ds4_hparams *hp = &m->hp;
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) return DS4_DEFAULT_PREFILL_CHUNK;
    const size_t weights = m->backend_weights ? 0 : m->w.n_bytes;
    const size_t hd = hp->head_dim, id = hp->idx_dim, big = DS4_MAX_SAFE_PREFILL_CHUNK;
    cu_sess sizes = {}; /* only the list's sizes are read */
    batch_buf bb[BATCH_BUFS_MAX] = {};
    const int nbb = batch_buffers(&sizes, hp, bb);
    if (nbb < 0) return DS4_DEFAULT_PREFILL_CHUNK;
    size_t per_token = 0;
    for (int i = 0; i < nbb; i++) per_token += bb[i].per_token;
    size_t kv = 0;
    for (int il = 0; il < hp->n_layer; il++) {
        kv += ((size_t)hp->window + big) * hd * 2;
        if (hp->ratio[il] > 0) kv += ((size_t)ctx / hp->ratio[il] + 2) * hd * 2 + ((size_t)ctx / 4 + 2) * id * 2;
    }
    const size_t need = weights + kv + big * per_token + sub_batch_bytes(hp, (size_t)ctx / 4 + 2, big) + (1ull << 30);
    return free_b >= need ? (int)big : DS4_DEFAULT_PREFILL_CHUNK;
}

static const ds4_backend_ops g_cuda_ops = {
    "cuda",    cu_init,          cu_destroy,     cu_eval,        cu_pull,       cu_push,
    cu_memory, cu_default_chunk, cu_chain_begin, cu_chain_queue, cu_chain_wait, cu_chain_end,
};

extern "C" const ds4_backend_ops *ds4_cuda_backend(void) { return &g_cuda_ops; }

extern "C" int ds4_cuda_cmp_ring(const ds4_session *s) {
    return s && s->ops == &g_cuda_ops && s->impl ? ((const cu_sess *)s->impl)->ring_ratio : 0;
}

extern "C" bool ds4_cuda_available(void) {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}
