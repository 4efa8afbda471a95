/*
 * step04-master-worker/server.c - the acceptor (主线程, the master) of the
 * master-worker server (主从 Reactor, one loop per thread).
 *
 * What this step teaches: how to use more than one core.  The main thread
 * only accepts: its loop watches the listening socket (edge-triggered,
 * accept4() until EAGAIN, the EMFILE spare-fd trick), and it hands each new
 * connection, with its id, to a worker thread through a queue (worker.c).
 * Each worker runs step03's event loop on its own connections.  A
 * connection never changes threads, so nothing on the hot path is locked.
 *
 * New since step03: worker.c; -w (workers), -D (rr or shared queue), -b
 * (simulated CPU work per frame); the loop and the pool assert that only
 * their owner thread uses them.  Still no graceful shutdown: SIGINT and
 * SIGTERM end the process at once (step05).
 *
 * Try it:
 *     make && ./server -p 8080 -w 2 -v
 *     ../tools/client -p 8080 a & ../tools/client -p 8080 b     (worker=0, worker=1)
 *     ../tools/loadgen -p 8080 -c 64 -d 4 -T 3
 */
#include "accept.h"
#include "conn.h"
#include "frame.h"
#include "log.h"
#include "loop.h"
#include "net.h"
#include "pool.h"
#include "worker.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
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
    int workers;
    enum dispatch dispatch;
    uint32_t work_us;
};

