/*
 * tools/client.c - a framed command-line client for students and tests.
 *
 * It speaks the lab's protocol (notes/protocol.md): each message goes out as
 * a 4-byte big-endian length plus payload, and each reply frame's payload is
 * printed on its own line.  Its options reproduce, on purpose, every way a
 * real peer can cut, glue or break the stream, so that a test (or a student)
 * can watch the server cope:
 *
 *     client -p 8080 hello world            one frame each, ping-pong
 *     client -p 8080 -c 1 -D 1000 hello     one byte per write (拆包)
 *     client -p 8080 -b -n 1000 x           1000 frames in one write (粘包)
 *     client -p 8080 -r ffffffff            a header claiming 4 GiB
 *     client -p 8080                        messages from stdin, one per line
 *
 * The socket is nonblocking and driven by poll(), so the client reads replies
 * while it is still sending: a client that writes megabytes before reading
 * anything deadlocks against any echo server once both socket buffers fill.
 */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define EXIT_IO       1 /* connect failure, reset, timeout, early close */
#define EXIT_USAGE    2
#define EXIT_MISMATCH 3 /* -x: a reply differs from what was sent */
#define MAX_CHUNKS    64

struct msg {
    uint8_t *data;
    size_t len;
};

struct options {
    const char *host, *port;
    long repeat, connections;
    bool batch, half_close, verify, quiet, reset, slow_reader, go_on_eof;
    size_t chunks[MAX_CHUNKS];
    int nchunks;
    long delay_us;
    int timeout_s;
    uint8_t *raw;
    size_t raw_len;
    struct msg *msgs;
    size_t nmsgs;
    bool from_stdin;
};

/* One connection's state while it sends and collects replies. */
struct session {
    const struct options *opt;
    int fd;
    uint8_t *in; /* received bytes not yet parsed into a reply */
    size_t in_len, in_cap;
    size_t replies;           /* replies received so far */
    const struct msg *expect; /* the message each reply must echo, in order */
    size_t nexpect;
    size_t chunk_index; /* position in opt->chunks, across the whole session */
    bool eof;
    bool hold_reads; /* -S: not reading replies yet */
};

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: client [-H HOST] [-p PORT] [options] [MESSAGE...]\n"
        "Sends each MESSAGE as one frame (4-byte big-endian length + payload) and\n"
        "prints each reply's payload on its own line.  With no MESSAGE, -F or -z,\n"
        "messages are read from stdin, one per line, and the connection stays open\n"
        "until stdin ends.\n"
        "  -H HOST     server address (default 127.0.0.1)\n"
        "  -p PORT     server port (default 8080)\n"
        "  -n N        send every message N times (default 1)\n"
        "  -k K        run the whole exchange K times, one connection after another\n"
        "  -b          batch: send all frames (and -r bytes) in one write, reading\n"
        "              replies meanwhile; default: send a frame, await its reply\n"
        "  -c SIZES    split every write into chunks of these sizes, comma-separated;\n"
        "              the last size repeats (-c 1: byte by byte; -c 1,3,65536: a\n"
        "              header split 1+3, then the rest)\n"
        "  -D USEC     pause USEC microseconds between chunks (default 0)\n"
        "  -s          half-close (shutdown SHUT_WR) after sending, then expect every\n"
        "              reply and then EOF\n"
        "  -r HEX      after the frames, send these raw bytes, given in hex\n"
        "              (-r ffffffff41: a header declaring 4294967295 bytes, then "
        "'A');\n"
        "              the client then expects the server to close the connection\n"
        "  -F FILE     one more message: the contents of FILE (binary safe)\n"
        "  -z SIZE     one more message: SIZE random bytes\n"
        "  -x          verify: exit 3 when a reply differs from what was sent\n"
        "  -q          quiet: do not print replies\n"
        "  -R          after sending, close with a reset (RST) instead of a FIN,\n"
        "              without waiting for replies\n"
        "  -G          connect, then send nothing until stdin ends (lets a test\n"
        "              line up a connection and release it later)\n"
        "  -S          slow reader: read no reply until everything is sent or sending\n"
        "              has stalled for 1 s; then say so on stderr, wait for stdin to\n"
        "              end, and only then read (and send the rest)\n"
        "  -t SEC      give up after SEC seconds without progress (default 10)\n"
        "  -h          show this help\n"
        "Exit status: 0 every reply arrived (and matched, with -x); 1 connection\n"
        "error, timeout or early close; 2 usage error; 3 a reply differed (-x).\n");
}

