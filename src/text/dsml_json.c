/* ds4 — JSON helpers for the DSML layer (see dsml_json.h). */
#include "text/dsml_json.h"

#include <string.h>

/* ===================================================================== UTF-8 */

int ds4_json_utf8_seq(const char *s0, size_t n) {
    const unsigned char *s = (const unsigned char *)s0;
    unsigned c = s[0];
    if (c < 0x80) return 1;
    /* Ranges from RFC 3629: the second byte range of E0/ED/F0/F4 is narrower
     * (no overlong forms, no surrogates, nothing above U+10FFFF). */
    int len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) len = 3, lo = 0xA0;
    else if (c >= 0xE1 && c <= 0xEC) len = 3;
    else if (c == 0xED) len = 3, hi = 0x9F;
    else if (c >= 0xEE && c <= 0xEF) len = 3;
    else if (c == 0xF0) len = 4, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    else if (c == 0xF4) len = 4, hi = 0x8F;
    else return -1;
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n) return 0;
        unsigned b = s[i];
        unsigned l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
        if (b < l || b > h) return -i;
    }
    return len;
}

size_t ds4_json_utf8_hold(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        unsigned c = u[n - k];
        if (c < 0x80) return 0;
        if (c >= 0xC0) return ds4_json_utf8_seq(s + n - k, k) == 0 ? k : 0;
        /* continuation byte: look further back for the lead byte */
    }
    return 0;
}

/* ========================================================= string escaping */

static const char REPLACEMENT[] = "\xEF\xBF\xBD"; /* U+FFFD */

int ds4_json_escape(ds4_textbuf *out, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    size_t i = 0, run = 0; /* s[run..i) is pending literal text */
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80) {
            int r = ds4_json_utf8_seq(s + i, n - i);
            if (r > 0) {
                i += (size_t)r;
                continue;
            }
            ds4_textbuf_append(out, s + run, i - run);
            ds4_textbuf_append(out, REPLACEMENT, 3);
            i += r == 0 ? n - i : (size_t)-r;
            run = i;
            continue;
        }
        if (c != '"' && c != '\\' && c >= 0x20) {
            i++;
            continue;
        }
        ds4_textbuf_append(out, s + run, i - run);
        char esc[6] = {'\\', 0, 0, 0, 0, 0};
        size_t elen = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            esc[1] = 'u', esc[2] = '0', esc[3] = '0', esc[4] = hex[c >> 4], esc[5] = hex[c & 15];
            elen = 6;
        }
        ds4_textbuf_append(out, esc, elen);
        run = ++i;
    }
    ds4_textbuf_append(out, s + run, i - run);
    return out->oom ? -1 : 0;
}

/* ================================================ incremental JSON validator */

enum {
    J_VALUE,     /* a value is expected (top level, after ':' or an array ',') */
    J_ARR_FIRST, /* after '[': a value or ']' */
    J_OBJ_FIRST, /* after '{': a key or '}' */
    J_OBJ_KEY,   /* after ',' in an object: a key */
    J_COLON,     /* after a key */
    J_AFTER,     /* after a value inside a container: ',' or the closer */
    J_DONE,      /* the top-level value is complete */
    J_STRING,    /* inside a string; sub = 0 plain, 1 after '\', 2..5 \u digits */
    J_NUMBER,    /* inside a number; sub = N_* */
    J_LITERAL    /* inside true/false/null; sub = index into lit */
};

enum { N_MINUS, N_ZERO, N_INT, N_DOT, N_FRAC, N_E, N_ESIGN, N_EXP };

