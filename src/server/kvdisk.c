/* ds4 — disk KV cache: the directory, listing, eviction, lookup and load
 * (INTERFACES.md §7; file format and integrity rules in kvdisk.h; store and
 * the tool-map scan are in kvdisk_store.c). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sha1.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "server/kvdisk_internal.h"

/* ------------------------------------------------------------------ small helpers */

uint64_t kvd_now(const ds4_kvdisk *c) { return c->o.clock ? c->o.clock(c->o.clock_ud) : (uint64_t)time(NULL); }

void kvd_log(const ds4_kvdisk *c, const char *fmt, ...) {
    if (!c->o.log) return;
    char line[1024];
    int k = snprintf(line, sizeof(line), "kv disk: ");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + k, sizeof(line) - (size_t)k, fmt, ap);
    va_end(ap);
    c->o.log(c->o.log_ud, line);
}

void kvd_path(const ds4_kvdisk *c, const char *name, char out[KVD_PATH_MAX]) {
    snprintf(out, KVD_PATH_MAX, "%s/%s", c->dir, name);
}

void kvd_why(char *why, size_t len, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, len, fmt, ap);
    va_end(ap);
}

int kvd_read_exact(FILE *f, void *buf, size_t n) {
    /* fread of very large sizes is fine in glibc, but a loop keeps each call
     * bounded and makes a short read unambiguous. */
    uint8_t *p = buf;
    while (n > 0) {
        const size_t step = n < ((size_t)64 << 20) ? n : ((size_t)64 << 20);
        const size_t got = fread(p, 1, step, f);
        if (got != step) return -1;
        p += got;
        n -= got;
    }
    return 0;
}

int kvd_read_at(FILE *f, uint64_t off, void *buf, size_t n) {
    if (off > (uint64_t)INT64_MAX || fseeko(f, (off_t)off, SEEK_SET) != 0) return -1;
    return kvd_read_exact(f, buf, n);
}

/* Delete a file that failed validation: it can never become valid, and
 * leaving it would only make every later lookup trip over it again. */
void kvd_delete_corrupt(const ds4_kvdisk *c, const char *name, const char *why) {
    char path[KVD_PATH_MAX];
    kvd_path(c, name, path);
    if (unlink(path) == 0 || errno == ENOENT)
        kvd_log(c, "deleted corrupt checkpoint %s: %s", name, why);
    else
        kvd_log(c, "checkpoint %s is corrupt (%s) and could not be deleted: %s", name, why, strerror(errno));
}

int kvd_fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    const int rc = fsync(fd);
    close(fd);
    return rc;
}

/* ------------------------------------------------------------------ directory */

