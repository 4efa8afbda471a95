/*
 * tools/ref-uring.c - the io_uring floor for `make bench`: a raw-byte echo
 * server on io_uring with everything the kernel offers to make one fast, to
 * show what completion-based I/O can do on this machine at best - what
 * step06 is measured against besides ref-echo.
 *
 * One thread, one ring (SINGLE_ISSUER | DEFER_TASKRUN), on step06's ring
 * wrapper (step06-aio/ring.c).  Nothing is submitted per message that need
 * not be:
 *   - one multishot accept (IORING_ACCEPT_MULTISHOT): one SQE, a CQE per
 *     connection;
 *   - per connection one multishot recv (IORING_RECV_MULTISHOT) into
 *     provided buffers (a buffer ring, IORING_REGISTER_PBUF_RING): armed
 *     once, a CQE each time data arrives, in a buffer the kernel picks then -
 *     so an idle connection holds no buffer at all;
 *   - per connection at most one send in flight.
 * Received bytes are copied from the provided buffer (given straight back to
 * the kernel) to the connection's queue, and sent from there.  A connection
 * that owes more than REF_HIGH bytes stops reading (its recv is cancelled)
 * until it is under REF_LOW.  Out of file descriptors, it sheds connections
 * with the spare-fd trick and waits for the next one with a poll, never
 * spins.
 *
 * Needs Linux 6.0 (multishot recv); exits 1 saying so on older kernels or
 * where io_uring is off.  No framing: framed clients work against it because
 * framed echo and raw echo are the same byte stream.
 *
 *     tools/ref-uring -p 8080        then: tools/loadgen -p 8080 -c 64 -d 8
 */
#include "ref-common.h"
#include "ring.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#define REF_BUFS     512        /* provided buffers (a power of two) */
#define REF_BUF_SIZE (16 << 10) /* bytes each: 8 MiB, touched only as used */
#define REF_HIGH     (1 << 20)  /* owed bytes above which a connection stops reading */
#define REF_LOW      (256 << 10)

/* Bytes to send; one copy in flight (the kernel reads it), one filling up. */
struct queue {
    char *data;
    size_t off, len, cap;
};

struct peer {
    int fd;
    struct ring_op recv_op, send_op, cancel_op;
    struct queue sending, next;
    bool paused; /* owes too much: the recv is cancelled until it is under REF_LOW */
    bool done;   /* EOF or an error: close once nothing is in flight */
};

const char *ref_prog = "ref-uring";

static const char usage[] =
    "usage: ref-uring [-H HOST] [-p PORT] [-h]\n"
    "  Raw-byte echo server on io_uring (multishot accept and recv,\n"
    "  provided buffers): the benchmark's io_uring floor.  Needs Linux 6.0.\n"
    "  -H HOST  address to bind, IPv4 or IPv6 (default 127.0.0.1)\n"
    "  -p PORT  port to bind; 0 picks a free port (default 8080)\n"
    "  -h       show this help\n"
    "Prints \"listening on HOST:PORT\" when ready ([HOST]:PORT for IPv6);\n"
    "runs until killed.\n";

static struct ring ring;
static struct ring_op accept_op = {.kind = RING_OP_MBOX}; /* told apart by address */
static struct ring_op wait_op = {.kind = RING_OP_TIMER};  /* the EMFILE poll */
static int lfd, spare;
/* The buffer ring: entries shared with the kernel, and the buffers. */
static struct io_uring_buf_ring *bring;
static char *bufs;
static unsigned bring_tail;

/* Give buffer bid back to the kernel: an entry at the tail, then the tail
 * published with a release store (the kernel reads the entry after it). */
static void buf_give(unsigned bid)
{
    struct io_uring_buf *b = &bring->bufs[bring_tail & (REF_BUFS - 1)];
    b->addr = (uint64_t)(uintptr_t)(bufs + (size_t)bid * REF_BUF_SIZE);
    b->len = REF_BUF_SIZE;
    b->bid = (uint16_t)bid;
    bring_tail++;
    atomic_store_explicit((_Atomic uint16_t *)&bring->tail, (uint16_t)bring_tail,
                          memory_order_release);
}

