/*
 * tools/loadgen.c - the lab's load generator (压测工具).
 *
 * It opens -c connections to an echo server (spread over -t threads, each
 * with its own epoll) and keeps -d frames of -s bytes in flight on each.
 * Every echoed byte is checked; latency goes into a log-linear histogram
 * (hist.c); the result is one summary line (or CSV).
 *
 *   closed loop (default): a new frame goes out when a reply comes back, so
 *       the offered load adapts to the server.  Latency is measured from the
 *       moment a frame was written.
 *   open loop (-R RATE): frames are due on a fixed schedule, RATE per second
 *       in total, whether or not replies came back.  Latency is measured from
 *       the *intended* send time, so a server that stalls cannot hide the
 *       stall by also stalling the sender (coordinated omission, 协同遗漏).
 *       -d caps the frames in flight per connection; when the cap holds a
 *       frame back, the report shows how far the schedule fell behind.
 *   churn (--churn): every round trip on a new connection, to measure the
 *       server's accept path (loadgen_churn.c).
 *
 * Payload pattern: the first 16 bytes of every payload are the connection
 * number and the sequence number; the rest is a random block chosen per
 * connection.  A corrupted byte, a reply delivered to the wrong connection,
 * and a reply out of order are all caught.
 *
 *     loadgen -p 8080 -c 64 -d 8 -s 64 -T 5        throughput
 *     loadgen -p 8080 -c 1 -R 10000 -T 5           open-loop latency at 10k/s
 *     loadgen -p 8080 -I 10000 -P $(pgrep server)  idle-connection memory
 *     loadgen -p 8080 --churn -c 32 -T 5           connections per second
 *
 * Exit status: 0 clean run; 1 any error, mismatch, reset or short run;
 * 2 usage error.
 */
