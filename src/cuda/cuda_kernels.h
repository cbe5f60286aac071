/* ds4 — CUDA kernels of the forward pass, as plain C entry points.
 *
 * Each entry point launches one kernel (or a short fixed sequence) on a
 * stream. They are the device twins of the CPU reference (src/cpu/ops.c,
 * matmul.c, cpu_attention.c, cpu_ffn.c); tests/cuda/test_cuda_kernels.c
 * checks each one against its twin on random inputs. Pointers are device
 * pointers. Positions come from device memory (`d_pos` = position of the
 * first token of the batch) so a decode step can be captured once as a CUDA
 * graph and replayed for every token. */
#ifndef DS4_CUDA_KERNELS_H
#define DS4_CUDA_KERNELS_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef void *ds4_stream; /* cudaStream_t */

/* Shapes the kernels size their registers and shared arrays for; the backend
 * refuses a model beyond them at session start (the CPU has no such limits).
 * The published model: 4 streams, head dim 512, 6 experts per token. */
#define DS4K_MAX_HC 16            /* hyper-connection streams */
#define DS4K_MAX_HEAD_DIM 512     /* attention head dim, a multiple of 32 */
#define DS4K_MAX_EXPERTS_USED 64  /* routed experts per token */
#define DS4K_MAX_HC_PARTS 16      /* parts of the HC mixer (ds4k_hc_mix_parts, ds4k_hc_post_mix) */

/* A weight on the device: N rows of K elements of a ggml type (3-D expert
 * tensors are N = rows per expert x experts). */
typedef struct ds4_dw {
    int type;
    const void *ptr;
    int64_t K, N;
} ds4_dw;

/* One-time setup (IQ2_XXS tables in constant memory). 0 or -1. */
int ds4k_init(void);

/* Turn the streaming one-token GEMV (cuda_gemv.cu) on or off; returns the
 * previous setting. On by default; a CUDA session turns it off in oracle
 * mode (its 8-bit activation split is not exact), the GEMV benchmark toggles
 * it, and DS4_GEMV_STREAM=0 in the environment keeps it off. */
int ds4k_gemv_stream_enable(int on);
/* Whether the streaming kernel keeps activations in registers where rows
 * allow (on by default; DS4_GEMV_XREG=0 keeps them in shared memory). */
int ds4k_gemv_xreg_enable(int on);
/* Whether F16 rows of K <= 4096 take the kernel that splits a row over four
 * warps (bitwise the streaming kernel's sums; on by default,
 * DS4_GEMV_F16_SPLIT=0 keeps them on the streaming kernel). */
int ds4k_gemv_f16_split_enable(int on);
/* Blocks a job of that kernel (0: a block a group of rows; < 0: unchanged);
 * returns the previous value (tests). */
int ds4k_gemv_f16_split_cap(int blocks);
/* Whether GEMVs whose rows are one ring chunk take two rows an iteration
 * (bitwise the same sums; on by default, DS4_GEMV_PAIRS=0 keeps one).
 * Returns the previous setting. */
int ds4k_gemv_pairs_enable(int on);
/* The decode GEMV's conversion-free forms (cuda_gemv.cu: qdot, small_u2f)
 * against the plain conversions they replace, on the device: every exact
 * small integer and per_type random dot pairs of each quantized type.
 * Returns the mismatches, or -1 on a CUDA error (tests). */
long long ds4k_gemv_convert_check(int64_t per_type, uint64_t seed);

/* The same for the tensor-core prefill tiles (cuda_mma.cu); DS4_MMA=0 keeps
 * them off (the float tile kernel runs instead). */
int ds4k_mma_enable(int on);

/* The same for the tensor-core prefill attention (cuda_attn_mma.cu);
 * DS4_ATT_MMA=0 keeps it off (the SIMT kernel runs instead). */
int ds4k_attention_mma_enable(int on);

/* The decode attention's merge of at most 32 chunks by warps, without
 * barriers (bitwise the block merge) on or off; returns the old setting
 * (DS4_COMB_WARP=0 starts it off; on < 0 only reads it). */
int ds4k_attention_combine_warp(int on);

/* Y[t][r] = W row (r0 + r) . X[t] for t < n, r < rows. */
void ds4k_matmul(const ds4_dw *W, int64_t r0, int64_t rows, const float *X, int64_t ldx, int n, float *Y, int64_t ldy,
                 ds4_stream st);
