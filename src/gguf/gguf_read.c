/* ds4 — GGUF v3 reader: map the file, validate every byte of the header,
 * metadata and tensor infos against the file size, and index it.
 *
 * Approach: the whole file is mapped read-only and parsed with a cursor that
 * refuses to step past the end of the mapping. Every length and count coming
 * from the file is compared with the bytes that remain *before* it is added
 * to a position or multiplied, so no arithmetic on untrusted numbers can
 * overflow, and no count can make us allocate more than the file could
 * describe. Tensor data is only ever addressed (pointer arithmetic), never
 * read, so sparse header-only files open without faulting their data pages.
 *
 * Error messages name the record (metadata record #i / key, tensor info #i /
 * name) and the field, and are prefixed with the path by gguf_open(). */
#include "gguf/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ================================================================ tensor types */

/* The container's type table: enough to size a tensor. quant.c owns the
 * kernels and its own traits table; these numbers are MODEL.md §14. */
typedef struct type_row {
    int type;
    const char *name;
    int64_t block;        /* elements per block */
    uint64_t block_bytes; /* bytes per block */
} type_row;

static const type_row k_types[] = {
    {DS4_TYPE_F32, "f32", 1, 4},
    {DS4_TYPE_F16, "f16", 1, 2},
    {DS4_TYPE_Q8_0, "q8_0", 32, 34},
    {DS4_TYPE_Q2_K, "q2_K", 256, 84},
    {DS4_TYPE_Q4_K, "q4_K", 256, 144},
    {DS4_TYPE_IQ2_XXS, "iq2_xxs", 256, 66},
    {DS4_TYPE_I32, "i32", 1, 4},
    {DS4_TYPE_BF16, "bf16", 1, 2},
};

static const type_row *type_lookup(int type) {
    for (size_t i = 0; i < sizeof(k_types) / sizeof(k_types[0]); i++)
        if (k_types[i].type == type) return &k_types[i];
    return NULL;
}

int gguf_type_block(int type, int64_t *block, uint64_t *block_bytes) {
    const type_row *r = type_lookup(type);
    if (!r) return -1;
    if (block) *block = r->block;
    if (block_bytes) *block_bytes = r->block_bytes;
    return 0;
}

const char *gguf_type_name(int type) {
    const type_row *r = type_lookup(type);
    return r ? r->name : NULL;
}

/* ================================================================ value types */

static const char *const k_vtype_names[] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
};

const char *gguf_vtype_name(gguf_vtype t) {
    if ((unsigned)t < sizeof(k_vtype_names) / sizeof(k_vtype_names[0])) return k_vtype_names[t];
    return "unknown";
}

static bool vtype_known(uint32_t t) { return t <= GGUF_F64; }

/* Bytes of one scalar of type t; 0 for string, array and unknown types. */
static uint64_t vtype_scalar_size(uint32_t t) {
    switch (t) {
    case GGUF_U8: case GGUF_I8: case GGUF_BOOL: return 1;
    case GGUF_U16: case GGUF_I16: return 2;
    case GGUF_U32: case GGUF_I32: case GGUF_F32: return 4;
    case GGUF_U64: case GGUF_I64: case GGUF_F64: return 8;
    default: return 0;
    }
}

/* ================================================================ little-endian decoding */

/* Byte-wise so the code is independent of host endianness and alignment. */
static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | ((uint64_t)rd32(p + 4) << 32); }

/* Two's-complement reinterpretation without implementation-defined casts. */
static int64_t sext(uint64_t u, unsigned bits) {
    if (bits < 64) {
        uint64_t sign = (uint64_t)1 << (bits - 1);
        u &= (sign << 1) - 1;
        return u & sign ? (int64_t)(u - sign) - (int64_t)sign : (int64_t)u;
    }
    return u <= (uint64_t)INT64_MAX ? (int64_t)u : -(int64_t)(~u) - 1;
}

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}
static double bits_f64(uint64_t u) {
    double d;
    memcpy(&d, &u, sizeof(d));
    return d;
}

/* ================================================================ printable names */

/* Copy at most 80 bytes of an untrusted name into buf for a message,
 * replacing control bytes with '?' so messages stay one readable line. */
