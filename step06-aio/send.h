/*
 * send.h - sending to a connection from any thread (new in step05): by its
 * id, never its fd, through the mailbox of the worker that owns it.
 *
 *   any thread                            the connection's worker
 *   reply_new(id, len): the record;
 *   fill r->bytes;
 *   reply_post(r)                 --->    conn_deliver(): look id up;
 *                                         queue and send the bytes, or drop
 *                                         and count them if it has closed
 *
 * The kernel reuses a closed connection's fd number at once; ids are never
 * reused, so bytes sent to a connection that has gone reach no one else.
 *
 * Only reply_new() can fail.  A worker that hands a frame to an application
 * thread makes the reply's record itself, with the job (app.c): the way
 * back then cannot fail, and every job it counts out comes back.
 */
#ifndef LAB_SEND_H
#define LAB_SEND_H

#include "mbox.h"

#include <stddef.h>
#include <stdint.h>

struct worker;

/* Bytes on their way to connection id.  An application job is one too: its
 * frame goes in bytes, and the reply is built there, in place. */
struct reply {
    struct closure post; /* its node: in an app thread's queue, then the mailbox */
    struct worker *w;    /* the worker the id names */
    uint64_t id;
    size_t cost; /* a job's cost, given back on delivery; 0: server_send() */
    size_t len;
    uint8_t bytes[];
};

/* A record for len bytes to connection id (any thread), cost 0.  Returns
 * NULL out of memory. */
struct reply *reply_new(uint64_t id, size_t len);

/* Send r->len bytes of r->bytes, and give r->cost back; any thread.  Cannot
 * fail: r is the worker's to free.  Only while the workers run: a worker
 * stops only when every job it handed out has come back, and the mailboxes
 * are freed after the application threads are joined (server_finish()). */
void reply_post(struct reply *r);

/* Send len bytes (whole reply frames) to connection id, from any thread: a
 * copy in a new record.  Returns 0, or -1 out of memory.  Safe from any
 * thread until the graceful shutdown begins (server_on_signal()): after
 * that a worker may stop, and free its mailbox, without waiting for
 * sends it did not ask for. */
int server_send(uint64_t id, const void *bytes, size_t len);

/* What a record for len bytes costs: its header, the bytes, and malloc's
 * own header (for app_job_cost()). */
size_t reply_cost(size_t len);

#endif
