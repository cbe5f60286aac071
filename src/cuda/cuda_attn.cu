/* ds4 — CUDA compressors, lightning indexer (scores and causal top-k) and
 * sink attention (twins: compressor_push, score_range, topk_range and
 * att_range in src/cpu/cpu_attention.c). */
#include "cuda/cuda_kernels.h"
#include "cuda/cuda_attn.cuh"
#include "cuda/cuda_ops.cuh"

#define NT 256

/* ------------------------------------------------------------------ compressor */

/* Channel j of a closing window: softmax over the candidate slots' scores
 * (column j, or width + j for the current window's half with overlap)
 * weighting their kv values; 0 when no candidate has a score. cand(s, col,
 * &kv, &score) reads slot s. The serial and the chunk kernels both pool
 * here, in slot order, so their rows are bitwise the same. */
template <typename Cand>
__device__ __forceinline__ float cmp_pool(int j, int ratio, bool overlap, int width, Cand cand) {
    const int slots = overlap ? 2 * ratio : ratio;
    float mx = -INFINITY;
    for (int s = 0; s < slots; s++) {
        float v, sc;
        cand(s, overlap && s >= ratio ? width + j : j, &v, &sc);
        mx = fmaxf(mx, sc);
    }
    if (mx == -INFINITY) return 0.0f;
    float den = 0.0f, num = 0.0f;
    for (int s = 0; s < slots; s++) {
        float v, sc;
        cand(s, overlap && s >= ratio ? width + j : j, &v, &sc);
        const float wgt = expf(sc - mx);
        den += wgt;
        num += wgt * v;
    }
    return num / den;
}

__global__ void compressor_kernel(float *st_kv, float *st_score, int ratio, bool overlap, int W, const float *kv,
                                  const float *gate, int ape_type, const void *ape, const float *norm, float rms_eps,
                                  int width, const double *freqs, int n_pairs, const int *d_pos, int n, bool fp8,
                                  bool fp4, void *rows, bool f16) {
    extern __shared__ float row[];
    __shared__ float red[32], amax[64];
    const int64_t p0 = d_pos[0];
    for (int t = 0; t < n; t++) {
        const int64_t p = p0 + t;
        const int r = (int)(p % ratio);
        const int slot = overlap ? ratio + r : r;
        for (int c = threadIdx.x; c < W; c += blockDim.x) {
            st_kv[(int64_t)slot * W + c] = kv[(int64_t)t * W + c];
            st_score[(int64_t)slot * W + c] = gate[(int64_t)t * W + c] + dev_elem(ape_type, ape, (int64_t)r * W + c);
        }
        __syncthreads();
        if ((p + 1) % ratio != 0) continue;
        /* pool each channel over the window's candidates (slots in order) */
        for (int j = threadIdx.x; j < width; j += blockDim.x)
            row[j] = cmp_pool(j, ratio, overlap, width, [&](int s, int col, float *v, float *sc) {
                *v = st_kv[(int64_t)s * W + col];
                *sc = st_score[(int64_t)s * W + col];
            });
        __syncthreads();
        block_rmsnorm(row, width, norm, rms_eps, red);
        block_rope(row, width, n_pairs, freqs, p + 1 - ratio, false);
        if (fp8) block_fp8(row, width - 2 * n_pairs, amax);
        if (fp4) block_hadamard_fp4(row, width, amax);
        const int64_t w = (p + 1) / ratio - 1;
        for (int j = threadIdx.x; j < width; j += blockDim.x) kv_store(rows, w * width + j, row[j], f16);
        if (overlap) {
            __syncthreads();
            for (int64_t i = threadIdx.x; i < (int64_t)ratio * W; i += blockDim.x) {
                st_kv[i] = st_kv[(int64_t)ratio * W + i];
                st_score[i] = st_score[(int64_t)ratio * W + i];
            }
        }
        __syncthreads();
    }
}

/* Whole chunks (prefill): every window that closes inside the chunk is
 * pooled by its own block, reading its candidates from the chunk's
 * projections or, for positions before the chunk, from the carried state;
 * then one block rewrites the state as the serial kernel would leave it.
 * Each window does the serial kernel's arithmetic in the same order, so the
 * rows are bitwise the same. Candidate q of window u: chunk token q - p0, or
 * state slot (overlap ? ratio + r : r) for the window open at the chunk's
 * start, or slot r for the one before it (overlap). */
