/* ds4 — binding GGUF tensors to model roles (see weights.h). */
#include "model/weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf/quant.h"

/* Which tensor types a role accepts. The first type of each set is the one
 * the published ds4 files use for it (experts: any of the first three). */
typedef enum policy {
    POL_F32,    /* norms, scales, biases, sinks */
    POL_F16W,   /* F16 in ds4: embedding, HC mixers, compressors, indexer, router */
    POL_Q8W,    /* Q8_0 in ds4: attention projections, shared expert, output head */
    POL_EXPERT, /* IQ2_XXS / Q2_K / Q4_K in ds4 */
    POL_I32,    /* hash routing table */
} policy;

static bool type_allowed(policy p, int t) {
    switch (p) {
    case POL_F32: return t == DS4_TYPE_F32;
    case POL_F16W: return t == DS4_TYPE_F16 || t == DS4_TYPE_BF16 || t == DS4_TYPE_F32;
    case POL_Q8W: return t == DS4_TYPE_Q8_0 || t == DS4_TYPE_F16 || t == DS4_TYPE_BF16 || t == DS4_TYPE_F32;
    case POL_EXPERT:
        return t == DS4_TYPE_IQ2_XXS || t == DS4_TYPE_Q2_K || t == DS4_TYPE_Q4_K || t == DS4_TYPE_Q8_0 ||
               t == DS4_TYPE_F16 || t == DS4_TYPE_BF16 || t == DS4_TYPE_F32;
    case POL_I32: return t == DS4_TYPE_I32;
    }
    return false;
}

static bool type_published(policy p, int t) {
    switch (p) {
    case POL_F32: return t == DS4_TYPE_F32;
    case POL_F16W: return t == DS4_TYPE_F16;
    case POL_Q8W: return t == DS4_TYPE_Q8_0;
    case POL_EXPERT: return t == DS4_TYPE_IQ2_XXS || t == DS4_TYPE_Q2_K || t == DS4_TYPE_Q4_K;
    case POL_I32: return t == DS4_TYPE_I32;
    }
    return false;
}

static const char *policy_types(policy p) {
    switch (p) {
    case POL_F32: return "f32";
    case POL_F16W: return "f16, bf16 or f32";
    case POL_Q8W: return "q8_0, f16, bf16 or f32";
    case POL_EXPERT: return "iq2_xxs, q2_K, q4_K, q8_0, f16, bf16 or f32";
    case POL_I32: return "i32";
    }
    return "?";
}

typedef struct binder {
    const gguf_file *f;
    ds4_weights *w;
    unsigned char *used; /* one flag per file tensor */
    ds4_err *err;
} binder;

static void fmt_dims(char *buf, size_t cap, int n, const int64_t *ne) {
    size_t o = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < n && o < cap; i++) o += (size_t)snprintf(buf + o, cap - o, "%s%lld", i ? ", " : "", (long long)ne[i]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
}

/* Bind one tensor. nd = expected dims; ne = expected sizes. */
static int bind(binder *b, ds4_tensor *dst, const char *name, int nd, int64_t ne0, int64_t ne1, int64_t ne2, policy p,
                bool required) {
    memset(dst, 0, sizeof(*dst));
    const gguf_tensor *t = gguf_find_tensor(b->f, name);
    if (!t) {
        if (!required) return 0;
        return ds4_errf(b->err, "tensor '%s' is missing", name);
    }
    const int64_t want[3] = {ne0, ne1, ne2};
    bool ok = (int)t->n_dims == nd;
    for (int i = 0; ok && i < nd; i++) ok = t->ne[i] == want[i];
    if (!ok) {
        char got[96], exp[96];
        fmt_dims(got, sizeof(got), (int)t->n_dims, t->ne);
        fmt_dims(exp, sizeof(exp), nd, want);
        return ds4_errf(b->err, "tensor '%s': shape %s expected from the metadata, file has %s", name, exp, got);
    }
    if (!type_allowed(p, t->type))
        return ds4_errf(b->err, "tensor '%s' has type %s, expected %s", name, ds4_type_name(t->type), policy_types(p));
    if (!type_published(p, t->type)) b->w->published_types = false;
    b->used[t - b->f->tensors] = 1;
    dst->name = t->name;
    dst->type = t->type;
    dst->n_dims = (int)t->n_dims;
    for (int i = 0; i < 4; i++) dst->ne[i] = i < (int)t->n_dims ? t->ne[i] : 1;
    dst->data = t->data;
    dst->size = t->size;
    uint64_t n = 1;
    for (int i = 0; i < (int)t->n_dims; i++) n *= (uint64_t)t->ne[i];
    b->w->n_params += n;
    b->w->n_bytes += t->size;
    return 0;
}

