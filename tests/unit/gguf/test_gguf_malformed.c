/* GGUF reader against malformed files: each case starts from a valid small
 * file (or hand-built bytes), breaks one thing, and checks that gguf_open
 * fails with a message that names the problem and the path. Built under
 * ASan+UBSan as well, so any out-of-bounds read is caught. */
#include "test_util.h"

#include <sys/stat.h>
#include <unistd.h>

#include "gguf/gguf.h"
#include "gguf_builder.h"

/* ---------------------------------------------------------------- the valid base file
 *
 *   header            n_tensors = 2, n_kv = 2
 *   kv #0             "general.architecture" = string "deepseek4"
 *   kv #1             "test.arr" = array of u32 [1, 2, 3]
 *   tensor info #0    "a": f32 [32, 2], offset 0   (256 bytes)
 *   tensor info #1    "b": q8_0 [32],   offset 256 (34 bytes)
 *   padding to 32, data (290 bytes)
 *
 * The layout struct records where each field is, for patching. */
typedef struct layout {
    size_t kv0, kv0_type, kv0_val;           /* key length, value type, string length */
    size_t kv1, kv1_type, kv1_et, kv1_n;     /* key length, value type, elem type, count */
    size_t t[2], t_ndims[2], t_dims[2], t_type[2], t_off[2];
    size_t data_start, total;
} layout;

static void build_base(gb *b, layout *L) {
    *b = (gb){0};
    gb_header(b, 2, 2);
    L->kv0 = b->n;
    gb_str(b, "general.architecture");
    L->kv0_type = b->n;
    gb_u32(b, GGUF_STRING);
    L->kv0_val = b->n;
    gb_str(b, "deepseek4");
    L->kv1 = b->n;
    gb_str(b, "test.arr");
    L->kv1_type = b->n;
    gb_u32(b, GGUF_ARRAY);
    L->kv1_et = b->n;
    gb_u32(b, GGUF_U32);
    L->kv1_n = b->n;
    gb_u64(b, 3);
    gb_u32(b, 1);
    gb_u32(b, 2);
    gb_u32(b, 3);
    const char *names[2] = {"a", "b"};
    const uint64_t dims[2][2] = {{32, 2}, {32, 1}};
    const uint32_t nd[2] = {2, 1}, types[2] = {DS4_TYPE_F32, DS4_TYPE_Q8_0};
    const uint64_t offs[2] = {0, 256};
    for (int i = 0; i < 2; i++) {
        L->t[i] = b->n;
        gb_str(b, names[i]);
        L->t_ndims[i] = b->n;
        gb_u32(b, nd[i]);
        L->t_dims[i] = b->n;
        for (uint32_t d = 0; d < nd[i]; d++) gb_u64(b, dims[i][d]);
        L->t_type[i] = b->n;
        gb_u32(b, types[i]);
        L->t_off[i] = b->n;
        gb_u64(b, offs[i]);
    }
    gb_pad(b, 32);
    L->data_start = b->n;
    for (int i = 0; i < 290; i++) gb_u8(b, (uint8_t)i);
    L->total = b->n;
}

static void put32(gb *b, size_t at, uint32_t v) {
    for (int i = 0; i < 4; i++) b->p[at + (size_t)i] = (uint8_t)(v >> (8 * i));
}
static void put64(gb *b, size_t at, uint64_t v) {
    for (int i = 0; i < 8; i++) b->p[at + (size_t)i] = (uint8_t)(v >> (8 * i));
}

/* ---------------------------------------------------------------- expectation */

/* Open bytes[0..n) from a temp file: must fail, with a message that names
 * the path and contains every keyword (NULL-terminated list). */
static void expect_fail_kw(const void *bytes, size_t n, const char *name, const char *const *kw) {
    const char *path = write_tmp(name, bytes, n);
    ds4_err err;
    memset(&err, 0, sizeof(err));
    gguf_file *f = gguf_open(path, &err);
    if (f) {
        gguf_close(f);
        fail_msg("%s: gguf_open succeeded on a malformed file", name);
    }
    if (!err.msg[0]) fail_msg("%s: empty error message", name);
    if (!strstr(err.msg, path)) fail_msg("%s: message does not name the path: %s", name, err.msg);
    for (; *kw; kw++)
        if (!strstr(err.msg, *kw)) fail_msg("%s: message lacks '%s': %s", name, *kw, err.msg);
    printf("  %-28s %s\n", name, err.msg + strlen(path) + 2);
    /* The same file with a NULL err must fail just as quietly. */
    assert_null(gguf_open(path, NULL));
}

