/* ds4 — synthetic DeepSeek V4 models: random-weight GGUFs of any shape.
 *
 * Tiny models for the oracle fixtures and tests (f32 weights, or the ds4
 * tensor types), mid-size models for CPU benchmarks, and the full published
 * shape (q2 about 80.8 GiB, q4 about 153 GiB) streamed to disk with every
 * core. Weights are valid blocks of their type with scales chosen so that
 * activations stay finite through every layer; `branch_gain` scales the
 * residual-branch outputs (attn_output_b, ffn_down_exps, ffn_down_shexp) to
 * make a better-conditioned model for cross-backend comparisons.
 *
 * The same options and seed always give the same bytes, whatever the thread
 * count. */
#ifndef DS4_SYNTH_SYNTH_H
#define DS4_SYNTH_SYNTH_H

#include <stdbool.h>
#include <stdint.h>

#include "model/hparams.h"
#include "util/err.h"

typedef enum ds4_synth_policy {
    DS4_SYNTH_F32 = 0, /* every weight f32 (oracle fixtures) */
    DS4_SYNTH_DS4 = 1, /* the published files' types: F16 / Q8_0 / experts per the options below */
} ds4_synth_policy;

typedef struct ds4_synth_opts {
    ds4_hparams hp;
    ds4_synth_policy policy;
    int expert_type;      /* DS4 policy: routed gate/up type (IQ2_XXS default) */
    int down_type;        /* DS4 policy: routed down type (Q2_K default) */
    int q4_from_layer;    /* DS4 policy: layers >= this get Q4_K experts (mixed file); -1 = none */
    float branch_gain;    /* scale of the residual-branch output weights (1 = plain) */
    float ffn_gain;       /* scale of expert gate/up weights (larger reaches the SwiGLU clamp) */
    uint64_t seed;
    bool header_only;     /* metadata + tensor infos; the data region is a hole */
    bool exact_quant;     /* quantize from random floats even for huge tensors (slow) */
    const char *tokdata;  /* .tok file with the real tokenizer (NULL: byte-level vocabulary only) */
    int n_threads;        /* 0 = one per core */
    bool progress;        /* progress lines on stderr */
} ds4_synth_opts;

/* Defaults for a shape: f32 policy, gains 1, seed 1. */
void ds4_synth_opts_default(ds4_synth_opts *o);

/* Tiny oracle configuration (ORACLE.md §1 recipe): 4 layers x 128, 4 heads x 128,
 * rope 64, q_lora 64, 2 output groups x 32, 8 experts (top 2) x 64, vocab 512,
 * window 128, ratios 4/128, 64 indexer heads x 128, top-k 512. */
void ds4_synth_tiny_hparams(ds4_hparams *hp);

/* Write the model to path (created or truncated). */
int ds4_synth_write(const char *path, const ds4_synth_opts *o, ds4_err *err);

/* Write an f32 copy of a model (every float tensor dequantized to F32, I32
 * kept), for the oracle to load quantized fixtures. */
int ds4_synth_dequantize_copy(const char *in_path, const char *out_path, ds4_err *err);

#endif
