/* ds4 — disk KV cache: checkpoints of a session's state, found by the bytes
 * of the prompt they cover (INTERFACES.md §7).
 *
 * Chat APIs are stateless: agents resend the whole conversation and only one
 * live session fits in memory. A checkpoint file keeps a session state (the
 * §7.4 payload) under the rendered-prompt bytes it covers (its "cache text"),
 * so a later request whose rendered prompt starts with those bytes resumes
 * from it instead of prefilling from zero, across session switches and server
 * restarts. The directory is disposable: deleting it only costs recomputation.
 *
 * This module stores and finds checkpoints. It knows nothing about HTTP, JSON
 * or the chat template; the server decides when to store (the policy helpers
 * at the end implement §7.6/§7.8's arithmetic) and what the cache text is.
 *
 * ------------------------------------------------------------ file format
 * One file per checkpoint, named `<sha1>.kv` with <sha1> the lowercase 40-hex
 * SHA-1 of the cache text (other names in the directory are ignored; upper
 * case hex is accepted on read). All integers little-endian.
 *
 *   0    header, 48 bytes:
 *          0  "KVC"          3  version 1
 *          4  u8 routed-expert quant bits (2 or 4)
 *          5  u8 save reason (ds4_kvdisk_reason)
 *          6  u8 extension flags (DS4_KVDISK_EXT_*)
 *          7  u8 reserved 0
 *          8  u32 tokens         12 u32 hit count
 *          16 u32 writer ctx     20 u32 reserved 0
 *          24 u64 created (Unix s)   32 u64 last used (Unix s)
 *          40 u64 payload bytes
 *   48   u32 text_bytes
 *   52   cache text (text_bytes bytes)
 *   ..   session payload (payload bytes; §7.4, from ds4_session_save)
 *   ..   appended sections, in extension-bit order:
 *          bit 0: tool-id map (§7.5): "KTM", u8 1, u32 N, then N x
 *                 {u32 id_len, u32 dsml_len, id bytes, dsml bytes}
 *          bit 3: integrity section (this engine's addition, always written,
 *                 always last, DS4_KVDISK_CHECKSUM_BYTES = 28 bytes):
 *                 0 "KCK"  3 u8 version 1
 *                 4  u64 body CRC:    CRC-64/XZ of bytes [0, 52+text+payload)
 *                                     with the mutable header bytes (6: flags,
 *                                     12..15: hits, 32..39: last used) as 0
 *                 12 u64 trailer CRC: CRC-64/XZ of the flags byte followed by
 *                                     every section before this one
 *                 20 u64 meta CRC:    CRC-64/XZ of header bytes 12..15 then
 *                                     32..39 (hit count, last used)
 *        Bits 1 and 2 mark the kind of cache text and have no section.
 *
 * Why three CRCs and not one: the body never changes after it is written, but
 * §7 rewrites the hit count and last-used time in place on every hit and
 * replaces the tool map in place when a same-name store only refreshes it.
 * With one checksum over the whole file, either would have to re-read (and
 * re-hash) a payload of up to a gigabyte. Together the three cover every byte
 * of the file. CRC-64 and not SHA-256: this guards against torn writes,
 * truncation and bit rot, not an adversary, and it runs ~8x faster than
 * libmd's SHA-256 (a 30000-token checkpoint is ~450 MB).
 *
 * A file is used only if all of this holds: header valid (magic, version,
 * tokens != 0, quant bits in {2,4}, reason <= 6, reserved bytes 0, known
 * extension bits with bit 3 set), the size is exactly the sum of its parts,
 * the embedded payload header agrees with the file header, SHA-1(text) equals
 * the name and the three CRCs match. A file that fails is deleted (it can
 * never become valid) and the caller learns it through the outcome
 * DS4_KVDISK_CORRUPT, the result's `why`, and a log line. Files written by
 * the reference implementation carry no integrity section; they are treated
 * the same way (unverifiable, deleted).
 *
 * New files are written to `<final>.tmp.<pid>`, flushed, fsync'd, size
 * checked, renamed into place, and the directory is fsync'd: a crash never
 * leaves a half-written `.kv`. Two updates are in place by design (§7.2,
 * §7.5): the hit count/last-used fields plus the meta CRC, and the tool-map
 * refresh (truncate after the payload, append map and integrity section). A
 * crash in the middle of those leaves a file whose CRCs disagree, which is
 * then detected and deleted, never used.
 *
 * Files are read and written with ordinary buffered I/O, never mmap (the
 * process already maps a very large GGUF).
 *
 * ------------------------------------------------------------ threads
 * Every function taking a ds4_kvdisk* locks the handle, so the worker and
 * HTTP threads may share one. One server process per directory. */
