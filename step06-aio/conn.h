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
 *   |  ("replies queued" counts those still at application threads)  |
 *   +----------------------------------------------------------------+
 *       |                                               |
 *       | read 0 / EPOLLRDHUP / protocol error /        | reset, EPOLLERR,
 *       | graceful shutdown                             | write error,
 *       v                                               | -i idle, -g cut
 *   CONN_DRAINING: read nothing more, send every        |
 *       |          reply still owed (also the ones at   |
 *       |          application threads)                 |
 *       | replies flushed; the peer still sends:        |
 *       v                                               |
 *   lingering: shutdown(SHUT_WR), read and discard      |
 *       |      until EOF or a bound (bytes, time)       |
 *       v                                               v
 *   CONN_CLOSED (released: destroyed after the current batch of events)
 *
 * step06 (completion-based I/O, 完成式): a connection has at most one recv and
 * one send submitted to its worker's io_uring at a time.  Closing cancels
 * them (IORING_OP_ASYNC_CANCEL), and the memory goes only when every
 * completion - the operations' and the cancels' - has come back: until then
 * the kernel may still write into its buffers.
 *
 * In CONN_DRAINING the server reads no more; it sends every reply still
 * owed, then closes.  That is how a half-closed client gets all its replies.
 * The lingering close is how a client that is still sending gets them too:
 * closing a socket with unread input makes the kernel send a reset (RST) and
 * throw away replies it has not yet transmitted.
 */
#ifndef LAB_CONN_H
#define LAB_CONN_H

#include "buffer.h"
#include "idmap.h"
#include "pool.h"
#include "ring.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

/* Backpressure (背压): stop reading a connection whose pending replies
 * exceed HIGH_WATER; read it again once they drop below LOW_WATER. */
#define CONN_HIGH_WATER (4u << 20)
#define CONN_LOW_WATER  (1u << 20)
/* Fairness: at most this many bytes read per connection per turn. */
#define CONN_READ_BUDGET (64u << 10)
/* Lingering close (延迟关闭): how long, and how many bytes of input to
 * discard, before a connection that ends with the peer still sending is
 * closed anyway. */
#define CONN_LINGER_NS    (2000000000ull)
#define CONN_LINGER_BYTES (1u << 20)

enum conn_state { CONN_OPEN, CONN_DRAINING, CONN_CLOSED };

/* Why a connection closed: the close line's reason= (notes/protocol.md). */
enum conn_reason {
    CONN_EOF,           /* the peer closed (or half-closed) cleanly */
    CONN_EOF_MID_FRAME, /* ... with a partial frame buffered */
    CONN_PROTOCOL,      /* a header declared more than max_frame */
    CONN_RESET,         /* ECONNRESET / EPIPE */
    CONN_ERROR,         /* any other I/O error, or out of memory */
    CONN_IDLE,          /* -i: no traffic for that long */
    CONN_SHUTDOWN,      /* graceful shutdown: every reply delivered */
    CONN_CUT,           /* graceful shutdown: still owed data at the -g deadline */
};

/* What a worker counts, for the summary line at shutdown. */
struct conn_stats {
    uint64_t conns, frames, bytes_in, bytes_out, dropped_sends, cut;
};

struct app_pool;

/* What every connection of one worker shares. */
struct conn_ctx {
    struct ring *ring; /* the worker's io_uring */
    bool poll_first;   /* the kernel knows IORING_RECVSEND_POLL_FIRST (5.19) */
    struct pool *pool;
    uint32_t max_frame;
    uint32_t work_us;      /* -b: simulated CPU work per reply, in microseconds */
    uint64_t idle_ns;      /* -i: close after this long without traffic; 0: never */
    int worker;            /* the worker that owns this loop, for the log */
    struct app_pool *apps; /* -a: application threads, or NULL */
    struct idmap ids;      /* id -> connection, for replies by id */
    struct conn_stats stats;
    size_t lingering; /* connections with a deadline (need the timer) */
    size_t closing;   /* closed, waiting for their last completions */
    pthread_t owner;  /* the worker thread: the only one that may touch these */
    /* The worker's hooks: the last connection is closed and freed; the
     * timer is needed. */
    void (*on_empty)(struct conn_ctx *ctx);
    void (*wake_timer)(struct conn_ctx *ctx);
    /* Every open connection, so the server can find them all (to shut down,
     * to inspect) - epoll's data.ptr is not a list anyone can walk. */
    struct conn *first;
};

