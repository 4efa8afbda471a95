#!/usr/bin/env bats
# 01-echo: what every step guarantees from step01 on - the command line, the
# startup line, echo, and (for the blocking steps) one client at a time.

load helpers

teardown() {
    lab_teardown
}

@test "startup: prints exactly one line, 'listening on 127.0.0.1:PORT', on stdout" {
    start_server
    run cat "$SERVER_OUT"
    [[ ${#lines[@]} -eq 1 ]] || { echo "stdout: $output" >&2; false; }
    [[ $output =~ ^listening\ on\ 127\.0\.0\.1:[0-9]+$ ]]
    ((SERVER_PORT > 0))
}

# bats test_tags=lab:s01-serve
@test "echo: every message comes back unchanged, in order" {
    start_server
    local a b c
    a=$(rand_word 5) b=$(rand_word 40) c=$(rand_word 300)
    run client "$a" "$b" "$c"
    [ "$status" -eq 0 ]
    expect_eq "replies" "$(printf '%s\n' "$a" "$b" "$c")" "$output"
}

# bats test_tags=lab:s01-serve
@test "echo: a 1 MiB message comes back byte for byte" {
    start_server
    run client -q -x -z 1048576
    [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
}

# bats test_tags=lab:s01-serve
@test "echo: messages typed on stdin are answered one line at a time" {
    start_server
    local a b
    a=$(rand_word 12) b=$(rand_word 12)
    run client <<<"$(printf '%s\n%s\n' "$a" "$b")"
    [ "$status" -eq 0 ]
    expect_eq "replies" "$(printf '%s\n' "$a" "$b")" "$output"
}

@test "usage: -h names this step, explains every flag of it, and exits 0" {
    run "$LAB_SERVER" -h
    [ "$status" -eq 0 ]
    # The line after "usage:" says which step this is: a help text copied
    # from the step before would name that step instead.
    local what=${lines[1]}
    [[ $what == "$STEP_NAME: "* ]] || { echo "-h line 2 should start '$STEP_NAME: ', is: $what" >&2; false; }
    local flags=(-H -p -m -v -h)
    ((STEP_NUM >= 4)) && flags+=(-w -D -b)
    ((STEP_NUM >= 5)) && flags+=(-a -g -i)
    for f in "${flags[@]}"; do
        grep -qE -- "^ +$f " <<<"$output" || { echo "-h does not explain $f" >&2; false; }
    done
}

@test "usage: an unknown flag or a bad value exits 2 with the usage message" {
    run "$LAB_SERVER" -Z
    [ "$status" -eq 2 ]
    [[ $output == *usage:* ]]
    run "$LAB_SERVER" -p 70000
    [ "$status" -eq 2 ]
    [[ $output == *"bad port"* ]]
    run "$LAB_SERVER" -m 0
    [ "$status" -eq 2 ]
    [[ $output == *"bad max frame"* ]]
    run "$LAB_SERVER" -m 4294967296
    [ "$status" -eq 2 ]
    [[ $output == *"bad max frame"* ]]
}

@test "usage: every -m the help accepts starts the server, up to 4294967295" {
    start_server -m 4294967295
    run client -x "$(rand_word 10)"
    [ "$status" -eq 0 ]
}

@test "startup: a port already in use exits 1 and says why" {
    start_server
    run "$LAB_SERVER" -p "$SERVER_PORT"
    [ "$status" -eq 1 ]
    [[ $output == *"Address already in use"* ]] || { echo "got: $output" >&2; false; }
}

# bats test_tags=lab:s01-serve
@test "-v: connection open and close are logged in the documented format" {
    start_server -v
    run client hello
    [ "$status" -eq 0 ]
    wait_for_line "$SERVER_LOG" '^conn=1 close reason=eof '
    grep -qE '^conn=1 open (worker=[0-9]+ )?peer=127\.0\.0\.1:[0-9]+$' "$SERVER_LOG"
}

@test "IPv6: -H ::1 listens on [::1]:PORT and echoes" {
    grep -q '^00000000000000000000000000000001 ' /proc/net/if_inet6 2>/dev/null ||
        skip "this machine has no IPv6 loopback (::1)"
    start_server -H ::1 -v
    run cat "$SERVER_OUT"
    [[ $output =~ ^listening\ on\ \[::1\]:[0-9]+$ ]] || { echo "stdout: $output" >&2; false; }
    local w
    w=$(rand_word 12)
    run client -H ::1 -x "$w"
    [ "$status" -eq 0 ]
    expect_eq "reply over IPv6" "$w" "$output"
    wait_for_line "$SERVER_LOG" '^conn=1 close reason=eof '
    grep -qE '^conn=1 open (worker=[0-9]+ )?peer=\[::1\]:[0-9]+$' "$SERVER_LOG"
}

# bats test_tags=lab:s01-write
@test "EINTR: a server stopped and continued (SIGSTOP/SIGCONT) keeps serving" {
    start_server
    local w
    w=$(rand_word 8)
    kill -STOP "$SERVER_PID"
    kill -CONT "$SERVER_PID"
    run client "$w"
    [ "$status" -eq 0 ]
    expect_eq "reply" "$w" "$output"
}

@test "one client at a time (step01-02): a second client waits until the first leaves" {
    before_step 3 "step03 serves clients concurrently: see 03-epoll.bats"
    start_server
    mkfifo "$BATS_TEST_TMPDIR/a.in"
    client <"$BATS_TEST_TMPDIR/a.in" >"$BATS_TEST_TMPDIR/a.out" 3>&- &
    local a_pid=$!
    exec 4>"$BATS_TEST_TMPDIR/a.in"
    echo first >&4
    wait_for_line "$BATS_TEST_TMPDIR/a.out" '^first$'

    # A is connected and idle.  B connects (the kernel completes the handshake
    # from the backlog) but the server is blocked in read() on A: no reply.
    run "$CLIENT" -p "$SERVER_PORT" -t 1 second
    [ "$status" -eq 1 ]
    [[ $output == *"timed out"* ]] || { echo "B was served while A was connected: $output" >&2; false; }

    exec 4>&- # A's stdin ends, A closes, the server moves on
    wait "$a_pid"
    run client third
    [ "$status" -eq 0 ]
    expect_eq "reply after A left" third "$output"
}

@test "quiet by default: without -v, serving 2,000 frames writes nothing to stderr" {
    start_server
    run client -x -q -b -n 2000 "$(rand_word 20)"
    [ "$status" -eq 0 ]
    stop_server
    # Printing on the hot path costs more than echoing: only -v logs frames.
    # (Under valgrind the log is memcheck's own file, not stderr.)  From
    # step05 the graceful shutdown always logs its start and a summary.
    run grep -vE '^(shutdown: |summary )' "$SERVER_LOG"
    [[ -z $output ]] || { echo "stderr: $(head -n 5 <<<"$output")" >&2; false; }
}

# bats test_tags=lab:s01-serve
@test "loadgen (the benchmark client) runs clean against this step: every byte checked" {
    start_server
    local conns=1 depth=1 n
    # steps 01-02 serve one client at a time: one connection, no pipelining.
    ((STEP_NUM >= 3)) && conns=16 depth=4
    n=$(scaled 500)
    run loadgen -c "$conns" -d "$depth" -s 100 -n "$n" --csv
    [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
    expect_eq "errors" 0 "$(csv_field errors)"
    expect_eq "messages" $((conns * n)) "$(csv_field msgs)"
}
