/*
 * send.c - sends by connection id, from any thread (see send.h).
 *
 * What this file teaches: how a thread that owns no connection reaches one
 * safely - it never touches the connection, only posts a copy of the bytes
 * to the mailbox of the worker that does (mbox.c), and the worker finds the
 * connection by id (idmap.c) or finds that it is gone.
 *
 * New in step05.
 */
#include "send.h"
#include "log.h"
#include "mbox.h"
#include "worker.h"

#include <stdlib.h>
#include <string.h>

/* Bytes on their way to a connection. */
struct reply {
    struct worker *w;
    uint64_t id;
    size_t cost; /* the job's cost, given back on delivery; 0: server_send() */
    size_t len;
    uint8_t bytes[];
};

/* What malloc() keeps beside each block (glibc: 8 to 16 bytes). */
#define SEND_MALLOC_HEADER 16

/* On the worker: the bytes have arrived. */
static void send_on_reply(void *arg)
{
    struct reply *r = arg;
    conn_deliver(&r->w->ctx, r->id, r->bytes, r->len, r->cost);
    free(r);
}

/* Post len bytes for connection id to worker w, with the job's cost. */
static int send_post(struct worker *w, uint64_t id, size_t cost, const void *bytes,
                     size_t len)
{
    struct reply *r = malloc(sizeof(*r) + len);
    if (r == NULL)
        return -1;
    *r = (struct reply){.w = w, .id = id, .cost = cost, .len = len};
    memcpy(r->bytes, bytes, len);
    if (mbox_post(&w->mbox, send_on_reply, r) < 0) {
        free(r);
        return -1;
    }
    return 0;
}

int server_send(uint64_t id, const void *bytes, size_t len)
{
    return send_post(worker_of(id), id, 0, bytes, len);
}

int server_reply(int worker, uint64_t id, size_t cost, const void *bytes, size_t len)
{
    struct worker *w = worker_at(worker);
    if (send_post(w, id, cost, bytes, len) == 0)
        return 0;
    /* The worker waits for this job; it must hear that it will not come.
     * An atomic its timer reads, not a post: posting is what just failed. */
    atomic_fetch_add(&w->replies_lost, 1);
    return -1;
}

size_t server_reply_cost(size_t len)
{
    return sizeof(struct reply) + len + SEND_MALLOC_HEADER;
}
