#!/usr/bin/env bats
# instruments: the measuring tools must be right before their numbers mean
# anything.  These tests check correctness (every byte verified, faults
# caught), never speed.

load helpers

REF_ECHO="$LAB_TOP/tools/ref-echo"
FAULTY="$LAB_TOP/tests/bin/faulty-echo"

teardown() {
    lab_teardown
}

@test "loadgen: a closed-loop run against this step's server reports zero errors" {
    start_server
    local conns=1 depth=1
    # steps 01-02 serve one client at a time: one connection, no pipelining.
    ((STEP_NUM >= 3)) && conns=16 depth=4
    local n
    n=$(scaled 500)
    run loadgen -c "$conns" -d "$depth" -s 100 -n "$n" --csv
    [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
    expect_eq "errors" 0 "$(csv_field errors)"
    expect_eq "messages" $((conns * n)) "$(csv_field msgs)"
}

@test "loadgen: a pipelined run on 32 connections against ref-echo reports zero errors" {
    start_program "$REF_ECHO"
    run loadgen -c 32 -d 8 -s 700 -n 300 --csv
    [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
    expect_eq "errors" 0 "$(csv_field errors)"
    expect_eq "messages" $((32 * 300)) "$(csv_field msgs)"
}

@test "loadgen: one corrupted byte in 5000 is reported and fails the run" {
    start_program "$FAULTY" -f corrupt -n 5000
    run --separate-stderr loadgen -c 1 -s 64 -n 1000
    [ "$status" -eq 1 ]
    [[ $stderr == *"corrupted"* ]] || { echo "stderr: $stderr" >&2; false; }
}

@test "loadgen: replies swapped between two connections are reported" {
    start_program "$FAULTY" -f swap
    run --separate-stderr loadgen -c 2 -s 64 -n 100
    [ "$status" -eq 1 ]
    [[ $stderr == *"replies crossed between connections"* ]] || { echo "stderr: $stderr" >&2; false; }
}

@test "loadgen: open loop charges a server stall to every frame due during it (coordinated omission)" {
    # The server stops answering for 300 ms after 300 frames (68 bytes each).
    # At 1000 frames/s with one frame in flight, ~300 frames fall due during
    # the stall.  Measured from their intended send times, about a fifth of
    # the second's frames are >= 100 ms late, so p90 is far above 50 ms.  A
    # closed loop, or timing from the actual send, would report one slow frame.
    start_program "$FAULTY" -f stall -n 20400 -s 300
    run loadgen -c 1 -d 1 -R 1000 -T 1 -W 0 --csv
    [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
    local p90 lag
    p90=$(csv_field p90_us)
    lag=$(csv_field lag_max_us)
    ((${p90%.*} >= 50000)) || { echo "p90 = $p90 us: the stall was hidden" >&2; false; }
    ((${lag%.*} >= 100000)) || { echo "schedule lag max = $lag us" >&2; false; }
}

@test "loadgen -I: idle connections are each served once and counted" {
    start_program "$REF_ECHO"
    run loadgen -I 200 -P "$SERVER_PID" --csv
    [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
    expect_eq "idle connections" 200 "$(csv_field idle_conns)"
    # The figure is the server's RSS growth, read from /proc, per connection.
    local before after
    before=$(csv_field rss_before_kib) after=$(csv_field rss_after_kib)
    ((before > 0 && after >= before)) || { echo "RSS $before -> $after kB" >&2; false; }
    expect_eq "bytes per connection" $((((after - before) * 1024 + 100) / 200)) \
        "$(printf '%.0f' "$(csv_field bytes_per_conn)")"
}

@test "loadgen and ref-echo: -h explains every option; a bad one exits 2" {
    run "$LAB_TOP/tools/loadgen" -h
    [ "$status" -eq 0 ]
    local f
    for f in -H -p -c -d -s -T -W -t -n -R -P -I --csv -h; do
        grep -qE -- "^ +$f " <<<"$output" || { echo "loadgen -h does not explain $f" >&2; false; }
    done
    run "$LAB_TOP/tools/loadgen" -c 0
    [ "$status" -eq 2 ]
    run "$REF_ECHO" -h
    [ "$status" -eq 0 ]
    [[ $output == *"-p PORT"* ]]
}
