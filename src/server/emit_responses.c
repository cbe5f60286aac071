/* ds4-server — OpenAI Responses output (INTERFACES.md §6.6.3, §6.6.4).
 *
 * Items are opened in first-use order (reasoning, message, calls) and their
 * output_index values follow that order.  The reasoning item is closed as
 * soon as `</think>` is seen, the message item when the first call starts
 * (both lifecycle-valid, §6.6.4), so every call streams live. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/jsonutil.h"
#include "server/stream.h"

/* ------------------------------------------------------------ helpers */

static cJSON *event(srv_stream *s, const char *type) {
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "type", type);
    cJSON_AddNumberToObject(e, "sequence_number", s->seq++);
    return e;
}

/* An event about output item `id` at `index`. */
static cJSON *item_event(srv_stream *s, const char *type, const char *id, int index) {
    cJSON *e = event(s, type);
    cJSON_AddStringToObject(e, "item_id", id);
    cJSON_AddNumberToObject(e, "output_index", index);
    return e;
}

/* Events about the one summary part of the reasoning item and the one
 * content part of the message item. */
static cJSON *summary_event(srv_stream *s, const char *type) {
    cJSON *e = item_event(s, type, s->rs_id, s->rs_index);
    cJSON_AddNumberToObject(e, "summary_index", 0);
    return e;
}
static cJSON *content_event(srv_stream *s, const char *type) {
    cJSON *e = item_event(s, type, s->msg_id, s->msg_index);
    cJSON_AddNumberToObject(e, "content_index", 0);
    return e;
}

static void send(srv_stream *s, cJSON *e) {
    if (!s->failed && srv_sse_data(s->job, e) != 0) s->failed = true;
    cJSON_Delete(e);
}

static const char *item_status(srv_finish f) {
    return f == SRV_FINISH_LENGTH || f == SRV_FINISH_ERROR ? "incomplete" : "completed";
}

/* Map a prompt-side tool name back to name + namespace. */
static const srv_tool_ns *find_ns(const srv_request *rq, const char *prompt_name) {
    for (int i = 0; i < rq->n_ns; i++)
        if (strcmp(rq->ns[i].prompt_name, prompt_name) == 0) return &rq->ns[i];
    return NULL;
}

static bool is_tool_search(const srv_request *rq, const char *name) {
    return rq->hosted_tool_search && strcmp(name, "tool_search") == 0;
}

static cJSON *reasoning_item(const srv_stream *s, const char *status, const char *text, size_t n, bool with_text) {
    cJSON *it = cJSON_CreateObject();
    cJSON_AddStringToObject(it, "id", s->rs_id);
    cJSON_AddStringToObject(it, "type", "reasoning");
    cJSON_AddStringToObject(it, "status", status);
    cJSON *sum = cJSON_AddArrayToObject(it, "summary");
    if (with_text) {
        cJSON *p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "type", "summary_text");
        srv_json_add_str(p, "text", text, n);
        cJSON_AddItemToArray(sum, p);
    }
    return it;
}

static cJSON *text_part(const char *text, size_t n) {
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "type", "output_text");
    srv_json_add_str(p, "text", text, n);
    cJSON_AddArrayToObject(p, "annotations");
    return p;
}

static cJSON *message_item(const srv_stream *s, const char *status, const char *text, size_t n, bool with_text) {
    cJSON *it = cJSON_CreateObject();
    cJSON_AddStringToObject(it, "id", s->msg_id);
    cJSON_AddStringToObject(it, "type", "message");
    cJSON_AddStringToObject(it, "status", status);
    cJSON_AddStringToObject(it, "role", "assistant");
    cJSON *c = cJSON_AddArrayToObject(it, "content");
    if (with_text) cJSON_AddItemToArray(c, text_part(text, n));
    return it;
}

