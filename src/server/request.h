/* ds4-server — request normalization (INTERFACES.md §6.3–§6.7, §3.10).
 *
 * Every POST body is turned into one srv_request: the conversation (a
 * ds4_chat, rendered by the text layer), generation options, and what the
 * worker needs for continuation and output (stream flags, stop strings,
 * Responses namespaces, tool ids).  Parsing runs on the client's thread and
 * never touches the live session; errors come back as srv_error in the
 * shape of the request's API (§6.9). */
#ifndef DS4_SERVER_REQUEST_H
#define DS4_SERVER_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "server/jsonutil.h"
#include "text/chat.h"
#include "text/sampler.h"
#include "text/tokenizer.h"

typedef enum srv_api {
    SRV_API_CHAT = 0,     /* /v1/chat/completions */
    SRV_API_COMPLETIONS,  /* /v1/completions */
    SRV_API_RESPONSES,    /* /v1/responses */
    SRV_API_MESSAGES,     /* /v1/messages (Anthropic) */
    SRV_API_COUNT_TOKENS, /* /v1/messages/count_tokens (parsed like messages) */
} srv_api;

const char *srv_api_name(srv_api a);
/* "chat", "completions", "responses", "messages"; -1 if unknown. */
int srv_api_parse(const char *s, srv_api *out);

/* ------------------------------------------------------------ errors */

typedef struct srv_error {
    int status;          /* HTTP status; 0 = no error */
    char msg[512];
    /* context_length_exceeded details (§6.9) */
    bool ctx_exceeded;
    int n_prompt, n_ctx;
} srv_error;

int srv_errorf(srv_error *e, int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* The JSON error body for this API (OpenAI envelope, or the Anthropic one for
 * /v1/messages), ending with "\n".  malloc'd; *len set. */
char *srv_error_body(srv_api api, const srv_error *e, size_t *len);
/* The same as an SSE event (errors after the stream started, §6.9). */
char *srv_error_sse(srv_api api, const char *msg, size_t *len);

/* ------------------------------------------------------------ request */

/* A Responses namespaced tool: the prompt sees NS+name, clients see both. */
typedef struct srv_tool_ns {
    char *prompt_name;
    char *name;
    char *ns;
} srv_tool_ns;

typedef struct srv_request {
    srv_api api;
    char *model;                 /* echoed back */
    bool stream;
    bool include_usage;          /* stream_options.include_usage */
    int max_tokens;              /* -1: the server default */
    ds4_sampling sampling;       /* client values (normalized by the sampler) */
    ds4_think_mode think;        /* effective mode (Think Max gated by ctx) */
    char **stops;                /* stop strings (never empty) */
    int n_stops;
    ds4_chat chat;
    bool tools_active;
    /* Responses */
    bool summary;                /* reasoning.summary opted in */
    srv_tool_ns *ns;
    int n_ns;
    bool hosted_tool_search;     /* a {"type":"tool_search"} tool is present */
    /* Continuations (§6.12.1/2): the trailing run of tool outputs. */
    int tail_from;               /* first message of the run, -1 if none */
    char **tail_ids;             /* the call ids that run answers */
    int n_tail_ids;
    char **live_ids;             /* tool output ids whose call was not replayed */
    int n_live_ids;
    /* Rendered prompt and its full tokenization. */
    ds4_textbuf prompt;
    ds4_tokvec tokens;
    /* Tool replay statistics (trace). */
    int replay_mem, replay_canonical, replay_missing;
} srv_request;

/* What parsing needs from the server. */
typedef struct srv_tool_memory srv_tool_memory;
typedef struct srv_parse_ctx {
    long ctx;                    /* context size (Think Max gate, context check) */
    const ds4_tokenizer *tok;    /* NULL: render only (--dump-prompt) */
    srv_tool_memory *toolmem;    /* NULL: no exact replay */
    /* Call ids of the live session's last tool turn (snapshot; may be NULL). */
    bool (*live_id)(void *ud, const char *id);
    /* Called before exact replay: load disk tool maps for the request's ids. */
    void (*preload)(void *ud, const ds4_chat *chat);
    void *live_ud;
} srv_parse_ctx;

void srv_request_init(srv_request *r);
void srv_request_free(srv_request *r);

/* Parse, normalize, render and (with a tokenizer) tokenize and check the
 * context.  0, or -1 with e filled (status 400 and the §6.9 message). */
int srv_request_parse(srv_api api, const char *body, size_t len, const srv_parse_ctx *ctx, srv_request *r,
                      srv_error *e);

/* Per-API parsers, called by srv_request_parse after the common fields. */
int srv_parse_chat(const cJSON *root, const char *body, size_t len, srv_request *r, srv_error *e);
int srv_parse_completions(const cJSON *root, srv_request *r, srv_error *e);
int srv_parse_responses(const cJSON *root, const char *body, size_t len, srv_request *r, srv_error *e);
int srv_parse_messages(const cJSON *root, const char *body, size_t len, srv_request *r, srv_error *e);

/* ------------------------------------------------------ shared helpers */

/* The "messages" array of a chat / Anthropic body and the raw text of each
 * element (*raw_msgs, malloc'd, *n_raw of them; free it). NULL (e filled, 400)
 * when it is missing or not an array. */
const cJSON *srv_messages_array(const cJSON *root, const char *body, size_t len, srv_span **raw_msgs, int *n_raw,
                                srv_error *e);

/* Content normalization: string / null / array of text parts. strict (the
 * Responses rule) rejects non-text blocks; otherwise they are dropped.
 * Appends to out.  0, or -1 (e filled) for a wrong type. */
int srv_content_text(const cJSON *c, bool strict, ds4_textbuf *out, srv_error *e);

/* Add a tool schema line {"name":…,"description":…,<schema_key>:RAW} built from
 * the tool object `t` whose raw text is `raw` (§3.8/§3.13). with_type adds a
 * leading "type":"function" (Responses).  name_prefix is prepended to the
 * name (Responses namespaces). */
int srv_add_tool_line(srv_request *r, const cJSON *t, const char *raw, size_t raw_len, bool with_type,
                      const char *name_prefix, srv_error *e);

/* Record id as a tool output id; replayed = its call appeared earlier in
 * the request. */
int srv_note_output_id(srv_request *r, const char *id, bool replayed);

/* Integer field with the §6.3 clamp; returns 0 (absent: *out unchanged), -1
 * wrong type. */
int srv_json_int(const cJSON *j, int *out);

/* Set or test the "tail" bookkeeping after messages are built. */
void srv_request_find_tail(srv_request *r);

bool srv_chat_has_call_id(const ds4_chat *c, const char *id);

#endif
