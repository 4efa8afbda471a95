/*
 * tools/loadgen.h - shared declarations of the load generator:
 *   loadgen.c          main, the run, the report
 *   loadgen_thread.c   one thread: its connections and its event loop
 *   loadgen_conn.c     one connection: payload pattern, sending, checking
 *   loadgen_churn.c    --churn: connect, one round trip, close, again
 *   loadgen_misc.c     options, /proc readings, idle-connection mode (-I)
 * Every name carries the lg_ prefix, so none reads like the servers' conn_
 * and worker_ modules.
 */
#ifndef LAB_LOADGEN_H
#define LAB_LOADGEN_H

#include "common.h"
#include "hist.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* Bytes of every payload that carry the connection and sequence numbers. */
#define LG_STAMP 16

struct lg_options {
    const char *host, *port;
    long conns, depth, size, threads;
    double seconds, warmup;
    long per_conn; /* -n: round trips per connection, then stop (no time window) */
    long rate;     /* -R: open loop, messages per second in total; 0 = closed loop */
    pid_t pid;     /* -P: the server, for its CPU time and RSS */
    long idle;     /* -I: idle-connection mode with this many connections */
    bool churn;    /* --churn: every round trip on a new connection */
    bool reset;    /* --reset: churn closes with RST instead of FIN */
    bool csv;
};

/* A growable byte queue: bytes to write, or bytes read but not yet parsed. */
struct lg_bytes {
    uint8_t *data;
    size_t off, len, cap; /* valid bytes are data[off .. off+len) */
};

/* One connection; with --churn, one slot that connects again and again. */
struct lg_conn {
    int fd;            /* -1 while closed (churn: between connections) */
    uint32_t id;       /* connection number, stamped into every payload */
    uint64_t sent;     /* frames sent so far (the next sequence number) */
    uint64_t received; /* replies verified so far */
    uint64_t *sent_at; /* ring of depth entries: when frame seq was (due to be) sent */
    uint8_t *block;    /* this connection's random payload body */
    struct lg_bytes out, in;
    bool want_out;   /* EPOLLOUT registered */
    bool connecting; /* churn: a nonblocking connect is in progress */
    bool dead;       /* failed: counted in errors, never used again */
};

/* One load-generator thread: its share of the connections, its epoll. */
struct lg_thread {
    pthread_t thread;
    pthread_barrier_t *ready;
    const struct lg_options *opt;
    const struct tool_addr *addr; /* churn: where every new connection goes */
    int epfd;
    struct lg_conn *conns;
    long nconns;
    uint64_t t0, measure_from, measure_to;
    uint64_t next_due;  /* open loop: the intended time of the next frame */
    uint64_t scheduled; /* open loop: frames scheduled so far */
    struct hist latency, lag;
    uint64_t measured; /* replies that arrived inside the window */
    uint64_t last_reply;
    uint64_t last_failure; /* when a connection of this thread last failed */
    uint64_t all_failed;   /* = last_failure once every connection has (0: not so) */
    long errors;
    long shown;      /* errors printed (the first few: lg_conn_fail) */
    long server_eof; /* connections the server closed cleanly (EOF, no reset) */
};

void lg_options_parse(int argc, char **argv, struct lg_options *o);

int lg_thread_init(struct lg_thread *t, const struct lg_options *o,
                   const struct tool_addr *addr, long first_id, long n);
void lg_thread_run(struct lg_thread *t);
void lg_thread_free(struct lg_thread *t);

/* One connection (loadgen_conn.c).  init: payload block, and unless churning
 * the socket too; fail: count and report an error, close, never use again. */
int lg_conn_init(struct lg_thread *t, struct lg_conn *c, uint32_t id);
void lg_conn_free(struct lg_conn *c);
void lg_conn_fail(struct lg_thread *t, struct lg_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void lg_conn_queue_frame(struct lg_thread *t, struct lg_conn *c, uint64_t due);
void lg_conn_flush(struct lg_thread *t, struct lg_conn *c);
void lg_conn_read(struct lg_thread *t, struct lg_conn *c);
bool lg_conn_may_send(const struct lg_thread *t, const struct lg_conn *c, uint64_t now);

/*
 * --churn.  resolve: find the address that answers (IPv6 or IPv4) with one
 * connection, closed as every churned one is, so the run need not resolve
 * again; returns 0 or -1 (said on stderr).  start: open every slot's first
 * connection.  event: one epoll event on a slot.
 */
int lg_churn_resolve(const struct lg_options *o, struct tool_addr *addr);
void lg_churn_start(struct lg_thread *t, uint64_t now);
void lg_churn_event(struct lg_thread *t, struct lg_conn *c, uint32_t events);

/* The server's CPU time so far in microseconds (all its threads), or -1. */
double lg_server_cpu_us(pid_t pid);
/* The server's resident set size in KiB, or -1. */
long lg_server_rss_kib(pid_t pid);

int lg_run_idle(const struct lg_options *o);

#endif
