/* ds4-server — Anthropic Messages request bodies (INTERFACES.md §6.7.1,
 * §6.7.2). */
#include <stdlib.h>
#include <string.h>

#include "server/jsonutil.h"
#include "server/request.h"

/* Text of a tool_result's content: a string or blocks whose text fields are
 * concatenated (images dropped). */
static void result_text(const cJSON *c, ds4_textbuf *out) {
    if (cJSON_IsString(c)) {
        ds4_textbuf_puts(out, c->valuestring);
        return;
    }
    if (!cJSON_IsArray(c)) return;
    const cJSON *b;
    cJSON_ArrayForEach(b, c) {
        if (cJSON_IsString(b)) ds4_textbuf_puts(out, b->valuestring);
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(b, "text");
        if (cJSON_IsObject(b) && cJSON_IsString(t)) ds4_textbuf_puts(out, t->valuestring);
    }
}

static int add_blocks_(srv_request *r, ds4_chat_msg *msg, const cJSON *content, const srv_span *raw_blocks, int n_raw,
                       srv_error *e) {
    int i = 0;
    for (const cJSON *b = content->child; b; b = b->next, i++) {
        if (cJSON_IsString(b)) {
            if (ds4_chat_msg_append_content(msg, b->valuestring, strlen(b->valuestring))) goto oom;
            continue;
        }
        if (!cJSON_IsObject(b)) return srv_errorf(e, 400, "invalid JSON request: content blocks must be objects");
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(b, "type");
        if (!cJSON_IsString(type)) return srv_errorf(e, 400, "invalid JSON request: a content block has no type");
        const char *ty = type->valuestring;
        if (strcmp(ty, "text") == 0) {
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(b, "text");
            if (srv_json_given(t) && !cJSON_IsString(t)) return srv_errorf(e, 400, "invalid JSON request: text must be a string");
            if (cJSON_IsString(t) && ds4_chat_msg_append_content(msg, t->valuestring, strlen(t->valuestring))) goto oom;
        } else if (strcmp(ty, "thinking") == 0) {
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(b, "thinking");
            if (cJSON_IsString(t) && ds4_chat_msg_append_reasoning(msg, t->valuestring, strlen(t->valuestring))) goto oom;
        } else if (strcmp(ty, "tool_use") == 0) {
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(b, "id");
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(b, "name");
            if (!cJSON_IsString(id) || !id->valuestring[0])
                return srv_errorf(e, 400, "invalid JSON request: tool_use block without an id");
            if (!cJSON_IsString(name)) return srv_errorf(e, 400, "invalid JSON request: tool_use block without a name");
            srv_span in = srv_span_member(srv_span_at(raw_blocks, n_raw, i), "input");
            const cJSON *input = cJSON_GetObjectItemCaseSensitive(b, "input");
            if (!srv_json_given(input)) in = (srv_span){"{}", 2};
            if (ds4_chat_msg_add_call(msg, id->valuestring, name->valuestring, in.p, in.n)) goto oom;
        } else if (strcmp(ty, "tool_result") == 0) {
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(b, "tool_use_id");
            if (!cJSON_IsString(id) || !id->valuestring[0])
                return srv_errorf(e, 400, "invalid JSON request: tool_result block without a tool_use_id");
            if (ds4_chat_msg_add_tool_call_id(msg, id->valuestring)) goto oom;
            if (srv_note_output_id(r, id->valuestring, srv_chat_has_call_id(&r->chat, id->valuestring))) goto oom;
            ds4_textbuf t;
            ds4_textbuf_init(&t);
            result_text(cJSON_GetObjectItemCaseSensitive(b, "content"), &t);
            int rc = ds4_chat_msg_append_tool_result(msg, t.p ? t.p : "", t.n);
            ds4_textbuf_free(&t);
            if (rc) goto oom;
        }
        /* redacted_thinking, image, document, ...: ignored */
    }
    return 0;
oom:
    return srv_errorf(e, 500, "out of memory");
}

static int add_blocks(srv_request *r, ds4_chat_msg *msg, const cJSON *content, srv_span raw_content, srv_error *e) {
    int n_raw = 0;
    srv_span *raw_blocks = srv_span_elements(raw_content, &n_raw);
    int rc = add_blocks_(r, msg, content, raw_blocks, n_raw, e);
    free(raw_blocks);
    return rc;
}

/* §6.7.2: parts joined with "\n" (only when the text so far does not end in
 * one); parts starting with "x-anthropic-" are dropped. */
