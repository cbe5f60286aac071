/* ds4 — GGUF v3 writer.
 *
 * The writer only holds the description of the file: each metadata record is
 * encoded into bytes as soon as it is added, and each tensor gets its offset
 * in the data section as soon as it is added (aligned, in order). The header
 * is serialized once, written at offset 0, and the caller streams tensor
 * bytes with pwrite() at the returned offsets, so nothing the size of the
 * model is ever held in memory.
 *
 * The metadata setters return nothing; a problem (NULL or bad key, out of
 * memory) is remembered and reported by gguf_writer_write_header. */
#include "gguf/gguf.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

/* ================================================================ byte buffer */

typedef struct wbuf {
    uint8_t *p;
    size_t n, cap;
    bool oom; /* sticky: any failed append marks the buffer unusable */
    bool bad; /* the caller passed NULL data with a non-zero length */
} wbuf;

static void wb_put(wbuf *b, const void *src, size_t n) {
    if (b->oom || b->bad || n == 0) return;
    if (n > SIZE_MAX - b->n) {
        b->oom = true;
        return;
    }
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n) {
            if (cap > SIZE_MAX / 2) {
                cap = b->n + n;
                break;
            }
            cap *= 2;
        }
        uint8_t *q = realloc(b->p, cap);
        if (!q) {
            b->oom = true;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void wb_zeros(wbuf *b, size_t n) {
    static const uint8_t z[64];
    while (n > 0 && !b->oom) {
        size_t k = n < sizeof(z) ? n : sizeof(z);
        wb_put(b, z, k);
        n -= k;
    }
}

/* Little-endian, byte by byte, independent of the host. */
static void wb_u32(wbuf *b, uint32_t v) {
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    wb_put(b, x, 4);
}
static void wb_u64(wbuf *b, uint64_t v) {
    wb_u32(b, (uint32_t)v);
    wb_u32(b, (uint32_t)(v >> 32));
}
static void wb_str(wbuf *b, const char *s, uint64_t len) {
    if (len > SIZE_MAX) {
        b->oom = true;
        return;
    }
    wb_u64(b, len);
    wb_put(b, s, (size_t)len);
}
static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof(u));
    return u;
}
static uint64_t f64_bits(double d) {
    uint64_t u;
    memcpy(&u, &d, sizeof(u));
    return u;
}

/* ================================================================ writer state */

typedef struct wkv {
    char *key;
    gguf_vtype type;
    uint8_t *val; /* encoded: u32 value type, then the value */
    size_t val_len;
} wkv;

typedef struct wtensor {
    char *name;
    ds4_type type;
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    uint64_t rel_off; /* offset inside the data section */
    uint64_t size;
} wtensor;

struct gguf_writer {
    uint32_t alignment;
    wkv *kv;
    size_t n_kv, cap_kv;
    wtensor *t;
    size_t n_t, cap_t;
    uint64_t data_end;   /* end of the last tensor, relative to the data section */
    bool laid_out;       /* data_start is valid (write_header succeeded, nothing added since) */
    uint64_t data_start; /* absolute offset of the data section */
    char deferred[512];  /* first problem seen by a setter */
};

static void defer(gguf_writer *w, const char *fmt, ...) DS4_PRINTF(2, 3);
static void defer(gguf_writer *w, const char *fmt, ...) {
    if (w->deferred[0]) return; /* keep the first problem */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->deferred, sizeof(w->deferred), fmt, ap);
    va_end(ap);
}

gguf_writer *gguf_writer_create(uint32_t alignment) {
    if (alignment == 0) alignment = GGUF_DEFAULT_ALIGNMENT;
    if ((alignment & (alignment - 1)) != 0 || alignment > GGUF_MAX_ALIGNMENT) return NULL;
    gguf_writer *w = calloc(1, sizeof(*w));
    if (w) w->alignment = alignment;
    return w;
}

void gguf_writer_free(gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].val);
    }
    for (size_t i = 0; i < w->n_t; i++) free(w->t[i].name);
    free(w->kv);
    free(w->t);
    free(w);
}

static bool grow_kv(gguf_writer *w) {
    if (w->n_kv < w->cap_kv) return true;
    size_t cap = w->cap_kv ? w->cap_kv * 2 : 16;
    wkv *q = realloc(w->kv, cap * sizeof(*q));
    if (!q) return false;
    w->kv = q;
    w->cap_kv = cap;
    return true;
}

/* Take ownership of the encoded value in b and append a record; any problem
 * is deferred to gguf_writer_write_header. */
