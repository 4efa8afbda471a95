/*
 * tools/loadgen_misc.c - the load generator's options, its readings of the
 * server from /proc, and the idle-connection mode (-I).
 */
#include "loadgen.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* Long options without a one-letter form. */
enum { LG_OPT_CSV = 256, LG_OPT_CHURN, LG_OPT_RESET };

static void lg_usage(FILE *out)
{
    fprintf(
        out,
        "usage: loadgen [-H HOST] [-p PORT] [options]\n"
        "Drives an echo server with length-prefixed frames, checks every byte of\n"
        "every reply, and reports throughput and latency percentiles.\n"
        "  -H HOST     server address or name, IPv4 or IPv6 (default 127.0.0.1)\n"
        "  -p PORT     server port (default 8080)\n"
        "  -c CONNS    connections (default 1)\n"
        "  -d DEPTH    frames in flight per connection: the pipeline depth\n"
        "              (default 1; with -R, the cap on frames in flight, default "
        "1024)\n"
        "  -s SIZE     payload bytes per frame (default 64; >= 16 stamps every\n"
        "              payload with its connection and sequence number)\n"
        "  -T SECONDS  measured duration, more than 0 (default 5)\n"
        "  -W SECONDS  warm-up before measuring, not counted (default 1)\n"
        "  -t THREADS  load-generator threads, each with its own epoll (default 1)\n"
        "  -n COUNT    instead of -T/-W: every connection does COUNT round trips\n"
        "  -R RATE     open loop: RATE frames per second in total, on a fixed\n"
        "              schedule; latency counts from each frame's intended send time\n"
        "  -P PID      the server's pid: report its CPU time per message (and, with\n"
        "              -I, its memory per connection)\n"
        "  -I COUNT    idle mode: open COUNT connections, each sends one frame and\n"
        "              reads the reply, then stays open; report the server's RSS\n"
        "              growth per connection (needs -P)\n"
        "  --churn     connection churn: each of the -c connections loops {connect,\n"
        "              send one frame of -s bytes, check the reply, close} for -T\n"
        "              seconds (or -n times).  msgs counts connections; latency runs\n"
        "              from connect() to the whole reply; -P gives server CPU per\n"
        "              connection.  The client closes first, so each connection\n"
        "              leaves a TIME_WAIT holding a local port for 60 s: with the\n"
        "              default 28232 ports (sysctl net.ipv4.ip_local_port_range) a\n"
        "              long run at a high rate runs out (\"Cannot assign requested\n"
        "              address\"), except on loopback, where Linux reuses a port\n"
        "              after 1 s (net.ipv4.tcp_tw_reuse = 2) - and connect() takes\n"
        "              the even ports first: there the limit is about 14100\n"
        "              connections per second (notes/benchmarking.md)\n"
        "  --reset     with --churn: close with a reset (RST) instead of a FIN; no\n"
        "              TIME_WAIT is left, and the server reads ECONNRESET, not EOF\n"
        "  --csv       print a CSV header line and one CSV row instead of the summary\n"
        "  -h          show this help\n"
        "Throughput counts replies that arrived during the measured window; MB/s\n"
        "is payload bytes echoed per second, one direction.\n"
        "Exit status: 0 a clean run; 1 any connection error, reset, wrong byte,\n"
        "reply on the wrong connection or out of order, timeout, or a short run;\n"
        "2 usage.\n");
}

static void lg_fail_usage(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));
static void lg_fail_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    lg_usage(stderr);
    exit(2);
}

static long lg_parse_num(const char *s, long min, long max, const char *what)
{
    long v;
    if (tool_parse_long(s, min, max, &v) != 0)
        lg_fail_usage("bad %s '%s' (%ld-%ld)", what, s, min, max);
    return v;
}

/* Seconds in [0, 86400]; a duration must be more than 0, a warm-up may be 0. */
static double lg_parse_seconds(const char *s, const char *what, bool may_be_zero)
{
    char *end;
    double v = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || !(v >= 0 && v <= 86400) ||
        (v == 0 && !may_be_zero))
        lg_fail_usage("bad %s '%s' (seconds: %s, at most 86400)", what, s,
                      may_be_zero ? "0 or more" : "more than 0");
    return v;
}

static void lg_parse_option(struct lg_options *o, int c, const char *arg)
{
    switch (c) {
    case 'H':
        o->host = arg;
        break;
    case 'p':
        lg_parse_num(arg, 1, 65535, "port");
        o->port = arg;
        break;
    case 'c':
        o->conns = lg_parse_num(arg, 1, 1000000, "connection count");
        break;
    case 'd':
        o->depth = lg_parse_num(arg, 1, 1000000, "depth");
        break;
    case 's':
        o->size = lg_parse_num(arg, 0, 16 << 20, "size");
        break;
    case 'T':
        o->seconds = lg_parse_seconds(arg, "duration", false);
        break;
    case 'W':
        o->warmup = lg_parse_seconds(arg, "warm-up", true);
        break;
    case 't':
        o->threads = lg_parse_num(arg, 1, 256, "thread count");
        break;
    case 'n':
        o->per_conn = lg_parse_num(arg, 1, 1L << 40, "count");
        break;
    case 'R':
        o->rate = lg_parse_num(arg, 1, 100000000, "rate");
        break;
    case 'P':
        o->pid = (pid_t)lg_parse_num(arg, 1, 1L << 30, "pid");
        break;
    case 'I':
        o->idle = lg_parse_num(arg, 1, 1000000, "idle connection count");
        break;
    case LG_OPT_CHURN:
        o->churn = true;
        break;
    case LG_OPT_RESET:
        o->reset = true;
        break;
    case LG_OPT_CSV:
        o->csv = true;
        break;
    case 'h':
        lg_usage(stdout);
        exit(0);
    default:
        lg_usage(stderr);
        exit(2);
    }
}