static const char *printable(char *buf, size_t cap, const char *s, uint64_t len) {
    size_t lim = cap - 4, n = 0;
    if (lim > 80) lim = 80;
    for (uint64_t i = 0; i < len && n < lim; i++) {
        unsigned char c = (unsigned char)s[i];
        buf[n++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    if (len > n) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n] = 0;
    return buf;
}

/* ================================================================ parse cursor */

typedef struct parser {
    const uint8_t *base;
    uint64_t size; /* file size */
    uint64_t pos;  /* invariant: pos <= size */
    ds4_err *err;
    char ctx[160]; /* "metadata record #3 ('general.name')": what is being parsed */
} parser;

/* Fail unless n more bytes are available at pos. Never computes pos + n
 * unless it is known not to overflow. */
static int need(parser *p, uint64_t n, const char *field) {
    if (n <= p->size - p->pos) return 0;
    if (n > UINT64_MAX - p->pos)
        return ds4_errf(p->err, "truncated file: %s: %s of %" PRIu64 " bytes at byte %" PRIu64
                        " runs past the end of the file (%" PRIu64 " bytes)",
                        p->ctx, field, n, p->pos, p->size);
    return ds4_errf(p->err, "truncated file: %s: %s ends at byte %" PRIu64 ", past the end of the file (%" PRIu64
                    " bytes)", p->ctx, field, p->pos + n, p->size);
}

static int take_u32(parser *p, uint32_t *out, const char *field) {
    if (need(p, 4, field)) return -1;
    *out = rd32(p->base + p->pos);
    p->pos += 4;
    return 0;
}

static int take_u64(parser *p, uint64_t *out, const char *field) {
    if (need(p, 8, field)) return -1;
    *out = rd64(p->base + p->pos);
    p->pos += 8;
    return 0;
}

/* A GGUF string: u64 length, then that many bytes (no terminator). */
static int take_str(parser *p, gguf_str *out, const char *field) {
    uint64_t len;
    if (take_u64(p, &len, field)) return -1;
    if (need(p, len, field)) return -1;
    out->ptr = (const char *)p->base + p->pos;
    out->len = len;
    p->pos += len;
    return 0;
}

static int parse_array_body(parser *p, uint32_t et, uint64_t n, int depth);

/* Validate and skip one value of type t. depth = array nesting of the value. */
static int parse_value(parser *p, uint32_t t, int depth) {
    uint64_t sz = vtype_scalar_size(t);
    if (sz) {
        if (need(p, sz, gguf_vtype_name((gguf_vtype)t))) return -1;
        if (t == GGUF_BOOL && p->base[p->pos] > 1)
            return ds4_errf(p->err, "%s: bool value %u at byte %" PRIu64 " is neither 0 nor 1", p->ctx,
                            p->base[p->pos], p->pos);
        p->pos += sz;
        return 0;
    }
    if (t == GGUF_STRING) {
        gguf_str s;
        return take_str(p, &s, "string");
    }
    if (t == GGUF_ARRAY) {
        if (depth + 1 > GGUF_MAX_ARRAY_DEPTH)
            return ds4_errf(p->err, "%s: arrays nested more than %d deep", p->ctx, GGUF_MAX_ARRAY_DEPTH);
        uint32_t et;
        uint64_t n;
        if (take_u32(p, &et, "nested array element type") || take_u64(p, &n, "nested array count")) return -1;
        return parse_array_body(p, et, n, depth + 1);
    }
    return ds4_errf(p->err, "%s: unknown value type %" PRIu32, p->ctx, t);
}

/* Validate the n elements of an array of element type et. Counts are checked
 * against the remaining bytes first (each element needs at least its minimum
 * encoding), so the element loop is bounded by the file size. */
static int parse_array_body(parser *p, uint32_t et, uint64_t n, int depth) {
    if (!vtype_known(et)) return ds4_errf(p->err, "%s: unknown array element type %" PRIu32, p->ctx, et);
    uint64_t left = p->size - p->pos;
    uint64_t sz = vtype_scalar_size(et);
    if (sz) {
        if (n > left / sz)
            return ds4_errf(p->err, "truncated file: %s: array of %" PRIu64 " %s elements at byte %" PRIu64
                            " runs past the end of the file (%" PRIu64 " bytes)",
                            p->ctx, n, gguf_vtype_name((gguf_vtype)et), p->pos, p->size);
        if (et == GGUF_BOOL) {
            for (uint64_t i = 0; i < n; i++)
                if (p->base[p->pos + i] > 1)
                    return ds4_errf(p->err, "%s: bool array element %" PRIu64 " is %u (neither 0 nor 1)", p->ctx,
                                    i, p->base[p->pos + i]);
        }
        p->pos += n * sz;
        return 0;
    }
    uint64_t min_elem = et == GGUF_STRING ? 8 : 12; /* string: u64 len; array: u32 type + u64 count */
    if (n > left / min_elem)
        return ds4_errf(p->err, "truncated file: %s: array of %" PRIu64 " %s elements at byte %" PRIu64
                        " cannot fit in the rest of the file (%" PRIu64 " bytes)",
                        p->ctx, n, gguf_vtype_name((gguf_vtype)et), p->pos, left);
    for (uint64_t i = 0; i < n; i++)
        if (parse_value(p, et, depth)) return -1;
    return 0;
}

/* ================================================================ sorted name index */

typedef struct name_ref {
    const char *s;
    uint64_t i;
} name_ref;

static int cmp_name_ref(const void *a, const void *b) {
    const name_ref *x = a, *y = b;
    int c = strcmp(x->s, y->s);
    if (c) return c;
    return x->i < y->i ? -1 : x->i > y->i;
}

/* Sort names[0..n) into order[]; on a duplicate, report the first pair found
 * (the two record indices) through *dup_a and *dup_b and return -1. */
static int build_index(const char *const *names, uint64_t n, uint64_t *order, uint64_t *dup_a, uint64_t *dup_b) {
    if (n == 0) return 0;
    name_ref *refs = malloc(n * sizeof(*refs));
    if (!refs) return -2;
    for (uint64_t i = 0; i < n; i++) refs[i] = (name_ref){names[i], i};
    qsort(refs, n, sizeof(*refs), cmp_name_ref);
    int rc = 0;
    for (uint64_t i = 0; i < n; i++) {
        order[i] = refs[i].i;
        if (i > 0 && rc == 0 && strcmp(refs[i - 1].s, refs[i].s) == 0) {
            *dup_a = refs[i - 1].i;
            *dup_b = refs[i].i;
            rc = -1;
        }
    }
    free(refs);
    return rc;
}

/* ================================================================ metadata */

/* Minimum encoded size of one metadata record: u64 key length, >= 1 key
 * byte, u32 value type, >= 1 value byte. */
#define KV_MIN_BYTES 14u
/* Minimum encoded size of one tensor info: u64 name length, >= 1 name byte,
 * u32 n_dims, >= 1 u64 dim, u32 type, u64 offset. */
#define TENSOR_MIN_BYTES 33u

static int parse_kvs(gguf_file *f, parser *p) {
    for (uint64_t i = 0; i < f->n_kv; i++) {
        gguf_kv *kv = &f->kv[i];
        char pk[96];
        snprintf(p->ctx, sizeof(p->ctx), "metadata record #%" PRIu64, i);
        gguf_str key;
        if (take_str(p, &key, "key")) return -1;
        if (key.len == 0) return ds4_errf(p->err, "%s has an empty key", p->ctx);
        if (key.len > GGUF_MAX_KEY_LEN)
            return ds4_errf(p->err, "%s: key of %" PRIu64 " bytes is too long (at most %u)", p->ctx, key.len,
                            GGUF_MAX_KEY_LEN);
        if (memchr(key.ptr, 0, key.len))
            return ds4_errf(p->err, "%s: key '%s' contains a NUL byte", p->ctx,
                            printable(pk, sizeof(pk), key.ptr, key.len));
        kv->key = malloc(key.len + 1);
        if (!kv->key) return ds4_errf(p->err, "out of memory");
        memcpy(kv->key, key.ptr, key.len);
        kv->key[key.len] = 0;
        snprintf(p->ctx, sizeof(p->ctx), "metadata record #%" PRIu64 " ('%s')", i,
                 printable(pk, sizeof(pk), key.ptr, key.len));

        uint32_t t;
        if (take_u32(p, &t, "value type")) return -1;
        if (!vtype_known(t)) return ds4_errf(p->err, "%s: unknown value type %" PRIu32, p->ctx, t);
        kv->type = (gguf_vtype)t;
        if (t == GGUF_ARRAY) {
            uint32_t et;
            uint64_t n;
            if (take_u32(p, &et, "array element type") || take_u64(p, &n, "array count")) return -1;
            kv->arr_type = (gguf_vtype)et;
            kv->arr_n = n;
            kv->data = p->base + p->pos;
            uint64_t start = p->pos;
            if (parse_array_body(p, et, n, 1)) return -1;
            kv->data_bytes = p->pos - start;
        } else {
            kv->data = p->base + p->pos;
            uint64_t start = p->pos;
            if (parse_value(p, t, 0)) return -1;
            kv->data_bytes = p->pos - start;
        }
    }
    return 0;
}

/* general.alignment: optional, u32, a power of two in 1..GGUF_MAX_ALIGNMENT. */
static int read_alignment(gguf_file *f, ds4_err *err) {
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    const gguf_kv *kv = gguf_find_kv(f, "general.alignment");
    if (!kv) return 0;
    if (kv->type != GGUF_U32)
        return ds4_errf(err, "general.alignment has type %s, expected u32",
                        kv->type == GGUF_ARRAY ? "array" : gguf_vtype_name(kv->type));
    uint32_t a = rd32(kv->data);
    if (a == 0 || (a & (a - 1)) != 0 || a > GGUF_MAX_ALIGNMENT)
        return ds4_errf(err, "general.alignment = %" PRIu32 " is not a power of two in 1..%u", a,
                        GGUF_MAX_ALIGNMENT);
    f->alignment = a;
    return 0;
}

/* ================================================================ tensor infos */

static int parse_tensor_infos(gguf_file *f, parser *p) {
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        char pn[96];
        snprintf(p->ctx, sizeof(p->ctx), "tensor info #%" PRIu64, i);
        gguf_str name;
        if (take_str(p, &name, "name")) return -1;
        if (name.len == 0) return ds4_errf(p->err, "%s has an empty name", p->ctx);
        if (name.len > GGUF_MAX_NAME_LEN)
            return ds4_errf(p->err, "%s: name '%s' of %" PRIu64 " bytes is too long (at most %u)", p->ctx,
                            printable(pn, sizeof(pn), name.ptr, name.len), name.len, GGUF_MAX_NAME_LEN);
        if (memchr(name.ptr, 0, name.len))
            return ds4_errf(p->err, "%s: name '%s' contains a NUL byte", p->ctx,
                            printable(pn, sizeof(pn), name.ptr, name.len));
        t->name = malloc(name.len + 1);
        if (!t->name) return ds4_errf(p->err, "out of memory");
        memcpy(t->name, name.ptr, name.len);
        t->name[name.len] = 0;
        snprintf(p->ctx, sizeof(p->ctx), "tensor info #%" PRIu64 " ('%s')", i,
                 printable(pn, sizeof(pn), name.ptr, name.len));
        /* From here on messages say "tensor 'name'"; names are at most 256 bytes. */
        const char *tn = printable(pn, sizeof(pn), name.ptr, name.len);

        uint32_t nd;
        if (take_u32(p, &nd, "n_dims")) return -1;
        if (nd == 0 || nd > GGUF_MAX_DIMS)
            return ds4_errf(p->err, "tensor '%s' has %" PRIu32 " dimensions (expected 1..%d)", tn, nd,
                            GGUF_MAX_DIMS);
        t->n_dims = nd;
        if (need(p, 8u * nd, "dims")) return -1;
        int64_t nel = 1;
        for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
        for (uint32_t d = 0; d < nd; d++) {
            uint64_t v = rd64(p->base + p->pos);
            p->pos += 8;
            if (v == 0) return ds4_errf(p->err, "tensor '%s': dimension %" PRIu32 " is 0", tn, d);
            if (v > (uint64_t)INT64_MAX)
                return ds4_errf(p->err, "tensor '%s': dimension %" PRIu32 " = %" PRIu64 " is too large", tn, d, v);
            if ((int64_t)v > INT64_MAX / nel)
                return ds4_errf(p->err, "tensor '%s': element count overflows (dimension %" PRIu32 " = %" PRIu64
                                ")", tn, d, v);
            t->ne[d] = (int64_t)v;
            nel *= (int64_t)v;
        }

        uint32_t type;
        if (take_u32(p, &type, "type")) return -1;
        const type_row *tr = type <= INT32_MAX ? type_lookup((int)type) : NULL;
        if (!tr) return ds4_errf(p->err, "tensor '%s' has unknown type %" PRIu32, tn, type);
        t->type = (ds4_type)type;
        if (t->ne[0] % tr->block != 0)
            return ds4_errf(p->err, "tensor '%s': ne[0] = %" PRId64 " is not a multiple of the %s block size (%" PRId64
                            ")", tn, t->ne[0], tr->name, tr->block);
        uint64_t blocks = (uint64_t)(nel / tr->block);
        if (blocks > UINT64_MAX / tr->block_bytes)
            return ds4_errf(p->err, "tensor '%s': byte size overflows (%" PRId64 " elements of %s)", tn, nel, tr->name);
        t->size = blocks * tr->block_bytes;
        if (take_u64(p, &t->offset, "offset")) return -1;
    }
    return 0;
}