static void add_kv(gguf_writer *w, const char *key, gguf_vtype type, wbuf *b) {
    if (!w) {
        free(b->p);
        return;
    }
    w->laid_out = false;
    char *k = NULL;
    if (!key) defer(w, "metadata key is NULL");
    else if (!key[0]) defer(w, "metadata key is empty");
    else if (strlen(key) > GGUF_MAX_KEY_LEN)
        defer(w, "metadata key '%.64s...' is too long (at most %u bytes)", key, GGUF_MAX_KEY_LEN);
    else if (b->bad) defer(w, "metadata key '%s': value pointer is NULL", key);
    else if (b->oom) defer(w, "metadata key '%s': out of memory encoding the value", key);
    else if (!grow_kv(w) || !(k = strdup(key))) defer(w, "metadata key '%s': out of memory", key);
    if (!k) {
        free(b->p);
        return;
    }
    w->kv[w->n_kv++] = (wkv){k, type, b->p, b->n};
}

/* ================================================================ metadata setters */

void gguf_w_u32(gguf_writer *w, const char *key, uint32_t v) {
    wbuf b = {0};
    wb_u32(&b, GGUF_U32);
    wb_u32(&b, v);
    add_kv(w, key, GGUF_U32, &b);
}

void gguf_w_i32(gguf_writer *w, const char *key, int32_t v) {
    wbuf b = {0};
    wb_u32(&b, GGUF_I32);
    wb_u32(&b, (uint32_t)v);
    add_kv(w, key, GGUF_I32, &b);
}

void gguf_w_u64(gguf_writer *w, const char *key, uint64_t v) {
    wbuf b = {0};
    wb_u32(&b, GGUF_U64);
    wb_u64(&b, v);
    add_kv(w, key, GGUF_U64, &b);
}

void gguf_w_f32(gguf_writer *w, const char *key, float v) {
    wbuf b = {0};
    wb_u32(&b, GGUF_F32);
    wb_u32(&b, f32_bits(v));
    add_kv(w, key, GGUF_F32, &b);
}

void gguf_w_f64(gguf_writer *w, const char *key, double v) {
    wbuf b = {0};
    wb_u32(&b, GGUF_F64);
    wb_u64(&b, f64_bits(v));
    add_kv(w, key, GGUF_F64, &b);
}

void gguf_w_bool(gguf_writer *w, const char *key, bool v) {
    wbuf b = {0};
    uint8_t x = v ? 1 : 0;
    wb_u32(&b, GGUF_BOOL);
    wb_put(&b, &x, 1);
    add_kv(w, key, GGUF_BOOL, &b);
}

void gguf_w_str_n(gguf_writer *w, const char *key, const char *v, uint64_t len) {
    wbuf b = {0};
    if (!v && len) b.bad = true;
    wb_u32(&b, GGUF_STRING);
    wb_str(&b, v, len);
    add_kv(w, key, GGUF_STRING, &b);
}

void gguf_w_str(gguf_writer *w, const char *key, const char *v) {
    if (!v) {
        if (w) defer(w, "metadata key '%s': string value is NULL", key ? key : "(null)");
        return;
    }
    gguf_w_str_n(w, key, v, strlen(v));
}

/* Arrays of 4-byte scalars share one encoder. */
static void arr32(gguf_writer *w, const char *key, gguf_vtype et, const uint32_t *v, uint64_t n) {
    wbuf b = {0};
    if (n && !v) b.bad = true;
    wb_u32(&b, GGUF_ARRAY);
    wb_u32(&b, et);
    wb_u64(&b, n);
    for (uint64_t i = 0; i < n && !b.oom && !b.bad; i++) wb_u32(&b, v[i]);
    add_kv(w, key, GGUF_ARRAY, &b);
}

void gguf_w_arr_u32(gguf_writer *w, const char *key, const uint32_t *v, uint64_t n) {
    arr32(w, key, GGUF_U32, v, n);
}

void gguf_w_arr_i32(gguf_writer *w, const char *key, const int32_t *v, uint64_t n) {
    wbuf b = {0};
    if (n && !v) b.bad = true;
    wb_u32(&b, GGUF_ARRAY);
    wb_u32(&b, GGUF_I32);
    wb_u64(&b, n);
    for (uint64_t i = 0; i < n && !b.oom && !b.bad; i++) wb_u32(&b, (uint32_t)v[i]);
    add_kv(w, key, GGUF_ARRAY, &b);
}

void gguf_w_arr_f32(gguf_writer *w, const char *key, const float *v, uint64_t n) {
    wbuf b = {0};
    if (n && !v) b.bad = true;
    wb_u32(&b, GGUF_ARRAY);
    wb_u32(&b, GGUF_F32);
    wb_u64(&b, n);
    for (uint64_t i = 0; i < n && !b.oom && !b.bad; i++) wb_u32(&b, f32_bits(v[i]));
    add_kv(w, key, GGUF_ARRAY, &b);
}

