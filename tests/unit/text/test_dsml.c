/* Tests for the DSML layer (INTERFACES.md §4, §11.3 "Tool schemas and DSML"
 * and the DSML streaming items): final parse, streaming projection at every
 * split point, failure handling, the decode-state recognizer, ids, canonical
 * rendering and the JSON helpers.
 *
 * Expected values are written from the spec text.  Tag spellings use the
 * macros below only to keep the lines readable. */
#include "test_util.h"

#include "text/dsml.h"
#include "text/dsml_json.h"

/* ----------------------------------------------------------- spellings */

#define BAR "｜"
#define TCO "<｜DSML｜tool_calls>"
#define TCC "</｜DSML｜tool_calls>"
#define INV(name) "<｜DSML｜invoke name=\"" name "\">"
#define INVC "</｜DSML｜invoke>"
#define PAR(name, str) "<｜DSML｜parameter name=\"" name "\" string=\"" str "\">"
#define PARC "</｜DSML｜parameter>"

/* The §3.11 (d) block: bash / command = pwd. */
#define PWD_BLOCK "\n\n" TCO "\n" INV("bash") "\n" PAR("command", "true") "pwd" PARC "\n" INVC "\n" TCC

/* ------------------------------------------------------------ helpers */

/* Deterministic "random" bytes for ids. */
static void test_rand(void *user, uint8_t *b, size_t n) {
    unsigned *c = user;
    for (size_t i = 0; i < n; i++) b[i] = (uint8_t)((*c)++ * 37u + 11u);
}

#define MAXC 8
typedef struct collector {
    ds4_textbuf reasoning, text, recovery;
    int n_calls;
    char names[MAXC][64];
    char ids[MAXC][64];
    ds4_textbuf args[MAXC];
    int ended[MAXC], valid[MAXC];
    int block_ends, errors, reasoning_ends;
    char order[512]; /* one letter per event, consecutive duplicates merged */
    int n_order;
    char frags[128][96]; /* argument fragments, as sent */
    int n_frags;
} collector;

static void col_init(collector *c) {
    memset(c, 0, sizeof(*c));
}

static void col_free(collector *c) {
    ds4_textbuf_free(&c->reasoning);
    ds4_textbuf_free(&c->text);
    ds4_textbuf_free(&c->recovery);
    for (int i = 0; i < MAXC; i++) ds4_textbuf_free(&c->args[i]);
}

static void col_mark(collector *c, char k) {
    if (c->n_order && c->order[c->n_order - 1] == k) return;
    if (c->n_order < (int)sizeof(c->order) - 1) c->order[c->n_order++] = k;
    c->order[c->n_order] = 0;
}

static void on_event(void *user, const ds4_dsml_event *ev) {
    collector *c = user;
    switch (ev->type) {
    case DS4_DSML_EV_REASONING:
        assert_true(ev->len > 0);
        ds4_textbuf_append(&c->reasoning, ev->text, ev->len);
        col_mark(c, 'r');
        break;
    case DS4_DSML_EV_REASONING_END:
        c->reasoning_ends++;
        col_mark(c, 'R');
        break;
    case DS4_DSML_EV_TEXT:
        assert_true(ev->len > 0);
        ds4_textbuf_append(ev->recovery ? &c->recovery : &c->text, ev->text, ev->len);
        col_mark(c, ev->recovery ? 'x' : 't');
        break;
    case DS4_DSML_EV_CALL_START:
        assert_int_equal(ev->index, c->n_calls);
        assert_true(c->n_calls < MAXC);
        snprintf(c->names[c->n_calls], 64, "%s", ev->name);
        snprintf(c->ids[c->n_calls], 64, "%s", ev->id ? ev->id : "");
        c->n_calls++;
        col_mark(c, 'S');
        break;
    case DS4_DSML_EV_CALL_ARGS:
        assert_int_equal(ev->index, c->n_calls - 1);
        assert_true(ev->len > 0);
        ds4_textbuf_append(&c->args[ev->index], ev->text, ev->len);
        if (c->n_frags < 128) snprintf(c->frags[c->n_frags++], 96, "%.*s", (int)ev->len, ev->text);
        col_mark(c, 'a');
        break;
    case DS4_DSML_EV_CALL_END:
        c->ended[ev->index] = 1;
        c->valid[ev->index] = ev->args_valid;
        col_mark(c, 'E');
        break;
    case DS4_DSML_EV_BLOCK_END:
        c->block_ends++;
        col_mark(c, 'B');
        break;
    case DS4_DSML_EV_ERROR:
        c->errors++;
        assert_non_null(ev->message);
        col_mark(c, '!');
        break;
    }
}

static ds4_dsml_opts opts_of(int thinking, int tools, unsigned *counter) {
    ds4_dsml_opts o;
    memset(&o, 0, sizeof(o));
    o.thinking = thinking;
    o.tools_active = tools;
    o.random = test_rand;
    o.random_user = counter;
    return o;
}

/* Feed text in pieces ending at cuts[0..n_cuts) (increasing), then finish. */
static void run_stream(const char *text, size_t len, const size_t *cuts, int n_cuts, int thinking, int tools,
                       collector *col, ds4_dsml_result *res) {
    unsigned counter = 0;
    ds4_dsml_opts o = opts_of(thinking, tools, &counter);
    ds4_dsml_stream *s = ds4_dsml_stream_new(&o, on_event, col);
    assert_non_null(s);
    size_t at = 0;
    for (int i = 0; i < n_cuts; i++) {
        assert_int_equal(ds4_dsml_stream_feed(s, text + at, cuts[i] - at), 0);
        at = cuts[i];
    }
    assert_int_equal(ds4_dsml_stream_feed(s, text + at, len - at), 0);
    assert_int_equal(ds4_dsml_stream_finish(s, res), 0);
    ds4_dsml_stream_free(s);
}

static void parse_text(const char *text, int thinking, int tools, ds4_dsml_result *r) {
    unsigned counter = 0;
    ds4_dsml_opts o = opts_of(thinking, tools, &counter);
    assert_int_equal(ds4_dsml_parse(text, strlen(text), &o, r), 0);
}

static void assert_bytes(const char *got, size_t got_len, const char *want) {
    if (got_len != strlen(want) || memcmp(got, want, got_len) != 0)
        fail_msg("got  [%.*s] (%zu bytes)\nwant [%s] (%zu bytes)", (int)got_len, got, got_len, want, strlen(want));
}

static void assert_buf(const ds4_textbuf *b, const char *want) { assert_bytes(b->p ? b->p : "", b->n, want); }

static void assert_same_result(const ds4_dsml_result *a, const ds4_dsml_result *b) {
    assert_int_equal(a->status, b->status);
    assert_bytes(a->reasoning, a->reasoning_len, b->reasoning);
    assert_bytes(a->content, a->content_len, b->content);
    assert_int_equal(a->raw_dsml_len, b->raw_dsml_len);
    if (a->raw_dsml_len) assert_memory_equal(a->raw_dsml, b->raw_dsml, a->raw_dsml_len);
    assert_int_equal(a->n_calls, b->n_calls);
    for (int i = 0; i < a->n_calls; i++) {
        assert_string_equal(a->calls[i].name, b->calls[i].name);
        assert_string_equal(a->calls[i].arguments, b->calls[i].arguments);
        assert_string_equal(a->calls[i].id, b->calls[i].id);
    }
}

static int has_fffd(const ds4_textbuf *b) {
    for (size_t i = 0; i + 2 < b->n; i++)
        if ((unsigned char)b->p[i] == 0xEF && (unsigned char)b->p[i + 1] == 0xBF && (unsigned char)b->p[i + 2] == 0xBD)
            return 1;
    return 0;
}

/* Check one streamed run against the final result it produced and against
 * the one-shot parse `ref`. */
