/* ds4-server — OpenAI Responses request bodies (INTERFACES.md §6.6.1,
 * §6.6.2, §3.8, §3.13). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/jsonutil.h"
#include "server/request.h"

typedef struct resp_parse {
    srv_request *r;
    srv_error *e;
    ds4_textbuf reasoning; /* pending reasoning items */
    bool have_reasoning;
} resp_parse;

static int oom(srv_error *e) { return srv_errorf(e, 500, "out of memory"); }

/* ------------------------------------------------------------ tools */

static int add_ns(srv_request *r, const char *ns, const char *name) {
    srv_tool_ns *t = realloc(r->ns, (size_t)(r->n_ns + 1) * sizeof(*t));
    if (!t) return -1;
    r->ns = t;
    srv_tool_ns *n = &t[r->n_ns];
    const size_t l = strlen(ns) + strlen(name) + 1;
    n->prompt_name = malloc(l);
    n->name = strdup(name);
    n->ns = strdup(ns);
    if (!n->prompt_name || !n->name || !n->ns) {
        free(n->prompt_name);
        free(n->name);
        free(n->ns);
        return -1;
    }
    snprintf(n->prompt_name, l, "%s%s", ns, name);
    r->n_ns++;
    return 0;
}

/* A synthesized line {"name":N,"description":D,"parameters":P} (compact,
 * schema bytes kept). */
static int synth_line(srv_request *r, const char *name, const char *desc, srv_span params, srv_error *e) {
    ds4_textbuf l;
    ds4_textbuf_init(&l);
    ds4_textbuf_puts(&l, "{\"name\":\"");
    srv_json_append_escaped(&l, name, strlen(name));
    ds4_textbuf_puts(&l, "\",\"description\":\"");
    srv_json_append_escaped(&l, desc, strlen(desc));
    ds4_textbuf_puts(&l, "\",\"parameters\":");
    if (params.p) ds4_textbuf_append(&l, params.p, params.n);
    else ds4_textbuf_puts(&l, "{\"type\":\"object\",\"properties\":{}}");
    ds4_textbuf_putc(&l, '}');
    int rc = l.oom || ds4_chat_add_tool(&r->chat, l.p, l.n) ? oom(e) : 0;
    ds4_textbuf_free(&l);
    return rc;
}

static srv_span schema_span(srv_span raw_tool) {
    srv_span p = srv_span_member(raw_tool, "parameters");
    return p.p ? p : srv_span_member(raw_tool, "input_schema");
}

static int one_tool(srv_request *r, const cJSON *t, srv_span rt, srv_error *e);

/* One tools array (the request's, or a tool_search_output's). */
static int parse_tools(srv_request *r, const cJSON *tools, srv_span raw_tools, srv_error *e) {
    if (!cJSON_IsArray(tools)) return srv_errorf(e, 400, "invalid JSON request: tools must be an array");
    int n_rt = 0;
    srv_span *rts = srv_span_elements(raw_tools, &n_rt);
    int k = 0, rc = 0;
    for (const cJSON *t = tools->child; t && !rc; t = t->next, k++) rc = one_tool(r, t, srv_span_at(rts, n_rt, k), e);
    free(rts);
    return rc;
}

static int one_tool(srv_request *r, const cJSON *t, srv_span rt, srv_error *e) {
    {
        if (!cJSON_IsObject(t)) return srv_errorf(e, 400, "invalid JSON request: tools entries must be objects");
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(t, "type");
        const char *ty = cJSON_IsString(type) ? type->valuestring : "function";
        if (strcmp(ty, "function") == 0) {
            if (srv_add_tool_line(r, t, rt.p, rt.n, true, NULL, e)) return -1;
        } else if (strcmp(ty, "namespace") == 0) {
            const cJSON *ns = cJSON_GetObjectItemCaseSensitive(t, "name");
            const cJSON *inner = cJSON_GetObjectItemCaseSensitive(t, "tools");
            if (!cJSON_IsString(ns) || !cJSON_IsArray(inner))
                return srv_errorf(e, 400, "invalid JSON request: a namespace tool needs a name and tools");
            int n_in = 0;
            srv_span *raw_inner = srv_span_elements(srv_span_member(rt, "tools"), &n_in);
            int j = 0, rc = 0;
            for (const cJSON *f = inner->child; f; f = f->next, j++) {
                const cJSON *fn = cJSON_GetObjectItemCaseSensitive(f, "name");
                const cJSON *fd = cJSON_GetObjectItemCaseSensitive(f, "description");
                if (!cJSON_IsObject(f) || !cJSON_IsString(fn)) {
                    rc = srv_errorf(e, 400, "invalid JSON request: a namespace tool entry has no name");
                    break;
                }
                char *full = malloc(strlen(ns->valuestring) + strlen(fn->valuestring) + 1);
                if (!full) {
                    rc = oom(e);
                    break;
                }
                strcpy(full, ns->valuestring);
                strcat(full, fn->valuestring);
                rc = synth_line(r, full, cJSON_IsString(fd) ? fd->valuestring : "",
                                schema_span(srv_span_at(raw_inner, n_in, j)), e);
                free(full);
                if (!rc && add_ns(r, ns->valuestring, fn->valuestring)) rc = oom(e);
                if (rc) break;
            }
            free(raw_inner);
            if (rc) return -1;
        } else if (strcmp(ty, "tool_search") == 0) {
            const cJSON *d = cJSON_GetObjectItemCaseSensitive(t, "description");
            if (synth_line(r, "tool_search", cJSON_IsString(d) ? d->valuestring : "Search available tools.",
                           schema_span(rt), e))
                return -1;
            r->hosted_tool_search = true;
        }
        /* other hosted tools (web_search, local_shell, custom, ...) have no
         * schema the model could call: not rendered */
    }
    return 0;
}

