/* ds4-server — OpenAI chat completions and completions responses
 * (INTERFACES.md §6.4.2, §6.4.3, §6.5). */
#include <stdlib.h>
#include <string.h>

#include "server/jsonutil.h"
#include "server/stream.h"

static bool is_chat(const srv_stream *s) { return s->rq->api == SRV_API_CHAT; }

/* A chunk skeleton: id, object, created, model, choices[0] (returned). */
static cJSON *chunk(srv_stream *s, cJSON **choice) {
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "id", s->id);
    cJSON_AddStringToObject(c, "object", is_chat(s) ? "chat.completion.chunk" : "text_completion");
    cJSON_AddNumberToObject(c, "created", (double)s->created);
    srv_json_add_str(c, "model", s->rq->model, strlen(s->rq->model));
    cJSON *arr = cJSON_AddArrayToObject(c, "choices");
    *choice = cJSON_CreateObject();
    cJSON_AddItemToArray(arr, *choice);
    return c;
}

static void send_chunk(srv_stream *s, cJSON *c) {
    if (!s->failed && srv_sse_data(s->job, c) != 0) s->failed = true;
    cJSON_Delete(c);
}

/* A chat chunk whose delta gets filled by the caller. */
static cJSON *delta_chunk(srv_stream *s, cJSON **delta) {
    cJSON *ch;
    cJSON *c = chunk(s, &ch);
    cJSON_AddNumberToObject(ch, "index", 0);
    *delta = cJSON_AddObjectToObject(ch, "delta");
    cJSON_AddNullToObject(ch, "finish_reason");
    return c;
}

void srv_openai_begin(srv_stream *s) {
    if (!is_chat(s)) return; /* completions: no role chunk */
    cJSON *d;
    cJSON *c = delta_chunk(s, &d);
    cJSON_AddStringToObject(d, "role", "assistant");
    send_chunk(s, c);
}

static void completion_text(srv_stream *s, const char *t, size_t n) {
    cJSON *ch;
    cJSON *c = chunk(s, &ch);
    srv_json_add_str(ch, "text", t, n);
    cJSON_AddNumberToObject(ch, "index", 0);
    cJSON_AddNullToObject(ch, "finish_reason");
    send_chunk(s, c);
}

void srv_openai_event(srv_stream *s, const ds4_dsml_event *ev) {
    if (!is_chat(s)) {
        if (ev->type == DS4_DSML_EV_TEXT && ev->len) completion_text(s, ev->text, ev->len);
        return;
    }
    cJSON *d, *c;
    switch (ev->type) {
    case DS4_DSML_EV_REASONING:
    case DS4_DSML_EV_TEXT:
        if (!ev->len) return;
        c = delta_chunk(s, &d);
        srv_json_add_str(d, ev->type == DS4_DSML_EV_TEXT ? "content" : "reasoning_content", ev->text, ev->len);
        send_chunk(s, c);
        return;
    case DS4_DSML_EV_CALL_START: {
        c = delta_chunk(s, &d);
        cJSON *arr = cJSON_AddArrayToObject(d, "tool_calls");
        cJSON *tc = cJSON_CreateObject();
        cJSON_AddItemToArray(arr, tc);
        cJSON_AddNumberToObject(tc, "index", ev->index);
        cJSON_AddStringToObject(tc, "id", ev->id ? ev->id : "");
        cJSON_AddStringToObject(tc, "type", "function");
        cJSON *fn = cJSON_AddObjectToObject(tc, "function");
        srv_json_add_str(fn, "name", ev->name, strlen(ev->name));
        cJSON_AddStringToObject(fn, "arguments", "");
        send_chunk(s, c);
        return;
    }
    case DS4_DSML_EV_CALL_ARGS: {
        if (!ev->len) return;
        c = delta_chunk(s, &d);
        cJSON *arr = cJSON_AddArrayToObject(d, "tool_calls");
        cJSON *tc = cJSON_CreateObject();
        cJSON_AddItemToArray(arr, tc);
        cJSON_AddNumberToObject(tc, "index", ev->index);
        cJSON *fn = cJSON_AddObjectToObject(tc, "function");
        srv_json_add_str(fn, "arguments", ev->text, ev->len);
        send_chunk(s, c);
        return;
    }
    default: return;
    }
}

