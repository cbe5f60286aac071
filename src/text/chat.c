/* ds4 — conversation model and prompt renderer (INTERFACES.md §3).
 * See chat.h for the API; the rules implemented here are quoted in the
 * comments so the code can be checked against the spec line by line. */
#include "text/chat.h"

#include <stdlib.h>
#include <string.h>

#include "text/dsml_json.h"

/* ============================================================ constants */

/* §14.1, byte-exact (from DeepSeek's official encoder). */
const char ds4_chat_think_max_prefix[] =
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to resolve the root "
    "cause, rigorously stress-testing your logic against all potential paths, edge cases, and adversarial "
    "scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate step, considered "
    "alternative, and rejected hypothesis to ensure absolutely no assumption is left unchecked.\n"
    "\n";

/* §14.2, byte-exact: the text before the schema lines ... */
const char ds4_chat_tools_preamble[] =
    "## Tools\n"
    "\n"
    "You have access to a set of tools to help answer the user question. You can invoke tools by writing a "
    "\"<｜DSML｜tool_calls>\" block like the following:\n"
    "\n"
    "<｜DSML｜tool_calls>\n"
    "<｜DSML｜invoke name=\"$TOOL_NAME\">\n"
    "<｜DSML｜parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE</｜DSML｜parameter>\n"
    "...\n"
    "</｜DSML｜invoke>\n"
    "<｜DSML｜invoke name=\"$TOOL_NAME2\">\n"
    "...\n"
    "</｜DSML｜invoke>\n"
    "</｜DSML｜tool_calls>\n"
    "\n"
    "String parameters should be specified as raw text and set `string=\"true\"`. Preserve characters such as "
    "`>`, `&`, and `&&` exactly; never replace normal string characters with XML or HTML entity escapes. Only if "
    "a string value itself contains the exact closing parameter tag `</｜DSML｜parameter>`, write that tag as "
    "`&lt;/｜DSML｜parameter>` inside the value. For all other types (numbers, booleans, arrays, objects), pass "
    "the value in JSON format and set `string=\"false\"`.\n"
    "\n"
    "If thinking_mode is enabled (triggered by <think>), you MUST output your complete reasoning inside "
    "<think>...</think> BEFORE any tool calls or final response.\n"
    "\n"
    "Otherwise, output directly after </think> with tool calls or final response.\n"
    "\n"
    "### Available Tool Schemas\n"
    "\n";

/* ... and after them (no trailing newline). */
const char ds4_chat_tools_postamble[] =
    "\n"
    "\n"
    "You MUST strictly follow the above defined tool name and parameter schemas to invoke tool calls. Use the "
    "exact parameter names from the schemas.";

/* ================================================================ roles */

int ds4_role_parse(const char *s, size_t n, ds4_role *out) {
    static const struct {
        const char *name;
        ds4_role role;
    } map[] = {
        {"system", DS4_ROLE_SYSTEM}, {"developer", DS4_ROLE_SYSTEM}, {"user", DS4_ROLE_USER},
        {"assistant", DS4_ROLE_ASSISTANT}, {"tool", DS4_ROLE_TOOL}, {"function", DS4_ROLE_TOOL},
    };
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        if (strlen(map[i].name) == n && memcmp(map[i].name, s, n) == 0) {
            *out = map[i].role;
            return 0;
        }
    }
    return -1;
}

const char *ds4_role_name(ds4_role r) {
    switch (r) {
    case DS4_ROLE_SYSTEM: return "system";
    case DS4_ROLE_USER: return "user";
    case DS4_ROLE_ASSISTANT: return "assistant";
    case DS4_ROLE_TOOL: return "tool";
    }
    return "?";
}

/* ================================================================ model */

static char *dup_bytes(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (!p) return NULL;
    if (n) memcpy(p, s, n);
    p[n] = 0;
    return p;
}

static char *dup_str(const char *s) { return s ? dup_bytes(s, strlen(s)) : NULL; }

