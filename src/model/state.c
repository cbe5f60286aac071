/* ds4 — session state allocation and the §7.4 payload (see state.h). */
#include "model/state.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ allocation */

static void *zalloc_floats(size_t n, bool *ok) {
    if (n == 0) return NULL;
    float *p = calloc(n, sizeof(float));
    if (!p) *ok = false;
    return p;
}

ds4_state *ds4_state_create(const ds4_hparams *hp, int ctx, int chunk, ds4_err *err) {
    if (ctx < 1) {
        ds4_errf(err, "context size %d must be at least 1", ctx);
        return NULL;
    }
    if (chunk < 1 || chunk > ctx) {
        ds4_errf(err, "prefill chunk %d must be in [1, ctx=%d]", chunk, ctx);
        return NULL;
    }
    ds4_state *s = calloc(1, sizeof(*s));
    if (!s) goto oom;
    s->n_layer = hp->n_layer;
    s->head_dim = hp->head_dim;
    s->idx_dim = hp->idx_dim;
    s->n_vocab = hp->n_vocab;
    s->ctx = ctx;
    s->chunk = chunk;
    s->raw_window = hp->window < ctx ? hp->window : ctx;
    /* The ring holds the previous window-1 rows plus a whole chunk, so a batched
     * prefill can write its rows before any query reads them. */
    int64_t cap = (int64_t)hp->window + chunk;
    s->raw_cap = (int)(cap < ctx ? cap : ctx);
    bool ok = true;
    s->tokens = calloc((size_t)ctx, sizeof(int32_t));
    s->logits = zalloc_floats((size_t)hp->n_vocab, &ok);
    s->layers = calloc((size_t)hp->n_layer, sizeof(*s->layers));
    if (!s->tokens || !s->layers || !ok) goto oom_free;
    for (int il = 0; il < hp->n_layer; il++) {
        ds4_layer_state *L = &s->layers[il];
        L->ratio = hp->ratio[il];
        L->raw = zalloc_floats((size_t)s->raw_cap * hp->head_dim, &ok);
        if (L->ratio > 0) {
            L->comp_cap = (uint32_t)(ctx / L->ratio + 2);
            if ((int)L->comp_cap > s->comp_cap_max) s->comp_cap_max = (int)L->comp_cap;
            const bool csa = ds4_layer_kind(hp, il) == DS4_ATTN_CSA;
            L->cmp_slots = csa ? 2 * L->ratio : L->ratio;
            L->cmp_width = csa ? 2 * hp->head_dim : hp->head_dim;
            L->comp = zalloc_floats((size_t)L->comp_cap * hp->head_dim, &ok);
            L->cmp_kv = zalloc_floats((size_t)L->cmp_slots * L->cmp_width, &ok);
            L->cmp_score = zalloc_floats((size_t)L->cmp_slots * L->cmp_width, &ok);
            if (csa) {
                L->idx = zalloc_floats((size_t)L->comp_cap * hp->idx_dim, &ok);
                L->icmp_kv = zalloc_floats((size_t)8 * 2 * hp->idx_dim, &ok);
                L->icmp_score = zalloc_floats((size_t)8 * 2 * hp->idx_dim, &ok);
            }
        }
        if (!ok) goto oom_free;
    }
    ds4_state_reset(s);
    return s;
oom_free:
    ds4_state_free(s);
oom:
    ds4_errf(err, "out of memory allocating the session state for ctx %d", ctx);
    return NULL;
}

void ds4_state_free(ds4_state *s) {
    if (!s) return;
    if (s->layers) {
        for (int il = 0; il < s->n_layer; il++) {
            ds4_layer_state *L = &s->layers[il];
            free(L->raw);
            free(L->comp);
            free(L->cmp_kv);
            free(L->cmp_score);
            free(L->idx);
            free(L->icmp_kv);
            free(L->icmp_score);
        }
    }
    free(s->layers);
    free(s->tokens);
    free(s->logits);
    free(s);
}

