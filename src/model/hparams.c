/* ds4 — hyperparameters from deepseek4.* metadata (see hparams.h). */
#include "model/hparams.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define KEY(s) "deepseek4." s

/* ------------------------------------------------------------------ readers */

static int get_int(const gguf_file *f, const char *key, int lo, int hi, int *out, ds4_err *err) {
    uint64_t v;
    if (gguf_get_uint(f, key, &v, err) != 0) return -1;
    if (v < (uint64_t)lo || v > (uint64_t)hi)
        return ds4_errf(err, "metadata '%s' = %llu is out of range [%d, %d]", key, (unsigned long long)v, lo, hi);
    *out = (int)v;
    return 0;
}

static int get_f(const gguf_file *f, const char *key, double *out, ds4_err *err) {
    if (gguf_get_float(f, key, out, err) != 0) return -1;
    if (!isfinite(*out)) return ds4_errf(err, "metadata '%s' is not a finite number", key);
    return 0;
}

/* An optional integer key that, when present, must equal `want`. */
static int check_optional_int(const gguf_file *f, const char *key, uint64_t want, const char *why, ds4_err *err) {
    if (!gguf_find_kv(f, key)) return 0;
    uint64_t v;
    if (gguf_get_uint(f, key, &v, err) != 0) return -1;
    if (v != want)
        return ds4_errf(err, "metadata '%s' = %llu: %s (expected %llu)", key, (unsigned long long)v, why,
                        (unsigned long long)want);
    return 0;
}