#ifndef DS4_SERVER_KVDISK_H
#define DS4_SERVER_KVDISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "text/tokenizer.h" /* ds4_str */
#include "util/err.h"

/* ---------------------------------------------------------------- constants */

#define DS4_KVDISK_VERSION 1
#define DS4_KVDISK_HEADER_BYTES 48
#define DS4_KVDISK_PREFIX_BYTES 52 /* header + u32 text_bytes */
#define DS4_KVDISK_CHECKSUM_BYTES 28
#define DS4_KVDISK_NAME_LEN 43     /* 40 hex + ".kv" */

#define DS4_KVDISK_EXT_TOOL_MAP 0x01u          /* tool-id map section present */
#define DS4_KVDISK_EXT_RESPONSES_VISIBLE 0x02u /* cache text is a Responses visible transcript */
#define DS4_KVDISK_EXT_THINKING_VISIBLE 0x04u  /* cache text is a thinking visible transcript */
#define DS4_KVDISK_EXT_CHECKSUM 0x08u          /* integrity section present (always, for this engine) */

#define DS4_KVDISK_TOOL_ID_MAX 256u                   /* bytes of one tool id */
#define DS4_KVDISK_TOOL_DSML_MAX (512u * 1024u * 1024u) /* bytes of one DSML block */
#define DS4_KVDISK_HALF_LIFE_S 21600                  /* hit decay half-life (6 h) */

typedef enum ds4_kvdisk_reason {
    DS4_KVDISK_REASON_UNKNOWN = 0,
    DS4_KVDISK_REASON_COLD = 1,          /* shared prefix of a cold prompt (chat anchor or store_len) */
    DS4_KVDISK_REASON_CONTINUED = 2,     /* absolute multiple of the continued step */
    DS4_KVDISK_REASON_EVICT = 3,         /* live session about to be replaced */
    DS4_KVDISK_REASON_SHUTDOWN = 4,      /* live session at clean shutdown */
    DS4_KVDISK_REASON_AGENT_SYSTEM = 5,  /* native agent only */
    DS4_KVDISK_REASON_AGENT_SESSION = 6, /* native agent only */
} ds4_kvdisk_reason;

/* What the cache text is (§7.3); stored as extension bits 1/2. */
typedef enum ds4_kvdisk_key {
    DS4_KVDISK_KEY_TOKEN_TEXT = 0,        /* concatenated token_text of the checkpoint's tokens */
    DS4_KVDISK_KEY_RESPONSES_VISIBLE = 1, /* a Responses visible transcript (§6.12.1) */
    DS4_KVDISK_KEY_THINKING_VISIBLE = 2,  /* a thinking visible transcript (§6.12.3) */
} ds4_kvdisk_key;

/* Outcome of store / load / restore; also in log lines. */
typedef enum ds4_kvdisk_outcome {
    DS4_KVDISK_MISS = 0,       /* lookup/restore: no usable checkpoint */
    DS4_KVDISK_LOADED,         /* load/restore: the session now holds the checkpoint */
    DS4_KVDISK_CORRUPT,        /* load: the file failed validation and was deleted */
    DS4_KVDISK_INCOMPATIBLE,   /* load: valid file, not usable by this session (prefill chunk,
                                  ctx, model shape, quant rule, not a prefix); kept */
    DS4_KVDISK_STORED,         /* store: a new file was written */
    DS4_KVDISK_REFRESHED,      /* store: a compatible same-name file exists; only its tool map was rewritten */
    DS4_KVDISK_SKIPPED_SHORT,  /* store: fewer than min_tokens tokens */
    DS4_KVDISK_SKIPPED_BUDGET, /* store: the file (+1% slack) would not fit the budget */
} ds4_kvdisk_outcome;

const char *ds4_kvdisk_outcome_name(ds4_kvdisk_outcome o); /* "stored", "corrupt", ... */
const char *ds4_kvdisk_reason_name(int reason);            /* "cold", "continued", ...; "unknown" */

