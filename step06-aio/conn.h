/*
 * conn.h - one client connection of the event-driven server, in two layers
 * that share this struct:
 *
 *   conn.c        the protocol (协议): what the bytes mean and what is owed -
 *                 decode frames, make the replies, backpressure, half-close.
 *                 No system call: fuzz/ring_fuzz.c drives it as a transport
 *                 would.
 *   conn_uring.c  the transport (传输): how the bytes move - recv and send
 *                 submitted to the worker's io_uring and completed by the
 *                 kernel, buffers pinned while it holds them, closing by
 *                 cancelling (new in step06, replacing conn_epoll.c).
 *
 * Each layer calls the other only through the functions declared below:
 * step06 changed how bytes move, and conn.c did not change.  How a
 * connection ends without losing replies - the lingering close, its
 * bounds, the graceful shutdown - is linger.c's (linger.h, new in step05),
 * called by both, and it did not change either.
 *
 * Life of a connection (conn->state):
 *
 *   CONN_OPEN: reading and answering
 *   |   reading --- replies queued > CONN_HIGH_WATER ---> read_paused
 *   |      ^        (stop reading; bytes wait in the socket)    |
 *   |      +--- a write takes them below CONN_LOW_WATER: -------+
 *   |           read again (conn_read_again: submit a recv, as
 *   |           no completion will come for bytes not asked for)
 *   |   With -a, "queued" counts the replies being built at application
 *   |   threads too (conn_owed), and the worker's job budget pauses it
 *   |   too, until conn_jobs_returned() brings it under CONN_JOBS_LOW.
 *   |
 *   | read 0 / a recv error / protocol error / graceful shutdown
 *   v
 *   CONN_DRAINING: read nothing more, send every reply still owed
 *   |              (cut after -t seconds without progress; at a shutdown,
 *   |              at the -g deadline)
 *   | every reply handed to the kernel (the peer had closed: CONN_CLOSED)
 *   v
 *   CONN_LINGERING: shutdown(SHUT_WR) sent; read and discard the peer's
 *   |               input until EOF, CONN_LINGER_BYTES or CONN_LINGER_NS;
 *   |               then read no more and wait for the kernel's send queue
 *   |               to empty (every reply acknowledged)
 *   | EOF, or an empty send queue       (from any state: a reset, a recv
 *   v                                    or send error, -i idle, a cut)
 *   CONN_CLOSED: nothing more is submitted; its recv and send are cancelled
 *   |            (IORING_OP_ASYNC_CANCEL), and until every completion is
 *   |            back the kernel may still write into its buffers
 *   | the last completion
 *   v
 *   freed: the fd is closed and the memory goes, after the current batch
 *   of completions (conn_free_closed), when no completion can name it
 *
 * Draining is how a half-closed client gets all its replies.  Lingering is
 * how a client that is still sending gets them: closing a socket that has
 * unread input makes the kernel send a reset (RST) and throw away every
 * reply still in its send queue - on a real network, replies the client
 * never sees.
 */
#ifndef LAB_CONN_H
#define LAB_CONN_H

#include "buffer.h"
#include "idmap.h"
#include "pool.h"
#include "ring.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Backpressure (背压): stop reading a connection whose pending replies
 * exceed HIGH_WATER; read it again once they drop below LOW_WATER.  (The
 * fuzzer compiles conn.c with smaller marks, so its streams reach them.) */
#ifndef CONN_HIGH_WATER
#define CONN_HIGH_WATER (4u << 20)
#define CONN_LOW_WATER  (1u << 20)
#endif
/* Fairness: at most this many bytes read per connection per turn. */
#define CONN_READ_BUDGET (64u << 10)
/* -a: what one worker's frames may cost at the application threads (each
 * job's record, which becomes its reply; see app_job_cost()), counting the
 * jobs of connections that have closed since: above HIGH every connection
 * of the worker stops reading, below LOW they read again. */
#define CONN_JOBS_HIGH (16u << 20)
#define CONN_JOBS_LOW  (8u << 20)

enum conn_state { CONN_OPEN, CONN_DRAINING, CONN_LINGERING, CONN_CLOSED };

