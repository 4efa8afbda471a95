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
 *     client -H ::1 -p 8080 hi              over IPv6
 *
 * This file reads the options and gathers the messages; client_session.c
 * runs the connection.
 */
#include "client.h"
#include "common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void client_usage(FILE *out)
{
    fprintf(
        out,
        "usage: client [-H HOST] [-p PORT] [options] [MESSAGE...]\n"
        "Sends each MESSAGE as one frame (4-byte big-endian length + payload) and\n"
        "prints each reply's payload on its own line.  With no MESSAGE, -F or -z,\n"
        "messages are read from stdin, one per line, and the connection stays open\n"
        "until stdin ends.\n"
        "  -H HOST     server address or name, IPv4 or IPv6 (default 127.0.0.1)\n"
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
        "              without waiting for replies; with -s, half-close first,\n"
        "              then reset (the server's next write then gets EPIPE)\n"
        "  -G          connect, then send nothing until stdin ends (lets a test\n"
        "              line up a connection and release it later)\n"
        "  -B BYTES    receive buffer size (SO_RCVBUF; the kernel doubles it): a\n"
        "              small one keeps unread replies in the server's send queue\n"
        "              (default: the kernel's autotuning)\n"
        "  -S          slow reader: read no reply until everything is sent or sending\n"
        "              has stalled for 1 s (the server stopped reading: a wait for\n"
        "              a retransmission timeout does not count); then say so on\n"
        "              stderr, wait for stdin to end, and only then read (and send\n"
        "              the rest)\n"
        "  -e          expect a clean close: the server ending the connection with\n"
        "              a reset (RST) instead of a FIN is an error (default: either\n"
        "              ends it)\n"
        "  -W USEC     pause USEC microseconds after each read of replies (a reader\n"
        "              that keeps reading, slowly, while it sends at full speed)\n"
        "  -L SEC      with -W: pause only for the first SEC seconds of the\n"
        "              connection, then read at full speed (a reader that is slow,\n"
        "              then catches up)\n"
        "  -t SEC      give up after SEC seconds without progress (default 10)\n"
        "  -h          show this help\n"
        "Exit status: 0 every reply arrived (and matched, with -x); 1 connection\n"
        "error, timeout or early close; 2 usage error; 3 a reply differed (-x).\n");
}

static void client_fail_usage(const char *what, const char *arg)
{
    fprintf(stderr, "client: %s '%s'\n", what, arg);
    client_usage(stderr);
    exit(CLIENT_EXIT_USAGE);
}

static long client_parse_long(const char *s, long min, long max, const char *what)
{
    long v;
    if (tool_parse_long(s, min, max, &v) != 0)
        client_fail_usage(what, s);
    return v;
}

void *client_xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (p == NULL) {
        fprintf(stderr, "client: out of memory\n");
        exit(CLIENT_EXIT_IO);
    }
    return p;
}

static void client_add_msg(struct client_options *o, uint8_t *data, size_t len)
{
    o->msgs = client_xrealloc(o->msgs, (o->nmsgs + 1) * sizeof(*o->msgs));
    o->msgs[o->nmsgs++] = (struct client_msg){data, len};
}

static void client_add_copy(struct client_options *o, const void *src, size_t len)
{
    uint8_t *p = client_xrealloc(NULL, len);
    memcpy(p, src, len);
    client_add_msg(o, p, len);
}

static void client_parse_chunks(struct client_options *o, const char *arg)
{
    char *copy = strdup(arg), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (o->nchunks == CLIENT_MAX_CHUNKS)
            client_fail_usage("too many chunk sizes in", arg);
        o->chunks[o->nchunks++] =
            (size_t)client_parse_long(t, 1, 1L << 30, "bad chunk size");
    }
    free(copy);
    if (o->nchunks == 0)
        client_fail_usage("bad chunk sizes", arg);
}

static void client_parse_hex(struct client_options *o, const char *hex)
{
    size_t n = strlen(hex);
    if (n % 2 != 0)
        client_fail_usage("odd number of hex digits in", hex);
    o->raw = client_xrealloc(NULL, n / 2);
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1 ||
            !strchr("0123456789abcdefABCDEF", hex[2 * i]) ||
            !strchr("0123456789abcdefABCDEF", hex[2 * i + 1]))
            client_fail_usage("bad hex", hex);
        o->raw[i] = (uint8_t)v;
    }
    o->raw_len = n / 2;
}

