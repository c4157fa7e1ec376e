#!/usr/bin/env bash
# bench/stats: `pixelmill stats` vs pyarrow, one core each, on a LAION-like Parquet file.
#   bench/stats/run.sh [ROWS]   (default 20,000,000 rows; the data is cached in bench/out/)
# Prints rows/s (wall and per CPU second) for both and the ratio pixelmill/pyarrow
# (target >= 1). See bench/stats/compare.py for exactly what each side computes.
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/laion_data.sh
rows=${1:-20000000}
out=bench/out
data=$(laion_data stats "$rows" 42)
bin=$(pixelmill_bin stats)
bench_header "$data" "snappy, row groups of 1M rows"
python3 bench/stats/compare.py "$bin" "$data" "$out/stats-$rows.json"