/* The same with a scratch buffer of scratch_floats floats (16-byte aligned,
 * free for the product's duration on this stream): prefill products of Q8_0
 * weights in sm_90a builds split X into it once and run on the warpgroup
 * MMA (not bitwise ds4k_matmul's tiles: another summation order, the same
 * bound against the CPU). Needs n * (K + 1) floats; with less (or NULL) it
 * is ds4k_matmul. */
void ds4k_matmul_scratch(const ds4_dw *W, int64_t r0, int64_t rows, const float *X, int64_t ldx, int n, float *Y,
                         int64_t ldy, float *scratch, size_t scratch_floats, ds4_stream st);

/* Group g < groups: Y + g * gy = rows [g * rows, (g + 1) * rows) of W times
 * X + g * gx (the grouped output projection), in one launch for prefill;
 * scratch as for ds4k_matmul_scratch, n * groups * (K + 1) floats (with
 * less, the mma.sync tiles take all groups in one launch). */
void ds4k_matmul_groups(const ds4_dw *W, int64_t rows, int groups, const float *X, int64_t gx, int64_t ldx, int n,
                        float *Y, int64_t gy, int64_t ldy, float *scratch, size_t scratch_floats, ds4_stream st);

/* One of several matrices read with the same activations: rows [r0, r0+rows)
 * of W times X + x_off, into Y. */
typedef struct ds4_mm_job {
    const ds4_dw *W;
    int64_t r0, rows, x_off;
    float *Y;
    int64_t ldy;
} ds4_mm_job;

/* The jobs in one launch when the batch is small (n <= 8) and every weight has
 * the same type; otherwise one ds4k_matmul each. */
void ds4k_matmul_multi(const ds4_mm_job *jobs, int n_jobs, const float *X, int64_t ldx, int n, ds4_stream st);

/* Prefill (n > 8): the jobs over the same activations, split once into
 * scratch (as for ds4k_matmul_scratch) and each weight type's products in
 * one launch where the warpgroup MMA takes them (Q8_0 or F16, one K, r0 and
 * x_off 0, up to 6 of a type); otherwise one ds4k_matmul_scratch each. A
 * batch of 8 tokens or fewer: ds4k_matmul_multi. */
void ds4k_matmul_jobs(const ds4_mm_job *jobs, int n_jobs, const float *X, int64_t ldx, int n, float *scratch,
                      size_t scratch_floats, ds4_stream st);
/* ds4k_matmul_jobs whose input split can be shared between calls: split_k
 * is the K of X's rows whose split (wgmma_split) the scratch already holds
 * (0: none), and the K whose split it holds afterwards is returned (0:
 * none, or not in a form ds4k_expert_gather_split can read). */
int64_t ds4k_matmul_jobs_split(const ds4_mm_job *jobs, int n_jobs, const float *X, int64_t ldx, int n, float *scratch,
                               size_t scratch_floats, int64_t split_k, ds4_stream st);

/* The jobs on the warpgroup MMA tiles whatever n (1 included): one split
 * of X into scratch, each job's outputs those a batch of any size would give
 * its tokens (the tiles' sums do not depend on the other tokens), so a
 * token's products are the same bits one at a time or in a prefill batch.
 * Every job of one weight type and K, r0 and x_off 0. -1, nothing launched,
 * where the tiles do not take them (no sm_90a build, a type or K they lack,
 * too small a scratch, DS4_MMA=0 or ds4k_mma_enable(0)). ds4k_matmul_jobs_tc_takes: whether they would, for
 * up to n tokens and without a launch. */
int ds4k_matmul_jobs_tc(const ds4_mm_job *jobs, int n_jobs, const float *X, int64_t ldx, int n, float *scratch,
                        size_t scratch_floats, ds4_stream st);
int ds4k_matmul_jobs_tc_takes(int type, int64_t K, int n, size_t scratch_floats);

/* Several expert matrices (gate and up) with the same routing in one launch.
 * early: DS4_EARLY_* flags (ds4_prep), or 0. */
void ds4k_moe_matmul_multi(const ds4_mm_job *jobs, int n_jobs, const int32_t *ids, int n, int k, const float *X,
                           int64_t ldx, int x_per_pair, int early, ds4_stream st);

/* One token's HC split made beside other work: post and M (4 streams) from
 * stored mixer sums, as ds4k_hc_sinkhorn makes them. */
typedef struct ds4k_hc_split {
    const float *mix, *scale, *base;
    int iters;
    float eps;
    float *post, *M;
} ds4k_hc_split;

/* One token's routing, as ds4k_router takes it (the router's E logits, k
 * experts chosen; ids and w are written). */
