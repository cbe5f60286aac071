/* ds4-server request normalization → ds4_chat → rendered prompt
 * (INTERFACES.md §3, §6.3–§6.7; the reference's §11.3 "rendering and
 * thinking", "tool schemas", "continuation protocols"), and the JSON reader
 * limits.  No model and no tokenizer: srv_request_parse renders only. */
#include "test_util.h"

#include "server/jsonutil.h"
#include "server/request.h"
#include "server/toolmem.h"

#define BOS "<｜begin▁of▁sentence｜>"

typedef struct parsed {
    srv_request r;
    srv_error e;
    int rc;
} parsed;

static parsed *parse_ctx(srv_api api, const char *body, long ctx, srv_tool_memory *tm) {
    static parsed p;
    srv_request_init(&p.r);
    memset(&p.e, 0, sizeof(p.e));
    srv_parse_ctx pc = {.ctx = ctx, .toolmem = tm};
    p.rc = srv_request_parse(api, body, strlen(body), &pc, &p.r, &p.e);
    return &p;
}

static parsed *parse(srv_api api, const char *body) { return parse_ctx(api, body, 32768, NULL); }

/* The rendered prompt of a body that must parse. */
static char *render(srv_api api, const char *body) {
    parsed *p = parse(api, body);
    if (p->rc) fail_msg("parse failed: %d %s", p->e.status, p->e.msg);
    char *s = strndup(p->r.prompt.p ? p->r.prompt.p : "", p->r.prompt.n);
    srv_request_free(&p->r);
    return s;
}

static void expect_error(srv_api api, const char *body, int status, const char *needle) {
    parsed *p = parse(api, body);
    assert_int_equal(p->rc, -1);
    assert_int_equal(p->e.status, status);
    if (!strstr(p->e.msg, needle)) fail_msg("error '%s' lacks '%s'", p->e.msg, needle);
    srv_request_free(&p->r);
}

static void assert_contains(const char *s, const char *needle) {
    if (!strstr(s, needle)) fail_msg("'%s' not found in:\n%s", needle, s);
}

/* ------------------------------------------------------------ defaults, thinking */

static void test_defaults(void **state) {
    (void)state;
    parsed *p = parse(SRV_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]}");
    assert_int_equal(p->rc, 0);
    assert_int_equal(p->r.think, DS4_THINK_HIGH);
    assert_true(p->r.sampling.temperature == 1.0f);
    assert_true(p->r.sampling.top_p == 1.0f);
    assert_int_equal(p->r.sampling.top_k, 0);
    assert_true(p->r.sampling.min_p == 0.05f);
    assert_int_equal(p->r.max_tokens, -1);
    assert_string_equal(p->r.model, "deepseek-v4-flash");
    assert_false(p->r.stream);
    srv_request_free(&p->r);
}

static ds4_think_mode mode_of(srv_api api, const char *body, long ctx) {
    parsed *p = parse_ctx(api, body, ctx, NULL);
    if (p->rc) fail_msg("parse failed: %s (%s)", p->e.msg, body);
    ds4_think_mode m = p->r.think;
    srv_request_free(&p->r);
    return m;
}

#define MSGS "\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]"

