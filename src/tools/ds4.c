/* ds4 — command-line front end: one-shot generation, interactive chat, and
 * the diagnostics (--inspect, --eval-tokens, --dump-tokens, --dump-logprobs).
 * Run `ds4 --help`. With no model file it builds a small random demo model
 * (and says where the real weights are). */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifdef DS4_HAVE_LIBEDIT
#include <editline/readline.h>
#else
/* Without libedit (a machine where it is not installed): plain line input,
 * no editing or history. */
static char *readline(const char *prompt) {
    fputs(prompt, stdout);
    fflush(stdout);
    size_t cap = 256, n = 0;
    char *buf = malloc(cap);
    int ch;
    while (buf && (ch = getchar()) != EOF && ch != '\n') {
        if (n + 1 == cap) {
            char *b2 = realloc(buf, cap *= 2);
            if (!b2) break;
            buf = b2;
        }
        buf[n++] = (char)ch;
    }
    if (!buf || (n == 0 && ch == EOF)) {
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    return buf;
}
static void using_history(void) {}
static void stifle_history(int n) { (void)n; }
static int read_history(const char *f) { (void)f; return 0; }
static int write_history(const char *f) { (void)f; return 0; }
static int add_history(const char *l) { (void)l; return 0; }
#endif

#include "engine/engine.h"
#include "engine/logprobs.h"
#include "engine/prompt.h"
#include "synth/synth.h"
#include "text/chat.h"

#define DEFAULT_MODEL "ds4flash.gguf"
#define DEMO_MODEL "ds4flash-demo.gguf"
#define WEIGHTS_URL "https://huggingface.co/antirez/deepseek-v4-gguf"

typedef struct cli {
    const char *model;
    bool model_given;
    bool inspect;
    const char *eval_tokens, *dump_logits;
    int decode_from;
    const char *prompt;
    const char *prompt_file;
    const char *system;
    int n_predict;
    int ctx;
    int prefill_chunk;
    int threads;
    ds4_backend_kind backend;
    bool oracle;
    ds4_kv_type kv_type;
    ds4_think_mode think;
    ds4_sampling sampling;
    bool seed_given;
    bool dump_tokens;
    const char *dump_logprobs;
    int logprobs_top_k;
} cli;

static void usage(FILE *out) {
    fprintf(out,
            "usage: ds4 [options]                  interactive chat\n"
            "       ds4 -p TEXT | --prompt-file F  one-shot generation\n"
            "\n"
            "  -m, --model FILE        model GGUF (default ./" DEFAULT_MODEL "; without it a demo model is made)\n"
            "  -p, --prompt TEXT       one-shot prompt\n"
            "  --prompt-file FILE      one-shot prompt from a file (bytes kept as they are)\n"
            "  -sys, --system TEXT     system text (default \"" DS4_CHAT_DEFAULT_SYSTEM "\"; \"\" for none)\n"
            "  -n, --tokens N          most tokens to generate (default 50000)\n"
            "  -c, --ctx N             context size in tokens (default 32768)\n"
            "  --temp F                temperature, 0 = greedy (default 1)\n"
            "  --top-p F               nucleus sampling (default 1)\n"
            "  --min-p F               min-p (default 0.05)\n"
            "  --top-k N               top-k (default 0: off)\n"
            "  --seed N                sampling seed (default: time based)\n"
            "  --think | --nothink | --think-max   thinking mode (default --think; Think Max needs --ctx >= 393216)\n"
            "  --cpu | --cuda          backend (default: CUDA when built in and a GPU is present)\n"
            "  -t, --threads N         CPU threads (default: all cores)\n"
            "  --prefill-chunk N       prefill chunk (default $DS4_PREFILL_CHUNK, else 4096 on a GPU with room, else 2048)\n"
            "  --kv-type T             KV cache storage: f16 (default), bf16, fp8 (half the bytes, exact for the FP8/FP4-simulated rows) or f32 (oracle mode's default)\n"
            "Diagnostics:\n"
            "  --inspect               validate the model and print a summary (reads no tensor data)\n"
            "  --dump-tokens           print the tokens of the prompt (special tokens recognized) and exit\n"
            "  --dump-logprobs FILE    greedy continuation of the prompt with top-k logprobs as JSON\n"
            "  --logprobs-top-k N      alternatives per step (default 20, at most 128)\n"
            "  --eval-tokens FILE      evaluate int32 token ids (no BOS, no template) ...\n"
            "  --dump-logits FILE      ... and write f32 logits of every position\n"
            "  --decode-from N         ... prefilling the first N tokens, then decoding one at a time\n"
            "  --oracle-mode           no FP8/FP4 simulation, exact f32 caches (compare with transformers)\n"
            "Interactive commands: /help /think /think-max /nothink /ctx N /read FILE /quit (Ctrl+C stops a reply)\n"
            "Real weights: " WEIGHTS_URL "\n");
}

/* ------------------------------------------------------------------ argument parsing */

static int parse_long(const char *flag, const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    const long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi) {
        fprintf(stderr, "ds4: %s expects an integer in [%ld, %ld], got '%s'\n", flag, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_float(const char *flag, const char *s, double lo, double hi, float *out) {
    char *end;
    errno = 0;
    const double v = strtod(s, &end);
    if (errno || *end || end == s || !(v >= lo && v <= hi)) {
        fprintf(stderr, "ds4: %s expects a number in [%g, %g], got '%s'\n", flag, lo, hi, s);
        return -1;
    }
    *out = (float)v;
    return 0;
}

static int parse_args(int argc, char **argv, cli *c) {
    memset(c, 0, sizeof(*c));
    c->model = DEFAULT_MODEL;
    c->decode_from = -1;
    c->system = DS4_CHAT_DEFAULT_SYSTEM;
    c->n_predict = 50000;
    c->ctx = 32768;
    c->think = DS4_THINK_HIGH;
    c->sampling = ds4_sampling_defaults();
    c->logprobs_top_k = 20;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n;
#define VALUE()                                                                \
    do {                                                                       \
        if (!v) {                                                              \
            fprintf(stderr, "ds4: %s needs a value\n", a);                     \
            return -1;                                                         \
        }                                                                      \
        i++;                                                                   \
    } while (0)
#define IS(s1, s2) (!strcmp(a, s1) || !strcmp(a, s2))
        if (IS("-h", "--help")) {
            usage(stdout);
            exit(0);
        } else if (IS("-m", "--model")) {
            VALUE();
            c->model = v;
            c->model_given = true;
        } else if (IS("-p", "--prompt")) {
            VALUE();
            c->prompt = v;
        } else if (IS("--prompt-file", "--prompt-file")) {
            VALUE();
            c->prompt_file = v;
        } else if (IS("-sys", "--system")) {
            VALUE();
            c->system = v;
        } else if (IS("-n", "--tokens")) {
            VALUE();
            if (parse_long(a, v, 0, INT_MAX, &n)) return -1;
            c->n_predict = (int)n;
        } else if (IS("-c", "--ctx")) {
            VALUE();
            if (parse_long(a, v, 1, 1 << 30, &n)) return -1;
            c->ctx = (int)n;
        } else if (IS("--temp", "--temp")) {
            VALUE();
            if (parse_float(a, v, 0, 100, &c->sampling.temperature)) return -1;
        } else if (IS("--top-p", "--top-p")) {
            VALUE();
            if (parse_float(a, v, 0, 1, &c->sampling.top_p)) return -1;
        } else if (IS("--min-p", "--min-p")) {
            VALUE();
            if (parse_float(a, v, 0, 1, &c->sampling.min_p)) return -1;
        } else if (IS("--top-k", "--top-k")) {
            VALUE();
            if (parse_long(a, v, 0, 1024, &n)) return -1;
            c->sampling.top_k = (int)n;
        } else if (IS("--seed", "--seed")) {
            VALUE();
            if (parse_long(a, v, 1, LONG_MAX, &n)) return -1;
            c->sampling.seed = (uint64_t)n;
            c->seed_given = true;
        } else if (IS("--think", "--think")) {
            c->think = DS4_THINK_HIGH;
        } else if (IS("--nothink", "--nothink")) {
            c->think = DS4_THINK_NONE;
        } else if (IS("--think-max", "--think-max")) {
            c->think = DS4_THINK_MAX;
        } else if (IS("--cpu", "--cpu")) {
            c->backend = DS4_BACKEND_CPU;
        } else if (IS("--cuda", "--cuda")) {
            c->backend = DS4_BACKEND_CUDA;
        } else if (IS("-t", "--threads")) {
            VALUE();
            if (parse_long(a, v, 1, 4096, &n)) return -1;
            c->threads = (int)n;
        } else if (IS("--prefill-chunk", "--prefill-chunk")) {
            VALUE();
            if (parse_long(a, v, 1, 1 << 24, &n)) return -1;
            c->prefill_chunk = (int)n;
        } else if (IS("--kv-type", "--kv-type")) {
            VALUE();
            if (ds4_kv_type_parse(v, &c->kv_type) != 0) {
                fprintf(stderr, "ds4: --kv-type expects f16, bf16, fp8 or f32, got '%s'\n", v);
                return -1;
            }
        } else if (IS("--inspect", "--inspect")) {
            c->inspect = true;
        } else if (IS("--dump-tokens", "--dump-tokens")) {
            c->dump_tokens = true;
        } else if (IS("--dump-logprobs", "--dump-logprobs")) {
            VALUE();
            c->dump_logprobs = v;
        } else if (IS("--logprobs-top-k", "--logprobs-top-k")) {
            VALUE();
            if (parse_long(a, v, 1, 128, &n)) return -1;
            c->logprobs_top_k = (int)n;
        } else if (IS("--eval-tokens", "--eval-tokens")) {
            VALUE();
            c->eval_tokens = v;
        } else if (IS("--dump-logits", "--dump-logits")) {
            VALUE();
            c->dump_logits = v;
        } else if (IS("--decode-from", "--decode-from")) {
            VALUE();
            if (parse_long(a, v, 0, INT_MAX, &n)) return -1;
            c->decode_from = (int)n;
        } else if (IS("--oracle-mode", "--oracle-mode")) {
            c->oracle = true;
        } else if (IS("--server", "--server")) {
            fprintf(stderr, "ds4: the HTTP server is a separate program: ds4-server (see ds4-server --help)\n");
            return -1;
        } else {
            fprintf(stderr, "ds4: unknown option '%s' (see --help)\n", a);
            return -1;
        }
#undef IS
#undef VALUE
    }
    if (c->prompt && c->prompt_file) {
        fprintf(stderr, "ds4: give either -p or --prompt-file, not both\n");
        return -1;
    }
    if (c->dump_logits && !c->eval_tokens) {
        fprintf(stderr, "ds4: --dump-logits needs --eval-tokens\n");
        return -1;
    }
    if ((c->dump_tokens || c->dump_logprobs) && !c->prompt && !c->prompt_file) {
        fprintf(stderr, "ds4: %s needs a prompt (-p or --prompt-file)\n", c->dump_tokens ? "--dump-tokens" : "--dump-logprobs");
        return -1;
    }
    if (!c->seed_given) c->sampling.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    return 0;
}

/* ------------------------------------------------------------------ small helpers */

static char *read_whole_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "ds4: cannot open '%s': %s\n", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fprintf(stderr, "ds4: '%s' is not a regular file\n", path);
        fclose(f);
        return NULL;
    }
    char *buf = malloc((size_t)st.st_size + 1);
    if (!buf || fread(buf, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
        fprintf(stderr, "ds4: cannot read '%s'\n", path);
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    buf[st.st_size] = 0;
    *len = (size_t)st.st_size;
    return buf;
}

static volatile sig_atomic_t g_interrupted;
static void on_sigint(int sig) {
    (void)sig;
    g_interrupted = 1;
}

/* Progress of long prefills: a bar on a terminal, plain lines otherwise. */
typedef struct progress {
    double t0;
    int last_pct;
    bool tty;
    bool shown;
} progress;
static progress g_progress;

static int on_progress(void *ud, int done, int total) {
    (void)ud;
    progress *p = &g_progress;
    if (total < 256) return g_interrupted;
    const double dt = ds4_now() - p->t0;
    const int pct = (int)((int64_t)done * 100 / total);
    if (p->tty) {
        char bar[41];
        const int fill = pct * 40 / 100;
        for (int i = 0; i < 40; i++) bar[i] = i < fill ? '=' : ' ';
        bar[40] = 0;
        fprintf(stderr, "\rprefill [%s] %d/%d tokens, %.1f t/s ", bar, done, total, dt > 0 ? done / dt : 0.0);
        p->shown = true;
        if (done == total) fprintf(stderr, "\n");
    } else if (pct >= p->last_pct + 10 || done == total) {
        p->last_pct = pct;
        fprintf(stderr, "ds4: prefill %d/%d tokens (%d%%), %.1f t/s\n", done, total, pct, dt > 0 ? done / dt : 0.0);
    }
    return g_interrupted;
}

static void progress_start(void) {
    g_progress.t0 = ds4_now();
    g_progress.last_pct = -100;
    g_progress.tty = isatty(2);
    g_progress.shown = false;
}

/* ------------------------------------------------------------------ model / demo model */

static const char *tokdata_path(void) {
    static char path[PATH_MAX + 64];
    char exe[PATH_MAX];
    const ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            snprintf(path, sizeof(path), "%s/../tokenizer/deepseek-v4.tok", exe);
            if (access(path, R_OK) == 0) return path;
        }
    }
    return access("build/tokenizer/deepseek-v4.tok", R_OK) == 0 ? "build/tokenizer/deepseek-v4.tok" : NULL;
}

