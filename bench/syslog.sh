#!/usr/bin/env bash
# The syslog source over loopback UDP (issue 15): a release `tokenwatch run` with one
# `kind = "syslog"` source pinned to one core (taskset -c 1), the sender
# (examples/syslog_send.rs) on the other (taskset -c 0). For each rate: a fresh daemon,
# COUNT datagrams, then /metrics until the counters stop moving. Reports the messages
# tokenwatch counted (auth_token_check_total), its own drops (queue_full), the kernel's
# drops on the socket (/proc/net/udp), and the counted rate (counted / time from the first
# datagram sent until the last one was counted), and tokenwatch's CPU time for the run
# (user + system from /proc/PID/stat, all its threads): counted / CPU-s is what one core
# sustains, whatever else the machine was doing. On loopback part of the receive path (the
# kernel delivering the datagram to the socket) runs in the *sender's* system time.
# Usage: bench/syslog.sh                    # RATES="0 300000 200000 100000 50000" COUNT=1000000
# Environment: RATES (0 = as fast as the sender can), COUNT, RCVBUF (recv_buffer_bytes;
# unset = tokenwatch's default, 0 = the kernel's), CARGO_TARGET_DIR, BENCH_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

RATES=${RATES:-"0 300000 200000 100000 50000"}
COUNT=${COUNT:-1000000}
RCVBUF=${RCVBUF-}
DIR=${BENCH_DIR:-${TMPDIR:-/tmp}/tokenwatch-syslog-bench}
TARGET=${CARGO_TARGET_DIR:-target}
rm -rf "$DIR" && mkdir -p "$DIR"

cargo build --release --locked --quiet --bin tokenwatch --example syslog_send
TW="$TARGET/release/tokenwatch"
SEND="$TARGET/release/examples/syslog_send"

PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null || true; }
trap cleanup EXIT

metric() { # metric SERIES: its value from /metrics, 0 when absent
  curl -s "http://$ADDR/metrics" | awk -v s="$1" 'index($0, s" ") == 1 { print $2; f=1 } END { if (!f) print 0 }'
}

now() { date +%s.%N; }

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# The receiver thread alone (the syslog source itself: recv, header split, batching).
udp_ticks() {
  for t in /proc/"$1"/task/*; do
    if [ "$(cat "$t/comm" 2>/dev/null)" = syslog-udp ]; then awk '{ print $14 + $15 }' "$t/stat"; fi
  done
}
TICK=$(getconf CLK_TCK)

printf '| rate asked (msg/s) | sent | sender rate | counted | queue_full | kernel drops | lost | counted msg/s | tokenwatch CPU-s | msg per CPU-s | receiver thread CPU-s | msg per receiver CPU-s |\n'
printf '|---|---|---|---|---|---|---|---|---|---|---|---|\n'
for RATE in $RATES; do
  PORT=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  rm -rf "$DIR/state" "$DIR/addr"
  {
    printf '[server]\nlisten = "127.0.0.1:0"\n[state]\ndir = "%s/state"\n' "$DIR"
    printf '[[source]]\nname = "syslog"\nkind = "syslog"\nlisten = "udp://127.0.0.1:%s"\nformat = "nginx"\n' "$PORT"
    [ -n "$RCVBUF" ] && printf 'recv_buffer_bytes = %s\n' "$RCVBUF"
  } >"$DIR/tokenwatch.toml"
  taskset -c 1 "$TW" run -c "$DIR/tokenwatch.toml" --addr-file "$DIR/addr" 2>"$DIR/daemon.log" &
  PID=$!
  for _ in $(seq 300); do [ -s "$DIR/addr" ] && break; sleep 0.05; done
  ADDR=$(cat "$DIR/addr")
  for _ in $(seq 300); do curl -sf "http://$ADDR/readyz" >/dev/null && break; sleep 0.05; done
  CPU0=$(cpu_ticks "$PID"); UDP0=$(udp_ticks "$PID")
  T0=$(now)
  SENT_LINE=$(taskset -c 0 "$SEND" "127.0.0.1:$PORT" "$COUNT" "$RATE")
  # Wait until the count stops moving for 1 s; the time of the last change ends the run.
  LAST=-1; TLAST=$T0
  while :; do
    C=$(metric 'auth_token_check_total{source="syslog"}')
    if [ "$C" = "$LAST" ]; then
      [ "$(echo "$(now) - $TLAST > 1.0" | bc)" = 1 ] && break
    else
      LAST=$C; TLAST=$(now)
    fi
    sleep 0.05
  done
  CPU1=$(cpu_ticks "$PID"); UDP1=$(udp_ticks "$PID")
  FULL=$(metric 'tokenwatch_source_dropped_total{reason="queue_full",source="syslog"}')
  HEXPORT=$(printf '%04X' "$PORT")
  KDROPS=$(awk -v p=":$HEXPORT" '$2 ~ p"$" { print $NF }' /proc/net/udp | head -1)
  kill "$PID"; wait "$PID" || true; PID=
  SENT=$(echo "$SENT_LINE" | sed 's/.*sent=\([0-9]*\).*/\1/')
  SRATE=$(echo "$SENT_LINE" | sed 's/.*rate=\([0-9]*\).*/\1/')
  # The last change is seen up to one poll (50 ms) late: the rate is slightly pessimistic.
  SECS=$(echo "$TLAST - $T0" | bc)
  RATE_OUT=$(echo "$LAST / $SECS" | bc)
  CPUS=$(echo "scale=2; ($CPU1 - $CPU0) / $TICK" | bc)
  PER_CPU=$(echo "$LAST * $TICK / ($CPU1 - $CPU0)" | bc)
  UDPS=$(echo "scale=2; ($UDP1 - $UDP0) / $TICK" | bc)
  PER_UDP=$(echo "$LAST * $TICK / ($UDP1 - $UDP0)" | bc)
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "${RATE/#0/max}" "$SENT" "$SRATE" "$LAST" "$FULL" "${KDROPS:-?}" "$((SENT - ${LAST%.*}))" "$RATE_OUT" "$CPUS" "$PER_CPU" "$UDPS" "$PER_UDP"
done