/* Grow an array of `size`-byte elements to hold at least need elements. */
static int grow(void **arr, int *cap, int need, size_t size) {
    if (need <= *cap) return 0;
    int nc = *cap ? *cap : 4;
    while (nc < need) nc *= 2;
    void *p = realloc(*arr, (size_t)nc * size);
    if (!p) return -1;
    *arr = p;
    *cap = nc;
    return 0;
}

/* Append s[0..n) to a malloc'd NUL-terminated string with known length. */
static int append_bytes(char **dst, size_t *len, const char *s, size_t n) {
    if (n == 0) return 0;
    char *p = realloc(*dst, *len + n + 1);
    if (!p) return -1;
    memcpy(p + *len, s, n);
    *len += n;
    p[*len] = 0;
    *dst = p;
    return 0;
}

static void msg_free(ds4_chat_msg *m) {
    if (!m) return;
    free(m->content);
    free(m->reasoning);
    for (int i = 0; i < m->n_calls; i++) ds4_dsml_call_free(&m->calls[i]);
    free(m->calls);
    for (int i = 0; i < m->n_tool_call_ids; i++) free(m->tool_call_ids[i]);
    free(m->tool_call_ids);
    free(m->raw_dsml);
    free(m);
}

void ds4_chat_init(ds4_chat *c) {
    memset(c, 0, sizeof(*c));
    c->think = DS4_THINK_HIGH; /* §6.3 step 1: thinking on, effort high */
}

void ds4_chat_free(ds4_chat *c) {
    for (int i = 0; i < c->n_msgs; i++) msg_free(c->msgs[i]);
    free(c->msgs);
    for (int i = 0; i < c->n_tools; i++) free(c->tools[i]);
    free(c->tools);
    free(c->tool_lens);
    memset(c, 0, sizeof(*c));
}

ds4_chat_msg *ds4_chat_add(ds4_chat *c, ds4_role role, const char *content, size_t len) {
    if (grow((void **)&c->msgs, &c->cap_msgs, c->n_msgs + 1, sizeof(*c->msgs))) return NULL;
    ds4_chat_msg *m = calloc(1, sizeof(*m));
    if (!m) return NULL;
    m->role = role;
    m->content = dup_bytes(content ? content : "", content ? len : 0);
    m->content_len = content ? len : 0;
    m->reasoning = dup_bytes("", 0);
    if (!m->content || !m->reasoning) {
        msg_free(m);
        return NULL;
    }
    c->msgs[c->n_msgs++] = m;
    return m;
}

int ds4_chat_msg_append_content(ds4_chat_msg *m, const char *s, size_t n) {
    return append_bytes(&m->content, &m->content_len, s, n);
}

int ds4_chat_msg_append_reasoning(ds4_chat_msg *m, const char *s, size_t n) {
    return append_bytes(&m->reasoning, &m->reasoning_len, s, n);
}

int ds4_chat_msg_append_tool_result(ds4_chat_msg *m, const char *s, size_t n) {
    ds4_textbuf b;
    ds4_textbuf_init(&b);
    ds4_textbuf_puts(&b, DS4_CHAT_TOOL_RESULT_OPEN);
    ds4_chat_escape_tool_result(&b, s, n);
    ds4_textbuf_puts(&b, DS4_CHAT_TOOL_RESULT_CLOSE);
    int rc = b.oom ? -1 : append_bytes(&m->content, &m->content_len, b.p, b.n);
    ds4_textbuf_free(&b);
    return rc;
}

int ds4_chat_msg_add_call(ds4_chat_msg *m, const char *id, const char *name, const char *args, size_t args_len) {
    if (grow((void **)&m->calls, &m->cap_calls, m->n_calls + 1, sizeof(*m->calls))) return -1;
    ds4_dsml_call *k = &m->calls[m->n_calls];
    memset(k, 0, sizeof(*k));
    k->id = dup_str(id);
    k->name = dup_str(name ? name : "");
    k->arguments = dup_bytes(args ? args : "", args ? args_len : 0);
    k->arguments_len = args ? args_len : 0;
    k->arguments_valid = 1;
    if ((id && !k->id) || !k->name || !k->arguments) {
        ds4_dsml_call_free(k);
        return -1;
    }
    m->n_calls++;
    return 0;
}

