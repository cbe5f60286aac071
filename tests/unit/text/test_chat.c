/* Tests for the prompt renderer (INTERFACES.md §3, §13, §14 and the
 * "Rendering and thinking" behaviours of §11.3).
 *
 * Every expected render below is written from the spec text: the marker
 * strings are spelled out here (not taken from chat.h), and the two long
 * constants come from tests/data/chat/, which holds the bytes of §14.1 and
 * §14.2 cut verbatim out of the spec (tools_block_template.txt keeps the
 * `{SCHEMAS}` placeholder of §14.2; neither file ends with a newline that the
 * spec does not have). */
#include "test_util.h"

#include "text/chat.h"

/* §14.3 */
#define BOS "<｜begin▁of▁sentence｜>"
#define EOS "<｜end▁of▁sentence｜>"
#define U "<｜User｜>"
#define A "<｜Assistant｜>"
#define TH "<think>"
#define TC "</think>"
#define TR(x) "<tool_result>" x "</tool_result>"

/* The §3.11 (d) canonical block for bash {"command":"pwd"}. */
#define PWD_DSML                                                                                                   \
    "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"bash\">\n<｜DSML｜parameter name=\"command\" "                \
    "string=\"true\">pwd</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>"

#define BASH_TOOL                                                                                                  \
    "{\"name\":\"bash\",\"description\":\"Run a shell command\",\"parameters\":{\"type\":\"object\",\"properties\":" \
    "{\"command\":{\"type\":\"string\"}}}}"

/* ------------------------------------------------------------ helpers */

static char *load_data(const char *name) {
    char rel[256];
    snprintf(rel, sizeof(rel), "tests/data/chat/%s", name);
    size_t n = 0;
    char *p = test_read_file(test_path(rel), &n);
    if (!p) fail_msg("cannot read %s", rel);
    char *s = malloc(n + 1);
    memcpy(s, p, n);
    s[n] = 0;
    free(p);
    return s;
}

/* The tools block of §14.2 with the given schema lines (already joined). */
static char *tools_block(const char *schemas) {
    char *tpl = load_data("tools_block_template.txt");
    char *at = strstr(tpl, "{SCHEMAS}");
    assert_non_null(at);
    size_t n = strlen(tpl) - 9 + strlen(schemas);
    char *out = malloc(n + 1);
    snprintf(out, n + 1, "%.*s%s%s", (int)(at - tpl), tpl, schemas, at + 9);
    free(tpl);
    return out;
}

/* Concatenate NULL-terminated pieces into a malloc'd string. */
static char *cat(const char *first, ...) {
    va_list ap;
    size_t n = 0;
    va_start(ap, first);
    for (const char *s = first; s; s = va_arg(ap, const char *)) n += strlen(s);
    va_end(ap);
    char *out = malloc(n + 1), *p = out;
    va_start(ap, first);
    for (const char *s = first; s; s = va_arg(ap, const char *)) {
        size_t k = strlen(s);
        memcpy(p, s, k);
        p += k;
    }
    va_end(ap);
    *p = 0;
    return out;
}

static ds4_chat_msg *add(ds4_chat *c, ds4_role role, const char *content) {
    ds4_chat_msg *m = ds4_chat_add(c, role, content, content ? strlen(content) : 0);
    assert_non_null(m);
    return m;
}

static ds4_chat_msg *add_assistant(ds4_chat *c, const char *reasoning, const char *content) {
    ds4_chat_msg *m = add(c, DS4_ROLE_ASSISTANT, content);
    if (reasoning) assert_int_equal(ds4_chat_msg_append_reasoning(m, reasoning, strlen(reasoning)), 0);
    return m;
}

static void add_call(ds4_chat_msg *m, const char *id, const char *name, const char *args) {
    assert_int_equal(ds4_chat_msg_add_call(m, id, name, args, strlen(args)), 0);
}

static void add_tool(ds4_chat *c, const char *json) { assert_int_equal(ds4_chat_add_tool(c, json, strlen(json)), 0); }

static void chat_new(ds4_chat *c, ds4_think_mode mode) {
    ds4_chat_init(c);
    c->think = mode;
    c->ctx_size = 32768;
}

static void expect_bytes(const ds4_textbuf *b, const char *want) {
    size_t wn = strlen(want);
    if (b->n == wn && memcmp(b->p, want, wn) == 0) return;
    size_t i = 0;
    while (i < b->n && i < wn && b->p[i] == want[i]) i++;
    fail_msg("render differs at byte %zu (got %zu bytes, want %zu)\n got: [%.*s]\nwant: [%.*s]", i, b->n, wn,
             (int)(b->n - i < 160 ? b->n - i : 160), b->p + i, (int)(wn - i < 160 ? wn - i : 160), want + i);
}

static void expect_render(const ds4_chat *c, const char *want) {
    ds4_textbuf b;
    ds4_textbuf_init(&b);
    ds4_err err;
    assert_int_equal(ds4_chat_render(c, &b, &err), 0);
    expect_bytes(&b, want);
    ds4_textbuf_free(&b);
}

static char *render(const ds4_chat *c) {
    ds4_textbuf b;
    ds4_textbuf_init(&b);
    assert_int_equal(ds4_chat_render(c, &b, NULL), 0);
    return ds4_textbuf_detach(&b, NULL);
}

