/*
 * worker.c - worker threads (see worker.h).
 *
 * What this file teaches: a thread per core, each running a completion loop
 * on its own connections, with its own pool, fed new connections by the
 * acceptor through its mailbox (mbox.c; what the other threads post is in
 * worker_mail.c) - or, with -D reuseport, accepting them itself, from a
 * listening socket of its own (accept.c), with no acceptor in between.  In
 * step06 the loop is an io_uring: the worker submits operations - a recv
 * and a send per connection, a read of its mailbox's eventfd, a read of its
 * timerfd (-D reuseport: a poll of its listening socket) - and one
 * io_uring_enter() waits until some of them complete.
 *
 *   for (;;) {
 *       io_uring_enter(submit the new SQEs, wait for >= 1 CQE)
 *       for each CQE: op = (struct ring_op *)cqe->user_data;
 *           recv/send/cancel -> conn_complete()    mailbox read -> mbox_take()
 *           timer read -> deadlines                 (and submit the next ones)
 *           listening socket's poll -> accept4() until EAGAIN (-D reuseport)
 *       free the connections whose last completion came (conn_free_closed)
 *   }
 *
 * When it is done (worker_check_done) it cancels its own mailbox and timer
 * reads, and leaves the loop once the ring has returned every operation.
 */
#include "worker.h"
#include "linger.h"
#include "log.h"
#include "pbuf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

/* The timer's tick while anything needs it: the precision of -i, of the
 * lingering bound and of the -g deadline (exercise: one deadline per
 * connection, in a timer wheel or a heap, instead of a scan per tick). */
#define WORKER_TICK_NS 100000000 /* 100 ms */

void worker_timer(struct worker *w, bool on)
{
    if (w->timer_on == on)
        return;
    struct itimerspec its = {0}; /* all zero: disarm */
    if (on)
        its.it_value.tv_nsec = its.it_interval.tv_nsec = WORKER_TICK_NS;
    if (timerfd_settime(w->timer_fd, 0, &its, NULL) < 0)
        log_msg("worker=%d timerfd_settime: %s", w->index, strerror(errno));
    w->timer_on = on;
}

/* A read of one of the worker's own 8-byte fds (the mailbox's eventfd, the
 * timerfd), completed by the ring when the fd has something to say. */
static void worker_read(struct worker *w, struct ring_op *op, int fd, uint64_t *value)
{
    ring_prep_read(&w->ring, op, fd, value, sizeof(*value));
    w->own_ops++;
}

static void worker_cancel(struct worker *w, struct ring_op *op, struct ring_op *cancel)
{
    ring_prep_cancel(&w->ring, cancel, op);
    w->own_ops++;
}

/* Stopping, and nothing left: no connection (closed ones count until their
 * last completion: they still point into the pool we are about to
 * destroy), no job at an app thread (its reply is sure to come: posting
 * it cannot fail).  Then take back the ring's last operations: the mailbox
 * and timer reads. */
void worker_check_done(struct worker *w)
{
    if (!w->stopping || w->done || w->ctx.first != NULL || w->ctx.closing > 0 ||
        w->ctx.jobs > 0)
        return;
    w->done = true;
    worker_timer(w, false);
    if (w->mbox_op.busy)
        worker_cancel(w, &w->mbox_op, &w->cancel_mbox_op);
    if (w->timer_op.busy)
        worker_cancel(w, &w->timer_op, &w->cancel_timer_op);
    w->leave_loop = w->own_ops == 0;
}

/* conn.c: a connection closed, or a job came back. */
static void worker_maybe_done(struct conn_ctx *ctx)
{
    worker_check_done(container_of(ctx, struct worker, ctx));
}

/* conn.c: a connection needs the timer (-i, or a lingering close). */
static void worker_wake_timer(struct conn_ctx *ctx)
{
    worker_timer(container_of(ctx, struct worker, ctx), true);
}

static void worker_on_listen(struct worker *w, int res);

