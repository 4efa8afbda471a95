/*
 * tools/ref-echo.c - the reference floor for `make bench`: the smallest
 * correct raw-byte echo server on epoll.
 *
 * One thread, level-triggered epoll, nonblocking sockets.  No framing and no
 * buffering beyond one read: it reads up to 64 KiB into a shared buffer and
 * writes it straight back.  Only if the write is short does the connection
 * keep the unsent rest, stop reading (so it never holds more than one read)
 * and wait for EPOLLOUT.  Framed clients work against it because framed echo
 * and raw echo are the same byte stream.
 *
 * Every step is measured against it in the same run: a step that matches it
 * loses nothing to its buffers, frames and bookkeeping.
 *
 *     tools/ref-echo -p 8080         then: tools/loadgen -p 8080 -c 64 -d 8
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>

struct peer {
    int fd;
    char *pending; /* the unsent rest of one read, or NULL */
    size_t off, len;
};

static void usage(FILE *out)
{
    fprintf(out, "usage: ref-echo [-H HOST] [-p PORT] [-h]\n"
                 "  Minimal raw-byte epoll echo server: the benchmark's floor.\n"
                 "  -H HOST  address to bind (default 127.0.0.1)\n"
                 "  -p PORT  port to bind; 0 picks a free port (default 8080)\n"
                 "  -h       show this help\n"
                 "Prints \"listening on HOST:PORT\" when ready; runs until killed.\n");
}

static int listen_on(const char *host, const char *port)
{
    struct addrinfo hints = {.ai_family = AF_INET,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE},
                    *res;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "ref-echo: %s:%s: %s\n", host, port, gai_strerror(rc));
        exit(1);
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, SOMAXCONN) < 0) {
        fprintf(stderr, "ref-echo: cannot listen on %s:%s: %s\n", host, port,
                strerror(errno));
        exit(1);
    }
    freeaddrinfo(res);
    struct sockaddr_in a;
    socklen_t alen = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &alen);
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a.sin_addr, ip, sizeof(ip));
    printf("listening on %s:%u\n", ip, (unsigned)ntohs(a.sin_port));
    fflush(stdout);
    return fd;
}

static void peer_close(int ep, struct peer *p)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, p->fd, NULL);
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

static void accept_all(int ep, int lfd, int *spare)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) {
                /* Out of fds: free the spare, accept and drop one, re-reserve,
                 * so level-triggered epoll does not spin on the backlog. */
                close(*spare);
                fd = accept(lfd, NULL, NULL);
                if (fd >= 0)
                    close(fd);
                *spare = open("/dev/null", O_RDONLY | O_CLOEXEC);
                continue;
            }
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return; /* EAGAIN: the backlog is empty */
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        struct peer *p = calloc(1, sizeof(*p));
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = p};
        if (p == NULL || (p->fd = fd, epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)) {
            close(fd);
            free(p);
        }
    }
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *port = "8080";
    int c;
    while ((c = getopt(argc, argv, "H:p:h")) != -1) {
        switch (c) {
        case 'H':
            host = optarg;
            break;
        case 'p':
            port = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    int lfd = listen_on(host, port);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    int spare = open("/dev/null", O_RDONLY | O_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
    static char buf[65536];
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            struct peer *p = evs[i].data.ptr;
            if (p == NULL) {
                accept_all(ep, lfd, &spare);
                continue;
            }
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
                peer_close(ep, p);
        }
    }
}
