/* ds4-server — queued requests and their response bytes (see job.h). */
#include "server/job.h"

#include <stdlib.h>
#include <string.h>

srv_job *srv_job_new(void) {
    srv_job *j = calloc(1, sizeof(*j));
    if (!j) return NULL;
    srv_request_init(&j->req);
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    ds4_textbuf_init(&j->out);
    atomic_init(&j->cancelled, false);
    j->refs = 1;
    return j;
}

void srv_job_ref(srv_job *j) {
    pthread_mutex_lock(&j->mu);
    j->refs++;
    pthread_mutex_unlock(&j->mu);
}

void srv_job_unref(srv_job *j) {
    if (!j) return;
    pthread_mutex_lock(&j->mu);
    const int left = --j->refs;
    pthread_mutex_unlock(&j->mu);
    if (left) return;
    srv_request_free(&j->req);
    free(j->body);
    ds4_textbuf_free(&j->out);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j);
}

void srv_job_reply(srv_job *j, int status, const char *body, size_t len) {
    pthread_mutex_lock(&j->mu);
    if (!j->streaming) {
        j->status = status;
        ds4_textbuf_clear(&j->out);
        ds4_textbuf_append(&j->out, body, len);
    }
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

void srv_job_stream_begin(srv_job *j) {
    pthread_mutex_lock(&j->mu);
    if (!j->streaming) {
        j->streaming = true;
        j->status = 200;
        pthread_cond_broadcast(&j->cv);
    }
    pthread_mutex_unlock(&j->mu);
}

int srv_job_write(srv_job *j, const char *p, size_t n) {
    if (atomic_load(&j->cancelled)) return -1;
    pthread_mutex_lock(&j->mu);
    int rc = 0;
    if (j->out.n + n > SRV_JOB_MAX_PENDING) {
        atomic_store(&j->cancelled, true); /* not reading: treat as gone */
        rc = -1;
    } else if (ds4_textbuf_append(&j->out, p, n) != 0) {
        rc = -1;
    }
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    return rc;
}

void srv_job_done(srv_job *j) {
    pthread_mutex_lock(&j->mu);
    j->done = true;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

bool srv_job_cancelled(srv_job *j) { return atomic_load(&j->cancelled); }

void srv_job_cancel(srv_job *j) {
    atomic_store(&j->cancelled, true);
    pthread_mutex_lock(&j->mu);
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}
