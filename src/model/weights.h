/* ds4 — the tensor table: binding every GGUF tensor to its role, with checks.
 *
 * Binding checks each tensor's presence, shape and type against what the
 * hyperparameters imply and reports the first mismatch by name. It never
 * reads tensor data, so it works on header-only files (--inspect). Data
 * checks that need the bytes (hash-routing table in range) are separate
 * (ds4_weights_check_data). */
#ifndef DS4_MODEL_WEIGHTS_H
#define DS4_MODEL_WEIGHTS_H

#include <stdbool.h>
#include <stdint.h>

#include "gguf/gguf.h"
#include "model/hparams.h"
#include "util/err.h"

typedef struct ds4_tensor {
    const char *name; /* NULL when absent (optional tensors) */
    int type;         /* ds4_type */
    int n_dims;
    int64_t ne[4];
    const void *data; /* inside the mapped file */
    uint64_t size;    /* bytes */
    void *dev;        /* backend-owned copy (CUDA), NULL on CPU */
} ds4_tensor;

typedef struct ds4_layer_weights {
    /* hyper-connections around attention and around the MoE */
    ds4_tensor hc_attn_fn, hc_attn_scale, hc_attn_base;
    ds4_tensor hc_ffn_fn, hc_ffn_scale, hc_ffn_base;
    /* attention */
    ds4_tensor attn_norm, q_a, q_a_norm, q_b, kv, kv_norm, sinks, o_a, o_b;
    /* compressor (ratio != 0) */
    ds4_tensor cmp_kv, cmp_gate, cmp_ape, cmp_norm;
    /* lightning indexer (ratio 4) */
    ds4_tensor idx_q_b, idx_proj, icmp_kv, icmp_gate, icmp_ape, icmp_norm;
    /* MoE */
    ds4_tensor ffn_norm, gate_inp, exp_bias /* optional */, tid2eid /* hash layers */;
    ds4_tensor gate_exps, up_exps, down_exps;
    ds4_tensor gate_sh, up_sh, down_sh;
} ds4_layer_weights;

typedef struct ds4_weights {
    ds4_tensor token_embd, output, output_norm, output_hc_fn, output_hc_scale, output_hc_base;
    ds4_layer_weights *layers; /* n_layer */
    int n_layers;
    uint64_t n_params;      /* logical parameters (elements) over all bound tensors */
    uint64_t n_bytes;       /* tensor bytes */
    bool published_types;   /* every tensor has exactly the type the published ds4 files use */
    int expert_bits;        /* 2 or 4: 4 when layer 0's routed gate is Q4_K (disk-cache header) */
} ds4_weights;

/* Bind all tensors of f for hp. Returns 0, or -1 with err naming the first
 * problem ("tensor 'blk.3.attn_q_b.weight': shape [1024, 32768] expected, file has
 * [1024, 16384]", "tensor 'blk.5.indexer.proj.weight' is missing",
 * "unexpected tensor 'blk.99.x'"). */
int ds4_weights_bind(const gguf_file *f, const ds4_hparams *hp, ds4_weights *w, ds4_err *err);
void ds4_weights_free(ds4_weights *w);

/* Checks that read tensor bytes: the hash-routing tables hold expert ids in range. */
int ds4_weights_check_data(const ds4_weights *w, const ds4_hparams *hp, ds4_err *err);

/* Calls fn for every bound tensor (for summaries and device upload). */
typedef void (*ds4_tensor_visit_fn)(void *ctx, ds4_tensor *t);
void ds4_weights_visit(ds4_weights *w, ds4_tensor_visit_fn fn, void *ctx);

#endif