static void bufs_init(void)
{
    size_t len = REF_BUFS * sizeof(struct io_uring_buf);
    bring = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    bufs = malloc((size_t)REF_BUFS * REF_BUF_SIZE);
    if (bring == MAP_FAILED || bufs == NULL)
        ref_die("out of memory");
    struct io_uring_buf_reg reg = {
        .ring_addr = (uint64_t)(uintptr_t)bring, .ring_entries = REF_BUFS, .bgid = 0};
    if (syscall(__NR_io_uring_register, ring.fd, IORING_REGISTER_PBUF_RING, &reg, 1) <
        0)
        ref_die("IORING_REGISTER_PBUF_RING: %s (Linux 5.19 or later is needed)",
                strerror(errno));
    for (unsigned i = 0; i < REF_BUFS; i++)
        buf_give(i);
}

static void submit_accept(void)
{
    struct io_uring_sqe *sqe = ring_get_sqe(&ring, &accept_op);
    sqe->opcode = IORING_OP_ACCEPT;
    sqe->fd = lfd;
    sqe->ioprio = IORING_ACCEPT_MULTISHOT;
    sqe->accept_flags = SOCK_CLOEXEC;
}

static void submit_recv(struct peer *p)
{
    struct io_uring_sqe *sqe = ring_get_sqe(&ring, &p->recv_op);
    sqe->opcode = IORING_OP_RECV;
    sqe->fd = p->fd;
    sqe->ioprio = IORING_RECV_MULTISHOT;
    sqe->flags = IOSQE_BUFFER_SELECT;
    sqe->buf_group = 0;
}

static void submit_send(struct peer *p)
{
    struct io_uring_sqe *sqe = ring_get_sqe(&ring, &p->send_op);
    sqe->opcode = IORING_OP_SEND;
    sqe->fd = p->fd;
    sqe->addr = (uint64_t)(uintptr_t)(p->sending.data + p->sending.off);
    size_t len = p->sending.len - p->sending.off;
    sqe->len = len < (1u << 30) ? (uint32_t)len : 1u << 30;
    sqe->msg_flags = MSG_NOSIGNAL;
}

static size_t owed(const struct peer *p)
{
    return p->sending.len - p->sending.off + p->next.len;
}

/* An emptied queue of 4 KiB gives its memory back, so an idle connection
 * that carried small messages holds no buffer (as in ref-echo).  It goes to
 * a short free list first: a busy connection empties its queues after every
 * send, and should not pay a malloc() and a free() for each.  A larger
 * queue is kept, emptied: giving it back would cost a fresh page (a page
 * fault) per 4 KiB of every large message. */
#define REF_QUEUE_MIN 4096
#define REF_SPARES    64
static char *spares[REF_SPARES];
static unsigned nspares;

static void queue_free(struct queue *q)
{
    if (q->cap == REF_QUEUE_MIN && nspares < REF_SPARES)
        spares[nspares++] = q->data;
    else
        free(q->data);
    *q = (struct queue){0};
}

static void queue_empty(struct queue *q)
{
    if (q->cap <= REF_QUEUE_MIN)
        queue_free(q);
    else
        q->off = q->len = 0;
}

static int queue_append(struct queue *q, const char *bytes, size_t len)
{
    if (q->cap == 0 && len <= REF_QUEUE_MIN && nspares > 0) {
        q->data = spares[--nspares];
        q->cap = REF_QUEUE_MIN;
    }
    if (q->len + len > q->cap) {
        size_t cap = q->cap ? q->cap : REF_QUEUE_MIN;
        while (cap < q->len + len)
            cap *= 2;
        char *d = realloc(q->data, cap);
        if (d == NULL)
            return -1;
        q->data = d;
        q->cap = cap;
    }
    memcpy(q->data + q->len, bytes, len);
    q->len += len;
    return 0;
}

/* After every completion of p's: send what is queued, stop or resume
 * reading, or close once done and nothing is in flight. */
static void peer_pump(struct peer *p)
{
    if (!p->send_op.busy && p->sending.off == p->sending.len && p->next.len > 0) {
        struct queue t = p->sending; /* swap: the kernel now reads `next` */
        p->sending = p->next;
        p->next = t;
        queue_empty(&p->next);
    }
    if (!p->send_op.busy && p->sending.off < p->sending.len)
        submit_send(p); /* done or not: what is owed goes out first */
    if (!p->done && !p->paused && owed(p) > REF_HIGH && p->recv_op.busy) {
        p->paused = true;
        struct io_uring_sqe *sqe = ring_get_sqe(&ring, &p->cancel_op);
        sqe->opcode = IORING_OP_ASYNC_CANCEL;
        sqe->fd = -1;
        sqe->addr = (uint64_t)(uintptr_t)&p->recv_op;
    } else if (!p->done && p->paused && owed(p) < REF_LOW && !p->recv_op.busy &&
               !p->cancel_op.busy) {
        p->paused = false;
        submit_recv(p);
    }
    if (p->done && owed(p) == 0 && p->recv_op.busy && !p->cancel_op.busy) {
        shutdown(p->fd, SHUT_RDWR); /* ends the armed recv: then we close */
    }
    if (p->done && !p->recv_op.busy && !p->send_op.busy && !p->cancel_op.busy) {
        close(p->fd);
        queue_free(&p->sending);
        queue_free(&p->next);
        free(p);
    }
}

