/*
 * step06-aio/server.c - the acceptor, and the start of the whole server,
 * now with workers that do their I/O through io_uring (completion-based,
 * 完成式; worker.c, ring.c, conn_uring.c).
 *
 * What this step teaches: readiness (epoll: "you may read now", the Reactor,
 * 反应堆) against completion (io_uring: "I have read it for you", the
 * Proactor, 前摄器).  The acceptor keeps its epoll loop: it owns the
 * listening socket (edge-triggered, accept4() until EAGAIN, the EMFILE
 * spare-fd trick), the signalfd and its own mailbox, all rare events that
 * epoll handles well; the EMFILE trick needs a synchronous accept() anyway.
 * (-D reuseport: each worker accepts from a socket of its own, polled on
 * its ring, worker.c.)
 * (A ring with multishot accept would save a system call per connection,
 * which the churn row of make bench would show; it would also need the
 * trick redone in completions.)  Accepted sockets are left blocking.  A RECV or
 * SEND waits for either kind (the kernel tries it without blocking, then
 * arms a poll), but on a nonblocking socket an operation the kernel retries
 * in one of its worker threads takes O_NONBLOCK for MSG_DONTWAIT and can
 * complete with -EAGAIN: rare, and one more case to handle for nothing.
 *
 * Before anything starts, io_uring is tried: a kernel without it (ENOSYS),
 * or one where it is switched off (kernel.io_uring_disabled) or forbidden
 * (a container's seccomp filter, EPERM), makes the server exit 1 saying
 * which.
 *
 * New since step05: ring.c; conn_uring.c (replacing conn_epoll.c) and
 * worker.c on completions; the io_uring check; aio-experiment.c, a second
 * program (make aio-experiment): what Linux AIO does with a socket.
 *
 * Try it:
 *     make && ./server -p 8080 -w 2 -v       then Ctrl-C
 *     ../tools/loadgen -p 8080 -c 64 -d 8 -T 3
 */
#include "accept.h"
#include "app.h"
#include "conn.h"
#include "frame.h"
#include "linger.h"
#include "log.h"
#include "loop.h"
#include "net.h"
#include "pool.h"
#include "server.h"
#include "worker.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct server_config {
    const char *host;
    const char *port;
    uint32_t max_frame;
    int workers;
    int apps;
    uint32_t work_us;
    unsigned grace_s;
    unsigned idle_s;
    unsigned stall_s;
    bool reuseport;
    enum worker_recv recv;
};