void gguf_w_arr_str(gguf_writer *w, const char *key, const char *const *strs, const uint64_t *lens, uint64_t n) {
    wbuf b = {0};
    if (n && !strs) b.bad = true;
    wb_u32(&b, GGUF_ARRAY);
    wb_u32(&b, GGUF_STRING);
    wb_u64(&b, n);
    for (uint64_t i = 0; i < n && !b.oom && !b.bad; i++) {
        uint64_t len = lens ? lens[i] : (strs[i] ? strlen(strs[i]) : 0);
        if (!strs[i] && len) {
            b.bad = true;
            break;
        }
        wb_str(&b, strs[i], len);
    }
    add_kv(w, key, GGUF_ARRAY, &b);
}

/* ================================================================ tensors */

/* Copy a record of another file verbatim: the value bytes in the file are
 * already the GGUF encoding (little-endian, arrays with their element type and
 * count), so any type, nested arrays included, is copied exactly. */
void gguf_w_copy(gguf_writer *w, const gguf_kv *kv) {
    wbuf b = {0};
    wb_u32(&b, (uint32_t)kv->type);
    if (kv->type == GGUF_ARRAY) {
        wb_u32(&b, (uint32_t)kv->arr_type);
        wb_u64(&b, kv->arr_n);
    }
    if (kv->data_bytes > SIZE_MAX) b.oom = true;
    else wb_put(&b, kv->data, (size_t)kv->data_bytes);
    add_kv(w, kv->key, kv->type, &b);
}

int64_t gguf_w_tensor(gguf_writer *w, const char *name, ds4_type type, uint32_t n_dims, const int64_t *ne) {
    if (!w || !name || !name[0] || strlen(name) > GGUF_MAX_NAME_LEN || !ne) return -1;
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS) return -1;
    int64_t block;
    uint64_t block_bytes;
    if (gguf_type_block((int)type, &block, &block_bytes)) return -1;
    int64_t nel = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] < 1 || ne[d] > INT64_MAX / nel) return -1;
        nel *= ne[d];
    }
    if (ne[0] % block != 0) return -1;
    uint64_t blocks = (uint64_t)(nel / block);
    if (blocks > UINT64_MAX / block_bytes) return -1;
    uint64_t size = blocks * block_bytes;

    /* Place it right after the previous tensor, aligned. Offsets stay below
     * 2^62 so that data_start + offset + size can never overflow. */
    uint64_t rem = w->data_end % w->alignment;
    uint64_t off = w->data_end + (rem ? w->alignment - rem : 0);
    const uint64_t limit = (uint64_t)1 << 62;
    if (off > limit || size > limit - off) return -1;

    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? w->cap_t * 2 : 64;
        wtensor *q = realloc(w->t, cap * sizeof(*q));
        if (!q) return -1;
        w->t = q;
        w->cap_t = cap;
    }
    char *nm = strdup(name);
    if (!nm) return -1;
    wtensor *t = &w->t[w->n_t];
    *t = (wtensor){.name = nm, .type = type, .n_dims = n_dims, .rel_off = off, .size = size};
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = (uint32_t)d < n_dims ? ne[d] : 1;
    w->data_end = off + size;
    w->laid_out = false;
    return (int64_t)w->n_t++;
}

/* ================================================================ header */

static int cmp_cstr_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Report the first name that appears twice in names[0..n) (sorted in place). */
static const char *find_duplicate(const char **names, size_t n) {
    qsort(names, n, sizeof(*names), cmp_cstr_ptr);
    for (size_t i = 1; i < n; i++)
        if (strcmp(names[i - 1], names[i]) == 0) return names[i];
    return NULL;
}

static int check_unique(gguf_writer *w, ds4_err *err) {
    size_t m = w->n_kv > w->n_t ? w->n_kv : w->n_t;
    if (m == 0) return 0;
    const char **names = malloc(m * sizeof(*names));
    if (!names) return ds4_errf(err, "gguf writer: out of memory");
    int rc = 0;
    for (size_t i = 0; i < w->n_kv; i++) names[i] = w->kv[i].key;
    const char *dup = find_duplicate(names, w->n_kv);
    if (dup) rc = ds4_errf(err, "gguf writer: duplicate metadata key '%s'", dup);
    if (!rc) {
        for (size_t i = 0; i < w->n_t; i++) names[i] = w->t[i].name;
        dup = find_duplicate(names, w->n_t);
        if (dup) rc = ds4_errf(err, "gguf writer: duplicate tensor name '%s'", dup);
    }
    free(names);
    return rc;
}