static void check_run(const char *text, size_t len, const size_t *cuts, int n_cuts, int thinking, int tools,
                      const ds4_dsml_result *ref) {
    collector col;
    col_init(&col);
    ds4_dsml_result res;
    run_stream(text, len, cuts, n_cuts, thinking, tools, &col, &res);
    assert_same_result(&res, ref);

    /* Streamed reasoning and visible text are exactly the final ones. */
    assert_bytes(col.reasoning.p ? col.reasoning.p : "", col.reasoning.n, res.reasoning);
    ds4_textbuf all;
    ds4_textbuf_init(&all);
    ds4_textbuf_append(&all, col.text.p, col.text.n);
    ds4_textbuf_append(&all, col.recovery.p, col.recovery.n);
    assert_bytes(all.p ? all.p : "", all.n, res.content);
    ds4_textbuf_free(&all);
    assert_int_equal(col.reasoning_ends, res.reasoning_closed);

    /* Half characters are held back, never replaced (invalid bytes do become
     * U+FFFD, so only compare with a final result that has none). */
    int ref_fffd = res.status != DS4_DSML_OK;
    for (int i = 0; i < res.n_calls; i++)
        if (strstr(res.calls[i].arguments, "\xEF\xBF\xBD")) ref_fffd = 1;
    if (!ref_fffd) {
        for (int i = 0; i < col.n_calls; i++) assert_false(has_fffd(&col.args[i]));
    }

    if (res.status == DS4_DSML_OK) {
        /* Concatenated fragments == final arguments; streamed ids reused. */
        assert_int_equal(col.n_calls, res.n_calls);
        for (int i = 0; i < res.n_calls; i++) {
            assert_string_equal(col.names[i], res.calls[i].name);
            assert_string_equal(col.ids[i], res.calls[i].id);
            assert_true(col.ended[i]);
            if (res.calls[i].arguments_valid) assert_buf(&col.args[i], res.calls[i].arguments);
            else assert_false(col.valid[i]);
        }
        assert_int_equal(col.block_ends, res.n_calls > 0 ? 1 : 0);
        assert_int_equal(col.recovery.n, 0);
    }
    if (res.status == DS4_DSML_UNTERMINATED) assert_true(col.errors >= 1);
    col_free(&col);
    ds4_dsml_result_free(&res);
}

/* Streaming at every split point, one byte at a time and a few random
 * chunkings must all agree with the one-shot parse (§11.4 DSML round trip). */
static void check_all_splits(const char *text, int thinking, int tools) {
    size_t len = strlen(text);
    ds4_dsml_result ref;
    parse_text(text, thinking, tools, &ref);

    check_run(text, len, NULL, 0, thinking, tools, &ref);
    for (size_t k = 1; k < len; k++) check_run(text, len, &k, 1, thinking, tools, &ref);

    size_t *cuts = malloc(len * sizeof(*cuts));
    for (size_t k = 1; k < len; k++) cuts[k - 1] = k;
    check_run(text, len, cuts, (int)len - 1, thinking, tools, &ref);

    uint32_t seed = 12345;
    for (int trial = 0; trial < 20; trial++) {
        int n = 0;
        size_t at = 0;
        for (;;) {
            seed = seed * 1103515245u + 12345u;
            at += 1 + (seed >> 16) % 9;
            if (at >= len) break;
            cuts[n++] = at;
        }
        check_run(text, len, cuts, n, thinking, tools, &ref);
    }
    free(cuts);
    ds4_dsml_result_free(&ref);
}

/* =============================================================== parsing */

/* §3.11 (d): reasoning, then the canonical block with no visible content. */
static void test_parse_worked_example(void **state) {
    (void)state;
    const char *text = "I should run pwd</think>" PWD_BLOCK;
    ds4_dsml_result r;
    parse_text(text, 1, 1, &r);
    assert_int_equal(r.status, DS4_DSML_OK);
    assert_string_equal(r.reasoning, "I should run pwd");
    assert_true(r.reasoning_closed);
    assert_string_equal(r.content, "");
    assert_int_equal(r.n_calls, 1);
    assert_string_equal(r.calls[0].name, "bash");
    assert_string_equal(r.calls[0].arguments, "{\"command\":\"pwd\"}");
    assert_true(r.calls[0].arguments_valid);
    assert_string_equal(r.raw_dsml, PWD_BLOCK);
    /* §4.6: call_ + 32 lowercase hex from 16 random bytes. */
    assert_string_equal(r.calls[0].id, "call_0b30557a9fc4e90e33587da2c7ec1136");
    ds4_dsml_result_free(&r);
    check_all_splits(text, 1, 1);
}

/* §4.1: content, then a block with two invokes (parallel calls), string and
 * JSON parameters. */
static const char *const SHAPE_41 =
    "Let me check both.\n\n" TCO "\n" INV("read") "\n" PAR("path", "true") "src/a b.c" PARC "\n" PAR(
        "limit", "false") "20" PARC "\n" INVC "\n" INV("grep") "\n" PAR("pattern", "true") "foo(bar)" PARC "\n" PAR("opts", "false") "{\"i\":true,\"ctx\":[1,2]}" PARC "\n" INVC "\n" TCC;

static void test_parse_two_calls(void **state) {
    (void)state;
    ds4_dsml_result r;
    parse_text(SHAPE_41, 0, 1, &r);
    assert_int_equal(r.status, DS4_DSML_OK);
    assert_string_equal(r.reasoning, "");
    assert_string_equal(r.content, "Let me check both.");
    assert_int_equal(r.n_calls, 2);
    assert_string_equal(r.calls[0].name, "read");
    assert_string_equal(r.calls[0].arguments, "{\"path\":\"src/a b.c\",\"limit\":20}");
    assert_string_equal(r.calls[1].name, "grep");
    assert_string_equal(r.calls[1].arguments, "{\"pattern\":\"foo(bar)\",\"opts\":{\"i\":true,\"ctx\":[1,2]}}");
    /* two calls, two different ids */
    assert_string_not_equal(r.calls[0].id, r.calls[1].id);
    assert_int_equal(strlen(r.calls[1].id), 5 + 32);
    /* content + raw_dsml reproduces the sampled text exactly */
    char joined[2048];
    snprintf(joined, sizeof(joined), "%s%s", r.content, r.raw_dsml);
    assert_string_equal(joined, SHAPE_41);
    ds4_dsml_result_free(&r);
    check_all_splits(SHAPE_41, 0, 1);
}

/* §4.2 step 2: the short dialect (first bar dropped) and plain XML. */
static void test_parse_dialects(void **state) {
    (void)state;
    const char *shortd = "ok\n\n<DSML｜tool_calls>\n<DSML｜invoke name=\"bash\">\n<DSML｜parameter name=\"command\" "
                         "string=\"true\">ls -la</DSML｜parameter>\n</DSML｜invoke>\n</DSML｜tool_calls>";
    const char *plain = "ok\n<tool_calls>\n<invoke name=\"bash\">\n<parameter name=\"command\" string=\"true\">ls "
                        "-la</parameter>\n<parameter name=\"timeout\" string=\"false\">30</parameter>\n</invoke>\n"
                        "</tool_calls>";
    ds4_dsml_result r;
    parse_text(shortd, 0, 1, &r);
    assert_int_equal(r.status, DS4_DSML_OK);
    assert_string_equal(r.content, "ok");
    assert_int_equal(r.n_calls, 1);
    assert_string_equal(r.calls[0].arguments, "{\"command\":\"ls -la\"}");
    assert_int_equal(strncmp(r.raw_dsml, "\n\n<DSML｜tool_calls>", strlen("\n\n<DSML｜tool_calls>")), 0);
    ds4_dsml_result_free(&r);

    parse_text(plain, 0, 1, &r);
    assert_int_equal(r.status, DS4_DSML_OK);
    assert_string_equal(r.content, "ok");
    assert_string_equal(r.calls[0].arguments, "{\"command\":\"ls -la\",\"timeout\":30}");
    /* recommended §4.2 step 3: raw_dsml starts right after the trimmed
     * content, whatever whitespace was sampled (here one \n) */
    assert_int_equal(strncmp(r.raw_dsml, "\n<tool_calls>", 13), 0);
    ds4_dsml_result_free(&r);
    check_all_splits(shortd, 0, 1);
    check_all_splits(plain, 0, 1);
}

/* §4.2 step 4 / §11.3: untyped parameter followed by nested leaf parameters
 * recovers into a nested object, with entity decoding. */