static int mkdir_p(const char *dir, ds4_err *err) {
    char buf[KVD_PATH_MAX];
    snprintf(buf, sizeof(buf), "%s", dir);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0700) != 0 && errno != EEXIST)
            return ds4_errf(err, "cannot create the KV cache directory %s: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0700) != 0 && errno != EEXIST)
        return ds4_errf(err, "cannot create the KV cache directory %s: %s", buf, strerror(errno));
    struct stat st;
    if (stat(buf, &st) != 0) return ds4_errf(err, "KV cache directory %s: %s", buf, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return ds4_errf(err, "KV cache path %s exists and is not a directory", buf);
    if (access(buf, R_OK | W_OK | X_OK) != 0)
        return ds4_errf(err, "KV cache directory %s is not readable and writable: %s", buf, strerror(errno));
    return 0;
}

/* Remove `<sha1>.kv.tmp.<pid>` files whose writer is gone (a crash mid-write,
 * or this pid reused): they are never valid checkpoints. */
static void remove_stale_tmp(const ds4_kvdisk *c) {
    DIR *d = opendir(c->dir);
    if (!d) return;
    struct dirent *de;
    char name43[DS4_KVDISK_NAME_LEN + 1];
    while ((de = readdir(d)) != NULL) {
        const char *n = de->d_name;
        if (strlen(n) <= DS4_KVDISK_NAME_LEN + strlen(KVD_TMP_TAG)) continue;
        memcpy(name43, n, DS4_KVDISK_NAME_LEN);
        name43[DS4_KVDISK_NAME_LEN] = 0;
        if (!ds4_kvdisk_valid_name(name43, NULL)) continue;
        const char *tag = n + DS4_KVDISK_NAME_LEN;
        if (strncmp(tag, KVD_TMP_TAG, strlen(KVD_TMP_TAG)) != 0) continue;
        const char *digits = tag + strlen(KVD_TMP_TAG);
        char *end;
        errno = 0;
        const long pid = strtol(digits, &end, 10);
        if (errno || *end || end == digits || pid <= 0) continue;
        const bool dead = pid == (long)getpid() || (kill((pid_t)pid, 0) != 0 && errno == ESRCH);
        if (!dead) continue;
        char path[KVD_PATH_MAX];
        kvd_path(c, n, path);
        if (unlink(path) == 0) kvd_log(c, "removed stale temporary file %s", n);
    }
    closedir(d);
}

/* ------------------------------------------------------------------ reading one file's header */

/* Open and check a file's header, size, payload header and integrity-section
 * magic (no CRCs: those need the whole file). On KVD_SCAN_OK *fp is the open
 * file (positioned anywhere) and hdr holds the first 52 bytes. */
kvd_scan_rc kvd_scan_open(const ds4_kvdisk *c, const char *name, FILE **fp, ds4_kvdisk_entry *e,
                         uint8_t hdr[DS4_KVDISK_PREFIX_BYTES], char *why, size_t wl) {
    char path[KVD_PATH_MAX], sha[41];
    *fp = NULL;
    if (!ds4_kvdisk_valid_name(name, sha)) {
        kvd_why(why, wl, "not a checkpoint file name");
        return KVD_SCAN_SKIP;
    }
    kvd_path(c, name, path);
    FILE *f = fopen(path, "rb");
    if (!f) {
        kvd_why(why, wl, "%s", strerror(errno));
        return KVD_SCAN_SKIP;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        kvd_why(why, wl, "not a regular file");
        fclose(f);
        return KVD_SCAN_SKIP;
    }
    const uint64_t size = (uint64_t)st.st_size;
    kvd_header h;
    uint8_t ph[KVD_PAYLOAD_HEADER_BYTES], ckb[DS4_KVDISK_CHECKSUM_BYTES];
    kvd_payload_info pi;
    kvd_checksum ck;
    if (size < DS4_KVDISK_PREFIX_BYTES || kvd_read_at(f, 0, hdr, DS4_KVDISK_PREFIX_BYTES) != 0) {
        kvd_why(why, wl, "truncated: %llu bytes, less than the %d-byte header", (unsigned long long)size,
                DS4_KVDISK_PREFIX_BYTES);
        goto bad;
    }
    if (kvd_header_decode(hdr, &h, why, wl) != 0) goto bad;
    const uint32_t tb = kvd_get_u32(hdr + DS4_KVDISK_HEADER_BYTES);
    if (tb == 0) {
        kvd_why(why, wl, "invalid header: empty cache text");
        goto bad;
    }
    /* Every part must be there, and nothing else: a truncated or extended
     * file is damaged whatever its CRCs would say. */
    const uint64_t need = ds4_kvdisk_file_bytes(tb, 0, 0);
    if (h.payload_bytes > size || need + h.payload_bytes > size) {
        kvd_why(why, wl, "truncated: %llu bytes, the header needs at least %llu", (unsigned long long)size,
                (unsigned long long)(h.payload_bytes > size ? h.payload_bytes : need + h.payload_bytes));
        goto bad;
    }
    const uint64_t body_end = DS4_KVDISK_PREFIX_BYTES + (uint64_t)tb + h.payload_bytes;
    const uint64_t sections = size - body_end - DS4_KVDISK_CHECKSUM_BYTES;
    if (!(h.ext & DS4_KVDISK_EXT_TOOL_MAP) && sections != 0) {
        kvd_why(why, wl, "size mismatch: %llu bytes, expected %llu", (unsigned long long)size,
                (unsigned long long)(size - sections));
        goto bad;
    }
    if ((h.ext & DS4_KVDISK_EXT_TOOL_MAP) && sections < KVD_TOOLMAP_HEADER_BYTES) {
        kvd_why(why, wl, "truncated: no room for the tool map the header announces");
        goto bad;
    }
    if (kvd_read_at(f, DS4_KVDISK_PREFIX_BYTES + (uint64_t)tb, ph, sizeof(ph)) != 0 ||
        kvd_payload_info_decode(ph, &pi, why, wl) != 0)
        goto bad;
    if (pi.tokens != h.tokens || pi.ctx != h.ctx) {
        kvd_why(why, wl, "payload header (%u tokens, ctx %u) disagrees with the file header (%u, %u)", pi.tokens,
                pi.ctx, h.tokens, h.ctx);
        goto bad;
    }
    if (kvd_read_at(f, size - DS4_KVDISK_CHECKSUM_BYTES, ckb, sizeof(ckb)) != 0 || kvd_checksum_decode(ckb, &ck) != 0) {
        kvd_why(why, wl, "integrity section missing or damaged");
        goto bad;
    }
    memset(e, 0, sizeof(*e));
    snprintf(e->name, sizeof(e->name), "%s", name);
    memcpy(e->sha1, sha, sizeof(e->sha1));
    e->quant_bits = h.quant_bits;
    e->reason = h.reason;
    e->ext = h.ext;
    e->tokens = h.tokens;
    e->hits = h.hits;
    e->ctx = h.ctx;
    e->text_bytes = tb;
    e->created = h.created;
    e->last_used = h.last_used;
    e->payload_bytes = h.payload_bytes;
    e->file_bytes = size;
    e->payload_chunk = pi.chunk;
    e->payload_raw_window = pi.raw_window;
    e->payload_comp_cap = pi.comp_cap;
    e->n_layer = pi.n_layer;
    e->head_dim = pi.head_dim;
    e->idx_dim = pi.idx_dim;
    e->n_vocab = pi.n_vocab;
    *fp = f;
    return KVD_SCAN_OK;
bad:
    fclose(f);
    return KVD_SCAN_BAD;
}

static int entry_name_cmp(const void *a, const void *b) {
    return strcmp(((const ds4_kvdisk_entry *)a)->name, ((const ds4_kvdisk_entry *)b)->name);
}

int kvd_list_locked(ds4_kvdisk *c, ds4_kvdisk_entry **out, size_t *n_out, uint64_t *total, ds4_err *err) {
    *out = NULL;
    *n_out = 0;
    if (total) *total = 0;
    DIR *d = opendir(c->dir);
    if (!d) return ds4_errf(err, "cannot read the KV cache directory %s: %s", c->dir, strerror(errno));
    ds4_kvdisk_entry *v = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!ds4_kvdisk_valid_name(de->d_name, NULL)) continue;
        char name[DS4_KVDISK_NAME_LEN + 1];
        memcpy(name, de->d_name, sizeof(name)); /* valid_name: exactly 43 bytes + NUL */
        ds4_kvdisk_entry e;
        uint8_t hdr[DS4_KVDISK_PREFIX_BYTES];
        char why[256];
        FILE *f;
        const kvd_scan_rc rc = kvd_scan_open(c, name, &f, &e, hdr, why, sizeof(why));
        if (rc == KVD_SCAN_BAD) kvd_delete_corrupt(c, name, why);
        if (rc != KVD_SCAN_OK) continue;
        fclose(f);
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            ds4_kvdisk_entry *nv = realloc(v, cap * sizeof(*v));
            if (!nv) {
                free(v);
                closedir(d);
                return ds4_errf(err, "out of memory listing the KV cache");
            }
            v = nv;
        }
        v[n++] = e;
        if (total) *total += e.file_bytes;
    }
    closedir(d);
    if (n > 1) qsort(v, n, sizeof(*v), entry_name_cmp);
    *out = v;
    *n_out = n;
    return 0;
}