typedef struct ds4_route {
    float *logits;
    int E, k;
    const float *bias;
    const int32_t *tid2eid, *tok; /* hash routing: the table and the token (device) */
    float scale;
    int32_t *ids;
    float *w;
    /* hc.mix set (ds4k_router_matmul only): one more block of the launch
     * makes the FFN sub-layer's HC split beside the GEMV */
    ds4k_hc_split hc;
} ds4_route;
#define DS4_ROUTE_K_MAX 16 /* k at most (ds4k_router_matmul) */

/* The router's product and ds4k_router for one token in one launch (a
 * decode step): the split F16 GEMV writes the E logits of W . X into
 * r->logits, and the block that finishes last (an integer count in *done,
 * 0 between launches: it wraps) turns them into scores and selects, with
 * router_kernel's code: the same scores, ids and weights, bit for bit.
 * Returns -1 and launches nothing where the split GEMV cannot take W (then
 * the product and ds4k_router apart), or with DS4_ROUTER_LAST=0 in the
 * environment. */
int ds4k_router_matmul(const ds4_dw *W, const float *X, const ds4_route *r, unsigned *done, ds4_stream st);

/* Routed experts for small batches: for pair i = t * k + j (t < n, j < k) and
 * expert e = ids[i], Y[i][r] = W row (e * rows + r) . X[x_per_pair ? i : t]. */
void ds4k_moe_matmul(const ds4_dw *W, int64_t rows, const int32_t *ids, int n, int k, const float *X, int64_t ldx,
                     int x_per_pair, float *Y, int64_t ldy, ds4_stream st);

/* The last step that makes a one-token product's activations, done while
 * the streaming GEMV stages them (decode), so it needs no launch of its own:
 *   DS4_PREP_NORM:   x = rmsnorm_w(x, w, eps) over the K elements (as
 *                    ds4k_rmsnorm computes it for K = 1024: the same sums);
 *   DS4_PREP_SWIGLU: x = silu(min(x, clamp)) * clamp(u, -clamp, clamp)
 *                    (* wts[pair] with wts), as ds4k_swiglu; u has x's layout.
 * The result is the same as the separate kernel's. */
enum { DS4_PREP_NONE = 0, DS4_PREP_NORM = 1, DS4_PREP_SWIGLU = 2 };
/* What of a routed product's inputs was written before the kernel launched
 * just ahead of it on the stream (the caller's promise), so the streaming
 * GEMV need not wait for that kernel to use it:
 *   DS4_EARLY_X:   the activations (and the prep's inputs): staged first,
 *                  while the previous kernel finishes (a decode step's
 *                  routed gate and up: x is the sub-layer input, the router
 *                  ran in between);
 *   DS4_EARLY_IDS: the expert ids: the weights' copies start first (the
 *                  routed down projection: the ids are the router's).
 * Ignored without ids; DS4_GEMV_EARLY=0 in the environment: never. */
enum { DS4_EARLY_X = 1, DS4_EARLY_IDS = 2 };
typedef struct ds4_prep {
    int op;
    const float *w; /* norm weight */
    float eps;
    const float *u;   /* up projection */
    const float *wts; /* router weight per pair, or NULL */
    float clamp;
    int early; /* DS4_EARLY_* */
} ds4_prep;

/* ds4k_heads_rope's steps (without FP4) on one token's heads, done by the
 * product that makes them (ds4k_matmul_heads): once a head's hd rows are
 * written, a warp of the block that wrote the last of them normalizes
 * (norm) and rotates the head in place, the same bits as ds4k_heads_rope
 * after the product. cnt: a counter a head, head h's at
 * cnt[h * DS4K_HEADS_CNT_STRIDE] (device memory, zero at the start and left
 * zero). */
#define DS4K_HEADS_CNT_STRIDE 32 /* 128 bytes: each head's counter on a line of its own */
typedef struct ds4_heads {
    int hd, norm, n_pairs;
    float rms_eps;
    const double *freqs;
    const int *d_pos;
    unsigned *cnt;
    /* 1..7: the launch takes that many eighths of the blocks the GPU holds
     * at once (more rows a warp), leaving the rest to kernels beside it;
     * 0 or 8: all of them */
    int share8;
} ds4_heads;

/* ds4k_matmul (one token) or ds4k_moe_matmul (ids != NULL: n tokens, k
 * slots) with prep applied to X. Returns -1 and launches nothing when the
 * streaming kernel cannot take it (then run the step and the product
 * separately). DS4_GEMV_PREP=0 in the environment: always -1 (A/B). */
int ds4k_matmul_prep(const ds4_dw *W, int64_t rows, const float *X, int64_t ldx, const ds4_prep *prep,
                     const int32_t *ids, int n, int k, int x_per_pair, float *Y, int64_t ldy, ds4_stream st);