static cJSON *tool_calls_array(const ds4_dsml_result *r) {
    cJSON *arr = cJSON_CreateArray();
    for (int i = 0; i < r->n_calls; i++) {
        const ds4_dsml_call *k = &r->calls[i];
        cJSON *tc = cJSON_CreateObject();
        cJSON_AddItemToArray(arr, tc);
        cJSON_AddStringToObject(tc, "id", k->id ? k->id : "");
        cJSON_AddStringToObject(tc, "type", "function");
        cJSON *fn = cJSON_AddObjectToObject(tc, "function");
        srv_json_add_str(fn, "name", k->name, strlen(k->name));
        srv_json_add_str(fn, "arguments", k->arguments, k->arguments_len);
    }
    return arr;
}

void srv_openai_finish(srv_stream *s, const srv_outcome *o) {
    const char *finish = srv_finish_name(o->finish);
    if (s->rq->stream) {
        cJSON *ch;
        cJSON *c = chunk(s, &ch);
        if (is_chat(s)) {
            cJSON_AddNumberToObject(ch, "index", 0);
            cJSON_AddObjectToObject(ch, "delta");
        } else {
            cJSON_AddStringToObject(ch, "text", "");
            cJSON_AddNumberToObject(ch, "index", 0);
        }
        cJSON_AddStringToObject(ch, "finish_reason", finish);
        send_chunk(s, c);
        if (s->rq->include_usage) {
            c = cJSON_CreateObject();
            cJSON_AddStringToObject(c, "id", s->id);
            cJSON_AddStringToObject(c, "object", is_chat(s) ? "chat.completion.chunk" : "text_completion");
            cJSON_AddNumberToObject(c, "created", (double)s->created);
            srv_json_add_str(c, "model", s->rq->model, strlen(s->rq->model));
            cJSON_AddArrayToObject(c, "choices");
            cJSON_AddItemToObject(c, "usage", srv_usage_openai(o, false));
            send_chunk(s, c);
        }
        if (!s->failed && srv_sse_raw(s->job, "[DONE]") != 0) s->failed = true;
        return;
    }
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "id", s->id);
    cJSON_AddStringToObject(c, "object", is_chat(s) ? "chat.completion" : "text_completion");
    cJSON_AddNumberToObject(c, "created", (double)s->created);
    srv_json_add_str(c, "model", s->rq->model, strlen(s->rq->model));
    cJSON *arr = cJSON_AddArrayToObject(c, "choices");
    cJSON *ch = cJSON_CreateObject();
    cJSON_AddItemToArray(arr, ch);
    if (is_chat(s)) {
        cJSON_AddNumberToObject(ch, "index", 0);
        cJSON *m = cJSON_AddObjectToObject(ch, "message");
        cJSON_AddStringToObject(m, "role", "assistant");
        const ds4_dsml_result *r = o->res;
        srv_json_add_str(m, "content", r ? r->content : "", r ? r->content_len : 0);
        if (r && r->reasoning_len) srv_json_add_str(m, "reasoning_content", r->reasoning, r->reasoning_len);
        if (r && r->n_calls) cJSON_AddItemToObject(m, "tool_calls", tool_calls_array(r));
    } else {
        srv_json_add_str(ch, "text", o->text ? o->text : "", o->text_len);
        cJSON_AddNumberToObject(ch, "index", 0);
    }
    cJSON_AddStringToObject(ch, "finish_reason", finish);
    cJSON_AddItemToObject(c, "usage", srv_usage_openai(o, false));
    size_t n = 0;
    char *body = srv_json_print(c, true, &n);
    cJSON_Delete(c);
    srv_job_reply(s->job, 200, body ? body : "", body ? n : 0);
    free(body);
}
