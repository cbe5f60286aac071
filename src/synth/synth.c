/* ds4 — synthetic model writer (see synth.h). */
#include <fcntl.h>
#include <pthread.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf/gguf.h"
#include "gguf/quant.h"
#include "model/model.h"
#include "synth/synth_internal.h"
#include "util/clock.h"
#include "util/f16.h"
#include "util/pool.h"
#include "util/rng.h"

/* ------------------------------------------------------------------ options */

void ds4_synth_opts_default(ds4_synth_opts *o) {
    memset(o, 0, sizeof(*o));
    ds4_synth_tiny_hparams(&o->hp);
    o->policy = DS4_SYNTH_F32;
    o->expert_type = DS4_TYPE_IQ2_XXS;
    o->down_type = DS4_TYPE_Q2_K;
    o->q4_from_layer = -1;
    o->branch_gain = 1.0f;
    o->ffn_gain = 1.0f;
    o->seed = 1;
}

void ds4_synth_tiny_hparams(ds4_hparams *hp) {
    ds4_hparams_published(hp);
    hp->n_layer = 4;
    hp->n_embd = 128;
    hp->n_vocab = 512;
    hp->n_head = 4;
    hp->head_dim = 128;
    hp->rope_dim = 64;
    hp->q_lora = 64;
    hp->o_groups = 2;
    hp->o_lora = 32;
    hp->n_expert = 8;
    hp->n_expert_used = 2;
    hp->n_ff = 64;
    hp->idx_heads = 64;
    hp->idx_dim = 128;
    hp->idx_topk = 512;
    for (int il = 0; il < hp->n_layer; il++) {
        hp->ratio[il] = il < 2 ? 0 : (il % 2 == 0 ? 4 : 128);
        hp->swiglu_clamp[il] = 10.0f;
    }
}

/* ------------------------------------------------------------------ tensor plan */

typedef enum init_kind {
    INIT_NORMAL,   /* N(0, std) */
    INIT_NORMW,    /* 1 + 0.1 N(0,1): RMSNorm weights */
    INIT_UNIFORM,  /* U(lo = std, hi = std2): HC scales */
    INIT_TID2EID,  /* distinct random expert ids per token row */
} init_kind;

typedef struct tspec {
    char name[96];
    int type;
    int n_dims;
    int64_t ne[3];
    init_kind init;
    float std, std2;
    int64_t index; /* in the writer */
} tspec;

typedef struct plan {
    tspec *t;
    int n, cap;
} plan;

static void add(plan *p, const char *name, int type, int nd, int64_t a, int64_t b, int64_t c, init_kind k, float std,
                float std2) {
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 256;
        p->t = realloc(p->t, sizeof(tspec) * (size_t)p->cap);
    }
    tspec *t = &p->t[p->n++];
    memset(t, 0, sizeof(*t));
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->type = type;
    t->n_dims = nd;
    t->ne[0] = a;
    t->ne[1] = b;
    t->ne[2] = c;
    t->init = k;
    t->std = std;
    t->std2 = std2;
}