/* ------------------------------------------------------------ items */

/* The assistant message a call or reasoning attaches to: the last message if
 * it is an assistant message, else a new empty one. */
static ds4_chat_msg *assistant_target(resp_parse *p) {
    ds4_chat *c = &p->r->chat;
    if (c->n_msgs > 0 && c->msgs[c->n_msgs - 1]->role == DS4_ROLE_ASSISTANT) return c->msgs[c->n_msgs - 1];
    return ds4_chat_add(c, DS4_ROLE_ASSISTANT, "", 0);
}

static int attach_reasoning(resp_parse *p, ds4_chat_msg *m) {
    if (!p->have_reasoning) return 0;
    int rc = p->reasoning.n ? ds4_chat_msg_append_reasoning(m, p->reasoning.p, p->reasoning.n) : 0;
    ds4_textbuf_clear(&p->reasoning);
    p->have_reasoning = false;
    return rc;
}

/* Pending reasoning before a non-assistant item becomes an empty assistant
 * turn in place (§6.6.2). */
static int flush_reasoning(resp_parse *p) {
    if (!p->have_reasoning) return 0;
    ds4_chat_msg *m = ds4_chat_add(&p->r->chat, DS4_ROLE_ASSISTANT, "", 0);
    return m ? attach_reasoning(p, m) : -1;
}

static void reasoning_piece(resp_parse *p, const cJSON *arr) {
    if (!cJSON_IsArray(arr)) return;
    const cJSON *b;
    cJSON_ArrayForEach(b, arr) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(b, "text");
        if (!cJSON_IsString(t)) continue;
        if (p->reasoning.n) ds4_textbuf_putc(&p->reasoning, '\n');
        ds4_textbuf_puts(&p->reasoning, t->valuestring);
    }
}

/* The text of a value that may be a string, a text-block array or any JSON
 * (raw bytes). */
static int value_text(const cJSON *v, srv_span raw, ds4_textbuf *out, srv_error *e) {
    if (!srv_json_given(v)) return 0;
    if (cJSON_IsString(v)) ds4_textbuf_puts(out, v->valuestring);
    else if (cJSON_IsArray(v) && (cJSON_IsObject(v->child) || cJSON_IsString(v->child)))
        return srv_content_text(v, true, out, e);
    else if (raw.p) ds4_textbuf_append(out, raw.p, raw.n);
    return 0;
}

static int add_call_item(resp_parse *p, const cJSON *it, srv_span raw, const char *name, const char *ns) {
    srv_error *e = p->e;
    const cJSON *cid = cJSON_GetObjectItemCaseSensitive(it, "call_id");
    if (!cJSON_IsString(cid)) cid = cJSON_GetObjectItemCaseSensitive(it, "id");
    if (!cJSON_IsString(cid) || !cid->valuestring[0])
        return srv_errorf(e, 400, "invalid JSON request: a tool call item has no call_id");
    /* arguments: a string holds the JSON text; any other value is raw JSON */
    static const char *const keys[] = {"action", "arguments", "input"};
    const char *args = "{}";
    size_t alen = 2;
    for (int k = name ? 0 : 1; k < 3; k++) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(it, keys[k]);
        if (!srv_json_given(a)) continue;
        if (cJSON_IsString(a)) {
            args = a->valuestring;
            alen = strlen(args);
        } else {
            srv_span s = srv_span_member(raw, keys[k]);
            if (s.p) {
                args = s.p;
                alen = s.n;
            }
        }
        break;
    }
    char full[512];
    if (!name) {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(it, "name");
        if (!cJSON_IsString(n)) return srv_errorf(e, 400, "invalid JSON request: a function_call item has no name");
        snprintf(full, sizeof(full), "%s%s", ns ? ns : "", n->valuestring);
        name = full;
    }
    ds4_chat_msg *m = assistant_target(p);
    if (!m || attach_reasoning(p, m) || ds4_chat_msg_add_call(m, cid->valuestring, name, args, alen)) return oom(e);
    return 0;
}