static char *render_history(const ds4_chat *c) {
    ds4_textbuf b;
    ds4_textbuf_init(&b);
    assert_int_equal(ds4_chat_render_history(c, &b, NULL), 0);
    return ds4_textbuf_detach(&b, NULL);
}

/* ===================================================== §3.11 worked examples */

/* (a) thinking (default), system + user */
static void test_example_a(void **state) {
    (void)state;
    ds4_chat c;
    ds4_chat_init(&c); /* default mode is thinking (high), §6.3 step 1 */
    c.ctx_size = 32768;
    add(&c, DS4_ROLE_SYSTEM, "You are terse.");
    add(&c, DS4_ROLE_USER, "Hello");
    expect_render(&c, BOS "You are terse." U "Hello" A TH);
    ds4_chat_free(&c);
}

/* (b) non-thinking */
static void test_example_b(void **state) {
    (void)state;
    ds4_chat c;
    chat_new(&c, DS4_THINK_NONE);
    add(&c, DS4_ROLE_USER, "Hello");
    expect_render(&c, BOS U "Hello" A TC);
    ds4_chat_free(&c);
}

/* (c) thinking, multi-turn, no tools: old reasoning dropped (§3.6) */
static void test_example_c(void **state) {
    (void)state;
    ds4_chat c;
    chat_new(&c, DS4_THINK_HIGH);
    add(&c, DS4_ROLE_USER, "first");
    add_assistant(&c, "old reasoning that must not appear", "first answer");
    add(&c, DS4_ROLE_USER, "second");
    expect_render(&c, BOS U "first" A TC "first answer" EOS U "second" A TH);
    ds4_chat_free(&c);
}

/* (d) thinking, tools, one tool round trip: tools block first, then system
 * text, reasoning kept, canonical DSML, tool result. */
static void test_example_d(void **state) {
    (void)state;
    ds4_chat c;
    chat_new(&c, DS4_THINK_HIGH);
    add_tool(&c, BASH_TOOL);
    add(&c, DS4_ROLE_SYSTEM, "SYSTEM TEXT");
    add(&c, DS4_ROLE_USER, "run pwd");
    ds4_chat_msg *m = add_assistant(&c, "I should run pwd", "");
    add_call(m, "call_1", "bash", "{\"command\":\"pwd\"}");
    ds4_chat_msg *t = add(&c, DS4_ROLE_TOOL, "/tmp");
    ds4_chat_msg_add_tool_call_id(t, "call_1");
    char *tb = tools_block(BASH_TOOL);
    char *want = cat(BOS, tb, "\n\nSYSTEM TEXT" U "run pwd" A TH "I should run pwd" TC PWD_DSML EOS U TR("/tmp") A TH,
                     NULL);
    expect_render(&c, want);
    /* §11.3: tools block precedes the client system text, which precedes <｜User｜> */
    char *p = render(&c);
    assert_true(strstr(p, "## Tools") < strstr(p, "SYSTEM TEXT"));
    assert_true(strstr(p, "SYSTEM TEXT") < strstr(p, U));
    free(p);
    free(tb);
    free(want);
    ds4_chat_free(&c);
}

/* (e) Think Max (ctx >= 393216): the §14.1 prefix right after BOS; below
 * that context the request silently falls back to high (§3.5). */
static void test_example_e(void **state) {
    (void)state;
    char *prefix = load_data("think_max_prefix.txt");
    ds4_chat c;
    chat_new(&c, DS4_THINK_MAX);
    c.ctx_size = 393216;
    add(&c, DS4_ROLE_SYSTEM, "You are terse.");
    add(&c, DS4_ROLE_USER, "Hello");
    char *want = cat(BOS, prefix, "You are terse." U "Hello" A TH, NULL);
    expect_render(&c, want);
    char *p = render(&c);
    assert_null(strstr(p, TC)); /* §11.3: no </think> */
    assert_int_equal(strncmp(p + strlen(BOS), "Reasoning Effort: Absolute maximum", 34), 0);
    free(p);

    c.ctx_size = 1048576;
    expect_render(&c, want);
    c.ctx_size = 393215;
    expect_render(&c, BOS "You are terse." U "Hello" A TH);
    assert_int_equal(ds4_chat_effective_think(DS4_THINK_MAX, 393215), DS4_THINK_HIGH);
    assert_int_equal(ds4_chat_effective_think(DS4_THINK_MAX, 393216), DS4_THINK_MAX);
    assert_int_equal(ds4_chat_effective_think(DS4_THINK_NONE, 393216), DS4_THINK_NONE);
    free(want);
    free(prefix);
    ds4_chat_free(&c);
}

/* Think Max with tools: the prefix comes before the tools block (§3.5). */
static void test_think_max_with_tools(void **state) {
    (void)state;
    char *prefix = load_data("think_max_prefix.txt");
    ds4_chat c;
    chat_new(&c, DS4_THINK_MAX);
    c.ctx_size = 400000;
    add_tool(&c, BASH_TOOL);
    add(&c, DS4_ROLE_USER, "Hello");
    char *tb = tools_block(BASH_TOOL);
    char *want = cat(BOS, prefix, tb, U "Hello" A TH, NULL);
    expect_render(&c, want);
    free(want);
    free(tb);
    free(prefix);
    ds4_chat_free(&c);
}

