#!/bin/sh
# Docker-wrapped nginx replay against plain nginx replay, same lines, one invocation.
#   bench/docker.sh     (TOKENS=1500 DAYS=7 by default: about 2 M lines, 300 MB plain)
set -eu
cd "$(dirname "$0")/.."
TOKENS=${TOKENS:-1500}
DAYS=${DAYS:-7}
DIR=${DIR:-target/bench}
BIN=target/release/tokenwatch
mkdir -p "$DIR"
cargo build --release --locked -q
PLAIN="$DIR/docker-plain-$TOKENS-$DAYS.log"
WRAPPED="$DIR/docker-wrapped-$TOKENS-$DAYS.log"
[ -s "$PLAIN" ] || "$BIN" gen --format nginx --tokens "$TOKENS" --days "$DAYS" -o "$PLAIN"
[ -s "$WRAPPED" ] || python3 bench/docker_wrap.py < "$PLAIN" > "$WRAPPED"
wc -l "$PLAIN" "$WRAPPED"
ls -l "$PLAIN" "$WRAPPED"
CFG="$DIR/docker-bench.toml"
printf '[state]\ndir = "%s/state"\n[[source]]\nname = "b"\npath = "/x"\n' "$DIR" > "$CFG"
hyperfine --warmup 1 --runs "${RUNS:-5}" --export-markdown "$DIR/docker.md" \
  "taskset -c 0 $BIN replay --no-detect -c $CFG $PLAIN" \
  "taskset -c 0 $BIN replay --no-detect -c $CFG $WRAPPED" \
  "taskset -c 0 $BIN replay --threads 1 -c $CFG $PLAIN" \
  "taskset -c 0 $BIN replay --threads 1 -c $CFG $WRAPPED"
