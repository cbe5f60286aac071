/* GGUF reader/writer: round trips, every value type, lookups, alignments,
 * header-only (sparse) files, and writer-side argument errors. */
#include "test_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf/gguf.h"
#include "gguf/quant.h"
#include "gguf_builder.h"

/* ---------------------------------------------------------------- helpers */

static const char *tmp_path(const char *name) {
    static char buf[4][4096];
    static int k;
    k = (k + 1) & 3;
    int len = snprintf(buf[k], sizeof(buf[k]), "%s/%s", test_tmp_dir(), name);
    if (len < 0 || (size_t)len >= sizeof(buf[k])) abort();
    return buf[k];
}

static int open_out(const char *path) {
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    return fd;
}

static gguf_file *must_open(const char *path) {
    ds4_err err = {{0}};
    gguf_file *f = gguf_open(path, &err);
    if (!f) fail_msg("gguf_open(%s) failed: %s", path, err.msg);
    return f;
}

static void assert_str_eq(gguf_str s, const char *want, uint64_t want_len) {
    assert_int_equal(s.len, want_len);
    assert_memory_equal(s.ptr, want, want_len);
}

/* Deterministic tensor bytes: depend on the tensor index and position. */
static uint8_t pattern(int64_t t, uint64_t i) { return (uint8_t)(i * 31u + (uint64_t)t * 17u + (i >> 8)); }

/* ---------------------------------------------------------------- round trip */

typedef struct tdesc {
    const char *name;
    ds4_type type;
    uint32_t n_dims;
    int64_t ne[4];
    uint64_t size;
} tdesc;

static const tdesc k_tensors[] = {
    {"token_embd.weight", DS4_TYPE_F32, 2, {8, 3, 1, 1}, 8 * 3 * 4},
    {"blk.0.attn_norm.weight", DS4_TYPE_F16, 1, {64, 1, 1, 1}, 64 * 2},
    {"blk.0.attn_q.weight", DS4_TYPE_Q8_0, 2, {64, 2, 1, 1}, 4 * 34},
    {"blk.0.ffn_down_exps.weight", DS4_TYPE_Q2_K, 3, {256, 1, 3, 1}, 3 * 84},
    {"blk.0.ffn_up_exps.weight", DS4_TYPE_Q4_K, 3, {512, 1, 2, 1}, 4 * 144},
    {"blk.0.ffn_gate_exps.weight", DS4_TYPE_IQ2_XXS, 2, {256, 2, 1, 1}, 2 * 66},
    {"blk.0.hash_ids", DS4_TYPE_I32, 1, {5, 1, 1, 1}, 5 * 4},
    {"x.bf16.4d", DS4_TYPE_BF16, 4, {4, 4, 2, 3}, 96 * 2},
};
#define N_T (sizeof(k_tensors) / sizeof(k_tensors[0]))

static const char bin_str[] = {'a', 0, 'b', '\n', (char)0xff, 'z'};
static const uint32_t arr_u32[] = {0, 1, 4000000000u, 7};
static const int32_t arr_i32[] = {-5, 0, 2147483647, -2147483647 - 1};
static const float arr_f32[] = {1.5f, -0.0f, 3.25e-7f};

static void add_all_metadata(gguf_writer *w) {
    gguf_w_str(w, "general.architecture", "deepseek4");
    gguf_w_u32(w, "deepseek4.block_count", 43);
    gguf_w_i32(w, "test.i32", -123456);
    gguf_w_i32(w, "test.i32_pos", 77);
    gguf_w_u64(w, "test.u64", 0xfedcba9876543210ull);
    gguf_w_f32(w, "test.f32", 0.125f);
    gguf_w_f64(w, "test.f64", 3.141592653589793);
    gguf_w_bool(w, "test.true", true);
    gguf_w_bool(w, "test.false", false);
    gguf_w_str_n(w, "test.bin_str", bin_str, sizeof(bin_str));
    gguf_w_str(w, "test.empty_str", "");
    gguf_w_arr_u32(w, "test.arr_u32", arr_u32, 4);
    gguf_w_arr_i32(w, "test.arr_i32", arr_i32, 4);
    gguf_w_arr_f32(w, "test.arr_f32", arr_f32, 3);
    gguf_w_arr_u32(w, "test.arr_empty", NULL, 0);
    const char *toks[] = {"<s>", "", "hello", "\xe2\x96\x81world"};
    gguf_w_arr_str(w, "tokenizer.ggml.tokens", toks, NULL, 4);
    const char *bins[] = {bin_str, "xy", NULL};
    const uint64_t lens[] = {sizeof(bin_str), 1, 0};
    gguf_w_arr_str(w, "test.arr_bin_str", bins, lens, 3);
}

