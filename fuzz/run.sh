#!/usr/bin/env bash
# Bounded fuzz session: every target for FUZZ_SECS seconds (default 20), one process each
# (libFuzzer's default; no -jobs/-fork, the machine is shared), seeded
# from tests/fixtures. Not part of .ci/run (too slow); see RELIABILITY.md.
#
#   fuzz/run.sh                 # all targets, 20 s each
#   FUZZ_SECS=60 fuzz/run.sh    # longer
#   fuzz/run.sh parse_json      # one target
#   FUZZ_SANITIZER=address RUSTC_BOOTSTRAP=1 fuzz/run.sh   # with ASan (slow build)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). Builds without a sanitizer by
# default (`-s none`): the crate forbids unsafe code, so ASan adds little but build time.
set -euo pipefail
cd "$(dirname "$0")"
secs="${FUZZ_SECS:-20}"
san="${FUZZ_SANITIZER:-none}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(parse_nginx parse_json parse_vault parse_keycloak parse_oauth2_proxy parse_regex config)
fi

# Seed corpus: each fixture line, prefixed with a selector byte (the targets read the first
# byte as settings: forwarded-for, zone, nginx format); the config target gets the example
# and embedded default configs.
seed() {
  local t="$1" dir="corpus/$1"
  mkdir -p "$dir"
  local fx=""
  case "$t" in
    parse_nginx) fx="../tests/fixtures/nginx" ;;
    parse_json) fx="../tests/fixtures/json" ;;
    parse_vault) fx="../tests/fixtures/vault" ;;
    parse_keycloak) fx="../tests/fixtures/keycloak" ;;
    parse_oauth2_proxy) fx="../tests/fixtures/oauth2-proxy" ;;
    parse_regex) fx="../tests/fixtures/regex" ;;
    config)
      for f in ../examples/*.toml ../examples/*/*.toml ../src/config/default.toml; do
        [ -f "$f" ] && cp "$f" "$dir/$(basename "$f")-$(cksum <"$f" | cut -d' ' -f1)"
      done
      return
      ;;
  esac
  local n=0
  for f in "$fx"/*; do
    while IFS= read -r line || [ -n "$line" ]; do
      for sel in 0 1 2 4; do
        printf '%b%s\n' "\\x0$sel" "$line" >"$dir/seed-$n-$sel"
      done
      n=$((n + 1))
    done <"$f"
  done
}

cargo fuzz build -s "$san" -O --debug-assertions 2>&1 | tail -n 3
for t in "${targets[@]}"; do
  seed "$t"
  echo "== $t (${secs}s)"
  cargo fuzz run -s "$san" -O --debug-assertions "$t" "corpus/$t" -- \
    -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 2>&1 | grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE|==[0-9]+== ERROR|.*panicked|artifact_prefix|Test unit written)' || true
done
