/*
 * tests/unit/ring_test.c - unit tests for the ring buffer (buffer.c) of
 * step03 and later, compiled against a step's own buffer.c and pool.c:
 *
 *     cc -I step03-epoll-et tests/unit/ring_test.c step03-epoll-et/buffer.c \
 *        step03-epoll-et/pool.c -o ring_test && ./ring_test wrap
 *
 * One case per run (the name is the first argument), so bats reports each
 * on its own line.  A failed check prints what was expected and exits 1.
 */
#include "buffer.h"
#include "pool.h"
#include "check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static struct pool pool;

/* Bytes i of a test stream: a pattern that shows any reordering. */
static uint8_t at(size_t i)
{
    return (uint8_t)(i * 7 + i / 251);
}

static void append_stream(struct buf *b, size_t from, size_t n)
{
    uint8_t *tmp = malloc(n);
    for (size_t i = 0; i < n; i++)
        tmp[i] = at(from + i);
    CHECK(buf_append(b, tmp, n) == 0, "append of %zu bytes failed", n);
    free(tmp);
}

static void expect_stream(const struct buf *b, size_t from, size_t n)
{
    CHECK(buf_len(b) == n, "expected %zu bytes buffered, found %zu", n, buf_len(b));
    uint8_t *tmp = malloc(n ? n : 1);
    buf_peek(b, 0, tmp, n);
    for (size_t i = 0; i < n; i++)
        CHECK(tmp[i] == at(from + i), "byte %zu: expected %u, got %u", i, at(from + i),
              tmp[i]);
    free(tmp);
}

/* Data that runs off the end of the ring continues at its start. */
static void test_wrap(void)
{
    struct buf b;
    buf_init(&b, &pool, 1 << 20);
    append_stream(&b, 0, 10000);
    buf_consume(&b, 9000);
    append_stream(&b, 10000, 10000); /* 11000 bytes: wraps in a 16 KiB ring */
    CHECK(b.cap == POOL_BLOCK, "expected no growth, cap is %zu", b.cap);
    struct iovec iov[2];
    CHECK(buf_data_iov(&b, iov) == 2, "wrapped data must be two segments");
    CHECK(iov[0].iov_len + iov[1].iov_len == 11000, "segments hold %zu bytes",
          iov[0].iov_len + iov[1].iov_len);
    expect_stream(&b, 9000, 11000);
    buf_free(&b);
}

/* Growth keeps the bytes in order (unwrapping them) and stops at max_len. */
static void test_grow(void)
{
    struct buf b;
    buf_init(&b, &pool, 1 << 16);
    append_stream(&b, 0, 12000);
    buf_consume(&b, 8000);
    append_stream(&b, 12000, 30000); /* 34000 bytes, was wrapped: grows to 64 KiB */
    CHECK(b.cap == 1 << 16, "expected cap 65536, got %zu", b.cap);
    CHECK((b.cap & (b.cap - 1)) == 0, "cap %zu is not a power of two", b.cap);
    expect_stream(&b, 8000, 34000);
    CHECK(buf_reserve(&b, (1 << 16) - 34000 + 1) == -1,
          "growth past max_len must fail");
    expect_stream(&b, 8000, 34000); /* a failed reserve changes nothing */
    buf_free(&b);
}

