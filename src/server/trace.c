/* ds4-server — the session trace (--trace FILE, INTERFACES.md §6.14), the
 * stderr log format (§6.15) and the test-only scripted output. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/server.h"

/* ============================================================ log */

void srv_log(const char *fmt, ...) {
    char line[2048];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    size_t n = strftime(line, sizeof(line), "%m%d %H:%M:%S ", &tm);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", line); /* one write per line: threads do not interleave */
}

/* ============================================================ trace */

struct srv_trace {
    FILE *f;
    pthread_mutex_t mu;
};

srv_trace *srv_trace_open(const char *path, ds4_err *err) {
    FILE *f = fopen(path, "a");
    if (!f) {
        ds4_errf(err, "cannot open trace file '%s'", path);
        return NULL;
    }
    setvbuf(f, NULL, _IONBF, 0); /* unbuffered: readable while the server runs */
    srv_trace *t = calloc(1, sizeof(*t));
    if (!t) {
        fclose(f);
        ds4_errf(err, "out of memory");
        return NULL;
    }
    t->f = f;
    pthread_mutex_init(&t->mu, NULL);
    return t;
}

void srv_trace_close(srv_trace *t) {
    if (!t) return;
    fclose(t->f);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

void srv_trace_printf(srv_trace *t, const char *fmt, ...) {
    if (!t) return;
    pthread_mutex_lock(&t->mu);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(t->f, fmt, ap);
    va_end(ap);
    pthread_mutex_unlock(&t->mu);
}

void srv_trace_write(srv_trace *t, const char *s, size_t n) {
    if (!t || !n) return;
    pthread_mutex_lock(&t->mu);
    fwrite(s, 1, n, t->f);
    pthread_mutex_unlock(&t->mu);
}

void srv_trace_escaped(srv_trace *t, const char *s, size_t n) {
    if (!t) return;
    pthread_mutex_lock(&t->mu);
    for (size_t i = 0; i < n; i++) {
        const unsigned char c = (unsigned char)s[i];
        if (c == '\n') fputs("\\n", t->f);
        else if (c == '\t') fputs("\\t", t->f);
        else if (c == '\\') fputs("\\\\", t->f);
        else if (c < 0x20 || c == 0x7f) fprintf(t->f, "\\x%02x", c);
        else fputc(c, t->f);
    }
    pthread_mutex_unlock(&t->mu);
}

/* ============================================================ scripted output
 *
 * File format:
 *
 *   === WHEN <trigger>
 *   <output text, any number of lines>
 *   === DEFAULT
 *   <output text>
 *
 * The newline before the next `===` line belongs to the separator.  For a
 * rendered prompt, the rule whose trigger occurs LATEST in the prompt wins
 * (a conversation contains earlier turns' triggers too), else DEFAULT.  The
 * output is tokenized with special-token recognition, so it may contain
 * `</think>` and DSML tool calls; the model's forward pass still runs, only
 * the choice of each token is replaced. */

typedef struct script_rule {
    char *trigger; /* NULL: default */
    ds4_tokvec out;
} script_rule;

struct srv_script {
    script_rule *rules;
    int n;
};

void srv_script_free(srv_script *s) {
    if (!s) return;
    for (int i = 0; i < s->n; i++) {
        free(s->rules[i].trigger);
        ds4_tokvec_free(&s->rules[i].out);
    }
    free(s->rules);
    free(s);
}

srv_script *srv_script_load(const char *path, const ds4_tokenizer *tok, ds4_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        ds4_errf(err, "cannot open scripted output file '%s'", path);
        return NULL;
    }
    ds4_textbuf all;
    ds4_textbuf_init(&all);
    char buf[8192];
    size_t k;
    while ((k = fread(buf, 1, sizeof(buf), f)) > 0) ds4_textbuf_append(&all, buf, k);
    fclose(f);
    srv_script *s = calloc(1, sizeof(*s));
    if (!s || all.oom) goto oom;
    const char *p = all.p ? all.p : "", *end = p + all.n;
    while (p < end) {
        if (strncmp(p, "=== ", 4) != 0) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            p = nl ? nl + 1 : end; /* text before the first rule: ignored */
            continue;
        }
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *hend = nl ? nl : end;
        const char *body = nl ? nl + 1 : end;
        /* the body runs to the next "\n=== " (or the end) */
        const char *q = body;
        const char *stop = end;
        while (q < end) {
            const char *x = memchr(q, '\n', (size_t)(end - q));
            if (!x) break;
            if (end - x >= 5 && strncmp(x + 1, "=== ", 4) == 0) {
                stop = x;
                break;
            }
            q = x + 1;
        }
        if (body > end) body = end;
        if (stop < body) stop = body;
        script_rule *r = realloc(s->rules, (size_t)(s->n + 1) * sizeof(*r));
        if (!r) goto oom;
        s->rules = r;
        script_rule *rule = &s->rules[s->n++];
        memset(rule, 0, sizeof(*rule));
        if (hend - p >= 9 && strncmp(p, "=== WHEN ", 9) == 0) {
            rule->trigger = strndup(p + 9, (size_t)(hend - p - 9));
            if (!rule->trigger) goto oom;
        }
        if (ds4_tokenize(tok, body, (size_t)(stop - body), true, &rule->out, err) != 0) goto fail;
        p = stop < end ? stop + 1 : end;
    }
    ds4_textbuf_free(&all);
    return s;
oom:
    ds4_errf(err, "out of memory");
fail:
    ds4_textbuf_free(&all);
    srv_script_free(s);
    return NULL;
}

/* Last occurrence of needle in hay, or NULL. */
static const char *last_occurrence(const char *hay, size_t hn, const char *needle) {
    const size_t nn = strlen(needle);
    if (!nn || nn > hn) return NULL;
    for (size_t i = hn - nn + 1; i-- > 0;)
        if (hay[i] == needle[0] && memcmp(hay + i, needle, nn) == 0) return hay + i;
    return NULL;
}

const ds4_tokvec *srv_script_pick(const srv_script *s, const char *prompt, size_t n) {
    const ds4_tokvec *best = NULL, *def = NULL;
    const char *best_at = NULL;
    for (int i = 0; s && i < s->n; i++) {
        const script_rule *r = &s->rules[i];
        if (!r->trigger) {
            def = &r->out;
            continue;
        }
        const char *at = prompt ? last_occurrence(prompt, n, r->trigger) : NULL;
        if (at && (!best_at || at > best_at)) {
            best_at = at;
            best = &r->out;
        }
    }
    return best ? best : def;
}
