#!/usr/bin/env bash
# The Kafka global stage (issue 17): what it costs next to a worker, how fast it drains,
# and how soon a global detection is out. Real `tokenwatch run --role edge|worker` against
# the `tansu` test broker on loopback, as bench/kafka.sh.
#   1. CPU per record, exact: one worker drains topics an edge filled, under
#      `valgrind --tool=callgrind` (instructions of the whole process, every thread), once
#      with `[kafka] global_stage = true` and once with false; the difference is the global
#      stage's (its thread and its reader's librdkafka threads);
#   2. the global stage's own drain: a worker started on the filled topics (natively),
#      from spawn until its global stage applied every auth.by_ip record, with the CPU time
#      of its `worker-global` thread;
#   3. line → rejection_ratio record through the broker (edge + worker idle), reorder_ms
#      1000 (the default) and 0.
# Usage: bench/kafka_global.sh [--quick]   (TOKENS=100 ≈ 136 k lines; --quick: 20, 5 trials)
# Environment: TOKENS, TRIALS, TANSU, BENCH_DIR, CARGO_TARGET_DIR; BROKER_KIND=mock runs
# librdkafka's mock cluster (examples/kafka_mock_broker.rs) instead of tansu: fine for the
# CPU figures, not for the drain and latency timings.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
if [ "$QUICK" = 1 ]; then TOKENS=${TOKENS:-20}; TRIALS=${TRIALS:-5}; else TOKENS=${TOKENS:-100}; TRIALS=${TRIALS:-30}; fi
WARMUP=2
DIR=${BENCH_DIR:-${TMPDIR:-/tmp}/tokenwatch-kafka-global-bench}
RUN=$DIR/run
BROKER_KIND=${BROKER_KIND:-tansu}
TANSU=${TANSU:-$(command -v tansu || echo "$HOME/.cargo/bin/tansu")}
if [ "$BROKER_KIND" = tansu ] && [ ! -x "$TANSU" ]; then
  echo "no tansu broker: cargo install tansu --locked --features dynostore (or BROKER_KIND=mock)" >&2
  exit 1
fi
command -v valgrind >/dev/null || { echo "no valgrind" >&2; exit 1; }

cargo build --release --quiet --example kafka_bench --example kafka_mock_broker
cargo build --release --quiet
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
BIN=$TARGET/release/tokenwatch
HELPER=$TARGET/release/examples/kafka_bench
MOCK=$TARGET/release/examples/kafka_mock_broker

rm -rf "$RUN"
mkdir -p "$RUN"
LOG=$DIR/access-$TOKENS-7.log
[ -s "$LOG" ] || "$BIN" gen --format nginx --tokens "$TOKENS" --days 7 -o "$LOG" 2>/dev/null
NLINES=$(wc -l < "$LOG")
printf 'bench-fingerprint-key-of-at-least-32-bytes\n' > "$RUN/fp.key"
chmod 600 "$RUN/fp.key"

PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# stop PID: SIGTERM, then SIGKILL after 120 s (valgrind writes its profile at exit).
stop() {
  local pid=$1 i keep=()
  if kill -TERM "$pid" 2>/dev/null; then
    for i in $(seq 1200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  for i in "${PIDS[@]}"; do [ "$i" = "$pid" ] || keep+=("$i"); done
  PIDS=("${keep[@]}")
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_broker: an empty broker with the topics; sets BROKER and TANSU_PID (the broker's
# process, tansu or the mock cluster).
start_broker() {
  local port i
  if [ "$BROKER_KIND" = mock ]; then
    "$MOCK" 3 >"$RUN/mock.addr" 2>"$RUN/mock.err" &
    TANSU_PID=$!
    PIDS+=("$TANSU_PID")
    for i in $(seq 300); do [ -s "$RUN/mock.addr" ] && break; sleep 0.1; done
    BROKER=$(head -1 "$RUN/mock.addr")
    return 0
  fi
  port=$(free_port)
  "$TANSU" --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/ --silent </dev/null >"$RUN/tansu-$port.log" 2>&1 &
  TANSU_PID=$!
  PIDS+=("$TANSU_PID")
  for i in $(seq 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      BROKER=127.0.0.1:$port
      "$HELPER" topics "$BROKER" 3
      return 0
    fi
    sleep 0.1
  done
  echo "tansu did not listen on $port" >&2
  exit 1
}

# config NAME LOGFILE GROUP_PREFIX REORDER_MS GLOBAL_STAGE FETCH_WAIT_MS: $RUN/NAME.toml.
# Snapshots only at stop (300 s interval): the figures are the per-record path.
config() {
  cat > "$RUN/$1.toml" <<EOF
[server]
listen = "127.0.0.1:0"
[state]
dir = "$RUN/state-$1"
[fingerprint]
key = "file:$RUN/fp.key"
[detectors]
snapshot_interval_secs = 300
[[source]]
name = "bench"
path = "$2"
start_at = "beginning"
[kafka]
brokers = ["$BROKER"]
edge_id = "bench-edge"
group_prefix = "$3"
reorder_ms = $4
global_stage = $5
[kafka.options]
"fetch.wait.max.ms" = "$6"
EOF
}

# spawn ROLE NAME [WRAPPER...]: run in the background; sets PID.
spawn() {
  local role=$1 name=$2
  shift 2
  rm -f "$RUN/$name.addr"
  "$@" "$BIN" run --role "$role" -c "$RUN/$name.toml" --addr-file "$RUN/$name.addr" \
    </dev/null >"$RUN/$name.out" 2>"$RUN/$name.err" &
  PID=$!
  PIDS+=("$PID")
}

# addr NAME: the HTTP address of a spawned process (valgrind starts slowly); sets ADDR.
addr() {
  local i
  for i in $(seq 2400); do
    if [ -s "$RUN/$1.addr" ]; then ADDR=$(cat "$RUN/$1.addr"); return 0; fi
    sleep 0.05
  done
  echo "$1 did not start; see $RUN/$1.err" >&2
  exit 1
}

# seen ADDR TOPIC: records applied + duplicate of TOPIC (label) on a worker.
seen() {
  python3 - "$1" "$2" <<'PY'
import sys, urllib.request
addr, topic = sys.argv[1], sys.argv[2]
try:
    body = urllib.request.urlopen(f"http://{addr}/metrics", timeout=5).read().decode()
except Exception:
    print(0); sys.exit()
n = 0.0
for l in body.splitlines():
    if l.startswith("tokenwatch_kafka_records_total{") and f'topic="{topic}"' in l and ('result="applied"' in l or 'result="duplicate"' in l):
        n += float(l.rsplit(" ", 1)[1])
print(int(n))
PY
}

# wait_seen ADDR TOPIC N: until the worker has taken N records of TOPIC.
wait_seen() {
  local i
  for i in $(seq 72000); do
    [ "$(seen "$1" "$2")" -ge "$3" ] && return 0
    sleep 0.05
  done
  echo "$2: fewer than $3 records seen" >&2
  exit 1
}

# thread_cpu PID NAME: CPU seconds of the process's thread NAME.
thread_cpu() {
  local t
  for t in /proc/"$1"/task/*; do
    if [ "$(cat "$t/comm")" = "$2" ]; then
      awk -v k="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / k}' "$t/stat"
      return
    fi
  done
  echo 0
}

now_ns() { date +%s%N; }
load() { uptime | sed 's/.*load average: /load /'; }
RESULTS=$RUN/results
: > "$RESULTS"
note() { echo "$*" | tee -a "$RESULTS"; }
note "log: $NLINES nginx lines; broker $BROKER_KIND; $(nproc) cores; $(load)"

# ---------------------------------------------------------------- fill

start_broker
: > "$RUN/edge.log"
config edge "$RUN/edge.log" unused 0 true 100
spawn edge edge
EDGE_PID=$PID
addr edge
T0=$(now_ns)
cat "$LOG" >> "$RUN/edge.log"
OUT=$("$HELPER" edge-done "$ADDR" "$NLINES" "$T0" 600)
note "edge: $OUT"
stop "$EDGE_PID"
BY_TOKEN=$(echo "$OUT" | tr ' ' '\n' | sed -n 's/^by_token=//p')
BY_IP=$(echo "$OUT" | tr ' ' '\n' | sed -n 's/^by_ip=//p')

# ---------------------------------------------------------------- 1. callgrind

# profile GLOBAL: one worker under callgrind until it has taken every record; prints Ir.
profile() {
  local g=$1 name=cg-$1 out
  config "$name" "$RUN/edge.log" "$name" 0 "$g" 100
  out=$RUN/$name.callgrind
  spawn worker "$name" valgrind --tool=callgrind --callgrind-out-file="$out"
  local pid=$PID
  addr "$name"
  wait_seen "$ADDR" by_token "$BY_TOKEN"
  wait_seen "$ADDR" by_ip "$BY_IP"
  [ "$g" = true ] && wait_seen "$ADDR" global "$BY_IP"
  stop "$pid"
  note "callgrind global_stage=$g: Ir=$(sed -n 's/^summary: //p;s/^totals: //p' "$out" | head -1) by_token=$BY_TOKEN by_ip=$BY_IP lines=$NLINES; $(load)"
}
profile false
profile true

# ---------------------------------------------------------------- 2. global drain

config drain "$RUN/edge.log" drain 0 true 100
T0=$(now_ns)
spawn worker drain
DRAIN_PID=$PID
addr drain
wait_seen "$ADDR" global "$BY_IP"
T1=$(now_ns)
note "global drain: records=$BY_IP spawn_to_applied_s=$(awk -v a="$T0" -v b="$T1" 'BEGIN{printf "%.3f", (b-a)/1e9}') worker_global_thread_cpu_s=$(thread_cpu "$DRAIN_PID" worker-global) worker_ip_thread_cpu_s=$(thread_cpu "$DRAIN_PID" worker-ip) worker_token_thread_cpu_s=$(thread_cpu "$DRAIN_PID" worker-token); $(load)"
stop "$DRAIN_PID"
stop "$TANSU_PID"

# ---------------------------------------------------------------- 3. latency

# latency REORDER_MS: a fresh broker, an idle edge and worker, rejection_ratio trials.
latency() {
  local r=$1 edge_pid edge_addr worker_pid
  start_broker
  : > "$RUN/lat-$r.log"
  config "lat-$r-edge" "$RUN/lat-$r.log" unused "$r" true 10
  config "lat-$r-worker" "$RUN/lat-$r.log" "lat$r" "$r" true 10
  spawn edge "lat-$r-edge"; edge_pid=$PID; addr "lat-$r-edge"; edge_addr=$ADDR
  spawn worker "lat-$r-worker"; worker_pid=$PID; addr "lat-$r-worker"
  "$HELPER" global-latency "$RUN/lat-$r.log" "$RUN/state-lat-$r-worker/detections.jsonl" "$BROKER" \
    "$edge_addr" "$ADDR" "$TRIALS" "$WARMUP" | while read -r l; do note "latency reorder_ms=$r $l"; done
  stop "$worker_pid"
  stop "$edge_pid"
  stop "$TANSU_PID"
}
latency 1000
latency 0
echo "raw figures: $RESULTS"
