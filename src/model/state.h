/* ds4 — the persistent session state (KV cache) and its serialized payload.
 *
 * Per layer (MODEL.md §12): a raw ring of the last window rows (sized to also
 * hold one prefill chunk), the compressed rows emitted so far, the compressor
 * frontier (partial window) state, and for CSA layers the indexer key rows and
 * the indexer compressor state. Rows are kept as f32; in the default mode
 * their values are rounded through f16 when written (what a half-precision
 * cache holds), in oracle mode they are exact f32.
 *
 * The byte payload is INTERFACES.md §7.4 (ds4's layout), generalised from the
 * published shape to the file's hyperparameters: the header records layer
 * count, widths and vocabulary, so any backend and the disk cache share it. */
#ifndef DS4_MODEL_STATE_H
#define DS4_MODEL_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/hparams.h"
#include "util/err.h"

#define DS4_PAYLOAD_MAGIC 0x34565344u /* "DSV4" */
#define DS4_PAYLOAD_VERSION 1u
#define DS4_PAYLOAD_HEADER_WORDS 13

typedef struct ds4_layer_state {
    int ratio;        /* 0, 4 (CSA) or other (HCA) */
    float *comp;      /* [comp_cap][head_dim] compressed attention rows */
    uint32_t n_comp;
    uint32_t comp_cap;
    float *cmp_kv;    /* [cmp_slots][cmp_width] frontier candidates */
    float *cmp_score; /* [cmp_slots][cmp_width] frontier gate scores (ape added); -inf = empty */
    int cmp_slots;    /* 2*ratio for CSA (previous + current window), ratio for HCA */
    int cmp_width;    /* 2*head_dim for CSA, head_dim for HCA */
    float *idx;       /* [comp_cap][idx_dim] indexer key rows (CSA) */
    uint32_t n_idx;
    float *icmp_kv;   /* [2*4][2*idx_dim] indexer compressor frontier (CSA) */
    float *icmp_score;
    float *raw;       /* [raw_cap][head_dim] raw ring; row of position p at slot p % raw_cap */
} ds4_layer_state;

typedef struct ds4_state {
    int n_layer, head_dim, idx_dim, n_vocab;
    int ctx;        /* positions the session can hold */
    int chunk;      /* prefill chunk (recorded in the payload; a different chunk refuses to load) */
    int raw_cap;    /* ring rows: window + chunk (capped by ctx) */
    int raw_window; /* min(window, ctx) */
    int comp_cap_max;
    int32_t *tokens; /* [ctx] */
    int n_tokens;
    float *logits;   /* [n_vocab] logits after the last token */
    bool has_logits;
    ds4_layer_state *layers;
} ds4_state;

/* Allocate a state for ctx positions and prefill chunk `chunk` (1..ctx). */
ds4_state *ds4_state_create(const ds4_hparams *hp, int ctx, int chunk, ds4_err *err);
void ds4_state_free(ds4_state *s);
/* Back to zero tokens: empty rings and lists, compressor frontiers emptied. */
void ds4_state_reset(ds4_state *s);

/* Bytes the state occupies in memory (for reports). */
size_t ds4_state_memory_bytes(const ds4_state *s);

/* Size of the payload of the current state (INTERFACES §7.4 formula). */
size_t ds4_state_payload_size(const ds4_state *s);
/* Serialize into buf (cap >= payload size). */
int ds4_state_save(const ds4_state *s, uint8_t *buf, size_t cap, ds4_err *err);
/* Validate and load a payload. On failure the state is reset and err names the
 * mismatching field ("payload prefill chunk 4096 differs from this session's 2048"). */
int ds4_state_load(ds4_state *s, const uint8_t *buf, size_t len, ds4_err *err);

#endif
