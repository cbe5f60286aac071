/* ds4 — disk KV cache: byte layout, hashes and the tool-id map codec (see
 * kvdisk.h for the file format). Nothing here touches the file system. */
#define _GNU_SOURCE /* memmem: two-way search, linear in the text */
#include <pthread.h>
#include <sha1.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/kvdisk_internal.h"

/* ------------------------------------------------------------------ names */

const char *ds4_kvdisk_outcome_name(ds4_kvdisk_outcome o) {
    switch (o) {
    case DS4_KVDISK_MISS: return "miss";
    case DS4_KVDISK_LOADED: return "loaded";
    case DS4_KVDISK_CORRUPT: return "corrupt";
    case DS4_KVDISK_INCOMPATIBLE: return "incompatible";
    case DS4_KVDISK_STORED: return "stored";
    case DS4_KVDISK_REFRESHED: return "refreshed";
    case DS4_KVDISK_SKIPPED_SHORT: return "skipped-short";
    case DS4_KVDISK_SKIPPED_BUDGET: return "skipped-budget";
    }
    return "unknown";
}

const char *ds4_kvdisk_reason_name(int reason) {
    static const char *const names[] = {"unknown", "cold", "continued", "evict", "shutdown", "agent-system",
                                        "agent-session"};
    return reason >= 0 && reason <= KVD_MAX_REASON ? names[reason] : "unknown";
}

/* ------------------------------------------------------------------ little-endian fields */

uint32_t kvd_get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint64_t kvd_get_u64(const uint8_t *p) { return (uint64_t)kvd_get_u32(p) | (uint64_t)kvd_get_u32(p + 4) << 32; }

void kvd_put_u32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

void kvd_put_u64(uint8_t *p, uint64_t v) {
    kvd_put_u32(p, (uint32_t)v);
    kvd_put_u32(p + 4, (uint32_t)(v >> 32));
}

/* ------------------------------------------------------------------ CRC-64/XZ */

/* Slicing-by-8: eight 256-entry tables let the loop fold 8 input bytes per
 * step (~1.5 GB/s), so verifying a checkpoint costs a fraction of reading it. */
static uint64_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void) {
    const uint64_t poly = 0xC96C5795D7870F42ull; /* ECMA-182, reflected */
    for (int i = 0; i < 256; i++) {
        uint64_t c = (uint64_t)i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ poly : c >> 1;
        crc_table[0][i] = c;
    }
    for (int i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++) crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
}

uint64_t ds4_kvdisk_crc64(uint64_t crc, const void *data, size_t n) {
    pthread_once(&crc_once, crc_init);
    const uint8_t *p = data;
    uint64_t c = ~crc;
    while (n >= 8) {
        /* Assemble little-endian explicitly: the tables assume byte 0 first. */
        const uint64_t v = c ^ kvd_get_u64(p);
        c = crc_table[7][v & 0xff] ^ crc_table[6][(v >> 8) & 0xff] ^ crc_table[5][(v >> 16) & 0xff] ^
            crc_table[4][(v >> 24) & 0xff] ^ crc_table[3][(v >> 32) & 0xff] ^ crc_table[2][(v >> 40) & 0xff] ^
            crc_table[1][(v >> 48) & 0xff] ^ crc_table[0][v >> 56];
        p += 8;
        n -= 8;
    }
    while (n--) c = crc_table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
    return ~c;
}

/* ------------------------------------------------------------------ SHA-1 and names */

void ds4_kvdisk_sha1_hex(const void *data, size_t n, char out[41]) {
    SHA1_CTX ctx;
    uint8_t d[SHA1_DIGEST_LENGTH];
    SHA1Init(&ctx);
    SHA1Update(&ctx, data, n);
    SHA1Final(d, &ctx);
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < SHA1_DIGEST_LENGTH; i++) {
        out[2 * i] = hex[d[i] >> 4];
        out[2 * i + 1] = hex[d[i] & 15];
    }
    out[40] = 0;
}

