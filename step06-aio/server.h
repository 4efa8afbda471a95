/*
 * server.h - the acceptor, shared by the two halves of the server: server.c
 * (start, accept, hand off) and shutdown.c (signals, the graceful shutdown,
 * the summary).  New in step05.
 */
#ifndef LAB_SERVER_H
#define LAB_SERVER_H

#include "accept.h"
#include "app.h"
#include "loop.h"
#include "mbox.h"
#include "worker.h"

#include <stdbool.h>
#include <stdint.h>

/* The acceptor: its own event loop, the listening socket, the signals, a
 * mailbox the workers report to, and the workers it feeds. */
struct server {
    struct loop loop;
    struct acceptor acceptor; /* the listening socket (accept.c) */
    struct watch signals;     /* a signalfd for SIGINT and SIGTERM */
    struct mbox mbox;         /* workers post "done" here */
    struct worker_set workers;
    uint64_t *next_seq; /* per worker: how many ids it has been given */
    int next_worker;    /* round-robin: who gets the next connection */
    struct app_pool apps;
    bool have_apps;
    bool stopping;
    int workers_done;
    unsigned grace_s;
    uint64_t stop_ns; /* when the first signal came */
};

/* Block SIGINT and SIGTERM (in every thread: call it before starting any)
 * and return a signalfd for them; ignore SIGPIPE.  Dies on failure. */
int server_signals(struct server *s);
/* The signalfd is readable: the first signal starts the shutdown, the
 * second ends the process. */
void server_on_signal(struct watch *w, uint32_t events);
/* Worker index has stopped (called on its thread): tell the acceptor. */
void server_on_worker_done(int index);
/* After the acceptor's loop returns: join, summary, free. */
void server_finish(struct server *s);

#endif
