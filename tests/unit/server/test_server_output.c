/* ds4-server output side: SSE framing and event order of the three APIs
 * (driven by the real streaming DSML parser), error bodies, usage, tool
 * memory, stop strings (INTERFACES.md §6.4–§6.11; the reference's §11.3
 * "streaming and wire shapes"). */
#include "test_util.h"

#include "server/jsonutil.h"
#include "server/job.h"
#include "server/stopstr.h"
#include "server/stream.h"
#include "server/toolmem.h"

/* ------------------------------------------------------------ a fake generation */

typedef struct run {
    srv_job *job;
    srv_stream st;
    ds4_dsml_stream *dsml;
    ds4_dsml_result res;
} run;

static void on_ev(void *ud, const ds4_dsml_event *ev) { srv_stream_event(&((run *)ud)->st, ev); }

static uint64_t det_state;
static void det_random(void *u, uint8_t *b, size_t n) {
    (void)u;
    for (size_t i = 0; i < n; i++) b[i] = (uint8_t)((det_state = det_state * 6364136223846793005ull + 1) >> 56);
}

/* Feed `text` in pieces of `step` bytes through the DSML parser into an API
 * stream; returns the bytes the client would have received. */
static char *generate(srv_api api, bool stream, bool tools, bool summary, const char *text, size_t step, srv_finish f,
                      run *r) {
    memset(r, 0, sizeof(*r));
    r->job = srv_job_new();
    r->job->req.api = api;
    r->job->req.stream = stream;
    r->job->req.include_usage = true;
    r->job->req.summary = summary;
    r->job->req.model = strdup("deepseek-v4-flash");
    r->job->req.think = DS4_THINK_HIGH;
    srv_stream_init(&r->st, r->job, 7);
    srv_stream_begin(&r->st, 100, 60);
    ds4_dsml_opts o = {.thinking = 1, .tools_active = tools, .id_prefix = api == SRV_API_MESSAGES ? "toolu_" : "call_",
                       .random = det_random};
    r->dsml = ds4_dsml_stream_new(&o, on_ev, r);
    for (size_t i = 0; i < strlen(text); i += step) {
        size_t n = strlen(text) - i < step ? strlen(text) - i : step;
        ds4_dsml_stream_feed(r->dsml, text + i, n);
    }
    ds4_dsml_stream_finish(r->dsml, &r->res);
    srv_outcome oc = {.finish = f, .res = &r->res, .prompt_tokens = 100, .cached_tokens = 60, .completion_tokens = 20};
    srv_stream_finish(&r->st, &oc);
    srv_job_done(r->job);
    return strndup(r->job->out.p ? r->job->out.p : "", r->job->out.n);
}

static void run_free(run *r, char *out) {
    free(out);
    ds4_dsml_result_free(&r->res);
    ds4_dsml_stream_free(r->dsml);
    srv_stream_free(&r->st);
    srv_job_unref(r->job);
}

static const char *find(const char *s, const char *needle) {
    const char *p = strstr(s, needle);
    if (!p) fail_msg("'%s' not found in:\n%s", needle, s);
    return p;
}

static const char *TOOL_TEXT =
    "We need a shell.</think>Running it.\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"bash\">\n"
    "<｜DSML｜parameter name=\"command\" string=\"true\">echo partial & done</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";

/* ------------------------------------------------------------ OpenAI */

static void test_openai_stream_order(void **state) {
    (void)state;
    for (size_t step = 1; step <= 7; step += 3) {
        run r;
        char *out = generate(SRV_API_CHAT, true, true, false, TOOL_TEXT, step, SRV_FINISH_TOOL_CALLS, &r);
        const char *role = find(out, "\"delta\":{\"role\":\"assistant\"}");
        const char *reas = find(out, "\"reasoning_content\":\"W");
        const char *cont = find(out, "\"content\":\"R");
        const char *call = find(out, "\"tool_calls\":[{\"index\":0,\"id\":\"call_");
        const char *fin = find(out, "\"finish_reason\":\"tool_calls\"");
        const char *usage = find(out, "\"choices\":[],\"usage\":{\"prompt_tokens\":100,\"completion_tokens\":20,\"total_tokens\":120,"
                                      "\"prompt_tokens_details\":{\"cached_tokens\":60,\"cache_write_tokens\":40}}");
        const char *done = find(out, "data: [DONE]\n\n");
        assert_true(role < reas && reas < cont && cont < call && call < fin && fin < usage && usage < done);
        assert_null(strstr(out, "think>"));
        assert_null(strstr(out, "DSML"));
        assert_null(strstr(out, "&amp"));
        assert_null(strstr(out, "\\n\\n")); /* the separator before the block is not content */
        /* argument fragments concatenate to the compact object */
        char args[256] = "";
        for (const char *p = out; (p = strstr(p, "\"function\":{\"arguments\":\"")); p++) {
            p += strlen("\"function\":{\"arguments\":\"");
            const char *e = strstr(p, "\"}}]}");
            strncat(args, p, (size_t)(e - p));
        }
        assert_string_equal(args, "{\\\"command\\\":\\\"echo partial & done\\\"}");
        /* every event is one data line */
        for (const char *p = out; *p; p = strstr(p, "\n\n") + 2) assert_true(strncmp(p, "data: ", 6) == 0);
        run_free(&r, out);
    }
}

