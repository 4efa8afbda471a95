/*
 * net.h - the socket plumbing every step shares: listen and name a peer.
 */
#ifndef LAB_NET_H
#define LAB_NET_H

#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

/* Longest "HOST:PORT" we print: an IPv4 address, a colon and a port. */
#define NET_ADDR_LEN 64

/*
 * Create a nonblocking listening TCP socket bound to host:port.  port "0" asks the
 * kernel for an ephemeral port; the address actually bound is written to bound. Returns
 * the fd, or -1 with a reason in err (a startup error: the caller dies).
 */
int net_listen(const char *host, const char *port, char *bound, size_t bound_len,
               char *err, size_t err_len);

/* "a.b.c.d:port" for a peer address. */
void net_format_addr(const struct sockaddr *sa, char *out, size_t out_len);

#endif