/* No model at the default path: explain, then build (or reuse) a demo model. */
static const char *ensure_demo_model(void) {
    fprintf(stderr,
            "ds4: no model file ./" DEFAULT_MODEL ".\n"
            "ds4: real weights are the ds4 GGUF files of DeepSeek V4 Flash (q2 80.8 GiB, q4 153 GiB):\n"
            "ds4:   " WEIGHTS_URL "\n"
            "ds4: download one, then run `ds4 -m FILE` or save it as ./" DEFAULT_MODEL ".\n");
    struct stat st;
    if (stat(DEMO_MODEL, &st) == 0) {
        fprintf(stderr, "ds4: using the random-weight demo model ./" DEMO_MODEL " (its replies are noise).\n");
        return DEMO_MODEL;
    }
    fprintf(stderr, "ds4: creating a small random-weight demo model ./" DEMO_MODEL " to show the program working "
                    "(its replies are noise) ...\n");
    ds4_synth_opts o;
    ds4_synth_opts_default(&o);
    o.hp.n_layer = 4;
    o.hp.n_embd = 256;
    o.hp.n_ff = 256;
    o.hp.n_vocab = 8192;
    o.policy = DS4_SYNTH_DS4;
    o.tokdata = tokdata_path();
    if (!o.tokdata) o.hp.n_vocab = 512; /* byte-level vocabulary only */
    ds4_err err = {{0}};
    if (ds4_synth_write(DEMO_MODEL, &o, &err) != 0) {
        fprintf(stderr, "ds4: cannot create the demo model: %s\n", err.msg);
        unlink(DEMO_MODEL);
        return NULL;
    }
    return DEMO_MODEL;
}

