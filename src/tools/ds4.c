/* ds4 — command-line front end.
 *
 * Diagnostics (engine core):
 *   ds4 --inspect -m FILE
 *   ds4 -m FILE --eval-tokens TOKENS --dump-logits OUT [--prefill-chunk N]
 *       [--decode-from N] [--oracle-mode]
 * Generation and chat come with the text layer. Run with --help. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backend/backend.h"
#include "model/model.h"

typedef struct cli {
    const char *model;
    bool inspect;
    const char *eval_tokens;
    const char *dump_logits;
    int prefill_chunk;
    int decode_from; /* -1: prefill everything */
    bool oracle;
    int ctx;
    int threads;
    ds4_backend_kind backend;
} cli;

static void usage(FILE *out) {
    fprintf(out,
            "usage: ds4 [options]\n"
            "  -m, --model FILE        model GGUF (default ./ds4flash.gguf)\n"
            "  --inspect               validate the file and print a summary, without reading tensor data\n"
            "  --eval-tokens FILE      evaluate little-endian int32 token ids from FILE (no BOS, no template)\n"
            "  --dump-logits FILE      with --eval-tokens: write f32 logits of every position [n][vocab]\n"
            "  --prefill-chunk N       prefill chunk size (default 2048)\n"
            "  --decode-from N         prefill the first N tokens, then decode the rest one at a time\n"
            "  --oracle-mode           no FP8/FP4 simulation, exact f32 caches (compare with transformers)\n"
            "  -c, --ctx N             context size (default: the token count for --eval-tokens)\n"
            "  -t, --threads N         CPU threads (default: all cores)\n"
            "  --cpu | --cuda          backend (default: CUDA when available)\n"
            "  -h, --help              this help\n");
}

static int parse_int(const char *flag, const char *s, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    const long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi) {
        fprintf(stderr, "ds4: %s expects an integer in [%ld, %ld], got '%s'\n", flag, lo, hi, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse_args(int argc, char **argv, cli *c) {
    memset(c, 0, sizeof(*c));
    c->model = "ds4flash.gguf";
    c->decode_from = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define VALUE()                                                        \
    do {                                                               \
        if (!v) {                                                      \
            fprintf(stderr, "ds4: %s needs a value\n", a);             \
            return -1;                                                 \
        }                                                              \
        i++;                                                           \
    } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            VALUE();
            c->model = v;
        } else if (!strcmp(a, "--inspect")) {
            c->inspect = true;
        } else if (!strcmp(a, "--eval-tokens")) {
            VALUE();
            c->eval_tokens = v;
        } else if (!strcmp(a, "--dump-logits")) {
            VALUE();
            c->dump_logits = v;
        } else if (!strcmp(a, "--prefill-chunk")) {
            VALUE();
            if (parse_int(a, v, 1, 1 << 24, &c->prefill_chunk)) return -1;
        } else if (!strcmp(a, "--decode-from")) {
            VALUE();
            if (parse_int(a, v, 0, 1 << 30, &c->decode_from)) return -1;
        } else if (!strcmp(a, "--oracle-mode")) {
            c->oracle = true;
        } else if (!strcmp(a, "-c") || !strcmp(a, "--ctx")) {
            VALUE();
            if (parse_int(a, v, 1, 1 << 30, &c->ctx)) return -1;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            VALUE();
            if (parse_int(a, v, 1, 4096, &c->threads)) return -1;
        } else if (!strcmp(a, "--cpu")) {
            c->backend = DS4_BACKEND_CPU;
        } else if (!strcmp(a, "--cuda")) {
            c->backend = DS4_BACKEND_CUDA;
        } else {
            fprintf(stderr, "ds4: unknown option '%s' (see --help)\n", a);
            return -1;
        }
#undef VALUE
    }
    if (c->dump_logits && !c->eval_tokens) {
        fprintf(stderr, "ds4: --dump-logits needs --eval-tokens\n");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ --eval-tokens */

static int32_t *read_tokens(const char *path, int *n_out) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "ds4: cannot open token file '%s': %s\n", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fprintf(stderr, "ds4: '%s' is not a regular file\n", path);
        fclose(f);
        return NULL;
    }
    if (st.st_size % 4 != 0 || st.st_size == 0 || st.st_size > ((off_t)1 << 32)) {
        fprintf(stderr, "ds4: token file '%s' has %lld bytes: expected a non-empty multiple of 4 (int32 ids)\n", path,
                (long long)st.st_size);
        fclose(f);
        return NULL;
    }
    const int n = (int)(st.st_size / 4);
    int32_t *t = malloc((size_t)n * 4);
    if (!t || fread(t, 4, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "ds4: cannot read '%s'\n", path);
        free(t);
        fclose(f);
        return NULL;
    }
    fclose(f);
    *n_out = n;
    return t;
}

