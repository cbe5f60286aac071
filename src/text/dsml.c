/* ds4 — DSML tool-call parsing, streaming projection and canonical rendering
 * (INTERFACES.md §4).  See dsml.h for the API and the outcome rules.
 *
 * Design: one incremental state machine does all the parsing.  The stream
 * keeps every byte fed so far in one buffer and a few cursors into it; each
 * feed appends, then advances the machine as far as the bytes allow.  Whenever
 * a decision needs bytes that have not arrived yet (a tag cut in half, a
 * partial `&am`, half a UTF-8 character, a possible `</think>`), the machine
 * stops at that point without consuming and resumes there on the next feed.
 * The final parser is the same machine fed the whole text and told that no
 * more bytes will come, so the streamed events and the final result cannot
 * disagree, whatever the token boundaries were.
 *
 * Phases of a turn:
 *   REASONING  (thinking mode) until the first `</think>`;
 *   CONTENT    visible text; with tools active, scanning for a block start;
 *   BLOCK      inside a tool_calls block (grammar below);
 *   FAILED     a block broke after a call was announced: nothing more is
 *              projected, we only watch for the closing tag so that decoding
 *              can stop;
 *   DONE       the block closed (or the failed block's closing tag was seen).
 *
 * Block grammar (dialect D fixed by the start tag; whitespace between
 * elements is ASCII whitespace):
 *   block    := ws (invoke ws)+ D.close
 *   invoke   := D.invoke attrs ">" ws (param ws)* D.invoke_end
 *   param    := D.param attrs ">" value D.param_end
 *             | D.param attrs ">" ws leaf (ws leaf)* [ws D.param_end]
 *                 (no string attribute: the loose nested shape, §4.2 step 4)
 *   leaf     := D.param attrs ">" value D.param_end
 *   value    := raw text up to the next D.param_end; string="true" or absent:
 *               entity-decoded text; otherwise JSON (minified, empty = null). */
#include "text/dsml.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/dsml_json.h"

/* ================================================================ dialects */

typedef struct dsml_dialect {
    const char *label;
    const char *open, *close;           /* tool_calls */
    const char *invoke, *invoke_end;    /* invoke (open tag without its '>') */
    const char *param, *param_end;      /* parameter (open tag without its '>') */
} dsml_dialect;

/* In the order of §4.2 step 2.  The short form is what the model writes when
 * it drops the first bar; the plain form is XML-ish drift. */
static const dsml_dialect DIALECTS[3] = {
    {"DSML", "<｜DSML｜tool_calls>", "</｜DSML｜tool_calls>", "<｜DSML｜invoke", "</｜DSML｜invoke>",
     "<｜DSML｜parameter", "</｜DSML｜parameter>"},
    {"short DSML", "<DSML｜tool_calls>", "</DSML｜tool_calls>", "<DSML｜invoke", "</DSML｜invoke>",
     "<DSML｜parameter", "</DSML｜parameter>"},
    {"plain", "<tool_calls>", "</tool_calls>", "<invoke", "</invoke>", "<parameter", "</parameter>"},
};

/* The five entities decoded in names and string values (§4.2 step 4); any
 * other '&' is literal text. */
static const struct {
    const char *text;
    char ch;
} ENTITIES[5] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};

/* A tag longer than this without its '>' is not a tag we can use. */
#define TAG_MAX 4096

/* ========================================================= small helpers */

enum { M_NO, M_PARTIAL, M_FULL };

/* Does t[p..n) start with lit (FULL), or is it a proper prefix of lit that
 * more bytes could complete (PARTIAL)? */
static int match_at(const char *t, size_t n, size_t p, const char *lit) {
    size_t L = strlen(lit), avail = n - p;
    if (avail >= L) return memcmp(t + p, lit, L) == 0 ? M_FULL : M_NO;
    if (avail == 0) return M_PARTIAL; /* t may be NULL when nothing has arrived */
    return memcmp(t + p, lit, avail) == 0 ? M_PARTIAL : M_NO;
}

