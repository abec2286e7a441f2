#!/usr/bin/env bash
# Measures arduino beside this machine's floors, in one run, and prints a markdown table.
# (bench/hostile.py measures what hostile clients cost a node: latency, stop time, links.)
#
#   bash bench/run.sh            # RUNS=5 by default: each figure is the median of RUNS runs
#   bash bench/run.sh nats       # only the NATS section (needs nats-server on PATH)
#   bash bench/run.sh cpu        # only the hop's server CPU per message, with and without a
#                                # listener on /events, and with `[node.input] debounce` beside
#                                # a plain buzzer under 8 clients (BASELINE=path/to/arduino:
#                                # also that one)
#
# Floors: 1-byte ping-pong over loopback TCP (examples/tcp_floor), and a bare
# tokio-tungstenite echo server with the library's default settings (examples/echo_floor).
# Every latency figure is measured twice: all processes pinned to one core (taskset -c 0),
# and unpinned. Server CPU per message is the server process's utime + stime (from
# /proc/PID/stat) over a run, divided by the messages it acknowledged (warmup included).
# Only loopback traffic; everything started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-5}
# Nodes log only their lifecycle (the "listening on" line the script reads), not a line per
# message: a write to stderr per message would be measured, not the runtime.
export RUST_LOG="arduino=warn,arduino::events=info"
N_PINNED=${N_PINNED:-20000}
N_UNPINNED=${N_UNPINNED:-5000}
# Enough messages per CPU run that one clock tick (10 ms, usually) is about 1% of the
# server CPU a run measures.
N_CPU=${N_CPU:-100000}
# The debounce figure: this many clients stop-and-wait, so that messages arrive within each
# other's debounce time and supersede each other.
N_DEBOUNCE=${N_DEBOUNCE:-50000}
DEBOUNCE_CLIENTS=${DEBOUNCE_CLIENTS:-8}
WARMUP=100
CLK_TCK=$(getconf CLK_TCK)

cargo build --release --quiet --bin arduino --example tcp_floor --example echo_floor
BIN=target/release/arduino
TCP=target/release/examples/tcp_floor
ECHO=target/release/examples/echo_floor
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# start NAME PIN CMD...: start a server, wait for its "listening on ..." line, set ADDR and PID.
start() {
    local name=$1 pin=$2
    shift 2
    local log="$WORK/$name.log"
    # Emptied here, not by the redirection below: that one runs in the child, and the loop
    # could read a previous server's address before it does.
    : >"$log"
    if [ "$pin" = pinned ]; then taskset -c 0 "$@" 2>"$log" & else "$@" 2>"$log" & fi
    PID=$!
    PIDS+=("$PID")
    for _ in $(seq 1 500); do
        ADDR=$(grep -o 'listening on [^ ]*' "$log" | head -n 1 | sed 's/listening on //; s#ws://##') || true
        [ -n "$ADDR" ] && return 0
        sleep 0.01 # polling for readiness
    done
    echo "$name did not start: $(cat "$log")" >&2
    exit 1
}

stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# p50 of the bench line "round trip: p50 X us, ..."
p50_of() { sed -n 's/.*p50 \([0-9.]*\) us.*/\1/p'; }
rate_of() { sed -n 's/.*: \([0-9]*\) msgs\/s.*/\1/p'; }
# Acknowledgements of the bench line "acknowledged A of S (E errors) ...": A + E.
acks_of() { sed -n 's/^acknowledged \([0-9]*\) of [0-9]* (\([0-9]*\) errors).*/\1 \2/p' | awk '{ print $1 + $2 }'; }

# CPU time a process has used so far, in clock ticks: utime + stime, fields 14 and 15 of
# /proc/PID/stat (counted after the ")" that ends the command name, which may hold spaces).
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }

# cpu_bench PID CLIENTS BENCH_ARGS...: run one bench against the server PID; print the bench's
# rate and the server's CPU per message it acknowledged (measured and warmup), in us.
cpu_bench() {
    local pid=$1 clients=$2 before after out acks
    shift 2
    before=$(cpu_ticks "$pid")
    out=$("$@" --clients "$clients" --warmup "$WARMUP") || {
        echo "bench failed: $*" >&2
        exit 1
    }
    after=$(cpu_ticks "$pid")
    acks=$(($(acks_of <<<"$out") + WARMUP * clients))
    awk -v r="$(rate_of <<<"$out")" -v t=$((after - before)) -v hz="$CLK_TCK" -v n="$acks" \
        'BEGIN { printf "%s %.2f\n", r, t * 1e6 / hz / n }'
}