static cJSON *call_item(const srv_request *rq, const char *fc_id, const char *status, const char *name,
                        const char *call_id, const char *args, size_t args_len) {
    cJSON *it = cJSON_CreateObject();
    cJSON_AddStringToObject(it, "id", fc_id);
    if (is_tool_search(rq, name)) {
        cJSON_AddStringToObject(it, "type", "tool_search_call");
        cJSON_AddStringToObject(it, "status", status);
        cJSON_AddStringToObject(it, "call_id", call_id);
        cJSON_AddStringToObject(it, "execution", "client");
        cJSON *a = cJSON_ParseWithLength(args, args_len);
        cJSON_AddItemToObject(it, "arguments", cJSON_IsObject(a) ? a : cJSON_CreateObject());
        if (a && !cJSON_IsObject(a)) cJSON_Delete(a);
        return it;
    }
    const srv_tool_ns *ns = find_ns(rq, name);
    cJSON_AddStringToObject(it, "type", "function_call");
    cJSON_AddStringToObject(it, "status", status);
    srv_json_add_str(it, "name", ns ? ns->name : name, strlen(ns ? ns->name : name));
    if (ns) srv_json_add_str(it, "namespace", ns->ns, strlen(ns->ns));
    cJSON_AddStringToObject(it, "call_id", call_id);
    srv_json_add_str(it, "arguments", args, args_len);
    return it;
}

/* ------------------------------------------------------------ item lifecycle */

static void open_reasoning(srv_stream *s) {
    srv_random_hex(s->rs_id + 3, 12);
    memcpy(s->rs_id, "rs_", 3);
    s->rs_index = s->next_index++;
    s->rs_open = true;
    cJSON *e = event(s, "response.output_item.added");
    cJSON_AddNumberToObject(e, "output_index", s->rs_index);
    cJSON_AddItemToObject(e, "item", reasoning_item(s, "in_progress", "", 0, false));
    send(s, e);
    e = summary_event(s, "response.reasoning_summary_part.added");
    cJSON *part = cJSON_AddObjectToObject(e, "part");
    cJSON_AddStringToObject(part, "type", "summary_text");
    cJSON_AddStringToObject(part, "text", "");
    send(s, e);
}

static void close_reasoning(srv_stream *s, bool complete) {
    if (!s->rs_open) return;
    s->rs_open = false;
    s->rs_closed_ok = complete;
    cJSON *e = summary_event(s, "response.reasoning_summary_text.done");
    srv_json_add_str(e, "text", s->rs_text.p, s->rs_text.n);
    send(s, e);
    e = summary_event(s, "response.reasoning_summary_part.done");
    cJSON *part = cJSON_AddObjectToObject(e, "part");
    cJSON_AddStringToObject(part, "type", "summary_text");
    srv_json_add_str(part, "text", s->rs_text.p, s->rs_text.n);
    send(s, e);
    e = event(s, "response.output_item.done");
    cJSON_AddNumberToObject(e, "output_index", s->rs_index);
    cJSON_AddItemToObject(e, "item", reasoning_item(s, complete ? "completed" : "incomplete", s->rs_text.p, s->rs_text.n, true));
    send(s, e);
}

static void open_message(srv_stream *s) {
    memcpy(s->msg_id, "msg_", 4);
    srv_random_hex(s->msg_id + 4, 12);
    s->msg_index = s->next_index++;
    s->msg_open = true;
    cJSON *e = event(s, "response.output_item.added");
    cJSON_AddNumberToObject(e, "output_index", s->msg_index);
    cJSON_AddItemToObject(e, "item", message_item(s, "in_progress", "", 0, false));
    send(s, e);
    e = content_event(s, "response.content_part.added");
    cJSON_AddItemToObject(e, "part", text_part("", 0));
    send(s, e);
}

static void close_message(srv_stream *s, const char *status) {
    if (!s->msg_open) return;
    s->msg_open = false;
    cJSON *e = content_event(s, "response.output_text.done");
    srv_json_add_str(e, "text", s->msg_text.p, s->msg_text.n);
    send(s, e);
    e = content_event(s, "response.content_part.done");
    cJSON_AddItemToObject(e, "part", text_part(s->msg_text.p, s->msg_text.n));
    send(s, e);
    e = event(s, "response.output_item.done");
    cJSON_AddNumberToObject(e, "output_index", s->msg_index);
    cJSON_AddItemToObject(e, "item", message_item(s, status, s->msg_text.p, s->msg_text.n, true));
    send(s, e);
}

static void text_delta(srv_stream *s, const char *t, size_t n) {
    if (!s->msg_open) open_message(s);
    ds4_textbuf_append(&s->msg_text, t, n);
    cJSON *e = content_event(s, "response.output_text.delta");
    srv_json_add_str(e, "delta", t, n);
    send(s, e);
}