/* Options that parse but cannot work together, refused before any connect. */
static void lg_options_check(struct lg_options *o)
{
    if (o->idle && !o->pid)
        lg_fail_usage("-I needs -P PID to read the server's memory");
    if (o->rate && o->per_conn)
        lg_fail_usage("-R (open loop) runs for -T seconds; it does not take -n");
    if (o->churn && (o->idle || o->rate || o->depth))
        lg_fail_usage(
            "--churn sends one frame per connection: it takes no -I, -R or -d");
    if (o->reset && !o->churn)
        lg_fail_usage("--reset goes with --churn");
    /* A pid that names no process would make every CPU and RSS figure -1. */
    if (o->pid && lg_server_rss_kib(o->pid) < 0)
        lg_fail_usage("-P %ld: no running process with that pid", (long)o->pid);
    if (o->depth == 0)
        o->depth = o->rate ? 1024 : 1;
}

void lg_options_parse(int argc, char **argv, struct lg_options *o)
{
    *o = (struct lg_options){.host = "127.0.0.1",
                             .port = "8080",
                             .conns = 1,
                             .depth = 0,
                             .size = 64,
                             .threads = 1,
                             .seconds = 5,
                             .warmup = 1};
    static const struct option longopts[] = {{"csv", no_argument, NULL, LG_OPT_CSV},
                                             {"churn", no_argument, NULL, LG_OPT_CHURN},
                                             {"reset", no_argument, NULL, LG_OPT_RESET},
                                             {"help", no_argument, NULL, 'h'},
                                             {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "H:p:c:d:s:T:W:t:n:R:P:I:h", longopts, NULL)) !=
           -1)
        lg_parse_option(o, c, optarg);
    if (optind != argc)
        lg_fail_usage("unexpected argument '%s'", argv[optind]);
    lg_options_check(o);
}

/*
 * CPU time of every thread of the server.  /proc/PID/task/TID/schedstat's
 * first field is nanoseconds on a CPU; /proc/PID/stat's utime+stime only has
 * clock-tick (10 ms) resolution, so it is the fallback.
 */
double lg_server_cpu_us(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    double total = 0;
    int found = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char file[400];
        snprintf(file, sizeof(file), "%s/%s/schedstat", path, e->d_name);
        FILE *f = fopen(file, "r");
        unsigned long long ns;
        if (f && fscanf(f, "%llu", &ns) == 1) {
            total += (double)ns / 1e3;
            found++;
        }
        if (f)
            fclose(f);
    }
    if (d)
        closedir(d);
    if (found)
        return total;
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    unsigned long ut, st;
    int ok =
        f &&
        fscanf(f, "%*d (%*[^)]) %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
               &ut, &st) == 2;
    if (f)
        fclose(f);
    return ok ? (double)(ut + st) * 1e6 / (double)sysconf(_SC_CLK_TCK) : -1;
}

long lg_server_rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kib = -1;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}

/* One blocking round trip on a fresh connection; the socket stays open. */
static int lg_idle_round_trip(int fd, const uint8_t *frame, size_t len, uint8_t *reply)
{
    /* Blocking, with a receive timeout: a server that never answers fails. */
    int flags = fcntl(fd, F_GETFL);
    struct timeval tv = {.tv_sec = 10};
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0)
        return -1;
    if (send(fd, frame, len, MSG_NOSIGNAL) != (ssize_t)len)
        return -1;
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, reply + got, len - got);
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    return memcmp(frame, reply, len) == 0 ? 0 : -1;
}

int lg_run_idle(const struct lg_options *o)
{
    size_t len = TOOL_HEADER + (size_t)o->size;
    uint8_t *frame = malloc(len), *reply = malloc(len);
    int *fds = malloc((size_t)o->idle * sizeof(*fds));
    if (frame == NULL || reply == NULL || fds == NULL) {
        fprintf(stderr, "loadgen: out of memory\n");
        return 1;
    }
    tool_put_header(frame, (uint32_t)o->size);
    for (size_t i = TOOL_HEADER; i < len; i++)
        frame[i] = (uint8_t)(i * 131);

    long before = lg_server_rss_kib(o->pid), opened = 0;
    int rc = 0;
    for (; opened < o->idle; opened++) {
        fds[opened] = tool_connect("loadgen", o->host, o->port, NULL);
        if (fds[opened] < 0) {
            fprintf(stderr, "loadgen: idle connection %ld of %ld failed%s\n",
                    opened + 1, o->idle,
                    errno == EMFILE ? " (out of file descriptors: see ulimit -n)" : "");
            rc = 1;
            break;
        }
        if (lg_idle_round_trip(fds[opened], frame, len, reply) != 0) {
            fprintf(stderr, "loadgen: idle connection %ld: no correct reply\n",
                    opened + 1);
            close(fds[opened]);
            rc = 1;
            break;
        }
    }
    long after = lg_server_rss_kib(o->pid);
    double per_conn = opened ? (double)(after - before) * 1024.0 / (double)opened : 0;
    if (o->csv)
        printf("idle_conns,rss_before_kib,rss_after_kib,bytes_per_conn\n%ld,%ld,%ld,%."
               "0f\n",
               opened, before, after, per_conn);
    else
        printf("loadgen: %ld idle connections, each served once | server RSS %ld -> "
               "%ld KiB: "
               "%.0f bytes per connection\n",
               opened, before, after, per_conn);
    for (long i = 0; i < opened; i++)
        close(fds[i]);
    free(fds);
    free(frame);
    free(reply);
    return rc;
}
