/* ds4-cuda-test: chained greedy decoding. The device pick (ds4k_pick_next)
 * against its twin, the host's ds4_sampler_argmax_except; then whole chains
 * on a tiny model against decoding one token at a time with the host pick:
 * the same tokens, and bitwise the same logits and session snapshot, also
 * when the chain ends on its stop token (the dropped step must leave the
 * state untouched). */
#include <math.h>
#include <string.h>

#include "cuda_test_util.h"
#include "engine/engine.h"
#include "model/model.h"
#include "text/sampler.h"

/* ------------------------------------------------------------------ the pick kernel */

typedef struct pick_rig {
    ds4k_pick_ctl *ctl;
    int32_t *tok, *ring, *dring;
    int *pos;
    float *logits, *keep;
    int cap;
} pick_rig;

/* One launch on logits h[n]; returns the pick the device reports in tok
 * (and checks pos, the host ring and the dead flag against it). */
static int32_t run_pick(pick_rig *g, const float *h, int n, int32_t exclude, int32_t stop, int32_t dead_before, int pos,
                        const char *what) {
    ds4k_pick_ctl c = {exclude, stop, dead_before, 0, {0}, {0}};
    cudaMemcpy(g->ctl, &c, 3 * sizeof(int32_t), cudaMemcpyHostToDevice);
    cudaMemcpy(g->pos, &pos, sizeof(int), cudaMemcpyHostToDevice);
    cudaMemcpy(g->logits, h, sizeof(float) * n, cudaMemcpyHostToDevice);
    ds4k_pick_next(g->logits, n, g->ctl, g->tok, g->pos, g->dring, g->keep, NULL);
    int32_t tok = -1;
    int pos_after = -1;
    from_dev(&tok, g->tok, sizeof(tok));
    from_dev(&pos_after, g->pos, sizeof(pos_after));
    from_dev(&c, g->ctl, sizeof(c));
    const int32_t want = ds4_sampler_argmax_except(h, n, exclude);
    const int32_t want_dead = dead_before ? 1 : (stop >= 0 && want == stop);
    check(tok == want && pos_after == pos + 1 && g->ring[pos & 3] == tok && c.dead == want_dead && c.done == 0,
          "pick %-26s n %6d exclude %6d: device %6d, host %6d; pos %d -> %d, ring %d, dead %d (want %d)", what, n,
          exclude, tok, want, pos, pos_after, g->ring[pos & 3], c.dead, want_dead);
    return tok;
}

