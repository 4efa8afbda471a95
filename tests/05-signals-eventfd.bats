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
# them all (the -v log, counting frames of SIZE only: another client's frames
# must not stand in for theirs); the outputs are client.N.{out,err}.
owing_clients() {
    local dir=$BATS_TEST_TMPDIR i
    mkfifo "$dir/go"
    for ((i = 1; i <= $1; i++)); do
        "$CLIENT" -p "$SERVER_PORT" -t "$DEADLINE" -S -x -q -b -n "$2" -z "$3" \
            <"$dir/go" >"$dir/client.$i.out" 2>"$dir/client.$i.err" 3>&- &
        echo $! >>"$dir/clients"
    done
    exec 4>"$dir/go"
    all_read() { (($(grep -c " frame len=$3\$" "$SERVER_LOG") >= $1 * $2)); }
    wait_until "the server to read all $(($1 * $2)) frames of $3 bytes" all_read "$1" "$2" "$3"
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

# replies_arrived FILE: how many replies the client got, from its stderr
# (FILE), or ALL when it got every one (it printed no "N of M replies").
replies_arrived() {
    local n
    n=$(sed -n 's/.* \([0-9][0-9]*\) of [0-9][0-9]* replies.*/\1/p' "$1" | tail -n 1)
    echo "${n:-$2}"
}

# held_back_shutdown FRAMES SIZE: a client sends FRAMES frames of SIZE bytes
# and reads nothing until released (-S): the server reads until it owes more
# than its high-water mark, and holds whole frames it has read but not yet
# answered when the signal comes.  Those are owed too.  Released after the
# shutdown began, the client sends the rest at full speed but reads slowly,
# as over a real network: a small receive buffer (-B 65536, which the kernel
# doubles: not smaller than loopback's 64 KiB segments, or TCP itself crawls
# from one zero-window probe to the next) and a pause after each read (-W).
# So the server's send queue still holds replies while it discards the
# client's input.  The
# client cannot get replies to frames the server never read, but it must
# get one for every frame the server did, and nothing may be cut.
held_back_shutdown() {
    start_server -v -g 20
    local dir=$BATS_TEST_TMPDIR
    mkfifo "$dir/go"
    "$CLIENT" -p "$SERVER_PORT" -t "$DEADLINE" -B 65536 -W 10000 -S -q -b -n "$1" -z "$2" \
        <"$dir/go" >/dev/null 2>"$dir/client.err" 3>&- &
    local pid=$!
    exec 4>"$dir/go"
    wait_for_line "$dir/client.err" 'sending stalled after'
    kill -TERM "$SERVER_PID"
    wait_shutdown_begun
    exec 4>&- # the client reads now
    wait "$pid" || true # it gets what the server read, not all it sent: below
    signal_server CONT  # wait for the exit the signal began
    expect_eq "exit status" 0 "$SERVER_STATUS"
    local line frames bytes_in bytes_out got
    line=$(grep '^conn=1 close ' "$SERVER_LOG")
    [[ $line == *" reason=shutdown "* ]] || { echo "$line" >&2; false; }
    frames=$(sed -n 's/.* frames=\([0-9]*\) .*/\1/p' <<<"$line")
    bytes_in=$(sed -n 's/.* bytes_in=\([0-9]*\) .*/\1/p' <<<"$line")
    bytes_out=$(sed -n 's/.* bytes_out=\([0-9]*\)$/\1/p' <<<"$line")
    # What was read and not answered is less than one frame.
    ((bytes_in - frames * ($2 + 4) < $2 + 4)) ||
        { echo "read $bytes_in bytes but answered only $frames frames of $(($2 + 4))" >&2; false; }
    expect_eq "bytes sent" "$((frames * ($2 + 4)))" "$bytes_out"
    # What the client received: every reply the server sent, none reset away.
    got=$(replies_arrived "$dir/client.err" "$1")
    expect_eq "replies the client received (of the $frames the server answered)" \
        "$frames" "$got" || { cat "$dir/client.err" >&2; false; }
    expect_eq "connections cut" 0 "$(summary_field cut)"
}

@test "graceful shutdown: a client held back by backpressure receives a reply to every whole frame the server read (4 KiB frames)" {
    require_step 5 "the graceful shutdown"
    held_back_shutdown 4096 4096
}

@test "graceful shutdown: the same with 100-byte frames" {
    require_step 5 "the graceful shutdown"
    held_back_shutdown 160000 100
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

@test "graceful shutdown, -D reuseport: connections that wait in a worker's accept queue when it stops are accepted and closed with a FIN, never reset" {
    require_step 5 "the graceful shutdown"
    # One worker of two busy for 5 s (20 s under valgrind).
    start_stuck_reuseport -g 60
    local stuck
    stuck=$(sed -n 's/^conn=[0-9]* open worker=\([0-9]*\) .*/\1/p' "$SERVER_LOG")
    # The shutdown: the free worker stops at once and closes its socket,
    # which leaves the port's group; the stuck one reaches its order to stop
    # only when its work is done, and until then its socket still listens.
    kill -TERM "$SERVER_PID"
    # (step06: the socket goes when the ring returns its poll, just after.)
    wait_for_line "$SERVER_LOG" "^worker=$((1 - stuck)) shutdown: reading stopped"
    one_left() { (($(accept_queues "$SERVER_PORT" | wc -l) == 1)); }
    wait_until "the free worker's listening socket to close" one_left
    # So all 40 new connections, each sending a frame ("x"), wait in the
    # stuck worker's accept queue: the kernel completed their handshakes.
    local hold=$BATS_TEST_TMPDIR/hold
    mkfifo "$hold.in"
    "$LAB_TOP/tests/bin/holdconns" -p "$SERVER_PORT" -n 40 -e 40 -t $((STUCK_S + 60)) \
        -w 0000000178 <"$hold.in" >"$hold.out" 3>&- &
    exec 4>"$hold.in"
    wait_for_line "$hold.out" '^connected 40$'
    all_waiting() { (($(accept_queues "$SERVER_PORT") == 40)); }
    wait_until "the 40 connections in the stuck worker's accept queue" all_waiting
    # Closed with connections in its backlog, a listening socket resets
    # them.  The worker accepts them first; they end as every connection
    # does at a shutdown: nothing was read from them, so nothing is owed,
    # and the lingering close sends a FIN.
    wait_for_line "$hold.out" '^reset [0-9]+$'
    expect_eq "connections the server closed" "closed 40 of 40" "$(grep '^closed' "$hold.out")"
    expect_eq "connections reset instead" "reset 0" "$(grep '^reset' "$hold.out")"
    signal_server CONT # nothing to stop: just wait for the exit it began
    expect_eq "exit status" 0 "$SERVER_STATUS"
    expect_eq "connections opened" 41 "$(grep -c '^conn=[0-9]* open ' "$SERVER_LOG")"
    exec 4>&-
}

# read_then_reset N: connection 1 sends N empty frames, waits until the
# server (-v) has read them all - so they are jobs at an application thread
# now - then resets.
read_then_reset() {
    mkfifo "$BATS_TEST_TMPDIR/go"
    client -S -R -b -q -n "$1" -z 0 <"$BATS_TEST_TMPDIR/go" >/dev/null 2>&1 3>&- &
    exec 4>"$BATS_TEST_TMPDIR/go"
    frames_read() { (($(grep -c '^conn=1 frame len=0$' "$SERVER_LOG") == $1)); }
    wait_until "the server to read the $1 frames" frames_read "$1"
    exec 4>&- # the client resets now
    wait_for_line "$SERVER_LOG" '^conn=1 close reason=(reset|error) '
}

@test "graceful shutdown: -g is a deadline even when only work at an application thread is left" {
    require_step 5 "the graceful shutdown"
    start_server -w 1 -a 1 -b 1000000 -g 1 -v # 1 s of CPU per reply
    # 16 empty frames (16 s of work), read by the server, then a reset:
    # nobody is left to answer, and the work must not hold the shutdown past
    # its deadline.
    read_then_reset 16
    local start end limit=4
    [[ $LAB_MODE == valgrind ]] && limit=10
    start=$(date +%s%N)
    signal_server TERM
    end=$(date +%s%N)
    expect_eq "exit status" 0 "$SERVER_STATUS"
    (((end - start) / 1000000 < (1 + limit) * 1000)) ||
        { echo "with -g 1 the server took $(((end - start) / 1000000)) ms to exit" >&2; false; }
}

@test "-a 1: an application thread allocates nothing: with every malloc() there failing, each reply still arrives" {
    require_step 5 "application threads"
    [[ $LAB_MODE == plain ]] || skip "the shim replaces malloc(), as memcheck and the sanitizers do"
    # Every malloc() of the application thread fails (tests/failalloc.c).
    # The worker allocates each job's reply record before it hands the job
    # over, and posting it back cannot fail: a server whose app thread had
    # to allocate would lose a reply here, and the client would wait for it.
    use_shim failalloc.so FAILALLOC_THREAD=app-
    start_server -w 1 -a 1
    run client -x -b -n 50 one-job-each
    [ "$status" -eq 0 ] || { echo "client: $output" >&2; false; }
    expect_eq "replies" 50 "$(grep -c '^one-job-each$' <<<"$output")"
    signal_server TERM
    expect_eq "exit status" 0 "$SERVER_STATUS"
    expect_eq "connections cut" 0 "$(summary_field cut)"
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

@test "usage: -a, -g, -i and -t are checked: out of range or not a number exits 2" {
    require_step 5 "-a, -g, -i, -t"
    local bad
    for bad in "-a 257" "-a x" "-g 0" "-g 3601" "-i -1" "-i x" "-t 0" "-t 3601" "-D shared"; do
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

@test "-a 1: floods of empty frames that end in a reset, round after round, keep memory bounded" {
    require_step 5 "application threads"
    # Each empty frame is a 4-byte job for the app thread (1 ms of work each),
    # but costs the server far more: the job, its reply, a mailbox slot.
    # Backpressure must count what jobs cost, jobs of a closed connection
    # must not pile up (or run), and the next round must find the memory
    # the last one freed.
    start_server -w 1 -a 1 -b 1000
    local dir=$BATS_TEST_TMPDIR rss0 rss round i pids
    rss0=$(server_status_field VmRSS)
    for round in 1 2 3 4; do
        mkfifo "$dir/go.$round"
        pids=()
        for i in 1 2 3; do
            "$CLIENT" -p "$SERVER_PORT" -t "$DEADLINE" -S -q -b -n "$(scaled 500000)" -z 0 \
                <"$dir/go.$round" >/dev/null 2>"$dir/flood.$round.$i" 3>&- &
            pids+=($!)
        done
        exec 4>"$dir/go.$round"
        for i in 1 2 3; do
            wait_for_line "$dir/flood.$round.$i" 'sending stalled after'
        done
        kill -KILL "${pids[@]}" # unread replies: the kernel resets the connections
        exec 4>&-
        rss=$(server_status_field VmRSS)
        if [[ $LAB_MODE == plain ]] && ((rss - rss0 >= 48 * 1024)); then
            echo "round $round: server RSS grew by $((rss - rss0)) kB" >&2
            return 1
        fi
    done
    run client -x still-serving
    [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
}

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

# behind_app_work N CLIENT-ARGS...: client A sends N empty frames (N s of
# work at the one app thread of a "-w 1 -a 1 -b 1000000" server), all read
# before client B (CLIENT-ARGS) comes; B's reply waits behind them.  B must
# get it, A must get all of its own, and nothing is cut.
behind_app_work() {
    local n=$1 word=${*: -1}
    shift
    client -b -q -n "$n" -z 0 >/dev/null 2>"$BATS_TEST_TMPDIR/a.err" &
    local a=$!
    frames_read() { (($(grep -c '^conn=1 frame len=0$' "$SERVER_LOG") == $1)); }
    wait_until "the server to read A's $n frames" frames_read "$n"
    run client "$@"
    [ "$status" -eq 0 ] || { echo "B: $output" >&2; grep 'conn=2' "$SERVER_LOG" >&2; false; }
    expect_eq "B's reply" "$word" "$output"
    wait "$a" || { cat "$BATS_TEST_TMPDIR/a.err" >&2; false; }
    stop_server
    expect_eq "connections cut" 0 "$(summary_field cut)"
}

# cut_while_unread PATTERN CLIENT-ARGS...: a client (-S -x -q -b
# CLIENT-ARGS) sends everything and reads no reply until the server's log
# has a line matching PATTERN (the cut); then it reads, and must find
# replies missing (exit 1).  The summary must count one cut.
cut_while_unread() {
    local pattern=$1
    shift
    mkfifo "$BATS_TEST_TMPDIR/go"
    client -S -x -q -b "$@" <"$BATS_TEST_TMPDIR/go" \
        >/dev/null 2>"$BATS_TEST_TMPDIR/client.err" 3>&- &
    local pid=$!
    exec 4>"$BATS_TEST_TMPDIR/go"
    wait_for_line "$SERVER_LOG" "$pattern" || {
        echo "client:" >&2
        cat "$BATS_TEST_TMPDIR/client.err" >&2
        server_sockets_and_threads
        false
    }
    exec 4>&- # now let it read: the connection is gone, replies missing
    local rc=0
    wait "$pid" || rc=$?
    ((rc == 1)) || { echo "client exit $rc, expected 1 (replies missing):" >&2; cat "$BATS_TEST_TMPDIR/client.err" >&2; false; }
    stop_server
    expect_eq "connections cut" 1 "$(summary_field cut)"
}

@test "-i 1: a connection waiting for its replies from the application threads is not idle" {
    require_step 5 "timers (timerfd)"
    default_config_only
    start_server -w 1 -a 1 -b 1000000 -i 1 -v # 1 s of work per reply, idle after 1 s
    # A: 3 empty frames, read (and queued at the one app thread) before B
    # comes.  B: one frame, then nothing for 4 s while its reply waits
    # behind A's: B waits for the server, which must not take that for
    # idleness.
    behind_app_work 3 -x waiting-for-work
}

@test "-i 1: a client that leaves its replies unread is not closed as idle: the stall bound cuts it, counted" {
    require_step 5 "timers (timerfd)"
    default_config_only
    start_server -w 1 -i 1 -t 2 -v
    # 250 frames of 4 KiB in one write, no reply read: the replies (1 MB)
    # fit in the kernel's send queue, and the server's output buffer is
    # empty.  A second later there is no traffic, but the connection is not
    # idle - replies are owed - and closing it as idle would lose them
    # silently.  The stall bound takes over (-v: "but replies unread: the
    # stall bound decides", unless a send cut short started it earlier):
    # 2 s more (-t) without progress, then a cut, which resets: the client
    # must not get what the kernel held.
    cut_while_unread '^conn=1 error=cut .*: no progress for 2 s \(-t\)$' -B 65536 -n 250 -z 4096
    ! grep -q '^conn=1 close reason=idle' "$SERVER_LOG" || { echo "closed as idle with replies owed" >&2; false; }
}

@test "stall bound: a client that reads slowly but steadily is never cut (nor closed by -i)" {
    require_step 5 "timers (timerfd)"
    default_config_only
    [[ $LAB_MODE == plain ]] || skip "the kernel's pacing of one slow reader: plain mode runs it"
    start_server -w 1 -i 1 -t 2 -v
    # 16 MB of 64 KiB frames; the client reads at most its receive buffer
    # (128 KiB) every second for the first 8 s, then at full speed.
    # Megabytes of replies wait in the kernel's send queue, and draining a
    # third of them - until the socket is writable and the server sends
    # again - takes the client far longer than the 2 s stall bound (-t).
    # It reads all along.
    run client -b -x -q -B 65536 -W 1000000 -L 8 -n 250 -z 65536
    [ "$status" -eq 0 ] || { echo "client: $output" >&2; grep 'error=' "$SERVER_LOG" >&2; false; }
    stop_server
    expect_eq "connections cut" 0 "$(summary_field cut)"
}

@test "stall bound: a client that never reads its replies is cut after -t seconds without progress" {
    require_step 5 "timers (timerfd)"
    default_config_only
    start_server -w 1 -t 2 -v
    # As above, with no -i, and a small receive buffer (-B) so that the
    # replies do not all fit in the kernel's buffers: the server stops
    # reading at its high water, and the fd, the buffers and the replies
    # would wait for ever.
    cut_while_unread '^conn=1 error=cut .*: no progress for 2 s \(-t\)$' -B 4096 -n 4000 -z 4096
}

@test "stall bound: a client that stops reading and sending below the high-water mark is cut too" {
    require_step 5 "timers (timerfd)"
    default_config_only
    start_server -w 1 -t 2 -v
    # 5 MB of frames, then nothing: the client neither reads nor sends.
    # The kernel's send queue takes about 4 MB of the replies; the rest
    # (about 1 MB) waits in the server's output buffer, below the high-water
    # mark (4 MiB), so the server never pauses - and a bound that only held
    # paused connections kept this one, its fd and its megabyte, for ever.
    # (A slow machine where the client of the test above gives up sending
    # early ends up here too.)  -B 65536: once it reads, the client takes
    # what the kernel still delivers at full speed, not 4 KiB per window.
    cut_while_unread '^conn=1 error=cut .*: no progress for 2 s \(-t\)$' -B 65536 -n 1250 -z 4096
}

@test "stall bound: a half-closed client whose reply waits behind 4 s of application work is not cut" {
    require_step 5 "application threads"
    default_config_only
    start_server -w 1 -a 1 -b 1000000 -t 2 -v # 1 s of work per reply, one app thread
    # A: 4 empty frames, all read (and queued at the app thread) before B
    # comes.  B: one frame and its FIN; it drains for 5 s with nothing to
    # send - the server is the slow one, not B, so the 2 s stall bound (-t)
    # must not cut it.
    behind_app_work 4 -s -x behind-the-queue
}

@test "lingering close: a client that goes on sending after an oversize frame still gets every earlier reply" {
    require_step 5 "the lingering close"
    start_server -m 65536 -v
    # 4 frames of 64 KiB, then a frame of 2 MiB: its header is a protocol
    # error, and its payload 2 MiB the server will never read as a frame.
    # The client's receive buffer is small and fixed (-B), so most of the
    # 256 KiB of replies wait in the server's send queue.  The server sends
    # them, then its FIN, discards 1 MiB of input and stops reading: closing
    # now, with input unread, would make the kernel reset the connection and
    # throw the replies away.  It must wait until the client has them.
    mkfifo "$BATS_TEST_TMPDIR/go"
    client -B 16384 -S -x -q -b -z 65536 -z 65536 -z 65536 -z 65536 -z 2097152 \
        <"$BATS_TEST_TMPDIR/go" >/dev/null 2>"$BATS_TEST_TMPDIR/err" 3>&- &
    local client_pid=$!
    exec 4>"$BATS_TEST_TMPDIR/go"
    wait_for_line "$SERVER_LOG" '^conn=1 linger: reading no more; closing once the peer has [1-9]'
    exec 4>&- # only now does the client read
    local rc=0
    wait "$client_pid" || rc=$?
    expect_eq "client exit status (the server closed before reply 5)" 1 "$rc"
    grep -qE ' 4 of 5 replies' "$BATS_TEST_TMPDIR/err" ||
        { cat "$BATS_TEST_TMPDIR/err" >&2; false; }
    wait_for_line "$SERVER_LOG" '^conn=1 close reason=protocol '
}

@test "lingering close: after a protocol error the 2 s begin once every reply is handed over: a client that reads 3 s later gets them all" {
    require_step 5 "the lingering close"
    start_server -m 65536 -v
    # 80 frames of 64 KiB (5 MiB: the kernel's send queue takes 4 MiB of
    # their replies, so the rest stays under the high-water mark and the
    # server reads on), then a header claiming 1 MiB.  The client's receive
    # buffer is small (-B): the replies wait in the server until it reads.
    mkfifo "$BATS_TEST_TMPDIR/go"
    client -e -B 16384 -S -x -q -b -n 80 -z 65536 -r 00100000 <"$BATS_TEST_TMPDIR/go" \
        >/dev/null 2>"$BATS_TEST_TMPDIR/err" 3>&- &
    local client_pid=$!
    exec 4>"$BATS_TEST_TMPDIR/go"
    wait_for_line "$SERVER_LOG" '^conn=1 error=protocol '
    sleep 3 # the scenario: the client is slow to read, not a wait for the server
    exec 4>&-
    wait "$client_pid" || { cat "$BATS_TEST_TMPDIR/err" >&2; false; }
}

@test "lingering close: a full input ring at the protocol error: earlier replies still arrive, then a clean close" {
    require_step 5 "the lingering close"
    # -m 16380: a frame and its header fill exactly one pool block (16 KiB),
    # the input ring's first size and its bound.  Three such frames (each
    # read whole, answered, and its ring block given back), then a header
    # over the limit and 32 KiB of junk: that read fills the ring to its
    # bound, the rest waits in the socket.  The client reads nothing until
    # the server has seen the error, so replies wait in the server's send
    # queue; a reset would throw them away, and -e fails on a reset.
    start_server -m 16380 -v
    local junk
    junk="00003ffd$(head -c 32768 /dev/zero | od -An -tx1 -v | tr -d ' \n')"
    mkfifo "$BATS_TEST_TMPDIR/go"
    client -e -B 16384 -S -x -q -b -n 3 -z 16380 -r "$junk" <"$BATS_TEST_TMPDIR/go" \
        >/dev/null 2>"$BATS_TEST_TMPDIR/err" 3>&- &
    local client_pid=$!
    exec 4>"$BATS_TEST_TMPDIR/go"
    wait_for_line "$SERVER_LOG" '^conn=1 error=protocol '
    exec 4>&-
    wait "$client_pid" || { cat "$BATS_TEST_TMPDIR/err" >&2; false; }
    wait_for_line "$SERVER_LOG" '^conn=1 close reason=protocol '
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