/* ------------------------------------------------------------------ compatibility */

/* Whether this session could load the file's payload, checked from the
 * headers before reading a byte of the payload (ds4_state_load's rules). */
bool kvd_session_accepts(const ds4_kvdisk *c, const ds4_session *s, const ds4_kvdisk_entry *e, char *why,
                            size_t wl) {
    if (c->o.reject_different_quant && e->quant_bits != c->o.quant_bits) {
        kvd_why(why, wl, "incompatible checkpoint: written with %u-bit routed experts, this model has %d-bit",
                e->quant_bits, c->o.quant_bits);
        return false;
    }
    if (!s) return true;
    const ds4_state *st = s->state;
    if (e->n_layer != (uint32_t)st->n_layer || e->head_dim != (uint32_t)st->head_dim ||
        e->idx_dim != (uint32_t)st->idx_dim || e->n_vocab != (uint32_t)st->n_vocab) {
        kvd_why(why, wl,
                "incompatible checkpoint: model shape (layers %u, head %u, indexer %u, vocab %u) differs from "
                "this model's (%d, %d, %d, %d)",
                e->n_layer, e->head_dim, e->idx_dim, e->n_vocab, st->n_layer, st->head_dim, st->idx_dim, st->n_vocab);
        return false;
    }
    if (e->payload_chunk != (uint32_t)st->chunk) {
        kvd_why(why, wl, "incompatible checkpoint: prefill chunk %u differs from this session's %d", e->payload_chunk,
                st->chunk);
        return false;
    }
    if (e->ctx > (uint32_t)st->ctx) {
        kvd_why(why, wl, "incompatible checkpoint: written by a session of ctx %u, larger than this session's %d",
                e->ctx, st->ctx);
        return false;
    }
    if (e->tokens >= (uint32_t)st->ctx) {
        kvd_why(why, wl, "incompatible checkpoint: holds %u tokens, this session's ctx is %d", e->tokens, st->ctx);
        return false;
    }
    if (e->payload_raw_window != (uint32_t)st->raw_window) {
        kvd_why(why, wl, "incompatible checkpoint: raw window %u differs from this session's %d",
                e->payload_raw_window, st->raw_window);
        return false;
    }
    if (e->payload_comp_cap > (uint32_t)st->comp_cap_max) {
        kvd_why(why, wl, "incompatible checkpoint: compressed capacity %u exceeds this session's %d",
                e->payload_comp_cap, st->comp_cap_max);
        return false;
    }
    return true;
}