__device__ __forceinline__ void cmp_cand(int64_t q, int col, int64_t p0, int64_t w_open, int ratio, bool overlap, int W,
                                        const float *st_kv, const float *st_score, const float *kv, const float *gate,
                                        int ape_type, const void *ape, float *kvv, float *score) {
    const int r = (int)(((q % ratio) + ratio) % ratio); /* q < 0: the initial state's slots (window -1) */
    if (q >= p0) {
        const int64_t t = q - p0;
        *kvv = kv[t * W + col];
        *score = gate[t * W + col] + dev_elem(ape_type, ape, (int64_t)r * W + col);
    } else {
        const int slot = q / ratio == w_open ? (overlap ? ratio + r : r) : r;
        *kvv = st_kv[(int64_t)slot * W + col];
        *score = st_score[(int64_t)slot * W + col];
    }
}

__global__ void compressor_windows_kernel(const float *st_kv, const float *st_score, int ratio, bool overlap, int W,
                                          const float *kv, const float *gate, int ape_type, const void *ape,
                                          const float *norm, float rms_eps, int width, const double *freqs, int n_pairs,
                                          const int *d_pos, int n, bool fp8, bool fp4, void *rows, bool f16) {
    extern __shared__ float row[];
    __shared__ float red[32], amax[64];
    const int64_t p0 = d_pos[0], w_open = p0 / ratio;
    const int64_t w = (p0 + ratio) / ratio - 1 + blockIdx.x; /* the first window closing at or after p0, then on */
    const int64_t p = (w + 1) * ratio - 1;                    /* its closing position */
    if (p >= p0 + n) return;
    /* slot s: the previous window's token s (overlap) or this window's token
     * s - ratio; without overlap this window's token s */
    for (int j = threadIdx.x; j < width; j += blockDim.x)
        row[j] = cmp_pool(j, ratio, overlap, width, [&](int s, int col, float *v, float *sc) {
            const bool cur = !overlap || s >= ratio;
            const int64_t q = cur ? w * ratio + (overlap ? s - ratio : s) : (w - 1) * ratio + s;
            cmp_cand(q, col, p0, w_open, ratio, overlap, W, st_kv, st_score, kv, gate, ape_type, ape, v, sc);
        });
    __syncthreads();
    block_rmsnorm(row, width, norm, rms_eps, red);
    block_rope(row, width, n_pairs, freqs, p + 1 - ratio, false);
    if (fp8) block_fp8(row, width - 2 * n_pairs, amax);
    if (fp4) block_hadamard_fp4(row, width, amax);
    for (int j = threadIdx.x; j < width; j += blockDim.x) kv_store(rows, w * width + j, row[j], f16);
}

/* The state after the chunk, as the serial kernel leaves it: slot r (+ ratio
 * with overlap) holds the open window's token r, or, past the tokens it has
 * so far, the last closed window's token r (not yet overwritten); with
 * overlap, slots r also hold the last closed window (copied at its close).
 * The copies are written first: their sources may be the open window's old
 * slots. A slot whose token would come from its own old value is skipped. */
__global__ void compressor_state_kernel(float *st_kv, float *st_score, int ratio, bool overlap, int W, const float *kv,
                                        const float *gate, int ape_type, const void *ape, const int *d_pos, int n) {
    const int64_t p0 = d_pos[0], w_open = p0 / ratio, pe = p0 + n, w_end = pe / ratio;
    for (int part = overlap ? 0 : 1; part < 2; part++) {
        for (int64_t i = threadIdx.x; i < (int64_t)ratio * W; i += blockDim.x) {
            const int r = (int)(i / W), col = (int)(i % W);
            const int64_t q = part == 0 || r >= pe - w_end * ratio ? (w_end - 1) * ratio + r : w_end * ratio + r;
            if (q < 0) continue;
            const int slot = part == 0 || !overlap ? r : ratio + r;
            const int src_slot = q / ratio == w_open ? (overlap ? ratio + r : r) : r;
            if (q < p0 && src_slot == slot) continue; /* already there */
            float v, sc;
            cmp_cand(q, col, p0, w_open, ratio, overlap, W, st_kv, st_score, kv, gate, ape_type, ape, &v, &sc);
            st_kv[(int64_t)slot * W + col] = v;
            st_score[(int64_t)slot * W + col] = sc;
        }
        __syncthreads();
    }
}