#define EXPECT_FAIL(bytes, n, name, ...)                                     \
    do {                                                                     \
        const char *const kw_[] = {__VA_ARGS__, NULL};                       \
        expect_fail_kw((bytes), (n), (name), kw_);                          \
    } while (0)

/* Break the base file with `patch`, expect failure. */
#define BASE_CASE(name, patch, ...)                 \
    do {                                            \
        gb b_;                                      \
        layout L;                                   \
        build_base(&b_, &L);                        \
        gb *b = &b_;                                \
        (void)b;                                    \
        patch;                                      \
        EXPECT_FAIL(b_.p, b_.n, (name), __VA_ARGS__); \
        gb_free(&b_);                               \
    } while (0)

/* ---------------------------------------------------------------- sanity: the base is valid */

static void test_base_is_valid(void **state) {
    (void)state;
    gb b;
    layout L;
    build_base(&b, &L);
    ds4_err err = {{0}};
    gguf_file *f = gguf_open(gb_save(&b, "base.gguf"), &err);
    if (!f) fail_msg("%s", err.msg);
    assert_int_equal(f->data_start, L.data_start);
    assert_int_equal(f->n_tensors, 2);
    assert_int_equal(gguf_find_tensor(f, "b")->size, 34);
    gguf_close(f);
    gb_free(&b);
}

/* ---------------------------------------------------------------- truncation */

static void test_truncated(void **state) {
    (void)state;
    EXPECT_FAIL("", 0, "empty_file", "truncated");
    BASE_CASE("trunc_header", b->n = 20, "truncated", "header");
    /* Cut early, the counts in the header no longer fit: caught before parsing. */
    BASE_CASE("trunc_in_key", b->n = L.kv0 + 8 + 5, "truncated", "n_kv = 2");
    BASE_CASE("trunc_in_key_len", b->n = L.kv1 + 3, "truncated");
    /* A file whose counts fit but whose key is cut: caught by the key itself. */
    gb k = {0};
    gb_header(&k, 0, 1);
    gb_u64(&k, 40);
    gb_bytes(&k, "general.architecture.but.cut", 28);
    EXPECT_FAIL(k.p, k.n, "trunc_in_key_bytes", "truncated file: metadata record #0: key ends at byte 72");
    gb_free(&k);
    BASE_CASE("trunc_in_value_type", b->n = L.kv0_type + 2, "truncated");
    BASE_CASE("trunc_in_str_value", b->n = L.kv0_val + 8 + 4, "truncated");
    BASE_CASE("trunc_in_array", b->n = L.kv1_n + 8 + 6, "truncated");
    BASE_CASE("trunc_in_tensor_name", b->n = L.t[1] + 8, "truncated");
    BASE_CASE("trunc_in_tensor_dims", b->n = L.t_dims[0] + 12, "truncated");
    BASE_CASE("trunc_in_tensor_offset", b->n = L.t_off[1] + 7, "truncated");
    /* Files whose counts fit, cut inside a value / a tensor info: the message
     * names the record and the field. */
    k = (gb){0};
    gb_header(&k, 0, 1);
    gb_key(&k, "general.description", GGUF_STRING);
    gb_u64(&k, 100);
    gb_bytes(&k, "only forty bytes of the hundred promised", 40);
    EXPECT_FAIL(k.p, k.n, "trunc_in_str_value_detail",
                "truncated file: metadata record #0 ('general.description'): string ends at byte");
    gb_free(&k);
    k = (gb){0};
    gb_header(&k, 0, 1);
    gb_key(&k, "tokenizer.ggml.scores", GGUF_ARRAY);
    gb_u32(&k, GGUF_F32);
    gb_u64(&k, 16);
    for (int i = 0; i < 15; i++) gb_f32(&k, (float)i);
    EXPECT_FAIL(k.p, k.n, "trunc_in_array_detail",
                "truncated file: metadata record #0 ('tokenizer.ggml.scores'): array of 16 f32");
    gb_free(&k);
    k = (gb){0};
    gb_header(&k, 1, 0);
    gb_str(&k, "blk.0.attn_q_a.weight.with.a.long.name");
    gb_u32(&k, 3);
    gb_u64(&k, 32);
    gb_u64(&k, 32);
    EXPECT_FAIL(k.p, k.n, "trunc_in_tensor_dims_detail",
                "truncated file: tensor info #0 ('blk.0.attn_q_a.weight.with.a.long.name'): dims");
    gb_u64(&k, 32);
    gb_u32(&k, DS4_TYPE_F32);
    gb_u32(&k, 0); /* half of the offset */
    EXPECT_FAIL(k.p, k.n, "trunc_in_tensor_offset_detail", "truncated file: tensor info #0", "offset");
    gb_free(&k);
    BASE_CASE("trunc_data_one_byte", b->n = L.total - 1, "'b'", "past the end");
    BASE_CASE("trunc_data_all", b->n = L.data_start, "'a'", "past the end");
    /* Cut inside the padding before the data section. */
    BASE_CASE("trunc_in_padding", b->n = L.t_off[1] + 8 + ((L.data_start - L.t_off[1] - 8) > 1 ? 1 : 0),
              "past the end");
}

