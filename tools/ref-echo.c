/*
 * tools/ref-echo.c - the reference floor for `make bench`: the smallest
 * correct raw-byte echo server on epoll.
 *
 * One thread, level-triggered epoll, nonblocking sockets.  No framing and no
 * buffering beyond one read: it reads up to 64 KiB into a shared buffer and
 * writes it straight back.  Only if the write is short does the connection
 * keep the unsent rest, stop reading (so it never holds more than one read)
 * and wait for EPOLLOUT.  Framed clients work against it because framed echo
 * and raw echo are the same byte stream.  Out of file descriptors, it sheds
 * connections with the spare-fd trick and sleeps again, never spins.
 *
 * Every step is measured against it in the same run: a step that matches it
 * loses nothing to its buffers, frames and bookkeeping.
 *
 *     tools/ref-echo -p 8080         then: tools/loadgen -p 8080 -c 64 -d 8
 *     tools/ref-echo -H ::1 -p 8080  IPv6; then: tools/client -H ::1 -p 8080 hi
 */
#include "ref-common.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

struct peer {
    int fd;
    char *pending; /* the unsent rest of one read, or NULL */
    size_t off, len;
};

const char *ref_prog = "ref-echo";

static const char usage[] =
    "usage: ref-echo [-H HOST] [-p PORT] [-h]\n"
    "  Minimal raw-byte epoll echo server: the benchmark's floor.\n"
    "  -H HOST  address to bind, IPv4 or IPv6 (default 127.0.0.1)\n"
    "  -p PORT  port to bind; 0 picks a free port (default 8080)\n"
    "  -h       show this help\n"
    "Prints \"listening on HOST:PORT\" when ready ([HOST]:PORT for IPv6);\n"
    "runs until killed.\n";

/* Closing the fd also takes it out of the epoll set: nothing else holds it. */
static void peer_close(struct peer *p)
{
    close(p->fd);
    free(p->pending);
    free(p);
}

/* Write buf; keep what the socket did not take.  Returns -1 on error. */
static int peer_write(int ep, struct peer *p, const char *buf, size_t len)
{
    ssize_t n = send(p->fd, buf, len, MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN && errno != EINTR)
        return -1;
    size_t done = n > 0 ? (size_t)n : 0;
    if (done == len)
        return 0;
    p->pending = malloc(len - done);
    if (p->pending == NULL)
        return -1;
    memcpy(p->pending, buf + done, len - done);
    p->off = 0;
    p->len = len - done;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = p}; /* stop reading */
    return epoll_ctl(ep, EPOLL_CTL_MOD, p->fd, &ev);
}

static int peer_flush(int ep, struct peer *p)
{
    ssize_t n = send(p->fd, p->pending + p->off, p->len, MSG_NOSIGNAL);
    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : -1;
    p->off += (size_t)n;
    p->len -= (size_t)n;
    if (p->len > 0)
        return 0;
    free(p->pending);
    p->pending = NULL;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = p}; /* read again */
    return epoll_ctl(ep, EPOLL_CTL_MOD, p->fd, &ev);
}

/* A new connection: nonblocking (from accept4), TCP_NODELAY, watched. */
static void peer_open(int ep, int fd)
{
    int one = 1;
    struct peer *p = calloc(1, sizeof(*p));
    if (p != NULL && setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == 0) {
        p->fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = p};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0)
            return;
    }
    close(fd); /* a failure on one connection closes that connection */
    free(p);
}

static void accept_all(int ep, int lfd, int *spare)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            peer_open(ep, fd);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if ((errno == EMFILE || errno == ENFILE) && ref_shed_one(lfd, spare, errno))
            continue;
        return; /* EAGAIN: the backlog is empty; anything else: try next time */
    }
}

/* One ready connection: flush what is pending, or echo one read. */
static void peer_ready(int ep, struct peer *p)
{
    static char buf[65536];
    int bad = 0;
    if (p->pending) {
        bad = peer_flush(ep, p) < 0;
    } else {
        ssize_t r = read(p->fd, buf, sizeof(buf));
        if (r > 0)
            bad = peer_write(ep, p, buf, (size_t)r) < 0;
        else
            bad = r == 0 || (errno != EAGAIN && errno != EINTR);
    }
    if (bad)
        peer_close(p);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *port = "8080";
    ref_parse_args(argc, argv, usage, &host, &port);
    int lfd = ref_listen(host, port);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        ref_die("epoll_create1: %s", strerror(errno));
    int spare = ref_spare_open();
    if (spare < 0)
        ref_die("open /dev/null (the spare fd): %s", strerror(errno));
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) < 0)
        ref_die("epoll_ctl: %s", strerror(errno));
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        if (n < 0 && errno != EINTR)
            ref_die("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == NULL)
                accept_all(ep, lfd, &spare);
            else
                peer_ready(ep, evs[i].data.ptr);
        }
    }
}