/* (f) /v1/completions: fixed system text + the prompt as a user turn */
static void test_example_f(void **state) {
    (void)state;
    ds4_chat c;
    chat_new(&c, DS4_THINK_HIGH);
    add(&c, DS4_ROLE_SYSTEM, DS4_CHAT_DEFAULT_SYSTEM);
    add(&c, DS4_ROLE_USER, "PROMPT");
    expect_render(&c, BOS "You are a helpful assistant" U "PROMPT" A TH);
    assert_string_equal(DS4_CHAT_BENCH_SYSTEM, "You are a helpful assistant.");
    ds4_chat_free(&c);
}

/* (g) live tool-result tail */
static void test_example_g(void **state) {
    (void)state;
    ds4_chat c;
    chat_new(&c, DS4_THINK_HIGH);
    add_tool(&c, BASH_TOOL);
    add(&c, DS4_ROLE_USER, "run it");
    ds4_chat_msg *m = add_assistant(&c, "r", "");
    add_call(m, "call_9", "bash", "{\"command\":\"make\"}");
    add(&c, DS4_ROLE_TOOL, "OUTPUT");
    ds4_textbuf b;
    ds4_textbuf_init(&b);
    assert_int_equal(ds4_chat_render_tail(&c, 2, &b, NULL), 0);
    expect_bytes(&b, EOS U TR("OUTPUT") A TH);
    ds4_textbuf_clear(&b);
    /* non-thinking tail ends with </think> */
    c.think = DS4_THINK_NONE;
    assert_int_equal(ds4_chat_render_tail(&c, 2, &b, NULL), 0);
    expect_bytes(&b, EOS U TR("OUTPUT") A TC);
    ds4_err err;
    assert_int_equal(ds4_chat_render_tail(&c, 9, &b, &err), -1);
    ds4_textbuf_free(&b);
    ds4_chat_free(&c);
}

/* ===================================================== turns and retention */

/* §3.6: in non-thinking mode reasoning is never rendered, even with tools. */
static void test_non_thinking_tools(void **state) {
    (void)state;
    ds4_chat c;
    chat_new(&c, DS4_THINK_NONE);
    add_tool(&c, BASH_TOOL);
    add(&c, DS4_ROLE_USER, "run pwd");
    ds4_chat_msg *m = add_assistant(&c, "hidden reasoning", "Sure.");
    add_call(m, NULL, "bash", "{\"command\":\"pwd\"}");
    add(&c, DS4_ROLE_TOOL, "/tmp");
    char *tb = tools_block(BASH_TOOL);
    char *want = cat(BOS, tb, U "run pwd" A TC "Sure." PWD_DSML EOS U TR("/tmp") A TC, NULL);
    expect_render(&c, want);
    free(tb);
    free(want);
    ds4_chat_free(&c);
}

/* §3.7: tool_choice none hides the tools block, but tool history still
 * renders and still creates tool context (reasoning kept, §11.3 "preserved
 * with tool history"). */
static void test_tool_choice_none(void **state) {
    (void)state;
    ds4_chat c;
    chat_new(&c, DS4_THINK_HIGH);
    add_tool(&c, BASH_TOOL);
    c.tool_choice_none = 1;
    add(&c, DS4_ROLE_USER, "run pwd");
    ds4_chat_msg *m = add_assistant(&c, "tool reasoning", "");
    add_call(m, "call_1", "bash", "{\"command\":\"pwd\"}");
    add(&c, DS4_ROLE_TOOL, "/tmp");
    add_assistant(&c, "final reasoning", "You are in /tmp.");
    add(&c, DS4_ROLE_USER, "thanks");
    assert_false(ds4_chat_tools_active(&c));
    assert_true(ds4_chat_tool_context(&c));
    expect_render(&c, BOS U "run pwd" A TH "tool reasoning" TC PWD_DSML EOS U TR("/tmp") A TH "final reasoning" TC
                      "You are in /tmp." EOS U "thanks" A TH);
    ds4_chat_free(&c);

    /* tool_choice none and no tool history: no tool context, old reasoning
     * dropped */
    chat_new(&c, DS4_THINK_HIGH);
    add_tool(&c, BASH_TOOL);
    c.tool_choice_none = 1;
    add(&c, DS4_ROLE_USER, "a");
    add_assistant(&c, "r", "b");
    add(&c, DS4_ROLE_USER, "c");
    assert_false(ds4_chat_tool_context(&c));
    expect_render(&c, BOS U "a" A TC "b" EOS U "c" A TH);
    ds4_chat_free(&c);
}

/* §3.6: tools active alone is tool context: every past assistant turn keeps
 * its reasoning; a missing reasoning renders as <think></think>. */
