/*
 * tests/acceptfault.c - an LD_PRELOAD shim that makes accept4() and accept()
 * fail on demand, so the tests can reach a server's error paths for accept
 * without running a machine out of file descriptors.
 *
 *   ACCEPT4_FAIL=EMFILE   every accept4() fails with EMFILE (or ENFILE,
 *                         ENOBUFS, ENOMEM), the backlog left untouched: the
 *                         state of a process at its fd limit
 *   ACCEPT_ABORTS=N       the first N accept() calls (the servers use plain
 *                         accept() only to shed a connection at EMFILE) fail
 *                         with ECONNABORTED, as when a client gives up while
 *                         waiting in the backlog
 *
 *     LD_PRELOAD=tests/bin/acceptfault.so ACCEPT4_FAIL=EMFILE step02-framing/server
 *
 * Used by tests/robustness.bats and tests/03-epoll.bats (the EMFILE tests).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static int errno_named(const char *name)
{
    static const struct {
        const char *name;
        int err;
    } names[] = {{"EMFILE", EMFILE},
                 {"ENFILE", ENFILE},
                 {"ENOBUFS", ENOBUFS},
                 {"ENOMEM", ENOMEM}};
    for (size_t i = 0; name && i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(name, names[i].name) == 0)
            return names[i].err;
    return 0;
}

/* glibc's accept4() and accept() are thin wrappers around the system calls,
 * so calling the system calls directly is the "real" function here. */
int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    int err = errno_named(getenv("ACCEPT4_FAIL"));
    if (err) {
        errno = err;
        return -1;
    }
    return (int)syscall(SYS_accept4, fd, addr, len, flags);
}

int accept(int fd, struct sockaddr *addr, socklen_t *len)
{
    static int aborted;
    const char *n = getenv("ACCEPT_ABORTS");
    if (n && aborted < atoi(n)) {
        aborted++;
        errno = ECONNABORTED;
        return -1;
    }
    return (int)syscall(SYS_accept4, fd, addr, len, 0);
}