static void usage(FILE *out, const char *prog)
{
    fprintf(
        out,
        "usage: %s [-H HOST] [-p PORT] [-m MAX_FRAME] [-w WORKERS] "
        "[-D rr|reuseport] [-R pinned|provided|legacy] "
        "[-b MICROSECONDS] [-a APP_THREADS] [-g SECONDS] [-i SECONDS] [-t SECONDS] "
        "[-v] [-h]\n"
        "step06-aio: workers do their I/O through io_uring (completion-based: the\n"
        "  kernel reads and writes for them); the acceptor posts each connection\n"
        "  to a worker's eventfd mailbox (or, -D reuseport, each worker accepts);\n"
        "  application threads, sends by id, and a graceful shutdown on\n"
        "  SIGINT/SIGTERM as in step05.  Needs io_uring (Linux 5.6+).  Echoes\n"
        "  length-prefixed frames: a 4-byte big-endian length, then that many\n"
        "  bytes.\n"
        "  -H HOST       address to bind, IPv4 or IPv6 (default 127.0.0.1)\n"
        "  -p PORT       port to bind; 0 picks a free port (default 8080)\n"
        "  -m MAX_FRAME  largest payload accepted, in bytes (1-4294967295); a longer\n"
        "                frame is a protocol error: the earlier replies are sent,\n"
        "                then a lingering close (default 1048576)\n"
        "  -w WORKERS    worker threads, 1-256 (default: the number of online CPUs)\n"
        "  -D rr|reuseport  how connections reach workers: rr, the acceptor posts\n"
        "                them round-robin (default); reuseport, no acceptor: a\n"
        "                listening socket per worker on the same port (SO_REUSEPORT),\n"
        "                and the kernel picks the worker.  A connection's id names\n"
        "                its worker either way, so step04's -D shared is gone\n"
        "  -R pinned|provided|legacy  where a recv's bytes land: provided, a\n"
        "                multishot recv into the worker's ring of buffers, which the\n"
        "                kernel takes from only when bytes arrive (Linux 6.0);\n"
        "                legacy, the same buffers lent by IORING_OP_PROVIDE_BUFFERS\n"
        "                and read by one-shot recvs (Linux 5.18); pinned, a recv into\n"
        "                the connection's own buffer, held for as long as the recv\n"
        "                waits.  Default: the first the kernel has, said on stderr\n"
        "                when it is not provided\n"
        "  -b MICROSECONDS  simulated CPU work per frame: each reply costs that much\n"
        "                of its worker's CPU time, 0-1000000 (default 0)\n"
        "  -a APP_THREADS  application threads that build the replies (and do the\n"
        "                -b work instead of the workers), 0-256 (default 0: the\n"
        "                worker builds them)\n"
        "  -g SECONDS    graceful-shutdown deadline: after SIGINT/SIGTERM, replies\n"
        "                owed are sent for at most this long, then connections\n"
        "                still owed data are cut, 1-3600 (default 5)\n"
        "  -i SECONDS    close a connection with no traffic for this long and\n"
        "                nothing owed (one whose client leaves replies unread\n"
        "                goes to the -t bound), 0-86400 (default 0: never)\n"
        "  -t SECONDS    stall bound: a connection whose client does not read the\n"
        "                replies it is owed (no progress for this long) is cut,\n"
        "                with a reset, 1-3600 (default 10)\n"
        "  -v            log every connection (with its worker) and frame to stderr\n"
        "                (format: notes/protocol.md)\n"
        "  -h            show this help\n"
        "When ready it prints \"listening on HOST:PORT\" on stdout.  The first\n"
        "SIGINT (Ctrl-C) or SIGTERM stops it gracefully; a second one at once.\n"
        "Exit status: 0 after a graceful shutdown, 1 cannot start (no io_uring\n"
        "here: the message says why) or a second signal, 2 usage error.\n",
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
    {'a', "app thread count", 0, 256, ""},
    {'g', "grace", 1, 3600, " seconds"},
    {'i', "idle timeout", 0, 86400, " seconds"},
    {'t', "stall timeout", 1, 3600, " seconds"},
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
    while ((opt = getopt(argc, argv, "H:p:m:w:D:R:b:a:g:i:t:vh")) != -1) {
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
            cfg->reuseport = strcmp(optarg, "reuseport") == 0;
            if (!cfg->reuseport && strcmp(optarg, "rr") != 0)
                usage_error(argv[0],
                            "bad dispatch '%s' (rr or reuseport: from step05 a "
                            "connection's id names its worker)",
                            optarg);
            break;
        case 'R':
            if (strcmp(optarg, "pinned") == 0)
                cfg->recv = WORKER_RECV_PINNED;
            else if (strcmp(optarg, "provided") == 0)
                cfg->recv = WORKER_RECV_PROVIDED;
            else if (strcmp(optarg, "legacy") == 0)
                cfg->recv = WORKER_RECV_LEGACY;
            else
                usage_error(argv[0],
                            "bad recv buffers '%s' (pinned, provided or legacy)", optarg);
            break;
        case 'b':
            cfg->work_us = (uint32_t)v;
            break;
        case 'a':
            cfg->apps = (int)v;
            break;
        case 'g':
            cfg->grace_s = (unsigned)v;
            break;
        case 'i':
            cfg->idle_s = (unsigned)v;
            break;
        case 't':
            cfg->stall_s = (unsigned)v;
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

/*
 * Hand a new connection to a worker: the next worker in turn, or, if it
 * is stuck (WORKER_PENDING_MAX connections it has not opened yet), the next
 * one that is not.  The id is chosen with the worker: worker w's ids are
 * w + 1, w + 1 + n, w + 1 + 2n, ..., so (id - 1) % n names the owner and
 * an id is never reused.  When every worker is stuck the
 * connection is closed at once, with a log line: the acceptor never blocks
 * on a slow worker, and never drops an fd silently.
 */
static void server_dispatch(struct server *s, int fd)
{
    int n = s->workers.n;
    for (int k = 0; k < n; k++) {
        int i = (s->next_worker + k) % n;
        uint64_t id = s->next_seq[i] * (uint64_t)n + (uint64_t)i + 1;
        if (worker_hand_off(&s->workers.workers[i], fd, id) == 0) {
            s->next_seq[i]++;
            s->next_worker = (i + 1) % n;
            return;
        }
    }
    int i = s->next_worker;
    uint64_t id = s->next_seq[i]++ * (uint64_t)n + (uint64_t)i + 1; /* never reused */
    log_msg("conn=%" PRIu64 " error=busy every worker's queue is full: closed", id);
    close(fd);
}

/* A new connection: to a worker. */
static void server_on_accept(struct acceptor *a, int fd)
{
    server_dispatch(container_of(a, struct server, acceptor), fd);
}

/* The application threads (-a) and the workers: -w of them, fed
 * round-robin or (listeners) accepting for themselves, each with a ring as
 * uring says. */
static void server_start_workers(struct server *s, const struct server_config *cfg,
                                 const struct worker_uring *uring, const int *listeners)
{
    struct conn_ctx proto = {.max_frame = cfg->max_frame,
                             .work_us = cfg->work_us,
                             .idle_ns = (uint64_t)cfg->idle_s * 1000000000u,
                             .stall_ns = (uint64_t)cfg->stall_s * 1000000000u};
    if (cfg->apps > 0) {
        app_start(&s->apps, cfg->apps, cfg->work_us);
        s->have_apps = true;
        proto.apps = &s->apps;
    }
    worker_start_all(&s->workers, cfg->workers, &proto, uring, listeners,
                     server_on_worker_done);
    s->next_seq = calloc((size_t)cfg->workers, sizeof(*s->next_seq));
    if (s->next_seq == NULL)
        die("out of memory");
}

/*
 * -D reuseport: no acceptor and no queue.  Every worker listens on the port
 * with a socket of its own (SO_REUSEPORT) and accepts in its own loop; the
 * kernel picks the socket, and so the worker, for each new connection, by a
 * hash of its addresses.  The first socket picks the port when -p is 0;
 * the others bind the port it got.  The acceptor then only waits for the
 * signal.
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
                                .grace_s = 5,
                                .stall_s = CONN_STALL_NS / 1000000000u};
    parse_args(argc, argv, &cfg);

    char bound[NET_ADDR_LEN], err[256];
    int listen_fd = -1, *listeners = NULL;
    if (cfg.reuseport)
        listeners = server_listen_reuseport(&cfg, bound);
    else if ((listen_fd = net_listen(cfg.host, cfg.port, bound, sizeof(bound), err,
                                     sizeof(err))) < 0)
        die("%s", err);

    struct worker_uring uring =
        worker_check_uring(cfg.recv); /* exits 1 if there is none */
    static struct server s;
    s.grace_s = cfg.grace_s;
    int signal_fd = server_signals(&s);                /* before any thread starts */
    server_start_workers(&s, &cfg, &uring, listeners); /* post to s.mbox once stopped */
    free(listeners);
    if (loop_init(&s.loop) < 0 || mbox_init(&s.mbox, &s.loop) < 0)
        die("cannot create the event loop: %s", strerror(errno));
    s.signals = (struct watch){.fd = signal_fd, .on_event = server_on_signal};
    /* Accepted sockets stay blocking (no SOCK_NONBLOCK): the worker's ring
     * waits for them. */
    s.acceptor = (struct acceptor){.watch.fd = -1, .spare_fd = -1}; /* reuseport */
    if ((listen_fd >= 0 && acceptor_start(&s.acceptor, &s.loop, listen_fd, SOCK_CLOEXEC,
                                          server_on_accept) < 0) ||
        loop_add(&s.loop, &s.signals, EPOLLIN) < 0)
        die("cannot watch the listening socket: %s", strerror(errno));

    printf("listening on %s\n", bound);
    fflush(stdout); /* stdout is a pipe in tests: without this the line waits */
    if (loop_run(&s.loop) < 0) /* until every worker is done */
        die("event loop stopped");

    server_finish(&s); /* every worker has stopped */
    return 0;
}