void test_pick_kernel(ds4_rng *r) {
    const int NMAX = 129280;
    pick_rig g = {0};
    g.cap = NMAX;
    g.ctl = to_dev(NULL, sizeof(ds4k_pick_ctl));
    cudaMemset(g.ctl, 0, sizeof(ds4k_pick_ctl));
    g.tok = to_dev(NULL, 4);
    g.pos = to_dev(NULL, 4);
    g.logits = to_dev(NULL, sizeof(float) * NMAX);
    g.keep = to_dev(NULL, sizeof(float) * NMAX);
    if (cudaHostAlloc((void **)&g.ring, 16, cudaHostAllocMapped) != cudaSuccess ||
        cudaHostGetDevicePointer((void **)&g.dring, g.ring, 0) != cudaSuccess) {
        check(false, "pick: mapped host memory");
        return;
    }
    float *h = malloc(sizeof(float) * NMAX), *k = malloc(sizeof(float) * NMAX);
    const int ns[] = {NMAX, 1000, 3, 1};
    int pos = 5;
    for (size_t ni = 0; ni < sizeof(ns) / sizeof(ns[0]); ni++) {
        const int n = ns[ni];
        for (int variant = 0; variant < 6; variant++) {
            const char *what = "";
            for (int i = 0; i < n; i++) {
                const float x = ds4_rng_normal(r) * 4.0f;
                switch (variant) {
                case 0: h[i] = x, what = "(random)"; break;
                case 1: h[i] = roundf(x), what = "(ties: whole numbers)"; break;
                case 2: h[i] = ds4_rng_below(r, 10) == 0 ? NAN : x, what = "(10% NaN)"; break;
                case 3: h[i] = NAN, what = "(all NaN)"; break;
                case 4: h[i] = -INFINITY, what = "(all -inf)"; break;
                default:
                    h[i] = ds4_rng_below(r, 50) == 0 ? INFINITY : ds4_rng_below(r, 2) ? -0.0f : 0.0f;
                    what = "(+inf, +-0)";
                }
            }
            const int32_t top = ds4_sampler_argmax_except(h, n, -1);
            const int32_t excludes[] = {-1, 0, top, (int32_t)ds4_rng_below(r, (uint32_t)n)};
            for (int e = 0; e < 4; e++) run_pick(&g, h, n, excludes[e], -1, 0, pos++, what);
        }
    }
    /* the stop token: dead set, these logits kept; then a step fed it
     * (dead already set) leaves dead and the kept logits alone */
    const int n = NMAX;
    for (int i = 0; i < n; i++) h[i] = ds4_rng_normal(r);
    const int32_t stop = ds4_sampler_argmax_except(h, n, -1);
    run_pick(&g, h, n, -1, stop, 0, pos++, "(picks the stop token)");
    from_dev(k, g.keep, sizeof(float) * n);
    check(memcmp(k, h, sizeof(float) * n) == 0, "pick: the stop token's step copies its logits to keep");
    float *h2 = malloc(sizeof(float) * n);
    for (int i = 0; i < n; i++) h2[i] = h[i] * 0.5f - 1.0f; /* same argmax: the stop token again */
    run_pick(&g, h2, n, -1, stop, 1, pos++, "(fed the stop token)");
    from_dev(k, g.keep, sizeof(float) * n);
    check(memcmp(k, h, sizeof(float) * n) == 0, "pick: a step fed the stop token leaves keep alone");
    run_pick(&g, h, n, -1, (stop + 1) % n, 0, pos++, "(stop token not picked)");
    free(h2);
    free(h);
    free(k);
    cudaFreeHost(g.ring);
    cudaFree(g.ctl);
    cudaFree(g.tok);
    cudaFree(g.pos);
    cudaFree(g.logits);
    cudaFree(g.keep);
}

/* GPU time of one pick over the published vocabulary (gemv-bench). */
void pick_bench(void) {
    const int n = 129280, reps = 2000;
    ds4_rng r;
    ds4_rng_seed(&r, 3);
    float *h = rnd(&r, (size_t)n, 1.0f);
    float *logits = to_dev(h, sizeof(float) * n), *keep = to_dev(NULL, sizeof(float) * n);
    ds4k_pick_ctl *ctl = to_dev(NULL, sizeof(ds4k_pick_ctl));
    cudaMemset(ctl, 0, sizeof(ds4k_pick_ctl));
    const ds4k_pick_ctl c0 = {-1, -1, 0, 0, {0}, {0}};
    cudaMemcpy(ctl, &c0, 3 * sizeof(int32_t), cudaMemcpyHostToDevice);
    int32_t *tok = to_dev(NULL, 4), *ring = NULL, *dring = NULL;
    int *pos = to_dev(NULL, 4);
    cudaMemset(pos, 0, 4);
    cudaHostAlloc((void **)&ring, 16, cudaHostAllocMapped);
    cudaHostGetDevicePointer((void **)&dring, ring, 0);
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    for (int i = 0; i < 10; i++) ds4k_pick_next(logits, n, ctl, tok, pos, dring, keep, NULL);
    cudaEventRecord(e0, NULL);
    for (int i = 0; i < reps; i++) ds4k_pick_next(logits, n, ctl, tok, pos, dring, keep, NULL);
    cudaEventRecord(e1, NULL);
    cudaEventSynchronize(e1);
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    printf("pick over %d logits: %.2f us a launch (%d back-to-back launches)\n", n, 1000.0 * ms / reps, reps);
    cudaFreeHost(ring);
    cudaFree(logits);
    cudaFree(keep);
    cudaFree(ctl);
    cudaFree(tok);
    cudaFree(pos);
    free(h);
}

