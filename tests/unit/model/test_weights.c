/* Model description and weight binding: the published shape binds as the
 * published ds4 files do (q2, q4, q2/q4 mixed) from header-only files whose
 * data region is a hole; metadata and tensor-table mistakes are reported by
 * name. */
#include <fcntl.h>
#include <unistd.h>

#include "engine_test_util.h"
#include "gguf/quant.h"

/* ------------------------------------------------------------------ published shape */

static void check_published(const char *opts, int gate_type, int down_type, bool published_types) {
    char o[512];
    snprintf(o, sizeof(o), "--preset published --policy ds4 --header-only %s", opts);
    const char *path = test_synth("pub", o);
    ds4_err err = {{0}};
    ds4_model *m = ds4_model_open(path, DS4_MODEL_NO_DATA_CHECKS, &err);
    if (!m) fail_msg("published shape (%s) does not bind: %s", opts, err.msg);
    assert_true(ds4_hparams_is_published(&m->hp));
    assert_int_equal(m->file->n_tensors, 6 + 43 * 24 + 41 * 4 + 21 * 6); /* 1328 */
    assert_int_equal(m->w.layers[0].gate_exps.type, gate_type);
    assert_int_equal(m->w.layers[0].down_exps.type, down_type);
    assert_true(m->w.published_types == published_types);
    /* 284.3 B logical parameters (MODEL.md 13.6) */
    assert_true(m->w.n_params > 284000000000ull && m->w.n_params < 284600000000ull);
    ds4_model_close(m);
    unlink(path);
}

static void test_published_shape_binds(void **state) {
    (void)state;
    check_published("", DS4_TYPE_IQ2_XXS, DS4_TYPE_Q2_K, true);                            /* q2 */
    check_published("--expert-type q4_K --down-type q4_K", DS4_TYPE_Q4_K, DS4_TYPE_Q4_K, true); /* q4 */
    check_published("--q4-from-layer 37", DS4_TYPE_IQ2_XXS, DS4_TYPE_Q2_K, true);          /* mixed */
    check_published("--expert-type q8_0 --down-type q8_0", DS4_TYPE_Q8_0, DS4_TYPE_Q8_0, false);
}

static void test_published_file_sizes(void **state) {
    (void)state;
    /* q2 = 80.76 GiB of tensor data, q4 = 153.3 GiB (MODEL.md 13.6) */
    const char *q2 = test_synth("q2h", "--preset published --policy ds4 --header-only");
    ds4_err err = {{0}};
    ds4_model *m = ds4_model_open(q2, DS4_MODEL_NO_DATA_CHECKS, &err);
    assert_non_null(m);
    assert_true(llabs((long long)m->w.n_bytes - 86710000000ll) < 20000000ll);
    ds4_model_close(m);
    unlink(q2);
    const char *q4 = test_synth("q4h", "--preset published --policy ds4 --header-only --expert-type q4_K --down-type q4_K");
    m = ds4_model_open(q4, DS4_MODEL_NO_DATA_CHECKS, &err);
    assert_non_null(m);
    assert_true(llabs((long long)m->w.n_bytes - 164630000000ll) < 20000000ll);
    ds4_model_close(m);
    unlink(q4);
}

/* ------------------------------------------------------------------ mutations */

typedef struct mutation {
    const char *what;
    const char *key;       /* metadata key to replace (NULL: none) */
    int key_kind;          /* 0 drop, 1 u32 value, 2 f32 value, 3 string, 4 u32 array (ratios) */
    double value;
    const char *tensor;    /* tensor to change (NULL: none) */
    int tensor_kind;       /* 0 drop, 1 change ne1, 2 change type, 3 add extra tensor */
    int new_type;
    const char *expect;    /* substring of the error */
} mutation;

/* Rewrite a header-only copy of `src` with one change applied. */
static const char *rewrite(const char *src, const mutation *mu) {
    static char out[4096];
    snprintf(out, sizeof(out), "%s/mut.gguf", test_tmp_dir());
    ds4_err err = {{0}};
    gguf_file *f = gguf_open(src, &err);
    assert_non_null(f);
    gguf_writer *w = gguf_writer_create(32);
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const gguf_kv *kv = &f->kv[i];
        if (mu->key && strcmp(kv->key, mu->key) == 0) {
            switch (mu->key_kind) {
            case 0: break;
            case 1: gguf_w_u32(w, kv->key, (uint32_t)mu->value); break;
            case 2: gguf_w_f32(w, kv->key, (float)mu->value); break;
            case 3: gguf_w_str(w, kv->key, "nonsense"); break;
            case 4: {
                uint32_t r[4] = {0, 0, 4, (uint32_t)mu->value};
                gguf_w_arr_u32(w, kv->key, r, 4);
                break;
            }
            }
            continue;
        }
        gguf_w_copy(w, kv);
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        int64_t ne[4];
        memcpy(ne, t->ne, sizeof(ne));
        ds4_type type = t->type;
        if (mu->tensor && strcmp(t->name, mu->tensor) == 0) {
            if (mu->tensor_kind == 0) continue;
            if (mu->tensor_kind == 1) ne[1] *= 2;
            if (mu->tensor_kind == 2) type = (ds4_type)mu->new_type;
        }
        assert_true(gguf_w_tensor(w, t->name, type, t->n_dims, ne) >= 0);
    }
    if (mu->tensor && mu->tensor_kind == 3) {
        const int64_t ne[1] = {32};
        gguf_w_tensor(w, mu->tensor, DS4_TYPE_F32, 1, ne);
    }
    const int fd = open(out, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    assert_true(fd >= 0);
    assert_int_equal(gguf_writer_write_header(w, fd, &err), 0);
    assert_int_equal(gguf_writer_finish(w, fd, &err), 0);
    close(fd);
    gguf_writer_free(w);
    gguf_close(f);
    return out;
}

