#!/usr/bin/env python3
"""bench/stats driver: time `pixelmill stats` and pyarrow on the same file, one core each.

pixelmill: a single process (no mpirun), single-threaded, `stats --json FILE`.
pyarrow: read_table(use_threads=False) with the CPU and I/O pools set to 1 thread, then
the statistics `pixelmill stats` prints: per column null count and count; numeric:
min_max, mean, quantile p1..p99 ('linear'); string: utf8_length min/max/mean, and
value_counts where the column's first row group has at most 1000 distinct values
(pixelmill's low-cardinality limit: LANGUAGE and NSFW); bool: true count.

Both wall time and CPU time (user + sys) are reported: the build machine is shared, so
CPU time is the fairer per-core figure; the ratio is given for both.
"""
import resource
import subprocess
import sys
import time

import pyarrow as pa

pa.set_cpu_count(1)
pa.set_io_thread_count(1)
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

QS = [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99]


def pyarrow_stats(path):
    t = pq.read_table(path, use_threads=False)
    out = {}
    for name in t.column_names:
        c = t[name]
        r = {"nulls": c.null_count, "count": pc.count(c).as_py()}
        if pa.types.is_integer(c.type) or pa.types.is_floating(c.type):
            r["minmax"] = pc.min_max(c).as_py()
            r["mean"] = pc.mean(c).as_py()
            r["q"] = pc.quantile(c, q=QS, interpolation="linear").to_pylist()
        elif pa.types.is_string(c.type) or pa.types.is_large_string(c.type):
            n = pc.utf8_length(c)
            r["len"] = (pc.min_max(n).as_py(), pc.mean(n).as_py())
            # low-cardinality test on the first chunk (a full count_distinct of URL
            # overflows pyarrow's 2 GiB string array limit at 20M rows)
            first = c.chunk(0) if c.num_chunks else c
            if pc.count_distinct(first).as_py() <= 1000:
                r["top"] = pc.value_counts(c)
        elif pa.types.is_boolean(c.type):
            r["true"] = pc.sum(c).as_py()
        out[name] = r
    return t.num_rows, out


def children_cpu():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def main(binary, path, json_out):
    # pixelmill
    c0, w0 = children_cpu(), time.perf_counter()
    with open(json_out, "w") as f:
        subprocess.run([binary, "stats", "--json", path], stdout=f, check=True)
    pm_wall, pm_cpu = time.perf_counter() - w0, children_cpu() - c0
    print(f"pixelmill done: wall {pm_wall:.2f} s, cpu {pm_cpu:.2f} s", flush=True)
    # pyarrow (warm up the library once on a tiny table so import/initialisation costs
    # are not charged to the run)
    pyarrow_stats_warm = pa.table({"x": [1.0, 2.0]})
    pc.quantile(pyarrow_stats_warm["x"], q=QS)
    c0, w0 = time.process_time(), time.perf_counter()
    rows, _ = pyarrow_stats(path)
    pa_wall, pa_cpu = time.perf_counter() - w0, time.process_time() - c0
    print(f"rows: {rows}")
    print(f"pixelmill stats : wall {pm_wall:7.2f} s ({rows / pm_wall:12,.0f} rows/s)   "
          f"cpu {pm_cpu:7.2f} s ({rows / pm_cpu:12,.0f} rows/s per core)")
    print(f"pyarrow (1 cpu) : wall {pa_wall:7.2f} s ({rows / pa_wall:12,.0f} rows/s)   "
          f"cpu {pa_cpu:7.2f} s ({rows / pa_cpu:12,.0f} rows/s per core)")
    print(f"ratio pixelmill/pyarrow: wall {pa_wall / pm_wall:.2f}   cpu {pa_cpu / pm_cpu:.2f}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
