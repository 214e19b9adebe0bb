#!/usr/bin/env bash
# Replay throughput of tokenwatch against physical floors and a Python baseline, on one
# generated nginx-format log (`tokenwatch gen`: TOKENS tokens over DAYS days, attacks
# included), in one invocation. Medians of $RUNS runs, pinned to one core.
#   bench/replay.sh            # TOKENS=2000 DAYS=7 (2.8 M lines) RUNS=5 by default
# Prints a Markdown table (lines/s, ratio to the Python baseline and to `wc -l`, peak RSS).
set -euo pipefail
cd "$(dirname "$0")/.."
TOKENS=${TOKENS:-2000}
DAYS=${DAYS:-7}
RUNS=${RUNS:-5}
DIR=${BENCH_DIR:-${TMPDIR:-/tmp}/tokenwatch-bench}
mkdir -p "$DIR"
cargo build --release --quiet
BIN=$PWD/target/release/tokenwatch
LOG=$DIR/access-$TOKENS-$DAYS.log
if [ ! -s "$LOG" ]; then
  "$BIN" gen --format nginx --tokens "$TOKENS" --days "$DAYS" -o "$LOG"
fi
LINES=$(wc -l < "$LOG")
CFG=$DIR/bench.toml
printf '[state]\ndir = "%s/state"\n[[source]]\nname = "bench"\npath = "%s"\n' "$DIR" "$LOG" > "$CFG"
PIN=""
command -v taskset >/dev/null && PIN="taskset -c 0"

# measure NAME CMD...: median wall seconds and max RSS (KiB) over $RUNS runs.
measure() {
  local name=$1; shift
  local times=() rss=0
  for _ in $(seq "$RUNS"); do
    # Output to a file, not /dev/null: GNU grep stops at the first match when it sees
    # /dev/null, which would time nothing.
    /usr/bin/time -f '%e %M' -o "$DIR/time" $PIN "$@" >"$DIR/out" 2>&1
    # Last line: a non-zero exit (grep finding nothing) adds a line before it.
    read -r t m < <(tail -n 1 "$DIR/time")
    times+=("$t"); [ "$m" -gt "$rss" ] && rss=$m
  done
  local med
  med=$(printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
  echo "$name|$med|$rss"
}

{
  measure "wc -l" wc -l "$LOG"
  measure "grep -cF '\" 401 '" grep -cF '" 401 ' "$LOG"
  measure "awk (count 401s)" awk '$9 == 401 {n++} END {print n}' "$LOG"
  measure "python3 per-token count" python3 bench/count_tokens.py "$LOG"
  measure "tokenwatch replay (metrics only)" "$BIN" replay -c "$CFG" "$LOG"
} > "$DIR/results"

echo "log: $LINES lines, $(du -h "$LOG" | cut -f1); $RUNS runs each, median; ${PIN:-unpinned}"
echo
echo "| command | median s | lines/s | vs python | vs wc -l | peak RSS MiB |"
echo "|---|---|---|---|---|---|"
awk -F'|' -v n="$LINES" '
  { name[NR]=$1; t[NR]=$2; r[NR]=$3; if ($1 ~ /^python/) py=$2; if ($1 == "wc -l") wc=$2 }
  END { for (i=1;i<=NR;i++) printf "| %s | %.3f | %.2f M | %.2fx | %.2fx | %.1f |\n",
        name[i], t[i], n/(t[i]>0?t[i]:1e-9)/1e6, py/(t[i]>0?t[i]:1e-9), wc/(t[i]>0?t[i]:1e-9), r[i]/1024 }' "$DIR/results"
