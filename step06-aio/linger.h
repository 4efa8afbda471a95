/*
 * linger.h - how a connection ends without losing the replies it is owed
 * (linger.c): the lingering close (延迟关闭), the bounds on every wait for
 * a client, the -i idle timeout, and every connection's part of the
 * graceful shutdown (优雅退出).  Called by the protocol (conn.c), the
 * transport and the worker (and conn_now_ns(), the clock, by any thread);
 * the states are conn.h's.
 *
 * New in step05.
 */
#ifndef LAB_LINGER_H
#define LAB_LINGER_H

#include "conn.h"

/* The lingering close: how long, and how many bytes of input to discard,
 * before the server stops reading a peer that goes on sending. */
#define CONN_LINGER_NS    (2000000000ull)
#define CONN_LINGER_BYTES (1u << 20)
/* The stall bound's default (-t): a connection that waits for its client to
 * read - replies waiting for room in its socket, paused by backpressure,
 * draining or lingering - and makes no progress for this long is cut: a
 * client that never reads must not hold its connection, and the memory
 * owed to it, for ever.  At a shutdown -g bounds it. */
#define CONN_STALL_NS (10000000000ull)

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t conn_now_ns(void);
/* -i: note traffic. */
void conn_touch(struct conn *c);
/* Every reply is handed to the kernel: close (the peer closed), or linger. */
void conn_finish(struct conn *c);
/* Lingering: n bytes of input were read and thrown away; n == 0: EOF. */
void conn_discarded(struct conn *c, size_t n);
/* Give a paused, draining or lingering connection until deadline_ns (0:
 * none); the timer ticks while any connection has one. */
void conn_set_deadline(struct conn *c, uint64_t deadline_ns);
/* The stall bound starts (again) now: ctx->stall_ns for the client to read,
 * measured against the kernel's send queue as it is now. */
void conn_stall_start(struct conn *c, uint64_t now_ns);
/* The transport: the socket took less than it was offered (EAGAIN, a short
 * send), so replies wait in c->out for the client to read.  An open
 * connection is under the stall bound from here until the client has read
 * every reply (c->out and the kernel's send queue empty). */
void conn_send_blocked(struct conn *c);
/* Graceful shutdown: stop reading, answer the complete frames already read,
 * send every reply owed, then finish.  For every open connection. */
void conn_shutdown_all(struct conn_ctx *ctx);
/* The -g deadline: close every connection; those still owed data (in the
 * server, or in the kernel's send queue) are counted as cut. */
void conn_cut_all(struct conn_ctx *ctx);
/* The timers: -i idle, stalled (paused, draining or lingering) too long.
 * now_ns: CLOCK_MONOTONIC.  Returns true while any connection needs the
 * timer. */
bool conn_tick(struct conn_ctx *ctx, uint64_t now_ns);

#endif
