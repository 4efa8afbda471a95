/*
 * tools/loadgen_churn.c - loadgen --churn: connection churn (短连接), the
 * benchmark of a server's accept path.
 *
 * Each of the -c slots loops: connect, send one frame of -s bytes, wait for
 * the reply and check it byte for byte (the same stamp and check as every
 * other mode), close, and at once connect again; for -T seconds after -W of
 * warm-up, or -n times per slot.  The connect is nonblocking and watched by
 * the thread's epoll like any other event, so -c 32 keeps 32 connects or
 * round trips in flight: a slow handshake on one slot never holds up another.
 * Latency runs from the start of connect() to the arrival of the whole reply
 * (handshake, accept, first read, echo); msgs counts connections completed.
 *
 * The client closes first, with a FIN, so TIME_WAIT lands on this side: one
 * local port per connection for 60 s.  With --reset the close is an RST
 * (SO_LINGER {1, 0}), which leaves no TIME_WAIT; -h says when that matters.
 *
 *     loadgen -p 8080 --churn -c 32 -T 2            connections per second
 */
#include "loadgen.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/* A connect that failed; the hints name the two limits a long run can hit. */
static void lg_churn_fail_connect(struct lg_thread *t, struct lg_conn *c, int err)
{
    const char *hint = err == EADDRNOTAVAIL ? " (out of local ports: see loadgen -h, "
                                              "--churn)"
                       : err == EMFILE      ? " (out of file descriptors: ulimit -n)"
                                            : "";
    lg_conn_fail(t, c, "connect: %s%s", strerror(err), hint);
}

/* Start the slot's next connection: queue its one frame, begin the connect. */
static void lg_churn_connect(struct lg_thread *t, struct lg_conn *c, uint64_t now)
{
    lg_conn_queue_frame(t, c, now); /* "due" now: latency counts from connect() */
    c->fd = tool_connect_start(t->addr);
    if (c->fd < 0) {
        lg_churn_fail_connect(t, c, errno);
        return;
    }
    c->connecting = true;
    c->want_out = true; /* writable = the handshake is over, one way or the other */
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        lg_conn_fail(t, c, "epoll_ctl: %s", strerror(errno));
}

/* The connect finished: did it succeed?  Fails the slot if not. */
static bool lg_churn_connected(struct lg_thread *t, struct lg_conn *c)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err != 0) {
        lg_churn_fail_connect(t, c, err);
        return false;
    }
    c->connecting = false;
    return true;
}

/* Close fd with a FIN, or with an RST (SO_LINGER {1, 0}) when reset. */
static int lg_churn_close_fd(int fd, bool reset)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    if (reset && setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) < 0)
        return -1;
    close(fd);
    return 0;
}

/* The reply is in and checked: close (FIN, or RST with --reset). */
static void lg_churn_close(struct lg_thread *t, struct lg_conn *c)
{
    if (c->in.len > 0) {
        lg_conn_fail(t, c, "%zu bytes arrived after the reply", c->in.len);
        return;
    }
    if (lg_churn_close_fd(c->fd, t->opt->reset) < 0) {
        lg_conn_fail(t, c, "SO_LINGER: %s", strerror(errno));
        return;
    }
    c->fd = -1;
    c->want_out = false;
}

int lg_churn_resolve(const struct lg_options *o, struct tool_addr *addr)
{
    int fd = tool_connect("loadgen", o->host, o->port, addr);
    if (fd < 0)
        return -1;
    if (lg_churn_close_fd(fd, o->reset) < 0) {
        fprintf(stderr, "loadgen: SO_LINGER: %s\n", strerror(errno));
        close(fd);
        return -1;
    }
    return 0;
}

void lg_churn_start(struct lg_thread *t, uint64_t now)
{
    for (long i = 0; i < t->nconns; i++)
        if (lg_conn_may_send(t, &t->conns[i], now))
            lg_churn_connect(t, &t->conns[i], now);
}

void lg_churn_event(struct lg_thread *t, struct lg_conn *c, uint32_t events)
{
    if (c->connecting) {
        if (lg_churn_connected(t, c))
            lg_conn_flush(t, c);
        return;
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        lg_conn_read(t, c);
    if (c->dead)
        return;
    if (c->received < c->sent) {
        lg_conn_flush(t, c); /* a large frame may still be on its way out */
        return;
    }
    lg_churn_close(t, c);
    uint64_t now = tool_now_ns();
    if (!c->dead && lg_conn_may_send(t, c, now))
        lg_churn_connect(t, c, now);
}