static void test_parse_loose_nested(void **state) {
    (void)state;
    const char *with_close = "\n\n" TCO "\n" INV("edit") "\n" PAR("path", "true") "a.txt" PARC
                             "\n<｜DSML｜parameter name=\"change\">\n" PAR("old", "true") "old &lt;text&gt;" PARC
                             "\n" PAR("count", "false") "2" PARC "\n" PARC "\n" INVC "\n" TCC;
    const char *no_close = "\n\n" TCO "\n" INV("edit") "\n<｜DSML｜parameter name=\"change\">\n<｜DSML｜parameter "
                           "name=\"old\">old &lt;text&gt;" PARC "\n" PAR("new", "true") "new" PARC "\n" INVC "\n" TCC;
    ds4_dsml_result r;
    parse_text(with_close, 0, 1, &r);
    assert_int_equal(r.status, DS4_DSML_OK);
    assert_string_equal(r.calls[0].arguments, "{\"path\":\"a.txt\",\"change\":{\"old\":\"old <text>\",\"count\":2}}");
    ds4_dsml_result_free(&r);
    parse_text(no_close, 0, 1, &r);
    assert_int_equal(r.status, DS4_DSML_OK);
    assert_string_equal(r.calls[0].arguments, "{\"change\":{\"old\":\"old <text>\",\"new\":\"new\"}}");
    ds4_dsml_result_free(&r);
    check_all_splits(with_close, 0, 1);
    check_all_splits(no_close, 0, 1);

    /* An untyped parameter that is not followed by a tag is a string, leading
     * whitespace included. */
    const char *untyped = "\n\n" TCO "\n" INV("x") "\n<｜DSML｜parameter name=\"v\"> a &amp; b" PARC "\n" INVC "\n" TCC;
    parse_text(untyped, 0, 1, &r);
    assert_string_equal(r.calls[0].arguments, "{\"v\":\" a & b\"}");
    ds4_dsml_result_free(&r);
    check_all_splits(untyped, 0, 1);
}

/* §4.2 step 4: string="true" payloads are raw text with the five entities
 * decoded (any other '&' is literal); the JSON the client sees escapes
 * quotes, backslashes and control characters (§4.7). */
static void test_parse_string_payloads(void **state) {
    (void)state;
    const char *text = "\n\n" TCO "\n" INV("bash") "\n" PAR("command", "true")
                       "cd /tmp && git diff 2>/dev/null | grep \"x\" &amp;&amp; echo &lt;a&gt; &quot;q&quot; "
                       "&apos;s&apos; &nbsp; & &am\\n\tend\n2" PARC "\n" INVC "\n" TCC;
    ds4_dsml_result r;
    parse_text(text, 0, 1, &r);
    assert_int_equal(r.status, DS4_DSML_OK);
    assert_string_equal(r.calls[0].arguments,
                        "{\"command\":\"cd /tmp && git diff 2>/dev/null | grep \\\"x\\\" && echo <a> \\\"q\\\" 's' "
                        "&nbsp; & &am\\\\n\\tend\\n2\"}");
    ds4_dsml_result_free(&r);
    check_all_splits(text, 0, 1);

    /* A closing tag escaped as &lt; inside the value (the tools prompt's
     * rule) decodes back to the tag. */
    const char *esc = "\n\n" TCO "\n" INV("write") "\n" PAR("text", "true") "a &lt;/｜DSML｜parameter> b" PARC "\n" INVC
                      "\n" TCC;
    parse_text(esc, 0, 1, &r);
    assert_string_equal(r.calls[0].arguments, "{\"text\":\"a </｜DSML｜parameter> b\"}");
    ds4_dsml_result_free(&r);
    check_all_splits(esc, 0, 1);

    /* Other control bytes use \u00XX; '/' and non-ASCII stay literal. */
    const char *ctl = "\n\n" TCO "\n" INV("w") "\n" PAR("t", "true") "\x01\x1f/é\r" PARC "\n" INVC "\n" TCC;
    parse_text(ctl, 0, 1, &r);
    assert_string_equal(r.calls[0].arguments, "{\"t\":\"\\u0001\\u001f/é\\r\"}");
    ds4_dsml_result_free(&r);
}

/* §4.2 step 4: string="false" values are minified JSON (number spelling
 * kept); an empty value is null; an invalid value makes the arguments {}. */
static void test_parse_json_values(void **state) {
    (void)state;
    const char *text = "\n\n" TCO "\n" INV("f") "\n" PAR("a", "false") " [1, 2.50,\n 1e3] " PARC "\n" PAR(
        "b", "false") "{\"k\": \"v w\", \"n\": null}" PARC "\n" PAR("c", "false") "" PARC "\n" PAR("d", "false")
                       "  \n " PARC "\n" PAR("e", "false") "\"s \\u003c/x\"" PARC "\n" PAR("f", "other") "true" PARC
                       "\n" INVC "\n" TCC;
    ds4_dsml_result r;
    parse_text(text, 0, 1, &r);
    assert_int_equal(r.status, DS4_DSML_OK);
    assert_string_equal(r.calls[0].arguments,
                        "{\"a\":[1,2.50,1e3],\"b\":{\"k\":\"v w\",\"n\":null},\"c\":null,\"d\":null,\"e\":\"s "
                        "\\u003c/x\",\"f\":true}");
    ds4_dsml_result_free(&r);
    check_all_splits(text, 0, 1);

    const char *bad = "\n\n" TCO "\n" INV("f") "\n" PAR("a", "false") "[1, 2" PARC "\n" INVC "\n" INV("g") "\n" PAR(
        "b", "false") "yes" PARC "\n" INVC "\n" INV("h") "\n" PAR("c", "false") "1 2" PARC "\n" INVC "\n" TCC;
    parse_text(bad, 0, 1, &r);
    assert_int_equal(r.status, DS4_DSML_OK);
    assert_int_equal(r.n_calls, 3);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(r.calls[i].arguments, "{}");
        assert_false(r.calls[i].arguments_valid);
    }
    ds4_dsml_result_free(&r);
    check_all_splits(bad, 0, 1);
}

/* §4.2 step 1 / §11.3: DSML inside <think> is never executed; after </think>
 * it is. */
static void test_reasoning_not_executable(void **state) {
    (void)state;
    const char *inside = "Maybe call" PWD_BLOCK " later</think>No tools needed.";
    ds4_dsml_result r;
    parse_text(inside, 1, 1, &r);
    assert_int_equal(r.status, DS4_DSML_OK);
    assert_int_equal(r.n_calls, 0);
    assert_string_equal(r.reasoning, "Maybe call" PWD_BLOCK " later");
    assert_string_equal(r.content, "No tools needed.");
    ds4_dsml_result_free(&r);
    check_all_splits(inside, 1, 1);

    const char *both = "Plan:" PWD_BLOCK "</think>Running." PWD_BLOCK;
    parse_text(both, 1, 1, &r);
    assert_int_equal(r.n_calls, 1);
    assert_string_equal(r.content, "Running.");
    assert_string_equal(r.reasoning, "Plan:" PWD_BLOCK);
    ds4_dsml_result_free(&r);
    check_all_splits(both, 1, 1);

    /* Truncated before </think>: all reasoning, empty content (§4.2 step 6,
     * recommended), nothing executed. */
    const char *open = "<think>still thinking" PWD_BLOCK;
    parse_text(open, 1, 1, &r);
    assert_int_equal(r.status, DS4_DSML_OK);
    assert_false(r.reasoning_closed);
    assert_string_equal(r.reasoning, "still thinking" PWD_BLOCK); /* repeated <think> skipped */
    assert_string_equal(r.content, "");
    assert_int_equal(r.n_calls, 0);
    ds4_dsml_result_free(&r);
    check_all_splits(open, 1, 1);
}

/* §4.3 / §11.3: a malformed invoke gives no calls and the raw text as
 * content; the stream flushes what it held back as recovery text. */