/* ------------------------------------------------------------------ open / close / list */

ds4_kvdisk *ds4_kvdisk_open(const char *dir, const ds4_kvdisk_opts *o, ds4_err *err) {
    if (!dir || !*dir) {
        ds4_errf(err, "KV cache directory: empty path");
        return NULL;
    }
    if (strlen(dir) > KVD_PATH_MAX - 128) {
        ds4_errf(err, "KV cache directory path is too long (%zu bytes)", strlen(dir));
        return NULL;
    }
    const char *bad = NULL;
    if (o->budget_bytes == 0)
        bad = "budget must be positive";
    else if (o->min_tokens < 0 || o->cold_max_tokens < 0 || o->boundary_trim_tokens < 0 ||
             o->boundary_align_tokens < 0 || o->tool_max_ids < 0)
        bad = "token counts must not be negative";
    else if (o->continued_interval_tokens < 1)
        bad = "continued interval must be at least 1 token";
    else if (o->quant_bits != 2 && o->quant_bits != 4)
        bad = "quant bits must be 2 or 4";
    if (bad) {
        ds4_errf(err, "KV cache options: %s", bad);
        return NULL;
    }
    if (mkdir_p(dir, err) != 0) return NULL;
    ds4_kvdisk *c = calloc(1, sizeof(*c));
    if (c) c->dir = strdup(dir);
    if (!c || !c->dir) {
        if (c) free(c);
        ds4_errf(err, "out of memory");
        return NULL;
    }
    /* "dir/" and "dir" name the same place; keep paths free of "//". */
    for (size_t k = strlen(c->dir); k > 1 && c->dir[k - 1] == '/'; k--) c->dir[k - 1] = 0;
    c->o = *o;
    pthread_mutex_init(&c->mu, NULL);
    remove_stale_tmp(c);
    ds4_kvdisk_evict_result er;
    if (ds4_kvdisk_evict(c, NULL, &er, err) != 0) {
        ds4_kvdisk_close(c);
        return NULL;
    }
    return c;
}

