/* ds4 — disk KV cache: the arithmetic of when to store and what to evict
 * (INTERFACES.md §7.6, §7.8, §7.9). Pure functions, no file system. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "server/kvdisk_internal.h"

void ds4_kvdisk_opts_default(ds4_kvdisk_opts *o, const ds4_session *s) {
    memset(o, 0, sizeof(*o));
    o->budget_bytes = (uint64_t)4096 << 20;
    o->min_tokens = 512;
    o->cold_max_tokens = 30000;
    o->continued_interval_tokens = 10000;
    o->boundary_trim_tokens = 32;
    /* The effective chunk of the session, not a backend default: boundaries
     * then always fall on the chunk grid the resumed prefill uses (§7.10). */
    o->boundary_align_tokens = s ? ds4_session_chunk(s) : DS4_DEFAULT_PREFILL_CHUNK;
    o->quant_bits = s && s->model && s->model->w.expert_bits == 4 ? 4 : 2;
    o->tool_max_ids = 100000;
}

/* ------------------------------------------------------------------ boundaries */

int ds4_kvdisk_store_len(const ds4_kvdisk_opts *o, int n) {
    const int min = o->min_tokens, trim = o->boundary_trim_tokens, align = o->boundary_align_tokens;
    if ((int64_t)n <= (int64_t)min + trim) return n;
    int s = n - trim;
    if (align > 0) s -= s % align;
    return s >= min ? s : n;
}

int ds4_kvdisk_continued_step(const ds4_kvdisk_opts *o) {
    const int64_t iv = o->continued_interval_tokens, al = o->boundary_align_tokens;
    if (al <= 0) return (int)iv;
    const int64_t step = (iv + al - 1) / al * al;
    return step > INT32_MAX ? INT32_MAX : (int)step;
}

int ds4_kvdisk_continued_target(const ds4_kvdisk_opts *o, int live_len, int last_store) {
    const int step = ds4_kvdisk_continued_step(o);
    if (step <= 0 || live_len < o->min_tokens || live_len <= last_store || live_len % step != 0) return -1;
    return live_len;
}

int ds4_kvdisk_chat_anchor(const int32_t *tokens, int n, int32_t user_id, int32_t assistant_id, int min_tokens) {
    if (!tokens || n <= 0 || user_id < 0 || assistant_id < 0) return -1;
    int last_user = -1;
    for (int i = 0; i < n && tokens[i] != assistant_id; i++)
        if (tokens[i] == user_id) last_user = i;
    return last_user >= 0 && last_user >= min_tokens ? last_user : -1;
}

int ds4_kvdisk_cold_boundary(const ds4_kvdisk_opts *o, const int32_t *tokens, int n, int32_t user_id,
                             int32_t assistant_id) {
    if (n < o->min_tokens || n > o->cold_max_tokens || n <= 0) return -1;
    const int anchor = ds4_kvdisk_chat_anchor(tokens, n, user_id, assistant_id, o->min_tokens);
    return anchor > 0 ? anchor : ds4_kvdisk_store_len(o, n);
}

/* ------------------------------------------------------------------ schedule */

void ds4_kvdisk_sched_reset(ds4_kvdisk_sched *s) { s->last_store = 0; }
void ds4_kvdisk_sched_resume(ds4_kvdisk_sched *s, int len) { s->last_store = len; }

int ds4_kvdisk_sched_due(const ds4_kvdisk_opts *o, const ds4_kvdisk_sched *s, int live_len) {
    return ds4_kvdisk_continued_target(o, live_len, s->last_store);
}

void ds4_kvdisk_sched_mark(ds4_kvdisk_sched *s, int pos) {
    if (pos > s->last_store) s->last_store = pos;
}

int ds4_kvdisk_sched_cold_begin(ds4_kvdisk_sched *s, int boundary) {
    const int prev = s->last_store;
    ds4_kvdisk_sched_mark(s, boundary);
    return prev;
}

void ds4_kvdisk_sched_cold_end(ds4_kvdisk_sched *s, int previous, bool stored) {
    if (!stored) s->last_store = previous;
}

/* ------------------------------------------------------------------ eviction */

double ds4_kvdisk_effective_hits(uint32_t hits, uint64_t last_used, uint64_t now) {
    if (hits == 0 || last_used == 0) return 0.0;
    const double age = now > last_used ? (double)(now - last_used) : 0.0;
    const double eh = (double)hits * exp2(-age / DS4_KVDISK_HALF_LIFE_S);
    return eh < 0.01 ? 0.0 : eh;
}

double ds4_kvdisk_score(const ds4_kvdisk_entry *e, uint64_t now) {
    const double bytes = e->file_bytes ? (double)e->file_bytes : 1.0;
    return (ds4_kvdisk_effective_hits(e->hits, e->last_used, now) + 1.0) * (double)e->tokens / bytes;
}

typedef struct victim {
    size_t idx;
    bool prot;
    double score;
    uint64_t last_used;
    const char *name;
} victim;

static int victim_cmp(const void *a, const void *b) {
    const victim *x = a, *y = b;
    if (x->prot != y->prot) return x->prot ? 1 : -1;
    if (x->score != y->score) return x->score < y->score ? -1 : 1;
    if (x->last_used != y->last_used) return x->last_used < y->last_used ? -1 : 1; /* older goes first */
    return strcmp(x->name, y->name);
}

size_t ds4_kvdisk_plan_eviction(const ds4_kvdisk_entry *v, size_t n, uint64_t budget, const char *protect,
                                uint64_t now, bool *remove) {
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        remove[i] = false;
        total += v[i].file_bytes;
    }
    if (total <= budget) return 0;
    victim *order = malloc(n * sizeof(*order));
    if (!order) return 0; /* out of memory: evict nothing now; the next store retries */
    for (size_t i = 0; i < n; i++)
        order[i] = (victim){i, protect && strcmp(v[i].name, protect) == 0 && v[i].file_bytes <= budget,
                            ds4_kvdisk_score(&v[i], now), v[i].last_used, v[i].name};
    qsort(order, n, sizeof(*order), victim_cmp);
    size_t removed = 0;
    for (size_t k = 0; k < n && total > budget; k++) {
        remove[order[k].idx] = true;
        total -= v[order[k].idx].file_bytes;
        removed++;
    }
    free(order);
    return removed;
}
