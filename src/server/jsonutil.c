/* ds4-server — JSON helpers on top of cJSON (see jsonutil.h). */
#include "server/jsonutil.h"

#include <stdlib.h>
#include <string.h>

#include "text/dsml_json.h"

/* ============================================================ parsing */

/* cJSON accepts up to CJSON_NESTING_LIMIT (1000) levels; the server's limit
 * is 256 (§6.3), checked on the tree. */
static int depth_ok(const cJSON *j, int depth) {
    if (!cJSON_IsArray(j) && !cJSON_IsObject(j)) return 1;
    if (depth > DS4_JSON_MAX_DEPTH) return 0;
    for (const cJSON *c = j->child; c; c = c->next)
        if (!depth_ok(c, depth + 1)) return 0;
    return 1;
}

/* RFC 8259: JSON text is UTF-8.  cJSON copies string bytes unchecked, so
 * invalid sequences are refused here, before they reach a prompt. */
static int utf8_ok(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        if ((unsigned char)s[i] < 0x80) {
            i++;
            continue;
        }
        const int r = ds4_json_utf8_seq(s + i, n - i);
        if (r <= 0) return 0;
        i += (size_t)r;
    }
    return 1;
}

cJSON *srv_json_parse(const char *body, size_t len) {
    if (!body || len == 0 || !utf8_ok(body, len)) return NULL;
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(body, len, &end, false);
    if (!j) return NULL;
    /* only whitespace may follow the value */
    for (const char *p = end; p < body + len; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
            cJSON_Delete(j);
            return NULL;
        }
    }
    if (!depth_ok(j, 1)) {
        cJSON_Delete(j);
        return NULL;
    }
    return j;
}

/* ============================================================ raw spans */

static int key_equals(const char *k, size_t kl, const char *want) {
    const size_t wl = strlen(want);
    if (!memchr(k, '\\', kl)) return kl == wl && memcmp(k, want, kl) == 0;
    ds4_textbuf b;
    ds4_textbuf_init(&b);
    int eq = ds4_json_string_decode(&b, k, kl) == 0 && b.n == wl && memcmp(b.p, want, wl) == 0;
    ds4_textbuf_free(&b);
    return eq;
}

srv_span srv_span_member(srv_span obj, const char *key) {
    srv_span none = {NULL, 0};
    if (!obj.p) return none;
    ds4_json_object_iter it;
    if (ds4_json_object_begin(&it, obj.p, obj.n) != 0) return none;
    const char *k, *v;
    size_t kl, vl;
    while (ds4_json_object_next(&it, &k, &kl, &v, &vl) == 1)
        if (key_equals(k, kl, key)) return (srv_span){v, vl};
    return none;
}

static const char *skip_ws(const char *p, const char *e) {
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')) p++;
    return p;
}

srv_span srv_span_index(srv_span arr, int i) {
    srv_span none = {NULL, 0};
    if (!arr.p || i < 0) return none;
    const char *p = arr.p, *e = arr.p + arr.n;
    p = skip_ws(p, e);
    if (p >= e || *p != '[') return none;
    p = skip_ws(p + 1, e);
    for (int k = 0; p < e && *p != ']'; k++) {
        /* cJSON tells where the element ends: the span is the exact text */
        const char *end = NULL;
        cJSON *v = cJSON_ParseWithLengthOpts(p, (size_t)(e - p), &end, false);
        if (!v) return none;
        cJSON_Delete(v);
        if (k == i) return (srv_span){p, (size_t)(end - p)};
        p = skip_ws(end, e);
        if (p < e && *p == ',') p = skip_ws(p + 1, e);
    }
    return none;
}

srv_span *srv_span_elements(srv_span arr, int *n) {
    *n = 0;
    if (!arr.p) return NULL;
    const char *p = arr.p, *e = arr.p + arr.n;
    p = skip_ws(p, e);
    if (p >= e || *p != '[') return NULL;
    p = skip_ws(p + 1, e);
    srv_span *v = NULL;
    int cap = 0;
    while (p < e && *p != ']') {
        const char *end = NULL;
        cJSON *j = cJSON_ParseWithLengthOpts(p, (size_t)(e - p), &end, false);
        if (!j) break;
        cJSON_Delete(j);
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            srv_span *t = realloc(v, (size_t)cap * sizeof(*v));
            if (!t) break;
            v = t;
        }
        v[(*n)++] = (srv_span){p, (size_t)(end - p)};
        p = skip_ws(end, e);
        if (p < e && *p == ',') p = skip_ws(p + 1, e);
    }
    return v;
}

/* ============================================================ strings */

char *srv_utf8_clean(const char *s, size_t n) {
    ds4_textbuf b;
    ds4_textbuf_init(&b);
    ds4_textbuf_reserve(&b, n + 1);
    size_t i = 0;
    while (i < n) {
        const unsigned char c = (unsigned char)s[i];
        if (c == 0) {
            i++;
            continue;
        }
        if (c < 0x80) {
            ds4_textbuf_putc(&b, (char)c);
            i++;
            continue;
        }
        const int r = ds4_json_utf8_seq(s + i, n - i);
        if (r > 0) {
            ds4_textbuf_append(&b, s + i, (size_t)r);
            i += (size_t)r;
        } else {
            ds4_textbuf_puts(&b, "\xEF\xBF\xBD");
            i += r < 0 ? (size_t)-r : n - i; /* an incomplete tail at the very end */
        }
    }
    if (!b.p) ds4_textbuf_puts(&b, "");
    if (b.oom) {
        ds4_textbuf_free(&b);
        return NULL;
    }
    return ds4_textbuf_detach(&b, NULL);
}

cJSON *srv_json_str(const char *s, size_t n) {
    char *c = srv_utf8_clean(s ? s : "", s ? n : 0);
    cJSON *j = cJSON_CreateString(c ? c : "");
    free(c);
    return j;
}

cJSON *srv_json_add_str(cJSON *obj, const char *key, const char *s, size_t n) {
    cJSON *j = srv_json_str(s, n);
    cJSON_AddItemToObject(obj, key, j);
    return j;
}

char *srv_json_print(const cJSON *j, bool nl, size_t *len) {
    char *s = cJSON_PrintUnformatted(j);
    if (!s) return NULL;
    size_t n = strlen(s);
    if (nl) {
        char *t = realloc(s, n + 2);
        if (!t) {
            free(s);
            return NULL;
        }
        s = t;
        s[n++] = '\n';
        s[n] = 0;
    }
    if (len) *len = n;
    return s;
}

int srv_json_append_escaped(ds4_textbuf *out, const char *s, size_t n) { return ds4_json_escape(out, s, n); }