static void test_malformed(void **state) {
    (void)state;
    /* first invoke has no name: nothing was announced yet */
    const char *noname = "Calling.\n\n" TCO "\n<｜DSML｜invoke>\n" PAR("command", "true") "pwd" PARC "\n" INVC "\n" TCC;
    ds4_dsml_result r;
    parse_text(noname, 0, 1, &r);
    assert_int_equal(r.status, DS4_DSML_MALFORMED);
    assert_int_equal(r.n_calls, 0);
    assert_string_equal(r.content, noname);
    assert_null(r.raw_dsml);
    assert_non_null(strstr(r.error, "invalid tool call"));
    ds4_dsml_result_free(&r);
    check_all_splits(noname, 0, 1);

    /* stray text after a complete first call: the call was announced live */
    const char *stray = "reasoning</think>Calling." PWD_BLOCK;
    char text[1024];
    snprintf(text, sizeof(text), "%.*s%s", (int)(strlen(stray) - strlen(TCC)), stray, "oops\n" TCC);
    parse_text(text, 1, 1, &r);
    assert_int_equal(r.status, DS4_DSML_MALFORMED);
    assert_int_equal(r.n_calls, 0);
    assert_string_equal(r.reasoning, "reasoning");
    assert_string_equal(r.content, text + strlen("reasoning</think>"));
    ds4_dsml_result_free(&r);
    check_all_splits(text, 1, 1);

    collector col;
    col_init(&col);
    run_stream(text, strlen(text), NULL, 0, 1, 1, &col, &r);
    assert_string_equal(col.order, "rRtSaE!Bx"); /* call streamed, error, block end, recovery */
    assert_buf(&col.text, "Calling.");
    assert_int_equal(col.block_ends, 1); /* decoding can still stop at the closing tag */
    col_free(&col);
    ds4_dsml_result_free(&r);

    /* missing parameter name after commit */
    const char *pname = "\n\n" TCO "\n" INV("a") "\n<｜DSML｜parameter string=\"true\">x" PARC "\n" INVC "\n" TCC;
    parse_text(pname, 0, 1, &r);
    assert_int_equal(r.status, DS4_DSML_MALFORMED);
    assert_string_equal(r.content, pname);
    ds4_dsml_result_free(&r);
    check_all_splits(pname, 0, 1);

    /* an empty block is not a tool call */
    const char *empty = "x\n\n" TCO "\n" TCC;
    parse_text(empty, 0, 1, &r);
    assert_int_equal(r.status, DS4_DSML_MALFORMED);
    assert_int_equal(r.n_calls, 0);
    assert_string_equal(r.content, empty);
    ds4_dsml_result_free(&r);
    check_all_splits(empty, 0, 1);
}

/* §4.3: the text ends inside a block (EOS, stop or length): unterminated. */
static void test_unterminated(void **state) {
    (void)state;
    const char *cut = "Sure.\n\n" TCO "\n" INV("bash") "\n" PAR("command", "true") "echo partial";
    ds4_dsml_result r;
    parse_text(cut, 0, 1, &r);
    assert_int_equal(r.status, DS4_DSML_UNTERMINATED);
    assert_int_equal(r.n_calls, 0);
    assert_string_equal(r.content, "Sure.");
    assert_string_equal(r.raw_dsml, cut + 5);
    assert_non_null(strstr(r.error, "unterminated"));
    ds4_dsml_result_free(&r);
    check_all_splits(cut, 0, 1);

    /* just the start tag */
    parse_text("A\n\n" TCO "\n", 0, 1, &r);
    assert_int_equal(r.status, DS4_DSML_UNTERMINATED);
    assert_string_equal(r.content, "A");
    ds4_dsml_result_free(&r);
}

/* §11.3: separator whitespace before the block is not content; §4.2 step 3
 * (recommended): raw_dsml carries it, so content + raw_dsml is exact. */
static void test_separator_whitespace(void **state) {
    (void)state;
    const char *text = "Done.\n\n\n\n" TCO "\n" INV("bash") "\n" PAR("command", "true") "ls" PARC "\n" INVC "\n" TCC;
    ds4_dsml_result r;
    parse_text(text, 0, 1, &r);
    assert_string_equal(r.content, "Done.");
    assert_int_equal(strncmp(r.raw_dsml, "\n\n\n\n" TCO, 4 + strlen(TCO)), 0);
    ds4_dsml_result_free(&r);
    check_all_splits(text, 0, 1);

    /* whitespace inside content is shown once a word follows it */
    collector col;
    col_init(&col);
    const char *words = "a \n b  ";
    size_t cuts[] = {2, 3, 4, 6};
    run_stream(words, strlen(words), cuts, 4, 0, 1, &col, &r);
    assert_buf(&col.text, "a \n b  ");
    assert_string_equal(r.content, "a \n b  "); /* no block: trailing whitespace kept */
    col_free(&col);
    ds4_dsml_result_free(&r);
}

/* §4.3: orphan closing tags are ignored (kept as text, counted). */
static void test_orphan_close(void **state) {
    (void)state;
    const char *text = "The tag " TCC " closes a block.";
    ds4_dsml_result r;
    parse_text(text, 0, 1, &r);
    assert_int_equal(r.status, DS4_DSML_OK);
    assert_int_equal(r.n_calls, 0);
    assert_string_equal(r.content, text);
    assert_int_equal(r.orphan_closes, 1);
    ds4_dsml_result_free(&r);
    check_all_splits(text, 0, 1);
}

/* Prose that mentions a start tag is not a block: it stays text and the real
 * block after it is found. */
static void test_false_start(void **state) {
    (void)state;
    const char *text = "Wrap calls in <tool_calls> tags, like this:" PWD_BLOCK;
    ds4_dsml_result r;
    parse_text(text, 0, 1, &r);
    assert_int_equal(r.status, DS4_DSML_OK);
    assert_int_equal(r.n_calls, 1);
    assert_string_equal(r.content, "Wrap calls in <tool_calls> tags, like this:");
    assert_string_equal(r.raw_dsml, PWD_BLOCK);
    ds4_dsml_result_free(&r);
    check_all_splits(text, 0, 1);

    const char *prose = "Use " TCO " then stop.";
    parse_text(prose, 0, 1, &r);
    assert_int_equal(r.status, DS4_DSML_OK);
    assert_string_equal(r.content, prose);
    ds4_dsml_result_free(&r);
    check_all_splits(prose, 0, 1);
}

/* §4.3 recommendation: without active tools nothing is parsed. */
static void test_tools_inactive(void **state) {
    (void)state;
    const char *text = "think</think>Here:" PWD_BLOCK;
    ds4_dsml_result r;
    parse_text(text, 1, 0, &r);
    assert_int_equal(r.status, DS4_DSML_OK);
    assert_int_equal(r.n_calls, 0);
    assert_string_equal(r.content, "Here:" PWD_BLOCK);
    assert_null(r.raw_dsml);
    ds4_dsml_result_free(&r);
    check_all_splits(text, 1, 0);
    assert_int_equal(ds4_dsml_decode_state_of(text, strlen(text) - 3, &(ds4_dsml_opts){.thinking = 1}),
                     DS4_DSML_OUTSIDE);
}

/* Non-thinking mode: the text is content from the first byte. */
static void test_non_thinking(void **state) {
    (void)state;
    ds4_dsml_result r;
    parse_text("plain answer", 0, 1, &r);
    assert_string_equal(r.reasoning, "");
    assert_string_equal(r.content, "plain answer");
    assert_false(r.reasoning_closed);
    ds4_dsml_result_free(&r);
}

/* ============================================================= streaming */

/* A turn that generated nothing (max_tokens 0, EOS first): finishing a
 * stream that was never fed gives an empty, successful result. */
static void test_stream_empty(void **state) {
    (void)state;
    for (int thinking = 0; thinking <= 1; thinking++) {
        collector col;
        col_init(&col);
        ds4_dsml_result r;
        run_stream("", 0, NULL, 0, thinking, 1, &col, &r);
        assert_int_equal(r.status, DS4_DSML_OK);
        assert_int_equal(r.n_calls, 0);
        assert_non_null(r.reasoning);
        assert_non_null(r.content);
        assert_int_equal(r.reasoning_len + r.content_len, 0);
        ds4_dsml_result_free(&r);
        col_free(&col);
    }
}

/* §6.4.3 / §11.3: event order reasoning < content < tool calls; no <think>
 * or </think> or DSML bytes in text; partial arguments streamed. */