static void peer_open(int fd)
{
    int one = 1;
    struct peer *p = calloc(1, sizeof(*p));
    if (p == NULL || setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0) {
        close(fd); /* a failure on one connection closes that connection */
        free(p);
        return;
    }
    p->fd = fd;
    p->recv_op.kind = RING_OP_RECV;
    p->send_op.kind = RING_OP_SEND;
    p->cancel_op.kind = RING_OP_CANCEL_RECV;
    submit_recv(p);
}

static void on_recv(struct peer *p, int res, unsigned flags)
{
    if (res > 0) {
        unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
        int bad =
            queue_append(&p->next, bufs + (size_t)bid * REF_BUF_SIZE, (size_t)res);
        buf_give(bid);
        if (bad < 0)
            p->done = true;
    } else if (res == -ENOBUFS) {
        /* Every buffer was in use for a moment: they are back now. */
    } else if (res != -ECANCELED || !p->paused) {
        p->done = true; /* EOF (0) or an error: send what is owed, then close */
    }
    if (!(flags & IORING_CQE_F_MORE)) {
        p->recv_op.busy = false; /* multishot ended: rearm unless stopping */
        if (!p->done && !p->paused)
            submit_recv(p);
    }
}

static void on_send(struct peer *p, int res)
{
    p->send_op.busy = false;
    if (res < 0) {
        p->done = true;
        p->sending.off = p->sending.len;
        p->next.len = 0; /* nobody to send it to */
        return;
    }
    p->sending.off += (size_t)res;
    if (p->sending.off == p->sending.len)
        queue_empty(&p->sending);
}

/* A new connection, or EMFILE: shed, then wait for the next with a poll. */
static void on_accept(int res, unsigned flags)
{
    if (res >= 0) {
        peer_open(res);
    } else if (res == -EMFILE || res == -ENFILE) {
        while (ref_shed_one(lfd, &spare, -res))
            ;
    }
    if (flags & IORING_CQE_F_MORE)
        return;
    accept_op.busy = false;
    if (res == -EMFILE || res == -ENFILE) {
        struct io_uring_sqe *sqe = ring_get_sqe(&ring, &wait_op);
        sqe->opcode = IORING_OP_POLL_ADD;
        sqe->fd = lfd;
        sqe->poll32_events = POLLIN;
    } else {
        submit_accept();
    }
}

static void complete(struct io_uring_cqe *cqe)
{
    struct ring_op *op = (struct ring_op *)(uintptr_t)cqe->user_data;
    int res = cqe->res;
    unsigned flags = cqe->flags;
    ring_cqe_seen(&ring);
    if (op == &accept_op) {
        on_accept(res, flags);
        return;
    }
    if (op == &wait_op) {
        wait_op.busy = false;
        submit_accept();
        return;
    }
    struct peer *p;
    switch (op->kind) {
    case RING_OP_RECV:
        p = container_of(op, struct peer, recv_op);
        on_recv(p, res, flags);
        break;
    case RING_OP_SEND:
        p = container_of(op, struct peer, send_op);
        on_send(p, res);
        break;
    default:
        p = container_of(op, struct peer, cancel_op);
        p->cancel_op.busy = false;
        break;
    }
    peer_pump(p);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *port = "8080";
    ref_parse_args(argc, argv, usage, &host, &port);
    int ret = ring_init(&ring, 4096, 0,
                        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN);
    if (ret < 0)
        ref_die("io_uring_setup: %s (io_uring switched off, or older than Linux 6.1)",
                strerror(-ret));
    lfd = ref_listen(host, port);
    spare = ref_spare_open();
    if (spare < 0)
        ref_die("open /dev/null (the spare fd): %s", strerror(errno));
    bufs_init();
    submit_accept();
    for (;;) {
        ret = ring_submit_and_wait(&ring, 1);
        if (ret < 0 && ret != -EINTR)
            ref_die("io_uring_enter: %s", strerror(-ret));
        struct io_uring_cqe *cqe;
        while ((cqe = ring_peek_cqe(&ring)) != NULL)
            complete(cqe);
    }
}
