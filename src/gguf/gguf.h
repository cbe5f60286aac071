/* ds4 — GGUF v3 container: a validating, zero-copy reader (mmap) and a writer.
 *
 * The reader trusts nothing in the file. Every count, length, offset and size
 * is checked against the file size before it is used, with overflow-safe
 * arithmetic, so a truncated, corrupt or hostile file produces an error that
 * names what is wrong (which key, which tensor, which field) and never a
 * crash or an out-of-bounds read. Tensor data is never touched by the reader:
 * a header-only file whose data region is a hole (sparse file) opens fine.
 *
 * This layer knows the container and the block formats; it does not interpret
 * tensor names (that is src/model/). */
#ifndef DS4_GGUF_GGUF_H
#define DS4_GGUF_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "util/err.h"

/* ---- ggml tensor types used by the published ds4 files (ids are GGUF's) ---- */
typedef enum ds4_type {
    DS4_TYPE_F32 = 0,
    DS4_TYPE_F16 = 1,
    DS4_TYPE_Q8_0 = 8,
    DS4_TYPE_Q2_K = 10,
    DS4_TYPE_Q4_K = 12,
    DS4_TYPE_IQ2_XXS = 16,
    DS4_TYPE_I32 = 26,
    DS4_TYPE_BF16 = 30,
} ds4_type;

/* ---- GGUF metadata value types ---- */
typedef enum gguf_vtype {
    GGUF_U8 = 0,
    GGUF_I8 = 1,
    GGUF_U16 = 2,
    GGUF_I16 = 3,
    GGUF_U32 = 4,
    GGUF_I32 = 5,
    GGUF_F32 = 6,
    GGUF_BOOL = 7,
    GGUF_STRING = 8,
    GGUF_ARRAY = 9,
    GGUF_U64 = 10,
    GGUF_I64 = 11,
    GGUF_F64 = 12,
} gguf_vtype;

#define GGUF_MAGIC 0x46554747u /* "GGUF" little-endian */
#define GGUF_VERSION 3u
#define GGUF_DEFAULT_ALIGNMENT 32u
#define GGUF_MAX_DIMS 4 /* ds4 tensors use 1..3; the format allows up to 8, we accept up to 4 */

/* Limits the reader (and the writer) enforce; the format itself is looser.
 * Anything beyond them is rejected with a message, never truncated. */
#define GGUF_MAX_ALIGNMENT 65536u  /* general.alignment: a power of two in 1..65536 */
#define GGUF_MAX_KEY_LEN 65535u    /* metadata key bytes (GGUF's own limit) */
#define GGUF_MAX_NAME_LEN 256u     /* tensor name bytes (ds4 names are < 64) */
#define GGUF_MAX_ARRAY_DEPTH 4     /* array nesting: 1 = array of scalars/strings */

/* A string inside the mapped file: NOT NUL-terminated. */
typedef struct gguf_str {
    const char *ptr;
    uint64_t len;
} gguf_str;

typedef struct gguf_kv {
    char *key;            /* NUL-terminated copy (keys with an embedded NUL are rejected) */
    gguf_vtype type;      /* value type; GGUF_ARRAY for arrays */
    gguf_vtype arr_type;  /* element type when type == GGUF_ARRAY */
    uint64_t arr_n;       /* element count when type == GGUF_ARRAY */
    const uint8_t *data;  /* points into the mapping: the value bytes (for arrays: the first element) */
    uint64_t data_bytes;  /* bytes of the value (for arrays: of all elements) */
} gguf_kv;

typedef struct gguf_tensor {
    char *name;            /* NUL-terminated copy */
    uint32_t n_dims;       /* 1..GGUF_MAX_DIMS */
    int64_t ne[GGUF_MAX_DIMS]; /* ne[0] fastest; unused dims are 1 */
    ds4_type type;
    uint64_t offset;       /* relative to the data section */
    uint64_t size;         /* bytes, from the type's block size */
    const void *data;      /* data_start + offset inside the mapping */
} gguf_tensor;

typedef struct gguf_file {
    char *path;
    int fd;
    const uint8_t *map; /* whole file, read-only */
    uint64_t file_size;
    uint32_t version;
    uint32_t alignment;
    uint64_t data_start;
    uint64_t n_kv;
    gguf_kv *kv;
    uint64_t n_tensors;
    gguf_tensor *tensors;
    /* sorted index for name lookup (private to gguf_read.c) */
    uint64_t *name_order;
    /* sorted index for key lookup (private to gguf_read.c) */
    uint64_t *kv_order;
} gguf_file;

/* ---------------------------------------------------------------- reader */

/* Map and validate a GGUF v3 file. On failure returns NULL and fills err with a
 * message such as "tensor 'blk.3.attn_q_b.weight': data [off, off+size) ends past
 * the end of the file (N bytes)". */
gguf_file *gguf_open(const char *path, ds4_err *err);
void gguf_close(gguf_file *f);

/* Metadata lookup (exact key). NULL if absent. */
const gguf_kv *gguf_find_kv(const gguf_file *f, const char *key);
/* Tensor lookup (exact name). NULL if absent. */
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name);

/* Typed scalar getters. Each returns 0 on success, -1 with err filled when the
 * key is missing or has a type that cannot represent the value exactly
 * ("key 'deepseek4.block_count' has type f32, expected an unsigned integer").
 * gguf_get_uint accepts u8/u16/u32/u64 and non-negative i8/i16/i32/i64;
 * gguf_get_float accepts f32/f64/u32/i32 (what ds4 calls "f32-ish"). */
