/* ds4-synth — write a synthetic (random-weight) DeepSeek V4 GGUF.
 *
 *   ds4-synth -o tiny.gguf                        tiny f32 model (oracle recipe)
 *   ds4-synth --preset published --policy ds4 -o /dev/shm/q2.gguf
 *   ds4-synth --dequantize in.gguf -o out-f32.gguf
 *
 * Run with --help for every option. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf/quant.h"
#include "synth/synth.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: ds4-synth [options] -o FILE\n"
            "       ds4-synth --dequantize IN.gguf -o OUT.gguf\n"
            "\n"
            "Shape (defaults: the tiny oracle model; --preset published gives 43 x 4096):\n"
            "  --preset tiny|published|mid   starting shape (mid: 8 layers x 1024, 64 experts)\n"
            "  --layers N --embd N --vocab N --heads N --head-dim N --rope-dim N --q-lora N\n"
            "  --o-groups N --o-lora N --experts N --experts-used N --ff N --hash-layers N\n"
            "  --window N --hca-rate N (ratio of odd layers >= 3) --index-heads N --index-dim N --index-topk N\n"
            "Weights:\n"
            "  --policy f32|ds4              f32 everywhere, or the published ds4 tensor types\n"
            "  --expert-type T --down-type T routed gate/up and down types (iq2_xxs, q2_K, q4_K, q8_0, f16, f32)\n"
            "  --q4-from-layer N             layers >= N get Q4_K experts (a q2/q4 mixed file)\n"
            "  --branch-gain F               scale of residual-branch output weights (default 1; 0.1 = better conditioned)\n"
            "  --ffn-gain F                  scale of expert gate/up weights (default 1; 3 reaches the SwiGLU clamp)\n"
            "  --seed N                      random seed (default 1)\n"
            "  --exact-quant                 quantize huge tensors from floats instead of random blocks (slow)\n"
            "  --header-only                 metadata and tensor table only; the data region is a hole\n"
            "Other:\n"
            "  --tokenizer FILE              real tokenizer data (.tok from scripts/export-tokenizer.js)\n"
            "  -t, --threads N               writer threads (default: all cores)\n"
            "  -q, --quiet                   no progress lines\n");
}

static int parse_int(const char *flag, const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi) {
        fprintf(stderr, "ds4-synth: %s expects an integer in [%ld, %ld], got '%s'\n", flag, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_float(const char *flag, const char *s, float *out) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || *end || end == s || !(v >= 0) || v > 1e6f) {
        fprintf(stderr, "ds4-synth: %s expects a non-negative number, got '%s'\n", flag, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_type(const char *flag, const char *s, int *out) {
    static const struct {
        const char *name;
        int type;
    } T[] = {{"iq2_xxs", DS4_TYPE_IQ2_XXS}, {"q2_k", DS4_TYPE_Q2_K}, {"q2_K", DS4_TYPE_Q2_K}, {"q4_k", DS4_TYPE_Q4_K},
             {"q4_K", DS4_TYPE_Q4_K},       {"q8_0", DS4_TYPE_Q8_0}, {"f16", DS4_TYPE_F16},   {"f32", DS4_TYPE_F32}};
    for (size_t i = 0; i < sizeof(T) / sizeof(T[0]); i++)
        if (strcmp(s, T[i].name) == 0) {
            *out = T[i].type;
            return 0;
        }
    fprintf(stderr, "ds4-synth: %s: unknown type '%s' (iq2_xxs, q2_K, q4_K, q8_0, f16, f32)\n", flag, s);
    return -1;
}

static void set_schedule(ds4_hparams *hp, int hca_rate) {
    for (int il = 0; il < hp->n_layer; il++) {
        hp->ratio[il] = il < 2 ? 0 : (il % 2 == 0 ? 4 : hca_rate);
        hp->swiglu_clamp[il] = 10.0f;
    }
}

int main(int argc, char **argv) {
    ds4_synth_opts o;
    ds4_synth_opts_default(&o);
    o.progress = true;
    const char *out = NULL, *dequant_in = NULL;
    int hca_rate = 128;
    bool schedule_touched = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n;
#define NEED_ARG                                                            \
    do {                                                                    \
        if (!v) {                                                           \
            fprintf(stderr, "ds4-synth: %s needs a value\n", a);            \
            return 2;                                                       \
        }                                                                   \
        i++;                                                                \
    } while (0)
#define INT_OPT(flag, field, lo, hi)                                        \
    if (strcmp(a, flag) == 0) {                                             \
        NEED_ARG;                                                           \
        if (parse_int(a, v, lo, hi, &n) != 0) return 2;                     \
        field = (int)n;                                                     \
        continue;                                                           \
    }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(a, "-o") == 0 || strcmp(a, "--output") == 0) {
            NEED_ARG;
            out = v;
            continue;
        }
        if (strcmp(a, "--dequantize") == 0) {
            NEED_ARG;
            dequant_in = v;
            continue;
        }
        if (strcmp(a, "--preset") == 0) {
            NEED_ARG;
            if (strcmp(v, "tiny") == 0) {
                ds4_synth_tiny_hparams(&o.hp);
            } else if (strcmp(v, "published") == 0) {
                ds4_hparams_published(&o.hp);
            } else if (strcmp(v, "mid") == 0) {
                ds4_hparams_published(&o.hp);
                o.hp.n_layer = 8;
                o.hp.n_embd = 1024;
                o.hp.n_head = 16;
                o.hp.q_lora = 256;
                o.hp.o_groups = 4;
                o.hp.o_lora = 256;
                o.hp.n_expert = 64;
                o.hp.n_ff = 512;
                o.hp.idx_heads = 16;
                o.hp.n_vocab = 16384;
            } else {
                fprintf(stderr, "ds4-synth: unknown preset '%s' (tiny, published, mid)\n", v);
                return 2;
            }
            set_schedule(&o.hp, hca_rate);
            continue;
        }
        INT_OPT("--layers", o.hp.n_layer, 1, DS4_MAX_LAYERS)
        INT_OPT("--embd", o.hp.n_embd, 32, 65536)
        INT_OPT("--vocab", o.hp.n_vocab, 8, 1 << 22)
        INT_OPT("--heads", o.hp.n_head, 1, 4096)
        INT_OPT("--head-dim", o.hp.head_dim, 8, 8192)
        INT_OPT("--rope-dim", o.hp.rope_dim, 2, 8192)
        INT_OPT("--q-lora", o.hp.q_lora, 1, 65536)
        INT_OPT("--o-groups", o.hp.o_groups, 1, 4096)
        INT_OPT("--o-lora", o.hp.o_lora, 1, 65536)
        INT_OPT("--experts", o.hp.n_expert, 1, 65536)
        INT_OPT("--experts-used", o.hp.n_expert_used, 1, 64)
        INT_OPT("--ff", o.hp.n_ff, 1, 1 << 18)
        INT_OPT("--hash-layers", o.hp.n_hash_layers, 0, DS4_MAX_LAYERS)
        INT_OPT("--window", o.hp.window, 1, 1 << 20)
        INT_OPT("--index-heads", o.hp.idx_heads, 1, 4096)
        INT_OPT("--index-dim", o.hp.idx_dim, 8, 8192)
        INT_OPT("--index-topk", o.hp.idx_topk, 1, 1 << 24)
        INT_OPT("--q4-from-layer", o.q4_from_layer, 0, DS4_MAX_LAYERS)
        INT_OPT("--threads", o.n_threads, 1, 4096)
        INT_OPT("-t", o.n_threads, 1, 4096)
        if (strcmp(a, "--hca-rate") == 0) {
            NEED_ARG;
            if (parse_int(a, v, 2, 1 << 20, &n) != 0) return 2;
            if (n == 4) {
                fprintf(stderr, "ds4-synth: --hca-rate 4 would make those layers CSA; choose another ratio\n");
                return 2;
            }
            hca_rate = (int)n;
            schedule_touched = true;
            continue;
        }
        if (strcmp(a, "--seed") == 0) {
            NEED_ARG;
            if (parse_int(a, v, 0, LONG_MAX, &n) != 0) return 2;
            o.seed = (uint64_t)n;
            continue;
        }
        if (strcmp(a, "--policy") == 0) {
            NEED_ARG;
            if (strcmp(v, "f32") == 0) o.policy = DS4_SYNTH_F32;
            else if (strcmp(v, "ds4") == 0) o.policy = DS4_SYNTH_DS4;
            else {
                fprintf(stderr, "ds4-synth: --policy is f32 or ds4, got '%s'\n", v);
                return 2;
            }
            continue;
        }
        if (strcmp(a, "--expert-type") == 0) {
            NEED_ARG;
            if (parse_type(a, v, &o.expert_type) != 0) return 2;
            continue;
        }
        if (strcmp(a, "--down-type") == 0) {
            NEED_ARG;
            if (parse_type(a, v, &o.down_type) != 0) return 2;
            continue;
        }
        if (strcmp(a, "--branch-gain") == 0) {
            NEED_ARG;
            if (parse_float(a, v, &o.branch_gain) != 0) return 2;
            continue;
        }
        if (strcmp(a, "--ffn-gain") == 0) {
            NEED_ARG;
            if (parse_float(a, v, &o.ffn_gain) != 0) return 2;
            continue;
        }
        if (strcmp(a, "--tokenizer") == 0) {
            NEED_ARG;
            o.tokdata = v;
            continue;
        }
        if (strcmp(a, "--header-only") == 0) {
            o.header_only = true;
            continue;
        }
        if (strcmp(a, "--exact-quant") == 0) {
            o.exact_quant = true;
            continue;
        }
        if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) {
            o.progress = false;
            continue;
        }
        fprintf(stderr, "ds4-synth: unknown option '%s' (see --help)\n", a);
        return 2;
#undef INT_OPT
#undef NEED_ARG
    }
    if (!out) {
        fprintf(stderr, "ds4-synth: no output file (-o FILE)\n");
        return 2;
    }
    ds4_err err = {{0}};
    if (dequant_in) {
        if (ds4_synth_dequantize_copy(dequant_in, out, &err) != 0) {
            fprintf(stderr, "ds4-synth: %s\n", err.msg);
            return 1;
        }
        return 0;
    }
    /* the schedule follows the layer count and the HCA rate unless a preset set it */
    if (schedule_touched || o.hp.n_layer > 0) set_schedule(&o.hp, hca_rate);
    if (o.hp.n_hash_layers > o.hp.n_layer) o.hp.n_hash_layers = o.hp.n_layer;
    if (ds4_synth_write(out, &o, &err) != 0) {
        fprintf(stderr, "ds4-synth: %s\n", err.msg);
        return 1;
    }
    if (o.progress) fprintf(stderr, "ds4-synth: wrote %s\n", out);
    return 0;
}