static void fill(float *p, size_t n, float v) {
    for (size_t i = 0; i < n; i++) p[i] = v;
}

void ds4_state_reset(ds4_state *s) {
    s->n_tokens = 0;
    s->has_logits = false;
    for (int il = 0; il < s->n_layer; il++) {
        ds4_layer_state *L = &s->layers[il];
        L->n_comp = 0;
        L->n_idx = 0;
        if (L->ratio > 0) {
            const size_t n = (size_t)L->cmp_slots * L->cmp_width;
            fill(L->cmp_kv, n, 0.0f);
            fill(L->cmp_score, n, -INFINITY);
            if (L->icmp_kv) {
                fill(L->icmp_kv, (size_t)16 * s->idx_dim, 0.0f);
                fill(L->icmp_score, (size_t)16 * s->idx_dim, -INFINITY);
            }
        }
    }
}

size_t ds4_state_memory_bytes(const ds4_state *s) {
    size_t b = (size_t)s->ctx * 4 + (size_t)s->n_vocab * 4;
    for (int il = 0; il < s->n_layer; il++) {
        const ds4_layer_state *L = &s->layers[il];
        b += (size_t)s->raw_cap * s->head_dim * 4;
        if (L->ratio > 0) {
            b += (size_t)L->comp_cap * s->head_dim * 4 + (size_t)2 * L->cmp_slots * L->cmp_width * 4;
            if (L->idx) b += (size_t)L->comp_cap * s->idx_dim * 4 + (size_t)2 * 16 * s->idx_dim * 4;
        }
    }
    return b;
}

/* ------------------------------------------------------------------ payload */

static int raw_rows(const ds4_state *s) { return s->n_tokens < s->raw_window ? s->n_tokens : s->raw_window; }

size_t ds4_state_payload_size(const ds4_state *s) {
    const size_t T = (size_t)s->n_tokens, R = (size_t)raw_rows(s);
    size_t b = 4 * DS4_PAYLOAD_HEADER_WORDS + 4 * T + 4 * (size_t)s->n_vocab + 8 * (size_t)s->n_layer;
    for (int il = 0; il < s->n_layer; il++) {
        const ds4_layer_state *L = &s->layers[il];
        b += R * s->head_dim * 4;
        if (L->ratio > 0) {
            b += (T / (size_t)L->ratio) * s->head_dim * 4 + 2 * (size_t)L->cmp_slots * L->cmp_width * 4;
            if (L->idx) b += (T / 4) * s->idx_dim * 4 + 2 * (size_t)16 * s->idx_dim * 4;
        }
    }
    return b;
}

typedef struct writer {
    uint8_t *p;
} writer;

static void put_u32(writer *w, uint32_t v) {
    w->p[0] = (uint8_t)v;
    w->p[1] = (uint8_t)(v >> 8);
    w->p[2] = (uint8_t)(v >> 16);
    w->p[3] = (uint8_t)(v >> 24);
    w->p += 4;
}
/* Floats go out as their IEEE bits, little-endian (the host is little-endian). */
static void put_f32s(writer *w, const float *v, size_t n) {
    memcpy(w->p, v, n * 4);
    w->p += n * 4;
}