static void test_openai_body(void **state) {
    (void)state;
    run r;
    char *out = generate(SRV_API_CHAT, false, true, false, TOOL_TEXT, 5, SRV_FINISH_TOOL_CALLS, &r);
    cJSON *j = cJSON_Parse(out);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "id")->valuestring, "chatcmpl-7");
    cJSON *m = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), "message");
    assert_string_equal(cJSON_GetObjectItem(m, "content")->valuestring, "Running it.");
    assert_string_equal(cJSON_GetObjectItem(m, "reasoning_content")->valuestring, "We need a shell.");
    cJSON *tc = cJSON_GetArrayItem(cJSON_GetObjectItem(m, "tool_calls"), 0);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(tc, "function"), "arguments")->valuestring,
                        "{\"command\":\"echo partial & done\"}");
    assert_int_equal(strlen(cJSON_GetObjectItem(tc, "id")->valuestring), 5 + 32);
    assert_true(out[strlen(out) - 1] == '\n');
    cJSON_Delete(j);
    run_free(&r, out);
}

/* ------------------------------------------------------------ Anthropic */

static void test_anthropic_stream_order(void **state) {
    (void)state;
    run r;
    char *out = generate(SRV_API_MESSAGES, true, true, false, TOOL_TEXT, 3, SRV_FINISH_TOOL_CALLS, &r);
    const char *start = find(out, "event: message_start\ndata: {\"type\":\"message_start\"");
    find(out, "\"usage\":{\"input_tokens\":0,\"output_tokens\":0,\"cache_read_input_tokens\":60,\"cache_creation_input_tokens\":40}");
    const char *think = find(out, "\"type\":\"thinking_delta\"");
    const char *sig = find(out, "\"type\":\"signature_delta\"");
    const char *text = find(out, "\"type\":\"text_delta\",\"text\":\"Run");
    const char *tool = find(out, "\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_");
    const char *json = find(out, "\"type\":\"input_json_delta\"");
    const char *delta = find(out, "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":20}}");
    const char *stop = find(out, "event: message_stop\n");
    assert_true(start < think && think < sig && sig < text && text < tool && tool < json && json < delta && delta < stop);
    assert_null(strstr(out, "DSML"));
    /* exactly one tool_use block; block indexes 0 (thinking) 1 (text) 2 (tool) */
    assert_null(strstr(strstr(out, "\"tool_use\"") + 1, "\"type\":\"tool_use\""));
    find(out, "{\"type\":\"content_block_start\",\"index\":2,");
    run_free(&r, out);
    /* thinking only: an empty text block is added */
    out = generate(SRV_API_MESSAGES, true, false, false, "just thinking", 4, SRV_FINISH_LENGTH, &r);
    find(out, "\"content_block\":{\"type\":\"text\",\"text\":\"\"}");
    find(out, "\"stop_reason\":\"max_tokens\"");
    run_free(&r, out);
    out = generate(SRV_API_MESSAGES, false, false, false, "just thinking", 4, SRV_FINISH_LENGTH, &r);
    find(out, "\"content\":[{\"type\":\"thinking\",\"thinking\":\"just thinking\",\"signature\":\"msg_");
    find(out, "{\"type\":\"text\",\"text\":\"\"}]");
    run_free(&r, out);
}

/* ------------------------------------------------------------ Responses */

