/*
 * tools/loadgen.h - shared declarations of the load generator:
 *   loadgen.c          main, the run, the report
 *   loadgen_worker.c   one thread's connections and event loop
 *   loadgen_misc.c     options, /proc readings, idle-connection mode
 */
#ifndef LAB_LOADGEN_H
#define LAB_LOADGEN_H

#include "hist.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* Bytes of every payload that carry the connection and sequence numbers. */
#define LG_STAMP 16

struct options {
    const char *host, *port;
    long conns, depth, size, threads;
    double seconds, warmup;
    long per_conn; /* -n: round trips per connection, then stop (no time window) */
    long rate;     /* -R: open loop, messages per second in total; 0 = closed loop */
    pid_t pid;     /* -P: the server, for its CPU time and RSS */
    long idle;     /* -I: idle-connection mode with this many connections */
    bool csv;
};

/* A growable byte queue: bytes to write, or bytes read but not yet parsed. */
struct lg_bytes {
    uint8_t *data;
    size_t off, len, cap; /* valid bytes are data[off .. off+len) */
};

struct lg_conn {
    int fd;
    uint32_t id;       /* connection number, stamped into every payload */
    uint64_t sent;     /* frames sent so far (the next sequence number) */
    uint64_t received; /* replies verified so far */
    uint64_t *sent_at; /* ring of depth entries: when frame seq was (due to be) sent */
    uint8_t *block;    /* this connection's random payload body */
    struct lg_bytes out, in;
    bool want_out; /* EPOLLOUT registered */
    bool dead;
};

struct worker {
    pthread_t thread;
    pthread_barrier_t *ready;
    const struct options *opt;
    int epfd;
    struct lg_conn *conns;
    long nconns;
    uint64_t t0, measure_from, measure_to;
    uint64_t next_due;  /* open loop: the intended time of the next frame */
    uint64_t scheduled; /* open loop: frames scheduled so far */
    struct hist latency, lag;
    uint64_t measured; /* replies that arrived inside the window */
    uint64_t last_reply;
    long errors;
};

uint64_t now_ns(void);

void options_parse(int argc, char **argv, struct options *o);
int worker_init(struct worker *w, const struct options *o, long first_id, long n);
void worker_run(struct worker *w);
void worker_free(struct worker *w);

/* The server's CPU time so far in microseconds (all its threads), or -1. */
double server_cpu_us(pid_t pid);
/* The server's resident set size in KiB, or -1. */
long server_rss_kib(pid_t pid);

int run_idle(const struct options *o);

#endif
