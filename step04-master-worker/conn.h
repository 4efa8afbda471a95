/*
 * conn.h - one client connection of the event-driven server: its state,
 * its two ring buffers, and the handlers the event loop calls.
 *
 * Life of a connection:
 *
 *   +-------------------------- CONN_OPEN ---------------------------+
 *   |                                                                |
 *   |  reading --- replies queued > CONN_HIGH_WATER ---> read_paused |
 *   |     ^        (stop reading; bytes wait in the socket)    |     |
 *   |     |                                                    |     |
 *   |     +--- replies sent, queue < CONN_LOW_WATER: put on ---+     |
 *   |          the ready list (no new edge will come for the         |
 *   |          bytes already waiting); checked after every write     |
 *   +----------------------------------------------------------------+
 *       |                                               |
 *       | read 0 / EPOLLRDHUP / protocol error          | reset, EPOLLERR,
 *       v                                               | write error
 *   CONN_DRAINING: read nothing more, send every        |
 *       |          reply still owed                     |
 *       | replies flushed                               |
 *       v                                               v
 *   CONN_CLOSED (released: destroyed after the current batch of events)
 *
 * In CONN_DRAINING the server reads no more; it sends every reply still
 * owed, then closes.  That is how a half-closed client gets all its replies.
 */
#ifndef LAB_CONN_H
#define LAB_CONN_H

#include "buffer.h"
#include "loop.h"
#include "pool.h"

#include <stdbool.h>
#include <stdint.h>

/* Backpressure (背压): stop reading a connection whose pending replies
 * exceed HIGH_WATER; read it again once they drop below LOW_WATER. */
#define CONN_HIGH_WATER (4u << 20)
#define CONN_LOW_WATER  (1u << 20)
/* Fairness: at most this many bytes read per connection per turn. */
#define CONN_READ_BUDGET (64u << 10)

enum conn_state { CONN_OPEN, CONN_DRAINING, CONN_CLOSED };

/* Why a connection closed: the close line's reason= (notes/protocol.md). */
enum conn_reason {
    CONN_EOF,           /* the peer closed (or half-closed) cleanly */
    CONN_EOF_MID_FRAME, /* ... with a partial frame buffered */
    CONN_PROTOCOL,      /* a header declared more than max_frame */
    CONN_RESET,         /* ECONNRESET / EPIPE */
    CONN_ERROR,         /* any other I/O error, or out of memory */
};

/* What every connection of one event loop shares: one per worker thread. */
struct conn_ctx {
    struct loop *loop;
    struct pool *pool;
    uint32_t max_frame;
    uint32_t work_us; /* -b: simulated CPU work per reply, in microseconds */
    int worker;       /* the worker that owns this loop, for the log */
    /* Every open connection, so the server can find them all (to shut down,
     * to inspect) - epoll's data.ptr is not a list anyone can walk. */
    struct conn *first;
};

struct conn {
    struct watch watch; /* the loop's handle; container_of() gets us back */
    struct conn_ctx *ctx;
    struct conn *prev, *next; /* in ctx's list of open connections */
    uint64_t id;
    enum conn_state state;
    enum conn_reason reason; /* why it closes, for the log */
    struct buf in;           /* bytes read, not yet decoded */
    struct buf out;          /* replies not yet written */
    bool read_paused;        /* backpressure: out went above the high-water mark */
    bool peer_closed;        /* read() returned 0: the peer sends nothing more */
    bool want_write;         /* EPOLLOUT is registered: out could not be flushed */
    uint64_t frames, bytes_in, bytes_out;
};

/* Take over an accepted, nonblocking socket: TCP_NODELAY, register it, and
 * log the open line (with -v).  Returns NULL (and closes fd) when it cannot
 * be registered.  Runs on the thread that owns ctx->loop, as does everything
 * a connection does: a connection never changes threads. */
struct conn *conn_open(struct conn_ctx *ctx, int fd, uint64_t id);

/* Decode every complete frame in c->in and queue its reply in c->out, until
 * the input runs out or the replies pass the high-water mark.  Returns -1 on
 * a protocol error (or when a reply cannot be buffered), with c->reason set.
 * No I/O: conn_on_event() calls it, and so does fuzz/ring_fuzz.c. */
int conn_process_frames(struct conn *c);

#endif