int gguf_writer_write_header(gguf_writer *w, int fd, ds4_err *err) {
    if (!w) return ds4_errf(err, "gguf writer: NULL writer");
    w->laid_out = false;
    if (w->deferred[0]) return ds4_errf(err, "gguf writer: %s", w->deferred);
    if (check_unique(w, err)) return -1;

    /* general.alignment must describe this writer's alignment: add it when
     * the alignment is not the default, and verify it when the caller set it. */
    bool have_align = false;
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, "general.alignment") != 0) continue;
        have_align = true;
        uint32_t v = 0;
        if (w->kv[i].type == GGUF_U32)
            v = (uint32_t)w->kv[i].val[4] | ((uint32_t)w->kv[i].val[5] << 8) | ((uint32_t)w->kv[i].val[6] << 16) |
                ((uint32_t)w->kv[i].val[7] << 24);
        if (w->kv[i].type != GGUF_U32 || v != w->alignment)
            return ds4_errf(err, "gguf writer: general.alignment must be the u32 %" PRIu32
                            " given to gguf_writer_create", w->alignment);
    }
    bool add_align = !have_align && w->alignment != GGUF_DEFAULT_ALIGNMENT;

    wbuf b = {0};
    wb_u32(&b, GGUF_MAGIC);
    wb_u32(&b, GGUF_VERSION);
    wb_u64(&b, w->n_t);
    wb_u64(&b, w->n_kv + (add_align ? 1 : 0));
    for (size_t i = 0; i < w->n_kv; i++) {
        wb_str(&b, w->kv[i].key, strlen(w->kv[i].key));
        wb_put(&b, w->kv[i].val, w->kv[i].val_len);
    }
    if (add_align) {
        static const char k[] = "general.alignment";
        wb_str(&b, k, sizeof(k) - 1);
        wb_u32(&b, GGUF_U32);
        wb_u32(&b, w->alignment);
    }
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        wb_str(&b, t->name, strlen(t->name));
        wb_u32(&b, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++) wb_u64(&b, (uint64_t)t->ne[d]);
        wb_u32(&b, (uint32_t)t->type);
        wb_u64(&b, t->rel_off);
    }
    size_t rem = b.n % w->alignment;
    wb_zeros(&b, rem ? w->alignment - rem : 0);
    if (b.oom) {
        free(b.p);
        return ds4_errf(err, "gguf writer: out of memory serializing the header");
    }
    int rc = gguf_pwrite_all(fd, b.p, b.n, 0, err);
    if (rc == 0) {
        w->data_start = b.n;
        w->laid_out = true;
    }
    free(b.p);
    return rc;
}

/* ================================================================ layout queries */

uint64_t gguf_writer_tensor_offset(const gguf_writer *w, int64_t index) {
    if (!w || !w->laid_out || index < 0 || (uint64_t)index >= w->n_t) return 0;
    return w->data_start + w->t[index].rel_off;
}

uint64_t gguf_writer_tensor_size(const gguf_writer *w, int64_t index) {
    if (!w || !w->laid_out || index < 0 || (uint64_t)index >= w->n_t) return 0;
    return w->t[index].size;
}

uint64_t gguf_writer_total_size(const gguf_writer *w) {
    if (!w || !w->laid_out) return 0;
    return w->data_start + w->data_end;
}

int gguf_writer_finish(gguf_writer *w, int fd, ds4_err *err) {
    if (!w || !w->laid_out)
        return ds4_errf(err, "gguf writer: finish called before a successful write_header (or after later changes)");
    uint64_t total = gguf_writer_total_size(w);
    if (total > (uint64_t)INT64_MAX) return ds4_errf(err, "gguf writer: file size %" PRIu64 " too large", total);
    if (ftruncate(fd, (off_t)total) != 0)
        return ds4_errf(err, "gguf writer: ftruncate to %" PRIu64 " bytes failed: %s", total, strerror(errno));
    if (fsync(fd) != 0) return ds4_errf(err, "gguf writer: fsync failed: %s", strerror(errno));
    return 0;
}

int gguf_pwrite_all(int fd, const void *buf, size_t len, uint64_t offset, ds4_err *err) {
    if (offset > (uint64_t)INT64_MAX || (uint64_t)len > (uint64_t)INT64_MAX - offset)
        return ds4_errf(err, "pwrite of %zu bytes at offset %" PRIu64 ": range too large", len, offset);
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t k = pwrite(fd, p, len, (off_t)offset);
        if (k < 0) {
            if (errno == EINTR) continue;
            return ds4_errf(err, "pwrite of %zu bytes at offset %" PRIu64 " failed: %s", len, offset, strerror(errno));
        }
        if (k == 0) return ds4_errf(err, "pwrite of %zu bytes at offset %" PRIu64 " wrote nothing", len, offset);
        p += k;
        len -= (size_t)k;
        offset += (uint64_t)k;
    }
    return 0;
}