static void test_stream_order_and_partial_args(void **state) {
    (void)state;
    const char *pieces[] = {"<think>", "We need ", "to list", "</thi", "nk>", "Let me run it.", "\n\n",
                            "<｜DSML｜tool", "_calls>\n<｜DSML｜invoke name=\"ba", "sh\">\n", PAR("command", "true"),
                            "echo partial", " done", "</｜DSML｜para", "meter>\n" INVC "\n" TCC};
    unsigned counter = 0;
    ds4_dsml_opts o = opts_of(1, 1, &counter);
    collector col;
    col_init(&col);
    ds4_dsml_stream *s = ds4_dsml_stream_new(&o, on_event, &col);
    int frags_at[16];
    for (int i = 0; i < 15; i++) {
        ds4_dsml_stream_feed(s, pieces[i], strlen(pieces[i]));
        frags_at[i] = col.n_frags;
        if (i == 8) assert_int_equal(col.n_calls, 0); /* waits for the complete invoke tag */
        if (i == 9) assert_int_equal(col.n_calls, 1);
    }
    ds4_dsml_result r;
    ds4_dsml_stream_finish(s, &r);
    assert_string_equal(col.order, "rRtSaEB");
    assert_buf(&col.reasoning, "We need to list");
    assert_buf(&col.text, "Let me run it.");
    assert_int_equal(col.block_ends, 1);
    assert_string_equal(col.names[0], "bash");
    assert_int_equal(strncmp(col.ids[0], "call_", 5), 0);
    assert_buf(&col.args[0], "{\"command\":\"echo partial done\"}");
    /* "echo partial" went out before " done" was generated */
    assert_string_equal(col.frags[frags_at[11] - 1], "echo partial");
    assert_string_equal(col.frags[frags_at[12] - 1], " done");
    assert_string_equal(r.calls[0].id, col.ids[0]);
    ds4_dsml_result_free(&r);
    ds4_dsml_stream_free(s);
    col_free(&col);
}

/* §11.3: raw JSON arguments are streamed before the value is complete. */
static void test_stream_raw_json(void **state) {
    (void)state;
    unsigned counter = 0;
    ds4_dsml_opts o = opts_of(0, 1, &counter);
    collector col;
    col_init(&col);
    ds4_dsml_stream *s = ds4_dsml_stream_new(&o, on_event, &col);
    const char *head = "\n\n" TCO "\n" INV("sum") "\n" PAR("xs", "false") "[1, 2, 3";
    ds4_dsml_stream_feed(s, head, strlen(head));
    assert_buf(&col.args[0], "{\"xs\":[1,2,3");
    const char *tail = "]" PARC "\n" INVC "\n" TCC;
    ds4_dsml_stream_feed(s, tail, strlen(tail));
    assert_buf(&col.args[0], "{\"xs\":[1,2,3]}");
    ds4_dsml_result r;
    ds4_dsml_stream_finish(s, &r);
    assert_string_equal(r.calls[0].arguments, "{\"xs\":[1,2,3]}");
    ds4_dsml_result_free(&r);
    ds4_dsml_stream_free(s);
    col_free(&col);
}

/* §11.3: partial entities are held (`echo ` then `& done`, never `&amp`),
 * partial UTF-8 is held (never U+FFFD), in arguments and in text. */
static void test_stream_holdbacks(void **state) {
    (void)state;
    unsigned counter = 0;
    ds4_dsml_opts o = opts_of(1, 1, &counter);
    collector col;
    col_init(&col);
    ds4_dsml_stream *s = ds4_dsml_stream_new(&o, on_event, &col);
    const char *p1 = "r\xC3";                       /* half of é in reasoning */
    const char *p2 = "\xA9</think>caf\xE2\x82";     /* half of € in text */
    const char *p3 = "\xAC\n\n" TCO "\n" INV("bash") "\n" PAR("command", "true") "echo &am";
    const char *p4 = "p; done \xF0\x9F";            /* half of an emoji */
    const char *p5 = "\x98\x80" PARC "\n" INVC "\n" TCC;
    ds4_dsml_stream_feed(s, p1, strlen(p1));
    assert_buf(&col.reasoning, "r");
    ds4_dsml_stream_feed(s, p2, strlen(p2));
    assert_buf(&col.reasoning, "ré");
    assert_buf(&col.text, "caf");
    ds4_dsml_stream_feed(s, p3, strlen(p3));
    assert_buf(&col.text, "caf€");
    assert_buf(&col.args[0], "{\"command\":\"echo ");
    ds4_dsml_stream_feed(s, p4, strlen(p4));
    assert_buf(&col.args[0], "{\"command\":\"echo & done ");
    ds4_dsml_stream_feed(s, p5, strlen(p5));
    assert_buf(&col.args[0], "{\"command\":\"echo & done 😀\"}");
    for (int i = 0; i < col.n_frags; i++) {
        assert_null(strstr(col.frags[i], "&am"));
        assert_null(strstr(col.frags[i], "\xEF\xBF\xBD"));
    }
    ds4_dsml_result r;
    ds4_dsml_stream_finish(s, &r);
    assert_string_equal(r.calls[0].arguments, "{\"command\":\"echo & done 😀\"}");
    ds4_dsml_result_free(&r);
    ds4_dsml_stream_free(s);
    col_free(&col);
}

/* §11.3: a reasoning stream split across chunks without tools, no </think>
 * leak; the last bytes are held only while they could start </think>. */
static void test_stream_reasoning_split(void **state) {
    (void)state;
    unsigned counter = 0;
    ds4_dsml_opts o = opts_of(1, 0, &counter);
    collector col;
    col_init(&col);
    ds4_dsml_stream *s = ds4_dsml_stream_new(&o, on_event, &col);
    ds4_dsml_stream_feed(s, "We need to generate ", 20);
    assert_buf(&col.reasoning, "We need to generate ");
    ds4_dsml_stream_feed(s, "a title</", 9);
    assert_buf(&col.reasoning, "We need to generate a title");
    ds4_dsml_stream_feed(s, "think>Cats", 10);
    ds4_dsml_result r;
    ds4_dsml_stream_finish(s, &r);
    assert_buf(&col.reasoning, "We need to generate a title");
    assert_buf(&col.text, "Cats");
    assert_string_equal(r.content, "Cats");
    ds4_dsml_result_free(&r);
    ds4_dsml_stream_free(s);
    col_free(&col);
}

/* Ids: the prefix is configurable (toolu_ for Anthropic) and collisions with
 * the turn or the tool memory are regenerated (§4.6). */
static int taken_first(void *user, const char *id) {
    int *calls = user;
    (*calls)++;
    return *calls == 1; /* the first candidate is "in memory" */
}

static void const_rand(void *user, uint8_t *b, size_t n) { memset(b, 0, n); }

static void test_ids(void **state) {
    (void)state;
    char id[64];
    unsigned counter = 0;
    assert_int_equal(ds4_dsml_make_id(id, sizeof(id), "toolu_", test_rand, &counter), 0);
    assert_string_equal(id, "toolu_0b30557a9fc4e90e33587da2c7ec1136");
    assert_int_equal(ds4_dsml_make_id(id, 20, "call_", test_rand, &counter), -1);

    int taken_calls = 0;
    counter = 0;
    ds4_dsml_opts o = opts_of(0, 1, &counter);
    o.id_prefix = "toolu_";
    o.id_taken = taken_first;
    o.id_taken_user = &taken_calls;
    ds4_dsml_result r;
    const char *text = PWD_BLOCK;
    assert_int_equal(ds4_dsml_parse(text, strlen(text), &o, &r), 0);
    assert_int_equal(taken_calls, 2);
    assert_int_equal(strncmp(r.calls[0].id, "toolu_", 6), 0);
    assert_string_not_equal(r.calls[0].id, "toolu_0b30557a9fc4e90e33587da2c7ec1136");
    ds4_dsml_result_free(&r);

    /* a constant random source: the second call's id collides with the
     * first forever; the parser gives up retrying and still terminates */
    ds4_dsml_opts k = opts_of(0, 1, &counter);
    k.random = const_rand;
    assert_int_equal(ds4_dsml_parse(SHAPE_41, strlen(SHAPE_41), &k, &r), 0);
    assert_int_equal(r.n_calls, 2);
    assert_string_equal(r.calls[0].id, "call_00000000000000000000000000000000");
    ds4_dsml_result_free(&r);

    /* no random source: no ids */
    k.random = NULL;
    assert_int_equal(ds4_dsml_parse(SHAPE_41, strlen(SHAPE_41), &k, &r), 0);
    assert_null(r.calls[0].id);
    ds4_dsml_result_free(&r);
}

/* ======================================================== decode state */

static ds4_dsml_decode_state st_of(const char *text, int thinking) {
    ds4_dsml_opts o = {0};
    o.thinking = thinking;
    o.tools_active = 1;
    return ds4_dsml_decode_state_of(text, strlen(text), &o);
}

