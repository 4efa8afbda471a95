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
 * without touching what they mean.  How a connection ends without losing
 * replies - the lingering close, its bounds, the graceful shutdown - is
 * linger.c's (linger.h, new in step05), called by both.
 *
 * Life of a connection (conn->state):
 *
 *   CONN_OPEN: reading and answering
 *   |   reading --- replies queued > CONN_HIGH_WATER ---> read_paused
 *   |      ^        (stop reading; bytes wait in the socket)    |
 *   |      +--- a write takes them below CONN_LOW_WATER: -------+
 *   |           read again (conn_read_again: no new edge will
 *   |           come for the bytes already waiting)
 *   |   With -a, "queued" counts the replies being built at application
 *   |   threads too (conn_owed), and the worker's job budget pauses it
 *   |   too, until conn_jobs_returned() brings it under CONN_JOBS_LOW.
 *   |
 *   | read 0 / EPOLLRDHUP / protocol error / graceful shutdown
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
 *   | EOF, or an empty send queue       (from any state: a reset, EPOLLERR,
 *   v                                    a write error, -i idle, a cut)
 *   CONN_CLOSED: the fd is closed; the memory goes after the current batch
 *   of events (loop_release), when no event can name it any more
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

/* What every connection of one event loop shares: one per worker thread. */
struct conn_ctx {
    struct loop *loop;
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
    size_t inflight;         /* what its jobs at application threads cost */
    bool read_paused;        /* backpressure: too much owed */
    bool peer_closed;        /* read() returned 0: the peer sends nothing more */
    bool want_write;         /* EPOLLOUT is registered: out could not be flushed */
    size_t linger_left;      /* lingering: input still to discard; 0: reading no more */
    size_t unsent;           /* the kernel's send queue when last looked at */
    uint64_t deadline_ns;    /* paused, draining or lingering: when it gives up */
    uint64_t last_active_ns; /* -i: the last byte read or written */
    uint64_t frames, bytes_in, bytes_out;
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

/* ---- the transport (conn_epoll.c): called by the protocol and the server -- */

/* Take over an accepted, nonblocking socket: TCP_NODELAY, register it, and
 * log the open line (with -v).  Returns NULL (and closes fd) when it cannot
 * be registered.  Runs on the thread that owns ctx->loop, as does everything
 * a connection does: a connection never changes threads. */
struct conn *conn_open(struct conn_ctx *ctx, int fd, uint64_t id);
/* Close now (conn_end(), then the fd); no-op if already closed. */
void conn_close(struct conn *c, enum conn_reason reason);
/* Write as much of c->out as the socket takes; conn_after_send() follows. */
void conn_flush(struct conn *c);
/* Reading may go on (or, lingering, discarding may start): come back to
 * this connection without waiting for an edge. */
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

#endif
