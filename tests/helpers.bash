# tests/helpers.bash - shared by every suite.  Loaded with `load helpers`.
#
# The suites run against one step at a time.  tests/run sets:
#   LAB_STEP_DIR  the step's directory (absolute)
#   LAB_SERVER    the server binary to run (server, or server-san for make san)
#   LAB_MODE      plain | valgrind | san | tsan
#   LAB_SERVER_FLAGS  extra flags for every server a test starts (tests/run
#                 --flags "-w 1"): how one suite runs against several
#                 configurations of a step.  Empty by default.
#
# Rules every test follows (notes/protocol.md has the log format they grep):
#   - servers bind 127.0.0.1 on an ephemeral port (-p 0);
#   - we wait for the "listening on" line by polling with a deadline, never a
#     bare sleep;
#   - every wait has a deadline (client -t, wait_until, stop_server): that is
#     the per-test timeout.  (bats' own BATS_TEST_TIMEOUT is not used: in the
#     bats versions Debian ships, it makes every skipped or failed test wait
#     out the full timeout.)  tests/run adds a per-suite backstop;
#   - teardown always stops what a test started, even when the test failed.

bats_require_minimum_version 1.5.0 # run --separate-stderr

LAB_TOP=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
LAB_STEP_DIR=${LAB_STEP_DIR:?tests/run sets LAB_STEP_DIR}
LAB_SERVER=${LAB_SERVER:-$LAB_STEP_DIR/server}
LAB_MODE=${LAB_MODE:-plain}
# As an array under another name: bash cannot export an array, and turning
# the exported LAB_SERVER_FLAGS into one would drop it from the environment
# of every test (bats runs each in a process of its own).
read -r -a SERVER_FLAGS <<<"${LAB_SERVER_FLAGS:-}"
CLIENT="$LAB_TOP/tools/client"
# tests/run builds the tools; bats run by hand may find them missing, and
# every test would then wait out its deadline for a client that never ran.
for tool in client loadgen; do
    [[ -x $LAB_TOP/tools/$tool ]] || {
        echo "tools/$tool is not built: run make -C tools (tests/run builds it)" >&2
        exit 1
    }
done

# The step number, from the directory name: step03-epoll-et -> 3.
STEP_NAME=$(basename "$LAB_STEP_DIR")
STEP_NUM=$((10#$(echo "$STEP_NAME" | sed -n 's/^step\([0-9][0-9]\).*/\1/p')))

# ASan options for every server under make san.  From step05 without
# LeakSanitizer: its leak check at exit stops every thread with ptrace, and
# in these servers that sometimes never returns: the server hangs after its
# summary line (step06: about 1 graceful stop in 10 under load; once seen in
# step05).  From step05 the leaks are checked by make valgrind instead,
# after every graceful stop ("All heap blocks were freed").
LAB_ASAN_OPTIONS=""
((STEP_NUM >= 5)) && LAB_ASAN_OPTIONS="detect_leaks=0"

# Generous deadlines: 2 shared cores, and valgrind runs code ~20-50x slower.
if [[ $LAB_MODE == valgrind ]]; then
    DEADLINE=120
else
    DEADLINE=30
fi

# ---- unit tests -------------------------------------------------------------

# unit_cc SANITIZER OUT SOURCE...: compile a unit test (tests/unit/) against
# this step's own sources, warnings as errors.  When make runs the suites in
# that sanitizer's mode (SANITIZER is san or tsan; - for none), the test is
# built with it too, by clang when there is one, as the steps' Makefiles do.
unit_cc() {
    local sanitizer=$1 out=$2
    shift 2
    local cc=(cc) flags=(-std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -g -gdwarf-4 -pthread)
    if [[ $LAB_MODE == "$sanitizer" ]]; then
        command -v clang >/dev/null && cc=(clang)
        case $sanitizer in
        san) flags+=(-O1 -fsanitize=address,undefined -fno-sanitize-recover=all) ;;
        tsan) flags+=(-O1 -fsanitize=thread) ;;
        esac
    fi
    "${cc[@]}" "${flags[@]}" -I"$LAB_STEP_DIR" "$@" -o "$out"
}

# ---- skipping by step -------------------------------------------------------

# require_step N "reason": skip unless this step is N or later.
require_step() {
    if ((STEP_NUM < $1)); then
        skip "needs step$(printf %02d "$1"): $2"
    fi
}

# before_step N "reason": skip from step N on (for limits a later step lifts).
before_step() {
    if ((STEP_NUM >= $1)); then
        skip "$2"
    fi
}

