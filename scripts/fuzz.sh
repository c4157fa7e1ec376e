#!/usr/bin/env bash
# Run every libFuzzer target (tests/fuzz/fuzz_*.c) under ASan+UBSan for SECONDS each,
# starting from the committed seed corpus (copied to a scratch dir, so runs never
# modify the repository). Exits non-zero on the first crash; the crashing input is left
# in build-fuzz/artifacts/.
#   scripts/fuzz.sh 600            # 10 minutes per target
#   scripts/fuzz.sh 60 parquet     # only targets whose name contains "parquet"
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
only=${2:-}
CC=clang bash scripts/build.sh build-fuzz -DPIXELMILL_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
mkdir -p build-fuzz/artifacts
for bin in build-fuzz/fuzz_*; do
  name=$(basename "$bin")
  [ -x "$bin" ] || continue
  [ -z "$only" ] || [[ "$name" == *"$only"* ]] || continue
  seeds="tests/fuzz/corpus/${name#fuzz_}"
  work="build-fuzz/corpus/${name#fuzz_}"
  mkdir -p "$work"
  [ -d "$seeds" ] && cp -n "$seeds"/* "$work"/ 2>/dev/null || true
  echo "== $name for ${secs}s"
  "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix=build-fuzz/artifacts/"$name"- -print_final_stats=1 "$work" 2>&1 |
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==ERROR|SUMMARY|#[0-9]+ *DONE)' || true
  if ls build-fuzz/artifacts/"$name"-* >/dev/null 2>&1; then
    echo "fuzz: $name found a crash: $(ls build-fuzz/artifacts/"$name"-*)"
    exit 1
  fi
done
