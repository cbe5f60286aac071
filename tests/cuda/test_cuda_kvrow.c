/* ds4-cuda-test — the KV cache's row formats (--kv-type) on the device
 * against their CPU twin, src/model/kv_format.c:
 *
 *   stores      the KV store and the compressors write the same rows in f32
 *               and in f16 / bf16 / fp8 (attention rows) or FP4 (indexer
 *               rows); each format's bytes must be the CPU's
 *               ds4_kvrow_encode of the f32 rows, bit for bit, and fp8 /
 *               FP4 rows must decode to the f32 rows exactly (their first
 *               448 elements went through the FP8 simulation, indexer rows
 *               through Hadamard + FP4), including a block of tiny values;
 *   readers     the attention and indexer kernels on rows in each format:
 *               test_cuda_attn.c (test_attention_decode, test_indexer_topk
 *               take the format). */
#include <math.h>
#include <string.h>

#include "cpu/ops.h"
#include "cuda_test_util.h"
#include "model/kv_format.h"
#include "model/model.h"

static const char *fmt_name(int f) {
    static const char *names[] = {"f32", "f16", "bf16", "fp8", "fp4"};
    return f >= 0 && f <= 4 ? names[f] : "?";
}

/* rows (n of dim floats, the f32 store's) against the format's bytes `got`:
 * the CPU's encoding of them bitwise, and (exact) their decoding bitwise the
 * rows */
static void check_rows(const char *what, int fmt, const float *rows, const uint8_t *got, int n, int dim, int nope,
                       bool exact) {
    const size_t rb = ds4_kvrow_bytes((ds4_row_fmt)fmt, dim, nope);
    uint8_t *want = malloc(rb);
    float *back = malloc(sizeof(float) * dim);
    int bad_bytes = 0, bad_values = 0;
    for (int r = 0; r < n; r++) {
        ds4_kvrow_encode((ds4_row_fmt)fmt, rows + (size_t)r * dim, dim, nope, want);
        bad_bytes += memcmp(want, got + r * rb, rb) != 0;
        ds4_kvrow_decode((ds4_row_fmt)fmt, got + r * rb, dim, nope, back);
        for (int i = 0; exact && i < (fmt == DS4_ROW_FP8 ? nope : dim); i++)
            bad_values += memcmp(&back[i], &rows[(size_t)r * dim + i], 4) != 0;
    }
    check(bad_bytes == 0 && bad_values == 0, "%s, %s rows (%zu bytes each): %d of %d rows differ from the CPU's encoding%s",
          what, fmt_name(fmt), rb, bad_bytes, n, exact ? (bad_values ? ", decoded values NOT exact" : ", decoded exactly") : "");
    free(want), free(back);
}

/* The raw rows: RMSNorm, RoPE, FP8 on the first hd - 64, stored as f32 and
 * in each format. One 64-block of every row is 1e-6 of the others' scale,
 * so its exponent is far from theirs. */
static void test_kv_store_formats(ds4_rng *r) {
    ds4_hparams hp;
    ds4_hparams_published(&hp);
    double fr[32];
    ds4_rope_freqs(&hp, true, fr);
    const int n = 9, hd = 512, nope = hd - 64, raw_cap = 16, pos0 = 3000;
    float *kv = rnd(r, (size_t)n * hd, 1.0f), *w = rnd(r, hd, 0.1f);
    for (int i = 0; i < hd; i++) w[i] += 1.0f;
    for (int t = 0; t < n; t++)
        for (int i = 128; i < 192; i++) kv[(size_t)t * hd + i] *= 1e-6f;
    float *dkv = to_dev(kv, sizeof(float) * n * hd), *dw = to_dev(w, sizeof(float) * hd);
    double *dfr = to_dev(fr, sizeof(fr));
    int p = pos0, *dpos = to_dev(&p, sizeof(int));
    float *ring32 = malloc(sizeof(float) * raw_cap * hd), *d32 = to_dev(NULL, sizeof(float) * raw_cap * hd);
    ds4k_kv_store(dkv, dw, 1e-6f, dfr, 32, dpos, n, hd, true, d32, raw_cap, DS4_ROW_F32, NULL);
    from_dev(ring32, d32, sizeof(float) * raw_cap * hd);
    float *rows = malloc(sizeof(float) * n * hd);
    for (int t = 0; t < n; t++) memcpy(rows + (size_t)t * hd, ring32 + ((pos0 + t) % raw_cap) * hd, sizeof(float) * hd);
    const int fmts[3] = {DS4_ROW_F16, DS4_ROW_BF16, DS4_ROW_FP8};
    for (int k = 0; k < 3; k++) {
        const size_t rb = ds4_kvrow_bytes((ds4_row_fmt)fmts[k], hd, nope);
        uint8_t *dring = to_dev(NULL, rb * raw_cap), *ring = malloc(rb * raw_cap), *got = malloc(rb * n);
        ds4k_kv_store(dkv, dw, 1e-6f, dfr, 32, dpos, n, hd, true, dring, raw_cap, fmts[k], NULL);
        from_dev(ring, dring, rb * raw_cap);
        for (int t = 0; t < n; t++) memcpy(got + t * rb, ring + ((pos0 + t) % raw_cap) * rb, rb);
        check_rows("kv_store (FP8-simulated, a block of 1e-6)", fmts[k], rows, got, n, hd, nope, fmts[k] == DS4_ROW_FP8);
        cudaFree(dring), free(ring), free(got);
    }
    cudaFree(dkv), cudaFree(dw), cudaFree(dfr), cudaFree(dpos), cudaFree(d32);
    free(kv), free(w), free(ring32), free(rows);
}

