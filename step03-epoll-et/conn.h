/*
 * conn.h - one client connection of the event-driven server, in two layers
 * that share this struct:
 *
 *   conn.c        the protocol (协议): what the bytes mean and what is owed -
 *                 decode frames, make the replies, backpressure, half-close.
 *                 No system call: fuzz/ring_fuzz.c drives it as a transport
 *                 would.
 *   conn_epoll.c  the transport (传输): how the bytes move - nonblocking
 *                 sockets under edge-triggered epoll, readv()/sendmsg(), the
 *                 read budget and the ready list, EPOLLOUT, closing.
 *
 * Each layer calls the other only through the functions declared below, so
 * a later step can change how bytes move (step06: io_uring completions)
 * without touching what they mean.
 *
 * Life of a connection (conn->state):
 *
 *   CONN_OPEN: reading and answering
 *   |   reading --- replies queued > CONN_HIGH_WATER ---> read_paused
 *   |      ^        (stop reading; bytes wait in the socket)    |
 *   |      +--- a write takes them below CONN_LOW_WATER: -------+
 *   |           read again (conn_read_again: no new edge will
 *   |           come for the bytes already waiting)
 *   |
 *   | read 0 / EPOLLRDHUP / protocol error
 *   v
 *   CONN_DRAINING: read nothing more, send every reply still owed
 *   |
 *   | every reply sent                  (from any state: a reset, EPOLLERR,
 *   v                                    a write error)
 *   CONN_CLOSED: the fd is closed; the memory goes after the current batch
 *   of events (loop_release), when no event can name it any more
 *
 * Draining is how a half-closed client gets all its replies.
 */
#ifndef LAB_CONN_H
#define LAB_CONN_H

#include "buffer.h"
#include "loop.h"
#include "pool.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Backpressure (背压): stop reading a connection whose pending replies
 * exceed HIGH_WATER; read it again once they drop below LOW_WATER.  (The
 * fuzzer compiles conn.c with smaller marks, so its streams reach them.) */
#ifndef CONN_HIGH_WATER
#define CONN_HIGH_WATER (4u << 20)
#define CONN_LOW_WATER  (1u << 20)
#endif
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

/* What every connection of one event loop shares. */
struct conn_ctx {
    struct loop *loop;
    struct pool *pool;
    uint32_t max_frame;
    /* Every open connection, so the server can find them all (to shut down,
     * to inspect) - epoll's data.ptr is not a list anyone can walk. */
    struct conn *first;
};

struct conn {
    struct watch
        watch; /* the loop's handle (and the fd); container_of() gets us back */
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

/* ---- the protocol (conn.c): called by the transport ---------------------- */

/* A new connection's protocol state: open, its rings bounded by max_frame
 * (memory is taken only as bytes arrive), on ctx's list. */
void conn_init(struct conn *c, struct conn_ctx *ctx, uint64_t id);
/* The bookkeeping of a close: CONN_CLOSED, the close line (with -v), off
 * the list.  The transport's conn_close() calls it first. */
void conn_end(struct conn *c, enum conn_reason reason);

/* Decode every complete frame in c->in and queue its reply in c->out, until
 * the input runs out or the replies pass the high-water mark (then
 * read_paused is set).  Returns -1 on a protocol error (or when a reply
 * cannot be buffered), with c->reason set. */
int conn_process_frames(struct conn *c);
/* How much room to make in c->in before the next read (see conn.c). */
size_t conn_read_room(const struct conn *c);

/* n bytes arrived in c->in's free space; n bytes of c->out left. */
void conn_received(struct conn *c, size_t n);
void conn_sent(struct conn *c, size_t n);
/* After a flush (whatever it sent): lift backpressure below the low-water
 * mark, or close a draining connection that owes nothing any more. */
void conn_after_send(struct conn *c);
/* Read no more (EOF, or a protocol error: c->reason says which); send what
 * is owed, then close. */
void conn_drain(struct conn *c);

/* ---- the transport (conn_epoll.c): called by the protocol and the server -- */

/* Take over an accepted, nonblocking socket: TCP_NODELAY, register it, and
 * log the open line (with -v).  Returns NULL (and closes fd) when it cannot
 * be registered. */
struct conn *conn_open(struct conn_ctx *ctx, int fd, uint64_t id);
/* Close now (conn_end(), then the fd); no-op if already closed. */
void conn_close(struct conn *c, enum conn_reason reason);
/* Write as much of c->out as the socket takes; conn_after_send() follows. */
void conn_flush(struct conn *c);
/* Reading may go on: come back to this connection without waiting for an
 * edge (bytes may already be waiting in its socket). */
void conn_read_again(struct conn *c);
/* Bytes that have arrived in the socket and not been read yet (FIONREAD). */
size_t conn_waiting(const struct conn *c);

#endif
