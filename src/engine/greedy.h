/* ds4 — greedy decoding steps for the engine's generate loop: chained on the
 * device where the backend offers it (ds4_session_chain_*: the argmax picked
 * where the logits are, the next step queued while one runs), otherwise the
 * same steps with the pick on the host. Both give the tokens and the
 * session state of decoding one token at a time and picking
 * ds4_sampler_argmax_except on the host. */
#ifndef DS4_ENGINE_GREEDY_H
#define DS4_ENGINE_GREEDY_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "util/err.h"

typedef struct ds4_greedy {
    ds4_session *s;
    int32_t exclude, stop_token;
    bool device; /* the backend chains; else the host steps below */
    int n;       /* host steps queued: their picks (-1: fed stop_token, not evaluated) */
    int32_t picked[2];
} ds4_greedy;

/* The calls mirror ds4_session_chain_begin / queue / wait / end (backend.h):
 * begin evaluates `token`, queue the token the last step picked, wait
 * returns the oldest step's pick, end drops a step fed stop_token and leaves
 * the session's logits those of its last token. */
int ds4_greedy_begin(ds4_greedy *g, ds4_session *s, int32_t token, int32_t exclude, int32_t stop_token, ds4_err *err);
int ds4_greedy_queue(ds4_greedy *g, ds4_err *err);
int ds4_greedy_wait(ds4_greedy *g, int32_t *picked, ds4_err *err);
int ds4_greedy_end(ds4_greedy *g, ds4_err *err);

#endif