static void fail_usage(const char *what, const char *arg)
{
    fprintf(stderr, "client: %s '%s'\n", what, arg);
    usage(stderr);
    exit(EXIT_USAGE);
}

static long parse_long(const char *s, long min, long max, const char *what)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *s == '\0' || *end != '\0' || v < min || v > max)
        fail_usage(what, s);
    return v;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL) {
        fprintf(stderr, "client: out of memory\n");
        exit(EXIT_IO);
    }
    return p;
}

static void add_msg(struct options *o, uint8_t *data, size_t len)
{
    o->msgs = realloc(o->msgs, (o->nmsgs + 1) * sizeof(*o->msgs));
    if (o->msgs == NULL) {
        fprintf(stderr, "client: out of memory\n");
        exit(EXIT_IO);
    }
    o->msgs[o->nmsgs++] = (struct msg){data, len};
}

static void add_copy(struct options *o, const void *src, size_t len)
{
    uint8_t *p = xmalloc(len);
    memcpy(p, src, len);
    add_msg(o, p, len);
}

static void parse_chunks(struct options *o, const char *arg)
{
    char *copy = strdup(arg), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (o->nchunks == MAX_CHUNKS)
            fail_usage("too many chunk sizes in", arg);
        o->chunks[o->nchunks++] = (size_t)parse_long(t, 1, 1L << 30, "bad chunk size");
    }
    free(copy);
    if (o->nchunks == 0)
        fail_usage("bad chunk sizes", arg);
}

static void parse_hex(struct options *o, const char *hex)
{
    size_t n = strlen(hex);
    if (n % 2 != 0)
        fail_usage("odd number of hex digits in", hex);
    o->raw = xmalloc(n / 2);
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1 ||
            !strchr("0123456789abcdefABCDEF", hex[2 * i]) ||
            !strchr("0123456789abcdefABCDEF", hex[2 * i + 1]))
            fail_usage("bad hex", hex);
        o->raw[i] = (uint8_t)v;
    }
    o->raw_len = n / 2;
}

static void add_file(struct options *o, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "client: %s: %s\n", path, strerror(errno));
        exit(EXIT_USAGE);
    }
    size_t cap = 65536, len = 0;
    uint8_t *p = xmalloc(cap);
    size_t n;
    while ((n = fread(p + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap) {
            p = realloc(p, cap *= 2);
            if (p == NULL) {
                fprintf(stderr, "client: out of memory\n");
                exit(EXIT_IO);
            }
        }
    }
    fclose(f);
    add_msg(o, p, len);
}

static void add_random(struct options *o, size_t len)
{
    uint8_t *p = xmalloc(len);
    /* A different stream every run. */
    tool_fill_random(p, len, (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32));
    add_msg(o, p, len);
}

