/* ds4 — --dump-logprobs (see logprobs.h). */
#include "engine/logprobs.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if it is not one. */
static size_t utf8_len(const unsigned char *s, size_t n) {
    if (s[0] < 0x80) return 1;
    size_t len;
    uint32_t cp;
    if ((s[0] & 0xe0) == 0xc0) len = 2, cp = s[0] & 0x1f;
    else if ((s[0] & 0xf0) == 0xe0) len = 3, cp = s[0] & 0x0f;
    else if ((s[0] & 0xf8) == 0xf0) len = 4, cp = s[0] & 0x07;
    else return 0;
    if (len > n) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return len;
}

void ds4_json_write_bytes(FILE *out, const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    fputc('"', out);
    for (size_t i = 0; i < n;) {
        const unsigned char c = s[i];
        if (c == '"' || c == '\\') {
            fputc('\\', out);
            fputc(c, out);
            i++;
        } else if (c < 0x20) {
            if (c == '\n') fputs("\\n", out);
            else if (c == '\t') fputs("\\t", out);
            else if (c == '\r') fputs("\\r", out);
            else fprintf(out, "\\u%04x", c);
            i++;
        } else if (c < 0x80) {
            fputc(c, out);
            i++;
        } else {
            const size_t l = utf8_len(s + i, n - i);
            if (l == 0) {
                fprintf(out, "\\u00%02x", c);
                i++;
            } else {
                fwrite(s + i, 1, l, out);
                i += l;
            }
        }
    }
    fputc('"', out);
}

static void write_token(FILE *out, const ds4_tokenizer *tok, int32_t id) {
    size_t len = 0;
    const char *t = ds4_token_text(tok, id, &len);
    fprintf(out, "{\"id\":%d,\"text\":", id);
    ds4_json_write_bytes(out, t, len);
    fputs(",\"bytes\":[", out);
    for (size_t i = 0; i < len; i++) fprintf(out, "%s%u", i ? "," : "", (unsigned char)t[i]);
    fputs("]}", out);
}

int ds4_dump_logprobs(ds4_engine *e, int n_prompt, int max_steps, int top_k, FILE *out, ds4_err *err) {
    const int V = e->model->hp.n_vocab;
    if (top_k < 1) top_k = 1;
    if (top_k > V) top_k = V;
    const int32_t eos = ds4_tokenizer_specials(e->tok)->eos;
    int32_t *best = malloc(sizeof(int32_t) * (size_t)top_k);
    if (!best) return ds4_errf(err, "out of memory");
    fprintf(out, "{\n  \"source\":\"ds4\",\n  \"prompt_tokens\":%d,\n  \"ctx\":%d,\n  \"top_k\":%d,\n  \"steps\":[", n_prompt,
            ds4_session_ctx(e->sess), top_k);
    int rc = 0;
    for (int step = 0; step < max_steps; step++) {
        const float *l = ds4_session_logits(e->sess);
        double mx = -INFINITY;
        for (int i = 0; i < V; i++) mx = l[i] > mx ? l[i] : mx;
        double sum = 0.0;
        for (int i = 0; i < V; i++) sum += exp((double)l[i] - mx);
        const double lse = mx + log(sum);
        /* top-k by logit, ties to the lower id (insertion into a small sorted list) */
        int nb = 0;
        for (int32_t i = 0; i < V; i++) {
            if (nb == top_k && !(l[i] > l[best[nb - 1]])) continue;
            int p = nb < top_k ? nb++ : nb - 1;
            while (p > 0 && l[i] > l[best[p - 1]]) {
                best[p] = best[p - 1];
                p--;
            }
            best[p] = i;
        }
        const int32_t sel = best[0];
        fprintf(out, "%s\n    {\"step\":%d,\n     \"selected\":", step ? "," : "", step);
        write_token(out, e->tok, sel);
        fputs(",\n     \"top_logprobs\":[", out);
        for (int k = 0; k < nb; k++) {
            fputs(k ? "," : "", out);
            fputs("{\"token\":", out);
            write_token(out, e->tok, best[k]);
            fprintf(out, ",\"logit\":%.9g,\"logprob\":%.9g}", l[best[k]], (double)l[best[k]] - lse);
        }
        fputs("]}", out);
        if (sel == eos || ds4_session_n_tokens(e->sess) >= ds4_session_ctx(e->sess)) break;
        if (step + 1 < max_steps && (rc = ds4_session_decode(e->sess, sel, err)) != 0) break;
    }
    fputs("\n  ]\n}\n", out);
    free(best);
    return rc;
}