static void test_effort_mapping(void **state) {
    (void)state;
    const char *high[] = {"low", "medium", "high", "xhigh", "minimal"};
    char body[256];
    for (int i = 0; i < 5; i++) {
        snprintf(body, sizeof(body), "{" MSGS ",\"reasoning_effort\":\"%s\"}", high[i]);
        assert_int_equal(mode_of(SRV_API_CHAT, body, 32768), DS4_THINK_HIGH);
    }
    /* max needs ctx >= 393216 */
    assert_int_equal(mode_of(SRV_API_CHAT, "{" MSGS ",\"reasoning_effort\":\"max\"}", 32768), DS4_THINK_HIGH);
    assert_int_equal(mode_of(SRV_API_CHAT, "{" MSGS ",\"reasoning_effort\":\"max\"}", 393216), DS4_THINK_MAX);
    assert_int_equal(mode_of(SRV_API_CHAT, "{" MSGS ",\"reasoning_effort\":\"none\"}", 32768), DS4_THINK_NONE);
    expect_error(SRV_API_CHAT, "{" MSGS ",\"reasoning_effort\":\"extreme\"}", 400, "extreme");
    assert_int_equal(mode_of(SRV_API_MESSAGES, "{" MSGS ",\"thinking\":{\"type\":\"disabled\",\"budget_tokens\":100}}", 32768),
                     DS4_THINK_NONE);
    assert_int_equal(mode_of(SRV_API_CHAT, "{" MSGS ",\"thinking\":true}", 32768), DS4_THINK_HIGH);
    assert_int_equal(mode_of(SRV_API_CHAT, "{" MSGS ",\"think\":false}", 32768), DS4_THINK_NONE);
    assert_int_equal(mode_of(SRV_API_MESSAGES, "{" MSGS ",\"output_config\":{\"effort\":\"max\"}}", 400000), DS4_THINK_MAX);
    /* aliases apply only without an explicit control; effort is not explicit */
    assert_int_equal(mode_of(SRV_API_CHAT, "{" MSGS ",\"model\":\"deepseek-chat\"}", 32768), DS4_THINK_NONE);
    assert_int_equal(mode_of(SRV_API_CHAT, "{" MSGS ",\"model\":\"deepseek-chat\",\"reasoning_effort\":\"high\"}", 32768),
                     DS4_THINK_NONE);
    assert_int_equal(mode_of(SRV_API_CHAT, "{" MSGS ",\"model\":\"deepseek-chat\",\"thinking\":true}", 32768), DS4_THINK_HIGH);
    assert_int_equal(mode_of(SRV_API_RESPONSES, "{\"input\":\"x\",\"model\":\"deepseek-chat\",\"reasoning\":{\"effort\":\"high\"}}", 32768),
                     DS4_THINK_HIGH);
    assert_int_equal(mode_of(SRV_API_RESPONSES, "{\"input\":\"x\",\"reasoning\":{\"effort\":\"none\"}}", 32768), DS4_THINK_NONE);
}

static void test_think_max_and_plain_prompts(void **state) {
    (void)state;
    parsed *p = parse_ctx(SRV_API_CHAT,
                          "{\"reasoning_effort\":\"max\",\"messages\":[{\"role\":\"system\",\"content\":\"You are terse.\"},"
                          "{\"role\":\"user\",\"content\":\"Hello\"}]}",
                          393216, NULL);
    assert_int_equal(p->rc, 0);
    const char *s = p->r.prompt.p;
    assert_true(strncmp(s, BOS "Reasoning Effort: Absolute maximum", strlen(BOS) + 34) == 0);
    assert_contains(s, "left unchecked.\n\nYou are terse.<｜User｜>Hello<｜Assistant｜><think>");
    assert_null(strstr(s, "</think>"));
    srv_request_free(&p->r);
    char *t = render(SRV_API_CHAT, "{\"think\":false," MSGS "}");
    assert_string_equal(t, BOS "<｜User｜>Hello<｜Assistant｜></think>");
    free(t);
}

static void test_reasoning_retention(void **state) {
    (void)state;
    /* without tools old reasoning is dropped */
    char *t = render(SRV_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"first\"},"
                                   "{\"role\":\"assistant\",\"content\":\"first answer\",\"reasoning_content\":\"hmm\"},"
                                   "{\"role\":\"user\",\"content\":\"second\"}]}");
    assert_string_equal(t, BOS "<｜User｜>first<｜Assistant｜></think>first answer<｜end▁of▁sentence｜><｜User｜>second<｜Assistant｜><think>");
    free(t);
    /* with tool history it is kept */
    t = render(SRV_API_CHAT,
               "{\"messages\":[{\"role\":\"user\",\"content\":\"run pwd\"},"
               "{\"role\":\"assistant\",\"content\":\"\",\"reasoning_content\":\"tool reasoning\",\"tool_calls\":[{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"bash\",\"arguments\":\"{\\\"command\\\":\\\"pwd\\\"}\"}}]},"
               "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"/tmp\"}]}");
    assert_contains(t, "<think>tool reasoning</think>\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"bash\">\n"
                       "<｜DSML｜parameter name=\"command\" string=\"true\">pwd</｜DSML｜parameter>");
    assert_contains(t, "<｜User｜><tool_result>/tmp</tool_result><｜Assistant｜><think>");
    free(t);
}