static void parse_args(int argc, char **argv, struct options *o)
{
    int c;
    while ((c = getopt(argc, argv, "H:p:n:k:bc:D:sr:F:z:xqRSGt:h")) != -1) {
        switch (c) {
        case 'H':
            o->host = optarg;
            break;
        case 'p':
            parse_long(optarg, 1, 65535, "bad port");
            o->port = optarg;
            break;
        case 'n':
            o->repeat = parse_long(optarg, 1, 100000000, "bad repeat count");
            break;
        case 'k':
            o->connections = parse_long(optarg, 1, 1000000, "bad connection count");
            break;
        case 'b':
            o->batch = true;
            break;
        case 'c':
            parse_chunks(o, optarg);
            break;
        case 'D':
            o->delay_us = parse_long(optarg, 0, 10000000, "bad delay");
            break;
        case 's':
            o->half_close = true;
            break;
        case 'r':
            parse_hex(o, optarg);
            break;
        case 'F':
            add_file(o, optarg);
            break;
        case 'z':
            add_random(o, (size_t)parse_long(optarg, 0, 1L << 30, "bad size"));
            break;
        case 'x':
            o->verify = true;
            break;
        case 'q':
            o->quiet = true;
            break;
        case 'S':
            o->slow_reader = true;
            break;
        case 'G':
            o->go_on_eof = true;
            break;
        case 'R':
            o->reset = true;
            break;
        case 't':
            o->timeout_s = (int)parse_long(optarg, 1, 86400, "bad timeout");
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            exit(EXIT_USAGE);
        }
    }
    for (int i = optind; i < argc; i++)
        add_copy(o, argv[i], strlen(argv[i]));
    o->from_stdin = o->nmsgs == 0 && o->raw_len == 0;
    if (o->from_stdin && o->connections > 1)
        fail_usage("-k needs messages on the command line, not on stdin", "-k");
}

static int connect_to(const struct options *o)
{
    int fd = tool_connect("client", o->host, o->port);
    if (fd < 0)
        exit(EXIT_IO);
    return fd;
}

static void die_io(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));
static void die_io(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "client: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(EXIT_IO);
}

static void check_reply(struct session *s, const uint8_t *payload, size_t len)
{
    const struct options *o = s->opt;
    if (s->replies >= s->nexpect) {
        fprintf(stderr, "client: unexpected reply %zu (%zu bytes): only %zu were due\n",
                s->replies + 1, len, s->nexpect);
        exit(o->verify ? EXIT_MISMATCH : EXIT_IO);
    }
    const struct msg *want = &s->expect[s->replies];
    if (o->verify && (want->len != len || memcmp(want->data, payload, len) != 0)) {
        size_t at = 0;
        while (at < len && at < want->len && want->data[at] == payload[at])
            at++;
        fprintf(stderr,
                "client: reply %zu differs: sent %zu bytes, got %zu bytes, first "
                "difference at byte %zu\n",
                s->replies + 1, want->len, len, at);
        exit(EXIT_MISMATCH);
    }
    if (!o->quiet) {
        fwrite(payload, 1, len, stdout);
        putchar('\n');
        if (o->from_stdin)
            fflush(stdout);
    }
    s->replies++;
}

/* Parse every complete reply frame out of s->in. */
static void parse_replies(struct session *s)
{
    size_t off = 0;
    while (s->in_len - off >= 4) {
        const uint8_t *h = s->in + off;
        size_t len = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
        if (s->in_len - off - 4 < len)
            break;
        check_reply(s, h + 4, len);
        off += 4 + len;
    }
    memmove(s->in, s->in + off, s->in_len - off);
    s->in_len -= off;
}

/* Read whatever is available.  Returns false once the server has closed. */
static bool read_replies(struct session *s)
{
    for (;;) {
        if (s->in_cap - s->in_len < 65536) {
            s->in_cap = s->in_cap ? s->in_cap * 2 : 131072;
            s->in = realloc(s->in, s->in_cap);
            if (s->in == NULL)
                die_io("out of memory");
        }
        ssize_t n = read(s->fd, s->in + s->in_len, s->in_cap - s->in_len);
        if (n > 0) {
            s->in_len += (size_t)n;
            parse_replies(s);
            continue;
        }
        if (n == 0 || errno == ECONNRESET) {
            s->eof = true;
            return false;
        }
        if (errno == EAGAIN || errno == EINTR)
            return true;
        die_io("read: %s", strerror(errno));
    }
}

static long long now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static size_t next_chunk(struct session *s)
{
    const struct options *o = s->opt;
    if (o->nchunks == 0)
        return SIZE_MAX;
    size_t i =
        s->chunk_index < (size_t)o->nchunks ? s->chunk_index : (size_t)o->nchunks - 1;
    s->chunk_index++;
    return o->chunks[i];
}