static ds4_engine *open_engine(const cli *c, const char *model, int ctx) {
    ds4_session_opts o;
    ds4_session_opts_default(&o);
    o.ctx = ctx;
    o.prefill_chunk = c->prefill_chunk;
    o.backend = c->backend;
    o.n_threads = c->threads;
    o.oracle = c->oracle;
    o.kv_type = c->kv_type;
    o.progress = on_progress;
    ds4_err err = {{0}};
    const double t0 = ds4_now();
    ds4_engine *e = ds4_engine_open(model, &o, &err);
    if (!e) {
        fprintf(stderr, "ds4: %s\n", err.msg);
        return NULL;
    }
    fprintf(stderr, "ds4: %s: %d layers x %d, backend %s, ctx %d, prefill_chunk=%d, kv=%s, state %.1f MiB, loaded in %.1f s\n",
            model, e->model->hp.n_layer, e->model->hp.n_embd, ds4_session_backend_name(e->sess), ds4_session_ctx(e->sess),
            ds4_session_chunk(e->sess), ds4_kv_type_name(e->sess->kv_type),
            (double)e->sess->ops->memory_bytes(e->sess) / (1024.0 * 1024.0), ds4_now() - t0);
    return e;
}

/* ------------------------------------------------------------------ output of generated text */