static void test_responses_lifecycle(void **state) {
    (void)state;
    run r;
    char *out = generate(SRV_API_RESPONSES, true, true, true, TOOL_TEXT, 2, SRV_FINISH_TOOL_CALLS, &r);
    /* sequence numbers count up from 0, each payload starts with type then sequence_number */
    int expect = 0;
    for (const char *p = out; (p = strstr(p, "data: {\"type\":\"")); p++) {
        const char *q = strstr(p, "\"sequence_number\":");
        assert_non_null(q);
        assert_int_equal(atoi(q + 18), expect);
        expect++;
    }
    assert_true(expect > 10);
    const char *created = find(out, "\"type\":\"response.created\"");
    const char *rs = find(out, "\"type\":\"response.reasoning_summary_text.delta\"");
    const char *rsdone = find(out, "\"type\":\"response.output_item.done\",\"sequence_number\"");
    const char *msg = find(out, "\"type\":\"response.output_text.delta\"");
    const char *fc = find(out, "\"item\":{\"id\":\"fc_");
    const char *args = find(out, "\"type\":\"response.function_call_arguments.done\"");
    const char *done = find(out, "\"type\":\"response.completed\"");
    assert_true(created < rs && rs < rsdone && rsdone < msg && msg < fc && fc < args && args < done);
    find(out, "\"usage\":{\"input_tokens\":100,\"input_tokens_details\":{\"cached_tokens\":60,\"cache_write_tokens\":40},"
              "\"output_tokens\":20,\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":120}");
    run_free(&r, out);
    /* the terminal event follows the outcome */
    out = generate(SRV_API_RESPONSES, true, false, false, "x</think>partial", 3, SRV_FINISH_LENGTH, &r);
    find(out, "\"type\":\"response.incomplete\"");
    find(out, "\"incomplete_details\":{\"reason\":\"max_tokens\"}");
    assert_null(strstr(out, "reasoning_summary")); /* no summary requested */
    run_free(&r, out);
    out = generate(SRV_API_RESPONSES, false, false, false, "x</think>oops", 3, SRV_FINISH_ERROR, &r);
    find(out, "\"status\":\"failed\"");
    find(out, "\"error\":{\"code\":\"server_error\"");
    run_free(&r, out);
}

/* ------------------------------------------------------------ errors and framing */

static void test_error_shapes(void **state) {
    (void)state;
    srv_error e = {.status = 400, .ctx_exceeded = true, .n_prompt = 40000, .n_ctx = 32768};
    snprintf(e.msg, sizeof(e.msg), "Prompt has 40000 tokens, but the configured context size is 32768 tokens");
    size_t n = 0;
    char *b = srv_error_body(SRV_API_CHAT, &e, &n);
    assert_string_equal(b, "{\"error\":{\"message\":\"Prompt has 40000 tokens, but the configured context size is 32768 tokens\","
                           "\"type\":\"invalid_request_error\",\"param\":\"messages\",\"code\":\"context_length_exceeded\","
                           "\"n_prompt_tokens\":40000,\"n_ctx\":32768}}\n");
    free(b);
    b = srv_error_body(SRV_API_MESSAGES, &e, &n);
    assert_string_equal(b, "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":\"Prompt has 40000 tokens, "
                           "but the configured context size is 32768 tokens\",\"n_prompt_tokens\":40000,\"n_ctx\":32768}}\n");
    free(b);
    srv_error busy = {.status = 429};
    snprintf(busy.msg, sizeof(busy.msg), "server busy");
    b = srv_error_body(SRV_API_MESSAGES, &busy, &n);
    assert_non_null(strstr(b, "\"rate_limit_error\""));
    free(b);
    b = srv_error_sse(SRV_API_RESPONSES, "prefill failed", &n);
    assert_string_equal(b, "event: error\ndata: {\"error\":{\"message\":\"prefill failed\",\"type\":\"server_error\"}}\n\n");
    free(b);
    b = srv_error_sse(SRV_API_MESSAGES, "prefill failed", &n);
    assert_string_equal(b, "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"prefill failed\"}}\n\n");
    free(b);
}

static void test_sse_framing_and_utf8(void **state) {
    (void)state;
    srv_job *j = srv_job_new();
    cJSON *o = cJSON_CreateObject();
    srv_json_add_str(o, "t", "a\xff" "b\xe2\x82", 5); /* invalid byte, truncated sequence */
    assert_int_equal(srv_sse_data(j, o), 0);
    assert_int_equal(srv_sse_event(j, "ping", o), 0);
    assert_int_equal(srv_sse_comment(j, "prefill"), 0);
    assert_int_equal(srv_sse_raw(j, "[DONE]"), 0);
    cJSON_Delete(o);
    assert_string_equal(j->out.p, "data: {\"t\":\"a\xef\xbf\xbd" "b\xef\xbf\xbd\"}\n\n"
                                  "event: ping\ndata: {\"t\":\"a\xef\xbf\xbd" "b\xef\xbf\xbd\"}\n\n"
                                  ": prefill\n\n"
                                  "data: [DONE]\n\n");
    srv_job_cancel(j); /* a gone client refuses further writes */
    assert_int_equal(srv_sse_raw(j, "x"), -1);
    srv_job_unref(j);
}