static void test_tools_active_keeps_reasoning(void **state) {
    (void)state;
    ds4_chat c;
    chat_new(&c, DS4_THINK_HIGH);
    add_tool(&c, BASH_TOOL);
    add(&c, DS4_ROLE_USER, "first");
    add_assistant(&c, "kept reasoning", "first answer");
    add(&c, DS4_ROLE_USER, "second");
    add_assistant(&c, NULL, "second answer");
    add(&c, DS4_ROLE_USER, "third");
    char *tb = tools_block(BASH_TOOL);
    char *want = cat(BOS, tb, U "first" A TH "kept reasoning" TC "first answer" EOS U "second" A TH TC "second answer" EOS
                     U "third" A TH,
                     NULL);
    expect_render(&c, want);
    free(tb);
    free(want);
    ds4_chat_free(&c);
}

/* §3.4 / REF-QUIRK 11: a conversation ending with an assistant message ends
 * with EOS and no generation prefix; that newest turn (after the last user
 * message) keeps its reasoning even without tools. */
static void test_ends_with_assistant(void **state) {
    (void)state;
    ds4_chat c;
    chat_new(&c, DS4_THINK_HIGH);
    add(&c, DS4_ROLE_USER, "q");
    add_assistant(&c, "R", "C");
    expect_render(&c, BOS U "q" A TH "R" TC "C" EOS);
    ds4_chat_free(&c);
}

/* §3.4: consecutive tool messages share one <｜User｜>, adjacent blocks; a
 * tool message after a user message opens a new <｜User｜>. */
static void test_consecutive_tool_results(void **state) {
    (void)state;
    ds4_chat c;
    chat_new(&c, DS4_THINK_HIGH);
    add_tool(&c, BASH_TOOL);
    add(&c, DS4_ROLE_USER, "two things");
    ds4_chat_msg *m = add_assistant(&c, "both", "");
    add_call(m, "c1", "bash", "{\"command\":\"pwd\"}");
    add_call(m, "c2", "bash", "{\"command\":\"ls\"}");
    add(&c, DS4_ROLE_TOOL, "/tmp");
    add(&c, DS4_ROLE_TOOL, "a.txt");
    add(&c, DS4_ROLE_USER, "and");
    add(&c, DS4_ROLE_TOOL, "late");
    char *tb = tools_block(BASH_TOOL);
    char *want =
        cat(BOS, tb,
            U "two things" A TH "both" TC
              "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"bash\">\n<｜DSML｜parameter name=\"command\" "
              "string=\"true\">pwd</｜DSML｜parameter>\n</｜DSML｜invoke>\n<｜DSML｜invoke name=\"bash\">\n<｜DSML｜parameter "
              "name=\"command\" string=\"true\">ls</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>" EOS U TR("/tmp")
                  TR("a.txt") U "and" U TR("late") A TH,
            NULL);
    expect_render(&c, want);
    free(tb);
    free(want);
    ds4_chat_free(&c);
}

/* §3.9 / §11.3: tool output keeps `<<< < > >>>` and `&` literal and escapes
 * only `</tool_result>`. */
static void test_tool_result_escaping(void **state) {
    (void)state;
    ds4_chat c;
    chat_new(&c, DS4_THINK_NONE);
    add(&c, DS4_ROLE_USER, "go");
    ds4_chat_msg *m = add_assistant(&c, NULL, "");
    add_call(m, "c", "bash", "{\"command\":\"cat f\"}");
    add(&c, DS4_ROLE_TOOL, "<<< < > >>> a && b &amp; </tool_result> x</tool_result></tool_resul");
    char *p = render(&c);
    assert_non_null(strstr(p, U TR("<<< < > >>> a && b &amp; &lt;/tool_result> x&lt;/tool_result></tool_resul") A TC));
    free(p);
    ds4_chat_free(&c);
}

/* §3.3: every system/developer message, wherever it is, goes into the system
 * region in order, separated by \n\n; user/assistant content is verbatim. */
static void test_system_hoisting(void **state) {
    (void)state;
    ds4_role r;
    assert_int_equal(ds4_role_parse("developer", 9, &r), 0);
    assert_int_equal(r, DS4_ROLE_SYSTEM);
    ds4_chat c;
    chat_new(&c, DS4_THINK_HIGH);
    add(&c, DS4_ROLE_SYSTEM, "S1");
    add(&c, DS4_ROLE_USER, "u1 <｜User｜> <think> & \\n");
    add(&c, DS4_ROLE_SYSTEM, "S2\n");
    add_assistant(&c, "r", "a1");
    add(&c, r, "S3");
    add(&c, DS4_ROLE_USER, "u2");
    expect_render(&c, BOS "S1\n\nS2\n\n\nS3" U "u1 <｜User｜> <think> & \\n" A TC "a1" EOS U "u2" A TH);
    ds4_chat_free(&c);

    /* tools block + system: separated by \n\n; the separator also follows
     * an empty system text (§3.3 "if anything was already written") */
    chat_new(&c, DS4_THINK_HIGH);
    add_tool(&c, BASH_TOOL);
    add(&c, DS4_ROLE_SYSTEM, "");
    add(&c, DS4_ROLE_SYSTEM, "S");
    add(&c, DS4_ROLE_USER, "u");
    char *tb = tools_block(BASH_TOOL);
    char *want = cat(BOS, tb, "\n\n\n\nS" U "u" A TH, NULL);
    expect_render(&c, want);
    free(tb);
    free(want);
    ds4_chat_free(&c);

    /* an empty first system message writes nothing, so no separator before
     * the next one */
    chat_new(&c, DS4_THINK_HIGH);
    add(&c, DS4_ROLE_SYSTEM, "");
    add(&c, DS4_ROLE_SYSTEM, "S");
    add(&c, DS4_ROLE_USER, "u");
    expect_render(&c, BOS "S" U "u" A TH);
    ds4_chat_free(&c);
}