typedef struct span {
    uint64_t off, end, i;
} span;

static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->off != y->off) return x->off < y->off ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

/* Place every tensor in the data section: aligned offset, inside the file,
 * and no two ranges overlapping. Pure arithmetic: the data is not read. */
static int place_tensors(gguf_file *f, ds4_err *err) {
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        if (t->offset % f->alignment != 0)
            return ds4_errf(err, "tensor '%s': offset %" PRIu64 " is not a multiple of the alignment (%" PRIu32 ")",
                            t->name, t->offset, f->alignment);
        uint64_t room = f->file_size - f->data_start; /* data_start <= file_size checked by caller */
        if (t->offset > room || t->size > room - t->offset) {
            if (t->offset > UINT64_MAX - f->data_start || t->size > UINT64_MAX - f->data_start - t->offset)
                return ds4_errf(err, "tensor '%s': data at offset %" PRIu64 " (+%" PRIu64
                                " bytes) ends past the end of the file (%" PRIu64 " bytes)",
                                t->name, t->offset, t->size, f->file_size);
            uint64_t a = f->data_start + t->offset;
            return ds4_errf(err, "tensor '%s': data [%" PRIu64 ", %" PRIu64 ") ends past the end of the file (%" PRIu64
                            " bytes)", t->name, a, a + t->size, f->file_size);
        }
        t->data = f->map + f->data_start + t->offset;
    }
    if (f->n_tensors < 2) return 0;
    span *s = malloc(f->n_tensors * sizeof(*s));
    if (!s) return ds4_errf(err, "out of memory");
    for (uint64_t i = 0; i < f->n_tensors; i++)
        s[i] = (span){f->tensors[i].offset, f->tensors[i].offset + f->tensors[i].size, i};
    qsort(s, f->n_tensors, sizeof(*s), cmp_span);
    /* In offset order, any overlap implies one between neighbours: if i and
     * j > i + 1 overlap, s[i+1] starts inside s[i] too. */
    int rc = 0;
    for (uint64_t k = 1; k < f->n_tensors; k++) {
        if (s[k].off < s[k - 1].end) {
            const gguf_tensor *a = &f->tensors[s[k - 1].i], *b = &f->tensors[s[k].i];
            rc = ds4_errf(err, "tensors '%s' and '%s' overlap: data offsets [%" PRIu64 ", %" PRIu64 ") and [%" PRIu64
                          ", %" PRIu64 ")", a->name, b->name, a->offset, a->offset + a->size, b->offset,
                          b->offset + b->size);
            break;
        }
    }
    free(s);
    return rc;
}

