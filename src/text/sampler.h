/* ds4 — token sampling (INTERFACES.md §5).
 *
 *   temperature <= 0   greedy: the first index of the largest logit
 *   otherwise          weights w_i = exp((l_i - l_max) / T) over finite logits,
 *                      then min-p (w_i >= min_p, i.e. p_i >= min_p * p_max),
 *                      top-p (in logit order, stop once the kept mass reaches
 *                      top_p) and top-k (softmax over the k largest logits),
 *                      then one uniform draw walked over the kept tokens.
 *
 * The walk order matters for seeded reproducibility (§5.2): without top-k and
 * with top_p >= 1 the kept tokens are walked in vocabulary order; with top-p
 * or top-k they are walked from the most to the least likely (ties: lower
 * token id first).
 *
 * A sampler owns scratch arrays sized to the vocabulary at init; sampling
 * never allocates.  One sampler per decoding stream (not thread-safe). */
#ifndef DS4_TEXT_SAMPLER_H
#define DS4_TEXT_SAMPLER_H

#include <stdint.h>

#include "text/dsml.h"
#include "util/err.h"
#include "util/rng.h"

/* ------------------------------------------------------------ parameters */

typedef struct ds4_sampling {
    float temperature; /* <= 0: greedy argmax */
    float top_p;       /* values <= 0 or > 1 (or NaN) mean 1 (disabled) */
    float min_p;       /* relative to the most likely token; < 0 means 0 */
    int top_k;         /* <= 0 disabled; > 1024 clamped to 1024 */
    uint64_t seed;     /* 0: no seed (the sampler seeds itself from the clock) */
} ds4_sampling;

#define DS4_SAMPLER_TOP_K_MAX 1024

/* §5.1: temperature 1, top_p 1, min_p 0.05, top_k 0, no seed. */
ds4_sampling ds4_sampling_defaults(void);

/* Clamp out-of-range values exactly as §5.1 says. */
ds4_sampling ds4_sampling_normalize(ds4_sampling p);

/* The parameters a request really runs with (§5.3): in thinking modes the
 * client's temperature/top_p/min_p/top_k are ignored and the fixed thinking
 * defaults (1, 1, 0.05, 0) are used; the seed is kept.  In non-thinking mode
 * the client's values, normalized. */
ds4_sampling ds4_sampling_for_mode(const ds4_sampling *client, int thinking);

/* --------------------------------------------------------------- sampler */

/* Random number generators: ds4_rng (xoshiro256**, the project default) or
 * the reference's xorshift64* of §5.2 (bit-compatible seeded streams with the
 * ds4 reference, given identical logits). */
typedef enum ds4_sampler_rng {
    DS4_SAMPLER_RNG_DS4 = 0,
    DS4_SAMPLER_RNG_REFERENCE
} ds4_sampler_rng;

typedef struct ds4_sampler {
    int n_vocab;
    ds4_sampling params;   /* normalized */
    ds4_sampler_rng rng_kind;
    ds4_rng rng;
    uint64_t xs;           /* xorshift64* state (reference generator) */
    /* scratch, sized to the vocabulary */
    int32_t *idx;          /* candidate / kept token ids */
    float *w;              /* their weights (parallel to idx) */
    int32_t *ord;          /* tokens taken from the heap, best first */
    int n_kept;            /* result of the last prepare */
    double kept_sum;
} ds4_sampler;

/* Allocate scratch for n_vocab tokens; params = defaults, seeded from the
 * clock.  0, or -1 with err filled. */
int ds4_sampler_init(ds4_sampler *s, int n_vocab, ds4_err *err);
void ds4_sampler_free(ds4_sampler *s);

/* Begin a request: set the parameters (normalized) and seed the generator
 * from p->seed (0: from the clock).  Call once per request, not per token. */
void ds4_sampler_start(ds4_sampler *s, const ds4_sampling *p);

/* Change the parameters (normalized) without touching the generator. */
void ds4_sampler_set_params(ds4_sampler *s, const ds4_sampling *p);

/* Seed the generator; 0 mixes wall time, a monotonic clock and an address
 * (§5.2: "a positive seed makes sampling reproducible"). */
void ds4_sampler_seed(ds4_sampler *s, uint64_t seed);

/* Choose the random number generator (reseeds with `seed`). */
void ds4_sampler_set_rng(ds4_sampler *s, ds4_sampler_rng kind, uint64_t seed);

/* Sample the next token from logits[0..n_vocab).  In the DSML STRUCTURAL and
 * JSON_STRUCTURAL states the choice is greedy whatever the parameters
 * (§4.5/§5.4); elsewhere the parameters apply. */
int32_t ds4_sampler_sample(ds4_sampler *s, const float *logits, ds4_dsml_decode_state state);

/* The truncated, renormalized distribution the parameters give for these
 * logits: up to `cap` (token, probability) pairs in walk order.  Returns the
 * number of kept tokens (which may exceed cap), 0 for greedy parameters.
 * Consumes no randomness; for tests, logprob dumps and debugging. */
int ds4_sampler_distribution(ds4_sampler *s, const float *logits, int32_t *ids, double *probs, int cap);

/* First index of the largest finite logit (NaN ignored); 0 if none. */
int32_t ds4_sampler_argmax(const float *logits, int n);
/* The same with index skip (-1: none) left out. If no other logit is a
 * number: 0, or 1 when skip is 0 and n > 1 (n == 1 gives 0 even then). */
int32_t ds4_sampler_argmax_except(const float *logits, int n, int32_t skip);

/* One uniform float in [0, 1) with 24 random bits from the sampler's
 * generator (exposed for tests). */
float ds4_sampler_uniform(ds4_sampler *s);

#endif