extern "C" void ds4k_compressor(float *st_kv, float *st_score, int ratio, bool overlap, int W, const float *kv,
                                const float *gate, const ds4_dw *ape, const float *norm, float rms_eps, int width,
                                const double *freqs, int n_pairs, const int *d_pos, int n, bool fp8, bool fp4, void *rows,
                                bool f16, ds4_stream st) {
    if (n <= 0) return;
    cudaStream_t s = (cudaStream_t)st;
    if (n <= 8) { /* decode: one block walks the tokens */
        compressor_kernel<<<1, 512, width * sizeof(float), s>>>(st_kv, st_score, ratio, overlap, W, kv, gate, ape->type,
                                                               ape->ptr, norm, rms_eps, width, freqs, n_pairs, d_pos, n,
                                                               fp8, fp4, rows, f16);
        return;
    }
    /* windows closing in [p0, p0 + n): at most n / ratio + 1, whatever p0 */
    const int nw = n / ratio + 1;
    compressor_windows_kernel<<<nw, 256, width * sizeof(float), s>>>(st_kv, st_score, ratio, overlap, W, kv, gate,
                                                                     ape->type, ape->ptr, norm, rms_eps, width, freqs,
                                                                     n_pairs, d_pos, n, fp8, fp4, rows, f16);
    compressor_state_kernel<<<1, 512, 0, s>>>(st_kv, st_score, ratio, overlap, W, kv, gate, ape->type, ape->ptr, d_pos, n);
}

/* ------------------------------------------------------------------ indexer scores */

__global__ void attention_kernel(const float *q, const int *d_pos, int H, int hd, float scale, const float *sinks,
                                 const void *ring, int raw_cap, int window, const void *comp, int ratio, bool csa,
                                 const int32_t *sel_all, const int *n_sel, int topk, bool f16, const double *freqs,
                                 int n_pairs, float *o, int HG, int max_rows);
static int att_group(int H, int hd, int max_rows, size_t *smem);

#define SC_ROWS 64

__global__ void indexer_scores_kernel(const float *q, const float *w, const void *keys, bool f16, const int *d_pos,
                                      int IH, int ID, int topk, float *S, int64_t lds, float scale) {
    extern __shared__ float sq[];
    const int t = blockIdx.x;
    const int64_t p = (int64_t)d_pos[0] + t;
    const int64_t V = (p + 1) / 4;
    if (V <= topk) return;
    const int64_t r0 = (int64_t)blockIdx.y * SC_ROWS;
    if (r0 >= V) return;
    float *sw = sq + IH * ID;
    for (int i = threadIdx.x; i < IH * ID; i += blockDim.x) sq[i] = q[(int64_t)t * IH * ID + i];
    for (int i = threadIdx.x; i < IH; i += blockDim.x) sw[i] = w[(int64_t)t * IH + i];
    __syncthreads();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    const int64_t r1 = r0 + SC_ROWS < V ? r0 + SC_ROWS : V;
    for (int64_t r = r0 + warp; r < r1; r += nw) {
        float acc = 0.0f;
        for (int h = 0; h < IH; h++) {
            float d = 0.0f;
            for (int i = lane; i < ID; i += 32) d += sq[h * ID + i] * kv_load(keys, r * ID + i, f16);
            d = warp_sum(d);
            acc += sw[h] * (d > 0.0f ? d : 0.0f);
        }
        if (lane == 0) S[(int64_t)t * lds + r] = acc * scale;
    }
}

/* Shared memory above 48 KB must be allowed per kernel before launches (and
 * before a graph capture): attention keeps a score per visible row. */
extern "C" int ds4k_prepare(int H, int hd, int max_rows, int IH, int ID) {
    /* any layer's row count <= max_rows: its head group takes at most the
     * 200 KiB budget of att_group, or one head's need at max_rows */
    size_t att;
    att_group(H, hd, max_rows, &att);
    if (att < 200 * 1024) att = 200 * 1024;
    const size_t sc = (size_t)(IH * ID + IH) * sizeof(float);
    if (att > 48 * 1024 &&
        cudaFuncSetAttribute(attention_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)att) != cudaSuccess)
        return -1;
    if (sc > 48 * 1024 &&
        cudaFuncSetAttribute(indexer_scores_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sc) != cudaSuccess)
        return -1;
    return 0;
}