/* Why a connection closed: the close line's reason= (notes/protocol.md). */
enum conn_reason {
    CONN_EOF,           /* the peer closed (or half-closed) cleanly */
    CONN_EOF_MID_FRAME, /* ... with a partial frame buffered */
    CONN_PROTOCOL,      /* a header declared more than max_frame */
    CONN_RESET,         /* ECONNRESET / EPIPE */
    CONN_ERROR,         /* any other I/O error, or out of memory */
    CONN_IDLE,          /* -i: no traffic for that long */
    CONN_SHUTDOWN,      /* graceful shutdown: every reply delivered */
    CONN_CUT,           /* still owed data at the -g deadline, or stalled */
};

/* What a worker counts, for the summary line at shutdown. */
struct conn_stats {
    uint64_t conns, frames, bytes_in, bytes_out, dropped_sends, dropped_jobs, cut;
};

struct app_pool;
struct pbuf;

/* What every connection of one worker shares: one per worker thread. */
struct conn_ctx {
    struct ring *ring;     /* the worker's io_uring */
    bool poll_first;       /* the kernel knows IORING_RECVSEND_POLL_FIRST (5.19) */
    uint8_t *scratch;      /* lingering recvs land here: bytes nobody reads */
    struct pbuf *pbuf;     /* -R provided, legacy: the worker's buffers; NULL: pinned */
    uint64_t nobufs;       /* -R provided, legacy: recvs that found no buffer */
    pthread_t owner;       /* the worker thread: the only one that may touch these */
    size_t closing;        /* closed, waiting for their last completions */
    struct conn *released; /* closed, every completion back: freed after the batch */
    struct pool *pool;
    uint32_t max_frame;
    uint32_t work_us;      /* -b: simulated CPU work per reply, in microseconds */
    uint64_t idle_ns;      /* -i: close after this long without traffic; 0: never */
    uint64_t stall_ns;     /* -t: cut after this long without progress (linger.h) */
    int worker;            /* the worker that owns this loop, for the log */
    struct app_pool *apps; /* -a: application threads, or NULL */
    struct idmap ids;      /* id -> connection, for replies by id */
    struct conn_stats stats;
    size_t jobs;      /* frames at application threads whose reply has not
                       * come back, the closed connections' included */
    size_t jobs_cost; /* what those cost (app_job_cost()) */
    bool jobs_paused; /* jobs_cost went over CONN_JOBS_HIGH */
    size_t timed;     /* connections with a deadline: the timer must tick */
    bool stopping;    /* a graceful shutdown: -g, not -t, bounds it */
    uint64_t stop_ns; /* ... and its deadline (CLOCK_MONOTONIC), 0 before */
    /* The worker's hooks: something ended (it checks whether its shutdown
     * is complete); a connection needs the timer. */
    void (*maybe_done)(struct conn_ctx *ctx);
    void (*wake_timer)(struct conn_ctx *ctx);
    /* Every open connection, so the server can find them all (to shut down,
     * to inspect) - a completion's user_data is not a list anyone can walk. */
    struct conn *first;
};

/* Lingering recvs read at most this much at a time into ctx->scratch. */
#define CONN_SCRATCH_LEN (64u << 10)

struct conn {
    int fd;
    struct conn_ctx *ctx;
    struct conn *prev, *next; /* in ctx's list of open connections */
    uint64_t id;
    enum conn_state state;
    enum conn_reason reason; /* why it closes, for the log */
    struct buf in;           /* bytes read, not yet decoded */
    struct buf out;          /* replies not yet written */
    size_t inflight;         /* what its jobs at application threads cost */
    bool read_paused;        /* backpressure: too much owed */
    bool peer_closed;        /* a recv returned 0: the peer sends nothing more */
    size_t linger_left;      /* lingering: input still to discard; 0: reading no more */
    size_t unsent;           /* the kernel's send queue when last looked at */
    uint64_t deadline_ns;    /* paused, draining or lingering: when it gives up */
    uint64_t last_active_ns; /* -i: the last byte read or written */
    uint64_t frames, bytes_in, bytes_out;
    /* io_uring: the operation records (user_data points at them), and the
     * send's message header, which the kernel reads until it completes */
    struct ring_op recv_op, send_op, cancel_recv_op, cancel_send_op;
    struct msghdr send_msg;
    struct iovec send_iov[2];
    bool recv_cancelled; /* -R provided: its multishot recv is being cancelled */
    unsigned ops;        /* submitted, not yet completed: the memory waits for 0 */
    bool released;       /* closed, every completion back: on ctx->released */
    struct conn *next_released;
    /* -R pinned only (allocated only then: an idle connection of -R
     * provided does not pay for it): what the recv in flight reads into */
    struct conn_recv_pinned {
        struct msghdr msg;
        struct iovec iov[2];
        size_t asked; /* the room it offered */
        bool scratch; /* it reads into ctx->scratch */
        bool drained; /* the last recv emptied the socket */
    } pinned[];
};

