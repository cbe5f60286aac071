/* Hand-built GGUF bytes for the gguf tests: a growable byte buffer with
 * little-endian appenders, so tests can produce any (valid or broken) file
 * independently of the writer under test. Include after test_util.h. */
#ifndef DS4_TEST_GGUF_BUILDER_H
#define DS4_TEST_GGUF_BUILDER_H

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf/gguf.h"

typedef struct gb {
    uint8_t *p;
    size_t n, cap;
} gb;

static inline void gb_bytes(gb *b, const void *src, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        b->p = realloc(b->p, cap);
        if (!b->p) abort();
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, src, n);
    b->n += n;
}
static inline void gb_u8(gb *b, uint8_t v) { gb_bytes(b, &v, 1); }
static inline void gb_u16(gb *b, uint16_t v) {
    gb_u8(b, (uint8_t)v);
    gb_u8(b, (uint8_t)(v >> 8));
}
static inline void gb_u32(gb *b, uint32_t v) {
    gb_u16(b, (uint16_t)v);
    gb_u16(b, (uint16_t)(v >> 16));
}
static inline void gb_u64(gb *b, uint64_t v) {
    gb_u32(b, (uint32_t)v);
    gb_u32(b, (uint32_t)(v >> 32));
}
static inline void gb_f32(gb *b, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    gb_u32(b, u);
}
static inline void gb_f64(gb *b, double d) {
    uint64_t u;
    memcpy(&u, &d, 8);
    gb_u64(b, u);
}
static inline void gb_strn(gb *b, const char *s, size_t n) {
    gb_u64(b, n);
    gb_bytes(b, s, n);
}
static inline void gb_str(gb *b, const char *s) { gb_strn(b, s, strlen(s)); }
static inline void gb_zeros(gb *b, size_t n) {
    for (size_t i = 0; i < n; i++) gb_u8(b, 0);
}
static inline void gb_pad(gb *b, size_t align) {
    while (b->n % align) gb_u8(b, 0);
}
static inline void gb_header(gb *b, uint64_t n_tensors, uint64_t n_kv) {
    gb_u32(b, GGUF_MAGIC);
    gb_u32(b, GGUF_VERSION);
    gb_u64(b, n_tensors);
    gb_u64(b, n_kv);
}
/* Key + value type; the caller appends the value. */
static inline void gb_key(gb *b, const char *key, uint32_t vtype) {
    gb_str(b, key);
    gb_u32(b, vtype);
}
static inline void gb_kv_u32(gb *b, const char *key, uint32_t v) {
    gb_key(b, key, GGUF_U32);
    gb_u32(b, v);
}
static inline void gb_tensor(gb *b, const char *name, uint32_t n_dims, const uint64_t *dims, uint32_t type,
                             uint64_t offset) {
    gb_str(b, name);
    gb_u32(b, n_dims);
    for (uint32_t i = 0; i < n_dims; i++) gb_u64(b, dims[i]);
    gb_u32(b, type);
    gb_u64(b, offset);
}
static inline void gb_free(gb *b) {
    free(b->p);
    *b = (gb){0};
}

/* Write bytes to <tmp>/<name> and return the path (static rotating buffer). */
static inline const char *write_tmp(const char *name, const void *data, size_t n) {
    static char path[4][4096];
    static int k;
    k = (k + 1) & 3;
    int len = snprintf(path[k], sizeof(path[k]), "%s/%s", test_tmp_dir(), name);
    if (len < 0 || (size_t)len >= sizeof(path[k])) abort();
    int fd = open(path[k], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) abort();
    const uint8_t *p = data;
    size_t left = n;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w <= 0) abort();
        p += w;
        left -= (size_t)w;
    }
    close(fd);
    return path[k];
}

static inline const char *gb_save(const gb *b, const char *name) { return write_tmp(name, b->p, b->n); }

#endif
