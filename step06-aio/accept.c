/*
 * accept.c - the acceptor (see accept.h).
 *
 * What this file teaches: an edge-triggered listening socket must be
 * drained - accept until EAGAIN - and a process out of file descriptors
 * must still take the waiting connections off the backlog, or it spins
 * (level-triggered) or leaves them hanging (edge-triggered).
 *
 * New in step03.
 */
#include "accept.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/*
 * Out of file descriptors (EMFILE/ENFILE): the pending connection stays in
 * the backlog, and a level-triggered loop would be told about it again and
 * again, spinning at 100 % CPU; an edge-triggered one would leave the client
 * hanging.  So free the spare fd, accept the connection, close it at once
 * (the client sees its connection closed instead of waiting), and take the
 * spare back.
 *
 * Returns true when a connection was dropped (the caller accepts again),
 * false when the backlog is empty or the spare is gone.  accept4() fails with
 * EMFILE even when nobody is waiting (the kernel needs the fd first), so an
 * empty backlog here is normal and worth no log line.
 *
 * step04: the trick assumes that the fd it frees is the one accept() then
 * gets.  File descriptors belong to the process, not to a thread: with
 * several acceptors (-D reuseport, one per worker) another thread's
 * accept4() could take the freed fd first, and leave this one without a
 * spare, unable to shed, its backlog stuck.  So the shed holds
 * fd_table_lock for writing, and every accept4() holds it for reading:
 * acceptors never wait for each other, only for a shed.
 */
static pthread_rwlock_t fd_table_lock = PTHREAD_RWLOCK_INITIALIZER;

static bool acceptor_shed_one(struct acceptor *a)
{
    pthread_rwlock_wrlock(&fd_table_lock);
    if (a->spare_fd < 0)
        a->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (a->spare_fd < 0) {
        log_msg("accept: no spare fd to shed a connection with: %s", strerror(errno));
        pthread_rwlock_unlock(&fd_table_lock);
        errno = EMFILE;
        return false;
    }
    close(a->spare_fd);
    int fd;
    do { /* a client that gave up (ECONNABORTED) is no reason to stop */
        fd = accept(a->watch.fd, NULL, NULL);
    } while (fd < 0 && (errno == EINTR || errno == ECONNABORTED || errno == EPROTO));
    int err = errno;
    if (fd >= 0)
        close(fd);
    a->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC); /* retried next time */
    pthread_rwlock_unlock(&fd_table_lock);
    if (fd < 0 && err != EAGAIN && err != EWOULDBLOCK)
        log_msg("accept: %s", strerror(err));
    errno = err; /* EAGAIN: the backlog is empty (see acceptor_accept_all()) */
    return fd >= 0;
}

/* accept4(), holding fd_table_lock for reading (see acceptor_shed_one()). */
static int acceptor_accept(struct acceptor *a)
{
    pthread_rwlock_rdlock(&fd_table_lock);
    int fd = accept4(a->watch.fd, NULL, NULL, a->flags);
    int err = errno;
    pthread_rwlock_unlock(&fd_table_lock);
    errno = err;
    return fd;
}

bool acceptor_accept_all(struct acceptor *a)
{
    for (;;) {
        int fd = acceptor_accept(a);
        if (fd >= 0) {
            a->on_accept(a, fd);
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return true; /* drained: edge-triggered, so we had to get here */
        if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
            continue; /* transient: that client gave up; try the next */
        if (errno == EMFILE || errno == ENFILE) {
            int err = errno;
            if (!acceptor_shed_one(a)) /* the backlog is empty, or no spare */
                return errno == EAGAIN || errno == EWOULDBLOCK;
            log_msg("accept: %s: dropped a connection", strerror(err));
            continue;
        }
        log_msg("accept: %s", strerror(errno));
        return false;
    }
}

/* The listening socket is readable: accept until the backlog is empty. */
static void acceptor_on_event(struct watch *w, uint32_t events)
{
    (void)events;
    /* Not drained (out of fds, no spare): the next edge retries. */
    (void)acceptor_accept_all(container_of(w, struct acceptor, watch));
}

int acceptor_init(struct acceptor *a, int listen_fd, int flags, accept_fn on_accept)
{
    a->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (a->spare_fd < 0)
        return -1;
    a->flags = flags;
    a->on_accept = on_accept;
    a->watch = (struct watch){.fd = listen_fd, .on_event = acceptor_on_event};
    return 0;
}

int acceptor_start(struct acceptor *a, struct loop *loop, int listen_fd, int flags,
                   accept_fn on_accept)
{
    if (acceptor_init(a, listen_fd, flags, on_accept) < 0)
        return -1;
    if (loop_add(loop, &a->watch, EPOLLIN | EPOLLET) < 0) {
        int err = errno;
        close(a->spare_fd);
        a->spare_fd = -1;
        errno = err;
        return -1;
    }
    return 0;
}