/* ---------------------------------------------------------------- options */

/* A log line (no trailing newline), e.g.
 *   kv disk: deleted corrupt checkpoint 3f..9a.kv: body CRC mismatch (torn write or bit flip)
 * Called with the handle locked: do not call back into the cache. */
typedef void (*ds4_kvdisk_log_fn)(void *ud, const char *line);
/* Wall clock in Unix seconds (tests inject one). */
typedef uint64_t (*ds4_kvdisk_clock_fn)(void *ud);

typedef struct ds4_kvdisk_opts {
    uint64_t budget_bytes;         /* total bytes of all .kv files (--kv-disk-space-mb); default 4096 MiB */
    int min_tokens;                /* no checkpoint shorter is stored or loaded; default 512 */
    int cold_max_tokens;           /* cold saves only up to this; also the consume-on-hit threshold; 30000 */
    int continued_interval_tokens; /* target spacing of continued saves; 10000 */
    int boundary_trim_tokens;      /* trim before aligning cold boundaries; 32 */
    int boundary_align_tokens;     /* alignment of cold and continued boundaries; the session's
                                      prefill chunk (so a resumed prefill starts on a chunk boundary); 0 = none */
    bool reject_different_quant;   /* only files with this model's quant bits are compatible; off */
    int quant_bits;                /* this model's routed-expert quant bits, written into new files (2 or 4) */
    int tool_max_ids;              /* tool-memory id limit; a map with more than 4x entries is ignored; 100000 */
    ds4_kvdisk_log_fn log;         /* optional */
    void *log_ud;
    ds4_kvdisk_clock_fn clock;     /* optional; default time(NULL) */
    void *clock_ud;
} ds4_kvdisk_opts;

/* Defaults of §7.6. With a session, boundary_align_tokens is its effective
 * prefill chunk and quant_bits its model's routed-expert bits; with NULL they
 * are DS4_DEFAULT_PREFILL_CHUNK and 2. Override fields from flags afterwards. */
void ds4_kvdisk_opts_default(ds4_kvdisk_opts *o, const ds4_session *s);

/* ---------------------------------------------------------------- the cache */

typedef struct ds4_kvdisk ds4_kvdisk;

/* Open (creating it and missing parents with mode 0700) a cache directory.
 * Removes temporary files left by dead processes, deletes invalid .kv files
 * (header/size checks, see above) and runs eviction (§7.9: startup). Fails if
 * the path cannot be created or is not a writable directory, or the options
 * are out of range. */
ds4_kvdisk *ds4_kvdisk_open(const char *dir, const ds4_kvdisk_opts *o, ds4_err *err);
void ds4_kvdisk_close(ds4_kvdisk *c);

const ds4_kvdisk_opts *ds4_kvdisk_options(const ds4_kvdisk *c);
const char *ds4_kvdisk_dir(const ds4_kvdisk *c);

/* One checkpoint file as listed (header fields plus what the payload header
 * says about the session that wrote it). */
typedef struct ds4_kvdisk_entry {
    char name[DS4_KVDISK_NAME_LEN + 1]; /* file name as found in the directory */
    char sha1[41];                      /* lowercase hex of the name */
    uint8_t quant_bits, reason, ext;
    uint32_t tokens, hits, ctx, text_bytes;
    uint64_t created, last_used;
    uint64_t payload_bytes, file_bytes;
    /* payload header (§7.4) */
    uint32_t payload_chunk, payload_raw_window, payload_comp_cap;
    uint32_t n_layer, head_dim, idx_dim, n_vocab;
} ds4_kvdisk_entry;

/* The key kind of an entry (from its extension bits). */
ds4_kvdisk_key ds4_kvdisk_entry_key(const ds4_kvdisk_entry *e);

/* Every valid checkpoint, sorted by name; *out is malloc'd (free() it, NULL
 * when empty). Reads only headers (header, payload header, integrity-section
 * magic) and deletes files that fail those checks; full CRC verification
 * happens when a file is loaded. *total_bytes (optional) = sum of sizes. */
int ds4_kvdisk_list(ds4_kvdisk *c, ds4_kvdisk_entry **out, size_t *n, uint64_t *total_bytes, ds4_err *err);

/* ---------------------------------------------------------------- tool-id maps (§7.5) */