/* Every prefix of a valid file must fail cleanly (the last tensor ends at EOF). */
static void test_every_truncation(void **state) {
    (void)state;
    gb b;
    layout L;
    build_base(&b, &L);
    for (size_t n = 0; n < L.total; n++) {
        const char *path = write_tmp("prefix.gguf", b.p, n);
        ds4_err err = {{0}};
        gguf_file *f = gguf_open(path, &err);
        if (f) fail_msg("prefix of %zu bytes opened", n);
        assert_true(err.msg[0] != 0);
    }
    gb_free(&b);
}

/* ---------------------------------------------------------------- header */

static void test_header(void **state) {
    (void)state;
    BASE_CASE("bad_magic", put32(b, 0, 0x12345678), "bad magic 0x12345678");
    BASE_CASE("magic_big_endian", put32(b, 0, 0x47475546), "magic");
    BASE_CASE("version_2", put32(b, 4, 2), "unsupported GGUF version 2");
    BASE_CASE("version_4", put32(b, 4, 4), "version 4");
    BASE_CASE("n_kv_2^60", put64(b, 16, (uint64_t)1 << 60), "n_kv = 1152921504606846976");
    BASE_CASE("n_kv_max", put64(b, 16, UINT64_MAX), "n_kv");
    BASE_CASE("n_tensors_2^60", put64(b, 8, (uint64_t)1 << 60), "n_tensors = 1152921504606846976");
    BASE_CASE("n_tensors_3", put64(b, 8, 3), "truncated"); /* third info would start in the data */
    BASE_CASE("n_kv_3", put64(b, 16, 3), "truncated"); /* record #2 parsed from tensor infos */
}

/* ---------------------------------------------------------------- metadata */

static void test_metadata(void **state) {
    (void)state;
    BASE_CASE("key_len_2^63", put64(b, L.kv0, (uint64_t)1 << 63), "truncated", "metadata record #0", "key");
    BASE_CASE("key_len_max", put64(b, L.kv0, UINT64_MAX), "truncated", "key");
    BASE_CASE("str_len_2^63", put64(b, L.kv0_val, (uint64_t)1 << 63), "truncated", "string");
    BASE_CASE("str_len_filesize", put64(b, L.kv0_val, L.total), "truncated", "string");
    BASE_CASE("array_count_2^62", put64(b, L.kv1_n, (uint64_t)1 << 62), "truncated", "array of 4611686018427387904");
    BASE_CASE("array_count_max", put64(b, L.kv1_n, UINT64_MAX), "truncated", "array");
    BASE_CASE("array_of_strings_huge", (put32(b, L.kv1_et, GGUF_STRING), put64(b, L.kv1_n, (uint64_t)1 << 61)),
              "truncated", "string elements");
    BASE_CASE("array_of_arrays_huge", (put32(b, L.kv1_et, GGUF_ARRAY), put64(b, L.kv1_n, (uint64_t)1 << 61)),
              "truncated", "array elements");
    BASE_CASE("unknown_value_type", put32(b, L.kv0_type, 13), "unknown value type 13", "general.architecture");
    BASE_CASE("unknown_value_type_max", put32(b, L.kv0_type, 0xffffffffu), "unknown value type 4294967295");
    BASE_CASE("unknown_array_elem_type", put32(b, L.kv1_et, 99), "unknown array element type 99", "test.arr");
    BASE_CASE("key_with_nul", b->p[L.kv0 + 8 + 3] = 0, "NUL", "metadata record #0");
}