/* ds4k_matmul_prep for one token (prep may be NULL) with the heads' norm
 * and RoPE at its end (ds4_heads). Returns -1 and launches nothing where
 * the streaming kernel cannot take both: only Q8_0 rows of K <= 1,024 (q_b)
 * have the tail; then the product and ds4k_heads_rope apart.
 * DS4_GEMV_HEADS=0 in the environment: always -1. */
int ds4k_matmul_heads(const ds4_dw *W, int64_t rows, const float *X, const ds4_prep *prep, const ds4_heads *heads,
                      float *Y, ds4_stream st);

/* One token's products (the jobs of ds4k_matmul_multi) with each row's K
 * split into `parts` equal stretches of whole quantization blocks, in one
 * launch of the streaming GEMV: job i's stretch q writes its dots to
 * jobs[i].Y + q * pstride, and the consumer adds the parts in the order
 * q = 0, 1, ... (ds4k_hc_post's yparts). A row of K = 8192 is four rows of
 * 2048 to the GEMV, which then stages a quarter of x per block and keeps its
 * lanes' slices in registers. Returns -1 and launches nothing when the
 * kernel cannot take the jobs (then use whole rows). */
int ds4k_matmul_ksplit(const ds4_mm_job *jobs, int n_jobs, int parts, int64_t pstride, const float *X, int64_t ldx,
                       ds4_stream st);

/* Routed experts of a large batch, one launch per matrix. seg_dev holds
 * n_segs segments {int64 row0 = expert * rows, int x0, int count}: rows
 * [x0, x0+count) of X (gathered inputs) are multiplied with that expert's
 * rows and written to the same rows of Y. max_count bounds every count; X has
 * n_x rows in all. split_aux: NULL for f32 rows, or the aux of
 * ds4k_expert_split when X was split by it. */
void ds4k_expert_matmul(const ds4_dw *W, int64_t rows, const int32_t *seg_dev, int n_segs, int max_count,
                        const float *X, const float *split_aux, int n_x, int64_t ldx, float *Y, int64_t ldy,
                        ds4_stream st);
/* Two matrices of one type and shape (gate and up) over the same
 * segments and rows, into Y and Y2: one launch on the warpgroup MMA (one
 * tail of partly filled waves instead of two), else ds4k_expert_matmul
 * each; the same products either way. */
void ds4k_expert_matmul2(const ds4_dw *W, const ds4_dw *W2, int64_t rows, const int32_t *seg_dev, int n_segs,
                         int max_count, const float *X, const float *split_aux, int n_x, int64_t ldx, float *Y,
                         float *Y2, int64_t ldy, ds4_stream st);
/* Whether ds4k_expert_matmul2 pairs its matrices in one launch (default;
 * DS4_EXPERT_PAIR=0 in the environment turns it off at start-up): the
 * previous setting (kernel tests, A/B timing). */
int ds4k_expert_pair_enable(int on);

/* The n gathered rows of X (stride ldx) split in place, once, into the input
 * form of the tensor-core tiles of every reader (gate and up read the same
 * rows): f16 hi and lo halves of each row times a power of two, with the
 * row scales and 16-sums in aux (n * (1 + K / 16) floats, K = the readers'
 * width). The rows' floats are gone afterwards: pass aux to
 * ds4k_expert_matmul, with the same readers only (for warpgroup-MMA weights,
 * ds4k_wgmma_takes, the rows are written in that kernel's order). Returns 0,
 * or -1 and changes nothing where the tiles are off (DS4_MMA=0), some
 * reader's type or layout is not theirs, or the readers disagree on the
 * warpgroup MMA. */
int ds4k_expert_split(const ds4_dw *const *readers, int n_readers, float *X, int n, int64_t ldx, float *aux,
                      ds4_stream st);
/* ds4k_expert_split of the rows ds4k_swiglu(G, U, n, K, L, wts) would
 * leave in G, bitwise, in one pass (G holds the split rows afterwards, U
 * as it was): -1 and nothing launched where ds4k_expert_split declines. */
int ds4k_expert_split_swiglu(const ds4_dw *const *readers, int n_readers, float *G, const float *U, float L,
                             const float *wts, int n, int64_t ldx, float *aux, ds4_stream st);
/* The routed experts' inputs straight from the dense split of the batch's
 * rows that ds4k_matmul_jobs_split left in scratch (n_src rows of the
 * readers' K): X row r (ldx floats apart) becomes split row idx[r], its
 * scale in aux as ds4k_expert_split would place it, bitwise what gathering
 * the floats and ds4k_expert_split give. -1 (nothing launched) where the
 * readers take another split (16-sums, the mma.sync tiles' order). */
