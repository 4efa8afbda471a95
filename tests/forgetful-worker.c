/*
 * tests/forgetful-worker.c - a model of a flawed master-worker design, so a
 * test (tests/04-workers.bats) and a student can watch it fail.  Test-only;
 * never a model to copy.
 *
 * The design: the main thread accepts connections (nonblocking) and pushes
 * each fd into one shared queue guarded by a mutex and a condition variable.
 * Worker threads sleep on the condition variable, pop an fd, and echo what
 * they read until read() says EAGAIN.  Then they go back to the queue - and
 * the connection is forgotten: no event loop watches it, so when its client
 * sends again after a pause, nobody ever reads it.  (The fd is leaked too.)
 * One epoll loop per worker, which watches every connection the worker owns
 * for as long as it lives, is what step04 does instead.
 *
 *   forgetful-worker [-p PORT] [-w WORKERS]
 *
 * Prints "listening on 127.0.0.1:PORT" like the lab's servers (-p 0: any
 * free port), and echoes raw bytes, so tools/client works against it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#define QUEUE_MAX 1024

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t nonempty = PTHREAD_COND_INITIALIZER;
static int queue[QUEUE_MAX];
static size_t head, len;

static void *worker(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&lock);
        while (len == 0)
            pthread_cond_wait(&nonempty, &lock);
        int fd = queue[head];
        head = (head + 1) % QUEUE_MAX;
        len--;
        pthread_mutex_unlock(&lock);

        char buf[4096];
        ssize_t n;
        while ((n = read(fd, buf, sizeof(buf))) > 0) /* until EAGAIN ... */
            if (send(fd, buf, (size_t)n, MSG_NOSIGNAL) != n)
                break;
        if (n == 0)
            close(fd);
        /* ... and on EAGAIN: forget it.  This is the bug. */
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int port = 0, workers = 2, c;
    while ((c = getopt(argc, argv, "p:w:")) != -1) {
        if (c == 'p')
            port = atoi(optarg);
        else if (c == 'w')
            workers = atoi(optarg);
        else
            return 2;
    }
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof(a);
    if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lfd, SOMAXCONN) < 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &alen) < 0) {
        perror("forgetful-worker: listen");
        return 1;
    }
    for (int i = 0; i < workers; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, worker, NULL) != 0)
            return 1;
    }
    printf("listening on 127.0.0.1:%u\n", (unsigned)ntohs(a.sin_port));
    fflush(stdout);
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        pthread_mutex_lock(&lock);
        if (len < QUEUE_MAX) {
            queue[(head + len) % QUEUE_MAX] = fd;
            len++;
            pthread_cond_signal(&nonempty);
        } else {
            close(fd);
        }
        pthread_mutex_unlock(&lock);
    }
}