static int system_text(const cJSON *sys, ds4_textbuf *out, srv_error *e) {
    if (!srv_json_given(sys)) return 0;
    if (cJSON_IsString(sys)) {
        ds4_textbuf_puts(out, sys->valuestring);
        return 0;
    }
    if (!cJSON_IsArray(sys)) return srv_errorf(e, 400, "invalid JSON request: system must be a string or an array");
    const cJSON *p;
    cJSON_ArrayForEach(p, sys) {
        const char *s = NULL;
        if (cJSON_IsString(p)) s = p->valuestring;
        else if (cJSON_IsObject(p)) {
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(p, "text");
            if (cJSON_IsString(t)) s = t->valuestring;
        } else return srv_errorf(e, 400, "invalid JSON request: system blocks must be objects");
        if (!s || strncmp(s, "x-anthropic-", 12) == 0) continue;
        if (out->n && out->p[out->n - 1] != '\n') ds4_textbuf_putc(out, '\n');
        ds4_textbuf_puts(out, s);
    }
    return 0;
}

static int one_message(srv_request *r, const cJSON *m, srv_span raw_msg, srv_error *e) {
    if (!cJSON_IsObject(m)) return srv_errorf(e, 400, "invalid JSON request: messages entries must be objects");
    const cJSON *jr = cJSON_GetObjectItemCaseSensitive(m, "role");
    ds4_role role = DS4_ROLE_USER;
    if (jr) {
        if (!cJSON_IsString(jr)) return srv_errorf(e, 400, "invalid JSON request: role must be a string");
        if (ds4_role_parse(jr->valuestring, strlen(jr->valuestring), &role) != 0) return 0; /* dropped */
    }
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
    ds4_chat_msg *msg = ds4_chat_add(&r->chat, role, NULL, 0);
    if (!msg) return srv_errorf(e, 500, "out of memory");
    if (cJSON_IsString(content)) {
        if (ds4_chat_msg_append_content(msg, content->valuestring, strlen(content->valuestring)))
            return srv_errorf(e, 500, "out of memory");
    } else if (cJSON_IsArray(content)) {
        if (add_blocks(r, msg, content, srv_span_member(raw_msg, "content"), e)) return -1;
    } else if (srv_json_given(content)) {
        return srv_errorf(e, 400, "invalid JSON request: content must be a string or an array of blocks");
    }
    return 0;
}

int srv_parse_messages(const cJSON *root, const char *body, size_t len, srv_request *r, srv_error *e) {
    const srv_span raw = {body, len};
    int n_raw = 0;
    srv_span *raw_msgs;
    const cJSON *msgs = srv_messages_array(root, body, len, &raw_msgs, &n_raw, e);
    if (!msgs) return -1;
    int rc = 0, i = 0;
    for (const cJSON *m = msgs->child; m && !rc; m = m->next, i++) rc = one_message(r, m, srv_span_at(raw_msgs, n_raw, i), e);
    free(raw_msgs);
    if (rc) return -1;
    /* the top-level system comes after system entries inside messages (§3.13) */
    ds4_textbuf sys;
    ds4_textbuf_init(&sys);
    const cJSON *jsys = cJSON_GetObjectItemCaseSensitive(root, "system");
    if (system_text(jsys, &sys, e)) {
        ds4_textbuf_free(&sys);
        return -1;
    }
    if (srv_json_given(jsys) && sys.n && !ds4_chat_add(&r->chat, DS4_ROLE_SYSTEM, sys.p, sys.n)) {
        ds4_textbuf_free(&sys);
        return srv_errorf(e, 500, "out of memory");
    }
    ds4_textbuf_free(&sys);
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(root, "tools");
    if (srv_json_given(tools)) {
        if (!cJSON_IsArray(tools)) return srv_errorf(e, 400, "invalid JSON request: tools must be an array");
        const srv_span raw_tools = srv_span_member(raw, "tools");
        int k = 0;
        for (const cJSON *tl = tools->child; tl; tl = tl->next, k++) {
            if (!cJSON_IsObject(tl)) return srv_errorf(e, 400, "invalid JSON request: tools entries must be objects");
            srv_span rt = srv_span_index(raw_tools, k);
            if (srv_add_tool_line(r, tl, rt.p, rt.n, false, NULL, e)) return -1;
        }
    }
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(root, "tool_choice");
    if (cJSON_IsObject(tc)) {
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(tc, "type");
        if (cJSON_IsString(ty) && strcmp(ty->valuestring, "none") == 0) r->chat.tool_choice_none = 1;
    }
    return 0;
}