static void call_done(srv_stream *s, srv_stream_call *c, const char *status, const char *args, size_t n) {
    if (!c->open) return;
    c->open = false;
    if (!is_tool_search(s->rq, c->name)) {
        cJSON *e = item_event(s, "response.function_call_arguments.done", c->fc_id, c->out_index);
        const srv_tool_ns *ns = find_ns(s->rq, c->name);
        cJSON_AddStringToObject(e, "name", ns ? ns->name : c->name);
        if (ns) cJSON_AddStringToObject(e, "namespace", ns->ns);
        srv_json_add_str(e, "arguments", args, n);
        send(s, e);
    }
    cJSON *e = event(s, "response.output_item.done");
    cJSON_AddNumberToObject(e, "output_index", c->out_index);
    cJSON_AddItemToObject(e, "item", call_item(s->rq, c->fc_id, status, c->name, c->call_id, args, n));
    send(s, e);
}

/* ------------------------------------------------------------ API */

void srv_responses_begin(srv_stream *s) {
    cJSON *e = event(s, "response.created");
    cJSON *r = cJSON_AddObjectToObject(e, "response");
    cJSON_AddStringToObject(r, "id", s->id);
    cJSON_AddStringToObject(r, "object", "response");
    cJSON_AddNumberToObject(r, "created_at", (double)s->created);
    cJSON_AddStringToObject(r, "status", "in_progress");
    srv_json_add_str(r, "model", s->rq->model, strlen(s->rq->model));
    cJSON_AddArrayToObject(r, "output");
    send(s, e);
}

void srv_responses_event(srv_stream *s, const ds4_dsml_event *ev) {
    switch (ev->type) {
    case DS4_DSML_EV_REASONING: {
        if (!s->rq->summary || !ev->len) return;
        if (!s->rs_open && s->rs_index < 0) open_reasoning(s);
        if (!s->rs_open) return;
        ds4_textbuf_append(&s->rs_text, ev->text, ev->len);
        cJSON *e = summary_event(s, "response.reasoning_summary_text.delta");
        srv_json_add_str(e, "delta", ev->text, ev->len);
        send(s, e);
        return;
    }
    case DS4_DSML_EV_REASONING_END: close_reasoning(s, true); return;
    case DS4_DSML_EV_TEXT:
        if (ev->len) text_delta(s, ev->text, ev->len);
        return;
    case DS4_DSML_EV_CALL_START: {
        close_reasoning(s, true);
        close_message(s, "completed");
        if (s->n_calls >= SRV_MAX_STREAM_CALLS) return;
        srv_stream_call *c = &s->calls[s->n_calls++];
        ds4_textbuf_init(&c->args);
        memcpy(c->fc_id, "fc_", 3);
        srv_random_hex(c->fc_id + 3, 12);
        c->out_index = s->next_index++;
        c->open = true;
        c->name = strdup(ev->name);
        c->call_id = strdup(ev->id ? ev->id : "");
        if (!c->name || !c->call_id) {
            c->open = false;
            return;
        }
        cJSON *e = event(s, "response.output_item.added");
        cJSON_AddNumberToObject(e, "output_index", c->out_index);
        cJSON_AddItemToObject(e, "item", call_item(s->rq, c->fc_id, "in_progress", c->name, c->call_id, "", 0));
        if (!is_tool_search(s->rq, c->name)) {
            /* an in-progress item carries empty string arguments */
            cJSON *it = cJSON_GetObjectItemCaseSensitive(e, "item");
            cJSON_ReplaceItemInObjectCaseSensitive(it, "arguments", cJSON_CreateString(""));
        }
        send(s, e);
        return;
    }
    case DS4_DSML_EV_CALL_ARGS: {
        if (ev->index < 0 || ev->index >= s->n_calls || !ev->len) return;
        srv_stream_call *c = &s->calls[ev->index];
        ds4_textbuf_append(&c->args, ev->text, ev->len);
        if (!c->open || is_tool_search(s->rq, c->name)) return;
        cJSON *e = item_event(s, "response.function_call_arguments.delta", c->fc_id, c->out_index);
        srv_json_add_str(e, "delta", ev->text, ev->len);
        send(s, e);
        return;
    }
    case DS4_DSML_EV_CALL_END: {
        if (ev->index < 0 || ev->index >= s->n_calls) return;
        srv_stream_call *c = &s->calls[ev->index];
        if (ev->args_valid) call_done(s, c, "completed", c->args.p ? c->args.p : "{}", c->args.p ? c->args.n : 2);
        else call_done(s, c, "completed", "{}", 2);
        return;
    }
    default: return;
    }
}