/* -S: sending is done or stuck.  Report it, then wait for stdin to end. */
static void slow_reader_wait(struct session *s, size_t sent)
{
    fprintf(stderr,
            "client: sending stalled after %zu bytes, none read; waiting for stdin to "
            "end\n",
            sent);
    char buf[256];
    while (fread(buf, 1, sizeof(buf), stdin) > 0)
        ;
    s->hold_reads = false;
}

/*
 * Send len bytes (split per -c/-D), reading replies meanwhile, until they are
 * all sent and `want` replies have arrived in total.  want == SIZE_MAX means
 * "until the server closes".
 */
static void exchange(struct session *s, const uint8_t *data, size_t len, size_t want)
{
    const struct options *o = s->opt;
    size_t sent = 0, chunk_left = len ? next_chunk(s) : 0;
    long long deadline = now_us() + o->timeout_s * 1000000LL, resume_at = 0;
    long long progress_at = now_us();
    while (sent < len || (s->replies < want && !s->eof)) {
        long long now = now_us();
        if (s->hold_reads && (sent == len || now - progress_at >= 1000000)) {
            slow_reader_wait(s, sent);
            now = now_us();
            deadline = now + o->timeout_s * 1000000LL;
        }
        if (now > deadline) {
            fprintf(stderr,
                    "client: timed out after %ds: sent %zu of %zu bytes, %zu of %zu "
                    "replies\n",
                    o->timeout_s, sent, len, s->replies,
                    want == SIZE_MAX ? s->nexpect : want);
            exit(EXIT_IO);
        }
        bool can_send = sent < len && now >= resume_at;
        struct pollfd p = {.fd = s->fd,
                           .events =
                               (s->hold_reads ? 0 : POLLIN) | (can_send ? POLLOUT : 0)};
        long long wait_us =
            can_send ? deadline - now : (sent < len ? resume_at - now : deadline - now);
        if (s->hold_reads && wait_us > 100000)
            wait_us = 100000; /* look for a stall every 100 ms */
        int r = poll(&p, 1, (int)(wait_us / 1000) + 1);
        if (r < 0 && errno != EINTR)
            die_io("poll: %s", strerror(errno));
        if (r <= 0)
            continue;
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            size_t before = s->replies;
            if (!read_replies(s) && sent < len)
                die_io(
                    "the server closed the connection after %zu of %zu bytes were sent",
                    sent, len);
            if (s->replies != before)
                deadline = now_us() + o->timeout_s * 1000000LL;
        }
        if (can_send && (p.revents & POLLOUT)) {
            size_t n = len - sent < chunk_left ? len - sent : chunk_left;
            ssize_t w = send(s->fd, data + sent, n, MSG_NOSIGNAL);
            if (w < 0 && errno != EAGAIN && errno != EINTR)
                die_io("send: %s (after %zu of %zu bytes)", strerror(errno), sent, len);
            if (w > 0) {
                sent += (size_t)w;
                progress_at = now_us();
                chunk_left -= (size_t)w;
                deadline = now_us() + o->timeout_s * 1000000LL;
                if (chunk_left == 0 && sent < len) {
                    chunk_left = next_chunk(s);
                    resume_at = now_us() + o->delay_us;
                }
            }
        }
    }
    if (s->replies < want && want != SIZE_MAX)
        die_io("the server closed the connection after %zu of %zu replies", s->replies,
               want);
}

/* A growable byte string: the bytes one exchange will send. */
struct bytes {
    uint8_t *data;
    size_t len, cap;
};

static void bytes_append(struct bytes *b, const void *src, size_t len)
{
    while (b->cap - b->len < len) {
        b->cap = b->cap ? b->cap * 2 : 4096;
        b->data = realloc(b->data, b->cap);
        if (b->data == NULL)
            die_io("out of memory");
    }
    memcpy(b->data + b->len, src, len);
    b->len += len;
}

/* Append m as a frame: 4-byte big-endian length, then the payload. */
static void bytes_append_frame(struct bytes *b, const struct msg *m)
{
    uint8_t h[4] = {(uint8_t)(m->len >> 24), (uint8_t)(m->len >> 16),
                    (uint8_t)(m->len >> 8), (uint8_t)m->len};
    bytes_append(b, h, sizeof(h));
    bytes_append(b, m->data, m->len);
}