/* ================================================================ open / close */

static int parse_all(gguf_file *f, ds4_err *err) {
    parser p = {.base = f->map, .size = f->file_size, .pos = 0, .err = err};
    snprintf(p.ctx, sizeof(p.ctx), "header");

    uint32_t magic = rd32(p.base);
    if (magic != GGUF_MAGIC)
        return ds4_errf(err, "bad magic 0x%08" PRIx32 " (expected 0x%08x, \"GGUF\"): not a GGUF file", magic,
                        GGUF_MAGIC);
    f->version = rd32(p.base + 4);
    if (f->version != GGUF_VERSION)
        return ds4_errf(err, "unsupported GGUF version %" PRIu32 " (only v3)", f->version);
    f->n_tensors = rd64(p.base + 8);
    f->n_kv = rd64(p.base + 16);
    p.pos = 24;

    /* Reject counts the file cannot possibly hold before allocating for them. */
    uint64_t left = f->file_size - p.pos;
    if (f->n_kv > left / KV_MIN_BYTES)
        return ds4_errf(err, "truncated or corrupt header: n_kv = %" PRIu64 " metadata records cannot fit in the %"
                        PRIu64 " bytes after the header (each needs at least %u)", f->n_kv, left, KV_MIN_BYTES);
    if (f->n_tensors > left / TENSOR_MIN_BYTES)
        return ds4_errf(err, "truncated or corrupt header: n_tensors = %" PRIu64 " tensor infos cannot fit in the %"
                        PRIu64 " bytes after the header (each needs at least %u)", f->n_tensors, left, TENSOR_MIN_BYTES);
    /* Both products are <= left here, so the sum cannot overflow. */
    if (f->n_kv * KV_MIN_BYTES + f->n_tensors * TENSOR_MIN_BYTES > left)
        return ds4_errf(err, "truncated or corrupt header: n_kv = %" PRIu64 " metadata records and n_tensors = %" PRIu64
                        " tensor infos cannot fit in the %" PRIu64 " bytes after the header", f->n_kv, f->n_tensors,
                        left);

    if (f->n_kv) {
        f->kv = calloc(f->n_kv, sizeof(*f->kv));
        f->kv_order = malloc(f->n_kv * sizeof(*f->kv_order));
        if (!f->kv || !f->kv_order) return ds4_errf(err, "out of memory");
    }
    if (parse_kvs(f, &p)) return -1;

    /* Key index: binary-search lookup, and duplicate detection. */
    if (f->n_kv) {
        const char **keys = malloc(f->n_kv * sizeof(*keys));
        if (!keys) return ds4_errf(err, "out of memory");
        for (uint64_t i = 0; i < f->n_kv; i++) keys[i] = f->kv[i].key;
        uint64_t a = 0, b = 0;
        int rc = build_index(keys, f->n_kv, f->kv_order, &a, &b);
        free(keys);
        if (rc == -2) return ds4_errf(err, "out of memory");
        if (rc)
            return ds4_errf(err, "duplicate metadata key '%s' (records #%" PRIu64 " and #%" PRIu64 ")", f->kv[a].key, a,
                            b);
    }
    if (read_alignment(f, err)) return -1;

    /* The metadata consumed bytes: recheck the tensor count precisely. */
    left = f->file_size - p.pos;
    if (f->n_tensors > left / TENSOR_MIN_BYTES)
        return ds4_errf(err, "truncated or corrupt file: n_tensors = %" PRIu64 " tensor infos cannot fit in the %"
                        PRIu64 " bytes after the metadata (each needs at least %u)", f->n_tensors, left, TENSOR_MIN_BYTES);
    if (f->n_tensors) {
        f->tensors = calloc(f->n_tensors, sizeof(*f->tensors));
        f->name_order = malloc(f->n_tensors * sizeof(*f->name_order));
        if (!f->tensors || !f->name_order) return ds4_errf(err, "out of memory");
    }
    if (parse_tensor_infos(f, &p)) return -1;

    if (f->n_tensors) {
        const char **names = malloc(f->n_tensors * sizeof(*names));
        if (!names) return ds4_errf(err, "out of memory");
        for (uint64_t i = 0; i < f->n_tensors; i++) names[i] = f->tensors[i].name;
        uint64_t a = 0, b = 0;
        int rc = build_index(names, f->n_tensors, f->name_order, &a, &b);
        free(names);
        if (rc == -2) return ds4_errf(err, "out of memory");
        if (rc)
            return ds4_errf(err, "duplicate tensor name '%s' (tensor infos #%" PRIu64 " and #%" PRIu64 ")",
                            f->tensors[a].name, a, b);
    }

    /* data_start = align_up(end of infos). pos <= file_size < 2^63, so no
     * overflow. A file without tensors may end before the padding. */
    uint64_t rem = p.pos % f->alignment;
    f->data_start = p.pos + (rem ? f->alignment - rem : 0);
    if (f->n_tensors == 0) return 0;
    if (f->data_start > f->file_size)
        return ds4_errf(err, "truncated file: the data section would start at byte %" PRIu64
                        ", past the end of the file (%" PRIu64 " bytes)", f->data_start, f->file_size);
    return place_tensors(f, err);
}