static void client_add_file(struct client_options *o, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "client: %s: %s\n", path, strerror(errno));
        exit(CLIENT_EXIT_USAGE);
    }
    size_t cap = 65536, len = 0;
    uint8_t *p = client_xrealloc(NULL, cap);
    size_t n;
    while ((n = fread(p + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap)
            p = client_xrealloc(p, cap *= 2);
    }
    fclose(f);
    client_add_msg(o, p, len);
}

static void client_add_random(struct client_options *o, size_t len)
{
    uint8_t *p = client_xrealloc(NULL, len);
    /* A different stream every run. */
    tool_fill_random(p, len, (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32));
    client_add_msg(o, p, len);
}

static void client_parse_option(struct client_options *o, int c, char *arg)
{
    switch (c) {
    case 'H':
        o->host = arg;
        break;
    case 'p':
        client_parse_long(arg, 1, 65535, "bad port");
        o->port = arg;
        break;
    case 'n':
        o->repeat = client_parse_long(arg, 1, 100000000, "bad repeat count");
        break;
    case 'k':
        o->connections = client_parse_long(arg, 1, 1000000, "bad connection count");
        break;
    case 'c':
        client_parse_chunks(o, arg);
        break;
    case 'D':
        o->delay_us = client_parse_long(arg, 0, 10000000, "bad delay");
        break;
    case 'r':
        client_parse_hex(o, arg);
        break;
    case 'F':
        client_add_file(o, arg);
        break;
    case 'z':
        client_add_random(o, (size_t)client_parse_long(arg, 0, 1L << 30, "bad size"));
        break;
    case 't':
        o->timeout_s = (int)client_parse_long(arg, 1, 86400, "bad timeout");
        break;
    case 'B':
        o->rcvbuf = client_parse_long(arg, 1024, 1L << 30, "bad receive buffer size");
        break;
    case 'b':
        o->batch = true;
        break;
    case 's':
        o->half_close = true;
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
    case 'W':
        o->read_pause_us = client_parse_long(arg, 0, 10000000, "bad read pause");
        break;
    case 'L':
        o->slow_for_s = client_parse_long(arg, 0, 3600, "bad slow-reading time");
        break;
    case 'e':
        o->strict_close = true;
        break;
    case 'h':
        client_usage(stdout);
        exit(0);
    default:
        client_usage(stderr);
        exit(CLIENT_EXIT_USAGE);
    }
}

static void client_parse_args(int argc, char **argv, struct client_options *o)
{
    int c;
    while ((c = getopt(argc, argv, "H:p:n:k:bc:D:sr:F:z:xqRSGeW:L:t:B:h")) != -1)
        client_parse_option(o, c, optarg);
    for (int i = optind; i < argc; i++)
        client_add_copy(o, argv[i], strlen(argv[i]));
    o->from_stdin = o->nmsgs == 0 && o->raw_len == 0;
    if (o->from_stdin && o->connections > 1)
        client_fail_usage("-k needs messages on the command line, not on stdin", "-k");
}

int main(int argc, char **argv)
{
    struct client_options o = {.host = "127.0.0.1",
                               .port = "8080",
                               .repeat = 1,
                               .connections = 1,
                               .timeout_s = 10};
    client_parse_args(argc, argv, &o);
    if (o.from_stdin) {
        client_run_stdin(&o);
        return 0;
    }
    /* -n: the expected replies are the messages, each repeated, in order. */
    size_t nexpect = o.nmsgs * (size_t)o.repeat;
    struct client_msg *expect = client_xrealloc(NULL, nexpect * sizeof(*expect));
    for (size_t i = 0; i < o.nmsgs; i++)
        for (long r = 0; r < o.repeat; r++)
            expect[i * (size_t)o.repeat + (size_t)r] = o.msgs[i];
    for (long k = 0; k < o.connections; k++)
        client_run_session(&o, expect, nexpect);
    free(expect);
    for (size_t i = 0; i < o.nmsgs; i++)
        free(o.msgs[i].data);
    free(o.msgs);
    free(o.raw);
    return 0;
}