/* One tool-memory entry: a tool call id and the exact sampled DSML block it
 * maps to. As input the bytes are borrowed; in a ds4_kvdisk_tools they are
 * owned (NUL-terminated for convenience; lengths are authoritative). */
typedef struct ds4_kvdisk_tool {
    const char *id;
    size_t id_len;
    const char *dsml;
    size_t dsml_len;
} ds4_kvdisk_tool;

typedef struct ds4_kvdisk_tools {
    ds4_kvdisk_tool *v;
    size_t n;
} ds4_kvdisk_tools;

void ds4_kvdisk_tools_free(ds4_kvdisk_tools *t);

/* Whether a DSML block occurs verbatim in the cache text, with or without
 * its leading "\n\n" (the separator is not always part of the rendered
 * text). This is the rule store() uses to pick the entries it writes. */
bool ds4_kvdisk_tool_in_text(const char *text, size_t text_len, const char *dsml, size_t dsml_len);

/* Tool-map entries for the given ids, from every checkpoint that has a map
 * (most recently used file first; the first mapping of an id wins). This is
 * the "before rendering" scan of §6.11: call it with the tool-call ids of the
 * request history. Reads only the map sections; a file whose trailer CRC does
 * not match is deleted. out is filled even when empty. */
int ds4_kvdisk_tools_for_ids(ds4_kvdisk *c, const ds4_str *ids, size_t n_ids, ds4_kvdisk_tools *out, ds4_err *err);

/* The section codec, exposed for tests and tools. encode writes every entry
 * with id_len in [1,256] and dsml_len in [1, 512 MiB] (others are skipped);
 * *out is malloc'd. decode applies the load rules of §7.5: wrong magic or
 * version -> empty; more than 4 x tool_max_ids entries -> empty; stops at the
 * first entry with a length out of range or running past the buffer, keeping
 * the entries before it. Returns -1 only when out of memory. */
int ds4_kvdisk_toolmap_encode(const ds4_kvdisk_tool *tools, size_t n, uint8_t **out, size_t *len, ds4_err *err);
int ds4_kvdisk_toolmap_decode(const uint8_t *buf, size_t len, int tool_max_ids, ds4_kvdisk_tools *out, ds4_err *err);

/* ---------------------------------------------------------------- lookup and load (§7.7) */

/* The best checkpoint for a rendered prompt: among files with text_bytes <=
 * prompt_len, tokens >= min_tokens, writer ctx <= the session's ctx, the quant
 * rule, and (given a session) a payload this session accepts (same prefill
 * chunk, raw window and model shape), the one with the longest cache text
 * (ties: more tokens) whose name equals SHA-1(prompt[0..text_bytes)).
 * Returns 1 and fills *best, 0 when none, -1 on error. s may be NULL (no
 * session filter). Does not read the text or verify CRCs; load() does. */
int ds4_kvdisk_lookup(ds4_kvdisk *c, const ds4_session *s, const char *prompt, size_t prompt_len,
                      ds4_kvdisk_entry *best, ds4_err *err);

typedef struct ds4_kvdisk_load_result {
    ds4_kvdisk_outcome outcome; /* LOADED, CORRUPT, INCOMPATIBLE or MISS (file vanished) */
    ds4_kvdisk_entry entry;     /* the file's header as read (hit count before this hit) */
    size_t text_bytes;          /* LOADED: tokenize prompt[text_bytes..] (special-aware) and append */
    int tokens;                 /* LOADED: tokens now in the session (= entry.tokens) */
    bool consumed;              /* LOADED: the file was deleted (tokens > cold_max_tokens) */
    bool session_reset;         /* the session's previous state is gone (it is then empty
                                   unless LOADED); false when the session was not touched */
    ds4_kvdisk_tools tools;     /* LOADED: the file's tool-id map (empty if none); free it */
    char why[512];              /* CORRUPT / INCOMPATIBLE: the reason, one sentence */
} ds4_kvdisk_load_result;

/* Release what a load result owns (its tools). */
void ds4_kvdisk_load_result_free(ds4_kvdisk_load_result *r);

