/* ds4 — disk KV cache: store (§7.8: atomic write, same-name refresh) and
 * the tool-map scan before rendering (§6.11, §7.5). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server/kvdisk_internal.h"

/* ------------------------------------------------------------------ store */

/* Write a new file atomically: temporary name, fsync, size check, rename,
 * fsync of the directory. */
static int write_new(ds4_kvdisk *c, ds4_session *s, const char *name, const ds4_kvdisk_store_req *req,
                     const kvd_header *h, const uint8_t *tm, size_t tm_len, uint64_t expect, ds4_err *err) {
    char final[KVD_PATH_MAX], tmp[KVD_PATH_MAX + 32];
    kvd_path(c, name, final);
    snprintf(tmp, sizeof(tmp), "%s" KVD_TMP_TAG "%ld", final, (long)getpid());
    uint8_t *payload = NULL;
    size_t plen = 0;
    if (ds4_session_snapshot(s, &payload, &plen, err) != 0) return ds4_err_prefix(err, "storing %s", name);
    if (plen != h->payload_bytes) {
        free(payload);
        return ds4_errf(err, "storing %s: snapshot is %zu bytes, expected %llu", name, plen,
                        (unsigned long long)h->payload_bytes);
    }
    uint8_t pre[DS4_KVDISK_PREFIX_BYTES], ckb[DS4_KVDISK_CHECKSUM_BYTES];
    kvd_header_encode(h, pre);
    kvd_put_u32(pre + DS4_KVDISK_HEADER_BYTES, (uint32_t)req->text_len);
    kvd_checksum ck;
    ck.body = ds4_kvdisk_crc64(kvd_body_crc_header(pre), pre + DS4_KVDISK_HEADER_BYTES, 4);
    ck.body = ds4_kvdisk_crc64(ck.body, req->text, req->text_len);
    ck.body = ds4_kvdisk_crc64(ck.body, payload, plen);
    ck.trailer = ds4_kvdisk_crc64(ds4_kvdisk_crc64(0, pre + KVD_OFF_EXT, 1), tm, tm_len);
    ck.meta = kvd_meta_crc(pre);
    kvd_checksum_encode(&ck, ckb);

    const char *step = "creating";
    const int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!f) {
        if (fd >= 0) close(fd);
        goto fail;
    }
    step = "writing";
    if (fwrite(pre, 1, sizeof(pre), f) != sizeof(pre) || fwrite(req->text, 1, req->text_len, f) != req->text_len ||
        fwrite(payload, 1, plen, f) != plen || (tm_len && fwrite(tm, 1, tm_len, f) != tm_len) ||
        fwrite(ckb, 1, sizeof(ckb), f) != sizeof(ckb) || fflush(f) != 0)
        goto fail;
    step = "syncing";
    if (fsync(fileno(f)) != 0) goto fail;
    struct stat st;
    step = "checking the size of";
    if (fstat(fileno(f), &st) != 0) goto fail;
    if ((uint64_t)st.st_size != expect) {
        errno = EIO;
        goto fail;
    }
    step = "closing";
    {
        const int rc = fclose(f);
        f = NULL;
        if (rc != 0) goto fail;
    }
    step = "renaming";
    if (rename(tmp, final) != 0) goto fail;
    free(payload);
    if (kvd_fsync_dir(c->dir) != 0) kvd_log(c, "could not sync the directory after storing %s: %s", name, strerror(errno));
    return 0;
fail:;
    const int e = errno;
    if (f) fclose(f);
    unlink(tmp);
    free(payload);
    return ds4_errf(err, "%s checkpoint %s: %s", step, tmp, strerror(e));
}

/* Same text already on disk and usable: keep its payload, hits and creation
 * time and rewrite only what follows the payload (§7.5). In place by spec; a
 * crash half-way leaves CRCs that disagree, so the file is then deleted on
 * its next use rather than trusted. */
