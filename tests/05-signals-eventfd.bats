#!/usr/bin/env bats
# 05-signals-eventfd: mailboxes of closures on eventfds, sends by connection
# id, application threads (-a), signals through a signalfd, the graceful
# shutdown (优雅退出), idle timeouts (-i) and the lingering close, from
# step05 on.  Also the unit test of the mailbox.

load helpers

setup_file() {
    ((STEP_NUM >= 5)) || return 0
    unit_cc tsan "$BATS_FILE_TMPDIR/mbox_test" "$LAB_TOP/tests/unit/mbox_test.c" \
        "$LAB_STEP_DIR/mbox.c" "$LAB_STEP_DIR/loop.c" "$LAB_STEP_DIR/log.c"
}

teardown() {
    lab_teardown
}

# summary_field NAME: a field of the server's summary line (after it exited).
summary_field() {
    sed -n "s/^summary .*\\b$1=\\([^ ]*\\).*/\\1/p" "$SERVER_LOG"
}

# owing_clients N FRAMES SIZE: N clients that each send FRAMES frames of SIZE
# bytes in one write and read nothing until the fifo "go" closes (-S): the
# server reads every frame, and owes every reply.  Waits until it has read
# them all (the -v log); the clients' outputs are client.N.{out,err}.
owing_clients() {
    local dir=$BATS_TEST_TMPDIR i
    mkfifo "$dir/go"
    for ((i = 1; i <= $1; i++)); do
        "$CLIENT" -p "$SERVER_PORT" -t "$DEADLINE" -S -x -q -b -n "$2" -z "$3" \
            <"$dir/go" >"$dir/client.$i.out" 2>"$dir/client.$i.err" 3>&- &
        echo $! >>"$dir/clients"
    done
    exec 4>"$dir/go"
    all_read() { (($(grep -c ' frame len=' "$SERVER_LOG") >= $1 * $2)); }
    wait_until "the server to read all $(($1 * $2)) frames" all_read "$1" "$2"
}

# release_clients: let the owing clients read; each must get every reply.
release_clients() {
    exec 4>&-
    local pid rc=0
    while read -r pid; do
        wait "$pid" || rc=1
    done <"$BATS_TEST_TMPDIR/clients"
    ((rc == 0)) || { cat "$BATS_TEST_TMPDIR"/client.*.err >&2; return 1; }
}

# wait_shutdown_begun: after the "shutdown:" line (the acceptor's, at the
# signal), wait until every worker that owns a connection has begun its part
# of the shutdown (the -v line "worker=N shutdown: reading stopped").
wait_shutdown_begun() {
    wait_for_line "$SERVER_LOG" '^shutdown: '
    local owners w
    owners=$(sed -n 's/^conn=[0-9]* open worker=\([0-9]*\) .*/\1/p' "$SERVER_LOG" | sort -u)
    [[ -n $owners ]] || { echo "no 'conn=ID open worker=N' line in the log" >&2; return 1; }
    for w in $owners; do
        wait_for_line "$SERVER_LOG" "^worker=$w shutdown: reading stopped"
    done
}

# graceful SIGNAL: 10 connections owed 200 replies each when SIGNAL comes.
graceful() {
    start_server -v -g 20
    owing_clients 10 200 1024
    kill "-$1" "$SERVER_PID"
    # Let the clients read only once their workers stopped reading, or a
    # client that got all its replies may close first (reason=eof).
    wait_shutdown_begun
    release_clients # every reply arrives, each checked byte for byte (-x)
    signal_server CONT # nothing to stop: just wait for the exit it began
    expect_eq "exit status" 0 "$SERVER_STATUS"
    expect_eq "frames answered" 2000 "$(summary_field frames)"
    expect_eq "connections cut" 0 "$(summary_field cut)"
    # ... and each connection was then closed by the shutdown, not the client.
    run grep -c ' close reason=shutdown ' "$SERVER_LOG"
    expect_eq "connections closed by the shutdown" 10 "$output"
}

@test "graceful shutdown: SIGTERM with replies owed on 10 connections: every reply arrives, then the close, exit 0" {
    require_step 5 "the graceful shutdown"
    graceful TERM
}