# default_config_only: skip in a step's extra configurations (test-configs,
# --flags).  For a test that sets every flag it depends on itself and waits
# out one of the server's bounds (-i, -t, -b): the default
# configuration already runs exactly the same server.
default_config_only() {
    if ((${#SERVER_FLAGS[@]} > 0)); then
        skip "sets its own flags: the default configuration runs it"
    fi
}

# scaled N: N, or a tenth of it (at least 1) under valgrind.  Heavy tests
# scale down under memcheck instead of being skipped.
scaled() {
    if [[ $LAB_MODE == valgrind ]]; then
        local n=$(($1 / 10))
        echo $((n > 0 ? n : 1))
    else
        echo "$1"
    fi
}

# ---- random payloads --------------------------------------------------------

# rand_word N: N random alphanumeric characters, different every run.
rand_word() {
    local out=""
    while ((${#out} < $1)); do
        out+=$(head -c 256 /dev/urandom | tr -dc 'A-Za-z0-9')
    done
    echo "${out:0:$1}"
}

# ---- polling ----------------------------------------------------------------

# wait_until DESCRIPTION COMMAND...: poll COMMAND until it succeeds, up to
# $DEADLINE seconds.  The only waiting primitive the suites use.
wait_until() {
    local what=$1
    shift
    local end=$((SECONDS + DEADLINE))
    until "$@"; do
        if ((SECONDS >= end)); then
            echo "timed out after ${DEADLINE}s waiting for: $what" >&2
            return 1
        fi
        # A graded workspace's stub (lab/lab.h.in) ended the server: what
        # we wait for will never come.
        if [[ -n ${SERVER_LOG:-} && -f $SERVER_LOG ]] && grep -q '^exercise s[0-9][0-9]-.* is not written yet: ' "$SERVER_LOG"; then
            grep -m 1 ' is not written yet: ' "$SERVER_LOG" >&2
            echo "(waiting for: $what)" >&2
            return 1
        fi
        sleep 0.05
    done
}

# wait_for_line FILE REGEX: until a line of FILE matches REGEX (grep -E).
wait_for_line() {
    wait_until "a line matching '$2' in $1" grep -qE -- "$2" "$1"
}

# ---- the server under test ---------------------------------------------------

SERVER_PID=""
SERVER_PORT=""
SERVER_ENV=()  # extra VAR=value settings for the server's environment
SERVER_WRAP=() # a command to run the server through, e.g. (prlimit --nofile=64)

# use_shim LIB [VAR=value...]: preload tests/bin/LIB (an LD_PRELOAD shim:
# shortio.so, acceptfault.so) into the next server, with VAR settings.
use_shim() {
    local lib=$1
    shift
    SERVER_ENV+=(LD_PRELOAD="$LAB_TOP/tests/bin/$lib" "$@")
    # The sanitizers insist on being first in the preload list; the shim has none.
    [[ $LAB_MODE == san ]] &&
        SERVER_ENV+=(ASAN_OPTIONS="verify_asan_link_order=0${LAB_ASAN_OPTIONS:+:$LAB_ASAN_OPTIONS}")
    return 0
}

# log_lines: how many lines the server has written to stderr so far.
log_lines() {
    wc -l <"$SERVER_LOG"
}

# start_server [ARGS...]: start the step's server on an ephemeral port with
# LAB_SERVER_FLAGS and ARGS (ARGS come last, so a test's own flag wins), wait
# for its "listening on" line, and set SERVER_PID, SERVER_PORT, SERVER_OUT
# (its stdout) and SERVER_LOG (its stderr).  Under `make valgrind` the server
# runs inside memcheck.
start_server() {
    VALGRIND_LOG="$BATS_TEST_TMPDIR/valgrind.log"
    local wrap=()
    if [[ $LAB_MODE == valgrind ]]; then
        # --fair-sched=yes: memcheck runs one thread at a time, and by
        # default a thread that spins (-b) can starve the others for long
        # stretches; with it, runnable threads take turns.
        wrap=(valgrind --error-exitcode=99 --leak-check=full --fair-sched=yes
            --errors-for-leak-kinds=definite --show-leak-kinds=definite
            --log-file="$VALGRIND_LOG")
    fi
    # Plain mode: glibc fills freed memory with 0xa5 (MALLOC_PERTURB_), so
    # memory used after free() - by the server, or by the kernel through a
    # buffer it was handed (step06) - shows as corrupted replies instead of
    # passing by luck.  (valgrind and the sanitizers bring allocators of
    # their own.)
    local perturb=()
    [[ $LAB_MODE == plain ]] && perturb=(env MALLOC_PERTURB_=165)
    if ! start_program "${SERVER_WRAP[@]}" "${wrap[@]}" "${perturb[@]}" "$LAB_SERVER" "${SERVER_FLAGS[@]}" "$@"; then
        # From step06 a machine without io_uring cannot run the server: the
        # test is skipped, with the server's own reason.
        local why
        why=$(grep -o 'io_uring is not available.*' "$SERVER_LOG" | head -n 1)
        [[ -n $why ]] && skip "$why"
        return 1
    fi
    SERVER_GRACEFUL=$((STEP_NUM >= 5)) # from step05 SIGTERM stops it gracefully
}

# start_program PROGRAM [ARGS...]: start any server that prints the lab's
# "listening on" line (a step, tools/ref-echo, tests/bin/faulty-echo) with
# -p 0 and ARGS, as start_server does, but never under valgrind.
start_program() {
    SERVER_GRACEFUL=0
    SERVER_OUT="$BATS_TEST_TMPDIR/server.out"
    SERVER_LOG="$BATS_TEST_TMPDIR/server.log"
    # 3>&-: bats waits for every process holding its fd 3 before it ends a
    # test; a server that inherited it would hang the suite.
    local san_env=()
    [[ $LAB_MODE == san && -n $LAB_ASAN_OPTIONS ]] && san_env=(ASAN_OPTIONS="$LAB_ASAN_OPTIONS")
    env "${san_env[@]}" "${SERVER_ENV[@]}" "$@" -p 0 >"$SERVER_OUT" 2>"$SERVER_LOG" 3>&- &
    SERVER_PID=$!
    local end=$((SECONDS + DEADLINE))
    until grep -q '^listening on ' "$SERVER_OUT"; do
        if ! kill -0 "$SERVER_PID" 2>/dev/null || ((SECONDS >= end)); then
            echo "server did not start: $* -p 0" >&2
            cat "$SERVER_LOG" >&2
            SERVER_PID=""
            return 1
        fi
        sleep 0.05
    done
    # 127.0.0.1:PORT, or [::1]:PORT for an IPv6 host.
    SERVER_PORT=$(sed -n 's/^listening on .*:\([0-9][0-9]*\)$/\1/p' "$SERVER_OUT")
    [[ -n $SERVER_PORT ]] || { echo "bad listening line: $(cat "$SERVER_OUT")" >&2; return 1; }
}

# server_sockets_and_threads: for a failure message - both ends' windows
# and queues (ss; Recv-Q on the server's line is input it has not read),
# and each server thread's state and kernel wait (wchan), to tell a server
# that stopped reading, or is stuck, from a kernel that stopped offering
# it bytes.
server_sockets_and_threads() {
    ! command -v ss >/dev/null || ss -tnmi "( sport = :$SERVER_PORT or dport = :$SERVER_PORT )" >&2
    local t
    for t in /proc/"$SERVER_PID"/task/*; do
        [[ -r $t/stat ]] || continue
        echo "thread $(cat "$t/comm" 2>/dev/null): state $(awk '{print $3}' "$t/stat") wchan $(cat "$t/wchan" 2>/dev/null)" >&2
    done
    echo "server log: $(log_lines) lines" >&2
}

# server_alive: the server process still exists.
server_alive() {
    [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null
}

# server_status_field FIELD: a field of /proc/PID/status (VmRSS, VmPeak, ...)
# in kB.  Valgrind runs the program in its own process, so SERVER_PID is the
# right pid in every mode.
server_status_field() {
    awk -v f="$1:" '$1 == f {print $2}' "/proc/$SERVER_PID/status"
}

# server_cpu_us: the server's CPU time so far, all threads, in microseconds.
server_cpu_us() {
    local total=0 ns f
    for f in /proc/"$SERVER_PID"/task/*/schedstat; do
        read -r ns _ <"$f" && total=$((total + ns))
    done
    echo $((total / 1000))
}

# expect_no_spin WHAT: over a one-second window the server uses less than
# 0.3 s of CPU (a busy loop uses all of it).
expect_no_spin() {
    local cpu0 cpu1
    cpu0=$(server_cpu_us)
    sleep 1 # a measurement window, not synchronisation
    cpu1=$(server_cpu_us)
    ((cpu1 - cpu0 < 300000)) || { echo "$1 used $((cpu1 - cpu0)) us of CPU in 1 s" >&2; return 1; }
}

# expect_sheds_excess: the server was started under prlimit --nofile=64.
# Hold 100 connections: it must accept and close the ones it has no fd for
# (at least 30, so their clients are not left hanging) and log each, not
# spin once the backlog is empty, and serve again once the held ones close.
expect_sheds_excess() {
    local dir=$BATS_TEST_TMPDIR
    mkfifo "$dir/hold.in"
    "$LAB_TOP/tests/bin/holdconns" -p "$SERVER_PORT" -n 100 -e 30 \
        <"$dir/hold.in" >"$dir/hold.out" 3>&- &
    local hold_pid=$!
    exec 4>"$dir/hold.in"
    wait_for_line "$dir/hold.out" '^closed [0-9]+ of 100$'
    grep -qE '^closed ([3-9][0-9]|100) of 100$' "$dir/hold.out" ||
        { echo "holdconns: $(cat "$dir/hold.out")" >&2; return 1; }
    grep -q 'accept: Too many open files: dropped a connection' "$SERVER_LOG"
    expect_no_spin "the server at its fd limit"
    server_alive
    exec 4>&- # the held connections close: fds come back
    wait "$hold_pid"
    # ... once the server has seen the closes (under valgrind that takes a
    # while): until then a new connection is still shed, as it should be.
    served_again() { client -x served-again >/dev/null 2>&1; }
    wait_until "the server to serve a new connection once the held ones closed" served_again
}

# expect_flood_bounded FRAMES: a client writes FRAMES frames of 64 KiB in one
# go (-b) and reads nothing until its sending stalls (-S).  By then the
# server's RSS must have grown by less than 24 MiB (checked in plain mode:
# valgrind and the sanitizers add memory of their own), and once the client
# reads, every reply must arrive, byte for byte (-x).
expect_flood_bounded() {
    local dir=$BATS_TEST_TMPDIR rss0 rss1
    rss0=$(server_status_field VmRSS)
    mkfifo "$dir/go"
    client -S -x -q -b -n "$1" -z 65536 <"$dir/go" 2>"$dir/slow.err" 3>&- &
    local client_pid=$!
    exec 4>"$dir/go"
    wait_for_line "$dir/slow.err" 'sending stalled after'
    rss1=$(server_status_field VmRSS)
    if [[ $LAB_MODE == plain ]] && ((rss1 - rss0 >= 24 * 1024)); then
        echo "server RSS grew by $((rss1 - rss0)) kB: $(cat "$dir/slow.err")" >&2
        return 1
    fi
    exec 4>&- # now read
    wait "$client_pid" || { cat "$dir/slow.err" >&2; return 1; }
}

# tcp_rx_queues STATE PORT: the receive queue of each local socket of PORT
# in STATE (as /proc/net/tcp writes it: 01 established, 0A listening).  For
# an established socket, the bytes that have arrived and the server has not
# read yet; for a listening socket, the connections whose handshake the
# kernel has completed and the server has not accepted yet.  (awk reads the
# file in large blocks; bash's `read` would read /proc/net/tcp a byte at a
# time, and the kernel regenerates it for every read: minutes with 4,000
# sockets.)
tcp_rx_queues() {
    awk -v state="$1" -v port="$(printf '%04X' "$2")" '
        function hex(s,    i, v) { v = 0
            for (i = 1; i <= length(s); i++) v = v * 16 + index("0123456789ABCDEF", substr(s, i, 1)) - 1
            return v }
        $4 == state { split($2, local, ":"); split($5, q, ":")
            if (local[2] == port) print hex(q[2]) }' /proc/net/tcp
}

# recv_queues PORT: for each established server-side socket of PORT, the
# bytes that have arrived but that the server has not read yet.
recv_queues() {
    tcp_rx_queues 01 "$1"
}

# accept_queues PORT: for each listening socket of PORT, the connections
# waiting in it to be accepted.
accept_queues() {
    tcp_rx_queues 0A "$1"
}

# start_stuck_reuseport ARGS...: a -D reuseport server of two workers (and
# ARGS), one of them busy: a client's frames of 1 s of CPU each (-b), all in
# one read, for STUCK_S seconds (5; 20 under valgrind, which is many times
# slower at everything the test does meanwhile).  It sets every flag the
# test depends on, so it runs in the default configuration only.
start_stuck_reuseport() {
    default_config_only
    STUCK_S=5
    [[ $LAB_MODE == valgrind ]] && STUCK_S=20
    start_server -w 2 -D reuseport -b 1000000 "$@" -v
    client -b -q -n "$STUCK_S" x >/dev/null 2>&1 3>&- &
    wait_for_line "$SERVER_LOG" '^conn=[0-9]* frame len=1$'
}

# check_server_reports: fail if memcheck or a sanitizer reported anything.
check_server_reports() {
    if [[ -f ${VALGRIND_LOG:-} ]]; then
        if ! grep -q 'ERROR SUMMARY: 0 errors' "$VALGRIND_LOG"; then
            echo "memcheck reported errors:" >&2
            cat "$VALGRIND_LOG" >&2
            return 1
        fi
    fi
    if grep -qE 'ERROR: (Address|Leak|Thread)Sanitizer|runtime error:|WARNING: ThreadSanitizer' \
        "$SERVER_LOG"; then
        echo "sanitizer report in the server's stderr:" >&2
        cat "$SERVER_LOG" >&2
        return 1
    fi
}

# signal_server SIGNAL: send SIGNAL to the server, wait (up to DEADLINE) for
# it to exit, and set SERVER_STATUS to its exit status.  Checks the memcheck
# and sanitizer reports; from step05 (a step's server: start_server), also
# that memcheck found every heap block freed.  The server is gone afterwards.
signal_server() {
    [[ -n $SERVER_PID ]] || return 0
    local pid=$SERVER_PID
    SERVER_PID=""
    SERVER_STATUS=0
    kill -CONT "$pid" 2>/dev/null || true # in case a test left it stopped
    kill "-$1" "$pid" 2>/dev/null || true
    local end=$((SECONDS + DEADLINE))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= end)); then
            kill -KILL "$pid" 2>/dev/null || true
            echo "server ignored SIG$1 for ${DEADLINE}s" >&2
            break
        fi
        sleep 0.05
    done
    wait "$pid" 2>/dev/null || SERVER_STATUS=$?
    check_server_reports || return 1
    if ((${SERVER_GRACEFUL:-0})) && ((SERVER_STATUS == 0)) && [[ $LAB_MODE == valgrind ]] &&
        ! grep -q 'All heap blocks were freed' "$VALGRIND_LOG"; then
        echo "graceful shutdown: memcheck found memory still in use at exit:" >&2
        grep -A3 'HEAP SUMMARY' "$VALGRIND_LOG" >&2
        return 1
    fi
}

# stop_server: SIGTERM and signal_server's checks.  From step05 SIGTERM is a
# graceful shutdown: a step's server must exit 0.  Safe to call twice.
stop_server() {
    [[ -n $SERVER_PID ]] || return 0
    signal_server TERM || return 1
    if ((${SERVER_GRACEFUL:-0})) && ((SERVER_STATUS != 0)); then
        echo "graceful shutdown: the server exited $SERVER_STATUS, not 0" >&2
        return 1
    fi
}

# ---- clients ----------------------------------------------------------------

# client ARGS...: tools/client against the server under test.
client() {
    "$CLIENT" -p "$SERVER_PORT" -t "$DEADLINE" "$@"
}

# loadgen ARGS...: tools/loadgen against the server under test.
loadgen() {
    "$LAB_TOP/tools/loadgen" -p "$SERVER_PORT" "$@"
}

# csv_field NAME: the value of column NAME in loadgen --csv output ($output).
csv_field() {
    awk -F, -v name="$1" 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i }
        NR == 2 { print $col[name] }' <<<"$output"
}

# ---- teardown ---------------------------------------------------------------

# Every suite's teardown calls this: stop the server, kill anything a test left
# in the background, and show the server's log when the test failed.
lab_teardown() {
    # The clients first (not the server, which is a background job too: from
    # step05 a second SIGTERM would mean "exit at once"), then the server.
    local bg
    bg=$(jobs -p | grep -vx "${SERVER_PID:-none}")
    [[ -n $bg ]] && kill $bg 2>/dev/null
    local rc=0
    stop_server || rc=$?
    if [[ -n ${BATS_TEST_COMPLETED:-} ]] && ((rc == 0)); then
        return 0
    fi
    if [[ -s ${SERVER_LOG:-/nonexistent} ]]; then
        echo "--- server stderr (last 20 lines) ---" >&2
        tail -n 20 "$SERVER_LOG" >&2
    fi
    return $rc
}

# expect_eq WHAT EXPECTED ACTUAL: fail, saying what was expected and what came.
expect_eq() {
    if [[ "$2" != "$3" ]]; then
        printf '%s: expected [%s], got [%s]\n' "$1" "$2" "$3" >&2
        return 1
    fi
}
