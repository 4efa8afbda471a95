/*
 * log.c - stderr logging and die().  See log.h for the format contract.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

bool log_verbose = false;

void log_msg(const char *fmt, ...)
{
    /* The whole line, newline included, in one write(): threads log at the
     * same time, and a line written in pieces could interleave with
     * another's.  One write() is not split: to a file Linux writes it at one
     * offset, to a pipe one write of at most PIPE_BUF bytes is atomic. */
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line) - 1, fmt, ap); /* room for the '\n' */
    va_end(ap);
    size_t len = n < 0 ? 0 : (size_t)n;
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2; /* a longer line is cut: this much was stored */
    line[len++] = '\n';
    if (write(STDERR_FILENO, line, len) < 0) {
        /* stderr is gone: there is nobody left to tell */
    }
}

void die(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "server: %s\n", line);
    exit(1);
}
