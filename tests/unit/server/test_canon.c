/* Tool checkpoint canonicalization (INTERFACES.md §6.12.4), the parts that
 * need no session: the canonical transcript a tool turn leaves for the next
 * request (rendered prompt + [reasoning + </think>] + content + canonical DSML
 * + EOS), built from a reply the real DSML parser read, and the plan chosen
 * by comparing it with the live state.  The server end to end is in
 * tests/server/canon.test.mjs. */
#include "test_util.h"

#include "server/canon.h"

/* ------------------------------------------------------------ the transcript */

static const char WEATHER[] =
    "{\"name\":\"get_weather\",\"description\":\"Current weather of a city\",\"parameters\":{\"type\":\"object\","
    "\"properties\":{\"city\":{\"type\":\"string\"},\"days\":{\"type\":\"integer\"}}}}";

/* Sampled DSML that does not round-trip: an entity in a string value (the
 * parser decodes it) and JSON with spaces (canonical JSON is minified). */
static const char SAMPLED[] =
    "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"get_weather\">\n"
    "<｜DSML｜parameter name=\"city\" string=\"true\">Rome &amp; Milan</｜DSML｜parameter>\n"
    "<｜DSML｜parameter name=\"days\" string=\"false\">[ 1, 2 ]</｜DSML｜parameter>\n"
    "</｜DSML｜invoke>\n</｜DSML｜tool_calls>";

static const char CANONICAL[] =
    "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"get_weather\">\n"
    "<｜DSML｜parameter name=\"city\" string=\"true\">Rome & Milan</｜DSML｜parameter>\n"
    "<｜DSML｜parameter name=\"days\" string=\"false\">[1,2]</｜DSML｜parameter>\n"
    "</｜DSML｜invoke>\n</｜DSML｜tool_calls>";

/* Render the request, parse `reply` as the model's output, append it with
 * srv_chat_add_reply and render the history: the suffix after the prompt must
 * be `want`. */
static void check_transcript(ds4_think_mode think, const char *reply, const char *want) {
    ds4_chat c;
    ds4_chat_init(&c);
    c.think = think;
    c.ctx_size = 32768;
    assert_int_equal(ds4_chat_add_tool(&c, WEATHER, strlen(WEATHER)), 0);
    assert_non_null(ds4_chat_add(&c, DS4_ROLE_USER, "Compare two cities.", 19));
    ds4_err err = {{0}};
    ds4_textbuf prompt, hist;
    ds4_textbuf_init(&prompt);
    ds4_textbuf_init(&hist);
    assert_int_equal(ds4_chat_render(&c, &prompt, &err), 0);

    ds4_dsml_opts o = {.thinking = think != DS4_THINK_NONE, .tools_active = 1};
    ds4_dsml_result r;
    memset(&r, 0, sizeof(r));
    assert_int_equal(ds4_dsml_parse(reply, strlen(reply), &o, &r), 0);
    assert_int_equal(r.status, DS4_DSML_OK);
    assert_int_equal(r.n_calls, 1);
    ds4_chat_msg *m = srv_chat_add_reply(&c, &r, true);
    assert_non_null(m);
    assert_null(m->raw_dsml); /* renders canonically */
    assert_int_equal(ds4_chat_render_history(&c, &hist, &err), 0);

    /* the rendered prompt is a byte prefix: the live prompt tokens stay */
    assert_true(hist.n > prompt.n);
    assert_memory_equal(hist.p, prompt.p, prompt.n);
    assert_int_equal(hist.n - prompt.n, strlen(want));
    assert_memory_equal(hist.p + prompt.n, want, strlen(want));

    ds4_dsml_result_free(&r);
    ds4_textbuf_free(&prompt);
    ds4_textbuf_free(&hist);
    ds4_chat_free(&c);
}

static void test_transcript_thinking(void **state) {
    (void)state;
    char reply[1024], want[1024];
    snprintf(reply, sizeof(reply), "Two cities.</think>Checking.%s", SAMPLED);
    /* the reasoning stays (tool context, §3.6), then content, canonical DSML, EOS */
    snprintf(want, sizeof(want), "Two cities.</think>Checking.%s" DS4_CHAT_EOS, CANONICAL);
    check_transcript(DS4_THINK_HIGH, reply, want);
}