/* §4.5 / §11.3 decode-state recognizer. */
static void test_decode_state(void **state) {
    (void)state;
    const char *pre = "Sure.\n\n" TCO "\n";
    char t[1024];
#define ST(suffix) (snprintf(t, sizeof(t), "%s%s", pre, suffix), st_of(t, 0))
    assert_int_equal(st_of("Sure, running", 0), DS4_DSML_OUTSIDE);
    assert_int_equal(st_of("Sure.\n\n<｜DSML｜tool_ca", 0), DS4_DSML_OUTSIDE);
    assert_int_equal(ST(""), DS4_DSML_STRUCTURAL);
    assert_int_equal(ST("<｜DSML｜invoke name=\"ba"), DS4_DSML_STRUCTURAL);
    assert_int_equal(ST(INV("bash")), DS4_DSML_STRUCTURAL); /* after the invoke tag */
    assert_int_equal(ST(INV("bash") "\n<｜DSML｜parameter name=\"command\" str"), DS4_DSML_STRUCTURAL);
    assert_int_equal(ST(INV("bash") "\n" PAR("command", "true")), DS4_DSML_STRING_BODY);
    assert_int_equal(ST(INV("bash") "\n" PAR("command", "true") "ls -la"), DS4_DSML_STRING_BODY);
    assert_int_equal(ST(INV("bash") "\n" PAR("command", "true") "a <"), DS4_DSML_STRING_BODY); /* 1 byte */
    assert_int_equal(ST(INV("bash") "\n" PAR("command", "true") "pwd</"), DS4_DSML_STRUCTURAL); /* partial </ */
    assert_int_equal(ST(INV("bash") "\n" PAR("command", "true") "pwd</｜DSML｜par"), DS4_DSML_STRUCTURAL);
    assert_int_equal(ST(INV("bash") "\n" PAR("command", "true") "a </b"), DS4_DSML_STRING_BODY);
    assert_int_equal(ST(INV("bash") "\n" PAR("command", "true") "pwd" PARC), DS4_DSML_STRUCTURAL);
    assert_int_equal(ST(INV("f") "\n" PAR("xs", "false")), DS4_DSML_JSON_STRUCTURAL);
    assert_int_equal(ST(INV("f") "\n" PAR("xs", "false") "[{"), DS4_DSML_JSON_STRUCTURAL);
    assert_int_equal(ST(INV("f") "\n" PAR("xs", "false") "[{\"na"), DS4_DSML_JSON_STRING);
    assert_int_equal(ST(INV("f") "\n" PAR("xs", "false") "[{\"a\": \"x\\\""), DS4_DSML_JSON_STRING);
    assert_int_equal(ST(INV("f") "\n" PAR("xs", "false") "[{\"a\": \"x\\\\\""), DS4_DSML_JSON_STRUCTURAL);
    assert_int_equal(ST(INV("f") "\n" PAR("xs", "false") "[1]</"), DS4_DSML_STRUCTURAL);
    assert_int_equal(ST(INV("f") "\n" PAR("xs", "false") "[1]" PARC "\n" INVC "\n"), DS4_DSML_STRUCTURAL);
    assert_int_equal(ST(INV("f") "\n" PAR("xs", "false") "[1]" PARC "\n" INVC "\n" TCC), DS4_DSML_OUTSIDE);
#undef ST
    /* Inside reasoning the recognizer is not armed (§4.5 recommendation). */
    assert_int_equal(st_of("thinking about " TCO "\n" INV("bash") "\n", 1), DS4_DSML_OUTSIDE);
    assert_int_equal(st_of("thinking</think>" TCO "\n" INV("bash") "\n", 1), DS4_DSML_STRUCTURAL);
    assert_string_equal(ds4_dsml_decode_state_name(DS4_DSML_JSON_STRING), "JSON_STRING");
}

/* ===================================================== canonical render */

static void render_one(const char *name, const char *args, ds4_textbuf *out) {
    ds4_dsml_call c = {0};
    c.name = (char *)name;
    c.arguments = (char *)args;
    c.arguments_len = strlen(args);
    assert_int_equal(ds4_dsml_render_calls(out, &c, 1), 0);
}

/* §4.8 + §3.9 + §3.13: canonical DSML from client JSON. */
static void test_render_canonical(void **state) {
    (void)state;
    ds4_textbuf b;
    ds4_textbuf_init(&b);
    render_one("bash", "{\"command\":\"pwd\"}", &b);
    assert_buf(&b, PWD_BLOCK);

    ds4_textbuf_clear(&b);
    /* key order preserved, number spellings kept, whitespace removed, nested
     * values minified, `2>&1 &&` literal, no </tool_result> escaping */
    render_one("run", "{ \"z\" : \"ls 2>&1 && echo </tool_result>\", \"a\": 1.50, \"n\": [ 1e3, {\"k\" : null} ], "
                      "\"b\": true }",
               &b);
    assert_buf(&b, "\n\n" TCO "\n" INV("run") "\n" PAR("z", "true") "ls 2>&1 && echo </tool_result>" PARC "\n" PAR(
                       "a", "false") "1.50" PARC "\n" PAR("n", "false") "[1e3,{\"k\":null}]" PARC "\n" PAR("b", "false")
                       "true" PARC "\n" INVC "\n" TCC);

    ds4_textbuf_clear(&b);
    /* closing-tag rules: &lt; in string values, \u003c in JSON values;
     * attribute escaping of names and keys; JSON string escapes decoded */
    render_one("a&b<\"c\">", "{\"k&\\\"\":\"x </｜DSML｜parameter> y\\n\\u00e9\\ud83d\\ude00\",\"j\":[\"</｜DSML｜parameter>\"]}",
               &b);
    assert_buf(&b, "\n\n" TCO "\n" INV("a&amp;b&lt;&quot;c&quot;&gt;") "\n" PAR("k&amp;&quot;", "true")
                   "x &lt;/｜DSML｜parameter> y\né😀" PARC "\n" PAR("j", "false") "[\"\\u003c/｜DSML｜parameter>\"]" PARC
                   "\n" INVC "\n" TCC);

    ds4_textbuf_clear(&b);
    /* not an object: one `arguments` string parameter with the raw text */
    render_one("f", "[1, 2]", &b);
    assert_buf(&b, "\n\n" TCO "\n" INV("f") "\n" PAR("arguments", "true") "[1, 2]" PARC "\n" INVC "\n" TCC);
    ds4_textbuf_clear(&b);
    render_one("f", "{\"a\":", &b);
    assert_buf(&b, "\n\n" TCO "\n" INV("f") "\n" PAR("arguments", "true") "{\"a\":" PARC "\n" INVC "\n" TCC);
    ds4_textbuf_clear(&b);
    render_one("f", "{}", &b);
    assert_buf(&b, "\n\n" TCO "\n" INV("f") "\n" INVC "\n" TCC);

    /* several calls share one block; n == 0 renders nothing */
    ds4_textbuf_clear(&b);
    ds4_dsml_call two[2] = {{NULL, "a", "{\"x\":1}", 7, 1}, {NULL, "b", "{\"y\":\"z\"}", 9, 1}};
    ds4_dsml_render_calls(&b, two, 2);
    assert_buf(&b, "\n\n" TCO "\n" INV("a") "\n" PAR("x", "false") "1" PARC "\n" INVC "\n" INV("b") "\n" PAR(
                       "y", "true") "z" PARC "\n" INVC "\n" TCC);
    ds4_textbuf_clear(&b);
    ds4_dsml_render_calls(&b, two, 0);
    assert_int_equal(b.n, 0);
    ds4_textbuf_free(&b);
}

/* §4.8 property: for canonical generations, parse -> canonical render gives
 * back the sampled bytes. */