int ds4k_expert_gather_split(const ds4_dw *const *readers, int n_readers, const float *split, int n_src,
                             const int32_t *idx, int n, float *X, int64_t ldx, float *aux, ds4_stream st);
/* 1 where ds4k_expert_matmul multiplies split rows of this weight type and K
 * on the warpgroup MMA (sm_90a builds): not bitwise the mma.sync tiles'
 * sums, which the kernel test then does not expect. */
int ds4k_wgmma_takes(int type, int64_t K);
/* Whether the warpgroup-MMA products multiply the activations' f16 lo
 * halves too (on: ~22 bits of each activation, within f32 rounding of the
 * CPU's products; off, the default: the activations rounded to f16, half the
 * tensor-core work). A CUDA session turns it on in oracle mode;
 * DS4_WGMMA_LO=0/1 in the environment fixes it. Returns the old setting. */
int ds4k_wgmma_exact_acts(int on);
/* The producer-fed warpgroup-MMA kernel (a copy warp feeding the two MMA
 * warpgroups through mbarriers) on or off (DS4_WGMMA_PRODUCER=0 starts it
 * off); returns the old setting. Both kernels give the same bits; the tests
 * compare them. */
int ds4k_wgmma_producer_enable(int on);
/* 1 where that kernel is on and multiplies weights of this type and K
 * (rows on 16 bytes, whole 8-slice windows); else the other kernel does. */
int ds4k_wgmma_producer_takes(int type, int64_t K);
/* The routed experts' 32- and 64-token tiles on that kernel at two blocks a
 * multiprocessor (the default; DS4_WGMMA_TWO_BLOCKS=0 starts it off) or one;
 * returns the old setting. Both give the same bits; the tests compare them. */
int ds4k_wgmma_two_blocks(int on);
/* The blocks of a dense product on the producer-fed kernel, which take its
 * tiles in turn (default: one a multiprocessor); returns the old count. The
 * tests set a few, so that each block makes many tiles. */
int ds4k_wgmma_tile_blocks(int blocks);

/* Y = rmsnorm(X) * w (w may be NULL) row by row. */
void ds4k_rmsnorm(const float *X, int64_t ldx, const float *w, int n, int len, float eps, float *Y, int64_t ldy,
                  ds4_stream st);

/* Greedy pick on the device for chained decoding (twin:
 * ds4_sampler_argmax_except in src/text/sampler.c): the first index of the
 * largest non-NaN logit other than ctl->exclude (1, or 0 when exclude is 0,
 * if there is none). The picked token becomes the next step's input
 * (tok[0], pos[0] + 1) and is written to host_ring[pos[0] & 3] (mapped host
 * memory). ctl->dead is set when it equals ctl->stop_token: the next step
 * then leaves the compressor states as they are (ds4k_compressor's skip),
 * and these logits are copied to keep (that step overwrites the others). A
 * step fed the stop token (dead already set) leaves dead and keep alone. */
#define DS4K_PICK_BLOCKS 64
typedef struct ds4k_pick_ctl {
    int32_t exclude;    /* -1: none */
    int32_t stop_token; /* -1: none */
    int32_t dead;       /* the last pick was stop_token */
    uint32_t done;      /* blocks finished; the last one resets it */
    float part_v[DS4K_PICK_BLOCKS];
    int32_t part_i[DS4K_PICK_BLOCKS];
} ds4k_pick_ctl;
void ds4k_pick_next(const float *logits, int n, ds4k_pick_ctl *ctl, int32_t *tok, int *pos, int32_t *host_ring,
                    float *keep, ds4_stream st);

/* Embedding rows of tokens, copied to every HC stream: H[t][s*D + d]. */
void ds4k_embed(const ds4_dw *emb, const int32_t *tok, int n, int hc, int D, float *H, ds4_stream st);

/* HC pre after the mixer: pre/post/M from mix (MIX per token), then
 * a[t] = rmsnorm_w(sum_s pre[s] H[t][s], norm). */
void ds4k_hc_split_collapse(const float *mix, const float *scale, const float *base, int hc, int iters, float hc_eps,
                            const float *H, int D, const float *norm, float rms_eps, int n, float *pre, float *post,
                            float *M, float *a, ds4_stream st);

/* The HC mixer of a few tokens straight from the raw streams (no normalized
 * copy): over S stretches of K, parts[(s * n + t) * rows + r] = W row r .
 * H[t] and ss[s * n + t] = H[t] . H[t]. W must be F16 with K a multiple of
 * 8 * S; returns -1 (nothing launched) otherwise. */