/* ------------------------------------------------------------ tool memory */

static void test_tool_memory(void **state) {
    (void)state;
    srv_tool_memory *m = srv_toolmem_new(3);
    const char *turn1[] = {"call_a", "call_b"};
    const char *turn2[] = {"call_c"};
    assert_int_equal(srv_toolmem_put(m, turn1, 2, "BLOCK1", 6, false), 0);
    assert_int_equal(srv_toolmem_put(m, turn2, 1, "BLOCK2", 6, false), 0);
    size_t len = 0;
    int missing = 0;
    char *b = srv_toolmem_replay(m, turn1, 2, &len, &missing, NULL);
    assert_non_null(b);
    assert_string_equal(b, "BLOCK1");
    free(b);
    const char *mixed[] = {"call_a", "call_c"};
    assert_null(srv_toolmem_replay(m, mixed, 2, &len, &missing, NULL)); /* two different blocks */
    const char *unknown[] = {"call_a", "call_zz"};
    assert_null(srv_toolmem_replay(m, unknown, 2, &len, &missing, NULL));
    assert_int_equal(missing, 1);
    /* beyond 3 ids the least recently used go first; lookups count as use:
     * the order is now a (last looked up), c, b */
    const char *turn3[] = {"call_d"};
    srv_toolmem_put(m, turn3, 1, "BLOCK3", 6, false);
    assert_int_equal(srv_toolmem_count(m), 3);
    assert_false(srv_toolmem_has(m, "call_b"));
    assert_true(srv_toolmem_has(m, "call_a") && srv_toolmem_has(m, "call_c") && srv_toolmem_has(m, "call_d"));
    srv_toolmem_free(m);
}

/* ------------------------------------------------------------ stop strings */

static void test_stop_strings(void **state) {
    (void)state;
    const char *stops[] = {"three", "STOP", ""};
    srv_stopstr s;
    srv_stopstr_init(&s, stops, 3);
    assert_int_equal((int)srv_stopstr_hold(&s), 4); /* max_len - 1 */
    ds4_textbuf out;
    ds4_textbuf_init(&out);
    const char *text = "one two STthree STOP four";
    size_t n = 0;
    for (size_t i = 0; text[i] && !s.hit; i++) {
        const char *o = srv_stopstr_feed(&s, text + i, 1, &n);
        ds4_textbuf_append(&out, o, n);
        if (!s.hit) assert_int_equal((int)(i + 1 - out.n), (int)(i + 1 < 4 ? i + 1 : 4)); /* 4 bytes held back */
    }
    assert_true(s.hit);
    assert_string_equal(out.p, "one two ST"); /* "three" comes before "STOP" */
    assert_int_equal((int)srv_stopstr_flush(&s, &n)[0], 0);
    srv_stopstr_free(&s);
    /* no match: everything comes out by the flush; UTF-8 is never split */
    const char *st2[] = {"zzzz"};
    srv_stopstr_init(&s, st2, 1);
    ds4_textbuf_clear(&out);
    const char *o = srv_stopstr_feed(&s, "ab\xe2\x82\xac", 5, &n);
    ds4_textbuf_append(&out, o, n);
    assert_int_equal((int)n, 2); /* "ab": the euro sign is held whole */
    o = srv_stopstr_flush(&s, &n);
    ds4_textbuf_append(&out, o, n);
    assert_string_equal(out.p, "ab\xe2\x82\xac");
    srv_stopstr_free(&s);
    /* no stop strings: pass-through */
    srv_stopstr_init(&s, NULL, 0);
    o = srv_stopstr_feed(&s, "abc", 3, &n);
    assert_int_equal((int)n, 3);
    srv_stopstr_free(&s);
    ds4_textbuf_free(&out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_openai_stream_order),
        cmocka_unit_test(test_openai_body),
        cmocka_unit_test(test_anthropic_stream_order),
        cmocka_unit_test(test_responses_lifecycle),
        cmocka_unit_test(test_error_shapes),
        cmocka_unit_test(test_sse_framing_and_utf8),
        cmocka_unit_test(test_tool_memory),
        cmocka_unit_test(test_stop_strings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