extern "C" void ds4k_indexer_scores(const float *q, const float *w, const void *keys, bool f16, int n, const int *d_pos,
                                    int IH, int ID, int topk, int cap, float *S, int64_t lds, ds4_stream st) {
    if (n <= 0 || cap <= 0) return;
    const float scale = (float)(1.0 / sqrt((double)ID * IH));
    const size_t smem = (size_t)(IH * ID + IH) * sizeof(float);
    const dim3 grid(n, (unsigned)((cap + SC_ROWS - 1) / SC_ROWS));
    indexer_scores_kernel<<<grid, NT, smem, (cudaStream_t)st>>>(q, w, keys, f16, d_pos, IH, ID, topk, S, lds, scale);
}

/* ------------------------------------------------------------------ causal top-k */

__device__ __forceinline__ uint32_t order_key(float f) {
    const uint32_t u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* Block-wide integer sum (blockDim <= 1024). */
__device__ __forceinline__ int block_isum(int v, int *red) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if (lane == 0) red[w] = v;
    __syncthreads();
    int t = lane < nw ? red[lane] : 0;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
    return t;
}

/* Exclusive block scan of v; *total gets the sum. */
__device__ __forceinline__ int block_exscan(int v, int *red, int *total) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    int x = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const int y = __shfl_up_sync(0xffffffffu, x, o);
        if (lane >= o) x += y;
    }
    __syncthreads();
    if (lane == 31) red[w] = x;
    __syncthreads();
    if (w == 0) {
        int s = lane < nw ? red[lane] : 0;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const int y = __shfl_up_sync(0xffffffffu, s, o);
            if (lane >= o) s += y;
        }
        if (lane < nw) red[32 + lane] = s;
    }
    __syncthreads();
    const int before = w > 0 ? red[32 + w - 1] : 0;
    *total = red[32 + nw - 1];
    return before + x - v;
}

__global__ void topk_kernel(const float *S, int64_t lds, const int *d_pos, int K, int32_t *sel, int *n_sel) {
    __shared__ int red[64];
    const int t = blockIdx.x;
    const int64_t p = (int64_t)d_pos[0] + t;
    const int64_t V = (p + 1) / 4;
    if (V <= K) {
        if (threadIdx.x == 0) n_sel[t] = -1;
        return;
    }
    const float *s = S + (int64_t)t * lds;
    /* the K-th largest key, bit by bit from the top */
    uint32_t prefix = 0;
    for (int bit = 31; bit >= 0; bit--) {
        const uint32_t cand = prefix | (1u << bit);
        int c = 0;
        for (int64_t i = threadIdx.x; i < V; i += blockDim.x) c += order_key(s[i]) >= cand;
        c = block_isum(c, red);
        if (c >= K) prefix = cand;
    }
    const uint32_t T = prefix;
    int gt = 0;
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) gt += order_key(s[i]) > T;
    gt = block_isum(gt, red);
    const int need_eq = K - gt; /* ties at the threshold, lowest indices first */
    int eq_before = 0, out = 0;
    for (int64_t base = 0; base < V; base += blockDim.x) {
        const int64_t i = base + threadIdx.x;
        const uint32_t k = i < V ? order_key(s[i]) : 0;
        const int is_gt = i < V && k > T, is_eq = i < V && k == T;
        int eq_total;
        const int eq_rank = block_exscan(is_eq, red, &eq_total);
        const int take = is_gt || (is_eq && eq_before + eq_rank < need_eq);
        int take_total;
        const int pos = block_exscan(take, red, &take_total);
        if (take) sel[(int64_t)t * K + out + pos] = (int32_t)i;
        out += take_total;
        eq_before += eq_total;
    }
    if (threadIdx.x == 0) n_sel[t] = K;
}

extern "C" void ds4k_topk(const float *S, int64_t lds, int n, const int *d_pos, int topk, int32_t *sel, int *n_sel,
                          ds4_stream st) {
    if (n > 0) topk_kernel<<<n, 1024, 0, (cudaStream_t)st>>>(S, lds, d_pos, topk, sel, n_sel);
}

