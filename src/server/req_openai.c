/* ds4-server — OpenAI chat completions and legacy completions request
 * bodies (INTERFACES.md §6.4.1, §6.5, §3.10). */
#include <stdlib.h>
#include <string.h>

#include "server/jsonutil.h"
#include "server/request.h"

/* A role member: missing -> user; null or not a string -> 400; unknown ->
 * the message is dropped (returns 1). */
static int message_role(const cJSON *m, ds4_role *role, srv_error *e) {
    const cJSON *jr = cJSON_GetObjectItemCaseSensitive(m, "role");
    if (!jr) {
        *role = DS4_ROLE_USER;
        return 0;
    }
    if (!cJSON_IsString(jr)) return srv_errorf(e, 400, "invalid JSON request: role must be a string");
    if (ds4_role_parse(jr->valuestring, strlen(jr->valuestring), role) != 0) return 1;
    return 0;
}

/* tool_calls[] of an assistant message: entries without function.name or
 * function.arguments are dropped (§3.10). */
static int add_calls(ds4_chat_msg *msg, const cJSON *calls, srv_span raw_calls, srv_error *e) {
    if (!srv_json_given(calls)) return 0;
    if (!cJSON_IsArray(calls)) return srv_errorf(e, 400, "invalid JSON request: tool_calls must be an array");
    int i = 0;
    for (const cJSON *c = calls->child; c; c = c->next, i++) {
        if (!cJSON_IsObject(c)) return srv_errorf(e, 400, "invalid JSON request: tool_calls entries must be objects");
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(c, "id");
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(c, "function");
        if (srv_json_given(id) && !cJSON_IsString(id)) return srv_errorf(e, 400, "invalid JSON request: tool call id must be a string");
        if (!cJSON_IsObject(fn)) continue;
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
        const cJSON *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
        if (!cJSON_IsString(name) || !args) continue;
        int rc;
        if (cJSON_IsString(args)) {
            rc = ds4_chat_msg_add_call(msg, cJSON_IsString(id) ? id->valuestring : NULL, name->valuestring,
                                       args->valuestring, strlen(args->valuestring));
        } else {
            /* a raw JSON value: keep the client's bytes */
            srv_span a = srv_span_member(srv_span_member(srv_span_index(raw_calls, i), "function"), "arguments");
            if (!a.p) continue;
            rc = ds4_chat_msg_add_call(msg, cJSON_IsString(id) ? id->valuestring : NULL, name->valuestring, a.p, a.n);
        }
        if (rc) return srv_errorf(e, 500, "out of memory");
    }
    return 0;
}

int srv_parse_chat(const cJSON *root, const char *body, size_t len, srv_request *r, srv_error *e) {
    const srv_span raw = {body, len};
    int n_raw = 0;
    srv_span *raw_msgs;
    const cJSON *msgs = srv_messages_array(root, body, len, &raw_msgs, &n_raw, e);
    if (!msgs) return -1;
    int i = 0;
    ds4_textbuf t;
    ds4_textbuf_init(&t);
    for (const cJSON *m = msgs->child; m; m = m->next, i++) {
        if (!cJSON_IsObject(m)) goto bad_msg;
        ds4_role role;
        int rr = message_role(m, &role, e);
        if (rr < 0) goto fail;
        if (rr > 0) continue;
        ds4_textbuf_clear(&t);
        if (srv_content_text(cJSON_GetObjectItemCaseSensitive(m, "content"), false, &t, e)) goto fail;
        ds4_chat_msg *msg = ds4_chat_add(&r->chat, role, t.p, t.n);
        if (!msg) goto oom;
        if (role == DS4_ROLE_ASSISTANT) {
            ds4_textbuf_clear(&t);
            if (srv_content_text(cJSON_GetObjectItemCaseSensitive(m, "reasoning_content"), false, &t, e)) goto fail;
            if (t.n && ds4_chat_msg_append_reasoning(msg, t.p, t.n)) goto oom;
            srv_span rc = srv_span_member(srv_span_at(raw_msgs, n_raw, i), "tool_calls");
            if (add_calls(msg, cJSON_GetObjectItemCaseSensitive(m, "tool_calls"), rc, e)) goto fail;
        }
        if (role == DS4_ROLE_TOOL) {
            const cJSON *tid = cJSON_GetObjectItemCaseSensitive(m, "tool_call_id");
            if (tid && !cJSON_IsString(tid)) {
                srv_errorf(e, 400, "invalid JSON request: tool_call_id must be a string");
                goto fail;
            }
            if (cJSON_IsString(tid) && ds4_chat_msg_add_tool_call_id(msg, tid->valuestring)) goto oom;
        }
    }
    ds4_textbuf_free(&t);
    free(raw_msgs);
    /* tools and tool_choice */
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(root, "tools");
    if (srv_json_given(tools)) {
        if (!cJSON_IsArray(tools)) return srv_errorf(e, 400, "invalid JSON request: tools must be an array");
        int n_rt = 0;
        srv_span *raw_tools = srv_span_elements(srv_span_member(raw, "tools"), &n_rt);
        int k = 0, rc = 0;
        for (const cJSON *tl = tools->child; tl && !rc; tl = tl->next, k++) {
            const cJSON *fn = cJSON_GetObjectItemCaseSensitive(tl, "function");
            srv_span rt = srv_span_at(raw_tools, n_rt, k);
            if (!cJSON_IsObject(tl)) rc = srv_errorf(e, 400, "invalid JSON request: tools entries must be objects");
            else if (cJSON_IsObject(fn)) {
                srv_span rf = srv_span_member(rt, "function");
                rc = srv_add_tool_line(r, fn, rf.p, rf.n, false, NULL, e);
            } else rc = srv_add_tool_line(r, tl, rt.p, rt.n, false, NULL, e);
        }
        free(raw_tools);
        if (rc) return -1;
    }
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(root, "tool_choice");
    if (cJSON_IsString(tc) && strcmp(tc->valuestring, "none") == 0) r->chat.tool_choice_none = 1;
    return 0;
bad_msg:
    srv_errorf(e, 400, "invalid JSON request: messages entries must be objects");
    goto fail;
oom:
    srv_errorf(e, 500, "out of memory");
fail:
    ds4_textbuf_free(&t);
    free(raw_msgs);
    return -1;
}

int srv_parse_completions(const cJSON *root, srv_request *r, srv_error *e) {
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "prompt");
    if (!srv_json_given(p)) return srv_errorf(e, 400, "missing prompt");
    const char *text = "";
    if (cJSON_IsString(p)) text = p->valuestring;
    else if (cJSON_IsArray(p) && cJSON_IsString(p->child)) text = p->child->valuestring;
    /* §6.5: rendered as a chat with the fixed system text */
    if (!ds4_chat_add(&r->chat, DS4_ROLE_SYSTEM, DS4_CHAT_DEFAULT_SYSTEM, strlen(DS4_CHAT_DEFAULT_SYSTEM)) ||
        !ds4_chat_add(&r->chat, DS4_ROLE_USER, text, strlen(text)))
        return srv_errorf(e, 500, "out of memory");
    return 0;
}
