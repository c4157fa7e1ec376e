#!/usr/bin/env bash
# bench/stats: `pixelmill stats` vs pyarrow, one core each, on a LAION-like Parquet file.
#   bench/stats/run.sh [ROWS]   (default 20,000,000 rows; the data is cached in bench/out/)
# Prints rows/s (wall and per CPU second) for both and the ratio pixelmill/pyarrow
# (target >= 1). See bench/stats/compare.py for exactly what each side computes.
set -euo pipefail
cd "$(dirname "$0")/../.."
rows=${1:-20000000}
out=bench/out
mkdir -p "$out"
data=$out/laion-$rows.parquet
if [ ! -f "$data" ]; then
  echo "bench/stats: generating $rows rows into $data (once)" >&2
  python3 bench/gen_laion.py --rows "$rows" --seed 42 --progress "$data"
fi
bin=${PIXELMILL_BUILD:-build}/pixelmill
test -x "$bin" || { echo "bench/stats: build first (scripts/build.sh)" >&2; exit 1; }
echo "input: $data ($(( $(stat -c %s "$data") / 1048576 )) MiB, snappy, row groups of 1M rows)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
cat "$data" >/dev/null # warm the page cache for both
python3 bench/stats/compare.py "$bin" "$data" "$out/stats-$rows.json"
