#!/usr/bin/env bats
# 06-aio: workers on io_uring (completion-based I/O, 完成式), from step06 on;
# the unit test of the ring wrapper, the machine without io_uring, and the
# Linux AIO experiment (aio-experiment.c).

load helpers

setup_file() {
    ((STEP_NUM >= 6)) || return 0
    unit_cc san "$BATS_FILE_TMPDIR/uring_test" -Wl,--wrap=syscall \
        "$LAB_TOP/tests/unit/uring_test.c" "$LAB_STEP_DIR/ring.c" "$LAB_STEP_DIR/log.c"
    make -s -C "$LAB_STEP_DIR" aio-experiment
}

teardown() {
    lab_teardown
}

# uring CASE: a case of the ring unit test; it exits 77 without io_uring.
uring() {
    run "$BATS_FILE_TMPDIR/uring_test" "$1"
    ((status != 77)) || skip "$output"
    [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
}

@test "ring: a full submission queue is submitted, not overrun (24 NOPs through 8 entries)" {
    require_step 6 "the io_uring wrapper"
    uring full-sq
}

@test "ring: the completion queue wraps around its slots, every completion seen once" {
    require_step 6 "the io_uring wrapper"
    uring cq-wrap
}

@test "ring: a full SQ the kernel will not take (-EBUSY) neither spins nor overruns: the SQEs wait, in order, and all complete" {
    require_step 6 "the io_uring wrapper"
    uring busy
}

@test "ring: the backlog reaches the kernel before the ring waits (a full SQ of reads that never complete, a NOP behind them)" {
    require_step 6 "the io_uring wrapper"
    uring backlog-sleep
}

@test "ring: the probe tells a supported operation from an unknown one" {
    require_step 6 "the io_uring wrapper"
    uring probe
}

@test "no io_uring (seccomp, as in a container): the server exits 1 and says why" {
    require_step 6 "io_uring"
    local errno want
    for errno in ENOSYS EPERM; do
        run "$LAB_TOP/tests/bin/noiouring" "$errno" "$LAB_SERVER" -p 0
        [ "$status" -eq 1 ] || { echo "$errno: exit $status: $output" >&2; false; }
        want="this kernel has no io_uring (ENOSYS"
        [[ $errno == EPERM ]] && want="io_uring is forbidden here (EPERM)"
        [[ $output == *"io_uring is not available"*"$want"* ]] ||
            { echo "$errno: $output" >&2; false; }
    done
}

@test "a client killed in the middle of a send: its connection goes, the server serves on" {
    require_step 6 "io_uring"
    start_server -v
    # 8 MiB of frames, never read, and a small receive buffer (-B): the
    # server's send is in flight (the socket is full) when the client dies.
    mkfifo "$BATS_TEST_TMPDIR/never"
    "$CLIENT" -p "$SERVER_PORT" -t "$DEADLINE" -B 16384 -b -q -S -n 128 -z 65536 \
        <"$BATS_TEST_TMPDIR/never" >/dev/null 2>"$BATS_TEST_TMPDIR/never.err" 3>&- &
    local pid=$! # the client itself, not a shell running it: it must die
    exec 4>"$BATS_TEST_TMPDIR/never"
    wait_for_line "$BATS_TEST_TMPDIR/never.err" 'sending stalled after'
    kill -KILL "$pid"
    wait_for_line "$SERVER_LOG" '^conn=1 close reason=(reset|error) '
    run client -x still-serving
    [ "$status" -eq 0 ]
    exec 4>&-
}

@test "shutdown with operations in flight: every one is cancelled and completes before anything is freed" {
    require_step 6 "io_uring"
    start_server -g 2 -v
    # Idle connections (a recv in flight each) and one that never reads
    # (a send in flight) when the signal comes.
    mkfifo "$BATS_TEST_TMPDIR/hold.in" "$BATS_TEST_TMPDIR/never"
    "$LAB_TOP/tests/bin/holdconns" -p "$SERVER_PORT" -n 20 <"$BATS_TEST_TMPDIR/hold.in" \
        >/dev/null 3>&- &
    exec 4>"$BATS_TEST_TMPDIR/hold.in"
    client -S -q -b -n 128 -z 65536 <"$BATS_TEST_TMPDIR/never" >/dev/null \
        2>"$BATS_TEST_TMPDIR/never.err" 3>&- &
    exec 5>"$BATS_TEST_TMPDIR/never"
    wait_for_line "$BATS_TEST_TMPDIR/never.err" 'sending stalled after'
    # The teardown's SIGTERM then checks a graceful exit (0) and, under
    # valgrind, that every heap block was freed: the memory of a connection
    # goes only after its cancelled operations have completed.
    signal_server TERM
    expect_eq "exit status" 0 "$SERVER_STATUS"
    grep -q '^summary .* cut=1 ' "$SERVER_LOG"
    exec 4>&- 5>&-
}

@test "a signal stops the server while every worker waits for completions (also under valgrind)" {
    require_step 6 "io_uring"
    start_server -w 2
    # Both workers now wait: in io_uring_enter(), or under valgrind in poll()
    # on the ring (ring.c says why).
    run client -x warm-up
    signal_server TERM
    expect_eq "exit status" 0 "$SERVER_STATUS"
}

@test "2,000 connections at once are all served" {
    require_step 6 "io_uring"
    ulimit -n "$(ulimit -Hn)"
    start_server
    local conns
    conns=$(scaled 2000)
    ((conns >= 200)) || conns=200
    run loadgen -c "$conns" -d 1 -s 32 -n 2 --csv
    [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
    expect_eq "messages" $((conns * 2)) "$(csv_field msgs)"
}

# aio_field CASE COLUMN: a number from aio-experiment's table ($output).
aio_field() {
    awk -F'|' -v c="$1" -v col="$2" 'index($2, c) { gsub(/ /, "", $col); print $col }' <<<"$output"
}

@test "Linux AIO on a socket: PREAD blocks inside io_submit, or fails with EAGAIN; only POLL is asynchronous" {
    require_step 6 "the AIO experiment"
    run "$LAB_STEP_DIR/aio-experiment" -d 500
    [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
    sed "s/^/# /" <<<"$output" >&3 # the table, for the log
    # Generous bounds: the peer's 500 ms delay is what we look for.
    local a_start b_start b_res c_start c_done d_start d_done
    a_start=$(aio_field '(a)' 3) b_start=$(aio_field '(b)' 3) b_res=$(aio_field '(b)' 5)
    c_start=$(aio_field '(c)' 3) c_done=$(aio_field '(c)' 4)
    d_start=$(aio_field '(d)' 3) d_done=$(aio_field '(d)' 4)
    awk -v v="$a_start" 'BEGIN { exit !(v >= 400) }' ||
        { echo "(a) io_submit took $a_start ms: it should block for the peer's 500" >&2; false; }
    awk -v v="$b_start" 'BEGIN { exit !(v < 300) }' && [[ $b_res == -EAGAIN ]] ||
        { echo "(b) took $b_start ms, result $b_res: expected at once, -EAGAIN" >&2; false; }
    awk -v s="$c_start" -v d="$c_done" 'BEGIN { exit !(s < 300 && d >= 400) }' ||
        { echo "(c) POLL: start $c_start ms, done after $c_done ms" >&2; false; }
    awk -v s="$d_start" -v d="$d_done" 'BEGIN { exit !(s < 300 && d >= 400) }' ||
        { echo "(d) aio_read: start $d_start ms, done after $d_done ms" >&2; false; }
}

# recv_mode: pinned, legacy or provided, as this run's flags (-R) choose;
# the server's default is provided where the kernel has it.
recv_mode() {
    if [[ " ${SERVER_FLAGS[*]} " == *" -R pinned "* ]]; then
        echo pinned
    elif [[ " ${SERVER_FLAGS[*]} " == *" -R legacy "* ]]; then
        echo legacy
    else
        echo provided
    fi
}

@test "-R provided and legacy: 300 connections whose bytes arrive at once run the 64-buffer ring dry; it grows, and every reply arrives" {
    require_step 6 "provided buffers"
    [[ $(recv_mode) != pinned ]] || skip "-R pinned: no buffer ring"
    # -D reuseport: the worker accepts all 300 in one go, and arms their
    # recvs in one batch.
    start_server -w 1 -D reuseport -v
    ! grep -q '^io_uring: no buffer rings.*-R pinned$' "$SERVER_LOG" ||
        skip "this kernel has no provided buffers: the server runs -R pinned"
    # Stopped, the server accepts nothing; the kernel completes the 300
    # handshakes, and each connection's first frame waits in its socket.
    # Let go, the worker opens all 300 at once, and each recv it arms finds
    # its bytes already there: the first 64 take the ring's 64 buffers, the
    # others complete with -ENOBUFS.  Each is armed again, after the ring
    # grows.  3,000 round trips: more than the ring's 1,024 buffers even if
    # only every other buffer were not given back: that would stall them too.
    kill -STOP "$SERVER_PID"
    timeout "$DEADLINE" "$LAB_TOP/tools/loadgen" -p "$SERVER_PORT" -c 300 -n 10 -s 64 \
        --csv >"$BATS_TEST_TMPDIR/lg.out" 2>&1 &
    local lg=$!
    all_sent() { (($(recv_queues "$SERVER_PORT" | awk '$1 > 0' | wc -l) == 300)); }
    wait_until "300 connections, each with its first frame waiting" all_sent
    kill -CONT "$SERVER_PID"
    wait "$lg" || { echo "loadgen (exit 124: stuck for ${DEADLINE}s):" >&2; cat "$BATS_TEST_TMPDIR/lg.out" >&2; false; }
    output=$(cat "$BATS_TEST_TMPDIR/lg.out")
    expect_eq "replies" 3000 "$(csv_field msgs)"
    expect_eq "errors" 0 "$(csv_field errors)"
    grep -q 'the buffer ring ran dry (ENOBUFS): 64 more buffers' "$SERVER_LOG" ||
        { echo "the ring never ran dry: the test did not test it" >&2; false; }
}

@test "usage: -R takes pinned, provided or legacy; anything else exits 2 with a message" {
    require_step 6 "the recv buffers (-R)"
    run "$LAB_SERVER" -R foo
    [ "$status" -eq 2 ] || { echo "-R foo: exit $status: $output" >&2; false; }
    [[ $output == *"bad recv buffers 'foo' (pinned, provided or legacy)"* && $output == *usage:* ]] ||
        { echo "$output" >&2; false; }
}
