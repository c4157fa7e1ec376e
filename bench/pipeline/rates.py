#!/usr/bin/env python3
"""bench/pipeline: CPU seconds per row of each stage of a download -> dedupe -> filter ->
pack pipeline (`pixelmill run PIPELINE.ini --only STAGE`, one process) over the fake
internet, for the sizing table in docs/operators.md. Not a test.

  python3 bench/pipeline/rates.py [--rows 3000] [--reps 3] [--build build]

The corpus rows that succeed and are not deliberately slow are served over HTTPS by the
local nginx (as bench/download/run.py). Each stage runs --reps times on a fresh copy of
its input; CPU seconds are user + system of the process tree (GNU time). The start-up
cost (MPI init, reading the pipeline file: `pixelmill run --list`) is measured too and
subtracted, giving the marginal rate: rows per CPU-second of one core.
"""
import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "fakenet"))
import make_corpus  # noqa: E402
from server import FakeInternet  # noqa: E402
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench" / "download"))
import run as download_bench  # noqa: E402

SLOW = {"slow_drip", "raw_stall", "raw_drip", "slow_ok", "http_429", "http_503",
        "raw_flaky_429", "raw_flaky_503"}


def timed(cmd):
    """(CPU s of the process tree, wall s) of a command (bench/download/run.py's timer)."""
    cpu, wall, _ = download_bench.timed(cmd)
    return cpu, wall


def stage_rates(pm, ini, stages, reps):
    """{stage: (median CPU s, median wall s)} of `run --only STAGE`, each rep on a fresh
    output (stages: [(name, output dir to remove first)])."""
    res = {}
    for stage, out in stages:
        cpus, walls = [], []
        for _ in range(reps):
            shutil.rmtree(out, ignore_errors=True)
            cpu, wall = timed([pm, "run", ini, "--only", stage])
            cpus.append(cpu)
            walls.append(wall)
        res[stage] = (statistics.median(cpus), statistics.median(walls))
    return res


def table(rows, startup, res):
    su = statistics.median(startup)
    print(f"rows {rows}, start-up {su:.2f} CPU-s (median of {len(startup)})\n")
    print("| stage | CPU s (median) | wall s | rows / CPU-s | rows / CPU-s net of start-up |")
    print("| --- | --- | --- | --- | --- |")
    for s, (c, w) in res.items():
        print(f"| {s} | {c:.2f} | {w:.2f} | {rows / c:.0f} | {rows / max(c - su, 1e-9):.0f} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--synthetic", type=int, default=0, metavar="N",
                    help="instead: dedupe, filter and pack of a synthetic N-row dataset "
                         "(tests/pack_fixture.py layout, small JPEGs), no download")
    a = ap.parse_args()
    pm = Path(a.build) / "pixelmill"
    if a.synthetic:
        return synthetic(a, pm)
    corpus = Path(make_corpus.ensure_corpus(count=a.rows))
    work = Path(tempfile.mkdtemp(prefix="pm-rates-"))
    with FakeInternet(corpus) as net:
        net.write_lists(work)
        man = net.manifest()
        t = pq.read_table(work / "urls.parquet")
        keep = [i for i, m in enumerate(man) if m["case"] not in SLOW and m["server"] == "nginx"]
        urls = [(man[i]["url"] or "").replace(net.http_base, net.https_base) for i in keep]
        sub = t.take(pa.array(keep)).set_column(0, "URL", pa.array(urls))
        pq.write_table(sub, work / "in.parquet")
        rows = sub.num_rows
        ds, packed = work / "ds", work / "packed"
        ini = work / "p.ini"
        ini.write_text(f"""[pipeline]
dataset = {ds}
[download]
input = {work / 'in.parquet'}
url-col = URL
caption-col = TEXT
keep-cols = punsafe,WIDTH,HEIGHT
image-size = 256
resize-mode = border
samples-per-shard = 500
threads = 1
ca-file = {net.ca_file}
allow-address = 127.0.0.1
quiet = true
[dedupe]
by = url,content,phash
[filter]
view = safe
where = punsafe < 0.5
dedupe = url,content,phash
[pack]
output = {packed}
samples-per-shard = 500
""")
        startup = [timed([pm, "run", ini, "--list"])[0] for _ in range(a.reps)]
        res = stage_rates(pm, ini, [("download", ds), ("dedupe", ds / "_dedupe"),
                                    ("filter", ds / "_views"), ("pack", packed)], a.reps)
        success = json.loads((ds / "dataset.json").read_text())["counts"]["status"]["success"]
    print(f"successes: {success} of {rows} rows")
    table(rows, startup, res)
    shutil.rmtree(work, ignore_errors=True)


def synthetic(a, pm):
    from pack_fixture import make_dataset
    work = Path(tempfile.mkdtemp(prefix="pm-rates-"))
    ds, packed = work / "ds", work / "packed"
    per = 2000
    t0 = time.time()
    make_dataset(ds, nshards=max(1, a.synthetic // per), rows=per, fail_every=10,
                 sizes=((32, 24), (24, 32)))
    rows = json.loads((ds / "dataset.json").read_text())["counts"]["rows"]
    print(f"synthetic dataset: {rows} rows in {time.time() - t0:.0f} s", file=sys.stderr)
    ini = work / "p.ini"
    ini.write_text(f"""[pipeline]
dataset = {ds}
[dedupe]
by = url,content,phash
[filter]
view = v
where = aesthetic > 5
dedupe = url,content,phash
[pack]
output = {packed}
samples-per-shard = 2000
""")
    startup = [timed([pm, "run", ini, "--list"])[0] for _ in range(a.reps)]
    res = stage_rates(pm, ini, [("dedupe", ds / "_dedupe"), ("filter", ds / "_views"),
                                ("pack", packed)], a.reps)
    table(rows, startup, res)
    packed_n = json.loads((packed / "dataset.json").read_text())["counts"]["nsamples"]
    print(f"\npack wrote {packed_n} samples (the view's kept rows)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