static void usage(FILE *out, const char *prog)
{
    fprintf(
        out,
        "usage: %s [-H HOST] [-p PORT] [-m MAX_FRAME] [-w WORKERS] [-D "
        "rr|shared|reuseport] "
        "[-b MICROSECONDS] [-v] [-h]\n"
        "step04-master-worker: the main thread accepts and hands each connection to\n"
        "  one of WORKERS threads, each with its own edge-triggered epoll loop, ring\n"
        "  buffers and memory pool (主从 Reactor).  Echoes length-prefixed frames: a\n"
        "  4-byte big-endian length, then that many bytes.\n"
        "  -H HOST       address to bind, IPv4 or IPv6 (default 127.0.0.1)\n"
        "  -p PORT       port to bind; 0 picks a free port (default 8080)\n"
        "  -m MAX_FRAME  largest payload accepted, in bytes (1-4294967295); a longer\n"
        "                frame is a protocol error that closes the connection\n"
        "                (default 1048576)\n"
        "  -w WORKERS    worker threads, 1-256 (default: the number of online CPUs)\n"
        "  -D rr|shared|reuseport  how connections reach workers: rr, a queue per\n"
        "                worker filled round-robin (default); shared, one queue all\n"
        "                workers take from; reuseport, no acceptor: a listening\n"
        "                socket per worker on the same port (SO_REUSEPORT), and the\n"
        "                kernel picks the worker (notes/step04-master-worker.md)\n"
        "  -b MICROSECONDS  simulated CPU work per frame: each reply costs that much\n"
        "                of its worker's CPU time, 0-1000000 (default 0)\n"
        "  -v            log every connection (with its worker) and frame to stderr\n"
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

/* The flags that take a number: what each is called in an error message,
 * and the range it must be in. */
static const struct number_flag {
    int flag;
    const char *what;
    unsigned long long min, max;
    const char *unit;
} number_flags[] = {
    {'p', "port", 0, 65535, ""},
    {'m', "max frame", 1, UINT32_MAX, ""},
    {'w', "worker count", 1, 256, ""},
    {'b', "work", 0, 1000000, " microseconds"},
};

static void usage_error(const char *prog, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));
static void usage_error(const char *prog, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", prog);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    usage(stderr, prog);
    exit(2);
}

/* The value of a number flag (every other flag: 0), checked against its
 * range in number_flags. */
static unsigned long long flag_number(const char *prog, int opt, const char *arg)
{
    for (size_t i = 0; i < sizeof(number_flags) / sizeof(number_flags[0]); i++) {
        const struct number_flag *f = &number_flags[i];
        unsigned long long v;
        if (f->flag != opt)
            continue;
        if (parse_number(arg, f->min, f->max, &v) < 0)
            usage_error(prog, "bad %s '%s' (%llu-%llu%s)", f->what, arg, f->min, f->max,
                        f->unit);
        return v;
    }
    return 0;
}

static void parse_args(int argc, char **argv, struct server_config *cfg)
{
    int opt;
    while ((opt = getopt(argc, argv, "H:p:m:w:D:b:vh")) != -1) {
        unsigned long long v = optarg ? flag_number(argv[0], opt, optarg) : 0;
        switch (opt) {
        case 'H':
            cfg->host = optarg;
            break;
        case 'p':
            cfg->port = optarg;
            break;
        case 'm':
            cfg->max_frame = (uint32_t)v;
            break;
        case 'w':
            cfg->workers = (int)v;
            break;
        case 'D':
            if (strcmp(optarg, "rr") == 0)
                cfg->dispatch = DISPATCH_RR;
            else if (strcmp(optarg, "shared") == 0)
                cfg->dispatch = DISPATCH_SHARED;
            else if (strcmp(optarg, "reuseport") == 0)
                cfg->dispatch = DISPATCH_REUSEPORT;
            else
                usage_error(argv[0], "bad dispatch '%s' (rr, shared or reuseport)",
                            optarg);
            break;
        case 'b':
            cfg->work_us = (uint32_t)v;
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
    if (optind != argc)
        usage_error(argv[0], "unexpected argument '%s'", argv[optind]);
}

/* The acceptor: its own event loop with one watch, the listening socket,
 * and the workers it feeds. */
struct server {
    struct loop loop;
    struct acceptor acceptor; /* the listening socket (accept.c) */
    uint64_t next_id;
    struct worker_set workers;
    int next_worker; /* rr: who gets the next connection */
    enum dispatch dispatch;
    struct handoff_queue *queues; /* one per worker (rr), or one (shared) */
};

/*
 * Hand a new connection to a worker.  rr: the next worker in turn, or, if
 * its queue is full (it is slow, or stuck on a long batch), the next one
 * that has room.  shared: the one queue.  When every queue is full the
 * connection is closed at once, with a log line: the acceptor never blocks
 * on a slow worker, and never drops an fd silently.
 */
static void server_dispatch(struct server *s, int fd, uint64_t id)
{
    if (s->dispatch == DISPATCH_SHARED) {
        if (handoff_push(&s->queues[0], fd, id) == 0)
            return;
    } else {
        int n = s->workers.n;
        for (int k = 0; k < n; k++) {
            int i = (s->next_worker + k) % n;
            if (handoff_push(&s->queues[i], fd, id) == 0) {
                s->next_worker = (i + 1) % n;
                return;
            }
        }
    }
    log_msg("conn=%" PRIu64 " error=busy every worker's queue is full: closed", id);
    close(fd);
}

/* A new connection: to a worker. */
static void server_on_accept(struct acceptor *a, int fd)
{
    struct server *s = container_of(a, struct server, acceptor);
    server_dispatch(s, fd, s->next_id++);
}

/* The queues and the workers: -w of them, fed as -D says (-D reuseport: no
 * queues; listeners[i] is worker i's socket). */
static void server_start_workers(struct server *s, const struct server_config *cfg,
                                 const int *listeners)
{
    s->dispatch = cfg->dispatch;
    struct conn_ctx proto = {.max_frame = cfg->max_frame, .work_us = cfg->work_us};
    if (listeners != NULL) {
        worker_start_all(&s->workers, cfg->workers, cfg->dispatch, NULL, listeners,
                         &proto);
        return;
    }
    int nqueues = cfg->dispatch == DISPATCH_SHARED ? 1 : cfg->workers;
    size_t cap = cfg->dispatch == DISPATCH_SHARED
                     ? (size_t)WORKER_QUEUE_MAX * (size_t)cfg->workers
                     : WORKER_QUEUE_MAX;
    /* aligned_alloc: struct handoff_queue is _Alignas(64); calloc promises
     * only 16. */
    s->queues = aligned_alloc(_Alignof(struct handoff_queue),
                              (size_t)nqueues * sizeof(*s->queues));
    if (s->queues == NULL)
        die("out of memory");
    for (int i = 0; i < nqueues; i++)
        if (handoff_queue_init(&s->queues[i], cap, cfg->dispatch == DISPATCH_SHARED) <
            0)
            die("cannot create a handoff queue: %s", strerror(errno));
    worker_start_all(&s->workers, cfg->workers, cfg->dispatch, s->queues, NULL, &proto);
}

/*
 * -D reuseport: no acceptor and no queue.  Every worker listens on the port
 * with a socket of its own (SO_REUSEPORT) and accepts in its own loop; the
 * kernel picks the socket, and so the worker, for each new connection, by a
 * hash of its addresses.  The first socket picks the port when -p is 0;
 * the others bind the port it got.
 */
static int *server_listen_reuseport(const struct server_config *cfg, char *bound)
{
    char other[NET_ADDR_LEN], err[256];
    int *listeners = calloc((size_t)cfg->workers, sizeof(*listeners));
    if (listeners == NULL)
        die("out of memory");
    const char *port = cfg->port;
    for (int i = 0; i < cfg->workers; i++) {
        listeners[i] = net_listen_reuseport(cfg->host, port, i == 0 ? bound : other,
                                            NET_ADDR_LEN, err, sizeof(err));
        if (listeners[i] < 0)
            die("%s", err);
        port = strrchr(bound, ':') + 1; /* "HOST:PORT", "[V6]:PORT" */
    }
    return listeners;
}

/* Online CPUs, as the default worker count: one loop per core. */
static int online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 256 ? 256 : (int)n;
}

int main(int argc, char **argv)
{
    struct server_config cfg = {.host = "127.0.0.1",
                                .port = "8080",
                                .max_frame = FRAME_DEFAULT_MAX,
                                .workers = online_cpus(),
                                .dispatch = DISPATCH_RR};
    parse_args(argc, argv, &cfg);

    char bound[NET_ADDR_LEN], err[256];
    int listen_fd = -1, *listeners = NULL;
    if (cfg.dispatch == DISPATCH_REUSEPORT)
        listeners = server_listen_reuseport(&cfg, bound);
    else if ((listen_fd = net_listen(cfg.host, cfg.port, bound, sizeof(bound), err,
                                     sizeof(err))) < 0)
        die("%s", err);

    static struct server s;
    server_start_workers(&s, &cfg, listeners);
    free(listeners);
    if (loop_init(&s.loop) < 0)
        die("cannot create the event loop: %s", strerror(errno));
    s.next_id = 1;
    if (listen_fd >= 0 &&
        acceptor_start(&s.acceptor, &s.loop, listen_fd, SOCK_NONBLOCK | SOCK_CLOEXEC,
                       server_on_accept) < 0)
        die("cannot watch the listening socket: %s", strerror(errno));

    printf("listening on %s\n", bound);
    fflush(stdout); /* stdout is a pipe in tests: without this the line waits */
    /* Returns only if epoll_wait() fails for good.  (-D reuseport: the loop
     * watches nothing, and the main thread waits in it for ever.) */
    loop_run(&s.loop);
    die("event loop stopped");
}