# column N: the Nth field of each line.
column() { awk -v n="$1" '{ print $n }'; }

# bench_p50 PIN URL: median p50 over RUNS runs, one client, stop and wait.
bench_p50() {
    local pin=$1 url=$2 n=$N_UNPINNED
    [ "$pin" = pinned ] && n=$N_PINNED
    for _ in $(seq "$RUNS"); do
        if [ "$pin" = pinned ]; then
            taskset -c 0 "$BIN" bench "$url" -n "$n" | p50_of
        else
            "$BIN" bench "$url" -n "$n" | p50_of
        fi
    done | median
}

tcp_p50() {
    local pin=$1 n=$N_UNPINNED
    [ "$pin" = pinned ] && n=$N_PINNED
    start tcp "$pin" "$TCP" server
    for _ in $(seq "$RUNS"); do
        if [ "$pin" = pinned ]; then taskset -c 0 "$TCP" client "$ADDR" "$n"; else "$TCP" client "$ADDR" "$n"; fi | p50_of
    done | median
    stop "$PID"
}

echo_p50() {
    start echo "$1" "$ECHO" 0
    bench_p50 "$1" "ws://$ADDR/datafeed"
    stop "$PID"
}

buzzer_p50() {
    start buzzer "$1" "$BIN" buzzer --port 0
    bench_p50 "$1" "ws://$ADDR/datafeed"
    stop "$PID"
}

chain_p50() {
    start buzzer "$1" "$BIN" buzzer --port 0
    local buzzer=$PID
    cat >"$WORK/chain.toml" <<TOML
[[node]]
name = "iopin"
port = 0
to = ["ws://$ADDR"]
[node.config]
sequence = 3
TOML
    start iopin "$1" "$BIN" iopin --mesh "$WORK/chain.toml"
    bench_p50 "$1" "ws://$ADDR/datafeed"
    stop "$PID"
    stop "$buzzer"
}

# The same chain with both nodes in one process (`arduino up`): no context switch between them.
chain_up_p50() {
    local iopin buzzer
    read -r iopin buzzer < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
    cat >"$WORK/up.toml" <<TOML
[[node]]
name = "iopin"
port = $iopin
to = ["buzzer"]
[node.config]
sequence = 3

[[node]]
name = "buzzer"
port = $buzzer
TOML
    start up "$1" "$BIN" up --mesh "$WORK/up.toml"
    bench_p50 "$1" "ws://127.0.0.1:$iopin/datafeed"
    stop "$PID"
}

# hop_cpu PIN NAME CMD...: median server CPU per message, one client, stop and wait. With
# LISTEN=1, a listener follows the node's /events all along (unpinned: its own CPU is not
# measured, only what feeding it costs the node).
hop_cpu() {
    local pin=$1 name=$2
    shift 2
    start "$name" "$pin" "$@"
    if [ "${LISTEN:-0}" = 1 ]; then
        : >"$WORK/sse-ready"
        curl -sN "http://$ADDR/events" | { head -c 6 >"$WORK/sse-ready"; cat >/dev/null; } &
        PIDS+=("$!")
        for _ in $(seq 1 500); do
            [ -s "$WORK/sse-ready" ] && break
            sleep 0.01 # polling until the listener has its stream's head
        done
        grep -q '^HTTP/1.1 200\|^retry' "$WORK/sse-ready" || {
            echo "no event stream from $name: $(cat "$WORK/sse-ready")" >&2
            exit 1
        }
    fi
    local client=("$BIN" bench "ws://$ADDR/datafeed" -n "$N_CPU")
    [ "$pin" = pinned ] && client=(taskset -c 0 "${client[@]}")
    for _ in $(seq "$RUNS"); do cpu_bench "$PID" 1 "${client[@]}"; done >"$WORK/cpu"
    column 2 <"$WORK/cpu" | median
    stop "$PID"
}