@test "graceful shutdown: the same for SIGINT (Ctrl-C)" {
    require_step 5 "the graceful shutdown"
    graceful INT
}

@test "graceful shutdown: a client that never reads is cut at the -g deadline; the others get every reply" {
    require_step 5 "the graceful shutdown"
    start_server -v -g 1
    local dir=$BATS_TEST_TMPDIR
    # conn 1: 16 MiB of frames, and it never reads: far more than the
    # sockets hold, so the server still owes data at the deadline.
    mkfifo "$dir/never"
    "$CLIENT" -p "$SERVER_PORT" -t 120 -S -q -b -n 256 -z 65536 <"$dir/never" \
        >/dev/null 2>"$dir/never.err" 3>&- &
    exec 5>"$dir/never"
    wait_for_line "$dir/never.err" 'sending stalled after'
    owing_clients 3 100 512
    kill -TERM "$SERVER_PID"
    wait_for_line "$SERVER_LOG" '^shutdown: '
    release_clients
    signal_server CONT # wait for the exit: -g 1 bounds it
    expect_eq "exit status" 0 "$SERVER_STATUS"
    expect_eq "connections cut" 1 "$(summary_field cut)"
    grep -qE '^conn=1 error=cut owed=[0-9]+' "$SERVER_LOG"
    exec 5>&-
}

@test "graceful shutdown: a client held back by backpressure gets a reply to every whole frame the server read" {
    require_step 5 "the graceful shutdown"
    start_server -v -g 20
    local dir=$BATS_TEST_TMPDIR
    # 2,048 frames of 4 KiB (8 MiB) and no reading until released: the server
    # reads until it owes more than its high-water mark (4 MiB), or until its
    # reply ring is full, and holds whole frames it has read but not yet
    # answered when the signal comes.  Those are owed too.
    mkfifo "$dir/go"
    "$CLIENT" -p "$SERVER_PORT" -t "$DEADLINE" -S -q -b -n 2048 -z 4096 <"$dir/go" \
        >/dev/null 2>"$dir/client.err" 3>&- &
    local pid=$!
    exec 4>"$dir/go"
    wait_for_line "$dir/client.err" 'sending stalled after'
    kill -TERM "$SERVER_PID"
    wait_shutdown_begun
    exec 4>&- # the client reads now (and cannot get what the server never read)
    wait "$pid" || true
    signal_server CONT # wait for the exit the signal began
    expect_eq "exit status" 0 "$SERVER_STATUS"
    local line frames bytes_in bytes_out
    line=$(grep '^conn=1 close ' "$SERVER_LOG")
    [[ $line == *" reason=shutdown "* ]] || { echo "$line" >&2; false; }
    frames=$(sed -n 's/.* frames=\([0-9]*\) .*/\1/p' <<<"$line")
    bytes_in=$(sed -n 's/.* bytes_in=\([0-9]*\) .*/\1/p' <<<"$line")
    bytes_out=$(sed -n 's/.* bytes_out=\([0-9]*\)$/\1/p' <<<"$line")
    # What was read and not answered is less than one frame (4 + 4,096 bytes).
    ((bytes_in - frames * 4100 < 4100)) ||
        { echo "read $bytes_in bytes but answered only $frames frames of 4,100" >&2; false; }
    expect_eq "bytes sent" "$((frames * 4100))" "$bytes_out"
}

@test "graceful shutdown: a second signal ends the server at once, with status 1" {
    require_step 5 "the graceful shutdown"
    # Exiting at once leaves threads unjoined, on purpose: do not let
    # ThreadSanitizer call that a leak.
    SERVER_ENV+=(TSAN_OPTIONS=report_thread_leaks=0)
    start_server -g 3600 # the graceful stop alone would take an hour
    mkfifo "$BATS_TEST_TMPDIR/never"
    client -S -q -b -n 256 -z 65536 <"$BATS_TEST_TMPDIR/never" \
        >/dev/null 2>"$BATS_TEST_TMPDIR/never.err" 3>&- &
    exec 5>"$BATS_TEST_TMPDIR/never"
    wait_for_line "$BATS_TEST_TMPDIR/never.err" 'sending stalled after'
    kill -TERM "$SERVER_PID"
    wait_for_line "$SERVER_LOG" '^shutdown: '
    signal_server TERM
    expect_eq "exit status after a second signal" 1 "$SERVER_STATUS"
    grep -q '^shutdown: second signal' "$SERVER_LOG"
    exec 5>&-
}

