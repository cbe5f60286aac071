/* ds4-server — request normalization: the parts shared by every API
 * (INTERFACES.md §6.3) and the errors of §6.9.  The per-API bodies are in
 * req_openai.c, req_responses.c and req_anthropic.c. */
#include "server/request.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/jsonutil.h"
#include "server/toolmem.h"

/* ============================================================ names */

static const char *const api_names[] = {"chat", "completions", "responses", "messages", "count_tokens"};

const char *srv_api_name(srv_api a) { return (unsigned)a < 5 ? api_names[a] : "?"; }

int srv_api_parse(const char *s, srv_api *out) {
    for (int i = 0; i < 4; i++)
        if (strcmp(s, api_names[i]) == 0) {
            *out = (srv_api)i;
            return 0;
        }
    return -1;
}

/* ============================================================ errors */

int srv_errorf(srv_error *e, int status, const char *fmt, ...) {
    if (!e) return -1;
    e->status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
    return -1;
}

static bool anthropic(srv_api api) { return api == SRV_API_MESSAGES || api == SRV_API_COUNT_TOKENS; }

/* Anthropic error types by status (their SDK maps these to exception
 * classes); the OpenAI envelope always says invalid_request_error (§6.9). */
static const char *anthropic_type(int status) {
    switch (status) {
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 503: return "overloaded_error";
    default: return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

char *srv_error_body(srv_api api, const srv_error *e, size_t *len) {
    cJSON *root = cJSON_CreateObject();
    cJSON *err = cJSON_CreateObject();
    if (anthropic(api)) {
        cJSON_AddStringToObject(root, "type", "error");
        cJSON_AddItemToObject(root, "error", err);
        cJSON_AddStringToObject(err, "type", anthropic_type(e->status));
        srv_json_add_str(err, "message", e->msg, strlen(e->msg));
        if (e->ctx_exceeded) {
            cJSON_AddNumberToObject(err, "n_prompt_tokens", e->n_prompt);
            cJSON_AddNumberToObject(err, "n_ctx", e->n_ctx);
        }
    } else {
        cJSON_AddItemToObject(root, "error", err);
        srv_json_add_str(err, "message", e->msg, strlen(e->msg));
        cJSON_AddStringToObject(err, "type", "invalid_request_error");
        if (e->ctx_exceeded) {
            cJSON_AddStringToObject(err, "param", api == SRV_API_COMPLETIONS ? "prompt"
                                                  : api == SRV_API_RESPONSES ? "input"
                                                                             : "messages");
            cJSON_AddStringToObject(err, "code", "context_length_exceeded");
            cJSON_AddNumberToObject(err, "n_prompt_tokens", e->n_prompt);
            cJSON_AddNumberToObject(err, "n_ctx", e->n_ctx);
        }
    }
    char *s = srv_json_print(root, true, len);
    cJSON_Delete(root);
    return s;
}

char *srv_error_sse(srv_api api, const char *msg, size_t *len) {
    cJSON *root = cJSON_CreateObject();
    cJSON *err = cJSON_CreateObject();
    if (anthropic(api)) {
        cJSON_AddStringToObject(root, "type", "error");
        cJSON_AddItemToObject(root, "error", err);
        cJSON_AddStringToObject(err, "type", "api_error");
        srv_json_add_str(err, "message", msg, strlen(msg));
    } else {
        cJSON_AddItemToObject(root, "error", err);
        srv_json_add_str(err, "message", msg, strlen(msg));
        cJSON_AddStringToObject(err, "type", "server_error");
    }
    char *j = srv_json_print(root, false, NULL);
    cJSON_Delete(root);
    if (!j) return NULL;
    const size_t n = strlen(j) + 32;
    char *s = malloc(n);
    if (s) *len = (size_t)snprintf(s, n, "event: error\ndata: %s\n\n", j);
    free(j);
    return s;
}

/* ============================================================ lifecycle */

void srv_request_init(srv_request *r) {
    memset(r, 0, sizeof(*r));
    ds4_chat_init(&r->chat);
    ds4_textbuf_init(&r->prompt);
    r->max_tokens = -1;
    r->sampling = ds4_sampling_defaults();
    r->think = DS4_THINK_HIGH;
    r->tail_from = -1;
}

static void free_strs(char **v, int n) {
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
}

void srv_request_free(srv_request *r) {
    free(r->model);
    free_strs(r->stops, r->n_stops);
    ds4_chat_free(&r->chat);
    for (int i = 0; i < r->n_ns; i++) {
        free(r->ns[i].prompt_name);
        free(r->ns[i].name);
        free(r->ns[i].ns);
    }
    free(r->ns);
    free_strs(r->tail_ids, r->n_tail_ids);
    free_strs(r->live_ids, r->n_live_ids);
    ds4_textbuf_free(&r->prompt);
    ds4_tokvec_free(&r->tokens);
    memset(r, 0, sizeof(*r));
}

static int push_str(char ***v, int *n, const char *s) {
    char **t = realloc(*v, (size_t)(*n + 1) * sizeof(**v));
    if (!t) return -1;
    *v = t;
    if (!(t[*n] = strdup(s))) return -1;
    (*n)++;
    return 0;
}

int srv_note_output_id(srv_request *r, const char *id, bool replayed) {
    if (replayed) return 0;
    for (int i = 0; i < r->n_live_ids; i++)
        if (strcmp(r->live_ids[i], id) == 0) return 0;
    return push_str(&r->live_ids, &r->n_live_ids, id);
}

bool srv_chat_has_call_id(const ds4_chat *c, const char *id) {
    for (int i = 0; i < c->n_msgs; i++)
        for (int k = 0; k < c->msgs[i]->n_calls; k++)
            if (c->msgs[i]->calls[k].id && strcmp(c->msgs[i]->calls[k].id, id) == 0) return true;
    return false;
}

/* ============================================================ field helpers */

int srv_json_int(const cJSON *j, int *out) {
    if (!srv_json_given(j)) return 0;
    if (!cJSON_IsNumber(j)) return -1;
    const double d = j->valuedouble;
    if (isnan(d)) return -1;
    *out = d <= 0 ? 0 : d >= (double)INT_MAX ? INT_MAX : (int)d;
    return 0;
}

static int json_float(const cJSON *j, float *out) {
    if (!srv_json_given(j)) return 0;
    if (!cJSON_IsNumber(j)) return -1;
    *out = (float)j->valuedouble;
    return 0;
}

const cJSON *srv_messages_array(const cJSON *root, const char *body, size_t len, srv_span **raw_msgs, int *n_raw,
                                srv_error *e) {
    *raw_msgs = NULL;
    *n_raw = 0;
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
    if (!srv_json_given(msgs)) {
        srv_errorf(e, 400, "missing messages");
        return NULL;
    }
    if (!cJSON_IsArray(msgs)) {
        srv_errorf(e, 400, "invalid JSON request: messages must be an array");
        return NULL;
    }
    *raw_msgs = srv_span_elements(srv_span_member((srv_span){body, len}, "messages"), n_raw);
    return msgs;
}

int srv_content_text(const cJSON *c, bool strict, ds4_textbuf *out, srv_error *e) {
    if (!srv_json_given(c)) return 0;
    if (cJSON_IsString(c)) {
        ds4_textbuf_puts(out, c->valuestring);
        return 0;
    }
    if (!cJSON_IsArray(c)) {
        if (strict) return srv_errorf(e, 400, "invalid JSON request");
        return 0; /* other value types -> "" (§3.10) */
    }
    const cJSON *p;
    cJSON_ArrayForEach(p, c) {
        if (cJSON_IsString(p)) {
            ds4_textbuf_puts(out, p->valuestring);
            continue;
        }
        if (!cJSON_IsObject(p)) {
            if (strict) return srv_errorf(e, 400, "invalid JSON request");
            continue;
        }
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(p, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(p, "text");
        if (strict) {
            static const char *const ok[] = {"input_text", "output_text", "text", "summary_text", "reasoning_text"};
            bool good = false;
            for (int i = 0; i < 5 && cJSON_IsString(type); i++) good |= strcmp(type->valuestring, ok[i]) == 0;
            if (!good)
                return srv_errorf(e, 400, "unsupported content block type '%s' (only text is supported)",
                                  cJSON_IsString(type) ? type->valuestring : "?");
        }
        if (cJSON_IsString(text)) ds4_textbuf_puts(out, text->valuestring);
        else if (srv_json_given(text) && strict) return srv_errorf(e, 400, "invalid JSON request");
    }
    return 0;
}

int srv_add_tool_line(srv_request *r, const cJSON *t, const char *raw, size_t raw_len, bool with_type,
                      const char *name_prefix, srv_error *e) {
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(t, "name");
    const cJSON *desc = cJSON_GetObjectItemCaseSensitive(t, "description");
    if (!cJSON_IsString(name) || !name->valuestring[0]) return srv_errorf(e, 400, "invalid JSON request: a tool has no name");
    if (srv_json_given(desc) && !cJSON_IsString(desc)) return srv_errorf(e, 400, "invalid JSON request");
    /* The wrapper is compact JSON; the schema keeps the client's bytes. */
    const char *schema_key = NULL;
    srv_span schema = {NULL, 0}, whole = {raw, raw_len};
    static const char *const keys[] = {"parameters", "input_schema"};
    for (int i = 0; i < 2 && !schema.p; i++) {
        schema = srv_span_member(whole, keys[i]);
        schema_key = keys[i];
    }
    ds4_textbuf line;
    ds4_textbuf_init(&line);
    ds4_textbuf_putc(&line, '{');
    if (with_type) ds4_textbuf_puts(&line, "\"type\":\"function\",");
    ds4_textbuf_puts(&line, "\"name\":\"");
    if (name_prefix) srv_json_append_escaped(&line, name_prefix, strlen(name_prefix));
    srv_json_append_escaped(&line, name->valuestring, strlen(name->valuestring));
    ds4_textbuf_putc(&line, '"');
    if (cJSON_IsString(desc)) {
        ds4_textbuf_puts(&line, ",\"description\":\"");
        srv_json_append_escaped(&line, desc->valuestring, strlen(desc->valuestring));
        ds4_textbuf_putc(&line, '"');
    }
    if (schema.p) {
        ds4_textbuf_puts(&line, ",\"");
        ds4_textbuf_puts(&line, schema_key);
        ds4_textbuf_puts(&line, "\":");
        ds4_textbuf_append(&line, schema.p, schema.n);
    }
    ds4_textbuf_putc(&line, '}');
    int rc = line.oom || ds4_chat_add_tool(&r->chat, line.p, line.n) != 0 ? srv_errorf(e, 500, "out of memory") : 0;
    ds4_textbuf_free(&line);
    return rc;
}

/* ============================================================ thinking (§6.3) */

typedef enum { EFF_UNSET = 0, EFF_HIGH, EFF_MAX, EFF_NONE } effort;

static int parse_effort(const cJSON *j, effort *out, srv_error *e) {
    if (!srv_json_given(j)) return 0;
    if (!cJSON_IsString(j)) return srv_errorf(e, 400, "invalid JSON request: reasoning effort must be a string");
    const char *v = j->valuestring;
    if (strcmp(v, "max") == 0) *out = EFF_MAX;
    else if (!strcmp(v, "xhigh") || !strcmp(v, "high") || !strcmp(v, "medium") || !strcmp(v, "low") ||
             !strcmp(v, "minimal"))
        *out = EFF_HIGH;
    else if (strcmp(v, "none") == 0) *out = EFF_NONE;
    else return srv_errorf(e, 400, "invalid reasoning effort '%s' (use none, minimal, low, medium, high, xhigh or max)", v);
    return 0;
}

static int resolve_thinking(srv_api api, const cJSON *root, const char *model, srv_request *r, srv_error *e) {
    int explicit_on = -1; /* -1 none, 0 disabled, 1 enabled */
    effort eff = EFF_UNSET;
    const cJSON *th = cJSON_GetObjectItemCaseSensitive(root, "thinking");
    if (api != SRV_API_RESPONSES && srv_json_given(th)) {
        if (cJSON_IsBool(th)) explicit_on = cJSON_IsTrue(th);
        else if (cJSON_IsObject(th)) {
            const cJSON *type = cJSON_GetObjectItemCaseSensitive(th, "type");
            if (srv_json_given(type) && !cJSON_IsString(type)) return srv_errorf(e, 400, "invalid JSON request");
            explicit_on = cJSON_IsString(type) && strcmp(type->valuestring, "disabled") == 0 ? 0 : 1;
        } else return srv_errorf(e, 400, "invalid JSON request: thinking must be a boolean or an object");
    }
    if (api == SRV_API_CHAT || api == SRV_API_COMPLETIONS) {
        const cJSON *think = cJSON_GetObjectItemCaseSensitive(root, "think");
        if (srv_json_given(think)) {
            if (!cJSON_IsBool(think)) return srv_errorf(e, 400, "invalid JSON request: think must be a boolean");
            explicit_on = cJSON_IsTrue(think);
        }
    }
    if (api == SRV_API_RESPONSES) {
        const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "reasoning");
        if (srv_json_given(rs)) {
            if (!cJSON_IsObject(rs)) return srv_errorf(e, 400, "invalid JSON request: reasoning must be an object");
            const cJSON *ef = cJSON_GetObjectItemCaseSensitive(rs, "effort");
            if (parse_effort(ef, &eff, e)) return -1;
            if (eff != EFF_UNSET) explicit_on = eff != EFF_NONE;
            const cJSON *sum = cJSON_GetObjectItemCaseSensitive(rs, "summary");
            if (cJSON_IsString(sum))
                r->summary = !strcmp(sum->valuestring, "auto") || !strcmp(sum->valuestring, "concise") ||
                             !strcmp(sum->valuestring, "detailed");
        }
    } else {
        if (parse_effort(cJSON_GetObjectItemCaseSensitive(root, "reasoning_effort"), &eff, e)) return -1;
        if (anthropic(api)) {
            const cJSON *oc = cJSON_GetObjectItemCaseSensitive(root, "output_config");
            if (cJSON_IsObject(oc) && parse_effort(cJSON_GetObjectItemCaseSensitive(oc, "effort"), &eff, e)) return -1;
        }
    }
    bool on = true;
    if (explicit_on >= 0) on = explicit_on;
    else if (strcmp(model, "deepseek-chat") == 0) on = false;
    else if (strcmp(model, "deepseek-reasoner") == 0) on = true;
    ds4_think_mode m = !on || eff == EFF_NONE ? DS4_THINK_NONE : eff == EFF_MAX ? DS4_THINK_MAX : DS4_THINK_HIGH;
    r->think = ds4_chat_effective_think(m, r->chat.ctx_size);
    r->chat.think = r->think;
    return 0;
}

/* ============================================================ common fields */

static int parse_stops(const cJSON *j, srv_request *r, srv_error *e) {
    if (!srv_json_given(j)) return 0;
    if (cJSON_IsString(j)) {
        if (j->valuestring[0] && push_str(&r->stops, &r->n_stops, j->valuestring)) return srv_errorf(e, 500, "out of memory");
        return 0;
    }
    if (!cJSON_IsArray(j)) return srv_errorf(e, 400, "invalid JSON request: stop must be a string or an array of strings");
    const cJSON *s;
    cJSON_ArrayForEach(s, j) {
        if (!cJSON_IsString(s)) return srv_errorf(e, 400, "invalid JSON request: stop must be a string or an array of strings");
        if (s->valuestring[0] && push_str(&r->stops, &r->n_stops, s->valuestring)) return srv_errorf(e, 500, "out of memory");
    }
    return 0;
}

static int parse_common(srv_api api, const cJSON *root, srv_request *r, srv_error *e) {
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (srv_json_given(model) && !cJSON_IsString(model)) return srv_errorf(e, 400, "invalid JSON request: model must be a string");
    r->model = strdup(cJSON_IsString(model) ? model->valuestring : "deepseek-v4-flash");
    const cJSON *stream = cJSON_GetObjectItemCaseSensitive(root, "stream");
    if (srv_json_given(stream) && !cJSON_IsBool(stream)) return srv_errorf(e, 400, "invalid JSON request: stream must be a boolean");
    r->stream = cJSON_IsTrue(stream);
    if (api != SRV_API_RESPONSES) {
        const cJSON *so = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
        if (cJSON_IsObject(so)) r->include_usage = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(so, "include_usage"));
    }
    /* output limits */
    static const char *const lim_chat[] = {"max_tokens", "max_completion_tokens", NULL};
    static const char *const lim_resp[] = {"max_output_tokens", "max_tokens", NULL};
    static const char *const lim_other[] = {"max_tokens", NULL};
    const char *const *lims = api == SRV_API_CHAT ? lim_chat : api == SRV_API_RESPONSES ? lim_resp : lim_other;
    for (int i = 0; lims[i]; i++) {
        const cJSON *j = cJSON_GetObjectItemCaseSensitive(root, lims[i]);
        int v = -1;
        if (srv_json_int(j, &v)) return srv_errorf(e, 400, "invalid JSON request: %s must be an integer", lims[i]);
        if (v >= 0 && r->max_tokens < 0) r->max_tokens = v;
    }
    /* sampling knobs (Responses reads only temperature and top_p, §6.6.1) */
    ds4_sampling *s = &r->sampling;
    if (json_float(cJSON_GetObjectItemCaseSensitive(root, "temperature"), &s->temperature) ||
        json_float(cJSON_GetObjectItemCaseSensitive(root, "top_p"), &s->top_p))
        return srv_errorf(e, 400, "invalid JSON request: temperature and top_p must be numbers");
    if (api != SRV_API_RESPONSES) {
        int k = s->top_k;
        if (json_float(cJSON_GetObjectItemCaseSensitive(root, "min_p"), &s->min_p) ||
            srv_json_int(cJSON_GetObjectItemCaseSensitive(root, "top_k"), &k))
            return srv_errorf(e, 400, "invalid JSON request: min_p and top_k must be numbers");
        s->top_k = k;
        const cJSON *seed = cJSON_GetObjectItemCaseSensitive(root, "seed");
        if (srv_json_given(seed)) {
            if (!cJSON_IsNumber(seed)) return srv_errorf(e, 400, "invalid JSON request: seed must be an integer");
            const double d = seed->valuedouble;
            s->seed = d <= 0 || isnan(d) ? 0 : d >= 1.8e19 ? UINT64_MAX : (uint64_t)d;
        }
        if (parse_stops(cJSON_GetObjectItemCaseSensitive(root, anthropic(api) ? "stop_sequences" : "stop"), r, e))
            return -1;
    }
    return resolve_thinking(api, root, r->model, r, e);
}

/* ============================================================ replay and tail */

static void apply_replay(srv_request *r, srv_tool_memory *tm) {
    for (int i = 0; i < r->chat.n_msgs; i++) {
        ds4_chat_msg *m = r->chat.msgs[i];
        if (m->role != DS4_ROLE_ASSISTANT || m->n_calls == 0) continue;
        const char *ids[64];
        int n = 0, missing = 0;
        bool ok = m->n_calls <= 64;
        for (int k = 0; ok && k < m->n_calls; k++) {
            if (!m->calls[k].id) ok = false;
            else ids[n++] = m->calls[k].id;
        }
        size_t len = 0;
        char *blk = ok ? srv_toolmem_replay(tm, ids, n, &len, &missing, NULL) : NULL;
        if (!ok) missing = m->n_calls;
        if (blk) {
            ds4_chat_msg_set_raw_dsml(m, blk, len);
            r->replay_mem++;
            free(blk);
        } else {
            r->replay_canonical++;
            r->replay_missing += missing;
        }
    }
}

void srv_request_find_tail(srv_request *r) {
    const ds4_chat *c = &r->chat;
    int end = c->n_msgs;
    while (end > 0 && c->msgs[end - 1]->role == DS4_ROLE_SYSTEM) end--;
    int from = end;
    while (from > 0) {
        const ds4_chat_msg *m = c->msgs[from - 1];
        bool is_out = m->role == DS4_ROLE_TOOL || (m->role == DS4_ROLE_USER && m->n_tool_call_ids > 0);
        if (!is_out) break;
        from--;
    }
    if (from == end) return;
    r->tail_from = from;
    /* the candidate set: the calls of the assistant turn before the run, or
     * the ids the outputs carry when the request is only outputs */
    int a = from - 1;
    while (a >= 0 && c->msgs[a]->role == DS4_ROLE_SYSTEM) a--;
    if (a >= 0 && c->msgs[a]->role == DS4_ROLE_ASSISTANT) {
        for (int k = 0; k < c->msgs[a]->n_calls; k++)
            if (c->msgs[a]->calls[k].id) push_str(&r->tail_ids, &r->n_tail_ids, c->msgs[a]->calls[k].id);
    } else if (a < 0) {
        for (int i = from; i < end; i++)
            for (int k = 0; k < c->msgs[i]->n_tool_call_ids; k++)
                push_str(&r->tail_ids, &r->n_tail_ids, c->msgs[i]->tool_call_ids[k]);
    }
}

/* ============================================================ entry point */

int srv_request_parse(srv_api api, const char *body, size_t len, const srv_parse_ctx *ctx, srv_request *r,
                      srv_error *e) {
    r->api = api;
    r->chat.ctx_size = ctx->ctx;
    cJSON *root = srv_json_parse(body, len);
    if (!root) return srv_errorf(e, 400, "invalid JSON request");
    int rc = -1;
    if (!cJSON_IsObject(root)) {
        srv_errorf(e, 400, "invalid JSON request: the body must be a JSON object");
        goto out;
    }
    if (parse_common(api, root, r, e)) goto out;
    switch (api) {
    case SRV_API_CHAT: rc = srv_parse_chat(root, body, len, r, e); break;
    case SRV_API_COMPLETIONS: rc = srv_parse_completions(root, r, e); break;
    case SRV_API_RESPONSES: rc = srv_parse_responses(root, body, len, r, e); break;
    case SRV_API_MESSAGES:
    case SRV_API_COUNT_TOKENS: rc = srv_parse_messages(root, body, len, r, e); break;
    }
    if (rc) goto out;
    rc = -1;
    r->tools_active = ds4_chat_tools_active(&r->chat);
    srv_request_find_tail(r);
    /* §6.12.1/2: a tool output must answer a call replayed in this request
     * or one of the live session's last calls */
    if (api == SRV_API_RESPONSES || anthropic(api)) {
        for (int i = 0; i < r->n_live_ids; i++) {
            if (ctx->live_id && ctx->live_id(ctx->live_ud, r->live_ids[i])) continue;
            if (api == SRV_API_RESPONSES)
                srv_errorf(e, 400, "Responses continuation state is not available for call_id %s; retry by replaying the full input history", r->live_ids[i]);
            else
                srv_errorf(e, 400, "Anthropic continuation state is not available for tool_use_id %s; retry by replaying the full messages history", r->live_ids[i]);
            goto out;
        }
    }
    if (ctx->toolmem) {
        if (ctx->preload) ctx->preload(ctx->live_ud, &r->chat);
        apply_replay(r, ctx->toolmem);
    }
    ds4_err err = {{0}};
    if (ds4_chat_render(&r->chat, &r->prompt, &err) != 0) {
        srv_errorf(e, 500, "%s", err.msg);
        goto out;
    }
    if (ctx->tok) {
        if (ds4_tokenize(ctx->tok, r->prompt.p ? r->prompt.p : "", r->prompt.n, true, &r->tokens, &err) != 0) {
            srv_errorf(e, 500, "%s", err.msg);
            goto out;
        }
        if (api != SRV_API_COUNT_TOKENS && (long)r->tokens.n >= ctx->ctx) {
            srv_errorf(e, 400, "Prompt has %zu tokens, but the configured context size is %ld tokens", r->tokens.n, ctx->ctx);
            e->ctx_exceeded = true;
            e->n_prompt = (int)r->tokens.n;
            e->n_ctx = (int)ctx->ctx;
            goto out;
        }
    }
    rc = 0;
out:
    cJSON_Delete(root);
    return rc;
}