int ds4_weights_bind(const gguf_file *f, const ds4_hparams *hp, ds4_weights *w, ds4_err *err) {
    memset(w, 0, sizeof(*w));
    w->published_types = true;
    binder b = {f, w, calloc(f->n_tensors ? f->n_tensors : 1, 1), err};
    w->layers = calloc((size_t)hp->n_layer, sizeof(*w->layers));
    if (!b.used || !w->layers) {
        free(b.used);
        free(w->layers);
        w->layers = NULL;
        return ds4_errf(err, "out of memory binding tensors");
    }
    w->n_layers = hp->n_layer;

    const int64_t D = hp->n_embd, V = hp->n_vocab, HC = hp->n_hc, MIX = ds4_hc_mix(hp);
    const int64_t HD = hp->head_dim, QD = (int64_t)hp->n_head * hp->head_dim;
    const int64_t GIN = QD / hp->o_groups, LOW = (int64_t)hp->o_groups * hp->o_lora;
    const int64_t E = hp->n_expert, FF = hp->n_ff, ID = hp->idx_dim, IQD = (int64_t)hp->idx_heads * hp->idx_dim;
    int rc = 0;
#define B(dst, name, nd, a, bb, c, pol, req)                                 \
    do {                                                                      \
        if ((rc = bind(&b, dst, name, nd, a, bb, c, pol, req)) != 0) goto out; \
    } while (0)

    B(&w->token_embd, "token_embd.weight", 2, D, V, 1, POL_F16W, true);
    B(&w->output, "output.weight", 2, D, V, 1, POL_Q8W, true);
    B(&w->output_norm, "output_norm.weight", 1, D, 1, 1, POL_F32, true);
    B(&w->output_hc_fn, "output_hc_fn.weight", 2, HC * D, HC, 1, POL_F16W, true);
    B(&w->output_hc_scale, "output_hc_scale.weight", 1, 1, 1, 1, POL_F32, true);
    B(&w->output_hc_base, "output_hc_base.weight", 1, HC, 1, 1, POL_F32, true);

    char nm[128];
#define LN(suffix) (snprintf(nm, sizeof(nm), "blk.%d.%s", il, suffix), nm)
    for (int il = 0; il < hp->n_layer; il++) {
        ds4_layer_weights *L = &w->layers[il];
        const ds4_attn_kind kind = ds4_layer_kind(hp, il);
        B(&L->hc_attn_fn, LN("hc_attn_fn.weight"), 2, HC * D, MIX, 1, POL_F16W, true);
        B(&L->hc_attn_scale, LN("hc_attn_scale.weight"), 1, 3, 1, 1, POL_F32, true);
        B(&L->hc_attn_base, LN("hc_attn_base.weight"), 1, MIX, 1, 1, POL_F32, true);
        B(&L->hc_ffn_fn, LN("hc_ffn_fn.weight"), 2, HC * D, MIX, 1, POL_F16W, true);
        B(&L->hc_ffn_scale, LN("hc_ffn_scale.weight"), 1, 3, 1, 1, POL_F32, true);
        B(&L->hc_ffn_base, LN("hc_ffn_base.weight"), 1, MIX, 1, 1, POL_F32, true);

        B(&L->attn_norm, LN("attn_norm.weight"), 1, D, 1, 1, POL_F32, true);
        B(&L->q_a, LN("attn_q_a.weight"), 2, D, hp->q_lora, 1, POL_Q8W, true);
        B(&L->q_a_norm, LN("attn_q_a_norm.weight"), 1, hp->q_lora, 1, 1, POL_F32, true);
        B(&L->q_b, LN("attn_q_b.weight"), 2, hp->q_lora, QD, 1, POL_Q8W, true);
        B(&L->kv, LN("attn_kv.weight"), 2, D, HD, 1, POL_Q8W, true);
        B(&L->kv_norm, LN("attn_kv_a_norm.weight"), 1, HD, 1, 1, POL_F32, true);
        B(&L->sinks, LN("attn_sinks.weight"), 1, hp->n_head, 1, 1, POL_F32, true);
        B(&L->o_a, LN("attn_output_a.weight"), 2, GIN, LOW, 1, POL_Q8W, true);
        B(&L->o_b, LN("attn_output_b.weight"), 2, LOW, D, 1, POL_Q8W, true);

        if (kind != DS4_ATTN_WINDOW) {
            const int64_t W = ds4_cmp_width(hp, il);
            B(&L->cmp_kv, LN("attn_compressor_kv.weight"), 2, D, W, 1, POL_F16W, true);
            B(&L->cmp_gate, LN("attn_compressor_gate.weight"), 2, D, W, 1, POL_F16W, true);
            B(&L->cmp_ape, LN("attn_compressor_ape.weight"), 2, W, hp->ratio[il], 1, POL_F16W, true);
            B(&L->cmp_norm, LN("attn_compressor_norm.weight"), 1, HD, 1, 1, POL_F32, true);
        }
        if (kind == DS4_ATTN_CSA) {
            B(&L->idx_q_b, LN("indexer.attn_q_b.weight"), 2, hp->q_lora, IQD, 1, POL_F16W, true);
            B(&L->idx_proj, LN("indexer.proj.weight"), 2, D, hp->idx_heads, 1, POL_F16W, true);
            B(&L->icmp_kv, LN("indexer_compressor_kv.weight"), 2, D, 2 * ID, 1, POL_F16W, true);
            B(&L->icmp_gate, LN("indexer_compressor_gate.weight"), 2, D, 2 * ID, 1, POL_F16W, true);
            B(&L->icmp_ape, LN("indexer_compressor_ape.weight"), 2, 2 * ID, 4, 1, POL_F16W, true);
            B(&L->icmp_norm, LN("indexer_compressor_norm.weight"), 1, ID, 1, 1, POL_F32, true);
        }

        B(&L->ffn_norm, LN("ffn_norm.weight"), 1, D, 1, 1, POL_F32, true);
        B(&L->gate_inp, LN("ffn_gate_inp.weight"), 2, D, E, 1, POL_F16W, true);
        if (ds4_layer_is_hash(hp, il)) {
            B(&L->tid2eid, LN("ffn_gate_tid2eid.weight"), 2, hp->n_expert_used, V, 1, POL_I32, true);
        } else {
            B(&L->exp_bias, LN("exp_probs_b.bias"), 1, E, 1, 1, POL_F32, false);
        }
        B(&L->gate_exps, LN("ffn_gate_exps.weight"), 3, D, FF, E, POL_EXPERT, true);
        B(&L->up_exps, LN("ffn_up_exps.weight"), 3, D, FF, E, POL_EXPERT, true);
        B(&L->down_exps, LN("ffn_down_exps.weight"), 3, FF, D, E, POL_EXPERT, true);
        if (L->gate_exps.type != L->up_exps.type) {
            rc = ds4_errf(err, "tensor '%s' has type %s but '%s' has %s: routed gate and up must share a type",
                          L->gate_exps.name, ds4_type_name(L->gate_exps.type), L->up_exps.name, ds4_type_name(L->up_exps.type));
            goto out;
        }
        if (L->down_exps.type == DS4_TYPE_IQ2_XXS) w->published_types = false; /* ds4 uses Q2_K/Q4_K for down */
        B(&L->gate_sh, LN("ffn_gate_shexp.weight"), 2, D, FF, 1, POL_Q8W, true);
        B(&L->up_sh, LN("ffn_up_shexp.weight"), 2, D, FF, 1, POL_Q8W, true);
        B(&L->down_sh, LN("ffn_down_shexp.weight"), 2, FF, D, 1, POL_Q8W, true);
    }
#undef LN
#undef B
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        if (!b.used[i]) {
            rc = ds4_errf(err, "unexpected tensor '%s' (not part of a %d-layer DeepSeek V4 model)", f->tensors[i].name,
                          hp->n_layer);
            goto out;
        }
    }
    w->expert_bits = w->layers[0].gate_exps.type == DS4_TYPE_Q4_K ? 4 : 2;