bool ds4_kvdisk_valid_name(const char *name, char sha1[41]) {
    char low[41];
    for (int i = 0; i < 40; i++) {
        char ch = name[i];
        if (ch >= 'A' && ch <= 'F') ch = (char)(ch - 'A' + 'a');
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) return false; /* also stops at NUL */
        low[i] = ch;
    }
    if (strcmp(name + 40, ".kv") != 0) return false;
    low[40] = 0;
    if (sha1) memcpy(sha1, low, 41);
    return true;
}

/* ------------------------------------------------------------------ sizes */

uint64_t ds4_kvdisk_file_bytes(size_t text_bytes, uint64_t payload_bytes, size_t toolmap_bytes) {
    return DS4_KVDISK_PREFIX_BYTES + (uint64_t)text_bytes + payload_bytes + (uint64_t)toolmap_bytes +
           DS4_KVDISK_CHECKSUM_BYTES;
}

bool ds4_kvdisk_fits_budget(uint64_t file_bytes, uint64_t budget) {
    /* file * 1.01 rounded up, in integers: file + ceil(file / 100). */
    const uint64_t slack = file_bytes / 100 + (file_bytes % 100 != 0);
    return file_bytes <= budget && slack <= budget - file_bytes;
}

/* ------------------------------------------------------------------ header */

void kvd_header_encode(const kvd_header *h, uint8_t out[DS4_KVDISK_HEADER_BYTES]) {
    memset(out, 0, DS4_KVDISK_HEADER_BYTES);
    out[0] = 'K';
    out[1] = 'V';
    out[2] = 'C';
    out[3] = DS4_KVDISK_VERSION;
    out[KVD_OFF_QUANT] = h->quant_bits;
    out[KVD_OFF_REASON] = h->reason;
    out[KVD_OFF_EXT] = h->ext;
    kvd_put_u32(out + KVD_OFF_TOKENS, h->tokens);
    kvd_put_u32(out + KVD_OFF_HITS, h->hits);
    kvd_put_u32(out + KVD_OFF_CTX, h->ctx);
    kvd_put_u64(out + KVD_OFF_CREATED, h->created);
    kvd_put_u64(out + KVD_OFF_LAST_USED, h->last_used);
    kvd_put_u64(out + KVD_OFF_PAYLOAD, h->payload_bytes);
}

int kvd_header_decode(const uint8_t in[DS4_KVDISK_HEADER_BYTES], kvd_header *h, char *why, size_t why_len) {
    const char *bad = NULL;
    if (in[0] != 'K' || in[1] != 'V' || in[2] != 'C')
        bad = "bad magic (not a KVC file)";
    else if (in[3] != DS4_KVDISK_VERSION)
        bad = "unsupported version";
    else if (in[KVD_OFF_QUANT] != 2 && in[KVD_OFF_QUANT] != 4)
        bad = "quant bits not 2 or 4";
    else if (in[KVD_OFF_REASON] > KVD_MAX_REASON)
        bad = "unknown save reason";
    else if (in[KVD_OFF_EXT] & ~KVD_EXT_KNOWN)
        bad = "unknown extension bits";
    else if (!(in[KVD_OFF_EXT] & DS4_KVDISK_EXT_CHECKSUM))
        bad = "no integrity section (cannot be verified)";
    else if ((in[KVD_OFF_EXT] & DS4_KVDISK_EXT_RESPONSES_VISIBLE) && (in[KVD_OFF_EXT] & DS4_KVDISK_EXT_THINKING_VISIBLE))
        bad = "two key kinds at once";
    else if (in[7] != 0 || kvd_get_u32(in + 20) != 0)
        bad = "reserved header bytes are not zero";
    else if (kvd_get_u32(in + KVD_OFF_TOKENS) == 0)
        bad = "token count is zero";
    else if (kvd_get_u64(in + KVD_OFF_PAYLOAD) < KVD_PAYLOAD_HEADER_BYTES)
        bad = "payload smaller than its header";
    if (bad) {
        if (why) snprintf(why, why_len, "invalid header: %s", bad);
        return -1;
    }
    h->quant_bits = in[KVD_OFF_QUANT];
    h->reason = in[KVD_OFF_REASON];
    h->ext = in[KVD_OFF_EXT];
    h->tokens = kvd_get_u32(in + KVD_OFF_TOKENS);
    h->hits = kvd_get_u32(in + KVD_OFF_HITS);
    h->ctx = kvd_get_u32(in + KVD_OFF_CTX);
    h->created = kvd_get_u64(in + KVD_OFF_CREATED);
    h->last_used = kvd_get_u64(in + KVD_OFF_LAST_USED);
    h->payload_bytes = kvd_get_u64(in + KVD_OFF_PAYLOAD);
    return 0;
}

