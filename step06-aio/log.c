/*
 * log.c - stderr logging and die().  See log.h for the format contract.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

bool log_verbose = false;

void log_msg(const char *fmt, ...)
{
    /* One vfprintf per line: stderr is unbuffered, so a single call keeps
     * concurrent lines from interleaving mid-line. */
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", line);
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
