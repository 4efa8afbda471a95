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
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>
#include <unistd.h>

int net_listen(const char *host, const char *port, char *bound, size_t bound_len,
               char *err, size_t err_len)
{
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, err_len, "cannot resolve %s:%s: %s", host, port,
                 gai_strerror(rc));
        return -1;
    }

    int fd = socket(res->ai_family, res->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, err_len, "socket: %s", strerror(errno));
        freeaddrinfo(res);
        return -1;
    }
    /* SO_REUSEADDR: restarting the server must not fail with EADDRINUSE just
     * because connections from the last run are still in TIME_WAIT. */
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, SOMAXCONN) < 0) {
        snprintf(err, err_len, "cannot listen on %s:%s: %s", host, port,
                 strerror(errno));
        freeaddrinfo(res);
        close(fd);
        return -1;
    }
    freeaddrinfo(res);

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

void net_format_addr(const struct sockaddr *sa, char *out, size_t out_len)
{
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    char ip[INET_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
    snprintf(out, out_len, "%s:%u", ip, (unsigned)ntohs(in->sin_port));
}