/* ------------------------------------------------------------------ attention */


/* One block per (token, group of HG heads): the heads of a group share every
 * K = V row (one shared KV head), so each row is read once for HG heads.
 * Warp j owns head j's softmax; the output loop reads each row once and
 * updates all HG heads. Every sum has a fixed order: deterministic. */
#define ATT_THREADS 256
#define ATT_MAX_HG 16 /* heads per block: each row read is shared by up to 16 heads */
__global__ void __launch_bounds__(ATT_THREADS) attention_kernel(
    const float *q, const int *d_pos, int H, int hd, float scale, const float *sinks, const void *ring, int raw_cap,
    int window, const void *comp, int ratio, bool csa, const int32_t *sel_all, const int *n_sel, int topk, bool f16,
    const double *freqs, int n_pairs, float *o, int HG, int max_rows) {
    extern __shared__ float sh[];
    const int t = blockIdx.x, h0 = blockIdx.y * HG;
    const int64_t p = (int64_t)d_pos[0] + t;
    int64_t lo;
    int n_raw;
    const int32_t *sel;
    const int nr = visible_rows(p, t, window, ratio, csa, sel_all, n_sel, topk, &lo, &n_raw, &sel);
    float *sq = sh, *so = sh + HG * hd, *sc = sh + 2 * HG * hd, *sden = sc + HG * max_rows;
    for (int i = threadIdx.x; i < HG * hd; i += blockDim.x) sq[i] = q[((int64_t)t * H + h0) * hd + i];
    __syncthreads();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    /* scores: a warp per row; the row is read once for all HG heads */
    const int per_lane = hd / 32; /* <= DS4K_MAX_HEAD_DIM / 32 */
    for (int r = warp; r < nr; r += nw) {
        int64_t off;
        const void *base = att_row(r, n_raw, lo, ring, raw_cap, comp, sel, hd, f16, &off);
        float rv[DS4K_MAX_HEAD_DIM / 32];
#pragma unroll
        for (int i = 0; i < DS4K_MAX_HEAD_DIM / 32; i++) rv[i] = i < per_lane ? kv_load(base, off + lane + 32 * i, f16) : 0.0f;
        for (int j = 0; j < HG; j++) {
            float d = 0.0f;
#pragma unroll
            for (int i = 0; i < DS4K_MAX_HEAD_DIM / 32; i++)
                if (i < per_lane) d += sq[j * hd + lane + 32 * i] * rv[i];
            d = warp_sum(d);
            if (lane == 0) sc[j * max_rows + r] = d * scale;
        }
    }
    __syncthreads();
    /* softmax with the sink, warp j for head j */
    for (int j = warp; j < HG; j += nw) {
        float *s = sc + j * max_rows;
        const float sink = sinks[h0 + j];
        float m = sink;
        for (int r = lane; r < nr; r += 32) m = fmaxf(m, s[r]);
        m = warp_max(m);
        float den = 0.0f;
        for (int r = lane; r < nr; r += 32) {
            s[r] = expf(s[r] - m);
            den += s[r];
        }
        den = warp_sum(den) + expf(sink - m);
        if (lane == 0) sden[j] = 1.0f / den;
    }
    __syncthreads();
    /* output: each thread owns some dims for all HG heads */
    for (int dd = threadIdx.x; dd < hd; dd += blockDim.x) {
        float acc[ATT_MAX_HG];
#pragma unroll
        for (int j = 0; j < ATT_MAX_HG; j++) acc[j] = 0.0f;
        for (int r = 0; r < nr; r++) {
            int64_t off;
            const void *base = att_row(r, n_raw, lo, ring, raw_cap, comp, sel, hd, f16, &off);
            const float v = kv_load(base, off + dd, f16);
#pragma unroll
            for (int j = 0; j < ATT_MAX_HG; j++)
                if (j < HG) acc[j] += sc[j * max_rows + r] * v;
        }
#pragma unroll
        for (int j = 0; j < ATT_MAX_HG; j++)
            if (j < HG) so[j * hd + dd] = acc[j] * sden[j];
    }
    __syncthreads();
    for (int j = 0; j < HG; j++) block_rope(so + j * hd, hd, n_pairs, freqs, p, true);
    for (int i = threadIdx.x; i < HG * hd; i += blockDim.x) o[((int64_t)t * H + h0) * hd + i] = so[i];
}

