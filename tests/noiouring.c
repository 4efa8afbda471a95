/*
 * tests/noiouring.c - run a program where io_uring is not available, the way
 * a container's seccomp profile (or an old kernel) makes it unavailable.
 *
 *   noiouring ERRNO PROGRAM [ARGS...]
 *
 * Installs a seccomp filter in which io_uring_setup() fails with ERRNO
 * (ENOSYS: "this kernel has none"; EPERM: "forbidden here"), then execs
 * PROGRAM, which inherits the filter.  Every other system call is allowed.
 * Used by tests/06-aio.bats to check that step06 says why it cannot start.
 */
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: noiouring ENOSYS|EPERM PROGRAM [ARGS...]\n");
        return 2;
    }
    unsigned err = strcmp(argv[1], "EPERM") == 0 ? EPERM : ENOSYS;
    struct sock_filter filter[] = {
        /* load the system call number */
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        /* io_uring_setup: fail with err; anything else: allow */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (err & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof(filter) / sizeof(filter[0]),
                              .filter = filter};
    /* Without privileges, a filter needs no_new_privs: the exec'd program
     * cannot gain any to escape it. */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0) {
        perror("noiouring: seccomp");
        return 1;
    }
    execvp(argv[2], argv + 2);
    perror("noiouring: exec");
    return 127;
}
