/*
 * conn.h - one client connection of the event-driven server: its state,
 * its two ring buffers, and the handlers the event loop calls.
 *
 * Life of a connection:
 *
 *   CONN_OPEN --read 0 / EPOLLRDHUP / protocol error--> CONN_DRAINING
 *       |                                                  |  replies flushed
 *       |  reset, EPOLLERR, write error                    v
 *       +------------------------------------------> CONN_CLOSED (released)
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

/* What every connection of one event loop shares. */
struct conn_ctx {
    struct loop *loop;
    struct pool *pool;
    uint32_t max_frame;
    uint64_t open_conns;
    /* Every open connection, so the server can find them all (to shut down,
     * to inspect) - epoll's data.ptr is not a list anyone can walk. */
    struct conn *first;
};

struct conn {
    struct watch watch; /* first: the loop hands us back this pointer */
    struct conn_ctx *ctx;
    struct conn *prev, *next; /* in ctx's list of open connections */
    uint64_t id;
    enum conn_state state;
    struct buf in;      /* bytes read, not yet decoded */
    struct buf out;     /* replies not yet written */
    bool read_paused;   /* backpressure: out is above the high-water mark */
    bool peer_closed;   /* read() returned 0: the peer sends nothing more */
    bool want_write;    /* EPOLLOUT is registered: out could not be flushed */
    const char *reason; /* why it closes, for the log */
    uint64_t frames, bytes_in, bytes_out;
};

/* Take over an accepted, nonblocking socket.  Returns NULL (and closes fd)
 * when it cannot be registered. */
struct conn *conn_open(struct conn_ctx *ctx, int fd, uint64_t id);

#endif
