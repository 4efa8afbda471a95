#!/usr/bin/env bats
# 03-epoll: one thread serves many clients with edge-triggered epoll, ring
# buffers and a memory pool (step03 on).  Also the unit tests of the ring
# buffer and the pool, compiled against this step's own buffer.c and pool.c.

load helpers

setup_file() {
    ((STEP_NUM >= 3)) || return 0
    local t
    for t in ring pool; do
        unit_cc san "$BATS_FILE_TMPDIR/${t}_test" "$LAB_TOP/tests/unit/${t}_test.c" \
            "$LAB_STEP_DIR/buffer.c" "$LAB_STEP_DIR/pool.c" "$LAB_STEP_DIR/log.c"
    done
    unit_cc san "$BATS_FILE_TMPDIR/loop_test" "$LAB_TOP/tests/unit/loop_test.c" \
        "$LAB_STEP_DIR/loop.c" "$LAB_STEP_DIR/log.c"
}

teardown() {
    lab_teardown
}

# unit NAME CASE: run a unit-test case (under memcheck in `make valgrind`).
unit() {
    local bin="$BATS_FILE_TMPDIR/$1_test"
    if [[ $LAB_MODE == valgrind ]]; then
        run valgrind -q --error-exitcode=99 --leak-check=full "$bin" "$2"
    else
        run "$bin" "$2"
    fi
    [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
}

# ---- many clients, one thread --------------------------------------------

# bats test_tags=lab:s03-drain
@test "concurrency: a second client is served while the first stays connected" {
    require_step 3 "one thread serves many clients"
    start_server
    mkfifo "$BATS_TEST_TMPDIR/a.in"
    client <"$BATS_TEST_TMPDIR/a.in" >"$BATS_TEST_TMPDIR/a.out" 3>&- &
    exec 4>"$BATS_TEST_TMPDIR/a.in"
    echo first >&4
    wait_for_line "$BATS_TEST_TMPDIR/a.out" '^first$'
    run client second # A is still connected and idle
    [ "$status" -eq 0 ]
    expect_eq "B's reply while A is connected" second "$output"
    echo third >&4
    wait_for_line "$BATS_TEST_TMPDIR/a.out" '^third$'
    exec 4>&-
}

# bats test_tags=lab:s03-drain
@test "concurrency: 200 concurrent clients doing round trips are all served" {
    require_step 3 "one thread serves many clients"
    start_server
    run loadgen -c 200 -d 1 -s 64 -n "$(scaled 50)" --csv
    [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
    expect_eq "messages" $((200 * $(scaled 50))) "$(csv_field msgs)"
}

# bats test_tags=lab:s03-drain
@test "concurrency: 1,000 connections open at once are all served" {
    require_step 3 "one thread serves many clients"
    ulimit -n "$(ulimit -Hn)" # the server needs an fd per connection
    start_server
    local conns
    conns=$(scaled 1000)
    ((conns >= 200)) || conns=200
    run loadgen -c "$conns" -d 1 -s 32 -n 2 --csv
    [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
    expect_eq "messages" $((conns * 2)) "$(csv_field msgs)"
}

# bats test_tags=lab:s03-drain
@test "concurrency: interleaved pipelined clients each get their own replies, in order" {
    require_step 3 "one thread serves many clients"
    start_server
    # loadgen stamps every payload with its connection and sequence number:
    # a reply on the wrong connection or out of order fails the run.
    run loadgen -c 8 -d 32 -s 300 -t 2 -n "$(scaled 400)" --csv
    [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
    expect_eq "errors" 0 "$(csv_field errors)"
}

# ---- backpressure, fairness, file descriptors ------------------------------

# bats test_tags=lab:s03-drain
@test "backpressure: a client offering 48 MiB without reading holds the server to bounded memory, then gets every byte" {
    start_server
    # 768 frames of 64 KiB.  High-water mark (4 MiB) + one frame + ring
    # slack: well under 24 MiB.  A server that kept reading would hold most
    # of the 48 MiB.
    expect_flood_bounded 768
}

# bats test_tags=lab:s03-flush
@test "backpressure: frames larger than the high-water mark come back, one at a time and pipelined" {
    # 5 MB replies go past the 4 MiB high-water mark: reading pauses, and must
    # resume once they are sent, even when a direct write sent them all at
    # once and so no EPOLLOUT ever came.
    start_server -m 16777216
    run client -x -q -n 4 -z 5000000
    [ "$status" -eq 0 ] || { echo "one at a time: $output" >&2; false; }
    run client -x -q -b -n 4 -z 5000000
    [ "$status" -eq 0 ] || { echo "pipelined: $output" >&2; false; }
}

# bats test_tags=lab:s03-flush
@test "-m: a frame of tens of MiB is echoed when -m allows it" {
    local size
    size=$(scaled $((48 << 20)))
    start_server -m $((64 << 20))
    run client -x -q -z "$size"
    [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
}

# bats test_tags=lab:s03-drain
@test "memory: 2,000 clients that each send only a header announcing 4 GiB cost the server a few KiB each" {
    require_step 3 "one thread serves many clients"
    ulimit -n "$(ulimit -Hn)"
    start_server -m 4294967295 # every header below is a legal, unfinished frame
    local n vm0 rss0 vm1 rss1
    n=$(scaled 2000)
    vm0=$(server_status_field VmSize) rss0=$(server_status_field VmRSS)
    mkfifo "$BATS_TEST_TMPDIR/hold.in"
    "$LAB_TOP/tests/bin/holdconns" -p "$SERVER_PORT" -n "$n" -w ffffffff \
        <"$BATS_TEST_TMPDIR/hold.in" >"$BATS_TEST_TMPDIR/hold.out" 3>&- &
    exec 4>"$BATS_TEST_TMPDIR/hold.in"
    wait_for_line "$BATS_TEST_TMPDIR/hold.out" "^connected $n\$"
    # Wait until the server has accepted every connection and read its header.
    all_read() {
        local q
        q=$(recv_queues "$SERVER_PORT")
        (($(wc -l <<<"$q") >= n)) && ! grep -qv '^0$' <<<"$q"
    }
    wait_until "the server to read all $n headers" all_read
    vm1=$(server_status_field VmSize) rss1=$(server_status_field VmRSS)
    if [[ $LAB_MODE == plain ]]; then
        # 4 bytes arrived per connection: the struct conn and one 16 KiB pool
        # block for the input ring is the whole cost.  Reserving what the
        # header promised would cost 4 GiB of address space each.
        local per_vm=$(((vm1 - vm0) * 1024 / n)) per_rss=$(((rss1 - rss0) * 1024 / n))
        ((per_vm < 32768)) || { echo "virtual memory grew by $per_vm bytes per connection" >&2; false; }
        ((per_rss < 32768)) || { echo "resident memory grew by $per_rss bytes per connection" >&2; false; }
    fi
    exec 4>&-
    server_alive
}

# bats test_tags=lab:s03-drain
@test "fairness: a flooding client does not starve a ping-pong client" {
    require_step 3 "one thread serves many clients"
    # Fairness is a property of one event loop: from step04 both clients
    # must share one worker, or the test would only measure two threads.
    local one_loop=()
    ((STEP_NUM >= 4)) && one_loop=(-w 1)
    start_server -v "${one_loop[@]}"
    local dir=$BATS_TEST_TMPDIR
    mkfifo "$dir/ping.in" "$dir/flood.go"
    client <"$dir/ping.in" >"$dir/ping.out" 3>&- & # conn=1: ping-pong
    exec 4>"$dir/ping.in"
    echo p1 >&4
    wait_for_line "$dir/ping.out" '^p1$'
    # conn=2: connected, then on "go" 2,000 frames of 16 KiB in one write.
    client -G -b -q -n 2000 -z 16384 <"$dir/flood.go" >/dev/null 2>&1 3>&- &
    exec 5>"$dir/flood.go"
    wait_for_line "$SERVER_LOG" '^conn=2 open '
    server_sleeping() { [[ $(awk '{ print $3 }' "/proc/$SERVER_PID/stat") == S ]]; }
    wait_until "the server to wait in epoll_wait" server_sleeping

    # Freeze the idle server.  Release the flood, let it pile up in the
    # socket, then queue one ping behind it: epoll will report the flood first.
    kill -STOP "$SERVER_PID"
    exec 5>&-
    flood_queued() { (($(recv_queues "$SERVER_PORT" | sort -n | tail -n 1) + 0 >= 32768)); }
    wait_until "32 KiB of flood queued" flood_queued ||
        { echo "receive queues: $(recv_queues "$SERVER_PORT" | tr '\n' ' ')" >&2; false; }
    echo p2 >&4
    both_queued() { (($(recv_queues "$SERVER_PORT" | awk '$1 > 0' | wc -l) >= 2)); }
    wait_until "the ping queued behind it" both_queued ||
        { echo "receive queues: $(recv_queues "$SERVER_PORT" | tr '\n' ' ')" >&2; false; }
    local before
    before=$(wc -l <"$SERVER_LOG")
    kill -CONT "$SERVER_PID"
    wait_for_line "$dir/ping.out" '^p2$'

    # Flood frames decoded after resuming and before the ping.  The read
    # budget (64 KiB = 4 frames per turn) keeps it to a handful.  Draining the
    # flood until EAGAIN first would take hundreds: as the server reads, the
    # client's 4 MiB send queue keeps refilling the socket.
    local n
    n=$(tail -n "+$((before + 1))" "$SERVER_LOG" |
        awk '/^conn=1 frame len=2$/ { exit } /^conn=2 frame / { n++ } END { print n + 0 }')
    ((n <= 32)) || { echo "the ping waited behind $n flood frames" >&2; false; }
    exec 4>&-
}

@test "EMFILE: out of file descriptors, the server sheds the excess without spinning, then serves again" {
    require_step 3 "the spare-fd trick lives in the event loop's accept"
    SERVER_WRAP=(prlimit --nofile=64:64)
    start_server
    expect_sheds_excess
}

@test "EMFILE: a client that gives up while the server sheds does not strand the rest of the backlog" {
    require_step 3 "the spare-fd trick lives in the event loop's accept"
    # The first connection the server sheds fails with ECONNABORTED (the
    # client gave up), as tests/acceptfault.c makes accept() do once.  The
    # handler must go on draining: with edge-triggered epoll no new edge
    # comes for the connections already waiting.
    SERVER_WRAP=(prlimit --nofile=64:64)
    use_shim acceptfault.so ACCEPT_ABORTS=1
    start_server
    local dir=$BATS_TEST_TMPDIR
    mkfifo "$dir/hold.in"
    # All 100 connect while the server is stopped, so they reach it as one
    # edge: whatever it does not drain then, it never hears of again.
    kill -STOP "$SERVER_PID"
    "$LAB_TOP/tests/bin/holdconns" -p "$SERVER_PORT" -n 100 -e 30 \
        <"$dir/hold.in" >"$dir/hold.out" 3>&- &
    local hold_pid=$!
    exec 4>"$dir/hold.in"
    wait_for_line "$dir/hold.out" '^connected 100$'
    kill -CONT "$SERVER_PID"
    wait_for_line "$dir/hold.out" '^closed [0-9]+ of 100$'
    grep -qE '^closed ([3-9][0-9]|100) of 100$' "$dir/hold.out" ||
        { echo "holdconns: $(cat "$dir/hold.out")" >&2; false; }
    exec 4>&-
    wait "$hold_pid"
}

@test "idle: 100 idle connections cost no CPU (no busy loop on EPOLLOUT)" {
    require_step 3 "an event loop that could spin"
    start_server
    mkfifo "$BATS_TEST_TMPDIR/hold.in"
    "$LAB_TOP/tests/bin/holdconns" -p "$SERVER_PORT" -n 100 -e 0 \
        <"$BATS_TEST_TMPDIR/hold.in" >"$BATS_TEST_TMPDIR/hold.out" 3>&- &
    exec 4>"$BATS_TEST_TMPDIR/hold.in"
    wait_for_line "$BATS_TEST_TMPDIR/hold.out" '^closed 0 of 100$'
    run client -x -n 10 warm-up # every connection has been writable since
    expect_no_spin "the idle server"
    exec 4>&-
}

# bats test_tags=lab:s03-drain
@test "idle: 2,000 idle connections cost the server under 2 KiB of memory each" {
    require_step 3 "one thread serves many clients"
    [[ " ${SERVER_FLAGS[*]} " != *" -R pinned "* ]] ||
        skip "-R pinned: each waiting recv lends the kernel a 16 KiB input block (notes/step06-aio.md, 'Provided buffers')"
    [[ $LAB_MODE == plain ]] || skip "RSS under memcheck, ASan or TSan measures the tool, not the server"
    ulimit -n "$(ulimit -Hn)"
    start_server
    ! grep -q '^io_uring: no buffer rings' "$SERVER_LOG" ||
        skip "this kernel has no buffer rings: the server runs -R pinned"
    run loadgen -I 2000 -P "$SERVER_PID" --csv
    [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
    local per
    per=$(csv_field bytes_per_conn)
    ((per < 2048)) || { echo "each idle connection costs $per bytes" >&2; false; }
}

# bats test_tags=lab:s03-drain
@test "close: connections reset in the middle of a batch close alone, touching no freed memory" {
    require_step 3 "one thread serves many clients"
    start_server
    local i pids=()
    # Resets land while other connections' events sit in the same epoll batch;
    # make valgrind and make san turn any use of a freed connection into a failure.
    for i in $(seq 40); do
        "$CLIENT" -p "$SERVER_PORT" -t "$DEADLINE" -R -b -q -n 20 -z 4096 >/dev/null 2>&1 3>&- &
        pids+=($!)
    done
    run loadgen -c 20 -d 4 -s 512 -n "$(scaled 300)" --csv
    [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
    wait "${pids[@]}" || true # they may see their own reset as an error
    run client -x still-serving
    [ "$status" -eq 0 ]
}

# ---- the ring buffer and the pool ------------------------------------------

# bats test_tags=lab:s03-ring
@test "ring: data that runs off the end wraps to the start, as two segments" {
    require_step 3 "the ring buffer"
    unit ring wrap
}

# bats test_tags=lab:s03-ring
@test "ring: growth keeps the bytes in order, stays a power of two, stops at its maximum" {
    require_step 3 "the ring buffer"
    unit ring grow
}

# bats test_tags=lab:s03-ring
@test "ring: readv/writev on the two-segment iovecs move every byte in order" {
    require_step 3 "the ring buffer"
    unit ring iov
}

# bats test_tags=lab:s03-ring
@test "ring: full means no free segment; emptied, it gives its memory back to the pool" {
    require_step 3 "the ring buffer"
    unit ring full-empty
}

# bats test_tags=lab:s03-ring
@test "ring: a reservation too large for any ring fails at once (no overflow, no endless doubling)" {
    require_step 3 "the ring buffer"
    unit ring overflow
}

@test "loop: a close storm destroys each released watch once, in O(1) each, calling none" {
    require_step 3 "the event loop"
    unit loop storm
}

@test "loop: a watch released by an earlier callback in the same turn is never called" {
    require_step 3 "the event loop"
    unit loop release-in-turn
}

@test "pool: a returned block is handed out again" {
    require_step 3 "the memory pool"
    unit pool reuse
}

@test "pool: the free list keeps at most max_free blocks" {
    require_step 3 "the memory pool"
    unit pool bounded
}

@test "pool: memcheck still reports a use-after-free of a pooled block" {
    require_step 3 "the memory pool"
    [[ $LAB_MODE != san ]] || skip "memcheck cannot run an ASan build: the next test checks ASan"
    run valgrind -q --error-exitcode=99 "$BATS_FILE_TMPDIR/pool_test" uaf
    [ "$status" -eq 99 ] || { echo "memcheck did not report the use-after-free: $output" >&2; false; }
    [[ $output == *"Invalid read"* ]]
}

@test "pool: ASan reports a use-after-free of a pooled block" {
    require_step 3 "the memory pool"
    [[ $LAB_MODE == san ]] || skip "needs the ASan build: make san"
    run "$BATS_FILE_TMPDIR/pool_test" uaf
    [ "$status" -ne 0 ]
    [[ $output == *"use-after-poison"* ]] || { echo "$output" >&2; false; }
}