gguf_file *gguf_open(const char *path, ds4_err *err) {
    ds4_err local;
    if (!err) err = &local;
    err->msg[0] = 0;
    if (!path) {
        ds4_errf(err, "gguf_open: path is NULL");
        return NULL;
    }
    gguf_file *f = calloc(1, sizeof(*f));
    if (!f || !(f->path = strdup(path))) {
        free(f);
        ds4_errf(err, "%s: out of memory", path);
        return NULL;
    }
    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0) {
        ds4_errf(err, "cannot open: %s", strerror(errno));
        goto fail;
    }
    struct stat st;
    if (fstat(f->fd, &st) != 0) {
        ds4_errf(err, "cannot stat: %s", strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        ds4_errf(err, "not a regular file");
        goto fail;
    }
    f->file_size = (uint64_t)st.st_size;
    if (f->file_size < 24) {
        /* Also keeps mmap away from empty files (mmap of 0 bytes fails). */
        ds4_errf(err, "truncated file: %" PRIu64 " bytes, the GGUF header alone needs 24", f->file_size);
        goto fail;
    }
    if (f->file_size > SIZE_MAX || f->file_size > (uint64_t)INT64_MAX) {
        ds4_errf(err, "file of %" PRIu64 " bytes is too large to map", f->file_size);
        goto fail;
    }
    void *m = mmap(NULL, (size_t)f->file_size, PROT_READ, MAP_PRIVATE, f->fd, 0);
    if (m == MAP_FAILED) {
        ds4_errf(err, "mmap of %" PRIu64 " bytes failed: %s", f->file_size, strerror(errno));
        goto fail;
    }
    f->map = m;
    if (parse_all(f, err)) goto fail;
    return f;

fail:
    ds4_err_prefix(err, "%s", path);
    gguf_close(f);
    return NULL;
}

