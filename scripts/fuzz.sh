#!/usr/bin/env bash
# Run every libFuzzer target (tests/fuzz/fuzz_*.c) under ASan+UBSan. For each target:
#   1. replay the whole committed seed corpus tests/fuzz/corpus/NAME/ (every file once,
#      so a regression input committed there fails CI at once);
#   2. fuzz for SECONDS, starting from the seeds (copied to a scratch dir,
#      build-fuzz/corpus/NAME, so runs never modify the repository).
# Targets run in parallel, one per core (PIXELMILL_FUZZ_JOBS). Exits non-zero after any
# crash, leak, timeout or abnormal exit; the crashing input is
# left in build-fuzz/artifacts/ (artifacts of earlier runs move to artifacts/old/).
#   scripts/fuzz.sh 600            # 10 minutes per target
#   scripts/fuzz.sh 60 parquet     # only targets whose name contains "parquet"
#   scripts/fuzz.sh 0              # replay the seed corpora only
# Prints one "fuzz: NAME execs=N rss_mb=M" line per target (the docs/testing.md record).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
only=${2:-}
# Build only the fuzz targets (not the tools and unit tests): keeps the CI step short.
targets=()
for src in tests/fuzz/fuzz_*.c; do
  name=$(basename "$src" .c)
  [ -z "$only" ] || [[ "$name" == *"$only"* ]] || continue
  targets+=("$name")
done
[ ${#targets[@]} -gt 0 ] || { echo "fuzz: no target matches '$only'"; exit 2; }
CC=clang cmake -S . -B build-fuzz -DPIXELMILL_WERROR=ON -DPIXELMILL_FUZZ=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j"${PIXELMILL_JOBS:-2}" --target "${targets[@]}" 2>&1 |
  grep -Ev '^\[ *[0-9]+%\] (Building|Linking)|^Consolidate|^gmake' || true
mkdir -p build-fuzz/artifacts/old

# fuzz_one NAME: replay NAME's seeds, then fuzz it for $secs; prints its record line.
fuzz_one() {
  local name=$1 bin=build-fuzz/$1 seeds="tests/fuzz/corpus/${1#fuzz_}"
  local work="build-fuzz/corpus/${1#fuzz_}" dict="tests/fuzz/${1}.dict" log rc=0
  [ -x "$bin" ] || { echo "fuzz: $bin did not build"; return 1; }
  mv -f build-fuzz/artifacts/"$name"-* build-fuzz/artifacts/old/ 2>/dev/null || true
  local opts=(-timeout=10 -rss_limit_mb=2048 -artifact_prefix=build-fuzz/artifacts/"$name"-)
  [ -f "$dict" ] && opts+=(-dict="$dict")
  log=$(mktemp)
  if [ -d "$seeds" ] && [ -n "$(ls -A "$seeds")" ]; then
    if ! "$bin" "${opts[@]}" "$seeds"/* >"$log" 2>&1; then
      grep -E '==[0-9]+==ERROR|SUMMARY|^Running:|runtime error|Test unit written' "$log" | tail -20
      rm -f "$log"
      echo "fuzz: $name fails on its committed seed corpus ($seeds)"
      return 1
    fi
    echo "fuzz: $name replayed $(ls "$seeds" | wc -l) seed inputs"
  fi
  if [ "$secs" -gt 0 ]; then
    mkdir -p "$work"
    [ -d "$seeds" ] && cp -n "$seeds"/* "$work"/ 2>/dev/null || true
    "$bin" "${opts[@]}" -max_total_time="$secs" -print_final_stats=1 "$work" >"$log" 2>&1 ||
      rc=$?
    local execs rss
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log")
    if [ "$rc" -ne 0 ] || ls build-fuzz/artifacts/"$name"-* >/dev/null 2>&1; then
      grep -E '==[0-9]+==ERROR|SUMMARY|runtime error|Test unit written|^#[0-9]+' "$log" |
        tail -20
      rm -f "$log"
      echo "fuzz: $name found a crash (exit $rc): $(ls build-fuzz/artifacts/"$name"-* 2>/dev/null)"
      return 1
    fi
    echo "fuzz: $name execs=${execs:-?} rss_mb=${rss:-?} seconds=$secs"
  fi
  rm -f "$log"
}

# Targets run side by side, PIXELMILL_FUZZ_JOBS at a time (default: one per core).
jobs=${PIXELMILL_FUZZ_JOBS:-$(nproc)}
failed=0 running=0
for name in "${targets[@]}"; do
  if [ "$running" -ge "$jobs" ]; then
    wait -n || failed=1
    running=$((running - 1))
  fi
  fuzz_one "$name" &
  running=$((running + 1))
done
while [ "$running" -gt 0 ]; do
  wait -n || failed=1
  running=$((running - 1))
done
exit "$failed"