out:
    free(b.used);
    if (rc != 0) ds4_weights_free(w);
    return rc;
}

void ds4_weights_free(ds4_weights *w) {
    free(w->layers);
    w->layers = NULL;
    w->n_layers = 0;
}

int ds4_weights_check_data(const ds4_weights *w, const ds4_hparams *hp, ds4_err *err) {
    for (int il = 0; il < w->n_layers; il++) {
        const ds4_tensor *t = &w->layers[il].tid2eid;
        if (!t->data) continue;
        const int32_t *ids = t->data;
        const int64_t n = t->ne[0] * t->ne[1];
        for (int64_t i = 0; i < n; i++) {
            if (ids[i] < 0 || ids[i] >= hp->n_expert)
                return ds4_errf(err, "tensor '%s': token %lld routes to expert %d, outside [0, %d)", t->name,
                                (long long)(i / t->ne[0]), ids[i], hp->n_expert);
        }
    }
    return 0;
}

void ds4_weights_visit(ds4_weights *w, ds4_tensor_visit_fn fn, void *ctx) {
    ds4_tensor *g[] = {&w->token_embd, &w->output, &w->output_norm, &w->output_hc_fn, &w->output_hc_scale, &w->output_hc_base};
    for (size_t i = 0; i < sizeof(g) / sizeof(g[0]); i++)
        if (g[i]->name) fn(ctx, g[i]);
    for (int il = 0; il < w->n_layers; il++) {
        ds4_tensor *t = (ds4_tensor *)&w->layers[il];
        const size_t n = sizeof(ds4_layer_weights) / sizeof(ds4_tensor);
        for (size_t i = 0; i < n; i++)
            if (t[i].name) fn(ctx, &t[i]);
    }
}