void gguf_close(gguf_file *f) {
    if (!f) return;
    if (f->map) munmap((void *)f->map, (size_t)f->file_size);
    if (f->fd >= 0) close(f->fd);
    if (f->kv)
        for (uint64_t i = 0; i < f->n_kv; i++) free(f->kv[i].key);
    if (f->tensors)
        for (uint64_t i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->kv);
    free(f->kv_order);
    free(f->tensors);
    free(f->name_order);
    free(f->path);
    free(f);
}

/* ================================================================ lookups */

const gguf_kv *gguf_find_kv(const gguf_file *f, const char *key) {
    if (!f || !key || !f->kv_order) return NULL;
    uint64_t lo = 0, hi = f->n_kv;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        const gguf_kv *kv = &f->kv[f->kv_order[mid]];
        int c = strcmp(key, kv->key);
        if (c == 0) return kv;
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name) {
    if (!f || !name || !f->name_order) return NULL;
    uint64_t lo = 0, hi = f->n_tensors;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        const gguf_tensor *t = &f->tensors[f->name_order[mid]];
        int c = strcmp(name, t->name);
        if (c == 0) return t;
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

/* ================================================================ typed getters */

/* "u32" or "array of u32" for messages. */
static const char *kv_type_desc(const gguf_kv *kv, char *buf, size_t cap) {
    if (kv->type != GGUF_ARRAY) return gguf_vtype_name(kv->type);
    snprintf(buf, cap, "array of %s", gguf_vtype_name(kv->arr_type));
    return buf;
}

static const gguf_kv *find_or_err(const gguf_file *f, const char *key, ds4_err *err) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv) ds4_errf(err, "metadata key '%s' is missing", key ? key : "(null)");
    return kv;
}

