/*
 * accept.h - the acceptor (接收器): takes new connections off a listening
 * socket in an edge-triggered loop - accept4() until EAGAIN, because one
 * edge may stand for many waiting clients - and survives running out of
 * file descriptors (EMFILE) with the spare-fd trick (accept.c).  muduo's
 * Acceptor, with its idle fd, is the same design.
 *
 * New in step03 (the listening socket's half of the Reactor).
 */
#ifndef LAB_ACCEPT_H
#define LAB_ACCEPT_H

#include "loop.h"

#include <stdbool.h>

struct acceptor;

/* A new connection: fd is the caller's from now on. */
typedef void (*accept_fn)(struct acceptor *a, int fd);

struct acceptor {
    struct watch watch; /* the listening socket, in the loop (watch.fd) */
    int spare_fd; /* reserved for the EMFILE trick; -1 if it could not be reopened */
    int flags;    /* accept4()'s flags for each new socket */
    accept_fn on_accept;
};

/*
 * Watch listen_fd (nonblocking) in loop, edge-triggered, and call
 * on_accept(a, fd) for each new connection, accepted with accept4()'s
 * flags (SOCK_NONBLOCK | SOCK_CLOEXEC, say).  Reserves the spare fd.
 * Returns 0, or -1 with errno.
 */
int acceptor_start(struct acceptor *a, struct loop *loop, int listen_fd, int flags,
                   accept_fn on_accept);

/* step05: the same without a loop (step06's workers wait for the socket on
 * their ring), and the drain itself, for whoever learned that the socket is
 * readable - or, at a graceful shutdown, to take what is still waiting in
 * the backlog before closing it.  Returns true once the backlog is empty
 * (EAGAIN); false when it stopped with connections perhaps still waiting
 * (out of fds and no spare, or another accept error): try again later. */
int acceptor_init(struct acceptor *a, int listen_fd, int flags, accept_fn on_accept);
bool acceptor_accept_all(struct acceptor *a);

#endif