static void worker_on_timer(struct worker *w, int res)
{
    if (res < 0 && res != -ECANCELED && res != -EINTR)
        log_msg("worker=%d timerfd read: %s", w->index, strerror(-res));
    if (!w->done)
        worker_read(w, &w->timer_op, w->timer_fd, &w->timer_value);
    if (res != sizeof(w->timer_value))
        return;
    uint64_t now = conn_now_ns();
    /* The deadline holds whatever is left: connections still owed data are
     * cut (and their queued jobs dropped); a job being worked on stops at
     * the deadline by itself (conn_simulate_work), and its reply is dropped. */
    if (w->stopping && now >= w->deadline_ns)
        conn_cut_all(&w->ctx);
    bool needed = conn_tick(&w->ctx, now);
    if (w->listen_retry) { /* -D reuseport: the last accept4() failed */
        w->listen_retry = false;
        worker_on_listen(w, 0);
    }
    worker_timer(w, needed || (w->stopping && !w->done) || w->listen_retry);
}

/* The mailbox's eventfd was read (that read cleared it: rule 2 of mbox.c):
 * take the queue, then read it again. */
static void worker_on_mbox(struct worker *w, int res)
{
    if (res < 0 && res != -ECANCELED && res != -EINTR)
        log_msg("worker=%d mailbox read: %s", w->index, strerror(-res));
    if (!w->done)
        worker_read(w, &w->mbox_op, w->mbox.efd, &w->mbox_value);
    mbox_take(&w->mbox);
}

/* -D reuseport: a connection the kernel gave this worker's own socket.  Its
 * id names this worker, as the acceptor's do (server_dispatch()): w + 1,
 * w + 1 + n, ...  So ids no longer count connections in accept order. */
static void worker_on_accept(struct acceptor *a, int fd)
{
    struct worker *w = container_of(a, struct worker, acceptor);
    uint64_t id = w->next_seq++ * (uint64_t)worker_count() + (uint64_t)w->index + 1;
    if (conn_open(&w->ctx, fd, id) != NULL && w->ctx.idle_ns > 0)
        worker_timer(w, true);
}

/*
 * The listening socket, on the ring: a poll says the backlog has
 * something, and the acceptor takes all of it - accept4() until EAGAIN,
 * with the EMFILE trick (accept.c) - before the next poll.  (IORING_OP_ACCEPT
 * would take one connection per completion, and out of fds it would
 * complete with -EMFILE and leave the connection waiting: exercise.)
 */
static void worker_on_listen(struct worker *w, int res)
{
    if (res < 0 && res != -ECANCELED && res != -EINTR)
        log_msg("worker=%d poll of its listening socket: %s", w->index, strerror(-res));
    if (w->stopping) {               /* the poll's end, after worker_stop_accepting() */
        close(w->acceptor.watch.fd); /* the ring no longer holds it */
        w->acceptor.watch.fd = -1;
        return;
    }
    if (acceptor_accept_all(&w->acceptor)) {
        ring_prep_poll(&w->ring, &w->listen_op, w->acceptor.watch.fd);
        w->own_ops++;
    } else {
        /* Connections may still wait (out of fds, no spare): a poll now
         * would complete at once, again and again.  Retry at the next tick. */
        w->listen_retry = true;
        worker_timer(w, true);
    }
}

/*
 * Closing a listening socket resets every connection still in its backlog:
 * their handshakes are complete, their clients may have sent a request, and
 * nobody would ever tell them why.  So accept them first: they close like
 * every other connection at the shutdown (linger.c), with nothing read from
 * them and so nothing owed - a FIN, not a reset.  Only a handshake that
 * completes between the last accept4() and the socket's end is still reset
 * (notes/step05-signals-eventfd.md).  A poll in flight holds the socket,
 * and its fd number must stay ours until the poll's completion: the fd is
 * closed then.
 */
void worker_stop_accepting(struct worker *w)
{
    if (w->acceptor.watch.fd < 0)
        return;
    (void)acceptor_accept_all(&w->acceptor);
    w->listen_retry = false;
    if (w->listen_op.busy) {
        worker_cancel(w, &w->listen_op, &w->cancel_listen_op);
        return; /* worker_on_listen() closes the fd when the poll comes back */
    }
    close(w->acceptor.watch.fd);
    w->acceptor.watch.fd = -1;
}

/* One completion: whose operation it was, from the record user_data
 * points at. */
