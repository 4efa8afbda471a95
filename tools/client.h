/*
 * tools/client.h - what the client's two halves share:
 *   client.c           options, the messages they name, main
 *   client_session.c   one connection: send (cut as asked), read, check, close
 */
#ifndef LAB_CLIENT_H
#define LAB_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CLIENT_EXIT_IO       1 /* connect failure, reset, timeout, early close */
#define CLIENT_EXIT_USAGE    2
#define CLIENT_EXIT_MISMATCH 3 /* -x: a reply differs from what was sent */
#define CLIENT_MAX_CHUNKS    64

/* One message: the payload of one frame. */
struct client_msg {
    uint8_t *data;
    size_t len;
};

struct client_options {
    const char *host, *port;
    long repeat, connections;
    bool batch, half_close, verify, quiet, reset, slow_reader, go_on_eof, strict_close;
    size_t chunks[CLIENT_MAX_CHUNKS]; /* -c: write sizes, the last repeats */
    int nchunks;
    long delay_us;
    long read_pause_us; /* -W: pause after each read */
    long slow_for_s;    /* -L: -W only for the first this many seconds (0: always) */
    int timeout_s;
    long rcvbuf;  /* -B: SO_RCVBUF, or 0 for the kernel's autotuning */
    uint8_t *raw; /* -r: raw bytes sent after the frames */
    size_t raw_len;
    struct client_msg *msgs;
    size_t nmsgs;
    bool from_stdin;
};

/* realloc, or exit(CLIENT_EXIT_IO) saying "out of memory". */
void *client_xrealloc(void *p, size_t n);

/* One connection: send every expected message, check every reply, finish. */
void client_run_session(const struct client_options *o, const struct client_msg *expect,
                        size_t nexpect);
/* Interactive mode: one line of stdin, one frame, one reply. */
void client_run_stdin(const struct client_options *o);

#endif
