/* ds4 — the --dump-logprobs JSON (INTERFACES.md §9.5): a greedy continuation
 * with the top-k log-probabilities of every step, computed in double:
 * logprob = logit - (max + log sum exp(l - max)). */
#ifndef DS4_ENGINE_LOGPROBS_H
#define DS4_ENGINE_LOGPROBS_H

#include <stdio.h>

#include "engine/engine.h"

/* The engine's session must already hold the prompt (n_prompt tokens). Writes
 * the JSON to out; generates at most max_steps greedy tokens (stopping after
 * EOS, which is written as selected), bounded by the context. */
int ds4_dump_logprobs(ds4_engine *e, int n_prompt, int max_steps, int top_k, FILE *out, ds4_err *err);

/* Write s[0..n) as a JSON string: valid UTF-8 is copied (escaping what JSON
 * requires), bytes of invalid sequences become \u00XX. */
void ds4_json_write_bytes(FILE *out, const char *s, size_t n);

#endif