static void check_all_metadata(const gguf_file *f) {
    ds4_err err = {{0}};
    gguf_str s;
    uint64_t u;
    double d;
    bool b;

    assert_int_equal(gguf_get_str(f, "general.architecture", &s, &err), 0);
    assert_str_eq(s, "deepseek4", 9);
    assert_int_equal(gguf_get_uint(f, "deepseek4.block_count", &u, &err), 0);
    assert_int_equal(u, 43);
    assert_int_equal(gguf_get_float(f, "deepseek4.block_count", &d, &err), 0); /* u32 is f32-ish */
    assert_true(d == 43.0);
    /* negative i32: not an unsigned integer, but a float */
    assert_int_equal(gguf_get_uint(f, "test.i32", &u, &err), -1);
    assert_non_null(strstr(err.msg, "negative"));
    assert_int_equal(gguf_get_float(f, "test.i32", &d, &err), 0);
    assert_true(d == -123456.0);
    assert_int_equal(gguf_get_uint(f, "test.i32_pos", &u, &err), 0);
    assert_int_equal(u, 77);
    assert_int_equal(gguf_get_uint(f, "test.u64", &u, &err), 0);
    assert_true(u == 0xfedcba9876543210ull);
    assert_int_equal(gguf_get_float(f, "test.u64", &d, &err), -1); /* u64 is not f32-ish */
    assert_int_equal(gguf_get_float(f, "test.f32", &d, &err), 0);
    assert_true(d == 0.125);
    assert_int_equal(gguf_get_float(f, "test.f64", &d, &err), 0);
    assert_true(d == 3.141592653589793);
    assert_int_equal(gguf_get_bool(f, "test.true", &b, &err), 0);
    assert_true(b);
    assert_int_equal(gguf_get_bool(f, "test.false", &b, &err), 0);
    assert_false(b);
    assert_int_equal(gguf_get_str(f, "test.bin_str", &s, &err), 0);
    assert_str_eq(s, bin_str, sizeof(bin_str));
    assert_int_equal(gguf_get_str(f, "test.empty_str", &s, &err), 0);
    assert_int_equal(s.len, 0);

    /* Type errors name the key, its type and what was expected. */
    assert_int_equal(gguf_get_uint(f, "test.f32", &u, &err), -1);
    assert_non_null(strstr(err.msg, "'test.f32' has type f32, expected an unsigned integer"));
    assert_int_equal(gguf_get_bool(f, "test.f32", &b, &err), -1);
    assert_non_null(strstr(err.msg, "expected bool"));
    assert_int_equal(gguf_get_str(f, "tokenizer.ggml.tokens", &s, &err), -1);
    assert_non_null(strstr(err.msg, "array of string"));
    assert_int_equal(gguf_get_uint(f, "test.true", &u, &err), -1);
    assert_int_equal(gguf_get_uint(f, "no.such.key", &u, &err), -1);
    assert_non_null(strstr(err.msg, "'no.such.key' is missing"));
    assert_null(gguf_find_kv(f, "no.such.key"));
    assert_null(gguf_find_kv(f, "test.f3"));
    assert_null(gguf_find_kv(f, ""));

    /* Numeric arrays */
    const gguf_kv *kv = gguf_find_kv(f, "test.arr_u32");
    assert_non_null(kv);
    assert_int_equal(kv->type, GGUF_ARRAY);
    assert_int_equal(kv->arr_type, GGUF_U32);
    assert_int_equal(kv->arr_n, 4);
    assert_int_equal(kv->data_bytes, 16);
    for (uint64_t i = 0; i < 4; i++) {
        int64_t v;
        double dv;
        assert_int_equal(gguf_arr_get_int(kv, i, &v), 0);
        assert_int_equal(v, arr_u32[i]);
        assert_int_equal(gguf_arr_get_float(kv, i, &dv), 0);
        assert_true(dv == (double)arr_u32[i]);
    }
    int64_t iv;
    double dv;
    assert_int_equal(gguf_arr_get_int(kv, 4, &iv), -1); /* out of range */
    kv = gguf_find_kv(f, "test.arr_i32");
    assert_non_null(kv);
    for (uint64_t i = 0; i < 4; i++) {
        assert_int_equal(gguf_arr_get_int(kv, i, &iv), 0);
        assert_int_equal(iv, arr_i32[i]);
    }
    kv = gguf_find_kv(f, "test.arr_f32");
    assert_non_null(kv);
    assert_int_equal(kv->arr_type, GGUF_F32);
    for (uint64_t i = 0; i < 3; i++) {
        assert_int_equal(gguf_arr_get_float(kv, i, &dv), 0);
        assert_true(dv == (double)arr_f32[i]);
    }
    assert_int_equal(gguf_arr_get_int(kv, 0, &iv), -1); /* floats are not ints */
    kv = gguf_find_kv(f, "test.arr_empty");
    assert_non_null(kv);
    assert_int_equal(kv->arr_n, 0);
    assert_int_equal(gguf_arr_get_int(kv, 0, &iv), -1);
    /* scalar is not an array */
    assert_int_equal(gguf_arr_get_int(gguf_find_kv(f, "test.u64"), 0, &iv), -1);

    /* String arrays */
    kv = gguf_find_kv(f, "tokenizer.ggml.tokens");
    assert_non_null(kv);
    assert_int_equal(kv->arr_type, GGUF_STRING);
    assert_int_equal(kv->arr_n, 4);
    gguf_str *strs = NULL;
    assert_int_equal(gguf_arr_strings(kv, &strs, &err), 0);
    assert_str_eq(strs[0], "<s>", 3);
    assert_str_eq(strs[1], "", 0);
    assert_str_eq(strs[2], "hello", 5);
    assert_str_eq(strs[3], "\xe2\x96\x81world", 8);
    free(strs);
    assert_int_equal(gguf_arr_get_int(kv, 0, &iv), -1);
    kv = gguf_find_kv(f, "test.arr_bin_str");
    assert_non_null(kv);
    assert_int_equal(gguf_arr_strings(kv, &strs, &err), 0);
    assert_str_eq(strs[0], bin_str, sizeof(bin_str));
    assert_str_eq(strs[1], "x", 1);
    assert_str_eq(strs[2], "", 0);
    free(strs);
    assert_int_equal(gguf_arr_strings(gguf_find_kv(f, "test.arr_u32"), &strs, &err), -1);
    assert_non_null(strstr(err.msg, "test.arr_u32"));
}