/* §3.8 / §3.13: schema lines are the raw bytes, joined by \n; a
 * pretty-printed schema stays multi-line. */
static void test_tools_block_lines(void **state) {
    (void)state;
    const char *l1 = "{\"name\":\"a\",\"description\":\"é \\u00e9\",\"parameters\":{}}";
    const char *l2 = "{\n  \"name\": \"b\",\n  \"parameters\": { \"type\": \"object\" }\n}";
    ds4_chat c;
    chat_new(&c, DS4_THINK_HIGH);
    add_tool(&c, l1);
    add_tool(&c, l2);
    add(&c, DS4_ROLE_USER, "u");
    char *joined = cat(l1, "\n", l2, NULL);
    char *tb = tools_block(joined);
    char *want = cat(BOS, tb, U "u" A TH, NULL);
    expect_render(&c, want);
    /* the block ends with the postamble sentence, no newline (§14.2) */
    assert_non_null(strstr(want, "Use the exact parameter names from the schemas." U));
    free(joined);
    free(tb);
    free(want);
    ds4_chat_free(&c);
}

/* §3.4 / §3.13: the second of two consecutive assistant messages has no
 * marker and loses its reasoning; an assistant message first in the turns is
 * appended directly after the system region. */
static void test_consecutive_assistants(void **state) {
    (void)state;
    ds4_chat c;
    chat_new(&c, DS4_THINK_HIGH);
    add_tool(&c, BASH_TOOL);
    add(&c, DS4_ROLE_USER, "q");
    add_assistant(&c, "R1", "a1");
    add_assistant(&c, "R2", "a2");
    char *tb = tools_block(BASH_TOOL);
    char *want = cat(BOS, tb, U "q" A TH "R1" TC "a1" EOS "a2" EOS, NULL);
    expect_render(&c, want);
    free(tb);
    free(want);
    ds4_chat_free(&c);

    chat_new(&c, DS4_THINK_HIGH);
    add(&c, DS4_ROLE_SYSTEM, "S");
    add_assistant(&c, "R0", "hello");
    add(&c, DS4_ROLE_USER, "q");
    expect_render(&c, BOS "S" "hello" EOS U "q" A TH);
    ds4_chat_free(&c);
}

/* §3.13 Responses reasoning flush, as normalized messages: reasoning ->
 * developer -> assistant renders the reasoning as its own empty assistant
 * turn, glues the text after EOS; a trailing reasoning item is an empty
 * assistant turn and the prompt has no generation prefix. */
static void test_responses_reasoning_flush(void **state) {
    (void)state;
    ds4_chat c;
    chat_new(&c, DS4_THINK_HIGH);
    add(&c, DS4_ROLE_USER, "q");
    add_assistant(&c, "R", "");
    add(&c, DS4_ROLE_SYSTEM, "D");
    add_assistant(&c, NULL, "text");
    expect_render(&c, BOS "D" U "q" A TH "R" TC EOS "text" EOS);
    ds4_chat_free(&c);

    chat_new(&c, DS4_THINK_HIGH);
    add(&c, DS4_ROLE_USER, "q");
    add_assistant(&c, "R", "");
    expect_render(&c, BOS U "q" A TH "R" TC EOS);
    ds4_chat_free(&c);
}

/* §6.11: exact sampled bytes are replayed verbatim (even non-canonical
 * whitespace); without them the canonical form is used. */
static void test_exact_replay(void **state) {
    (void)state;
    const char *raw = "\n\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"bash\">\n  <｜DSML｜parameter name=\"command\" "
                      "string=\"true\">ls</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
    ds4_chat c;
    chat_new(&c, DS4_THINK_HIGH);
    add_tool(&c, BASH_TOOL);
    add(&c, DS4_ROLE_USER, "list");
    ds4_chat_msg *m = add_assistant(&c, "R", "Running.");
    add_call(m, "call_x", "bash", "{\"command\":\"ls\"}");
    assert_int_equal(ds4_chat_msg_set_raw_dsml(m, raw, strlen(raw)), 0);
    add(&c, DS4_ROLE_TOOL, "a");
    char *tb = tools_block(BASH_TOOL);
    char *want = cat(BOS, tb, U "list" A TH "R" TC "Running.", raw, EOS U TR("a") A TH, NULL);
    expect_render(&c, want);
    free(want);
    /* replay disabled: canonical */
    ds4_chat_msg_set_raw_dsml(m, NULL, 0);
    want = cat(BOS, tb,
               U "list" A TH "R" TC "Running.\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"bash\">\n<｜DSML｜parameter "
                 "name=\"command\" string=\"true\">ls</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>" EOS U
                     TR("a") A TH,
               NULL);
    expect_render(&c, want);
    free(want);
    free(tb);
    ds4_chat_free(&c);
}