typedef struct printer {
    const ds4_tokenizer *tok;
    bool reasoning; /* inside <think> ... </think> */
    bool color;
    int32_t think_end;
} printer;

static int print_token(void *ud, int32_t id, const char *text, size_t len) {
    printer *p = ud;
    if (id >= 0 && id == p->think_end && p->reasoning) {
        p->reasoning = false;
        fputs(p->color ? "\033[0m\n" : "\n", stdout);
        fflush(stdout);
        return g_interrupted;
    }
    if (len) fwrite(text, 1, len, stdout);
    fflush(stdout);
    return g_interrupted;
}

static void printer_begin(printer *p, const ds4_engine *e, ds4_think_mode think) {
    p->tok = e->tok;
    p->think_end = ds4_tokenizer_specials(e->tok)->think_end;
    p->reasoning = think != DS4_THINK_NONE;
    p->color = isatty(1);
    if (p->reasoning && p->color) fputs("\033[90m", stdout);
}

static void printer_end(printer *p) {
    if (p->reasoning && p->color) fputs("\033[0m", stdout);
    fputs("\n", stdout);
    fflush(stdout);
}

/* ------------------------------------------------------------------ modes */

static ds4_think_mode effective_think(const cli *c, int ctx) {
    const ds4_think_mode m = ds4_chat_effective_think(c->think, ctx);
    if (m != c->think)
        fprintf(stderr, "ds4: Think Max needs --ctx >= %ld; using normal thinking\n", DS4_CHAT_THINK_MAX_MIN_CTX);
    return m;
}

