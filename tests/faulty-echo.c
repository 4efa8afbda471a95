/*
 * tests/faulty-echo.c - a raw echo server that misbehaves on purpose, so the
 * tests can prove tools/loadgen notices.  Test-only; never a model to copy.
 *
 *   faulty-echo -f corrupt -n N    flip one byte in every N bytes echoed
 *   faulty-echo -f swap            the first two connections get each
 *                                  other's replies
 *   faulty-echo -f stall -n N -s MS   after echoing N bytes in total,
 *                                  stop answering for MS milliseconds, once
 *   faulty-echo -f quit -n N       after echoing N bytes in total, shut
 *                                  down as a graceful server does: a FIN
 *                                  on every connection, then exit once
 *                                  every peer has closed too
 *
 * Prints "listening on 127.0.0.1:PORT" like the lab's servers (-p 0 picks a
 * free port).  poll() and blocking writes: fine for two or three clients.
 */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#define MAX_CONNS 16

static int write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *mode = "corrupt";
    long every = 1000, stall_ms = 0, port = 0;
    int c;
    while ((c = getopt(argc, argv, "f:n:s:p:")) != -1) {
        switch (c) {
        case 'f':
            mode = optarg;
            break;
        case 'n':
            every = atol(optarg);
            break;
        case 's':
            stall_ms = atol(optarg);
            break;
        case 'p':
            port = atol(optarg);
            break;
        default:
            fputs("usage: faulty-echo -f corrupt|swap|stall|quit [-n N] [-s MS] "
                  "[-p PORT]\n",
                  stderr);
            return 2;
        }
    }
    int swap = strcmp(mode, "swap") == 0, stall = strcmp(mode, "stall") == 0;
    int quit = strcmp(mode, "quit") == 0, quitting = 0;
    int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof(a);
    if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lfd, 64) < 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &alen) < 0) {
        perror("faulty-echo");
        return 1;
    }
    printf("listening on 127.0.0.1:%u\n", (unsigned)ntohs(a.sin_port));
    fflush(stdout);

    struct pollfd pfd[MAX_CONNS + 1] = {{.fd = lfd, .events = POLLIN}};
    int n = 0, open_conns = 0;
    long echoed = 0, next_fault = every;
    static char buf[65536];
    for (;;) {
        /* swap: read nothing until there are two peers to cross. */
        int watch = swap && n < 2 ? 1 : n + 1;
        if (poll(pfd, (nfds_t)watch, -1) < 0)
            continue;
        if ((pfd[0].revents & POLLIN) && n < MAX_CONNS) {
            int fd = accept(lfd, NULL, NULL);
            if (fd >= 0) {
                pfd[++n] = (struct pollfd){.fd = fd, .events = POLLIN};
                open_conns++;
            }
        }
        for (int i = 1; i < watch; i++) {
            if (pfd[i].fd < 0 || !(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t r = read(pfd[i].fd, buf, sizeof(buf));
            if (r <= 0) {
                close(pfd[i].fd);
                pfd[i].fd = -1;
                if (--open_conns == 0 && quitting)
                    return 0;
                continue;
            }
            if (quitting)
                continue; /* what comes after our FIN is read and dropped */
            for (ssize_t k = 0; k < r; k++)
                if (!swap && !stall && !quit && echoed + k + 1 == next_fault) {
                    buf[k] ^= 0x20;
                    next_fault += every;
                }
            if (stall && echoed < every && echoed + r >= every) {
                struct timespec ts = {stall_ms / 1000, stall_ms % 1000 * 1000000};
                nanosleep(&ts, NULL);
            }
            echoed += r;
            int to = swap && i <= 2 ? 3 - i : i;
            if (pfd[to].fd >= 0)
                write_all(pfd[to].fd, buf, (size_t)r);
            if (quit && echoed >= every) {
                quitting = 1;
                pfd[0].events = 0; /* no new connections */
                for (int j = 1; j <= n; j++)
                    if (pfd[j].fd >= 0)
                        shutdown(pfd[j].fd, SHUT_WR);
            }
        }
    }
}