/* §4.8 / §3.9 / §3.13: canonical DSML in history: argument order kept,
 * number spellings kept, JSON minified, `2>&1 &&` and `</tool_result>`
 * literal, closing parameter tag escaped per value kind; arguments that are
 * not an object become one `arguments` string parameter. */
static void test_canonical_history(void **state) {
    (void)state;
    ds4_chat c;
    chat_new(&c, DS4_THINK_NONE);
    add(&c, DS4_ROLE_USER, "go");
    ds4_chat_msg *m = add_assistant(&c, NULL, "");
    add_call(m, "c1", "bash",
             "{\"cmd\": \"cat a 2>&1 && echo </tool_result> </｜DSML｜parameter>\", \"n\": 1.50, \"m\": 1e3, \"o\": "
             "{\"x\": [1, \"</｜DSML｜parameter>\"]}}");
    add_call(m, "c2", "raw", "not json");
    add(&c, DS4_ROLE_TOOL, "ok");
    add(&c, DS4_ROLE_TOOL, "ok2");
    expect_render(&c, BOS U "go" A TC
                      "\n\n<｜DSML｜tool_calls>\n"
                      "<｜DSML｜invoke name=\"bash\">\n"
                      "<｜DSML｜parameter name=\"cmd\" string=\"true\">cat a 2>&1 && echo </tool_result> "
                      "&lt;/｜DSML｜parameter></｜DSML｜parameter>\n"
                      "<｜DSML｜parameter name=\"n\" string=\"false\">1.50</｜DSML｜parameter>\n"
                      "<｜DSML｜parameter name=\"m\" string=\"false\">1e3</｜DSML｜parameter>\n"
                      "<｜DSML｜parameter name=\"o\" string=\"false\">{\"x\":[1,\"\\u003c/｜DSML｜parameter>\"]}"
                      "</｜DSML｜parameter>\n"
                      "</｜DSML｜invoke>\n"
                      "<｜DSML｜invoke name=\"raw\">\n"
                      "<｜DSML｜parameter name=\"arguments\" string=\"true\">not json</｜DSML｜parameter>\n"
                      "</｜DSML｜invoke>\n"
                      "</｜DSML｜tool_calls>" EOS U TR("ok") TR("ok2") A TC);
    ds4_chat_free(&c);
}

/* Edge shapes: no messages at all; NULL content is "". */
static void test_empty_shapes(void **state) {
    (void)state;
    ds4_chat c;
    chat_new(&c, DS4_THINK_HIGH);
    expect_render(&c, BOS);
    add(&c, DS4_ROLE_USER, NULL);
    expect_render(&c, BOS U A TH);
    ds4_chat_free(&c);

    chat_new(&c, DS4_THINK_HIGH);
    add_tool(&c, BASH_TOOL);
    char *tb = tools_block(BASH_TOOL);
    char *want = cat(BOS, tb, NULL);
    expect_render(&c, want);
    free(want);
    free(tb);
    ds4_chat_free(&c);
}

/* §6.7.2: an Anthropic user message made of tool_result blocks renders the
 * same bytes as the OpenAI tool-message path. */
static void test_anthropic_tool_results(void **state) {
    (void)state;
    ds4_chat a, o;
    chat_new(&a, DS4_THINK_HIGH);
    chat_new(&o, DS4_THINK_HIGH);
    ds4_chat *both[2] = {&a, &o};
    for (int i = 0; i < 2; i++) {
        add_tool(both[i], BASH_TOOL);
        add(both[i], DS4_ROLE_USER, "do");
        ds4_chat_msg *m = add_assistant(both[i], "R", "");
        add_call(m, "toolu_1", "bash", "{\"command\":\"pwd\"}");
        add_call(m, "toolu_2", "bash", "{\"command\":\"ls\"}");
    }
    ds4_chat_msg *u = add(&a, DS4_ROLE_USER, "");
    ds4_chat_msg_append_tool_result(u, "a</tool_result>", 15);
    ds4_chat_msg_add_tool_call_id(u, "toolu_1");
    ds4_chat_msg_append_tool_result(u, "b", 1);
    ds4_chat_msg_add_tool_call_id(u, "toolu_2");
    add(&o, DS4_ROLE_TOOL, "a</tool_result>");
    add(&o, DS4_ROLE_TOOL, "b");
    char *pa = render(&a), *po = render(&o);
    assert_string_equal(pa, po);
    assert_non_null(strstr(pa, EOS U TR("a&lt;/tool_result>") TR("b") A TH));
    free(pa);
    free(po);
    ds4_chat_free(&a);
    ds4_chat_free(&o);
}

/* ============================================ visible keys and checkpoints */

/* §6.12.3 / §11.3: the thinking-visible key (rendered prompt minus its final
 * <think>, then </think> + content + EOS) equals the future rendered prefix:
 * single turn, empty content, multi-turn. */