static void build_plan(const ds4_synth_opts *o, plan *p) {
    const ds4_hparams *hp = &o->hp;
    const bool ds4 = o->policy == DS4_SYNTH_DS4;
    const int F16 = ds4 ? DS4_TYPE_F16 : DS4_TYPE_F32, Q8 = ds4 ? DS4_TYPE_Q8_0 : DS4_TYPE_F32, F32 = DS4_TYPE_F32;
    const int64_t D = hp->n_embd, V = hp->n_vocab, HC = hp->n_hc, MIX = ds4_hc_mix(hp);
    const int64_t HD = hp->head_dim, QD = (int64_t)hp->n_head * HD, GIN = QD / hp->o_groups;
    const int64_t LOW = (int64_t)hp->o_groups * hp->o_lora, E = hp->n_expert, FF = hp->n_ff, ID = hp->idx_dim;
    const float bg = o->branch_gain, fg = o->ffn_gain;
#define S(k) (1.0f / sqrtf((float)(k)))
    add(p, "token_embd.weight", F16, 2, D, V, 1, INIT_NORMAL, 1.0f, 0);
    add(p, "output.weight", Q8, 2, D, V, 1, INIT_NORMAL, S(D), 0);
    add(p, "output_norm.weight", F32, 1, D, 1, 1, INIT_NORMW, 0, 0);
    add(p, "output_hc_fn.weight", F16, 2, HC * D, HC, 1, INIT_NORMAL, S(HC * D), 0);
    add(p, "output_hc_scale.weight", F32, 1, 1, 1, 1, INIT_UNIFORM, 0.5f, 1.5f);
    add(p, "output_hc_base.weight", F32, 1, HC, 1, 1, INIT_NORMAL, 0.5f, 0);
    char nm[96];
#define N(s) (snprintf(nm, sizeof(nm), "blk.%d.%s", il, s), nm)
    for (int il = 0; il < hp->n_layer; il++) {
        const ds4_attn_kind kind = ds4_layer_kind(hp, il);
        int et = o->expert_type, dt = o->down_type;
        if (o->q4_from_layer >= 0 && il >= o->q4_from_layer) et = dt = DS4_TYPE_Q4_K;
        if (!ds4) et = dt = DS4_TYPE_F32;
        add(p, N("hc_attn_fn.weight"), F16, 2, HC * D, MIX, 1, INIT_NORMAL, S(HC * D), 0);
        add(p, N("hc_attn_scale.weight"), F32, 1, 3, 1, 1, INIT_UNIFORM, 0.5f, 1.5f);
        add(p, N("hc_attn_base.weight"), F32, 1, MIX, 1, 1, INIT_NORMAL, 0.5f, 0);
        add(p, N("hc_ffn_fn.weight"), F16, 2, HC * D, MIX, 1, INIT_NORMAL, S(HC * D), 0);
        add(p, N("hc_ffn_scale.weight"), F32, 1, 3, 1, 1, INIT_UNIFORM, 0.5f, 1.5f);
        add(p, N("hc_ffn_base.weight"), F32, 1, MIX, 1, 1, INIT_NORMAL, 0.5f, 0);
        add(p, N("attn_norm.weight"), F32, 1, D, 1, 1, INIT_NORMW, 0, 0);
        add(p, N("attn_q_a.weight"), Q8, 2, D, hp->q_lora, 1, INIT_NORMAL, S(D), 0);
        add(p, N("attn_q_a_norm.weight"), F32, 1, hp->q_lora, 1, 1, INIT_NORMW, 0, 0);
        add(p, N("attn_q_b.weight"), Q8, 2, hp->q_lora, QD, 1, INIT_NORMAL, S(hp->q_lora), 0);
        add(p, N("attn_kv.weight"), Q8, 2, D, HD, 1, INIT_NORMAL, S(D), 0);
        add(p, N("attn_kv_a_norm.weight"), F32, 1, HD, 1, 1, INIT_NORMW, 0, 0);
        add(p, N("attn_sinks.weight"), F32, 1, hp->n_head, 1, 1, INIT_NORMAL, 1.0f, 0);
        add(p, N("attn_output_a.weight"), Q8, 2, GIN, LOW, 1, INIT_NORMAL, S(GIN), 0);
        add(p, N("attn_output_b.weight"), Q8, 2, LOW, D, 1, INIT_NORMAL, bg * S(LOW), 0);
        if (kind != DS4_ATTN_WINDOW) {
            const int64_t W = ds4_cmp_width(hp, il);
            add(p, N("attn_compressor_kv.weight"), F16, 2, D, W, 1, INIT_NORMAL, S(D), 0);
            add(p, N("attn_compressor_gate.weight"), F16, 2, D, W, 1, INIT_NORMAL, S(D), 0);
            add(p, N("attn_compressor_ape.weight"), F16, 2, W, hp->ratio[il], 1, INIT_NORMAL, 0.5f, 0);
            add(p, N("attn_compressor_norm.weight"), F32, 1, HD, 1, 1, INIT_NORMW, 0, 0);
        }
        if (kind == DS4_ATTN_CSA) {
            add(p, N("indexer.attn_q_b.weight"), F16, 2, hp->q_lora, (int64_t)hp->idx_heads * ID, 1, INIT_NORMAL,
                S(hp->q_lora), 0);
            add(p, N("indexer.proj.weight"), F16, 2, D, hp->idx_heads, 1, INIT_NORMAL, S(D), 0);
            add(p, N("indexer_compressor_kv.weight"), F16, 2, D, 2 * ID, 1, INIT_NORMAL, S(D), 0);
            add(p, N("indexer_compressor_gate.weight"), F16, 2, D, 2 * ID, 1, INIT_NORMAL, S(D), 0);
            add(p, N("indexer_compressor_ape.weight"), F16, 2, 2 * ID, 4, 1, INIT_NORMAL, 0.5f, 0);
            add(p, N("indexer_compressor_norm.weight"), F32, 1, ID, 1, 1, INIT_NORMW, 0, 0);
        }
        add(p, N("ffn_norm.weight"), F32, 1, D, 1, 1, INIT_NORMW, 0, 0);
        add(p, N("ffn_gate_inp.weight"), F16, 2, D, E, 1, INIT_NORMAL, S(D), 0);
        if (ds4_layer_is_hash(hp, il))
            add(p, N("ffn_gate_tid2eid.weight"), DS4_TYPE_I32, 2, hp->n_expert_used, V, 1, INIT_TID2EID, 0, 0);
        else
            add(p, N("exp_probs_b.bias"), F32, 1, E, 1, 1, INIT_NORMAL, 0.1f, 0);
        add(p, N("ffn_gate_exps.weight"), et, 3, D, FF, E, INIT_NORMAL, fg * S(D), 0);
        add(p, N("ffn_up_exps.weight"), et, 3, D, FF, E, INIT_NORMAL, fg * S(D), 0);
        add(p, N("ffn_down_exps.weight"), dt, 3, FF, D, E, INIT_NORMAL, bg * S(FF), 0);
        add(p, N("ffn_gate_shexp.weight"), Q8, 2, D, FF, 1, INIT_NORMAL, fg * S(D), 0);
        add(p, N("ffn_up_shexp.weight"), Q8, 2, D, FF, 1, INIT_NORMAL, fg * S(D), 0);
        add(p, N("ffn_down_shexp.weight"), Q8, 2, FF, D, 1, INIT_NORMAL, bg * S(FF), 0);
    }
#undef N
#undef S
}

