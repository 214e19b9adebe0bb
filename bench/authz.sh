#!/usr/bin/env bash
# /authz (issue 16): checks per second and latency of the release `tokenwatch run` against a
# large frozen set, with wrk on loopback; memory per frozen entry; nginx auth_request cost.
#   1. the daemon pinned to core 0 (taskset: one core), wrk pinned to core 1, the set of
#      N fingerprinted entries (default 1,000,000) written by examples/authz_bench.rs as the
#      responder would have persisted it; wrk with an allowed token, then a frozen one;
#   2. RSS of the daemon with N entries minus RSS with none, divided by N;
#   3. nginx (Debian, 1 worker) in front of a `return 200` upstream, with and without the
#      shipped auth_request recipe (examples/authz/nginx-auth-request.conf, no cache).
# Usage: bench/authz.sh     Environment: N, DURATION (wrk, default 10s), CONNS (default 64),
# BENCH_DIR, CARGO_TARGET_DIR. Every process binds to 127.0.0.1 and is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000000}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
DIR=${BENCH_DIR:-${TMPDIR:-/tmp}/tokenwatch-authz-bench}
TARGET=${CARGO_TARGET_DIR:-target}
KEY=authz-bench-fingerprint-key-0123456789
AUTHZ=127.0.0.1:19848
command -v wrk >/dev/null || { echo "wrk is missing (apt-get install wrk)"; exit 1; }

cargo build --release --quiet --bin tokenwatch --example authz_bench
BIN=$TARGET/release/tokenwatch
rm -rf "$DIR"; mkdir -p "$DIR"
printf '%s' "$KEY" > "$DIR/fp.key"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

config() { # $1: state dir
  : > "$DIR/empty.log"
  cat > "$1.toml" <<TOML
[server]
listen = "127.0.0.1:0"
[state]
dir = "$1"
[fingerprint]
key = "file:$DIR/fp.key"
[[source]]
name = "x"
path = "$DIR/empty.log"
[authz]
listen = "$AUTHZ"
TOML
}

start() { # $1: state dir; sets DPID, and LOAD: seconds until /authz answered (set loaded)
  local t0; t0=$(date +%s%N)
  taskset -c 0 "$BIN" run -c "$1.toml" --addr-file "$1.addr" > "$1.log" 2>&1 &
  DPID=$!; PIDS+=("$DPID")
  until curl -fs -o /dev/null "http://$AUTHZ/authz"; do sleep 0.05; done
  LOAD=$(echo "scale=2; ($(date +%s%N) - $t0) / 1000000000" | bc)
}

stop() { kill "$DPID"; wait "$DPID" 2>/dev/null || true; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

echo "== memory"
config "$DIR/empty"
start "$DIR/empty"
RSS0=$(rss_kb "$DPID"); stop
"$TARGET/release/examples/authz_bench" state "$DIR/full" "$N" "$KEY"
config "$DIR/full"
start "$DIR/full"
RSSN=$(rss_kb "$DPID")
echo "entries=$N load_to_ready_s=$LOAD rss_empty_kb=$RSS0 rss_full_kb=$RSSN bytes_per_entry=$(( (RSSN - RSS0) * 1024 / N ))"

echo "== /authz, daemon on one core, $N frozen: allowed token"
taskset -c 1 wrk -t1 -c"$CONNS" -d"$DURATION" --latency \
  -H "Authorization: Bearer sk-bench-miss-0000000001" "http://$AUTHZ/authz"
echo "== /authz: frozen token (403)"
taskset -c 1 wrk -t1 -c"$CONNS" -d"$DURATION" --latency \
  -H "Authorization: Bearer sk-bench-0000000042" "http://$AUTHZ/authz"
curl -s -o /dev/null -w 'check: frozen token -> %{http_code}\n' \
  -H "Authorization: Bearer sk-bench-0000000042" "http://$AUTHZ/authz"

echo "== nginx (1 worker) with and without auth_request"
NG=$DIR/nginx; mkdir -p "$NG"
sed -e "s/127.0.0.1:9848/$AUTHZ/" -e "s/127.0.0.1:8080/127.0.0.1:18080/" \
  -e "s/listen 80;/listen 127.0.0.1:18081;/" examples/authz/nginx-auth-request.conf > "$NG/recipe.conf"
cat > "$NG/nginx.conf" <<NGINX
user root;
worker_processes 1;
pid $NG/nginx.pid;
error_log $NG/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $NG/body; proxy_temp_path $NG/proxy; fastcgi_temp_path $NG/fastcgi;
  uwsgi_temp_path $NG/uwsgi; scgi_temp_path $NG/scgi;
  upstream backend { server 127.0.0.1:18080; keepalive 32; }
  server { listen 127.0.0.1:18080; location / { return 200 "ok\n"; } }
  # Without the check: the same proxying, no auth_request.
  server { listen 127.0.0.1:18082; location / { proxy_http_version 1.1; proxy_set_header Connection ""; proxy_pass http://backend; } }
  include $NG/recipe.conf;
  include $NG/recipe-cached.conf;
}
NGINX
# The recipe proxies without upstream keepalive; give both the same upstream for fairness.
sed -i -e "s#proxy_pass http://127.0.0.1:18080;#proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_pass http://backend;#" "$NG/recipe.conf"
# The same recipe with its optional 1 s cache of allow answers on (the "# cache:" lines).
mkdir -p "$NG/cache"
sed -e 's/# cache: //' -e "s#/run/nginx-tokenwatch#$NG/cache#" -e 's/tokenwatch_authz/tokenwatch_authz_c/g' \
  -e 's/127.0.0.1:18081;/127.0.0.1:18083;/' -e 's/@tokenwatch_down/@tokenwatch_down_c/g' \
  "$NG/recipe.conf" > "$NG/recipe-cached.conf"
/usr/sbin/nginx -e stderr -c "$NG/nginx.conf" -g 'daemon off;' > "$NG/out.log" 2>&1 &
PIDS+=($!)
until curl -fs -o /dev/null http://127.0.0.1:18082/; do sleep 0.05; done
echo "-- without auth_request"
taskset -c 1 wrk -t1 -c"$CONNS" -d"$DURATION" --latency http://127.0.0.1:18082/
echo "-- with auth_request to /authz ($N frozen)"
taskset -c 1 wrk -t1 -c"$CONNS" -d"$DURATION" --latency \
  -H "Authorization: Bearer sk-bench-miss-0000000001" http://127.0.0.1:18081/
echo "-- with auth_request to /authz ($N frozen) and the recipe's 1 s cache of allow answers"
taskset -c 1 wrk -t1 -c"$CONNS" -d"$DURATION" --latency \
  -H "Authorization: Bearer sk-bench-miss-0000000001" http://127.0.0.1:18083/