/* Load one checkpoint (by file name) into the session, §7.7 steps 3-6: read
 * the whole file with buffered I/O, validate header, size, name = SHA-1(text)
 * and the CRCs (failure: delete, CORRUPT, session untouched); check the text
 * is a byte prefix of the prompt when one is given (prompt may be NULL) and
 * that the session accepts the payload (INCOMPATIBLE, session untouched, file
 * kept; "incompatible checkpoint: prefill chunk 4096 differs from this
 * session's 2048"); load the payload (a failure here resets the session and
 * deletes the file: CORRUPT); check the token count; decode the tool map.
 * Then either delete the file when it holds more than cold_max_tokens tokens
 * (consumed: the live session now owns that state) or count the hit (hits+1,
 * last used = now). Returns 0 with res->outcome set, -1 with err on an
 * unexpected failure (out of memory, I/O error other than a bad file). */
int ds4_kvdisk_load(ds4_kvdisk *c, const char *name, ds4_session *s, const char *prompt, size_t prompt_len,
                    ds4_kvdisk_load_result *res, ds4_err *err);

/* lookup + load, trying the next best candidate when one turns out corrupt or
 * incompatible: the disk-text step of §6.12. res->outcome is LOADED or MISS.
 * Returns 0, or -1 with err. */
int ds4_kvdisk_restore(ds4_kvdisk *c, ds4_session *s, const char *prompt, size_t prompt_len,
                       ds4_kvdisk_load_result *res, ds4_err *err);

/* ---------------------------------------------------------------- store (§7.8) */

typedef struct ds4_kvdisk_store_req {
    const char *text;     /* cache text of the session's current tokens (§7.3): for the
                             token-text key, ds4_detokenize of ds4_session_tokens() */
    size_t text_len;      /* >= 1 */
    ds4_kvdisk_reason reason;
    ds4_kvdisk_key key;
    /* Tool-memory entries to consider; only those whose block occurs in the
     * text (ds4_kvdisk_tool_in_text) are written. May be NULL/0. */
    const ds4_kvdisk_tool *tools;
    size_t n_tools;
} ds4_kvdisk_store_req;

typedef struct ds4_kvdisk_store_result {
    ds4_kvdisk_outcome outcome; /* STORED, REFRESHED, SKIPPED_SHORT or SKIPPED_BUDGET */
    char name[DS4_KVDISK_NAME_LEN + 1];
    uint64_t file_bytes;        /* size of the stored / refreshed file, or the size it would have had */
    size_t tools_written;       /* map entries written */
    bool replaced;              /* an incompatible same-name file was replaced */
    int evicted;                /* files deleted by the eviction that followed */
    uint64_t evicted_bytes;
    char why[256];              /* SKIPPED_*: the reason */
} ds4_kvdisk_store_result;

/* Store the session's whole current state (all its tokens) under req->text.
 * The caller stores only when the session is exactly at the prefix it means
 * (the session is never rolled back). Skips when the session holds fewer
 * than min_tokens tokens or the file plus 1% would exceed the budget. If a
 * file of the same name exists and is compatible (quant rule, writer ctx <=
 * this session's, identical text, a payload this session accepts), only its
 * tool map is rewritten; an incompatible or damaged one is replaced. After a
 * write, eviction runs with the new file protected. Returns 0 with
 * res->outcome, -1 with err (I/O error, out of memory). */
int ds4_kvdisk_store(ds4_kvdisk *c, ds4_session *s, const ds4_kvdisk_store_req *req, ds4_kvdisk_store_result *res,
                     ds4_err *err);

/* ---------------------------------------------------------------- eviction (§7.9) */

typedef struct ds4_kvdisk_evict_result {
    int removed;
    uint64_t removed_bytes;
    uint64_t total_bytes; /* after eviction */
} ds4_kvdisk_evict_result;

/* While the .kv files exceed the budget, delete the lowest-scoring one. The
 * file named `protect` (may be NULL) is kept unless it alone exceeds the
 * budget. store() and open() call this; the server need not. */
int ds4_kvdisk_evict(ds4_kvdisk *c, const char *protect, ds4_kvdisk_evict_result *res, ds4_err *err);

/* hits * 2^(-(now - last_used) / 21600), 0 below 0.01 or when never used. */
double ds4_kvdisk_effective_hits(uint32_t hits, uint64_t last_used, uint64_t now);
/* (effective_hits + 1) * tokens / file_bytes. */
double ds4_kvdisk_score(const ds4_kvdisk_entry *e, uint64_t now);
/* Pure eviction plan: mark in remove[] (n entries, caller-allocated) the
 * entries to delete so the rest fit in budget: lowest score first, ties older
 * last_used first (then name); the entry named `protect` is last to go and
 * goes only if it alone exceeds the budget. Returns the number marked. */