/* Write the full test file with the given alignment; data written in reverse
 * order (any order must work). Returns the path. */
static const char *write_full(uint32_t alignment, const char *name, uint64_t *offsets) {
    gguf_writer *w = gguf_writer_create(alignment);
    assert_non_null(w);
    add_all_metadata(w);
    for (size_t i = 0; i < N_T; i++) {
        const tdesc *t = &k_tensors[i];
        assert_int_equal(gguf_w_tensor(w, t->name, t->type, t->n_dims, t->ne), (int64_t)i);
    }
    const char *path = tmp_path(name);
    int fd = open_out(path);
    ds4_err err = {{0}};
    if (gguf_writer_write_header(w, fd, &err) != 0) fail_msg("%s", err.msg);
    for (size_t k = N_T; k-- > 0;) {
        uint64_t off = gguf_writer_tensor_offset(w, (int64_t)k);
        uint64_t sz = gguf_writer_tensor_size(w, (int64_t)k);
        assert_int_equal(sz, k_tensors[k].size);
        assert_int_equal(off % (alignment ? alignment : 32), 0);
        offsets[k] = off;
        uint8_t *buf = malloc(sz);
        for (uint64_t i = 0; i < sz; i++) buf[i] = pattern((int64_t)k, i);
        assert_int_equal(gguf_pwrite_all(fd, buf, sz, off, &err), 0);
        free(buf);
    }
    uint64_t total = gguf_writer_total_size(w);
    assert_int_equal(gguf_writer_finish(w, fd, &err), 0);
    close(fd);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal((uint64_t)st.st_size, total);
    gguf_writer_free(w);
    return path;
}