static int get_per_layer_array(const gguf_file *f, const char *key, int n_layer, bool want_float, int *iout,
                               float *fout, ds4_err *err) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv) return ds4_errf(err, "metadata key '%s' is missing", key);
    if (kv->type != GGUF_ARRAY) return ds4_errf(err, "metadata '%s' must be an array", key);
    if (kv->arr_n < (uint64_t)n_layer)
        return ds4_errf(err, "metadata '%s' has %llu entries, need at least one per layer (%d)", key,
                        (unsigned long long)kv->arr_n, n_layer);
    for (int i = 0; i < n_layer; i++) {
        if (want_float) {
            double v;
            if (gguf_arr_get_float(kv, (uint64_t)i, &v) != 0 || !isfinite(v))
                return ds4_errf(err, "metadata '%s'[%d] is not a finite number (array of %s)", key, i,
                                gguf_vtype_name(kv->arr_type));
            fout[i] = (float)v;
        } else {
            int64_t v;
            if (gguf_arr_get_int(kv, (uint64_t)i, &v) != 0)
                return ds4_errf(err, "metadata '%s'[%d] is not an integer (array of %s)", key, i,
                                gguf_vtype_name(kv->arr_type));
            if (v < 0 || v > 1 << 20) return ds4_errf(err, "metadata '%s'[%d] = %lld is out of range", key, i, (long long)v);
            iout[i] = (int)v;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ parse */

int ds4_hparams_from_gguf(const gguf_file *f, ds4_hparams *hp, ds4_err *err) {
    memset(hp, 0, sizeof(*hp));
    gguf_str arch;
    if (gguf_find_kv(f, "general.architecture")) {
        if (gguf_get_str(f, "general.architecture", &arch, err) != 0) return -1;
        if (arch.len != 9 || memcmp(arch.ptr, "deepseek4", 9) != 0)
            return ds4_errf(err, "general.architecture is '%.*s', expected 'deepseek4'", (int)(arch.len > 64 ? 64 : arch.len),
                            arch.ptr);
    }
    const int BIG = 1 << 24;
    if (get_int(f, KEY("block_count"), 1, DS4_MAX_LAYERS, &hp->n_layer, err) ||
        get_int(f, KEY("embedding_length"), 8, 1 << 16, &hp->n_embd, err) ||
        get_int(f, KEY("vocab_size"), 8, BIG, &hp->n_vocab, err) ||
        get_int(f, KEY("attention.head_count"), 1, 4096, &hp->n_head, err) ||
        get_int(f, KEY("attention.key_length"), 8, 1 << 14, &hp->head_dim, err) ||
        get_int(f, KEY("rope.dimension_count"), 2, 1 << 14, &hp->rope_dim, err) ||
        get_int(f, KEY("attention.q_lora_rank"), 1, 1 << 16, &hp->q_lora, err) ||
        get_int(f, KEY("attention.output_group_count"), 1, 4096, &hp->o_groups, err) ||
        get_int(f, KEY("attention.output_lora_rank"), 1, 1 << 16, &hp->o_lora, err) ||
        get_int(f, KEY("expert_count"), 1, 1 << 16, &hp->n_expert, err) ||
        get_int(f, KEY("expert_used_count"), 1, 64, &hp->n_expert_used, err) ||
        get_int(f, KEY("expert_feed_forward_length"), 1, 1 << 18, &hp->n_ff, err) ||
        get_int(f, KEY("hash_layer_count"), 0, DS4_MAX_LAYERS, &hp->n_hash_layers, err) ||
        get_int(f, KEY("attention.sliding_window"), 1, 1 << 20, &hp->window, err) ||
        get_int(f, KEY("attention.indexer.head_count"), 1, 4096, &hp->idx_heads, err) ||
        get_int(f, KEY("attention.indexer.key_length"), 2, 1 << 14, &hp->idx_dim, err) ||
        get_int(f, KEY("attention.indexer.top_k"), 1, 1 << 24, &hp->idx_topk, err) ||
        get_int(f, KEY("hyper_connection.count"), 1, 64, &hp->n_hc, err) ||
        get_int(f, KEY("hyper_connection.sinkhorn_iterations"), 1, 1000, &hp->sinkhorn_iters, err))
        return -1;

    int kv_heads = 0, v_len = 0, shared = 0;
    if (get_int(f, KEY("attention.head_count_kv"), 0, 1 << 16, &kv_heads, err) ||
        get_int(f, KEY("attention.value_length"), 0, 1 << 16, &v_len, err) ||
        get_int(f, KEY("expert_shared_count"), 0, 1 << 16, &shared, err))
        return -1;
    if (kv_heads != 1)
        return ds4_errf(err, "metadata '" KEY("attention.head_count_kv") "' = %d: DeepSeek V4 uses one shared KV head", kv_heads);
    if (v_len != hp->head_dim)
        return ds4_errf(err, "metadata '" KEY("attention.value_length") "' = %d must equal key_length %d (K and V are the same rows)",
                        v_len, hp->head_dim);
    if (shared != 1)
        return ds4_errf(err, "metadata '" KEY("expert_shared_count") "' = %d: this engine supports exactly one shared expert", shared);
    if (check_optional_int(f, KEY("expert_group_count"), 0, "group-limited routing is not part of DeepSeek V4", err) ||
        check_optional_int(f, KEY("expert_group_used_count"), 0, "group-limited routing is not part of DeepSeek V4", err))
        return -1;
    if (gguf_find_kv(f, KEY("expert_weights_norm"))) {
        bool norm;
        if (gguf_get_bool(f, KEY("expert_weights_norm"), &norm, err) != 0) return -1;
        if (!norm) return ds4_errf(err, "metadata '" KEY("expert_weights_norm") "' is false: route weights are always normalized in DeepSeek V4");
    }

    double v;
    if (get_f(f, KEY("attention.layer_norm_rms_epsilon"), &v, err)) return -1;
    hp->rms_eps = (float)v;
    if (get_f(f, KEY("hyper_connection.epsilon"), &v, err)) return -1;
    hp->hc_eps = (float)v;
    if (get_f(f, KEY("rope.freq_base"), &hp->rope_base, err) ||
        get_f(f, KEY("attention.compress_rope_freq_base"), &hp->compress_rope_base, err) ||
        get_f(f, KEY("rope.scaling.factor"), &hp->yarn_factor, err) ||
        get_f(f, KEY("rope.scaling.yarn_beta_fast"), &hp->yarn_beta_fast, err) ||
        get_f(f, KEY("rope.scaling.yarn_beta_slow"), &hp->yarn_beta_slow, err))
        return -1;
    if (get_f(f, KEY("expert_weights_scale"), &v, err)) return -1;
    hp->expert_scale = (float)v;
    if (gguf_get_uint(f, KEY("rope.scaling.original_context_length"), &hp->yarn_orig_ctx, err)) return -1;
    if (gguf_find_kv(f, KEY("context_length"))) {
        if (gguf_get_uint(f, KEY("context_length"), &hp->ctx_train, err)) return -1;
    }

    if (get_per_layer_array(f, KEY("attention.compress_ratios"), hp->n_layer, false, hp->ratio, NULL, err) ||
        get_per_layer_array(f, KEY("swiglu_clamp_exp"), hp->n_layer, true, NULL, hp->swiglu_clamp, err))
        return -1;

    return ds4_hparams_check(hp, err);
}


/* ------------------------------------------------------------------ consistency */

int ds4_hparams_check(const ds4_hparams *hp, ds4_err *err) {
    if (!(hp->rms_eps > 0 && hp->rms_eps < 1)) return ds4_errf(err, "metadata layer_norm_rms_epsilon = %g is not in (0, 1)", hp->rms_eps);
    if (!(hp->hc_eps >= 0 && hp->hc_eps < 1)) return ds4_errf(err, "metadata hyper_connection.epsilon = %g is not in [0, 1)", hp->hc_eps);
    if (hp->rope_base <= 1 || hp->compress_rope_base <= 1) return ds4_errf(err, "metadata RoPE bases must be > 1");
    if (hp->yarn_factor < 1) return ds4_errf(err, "metadata rope.scaling.factor = %g must be >= 1", hp->yarn_factor);
    if (hp->yarn_beta_fast <= 0 || hp->yarn_beta_slow <= 0 || hp->yarn_orig_ctx == 0)
        return ds4_errf(err, "metadata YaRN parameters must be positive");
    if (hp->rope_dim % 2 != 0 || hp->rope_dim > hp->head_dim || hp->rope_dim > hp->idx_dim)
        return ds4_errf(err, "metadata rope.dimension_count = %d must be even and at most key_length %d and indexer.key_length %d",
                        hp->rope_dim, hp->head_dim, hp->idx_dim);
    if (hp->head_dim % 8 != 0 || hp->idx_dim % 8 != 0 || hp->n_embd % 32 != 0)
        return ds4_errf(err, "head sizes must be multiples of 8 and embedding_length a multiple of 32 (got %d, %d, %d)",
                        hp->head_dim, hp->idx_dim, hp->n_embd);
    if ((int64_t)hp->n_head * hp->head_dim % hp->o_groups != 0 || hp->n_head % hp->o_groups != 0)
        return ds4_errf(err, "attention.head_count %d is not divisible into output_group_count %d groups", hp->n_head,
                        hp->o_groups);
    if (hp->n_expert_used > hp->n_expert)
        return ds4_errf(err, "expert_used_count %d exceeds expert_count %d", hp->n_expert_used, hp->n_expert);
    if (hp->n_hash_layers > hp->n_layer)
        return ds4_errf(err, "hash_layer_count %d exceeds block_count %d", hp->n_hash_layers, hp->n_layer);
    for (int il = 0; il < hp->n_layer; il++) {
        if (hp->ratio[il] == 1)
            return ds4_errf(err, "metadata '" KEY("attention.compress_ratios") "'[%d] = 1: a ratio is 0 (window only) or >= 2", il);
        if (!(hp->swiglu_clamp[il] > 0))
            return ds4_errf(err, "metadata '" KEY("swiglu_clamp_exp") "'[%d] = %g must be positive", il, hp->swiglu_clamp[il]);
    }
    if (hp->n_layer < 1 || hp->n_layer > DS4_MAX_LAYERS) return ds4_errf(err, "block_count %d out of range", hp->n_layer);
    if (hp->n_hc < 1 || hp->n_hc > 64) return ds4_errf(err, "hyper_connection.count %d out of range [1, 64]", hp->n_hc);
    return 0;
}

/* ------------------------------------------------------------------ write */

void ds4_hparams_to_gguf(const ds4_hparams *hp, gguf_writer *w) {
    gguf_w_str(w, "general.architecture", "deepseek4");
    gguf_w_u32(w, KEY("block_count"), (uint32_t)hp->n_layer);
    gguf_w_u64(w, KEY("context_length"), hp->ctx_train ? hp->ctx_train : 1048576);
    gguf_w_u32(w, KEY("embedding_length"), (uint32_t)hp->n_embd);
    gguf_w_u32(w, KEY("vocab_size"), (uint32_t)hp->n_vocab);
    gguf_w_u32(w, KEY("attention.head_count"), (uint32_t)hp->n_head);
    gguf_w_u32(w, KEY("attention.head_count_kv"), 1);
    gguf_w_u32(w, KEY("attention.key_length"), (uint32_t)hp->head_dim);
    gguf_w_u32(w, KEY("attention.value_length"), (uint32_t)hp->head_dim);
    gguf_w_u32(w, KEY("rope.dimension_count"), (uint32_t)hp->rope_dim);
    gguf_w_u32(w, KEY("attention.q_lora_rank"), (uint32_t)hp->q_lora);
    gguf_w_u32(w, KEY("attention.output_lora_rank"), (uint32_t)hp->o_lora);
    gguf_w_u32(w, KEY("attention.output_group_count"), (uint32_t)hp->o_groups);
    gguf_w_u32(w, KEY("expert_count"), (uint32_t)hp->n_expert);
    gguf_w_u32(w, KEY("expert_used_count"), (uint32_t)hp->n_expert_used);
    gguf_w_u32(w, KEY("expert_feed_forward_length"), (uint32_t)hp->n_ff);
    gguf_w_u32(w, KEY("expert_shared_count"), 1);
    gguf_w_u32(w, KEY("hash_layer_count"), (uint32_t)hp->n_hash_layers);
    gguf_w_u32(w, KEY("expert_group_count"), 0);
    gguf_w_u32(w, KEY("expert_group_used_count"), 0);
    gguf_w_u32(w, KEY("attention.sliding_window"), (uint32_t)hp->window);
    gguf_w_u32(w, KEY("attention.indexer.head_count"), (uint32_t)hp->idx_heads);
    gguf_w_u32(w, KEY("attention.indexer.key_length"), (uint32_t)hp->idx_dim);
    gguf_w_u32(w, KEY("attention.indexer.top_k"), (uint32_t)hp->idx_topk);
    gguf_w_u32(w, KEY("hyper_connection.count"), (uint32_t)hp->n_hc);
    gguf_w_u32(w, KEY("hyper_connection.sinkhorn_iterations"), (uint32_t)hp->sinkhorn_iters);
    gguf_w_f32(w, KEY("hyper_connection.epsilon"), hp->hc_eps);
    uint32_t ratios[DS4_MAX_LAYERS];
    for (int i = 0; i < hp->n_layer; i++) ratios[i] = (uint32_t)hp->ratio[i];
    gguf_w_arr_u32(w, KEY("attention.compress_ratios"), ratios, (uint64_t)hp->n_layer);
    gguf_w_arr_f32(w, KEY("swiglu_clamp_exp"), hp->swiglu_clamp, (uint64_t)hp->n_layer);
    gguf_w_f32(w, KEY("rope.freq_base"), (float)hp->rope_base);
    gguf_w_f32(w, KEY("rope.scaling.factor"), (float)hp->yarn_factor);
    gguf_w_u64(w, KEY("rope.scaling.original_context_length"), hp->yarn_orig_ctx);
    gguf_w_f32(w, KEY("rope.scaling.yarn_beta_fast"), (float)hp->yarn_beta_fast);
    gguf_w_f32(w, KEY("rope.scaling.yarn_beta_slow"), (float)hp->yarn_beta_slow);
    gguf_w_f32(w, KEY("attention.compress_rope_freq_base"), (float)hp->compress_rope_base);
    gguf_w_f32(w, KEY("expert_weights_scale"), hp->expert_scale);
    gguf_w_bool(w, KEY("expert_weights_norm"), true);
    gguf_w_f32(w, KEY("attention.layer_norm_rms_epsilon"), hp->rms_eps);
}

/* ------------------------------------------------------------------ published shape */

void ds4_hparams_published(ds4_hparams *hp) {
    memset(hp, 0, sizeof(*hp));
    hp->n_layer = 43;
    hp->n_embd = 4096;
    hp->n_vocab = 129280;
    hp->n_head = 64;
    hp->head_dim = 512;
    hp->rope_dim = 64;
    hp->q_lora = 1024;
    hp->o_groups = 8;
    hp->o_lora = 1024;
    hp->n_expert = 256;
    hp->n_expert_used = 6;
    hp->n_ff = 2048;
    hp->n_hash_layers = 3;
    hp->window = 128;
    hp->idx_heads = 64;
    hp->idx_dim = 128;
    hp->idx_topk = 512;
    hp->n_hc = 4;
    hp->sinkhorn_iters = 20;
    hp->rms_eps = 1e-6f;
    hp->hc_eps = 1e-6f;
    hp->rope_base = 10000;
    hp->compress_rope_base = 160000;
    hp->yarn_factor = 16;
    hp->yarn_beta_fast = 32;
    hp->yarn_beta_slow = 1;
    hp->yarn_orig_ctx = 65536;
    hp->ctx_train = 1048576;
    hp->expert_scale = 1.5f;
    for (int il = 0; il < hp->n_layer; il++) {
        hp->ratio[il] = il < 2 ? 0 : (il % 2 == 0 ? 4 : 128);
        hp->swiglu_clamp[il] = 10.0f;
    }
}

static bool close_to(double got, double want) { return fabs(got - want) <= 1e-6 * fmax(1.0, fabs(want)); }

bool ds4_hparams_is_published(const ds4_hparams *hp) {
    ds4_hparams p;
    ds4_hparams_published(&p);
    if (hp->n_layer != p.n_layer || hp->n_embd != p.n_embd || hp->n_vocab != p.n_vocab || hp->n_head != p.n_head ||
        hp->head_dim != p.head_dim || hp->rope_dim != p.rope_dim || hp->q_lora != p.q_lora || hp->o_groups != p.o_groups ||
        hp->o_lora != p.o_lora || hp->n_expert != p.n_expert || hp->n_expert_used != p.n_expert_used || hp->n_ff != p.n_ff ||
        hp->n_hash_layers != p.n_hash_layers || hp->window != p.window || hp->idx_heads != p.idx_heads ||
        hp->idx_dim != p.idx_dim || hp->idx_topk != p.idx_topk || hp->n_hc != p.n_hc || hp->sinkhorn_iters != p.sinkhorn_iters ||
        hp->yarn_orig_ctx != p.yarn_orig_ctx)
        return false;
    if (!close_to(hp->rms_eps, p.rms_eps) || !close_to(hp->hc_eps, p.hc_eps) || !close_to(hp->rope_base, p.rope_base) ||
        !close_to(hp->compress_rope_base, p.compress_rope_base) || !close_to(hp->yarn_factor, p.yarn_factor) ||
        !close_to(hp->yarn_beta_fast, p.yarn_beta_fast) || !close_to(hp->yarn_beta_slow, p.yarn_beta_slow) ||
        !close_to(hp->expert_scale, p.expert_scale))
        return false;
    for (int il = 0; il < p.n_layer; il++)
        if (hp->ratio[il] != p.ratio[il] || !close_to(hp->swiglu_clamp[il], p.swiglu_clamp[il])) return false;
    return true;
}