static int refresh_tool_map(ds4_kvdisk *c, const ds4_kvdisk_entry *e, const uint8_t *tm, size_t tm_len,
                            uint64_t *new_size, ds4_err *err) {
    char path[KVD_PATH_MAX];
    kvd_path(c, e->name, path);
    const uint64_t body_end = DS4_KVDISK_PREFIX_BYTES + (uint64_t)e->text_bytes + e->payload_bytes;
    const uint64_t old_sec = e->file_bytes - body_end - DS4_KVDISK_CHECKSUM_BYTES;
    const uint8_t ext = (uint8_t)((e->ext & ~DS4_KVDISK_EXT_TOOL_MAP) | (tm_len ? DS4_KVDISK_EXT_TOOL_MAP : 0));
    *new_size = body_end + tm_len + DS4_KVDISK_CHECKSUM_BYTES;
    const int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) return ds4_errf(err, "refreshing %s: %s", e->name, strerror(errno));
    uint8_t hdr[DS4_KVDISK_HEADER_BYTES], ckb[DS4_KVDISK_CHECKSUM_BYTES];
    uint8_t *old = NULL;
    kvd_checksum ck;
    const char *step = "reading";
    if (pread(fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr) ||
        pread(fd, ckb, sizeof(ckb), (off_t)(body_end + old_sec)) != (ssize_t)sizeof(ckb) ||
        kvd_checksum_decode(ckb, &ck) != 0)
        goto fail;
    /* Nothing to do when the map is already exactly this one. */
    if (ext == e->ext && old_sec == tm_len) {
        old = malloc(tm_len ? tm_len : 1);
        if (!old) {
            close(fd);
            return ds4_errf(err, "out of memory refreshing %s", e->name);
        }
        if (pread(fd, old, tm_len, (off_t)body_end) != (ssize_t)tm_len) goto fail;
        if (tm_len == 0 || memcmp(old, tm, tm_len) == 0) {
            free(old);
            close(fd);
            return 0;
        }
        free(old);
        old = NULL;
    }
    ck.trailer = ds4_kvdisk_crc64(ds4_kvdisk_crc64(0, &ext, 1), tm, tm_len);
    kvd_checksum_encode(&ck, ckb);
    step = "rewriting";
    if (ftruncate(fd, (off_t)body_end) != 0 ||
        (tm_len && pwrite(fd, tm, tm_len, (off_t)body_end) != (ssize_t)tm_len) ||
        pwrite(fd, ckb, sizeof(ckb), (off_t)(body_end + tm_len)) != (ssize_t)sizeof(ckb) ||
        pwrite(fd, &ext, 1, KVD_OFF_EXT) != 1 || fsync(fd) != 0)
        goto fail;
    close(fd);
    return 0;
fail:;
    const int en = errno;
    free(old);
    close(fd);
    return ds4_errf(err, "%s the tool map of %s: %s", step, e->name, strerror(en));
}

/* Whether the file holds exactly this text (the name only says SHA-1). */
static bool same_text(FILE *f, const ds4_kvdisk_entry *e, const char *text, size_t len) {
    if (e->text_bytes != len) return false;
    char buf[65536];
    size_t off = 0;
    if (fseeko(f, DS4_KVDISK_PREFIX_BYTES, SEEK_SET) != 0) return false;
    while (off < len) {
        const size_t step = len - off < sizeof(buf) ? len - off : sizeof(buf);
        if (kvd_read_exact(f, buf, step) != 0 || memcmp(buf, text + off, step) != 0) return false;
        off += step;
    }
    return true;
}