int ds4_chat_msg_add_tool_call_id(ds4_chat_msg *m, const char *id) {
    if (grow((void **)&m->tool_call_ids, &m->cap_tool_call_ids, m->n_tool_call_ids + 1, sizeof(char *))) return -1;
    char *d = dup_str(id ? id : "");
    if (!d) return -1;
    m->tool_call_ids[m->n_tool_call_ids++] = d;
    return 0;
}

int ds4_chat_msg_set_raw_dsml(ds4_chat_msg *m, const char *s, size_t n) {
    char *d = NULL;
    if (s && !(d = dup_bytes(s, n))) return -1;
    free(m->raw_dsml);
    m->raw_dsml = d;
    m->raw_dsml_len = s ? n : 0;
    return 0;
}

int ds4_chat_add_tool(ds4_chat *c, const char *json, size_t len) {
    int cap = c->cap_tools;
    if (grow((void **)&c->tools, &cap, c->n_tools + 1, sizeof(*c->tools))) return -1;
    if (grow((void **)&c->tool_lens, &c->cap_tools, c->n_tools + 1, sizeof(*c->tool_lens))) return -1;
    char *d = dup_bytes(json, len);
    if (!d) return -1;
    c->tools[c->n_tools] = d;
    c->tool_lens[c->n_tools] = len;
    c->n_tools++;
    return 0;
}

/* ============================================================== queries */

ds4_think_mode ds4_chat_effective_think(ds4_think_mode requested, long ctx_size) {
    if (requested == DS4_THINK_MAX && ctx_size < DS4_CHAT_THINK_MAX_MIN_CTX) return DS4_THINK_HIGH;
    return requested;
}

int ds4_chat_tools_active(const ds4_chat *c) { return c->n_tools > 0 && !c->tool_choice_none; }

int ds4_chat_tool_context(const ds4_chat *c) {
    if (ds4_chat_tools_active(c)) return 1;
    for (int i = 0; i < c->n_msgs; i++) {
        const ds4_chat_msg *m = c->msgs[i];
        if (m->role == DS4_ROLE_TOOL) return 1;
        if (m->role == DS4_ROLE_ASSISTANT && (m->n_calls > 0 || m->raw_dsml)) return 1;
        /* An Anthropic user message made of tool_result blocks is a tool
         * result too (same bytes as the tool-message path, §6.7.2). */
        if (m->n_tool_call_ids > 0) return 1;
    }
    return 0;
}

/* ============================================================ rendering */

int ds4_chat_escape_tool_result(ds4_textbuf *out, const char *s, size_t n) {
    /* §3.9: only `</tool_result>` is touched, its '<' becomes `&lt;`; other
     * '<', '>' and '&' stay literal. */
    static const char close[] = DS4_CHAT_TOOL_RESULT_CLOSE;
    const size_t L = sizeof(close) - 1;
    size_t run = 0;
    for (size_t i = 0; i + L <= n; i++) {
        if (s[i] == '<' && memcmp(s + i, close, L) == 0) {
            ds4_textbuf_append(out, s + run, i - run);
            ds4_textbuf_puts(out, "&lt;");
            run = i + 1;
        }
    }
    ds4_textbuf_append(out, s + run, n - run);
    return out->oom ? -1 : 0;
}

/* BOS, the Think Max prefix and the system region (§3.2, §3.3). */
static void render_head(const ds4_chat *c, ds4_think_mode mode, ds4_textbuf *out) {
    ds4_textbuf_puts(out, DS4_CHAT_BOS);
    if (mode == DS4_THINK_MAX) ds4_textbuf_puts(out, ds4_chat_think_max_prefix);

    /* The Think Max prefix is not part of the region: the first system text
     * follows it directly (§3.11 e). */
    size_t region = out->n;
    if (ds4_chat_tools_active(c)) {
        ds4_textbuf_puts(out, ds4_chat_tools_preamble);
        for (int i = 0; i < c->n_tools; i++) {
            if (i) ds4_textbuf_putc(out, '\n');
            ds4_textbuf_append(out, c->tools[i], c->tool_lens[i]);
        }
        ds4_textbuf_puts(out, ds4_chat_tools_postamble);
    }
    /* Every system/developer message, wherever it sits in the list, with a
     * "\n\n" separator whenever something is already in the region. */
    for (int i = 0; i < c->n_msgs; i++) {
        const ds4_chat_msg *m = c->msgs[i];
        if (m->role != DS4_ROLE_SYSTEM) continue;
        if (out->n > region) ds4_textbuf_puts(out, "\n\n");
        ds4_textbuf_append(out, m->content, m->content_len);
    }
}

