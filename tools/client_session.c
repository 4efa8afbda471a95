/*
 * tools/client_session.c - the client's engine: one connection that sends
 * frames cut as the options ask, reads replies while it sends, checks each
 * reply against what was sent, and ends with a FIN, a half-close or a reset.
 *
 * The socket is nonblocking and driven by poll(), so the client reads replies
 * while it is still sending: a client that writes megabytes before reading
 * anything deadlocks against any echo server once both socket buffers fill.
 */
#include "client.h"
#include "common.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define NS_PER_US 1000LL
#define NS_PER_S  1000000000LL

/* One connection's state while it sends and collects replies. */
struct session {
    const struct client_options *opt;
    int fd;
    uint8_t *in; /* received bytes not yet parsed into a reply */
    size_t in_len, in_cap;
    size_t replies;                  /* replies received so far */
    const struct client_msg *expect; /* the message each reply must echo, in order */
    size_t nexpect;
    size_t chunk_index; /* position in opt->chunks, across the whole session */
    bool eof;
    bool hold_reads;      /* -S: not reading replies yet */
    long long read_at;    /* -W: no read before this (monotonic ns) */
    long long slow_until; /* -L: -W pauses until then (0: for ever) */
};

static void session_die(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));

static void session_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "client: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(CLIENT_EXIT_IO);
}

/* -L: when a slow reader (-W) starts reading at full speed. */
static long long session_slow_until(const struct client_options *o)
{
    return o->slow_for_s > 0 ? (long long)tool_now_ns() + o->slow_for_s * NS_PER_S : 0;
}

static int session_connect(const struct client_options *o)
{
    int fd = tool_connect("client", o->host, o->port, NULL);
    if (fd < 0)
        exit(CLIENT_EXIT_IO);
    /* A fixed size also turns off the kernel's autotuning of this buffer. */
    int size = (int)o->rcvbuf;
    if (o->rcvbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size)) < 0)
        session_die("setsockopt(SO_RCVBUF): %s", strerror(errno));
    return fd;
}

static void session_check_reply(struct session *s, const uint8_t *payload, size_t len)
{
    const struct client_options *o = s->opt;
    if (s->replies >= s->nexpect) {
        fprintf(stderr, "client: unexpected reply %zu (%zu bytes): only %zu were due\n",
                s->replies + 1, len, s->nexpect);
        exit(o->verify ? CLIENT_EXIT_MISMATCH : CLIENT_EXIT_IO);
    }
    const struct client_msg *want = &s->expect[s->replies];
    if (o->verify && (want->len != len || memcmp(want->data, payload, len) != 0)) {
        size_t at = 0;
        while (at < len && at < want->len && want->data[at] == payload[at])
            at++;
        fprintf(stderr,
                "client: reply %zu differs: sent %zu bytes, got %zu bytes, first "
                "difference at byte %zu\n",
                s->replies + 1, want->len, len, at);
        exit(CLIENT_EXIT_MISMATCH);
    }
    if (!o->quiet) {
        fwrite(payload, 1, len, stdout);
        putchar('\n');
        if (o->from_stdin)
            fflush(stdout);
    }
    s->replies++;
}

/* Parse every complete reply frame out of s->in. */
static void session_parse_replies(struct session *s)
{
    size_t off = 0;
    while (s->in_len - off >= TOOL_HEADER) {
        const uint8_t *h = s->in + off;
        size_t len = tool_get_header(h);
        if (s->in_len - off - TOOL_HEADER < len)
            break;
        session_check_reply(s, h + TOOL_HEADER, len);
        off += TOOL_HEADER + len;
    }
    memmove(s->in, s->in + off, s->in_len - off);
    s->in_len -= off;
}

static long long session_now(void)
{
    return (long long)tool_now_ns();
}

/* Read whatever is available (with -W, one read, then a pause).  Returns
 * false once the server has closed. */
static bool session_read_replies(struct session *s)
{
    for (;;) {
        if (s->in_cap - s->in_len < 65536) {
            s->in_cap = s->in_cap ? s->in_cap * 2 : 131072;
            s->in = client_xrealloc(s->in, s->in_cap);
        }
        ssize_t n = read(s->fd, s->in + s->in_len, s->in_cap - s->in_len);
        if (n > 0) {
            s->in_len += (size_t)n;
            session_parse_replies(s);
            if (s->opt->read_pause_us > 0 &&
                (s->slow_until == 0 || session_now() < s->slow_until)) {
                s->read_at = session_now() + s->opt->read_pause_us * NS_PER_US;
                return true;
            }
            continue;
        }
        if (n == 0 || errno == ECONNRESET) {
            if (n < 0 && s->opt->strict_close)
                session_die("the server reset the connection after %zu of %zu replies",
                            s->replies, s->nexpect);
            s->eof = true;
            return false;
        }
        if (errno == EAGAIN || errno == EINTR)
            return true;
        session_die("read: %s", strerror(errno));
    }
}

static size_t session_next_chunk(struct session *s)
{
    const struct client_options *o = s->opt;
    if (o->nchunks == 0)
        return SIZE_MAX;
    size_t i =
        s->chunk_index < (size_t)o->nchunks ? s->chunk_index : (size_t)o->nchunks - 1;
    s->chunk_index++;
    return o->chunks[i];
}