static void test_tools_block_order_and_raw_schema(void **state) {
    (void)state;
    char *t = render(SRV_API_CHAT,
                     "{\"messages\":[{\"role\":\"system\",\"content\":\"SYSTEM TEXT\"},{\"role\":\"user\",\"content\":\"hi\"}],"
                     "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"bash\",\"description\":\"Run \\\"it\\\" é\","
                     "\"strict\":true,\"parameters\": {\"type\": \"object\",\n \"properties\": {\"n\": {\"maximum\": 1.50}}}}}]}");
    const char *tools = strstr(t, "## Tools");
    const char *line = strstr(t, "{\"name\":\"bash\",\"description\":\"Run \\\"it\\\" é\",\"parameters\":{\"type\": \"object\",\n \"properties\": {\"n\": {\"maximum\": 1.50}}}}");
    const char *sys = strstr(t, "SYSTEM TEXT<｜User｜>hi");
    assert_non_null(tools);
    assert_non_null(line);
    assert_non_null(sys);
    assert_true(tools < line && line < sys);
    free(t);
    /* tool_choice none: no tools block */
    t = render(SRV_API_CHAT, "{" MSGS ",\"tool_choice\":\"none\",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]}");
    assert_null(strstr(t, "## Tools"));
    free(t);
}

static void test_anthropic_normalization(void **state) {
    (void)state;
    /* billing header dropped, content before role, ids registered, results escaped */
    parsed *p = parse(SRV_API_MESSAGES,
                      "{\"system\":[{\"type\":\"text\",\"text\":\"x-anthropic-billing-header: 1\"},{\"type\":\"text\",\"text\":\"Sys A\"},\"Sys B\"],"
                      "\"messages\":[{\"role\":\"user\",\"content\":\"run pwd\"},"
                      "{\"content\":[{\"type\":\"thinking\",\"thinking\":\"plan\",\"signature\":\"s\"},{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"bash\",\"input\":{\"command\":\"pwd\",\"n\":1.50}}],\"role\":\"assistant\"},"
                      "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"toolu_1\",\"content\":[{\"type\":\"text\",\"text\":\"a</tool_result>b <<< >>>\"}]}]}],"
                      "\"tools\":[{\"name\":\"bash\",\"input_schema\":{\"type\":\"object\"}}]}");
    assert_int_equal(p->rc, 0);
    const char *s = p->r.prompt.p;
    assert_null(strstr(s, "x-anthropic"));
    assert_contains(s, "Sys A\nSys B<｜User｜>run pwd");
    assert_contains(s, "{\"name\":\"bash\",\"input_schema\":{\"type\":\"object\"}}");
    assert_contains(s, "<think>plan</think>\n\n<｜DSML｜tool_calls>");
    assert_contains(s, "<｜DSML｜parameter name=\"n\" string=\"false\">1.50</｜DSML｜parameter>");
    assert_contains(s, "<tool_result>a&lt;/tool_result>b <<< >>></tool_result>");
    assert_true(srv_chat_has_call_id(&p->r.chat, "toolu_1"));
    assert_int_equal(p->r.n_live_ids, 0); /* the call was replayed */
    assert_int_equal(p->r.tail_from, 2);  /* user, assistant, the results (the system message is last) */
    srv_request_free(&p->r);
}

static void test_anthropic_live_ids(void **state) {
    (void)state;
    /* a tool result whose call is not in the request needs live state */
    parsed *p = parse(SRV_API_MESSAGES, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"toolu_9\",\"content\":\"x\"}]}]}");
    assert_int_equal(p->rc, -1);
    assert_int_equal(p->e.status, 400);
    assert_non_null(strstr(p->e.msg, "Anthropic continuation state is not available for tool_use_id toolu_9"));
    srv_request_free(&p->r);
}

