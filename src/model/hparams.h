/* ds4 — model hyperparameters, read from the GGUF's deepseek4.* metadata.
 *
 * Nothing about the shape is hard-coded: the published model (43 layers x
 * 4096) and tiny test models (2-6 layers x 64-256) go through the same code.
 * What the math needs that metadata cannot vary (one shared KV head, one
 * shared expert, no group-limited routing, normalized route weights) is
 * checked, and a file that asks for something else is refused with the key
 * and the value named. */
#ifndef DS4_MODEL_HPARAMS_H
#define DS4_MODEL_HPARAMS_H

#include <stdbool.h>
#include <stdint.h>

#include "gguf/gguf.h"
#include "util/err.h"

#define DS4_MAX_LAYERS 256

/* Attention flavour of a layer, from its compression ratio. */
typedef enum ds4_attn_kind {
    DS4_ATTN_WINDOW = 0, /* ratio 0: sliding window only */
    DS4_ATTN_CSA = 1,    /* ratio 4: overlapping compressor + lightning indexer */
    DS4_ATTN_HCA = 2,    /* any other ratio >= 2: non-overlapping compressor, every row visible */
} ds4_attn_kind;

typedef struct ds4_hparams {
    int n_layer;        /* deepseek4.block_count */
    int n_embd;         /* deepseek4.embedding_length (D) */
    int n_vocab;        /* deepseek4.vocab_size */
    int n_head;         /* attention.head_count (H) */
    int head_dim;       /* attention.key_length (== value_length) */
    int rope_dim;       /* rope.dimension_count: RoPE'd tail of each head */
    int q_lora;         /* attention.q_lora_rank */
    int o_groups;       /* attention.output_group_count */
    int o_lora;         /* attention.output_lora_rank */
    int n_expert;       /* expert_count */
    int n_expert_used;  /* expert_used_count */
    int n_ff;           /* expert_feed_forward_length (routed and shared) */
    int n_hash_layers;  /* hash_layer_count: layers [0, n) route by token id */
    int window;         /* attention.sliding_window */
    int idx_heads;      /* attention.indexer.head_count */
    int idx_dim;        /* attention.indexer.key_length */
    int idx_topk;       /* attention.indexer.top_k */
    int n_hc;           /* hyper_connection.count (streams) */
    int sinkhorn_iters; /* hyper_connection.sinkhorn_iterations */
    float rms_eps;      /* attention.layer_norm_rms_epsilon */
    float hc_eps;       /* hyper_connection.epsilon */
    double rope_base;          /* rope.freq_base (window-only layers) */
    double compress_rope_base; /* attention.compress_rope_freq_base (compressed layers) */
    double yarn_factor;        /* rope.scaling.factor */
    double yarn_beta_fast, yarn_beta_slow;
    uint64_t yarn_orig_ctx;    /* rope.scaling.original_context_length */
    uint64_t ctx_train;        /* context_length (informational) */
    float expert_scale;        /* expert_weights_scale */
    int ratio[DS4_MAX_LAYERS];        /* attention.compress_ratios */
    float swiglu_clamp[DS4_MAX_LAYERS]; /* swiglu_clamp_exp */
} ds4_hparams;

/* Parse and validate deepseek4.* metadata. Returns 0, or -1 with err naming
 * the key ("deepseek4.attention.head_count_kv = 2: this engine supports exactly
 * one shared KV head"). */
int ds4_hparams_from_gguf(const gguf_file *f, ds4_hparams *hp, ds4_err *err);

/* Consistency of a shape (divisibility, ranges); what from_gguf checks after
 * reading. */
int ds4_hparams_check(const ds4_hparams *hp, ds4_err *err);

/* Write the metadata for hp (used by the synthetic-model tool and tests). */
void ds4_hparams_to_gguf(const ds4_hparams *hp, gguf_writer *w);

/* The published DeepSeek V4 Flash hyperparameters (43 x 4096, ...). */
void ds4_hparams_published(ds4_hparams *hp);
/* True when hp equals the published shape exactly. */
bool ds4_hparams_is_published(const ds4_hparams *hp);

static inline ds4_attn_kind ds4_layer_kind(const ds4_hparams *hp, int il) {
    const int r = hp->ratio[il];
    return r == 0 ? DS4_ATTN_WINDOW : r == 4 ? DS4_ATTN_CSA : DS4_ATTN_HCA;
}
static inline bool ds4_layer_is_hash(const ds4_hparams *hp, int il) { return il < hp->n_hash_layers; }
/* Number of mixer outputs of an HC set: n_hc pre + n_hc post + n_hc^2 comb. */
static inline int ds4_hc_mix(const ds4_hparams *hp) { return (2 + hp->n_hc) * hp->n_hc; }
/* Compressor projection width: 2 x head_dim for CSA (two overlapping series), head_dim for HCA. */
static inline int ds4_cmp_width(const ds4_hparams *hp, int il) {
    return ds4_layer_kind(hp, il) == DS4_ATTN_CSA ? 2 * hp->head_dim : hp->head_dim;
}

#endif
