/* ds4 — conversation model and prompt renderer (INTERFACES.md §3).
 *
 * Every chat-like request (OpenAI chat, Responses, Anthropic, completions)
 * is normalized by the server into a ds4_chat: an ordered list of messages
 * plus the tool schema lines, the thinking mode and the context size.  The
 * renderer turns it into the exact prompt bytes of §3; those bytes are the
 * identity of the request (cache keys, prefix matching), so every byte
 * matters and nothing here is "close enough".
 *
 * The model holds text only.  Tool schemas and tool-call arguments are JSON
 * text exactly as the client sent it (the renderer copies schema lines
 * verbatim and walks argument JSON itself for canonical DSML, §4.8); no JSON
 * library is involved.  Content arrays, Anthropic blocks and Responses items
 * are flattened by the server with the append helpers below (§3.10, §6.6.2,
 * §6.7.2).
 *
 * Typical use:
 *
 *   ds4_chat c;
 *   ds4_chat_init(&c);
 *   c.think = DS4_THINK_HIGH;
 *   c.ctx_size = 32768;
 *   ds4_chat_add_tool(&c, schema_json, schema_len);
 *   ds4_chat_add(&c, DS4_ROLE_SYSTEM, "You are terse.", 14);
 *   ds4_chat_add(&c, DS4_ROLE_USER, "Hello", 5);
 *   ds4_textbuf prompt;
 *   ds4_textbuf_init(&prompt);
 *   ds4_chat_render(&c, &prompt, &err);
 *   ...
 *   ds4_textbuf_free(&prompt);
 *   ds4_chat_free(&c);
 */
#ifndef DS4_TEXT_CHAT_H
#define DS4_TEXT_CHAT_H

#include <stddef.h>

#include "text/chat_buf.h"
#include "text/dsml.h"
#include "util/err.h"

/* --------------------------------------------------- fixed strings (§14.3) */

#define DS4_CHAT_BOS "<｜begin▁of▁sentence｜>"
#define DS4_CHAT_EOS "<｜end▁of▁sentence｜>"
#define DS4_CHAT_USER "<｜User｜>"
#define DS4_CHAT_ASSISTANT "<｜Assistant｜>"
#define DS4_CHAT_TOOL_RESULT_OPEN "<tool_result>"
#define DS4_CHAT_TOOL_RESULT_CLOSE "</tool_result>"
/* System text of /v1/completions and of the CLI (no final period). */
#define DS4_CHAT_DEFAULT_SYSTEM "You are a helpful assistant"
/* System text of ds4-bench --chat-prompt-file (with a period). */
#define DS4_CHAT_BENCH_SYSTEM "You are a helpful assistant."

/* Think Max needs at least this context (384K tokens); below it a request for
 * Think Max silently runs as plain thinking (§3.5). */
#define DS4_CHAT_THINK_MAX_MIN_CTX 393216L

/* §14.1: inserted right after BOS in Think Max mode (ends with "\n\n"). */
extern const char ds4_chat_think_max_prefix[];
/* §14.2: the tools block is preamble + schema lines joined by "\n" + postamble
 * (the postamble has no trailing newline). */
extern const char ds4_chat_tools_preamble[];
extern const char ds4_chat_tools_postamble[];

/* --------------------------------------------------------------- model */

typedef enum ds4_role {
    DS4_ROLE_SYSTEM = 0, /* also "developer": hoisted into the system region */
    DS4_ROLE_USER,
    DS4_ROLE_ASSISTANT,
    DS4_ROLE_TOOL /* also "function": a tool result */
} ds4_role;

typedef enum ds4_think_mode {
    DS4_THINK_NONE = 0, /* non-thinking: generation prefix <｜Assistant｜></think> */
    DS4_THINK_HIGH,     /* thinking: <｜Assistant｜><think> */
    DS4_THINK_MAX       /* thinking + the Think Max prefix (ctx >= 393216 only) */
} ds4_think_mode;

/* Map an API role string (n bytes) to a role: system, developer, user,
 * assistant, tool, function.  Returns 0, or -1 for an unknown role (§3.1: such
 * a message is dropped silently; a missing role is "user" — the caller's
 * decision since it has no string). */
int ds4_role_parse(const char *s, size_t n, ds4_role *out);
const char *ds4_role_name(ds4_role r);

typedef struct ds4_chat_msg {
    ds4_role role;
    char *content;          /* never NULL; may contain any bytes */
    size_t content_len;
    char *reasoning;        /* assistant reasoning (reasoning_content, thinking
                             * blocks, Responses reasoning items); never NULL */
    size_t reasoning_len;
    ds4_dsml_call *calls;   /* assistant tool calls: id, name, arguments JSON */
    int n_calls, cap_calls;
    char **tool_call_ids;   /* tool results: the call ids they answer (one for
                             * an OpenAI tool message, all tool_use_ids of an
                             * Anthropic user message) */
    int n_tool_call_ids, cap_tool_call_ids;
    char *raw_dsml;         /* exact sampled DSML block for replay (§6.11),
                             * rendered verbatim instead of the canonical form;
                             * NULL = canonical */
    size_t raw_dsml_len;
} ds4_chat_msg;