static void test_responses_items(void **state) {
    (void)state;
    /* namespaces: prompt name NS+name, recorded for output; hosted tool_search */
    parsed *p = parse(SRV_API_RESPONSES,
                      "{\"instructions\":\"Be brief.\",\"tools\":[{\"type\":\"namespace\",\"name\":\"mcp__perplexity__\",\"tools\":[{\"name\":\"perplexity_search\",\"parameters\":{\"type\":\"object\"}}]},"
                      "{\"type\":\"tool_search\"}],"
                      "\"input\":[{\"role\":\"developer\",\"content\":\"dev\"},{\"role\":\"user\",\"content\":[{\"type\":\"input_text\",\"text\":\"find\"}]},"
                      "{\"type\":\"reasoning\",\"summary\":[{\"type\":\"summary_text\",\"text\":\"plan\"}]},"
                      "{\"type\":\"function_call\",\"namespace\":\"mcp__perplexity__\",\"name\":\"perplexity_search\",\"call_id\":\"call_1\",\"arguments\":\"{\\\"q\\\":\\\"x\\\"}\"},"
                      "{\"type\":\"function_call_output\",\"call_id\":\"call_1\",\"output\":[{\"type\":\"input_text\",\"text\":\"result\"}]},"
                      "{\"type\":\"compaction\",\"encrypted_content\":\"zz\"}]}");
    assert_int_equal(p->rc, 0);
    const char *s = p->r.prompt.p;
    assert_contains(s, "{\"name\":\"mcp__perplexity__perplexity_search\",\"description\":\"\",\"parameters\":{\"type\":\"object\"}}");
    assert_contains(s, "{\"name\":\"tool_search\",\"description\":\"Search available tools.\",\"parameters\":{\"type\":\"object\",\"properties\":{}}}");
    assert_contains(s, "Be brief.\n\ndev<｜User｜>find<｜Assistant｜><think>plan</think>");
    assert_contains(s, "<｜DSML｜invoke name=\"mcp__perplexity__perplexity_search\">");
    assert_contains(s, "<｜User｜><tool_result>result</tool_result><｜Assistant｜><think>");
    assert_int_equal(p->r.n_ns, 1);
    assert_string_equal(p->r.ns[0].prompt_name, "mcp__perplexity__perplexity_search");
    assert_string_equal(p->r.ns[0].ns, "mcp__perplexity__");
    assert_true(p->r.hosted_tool_search);
    assert_int_equal(p->r.n_tail_ids, 1);
    assert_string_equal(p->r.tail_ids[0], "call_1");
    srv_request_free(&p->r);
    /* a user function named tool_search is not the hosted tool */
    p = parse(SRV_API_RESPONSES, "{\"input\":\"x\",\"tools\":[{\"type\":\"function\",\"name\":\"tool_search\"}]}");
    assert_int_equal(p->rc, 0);
    assert_false(p->r.hosted_tool_search);
    srv_request_free(&p->r);
    /* a trailing reasoning item becomes an empty assistant turn (no generation prefix) */
    char *t = render(SRV_API_RESPONSES, "{\"input\":[{\"role\":\"user\",\"content\":\"q\"},{\"type\":\"reasoning\",\"summary\":[]}]}");
    assert_string_equal(t, BOS "<｜User｜>q<｜Assistant｜><think></think><｜end▁of▁sentence｜>");
    free(t);
    expect_error(SRV_API_RESPONSES, "{\"input\":[{\"type\":\"item_reference\",\"id\":\"x\"}]}", 400, "item_reference");
    expect_error(SRV_API_RESPONSES, "{\"input\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_image\"}]}]}", 400, "input_image");
    expect_error(SRV_API_RESPONSES, "{\"input\":\"x\",\"tool_choice\":\"required\"}", 400, "tool_choice=required not supported");
    expect_error(SRV_API_RESPONSES, "{\"input\":\"x\",\"previous_response_id\":\"r\"}", 400,
                 "previous_response_id is not supported; replay full input instead");
}

static void test_completions_render(void **state) {
    (void)state;
    char *t = render(SRV_API_COMPLETIONS, "{\"prompt\":[\"PROMPT\",\"ignored\"]}");
    assert_string_equal(t, BOS "You are a helpful assistant<｜User｜>PROMPT<｜Assistant｜><think>");
    free(t);
    expect_error(SRV_API_COMPLETIONS, "{\"max_tokens\":3}", 400, "missing prompt");
}

static void test_field_errors_and_clamps(void **state) {
    (void)state;
    expect_error(SRV_API_CHAT, "{}", 400, "missing messages");
    expect_error(SRV_API_CHAT, "{\"messages\":[{\"role\":null}]}", 400, "role");
    expect_error(SRV_API_CHAT, "{" MSGS ",\"max_tokens\":\"5\"}", 400, "max_tokens");
    expect_error(SRV_API_CHAT, "{" MSGS ",\"stop\":[\"a\",1]}", 400, "stop");
    expect_error(SRV_API_CHAT, "not json", 400, "invalid JSON request");
    parsed *p = parse(SRV_API_CHAT, "{" MSGS ",\"max_tokens\":-4,\"max_completion_tokens\":9,\"top_k\":1e30,\"stop\":[\"\",\"END\"],\"stream\":true,\"stream_options\":{\"include_usage\":true}}");
    assert_int_equal(p->rc, 0);
    assert_int_equal(p->r.max_tokens, 0);
    assert_int_equal(p->r.sampling.top_k, 2147483647);
    assert_int_equal(p->r.n_stops, 1);
    assert_string_equal(p->r.stops[0], "END");
    assert_true(p->r.stream && p->r.include_usage);
    srv_request_free(&p->r);
    /* unknown roles are dropped, a missing role is user */
    char *t = render(SRV_API_CHAT, "{\"messages\":[{\"role\":\"wizard\",\"content\":\"zap\"},{\"content\":\"hi\"}]}");
    assert_string_equal(t, BOS "<｜User｜>hi<｜Assistant｜><think>");
    free(t);
}