static int run_eval_tokens(const cli *c, const char *model);
static int run_interactive(cli *c, const char *model);

static int run_dump_tokens(const cli *c, const char *model, const char *text, size_t len) {
    ds4_err err = {{0}};
    gguf_file *f = gguf_open(model, &err);
    if (!f) {
        fprintf(stderr, "ds4: %s\n", err.msg);
        return 1;
    }
    ds4_tokenizer *tok = ds4_tokenizer_from_gguf(f, &err);
    gguf_close(f);
    if (!tok) {
        fprintf(stderr, "ds4: %s: %s\n", model, err.msg);
        return 1;
    }
    ds4_tokvec v = {0};
    if (ds4_tokenize(tok, text, len, true, &v, &err) != 0) {
        fprintf(stderr, "ds4: %s\n", err.msg);
        ds4_tokenizer_free(tok);
        return 1;
    }
    printf("[");
    for (size_t i = 0; i < v.n; i++) printf("%s%d", i ? ", " : "", v.ids[i]);
    printf("]\n");
    for (size_t i = 0; i < v.n; i++) {
        size_t sl = 0;
        const char *s = ds4_token_str(tok, v.ids[i], &sl);
        printf("%6d  %.*s\n", v.ids[i], (int)sl, s);
    }
    ds4_tokvec_free(&v);
    ds4_tokenizer_free(tok);
    (void)c;
    return 0;
}

static int run_oneshot(const cli *c, const char *model, const char *text, size_t len) {
    ds4_engine *e = open_engine(c, model, c->ctx);
    if (!e) return 1;
    const ds4_think_mode think = effective_think(c, c->ctx);
    ds4_tokvec prompt = {0};
    ds4_err err = {{0}};
    int rc = 1;
    if (ds4_prompt_oneshot(e->tok, think, c->system, strlen(c->system), text, len, &prompt, &err) != 0) {
        fprintf(stderr, "ds4: %s\n", err.msg);
        goto out;
    }
    if ((int)prompt.n >= ds4_session_ctx(e->sess)) {
        fprintf(stderr, "ds4: the prompt has %zu tokens but --ctx is %d: it needs at least %zu (one slot for the reply)\n",
                prompt.n, ds4_session_ctx(e->sess), prompt.n + 1);
        goto out;
    }
    progress_start();
    ds4_sync_stats st;
    if (ds4_engine_sync(e, prompt.ids, (int)prompt.n, &st, &err) != 0) {
        fprintf(stderr, "ds4: %s\n", err.msg);
        goto out;
    }
    if (st.cancelled) {
        fprintf(stderr, "\nds4: interrupted\n");
        goto out;
    }
    if (c->dump_logprobs) {
        FILE *f = fopen(c->dump_logprobs, "w");
        if (!f) {
            fprintf(stderr, "ds4: cannot write '%s': %s\n", c->dump_logprobs, strerror(errno));
            goto out;
        }
        const int r = ds4_dump_logprobs(e, (int)prompt.n, c->n_predict, c->logprobs_top_k, f, &err);
        if (fclose(f) != 0 || r != 0) {
            fprintf(stderr, "ds4: writing '%s' failed%s%s\n", c->dump_logprobs, r ? ": " : "", r ? err.msg : "");
            goto out;
        }
        rc = 0;
        goto out;
    }
    printer p;
    printer_begin(&p, e, think);
    ds4_gen_opts go = {.max_tokens = c->n_predict, .sampling = c->sampling, .on_token = print_token, .ud = &p};
    ds4_gen_result gr;
    if (ds4_engine_generate(e, &go, &gr, &err) != 0) {
        printer_end(&p);
        fprintf(stderr, "ds4: %s\n", err.msg);
        goto out;
    }
    printer_end(&p);
    fprintf(stderr, "ds4: prefill: %.2f t/s, generation: %.2f t/s\n", st.seconds > 0 ? st.evaluated / st.seconds : 0.0,
            gr.seconds > 0 ? gr.n_tokens / gr.seconds : 0.0);
    if (gr.stop == DS4_STOP_CONTEXT) fprintf(stderr, "ds4: stopped: the context is full (--ctx %d)\n", c->ctx);
    rc = 0;
out:
    ds4_tokvec_free(&prompt);
    ds4_engine_close(e);
    return rc;
}