static int add_output_item(resp_parse *p, const cJSON *it, srv_span raw, bool hosted) {
    srv_error *e = p->e;
    const cJSON *cid = cJSON_GetObjectItemCaseSensitive(it, "call_id");
    if (!cJSON_IsString(cid)) cid = cJSON_GetObjectItemCaseSensitive(it, "id");
    if (!cJSON_IsString(cid) || !cid->valuestring[0])
        return srv_errorf(e, 400, "invalid JSON request: a tool output item has no call_id");
    if (flush_reasoning(p)) return oom(e);
    ds4_textbuf t;
    ds4_textbuf_init(&t);
    int rc = 0;
    const cJSON *out = cJSON_GetObjectItemCaseSensitive(it, "output");
    if (srv_json_given(out) || !hosted) rc = value_text(out, srv_span_member(raw, "output"), &t, e);
    else if (srv_json_given(cJSON_GetObjectItemCaseSensitive(it, "result")))
        rc = value_text(cJSON_GetObjectItemCaseSensitive(it, "result"), srv_span_member(raw, "result"), &t, e);
    else {
        srv_span ts = srv_span_member(raw, "tools");
        if (ts.p) ds4_textbuf_append(&t, ts.p, ts.n);
    }
    ds4_chat_msg *m = rc ? NULL : ds4_chat_add(&p->r->chat, DS4_ROLE_TOOL, t.p, t.n);
    ds4_textbuf_free(&t);
    if (rc) return -1;
    if (!m || ds4_chat_msg_add_tool_call_id(m, cid->valuestring)) return oom(e);
    if (srv_note_output_id(p->r, cid->valuestring, srv_chat_has_call_id(&p->r->chat, cid->valuestring))) return oom(e);
    return 0;
}

static int parse_item(resp_parse *p, const cJSON *it, srv_span raw) {
    srv_request *r = p->r;
    srv_error *e = p->e;
    if (!cJSON_IsObject(it)) return srv_errorf(e, 400, "invalid JSON request: input items must be objects");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(it, "status");
    if (cJSON_IsString(st) && strcmp(st->valuestring, "completed") != 0)
        return srv_errorf(e, 400, "input item with status '%s' is not supported (only completed items can be replayed)", st->valuestring);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(it, "type");
    if (srv_json_given(type) && !cJSON_IsString(type)) return srv_errorf(e, 400, "invalid JSON request: item type must be a string");
    const char *ty = cJSON_IsString(type) ? type->valuestring : "message";

    if (strcmp(ty, "message") == 0) {
        const cJSON *jr = cJSON_GetObjectItemCaseSensitive(it, "role");
        ds4_role role = DS4_ROLE_USER;
        if (jr) {
            if (!cJSON_IsString(jr)) return srv_errorf(e, 400, "invalid JSON request: role must be a string");
            if (ds4_role_parse(jr->valuestring, strlen(jr->valuestring), &role) != 0) return 0; /* dropped */
        }
        ds4_textbuf t;
        ds4_textbuf_init(&t);
        if (srv_content_text(cJSON_GetObjectItemCaseSensitive(it, "content"), true, &t, e)) {
            ds4_textbuf_free(&t);
            return -1;
        }
        int rc = 0;
        if (role != DS4_ROLE_ASSISTANT) rc = flush_reasoning(p);
        ds4_chat_msg *m = rc ? NULL : ds4_chat_add(&r->chat, role, t.p, t.n);
        ds4_textbuf_free(&t);
        if (!m) return oom(e);
        if (role == DS4_ROLE_ASSISTANT && attach_reasoning(p, m)) return oom(e);
        return 0;
    }
    if (strcmp(ty, "reasoning") == 0) {
        reasoning_piece(p, cJSON_GetObjectItemCaseSensitive(it, "summary"));
        reasoning_piece(p, cJSON_GetObjectItemCaseSensitive(it, "content"));
        p->have_reasoning = true;
        return 0;
    }
    if (strcmp(ty, "function_call") == 0) {
        const cJSON *ns = cJSON_GetObjectItemCaseSensitive(it, "namespace");
        return add_call_item(p, it, raw, NULL, cJSON_IsString(ns) ? ns->valuestring : NULL);
    }
    if (strcmp(ty, "custom_tool_call") == 0) return add_call_item(p, it, raw, NULL, NULL);
    static const char *const hosted[][2] = {{"local_shell_call", "local_shell"},
                                            {"web_search_call", "web_search_call"},
                                            {"tool_search_call", "tool_search"},
                                            {"image_generation_call", "image_generation_call"}};
    for (int i = 0; i < 4; i++)
        if (strcmp(ty, hosted[i][0]) == 0) return add_call_item(p, it, raw, hosted[i][1], NULL);
    if (strcmp(ty, "function_call_output") == 0 || strcmp(ty, "custom_tool_call_output") == 0)
        return add_output_item(p, it, raw, false);
    static const char *const hosted_out[] = {"local_shell_call_output", "web_search_call_output", "tool_search_output",
                                             "tool_search_call_output", "image_generation_call_output"};
    for (int i = 0; i < 5; i++) {
        if (strcmp(ty, hosted_out[i]) != 0) continue;
        if (add_output_item(p, it, raw, true)) return -1;
        const cJSON *tools = cJSON_GetObjectItemCaseSensitive(it, "tools");
        if (strcmp(ty, "tool_search_output") == 0 && srv_json_given(tools))
            return parse_tools(r, tools, srv_span_member(raw, "tools"), e);
        return 0;
    }
    if (strcmp(ty, "compaction") == 0 || strcmp(ty, "context_compaction") == 0) return 0;
    return srv_errorf(e, 400, "unsupported input item type '%s'", ty);
}