static void worker_complete(struct worker *w, struct ring_op *op, int res,
                            unsigned flags)
{
    if (!(flags & IORING_CQE_F_MORE))
        op->busy = false; /* a multishot recv that stays armed is still busy */
    switch (op->kind) {
    case RING_OP_MBOX:
        w->own_ops--;
        worker_on_mbox(w, res);
        break;
    case RING_OP_TIMER:
        w->own_ops--;
        worker_on_timer(w, res);
        break;
    case RING_OP_LISTEN:
        w->own_ops--;
        worker_on_listen(w, res);
        break;
    case RING_OP_CANCEL_MBOX:
    case RING_OP_CANCEL_TIMER:
    case RING_OP_CANCEL_LISTEN:
        w->own_ops--;
        break;
    case RING_OP_PROVIDE: /* -R legacy: buffers lent, not counted in own_ops */
        pbuf_on_provided(res);
        break;
    default:
        conn_complete(op, res, flags); /* one of a connection's */
        break;
    }
    if (w->done && w->own_ops == 0)
        w->leave_loop = true;
}

/* The completion loop. */
static void worker_run(struct worker *w)
{
    while (!w->leave_loop) {
        /* -EBUSY: completions overflowed the CQ (the kernel keeps them:
         * IORING_FEAT_NODROP) and wait for room; -EAGAIN: no memory for a
         * request just now.  Either way, reap what is there and go again.
         * Anything else (-EBADR: a completion was lost) cannot be undone. */
        int ret = ring_submit_and_wait(&w->ring, 1);
        if (ret < 0 && ret != -EINTR && ret != -EBUSY && ret != -EAGAIN)
            die("worker %d: io_uring_enter: %s", w->index, strerror(-ret));
        struct io_uring_cqe *cqe;
        while ((cqe = ring_peek_cqe(&w->ring)) != NULL) {
            struct ring_op *op = (struct ring_op *)(uintptr_t)cqe->user_data;
            int res = cqe->res;
            unsigned flags = cqe->flags;
            ring_cqe_seen(&w->ring); /* free the slot before we submit more */
            worker_complete(w, op, res, flags);
        }
        conn_free_closed(&w->ctx); /* no completion of this batch names them now */
        if (w->ctx.pbuf != NULL && w->pbuf.ran_dry) {
            w->pbuf.ran_dry = false; /* it may grow again in the next batch */
            log_debug("worker=%d the buffer ring ran dry (ENOBUFS): %u more buffers, "
                      "%u in all",
                      w->index, w->pbuf.added, w->pbuf.lent);
        }
    }
}

/* The thread ---------------------------------------------------------------- */