int ds4_state_save(const ds4_state *s, uint8_t *buf, size_t cap, ds4_err *err) {
    const size_t need = ds4_state_payload_size(s);
    if (cap < need) return ds4_errf(err, "payload buffer of %zu bytes is too small (need %zu)", cap, need);
    const int T = s->n_tokens, R = raw_rows(s);
    writer w = {buf};
    const uint32_t hdr[DS4_PAYLOAD_HEADER_WORDS] = {
        DS4_PAYLOAD_MAGIC, DS4_PAYLOAD_VERSION, (uint32_t)s->ctx, (uint32_t)s->chunk, (uint32_t)s->raw_cap,
        (uint32_t)s->raw_window, (uint32_t)s->comp_cap_max, (uint32_t)T, (uint32_t)s->n_layer,
        (uint32_t)s->head_dim, (uint32_t)s->idx_dim, (uint32_t)s->n_vocab, (uint32_t)R};
    for (int i = 0; i < DS4_PAYLOAD_HEADER_WORDS; i++) put_u32(&w, hdr[i]);
    for (int i = 0; i < T; i++) put_u32(&w, (uint32_t)s->tokens[i]);
    put_f32s(&w, s->logits, (size_t)s->n_vocab);
    for (int il = 0; il < s->n_layer; il++) put_u32(&w, s->layers[il].n_comp);
    for (int il = 0; il < s->n_layer; il++) put_u32(&w, s->layers[il].n_idx);
    for (int il = 0; il < s->n_layer; il++) {
        const ds4_layer_state *L = &s->layers[il];
        for (int p = T - R; p < T; p++) put_f32s(&w, L->raw + (size_t)(p % s->raw_cap) * s->head_dim, (size_t)s->head_dim);
        if (L->ratio > 0) {
            put_f32s(&w, L->comp, (size_t)L->n_comp * s->head_dim);
            put_f32s(&w, L->cmp_kv, (size_t)L->cmp_slots * L->cmp_width);
            put_f32s(&w, L->cmp_score, (size_t)L->cmp_slots * L->cmp_width);
            if (L->idx) {
                put_f32s(&w, L->idx, (size_t)L->n_idx * s->idx_dim);
                put_f32s(&w, L->icmp_kv, (size_t)16 * s->idx_dim);
                put_f32s(&w, L->icmp_score, (size_t)16 * s->idx_dim);
            }
        }
    }
    if ((size_t)(w.p - buf) != need) return ds4_errf(err, "internal error: payload size mismatch");
    return 0;
}

typedef struct reader {
    const uint8_t *p, *end;
} reader;

static bool get_u32(reader *r, uint32_t *v) {
    if (r->end - r->p < 4) return false;
    *v = (uint32_t)r->p[0] | (uint32_t)r->p[1] << 8 | (uint32_t)r->p[2] << 16 | (uint32_t)r->p[3] << 24;
    r->p += 4;
    return true;
}
static bool get_f32s(reader *r, float *v, size_t n) {
    if ((size_t)(r->end - r->p) / 4 < n) return false;
    memcpy(v, r->p, n * 4);
    r->p += n * 4;
    return true;
}

static int load_fail(ds4_state *s, ds4_err *err, const char *what) {
    ds4_state_reset(s);
    return ds4_errf(err, "session payload rejected: %s", what);
}