int ds4k_hc_mix_parts(const ds4_dw *W, int rows, const float *H, int64_t ldh, int n, int S, float *parts, float *ss,
                      ds4_stream st);
/* Whether batches of more than 8 tokens take the mixer on the tensor cores
 * (TF32 hi + lo: ~22 bits, not bitwise the SIMT kernels) instead of
 * the SIMT kernel whose parts are bitwise the decode kernel's; on < 0 only
 * reads it (DS4_HC_MIX_TC=0 starts it off). */
int ds4k_hc_mix_tc(int on);

/* ds4k_hc_split_collapse whose mix is those parts: mix = (sum_s parts) /
 * sqrt(sum_s ss / (hc * D) + flat_eps), the mixer of rmsnorm(H). */
void ds4k_hc_split_collapse_parts(const float *parts, const float *ss, int n_parts, float flat_eps, const float *scale,
                                  const float *base, int hc, int iters, float hc_eps, const float *H, int D,
                                  const float *norm, float rms_eps, int n, float *pre, float *post, float *M, float *a,
                                  ds4_stream st);

/* H[t][j] = post[t][j] * y[t] + sum_i M[t][i][j] H[t][i]. y[t] may come as
 * yparts partial vectors (ds4k_matmul_ksplit), part q of token t at row
 * q * n + t (rows ldy apart), added in part order; 1: y itself. */
void ds4k_hc_post(const float *post, const float *M, const float *y, int64_t ldy, int yparts, int n, int hc, int D,
                  float *H, ds4_stream st);
/* The same with y[t] the MoE output, made in place and not stored: the routed
 * outputs of pairs t*k + j summed in ascending expert id (ties in slot
 * order), plus the shared expert's sh[t]. Pair i's output is row i of eo, or
 * row erow[i] where erow is not NULL (the rows left in their gathered order). */
void ds4k_hc_post_moe(const float *post, const float *M, const float *eo, const int32_t *erow, const int32_t *ids,
                      const float *sh, int n, int k, int hc, int D, float *H, ds4_stream st);
/* A decode step's hc_post (y, or the MoE sum when eo is set) fused with the
 * next sub-layer's HC mixer: the streams H updated in place, and the mixer's
 * partial sums over element ranges of the streams (parts [P][n][rows], the
 * streams' sums of squares ss [P][n]) for ds4k_hc_split_collapse_parts.
 * Returns P, or -1 where the shape is not the model's (4 streams, 24 F16
 * mixer rows, D a multiple of 256): then nothing was launched. */
int ds4k_hc_post_mix(const float *post, const float *M, const float *y, int64_t ldy, int yparts, const float *eo,
                     const int32_t *ids, const float *sh, int n, int k, int hc, int D, float *H, const ds4_dw *W,
                     int rows, float *parts, float *ss, ds4_stream st);

/* A decode step's hc_post (y, or the MoE sum when eo is set) fused with the
 * whole HC pre of the next sub-layer but its Sinkhorn: the streams H updated
 * in place with the ending sub-layer's post and M (given, or made here from
 * its mixer sums in mix), and the next sub-layer's input a, pre and mixer
 * sums (written over mix: ds4k_hc_sinkhorn, or the next call, makes its post
 * and M from them). a is not bitwise the split-collapse kernel's: its rmsnorm
 * takes |a|^2 from the streams' Gram matrix. Returns 0, or -1 (nothing
 * launched) where the shape is not the model's (4 streams, 24 F16 mixer
 * rows, D a multiple of 256), n > DS4K_HC_COLLAPSE_MAX_TOKENS or it is
 * off (DS4_HC_COLLAPSE=0; on by default, see cuda_hc.cu). */
#define DS4K_HC_COLLAPSE_MAX_TOKENS 8
#define DS4K_HC_COLLAPSE_COLS 35 /* floats of a part: 24 mixer rows, a sum of squares, 10 Gram entries */
typedef struct ds4k_hc_collapse {
    const float *post, *M;                 /* the ending sub-layer's, or (cur_scale set) made here: */
    const float *cur_scale, *cur_base;     /* ... from mix with its HC scale and base */
    int iters;                             /* ... and this many Sinkhorn iterations */
    const ds4_dw *W;                       /* the next sub-layer's mixer (F16, 24 rows of 4 D) */
    const float *scale, *base, *norm;      /* its HC scale and base, its input norm */
    float hc_eps, flat_eps, rms_eps;
    float *mix, *pre, *a;                  /* out: its mixer sums (MIX a token), pre and input */
    float *parts;                          /* scratch: DS4K_MAX_HC_PARTS x n x DS4K_HC_COLLAPSE_COLS floats */
    unsigned *bar;                         /* 2 words a token, zero before the first launch; left as found */
} ds4k_hc_collapse;
int ds4k_hc_post_collapse(const float *y, int64_t ldy, int yparts, const float *eo, const int32_t *ids,
                          const float *sh, int n, int k, int hc, int D, float *H, const ds4k_hc_collapse *g,
                          ds4_stream st);