int main(int argc, char **argv) {
    cli c;
    if (parse_args(argc, argv, &c) != 0) return 2;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL); /* no SA_RESTART: a blocking read returns */

    const char *model = c.model;
    struct stat st;
    if (stat(model, &st) != 0) {
        if (c.model_given || c.inspect || c.eval_tokens) {
            fprintf(stderr, "ds4: cannot open model '%s': %s\n", model, strerror(errno));
            if (!c.model_given) fprintf(stderr, "ds4: real weights: " WEIGHTS_URL "\n");
            return 1;
        }
        model = ensure_demo_model();
        if (!model) return 1;
    }
    if (c.inspect) {
        ds4_err err = {{0}};
        ds4_model *m = ds4_model_open(model, DS4_MODEL_NO_DATA_CHECKS, &err);
        if (!m) {
            fprintf(stderr, "ds4: %s\n", err.msg);
            return 1;
        }
        ds4_model_print_summary(m, stdout);
        ds4_model_close(m);
        return 0;
    }
    if (c.eval_tokens) return run_eval_tokens(&c, model);

    char *text = NULL;
    size_t len = 0;
    if (c.prompt_file) {
        text = read_whole_file(c.prompt_file, &len);
        if (!text) return 1;
    } else if (c.prompt) {
        text = strdup(c.prompt);
        len = strlen(c.prompt);
    }
    int rc;
    if (c.dump_tokens) rc = run_dump_tokens(&c, model, text, len);
    else if (text) rc = run_oneshot(&c, model, text, len);
    else rc = run_interactive(&c, model);
    free(text);
    return rc;
}

/* ------------------------------------------------------------------ --eval-tokens */

static int32_t *read_token_file(const char *path, int *n_out) {
    size_t bytes = 0;
    char *buf = read_whole_file(path, &bytes);
    if (!buf) return NULL;
    if (bytes == 0 || bytes % 4 != 0 || bytes > ((size_t)1 << 32)) {
        fprintf(stderr, "ds4: token file '%s' has %zu bytes: expected a non-empty multiple of 4 (int32 ids)\n", path, bytes);
        free(buf);
        return NULL;
    }
    *n_out = (int)(bytes / 4);
    return (int32_t *)buf;
}