size_t ds4_kvdisk_plan_eviction(const ds4_kvdisk_entry *v, size_t n, uint64_t budget, const char *protect,
                                uint64_t now, bool *remove);

/* ---------------------------------------------------------------- sizes, names, hashes */

/* Size of a file with this text, payload and tool-map section (0 if none). */
uint64_t ds4_kvdisk_file_bytes(size_t text_bytes, uint64_t payload_bytes, size_t toolmap_bytes);
/* The §7.8 budget check: file_bytes * 1.01, rounded up, <= budget. */
bool ds4_kvdisk_fits_budget(uint64_t file_bytes, uint64_t budget);
/* Lowercase 40-hex SHA-1 (the file name without ".kv"). */
void ds4_kvdisk_sha1_hex(const void *data, size_t n, char out[41]);
/* CRC-64/XZ (ECMA-182 polynomial, reflected, init and xorout all ones),
 * continued from `crc` (start with 0): crc64(crc64(0,a),b) = crc64(0,a||b). */
uint64_t ds4_kvdisk_crc64(uint64_t crc, const void *data, size_t n);
/* True for exactly 40 hex digits (either case) + ".kv"; sha1 (optional)
 * receives the lowercase hex. */
bool ds4_kvdisk_valid_name(const char *name, char sha1[41]);

/* ---------------------------------------------------------------- save policy helpers (§7.6, §7.8) */

/* Cold fallback boundary for an n-token prompt: if n > min + trim, s = n -
 * trim rounded down to a multiple of align (align > 0); s if s >= min, else
 * n. trim 32, min 512, align 2048: 11011 -> 10240, 1695 -> 1695. */
int ds4_kvdisk_store_len(const ds4_kvdisk_opts *o, int n);
/* ceil(interval / align) * align, or interval when align is 0. */
int ds4_kvdisk_continued_step(const ds4_kvdisk_opts *o);
/* L when L >= min, L is a multiple of the step and L > last_store; else -1. */
int ds4_kvdisk_continued_target(const ds4_kvdisk_opts *o, int live_len, int last_store);
/* Index of the last `user_id` token before the first `assistant_id` token (or
 * before the end when there is none); -1 when that is below min_tokens, when
 * there is no such token, or when an id is negative. The cold checkpoint then
 * covers tokens[0..anchor): the shared BOS/system/tools prefix of an agent. */
int ds4_kvdisk_chat_anchor(const int32_t *tokens, int n, int32_t user_id, int32_t assistant_id, int min_tokens);
/* Cold boundary of §7.8: -1 unless min <= n <= cold_max; else the chat anchor
 * when it qualifies, else store_len(n). The caller prefills to the boundary,
 * stores a cold checkpoint, then prefills the rest. */
int ds4_kvdisk_cold_boundary(const ds4_kvdisk_opts *o, const int32_t *tokens, int n, int32_t user_id,
                             int32_t assistant_id);

/* The continued-save schedule of the live session: the position of the last
 * cold/continued store. Zero-initialize. */
typedef struct ds4_kvdisk_sched {
    int last_store;
} ds4_kvdisk_sched;

/* A new cold request (no reuse of any kind): back to 0. */
void ds4_kvdisk_sched_reset(ds4_kvdisk_sched *s);
/* After reusing a state of `len` tokens (disk hit, live prefix): resume from it. */
void ds4_kvdisk_sched_resume(ds4_kvdisk_sched *s, int len);
/* The continued store due at live length L, or -1 (ds4_kvdisk_continued_target). */
int ds4_kvdisk_sched_due(const ds4_kvdisk_opts *o, const ds4_kvdisk_sched *s, int live_len);
/* A continued store at `pos` was attempted: do not attempt it again. */
void ds4_kvdisk_sched_mark(ds4_kvdisk_sched *s, int pos);
/* Around a cold store at `boundary`: begin marks the boundary stored (so a
 * continued frontier at the same position is not stored twice) and returns
 * the previous mark; end puts that mark back when the cold store failed or
 * was skipped (so the continued store still happens). */
int ds4_kvdisk_sched_cold_begin(ds4_kvdisk_sched *s, int boundary);
void ds4_kvdisk_sched_cold_end(ds4_kvdisk_sched *s, int previous, bool stored);

#endif
