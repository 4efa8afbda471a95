/*
 * tools/common.c - see common.h.
 */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int tool_set_nodelay(int fd)
{
    int one = 1;
    return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* One blocking connect to ai.  Returns the fd, or -1 with errno set. */
static int tool_connect_one(const struct addrinfo *ai)
{
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
        return fd;
    int err = errno;
    close(fd);
    errno = err;
    return -1;
}

/* Print "PROG: what HOST:PORT: reason", with [brackets] around IPv6 hosts. */
static void tool_report(const char *prog, const char *what, const char *host,
                        const char *port, const char *reason)
{
    int v6 = strchr(host, ':') != NULL;
    fprintf(stderr, "%s: %s%s%s%s%s:%s: %s\n", prog, what, *what ? " " : "",
            v6 ? "[" : "", host, v6 ? "]" : "", port, reason);
}

int tool_connect(const char *prog, const char *host, const char *port,
                 struct tool_addr *used)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        tool_report(prog, "", host, port, gai_strerror(rc));
        return -1;
    }
    /* "localhost" may name ::1 and 127.0.0.1: the first that answers wins. */
    int fd = -1, err = 0;
    const struct addrinfo *ai;
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        fd = tool_connect_one(ai);
        if (fd >= 0)
            break;
        err = errno;
    }
    if (fd >= 0 && used != NULL) {
        memcpy(&used->sa, ai->ai_addr, ai->ai_addrlen);
        used->len = ai->ai_addrlen;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        tool_report(prog, "connect", host, port, strerror(err));
        errno = err;
        return -1;
    }
    int flags = fcntl(fd, F_GETFL);
    if (tool_set_nodelay(fd) < 0 || flags < 0 ||
        fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        err = errno;
        tool_report(prog, "socket options for", host, port, strerror(err));
        close(fd);
        errno = err;
        return -1;
    }
    return fd;
}

int tool_connect_start(const struct tool_addr *addr)
{
    int fd = socket(addr->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (tool_set_nodelay(fd) == 0 &&
        (connect(fd, (const struct sockaddr *)&addr->sa, addr->len) == 0 ||
         errno == EINPROGRESS))
        return fd;
    int err = errno;
    close(fd);
    errno = err;
    return -1;
}

void tool_put_header(uint8_t h[TOOL_HEADER], uint32_t len)
{
    h[0] = (uint8_t)(len >> 24);
    h[1] = (uint8_t)(len >> 16);
    h[2] = (uint8_t)(len >> 8);
    h[3] = (uint8_t)len;
}

uint32_t tool_get_header(const uint8_t h[TOOL_HEADER])
{
    return (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
}

int tool_parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *s == '\0' || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

uint64_t tool_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void tool_fill_random(uint8_t *p, size_t n, uint64_t seed)
{
    uint64_t x = seed ^ 0x9e3779b97f4a7c15ull; /* never 0: xorshift would stick */
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (uint8_t)x;
    }
}