/* Read stdin to its end: -G and -S let a test decide when the client goes on. */
static void session_wait_stdin_eof(void)
{
    char buf[256];
    while (fread(buf, 1, sizeof(buf), stdin) > 0)
        ;
}

/*
 * -S: has sending stalled because the server stopped reading?  Then the
 * server's window is closed and our TCP only probes it.  A send queue
 * waiting on a retransmission timeout (a segment lost on loopback: a full
 * receive queue drops it) looks the same from here for a second or more -
 * the timeout doubles from 200 ms - but is not the server's doing: wait it
 * out (TCP_INFO's retransmits counts the timeouts not yet recovered).
 */
static bool session_peer_stopped_reading(const struct session *s)
{
    struct tcp_info ti;
    socklen_t len = sizeof(ti);
    if (getsockopt(s->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
        return true; /* cannot tell: trust the clock */
    return ti.tcpi_retransmits == 0;
}

/* -S: sending is done or stuck.  Report it, then wait for stdin to end. */
static void session_slow_reader_wait(struct session *s, size_t sent)
{
    fprintf(stderr,
            "client: sending stalled after %zu bytes, none read; waiting for stdin to "
            "end\n",
            sent);
    session_wait_stdin_eof();
    s->hold_reads = false;
}

/* Where one exchange stands: what is sent, and when to give up or resume. */
struct progress {
    size_t sent, len, want, chunk_left;
    long long deadline, resume_at, progress_at; /* monotonic ns */
};

static void session_timed_out(const struct session *s, const struct progress *p)
{
    fprintf(stderr,
            "client: timed out after %ds: sent %zu of %zu bytes, %zu of %zu replies\n",
            s->opt->timeout_s, p->sent, p->len, s->replies,
            p->want == SIZE_MAX ? s->nexpect : p->want);
    exit(CLIENT_EXIT_IO);
}

/* Send the next piece of the current chunk; after a full chunk, pause (-D). */
static void session_send_some(struct session *s, struct progress *p,
                              const uint8_t *data)
{
    const struct client_options *o = s->opt;
    size_t n = p->len - p->sent < p->chunk_left ? p->len - p->sent : p->chunk_left;
    ssize_t w = send(s->fd, data + p->sent, n, MSG_NOSIGNAL);
    if (w < 0 && errno != EAGAIN && errno != EINTR) {
        int err = errno;
        /* Replies that arrived before the reset are still in the receive
         * queue: count them too. */
        if (!s->eof)
            session_read_replies(s);
        session_die("send: %s (after %zu of %zu bytes, %zu of %zu replies)",
                    strerror(err), p->sent, p->len, s->replies, s->nexpect);
    }
    if (w <= 0)
        return;
    p->sent += (size_t)w;
    p->progress_at = session_now();
    p->chunk_left -= (size_t)w;
    p->deadline = session_now() + o->timeout_s * NS_PER_S;
    if (p->chunk_left == 0 && p->sent < p->len) {
        p->chunk_left = session_next_chunk(s);
        p->resume_at = session_now() + o->delay_us * NS_PER_US;
    }
}

/* Wait (bounded) until the socket can be read or written, as p allows. */
static short session_poll(struct session *s, const struct progress *p, long long now,
                          bool can_send)
{
    bool can_read = !s->hold_reads && now >= s->read_at;
    struct pollfd pfd = {.fd = s->fd,
                         .events = (can_read ? POLLIN : 0) | (can_send ? POLLOUT : 0)};
    long long wait_ns =
        can_send || p->sent == p->len ? p->deadline - now : p->resume_at - now;
    if (s->hold_reads && wait_ns > 100000000LL)
        wait_ns = 100000000LL; /* look for a stall every 100 ms */
    if (!s->hold_reads && !can_read && wait_ns > s->read_at - now)
        wait_ns = s->read_at - now; /* -W: the next read is due then */
    int r = poll(&pfd, 1, (int)(wait_ns / 1000000) + 1);
    if (r < 0 && errno != EINTR)
        session_die("poll: %s", strerror(errno));
    return r > 0 ? pfd.revents : 0;
}

/*
 * Send len bytes (split per -c/-D), reading replies meanwhile, until they are
 * all sent and `want` replies have arrived in total.  want == SIZE_MAX means
 * "until the server closes".
 */
static void session_exchange(struct session *s, const uint8_t *data, size_t len,
                             size_t want)
{
    const struct client_options *o = s->opt;
    long long now = session_now();
    struct progress p = {.len = len,
                         .want = want,
                         .chunk_left = len ? session_next_chunk(s) : 0,
                         .deadline = now + o->timeout_s * NS_PER_S,
                         .progress_at = now};
    while (p.sent < len || (s->replies < want && !s->eof)) {
        now = session_now();
        if (s->hold_reads && (p.sent == len || (now - p.progress_at >= NS_PER_S &&
                                                session_peer_stopped_reading(s)))) {
            session_slow_reader_wait(s, p.sent);
            now = session_now();
            p.deadline = now + o->timeout_s * NS_PER_S;
        }
        if (now > p.deadline)
            session_timed_out(s, &p);
        bool can_send = p.sent < len && now >= p.resume_at;
        short revents = session_poll(s, &p, now, can_send);
        if (revents & (POLLIN | POLLHUP | POLLERR)) {
            size_t before = s->replies;
            if (!session_read_replies(s) && p.sent < len)
                session_die("the server closed the connection after %zu of %zu bytes "
                            "were sent, %zu of %zu replies",
                            p.sent, len, s->replies, s->nexpect);
            if (s->replies != before)
                p.deadline = session_now() + o->timeout_s * NS_PER_S;
        }
        if (can_send && (revents & POLLOUT))
            session_send_some(s, &p, data);
    }
    if (s->replies < want && want != SIZE_MAX)
        session_die("the server closed the connection after %zu of %zu replies",
                    s->replies, want);
}

/* A growable byte string: the bytes one exchange will send. */
struct bytes {
    uint8_t *data;
    size_t len, cap;
};

static void bytes_append(struct bytes *b, const void *src, size_t len)
{
    while (b->cap - b->len < len) {
        b->cap = b->cap ? b->cap * 2 : 4096;
        b->data = client_xrealloc(b->data, b->cap);
    }
    memcpy(b->data + b->len, src, len);
    b->len += len;
}

/* Append m as a frame: the header, then the payload. */
static void bytes_append_frame(struct bytes *b, const struct client_msg *m)
{
    uint8_t h[TOOL_HEADER];
    tool_put_header(h, (uint32_t)m->len);
    bytes_append(b, h, sizeof(h));
    bytes_append(b, m->data, m->len);
}

/* The end of a session: half-close, wait for close, or reset, as asked. */
static void session_finish(struct session *s, size_t sent)
{
    const struct client_options *o = s->opt;
    if (o->reset) {
        if (s->hold_reads) /* -S: the reset waits for stdin to end, as reads do */
            session_slow_reader_wait(s, sent);
        /* -s -R: a FIN first, then the reset.  The server's socket is then
         * in CLOSE_WAIT when the RST comes, and its next write fails with
         * EPIPE at once - the case that raises SIGPIPE. */
        if (o->half_close)
            shutdown(s->fd, SHUT_WR);
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        return;
    }
    if (o->half_close) {
        shutdown(s->fd, SHUT_WR);
        session_exchange(s, NULL, 0, SIZE_MAX);
        if (s->replies < s->nexpect)
            session_die("EOF after %zu of %zu replies", s->replies, s->nexpect);
    } else if (o->raw_len > 0) {
        session_exchange(s, NULL, 0, SIZE_MAX); /* the raw bytes should make it close */
    }
}

void client_run_session(const struct client_options *o, const struct client_msg *expect,
                        size_t nexpect)
{
    struct session s = {.opt = o,
                        .fd = session_connect(o),
                        .expect = expect,
                        .nexpect = nexpect,
                        .hold_reads = o->slow_reader,
                        .slow_until = session_slow_until(o)};
    struct bytes out = {0};
    if (o->go_on_eof)
        session_wait_stdin_eof();
    /* With -s or -R nothing is awaited while sending: session_finish() collects. */
    bool await = !o->half_close && !o->reset;
    if (o->batch) {
        for (size_t i = 0; i < nexpect; i++)
            bytes_append_frame(&out, &expect[i]);
        bytes_append(&out, o->raw, o->raw_len);
        session_exchange(&s, out.data, out.len, await ? nexpect : 0);
    } else {
        for (size_t i = 0; i < nexpect; i++) {
            out.len = 0;
            bytes_append_frame(&out, &expect[i]);
            session_exchange(&s, out.data, out.len, await ? i + 1 : 0);
        }
        if (o->raw_len)
            session_exchange(&s, o->raw, o->raw_len, 0);
    }
    free(out.data);
    session_finish(&s, out.len);
    close(s.fd);
    free(s.in);
}

void client_run_stdin(const struct client_options *o)
{
    struct session s = {
        .opt = o, .fd = session_connect(o), .slow_until = session_slow_until(o)};
    struct client_msg *lines = NULL;
    size_t nlines = 0;
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t n;
    while ((n = getline(&line, &line_cap, stdin)) >= 0) {
        if (n > 0 && line[n - 1] == '\n')
            n--;
        lines = client_xrealloc(lines, (nlines + 1) * sizeof(*lines));
        lines[nlines].data = client_xrealloc(NULL, (size_t)n);
        memcpy(lines[nlines].data, line, (size_t)n);
        lines[nlines].len = (size_t)n;
        nlines++;
        s.expect = lines;
        s.nexpect = nlines;
        struct bytes out = {0};
        bytes_append_frame(&out, &lines[nlines - 1]);
        session_exchange(&s, out.data, out.len, o->half_close ? 0 : nlines);
        free(out.data);
    }
    free(line);
    session_finish(&s, 0);
    close(s.fd);
    for (size_t i = 0; i < nlines; i++)
        free(lines[i].data);
    free(lines);
    free(s.in);
}