static void test_thinking_visible_key(void **state) {
    (void)state;
    const char *contents[] = {"Hi there!", ""};
    for (int k = 0; k < 2; k++) {
        for (int turns = 1; turns <= 2; turns++) {
            ds4_chat c;
            chat_new(&c, DS4_THINK_HIGH);
            add(&c, DS4_ROLE_SYSTEM, "S");
            if (turns == 2) {
                add(&c, DS4_ROLE_USER, "earlier");
                add_assistant(&c, "old", "old answer");
            }
            add(&c, DS4_ROLE_USER, "Hello");
            char *prompt = render(&c);
            size_t pl = strlen(prompt);
            assert_int_equal(strcmp(prompt + pl - strlen(TH), TH), 0);
            prompt[pl - strlen(TH)] = 0;
            char *key = cat(prompt, TC, contents[k], EOS, NULL);

            add_assistant(&c, "hidden reasoning", contents[k]);
            char *hist = render_history(&c);
            assert_string_equal(hist, key);
            add(&c, DS4_ROLE_USER, "Next");
            char *next = render(&c);
            assert_int_equal(strncmp(next, key, strlen(key)), 0);
            assert_string_equal(next + strlen(key), U "Next" A TH);
            free(prompt);
            free(key);
            free(hist);
            free(next);
            ds4_chat_free(&c);
        }
    }
}

/* §11.3: with tool history the key keeps the reasoning (prompt + reasoning +
 * </think> + content + EOS); in non-thinking mode the key is prompt +
 * content + EOS (a no-op for the thinking-visible path). */
static void test_visible_key_tool_history_and_non_thinking(void **state) {
    (void)state;
    ds4_chat c;
    chat_new(&c, DS4_THINK_HIGH);
    add(&c, DS4_ROLE_USER, "run");
    ds4_chat_msg *m = add_assistant(&c, "tr", "");
    add_call(m, "c1", "bash", "{\"command\":\"pwd\"}");
    add(&c, DS4_ROLE_TOOL, "/tmp");
    char *prompt = render(&c);
    add_assistant(&c, "tool reasoning", "Done.");
    char *hist = render_history(&c);
    char *want = cat(prompt, "tool reasoning" TC "Done." EOS, NULL);
    assert_string_equal(hist, want);
    assert_non_null(strstr(hist, TH "tool reasoning" TC));
    assert_non_null(strstr(hist, TR("/tmp")));
    free(prompt);
    free(hist);
    free(want);
    ds4_chat_free(&c);

    chat_new(&c, DS4_THINK_NONE);
    add(&c, DS4_ROLE_USER, "Hello");
    prompt = render(&c);
    add_assistant(&c, "ignored", "Hi");
    hist = render_history(&c);
    want = cat(prompt, "Hi" EOS, NULL);
    assert_string_equal(hist, want);
    free(prompt);
    free(hist);
    free(want);
    ds4_chat_free(&c);
}

/* §6.12.4 / §11.3: the tool checkpoint suffix (reasoning + </think> + content
 * + canonical DSML + EOS) equals the future rendered prompt when the model
 * generated canonical DSML: `cd /tmp && git diff 2>/dev/null` without entity
 * escapes, and minified JSON parameters. */
static void test_tool_checkpoint_suffix(void **state) {
    (void)state;
    const char *generated = "I will diff.</think>Checking.\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"bash\">\n"
                            "<｜DSML｜parameter name=\"command\" string=\"true\">cd /tmp && git diff 2>/dev/null"
                            "</｜DSML｜parameter>\n<｜DSML｜parameter name=\"timeout\" string=\"false\">{\"s\":30,\"ms\":[1,2]}"
                            "</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
    ds4_chat c;
    chat_new(&c, DS4_THINK_HIGH);
    add_tool(&c, BASH_TOOL);
    add(&c, DS4_ROLE_USER, "diff it");
    char *prompt = render(&c);

    ds4_dsml_opts o = {0};
    o.thinking = 1;
    o.tools_active = 1;
    ds4_dsml_result r;
    assert_int_equal(ds4_dsml_parse(generated, strlen(generated), &o, &r), 0);
    assert_int_equal(r.n_calls, 1);
    ds4_chat_msg *m = add_assistant(&c, r.reasoning, r.content);
    add_call(m, "call_z", r.calls[0].name, r.calls[0].arguments); /* canonical, no replay */
    char *hist = render_history(&c);
    char *want = cat(prompt, generated, EOS, NULL);
    assert_string_equal(hist, want);
    assert_null(strstr(hist, "&amp;"));
    ds4_dsml_result_free(&r);
    free(prompt);
    free(hist);
    free(want);
    ds4_chat_free(&c);
}

/* ================================================================ model */