int srv_parse_responses(const cJSON *root, const char *body, size_t len, srv_request *r, srv_error *e) {
    const srv_span raw = {body, len};
    static const char *const durable[] = {"previous_response_id", "conversation"};
    for (int i = 0; i < 2; i++)
        if (srv_json_given(cJSON_GetObjectItemCaseSensitive(root, durable[i])))
            return srv_errorf(e, 400, "%s is not supported; replay full input instead", durable[i]);
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(root, "tool_choice");
    if (cJSON_IsString(tc)) {
        if (strcmp(tc->valuestring, "none") == 0) r->chat.tool_choice_none = 1;
        else if (strcmp(tc->valuestring, "auto") != 0)
            return srv_errorf(e, 400, "tool_choice=%s not supported", tc->valuestring);
    } else if (cJSON_IsObject(tc)) {
        return srv_errorf(e, 400, "forced tool_choice not supported");
    }
    const cJSON *ins = cJSON_GetObjectItemCaseSensitive(root, "instructions");
    if (srv_json_given(ins) && !cJSON_IsString(ins)) return srv_errorf(e, 400, "invalid JSON request: instructions must be a string");
    if (cJSON_IsString(ins) && !ds4_chat_add(&r->chat, DS4_ROLE_SYSTEM, ins->valuestring, strlen(ins->valuestring)))
        return oom(e);
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(root, "tools");
    if (srv_json_given(tools) && parse_tools(r, tools, srv_span_member(raw, "tools"), e)) return -1;

    const cJSON *input = cJSON_GetObjectItemCaseSensitive(root, "input");
    if (!srv_json_given(input)) return srv_errorf(e, 400, "missing input");
    if (cJSON_IsString(input)) {
        if (!ds4_chat_add(&r->chat, DS4_ROLE_USER, input->valuestring, strlen(input->valuestring))) return oom(e);
        return 0;
    }
    if (!cJSON_IsArray(input)) return srv_errorf(e, 400, "invalid JSON request: input must be a string or an array");
    resp_parse p = {.r = r, .e = e};
    ds4_textbuf_init(&p.reasoning);
    int n_raw = 0;
    srv_span *raw_input = srv_span_elements(srv_span_member(raw, "input"), &n_raw);
    int i = 0, rc = 0;
    for (const cJSON *it = input->child; it && !rc; it = it->next, i++)
        rc = parse_item(&p, it, srv_span_at(raw_input, n_raw, i));
    free(raw_input);
    /* a trailing reasoning buffer becomes an empty assistant turn */
    if (!rc && flush_reasoning(&p)) rc = oom(e);
    ds4_textbuf_free(&p.reasoning);
    return rc;
}