static int is_ws(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

static size_t skip_ws(const char *t, size_t n, size_t p) {
    while (p < n && is_ws((unsigned char)t[p])) p++;
    return p;
}

/* Length of the longest proper prefix of lit that ends s[0..n). */
static size_t partial_suffix(const char *s, size_t n, const char *lit) {
    size_t L = strlen(lit);
    for (size_t k = (L - 1 < n ? L - 1 : n); k > 0; k--)
        if (memcmp(s + n - k, lit, k) == 0) return k;
    return 0;
}

static size_t find_from(const char *t, size_t n, size_t from, const char *lit) {
    size_t L = strlen(lit);
    for (size_t p = from; p + L <= n; p++) {
        const char *q = memchr(t + p, lit[0], n - p);
        if (!q) break;
        p = (size_t)(q - t);
        if (p + L <= n && memcmp(t + p, lit, L) == 0) return p;
    }
    return (size_t)-1;
}

static char *dup_mem(const char *p, size_t n) {
    char *r = malloc(n + 1);
    if (!r) return NULL;
    if (n) memcpy(r, p, n);
    r[n] = 0;
    return r;
}

/* Append s[0..n) with the five entities decoded. */
static void decode_entities(ds4_textbuf *out, const char *s, size_t n) {
    size_t i = 0, run = 0;
    while (i < n) {
        if (s[i] != '&') {
            i++;
            continue;
        }
        int e = -1;
        for (int k = 0; k < 5; k++)
            if (match_at(s, n, i, ENTITIES[k].text) == M_FULL) e = k;
        if (e < 0) {
            i++;
            continue;
        }
        ds4_textbuf_append(out, s + run, i - run);
        ds4_textbuf_putc(out, ENTITIES[e].ch);
        i += strlen(ENTITIES[e].text);
        run = i;
    }
    ds4_textbuf_append(out, s + run, i - run);
}

/* ================================================================= ids */

int ds4_dsml_make_id(char *out, size_t cap, const char *prefix, ds4_dsml_random_fn rnd, void *user) {
    static const char hex[] = "0123456789abcdef";
    size_t pl = strlen(prefix);
    if (!rnd || cap < pl + DS4_DSML_ID_HEX + 1) return -1;
    uint8_t b[DS4_DSML_ID_HEX / 2];
    rnd(user, b, sizeof(b));
    memcpy(out, prefix, pl);
    for (size_t i = 0; i < sizeof(b); i++) {
        out[pl + 2 * i] = hex[b[i] >> 4];
        out[pl + 2 * i + 1] = hex[b[i] & 15];
    }
    out[pl + DS4_DSML_ID_HEX] = 0;
    return 0;
}

const char *ds4_dsml_decode_state_name(ds4_dsml_decode_state s) {
    switch (s) {
    case DS4_DSML_OUTSIDE: return "OUTSIDE";
    case DS4_DSML_STRUCTURAL: return "STRUCTURAL";
    case DS4_DSML_STRING_BODY: return "STRING_BODY";
    case DS4_DSML_JSON_STRUCTURAL: return "JSON_STRUCTURAL";
    case DS4_DSML_JSON_STRING: return "JSON_STRING";
    }
    return "?";
}

void ds4_dsml_call_free(ds4_dsml_call *c) {
    if (!c) return;
    free(c->id);
    free(c->name);
    free(c->arguments);
    memset(c, 0, sizeof(*c));
}

void ds4_dsml_result_free(ds4_dsml_result *r) {
    if (!r) return;
    free(r->reasoning);
    free(r->content);
    free(r->raw_dsml);
    for (int i = 0; i < r->n_calls; i++) ds4_dsml_call_free(&r->calls[i]);
    free(r->calls);
    memset(r, 0, sizeof(*r));
}

/* ============================================================ the stream */

enum { PH_REASONING, PH_CONTENT, PH_BLOCK, PH_FAILED, PH_DONE };
enum { BS_BLOCK, BS_INVOKE, BS_UNDECIDED, BS_STRING, BS_JSON, BS_NESTED };
enum { STEP_PROGRESS, STEP_NEED, STEP_FAIL, STEP_DONE };

typedef struct stream_call {
    char *name;
    char *id;
    ds4_textbuf args; /* concatenation of the fragments sent so far */
    int valid;        /* all JSON values were valid */
} stream_call;

struct ds4_dsml_stream {
    ds4_dsml_opts o;
    char id_prefix[24];
    ds4_dsml_event_fn fn;
    void *user;

    ds4_textbuf text; /* every byte fed */
    int eof;          /* finish() was called: no more bytes will come */
    int phase;

    /* reasoning: [r_start, r_end) once closed; emitted up to r_emit */
    int think_checked; /* the optional leading <think> was looked for */
    size_t r_start, r_emit, r_end;
    int r_closed;

    /* content: starts at c_start; emitted up to c_emit; block starts are
     * searched from c_scan; c_end = content end before a block (trimmed) */
    size_t c_start, c_emit, c_scan, c_end;

    /* block */
    const dsml_dialect *d;
    size_t b_start, b_pos, b_end, fail_scan;
    int bstate;
    int committed;   /* a call of this block has been announced */
    int failed;      /* a committed block broke: the turn is MALFORMED */
    int in_leaf;     /* the current value is a leaf of a nested run */
    int n_members;   /* members written in the current invoke */
    int n_leaves;    /* members written in the current nested object */
    int block_calls; /* calls in the current block */
    ds4_json_stream json;

    /* attributes of the last tag read */
    ds4_textbuf attr_name, attr_string;
    int has_name, has_string;

    stream_call *calls;
    int n_calls, cap_calls;

    ds4_textbuf frag; /* argument bytes not yet sent as an event */
    ds4_textbuf tmp;

    int flagged;      /* a block start failed in a way worth reporting */
    int fail_prose;   /* the last failure looked like prose, not DSML */
    int oom;
    char err[192];
};

/* ------------------------------------------------------------- events */

static void send_event(ds4_dsml_stream *s, const ds4_dsml_event *ev) {
    if (s->fn) s->fn(s->user, ev);
}

static void flush_frag(ds4_dsml_stream *s) {
    if (!s->frag.n) return;
    ds4_dsml_event ev = {0};
    ev.type = DS4_DSML_EV_CALL_ARGS;
    ev.index = s->n_calls - 1;
    ev.text = s->frag.p;
    ev.len = s->frag.n;
    send_event(s, &ev);
    ds4_textbuf_clear(&s->frag);
}

static void send_simple(ds4_dsml_stream *s, ds4_dsml_event_type type, const char *p, size_t n, int recovery) {
    if ((type == DS4_DSML_EV_TEXT || type == DS4_DSML_EV_REASONING) && n == 0) return;
    flush_frag(s);
    ds4_dsml_event ev = {0};
    ev.type = type;
    ev.text = p;
    ev.len = n;
    ev.recovery = recovery;
    ev.index = -1; /* not a call event */
    send_event(s, &ev);
}

static void send_error(ds4_dsml_stream *s, const char *msg) {
    flush_frag(s);
    ds4_dsml_event ev = {0};
    ev.type = DS4_DSML_EV_ERROR;
    ev.index = s->n_calls - 1;
    ev.message = msg;
    send_event(s, &ev);
}

/* Arguments output for the current call: kept for the final result and
 * batched into one CALL_ARGS event per feed.  After an invalid JSON value the
 * call's arguments are `{}` and nothing more is sent for it. */
static void args_out(ds4_dsml_stream *s, const char *p, size_t n) {
    stream_call *c = &s->calls[s->n_calls - 1];
    if (!c->valid || n == 0) return;
    if (ds4_textbuf_append(&c->args, p, n) || ds4_textbuf_append(&s->frag, p, n)) s->oom = 1;
}

static void args_puts(ds4_dsml_stream *s, const char *p) { args_out(s, p, strlen(p)); }

static void args_escaped(ds4_dsml_stream *s, const char *p, size_t n) {
    if (n == 0) return;
    ds4_textbuf_clear(&s->tmp);
    if (ds4_json_escape(&s->tmp, p, n)) s->oom = 1;
    args_out(s, s->tmp.p, s->tmp.n);
}

static int step_fail(ds4_dsml_stream *s, size_t at, const char *what) {
    s->fail_prose = 0;
    snprintf(s->err, sizeof(s->err), "invalid tool call: %s (%s block, byte %zu)", what, s->d->label, at);
    return STEP_FAIL;
}

/* ------------------------------------------------------------- tags */

static int attr_char(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
           c == ':' || c == '.';
}

/* Parse `key="value"` pairs in t[a..b).  name and string are kept (first
 * occurrence, entity-decoded); other attributes are ignored. */
static int parse_attrs(ds4_dsml_stream *s, const char *t, size_t a, size_t b) {
    ds4_textbuf_clear(&s->attr_name);
    ds4_textbuf_clear(&s->attr_string);
    s->has_name = s->has_string = 0;
    size_t i = a;
    for (;;) {
        i = skip_ws(t, b, i);
        if (i >= b) return 0;
        size_t k = i;
        while (k < b && attr_char((unsigned char)t[k])) k++;
        if (k == i) return -1;
        size_t key = i, key_len = k - i;
        i = skip_ws(t, b, k);
        if (i >= b || t[i] != '=') return -1;
        i = skip_ws(t, b, i + 1);
        if (i >= b || t[i] != '"') return -1;
        const char *q = memchr(t + i + 1, '"', b - i - 1);
        if (!q) return -1;
        size_t v = i + 1, v_len = (size_t)(q - t) - v;
        if (key_len == 4 && !memcmp(t + key, "name", 4) && !s->has_name) {
            decode_entities(&s->attr_name, t + v, v_len);
            s->has_name = 1;
        } else if (key_len == 6 && !memcmp(t + key, "string", 6) && !s->has_string) {
            decode_entities(&s->attr_string, t + v, v_len);
            s->has_string = 1;
        }
        i = (size_t)(q - t) + 1;
    }
}

/* Read the open tag at q whose name part (e.g. `<｜DSML｜invoke`) has
 * name_len bytes: it continues with whitespace or '>' and ends at the next
 * '>'.  On success *end is just past the '>' and the attributes are parsed. */
static int read_tag(ds4_dsml_stream *s, size_t q, size_t name_len, size_t *end) {
    const char *t = s->text.p;
    size_t n = s->text.n, a = q + name_len;
    if (a >= n) return STEP_NEED;
    if (t[a] != '>' && !is_ws((unsigned char)t[a])) return step_fail(s, q, "unknown tag");
    const char *gt = memchr(t + a, '>', n - a);
    if (!gt) return n - q > TAG_MAX ? step_fail(s, q, "tag without '>'") : STEP_NEED;
    if (parse_attrs(s, t, a, (size_t)(gt - t))) return step_fail(s, q, "malformed attributes");
    *end = (size_t)(gt - t) + 1;
    return STEP_PROGRESS;
}

/* -------------------------------------------------------- block steps */

static int id_in_turn(const ds4_dsml_stream *s, const char *id) {
    for (int i = 0; i < s->n_calls; i++)
        if (s->calls[i].id && !strcmp(s->calls[i].id, id)) return 1;
    return 0;
}

static int open_invoke(ds4_dsml_stream *s, size_t q) {
    size_t end;
    int r = read_tag(s, q, strlen(s->d->invoke), &end);
    if (r != STEP_PROGRESS) return r;
    if (!s->has_name) return step_fail(s, q, "invoke tag without a name attribute");
    if (s->attr_name.n == 0) return step_fail(s, q, "invoke tag with an empty name");

    if (s->n_calls == s->cap_calls) {
        int cap = s->cap_calls ? s->cap_calls * 2 : 4;
        stream_call *nc = realloc(s->calls, (size_t)cap * sizeof(*nc));
        if (!nc) {
            s->oom = 1;
            return STEP_NEED;
        }
        s->calls = nc;
        s->cap_calls = cap;
    }
    stream_call *c = &s->calls[s->n_calls];
    memset(c, 0, sizeof(*c));
    c->valid = 1;
    c->name = dup_mem(s->attr_name.p, s->attr_name.n);
    if (!c->name) {
        s->oom = 1;
        return STEP_NEED;
    }
    if (s->o.random) {
        /* §4.6: regenerate on a collision with this turn's ids or the tool
         * memory.  A broken random source could collide forever, so give up
         * after many tries (the id is then merely not unique). */
        char id[DS4_DSML_ID_MAX];
        for (int tries = 0; tries < 64; tries++) {
            ds4_dsml_make_id(id, sizeof(id), s->id_prefix, s->o.random, s->o.random_user);
            if (!id_in_turn(s, id) && !(s->o.id_taken && s->o.id_taken(s->o.id_taken_user, id))) break;
        }
        c->id = dup_mem(id, strlen(id));
        if (!c->id) s->oom = 1;
    }
    s->n_calls++;
    s->block_calls++;
    s->committed = 1;

    flush_frag(s);
    ds4_dsml_event ev = {0};
    ev.type = DS4_DSML_EV_CALL_START;
    ev.index = s->n_calls - 1;
    ev.name = c->name;
    ev.id = c->id;
    send_event(s, &ev);

    args_puts(s, "{");
    s->n_members = 0;
    s->bstate = BS_INVOKE;
    s->b_pos = end;
    return STEP_PROGRESS;
}

static void end_call(ds4_dsml_stream *s) {
    args_puts(s, "}");
    flush_frag(s);
    ds4_dsml_event ev = {0};
    ev.type = DS4_DSML_EV_CALL_END;
    ev.index = s->n_calls - 1;
    ev.args_valid = s->calls[s->n_calls - 1].valid;
    send_event(s, &ev);
}

static int open_param(ds4_dsml_stream *s, size_t q, int leaf) {
    size_t end;
    int r = read_tag(s, q, strlen(s->d->param), &end);
    if (r != STEP_PROGRESS) return r;
    if (!s->has_name) return step_fail(s, q, "parameter tag without a name attribute");

    int *count = leaf ? &s->n_leaves : &s->n_members;
    if ((*count)++) args_puts(s, ",");
    args_puts(s, "\"");
    args_escaped(s, s->attr_name.p, s->attr_name.n);
    args_puts(s, "\":");

    s->in_leaf = leaf;
    if (s->has_string && s->attr_string.n == 4 && !memcmp(s->attr_string.p, "true", 4)) {
        args_puts(s, "\"");
        s->bstate = BS_STRING;
    } else if (!s->has_string) {
        /* Untyped: a string, unless a run of nested parameters follows (only
         * one level of nesting is recognized; an untyped leaf is a string). */
        if (leaf) {
            args_puts(s, "\"");
            s->bstate = BS_STRING;
        } else {
            s->bstate = BS_UNDECIDED;
        }
    } else {
        ds4_json_stream_init(&s->json);
        s->bstate = BS_JSON;
    }
    s->b_pos = end;
    return STEP_PROGRESS;
}

static void end_value(ds4_dsml_stream *s) { s->bstate = s->in_leaf ? BS_NESTED : BS_INVOKE; }

/* String value: decode entities, JSON-escape, stop at the closing tag. */
static int step_string(ds4_dsml_stream *s) {
    const char *t = s->text.p;
    size_t n = s->text.n, p = s->b_pos, run = p;
    const char *close = s->d->param_end;
    while (p < n) {
        unsigned char c = (unsigned char)t[p];
        if (c == '<') {
            int m = match_at(t, n, p, close);
            if (m == M_PARTIAL) break;
            if (m == M_FULL) {
                args_escaped(s, t + run, p - run);
                args_puts(s, "\"");
                s->b_pos = p + strlen(close);
                end_value(s);
                return STEP_PROGRESS;
            }
            p++;
        } else if (c == '&') {
            int e = -1, partial = 0;
            for (int k = 0; k < 5; k++) {
                int m = match_at(t, n, p, ENTITIES[k].text);
                if (m == M_FULL) e = k;
                else if (m == M_PARTIAL) partial = 1;
            }
            if (e >= 0) {
                args_escaped(s, t + run, p - run);
                args_escaped(s, &ENTITIES[e].ch, 1);
                p += strlen(ENTITIES[e].text);
                run = p;
            } else if (partial) {
                break; /* `&am…`: wait for the rest */
            } else {
                p++;
            }
        } else if (c >= 0x80) {
            int r = ds4_json_utf8_seq(t + p, n - p);
            if (r == 0) break; /* half a character: wait */
            p += r > 0 ? (size_t)r : (size_t)-r;
        } else {
            p++;
        }
    }
    args_escaped(s, t + run, p - run);
    s->b_pos = p;
    return STEP_NEED;
}

/* JSON value: validate + minify, stop at the closing tag. */
static int step_json(ds4_dsml_stream *s) {
    const char *t = s->text.p;
    size_t n = s->text.n, p = s->b_pos;
    const char *close = s->d->param_end;
    stream_call *c = &s->calls[s->n_calls - 1];
    ds4_textbuf_clear(&s->tmp);
    while (p < n) {
        unsigned char ch = (unsigned char)t[p];
        if (ch == '<') {
            int m = match_at(t, n, p, close);
            if (m == M_PARTIAL) break;
            if (m == M_FULL) {
                args_out(s, s->tmp.p, s->tmp.n);
                if (!s->json.any) args_puts(s, "null"); /* empty value */
                else if (!ds4_json_stream_complete(&s->json)) c->valid = 0;
                s->b_pos = p + strlen(close);
                end_value(s);
                return STEP_PROGRESS;
            }
        }
        size_t take = 1;
        const char *bytes = t + p;
        if (ch >= 0x80 && ds4_json_stream_in_string(&s->json)) {
            int r = ds4_json_utf8_seq(t + p, n - p);
            if (r == 0) break;
            if (r > 0) {
                take = (size_t)r;
            } else {
                take = (size_t)-r;
                bytes = "\xEF\xBF\xBD"; /* invalid UTF-8 inside a JSON string */
            }
        }
        size_t blen = bytes == t + p ? take : 3;
        for (size_t k = 0; k < blen; k++)
            if (ds4_json_stream_byte(&s->json, (unsigned char)bytes[k], &s->tmp) != 0) c->valid = 0;
        p += take;
    }
    args_out(s, s->tmp.p, s->tmp.n);
    s->b_pos = p;
    return STEP_NEED;
}

static int block_step(ds4_dsml_stream *s) {
    const char *t = s->text.p;
    size_t n = s->text.n;
    const dsml_dialect *d = s->d;
    switch (s->bstate) {
    case BS_BLOCK: {
        size_t q = s->b_pos = skip_ws(t, n, s->b_pos);
        if (q >= n) return STEP_NEED;
        int mi = match_at(t, n, q, d->invoke), mc = match_at(t, n, q, d->close);
        if (mi == M_FULL) return open_invoke(s, q);
        if (mc == M_FULL) {
            if (s->block_calls == 0) return step_fail(s, q, "empty tool_calls block");
            s->b_end = q + strlen(d->close);
            return STEP_DONE;
        }
        if (mi == M_PARTIAL || mc == M_PARTIAL) return STEP_NEED;
        if (s->block_calls) return step_fail(s, q, "unexpected text after invoke");
        step_fail(s, q, "no invoke after block start");
        /* Text right after a start tag: prose that mentions the tag. */
        s->fail_prose = t[q] != '<';
        return STEP_FAIL;
    }
    case BS_INVOKE: {
        size_t q = s->b_pos = skip_ws(t, n, s->b_pos);
        if (q >= n) return STEP_NEED;
        int mp = match_at(t, n, q, d->param), me = match_at(t, n, q, d->invoke_end);
        if (mp == M_FULL) return open_param(s, q, 0);
        if (me == M_FULL) {
            end_call(s);
            s->bstate = BS_BLOCK;
            s->b_pos = q + strlen(d->invoke_end);
            return STEP_PROGRESS;
        }
        if (mp == M_PARTIAL || me == M_PARTIAL) return STEP_NEED;
        return step_fail(s, q, "unexpected text inside invoke");
    }
    case BS_UNDECIDED: {
        /* Leading whitespace stays part of a string value, so b_pos does not
         * move until the kind of value is known. */
        size_t q = skip_ws(t, n, s->b_pos);
        if (q >= n) return STEP_NEED;
        size_t L = strlen(d->param);
        int m = match_at(t, n, q, d->param);
        if (m == M_PARTIAL) return STEP_NEED;
        if (m == M_FULL) {
            if (q + L >= n) return STEP_NEED;
            if (t[q + L] == '>' || is_ws((unsigned char)t[q + L])) {
                args_puts(s, "{");
                s->n_leaves = 0;
                s->bstate = BS_NESTED;
                s->b_pos = q;
                return STEP_PROGRESS;
            }
        }
        args_puts(s, "\"");
        s->bstate = BS_STRING;
        return STEP_PROGRESS;
    }
    case BS_STRING: return step_string(s);
    case BS_JSON: return step_json(s);
    case BS_NESTED: {
        size_t q = s->b_pos = skip_ws(t, n, s->b_pos);
        if (q >= n) return STEP_NEED;
        int mp = match_at(t, n, q, d->param), mc = match_at(t, n, q, d->param_end);
        if (mp == M_FULL) return open_param(s, q, 1);
        if (mp == M_PARTIAL || mc == M_PARTIAL) return STEP_NEED;
        /* End of the run: close the object; an outer closing tag is optional. */
        args_puts(s, "}");
        s->in_leaf = 0;
        s->bstate = BS_INVOKE;
        if (mc == M_FULL) s->b_pos = q + strlen(d->param_end);
        return STEP_PROGRESS;
    }
    }
    return step_fail(s, s->b_pos, "internal state");
}

/* -------------------------------------------------------------- phases */

static int phase_reasoning(ds4_dsml_stream *s) {
    const char *t = s->text.p;
    size_t n = s->text.n;
    if (!s->think_checked) {
        /* The model sometimes repeats the `<think>` that ends the prompt. */
        int m = match_at(t, n, 0, DS4_THINK_OPEN);
        if (m == M_PARTIAL && !s->eof) return 0;
        s->think_checked = 1;
        if (m == M_FULL) s->r_start = s->r_emit = strlen(DS4_THINK_OPEN);
    }
    /* A `</think>` can only start at or after r_emit: earlier bytes were
     * emitted because they could not begin one. */
    size_t p = find_from(t, n, s->r_emit, DS4_THINK_CLOSE);
    if (p != (size_t)-1) {
        send_simple(s, DS4_DSML_EV_REASONING, t + s->r_emit, p - s->r_emit, 0);
        s->r_end = p;
        s->r_closed = 1;
        send_simple(s, DS4_DSML_EV_REASONING_END, NULL, 0, 0);
        s->c_start = s->c_emit = s->c_scan = p + strlen(DS4_THINK_CLOSE);
        s->phase = PH_CONTENT;
        return 1;
    }
    size_t safe = n;
    if (!s->eof) {
        safe -= partial_suffix(t + s->r_emit, n - s->r_emit, DS4_THINK_CLOSE);
        safe -= ds4_json_utf8_hold(t + s->r_emit, safe - s->r_emit);
    }
    send_simple(s, DS4_DSML_EV_REASONING, t + s->r_emit, safe - s->r_emit, 0);
    s->r_emit = safe;
    return 0;
}

static int phase_content(ds4_dsml_stream *s) {
    const char *t = s->text.p;
    size_t n = s->text.n;
    if (!s->o.tools_active) {
        size_t safe = s->eof ? n : n - ds4_json_utf8_hold(t + s->c_emit, n - s->c_emit);
        send_simple(s, DS4_DSML_EV_TEXT, t + s->c_emit, safe - s->c_emit, 0);
        s->c_emit = safe;
        return 0;
    }
    size_t hold = n; /* start of a possible partial block-start tag */
    size_t p = s->c_scan;
    while (p < n) {
        const char *lt = memchr(t + p, '<', n - p);
        if (!lt) break;
        p = (size_t)(lt - t);
        int found = -1, partial = 0;
        for (int k = 0; k < 3 && found < 0; k++) {
            int m = match_at(t, n, p, DIALECTS[k].open);
            if (m == M_FULL) found = k;
            else if (m == M_PARTIAL) partial = 1;
        }
        if (found >= 0) {
            /* Block start.  The whitespace separating it from the content
             * (normally `\n\n`) belongs to the block (raw_dsml), never to
             * the content: it was held back and is dropped here. */
            size_t e = p;
            while (e > s->c_start && is_ws((unsigned char)t[e - 1])) e--;
            if (e > s->c_emit) {
                send_simple(s, DS4_DSML_EV_TEXT, t + s->c_emit, e - s->c_emit, 0);
                s->c_emit = e;
            }
            s->c_end = e > s->c_emit ? e : s->c_emit;
            s->b_start = p;
            s->d = &DIALECTS[found];
            s->b_pos = p + strlen(DIALECTS[found].open);
            s->bstate = BS_BLOCK;
            s->committed = 0;
            s->block_calls = 0;
            s->phase = PH_BLOCK;
            return 1;
        }
        if (partial && !s->eof) {
            hold = p;
            break;
        }
        p++;
    }
    s->c_scan = hold;
    size_t safe = n;
    if (!s->eof) {
        /* Hold back: the partial tag, trailing whitespace (it may be the
         * separator before a block), and half a UTF-8 character. */
        safe = hold;
        while (safe > s->c_emit && is_ws((unsigned char)t[safe - 1])) safe--;
        safe -= ds4_json_utf8_hold(t + s->c_emit, safe - s->c_emit);
    }
    send_simple(s, DS4_DSML_EV_TEXT, t + s->c_emit, safe - s->c_emit, 0);
    s->c_emit = safe;
    return 0;
}

static int phase_block(ds4_dsml_stream *s) {
    for (;;) {
        int r = block_step(s);
        if (s->oom) return 0;
        if (r == STEP_PROGRESS) continue;
        if (r == STEP_NEED) return 0; /* at eof: unterminated (see finish) */
        if (r == STEP_DONE) {
            s->phase = PH_DONE;
            send_simple(s, DS4_DSML_EV_BLOCK_END, NULL, 0, 0);
            return 0;
        }
        /* STEP_FAIL */
        if (!s->committed) {
            /* Nothing of this block was shown as a call yet, so it can be
             * taken back: it is plain text (prose quoting a tag, an empty
             * block, a broken first invoke tag), and the search for a block
             * continues after its start tag.  Only failures past the start
             * tag itself are worth reporting. */
            if (!s->fail_prose) s->flagged = 1;
            s->phase = PH_CONTENT;
            s->c_scan = s->b_start + 1;
            return 1;
        }
        s->failed = 1;
        s->phase = PH_FAILED;
        s->fail_scan = s->b_pos;
        send_error(s, s->err);
        return 1;
    }
}

/* After a committed failure: only watch for the closing tag, so the caller can
 * stop decoding where it would have stopped for a good block. */
static int phase_failed(ds4_dsml_stream *s) {
    size_t p = find_from(s->text.p, s->text.n, s->fail_scan, s->d->close);
    if (p == (size_t)-1) {
        size_t L = strlen(s->d->close);
        if (s->text.n >= L && s->text.n - L + 1 > s->fail_scan) s->fail_scan = s->text.n - L + 1;
        return 0;
    }
    s->b_end = p + strlen(s->d->close);
    s->phase = PH_DONE;
    send_simple(s, DS4_DSML_EV_BLOCK_END, NULL, 0, 0);
    return 0;
}

static void advance(ds4_dsml_stream *s) {
    for (;;) {
        int again = 0;
        switch (s->phase) {
        case PH_REASONING: again = phase_reasoning(s); break;
        case PH_CONTENT: again = phase_content(s); break;
        case PH_BLOCK: again = phase_block(s); break;
        case PH_FAILED: again = phase_failed(s); break;
        default: break;
        }
        if (!again || s->oom) break;
    }
    flush_frag(s);
}

/* ------------------------------------------------------------ public API */

ds4_dsml_stream *ds4_dsml_stream_new(const ds4_dsml_opts *opts, ds4_dsml_event_fn fn, void *user) {
    ds4_dsml_stream *s = calloc(1, sizeof(*s));
    if (!s) return NULL;
    if (opts) s->o = *opts;
    const char *prefix = s->o.id_prefix ? s->o.id_prefix : "call_";
    snprintf(s->id_prefix, sizeof(s->id_prefix), "%s", prefix);
    s->o.id_prefix = s->id_prefix;
    s->fn = fn;
    s->user = user;
    s->phase = s->o.thinking ? PH_REASONING : PH_CONTENT;
    return s;
}

void ds4_dsml_stream_free(ds4_dsml_stream *s) {
    if (!s) return;
    for (int i = 0; i < s->n_calls; i++) {
        free(s->calls[i].name);
        free(s->calls[i].id);
        ds4_textbuf_free(&s->calls[i].args);
    }
    free(s->calls);
    ds4_textbuf_free(&s->text);
    ds4_textbuf_free(&s->frag);
    ds4_textbuf_free(&s->tmp);
    ds4_textbuf_free(&s->attr_name);
    ds4_textbuf_free(&s->attr_string);
    free(s);
}

static int check_oom(ds4_dsml_stream *s) {
    if (s->text.oom || s->frag.oom || s->tmp.oom || s->attr_name.oom || s->attr_string.oom) s->oom = 1;
    return s->oom ? -1 : 0;
}

int ds4_dsml_stream_feed(ds4_dsml_stream *s, const char *bytes, size_t n) {
    if (s->oom || s->eof) return -1;
    if (n == 0) return 0;
    if (ds4_textbuf_append(&s->text, bytes, n)) {
        s->oom = 1;
        return -1;
    }
    advance(s);
    return check_oom(s);
}

ds4_dsml_decode_state ds4_dsml_stream_state(const ds4_dsml_stream *s) {
    if (!s->o.tools_active || s->phase != PH_BLOCK) return DS4_DSML_OUTSIDE;
    const char *t = s->text.p;
    size_t n = s->text.n, p = s->b_pos;
    /* Holding a >= 2-byte partial closing tag: the rest of the tag is
     * structure, force it. */
    int closing = match_at(t, n, p, s->d->param_end) == M_PARTIAL && n - p >= 2;
    switch (s->bstate) {
    case BS_STRING: return closing ? DS4_DSML_STRUCTURAL : DS4_DSML_STRING_BODY;
    case BS_UNDECIDED: {
        size_t q = skip_ws(t, n, p);
        int tag = q < n && match_at(t, n, q, s->d->param) == M_PARTIAL && n - q >= 2;
        return closing || tag ? DS4_DSML_STRUCTURAL : DS4_DSML_STRING_BODY;
    }
    case BS_JSON:
        if (closing) return DS4_DSML_STRUCTURAL;
        return ds4_json_stream_in_string(&s->json) ? DS4_DSML_JSON_STRING : DS4_DSML_JSON_STRUCTURAL;
    default: return DS4_DSML_STRUCTURAL;
    }
}

int ds4_dsml_stream_block_closed(const ds4_dsml_stream *s) { return s->phase == PH_DONE; }

int ds4_dsml_stream_n_calls(const ds4_dsml_stream *s) { return s->n_calls; }

static int count_orphans(const char *t, size_t n) {
    int count = 0;
    for (int k = 0; k < 3; k++) {
        const char *close = DIALECTS[k].close;
        for (size_t p = find_from(t, n, 0, close); p != (size_t)-1; p = find_from(t, n, p + 1, close)) {
            count++;
        }
    }
    return count;
}

int ds4_dsml_stream_finish(ds4_dsml_stream *s, ds4_dsml_result *out) {
    memset(out, 0, sizeof(*out));
    if (s->oom) return -1;
    s->eof = 1;
    advance(s);
    if (check_oom(s)) return -1;

    const char *t = s->text.p ? s->text.p : "";
    size_t n = s->text.n;
    size_t r0 = 0, r1 = 0;          /* reasoning range */
    size_t c0 = 0, c1 = 0;          /* content range */
    size_t d0 = 0, d1 = 0;          /* raw_dsml range */
    int with_calls = 0;

    if (s->o.thinking) {
        r0 = s->r_start;
        r1 = s->r_closed ? s->r_end : n;
    }
    switch (s->phase) {
    case PH_REASONING:
        /* Thinking mode, `</think>` never came: all of it is reasoning and the
         * content is empty (§4.2 step 6, recommended fix). */
        out->status = DS4_DSML_OK;
        break;
    case PH_CONTENT:
        c0 = s->c_start, c1 = n;
        out->status = s->flagged ? DS4_DSML_MALFORMED : DS4_DSML_OK;
        break;
    case PH_BLOCK:
        c0 = s->c_start, c1 = s->c_end;
        d0 = s->c_end, d1 = n;
        out->status = DS4_DSML_UNTERMINATED;
        snprintf(s->err, sizeof(s->err), "unterminated tool call (%s block)", s->d->label);
        send_error(s, s->err);
        break;
    case PH_FAILED:
    case PH_DONE:
        if (s->failed) {
            /* Recover the whole visible text, block included (§4.3), and send
             * what the live projection held back. */
            c0 = s->c_start, c1 = n;
            out->status = DS4_DSML_MALFORMED;
            send_simple(s, DS4_DSML_EV_TEXT, t + s->c_emit, n - s->c_emit, 1);
        } else {
            c0 = s->c_start, c1 = s->c_end;
            d0 = s->c_end, d1 = s->b_end;
            out->status = DS4_DSML_OK;
            with_calls = 1;
        }
        break;
    }
    if (out->status != DS4_DSML_OK || s->flagged) snprintf(out->error, sizeof(out->error), "%s", s->err);

    out->reasoning = dup_mem(t + r0, r1 - r0);
    out->reasoning_len = r1 - r0;
    out->reasoning_closed = s->r_closed;
    out->content = dup_mem(t + c0, c1 - c0);
    out->content_len = c1 - c0;
    if (d1 > d0) {
        out->raw_dsml = dup_mem(t + d0, d1 - d0);
        out->raw_dsml_len = d1 - d0;
        if (!out->raw_dsml) goto oom;
    }
    if (!out->reasoning || !out->content) goto oom;
    if (out->status == DS4_DSML_OK) out->orphan_closes = count_orphans(out->content, out->content_len);

    if (with_calls && s->n_calls) {
        out->calls = calloc((size_t)s->n_calls, sizeof(*out->calls));
        if (!out->calls) goto oom;
        out->n_calls = s->n_calls;
        for (int i = 0; i < s->n_calls; i++) {
            stream_call *c = &s->calls[i];
            ds4_dsml_call *oc = &out->calls[i];
            oc->name = dup_mem(c->name, strlen(c->name));
            oc->id = c->id ? dup_mem(c->id, strlen(c->id)) : NULL;
            oc->arguments_valid = c->valid;
            if (c->valid) oc->arguments = dup_mem(c->args.p ? c->args.p : "", c->args.n), oc->arguments_len = c->args.n;
            else oc->arguments = dup_mem("{}", 2), oc->arguments_len = 2;
            if (!oc->name || !oc->arguments || (c->id && !oc->id)) goto oom;
        }
    }
    return 0;
oom:
    ds4_dsml_result_free(out);
    s->oom = 1;
    return -1;
}

int ds4_dsml_parse(const char *text, size_t len, const ds4_dsml_opts *opts, ds4_dsml_result *out) {
    memset(out, 0, sizeof(*out));
    ds4_dsml_stream *s = ds4_dsml_stream_new(opts, NULL, NULL);
    if (!s) return -1;
    int rc = ds4_dsml_stream_feed(s, text, len);
    if (rc == 0) rc = ds4_dsml_stream_finish(s, out);
    ds4_dsml_stream_free(s);
    return rc;
}

ds4_dsml_decode_state ds4_dsml_decode_state_of(const char *text, size_t len, const ds4_dsml_opts *opts) {
    ds4_dsml_stream *s = ds4_dsml_stream_new(opts, NULL, NULL);
    if (!s) return DS4_DSML_OUTSIDE;
    ds4_dsml_stream_feed(s, text, len);
    ds4_dsml_decode_state st = ds4_dsml_stream_state(s);
    ds4_dsml_stream_free(s);
    return st;
}

/* ==================================================== canonical rendering */

int ds4_dsml_escape_attr(ds4_textbuf *out, const char *s, size_t n) {
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        const char *rep = NULL;
        switch (s[i]) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '"': rep = "&quot;"; break;
        default: continue;
        }
        ds4_textbuf_append(out, s + run, i - run);
        ds4_textbuf_puts(out, rep);
        run = i + 1;
    }
    ds4_textbuf_append(out, s + run, n - run);
    return out->oom ? -1 : 0;
}

