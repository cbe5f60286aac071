/* ds4-server — turning a generation into API responses.
 *
 * The worker reports what happens through three calls: begin (prefill done),
 * event (a DSML parser event: reasoning, visible text, tool-call start /
 * argument fragment / end; or raw text for /v1/completions), finish (the
 * outcome).  Each API turns them into its SSE events while streaming, or into
 * one JSON body at finish (INTERFACES.md §6.4–§6.7).  SSE framing helpers are
 * here too (sse.c). */
#ifndef DS4_SERVER_STREAM_H
#define DS4_SERVER_STREAM_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "server/job.h"
#include "text/dsml.h"

/* ------------------------------------------------------------ SSE framing */

/* `data: {json}\n\n` */
int srv_sse_data(srv_job *j, const cJSON *payload);
/* `event: NAME\ndata: {json}\n\n` */
int srv_sse_event(srv_job *j, const char *name, const cJSON *payload);
/* `data: TEXT\n\n` with a literal payload ([DONE]) */
int srv_sse_raw(srv_job *j, const char *text);
/* `: COMMENT\n\n` */
int srv_sse_comment(srv_job *j, const char *text);

/* ------------------------------------------------------------ outcome */

typedef enum srv_finish {
    SRV_FINISH_STOP = 0,
    SRV_FINISH_LENGTH,
    SRV_FINISH_TOOL_CALLS,
    SRV_FINISH_ERROR,
} srv_finish;

const char *srv_finish_name(srv_finish f);

typedef struct srv_outcome {
    srv_finish finish;
    const ds4_dsml_result *res;  /* chat-like APIs */
    const char *text;            /* /v1/completions: the raw text */
    size_t text_len;
    const char *error;           /* what went wrong (finish error) */
    int prompt_tokens, cached_tokens, completion_tokens;
} srv_outcome;

/* ------------------------------------------------------------ stream state */

#define SRV_MAX_STREAM_CALLS 64

typedef struct srv_stream_call {
    char fc_id[40];              /* Responses item id */
    int out_index;
    bool open;
    ds4_textbuf args;
    char *name;
    char *call_id;
} srv_stream_call;

typedef struct srv_stream {
    srv_job *job;
    const srv_request *rq;
    char id[64];                 /* chatcmpl-N / cmpl-N / resp_… / msg_… */
    long created;
    int prompt_tokens, cached_tokens;
    bool failed;                 /* a write failed: the client is gone */
    /* OpenAI chat */
    /* Anthropic */
    int block_index;             /* next block index */
    int open_block;              /* 0 none, 1 thinking, 2 text, 3 tool_use */
    bool sent_thinking, sent_text, sent_tool;
    /* Responses */
    int seq;                     /* sequence_number */
    int next_index;              /* output_index */
    char rs_id[40], msg_id[40];
    int rs_index, msg_index;     /* -1: not opened */
    bool rs_open, msg_open, rs_closed_ok;
    ds4_textbuf rs_text, msg_text;
    srv_stream_call calls[SRV_MAX_STREAM_CALLS];
    int n_calls;
} srv_stream;

void srv_stream_init(srv_stream *s, srv_job *job, uint64_t seq);
void srv_stream_free(srv_stream *s);

void srv_stream_begin(srv_stream *s, int prompt_tokens, int cached_tokens);
void srv_stream_event(srv_stream *s, const ds4_dsml_event *ev);
void srv_stream_finish(srv_stream *s, const srv_outcome *o);

/* Random lowercase hex of n bytes (2n digits) into out (cap >= 2n+1). */
void srv_random_hex(char *out, size_t nbytes);
void srv_random_bytes(void *user, uint8_t *buf, size_t n);

/* Shared pieces of the API files. */
cJSON *srv_usage_openai(const srv_outcome *o, bool responses);
cJSON *srv_usage_anthropic(int prompt, int cached, int completion);

/* Per-API implementations (emit_*.c). */
void srv_openai_begin(srv_stream *s);
void srv_openai_event(srv_stream *s, const ds4_dsml_event *ev);
void srv_openai_finish(srv_stream *s, const srv_outcome *o);
void srv_anthropic_begin(srv_stream *s);
void srv_anthropic_event(srv_stream *s, const ds4_dsml_event *ev);
void srv_anthropic_finish(srv_stream *s, const srv_outcome *o);
void srv_responses_begin(srv_stream *s);
void srv_responses_event(srv_stream *s, const ds4_dsml_event *ev);
void srv_responses_finish(srv_stream *s, const srv_outcome *o);

#endif