static int j_ws(unsigned c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
static int j_digit(unsigned c) { return c >= '0' && c <= '9'; }
static int j_hex(unsigned c) { return j_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

void ds4_json_stream_init(ds4_json_stream *j) {
    memset(j, 0, sizeof(*j));
    j->state = J_VALUE;
}

static int j_fail(ds4_json_stream *j) {
    j->error = 1;
    return -1;
}

static void j_emit(ds4_textbuf *out, unsigned char c) {
    if (out) ds4_textbuf_putc(out, (char)c);
}

static void j_value_done(ds4_json_stream *j) { j->state = j->depth == 0 ? J_DONE : J_AFTER; }

static int j_push(ds4_json_stream *j, unsigned char c) {
    if (j->depth >= DS4_JSON_MAX_DEPTH) return j_fail(j);
    j->stack[j->depth++] = c;
    return 0;
}

static int j_start_value(ds4_json_stream *j, unsigned char c, ds4_textbuf *out) {
    switch (c) {
    case '{':
        if (j_push(j, '{')) return -1;
        j->state = J_OBJ_FIRST;
        break;
    case '[':
        if (j_push(j, '[')) return -1;
        j->state = J_ARR_FIRST;
        break;
    case '"':
        j->state = J_STRING, j->sub = 0, j->is_key = 0;
        break;
    case '-': j->state = J_NUMBER, j->sub = N_MINUS; break;
    case '0': j->state = J_NUMBER, j->sub = N_ZERO; break;
    case 't': j->state = J_LITERAL, j->lit = "true", j->sub = 1; break;
    case 'f': j->state = J_LITERAL, j->lit = "false", j->sub = 1; break;
    case 'n': j->state = J_LITERAL, j->lit = "null", j->sub = 1; break;
    default:
        if (c >= '1' && c <= '9') {
            j->state = J_NUMBER, j->sub = N_INT;
            break;
        }
        return j_fail(j);
    }
    j_emit(out, c);
    return 0;
}

/* Strict JSON forbids raw control bytes in strings; emit them escaped so the
 * minified text is valid (see the header). */
static void j_emit_control(ds4_textbuf *out, unsigned char c) {
    if (!out) return;
    char tmp[1] = {(char)c};
    ds4_json_escape(out, tmp, 1);
}

int ds4_json_stream_byte(ds4_json_stream *j, unsigned char c, ds4_textbuf *out) {
    if (j->error) return -1;
    if (!j_ws(c)) j->any = 1;
    switch (j->state) {
    case J_VALUE:
        if (j_ws(c)) return 0;
        return j_start_value(j, c, out);
    case J_ARR_FIRST:
        if (j_ws(c)) return 0;
        if (c == ']') {
            j->depth--;
            j_emit(out, c);
            j_value_done(j);
            return 0;
        }
        return j_start_value(j, c, out);
    case J_OBJ_FIRST:
    case J_OBJ_KEY:
        if (j_ws(c)) return 0;
        if (c == '}' && j->state == J_OBJ_FIRST) {
            j->depth--;
            j_emit(out, c);
            j_value_done(j);
            return 0;
        }
        if (c != '"') return j_fail(j);
        j->state = J_STRING, j->sub = 0, j->is_key = 1;
        j_emit(out, c);
        return 0;
    case J_COLON:
        if (j_ws(c)) return 0;
        if (c != ':') return j_fail(j);
        j->state = J_VALUE;
        j_emit(out, c);
        return 0;
    case J_AFTER:
        if (j_ws(c)) return 0;
        if (c == ',') {
            j->state = j->stack[j->depth - 1] == '{' ? J_OBJ_KEY : J_VALUE;
            j_emit(out, c);
            return 0;
        }
        if ((c == '}' && j->stack[j->depth - 1] == '{') || (c == ']' && j->stack[j->depth - 1] == '[')) {
            j->depth--;
            j_emit(out, c);
            j_value_done(j);
            return 0;
        }
        return j_fail(j);
    case J_DONE:
        return j_ws(c) ? 0 : 1;
    case J_STRING:
        if (j->sub == 0) {
            if (c == '"') {
                j_emit(out, c);
                if (j->is_key) {
                    j->is_key = 0;
                    j->state = J_COLON;
                } else {
                    j_value_done(j);
                }
            } else if (c == '\\') {
                j->sub = 1;
                j_emit(out, c);
            } else if (c < 0x20) {
                j_emit_control(out, c);
            } else {
                j_emit(out, c);
            }
            return 0;
        }
        if (j->sub == 1) {
            if (c == 'u') j->sub = 2;
            else if (strchr("\"\\/bfnrt", c) && c) j->sub = 0;
            else return j_fail(j);
            j_emit(out, c);
            return 0;
        }
        if (!j_hex(c)) return j_fail(j);
        j->sub = j->sub == 5 ? 0 : j->sub + 1;
        j_emit(out, c);
        return 0;
    case J_NUMBER: {
        int next = -1; /* -1: the number ended before c */
        switch (j->sub) {
        case N_MINUS:
            if (c == '0') next = N_ZERO;
            else if (j_digit(c)) next = N_INT;
            else return j_fail(j);
            break;
        case N_ZERO:
            if (c == '.') next = N_DOT;
            else if (c == 'e' || c == 'E') next = N_E;
            break;
        case N_INT:
            if (j_digit(c)) next = N_INT;
            else if (c == '.') next = N_DOT;
            else if (c == 'e' || c == 'E') next = N_E;
            break;
        case N_DOT:
            if (!j_digit(c)) return j_fail(j);
            next = N_FRAC;
            break;
        case N_FRAC:
            if (j_digit(c)) next = N_FRAC;
            else if (c == 'e' || c == 'E') next = N_E;
            break;
        case N_E:
            if (c == '+' || c == '-') next = N_ESIGN;
            else if (j_digit(c)) next = N_EXP;
            else return j_fail(j);
            break;
        case N_ESIGN:
            if (!j_digit(c)) return j_fail(j);
            next = N_EXP;
            break;
        case N_EXP:
            if (j_digit(c)) next = N_EXP;
            break;
        }
        if (next >= 0) {
            j->sub = next;
            j_emit(out, c);
            return 0;
        }
        /* The number is complete; c belongs to whatever follows it. */
        j_value_done(j);
        return ds4_json_stream_byte(j, c, out);
    }
    case J_LITERAL:
        if (c != (unsigned char)j->lit[j->sub]) return j_fail(j);
        j_emit(out, c);
        if (j->lit[++j->sub] == 0) j_value_done(j);
        return 0;
    }
    return j_fail(j);
}

int ds4_json_stream_in_string(const ds4_json_stream *j) { return !j->error && j->state == J_STRING; }

int ds4_json_stream_complete(const ds4_json_stream *j) {
    if (j->error) return 0;
    if (j->state == J_DONE) return 1;
    return j->state == J_NUMBER && j->depth == 0 &&
           (j->sub == N_ZERO || j->sub == N_INT || j->sub == N_FRAC || j->sub == N_EXP);
}

/* ====================================================== complete JSON texts */

int ds4_json_valid(const char *s, size_t n) {
    ds4_json_stream j;
    ds4_json_stream_init(&j);
    for (size_t i = 0; i < n; i++)
        if (ds4_json_stream_byte(&j, (unsigned char)s[i], NULL) != 0) return 0;
    return ds4_json_stream_complete(&j);
}

int ds4_json_minify(ds4_textbuf *out, const char *s, size_t n) {
    ds4_json_stream j;
    ds4_json_stream_init(&j);
    for (size_t i = 0; i < n; i++)
        if (ds4_json_stream_byte(&j, (unsigned char)s[i], out) < 0) return -1;
    return out->oom ? -1 : 0;
}

static int hexval(unsigned c) {
    if (c >= '0' && c <= '9') return (int)(c - '0');
    if (c >= 'a' && c <= 'f') return (int)(c - 'a' + 10);
    if (c >= 'A' && c <= 'F') return (int)(c - 'A' + 10);
    return -1;
}

/* Read the 4 hex digits of a \u escape at s[0..4). */
static long hex4(const char *s, size_t avail) {
    if (avail < 4) return -1;
    long v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval((unsigned char)s[i]);
        if (h < 0) return -1;
        v = v * 16 + h;
    }
    return v;
}

static void put_utf8(ds4_textbuf *out, unsigned long cp) {
    char b[4];
    size_t k;
    if (cp < 0x80) b[0] = (char)cp, k = 1;
    else if (cp < 0x800) b[0] = (char)(0xC0 | (cp >> 6)), b[1] = (char)(0x80 | (cp & 0x3F)), k = 2;
    else if (cp < 0x10000)
        b[0] = (char)(0xE0 | (cp >> 12)), b[1] = (char)(0x80 | ((cp >> 6) & 0x3F)), b[2] = (char)(0x80 | (cp & 0x3F)),
        k = 3;
    else
        b[0] = (char)(0xF0 | (cp >> 18)), b[1] = (char)(0x80 | ((cp >> 12) & 0x3F)),
        b[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), b[3] = (char)(0x80 | (cp & 0x3F)), k = 4;
    ds4_textbuf_append(out, b, k);
}

int ds4_json_string_decode(ds4_textbuf *out, const char *s, size_t n) {
    size_t i = 0, run = 0;
    while (i < n) {
        if (s[i] != '\\') {
            i++;
            continue;
        }
        ds4_textbuf_append(out, s + run, i - run);
        if (i + 1 >= n) return -1;
        char e = s[i + 1];
        char lit = 0;
        switch (e) {
        case '"': lit = '"'; break;
        case '\\': lit = '\\'; break;
        case '/': lit = '/'; break;
        case 'b': lit = '\b'; break;
        case 'f': lit = '\f'; break;
        case 'n': lit = '\n'; break;
        case 'r': lit = '\r'; break;
        case 't': lit = '\t'; break;
        case 'u': break;
        default: return -1;
        }
        if (e != 'u') {
            ds4_textbuf_putc(out, lit);
            i += 2;
        } else {
            long cp = hex4(s + i + 2, n - i - 2);
            if (cp < 0) return -1;
            i += 6;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                long lo = (i + 1 < n && s[i] == '\\' && s[i + 1] == 'u') ? hex4(s + i + 2, n - i - 2) : -1;
                if (lo >= 0xDC00 && lo <= 0xDFFF) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    i += 6;
                } else {
                    cp = 0xFFFD;
                }
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                cp = 0xFFFD;
            }
            put_utf8(out, (unsigned long)cp);
        }
        run = i;
    }
    ds4_textbuf_append(out, s + run, i - run);
    return out->oom ? -1 : 0;
}