/* Copy s, replacing the '<' of every closing parameter tag by `with`. */
static void replace_close_lt(ds4_textbuf *out, const char *s, size_t n, const char *with) {
    size_t run = 0;
    for (size_t p = find_from(s, n, 0, DS4_DSML_PARAM_CLOSE); p != (size_t)-1;
         p = find_from(s, n, p + 1, DS4_DSML_PARAM_CLOSE)) {
        ds4_textbuf_append(out, s + run, p - run);
        ds4_textbuf_puts(out, with);
        run = p + 1;
    }
    ds4_textbuf_append(out, s + run, n - run);
}

int ds4_dsml_escape_string_value(ds4_textbuf *out, const char *s, size_t n) {
    replace_close_lt(out, s, n, "&lt;");
    return out->oom ? -1 : 0;
}

int ds4_dsml_escape_json_value(ds4_textbuf *out, const char *s, size_t n) {
    if (!ds4_json_valid(s, n)) return -1;
    ds4_textbuf min;
    ds4_textbuf_init(&min);
    int rc = ds4_json_minify(&min, s, n);
    if (rc == 0) replace_close_lt(out, min.p ? min.p : "", min.n, "\\u003c");
    ds4_textbuf_free(&min);
    return rc || out->oom ? -1 : 0;
}