/* Duplicate keys / empty key / bools / nesting need hand-built files. */
static void test_metadata_built(void **state) {
    (void)state;
    gb b = {0};

    gb_header(&b, 0, 2);
    gb_kv_u32(&b, "same.key", 1);
    gb_kv_u32(&b, "same.key", 2);
    EXPECT_FAIL(b.p, b.n, "dup_key", "duplicate metadata key 'same.key'", "#0", "#1");
    gb_free(&b);

    gb_header(&b, 0, 3);
    gb_kv_u32(&b, "zz", 1);
    gb_kv_u32(&b, "aa", 1);
    gb_kv_u32(&b, "zz", 2);
    EXPECT_FAIL(b.p, b.n, "dup_key_not_adjacent", "duplicate metadata key 'zz'");
    gb_free(&b);

    gb_header(&b, 0, 1);
    gb_kv_u32(&b, "", 1);
    EXPECT_FAIL(b.p, b.n, "empty_key", "empty key");
    gb_free(&b);

    gb_header(&b, 0, 1);
    gb_key(&b, "flag", GGUF_BOOL);
    gb_u8(&b, 2);
    gb_zeros(&b, 16);
    EXPECT_FAIL(b.p, b.n, "bool_value_2", "bool value 2", "'flag'");
    gb_free(&b);

    gb_header(&b, 0, 1);
    gb_key(&b, "flags", GGUF_ARRAY);
    gb_u32(&b, GGUF_BOOL);
    gb_u64(&b, 3);
    gb_u8(&b, 0);
    gb_u8(&b, 1);
    gb_u8(&b, 255);
    EXPECT_FAIL(b.p, b.n, "bool_array_255", "bool array element 2 is 255");
    gb_free(&b);

    /* Five levels of arrays: one deeper than allowed. */
    gb_header(&b, 0, 1);
    gb_key(&b, "deep", GGUF_ARRAY);
    for (int i = 0; i < 4; i++) {
        gb_u32(&b, GGUF_ARRAY);
        gb_u64(&b, 1);
    }
    gb_u32(&b, GGUF_U8);
    gb_u64(&b, 1);
    gb_u8(&b, 7);
    EXPECT_FAIL(b.p, b.n, "array_nested_too_deep", "nested more than 4");
    gb_free(&b);

    /* Unknown element type inside a nested array. */
    gb_header(&b, 0, 1);
    gb_key(&b, "nest", GGUF_ARRAY);
    gb_u32(&b, GGUF_ARRAY);
    gb_u64(&b, 1);
    gb_u32(&b, 42);
    gb_u64(&b, 0);
    EXPECT_FAIL(b.p, b.n, "nested_unknown_elem_type", "unknown array element type 42");
    gb_free(&b);

    /* A string inside an array that runs past the end. */
    gb_header(&b, 0, 1);
    gb_key(&b, "toks", GGUF_ARRAY);
    gb_u32(&b, GGUF_STRING);
    gb_u64(&b, 2);
    gb_str(&b, "ok");
    gb_u64(&b, 1000);
    gb_bytes(&b, "short", 5);
    EXPECT_FAIL(b.p, b.n, "string_in_array_truncated", "truncated", "'toks'");
    gb_free(&b);
}