static void check_tensors(const gguf_file *f, const uint64_t *offsets, bool with_data) {
    assert_int_equal(f->n_tensors, N_T);
    for (size_t k = 0; k < N_T; k++) {
        const tdesc *d = &k_tensors[k];
        const gguf_tensor *t = gguf_find_tensor(f, d->name);
        assert_non_null(t);
        assert_ptr_equal(t, &f->tensors[k]); /* file order preserved */
        assert_string_equal(t->name, d->name);
        assert_int_equal(t->type, d->type);
        assert_int_equal(t->n_dims, d->n_dims);
        for (int j = 0; j < 4; j++) assert_int_equal(t->ne[j], d->ne[j]);
        assert_int_equal(t->size, d->size);
        assert_int_equal(t->offset % f->alignment, 0);
        assert_int_equal(f->data_start + t->offset, offsets[k]);
        assert_ptr_equal(t->data, f->map + offsets[k]);
        const uint8_t *p = t->data;
        for (uint64_t i = 0; i < t->size; i++) {
            uint8_t want = with_data ? pattern((int64_t)k, i) : 0;
            if (p[i] != want) fail_msg("tensor %s byte %llu: %u != %u", d->name, (unsigned long long)i, p[i], want);
        }
    }
    assert_null(gguf_find_tensor(f, "nope"));
    assert_null(gguf_find_tensor(f, "blk.0"));
    assert_null(gguf_find_tensor(f, "zzzz"));
}

static void test_roundtrip(void **state) {
    (void)state;
    uint64_t offs[N_T];
    const char *path = write_full(32, "full.gguf", offs);
    gguf_file *f = must_open(path);
    assert_string_equal(f->path, path);
    assert_int_equal(f->version, 3);
    assert_int_equal(f->alignment, 32);
    assert_int_equal(f->data_start % 32, 0);
    assert_int_equal(f->n_kv, 17); /* default alignment: no general.alignment added */
    assert_null(gguf_find_kv(f, "general.alignment"));
    check_all_metadata(f);
    check_tensors(f, offs, true);
    /* The last tensor ends exactly at the end of the file. */
    const gguf_tensor *last = &f->tensors[N_T - 1];
    assert_int_equal(f->data_start + last->offset + last->size, f->file_size);
    /* Type table */
    int64_t blk;
    uint64_t bb;
    assert_int_equal(gguf_type_block(DS4_TYPE_Q4_K, &blk, &bb), 0);
    assert_int_equal(blk, 256);
    assert_int_equal(bb, 144);
    assert_int_equal(gguf_type_block(15, &blk, &bb), -1);
    assert_string_equal(gguf_type_name(DS4_TYPE_IQ2_XXS), "iq2_xxs");
    assert_null(gguf_type_name(99));
    assert_string_equal(gguf_vtype_name(GGUF_F64), "f64");
    assert_string_equal(gguf_vtype_name((gguf_vtype)77), "unknown");
    gguf_close(f);
    gguf_close(NULL);
}

/* Non-default alignments: general.alignment is written and honored. */
static void test_alignments(void **state) {
    (void)state;
    const uint32_t aligns[] = {1, 8, 64, 4096, 65536};
    for (size_t a = 0; a < sizeof(aligns) / sizeof(aligns[0]); a++) {
        uint64_t offs[N_T];
        char name[64];
        snprintf(name, sizeof(name), "align%u.gguf", aligns[a]);
        const char *path = write_full(aligns[a], name, offs);
        gguf_file *f = must_open(path);
        assert_int_equal(f->alignment, aligns[a]);
        assert_int_equal(f->data_start % aligns[a], 0);
        uint64_t u;
        ds4_err err;
        if (aligns[a] == 32) {
            assert_null(gguf_find_kv(f, "general.alignment"));
        } else {
            assert_int_equal(gguf_get_uint(f, "general.alignment", &u, &err), 0);
            assert_int_equal(u, aligns[a]);
            assert_int_equal(gguf_find_kv(f, "general.alignment")->type, GGUF_U32);
        }
        check_all_metadata(f);
        check_tensors(f, offs, true);
        gguf_close(f);
    }
    assert_null(gguf_writer_create(3));
    assert_null(gguf_writer_create(131072));
    gguf_writer *w = gguf_writer_create(0); /* 0 = default */
    assert_non_null(w);
    gguf_writer_free(w);
}