static int wrong_type(const gguf_kv *kv, const char *expected, ds4_err *err) {
    char buf[64];
    return ds4_errf(err, "key '%s' has type %s, expected %s", kv->key, kv_type_desc(kv, buf, sizeof(buf)), expected);
}

/* Integer value of a scalar at p of integer/bool type t. */
static bool scalar_int(uint32_t t, const uint8_t *p, bool *is_signed, uint64_t *u, int64_t *s) {
    switch (t) {
    case GGUF_U8: case GGUF_BOOL: *u = p[0]; *is_signed = false; return true;
    case GGUF_U16: *u = rd16(p); *is_signed = false; return true;
    case GGUF_U32: *u = rd32(p); *is_signed = false; return true;
    case GGUF_U64: *u = rd64(p); *is_signed = false; return true;
    case GGUF_I8: *s = sext(p[0], 8); *is_signed = true; return true;
    case GGUF_I16: *s = sext(rd16(p), 16); *is_signed = true; return true;
    case GGUF_I32: *s = sext(rd32(p), 32); *is_signed = true; return true;
    case GGUF_I64: *s = sext(rd64(p), 64); *is_signed = true; return true;
    default: return false;
    }
}

int gguf_get_uint(const gguf_file *f, const char *key, uint64_t *out, ds4_err *err) {
    const gguf_kv *kv = find_or_err(f, key, err);
    if (!kv) return -1;
    bool sg = false;
    uint64_t u = 0;
    int64_t s = 0;
    if (kv->type == GGUF_BOOL || !scalar_int(kv->type, kv->data, &sg, &u, &s))
        return wrong_type(kv, "an unsigned integer", err);
    if (sg) {
        if (s < 0)
            return ds4_errf(err, "key '%s' has the negative value %" PRId64 ", expected an unsigned integer", kv->key, s);
        u = (uint64_t)s;
    }
    *out = u;
    return 0;
}