/* general.alignment must be a u32 power of two in 1..65536. */
static void align_file(gb *b, uint32_t vtype, uint64_t value) {
    *b = (gb){0};
    gb_header(b, 1, 1);
    gb_key(b, "general.alignment", vtype);
    if (vtype == GGUF_U64) gb_u64(b, value);
    else if (vtype == GGUF_STRING) gb_str(b, "32");
    else gb_u32(b, (uint32_t)value);
    uint64_t d[1] = {8};
    gb_tensor(b, "t", 1, d, DS4_TYPE_F32, 0);
    gb_pad(b, 64);
    gb_zeros(b, 32);
}

static void test_alignment(void **state) {
    (void)state;
    gb b;
    align_file(&b, GGUF_U32, 0);
    EXPECT_FAIL(b.p, b.n, "alignment_0", "general.alignment = 0");
    gb_free(&b);
    align_file(&b, GGUF_U32, 3);
    EXPECT_FAIL(b.p, b.n, "alignment_3", "general.alignment = 3", "power of two");
    gb_free(&b);
    align_file(&b, GGUF_U32, 48);
    EXPECT_FAIL(b.p, b.n, "alignment_48", "general.alignment = 48");
    gb_free(&b);
    align_file(&b, GGUF_U32, 131072);
    EXPECT_FAIL(b.p, b.n, "alignment_131072", "general.alignment = 131072");
    gb_free(&b);
    align_file(&b, GGUF_U64, 32);
    EXPECT_FAIL(b.p, b.n, "alignment_u64", "general.alignment has type u64, expected u32");
    gb_free(&b);
    align_file(&b, GGUF_STRING, 0);
    EXPECT_FAIL(b.p, b.n, "alignment_string", "general.alignment has type string");
    gb_free(&b);
    align_file(&b, GGUF_I32, 32);
    EXPECT_FAIL(b.p, b.n, "alignment_i32", "expected u32");
    gb_free(&b);
    /* Control: alignment 64 (u32) is fine. */
    align_file(&b, GGUF_U32, 64);
    gguf_file *f = gguf_open(gb_save(&b, "align64.gguf"), NULL);
    assert_non_null(f);
    assert_int_equal(f->alignment, 64);
    assert_int_equal(f->data_start, 128); /* infos end at byte 90 */
    gguf_close(f);
    gb_free(&b);
}

/* ---------------------------------------------------------------- tensor infos */

/* A file with one tensor info (given raw), padded, with `data` bytes of data. */
static void one_tensor(gb *b, const char *name, size_t name_len, uint32_t n_dims, const uint64_t *dims,
                       uint32_t type, uint64_t offset, size_t data) {
    *b = (gb){0};
    gb_header(b, 1, 0);
    gb_strn(b, name, name_len);
    gb_u32(b, n_dims);
    for (uint32_t i = 0; i < n_dims; i++) gb_u64(b, dims[i]);
    gb_u32(b, type);
    gb_u64(b, offset);
    gb_pad(b, 32);
    gb_zeros(b, data);
}

