/*
 * tests/shortio.c - an LD_PRELOAD shim that makes every socket read and write
 * short.
 *
 * The kernel may return fewer bytes than asked from any read() and accept
 * fewer than offered in any write(); on a loopback test that rarely happens,
 * so code that ignores it passes every ordinary test.  With this shim loaded
 * it happens on every call: each socket read, recv and readv moves at most
 * SHORTIO_READ_MAX bytes, each write, send, sendmsg and writev at most
 * SHORTIO_WRITE_MAX; both default to SHORTIO_MAX, itself 7 by default.
 *
 *     LD_PRELOAD=tests/bin/shortio.so SHORTIO_MAX=3 step02-framing/server -p 0
 *     LD_PRELOAD=tests/bin/shortio.so SHORTIO_WRITE_MAX=7 step01-blocking/server
 *
 * Separate caps matter: a server that echoes what it read never writes more
 * than one read's worth, so with both capped at 7 it never meets a short
 * write.  Large reads and tiny writes are what prove the write loop.
 *
 * Used by tests/robustness.bats ("short reads and short writes ...").
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

/* The cap named by variable `name`, else SHORTIO_MAX, else 7. */
static size_t cap_from_env(const char *name)
{
    const char *s = getenv(name);
    if (s == NULL || atoi(s) <= 0)
        s = getenv("SHORTIO_MAX");
    return s != NULL && atoi(s) > 0 ? (size_t)atoi(s) : 7;
}

enum direction { READING, WRITING };

static size_t cap_for(int fd, size_t len, enum direction dir)
{
    static size_t max[2];
    if (max[dir] == 0)
        max[dir] =
            cap_from_env(dir == READING ? "SHORTIO_READ_MAX" : "SHORTIO_WRITE_MAX");
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode))
        return len; /* only sockets: leave files and pipes alone */
    return len < max[dir] ? len : max[dir];
}

/* Trim an iovec array to at most cap bytes.  Returns the new count. */
static int trim_iov(const struct iovec *iov, int n, size_t cap, struct iovec *out)
{
    int k = 0;
    for (int i = 0; i < n && cap > 0; i++) {
        out[k] = iov[i];
        if (out[k].iov_len > cap)
            out[k].iov_len = cap;
        cap -= out[k].iov_len;
        k++;
    }
    return k;
}

#define NEXT(name) ((__typeof__(&name))dlsym(RTLD_NEXT, #name))

ssize_t read(int fd, void *buf, size_t len)
{
    return NEXT(read)(fd, buf, cap_for(fd, len, READING));
}

ssize_t recv(int fd, void *buf, size_t len, int flags)
{
    return NEXT(recv)(fd, buf, cap_for(fd, len, READING), flags);
}

ssize_t write(int fd, const void *buf, size_t len)
{
    return NEXT(write)(fd, buf, cap_for(fd, len, WRITING));
}

ssize_t send(int fd, const void *buf, size_t len, int flags)
{
    return NEXT(send)(fd, buf, cap_for(fd, len, WRITING), flags);
}

ssize_t readv(int fd, const struct iovec *iov, int n)
{
    struct iovec t[64];
    if (n > 64)
        n = 64;
    return NEXT(readv)(fd, t, trim_iov(iov, n, cap_for(fd, SIZE_MAX, READING), t));
}

ssize_t writev(int fd, const struct iovec *iov, int n)
{
    struct iovec t[64];
    if (n > 64)
        n = 64;
    return NEXT(writev)(fd, t, trim_iov(iov, n, cap_for(fd, SIZE_MAX, WRITING), t));
}

ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
    struct iovec t[64];
    struct msghdr m = *msg;
    int n = (int)m.msg_iovlen > 64 ? 64 : (int)m.msg_iovlen;
    m.msg_iov = t;
    m.msg_iovlen = (size_t)trim_iov(msg->msg_iov, n, cap_for(fd, SIZE_MAX, WRITING), t);
    return NEXT(sendmsg)(fd, &m, flags);
}
