#!/usr/bin/env bash
# Measures `arduino up` at scale, in one run, and prints a markdown table:
#
#   bash bench/scale.sh          # RUNS=3 by default: each figure is the median of RUNS runs
#
# 1. Throughput: PAIRS clocks (delay 0, TACKS ticks each) driving iopin -> buzzer pairs, all in
#    one `arduino up`, on 1 thread and on 2: ticks per second from start to exit.
# 2. One chain clock -> iopin -> buzzer (TICKS ticks, delay 0): CPU per tick (utime + stime
#    of every process, from /proc/PID/stat) with the nodes in one `arduino up` (in-process
#    links) beside the same chain as three processes linked over loopback websockets; pinned
#    to one core, then unpinned.
# 3. BIG sketches (BIG/2 portless iopin -> buzzer pairs) in one `arduino up`: time until every
#    node serves (up's own "all N nodes serving" line), resident memory, CPU while idle, and
#    the time from SIGTERM to exit.
#
# Only loopback traffic; everything started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x /usr/bin/time ] || { echo "bench/scale.sh needs GNU time (apt-get install time)" >&2; exit 1; }

RUNS=${RUNS:-3}
PAIRS=${PAIRS:-200}
TACKS=${TACKS:-5000}
TICKS=${TICKS:-100000}
BIG=${BIG:-100000}
export RUST_LOG="arduino=warn"
CLK_TCK=$(getconf CLK_TCK)

cargo build --release --quiet --bin arduino
BIN=target/release/arduino
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
now() { date +%s.%N; }
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }

# pairs_mesh N TACKS PORTLESS: N clocks (TACKS ticks, delay 0) -> iopin -> buzzer; with
# TACKS=0, no clocks.
pairs_mesh() {
    awk -v n="$1" -v tacks="$2" 'BEGIN {
        for (i = 1; i <= n; i++) {
            if (tacks > 0) printf "[[node]]\nname = \"clock-%d\"\nsketch = \"clock\"\nto = [\"iopin-%d\"]\n[node.config]\ntacks = %d\ndelay = 0\n", i, i, tacks
            printf "[[node]]\nname = \"iopin-%d\"\nsketch = \"iopin\"\nto = [\"buzzer-%d\"]\n", i, i
            printf "[[node]]\nname = \"buzzer-%d\"\nsketch = \"buzzer\"\n", i
        }
    }'
}

# run_timed OUT CMD...: run CMD to its end; OUT gets "wall SECONDS" and "cpu TICKS" (user +
# system, from GNU time: nothing else runs meanwhile, for a 2-thread run needs both cores).
run_timed() {
    local out=$1
    shift
    /usr/bin/time -f "wall %e
cpu %U %S" -o "$out.raw" "$@" 2>"$WORK/timed.log" || {
        echo "failed: $*: $(tail -n 3 "$WORK/timed.log")" >&2
        exit 1
    }
    awk -v hz="$CLK_TCK" '/^wall / { print } /^cpu / { printf "cpu %.0f\n", ($2 + $3) * hz }' "$out.raw" >"$out"
}

echo "## Throughput: $PAIRS clocks -> iopin -> buzzer in one up, $TACKS ticks each" >&2
pairs_mesh "$PAIRS" "$TACKS" >"$WORK/pairs.toml"
declare -A rate
for threads in 1 2; do
    for _ in $(seq 1 "$RUNS"); do
        run_timed "$WORK/t" "$BIN" up --threads "$threads" --mesh "$WORK/pairs.toml"
        awk -v t=$((PAIRS * TACKS)) '/^wall / { printf "%.0f\n", t / $2 }' "$WORK/t"
    done >"$WORK/rate.$threads"
    rate[$threads]=$(median <"$WORK/rate.$threads")
    echo "  $threads thread(s): ${rate[$threads]} ticks/s" >&2
done

echo "## One chain, $TICKS ticks: in one up vs three processes over loopback" >&2
cat >"$WORK/chain.toml" <<EOF
[[node]]
name = "clock"
to = ["iopin"]
[node.config]
tacks = $TICKS
delay = 0

[[node]]
name = "iopin"
port = 0
to = ["buzzer"]