static void test_round_trip(void **state) {
    (void)state;
    const char *blocks[] = {
        PWD_BLOCK,
        "\n\n" TCO "\n" INV("edit") "\n" PAR("path", "true") "src/main.c" PARC "\n" PAR("old", "true")
        "if (a < b && c > d) { return \"x\"; }\n\ttab" PARC "\n" PAR("count", "false") "3" PARC "\n" PAR(
            "opts", "false") "{\"dry\":false,\"list\":[1.50,-2e-3,\"s\"]}" PARC "\n" INVC "\n" INV("bash") "\n" PAR(
            "command", "true") "cd /tmp && git diff 2>/dev/null" PARC "\n" INVC "\n" TCC,
        "\n\n" TCO "\n" INV("w") "\n" PAR("text", "true") "x &lt;/｜DSML｜parameter> y" PARC "\n" PAR("j", "false")
        "[\"\\u003c/｜DSML｜parameter>\"]" PARC "\n" INVC "\n" TCC,
        "\n\n" TCO "\n" INV("a&amp;b") "\n" PAR("k&quot;", "true") "日本語 😀" PARC "\n" INVC "\n" TCC,
        "\n\n" TCO "\n" INV("noargs") "\n" INVC "\n" TCC,
    };
    for (size_t i = 0; i < sizeof(blocks) / sizeof(blocks[0]); i++) {
        char text[2048];
        snprintf(text, sizeof(text), "reasoning</think>content%s", blocks[i]);
        ds4_dsml_result r;
        parse_text(text, 1, 1, &r);
        assert_int_equal(r.status, DS4_DSML_OK);
        assert_string_equal(r.content, "content");
        assert_string_equal(r.raw_dsml, blocks[i]);
        ds4_textbuf b;
        ds4_textbuf_init(&b);
        assert_int_equal(ds4_dsml_render_calls(&b, r.calls, r.n_calls), 0);
        assert_buf(&b, blocks[i]);
        ds4_textbuf_free(&b);
        ds4_dsml_result_free(&r);
        check_all_splits(text, 1, 1);
    }
}

/* Escaping helpers of §3.9. */
static void test_escape_helpers(void **state) {
    (void)state;
    ds4_textbuf b;
    ds4_textbuf_init(&b);
    ds4_dsml_escape_attr(&b, "a&<>\"'b", 7);
    assert_buf(&b, "a&amp;&lt;&gt;&quot;'b");
    ds4_textbuf_clear(&b);
    const char *v = "a </｜DSML｜parameter></｜DSML｜parameter> &lt; </parameter>";
    ds4_dsml_escape_string_value(&b, v, strlen(v));
    assert_buf(&b, "a &lt;/｜DSML｜parameter>&lt;/｜DSML｜parameter> &lt; </parameter>");
    ds4_textbuf_clear(&b);
    const char *j = "{ \"a\" : \"</｜DSML｜parameter>\" }";
    assert_int_equal(ds4_dsml_escape_json_value(&b, j, strlen(j)), 0);
    assert_buf(&b, "{\"a\":\"\\u003c/｜DSML｜parameter>\"}");
    ds4_textbuf_clear(&b);
    assert_int_equal(ds4_dsml_escape_json_value(&b, "{", 1), -1);
    ds4_textbuf_free(&b);
}

/* ================================================================ JSON */