/* The full response object (non-streaming body and terminal event). */
static cJSON *response_object(srv_stream *s, const srv_outcome *o) {
    const ds4_dsml_result *r = o->res;
    const char *st = item_status(o->finish);
    cJSON *resp = cJSON_CreateObject();
    cJSON_AddStringToObject(resp, "id", s->id);
    cJSON_AddStringToObject(resp, "object", "response");
    cJSON_AddNumberToObject(resp, "created_at", (double)s->created);
    cJSON_AddStringToObject(resp, "status", o->finish == SRV_FINISH_LENGTH  ? "incomplete"
                                            : o->finish == SRV_FINISH_ERROR ? "failed"
                                                                            : "completed");
    srv_json_add_str(resp, "model", s->rq->model, strlen(s->rq->model));
    if (o->finish == SRV_FINISH_LENGTH) {
        cJSON *d = cJSON_AddObjectToObject(resp, "incomplete_details");
        cJSON_AddStringToObject(d, "reason", "max_tokens");
    }
    if (o->finish == SRV_FINISH_ERROR) {
        cJSON *d = cJSON_AddObjectToObject(resp, "error");
        cJSON_AddStringToObject(d, "code", "server_error");
        srv_json_add_str(d, "message", o->error ? o->error : "generation failed",
                         strlen(o->error ? o->error : "generation failed"));
    }
    cJSON *out = cJSON_AddArrayToObject(resp, "output");
    const bool thinking = s->rq->think != DS4_THINK_NONE;
    if (r && s->rq->summary && thinking && r->reasoning_len) {
        if (!s->rs_id[0]) {
            memcpy(s->rs_id, "rs_", 3);
            srv_random_hex(s->rs_id + 3, 12);
        }
        cJSON_AddItemToArray(out, reasoning_item(s, r->reasoning_closed ? "completed" : "incomplete", r->reasoning,
                                                 r->reasoning_len, true));
    }
    if (r && r->content_len) {
        if (!s->msg_id[0]) {
            memcpy(s->msg_id, "msg_", 4);
            srv_random_hex(s->msg_id + 4, 12);
        }
        cJSON_AddItemToArray(out, message_item(s, st, r->content, r->content_len, true));
    }
    for (int i = 0; r && i < r->n_calls; i++) {
        char fc[40];
        if (i < s->n_calls) snprintf(fc, sizeof(fc), "%s", s->calls[i].fc_id);
        else {
            memcpy(fc, "fc_", 3);
            srv_random_hex(fc + 3, 12);
        }
        const ds4_dsml_call *k = &r->calls[i];
        cJSON_AddItemToArray(out, call_item(s->rq, fc, st, k->name, k->id ? k->id : "", k->arguments, k->arguments_len));
    }
    cJSON_AddItemToObject(resp, "usage", srv_usage_openai(o, true));
    return resp;
}

void srv_responses_finish(srv_stream *s, const srv_outcome *o) {
    const char *st = item_status(o->finish);
    if (!s->rq->stream) {
        cJSON *resp = response_object(s, o);
        size_t n = 0;
        char *body = srv_json_print(resp, true, &n);
        cJSON_Delete(resp);
        srv_job_reply(s->job, 200, body ? body : "", body ? n : 0);
        free(body);
        return;
    }
    const ds4_dsml_result *r = o->res;
    close_reasoning(s, r && r->reasoning_closed);
    /* text that only the final parse produced (a recovered block) */
    if (r && r->content_len > s->msg_text.n && s->n_calls == 0 &&
        memcmp(r->content, s->msg_text.p ? s->msg_text.p : "", s->msg_text.n) == 0)
        text_delta(s, r->content + s->msg_text.n, r->content_len - s->msg_text.n);
    close_message(s, st);
    for (int i = 0; i < s->n_calls; i++) {
        if (r && i < r->n_calls) call_done(s, &s->calls[i], st, r->calls[i].arguments, r->calls[i].arguments_len);
        else call_done(s, &s->calls[i], st, "{}", 2);
    }
    cJSON *e = event(s, o->finish == SRV_FINISH_LENGTH  ? "response.incomplete"
                        : o->finish == SRV_FINISH_ERROR ? "response.failed"
                                                        : "response.completed");
    cJSON_AddItemToObject(e, "response", response_object(s, o));
    send(s, e);
}
