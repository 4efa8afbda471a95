/*
 * aio-experiment.c - what Linux AIO (io_setup/io_submit/io_getevents, the
 * system calls behind libaio) really does with a socket.  A second program
 * in step06, not part of the server.
 *
 * A common piece of advice says: use libaio to make socket I/O
 * asynchronous.  This measures it.  For each case a fresh TCP connection is
 * made on 127.0.0.1; a peer thread waits DELAY ms, then sends 64 bytes; we
 * time the call that starts the read, and the wait for its completion:
 *
 *   (a) IOCB_CMD_PREAD on a blocking socket: io_submit() itself blocks until
 *       the data arrives - sockets have no asynchronous read path, so the
 *       kernel simply does the read, synchronously, inside io_submit().
 *   (b) IOCB_CMD_PREAD on a nonblocking socket: io_submit() returns at once,
 *       and so does the completion: -EAGAIN.  Nothing waits for the data.
 *   (c) IOCB_CMD_POLL (Linux 4.18): the one truly asynchronous AIO operation
 *       for a socket - a readiness notification, epoll in AIO clothing; the
 *       read itself is still yours to do.
 *   (d) POSIX aio_read(): asynchronous, because glibc runs a blocking read
 *       on a helper thread it starts for you.
 *
 *     make aio-experiment && ./aio-experiment [-d DELAY_MS]
 *
 * Prints a table: `case | start call (ms) | completion after (ms) | result`.
 * Uses the raw system calls (no libaio) and glibc's POSIX AIO (in libc
 * since glibc 2.34).
 */
#include <aio.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PAYLOAD 64

static long delay_ms = 500;

