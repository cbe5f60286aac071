/* ds4-server — Anthropic Messages responses (INTERFACES.md §6.7.3,
 * §6.7.4). */
#include <stdlib.h>
#include <string.h>

#include "server/jsonutil.h"
#include "server/stream.h"

enum { BLK_NONE = 0, BLK_THINKING, BLK_TEXT, BLK_TOOL };

static void send(srv_stream *s, const char *name, cJSON *payload) {
    if (!s->failed && srv_sse_event(s->job, name, payload) != 0) s->failed = true;
    cJSON_Delete(payload);
}

static const char *stop_reason(srv_finish f) {
    return f == SRV_FINISH_TOOL_CALLS ? "tool_use" : f == SRV_FINISH_LENGTH ? "max_tokens" : "end_turn";
}

void srv_anthropic_begin(srv_stream *s) {
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "type", "message_start");
    cJSON *m = cJSON_AddObjectToObject(p, "message");
    cJSON_AddStringToObject(m, "id", s->id);
    cJSON_AddStringToObject(m, "type", "message");
    cJSON_AddStringToObject(m, "role", "assistant");
    srv_json_add_str(m, "model", s->rq->model, strlen(s->rq->model));
    cJSON_AddArrayToObject(m, "content");
    cJSON_AddNullToObject(m, "stop_reason");
    cJSON_AddNullToObject(m, "stop_sequence");
    cJSON_AddItemToObject(m, "usage", srv_usage_anthropic(s->prompt_tokens, s->cached_tokens, 0));
    send(s, "message_start", p);
}

static void block_start(srv_stream *s, int kind, cJSON *block) {
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "type", "content_block_start");
    cJSON_AddNumberToObject(p, "index", s->block_index);
    cJSON_AddItemToObject(p, "content_block", block);
    send(s, "content_block_start", p);
    s->open_block = kind;
}

static void block_delta(srv_stream *s, const char *type, const char *key, const char *t, size_t n) {
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "type", "content_block_delta");
    cJSON_AddNumberToObject(p, "index", s->block_index);
    cJSON *d = cJSON_AddObjectToObject(p, "delta");
    cJSON_AddStringToObject(d, "type", type);
    srv_json_add_str(d, key, t, n);
    send(s, "content_block_delta", p);
}

/* Close the open block; a thinking block gets its signature first. */
static void block_stop(srv_stream *s) {
    if (s->open_block == BLK_NONE) return;
    if (s->open_block == BLK_THINKING) block_delta(s, "signature_delta", "signature", s->id, strlen(s->id));
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "type", "content_block_stop");
    cJSON_AddNumberToObject(p, "index", s->block_index);
    send(s, "content_block_stop", p);
    s->block_index++;
    s->open_block = BLK_NONE;
}

static void start_text_block(srv_stream *s) {
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "type", "text");
    cJSON_AddStringToObject(b, "text", "");
    block_start(s, BLK_TEXT, b);
    s->sent_text = true;
}

void srv_anthropic_event(srv_stream *s, const ds4_dsml_event *ev) {
    switch (ev->type) {
    case DS4_DSML_EV_REASONING:
        if (!ev->len) return;
        if (s->open_block != BLK_THINKING) {
            block_stop(s);
            cJSON *b = cJSON_CreateObject();
            cJSON_AddStringToObject(b, "type", "thinking");
            cJSON_AddStringToObject(b, "thinking", "");
            cJSON_AddStringToObject(b, "signature", "");
            block_start(s, BLK_THINKING, b);
            s->sent_thinking = true;
        }
        block_delta(s, "thinking_delta", "thinking", ev->text, ev->len);
        return;
    case DS4_DSML_EV_REASONING_END:
        if (s->open_block == BLK_THINKING) block_stop(s);
        return;
    case DS4_DSML_EV_TEXT:
        if (!ev->len) return;
        if (s->open_block != BLK_TEXT) {
            block_stop(s);
            start_text_block(s);
        }
        block_delta(s, "text_delta", "text", ev->text, ev->len);
        return;
    case DS4_DSML_EV_CALL_START: {
        block_stop(s);
        cJSON *b = cJSON_CreateObject();
        cJSON_AddStringToObject(b, "type", "tool_use");
        cJSON_AddStringToObject(b, "id", ev->id ? ev->id : "");
        srv_json_add_str(b, "name", ev->name, strlen(ev->name));
        cJSON_AddObjectToObject(b, "input");
        block_start(s, BLK_TOOL, b);
        s->sent_tool = true;
        return;
    }
    case DS4_DSML_EV_CALL_ARGS:
        if (ev->len && s->open_block == BLK_TOOL) block_delta(s, "input_json_delta", "partial_json", ev->text, ev->len);
        return;
    case DS4_DSML_EV_CALL_END:
        if (s->open_block == BLK_TOOL) block_stop(s);
        return;
    default: return;
    }
}