void ds4_kvdisk_close(ds4_kvdisk *c) {
    if (!c) return;
    pthread_mutex_destroy(&c->mu);
    free(c->dir);
    free(c);
}

const ds4_kvdisk_opts *ds4_kvdisk_options(const ds4_kvdisk *c) { return &c->o; }
const char *ds4_kvdisk_dir(const ds4_kvdisk *c) { return c->dir; }

ds4_kvdisk_key ds4_kvdisk_entry_key(const ds4_kvdisk_entry *e) {
    if (e->ext & DS4_KVDISK_EXT_RESPONSES_VISIBLE) return DS4_KVDISK_KEY_RESPONSES_VISIBLE;
    if (e->ext & DS4_KVDISK_EXT_THINKING_VISIBLE) return DS4_KVDISK_KEY_THINKING_VISIBLE;
    return DS4_KVDISK_KEY_TOKEN_TEXT;
}

int ds4_kvdisk_list(ds4_kvdisk *c, ds4_kvdisk_entry **out, size_t *n, uint64_t *total_bytes, ds4_err *err) {
    pthread_mutex_lock(&c->mu);
    const int rc = kvd_list_locked(c, out, n, total_bytes, err);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/* ------------------------------------------------------------------ eviction */

int kvd_evict_locked(ds4_kvdisk *c, const char *protect, ds4_kvdisk_evict_result *res, ds4_err *err) {
    memset(res, 0, sizeof(*res));
    ds4_kvdisk_entry *v;
    size_t n;
    uint64_t total;
    if (kvd_list_locked(c, &v, &n, &total, err) != 0) return -1;
    res->total_bytes = total;
    if (total <= c->o.budget_bytes) {
        free(v);
        return 0;
    }
    bool *rm = calloc(n, sizeof(*rm));
    if (!rm) {
        free(v);
        return ds4_errf(err, "out of memory planning eviction");
    }
    const uint64_t now = kvd_now(c);
    ds4_kvdisk_plan_eviction(v, n, c->o.budget_bytes, protect, now, rm);
    for (size_t i = 0; i < n; i++) {
        if (!rm[i]) continue;
        char path[KVD_PATH_MAX];
        kvd_path(c, v[i].name, path);
        if (unlink(path) != 0 && errno != ENOENT) {
            kvd_log(c, "could not evict %s: %s", v[i].name, strerror(errno));
            continue;
        }
        res->removed++;
        res->removed_bytes += v[i].file_bytes;
        res->total_bytes -= v[i].file_bytes;
        kvd_log(c, "evicted %s (%s, %u tokens, %llu bytes, %u hits, score %.3g) to stay within %llu bytes",
                v[i].name, ds4_kvdisk_reason_name(v[i].reason), v[i].tokens, (unsigned long long)v[i].file_bytes,
                v[i].hits, ds4_kvdisk_score(&v[i], now), (unsigned long long)c->o.budget_bytes);
    }
    free(rm);
    free(v);
    return 0;
}

int ds4_kvdisk_evict(ds4_kvdisk *c, const char *protect, ds4_kvdisk_evict_result *res, ds4_err *err) {
    pthread_mutex_lock(&c->mu);
    const int rc = kvd_evict_locked(c, protect, res, err);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/* ------------------------------------------------------------------ lookup */

static int by_text_len_asc(const void *a, const void *b) {
    const ds4_kvdisk_entry *x = a, *y = b;
    return x->text_bytes < y->text_bytes ? -1 : x->text_bytes > y->text_bytes;
}

/* Best first: longest text, then more tokens, then most recently used. */
static int by_preference(const void *a, const void *b) {
    const ds4_kvdisk_entry *x = a, *y = b;
    if (x->text_bytes != y->text_bytes) return x->text_bytes > y->text_bytes ? -1 : 1;
    if (x->tokens != y->tokens) return x->tokens > y->tokens ? -1 : 1;
    if (x->last_used != y->last_used) return x->last_used > y->last_used ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Every file that could serve the prompt, best first. */
static int candidates_locked(ds4_kvdisk *c, const ds4_session *s, const char *prompt, size_t len,
                             ds4_kvdisk_entry **out, size_t *n_out, ds4_err *err) {
    ds4_kvdisk_entry *v;
    size_t n;
    *out = NULL;
    *n_out = 0;
    if (!prompt) len = 0;
    if (kvd_list_locked(c, &v, &n, NULL, err) != 0) return -1;
    size_t k = 0;
    char why[256];
    for (size_t i = 0; i < n; i++)
        if (v[i].text_bytes <= len && v[i].tokens >= (uint32_t)c->o.min_tokens &&
            kvd_session_accepts(c, s, &v[i], why, sizeof(why)))
            v[k++] = v[i];
    n = k;
    /* One pass over the prompt hashes every candidate length: feed the
     * prompt in increasing length order and finish a copy of the running
     * SHA-1 context at each candidate's length. */
    if (n > 1) qsort(v, n, sizeof(*v), by_text_len_asc);
    SHA1_CTX ctx;
    SHA1Init(&ctx);
    size_t fed = 0;
    k = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i].text_bytes > fed) {
            SHA1Update(&ctx, (const uint8_t *)prompt + fed, v[i].text_bytes - fed);
            fed = v[i].text_bytes;
        }
        SHA1_CTX done = ctx;
        uint8_t d[SHA1_DIGEST_LENGTH];
        SHA1Final(d, &done);
        char hex[41];
        static const char digits[] = "0123456789abcdef";
        for (int j = 0; j < SHA1_DIGEST_LENGTH; j++) {
            hex[2 * j] = digits[d[j] >> 4];
            hex[2 * j + 1] = digits[d[j] & 15];
        }
        hex[40] = 0;
        if (strcmp(hex, v[i].sha1) == 0) v[k++] = v[i];
    }
    n = k;
    if (n > 1) qsort(v, n, sizeof(*v), by_preference);
    if (n == 0) {
        free(v);
        v = NULL;
    }
    *out = v;
    *n_out = n;
    return 0;
}

