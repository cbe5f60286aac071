/* ds4-bench — prefill and generation throughput at growing context frontiers
 * (INTERFACES.md §10). For each frontier F it prefills only the new tokens
 * since the previous frontier (timed), snapshots the session, greedily
 * decodes --gen-tokens tokens never choosing EOS (timed), restores the
 * snapshot and writes a CSV row:
 *   ctx_tokens,prefill_tokens,prefill_tps,gen_tokens,gen_tps,kvcache_bytes
 * --plot FILE draws prefill and decode t/s against context with gnuplot
 * (SVG, or PNG when FILE ends in .png). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/engine.h"
#include "engine/prompt.h"
#include "text/chat.h"

typedef struct bench {
    const char *model, *prompt_file, *chat_prompt_file, *system, *csv, *plot;
    ds4_backend_kind backend;
    ds4_kv_type kv_type;
    int threads, ctx_start, ctx_max, ctx_alloc, step_incr, gen_tokens, prefill_chunk;
    double step_mul;
} bench;

static void usage(FILE *out) {
    fprintf(out, "usage: ds4-bench (--prompt-file FILE | --chat-prompt-file FILE) [options]\n"
                 "  -m, --model FILE        model (default ./ds4flash.gguf)\n"
                 "  --prompt-file FILE      raw text, tokenized as plain text (no BOS, no template)\n"
                 "  --chat-prompt-file FILE one non-thinking chat turn with --system\n"
                 "  -sys, --system TEXT     system text for --chat-prompt-file (default \"" DS4_CHAT_BENCH_SYSTEM "\")\n"
                 "  --ctx-start N           first frontier (default 2048)\n"
                 "  --ctx-max N             last frontier (default 32768)\n"
                 "  --ctx-alloc N           session context (default ctx-max + gen-tokens + 1)\n"
                 "  --step-incr N           frontier step when --step-mul is 1 (default 2048)\n"
                 "  --step-mul F            multiply the frontier by F each step (default 1: add --step-incr)\n"
                 "  --gen-tokens N          greedy tokens per frontier (default 128; aliases --tokens, -n)\n"
                 "  --csv FILE              CSV output (default stdout)\n"
                 "  --plot FILE             plot prefill/decode t/s vs context with gnuplot (.svg or .png)\n"
                 "  --prefill-chunk N       prefill chunk (default $DS4_PREFILL_CHUNK, else 4096 on a GPU with room, else 2048)\n"
                 "  --kv-type T             KV cache storage: f16 (default), bf16, fp8 (half the bytes, exact for the FP8/FP4-simulated rows) or f32 (oracle mode's default)\n"
                 "  --cpu | --cuda          backend;  -t, --threads N  CPU threads\n");
}

static int num(const char *flag, const char *s, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    const long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi) {
        fprintf(stderr, "ds4-bench: %s expects an integer in [%ld, %ld], got '%s'\n", flag, lo, hi, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse(int argc, char **argv, bench *b) {
    memset(b, 0, sizeof(*b));
    b->model = "ds4flash.gguf";
    b->system = DS4_CHAT_BENCH_SYSTEM;
    b->ctx_start = 2048;
    b->ctx_max = 32768;
    b->step_incr = 2048;
    b->step_mul = 1.0;
    b->gen_tokens = 128;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG()                                                               \
    do {                                                                    \
        if (!v) {                                                           \
            fprintf(stderr, "ds4-bench: %s needs a value\n", a);            \
            return -1;                                                      \
        }                                                                   \
        i++;                                                                \
    } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            ARG();
            b->model = v;
        } else if (!strcmp(a, "--prompt-file")) {
            ARG();
            b->prompt_file = v;
        } else if (!strcmp(a, "--chat-prompt-file")) {
            ARG();
            b->chat_prompt_file = v;
        } else if (!strcmp(a, "-sys") || !strcmp(a, "--system")) {
            ARG();
            b->system = v;
        } else if (!strcmp(a, "--ctx-start")) {
            ARG();
            if (num(a, v, 1, 1 << 30, &b->ctx_start)) return -1;
        } else if (!strcmp(a, "--ctx-max")) {
            ARG();
            if (num(a, v, 1, 1 << 30, &b->ctx_max)) return -1;
        } else if (!strcmp(a, "--ctx-alloc")) {
            ARG();
            if (num(a, v, 1, 1 << 30, &b->ctx_alloc)) return -1;
        } else if (!strcmp(a, "--step-incr")) {
            ARG();
            if (num(a, v, 1, 1 << 30, &b->step_incr)) return -1;
        } else if (!strcmp(a, "--step-mul")) {
            ARG();
            char *end;
            b->step_mul = strtod(v, &end);
            if (*end || end == v || !(b->step_mul >= 1.0) || b->step_mul > 1e6) {
                fprintf(stderr, "ds4-bench: --step-mul must be a number >= 1, got '%s'\n", v);
                return -1;
            }
        } else if (!strcmp(a, "--gen-tokens") || !strcmp(a, "--tokens") || !strcmp(a, "-n")) {
            ARG();
            if (num(a, v, 0, 1 << 24, &b->gen_tokens)) return -1;
        } else if (!strcmp(a, "--csv")) {
            ARG();
            b->csv = v;
        } else if (!strcmp(a, "--plot")) {
            ARG();
            b->plot = v;
        } else if (!strcmp(a, "--prefill-chunk")) {
            ARG();
            if (num(a, v, 1, 1 << 24, &b->prefill_chunk)) return -1;
        } else if (!strcmp(a, "--kv-type")) {
            ARG();
            if (ds4_kv_type_parse(v, &b->kv_type) != 0) {
                fprintf(stderr, "ds4-bench: --kv-type expects f16, bf16, fp8 or f32, got '%s'\n", v);
                return -1;
            }
        } else if (!strcmp(a, "--cpu")) {
            b->backend = DS4_BACKEND_CPU;
        } else if (!strcmp(a, "--cuda")) {
            b->backend = DS4_BACKEND_CUDA;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            ARG();
            if (num(a, v, 1, 4096, &b->threads)) return -1;
        } else {
            fprintf(stderr, "ds4-bench: unknown option '%s' (see --help)\n", a);
            return -1;
        }
#undef ARG
    }
    if (!!b->prompt_file == !!b->chat_prompt_file) {
        fprintf(stderr, "ds4-bench: give exactly one of --prompt-file and --chat-prompt-file\n");
        return -1;
    }
    if (b->ctx_start > b->ctx_max) {
        fprintf(stderr, "ds4-bench: --ctx-start %d is larger than --ctx-max %d\n", b->ctx_start, b->ctx_max);
        return -1;
    }
    const long need = (long)b->ctx_max + b->gen_tokens + 1;
    if (!b->ctx_alloc) b->ctx_alloc = (int)need;
    if (b->ctx_alloc < need) {
        fprintf(stderr, "ds4-bench: --ctx-alloc %d must be at least ctx-max + gen-tokens + 1 = %ld\n", b->ctx_alloc, need);
        return -1;
    }
    return 0;
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "ds4-bench: cannot open '%s': %s\n", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fprintf(stderr, "ds4-bench: '%s' is not a regular file\n", path);
        fclose(f);
        return NULL;
    }
    char *buf = malloc((size_t)st.st_size + 1);
    if (!buf || fread(buf, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
        fprintf(stderr, "ds4-bench: cannot read '%s'\n", path);
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    *len = (size_t)st.st_size;
    return buf;
}

static int run_plot(const char *csv, const char *plot) {
    const size_t n = strlen(plot);
    const int png = n > 4 && !strcmp(plot + n - 4, ".png");
    char script[] = "/tmp/ds4-bench-plot.XXXXXX";
    const int fd = mkstemp(script);
    if (fd < 0) return -1;
    FILE *f = fdopen(fd, "w");
    fprintf(f,
            "set terminal %s size 900,540\n"
            "set output '%s'\n"
            "set datafile separator ','\n"
            "set key autotitle columnhead top right\n"
            "set title 'ds4-bench: throughput at each context frontier'\n"
            "set xlabel 'context (tokens)'\n"
            "set ylabel 'prefill (tokens/s)'\n"
            "set y2label 'generation (tokens/s)'\n"
            "set ytics nomirror\nset y2tics\nset grid\nset yrange [0:*]\nset y2range [0:*]\n"
            "plot '%s' using 1:3 with linespoints lw 2 title 'prefill t/s' axes x1y1, "
            "'' using 1:5 with linespoints lw 2 title 'generation t/s' axes x1y2\n",
            png ? "pngcairo" : "svg", plot, csv);
    fclose(f);
    char cmd[8192];
    snprintf(cmd, sizeof(cmd), "gnuplot '%s'", script);
    const int st = system(cmd);
    unlink(script);
    if (st != 0) {
        fprintf(stderr, "ds4-bench: gnuplot failed (is gnuplot installed? scripts/install-deps.sh installs it)\n");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    bench b;
    if (parse(argc, argv, &b) != 0) return 2;
    size_t len = 0;
    char *text = read_file(b.prompt_file ? b.prompt_file : b.chat_prompt_file, &len);
    if (!text) return 1;
    ds4_session_opts o;
    ds4_session_opts_default(&o);
    o.ctx = b.ctx_alloc;
    o.prefill_chunk = b.prefill_chunk;
    o.backend = b.backend;
    o.n_threads = b.threads;
    o.kv_type = b.kv_type;
    ds4_err err = {{0}};
    ds4_engine *e = ds4_engine_open(b.model, &o, &err);
    if (!e) {
        fprintf(stderr, "ds4-bench: %s\n", err.msg);
        free(text);
        return 1;
    }
    ds4_tokvec toks = {0};
    int rc = 1;
    if (b.prompt_file) {
        rc = ds4_tokenize(e->tok, text, len, false, &toks, &err);
    } else {
        rc = ds4_prompt_begin(e->tok, DS4_THINK_NONE, b.system, strlen(b.system), &toks, &err);
        if (rc == 0) rc = ds4_prompt_user_turn(e->tok, DS4_THINK_NONE, text, len, &toks, &err);
    }
    free(text);
    FILE *csv = stdout;
    uint8_t *snap = NULL;
    if (rc != 0) {
        fprintf(stderr, "ds4-bench: %s\n", err.msg);
        goto out;
    }
    rc = 1;
    if ((int)toks.n < b.ctx_max) {
        fprintf(stderr, "ds4-bench: the prompt has %zu tokens, fewer than --ctx-max %d\n", toks.n, b.ctx_max);
        goto out;
    }
    if (b.csv && !(csv = fopen(b.csv, "w"))) {
        fprintf(stderr, "ds4-bench: cannot write '%s': %s\n", b.csv, strerror(errno));
        goto out;
    }
    fprintf(stderr, "ds4-bench: %s, backend %s, ctx %d, prefill_chunk=%d, kv=%s, %zu prompt tokens available\n", b.model,
            ds4_session_backend_name(e->sess), b.ctx_alloc, ds4_session_chunk(e->sess), ds4_kv_type_name(e->sess->kv_type),
            toks.n);
    fprintf(csv, "ctx_tokens,prefill_tokens,prefill_tps,gen_tokens,gen_tps,kvcache_bytes\n");
    fflush(csv);
    int prev = 0;
    for (int F = b.ctx_start;;) {
        ds4_sync_stats st;
        if (ds4_engine_sync(e, toks.ids, F, &st, &err) != 0) {
            fprintf(stderr, "ds4-bench: prefill to %d: %s\n", F, err.msg);
            goto out;
        }
        size_t snap_len = 0;
        free(snap);
        snap = NULL;
        if (ds4_session_snapshot(e->sess, &snap, &snap_len, &err) != 0) {
            fprintf(stderr, "ds4-bench: snapshot: %s\n", err.msg);
            goto out;
        }
        /* greedy with EOS banned, every token evaluated: the engine's
         * generation path (chained on the device where the backend can) */
        ds4_gen_opts go = {.max_tokens = b.gen_tokens, .ban_eos = true};
        go.sampling = ds4_sampling_defaults();
        go.sampling.temperature = 0.0f;
        ds4_gen_result gr;
        const double t0 = ds4_now();
        const int grc = ds4_engine_generate(e, &go, &gr, &err);
        if (grc != 0 || gr.n_tokens != b.gen_tokens) {
            fprintf(stderr, "ds4-bench: generation at ctx %d: %s\n", F,
                    grc != 0 ? err.msg : "stopped before --gen-tokens (context full)");
            goto out;
        }
        const double gen_s = ds4_now() - t0;
        if (ds4_session_load(e->sess, snap, snap_len, &err) != 0) {
            fprintf(stderr, "ds4-bench: restore: %s\n", err.msg);
            goto out;
        }
        const int ptoks = F - prev;
        fprintf(csv, "%d,%d,%.2f,%d,%.2f,%zu\n", F, ptoks, st.seconds > 0 ? st.evaluated / st.seconds : 0.0, b.gen_tokens,
                gen_s > 0 ? b.gen_tokens / gen_s : 0.0, snap_len);
        fflush(csv);
        fprintf(stderr, "ds4-bench: ctx %d: prefill %d tokens at %.1f t/s, generation %.1f t/s\n", F, ptoks,
                st.seconds > 0 ? st.evaluated / st.seconds : 0.0, gen_s > 0 ? b.gen_tokens / gen_s : 0.0);
        if (F >= b.ctx_max) break;
        prev = F;
        long next = b.step_mul > 1.0 ? (long)ceil(F * b.step_mul) : (long)F + b.step_incr;
        if (next <= F) next = F + 1;
        F = next > b.ctx_max ? b.ctx_max : (int)next;
    }
    rc = 0;
    if (b.plot) {
        if (!b.csv) {
            fprintf(stderr, "ds4-bench: --plot needs --csv FILE\n");
            rc = 1;
        } else {
            fclose(csv);
            csv = stdout;
            if (run_plot(b.csv, b.plot) != 0) rc = 1;
        }
    }
out:
    if (csv != stdout) fclose(csv);
    free(snap);
    ds4_tokvec_free(&toks);
    ds4_engine_close(e);
    return rc;
}
