#!/bin/sh
# Reproduce the dedupe numbers in docs/benchmarks.md ("dedupe"):
#   bench/dedupe/run.sh [BUILD_DIR]        (build first: scripts/build.sh build)
# Env: EXACT_N (default 50000000), NEAR_N (5000000), CMP_N (10000 for imagededup: its
# search is all-pairs), REPS (3: exact runs per rank count; report the median).
set -eu
B=${1:-build}
MPI="mpirun --allow-run-as-root --oversubscribe"
EXACT_N=${EXACT_N:-50000000}
NEAR_N=${NEAR_N:-5000000}
CMP_N=${CMP_N:-10000}
REPS=${REPS:-3}
for r in $(seq "$REPS"); do
  for np in 1 2; do $MPI -np $np "$B/bench_dedupe" exact "$EXACT_N"; done
done
for k in 4 6 8; do
  for np in 1 2; do $MPI -np $np "$B/bench_dedupe" near "$NEAR_N" $k; done
done
for k in 4 6 8; do
  python3 "$(dirname "$0")/compare_imagededup.py" --build "$B" --n "$CMP_N" --k $k
done
# the default phash radius: precision/recall of K = 2..10 on labelled real photos
python3 "$(dirname "$0")/tune_hamming.py" --build "$B"
