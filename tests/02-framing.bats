#!/usr/bin/env bats
# 02-framing: length-prefixed frames (粘包/拆包) from step02 on.

load helpers

teardown() {
    lab_teardown
}

# bats test_tags=lab:s02-frames
@test "-v logs one 'frame len=N' line per frame, in order" {
    require_step 2 "step01 echoes raw bytes and has no frames to log"
    start_server -v
    run client -b -x "" abc "$(rand_word 300)"
    [ "$status" -eq 0 ]
    wait_for_line "$SERVER_LOG" 'close reason=eof frames=3 '
    run grep -oE 'frame len=[0-9]+$' "$SERVER_LOG"
    expect_eq "frame log" "$(printf 'frame len=0\nframe len=3\nframe len=300')" "$output"
}

# bats test_tags=lab:s02-buffer
@test "a frame larger than one read (256 KiB) is reassembled and echoed" {
    start_server
    run client -x -q -z 262144
    [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
}

# bats test_tags=lab:s02-buffer
@test "frames that straddle read boundaries come back whole and in order" {
    start_server
    local n
    n=$(scaled 400)
    # 1001-byte frames never line up with a 64 KiB read: most reads end
    # mid-frame, many mid-header.
    run client -x -q -b -n "$n" "$(rand_word 997)" "$(rand_word 1)"
    [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
}

# bats test_tags=lab:s02-decode
@test "-m sets the limit: a 16-byte frame passes -m 16, a 17-byte one is a protocol error" {
    require_step 2 "a frame limit needs frames"
    start_server -m 16
    run client -x 0123456789abcdef
    [ "$status" -eq 0 ]
    run client -x 0123456789abcdefg
    [ "$status" -eq 1 ]
    grep -qE 'error=protocol len=17 max=16$' "$SERVER_LOG"
}

# bats test_tags=lab:s02-frames
@test "a reply leaves in one send: never the header and the payload in separate writes" {
    require_step 2 "step01 writes whatever one read returned"
    before_step 6 "io_uring sends from inside the kernel: no send system call to count"
    command -v strace >/dev/null || skip "needs strace (apt-get install strace)"
    [[ $LAB_MODE == plain ]] || skip "strace counts the server's own syscalls: plain build only"
    start_server
    local trace="$BATS_TEST_TMPDIR/strace.out"
    # -f: every thread; -yy: name each fd, so writes to the wake pipe of
    # step04's workers are not counted as sends to a client.
    strace -f -yy -e trace=write,writev,send,sendto,sendmsg -o "$trace" -p "$SERVER_PID" \
        2>"$BATS_TEST_TMPDIR/strace.err" 3>&- &
    local strace_pid=$!
    wait_for_line "$BATS_TEST_TMPDIR/strace.err" 'attached'
    local w
    w=$(rand_word 100)
    run client -x "$w"
    [ "$status" -eq 0 ]
    # The reply has arrived, but strace may not have written the call's
    # result yet (and with -f a call another thread interrupts is split into
    # "<unfinished ...>" and "<... resumed>" lines): detaching now could cut
    # it off.  Wait for the result of a send of header + payload, 104 bytes.
    local sent='(write|writev|send|sendto|sendmsg)\([0-9]+<TCP.*= 104$|resumed>.*= 104$'
    wait_for_line "$trace" "$sent" || { cat "$trace" >&2; false; }
    kill -INT "$strace_pid"
    wait "$strace_pid" || true
    # ... and it was the only send-family call on a TCP socket.
    run grep -cE '(write|writev|send|sendto|sendmsg)\([0-9]+<TCP' "$trace"
    expect_eq "send calls for one reply" 1 "$output" || { cat "$trace" >&2; false; }
}