static void test_tensor_infos(void **state) {
    (void)state;
    gb tb;
    const uint64_t d32[9] = {32, 1, 1, 1, 1, 1, 1, 1, 1};

    BASE_CASE("unknown_tensor_type", put32(b, L.t_type[0], 99), "tensor 'a' has unknown type 99");
    BASE_CASE("tensor_type_q8_K", put32(b, L.t_type[1], 15), "unknown type 15");
    BASE_CASE("tensor_type_max", put32(b, L.t_type[1], 0xffffffffu), "unknown type 4294967295");
    BASE_CASE("n_dims_0", put32(b, L.t_ndims[0], 0), "tensor 'a' has 0 dimensions");
    BASE_CASE("n_dims_huge", put32(b, L.t_ndims[0], 0x7fffffff), "2147483647 dimensions");
    BASE_CASE("dim_0", put64(b, L.t_dims[0] + 8, 0), "tensor 'a': dimension 1 is 0");
    BASE_CASE("ne0_not_block_multiple", put64(b, L.t_dims[1], 48), "tensor 'b'",
              "not a multiple of the q8_0 block size (32)");
    BASE_CASE("tensor_name_nul", b->p[L.t[1] + 8] = 0, "tensor info #1", "NUL");
    BASE_CASE("dup_tensor_name", b->p[L.t[1] + 8] = 'a', "duplicate tensor name 'a'");
    BASE_CASE("offset_unaligned", put64(b, L.t_off[1], 264), "tensor 'b': offset 264", "alignment (32)");
    BASE_CASE("offset_out_of_range", put64(b, L.t_off[1], (uint64_t)1 << 40), "tensor 'b'", "past the end");
    BASE_CASE("offset_max_aligned", put64(b, L.t_off[1], UINT64_MAX - 31), "tensor 'b'", "past the end");
    BASE_CASE("offset_just_past", put64(b, L.t_off[1], 288), "past the end");
    BASE_CASE("overlap", put64(b, L.t_off[1], 224), "tensors 'a' and 'b' overlap");
    BASE_CASE("overlap_same_offset", put64(b, L.t_off[1], 0), "overlap");
    /* b sorts first by offset: b = [0, 34), a = [32, 288). */
    BASE_CASE("overlap_reversed", (put64(b, L.t_off[0], 32), put64(b, L.t_off[1], 0)),
              "tensors 'b' and 'a' overlap");

    one_tensor(&tb, "t", 1, 9, d32, DS4_TYPE_F32, 0, 128);
    EXPECT_FAIL(tb.p, tb.n, "n_dims_9", "tensor 't' has 9 dimensions (expected 1..4)");
    gb_free(&tb);
    one_tensor(&tb, "t", 1, 5, d32, DS4_TYPE_F32, 0, 128);
    EXPECT_FAIL(tb.p, tb.n, "n_dims_5", "has 5 dimensions");
    gb_free(&tb);

    const uint64_t ovf[3] = {1u << 31, 1u << 31, 1u << 31}; /* 2^93 elements */
    one_tensor(&tb, "t", 1, 3, ovf, DS4_TYPE_F32, 0, 128);
    EXPECT_FAIL(tb.p, tb.n, "dims_product_overflow", "element count overflows", "dimension 2");
    gb_free(&tb);

    const uint64_t big[1] = {(uint64_t)1 << 63};
    one_tensor(&tb, "t", 1, 1, big, DS4_TYPE_F32, 0, 128);
    EXPECT_FAIL(tb.p, tb.n, "dim_2^63", "dimension 0", "too large");
    gb_free(&tb);

    const uint64_t bytes_ovf[1] = {(uint64_t)1 << 62}; /* 2^62 f32 = 2^64 bytes */
    one_tensor(&tb, "t", 1, 1, bytes_ovf, DS4_TYPE_F32, 0, 128);
    EXPECT_FAIL(tb.p, tb.n, "byte_size_overflow", "byte size overflows");
    gb_free(&tb);

    const uint64_t d255[1] = {255};
    one_tensor(&tb, "t", 1, 1, d255, DS4_TYPE_IQ2_XXS, 0, 128);
    EXPECT_FAIL(tb.p, tb.n, "ne0_not_iq2_block", "iq2_xxs block size (256)");
    gb_free(&tb);

    one_tensor(&tb, "", 0, 1, d32, DS4_TYPE_F32, 0, 128);
    EXPECT_FAIL(tb.p, tb.n, "tensor_name_empty", "tensor info #0 has an empty name");
    gb_free(&tb);

    char longname[300];
    memset(longname, 'x', sizeof(longname));
    one_tensor(&tb, longname, sizeof(longname), 1, d32, DS4_TYPE_F32, 0, 128);
    EXPECT_FAIL(tb.p, tb.n, "tensor_name_too_long", "300 bytes is too long (at most 256)");
    gb_free(&tb);

    /* Tensor info claims more name bytes than the file holds. */
    tb = (gb){0};
    gb_header(&tb, 1, 0);
    gb_u64(&tb, (uint64_t)1 << 63);
    gb_zeros(&tb, 40);
    EXPECT_FAIL(tb.p, tb.n, "tensor_name_len_2^63", "truncated", "tensor info #0", "name");
    gb_free(&tb);

    /* Three tensors, a big one containing a small one that is not its neighbour in file order. */
    tb = (gb){0};
    gb_header(&tb, 3, 0);
    const uint64_t d_small[1] = {8}, d_big[1] = {256};
    gb_tensor(&tb, "s1", 1, d_small, DS4_TYPE_F32, 1024 + 64);
    gb_tensor(&tb, "big", 1, d_big, DS4_TYPE_F32, 0);
    gb_tensor(&tb, "s2", 1, d_small, DS4_TYPE_F32, 512);
    gb_pad(&tb, 32);
    gb_zeros(&tb, 2048);
    EXPECT_FAIL(tb.p, tb.n, "overlap_contained", "tensors 'big' and 's2' overlap");
    gb_free(&tb);

    /* Dup names that are not adjacent in file order. */
    tb = (gb){0};
    gb_header(&tb, 3, 0);
    gb_tensor(&tb, "x", 1, d_small, DS4_TYPE_F32, 0);
    gb_tensor(&tb, "m", 1, d_small, DS4_TYPE_F32, 32);
    gb_tensor(&tb, "x", 1, d_small, DS4_TYPE_F32, 64);
    gb_pad(&tb, 32);
    gb_zeros(&tb, 96);
    EXPECT_FAIL(tb.p, tb.n, "dup_tensor_name_far", "duplicate tensor name 'x'", "#0 and #2");
    gb_free(&tb);
}