/* A compressor's rows (ratio 4 with overlap: an attention compressor with
 * FP8 or the indexer's with Hadamard + FP4), a 300-token chunk (the windows
 * kernel) and one token at a time (the serial kernel), as f32 and in fmt. */
static void test_compressor_formats(ds4_rng *r, int width, bool fp4, int fmt) {
    const int ratio = 4, W = 2 * width, slots = 2 * ratio, p0 = 5, n = 300, n_rows = (p0 + n) / ratio + 1;
    const int n_pairs = 32, nope = width - 2 * n_pairs;
    cmp_inputs in = cmp_inputs_make(r, n, W, ratio, width, slots);
    int *dpos = to_dev(NULL, sizeof(int));
    const size_t rb = ds4_kvrow_bytes((ds4_row_fmt)fmt, width, nope);
    float *rows32 = malloc(sizeof(float) * n_rows * width);
    uint8_t *got = malloc(rb * n_rows);
    for (int serial = 0; serial < 2; serial++) {
        for (int pass = 0; pass < 2; pass++) { /* f32, then fmt, from the same state */
            const int f = pass ? fmt : DS4_ROW_F32;
            const size_t b = ds4_kvrow_bytes((ds4_row_fmt)f, width, nope);
            float *dst = to_dev(in.st0, sizeof(float) * 2 * slots * W);
            uint8_t *drows = to_dev(NULL, b * n_rows);
            cudaMemset(drows, 0, b * n_rows);
            for (int t = 0; t < (serial ? n : 1); t++) {
                const int at = p0 + t, cnt = serial ? 1 : n;
                cudaMemcpy(dpos, &at, sizeof(int), cudaMemcpyHostToDevice);
                ds4k_compressor(dst, dst + slots * W, ratio, true, W, in.kv + (size_t)t * W, in.gate + (size_t)t * W,
                                &in.ape, in.norm, 1e-6f, width, in.freqs, n_pairs, dpos, cnt, !fp4, fp4, drows, f, NULL,
                                NULL, 0, NULL);
            }
            from_dev(pass ? (void *)got : (void *)rows32, drows, b * n_rows);
            cudaFree(dst), cudaFree(drows);
        }
        char what[96];
        snprintf(what, sizeof(what), "compressor rows (%s, %s)", fp4 ? "indexer: Hadamard + FP4" : "attention: FP8",
                 serial ? "one token at a time" : "a 300-token chunk");
        /* rows 0 .. (p0 + n) / ratio - 1 closed; the last stays zero in both */
        check_rows(what, fmt, rows32, got, (p0 + n) / ratio, width, nope, fmt == DS4_ROW_FP8 || fmt == DS4_ROW_FP4);
    }
    cmp_inputs_free(&in);
    cudaFree(dpos);
    free(rows32), free(got);
}

void test_kvrow_kernels(ds4_rng *r) {
    test_kv_store_formats(r);
    test_compressor_formats(r, 512, false, DS4_ROW_FP8);
    test_compressor_formats(r, 512, false, DS4_ROW_BF16);
    test_compressor_formats(r, 128, true, DS4_ROW_FP4);
    test_compressor_formats(r, 128, true, DS4_ROW_F16);
}
