/*
 * tools/ref-common.h - what the two reference servers (ref-echo on epoll,
 * ref-uring on io_uring) share: the command line, the listening socket and
 * its ready line, and shedding connections when file descriptors run out.
 */
#ifndef LAB_TOOLS_REF_COMMON_H
#define LAB_TOOLS_REF_COMMON_H

#include <stdbool.h>

/* "PROG: message" on stderr, exit 1.  ref_prog names the program. */
extern const char *ref_prog;
void ref_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* Parse -H HOST -p PORT -h (usage: the program's own help text, which
 * -h prints to stdout; a bad flag prints it to stderr and exits 2). */
void ref_parse_args(int argc, char **argv, const char *usage, const char **host,
                    const char **port);

/* Bind the first address of host:port that works (IPv4 or IPv6), listen,
 * print "listening on HOST:PORT" ([HOST]:PORT for IPv6).  The socket is
 * nonblocking.  Exits 1 with the reason on failure. */
int ref_listen(const char *host, const char *port);

/* Reserve a file descriptor for ref_shed_one() to free when the table is
 * full: /dev/null, or -1. */
int ref_spare_open(void);

/*
 * Out of file descriptors (an accept failed with cause, EMFILE or ENFILE),
 * the spare-fd trick: free the spare, accept one connection and close it at
 * once, so its client learns it was refused instead of hanging in the
 * backlog; then reserve the spare again.  Returns true if one was dropped
 * (there may be more), false when the backlog was empty.
 *
 * accept fails with EMFILE even when the backlog is empty, because the
 * kernel reserves the new fd before it looks for a connection.  So EMFILE
 * alone does not say anyone is waiting; only a connection dropped here does.
 * On false, wait for the listening socket to be readable before trying
 * again, or the loop spins on EMFILE for ever.
 */
bool ref_shed_one(int lfd, int *spare, int cause);

#endif