/* The turns of messages[from..n) (§3.4).  history: render as past turns of a
 * later request (no message counts as "after the last user message", and no
 * generation prefix). */
static void render_turns(const ds4_chat *c, int from, int history, ds4_think_mode mode, ds4_textbuf *out) {
    const int thinking = mode != DS4_THINK_NONE;
    const int tool_ctx = ds4_chat_tool_context(c);

    /* Index of the last user/tool message: an assistant message after it is
     * the newest turn and keeps its reasoning even without tool context. */
    int last_user = history ? c->n_msgs : -1;
    if (!history)
        for (int i = 0; i < c->n_msgs; i++)
            if (c->msgs[i]->role == DS4_ROLE_USER || c->msgs[i]->role == DS4_ROLE_TOOL) last_user = i;

    int pending_assistant = 0;   /* a user/tool turn awaits <｜Assistant｜> */
    int pending_tool_result = 0; /* the open user turn is made of tool results */
    for (int i = from; i < c->n_msgs; i++) {
        const ds4_chat_msg *m = c->msgs[i];
        switch (m->role) {
        case DS4_ROLE_USER:
            ds4_textbuf_puts(out, DS4_CHAT_USER);
            ds4_textbuf_append(out, m->content, m->content_len);
            pending_assistant = 1;
            pending_tool_result = 0;
            break;
        case DS4_ROLE_TOOL:
            /* Consecutive tool results share one <｜User｜>. */
            if (!pending_tool_result) ds4_textbuf_puts(out, DS4_CHAT_USER);
            ds4_textbuf_puts(out, DS4_CHAT_TOOL_RESULT_OPEN);
            ds4_chat_escape_tool_result(out, m->content, m->content_len);
            ds4_textbuf_puts(out, DS4_CHAT_TOOL_RESULT_CLOSE);
            pending_assistant = 1;
            pending_tool_result = 1;
            break;
        case DS4_ROLE_ASSISTANT:
            /* A second assistant message in a row (or one that opens the
             * conversation) gets no marker and no reasoning: its content is
             * glued to the previous end-of-sentence marker. */
            if (pending_assistant) {
                ds4_textbuf_puts(out, DS4_CHAT_ASSISTANT);
                if (thinking && (tool_ctx || i > last_user)) {
                    ds4_textbuf_puts(out, DS4_THINK_OPEN);
                    ds4_textbuf_append(out, m->reasoning, m->reasoning_len);
                    ds4_textbuf_puts(out, DS4_THINK_CLOSE);
                } else {
                    ds4_textbuf_puts(out, DS4_THINK_CLOSE);
                }
            }
            ds4_textbuf_append(out, m->content, m->content_len);
            /* Exact sampled bytes when known (§6.11), else canonical (§4.8). */
            if (m->raw_dsml) ds4_textbuf_append(out, m->raw_dsml, m->raw_dsml_len);
            else if (m->n_calls > 0 && ds4_dsml_render_calls(out, m->calls, m->n_calls)) out->oom = 1;
            ds4_textbuf_puts(out, DS4_CHAT_EOS);
            pending_assistant = 0;
            pending_tool_result = 0;
            break;
        case DS4_ROLE_SYSTEM:
            break; /* hoisted into the system region */
        }
    }
    if (pending_assistant && !history) {
        ds4_textbuf_puts(out, DS4_CHAT_ASSISTANT);
        ds4_textbuf_puts(out, thinking ? DS4_THINK_OPEN : DS4_THINK_CLOSE);
    }
}

