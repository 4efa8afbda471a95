#!/usr/bin/env bats
# robustness: every way a peer can cut, glue or break the byte stream.
# Each case runs against every step; a case that needs frames (a limit, a
# partial frame) skips on step01, which echoes raw bytes.

load helpers

teardown() {
    lab_teardown
}

# bats test_tags=lab:s01-serve,lab:s02-frames
@test "zero-length frames mixed with normal ones are each answered, in order" {
    start_server
    local a b
    a=$(rand_word 7) b=$(rand_word 1)
    run client -x "" "$a" "" "" "$b" ""
    [ "$status" -eq 0 ]
    expect_eq "replies" "$(printf '%s\n' "" "$a" "" "" "$b" "")" "$output"
}

# bats test_tags=lab:s01-serve,lab:s02-frames
@test "a frame split at every byte (one byte per write) comes back whole" {
    start_server
    local w
    w=$(rand_word 60)
    run client -x -c 1 -D 500 "$w"
    [ "$status" -eq 0 ]
    expect_eq "reply" "$w" "$output"
}

# bats test_tags=lab:s01-serve,lab:s02-decode
@test "a header split 1+3, 2+2 and 3+1 across writes is reassembled" {
    start_server
    local w split
    w=$(rand_word 20)
    for split in 1,3,65536 2,2,65536 3,1,65536; do
        run client -x -c "$split" -D 20000 "$w"
        [ "$status" -eq 0 ] || { echo "split $split: $output" >&2; false; }
        expect_eq "reply (split $split)" "$w" "$output"
    done
}