static void fail(const char *what)
{
    fprintf(stderr, "aio-experiment: %s: %s\n", what, strerror(errno));
    exit(1);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* The raw AIO system calls: glibc has no wrappers (libaio is one). */
static long sys_io_setup(unsigned nr, aio_context_t *ctx)
{
    return syscall(__NR_io_setup, nr, ctx);
}
static long sys_io_submit(aio_context_t ctx, long n, struct iocb **iocbs)
{
    return syscall(__NR_io_submit, ctx, n, iocbs);
}
static long sys_io_getevents(aio_context_t ctx, long min, long max, struct io_event *ev)
{
    return syscall(__NR_io_getevents, ctx, min, max, ev, NULL);
}
static long sys_io_destroy(aio_context_t ctx)
{
    return syscall(__NR_io_destroy, ctx);
}

/* The peer: waits delay_ms, then sends PAYLOAD bytes. */
static void *peer_send_later(void *arg)
{
    int fd = *(int *)arg;
    struct timespec ts = {.tv_sec = delay_ms / 1000,
                          .tv_nsec = (delay_ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
    char buf[PAYLOAD];
    memset(buf, 'x', sizeof(buf));
    if (send(fd, buf, sizeof(buf), MSG_NOSIGNAL) != (ssize_t)sizeof(buf))
        fail("peer send");
    return NULL;
}

/* A connected TCP pair on 127.0.0.1, and a peer thread that will send on
 * one end after delay_ms.  Returns our end. */
struct pair {
    int ours, theirs;
    pthread_t peer;
};

static void pair_open(struct pair *p)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof(a);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        listen(lfd, 1) < 0 || getsockname(lfd, (struct sockaddr *)&a, &alen) < 0)
        fail("listen");
    p->theirs = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (p->theirs < 0 || connect(p->theirs, (struct sockaddr *)&a, sizeof(a)) < 0)
        fail("connect");
    p->ours = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (p->ours < 0)
        fail("accept");
    close(lfd);
}

static void pair_start_peer(struct pair *p)
{
    if (pthread_create(&p->peer, NULL, peer_send_later, &p->theirs) != 0)
        fail("pthread_create");
}

static void pair_close(struct pair *p)
{
    pthread_join(p->peer, NULL);
    close(p->ours);
    close(p->theirs);
}

static int count_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

static void row(const char *name, double start_ms, double done_ms, const char *result)
{
    printf("| %-36s | %10.1f | %10.1f | %-34s |\n", name, start_ms, done_ms, result);
}

/* (a) and (b): IOCB_CMD_PREAD on our end, blocking or not. */
static void case_pread(aio_context_t ctx, bool nonblocking)
{
    struct pair p;
    pair_open(&p);
    if (nonblocking) {
        int fl = fcntl(p.ours, F_GETFL);
        if (fl < 0 || fcntl(p.ours, F_SETFL, fl | O_NONBLOCK) < 0)
            fail("fcntl(O_NONBLOCK)"); /* else (b) would measure (a) again */
    }
    pair_start_peer(&p);
    char buf[PAYLOAD];
    struct iocb cb = {.aio_fildes = (uint32_t)p.ours,
                      .aio_lio_opcode = IOCB_CMD_PREAD,
                      .aio_buf = (uint64_t)(uintptr_t)buf,
                      .aio_nbytes = sizeof(buf)};
    struct iocb *list[1] = {&cb};
    double t0 = now_ms();
    if (sys_io_submit(ctx, 1, list) != 1)
        fail("io_submit");
    double t1 = now_ms();
    struct io_event ev;
    if (sys_io_getevents(ctx, 1, 1, &ev) != 1)
        fail("io_getevents");
    double t2 = now_ms();
    char result[64];
    int64_t res = ev.res; /* a byte count, or -errno */
    if (res < 0)
        snprintf(result, sizeof(result), "%s",
                 res == -EAGAIN ? "-EAGAIN" : strerror((int)-res));
    else
        snprintf(result, sizeof(result), "%lld bytes", (long long)res);
    row(nonblocking ? "(b) PREAD, nonblocking socket" : "(a) PREAD, blocking socket",
        t1 - t0, t2 - t1, result);
    pair_close(&p);
}

/* (c): IOCB_CMD_POLL for POLLIN. */
static void case_poll(aio_context_t ctx)
{
    struct pair p;
    pair_open(&p);
    pair_start_peer(&p);
    struct iocb cb = {.aio_fildes = (uint32_t)p.ours,
                      .aio_lio_opcode = IOCB_CMD_POLL,
                      .aio_buf = POLLIN};
    struct iocb *list[1] = {&cb};
    double t0 = now_ms();
    if (sys_io_submit(ctx, 1, list) != 1)
        fail("io_submit(POLL) (Linux 4.18 or later)");
    double t1 = now_ms();
    struct io_event ev;
    if (sys_io_getevents(ctx, 1, 1, &ev) != 1)
        fail("io_getevents");
    double t2 = now_ms();
    char buf[PAYLOAD];
    ssize_t n = read(p.ours, buf, sizeof(buf)); /* the read is still ours to do */
    char result[64];
    int64_t res = ev.res; /* the events, or -errno */
    if (res < 0)
        snprintf(result, sizeof(result), "%s", strerror((int)-res));
    else
        snprintf(result, sizeof(result), "%s, then read() = %zd",
                 (res & POLLIN) ? "POLLIN" : "no POLLIN", n);
    row("(c) POLL (POLLIN), then read()", t1 - t0, t2 - t1, result);
    pair_close(&p);
}

/* (d): POSIX aio_read(), glibc's. */
static void case_posix(void)
{
    struct pair p;
    pair_open(&p);
    pair_start_peer(&p);
    char buf[PAYLOAD];
    struct aiocb cb = {.aio_fildes = p.ours, .aio_buf = buf, .aio_nbytes = sizeof(buf)};
    int before = count_threads();
    double t0 = now_ms();
    if (aio_read(&cb) != 0)
        fail("aio_read");
    double t1 = now_ms();
    int during = count_threads();
    const struct aiocb *list[1] = {&cb};
    while (aio_error(&cb) == EINPROGRESS)
        aio_suspend(list, 1, NULL);
    double t2 = now_ms();
    char result[64];
    snprintf(result, sizeof(result), "%zd bytes; threads %d -> %d", aio_return(&cb),
             before, during);
    row("(d) POSIX aio_read() (glibc)", t1 - t0, t2 - t1, result);
    pair_close(&p);
}

int main(int argc, char **argv)
{
    int c;
    while ((c = getopt(argc, argv, "d:h")) != -1) {
        if (c == 'd') {
            char *end;
            delay_ms = strtol(optarg, &end, 10);
            if (*optarg == '\0' || *end != '\0' || delay_ms < 0 || delay_ms > 10000) {
                fprintf(stderr, "aio-experiment: bad delay '%s' (0-10000 ms)\n",
                        optarg);
                return 2;
            }
        } else {
            FILE *out = c == 'h' ? stdout : stderr;
            fprintf(
                out,
                "usage: aio-experiment [-d DELAY_MS] [-h]\n"
                "What Linux AIO does with a socket: for each way of starting a\n"
                "read, how long the starting call took and how long the completion\n"
                "came after it, while the peer waits DELAY_MS before it sends.\n"
                "  -d DELAY_MS  the peer's delay, 0-10000 (default 500)\n"
                "  -h           show this help\n");
            return c == 'h' ? 0 : 2;
        }
    }
    aio_context_t ctx = 0;
    if (sys_io_setup(8, &ctx) < 0)
        fail("io_setup");
    printf("The peer sends 64 bytes %ld ms after each read is started.\n\n", delay_ms);
    printf("| %-36s | %10s | %10s | %-34s |\n", "case", "start (ms)", "done (ms)",
           "result");
    printf("| %.36s | %.10s | %.10s | %.34s |\n",
           "------------------------------------", "----------", "----------",
           "----------------------------------");
    case_pread(ctx, false);
    case_pread(ctx, true);
    case_poll(ctx);
    case_posix();
    sys_io_destroy(ctx);
    return 0;
}
