/*
 * send.c - sends by connection id, from any thread (see send.h).
 *
 * What this file teaches: how a thread that owns no connection reaches one
 * safely - it never touches the connection, only posts a record with the
 * bytes to the mailbox of the worker that does (mbox.c), and the worker
 * finds the connection by id (idmap.c) or finds that it is gone
 * (conn_deliver).
 *
 * New in step05.
 */
#include "send.h"
#include "log.h"
#include "worker.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* What malloc() keeps beside each block (glibc: 8 to 16 bytes). */
#define SEND_MALLOC_HEADER 16

/* On the worker: len bytes of replies for connection id arrived from
 * another thread: server_send() (cost 0), or an application thread's answer
 * to a job that cost `cost` (app_job_cost()).  Queue and send them, or drop
 * and count them if the connection has closed meanwhile. */
static void conn_deliver(struct conn_ctx *ctx, uint64_t id, const void *bytes,
                         size_t len, size_t cost)
{
    if (cost > 0) /* the answer to a job */
        conn_jobs_returned(ctx, 1, cost);
    struct conn *c = idmap_get(&ctx->ids, id);
    if (c != NULL)
        c->inflight -= cost;
    if (c == NULL || c->state == CONN_LINGERING) {
        ctx->stats.dropped_sends++; /* it closed meanwhile: nobody to tell */
        if (ctx->jobs == 0 && ctx->maybe_done != NULL)
            ctx->maybe_done(ctx);
        return;
    }
    if (buf_append(&c->out, bytes, len) < 0) {
        log_msg("conn=%" PRIu64 " error=nomem", c->id);
        conn_close(c, CONN_ERROR);
        return;
    }
    conn_flush(c); /* and conn_after_send(): resume, or finish a drain */
}

/* On the worker: the bytes have arrived. */
static void send_on_reply(struct closure *c)
{
    struct reply *r = container_of(c, struct reply, post);
    conn_deliver(&r->w->ctx, r->id, r->bytes, r->len, r->cost);
    free(r);
}

struct reply *reply_new(uint64_t id, size_t len)
{
    struct reply *r = malloc(sizeof(*r) + len);
    if (r != NULL)
        *r = (struct reply){
            .post.fn = send_on_reply, .w = worker_of(id), .id = id, .len = len};
    return r;
}

void reply_post(struct reply *r)
{
    mbox_post(&r->w->mbox, &r->post);
}

int server_send(uint64_t id, const void *bytes, size_t len)
{
    struct reply *r = reply_new(id, len);
    if (r == NULL)
        return -1;
    memcpy(r->bytes, bytes, len);
    reply_post(r);
    return 0;
}

size_t reply_cost(size_t len)
{
    return sizeof(struct reply) + len + SEND_MALLOC_HEADER;
}
