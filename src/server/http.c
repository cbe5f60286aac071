/* ds4-server — the HTTP layer on libmicrohttpd (INTERFACES.md §6.2, §6.3).
 *
 * libmicrohttpd runs one thread per connection.  Our access handler collects
 * the body (bounded by --max-body-mb), checks the API key, routes, parses
 * the request on that thread and, for generation endpoints, queues a job and
 * blocks until the worker has either a complete reply or the SSE stream
 * started; stream bytes are then pulled from the job by a content-reader
 * callback.  While waiting, the socket is polled so that a client that goes
 * away cancels its job (in the queue, in prefill, or while generating). */
#define _GNU_SOURCE /* POLLRDHUP */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "server/jsonutil.h"
#include "server/server.h"

/* ============================================================ per request */

typedef struct conn_ctx {
    srv_server *S;
    ds4_textbuf body;
    bool too_big;
} conn_ctx;

/* What the stream reader needs. */
typedef struct stream_ctx {
    srv_server *S;
    srv_job *job;
    int fd;
    double t_last;   /* when bytes were last handed out */
} stream_ctx;

/* The peer closed its side (or the socket failed). */
static bool peer_gone(int fd) {
    if (fd < 0) return false;
    struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) <= 0) return false;
    if (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) return true;
    if (p.revents & POLLIN) {
        char c;
        ssize_t r = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
        return r == 0;
    }
    return false;
}

