#!/usr/bin/env python3
"""bench/sweep driver: a 10-threshold sweep on punsafe with two fixed clauses, timed for
`pixelmill sweep`, DuckDB and pyarrow+numpy on the same file, one thread each.

The counts: rows with AESTHETIC_SCORE >= 4.5 AND min(WIDTH,HEIGHT) >= 256 AND punsafe < T,
for ten T. Same comparison rule on every side (filter_expr.h): float32 values widened to
double, literals as doubles, nulls never pass (min(WIDTH,HEIGHT) >= 256 is written as
WIDTH >= 256 AND HEIGHT >= 256 for DuckDB and numpy, which is the same condition with
nulls failing; DuckDB's least() would skip nulls). The three answers are checked equal.

pixelmill: one process, no mpirun (single-threaded), `sweep --json`.
DuckDB: SET threads = 1, one query with ten FILTERed counts over read_parquet.
pyarrow+numpy: pa.set_cpu_count(1), set_io_thread_count(1), read_table(columns=4,
use_threads=False), then numpy masks and one comparison pass per threshold over the
rows kept by the fixed clauses.
Wall time and CPU time (user + sys) are reported; the best of --repeat runs each.
"""
import json
import resource
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa

pa.set_cpu_count(1)
pa.set_io_thread_count(1)
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

THS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 0.98]
FIXED = ["AESTHETIC_SCORE >= 4.5", "min(WIDTH,HEIGHT) >= 256"]


def cpu_self():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_children():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_pixelmill(binary, path):
    args = [binary, "sweep", path, "--column", "punsafe",
            "--thresholds", ",".join(repr(t) for t in THS), "--json"]
    for f in FIXED:
        args += ["--where", f]
    c0, t0 = cpu_children(), time.perf_counter()
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    wall, cpu = time.perf_counter() - t0, cpu_children() - c0
    return [x["kept"] for x in json.loads(out)["thresholds"]], wall, cpu


def run_duckdb(path):
    import duckdb
    con = duckdb.connect()
    con.execute("SET threads = 1")
    cols = ", ".join(f"count(*) FILTER (WHERE punsafe::DOUBLE < {t!r}::DOUBLE)" for t in THS)
    q = (f"SELECT {cols} FROM read_parquet('{path}') WHERE AESTHETIC_SCORE::DOUBLE >= 4.5 "
         "AND WIDTH >= 256 AND HEIGHT >= 256")
    c0, t0 = cpu_self(), time.perf_counter()
    row = con.execute(q).fetchone()
    wall, cpu = time.perf_counter() - t0, cpu_self() - c0
    return list(row), wall, cpu


def run_pyarrow(path):
    c0, t0 = cpu_self(), time.perf_counter()
    t = pq.read_table(path, columns=["punsafe", "AESTHETIC_SCORE", "WIDTH", "HEIGHT"],
                      use_threads=False)

    def f64(name):
        return t[name].cast(pa.float64()).to_numpy(zero_copy_only=False)  # nulls -> NaN

    a, w, h = f64("AESTHETIC_SCORE"), f64("WIDTH"), f64("HEIGHT")
    with np.errstate(invalid="ignore"):
        m = (a >= 4.5) & (w >= 256) & (h >= 256)
        p = f64("punsafe")[m]
        counts = [int(np.count_nonzero(p < th)) for th in THS]
    wall, cpu = time.perf_counter() - t0, cpu_self() - c0
    return counts, wall, cpu


def main():
    binary, path = sys.argv[1], sys.argv[2]
    repeat = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    rows = pq.ParquetFile(path).metadata.num_rows
    results = {}
    for name, fn in [("pixelmill", lambda: run_pixelmill(binary, path)),
                     ("duckdb", lambda: run_duckdb(path)),
                     ("pyarrow+numpy", lambda: run_pyarrow(path))]:
        best = None
        for _ in range(repeat):
            counts, wall, cpu = fn()
            if best is None or wall < best[1]:
                best = (counts, wall, cpu)
        results[name] = best
    ref = results["pixelmill"][0]
    for name, (counts, _, _) in results.items():
        if counts != ref:
            print(f"MISMATCH {name}: {counts} != pixelmill {ref}")
            sys.exit(1)
    print(f"rows: {rows:,}; thresholds: {THS}; fixed: {' AND '.join(FIXED)}")
    print(f"counts (all three equal): {ref}")
    print(f"{'':16} {'wall s':>8} {'cpu s':>8} {'Mrows/s':>9}")
    for name, (_, wall, cpu) in results.items():
        print(f"{name:16} {wall:8.2f} {cpu:8.2f} {rows / wall / 1e6:9.1f}")
    pm = results["pixelmill"]
    for name in ("duckdb", "pyarrow+numpy"):
        o = results[name]
        print(f"pixelmill / {name}: wall {pm[1] / o[1]:.2f}x, cpu {pm[2] / o[2]:.2f}x "
              f"(< 1 = pixelmill faster)")


if __name__ == "__main__":
    main()