uint64_t kvd_body_crc_header(const uint8_t hdr[DS4_KVDISK_HEADER_BYTES]) {
    uint8_t h[DS4_KVDISK_HEADER_BYTES];
    memcpy(h, hdr, sizeof(h));
    h[KVD_OFF_EXT] = 0;
    memset(h + KVD_OFF_HITS, 0, 4);
    memset(h + KVD_OFF_LAST_USED, 0, 8);
    return ds4_kvdisk_crc64(0, h, sizeof(h));
}

uint64_t kvd_meta_crc(const uint8_t hdr[DS4_KVDISK_HEADER_BYTES]) {
    const uint64_t c = ds4_kvdisk_crc64(0, hdr + KVD_OFF_HITS, 4);
    return ds4_kvdisk_crc64(c, hdr + KVD_OFF_LAST_USED, 8);
}

void kvd_checksum_encode(const kvd_checksum *ck, uint8_t out[DS4_KVDISK_CHECKSUM_BYTES]) {
    out[0] = 'K';
    out[1] = 'C';
    out[2] = 'K';
    out[3] = 1;
    kvd_put_u64(out + KVD_CK_BODY, ck->body);
    kvd_put_u64(out + KVD_CK_TRAILER, ck->trailer);
    kvd_put_u64(out + KVD_CK_META, ck->meta);
}

int kvd_checksum_decode(const uint8_t in[DS4_KVDISK_CHECKSUM_BYTES], kvd_checksum *ck) {
    if (in[0] != 'K' || in[1] != 'C' || in[2] != 'K' || in[3] != 1) return -1;
    ck->body = kvd_get_u64(in + KVD_CK_BODY);
    ck->trailer = kvd_get_u64(in + KVD_CK_TRAILER);
    ck->meta = kvd_get_u64(in + KVD_CK_META);
    return 0;
}

int kvd_payload_info_decode(const uint8_t in[KVD_PAYLOAD_HEADER_BYTES], kvd_payload_info *pi, char *why,
                            size_t why_len) {
    uint32_t w[13];
    for (int i = 0; i < 13; i++) w[i] = kvd_get_u32(in + 4 * i);
    if (w[0] != DS4_PAYLOAD_MAGIC || w[1] != DS4_PAYLOAD_VERSION) {
        if (why) snprintf(why, why_len, "session payload has a bad magic or version");
        return -1;
    }
    pi->ctx = w[2];
    pi->chunk = w[3];
    pi->raw_cap = w[4];
    pi->raw_window = w[5];
    pi->comp_cap = w[6];
    pi->tokens = w[7];
    pi->n_layer = w[8];
    pi->head_dim = w[9];
    pi->idx_dim = w[10];
    pi->n_vocab = w[11];
    pi->raw_rows = w[12];
    return 0;
}

/* ------------------------------------------------------------------ tool-id map */

void ds4_kvdisk_tools_free(ds4_kvdisk_tools *t) {
    if (!t) return;
    /* Each entry owns one block holding its id and its DSML (see decode). */
    for (size_t i = 0; i < t->n; i++) free((void *)t->v[i].id);
    free(t->v);
    t->v = NULL;
    t->n = 0;
}

bool ds4_kvdisk_tool_in_text(const char *text, size_t text_len, const char *dsml, size_t dsml_len) {
    if (!text || !dsml || dsml_len == 0) return false;
    if (memmem(text, text_len, dsml, dsml_len)) return true;
    return dsml_len > 2 && dsml[0] == '\n' && dsml[1] == '\n' && memmem(text, text_len, dsml + 2, dsml_len - 2);
}