/* A reply that came back from an application thread while the output ring
 * was pinned by a send and had no room: it waits here, in order. */
struct parked {
    struct parked *next;
    size_t len;
    uint8_t bytes[];
};

struct conn {
    int fd;
    struct conn_ctx *ctx;
    struct conn *prev, *next; /* in ctx's list of open connections */
    uint64_t id;
    enum conn_state state;
    enum conn_reason reason; /* why it closes, for the log */
    struct buf in;           /* bytes read, not yet decoded */
    struct buf out;          /* replies not yet written */
    size_t inflight;         /* reply bytes still at application threads */
    bool read_paused;        /* backpressure: no recv while too much is owed */
    bool decode_waits;       /* a reply waits for the send in flight: no recv */
    bool peer_closed;        /* a recv returned 0: the peer sends nothing more */
    bool lingering;          /* SHUT_WR sent; discarding input until EOF */
    bool recv_drained;       /* the last recv emptied the socket */
    size_t recv_asked;       /* the room the recv in flight offered */
    size_t linger_left;      /* input bytes still to discard before giving up */
    uint64_t deadline_ns;    /* lingering: close by then */
    uint64_t last_active_ns; /* -i: the last byte read or written */
    uint64_t frames, bytes_in, bytes_out;
    /* io_uring: the operation records (user_data points at them), and the
     * message headers the kernel reads until each completes */
    struct ring_op recv_op, send_op, cancel_recv_op, cancel_send_op;
    struct msghdr recv_msg, send_msg;
    struct iovec recv_iov[2], send_iov[2];
    unsigned ops; /* submitted, not yet completed: the memory waits for 0 */
    struct parked *parked, *parked_tail;
    size_t parked_bytes; /* owed too: they count toward the high-water mark */
};

/* Take over an accepted (blocking: io_uring waits for it) socket:
 * TCP_NODELAY, log the open line (with -v), submit the first recv.  Returns
 * NULL (and closes fd) out of memory.  Runs on the worker that owns ctx, as
 * does everything a connection does: a connection never changes threads. */
struct conn *conn_open(struct conn_ctx *ctx, int fd, uint64_t id);

/* Decode every complete frame in c->in and queue its reply in c->out (or
 * hand it to an application thread), until the input runs out or the
 * replies pass the high-water mark.  Returns -1 on a protocol error (or when
 * a reply cannot be buffered), with c->reason set.  No I/O. */
int conn_process_frames(struct conn *c);

/* len bytes of replies for connection id arrived from another thread
 * (server_send): queue and send them, or count them dropped if the
 * connection has closed. */
void conn_deliver(struct conn_ctx *ctx, uint64_t id, const void *bytes, size_t len);

/* Graceful shutdown: stop reading, answer the complete frames already read,
 * send every reply owed, then close.  For every open connection. */
void conn_shutdown_all(struct conn_ctx *ctx);

/* Close every connection still open, counted as cut (the -g deadline). */
void conn_cut_all(struct conn_ctx *ctx);

/* A completion for one of a connection's operations (ring_op kinds RECV,
 * SEND, CANCEL_RECV, CANCEL_SEND): res is the CQE's result. */
void conn_complete(struct ring_op *op, int res);

/* The timers: close connections idle for -i, and lingering ones past their
 * deadline.  now_ns: CLOCK_MONOTONIC.  Returns true while any connection
 * needs the timer (idle timeouts on, or a lingering close under way). */
bool conn_tick(struct conn_ctx *ctx, uint64_t now_ns);

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t conn_now_ns(void);

#endif
