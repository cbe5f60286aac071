/* ds4-server — SSE framing and the dispatch from the worker's three calls
 * to the API that the request came in on (see stream.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "server/jsonutil.h"
#include "server/stream.h"

/* ============================================================ framing */

static int write3(srv_job *j, const char *a, const char *b, size_t bn, const char *c) {
    ds4_textbuf t;
    ds4_textbuf_init(&t);
    ds4_textbuf_puts(&t, a);
    ds4_textbuf_append(&t, b, bn);
    ds4_textbuf_puts(&t, c);
    int rc = t.oom ? -1 : srv_job_write(j, t.p, t.n);
    ds4_textbuf_free(&t);
    return rc;
}

int srv_sse_data(srv_job *j, const cJSON *payload) {
    size_t n = 0;
    char *s = srv_json_print(payload, false, &n);
    if (!s) return -1;
    int rc = write3(j, "data: ", s, n, "\n\n");
    free(s);
    return rc;
}

int srv_sse_event(srv_job *j, const char *name, const cJSON *payload) {
    size_t n = 0;
    char *s = srv_json_print(payload, false, &n);
    if (!s) return -1;
    char head[96];
    snprintf(head, sizeof(head), "event: %s\ndata: ", name);
    int rc = write3(j, head, s, n, "\n\n");
    free(s);
    return rc;
}

int srv_sse_raw(srv_job *j, const char *text) { return write3(j, "data: ", text, strlen(text), "\n\n"); }

int srv_sse_comment(srv_job *j, const char *text) { return write3(j, ": ", text, strlen(text), "\n\n"); }

/* ============================================================ ids */

void srv_random_bytes(void *user, uint8_t *buf, size_t n) {
    (void)user;
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(buf + got, n - got, 0);
        if (r <= 0) break;
        got += (size_t)r;
    }
    if (got < n) { /* never expected; keep ids unique-ish anyway */
        uint64_t x = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)buf;
        for (size_t i = got; i < n; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            buf[i] = (uint8_t)(x >> 56);
        }
    }
}

void srv_random_hex(char *out, size_t nbytes) {
    uint8_t b[32];
    if (nbytes > sizeof(b)) nbytes = sizeof(b);
    srv_random_bytes(NULL, b, nbytes);
    for (size_t i = 0; i < nbytes; i++) sprintf(out + 2 * i, "%02x", b[i]);
    out[2 * nbytes] = 0;
}

const char *srv_finish_name(srv_finish f) {
    static const char *const n[] = {"stop", "length", "tool_calls", "error"};
    return (unsigned)f < 4 ? n[f] : "error";
}

/* ============================================================ usage */

cJSON *srv_usage_openai(const srv_outcome *o, bool responses) {
    const int p = o->prompt_tokens, c = o->completion_tokens;
    int r = o->cached_tokens < 0 ? 0 : o->cached_tokens > p ? p : o->cached_tokens;
    cJSON *u = cJSON_CreateObject();
    cJSON *d = cJSON_CreateObject();
    cJSON_AddNumberToObject(d, "cached_tokens", r);
    cJSON_AddNumberToObject(d, "cache_write_tokens", p - r);
    if (responses) {
        cJSON_AddNumberToObject(u, "input_tokens", p);
        cJSON_AddItemToObject(u, "input_tokens_details", d);
        cJSON_AddNumberToObject(u, "output_tokens", c);
        cJSON *od = cJSON_AddObjectToObject(u, "output_tokens_details");
        cJSON_AddNumberToObject(od, "reasoning_tokens", 0);
        cJSON_AddNumberToObject(u, "total_tokens", p + c);
    } else {
        cJSON_AddNumberToObject(u, "prompt_tokens", p);
        cJSON_AddNumberToObject(u, "completion_tokens", c);
        cJSON_AddNumberToObject(u, "total_tokens", p + c);
        cJSON_AddItemToObject(u, "prompt_tokens_details", d);
    }
    return u;
}

cJSON *srv_usage_anthropic(int prompt, int cached, int completion) {
    int r = cached < 0 ? 0 : cached > prompt ? prompt : cached;
    int w = prompt - r;
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "input_tokens", prompt - r - w); /* every token is read or written: 0 */
    cJSON_AddNumberToObject(u, "output_tokens", completion);
    cJSON_AddNumberToObject(u, "cache_read_input_tokens", r);
    cJSON_AddNumberToObject(u, "cache_creation_input_tokens", w);
    return u;
}

/* ============================================================ dispatch */

void srv_stream_init(srv_stream *s, srv_job *job, uint64_t seq) {
    memset(s, 0, sizeof(*s));
    s->job = job;
    s->rq = &job->req;
    s->created = (long)time(NULL);
    s->rs_index = s->msg_index = -1;
    ds4_textbuf_init(&s->rs_text);
    ds4_textbuf_init(&s->msg_text);
    char hex[32];
    switch (job->req.api) {
    case SRV_API_CHAT: snprintf(s->id, sizeof(s->id), "chatcmpl-%llu", (unsigned long long)seq); break;
    case SRV_API_COMPLETIONS: snprintf(s->id, sizeof(s->id), "cmpl-%llu", (unsigned long long)seq); break;
    case SRV_API_RESPONSES:
        srv_random_hex(hex, 12);
        snprintf(s->id, sizeof(s->id), "resp_%s", hex);
        break;
    default:
        srv_random_hex(hex, 12);
        snprintf(s->id, sizeof(s->id), "msg_%s", hex);
        break;
    }
}

void srv_stream_free(srv_stream *s) {
    ds4_textbuf_free(&s->rs_text);
    ds4_textbuf_free(&s->msg_text);
    for (int i = 0; i < s->n_calls; i++) {
        ds4_textbuf_free(&s->calls[i].args);
        free(s->calls[i].name);
        free(s->calls[i].call_id);
    }
}

void srv_stream_begin(srv_stream *s, int prompt_tokens, int cached_tokens) {
    s->prompt_tokens = prompt_tokens;
    s->cached_tokens = cached_tokens;
    if (!s->rq->stream) return;
    srv_job_stream_begin(s->job);
    switch (s->rq->api) {
    case SRV_API_RESPONSES: srv_responses_begin(s); break;
    case SRV_API_MESSAGES: srv_anthropic_begin(s); break;
    default: srv_openai_begin(s); break;
    }
}

void srv_stream_event(srv_stream *s, const ds4_dsml_event *ev) {
    if (!s->rq->stream || s->failed) return;
    switch (s->rq->api) {
    case SRV_API_RESPONSES: srv_responses_event(s, ev); break;
    case SRV_API_MESSAGES: srv_anthropic_event(s, ev); break;
    default: srv_openai_event(s, ev); break;
    }
}

void srv_stream_finish(srv_stream *s, const srv_outcome *o) {
    switch (s->rq->api) {
    case SRV_API_RESPONSES: srv_responses_finish(s, o); break;
    case SRV_API_MESSAGES: srv_anthropic_finish(s, o); break;
    default: srv_openai_finish(s, o); break;
    }
}