/* Header-only file: data never written, the data region is a hole. */
static void test_header_only(void **state) {
    (void)state;
    gguf_writer *w = gguf_writer_create(64);
    gguf_w_str(w, "general.architecture", "deepseek4");
    int64_t ne_big[2] = {1 << 20, 1024}; /* 4 GiB of f32: must not be read */
    assert_int_equal(gguf_w_tensor(w, "big", DS4_TYPE_F32, 2, ne_big), 0);
    int64_t ne_small[1] = {256};
    assert_int_equal(gguf_w_tensor(w, "small", DS4_TYPE_Q4_K, 1, ne_small), 1);
    const char *path = tmp_path("header_only.gguf");
    int fd = open_out(path);
    ds4_err err = {{0}};
    assert_int_equal(gguf_writer_write_header(w, fd, &err), 0);
    uint64_t total = gguf_writer_total_size(w);
    uint64_t off_small = gguf_writer_tensor_offset(w, 1);
    assert_int_equal(gguf_writer_tensor_size(w, 0), (uint64_t)4 << 30);
    assert_int_equal(gguf_writer_tensor_size(w, 1), 144);
    assert_int_equal(gguf_writer_tensor_offset(w, 2), 0); /* bad index */
    assert_int_equal(gguf_writer_tensor_offset(w, -1), 0);
    assert_int_equal(gguf_writer_finish(w, fd, &err), 0);
    close(fd);
    gguf_writer_free(w);

    gguf_file *f = must_open(path);
    assert_int_equal(f->file_size, total);
    const gguf_tensor *big = gguf_find_tensor(f, "big");
    const gguf_tensor *small = gguf_find_tensor(f, "small");
    assert_non_null(big);
    assert_non_null(small);
    assert_int_equal(big->size, (uint64_t)4 << 30);
    assert_int_equal(big->offset, 0);
    assert_int_equal(f->data_start + small->offset, off_small);
    assert_int_equal(small->offset % 64, 0);
    assert_int_equal(f->data_start + small->offset + small->size, f->file_size);
    /* Reading the hole is allowed for the caller: zeros. */
    assert_int_equal(((const uint8_t *)small->data)[143], 0);
    gguf_close(f);
}

/* Zero tensors and zero kvs: both the bare 24-byte header and the writer's. */
static void test_empty_file(void **state) {
    (void)state;
    gb b = {0};
    gb_header(&b, 0, 0);
    gguf_file *f = must_open(gb_save(&b, "bare.gguf"));
    assert_int_equal(f->n_kv, 0);
    assert_int_equal(f->n_tensors, 0);
    assert_null(gguf_find_kv(f, "x"));
    assert_null(gguf_find_tensor(f, "x"));
    gguf_close(f);
    gb_free(&b);

    gguf_writer *w = gguf_writer_create(32);
    const char *path = tmp_path("empty_w.gguf");
    int fd = open_out(path);
    ds4_err err = {{0}};
    assert_int_equal(gguf_writer_write_header(w, fd, &err), 0);
    assert_int_equal(gguf_writer_total_size(w), 32); /* 24-byte header padded */
    assert_int_equal(gguf_writer_finish(w, fd, &err), 0);
    close(fd);
    gguf_writer_free(w);
    f = must_open(path);
    assert_int_equal(f->n_kv, 0);
    assert_int_equal(f->n_tensors, 0);
    assert_int_equal(f->file_size, 32);
    gguf_close(f);
}

