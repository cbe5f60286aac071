/* ds4 — the small numeric operations of the forward pass (CPU reference).
 *
 * Each function here is the "CPU twin" of a CUDA kernel: the definition of
 * what the kernel must compute, written for clarity. They are deterministic
 * (fixed evaluation order) and allocate nothing. Formulas: MODEL.md §4, §7. */
#ifndef DS4_CPU_OPS_H
#define DS4_CPU_OPS_H

#include <stdbool.h>
#include <stdint.h>

#include "model/hparams.h"

/* ---- norms ---- */

/* out[i] = x[i] / sqrt(mean(x^2) + eps) * (w ? w[i] : 1). The sum of squares
 * is accumulated in double. out may alias x. */
void ds4_rmsnorm(const float *x, const float *w, int n, float eps, float *out);

/* ---- RoPE (partial, interleaved pairs on the last rope_dim elements) ---- */

/* Angular frequency of each of the rope_dim/2 pairs for a layer kind:
 * window-only layers use rope_base with no scaling; compressed layers use
 * compress_rope_base with the YaRN ramp (MODEL.md §4.2), never any magnitude
 * scaling. */
void ds4_rope_freqs(const ds4_hparams *hp, bool compressed, double *freqs);

/* cs[2k] = cos(pos*freqs[k]), cs[2k+1] = sin(pos*freqs[k]), computed in double. */
void ds4_rope_table(const double *freqs, int n_pairs, int64_t pos, float *cs);

/* Rotate the pairs (x[L-R+2k], x[L-R+2k+1]) of a head of length len by the
 * angles in cs (R = 2*n_pairs); inverse=true rotates by the negated angle. */
void ds4_rope_tail(float *x, int len, int n_pairs, const float *cs, bool inverse);

/* ---- quantization simulations of the official graph ---- */

/* Nearest FP8 E4M3FN value to y (|y| <= 448), ties to the even code. */
float ds4_e4m3_round(float y);
/* FP8 round trip of x[0..n) in blocks of 64 with power-of-two scales
 * 2^ceil(log2(max(amax,1e-4)/448)); n is a multiple of 64 (the non-RoPE part). */
void ds4_fp8_sim(float *x, int n);

/* Nearest FP4 E2M1 value to y (|y| <= 6), ties to the even table index. */
float ds4_e2m1_round(float y);
/* FP4 round trip of x[0..n) in blocks of 32 with scales 2^ceil(log2(amax/6)). */
void ds4_fp4_sim(float *x, int n);

/* In-place Walsh-Hadamard transform (Sylvester order), scaled once by
 * 1/sqrt(n); n is a power of two. */
void ds4_hadamard(float *x, int n);

/* ---- hyper-connections ---- */

/* From the mixer outputs mix[(2+hc)*hc] (fn . RMSNorm(flat H)), the set's
 * scale[3] and base[(2+hc)*hc]: pre[hc] = sigmoid(.)+eps, post[hc] = 2*sigmoid(.),
 * M[hc*hc] = Sinkhorn(row softmax + eps), with `iters` column passes (MODEL.md §7.1). */
void ds4_hc_split(const float *mix, const float *scale, const float *base, int hc, int iters, float eps, float *pre,
                  float *post, float *M);

/* ---- activations ---- */
float ds4_softplus(float z);
float ds4_sigmoid(float z);
float ds4_silu(float z);

/* ---- router (MODEL.md §9) ---- */
/* One token's experts from its scores prob[E] (sqrt(softplus) already applied):
 * the hash table's row hash_ids[K] when given, else the top K of prob + bias
 * (bias may be NULL; ties to the lower id); then the weights
 * w[k] = prob[ids[k]] / max(sum, 6.1035e-5) * scale, the sum taken in slot order.
 * sel: E floats of scratch. The CUDA router is tested against this. */
void ds4_route_pick(const float *prob, const float *bias, int E, int K, const int32_t *hash_ids, float scale,
                    float *sel, int32_t *ids, float *w);

#endif
