/*
 * step02-framing/server.c - a blocking echo server that speaks in frames.
 *
 * What this step teaches: TCP delivers a byte stream, not messages.  One
 * read() can return half a frame (拆包) or many frames glued together (粘包),
 * so the server keeps partial input in a buffer (buffer.c), cuts whole frames
 * out of it with a pure decoder (frame.c), and sends one reply per frame.
 * The replies to everything one read() delivered leave in a single write.
 *
 * New since step01: frame.c, buffer.c, struct conn, -m, the frame log.
 * Still iterative and blocking: one client at a time.
 *
 * Try it:
 *     make && ./server -p 8080 -v
 *     ../tools/client -p 8080 hello world        (in another terminal)
 *     ../tools/client -p 8080 -c 1 hello         (one byte per write: 拆包)
 */
#include "buffer.h"
#include "frame.h"
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
        "step02-framing: an iterative, blocking echo server for length-prefixed\n"
        "  frames, one client at a time.  A frame is a 4-byte big-endian length,\n"
        "  then that many bytes; each frame is answered with the same frame.\n"
        "  -H HOST       address to bind, IPv4 or IPv6 (default 127.0.0.1)\n"
        "  -p PORT       port to bind; 0 picks a free port (default 8080)\n"
        "  -m MAX_FRAME  largest payload accepted, in bytes (1-4294967295); a longer\n"
        "                frame is a protocol error that closes the connection\n"
        "                (default 1048576)\n"
        "  -v            log every connection and frame to stderr\n"
        "                (format: notes/protocol.md)\n"
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

/* One client's state.  step03 moves this into conn.c. */
struct conn {
    int fd;
    uint64_t id;
    uint32_t max_frame;
    struct buf in;      /* bytes read but not yet decoded: at most one partial frame */
    struct buf out;     /* replies built from one read, sent with one write */
    const char *reason; /* why the connection closes, for the log */
    uint64_t frames, bytes_in, bytes_out;
};

/* Read at most this much per read() call. */
#define READ_CHUNK 65536

/*
 * Cut every complete frame out of c->in and append its reply to c->out.
 * Returns 0 when the rest must wait for more bytes, or -1 when the
 * connection must close (c->reason says why).
 */
static int conn_process_frames(struct conn *c)
{
    for (;;) {
        uint32_t len;
        enum frame_result r =
            frame_decode(buf_peek(&c->in), buf_len(&c->in), c->max_frame, &len);
        if (r == FRAME_INCOMPLETE)
            return 0;
        if (r == FRAME_TOO_LARGE) {
            log_msg("conn=%" PRIu64 " error=protocol len=%" PRIu32 " max=%" PRIu32,
                    c->id, len, c->max_frame);
            c->reason = "protocol";
            return -1;
        }
        log_debug("conn=%" PRIu64 " frame len=%" PRIu32, c->id, len);
        /* The reply: a fresh header and a copy of the payload, side by side
         * in one buffer, so they leave in one write (never two small ones:
         * see "Nagle and delayed ACK" in notes/step02-framing.md). */
        uint8_t hdr[FRAME_HEADER_LEN];
        frame_write_header(hdr, len);
        if (buf_append(&c->out, hdr, sizeof(hdr)) < 0 ||
            buf_append(&c->out, buf_peek(&c->in) + FRAME_HEADER_LEN, len) < 0) {
            log_msg("conn=%" PRIu64 " error=nomem", c->id);
            c->reason = "error";
            return -1;
        }
        buf_consume(&c->in, FRAME_HEADER_LEN + (size_t)len);
        c->frames++;
    }
}

/* Send every queued reply.  Returns 0, or -1 when the peer is gone. */
static int conn_flush(struct conn *c)
{
    if (buf_len(&c->out) == 0)
        return 0;
    if (net_write_all(c->fd, buf_peek(&c->out), buf_len(&c->out)) < 0) {
        c->reason = errno == EPIPE || errno == ECONNRESET ? "reset" : "error";
        log_msg("conn=%" PRIu64 " error=%s write: %s", c->id, c->reason,
                strerror(errno));
        return -1;
    }
    c->bytes_out += buf_len(&c->out);
    buf_consume(&c->out, buf_len(&c->out));
    return 0;
}

/* Read once into c->in.  Returns 0, or -1 when the connection must close. */
static int conn_read(struct conn *c)
{
    if (buf_reserve(&c->in, READ_CHUNK) < 0) {
        c->reason = "error";
        log_msg("conn=%" PRIu64 " error=nomem", c->id);
        return -1;
    }
    ssize_t n = net_read(c->fd, buf_tail(&c->in), buf_space(&c->in));
    if (n == 0) {
        /* EOF, or a half-close (shutdown(SHUT_WR)): every reply was already
         * written, so closing now loses nothing.  A partial frame can never
         * be completed: drop it. */
        c->reason = "eof";
        if (buf_len(&c->in) > 0) {
            c->reason = "eof-mid-frame";
            log_msg("conn=%" PRIu64 " error=eof-mid-frame dropped=%zu", c->id,
                    buf_len(&c->in));
        }
        return -1;
    }
    if (n < 0) {
        c->reason = errno == ECONNRESET ? "reset" : "error";
        log_msg("conn=%" PRIu64 " error=%s read: %s", c->id, c->reason,
                strerror(errno));
        return -1;
    }
    buf_produce(&c->in, (size_t)n);
    c->bytes_in += (uint64_t)n;
    return 0;
}

/*
 * Serve one client until it closes.  Each pass: read what has arrived,
 * decode every whole frame, answer them all with one write.  While we are in
 * here the server does nothing else: that is still step01's limit.
 */
static void serve_client(int fd, uint64_t id, uint32_t max_frame)
{
    struct conn c = {.fd = fd, .id = id, .max_frame = max_frame};
    buf_init(&c.in);
    buf_init(&c.out);
    while (conn_read(&c) == 0) {
        int r = conn_process_frames(&c);
        /* Flush even when the next header broke the protocol: the frames
         * before it were valid and their replies are owed. */
        if (conn_flush(&c) < 0 || r < 0)
            break;
    }
    log_debug("conn=%" PRIu64 " close reason=%s frames=%" PRIu64 " bytes_in=%" PRIu64
              " bytes_out=%" PRIu64,
              id, c.reason, c.frames, c.bytes_in, c.bytes_out);
    buf_free(&c.in);
    buf_free(&c.out);
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
        .host = "127.0.0.1", .port = "8080", .max_frame = FRAME_DEFAULT_MAX};
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
        serve_client(fd, id, cfg.max_frame);
        close(fd);
    }
}