/* post and M alone from MIX mixer sums a token (ds4k_hc_post_collapse's mix):
 * hc_split_collapse's Sinkhorn, one warp a token. */
void ds4k_hc_sinkhorn(const float *mix, const float *scale, const float *base, int hc, int iters, float hc_eps, int n,
                      float *post, float *M, ds4_stream st);
/* DS4_HC_COLLAPSE (1 on, the default; 0 off; 2 on with the two-word
 * meeting): on < 0 reads it, else sets it; returns the previous value. */
int ds4k_hc_collapse_enable(int on);

/* Output HC head: z[t] = rmsnorm_w(sum_s (sigmoid(mix*scale+base)+eps) H[t][s], norm). */
void ds4k_hc_head(const float *mix, const float *scale, const float *base, int hc, float hc_eps, const float *H, int D,
                  const float *norm, float rms_eps, int n, float *z, ds4_stream st);

/* KV rows: rmsnorm_w, RoPE at d_pos[0]+t, FP8 on the first hd - 2 n_pairs
 * elements (when fp8), stored in the ring slot (pos % raw_cap) in row
 * format fmt (ds4_row_fmt, model/kv_format.h: f32, f16, bf16 or fp8 with
 * nope = hd - 2 n_pairs). Every function below that takes rows takes their
 * format so. */
void ds4k_kv_store(float *kv, const float *norm, float rms_eps, const double *freqs, int n_pairs, const int *d_pos,
                   int n, int hd, bool fp8, void *ring, int raw_cap, int fmt, ds4_stream st);

/* ds4k_kv_store, and (aring not NULL) the same launch copies the attention
 * inputs of the batch's last min(n, aratio) tokens (rows of D floats, D a
 * multiple of 4) into a ring of aratio rows, the token at position p into
 * row p % aratio (an HCA layer's compressor windows, cuda_layers.inc). */
void ds4k_kv_store_ring(float *kv, const float *norm, float rms_eps, const double *freqs, int n_pairs, const int *d_pos,
                        int n, int hd, bool fp8, void *ring, int raw_cap, int fmt, const float *a, int64_t D,
                        float *aring, int aratio, ds4_stream st);
/* out[0] = d_pos[0] - back, on the device (a graph's position moves). */
void ds4k_pos_back(const int *d_pos, int back, int *out, ds4_stream st);

/* Queries: per-head unweighted rmsnorm (when norm) and RoPE at d_pos[0]+t;
 * with fp4, Hadamard + FP4 after RoPE (indexer queries). */
void ds4k_heads_rope(float *q, int n, int heads, int hd, bool norm, float rms_eps, const double *freqs, int n_pairs,
                     const int *d_pos, bool fp4, ds4_stream st);
/* The heads' norm and RoPE by one warp a head (bitwise the block kernel;
 * FP4 heads take it only in batches of more than 8 tokens) on or off;
 * returns the old setting (DS4_ROPE_WARPS=0 starts it off; on < 0 only
 * reads it). */
int ds4k_heads_rope_warps(int on);

/* Feed n tokens (projections kv/gate [n][W]) through a compressor state in
 * position order; each closed window w pools a `width`-wide row, which is
 * normed (norm), RoPE'd at w*ratio, then FP8 (fp8, on width - 2*n_pairs
 * elements) or Hadamard+FP4 (fp4), and stored at row w of `rows`. Nothing
 * is done when skip is given and *skip != 0 (a chained step fed the stop
 * token: ds4k_pick_next), a one-token step's or a batch's (the one-token
 * step that closes an HCA window from its ring of inputs, cuda_layers.inc).
 * pool: where a batch's wide windows (ratio >= 32) are pooled apart, (n /
 * ratio + 1) * width floats (too small: they are pooled in the windows
 * kernel, the same rows); NULL: a grow-only buffer of the module's, which a
 * graph must not capture (it may move), so while one is captured the
 * windows kernel pools them. */