void srv_anthropic_finish(srv_stream *s, const srv_outcome *o) {
    const ds4_dsml_result *r = o->res;
    if (s->rq->stream) {
        block_stop(s);
        if (s->sent_thinking && !s->sent_text && !s->sent_tool) {
            start_text_block(s);
            block_stop(s);
        }
        cJSON *p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "type", "message_delta");
        cJSON *d = cJSON_AddObjectToObject(p, "delta");
        cJSON_AddStringToObject(d, "stop_reason", stop_reason(o->finish));
        cJSON_AddNullToObject(d, "stop_sequence");
        cJSON *u = cJSON_AddObjectToObject(p, "usage");
        cJSON_AddNumberToObject(u, "output_tokens", o->completion_tokens);
        send(s, "message_delta", p);
        p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "type", "message_stop");
        send(s, "message_stop", p);
        return;
    }
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", s->id);
    cJSON_AddStringToObject(m, "type", "message");
    cJSON_AddStringToObject(m, "role", "assistant");
    srv_json_add_str(m, "model", s->rq->model, strlen(s->rq->model));
    cJSON *content = cJSON_AddArrayToObject(m, "content");
    bool only_thinking = true;
    if (r && r->reasoning_len) {
        cJSON *b = cJSON_CreateObject();
        cJSON_AddStringToObject(b, "type", "thinking");
        srv_json_add_str(b, "thinking", r->reasoning, r->reasoning_len);
        cJSON_AddStringToObject(b, "signature", s->id);
        cJSON_AddItemToArray(content, b);
    }
    if (r && r->content_len) {
        cJSON *b = cJSON_CreateObject();
        cJSON_AddStringToObject(b, "type", "text");
        srv_json_add_str(b, "text", r->content, r->content_len);
        cJSON_AddItemToArray(content, b);
        only_thinking = false;
    }
    for (int i = 0; r && i < r->n_calls; i++) {
        cJSON *b = cJSON_CreateObject();
        cJSON_AddStringToObject(b, "type", "tool_use");
        cJSON_AddStringToObject(b, "id", r->calls[i].id ? r->calls[i].id : "");
        srv_json_add_str(b, "name", r->calls[i].name, strlen(r->calls[i].name));
        cJSON *in = cJSON_ParseWithLength(r->calls[i].arguments, r->calls[i].arguments_len);
        cJSON_AddItemToObject(b, "input", cJSON_IsObject(in) ? in : cJSON_CreateObject());
        if (in && !cJSON_IsObject(in)) cJSON_Delete(in);
        cJSON_AddItemToArray(content, b);
        only_thinking = false;
    }
    if (only_thinking) {
        cJSON *b = cJSON_CreateObject();
        cJSON_AddStringToObject(b, "type", "text");
        cJSON_AddStringToObject(b, "text", "");
        cJSON_AddItemToArray(content, b);
    }
    cJSON_AddStringToObject(m, "stop_reason", stop_reason(o->finish));
    cJSON_AddNullToObject(m, "stop_sequence");
    cJSON_AddItemToObject(m, "usage", srv_usage_anthropic(o->prompt_tokens, o->cached_tokens, o->completion_tokens));
    size_t n = 0;
    char *body = srv_json_print(m, true, &n);
    cJSON_Delete(m);
    srv_job_reply(s->job, 200, body ? body : "", body ? n : 0);
    free(body);
}
