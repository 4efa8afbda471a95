/*
 * net.h - the socket plumbing every step shares: listen and name a peer.
 */
#ifndef LAB_NET_H
#define LAB_NET_H

#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

/* Longest "HOST:PORT" we print: "[", an IPv6 address, "]:", a port. */
#define NET_ADDR_LEN 64

/*
 * Create a nonblocking listening TCP socket bound to host:port.  host is an IPv4 or
 * IPv6 address or a name; port "0" asks the kernel for an ephemeral port.
 * The address actually bound is written to bound ("127.0.0.1:PORT",
 * "[::1]:PORT").  Returns the fd, or -1 with a reason in err (a startup
 * error: the caller dies).
 */
int net_listen(const char *host, const char *port, char *bound, size_t bound_len,
               char *err, size_t err_len);
/* The same with SO_REUSEPORT, for -D reuseport (new in step04): a socket
 * of its own per worker, all on one port.  For the second and later ones,
 * pass the port the first one got. */
int net_listen_reuseport(const char *host, const char *port, char *bound,
                         size_t bound_len, char *err, size_t err_len);

/* "a.b.c.d:port", or "[v6 address]:port", for a socket address. */
void net_format_addr(const struct sockaddr *sa, char *out, size_t out_len);

#endif
