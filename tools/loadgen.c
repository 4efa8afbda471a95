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
 *
 * Payload pattern: the first 16 bytes of every payload are the connection
 * number and the sequence number; the rest is a random block chosen per
 * connection.  A corrupted byte, a reply delivered to the wrong connection,
 * and a reply out of order are all caught.
 *
 *     loadgen -p 8080 -c 64 -d 8 -s 64 -T 5        throughput
 *     loadgen -p 8080 -c 1 -R 10000 -T 5           open-loop latency at 10k/s
 *     loadgen -p 8080 -I 10000 -P $(pgrep server)  idle-connection memory
 *
 * Exit status: 0 clean run; 1 any error, mismatch, reset or short run;
 * 2 usage error.
 */
#include "hist.h"
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

uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Sleep until the monotonic clock reads t. */
static void sleep_until(uint64_t t)
{
    struct timespec ts = {.tv_sec = (time_t)(t / 1000000000u),
                          .tv_nsec = (long)(t % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

/* Raise RLIMIT_NOFILE to the hard limit; say so when even that is too low. */
static void raise_fd_limit(long need)
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

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    pthread_barrier_wait(w->ready);
    worker_run(w);
    return NULL;
}

static void print_report(const struct options *o, const struct hist *lat,
                         const struct hist *lag, uint64_t msgs, double seconds,
                         double cpu_us, long errors)
{
    double rate = seconds > 0 ? (double)msgs / seconds : 0;
    double mbs = rate * (double)o->size / 1e6;
    double us[5] = {hist_quantile(lat, 0.50) / 1e3, hist_quantile(lat, 0.90) / 1e3,
                    hist_quantile(lat, 0.99) / 1e3, hist_quantile(lat, 0.999) / 1e3,
                    lat->max / 1e3};
    double cpu_per_msg = cpu_us >= 0 && msgs ? cpu_us / (double)msgs : -1;
    double lag_max = lag->max / 1e3, lag_p99 = hist_quantile(lag, 0.99) / 1e3;
    if (o->csv) {
        printf("conns,depth,size,rate,seconds,msgs,msgs_per_s,mb_per_s,p50_us,p90_us,"
               "p99_us,p999_us,max_us,server_cpu_us_per_msg,errors,lag_p99_us,"
               "lag_max_us\n");
        printf("%ld,%ld,%ld,%ld,%.3f,%" PRIu64
               ",%.0f,%.2f,%.1f,%.1f,%.1f,%.1f,%.1f,%.3f,"
               "%ld,%.1f,%.1f\n",
               o->conns, o->depth, o->size, o->rate, seconds, msgs, rate, mbs, us[0],
               us[1], us[2], us[3], us[4], cpu_per_msg, errors, lag_p99, lag_max);
        return;
    }
    printf(
        "loadgen: %ld conns x depth %ld, %ld B%s: %.0f msgs/s, %.2f MB/s | latency us "
        "p50 %.1f p90 %.1f p99 %.1f p99.9 %.1f max %.1f",
        o->conns, o->depth, o->size, o->rate ? " open loop" : "", rate, mbs, us[0],
        us[1], us[2], us[3], us[4]);
    if (cpu_per_msg >= 0)
        printf(" | server cpu %.2f us/msg", cpu_per_msg);
    if (o->rate)
        printf(" | schedule behind p99 %.1f max %.1f us", lag_p99, lag_max);
    printf(" | %" PRIu64 " msgs in %.2f s | errors %ld\n", msgs, seconds, errors);
}

static int run_load(const struct options *o)
{
    long nthreads = o->threads < o->conns ? o->threads : o->conns;
    struct worker *ws = calloc((size_t)nthreads, sizeof(*ws));
    pthread_barrier_t ready;
    pthread_barrier_init(&ready, NULL, (unsigned)nthreads + 1);
    long first = 0;
    for (long i = 0; i < nthreads; i++) {
        long n = o->conns / nthreads + (i < o->conns % nthreads);
        if (worker_init(&ws[i], o, first, n) != 0)
            return 1;
        ws[i].ready = &ready;
        first += n;
    }

    /* Everyone connected: fix the schedule, start the threads. */
    uint64_t t0 = now_ns();
    uint64_t measure_from = o->per_conn ? t0 : t0 + (uint64_t)(o->warmup * 1e9);
    uint64_t measure_to =
        o->per_conn ? UINT64_MAX : measure_from + (uint64_t)(o->seconds * 1e9);
    for (long i = 0; i < nthreads; i++) {
        ws[i].t0 = t0;
        ws[i].measure_from = measure_from;
        ws[i].measure_to = measure_to;
        pthread_create(&ws[i].thread, NULL, worker_main, &ws[i]);
    }
    pthread_barrier_wait(&ready);

    double cpu0 = -1, cpu1 = -1;
    if (o->pid && !o->per_conn) {
        sleep_until(measure_from);
        cpu0 = server_cpu_us(o->pid);
        sleep_until(measure_to);
        cpu1 = server_cpu_us(o->pid);
    } else if (o->pid) {
        cpu0 = server_cpu_us(o->pid);
    }

    struct hist *lat = calloc(1, sizeof(*lat)), *lag = calloc(1, sizeof(*lag));
    uint64_t msgs = 0, last_reply = t0;
    long errors = 0;
    for (long i = 0; i < nthreads; i++) {
        pthread_join(ws[i].thread, NULL);
        hist_merge(lat, &ws[i].latency);
        hist_merge(lag, &ws[i].lag);
        msgs += ws[i].measured;
        errors += ws[i].errors;
        if (ws[i].last_reply > last_reply)
            last_reply = ws[i].last_reply;
    }
    if (o->pid && o->per_conn)
        cpu1 = server_cpu_us(o->pid);
    double seconds = o->per_conn ? (double)(last_reply - t0) / 1e9 : o->seconds;
    if (msgs == 0) {
        fprintf(stderr,
                "loadgen: short run: no reply arrived in the measured window\n");
        errors++;
    }
    print_report(o, lat, lag, msgs, seconds, cpu0 >= 0 && cpu1 >= 0 ? cpu1 - cpu0 : -1,
                 errors);
    for (long i = 0; i < nthreads; i++)
        worker_free(&ws[i]);
    free(ws);
    free(lat);
    free(lag);
    pthread_barrier_destroy(&ready);
    return errors ? 1 : 0;
}

int main(int argc, char **argv)
{
    struct options o;
    options_parse(argc, argv, &o);
    raise_fd_limit(o.idle ? o.idle + 64 : o.conns + 64);
    return o.idle ? run_idle(&o) : run_load(&o);
}
