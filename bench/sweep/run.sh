#!/usr/bin/env bash
# bench/sweep: `pixelmill sweep` vs DuckDB vs pyarrow+numpy, one thread each, on a
# LAION-like Parquet file (10 thresholds on punsafe, two fixed clauses).
#   bench/sweep/run.sh [ROWS] [REPEAT]   (default 50,000,000 rows, best of 2; cached in bench/out/)
# Targets: pixelmill faster than pyarrow+numpy, within 1.5x of DuckDB.
set -euo pipefail
cd "$(dirname "$0")/../.."
rows=${1:-50000000}
repeat=${2:-2}
out=bench/out
mkdir -p "$out"
data=$out/laion-$rows.parquet
if [ ! -f "$data" ]; then
  echo "bench/sweep: generating $rows rows into $data (once)" >&2
  python3 bench/gen_laion.py --rows "$rows" --seed 1 --progress "$data.tmp"
  mv "$data.tmp" "$data"
fi
bin=${PIXELMILL_BUILD:-build}/pixelmill
test -x "$bin" || { echo "bench/sweep: build first (scripts/build.sh)" >&2; exit 1; }
python3 -c 'import duckdb' 2>/dev/null || { echo "bench/sweep: pip install duckdb" >&2; exit 1; }
echo "input: $data ($(( $(stat -c %s "$data") / 1048576 )) MiB)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
cat "$data" >/dev/null # warm the page cache for all three
python3 bench/sweep/compare.py "$bin" "$data" "$repeat"
