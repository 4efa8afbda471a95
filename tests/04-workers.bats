#!/usr/bin/env bats
# 04-workers: an acceptor thread hands connections to worker threads, each
# with its own epoll loop (主从 Reactor), from step04 on.  Also the flaw of
# the design this step replaces (tests/forgetful-worker.c), and the unit
# test of the owner-thread assertions.

load helpers

setup_file() {
    ((STEP_NUM >= 4)) || return 0
    # -DNDEBUG: the ownership checks must hold where assert() is compiled out.
    unit_cc - "$BATS_FILE_TMPDIR/owner_test" -DNDEBUG "$LAB_TOP/tests/unit/owner_test.c" \
        "$LAB_STEP_DIR/loop.c" "$LAB_STEP_DIR/pool.c" "$LAB_STEP_DIR/log.c"
    if [[ -f $LAB_STEP_DIR/handoff.c ]]; then
        unit_cc tsan "$BATS_FILE_TMPDIR/handoff_test" -Wl,--wrap=pipe2 \
            "$LAB_TOP/tests/unit/handoff_test.c" "$LAB_STEP_DIR/handoff.c" "$LAB_STEP_DIR/log.c"
    fi
}

teardown() {
    lab_teardown
}

# worker_of CONN_ID: the worker the -v log says owns connection CONN_ID.
worker_of() {
    sed -n "s/^conn=$1 open worker=\([0-9]*\) .*/\1/p" "$SERVER_LOG"
}