static int store_locked(ds4_kvdisk *c, ds4_session *s, const ds4_kvdisk_store_req *req,
                        ds4_kvdisk_store_result *res, ds4_err *err) {
    memset(res, 0, sizeof(*res));
    if (!req->text || req->text_len == 0) return ds4_errf(err, "KV cache store: empty cache text");
    if (req->text_len > UINT32_MAX) return ds4_errf(err, "KV cache store: cache text of %zu bytes is too long", req->text_len);
    if ((int)req->reason < 0 || (int)req->reason > KVD_MAX_REASON)
        return ds4_errf(err, "KV cache store: unknown reason %d", (int)req->reason);
    char sha[41];
    ds4_kvdisk_sha1_hex(req->text, req->text_len, sha);
    snprintf(res->name, sizeof(res->name), "%s.kv", sha);
    const int n = ds4_session_n_tokens(s);
    if (n < 1 || n < c->o.min_tokens) {
        res->outcome = DS4_KVDISK_SKIPPED_SHORT;
        kvd_why(res->why, sizeof(res->why), "%d tokens, fewer than min_tokens %d", n, c->o.min_tokens);
        kvd_log(c, "skipped %s store: %s", ds4_kvdisk_reason_name(req->reason), res->why);
        return 0;
    }

    /* The tool map holds only entries whose block is in this text; the rest
     * belong to other conversations and would only cost bytes. */
    size_t n_keep = 0;
    ds4_kvdisk_tool *keep = NULL;
    uint8_t *tm = NULL;
    size_t tm_len = 0;
    const size_t max_entries = 4 * (size_t)c->o.tool_max_ids;
    if (req->n_tools > 0) {
        keep = malloc(req->n_tools * sizeof(*keep));
        if (!keep) return ds4_errf(err, "out of memory building a tool map");
        for (size_t i = 0; i < req->n_tools && n_keep < max_entries; i++) {
            const ds4_kvdisk_tool *t = &req->tools[i];
            if (t->id_len < 1 || t->id_len > DS4_KVDISK_TOOL_ID_MAX || t->dsml_len < 1 ||
                t->dsml_len > DS4_KVDISK_TOOL_DSML_MAX)
                continue;
            /* Entries of one turn share one block: test it once. */
            bool in = n_keep > 0 && keep[n_keep - 1].dsml == t->dsml && keep[n_keep - 1].dsml_len == t->dsml_len;
            if (!in) in = ds4_kvdisk_tool_in_text(req->text, req->text_len, t->dsml, t->dsml_len);
            if (in) keep[n_keep++] = *t;
        }
        if (n_keep > 0 && ds4_kvdisk_toolmap_encode(keep, n_keep, &tm, &tm_len, err) != 0) {
            free(keep);
            return -1;
        }
        free(keep);
    }
    res->tools_written = n_keep;

    const uint64_t payload = ds4_session_payload_size(s);
    const uint64_t bytes = ds4_kvdisk_file_bytes(req->text_len, payload, tm_len);
    res->file_bytes = bytes;
    if (!ds4_kvdisk_fits_budget(bytes, c->o.budget_bytes)) {
        res->outcome = DS4_KVDISK_SKIPPED_BUDGET;
        kvd_why(res->why, sizeof(res->why), "%llu bytes plus 1%% slack exceed the %llu-byte budget",
                (unsigned long long)bytes, (unsigned long long)c->o.budget_bytes);
        kvd_log(c, "skipped %s store of %d tokens: %s", ds4_kvdisk_reason_name(req->reason), n, res->why);
        free(tm);
        return 0;
    }

    /* A file of this name already? Keep it if it is usable as it is. */
    ds4_kvdisk_entry old;
    uint8_t hdr[DS4_KVDISK_PREFIX_BYTES];
    char why[256];
    FILE *f;
    const kvd_scan_rc sr = kvd_scan_open(c, res->name, &f, &old, hdr, why, sizeof(why));
    if (sr == KVD_SCAN_OK) {
        const bool usable = kvd_session_accepts(c, s, &old, why, sizeof(why)) && same_text(f, &old, req->text, req->text_len);
        fclose(f);
        if (usable) {
            uint64_t new_size;
            const int rc = refresh_tool_map(c, &old, tm, tm_len, &new_size, err);
            free(tm);
            if (rc != 0) return -1;
            res->outcome = DS4_KVDISK_REFRESHED;
            res->file_bytes = new_size;
            kvd_log(c, "kept %s (%u tokens) and refreshed its tool map (%zu ids)", res->name, old.tokens, n_keep);
            goto evict;
        }
        res->replaced = true;
        kvd_log(c, "replacing %s: %s", res->name, why);
    } else if (sr == KVD_SCAN_BAD) {
        res->replaced = true;
        kvd_log(c, "replacing damaged checkpoint %s: %s", res->name, why);
    }

    const uint64_t now = kvd_now(c);
    kvd_header h = {
        .quant_bits = (uint8_t)c->o.quant_bits,
        .reason = (uint8_t)req->reason,
        .ext = (uint8_t)(DS4_KVDISK_EXT_CHECKSUM | (tm_len ? DS4_KVDISK_EXT_TOOL_MAP : 0) |
                         (req->key == DS4_KVDISK_KEY_RESPONSES_VISIBLE ? DS4_KVDISK_EXT_RESPONSES_VISIBLE : 0) |
                         (req->key == DS4_KVDISK_KEY_THINKING_VISIBLE ? DS4_KVDISK_EXT_THINKING_VISIBLE : 0)),
        .tokens = (uint32_t)n,
        .hits = 0,
        .ctx = (uint32_t)ds4_session_ctx(s),
        .created = now,
        .last_used = now,
        .payload_bytes = payload,
    };
    const int rc = write_new(c, s, res->name, req, &h, tm, tm_len, bytes, err);
    free(tm);
    if (rc != 0) return -1;
    res->outcome = DS4_KVDISK_STORED;
    kvd_log(c, "stored %s (%s, %d tokens, %llu bytes, %zu tool ids)", res->name, ds4_kvdisk_reason_name(req->reason),
            n, (unsigned long long)bytes, n_keep);
evict:;
    ds4_kvdisk_evict_result er;
    ds4_err eerr = {{0}};
    if (kvd_evict_locked(c, res->name, &er, &eerr) != 0)
        kvd_log(c, "eviction after storing %s failed: %s", res->name, eerr.msg);
    res->evicted = er.removed;
    res->evicted_bytes = er.removed_bytes;
    return 0;
}

