/* ds4-server — a queued request and the bytes of its response.
 *
 * The client's connection thread parses the body into a job, enqueues it and
 * waits; the worker runs it and writes the response into the job: either one
 * complete body with a status (srv_job_reply), or SSE bytes after committing
 * the stream headers (srv_job_stream_begin + srv_job_write).  The connection
 * thread hands those bytes to libmicrohttpd.  A job is freed by whichever
 * side lets go of it last. */
#ifndef DS4_SERVER_JOB_H
#define DS4_SERVER_JOB_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "server/request.h"
#include "text/chat_buf.h"

/* The worker stops generating for a client that has this many bytes unread
 * (it is not reading: the send-stall rule of §6.1). */
#define SRV_JOB_MAX_PENDING (64u << 20)

typedef struct srv_job {
    srv_request req;
    char *body;              /* the raw request body (trace) */
    size_t body_len;
    uint64_t seq;            /* request number (trace, ids) */
    double t_queued;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool streaming;          /* SSE headers committed */
    bool done;               /* the worker will write nothing more */
    int status;              /* of a complete reply */
    ds4_textbuf out;         /* bytes not yet handed to the connection */
    atomic_bool cancelled;   /* the client went away (or shutdown) */
    int refs;
} srv_job;

srv_job *srv_job_new(void);
void srv_job_ref(srv_job *j);
void srv_job_unref(srv_job *j);

/* Worker side. */
void srv_job_reply(srv_job *j, int status, const char *body, size_t len);
void srv_job_stream_begin(srv_job *j);
/* Append stream bytes; returns -1 when the client is gone or stalled. */
int srv_job_write(srv_job *j, const char *p, size_t n);
void srv_job_done(srv_job *j);
bool srv_job_cancelled(srv_job *j);
void srv_job_cancel(srv_job *j);

#endif