/* ------------------------------------------------------------------ random values */

/* Fast approximate standard normal: sum of four 16-bit uniforms (Irwin-Hall),
 * rescaled. Plenty for random weights and ~10x cheaper than Box-Muller. */
static inline float fast_normal(ds4_rng *r) {
    const uint64_t u = ds4_rng_u64(r);
    const float s = (float)(u & 0xffff) + (float)((u >> 16) & 0xffff) + (float)((u >> 32) & 0xffff) + (float)(u >> 48);
    return (s * (1.0f / 65536.0f) - 2.0f) * 1.7320508f;
}

static void gen_floats(const tspec *t, ds4_rng *r, float *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        switch (t->init) {
        case INIT_NORMAL: out[i] = fast_normal(r) * t->std; break;
        case INIT_NORMW: out[i] = 1.0f + 0.1f * fast_normal(r); break;
        case INIT_UNIFORM: out[i] = t->std + (t->std2 - t->std) * ds4_rng_uniform(r); break;
        case INIT_TID2EID: out[i] = 0; break;
        }
    }
}

/* Random valid blocks of a quantized type whose dequantized values have
 * roughly standard deviation `std` and zero mean, generated directly (no
 * quantizer): the only practical way to fill ~280 B weights in seconds. */
static void gen_blocks_direct(int type, ds4_rng *r, float std, uint8_t *dst, int64_t n) {
    const ds4_type_traits *tt = ds4_type_info(type);
    const int64_t nb = n / tt->block;
    for (int64_t b = 0; b < nb; b++) {
        uint8_t *blk = dst + (size_t)b * tt->block_bytes;
        switch (type) {
        case DS4_TYPE_Q8_0: {
            /* q uniform in [-127, 127]: std 73.6 */
            const uint16_t d = ds4_f32_to_f16(std / 73.6f);
            memcpy(blk, &d, 2);
            for (int i = 0; i < 32; i++) blk[2 + i] = (uint8_t)(int8_t)((int)ds4_rng_below(r, 255) - 127);
            break;
        }
        case DS4_TYPE_Q2_K: {
            /* value = d*sc*q - dmin*m with dmin = d and m ~ 1.5 sc: centred, std ~ d*sc*1.118 */
            const float d = std / (11.5f * 1.118f);
            for (int j = 0; j < 16; j++) {
                const int sc = 8 + (int)ds4_rng_below(r, 8);
                int m = (int)(1.5f * sc + 0.5f);
                if (m > 15) m = 15;
                blk[j] = (uint8_t)(sc | (m << 4));
            }
            for (int i = 0; i < 64; i++) blk[16 + i] = (uint8_t)ds4_rng_u64(r);
            const uint16_t hd = ds4_f32_to_f16(d), hm = ds4_f32_to_f16(d);
            memcpy(blk + 80, &hd, 2);
            memcpy(blk + 82, &hm, 2);
            break;
        }
        case DS4_TYPE_Q4_K: {
            /* value = d*sc*q - 8d*m with m ~ 7.5 sc / 8: centred, std ~ d*sc*4.6 */
            const float d = std / (47.5f * 4.6f);
            uint8_t sc[8], mn[8];
            for (int j = 0; j < 8; j++) {
                sc[j] = (uint8_t)(32 + ds4_rng_below(r, 32));
                int m = (int)(7.5f * sc[j] / 8.0f + 0.5f);
                mn[j] = (uint8_t)(m > 63 ? 63 : m);
            }
            const uint16_t hd = ds4_f32_to_f16(d), hm = ds4_f32_to_f16(8.0f * d);
            memcpy(blk, &hd, 2);
            memcpy(blk + 2, &hm, 2);
            uint8_t *s = blk + 4;
            for (int j = 0; j < 4; j++) {
                s[j] = (uint8_t)((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
                s[j + 4] = (uint8_t)((mn[j] & 63) | ((mn[j + 4] >> 4) << 6));
                s[j + 8] = (uint8_t)((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
            }
            for (int i = 0; i < 128; i++) blk[16 + i] = (uint8_t)ds4_rng_u64(r);
            break;
        }
        case DS4_TYPE_IQ2_XXS: {
            /* grid magnitudes have rms ~26; scale code 7: db = d * 7.5/4 */
            const uint16_t d = ds4_f32_to_f16(std / (26.0f * 7.5f * 0.25f));
            memcpy(blk, &d, 2);
            for (int s = 0; s < 8; s++) {
                uint32_t a0 = (uint32_t)ds4_rng_u64(r), a1 = 0;
                for (int i = 0; i < 4; i++) a1 |= (ds4_rng_below(r, 128)) << (7 * i);
                a1 |= (uint32_t)(6 + ds4_rng_below(r, 4)) << 28;
                memcpy(blk + 2 + 8 * s, &a0, 4);
                memcpy(blk + 2 + 8 * s + 4, &a1, 4);
            }
            break;
        }
        default: break;
        }
    }
}

/* ------------------------------------------------------------------ parallel writing */

typedef struct job {
    int tensor;
    int64_t row0, rows;
} job;

typedef struct write_ctx {
    const ds4_synth_opts *o;
    const plan *p;
    gguf_writer *w;
    int fd;
    job *jobs;
    int64_t n_jobs;
    float **fbuf;   /* per thread */
    uint8_t **qbuf; /* per thread */
    int64_t buf_elems;
    int failed;
    ds4_err err;
    int64_t done_elems, total_elems, last_report;
    pthread_mutex_t mu;
    double t0;
} write_ctx;

#define JOB_ELEMS (1 << 22)

static void write_range(void *vctx, int64_t b, int64_t e, int thread) {
    write_ctx *c = vctx;
    for (int64_t ji = b; ji < e; ji++) {
        const job *jb = &c->jobs[ji];
        const tspec *t = &c->p->t[jb->tensor];
        const int64_t K = t->ne[0], n = jb->rows * K;
        /* one stream per (tensor, job): the bytes never depend on the thread count */
        ds4_rng r;
        ds4_rng_seed(&r, c->o->seed * 0x9e3779b97f4a7c15ull + (uint64_t)jb->tensor * 1000003ull + (uint64_t)jb->row0);
        const size_t bytes = ds4_row_bytes(t->type, K) * (size_t)jb->rows;
        uint8_t *q = c->qbuf[thread];
        if (t->init == INIT_TID2EID) {
            const int E = c->o->hp.n_expert;
            int32_t *ids = (int32_t *)q;
            for (int64_t row = 0; row < jb->rows; row++) {
                for (int64_t k = 0; k < K; k++) {
                    int32_t x;
                    bool dup;
                    do { /* distinct experts within a token's row when there are enough */
                        x = (int32_t)ds4_rng_below(&r, (uint32_t)E);
                        dup = false;
                        for (int64_t k2 = 0; k2 < k && K <= E; k2++) dup |= ids[row * K + k2] == x;
                    } while (dup);
                    ids[row * K + k] = x;
                }
            }
        } else if (t->type != DS4_TYPE_F32 && t->type != DS4_TYPE_F16 && t->type != DS4_TYPE_BF16 &&
                   t->init == INIT_NORMAL && n >= JOB_ELEMS / 4 && !c->o->exact_quant) {
            gen_blocks_direct(t->type, &r, t->std, q, n);
        } else {
            float *f = c->fbuf[thread];
            gen_floats(t, &r, f, n);
            for (int64_t row = 0; row < jb->rows; row++)
                ds4_quantize_row(t->type, f + row * K, q + ds4_row_bytes(t->type, K) * (size_t)row, K);
        }
        const uint64_t off = gguf_writer_tensor_offset(c->w, t->index) + ds4_row_bytes(t->type, K) * (uint64_t)jb->row0;
        ds4_err err;
        if (gguf_pwrite_all(c->fd, q, bytes, off, &err) != 0) {
            pthread_mutex_lock(&c->mu);
            if (!c->failed) c->err = err;
            c->failed = 1;
            pthread_mutex_unlock(&c->mu);
            return;
        }
        if (c->o->progress && c->total_elems >= 100000000) {
            pthread_mutex_lock(&c->mu);
            c->done_elems += n;
            const int64_t pct = c->done_elems * 100 / (c->total_elems ? c->total_elems : 1);
            if (pct >= c->last_report + 5) {
                c->last_report = pct;
                const double dt = ds4_now() - c->t0;
                fprintf(stderr, "ds4-synth: %3lld%% of %.2f G weights, %.1f s\n", (long long)pct, (double)c->total_elems / 1e9,
                        dt);
            }
            pthread_mutex_unlock(&c->mu);
        }
    }
}

/* ------------------------------------------------------------------ entry point */

int ds4_synth_write(const char *path, const ds4_synth_opts *o, ds4_err *err) {
    const ds4_hparams *hp = &o->hp;
    if (ds4_hparams_check(hp, err) != 0) return ds4_err_prefix(err, "invalid shape");
    if (o->policy == DS4_SYNTH_DS4) {
        const int ts[] = {o->expert_type, o->down_type};
        for (int i = 0; i < 2; i++)
            if (ts[i] != DS4_TYPE_IQ2_XXS && ts[i] != DS4_TYPE_Q2_K && ts[i] != DS4_TYPE_Q4_K && ts[i] != DS4_TYPE_Q8_0 &&
                ts[i] != DS4_TYPE_F16 && ts[i] != DS4_TYPE_F32)
                return ds4_errf(err, "unsupported expert type %s", ds4_type_name(ts[i]));
    }
    plan p = {0};
    build_plan(o, &p);
    /* every row must be whole blocks */
    for (int i = 0; i < p.n; i++) {
        if (ds4_row_bytes(p.t[i].type, p.t[i].ne[0]) == 0) {
            const ds4_type_traits *tt = ds4_type_info(p.t[i].type);
            int rc = ds4_errf(err, "tensor '%s': row length %lld is not a multiple of the %s block (%lld); choose sizes "
                                   "that are multiples of 256 for K-quant / IQ2 experts and of 32 for Q8_0",
                              p.t[i].name, (long long)p.t[i].ne[0], ds4_type_name(p.t[i].type), (long long)(tt ? tt->block : 0));
            free(p.t);
            return rc;
        }
    }
    synth_vocab voc;
    if (synth_vocab_build(&voc, hp->n_vocab, o->tokdata, err) != 0) {
        free(p.t);
        return -1;
    }
    gguf_writer *w = gguf_writer_create(32);
    gguf_w_str(w, "general.name", "ds4 synthetic DeepSeek V4 Flash");
    ds4_hparams_to_gguf(hp, w);
    gguf_w_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_w_str(w, "tokenizer.ggml.pre", "joyai-llm");
    gguf_w_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)voc.tokens, NULL, (uint64_t)voc.n_tokens);
    gguf_w_arr_str(w, "tokenizer.ggml.merges", (const char *const *)voc.merges, NULL, (uint64_t)voc.n_merges);
    gguf_w_u32(w, "ds4.synthetic.seed", (uint32_t)o->seed);
    gguf_w_f32(w, "ds4.synthetic.branch_gain", o->branch_gain);
    gguf_w_f32(w, "ds4.synthetic.ffn_gain", o->ffn_gain);
    synth_vocab_free(&voc);
    for (int i = 0; i < p.n; i++) {
        p.t[i].index = gguf_w_tensor(w, p.t[i].name, (ds4_type)p.t[i].type, (uint32_t)p.t[i].n_dims, p.t[i].ne);
        if (p.t[i].index < 0) {
            gguf_writer_free(w);
            free(p.t);
            return ds4_errf(err, "cannot add tensor '%s'", p.t[i].name);
        }
    }
    const int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    if (fd < 0) {
        gguf_writer_free(w);
        free(p.t);
        return ds4_errf(err, "cannot create '%s'", path);
    }
    int rc = gguf_writer_write_header(w, fd, err);
    if (rc == 0 && !o->header_only) {
        write_ctx c;
        memset(&c, 0, sizeof(c));
        c.o = o;
        c.p = &p;
        c.w = w;
        c.fd = fd;
        pthread_mutex_init(&c.mu, NULL);
        c.t0 = ds4_now();
        /* jobs of about JOB_ELEMS elements (whole rows) */
        int64_t cap = 1024, max_rows_elems = 0;
        c.jobs = malloc(sizeof(job) * (size_t)cap);
        for (int i = 0; i < p.n; i++) {
            const int64_t K = p.t[i].ne[0], rows = p.t[i].ne[1] * p.t[i].ne[2];
            int64_t per = JOB_ELEMS / K;
            if (per < 1) per = 1;
            for (int64_t r0 = 0; r0 < rows; r0 += per) {
                if (c.n_jobs == cap) {
                    cap *= 2;
                    c.jobs = realloc(c.jobs, sizeof(job) * (size_t)cap);
                }
                const int64_t nr = rows - r0 < per ? rows - r0 : per;
                c.jobs[c.n_jobs++] = (job){i, r0, nr};
                if (nr * K > max_rows_elems) max_rows_elems = nr * K;
                c.total_elems += nr * K;
            }
        }
        ds4_pool *pool = ds4_pool_create(o->n_threads);
        const int nt = ds4_pool_threads(pool);
        c.fbuf = calloc((size_t)nt, sizeof(float *));
        c.qbuf = calloc((size_t)nt, sizeof(uint8_t *));
        for (int i = 0; i < nt; i++) {
            c.fbuf[i] = malloc(sizeof(float) * (size_t)max_rows_elems);
            c.qbuf[i] = malloc(sizeof(float) * (size_t)max_rows_elems); /* f32 is the widest type */
        }
        ds4_pool_for(pool, c.n_jobs, 1, write_range, &c);
        if (c.failed) rc = ds4_errf(err, "writing '%s': %s", path, c.err.msg);
        for (int i = 0; i < nt; i++) {
            free(c.fbuf[i]);
            free(c.qbuf[i]);
        }
        free(c.fbuf);
        free(c.qbuf);
        free(c.jobs);
        ds4_pool_destroy(pool);
        pthread_mutex_destroy(&c.mu);
    }
    if (rc == 0) rc = gguf_writer_finish(w, fd, err);
    if (close(fd) != 0 && rc == 0) rc = ds4_errf(err, "closing '%s' failed", path);
    gguf_writer_free(w);
    free(p.t);
    return rc;
}

/* ------------------------------------------------------------------ dequantized copy */

int ds4_synth_dequantize_copy(const char *in_path, const char *out_path, ds4_err *err) {
    gguf_file *f = gguf_open(in_path, err);
    if (!f) return -1;
    gguf_writer *w = gguf_writer_create(32);
    for (uint64_t i = 0; i < f->n_kv; i++) gguf_w_copy(w, &f->kv[i]);
    int64_t *idx = malloc(sizeof(int64_t) * (size_t)(f->n_tensors ? f->n_tensors : 1));
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        const ds4_type out_type = t->type == DS4_TYPE_I32 ? DS4_TYPE_I32 : DS4_TYPE_F32;
        idx[i] = gguf_w_tensor(w, t->name, out_type, t->n_dims, t->ne);
    }
    int rc = -1;
    const int fd = open(out_path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    if (fd < 0) {
        ds4_errf(err, "cannot create '%s'", out_path);
        goto done;
    }
    if (gguf_writer_write_header(w, fd, err) != 0) goto close_done;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        const uint64_t off = gguf_writer_tensor_offset(w, idx[i]);
        if (t->type == DS4_TYPE_I32) {
            if (gguf_pwrite_all(fd, t->data, t->size, off, err) != 0) goto close_done;
            continue;
        }
        const int64_t K = t->ne[0], rows = (int64_t)(t->size / ds4_row_bytes(t->type, K));
        float *row = malloc(sizeof(float) * (size_t)K);
        for (int64_t r = 0; r < rows; r++) {
            ds4_dequant_row(t->type, (const uint8_t *)t->data + (size_t)r * ds4_row_bytes(t->type, K), row, K);
            if (gguf_pwrite_all(fd, row, sizeof(float) * (size_t)K, off + (uint64_t)r * K * 4, err) != 0) {
                free(row);
                goto close_done;
            }
        }
        free(row);
    }
    rc = gguf_writer_finish(w, fd, err);
close_done:
    close(fd);
done:
    free(idx);
    gguf_writer_free(w);
    gguf_close(f);
    return rc;
}