/* Every value type the format has, including nested arrays, built by hand. */
static void test_all_value_types(void **state) {
    (void)state;
    gb b = {0};
    gb_header(&b, 1, 14);
    gb_key(&b, "v.u8", GGUF_U8);
    gb_u8(&b, 200);
    gb_key(&b, "v.i8", GGUF_I8);
    gb_u8(&b, (uint8_t)-100);
    gb_key(&b, "v.u16", GGUF_U16);
    gb_u16(&b, 65000);
    gb_key(&b, "v.i16", GGUF_I16);
    gb_u16(&b, (uint16_t)-30000);
    gb_key(&b, "v.i64", GGUF_I64);
    gb_u64(&b, (uint64_t)-5);
    gb_key(&b, "v.i64pos", GGUF_I64);
    gb_u64(&b, (uint64_t)INT64_MAX);
    gb_key(&b, "v.i8pos", GGUF_I8);
    gb_u8(&b, 100);
    /* array of bool */
    gb_key(&b, "a.bool", GGUF_ARRAY);
    gb_u32(&b, GGUF_BOOL);
    gb_u64(&b, 3);
    gb_u8(&b, 1);
    gb_u8(&b, 0);
    gb_u8(&b, 1);
    /* array of i64 */
    gb_key(&b, "a.i64", GGUF_ARRAY);
    gb_u32(&b, GGUF_I64);
    gb_u64(&b, 2);
    gb_u64(&b, (uint64_t)INT64_MIN);
    gb_u64(&b, 42);
    /* array of u64 with a value above INT64_MAX */
    gb_key(&b, "a.u64", GGUF_ARRAY);
    gb_u32(&b, GGUF_U64);
    gb_u64(&b, 2);
    gb_u64(&b, 9);
    gb_u64(&b, UINT64_MAX);
    /* array of f64 and of i8 and i16 */
    gb_key(&b, "a.f64", GGUF_ARRAY);
    gb_u32(&b, GGUF_F64);
    gb_u64(&b, 2);
    gb_f64(&b, -2.5);
    gb_f64(&b, 1e300);
    gb_key(&b, "a.i16", GGUF_ARRAY);
    gb_u32(&b, GGUF_I16);
    gb_u64(&b, 2);
    gb_u16(&b, (uint16_t)-2);
    gb_u16(&b, 300);
    /* nested: array of 2 arrays of u8 */
    gb_key(&b, "a.nested", GGUF_ARRAY);
    gb_u32(&b, GGUF_ARRAY);
    gb_u64(&b, 2);
    gb_u32(&b, GGUF_U8);
    gb_u64(&b, 3);
    gb_u8(&b, 1);
    gb_u8(&b, 2);
    gb_u8(&b, 3);
    gb_u32(&b, GGUF_STRING);
    gb_u64(&b, 1);
    gb_str(&b, "in");
    /* 4 levels deep (the maximum): [[[[f32]]]] */
    gb_key(&b, "a.deep", GGUF_ARRAY);
    gb_u32(&b, GGUF_ARRAY);
    gb_u64(&b, 1);
    gb_u32(&b, GGUF_ARRAY);
    gb_u64(&b, 1);
    gb_u32(&b, GGUF_ARRAY);
    gb_u64(&b, 1);
    gb_u32(&b, GGUF_F32);
    gb_u64(&b, 1);
    gb_f32(&b, 1.0f);
    uint64_t dims[1] = {32};
    gb_tensor(&b, "t", 1, dims, DS4_TYPE_Q8_0, 0);
    gb_pad(&b, 32);
    gb_zeros(&b, 34);
    gguf_file *f = must_open(gb_save(&b, "types.gguf"));
    gb_free(&b);

    ds4_err err;
    uint64_t u;
    double d;
    int64_t iv;
    assert_int_equal(gguf_get_uint(f, "v.u8", &u, &err), 0);
    assert_int_equal(u, 200);
    assert_int_equal(gguf_get_uint(f, "v.i8", &u, &err), -1);
    assert_non_null(strstr(err.msg, "-100"));
    assert_int_equal(gguf_get_uint(f, "v.i8pos", &u, &err), 0);
    assert_int_equal(u, 100);
    assert_int_equal(gguf_get_uint(f, "v.u16", &u, &err), 0);
    assert_int_equal(u, 65000);
    assert_int_equal(gguf_get_uint(f, "v.i16", &u, &err), -1);
    assert_int_equal(gguf_get_uint(f, "v.i64", &u, &err), -1);
    assert_int_equal(gguf_get_uint(f, "v.i64pos", &u, &err), 0);
    assert_true(u == (uint64_t)INT64_MAX);
    assert_int_equal(gguf_get_float(f, "v.u8", &d, &err), -1); /* only f32/f64/u32/i32 */
    assert_non_null(strstr(err.msg, "has type u8"));

    const gguf_kv *kv = gguf_find_kv(f, "a.bool");
    assert_int_equal(kv->arr_n, 3);
    assert_int_equal(gguf_arr_get_int(kv, 0, &iv), 0);
    assert_int_equal(iv, 1);
    assert_int_equal(gguf_arr_get_int(kv, 1, &iv), 0);
    assert_int_equal(iv, 0);
    kv = gguf_find_kv(f, "a.i64");
    assert_int_equal(gguf_arr_get_int(kv, 0, &iv), 0);
    assert_true(iv == INT64_MIN);
    assert_int_equal(gguf_arr_get_int(kv, 1, &iv), 0);
    assert_int_equal(iv, 42);
    kv = gguf_find_kv(f, "a.u64");
    assert_int_equal(gguf_arr_get_int(kv, 0, &iv), 0);
    assert_int_equal(iv, 9);
    assert_int_equal(gguf_arr_get_int(kv, 1, &iv), -1); /* does not fit int64 */
    assert_int_equal(gguf_arr_get_float(kv, 1, &d), 0);
    assert_true(d == 18446744073709551615.0);
    kv = gguf_find_kv(f, "a.f64");
    assert_int_equal(gguf_arr_get_float(kv, 0, &d), 0);
    assert_true(d == -2.5);
    assert_int_equal(gguf_arr_get_float(kv, 1, &d), 0);
    assert_true(d == 1e300);
    kv = gguf_find_kv(f, "a.i16");
    assert_int_equal(gguf_arr_get_int(kv, 0, &iv), 0);
    assert_int_equal(iv, -2);
    assert_int_equal(gguf_arr_get_float(kv, 1, &d), 0);
    assert_true(d == 300.0);
    kv = gguf_find_kv(f, "a.nested");
    assert_int_equal(kv->arr_type, GGUF_ARRAY);
    assert_int_equal(kv->arr_n, 2);
    assert_int_equal(kv->data_bytes, (4 + 8 + 3) + (4 + 8 + 8 + 2));
    assert_int_equal(gguf_arr_get_int(kv, 0, &iv), -1);
    assert_int_equal(gguf_arr_get_float(kv, 0, &d), -1);
    kv = gguf_find_kv(f, "a.deep");
    assert_int_equal(kv->data_bytes, 3 * 12 + 4); /* three nested headers + one f32 */
    assert_non_null(gguf_find_tensor(f, "t"));
    gguf_close(f);
}

