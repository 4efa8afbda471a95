/*
 * tests/unit/handoff_test.c - step04's shared handoff queue (handoff.c)
 * never holds a connection whose wake byte the pipe refused.
 *
 * With -D shared a worker pops one connection per byte it reads from the
 * wake pipe, so a connection whose byte was refused (EAGAIN: the pipe is
 * "full") is never popped.  A pipe refuses one-byte writes well before it
 * holds its size in bytes: it is a ring of page buffers, and the buffer being
 * read keeps its slot until it is empty.  This test makes the pipe small (two
 * pages, through the linker's --wrap=pipe2), moves the read position deep
 * into the first page, then queues until the queue says it is full; after
 * every push the pipe must hold a byte for every queued connection.
 *
 *     cc -pthread -I step04-master-worker -Wl,--wrap=pipe2 tests/unit/handoff_test.c \
 *        step04-master-worker/{handoff,log}.c -o handoff_test && ./handoff_test
 */
#include "handoff.h"
#include "check.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

int __real_pipe2(int fds[2], int flags);

/* Every pipe this program makes holds two pages. */
int __wrap_pipe2(int fds[2], int flags)
{
    int rc = __real_pipe2(fds, flags);
    if (rc == 0 && fcntl(fds[1], F_SETPIPE_SZ, 2 * (int)sysconf(_SC_PAGESIZE)) < 0)
        return -1;
    return rc;
}

static size_t in_pipe(const struct handoff_queue *q)
{
    int n = 0;
    CHECK(ioctl(q->wake_read, FIONREAD, &n) == 0, "FIONREAD on the wake pipe");
    return (size_t)n;
}

int main(void)
{
    struct handoff_queue q;
    CHECK(handoff_queue_init(&q, 65536, true) == 0, "handoff_queue_init");
    struct handoff h;
    /* One connection stays queued (its byte keeps the first page in use);
     * 4,000 more pass through: the reader is now deep into that page. */
    CHECK(handoff_push(&q, 100, 1) == 0, "the first push");
    for (int i = 0; i < 4000; i++) {
        CHECK(handoff_push(&q, 100, 2) == 0, "push %d", i);
        CHECK(handoff_take_one(&q, &h), "take %d", i);
    }
    size_t pushed = 0;
    while (handoff_push(&q, 100, 3) == 0) {
        pushed++;
        CHECK(in_pipe(&q) == q.len,
              "after %zu more pushes the queue holds %zu connections but the pipe "
              "only %zu wake bytes: the pipe refused a byte",
              pushed, q.len, in_pipe(&q));
    }
    printf("ok: the queue took %zu connections, each with its byte (cap %zu)\n", q.len,
           q.cap);
    return 0;
}