static bool tool_ok(const ds4_kvdisk_tool *t) {
    return t->id && t->dsml && t->id_len >= 1 && t->id_len <= DS4_KVDISK_TOOL_ID_MAX && t->dsml_len >= 1 &&
           t->dsml_len <= DS4_KVDISK_TOOL_DSML_MAX;
}

int ds4_kvdisk_toolmap_encode(const ds4_kvdisk_tool *tools, size_t n, uint8_t **out, size_t *len, ds4_err *err) {
    size_t bytes = KVD_TOOLMAP_HEADER_BYTES, count = 0;
    for (size_t i = 0; i < n; i++)
        if (tool_ok(&tools[i])) {
            bytes += 8 + tools[i].id_len + tools[i].dsml_len;
            count++;
        }
    if (count > UINT32_MAX) return ds4_errf(err, "tool map of %zu entries is too large", count);
    uint8_t *b = malloc(bytes), *p = b;
    if (!b) return ds4_errf(err, "out of memory for a %zu-byte tool map", bytes);
    memcpy(p, "KTM\x01", 4);
    kvd_put_u32(p + 4, (uint32_t)count);
    p += KVD_TOOLMAP_HEADER_BYTES;
    for (size_t i = 0; i < n; i++) {
        if (!tool_ok(&tools[i])) continue;
        kvd_put_u32(p, (uint32_t)tools[i].id_len);
        kvd_put_u32(p + 4, (uint32_t)tools[i].dsml_len);
        memcpy(p + 8, tools[i].id, tools[i].id_len);
        memcpy(p + 8 + tools[i].id_len, tools[i].dsml, tools[i].dsml_len);
        p += 8 + tools[i].id_len + tools[i].dsml_len;
    }
    *out = b;
    *len = bytes;
    return 0;
}

int ds4_kvdisk_toolmap_decode(const uint8_t *buf, size_t len, int tool_max_ids, ds4_kvdisk_tools *out, ds4_err *err) {
    out->v = NULL;
    out->n = 0;
    if (len < KVD_TOOLMAP_HEADER_BYTES || memcmp(buf, "KTM\x01", 4) != 0) return 0; /* ignored, not an error */
    const uint64_t count = kvd_get_u32(buf + 4);
    const uint64_t limit = 4 * (uint64_t)(tool_max_ids > 0 ? tool_max_ids : 0);
    if (count > limit) return 0;
    /* Every entry takes at least 10 bytes: do not trust the count for the allocation. */
    const size_t room = (len - KVD_TOOLMAP_HEADER_BYTES) / 10;
    const size_t cap = count < room ? (size_t)count : room;
    if (cap == 0) return 0;
    out->v = calloc(cap, sizeof(*out->v));
    if (!out->v) return ds4_errf(err, "out of memory for %zu tool-map entries", cap);
    size_t off = KVD_TOOLMAP_HEADER_BYTES;
    for (size_t i = 0; i < cap; i++) {
        if (len - off < 8) break;
        const uint32_t il = kvd_get_u32(buf + off), dl = kvd_get_u32(buf + off + 4);
        if (il < 1 || il > DS4_KVDISK_TOOL_ID_MAX || dl < 1 || dl > DS4_KVDISK_TOOL_DSML_MAX) break;
        if ((uint64_t)il + dl > len - off - 8) break;
        char *m = malloc((size_t)il + 1 + dl + 1);
        if (!m) {
            ds4_kvdisk_tools_free(out);
            return ds4_errf(err, "out of memory for a tool-map entry");
        }
        memcpy(m, buf + off + 8, il);
        m[il] = 0;
        memcpy(m + il + 1, buf + off + 8 + il, dl);
        m[il + 1 + dl] = 0;
        out->v[out->n++] = (ds4_kvdisk_tool){m, il, m + il + 1, dl};
        off += 8 + (size_t)il + dl;
    }
    if (out->n == 0) {
        free(out->v);
        out->v = NULL;
    }
    return 0;
}