static void worker_init_ring(struct worker *w)
{
    int ret =
        ring_init(&w->ring, WORKER_SQ_ENTRIES, WORKER_CQ_ENTRIES, w->uring.ring_flags);
    if (ret < 0)
        die("worker %d: io_uring_setup: %s", w->index, strerror(-ret));
    w->ctx.scratch = malloc(CONN_SCRATCH_LEN);
    if (w->ctx.scratch == NULL || pool_init(&w->pool, 256) < 0 ||
        mbox_init_blocking(&w->mbox) < 0)
        die("worker %d: cannot create its mailbox: %s", w->index, strerror(errno));
    w->ctx.ring = &w->ring;
    if (w->uring.recv != WORKER_RECV_PINNED) {
        ret = pbuf_init(&w->pbuf, &w->ring, 0, WORKER_PBUF_MAX, WORKER_PBUF_SIZE,
                        WORKER_PBUF_STEP, w->uring.recv == WORKER_RECV_LEGACY);
        if (ret < 0)
            die("worker %d: cannot set up its provided buffers: %s", w->index,
                strerror(-ret));
        w->ctx.pbuf = &w->pbuf;
    }
    w->ctx.poll_first = w->uring.poll_first;
    w->ctx.pool = &w->pool;
    w->ctx.owner = pthread_self();
    w->ctx.worker = w->index;
    w->ctx.maybe_done = worker_maybe_done;
    w->ctx.wake_timer = worker_wake_timer;
    idmap_init(&w->ctx.ids);
    /* Blocking: the ring's read waits on it (see mbox_init_blocking()). */
    w->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    if (w->timer_fd < 0)
        die("worker %d: cannot create its timer: %s", w->index, strerror(errno));
    w->mbox_op.kind = RING_OP_MBOX;
    w->timer_op.kind = RING_OP_TIMER;
    w->cancel_mbox_op.kind = RING_OP_CANCEL_MBOX;
    w->cancel_timer_op.kind = RING_OP_CANCEL_TIMER;
    worker_read(w, &w->mbox_op, w->mbox.efd, &w->mbox_value);
    worker_read(w, &w->timer_op, w->timer_fd, &w->timer_value);
    w->listen_op.kind = RING_OP_LISTEN;
    w->cancel_listen_op.kind = RING_OP_CANCEL_LISTEN;
    if (w->acceptor.watch.fd >= 0) {
        /* Accepted sockets stay blocking, as the acceptor's (server.c). */
        if (acceptor_init(&w->acceptor, w->acceptor.watch.fd, SOCK_CLOEXEC,
                          worker_on_accept) < 0)
            die("worker %d: cannot reserve a spare fd: %s", w->index, strerror(errno));
        worker_on_listen(w, 0); /* accept what is there, then poll */
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    /* A name for top -H, perf and gdb ("worker-3"); at most 15 characters. */
    char name[16];
    snprintf(name, sizeof(name), "worker-%d", w->index);
    pthread_setname_np(pthread_self(), name);
    /* The ring, the pool and the mailbox are created here, on this thread:
     * they are its own (IORING_SETUP_SINGLE_ISSUER holds the ring to it). */
    worker_init_ring(w);
    pthread_barrier_wait(w->started);
    worker_run(w);

    /* Done, and the ring has returned every operation.  Closures posted
     * after the last check may still be in the mailbox (server_send()
     * replies for connections that are gone): run them. */
    mbox_take(&w->mbox);
    mbox_destroy(&w->mbox);
    close(w->timer_fd);
    if (w->acceptor.spare_fd >= 0)
        close(w->acceptor.spare_fd);
    free(w->ctx.scratch);
    idmap_free(&w->ctx.ids);
    pool_destroy(&w->pool);
    pbuf_free(&w->pbuf, &w->ring);
    ring_exit(&w->ring);
    w->on_done(w->index);
    return NULL;
}

/* Why io_uring_setup() failed, for a person. */
static const char *worker_uring_reason(int err)
{
    if (err == ENOSYS)
        return "this kernel has no io_uring (ENOSYS: it came in Linux 5.1; this server "
               "needs 5.6 or later)";
    if (err == EPERM) {
        FILE *f = fopen("/proc/sys/kernel/io_uring_disabled", "r");
        int disabled = 0;
        if (f != NULL && fscanf(f, "%d", &disabled) != 1)
            disabled = 0;
        if (f != NULL)
            fclose(f);
        if (disabled > 0)
            return "io_uring is switched off: sysctl kernel.io_uring_disabled is set "
                   "(EPERM)";
        return "io_uring is forbidden here (EPERM): a seccomp filter, as containers "
               "often have, or a security module";
    }
    if (err == ENOMEM)
        return "io_uring could not lock its memory (ENOMEM: see ulimit -l)";
    return strerror(err);
}

/*
 * Can this machine run the workers?  Tries a ring with the flags that make
 * a worker's ring cheapest (each is used by one thread only, which also
 * reaps its completions: SINGLE_ISSUER and DEFER_TASKRUN, Linux 6.1), then
 * without them; checks that the kernel keeps completions that overflow the
 * CQ (IORING_FEAT_NODROP, 5.5: a lost completion is a connection that can
 * never be freed); probes the operations the workers use.  Exits 1 with the
 * reason if not; returns the flags that worked, and whether recv may ask
 * for IORING_RECVSEND_POLL_FIRST.  server.c calls it before anything starts.
 */
/* Where recvs may put their bytes here, of what -R asked for (DEFAULT: the
 * best there is).  provided: buffer rings (IORING_REGISTER_PBUF_RING, 5.19)
 * and multishot recv (6.0; a flag, which no probe sees: IORING_OP_SEND_ZC
 * came in the same release).  legacy: IORING_OP_PROVIDE_BUFFERS (5.7), on a
 * kernel that gives a waiting recv's buffer back (5.18, which IORING_OP_
 * MSG_RING came with; see pbuf.h). */
static enum worker_recv worker_recv_here(struct ring *r, enum worker_recv want)
{
    static const uint8_t linux_6_0[] = {IORING_OP_SEND_ZC};
    static const uint8_t linux_5_18[] = {IORING_OP_PROVIDE_BUFFERS, IORING_OP_MSG_RING};
    uint8_t missing = 0;
    struct pbuf p;
    if (want == WORKER_RECV_PINNED)
        return want;
    if (want != WORKER_RECV_LEGACY && ring_probe(r, linux_6_0, 1, &missing) == 1 &&
        pbuf_init(&p, r, 0, 1, 64, 1, false) == 0) {
        pbuf_free(&p, r);
        return WORKER_RECV_PROVIDED;
    }
    if (want != WORKER_RECV_PROVIDED && ring_probe(r, linux_5_18, 2, &missing) == 1)
        return WORKER_RECV_LEGACY;
    return WORKER_RECV_PINNED;
}

struct worker_uring worker_check_uring(enum worker_recv recv)
{
    static const unsigned tries[] = {IORING_SETUP_SINGLE_ISSUER |
                                         IORING_SETUP_DEFER_TASKRUN,
                                     IORING_SETUP_COOP_TASKRUN, 0};
    struct ring r;
    int ret = -EINVAL;
    struct worker_uring u = {0};
    for (size_t i = 0; i < sizeof(tries) / sizeof(tries[0]) && ret == -EINVAL; i++) {
        u.ring_flags = tries[i];
        ret = ring_init(&r, 8, 0, u.ring_flags);
    }
    if (ret < 0)
        die("io_uring is not available: %s", worker_uring_reason(-ret));
    if (!(r.features & IORING_FEAT_NODROP)) {
        ring_exit(&r);
        die("io_uring is not available: this kernel may drop completions "
            "(no IORING_FEAT_NODROP: Linux 5.5 or later is needed)");
    }
    static const uint8_t ops[] = {
        IORING_OP_RECV, IORING_OP_SEND,         IORING_OP_RECVMSG, IORING_OP_SENDMSG,
        IORING_OP_READ, IORING_OP_ASYNC_CANCEL, IORING_OP_POLL_ADD};
    uint8_t missing = 0;
    ret = ring_probe(&r, ops, sizeof(ops), &missing);
    /* POLL_FIRST is a flag, not an operation: nothing probes it.  It came
     * in 5.19 with IORING_OP_SOCKET, which the probe can see. */
    static const uint8_t linux_5_19[] = {IORING_OP_SOCKET};
    u.poll_first = ret == 1 && ring_probe(&r, linux_5_19, 1, &missing) == 1;
    u.recv = ret == 1 ? worker_recv_here(&r, recv) : WORKER_RECV_PINNED;
    ring_exit(&r);
    if (ret == 1 && recv == WORKER_RECV_PROVIDED && u.recv != recv)
        die("io_uring cannot do -R provided here: it needs buffer rings (Linux 5.19) "
            "and multishot recv (6.0); -R legacy or -R pinned may work");
    if (ret == 1 && recv == WORKER_RECV_LEGACY && u.recv != recv)
        die("io_uring cannot do -R legacy here: it needs a kernel that gives a waiting "
            "recv's buffer back (Linux 5.18); -R pinned works");
    if (ret == 1 && recv == WORKER_RECV_DEFAULT && u.recv != WORKER_RECV_PROVIDED)
        log_msg("io_uring: no buffer rings or multishot recv here (Linux 6.0): -R %s",
                u.recv == WORKER_RECV_LEGACY ? "legacy" : "pinned");
    if (ret < 0)
        die("io_uring is not available: IORING_REGISTER_PROBE: %s", strerror(-ret));
    if (ret == 0)
        die("io_uring is not available: this kernel lacks operation %u (Linux 5.6 or "
            "later is needed)",
            missing);
    return u;
}

void worker_start_all(struct worker_set *set, int n, const struct conn_ctx *proto,
                      const struct worker_uring *uring, const int *listeners,
                      void (*on_done)(int index))
{
    static pthread_barrier_t started;
    set->n = n;
    /* aligned_alloc: struct worker is _Alignas(64); calloc promises only 16. */
    set->workers =
        aligned_alloc(_Alignof(struct worker), (size_t)n * sizeof(*set->workers));
    if (set->workers == NULL)
        die("out of memory");
    memset(set->workers, 0, (size_t)n * sizeof(*set->workers));
    worker_register(set); /* for worker_of() */
    pthread_barrier_init(&started, NULL, (unsigned)n + 1);
    for (int i = 0; i < n; i++) {
        struct worker *w = &set->workers[i];
        w->index = i;
        w->ctx = *proto;
        w->uring = *uring;
        w->on_done = on_done;
        w->started = &started;
        w->acceptor.watch.fd = listeners != NULL ? listeners[i] : -1;
        w->acceptor.spare_fd = -1;
        atomic_init(&w->pending, 0);
        int rc = pthread_create(&w->thread, NULL, worker_main, w);
        if (rc != 0)
            die("cannot start worker %d: %s", i, strerror(rc));
    }
    pthread_barrier_wait(&started); /* every worker is in its loop */
}