/* ------------------------------------------------------------------ chains on a model */

#define STEPS 48

typedef struct ref_run {
    int32_t tok[STEPS];       /* tok[k]: fed at step k (tok[0] from the prompt's logits) */
    uint8_t *snap[STEPS + 1]; /* the session after steps 0 .. k-1 */
    size_t len[STEPS + 1];
    float *logits[STEPS + 1];
} ref_run;

static void snapshot_into(ds4_session *s, uint8_t **out, size_t *len, float **logits, int64_t V) {
    ds4_err err = {{0}};
    if (ds4_session_snapshot(s, out, len, &err) != 0) {
        fprintf(stderr, "snapshot: %s\n", err.msg);
        exit(1);
    }
    *logits = malloc(sizeof(float) * V);
    memcpy(*logits, ds4_session_logits(s), sizeof(float) * V);
}

/* One token at a time, picked on the host: the reference. */
static void reference(ds4_model *m, const int32_t *prompt, int np, int ctx, int32_t exclude, ref_run *ref) {
    const int64_t V = m->hp.n_vocab;
    ds4_err err = {{0}};
    ds4_session *s = session(m, DS4_BACKEND_CUDA, ctx, 2048, false);
    ds4_session_eval(s, prompt, np, NULL, &err);
    for (int k = 0; k <= STEPS; k++) {
        snapshot_into(s, &ref->snap[k], &ref->len[k], &ref->logits[k], V);
        if (k == STEPS) break;
        ref->tok[k] = ds4_sampler_argmax_except(ds4_session_logits(s), (int)V, exclude);
        if (ds4_session_decode(s, ref->tok[k], &err) != 0) {
            fprintf(stderr, "decode: %s\n", err.msg);
            exit(1);
        }
    }
    ds4_session_free(s);
}

/* Whether the chains (not the references) run every selecting step in the
 * huge kind, whose top-k splits a token's rows over a cluster of blocks
 * (cuda_layers.inc STEP_SELECT_HUGE, at a 64k context and beyond): the
 * session reads DS4_TOPK_CLUSTER_ROWS when it starts. */
static bool g_chain_huge;

/* A chain from the same prompt, stopping at `stop` (-1: after STEPS steps);
 * checks it against the reference after the steps it kept. */
static void chain_vs_reference(ds4_model *m, const int32_t *prompt, int np, int ctx, int32_t exclude, int32_t stop,
                               const ref_run *ref) {
    const int64_t V = m->hp.n_vocab;
    ds4_err err = {{0}};
    ds4_session *s;
    if (g_chain_huge) { /* the setting a user may have made comes back after the session reads ours */
        const char *had = getenv("DS4_TOPK_CLUSTER_ROWS");
        char *keep = had ? strdup(had) : NULL;
        setenv("DS4_TOPK_CLUSTER_ROWS", "0", 1);
        s = session(m, DS4_BACKEND_CUDA, ctx, 2048, false);
        if (keep) setenv("DS4_TOPK_CLUSTER_ROWS", keep, 1);
        else unsetenv("DS4_TOPK_CLUSTER_ROWS");
        free(keep);
    } else {
        s = session(m, DS4_BACKEND_CUDA, ctx, 2048, false);
    }
    ds4_session_eval(s, prompt, np, NULL, &err);
    int32_t got[STEPS];
    got[0] = ds4_sampler_argmax_except(ds4_session_logits(s), (int)V, exclude);
    int rc = ds4_session_chain_begin(s, got[0], exclude, stop, &err);
    int k = 1, same = got[0] == ref->tok[0];
    for (; rc == 0 && k < STEPS; k++) {
        rc = ds4_session_chain_queue(s, &err);
        if (rc == 0) rc = ds4_session_chain_wait(s, &got[k], &err);
        same &= rc == 0 && got[k] == ref->tok[k];
        if (rc == 0 && got[k] == stop) break; /* its queued step is dropped by end */
    }
    if (rc == 0) rc = ds4_session_chain_end(s, &err);
    /* kept: the steps fed got[0 .. k-1], or all of them */
    const int kept = k < STEPS ? k : STEPS;
    uint8_t *snap = NULL;
    size_t len = 0;
    float *logits = NULL;
    if (rc == 0) snapshot_into(s, &snap, &len, &logits, V);
    const bool ok = rc == 0 && same && ds4_session_n_tokens(s) == np + kept && len == ref->len[kept] &&
                    memcmp(snap, ref->snap[kept], len) == 0 &&
                    memcmp(logits, ref->logits[kept], sizeof(float) * V) == 0;
    check(ok,
          "chained greedy%s, exclude %d, stop token %d: %d steps kept (position %d), tokens %s, snapshot and "
          "logits bitwise %s the one-at-a-time run%s%s",
          g_chain_huge ? " in the huge kind (cluster top-k)" : "", exclude, stop, kept, np + kept,
          same ? "equal" : "DIFFER", ok ? "equal to" : "NOT equal to", rc ? ": " : "", rc ? err.msg : "");
    free(snap);
    free(logits);
    ds4_session_free(s);
}

