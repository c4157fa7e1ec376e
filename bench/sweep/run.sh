#!/usr/bin/env bash
# bench/sweep: `pixelmill sweep` vs DuckDB vs pyarrow+numpy, one thread each, on a
# LAION-like Parquet file (10 thresholds on punsafe, two fixed clauses).
#   bench/sweep/run.sh [ROWS] [REPEAT]   (default 50,000,000 rows, best of 2; cached in bench/out/)
# Targets: pixelmill faster than pyarrow+numpy, within 1.5x of DuckDB.
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/laion_data.sh
rows=${1:-50000000}
repeat=${2:-2}
data=$(laion_data sweep "$rows" 1)
bin=$(pixelmill_bin sweep)
python3 -c 'import duckdb' 2>/dev/null || { echo "bench/sweep: pip install duckdb" >&2; exit 1; }
bench_header "$data"
python3 bench/sweep/compare.py "$bin" "$data" "$repeat"
