#!/usr/bin/env bash
# tokenwatch side by side with its peers on one generated nginx-format log (issue 6):
# wc -l and grep (physical floors), tokenwatch replay metrics-only and with every detector,
# mtail --one_shot with an equivalent program, fail2ban-regex with an equivalent filter.
# Medians of $RUNS runs, pinned to one core, peak RSS from /usr/bin/time.
#   bench/compare.sh                  # TOKENS=4000 DAYS=7 (≈ 5.6 M lines), RUNS=5
#   FAIL2BAN_LINES=100000             # fail2ban-regex is ~1000x slower: it reads a prefix
# Needs: Debian mtail, fail2ban (installed by the script when missing and run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
TOKENS=${TOKENS:-4000}
DAYS=${DAYS:-7}
RUNS=${RUNS:-5}
PEER_RUNS=${PEER_RUNS:-3}
FAIL2BAN_LINES=${FAIL2BAN_LINES:-100000}
DIR=${BENCH_DIR:-${TMPDIR:-/tmp}/tokenwatch-bench}
mkdir -p "$DIR"
for tool in mtail fail2ban-regex; do
  if ! command -v "$tool" >/dev/null; then
    apt-get install -y -qq "${tool%%-regex}" >/dev/null
  fi
done
cargo build --release --quiet
BIN=$PWD/target/release/tokenwatch
LOG=$DIR/access-$TOKENS-$DAYS.log
[ -s "$LOG" ] || "$BIN" gen --format nginx --tokens "$TOKENS" --days "$DAYS" -o "$LOG"
LINES=$(wc -l < "$LOG")
head -n "$FAIL2BAN_LINES" "$LOG" > "$DIR/f2b-prefix.log"
CFG=$DIR/bench.toml
printf '[state]\ndir = "%s/state"\n[[source]]\nname = "bench"\npath = "%s"\n' "$DIR" "$LOG" > "$CFG"
PIN=""
command -v taskset >/dev/null && PIN="taskset -c 0"

# measure NAME LINES RUNS CMD...: one result row "name|lines|median s|max RSS KiB".
measure() {
  local name=$1 lines=$2 runs=$3; shift 3
  local times=() rss=0 t m
  for _ in $(seq "$runs"); do
    # Output to a file, not /dev/null: GNU grep stops at the first match on /dev/null.
    /usr/bin/time -f '%e %M' -o "$DIR/time" $PIN "$@" >"$DIR/out" 2>&1 || true
    read -r t m < <(tail -n 1 "$DIR/time")
    times+=("$t"); [ "$m" -gt "$rss" ] && rss=$m
  done
  printf '%s|%s|%s|%s\n' "$name" "$lines" \
    "$(printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')" "$rss"
}

{
  measure "wc -l" "$LINES" "$RUNS" wc -l "$LOG"
  measure "grep -cF '\" 401 '" "$LINES" "$RUNS" grep -cF '" 401 ' "$LOG"
  measure "tokenwatch replay --no-detect" "$LINES" "$RUNS" "$BIN" replay -c "$CFG" --no-detect "$LOG"
  measure "tokenwatch replay (all detectors)" "$LINES" "$RUNS" "$BIN" replay -c "$CFG" --threads 1 "$LOG"
  # Two threads (parse | detect): unpinned, the machine's two cores.
  PIN="" measure "tokenwatch replay (all detectors, --threads 2, 2 cores)" "$LINES" "$RUNS" "$BIN" replay -c "$CFG" --threads 2 "$LOG"
  measure "mtail --one_shot" "$LINES" "$PEER_RUNS" mtail --one_shot --progs bench/peers/tokenwatch.mtail --logs "$LOG" --logtostderr
  measure "fail2ban-regex (first $FAIL2BAN_LINES lines)" "$FAIL2BAN_LINES" 1 fail2ban-regex "$DIR/f2b-prefix.log" bench/peers/fail2ban-filter.conf
} > "$DIR/compare"

echo "log: $LINES lines ($(du -h "$LOG" | cut -f1)); medians of $RUNS runs ($PEER_RUNS for mtail, 1 for fail2ban); ${PIN:-unpinned}"
echo
echo "| command | lines | median s | lines/s | vs mtail | vs fail2ban | vs wc -l | peak RSS MiB |"
echo "|---|---|---|---|---|---|---|---|"
awk -F'|' '
  { name[NR]=$1; n[NR]=$2; t[NR]=($3>0?$3:0.001); r[NR]=$4; rate[NR]=n[NR]/t[NR]
    if ($1 ~ /^mtail/) mt=rate[NR]; if ($1 ~ /^fail2ban/) fb=rate[NR]; if ($1 == "wc -l") wc=rate[NR] }
  END { for (i=1;i<=NR;i++) printf "| %s | %d | %.2f | %.3f M | %.1fx | %.0fx | %.3fx | %.1f |\n",
        name[i], n[i], t[i], rate[i]/1e6, rate[i]/mt, rate[i]/fb, rate[i]/wc, r[i]/1024 }' "$DIR/compare"
