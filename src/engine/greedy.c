/* ds4 — greedy decoding steps, on the device or the host (greedy.h). */
#include "engine/greedy.h"

#include <string.h>

#include "text/sampler.h"

/* Host steps: evaluate now, remember the pick. A token equal to stop_token
 * is not evaluated, as the device chain drops such a step. */
static int host_step(ds4_greedy *g, int32_t token, ds4_err *err) {
    g->picked[g->n] = -1;
    if (token != g->stop_token) {
        if (ds4_session_decode(g->s, token, err) != 0) return -1;
        g->picked[g->n] = ds4_sampler_argmax_except(ds4_session_logits(g->s), g->s->model->hp.n_vocab, g->exclude);
    }
    g->n++;
    return 0;
}

int ds4_greedy_begin(ds4_greedy *g, ds4_session *s, int32_t token, int32_t exclude, int32_t stop_token, ds4_err *err) {
    memset(g, 0, sizeof(*g));
    g->s = s;
    g->exclude = exclude;
    g->stop_token = stop_token;
    const int rc = ds4_session_chain_begin(s, token, exclude, stop_token, err);
    if (rc < 0) return -1;
    g->device = rc == 0;
    return g->device ? 0 : host_step(g, token, err);
}

int ds4_greedy_queue(ds4_greedy *g, ds4_err *err) {
    if (g->device) return ds4_session_chain_queue(g->s, err);
    if (g->n != 1 || g->picked[0] < 0) return ds4_errf(err, "internal error: greedy queue after %d steps", g->n);
    return host_step(g, g->picked[0], err);
}

int ds4_greedy_wait(ds4_greedy *g, int32_t *picked, ds4_err *err) {
    if (g->device) return ds4_session_chain_wait(g->s, picked, err);
    if (g->n < 1 || g->picked[0] < 0) return ds4_errf(err, "internal error: greedy wait on %d steps", g->n);
    *picked = g->picked[0];
    g->picked[0] = g->picked[1];
    g->n--;
    return 0;
}

int ds4_greedy_end(ds4_greedy *g, ds4_err *err) {
    g->n = 0;
    return g->device ? ds4_session_chain_end(g->s, err) : 0;
}
