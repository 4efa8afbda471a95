/*
 * tests/failalloc.c - an LD_PRELOAD shim that makes malloc() fail, in the
 * threads a test names, so the tests can show that those threads never
 * need memory where running out of it could not be undone (an application
 * thread holding a finished reply has no one to tell).
 *
 *   FAILALLOC_THREAD=app-   malloc() fails in every thread whose name starts
 *                           with this (the names pthread_setname_np() gave:
 *                           "app-0", "worker-1", ...); other threads and
 *                           other allocation functions are left alone
 *   FAILALLOC_SKIP=N        ... after the first N calls in those threads
 *                           (default 0)
 *
 *     LD_PRELOAD=tests/bin/failalloc.so FAILALLOC_THREAD=app- \
 *         step05-signals-eventfd/server -a 1
 *
 * glibc's own __libc_malloc() does the real work, so the shim needs no
 * dlsym() (which may itself allocate).  Not for valgrind or the sanitizers:
 * they replace malloc() themselves.  Used by tests/05-signals-eventfd.bats
 * ("-a 1: an application thread allocates nothing ...").
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

extern void *__libc_malloc(size_t size);

static atomic_long calls;

static int failing_thread(void)
{
    const char *prefix = getenv("FAILALLOC_THREAD");
    if (prefix == NULL || *prefix == '\0')
        return 0;
    char name[16] = "";
    if (prctl(PR_GET_NAME, name) != 0)
        return 0;
    return strncmp(name, prefix, strlen(prefix)) == 0;
}

void *malloc(size_t size)
{
    if (failing_thread()) {
        const char *skip = getenv("FAILALLOC_SKIP");
        if (atomic_fetch_add(&calls, 1) >= (skip ? atol(skip) : 0)) {
            errno = ENOMEM;
            return NULL;
        }
    }
    return __libc_malloc(size);
}