static int finish(ds4_textbuf *out, ds4_err *err) {
    if (out->oom) return ds4_errf(err, "rendering the prompt: out of memory");
    return 0;
}

int ds4_chat_render(const ds4_chat *c, ds4_textbuf *out, ds4_err *err) {
    ds4_think_mode mode = ds4_chat_effective_think(c->think, c->ctx_size);
    render_head(c, mode, out);
    render_turns(c, 0, 0, mode, out);
    return finish(out, err);
}

int ds4_chat_render_history(const ds4_chat *c, ds4_textbuf *out, ds4_err *err) {
    ds4_think_mode mode = ds4_chat_effective_think(c->think, c->ctx_size);
    render_head(c, mode, out);
    render_turns(c, 0, 1, mode, out);
    return finish(out, err);
}

int ds4_chat_render_tail(const ds4_chat *c, int from, ds4_textbuf *out, ds4_err *err) {
    if (from < 0 || from > c->n_msgs) return ds4_errf(err, "render tail: message index %d out of range", from);
    ds4_think_mode mode = ds4_chat_effective_think(c->think, c->ctx_size);
    ds4_textbuf_puts(out, DS4_CHAT_EOS);
    render_turns(c, from, 0, mode, out);
    return finish(out, err);
}

/* ============================================================== schemas */

void ds4_chat_tool_info_free(ds4_chat_tool_info *info) {
    free(info->name);
    for (int i = 0; i < info->n_props; i++) free(info->props[i]);
    free(info->props);
    memset(info, 0, sizeof(*info));
}

/* Decode a member key / string value body into a malloc'd string. */
static char *decode_string(const char *body, size_t n) {
    ds4_textbuf b;
    ds4_textbuf_init(&b);
    if (ds4_json_string_decode(&b, body, n)) {
        ds4_textbuf_free(&b);
        return NULL;
    }
    return ds4_textbuf_detach(&b, NULL);
}

static int key_is(const char *k, size_t kl, const char *want) { return kl == strlen(want) && !memcmp(k, want, kl); }

/* Append the keys of schema["properties"] (schema is a JSON value's text). */
static int collect_props(const char *schema, size_t len, ds4_chat_tool_info *out) {
    ds4_json_object_iter it, pit;
    const char *k, *v, *pk, *pv;
    size_t kl, vl, pkl, pvl;
    int cap = 0;
    if (ds4_json_object_begin(&it, schema, len)) return 0; /* not an object: no properties */
    while (ds4_json_object_next(&it, &k, &kl, &v, &vl)) {
        if (!key_is(k, kl, "properties") || ds4_json_object_begin(&pit, v, vl)) continue;
        while (ds4_json_object_next(&pit, &pk, &pkl, &pv, &pvl)) {
            if (grow((void **)&out->props, &cap, out->n_props + 1, sizeof(char *))) return -1;
            char *name = decode_string(pk, pkl);
            if (!name) return -1;
            out->props[out->n_props++] = name;
        }
        break; /* the first "properties" member wins */
    }
    return 0;
}

int ds4_chat_tool_info_parse(const char *json, size_t len, ds4_chat_tool_info *out) {
    memset(out, 0, sizeof(*out));
    ds4_json_object_iter it;
    const char *k, *v;
    size_t kl, vl;
    if (ds4_json_object_begin(&it, json, len)) return -1;
    const char *schema = NULL;
    size_t schema_len = 0;
    int schema_rank = 0; /* parameters beats input_schema if both appear */
    while (ds4_json_object_next(&it, &k, &kl, &v, &vl)) {
        if (key_is(k, kl, "name") && !out->name && v[0] == '"') {
            if (!(out->name = decode_string(v + 1, vl - 2))) goto fail;
        } else if (key_is(k, kl, "parameters") && schema_rank < 2) {
            schema = v, schema_len = vl, schema_rank = 2;
        } else if (key_is(k, kl, "input_schema") && schema_rank < 1) {
            schema = v, schema_len = vl, schema_rank = 1;
        }
    }
    if (schema && collect_props(schema, schema_len, out)) goto fail;
    return 0;
fail:
    ds4_chat_tool_info_free(out);
    return -1;
}
