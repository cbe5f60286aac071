/* ds4 — disk KV cache internals shared by kvdisk*.c (not a public API). */
#ifndef DS4_SERVER_KVDISK_INTERNAL_H
#define DS4_SERVER_KVDISK_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "server/kvdisk.h"

/* Extension bits this engine understands; a file with any other bit set came
 * from a format we cannot verify. */
#define KVD_EXT_KNOWN                                                                                          \
    (DS4_KVDISK_EXT_TOOL_MAP | DS4_KVDISK_EXT_RESPONSES_VISIBLE | DS4_KVDISK_EXT_THINKING_VISIBLE |            \
     DS4_KVDISK_EXT_CHECKSUM)

#define KVD_MAX_REASON 6
#define KVD_TOOLMAP_HEADER_BYTES 8 /* "KTM", version, u32 count */
#define KVD_PAYLOAD_HEADER_BYTES 52 /* thirteen u32 (§7.4) */

/* Byte offsets inside the 48-byte header. */
enum {
    KVD_OFF_QUANT = 4,
    KVD_OFF_REASON = 5,
    KVD_OFF_EXT = 6,
    KVD_OFF_TOKENS = 8,
    KVD_OFF_HITS = 12,
    KVD_OFF_CTX = 16,
    KVD_OFF_CREATED = 24,
    KVD_OFF_LAST_USED = 32,
    KVD_OFF_PAYLOAD = 40,
};

/* Offsets inside the integrity section. */
enum {
    KVD_CK_BODY = 4,
    KVD_CK_TRAILER = 12,
    KVD_CK_META = 20,
};

typedef struct kvd_header {
    uint8_t quant_bits, reason, ext;
    uint32_t tokens, hits, ctx;
    uint64_t created, last_used, payload_bytes;
} kvd_header;

typedef struct kvd_checksum {
    uint64_t body, trailer, meta;
} kvd_checksum;

/* The §7.4 payload header fields the cache looks at. */
typedef struct kvd_payload_info {
    uint32_t ctx, chunk, raw_cap, raw_window, comp_cap, tokens, n_layer, head_dim, idx_dim, n_vocab, raw_rows;
} kvd_payload_info;

uint32_t kvd_get_u32(const uint8_t *p);
uint64_t kvd_get_u64(const uint8_t *p);
void kvd_put_u32(uint8_t *p, uint32_t v);
void kvd_put_u64(uint8_t *p, uint64_t v);

/* Encode a header; decode and validate one (why gets the reason on failure). */
void kvd_header_encode(const kvd_header *h, uint8_t out[DS4_KVDISK_HEADER_BYTES]);
int kvd_header_decode(const uint8_t in[DS4_KVDISK_HEADER_BYTES], kvd_header *h, char *why, size_t why_len);

/* CRC of the header with its mutable bytes (flags, hits, last used) as zero:
 * the start of the body CRC. */
uint64_t kvd_body_crc_header(const uint8_t hdr[DS4_KVDISK_HEADER_BYTES]);
/* CRC of hits and last used as stored in the header. */
uint64_t kvd_meta_crc(const uint8_t hdr[DS4_KVDISK_HEADER_BYTES]);

void kvd_checksum_encode(const kvd_checksum *ck, uint8_t out[DS4_KVDISK_CHECKSUM_BYTES]);
/* -1 when magic or version is wrong. */
int kvd_checksum_decode(const uint8_t in[DS4_KVDISK_CHECKSUM_BYTES], kvd_checksum *ck);

/* Parse the payload header; -1 with why on a bad magic/version. */
int kvd_payload_info_decode(const uint8_t in[KVD_PAYLOAD_HEADER_BYTES], kvd_payload_info *pi, char *why,
                            size_t why_len);

/* ------------------------------------------------------------------ the handle (kvdisk.c) */

/* Paths are the directory plus a short file name; open() refuses directories
 * whose path would not leave room for one. */
#define KVD_PATH_MAX 4096
#define KVD_TMP_TAG ".tmp."

struct ds4_kvdisk {
    char *dir;
    ds4_kvdisk_opts o;
    pthread_mutex_t mu; /* every public entry point holds it; *_locked helpers expect it held */
};

typedef enum kvd_scan_rc {
    KVD_SCAN_OK = 0,
    KVD_SCAN_BAD = 1,  /* invalid: delete */
    KVD_SCAN_SKIP = 2, /* vanished or unreadable: leave it alone */
} kvd_scan_rc;

uint64_t kvd_now(const ds4_kvdisk *c);
void kvd_log(const ds4_kvdisk *c, const char *fmt, ...) DS4_PRINTF(2, 3);
void kvd_why(char *why, size_t len, const char *fmt, ...) DS4_PRINTF(3, 4);
void kvd_path(const ds4_kvdisk *c, const char *name, char out[KVD_PATH_MAX]);
int kvd_read_exact(FILE *f, void *buf, size_t n);
int kvd_read_at(FILE *f, uint64_t off, void *buf, size_t n);
int kvd_fsync_dir(const char *dir);
/* Delete a file that failed validation, with a log line. */
void kvd_delete_corrupt(const ds4_kvdisk *c, const char *name, const char *why);
/* Open and check a file's header, size, payload header and integrity-section
 * magic (no CRCs: those need the whole file). On KVD_SCAN_OK *fp is the open
 * file and hdr holds its first 52 bytes. */
kvd_scan_rc kvd_scan_open(const ds4_kvdisk *c, const char *name, FILE **fp, ds4_kvdisk_entry *e,
                          uint8_t hdr[DS4_KVDISK_PREFIX_BYTES], char *why, size_t wl);
int kvd_list_locked(ds4_kvdisk *c, ds4_kvdisk_entry **out, size_t *n_out, uint64_t *total, ds4_err *err);
/* Whether the session could load the file's payload (header checks only). */
bool kvd_session_accepts(const ds4_kvdisk *c, const ds4_session *s, const ds4_kvdisk_entry *e, char *why, size_t wl);
int kvd_evict_locked(ds4_kvdisk *c, const char *protect, ds4_kvdisk_evict_result *res, ds4_err *err);

#endif