typedef struct ds4_chat {
    ds4_chat_msg **msgs;    /* stable pointers: adding messages never moves one */
    int n_msgs, cap_msgs;
    char **tools;           /* tool schema lines (raw JSON text, already unwrapped
                             * per §3.8), in request order */
    size_t *tool_lens;
    int n_tools, cap_tools;
    int tool_choice_none;   /* tool_choice "none": no tools block, but tool
                             * history still renders (§3.7) */
    ds4_think_mode think;   /* requested mode (Think Max gated by ctx_size) */
    long ctx_size;          /* server/session context in tokens */
} ds4_chat;

void ds4_chat_init(ds4_chat *c);
void ds4_chat_free(ds4_chat *c);

/* Append a message (content copied; NULL content = ""), returning it so the
 * caller can add reasoning, calls, ids.  NULL when out of memory. */
ds4_chat_msg *ds4_chat_add(ds4_chat *c, ds4_role role, const char *content, size_t len);

/* Builders; each returns 0, or -1 when out of memory. */
int ds4_chat_msg_append_content(ds4_chat_msg *m, const char *s, size_t n);
int ds4_chat_msg_append_reasoning(ds4_chat_msg *m, const char *s, size_t n);
/* Append `<tool_result>` + escaped s + `</tool_result>` to the content: how an
 * Anthropic tool_result block becomes part of a user message (§6.7.2). */
int ds4_chat_msg_append_tool_result(ds4_chat_msg *m, const char *s, size_t n);
/* id may be NULL.  args is the JSON text (string form or raw value). */
int ds4_chat_msg_add_call(ds4_chat_msg *m, const char *id, const char *name, const char *args, size_t args_len);
int ds4_chat_msg_add_tool_call_id(ds4_chat_msg *m, const char *id);
int ds4_chat_msg_set_raw_dsml(ds4_chat_msg *m, const char *s, size_t n);
/* One schema line (raw JSON text of one tool). */
int ds4_chat_add_tool(ds4_chat *c, const char *json, size_t len);

/* ----------------------------------------------------------- queries */

/* The mode actually rendered: Think Max falls back to high below
 * DS4_CHAT_THINK_MAX_MIN_CTX. */
ds4_think_mode ds4_chat_effective_think(ds4_think_mode requested, long ctx_size);
/* Tools block rendered: at least one schema line and tool_choice != none. */
int ds4_chat_tools_active(const ds4_chat *c);
/* Tool context (§3.6): tools active, or an assistant message with tool calls,
 * or a tool result in the history. */
int ds4_chat_tool_context(const ds4_chat *c);

/* ----------------------------------------------------------- rendering */

/* The full prompt (§3.2): BOS [Think Max prefix] system region, turns, and
 * the generation prefix when a user/tool turn is pending.  Appends to out.
 * 0, or -1 (out of memory, described in err). */
int ds4_chat_render(const ds4_chat *c, ds4_textbuf *out, ds4_err *err);

/* The conversation as it will render as history inside a LATER request (one
 * that adds a user message): every assistant turn follows the reasoning
 * retention rule as a past turn, and no generation prefix is added.  The
 * result is therefore a byte prefix of the next request's prompt: use it for
 * the "visible" keys of §6.12.1/§6.12.3 and the checkpoint suffix of §6.12.4
 * (render the conversation with the generated reply appended). */
int ds4_chat_render_history(const ds4_chat *c, ds4_textbuf *out, ds4_err *err);

/* The live tail of §3.11 (g) / §6.12: `<｜end▁of▁sentence｜>` + the turns of
 * messages[from..] (rendered as if they started a fresh exchange; system
 * messages are skipped) + the generation prefix.  Reasoning retention uses the
 * whole conversation's tool context. */
int ds4_chat_render_tail(const ds4_chat *c, int from, ds4_textbuf *out, ds4_err *err);

/* ----------------------------------------------------------- schemas */

/* What the server records per tool (§3.8): the tool name and the property
 * names of its parameter schema, in schema order (`parameters.properties`
 * for OpenAI/Responses function objects, `input_schema.properties` for
 * Anthropic tools).  Informational: canonical DSML follows the order of the
 * call's own argument JSON (§4.8). */
typedef struct ds4_chat_tool_info {
    char *name;    /* decoded "name"; NULL when absent or not a string */
    char **props;  /* n_props decoded property names */
    int n_props;
} ds4_chat_tool_info;

/* Read one schema line.  0, or -1 when the line is not a JSON object (or on
 * out of memory).  Free with ds4_chat_tool_info_free. */
int ds4_chat_tool_info_parse(const char *json, size_t len, ds4_chat_tool_info *out);
void ds4_chat_tool_info_free(ds4_chat_tool_info *info);

/* Tool-result escaping of §3.9: `</tool_result>` -> `&lt;/tool_result>`,
 * everything else literal. */
int ds4_chat_escape_tool_result(ds4_textbuf *out, const char *s, size_t n);

#endif
