/*
 * tests/holdconns.c - open many connections and hold them, to run a server
 * out of file descriptors (tests/03-epoll.bats, the EMFILE test).
 *
 *   holdconns -p PORT -n COUNT -e EXPECT
 *
 * Connects COUNT times without sending anything.  The kernel completes every
 * handshake from the listen backlog whether or not the server accepts, so all
 * COUNT connects succeed.  Then it waits (30 s at most) until the server has
 * closed at least EXPECT of them - a server using the spare-fd trick accepts
 * and closes the ones it has no fd for - and prints "closed C of COUNT".
 * It holds the rest open until stdin ends, then exits 0.  Exit 1 if fewer
 * than EXPECT were closed in time.
 */
#include <errno.h>
#include <string.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

int main(int argc, char **argv)
{
    long port = 0, count = 0, expect = 0;
    int c;
    while ((c = getopt(argc, argv, "p:n:e:")) != -1) {
        if (c == 'p')
            port = atol(optarg);
        else if (c == 'n')
            count = atol(optarg);
        else if (c == 'e')
            expect = atol(optarg);
        else
            return 2;
    }
    if (port <= 0 || count <= 0) {
        fprintf(stderr, "usage: holdconns -p PORT -n COUNT [-e EXPECT]\n");
        return 2;
    }
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);

    struct pollfd *p = calloc((size_t)count, sizeof(*p));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (long i = 0; i < count; i++) {
        p[i].fd = socket(AF_INET, SOCK_STREAM, 0);
        p[i].events = POLLIN;
        if (p[i].fd < 0 || connect(p[i].fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
            fprintf(stderr, "holdconns: connect %ld: %s\n", i + 1, strerror(errno));
            return 1;
        }
    }
    /* Count the connections the server closed (EOF or reset). */
    long closed = 0;
    time_t end = time(NULL) + 30;
    while (closed < expect && time(NULL) < end) {
        if (poll(p, (nfds_t)count, 200) <= 0)
            continue;
        for (long i = 0; i < count; i++) {
            if (p[i].fd >= 0 && p[i].revents) {
                char b;
                if (read(p[i].fd, &b, 1) <= 0) {
                    close(p[i].fd);
                    p[i].fd = -1; /* poll ignores negative fds */
                    closed++;
                }
            }
        }
    }
    printf("closed %ld of %ld\n", closed, count);
    fflush(stdout);
    if (closed < expect)
        return 1;
    char buf[64];
    while (fread(buf, 1, sizeof(buf), stdin) > 0)
        ;
    return 0;
}