/* The end of a session: half-close, wait for close, or reset, as asked. */
static void finish(struct session *s)
{
    const struct options *o = s->opt;
    if (o->reset) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        return;
    }
    if (o->half_close) {
        shutdown(s->fd, SHUT_WR);
        exchange(s, NULL, 0, SIZE_MAX);
        if (s->replies < s->nexpect)
            die_io("EOF after %zu of %zu replies", s->replies, s->nexpect);
    } else if (o->raw_len > 0) {
        exchange(s, NULL, 0, SIZE_MAX); /* the raw bytes should make it close */
    }
}

static void run_session(const struct options *o, const struct msg *expect,
                        size_t nexpect)
{
    struct session s = {.opt = o,
                        .fd = connect_to(o),
                        .expect = expect,
                        .nexpect = nexpect,
                        .hold_reads = o->slow_reader};
    struct bytes out = {0};
    if (o->go_on_eof) {
        char buf[256];
        while (fread(buf, 1, sizeof(buf), stdin) > 0)
            ;
    }
    /* With -s or -R nothing is awaited while sending: finish() collects. */
    bool await = !o->half_close && !o->reset;
    if (o->batch) {
        for (size_t i = 0; i < nexpect; i++)
            bytes_append_frame(&out, &expect[i]);
        bytes_append(&out, o->raw, o->raw_len);
        exchange(&s, out.data, out.len, await ? nexpect : 0);
    } else {
        for (size_t i = 0; i < nexpect; i++) {
            out.len = 0;
            bytes_append_frame(&out, &expect[i]);
            exchange(&s, out.data, out.len, await ? i + 1 : 0);
        }
        if (o->raw_len)
            exchange(&s, o->raw, o->raw_len, 0);
    }
    free(out.data);
    finish(&s);
    close(s.fd);
    free(s.in);
}

/* Interactive mode: one line of stdin, one frame, one reply. */
static void run_stdin(const struct options *o)
{
    struct session s = {.opt = o, .fd = connect_to(o)};
    struct msg *lines = NULL;
    size_t nlines = 0;
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t n;
    while ((n = getline(&line, &line_cap, stdin)) >= 0) {
        if (n > 0 && line[n - 1] == '\n')
            n--;
        lines = realloc(lines, (nlines + 1) * sizeof(*lines));
        if (lines == NULL)
            die_io("out of memory");
        lines[nlines].data = xmalloc((size_t)n);
        memcpy(lines[nlines].data, line, (size_t)n);
        lines[nlines].len = (size_t)n;
        nlines++;
        s.expect = lines;
        s.nexpect = nlines;
        struct bytes out = {0};
        bytes_append_frame(&out, &lines[nlines - 1]);
        exchange(&s, out.data, out.len, o->half_close ? 0 : nlines);
        free(out.data);
    }
    free(line);
    finish(&s);
    close(s.fd);
    for (size_t i = 0; i < nlines; i++)
        free(lines[i].data);
    free(lines);
    free(s.in);
}

int main(int argc, char **argv)
{
    struct options o = {.host = "127.0.0.1",
                        .port = "8080",
                        .repeat = 1,
                        .connections = 1,
                        .timeout_s = 10};
    parse_args(argc, argv, &o);
    if (o.from_stdin) {
        run_stdin(&o);
        return 0;
    }
    /* -n: the expected replies are the messages, each repeated, in order. */
    size_t nexpect = o.nmsgs * (size_t)o.repeat;
    struct msg *expect = xmalloc(nexpect * sizeof(*expect));
    for (size_t i = 0; i < o.nmsgs; i++)
        for (long r = 0; r < o.repeat; r++)
            expect[i * (size_t)o.repeat + (size_t)r] = o.msgs[i];
    for (long k = 0; k < o.connections; k++)
        run_session(&o, expect, nexpect);
    free(expect);
    for (size_t i = 0; i < o.nmsgs; i++)
        free(o.msgs[i].data);
    free(o.msgs);
    free(o.raw);
    return 0;
}