/* Decode-size batches: each (token, head) is split over chunks of ATT_CHUNK
 * rows so the whole GPU works on one token (flash-decoding). A chunk block
 * serves ATT_HG heads, which share every K = V row (one KV head), so a row
 * is read once for all of them; warp j does head j's softmax. It writes per
 * head its local max, its sum of exp and its unnormalized output; the
 * combine kernel merges the chunks in index order (deterministic). */
#define ATT_CHUNK 64
#define ATT_HG 4
__global__ void __launch_bounds__(32 * ATT_HG) attention_chunk_kernel(
    const float *q, const int *d_pos, int H, int hd, float scale, const void *ring, int raw_cap, int window,
    const void *comp, int ratio, bool csa, const int32_t *sel_all, const int *n_sel, int topk, bool f16, float *part,
    int n_chunks) {
    __shared__ float sq[ATT_HG][DS4K_MAX_HEAD_DIM], sc[ATT_HG][ATT_CHUNK];
    const int t = blockIdx.x, h0 = blockIdx.y * ATT_HG, ch = blockIdx.z;
    const int64_t p = (int64_t)d_pos[0] + t;
    int64_t lo;
    int n_raw;
    const int32_t *sel;
    const int nr = visible_rows(p, t, window, ratio, csa, sel_all, n_sel, topk, &lo, &n_raw, &sel);
    const int r0 = ch * ATT_CHUNK, r1 = r0 + ATT_CHUNK < nr ? r0 + ATT_CHUNK : nr;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    if (r0 >= nr) {
        if (threadIdx.x < ATT_HG) {
            float *out = part + (((int64_t)t * H + h0 + threadIdx.x) * n_chunks + ch) * (hd + 2);
            out[hd] = -INFINITY, out[hd + 1] = 0.0f;
        }
        return;
    }
    for (int i = threadIdx.x; i < ATT_HG * hd; i += blockDim.x)
        sq[i / hd][i % hd] = q[((int64_t)t * H + h0) * hd + i];
    __syncthreads();
    const int per_lane = hd / 32; /* <= DS4K_MAX_HEAD_DIM / 32 */
    for (int r = r0 + warp; r < r1; r += nw) {
        int64_t off;
        const void *base = att_row(r, n_raw, lo, ring, raw_cap, comp, sel, hd, f16, &off);
        float rv[DS4K_MAX_HEAD_DIM / 32];
#pragma unroll
        for (int i = 0; i < DS4K_MAX_HEAD_DIM / 32; i++) rv[i] = i < per_lane ? kv_load(base, off + lane + 32 * i, f16) : 0.0f;
#pragma unroll
        for (int j = 0; j < ATT_HG; j++) {
            float d = 0.0f;
#pragma unroll
            for (int i = 0; i < DS4K_MAX_HEAD_DIM / 32; i++)
                if (i < per_lane) d += sq[j][lane + 32 * i] * rv[i];
            d = warp_sum(d);
            if (lane == 0) sc[j][r - r0] = d * scale;
        }
    }
    __syncthreads();
    float m = -INFINITY, l = 0.0f;
    if (warp < ATT_HG) { /* head warp: max and sum of exp over the chunk */
        for (int r = lane; r < r1 - r0; r += 32) m = fmaxf(m, sc[warp][r]);
        m = warp_max(m);
        for (int r = lane; r < r1 - r0; r += 32) {
            sc[warp][r] = expf(sc[warp][r] - m);
            l += sc[warp][r];
        }
        l = warp_sum(l);
    }
    __syncthreads();
    for (int dd = threadIdx.x; dd < hd; dd += blockDim.x) {
        float acc[ATT_HG];
#pragma unroll
        for (int j = 0; j < ATT_HG; j++) acc[j] = 0.0f;
        for (int r = r0; r < r1; r++) {
            int64_t off;
            const void *base = att_row(r, n_raw, lo, ring, raw_cap, comp, sel, hd, f16, &off);
            const float v = kv_load(base, off + dd, f16);
#pragma unroll
            for (int j = 0; j < ATT_HG; j++) acc[j] += sc[j][r - r0] * v;
        }
#pragma unroll
        for (int j = 0; j < ATT_HG; j++) part[(((int64_t)t * H + h0 + j) * n_chunks + ch) * (hd + 2) + dd] = acc[j];
    }
    if (warp < ATT_HG && lane == 0) {
        float *out = part + (((int64_t)t * H + h0 + warp) * n_chunks + ch) * (hd + 2);
        out[hd] = m, out[hd + 1] = l;
    }
}