int gguf_get_float(const gguf_file *f, const char *key, double *out, ds4_err *err) {
    const gguf_kv *kv = find_or_err(f, key, err);
    if (!kv) return -1;
    switch (kv->type) {
    case GGUF_F32: *out = bits_f32(rd32(kv->data)); return 0;
    case GGUF_F64: *out = bits_f64(rd64(kv->data)); return 0;
    case GGUF_U32: *out = (double)rd32(kv->data); return 0;
    case GGUF_I32: *out = (double)sext(rd32(kv->data), 32); return 0;
    default: return wrong_type(kv, "a number (f32, f64, u32 or i32)", err);
    }
}

int gguf_get_bool(const gguf_file *f, const char *key, bool *out, ds4_err *err) {
    const gguf_kv *kv = find_or_err(f, key, err);
    if (!kv) return -1;
    if (kv->type != GGUF_BOOL) return wrong_type(kv, "bool", err);
    *out = kv->data[0] != 0;
    return 0;
}

int gguf_get_str(const gguf_file *f, const char *key, gguf_str *out, ds4_err *err) {
    const gguf_kv *kv = find_or_err(f, key, err);
    if (!kv) return -1;
    if (kv->type != GGUF_STRING) return wrong_type(kv, "string", err);
    out->len = rd64(kv->data);
    out->ptr = (const char *)kv->data + 8;
    return 0;
}

/* ================================================================ arrays */

int gguf_arr_get_int(const gguf_kv *kv, uint64_t i, int64_t *out) {
    if (!kv || kv->type != GGUF_ARRAY || i >= kv->arr_n) return -1;
    uint64_t sz = vtype_scalar_size(kv->arr_type);
    bool sg = false;
    uint64_t u = 0;
    int64_t s = 0;
    if (!sz || !scalar_int(kv->arr_type, kv->data + i * sz, &sg, &u, &s)) return -1;
    if (!sg) {
        if (u > (uint64_t)INT64_MAX) return -1;
        s = (int64_t)u;
    }
    *out = s;
    return 0;
}

int gguf_arr_get_float(const gguf_kv *kv, uint64_t i, double *out) {
    if (!kv || kv->type != GGUF_ARRAY || i >= kv->arr_n) return -1;
    uint64_t sz = vtype_scalar_size(kv->arr_type);
    if (!sz) return -1;
    const uint8_t *p = kv->data + i * sz;
    if (kv->arr_type == GGUF_F32) {
        *out = bits_f32(rd32(p));
        return 0;
    }
    if (kv->arr_type == GGUF_F64) {
        *out = bits_f64(rd64(p));
        return 0;
    }
    bool sg = false;
    uint64_t u = 0;
    int64_t s = 0;
    if (!scalar_int(kv->arr_type, p, &sg, &u, &s)) return -1;
    *out = sg ? (double)s : (double)u;
    return 0;
}

int gguf_arr_strings(const gguf_kv *kv, gguf_str **out, ds4_err *err) {
    if (!kv || kv->type != GGUF_ARRAY || kv->arr_type != GGUF_STRING) {
        if (!kv) return ds4_errf(err, "gguf_arr_strings: no key");
        return wrong_type(kv, "array of string", err);
    }
    /* arr_n <= data_bytes / 8 was established at open time. */
    gguf_str *v = malloc((kv->arr_n ? kv->arr_n : 1) * sizeof(*v));
    if (!v) return ds4_errf(err, "key '%s': out of memory for %" PRIu64 " strings", kv->key, kv->arr_n);
    const uint8_t *p = kv->data;
    for (uint64_t i = 0; i < kv->arr_n; i++) {
        v[i].len = rd64(p);
        v[i].ptr = (const char *)p + 8;
        p += 8 + v[i].len;
    }
    *out = v;
    return 0;
}
