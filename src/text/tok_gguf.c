/* ds4 — building the tokenizer from a GGUF's tokenizer metadata
 * (INTERFACES.md 2.2). Kept apart from tokenizer.c so that programs that
 * never open a GGUF do not pull in the GGUF reader. */
#include <stdlib.h>
#include <string.h>

#include "gguf/gguf.h"
#include "text/tokenizer.h"

/* The string array under key, converted to ds4_str (*out must be freed). */
static int string_array(const gguf_file *f, const char *key, ds4_str **out, size_t *n, ds4_err *err) {
    *out = NULL;
    *n = 0;
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv) return ds4_errf(err, "the GGUF has no %s", key);
    gguf_str *g = NULL;
    if (gguf_arr_strings(kv, &g, err)) return ds4_err_prefix(err, "%s", key);
    if (kv->arr_n > SIZE_MAX / sizeof(ds4_str)) {
        free(g);
        return ds4_errf(err, "%s has too many entries (%llu)", key, (unsigned long long)kv->arr_n);
    }
    ds4_str *v = malloc((kv->arr_n ? kv->arr_n : 1) * sizeof(*v));
    if (!v) {
        free(g);
        return ds4_errf(err, "out of memory for %s", key);
    }
    for (uint64_t i = 0; i < kv->arr_n; i++) v[i] = (ds4_str){g[i].ptr, (size_t)g[i].len};
    free(g);
    *out = v;
    *n = (size_t)kv->arr_n;
    return 0;
}

ds4_tokenizer *ds4_tokenizer_from_gguf(const struct gguf_file *f, ds4_err *err) {
    /* The model type, when present, must be byte-level BPE. */
    const gguf_kv *model = gguf_find_kv(f, "tokenizer.ggml.model");
    if (model) {
        gguf_str m;
        if (gguf_get_str(f, "tokenizer.ggml.model", &m, err)) return NULL;
        if (m.len != 4 || memcmp(m.ptr, "gpt2", 4) != 0) {
            ds4_errf(err, "tokenizer.ggml.model is \"%.*s\", expected \"gpt2\" (byte-level BPE)",
                     (int)(m.len > 64 ? 64 : m.len), m.ptr);
            return NULL;
        }
    }
    ds4_str *tokens = NULL, *merges = NULL;
    size_t n_tokens = 0, n_merges = 0;
    ds4_tokenizer *tok = NULL;
    if (string_array(f, "tokenizer.ggml.tokens", &tokens, &n_tokens, err) ||
        string_array(f, "tokenizer.ggml.merges", &merges, &n_merges, err))
        goto done;
    tok = ds4_tokenizer_create(tokens, n_tokens, merges, n_merges, err);
done:
    free(tokens);
    free(merges);
    return tok;
}
