/*
 * tests/slowpipe.c - an LD_PRELOAD shim that makes every read() of a pipe
 * slow: it says so on stderr, then sleeps SLOWPIPE_MS milliseconds (default
 * 300) before it reads.
 *
 * A lost wakeup (丢失唤醒) hides in a window of a few instructions: between
 * the moment a worker takes its handoff queue and the moment it empties its
 * wake pipe, a new connection and its wake byte can slip in.  No test hits
 * that window by chance.  This shim holds it open: the line on stderr tells
 * the test the worker is inside a pipe read, and the sleep gives it time to
 * connect another client before the read happens.  Read-then-swap survives
 * it; swap-then-read eats the newcomer's byte and strands it in the queue.
 *
 *     LD_PRELOAD=tests/bin/slowpipe.so SLOWPIPE_MS=500 step04-master-worker/server -w 1
 *
 * Used by tests/04-workers.bats ("handoff: a connection that arrives while its
 * worker empties its wake pipe ...").
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

ssize_t read(int fd, void *buf, size_t len)
{
    static ssize_t (*real_read)(int, void *, size_t);
    if (real_read == NULL)
        real_read = (ssize_t(*)(int, void *, size_t))dlsym(RTLD_NEXT, "read");
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode)) {
        const char *s = getenv("SLOWPIPE_MS");
        long ms = s != NULL && atol(s) > 0 ? atol(s) : 300;
        char line[64];
        int n = snprintf(line, sizeof(line), "slowpipe: read(%d) in %ld ms\n", fd, ms);
        if (write(2, line, (size_t)n) < 0) {
            /* nobody to tell: the sleep is what matters */
        }
        struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
    }
    return real_read(fd, buf, len);
}
