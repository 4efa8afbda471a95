/*
 * tools/ref-common.c - see ref-common.h.
 */
#include "ref-common.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

void ref_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", ref_prog);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

void ref_parse_args(int argc, char **argv, const char *usage, const char **host,
                    const char **port)
{
    int c;
    while ((c = getopt(argc, argv, "H:p:h")) != -1) {
        switch (c) {
        case 'H':
            *host = optarg;
            break;
        case 'p':
            *port = optarg;
            break;
        case 'h':
            fputs(usage, stdout);
            exit(0);
        default:
            fputs(usage, stderr);
            exit(2);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "%s: unexpected argument '%s'\n", ref_prog, argv[optind]);
        fputs(usage, stderr);
        exit(2);
    }
}

/* A listening socket on ai, or -1 with errno set. */
static int listen_one(const struct addrinfo *ai)
{
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == 0 &&
        bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, SOMAXCONN) == 0)
        return fd;
    int err = errno;
    close(fd);
    errno = err;
    return -1;
}

/* Print the lab's ready line: "listening on 127.0.0.1:PORT" or "[::1]:PORT". */
static void print_listening(int fd)
{
    struct sockaddr_storage a;
    socklen_t alen = sizeof(a);
    char ip[NI_MAXHOST], port[NI_MAXSERV];
    if (getsockname(fd, (struct sockaddr *)&a, &alen) < 0)
        ref_die("getsockname: %s", strerror(errno));
    int rc = getnameinfo((struct sockaddr *)&a, alen, ip, sizeof(ip), port,
                         sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV);
    if (rc != 0)
        ref_die("getnameinfo: %s", gai_strerror(rc));
    bool v6 = a.ss_family == AF_INET6;
    printf("listening on %s%s%s:%s\n", v6 ? "[" : "", ip, v6 ? "]" : "", port);
    fflush(stdout);
}

int ref_listen(const char *host, const char *port)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV},
                    *res;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0)
        ref_die("%s:%s: %s", host, port, gai_strerror(rc));
    int fd = -1, err = 0;
    for (const struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
        fd = listen_one(ai);
        err = errno;
    }
    freeaddrinfo(res);
    if (fd < 0)
        ref_die("cannot listen on %s:%s: %s", host, port, strerror(err));
    print_listening(fd);
    return fd;
}

int ref_spare_open(void)
{
    return open("/dev/null", O_RDONLY | O_CLOEXEC);
}

bool ref_shed_one(int lfd, int *spare, int cause)
{
    if (*spare >= 0)
        close(*spare);
    int fd = accept(lfd, NULL, NULL); /* lfd is nonblocking: EAGAIN when empty */
    int err = errno;
    if (fd >= 0) {
        close(fd);
        fprintf(stderr, "%s: accept: %s: dropped a connection\n", ref_prog,
                strerror(cause));
    }
    *spare = ref_spare_open(); /* -1 if it fails: the next shed tries again */
    errno = err;
    return fd >= 0;
}