int ds4_state_load(ds4_state *s, const uint8_t *buf, size_t len, ds4_err *err) {
    reader r = {buf, buf + len};
    uint32_t h[DS4_PAYLOAD_HEADER_WORDS];
    for (int i = 0; i < DS4_PAYLOAD_HEADER_WORDS; i++)
        if (!get_u32(&r, &h[i])) return load_fail(s, err, "truncated header");
    char why[256];
#define REJECT(...)                                \
    do {                                           \
        snprintf(why, sizeof(why), __VA_ARGS__);   \
        return load_fail(s, err, why);             \
    } while (0)
    if (h[0] != DS4_PAYLOAD_MAGIC) REJECT("bad magic 0x%08x", h[0]);
    if (h[1] != DS4_PAYLOAD_VERSION) REJECT("unsupported version %u", h[1]);
    const uint32_t T = h[7];
    if (h[2] > (uint32_t)s->ctx) REJECT("written by a session of ctx %u, larger than this one's %d", h[2], s->ctx);
    if (T >= (uint32_t)s->ctx) REJECT("holds %u tokens, this session's ctx is %d", T, s->ctx);
    if (h[8] != (uint32_t)s->n_layer || h[9] != (uint32_t)s->head_dim || h[10] != (uint32_t)s->idx_dim ||
        h[11] != (uint32_t)s->n_vocab)
        REJECT("model shape (layers %u, head %u, indexer %u, vocab %u) differs from this model's (%d, %d, %d, %d)", h[8],
               h[9], h[10], h[11], s->n_layer, s->head_dim, s->idx_dim, s->n_vocab);
    if (h[3] != (uint32_t)s->chunk) REJECT("prefill chunk %u differs from this session's %d", h[3], s->chunk);
    if (h[5] != (uint32_t)s->raw_window) REJECT("raw window %u differs from this session's %d", h[5], s->raw_window);
    const uint32_t R = T < (uint32_t)s->raw_window ? T : (uint32_t)s->raw_window;
    if (h[12] != R) REJECT("raw row count %u, expected min(T, window) = %u", h[12], R);
    if (R > (uint32_t)s->raw_cap) REJECT("raw rows %u exceed the ring (%d)", R, s->raw_cap);
    if (h[6] > (uint32_t)s->comp_cap_max) REJECT("compressed capacity %u exceeds this session's %d", h[6], s->comp_cap_max);

    ds4_state_reset(s);
    for (uint32_t i = 0; i < T; i++) {
        uint32_t t;
        if (!get_u32(&r, &t)) REJECT("truncated token list");
        if (t >= (uint32_t)s->n_vocab) REJECT("token %u at position %u is outside the vocabulary", t, i);
        s->tokens[i] = (int32_t)t;
    }
    if (!get_f32s(&r, s->logits, (size_t)s->n_vocab)) REJECT("truncated logits");
    uint32_t nc[DS4_MAX_LAYERS], ni[DS4_MAX_LAYERS];
    for (int il = 0; il < s->n_layer; il++)
        if (!get_u32(&r, &nc[il])) REJECT("truncated row counts");
    for (int il = 0; il < s->n_layer; il++)
        if (!get_u32(&r, &ni[il])) REJECT("truncated row counts");
    for (int il = 0; il < s->n_layer; il++) {
        ds4_layer_state *L = &s->layers[il];
        const uint32_t want = L->ratio > 0 ? T / (uint32_t)L->ratio : 0;
        const uint32_t want_idx = L->idx ? T / 4 : 0;
        if (nc[il] != want || ni[il] != want_idx)
            REJECT("layer %d holds %u compressed / %u indexer rows, %u / %u expected for %u tokens", il, nc[il], ni[il],
                   want, want_idx, T);
        if (nc[il] > L->comp_cap) REJECT("layer %d: %u compressed rows exceed capacity %u", il, nc[il], L->comp_cap);
    }
    for (int il = 0; il < s->n_layer; il++) {
        ds4_layer_state *L = &s->layers[il];
        for (uint32_t p = T - R; p < T; p++)
            if (!get_f32s(&r, L->raw + (size_t)(p % (uint32_t)s->raw_cap) * s->head_dim, (size_t)s->head_dim))
                REJECT("truncated raw rows of layer %d", il);
        if (L->ratio > 0) {
            L->n_comp = nc[il];
            if (!get_f32s(&r, L->comp, (size_t)L->n_comp * s->head_dim) ||
                !get_f32s(&r, L->cmp_kv, (size_t)L->cmp_slots * L->cmp_width) ||
                !get_f32s(&r, L->cmp_score, (size_t)L->cmp_slots * L->cmp_width))
                REJECT("truncated compressor data of layer %d", il);
            if (L->idx) {
                L->n_idx = ni[il];
                if (!get_f32s(&r, L->idx, (size_t)L->n_idx * s->idx_dim) ||
                    !get_f32s(&r, L->icmp_kv, (size_t)16 * s->idx_dim) ||
                    !get_f32s(&r, L->icmp_score, (size_t)16 * s->idx_dim))
                    REJECT("truncated indexer data of layer %d", il);
            }
        }
    }
    if (r.p != r.end) REJECT("%zu unexpected bytes after the last layer", (size_t)(r.end - r.p));
#undef REJECT
    s->n_tokens = (int)T;
    s->has_logits = T > 0;
    return 0;
}
