/*
 * tools/common.h - what the client and the load generator share: connecting
 * to the server (IPv4 or IPv6) the way the tests need, the frame header,
 * number parsing, the clock, and random payload bytes.  One copy of each, so
 * the two programs cannot disagree about the protocol.
 */
#ifndef LAB_TOOLS_COMMON_H
#define LAB_TOOLS_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Frame header: a 4-byte unsigned big-endian payload length. */
#define TOOL_HEADER 4

/* A server address that answered, kept to connect again without resolving. */
struct tool_addr {
    struct sockaddr_storage sa;
    socklen_t len;
};

/*
 * Connect to host:port (blocking), trying every address getaddrinfo returns
 * (IPv6 and IPv4) until one answers.  Then set TCP_NODELAY (our small writes
 * must leave as we make them, or a split could not be reproduced) and make
 * the socket nonblocking.  Returns the fd, or -1 after printing
 * "PROG: reason" on stderr (errno is the last connect's).  When used is not
 * NULL it receives the address that answered.
 */
int tool_connect(const char *prog, const char *host, const char *port,
                 struct tool_addr *used);

/*
 * Start a nonblocking connect to addr on a new socket with TCP_NODELAY.
 * Returns the fd, whose connect may still be in progress (EPOLLOUT says when
 * it is done; SO_ERROR says how), or -1 with errno set.
 */
int tool_connect_start(const struct tool_addr *addr);

/* Write the frame header for a payload of len bytes. */
void tool_put_header(uint8_t h[TOOL_HEADER], uint32_t len);
/* Read the payload length from a frame header. */
uint32_t tool_get_header(const uint8_t h[TOOL_HEADER]);

/*
 * Parse s as a whole decimal number in [min, max] into *out.  Returns 0, or
 * -1 (and leaves *out alone) for anything else: empty, trailing characters,
 * overflow, out of range.  Each program reports the error its own way.
 */
int tool_parse_long(const char *s, long min, long max, long *out);

/* The monotonic clock in nanoseconds: for intervals, never wall time. */
uint64_t tool_now_ns(void);

/* Fill p with n pseudo-random bytes (xorshift64) from seed. */
void tool_fill_random(uint8_t *p, size_t n, uint64_t seed);

#endif