/* Chains on one model. ring: its HCA windows close every `ring` tokens and
 * the session keeps their inputs in rings (cuda_layers.inc, "compressor
 * windows"; 0: the scheme off), so the chains cross closing steps, and the
 * stop positions tested include a step that would close a window. */
static void chain_model(const char *path, const char *synth_args, int ring) {
    if (test_sh("%s/ds4-synth -q %s -o %s", g_bin_dir, synth_args, path) != 0) {
        check(false, "synth");
        return;
    }
    ds4_err err = {{0}};
    ds4_model *m = ds4_model_open(path, 0, &err);
    const int np = 20, ctx = 256;
    if (ring) {
        ds4_session *s = session(m, DS4_BACKEND_CUDA, ctx, 2048, false);
        const int got = ds4_cuda_cmp_ring(s);
        ds4_session_free(s);
        if (got != ring) { /* off only where the tiles are missing (not an sm_90a build) */
            check(got == 0 && !ds4k_wgmma_takes(DS4_TYPE_F16, 256),
                  "chained greedy: the HCA compressors' rings %d rows (want %d, or 0 without sm_90a tiles)", got, ring);
            ds4_model_close(m);
            return;
        }
    }
    int32_t *prompt = rand_tokens(np, (int)m->hp.n_vocab, 77);
    int32_t exclude = -1;
    for (int pass = 0; pass < 2; pass++) {
        ref_run ref;
        reference(m, prompt, np, ctx, exclude, &ref);
        chain_vs_reference(m, prompt, np, ctx, exclude, -1, &ref);
        /* stop tokens whose first use is at step k: the chain keeps k steps;
         * positions of every residue mod 4 drop a step that would close a
         * ratio-4 window */
        int cand[STEPS], nc = 0, closing = -1;
        for (int k = 1; k < STEPS; k++) {
            bool first = true;
            for (int i = 0; i < k; i++) first &= ref.tok[i] != ref.tok[k];
            if (first) cand[nc++] = k;
            /* the dropped step (position np + k) would close an HCA window */
            if (first && ring && closing < 0 && (np + k) % ring == ring - 1) closing = k;
        }
        /* up to 10 of them, spread over the run (before and after the
         * indexer starts selecting), and one whose dropped step would close
         * an HCA window */
        int tested = 0, residues = 0, late = 0;
        for (int j = 0; j < 10 && j < nc; j++) {
            const int k = cand[nc <= 10 ? j : j * (nc - 1) / 9];
            residues |= 1 << ((np + k) % 4);
            late += np + k >= 36;
            chain_vs_reference(m, prompt, np, ctx, exclude, ref.tok[k], &ref);
            tested++;
        }
        if (closing > 0) chain_vs_reference(m, prompt, np, ctx, exclude, ref.tok[closing], &ref);
        check(tested > 0,
              "chained greedy%s, exclude %d: %d stop positions tested (%d with the indexer selecting; "
              "residues mod 4 seen: 0x%x)%s",
              ring ? " (HCA rings)" : "", exclude, tested, late, residues,
              !ring ? ""
              : closing > 0 ? ", and a dropped step that would close an HCA window"
                            : ", no token first picked at a closing step (that case not covered)");
        for (int k = 0; k <= STEPS; k++) free(ref.snap[k]), free(ref.logits[k]);
        exclude = ref.tok[3]; /* the second pass never picks it, as ds4-bench bans EOS */
    }
    free(prompt);
    ds4_model_close(m);
}