/* ---------------------------------------------------------------- files that are not GGUF files */

static void test_not_files(void **state) {
    (void)state;
    ds4_err err = {{0}};
    char path[4200];
    snprintf(path, sizeof(path), "%s/does-not-exist.gguf", test_tmp_dir());
    assert_null(gguf_open(path, &err));
    assert_non_null(strstr(err.msg, "cannot open"));
    assert_non_null(strstr(err.msg, path));
    printf("  %-28s %s\n", "missing_file", err.msg);

    assert_null(gguf_open(test_tmp_dir(), &err));
    assert_non_null(strstr(err.msg, "not a regular file"));
    printf("  %-28s %s\n", "directory", err.msg);

    assert_null(gguf_open(NULL, &err));
    assert_true(err.msg[0] != 0);

    /* A text file. */
    const char txt[] = "this is not a gguf file, just some text long enough";
    EXPECT_FAIL(txt, sizeof(txt) - 1, "text_file", "bad magic");
}

/* ---------------------------------------------------------------- mutation sweep
 *
 * Every byte of the header/metadata/infos of the base file set to several
 * values: the reader may accept or reject, but must never read out of bounds
 * (ASan) and, when it accepts, every tensor must lie inside the file. */
static void test_mutation_sweep(void **state) {
    (void)state;
    gb b;
    layout L;
    build_base(&b, &L);
    const uint8_t vals[] = {0x00, 0x01, 0x02, 0x1f, 0x20, 0x7f, 0x80, 0xfe, 0xff};
    int accepted = 0, rejected = 0;
    for (size_t at = 0; at < L.data_start; at++) {
        uint8_t orig = b.p[at];
        for (size_t v = 0; v < sizeof(vals); v++) {
            if (vals[v] == orig) continue;
            b.p[at] = vals[v];
            const char *path = gb_save(&b, "mut.gguf");
            ds4_err err = {{0}};
            gguf_file *f = gguf_open(path, &err);
            if (!f) {
                assert_true(err.msg[0] != 0);
                rejected++;
                continue;
            }
            accepted++;
            for (uint64_t i = 0; i < f->n_tensors; i++) {
                const gguf_tensor *t = &f->tensors[i];
                assert_true(f->data_start + t->offset + t->size <= f->file_size);
                assert_ptr_equal(gguf_find_tensor(f, t->name), t);
            }
            for (uint64_t i = 0; i < f->n_kv; i++) assert_ptr_equal(gguf_find_kv(f, f->kv[i].key), &f->kv[i]);
            gguf_close(f);
        }
        b.p[at] = orig;
    }
    printf("  mutation sweep: %d accepted, %d rejected\n", accepted, rejected);
    assert_true(rejected > 0);
    gb_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base_is_valid),   cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_every_truncation), cmocka_unit_test(test_header),
        cmocka_unit_test(test_metadata),        cmocka_unit_test(test_metadata_built),
        cmocka_unit_test(test_alignment),       cmocka_unit_test(test_tensor_infos),
        cmocka_unit_test(test_not_files),       cmocka_unit_test(test_mutation_sweep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