/* ---- the protocol (conn.c): called by the transport, linger.c, send.c, app.c */

/* A new connection's protocol state: open, its rings bounded by max_frame
 * (memory is taken only as bytes arrive), on ctx's list and in its id map.
 * Returns -1 out of memory. */
int conn_init(struct conn *c, struct conn_ctx *ctx, uint64_t id);
/* The bookkeeping of a close: CONN_CLOSED, the close line (with -v), the
 * counters, off the list and the id map; its jobs still queued at the
 * application threads are dropped.  The transport's conn_close() calls it. */
void conn_end(struct conn *c, enum conn_reason reason);

/* Replies owed: queued here, and being built at application threads. */
size_t conn_owed(const struct conn *c);
/* n jobs that cost `cost` came back from the application threads (replies
 * delivered, or jobs dropped): lift the worker's job budget pause. */
void conn_jobs_returned(struct conn_ctx *ctx, size_t n, size_t cost);
/* Decode every complete frame in c->in and queue its reply in c->out, until
 * the input runs out or the replies pass the high-water mark (then
 * read_paused is set).  Returns -1 on a protocol error (or when a reply
 * cannot be buffered), with c->reason set.  With -a the replies are built
 * at application threads, and "the replies" are all that is owed. */
int conn_process_frames(struct conn *c);
/* The same, with no limit on what is owed (the shutdown answers every
 * whole frame already read). */
int conn_decode(struct conn *c, size_t limit);
/* -b: burn us microseconds of this thread's CPU, or stop at stop_ns. */
void conn_simulate_work(uint32_t us, uint64_t stop_ns);
/* How much room to make in c->in before the next read (see conn.c). */
size_t conn_read_room(const struct conn *c);

/* n bytes arrived in c->in's free space; n bytes of c->out left. */
void conn_received(struct conn *c, size_t n);
void conn_sent(struct conn *c, size_t n);
/* After a flush (whatever it sent): lift backpressure below the low-water
 * mark, or finish a draining connection that owes nothing any more. */
void conn_after_send(struct conn *c);
/* Read no more (EOF, a protocol error or the shutdown: c->reason says
 * which); send what is owed, then finish (linger.c). */
void conn_drain(struct conn *c);

/* ---- the transport (conn_uring.c): called by the protocol and the server -- */

/* Take over an accepted (blocking: io_uring waits for it) socket:
 * TCP_NODELAY, log the open line (with -v), submit the first recv.  Returns
 * NULL (and closes fd) out of memory.  Runs on the worker that owns ctx, as
 * does everything a connection does: a connection never changes threads. */
struct conn *conn_open(struct conn_ctx *ctx, int fd, uint64_t id);
/* Close now (conn_end(), then cancel what is in flight); no-op if already
 * closed.  The fd and the memory go when every completion is back. */
void conn_close(struct conn *c, enum conn_reason reason);
/* Submit a send of c->out, unless one is in flight; conn_after_send()
 * follows (and again when the send completes). */
void conn_flush(struct conn *c);
/* Reading may go on (or, lingering, discarding may start): submit a recv,
 * unless one is in flight. */
void conn_read_again(struct conn *c);
/* Bytes that have arrived in the socket and not been read yet (FIONREAD). */
size_t conn_waiting(const struct conn *c);
/* Bytes the kernel still holds to send: not sent, or not yet acknowledged
 * by the peer (SIOCOUTQ). */
size_t conn_unsent(const struct conn *c);
/* shutdown(SHUT_WR): our FIN, after every reply.  Returns -1 with errno. */
int conn_shut_wr(struct conn *c);
/* A cut: the close that follows resets the connection (SO_LINGER 0)
 * instead of queueing our FIN behind the replies the kernel still holds. */
void conn_abort(struct conn *c);
/* A completion for one of a connection's operations (ring_op kinds RECV,
 * SEND, CANCEL_RECV, CANCEL_SEND): res and flags are the CQE's. */
void conn_complete(struct ring_op *op, int res, unsigned flags);
/* Free the connections whose last completion came in this batch (the
 * worker calls it after each batch of completions). */
void conn_free_closed(struct conn_ctx *ctx);

#endif
