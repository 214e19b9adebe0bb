#!/usr/bin/env bash
# Kafka scale-out on one machine (issue 9): the real `tokenwatch run --role edge|worker`
# against the `tansu` test broker (in-memory storage) on loopback, with baselines from
# `tokenwatch replay` on the same file in the same invocation.
#   1. edge publish throughput: one edge from start to every line acknowledged
#      (baseline: replay --no-detect), and the bytes per record the broker serves back;
#   2. worker consume + detect: one worker on topics the edge filled (1 and 3 partitions),
#      until its groups have committed up to the high watermarks (baseline: replay, all
#      detectors);
#   3. latency line → detection through the broker (edge + worker idle, revoked_reuse
#      firing), with [kafka] reorder_ms = 1000 (the default) and 0;
#   4. 1, 2, 3 workers on the same 3-partition topics.
# Usage:
#   bench/kafka.sh            # TOKENS=750 (≈ 1.02 M lines) SCALE_TOKENS=3000 TRIALS=100
#   bench/kafka.sh --quick    # TOKENS=40 SCALE_TOKENS=200 TRIALS=20: a smoke run
# Environment: TOKENS, SCALE_TOKENS, TRIALS, RUNS (replay baselines, median), FETCH_WAIT and
# FETCH_WAIT_LATENCY (the workers' fetch.wait.max.ms, default 100 and 10), TANSU (broker binary; default: on PATH or
# ~/.cargo/bin/tansu), BENCH_DIR, CARGO_TARGET_DIR.
# Every process binds to 127.0.0.1 and is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
# The log: `tokenwatch gen` over 7 days (so every attack scenario is in it: they need 5
# days of history); 750 tokens make about 1.02 M lines. The scaling part uses a larger
# log (SCALE_TOKENS = 3000: about 4 M lines).
if [ "$QUICK" = 1 ]; then
  TOKENS=${TOKENS:-40}; SCALE_TOKENS=${SCALE_TOKENS:-200}; TRIALS=${TRIALS:-20}; RUNS=${RUNS:-1}
else
  TOKENS=${TOKENS:-750}; SCALE_TOKENS=${SCALE_TOKENS:-3000}; TRIALS=${TRIALS:-100}; RUNS=${RUNS:-3}
fi
# The workers' librdkafka fetch.wait.max.ms. tansu 0.6 sleeps in every fetch, even with
# data (the remaining wait, or half of it when ≥ 250 ms), where Apache Kafka answers as
# soon as data is there; so on tansu this setting shapes both figures: 100 drained the
# topics fastest here (of 0, 1, 10, 100, 250, 500), 10 gives the lowest latency.
FETCH_WAIT=${FETCH_WAIT:-100}
FETCH_WAIT_LATENCY=${FETCH_WAIT_LATENCY:-10}
WARMUP=5
DIR=${BENCH_DIR:-${TMPDIR:-/tmp}/tokenwatch-kafka-bench}
RUN=$DIR/run
TANSU=${TANSU:-$(command -v tansu || echo "$HOME/.cargo/bin/tansu")}
[ -x "$TANSU" ] || { echo "no tansu broker: cargo install tansu --locked --features dynostore" >&2; exit 1; }

# Two builds: the example pulls in dev-dependency features, the binary must not.
cargo build --release --quiet --example kafka_bench
cargo build --release --quiet
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
BIN=$TARGET/release/tokenwatch
HELPER=$TARGET/release/examples/kafka_bench

rm -rf "$RUN"
mkdir -p "$RUN"
LOG=$DIR/access-$TOKENS-7.log
[ -s "$LOG" ] || "$BIN" gen --format nginx --tokens "$TOKENS" --days 7 -o "$LOG"
NLINES=$(wc -l < "$LOG")
LOG_BYTES=$(stat -c %s "$LOG")
printf 'bench-fingerprint-key-of-at-least-32-bytes\n' > "$RUN/fp.key"
chmod 600 "$RUN/fp.key"

# ---------------------------------------------------------------- processes

PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# stop PID: SIGTERM, then SIGKILL after 30 s; forgets PID (so cleanup never signals a
# reused process id).
stop() {
  local pid=$1 i keep=()
  if kill -TERM "$pid" 2>/dev/null; then
    for i in $(seq 300); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  for i in "${PIDS[@]}"; do [ "$i" = "$pid" ] || keep+=("$i"); done
  PIDS=("${keep[@]}")
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_tansu PORT: an empty in-memory broker on 127.0.0.1:PORT; sets TANSU_PID.
start_tansu() {
  local port=$1 i
  "$TANSU" --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/ --silent </dev/null >"$RUN/tansu-$port.log" 2>&1 &
  TANSU_PID=$!
  PIDS+=("$TANSU_PID")
  for i in $(seq 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "tansu did not listen on $port" >&2
  exit 1
}

# config NAME PORT LOGFILE GROUP_PREFIX REORDER_MS SNAPSHOT_SECS STATE_DIR [FETCH_WAIT_MS]:
# writes $RUN/NAME.toml (FETCH_WAIT_MS: a worker's librdkafka fetch.wait.max.ms).
config() {
  cat > "$RUN/$1.toml" <<EOF
[server]
listen = "127.0.0.1:0"

[state]
dir = "$7"

[fingerprint]
key = "file:$RUN/fp.key"

[detectors]
snapshot_interval_secs = $6

[[source]]
name = "bench"
path = "$3"
start_at = "beginning"

[kafka]
brokers = ["127.0.0.1:$2"]
edge_id = "bench-edge"
group_prefix = "$4"
reorder_ms = $5
EOF
  if [ -n "${8:-}" ]; then
    printf '\n[kafka.options]\n"fetch.wait.max.ms" = "%s"\n' "$8" >> "$RUN/$1.toml"
  fi
}

# spawn ROLE NAME: tokenwatch run --role ROLE -c $RUN/NAME.toml in the background; sets PID.
spawn() {
  rm -f "$RUN/$2.addr"
  "$BIN" run --role "$1" -c "$RUN/$2.toml" --addr-file "$RUN/$2.addr" \
    </dev/null >"$RUN/$2.out" 2>"$RUN/$2.err" &
  PID=$!
  PIDS+=("$PID")
}

# addr NAME: waits for the HTTP address of a spawned process; sets ADDR.
addr() {
  local i
  for i in $(seq 600); do
    if [ -s "$RUN/$1.addr" ]; then ADDR=$(cat "$RUN/$1.addr"); return 0; fi
    sleep 0.05
  done
  echo "$1 did not start; see $RUN/$1.err" >&2
  exit 1
}

# start ROLE NAME: spawn and addr.
start() { spawn "$1" "$2"; addr "$2"; }

now_ns() { date +%s%N; }
load() { uptime | sed 's/.*load average: /load /'; }

# cpu_s PID: CPU seconds (user + system) the process has used so far.
cpu_s() { awk -v t="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / t}' "/proc/$1/stat"; }

# median_replay ARGS...: "wall_s cpu_s" of the median (by wall time) of $RUNS runs of
# tokenwatch replay.
median_replay() {
  local i
  for i in $(seq "$RUNS"); do
    /usr/bin/time -f '%e %U %S' -o "$RUN/time" "$BIN" replay -c "$RUN/replay.toml" "$@" "$LOG" \
      >"$RUN/replay.out" 2>"$RUN/replay.err"
    awk '{printf "%s %.2f\n", $1, $2 + $3}' "$RUN/time"
  done | sort -g | awk '{a[NR]=$0} END{print a[int((NR+1)/2)]}'
}

RESULTS=$RUN/results
: > "$RESULTS"
note() { echo "$*" | tee -a "$RESULTS"; }

note "log: $NLINES nginx lines, $LOG_BYTES bytes ($(awk -v b="$LOG_BYTES" -v n="$NLINES" 'BEGIN{printf "%.1f", b/n}') B/line); $(nproc) cores; $(load)"

# ---------------------------------------------------------------- baselines

cat > "$RUN/replay.toml" <<EOF
[state]
dir = "$RUN/state-replay"
[fingerprint]
key = "file:$RUN/fp.key"
[[source]]
name = "bench"
path = "$LOG"
EOF
# by_detector FILE: "name=count ..." of a detections JSONL file.
by_detector() {
  grep -o '"detector":"[a-z_]*"' "$1" 2>/dev/null | cut -d'"' -f4 | sort | uniq -c |
    awk '{printf "%s%s=%s", (NR > 1 ? " " : ""), $2, $1}'
}

"$BIN" replay -c "$RUN/replay.toml" --detections "$RUN/replay-detections.jsonl" "$LOG" >/dev/null 2>&1
note "detections replay: $(by_detector "$RUN/replay-detections.jsonl")"
read -r REPLAY_NODETECT REPLAY_NODETECT_CPU < <(median_replay --no-detect)
read -r REPLAY_DETECT REPLAY_DETECT_CPU < <(median_replay)
note "baseline replay --no-detect: wall_s=$REPLAY_NODETECT cpu_s=$REPLAY_NODETECT_CPU; replay (all detectors, default threads): wall_s=$REPLAY_DETECT cpu_s=$REPLAY_DETECT_CPU (median of $RUNS); $(load)"

# ---------------------------------------------------------------- throughput

# workers P W FETCH_WAIT REORDER_MS LABEL: W workers (one consumer group pair, one shared
# state directory, as the README asks of workers that take partitions over from each
# other) on the topics of $BROKER (filled from $FILL_LINES lines), timed from their spawn
# until every record is applied (worker metrics) and committed (the group's offsets; only
# with a snapshot, every 1 s).
workers() {
  local p=$1 w=$2 fw=$3 r=$4 label=$5 prefix state t0 i pid out broker0 cpu=0 pids=() addrs=()
  prefix=bench-p$p-w$w-$label
  state=$RUN/state-$prefix
  for i in $(seq "$w"); do config "$prefix-$i" "$PORT" "$LOG" "$prefix" "$r" 1 "$state" "$fw"; done
  broker0=$(cpu_s "$TANSU_PID")
  t0=$(now_ns)
  # All spawned before any is waited for, so they join the groups within milliseconds.
  for i in $(seq "$w"); do spawn worker "$prefix-$i"; pids+=("$PID"); done
  for i in $(seq "$w"); do addr "$prefix-$i"; addrs+=("$ADDR"); done
  out=$("$HELPER" caught-up "$BROKER" "$prefix" "$t0" 600 "$BY_TOKEN" "$BY_IP" "${addrs[@]}")
  for pid in "${pids[@]}"; do cpu=$(awk -v a="$cpu" -v b="$(cpu_s "$pid")" 'BEGIN{print a + b}'); done
  note "worker p$p w$w $label: $out lines=$FILL_LINES fetch_wait=${fw:-500} reorder_ms=$r cpu_workers=$cpu cpu_broker=$(awk -v a="$broker0" -v b="$(cpu_s "$TANSU_PID")" 'BEGIN{print b - a}'); $(load)"
  for pid in "${pids[@]}"; do stop "$pid"; done
  note "detections worker p$p w$w $label: $(by_detector "$state/detections.jsonl")"
}

# fill P FILE LABEL: a fresh broker (sets PORT, BROKER, TANSU_PID) with P partitions per
# event topic, filled by one edge from FILE (timed; sets BY_TOKEN, BY_IP, FILL_LINES).
# The edge starts on an empty file and is given the whole log at once (appended), so the
# figure is lines read → acknowledged, without the process start.
fill() {
  local p=$1 file=$2 label=$3 edge_log edge_pid edge_cpu0 broker_cpu0 t0 out
  PORT=$(free_port)
  start_tansu "$PORT"
  BROKER=127.0.0.1:$PORT
  "$HELPER" topics "$BROKER" "$p"
  edge_log=$RUN/edge-p$p-$label.log
  : > "$edge_log"
  config "edge-p$p-$label" "$PORT" "$edge_log" "unused" 1000 300 "$RUN/state-edge-p$p-$label"
  start edge "edge-p$p-$label"
  edge_pid=$PID
  sleep 1
  FILL_LINES=$(wc -l < "$file")
  edge_cpu0=$(cpu_s "$edge_pid") broker_cpu0=$(cpu_s "$TANSU_PID")
  t0=$(now_ns)
  cat "$file" >> "$edge_log"
  out=$("$HELPER" edge-done "$ADDR" "$FILL_LINES" "$t0" 600)
  note "edge p$p $label: $out cpu_edge=$(awk -v a="$edge_cpu0" -v b="$(cpu_s "$edge_pid")" 'BEGIN{print b - a}') cpu_broker=$(awk -v a="$broker_cpu0" -v b="$(cpu_s "$TANSU_PID")" 'BEGIN{print b - a}') bytes=$(stat -c %s "$file"); $(load)"
  stop "$edge_pid"
  rm -f "$edge_log"
  BY_TOKEN=$(echo "$out" | tr ' ' '\n' | sed -n 's/^by_token=//p')
  BY_IP=$(echo "$out" | tr ' ' '\n' | sed -n 's/^by_ip=//p')
}

# 1 + 2: 3 partitions per topic, then 1.
fill 3 "$LOG" main
"$HELPER" wire "$BROKER" "$BY_TOKEN" "$BY_IP" | while read -r l; do note "wire: $l"; done
# reorder_ms = 0: the engine sees each record when it is applied (with the default 1000 a
# record waits 1 s in the reorder buffer, and "applied" would mean "admitted").
workers 3 1 "$FETCH_WAIT" 0 "fw$FETCH_WAIT"
# What tansu's fetch pacing does to the same drain (500 is librdkafka's default).
for fw in 10 500; do workers 3 1 "$fw" 0 "fw$fw"; done
# The reorder buffer's cost (the default reorder_ms).
workers 3 1 "$FETCH_WAIT" 1000 "fw$FETCH_WAIT-r1000"
stop "$TANSU_PID"
fill 1 "$LOG" main
workers 1 1 "$FETCH_WAIT" 0 "fw$FETCH_WAIT"
stop "$TANSU_PID"

# 4: 1, 2, 3 workers on 3 partitions per topic. tansu gives a group's partitions to its
# first member at once and rebalances about 3 s later when others join, so the drain
# must last well beyond that: a larger log.
SCALE_LOG=$DIR/access-$SCALE_TOKENS-7.log
[ -s "$SCALE_LOG" ] || "$BIN" gen --format nginx --tokens "$SCALE_TOKENS" --days 7 -o "$SCALE_LOG" 2>/dev/null
fill 3 "$SCALE_LOG" scale
for W in 1 2 3; do workers 3 "$W" "$FETCH_WAIT" 0 "scale"; done
stop "$TANSU_PID"

# ---------------------------------------------------------------- latency

# latency REORDER_MS FETCH_WAIT LABEL: a fresh broker, an idle edge and worker.
latency() {
  local r=$1 fw=$2 label=$3 name edge_pid edge_addr worker_pid lat
  name=lat-$label
  PORT=$(free_port)
  start_tansu "$PORT"
  BROKER=127.0.0.1:$PORT
  "$HELPER" topics "$BROKER" 3
  lat=$RUN/$name.log
  : > "$lat"
  config "$name-edge" "$PORT" "$lat" "unused" "$r" 300 "$RUN/state-$name-edge"
  config "$name-worker" "$PORT" "$lat" "lat" "$r" 300 "$RUN/state-$name-worker" "$fw"
  start edge "$name-edge"
  edge_pid=$PID edge_addr=$ADDR
  start worker "$name-worker"
  worker_pid=$PID
  "$HELPER" latency "$lat" "$RUN/state-$name-worker/detections.jsonl" "$BROKER" "$edge_addr" "$TRIALS" "$WARMUP" \
    2>>"$RUN/latency.err" | while read -r l; do note "latency $label reorder_ms=$r fetch_wait=${fw:-500} $l"; done
  note "latency $label: $(load)"
  stop "$worker_pid"
  stop "$edge_pid"
  stop "$TANSU_PID"
}
latency 1000 "$FETCH_WAIT_LATENCY" "r1000-fw$FETCH_WAIT_LATENCY"
latency 0 "$FETCH_WAIT_LATENCY" "r0-fw$FETCH_WAIT_LATENCY"
latency 0 "" r0-fw500

# ---------------------------------------------------------------- report

echo
echo "| measurement | figure | CPU | vs same-invocation baseline |"
echo "|---|---|---|---|"
awk -v n="$NLINES" -v rn="$REPLAY_NODETECT" -v rnc="$REPLAY_NODETECT_CPU" -v rd="$REPLAY_DETECT" -v rdc="$REPLAY_DETECT_CPU" -v logb="$LOG_BYTES" '
  function val(line, key,   i, f, ws, kv) { f = split(line, ws, /[ ;]/); for (i = 1; i <= f; i++) { split(ws[i], kv, "="); if (kv[1] == key) return kv[2] } return "" }
  function us(cpu, count) { return cpu > 0 ? sprintf("%.2f", cpu * 1e6 / count) : "<0.01 s" }
  BEGIN {
    printf "| replay --no-detect (baseline A) | %.3f M lines/s (%.2f s) | %s µs/line | 1 |\n", n/rn/1e6, rn, us(rnc, n)
    printf "| replay, all detectors, 2 threads (baseline B) | %.3f M lines/s (%.2f s) | %s µs/line | 1 |\n", n/rd/1e6, rd, us(rdc, n) }
  /^edge p/ { p = substr($2, 2, 1); l = $3; sub(":", "", l); s = val($0, "done_s"); nl = val($0, "lines"); m = val($0, "by_token") + val($0, "by_ip"); c = val($0, "cpu_edge"); b = val($0, "cpu_broker")
    printf "| edge, %d partition(s), %s log (%d lines, %.0f B/line): lines appended → all acknowledged | %.3f M lines/s, %.3f M messages/s (%.2f messages/line; %.2f s) | edge %s µs/line, broker %s µs/message | %.3fx A (wall), %.2fx A (edge CPU per line) |\n", p, l, nl, val($0, "bytes")/nl, nl/s/1e6, m/s/1e6, m/nl, s, us(c, nl), us(b, m), (nl/s)/(n/rn), (rnc > 0 ? (c/nl)/(rnc/n) : 0) }
  /^wire: / { r = val($0, "records"); k = val($0, "key_bytes"); v = val($0, "value_bytes"); x = val($0, "rx_bytes")
    printf "| %s (%s partitions, %s records each): bytes per record | value %.1f B + key %.1f B; %.1f B as the broker serves it (batches, fetch responses) | — | log line %.1f B: %.2fx |\n", val($0, "topic"), val($0, "partitions"), val($0, "per_partition"), v/r, k/r, x/r, logb/n, (x/r)/(logb/n) }
  /^worker p/ { p = substr($2, 2, 1); w = substr($3, 2, 1); l = $4; sub(":", "", l); s = val($0, "committed_s"); a = val($0, "applied_s"); f = val($0, "first_s"); r = val($0, "records"); nl = val($0, "lines"); c = val($0, "cpu_workers"); b = val($0, "cpu_broker")
    steady = (a > f ? r/(a-f) : 0)
    if (l == "scale" && w == 1) scale1 = nl/a
    vs = (l == "scale" ? sprintf("%.2fx 1 worker (lines/s, spawn → applied)", (nl/a)/scale1) : sprintf("%.3fx B (lines/s, spawn → applied)", (nl/a)/(n/rd)))
    printf "| %d worker(s), %d partition(s)/topic, %s log, fetch.wait.max.ms %s, reorder_ms %s | spawn → all applied %.2f s = %.3f M lines/s (%.3f M records/s); first record at %.2f s, then %.3f M records/s = %.3f M per partition (÷ %d); all committed at %.2f s; records per worker %s | workers %s µs/record (%.2f M records per CPU-s), broker %s µs/record | %s; %.2fx B (CPU per line) |\n", w, p, (l == "scale" ? "scale" : "main"), val($0, "fetch_wait"), val($0, "reorder_ms"), a, nl/a/1e6, r/a/1e6, f, steady/1e6, steady/1e6/(2*p), 2*p, s, val($0, "per_worker"), us(c, r), (c > 0 ? r/c/1e6 : 0), us(b, r), vs, (rdc > 0 ? (c/nl)/(rdc/n) : 0) }
  /^latency [^ ]+ reorder_ms=[0-9]+ fetch_wait=[0-9]+ (file|topic) / { printf "| line → detection %s; reorder_ms %s, worker fetch.wait.max.ms %s (%s trials, %s missed) | p50 %s ms, p90 %s ms, p99 %s ms, max %s ms | — | — |\n", ($5 == "file" ? "in detections.jsonl" : "on the detections topic"), val($0, "reorder_ms"), val($0, "fetch_wait"), val($0, "trials"), val($0, "missed"), val($0, "p50_ms"), val($0, "p90_ms"), val($0, "p99_ms"), val($0, "max_ms") }
' "$RESULTS"
echo
echo "Detections by detector (the workers run every detector but rejection_ratio):"
sed -n 's/^detections /- /p' "$RESULTS"
echo
echo "raw figures: $RESULTS"