static int conn_fd(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

/* ============================================================ responses */

static void common_headers(srv_server *S, struct MHD_Response *r) {
    MHD_add_response_header(r, "Connection", "close");
    if (S->cfg.cors) {
        MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
        MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
        MHD_add_response_header(r, "Access-Control-Allow-Headers", "*");
    }
}

static enum MHD_Result send_bytes(srv_server *S, struct MHD_Connection *c, int status, const char *ctype,
                                  const char *body, size_t n) {
    struct MHD_Response *r = MHD_create_response_from_buffer(n, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    common_headers(S, r);
    if (ctype) MHD_add_response_header(r, "Content-Type", ctype);
    if (status == 429) MHD_add_response_header(r, "Retry-After", "1");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_error(srv_server *S, struct MHD_Connection *c, srv_api api, int status, const char *msg) {
    srv_error e = {.status = status};
    snprintf(e.msg, sizeof(e.msg), "%s", msg);
    size_t n = 0;
    char *b = srv_error_body(api, &e, &n);
    enum MHD_Result r = send_bytes(S, c, status, "application/json", b ? b : "", b ? n : 0);
    free(b);
    return r;
}

static enum MHD_Result send_json(srv_server *S, struct MHD_Connection *c, int status, const char *body, size_t n) {
    return send_bytes(S, c, status, "application/json", body, n);
}

/* ============================================================ streaming */

/* The deadline of a 200 ms wait: how often a waiting connection thread
 * looks whether its peer has gone. */
static struct timespec in_200ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 200 * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    stream_ctx *sc = cls;
    srv_job *j = sc->job;
    pthread_mutex_lock(&j->mu);
    for (;;) {
        if (j->out.n > 0) {
            size_t n = j->out.n < max ? j->out.n : max;
            memcpy(buf, j->out.p, n);
            memmove(j->out.p, j->out.p + n, j->out.n - n);
            ds4_textbuf_truncate(&j->out, j->out.n - n);
            pthread_mutex_unlock(&j->mu);
            sc->t_last = ds4_now();
            return (ssize_t)n;
        }
        /* Nothing for 5 s (a long prefill chunk, a slow token): an SSE
         * comment keeps client and proxy idle timers from closing the
         * stream.  The worker writes whole events, so an empty buffer is
         * always a boundary between events. */
        static const char keep[] = ": keepalive\n\n";
        if (ds4_now() - sc->t_last >= 5.0 && max >= sizeof(keep) - 1 && !j->done) {
            pthread_mutex_unlock(&j->mu);
            memcpy(buf, keep, sizeof(keep) - 1);
            sc->t_last = ds4_now();
            return (ssize_t)(sizeof(keep) - 1);
        }
        if (j->done) {
            pthread_mutex_unlock(&j->mu);
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        const struct timespec ts = in_200ms();
        pthread_cond_timedwait(&j->cv, &j->mu, &ts);
        if (j->out.n == 0 && !j->done && peer_gone(sc->fd)) {
            pthread_mutex_unlock(&j->mu);
            srv_job_cancel(j);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
}

static void stream_free(void *cls) {
    stream_ctx *sc = cls;
    if (!sc) return;
    srv_job_cancel(sc->job); /* a no-op once the worker is done */
    srv_job_unref(sc->job);
    atomic_fetch_sub(&sc->S->open_streams, 1);
    free(sc);
}

/* Block until the worker answered or started the stream. */
static enum MHD_Result await_job(srv_server *S, struct MHD_Connection *c, srv_job *j) {
    const int fd = conn_fd(c);
    pthread_mutex_lock(&j->mu);
    while (!j->done && !j->streaming && j->status == 0) {
        const struct timespec ts = in_200ms();
        pthread_cond_timedwait(&j->cv, &j->mu, &ts);
        if (!j->done && !j->streaming && j->status == 0 && peer_gone(fd)) {
            pthread_mutex_unlock(&j->mu);
            srv_job_cancel(j);
            srv_job_unref(j);
            return MHD_NO; /* nobody to answer */
        }
    }
    if (!j->streaming) {
        /* a complete reply: wait for the worker to finish writing it */
        while (!j->done) pthread_cond_wait(&j->cv, &j->mu);
        const int status = j->status ? j->status : 500;
        size_t n = j->out.n;
        char *body = n ? malloc(n) : NULL;
        if (body) memcpy(body, j->out.p, n);
        pthread_mutex_unlock(&j->mu);
        enum MHD_Result r = j->status ? send_json(S, c, status, body ? body : "", body ? n : 0) : MHD_NO;
        free(body);
        srv_job_unref(j);
        return r;
    }
    pthread_mutex_unlock(&j->mu);
    stream_ctx *sc = calloc(1, sizeof(*sc));
    if (!sc) {
        srv_job_cancel(j);
        srv_job_unref(j);
        return MHD_NO;
    }
    sc->S = S;
    atomic_fetch_add(&S->open_streams, 1);
    sc->job = j; /* the reference moves to the stream */
    sc->fd = fd;
    sc->t_last = ds4_now();
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024, stream_read, sc, stream_free);
    if (!r) {
        stream_free(sc);
        return MHD_NO;
    }
    common_headers(S, r);
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

/* ============================================================ endpoints */

static void model_object(srv_server *S, cJSON *m) {
    cJSON_AddStringToObject(m, "id", SRV_MODEL_ID);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", 1767225600);
    cJSON_AddStringToObject(m, "owned_by", "ds4.c");
    cJSON_AddStringToObject(m, "name", "DeepSeek V4 Flash");
    cJSON_AddNumberToObject(m, "context_length", S->ctx);
    cJSON *tp = cJSON_AddObjectToObject(m, "top_provider");
    cJSON_AddNumberToObject(tp, "context_length", S->ctx);
    cJSON_AddNumberToObject(tp, "max_completion_tokens", S->cfg.default_tokens < S->ctx ? S->cfg.default_tokens : S->ctx);
    cJSON_AddFalseToObject(tp, "is_moderated");
    static const char *const params[] = {"tools", "tool_choice", "max_tokens", "temperature", "top_p", "top_k",
                                         "min_p", "stop", "seed", "stream", "reasoning_effort"};
    cJSON *sp = cJSON_AddArrayToObject(m, "supported_parameters");
    for (size_t i = 0; i < sizeof(params) / sizeof(*params); i++) cJSON_AddItemToArray(sp, cJSON_CreateString(params[i]));
}

static enum MHD_Result send_cjson(srv_server *S, struct MHD_Connection *c, cJSON *j) {
    size_t n = 0;
    char *b = srv_json_print(j, true, &n);
    cJSON_Delete(j);
    enum MHD_Result r = send_json(S, c, 200, b ? b : "", b ? n : 0);
    free(b);
    return r;
}

static bool authorized(srv_server *S, struct MHD_Connection *c) {
    const char *key = S->cfg.api_key;
    if (!key) return true;
    const char *a = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (a && strncasecmp(a, "Bearer ", 7) == 0 && strcmp(a + 7, key) == 0) return true;
    const char *x = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-api-key");
    return x && strcmp(x, key) == 0;
}

static int post_api(const char *url, srv_api *api) {
    if (strcmp(url, "/v1/chat/completions") == 0) *api = SRV_API_CHAT;
    else if (strcmp(url, "/v1/completions") == 0) *api = SRV_API_COMPLETIONS;
    else if (strcmp(url, "/v1/responses") == 0) *api = SRV_API_RESPONSES;
    else if (strcmp(url, "/v1/messages") == 0) *api = SRV_API_MESSAGES;
    else if (strcmp(url, "/v1/messages/count_tokens") == 0) *api = SRV_API_COUNT_TOKENS;
    else return -1;
    return 0;
}

static void preload(void *ud, const ds4_chat *chat) { srv_kv_preload_tools(ud, chat); }

static enum MHD_Result handle_post(srv_server *S, struct MHD_Connection *c, srv_api api, conn_ctx *cc) {
    srv_job *j = srv_job_new();
    if (!j) return send_error(S, c, api, 500, "out of memory");
    j->body = ds4_textbuf_detach(&cc->body, &j->body_len);
    srv_parse_ctx pc = {.ctx = S->ctx,
                        .tok = S->tok,
                        .toolmem = S->cfg.tool_replay ? S->toolmem : NULL,
                        .live_id = srv_worker_live_id,
                        .preload = preload,
                        .live_ud = S};
    srv_error e;
    memset(&e, 0, sizeof(e));
    if (srv_request_parse(api, j->body ? j->body : "", j->body_len, &pc, &j->req, &e) != 0) {
        size_t n = 0;
        char *b = srv_error_body(api, &e, &n);
        enum MHD_Result r = send_json(S, c, e.status ? e.status : 400, b ? b : "", b ? n : 0);
        free(b);
        srv_log("%s request rejected: %d %s", srv_api_name(api), e.status, e.msg);
        srv_job_unref(j);
        return r;
    }
    if (api == SRV_API_COUNT_TOKENS) {
        char b[64];
        int n = snprintf(b, sizeof(b), "{\"input_tokens\":%zu}\n", j->req.tokens.n);
        srv_job_unref(j);
        return send_json(S, c, 200, b, (size_t)n);
    }
    j->seq = atomic_fetch_add(&S->seq, 1) + 1;
    j->t_queued = ds4_now();
    bool stopping = false;
    pthread_mutex_lock(&S->stats_mu);
    S->stats.requests++;
    pthread_mutex_unlock(&S->stats_mu);
    if (srv_worker_submit(S, j, &stopping) != 0) {
        srv_job_unref(j);
        if (stopping) return send_error(S, c, api, 503, "server shutting down");
        pthread_mutex_lock(&S->stats_mu);
        S->stats.rejected_busy++;
        pthread_mutex_unlock(&S->stats_mu);
        return send_error(S, c, api, 429, "server busy: too many queued requests, retry later");
    }
    return await_job(S, c, j); /* takes over our reference */
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    (void)version;
    srv_server *S = cls;
    conn_ctx *cc = *con_cls;
    if (!cc) {
        cc = calloc(1, sizeof(*cc));
        if (!cc) return MHD_NO;
        cc->S = S;
        ds4_textbuf_init(&cc->body);
        *con_cls = cc;
        /* an announced oversize body is read and dropped, then refused
         * (answering before the body is read makes libmicrohttpd drop the
         * connection without sending the answer) */
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > S->cfg.max_body) cc->too_big = true;
        return MHD_YES;
    }
    if (*upload_size) {
        if (!cc->too_big && cc->body.n + *upload_size > S->cfg.max_body) {
            cc->too_big = true;
            ds4_textbuf_free(&cc->body);
        }
        if (!cc->too_big) ds4_textbuf_append(&cc->body, upload, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    *upload_size = 0;
    /* The request is complete: the 10 s idle timeout guarded its reading
     * (slow clients, partial bodies).  The answer may take much longer to
     * start (queue, prefill) and streams pause between tokens, so the
     * timeout is off from here on; a client that stops reading is caught
     * by the pending-bytes limit of the job instead. */
    MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned int)0);
    srv_api api = SRV_API_CHAT;
    const bool is_post_path = post_api(url, &api) == 0;
    if (strcmp(method, "OPTIONS") == 0) return send_bytes(S, c, 204, NULL, "", 0);
    if (strcmp(url, "/health") == 0 && strcmp(method, "GET") == 0) {
        static const char ok[] = "{\"status\":\"ok\"}\n";
        return send_json(S, c, 200, ok, sizeof(ok) - 1);
    }
    if (!authorized(S, c)) return send_error(S, c, api, 401, "invalid or missing API key");
    if (cc->too_big) {
        char msg[128];
        snprintf(msg, sizeof(msg), "request body too large (limit %zu bytes)", S->cfg.max_body);
        return send_error(S, c, api, 413, msg);
    }
    if (strcmp(method, "GET") == 0) {
        if (strcmp(url, "/v1/models") == 0) {
            cJSON *root = cJSON_CreateObject();
            cJSON_AddStringToObject(root, "object", "list");
            cJSON *data = cJSON_AddArrayToObject(root, "data");
            cJSON *m = cJSON_CreateObject();
            model_object(S, m);
            cJSON_AddItemToArray(data, m);
            return send_cjson(S, c, root);
        }
        if (strncmp(url, "/v1/models/", 11) == 0) {
            if (strcmp(url + 11, SRV_MODEL_ID) != 0) {
                char msg[300];
                snprintf(msg, sizeof(msg), "unknown model '%.200s' (this server serves " SRV_MODEL_ID ")", url + 11);
                return send_error(S, c, api, 404, msg);
            }
            cJSON *m = cJSON_CreateObject();
            model_object(S, m);
            return send_cjson(S, c, m);
        }
        if (strcmp(url, "/ds4/stats") == 0) {
            ds4_textbuf t;
            ds4_textbuf_init(&t);
            srv_stats_json(S, &t);
            enum MHD_Result r = send_json(S, c, 200, t.p ? t.p : "", t.n);
            ds4_textbuf_free(&t);
            return r;
        }
    }
    if (is_post_path) {
        if (strcmp(method, "POST") != 0) return send_error(S, c, api, 405, "method not allowed (use POST)");
        return handle_post(S, c, api, cc);
    }
    return send_error(S, c, api, 404, "unknown endpoint");
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    (void)cls;
    (void)c;
    (void)toe;
    conn_ctx *cc = *con_cls;
    if (!cc) return;
    ds4_textbuf_free(&cc->body);
    free(cc);
    *con_cls = NULL;
}

/* ============================================================ start / stop */

int srv_http_start(srv_server *S) {
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)S->cfg.port);
    const char *host = strcmp(S->cfg.host, "localhost") == 0 ? "127.0.0.1" : S->cfg.host;
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        srv_log("ds4-server: --host must be an IPv4 address (or localhost), got '%s'", S->cfg.host);
        return -1;
    }
    S->mhd = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ITC |
                                  MHD_USE_ERROR_LOG,
                              (uint16_t)S->cfg.port, NULL, NULL, on_request, S,
                              MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)10,
                              MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(256 * 1024),
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned int)256,
                              MHD_OPTION_NOTIFY_COMPLETED, on_completed, S,
                              MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned int)1,
                              MHD_OPTION_END);
    if (!S->mhd) {
        srv_log("ds4-server: cannot listen on %s:%d: %s", host, S->cfg.port, strerror(errno));
        return -1;
    }
    srv_log("ds4-server: listening on http://%s:%d", host, S->cfg.port);
    return 0;
}

void srv_http_quiesce(srv_server *S) {
    if (!S->mhd) return;
    MHD_socket fd = MHD_quiesce_daemon(S->mhd);
    if (fd != MHD_INVALID_SOCKET) close(fd);
}

void srv_http_stop(srv_server *S) {
    if (!S->mhd) return;
    /* The worker has stopped, so every stream has its last event (the
     * error finish of an interrupted generation) in its buffer; give the
     * connection threads up to 5 s to send it before the daemon closes
     * the sockets, so clients see why their stream ended. */
    for (int i = 0; i < 500 && atomic_load(&S->open_streams) > 0; i++) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    MHD_stop_daemon(S->mhd);
    S->mhd = NULL;
}