static int run_eval_tokens(const cli *c, const char *model) {
    int n = 0;
    int32_t *toks = read_token_file(c->eval_tokens, &n);
    if (!toks) return 1;
    ds4_err err = {{0}};
    ds4_model *m = ds4_model_open(model, 0, &err);
    if (!m) {
        fprintf(stderr, "ds4: %s\n", err.msg);
        free(toks);
        return 1;
    }
    const int64_t V = m->hp.n_vocab;
    int rc = 1;
    ds4_session *s = NULL;
    float *logits = NULL;
    for (int i = 0; i < n; i++) {
        if (toks[i] < 0 || toks[i] >= V) {
            fprintf(stderr, "ds4: token %d at index %d of '%s' is outside the vocabulary [0, %lld)\n", toks[i], i,
                    c->eval_tokens, (long long)V);
            goto out;
        }
    }
    ds4_session_opts o;
    ds4_session_opts_default(&o);
    o.ctx = n;
    o.prefill_chunk = c->prefill_chunk;
    o.oracle = c->oracle;
    o.kv_type = c->kv_type;
    o.n_threads = c->threads;
    o.backend = c->backend;
    s = ds4_session_create(m, &o, &err);
    if (!s) {
        fprintf(stderr, "ds4: %s\n", err.msg);
        goto out;
    }
    logits = c->dump_logits ? malloc(sizeof(float) * (size_t)n * (size_t)V) : NULL;
    if (c->dump_logits && !logits) {
        fprintf(stderr, "ds4: out of memory for %d x %lld logits\n", n, (long long)V);
        goto out;
    }
    const int pre = c->decode_from >= 0 && c->decode_from < n ? c->decode_from : n;
    int r = pre > 0 ? ds4_session_eval(s, toks, pre, logits, &err) : 0;
    for (int i = pre; r == 0 && i < n; i++) {
        r = ds4_session_decode(s, toks[i], &err);
        if (r == 0 && logits) memcpy(logits + (size_t)i * V, ds4_session_logits(s), sizeof(float) * (size_t)V);
    }
    if (r != 0) {
        fprintf(stderr, "ds4: evaluation failed: %s\n", err.msg);
        goto out;
    }
    if (c->dump_logits) {
        FILE *f = fopen(c->dump_logits, "wb");
        const bool ok = f && fwrite(logits, sizeof(float), (size_t)n * V, f) == (size_t)n * V;
        if ((f && fclose(f) != 0) || !ok) {
            fprintf(stderr, "ds4: cannot write '%s': %s\n", c->dump_logits, strerror(errno));
            goto out;
        }
    }
    rc = 0;
out:
    free(logits);
    ds4_session_free(s);
    ds4_model_close(m);
    free(toks);
    return rc;
}

/* ------------------------------------------------------------------ interactive chat */

static void chat_help(void) {
    printf("commands:\n"
           "  /help         this list\n"
           "  /think        normal thinking for the next turns\n"
           "  /think-max    Think Max (needs --ctx >= 393216; otherwise normal thinking)\n"
           "  /nothink      no thinking\n"
           "  /ctx N        new context size N (the conversation is kept)\n"
           "  /read FILE    send the file's content as the next message\n"
           "  /quit, /exit  leave (Ctrl+D too); Ctrl+C stops a reply\n");
}

