/*
 * log.h - the server's two kinds of output.
 *
 * stdout carries exactly one line, "listening on HOST:PORT", so a script can
 * wait for it.  Everything else goes to stderr, one event per line, in the
 * key=value format documented in notes/protocol.md (tests grep it).
 *
 * Two tiers of errors: die() is for startup failures only; a problem on
 * one connection is logged with log_msg() and the server goes on.
 */
#ifndef LAB_LOG_H
#define LAB_LOG_H

#include <stdbool.h>

extern bool log_verbose; /* -v: log every connection and every frame */

void log_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/*
 * ENSURE(cond, why): a rule that must hold in every build.  assert() is
 * compiled out by -DNDEBUG; these guard what two threads (or, from step06,
 * the kernel) share, where a broken rule corrupts memory silently instead of
 * failing - so they stay on.  A failure names the rule, then aborts:
 *   server: broken rule: loop_is_owner(l) (loop.c:58): only the owner thread uses its
 * loop
 */
#define ENSURE(cond, why)                                                              \
    ((cond) ? (void)0 : ensure_failed(#cond, (why), __FILE__, __LINE__))
void ensure_failed(const char *cond, const char *why, const char *file, int line)
    __attribute__((noreturn));

/* Log only when -v was given: the hot path must not pay for printing. */
#define log_debug(...)                                                                 \
    do {                                                                               \
        if (log_verbose)                                                               \
            log_msg(__VA_ARGS__);                                                      \
    } while (0)

#endif