static void test_transcript_no_thinking(void **state) {
    (void)state;
    char reply[1024], want[1024];
    snprintf(reply, sizeof(reply), "Checking.%s", SAMPLED);
    /* the prompt ends with </think> already */
    snprintf(want, sizeof(want), "Checking.%s" DS4_CHAT_EOS, CANONICAL);
    check_transcript(DS4_THINK_NONE, reply, want);
}

/* ------------------------------------------------------------ the plan */

typedef struct side {
    int32_t ids[16];
    int n;
    const char *text;
} side;

static srv_canon_plan plan(const side *live, const side *canon, int prompt, int *common) {
    const srv_canon_view v = {.live = live->ids, .n_live = live->n, .live_text = live->text,
                              .live_len = strlen(live->text), .canon = canon->ids, .n_canon = canon->n,
                              .canon_text = canon->text, .canon_len = strlen(canon->text), .prompt_tokens = prompt};
    return srv_canon_decide(&v, common);
}

static void test_plan(void **state) {
    (void)state;
    int common = -1;
    /* the canonical side: prompt "P" "Q" + reply "ab" "c" + EOS "$" */
    const side canon = {{1, 2, 10, 11, 99}, 5, "PQabc$"};

    /* identical tokens */
    assert_int_equal(plan(&canon, &canon, 2, &common), SRV_CANON_KEEP);
    assert_int_equal(common, 5);
    /* identical bytes, other tokens ("a" "bc" instead of "ab" "c") */
    const side same_bytes = {{1, 2, 20, 21, 99}, 5, "PQabc$"};
    assert_int_equal(plan(&same_bytes, &canon, 2, &common), SRV_CANON_KEEP);
    assert_int_equal(common, 2);
    /* only the EOS missing: the usual tool turn */
    const side no_eos = {{1, 2, 10, 11}, 4, "PQabc"};
    assert_int_equal(plan(&no_eos, &canon, 2, &common), SRV_CANON_EXTEND);
    assert_int_equal(common, 4);
    /* the same bytes without the EOS, spelled with other tokens */
    const side respelled = {{1, 2, 20, 21}, 4, "PQabc"};
    assert_int_equal(plan(&respelled, &canon, 2, &common), SRV_CANON_EXTEND_TEXT);
    assert_int_equal(common, 2);
    /* the sampled reply differs from the canonical one: rebuild */
    const side sampled = {{1, 2, 10, 12}, 4, "PQabX"};
    assert_int_equal(plan(&sampled, &canon, 2, &common), SRV_CANON_REBUILD);
    assert_int_equal(common, 3);
    /* ... unless the live state differs inside the prompt already */
    const side other_prompt = {{1, 3, 10, 12}, 4, "PRabX"};
    assert_int_equal(plan(&other_prompt, &canon, 2, &common), SRV_CANON_SKIP);
    assert_int_equal(common, 1);
    /* a divergence inside the prompt with the same bytes is still cheap */
    const side other_prompt_bytes = {{1, 30, 10, 11}, 4, "PQabc"};
    assert_int_equal(plan(&other_prompt_bytes, &canon, 2, &common), SRV_CANON_EXTEND_TEXT);
    /* a live state longer than the canonical one is never "extended" */
    const side longer = {{1, 2, 10, 11, 99, 7}, 6, "PQabc$x"};
    assert_int_equal(plan(&longer, &canon, 2, &common), SRV_CANON_REBUILD);
    assert_int_equal(common, 5);

    assert_string_equal(srv_canon_plan_name(SRV_CANON_REBUILD), "rebuild");
    assert_string_equal(srv_canon_plan_name(SRV_CANON_EXTEND_TEXT), "extend-text");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transcript_thinking),
        cmocka_unit_test(test_transcript_no_thinking),
        cmocka_unit_test(test_plan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