# bats test_tags=lab:s01-serve,lab:s02-frames,lab:s03-drain
@test "thousands of frames in one write are each answered, in order" {
    start_server
    local n w
    n=$(scaled 5000)
    w=$(rand_word 16)
    run client -x -b -q -n "$n" "$w" "x$w"
    [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
}

# bats test_tags=lab:s01-write,lab:s02-buffer,lab:s03-drain
@test "short reads and short writes (at most 7 bytes per call) lose nothing" {
    # tests/shortio.c cuts every socket read and write the server makes to
    # 7 bytes: code that assumes a call moves everything it was given fails.
    before_step 6 "io_uring reads and writes inside the kernel, past any LD_PRELOAD shim"
    use_shim shortio.so SHORTIO_MAX=7
    start_server
    run client -x -q -b -n 3 "$(rand_word 5)" -z "$(scaled 50000)"
    [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
}

# bats test_tags=lab:s01-write,lab:s02-buffer,lab:s03-flush
@test "short writes after large reads (reads up to 64 KiB, writes at most 7 bytes) lose nothing" {
    # An echo never writes more than one read brought, so with both capped
    # at 7 bytes (above) a write loop that stops after one call still
    # passes.  Large reads and tiny writes make every reply a short write.
    before_step 6 "io_uring reads and writes inside the kernel, past any LD_PRELOAD shim"
    use_shim shortio.so SHORTIO_READ_MAX=65536 SHORTIO_WRITE_MAX=7
    start_server
    run client -x -q -b -n 3 -z "$(scaled 50000)"
    [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
}

# bats test_tags=lab:s01-serve,lab:s02-decode
@test "a frame of exactly the maximum size is echoed" {
    start_server -m 4096
    run client -x -q -z 4096
    [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
}

# bats test_tags=lab:s02-decode
@test "a frame one byte over the maximum closes the connection after earlier replies" {
    require_step 2 "a frame limit needs frames"
    start_server -m 4096
    run --separate-stderr client -x -b ok1 ok2 "$(rand_word 4097)"
    [ "$status" -eq 1 ]
    expect_eq "replies before the bad frame" "$(printf 'ok1\nok2')" "$output"
    [[ $stderr == *"closed the connection after 2 of 3 replies"* ]]
    grep -qE '^conn=1 (worker=[0-9]+ )?error=protocol len=4097 max=4096$' "$SERVER_LOG"
}

# bats test_tags=lab:s02-decode
@test "the largest length field (0xFFFFFFFF) is refused without allocating it" {
    require_step 2 "a frame limit needs frames"
    start_server
    local before after
    before=$(server_status_field VmPeak)
    run client -r ffffffff41414141
    [ "$status" -eq 0 ] || { echo "server did not close: $output" >&2; false; }
    grep -qE 'error=protocol len=4294967295 max=1048576$' "$SERVER_LOG"
    after=$(server_status_field VmPeak)
    # Allocating the declared 4 GiB would raise the peak by 4 GiB; buffering
    # one read costs at most a few MiB.  (VmPeak counts even untouched memory.)
    ((after - before < 262144)) || { echo "VmPeak grew from $before kB to $after kB" >&2; false; }
    run client -x still-serving
    [ "$status" -eq 0 ]
}

# bats test_tags=lab:s02-frames,lab:s03-drain
@test "EOF mid-frame: earlier replies arrive, the partial frame is dropped, then EOF" {
    require_step 2 "a partial frame needs frames (step01 echoes the raw bytes)"
    start_server -v
    local a
    a=$(rand_word 9)
    # 0x64 = 100 bytes declared, 3 sent, then shutdown(SHUT_WR).
    run client -x -b -s "$a" -r 00000064616263
    [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
    expect_eq "replies" "$a" "$output"
    wait_for_line "$SERVER_LOG" 'error=eof-mid-frame dropped=7$'
}

# bats test_tags=lab:s01-serve
@test "a reset (RST) mid-frame closes that connection only; the server serves on" {
    start_server -v
    run client -R -r 0000006441
    [ "$status" -eq 0 ]
    wait_for_line "$SERVER_LOG" '^conn=1 .*close reason=(reset|eof-mid-frame|eof)'
    run client -x after-reset
    [ "$status" -eq 0 ]
    server_alive
}

# bats test_tags=lab:s01-serve,lab:s02-frames,lab:s03-drain
@test "half-close with replies pending: every reply arrives, then EOF" {
    start_server
    local n w
    n=$(scaled 2000)
    w=$(rand_word 100)
    # -s: send everything, shutdown(SHUT_WR), then read to EOF.  The client
    # exits non-zero if EOF comes before the last reply.
    run client -x -q -b -s -n "$n" "$w"
    [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
}

@test "a hundred clients one after another are all served" {
    start_server
    local n w
    n=$(scaled 100)
    w=$(rand_word 10)
    run client -x -k "$n" "$w"
    [ "$status" -eq 0 ]
    expect_eq "replies" "$n" "$(grep -c "^$w\$" <<<"$output")"
}

# bats test_tags=lab:s02-frames
@test "garbage after a valid frame: the valid reply arrives, then the server closes" {
    require_step 2 "telling garbage from data needs frames"
    start_server
    local a
    a=$(rand_word 11)
    # Garbage that parses as a header declaring 0xdeadbeef bytes.
    run client -x -b "$a" -r deadbeef0102030405
    [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
    expect_eq "reply" "$a" "$output"
    grep -q 'error=protocol len=3735928559' "$SERVER_LOG"
}

# bats test_tags=lab:s01-write,lab:s03-flush
@test "a peer that resets while replies are pending does not kill the server (SIGPIPE)" {
    start_server
    # 4 MiB of frames, then an immediate RST: the server's next write fails
    # with ECONNRESET, and it serves the next client.
    run client -R -b -q -n 64 -z 65536
    run client -x alive
    [ "$status" -eq 0 ]
    # The same after a half-close: the server's socket is in CLOSE_WAIT when
    # the RST comes, so its next write fails with EPIPE at once - and raises
    # SIGPIPE, which kills the process, unless the send says MSG_NOSIGNAL.
    local i
    for i in 1 2 3; do
        run client -s -R -b -q -n 64 -z 65536
        run client -x alive
        [ "$status" -eq 0 ] || { echo "round $i: the server died: $output" >&2; false; }
    done
    server_alive
}

@test "out of file descriptors (accept fails with EMFILE): no busy loop, no flood of log lines" {
    # tests/acceptfault.c makes every accept4() fail with EMFILE, as at the fd
    # limit.  steps 01-02 must back off instead of retrying at once; from
    # step03 the server sheds the client (spare-fd trick) and goes idle.
    use_shim acceptfault.so ACCEPT4_FAIL=EMFILE
    start_server
    "$CLIENT" -p "$SERVER_PORT" -t 3 knock >/dev/null 2>&1 3>&- &
    wait_for_line "$SERVER_LOG" '^accept: Too many open files'
    local lines0 lines1
    lines0=$(log_lines)
    expect_no_spin "the server"
    lines1=$(log_lines)
    ((lines1 - lines0 <= 20)) || { echo "$((lines1 - lines0)) log lines in 1 s:" >&2; tail -n 5 "$SERVER_LOG" >&2; false; }
    if ((STEP_NUM >= 3)); then
        # Shed: one line per dropped client, and no other accept line (an
        # empty backlog after shedding is normal, not an error).
        run grep -c 'accept: Too many open files: dropped a connection' "$SERVER_LOG"
        expect_eq "connections dropped" 1 "$output"
        run grep -v 'dropped a connection' "$SERVER_LOG"
        expect_eq "other log lines" "" "$output"
    fi
}
