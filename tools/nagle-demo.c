/*
 * tools/nagle-demo.c - what it costs to send one frame as two small writes.
 *
 * What it teaches: a frame sent as send(header) then send(payload) waits
 * about 40 ms per round trip on Linux, because two TCP mechanisms meet:
 *
 *   - Nagle's algorithm (Nagle 算法), here on the client: while a small
 *     segment is unacknowledged, the next small write is held back.  The
 *     4-byte header leaves at once; the payload waits for the header's ACK.
 *   - Delayed ACK (延迟确认), here on the server: the server got 4 bytes, has
 *     nothing to send yet, so its kernel holds the ACK back hoping to ride on
 *     a reply.  Linux waits at least 40 ms (TCP_DELACK_MIN), up to 200 ms
 *     (TCP_DELACK_MAX); RFC 1122 allows up to 500 ms.
 *
 * Each side waits for the other until the delayed-ACK timer fires.  -N sets
 * TCP_NODELAY on the client (no Nagle: the payload leaves at once); -1 sends
 * header and payload in one send() (nothing small is left to hold back), the
 * real fix.  notes/step02-framing.md walks through it.
 *
 * Try it (terminal 1 runs a server without -v: logging would be measured too):
 *     make run STEP=2 FLAGS=
 *     tools/nagle-demo -p 8080          two sends, Nagle on:  ~40 ms each
 *     tools/nagle-demo -p 8080 -N       two sends, TCP_NODELAY: microseconds
 *     tools/nagle-demo -p 8080 -1       one send per frame:     microseconds
 */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define PAYLOAD_LEN   64 /* a small message: far below one segment (MSS) */
#define REPLY_TIMEOUT 10 /* seconds without a reply before giving up */

struct demo_config {
    const char *host;
    const char *port;
    long count;    /* round trips */
    bool nodelay;  /* -N: TCP_NODELAY on the client socket */
    bool one_send; /* -1: header and payload in one send() */
};

static void demo_usage(FILE *out)
{
    fprintf(out,
            "usage: nagle-demo [-H HOST] [-p PORT] [-n COUNT] [-N] [-1] [-h]\n"
            "Sends COUNT frames of %d bytes to an echo server, one at a time, waits\n"
            "for each reply, and prints the average, p50 and p99 round trip.  By\n"
            "default each frame goes out as two send() calls, header then payload,\n"
            "with Nagle's algorithm on: expect ~40 ms per round trip (Nagle here,\n"
            "delayed ACK at the server).  Start the server without -v, whose log\n"
            "would be timed too: make run STEP=2 FLAGS=\n"
            "  -H HOST   server address or name, IPv4 or IPv6 (default 127.0.0.1)\n"
            "  -p PORT   server port (default 8080)\n"
            "  -n COUNT  round trips to time, 1-1000000 (default 50)\n"
            "  -N        set TCP_NODELAY on this client's socket (turn Nagle off);\n"
            "            still two send() calls per frame\n"
            "  -1        send header and payload in one send() call (the real fix);\n"
            "            Nagle stays on unless -N is given too\n"
            "  -h        show this help\n"
            "Exit status: 0 every reply arrived intact; 1 connection error, timeout\n"
            "or a wrong reply; 2 usage error.\n",
            PAYLOAD_LEN);
}

static void demo_fail_usage(const char *what, const char *arg, const char *range)
{
    fprintf(stderr, "nagle-demo: %s '%s' (%s)\n", what, arg, range);
    demo_usage(stderr);
    exit(2);
}

static void demo_parse_args(int argc, char **argv, struct demo_config *cfg)
{
    long port;
    int opt;
    while ((opt = getopt(argc, argv, "H:p:n:N1h")) != -1) {
        switch (opt) {
        case 'H':
            cfg->host = optarg;
            break;
        case 'p':
            if (tool_parse_long(optarg, 1, 65535, &port) != 0)
                demo_fail_usage("bad port", optarg, "1-65535");
            cfg->port = optarg;
            break;
        case 'n':
            if (tool_parse_long(optarg, 1, 1000000, &cfg->count) != 0)
                demo_fail_usage("bad count", optarg, "1-1000000");
            break;
        case 'N':
            cfg->nodelay = true;
            break;
        case '1':
            cfg->one_send = true;
            break;
        case 'h':
            demo_usage(stdout);
            exit(0);
        default:
            demo_usage(stderr);
            exit(2);
        }
    }
    if (optind != argc) {
        fprintf(stderr, "nagle-demo: unexpected argument '%s'\n", argv[optind]);
        demo_usage(stderr);
        exit(2);
    }
}

/*
 * tool_connect() returns a nonblocking socket with TCP_NODELAY set, because
 * the client and the load generator need both.  This demo wants the opposite:
 * a blocking socket (one frame, then wait for its reply), and Nagle on unless
 * -N asks for TCP_NODELAY.  Returns the fd, or -1 after saying why.
 */
