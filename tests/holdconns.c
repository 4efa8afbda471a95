/*
 * tests/holdconns.c - open many connections and hold them: to run a server
 * out of file descriptors (the EMFILE tests), or to park many connections
 * that each sent a few bytes (the memory-per-connection tests).
 *
 *   holdconns -p PORT -n COUNT [-e EXPECT] [-t SECONDS] [-w HEX] [-H HOST]
 *
 * Connects COUNT times; with -w, writes those bytes (given in hex) on every
 * connection.  The kernel completes every handshake from the listen backlog
 * whether or not the server accepts, so all COUNT connects succeed even
 * against a stopped server.  It prints "connected COUNT", then waits (30 s at
 * most, or -t) until the server has closed at least EXPECT of them - a server
 * using the spare-fd trick accepts and closes the ones it has no fd for - and
 * prints "closed C of COUNT", then "reset R": how many of those C ended in a
 * reset (ECONNRESET) instead of an orderly FIN.  It holds the rest open
 * until stdin ends, then exits 0.  Exit 1 if fewer than EXPECT were closed in time; 2
 * usage error.
 */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: holdconns -p PORT -n COUNT [-e EXPECT] [-t SECONDS] [-w HEX] "
            "[-H HOST]\n"
            "  Opens COUNT connections and holds them until stdin ends.\n"
            "  -p PORT    server port\n"
            "  -n COUNT   connections to open\n"
            "  -e EXPECT  wait (at most -t seconds) until the server has closed\n"
            "             at least EXPECT of them, then print \"closed C of COUNT\"\n"
            "             and \"reset R\" (how many were reset) (default 0)\n"
            "  -t SECONDS how long -e waits (default 30)\n"
            "  -w HEX     bytes to send on every connection, in hex (default none)\n"
            "  -H HOST    server address (default 127.0.0.1)\n"
            "  -h         show this help\n"
            "Prints \"connected COUNT\" once every connection is open.\n"
            "Exit status: 0 ok; 1 a connect failed or too few were closed; 2 usage.\n");
}

static long parse_count(const char *s)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < 0 || v > 1000000) {
        fprintf(stderr, "holdconns: bad number '%s'\n", s);
        usage(stderr);
        exit(2);
    }
    return v;
}

/* "0a0b..." -> bytes; exits 2 on anything that is not pairs of hex digits. */
static size_t parse_hex(const char *hex, unsigned char *out, size_t cap)
{
    size_t n = strlen(hex);
    if (n % 2 != 0 || n / 2 > cap || strspn(hex, "0123456789abcdefABCDEF") != n) {
        fprintf(stderr, "holdconns: bad hex '%s'\n", hex);
        exit(2);
    }
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        out[i] = (unsigned char)v;
    }
    return n / 2;
}

static int connect_one(const struct addrinfo *ai, const unsigned char *msg, size_t len)
{
    int fd = socket(ai->ai_family, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 ||
        (len > 0 && send(fd, msg, len, MSG_NOSIGNAL) != (ssize_t)len)) {
        int err = errno;
        if (fd >= 0)
            close(fd);
        errno = err;
        return -1;
    }
    return fd;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *port = NULL;
    long count = 0, expect = 0, wait_s = 30;
    unsigned char msg[256];
    size_t msg_len = 0;
    int c;
    while ((c = getopt(argc, argv, "p:n:e:t:w:H:h")) != -1) {
        switch (c) {
        case 'p':
            port = optarg;
            break;
        case 'n':
            count = parse_count(optarg);
            break;
        case 'e':
            expect = parse_count(optarg);
            break;
        case 't':
            wait_s = parse_count(optarg);
            break;
        case 'w':
            msg_len = parse_hex(optarg, msg, sizeof(msg));
            break;
        case 'H':
            host = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (port == NULL || count <= 0 || optind != argc) {
        usage(stderr);
        return 2;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
    int rc = getaddrinfo(host, port, &hints, &ai);
    if (rc != 0) {
        fprintf(stderr, "holdconns: %s:%s: %s\n", host, port, gai_strerror(rc));
        return 1;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max; /* one fd per connection */
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    struct pollfd *p = calloc((size_t)count, sizeof(*p));
    if (p == NULL)
        return 1;
    for (long i = 0; i < count; i++) {
        p[i].fd = connect_one(ai, msg, msg_len);
        p[i].events = POLLIN;
        if (p[i].fd < 0) {
            fprintf(stderr, "holdconns: connect %ld: %s\n", i + 1, strerror(errno));
            return 1;
        }
    }
    freeaddrinfo(ai);
    printf("connected %ld\n", count);
    fflush(stdout);

    /* Count the connections the server closed (EOF or reset). */
    long closed = 0, reset = 0;
    time_t end = time(NULL) + wait_s;
    while (closed < expect && time(NULL) < end) {
        if (poll(p, (nfds_t)count, 200) <= 0)
            continue;
        for (long i = 0; i < count; i++) {
            if (p[i].fd >= 0 && p[i].revents) {
                char b;
                ssize_t n = read(p[i].fd, &b, 1);
                if (n <= 0) {
                    reset += n < 0 && errno == ECONNRESET;
                    close(p[i].fd);
                    p[i].fd = -1; /* poll ignores negative fds */
                    closed++;
                }
            }
        }
    }
    printf("closed %ld of %ld\nreset %ld\n", closed, count, reset);
    fflush(stdout);
    if (closed < expect)
        return 1;
    char buf[64];
    while (fread(buf, 1, sizeof(buf), stdin) > 0)
        ;
    return 0;
}