void ds4k_compressor(float *st_kv, float *st_score, int ratio, bool overlap, int W, const float *kv, const float *gate,
                     const ds4_dw *ape, const float *norm, float rms_eps, int width, const double *freqs, int n_pairs,
                     const int *d_pos, int n, bool fp8, bool fp4, void *rows, int fmt, const int32_t *skip,
                     float *pool, size_t pool_floats, ds4_stream st);
/* Whether a prefill batch pools a wide compressor's windows (ratio >= 32)
 * in a kernel of their own, many blocks a window (default; DS4_CMP_POOL=0
 * turns it off at start-up): the previous setting (kernel tests, A/B). The
 * same rows either way. */
int ds4k_cmp_pool_enable(int on);

/* Indexer scores of token t over its visible rows c < (pos+1)/4, computed only
 * when that count exceeds topk: S[t][c] = sum_h w[t][h] relu(q[t][h] . k[c]) / sqrt(ID*IH).
 * fp4: the queries and keys are FP4-simulated (exact in bf16), so
 * every batch may take the tensor cores (DS4_IDX_TC=0: never). */
void ds4k_indexer_scores(const float *q, const float *w, const void *keys, int fmt, bool fp4, int n, const int *d_pos,
                         int IH, int ID, int topk, int cap, float *S, int64_t lds, ds4_stream st);

/* Causal top-k of each token (only rows it may see, ties to the lower index),
 * ascending row order; n_sel[t] = -1 when every visible row is attended.
 * cluster: each token's rows split over a cluster of blocks (up to 8
 * tokens; decode steps over many rows), where ds4k_topk_cluster_ready;
 * otherwise, and for more tokens, a block a token. The same rows either way. */
void ds4k_topk(const float *S, int64_t lds, int n, const int *d_pos, int topk, bool cluster, int32_t *sel, int *n_sel,
               ds4_stream st);
/* Whether ds4k_topk may take the cluster form: not where DS4_TOPK_CLUSTER=0,
 * the build is for an arch before sm_90, or the GPU cannot hold the cluster
 * (a note on stderr). Read once, at the first call. */
int ds4k_topk_cluster_ready(void);
/* The top-k's shared memory allowed (part of ds4k_prepare); 0 or -1. */
int ds4k_topk_prepare(void);

/* Sink attention of every (token, head) over the raw window and the visible /
 * selected compressed rows, then inverse RoPE of the output. `part` (scratch
 * of ds4k_attention_part_floats floats, or NULL) lets batches of at most 8
 * tokens split rows over many blocks. With hc (may be NULL) and a one-token
 * split launch, an extra block of the split kernel also makes that HC split
 * (ds4k_hc_post_collapse's attention sub-layer); returns 1 if it did, else 0. */
int ds4k_attention(const float *q, int n, const int *d_pos, int H, int hd, float scale, const float *sinks,
                   const void *ring, int raw_cap, int window, const void *comp, int ratio, bool csa, const int32_t *sel,
                   const int *n_sel, int topk, int fmt, const double *freqs, int n_pairs, float *o, int max_rows,
                   float *part, const ds4k_hc_split *hc, ds4_stream st);
size_t ds4k_attention_part_floats(int H, int hd, int max_rows);

/* Router: prob = sqrt(softplus(logits)) in place; ids = hash table row of the
 * token (tid2eid != NULL) or top-k of prob + bias (ties to the lower id);
 * w = prob[ids] / max(sum, 6.1035e-5) * scale. */
void ds4k_router(float *logits, int n, int E, int k, const float *bias, const int32_t *tid2eid, const int32_t *tok,
                 float scale, int32_t *ids, float *w, ds4_stream st);

/* g[i] = silu(min(g,L)) * clamp(u,-L,L) * (wts ? wts[i] : 1), rows of len FF. */
void ds4k_swiglu(float *g, const float *u, int64_t rows, int FF, float L, const float *wts, ds4_stream st);

/* dst[i] = src[idx[i]] (rows of len D) and its inverse scatter. */
void ds4k_gather_rows(const float *src, int64_t lds, const int32_t *idx, int n, int D, float *dst, ds4_stream st);
void ds4k_scatter_rows(const float *src, const int32_t *idx, int n, int D, float *dst, int64_t ldd, ds4_stream st);

/* Allow the shared memory attention (max_rows scores) and the indexer need;
 * call once per session before any launch or capture. 0 or -1 (too much). */
int ds4k_prepare(int H, int hd, int max_rows, int IH, int ID);

/* Host helpers: stream synchronize, last error as text (NULL if none). */
const char *ds4k_last_error(void);

#ifdef __cplusplus
}
#endif

#endif