#include "loadgen.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* Sleep until the monotonic clock reads t. */
static void lg_sleep_until(uint64_t t)
{
    struct timespec ts = {.tv_sec = (time_t)(t / 1000000000u),
                          .tv_nsec = (long)(t % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

/* Raise RLIMIT_NOFILE to the hard limit; say so when even that is too low. */
static void lg_raise_fd_limit(long need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur != RLIM_INFINITY && (long)rl.rlim_cur < need)
        fprintf(stderr,
                "loadgen: needs about %ld file descriptors but the hard limit is %lu; "
                "raise it (ulimit -Hn, or prlimit) as root\n",
                need, (unsigned long)rl.rlim_cur);
}

static void *lg_thread_main(void *arg)
{
    struct lg_thread *t = arg;
    pthread_barrier_wait(t->ready);
    lg_thread_run(t);
    return NULL;
}

/* What one run measured, merged over the threads. */
struct lg_result {
    struct hist latency, lag;
    uint64_t msgs; /* replies (churn: connections) inside the window */
    double seconds;
    double cpu_us; /* the server's CPU time over the window, or -1 */
    long errors;
};

static void lg_print_csv(const struct lg_options *o, const struct lg_result *r,
                         const double us[5], double rate, double cpu_per_msg)
{
    printf("conns,depth,size,rate,seconds,msgs,msgs_per_s,mb_per_s,p50_us,p90_us,"
           "p99_us,p999_us,max_us,server_cpu_us_per_msg,errors,lag_p99_us,"
           "lag_max_us\n");
    printf("%ld,%ld,%ld,%ld,%.3f,%" PRIu64 ",%.0f,%.2f,%.1f,%.1f,%.1f,%.1f,%.1f,%.3f,"
           "%ld,%.1f,%.1f\n",
           o->conns, o->depth, o->size, o->rate, r->seconds, r->msgs, rate,
           rate * (double)o->size / 1e6, us[0], us[1], us[2], us[3], us[4], cpu_per_msg,
           r->errors, hist_quantile(&r->lag, 0.99) / 1e3, r->lag.max / 1e3);
}

static void lg_print_summary(const struct lg_options *o, const struct lg_result *r,
                             const double us[5], double rate, double cpu_per_msg)
{
    const char *unit = o->churn ? "conn" : "msg";
    if (o->churn)
        printf("loadgen: churn, %ld slots, %ld B%s: %.0f conns/s | connect-to-reply "
               "latency us",
               o->conns, o->size, o->reset ? ", closed by RST" : "", rate);
    else
        printf("loadgen: %ld conns x depth %ld, %ld B%s: %.0f msgs/s, %.2f MB/s | "
               "latency us",
               o->conns, o->depth, o->size, o->rate ? " open loop" : "", rate,
               rate * (double)o->size / 1e6);
    printf(" p50 %.1f p90 %.1f p99 %.1f p99.9 %.1f max %.1f", us[0], us[1], us[2],
           us[3], us[4]);
    if (cpu_per_msg >= 0)
        printf(" | server cpu %.2f us/%s", cpu_per_msg, unit);
    if (o->rate)
        printf(" | schedule behind p99 %.1f max %.1f us",
               hist_quantile(&r->lag, 0.99) / 1e3, r->lag.max / 1e3);
    printf(" | %" PRIu64 " %ss in %.2f s | errors %ld\n", r->msgs, unit, r->seconds,
           r->errors);
}

static void lg_print_report(const struct lg_options *o, const struct lg_result *r)
{
    double rate = r->seconds > 0 ? (double)r->msgs / r->seconds : 0;
    const struct hist *lat = &r->latency;
    double us[5] = {hist_quantile(lat, 0.50) / 1e3, hist_quantile(lat, 0.90) / 1e3,
                    hist_quantile(lat, 0.99) / 1e3, hist_quantile(lat, 0.999) / 1e3,
                    lat->max / 1e3};
    double cpu_per_msg = r->cpu_us >= 0 && r->msgs ? r->cpu_us / (double)r->msgs : -1;
    if (o->csv)
        lg_print_csv(o, r, us, rate, cpu_per_msg);
    else
        lg_print_summary(o, r, us, rate, cpu_per_msg);
}

/* Merge what every thread measured into r. */
static void lg_collect(const struct lg_options *o, struct lg_thread *ts, long nthreads,
                       struct lg_result *r)
{
    uint64_t t0 = ts[0].t0, last_reply = t0, ended = 0;
    long shown = 0, eofs = 0, conns = 0;
    bool all_failed = !o->churn;
    for (long i = 0; i < nthreads; i++) {
        pthread_join(ts[i].thread, NULL);
        hist_merge(&r->latency, &ts[i].latency);
        hist_merge(&r->lag, &ts[i].lag);
        r->msgs += ts[i].measured;
        r->errors += ts[i].errors;
        shown += ts[i].shown;
        eofs += ts[i].server_eof;
        conns += ts[i].nconns;
        if (ts[i].last_reply > last_reply)
            last_reply = ts[i].last_reply;
        if (ts[i].all_failed == 0)
            all_failed = false;
        else if (ts[i].all_failed > ended)
            ended = ts[i].all_failed;
    }
    if (r->errors > shown)
        fprintf(stderr, "loadgen: ... and %ld more errors like these\n",
                r->errors - shown);
    if (all_failed && conns > 0 && eofs == conns)
        fprintf(stderr,
                "loadgen: the server closed all %ld connections (EOF, not a reset) "
                "%.2f s into the run: it shut down\n",
                conns, (double)(ended - t0) / 1e9);
    r->seconds = o->per_conn ? (double)(last_reply - t0) / 1e9 : o->seconds;
    /* A window cut short - every connection failed before it ended (a
     * server that shuts down closes them all) - is measured to the last
     * failure: the rate is over the time the run really lasted.  Not to the
     * last reply: at a low -R the last one may come well before the end. */
    uint64_t measure_from = ts[0].measure_from, measure_to = ts[0].measure_to;
    if (!o->per_conn && all_failed && conns > 0 && ended < measure_to)
        r->seconds = ended > measure_from ? (double)(ended - measure_from) / 1e9 : 0;
    if (r->msgs == 0) {
        fprintf(stderr,
                "loadgen: short run: no reply arrived in the measured window\n");
        r->errors++;
    }
}

/*
 * Everyone is connected: fix the schedule, start the threads, read the
 * server's CPU time at the edges of the window, collect.  Returns -1 when a
 * thread cannot start.
 */
static int lg_run_threads(const struct lg_options *o, struct lg_thread *ts,
                          long nthreads, struct lg_result *r)
{
    pthread_barrier_t ready;
    pthread_barrier_init(&ready, NULL, (unsigned)nthreads + 1);
    uint64_t t0 = tool_now_ns();
    uint64_t measure_from = o->per_conn ? t0 : t0 + (uint64_t)(o->warmup * 1e9);
    uint64_t measure_to =
        o->per_conn ? UINT64_MAX : measure_from + (uint64_t)(o->seconds * 1e9);
    for (long i = 0; i < nthreads; i++) {
        ts[i].ready = &ready;
        ts[i].t0 = t0;
        ts[i].measure_from = measure_from;
        ts[i].measure_to = measure_to;
        int rc = pthread_create(&ts[i].thread, NULL, lg_thread_main, &ts[i]);
        if (rc != 0) {
            fprintf(stderr, "loadgen: pthread_create: %s\n", strerror(rc));
            return -1; /* the threads already started wait at the barrier: exit */
        }
    }
    pthread_barrier_wait(&ready);
    double cpu0 = -1, cpu1 = -1;
    if (o->pid && !o->per_conn) {
        lg_sleep_until(measure_from);
        cpu0 = lg_server_cpu_us(o->pid);
        lg_sleep_until(measure_to);
        cpu1 = lg_server_cpu_us(o->pid);
    } else if (o->pid) {
        cpu0 = lg_server_cpu_us(o->pid);
    }
    lg_collect(o, ts, nthreads, r);
    if (o->pid && o->per_conn)
        cpu1 = lg_server_cpu_us(o->pid);
    r->cpu_us = cpu0 >= 0 && cpu1 >= 0 ? cpu1 - cpu0 : -1;
    pthread_barrier_destroy(&ready);
    return 0;
}

static int lg_run_load(const struct lg_options *o)
{
    struct tool_addr addr;
    if (o->churn && lg_churn_resolve(o, &addr) != 0)
        return 1;
    long nthreads = o->threads < o->conns ? o->threads : o->conns;
    struct lg_thread *ts = calloc((size_t)nthreads, sizeof(*ts));
    struct lg_result *r = calloc(1, sizeof(*r));
    if (ts == NULL || r == NULL) {
        fprintf(stderr, "loadgen: out of memory\n");
        return 1;
    }
    long first = 0;
    for (long i = 0; i < nthreads; i++) {
        long n = o->conns / nthreads + (i < o->conns % nthreads);
        if (lg_thread_init(&ts[i], o, &addr, first, n) != 0)
            return 1;
        first += n;
    }
    if (lg_run_threads(o, ts, nthreads, r) != 0)
        exit(1);
    lg_print_report(o, r);
    int rc = r->errors ? 1 : 0;
    for (long i = 0; i < nthreads; i++)
        lg_thread_free(&ts[i]);
    free(ts);
    free(r);
    return rc;
}

int main(int argc, char **argv)
{
    struct lg_options o;
    lg_options_parse(argc, argv, &o);
    lg_raise_fd_limit(o.idle ? o.idle + 64 : o.conns + 64);
    return o.idle ? lg_run_idle(&o) : lg_run_load(&o);
}