# thread_cpu_us NAME: CPU time so far of the server's thread called NAME.
thread_cpu_us() {
    local t ns
    for t in /proc/"$SERVER_PID"/task/*; do
        [[ $(cat "$t/comm") == "$1" ]] || continue
        read -r ns _ <"$t/schedstat"
        echo $((ns / 1000))
        return 0
    done
    echo "no thread named $1" >&2
    return 1
}

# talk_after_pause: a client sends "first", thinks for a second, then sends
# "second".  Prints the replies it got; fails if it did not get both.
talk_after_pause() {
    local dir=$BATS_TEST_TMPDIR
    mkfifo "$dir/talk.in"
    "$CLIENT" -p "$SERVER_PORT" -t 3 <"$dir/talk.in" >"$dir/talk.out" 2>&1 3>&- &
    local pid=$!
    exec 5>"$dir/talk.in"
    echo first >&5
    sleep 1 # the client thinks for a second: the scenario, not a wait for the server
    echo second >&5
    exec 5>&-
    local rc=0
    wait "$pid" || rc=$?
    cat "$dir/talk.out"
    return $rc
}

@test "workers: with -w 3 the server runs the acceptor and three named worker threads" {
    require_step 4 "worker threads"
    start_server -w 3
    local names
    names=$(cat /proc/"$SERVER_PID"/task/*/comm | grep -c '^worker-[0-9]*$')
    expect_eq "worker threads" 3 "$names"
    # The main thread is the acceptor; (TSan adds a thread of its own).
    grep -qvx 'worker-[0-9]*' /proc/"$SERVER_PID"/task/*/comm
}

# bats test_tags=lab:s04-take
@test "workers: with -w 2 -D rr, 8 long-lived connections are dealt out 4 and 4" {
    require_step 4 "worker threads"
    start_server -w 2 -D rr -v
    mkfifo "$BATS_TEST_TMPDIR/hold.in"
    "$LAB_TOP/tests/bin/holdconns" -p "$SERVER_PORT" -n 8 \
        <"$BATS_TEST_TMPDIR/hold.in" >"$BATS_TEST_TMPDIR/hold.out" 3>&- &
    exec 4>"$BATS_TEST_TMPDIR/hold.in"
    wait_for_line "$SERVER_LOG" '^conn=8 open '
    local w0 w1
    w0=$(grep -c '^conn=[0-9]* open worker=0 ' "$SERVER_LOG")
    w1=$(grep -c '^conn=[0-9]* open worker=1 ' "$SERVER_LOG")
    expect_eq "connections on worker 0 and worker 1" "4 4" "$w0 $w1"
    exec 4>&-
}

@test "workers: under load every worker thread accumulates CPU time" {
    require_step 4 "worker threads"
    start_server -w 2 -D rr
    local a0 b0 a1 b1
    a0=$(thread_cpu_us worker-0) b0=$(thread_cpu_us worker-1)
    run loadgen -c 8 -d 4 -s 256 -n "$(scaled 2000)" --csv
    [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
    a1=$(thread_cpu_us worker-0) b1=$(thread_cpu_us worker-1)
    # Each owns 4 of the 8 connections: each did real work (at least 1 ms).
    ((a1 - a0 >= 1000 && b1 - b0 >= 1000)) ||
        { echo "CPU used under load: worker-0 $((a1 - a0)) us, worker-1 $((b1 - b0)) us" >&2; false; }
}

# bats test_tags=lab:s04-take
@test "workers: a connection reset on one worker does not disturb a connection on another" {
    require_step 4 "worker threads"
    start_server -w 2 -D rr -v
    local dir=$BATS_TEST_TMPDIR
    mkfifo "$dir/a.in"
    client <"$dir/a.in" >"$dir/a.out" 3>&- & # conn=1: worker 0
    exec 4>"$dir/a.in"
    echo before >&4
    wait_for_line "$dir/a.out" '^before$'
    # conn=2 (worker 1): 4 MiB of frames, then a reset while replies are due.
    run client -R -b -q -n 64 -z 65536
    wait_for_line "$SERVER_LOG" '^conn=2 close reason=(reset|error) '
    expect_eq "workers of conn 1 and conn 2" "0 1" "$(worker_of 1) $(worker_of 2)"
    echo after >&4 # conn 1 is untouched and still served
    wait_for_line "$dir/a.out" '^after$'
    ! grep -q '^conn=1 close' "$SERVER_LOG" || { echo "conn 1 was closed" >&2; false; }
    exec 4>&-
}

# bats test_tags=lab:s04-push
@test "workers: every connection is opened by exactly one worker, none lost (100 clients, any -D)" {
    require_step 4 "worker threads"
    start_server -v
    run loadgen -c 100 -d 1 -s 32 -n 2 --csv
    [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
    local opens ids
    opens=$(grep -c '^conn=[0-9]* open worker=' "$SERVER_LOG")
    ids=$(sed -n 's/^conn=\([0-9]*\) open .*/\1/p' "$SERVER_LOG" | sort -un | wc -l)
    # loadgen opens one more connection first, to find the address.
    ((opens >= 100 && opens == ids)) || { echo "$opens open lines, $ids distinct ids" >&2; false; }
}

# bats test_tags=lab:s04-push
@test "handoff: when a worker is stuck, a full queue turns connections away with a log line, and loses none" {
    require_step 4 "worker threads"
    [[ " ${SERVER_FLAGS[*]} " != *" -D reuseport "* ]] ||
        skip "with -D reuseport there is no queue: the connections wait in the kernel (the -D reuseport test)"
    [[ " ${SERVER_FLAGS[*]} " != *" -a "* ]] ||
        skip "with -a the work runs at application threads: no worker is stuck"
    ulimit -n "$(ulimit -Hn)" # 1,124 connections, an fd each
    # One worker, busy for 5 s: five frames of 1 s of CPU each, all in one
    # read.  Under valgrind the acceptor is many times slower to accept the
    # 1,124 connections below, so the worker stays busy for 20 s there.
    local busy=5
    [[ $LAB_MODE == valgrind ]] && busy=20
    start_server -w 1 -b 1000000 -v
    client -b -q -n "$busy" x >/dev/null 2>&1 3>&- &
    wait_for_line "$SERVER_LOG" '^conn=1 frame len=1$'
    # Its queue holds 1,024 connections: the other 100 are closed at once.
    mkfifo "$BATS_TEST_TMPDIR/hold.in"
    "$LAB_TOP/tests/bin/holdconns" -p "$SERVER_PORT" -n 1124 -e 100 \
        <"$BATS_TEST_TMPDIR/hold.in" >"$BATS_TEST_TMPDIR/hold.out" 3>&- &
    exec 4>"$BATS_TEST_TMPDIR/hold.in"
    wait_for_line "$BATS_TEST_TMPDIR/hold.out" '^closed [0-9]+ of 1124$'
    run grep -c "error=busy every worker's queue is full: closed" "$SERVER_LOG"
    expect_eq "connections turned away" 100 "$output"
    # Once the worker is free it opens every queued one: 1 + 1,024 opens.
    all_opened() { (($(grep -c '^conn=[0-9]* open ' "$SERVER_LOG") == 1025)); }
    wait_until "the worker to open the 1,024 queued connections" all_opened
    exec 4>&-
}