void test_chained_decode(void) {
    /* top-8 of ratio-4 rows: the indexer starts selecting at 36 tokens, so a
     * chain from a 20-token prompt switches between both step graphs */
    chain_model("/tmp/ds4cu_chain.gguf", "--seed 31 --ffn-gain 3 --index-topk 8", 0);
    /* the same with the chains' selecting steps in the huge kind, against
     * one-at-a-time steps in the others: the cluster top-k's selections, and
     * so every bit after them, the one-block form's */
    if (ds4k_topk_cluster_ready()) {
        g_chain_huge = true;
        chain_model("/tmp/ds4cu_chain.gguf", "--seed 31 --ffn-gain 3 --index-topk 8", 0);
        g_chain_huge = false;
    } else {
        printf("note: no cluster top-k here; the huge kind's chains not tested\n");
    }
    /* the published types at D = 256 (the tiles take the HCA projections)
     * and HCA windows of 16: the chains cross three closing steps */
    chain_model("/tmp/ds4cu_chain_ring.gguf",
                "--seed 31 --ffn-gain 3 --index-topk 8 --policy ds4 --embd 256 --ff 256 --hca-rate 16", 16);
}

/* ------------------------------------------------------------------ the engine's greedy loop on CUDA */

typedef struct gen_out {
    int32_t tok[64];
    int n_cb, stop_after;
    ds4_gen_result res[2];
    int n_tokens;
    uint8_t *snap;
    size_t len;
    float *logits;
} gen_out;

static int on_tok(void *ud, int32_t id, const char *text, size_t len) {
    (void)text;
    (void)len;
    gen_out *o = ud;
    if (id < 0) return 0;
    if (o->n_cb < 64) o->tok[o->n_cb] = id;
    o->n_cb++;
    return o->stop_after > 0 && o->n_cb == o->stop_after;
}

/* A CUDA engine: 20 prompt tokens, a greedy run (chained or the plain loop),
 * then 8 more tokens by the plain loop with EOS banned (a plain decode after
 * whatever the chain left); eos >= 0 makes that token end-of-sentence. */