int ds4_kvdisk_lookup(ds4_kvdisk *c, const ds4_session *s, const char *prompt, size_t prompt_len,
                      ds4_kvdisk_entry *best, ds4_err *err) {
    pthread_mutex_lock(&c->mu);
    ds4_kvdisk_entry *v;
    size_t n;
    int rc = candidates_locked(c, s, prompt, prompt_len, &v, &n, err);
    if (rc == 0 && n > 0) {
        *best = v[0];
        rc = 1;
    }
    free(v);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/* ------------------------------------------------------------------ load */

void ds4_kvdisk_load_result_free(ds4_kvdisk_load_result *r) {
    if (r) ds4_kvdisk_tools_free(&r->tools);
}

/* Count a hit in place: hits+1, last used = now, and the meta CRC that covers
 * them. Best effort: a failure only loses statistics. */
static void count_hit(const ds4_kvdisk *c, const char *name, const uint8_t hdr[DS4_KVDISK_HEADER_BYTES],
                      uint64_t size, uint64_t now) {
    uint8_t h[DS4_KVDISK_HEADER_BYTES], m[8];
    memcpy(h, hdr, sizeof(h));
    const uint32_t hits = kvd_get_u32(h + KVD_OFF_HITS);
    kvd_put_u32(h + KVD_OFF_HITS, hits == UINT32_MAX ? hits : hits + 1);
    kvd_put_u64(h + KVD_OFF_LAST_USED, now);
    kvd_put_u64(m, kvd_meta_crc(h));
    char path[KVD_PATH_MAX];
    kvd_path(c, name, path);
    const int fd = open(path, O_WRONLY | O_CLOEXEC);
    const off_t ck = (off_t)(size - DS4_KVDISK_CHECKSUM_BYTES + KVD_CK_META);
    if (fd < 0 || pwrite(fd, h + KVD_OFF_HITS, 4, KVD_OFF_HITS) != 4 ||
        pwrite(fd, h + KVD_OFF_LAST_USED, 8, KVD_OFF_LAST_USED) != 8 || pwrite(fd, m, 8, ck) != 8)
        kvd_log(c, "could not record a hit on %s: %s", name, strerror(errno));
    if (fd >= 0) close(fd);
}

static int load_locked(ds4_kvdisk *c, const char *name, ds4_session *s, const char *prompt, size_t prompt_len,
                       ds4_kvdisk_load_result *res, ds4_err *err) {
    const bool was_reset = res->session_reset;
    memset(res, 0, sizeof(*res));
    res->session_reset = was_reset;
    if (!s) return ds4_errf(err, "KV cache load: no session");
    if (!name || !ds4_kvdisk_valid_name(name, NULL))
        return ds4_errf(err, "not a checkpoint file name: %s", name ? name : "(null)");
    uint8_t hdr[DS4_KVDISK_PREFIX_BYTES];
    FILE *f;
    const kvd_scan_rc sr = kvd_scan_open(c, name, &f, &res->entry, hdr, res->why, sizeof(res->why));
    if (sr == KVD_SCAN_SKIP) {
        res->outcome = DS4_KVDISK_MISS;
        return 0;
    }
    if (sr == KVD_SCAN_BAD) {
        kvd_delete_corrupt(c, name, res->why);
        res->outcome = DS4_KVDISK_CORRUPT;
        return 0;
    }
    /* Verify every byte before judging compatibility: a flipped bit in the
     * payload header (its chunk, its shape) must read as damage, not as a
     * checkpoint for some other runtime that is kept forever. lookup() has
     * already filtered on the same header fields, so reading a file only to
     * call it incompatible happens only for direct loads by name. */
    const ds4_kvdisk_entry *e = &res->entry;
    const uint64_t size = e->file_bytes;
    if (size > SIZE_MAX) {
        fclose(f);
        return ds4_errf(err, "checkpoint %s (%llu bytes) does not fit in memory", name, (unsigned long long)size);
    }
    uint8_t *buf = malloc((size_t)size);
    if (!buf) {
        fclose(f);
        return ds4_errf(err, "out of memory reading checkpoint %s (%llu bytes)", name, (unsigned long long)size);
    }
    const size_t tb = e->text_bytes, body_end = DS4_KVDISK_PREFIX_BYTES + tb + (size_t)e->payload_bytes;
    const uint8_t *text = buf + DS4_KVDISK_PREFIX_BYTES;
    char sha[41];
    kvd_checksum ck;
    uint64_t crc;
    if (kvd_read_at(f, 0, buf, (size_t)size) != 0 || memcmp(buf, hdr, sizeof(hdr)) != 0) {
        kvd_why(res->why, sizeof(res->why), "the file changed or shrank while it was read");
        goto corrupt;
    }
    ds4_kvdisk_sha1_hex(text, tb, sha);
    if (strcmp(sha, e->sha1) != 0) {
        kvd_why(res->why, sizeof(res->why), "cache text hashes to %s, not to the file name", sha);
        goto corrupt;
    }
    kvd_checksum_decode(buf + size - DS4_KVDISK_CHECKSUM_BYTES, &ck); /* magic checked by kvd_scan_open */
    crc = ds4_kvdisk_crc64(kvd_body_crc_header(buf), buf + DS4_KVDISK_HEADER_BYTES, body_end - DS4_KVDISK_HEADER_BYTES);
    if (crc != ck.body) {
        kvd_why(res->why, sizeof(res->why), "body CRC mismatch (torn write, truncation or bit flip)");
        goto corrupt;
    }
    crc = ds4_kvdisk_crc64(0, buf + KVD_OFF_EXT, 1);
    crc = ds4_kvdisk_crc64(crc, buf + body_end, (size_t)size - DS4_KVDISK_CHECKSUM_BYTES - body_end);
    if (crc != ck.trailer) {
        kvd_why(res->why, sizeof(res->why), "trailer CRC mismatch (extension flags or tool map damaged)");
        goto corrupt;
    }
    if (kvd_meta_crc(buf) != ck.meta) {
        kvd_why(res->why, sizeof(res->why), "hit count / last-used CRC mismatch (header damaged)");
        goto corrupt;
    }
    if (e->tokens < (uint32_t)c->o.min_tokens) {
        kvd_why(res->why, sizeof(res->why), "incompatible checkpoint: %u tokens, fewer than min_tokens %d", e->tokens,
                c->o.min_tokens);
        goto incompatible;
    }
    if (!kvd_session_accepts(c, s, e, res->why, sizeof(res->why))) goto incompatible;
    if (prompt && (tb > prompt_len || memcmp(text, prompt, tb) != 0)) {
        /* Longer than the prompt, or the same SHA-1 with different bytes. */
        kvd_why(res->why, sizeof(res->why), "cache text (%zu bytes) is not a byte prefix of the prompt (%zu bytes)", tb,
                prompt_len);
        goto incompatible;
    }
    if (e->ext & DS4_KVDISK_EXT_TOOL_MAP) {
        if (ds4_kvdisk_toolmap_decode(buf + body_end, (size_t)size - DS4_KVDISK_CHECKSUM_BYTES - body_end,
                                      c->o.tool_max_ids, &res->tools, err) != 0) {
            free(buf);
            fclose(f);
            return -1;
        }
    }
    fclose(f);
    f = NULL;

    /* From here on the session's previous state is gone, whatever happens. */
    res->session_reset = true;
    ds4_err lerr = {{0}};
    if (ds4_session_load(s, buf + DS4_KVDISK_PREFIX_BYTES + tb, (size_t)e->payload_bytes, &lerr) != 0) {
        ds4_session_reset(s);
        kvd_why(res->why, sizeof(res->why), "payload refused after verification: %s", lerr.msg);
        goto corrupt;
    }
    if (ds4_session_n_tokens(s) != (int)e->tokens) {
        ds4_session_reset(s);
        kvd_why(res->why, sizeof(res->why), "payload loaded %d tokens, the header says %u", ds4_session_n_tokens(s),
                e->tokens);
        goto corrupt;
    }
    free(buf);
    res->outcome = DS4_KVDISK_LOADED;
    res->text_bytes = tb;
    res->tokens = (int)e->tokens;
    if (c->o.cold_max_tokens >= 0 && e->tokens > (uint32_t)c->o.cold_max_tokens) {
        /* Consumed: the live session owns this state now and the evict /
         * continued / shutdown policy will store it again as it grows. */
        char path[KVD_PATH_MAX];
        kvd_path(c, name, path);
        res->consumed = unlink(path) == 0;
    } else {
        count_hit(c, name, hdr, size, kvd_now(c));
    }
    kvd_log(c, "loaded %s (%s, %u tokens, %u text bytes, %u hits%s, %zu tool ids)", name,
            ds4_kvdisk_reason_name(e->reason), e->tokens, e->text_bytes, e->hits,
            res->consumed ? ", consumed" : "", res->tools.n);
    return 0;

corrupt:
    free(buf);
    if (f) fclose(f);
    ds4_kvdisk_tools_free(&res->tools);
    kvd_delete_corrupt(c, name, res->why);
    res->outcome = DS4_KVDISK_CORRUPT;
    return 0;
incompatible:
    free(buf);
    fclose(f);
    kvd_log(c, "not using %s: %s", name, res->why);
    res->outcome = DS4_KVDISK_INCOMPATIBLE;
    return 0;
}

int ds4_kvdisk_load(ds4_kvdisk *c, const char *name, ds4_session *s, const char *prompt, size_t prompt_len,
                    ds4_kvdisk_load_result *res, ds4_err *err) {
    pthread_mutex_lock(&c->mu);
    res->session_reset = false;
    const int rc = load_locked(c, name, s, prompt, prompt_len, res, err);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int ds4_kvdisk_restore(ds4_kvdisk *c, ds4_session *s, const char *prompt, size_t prompt_len,
                       ds4_kvdisk_load_result *res, ds4_err *err) {
    pthread_mutex_lock(&c->mu);
    memset(res, 0, sizeof(*res));
    ds4_kvdisk_entry *v;
    size_t n;
    int rc = candidates_locked(c, s, prompt, prompt_len, &v, &n, err);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = load_locked(c, v[i].name, s, prompt, prompt_len, res, err);
        if (rc == 0 && res->outcome == DS4_KVDISK_LOADED) break;
    }
    if (rc == 0 && res->outcome != DS4_KVDISK_LOADED) {
        const bool reset = res->session_reset;
        memset(res, 0, sizeof(*res));
        res->session_reset = reset;
        res->outcome = DS4_KVDISK_MISS;
    }
    free(v);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