# bats test_tags=lab:s04-take
@test "handoff: a connection that arrives while its worker empties its wake pipe is still opened (drain, then swap)" {
    require_step 4 "worker threads"
    before_step 5 "from step05 an eventfd mailbox replaces the pipe; its unit test covers the same race"
    # tests/slowpipe.c holds the window open: each pipe read says so on
    # stderr, then sleeps 500 ms.  Client A wakes the worker; while it is in
    # its pipe read, client B is handed off and writes its wake byte.  Drain
    # first, and the swap that follows takes B too; swap first, and the
    # drain eats B's byte: B waits in the queue, and nothing wakes the worker.
    use_shim slowpipe.so SLOWPIPE_MS=500
    start_server -w 1 -D rr -v
    client first >/dev/null 2>&1 3>&- &
    wait_for_line "$SERVER_LOG" '^slowpipe: read'
    run client -t 10 second
    [ "$status" -eq 0 ] || { echo "B, handed off during the drain: $output" >&2; false; }
    expect_eq "B's reply" second "$output"
}

# bats test_tags=lab:s04-push
@test "handoff: a shared queue never holds a connection whose wake byte the pipe refused" {
    require_step 4 "worker threads"
    before_step 5 "from step05 an eventfd mailbox replaces the queue and its pipe"
    # tests/unit/handoff_test.c: a two-page pipe, the read position deep in
    # its first page, then pushes until the queue is full: the pipe must
    # hold a byte for every queued connection.
    run "$BATS_FILE_TMPDIR/handoff_test"
    [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
}

@test "-D reuseport: each worker listens on the port itself, and the kernel spreads 1,000 connections over all four" {
    require_step 4 "worker threads"
    start_server -w 4 -D reuseport -v
    # Four listening sockets on one port: one per worker, none for an
    # acceptor.
    expect_eq "listening sockets on the port" 4 "$(accept_queues "$SERVER_PORT" | wc -l)"
    local total
    total=$(scaled 1000)
    run loadgen --churn -c 8 -n $((total / 8)) --csv
    [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
    expect_eq "errors" 0 "$(csv_field errors)"
    # The kernel hashes each new connection's addresses (the client's port
    # changes every time) to one of the sockets.  Each worker gets about a
    # quarter; under a tenth would be more than 10 standard deviations off
    # for 1,000 connections: a hash that spreads them never fails this.
    local w n
    for w in 0 1 2 3; do
        n=$(grep -c "^conn=[0-9]* open worker=$w " "$SERVER_LOG")
        ((n >= total / 10)) || {
            echo "worker $w opened $n of $total connections:" >&2
            grep -o 'open worker=[0-9]*' "$SERVER_LOG" | sort | uniq -c >&2
            false
        }
    done
}

@test "-D reuseport: a connection the kernel gives a stuck worker waits in its accept queue, never turned away, and is served once the worker is free" {
    require_step 4 "worker threads"
    # As "handoff: when a worker is stuck" above: one worker busy for 5 s.
    start_stuck_reuseport
    # 40 more connections: the kernel hashes about half of them to the stuck
    # worker's socket (all 40 to the free one: one chance in 2^40).  It
    # completes their handshakes, and they wait in that socket's accept
    # queue - no acceptor sees them, no other worker can take them.
    mkfifo "$BATS_TEST_TMPDIR/hold.in"
    "$LAB_TOP/tests/bin/holdconns" -p "$SERVER_PORT" -n 40 \
        <"$BATS_TEST_TMPDIR/hold.in" >"$BATS_TEST_TMPDIR/hold.out" 3>&- &
    exec 4>"$BATS_TEST_TMPDIR/hold.in"
    wait_for_line "$BATS_TEST_TMPDIR/hold.out" '^connected 40$'
    waiting() { (($(accept_queues "$SERVER_PORT" | sort -n | tail -n 1) > 0)); }
    wait_until "connections waiting in the stuck worker's accept queue" waiting
    # Unlike -D rr, nothing is turned away: once the worker is free it
    # accepts and opens every one (1 + 40 opens).
    all_opened() { (($(grep -c '^conn=[0-9]* open ' "$SERVER_LOG") == 41)); }
    wait_until "the workers to open all 41 connections" all_opened
    ! grep -q 'error=busy' "$SERVER_LOG" || { grep 'error=busy' "$SERVER_LOG" >&2; false; }
    exec 4>&-
}

@test "-b: every reply costs at least that much of the server's CPU time" {
    require_step 4 "simulated work (-b)"
    start_server -b 2000
    run loadgen -c 1 -n 50 -s 64 -P "$SERVER_PID" --csv
    [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
    local per
    per=$(printf '%.0f' "$(csv_field server_cpu_us_per_msg)")
    ((per >= 1800)) || { echo "server CPU per message: $per us, -b asked for 2000" >&2; false; }
}

@test "usage: -w, -D and -b are checked: 0, 257, abc, foo exit 2 with a message" {
    require_step 4 "worker threads"
    local bad
    for bad in "-w 0" "-w 257" "-w abc" "-D foo" "-b abc" "-b 1000001"; do
        # shellcheck disable=SC2086 # split "-w 0" into flag and value
        run "$LAB_SERVER" $bad
        [ "$status" -eq 2 ] || { echo "$bad: exit $status" >&2; false; }
        [[ $output == *"bad "* && $output == *usage:* ]] || { echo "$bad: $output" >&2; false; }
    done
}

@test "forgetful worker: the step serves a client that sends again after a pause" {
    require_step 4 "worker threads"
    start_server
    run talk_after_pause
    [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
    expect_eq "replies" "$(printf 'first\nsecond')" "$output"
}

@test "forgetful worker: the queue-and-condition-variable design never answers after the pause" {
    require_step 4 "the design step04 replaces"
    default_config_only # a program of its own, whatever the step's flags
    # tests/forgetful-worker.c: workers pop an fd, read it until EAGAIN, and
    # forget it.  The same client as above gets no reply to "second".
    start_program "$LAB_TOP/tests/bin/forgetful-worker"
    run talk_after_pause
    [ "$status" -ne 0 ] || { echo "the model answered both: $output" >&2; false; }
    [[ $output != *second* ]] || { echo "the model answered after the pause: $output" >&2; false; }
}

@test "owner: a loop or a pool used by a thread that does not own it stops the server, in every build" {
    require_step 4 "owner threads"
    local what
    for what in loop pool; do
        run "$BATS_FILE_TMPDIR/owner_test" "$what"
        [ "$status" -eq 134 ] || { echo "$what: exit $status, expected SIGABRT (134): $output" >&2; false; }
        [[ $output == *"broken rule: "*"only its owner"* || $output == *"broken rule: "*"only the owner"* ]] ||
            { echo "$what: $output" >&2; false; }
    done
    run "$BATS_FILE_TMPDIR/owner_test" own-thread
    [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
}