static size_t skip_ws(const char *s, size_t n, size_t i) {
    while (i < n && j_ws((unsigned char)s[i])) i++;
    return i;
}

/* End of the string whose opening quote is at s[i] (index just past the
 * closing quote).  The text is known to be valid. */
static size_t string_end(const char *s, size_t n, size_t i) {
    for (i++; i < n; i++) {
        if (s[i] == '\\') i++;
        else if (s[i] == '"') return i + 1;
    }
    return n;
}

/* End of the value starting at s[i] (valid JSON assumed). */
static size_t value_end(const char *s, size_t n, size_t i) {
    if (s[i] == '"') return string_end(s, n, i);
    if (s[i] == '{' || s[i] == '[') {
        int depth = 0;
        while (i < n) {
            char c = s[i];
            if (c == '"') {
                i = string_end(s, n, i);
                continue;
            }
            if (c == '{' || c == '[') depth++;
            else if (c == '}' || c == ']') {
                if (--depth == 0) return i + 1;
            }
            i++;
        }
        return n;
    }
    while (i < n && !j_ws((unsigned char)s[i]) && s[i] != ',' && s[i] != '}' && s[i] != ']') i++;
    return i;
}

int ds4_json_object_begin(ds4_json_object_iter *it, const char *s, size_t n) {
    memset(it, 0, sizeof(*it));
    if (!ds4_json_valid(s, n)) return -1;
    size_t i = skip_ws(s, n, 0);
    if (i >= n || s[i] != '{') return -1;
    it->s = s, it->n = n, it->pos = i + 1;
    return 0;
}

int ds4_json_object_next(ds4_json_object_iter *it, const char **key, size_t *key_len, const char **val,
                         size_t *val_len) {
    const char *s = it->s;
    size_t n = it->n, i = skip_ws(s, n, it->pos);
    if (i < n && s[i] == ',') i = skip_ws(s, n, i + 1);
    if (i >= n || s[i] != '"') {
        it->pos = n;
        return 0; /* '}' (the text was validated, so nothing else can be here) */
    }
    size_t kend = string_end(s, n, i);
    *key = s + i + 1;
    *key_len = kend - i - 2;
    i = skip_ws(s, n, kend);
    i = skip_ws(s, n, i + 1); /* past ':' */
    size_t vend = value_end(s, n, i);
    *val = s + i;
    *val_len = vend - i;
    it->pos = vend;
    return 1;
}