# The node's count of acks with OUTCOME (ok, superseded, error), from its /metrics.
acks_counted() {
    curl -s "http://$ADDR/metrics" | sed -n "s/^arduino_acks_total{outcome=\"$1\"} //p"
}

# shaped_cpu PIN BIN [DEBOUNCE]: a buzzer, with `[node.input] debounce = DEBOUNCE` when given,
# under DEBOUNCE_CLIENTS stop-and-wait clients: the median server CPU per message, and the
# share of all acks (over every run) that said `superseded`.
shaped_cpu() {
    local pin=$1 bin=$2 debounce=${3:-} ok superseded
    {
        echo '[[node]]'
        echo 'name = "buzzer"'
        echo 'port = 0'
        if [ -n "$debounce" ]; then
            echo '[node.input]'
            echo "debounce = $debounce"
        fi
    } >"$WORK/shaped.toml"
    start shaped "$pin" "$bin" buzzer --mesh "$WORK/shaped.toml"
    local client=("$BIN" bench "ws://$ADDR/datafeed" -n "$N_DEBOUNCE")
    [ "$pin" = pinned ] && client=(taskset -c 0 "${client[@]}")
    for _ in $(seq "$RUNS"); do
        cpu_bench "$PID" "$DEBOUNCE_CLIENTS" "${client[@]}"
    done >"$WORK/shaped"
    ok=$(acks_counted ok)
    superseded=$(acks_counted superseded)
    echo "$(column 2 <"$WORK/shaped" | median) $(awk -v s="${superseded:-0}" -v o="${ok:-0}" \
        'BEGIN { if (s + o > 0) printf "%d/%d=%.3f%%", s, s + o, 100 * s / (s + o); else print "-" }')"
    stop "$PID"
}

# many NAME CMD...: with 200 clients, unpinned (client included): the median msgs/s and the
# median server CPU per message.
many() {
    local name=$1
    shift
    start "$name" unpinned "$@"
    for _ in $(seq "$RUNS"); do
        cpu_bench "$PID" 200 "$BIN" bench "ws://$ADDR/datafeed" -n 200000
    done >"$WORK/many"
    echo "$(column 1 <"$WORK/many" | median) $(column 2 <"$WORK/many" | median)"
    stop "$PID"
}

rss_kib() { awk '/VmRSS/ { print $2 }' "/proc/$1/status"; }

# Memory of a buzzer: idle, then with 1,000 connected clients that have each sent a message.
memory() {
    start buzzer unpinned "$BIN" buzzer --port 0
    IDLE_KIB=$(rss_kib "$PID")
    "$BIN" bench "ws://$ADDR/datafeed" --clients 1000 -n 1000 --warmup 0 --hold 2 >"$WORK/hold.log" &
    local holder=$!
    PIDS+=("$holder")
    for _ in $(seq 1 1000); do
        grep -q acknowledged "$WORK/hold.log" && break
        sleep 0.01 # polling until every client has its ack, while they are held open
    done
    LOADED_KIB=$(rss_kib "$PID")
    wait "$holder"
    stop "$PID"
}

# Time from exec to the first accepted connection, median of RUNS.
startup_ms() {
    for _ in $(seq "$RUNS"); do
        python3 - "$BIN" <<'PY'
import socket, subprocess, sys, time
probe = socket.socket(); probe.bind(("127.0.0.1", 0)); port = probe.getsockname()[1]; probe.close()
began = time.perf_counter()
node = subprocess.Popen([sys.argv[1], "buzzer", "--port", str(port)], stderr=subprocess.DEVNULL)
while True:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        break
    except OSError:
        pass
print(f"{(time.perf_counter() - began) * 1000:.2f}")
node.terminate(); node.wait()
PY
    done | median
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }

# The NATS section: `bash bench/run.sh nats`, and at the end of a full run; only with
# nats-server on PATH. One nats-server on a free port, and on it, in one run: the floor
# (examples/nats_floor: a bare request-reply round trip over the same NATS client, one
# responder process), the NATS hop (the same requester, answered by a buzzer node through
# NATS), beside the websocket hop (arduino bench on a buzzer with a port); then fan-in: 8
# requesters at once on a buzzer of `arduino up` with replicas = 1 and = 2. Unpinned: the
# server is a process of its own. CPU per message is the responder's (the node's) utime +
# stime over the measured requests, from /proc.
N_NATS=${N_NATS:-20000}
nats_free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# nats_node NAME CMD...: start a node of a NATS mesh, wait until it is connected and answers.
nats_node() {
    local name=$1
    shift
    local log="$WORK/$name.log"
    : >"$log"
    RUST_LOG="arduino=warn,arduino::nats=info" "$@" 2>"$log" &
    PID=$!
    PIDS+=("$PID")
    for _ in $(seq 1 500); do
        grep -q 'NATS connected' "$log" && grep -q 'answering on' "$log" && return 0
        sleep 0.01 # polling for readiness
    done
    echo "$name did not start: $(cat "$log")" >&2
    exit 1
}

# floor_run ARGS...: one run of nats_floor: "us-each responder-cpu msgs/s".
floor_run() {
    "$NATS_FLOOR" "$@" | sed -n 's/.*: \([0-9]*\) msgs\/s, \([0-9.]*\) us each; CPU per message: responder \([0-9.]*\) us.*/\2 \3 \1/p'
}

# medians FILE: the median of each of the three columns of FILE.
medians() { echo "$(column 1 <"$1" | median) $(column 2 <"$1" | median) $(column 3 <"$1" | median)"; }

# floor_figures ARGS...: the medians of RUNS runs of nats_floor.
floor_figures() {
    for _ in $(seq "$RUNS"); do floor_run "$@"; done >"$WORK/floor"
    medians "$WORK/floor"
}

