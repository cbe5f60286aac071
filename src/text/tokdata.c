/* ds4 — reader for the compact tokenizer data file (.tok). See tokdata.h. */
#include "text/tokdata.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ================================================================ parsing */

typedef struct cursor {
    const unsigned char *p;
    size_t len;
    size_t off;
} cursor;

static int rd_u32(cursor *c, uint32_t *v, const char *what, ds4_err *err) {
    if (c->len - c->off < 4)
        return ds4_errf(err, "truncated: %s at byte offset %zu needs 4 bytes, the data has %zu", what, c->off,
                        c->len - c->off);
    const unsigned char *b = c->p + c->off;
    *v = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    c->off += 4;
    return 0;
}

/* Read a count followed by that many (len, bytes) strings. The count is
 * checked against the remaining bytes (every entry needs at least its 4-byte
 * length) before anything is allocated. */
static int rd_strings(cursor *c, const char *what, ds4_str **out, size_t *n_out, ds4_err *err) {
    uint32_t n = 0;
    if (rd_u32(c, &n, what[0] == 't' ? "the token count" : "the merge count", err)) return -1;
    if (n > INT32_MAX || (size_t)n > (c->len - c->off) / 4)
        return ds4_errf(err, "%s count %u at byte offset %zu is impossible: only %zu bytes follow", what, n,
                        c->off - 4, c->len - c->off);
    ds4_str *v = calloc(n ? n : 1, sizeof(*v));
    if (!v) return ds4_errf(err, "out of memory for %u %ss", n, what);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t len = 0;
        if (c->len - c->off < 4) {
            ds4_errf(err, "truncated: the length of %s %u at byte offset %zu needs 4 bytes, the data has %zu", what,
                     i, c->off, c->len - c->off);
            goto fail;
        }
        rd_u32(c, &len, what, err);
        if (len > c->len - c->off) {
            ds4_errf(err, "truncated: %s %u at byte offset %zu has length %u but only %zu bytes follow", what, i,
                     c->off - 4, len, c->len - c->off);
            goto fail;
        }
        v[i].ptr = (const char *)c->p + c->off;
        v[i].len = len;
        c->off += len;
    }
    *out = v;
    *n_out = n;
    return 0;
fail:
    free(v);
    return -1;
}

/* Parse td->blob in place (the strings point into it). */
static int parse_blob(ds4_tokdata *td, ds4_err *err) {
    cursor c = {td->blob, td->blob_len, 0};
    if (c.len < 8 || memcmp(c.p, DS4_TOKDATA_MAGIC, 8) != 0)
        return ds4_errf(err, "not a ds4 tokenizer file: it does not start with the magic \"DS4TOK1\\0\"");
    c.off = 8;
    if (rd_strings(&c, "token", &td->tokens, &td->n_tokens, err)) return -1;
    if (rd_strings(&c, "merge", &td->merges, &td->n_merges, err)) return -1;
    if (c.off != c.len)
        return ds4_errf(err, "%zu unexpected bytes after the last merge (byte offset %zu)", c.len - c.off, c.off);
    return 0;
}

/* ================================================================ public API */

void ds4_tokdata_free(ds4_tokdata *td) {
    if (!td) return;
    free(td->tokens);
    free(td->merges);
    free(td->blob);
    memset(td, 0, sizeof(*td));
}

int ds4_tokdata_parse(const void *data, size_t len, ds4_tokdata *out, ds4_err *err) {
    memset(out, 0, sizeof(*out));
    out->blob = malloc(len ? len : 1);
    if (!out->blob) return ds4_errf(err, "out of memory for %zu bytes of tokenizer data", len);
    if (len) memcpy(out->blob, data, len);
    out->blob_len = len;
    if (parse_blob(out, err)) {
        ds4_tokdata_free(out);
        return -1;
    }
    return 0;
}

int ds4_tokdata_load(const char *path, ds4_tokdata *out, ds4_err *err) {
    memset(out, 0, sizeof(*out));
    FILE *f = fopen(path, "rb");
    if (!f) return ds4_errf(err, "cannot open tokenizer file %s: %s", path, strerror(errno));
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    if (n < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return ds4_errf(err, "cannot determine the size of tokenizer file %s", path);
    }
    out->blob = malloc(n ? (size_t)n : 1);
    if (!out->blob) {
        fclose(f);
        return ds4_errf(err, "out of memory reading tokenizer file %s (%ld bytes)", path, n);
    }
    out->blob_len = (size_t)n;
    size_t got = fread(out->blob, 1, out->blob_len, f);
    int read_err = ferror(f);
    fclose(f);
    if (got != out->blob_len || read_err) {
        ds4_tokdata_free(out);
        return ds4_errf(err, "cannot read tokenizer file %s", path);
    }
    if (parse_blob(out, err)) {
        ds4_tokdata_free(out);
        return ds4_err_prefix(err, "tokenizer file %s", path);
    }
    return 0;
}

ds4_tokenizer *ds4_tokenizer_load_tok(const char *path, ds4_err *err) {
    ds4_tokdata td;
    if (ds4_tokdata_load(path, &td, err)) return NULL;
    ds4_tokenizer *tok = ds4_tokenizer_create(td.tokens, td.n_tokens, td.merges, td.n_merges, err);
    if (!tok) ds4_err_prefix(err, "tokenizer file %s", path);
    ds4_tokdata_free(&td);
    return tok;
}