static int demo_connect(const struct demo_config *cfg)
{
    int fd = tool_connect("nagle-demo", cfg->host, cfg->port, NULL);
    if (fd < 0)
        return -1;
    int nodelay = cfg->nodelay ? 1 : 0;
    struct timeval timeout = {.tv_sec = REPLY_TIMEOUT};
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, sizeof(nodelay)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout)) < 0) {
        fprintf(stderr, "nagle-demo: socket options: %s\n", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* Send all len bytes with as many send() calls as it takes (short writes). */
static int demo_send_all(int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Receive exactly len bytes.  Returns 0, or -1 (errno 0 means EOF). */
static int demo_recv_all(int fd, uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t n = recv(fd, p, len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = 0;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/*
 * One round trip: send the frame (in one or two send() calls), wait for the
 * whole reply, check it.  frame holds the header and the payload side by side.
 */
static int demo_round_trip(int fd, const struct demo_config *cfg, const uint8_t *frame)
{
    size_t frame_len = TOOL_HEADER + PAYLOAD_LEN;
    if (cfg->one_send) {
        if (demo_send_all(fd, frame, frame_len) < 0)
            goto send_failed;
    } else if (demo_send_all(fd, frame, TOOL_HEADER) < 0 ||
               demo_send_all(fd, frame + TOOL_HEADER, PAYLOAD_LEN) < 0) {
        goto send_failed;
    }
    uint8_t reply[TOOL_HEADER + PAYLOAD_LEN];
    if (demo_recv_all(fd, reply, sizeof(reply)) < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            fprintf(stderr, "nagle-demo: no reply within %d s\n", REPLY_TIMEOUT);
        else if (errno == 0)
            fprintf(stderr, "nagle-demo: the server closed the connection\n");
        else
            fprintf(stderr, "nagle-demo: recv: %s\n", strerror(errno));
        return -1;
    }
    if (memcmp(reply, frame, frame_len) != 0) {
        fprintf(stderr, "nagle-demo: the reply differs from the frame sent\n");
        return -1;
    }
    return 0;
send_failed:
    fprintf(stderr, "nagle-demo: send: %s\n", strerror(errno));
    return -1;
}

static int demo_compare_ns(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted[0..n-1]: the smallest value that at
 * least pct % of the samples do not exceed. */
static uint64_t demo_percentile(const uint64_t *sorted, size_t n, unsigned pct)
{
    size_t rank = (n * pct + 99) / 100; /* ceil(n * pct / 100), 1-based */
    return sorted[rank > 0 ? rank - 1 : 0];
}

static void demo_report(uint64_t *rtt_ns, size_t n)
{
    qsort(rtt_ns, n, sizeof(rtt_ns[0]), demo_compare_ns);
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += rtt_ns[i];
    printf("round trip: avg %.3f ms  p50 %.3f ms  p99 %.3f ms  (min %.3f, max %.3f)\n",
           (double)sum / (double)n / 1e6, (double)demo_percentile(rtt_ns, n, 50) / 1e6,
           (double)demo_percentile(rtt_ns, n, 99) / 1e6, (double)rtt_ns[0] / 1e6,
           (double)rtt_ns[n - 1] / 1e6);
}

int main(int argc, char **argv)
{
    struct demo_config cfg = {.host = "127.0.0.1", .port = "8080", .count = 50};
    demo_parse_args(argc, argv, &cfg);

    uint8_t frame[TOOL_HEADER + PAYLOAD_LEN];
    tool_put_header(frame, PAYLOAD_LEN);
    tool_fill_random(frame + TOOL_HEADER, PAYLOAD_LEN, tool_now_ns());
    uint64_t *rtt_ns = calloc((size_t)cfg.count, sizeof(*rtt_ns));
    if (rtt_ns == NULL) {
        fprintf(stderr, "nagle-demo: out of memory\n");
        return 1;
    }
    int fd = demo_connect(&cfg);
    if (fd < 0) {
        free(rtt_ns);
        return 1;
    }
    printf("nagle-demo: %ld round trips, %d-byte payload, %s, TCP_NODELAY %s\n",
           cfg.count, PAYLOAD_LEN,
           cfg.one_send ? "one send() per frame"
                        : "two send() per frame (header, payload)",
           cfg.nodelay ? "on" : "off (Nagle on)");
    fflush(stdout);

    int status = 0;
    for (long i = 0; i < cfg.count; i++) {
        uint64_t t0 = tool_now_ns();
        if (demo_round_trip(fd, &cfg, frame) < 0) {
            status = 1;
            break;
        }
        rtt_ns[i] = tool_now_ns() - t0;
    }
    if (status == 0)
        demo_report(rtt_ns, (size_t)cfg.count);
    close(fd);
    free(rtt_ns);
    return status;
}
