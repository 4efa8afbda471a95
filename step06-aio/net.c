/*
 * net.c - the listening socket and peer names.
 *
 * From step03 the listening socket is nonblocking: under edge-triggered
 * epoll the server accepts until accept4() says EAGAIN, and a blocking
 * socket would hang it there instead.  The blocking read/write loops of
 * steps 01-02 are gone: conn.c does nonblocking I/O on ring buffers.
 */
#include "net.h"

#include <errno.h>
#include <stdbool.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>
#include <unistd.h>

/* One candidate address: socket, SO_REUSEADDR, bind, listen. */
static int net_listen_on(const struct addrinfo *ai, const char *host, const char *port,
                         bool reuseport, char *err, size_t err_len)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, err_len, "socket: %s", strerror(errno));
        return -1;
    }
    /* SO_REUSEADDR: restarting the server must not fail with EADDRINUSE just
     * because connections from the last run are still in TIME_WAIT.  (Set
     * reuse to 0 to see that failure: notes/step01-blocking.md.) */
    int reuse = 1;
    /* SO_REUSEPORT (step04's -D reuseport): many sockets listen on one port,
     * and the kernel gives each new connection to one of them, by a hash of
     * its addresses.  Every one of them must ask before bind(). */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &reuse, sizeof(reuse)) < 0 ||
        (reuseport &&
         setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &reuse, sizeof(reuse)) < 0) ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, SOMAXCONN) < 0) {
        snprintf(err, err_len, "cannot listen on %s:%s: %s", host, port,
                 strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static int net_listen_any(const char *host, const char *port, bool reuseport,
                          char *bound, size_t bound_len, char *err, size_t err_len)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, /* IPv4 or IPv6, as host says */
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, err_len, "cannot resolve %s:%s: %s", host, port,
                 gai_strerror(rc));
        return -1;
    }
    /* A name may resolve to several addresses (localhost: 127.0.0.1 and ::1):
     * listen on the first that works; err keeps the last failure. */
    int fd = -1;
    for (const struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next)
        fd = net_listen_on(ai, host, port, reuseport, err, err_len);
    freeaddrinfo(res);
    if (fd < 0)
        return -1;

    /* With port 0 only the kernel knows the port: ask it. */
    struct sockaddr_storage ss = {0};
    socklen_t sslen = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sslen) < 0) {
        snprintf(err, err_len, "getsockname: %s", strerror(errno));
        close(fd);
        return -1;
    }
    net_format_addr((struct sockaddr *)&ss, bound, bound_len);
    return fd;
}

int net_listen(const char *host, const char *port, char *bound, size_t bound_len,
               char *err, size_t err_len)
{
    return net_listen_any(host, port, false, bound, bound_len, err, err_len);
}

int net_listen_reuseport(const char *host, const char *port, char *bound,
                         size_t bound_len, char *err, size_t err_len)
{
    return net_listen_any(host, port, true, bound, bound_len, err, err_len);
}

void net_format_addr(const struct sockaddr *sa, char *out, size_t out_len)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
        snprintf(out, out_len, "[%s]:%u", ip, (unsigned)ntohs(in6->sin6_port));
    } else if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
        snprintf(out, out_len, "%s:%u", ip, (unsigned)ntohs(in->sin_port));
    } else {
        snprintf(out, out_len, "?");
    }
}