static int run_interactive(cli *c, const char *model) {
    ds4_engine *e = open_engine(c, model, c->ctx);
    if (!e) return 1;
    char hist[PATH_MAX] = "";
    const char *home = getenv("HOME");
    if (home) snprintf(hist, sizeof(hist), "%s/.ds4_history", home);
    using_history();
    stifle_history(512);
    if (hist[0]) read_history(hist);
    printf("ds4 interactive chat. /help for commands, Ctrl+D to leave.\n");

    ds4_think_mode think = effective_think(c, c->ctx);
    ds4_tokvec transcript = {0}; /* the conversation so far, as tokens */
    ds4_err err = {{0}};
    if (ds4_prompt_begin(e->tok, think, c->system, strlen(c->system), &transcript, &err) != 0) {
        fprintf(stderr, "ds4: %s\n", err.msg);
        ds4_engine_close(e);
        return 1;
    }
    const int32_t eos = ds4_tokenizer_specials(e->tok)->eos;
    for (;;) {
        g_interrupted = 0;
        char *line = readline("ds4> ");
        if (!line) {
            if (g_interrupted) {
                printf("\n(Ctrl+C: type /quit or Ctrl+D to leave)\n");
                continue;
            }
            printf("\n");
            break;
        }
        char *msg = line;
        size_t msg_len = strlen(line);
        char *file_text = NULL;
        if (msg_len == 0) {
            free(line);
            continue;
        }
        add_history(line);
        if (line[0] == '/') {
            if (!strcmp(line, "/quit") || !strcmp(line, "/exit")) {
                free(line);
                break;
            } else if (!strcmp(line, "/help")) {
                chat_help();
            } else if (!strcmp(line, "/think") || !strcmp(line, "/nothink") || !strcmp(line, "/think-max")) {
                const ds4_think_mode old = think;
                c->think = !strcmp(line, "/think") ? DS4_THINK_HIGH : !strcmp(line, "/nothink") ? DS4_THINK_NONE : DS4_THINK_MAX;
                think = effective_think(c, ds4_session_ctx(e->sess));
                if ((old == DS4_THINK_MAX) != (think == DS4_THINK_MAX)) {
                    /* the Think Max prefix sits right after BOS: rebuild the transcript start */
                    ds4_tokvec t2 = {0};
                    ds4_prompt_begin(e->tok, old, c->system, strlen(c->system), &t2, &err);
                    const size_t head = t2.n;
                    t2.n = 0;
                    ds4_prompt_begin(e->tok, think, c->system, strlen(c->system), &t2, &err);
                    for (size_t i = head; i < transcript.n; i++) ds4_tokvec_push(&t2, transcript.ids[i], &err);
                    ds4_tokvec_free(&transcript);
                    transcript = t2;
                }
                printf("thinking: %s\n", think == DS4_THINK_NONE ? "off" : think == DS4_THINK_MAX ? "max" : "on");
            } else if (!strncmp(line, "/ctx ", 5)) {
                long n;
                if (parse_long("/ctx", line + 5, 64, 1 << 30, &n) == 0) {
                    ds4_engine *e2 = open_engine(c, model, (int)n);
                    if (e2) {
                        ds4_engine_close(e);
                        e = e2;
                        c->ctx = (int)n;
                        printf("context: %d tokens (the conversation is re-evaluated on the next turn)\n", c->ctx);
                    }
                }
            } else if (!strncmp(line, "/read ", 6)) {
                file_text = read_whole_file(line + 6, &msg_len);
                if (file_text) msg = file_text;
            } else {
                printf("unknown command '%s' (/help lists them)\n", line);
            }
            if (!file_text) {
                free(line);
                continue;
            }
        }
        /* one turn: user text + generation prefix, then the reply, then EOS */
        const size_t undo = transcript.n;
        if (ds4_prompt_user_turn(e->tok, think, msg, msg_len, &transcript, &err) != 0) {
            fprintf(stderr, "ds4: %s\n", err.msg);
            free(file_text);
            free(line);
            continue;
        }
        if ((int)transcript.n >= ds4_session_ctx(e->sess)) {
            fprintf(stderr, "ds4: the conversation (%zu tokens) does not fit in the context (%d): use /ctx N\n", transcript.n,
                    ds4_session_ctx(e->sess));
            transcript.n = undo;
            free(file_text);
            free(line);
            continue;
        }
        progress_start();
        ds4_sync_stats st;
        if (ds4_engine_sync(e, transcript.ids, (int)transcript.n, &st, &err) != 0 || st.cancelled) {
            if (st.cancelled) printf("\n(interrupted)\n");
            else fprintf(stderr, "ds4: %s\n", err.msg);
            transcript.n = undo; /* a turn interrupted before any token is rolled back */
            free(file_text);
            free(line);
            continue;
        }
        printer p;
        printer_begin(&p, e, think);
        ds4_gen_opts go = {.max_tokens = c->n_predict, .sampling = c->sampling, .on_token = print_token, .ud = &p};
        ds4_gen_result gr;
        const int r = ds4_engine_generate(e, &go, &gr, &err);
        printer_end(&p);
        if (r != 0) fprintf(stderr, "ds4: %s\n", err.msg);
        if (g_interrupted) printf("(stopped)\n");
        /* the reply's tokens are the session's tokens after the prompt */
        const int32_t *all = ds4_session_tokens(e->sess);
        for (int i = (int)transcript.n; i < ds4_session_n_tokens(e->sess); i++) ds4_tokvec_push(&transcript, all[i], &err);
        if (gr.n_tokens == 0) transcript.n = undo;
        else ds4_tokvec_push(&transcript, eos, &err);
        free(file_text);
        free(line);
    }
    if (hist[0]) write_history(hist);
    ds4_tokvec_free(&transcript);
    ds4_engine_close(e);
    return 0;
}
