/*
 * shutdown.c - how the whole server stops (优雅退出), on the acceptor's side:
 * signals that arrive as an fd, the order to the workers, and the end.
 *
 *   1. the first SIGINT/SIGTERM arrives as a readable signalfd: stop
 *      accepting (close the listener; -D reuseport: each worker drains and
 *      closes its own), post "shut down by T+g" to every worker;
 *   2. each worker answers what it owes (also replies still at application
 *      threads), closes its connections (linger.c), and at the -g deadline
 *      cuts those still owed data (a client that never reads); then it stops
 *      and posts "done" to the acceptor;
 *   3. when every worker is done: join them, stop the application threads,
 *      free everything, print one summary line; main() returns 0.
 *   A second signal exits at once, with status 1.
 *
 * New in step05.  Try it:  ./server -p 8080 -a 2 -v, a client, then Ctrl-C.
 */
#include "server.h"
#include "linger.h"
#include "log.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

static struct server *the_server; /* for the workers' "done" closures */

/* A worker has stopped (posted from its thread, run on ours). */
static void server_worker_done(struct closure *c)
{
    (void)c;
    struct server *s = the_server;
    if (++s->workers_done == s->workers.n)
        loop_stop(&s->loop); /* main() takes it from here */
}

void server_on_worker_done(int index)
{
    struct closure *done = &worker_at(index)->done_post;
    done->fn = server_worker_done;
    mbox_post(&the_server->mbox, done);
}

/*
 * SIGINT or SIGTERM, read from the signalfd like any other event.  A
 * signal handler would run in the middle of whatever the thread was doing
 * (malloc, a printf holding a lock...): only async-signal-safe calls are
 * allowed there, which rules out almost everything a shutdown needs.  Here
 * the signal is just a readable fd, handled between events, with any code.
 */
void server_on_signal(struct watch *w, uint32_t events)
{
    struct server *s = container_of(w, struct server, signals);
    (void)events;
    struct signalfd_siginfo si;
    ssize_t n;
    while ((n = read(w->fd, &si, sizeof(si))) == (ssize_t)sizeof(si)) {
        if (s->stopping) {
            log_msg("shutdown: second signal (%s): exiting at once",
                    strsignal((int)si.ssi_signo));
            _exit(1); /* no cleanup: that is what was asked for */
        }
        s->stopping = true;
        s->stop_ns = conn_now_ns();
        log_msg("shutdown: %s: accepting no more connections; answering what is "
                "owed (at most %u s)",
                strsignal((int)si.ssi_signo), s->grace_s);
        /* Stop accepting: the kernel resets whoever is still in the backlog.
         * (-D reuseport: each worker stops its own, worker_stop_accepting().) */
        if (s->acceptor.watch.fd >= 0) {
            loop_release(&s->loop, &s->acceptor.watch, NULL);
            close(s->acceptor.watch.fd);
        }
        uint64_t deadline = s->stop_ns + (uint64_t)s->grace_s * 1000000000u;
        if (s->have_apps) /* their -b work stops there too */
            atomic_store(&s->apps.stop_ns, deadline);
        worker_shutdown_all(&s->workers, deadline);
    }
    if (n < 0 && errno != EAGAIN)
        log_msg("signalfd: %s", strerror(errno));
}

/* Block SIGINT and SIGTERM in this thread - and so in every thread started
 * after, which inherit the mask - and read them from a signalfd instead.
 * Ignore SIGPIPE: a vanished peer is an error on one connection (every
 * send also says MSG_NOSIGNAL), never the end of the server. */
int server_signals(struct server *s)
{
    the_server = s;
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    struct sigaction ignore = {.sa_handler = SIG_IGN};
    if (pthread_sigmask(SIG_BLOCK, &mask, NULL) != 0 ||
        sigaction(SIGPIPE, &ignore, NULL) < 0)
        die("cannot set up signals: %s", strerror(errno));
    int fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0)
        die("signalfd: %s", strerror(errno));
    return fd;
}

/* The one summary line: totals, then conns/frames for each worker. */
static void server_summary(const struct server *s, const struct conn_stats *st)
{
    struct conn_stats t = {0};
    /* Two numbers of up to 20 digits, a '/' and a ',' per worker: sized for
     * any -w, never cut. */
    size_t size = (size_t)s->workers.n * 44 + 1, used = 0;
    char *per = malloc(size);
    if (per == NULL)
        die("out of memory");
    per[0] = '\0';
    for (int i = 0; i < s->workers.n; i++) {
        t.conns += st[i].conns;
        t.frames += st[i].frames;
        t.bytes_in += st[i].bytes_in;
        t.bytes_out += st[i].bytes_out;
        t.dropped_sends += st[i].dropped_sends;
        t.dropped_jobs += st[i].dropped_jobs;
        t.cut += st[i].cut;
        used += (size_t)snprintf(per + used, size - used, "%s%" PRIu64 "/%" PRIu64,
                                 i ? "," : "", st[i].conns, st[i].frames);
    }
    double secs = (double)(conn_now_ns() - s->stop_ns) / 1e9;
    /* log_msg() cuts a line at 511 characters: write this one whole. */
    fprintf(stderr,
            "summary conns=%" PRIu64 " frames=%" PRIu64 " bytes_in=%" PRIu64
            " bytes_out=%" PRIu64 " dropped_sends=%" PRIu64 " dropped_jobs=%" PRIu64
            " cut=%" PRIu64 " per_worker=%s shutdown_s=%.3f\n",
            t.conns, t.frames, t.bytes_in, t.bytes_out, t.dropped_sends, t.dropped_jobs,
            t.cut, per, secs);
    free(per);
}

/* Every worker has stopped: nobody posts anywhere any more.  Join, stop
 * the application threads, print the summary, free everything. */
void server_finish(struct server *s)
{
    struct conn_stats *stats = calloc((size_t)s->workers.n, sizeof(*stats));
    if (stats == NULL)
        die("out of memory");
    worker_join_all(&s->workers, stats);
    if (s->have_apps)
        app_stop(&s->apps);
    server_summary(s, stats);
    worker_free_all(&s->workers); /* after the app threads: they post to workers */
    free(stats);
    free(s->next_seq);
    mbox_drain(&s->mbox); /* nothing left, but the mailbox must be empty to go */
    mbox_destroy(&s->mbox);
    close(s->signals.fd);
    if (s->acceptor.spare_fd >= 0)
        close(s->acceptor.spare_fd);
    loop_destroy(&s->loop);
}
