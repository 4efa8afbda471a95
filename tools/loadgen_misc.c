/*
 * tools/loadgen_misc.c - the load generator's options, its readings of the
 * server from /proc, and the idle-connection mode (-I).
 */
#include "common.h"
#include "loadgen.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: loadgen [-H HOST] [-p PORT] [options]\n"
        "Drives an echo server with length-prefixed frames, checks every byte of\n"
        "every reply, and reports throughput and latency percentiles.\n"
        "  -H HOST     server address (default 127.0.0.1)\n"
        "  -p PORT     server port (default 8080)\n"
        "  -c CONNS    connections (default 1)\n"
        "  -d DEPTH    frames in flight per connection: the pipeline depth\n"
        "              (default 1; with -R, the cap on frames in flight, default "
        "1024)\n"
        "  -s SIZE     payload bytes per frame (default 64; >= 16 stamps every\n"
        "              payload with its connection and sequence number)\n"
        "  -T SECONDS  measured duration (default 5)\n"
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
        "  --csv       print a CSV header line and one CSV row instead of the summary\n"
        "  -h          show this help\n"
        "Throughput counts replies that arrived during the measured window; MB/s\n"
        "is payload bytes echoed per second, one direction.\n"
        "Exit status: 0 a clean run; 1 any connection error, reset, wrong byte,\n"
        "reply on the wrong connection or out of order, or a short run; 2 usage.\n");
}

static long parse_num(const char *s, long min, long max, const char *what)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *s == '\0' || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "loadgen: bad %s '%s' (%ld-%ld)\n", what, s, min, max);
        usage(stderr);
        exit(2);
    }
    return v;
}

static double parse_seconds(const char *s, const char *what)
{
    char *end;
    double v = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || !(v >= 0 && v <= 86400)) {
        fprintf(stderr, "loadgen: bad %s '%s' (seconds, 0-86400)\n", what, s);
        usage(stderr);
        exit(2);
    }
    return v;
}

void options_parse(int argc, char **argv, struct options *o)
{
    *o = (struct options){.host = "127.0.0.1",
                          .port = "8080",
                          .conns = 1,
                          .depth = 0,
                          .size = 64,
                          .threads = 1,
                          .seconds = 5,
                          .warmup = 1};
    static const struct option longopts[] = {{"csv", no_argument, NULL, 'C'},
                                             {"help", no_argument, NULL, 'h'},
                                             {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "H:p:c:d:s:T:W:t:n:R:P:I:h", longopts, NULL)) !=
           -1) {
        switch (c) {
        case 'H':
            o->host = optarg;
            break;
        case 'p':
            parse_num(optarg, 1, 65535, "port");
            o->port = optarg;
            break;
        case 'c':
            o->conns = parse_num(optarg, 1, 1000000, "connection count");
            break;
        case 'd':
            o->depth = parse_num(optarg, 1, 1000000, "depth");
            break;
        case 's':
            o->size = parse_num(optarg, 0, 16 << 20, "size");
            break;
        case 'T':
            o->seconds = parse_seconds(optarg, "duration");
            break;
        case 'W':
            o->warmup = parse_seconds(optarg, "warm-up");
            break;
        case 't':
            o->threads = parse_num(optarg, 1, 256, "thread count");
            break;
        case 'n':
            o->per_conn = parse_num(optarg, 1, 1L << 40, "count");
            break;
        case 'R':
            o->rate = parse_num(optarg, 1, 100000000, "rate");
            break;
        case 'P':
            o->pid = (pid_t)parse_num(optarg, 1, 1L << 30, "pid");
            break;
        case 'I':
            o->idle = parse_num(optarg, 1, 1000000, "idle connection count");
            break;
        case 'C':
            o->csv = true;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            exit(2);
        }
    }
    if (optind != argc) {
        fprintf(stderr, "loadgen: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        exit(2);
    }
    if (o->depth == 0)
        o->depth = o->rate ? 1024 : 1;
    if (o->idle && !o->pid) {
        fprintf(stderr, "loadgen: -I needs -P PID to read the server's memory\n");
        exit(2);
    }
    if (o->rate && o->per_conn) {
        fprintf(stderr,
                "loadgen: -R (open loop) runs for -T seconds; it does not take -n\n");
        exit(2);
    }
}

/*
 * CPU time of every thread of the server.  /proc/PID/task/TID/schedstat's
 * first field is nanoseconds on a CPU; /proc/PID/stat's utime+stime only has
 * clock-tick (10 ms) resolution, so it is the fallback.
 */
double server_cpu_us(pid_t pid)
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

long server_rss_kib(pid_t pid)
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
static int idle_round_trip(int fd, const uint8_t *frame, size_t len, uint8_t *reply)
{
    int flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
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

int run_idle(const struct options *o)
{
    size_t len = 4 + (size_t)o->size;
    uint8_t *frame = malloc(len), *reply = malloc(len);
    int *fds = malloc((size_t)o->idle * sizeof(*fds));
    frame[0] = (uint8_t)(o->size >> 24);
    frame[1] = (uint8_t)(o->size >> 16);
    frame[2] = (uint8_t)(o->size >> 8);
    frame[3] = (uint8_t)o->size;
    for (size_t i = 4; i < len; i++)
        frame[i] = (uint8_t)(i * 131);

    long before = server_rss_kib(o->pid), opened = 0;
    int rc = 0;
    for (; opened < o->idle; opened++) {
        fds[opened] = tool_connect("loadgen", o->host, o->port);
        if (fds[opened] < 0) {
            fprintf(stderr, "loadgen: idle connection %ld of %ld failed%s\n",
                    opened + 1, o->idle,
                    errno == EMFILE ? " (out of file descriptors: see ulimit -n)" : "");
            rc = 1;
            break;
        }
        if (idle_round_trip(fds[opened], frame, len, reply) != 0) {
            fprintf(stderr, "loadgen: idle connection %ld: no correct reply\n",
                    opened + 1);
            close(fds[opened]);
            rc = 1;
            break;
        }
    }
    long after = server_rss_kib(o->pid);
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
