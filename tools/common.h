/*
 * tools/common.h - what the client and the load generator share: connecting
 * to the server the way the tests need, and random payload bytes.
 */
#ifndef LAB_TOOLS_COMMON_H
#define LAB_TOOLS_COMMON_H

#include <stddef.h>
#include <stdint.h>

/*
 * Connect to host:port (blocking), then set TCP_NODELAY (our small writes
 * must leave as we make them, or a split could not be reproduced) and make
 * the socket nonblocking.  Returns the fd, or -1 after printing
 * "PROG: reason" on stderr.
 */
int tool_connect(const char *prog, const char *host, const char *port);

/* Fill p with n pseudo-random bytes (xorshift64) from seed. */
void tool_fill_random(uint8_t *p, size_t n, uint64_t seed);

#endif