/* readv/writev through the two-segment iovecs move every byte, in order. */
static void test_iov(void)
{
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair");
    struct buf out, in;
    buf_init(&out, &pool, 1 << 20);
    buf_init(&in, &pool, 1 << 20);
    append_stream(&out, 0, 12000);
    buf_consume(&out, 11000);
    append_stream(&out, 12000, 14000); /* 15000 bytes, wrapped */
    struct iovec iov[2];
    int k = buf_data_iov(&out, iov);
    CHECK(k == 2, "expected two data segments, got %d", k);
    CHECK(writev(sv[0], iov, k) == 15000, "writev");
    buf_consume(&out, 15000);
    /* Read into a ring whose free space is wrapped too. */
    append_stream(&in, 0, 9000);
    buf_consume(&in, 9000 - 100); /* 100 bytes left at offset 8900 */
    CHECK(buf_reserve(&in, 15000) == 0, "reserve");
    k = buf_space_iov(&in, iov);
    CHECK(k == 2, "free space should wrap, found %d segment(s)", k);
    size_t got = 0;
    while (got < 15000) {
        ssize_t n = readv(sv[1], iov, k);
        CHECK(n > 0, "readv");
        buf_produce(&in, (size_t)n);
        got += (size_t)n;
        k = buf_space_iov(&in, iov);
    }
    buf_consume(&in, 100);
    expect_stream(&in, 11000, 15000);
    buf_free(&in);
    buf_free(&out);
    close(sv[0]);
    close(sv[1]);
}

/* Full: no free space, no growth needed.  Empty: the memory is released. */
static void test_full_empty(void)
{
    struct buf b;
    buf_init(&b, &pool, POOL_BLOCK);
    CHECK(b.data == NULL && buf_len(&b) == 0, "a new buffer holds no memory");
    append_stream(&b, 0, 100);
    buf_consume(&b, 50);
    append_stream(&b, 100, POOL_BLOCK - 50); /* exactly full, wrapped */
    CHECK(buf_len(&b) == POOL_BLOCK, "expected a full ring");
    struct iovec iov[2];
    CHECK(buf_space_iov(&b, iov) == 0, "a full ring has no free segment");
    CHECK(buf_reserve(&b, 1) == -1, "a full ring at max_len cannot take a byte");
    expect_stream(&b, 50, POOL_BLOCK);
    CHECK(pool.in_use == 1, "one block in use, found %zu", pool.in_use);
    buf_consume(&b, POOL_BLOCK);
    CHECK(b.data == NULL && b.cap == 0, "an emptied ring must give its memory back");
    CHECK(pool.in_use == 0 && pool.nfree >= 1, "the block went back to the pool");
    buf_free(&b);
}

/*
 * Sizes near SIZE_MAX: len + n would wrap, and doubling a capacity past
 * SIZE_MAX / 2 wraps to 0 (and then loops forever).  Each request must fail
 * at once and leave the ring as it was.  An alarm turns a hang into a failure.
 */
static void test_overflow(void)
{
    alarm(10);
    struct buf b;
    buf_init(&b, &pool, SIZE_MAX); /* no bound: only arithmetic can say no */
    append_stream(&b, 0, 100);
    CHECK(buf_reserve(&b, SIZE_MAX) == -1, "reserve(SIZE_MAX) must fail");
    CHECK(buf_reserve(&b, SIZE_MAX - 50) == -1, "len + n wraps: must fail");
    CHECK(buf_reserve(&b, SIZE_MAX / 2 + 2) == -1,
          "no power-of-two capacity holds SIZE_MAX / 2 + 102 bytes: must fail");
    expect_stream(&b, 0, 100);
    struct buf small;
    buf_init(&small, &pool, 1000);
    CHECK(buf_reserve(&small, SIZE_MAX) == -1, "reserve past max_len must fail");
    CHECK(buf_reserve(&small, 1000) == 0, "reserve up to max_len must work");
    buf_free(&small);
    buf_free(&b);
    alarm(0);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: ring_test wrap|grow|iov|full-empty|overflow\n");
        return 2;
    }
    pool_init(&pool, 8);
    if (strcmp(argv[1], "wrap") == 0)
        test_wrap();
    else if (strcmp(argv[1], "grow") == 0)
        test_grow();
    else if (strcmp(argv[1], "iov") == 0)
        test_iov();
    else if (strcmp(argv[1], "full-empty") == 0)
        test_full_empty();
    else if (strcmp(argv[1], "overflow") == 0)
        test_overflow();
    else
        return 2;
    CHECK(pool.in_use == 0, "%zu pool blocks were not returned", pool.in_use);
    pool_destroy(&pool);
    printf("ok %s\n", argv[1]);
    return 0;
}