static void test_json_validator(void **state) {
    (void)state;
    const char *good[] = {"0", "-0", "1.50", "1e3", "-2E+10", "3.0e-2", "\"\"", "\"a\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00aF\"",
                          "true", "false", "null", " [ ] ", "{}", "{\"a\":[1,{\"b\":null}],\"c\":\"d\"}", "[[[[1]]]]",
                          "\"é😀\""};
    const char *bad[] = {"", "  ", "01", "1.", ".5", "-", "1e", "1e+", "+1", "tru", "nul", "True", "[1,]", "{\"a\"}",
                         "{\"a\":}", "{a:1}", "[1 2]", "\"\\x\"", "\"\\u12g4\"", "\"abc", "1 2", "[}", "{]", "{\"a\":1,}",
                         "NaN", "'a'"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        if (!ds4_json_valid(good[i], strlen(good[i]))) fail_msg("should be valid: %s", good[i]);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (ds4_json_valid(bad[i], strlen(bad[i]))) fail_msg("should be invalid: %s", bad[i]);

    /* nesting limit 256 */
    char deep[600];
    memset(deep, '[', 256);
    memset(deep + 256, ']', 256);
    assert_true(ds4_json_valid(deep, 512));
    memset(deep, '[', 257);
    memset(deep + 257, ']', 257);
    assert_false(ds4_json_valid(deep, 514));

    /* minify keeps spelling and escapes; repairs raw control bytes */
    ds4_textbuf b;
    ds4_textbuf_init(&b);
    const char *m = " { \"a b\" : [ 1.50 , \"x \\u0041\" ] , \"c\" :\n true } ";
    assert_int_equal(ds4_json_minify(&b, m, strlen(m)), 0);
    assert_buf(&b, "{\"a b\":[1.50,\"x \\u0041\"],\"c\":true}");
    ds4_json_stream js;
    ds4_json_stream_init(&js);
    ds4_textbuf_clear(&b);
    const char *raw = "\"a\nb\"";
    for (size_t i = 0; i < strlen(raw); i++) ds4_json_stream_byte(&js, (unsigned char)raw[i], &b);
    assert_true(ds4_json_stream_complete(&js));
    assert_buf(&b, "\"a\\nb\"");

    /* string decoding */
    ds4_textbuf_clear(&b);
    const char *s = "a\\\"b\\\\c\\/d\\n\\u00e9\\ud83d\\ude00\\ud800x";
    assert_int_equal(ds4_json_string_decode(&b, s, strlen(s)), 0);
    assert_buf(&b, "a\"b\\c/d\né😀\xEF\xBF\xBDx");
    ds4_textbuf_clear(&b);
    assert_int_equal(ds4_json_string_decode(&b, "\\u0000", 6), 0);
    assert_int_equal(b.n, 1);
    assert_int_equal(b.p[0], 0);

    /* §4.7 escaping */
    ds4_textbuf_clear(&b);
    const char e[] = "q\"b\\n\n\r\t\x01\x7f/é\xff";
    ds4_json_escape(&b, e, sizeof(e) - 1);
    assert_buf(&b, "q\\\"b\\\\n\\n\\r\\t\\u0001\x7f/é\xEF\xBF\xBD");
    ds4_textbuf_free(&b);

    /* object walker */
    ds4_json_object_iter it;
    const char *o = " {\"a\" : 1.0 , \"b\":{\"c\":[1,\"}\"]},\"a\":\"x,y\"} ";
    assert_int_equal(ds4_json_object_begin(&it, o, strlen(o)), 0);
    const char *k, *v;
    size_t kl, vl;
    assert_int_equal(ds4_json_object_next(&it, &k, &kl, &v, &vl), 1);
    assert_bytes(k, kl, "a");
    assert_bytes(v, vl, "1.0");
    assert_int_equal(ds4_json_object_next(&it, &k, &kl, &v, &vl), 1);
    assert_bytes(v, vl, "{\"c\":[1,\"}\"]}");
    assert_int_equal(ds4_json_object_next(&it, &k, &kl, &v, &vl), 1);
    assert_bytes(k, kl, "a");
    assert_bytes(v, vl, "\"x,y\"");
    assert_int_equal(ds4_json_object_next(&it, &k, &kl, &v, &vl), 0);
    assert_int_equal(ds4_json_object_begin(&it, "[1]", 3), -1);
    assert_int_equal(ds4_json_object_begin(&it, "{\"a\":1} x", 9), -1);
}

static void test_utf8_helpers(void **state) {
    (void)state;
    assert_int_equal(ds4_json_utf8_seq("a", 1), 1);
    assert_int_equal(ds4_json_utf8_seq("\xC3\xA9", 2), 2);
    assert_int_equal(ds4_json_utf8_seq("\xC3", 1), 0);
    assert_int_equal(ds4_json_utf8_seq("\xE2\x82", 2), 0);
    assert_int_equal(ds4_json_utf8_seq("\xF0\x9F\x98\x80", 4), 4);
    assert_true(ds4_json_utf8_seq("\xC0\x80", 2) < 0); /* overlong */
    assert_true(ds4_json_utf8_seq("\xED\xA0\x80", 3) < 0); /* surrogate */
    assert_true(ds4_json_utf8_seq("\x80", 1) < 0);
    assert_int_equal(ds4_json_utf8_hold("ab\xE2\x82", 4), 2);
    assert_int_equal(ds4_json_utf8_hold("ab\xE2\x82\xAC", 5), 0);
    assert_int_equal(ds4_json_utf8_hold("ab\x80", 3), 0);
    assert_int_equal(ds4_json_utf8_hold("\xF0\x9F\x98", 3), 3);
}

/* ================================================================ fuzz */

static uint32_t rnd_next(uint32_t *seed, uint32_t n) {
    *seed = *seed * 1664525u + 1013904223u;
    return (*seed >> 8) % n;
}

static size_t put(char *buf, size_t cap, size_t len, const char *s) {
    size_t n = strlen(s);
    if (len + n >= cap) return len;
    memcpy(buf + len, s, n);
    return len + n;
}

/* A well-formed DSML turn with random names, payloads and value kinds. */
static size_t gen_block(char *buf, size_t cap, uint32_t *seed) {
    static const char *str_frags[] = {"word", " ", "&amp;", "&lt;", "&gt;", "&quot;", "&", "<", "</", "<b>", "é",
                                      "\xE2\x82\xAC", "\xF0\x9F\x98\x80", "&am", "\"", "\\", "\n", "\t", "{", "}",
                                      "</x>", "｜", "\x01"};
    static const char *json_vals[] = {"[1, 2]", "{\"a\": \"b c\"}", "null", " 3 ", "\"x\\\"y\"", "[1,", "bad", "",
                                      "{\"k\": [true, false, {\"z\": 1.5e3}]}", "\"\\u003c/｜DSML｜parameter>\""};
    static const char *names[] = {"bash", "read_file", "a&amp;b", "x"};
    size_t len = 0;
    if (rnd_next(seed, 2)) len = put(buf, cap, len, "some reasoning &amp; <b></think>");
    len = put(buf, cap, len, rnd_next(seed, 2) ? "Visible text é." : "");
    len = put(buf, cap, len, rnd_next(seed, 2) ? "\n\n" : "\n\n\n");
    len = put(buf, cap, len, TCO "\n");
    int calls = 1 + (int)rnd_next(seed, 3);
    for (int c = 0; c < calls; c++) {
        char tag[128];
        snprintf(tag, sizeof(tag), "<｜DSML｜invoke name=\"%s\">\n", names[rnd_next(seed, 4)]);
        len = put(buf, cap, len, tag);
        int params = (int)rnd_next(seed, 4);
        for (int k = 0; k < params; k++) {
            int kind = (int)rnd_next(seed, 4);
            snprintf(tag, sizeof(tag), "<｜DSML｜parameter name=\"p%d\"%s>", k,
                     kind == 0 ? " string=\"true\"" : kind == 1 ? " string=\"false\"" : "");
            len = put(buf, cap, len, tag);
            if (kind == 1) {
                len = put(buf, cap, len, json_vals[rnd_next(seed, 10)]);
            } else if (kind == 3) { /* loose nested run */
                int leaves = 1 + (int)rnd_next(seed, 2);
                for (int j = 0; j < leaves; j++) {
                    int is_str = (int)rnd_next(seed, 2);
                    snprintf(tag, sizeof(tag), "\n<｜DSML｜parameter name=\"l%d\" string=\"%s\">", j,
                             is_str ? "true" : "false");
                    len = put(buf, cap, len, tag);
                    len = put(buf, cap, len, is_str ? "old &lt;text&gt;" : "[1]");
                    len = put(buf, cap, len, PARC);
                }
                if (rnd_next(seed, 2)) len = put(buf, cap, len, "\n");
            } else {
                int n = (int)rnd_next(seed, 8);
                for (int j = 0; j < n; j++) len = put(buf, cap, len, str_frags[rnd_next(seed, 23)]);
            }
            len = put(buf, cap, len, PARC "\n");
        }
        len = put(buf, cap, len, INVC "\n");
    }
    len = put(buf, cap, len, TCC);
    buf[len] = 0;
    return len;
}

/* Random texts built from DSML fragments, entities, split characters and
 * noise: whatever the input and the chunking, the parser terminates, the
 * stream agrees with the one-shot parse, and for OK results the streamed
 * arguments are the final ones (all checked by check_run). */
static void test_fuzz_consistency(void **state) {
    (void)state;
    static const char *frags[] = {
        TCO, TCC, "<DSML｜tool_calls>", "</DSML｜tool_calls>", "<tool_calls>", "</tool_calls>", INV("bash"),
        INV("a&amp;b"), "<｜DSML｜invoke>", INVC, PAR("command", "true"), PAR("n", "false"), "<｜DSML｜parameter name=\"u\">",
        PARC, "</parameter>", "<invoke name=\"x\">", "</invoke>", "<parameter name=\"p\" string=\"true\">", "\n", "\n\n",
        "  ", "\t", "&amp;", "&lt;", "&am", "&", "<", "</", ">", "\"", "{", "}", "[", "]", ":", ",", "1", "2.5", "true",
        "\"s\"", "\\", "é", "\xE2\x82", "\xAC", "\xF0\x9F\x98\x80", "\xFF", "</think>", "<think>", "</thi", "word",
        " more text ", "｜DSML｜", "null"};
    const int nf = (int)(sizeof(frags) / sizeof(frags[0]));
    uint32_t seed = 2024;
    char text[4096];
    for (int trial = 0; trial < 900; trial++) {
        size_t len = 0;
        seed = seed * 1664525u + 1013904223u;
        int pieces = 1 + (int)((seed >> 8) % 40);
        /* a third are well-formed blocks with random payloads, a third start
         * from a truncated valid block, a third are pure noise */
        if (trial % 3 == 2) {
            len = gen_block(text, sizeof(text), &seed);
            pieces = 0;
        } else if (trial % 3 == 1) {
            const char *base = "r</think>ok" PWD_BLOCK;
            size_t bl = strlen(base);
            seed = seed * 1664525u + 1013904223u;
            size_t cut = (seed >> 8) % bl;
            memcpy(text, base, cut);
            len = cut;
        }
        for (int k = 0; k < pieces; k++) {
            seed = seed * 1664525u + 1013904223u;
            const char *f = frags[(seed >> 8) % (uint32_t)nf];
            size_t fl = strlen(f);
            if (len + fl >= sizeof(text)) break;
            memcpy(text + len, f, fl);
            len += fl;
        }
        text[len] = 0;
        int thinking = trial % 3 == 2 ? strstr(text, "</think>") != NULL : (int)((seed >> 20) & 1);
        int tools = trial % 7 != 0;
        ds4_dsml_result ref;
        parse_text(text, thinking, tools, &ref);
        size_t cuts[64];
        for (int c = 0; c < 4; c++) {
            int n = 0;
            size_t at = 0;
            for (;;) {
                seed = seed * 1664525u + 1013904223u;
                at += 1 + (seed >> 8) % (c == 0 ? 2 : 13);
                if (at >= len || n == 64) break;
                cuts[n++] = at;
            }
            check_run(text, len, cuts, n, thinking, tools, &ref);
        }
        if (ref.status == DS4_DSML_OK && ref.n_calls > 0) {
            /* content + raw_dsml is a substring of the text, ending the block */
            char *joined = malloc(ref.content_len + ref.raw_dsml_len + 1);
            memcpy(joined, ref.content, ref.content_len);
            memcpy(joined + ref.content_len, ref.raw_dsml, ref.raw_dsml_len);
            joined[ref.content_len + ref.raw_dsml_len] = 0;
            assert_non_null(strstr(text, joined));
            free(joined);
        }
        ds4_dsml_result_free(&ref);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_worked_example),
        cmocka_unit_test(test_parse_two_calls),
        cmocka_unit_test(test_parse_dialects),
        cmocka_unit_test(test_parse_loose_nested),
        cmocka_unit_test(test_parse_string_payloads),
        cmocka_unit_test(test_parse_json_values),
        cmocka_unit_test(test_reasoning_not_executable),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_unterminated),
        cmocka_unit_test(test_separator_whitespace),
        cmocka_unit_test(test_orphan_close),
        cmocka_unit_test(test_false_start),
        cmocka_unit_test(test_tools_inactive),
        cmocka_unit_test(test_non_thinking),
        cmocka_unit_test(test_stream_empty),
        cmocka_unit_test(test_stream_order_and_partial_args),
        cmocka_unit_test(test_stream_raw_json),
        cmocka_unit_test(test_stream_holdbacks),
        cmocka_unit_test(test_stream_reasoning_split),
        cmocka_unit_test(test_ids),
        cmocka_unit_test(test_decode_state),
        cmocka_unit_test(test_render_canonical),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_escape_helpers),
        cmocka_unit_test(test_json_validator),
        cmocka_unit_test(test_utf8_helpers),
        cmocka_unit_test(test_fuzz_consistency),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