__global__ void attention_combine_kernel(const int *d_pos, int H, int hd, const float *sinks, const float *part,
                                         int n_chunks, const double *freqs, int n_pairs, float *o) {
    __shared__ float so[DS4K_MAX_HEAD_DIM];
    const int t = blockIdx.x, h = blockIdx.y;
    const int64_t p = (int64_t)d_pos[0] + t;
    const float *pp = part + ((int64_t)t * H + h) * n_chunks * (hd + 2);
    float M = sinks[h];
    for (int c = 0; c < n_chunks; c++) M = fmaxf(M, pp[c * (hd + 2) + hd]);
    float den = expf(sinks[h] - M);
    for (int c = 0; c < n_chunks; c++) {
        const float mc = pp[c * (hd + 2) + hd];
        if (mc != -INFINITY) den += expf(mc - M) * pp[c * (hd + 2) + hd + 1];
    }
    for (int dd = threadIdx.x; dd < hd; dd += blockDim.x) {
        float acc = 0.0f;
        for (int c = 0; c < n_chunks; c++) {
            const float mc = pp[c * (hd + 2) + hd];
            if (mc != -INFINITY) acc += expf(mc - M) * pp[c * (hd + 2) + dd];
        }
        so[dd] = acc / den;
    }
    __syncthreads();
    block_rope(so, hd, n_pairs, freqs, p, true);
    for (int i = threadIdx.x; i < hd; i += blockDim.x) o[((int64_t)t * H + h) * hd + i] = so[i];
}

/* Heads per attention block: as many as fit (at most ATT_MAX_HG) in ~200 KiB. */
static int att_group(int H, int hd, int max_rows, size_t *smem) {
    for (int hg = ATT_MAX_HG; hg >= 1; hg /= 2) {
        if (H % hg) continue;
        const size_t b = (size_t)(2 * hg * hd + hg * max_rows + 8) * sizeof(float);
        if (b <= 200 * 1024 || hg == 1) {
            *smem = b;
            return hg;
        }
    }
    *smem = 0;
    return 1;
}

extern "C" void ds4k_attention(const float *q, int n, const int *d_pos, int H, int hd, float scale, const float *sinks,
                               const void *ring, int raw_cap, int window, const void *comp, int ratio, bool csa,
                               const int32_t *sel, const int *n_sel, int topk, bool f16, const double *freqs,
                               int n_pairs, float *o, int max_rows, float *part, ds4_stream st) {
    if (n <= 0) return;
    if (part && n <= 8 && H % ATT_HG == 0) {
        const int n_chunks = (max_rows + ATT_CHUNK - 1) / ATT_CHUNK;
        attention_chunk_kernel<<<dim3(n, H / ATT_HG, n_chunks), 32 * ATT_HG, 0, (cudaStream_t)st>>>(
            q, d_pos, H, hd, scale, ring, raw_cap, window, comp, ratio, csa, sel, n_sel, topk, f16, part, n_chunks);
        attention_combine_kernel<<<dim3(n, H), 128, 0, (cudaStream_t)st>>>(d_pos, H, hd, sinks, part, n_chunks, freqs,
                                                                        n_pairs, o);
        return;
    }
    if (attention_mma(q, n, d_pos, H, hd, scale, sinks, ring, raw_cap, window, comp, ratio, csa, sel, n_sel, topk, f16,
                      freqs, n_pairs, o, (cudaStream_t)st))
        return;
    size_t smem;
    const int hg = att_group(H, hd, max_rows, &smem);
    attention_kernel<<<dim3(n, H / hg), ATT_THREADS, smem, (cudaStream_t)st>>>(q, d_pos, H, hd, scale, sinks, ring,
                                                                             raw_cap, window, comp, ratio, csa, sel, n_sel,
                                                                             topk, f16, freqs, n_pairs, o, hg, max_rows);
}