[[node]]
name = "buzzer"
port = 0
EOF
# chain_apart PIN: the chain as three processes; prints the CPU per tick of all three, in us.
chain_apart() {
    local pin=$1 run=()
    [ "$pin" = pinned ] && run=(taskset -c 0)
    local bport iport
    bport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    iport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    sed "0,/port = 0/s//port = $iport/; 0,/port = 0/s//port = $bport/" "$WORK/chain.toml" >"$WORK/apart.toml"
    RUST_LOG="arduino=warn,arduino::events=info" "${run[@]}" "$BIN" buzzer --mesh "$WORK/apart.toml" 2>"$WORK/b.log" &
    local b=$!
    RUST_LOG="arduino=warn,arduino::events=info" "${run[@]}" "$BIN" iopin --mesh "$WORK/apart.toml" 2>"$WORK/i.log" &
    local i=$!
    PIDS+=("$b" "$i")
    for _ in $(seq 1 500); do
        grep -q "listening on" "$WORK/b.log" && grep -q "listening on" "$WORK/i.log" && break
        sleep 0.01 # polling for readiness
    done
    local b0 i0
    b0=$(cpu_ticks "$b")
    i0=$(cpu_ticks "$i")
    run_timed "$WORK/c" "${run[@]}" "$BIN" clock --mesh "$WORK/apart.toml"
    local servers=$(($(cpu_ticks "$b") - b0 + $(cpu_ticks "$i") - i0))
    kill "$b" "$i"
    wait "$b" "$i" 2>/dev/null || true
    awk -v s="$servers" -v hz="$CLK_TCK" -v t="$TICKS" '/^cpu / { printf "%.2f %.2f\n", (s + $2) * 1e6 / hz / t, s * 1e6 / hz / t }' "$WORK/c"
}
# chain_up PIN: the chain in one `arduino up --threads 1`; the CPU per tick, in us.
chain_up() {
    local pin=$1 run=()
    [ "$pin" = pinned ] && run=(taskset -c 0)
    run_timed "$WORK/u" "${run[@]}" "$BIN" up --threads 1 --mesh "$WORK/chain.toml"
    awk -v hz="$CLK_TCK" -v t="$TICKS" '/^cpu / { printf "%.2f\n", $2 * 1e6 / hz / t }' "$WORK/u"
}
declare -A chain
for pin in pinned unpinned; do
    for _ in $(seq 1 "$RUNS"); do
        chain_up "$pin" >>"$WORK/up.$pin"
        chain_apart "$pin" >>"$WORK/apart.$pin"
    done
    chain[up.$pin]=$(median <"$WORK/up.$pin")
    chain[all.$pin]=$(awk '{ print $1 }' "$WORK/apart.$pin" | median)
    chain[servers.$pin]=$(awk '{ print $2 }' "$WORK/apart.$pin" | median)
    echo "  $pin: one up ${chain[up.$pin]} us/tick; apart ${chain[all.$pin]} us/tick (servers ${chain[servers.$pin]})" >&2
done

echo "## $BIG sketches, portless, in one up" >&2
pairs_mesh $((BIG / 2)) 0 >"$WORK/big.toml"
for _ in $(seq 1 "$RUNS"); do
    RUST_LOG="arduino=info,arduino::sketches=warn" "$BIN" up --mesh "$WORK/big.toml" 2>"$WORK/big.log" &
    pid=$!
    PIDS+=("$pid")
    for _ in $(seq 1 3000); do
        grep -q "serving, " "$WORK/big.log" && break
        sleep 0.01 # polling for readiness
    done
    ready=$(sed -n 's/.*serving, \([0-9.]*\)s after start.*/\1/p' "$WORK/big.log")
    [ -n "$ready" ] || { echo "the big mesh did not come up: $(tail -n 3 "$WORK/big.log")" >&2; exit 1; }
    rss=$(awk '/^VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$pid/status")
    sleep 1 # settle: the last nodes' first polls
    c0=$(cpu_ticks "$pid")
    sleep 3 # the idle window measured
    idle=$(( $(cpu_ticks "$pid") - c0 ))
    asked=$(now)
    kill -TERM "$pid"
    wait "$pid"
    stopped=$(echo "$(now) - $asked" | bc -l)
    printf '%s %s %s %s\n' "$ready" "$rss" "$(echo "$idle * 100 / $CLK_TCK / 3" | bc -l)" "$stopped"
done >"$WORK/big"
big_ready=$(awk '{ print $1 }' "$WORK/big" | median)
big_rss=$(awk '{ print $2 }' "$WORK/big" | median)
big_idle=$(awk '{ printf "%.1f\n", $3 }' "$WORK/big" | median)
big_stop=$(awk '{ printf "%.2f\n", $4 }' "$WORK/big" | median)

cat <<EOF

| \`arduino up\` at scale (median of $RUNS) | figure |
|---|---|
| $PAIRS clock -> iopin -> buzzer chains, 1 thread | ${rate[1]} ticks/s |
| the same, 2 threads | ${rate[2]} ticks/s ($(echo "${rate[2]} / ${rate[1]}" | bc -l | xargs printf '%.2f')x) |
| one chain, CPU per tick, pinned: in one up / three processes | ${chain[up.pinned]} / ${chain[all.pinned]} us ($(echo "${chain[up.pinned]} / ${chain[all.pinned]}" | bc -l | xargs printf '%.2f')x; servers alone ${chain[servers.pinned]} us) |
| the same, unpinned | ${chain[up.unpinned]} / ${chain[all.unpinned]} us ($(echo "${chain[up.unpinned]} / ${chain[all.unpinned]}" | bc -l | xargs printf '%.2f')x; servers alone ${chain[servers.unpinned]} us) |
| $BIG portless sketches: every node serving | ${big_ready} s |
| the same: resident memory | ${big_rss} MiB |
| the same: CPU while idle | ${big_idle}% of a core |
| the same: SIGTERM to exit | ${big_stop} s |
EOF