nats_section() {
    if ! command -v nats-server >/dev/null; then
        echo "nats-server is not on PATH: no NATS figures" >&2
        return 0
    fi
    cargo build --release --quiet --example nats_floor
    NATS_FLOOR=target/release/examples/nats_floor
    local port url server
    port=$(nats_free_port)
    url="nats://127.0.0.1:$port"
    nats-server -a 127.0.0.1 -p "$port" 2>"$WORK/nats-server.log" &
    server=$!
    PIDS+=("$server")
    for _ in $(seq 1 500); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.01 # polling for readiness
    done
    echo "measuring NATS (median of $RUNS runs each)..." >&2
    printf '[nats]\nurl = "%s"\n[[node]]\nname = "buzzer"\n' "$url" >"$WORK/nats-buzzer.toml"
    nats_node buzzer "$BIN" buzzer --mesh "$WORK/nats-buzzer.toml"
    # The floor and the hop run in turns, so that what else the machine does weighs on both.
    : >"$WORK/floor"
    : >"$WORK/hop"
    for _ in $(seq "$RUNS"); do
        floor_run "$url" -n "$N_NATS" >>"$WORK/floor"
        floor_run "$url" -n "$N_NATS" --node arduino.buzzer.datafeed --pid "$PID" >>"$WORK/hop"
    done
    read -r FLOOR_US FLOOR_CPU FLOOR_RATE < <(medians "$WORK/floor")
    read -r NHOP_US NHOP_CPU NHOP_RATE < <(medians "$WORK/hop")
    stop "$PID"
    WS_HOP=$(buzzer_p50 unpinned)
    WS_CPU=$(hop_cpu unpinned buzzer "$BIN" buzzer --port 0)
    for replicas in 1 2; do
        printf '[nats]\nurl = "%s"\n[[node]]\nname = "buzzer"\nreplicas = %s\n' "$url" "$replicas" \
            >"$WORK/nats-up.toml"
        nats_node "up$replicas" "$BIN" up --mesh "$WORK/nats-up.toml"
        read -r _ cpu rate < <(floor_figures "$url" -n "$N_NATS" -c 8 \
            --node arduino.buzzer.datafeed --pid "$PID")
        eval "FAN_RATE_$replicas=$rate FAN_CPU_$replicas=$cpu"
        stop "$PID"
    done
    stop "$server"
    cat <<TABLE

NATS: nats-server $(nats-server --version | sed 's/.*v//'), on loopback. Command: \`bash bench/run.sh nats\` (RUNS=$RUNS; medians; $N_NATS requests a run, stop and wait).

| figure | round trip (mean) | responder CPU per message | msgs/s | vs floor |
|---|---|---|---|---|
| NATS floor: bare request-reply over our client (examples/nats_floor) | $FLOOR_US us | $FLOOR_CPU us | $FLOOR_RATE | 1 |
| NATS hop: the same requester, a buzzer node answering through NATS | $NHOP_US us | $NHOP_CPU us | $NHOP_RATE | $(ratio "$NHOP_US" "$FLOOR_US") (target <= 1.2x) |
| websocket hop: \`arduino bench\` on a buzzer with a port (p50; CPU of the node) | $WS_HOP us | $WS_CPU us | | $(ratio "$WS_HOP" "$FLOOR_US") |

| fan-in, 8 requesters at once through NATS on \`arduino up\` | msgs/s | CPU per message (the up process) |
|---|---|---|
| buzzer, replicas = 1 | $FAN_RATE_1 | $FAN_CPU_1 us |
| buzzer, replicas = 2 | $FAN_RATE_2 | $FAN_CPU_2 us ($(ratio "$FAN_RATE_2" "$FAN_RATE_1") the rate of one) |
TABLE
}

if [ "${1:-}" = nats ]; then
    nats_section
    exit 0
fi

if [ "${1:-}" = cpu ]; then
    echo "measuring server CPU per message (median of $RUNS runs each)..." >&2
    rows=""
    for bin in "$BIN" ${BASELINE:+"$BASELINE"}; do
        for pin in pinned unpinned; do
            alone=$(hop_cpu "$pin" buzzer "$bin" buzzer --port 0)
            rows+="| $bin | $pin | $alone us |"
            listened=$(LISTEN=1 hop_cpu "$pin" buzzer "$bin" buzzer --port 0)
            rows+=" $listened us | $(ratio "$listened" "$alone") | <= 1.1x |"
            rows+=$'\n'
        done
    done
    shaped=""
    for bin in "$BIN" ${BASELINE:+"$BASELINE"}; do
        for pin in pinned unpinned; do
            read -r plain plain_share < <(shaped_cpu "$pin" "$bin")
            read -r debounced share < <(shaped_cpu "$pin" "$bin" 0.001)
            shaped+="| $bin | $pin | $plain us | $debounced us | $(ratio "$debounced" "$plain") | $share (plain: $plain_share) |"
            shaped+=$'\n'
        done
    done
    cat <<TABLE

Machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1); $(date -u +%Y-%m-%d).
Command: \`${BASELINE:+BASELINE=$BASELINE }bash bench/run.sh cpu\` (RUNS=$RUNS; medians; $N_CPU msgs, one client, stop and wait).

| buzzer binary | | server CPU per message | with one /events listener | ratio | target |
|---|---|---|---|---|---|
$rows
$DEBOUNCE_CLIENTS clients stop-and-wait, $N_DEBOUNCE msgs a run; superseded: acks that said so / all acks, over the runs (warmup included).

| buzzer binary | | plain | \`[node.input] debounce = 0.001\` | ratio | superseded |
|---|---|---|---|---|---|
$shaped
TABLE
    exit 0
fi

echo "measuring (median of $RUNS runs each; a few minutes)..." >&2
TCP_PIN=$(tcp_p50 pinned);       TCP_FREE=$(tcp_p50 unpinned)
ECHO_PIN=$(echo_p50 pinned);     ECHO_FREE=$(echo_p50 unpinned)
HOP_PIN=$(buzzer_p50 pinned);    HOP_FREE=$(buzzer_p50 unpinned)
CHAIN_PIN=$(chain_p50 pinned);   CHAIN_FREE=$(chain_p50 unpinned)
UP_PIN=$(chain_up_p50 pinned);   UP_FREE=$(chain_up_p50 unpinned)
ECHO_CPU_PIN=$(hop_cpu pinned echo "$ECHO" 0)
ECHO_CPU_FREE=$(hop_cpu unpinned echo "$ECHO" 0)
HOP_CPU_PIN=$(hop_cpu pinned buzzer "$BIN" buzzer --port 0)
HOP_CPU_FREE=$(hop_cpu unpinned buzzer "$BIN" buzzer --port 0)
HOP_CPU_LISTENED_PIN=$(LISTEN=1 hop_cpu pinned buzzer "$BIN" buzzer --port 0)
HOP_CPU_LISTENED_FREE=$(LISTEN=1 hop_cpu unpinned buzzer "$BIN" buzzer --port 0)
ECHO_MANY=$(many echo "$ECHO" 0)
HOP_MANY=$(many buzzer "$BIN" buzzer --port 0)
read -r ECHO_RATE ECHO_MANY_CPU <<<"$ECHO_MANY"
read -r HOP_RATE HOP_MANY_CPU <<<"$HOP_MANY"
memory
START_MS=$(startup_ms)
SIZE=$(stat -c %s "$BIN")

cat <<TABLE

Machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1); $(date -u +%Y-%m-%d).
Command: \`bash bench/run.sh\` (RUNS=$RUNS; medians).

| figure | pinned (one core) | unpinned | vs floor (pinned / unpinned) | target |
|---|---|---|---|---|
| TCP ping-pong p50, the floor | $TCP_PIN us | $TCP_FREE us | 1 | |
| tokio-tungstenite echo p50, the library's floor | $ECHO_PIN us | $ECHO_FREE us | $(ratio "$ECHO_PIN" "$TCP_PIN") / $(ratio "$ECHO_FREE" "$TCP_FREE") of TCP | |
| buzzer, one hop p50 | $HOP_PIN us | $HOP_FREE us | $(ratio "$HOP_PIN" "$ECHO_PIN") / $(ratio "$HOP_FREE" "$ECHO_FREE") of echo | pinned <= 1.15x echo |
| iopin -> buzzer chain p50 (4 round trips), 3 processes | $CHAIN_PIN us | $CHAIN_FREE us | $(ratio "$CHAIN_PIN" "$HOP_PIN") / $(ratio "$CHAIN_FREE" "$HOP_FREE") of one hop | pinned <= 4.5x one hop |
| the same chain, iopin and buzzer in one process (\`arduino up\`) | $UP_PIN us | $UP_FREE us | $(ratio "$UP_PIN" "$HOP_PIN") / $(ratio "$UP_FREE" "$HOP_FREE") of one hop | |

| figure | ours | floor | ratio | target |
|---|---|---|---|---|
| 200 clients on one buzzer, acked msgs/s (client included) | $HOP_RATE | $ECHO_RATE (echo) | $(ratio "$HOP_RATE" "$ECHO_RATE") | >= 150000 |
| idle node, VmRSS | $IDLE_KIB KiB | | | <= 3072 KiB |
| node with 1,000 connected clients, VmRSS | $LOADED_KIB KiB | | | <= 20480 KiB |
| exec to accepting connections | $START_MS ms | | | <= 10 ms |
| release binary, stripped | $SIZE bytes | | | <= 4194304 |

| server CPU per acknowledged message | pinned (one core) | unpinned | vs echo floor (pinned / unpinned) |
|---|---|---|---|
| echo floor, one client stop-and-wait ($N_CPU msgs) | $ECHO_CPU_PIN us | $ECHO_CPU_FREE us | 1 |
| buzzer, one hop, one client stop-and-wait ($N_CPU msgs) | $HOP_CPU_PIN us | $HOP_CPU_FREE us | $(ratio "$HOP_CPU_PIN" "$ECHO_CPU_PIN") / $(ratio "$HOP_CPU_FREE" "$ECHO_CPU_FREE") |
| the same with one \`/events\` listener (target <= 1.1x without) | $HOP_CPU_LISTENED_PIN us | $HOP_CPU_LISTENED_FREE us | $(ratio "$HOP_CPU_LISTENED_PIN" "$HOP_CPU_PIN") / $(ratio "$HOP_CPU_LISTENED_FREE" "$HOP_CPU_FREE") of no listener |
| echo floor, 200 clients | | $ECHO_MANY_CPU us | 1 |
| buzzer, 200 clients (fan-in) | | $HOP_MANY_CPU us | $(ratio "$HOP_MANY_CPU" "$ECHO_MANY_CPU") |
TABLE

nats_section
