/*
 * step01-blocking/server.c - an iterative, blocking echo server.
 *
 * What this step teaches: the bare socket life cycle (socket, bind, listen,
 * accept, read, write, close) and the two loops every blocking server needs:
 * read() retried on EINTR, and write_all() for short writes.
 *
 * Its limit, on purpose: accept() and read() block, so while one client is
 * connected every other client waits in the listen backlog.  A test shows it
 * (tests/01-echo.bats) and notes/step01-blocking.md explains why step03 exists.
 *
 * Try it:
 *     make && ./server -p 8080
 *     ../tools/client -p 8080 hello world        (in another terminal)
 */
#include "log.h"
#include "net.h"

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
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
        "step01-blocking: an iterative, blocking echo server: it echoes raw bytes,\n"
        "  one client at a time (the next client waits in the listen backlog).\n"
        "  -H HOST       address to bind, IPv4 or IPv6 (default 127.0.0.1)\n"
        "  -p PORT       port to bind; 0 picks a free port (default 8080)\n"
        "  -m MAX_FRAME  accepted so every step has the same command line;\n"
        "                step01 has no frames, so it is not used (default 1048576)\n"
        "  -v            log every connection to stderr (format: notes/protocol.md)\n"
        "  -h            show this help\n"
        "When ready it prints \"listening on HOST:PORT\" on stdout.  It runs until\n"
        "killed: SIGINT (Ctrl-C) or SIGTERM end it at once.\n"
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

/*
 * Echo one client until it closes.  While we are in here the server does
 * nothing else: that is the whole story of this step.
 */
static void serve_client(int fd, uint64_t id)
{
    char buf[16384]; /* reads are bounded by sizeof(buf): a stack buffer is safe */
    uint64_t bytes = 0;
    const char *reason = "eof";
    for (;;) {
        ssize_t n = net_read(fd, buf, sizeof(buf));
        if (n == 0)
            break; /* the client closed (or half-closed) its side */
        if (n < 0) {
            reason = errno == ECONNRESET ? "reset" : "error";
            log_msg("conn=%" PRIu64 " error=%s read: %s", id, reason, strerror(errno));
            break;
        }
        if (net_write_all(fd, buf, (size_t)n) < 0) {
            reason = errno == EPIPE || errno == ECONNRESET ? "reset" : "error";
            log_msg("conn=%" PRIu64 " error=%s write: %s", id, reason, strerror(errno));
            break;
        }
        bytes += (uint64_t)n;
    }
    log_debug("conn=%" PRIu64 " close reason=%s bytes_in=%" PRIu64
              " bytes_out=%" PRIu64,
              id, reason, bytes, bytes);
}

/*
 * accept() failed, and not because one client gave up: typically with an
 * error that lasts (EMFILE: out of file descriptors; ENFILE, ENOBUFS,
 * ENOMEM).  Retrying at once would spin at 100 % CPU and write a log line
 * per try.  Wait instead: 5 ms, doubling up to 1 s, reset
 * by the next successful accept (Go's net/http does the same).
 */
static void accept_backoff(unsigned *delay_ms, int err)
{
    *delay_ms = *delay_ms == 0 ? 5 : *delay_ms * 2;
    if (*delay_ms > 1000)
        *delay_ms = 1000;
    log_msg("accept: %s (retrying in %u ms)", strerror(err), *delay_ms);
    struct timespec ts = {.tv_sec = *delay_ms / 1000,
                          .tv_nsec = (long)(*delay_ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

int main(int argc, char **argv)
{
    struct server_config cfg = {
        .host = "127.0.0.1", .port = "8080", .max_frame = 1048576};
    parse_args(argc, argv, &cfg);

    char bound[NET_ADDR_LEN], err[256];
    int listen_fd =
        net_listen(cfg.host, cfg.port, bound, sizeof(bound), err, sizeof(err));
    if (listen_fd < 0)
        die("%s", err);
    printf("listening on %s\n", bound);
    fflush(stdout); /* stdout is a pipe in tests: without this the line waits */

    uint64_t next_id = 1;
    unsigned backoff_ms = 0;
    for (;;) {
        struct sockaddr_storage peer;
        socklen_t peer_len = sizeof(peer);
        int fd = accept4(listen_fd, (struct sockaddr *)&peer, &peer_len, SOCK_CLOEXEC);
        if (fd < 0) {
            /* EINTR: a signal arrived; ECONNABORTED: the client gave up while
             * waiting in the backlog.  Neither is a reason to stop serving. */
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
                continue;
            accept_backoff(&backoff_ms, errno);
            continue;
        }
        backoff_ms = 0;
        uint64_t id = next_id++;
        if (log_verbose) {
            char name[NET_ADDR_LEN];
            net_format_addr((struct sockaddr *)&peer, name, sizeof(name));
            log_msg("conn=%" PRIu64 " open peer=%s", id, name);
        }
        serve_client(fd, id);
        close(fd);
    }
}