static void test_binding_errors_name_the_problem(void **state) {
    (void)state;
    const char *src = test_synth("mutsrc", "--header-only --policy ds4 --embd 256 --ff 256");
    ds4_err err = {{0}};
    ds4_model *ok = ds4_model_open(src, DS4_MODEL_NO_DATA_CHECKS, &err);
    if (!ok) fail_msg("unmodified file: %s", err.msg);
    ds4_model_close(ok);
    static const mutation M[] = {
        {"missing metadata key", "deepseek4.block_count", 0, 0, NULL, 0, 0, "deepseek4.block_count"},
        {"two KV heads", "deepseek4.attention.head_count_kv", 1, 2, NULL, 0, 0, "head_count_kv"},
        {"value length differs", "deepseek4.attention.value_length", 1, 64, NULL, 0, 0, "value_length"},
        {"group routing", "deepseek4.expert_group_count", 1, 8, NULL, 0, 0, "expert_group_count"},
        {"float key as string", "deepseek4.rope.freq_base", 3, 0, NULL, 0, 0, "rope.freq_base"},
        {"integer key as float", "deepseek4.embedding_length", 2, 256, NULL, 0, 0, "embedding_length"},
        {"ratio 1", "deepseek4.attention.compress_ratios", 4, 1, NULL, 0, 0, "compress_ratios"},
        {"wrong architecture", "general.architecture", 3, 0, NULL, 0, 0, "architecture"},
        {"groups do not divide heads", "deepseek4.attention.output_group_count", 1, 3, NULL, 0, 0, "output_group_count"},
        {"experts used > experts", "deepseek4.expert_used_count", 1, 64, NULL, 0, 0, "expert_used_count"},
        {"missing tensor", NULL, 0, 0, "blk.2.indexer.proj.weight", 0, 0, "blk.2.indexer.proj.weight"},
        {"wrong shape", NULL, 0, 0, "blk.1.attn_q_b.weight", 1, 0, "blk.1.attn_q_b.weight"},
        {"wrong type for a norm", NULL, 0, 0, "blk.0.attn_norm.weight", 2, DS4_TYPE_F16, "blk.0.attn_norm.weight"},
        {"i32 where f16 belongs", NULL, 0, 0, "token_embd.weight", 2, DS4_TYPE_I32, "token_embd.weight"},
        {"gate and up types differ", NULL, 0, 0, "blk.3.ffn_up_exps.weight", 2, DS4_TYPE_Q4_K, "must share a type"},
        {"extra tensor", NULL, 0, 0, "blk.9.attn_q_a.weight", 3, 0, "unexpected tensor 'blk.9.attn_q_a.weight'"},
        {"missing hash table", NULL, 0, 0, "blk.0.ffn_gate_tid2eid.weight", 0, 0, "tid2eid"},
    };
    for (size_t i = 0; i < sizeof(M) / sizeof(M[0]); i++) {
        const char *p = rewrite(src, &M[i]);
        memset(&err, 0, sizeof(err));
        ds4_model *m = ds4_model_open(p, DS4_MODEL_NO_DATA_CHECKS, &err);
        if (m) fail_msg("%s: the file was accepted", M[i].what);
        if (!strstr(err.msg, M[i].expect)) fail_msg("%s: error '%s' does not mention '%s'", M[i].what, err.msg, M[i].expect);
        /* the CLI says the same and exits non-zero */
        assert_int_not_equal(test_sh("%s --inspect -m %s >/dev/null 2>&1", test_bin("ds4"), p), 0);
    }
}

static void test_hash_table_out_of_range(void **state) {
    (void)state;
    /* a real (non header-only) tiny file with one hash entry pointing past the experts */
    const char *src = test_synth("hashbad", "--seed 3");
    ds4_err err = {{0}};
    gguf_file *f = gguf_open(src, &err);
    assert_non_null(f);
    const gguf_tensor *t = gguf_find_tensor(f, "blk.1.ffn_gate_tid2eid.weight");
    assert_non_null(t);
    const uint64_t off = (uint64_t)((const uint8_t *)t->data - f->map) + 4 * 7;
    gguf_close(f);
    const int fd = open(src, O_WRONLY);
    const int32_t bad = 99;
    assert_int_equal(pwrite(fd, &bad, 4, (off_t)off), 4);
    close(fd);
    ds4_model *m = ds4_model_open(src, 0, &err);
    assert_null(m);
    assert_non_null(strstr(err.msg, "blk.1.ffn_gate_tid2eid.weight"));
    assert_non_null(strstr(err.msg, "expert 99"));
    /* --inspect does not read tensor data, so it still summarizes the file */
    m = ds4_model_open(src, DS4_MODEL_NO_DATA_CHECKS, &err);
    assert_non_null(m);
    ds4_model_close(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_published_shape_binds),
        cmocka_unit_test(test_published_file_sizes),
        cmocka_unit_test(test_binding_errors_name_the_problem),
        cmocka_unit_test(test_hash_table_out_of_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