@test "signals: SIGINT and SIGTERM are blocked in every thread (read from a signalfd); SIGPIPE is ignored" {
    require_step 5 "signalfd"
    start_server -w 2 -a 2
    local t blk ign
    for t in /proc/"$SERVER_PID"/task/*; do
        blk=$((16#$(awk '/^SigBlk:/ { print $2 }' "$t/status")))
        # bit 1: SIGINT (2), bit 14: SIGTERM (15)
        (((blk >> 1) & 1 && (blk >> 14) & 1)) ||
            { echo "thread $(cat "$t/comm") does not block SIGINT and SIGTERM" >&2; false; }
    done
    ign=$((16#$(awk '/^SigIgn:/ { print $2 }' "/proc/$SERVER_PID/status")))
    (((ign >> 12) & 1)) || { echo "SIGPIPE (13) is not ignored" >&2; false; }
}

@test "usage: -a, -g and -i are checked: out of range or not a number exits 2" {
    require_step 5 "-a, -g, -i"
    local bad
    for bad in "-a 257" "-a x" "-g 0" "-g 3601" "-i -1" "-i x" "-D shared"; do
        # shellcheck disable=SC2086 # split "-a 257" into flag and value
        run "$LAB_SERVER" $bad
        [ "$status" -eq 2 ] || { echo "$bad: exit $status" >&2; false; }
        [[ $output == *"bad "* && $output == *usage:* ]] || { echo "$bad: $output" >&2; false; }
    done
}

# ---- application threads -----------------------------------------------------

@test "-a 2: 50 concurrent clients get their own replies, in order" {
    require_step 5 "application threads"
    start_server -w 2 -a 2 -b 50
    # loadgen stamps every payload: a reply on the wrong connection or out of
    # order fails the run.
    run loadgen -c 50 -d 4 -s 200 -n "$(scaled 200)" --csv
    [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
    expect_eq "errors" 0 "$(csv_field errors)"
}

@test "-a 2: clients resetting mid-stream never make a reply go to the wrong connection" {
    require_step 5 "application threads"
    start_server -w 2 -a 2 -b 200
    local i
    # Resets while their frames are at the app threads: their fds are reused
    # by new connections at once; their replies must find no one.
    for i in $(seq 30); do
        "$CLIENT" -p "$SERVER_PORT" -t "$DEADLINE" -R -b -q -n 20 -z 512 >/dev/null 2>&1 3>&- &
    done
    run loadgen -c 10 -d 8 -s 300 -n "$(scaled 300)" --csv
    [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
    expect_eq "errors" 0 "$(csv_field errors)"
}

@test "-a 2: backpressure counts replies still at app threads: a 64 MiB flood holds memory bounded" {
    require_step 5 "application threads"
    # Slow application threads (1 ms per reply): frames pile up at them
    # faster than they answer, unless backpressure counts them.  4 MiB of
    # replies owed (queued or at the app threads), frame copies, ring slack:
    # well under 24 MiB.  Not counting the app threads' share would let them
    # queue most of the 64 MiB.
    start_server -a 2 -b 1000
    expect_flood_bounded 1024
}

@test "-a 2: half-close delivers every reply, even those still at an app thread when the FIN arrives" {
    require_step 5 "application threads"
    start_server -a 2 -b 2000 # 2 ms per reply: most are at the app threads at EOF
    run client -x -q -b -s -n "$(scaled 300)" "$(rand_word 100)"
    [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
}

@test "-a 1: a connection that closes while its frames are at the app thread: the replies are dropped and counted, nothing freed is touched" {
    require_step 5 "application threads"
    start_server -a 1 -b 100000 -v # 100 ms per reply
    # 20 frames (100 bytes): the first 99 bytes, a pause in which the server
    # reads 19 frames and hands them to the app thread (1.9 s of work), then
    # the last byte and a reset.
    run client -R -b -q -c 99,1 -D 300000 -n 20 x
    wait_for_line "$SERVER_LOG" '^conn=1 close reason=(reset|error) '
    # The app thread is still working on them; the graceful stop waits for
    # it, and every reply finds its connection gone.
    stop_server
    local dropped
    dropped=$(summary_field dropped_sends)
    ((dropped >= 1)) || { echo "dropped_sends=$dropped" >&2; false; }
}

# ---- timers: idle connections and the lingering close -------------------------

@test "-i 1: an idle connection is closed after about a second; a busy one never" {
    require_step 5 "timers (timerfd)"
    start_server -i 1 -v
    local dir=$BATS_TEST_TMPDIR
    mkfifo "$dir/idle.in" "$dir/busy.in"
    "$LAB_TOP/tests/bin/holdconns" -p "$SERVER_PORT" -n 1 <"$dir/idle.in" >/dev/null 3>&- &
    exec 4>"$dir/idle.in"
    wait_for_line "$SERVER_LOG" '^conn=1 open '
    client <"$dir/busy.in" >"$dir/busy.out" 3>&- &
    exec 5>"$dir/busy.in"
    sleep 0.5 # a measurement window: not idle for a second yet
    ! grep -q '^conn=1 close' "$SERVER_LOG" || { echo "closed after less than a second" >&2; false; }
    local i
    for i in $(seq 15); do # the busy client: a message every 0.2 s, for 3 s
        echo "ping$i" >&5
        wait_for_line "$dir/busy.out" "^ping$i\$"
        sleep 0.2 # the client's pace, not synchronisation
    done
    wait_for_line "$SERVER_LOG" '^conn=1 close reason=idle '
    ! grep -qE '^conn=[0-9]+ close reason=idle .*' <(grep -v '^conn=1 ' "$SERVER_LOG") ||
        { echo "the busy connection was closed as idle" >&2; false; }
    exec 4>&- 5>&-
}

@test "lingering close: after an oversize frame, earlier replies arrive even if read only after the server gave up" {
    require_step 5 "the lingering close"
    start_server -m 65536 -v
    # 4 frames of 64 KiB, then a header claiming 1 MiB, then 32 KiB that the
    # server will never read as a frame (an argument holds at most 128 KiB:
    # 64 Ki hex digits).  The client's receive buffer is small and fixed
    # (-B), so most of the 256 KiB of replies wait in the server's send
    # queue: a plain close, with the junk unread, would make the kernel send
    # a reset and throw them away.
    local junk
    junk="00100000$(head -c 32768 /dev/zero | od -An -tx1 -v | tr -d ' \n')"
    mkfifo "$BATS_TEST_TMPDIR/go"
    client -B 16384 -S -x -q -b -n 4 -z 65536 -r "$junk" <"$BATS_TEST_TMPDIR/go" \
        >"$BATS_TEST_TMPDIR/out" 2>"$BATS_TEST_TMPDIR/err" 3>&- &
    local client_pid=$!
    exec 4>"$BATS_TEST_TMPDIR/go"
    wait_for_line "$SERVER_LOG" '^conn=1 error=protocol '
    # The server sends what it owes, then SHUT_WR, discards input, and gives
    # up after 2 s: the close line.  Only then does the client read.
    wait_for_line "$SERVER_LOG" '^conn=1 close reason=protocol '
    exec 4>&-
    wait "$client_pid" || { cat "$BATS_TEST_TMPDIR/err" >&2; false; }
}

@test "mailbox: many producers, one consumer: every closure runs once, in each producer's order" {
    require_step 5 "the mailbox"
    run "$BATS_FILE_TMPDIR/mbox_test" order
    [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
}

@test "mailbox: posts while the owner is busy ring the eventfd once; one read clears them all" {
    require_step 5 "the mailbox"
    run "$BATS_FILE_TMPDIR/mbox_test" ring-once
    [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
}
