/* ds4 — the engine: model + tokenizer + one live session, and the two
 * operations every front end needs (CLI, ds4-bench, ds4-server):
 *
 *   sync:     bring the live session to exactly a token prompt, reusing the
 *             longest live prefix (only the new suffix is evaluated);
 *   generate: sample tokens one at a time with callbacks, stopping at EOS, a
 *             token limit, a full context, or when the caller says so.
 *
 * Nothing here knows about JSON or HTTP. */
#ifndef DS4_ENGINE_ENGINE_H
#define DS4_ENGINE_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "model/model.h"
#include "text/dsml.h"
#include "text/sampler.h"
#include "text/tokenizer.h"
#include "util/clock.h"
#include "util/err.h"

typedef struct ds4_engine {
    ds4_model *model;
    ds4_tokenizer *tok;
    ds4_session *sess;
    ds4_sampler sampler;
} ds4_engine;

/* Open the model (binding every tensor and checking tensor data), its
 * tokenizer (from the GGUF), and one session with the given options. */
ds4_engine *ds4_engine_open(const char *model_path, const ds4_session_opts *opts, ds4_err *err);
void ds4_engine_close(ds4_engine *e);

/* ---------------------------------------------------------------- sync */

typedef struct ds4_sync_stats {
    int reused;     /* live tokens kept */
    int evaluated;  /* tokens evaluated by this call */
    double seconds; /* wall time of the evaluation */
    bool cancelled; /* the progress callback asked to stop (session holds a prefix) */
} ds4_sync_stats;

/* Make the session hold exactly prompt[0..n). If the live tokens are a prefix
 * of the prompt only the suffix is evaluated (a suffix shorter than 4 tokens
 * through the one-token decode path, longer ones in chunks whose boundaries
 * sit at absolute multiples of the prefill chunk); otherwise the session is
 * reset and the prompt prefilled cold. Progress goes to the session's
 * progress callback. Fails if the prompt does not fit the context. */
int ds4_engine_sync(ds4_engine *e, const int32_t *prompt, int n, ds4_sync_stats *st, ds4_err *err);

/* ---------------------------------------------------------------- generate */

typedef enum ds4_stop_reason {
    DS4_STOP_EOS = 0,      /* the model produced end-of-sentence (not evaluated) */
    DS4_STOP_LENGTH,       /* max_tokens reached */
    DS4_STOP_CONTEXT,      /* context full (one slot is kept free) */
    DS4_STOP_CALLBACK,     /* on_token asked to stop */
} ds4_stop_reason;

/* Called for every generated token (EOS included, with empty text). text is
 * the token's bytes with incomplete trailing UTF-8 held back until the next
 * token completes it; at the end the held bytes are flushed with id -1.
 * Return non-zero to stop: the token is then already part of the output
 * (and evaluated, except EOS and the last token of a run). */
typedef int (*ds4_token_fn)(void *ud, int32_t id, const char *text, size_t len);

typedef struct ds4_gen_opts {
    int max_tokens;          /* <= 0: until EOS or context full */
    ds4_sampling sampling;   /* temperature <= 0: greedy */
    bool ban_eos;            /* never choose EOS (benchmarks) */
    ds4_dsml_stream *dsml;   /* optional: decode-state for structural greedy forcing */
    ds4_token_fn on_token;
    void *ud;
    /* Optional override of the choice: return a token id to use instead of
     * sampling, or -1 to sample. (Test hooks script the model's output with
     * it while the forward pass still runs.) */
    int32_t (*pick)(void *ud, const float *logits, int n_vocab);
} ds4_gen_opts;

typedef struct ds4_gen_result {
    int n_tokens;            /* tokens produced (EOS counted) */
    ds4_stop_reason stop;
    double seconds;          /* wall time of sampling + evaluation */
} ds4_gen_result;

/* Sample from the session's current logits (the session must hold at least
 * one token), feed each chosen token back, and repeat. The last chosen token
 * is left unevaluated only when it is EOS; every other token is evaluated so
 * the session always ends with valid logits for its last token. */
int ds4_engine_generate(ds4_engine *e, const ds4_gen_opts *o, ds4_gen_result *r, ds4_err *err);

/* Greedy argmax of the current logits, optionally excluding one token id
 * (-1: none); NaN logits are never chosen. */
int32_t ds4_engine_argmax(const ds4_engine *e, int32_t exclude);

#endif
