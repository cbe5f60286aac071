/* ds4-server — exact DSML tool replay memory (see toolmem.h).
 *
 * A chained hash table of ids plus a doubly linked LRU list.  Blocks are
 * reference counted: one block per stored turn, shared by its ids. */
#define _GNU_SOURCE /* memmem */
#include "server/toolmem.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct tm_block {
    char *dsml;
    size_t len;
    int refs;
} tm_block;

typedef struct tm_entry {
    char *id;
    tm_block *block;
    bool from_disk;
    struct tm_entry *hnext;            /* hash chain */
    struct tm_entry *prev, *next;      /* LRU: head = most recent */
} tm_entry;

struct srv_tool_memory {
    pthread_mutex_t mu;
    int max_ids;
    int count;
    size_t nbuckets;
    tm_entry **buckets;
    tm_entry *head, *tail;
};

/* ============================================================ helpers */

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void block_unref(tm_block *b) {
    if (b && --b->refs == 0) {
        free(b->dsml);
        free(b);
    }
}

static void lru_unlink(srv_tool_memory *m, tm_entry *e) {
    if (e->prev) e->prev->next = e->next;
    else m->head = e->next;
    if (e->next) e->next->prev = e->prev;
    else m->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push_front(srv_tool_memory *m, tm_entry *e) {
    e->prev = NULL;
    e->next = m->head;
    if (m->head) m->head->prev = e;
    m->head = e;
    if (!m->tail) m->tail = e;
}

static tm_entry **find_slot(srv_tool_memory *m, const char *id) {
    tm_entry **p = &m->buckets[hash_str(id) % m->nbuckets];
    while (*p && strcmp((*p)->id, id) != 0) p = &(*p)->hnext;
    return p;
}

static void remove_entry(srv_tool_memory *m, tm_entry *e) {
    tm_entry **p = find_slot(m, e->id);
    if (*p == e) *p = e->hnext;
    lru_unlink(m, e);
    block_unref(e->block);
    free(e->id);
    free(e);
    m->count--;
}

/* ============================================================ API */

srv_tool_memory *srv_toolmem_new(int max_ids) {
    srv_tool_memory *m = calloc(1, sizeof(*m));
    if (!m) return NULL;
    m->max_ids = max_ids > 0 ? max_ids : 1;
    m->nbuckets = 1024;
    while (m->nbuckets < (size_t)m->max_ids && m->nbuckets < (1u << 20)) m->nbuckets *= 2;
    m->buckets = calloc(m->nbuckets, sizeof(*m->buckets));
    if (!m->buckets) {
        free(m);
        return NULL;
    }
    pthread_mutex_init(&m->mu, NULL);
    return m;
}

void srv_toolmem_free(srv_tool_memory *m) {
    if (!m) return;
    while (m->head) remove_entry(m, m->head);
    free(m->buckets);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

int srv_toolmem_put(srv_tool_memory *m, const char *const *ids, int n, const char *dsml, size_t len, bool from_disk) {
    if (!m || n <= 0) return 0;
    tm_block *b = calloc(1, sizeof(*b));
    if (!b) return -1;
    b->dsml = malloc(len + 1);
    if (!b->dsml) {
        free(b);
        return -1;
    }
    memcpy(b->dsml, dsml, len);
    b->dsml[len] = 0;
    b->len = len;
    b->refs = 1; /* held by this function until the end */
    pthread_mutex_lock(&m->mu);
    int rc = 0;
    for (int i = 0; i < n; i++) {
        if (!ids[i] || !*ids[i]) continue;
        tm_entry **slot = find_slot(m, ids[i]);
        tm_entry *e = *slot;
        if (e) {
            block_unref(e->block);
            lru_unlink(m, e);
        } else {
            e = calloc(1, sizeof(*e));
            if (!e || !(e->id = strdup(ids[i]))) {
                free(e);
                rc = -1;
                break;
            }
            *slot = e;
            m->count++;
        }
        e->block = b;
        b->refs++;
        e->from_disk = from_disk;
        lru_push_front(m, e);
    }
    /* prune the oldest ids beyond the limit */
    while (m->count > m->max_ids && m->tail) remove_entry(m, m->tail);
    pthread_mutex_unlock(&m->mu);
    block_unref(b);
    return rc;
}

char *srv_toolmem_replay(srv_tool_memory *m, const char *const *ids, int n, size_t *len, int *missing,
                         bool *from_disk) {
    *missing = 0;
    if (!m || n <= 0) return NULL;
    pthread_mutex_lock(&m->mu);
    tm_block *b = NULL;
    bool same = true, disk = false;
    for (int i = 0; i < n; i++) {
        tm_entry *e = ids[i] ? *find_slot(m, ids[i]) : NULL;
        if (!e) {
            (*missing)++;
            same = false;
            continue;
        }
        lru_unlink(m, e); /* a use refreshes the entry */
        lru_push_front(m, e);
        if (e->from_disk) disk = true;
        if (!b) b = e->block;
        else if (b != e->block) same = false;
    }
    char *out = NULL;
    if (same && b) {
        out = malloc(b->len + 1);
        if (out) {
            memcpy(out, b->dsml, b->len + 1);
            *len = b->len;
            if (from_disk) *from_disk = disk;
        }
    }
    pthread_mutex_unlock(&m->mu);
    return out;
}

bool srv_toolmem_has(srv_tool_memory *m, const char *id) {
    if (!m || !id) return false;
    pthread_mutex_lock(&m->mu);
    bool r = *find_slot(m, id) != NULL;
    pthread_mutex_unlock(&m->mu);
    return r;
}

int srv_toolmem_count(srv_tool_memory *m) {
    if (!m) return 0;
    pthread_mutex_lock(&m->mu);
    int n = m->count;
    pthread_mutex_unlock(&m->mu);
    return n;
}

/* The block as it occurs in a rendered text, with or without the "\n\n"
 * separator it was sampled with (§7.5). */
static bool contains(const char *h, size_t hn, const char *nd, size_t nn) {
    while (nn > 0 && (*nd == '\n' || *nd == ' ')) {
        nd++;
        nn--;
    }
    return nn > 0 && nn <= hn && memmem(h, hn, nd, nn) != NULL;
}

void srv_toolmem_each_in_text(srv_tool_memory *m, const char *text, size_t n,
                              void (*fn)(void *ud, const char *id, const char *dsml, size_t len), void *ud) {
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    for (tm_entry *e = m->head; e; e = e->next)
        if (contains(text, n, e->block->dsml, e->block->len)) fn(ud, e->id, e->block->dsml, e->block->len);
    pthread_mutex_unlock(&m->mu);
}