static void test_json_depth(void **state) {
    (void)state;
    char buf[1200];
    for (int depth = 255; depth <= 257; depth++) {
        /* the body object is level 1, the array nest adds depth-1 levels */
        int n = snprintf(buf, sizeof(buf), "{\"x\":");
        for (int i = 0; i < depth - 1; i++) buf[n++] = '[';
        for (int i = 0; i < depth - 1; i++) buf[n++] = ']';
        buf[n++] = '}';
        buf[n] = 0;
        cJSON *j = srv_json_parse(buf, (size_t)n);
        if (depth <= 256) assert_non_null(j);
        else assert_null(j);
        cJSON_Delete(j);
    }
    assert_null(srv_json_parse("{\"a\":\"\xff\"}", 9)); /* not UTF-8 */
    assert_null(srv_json_parse("{} {}", 5));
}

static void test_spans(void **state) {
    (void)state;
    const char *body = "{\"a\" : [ 1 , {\"b\": [1.50, \"x\"]} , \"s\" ], \"c\":{\"d\":  1e3}}";
    srv_span root = {body, strlen(body)};
    srv_span a = srv_span_member(root, "a");
    srv_span e1 = srv_span_index(a, 1);
    assert_int_equal((int)e1.n, (int)strlen("{\"b\": [1.50, \"x\"]}"));
    assert_memory_equal(e1.p, "{\"b\": [1.50, \"x\"]}", e1.n);
    srv_span d = srv_span_member(srv_span_member(root, "c"), "d");
    assert_memory_equal(d.p, "1e3", 3);
    int n = 0;
    srv_span *v = srv_span_elements(a, &n);
    assert_int_equal(n, 3);
    assert_memory_equal(v[2].p, "\"s\"", 3);
    free(v);
    assert_null(srv_span_member(root, "zz").p);
    assert_null(srv_span_index(a, 3).p);
}

static void test_replay_from_tool_memory(void **state) {
    (void)state;
    srv_tool_memory *tm = srv_toolmem_new(100);
    const char *ids[] = {"call_a"};
    const char *raw = "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"bash\">\n<｜DSML｜parameter name=\"command\" string=\"true\">ls  -la</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
    assert_int_equal(srv_toolmem_put(tm, ids, 1, raw, strlen(raw), false), 0);
    const char *body = "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"bash\",\"arguments\":\"{\\\"command\\\":\\\"ls -la\\\"}\"}}]},{\"role\":\"tool\",\"tool_call_id\":\"call_a\",\"content\":\"ok\"}]}";
    parsed *p = parse_ctx(SRV_API_CHAT, body, 32768, tm);
    assert_int_equal(p->rc, 0);
    assert_contains(p->r.prompt.p, "ls  -la</｜DSML｜parameter>"); /* the sampled bytes, not the canonical form */
    assert_int_equal(p->r.replay_mem, 1);
    srv_request_free(&p->r);
    p = parse_ctx(SRV_API_CHAT, body, 32768, NULL); /* replay disabled: canonical */
    assert_contains(p->r.prompt.p, "ls -la</｜DSML｜parameter>");
    srv_request_free(&p->r);
    srv_toolmem_free(tm);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_effort_mapping),
        cmocka_unit_test(test_think_max_and_plain_prompts),
        cmocka_unit_test(test_reasoning_retention),
        cmocka_unit_test(test_tools_block_order_and_raw_schema),
        cmocka_unit_test(test_anthropic_normalization),
        cmocka_unit_test(test_anthropic_live_ids),
        cmocka_unit_test(test_responses_items),
        cmocka_unit_test(test_completions_render),
        cmocka_unit_test(test_field_errors_and_clamps),
        cmocka_unit_test(test_json_depth),
        cmocka_unit_test(test_spans),
        cmocka_unit_test(test_replay_from_tool_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