int gguf_get_uint(const gguf_file *f, const char *key, uint64_t *out, ds4_err *err);
int gguf_get_float(const gguf_file *f, const char *key, double *out, ds4_err *err);
int gguf_get_bool(const gguf_file *f, const char *key, bool *out, ds4_err *err);
int gguf_get_str(const gguf_file *f, const char *key, gguf_str *out, ds4_err *err);

/* Element access for numeric arrays (u8..i64, f32, f64, bool). Index must be < arr_n.
 * Returns 0 on success, -1 if the key is not an array of a compatible type. */
int gguf_arr_get_int(const gguf_kv *kv, uint64_t i, int64_t *out);
int gguf_arr_get_float(const gguf_kv *kv, uint64_t i, double *out);

/* String arrays (e.g. tokenizer.ggml.tokens): fills a newly allocated array of
 * arr_n gguf_str (free() it) pointing into the mapping. All lengths were
 * validated at open time. Returns -1 with err if kv is not an array of strings. */
int gguf_arr_strings(const gguf_kv *kv, gguf_str **out, ds4_err *err);

/* Human-readable names. */
const char *gguf_vtype_name(gguf_vtype t);

/* Block geometry of a tensor type from the container's own table (the same
 * numbers as quant.h's ds4_type_info; kept here so the container layer does
 * not depend on the kernels). Returns 0 and fills *block (elements per block)
 * and *block_bytes (either may be NULL), or -1 for a type id it does not know. */
int gguf_type_block(int type, int64_t *block, uint64_t *block_bytes);
/* "f32", "q8_0", ... or NULL for an unknown id. */
const char *gguf_type_name(int type);

/* ---------------------------------------------------------------- writer
 *
 * Usage: create; add metadata; add tensor infos (name, type, dims); then
 * gguf_writer_write_header() writes the header, metadata, tensor infos and the
 * padding to `fd` at offset 0 and returns the absolute file offset of every
 * tensor (gguf_writer_tensor_offset). Tensor bytes are written by the caller
 * with pwrite() at those offsets, in any order and from any thread, so huge
 * files are streamed. gguf_writer_finish() extends the file to its full size
 * (ftruncate): a file whose tensors were never written is a valid
 * header-only file whose data region is a hole. */
typedef struct gguf_writer gguf_writer;

/* alignment 0 means GGUF_DEFAULT_ALIGNMENT; NULL for an alignment that is not a
 * power of two in 1..GGUF_MAX_ALIGNMENT (or out of memory). A non-default
 * alignment is recorded as general.alignment (u32) automatically. */
gguf_writer *gguf_writer_create(uint32_t alignment);
void gguf_writer_free(gguf_writer *w);

/* Metadata setters; keys are copied. Adding the same key twice is an error
 * reported by gguf_writer_write_header. */
void gguf_w_u32(gguf_writer *w, const char *key, uint32_t v);
void gguf_w_i32(gguf_writer *w, const char *key, int32_t v);
void gguf_w_u64(gguf_writer *w, const char *key, uint64_t v);
void gguf_w_f32(gguf_writer *w, const char *key, float v);
void gguf_w_f64(gguf_writer *w, const char *key, double v);
void gguf_w_bool(gguf_writer *w, const char *key, bool v);
void gguf_w_str(gguf_writer *w, const char *key, const char *v);
void gguf_w_str_n(gguf_writer *w, const char *key, const char *v, uint64_t len);
void gguf_w_arr_u32(gguf_writer *w, const char *key, const uint32_t *v, uint64_t n);
void gguf_w_arr_i32(gguf_writer *w, const char *key, const int32_t *v, uint64_t n);
void gguf_w_arr_f32(gguf_writer *w, const char *key, const float *v, uint64_t n);
/* strs[i] has lens[i] bytes (lens may be NULL for NUL-terminated strings). */
void gguf_w_arr_str(gguf_writer *w, const char *key, const char *const *strs, const uint64_t *lens, uint64_t n);

/* Copy a metadata record of an open file unchanged (any type). */
void gguf_w_copy(gguf_writer *w, const gguf_kv *kv);

/* Add a tensor; returns its index (0-based, in file order) or -1 on a bad
 * argument (unknown type, ne[0] not a multiple of the block size, too many dims). */
int64_t gguf_w_tensor(gguf_writer *w, const char *name, ds4_type type, uint32_t n_dims, const int64_t *ne);

/* Write everything up to the data section. Returns 0 or -1 with err. */
int gguf_writer_write_header(gguf_writer *w, int fd, ds4_err *err);
/* The three below are valid after a successful gguf_writer_write_header (0 before, or for a bad index). */
uint64_t gguf_writer_tensor_offset(const gguf_writer *w, int64_t index); /* absolute file offset */
uint64_t gguf_writer_tensor_size(const gguf_writer *w, int64_t index);
uint64_t gguf_writer_total_size(const gguf_writer *w);
/* ftruncate to the total size (creating a hole for unwritten data) and fsync. */
int gguf_writer_finish(gguf_writer *w, int fd, ds4_err *err);

/* Write all of `len` bytes at `offset` (loops over short writes). */
int gguf_pwrite_all(int fd, const void *buf, size_t len, uint64_t offset, ds4_err *err);

#endif