/* ~1500 tensors in scrambled order: every one found by binary search. */
static void test_many_tensors(void **state) {
    (void)state;
    enum { N = 1500 };
    gguf_writer *w = gguf_writer_create(32);
    for (int i = 0; i < N; i++) {
        int j = (i * 7919) % N; /* a permutation, so names are not in order */
        char name[64];
        snprintf(name, sizeof(name), "blk.%d.w%d", j % 43, j);
        int64_t ne[2] = {32, 1 + j % 3};
        assert_int_equal(gguf_w_tensor(w, name, DS4_TYPE_Q8_0, 2, ne), i);
        char key[64];
        snprintf(key, sizeof(key), "k.%d", j);
        gguf_w_u32(w, key, (uint32_t)j);
    }
    const char *path = tmp_path("many.gguf");
    int fd = open_out(path);
    ds4_err err = {{0}};
    assert_int_equal(gguf_writer_write_header(w, fd, &err), 0);
    assert_int_equal(gguf_writer_finish(w, fd, &err), 0);
    close(fd);
    gguf_writer_free(w);
    gguf_file *f = must_open(path);
    assert_int_equal(f->n_tensors, N);
    for (int j = 0; j < N; j++) {
        char name[64];
        snprintf(name, sizeof(name), "blk.%d.w%d", j % 43, j);
        const gguf_tensor *t = gguf_find_tensor(f, name);
        assert_non_null(t);
        assert_string_equal(t->name, name);
        assert_int_equal(t->ne[1], 1 + j % 3);
        char key[64];
        snprintf(key, sizeof(key), "k.%d", j);
        uint64_t u;
        assert_int_equal(gguf_get_uint(f, key, &u, &err), 0);
        assert_int_equal(u, (uint64_t)j);
    }
    gguf_close(f);
}