int ds4_kvdisk_store(ds4_kvdisk *c, ds4_session *s, const ds4_kvdisk_store_req *req, ds4_kvdisk_store_result *res,
                     ds4_err *err) {
    pthread_mutex_lock(&c->mu);
    const int rc = store_locked(c, s, req, res, err);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/* ------------------------------------------------------------------ tool maps before rendering */

typedef struct wanted_id {
    const char *ptr;
    size_t len;
    bool found;
} wanted_id;

static int wanted_cmp(const void *a, const void *b) {
    const wanted_id *x = a, *y = b;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    return memcmp(x->ptr, y->ptr, x->len);
}

static int by_recent_use(const void *a, const void *b) {
    const ds4_kvdisk_entry *x = a, *y = b;
    if (x->last_used != y->last_used) return x->last_used > y->last_used ? -1 : 1;
    if (x->created != y->created) return x->created > y->created ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Read and verify (trailer CRC) the tool map of one file. */
static int read_tool_map(ds4_kvdisk *c, const char *name, ds4_kvdisk_tools *out, ds4_err *err) {
    out->v = NULL;
    out->n = 0;
    ds4_kvdisk_entry e;
    uint8_t hdr[DS4_KVDISK_PREFIX_BYTES];
    char why[256];
    FILE *f;
    const kvd_scan_rc sr = kvd_scan_open(c, name, &f, &e, hdr, why, sizeof(why));
    if (sr == KVD_SCAN_BAD) kvd_delete_corrupt(c, name, why);
    if (sr != KVD_SCAN_OK) return 0;
    if (!(e.ext & DS4_KVDISK_EXT_TOOL_MAP)) {
        fclose(f);
        return 0;
    }
    const uint64_t body_end = DS4_KVDISK_PREFIX_BYTES + (uint64_t)e.text_bytes + e.payload_bytes;
    const uint64_t region = e.file_bytes - body_end; /* map + integrity section */
    if (region > SIZE_MAX) {
        fclose(f);
        return ds4_errf(err, "tool map of %s is too large", name);
    }
    uint8_t *b = malloc((size_t)region);
    if (!b) {
        fclose(f);
        return ds4_errf(err, "out of memory reading the tool map of %s", name);
    }
    const size_t map_len = (size_t)region - DS4_KVDISK_CHECKSUM_BYTES;
    kvd_checksum ck;
    int rc = 0;
    if (kvd_read_at(f, body_end, b, (size_t)region) != 0 || kvd_checksum_decode(b + map_len, &ck) != 0) {
        kvd_delete_corrupt(c, name, "truncated while reading the tool map");
    } else if (ds4_kvdisk_crc64(ds4_kvdisk_crc64(0, hdr + KVD_OFF_EXT, 1), b, map_len) != ck.trailer) {
        kvd_delete_corrupt(c, name, "trailer CRC mismatch (extension flags or tool map damaged)");
    } else {
        rc = ds4_kvdisk_toolmap_decode(b, map_len, c->o.tool_max_ids, out, err);
    }
    free(b);
    fclose(f);
    return rc;
}

static int tools_for_ids_locked(ds4_kvdisk *c, const ds4_str *ids, size_t n_ids, ds4_kvdisk_tools *out,
                                ds4_err *err) {
    out->v = NULL;
    out->n = 0;
    if (n_ids == 0) return 0;
    wanted_id *want = malloc(n_ids * sizeof(*want));
    if (!want) return ds4_errf(err, "out of memory");
    size_t nw = 0;
    for (size_t i = 0; i < n_ids; i++)
        if (ids[i].ptr && ids[i].len > 0) want[nw++] = (wanted_id){ids[i].ptr, ids[i].len, false};
    qsort(want, nw, sizeof(*want), wanted_cmp);
    ds4_kvdisk_entry *v;
    size_t n;
    if (kvd_list_locked(c, &v, &n, NULL, err) != 0) {
        free(want);
        return -1;
    }
    if (n > 1) qsort(v, n, sizeof(*v), by_recent_use);
    size_t cap = 0, left = nw;
    int rc = 0;
    for (size_t i = 0; i < n && left > 0 && rc == 0; i++) {
        if (!(v[i].ext & DS4_KVDISK_EXT_TOOL_MAP)) continue;
        ds4_kvdisk_tools map;
        if ((rc = read_tool_map(c, v[i].name, &map, err)) != 0) break;
        for (size_t k = 0; k < map.n; k++) {
            const wanted_id key = {map.v[k].id, map.v[k].id_len, false};
            wanted_id *w = bsearch(&key, want, nw, sizeof(*want), wanted_cmp);
            if (!w || w->found) continue;
            if (out->n == cap) {
                cap = cap ? 2 * cap : 8;
                ds4_kvdisk_tool *nv = realloc(out->v, cap * sizeof(*nv));
                if (!nv) {
                    rc = ds4_errf(err, "out of memory");
                    break;
                }
                out->v = nv;
            }
            w->found = true;
            left--;
            out->v[out->n++] = map.v[k];
            map.v[k].id = NULL; /* moved: free(NULL) below is a no-op */
        }
        ds4_kvdisk_tools_free(&map);
    }
    if (rc != 0) ds4_kvdisk_tools_free(out);
    free(v);
    free(want);
    return rc;
}

int ds4_kvdisk_tools_for_ids(ds4_kvdisk *c, const ds4_str *ids, size_t n_ids, ds4_kvdisk_tools *out, ds4_err *err) {
    pthread_mutex_lock(&c->mu);
    const int rc = tools_for_ids_locked(c, ids, n_ids, out, err);
    pthread_mutex_unlock(&c->mu);
    return rc;
}