int ds4_dsml_render_calls(ds4_textbuf *out, const ds4_dsml_call *calls, int n) {
    if (n <= 0) return 0;
    ds4_textbuf tmp;
    ds4_textbuf_init(&tmp);
    ds4_textbuf_puts(out, "\n\n" DS4_DSML_BLOCK_OPEN "\n");
    for (int i = 0; i < n; i++) {
        const ds4_dsml_call *c = &calls[i];
        const char *name = c->name ? c->name : "";
        const char *args = c->arguments ? c->arguments : "";
        size_t args_len = c->arguments ? c->arguments_len : 0;
        ds4_textbuf_puts(out, DS4_DSML_INVOKE_OPEN " name=\"");
        ds4_dsml_escape_attr(out, name, strlen(name));
        ds4_textbuf_puts(out, "\">\n");
        ds4_json_object_iter it;
        if (ds4_json_object_begin(&it, args, args_len) == 0) {
            const char *k, *v;
            size_t kl, vl;
            while (ds4_json_object_next(&it, &k, &kl, &v, &vl)) {
                ds4_textbuf_clear(&tmp);
                ds4_json_string_decode(&tmp, k, kl);
                ds4_textbuf_puts(out, DS4_DSML_PARAM_OPEN " name=\"");
                ds4_dsml_escape_attr(out, tmp.p ? tmp.p : "", tmp.n);
                if (v[0] == '"') {
                    ds4_textbuf_puts(out, "\" string=\"true\">");
                    ds4_textbuf_clear(&tmp);
                    ds4_json_string_decode(&tmp, v + 1, vl - 2);
                    ds4_dsml_escape_string_value(out, tmp.p ? tmp.p : "", tmp.n);
                } else {
                    ds4_textbuf_puts(out, "\" string=\"false\">");
                    ds4_dsml_escape_json_value(out, v, vl);
                }
                ds4_textbuf_puts(out, DS4_DSML_PARAM_CLOSE "\n");
            }
        } else {
            /* Not a JSON object: keep the raw text as one string parameter. */
            ds4_textbuf_puts(out, DS4_DSML_PARAM_OPEN " name=\"arguments\" string=\"true\">");
            ds4_dsml_escape_string_value(out, args, args_len);
            ds4_textbuf_puts(out, DS4_DSML_PARAM_CLOSE "\n");
        }
        ds4_textbuf_puts(out, DS4_DSML_INVOKE_CLOSE "\n");
    }
    ds4_textbuf_puts(out, DS4_DSML_BLOCK_CLOSE);
    int bad = tmp.oom;
    ds4_textbuf_free(&tmp);
    return out->oom || bad ? -1 : 0;
}