static int run_eval(const cli *c, ds4_model *m) {
    int n = 0;
    int32_t *toks = read_tokens(c->eval_tokens, &n);
    if (!toks) return 1;
    const int64_t V = m->hp.n_vocab;
    for (int i = 0; i < n; i++) {
        if (toks[i] < 0 || toks[i] >= V) {
            fprintf(stderr, "ds4: token %d at index %d of '%s' is outside the vocabulary [0, %lld)\n", toks[i], i,
                    c->eval_tokens, (long long)V);
            free(toks);
            return 1;
        }
    }
    ds4_session_opts o;
    ds4_session_opts_default(&o);
    o.ctx = c->ctx ? c->ctx : n;
    o.prefill_chunk = c->prefill_chunk;
    o.oracle = c->oracle;
    o.n_threads = c->threads;
    o.backend = c->backend;
    if (o.ctx < n) {
        fprintf(stderr, "ds4: %d tokens do not fit in --ctx %d\n", n, o.ctx);
        free(toks);
        return 1;
    }
    ds4_err err = {{0}};
    ds4_session *s = ds4_session_create(m, &o, &err);
    if (!s) {
        fprintf(stderr, "ds4: %s\n", err.msg);
        free(toks);
        return 1;
    }
    float *logits = c->dump_logits ? malloc(sizeof(float) * (size_t)n * (size_t)V) : NULL;
    if (c->dump_logits && !logits) {
        fprintf(stderr, "ds4: out of memory for %d x %lld logits\n", n, (long long)V);
        ds4_session_free(s);
        free(toks);
        return 1;
    }
    int pre = c->decode_from >= 0 && c->decode_from < n ? c->decode_from : n;
    int rc = 0;
    if (pre > 0) rc = ds4_session_eval(s, toks, pre, logits, &err);
    for (int i = pre; rc == 0 && i < n; i++) {
        rc = ds4_session_decode(s, toks[i], &err);
        if (rc == 0 && logits) memcpy(logits + (size_t)i * V, ds4_session_logits(s), sizeof(float) * (size_t)V);
    }
    if (rc != 0) {
        fprintf(stderr, "ds4: evaluation failed: %s\n", err.msg);
    } else if (c->dump_logits) {
        FILE *f = fopen(c->dump_logits, "wb");
        if (!f || fwrite(logits, sizeof(float), (size_t)n * V, f) != (size_t)n * V) {
            fprintf(stderr, "ds4: cannot write '%s': %s\n", c->dump_logits, strerror(errno));
            rc = 1;
        }
        if (f && fclose(f) != 0 && rc == 0) {
            fprintf(stderr, "ds4: cannot write '%s': %s\n", c->dump_logits, strerror(errno));
            rc = 1;
        }
    }
    free(logits);
    ds4_session_free(s);
    free(toks);
    return rc ? 1 : 0;
}

int main(int argc, char **argv) {
    cli c;
    if (parse_args(argc, argv, &c) != 0) return 2;
    if (!c.inspect && !c.eval_tokens) {
        fprintf(stderr, "ds4: nothing to do (use --inspect or --eval-tokens; see --help)\n");
        return 2;
    }
    ds4_err err = {{0}};
    ds4_model *m = ds4_model_open(c.model, c.inspect ? DS4_MODEL_NO_DATA_CHECKS : 0, &err);
    if (!m) {
        fprintf(stderr, "ds4: %s\n", err.msg);
        return 1;
    }
    int rc = 0;
    if (c.inspect) {
        ds4_model_print_summary(m, stdout);
    } else {
        rc = run_eval(&c, m);
    }
    ds4_model_close(m);
    return rc;
}