/* Writer argument errors and deferred errors. */
static void test_writer_errors(void **state) {
    (void)state;
    ds4_err err = {{0}};
    const char *path = tmp_path("werr.gguf");
    int64_t ne[4] = {32, 2, 1, 1};

    gguf_writer *w = gguf_writer_create(32);
    assert_int_equal(gguf_w_tensor(w, "a", (ds4_type)15, 1, ne), -1); /* unknown type */
    int64_t ne33[1] = {33};
    assert_int_equal(gguf_w_tensor(w, "a", DS4_TYPE_Q8_0, 1, ne33), -1); /* not a multiple of 32 */
    assert_int_equal(gguf_w_tensor(w, "a", DS4_TYPE_F32, 0, ne), -1);
    assert_int_equal(gguf_w_tensor(w, "a", DS4_TYPE_F32, 5, ne), -1);
    assert_int_equal(gguf_w_tensor(w, "", DS4_TYPE_F32, 1, ne), -1);
    assert_int_equal(gguf_w_tensor(w, NULL, DS4_TYPE_F32, 1, ne), -1);
    int64_t ne0[1] = {0};
    assert_int_equal(gguf_w_tensor(w, "a", DS4_TYPE_F32, 1, ne0), -1);
    int64_t ne_ovf[2] = {INT64_MAX / 2 + 1, 2};
    assert_int_equal(gguf_w_tensor(w, "a", DS4_TYPE_F32, 2, ne_ovf), -1);
    char longname[300];
    memset(longname, 'n', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = 0;
    assert_int_equal(gguf_w_tensor(w, longname, DS4_TYPE_F32, 1, ne), -1);
    assert_int_equal(gguf_w_tensor(w, "a", DS4_TYPE_F32, 2, ne), 0);
    assert_int_equal(gguf_w_tensor(w, "a", DS4_TYPE_F32, 2, ne), 1);
    int fd = open_out(path);
    assert_int_equal(gguf_writer_write_header(w, fd, &err), -1);
    assert_non_null(strstr(err.msg, "duplicate tensor name 'a'"));
    assert_int_equal(gguf_writer_finish(w, fd, &err), -1); /* no header written */
    gguf_writer_free(w);

    w = gguf_writer_create(32);
    gguf_w_u32(w, "k", 1);
    gguf_w_str(w, "k", "again");
    assert_int_equal(gguf_writer_write_header(w, fd, &err), -1);
    assert_non_null(strstr(err.msg, "duplicate metadata key 'k'"));
    gguf_writer_free(w);

    w = gguf_writer_create(32);
    gguf_w_u32(w, "", 1);
    assert_int_equal(gguf_writer_write_header(w, fd, &err), -1);
    assert_non_null(strstr(err.msg, "empty"));
    gguf_writer_free(w);

    w = gguf_writer_create(32);
    gguf_w_str(w, "s", NULL);
    assert_int_equal(gguf_writer_write_header(w, fd, &err), -1);
    assert_non_null(strstr(err.msg, "NULL"));
    gguf_writer_free(w);

    w = gguf_writer_create(32);
    gguf_w_arr_u32(w, "arr", NULL, 3);
    assert_int_equal(gguf_writer_write_header(w, fd, &err), -1);
    assert_non_null(strstr(err.msg, "'arr'"));
    gguf_writer_free(w);

    /* general.alignment set by the caller must match the writer's. */
    w = gguf_writer_create(64);
    gguf_w_u32(w, "general.alignment", 32);
    assert_int_equal(gguf_writer_write_header(w, fd, &err), -1);
    assert_non_null(strstr(err.msg, "general.alignment"));
    gguf_writer_free(w);
    w = gguf_writer_create(64);
    gguf_w_u32(w, "general.alignment", 64);
    assert_int_equal(gguf_writer_write_header(w, fd, &err), 0);
    assert_int_equal(gguf_writer_finish(w, fd, &err), 0);
    gguf_writer_free(w);
    close(fd);
    gguf_file *f = must_open(path);
    assert_int_equal(f->alignment, 64);
    assert_int_equal(f->n_kv, 1);
    gguf_close(f);

    /* Writing to a bad fd reports errno. */
    w = gguf_writer_create(32);
    assert_int_equal(gguf_writer_write_header(w, -1, &err), -1);
    assert_non_null(strstr(err.msg, "pwrite"));
    gguf_writer_free(w);
    gguf_writer_free(NULL);
}

/* The container's type table and quant.c's traits must agree. */
static void test_type_table_matches_quant(void **state) {
    (void)state;
    int known = 0;
    for (int type = -2; type < 64; type++) {
        const ds4_type_traits *q = ds4_type_info(type);
        int64_t block = 0;
        uint64_t bytes = 0;
        int rc = gguf_type_block(type, &block, &bytes);
        if (!q) {
            assert_int_equal(rc, -1);
            assert_null(gguf_type_name(type));
            continue;
        }
        known++;
        assert_int_equal(rc, 0);
        assert_int_equal(block, q->block);
        assert_int_equal(bytes, q->block_bytes);
        assert_string_equal(gguf_type_name(type), q->name);
    }
    assert_int_equal(known, 8);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),      cmocka_unit_test(test_alignments),
        cmocka_unit_test(test_header_only),    cmocka_unit_test(test_empty_file),
        cmocka_unit_test(test_all_value_types), cmocka_unit_test(test_many_tensors),
        cmocka_unit_test(test_writer_errors),  cmocka_unit_test(test_type_table_matches_quant),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