static bool engine_run(const char *path, bool chained, int ctx, int max_tokens, bool ban_eos, int stop_after,
                       int32_t eos, gen_out *o) {
    memset(o, 0, sizeof(*o));
    o->stop_after = stop_after;
    ds4_session_opts so;
    ds4_session_opts_default(&so);
    so.ctx = ctx;
    so.backend = DS4_BACKEND_CUDA;
    ds4_err err = {{0}};
    ds4_engine *e = ds4_engine_open(path, &so, &err);
    if (!e) return false;
    if (eos >= 0) ((ds4_tok_specials *)ds4_tokenizer_specials(e->tok))->eos = eos;
    int32_t prompt[20];
    for (int i = 0; i < 20; i++) prompt[i] = (int32_t)((i * 7919 + 13) % e->model->hp.n_vocab);
    bool ok = ds4_engine_sync(e, prompt, 20, NULL, &err) == 0;
    ds4_gen_opts go = {.max_tokens = max_tokens, .ban_eos = ban_eos, .on_token = on_tok, .ud = o};
    go.sampling = ds4_sampling_defaults();
    go.sampling.temperature = 0.0f;
    setenv("DS4_GREEDY_CHAIN", chained ? "1" : "0", 1);
    ok = ok && ds4_engine_generate(e, &go, &o->res[0], &err) == 0;
    setenv("DS4_GREEDY_CHAIN", "0", 1);
    ds4_gen_opts go2 = {.max_tokens = 8, .ban_eos = true, .on_token = on_tok, .ud = o};
    go2.sampling = go.sampling;
    o->stop_after = 0;
    if (ok && ds4_session_n_tokens(e->sess) + 8 < ctx) ok = ds4_engine_generate(e, &go2, &o->res[1], &err) == 0;
    unsetenv("DS4_GREEDY_CHAIN");
    o->n_tokens = ds4_session_n_tokens(e->sess);
    ok = ok && ds4_session_snapshot(e->sess, &o->snap, &o->len, &err) == 0;
    if (ok) {
        o->logits = malloc(sizeof(float) * e->model->hp.n_vocab);
        memcpy(o->logits, ds4_session_logits(e->sess), sizeof(float) * e->model->hp.n_vocab);
    }
    if (!ok) fprintf(stderr, "engine run: %s\n", err.msg);
    ds4_engine_close(e);
    return ok;
}

static void engine_case(const char *path, const char *what, int ctx, int max_tokens, bool ban_eos, int stop_after,
                        int32_t eos, int64_t V) {
    gen_out a, b;
    const bool ok_a = engine_run(path, false, ctx, max_tokens, ban_eos, stop_after, eos, &a);
    const bool ok_b = engine_run(path, true, ctx, max_tokens, ban_eos, stop_after, eos, &b);
    const int ncb = a.n_cb < 64 ? a.n_cb : 64;
    const bool ok = ok_a && ok_b && a.res[0].stop == b.res[0].stop && a.res[0].n_tokens == b.res[0].n_tokens &&
                    a.n_cb == b.n_cb && memcmp(a.tok, b.tok, sizeof(int32_t) * ncb) == 0 && a.n_tokens == b.n_tokens &&
                    a.len == b.len && memcmp(a.snap, b.snap, a.len) == 0 &&
                    memcmp(a.logits, b.logits, sizeof(float) * V) == 0;
    check(ok,
          "engine greedy on CUDA, %s: chained == plain loop (stop %d, %d tokens, then 8 plain; session %d tokens, "
          "snapshot and logits bitwise)",
          what, a.res[0].stop, a.res[0].n_tokens, a.n_tokens);
    free(a.snap), free(a.logits), free(b.snap), free(b.logits);
}

void test_engine_chain(void) {
    const char *path = "/tmp/ds4cu_chain.gguf"; /* made by test_chained_decode */
    ds4_err err = {{0}};
    ds4_model *m = ds4_model_open(path, 0, &err);
    if (!m) {
        check(false, "engine chain: %s", err.msg);
        return;
    }
    const int64_t V = m->hp.n_vocab;
    ds4_model_close(m);
    engine_case(path, "length 40", 256, 40, false, 0, -1, V);
    engine_case(path, "callback stop at 7", 256, 40, false, 7, -1, V);
    engine_case(path, "context full", 50, 0, false, 0, -1, V);
    /* a token first produced after a few steps becomes "EOS": the chain ends
     * on it with the step fed it dropped; banned, the run goes past it */
    gen_out g;
    if (!engine_run(path, false, 256, 40, false, 0, -1, &g)) {
        check(false, "engine chain: reference run");
        return;
    }
    int k = 4;
    for (; k < 40; k++) {
        bool first = true;
        for (int i = 0; i < k; i++) first &= g.tok[i] != g.tok[k];
        if (first) break;
    }
    const int32_t eos = k < 40 ? g.tok[k] : g.tok[4];
    free(g.snap), free(g.logits);
    engine_case(path, "EOS", 256, 40, false, 0, eos, V);
    engine_case(path, "EOS banned", 256, 30, true, 0, eos, V);
}