static void test_roles_and_context(void **state) {
    (void)state;
    ds4_role r;
    const char *names[] = {"system", "developer", "user", "assistant", "tool", "function"};
    ds4_role roles[] = {DS4_ROLE_SYSTEM, DS4_ROLE_SYSTEM, DS4_ROLE_USER, DS4_ROLE_ASSISTANT, DS4_ROLE_TOOL, DS4_ROLE_TOOL};
    for (int i = 0; i < 6; i++) {
        assert_int_equal(ds4_role_parse(names[i], strlen(names[i]), &r), 0);
        assert_int_equal(r, roles[i]);
    }
    assert_int_equal(ds4_role_parse("critic", 6, &r), -1);
    assert_int_equal(ds4_role_parse("", 0, &r), -1);
    assert_int_equal(ds4_role_parse("User", 4, &r), -1);
    assert_string_equal(ds4_role_name(DS4_ROLE_TOOL), "tool");

    ds4_chat c;
    chat_new(&c, DS4_THINK_HIGH);
    add(&c, DS4_ROLE_USER, "x");
    assert_false(ds4_chat_tool_context(&c));
    ds4_chat_msg *m = add(&c, DS4_ROLE_USER, "");
    ds4_chat_msg_add_tool_call_id(m, "toolu_1"); /* Anthropic tool_result */
    assert_true(ds4_chat_tool_context(&c));
    ds4_chat_free(&c);

    /* content/reasoning may hold any bytes, NUL included */
    chat_new(&c, DS4_THINK_NONE);
    ds4_chat_add(&c, DS4_ROLE_USER, "a\0b", 3);
    ds4_textbuf b;
    ds4_textbuf_init(&b);
    ds4_chat_render(&c, &b, NULL);
    const char want[] = BOS U "a\0b" A TC;
    assert_int_equal(b.n, sizeof(want) - 1);
    assert_memory_equal(b.p, want, b.n);
    ds4_textbuf_free(&b);
    ds4_chat_free(&c);
}

/* §3.8 / §11.3: property order extracted from OpenAI `parameters` and
 * Anthropic `input_schema`. */
static void test_tool_info(void **state) {
    (void)state;
    const char *openai = "{\"name\":\"write_file\",\"description\":\"d\",\"parameters\":{\"type\":\"object\","
                         "\"properties\":{\"path\":{\"type\":\"string\"},\"content\":{\"type\":\"string\"},"
                         "\"mode\":{\"enum\":[\"a\",\"w\"]}},\"required\":[\"path\"]}}";
    const char *anthropic = "{\n  \"name\": \"Bash\",\n  \"input_schema\": {\"properties\": {\"command\": {}, "
                            "\"timeout\": {}, \"d\\u00e9\": {}}}\n}";
    ds4_chat_tool_info info;
    assert_int_equal(ds4_chat_tool_info_parse(openai, strlen(openai), &info), 0);
    assert_string_equal(info.name, "write_file");
    assert_int_equal(info.n_props, 3);
    assert_string_equal(info.props[0], "path");
    assert_string_equal(info.props[1], "content");
    assert_string_equal(info.props[2], "mode");
    ds4_chat_tool_info_free(&info);
    assert_int_equal(ds4_chat_tool_info_parse(anthropic, strlen(anthropic), &info), 0);
    assert_string_equal(info.name, "Bash");
    assert_int_equal(info.n_props, 3);
    assert_string_equal(info.props[0], "command");
    assert_string_equal(info.props[1], "timeout");
    assert_string_equal(info.props[2], "dé");
    ds4_chat_tool_info_free(&info);
    assert_int_equal(ds4_chat_tool_info_parse("{\"name\":\"x\"}", 12, &info), 0);
    assert_int_equal(info.n_props, 0);
    ds4_chat_tool_info_free(&info);
    assert_int_equal(ds4_chat_tool_info_parse("[1]", 3, &info), -1);
    assert_int_equal(ds4_chat_tool_info_parse("{\"name\":", 8, &info), -1);
}

/* The library constants are the spec's bytes (§14.1, §14.2). */
static void test_constants_match_spec(void **state) {
    (void)state;
    char *prefix = load_data("think_max_prefix.txt");
    assert_string_equal(ds4_chat_think_max_prefix, prefix);
    assert_int_equal(strlen(prefix), 476);
    char *tb = tools_block("");
    char *lib = cat(ds4_chat_tools_preamble, ds4_chat_tools_postamble, NULL);
    assert_string_equal(lib, tb);
    free(prefix);
    free(tb);
    free(lib);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_example_a),
        cmocka_unit_test(test_example_b),
        cmocka_unit_test(test_example_c),
        cmocka_unit_test(test_example_d),
        cmocka_unit_test(test_example_e),
        cmocka_unit_test(test_think_max_with_tools),
        cmocka_unit_test(test_example_f),
        cmocka_unit_test(test_example_g),
        cmocka_unit_test(test_non_thinking_tools),
        cmocka_unit_test(test_tool_choice_none),
        cmocka_unit_test(test_tools_active_keeps_reasoning),
        cmocka_unit_test(test_ends_with_assistant),
        cmocka_unit_test(test_consecutive_tool_results),
        cmocka_unit_test(test_tool_result_escaping),
        cmocka_unit_test(test_system_hoisting),
        cmocka_unit_test(test_tools_block_lines),
        cmocka_unit_test(test_consecutive_assistants),
        cmocka_unit_test(test_responses_reasoning_flush),
        cmocka_unit_test(test_exact_replay),
        cmocka_unit_test(test_canonical_history),
        cmocka_unit_test(test_empty_shapes),
        cmocka_unit_test(test_anthropic_tool_results),
        cmocka_unit_test(test_thinking_visible_key),
        cmocka_unit_test(test_visible_key_tool_history_and_non_thinking),
        cmocka_unit_test(test_tool_checkpoint_suffix),
        cmocka_unit_test(test_roles_and_context),
        cmocka_unit_test(test_tool_info),
        cmocka_unit_test(test_constants_match_spec),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
