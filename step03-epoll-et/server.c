/*
 * step03-epoll-et/server.c - one thread serves every client: nonblocking
 * sockets and edge-triggered epoll (边缘触发).
 *
 * What this step teaches: the event-driven server (事件驱动, the Reactor
 * pattern).  Instead of blocking in read() on one client, the thread asks
 * epoll which sockets are ready and serves whichever are, a little at a time.
 * This file starts it all; accept.c owns the listening socket: it drains
 * accept4() until EAGAIN and survives running out of file descriptors
 * (EMFILE) with the spare-fd trick.  conn.c serves connections; loop.c is
 * the event loop; buffer.c is a ring buffer whose memory comes from pool.c.
 *
 * New since step02: loop.c, accept.c, conn.c, pool.c, a ring buffer in
 * buffer.c; the blocking per-client loop is gone.
 *
 * Try it:
 *     make && ./server -p 8080 -v
 *     ../tools/client -p 8080 hello &  ../tools/client -p 8080 world
 *     ../tools/loadgen -p 8080 -c 100 -d 4 -T 3
 */
#include "accept.h"
#include "conn.h"
#include "frame.h"
#include "log.h"
#include "loop.h"
#include "net.h"
#include "pool.h"

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct server_config {
    const char *host;
    const char *port;
    uint32_t max_frame;
};

static void usage(FILE *out, const char *prog)
{
    fprintf(
        out,
        "usage: %s [-H HOST] [-p PORT] [-m MAX_FRAME] [-v] [-h]\n"
        "step03-epoll-et: one thread serves every client at once: nonblocking\n"
        "  sockets, edge-triggered epoll, ring buffers from a memory pool,\n"
        "  backpressure and a per-turn read budget.  Echoes length-prefixed\n"
        "  frames: a 4-byte big-endian length, then that many bytes.\n"
        "  -H HOST       address to bind, IPv4 or IPv6 (default 127.0.0.1)\n"
        "  -p PORT       port to bind; 0 picks a free port (default 8080)\n"
        "  -m MAX_FRAME  largest payload accepted, in bytes (1-4294967295); a longer\n"
        "                frame is a protocol error that closes the connection\n"
        "                (default 1048576)\n"
        "  -v            log every connection and frame to stderr\n"
        "                (format: notes/protocol.md)\n"
        "  -h            show this help\n"
        "When ready it prints \"listening on HOST:PORT\" on stdout.  It runs until\n"
        "killed: SIGINT (Ctrl-C) or SIGTERM end it at once (step05 adds a graceful\n"
        "shutdown).\n"
        "Exit status: 1 cannot start, 2 usage error.\n",
        prog);
}

/* Parse a decimal number in [min, max]; anything else is a usage error. */
static int parse_number(const char *s, unsigned long long min, unsigned long long max,
                        unsigned long long *out)
{
    char *end;
    errno = 0;
    if (*s == '\0' || *s == '-')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static void parse_args(int argc, char **argv, struct server_config *cfg)
{
    unsigned long long v;
    int opt;
    while ((opt = getopt(argc, argv, "H:p:m:vh")) != -1) {
        switch (opt) {
        case 'H':
            cfg->host = optarg;
            break;
        case 'p':
            if (parse_number(optarg, 0, 65535, &v) < 0) {
                fprintf(stderr, "%s: bad port '%s' (0-65535)\n", argv[0], optarg);
                usage(stderr, argv[0]);
                exit(2);
            }
            cfg->port = optarg;
            break;
        case 'm':
            if (parse_number(optarg, 1, UINT32_MAX, &v) < 0) {
                fprintf(stderr, "%s: bad max frame '%s' (1-%" PRIu32 ")\n", argv[0],
                        optarg, UINT32_MAX);
                usage(stderr, argv[0]);
                exit(2);
            }
            cfg->max_frame = (uint32_t)v;
            break;
        case 'v':
            log_verbose = true;
            break;
        case 'h':
            usage(stdout, argv[0]);
            exit(0);
        default:
            usage(stderr, argv[0]);
            exit(2);
        }
    }
    if (optind != argc) {
        fprintf(stderr, "%s: unexpected argument '%s'\n", argv[0], argv[optind]);
        usage(stderr, argv[0]);
        exit(2);
    }
}

/* The server: one event loop, one buffer pool, one listening socket. */
struct server {
    struct loop loop;
    struct pool pool;
    struct conn_ctx ctx;
    struct acceptor acceptor;
    uint64_t next_id;
};

/* A new connection: serve it (conn.c). */
static void server_on_accept(struct acceptor *a, int fd)
{
    struct server *s = container_of(a, struct server, acceptor);
    conn_open(&s->ctx, fd, s->next_id++);
}

int main(int argc, char **argv)
{
    struct server_config cfg = {
        .host = "127.0.0.1", .port = "8080", .max_frame = FRAME_DEFAULT_MAX};
    parse_args(argc, argv, &cfg);

    char bound[NET_ADDR_LEN], err[256];
    int listen_fd =
        net_listen(cfg.host, cfg.port, bound, sizeof(bound), err, sizeof(err));
    if (listen_fd < 0)
        die("%s", err);

    static struct server s;
    if (loop_init(&s.loop) < 0 || pool_init(&s.pool, 256) < 0)
        die("cannot create the event loop: %s", strerror(errno));
    s.ctx =
        (struct conn_ctx){.loop = &s.loop, .pool = &s.pool, .max_frame = cfg.max_frame};
    s.next_id = 1;
    if (acceptor_start(&s.acceptor, &s.loop, listen_fd, SOCK_NONBLOCK | SOCK_CLOEXEC,
                       server_on_accept) < 0)
        die("cannot watch the listening socket: %s", strerror(errno));

    printf("listening on %s\n", bound);
    fflush(stdout);    /* stdout is a pipe in tests: without this the line waits */
    loop_run(&s.loop); /* returns only if epoll_wait() fails for good */
    die("event loop stopped");
}
